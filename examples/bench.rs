//! The certgate benchmark (SPEC §10): load workloads against servers in child processes,
//! and in-process memory, snapshot and per-step measurements.
//!
//! ```text
//! cargo run --release --example bench -- register            # also: read-rotate,
//! cargo run --release --example bench -- handshake-register  #   durable-register
//! cargo run --release --example bench -- ceiling [--handshake]
//! cargo run --release --example bench -- memory [--clients N]
//! cargo run --release --example bench -- snapshot [--clients N]
//! cargo run --release --example bench -- micro
//! cargo run --release --example bench -- report RESULTS.jsonl  # markdown from --json lines
//! ```
//!
//! The server under test (certgate, or the *ceiling*: the smallest tokio + hyper +
//! tokio-rustls server, using certgate's own TLS acceptor) runs in a child process that this
//! binary starts by re-executing itself with a hidden `serve-*` subcommand. Load generator
//! and server are then two processes sharing the machine's cores, as with a load generator
//! beside the server; one process with two runtimes would share an allocator and hide the
//! cost of the kernel's loopback path between them.
//!
//! Each workload runs interleaved with its baseline (the ceiling; memory-only `register`
//! for `durable-register`): both servers run, and the load generator alternates between
//! them in short slices, so both see the same background load. Measuring the ceiling first
//! and the workload afterwards was tried and gave ratios off by a factor of two on a
//! machine shared with other jobs.
//!
//! Each load connection is one task on a multi-thread runtime speaking HTTP/1.1 over
//! tokio-rustls with client1's certificate, in a closed loop (next request when the
//! previous answer is read). Latencies go into per-task log-linear histograms, merged at
//! the end; only requests completed inside the measured window count. CPU time comes from
//! `/proc`, so a result also says how many microseconds of server CPU one request costs,
//! a figure that does not depend on how the processes happened to share the cores.
//! Method and measured numbers: `docs/benchmarks.md`; every workload at once:
//! `scripts/bench.sh`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use certgate::clock::SystemClock;
use certgate::config::RegistrationAuth;
use certgate::identity::{CertSource, ClientCertificate};
use certgate::registry::Registry;
use certgate::{Config, Listeners};

type Error = Box<dyn std::error::Error + Send + Sync>;

// === command line ===

#[derive(Parser)]
#[command(about = "certgate benchmark (SPEC §10)")]
struct Cli {
    #[command(subcommand)]
    command: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// The ceiling: a minimal tokio + hyper + tokio-rustls server with certgate's TLS
    /// acceptor, answering every request with a fixed registration-sized JSON body.
    Ceiling {
        #[command(flatten)]
        load: LoadOpts,
        /// A full TLS handshake per request (the reference for handshake-register).
        #[arg(long)]
        handshake: bool,
    },
    /// POST /register over keep-alive connections.
    Register(LoadOpts),
    /// Each connection registers once, then loops GET /register/{id}, adopting the rotated
    /// token from every answer.
    ReadRotate(LoadOpts),
    /// POST /register with a new connection and a full TLS handshake per request.
    HandshakeRegister(LoadOpts),
    /// POST /register with `[store] data_dir` set (journal + fsync before each answer).
    DurableRegister(LoadOpts),
    /// GET /.well-known/oauth-authorization-server (a pre-encoded document): certgate's
    /// fixed cost per request, without domain work.
    Discovery(LoadOpts),
    /// In-process: RSS growth per registered client.
    Memory(StoreOpts),
    /// In-process: snapshot write and restore time of a registry of N clients.
    Snapshot(StoreOpts),
    /// In-process, one thread: what each step of the registration path costs.
    Micro(MicroOpts),
    /// Prints a markdown table from `--json` result lines (scripts/bench.sh uses it).
    Report {
        /// File of JSON result lines.
        results: PathBuf,
    },
    /// Child process: the ceiling server.
    #[command(hide = true)]
    ServeCeiling(ServeOpts),
    /// Child process: certgate.
    #[command(hide = true)]
    ServeCertgate(ServeOpts),
}

#[derive(Args, Clone)]
struct LoadOpts {
    /// Concurrent connections per server (closed loop).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Warm-up before measuring (requests are made but not counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measured time (per server of an interleaved run).
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measure the workload alone instead of interleaved with its baseline (the ceiling;
    /// memory-only `register` for `durable-register`).
    #[arg(long)]
    alone: bool,
    /// Length of the alternating slices of an interleaved run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    slice: Duration,
    /// Worker threads of the load generator's runtime (default: one per core).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Worker threads of the server's runtime (default: one per core).
    #[arg(long)]
    server_threads: Option<usize>,
    /// The certgate config whose TLS files (and settings) are used.
    #[arg(long, default_value = "config/certgate.toml")]
    config: PathBuf,
    /// The client certificate of the dev PKI to present (certs/NAME.pem).
    #[arg(long, default_value = "client1")]
    cert: String,
    /// Record a flat CPU profile of the server during the measured window with
    /// `perf record` into this file.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// With `--perf`: record call graphs (DWARF unwinding; slows the server down, use it
    /// to attribute time, not to measure throughput).
    #[arg(long)]
    perf_call_graph: bool,
    /// One JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct StoreOpts {
    /// Number of clients to register.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    clients: usize,
    /// The certgate config to build the registry from.
    #[arg(long, default_value = "config/certgate.toml")]
    config: PathBuf,
    /// Directory under which the snapshot workload creates its temporary data dir.
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Profile each timed phase with `perf record` into PREFIX.<phase>.perf.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// One JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct MicroOpts {
    /// Iterations per step.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    iterations: u32,
    /// The certgate config to build the registry from.
    #[arg(long, default_value = "config/certgate.toml")]
    config: PathBuf,
    /// One JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct ServeOpts {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    threads: Option<usize>,
    /// certgate only: `[store] data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Workload::Ceiling { load, handshake } => {
            load_workload(Plan::ceiling(handshake), None, load)
        }
        Workload::Register(load) => {
            load_workload(Plan::certgate("register"), Some(Plan::ceiling(false)), load)
        }
        Workload::ReadRotate(load) => load_workload(
            Plan {
                read_rotate: true,
                ..Plan::certgate("read-rotate")
            },
            Some(Plan::ceiling(false)),
            load,
        ),
        Workload::HandshakeRegister(load) => load_workload(
            Plan {
                handshake: true,
                ..Plan::certgate("handshake-register")
            },
            Some(Plan::ceiling(true)),
            load,
        ),
        Workload::DurableRegister(load) => load_workload(
            Plan {
                durable: true,
                ..Plan::certgate("durable-register")
            },
            Some(Plan::certgate("register")),
            load,
        ),
        Workload::Discovery(load) => load_workload(
            Plan {
                get: Some("/.well-known/oauth-authorization-server"),
                ..Plan::certgate("discovery")
            },
            Some(Plan::ceiling(false)),
            load,
        ),
        Workload::Memory(opts) => memory(&opts),
        Workload::Snapshot(opts) => snapshot(&opts),
        Workload::Micro(opts) => micro(&opts),
        Workload::Report { results } => report(&results),
        Workload::ServeCeiling(opts) => serve(ServerKind::Ceiling, &opts),
        Workload::ServeCertgate(opts) => serve(ServerKind::Certgate, &opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// === the request every workload sends ===

/// A typical registration of an mTLS client: `tls_client_auth` bound to client1's subject,
/// two redirect URIs, the usual human-readable fields.
fn registration_body() -> Map<String, Value> {
    let body = json!({
        "client_name": "Benchmark client",
        "redirect_uris": [
            "https://client.example.com/callback",
            "https://client.example.com/callback/alt"
        ],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": "CN=client1,O=certgate dev",
        "tls_client_certificate_bound_access_tokens": true,
        "scope": "openid profile api:read api:write",
        "contacts": ["ops@client.example.com"],
        "client_uri": "https://client.example.com",
        "software_id": "4NRB1-0XZABZI9E6-5SM3R",
        "software_version": "2.1.0"
    });
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What the ceiling answers: a registration response for `registration_body()` with
/// placeholder credentials, so it has the size of certgate's real answer.
fn ceiling_body() -> Bytes {
    let mut body = Map::new();
    body.insert("client_id".into(), json!("Wk9vQ2xpZW50SWRCZW5jaA"));
    body.insert("client_id_issued_at".into(), json!(1_767_225_600u64));
    body.insert(
        "registration_access_token".into(),
        json!("dG9rZW5kZ3NhZmRzYWZkc2FmZHNhZmRzYWZkc2FmZHNh"),
    );
    body.insert(
        "registration_access_token_expires_in".into(),
        json!(31_536_000u64),
    );
    body.insert(
        "registration_client_uri".into(),
        json!("https://localhost:8443/register/Wk9vQ2xpZW50SWRCZW5jaA"),
    );
    body.extend(registration_body());
    Bytes::from(Value::Object(body).to_string())
}

// === load workloads ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    Ceiling,
    Certgate,
}

/// What one load workload does.
#[derive(Clone, Copy)]
struct Plan {
    name: &'static str,
    server: ServerKind,
    /// GET /register/{id} with the current token, adopting the rotated one.
    read_rotate: bool,
    /// GET this path instead of registering.
    get: Option<&'static str>,
    /// A new connection (full handshake, no resumption) per request.
    handshake: bool,
    /// certgate with a data dir.
    durable: bool,
}

impl Plan {
    fn certgate(name: &'static str) -> Self {
        Self {
            name,
            server: ServerKind::Certgate,
            read_rotate: false,
            get: None,
            handshake: false,
            durable: false,
        }
    }

    fn ceiling(handshake: bool) -> Self {
        Self {
            name: if handshake {
                "ceiling-handshake"
            } else {
                "ceiling"
            },
            server: ServerKind::Ceiling,
            read_rotate: false,
            get: None,
            handshake,
            durable: false,
        }
    }
}

/// Which side of an interleaved run has the load generator when.
///
/// Two servers measured one after the other on a machine that is not otherwise idle see
/// different background load; alternating short slices between them makes both see the
/// same on average. Slice k (counted from the start) belongs to side k mod `sides`.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    slice: Duration,
    sides: usize,
    /// Requests completing before this are warm-up.
    measure_from: Instant,
    /// No request starts after this.
    end: Instant,
    slices_per_side: u32,
}

impl Schedule {
    fn new(sides: usize, slice: Duration, warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        let slice = slice.max(Duration::from_millis(10));
        let round = slice * sides as u32;
        let warm_rounds = warmup.as_nanos().div_ceil(round.as_nanos()) as u32;
        let slices_per_side = (duration.as_nanos().div_ceil(slice.as_nanos()) as u32).max(1);
        let measure_from = start + round * warm_rounds;
        Self {
            start,
            slice,
            sides,
            measure_from,
            end: measure_from + round * slices_per_side,
            slices_per_side,
        }
    }

    fn slice_index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.start).as_nanos() / self.slice.as_nanos()) as u64
    }

    fn active(&self, t: Instant) -> usize {
        (self.slice_index(t) % self.sides as u64) as usize
    }

    /// The start of `side`'s next slice after `t`.
    fn next_turn(&self, side: usize, t: Instant) -> Instant {
        let mut k = self.slice_index(t) + 1;
        while k % self.sides as u64 != side as u64 {
            k += 1;
        }
        self.start + self.slice * k as u32
    }

    /// Measured time of each side.
    fn measured(&self) -> Duration {
        self.slice * self.slices_per_side
    }

    fn measuring(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.end
    }
}

/// One server under load.
struct Side {
    plan: Plan,
    addr: SocketAddr,
    connector: TlsConnector,
}

/// Everything the connection tasks share.
struct Shared {
    sides: Vec<Side>,
    register: Bytes,
    schedule: Schedule,
}

/// What one connection task saw during the measured window.
struct Stats {
    latency: Histogram,
    errors: BTreeMap<String, u64>,
    response_bytes: u64,
}

/// CPU seconds used so far: by each server, by the load generator, by the whole machine.
struct CpuSample {
    servers: Vec<Option<f64>>,
    client: Option<f64>,
    machine: Option<f64>,
}

impl CpuSample {
    fn take(pids: &[u32]) -> Self {
        Self {
            servers: pids.iter().map(|p| cpu_seconds(*p)).collect(),
            client: cpu_seconds(std::process::id()),
            machine: machine_busy(),
        }
    }
}

/// Runs `plan`, interleaved with `baseline` unless `--alone`, and prints the result.
fn load_workload(plan: Plan, baseline: Option<Plan>, opts: LoadOpts) -> Result<(), Error> {
    let plans: Vec<Plan> = std::iter::once(plan)
        .chain(baseline.filter(|_| !opts.alone))
        .collect();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for p in &plans {
        let dir = if p.durable {
            Some(
                tempfile::Builder::new()
                    .prefix("certgate-bench-")
                    .tempdir()?,
            )
        } else {
            None
        };
        match ServerProc::start(p.server, &opts, dir.as_ref().map(|d| d.path())) {
            Ok(s) => servers.push(s),
            Err(e) => {
                servers.iter_mut().for_each(ServerProc::stop);
                return Err(e);
            }
        }
        dirs.push(dir);
    }
    let result = run_load(&plans, &servers, &opts);
    servers.iter_mut().for_each(ServerProc::stop);
    drop(dirs);
    let mut results = result?.into_iter();
    let mut report = results.next().ok_or("no result")?;
    if let Some(base) = results.next() {
        report["baseline"] = base;
    }
    if opts.json {
        println!("{report}");
    } else {
        print_load(&report);
        if report["baseline"].is_object() {
            print_load(&report["baseline"]);
            let ratio = report["rps"].as_f64().unwrap_or(0.0)
                / report["baseline"]["rps"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{} / {}: {:.0} % (measured in alternating {} s slices)",
                plan.name,
                report["baseline"]["workload"].as_str().unwrap_or(""),
                100.0 * ratio,
                opts.slice.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Drives every side's connections through the schedule; one JSON result per side.
fn run_load(plans: &[Plan], servers: &[ServerProc], opts: &LoadOpts) -> Result<Vec<Value>, Error> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.client_threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    let mut sides = Vec::new();
    for (plan, server) in plans.iter().zip(servers) {
        let mut tls = client_config(&opts.cert)?;
        if plan.handshake {
            // Every request pays a full handshake: nothing to resume.
            tls.resumption = rustls::client::Resumption::disabled();
        }
        sides.push(Side {
            plan: *plan,
            addr: server.addr,
            connector: TlsConnector::from(Arc::new(tls)),
        });
    }
    let register = Bytes::from(Value::Object(registration_body()).to_string());
    let schedule = Schedule::new(plans.len(), opts.slice, opts.warmup, opts.duration);
    let shared = Arc::new(Shared {
        sides,
        register: register.clone(),
        schedule,
    });
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let (stats, samples) = rt.block_on(async {
        let mut tasks = Vec::new();
        for side in 0..plans.len() {
            for _ in 0..opts.connections {
                tasks.push((side, tokio::spawn(connection(shared.clone(), side))));
            }
        }
        // One CPU sample at every slice boundary of the measured window.
        let mut samples = Vec::new();
        let mut perf = None;
        let boundaries = plans.len() as u32 * schedule.slices_per_side;
        for k in 0..=boundaries {
            tokio::time::sleep_until((schedule.measure_from + schedule.slice * k).into()).await;
            samples.push(CpuSample::take(&pids));
            if k == 0 {
                perf = opts.perf.as_ref().map(|out| {
                    let span = schedule.end - schedule.measure_from;
                    start_perf(pids[0], out, span, opts.perf_call_graph)
                });
            }
        }
        let mut stats = Vec::with_capacity(tasks.len());
        for (side, t) in tasks {
            stats.push((side, t.await.map_err(Error::from).and_then(|r| r)));
        }
        if let Some(Ok(mut perf)) = perf {
            let _ = perf.wait();
        }
        (stats, samples)
    });

    let secs = schedule.measured().as_secs_f64();
    let mut results = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let mut latency = Histogram::new();
        let mut errors = BTreeMap::new();
        let mut response_bytes = 0;
        for (_, s) in stats.iter().filter(|(side, _)| *side == i) {
            let s = s.as_ref().map_err(|e| e.to_string())?;
            latency.merge(&s.latency);
            for (k, v) in &s.errors {
                *errors.entry(k.clone()).or_insert(0) += v;
            }
            response_bytes = response_bytes.max(s.response_bytes);
        }
        // The server of side i works only for side i: all its CPU in the window is its.
        // The load generator and the rest of the machine are split by slice.
        let server_cpu = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => b.servers[i].zip(a.servers[i]).map(|(b, a)| b - a),
            _ => None,
        };
        let (mut client_cpu, mut other_cpu) = (Some(0.0), Some(0.0));
        for (k, w) in samples.windows(2).enumerate() {
            if k % plans.len() != i {
                continue;
            }
            let d = |f: fn(&CpuSample) -> Option<f64>| Some(f(&w[1])? - f(&w[0])?);
            let client = d(|s| s.client);
            let servers: Option<f64> = (0..plans.len())
                .map(|j| Some(w[1].servers[j]? - w[0].servers[j]?))
                .sum();
            let other = (|| Some((d(|s| s.machine)? - client? - servers?).max(0.0)))();
            client_cpu = client_cpu.zip(client).map(|(a, b)| a + b);
            other_cpu = other_cpu.zip(other).map(|(a, b)| a + b);
        }
        let n = latency.count();
        let per_req = |cpu: Option<f64>| cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64);
        results.push(json!({
            "workload": plan.name,
            "connections": opts.connections,
            "warmup_s": (schedule.measure_from - schedule.start).as_secs_f64(),
            "duration_s": secs,
            "interleaved": plans.len() > 1,
            "slice_s": schedule.slice.as_secs_f64(),
            "requests": n,
            "errors": errors.values().sum::<u64>(),
            "error_kinds": errors,
            "rps": n as f64 / secs,
            "mean_ms": latency.mean() / 1e3,
            "p50_ms": latency.quantile(0.50) as f64 / 1e3,
            "p90_ms": latency.quantile(0.90) as f64 / 1e3,
            "p99_ms": latency.quantile(0.99) as f64 / 1e3,
            "p999_ms": latency.quantile(0.999) as f64 / 1e3,
            "max_ms": latency.max() as f64 / 1e3,
            "server_cpu_cores": server_cpu.map(|c| c / secs),
            "server_cpu_us_per_req": per_req(server_cpu),
            "client_cpu_cores": client_cpu.map(|c| c / secs),
            "client_cpu_us_per_req": per_req(client_cpu),
            "other_cpu_cores": other_cpu.map(|c| c / secs),
            "request_bytes": if plan.read_rotate || plan.get.is_some() { 0 } else { register.len() },
            "response_bytes": response_bytes,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        }));
    }
    Ok(results)
}

/// One closed-loop connection (or, with `handshake`, a sequence of one-request
/// connections) of side `side`, active only during that side's slices.
async fn connection(shared: Arc<Shared>, side: usize) -> Result<Stats, Error> {
    let s = &shared.schedule;
    let plan = shared.sides[side].plan;
    let mut stats = Stats {
        latency: Histogram::new(),
        errors: BTreeMap::new(),
        response_bytes: 0,
    };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    // read-rotate: (client_id, current registration access token).
    let mut registered: Option<(String, String)> = None;
    loop {
        let now = Instant::now();
        if now >= s.end {
            return Ok(stats);
        }
        if s.active(now) != side {
            tokio::time::sleep_until(s.next_turn(side, now).into()).await;
            continue;
        }
        let req = match (&registered, plan.read_rotate) {
            _ if plan.get.is_some() => Request::builder()
                .method(Method::GET)
                .uri(plan.get.unwrap_or("/"))
                .header(header::HOST, "localhost")
                .body(Full::new(Bytes::new()))?,
            (Some((id, token)), true) => Request::builder()
                .method(Method::GET)
                .uri(format!("/register/{id}"))
                .header(header::HOST, "localhost")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))?,
            _ => {
                let mut b = Request::builder()
                    .method(Method::POST)
                    .uri("/register")
                    .header(header::HOST, "localhost")
                    .header(header::CONTENT_TYPE, "application/json");
                if plan.handshake {
                    b = b.header(header::CONNECTION, "close");
                }
                b.body(Full::new(shared.register.clone()))?
            }
        };
        let is_register = req.method() == Method::POST;
        let started = Instant::now();
        let outcome = async {
            if sender.is_none() || plan.handshake {
                sender = Some(connect(&shared.sides[side]).await?);
            }
            match sender.as_mut() {
                Some(s) => exchange(s, req).await,
                None => Err("no connection".into()),
            }
        }
        .await;
        let done = Instant::now();
        let counted = s.measuring(done);
        match outcome {
            Ok((status, body)) if status.is_success() => {
                if plan.read_rotate {
                    registered = adopt(&body, registered.take(), is_register);
                }
                if counted {
                    stats
                        .latency
                        .record(done.duration_since(started).as_micros() as u64);
                    stats.response_bytes = stats.response_bytes.max(body.len() as u64);
                }
            }
            Ok((status, body)) => {
                // A failed read loses the token: register again.
                registered = None;
                if counted {
                    let code = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    *stats
                        .errors
                        .entry(format!("{} {code}", status.as_u16()))
                        .or_default() += 1;
                }
            }
            Err(e) => {
                sender = None;
                registered = None;
                if counted {
                    *stats.errors.entry(format!("transport: {e}")).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Takes the (rotated) registration access token, and the client id on registration,
/// from an answer, without a full JSON parse (the load generator should cost little).
fn adopt(
    body: &[u8],
    previous: Option<(String, String)>,
    registered_now: bool,
) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let token = json_string_field(text, "registration_access_token")?;
    let id = if registered_now {
        json_string_field(text, "client_id")?
    } else {
        previous?.0
    };
    Some((id, token))
}

/// The value of a top-level string member that needs no unescaping (ids and tokens).
fn json_string_field(text: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    Some(text[start..start + len].to_owned())
}

async fn connect(side: &Side) -> Result<SendRequest<Full<Bytes>>, Error> {
    let tcp = TcpStream::connect(side.addr).await?;
    tcp.set_nodelay(true)?;
    let stream = side
        .connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A rustls client trusting the dev CA and presenting `certs/{name}.pem`, HTTP/1.1 only.
fn client_config(name: &str) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter("certs/ca.pem")? {
        roots.add(ca?)?;
    }
    let chain = CertificateDer::pem_file_iter(format!("certs/{name}.pem"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(format!("certs/{name}-key.pem"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn print_load(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}: {} connections, {}s warm-up, {}s measured{}",
        r["workload"].as_str().unwrap_or(""),
        r["connections"],
        f("warmup_s"),
        f("duration_s"),
        if r["interleaved"] == true {
            format!(" (interleaved in {}s slices)", f("slice_s"))
        } else {
            String::new()
        }
    );
    println!(
        "  throughput  {:.0} req/s ({} requests, {} errors)",
        f("rps"),
        r["requests"],
        r["errors"]
    );
    if let Some(kinds) = r["error_kinds"].as_object().filter(|k| !k.is_empty()) {
        for (k, v) in kinds {
            println!("              {v} × {k}");
        }
    }
    println!(
        "  latency     p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  mean {:.3} ms",
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("p999_ms"),
        f("max_ms"),
        f("mean_ms")
    );
    println!(
        "  cpu         server {:.2} cores ({:.1} µs/req), load generator {:.2} cores ({:.1} µs/req)",
        f("server_cpu_cores"),
        f("server_cpu_us_per_req"),
        f("client_cpu_cores"),
        f("client_cpu_us_per_req")
    );
    println!(
        "              everything else {:.2} cores (other processes, kernel softirq, steal)",
        f("other_cpu_cores")
    );
    println!(
        "  bytes       request {} B, response {} B",
        r["request_bytes"], r["response_bytes"]
    );
}

/// `perf record` of the server process for `duration`: a flat profile by default (release
/// builds have no frame pointers, and DWARF unwinding costs the server a lot), call graphs
/// on request.
fn start_perf(
    pid: u32,
    out: &Path,
    duration: Duration,
    call_graph: bool,
) -> std::io::Result<Child> {
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-q", "-p", &pid.to_string()]);
    if call_graph {
        cmd.args(["-F", "499", "--call-graph", "dwarf,16384"]);
    } else {
        cmd.args(["-F", "999"]);
    }
    cmd.arg("-o")
        .arg(out)
        .args(["--", "sleep", &format!("{}", duration.as_secs_f64())])
        .stdout(Stdio::null())
        .spawn()
}

/// User + system CPU seconds of a process so far, all threads included.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc reports clock ticks of USER_HZ, which Linux fixes at 100 for user space.
    Some((utime + stime) / 100.0)
}

/// Busy CPU seconds of the whole machine so far (all cores), from `/proc/stat`.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(busy as f64 / 100.0)
}

// === the server child process ===

/// A server running in a child process of this binary.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
    pid: u32,
}

impl ServerProc {
    /// Re-executes this binary as `serve-ceiling` / `serve-certgate` and waits for the
    /// address it listens on.
    fn start(kind: ServerKind, opts: &LoadOpts, data_dir: Option<&Path>) -> Result<Self, Error> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(match kind {
            ServerKind::Ceiling => "serve-ceiling",
            ServerKind::Certgate => "serve-certgate",
        });
        cmd.arg("--config").arg(&opts.config);
        if let Some(n) = opts.server_threads {
            cmd.args(["--threads", &n.to_string()]);
        }
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        // Logging stays off in the child: it never installs a tracing subscriber.
        cmd.env_remove("RUST_LOG");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Self { child, addr, pid }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the server child did not start (said {line:?})").into())
            }
        }
    }

    /// Closes the child's stdin (its shutdown signal) and waits; kills it after 30 s.
    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: the server did not stop in 30 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child process: binds 127.0.0.1:0, prints `listening ADDR`, serves until stdin
/// closes.
fn serve(kind: ServerKind, opts: &ServeOpts) -> Result<(), Error> {
    let mut config = Config::load(&opts.config)?;
    config.server.proxy_listen = None;
    config.server.admin_listen = None;
    config.registration.authentication = vec![RegistrationAuth::MutualTls];
    config.store.data_dir = opts.data_dir.clone().unwrap_or_default();
    config.validate()?;

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {}", listener.local_addr()?)?;
            out.flush()?;
        }
        let shutdown = stdin_closed();
        match kind {
            ServerKind::Ceiling => {
                let tls = certgate::tls::Tls::load(&config.tls)?;
                serve_ceiling(listener, tls.current().acceptor.clone(), shutdown).await;
                Ok(())
            }
            ServerKind::Certgate => {
                let listeners = Listeners {
                    tls: listener,
                    proxy: None,
                    admin: None,
                };
                certgate::run(config, listeners, Arc::new(SystemClock), shutdown).await
            }
        }
    })
}

/// Resolves when the parent closes our stdin (or dies).
fn stdin_closed() -> impl Future<Output = ()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// The ceiling: accept, TLS with certgate's acceptor, hyper's auto (h1 + h2) connection,
/// read the body, answer a fixed registration-sized JSON. Nothing else: no time boxes,
/// no connection limit, no identity, no routing.
async fn serve_ceiling(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) {
    let body = ceiling_body();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc = service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = StatusCode::CREATED;
                    let h = resp.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    h.insert(
                        header::CACHE_CONTROL,
                        header::HeaderValue::from_static("no-store"),
                    );
                    h.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

// === in-process workloads ===

/// The registration inputs the in-process workloads use: the config (memory-only unless
/// `data_dir` is given), and client1's certificate as the TLS listener would see it.
fn registry_inputs(
    path: &Path,
    data_dir: Option<&Path>,
) -> Result<(Config, Arc<ClientCertificate>), Error> {
    let mut config = Config::load(path)?;
    config.registration.authentication = vec![RegistrationAuth::MutualTls];
    config.store.data_dir = data_dir.map(Path::to_path_buf).unwrap_or_default();
    let tls = certgate::tls::Tls::load(&config.tls)?;
    let der = CertificateDer::from_pem_file("certs/client1.pem")?;
    let cert = ClientCertificate::from_chain(
        &[der],
        tls.current().chain_verifier.as_ref(),
        CertSource::Tls,
    )?;
    Ok((config, cert))
}

/// Registers `n` clients; returns the seconds it took and the stored metadata's JSON size.
fn register_many(
    registry: &Registry,
    cert: &ClientCertificate,
    n: usize,
) -> Result<(f64, usize), Error> {
    let template = registration_body();
    let mut metadata_json = 0;
    let started = Instant::now();
    for i in 0..n {
        let resp = registry
            .register(template.clone(), Some(cert))
            .map_err(|e| format!("registration {i} failed: {e:?}"))?;
        if i == 0 {
            metadata_json = resp.metadata.json.len();
        }
        if i > 0 && i % 250_000 == 0 {
            eprintln!("  {i} clients registered");
        }
    }
    Ok((started.elapsed().as_secs_f64(), metadata_json))
}

/// RSS growth per registered client.
fn memory(opts: &StoreOpts) -> Result<(), Error> {
    use std::mem::size_of;
    let (config, cert) = registry_inputs(&opts.config, None)?;
    let registry = Registry::from_config(&config, Arc::new(SystemClock))?;
    let before = rss_kib()?;
    let heap = HeapCount::start();
    let profile = SelfProfile::start(opts.perf.as_deref(), "register");
    let (secs, metadata_json) = register_many(&registry, &cert, opts.clients)?;
    profile.stop();
    let (heap_bytes, allocations) = heap.stop();
    let after = rss_kib()?;
    let n = opts.clients as f64;
    let per_client = (after.saturating_sub(before) * 1024) as f64 / n;
    let report = json!({
        "workload": "memory",
        "clients": opts.clients,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_client": per_client,
        "metadata_json_bytes": metadata_json,
        "overhead_bytes": per_client - metadata_json as f64,
        "heap_bytes_per_client": heap_bytes as f64 / n,
        "allocations_per_client": allocations as f64 / n,
        "size_of": {
            "registry::Client": size_of::<certgate::registry::Client>(),
            "metadata::ClientMetadata": size_of::<certgate::metadata::ClientMetadata>(),
            "registry::TokenRecord": size_of::<certgate::registry::TokenRecord>(),
        },
        "register_s": secs,
        "registrations_per_s": n / secs,
    });
    // Freeing a million records one by one only slows the exit down.
    std::mem::forget(registry);
    if opts.json {
        println!("{report}");
    } else {
        println!(
            "memory: {} clients, RSS {} → {} KiB",
            opts.clients, before, after
        );
        println!(
            "  {per_client:.0} B per client = {metadata_json} B metadata JSON + {:.0} B overhead",
            per_client - metadata_json as f64
        );
        println!(
            "  live heap {:.0} B per client in {:.1} allocations (the rest of the RSS is malloc overhead)",
            heap_bytes as f64 / n,
            allocations as f64 / n
        );
        println!("  sizes: {}", report["size_of"]);
        println!(
            "  registered in {secs:.2} s ({:.0} registrations/s on one thread)",
            n / secs
        );
    }
    Ok(())
}

/// Snapshot write and restore time of a registry of `clients` clients.
fn snapshot(opts: &StoreOpts) -> Result<(), Error> {
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("certgate-bench-");
    let dir = match &opts.tmp {
        Some(base) => tmp.tempdir_in(base)?,
        None => tmp.tempdir()?,
    };
    let (config, cert) = registry_inputs(&opts.config, Some(dir.path()))?;
    let clock = Arc::new(SystemClock);
    let registry = Registry::from_config(&config, clock.clone())?;
    let (register_secs, _) = register_many(&registry, &cert, opts.clients)?;
    // The registrations' journal records must be on disk before the snapshot, as they
    // would be in a server that acknowledged them.
    let started = Instant::now();
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(registry.sync_since(0))?;
    let drain_secs = started.elapsed().as_secs_f64();
    let journal_bytes = files_size(dir.path(), "journal-")?;

    let profile = SelfProfile::start(opts.perf.as_deref(), "write");
    let started = Instant::now();
    let stats = registry.snapshot()?.ok_or("the registry has no data dir")?;
    let write_secs = started.elapsed().as_secs_f64();
    profile.stop();
    // Dropping a million records costs seconds and is not what is measured; the journal
    // writer thread stays behind idle (nothing appends to it any more).
    std::mem::forget(registry);

    let profile = SelfProfile::start(opts.perf.as_deref(), "restore");
    let started = Instant::now();
    let restored = Registry::from_config(&config, clock)?;
    let restore_secs = started.elapsed().as_secs_f64();
    profile.stop();
    let restored_clients = restored.len();
    std::mem::forget(restored);
    if restored_clients != opts.clients {
        return Err(format!(
            "restored {restored_clients} clients, expected {}",
            opts.clients
        )
        .into());
    }
    let report = json!({
        "workload": "snapshot",
        "clients": opts.clients,
        "register_s": register_secs,
        "journal_bytes": journal_bytes,
        "journal_drain_s": drain_secs,
        "write_s": write_secs,
        "snapshot_bytes": stats.bytes,
        "restore_s": restore_secs,
        "restored_clients": restored_clients,
    });
    if opts.json {
        println!("{report}");
    } else {
        println!("snapshot: {} clients", opts.clients);
        println!(
            "  write   {write_secs:.2} s, {:.1} MB ({:.0} B per client)",
            stats.bytes as f64 / 1e6,
            stats.bytes as f64 / opts.clients as f64
        );
        println!("  restore {restore_secs:.2} s ({restored_clients} clients)");
        println!(
            "  (registering took {register_secs:.2} s; journal {:.1} MB, drained {drain_secs:.2} s later)",
            journal_bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Per-step costs of the registration path, each timed alone on one thread: evidence for
/// where a request's server time goes (the load workloads only see the sum).
fn micro(opts: &MicroOpts) -> Result<(), Error> {
    let n = opts.iterations;
    let (config, cert) = registry_inputs(&opts.config, None)?;
    let registry = Registry::from_config(&config, Arc::new(SystemClock))?;
    let tls = certgate::tls::Tls::load(&config.tls)?;
    let state = tls.current();
    let verifier = state.chain_verifier.clone();
    let der = CertificateDer::from_pem_file("certs/client1.pem")?;
    let body = Value::Object(registration_body()).to_string().into_bytes();
    let template = registration_body();
    let resp = registry
        .register(template.clone(), Some(&cert))
        .map_err(|e| format!("registration failed: {e:?}"))?;
    let metadata = resp.metadata.clone();
    let record = certgate::store::Change::Client {
        id: resp.client_id.clone(),
        client: Box::new(certgate::store::StoredClient {
            issued_at: resp.client_id_issued_at,
            metadata: metadata.clone(),
            secret: None,
            bound: Some(cert.sha256),
            reg_token: [7u8; 32],
            reg_token_issued_at: resp.client_id_issued_at,
            reg_token_revoked: false,
        }),
    };
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
            time_per_call(n, || registry.register(template.clone(), Some(&cert)))
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
            time_per_call(n, || certgate::cert_match::satisfies(&metadata.rules, &cert)),
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
            "DN comparison (`cert_match::dn_equal`)",
            time_per_call(n, || {
                certgate::cert_match::dn_equal("CN=client1,O=certgate dev", &cert.subject)
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
fn time_per_call<T>(n: u32, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..n / 10 {
        std::hint::black_box(f());
    }
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1))
}

/// `perf record` of this process around one phase (flat profile).
struct SelfProfile(Option<Child>);

impl SelfProfile {
    fn start(prefix: Option<&Path>, phase: &str) -> Self {
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

    fn stop(self) {
        if let Some(mut child) = self.0 {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

fn files_size(dir: &Path, prefix: &str) -> Result<u64, Error> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// The system allocator, counting live heap bytes and allocations while `COUNTING` is on
/// (the memory workload only; everywhere else it costs one relaxed load per call).
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

/// Net heap growth between `start` and `stop`.
struct HeapCount;

impl HeapCount {
    fn start() -> Self {
        LIVE_BYTES.store(0, Ordering::Relaxed);
        LIVE_ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        Self
    }

    /// (bytes, allocations) still live that were allocated while counting (frees of
    /// older blocks meanwhile make this a slight underestimate).
    fn stop(self) -> (i64, i64) {
        COUNTING.store(false, Ordering::Relaxed);
        (
            LIVE_BYTES.load(Ordering::Relaxed),
            LIVE_ALLOCS.load(Ordering::Relaxed),
        )
    }
}

/// Resident set size of this process (`VmRSS`), in KiB.
fn rss_kib() -> Result<u64, Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

// === report ===

/// Prints the markdown tables of scripts/bench.sh from JSON result lines.
fn report(path: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(path)?;
    let results: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let find = |name: &str| results.iter().rev().find(|r| r["workload"] == name);
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(100.0 * a / b),
        _ => None,
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "meets",
        Some(false) => "**misses**",
        None => "n/a",
    };
    let fmt_pct = |p: Option<f64>| p.map_or("—".to_owned(), |p| format!("{p:.0} %"));
    // What the ratio would be if both processes had the cores to themselves: the inverse
    // ratio of the CPU (server + load generator) one request costs.
    let cpu = |r: &Value| {
        Some(r["server_cpu_us_per_req"].as_f64()? + r["client_cpu_us_per_req"].as_f64()?)
    };
    let row = |label: String,
               r: &Value,
               ratio: String,
               cpu_ratio: String,
               target: &str,
               v: &str| {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {:.2} | {ratio} | {cpu_ratio} | {target} | {v} |",
            f("rps"),
            f("p50_ms"),
            f("p99_ms"),
            f("p999_ms"),
            r["errors"],
            f("server_cpu_us_per_req"),
            f("client_cpu_us_per_req"),
            f("other_cpu_cores"),
        );
    };

    println!("| workload | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req | load gen. CPU µs/req | other load (cores) | ratio | ratio by CPU | target | verdict |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    let rows: [(&str, f64, &str); 7] = [
        ("register", 80.0, "≥ 80 % of ceiling, p99 ≤ 2 ms"),
        ("read-rotate", 75.0, "≥ 75 % of ceiling"),
        ("handshake-register", 90.0, "≥ 90 % of ceiling"),
        ("durable-register", 50.0, "≥ 50 % of `register`"),
        ("discovery", 0.0, "— (diagnostic)"),
        ("ceiling", 0.0, ""),
        ("ceiling-handshake", 0.0, ""),
    ];
    for (name, min, target) in rows {
        let Some(r) = find(name) else { continue };
        let base = &r["baseline"];
        if !base.is_object() {
            // A run without its interleaved baseline: numbers only.
            row(
                format!("`{name}` (alone)"),
                r,
                "—".into(),
                "—".into(),
                "—",
                "—",
            );
            continue;
        }
        let ratio = pct(r["rps"].as_f64(), base["rps"].as_f64());
        let mut ok = ratio.filter(|_| min > 0.0).map(|p| p >= min);
        if name == "register" {
            ok = ok
                .zip(r["p99_ms"].as_f64())
                .map(|(ok, p99)| ok && p99 <= 2.0);
        }
        row(
            format!("`{name}`"),
            r,
            fmt_pct(ratio),
            fmt_pct(pct(cpu(base), cpu(r))),
            target,
            if min > 0.0 { verdict(ok) } else { "—" },
        );
        row(
            format!(
                "↳ `{}`, interleaved",
                base["workload"].as_str().unwrap_or("")
            ),
            base,
            String::new(),
            String::new(),
            "",
            "",
        );
    }

    let memory: Vec<&Value> = results
        .iter()
        .filter(|r| r["workload"] == "memory")
        .collect();
    if !memory.is_empty() {
        println!();
        println!(
            "| memory | RSS per client | metadata JSON | beyond the JSON | live heap per client | allocations per client | target | verdict |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---|---|");
        for r in memory {
            let over = r["overhead_bytes"].as_f64();
            let ok =
                (r["clients"].as_u64() >= Some(1_000_000)).then_some(over.map(|o| o <= 1024.0));
            println!(
                "| {} clients | {:.0} B | {} B | {:.0} B | {:.0} B | {:.1} | ≤ 1024 B at 1M | {} |",
                r["clients"],
                r["bytes_per_client"].as_f64().unwrap_or(f64::NAN),
                r["metadata_json_bytes"],
                over.unwrap_or(f64::NAN),
                r["heap_bytes_per_client"].as_f64().unwrap_or(f64::NAN),
                r["allocations_per_client"].as_f64().unwrap_or(f64::NAN),
                ok.map_or("—", verdict),
            );
        }
    }

    if let Some(rows) = find("micro").and_then(|m| m["rows"].as_array()) {
        println!();
        println!("| step of the registration path (one thread, in-process) | µs |");
        println!("|---|---:|");
        for r in rows {
            println!(
                "| {} | {:.2} |",
                r["what"].as_str().unwrap_or(""),
                r["us"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }

    let snapshots: Vec<&Value> = results
        .iter()
        .filter(|r| r["workload"] == "snapshot")
        .collect();
    if !snapshots.is_empty() {
        println!();
        println!("| snapshot | write | restore | file size | target | verdict |");
        println!("|---:|---:|---:|---:|---|---|");
        for r in snapshots {
            let w = r["write_s"].as_f64();
            let rs = r["restore_s"].as_f64();
            let ok = (r["clients"].as_u64() >= Some(1_000_000))
                .then(|| w.zip(rs).map(|(w, rs)| w <= 3.0 && rs <= 3.0));
            println!(
                "| {} clients | {:.2} s | {:.2} s | {:.1} MB | ≤ 3 s each at 1M | {} |",
                r["clients"],
                w.unwrap_or(f64::NAN),
                rs.unwrap_or(f64::NAN),
                r["snapshot_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
                ok.map_or("—", verdict),
            );
        }
    }
    Ok(())
}

// === latency histogram ===

/// Microsecond latencies in log-linear buckets: exact below 64 µs, then 32 buckets per
/// power of two (at most ~3 % error), mergeable across tasks.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

const EXACT: usize = 64;
const PER_OCTAVE: usize = 32;

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; EXACT + (64 - 6) * PER_OCTAVE],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < EXACT as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros() as usize; // ≥ 6
        let mantissa = (v >> (exp - 5)) as usize; // 32..64
        EXACT + (exp - 6) * PER_OCTAVE + (mantissa - PER_OCTAVE)
    }

    /// The smallest value of bucket `i`.
    fn lower(i: usize) -> u64 {
        if i < EXACT {
            return i as u64;
        }
        let j = i - EXACT;
        let exp = j / PER_OCTAVE + 6;
        ((j % PER_OCTAVE + PER_OCTAVE) as u64) << (exp - 5)
    }

    fn record(&mut self, micros: u64) {
        let i = Self::index(micros).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.max = self.max.max(micros);
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    fn count(&self) -> u64 {
        self.total
    }

    fn max(&self) -> u64 {
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum as f64 / self.total as f64
    }

    /// The value at quantile `q`: the middle of the bucket holding that rank (the maximum
    /// for the last rank).
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = (Self::lower(i), Self::lower(i + 1));
                return ((lo + hi.saturating_sub(1)) / 2).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            12_345,
            1 << 20,
            u64::MAX >> 2,
        ] {
            let i = Histogram::index(v);
            assert!(
                Histogram::lower(i) <= v && v < Histogram::lower(i + 1),
                "{v}"
            );
            assert!(
                (Histogram::lower(i + 1) - Histogram::lower(i)) as f64 <= 1.0 + v as f64 / 32.0
            );
        }
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.03, "{p50}");
        assert_eq!(h.quantile(1.0), 1000);
    }

    #[test]
    fn token_extraction() {
        let body = br#"{"client_id":"abc","registration_access_token":"tok-1_x","x":1}"#;
        assert_eq!(
            adopt(body, None, true),
            Some(("abc".to_owned(), "tok-1_x".to_owned()))
        );
        assert_eq!(
            adopt(body, Some(("id".into(), "old".into())), false),
            Some(("id".to_owned(), "tok-1_x".to_owned()))
        );
    }
}
