//! Accept loops, per-listener connection limits, time boxes, graceful shutdown and SIGHUP
//! reload.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::body::RequestBody;
use crate::config::Config;
use crate::http::{handle, Conn, Listener, TlsPeer};
use crate::identity::CertSource;
use watchdog::{Activity, Watched};

mod watchdog;

/// The pre-bound sockets the gateway serves (tests bind `127.0.0.1:0`).
pub struct Listeners {
    pub tls: TcpListener,
    pub proxy: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the config names.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        async fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
            TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("{key} = {addr}: {e}")))
        }
        Ok(Self {
            tls: bind(config.server.tls_listen, "server.tls_listen").await?,
            proxy: match config.server.proxy_listen {
                Some(a) => Some(bind(a, "server.proxy_listen").await?),
                None => None,
            },
            admin: match config.server.admin_listen {
                Some(a) => Some(bind(a, "server.admin_listen").await?),
                None => None,
            },
        })
    }
}

/// Serves until `shutdown` resolves, then stops accepting and drains open connections
/// for at most `limits.drain_timeout`.
pub async fn serve(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = &app.config.limits;
    // `validate` keeps max_connections within u32.
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let builders = Arc::new(Builders::new(limits));
    let mut tasks = tokio::task::JoinSet::new();
    let mut pools = Vec::new();
    // Each listener has its own slots: direct TLS clients can never starve the trusted
    // proxy, and a flood cannot hide /metrics (SPEC §8).
    let mut listen = |listener: TcpListener, kind: Listener, max: u32| {
        let slots = Arc::new(Semaphore::new(max as usize));
        pools.push((slots.clone(), max));
        tasks.spawn(accept_loop(
            app.clone(),
            builders.clone(),
            listener,
            kind,
            slots,
            stop_rx.clone(),
        ));
    };
    listen(listeners.tls, Listener::Tls, max);
    if let Some(l) = listeners.proxy {
        listen(l, Listener::Proxy, max);
    }
    if let Some(l) = listeners.admin {
        listen(l, Listener::Admin, ADMIN_CONNECTIONS);
    }
    #[cfg(unix)]
    tasks.spawn(reload_on_sighup(app.clone(), stop_rx.clone()));
    tasks.spawn(snapshot_periodically(app.clone(), stop_rx.clone()));

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining open ones");
    app.begin_draining();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        for (slots, max) in &pools {
            let _ = slots.acquire_many(*max).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout passed with connections still open; closing them");
    }
    if app.registry.unavailable().is_none() {
        snapshot(&app).await;
    }
}

/// The admin listener's own small budget.
const ADMIN_CONNECTIONS: u32 = 64;

/// How long a connection closed by its watchdog gets to say goodbye (HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// hyper connection builders, configured once from `[limits]`.
struct Builders {
    /// Decides HTTP/1 or HTTP/2 from the first bytes (plain listeners, TLS without ALPN).
    auto: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &crate::config::LimitsConfig) -> Self {
        let mut b = auto::Builder::new(TokioExecutor::new());
        // The head limit itself (431 with a JSON body) is `http::handle`'s; hyper's buffers
        // only have to hold what it judges, with room to spare.
        let head_buffer = (limits.max_header_bytes as usize)
            .saturating_mul(2)
            .max(16 * 1024);
        // hyper parses at most 100 header fields without allocating per request; a head with
        // more is answered by hyper itself (a bare 431), like one beyond `head_buffer`.
        b.http1()
            .timer(TokioTimer::new())
            // The watchdog times head reads and idle keep-alive separately; hyper's timer
            // would also cut idle keep-alive connections at the header timeout.
            .header_read_timeout(None)
            .max_buf_size(head_buffer)
            .keep_alive(true);
        // HTTP/2 counts 32 bytes per field on top of name and value (RFC 9113 §6.5.2): twice
        // the room again, so that many small fields still reach the JSON 431.
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(u32::try_from(head_buffer.saturating_mul(2)).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(limits.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(20));
        Self {
            auto: b.clone(),
            http1: b.clone().http1_only(),
            http2: b.http2_only(),
        }
    }
}

async fn snapshot_periodically(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = app.config.store.snapshot_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => snapshot(&app).await,
            _ = stop.changed() => return,
        }
    }
}

/// Drops expired access tokens, then writes a snapshot, off the runtime threads
/// (requests keep being served meanwhile).
async fn snapshot(app: &Arc<App>) {
    let app = app.clone();
    let started = std::time::Instant::now();
    let work = move || {
        let pruned = app.registry.prune_tokens();
        if pruned > 0 {
            tracing::debug!(pruned, "expired access tokens dropped");
        }
        app.registry.snapshot()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(Some(s))) => tracing::info!(
            generation = s.generation,
            clients = s.clients,
            tokens = s.tokens,
            bytes = s.bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "snapshot failed; the journal keeps every change")
        }
        Err(e) => tracing::error!(error = %e, "snapshot task failed"),
    }
}

async fn accept_loop(
    app: Arc<App>,
    builders: Arc<Builders>,
    listener: TcpListener,
    kind: Listener,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Taking a slot before accepting applies back-pressure at the connection limit:
        // one connection more waits in the kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builders = builders.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            app.metrics.connections_open.inc();
            let tls = app.tls.current();
            let acceptor = match kind {
                Listener::Tls => Some(tls.acceptor.clone()),
                Listener::Proxy => tls.proxy.as_ref().map(|p| p.acceptor.clone()),
                Listener::Admin => None,
            };
            match acceptor {
                Some(acceptor) => {
                    serve_tls(&app, &builders, acceptor, stream, peer, kind, permit, stop).await
                }
                None => {
                    let conn = Conn {
                        peer,
                        listener: kind,
                        https: false,
                        tls: None,
                        proxy_chain: Vec::new(),
                        proxy_verdict: Default::default(),
                        peer_text: Default::default(),
                    };
                    let limits = &app.config.limits;
                    let activity =
                        Activity::new(limits.header_read_timeout, limits.idle_timeout, true);
                    let io = Watched::new(stream, activity.clone(), permit);
                    serve_http(&app, &builders.auto, io, activity, conn, stop).await;
                }
            }
            app.metrics.connections_open.dec();
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    app: &Arc<App>,
    builders: &Builders,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    kind: Listener,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let limits = &app.config.limits;
    let accepted = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            app.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            app.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let session = stream.get_ref().1;
    let chain = session.peer_certificates().unwrap_or_default();
    let mut conn = Conn {
        peer,
        listener: kind,
        https: true,
        tls: None,
        proxy_chain: Vec::new(),
        proxy_verdict: Default::default(),
        peer_text: Default::default(),
    };
    if kind == Listener::Proxy {
        // The proxy's own certificate only decides whether it is believed (`Conn::trusted_proxy`).
        conn.proxy_chain = chain.iter().map(|c| c.clone().into_owned()).collect();
    } else if !chain.is_empty() {
        let tls = app.tls.current();
        match tls.identify(chain, CertSource::Tls) {
            Ok(cert) => {
                conn.tls = Some(TlsPeer {
                    chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
                    cert,
                    generation: tls.generation,
                })
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection: unusable client certificate");
                return;
            }
        }
    }
    // ALPN decides the protocol; only a client that offered none is sniffed.
    let (builder, http1) = match session.alpn_protocol() {
        Some(b"h2") => (&builders.http2, false),
        Some(_) => (&builders.http1, true),
        None => (&builders.auto, true),
    };
    let activity = Activity::new(limits.header_read_timeout, limits.idle_timeout, http1);
    let io = Watched::new(stream, activity.clone(), permit);
    serve_http(app, builder, io, activity, conn, stop).await;
}

async fn serve_http<I>(
    app: &Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    activity: Arc<Activity>,
    conn: Conn,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let svc_app = app.clone();
    let svc_activity = activity.clone();
    let svc = service_fn(move |req| {
        let in_flight = svc_activity.begin();
        let app = svc_app.clone();
        let conn = conn.clone();
        let activity = svc_activity.clone();
        async move {
            if req.version() == http::Version::HTTP_2 {
                activity.http2();
            }
            let (parts, incoming) = http::Request::into_parts(req);
            let body = RequestBody::new(incoming);
            let watch = body.clone();
            // In flight until the body is sent: a long download or an event stream is not
            // an idle connection. (A dropped response drops the guard too.)
            let resp = handle(app, conn, http::Request::from_parts(parts, body)).await;
            if !http_body::Body::is_end_stream(&watch) {
                activity.body_left_unread();
            }
            resp.map(|r| r.map(|body| body.with_guard(in_flight)))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(connection);
    loop {
        let wake = match activity.deadline() {
            Some(at) if at <= tokio::time::Instant::now() => {
                // Nothing in flight and nothing arrived in time: close. HTTP/2 gets its
                // GOAWAY; a half-sent head is simply dropped.
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await;
                return;
            }
            Some(at) => at,
            None => tokio::time::Instant::now() + activity.recheck(),
        };
        activity.sleeping_until(wake);
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = activity.earlier() => {}
            _ = stop.changed() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                return;
            }
        }
    }
}

#[cfg(unix)]
async fn reload_on_sighup(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificate reload is unavailable");
        return;
    };
    loop {
        tokio::select! {
            s = hup.recv() => if s.is_none() { return },
            _ = stop.changed() => return,
        }
        match app.tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded TLS certificate, key and client CA"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: reload failed; keeping the previous TLS files")
            }
        }
        match app.registry.reload_statement_issuers() {
            Ok(()) => tracing::info!("SIGHUP: reloaded the software statement issuers' keys"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: reload failed; keeping the previous issuer keys")
            }
        }
    }
}
