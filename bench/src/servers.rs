//! The server under test in a child process: certgate or the ceiling.

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use certgate::clock::SystemClock;
use certgate::config::RegistrationAuth;
use certgate::{Config, Listeners};

use crate::body::{ceiling_body, ceiling_introspect_body, ceiling_token_body};
use crate::load::{Answer, Plan};
use crate::{Error, LoadOpts, LogMode, ServeOpts};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Ceiling,
    Certgate,
}

/// A server running in a child process of this binary.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    /// Where the server's log lines go (`--log on`), removed with the run.
    _log: Option<tempfile::NamedTempFile>,
}

impl ServerProc {
    /// Re-executes this binary as `serve-ceiling` / `serve-certgate` and waits for the
    /// address it listens on.
    pub fn start(plan: &Plan, opts: &LoadOpts, data_dir: Option<&Path>) -> Result<Self, Error> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(match plan.server {
            ServerKind::Ceiling => "serve-ceiling",
            ServerKind::Certgate => "serve-certgate",
        });
        let answer = match plan.answer {
            Answer::Register => "register",
            Answer::Token => "token",
            Answer::Introspect => "introspect",
        };
        cmd.args(["--answer", answer]);
        // certgate logs as shipped, to a file as an operator's service manager would; the
        // ceiling never logs.
        let log = if opts.log == LogMode::On && plan.server == ServerKind::Certgate {
            cmd.args(["--log", "on"]);
            Some(
                tempfile::Builder::new()
                    .prefix("certgate-bench-log-")
                    .tempfile()?,
            )
        } else {
            None
        };
        cmd.arg("--config").arg(&opts.config);
        if let Some(n) = opts.server_threads {
            cmd.args(["--threads", &n.to_string()]);
        }
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        // The shipped filter (info), whatever the caller's environment says.
        cmd.env_remove("RUST_LOG");
        let stderr = match &log {
            Some(file) => Stdio::from(file.reopen()?),
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
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
            Some(addr) => Ok(Self {
                child,
                addr,
                pid,
                _log: log,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the server child did not start (said {line:?})").into())
            }
        }
    }

    /// Closes the child's stdin (its shutdown signal) and waits; kills it after 30 s.
    pub fn stop(&mut self) {
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
pub fn serve(kind: ServerKind, opts: &ServeOpts) -> Result<(), Error> {
    let mut config = Config::load(&opts.config)?;
    config.server.proxy_listen = None;
    config.server.admin_listen = None;
    config.registration.authentication = vec![RegistrationAuth::MutualTls];
    config.store.data_dir = opts.data_dir.clone().unwrap_or_default();
    // Clients registered by the load are all bound to one certificate.
    config.registration.max_clients_per_certificate = u32::MAX;
    config.validate()?;
    let _log = (opts.log == LogMode::On && kind == ServerKind::Certgate)
        .then(|| certgate::logging::init(certgate::logging::LogFormat::Text));

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
                let tls = certgate::tls::Tls::load(&config.tls, &config.proxy)?;
                let body = match opts.answer {
                    Answer::Register => ceiling_body(),
                    Answer::Token => ceiling_token_body(),
                    Answer::Introspect => ceiling_introspect_body(),
                };
                let status = match opts.answer {
                    Answer::Register => StatusCode::CREATED,
                    _ => StatusCode::OK,
                };
                serve_ceiling(
                    listener,
                    tls.current().acceptor.clone(),
                    body,
                    status,
                    shutdown,
                )
                .await;
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
pub fn stdin_closed() -> impl Future<Output = ()> {
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
pub async fn serve_ceiling(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    body: bytes::Bytes,
    status: StatusCode,
    shutdown: impl Future<Output = ()>,
) {
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
                    *resp.status_mut() = status;
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
