//! The certificate identity on the TLS listener (SPEC §1, `GET /identity`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use common::*;

#[tokio::test]
async fn tls_thumbprint_is_base64url_sha256_of_the_leaf_der() {
    let s = Server::start("").await;
    let cert = identity_of(&s.tls(Some("client1")).get("/identity", &[]).await);
    let x5t = cert["x5t#S256"].as_str().unwrap();
    assert_eq!(x5t, thumbprint("client1"));
    // base64url of 32 bytes without padding is 43 characters of the URL-safe alphabet.
    assert_eq!(x5t.len(), 43);
    assert!(!x5t.contains(['=', '+', '/']), "{x5t}");
    s.stop().await;
}

#[tokio::test]
async fn tls_identity_has_rfc4514_subject_sans_chain_status_and_source() {
    let s = Server::start("").await;
    let cert = identity_of(&s.tls(Some("client1")).get("/identity", &[]).await);
    assert_eq!(cert["subject"], "CN=client1,O=certgate dev");
    assert_eq!(
        cert["san"],
        json!({
            "dns": ["client1.example.com"],
            "uri": ["https://client1.example.com/app"],
            "ip": ["192.0.2.1"],
            "email": ["client1@example.com"],
        })
    );
    assert_eq!(cert["chain_verified"], true);
    assert_eq!(cert["source"], "tls");
    s.stop().await;
}

#[tokio::test]
async fn each_client_certificate_gets_its_own_identity() {
    let s = Server::start("").await;
    let one = identity_of(&s.tls(Some("client1")).get("/identity", &[]).await);
    let two = identity_of(&s.tls(Some("client2")).get("/identity", &[]).await);
    assert_eq!(two["x5t#S256"], thumbprint("client2"));
    assert_eq!(two["subject"], "CN=client2,O=certgate dev");
    assert_ne!(one["x5t#S256"], two["x5t#S256"]);
    s.stop().await;
}

#[tokio::test]
async fn no_client_certificate_gives_null_identity() {
    let s = Server::start("").await;
    let r = s.tls(None).get("/identity", &[]).await;
    assert_eq!(identity_of(&r), Value::Null);
    assert_eq!(r.json(), json!({ "certificate": null }));
    s.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_accepted_but_not_chain_verified() {
    let s = Server::start("").await;
    let cert = identity_of(&s.tls(Some("untrusted")).get("/identity", &[]).await);
    assert_eq!(cert["x5t#S256"], thumbprint("untrusted"));
    assert_eq!(cert["subject"], "CN=untrusted,O=elsewhere");
    assert_eq!(cert["chain_verified"], false);
    assert_eq!(cert["source"], "tls");
    s.stop().await;
}

#[tokio::test]
async fn self_signed_certificate_is_accepted_with_its_thumbprint_but_not_chain_verified() {
    let s = Server::start("").await;
    let cert = identity_of(&s.tls(Some("selfsigned")).get("/identity", &[]).await);
    assert_eq!(cert["x5t#S256"], thumbprint("selfsigned"));
    assert_eq!(cert["subject"], "CN=selfsigned,O=certgate dev");
    assert_eq!(cert["san"]["dns"], json!(["selfsigned.example.com"]));
    assert_eq!(cert["chain_verified"], false);
    s.stop().await;
}

#[tokio::test]
async fn http2_over_alpn_carries_the_handshake_identity() {
    let s = Server::start("").await;
    let r = s.tls(Some("client1")).h2().get("/identity", &[]).await;
    assert_eq!(r.version, Version::HTTP_2);
    let cert = identity_of(&r);
    assert_eq!(cert["x5t#S256"], thumbprint("client1"));
    assert_eq!(cert["subject"], "CN=client1,O=certgate dev");
    assert_eq!(cert["chain_verified"], true);
    assert_eq!(cert["source"], "tls");

    let anonymous = s.tls(None).h2().get("/identity", &[]).await;
    assert_eq!(anonymous.version, Version::HTTP_2);
    assert_eq!(identity_of(&anonymous), Value::Null);
    s.stop().await;
}

/// One GET /identity over a fresh TLS connection, reporting a failure of the handshake or of
/// the request instead of panicking (with TLS 1.3 the server's rejection of the client's
/// certificate flight only surfaces on the first read).
async fn try_identity(addr: SocketAddr, cert: Option<&str>) -> Result<(StatusCode, Value), String> {
    let config = client_config(cert, &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e:?}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get("/identity")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let json = serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    Ok((status, json))
}

#[tokio::test]
async fn required_client_auth_rejects_a_handshake_without_certificate() {
    let s = Server::start("[tls]\nclient_auth = \"required\"\n").await;
    let without = try_identity(s.tls, None).await;
    let err = without.expect_err("a connection without a client certificate must fail");
    // The server refuses at the TLS layer (TLS 1.3: a certificate_required alert on the
    // first read), not with some later HTTP or I/O failure.
    assert!(err.contains("AlertReceived"), "{err}");

    let (status, body) = try_identity(s.tls, Some("client1")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["certificate"]["x5t#S256"], thumbprint("client1"));
    s.stop().await;
}

#[tokio::test]
async fn required_client_auth_still_accepts_a_self_signed_certificate() {
    // "required" demands a certificate, not one from tls.client_ca (SPEC §1: rustls accepts
    // any certificate whose handshake signature verifies).
    let s = Server::start("[tls]\nclient_auth = \"required\"\n").await;
    let (status, body) = try_identity(s.tls, Some("selfsigned")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["certificate"]["x5t#S256"], thumbprint("selfsigned"));
    assert_eq!(body["certificate"]["chain_verified"], false);
    s.stop().await;
}

#[tokio::test]
async fn optional_client_auth_accepts_a_handshake_without_certificate() {
    let s = Server::start("[tls]\nclient_auth = \"optional\"\n").await;
    let (status, body) = try_identity(s.tls, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "certificate": null }));
    s.stop().await;
}

/// client2's PEM the way nginx's `$ssl_client_escaped_cert` would forward it.
fn client2_proxy_header() -> String {
    utf8_percent_encode(&pem_text("client2"), NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn proxy_header_on_the_tls_listener_does_not_replace_the_handshake_certificate() {
    let s = Server::start("").await;
    let header = client2_proxy_header();
    let r = s
        .tls(Some("client1"))
        .get("/identity", &[("x-ssl-client-cert", &header)])
        .await;
    let cert = identity_of(&r);
    assert_eq!(cert["x5t#S256"], thumbprint("client1"));
    assert_eq!(cert["subject"], "CN=client1,O=certgate dev");
    assert_eq!(cert["source"], "tls");
    s.stop().await;
}

#[tokio::test]
async fn proxy_header_on_the_tls_listener_without_handshake_certificate_is_ignored() {
    let s = Server::start("").await;
    let header = client2_proxy_header();
    let r = s
        .tls(None)
        .get("/identity", &[("x-ssl-client-cert", &header)])
        .await;
    assert_eq!(identity_of(&r), Value::Null);

    // Also for a format with a header of its own, and for a value that is not even valid:
    // the TLS listener never reads these headers, so it never rejects them either.
    let s2 = Server::start("[proxy]\nheader_format = \"rfc9440\"\n").await;
    let rfc9440 = format!(":{}:", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(der("client2"))
    });
    let r = s2
        .tls(None)
        .get("/identity", &[("client-cert", &rfc9440)])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    let r = s2
        .tls(None)
        .get("/identity", &[("client-cert", "::")])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    s2.stop().await;
    s.stop().await;
}
