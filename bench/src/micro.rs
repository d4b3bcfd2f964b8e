//! In-process, one thread: what each step of the registration path costs.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

use certgate::clock::SystemClock;
use certgate::identity::{CertSource, ClientCertificate};
use certgate::registry::Registry;

use crate::body::registration_body;
use crate::inprocess::{block_on, registry_inputs};
use crate::{Error, MicroOpts};

/// Per-step costs of the registration path, each timed alone on one thread: evidence for
/// where a request's server time goes (the load workloads only see the sum).
pub fn micro(opts: &MicroOpts) -> Result<(), Error> {
    let n = opts.iterations;
    let (config, cert) = registry_inputs(&opts.config, None)?;
    let registry = Registry::from_config(&config, Arc::new(SystemClock))?;
    let tls = certgate::tls::Tls::load(&config.tls, &config.proxy)?;
    let state = tls.current();
    let verifier = state.chain_verifier.clone();
    let der = CertificateDer::from_pem_file("certs/client1.pem")?;
    let body = Value::Object(registration_body()).to_string().into_bytes();
    let template = registration_body();
    let resp = block_on(registry.register(template.clone(), Some(&cert), None))
        .map_err(|e| format!("registration failed: {e:?}"))?;
    let metadata = resp.metadata.clone();
    let record = certgate::store::Change::Client(Box::new(certgate::model::ClientRecord {
        client_id: resp.client_id.as_str().into(),
        version: 0,
        issued_at: resp.client_id_issued_at,
        metadata: metadata.clone(),
        secret: None,
        bound: Some(cert.sha256),
        reg_token: certgate::model::RegToken {
            digest: [7u8; 32],
            issued_at: resp.client_id_issued_at,
            revoked: false,
        },
        grace: None,
    }));
    let mut encoded = Vec::new();
    certgate::store::codec::encode(&record, &mut encoded);

    let rows: Vec<(&str, f64)> =
        vec![
        (
            "request body → JSON object (`serde_json::from_slice::<Value>`)",
            time_per_call(n, || serde_json::from_slice::<Value>(&body)),
        ),
        (
            "`Registry::register`, memory only (metadata parse, DN match, credentials, inserts)",
            time_per_call(n, || block_on(registry.register(template.clone(), Some(&cert), None)))
                - time_per_call(n, || template.clone()),
        ),
        (
            "  of which `ClientMetadata::parse` (field checks, URLs, DN syntax)",
            time_per_call(n, || {
                certgate::metadata::ClientMetadata::parse(
                    template.clone(),
                    &registry.settings().policy,
                )
            }) - time_per_call(n, || template.clone()),
        ),
        (
            "  of which `cert_match::satisfies` (declared DN against the certificate)",
            time_per_call(n, || certgate::cert_match::satisfies(&metadata, &cert)),
        ),
        (
            "201 body encoding (`ClientResponse::to_json`)",
            time_per_call(n, || resp.to_json()),
        ),
        (
            "one fresh credential: OS random, base64url, SHA-256 (`Fresh::draw` makes two)",
            time_per_call(
                n,
                || certgate::secret::digest(&certgate::secret::generate()),
            ),
        ),
        (
            "DN comparison (`dn::dn_equal`)",
            time_per_call(n, || {
                certgate::dn::dn_equal("CN=client1,O=certgate dev", &cert.subject)
            }),
        ),
        (
            "per new certificate: `ClientCertificate::from_chain` (X.509 parse, chain check)",
            time_per_call(n, || {
                ClientCertificate::from_chain(
                    std::slice::from_ref(&der),
                    verifier.as_ref(),
                    CertSource::Tls,
                )
            }),
        ),
        (
            "  of which chain verification against `tls.client_ca` (webpki)",
            time_per_call(n, || {
                verifier.verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            }),
        ),
        (
            "per TLS connection with a returning certificate (`TlsState::identify`, cached)",
            time_per_call(n, || state.identify(std::slice::from_ref(&der), CertSource::Tls)),
        ),
        (
            "client record → bytes (a journal or snapshot record, `store::codec`)",
            time_per_call(n, || {
                let mut out = Vec::with_capacity(1024);
                certgate::store::codec::encode(&record, &mut out);
                out
            }),
        ),
        (
            "bytes → client record (restoring one snapshot record)",
            time_per_call(n, || certgate::store::codec::decode(&encoded)),
        ),
    ];
    // The access-log line every request logs, through the shipped subscriber, into memory.
    let log_line = |rust_log: &str, format: certgate::logging::LogFormat| {
        let (writer, guard) = certgate::logging::BatchWriter::spawn(std::io::sink());
        let dispatch = certgate::logging::dispatch(Some(rust_log), format, false, writer);
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 50_000).into();
        let us = tracing::dispatcher::with_default(&dispatch, || {
            time_per_call(n, || {
                tracing::info!(
                    target: certgate::logging::ACCESS_TARGET,
                    method = %http::Method::POST,
                    path = %"/token",
                    status = 200u16,
                    latency_us = 57u64,
                    client_id = "Wk9vQ2xpZW50SWRCZW5jaA",
                    thumbprint = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2",
                    peer = %peer,
                )
            })
        });
        drop(guard);
        us
    };
    let mut rows = rows;
    use certgate::logging::LogFormat::{Json, Text};
    rows.push((
        "access-log line, text, RUST_LOG=info (static target filter, batch writer)",
        log_line("info", Text),
    ));
    rows.push((
        "access-log line, json, RUST_LOG=info",
        log_line("info", Json),
    ));
    rows.push((
        "access-log line, text, a span directive (EnvFilter)",
        log_line("info,[x]=debug", Text),
    ));
    std::mem::forget(registry);
    if opts.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(what, us)| json!({"what": what, "us": us}))
            .collect();
        println!(
            "{}",
            json!({"workload": "micro", "iterations": n, "rows": rows})
        );
    } else {
        println!("micro: {n} iterations per step, one thread");
        for (what, us) in rows {
            println!("  {us:8.2} µs  {what}");
        }
    }
    Ok(())
}

/// Mean wall time of one call of `f`, in microseconds, after a short warm-up.
pub fn time_per_call<T>(n: u32, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..n / 10 {
        std::hint::black_box(f());
    }
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1))
}
