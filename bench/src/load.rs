//! Load workloads: the closed-loop load generator, its schedule of alternating slices, and
//! CPU accounting from `/proc`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::registration_body;
use crate::histogram::Histogram;
use crate::servers::{Extra, ServerKind, ServerProc};
use crate::{Error, LoadOpts};

/// Which answer the ceiling gives: one of the size of the workload's real answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Answer {
    Register,
    Token,
    Introspect,
}

/// What one load workload does.
#[derive(Clone, Copy)]
pub struct Plan {
    pub name: &'static str,
    pub server: ServerKind,
    /// The ceiling's answer (ceiling only).
    pub answer: Answer,
    /// GET /register/{id} with the current token, adopting the rotated one.
    pub read_rotate: bool,
    /// Register a `tls_client_auth` client once, then loop POST /token (client_credentials).
    pub token: bool,
    /// Register and get a token once, then loop POST /introspect of that token.
    pub introspect: bool,
    /// GET this path instead of registering.
    pub get: Option<&'static str>,
    /// A new connection (full handshake, no resumption) per request.
    pub handshake: bool,
    /// certgate with a data dir.
    pub durable: bool,
    /// Register and get a token once, then loop GET /api/items through a route (certgate)
    /// or through nginx's `proxy_pass` (the baseline) to the same upstream.
    pub route: bool,
    /// certgate nodes sharing the PostgreSQL registry at `--postgres-url`; the load's
    /// connections are spread over them (0: one node, memory store).
    pub shared_nodes: usize,
    /// Each connection presents a certificate of its own (same subject as client1, its own
    /// key): registrations per certificate are counted in one row per certificate in the
    /// shared store, so one certificate for every connection would measure that row's lock.
    pub distinct_certs: bool,
}

impl Plan {
    pub fn certgate(name: &'static str) -> Self {
        Self {
            name,
            server: ServerKind::Certgate,
            answer: Answer::Register,
            read_rotate: false,
            token: false,
            introspect: false,
            get: None,
            handshake: false,
            durable: false,
            route: false,
            shared_nodes: 0,
            distinct_certs: false,
        }
    }

    /// Real nginx terminating mTLS in front of the route workload's upstream.
    pub fn nginx() -> Self {
        Self {
            name: "nginx",
            server: ServerKind::Nginx,
            route: true,
            ..Self::certgate("nginx")
        }
    }

    pub fn ceiling(handshake: bool) -> Self {
        Self {
            name: if handshake {
                "ceiling-handshake"
            } else {
                "ceiling"
            },
            server: ServerKind::Ceiling,
            answer: Answer::Register,
            read_rotate: false,
            token: false,
            introspect: false,
            get: None,
            handshake,
            durable: false,
            route: false,
            shared_nodes: 0,
            distinct_certs: false,
        }
    }

    /// The keep-alive ceiling answering with `answer`'s size.
    pub fn ceiling_answering(answer: Answer) -> Self {
        Self {
            name: match answer {
                Answer::Register => "ceiling",
                Answer::Token => "ceiling-token",
                Answer::Introspect => "ceiling-introspect",
            },
            answer,
            // The same requests as the workload's, so both sides read the same bytes.
            token: answer == Answer::Token,
            introspect: answer == Answer::Introspect,
            ..Self::ceiling(false)
        }
    }
}

/// Which side of an interleaved run has the load generator when.
///
/// Two servers measured one after the other on a machine that is not otherwise idle see
/// different background load; alternating short slices between them makes both see the
/// same on average. Slice k (counted from the start) belongs to side k mod `sides`.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub slice: Duration,
    pub sides: usize,
    /// Requests completing before this are warm-up.
    pub measure_from: Instant,
    /// No request starts after this.
    pub end: Instant,
    pub slices_per_side: u32,
}

impl Schedule {
    pub fn new(sides: usize, slice: Duration, warmup: Duration, duration: Duration) -> Self {
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

    pub fn slice_index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.start).as_nanos() / self.slice.as_nanos()) as u64
    }

    pub fn active(&self, t: Instant) -> usize {
        (self.slice_index(t) % self.sides as u64) as usize
    }

    /// The start of `side`'s next slice after `t`.
    pub fn next_turn(&self, side: usize, t: Instant) -> Instant {
        let mut k = self.slice_index(t) + 1;
        while k % self.sides as u64 != side as u64 {
            k += 1;
        }
        self.start + self.slice * k as u32
    }

    /// Measured time of each side.
    pub fn measured(&self) -> Duration {
        self.slice * self.slices_per_side
    }

    pub fn measuring(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.end
    }
}

/// One server (or set of nodes) under load.
pub struct Side {
    pub plan: Plan,
    /// Connection k goes to `addrs[k % addrs.len()]`, with `connectors[k % len]`.
    pub addrs: Vec<SocketAddr>,
    pub connectors: Vec<TlsConnector>,
}

/// Everything the connection tasks share.
pub struct Shared {
    pub sides: Vec<Side>,
    pub register: Bytes,
    pub schedule: Schedule,
}

/// What one connection task saw during the measured window.
pub struct Stats {
    pub latency: Histogram,
    pub errors: BTreeMap<String, u64>,
    pub response_bytes: u64,
    pub request_bytes: u64,
}

/// CPU seconds used so far: by each server, by the load generator, by the whole machine.
pub struct CpuSample {
    /// Per side: the sum over its processes.
    pub servers: Vec<Option<f64>>,
    pub client: Option<f64>,
    pub machine: Option<f64>,
}

impl CpuSample {
    pub fn take(pids: &[Vec<u32>]) -> Self {
        Self {
            servers: pids
                .iter()
                .map(|side| side.iter().map(|p| cpu_seconds(*p)).sum())
                .collect(),
            client: cpu_seconds(std::process::id()),
            machine: machine_busy(),
        }
    }
}

/// Runs `plan`, interleaved with `baseline` unless `--alone`, and prints the result.
pub fn load_workload(plan: Plan, baseline: Option<Plan>, opts: LoadOpts) -> Result<(), Error> {
    let plans: Vec<Plan> = std::iter::once(plan)
        .chain(baseline.filter(|_| !opts.alone))
        .collect();
    let mut dirs = Vec::new();
    let mut servers: Vec<Vec<ServerProc>> = Vec::new();
    let mut extra = Extra::default();
    let mut upstream = None;
    if plans.iter().any(|p| p.route) {
        let up = ServerProc::start_upstream(&opts)?;
        extra.upstream = Some(up.addr);
        upstream = Some(up);
    }
    let stop_all = |servers: &mut Vec<Vec<ServerProc>>, upstream: &mut Option<ServerProc>| {
        servers.iter_mut().flatten().for_each(ServerProc::stop);
        upstream.iter_mut().for_each(ServerProc::stop);
    };
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
        let mut extra = extra.clone();
        if p.shared_nodes > 0 {
            extra.postgres_url = Some(opts.postgres_url.clone().ok_or(
                "the shared-store workloads need --postgres-url (or CERTGATE_BENCH_POSTGRES_URL)",
            )?);
        }
        let mut nodes = Vec::new();
        for _ in 0..p.shared_nodes.max(1) {
            match ServerProc::start(p, &opts, dir.as_ref().map(|d| d.path()), &extra) {
                Ok(s) => nodes.push(s),
                Err(e) => {
                    servers.push(nodes);
                    stop_all(&mut servers, &mut upstream);
                    return Err(e);
                }
            }
        }
        servers.push(nodes);
        dirs.push(dir);
    }
    let result = run_load(&plans, &servers, &opts);
    stop_all(&mut servers, &mut upstream);
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
pub fn run_load(
    plans: &[Plan],
    servers: &[Vec<ServerProc>],
    opts: &LoadOpts,
) -> Result<Vec<Value>, Error> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.client_threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    let mut sides = Vec::new();
    let certs = if plans.iter().any(|p| p.distinct_certs) {
        Some(distinct_certs(opts.connections)?)
    } else {
        None
    };
    for (plan, server) in plans.iter().zip(servers) {
        let names: Vec<(PathBuf, PathBuf)> = match (&certs, plan.distinct_certs) {
            (Some(c), true) => c.1.clone(),
            _ => vec![(
                format!("certs/{}.pem", opts.cert).into(),
                format!("certs/{}-key.pem", opts.cert).into(),
            )],
        };
        let mut connectors = Vec::new();
        for (cert, key) in &names {
            let mut tls = client_config(cert, key)?;
            if plan.handshake {
                // Every request pays a full handshake: nothing to resume.
                tls.resumption = rustls::client::Resumption::disabled();
            }
            connectors.push(TlsConnector::from(Arc::new(tls)));
        }
        sides.push(Side {
            plan: *plan,
            addrs: server.iter().map(|s| s.addr).collect(),
            connectors,
        });
    }
    let register = Bytes::from(Value::Object(registration_body()).to_string());
    let schedule = Schedule::new(plans.len(), opts.slice, opts.warmup, opts.duration);
    let shared = Arc::new(Shared {
        sides,
        register: register.clone(),
        schedule,
    });
    let pids: Vec<Vec<u32>> = servers
        .iter()
        .map(|nodes| nodes.iter().flat_map(|s| s.pids.iter().copied()).collect())
        .collect();
    let (stats, samples) = rt.block_on(async {
        let mut tasks = Vec::new();
        for side in 0..plans.len() {
            for k in 0..opts.connections {
                tasks.push((side, tokio::spawn(connection(shared.clone(), side, k))));
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
                    start_perf(servers[0][0].pid, out, span, opts.perf_call_graph)
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
        let mut request_bytes = 0;
        for (_, s) in stats.iter().filter(|(side, _)| *side == i) {
            let s = s.as_ref().map_err(|e| e.to_string())?;
            latency.merge(&s.latency);
            for (k, v) in &s.errors {
                *errors.entry(k.clone()).or_insert(0) += v;
            }
            response_bytes = response_bytes.max(s.response_bytes);
            request_bytes = request_bytes.max(s.request_bytes);
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
            "request_bytes": request_bytes,
            "log": opts.log == crate::LogMode::On,
            "response_bytes": response_bytes,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        }));
    }
    Ok(results)
}

/// One closed-loop connection (or, with `handshake`, a sequence of one-request
/// connections) of side `side`, active only during that side's slices.
pub async fn connection(shared: Arc<Shared>, side: usize, k: usize) -> Result<Stats, Error> {
    let s = &shared.schedule;
    let plan = shared.sides[side].plan;
    let mut stats = Stats {
        latency: Histogram::new(),
        errors: BTreeMap::new(),
        response_bytes: 0,
        request_bytes: 0,
    };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    // read-rotate: (client_id, current registration access token).
    let mut registered: Option<(String, String)> = None;
    // token, introspect: the client registered for them, and its access token.
    let mut client_id: Option<String> = None;
    let mut access_token: Option<String> = None;
    // The ceiling and nginx need no set-up: they answer without looking.
    let placeholders = || {
        (plan.server != ServerKind::Certgate).then(|| {
            (
                "Wk9vQ2xpZW50SWRCZW5jaA".to_owned(),
                "dG9rZW5kZ3NhZmRzYWZkc2FmZHNhZmRzYWZkc2FmZHNh".to_owned(),
            )
        })
    };
    if let Some((id, tok)) = placeholders() {
        client_id = Some(id);
        access_token = Some(tok);
    }
    loop {
        let now = Instant::now();
        if now >= s.end {
            return Ok(stats);
        }
        if s.active(now) != side {
            tokio::time::sleep_until(s.next_turn(side, now).into()).await;
            continue;
        }
        let step = if let Some(path) = plan.get {
            Step::Get(path)
        } else if plan.token || plan.introspect || plan.route {
            match (&client_id, &access_token) {
                (None, _) => Step::Register,
                (Some(_), Some(tok)) if plan.route => Step::Route(tok),
                (Some(id), Some(tok)) if plan.introspect => Step::Introspect(id, tok),
                (Some(id), _) => Step::Token(id),
            }
        } else {
            match (&registered, plan.read_rotate) {
                (Some((id, token)), true) => Step::Read(id, token),
                _ => Step::Register,
            }
        };
        // Setting a connection's client up is not the workload: not counted.
        let setup = !match step {
            Step::Token(_) => plan.token,
            Step::Introspect(..) => plan.introspect,
            Step::Route(_) => plan.route,
            _ => !(plan.token || plan.introspect || plan.route),
        };
        let req = step.request(&shared, plan.handshake)?;
        let request_bytes = hyper::body::Body::size_hint(req.body()).lower();
        let is_register = matches!(step, Step::Register);
        let is_token = matches!(step, Step::Token(_));
        let started = Instant::now();
        let outcome = async {
            if sender.is_none() || plan.handshake {
                sender = Some(connect(&shared.sides[side], k).await?);
            }
            match sender.as_mut() {
                Some(s) => exchange(s, req).await,
                None => Err("no connection".into()),
            }
        }
        .await;
        let done = Instant::now();
        let counted = s.measuring(done) && !setup;
        match outcome {
            Ok((status, body)) if status.is_success() => {
                if plan.read_rotate {
                    registered = adopt(&body, registered.take(), is_register);
                }
                let text = std::str::from_utf8(&body).unwrap_or("");
                if is_register && (plan.token || plan.introspect || plan.route) {
                    client_id = json_string_field(text, "client_id");
                }
                if is_token && (plan.introspect || plan.route) {
                    access_token = json_string_field(text, "access_token");
                }
                if counted {
                    stats
                        .latency
                        .record(done.duration_since(started).as_micros() as u64);
                    stats.response_bytes = stats.response_bytes.max(body.len() as u64);
                    stats.request_bytes = stats.request_bytes.max(request_bytes);
                }
            }
            Ok((status, body)) => {
                // A failed read loses the token: register again.
                registered = None;
                client_id = None;
                access_token = None;
                if let Some((id, tok)) = placeholders() {
                    client_id = Some(id);
                    access_token = Some(tok);
                }
                if counted || setup {
                    let code = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    *stats
                        .errors
                        .entry(format!("{} {code}", status.as_u16()))
                        .or_default() += 1;
                }
                if setup {
                    tokio::time::sleep(Duration::from_millis(5)).await;
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

/// One request of a connection's loop.
enum Step<'a> {
    Register,
    Get(&'static str),
    /// read-rotate: GET /register/{id} with the current registration access token.
    Read(&'a str, &'a str),
    /// POST /token, client_credentials, authenticated by the certificate (tls_client_auth).
    Token(&'a str),
    /// POST /introspect of the connection's token, authenticated like `Token`.
    Introspect(&'a str, &'a str),
    /// GET /api/items with the connection's access token, through a route.
    Route(&'a str),
}

impl Step<'_> {
    fn request(&self, shared: &Shared, handshake: bool) -> Result<Request<Full<Bytes>>, Error> {
        let b = || Request::builder().header(header::HOST, "localhost");
        let form = |path: &str, body: String| {
            b().method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body)))
        };
        Ok(match self {
            Self::Get(path) => b()
                .method(Method::GET)
                .uri(*path)
                .body(Full::new(Bytes::new()))?,
            Self::Route(token) => b()
                .method(Method::GET)
                .uri("/api/items?page=1")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))?,
            Self::Read(id, token) => b()
                .method(Method::GET)
                .uri(format!("/register/{id}"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))?,
            Self::Token(id) => form(
                "/token",
                format!("grant_type=client_credentials&client_id={id}&scope=api%3Aread"),
            )?,
            Self::Introspect(id, token) => {
                form("/introspect", format!("token={token}&client_id={id}"))?
            }
            Self::Register => {
                let mut b = b()
                    .method(Method::POST)
                    .uri("/register")
                    .header(header::CONTENT_TYPE, "application/json");
                if handshake {
                    b = b.header(header::CONNECTION, "close");
                }
                b.body(Full::new(shared.register.clone()))?
            }
        })
    }
}

/// Takes the (rotated) registration access token, and the client id on registration,
/// from an answer, without a full JSON parse (the load generator should cost little).
pub fn adopt(
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
pub fn json_string_field(text: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    Some(text[start..start + len].to_owned())
}

pub async fn connect(side: &Side, k: usize) -> Result<SendRequest<Full<Bytes>>, Error> {
    let addr = side.addrs[k % side.addrs.len()];
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = side.connectors[k % side.connectors.len()]
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// `n` client certificates made with openssl and signed by the dev CA, each with client1's
/// subject and a key of its own (so a `tls_client_auth` registration matches, and each is
/// bound to a different thumbprint): the directory holding them, and (cert, key) paths.
pub fn distinct_certs(n: usize) -> Result<(tempfile::TempDir, Vec<(PathBuf, PathBuf)>), Error> {
    let dir = tempfile::Builder::new()
        .prefix("certgate-bench-certs-")
        .tempdir()?;
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    let mut out = Vec::new();
    for i in 0..n {
        let (cert, key, csr) = (
            dir.path().join(format!("c{i}.pem")),
            dir.path().join(format!("c{i}-key.pem")),
            dir.path().join(format!("c{i}.csr")),
        );
        let run = |args: &[&std::ffi::OsStr]| -> Result<(), Error> {
            let st = Command::new("openssl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if st.success() {
                Ok(())
            } else {
                Err(format!("openssl {:?} failed", args.first()).into())
            }
        };
        let os = |s: &str| std::ffi::OsString::from(s);
        run(&[
            &os("req"),
            &os("-new"),
            &os("-newkey"),
            &os("ec"),
            &os("-pkeyopt"),
            &os("ec_paramgen_curve:prime256v1"),
            &os("-nodes"),
            &os("-subj"),
            &os("/O=certgate dev/CN=client1"),
            &os("-keyout"),
            key.as_os_str(),
            &os("-out"),
            csr.as_os_str(),
        ])?;
        run(&[
            &os("x509"),
            &os("-req"),
            &os("-in"),
            csr.as_os_str(),
            &os("-CA"),
            &os("certs/ca.pem"),
            &os("-CAkey"),
            &os("certs/ca-key.pem"),
            &os("-set_serial"),
            &os(&(1_000_000 + i).to_string()),
            &os("-days"),
            &os("2"),
            &os("-extfile"),
            ext.as_os_str(),
            &os("-out"),
            cert.as_os_str(),
        ])?;
        out.push((cert, key));
    }
    Ok((dir, out))
}

/// A rustls client trusting the dev CA and presenting `cert` with `key`, HTTP/1.1 only.
pub fn client_config(cert: &Path, key: &Path) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter("certs/ca.pem")? {
        roots.add(ca?)?;
    }
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

pub fn print_load(r: &Value) {
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
pub fn start_perf(
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
pub fn cpu_seconds(pid: u32) -> Option<f64> {
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
pub fn machine_busy() -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub fn token_extraction() {
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
