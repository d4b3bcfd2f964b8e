//! `POST /token`, `/introspect`, `/revoke`: client authentication (RFC 6749 §2.3,
//! RFC 8705 §2), the client_credentials grant, certificate-bound access tokens
//! (RFC 8705 §3), introspection (RFC 7662) and revocation (RFC 7009). SPEC §5, §6a.2,
//! §6a.9, §6a.12.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use http::StatusCode;
use serde_json::{json, Value};

use common::*;

/// The static secret client's id and secret: both need form-encoding in Basic.
const SVC_ID: &str = "svc:reports";
const SVC_SECRET: &str = "p@ss w+rd/=:%é";

/// Open registration (so clients can register without a certificate), the dev admin as a
/// static `tls_client_auth` client, and a static `client_secret_basic` client.
fn config() -> String {
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

[[clients]]
client_id = "{SVC_ID}"
token_endpoint_auth_method = "client_secret_basic"
client_secret_sha256 = "{}"
scope = "reports"
"#,
        sha256_hex(SVC_SECRET)
    )
}

async fn start() -> Server {
    Server::start(&config()).await
}

/// Registers a client_credentials client (no certificate) with `extra` metadata merged
/// into the body; returns the 201 JSON.
async fn register_cc(s: &Server, extra: Value) -> Value {
    let mut body = json!({
        "grant_types": ["client_credentials"],
        "scope": "read write",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    register(s, None, body).await
}

/// Registers a secret client with `method`; returns (client_id, client_secret).
async fn secret_client(s: &Server, method: &str) -> (String, String) {
    let c = register_cc(s, json!({ "token_endpoint_auth_method": method })).await;
    (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// Registers a `tls_client_auth` client declaring `field = value`; returns its client_id.
async fn tls_client(s: &Server, field: &str, value: &str) -> String {
    let c = register_cc(
        s,
        json!({ "token_endpoint_auth_method": "tls_client_auth", field: value }),
    )
    .await;
    c["client_id"].as_str().unwrap().to_owned()
}

/// `POST /token` with `cert`, extra headers and form parameters.
async fn token(
    s: &Server,
    cert: Option<&str>,
    headers: &[(&str, &str)],
    params: &[(&str, &str)],
) -> Resp {
    s.tls(cert).post_form("/token", headers, params).await
}

/// `grant_type=client_credentials` with Basic credentials.
async fn token_basic(s: &Server, id: &str, secret: &str) -> Resp {
    let auth = basic_auth(id, secret);
    token(
        s,
        None,
        &[("authorization", &auth)],
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// `grant_type=client_credentials` for a certificate-authenticated client.
async fn token_cert(s: &Server, cert: Option<&str>, client_id: &str) -> Resp {
    token(
        s,
        cert,
        &[],
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ],
    )
    .await
}

/// Asserts an RFC 6749 §5.1 success and returns its JSON.
fn granted(r: &Resp) -> Value {
    assert_eq!(
        r.status,
        StatusCode::OK,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_no_store(r);
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    body
}

/// The access token of a successful `/token` answer.
fn access_token(r: &Resp) -> String {
    granted(r)["access_token"].as_str().unwrap().to_owned()
}

/// Introspects `tok` as a secret client using Basic, asserting 200.
async fn introspect_basic(s: &Server, id: &str, secret: &str, tok: &str) -> Value {
    let auth = basic_auth(id, secret);
    let r = s
        .tls(None)
        .post_form(
            "/introspect",
            &[("authorization", &auth)],
            &[("token", tok)],
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

/// Revokes `tok` as a secret client using Basic.
async fn revoke_basic(s: &Server, id: &str, secret: &str, tok: &str) -> Resp {
    let auth = basic_auth(id, secret);
    s.tls(None)
        .post_form("/revoke", &[("authorization", &auth)], &[("token", tok)])
        .await
}

// === client authentication ===

#[tokio::test]
async fn rfc6749_2_3_1_client_secret_basic_authenticates_a_registered_client() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let body = granted(&token_basic(&s, &id, &secret).await);
    assert_eq!(body["scope"], "read write");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_1_client_secret_basic_with_a_wrong_secret_is_invalid_client() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let r = token_basic(&s, &id, &format!("{secret}x")).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    // RFC 6749 §5.2: a client that used Basic gets a Basic challenge.
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic")),
        "{:?}",
        r.header("www-authenticate")
    );
    // An unknown client_id is refused the same way.
    let r = token_basic(&s, "no-such-client", &secret).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_1_basic_credentials_are_form_decoded_after_base64() {
    // The static client's id holds ':' and its secret ' ', '+', '/', '=', ':', '%' and a
    // non-ASCII letter: only a server that form-decodes both halves accepts it.
    let s = start().await;
    let body = granted(&token_basic(&s, SVC_ID, SVC_SECRET).await);
    assert_eq!(body["scope"], "reports");
    s.stop().await;
}

#[tokio::test]
async fn static_client_secret_basic_client_authenticates_against_its_configured_digest() {
    let s = start().await;
    granted(&token_basic(&s, SVC_ID, SVC_SECRET).await);
    let r = token_basic(&s, SVC_ID, "p@ss w+rd/=:%e").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    // The digest itself is not a password.
    let r = token_basic(&s, SVC_ID, &sha256_hex(SVC_SECRET)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_1_client_secret_post_authenticates_with_id_and_secret_in_the_body() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_post").await;
    let r = token(
        &s,
        None,
        &[],
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    granted(&r);
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_1_client_secret_post_with_a_wrong_secret_is_invalid_client() {
    let s = start().await;
    let (id, _) = secret_client(&s, "client_secret_post").await;
    let r = token(
        &s,
        None,
        &[],
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", "wrong"),
        ],
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_basic_for_a_client_registered_for_client_secret_post_is_invalid_client() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_post").await;
    let r = token_basic(&s, &id, &secret).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_client_secret_post_for_a_client_registered_for_basic_is_invalid_client() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let r = token(
        &s,
        None,
        &[],
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_2_3_basic_and_client_secret_in_the_body_together_is_invalid_request() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    let r = token(
        &s,
        None,
        &[("authorization", &auth)],
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_2_1_tls_client_auth_with_the_matching_subject_dn_authenticates() {
    let s = start().await;
    let id = tls_client(
        &s,
        "tls_client_auth_subject_dn",
        "CN=client1,O=certgate dev",
    )
    .await;
    granted(&token_cert(&s, Some("client1"), &id).await);
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_2_1_tls_client_auth_with_another_or_no_certificate_is_invalid_client() {
    let s = start().await;
    let id = tls_client(
        &s,
        "tls_client_auth_subject_dn",
        "CN=client1,O=certgate dev",
    )
    .await;
    for cert in [Some("client2"), Some("untrusted"), Some("selfsigned"), None] {
        let r = token_cert(&s, cert, &id).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_2_1_tls_client_auth_requires_a_chain_to_the_trusted_ca() {
    // untrusted.pem's SAN matches, but it is issued by another CA.
    let s = start().await;
    let id = tls_client(&s, "tls_client_auth_san_dns", "untrusted.example.com").await;
    let r = token_cert(&s, Some("untrusted"), &id).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_2_1_2_tls_client_auth_san_dns_matches_a_dns_name_of_the_certificate() {
    let s = start().await;
    let id = tls_client(&s, "tls_client_auth_san_dns", "client1.example.com").await;
    granted(&token_cert(&s, Some("client1"), &id).await);
    let r = token_cert(&s, Some("client2"), &id).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_2_2_self_signed_tls_client_auth_matches_a_certificate_in_jwks() {
    let s = start().await;
    let c = register_cc(
        &s,
        json!({
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": { "keys": [ jwk("selfsigned") ] },
        }),
    )
    .await;
    let id = c["client_id"].as_str().unwrap();
    granted(&token_cert(&s, Some("selfsigned"), id).await);
    for cert in [Some("client1"), None] {
        let r = token_cert(&s, cert, id).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    s.stop().await;
}

#[tokio::test]
async fn static_tls_client_auth_client_authenticates_with_its_certificate() {
    let s = start().await;
    let body = granted(&token_cert(&s, Some("admin"), "admin").await);
    assert_eq!(body["scope"], "dcrm dcr");
    for cert in [Some("client1"), None] {
        let r = token_cert(&s, cert, "admin").await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    s.stop().await;
}

// === the client_credentials grant ===

#[tokio::test]
async fn rfc6749_4_4_2_missing_grant_type_is_invalid_request() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    let r = token(&s, None, &[("authorization", &auth)], &[("scope", "read")]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_5_2_grant_type_password_is_unsupported_grant_type() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    let r = token(
        &s,
        None,
        &[("authorization", &auth)],
        &[
            ("grant_type", "password"),
            ("username", "u"),
            ("password", "p"),
        ],
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_3_3_scope_beyond_the_registered_scope_is_invalid_scope() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    for scope in ["read admin", "dcrm", "dcr"] {
        let r = token(
            &s,
            None,
            &[("authorization", &auth)],
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_scope");
    }
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_3_3_without_scope_the_registered_scope_is_granted() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    assert_eq!(
        introspect_basic(&s, &id, &secret, &tok).await["scope"],
        "read write"
    );
    // A narrower request gets exactly what it asked for.
    let auth = basic_auth(&id, &secret);
    let r = token(
        &s,
        None,
        &[("authorization", &auth)],
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await;
    assert_eq!(granted(&r)["scope"], "read");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_5_2_client_not_registered_for_client_credentials_is_unauthorized_client() {
    let s = start().await;
    let c = register(
        &s,
        None,
        json!({
            "grant_types": ["authorization_code"],
            "redirect_uris": ["https://app.example.com/cb"],
            "scope": "read",
        }),
    )
    .await;
    let r = token_basic(
        &s,
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unauthorized_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_3_1_repeated_parameter_is_invalid_request() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    let r = token(
        &s,
        None,
        &[("authorization", &auth)],
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn rfc6749_3_2_token_request_that_is_not_form_encoded_is_415() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    let r = s
        .tls(None)
        .post_json(
            "/token",
            &[("authorization", &auth)],
            &json!({ "grant_type": "client_credentials" }),
        )
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");
    s.stop().await;
}

// === certificate-bound access tokens (RFC 8705 §3) ===

#[tokio::test]
async fn rfc8705_3_token_of_a_tls_client_auth_client_carries_cnf_with_the_certificate_thumbprint() {
    let s = start().await;
    let id = tls_client(
        &s,
        "tls_client_auth_subject_dn",
        "CN=client1,O=certgate dev",
    )
    .await;
    let tok = access_token(&token_cert(&s, Some("client1"), &id).await);
    // The client introspects its own token, authenticating with the same certificate.
    let r = s
        .tls(Some("client1"))
        .post_form("/introspect", &[], &[("client_id", &id), ("token", &tok)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["cnf"], json!({ "x5t#S256": thumbprint("client1") }));
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_3_bound_token_refused_with_another_certificate() {
    // The client's own token on its registration URI: with the bound certificate it is a
    // valid token lacking the dcrm scope (403); with another certificate it is no valid
    // token at all (401).
    let s = start().await;
    let id = tls_client(
        &s,
        "tls_client_auth_subject_dn",
        "CN=client1,O=certgate dev",
    )
    .await;
    let tok = access_token(&token_cert(&s, Some("client1"), &id).await);
    let auth = format!("Bearer {tok}");
    let path = format!("/register/{id}");
    let r = s
        .tls(Some("client1"))
        .get(&path, &[("authorization", &auth)])
        .await;
    assert_bearer_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    for cert in [Some("client2"), None] {
        let r = s.tls(cert).get(&path, &[("authorization", &auth)]).await;
        assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_3_secret_client_with_bound_tokens_gets_a_token_bound_to_the_presented_certificate()
{
    let s = start().await;
    let c = register_cc(
        &s,
        json!({
            "token_endpoint_auth_method": "client_secret_basic",
            "tls_client_certificate_bound_access_tokens": true,
        }),
    )
    .await;
    let (id, secret) = (
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    );
    let auth = basic_auth(id, secret);
    let r = token(
        &s,
        Some("client2"),
        &[("authorization", &auth)],
        &[("grant_type", "client_credentials")],
    )
    .await;
    let tok = access_token(&r);
    let body = introspect_basic(&s, id, secret, &tok).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["cnf"], json!({ "x5t#S256": thumbprint("client2") }));
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_12_bound_token_client_without_a_certificate_is_invalid_request() {
    let s = start().await;
    let c = register_cc(
        &s,
        json!({
            "token_endpoint_auth_method": "client_secret_basic",
            "tls_client_certificate_bound_access_tokens": true,
        }),
    )
    .await;
    let r = token_basic(
        &s,
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_3_secret_client_token_without_binding_has_no_cnf_even_with_a_certificate() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let auth = basic_auth(&id, &secret);
    let r = token(
        &s,
        Some("client1"),
        &[("authorization", &auth)],
        &[("grant_type", "client_credentials")],
    )
    .await;
    let tok = access_token(&r);
    let body = introspect_basic(&s, &id, &secret, &tok).await;
    assert_eq!(body["active"], true);
    assert!(body.get("cnf").is_none(), "{body}");
    s.stop().await;
}

// === introspection (RFC 7662) ===

#[tokio::test]
async fn rfc7662_2_2_client_introspects_its_own_active_token() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    let body = introspect_basic(&s, &id, &secret, &tok).await;
    assert_eq!(
        body,
        json!({
            "active": true,
            "scope": "read write",
            "client_id": id,
            "token_type": "Bearer",
            "iat": T0,
            "exp": T0 + 3600,
        })
    );
    s.stop().await;
}

#[tokio::test]
async fn rfc7662_2_1_introspection_requires_client_authentication() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    let r = s
        .tls(None)
        .post_form("/introspect", &[], &[("token", &tok)])
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    let auth = basic_auth(&id, "wrong");
    let r = s
        .tls(None)
        .post_form(
            "/introspect",
            &[("authorization", &auth)],
            &[("token", &tok)],
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn rfc7662_2_2_revoked_token_is_inactive() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    assert_eq!(
        revoke_basic(&s, &id, &secret, &tok).await.status,
        StatusCode::OK
    );
    assert_eq!(
        introspect_basic(&s, &id, &secret, &tok).await,
        json!({ "active": false })
    );
    s.stop().await;
}

#[tokio::test]
async fn rfc7662_2_2_unknown_token_is_inactive() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    for tok in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "garbage"] {
        assert_eq!(
            introspect_basic(&s, &id, &secret, tok).await,
            json!({ "active": false })
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn rfc7662_2_2_another_clients_token_is_inactive_for_the_caller() {
    let s = start().await;
    let (a, a_secret) = secret_client(&s, "client_secret_basic").await;
    let (b, b_secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &a, &a_secret).await);
    assert_eq!(
        introspect_basic(&s, &b, &b_secret, &tok).await,
        json!({ "active": false })
    );
    // Still active for its owner: asking about it changed nothing.
    assert_eq!(
        introspect_basic(&s, &a, &a_secret, &tok).await["active"],
        true
    );
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_9_static_client_with_introspect_sees_any_token() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    let body = introspect_as_admin(&s, &tok).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], id.as_str());
    assert_eq!(body["scope"], "read write");
    // A static client without `introspect` sees only its own tokens.
    let auth = basic_auth(SVC_ID, SVC_SECRET);
    let r = s
        .tls(None)
        .post_form(
            "/introspect",
            &[("authorization", &auth)],
            &[("token", &tok)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({ "active": false }));
    s.stop().await;
}

#[tokio::test]
async fn rfc7662_2_2_expired_token_is_inactive() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    s.clock.advance(3599);
    assert_eq!(
        introspect_basic(&s, &id, &secret, &tok).await["active"],
        true
    );
    s.clock.advance(1);
    assert_eq!(
        introspect_basic(&s, &id, &secret, &tok).await,
        json!({ "active": false })
    );
    s.stop().await;
}

// === revocation (RFC 7009) ===

#[tokio::test]
async fn rfc7009_2_2_revoking_an_own_token_answers_200_and_the_token_becomes_inactive() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    let r = revoke_basic(&s, &id, &secret, &tok).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        introspect_as_admin(&s, &tok).await,
        json!({ "active": false })
    );
    // Revoking it again is still a success (RFC 7009 §2.2).
    assert_eq!(
        revoke_basic(&s, &id, &secret, &tok).await.status,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn rfc7009_2_2_revoking_an_unknown_token_answers_200() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    for tok in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "garbage"] {
        let r = revoke_basic(&s, &id, &secret, tok).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    s.stop().await;
}

#[tokio::test]
async fn rfc7009_2_1_revocation_requires_client_authentication() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    let r = s
        .tls(None)
        .post_form("/revoke", &[], &[("token", &tok)])
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(introspect_as_admin(&s, &tok).await["active"], true);
    s.stop().await;
}

#[tokio::test]
async fn rfc7009_2_1_another_clients_token_is_not_revoked() {
    let s = start().await;
    let (a, a_secret) = secret_client(&s, "client_secret_basic").await;
    let (b, b_secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &a, &a_secret).await);
    let r = revoke_basic(&s, &b, &b_secret, &tok).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unauthorized_client");
    assert_eq!(
        introspect_basic(&s, &a, &a_secret, &tok).await["active"],
        true
    );
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_9_static_client_with_introspect_revokes_any_token() {
    let s = start().await;
    let (id, secret) = secret_client(&s, "client_secret_basic").await;
    let tok = access_token(&token_basic(&s, &id, &secret).await);
    let r = s
        .tls(Some("admin"))
        .post_form("/revoke", &[], &[("client_id", "admin"), ("token", &tok)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        introspect_basic(&s, &id, &secret, &tok).await,
        json!({ "active": false })
    );
    s.stop().await;
}

#[tokio::test]
async fn rfc7592_2_3_deleting_a_client_kills_its_access_tokens() {
    let s = start().await;
    let c = register_cc(
        &s,
        json!({ "token_endpoint_auth_method": "client_secret_basic" }),
    )
    .await;
    let (id, secret) = (
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    );
    let tok = access_token(&token_basic(&s, id, secret).await);
    assert_eq!(introspect_as_admin(&s, &tok).await["active"], true);
    let r = s
        .tls(None)
        .delete(
            &format!("/register/{id}"),
            &[("authorization", &bearer(&c["registration_access_token"]))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        introspect_as_admin(&s, &tok).await,
        json!({ "active": false })
    );
    // And the deleted client cannot authenticate for a new one.
    let r = token_basic(&s, id, secret).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}
