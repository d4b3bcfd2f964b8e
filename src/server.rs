//! Accept loops, connection limits, time boxes, graceful shutdown and SIGHUP reload.

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
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::http::{handle, App, Conn, Listener};
use crate::identity::CertSource;

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
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let mut tasks = tokio::task::JoinSet::new();

    tasks.spawn(accept_loop(
        app.clone(),
        listeners.tls,
        Listener::Tls,
        slots.clone(),
        stop_rx.clone(),
    ));
    if let Some(l) = listeners.proxy {
        tasks.spawn(accept_loop(
            app.clone(),
            l,
            Listener::Proxy,
            slots.clone(),
            stop_rx.clone(),
        ));
    }
    if let Some(l) = listeners.admin {
        // The admin listener has its own small budget so a flood cannot hide /metrics.
        tasks.spawn(accept_loop(
            app.clone(),
            l,
            Listener::Admin,
            Arc::new(Semaphore::new(64)),
            stop_rx.clone(),
        ));
    }
    #[cfg(unix)]
    tasks.spawn(reload_on_sighup(app.clone(), stop_rx.clone()));
    tasks.spawn(snapshot_periodically(app.clone(), stop_rx.clone()));

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining open ones");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let drained = tokio::time::timeout(limits.drain_timeout, slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!("drain timeout passed with connections still open; closing them");
    }
    snapshot(&app).await;
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
    listener: TcpListener,
    kind: Listener,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Taking a slot before accepting applies back-pressure at the connection limit.
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
        let stop = stop.clone();
        tokio::spawn(async move {
            app.metrics.connections_open.inc();
            match kind {
                Listener::Tls => serve_tls(&app, stream, peer, stop).await,
                _ => {
                    let conn = Conn {
                        peer,
                        listener: kind,
                        tls_cert: None,
                    };
                    serve_http(app.clone(), TokioIo::new(stream), conn, stop).await;
                }
            }
            app.metrics.connections_open.dec();
            drop(permit);
        });
    }
}

async fn serve_tls(
    app: &Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let tls = app.tls.current();
    let accepted = tokio::time::timeout(
        app.config.limits.handshake_timeout,
        tls.acceptor.accept(stream),
    )
    .await;
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
    let cert = match stream.get_ref().1.peer_certificates() {
        Some(chain) if !chain.is_empty() => match tls.identify(chain, CertSource::Tls) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection: unusable client certificate");
                return;
            }
        },
        _ => None,
    };
    let conn = Conn {
        peer,
        listener: Listener::Tls,
        tls_cert: cert,
    };
    serve_http(app.clone(), TokioIo::new(stream), conn, stop).await;
}

async fn serve_http<I>(app: Arc<App>, io: TokioIo<I>, conn: Conn, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &app.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let conn = Arc::new(conn);
    let svc_app = app.clone();
    let svc = service_fn(move |req| handle(svc_app.clone(), conn.clone(), req));
    let connection = builder.serve_connection(io, svc);
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
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
    }
}
