//! Limits that hold against silent, slow and greedy clients (SPEC §8, `[limits]`): silent
//! and idle connections are closed on every listener and protocol, head and body sizes are
//! answered (431 / 413) in a way the client can read, each listener has exactly its own
//! `max_connections`, and HTTP/2 streams are capped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use common::*;

const TRUSTED: [u8; 4] = [127, 0, 0, 1];

fn healthz_request() -> Vec<u8> {
    b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec()
}

#[tokio::test]
async fn silent_tls_connection_is_closed_after_header_read_timeout() {
    let s = Server::start("[limits]\nheader_read_timeout = \"300ms\"\n").await;
    for alpn in [&[b"http/1.1".as_slice()][..], &[b"h2"], &[]] {
        let mut tls = tls_connect(s.tls, Some("client1"), alpn).await;
        assert!(
            closed_within(&mut tls, Duration::from_secs(5)).await,
            "a TLS connection (ALPN {alpn:?}) that sends nothing stays open"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn silent_plain_connections_are_closed_on_the_proxy_and_admin_listeners() {
    let s = Server::start("[limits]\nheader_read_timeout = \"300ms\"\n").await;
    for addr in [s.proxy, s.admin] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut tcp, Duration::from_secs(5)).await,
            "a plain connection to {addr} that sends nothing stays open"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_head_sent_byte_by_byte_is_cut_at_header_read_timeout() {
    let s = Server::start("[limits]\nheader_read_timeout = \"500ms\"\n").await;
    let mut tcp = TcpStream::connect(s.proxy).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in head.iter() {
        if tcp.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Either the writes failed, or the answer is the closed connection, not a 200.
    if !cut {
        let (status, _, _) = read_response(&mut tcp).await;
        assert_eq!(status, 0, "a head trickling in for 4 s was served");
    }
    s.stop().await;
}

#[tokio::test]
async fn keep_alive_outlives_the_header_timeout_but_not_idle_timeout() {
    let s = Server::start("[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"1500ms\"\n")
        .await;
    let mut tls = tls_connect(s.tls, Some("client1"), &[b"http/1.1"]).await;
    let (status, _, _) = raw_exchange(&mut tls, &healthz_request()).await;
    assert_eq!(status, 200);
    // Idle for longer than the header timeout: idle_timeout governs between requests.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _, _) = raw_exchange(&mut tls, &healthz_request()).await;
    assert_eq!(
        status, 200,
        "an idle keep-alive connection was cut at the header timeout"
    );
    assert!(
        closed_within(&mut tls, Duration::from_secs(6)).await,
        "an idle HTTP/1.1 connection outlived idle_timeout"
    );
    s.stop().await;
}

/// An HTTP/2 client connection (hyper answers PINGs for us) and the task driving it.
async fn h2_client(
    s: &Server,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tls = tls_connect(s.tls, Some("client1"), &[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

#[tokio::test]
async fn http2_connection_that_only_answers_pings_is_closed_when_idle() {
    let s = Server::start("[limits]\nidle_timeout = \"800ms\"\n").await;
    let (mut sender, task) = h2_client(&s).await;
    let req = http::Request::get("https://localhost/healthz")
        .body(http_body_util::Full::default())
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(r);
    // The client keeps PINGing; no request follows.
    let closed = tokio::time::timeout(Duration::from_secs(8), task).await;
    assert!(
        closed.is_ok(),
        "an HTTP/2 connection answering PINGs held its slot past idle_timeout"
    );
    s.stop().await;
}

#[tokio::test]
async fn http2_connection_without_a_request_is_closed_after_header_read_timeout() {
    let s = Server::start("[limits]\nheader_read_timeout = \"400ms\"\n").await;
    let (_sender, task) = h2_client(&s).await;
    let closed = tokio::time::timeout(Duration::from_secs(6), task).await;
    assert!(
        closed.is_ok(),
        "an HTTP/2 connection that never opened a stream stayed open"
    );
    s.stop().await;
}

#[tokio::test]
async fn max_concurrent_streams_is_what_http2_clients_are_told() {
    let s = Server::start("[limits]\nmax_concurrent_streams = 7\n").await;
    let tls = tls_connect(s.tls, Some("client1"), &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("https://localhost/healthz")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    // After a round trip the server's SETTINGS have been applied.
    assert_eq!(client.current_max_send_streams(), 7);
    s.stop().await;
}

#[tokio::test]
async fn a_head_over_max_header_bytes_is_431_json_on_http1_and_http2() {
    let s = Server::start("[limits]\nmax_header_bytes = 4096\n").await;
    let big = "a".repeat(5000);
    for client in [s.tls(Some("client1")), s.tls(Some("client1")).h2()] {
        let r = client.get("/healthz", &[("x-big", &big)]).await;
        assert_error(
            &r,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request",
        );
        // Just under the limit is fine.
        let r = client
            .get("/healthz", &[("x-big", &"a".repeat(3000))])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.version);
    }
    // Many small headers count too.
    let many: Vec<(String, String)> = (0..90)
        .map(|i| (format!("x-h{i}"), "v".repeat(50)))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = s.proxy_from(TRUSTED).get("/healthz", &refs).await;
    assert_error(
        &r,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "invalid_request",
    );
    // More than the HTTP/1 parser's 100 fields: its own (bare) 431.
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = s.proxy_from(TRUSTED).get("/healthz", &refs).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    s.stop().await;
}

#[tokio::test]
async fn max_connections_serves_exactly_n_per_listener() {
    const N: usize = 4;
    let s = Server::start(&format!("[limits]\nmax_connections = {N}\n")).await;
    let mut held = Vec::new();
    for _ in 0..N {
        let mut tls = tls_connect(s.tls, Some("client1"), &[b"http/1.1"]).await;
        let (status, _, _) = raw_exchange(&mut tls, &healthz_request()).await;
        assert_eq!(
            status,
            200,
            "connection {} of {N} was not served",
            held.len() + 1
        );
        held.push(tls);
    }
    // One more waits: its handshake cannot complete while N are open.
    let waiting = tokio::spawn({
        let addr = s.tls;
        async move {
            let mut tls = tls_connect(addr, Some("client1"), &[b"http/1.1"]).await;
            raw_exchange(&mut tls, &healthz_request()).await.0
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "connection N+1 was served while N were open"
    );
    // The TLS listener being full starves nobody on the proxy listener.
    let r = s.proxy_from(TRUSTED).get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // A slot freed is a slot used.
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("connection N+1 is served once a slot is free")
        .unwrap();
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_tls_flood_of_silent_connections_cannot_starve_the_proxy_listener() {
    let s = Server::start("[limits]\nmax_connections = 50\nheader_read_timeout = \"30s\"\n").await;
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(tls_connect(s.tls, None, &[b"http/1.1"]).await);
    }
    let r = s.proxy_from(TRUSTED).get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.admin().get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    drop(flood);
    s.stop().await;
}

#[tokio::test]
async fn a_413_is_readable_by_a_client_still_sending_its_body() {
    let s = Server::start("[registration]\nauthentication = []\nmax_body_bytes = 1024\n").await;
    for round in 0..5 {
        let tls = tls_connect(s.tls, Some("client1"), &[b"http/1.1"]).await;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let body_len = 8 << 20;
        let writer = tokio::spawn(async move {
            let head = format!(
                "POST /register HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                 content-length: {body_len}\r\n\r\n"
            );
            wr.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..(body_len / chunk.len()) {
                wr.write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let (status, head, body) = read_response(&mut rd).await;
        assert_eq!(status, 413, "round {round}: {head:?}");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        assert_eq!(json["error"], "invalid_request");
        writer.abort();
    }
    // The limit also holds for bodies without a Content-Length (chunked).
    let r = s
        .tls(Some("client1"))
        .post_json("/register", &[], &json!({"client_name": "x".repeat(4096)}))
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn five_hundred_idle_or_trickling_connections_do_not_stop_a_registration() {
    let s = Server::start("[limits]\nheader_read_timeout = \"20s\"\n").await;
    let mut idle = Vec::new();
    for i in 0..250 {
        if i % 2 == 0 {
            idle.push(tokio::spawn({
                let addr = s.tls;
                async move {
                    let mut tls = tls_connect(addr, None, &[b"http/1.1"]).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let _ = tls.write_all(b"x").await;
                }
            }));
        } else {
            idle.push(tokio::spawn({
                let addr = s.proxy;
                async move {
                    let mut tcp = TcpStream::connect(addr).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let _ = tcp.write_all(b"x").await;
                }
            }));
        }
    }
    for _ in 0..250 {
        idle.push(tokio::spawn({
            let addr = s.tls;
            async move {
                let mut tls = tls_connect(addr, Some("client2"), &[b"http/1.1"]).await;
                for b in b"POST /register HTTP/1.1\r\nhost: localhost\r\n"
                    .iter()
                    .cycle()
                    .take(300)
                {
                    if tls.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    // Let the crowd settle in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reg = register(
        &s,
        Some("client1"),
        json!({"grant_types": ["client_credentials"]}),
    )
    .await;
    assert!(reg["client_id"].is_string());
    let r = s.proxy_from(TRUSTED).get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    for task in idle {
        task.abort();
    }
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_form_at_the_token_endpoint_is_413_after_basic_auth_fails_first() {
    let s = Server::start("").await;
    // Wrong Basic credentials: 401 before the (huge, never sent) body is waited for.
    let mut tls = tls_connect(s.tls, Some("client1"), &[b"http/1.1"]).await;
    let head = "POST /token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                authorization: Basic bm9ib2R5Om5vdGhpbmc=\r\ncontent-length: 1000000\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), read_response(&mut tls)).await;
    let (status, head, _) = answered.expect("401 without waiting for the body");
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"certgate\""),
        "{head}"
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(100), tls.read_to_end(&mut rest)).await;
    s.stop().await;
}
