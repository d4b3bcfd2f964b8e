//! The certgate benchmark (SPEC §10): load workloads against servers in child processes,
//! and in-process memory, snapshot and per-step measurements.
//!
//! ```text
//! cargo run --release -p certgate-bench -- register            # also: read-rotate, token,
//!                                                              #   introspect, discovery,
//! cargo run --release -p certgate-bench -- handshake-register  #   durable-register
//! cargo run --release -p certgate-bench -- route               # vs real nginx
//! cargo run --release -p certgate-bench -- route-upload        # RSS while streaming 1 GiB
//! cargo run --release -p certgate-bench -- shared-register --postgres-url URL
//! cargo run --release -p certgate-bench -- ceiling [--handshake]
//! cargo run --release -p certgate-bench -- memory [--clients N]
//! cargo run --release -p certgate-bench -- snapshot [--clients N]
//! cargo run --release -p certgate-bench -- micro
//! cargo run --release -p certgate-bench -- report RESULTS.jsonl  # markdown from --json lines
//! ```
//!
//! (`scripts/bench.sh` builds it with `cargo build --release -p certgate-bench` and runs
//! `target/release/bench`.) Run it from the repository root: the default `--config` and the
//! dev PKI in `certs/` are relative paths.
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
//!
//! Modules: `load` (load generator, schedule, CPU accounting) with `histogram`, `servers`
//! (the child-process servers: certgate, the ceiling, nginx, the upstream), `body` (the
//! request), `upload` (a 1 GiB upload through a route), the
//! in-process workloads `memory`, `snapshot` and `micro` (sharing `inprocess`), and
//! `report`.

mod body;
mod histogram;
mod inprocess;
mod load;
mod memory;
mod micro;
mod report;
mod servers;
mod snapshot;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use load::{load_workload, Answer, Plan};
use memory::memory;
use micro::micro;
use report::report;
use servers::{serve, ServerKind};
use snapshot::snapshot;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

// === command line ===

#[derive(Parser)]
#[command(about = "certgate benchmark (SPEC §10)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Workload,
}

#[derive(Subcommand)]
pub enum Workload {
    /// The ceiling: a minimal tokio + hyper + tokio-rustls server with certgate's TLS
    /// files in a stock rustls configuration, answering every request with a fixed registration-sized JSON body.
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
    /// POST /token (client_credentials, tls_client_auth) over keep-alive connections, each
    /// with a client of its own registered beforehand.
    Token(LoadOpts),
    /// POST /introspect of a live certificate-bound token by the client it was issued to.
    Introspect(LoadOpts),
    /// GET /api/items through a `[[routes]]` entry to a local upstream answering 1 KiB,
    /// with a certificate-bound token, against real nginx terminating mTLS and proxying to
    /// the same upstream (`--nginx`).
    Route(LoadOpts),
    /// Streams a 1 GiB upload through a route (to the same upstream) and reports certgate's
    /// RSS meanwhile.
    RouteUpload(LoadOpts),
    /// POST /register spread over two certgate nodes sharing a PostgreSQL registry
    /// (`--postgres-url`), against one memory-store node.
    SharedRegister(LoadOpts),
    /// read-rotate spread over two certgate nodes sharing a PostgreSQL registry, against one
    /// memory-store node.
    SharedReadRotate(LoadOpts),
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
    /// Child process: the route workload's upstream.
    #[command(hide = true)]
    ServeUpstream(ServeOpts),
}

#[derive(Args, Clone)]
pub struct LoadOpts {
    /// Concurrent connections per server (closed loop).
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,
    /// Warm-up before measuring (requests are made but not counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Measured time (per server of an interleaved run).
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Measure the workload alone instead of interleaved with its baseline (the ceiling;
    /// memory-only `register` for `durable-register`).
    #[arg(long)]
    pub alone: bool,
    /// Length of the alternating slices of an interleaved run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub slice: Duration,
    /// Worker threads of the load generator's runtime (default: one per core).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Worker threads of the server's runtime (default: one per core).
    #[arg(long)]
    pub server_threads: Option<usize>,
    /// The certgate config whose TLS files (and settings) are used.
    #[arg(long, default_value = "config/certgate.toml")]
    pub config: PathBuf,
    /// The client certificate of the dev PKI to present (certs/NAME.pem).
    #[arg(long, default_value = "client1")]
    pub cert: String,
    /// Record a flat CPU profile of the server during the measured window with
    /// `perf record` into this file.
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// With `--perf`: record call graphs (DWARF unwinding; slows the server down, use it
    /// to attribute time, not to measure throughput).
    #[arg(long)]
    pub perf_call_graph: bool,
    /// The server's logging: `on` is the shipped configuration (an access-log line per
    /// request, text, written by certgate's log thread to a file); `off` installs no
    /// subscriber, for comparison.
    #[arg(long, value_enum, default_value_t = LogMode::On)]
    pub log: LogMode,
    /// The nginx binary of the route workload's baseline.
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// The database of the shared-store workloads (a throwaway one: they write to it).
    #[arg(long, env = "CERTGATE_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// One JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Whether the server under test logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogMode {
    On,
    Off,
}

#[derive(Args, Clone)]
pub struct StoreOpts {
    /// Number of clients to register.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    pub clients: usize,
    /// The certgate config to build the registry from.
    #[arg(long, default_value = "config/certgate.toml")]
    pub config: PathBuf,
    /// Directory under which the snapshot workload creates its temporary data dir.
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Profile each timed phase with `perf record` into PREFIX.<phase>.perf.
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// One JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Bind each client to a certificate of its own (client1's, with a SHA-256 made up per
    /// client), as a population of clients would be, instead of all to client1's.
    #[arg(long)]
    pub certificate_per_client: bool,
}

#[derive(Args, Clone)]
pub struct MicroOpts {
    /// Iterations per step.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    pub iterations: u32,
    /// The certgate config to build the registry from.
    #[arg(long, default_value = "config/certgate.toml")]
    pub config: PathBuf,
    /// One JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct ServeOpts {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub threads: Option<usize>,
    /// certgate only: `[store] data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Ceiling only: the answer to give.
    #[arg(long, value_enum, default_value_t = Answer::Register)]
    pub answer: Answer,
    /// Install the shipped logging (stderr).
    #[arg(long, value_enum, default_value_t = LogMode::Off)]
    pub log: LogMode,
    /// certgate only: one route, /api/ to this upstream.
    #[arg(long)]
    pub upstream: Option<std::net::SocketAddr>,
    /// certgate only: the PostgreSQL store at this URL.
    #[arg(long)]
    pub postgres_url: Option<String>,
}

pub fn main() -> ExitCode {
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
        Workload::Token(load) => load_workload(
            Plan {
                token: true,
                ..Plan::certgate("token")
            },
            Some(Plan::ceiling_answering(Answer::Token)),
            load,
        ),
        Workload::Introspect(load) => load_workload(
            Plan {
                introspect: true,
                ..Plan::certgate("introspect")
            },
            Some(Plan::ceiling_answering(Answer::Introspect)),
            load,
        ),
        Workload::Route(load) => load_workload(
            Plan {
                route: true,
                ..Plan::certgate("route")
            },
            Some(Plan::nginx()),
            load,
        ),
        Workload::RouteUpload(load) => upload::route_upload(&load),
        Workload::SharedRegister(load) => load_workload(
            Plan {
                shared_nodes: 2,
                distinct_certs: true,
                ..Plan::certgate("shared-register")
            },
            Some(Plan {
                distinct_certs: true,
                ..Plan::certgate("register")
            }),
            load,
        ),
        Workload::SharedReadRotate(load) => load_workload(
            Plan {
                read_rotate: true,
                shared_nodes: 2,
                ..Plan::certgate("shared-read-rotate")
            },
            Some(Plan {
                read_rotate: true,
                ..Plan::certgate("read-rotate")
            }),
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
        Workload::ServeUpstream(_) => servers::serve_upstream(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
