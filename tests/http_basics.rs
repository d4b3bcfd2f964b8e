//! Routing basics every listener shares: 404, 405, health, metrics placement, discovery
//! (SPEC §2, §6a.13, §6a.14).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use http::{Method, StatusCode};
use serde_json::Value;

use common::*;

const TRUSTED: [u8; 4] = [127, 0, 0, 1];

/// Asserts an RFC-style JSON error answer with `status`.
fn assert_json_error(r: &Resp, status: StatusCode) -> Value {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert!(body["error"].is_string(), "{body}");
    body
}

/// The methods an `Allow` header lists.
fn allowed(r: &Resp) -> Vec<String> {
    let allow = r
        .header("allow")
        .unwrap_or_else(|| panic!("405 without Allow: {:?}", r.headers));
    allow.split(',').map(|m| m.trim().to_owned()).collect()
}

#[tokio::test]
async fn unknown_path_is_404_json_on_every_listener() {
    let s = Server::start("").await;
    for (listener, client) in [
        ("tls", s.tls(Some("client1"))),
        ("proxy", s.proxy_from(TRUSTED)),
        ("admin", s.admin()),
    ] {
        for path in ["/nope", "/register/a/b", "/identity/x"] {
            let r = client.get(path, &[]).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{listener} {path}");
            assert_json_error(&r, StatusCode::NOT_FOUND);
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405_json_with_allow() {
    let s = Server::start("").await;
    let tls = s.tls(Some("client1"));

    let r = tls.send(Method::DELETE, "/identity", &[], None).await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    let methods = allowed(&r);
    assert!(methods.contains(&"GET".to_owned()), "{methods:?}");
    assert!(!methods.contains(&"DELETE".to_owned()), "{methods:?}");

    let r = tls.get("/register", &[]).await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allowed(&r), ["POST"]);

    let r = tls
        .send(
            Method::POST,
            "/.well-known/oauth-authorization-server",
            &[],
            None,
        )
        .await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    assert!(allowed(&r).contains(&"GET".to_owned()));

    let r = tls
        .send(Method::POST, "/register/some-client", &[], None)
        .await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    let methods = allowed(&r);
    for m in ["GET", "PUT", "DELETE"] {
        assert!(methods.contains(&m.to_owned()), "{methods:?}");
    }

    let r = s.admin().send(Method::POST, "/metrics", &[], None).await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    assert!(allowed(&r).contains(&"GET".to_owned()));
    s.stop().await;
}

#[tokio::test]
async fn healthz_is_200_json_on_tls_proxy_and_admin_listeners() {
    let s = Server::start("").await;
    for (listener, client) in [
        ("tls", s.tls(None)),
        ("proxy", s.proxy_from(TRUSTED)),
        ("admin", s.admin()),
    ] {
        let r = client.get("/healthz", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{listener}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{listener}"
        );
        assert!(r.json().is_object(), "{listener}");
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_are_never_served_on_the_public_listeners() {
    let s = Server::start("").await;
    let r = s.tls(Some("client1")).get("/metrics", &[]).await;
    assert_json_error(&r, StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&r.body).contains("certgate_"));
    let r = s.proxy_from(TRUSTED).get("/metrics", &[]).await;
    assert_json_error(&r, StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&r.body).contains("certgate_"));
    s.stop().await;
}

#[tokio::test]
async fn metrics_on_the_admin_listener_are_prometheus_text_with_certgate_prefix() {
    let s = Server::start("").await;
    let r = s.admin().get("/metrics", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("certgate_"), "{text}");
    // SPEC §6a.14 names this counter; it exists before any spoof attempt.
    assert_eq!(
        metric_value(&text, "certgate_proxy_header_untrusted_total"),
        0.0
    );
    s.stop().await;
}

#[tokio::test]
async fn discovery_document_carries_the_rfc8414_and_rfc8705_fields() {
    let s = Server::start("[server]\nissuer = \"https://auth.example.test\"\n").await;
    let r = s
        .tls(None)
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["issuer"], "https://auth.example.test");
    assert_eq!(
        doc["registration_endpoint"],
        "https://auth.example.test/register"
    );
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
    let methods: Vec<&str> = doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap_or_else(|| panic!("token_endpoint_auth_methods_supported: {doc}"))
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in ["tls_client_auth", "self_signed_tls_client_auth"] {
        assert!(methods.contains(&m), "{methods:?}");
    }
    let aliases = doc["mtls_endpoint_aliases"]
        .as_object()
        .unwrap_or_else(|| panic!("mtls_endpoint_aliases: {doc}"));
    assert_eq!(
        aliases["registration_endpoint"],
        "https://auth.example.test/register"
    );
    s.stop().await;
}

#[tokio::test]
async fn discovery_mtls_aliases_use_mtls_issuer_for_every_advertised_endpoint() {
    let s = Server::start(
        "[server]\nissuer = \"https://auth.example.test\"\nmtls_issuer = \"https://mtls.example.test\"\n",
    )
    .await;
    let r = s
        .proxy_from(TRUSTED)
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    let aliases = doc["mtls_endpoint_aliases"].as_object().unwrap();
    assert_eq!(
        aliases["registration_endpoint"],
        "https://mtls.example.test/register"
    );
    assert_eq!(
        doc["registration_endpoint"],
        "https://auth.example.test/register"
    );
    // SPEC §6a.13: whichever of these endpoints the document advertises has an mTLS alias
    // on the same path under mtls_issuer.
    for key in [
        "token_endpoint",
        "registration_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
    ] {
        if let Some(url) = doc[key].as_str() {
            let path = url.strip_prefix("https://auth.example.test").unwrap();
            assert_eq!(
                aliases.get(key).and_then(Value::as_str),
                Some(format!("https://mtls.example.test{path}").as_str()),
                "{key} in {doc}"
            );
        }
    }
    s.stop().await;
}
