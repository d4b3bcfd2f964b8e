//! The server under test in a child process: certgate, the ceiling, or real nginx; and
//! the small upstream the route workload forwards to.

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
    /// Real nginx terminating mTLS and proxying to the upstream (the route baseline).
    Nginx,
}

/// What a server needs beyond its plan: the route workload's upstream, the shared store.
#[derive(Clone, Default)]
pub struct Extra {
    pub upstream: Option<SocketAddr>,
    pub postgres_url: Option<String>,
}

/// A server running in a child process of this binary.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    /// Every process whose CPU is this server's (nginx: the master and its workers).
    pub pids: Vec<u32>,
    /// nginx's prefix directory (configuration, logs, temporary files).
    _dir: Option<tempfile::TempDir>,
    /// Where the server's log lines go (`--log on`), removed with the run.
    _log: Option<tempfile::NamedTempFile>,
}

impl ServerProc {
    /// Re-executes this binary as `serve-ceiling` / `serve-certgate` and waits for the
    /// address it listens on.
    pub fn start(
        plan: &Plan,
        opts: &LoadOpts,
        data_dir: Option<&Path>,
        extra: &Extra,
    ) -> Result<Self, Error> {
        if plan.server == ServerKind::Nginx {
            return Self::start_nginx(opts, extra);
        }
        let mut cmd = wrapped(std::env::current_exe()?);
        cmd.arg(match plan.server {
            ServerKind::Ceiling => "serve-ceiling",
            _ => "serve-certgate",
        });
        if let Some(up) = extra.upstream {
            cmd.arg("--upstream").arg(up.to_string());
        }
        if let Some(url) = &extra.postgres_url {
            cmd.arg("--postgres-url").arg(url);
        }
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
        Self::spawn_child(cmd, stderr, log)
    }

    /// The upstream of the route workload: a child answering 1 KiB over plain HTTP/1.1.
    pub fn start_upstream(opts: &LoadOpts) -> Result<Self, Error> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve-upstream").arg("--config").arg(&opts.config);
        Self::spawn_child(cmd, Stdio::inherit(), None)
    }

    fn spawn_child(
        mut cmd: Command,
        stderr: Stdio,
        log: Option<tempfile::NamedTempFile>,
    ) -> Result<Self, Error> {
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
                pids: vec![pid],
                _dir: None,
                _log: log,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the server child did not start (said {line:?})").into())
            }
        }
    }

    /// Real nginx as an operator would run it in front of an API: mTLS termination with
    /// the dev PKI, `proxy_pass` to the upstream over a keep-alive pool, two workers, the
    /// access log on (to a file).
    fn start_nginx(opts: &LoadOpts, extra: &Extra) -> Result<Self, Error> {
        let upstream = extra
            .upstream
            .ok_or("the nginx baseline needs the upstream")?;
        let dir = tempfile::Builder::new()
            .prefix("certgate-bench-nginx-")
            .tempdir()?;
        let root = std::env::current_dir()?;
        let certs = root.join("certs");
        // A free port, picked here: nginx cannot report the one it bound.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = format!(
            r#"daemon off;
worker_processes 2;
pid nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    upstream api {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certs}/server.pem;
        ssl_certificate_key {certs}/server-key.pem;
        ssl_client_certificate {certs}/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location /api/ {{
            proxy_pass http://api/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Client-Cert-Thumbprint $ssl_client_fingerprint;
        }}
    }}
}}
"#,
            dir = dir.path().display(),
            certs = certs.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut child = Command::new(&opts.nginx)
            .arg("-p")
            .arg(dir.path())
            .args(["-e", "stderr", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e} (apt-get install -y nginx)", opts.nginx.display()))?;
        let pid = child.id();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("nginx did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The workers do the work: count their CPU with the master's.
        let mut pids = vec![pid];
        for _ in 0..50 {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let workers: Vec<u32> = children
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if workers.len() >= 2 {
                pids.extend(workers);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            addr,
            pid,
            pids,
            _dir: Some(dir),
            _log: None,
        })
    }

    /// Closes the child's stdin (its shutdown signal; nginx: SIGQUIT) and waits; kills it
    /// after 30 s.
    pub fn stop(&mut self) {
        if self._dir.is_some() {
            let _ = Command::new("kill")
                .args(["-QUIT", &self.pid.to_string()])
                .status();
        }
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

/// The server child's command, under `CERTGATE_BENCH_SERVER_WRAP` when it is set (a
/// program and its arguments, split at spaces: `valgrind --tool=callgrind` counts the
/// instructions each server spends, repeatably where timings are not).
fn wrapped(exe: std::path::PathBuf) -> Command {
    let wrap = std::env::var("CERTGATE_BENCH_SERVER_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
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
    if let Some(up) = opts.upstream {
        config.routes = vec![certgate::config::RouteConfig {
            path_prefix: "/api/".into(),
            upstream: format!("http://{up}"),
            upstream_ca: Default::default(),
            required_scope: "api:read".into(),
            strip_prefix: true,
            timeout: Duration::from_secs(30),
        }];
    }
    if let Some(url) = &opts.postgres_url {
        config.store.backend = certgate::config::Backend::Postgres;
        config.store.postgres_url = url.clone();
    }
    config.validate()?;
    let _log = (opts.log == LogMode::On && kind == ServerKind::Certgate)
        .then(|| certgate::logging::init(certgate::logging::LogFormat::Text));

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async {
        let listener = listen().await?;
        let shutdown = stdin_closed();
        match kind {
            ServerKind::Ceiling => {
                let acceptor = stock_acceptor(&config.tls)?;
                let body = match opts.answer {
                    Answer::Register => ceiling_body(),
                    Answer::Token => ceiling_token_body(),
                    Answer::Introspect => ceiling_introspect_body(),
                };
                let status = match opts.answer {
                    Answer::Register => StatusCode::CREATED,
                    _ => StatusCode::OK,
                };
                serve_ceiling(listener, acceptor, body, status, shutdown).await;
                Ok(())
            }
            ServerKind::Nginx => Err("nginx is not served by this binary".into()),
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

/// Binds 127.0.0.1:0 and tells the parent the address (`listening ADDR` on stdout).
async fn listen() -> Result<TcpListener, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {}", listener.local_addr()?)?;
    out.flush()?;
    Ok(listener)
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

/// The ceiling's TLS: what a stock tokio-rustls server configured with certgate's files
/// runs. The same certificate, key, crypto provider (ring), protocol versions and ALPN; the
/// client CA through rustls' own `WebPkiClientVerifier`, which checks a presented chain
/// during the handshake (certgate defers that check and caches it per chain), and
/// `allow_unauthenticated` for `client_auth = "optional"`.
fn stock_acceptor(tls: &certgate::config::TlsConfig) -> Result<TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&tls.client_ca)? {
        roots.add(ca?)?;
    }
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if tls.client_auth != certgate::config::ClientAuth::Required {
        verifier = verifier.allow_unauthenticated();
    }
    let certs = CertificateDer::pem_file_iter(&tls.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The ceiling: accept, TLS with a stock rustls configuration (`stock_acceptor`), hyper's auto (h1 + h2) connection,
/// read the body, answer a fixed registration-sized JSON. Nothing else: no time boxes,
/// no connection limit, no identity, no routing.
pub async fn serve_ceiling(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    body: bytes::Bytes,
    status: StatusCode,
    shutdown: impl Future<Output = ()>,
) {
    accept_until(listener, shutdown, move |stream| {
        let acceptor = acceptor.clone();
        let body = body.clone();
        async move {
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
        }
    })
    .await;
}

/// Accepts connections until `shutdown`, serving each (with `TCP_NODELAY`) in a task of
/// its own.
async fn accept_until<F, Fut>(listener: TcpListener, shutdown: impl Future<Output = ()>, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        tokio::spawn(serve(stream));
    }
}

/// The route workload's upstream: plain HTTP/1.1 on 127.0.0.1:0, 1 KiB of JSON for any
/// request, until stdin closes.
pub fn serve_upstream() -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = listen().await?;
        let body = upstream_body();
        accept_until(listener, stdin_closed(), move |stream| {
            let body = body.clone();
            async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        // Read and discard: an upload of any size passes through.
                        let mut incoming = req.into_body();
                        while let Some(Ok(_)) = incoming.frame().await {}
                        let mut resp = Response::new(Full::new(body));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        })
        .await;
        Ok(())
    })
}

/// 1 KiB of JSON.
fn upstream_body() -> bytes::Bytes {
    let mut s = String::from("{\"items\":\"");
    while s.len() < 1024 - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    bytes::Bytes::from(s)
}
