//! `GET|PUT|DELETE /register/{client_id}` with the registration access token (RFC 7592,
//! SPEC §4, §6a): rotation on every read and update, the update rules, deletion, the
//! token's two time windows, certificate binding, the rotation grace, and atomicity.
//!
//! Every test starts the real server on loopback and talks real TLS with the dev PKI; time
//! moves only through the injected clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use common::*;

const OPEN: &str = "[registration]\nauthentication = []\n";

/// A well-formed statement (`{"alg":"RS256"}`, `{"iss":"https://unknown.example",
/// "software_id":"x"}`) from an issuer no configuration trusts.
const UNKNOWN_ISSUER_STATEMENT: &str = "eyJhbGciOiJSUzI1NiJ9.\
    eyJpc3MiOiJodHRwczovL3Vua25vd24uZXhhbXBsZSIsInNvZnR3YXJlX2lkIjoieCJ9.c2ln";
const DAY: u64 = 86_400;

// === helpers ===

/// The path of a registered client's configuration endpoint.
fn path(reg: &Value) -> String {
    format!("/register/{}", id(reg))
}

fn id(reg: &Value) -> &str {
    reg["client_id"].as_str().expect("client_id")
}

/// The registration access token of a registration or management answer.
fn token(v: &Value) -> String {
    v["registration_access_token"]
        .as_str()
        .expect("registration_access_token")
        .to_owned()
}

fn secret(v: &Value) -> String {
    v["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned()
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

async fn read(s: &Server, cert: Option<&str>, path: &str, token: &str) -> Resp {
    s.tls(cert)
        .get(path, &[("authorization", &auth(token))])
        .await
}

async fn update(s: &Server, cert: Option<&str>, path: &str, token: &str, body: &Value) -> Resp {
    s.tls(cert)
        .put_json(path, &[("authorization", &auth(token))], body)
        .await
}

async fn remove(s: &Server, cert: Option<&str>, path: &str, token: &str) -> Resp {
    s.tls(cert)
        .delete(path, &[("authorization", &auth(token))])
        .await
}

/// Asserts a 200 management answer (JSON, not cacheable) and returns its body.
fn ok(r: &Resp) -> Value {
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_no_store(r);
    r.json()
}

/// Asserts RFC 6750 §3.1 `invalid_token`: 401, JSON error, Bearer challenge.
fn assert_invalid_token(r: &Resp) {
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"certgate\", error=\"invalid_token\""),
        "RFC 6750 challenge"
    );
}

/// Asserts a 204 deletion.
fn deleted(r: &Resp) {
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.body.is_empty());
}

/// Registers a client_credentials client with client_secret_post as client1.
async fn register_secret_client(s: &Server) -> Value {
    register(
        s,
        Some("client1"),
        json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
            "client_name": "secret client",
        }),
    )
    .await
}

/// `POST /token` (client_credentials, client_secret_post) as client1.
async fn token_endpoint(s: &Server, client_id: &str, client_secret: &str) -> Resp {
    let form = format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}"
    );
    s.tls(Some("client1"))
        .send(
            Method::POST,
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await
}

/// The body of a PUT that keeps everything but `client_name`.
fn renamed(reg: &Value, name: &str) -> Value {
    json!({"client_id": id(reg), "client_name": name})
}

// === read (RFC 7592 §2.1, §3) and rotation (SPEC §4) ===

#[tokio::test]
async fn rfc7592_2_1_read_returns_200_json_with_the_current_metadata() {
    let s = Server::start("").await;
    let body = json!({
        "client_name": "reader",
        "scope": "read write",
        "redirect_uris": ["https://app.example.com/cb"],
        "x_custom": {"k": [1, 2]},
        "client_name#fr": "lecteur",
    });
    let reg = register(&s, Some("client1"), body.clone()).await;
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    assert_eq!(got["client_id"], reg["client_id"]);
    assert_eq!(got["client_id_issued_at"], T0);
    for (field, value) in body.as_object().unwrap() {
        assert_eq!(&got[field], value, "{field}");
    }
    for field in [
        "grant_types",
        "response_types",
        "token_endpoint_auth_method",
    ] {
        assert_eq!(got[field], reg[field], "{field}");
    }
}

#[tokio::test]
async fn rfc7592_3_read_response_contains_registration_access_token_and_registration_client_uri() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    assert!(got["registration_access_token"].is_string());
    assert_eq!(
        got["registration_client_uri"],
        format!("https://localhost:8443/register/{}", id(&reg))
    );
    assert_eq!(
        got["registration_client_uri"],
        reg["registration_client_uri"]
    );
    assert_eq!(got["registration_access_token_expires_in"], 31_536_000);
    assert_eq!(got["client_secret_expires_at"], 0);
}

#[tokio::test]
async fn spec_4_read_rotates_the_token_and_the_secret_and_the_old_token_dies_at_once() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let r1 = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_ne!(token(&r1), token(&reg), "a new registration_access_token");
    assert_ne!(secret(&r1), secret(&reg), "a new client_secret");
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    let r2 = ok(&read(&s, Some("client1"), &p, &token(&r1)).await);
    assert_ne!(token(&r2), token(&r1));
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&r1)).await);
}

#[tokio::test]
async fn spec_4_read_rotation_kills_the_old_client_secret_at_once() {
    let s = Server::start("").await;
    let reg = register_secret_client(&s).await;
    assert_eq!(
        token_endpoint(&s, id(&reg), &secret(&reg)).await.status,
        StatusCode::OK,
        "the registered secret works before the read"
    );
    let r1 = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    assert_error(
        &token_endpoint(&s, id(&reg), &secret(&reg)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );
    assert_eq!(
        token_endpoint(&s, id(&reg), &secret(&r1)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rfc7592_2_2_client_secret_in_put_must_match_the_rotated_secret_not_the_old_one() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let r1 = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    let mut body = renamed(&reg, "x");
    body["client_secret"] = reg["client_secret"].clone();
    let r = update(&s, Some("client1"), &p, &token(&r1), &body).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    body["client_secret"] = r1["client_secret"].clone();
    ok(&update(&s, Some("client1"), &p, &token(&r1), &body).await);
}

#[tokio::test]
async fn rfc7592_2_invalid_token_is_401_invalid_token_with_a_bearer_challenge() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let well_formed_but_unknown = "A".repeat(43);
    for t in [well_formed_but_unknown.as_str(), "garbage", "a.b.c"] {
        assert_invalid_token(&read(&s, Some("client1"), &p, t).await);
        assert_invalid_token(&update(&s, Some("client1"), &p, t, &renamed(&reg, "x")).await);
        assert_invalid_token(&remove(&s, Some("client1"), &p, t).await);
    }
    // Nothing happened to the client.
    ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
}

#[tokio::test]
async fn rfc7592_2_request_without_authorization_is_401_invalid_token() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let c = s.tls(Some("client1"));
    for headers in [
        vec![],
        vec![("authorization", "Basic Y2xpZW50OnNlY3JldA==")],
        vec![("authorization", "Bearer")],
    ] {
        let r = c.get(&p, &headers).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "a Bearer challenge: {:?}",
            r.headers
        );
    }
    ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
}

#[tokio::test]
async fn rfc7592_2_1_read_of_an_unknown_client_is_401_and_the_token_is_revoked() {
    let s = Server::start("").await;
    let a = register(&s, Some("client1"), json!({})).await;
    let r = read(&s, Some("client1"), "/register/no-such-client", &token(&a)).await;
    assert_invalid_token(&r);
    assert_invalid_token(&read(&s, Some("client1"), &path(&a), &token(&a)).await);
}

#[tokio::test]
async fn rfc7592_2_2_update_of_an_unknown_client_is_401_and_the_token_is_revoked() {
    let s = Server::start("").await;
    let a = register(&s, Some("client1"), json!({})).await;
    let body = json!({"client_id": "no-such-client"});
    let r = update(
        &s,
        Some("client1"),
        "/register/no-such-client",
        &token(&a),
        &body,
    )
    .await;
    assert_invalid_token(&r);
    assert_invalid_token(&read(&s, Some("client1"), &path(&a), &token(&a)).await);
}

#[tokio::test]
async fn rfc7592_2_3_delete_of_an_unknown_client_is_401_and_the_token_is_revoked() {
    let s = Server::start("").await;
    let a = register(&s, Some("client1"), json!({})).await;
    let r = remove(&s, Some("client1"), "/register/no-such-client", &token(&a)).await;
    assert_invalid_token(&r);
    assert_invalid_token(&read(&s, Some("client1"), &path(&a), &token(&a)).await);
    assert_eq!(client_count(&s).await, 1, "client A itself is not deleted");
}

#[tokio::test]
async fn spec_6a_6_token_of_client_a_on_client_b_is_401_and_not_revoked() {
    let s = Server::start("").await;
    let a = register(&s, Some("client1"), json!({"client_name": "A"})).await;
    let b = register(&s, Some("client2"), json!({"client_name": "B"})).await;
    assert_invalid_token(&read(&s, Some("client1"), &path(&b), &token(&a)).await);
    assert_invalid_token(
        &update(
            &s,
            Some("client1"),
            &path(&b),
            &token(&a),
            &renamed(&b, "pwned"),
        )
        .await,
    );
    assert_invalid_token(&remove(&s, Some("client1"), &path(&b), &token(&a)).await);
    assert_eq!(client_count(&s).await, 2);
    let a1 = ok(&read(&s, Some("client1"), &path(&a), &token(&a)).await);
    assert_eq!(a1["client_name"], "A");
    let b1 = ok(&read(&s, Some("client2"), &path(&b), &token(&b)).await);
    assert_eq!(b1["client_name"], "B", "B was not modified");
}

#[tokio::test]
async fn spec_6a_19_registration_token_on_a_static_client_is_401_and_not_revoked() {
    let s = Server::start(
        r#"
[[clients]]
client_id = "admin"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=admin,O=certgate dev"
scope = "dcrm dcr"
"#,
    )
    .await;
    let a = register(&s, Some("client1"), json!({})).await;
    assert_invalid_token(&read(&s, Some("client1"), "/register/admin", &token(&a)).await);
    ok(&read(&s, Some("client1"), &path(&a), &token(&a)).await);
}

#[tokio::test]
async fn rfc7592_configuration_endpoint_answers_other_methods_with_405_and_allow() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    for method in [Method::POST, Method::PATCH] {
        let r = s
            .tls(Some("client1"))
            .send(
                method,
                &path(&reg),
                &[("authorization", &auth(&token(&reg)))],
                None,
            )
            .await;
        assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(r.header("allow"), Some("GET, PUT, DELETE"));
    }
    ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
}

// === update (RFC 7592 §2.2, SPEC §4, §6a.3, §6a.11) ===

/// Asserts a PUT with `cur`'s token was refused with `status`/`error` and left the client
/// as it was: the same token still reads it and its metadata is unchanged. That read
/// rotates, so `cur` becomes the read answer (the current credentials).
async fn assert_put_refused(
    s: &Server,
    cur: &mut Value,
    body: &Value,
    status: StatusCode,
    error: &str,
) {
    let p = path(cur);
    let r = update(s, Some("client1"), &p, &token(cur), body).await;
    assert_error(&r, status, error);
    let got = ok(&read(s, Some("client1"), &p, &token(cur)).await);
    assert_eq!(got["client_name"], cur["client_name"], "metadata unchanged");
    *cur = got;
}

#[tokio::test]
async fn rfc7592_2_2_put_must_include_client_id() {
    let s = Server::start("").await;
    let mut reg = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    assert_put_refused(
        &s,
        &mut reg,
        &json!({"client_name": "new"}),
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn rfc7592_2_2_put_client_id_must_be_the_current_client_id() {
    for other in [json!("someone-else"), json!(42), json!(null)] {
        let s = Server::start("").await;
        let mut reg = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
        assert_put_refused(
            &s,
            &mut reg,
            &json!({"client_id": other, "client_name": "new"}),
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
        )
        .await;
    }
}

#[tokio::test]
async fn rfc7592_2_2_put_client_secret_if_present_must_match_the_current_one() {
    let s = Server::start("").await;
    let mut cur = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    let mut body = renamed(&cur, "new");
    body["client_secret"] = json!("my-own-chosen-secret");
    assert_put_refused(
        &s,
        &mut cur,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
    body["client_secret"] = cur["client_secret"].clone();
    let r = ok(&update(&s, Some("client1"), &path(&cur), &token(&cur), &body).await);
    assert_eq!(r["client_name"], "new");
    assert_ne!(
        r["client_secret"], body["client_secret"],
        "the server issues the secret; the client never sets it"
    );
}

async fn server_field_in_put_is_refused(field: &str) {
    let s = Server::start("").await;
    let mut reg = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    let mut body = renamed(&reg, "new");
    body[field] = reg[field].clone();
    assert!(
        !body[field].is_null(),
        "{field} comes from the registration"
    );
    assert_put_refused(
        &s,
        &mut reg,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn rfc7592_2_2_put_must_not_include_registration_access_token() {
    server_field_in_put_is_refused("registration_access_token").await;
}

#[tokio::test]
async fn rfc7592_2_2_put_must_not_include_registration_client_uri() {
    server_field_in_put_is_refused("registration_client_uri").await;
}

#[tokio::test]
async fn rfc7592_2_2_put_must_not_include_client_secret_expires_at() {
    server_field_in_put_is_refused("client_secret_expires_at").await;
}

#[tokio::test]
async fn rfc7592_2_2_put_must_not_include_client_id_issued_at() {
    server_field_in_put_is_refused("client_id_issued_at").await;
}

#[tokio::test]
async fn rfc7592_2_2_omitted_fields_are_deleted_values_replace_never_merge() {
    let s = Server::start("").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({
            "client_name": "full",
            "client_name#fr": "complet",
            "scope": "read write",
            "contacts": ["a@example.com"],
            "redirect_uris": ["https://a.example.com/cb", "https://b.example.com/cb"],
            "x_custom": {"keep": "me?"},
            "tls_client_certificate_bound_access_tokens": true,
        }),
    )
    .await;
    let body = json!({
        "client_id": id(&reg),
        "redirect_uris": ["https://c.example.com/cb"],
    });
    let put = ok(&update(&s, Some("client1"), &path(&reg), &token(&reg), &body).await);
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&put)).await);
    for answer in [&put, &got] {
        assert_eq!(answer["redirect_uris"], json!(["https://c.example.com/cb"]));
        for gone in [
            "client_name",
            "client_name#fr",
            "scope",
            "contacts",
            "x_custom",
            "tls_client_certificate_bound_access_tokens",
        ] {
            assert!(answer.get(gone).is_none(), "{gone} was omitted: {answer}");
        }
    }
}

#[tokio::test]
async fn rfc7592_2_2_omitted_fields_take_the_server_defaults_which_are_returned() {
    let s = Server::start("").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
        }),
    )
    .await;
    let put = ok(&update(
        &s,
        Some("client1"),
        &path(&reg),
        &token(&reg),
        &json!({"client_id": id(&reg)}),
    )
    .await);
    assert_eq!(put["grant_types"], json!(["authorization_code"]));
    assert_eq!(put["response_types"], json!(["code"]));
    assert_eq!(put["token_endpoint_auth_method"], "client_secret_basic");
}

#[tokio::test]
async fn rfc7592_2_2_put_of_the_read_response_without_server_fields_is_accepted() {
    let s = Server::start("").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({
            "client_name": "round trip",
            "redirect_uris": ["https://app.example.com/cb"],
            "scope": "a b",
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=client1,O=certgate dev",
            "x_ext": [1],
        }),
    )
    .await;
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    let mut body = got.clone();
    for field in [
        "registration_access_token",
        "registration_client_uri",
        "client_secret_expires_at",
        "client_id_issued_at",
    ] {
        body.as_object_mut().unwrap().remove(field);
    }
    let put = ok(&update(&s, Some("client1"), &path(&reg), &token(&got), &body).await);
    for (field, value) in got.as_object().unwrap() {
        if field != "registration_access_token" {
            assert_eq!(&put[field], value, "{field} survives the round trip");
        }
    }
}

#[tokio::test]
async fn rfc7592_2_2_client_id_and_issue_time_never_change() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    s.clock.advance(3600);
    let put = ok(&update(
        &s,
        Some("client1"),
        &path(&reg),
        &token(&reg),
        &renamed(&reg, "later"),
    )
    .await);
    assert_eq!(put["client_id"], reg["client_id"]);
    assert_eq!(put["client_id_issued_at"], T0);
    assert_eq!(
        put["registration_client_uri"],
        reg["registration_client_uri"]
    );
}

#[tokio::test]
async fn spec_4_put_validates_like_registration() {
    let s = Server::start("").await;
    let mut cur = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    let cid = id(&cur).to_owned();
    for (body, error) in [
        (
            json!({"client_id": cid, "redirect_uris": ["https://a.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_id": cid, "redirect_uris": ["relative/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_id": cid, "scope": "dcrm"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_id": cid, "grant_types": ["password"], "response_types": []}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_id": cid, "grant_types": ["client_credentials"], "response_types": ["code"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_id": cid, "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_id": cid, "token_endpoint_auth_method": "tls_client_auth"}),
            "invalid_client_metadata",
        ),
        (
            json!({
                "client_id": cid,
                "jwks": {"keys": [jwk("client1")]},
                "jwks_uri": "https://a.example/jwks",
            }),
            "invalid_client_metadata",
        ),
        (
            json!({"client_id": cid, "software_statement": "a.b.c"}),
            "invalid_software_statement",
        ),
        (
            json!({"client_id": cid, "software_statement": UNKNOWN_ISSUER_STATEMENT}),
            "unapproved_software_statement",
        ),
    ] {
        assert_put_refused(&s, &mut cur, &body, StatusCode::BAD_REQUEST, error).await;
    }
}

#[tokio::test]
async fn spec_6a_3_rejected_puts_rotate_nothing() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    let p = path(&reg);
    let t0 = token(&reg);
    let c = s.tls(Some("client1"));
    let bearer = auth(&t0);
    let json_ct = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let rejected = [
        update(&s, Some("client1"), &p, &t0, &json!({"client_name": "x"})).await,
        update(
            &s,
            Some("client1"),
            &p,
            &t0,
            &json!({"client_id": id(&reg), "client_secret": "wrong"}),
        )
        .await,
        update(
            &s,
            Some("client1"),
            &p,
            &t0,
            &json!({"client_id": id(&reg), "redirect_uris": ["#"]}),
        )
        .await,
        c.send(
            Method::PUT,
            &p,
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "text/plain"),
            ],
            Some(b"{}".to_vec()),
        )
        .await,
        c.send(Method::PUT, &p, &json_ct, Some(vec![b' '; 100_000]))
            .await,
    ];
    for r in &rejected {
        assert!(r.status.is_client_error(), "{:?}", r.status);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // The registration token and the client secret are both still the registered ones.
    let mut body = renamed(&reg, "accepted");
    body["client_secret"] = reg["client_secret"].clone();
    let put = ok(&update(&s, Some("client1"), &p, &t0, &body).await);
    assert_eq!(put["client_name"], "accepted");
}

#[tokio::test]
async fn spec_4_put_rotates_like_get() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let put = ok(&update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "v2")).await);
    assert_eq!(put["client_name"], "v2");
    assert_ne!(token(&put), token(&reg));
    assert_ne!(secret(&put), secret(&reg));
    assert_eq!(put["registration_access_token_expires_in"], 31_536_000);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    let got = ok(&read(&s, Some("client1"), &p, &token(&put)).await);
    assert_eq!(got["client_name"], "v2");
}

#[tokio::test]
async fn put_switching_to_none_drops_the_secret_and_switching_back_issues_one() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let none = ok(&update(
        &s,
        Some("client1"),
        &p,
        &token(&reg),
        &json!({"client_id": id(&reg), "token_endpoint_auth_method": "none"}),
    )
    .await);
    assert!(none.get("client_secret").is_none(), "{none}");
    assert!(none.get("client_secret_expires_at").is_none(), "{none}");
    let back = ok(&update(
        &s,
        Some("client1"),
        &p,
        &token(&none),
        &json!({"client_id": id(&reg), "token_endpoint_auth_method": "client_secret_basic"}),
    )
    .await);
    assert!(back["client_secret"].is_string(), "{back}");
    assert_ne!(back["client_secret"], reg["client_secret"]);
    assert_eq!(back["client_secret_expires_at"], 0);
}

#[tokio::test]
async fn spec_4_put_changing_only_between_secret_methods_needs_no_certificate() {
    // An openly registered client without a certificate changes no certificate-matching
    // metadata when it moves from client_secret_basic to client_secret_post.
    let s = Server::start(OPEN).await;
    let reg = register(&s, None, json!({"client_name": "no cert"})).await;
    let body = json!({
        "client_id": id(&reg),
        "client_name": "no cert",
        "token_endpoint_auth_method": "client_secret_post",
    });
    let r = update(&s, None, &path(&reg), &token(&reg), &body).await;
    let put = ok(&r);
    assert_eq!(put["token_endpoint_auth_method"], "client_secret_post");
}

#[tokio::test]
async fn malformed_put_bodies_are_4xx_json_and_burn_nothing() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    let p = path(&reg);
    let bearer = auth(&token(&reg));
    let c = s.tls(Some("client1"));
    let mut huge = format!("{{\"client_id\": \"{}\", \"x\": \"", id(&reg)).into_bytes();
    huge.resize(10 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"\"}");
    let cases: Vec<(Option<&str>, Vec<u8>, StatusCode)> = vec![
        (
            Some("application/json"),
            b"not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("application/json"),
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("application/json"),
            Vec::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("application/json"),
            b"{\"client_name\": \"\xff\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("application/json"),
            format!("{}{}", "[".repeat(1000), "]".repeat(1000)).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("application/json"),
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Some("text/plain"),
            b"{}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (None, b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ];
    for (content_type, body, status) in cases {
        let mut headers = vec![("authorization", bearer.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let r = c.send(Method::PUT, &p, &headers, Some(body)).await;
        assert_error(&r, status, "invalid_request");
    }
    let got = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(got["client_name"], "orig");
    assert_eq!(client_count(&s).await, 1);
}

#[tokio::test]
async fn spec_6a_11_put_with_json_charset_parameter_is_accepted() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let bearer = auth(&token(&reg));
    let r = s
        .tls(Some("client1"))
        .send(
            Method::PUT,
            &path(&reg),
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json; charset=utf-8"),
            ],
            Some(renamed(&reg, "cs").to_string().into_bytes()),
        )
        .await;
    assert_eq!(ok(&r)["client_name"], "cs");
}

// === delete (RFC 7592 §2.3, SPEC §4) ===

#[tokio::test]
async fn rfc7592_2_3_delete_is_204_and_the_token_stops_working() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    deleted(&remove(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(client_count(&s).await, 0);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_invalid_token(&update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "x")).await);
    assert_invalid_token(&remove(&s, Some("client1"), &p, &token(&reg)).await);
}

#[tokio::test]
async fn rfc7592_2_3_deleted_client_is_gone_and_its_secret_no_longer_authenticates() {
    let s = Server::start("").await;
    let a = register_secret_client(&s).await;
    let b = register(&s, Some("client2"), json!({})).await;
    deleted(&remove(&s, Some("client1"), &path(&a), &token(&a)).await);
    assert_eq!(client_count(&s).await, 1);
    assert_error(
        &token_endpoint(&s, id(&a), &secret(&a)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );
    // B's token on the deleted client's URI: the client does not exist (RFC 7592 §2.1).
    assert_invalid_token(&read(&s, Some("client2"), &path(&a), &token(&b)).await);
    assert_invalid_token(&read(&s, Some("client2"), &path(&b), &token(&b)).await);
}

// === the two token windows (SPEC §4, §6a.18) ===

#[tokio::test]
async fn spec_4_get_works_until_the_last_second_of_the_read_update_window() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    s.clock.advance(28 * DAY - 1);
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    assert_eq!(got["registration_access_token_expires_in"], 31_536_000);
}

#[tokio::test]
async fn spec_4_put_works_until_the_last_second_of_the_read_update_window() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    s.clock.advance(28 * DAY - 1);
    ok(&update(
        &s,
        Some("client1"),
        &path(&reg),
        &token(&reg),
        &renamed(&reg, "late"),
    )
    .await);
}

#[tokio::test]
async fn spec_4_after_the_read_update_window_get_and_put_are_401_deletion_only_and_delete_works() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    s.clock.advance(28 * DAY + 1);
    for r in [
        read(&s, Some("client1"), &p, &token(&reg)).await,
        update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "x")).await,
    ] {
        assert_invalid_token(&r);
        let description = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(
            description.contains("deletion only"),
            "says the token is good for deletion only: {description:?}"
        );
    }
    deleted(&remove(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(client_count(&s).await, 0);
}

#[tokio::test]
async fn spec_4_delete_works_until_the_last_second_of_the_token_lifetime() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    s.clock.advance(365 * DAY - 1);
    deleted(&remove(&s, Some("client1"), &path(&reg), &token(&reg)).await);
}

#[tokio::test]
async fn spec_4_after_the_token_lifetime_delete_is_401_too() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    s.clock.advance(365 * DAY + 1);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_invalid_token(&remove(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(client_count(&s).await, 1);
}

// === Reuse and secret rotation flags (SPEC §4, §6a.4, §6a.18) ===

const REUSE: &str = "[management]\nreuse_registration_access_token = true\n";

#[tokio::test]
async fn spec_6a_4_reuse_returns_the_same_still_valid_token_with_its_remaining_lifetime() {
    let s = Server::start(REUSE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    s.clock.advance(100);
    let got = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(token(&got), token(&reg));
    assert_eq!(got["registration_access_token_expires_in"], 31_535_900);
    let put = ok(&update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "r")).await);
    assert_eq!(token(&put), token(&reg));
    assert_eq!(put["registration_access_token_expires_in"], 31_535_900);
    ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
}

#[tokio::test]
async fn spec_6a_4_reuse_still_rotates_the_client_secret() {
    let s = Server::start(REUSE).await;
    let reg = register_secret_client(&s).await;
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    assert_eq!(token(&got), token(&reg));
    assert_ne!(secret(&got), secret(&reg));
    assert_error(
        &token_endpoint(&s, id(&reg), &secret(&reg)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );
    assert_eq!(
        token_endpoint(&s, id(&reg), &secret(&got)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn spec_6a_18_reused_token_after_the_read_update_window_can_only_delete() {
    let s = Server::start(REUSE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    // Regular use inside the window does not renew a reused token.
    s.clock.advance(20 * DAY);
    ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    s.clock.advance(8 * DAY);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    deleted(&remove(&s, Some("client1"), &p, &token(&reg)).await);
}

#[tokio::test]
async fn spec_6a_4_rotate_client_secret_false_rotates_the_token_but_not_the_secret() {
    let s = Server::start("[management]\nrotate_client_secret = false\n").await;
    let reg = register_secret_client(&s).await;
    let p = path(&reg);
    let got = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_ne!(token(&got), token(&reg));
    assert!(got.get("client_secret").is_none(), "no new secret: {got}");
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(
        token_endpoint(&s, id(&reg), &secret(&reg)).await.status,
        StatusCode::OK,
        "the registered secret is still the secret"
    );
}

// === certificate binding (SPEC §3 Binding, §4, §6a.3, §6a.5, §6a.20) ===

const SAME_CERT: &str = "[management]\nrequire_same_certificate = true\n";

#[tokio::test]
async fn require_same_certificate_accepts_the_registering_certificate() {
    let s = Server::start(SAME_CERT).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let got = ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    ok(&update(
        &s,
        Some("client1"),
        &path(&reg),
        &token(&got),
        &renamed(&reg, "n"),
    )
    .await);
}

#[tokio::test]
async fn spec_6a_3_require_same_certificate_refuses_other_certificates_without_burning_the_token() {
    let s = Server::start(SAME_CERT).await;
    let reg = register(&s, Some("client1"), json!({"client_name": "orig"})).await;
    let p = path(&reg);
    let t = token(&reg);
    for cert in [Some("client2"), None, Some("selfsigned")] {
        assert_invalid_token(&read(&s, cert, &p, &t).await);
        assert_invalid_token(&update(&s, cert, &p, &t, &renamed(&reg, "x")).await);
        assert_invalid_token(&remove(&s, cert, &p, &t).await);
    }
    assert_eq!(client_count(&s).await, 1);
    let got = ok(&read(&s, Some("client1"), &p, &t).await);
    assert_eq!(got["client_name"], "orig");
}

#[tokio::test]
async fn require_same_certificate_accepts_the_bound_certificate_through_the_proxy() {
    let s = Server::start(SAME_CERT).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let header = escaped_pem("client1");
    let bearer = auth(&token(&reg));
    let r = s
        .proxy_from([127, 0, 0, 1])
        .get(
            &path(&reg),
            &[("authorization", &bearer), ("x-ssl-client-cert", &header)],
        )
        .await;
    ok(&r);
}

#[tokio::test]
async fn require_same_certificate_binds_a_proxied_registration_to_the_same_certificate_over_tls() {
    let s = Server::start(SAME_CERT).await;
    let header = escaped_pem("client1");
    let r = s
        .proxy_from([127, 0, 0, 1])
        .post_json("/register", &[("x-ssl-client-cert", &header)], &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let reg = r.json();
    assert_invalid_token(&read(&s, Some("client2"), &path(&reg), &token(&reg)).await);
    ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
}

#[tokio::test]
async fn require_same_certificate_false_accepts_another_certificate() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let got = ok(&read(&s, Some("client2"), &path(&reg), &token(&reg)).await);
    ok(&read(&s, None, &path(&reg), &token(&got)).await);
}

#[tokio::test]
async fn spec_6a_5_client_registered_without_certificate_has_nothing_to_enforce() {
    let s = Server::start(
        "[registration]\nauthentication = []\n[management]\nrequire_same_certificate = true\n",
    )
    .await;
    let reg = register(&s, None, json!({})).await;
    let got = ok(&read(&s, None, &path(&reg), &token(&reg)).await);
    ok(&read(&s, Some("client2"), &path(&reg), &token(&got)).await);
}

#[tokio::test]
async fn spec_6a_20_a_self_signed_certificate_binds_the_registration_by_thumbprint() {
    let s = Server::start(
        "[registration]\nauthentication = []\n[management]\nrequire_same_certificate = true\n",
    )
    .await;
    let reg = register(&s, Some("selfsigned"), json!({})).await;
    assert_invalid_token(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
    ok(&read(&s, Some("selfsigned"), &path(&reg), &token(&reg)).await);
}

#[tokio::test]
async fn spec_6a_6_require_same_certificate_put_with_wrong_certificate_is_401_whatever_the_body() {
    // The certificate check is authentication: a caller without the bound certificate
    // learns nothing about how the body would have been judged.
    let s = Server::start(SAME_CERT).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let body = json!({"client_id": id(&reg), "redirect_uris": ["https://a.example/cb#frag"]});
    let r = update(&s, Some("client2"), &path(&reg), &token(&reg), &body).await;
    assert_invalid_token(&r);
    ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
}

// === a PUT cannot widen who may authenticate as the client (SPEC §4, §6a.16, §6a.20) ===

fn subject_dn_body(reg: &Value, dn: &str) -> Value {
    json!({
        "client_id": id(reg),
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": dn,
    })
}

async fn register_subject_dn_client(s: &Server) -> Value {
    register(
        s,
        Some("client1"),
        json!({
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=client1,O=certgate dev",
        }),
    )
    .await
}

#[tokio::test]
async fn spec_4_put_cannot_change_the_subject_dn_to_one_the_presented_certificate_lacks() {
    let s = Server::start("").await;
    let reg = register_subject_dn_client(&s).await;
    let p = path(&reg);
    let body = subject_dn_body(&reg, "CN=client2,O=certgate dev");
    for cert in [Some("client1"), None] {
        let r = update(&s, cert, &p, &token(&reg), &body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    }
    let got = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(
        got["tls_client_auth_subject_dn"],
        "CN=client1,O=certgate dev"
    );
}

#[tokio::test]
async fn spec_4_put_changing_the_subject_dn_with_a_satisfying_certificate_is_200() {
    let s = Server::start("").await;
    let reg = register_subject_dn_client(&s).await;
    let body = subject_dn_body(&reg, "CN=client2,O=certgate dev");
    let put = ok(&update(&s, Some("client2"), &path(&reg), &token(&reg), &body).await);
    assert_eq!(
        put["tls_client_auth_subject_dn"],
        "CN=client2,O=certgate dev"
    );
}

#[tokio::test]
async fn spec_4_put_cannot_switch_to_a_san_the_presented_certificate_lacks() {
    let s = Server::start("").await;
    let reg = register_subject_dn_client(&s).await;
    let body = json!({
        "client_id": id(&reg),
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_san_dns": "client2.example.com",
    });
    let r = update(&s, Some("client1"), &path(&reg), &token(&reg), &body).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    ok(&read(&s, Some("client1"), &path(&reg), &token(&reg)).await);
}

#[tokio::test]
async fn spec_4_put_cannot_replace_the_jwks_certificate_with_one_the_caller_does_not_hold() {
    let s = Server::start("").await;
    let jwks = |name: &str| json!({"keys": [jwk(name)]});
    let reg = register(
        &s,
        Some("client1"),
        json!({"token_endpoint_auth_method": "self_signed_tls_client_auth", "jwks": jwks("client1")}),
    )
    .await;
    let body = json!({
        "client_id": id(&reg),
        "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "jwks": jwks("client2"),
    });
    let r = update(&s, Some("client1"), &path(&reg), &token(&reg), &body).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    let put = ok(&update(&s, Some("client2"), &path(&reg), &token(&reg), &body).await);
    assert_eq!(put["jwks"], jwks("client2"));
}

#[tokio::test]
async fn spec_6a_20_require_matching_certificate_false_allows_the_put() {
    let s = Server::start("[registration]\nrequire_matching_certificate = false\n").await;
    let reg = register_subject_dn_client(&s).await;
    let body = subject_dn_body(&reg, "CN=client2,O=certgate dev");
    let put = ok(&update(&s, Some("client1"), &path(&reg), &token(&reg), &body).await);
    assert_eq!(
        put["tls_client_auth_subject_dn"],
        "CN=client2,O=certgate dev"
    );
}

// === rotation grace (SPEC §4, §6a.17) ===

const GRACE: &str = "[management]\nrotation_grace = \"60s\"\n";

#[tokio::test]
async fn spec_4_rotation_grace_replays_the_same_successor_token_and_secret() {
    let s = Server::start(GRACE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    s.clock.advance(30);
    let replay = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(token(&replay), token(&first));
    assert_eq!(secret(&replay), secret(&first));
    let again = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(token(&again), token(&first));
    assert_eq!(secret(&again), secret(&first));
}

#[tokio::test]
async fn spec_6a_17_rotation_grace_ends_once_the_successor_is_used() {
    let s = Server::start(GRACE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    let second = ok(&read(&s, Some("client1"), &p, &token(&first)).await);
    assert_ne!(token(&second), token(&first));
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    // The successor's own predecessor (first) is now in grace, and replays second.
    let replay = ok(&read(&s, Some("client1"), &p, &token(&first)).await);
    assert_eq!(token(&replay), token(&second));
}

#[tokio::test]
async fn spec_6a_17_rotation_grace_ends_after_the_period() {
    let s = Server::start(GRACE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    s.clock.advance(61);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    ok(&read(&s, Some("client1"), &p, &token(&first)).await);
}

#[tokio::test]
async fn spec_4_rotation_grace_zero_kills_the_old_token_at_once() {
    let s = Server::start("[management]\nrotation_grace = \"0s\"\n").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&reg)).await);
    ok(&read(&s, Some("client1"), &p, &token(&first)).await);
}

#[tokio::test]
async fn spec_6a_17_replayed_put_applies_its_body_again() {
    let s = Server::start(GRACE).await;
    let reg = register(&s, Some("client1"), json!({"client_name": "v0"})).await;
    let p = path(&reg);
    let first = ok(&update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "v1")).await);
    assert_eq!(first["client_name"], "v1");
    let replay = ok(&update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "v1")).await);
    assert_eq!(token(&replay), token(&first));
    assert_eq!(secret(&replay), secret(&first));
    assert_eq!(replay["client_name"], "v1");
    let different = ok(&update(&s, Some("client1"), &p, &token(&reg), &renamed(&reg, "v2")).await);
    assert_eq!(token(&different), token(&first));
    assert_eq!(
        different["client_name"], "v2",
        "the replayed body is applied"
    );
    let got = ok(&read(&s, Some("client1"), &p, &token(&first)).await);
    assert_eq!(got["client_name"], "v2");
}

#[tokio::test]
async fn spec_6a_17_a_failed_use_of_the_successor_does_not_end_the_grace() {
    let s = Server::start(GRACE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    let bad = json!({"client_name": "no client_id"});
    let r = update(&s, Some("client1"), &p, &token(&first), &bad).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    let replay = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(token(&replay), token(&first));
}

#[tokio::test]
async fn spec_6a_17_delete_works_with_the_replaced_token_within_the_grace() {
    let s = Server::start(GRACE).await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    deleted(&remove(&s, Some("client1"), &p, &token(&reg)).await);
    assert_eq!(client_count(&s).await, 0);
    assert_invalid_token(&read(&s, Some("client1"), &p, &token(&first)).await);
}

#[tokio::test]
async fn spec_6a_17_old_client_secret_dies_at_once_even_within_the_grace() {
    let s = Server::start(GRACE).await;
    let reg = register_secret_client(&s).await;
    let p = path(&reg);
    let first = ok(&read(&s, Some("client1"), &p, &token(&reg)).await);
    assert_error(
        &token_endpoint(&s, id(&reg), &secret(&reg)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );
    assert_eq!(
        token_endpoint(&s, id(&reg), &secret(&first)).await.status,
        StatusCode::OK
    );
}

// === atomic rotation (SPEC §4) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_4_concurrent_reads_with_one_token_have_exactly_one_winner() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let p = path(&reg);
    let bearer = auth(&token(&reg));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = s.tls(Some("client1"));
            let (p, bearer) = (p.clone(), bearer.clone());
            tokio::spawn(async move { c.get(&p, &[("authorization", &bearer)]).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::OK {
            winners.push(ok(&r));
        } else {
            assert_invalid_token(&r);
            losers += 1;
        }
    }
    assert_eq!(winners.len(), 1, "exactly one request rotates");
    assert_eq!(losers, 31);
    ok(&read(&s, Some("client1"), &p, &token(&winners[0])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_4_concurrent_puts_with_one_token_have_exactly_one_winner() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({"client_name": "v0"})).await;
    let p = path(&reg);
    let bearer = auth(&token(&reg));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = s.tls(Some("client1"));
            let (p, bearer) = (p.clone(), bearer.clone());
            let body = renamed(&reg, &format!("writer {i}"));
            tokio::spawn(async move { c.put_json(&p, &[("authorization", &bearer)], &body).await })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::OK {
            winners.push(ok(&r));
        } else {
            assert_invalid_token(&r);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update applies");
    let got = ok(&read(&s, Some("client1"), &p, &token(&winners[0])).await);
    assert_eq!(got["client_name"], winners[0]["client_name"]);
}

#[tokio::test]
async fn rfc6750_bearer_scheme_name_is_case_insensitive() {
    let s = Server::start("").await;
    let reg = register(&s, Some("client1"), json!({})).await;
    let header = format!("bearer {}", token(&reg));
    let r = s
        .tls(Some("client1"))
        .get(&path(&reg), &[("authorization", &header)])
        .await;
    ok(&r);
}

// === regressions from the review of the management code ===

#[tokio::test]
async fn spec_6a_3_bound_token_used_on_an_unknown_client_without_its_certificate_is_not_revoked() {
    let s = Server::start("[management]\nrequire_same_certificate = true\n").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({"grant_types": ["client_credentials"]}),
    )
    .await;
    let tok = token(&reg);
    // Someone holding the leaked token but not client1's certificate.
    let r = read(&s, Some("client2"), "/register/no-such-client", &tok).await;
    assert_invalid_token(&r);
    // The owner, with its certificate, still manages itself.
    ok(&read(&s, Some("client1"), &path(&reg), &tok).await);
    s.stop().await;
}

#[tokio::test]
async fn spec_4_delete_racing_reads_with_one_token_lets_exactly_one_request_succeed() {
    let s = Server::start("").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({"grant_types": ["client_credentials"]}),
    )
    .await;
    let tok = token(&reg);
    let p = path(&reg);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = s.tls(Some("client1"));
        let (p, tok) = (p.clone(), tok.clone());
        tasks.push(tokio::spawn(async move {
            let h = [("authorization", auth(&tok))];
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if i % 2 == 0 {
                c.delete(&p, &h).await.status
            } else {
                c.get(&p, &h).await.status
            }
        }));
    }
    let mut wins = 0;
    for t in tasks {
        let status = t.await.unwrap();
        if status.is_success() {
            wins += 1;
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(wins, 1, "exactly one request with the token may succeed");
    s.stop().await;
}

#[tokio::test]
async fn spec_4_put_switching_from_a_certificate_method_to_a_secret_needs_no_certificate() {
    let s = Server::start("").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=client1,O=certgate dev"
        }),
    )
    .await;
    let body = json!({
        "client_id": id(&reg),
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic"
    });
    let out = ok(&update(&s, None, &path(&reg), &token(&reg), &body).await);
    assert!(
        out["client_secret"].is_string(),
        "a secret method gets a secret"
    );
    s.stop().await;
}

#[tokio::test]
async fn rfc6750_put_with_an_unknown_token_is_401_before_the_body_is_judged() {
    let s = Server::start("").await;
    let reg = register(
        &s,
        Some("client1"),
        json!({"grant_types": ["client_credentials"]}),
    )
    .await;
    let unknown = "A".repeat(43);
    let r = s
        .tls(Some("client1"))
        .send(
            http::Method::PUT,
            &path(&reg),
            &[
                ("authorization", &auth(&unknown)),
                ("content-type", "text/plain"),
            ],
            Some(b"not json".to_vec()),
        )
        .await;
    assert_invalid_token(&r);
    s.stop().await;
}
