//! A small real upstream for the edge-route tests: a hyper server on loopback (plain HTTP,
//! or TLS with ALPN h2/http1.1 and the dev server certificate) that records every request it
//! receives and answers by path:
//!
//! - `/slow…`: never answers (for 504);
//! - `/events…`: an endless server-sent-event stream, one event every 10 ms;
//! - `/upload…`: reads the whole body and answers its length;
//! - anything else: 200 with a 1 KiB body.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    pub headers: HeaderMap,
    pub version: Version,
}

impl Seen {
    /// A header as text (first value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
    /// Event streams that ended (the client, through certgate, went away).
    pub streams_closed: Arc<AtomicUsize>,
}

type Out = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    /// Plain HTTP on 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// HTTPS with the dev server certificate (for `localhost`), ALPN h2 and http/1.1.
    pub async fn start_tls() -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter("certs/server.pem")
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file("certs/server-key.pem").unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let streams_closed = Arc::new(AtomicUsize::new(0));
        let state = (seen.clone(), count.clone(), streams_closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, state.clone()));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            count,
            streams_closed,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }
}

async fn handle(
    req: Request<Incoming>,
    (seen, count, closed): (Arc<Mutex<Vec<Seen>>>, Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> Result<Response<Out>, Infallible> {
    count.fetch_add(1, Ordering::SeqCst);
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        headers: req.headers().clone(),
        version: req.version(),
    });
    let path = req.uri().path().to_owned();
    if path.contains("/slow") {
        std::future::pending::<()>().await;
    }
    if path.contains("/upload") {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(Response::new(full(format!("{{\"received\":{n}}}"))));
    }
    if path.contains("/events") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let event = Bytes::from(format!("data: event {i}\n\n"));
                if tx.send(event).await.is_err() {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut resp = Response::new(BodyExt::boxed(Events(rx)));
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(resp);
    }
    let mut resp = Response::new(full("x".repeat(1024)));
    resp.headers_mut()
        .insert("x-upstream", "yes".parse().unwrap());
    // A hop-by-hop header the client must not see.
    resp.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(resp)
}

fn full(s: impl Into<Bytes>) -> Out {
    BodyExt::boxed(http_body_util::Full::new(s.into()))
}

/// An endless body fed by a channel (the event stream).
struct Events(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
