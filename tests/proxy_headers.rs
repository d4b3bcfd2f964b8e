//! mutual-tls-by-proxy: the six header formats, malformed values, and the trusted-peer rule
//! (SPEC §1, §6a.10, §6a.14, §6a.22).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use common::*;

const TRUSTED: [u8; 4] = [127, 0, 0, 1];
const UNTRUSTED: [u8; 4] = [127, 0, 0, 2];
const UNTRUSTED_METRIC: &str = "certgate_proxy_header_untrusted_total";

/// nginx `$ssl_client_escaped_cert`: everything but the RFC 3986 unreserved set is escaped.
const NGINX: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// AWS ALB `X-Amzn-Mtls-Clientcert`: like nginx but `+`, `=` and `/` stay literal.
const ALB: &AsciiSet = &NGINX.remove(b'+').remove(b'=').remove(b'/');

fn nginx_escaped(name: &str) -> String {
    utf8_percent_encode(&pem_text(name), NGINX).to_string()
}

fn b64_der(name: &str) -> String {
    STANDARD.encode(der(name))
}

/// Envoy's XFCC element for `name`, with `Hash` and URL-encoded `Cert`.
fn xfcc_element(name: &str) -> String {
    format!(
        "By=spiffe://x;Hash={};Cert=\"{}\";Subject=\"O=certgate dev,CN={name}\"",
        hex_sha256(name),
        nginx_escaped(name)
    )
}

async fn start(format: &str) -> Server {
    Server::start(&format!("[proxy]\nheader_format = \"{format}\"\n")).await
}

/// What the TLS listener says about `name`, with `source` switched to "proxy": a proxied
/// certificate must yield exactly the identity a direct handshake yields.
async fn tls_identity_as_proxied(s: &Server, name: &str) -> Value {
    let mut want = identity_of(&s.tls(Some(name)).get("/identity", &[]).await);
    assert_eq!(want["source"], "tls");
    want["source"] = "proxy".into();
    want
}

/// Sends `headers` from the trusted proxy and asserts the identity is client1's.
async fn assert_proxied_client1(s: &Server, headers: &[(&str, &str)]) {
    let got = identity_of(&s.proxy_from(TRUSTED).get("/identity", headers).await);
    assert_eq!(got["x5t#S256"], thumbprint("client1"), "{got}");
    assert_eq!(got["subject"], "CN=client1,O=certgate dev");
    assert_eq!(got["chain_verified"], true);
    assert_eq!(got["source"], "proxy");
    assert_eq!(got, tls_identity_as_proxied(s, "client1").await);
}

/// Asserts `headers` from the trusted proxy are a 400 `invalid_request` JSON error, and that
/// the server then still answers `valid` with client1's identity.
async fn assert_malformed(s: &Server, headers: &[(&str, &str)], valid: &[(&str, &str)]) {
    let r = s.proxy_from(TRUSTED).get("/identity", headers).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_proxied_client1(s, valid).await;
}

// === formats ===

#[tokio::test]
async fn pem_urlencoded_is_the_default_format_and_header() {
    let s = Server::start("").await;
    let value = nginx_escaped("client1");
    assert_proxied_client1(&s, &[("x-ssl-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn pem_urlencoded_nginx_escaped_cert_gives_the_tls_identity() {
    let s = start("pem-urlencoded").await;
    let value = nginx_escaped("client1");
    assert!(value.contains("%0A") && value.contains("%20"), "{value}");
    assert_proxied_client1(&s, &[("x-ssl-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn pem_urlencoded_alb_style_keeps_plus_equals_slash_literal_and_plus_is_not_a_space() {
    let s = start("pem-urlencoded").await;
    let value = utf8_percent_encode(&pem_text("client1"), ALB).to_string();
    // The test is only meaningful if the certificate's base64 has a literal '+' and '/'.
    assert!(value.contains('+') && value.contains('/'), "{value}");
    assert_proxied_client1(&s, &[("x-ssl-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn pem_with_newlines_as_spaces_gives_the_tls_identity() {
    let s = start("pem").await;
    let value = pem_text("client1").trim_end().replace('\n', " ");
    assert_proxied_client1(&s, &[("x-ssl-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn pem_with_newlines_as_tabs_gives_the_tls_identity() {
    let s = start("pem").await;
    let value = pem_text("client1").trim_end().replace('\n', "\t");
    assert_proxied_client1(&s, &[("x-ssl-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn xfcc_element_with_hash_and_cert_gives_the_tls_identity() {
    let s = start("xfcc").await;
    let value = xfcc_element("client1");
    assert_proxied_client1(&s, &[("x-forwarded-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn xfcc_uses_the_last_element_appended_by_the_trusted_proxy() {
    let s = start("xfcc").await;
    let value = format!("{},{}", xfcc_element("client2"), xfcc_element("client1"));
    assert_proxied_client1(&s, &[("x-forwarded-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn xfcc_keys_are_case_insensitive() {
    let s = start("xfcc").await;
    let value = format!(
        "by=spiffe://x;HASH={};cert=\"{}\"",
        hex_sha256("client1"),
        nginx_escaped("client1")
    );
    assert_proxied_client1(&s, &[("x-forwarded-client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn der_base64_haproxy_header_gives_the_tls_identity() {
    let s = start("der-base64").await;
    let value = b64_der("client1");
    assert_proxied_client1(&s, &[("x-ssl-client-der", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn traefik_plain_base64_leaf_and_ca_joined_by_comma_gives_the_tls_identity() {
    let s = start("traefik").await;
    let leaf = b64_der("client1");
    assert_proxied_client1(&s, &[("x-forwarded-tls-client-cert", &leaf)]).await;
    let chain = format!("{},{}", b64_der("client1"), b64_der("ca"));
    assert_proxied_client1(&s, &[("x-forwarded-tls-client-cert", &chain)]).await;
    s.stop().await;
}

#[tokio::test]
async fn traefik_percent_escaped_value_gives_the_tls_identity() {
    let s = start("traefik").await;
    // Traefik < 2.9.4 ran url.QueryEscape over the joined value.
    let plain = format!("{},{}", b64_der("client1"), b64_der("ca"));
    let escaped = utf8_percent_encode(&plain, NON_ALPHANUMERIC).to_string();
    assert!(
        escaped.contains("%2C") && escaped.contains("%2B"),
        "{escaped}"
    );
    assert_proxied_client1(&s, &[("x-forwarded-tls-client-cert", &escaped)]).await;
    s.stop().await;
}

#[tokio::test]
async fn rfc9440_client_cert_byte_sequence_gives_the_tls_identity() {
    let s = start("rfc9440").await;
    let value = format!(":{}:", b64_der("client1"));
    assert_proxied_client1(&s, &[("client-cert", &value)]).await;
    s.stop().await;
}

#[tokio::test]
async fn rfc9440_with_client_cert_chain_gives_the_tls_identity() {
    let s = start("rfc9440").await;
    let leaf = format!(":{}:", b64_der("client1"));
    let chain = format!(":{}:", b64_der("ca"));
    assert_proxied_client1(&s, &[("client-cert", &leaf), ("client-cert-chain", &chain)]).await;
    s.stop().await;
}

#[tokio::test]
async fn rfc9440_chain_header_cannot_make_a_foreign_certificate_verify() {
    // Intermediates from the header help build a path; they are never trust anchors.
    let s = start("rfc9440").await;
    let leaf = format!(":{}:", b64_der("untrusted"));
    let chain = format!(":{}:", b64_der("other-ca"));
    let got = identity_of(
        &s.proxy_from(TRUSTED)
            .get(
                "/identity",
                &[("client-cert", &leaf), ("client-cert-chain", &chain)],
            )
            .await,
    );
    assert_eq!(got["x5t#S256"], thumbprint("untrusted"));
    assert_eq!(got["chain_verified"], false);
    s.stop().await;
}

#[tokio::test]
async fn custom_header_name_is_read_and_the_default_header_is_not() {
    let s = Server::start("[proxy]\nheader = \"x-client-cert\"\n").await;
    let value = nginx_escaped("client1");
    assert_proxied_client1(&s, &[("x-client-cert", &value)]).await;
    let r = s
        .proxy_from(TRUSTED)
        .get("/identity", &[("x-ssl-client-cert", &value)])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    s.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_through_a_trusted_proxy_is_not_chain_verified() {
    let s = Server::start("").await;
    let value = nginx_escaped("untrusted");
    let got = identity_of(
        &s.proxy_from(TRUSTED)
            .get("/identity", &[("x-ssl-client-cert", &value)])
            .await,
    );
    assert_eq!(got["x5t#S256"], thumbprint("untrusted"));
    assert_eq!(got["subject"], "CN=untrusted,O=elsewhere");
    assert_eq!(got["chain_verified"], false);
    assert_eq!(got["source"], "proxy");
    assert_eq!(got, tls_identity_as_proxied(&s, "untrusted").await);
    s.stop().await;
}

// === malformed headers ===

#[tokio::test]
async fn bad_percent_encoding_is_400_invalid_request() {
    let s = start("pem-urlencoded").await;
    let good = nginx_escaped("client1");
    let truncated_escape = good.replacen("%0A", "%0", 1);
    let not_hex = format!("{good}%zz");
    for bad in [&truncated_escape, &not_hex] {
        assert_malformed(
            &s,
            &[("x-ssl-client-cert", bad)],
            &[("x-ssl-client-cert", &good)],
        )
        .await;
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_base64_is_400_invalid_request() {
    let s = start("der-base64").await;
    let good = b64_der("client1");
    assert_malformed(
        &s,
        &[("x-ssl-client-der", "not base64!")],
        &[("x-ssl-client-der", &good)],
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn non_certificate_der_is_400_invalid_request() {
    let s = start("der-base64").await;
    let good = b64_der("client1");
    // A well-formed DER SEQUENCE { INTEGER 1 } that is not a certificate.
    let not_a_cert = STANDARD.encode([0x30, 0x03, 0x02, 0x01, 0x01]);
    assert_malformed(
        &s,
        &[("x-ssl-client-der", &not_a_cert)],
        &[("x-ssl-client-der", &good)],
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn xfcc_hash_that_does_not_match_cert_is_400_invalid_request() {
    let s = start("xfcc").await;
    let good = xfcc_element("client1");
    let mismatch = format!(
        "By=spiffe://x;Hash={};Cert=\"{}\"",
        hex_sha256("client2"),
        nginx_escaped("client1")
    );
    assert_malformed(
        &s,
        &[("x-forwarded-client-cert", &mismatch)],
        &[("x-forwarded-client-cert", &good)],
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn xfcc_element_without_cert_is_400_invalid_request() {
    let s = start("xfcc").await;
    let good = xfcc_element("client1");
    let no_cert = format!(
        "By=spiffe://x;Hash={};Subject=\"O=certgate dev,CN=client1\"",
        hex_sha256("client1")
    );
    assert_malformed(
        &s,
        &[("x-forwarded-client-cert", &no_cert)],
        &[("x-forwarded-client-cert", &good)],
    )
    .await;
    // The last element decides: a valid first element does not rescue a Cert-less last one.
    let last_without_cert = format!("{good},By=spiffe://y");
    assert_malformed(
        &s,
        &[("x-forwarded-client-cert", &last_without_cert)],
        &[("x-forwarded-client-cert", &good)],
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn rfc9440_empty_byte_sequence_is_400_invalid_request() {
    let s = start("rfc9440").await;
    let good = format!(":{}:", b64_der("client1"));
    assert_malformed(&s, &[("client-cert", "::")], &[("client-cert", &good)]).await;
    s.stop().await;
}

#[tokio::test]
async fn header_sent_twice_is_400_invalid_request() {
    let s = start("pem-urlencoded").await;
    let one = nginx_escaped("client1");
    let two = nginx_escaped("client2");
    assert_malformed(
        &s,
        &[("x-ssl-client-cert", &one), ("x-ssl-client-cert", &two)],
        &[("x-ssl-client-cert", &one)],
    )
    .await;
    // Even two identical copies: two parties set it, and certgate must not pick one.
    assert_malformed(
        &s,
        &[("x-ssl-client-cert", &one), ("x-ssl-client-cert", &one)],
        &[("x-ssl-client-cert", &one)],
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn empty_header_means_no_certificate_in_every_format() {
    for (format, header) in [
        ("pem-urlencoded", "x-ssl-client-cert"),
        ("pem", "x-ssl-client-cert"),
        ("xfcc", "x-forwarded-client-cert"),
        ("der-base64", "x-ssl-client-der"),
        ("traefik", "x-forwarded-tls-client-cert"),
        ("rfc9440", "client-cert"),
    ] {
        let s = start(format).await;
        let r = s
            .proxy_from(TRUSTED)
            .get("/identity", &[(header, "")])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{format}");
        assert_eq!(
            r.json(),
            serde_json::json!({ "certificate": null }),
            "{format}"
        );
        s.stop().await;
    }
}

// === trusted peers ===

#[tokio::test]
async fn proxy_header_from_untrusted_peer_is_ignored_and_counted() {
    let s = Server::start("").await;
    let before = admin_metric(&s, UNTRUSTED_METRIC).await;
    let value = nginx_escaped("client1");
    let r = s
        .proxy_from(UNTRUSTED)
        .get("/identity", &[("x-ssl-client-cert", &value)])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, before + 1.0);
    // The same header from the trusted peer is believed, and not counted.
    assert_proxied_client1(&s, &[("x-ssl-client-cert", &value)]).await;
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, before + 1.0);
    s.stop().await;
}

#[tokio::test]
async fn empty_proxy_header_from_untrusted_peer_is_not_counted() {
    let s = Server::start("").await;
    let before = admin_metric(&s, UNTRUSTED_METRIC).await;
    let r = s
        .proxy_from(UNTRUSTED)
        .get("/identity", &[("x-ssl-client-cert", "")])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    let r = s.proxy_from(UNTRUSTED).get("/identity", &[]).await;
    assert_eq!(identity_of(&r), Value::Null);
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, before);
    s.stop().await;
}

#[tokio::test]
async fn malformed_proxy_header_from_untrusted_peer_is_ignored_not_rejected() {
    // An untrusted peer's header is never decoded, so it cannot cause a 400 either.
    let s = Server::start("").await;
    let before = admin_metric(&s, UNTRUSTED_METRIC).await;
    let r = s
        .proxy_from(UNTRUSTED)
        .get("/identity", &[("x-ssl-client-cert", "%zz")])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, before + 1.0);
    s.stop().await;
}

#[tokio::test]
async fn empty_trusted_proxies_trusts_nobody_not_even_loopback() {
    let s = Server::start("[proxy]\ntrusted_proxies = []\n").await;
    let before = admin_metric(&s, UNTRUSTED_METRIC).await;
    let value = nginx_escaped("client1");
    let r = s
        .proxy_from(TRUSTED)
        .get("/identity", &[("x-ssl-client-cert", &value)])
        .await;
    assert_eq!(identity_of(&r), Value::Null);
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, before + 1.0);
    s.stop().await;
}

#[tokio::test]
async fn trusted_proxies_cidr_admits_exactly_its_range() {
    let s = Server::start("[proxy]\ntrusted_proxies = [\"127.0.0.2/32\"]\n").await;
    let value = nginx_escaped("client1");
    let from_2 = identity_of(
        &s.proxy_from(UNTRUSTED)
            .get("/identity", &[("x-ssl-client-cert", &value)])
            .await,
    );
    assert_eq!(from_2["x5t#S256"], thumbprint("client1"));
    let from_1 = s
        .proxy_from(TRUSTED)
        .get("/identity", &[("x-ssl-client-cert", &value)])
        .await;
    assert_eq!(identity_of(&from_1), Value::Null);
    s.stop().await;
}
