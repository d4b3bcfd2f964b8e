//! HTTP: routing, request decoding, JSON responses. Thin: handlers decode, call the
//! registry, encode.

mod edge;
pub mod error;
mod register;
mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

use crate::app::App;
use crate::config::Config;
use crate::identity::{CertSource, ClientCertificate};
use crate::proxy_header;
use error::ApiError;

pub use crate::body::{Body, RequestBody};

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `server.tls_listen`.
    Tls,
    /// `server.proxy_listen`.
    Proxy,
    /// `server.admin_listen`.
    Admin,
}

/// Per-connection facts, computed once.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub listener: Listener,
    /// Whether the connection speaks HTTPS.
    pub https: bool,
    /// The handshake certificate (TLS listener only).
    pub tls: Option<TlsPeer>,
    /// The certificate a proxy presented (proxy listener over TLS only). Never a client
    /// identity: it only decides whether the proxy is believed.
    pub proxy_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The proxy certificate's verdict and the TLS generation it was reached under: a chain
    /// is verified once per connection, not per request, until a reload.
    pub proxy_verdict: std::sync::Mutex<Option<(u64, Result<(), String>)>>,
    /// `peer` as the access log writes it, formatted for the connection's first line.
    pub peer_text: std::sync::OnceLock<String>,
}

// === impl Conn ===

impl Conn {
    /// The peer address as text (formatted once per connection, not once per request).
    pub fn peer_text(&self) -> &str {
        self.peer_text.get_or_init(|| self.peer.to_string())
    }

    /// Whether this peer's certificate header is believed (SPEC §1): the proxy listener, a
    /// peer address inside `proxy.trusted_proxies` and, with `proxy.trusted_proxy_subjects`,
    /// a verified certificate with a listed subject (judged under the TLS files in force
    /// now). `Err` says why not.
    pub fn trusted_proxy(&self, app: &App) -> Result<(), String> {
        if self.listener != Listener::Proxy {
            return Err("not the proxy listener".into());
        }
        if !app.config.proxy.is_trusted(self.peer.ip()) {
            return Err("its address is not in proxy.trusted_proxies".into());
        }
        let tls = app.tls.current();
        let mut cached = match self.proxy_verdict.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*cached {
            Some((generation, verdict)) if *generation == tls.generation => verdict.clone(),
            _ => {
                let verdict = tls.judge_proxy(&self.proxy_chain);
                *cached = Some((tls.generation, verdict.clone()));
                verdict
            }
        }
    }
}

/// The certificate chain a TLS client presented, and how it was judged at the handshake.
#[derive(Debug)]
pub struct TlsPeer {
    /// Leaf first, as presented.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The identity under the TLS generation of the handshake.
    pub cert: Arc<ClientCertificate>,
    /// That generation (`TlsState::generation`).
    pub generation: u64,
}

/// What a handler learns about one request before it runs.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub conn: &'a Conn,
    /// Set by handlers for the access log.
    pub client_id: Option<Arc<str>>,
    cert: Option<Option<Arc<ClientCertificate>>>,
}

/// Serves one request; never fails (errors become JSON responses).
pub async fn handle(
    app: Arc<App>,
    conn: Arc<Conn>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    // HTTP/2: an unread request body stays until the answer is sent (see `body`).
    let held = (req.version() == http::Version::HTTP_2).then(|| req.body().clone());
    let method = req.method().clone();
    let mut ctx = Ctx {
        app: &app,
        conn: &conn,
        client_id: None,
        cert: None,
    };
    // The request's own (shared) copy of the target: no allocation.
    let uri = req.uri().clone();
    let path = uri.path();
    let answer = match check_head(&app.config, &req) {
        Ok(()) => route(&mut ctx, path, req).await,
        Err(e) => Err(e),
    };
    // Nothing is acknowledged before it is durable: every commit returns only then.
    let mut resp = answer.unwrap_or_else(ApiError::into_response);
    if let Some(held) = held {
        drain(&app.config, &held).await;
        resp = resp.map(|b| b.with_guard(held));
    }
    app.metrics.observe(resp.status());
    let thumbprint = match &ctx.cert {
        Some(Some(c)) => c.thumbprint.as_str(),
        _ => "",
    };
    tracing::info!(
        target: crate::logging::ACCESS_TARGET,
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
        client_id = ctx.client_id.as_deref().unwrap_or(""),
        thumbprint,
        peer = %conn.peer_text(),
    );
    Ok(resp)
}

/// Reads what is left of a small HTTP/2 request body before the answer goes out. An answer
/// given before the client finished sending (a refusal, typically) ends the stream with a
/// reset, and clients such as curl then report a transport error instead of the answer; a
/// client that is still sending a large or slow body gets the answer (and the reset)
/// anyway.
async fn drain(config: &Config, body: &RequestBody) {
    use http_body_util::BodyExt as _;
    if http_body::Body::is_end_stream(body) {
        return;
    }
    let limit = config.registration.max_body_bytes;
    let wait = config.limits.request_timeout.min(DRAIN_WAIT);
    let _ = tokio::time::timeout(wait, Limited::new(body.clone(), limit).collect()).await;
}

/// The request target's length as `Uri` displays it, without formatting it.
fn target_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

/// How long an unread request body may delay an answer (`drain`).
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Framing rules every request meets before it is routed (SPEC §8, RFC 9112 §3.2,
/// RFC 9110 §5.3): a head within `limits.max_header_bytes` (431), exactly one `Host` on
/// HTTP/1.1 and never two, at most one `Authorization`.
fn check_head(config: &Config, req: &Request<RequestBody>) -> Result<(), ApiError> {
    let limit = config.limits.max_header_bytes as usize;
    // Counted as HTTP/1.1 would send it: request line, then "name: value\r\n" each.
    let mut size = req.method().as_str().len() + target_len(req.uri()) + 12;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len() + 4;
    }
    if size > limit {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request",
            format!("the request head exceeds {limit} bytes"),
        ));
    }
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(ApiError::invalid_request("more than one Host header"));
    }
    if hosts == 0 && req.version() == http::Version::HTTP_11 {
        return Err(ApiError::invalid_request(
            "an HTTP/1.1 request must carry a Host header",
        ));
    }
    if req.headers().get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(ApiError::invalid_request(
            "more than one Authorization header",
        ));
    }
    // HTTP/1 parsers strip the whitespace around a field value; HTTP/2 delivers it as sent,
    // and RFC 9113 §8.2.1 makes such a request malformed.
    if req.version() == http::Version::HTTP_2
        && req.headers().values().any(|v| {
            let b = v.as_bytes();
            matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
        })
    {
        return Err(ApiError::invalid_request(
            "a header field value starts or ends with whitespace",
        ));
    }
    Ok(())
}

async fn route(
    ctx: &mut Ctx<'_>,
    path: &str,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method();
    if ctx.conn.listener == Listener::Admin {
        return match path {
            "/healthz" => {
                only(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
                Ok(healthz(ctx).await)
            }
            "/metrics" => {
                only(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
                let clients = ctx.app.registry.store().client_count().await.ok();
                let mut resp = Response::new(Body::full(ctx.app.metrics.encode(clients)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(resp)
            }
            _ => Err(ApiError::not_found()),
        };
    }
    match path {
        "/register" => {
            only(method, &[Method::POST], "POST")?;
            register::register(ctx, req).await
        }
        "/token" => {
            only(method, &[Method::POST], "POST")?;
            token::token(ctx, req).await
        }
        "/introspect" => {
            only(method, &[Method::POST], "POST")?;
            token::introspect(ctx, req).await
        }
        "/revoke" => {
            only(method, &[Method::POST], "POST")?;
            token::revoke(ctx, req).await
        }
        "/.well-known/oauth-authorization-server" => {
            only(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(raw_json(StatusCode::OK, ctx.app.discovery.clone(), false))
        }
        "/identity" => {
            only(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            let cert = ctx.cert(req.headers())?;
            let body = serde_json::json!({
                "certificate": cert.as_deref().map(ClientCertificate::to_json)
            });
            Ok(json_response(StatusCode::OK, &body, false))
        }
        "/healthz" => {
            only(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(healthz(ctx).await)
        }
        _ => {
            if let Some(client_id) = path.strip_prefix("/register/") {
                if client_id.is_empty() || client_id.contains('/') {
                    return Err(ApiError::not_found());
                }
                let client_id = decode_unreserved(client_id);
                only(
                    method,
                    &[Method::GET, Method::PUT, Method::DELETE],
                    "GET, PUT, DELETE",
                )?;
                return register::manage(ctx, &client_id, req).await;
            }
            // certgate's own paths always win: anything under them is not a route's.
            let own = crate::config::OWN_PATHS.iter().any(|own| {
                let own = own.trim_end_matches('/');
                path == own
                    || path
                        .strip_prefix(own)
                        .is_some_and(|rest| rest.starts_with('/'))
            });
            if !own {
                if let Some(route) = ctx.app.routes.lookup(path) {
                    let route = route.clone();
                    return edge::serve(ctx, &route, req).await;
                }
            }
            Err(ApiError::not_found())
        }
    }
}

/// Decodes percent-encoded unreserved characters (RFC 3986 §6.2.2.2): `/register/%41bc`
/// names the same client as `/register/Abc`. Other escapes stay as they are, so they can
/// never name a client.
fn decode_unreserved(segment: &str) -> std::borrow::Cow<'_, str> {
    if !segment.contains('%') {
        return segment.into();
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // Only ASCII was decoded, so the result is as valid UTF-8 as the input.
    String::from_utf8(out).map_or(segment.into(), Into::into)
}

fn only(method: &Method, allowed: &[Method], allow: &'static str) -> Result<(), ApiError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allow))
    }
}

async fn healthz(ctx: &Ctx<'_>) -> Response<Body> {
    let reason = match ctx.app.unavailable() {
        Some(reason) => Err(reason),
        None => ctx
            .app
            .registry
            .store()
            .client_count()
            .await
            .map_err(|e| e.to_string()),
    };
    match reason {
        Ok(clients) => {
            let body = serde_json::json!({ "status": "ok", "clients": clients });
            json_response(StatusCode::OK, &body, false)
        }
        Err(reason) => {
            let body = serde_json::json!({ "status": "unavailable", "reason": reason });
            json_response(StatusCode::SERVICE_UNAVAILABLE, &body, false)
        }
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// The caller's certificate: from the handshake on the TLS listener, from the proxy
    /// header on the proxy listener when the peer is trusted. Computed once per request.
    pub fn cert(
        &mut self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<ClientCertificate>>, ApiError> {
        if let Some(cert) = &self.cert {
            return Ok(cert.clone());
        }
        let cert = match self.conn.listener {
            // A proxy header arriving on the TLS listener is never believed (SPEC §6a.10).
            Listener::Tls => self.conn.tls.as_ref().map(|peer| self.rejudged(peer)),
            Listener::Admin => None,
            Listener::Proxy => self.proxied_cert(headers)?,
        };
        self.cert = Some(cert.clone());
        Ok(cert)
    }

    /// The handshake certificate judged against the client CA in force now (SPEC §8): a
    /// CA removed by SIGHUP stops counting on open connections too.
    fn rejudged(&self, peer: &TlsPeer) -> Arc<ClientCertificate> {
        let tls = self.app.tls.current();
        let cert = if tls.generation == peer.generation {
            peer.cert.clone()
        } else {
            tls.identify(&peer.chain, CertSource::Tls)
                .unwrap_or_else(|_| {
                    // It parsed at the handshake; should it not now, it proves nothing.
                    Arc::new(ClientCertificate {
                        chain_verified: false,
                        ..(*peer.cert).clone()
                    })
                })
        };
        still_valid(cert)
    }

    fn proxied_cert(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<ClientCertificate>>, ApiError> {
        let format = self.app.config.proxy.header_format;
        let name = &self.app.proxy_header;
        if let Err(why) = self.conn.trusted_proxy(self.app) {
            if proxy_header::is_claimed(format, name, headers) {
                self.app.metrics.proxy_header_untrusted.inc();
                tracing::warn!(
                    peer = %self.conn.peer,
                    header = %name,
                    reason = %why,
                    "ignoring a client-certificate header from a peer that is not a trusted proxy"
                );
            }
            return Ok(None);
        }
        let chain = proxy_header::extract(format, name, headers).map_err(|e| {
            self.app.metrics.proxy_header_malformed.inc();
            ApiError::invalid_request(format!("malformed client certificate header: {e}"))
        })?;
        let Some(chain) = chain else { return Ok(None) };
        self.app
            .tls
            .current()
            .identify(&chain, CertSource::Proxy)
            .map(Some)
            .map_err(|e| {
                self.app.metrics.proxy_header_malformed.inc();
                ApiError::invalid_request(format!("malformed client certificate header: {e}"))
            })
    }
}

/// A handshake identity outlives no certificate: on a long-lived connection, a leaf past
/// its notAfter no longer counts as chain-verified.
fn still_valid(cert: Arc<ClientCertificate>) -> Arc<ClientCertificate> {
    let now = rustls::pki_types::UnixTime::now().as_secs() as i64;
    if cert.chain_verified && now > cert.not_after {
        Arc::new(ClientCertificate {
            chain_verified: false,
            ..(*cert).clone()
        })
    } else {
        cert
    }
}

/// Reads a JSON object body: `application/json`, at most `limit` bytes.
pub async fn json_object(
    req: Request<RequestBody>,
    limit: usize,
    timeout: Duration,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    require_media_type(req.headers(), "application/json")?;
    let bytes = read_body(req, limit, timeout).await?;
    match crate::json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// 415 unless the body is of `media_type` (parameters such as `charset` allowed).
pub fn require_media_type(headers: &HeaderMap, media_type: &str) -> Result<(), ApiError> {
    let matches = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media_type));
    if matches {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            format!("the request body must be {media_type}"),
        ))
    }
}

/// Reads a whole body of at most `limit` bytes (413 beyond) within `timeout` (408 after).
pub async fn read_body(
    req: Request<RequestBody>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(timeout, collect(Limited::new(req.into_body(), limit)))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request body did not arrive in time",
            )
        })?;
    match collected {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::invalid_request(
            "the request body could not be read",
        )),
    }
}

/// A body's data frames as one buffer. A body that arrives in one frame (the usual small
/// request) is that frame, neither copied nor queued.
async fn collect<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> Result<Bytes, B::Error> {
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await.transpose()? {
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        match &mut joined {
            None if first.is_empty() => first = data,
            None => {
                let mut all = Vec::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
            Some(all) => all.extend_from_slice(&data),
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

/// The Bearer token of the `Authorization` header, if any (RFC 6750 §2.1).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Ok(None),
    }
}

/// A JSON response; `no_store` adds the RFC 6749 §5.1 caching headers.
pub fn json_response<T: Serialize + ?Sized>(
    status: StatusCode,
    body: &T,
    no_store: bool,
) -> Response<Body> {
    // Sized for the usual answers (a token, an introspection): written without regrowing.
    let mut bytes = Vec::with_capacity(256);
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes = b"{}".to_vec();
    }
    raw_json(status, Bytes::from(bytes), no_store)
}

fn raw_json(status: StatusCode, bytes: Bytes, no_store: bool) -> Response<Body> {
    let mut resp = Response::new(Body::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if no_store {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that yields the frames it is given, each at once.
    struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[tokio::test]
    async fn a_body_is_its_frames_joined_and_a_single_frame_is_not_copied() {
        let data = |s: &'static str| Ok(Frame::data(Bytes::from_static(s.as_bytes())));
        let trailers = || Ok(Frame::trailers(HeaderMap::new()));
        let one = Bytes::from_static(b"one frame");
        let got = collect(Frames([Ok(Frame::data(one.clone()))].into()))
            .await
            .unwrap();
        assert_eq!(got, one);
        assert_eq!(
            got.as_ptr(),
            one.as_ptr(),
            "a single frame is used as it is"
        );
        for (frames, want) in [
            (vec![data("ab"), data("cd"), data("ef")], "abcdef"),
            (vec![data(""), data("xy")], "xy"),
            (vec![data("ab"), data(""), data("c")], "abc"),
            (vec![data("ab"), trailers()], "ab"),
            (vec![], ""),
        ] {
            let got = collect(Frames(frames.into())).await.unwrap();
            assert_eq!(got, want.as_bytes());
        }
        let failed = collect(Frames([data("ab"), Err("reset")].into())).await;
        assert_eq!(failed, Err("reset"));
    }

    #[test]
    fn a_request_target_is_measured_as_it_is_displayed() {
        for target in [
            "/register",
            "/register/abc?x=1&y=%20",
            "https://gw.example:8443/token?a",
            "http://gw.example/",
            "gw.example:443",
            "*",
            "/?",
        ] {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(target_len(&uri), uri.to_string().len(), "{target}");
        }
    }
}
