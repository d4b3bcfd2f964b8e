//! The proxy listener over TLS and authenticated proxies (SPEC §1 "The proxy listener over
//! TLS"): address *and* certificate must pass before a forwarded certificate is believed, and
//! the proxy's own certificate is never a client identity.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use http::StatusCode;
use serde_json::json;

use common::*;

const TRUSTED: [u8; 4] = [127, 0, 0, 1];
const UNTRUSTED: [u8; 4] = [127, 0, 0, 2];
const UNTRUSTED_METRIC: &str = "certgate_proxy_header_untrusted_total";
/// The dev proxy certificate's subject (certs/proxy.pem).
const PROXY_DN: &str = "CN=proxy,O=certgate dev";

fn config(subjects: &[&str], extra: &str) -> String {
    format!(
        "[proxy]\ntls = true\ntrusted_proxy_subjects = {}\n{extra}",
        serde_json::to_string(subjects).unwrap()
    )
}

/// What `/identity` says on the TLS proxy listener when `proxy` (connecting from `source`)
/// forwards client1's certificate.
async fn forwarded_identity(s: &Server, source: [u8; 4], proxy: Option<&str>) -> serde_json::Value {
    let header = escaped_pem("client1");
    let r = s
        .proxy_tls_from(source, proxy)
        .get("/identity", &[("x-ssl-client-cert", &header)])
        .await;
    identity_of(&r)
}

#[tokio::test]
async fn a_listed_proxy_at_a_trusted_address_is_believed_over_tls() {
    let s = Server::start(&config(&[PROXY_DN], "")).await;
    let got = forwarded_identity(&s, TRUSTED, Some("proxy")).await;
    assert_eq!(got["source"], "proxy");
    assert_eq!(got["x5t#S256"], thumbprint("client1"));
    // The forwarded chain is judged against tls.client_ca like any client's.
    assert_eq!(got["chain_verified"], true);
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, 0.0);
    s.stop().await;
}

#[tokio::test]
async fn trusted_proxy_subjects_match_like_subject_dns() {
    // SPEC §5 matching: type case, value case and insignificant spaces do not matter (the
    // order of the RDNs does).
    let s = Server::start(&config(&["cn=Proxy,o=CERTGATE  Dev"], "")).await;
    let got = forwarded_identity(&s, TRUSTED, Some("proxy")).await;
    assert_eq!(got["x5t#S256"], thumbprint("client1"));
    s.stop().await;
}

#[tokio::test]
async fn a_proxy_without_a_listed_certificate_is_not_believed() {
    // "untrusted" is listed but issued by another CA: the subject alone proves nothing.
    let s = Server::start(&config(&[PROXY_DN, "CN=untrusted,O=elsewhere"], "")).await;
    for (n, proxy) in [Some("client2"), None, Some("untrusted"), Some("selfsigned")]
        .into_iter()
        .enumerate()
    {
        let got = forwarded_identity(&s, TRUSTED, proxy).await;
        assert!(got.is_null(), "{proxy:?}: {got}");
        assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, (n + 1) as f64);
    }
    // Not believed means no certificate: registration by proxy has nothing to bind.
    let r = s
        .proxy_tls_from(TRUSTED, Some("client2"))
        .post_json(
            "/register",
            &[("x-ssl-client-cert", &escaped_pem("client1"))],
            &json!({"grant_types": ["client_credentials"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(client_count(&s).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_listed_proxy_certificate_from_an_untrusted_address_is_not_believed() {
    let s = Server::start(&config(&[PROXY_DN], "")).await;
    let got = forwarded_identity(&s, UNTRUSTED, Some("proxy")).await;
    assert!(got.is_null(), "{got}");
    assert_eq!(admin_metric(&s, UNTRUSTED_METRIC).await, 1.0);
    s.stop().await;
}

#[tokio::test]
async fn the_proxys_own_certificate_is_never_a_client_identity() {
    let s = Server::start(&config(&[PROXY_DN], "")).await;
    let r = s
        .proxy_tls_from(TRUSTED, Some("proxy"))
        .get("/identity", &[])
        .await;
    assert_eq!(identity_of(&r), serde_json::Value::Null);
    // Nor anywhere else: a registration with no forwarded certificate is refused.
    let r = s
        .proxy_tls_from(TRUSTED, Some("proxy"))
        .post_json(
            "/register",
            &[],
            &json!({"grant_types": ["client_credentials"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn proxy_client_ca_replaces_tls_client_ca_for_proxies_only() {
    let s = Server::start(&config(
        &["CN=untrusted,O=elsewhere", PROXY_DN],
        "client_ca = \"certs/other-ca.pem\"\n",
    ))
    .await;
    let got = forwarded_identity(&s, TRUSTED, Some("untrusted")).await;
    assert_eq!(got["x5t#S256"], thumbprint("client1"));
    // Forwarded clients are still judged against tls.client_ca.
    assert_eq!(got["chain_verified"], true);
    // The dev CA no longer vouches for proxies.
    assert!(forwarded_identity(&s, TRUSTED, Some("proxy"))
        .await
        .is_null());
    s.stop().await;
}

#[tokio::test]
async fn without_subjects_a_tls_proxy_listener_trusts_the_address_alone() {
    let s = Server::start("[proxy]\ntls = true\n").await;
    let got = forwarded_identity(&s, TRUSTED, None).await;
    assert_eq!(got["x5t#S256"], thumbprint("client1"));
    assert!(forwarded_identity(&s, UNTRUSTED, None).await.is_null());
    s.stop().await;
}

#[tokio::test]
async fn sighup_reload_rejudges_proxies_under_the_new_proxy_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::copy("certs/ca.pem", &ca).unwrap();
    let s = Server::start(&config(
        &[PROXY_DN],
        &format!("client_ca = {:?}\n", ca.to_str().unwrap()),
    ))
    .await;
    let got = forwarded_identity(&s, TRUSTED, Some("proxy")).await;
    assert_eq!(got["x5t#S256"], thumbprint("client1"));
    // The operator replaces the proxies' CA; a reload makes it count at once.
    std::fs::copy("certs/other-ca.pem", &ca).unwrap();
    s.app.tls.reload().unwrap();
    assert!(forwarded_identity(&s, TRUSTED, Some("proxy"))
        .await
        .is_null());
    s.stop().await;
}

#[test]
fn trusted_proxy_subjects_need_a_tls_proxy_listener() {
    let e = certgate::Config::parse("[proxy]\ntrusted_proxy_subjects = [\"CN=proxy\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxy.trusted_proxy_subjects"), "{e}");
    assert!(e.contains("proxy.tls"), "{e}");
    let e = certgate::Config::parse("[proxy]\nclient_ca = \"certs/ca.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxy.client_ca"), "{e}");
}

#[test]
fn a_trusted_proxy_subject_that_is_not_a_dn_is_a_config_error() {
    let e = certgate::Config::parse("[proxy]\ntls = true\ntrusted_proxy_subjects = [\"proxy\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxy.trusted_proxy_subjects[0]"), "{e}");
}
