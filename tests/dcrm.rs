//! Administrative management with `dcrm` tokens (SPEC §4, §6a.6, §6a.7, §6a.19),
//! initial access tokens for registration (SPEC §3, §6a.8, §6a.21) and the RFC 8414
//! discovery document (SPEC §2, §6a.13).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use http::StatusCode;
use serde_json::{json, Value};

use common::*;

/// The dev admin as a static `tls_client_auth` client that may get dcrm and dcr tokens.
const ADMIN: &str = r#"
[[clients]]
client_id = "admin"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=admin,O=certgate dev"
scope = "dcrm dcr"
introspect = true
"#;

/// Registration by initial access token only, with `extra` lines in `[registration]`
/// and `[management]`.
fn initial_access_config(registration: &str, management: &str) -> String {
    format!(
        "[registration]\nauthentication = [\"initial-access-token\"]\n{registration}\n\
         [management]\n{management}\n{ADMIN}"
    )
}

/// A client_credentials client with a secret, as registered in these tests.
fn client_body() -> Value {
    json!({
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "read",
        "client_name": "reporting",
        "contacts": ["ops@example.com"],
    })
}

/// A token for the static admin (authenticated with the admin certificate) with `scope`,
/// or the admin's whole scope.
async fn admin_token(s: &Server, scope: Option<&str>) -> String {
    let mut params = vec![("grant_type", "client_credentials"), ("client_id", "admin")];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    let r = s.tls(Some("admin")).post_form("/token", &[], &params).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_no_store(&r);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

fn uri(client: &Value) -> String {
    format!("/register/{}", client["client_id"].as_str().unwrap())
}

/// The client's own registration access token works (GET with its certificate, 200).
/// Returns the rotated token.
async fn self_read_works(s: &Server, cert: Option<&str>, client: &Value, token: &str) -> String {
    let r = s
        .tls(cert)
        .get(&uri(client), &[("authorization", &auth(token))])
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A client_credentials token for a registered secret client (Basic, no certificate).
async fn client_access_token(s: &Server, client: &Value) -> String {
    let basic = basic_auth(
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let r = s
        .tls(None)
        .post_form(
            "/token",
            &[("authorization", &basic)],
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["access_token"].as_str().unwrap().to_owned()
}

/// POST /register with an initial access token (if any) and `cert`.
async fn register_with(s: &Server, cert: Option<&str>, token: Option<&str>, body: &Value) -> Resp {
    let a = token.map(auth);
    let headers: Vec<(&str, &str)> = a.iter().map(|a| ("authorization", a.as_str())).collect();
    s.tls(cert).post_json("/register", &headers, body).await
}

fn assert_created(r: &Resp) -> Value {
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

// === dcrm tokens ===

#[tokio::test]
async fn rfc8705_3_dcrm_token_issued_to_the_admin_is_bound_to_the_admin_certificate() {
    let s = Server::start(ADMIN).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let body = introspect_as_admin(&s, &dcrm).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "dcrm");
    assert_eq!(body["client_id"], "admin");
    assert_eq!(body["cnf"], json!({ "x5t#S256": thumbprint("admin") }));
    s.stop().await;
}

#[tokio::test]
async fn spec_4_dcrm_read_returns_the_client_and_rotates_nothing() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    for _ in 0..2 {
        let r = s
            .tls(Some("admin"))
            .get(&uri(&c), &[("authorization", &auth(&dcrm))])
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "body: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let body = r.json();
        assert_eq!(body["client_id"], c["client_id"]);
        assert_eq!(body["client_name"], "reporting");
        assert_eq!(body["scope"], "read");
        assert!(
            body.get("registration_access_token").is_none(),
            "a dcrm read hands out no registration token: {body}"
        );
        assert!(body.get("client_secret").is_none(), "{body}");
    }
    // The client's own token was not replaced, nor its secret.
    self_read_works(
        &s,
        Some("client1"),
        &c,
        c["registration_access_token"].as_str().unwrap(),
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn spec_4_dcrm_update_replaces_the_metadata_without_rotation() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let r = s
        .tls(Some("admin"))
        .put_json(
            &uri(&c),
            &[("authorization", &auth(&dcrm))],
            &json!({
                "client_id": c["client_id"],
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": "read write",
                "client_name": "renamed",
            }),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let body = r.json();
    assert_eq!(body["client_name"], "renamed");
    assert_eq!(body["scope"], "read write");
    assert!(body.get("contacts").is_none(), "values replace: {body}");
    assert!(body.get("registration_access_token").is_none(), "{body}");
    // The client sees the new metadata with its unchanged token.
    let r = s
        .tls(Some("client1"))
        .get(
            &uri(&c),
            &[("authorization", &bearer(&c["registration_access_token"]))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["client_name"], "renamed");
    assert!(r.json().get("contacts").is_none());
    s.stop().await;
}

#[tokio::test]
async fn spec_4_dcrm_delete_removes_the_client_and_kills_its_registration_token() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let own = client_access_token(&s, &c).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let r = s
        .tls(Some("admin"))
        .delete(&uri(&c), &[("authorization", &auth(&dcrm))])
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Its access tokens die with it (SPEC §4).
    assert_eq!(
        introspect_as_admin(&s, &own).await,
        json!({ "active": false })
    );
    let r = s
        .tls(Some("client1"))
        .get(
            &uri(&c),
            &[("authorization", &bearer(&c["registration_access_token"]))],
        )
        .await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    let r = s
        .tls(Some("admin"))
        .get(&uri(&c), &[("authorization", &auth(&dcrm))])
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_19_dcrm_on_a_static_client_is_404_and_the_dcrm_token_survives() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let admin = s.tls(Some("admin"));
    let a = auth(&dcrm);
    let r = admin.get("/register/admin", &[("authorization", &a)]).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = admin
        .delete("/register/admin", &[("authorization", &a)])
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // The static client is untouched and the dcrm token still works.
    admin_token(&s, None).await;
    let r = admin.get(&uri(&c), &[("authorization", &a)]).await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_19_registration_token_on_a_static_clients_uri_is_401_and_not_revoked() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let token = c["registration_access_token"].as_str().unwrap();
    let r = s
        .tls(Some("client1"))
        .get("/register/admin", &[("authorization", &auth(token))])
        .await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    self_read_works(&s, Some("client1"), &c, token).await;
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_7_dcrm_on_an_unknown_client_is_404_and_the_token_is_not_revoked() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let a = auth(&dcrm);
    let admin = s.tls(Some("admin"));
    let r = admin
        .get("/register/no-such-client", &[("authorization", &a)])
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = admin
        .delete("/register/no-such-client", &[("authorization", &a)])
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(introspect_as_admin(&s, &dcrm).await["active"], true);
    let r = admin.get(&uri(&c), &[("authorization", &a)]).await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn rfc8705_3_dcrm_token_with_another_certificate_or_none_is_invalid_token() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let a = auth(&dcrm);
    for cert in [Some("client1"), None] {
        let r = s.tls(cert).get(&uri(&c), &[("authorization", &a)]).await;
        assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        let r = s.tls(cert).delete(&uri(&c), &[("authorization", &a)]).await;
        assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    // Nothing was deleted, and the token still works with the admin certificate.
    let r = s
        .tls(Some("admin"))
        .get(&uri(&c), &[("authorization", &a)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_6_access_token_without_the_dcrm_scope_is_insufficient_scope() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    // The client's own client_credentials token (scope "read").
    let own = client_access_token(&s, &c).await;
    let r = s
        .tls(Some("client1"))
        .get(&uri(&c), &[("authorization", &auth(&own))])
        .await;
    assert_bearer_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    // The admin's token with only the initial access scope is no dcrm token either.
    let dcr = admin_token(&s, Some("dcr")).await;
    let r = s
        .tls(Some("admin"))
        .delete(&uri(&c), &[("authorization", &auth(&dcr))])
        .await;
    assert_bearer_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    self_read_works(
        &s,
        Some("client1"),
        &c,
        c["registration_access_token"].as_str().unwrap(),
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn rfc6750_3_1_revoked_dcrm_token_is_invalid_token() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    let r = s
        .tls(Some("admin"))
        .post_form("/revoke", &[], &[("client_id", "admin"), ("token", &dcrm)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .tls(Some("admin"))
        .get(&uri(&c), &[("authorization", &auth(&dcrm))])
        .await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    s.stop().await;
}

#[tokio::test]
async fn rfc6750_3_1_expired_dcrm_token_is_invalid_token() {
    let s = Server::start(ADMIN).await;
    let c = register(&s, Some("client1"), client_body()).await;
    let dcrm = admin_token(&s, Some("dcrm")).await;
    s.clock.advance(3601);
    let r = s
        .tls(Some("admin"))
        .get(&uri(&c), &[("authorization", &auth(&dcrm))])
        .await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    // A fresh dcrm token works: only the old one expired.
    let fresh = admin_token(&s, Some("dcrm")).await;
    let r = s
        .tls(Some("admin"))
        .get(&uri(&c), &[("authorization", &auth(&fresh))])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

// === initial access tokens ===

#[tokio::test]
async fn spec_3_initial_access_token_registers_a_client_without_a_certificate() {
    let s = Server::start(&initial_access_config("", "")).await;
    let dcr = admin_token(&s, Some("dcr")).await;
    let c = assert_created(&register_with(&s, None, Some(&dcr), &client_body()).await);
    assert!(c["registration_access_token"].is_string(), "{c}");
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_8_initial_access_token_is_consumed_by_one_registration() {
    let s = Server::start(&initial_access_config("", "")).await;
    let dcr = admin_token(&s, Some("dcr")).await;
    assert_created(&register_with(&s, None, Some(&dcr), &client_body()).await);
    let r = register_with(&s, None, Some(&dcr), &client_body()).await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(client_count(&s).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn spec_3_expired_or_revoked_initial_access_token_is_refused() {
    let s = Server::start(&initial_access_config("", "")).await;
    let revoked = admin_token(&s, Some("dcr")).await;
    let r = s
        .tls(Some("admin"))
        .post_form(
            "/revoke",
            &[],
            &[("client_id", "admin"), ("token", &revoked)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = register_with(&s, None, Some(&revoked), &client_body()).await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    let expired = admin_token(&s, Some("dcr")).await;
    s.clock.advance(3600);
    let r = register_with(&s, None, Some(&expired), &client_body()).await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(client_count(&s).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_8_initial_access_token_uses_limit_the_registrations() {
    let s = Server::start(&initial_access_config("initial_access_token_uses = 2", "")).await;
    let dcr = admin_token(&s, Some("dcr")).await;
    for _ in 0..2 {
        assert_created(&register_with(&s, None, Some(&dcr), &client_body()).await);
    }
    let r = register_with(&s, None, Some(&dcr), &client_body()).await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(client_count(&s).await, 2);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_3_failed_registration_does_not_consume_the_initial_access_token() {
    let s = Server::start(&initial_access_config("", "")).await;
    let dcr = admin_token(&s, Some("dcr")).await;
    let bad = json!({ "token_endpoint_auth_method": "no_such_method" });
    let r = register_with(&s, None, Some(&dcr), &bad).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    let r = register_with(
        &s,
        None,
        Some(&dcr),
        &json!({"redirect_uris": ["no-scheme"]}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_redirect_uri");
    assert_eq!(introspect_as_admin(&s, &dcr).await["active"], true);
    assert_created(&register_with(&s, None, Some(&dcr), &client_body()).await);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_8_initial_access_token_is_never_certificate_bound() {
    let s = Server::start(&initial_access_config("", "")).await;
    // Issued to the admin, who authenticated with its certificate.
    let dcr = admin_token(&s, Some("dcr")).await;
    let body = introspect_as_admin(&s, &dcr).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "dcr");
    assert!(body.get("cnf").is_none(), "{body}");
    // Handed on to a client holding another certificate (or none), it still works.
    assert_created(&register_with(&s, Some("client2"), Some(&dcr), &client_body()).await);
    let dcr = admin_token(&s, Some("dcr")).await;
    assert_created(&register_with(&s, None, Some(&dcr), &client_body()).await);
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_8_client_registered_with_an_initial_token_is_bound_to_its_own_certificate() {
    let s = Server::start(&initial_access_config(
        "",
        "require_same_certificate = true",
    ))
    .await;
    let dcr = admin_token(&s, Some("dcr")).await;
    let c = assert_created(&register_with(&s, Some("client1"), Some(&dcr), &client_body()).await);
    let token = c["registration_access_token"].as_str().unwrap();
    // Not the admin's certificate, although the admin issued the initial token.
    let r = s
        .tls(Some("admin"))
        .get(&uri(&c), &[("authorization", &auth(token))])
        .await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    let r = s
        .tls(None)
        .get(&uri(&c), &[("authorization", &auth(token))])
        .await;
    assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    // The refusals did not burn the token (SPEC §6a.3).
    self_read_works(&s, Some("client1"), &c, token).await;
    s.stop().await;
}

#[tokio::test]
async fn spec_6a_21_dcrm_dcr_token_registers_without_being_consumed_and_stays_bound() {
    let s = Server::start(&initial_access_config("", "")).await;
    let wide = admin_token(&s, Some("dcrm dcr")).await;
    let body = introspect_as_admin(&s, &wide).await;
    assert_eq!(body["cnf"], json!({ "x5t#S256": thumbprint("admin") }));
    for _ in 0..2 {
        assert_created(&register_with(&s, Some("admin"), Some(&wide), &client_body()).await);
    }
    for cert in [None, Some("client1")] {
        let r = register_with(&s, cert, Some(&wide), &client_body()).await;
        assert_bearer_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    assert_eq!(client_count(&s).await, 2);
    assert_eq!(introspect_as_admin(&s, &wide).await["active"], true);
    s.stop().await;
}

#[tokio::test]
async fn spec_3_registration_without_an_accepted_authentication_is_401() {
    let s = Server::start(&initial_access_config("", "")).await;
    // SPEC §3: "invalid_token / invalid_client as fits".
    for cert in [None, Some("client1")] {
        let r = register_with(&s, cert, None, &client_body()).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "body: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let error = r.json()["error"].clone();
        assert!(
            error == "invalid_token" || error == "invalid_client",
            "{error}"
        );
    }
    assert_eq!(client_count(&s).await, 0);
    s.stop().await;
}

// === discovery (RFC 8414) ===

async fn discovery(toml: &str) -> Value {
    let s = Server::start(toml).await;
    let r = s
        .tls(None)
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    s.stop().await;
    body
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn rfc8414_2_discovery_lists_the_endpoints_methods_and_scopes() {
    let d = discovery(&format!(
        "[server]\nissuer = \"https://as.example.com\"\n\
         [registration]\nallowed_scopes = [\"read\", \"write\"]\n{ADMIN}"
    ))
    .await;
    assert_eq!(d["issuer"], "https://as.example.com");
    assert_eq!(d["token_endpoint"], "https://as.example.com/token");
    assert_eq!(
        d["registration_endpoint"],
        "https://as.example.com/register"
    );
    assert_eq!(
        d["introspection_endpoint"],
        "https://as.example.com/introspect"
    );
    assert_eq!(d["revocation_endpoint"], "https://as.example.com/revoke");
    assert_eq!(
        sorted(&d["token_endpoint_auth_methods_supported"]),
        [
            "client_secret_basic",
            "client_secret_post",
            "self_signed_tls_client_auth",
            "tls_client_auth",
        ]
    );
    assert!(
        sorted(&d["grant_types_supported"]).contains(&"client_credentials".to_owned()),
        "{d}"
    );
    assert_eq!(d["tls_client_certificate_bound_access_tokens"], true);
    let scopes = sorted(&d["scopes_supported"]);
    for s in ["read", "write"] {
        assert!(scopes.contains(&s.to_owned()), "{scopes:?}");
    }
}

#[tokio::test]
async fn rfc8705_5_mtls_endpoint_aliases_live_under_server_mtls_issuer() {
    let d = discovery(
        "[server]\nissuer = \"https://as.example.com\"\n\
         mtls_issuer = \"https://mtls.as.example.com\"\n",
    )
    .await;
    assert_eq!(
        d["mtls_endpoint_aliases"],
        json!({
            "token_endpoint": "https://mtls.as.example.com/token",
            "registration_endpoint": "https://mtls.as.example.com/register",
            "introspection_endpoint": "https://mtls.as.example.com/introspect",
            "revocation_endpoint": "https://mtls.as.example.com/revoke",
        })
    );
    // The plain endpoints stay under the issuer.
    assert_eq!(d["token_endpoint"], "https://as.example.com/token");
}

#[tokio::test]
async fn spec_6a_13_mtls_endpoint_aliases_fall_back_to_the_issuer() {
    let d = discovery("[server]\nissuer = \"https://as.example.com\"\nmtls_issuer = \"\"\n").await;
    assert_eq!(
        d["mtls_endpoint_aliases"],
        json!({
            "token_endpoint": "https://as.example.com/token",
            "registration_endpoint": "https://as.example.com/register",
            "introspection_endpoint": "https://as.example.com/introspect",
            "revocation_endpoint": "https://as.example.com/revoke",
        })
    );
}
