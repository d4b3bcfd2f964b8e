//! The harness of the durability tests (`durability_*.rs`): the real `certgate` binary as a
//! child process ([`Gateway`], configured by a [`Setup`]), a small blocking HTTP/1.1 client
//! over rustls ([`Api`], [`Https`], [`Reply`]) so a kill shows up as an I/O error on exactly
//! the requests that were in flight, and what a test knows about its clients from
//! acknowledged responses ([`Tracked`]), with a seeded [`Rng`].
//!
//! A test crate using it declares `mod common; mod listening; mod durable;`.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod http;
mod state;

// Each test crate uses a different part of the harness.
#[allow(unused_imports)]
pub use http::{dcrm_token, Api, Https, Reply};
#[allow(unused_imports)]
pub use state::{
    assert_current, register_one, registration_body, rotate, test_seed, Pending, Rng, Status,
    Tracked,
};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::healthz_ok;
use crate::listening::{self, Listening};

pub const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// Upper bound for any single read or write on a test connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Upper bound for the server to become healthy or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The crate root: `certs/` paths in the generated configs are relative to it.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// How one run of the binary is configured.
#[derive(Clone)]
pub struct Setup {
    /// `store.data_dir` (None: memory only).
    pub data_dir: Option<PathBuf>,
    pub snapshot_interval: &'static str,
    /// `tls.cert` / `tls.key`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `RUST_LOG` for the child.
    pub log_filter: &'static str,
    /// `registration.authentication` (TOML array).
    pub registration_auth: &'static str,
    /// More TOML tables (e.g. `[management]`).
    pub extra: String,
    /// The `[store]` table, when not the memory store of `data_dir`.
    pub store: Option<String>,
}

impl Setup {
    pub fn new(data_dir: Option<&Path>) -> Self {
        Self {
            data_dir: data_dir.map(Path::to_owned),
            snapshot_interval: "5m",
            cert: root().join("certs/server.pem"),
            key: root().join("certs/server-key.pem"),
            log_filter: "info",
            registration_auth: "[]",
            extra: String::new(),
            store: None,
        }
    }

    pub fn snapshot_every(mut self, interval: &'static str) -> Self {
        self.snapshot_interval = interval;
        self
    }

    /// Open registration (unless `registration_auth` says otherwise); the dev admin as a
    /// static `tls_client_auth` client that may get `dcrm` (and `dcr`) tokens. Every
    /// listener on port 0: the ports come from the binary's log (tests/listening). The
    /// issuer is only used in URLs these tests do not follow.
    pub fn toml(&self) -> String {
        let store = match (&self.store, &self.data_dir) {
            (Some(store), _) => store.clone(),
            (None, Some(dir)) => format!(
                "[store]\ndata_dir = {}\nsnapshot_interval = \"{}\"\n",
                toml_string(dir),
                self.snapshot_interval
            ),
            (None, None) => String::new(),
        };
        format!(
            r#"[server]
issuer = "https://localhost"
tls_listen = "127.0.0.1:0"
proxy_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[tls]
cert = {cert}
key = {key}
client_ca = "certs/ca.pem"

[registration]
authentication = {auth}

{store}
{extra}
[[clients]]
client_id = "admin"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=admin,O=certgate dev"
scope = "dcrm dcr"
introspect = true
"#,
            cert = toml_string(&self.cert),
            key = toml_string(&self.key),
            auth = self.registration_auth,
            extra = self.extra,
        )
    }
}

/// A TOML basic string holding `path`.
pub fn toml_string(path: &Path) -> String {
    let s = path.to_str().expect("test paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A running `certgate` child process; SIGKILLed on drop so a failing test leaks nothing.
pub struct Gateway {
    child: Child,
    /// The TLS listener's port.
    pub tls: u16,
    /// The admin listener's port.
    pub admin: u16,
    /// The child's stderr.
    pub log: PathBuf,
    /// Holds the config file and the log.
    _run_dir: tempfile::TempDir,
}

/// How a launch ended.
enum Launch {
    Healthy(Gateway),
    Exited(ExitStatus, String),
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Gateway {
    /// Starts the binary and waits (bounded) until `/healthz` answers; panics if it exits.
    pub fn start(setup: &Setup) -> Self {
        match Self::launch(setup) {
            Launch::Healthy(g) => g,
            Launch::Exited(status, log) => {
                panic!("certgate exited ({status}) instead of starting; its log:\n{log}")
            }
        }
    }

    /// Starts the binary and waits only until it listens (it may not be ready: a database
    /// it needs may be down).
    pub fn start_listening(setup: &Setup) -> Self {
        match Self::launch_until(setup, false) {
            Launch::Healthy(g) => g,
            Launch::Exited(status, log) => {
                panic!("certgate exited ({status}) instead of starting; its log:\n{log}")
            }
        }
    }

    /// Starts the binary expecting it to refuse: returns its exit status and log.
    pub fn refuse(setup: &Setup) -> (ExitStatus, String) {
        match Self::launch(setup) {
            Launch::Healthy(g) => panic!(
                "certgate started although it should have refused; its log:\n{}",
                g.log_text()
            ),
            Launch::Exited(status, log) => (status, log),
        }
    }

    fn launch(setup: &Setup) -> Launch {
        Self::launch_until(setup, true)
    }

    fn launch_until(setup: &Setup, healthy: bool) -> Launch {
        let run_dir = tempfile::tempdir().unwrap();
        let config = run_dir.path().join("certgate.toml");
        fs::write(&config, setup.toml()).unwrap();
        let log = run_dir.path().join("certgate.log");
        let child = Command::new(BIN)
            .current_dir(root())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", setup.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn certgate");
        let mut g = Gateway {
            child,
            tls: 0,
            admin: 0,
            log,
            _run_dir: run_dir,
        };
        // The ports it bound, from its log; it may refuse to start before or after that.
        match listening::wait(&mut g.child, &g.log, PROCESS_TIMEOUT) {
            Listening::Bound(bound) => {
                g.tls = bound.tls_port();
                g.admin = bound.admin_port();
            }
            Listening::Exited(status) => return Launch::Exited(status, g.log_text()),
            Listening::TimedOut => panic!(
                "certgate neither logged its listening addresses nor exited within \
                 {PROCESS_TIMEOUT:?}; log:\n{}",
                g.log_text()
            ),
        }
        if !healthy {
            return Launch::Healthy(g);
        }
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = g.child.try_wait() {
                return Launch::Exited(status, g.log_text());
            }
            if healthz_ok(g.admin) {
                return Launch::Healthy(g);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "certgate neither became healthy nor exited within {PROCESS_TIMEOUT:?}; log:\n{}",
            g.log_text()
        );
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `done` says it holds what the test waits for (lines reach the file in
    /// batches, a few milliseconds after what they report), or after 10 s.
    pub fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if done(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL (what `Child::kill` sends on unix), and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `HUP`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "certgate did not exit within {PROCESS_TIMEOUT:?}; log:\n{}",
            self.log_tail()
        );
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A keep-alive client for the TLS listener presenting `cert` (dev PKI name).
    pub fn api(&self, cert: Option<&'static str>) -> Api {
        Api {
            port: self.tls,
            cert,
            conn: None,
        }
    }
}

/// The snapshot files in `dir`, oldest generation first.
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "snapshot-", ".snap")
}

pub fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    out.sort();
    out
}

/// Every regular file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
