//! What the in-process workloads (memory, snapshot, micro) share.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use certgate::config::RegistrationAuth;
use certgate::identity::{CertSource, ClientCertificate};
use certgate::registry::Registry;
use certgate::Config;

use crate::body::registration_body;
use crate::Error;

/// The registration inputs the in-process workloads use: the config (memory-only unless
/// `data_dir` is given), and client1's certificate as the TLS listener would see it.
pub fn registry_inputs(
    path: &Path,
    data_dir: Option<&Path>,
) -> Result<(Config, Arc<ClientCertificate>), Error> {
    let mut config = Config::load(path)?;
    config.registration.authentication = vec![RegistrationAuth::MutualTls];
    config.store.data_dir = data_dir.map(Path::to_path_buf).unwrap_or_default();
    // Every client of these workloads is bound to client1's certificate.
    config.registration.max_clients_per_certificate = u32::MAX;
    let tls = certgate::tls::Tls::load(&config.tls, &config.proxy)?;
    let der = CertificateDer::from_pem_file("certs/client1.pem")?;
    let cert = ClientCertificate::from_chain(
        &[der],
        tls.current().chain_verifier.as_ref(),
        CertSource::Tls,
    )?;
    Ok((config, cert))
}

/// Runs a future to completion on this thread (the in-process workloads are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
    }
    RUNTIME.with(|rt| match rt {
        Some(rt) => rt.block_on(f),
        // Building a current-thread runtime only fails when the OS refuses a timer or an
        // epoll instance; nothing in a benchmark can go on without one.
        None => std::process::abort(),
    })
}

/// Registers `n` clients, 256 at a time (so that with a data directory the journal's group
/// commit shares fsyncs, as it does under a server's concurrent load); returns the seconds
/// it took and the stored metadata's JSON size.
pub fn register_many(
    registry: &Arc<Registry>,
    cert: &Arc<ClientCertificate>,
    n: usize,
    certificate_per_client: bool,
) -> Result<(f64, usize), Error> {
    const IN_FLIGHT: usize = 256;
    let template = registration_body();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let metadata_json = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..IN_FLIGHT {
            let (registry, cert, template) = (registry.clone(), cert.clone(), template.clone());
            let count = n / IN_FLIGHT + usize::from(worker < n % IN_FLIGHT);
            tasks.spawn(async move {
                let mut json = 0;
                for i in 0..count {
                    let own;
                    let cert = if certificate_per_client {
                        // Only the digest tells certificates apart in the registry; a
                        // digest's bits are uniform, as the tables keyed by it assume.
                        let mut c = (*cert).clone();
                        c.sha256 = certgate::secret::digest(&format!("{worker}/{i}"));
                        own = Arc::new(c);
                        &own
                    } else {
                        &cert
                    };
                    let resp = registry
                        .register(template.clone(), Some(cert), None)
                        .await
                        .map_err(|e| format!("registration failed: {e:?}"))?;
                    json = resp.metadata.json().len();
                    if worker == 0 && i > 0 && i % (250_000 / IN_FLIGHT) == 0 {
                        eprintln!("  ~{} clients registered", i * IN_FLIGHT);
                    }
                }
                Ok::<usize, String>(json)
            });
        }
        let mut json = 0;
        while let Some(done) = tasks.join_next().await {
            json = json.max(done.map_err(|e| e.to_string())??);
        }
        Ok::<usize, Error>(json)
    })?;
    Ok((started.elapsed().as_secs_f64(), metadata_json))
}

/// `perf record` of this process around one phase (flat profile).
pub struct SelfProfile(Option<Child>);

impl SelfProfile {
    pub fn start(prefix: Option<&Path>, phase: &str) -> Self {
        let Some(prefix) = prefix else {
            return Self(None);
        };
        let mut out = prefix.as_os_str().to_owned();
        out.push(format!(".{phase}.perf"));
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "999",
                "-p",
                &std::process::id().to_string(),
            ])
            .arg("-o")
            .arg(out)
            .stdout(Stdio::null())
            .spawn()
            .ok();
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }

    pub fn stop(self) {
        if let Some(mut child) = self.0 {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
