//! `route-upload`: certgate's memory while it streams a 1 GiB upload through a route.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::registration_body;
use crate::load::{client_config, json_string_field, Plan};
use crate::memory::rss_kib_of;
use crate::servers::{Extra, ServerProc};
use crate::{Error, LoadOpts};

/// Bytes uploaded.
const TOTAL: u64 = 1 << 30;
/// Size of each body frame the client sends.
const CHUNK: usize = 256 * 1024;

/// One set-up request on `setup`: POST `body` to `path`, and the answer's string `field`.
async fn post_for(
    setup: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    ty: &str,
    body: String,
    field: &str,
) -> Result<String, Error> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, ty)
        .body(Full::new(Bytes::from(body)))?;
    // Wait until the connection can take the request (the last answer is done).
    setup.ready().await?;
    let resp = setup
        .send_request(req)
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let text = resp.into_body().collect().await?.to_bytes();
    Ok(json_string_field(std::str::from_utf8(&text)?, field)
        .ok_or_else(|| format!("POST {path}: no {field} in the answer"))?)
}

/// Registers a client, gets a token, then uploads 1 GiB through certgate's route to the
/// upstream (which counts and discards it) while sampling certgate's RSS every 10 ms.
pub fn route_upload(opts: &LoadOpts) -> Result<(), Error> {
    let mut upstream = ServerProc::start_upstream(opts)?;
    let extra = Extra {
        upstream: Some(upstream.addr),
        postgres_url: None,
    };
    let plan = Plan {
        route: true,
        ..Plan::certgate("route-upload")
    };
    let mut server = match ServerProc::start(&plan, opts, None, &extra) {
        Ok(s) => s,
        Err(e) => {
            upstream.stop();
            return Err(e);
        }
    };
    let result = measure(opts, &server);
    server.stop();
    upstream.stop();
    let report = result?;
    if opts.json {
        println!("{report}");
    } else {
        println!(
            "route-upload: {} MiB in {:.2} s ({:.0} MiB/s); certgate RSS {} KiB before, {} KiB at most while streaming (+{} KiB)",
            TOTAL >> 20,
            report["seconds"].as_f64().unwrap_or(f64::NAN),
            report["mib_per_s"].as_f64().unwrap_or(f64::NAN),
            report["rss_before_kib"],
            report["rss_max_kib"],
            report["rss_growth_kib"],
        );
    }
    Ok(())
}

fn measure(opts: &LoadOpts, server: &ServerProc) -> Result<Value, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cert = format!("certs/{}.pem", opts.cert);
    let key = format!("certs/{}-key.pem", opts.cert);
    let connector = TlsConnector::from(Arc::new(client_config(cert.as_ref(), key.as_ref())?));
    let addr = server.addr;
    let pid = server.pid;
    rt.block_on(async move {
        let connect = || async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            Ok::<_, Error>(TokioIo::new(tls))
        };
        // Set-up: a tls_client_auth client and a token bound to this certificate.
        let (mut setup, conn) = hyper::client::conn::http1::handshake(connect().await?).await?;
        tokio::spawn(conn);
        let reg = Value::Object(registration_body()).to_string();
        let id = post_for(
            &mut setup,
            "/register",
            "application/json",
            reg,
            "client_id",
        )
        .await?;
        let form = format!("grant_type=client_credentials&client_id={id}&scope=api%3Aread");
        let token = post_for(
            &mut setup,
            "/token",
            "application/x-www-form-urlencoded",
            form,
            "access_token",
        )
        .await?;

        // The upload, with certgate's RSS sampled meanwhile.
        let before = rss_kib_of(pid)?;
        let max = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (max, done) = (max.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(kib) = rss_kib_of(pid) {
                        max.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(connect().await?).await?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/upload")
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Generated::new(TOTAL))?;
        sender.ready().await?;
        let started = Instant::now();
        let resp = sender.send_request(req).await.map_err(|e| {
            format!(
                "the upload failed after {:.1} s: {e} ({:?})",
                started.elapsed().as_secs_f64(),
                std::error::Error::source(&e)
            )
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the upload's answer: {e}"))?
            .to_bytes();
        let secs = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        if !status.is_success() {
            return Err(format!(
                "the upload got {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        let max = max.load(Ordering::Relaxed);
        Ok(json!({
            "workload": "route-upload",
            "bytes": TOTAL,
            "seconds": secs,
            "mib_per_s": (TOTAL >> 20) as f64 / secs,
            "rss_before_kib": before,
            "rss_max_kib": max,
            "rss_growth_kib": max.saturating_sub(before),
        }))
    })
}

/// A request body of `left` bytes made on the fly, `CHUNK` at a time (nothing held).
struct Generated {
    left: u64,
    chunk: Bytes,
}

impl Generated {
    fn new(total: u64) -> Self {
        Self {
            left: total,
            chunk: Bytes::from(vec![b'u'; CHUNK]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
