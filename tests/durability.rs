//! Durability and operation of the real binary (SPEC §7, §8, §6a.15, §6a.17; issue 5).
//!
//! - SIGKILL at random moments under concurrent registrations, rotations, token requests and
//!   deletes loses no acknowledged change (20 rounds on one data directory, snapshots during
//!   the load in two rounds out of three);
//! - a snapshot taken while writes continue loses nothing; revocations, spent initial access
//!   tokens and the memory-only grace successor behave the same after a restart;
//! - a torn journal tail is dropped with a warning; a damaged record with valid ones after
//!   it, or a damaged snapshot, refuses to start naming the file and the offset; a missing
//!   data directory, empty journals and leftover temporary files are fine;
//! - nothing secret reaches the data directory (or the log);
//! - SIGTERM drains an in-flight request, snapshots and exits 0 (SIGINT too);
//! - SIGHUP loads a new server certificate without dropping open connections, and keeps the
//!   previous one when the new files are bad.
//!
//! These tests start `certgate` as a child process (killed by a drop guard) and talk to it
//! with a small blocking HTTP/1.1 client over rustls, so a kill shows up as an I/O error on
//! exactly the requests that were in flight. The last two drive the library's `Registry`
//! directly, where a snapshot racing writes is easy to provoke.

mod common;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use common::healthz_ok;

const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// Upper bound for any single read or write on a test connection.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Upper bound for the server to become healthy or to exit.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The crate root: `certs/` paths in the generated configs are relative to it.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// === the binary ===

/// How one run of the binary is configured.
#[derive(Clone)]
struct Setup {
    /// `store.data_dir` (None: memory only).
    data_dir: Option<PathBuf>,
    snapshot_interval: &'static str,
    /// `tls.cert` / `tls.key`.
    cert: PathBuf,
    key: PathBuf,
    /// `RUST_LOG` for the child.
    log_filter: &'static str,
    /// `registration.authentication` (TOML array).
    registration_auth: &'static str,
    /// More TOML tables (e.g. `[management]`).
    extra: &'static str,
}

impl Setup {
    fn new(data_dir: Option<&Path>) -> Self {
        Self {
            data_dir: data_dir.map(Path::to_owned),
            snapshot_interval: "5m",
            cert: root().join("certs/server.pem"),
            key: root().join("certs/server-key.pem"),
            log_filter: "info",
            registration_auth: "[]",
            extra: "",
        }
    }

    fn snapshot_every(mut self, interval: &'static str) -> Self {
        self.snapshot_interval = interval;
        self
    }

    /// Open registration (unless `registration_auth` says otherwise); the dev admin as a
    /// static `tls_client_auth` client that may get `dcrm` (and `dcr`) tokens.
    fn toml(&self, [tls, proxy, admin]: [u16; 3]) -> String {
        let store = match &self.data_dir {
            Some(dir) => format!(
                "[store]\ndata_dir = {}\nsnapshot_interval = \"{}\"\n",
                toml_string(dir),
                self.snapshot_interval
            ),
            None => String::new(),
        };
        format!(
            r#"[server]
issuer = "https://localhost:{tls}"
tls_listen = "127.0.0.1:{tls}"
proxy_listen = "127.0.0.1:{proxy}"
admin_listen = "127.0.0.1:{admin}"

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
fn toml_string(path: &Path) -> String {
    let s = path.to_str().expect("test paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A running `certgate` child process; SIGKILLed on drop so a failing test leaks nothing.
struct Gateway {
    child: Child,
    tls: u16,
    admin: u16,
    log: PathBuf,
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
    fn start(setup: &Setup) -> Self {
        for _attempt in 0..5 {
            match Self::launch(setup) {
                Launch::Healthy(g) => return g,
                // Another process took a probed port before the server bound it.
                Launch::Exited(_, log) if log.contains("cannot listen") => continue,
                Launch::Exited(status, log) => {
                    panic!("certgate exited ({status}) instead of starting; its log:\n{log}")
                }
            }
        }
        panic!("certgate could not bind free ports in 5 attempts");
    }

    /// Starts the binary expecting it to refuse: returns its exit status and log.
    fn refuse(setup: &Setup) -> (ExitStatus, String) {
        for _attempt in 0..5 {
            match Self::launch(setup) {
                Launch::Healthy(g) => panic!(
                    "certgate started although it should have refused; its log:\n{}",
                    g.log_text()
                ),
                Launch::Exited(_, log) if log.contains("cannot listen") => continue,
                Launch::Exited(status, log) => return (status, log),
            }
        }
        panic!("certgate could not bind free ports in 5 attempts");
    }

    fn launch(setup: &Setup) -> Launch {
        let ports = free_ports();
        let run_dir = tempfile::tempdir().unwrap();
        let config = run_dir.path().join("certgate.toml");
        fs::write(&config, setup.toml(ports)).unwrap();
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
            tls: ports[0],
            admin: ports[2],
            log,
            _run_dir: run_dir,
        };
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

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL (what `Child::kill` sends on unix), and reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `HUP`) with `kill(1)`.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self) -> ExitStatus {
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

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A keep-alive client for the TLS listener presenting `cert` (dev PKI name).
    fn api(&self, cert: Option<&'static str>) -> Api {
        Api {
            port: self.tls,
            cert,
            conn: None,
        }
    }
}

/// Three distinct free ports on 127.0.0.1, none handed out before in this process: tests
/// run in parallel and restart servers often, and a port another test's server still uses
/// (or is about to) would let `/healthz` answer for the wrong process.
fn free_ports() -> [u16; 3] {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut used = USED.lock().unwrap();
    // Every probe stays bound until the end, so the kernel offers a new port each time.
    let mut probes = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 3 {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        if !used.contains(&port) {
            used.push(port);
            ports.push(port);
        }
        probes.push(probe);
    }
    [ports[0], ports[1], ports[2]]
}

// === a blocking HTTPS/1.1 client ===

/// A fully read response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A string member of the JSON body.
    fn field(&self, name: &str) -> String {
        self.json()[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name:?} in {}", self.text()))
            .to_owned()
    }
}

/// One TLS connection to the gateway, driven synchronously.
struct Https {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Https {
    /// Connects and completes the handshake (the server's certificate is then known).
    fn connect(port: u16, cert: Option<&str>) -> io::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let config = Arc::new(common::client_config(cert, &[b"http/1.1"]));
        let conn =
            rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
                .map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self { stream })
    }

    /// The DER of the certificate the server presented.
    fn server_cert(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presented a certificate")
            .as_ref()
            .to_vec()
    }

    /// Writes raw bytes.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends one request and reads its response.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut msg = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            msg.push_str(&format!("{k}: {v}\r\n"));
        }
        msg.push_str("\r\n");
        let mut bytes = msg.into_bytes();
        bytes.extend_from_slice(body);
        self.write(&bytes)?;
        self.read_reply()
    }

    /// Reads one response (an interim `100 Continue` counts as one, with no body).
    fn read_reply(&mut self) -> io::Result<Reply> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line in {head:?}")))?;
        let mut len = None;
        let mut close = false;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" {
                return Err(bad(format!("unexpected transfer-encoding in {head:?}")));
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let len = match (status, len) {
            (100..=199 | 204 | 304, _) => 0,
            (_, Some(n)) => n,
            (_, None) => return Err(bad(format!("no content-length in {head:?}"))),
        };
        while buf.len() < head_end + len {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.len() != head_end + len {
            return Err(bad("more bytes than one response".into()));
        }
        Ok(Reply {
            status,
            body: buf[head_end..].to_vec(),
            close,
        })
    }
}

/// A keep-alive client that reconnects when its connection is gone. It never retries a
/// request: a failed one is *in flight*, its effect unknown.
struct Api {
    port: u16,
    cert: Option<&'static str>,
    conn: Option<Https>,
}

impl Api {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(Https::connect(self.port, self.cert)?),
        };
        match conn.request(method, path, headers, body) {
            Ok(reply) => {
                if reply.close {
                    self.conn = None;
                }
                Ok(reply)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Like `call`, for callers for whom an I/O error is a test failure.
    fn must(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.call(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn register(&mut self, body: &Value) -> io::Result<Reply> {
        self.call(
            "POST",
            "/register",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// `GET|DELETE /register/{id}` with a Bearer token.
    fn manage(&mut self, method: &str, id: &str, token: &str) -> io::Result<Reply> {
        let auth = format!("Bearer {token}");
        self.call(
            method,
            &format!("/register/{id}"),
            &[("authorization", &auth)],
            b"",
        )
    }

    /// `POST` of a form to `path` with extra headers.
    fn form(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        params: &[(&str, &str)],
    ) -> io::Result<Reply> {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/x-www-form-urlencoded"));
        self.call("POST", path, &h, common::form_encode(params).as_bytes())
    }

    /// client_credentials with Basic authentication.
    fn token_basic(&mut self, id: &str, secret: &str) -> io::Result<Reply> {
        let auth = common::basic_auth(id, secret);
        self.form(
            "/token",
            &[("authorization", &auth)],
            &[("grant_type", "client_credentials")],
        )
    }
}

/// The dev admin's `dcrm` access token (certificate-bound: use it with `cert = "admin"`).
fn dcrm_token(admin: &mut Api) -> String {
    let r = admin.must(
        "POST",
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        common::form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", "admin"),
            ("scope", "dcrm"),
        ])
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "dcrm token: {}", r.text());
    r.field("access_token")
}

// === pseudo-randomness without a crate ===

/// xorshift64*, seeded from the clock.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Self((nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// === acknowledged state, and checking it after a restart ===

/// An operation sent but not acknowledged when the server died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Rotate,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Live,
    /// An acknowledged DELETE.
    Deleted,
}

/// What the test knows about one client from acknowledged responses only.
#[derive(Debug, Clone)]
struct Tracked {
    id: String,
    /// Acknowledged registration access tokens, oldest first; the last is the current one.
    tokens: Vec<String>,
    /// Acknowledged client secrets, oldest first.
    secrets: Vec<String>,
    /// `tokens[..checked]` are known to be dead already.
    checked: usize,
    /// The last acknowledged access token from `/token`.
    access: Option<String>,
    status: Status,
    /// The request in flight when the server was killed, if any.
    pending: Option<Pending>,
}

impl Tracked {
    fn from_registration(r: &Reply) -> Self {
        Self {
            id: r.field("client_id"),
            tokens: vec![r.field("registration_access_token")],
            secrets: vec![r.field("client_secret")],
            checked: 0,
            access: None,
            status: Status::Live,
            pending: None,
        }
    }

    fn token(&self) -> &str {
        self.tokens.last().expect("a tracked client has a token")
    }

    fn secret(&self) -> &str {
        self.secrets.last().expect("a tracked client has a secret")
    }

    /// Takes the credentials of an acknowledged rotation.
    fn adopt(&mut self, r: &Reply) {
        self.tokens.push(r.field("registration_access_token"));
        self.secrets.push(r.field("client_secret"));
    }
}

/// The registration body the load uses (a `client_secret_basic` client by default).
fn registration_body() -> Value {
    json!({ "grant_types": ["client_credentials"] })
}

/// Drives registrations, rotations, deletes and token requests on `clients` (owned by this
/// thread alone) until a request fails (the server died), `stop` is set, or `deadline`.
/// Unexpected answers are recorded in `checks`.
fn drive(
    api: &mut Api,
    clients: &mut Vec<Tracked>,
    rng: &mut Rng,
    stop: &AtomicBool,
    deadline: Instant,
    checks: &Mutex<Checks>,
) {
    const MIN_LIVE: usize = 3;
    const MAX_LIVE: usize = 12;
    let fail = |msg: String| checks.lock().unwrap().failures.push(msg);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let live: Vec<usize> = (0..clients.len())
            .filter(|&i| clients[i].status == Status::Live && clients[i].pending.is_none())
            .collect();
        let roll = rng.below(100);
        if live.len() < MIN_LIVE || (live.len() < MAX_LIVE && roll < 30) {
            // An unacknowledged registration is unknown to the test: it may exist or not.
            let Ok(r) = api.register(&registration_body()) else {
                return;
            };
            if r.status != 201 {
                return fail(format!("POST /register: {} {}", r.status, r.text()));
            }
            clients.push(Tracked::from_registration(&r));
            continue;
        }
        let c = &mut clients[live[rng.below(live.len() as u64) as usize]];
        if roll < 80 {
            c.pending = Some(Pending::Rotate);
            let Ok(r) = api.manage("GET", &c.id, c.token()) else {
                return;
            };
            if r.status != 200 {
                return fail(format!(
                    "GET /register/{} with its current token: {} {}",
                    c.id,
                    r.status,
                    r.text()
                ));
            }
            c.adopt(&r);
            c.pending = None;
        } else if roll < 90 {
            // An access token: a journaled change too (SPEC §7).
            let (id, secret) = (c.id.clone(), c.secret().to_owned());
            let Ok(r) = api.token_basic(&id, &secret) else {
                return;
            };
            if r.status != 200 {
                return fail(format!(
                    "POST /token for {id} with its current secret: {} {}",
                    r.status,
                    r.text()
                ));
            }
            c.access = Some(r.field("access_token"));
        } else {
            c.pending = Some(Pending::Delete);
            let Ok(r) = api.manage("DELETE", &c.id, c.token()) else {
                return;
            };
            if r.status != 204 {
                return fail(format!(
                    "DELETE /register/{} with its current token: {} {}",
                    c.id,
                    r.status,
                    r.text()
                ));
            }
            c.status = Status::Deleted;
            c.pending = None;
        }
    }
}

/// Checks every tracked client against a freshly restarted server (SPEC §7: "killing the
/// process with SIGKILL at any moment loses no acknowledged change"):
///
/// - live, nothing in flight: the newest acknowledged token works (GET → 200, which rotates
///   again: the new token is adopted), its newest secret gets an access token, its last
///   access token is still active, and every token it replaced answers 401;
/// - a rotation in flight: the newest acknowledged token works, or the rotation happened and
///   the token moved on — then the client must still exist (dcrm GET → 200), and the test,
///   no longer knowing its token, deletes it with dcrm;
/// - a delete in flight: the newest token works, or the client is gone (dcrm → 404);
/// - deleted: its last token answers 401 and dcrm GET answers 404 — it stays deleted.
fn verify(
    user: &mut Api,
    admin: &mut Api,
    dcrm: &str,
    clients: &mut [Tracked],
    checks: &Mutex<Checks>,
) {
    let mut mine = Checks::default();
    for c in clients.iter_mut() {
        verify_one(user, admin, dcrm, c, &mut mine);
    }
    checks.lock().unwrap().merge(mine);
}

/// What verification found.
#[derive(Debug, Default)]
struct Checks {
    failures: Vec<String>,
    /// Requests in flight at a kill, by how they turned out.
    rotations_lost: usize,
    rotations_kept: usize,
    deletes_lost: usize,
    deletes_kept: usize,
}

impl Checks {
    fn merge(&mut self, other: Checks) {
        self.failures.extend(other.failures);
        self.rotations_lost += other.rotations_lost;
        self.rotations_kept += other.rotations_kept;
        self.deletes_lost += other.deletes_lost;
        self.deletes_kept += other.deletes_kept;
    }
}

fn verify_one(user: &mut Api, admin: &mut Api, dcrm: &str, c: &mut Tracked, checks: &mut Checks) {
    let fails = &mut checks.failures;
    let id = c.id.clone();
    let admin_get = |admin: &mut Api| admin.manage("GET", &id, dcrm).map(|r| r.status);
    if c.status == Status::Deleted {
        let r = user.manage("GET", &c.id, c.token());
        match r {
            Ok(r) if r.status == 401 => {}
            Ok(r) => fails.push(format!(
                "deleted client {}: its last token answers {} {} (expected 401)",
                c.id,
                r.status,
                r.text()
            )),
            Err(e) => fails.push(format!("GET /register/{}: {e}", c.id)),
        }
        match admin_get(admin) {
            Ok(404) => {}
            other => fails.push(format!(
                "deleted client {}: dcrm GET answers {other:?} (expected 404: it must stay deleted)",
                c.id
            )),
        }
        return;
    }
    let r = match user.manage("GET", &c.id, c.token()) {
        Ok(r) => r,
        Err(e) => return fails.push(format!("GET /register/{}: {e}", c.id)),
    };
    if c.pending.is_some() {
        // A 401 below is read as "the unacknowledged request took effect"; a server that
        // went back to an older state would make an older token work: check them all.
        c.checked = 0;
    }
    match (r.status, c.pending) {
        (200, pending) => {
            match pending {
                Some(Pending::Rotate) => checks.rotations_lost += 1,
                Some(Pending::Delete) => checks.deletes_lost += 1,
                None => {}
            }
            c.adopt(&r);
            c.pending = None;
        }
        (401, Some(Pending::Rotate)) => {
            // The unacknowledged rotation was made durable: the token moved on.
            checks.rotations_kept += 1;
            match admin_get(admin) {
                Ok(200) => {}
                other => fails.push(format!(
                    "client {} (rotation in flight at the kill) is gone: dcrm GET answers {other:?}",
                    c.id
                )),
            }
            match admin.manage("DELETE", &c.id, dcrm) {
                Ok(r) if r.status == 204 => c.status = Status::Deleted,
                Ok(r) => fails.push(format!(
                    "dcrm DELETE of {}: {} {}",
                    c.id,
                    r.status,
                    r.text()
                )),
                Err(e) => fails.push(format!("dcrm DELETE of {}: {e}", c.id)),
            }
            c.pending = None;
        }
        (401, Some(Pending::Delete)) => {
            checks.deletes_kept += 1;
            match admin_get(admin) {
                Ok(404) => {}
                other => fails.push(format!(
                    "client {} (delete in flight at the kill) rejects its newest token but \
                     still exists: dcrm GET answers {other:?}",
                    c.id
                )),
            }
            c.status = Status::Deleted;
            c.pending = None;
        }
        (status, pending) => {
            fails.push(format!(
                "client {}: its newest acknowledged registration access token (of {}) \
                 answers {status} {} after the restart (in flight at the kill: {pending:?})",
                c.id,
                c.tokens.len(),
                r.text()
            ));
            return;
        }
    }
    // Every token the client was given before its current one is dead.
    let newest = c.tokens.len() - 1;
    for (n, old) in c.tokens[c.checked..newest].iter().enumerate() {
        match user.manage("GET", &c.id, old) {
            Ok(r) if r.status == 401 => {}
            Ok(r) => fails.push(format!(
                "client {}: replaced token #{} answers {} {} after the restart (expected 401)",
                c.id,
                c.checked + n,
                r.status,
                r.text()
            )),
            Err(e) => fails.push(format!("GET /register/{}: {e}", c.id)),
        }
    }
    c.checked = if c.status == Status::Live {
        newest
    } else {
        c.tokens.len()
    };
    if c.status != Status::Live {
        return;
    }
    // The newest secret works, the one before does not.
    match user.token_basic(&c.id, c.secret()) {
        Ok(r) if r.status == 200 => {
            // Checked after the next restart, unless a newer one replaces it.
            let previous = c.access.replace(r.field("access_token"));
            if let Some(previous) = previous {
                check_active(user, c, &previous, fails);
            }
        }
        Ok(r) => fails.push(format!(
            "client {}: newest secret at /token: {} {}",
            c.id,
            r.status,
            r.text()
        )),
        Err(e) => fails.push(format!("POST /token: {e}")),
    }
    let previous = c.secrets[c.secrets.len() - 2].clone();
    match user.token_basic(&c.id, &previous) {
        Ok(r) if r.status == 401 => {}
        Ok(r) => fails.push(format!(
            "client {}: replaced secret at /token: {} {} (expected 401)",
            c.id,
            r.status,
            r.text()
        )),
        Err(e) => fails.push(format!("POST /token: {e}")),
    }
}

/// The client's acknowledged access token `access` is still active (RFC 7662).
fn check_active(user: &mut Api, c: &Tracked, access: &str, fails: &mut Vec<String>) {
    let auth = common::basic_auth(&c.id, c.secret());
    match user.form(
        "/introspect",
        &[("authorization", &auth)],
        &[("token", access)],
    ) {
        Ok(r) if r.status == 200 && r.json()["active"] == true => {}
        Ok(r) => fails.push(format!(
            "client {}: its acknowledged access token after the restart: {} {}",
            c.id,
            r.status,
            r.text()
        )),
        Err(e) => fails.push(format!("POST /introspect: {e}")),
    }
}

/// One load phase: `workers` threads, each first verifying its own clients against the
/// (restarted) server, then driving load until the server is killed. The kill comes after a
/// random delay once every worker has finished verifying. Returns the clients, with what was
/// in flight at the kill marked pending.
fn load_then_kill(
    g: &mut Gateway,
    dcrm: &str,
    groups: Vec<Vec<Tracked>>,
    rng: &mut Rng,
    load_ms: (u64, u64),
) -> (Vec<Vec<Tracked>>, Checks) {
    let checks = Arc::new(Mutex::new(Checks::default()));
    let verified = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let n = groups.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, mut clients)| {
            let (port, dcrm) = (g.tls, dcrm.to_owned());
            let (checks, verified, stop) = (checks.clone(), verified.clone(), stop.clone());
            let seed = rng.next() ^ i as u64;
            std::thread::spawn(move || {
                let mut user = Api {
                    port,
                    cert: None,
                    conn: None,
                };
                let mut admin = Api {
                    port,
                    cert: Some("admin"),
                    conn: None,
                };
                verify(&mut user, &mut admin, &dcrm, &mut clients, &checks);
                verified.fetch_add(1, Ordering::SeqCst);
                let mut rng = Rng::seeded(seed);
                drive(&mut user, &mut clients, &mut rng, &stop, deadline, &checks);
                clients
            })
        })
        .collect();
    // Bounded: verification of a few dozen clients takes well under a second.
    let wait_until = Instant::now() + Duration::from_secs(60);
    while verified.load(Ordering::SeqCst) < n && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (lo, hi) = load_ms;
    std::thread::sleep(Duration::from_millis(lo + rng.below(hi - lo)));
    g.kill9();
    // Threads that were between requests stop here instead of at their next failure.
    stop.store(true, Ordering::SeqCst);
    let groups = handles
        .into_iter()
        .map(|h| h.join().expect("load thread panicked"))
        .collect();
    let checks = std::mem::take(&mut *checks.lock().unwrap());
    (groups, checks)
}

/// After the last kill: restart and check everything once more.
fn final_check(g: &Gateway, dcrm: &str, groups: &mut [Vec<Tracked>]) -> Checks {
    let checks = Mutex::new(Checks::default());
    let mut user = g.api(None);
    let mut admin = g.api(Some("admin"));
    for clients in groups.iter_mut() {
        verify(&mut user, &mut admin, dcrm, clients, &checks);
    }
    checks.into_inner().unwrap()
}

fn assert_no_failures(failures: &[String], context: &str, g: &Gateway) {
    assert!(
        failures.is_empty(),
        "{context}: {} failure(s):\n  {}\nserver log (tail):\n{}",
        failures.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        g.log_tail()
    );
}

fn count(groups: &[Vec<Tracked>], f: impl Fn(&Tracked) -> bool) -> usize {
    groups.iter().flatten().filter(|c| f(c)).count()
}

// === SIGKILL rounds ===

/// SPEC §7: SIGKILL at a random moment under concurrent registrations, rotations, token
/// requests and deletes loses no acknowledged change; replaced tokens and secrets stay dead;
/// deleted clients stay deleted. 20 rounds on one data directory, so journals and snapshots
/// accumulate; snapshots every 300 ms or 1 s in two rounds out of three.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_change() {
    const ROUNDS: usize = 20;
    const WORKERS: usize = 4;
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded(std::process::id() as u64);
    let seed = rng.0;
    let intervals = ["1s", "2s", "5m"];
    let setup = |round: usize| Setup::new(Some(data.path())).snapshot_every(intervals[round % 3]);

    let mut g = Gateway::start(&setup(0));
    // An acknowledged access token that every later restart must still honour.
    let dcrm = dcrm_token(&mut g.api(Some("admin")));
    let mut groups: Vec<Vec<Tracked>> = vec![Vec::new(); WORKERS];
    let mut in_flight = Checks::default();
    for round in 0..ROUNDS {
        if round > 0 {
            g = Gateway::start(&setup(round));
        }
        let (next, checks) = load_then_kill(&mut g, &dcrm, groups, &mut rng, (80, 500));
        groups = next;
        assert_no_failures(
            &checks.failures,
            &format!("round {round} (seed {seed:#x})"),
            &g,
        );
        in_flight.merge(checks);
    }
    let g = Gateway::start(&setup(ROUNDS));
    let checks = final_check(&g, &dcrm, &mut groups);
    assert_no_failures(
        &checks.failures,
        &format!("after the last kill (seed {seed:#x})"),
        &g,
    );
    in_flight.merge(checks);

    let snapshots = fs::read_dir(data.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
        .count();
    eprintln!(
        "{ROUNDS} SIGKILL rounds in {:?}: {} clients tracked, {} deleted, {} rotations \
         acknowledged, {snapshots} snapshot file(s) left; in flight at a kill: rotations \
         {} kept / {} lost, deletes {} kept / {} lost",
        started.elapsed(),
        count(&groups, |_| true),
        count(&groups, |c| c.status == Status::Deleted),
        groups
            .iter()
            .flatten()
            .map(|c| c.tokens.len() - 1)
            .sum::<usize>(),
        in_flight.rotations_kept,
        in_flight.rotations_lost,
        in_flight.deletes_kept,
        in_flight.deletes_lost,
    );
    // The load really exercised every kind of change.
    assert!(count(&groups, |c| c.status == Status::Deleted) > 0);
    assert!(count(&groups, |c| c.tokens.len() > 3) > 0);
}

/// SPEC §7: snapshots are taken while writes continue ("1s"), and a SIGKILL afterwards
/// loses nothing that was acknowledged before, during or after a snapshot.
#[test]
fn snapshot_taken_while_writes_continue_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path())).snapshot_every("1s");
    let mut g = Gateway::start(&setup);
    let dcrm = dcrm_token(&mut g.api(Some("admin")));

    let checks = Arc::new(Mutex::new(Checks::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(30);
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let port = g.tls;
            let (checks, stop) = (checks.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut api = Api {
                    port,
                    cert: None,
                    conn: None,
                };
                let mut clients = Vec::new();
                let mut rng = Rng::seeded(100 + i);
                drive(&mut api, &mut clients, &mut rng, &stop, deadline, &checks);
                clients
            })
        })
        .collect();
    // ~3 s of load; note every snapshot file that appears meanwhile.
    let mut seen = HashSet::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for e in fs::read_dir(data.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snapshot-") && name.ends_with(".snap") {
                seen.insert(name);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        g.alive(),
        "certgate died during the load; log:\n{}",
        g.log_tail()
    );
    g.kill9();
    stop.store(true, Ordering::SeqCst);
    let mut groups: Vec<Vec<Tracked>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let checks = std::mem::take(&mut *checks.lock().unwrap());
    assert_no_failures(&checks.failures, "during the load", &g);
    assert!(
        !seen.is_empty(),
        "no snapshot-*.snap appeared in {:?} during 3 s of writes with snapshot_interval = \"1s\"; log:\n{}",
        data.path(),
        g.log_tail()
    );
    let rotations: usize = groups.iter().flatten().map(|c| c.tokens.len() - 1).sum();
    assert!(
        count(&groups, |_| true) > 0 && rotations > 0,
        "no load was acknowledged"
    );

    let g = Gateway::start(&setup);
    let checks = final_check(&g, &dcrm, &mut groups);
    assert_no_failures(
        &checks.failures,
        &format!("after the restart (snapshots seen: {seen:?})"),
        &g,
    );
}

// === journal damage ===

/// The journal files in `dir`, oldest generation first.
fn journals(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "journal-", ".log")
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "snapshot-", ".snap")
}

fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
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

/// The newest journal, which must hold at least one record.
fn last_journal(dir: &Path) -> PathBuf {
    let path = journals(dir)
        .pop()
        .unwrap_or_else(|| panic!("no journal in {dir:?}"));
    assert!(fs::metadata(&path).unwrap().len() > 0, "{path:?} is empty");
    path
}

/// Byte ranges `(start, end)` of the framed records in a journal (`len: u32 LE`,
/// `crc32c: u32 LE`, payload), read independently of certgate.
fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 8 + len;
        if len == 0 || end > bytes.len() {
            break;
        }
        spans.push((pos, end));
        pos = end;
    }
    spans
}

/// Registers a client (201 asserted) and returns it.
fn register_one(api: &mut Api) -> Tracked {
    let r = api.must(
        "POST",
        "/register",
        &[("content-type", "application/json")],
        registration_body().to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "POST /register: {}", r.text());
    Tracked::from_registration(&r)
}

/// Rotates a client (GET → 200 asserted) and adopts the new credentials.
fn rotate(api: &mut Api, c: &mut Tracked) {
    let r = api.manage("GET", &c.id, c.token()).unwrap();
    assert_eq!(r.status, 200, "GET /register/{}: {}", c.id, r.text());
    c.adopt(&r);
}

/// Asserts the client's newest token works (rotating it) and its previous one does not.
fn assert_current(api: &mut Api, c: &mut Tracked, g: &Gateway) {
    let r = api.manage("GET", &c.id, c.token()).unwrap();
    assert_eq!(
        r.status,
        200,
        "client {}: newest acknowledged token after the restart: {}\nlog:\n{}",
        c.id,
        r.text(),
        g.log_tail()
    );
    c.adopt(&r);
    let old = c.tokens[c.tokens.len() - 2].clone();
    let r = api.manage("GET", &c.id, &old).unwrap();
    assert_eq!(
        r.status,
        401,
        "client {}: replaced token: {}",
        c.id,
        r.text()
    );
}

/// Whether the log has a WARN line mentioning `word` (case-insensitive).
fn warns_about(log: &str, word: &str) -> bool {
    log.lines()
        .any(|l| l.contains("WARN") && l.to_lowercase().contains(word))
}

/// SPEC §7, §6a.15: a torn last record (crash mid-write) is dropped with a warning and
/// everything acknowledged before it survives; the torn bytes are cut off, so records
/// appended after the restart are read back too.
#[test]
fn torn_journal_tail_is_dropped_with_a_warning_and_earlier_state_survives() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));

    // Acknowledged: A (rotated twice) and B; then S, whose record the "crash" will tear.
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut a = register_one(&mut api);
    let mut b = register_one(&mut api);
    rotate(&mut api, &mut a);
    rotate(&mut api, &mut a);
    let s = register_one(&mut api);
    g.kill9();

    // 1. Cut the last record short, as a crash in the middle of its write would.
    let journal = last_journal(data.path());
    let bytes = fs::read(&journal).unwrap();
    let spans = record_spans(&bytes);
    assert_eq!(
        spans.last().map(|s| s.1),
        Some(bytes.len()),
        "{journal:?} does not end with a whole record"
    );
    let (last_start, last_end) = *spans.last().unwrap();
    fs::write(&journal, &bytes[..last_end - 5]).unwrap();

    let mut g = Gateway::start(&setup);
    let log = g.log_text();
    assert!(
        warns_about(&log, "torn"),
        "no warning about the torn tail of {journal:?}; log:\n{log}"
    );
    let mut api = g.api(None);
    assert_current(&mut api, &mut a, &g);
    assert_current(&mut api, &mut b, &g);
    // S's only record was the torn one: it is gone, not half-there.
    let r = api.manage("GET", &s.id, s.token()).unwrap();
    assert_eq!(r.status, 401, "client of the torn record: {}", r.text());
    let len_now = fs::metadata(&journal).unwrap().len() as usize;
    assert!(
        len_now >= last_start,
        "recovery cut valid records from {journal:?}"
    );
    let mut c = register_one(&mut api);
    rotate(&mut api, &mut c);
    g.kill9();

    // 2. Garbage after the last record: a header promising more bytes than follow, then a
    //    few zeroes (a crash after the file grew).
    let journal = last_journal(data.path());
    let mut f = fs::OpenOptions::new().append(true).open(&journal).unwrap();
    f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'{', b'"', b'o'])
        .unwrap();
    f.write_all(&[0u8; 13]).unwrap();
    drop(f);

    let mut g = Gateway::start(&setup);
    let log = g.log_text();
    assert!(
        warns_about(&log, "torn"),
        "no warning about the garbage after the last record of {journal:?}; log:\n{log}"
    );
    let mut api = g.api(None);
    for client in [&mut a, &mut b, &mut c] {
        assert_current(&mut api, client, &g);
    }
    g.kill9();

    // 3. The garbage was cut off: this restart finds a clean journal and the newest state.
    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    for client in [&mut a, &mut b, &mut c] {
        assert_current(&mut api, client, &g);
    }
    assert!(
        !warns_about(&g.log_text(), "torn"),
        "the torn tail was not cut off at the previous start:\n{}",
        g.log_text()
    );
}

/// SPEC §7, §6a.15: a damaged record followed by valid ones is corruption: the binary
/// refuses to start with a message naming the file and the offset, and leaves the file
/// as it found it.
#[test]
fn corrupt_journal_record_followed_by_valid_ones_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut a = register_one(&mut api);
    for _ in 0..3 {
        register_one(&mut api);
    }
    rotate(&mut api, &mut a);
    g.kill9();

    let journal = last_journal(data.path());
    let mut bytes = fs::read(&journal).unwrap();
    let spans = record_spans(&bytes);
    assert!(spans.len() >= 5, "expected 5 records in {journal:?}");
    // A byte in the middle of the second record's payload.
    let (start, end) = spans[1];
    bytes[(start + 8 + end) / 2] ^= 0x5a;
    fs::write(&journal, &bytes).unwrap();

    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    let name = journal.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.contains(&name),
        "the refusal does not name {name}:\n{log}"
    );
    assert!(
        log.contains("offset") && log.contains(&start.to_string()),
        "the refusal does not name the offset {start}:\n{log}"
    );
    assert_eq!(
        fs::read(&journal).unwrap(),
        bytes,
        "the refused start modified {journal:?} (it must not 'repair' by cutting valid records)"
    );

    // Damage in the first record's length field is corruption too.
    let mut bytes2 = bytes.clone();
    bytes2[(start + 8 + end) / 2] ^= 0x5a; // undo
    bytes2[2] ^= 0x01; // first record's length now points into the middle of nowhere
    fs::write(&journal, &bytes2).unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains(&name) && log.contains("offset"),
        "the refusal does not name {name} and the offset:\n{log}"
    );
}

/// SPEC §7: a damaged snapshot refuses to start, naming the file and the offset; with the
/// original bytes back, everything acknowledged before the (graceful) snapshot is there.
#[test]
fn corrupt_snapshot_refuses_to_start_naming_file_and_offset() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut clients: Vec<Tracked> = (0..4).map(|_| register_one(&mut api)).collect();
    rotate(&mut api, &mut clients[0]);
    drop(api);
    g.signal("TERM");
    let status = g.wait_exit();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", g.log_tail());
    let snapshot = snapshots(data.path())
        .pop()
        .expect("graceful shutdown writes a snapshot");
    let original = fs::read(&snapshot).unwrap();
    let name = snapshot.file_name().unwrap().to_string_lossy().into_owned();

    // A flipped byte in the middle.
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&snapshot, &bytes).unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains(&name) && log.contains("offset"),
        "the refusal does not name {name} and the offset:\n{log}"
    );

    // Truncated.
    fs::write(&snapshot, &original[..original.len() - 3]).unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains(&name) && log.contains("offset"),
        "the refusal does not name {name} and the offset:\n{log}"
    );

    // Restored: starts, and the snapshot held every acknowledged change.
    fs::write(&snapshot, &original).unwrap();
    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    for c in clients.iter_mut() {
        assert_current(&mut api, c, &g);
    }
}

/// A missing data directory is created; an empty journal, an empty newer journal (a crash
/// right after a snapshot opened it) and a leftover temporary snapshot are all fine.
#[test]
fn missing_data_dir_empty_journals_and_leftover_temp_files_start_fine() {
    let tmp = tempfile::tempdir().unwrap();

    // Missing (nested) directory.
    let dir = tmp.path().join("not/yet/there");
    let setup = Setup::new(Some(&dir));
    let mut g = Gateway::start(&setup);
    assert!(dir.is_dir(), "{dir:?} was not created");
    let mut a = register_one(&mut g.api(None));
    g.kill9();
    let mut g = Gateway::start(&setup);
    assert_current(&mut g.api(None), &mut a, &g);
    g.kill9();

    // An empty journal and nothing else.
    let dir = tmp.path().join("empty");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(format!("journal-{:020}.log", 0)), b"").unwrap();
    let setup = Setup::new(Some(&dir));
    let mut g = Gateway::start(&setup);
    let mut b = register_one(&mut g.api(None));
    g.kill9();

    // An empty journal of the next generation after one with records.
    let newest = journals(&dir).len();
    fs::write(dir.join(format!("journal-{newest:020}.log")), b"").unwrap();
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    assert_current(&mut api, &mut b, &g);
    let mut c = register_one(&mut api);
    drop(api);
    g.kill9();

    // A temporary snapshot left by a crash during a snapshot write.
    let tmp_snapshot = dir.join(format!("snapshot-{:020}.snap.tmp", newest + 1));
    fs::write(&tmp_snapshot, b"\x20\0\0\0partial").unwrap();
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    assert_current(&mut api, &mut b, &g);
    assert_current(&mut api, &mut c, &g);
    drop(api);
    g.kill9();
    assert!(
        !tmp_snapshot.exists(),
        "the leftover {tmp_snapshot:?} is still there"
    );
}

// === revocations and grace across a restart ===

/// `POST /token` for the dev admin with `scope`; returns the access token.
fn admin_token(admin: &mut Api, scope: &str) -> String {
    let r = admin
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "admin"),
                ("scope", scope),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "admin token ({scope}): {}", r.text());
    r.field("access_token")
}

/// `POST /register` with an initial access token.
fn register_with(api: &mut Api, initial: &str) -> Reply {
    let auth = format!("Bearer {initial}");
    api.call(
        "POST",
        "/register",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        registration_body().to_string().as_bytes(),
    )
    .unwrap()
}

/// Whether introspection (by the token's own client) calls `token` active.
fn active(api: &mut Api, c: &Tracked, token: &str) -> bool {
    let auth = common::basic_auth(&c.id, c.secret());
    let r = api
        .form(
            "/introspect",
            &[("authorization", &auth)],
            &[("token", token)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "introspect: {}", r.text());
    r.json()["active"] == true
}

/// SPEC §7 ("token issue, revoke" are changes like any other), RFC 7592 §2.1, SPEC §6a.8:
/// a revoked access token, a registration token revoked by use on an unknown client, and a
/// spent initial access token stay dead after SIGKILL; an unspent one still works.
#[test]
fn revocations_and_spent_initial_access_tokens_survive_a_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(Some(data.path()));
    setup.registration_auth = r#"["initial-access-token"]"#;
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut admin = g.api(Some("admin"));
    let spent_a = admin_token(&mut admin, "dcr");
    let spent_b = admin_token(&mut admin, "dcr");
    let unspent = admin_token(&mut admin, "dcr");

    let r = register_with(&mut api, &spent_a);
    assert_eq!(r.status, 201, "{}", r.text());
    let mut a = Tracked::from_registration(&r);
    let r = register_with(&mut api, &spent_b);
    assert_eq!(r.status, 201, "{}", r.text());
    let b = Tracked::from_registration(&r);
    let r = register_with(&mut api, &spent_a);
    assert_eq!(r.status, 401, "a spent initial access token: {}", r.text());

    // A's first access token is revoked (RFC 7009), its second is not.
    let r = api.token_basic(&a.id, a.secret()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = r.field("access_token");
    let r = api.token_basic(&a.id, a.secret()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let live = r.field("access_token");
    let basic = common::basic_auth(&a.id, a.secret());
    let r = api
        .form(
            "/revoke",
            &[("authorization", &basic)],
            &[("token", &revoked)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "revoke: {}", r.text());
    assert!(!active(&mut api, &a, &revoked));
    assert!(active(&mut api, &a, &live));

    // B's registration token used on an unknown client: 401, and revoked (RFC 7592 §2.1).
    let r = api
        .manage("GET", "AAAAAAAAAAAAAAAAAAAAAA", b.token())
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = api.manage("GET", &b.id, b.token()).unwrap();
    assert_eq!(
        r.status,
        401,
        "B's revoked token before the kill: {}",
        r.text()
    );
    drop((api, admin));
    g.kill9();

    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut admin = g.api(Some("admin"));
    let r = register_with(&mut api, &spent_a);
    assert_eq!(
        r.status,
        401,
        "a spent initial access token works again after SIGKILL: {}",
        r.text()
    );
    let r = register_with(&mut api, &spent_b);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = register_with(&mut api, &unspent);
    assert_eq!(
        r.status,
        201,
        "an unspent initial access token after SIGKILL: {}",
        r.text()
    );
    assert!(
        !active(&mut api, &a, &revoked),
        "a revoked access token is active again after SIGKILL"
    );
    assert!(
        active(&mut api, &a, &live),
        "an acknowledged access token is gone after SIGKILL"
    );
    let r = api.manage("GET", &b.id, b.token()).unwrap();
    assert_eq!(
        r.status,
        401,
        "B's revoked registration token works again after SIGKILL: {}",
        r.text()
    );
    let dcrm = admin_token(&mut admin, "dcrm");
    let r = admin.manage("GET", &b.id, &dcrm).unwrap();
    assert_eq!(r.status, 200, "B itself still exists: {}", r.text());
    assert_current(&mut api, &mut a, &g);
}

/// SPEC §6a.17: the successor a grace-period replay hands out again is kept in memory only,
/// never on disk; after a restart the replay answers 401 and the successor works.
#[test]
fn grace_replay_is_memory_only_and_answers_401_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(Some(data.path()));
    setup.extra = "[management]\nrotation_grace = \"1h\"\n";
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut a = register_one(&mut api);
    rotate(&mut api, &mut a);
    // Within the grace period the replaced token gets the same successor again.
    let r = api.manage("GET", &a.id, &a.tokens[0]).unwrap();
    assert_eq!(r.status, 200, "grace replay: {}", r.text());
    assert_eq!(r.field("registration_access_token"), a.token());
    let credentials: Vec<(String, String)> = a
        .tokens
        .iter()
        .chain(&a.secrets)
        .map(|t| ("a credential of the grace test".to_owned(), t.clone()))
        .collect();
    assert_no_secret_in(&all_files(data.path()), &credentials);
    drop(api);
    g.kill9();

    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    let r = api.manage("GET", &a.id, &a.tokens[0]).unwrap();
    assert_eq!(
        r.status,
        401,
        "a grace replay after a restart (SPEC §6a.17): {}",
        r.text()
    );
    let r = api.manage("GET", &a.id, a.token()).unwrap();
    assert_eq!(
        r.status,
        200,
        "the successor after a restart: {}\nlog:\n{}",
        r.text(),
        g.log_tail()
    );
}

// === nothing secret at rest ===

/// Every way a credential could be written: plaintext, its raw bytes, and their standard
/// base64 and hex forms.
fn secret_forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![("plaintext".to_owned(), secret.as_bytes().to_vec())];
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(secret) {
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(("raw bytes".into(), raw.clone()));
        forms.push(("base64".into(), STANDARD.encode(&raw).into_bytes()));
        forms.push((
            "base64 (no padding)".into(),
            STANDARD_NO_PAD.encode(&raw).into_bytes(),
        ));
        forms.push(("hex".into(), hex.into_bytes()));
    }
    forms
}

/// Every regular file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts no file in `files` holds any form of any of `secrets`; returns the files read.
fn assert_no_secret_in(files: &[PathBuf], secrets: &[(String, String)]) {
    for path in files {
        let bytes = fs::read(path).unwrap();
        for (what, secret) in secrets {
            for (form, needle) in secret_forms(secret) {
                assert!(
                    !contains(&bytes, &needle),
                    "{path:?} contains the {form} of {what} (SPEC §7: digests only)"
                );
            }
        }
    }
}

/// SPEC §7: credentials are at rest only as digests — the data directory (journals and
/// snapshots) holds no registration access token, client secret or access token the test
/// was issued, in any encoding; nor does the log.
#[test]
fn nothing_secret_reaches_the_data_dir_or_the_log() {
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(Some(data.path())).snapshot_every("1s");
    setup.log_filter = "info,certgate=debug";
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut admin = g.api(Some("admin"));
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, value: String| {
        secrets.push((what.to_owned(), value.clone()));
        value
    };

    let dcrm = keep("dcrm access token", dcrm_token(&mut admin));
    let r = admin
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "admin"),
                ("scope", "dcr"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("initial access token", r.field("access_token"));

    // A: client_secret_basic; registered, read (rotates), updated (rotates).
    let r = api.register(&registration_body()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let a = r.field("client_id");
    keep(
        "A's registration token",
        r.field("registration_access_token"),
    );
    keep("A's client secret", r.field("client_secret"));
    let r = api
        .manage("GET", &a, &r.field("registration_access_token"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let token = keep("A's rotated token", r.field("registration_access_token"));
    let secret = keep("A's rotated secret", r.field("client_secret"));
    let auth = format!("Bearer {token}");
    let body = json!({
        "client_id": a,
        "client_secret": secret,
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "client_name": "durability",
    });
    let r = api
        .call(
            "PUT",
            &format!("/register/{a}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "PUT: {}", r.text());
    let a_token = keep("A's token after PUT", r.field("registration_access_token"));
    let a_secret = keep("A's secret after PUT", r.field("client_secret"));
    let r = api.token_basic(&a, &a_secret).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = keep("A's access token (revoked)", r.field("access_token"));
    let r = api.token_basic(&a, &a_secret).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("A's access token", r.field("access_token"));
    let basic = common::basic_auth(&a, &a_secret);
    let r = api
        .form(
            "/revoke",
            &[("authorization", &basic)],
            &[("token", &revoked)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "revoke: {}", r.text());

    // B: client_secret_post.
    let r = api
        .register(&json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
        }))
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let b = r.field("client_id");
    let b_token = keep(
        "B's registration token",
        r.field("registration_access_token"),
    );
    let b_secret = keep("B's client secret", r.field("client_secret"));
    let r = api
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &b),
                ("client_secret", &b_secret),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("B's access token", r.field("access_token"));

    // C: registered and deleted with its token; and dcrm reads A.
    let r = api.register(&registration_body()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let c = r.field("client_id");
    let c_token = keep(
        "C's registration token",
        r.field("registration_access_token"),
    );
    keep("C's client secret", r.field("client_secret"));
    assert_eq!(api.manage("DELETE", &c, &c_token).unwrap().status, 204);
    assert_eq!(admin.manage("GET", &a, &dcrm).unwrap().status, 200);

    // Let a snapshot happen, then change more so the journal holds records after it.
    let until = Instant::now() + Duration::from_secs(20);
    while snapshots(data.path()).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !snapshots(data.path()).is_empty(),
        "no snapshot with snapshot_interval = \"300ms\""
    );
    let r = api.manage("GET", &b, &b_token).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("B's rotated token", r.field("registration_access_token"));
    keep("B's rotated secret", r.field("client_secret"));
    let r = api.manage("GET", &a, &a_token).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("A's last token", r.field("registration_access_token"));
    keep("A's last secret", r.field("client_secret"));
    drop((api, admin));

    // While running: journals (and snapshots) as they are.
    let files = all_files(data.path());
    let everything: Vec<u8> = files.iter().flat_map(|p| fs::read(p).unwrap()).collect();
    assert!(
        contains(&everything, a.as_bytes()) && contains(&everything, b.as_bytes()),
        "the data directory does not even hold the client ids: {files:?}"
    );
    assert_no_secret_in(&files, &secrets);

    // After a graceful stop: the final snapshot too.
    g.signal("TERM");
    let status = g.wait_exit();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", g.log_tail());
    assert_no_secret_in(&all_files(data.path()), &secrets);

    // SPEC §7 also says never in logs.
    assert_no_secret_in(std::slice::from_ref(&g.log), &secrets);
}

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

// === the registry under a snapshot, without sockets ===

/// SPEC §7 at the library level, where the race is easy to hit: registrations acknowledged
/// while snapshots are being taken must all be there after a restart. A snapshot makes the
/// journals before it redundant and deletes them, so every change must be in the snapshot or
/// in a journal the snapshot keeps. Short trials keep the registry (and so each snapshot)
/// small, so many snapshots overlap registrations.
#[test]
fn registrations_racing_snapshots_all_survive_a_restart() {
    race_snapshots(Made::Registrations);
}

/// The same for access tokens issued while snapshots are being taken.
#[test]
fn access_tokens_racing_snapshots_all_survive_a_restart() {
    race_snapshots(Made::AccessTokens);
}

/// What the threads racing the snapshots make.
#[derive(Clone, Copy, Debug)]
enum Made {
    Registrations,
    AccessTokens,
}

/// Runs trials until 150 snapshots overlapped the racing threads, or for at most 10 s.
fn race_snapshots(made: Made) {
    let started = Instant::now();
    let (mut trials, mut total, mut snapshots) = (0, 0, 0);
    while snapshots < 150 && started.elapsed() < Duration::from_secs(10) {
        let (made_n, lost, n) = snapshot_race_trial(made, Duration::from_millis(100));
        trials += 1;
        total += made_n;
        snapshots += n;
        assert!(
            lost.is_empty(),
            "trial {trials}: {} of {made_n} acknowledged {made:?} are missing after a restart \
             ({n} snapshots were taken while they were made); e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    eprintln!("{trials} trials: {total} {made:?}, {snapshots} snapshots, none lost");
}

/// Makes registrations or access tokens from 8 threads for `time` while another thread
/// snapshots in a loop, waits until the journal is durable (what a handler waits for before
/// it answers), restores a second registry from the data directory and returns (how many
/// were made, those it lacks, snapshots taken).
fn snapshot_race_trial(made: Made, time: Duration) -> (usize, Vec<String>, usize) {
    use certgate::registry::{ClientCredentials, Registry};
    // On a memory file system when there is one: fsync is then nearly free, so snapshots
    // are quick and frequent and the interleavings many.
    let shm = Path::new("/dev/shm");
    let data = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let toml = format!(
        "[registration]\nauthentication = []\n\n[tokens]\nmax_active_per_client = 1000000\n\n[store]\ndata_dir = {}\n",
        toml_string(data.path())
    );
    let config = certgate::Config::parse(&toml).unwrap();
    let clock: Arc<dyn certgate::clock::Clock> = Arc::new(certgate::clock::SystemClock);
    let registry = Arc::new(Registry::from_config(&config, clock.clone()).unwrap());
    let body = registration_body().as_object().unwrap().clone();
    // Token makers' clients, registered (and snapshotted) before the race.
    let owners: Vec<ClientCredentials> = (0..8)
        .map(|_| {
            let r = registry.register(body.clone(), None).expect("register");
            ClientCredentials {
                basic: Some((r.client_id, r.client_secret.expect("a secret client"))),
                ..Default::default()
            }
        })
        .collect();
    registry.snapshot().expect("snapshot");

    let stop = Arc::new(AtomicBool::new(false));
    let snapshotter = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                registry.snapshot().expect("snapshot");
                n += 1;
            }
            n
        })
    };
    let until = Instant::now() + time;
    let makers: Vec<_> = owners
        .into_iter()
        .map(|owner| {
            let (registry, body) = (registry.clone(), body.clone());
            std::thread::spawn(move || {
                let client = registry
                    .authenticate_client(&owner, None)
                    .expect("authenticate");
                let mut made_ = Vec::new();
                while Instant::now() < until {
                    made_.push(match made {
                        Made::Registrations => {
                            registry
                                .register(body.clone(), None)
                                .expect("register")
                                .client_id
                        }
                        Made::AccessTokens => {
                            registry
                                .issue_token(&client, Some("client_credentials"), None, None)
                                .expect("token")
                                .access_token
                        }
                    });
                }
                made_
            })
        })
        .collect();
    let all: Vec<String> = makers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    let snapshots = snapshotter.join().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(registry.sync_since(0))
        .expect("journal sync");

    let restored = Registry::from_config(&config, clock).unwrap();
    let lost = all
        .iter()
        .filter(|x| match made {
            Made::Registrations => !restored.contains(x),
            Made::AccessTokens => restored.access_token(x, None).is_err(),
        })
        .cloned()
        .collect();
    (all.len(), lost, snapshots)
}
