//! `POST /register` (RFC 7591, SPEC §3): who may register, what a registration answers,
//! which metadata is refused, how the registering certificate must match, and what a
//! malformed body does (nothing, but a 4xx JSON answer).
//!
//! Every test starts the real server on loopback and talks real TLS with the dev PKI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use common::*;

const OPEN: &str = "[registration]\nauthentication = []\n";

/// POST /register over TLS presenting `cert`.
async fn post(server: &Server, cert: Option<&str>, body: &Value) -> Resp {
    server.tls(cert).post_json("/register", &[], body).await
}

/// POST /register through the trusted proxy, which forwards `cert` in `x-ssl-client-cert`.
async fn post_proxied(server: &Server, cert: &str, body: &Value) -> Resp {
    let header = escaped_pem(cert);
    server
        .proxy_from([127, 0, 0, 1])
        .post_json("/register", &[("x-ssl-client-cert", &header)], body)
        .await
}

/// Asserts a registration was refused with `status`/`error` and registered nothing.
async fn assert_refused(server: &Server, r: &Resp, status: StatusCode, error: &str) {
    assert_error(r, status, error);
    assert_eq!(
        client_count(server).await,
        0,
        "a refused request registers nothing"
    );
}

/// Asserts a 201 registration answer and returns its JSON.
fn created(r: &Resp) -> Value {
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_no_store(r);
    r.json()
}

// === who may register (SPEC §3, §6a.10, §6a.20) ===

#[tokio::test]
async fn open_registration_accepts_a_request_without_certificate() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({"client_name": "open"})).await);
    assert!(reg["client_id"].is_string());
    assert_eq!(client_count(&s).await, 1);
}

#[tokio::test]
async fn default_registration_without_certificate_is_401_invalid_client() {
    let s = Server::start("").await;
    let r = post(&s, None, &json!({})).await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn default_registration_with_certificate_of_another_ca_is_401_invalid_client() {
    let s = Server::start("").await;
    let r = post(&s, Some("untrusted"), &json!({})).await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn default_registration_with_self_signed_certificate_is_401_invalid_client() {
    let s = Server::start("").await;
    let r = post(&s, Some("selfsigned"), &json!({})).await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn mutual_tls_registration_with_trusted_handshake_certificate_is_201() {
    let s = Server::start("").await;
    created(&post(&s, Some("client1"), &json!({})).await);
    assert_eq!(client_count(&s).await, 1);
}

#[tokio::test]
async fn mutual_tls_by_proxy_registration_with_certificate_from_trusted_proxy_is_201() {
    let s = Server::start("").await;
    created(&post_proxied(&s, "client1", &json!({})).await);
    assert_eq!(client_count(&s).await, 1);
}

#[tokio::test]
async fn proxied_certificate_of_another_ca_is_401_invalid_client() {
    let s = Server::start("").await;
    let r = post_proxied(&s, "untrusted", &json!({})).await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn certificate_header_from_untrusted_peer_is_ignored_so_registration_is_401() {
    let s = Server::start("").await;
    let header = escaped_pem("client1");
    let r = s
        .proxy_from([127, 0, 0, 2])
        .post_json("/register", &[("x-ssl-client-cert", &header)], &json!({}))
        .await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn certificate_header_on_the_tls_listener_is_never_believed() {
    let s = Server::start("").await;
    let header = escaped_pem("client1");
    let r = s
        .tls(None)
        .post_json("/register", &[("x-ssl-client-cert", &header)], &json!({}))
        .await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn mutual_tls_only_refuses_a_proxied_certificate() {
    let s = Server::start("[registration]\nauthentication = [\"mutual-tls\"]\n").await;
    let r = post_proxied(&s, "client1", &json!({})).await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
    created(&post(&s, Some("client1"), &json!({})).await);
}

#[tokio::test]
async fn mutual_tls_by_proxy_only_refuses_a_handshake_certificate() {
    let s = Server::start("[registration]\nauthentication = [\"mutual-tls-by-proxy\"]\n").await;
    let r = post(&s, Some("client1"), &json!({})).await;
    assert_refused(&s, &r, StatusCode::UNAUTHORIZED, "invalid_client").await;
    created(&post_proxied(&s, "client1", &json!({})).await);
}

#[tokio::test]
async fn rfc7591_3_registration_endpoint_accepts_only_post() {
    let s = Server::start(OPEN).await;
    let r = s.tls(None).get("/register", &[]).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
}

// === the 201 answer (RFC 7591 §3.2.1) ===

#[tokio::test]
async fn rfc7591_3_2_1_response_contains_client_id_and_all_registered_metadata() {
    let s = Server::start("").await;
    let body = json!({
        "redirect_uris": ["https://app.example.com/cb", "com.example.app:/cb"],
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "Example App",
        "client_uri": "https://app.example.com/",
        "logo_uri": "https://app.example.com/logo.png",
        "scope": "read write",
        "contacts": ["ops@example.com"],
        "tos_uri": "https://app.example.com/tos",
        "policy_uri": "https://app.example.com/policy",
        "jwks_uri": "https://app.example.com/jwks.json",
        "software_id": "4NRB1-0XZABZI9E6-5SM3R",
        "software_version": "2.1",
        "tls_client_certificate_bound_access_tokens": true,
    });
    let reg = created(&post(&s, Some("client1"), &body).await);
    assert!(
        reg["client_id"].as_str().is_some_and(|id| !id.is_empty()),
        "client_id is REQUIRED: {reg}"
    );
    for (field, value) in body.as_object().unwrap() {
        assert_eq!(&reg[field], value, "registered {field} is returned as sent");
    }
}

#[tokio::test]
async fn rfc7591_3_2_1_response_includes_server_provisioned_defaults() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({})).await);
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(reg["grant_types"], json!(["authorization_code"]));
    assert_eq!(reg["response_types"], json!(["code"]));
}

#[tokio::test]
async fn registration_response_carries_issue_time_secret_and_management_credentials() {
    let s = Server::start("").await;
    let reg = created(&post(&s, Some("client1"), &json!({})).await);
    let id = reg["client_id"].as_str().unwrap();
    assert_eq!(reg["client_id_issued_at"], T0, "from the injected clock");
    assert!(reg["client_secret"].as_str().is_some_and(|s| s.len() >= 32));
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert!(reg["registration_access_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 32));
    assert_eq!(reg["registration_access_token_expires_in"], 31_536_000);
    assert_eq!(
        reg["registration_client_uri"],
        format!("https://localhost:8443/register/{id}")
    );
}

#[tokio::test]
async fn rfc7591_3_2_1_client_secret_expires_at_is_required_when_a_secret_is_issued() {
    let s = Server::start(OPEN).await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let reg = created(&post(&s, None, &json!({"token_endpoint_auth_method": method})).await);
        assert!(reg["client_secret"].is_string(), "{method}: {reg}");
        assert_eq!(reg["client_secret_expires_at"], 0, "{method}: {reg}");
    }
}

#[tokio::test]
async fn token_endpoint_auth_method_none_gets_no_client_secret() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({"token_endpoint_auth_method": "none"})).await);
    assert_eq!(reg["token_endpoint_auth_method"], "none");
    assert!(reg.get("client_secret").is_none(), "{reg}");
    assert!(reg.get("client_secret_expires_at").is_none(), "{reg}");
    assert!(reg["registration_access_token"].is_string());
}

#[tokio::test]
async fn rfc7591_3_2_1_each_registration_gets_its_own_client_id_and_credentials() {
    let s = Server::start(OPEN).await;
    let a = created(&post(&s, None, &json!({})).await);
    let b = created(&post(&s, None, &json!({})).await);
    assert_ne!(a["client_id"], b["client_id"]);
    assert_ne!(a["client_secret"], b["client_secret"]);
    assert_ne!(
        a["registration_access_token"],
        b["registration_access_token"]
    );
    assert_eq!(client_count(&s).await, 2);
}

#[tokio::test]
async fn client_id_and_client_secret_in_the_request_are_ignored() {
    let s = Server::start(OPEN).await;
    let reg = created(
        &post(
            &s,
            None,
            &json!({"client_id": "chosen-id", "client_secret": "chosen-secret"}),
        )
        .await,
    );
    assert_ne!(reg["client_id"], "chosen-id");
    assert_ne!(reg["client_secret"], "chosen-secret");
    assert!(reg["client_secret"].is_string());
}

#[tokio::test]
async fn server_issued_fields_in_the_request_are_not_adopted() {
    let s = Server::start(OPEN).await;
    let reg = created(
        &post(
            &s,
            None,
            &json!({
                "client_id_issued_at": 1,
                "client_secret_expires_at": 99,
                "registration_access_token": "mine",
                "registration_access_token_expires_in": 5,
                "registration_client_uri": "https://evil.example/x",
            }),
        )
        .await,
    );
    assert_eq!(reg["client_id_issued_at"], T0);
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert_ne!(reg["registration_access_token"], "mine");
    assert_eq!(reg["registration_access_token_expires_in"], 31_536_000);
    assert_ne!(reg["registration_client_uri"], "https://evil.example/x");
}

// === metadata rules (RFC 7591 §2, SPEC §3, §6a.1, §6a.2, §6a.16) ===

async fn refused_metadata(body: Value, error: &str) {
    let s = Server::start(OPEN).await;
    let r = post(&s, None, &body).await;
    assert_refused(&s, &r, StatusCode::BAD_REQUEST, error).await;
}

#[tokio::test]
async fn rfc7591_2_relative_redirect_uri_is_invalid_redirect_uri() {
    refused_metadata(
        json!({"redirect_uris": ["https://ok.example/cb", "/callback"]}),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn rfc7591_2_redirect_uri_with_fragment_is_invalid_redirect_uri() {
    refused_metadata(
        json!({"redirect_uris": ["https://app.example.com/cb#frag"]}),
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn redirect_uris_with_whitespace_controls_nul_or_dangerous_schemes_are_invalid_redirect_uri()
{
    let s = Server::start(OPEN).await;
    for uri in [
        "https://app.example/cb\r\nSet-Cookie: x=1",
        "https://app.example/c\nb",
        "https://app.example/cb\u{0}",
        " https://app.example/cb",
        "https://app.example/cb ",
        "https://app.example/c b",
        "https://app.exаmple/cb", // Cyrillic а
        "https://app.example/%zz",
        "file:///etc/passwd",
        "javascript:alert(1)//",
        "JavaScript://app.example/%0Aalert(1)",
        "data:text/html,hi",
        "vbscript:msgbox",
    ] {
        let r = post(&s, None, &json!({"redirect_uris": [uri]})).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_redirect_uri");
        assert!(!r.body.is_empty(), "{uri:?}");
    }
    // Native apps' private-use schemes and loopback redirects stay fine.
    for uri in [
        "com.example.app:/oauth2redirect",
        "http://127.0.0.1:51004/cb",
        "https://app.example/cb?x=%2F",
    ] {
        created(&post(&s, None, &json!({"redirect_uris": [uri]})).await);
    }
    assert_eq!(client_count(&s).await, 3);
    s.stop().await;
}

#[tokio::test]
async fn jwks_with_private_or_symmetric_keys_or_foreign_x5c_is_invalid_client_metadata() {
    let s = Server::start(OPEN).await;
    let mut private = jwk("client1");
    private["d"] = json!("c2VjcmV0");
    let mut mismatched = jwk("client1");
    mismatched["x5c"] = json!([x5c("client2")]);
    let mut garbage = jwk("client1");
    garbage["x5c"] = json!(["bm90IGEgY2VydGlmaWNhdGU="]);
    let mut not_base64 = jwk("client1");
    not_base64["x5c"] = json!(["***"]);
    for key in [
        private,
        json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0"}),
        json!({"kty": "oct"}),
        mismatched,
        garbage,
        not_base64,
        json!({"kty": "EC", "crv": "P-256", "x5c": [x5c("client1")]}),
    ] {
        let body = json!({
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [key]},
        });
        let r = post(&s, None, &body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    }
    // A chain in x5c: the first certificate holds the key, the others certify it.
    let mut chain = jwk("client1");
    chain["x5c"] = json!([x5c("client1"), x5c("ca")]);
    let body = json!({"token_endpoint_auth_method": "self_signed_tls_client_auth",
                      "jwks": {"keys": [chain]}});
    created(&post(&s, Some("client1"), &body).await);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_1_neither_type_given_defaults_to_authorization_code_and_code() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({"client_name": "x"})).await);
    assert_eq!(reg["grant_types"], json!(["authorization_code"]));
    assert_eq!(reg["response_types"], json!(["code"]));
}

#[tokio::test]
async fn spec_6a_1_grant_types_alone_imply_the_response_types() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({"grant_types": ["client_credentials"]})).await);
    assert_eq!(reg["grant_types"], json!(["client_credentials"]));
    assert_eq!(reg["response_types"], json!([]));
    let reg = created(
        &post(
            &s,
            None,
            &json!({"grant_types": ["authorization_code", "refresh_token"]}),
        )
        .await,
    );
    assert_eq!(reg["response_types"], json!(["code"]));
}

#[tokio::test]
async fn spec_6a_1_response_types_alone_imply_the_grant_types() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({"response_types": ["code"]})).await);
    assert_eq!(reg["grant_types"], json!(["authorization_code"]));
    assert_eq!(reg["response_types"], json!(["code"]));
}

#[tokio::test]
async fn spec_6a_1_code_response_without_authorization_code_grant_is_invalid_client_metadata() {
    refused_metadata(
        json!({"grant_types": ["client_credentials"], "response_types": ["code"]}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_1_authorization_code_grant_without_code_response_is_invalid_client_metadata() {
    refused_metadata(
        json!({"grant_types": ["authorization_code"], "response_types": []}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_16_password_grant_is_invalid_client_metadata() {
    refused_metadata(
        json!({"grant_types": ["password"], "response_types": []}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_16_implicit_via_response_type_token_is_invalid_client_metadata() {
    refused_metadata(
        json!({"response_types": ["token"]}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_16_implicit_grant_type_is_invalid_client_metadata() {
    refused_metadata(
        json!({"grant_types": ["implicit"], "response_types": ["token"]}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_1_allowed_grant_types_narrows_what_may_be_registered() {
    let s = Server::start(
        "[registration]\nauthentication = []\nallowed_grant_types = [\"client_credentials\"]\n",
    )
    .await;
    let r = post(&s, None, &json!({"grant_types": ["authorization_code"]})).await;
    assert_refused(&s, &r, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    created(&post(&s, None, &json!({"grant_types": ["client_credentials"]})).await);
}

#[tokio::test]
async fn rfc7591_2_jwks_and_jwks_uri_must_not_both_be_present() {
    refused_metadata(
        json!({
            "jwks": {"keys": [jwk("client1")]},
            "jwks_uri": "https://app.example.com/jwks.json",
        }),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn tls_client_auth_without_a_subject_field_is_invalid_client_metadata() {
    refused_metadata(
        json!({"token_endpoint_auth_method": "tls_client_auth"}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn tls_client_auth_with_two_subject_fields_is_invalid_client_metadata() {
    refused_metadata(
        json!({
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=client1,O=certgate dev",
            "tls_client_auth_san_dns": "client1.example.com",
        }),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn self_signed_tls_client_auth_without_jwks_or_jwks_uri_is_invalid_client_metadata() {
    refused_metadata(
        json!({"token_endpoint_auth_method": "self_signed_tls_client_auth"}),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn self_signed_tls_client_auth_with_jwks_lacking_x5c_is_invalid_client_metadata() {
    refused_metadata(
        json!({
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]},
        }),
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn unsupported_token_endpoint_auth_method_is_invalid_client_metadata() {
    for method in ["private_key_jwt", "client_secret_jwt", "bogus"] {
        refused_metadata(
            json!({"token_endpoint_auth_method": method}),
            "invalid_client_metadata",
        )
        .await;
    }
}

#[tokio::test]
async fn spec_6a_2_reserved_scope_dcrm_is_invalid_client_metadata() {
    refused_metadata(json!({"scope": "read dcrm"}), "invalid_client_metadata").await;
}

#[tokio::test]
async fn spec_6a_2_reserved_scope_dcr_is_invalid_client_metadata() {
    refused_metadata(json!({"scope": "dcr"}), "invalid_client_metadata").await;
}

#[tokio::test]
async fn spec_6a_2_allowed_scopes_narrows_what_may_be_registered() {
    let s = Server::start(
        "[registration]\nauthentication = []\nallowed_scopes = [\"read\", \"write\"]\n",
    )
    .await;
    let r = post(&s, None, &json!({"scope": "read admin"})).await;
    assert_refused(&s, &r, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    let reg = created(&post(&s, None, &json!({"scope": "read write"})).await);
    assert_eq!(reg["scope"], "read write");
}

#[tokio::test]
async fn spec_6a_2_any_unreserved_scope_is_allowed_by_default() {
    let s = Server::start(OPEN).await;
    let reg = created(&post(&s, None, &json!({"scope": "api:read billing"})).await);
    assert_eq!(reg["scope"], "api:read billing");
}

#[tokio::test]
async fn rfc7591_2_unknown_metadata_does_not_fail_and_is_kept_and_returned() {
    let s = Server::start(OPEN).await;
    let extra = json!({"vendor": "acme", "nested": [1, {"a": null}]});
    let reg = created(
        &post(
            &s,
            None,
            &json!({"x_custom": extra, "x_flag": true, "client_name": "n"}),
        )
        .await,
    );
    assert_eq!(reg["x_custom"], extra);
    assert_eq!(reg["x_flag"], true);
}

#[tokio::test]
async fn rfc7591_2_2_language_tagged_human_readable_fields_are_kept() {
    let s = Server::start(OPEN).await;
    let reg = created(
        &post(
            &s,
            None,
            &json!({
                "client_name": "My Client",
                "client_name#fr": "Mon client",
                "client_name#ja-Jpan-JP": "クライアント名",
                "tos_uri#de": "https://app.example.com/agb",
            }),
        )
        .await,
    );
    assert_eq!(reg["client_name"], "My Client");
    assert_eq!(reg["client_name#fr"], "Mon client");
    assert_eq!(reg["client_name#ja-Jpan-JP"], "クライアント名");
    assert_eq!(reg["tos_uri#de"], "https://app.example.com/agb");
}

#[tokio::test]
async fn rfc7591_3_1_1_untrusted_software_statement_is_unapproved_software_statement() {
    refused_metadata(
        json!({"software_statement": "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3Vua25vd24uZXhhbXBsZSIsInNvZnR3YXJlX2lkIjoieCJ9.c2ln"}),
        "unapproved_software_statement",
    )
    .await;
}

// === the registering certificate must satisfy what it declares (SPEC §3, §6a.16, §6a.20) ===

async fn tls_client_auth_case(config: &str, field: &str, value: &str) -> Resp {
    let s = Server::start(config).await;
    let body = json!({"token_endpoint_auth_method": "tls_client_auth", field: value});
    let r = post(&s, Some("client1"), &body).await;
    if r.status == StatusCode::CREATED {
        assert_eq!(r.json()[field], value);
        assert_eq!(client_count(&s).await, 1);
    } else {
        assert_eq!(client_count(&s).await, 0);
    }
    r
}

#[tokio::test]
async fn tls_client_auth_subject_dn_of_the_registering_certificate_is_201() {
    let r = tls_client_auth_case(
        "",
        "tls_client_auth_subject_dn",
        "CN=client1,O=certgate dev",
    )
    .await;
    created(&r);
}

#[tokio::test]
async fn tls_client_auth_subject_dn_is_matched_as_a_distinguished_name_not_as_bytes() {
    let r = tls_client_auth_case(
        "",
        "tls_client_auth_subject_dn",
        "cn=Client1, o=Certgate Dev",
    )
    .await;
    created(&r);
}

#[tokio::test]
async fn tls_client_auth_subject_dn_of_another_certificate_is_invalid_client_metadata() {
    let r = tls_client_auth_case(
        "",
        "tls_client_auth_subject_dn",
        "CN=client2,O=certgate dev",
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
}

#[tokio::test]
async fn require_matching_certificate_false_accepts_a_subject_dn_of_another_certificate() {
    let r = tls_client_auth_case(
        "[registration]\nrequire_matching_certificate = false\n",
        "tls_client_auth_subject_dn",
        "CN=client2,O=certgate dev",
    )
    .await;
    created(&r);
}

#[tokio::test]
async fn tls_client_auth_san_dns_of_the_registering_certificate_is_201() {
    created(&tls_client_auth_case("", "tls_client_auth_san_dns", "client1.example.com").await);
}

#[tokio::test]
async fn tls_client_auth_san_uri_of_the_registering_certificate_is_201() {
    created(
        &tls_client_auth_case(
            "",
            "tls_client_auth_san_uri",
            "https://client1.example.com/app",
        )
        .await,
    );
}

#[tokio::test]
async fn tls_client_auth_san_ip_of_the_registering_certificate_is_201() {
    created(&tls_client_auth_case("", "tls_client_auth_san_ip", "192.0.2.1").await);
}

#[tokio::test]
async fn tls_client_auth_san_email_of_the_registering_certificate_is_201() {
    created(&tls_client_auth_case("", "tls_client_auth_san_email", "client1@example.com").await);
}

#[tokio::test]
async fn tls_client_auth_san_of_another_certificate_is_invalid_client_metadata() {
    for (field, value) in [
        ("tls_client_auth_san_dns", "client2.example.com"),
        ("tls_client_auth_san_uri", "https://client2.example.com/app"),
        ("tls_client_auth_san_ip", "192.0.2.2"),
        ("tls_client_auth_san_email", "client2@example.com"),
    ] {
        let r = tls_client_auth_case("", field, value).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    }
}

#[tokio::test]
async fn tls_client_auth_subject_dn_is_checked_against_a_proxied_certificate_too() {
    let s = Server::start("").await;
    let body = |dn: &str| json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": dn});
    let r = post_proxied(&s, "client1", &body("CN=client2,O=certgate dev")).await;
    assert_refused(&s, &r, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    created(&post_proxied(&s, "client1", &body("CN=client1,O=certgate dev")).await);
}

fn self_signed_body(cert_in_jwks: &str) -> Value {
    let mut key = jwk(cert_in_jwks);
    key["use"] = json!("sig");
    json!({
        "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "jwks": {"keys": [key]},
    })
}

#[tokio::test]
async fn self_signed_tls_client_auth_with_the_registering_certificate_in_x5c_is_201() {
    let s = Server::start("").await;
    let body = self_signed_body("client1");
    let reg = created(&post(&s, Some("client1"), &body).await);
    assert_eq!(reg["jwks"], body["jwks"]);
    assert!(
        reg.get("client_secret").is_none(),
        "no secret for mTLS methods: {reg}"
    );
}

#[tokio::test]
async fn self_signed_tls_client_auth_without_the_registering_certificate_is_invalid_client_metadata(
) {
    let s = Server::start("").await;
    let r = post(&s, Some("client1"), &self_signed_body("client2")).await;
    assert_refused(&s, &r, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
}

#[tokio::test]
async fn spec_6a_20_open_registration_with_a_self_signed_certificate_in_its_own_jwks_is_201() {
    let s = Server::start(OPEN).await;
    created(&post(&s, Some("selfsigned"), &self_signed_body("selfsigned")).await);
}

// === malformed bodies: a 4xx JSON answer, the server up, the registry unchanged ===

/// Sends `body` with `content_type` (None: no Content-Type) as client1 over TLS and checks
/// the refusal leaves no trace.
async fn malformed(
    config: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    status: StatusCode,
    error: &str,
) {
    let s = Server::start(config).await;
    assert_eq!(client_count(&s).await, 0);
    let mut headers = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    let r = s
        .tls(Some("client1"))
        .send(Method::POST, "/register", &headers, Some(body))
        .await;
    assert_error(&r, status, error);
    assert_eq!(client_count(&s).await, 0, "nothing was registered");
    // Still serving registrations.
    created(&post(&s, Some("client1"), &json!({})).await);
    assert_eq!(client_count(&s).await, 1);
}

#[tokio::test]
async fn body_that_is_not_json_is_400_invalid_request() {
    malformed(
        "",
        Some("application/json"),
        b"client_name=x&scope=y".to_vec(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn truncated_json_body_is_400_invalid_request() {
    malformed(
        "",
        Some("application/json"),
        br#"{"client_name": "x""#.to_vec(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn json_array_body_is_400_invalid_request() {
    malformed(
        "",
        Some("application/json"),
        br#"[{"client_name": "x"}]"#.to_vec(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn empty_body_is_400_invalid_request() {
    malformed(
        "",
        Some("application/json"),
        Vec::new(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_body_is_400_invalid_request() {
    malformed(
        "",
        Some("application/json"),
        b"{\"client_name\": \"\xff\xfe\"}".to_vec(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn ten_megabyte_body_is_413() {
    let mut body = br#"{"client_name": ""#.to_vec();
    body.resize(10 * 1024 * 1024, b'a');
    body.extend_from_slice(br#""}"#);
    malformed(
        "",
        Some("application/json"),
        body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn body_over_configured_max_body_bytes_is_413() {
    let body = json!({"client_name": "a".repeat(2048)})
        .to_string()
        .into_bytes();
    malformed(
        "[registration]\nmax_body_bytes = 1024\n",
        Some("application/json"),
        body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn thousand_deep_array_nesting_is_400_invalid_request() {
    let body = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    malformed(
        "",
        Some("application/json"),
        body.into_bytes(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn thousand_deep_object_nesting_in_an_unknown_field_is_400_invalid_request() {
    let body = format!(
        "{{\"x_deep\": {}1{}}}",
        "{\"a\": ".repeat(1000),
        "}".repeat(1000)
    );
    malformed(
        "",
        Some("application/json"),
        body.into_bytes(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_11_text_plain_body_is_415() {
    malformed(
        "",
        Some("text/plain"),
        br#"{"client_name": "x"}"#.to_vec(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_11_form_encoded_body_is_415() {
    malformed(
        "",
        Some("application/x-www-form-urlencoded"),
        b"client_name=x".to_vec(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_11_missing_content_type_is_415() {
    malformed(
        "",
        None,
        br#"{"client_name": "x"}"#.to_vec(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn spec_6a_11_application_json_with_charset_parameter_is_accepted() {
    let s = Server::start("").await;
    let r = s
        .tls(Some("client1"))
        .send(
            Method::POST,
            "/register",
            &[("content-type", "application/json; charset=utf-8")],
            Some(br#"{"client_name": "charset"}"#.to_vec()),
        )
        .await;
    assert_eq!(created(&r)["client_name"], "charset");
}

#[tokio::test]
async fn wrongly_typed_metadata_is_invalid_client_metadata() {
    for body in [
        json!({"client_name": 5}),
        json!({"contacts": [1]}),
        json!({"grant_types": "client_credentials"}),
        json!({"tls_client_certificate_bound_access_tokens": "yes"}),
    ] {
        refused_metadata(body, "invalid_client_metadata").await;
    }
}

/// A request body sent with `Transfer-Encoding: chunked` (no Content-Length to judge by).
struct Chunked(std::collections::VecDeque<bytes::Bytes>);

impl hyper::body::Body for Chunked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn chunked_body_over_max_body_bytes_is_413() {
    use http_body_util::BodyExt as _;

    let s = Server::start("").await;
    let mut chunks = std::collections::VecDeque::new();
    chunks.push_back(bytes::Bytes::from_static(b"{\"client_name\": \""));
    for _ in 0..100 {
        chunks.push_back(bytes::Bytes::from(vec![b'a'; 1024]));
    }
    chunks.push_back(bytes::Bytes::from_static(b"\"}"));
    let req = http::Request::post("/register")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Chunked(chunks))
        .unwrap();
    let config = client_config(Some("client1"), &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let r = Resp {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body: body.collect().await.unwrap().to_bytes(),
    };
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
    assert_eq!(client_count(&s).await, 0);
    created(&post(&s, Some("client1"), &json!({})).await);
}

#[tokio::test]
async fn rfc8705_2_1_2_subject_dn_that_is_not_a_distinguished_name_is_invalid_client_metadata() {
    let s = Server::start("").await;
    let r = s
        .tls(Some("client1"))
        .post_json(
            "/register",
            &[],
            &json!({
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "tls_client_auth",
                "tls_client_auth_subject_dn": "just some text"
            }),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    s.stop().await;
}
