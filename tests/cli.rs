//! The real `certgate` binary: `check-config`, and serving a real `curl --cert` user
//! (SPEC §6, §8).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod listening;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::healthz_ok;

const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// The crate root: `certs/` and `config/` paths in configs are relative to it.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// === check-config ===

/// Runs `certgate check-config --config <file with toml>`.
fn check_config(toml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certgate.toml");
    fs::write(&path, toml).unwrap();
    check_config_file(&path)
}

fn check_config_file(path: &Path) -> Output {
    Command::new(BIN)
        .current_dir(root())
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("run certgate")
}

/// Asserts a non-zero exit whose stderr mentions every one of `needles`.
fn assert_rejected(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check-config accepted a bad config; stderr: {stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not name {needle:?}: {stderr}"
        );
    }
}

#[test]
fn check_config_rejects_an_unknown_key_and_names_it() {
    let out = check_config("[management]\nreuse_registration_acess_token = true\n");
    assert_rejected(&out, &["reuse_registration_acess_token"]);
}

#[test]
fn check_config_rejects_a_bad_duration_and_names_the_key() {
    let out = check_config("[management]\nrotation_grace = \"soon\"\n");
    assert_rejected(&out, &["rotation_grace"]);
}

#[test]
fn check_config_rejects_a_bad_cidr_in_trusted_proxies_and_names_the_key() {
    let out =
        check_config("[proxy]\ntrusted_proxies = [\n  \"127.0.0.1/32\",\n  \"10.0.0.0/33\",\n]\n");
    assert_rejected(&out, &["trusted_proxies", "10.0.0.0/33"]);
}

#[test]
fn check_config_rejects_a_missing_tls_cert_file_and_names_the_file() {
    let out = check_config("[tls]\ncert = \"certs/does-not-exist.pem\"\n");
    assert_rejected(&out, &["tls.cert", "does-not-exist.pem"]);
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = check_config_file(&root().join("config/certgate.toml"));
    assert!(
        out.status.success(),
        "shipped config rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_says_ok_on_stdout() {
    let out = check_config("");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_config_runs_the_static_client_checks_start_up_runs() {
    // Parses as TOML and passes field validation, but the DN is not a DN: start-up would
    // refuse it, so check-config must too.
    let out = check_config(
        "[[clients]]\nclient_id = \"svc\"\ntoken_endpoint_auth_method = \"tls_client_auth\"\n\
         tls_client_auth_subject_dn = \"just some text\"\n",
    );
    assert_rejected(&out, &["clients[0]", "svc", "tls_client_auth_subject_dn"]);
}

#[test]
fn check_config_reads_a_routes_upstream_ca_and_names_the_route_and_file() {
    let out = check_config(
        "[[routes]]\npath_prefix = \"/api/\"\nupstream = \"https://api.internal\"\n\
         upstream_ca = \"certs/no-such-ca.pem\"\n",
    );
    assert_rejected(
        &out,
        &["routes[0]", "/api/", "upstream_ca", "no-such-ca.pem"],
    );
}

#[test]
fn check_config_reads_the_statement_issuers_jwks_files() {
    let out = check_config(
        "[[registration.software_statement_issuers]]\nissuer = \"https://directory.example\"\n\
         jwks_file = \"certs/no-such.jwks.json\"\n",
    );
    assert_rejected(
        &out,
        &[
            "software_statement_issuers[0]",
            "https://directory.example",
            "no-such.jwks.json",
        ],
    );
}

#[test]
fn check_config_rejects_durations_that_would_lie() {
    for (toml, key) in [
        (
            "[management]\nread_update_ttl = \"500ms\"\n",
            "management.read_update_ttl",
        ),
        (
            "[tokens]\naccess_token_ttl = \"1.5s\"\n",
            "tokens.access_token_ttl",
        ),
        (
            "[limits]\nidle_timeout = \"1500us\"\n",
            "limits.idle_timeout",
        ),
        (
            "[store]\nsnapshot_interval = \"1000000000y\"\n",
            "store.snapshot_interval",
        ),
        ("[limits]\ndrain_timeout = \"0s\"\n", "limits.drain_timeout"),
        (
            "[limits]\nmax_connections = 5000000000\n",
            "limits.max_connections",
        ),
    ] {
        assert_rejected(&check_config(toml), &[key]);
    }
}

#[test]
fn check_config_warns_about_legal_but_dangerous_settings() {
    let out = check_config(
        "[server]\nissuer = \"http://gw.example\"\nadmin_listen = \"0.0.0.0:9090\"\n\
         [proxy]\ntrusted_proxies = [\"0.0.0.0/0\"]\n\
         [management]\nrotation_grace = \"30s\"\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for key in [
        "proxy.trusted_proxies",
        "server.issuer",
        "server.admin_listen",
        "management.rotation_grace",
    ] {
        let lines = stderr
            .lines()
            .filter(|l| l.contains("warning") && l.contains(key));
        assert_eq!(lines.count(), 1, "one warning line naming {key}: {stderr}");
    }
    // The shipped config is quiet.
    let out = check_config_file(&root().join("config/certgate.toml"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

// === a running binary ===

/// A `certgate` child process; killed on drop so a failing test leaks nothing.
struct Running {
    child: Child,
    tls_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Starts the binary with every listener on port 0 and waits until `/healthz` answers
    /// on the admin port it reports (tests/listening).
    fn start(extra_args: &[&str]) -> Self {
        Self::start_config(
            "[server]\n\
             issuer = \"https://localhost\"\n\
             tls_listen = \"127.0.0.1:0\"\n\
             proxy_listen = \"127.0.0.1:0\"\n\
             admin_listen = \"127.0.0.1:0\"\n",
            extra_args,
        )
    }

    /// Like `start`, with `toml` as the configuration (its listeners on port 0).
    fn start_config(toml: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("certgate.toml");
        fs::write(&config, toml).unwrap();
        let log = dir.path().join("certgate.log");
        let child = Command::new(BIN)
            .current_dir(root())
            .arg("--config")
            .arg(&config)
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn certgate");
        let mut running = Self {
            child,
            tls_port: 0,
            log,
            _dir: dir,
        };
        let timeout = Duration::from_secs(30);
        let bound = match listening::wait(&mut running.child, &running.log, timeout) {
            listening::Listening::Bound(bound) => bound,
            listening::Listening::Exited(status) => panic!(
                "certgate exited with {status} before listening; its log:\n{}",
                running.log_text()
            ),
            listening::Listening::TimedOut => panic!(
                "certgate logged no \"certgate listening\" line within {timeout:?}; its log:\n{}",
                running.log_text()
            ),
        };
        running.tls_port = bound.tls_port();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if healthz_ok(bound.admin_port()) {
                return running;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!(
                    "certgate exited with {status}; its log:\n{}",
                    running.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "certgate did not become healthy: /healthz never answered; its log:\n{}",
            running.log_text()
        );
    }

    /// The log once `done` says it holds what the test waits for (log lines reach the file
    /// in batches, a few milliseconds after the request), or after 10 s.
    fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (by pid) and waits, bounded, for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "certgate did not exit within 30s of SIGTERM; log:\n{}",
            self.log_text()
        );
    }
}

/// `curl` as an operator types it, from the crate root (proxy variables removed so the
/// request really goes to loopback).
fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl")
        .current_dir(root())
        .args(args)
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output();
    match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl is not installed: run `apt-get install -y curl`")
        }
        Err(e) => panic!("cannot run curl: {e}"),
    }
}

/// client1's `x5t#S256` the way an operator computes it with openssl.
fn openssl_thumbprint(cert: &str) -> String {
    let out = Command::new("sh")
        .current_dir(root())
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {cert} -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '='"
        ))
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "openssl pipeline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let thumbprint = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(thumbprint.len(), 43, "{thumbprint:?}");
    thumbprint
}

/// `curl --cert client1 https://localhost:PORT/identity`, asserting success; the JSON.
fn curl_identity(server: &Running) -> Value {
    let url = format!("https://localhost:{}/identity", server.tls_port);
    let out = curl(&[
        "-sS",
        "--cacert",
        "certs/ca.pem",
        "--cert",
        "certs/client1.pem",
        "--key",
        "certs/client1-key.pem",
        &url,
    ]);
    assert!(
        out.status.success(),
        "curl failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "curl printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// docs/open-banking.md as printed: the shipped configuration, a statement signed with
/// `scripts/sign-statement.sh`, registration and a token with `curl --cert`, and every
/// refusal the guide lists (`scripts/open-banking-demo.sh` runs exactly those commands).
#[test]
fn the_open_banking_guide_registers_with_a_signed_statement_as_printed() {
    let shipped = fs::read_to_string(root().join("config/certgate-open-banking.toml")).unwrap();
    let toml = shipped
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0");
    assert_ne!(toml, shipped, "the shipped listeners moved");
    let server = Running::start_config(&toml, &[]);
    let out = Command::new("scripts/open-banking-demo.sh")
        .current_dir(root())
        .env(
            "CERTGATE_URL",
            format!("https://localhost:{}", server.tls_port),
        )
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .output()
        .expect("run scripts/open-banking-demo.sh (needs bash, curl, openssl, python3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "{stdout}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
}

#[test]
fn curl_with_client_certificate_sees_the_thumbprint_openssl_computes() {
    let server = Running::start(&[]);
    let identity = curl_identity(&server);
    let cert = &identity["certificate"];
    assert_eq!(
        cert["x5t#S256"].as_str(),
        Some(openssl_thumbprint("certs/client1.pem").as_str()),
        "{identity}"
    );
    assert_eq!(cert["subject"], "CN=client1,O=certgate dev");
    assert_eq!(cert["chain_verified"], true);
    assert_eq!(cert["source"], "tls");
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let server = Running::start(&[]);
    curl_identity(&server);
    let log = server.log_until(|l| l.contains("/identity"));
    assert!(log.contains("/identity"), "no access-log line:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{log}"
    );
}

#[test]
fn json_access_log_line_names_method_path_status_and_thumbprint() {
    let server = Running::start(&["--log-format", "json"]);
    curl_identity(&server);
    let thumbprint = openssl_thumbprint("certs/client1.pem");
    let log = server.log_until(|l| l.contains("/identity"));
    let found = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|event| {
            // tracing-subscriber nests the event's fields under "fields" unless flattened.
            let fields = event.get("fields").unwrap_or(&event);
            fields["method"] == "GET"
                && fields["path"] == "/identity"
                && fields["status"] == 200
                && fields["thumbprint"] == thumbprint.as_str()
        });
    assert!(found, "no JSON access-log line for GET /identity:\n{log}");
}

#[test]
fn sigterm_stops_the_binary_with_exit_status_0() {
    let mut server = Running::start(&[]);
    curl_identity(&server);
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        server.log_text()
    );
}

/// The port discovery itself (tests/listening): both log formats, colours, partial lines.
#[test]
fn listening_line_is_parsed_in_text_and_json() {
    let text =
        "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m certgate listening \
                \u{1b}[3mtls\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:42631 \
                \u{1b}[3mproxy\u{1b}[0m\u{1b}[2m=\u{1b}[0mSome(127.0.0.1:42273) \
                \u{1b}[3madmin\u{1b}[0m\u{1b}[2m=\u{1b}[0mNone issuer=https://localhost\n";
    let want = listening::Bound {
        tls: "127.0.0.1:42631".parse().unwrap(),
        proxy: Some("127.0.0.1:42273".parse().unwrap()),
        admin: None,
    };
    assert_eq!(listening::parse(text), Some(want));
    let json = r#"{"level":"INFO","fields":{"message":"certgate listening","tls":"127.0.0.1:42631","proxy":"Some(127.0.0.1:42273)","admin":"None","issuer":"https://localhost"},"target":"certgate"}"#;
    assert_eq!(listening::parse(&format!("{json}\n")), Some(want));
    // A line still being written does not count.
    assert_eq!(listening::parse(json), None);
    assert_eq!(listening::parse(&text[..text.len() - 30]), None);
}
