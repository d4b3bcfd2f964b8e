//! Signals to the real binary (SPEC §8; issue 5):
//!
//! - SIGTERM drains an in-flight request, snapshots and exits 0 (SIGINT too);
//! - SIGHUP loads a new server certificate without dropping open connections, and keeps the
//!   previous one when the new files are bad.
//!
//! The harness (the binary as a child process, the blocking client, tracked clients) is
//! `tests/durable/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod durable;
mod listening;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use durable::{
    all_files, assert_current, register_one, registration_body, root, snapshots, Gateway, Https,
    Setup, Tracked,
};

// === SIGTERM ===

/// SPEC §8: SIGTERM stops accepting, finishes the request in flight (here a registration
/// whose body is still arriving), snapshots, and exits 0; the drained registration is
/// durable.
#[test]
fn sigterm_drains_an_in_flight_request_then_snapshots_and_exits_0() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut before = register_one(&mut api);
    drop(api);

    // Head and half of the body; `Expect: 100-continue` tells us when the handler is
    // reading the body, i.e. the request is in flight.
    let body = registration_body().to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = Https::connect(g.tls, None).unwrap();
    conn.write(
        format!(
            "POST /register HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let r = conn.read_reply().unwrap();
    assert_eq!(r.status, 100, "expected 100 Continue, got {}", r.status);
    conn.write(first.as_bytes()).unwrap();

    g.signal("TERM");
    // It stops accepting: new connections are refused (bounded poll).
    let until = Instant::now() + Duration::from_secs(10);
    let mut refused = false;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", g.tls)).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        refused,
        "still accepting connections 10 s after SIGTERM; log:\n{}",
        g.log_tail()
    );
    assert!(
        g.alive(),
        "exited with a request in flight:\n{}",
        g.log_tail()
    );

    conn.write(rest.as_bytes()).unwrap();
    let r = conn.read_reply().unwrap_or_else(|e| {
        panic!(
            "the in-flight request got no response after SIGTERM ({e}); log:\n{}",
            g.log_tail()
        )
    });
    assert_eq!(r.status, 201, "drained registration: {}", r.text());
    let mut drained = Tracked::from_registration(&r);
    drop(conn);

    let status = g.wait_exit();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        g.log_tail()
    );
    assert!(
        !snapshots(data.path()).is_empty(),
        "graceful shutdown wrote no snapshot in {:?}: {:?}",
        data.path(),
        all_files(data.path())
    );

    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    assert_current(&mut api, &mut before, &g);
    assert_current(&mut api, &mut drained, &g);
}

/// SPEC §8: SIGINT is a graceful stop too: snapshot, exit 0, nothing lost.
#[test]
fn sigint_snapshots_and_exits_0() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&setup);
    let mut a = register_one(&mut g.api(None));
    g.signal("INT");
    let status = g.wait_exit();
    assert!(
        status.success(),
        "exit status after SIGINT: {status}; log:\n{}",
        g.log_tail()
    );
    assert!(
        !snapshots(data.path()).is_empty(),
        "no snapshot after SIGINT"
    );
    let g = Gateway::start(&setup);
    assert_current(&mut g.api(None), &mut a, &g);
}

// === SIGHUP ===

/// Issues a new server certificate for localhost / 127.0.0.1 from the dev CA with openssl,
/// writing `<dir>/<name>.pem` (leaf + CA, like `scripts/gen-pki.sh`) and `<name>-key.pem`.
fn new_server_cert(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}-key.pem"));
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    let pem = dir.join(format!("{name}.pem"));
    fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(root())
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &path(&key),
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        &path(&key),
        "-subj",
        "/O=certgate dev/CN=localhost",
        "-out",
        &path(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        "certs/ca.pem",
        "-CAkey",
        "certs/ca-key.pem",
        "-set_serial",
        &serial,
        "-days",
        "30",
        "-sha256",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&pem),
    ]);
    let mut chain = fs::read(&pem).unwrap();
    chain.extend(fs::read(root().join("certs/ca.pem")).unwrap());
    fs::write(&pem, chain).unwrap();
}

/// The DER of the first certificate in a PEM file.
fn leaf_der(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .expect("a certificate")
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Lines of the log that mention SIGHUP.
fn hup_lines(g: &Gateway) -> usize {
    g.log_text()
        .lines()
        .filter(|l| l.contains("SIGHUP"))
        .count()
}

/// SPEC §8: SIGHUP reloads the TLS certificate and key without dropping connections: the
/// next handshake presents the new certificate, an open connection keeps working. A bad
/// key on the next SIGHUP keeps the certificate in force.
#[test]
fn sighup_reloads_the_server_certificate_without_dropping_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("server.pem");
    let key = tmp.path().join("server-key.pem");
    fs::copy(root().join("certs/server.pem"), &cert).unwrap();
    fs::copy(root().join("certs/server-key.pem"), &key).unwrap();
    let mut setup = Setup::new(None);
    setup.cert = cert.clone();
    setup.key = key.clone();
    let mut g = Gateway::start(&setup);

    let mut open = Https::connect(g.tls, None).unwrap();
    let original = open.server_cert();
    assert_eq!(original, leaf_der(&root().join("certs/server.pem")));
    let r = open.request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200);

    // New files appear atomically (rename), then SIGHUP.
    new_server_cert(tmp.path(), "next");
    let expected = leaf_der(&tmp.path().join("next.pem"));
    assert_ne!(expected, original);
    fs::rename(tmp.path().join("next-key.pem"), &key).unwrap();
    fs::rename(tmp.path().join("next.pem"), &cert).unwrap();
    g.signal("HUP");

    let until = Instant::now() + Duration::from_secs(10);
    let mut presented = original.clone();
    while Instant::now() < until {
        presented = Https::connect(g.tls, None).unwrap().server_cert();
        if presented != original {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        presented == expected,
        "new handshakes do not present the new certificate 10 s after SIGHUP; log:\n{}",
        g.log_tail()
    );
    assert!(g.alive(), "SIGHUP ended the process:\n{}", g.log_tail());
    // The connection opened before the reload still works.
    let r = open.request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200, "the open connection after SIGHUP");
    // And a full request on a new connection.
    let mut api = g.api(None);
    register_one(&mut api);

    // A garbage key: the reload fails, the current certificate stays in force.
    let seen = hup_lines(&g);
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    g.signal("HUP");
    let until = Instant::now() + Duration::from_secs(10);
    while hup_lines(&g) == seen && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        hup_lines(&g) > seen,
        "no log line about the second SIGHUP's reload; log:\n{}",
        g.log_tail()
    );
    assert!(
        g.alive(),
        "a failed reload ended the process:\n{}",
        g.log_tail()
    );
    let mut fresh = Https::connect(g.tls, None).expect("handshake after a failed reload");
    assert_eq!(
        fresh.server_cert(),
        expected,
        "a failed reload changed the certificate"
    );
    let r = fresh.request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let r = open.request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200, "the connection opened before both reloads");
}
