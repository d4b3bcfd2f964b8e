//! Edge routes (SPEC §5a): certgate in front of a real upstream (tests/upstream), admitting
//! only active, certificate-bound access tokens, and forwarding with identity headers it
//! sets itself. Every refusal is checked against the upstream's request counter: a refused
//! request never reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod upstream;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use common::*;
use upstream::Upstream;

const TRUSTED: [u8; 4] = [127, 0, 0, 1];

/// The dev admin as a static client (dcr tokens), and routes to `up`.
fn config(up: &Upstream, extra_routes: &str) -> String {
    format!(
        r#"
[registration]
authentication = []

[[clients]]
client_id = "admin"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=admin,O=certgate dev"
scope = "dcrm dcr"
introspect = true

[[routes]]
path_prefix = "/api/"
upstream = "{url}"
required_scope = "api"

[[routes]]
path_prefix = "/api/v2/"
upstream = "{url}/base"
required_scope = "api"
strip_prefix = true

[[routes]]
path_prefix = "/open/"
upstream = "{url}"
timeout = "500ms"
{extra_routes}
"#,
        url = up.url()
    )
}

/// A `tls_client_auth` client of client1's certificate with scope "api read": its tokens
/// are bound to that certificate. Returns (client_id, registration token).
async fn bound_client(s: &Server) -> (String, String) {
    let reg = register(
        s,
        Some("client1"),
        json!({"grant_types": ["client_credentials"], "scope": "api read",
               "token_endpoint_auth_method": "tls_client_auth",
               "tls_client_auth_subject_dn": "CN=client1,O=certgate dev"}),
    )
    .await;
    (
        reg["client_id"].as_str().unwrap().to_owned(),
        reg["registration_access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn token_for(s: &Server, client_id: &str, scope: &str) -> String {
    let r = s
        .tls(Some("client1"))
        .post_form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("scope", scope),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn an_admitted_request_reaches_the_upstream_with_identity_headers_certgate_set() {
    let up = Upstream::start().await;
    let s = Server::start(&config(&up, "")).await;
    let (id, _) = bound_client(&s).await;
    let tok = token_for(&s, &id, "api read").await;
    let a = auth(&tok);
    let spoofed = [
        ("authorization", a.as_str()),
        ("x-client-id", "someone-else"),
        ("x-client-cert-thumbprint", "forged"),
        ("x-token-scope", "admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "gopher"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=6.6.6.6"),
        ("x-ssl-client-cert", "forged"),
        ("connection", "x-hop"),
        ("x-hop", "must go"),
        ("x-app", "kept"),
    ];
    let r = s
        .tls(Some("client1"))
        .get("/api/hello/world?x=1&y=%2F", &spoofed)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body.len(), 1024);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(
        r.header("keep-alive"),
        None,
        "hop-by-hop headers from the upstream pass"
    );
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/api/hello/world?x=1&y=%2F");
    assert_eq!(seen.header("x-client-id"), Some(id.as_str()));
    assert_eq!(
        seen.header("x-client-cert-thumbprint"),
        Some(thumbprint("client1").as_str())
    );
    assert_eq!(seen.header("x-token-scope"), Some("api read"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(s.tls.to_string().as_str())
    );
    assert_eq!(seen.header("x-app"), Some("kept"));
    for gone in [
        "authorization",
        "forwarded",
        "x-ssl-client-cert",
        "connection",
        "x-hop",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen.headers.get_all("x-client-id").iter().count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn strip_prefix_and_the_upstream_base_path_shape_the_forwarded_path() {
    let up = Upstream::start().await;
    let s = Server::start(&config(&up, "")).await;
    let (id, _) = bound_client(&s).await;
    let a = auth(&token_for(&s, &id, "api").await);
    // The longest prefix wins: /api/v2/ strips its prefix and adds the base path.
    let r = s
        .tls(Some("client1"))
        .get("/api/v2/items?q=1", &[("authorization", &a)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().target, "/base/items?q=1");
    let r = s
        .tls(Some("client1"))
        .get("/api/v2/", &[("authorization", &a)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().target, "/base/");
    s.stop().await;
}

#[tokio::test]
async fn refused_requests_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let s = Server::start(&config(&up, "")).await;
    let (id, reg_token) = bound_client(&s).await;
    let tok = token_for(&s, &id, "api read").await;
    let read_only = token_for(&s, &id, "read").await;
    let c1 = s.tls(Some("client1"));
    let check = |r: &Resp, status: StatusCode, error: Option<&str>, challenge: &str| {
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("application/json"));
        if let Some(error) = error {
            assert_eq!(r.json()["error"], error);
        }
        assert_eq!(r.header("www-authenticate"), Some(challenge));
    };
    let invalid = "Bearer realm=\"certgate\", error=\"invalid_token\"";
    // No token: a challenge without an error code.
    check(
        &c1.get("/api/x", &[]).await,
        StatusCode::UNAUTHORIZED,
        None,
        "Bearer realm=\"certgate\"",
    );
    // In the query or as another scheme: not looked at.
    let q = format!("/api/x?access_token={tok}");
    check(
        &c1.get(&q, &[]).await,
        StatusCode::UNAUTHORIZED,
        None,
        "Bearer realm=\"certgate\"",
    );
    // Garbage.
    let r = c1.get("/api/x", &[("authorization", "Bearer nope")]).await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    // The right token with another certificate, or none (directly and by proxy).
    let a = auth(&tok);
    let r = s
        .tls(Some("client2"))
        .get("/api/x", &[("authorization", &a)])
        .await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    let r = s.tls(None).get("/api/x", &[("authorization", &a)]).await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    let r = s
        .proxy_from(TRUSTED)
        .get("/api/x", &[("authorization", &a)])
        .await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    // Without the scope the route requires.
    let r = c1
        .get("/api/x", &[("authorization", &auth(&read_only))])
        .await;
    check(
        &r,
        StatusCode::FORBIDDEN,
        Some("insufficient_scope"),
        "Bearer realm=\"certgate\", error=\"insufficient_scope\"",
    );
    // A registration access token is not an access token.
    let r = c1
        .get("/api/x", &[("authorization", &auth(&reg_token))])
        .await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    // Nor is an initial access token (on a route without a required scope).
    let r = s
        .tls(Some("admin"))
        .post_form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "admin"),
                ("scope", "dcr"),
            ],
        )
        .await;
    let initial = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = s
        .tls(None)
        .get("/open/x", &[("authorization", &auth(&initial))])
        .await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    assert_eq!(up.count(), 0, "a refused request reached the upstream");

    // Revoked.
    let r = c1
        .post_form("/revoke", &[], &[("client_id", &id), ("token", &tok)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c1.get("/api/x", &[("authorization", &a)]).await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    // Expired.
    let fresh = token_for(&s, &id, "api").await;
    assert_eq!(
        c1.get("/api/x", &[("authorization", &auth(&fresh))])
            .await
            .status,
        StatusCode::OK
    );
    s.clock.advance(3601);
    let r = c1.get("/api/x", &[("authorization", &auth(&fresh))]).await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    // Its client deleted.
    let live = token_for(&s, &id, "api").await;
    let mut reg = s
        .tls(Some("client1"))
        .get(
            &format!("/register/{id}"),
            &[("authorization", &auth(&reg_token))],
        )
        .await
        .json();
    let next = reg["registration_access_token"].take();
    let r = c1
        .delete(
            &format!("/register/{id}"),
            &[("authorization", &bearer(&next))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c1.get("/api/x", &[("authorization", &auth(&live))]).await;
    check(&r, StatusCode::UNAUTHORIZED, Some("invalid_token"), invalid);
    assert_eq!(
        up.count(),
        1,
        "only the one admitted request reached the upstream"
    );

    // Counted by reason.
    let metrics = String::from_utf8_lossy(&s.admin().get("/metrics", &[]).await.body).into_owned();
    for line in [
        "certgate_route_refusals_total{route=\"/api/\",reason=\"missing_token\"} 2",
        "certgate_route_refusals_total{route=\"/api/\",reason=\"scope\"} 1",
        "certgate_route_requests_total{route=\"/api/\",status=\"200\"} 1",
        "certgate_route_requests_total{route=\"/api/\",status=\"403\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_unbound_token_is_admitted_without_a_certificate_and_without_a_thumbprint() {
    let up = Upstream::start().await;
    let s = Server::start(&config(&up, "")).await;
    let reg = register(
        &s,
        None,
        json!({"grant_types": ["client_credentials"], "scope": "api"}),
    )
    .await;
    let basic = basic_auth(
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let r = s
        .tls(None)
        .post_form(
            "/token",
            &[("authorization", &basic)],
            &[("grant_type", "client_credentials")],
        )
        .await;
    let tok = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = s
        .tls(None)
        .h2()
        .get("/api/x", &[("authorization", &auth(&tok))])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, http::Version::HTTP_2);
    let seen = up.last();
    assert_eq!(seen.header("x-client-cert-thumbprint"), None);
    assert_eq!(seen.header("x-client-id"), reg["client_id"].as_str());
    // An HTTP/2 client's :authority reaches an HTTP/1.1 upstream as Host.
    assert_eq!(seen.header("host"), Some(s.tls.to_string().as_str()));
    s.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_chain_is_extended() {
    let up = Upstream::start().await;
    let s = Server::start(&config(&up, "")).await;
    let (id, _) = bound_client(&s).await;
    let a = auth(&token_for(&s, &id, "api").await);
    let pem = escaped_pem("client1");
    let r = s
        .proxy_from(TRUSTED)
        .get(
            "/api/x",
            &[
                ("authorization", &a),
                ("x-ssl-client-cert", &pem),
                ("x-forwarded-for", "203.0.113.7, 10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 10.0.0.2, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.example.com"));
    assert_eq!(seen.header("x-ssl-client-cert"), None);
    assert_eq!(
        seen.header("x-client-cert-thumbprint"),
        Some(thumbprint("client1").as_str())
    );
    // Without its own x-forwarded-proto the proxy listener's scheme is used.
    let r = s
        .proxy_from(TRUSTED)
        .get(
            "/api/x",
            &[("authorization", &a), ("x-ssl-client-cert", &pem)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_silent_one_504() {
    let up = Upstream::start().await;
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let extra =
        format!("[[routes]]\npath_prefix = \"/dead/\"\nupstream = \"http://127.0.0.1:{dead}\"\n");
    let s = Server::start(&config(&up, &extra)).await;
    let (id, _) = bound_client(&s).await;
    let a = auth(&token_for(&s, &id, "api").await);
    let r = s
        .tls(Some("client1"))
        .get("/dead/x", &[("authorization", &a)])
        .await;
    assert_error(&r, StatusCode::BAD_GATEWAY, "upstream_unavailable");
    let started = std::time::Instant::now();
    let r = s
        .tls(Some("client1"))
        .get("/open/slow", &[("authorization", &a)])
        .await;
    assert_error(&r, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a hang, not a timeout"
    );
    s.stop().await;
}

#[tokio::test]
async fn certgates_own_paths_always_win_over_a_catch_all_route() {
    let up = Upstream::start().await;
    let extra = "[[routes]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n";
    let s = Server::start(&config(&up, extra)).await;
    let c = s.tls(Some("client1"));
    assert_eq!(c.get("/identity", &[]).await.status, StatusCode::OK);
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(
        c.get("/.well-known/oauth-authorization-server", &[])
            .await
            .status,
        StatusCode::OK
    );
    for own in [
        "/token/x",
        "/.well-known/other",
        "/register/a/b",
        "/healthz/x",
    ] {
        let r = c.get(own, &[]).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    // Anything else belongs to the catch-all (here: no token, so 401).
    let r = c.get("/elsewhere", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The admin listener serves no route.
    assert_eq!(
        s.admin().get("/api/x", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    s.stop().await;
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_upstream_ca_and_spoken_to_in_http2() {
    let up = Upstream::start_tls().await;
    let port = up.addr.port();
    let good = format!(
        "[[routes]]\npath_prefix = \"/tls/\"\nupstream = \"https://localhost:{port}\"\n\
         upstream_ca = \"certs/ca.pem\"\n\
         [[routes]]\npath_prefix = \"/untrusted/\"\nupstream = \"https://localhost:{port}\"\n\
         upstream_ca = \"certs/other-ca.pem\"\n"
    );
    let plain = Upstream::start().await;
    let s = Server::start(&config(&plain, &good)).await;
    let (id, _) = bound_client(&s).await;
    let a = auth(&token_for(&s, &id, "api").await);
    let r = s
        .tls(Some("client1"))
        .get("/tls/x", &[("authorization", &a)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        up.last().version,
        http::Version::HTTP_2,
        "ALPN h2 towards the upstream"
    );
    let before = up.count();
    let r = s
        .tls(Some("client1"))
        .get("/untrusted/x", &[("authorization", &a)])
        .await;
    assert_error(&r, StatusCode::BAD_GATEWAY, "upstream_unavailable");
    assert_eq!(up.count(), before, "an unverified upstream got a request");
    s.stop().await;
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn bodies_stream_both_ways_in_bounded_memory() {
    use http_body_util::BodyExt as _;
    let up = Upstream::start().await;
    let s = Server::start(&config(&up, "")).await;
    let (id, _) = bound_client(&s).await;
    let tok = token_for(&s, &id, "api").await;
    // An upload far larger than what may be held in memory: 1 GiB, generated on the fly.
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096;
    let before = rss_kib();
    let tls = tls_connect(s.tls, Some("client1"), &[b"h2"]).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
    tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![b'u'; CHUNK]);
        for _ in 0..CHUNKS {
            if tx.send(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    let body = ChannelStream(rx);
    let req = http::Request::builder()
        .method(Method::POST)
        .uri("https://localhost/api/upload")
        .header("authorization", auth(&tok))
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(got["received"], (CHUNK * CHUNKS) as u64);
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 128 * 1024,
        "RSS grew by {grown} KiB streaming 1 GiB"
    );

    // An endless event stream: events keep arriving; when the client goes, so does the
    // upstream stream.
    let req = http::Request::builder()
        .uri("/api/events")
        .header("host", "localhost")
        .header("authorization", auth(&tok))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let tls = tls_connect(s.tls, Some("client1"), &[b"http/1.1"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut events = 0;
    while events < 50 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        if frame.data_ref().is_some() {
            events += 1;
        }
    }
    drop(body);
    drop(sender);
    conn.abort();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while up.streams_closed.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the upstream stream outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// An mpsc receiver as a body of data frames.
struct ChannelStream(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelStream {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn behind_a_proxy_speaking_tls_the_scheme_defaults_to_https() {
    let up = Upstream::start().await;
    let toml = format!(
        "{}\n[proxy]\ntls = true\ntrusted_proxy_subjects = [\"CN=proxy,O=certgate dev\"]\n",
        config(&up, "")
    );
    let s = Server::start(&toml).await;
    let (id, _) = bound_client(&s).await;
    let a = auth(&token_for(&s, &id, "api").await);
    let pem = escaped_pem("client1");
    let r = s
        .proxy_tls_from(TRUSTED, Some("proxy"))
        .get(
            "/api/x",
            &[("authorization", &a), ("x-ssl-client-cert", &pem)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("x-client-cert-thumbprint"),
        Some(thumbprint("client1").as_str())
    );
    // The proxy's own certificate admits nothing: without the forwarded one, refused.
    let before = up.count();
    let r = s
        .proxy_tls_from(TRUSTED, Some("proxy"))
        .get("/api/x", &[("authorization", &a)])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), before);
    s.stop().await;
}
