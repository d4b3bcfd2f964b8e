//! Test harness: the real server on loopback sockets, and a real TLS client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

use certgate::clock::ManualClock;
use certgate::{Config, Listeners};

/// A running certgate on 127.0.0.1 ephemeral ports.
pub struct Server {
    /// The running gateway's state (for reloads and dumps).
    pub app: Arc<certgate::App>,
    pub tls: SocketAddr,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Start time of the injected clock (2026-01-01).
pub const T0: u64 = 1_767_225_600;

impl Server {
    /// Starts the server with `toml` (any subset of the config file; listeners are
    /// replaced by ephemeral loopback ports).
    pub async fn start(toml: &str) -> Self {
        let config = Config::parse(toml).expect("test config is valid");
        Self::start_with(config).await
    }

    /// Starts the server with a parsed config.
    pub async fn start_with(config: Config) -> Self {
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Bound to all of 127.0.0.0/8 so tests can connect from 127.0.0.2 (untrusted).
        let proxy = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (
            tls.local_addr().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], proxy.local_addr().unwrap().port())),
            admin.local_addr().unwrap(),
        );
        let clock = Arc::new(ManualClock::new(T0));
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            tls,
            proxy: Some(proxy),
            admin: Some(admin),
        };
        let app = Arc::new(certgate::App::start(config, clock.clone()).unwrap());
        let served = app.clone();
        let task = tokio::spawn(async move {
            let _ = certgate::serve(served, listeners, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            app,
            tls: addrs.0,
            proxy: addrs.1,
            admin: addrs.2,
            clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client for the TLS listener presenting `cert` (a dev PKI name such as
    /// "client1", or None).
    pub fn tls(&self, cert: Option<&str>) -> Client {
        Client {
            target: Target::Tls(self.tls, cert.map(str::to_owned), false, None),
        }
    }

    /// A TLS client for the proxy listener (`proxy.tls = true`), connecting from `source`
    /// and presenting `cert` as the proxy's own certificate.
    pub fn proxy_tls_from(&self, source: [u8; 4], cert: Option<&str>) -> Client {
        Client {
            target: Target::Tls(self.proxy, cert.map(str::to_owned), false, Some(source)),
        }
    }

    /// A plain-HTTP client for the proxy listener, connecting from `source` (127.0.0.1 is
    /// a trusted proxy in the default config; 127.0.0.2 is not).
    pub fn proxy_from(&self, source: [u8; 4]) -> Client {
        Client {
            target: Target::Plain(self.proxy, Some(source)),
        }
    }

    /// A plain-HTTP client for the admin listener.
    pub fn admin(&self) -> Client {
        Client {
            target: Target::Plain(self.admin, None),
        }
    }

    /// Graceful stop; waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

#[derive(Clone)]
enum Target {
    /// Address, client certificate, HTTP/2, source address.
    Tls(SocketAddr, Option<String>, bool, Option<[u8; 4]>),
    Plain(SocketAddr, Option<[u8; 4]>),
}

/// Sends requests over fresh connections.
#[derive(Clone)]
pub struct Client {
    target: Target,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// ALPN protocol used (TLS only).
    pub version: http::Version,
}

impl Resp {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reads one of the dev PKI's certificates.
pub fn pem_cert(name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(Path::new("certs").join(format!("{name}.pem"))).unwrap()
}

/// The DER of a dev PKI certificate.
pub fn der(name: &str) -> Vec<u8> {
    pem_cert(name).as_ref().to_vec()
}

/// The `x5t#S256` of a dev PKI certificate, computed independently of certgate.
pub fn thumbprint(name: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der(name)))
}

/// A rustls client config trusting the dev CA, presenting `cert` if given.
pub fn client_config(cert: Option<&str>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_cert("ca")).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(name) => {
            // A dev PKI name, or an absolute path prefix (`/tmp/x/cert` for `cert.pem` and
            // `cert-key.pem`) of a certificate a test made.
            let prefix = if name.starts_with('/') {
                name.to_owned()
            } else {
                format!("certs/{name}")
            };
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(format!("{prefix}.pem"))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_file(format!("{prefix}-key.pem")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

impl Client {
    /// Same client over HTTP/2 (ALPN h2).
    pub fn h2(&self) -> Client {
        let mut c = self.clone();
        if let Target::Tls(a, cert, _, source) = &self.target {
            c.target = Target::Tls(*a, cert.clone(), true, *source);
        }
        c
    }

    /// GET `path`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers, None).await
    }

    /// POST a JSON body.
    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        self.send(Method::POST, path, &h, Some(body.to_string().into_bytes()))
            .await
    }

    /// Any request.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let host = match &self.target {
            Target::Tls(a, ..) | Target::Plain(a, _) => a.to_string(),
        };
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", host);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        match &self.target {
            Target::Tls(addr, cert, h2, source) => {
                let alpn: &[&[u8]] = if *h2 { &[b"h2"] } else { &[b"http/1.1"] };
                let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(
                    cert.as_deref(),
                    alpn,
                )));
                let tcp = connect_from(*addr, *source).await;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .expect("TLS handshake");
                if *h2 {
                    let (mut sender, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        TokioIo::new(tls),
                    )
                    .await
                    .unwrap();
                    tokio::spawn(conn);
                    collect(sender.send_request(req).await.unwrap()).await
                } else {
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    collect(sender.send_request(req).await.unwrap()).await
                }
            }
            Target::Plain(addr, source) => {
                let tcp = connect_from(*addr, *source).await;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                collect(sender.send_request(req).await.unwrap()).await
            }
        }
    }
}

/// A TCP connection to `addr`, from `source` when given (127.0.0.2 plays an untrusted peer).
async fn connect_from(addr: SocketAddr, source: Option<[u8; 4]>) -> TcpStream {
    match source {
        Some(ip) => {
            let s = TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((ip, 0))).unwrap();
            s.connect(addr).await.unwrap()
        }
        None => TcpStream::connect(addr).await.unwrap(),
    }
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A raw TLS connection to `addr` presenting `cert`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    cert: Option<&str>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(cert, alpn)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the peer closes (EOF or reset), discarding what arrives; `false` if it is
/// still open after `within`.
pub async fn closed_within(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    within: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Writes raw bytes and reads one HTTP/1.1 response (head and a Content-Length body).
pub async fn raw_exchange(
    io: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    request: &[u8],
) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncWriteExt as _;
    io.write_all(request).await.unwrap();
    read_response(io).await
}

/// Reads one HTTP/1.1 response: (status, head, body by Content-Length). Status 0 when the
/// connection closed first.
pub async fn read_response(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return (0, String::from_utf8_lossy(&buf).into_owned(), Vec::new()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    (status, head, body)
}

/// Registers a client over TLS with `cert`, asserting 201; returns the response JSON.
pub async fn register(server: &Server, cert: Option<&str>, body: Value) -> Value {
    let r = server.tls(cert).post_json("/register", &[], &body).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// `Authorization: Bearer` header value.
pub fn bearer(token: &Value) -> String {
    format!("Bearer {}", token.as_str().unwrap())
}

// === helpers for the identity, proxy-header and HTTP tests ===

/// The PEM text of a dev PKI certificate file.
pub fn pem_text(name: &str) -> String {
    std::fs::read_to_string(Path::new("certs").join(format!("{name}.pem"))).unwrap()
}

/// Hex SHA-256 of a dev PKI certificate's DER (the XFCC `Hash` form).
pub fn hex_sha256(name: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der(name))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `certificate` member of a `GET /identity` answer, asserting 200 JSON first.
pub fn identity_of(r: &Resp) -> Value {
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET /identity: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()["certificate"].clone()
}

/// The value of an unlabelled sample (e.g. `certgate_proxy_header_untrusted_total`) in
/// Prometheus text; panics if the metric is missing.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("metric {name} not in /metrics:\n{text}"))
}

/// Reads one unlabelled sample from the admin listener's `/metrics`.
pub async fn admin_metric(server: &Server, name: &str) -> f64 {
    let r = server.admin().get("/metrics", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    metric_value(&String::from_utf8_lossy(&r.body), name)
}

// === helpers for the registration and management tests ===

/// The `x-ssl-client-cert` value a trusted nginx sends for a dev PKI certificate
/// (`$ssl_client_escaped_cert`: the PEM, percent-encoded).
pub fn escaped_pem(name: &str) -> String {
    let pem = std::fs::read_to_string(Path::new("certs").join(format!("{name}.pem"))).unwrap();
    percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Standard base64 of a dev PKI certificate's DER, as a JWK `x5c` entry holds it.
pub fn x5c(name: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der(name))
}

/// The public JWK (RFC 7517) of a dev PKI certificate's P-256 key, with the certificate in
/// `x5c`: what a client registers for `self_signed_tls_client_auth`.
pub fn jwk(name: &str) -> Value {
    use base64::Engine as _;
    use x509_parser::prelude::FromDer as _;
    let der = der(name);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    let point = cert.public_key().subject_public_key.data.to_vec();
    assert_eq!(
        point.len(),
        65,
        "{name}: the dev PKI uses uncompressed P-256 points"
    );
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    serde_json::json!({
        "kty": "EC", "crv": "P-256",
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
        "x5c": [x5c(name)],
    })
}

/// The number of registered clients `/healthz` reports (admin listener).
pub async fn client_count(server: &Server) -> u64 {
    let r = server.admin().get("/healthz", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the server still answers /healthz"
    );
    r.json()["clients"]
        .as_u64()
        .expect("/healthz reports a clients count")
}

/// Asserts a JSON error answer: exact status, `error` code, `Content-Type: application/json`.
pub fn assert_error(r: &Resp, status: StatusCode, error: &str) {
    assert_eq!(
        r.status,
        status,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json()["error"],
        error,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Asserts the caching headers every answer carrying a token or secret needs.
pub fn assert_no_store(r: &Resp) {
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
}

impl Client {
    /// PUT a JSON body.
    pub async fn put_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        self.send(Method::PUT, path, &h, Some(body.to_string().into_bytes()))
            .await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::DELETE, path, headers, None).await
    }
}

// === helpers for the token and dcrm tests ===

/// Lower-case hex SHA-256 of a string (a static client's `client_secret_sha256`).
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An `application/x-www-form-urlencoded` body; `params` may repeat a name.
pub fn form_encode(params: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    out.finish()
}

/// `Authorization: Basic` for client credentials: id and secret are form-encoded before
/// they are joined and base64-encoded (RFC 6749 §2.3.1).
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Asserts an RFC 6750 bearer failure: exact status and `error`, JSON body, and a
/// `WWW-Authenticate: Bearer` challenge naming the same error.
pub fn assert_bearer_error(r: &Resp, status: StatusCode, error: &str) {
    assert_error(r, status, error);
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{status} without WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&format!("error=\"{error}\"")),
        "WWW-Authenticate: {challenge}"
    );
}

impl Client {
    /// POST an `application/x-www-form-urlencoded` body.
    pub async fn post_form(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        params: &[(&str, &str)],
    ) -> Resp {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/x-www-form-urlencoded"));
        self.send(
            Method::POST,
            path,
            &h,
            Some(form_encode(params).into_bytes()),
        )
        .await
    }
}

// === shared by the token and dcrm tests ===

/// Introspects `tok` as the static admin (introspect = true), asserting 200.
pub async fn introspect_as_admin(s: &Server, tok: &str) -> Value {
    let r = s
        .tls(Some("admin"))
        .post_form(
            "/introspect",
            &[],
            &[("client_id", "admin"), ("token", tok)],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_no_store(&r);
    r.json()
}

/// One plain, blocking HTTP/1.1 `GET /healthz` on `127.0.0.1:port` (for tests that run the
/// real binary).
pub fn healthz_ok(port: u16) -> bool {
    use std::io::{Read as _, Write as _};

    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
