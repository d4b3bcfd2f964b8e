//! Answers outside clients and the RFCs expect (SPEC §2, §3, §6a.23-26, §8): challenges on
//! every 401, truthful discovery, reserved scopes never issued, revoked registration tokens
//! dead even when racing, readiness, quotas, and HTTP framing rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use common::*;

const TRUSTED: [u8; 4] = [127, 0, 0, 1];

/// Secret-based registration, open to anyone, with rotation grace off.
const OPEN: &str = "[registration]\nauthentication = []\n";

fn challenge(r: &Resp) -> &str {
    r.header("www-authenticate")
        .unwrap_or_else(|| panic!("{} without WWW-Authenticate: {:?}", r.status, r.body))
}

async fn secret_client(s: &Server) -> Value {
    register(
        s,
        Some("client1"),
        json!({"grant_types": ["client_credentials"], "scope": "api",
               "token_endpoint_auth_method": "client_secret_basic"}),
    )
    .await
}

fn id(reg: &Value) -> String {
    reg["client_id"].as_str().unwrap().to_owned()
}

fn secret(reg: &Value) -> String {
    reg["client_secret"].as_str().unwrap().to_owned()
}

fn reg_token(reg: &Value) -> String {
    reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

// === §6a.23: every 401 carries WWW-Authenticate ===

#[tokio::test]
async fn failed_client_authentication_is_401_with_a_basic_challenge_whatever_was_tried() {
    let s = Server::start("").await;
    let reg = secret_client(&s).await;
    let (cid, sec) = (id(&reg), secret(&reg));
    let wrong = format!("{sec}x");
    for path in ["/token", "/introspect", "/revoke"] {
        // client_secret_post with a wrong secret; tls_client_auth as the static admin with
        // the wrong certificate; nothing at all.
        let post = [
            ("client_id", cid.as_str()),
            ("client_secret", wrong.as_str()),
        ];
        let tls = [("client_id", "admin")];
        type Params<'a> = &'a [(&'a str, &'a str)];
        let attempts: [(&str, Params, Option<&str>); 3] = [
            ("post", &post, Some("client1")),
            ("tls", &tls, Some("client2")),
            ("none", &[], None),
        ];
        for (what, params, cert) in attempts {
            let mut params = params.to_vec();
            params.push(("grant_type", "client_credentials"));
            params.push(("token", "x"));
            let r = s.tls(cert).post_form(path, &[], &params).await;
            assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
            assert_eq!(challenge(&r), "Basic realm=\"certgate\"", "{path} {what}");
        }
        let basic = basic_auth(&cid, &wrong);
        let r = s
            .tls(None)
            .post_form(
                path,
                &[("authorization", &basic)],
                &[("grant_type", "client_credentials"), ("token", "x")],
            )
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(challenge(&r), "Basic realm=\"certgate\"", "{path} basic");
    }
    s.stop().await;
}

#[tokio::test]
async fn register_without_accepted_authentication_is_401_with_a_bearer_challenge() {
    let s = Server::start(
        "[registration]\nauthentication = [\"mutual-tls\", \"initial-access-token\"]\n",
    )
    .await;
    // No certificate, no token: a challenge without an error code (RFC 6750 §3.1).
    let r = s.tls(None).post_json("/register", &[], &json!({})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r), "Bearer realm=\"certgate\"");
    // A presented token that is no good: the error is named.
    let bogus = format!("Bearer {}", "A".repeat(43));
    let r = s
        .tls(None)
        .post_json("/register", &[("authorization", &bogus)], &json!({}))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(
        challenge(&r),
        "Bearer realm=\"certgate\", error=\"invalid_token\""
    );
    // Through the proxy listener from an untrusted peer: the certificate claim is ignored.
    let r = s
        .proxy_from([127, 0, 0, 2])
        .post_json(
            "/register",
            &[("x-ssl-client-cert", &escaped_pem("client1"))],
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r), "Bearer realm=\"certgate\"");
    s.stop().await;
}

#[tokio::test]
async fn management_401s_challenge_with_the_realm_and_name_the_error_only_for_a_token() {
    let s = Server::start(OPEN).await;
    let reg = secret_client(&s).await;
    let path = format!("/register/{}", id(&reg));
    let c = s.tls(Some("client1"));
    let r = c.get(&path, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r), "Bearer realm=\"certgate\"");
    let r = c
        .get(
            &path,
            &[("authorization", &format!("Bearer {}", "B".repeat(43)))],
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(
        challenge(&r),
        "Bearer realm=\"certgate\", error=\"invalid_token\""
    );
    s.stop().await;
}

// === §6a.24: discovery tells the truth ===

#[tokio::test]
async fn discovery_lists_only_what_certgate_serves() {
    let s = Server::start("").await;
    let d = s
        .tls(None)
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(d["response_types_supported"], json!([]), "{d}");
    assert_eq!(
        d["grant_types_supported"],
        json!(["client_credentials"]),
        "{d}"
    );
    // Any non-reserved scope may be registered: no list to give (and never dcrm / dcr).
    assert!(d.get("scopes_supported").is_none(), "{d}");
    s.stop().await;

    let s = Server::start("[registration]\nallowed_scopes = [\"read\", \"write\"]\n").await;
    let d = s
        .tls(None)
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(d["scopes_supported"], json!(["read", "write"]), "{d}");
    s.stop().await;
}

// === §6a.25: reserved scopes are checked at issuance too ===

#[tokio::test]
async fn a_registered_client_never_gets_a_reserved_scope_whatever_it_has_stored() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display();
    // Under this configuration "dcrm" is an ordinary scope and may be registered...
    let s = Server::start(&format!(
        "{OPEN}[management]\ndcrm_scope = \"admin\"\n[store]\ndata_dir = \"{dir}\"\n"
    ))
    .await;
    let reg = register(
        &s,
        None,
        json!({"grant_types": ["client_credentials"], "scope": "dcrm dcr2 api",
               "token_endpoint_auth_method": "client_secret_basic"}),
    )
    .await;
    s.stop().await;
    // ...then the operator makes it the administration scope.
    let s = Server::start(&format!("{OPEN}[store]\ndata_dir = \"{dir}\"\n")).await;
    let basic = basic_auth(&id(&reg), &secret(&reg));
    let auth = [("authorization", basic.as_str())];
    let r = s
        .tls(None)
        .post_form("/token", &auth, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["scope"], "dcr2 api");
    let r = s
        .tls(None)
        .post_form(
            "/token",
            &auth,
            &[("grant_type", "client_credentials"), ("scope", "dcrm")],
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_scope");
    s.stop().await;
}

// === §6a.26: revoked means revoked ===

#[tokio::test]
async fn rfc7009_a_client_revokes_its_registration_access_token_and_it_is_dead() {
    let s = Server::start(OPEN).await;
    let reg = secret_client(&s).await;
    let path = format!("/register/{}", id(&reg));
    let tok = reg_token(&reg);
    let basic = basic_auth(&id(&reg), &secret(&reg));
    let r = s
        .tls(None)
        .post_form("/revoke", &[("authorization", &basic)], &[("token", &tok)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let bearer = format!("Bearer {tok}");
    let c = s.tls(Some("client1"));
    for r in [
        c.get(&path, &[("authorization", &bearer)]).await,
        c.put_json(
            &path,
            &[("authorization", &bearer)],
            &json!({"client_id": id(&reg)}),
        )
        .await,
        c.delete(&path, &[("authorization", &bearer)]).await,
    ] {
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    // The client itself is untouched: it still authenticates.
    let r = s
        .tls(None)
        .post_form(
            "/token",
            &[("authorization", &basic)],
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_registration_token_revoked_while_a_read_races_it_never_works_afterwards() {
    let s = Server::start(&format!(
        "{OPEN}[management]\nrotate_client_secret = false\n"
    ))
    .await;
    for round in 0..30 {
        let reg = secret_client(&s).await;
        let path = format!("/register/{}", id(&reg));
        let tok = reg_token(&reg);
        let basic = basic_auth(&id(&reg), &secret(&reg));
        let bearer = format!("Bearer {tok}");
        let reader = s.tls(Some("client1"));
        let revoker = s.tls(None);
        let read_headers = [("authorization", bearer.as_str())];
        let revoke_headers = [("authorization", basic.as_str())];
        let revoke_params = [("token", tok.as_str())];
        let (read, revoked) = tokio::join!(
            reader.get(&path, &read_headers),
            revoker.post_form("/revoke", &revoke_headers, &revoke_params),
        );
        assert_eq!(revoked.status, StatusCode::OK);
        // Whoever won, the revoked token is dead now.
        let again = s
            .tls(Some("client1"))
            .get(&path, &[("authorization", &bearer)])
            .await;
        assert_error(&again, StatusCode::UNAUTHORIZED, "invalid_token");
        if read.status == StatusCode::OK {
            // The read came first and rotated: its successor is the one that works.
            let next = format!("Bearer {}", reg_token(&read.json()));
            let r = s
                .tls(Some("client1"))
                .get(&path, &[("authorization", &next)])
                .await;
            assert_eq!(r.status, StatusCode::OK, "round {round}");
        } else {
            assert_error(&read, StatusCode::UNAUTHORIZED, "invalid_token");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn revoking_a_just_replaced_token_ends_its_grace_replay() {
    let s = Server::start(&format!(
        "{OPEN}[management]\nrotation_grace = \"60s\"\nrequire_same_certificate = true\n"
    ))
    .await;
    let reg = secret_client(&s).await;
    let path = format!("/register/{}", id(&reg));
    let old = format!("Bearer {}", reg_token(&reg));
    let c = s.tls(Some("client1"));
    let read = c.get(&path, &[("authorization", &old)]).await;
    assert_eq!(read.status, StatusCode::OK);
    let new_secret = secret(&read.json());
    // Within grace the old token would replay the successor; revoked, it does not.
    let basic = basic_auth(&id(&reg), &new_secret);
    let r = s
        .tls(None)
        .post_form(
            "/revoke",
            &[("authorization", &basic)],
            &[("token", &reg_token(&reg))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.get(&path, &[("authorization", &old)]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    // The successor was not revoked.
    let next = format!("Bearer {}", reg_token(&read.json()));
    assert_eq!(
        c.get(&path, &[("authorization", &next)]).await.status,
        StatusCode::OK
    );
    s.stop().await;
}

// === §2: /healthz ===

#[tokio::test]
async fn healthz_is_503_with_a_reason_when_the_node_is_draining() {
    let s = Server::start("").await;
    for client in [s.admin(), s.tls(None), s.proxy_from(TRUSTED)] {
        let r = client.get("/healthz", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["status"], "ok");
    }
    s.app.begin_draining();
    for client in [s.admin(), s.tls(None), s.proxy_from(TRUSTED)] {
        let r = client.get("/healthz", &[]).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["status"], "unavailable");
        assert!(
            body["reason"].as_str().unwrap().contains("draining"),
            "{body}"
        );
    }
    s.stop().await;
}

// === §3: quota per certificate ===

#[tokio::test]
async fn registrations_per_certificate_are_capped_at_max_clients_per_certificate() {
    let s = Server::start("[registration]\nmax_clients_per_certificate = 2\n").await;
    let body = json!({"grant_types": ["client_credentials"]});
    let first = register(&s, Some("client1"), body.clone()).await;
    register(&s, Some("client1"), body.clone()).await;
    let r = s
        .tls(Some("client1"))
        .post_json("/register", &[], &body)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    let why = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(why.contains("max_clients_per_certificate"), "{why}");
    // Another certificate has its own quota.
    register(&s, Some("client2"), body.clone()).await;
    // Deleting a registration gives its slot back.
    let path = format!("/register/{}", id(&first));
    let r = s
        .tls(Some("client1"))
        .delete(
            &path,
            &[("authorization", &format!("Bearer {}", reg_token(&first)))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    register(&s, Some("client1"), body).await;
    s.stop().await;
}

// === §8: live access tokens per client ===

#[tokio::test]
async fn issuing_beyond_max_active_per_client_revokes_the_oldest_token() {
    let s = Server::start(&format!("{OPEN}[tokens]\nmax_active_per_client = 3\n")).await;
    let reg = secret_client(&s).await;
    let basic = basic_auth(&id(&reg), &secret(&reg));
    let mut issued = Vec::new();
    for _ in 0..5 {
        let r = s
            .tls(None)
            .post_form(
                "/token",
                &[("authorization", &basic)],
                &[("grant_type", "client_credentials")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        issued.push(r.json()["access_token"].as_str().unwrap().to_owned());
    }
    let introspect = |tok: String| {
        let (s, basic) = (&s, basic.clone());
        async move {
            let r = s
                .tls(None)
                .post_form(
                    "/introspect",
                    &[("authorization", &basic)],
                    &[("token", &tok)],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
            r.json()["active"] == true
        }
    };
    let mut active = Vec::new();
    for tok in &issued {
        active.push(introspect(tok.clone()).await);
    }
    assert_eq!(active, [false, false, true, true, true]);
    // Revoking one makes room: the next issue revokes nothing.
    let r = s
        .tls(None)
        .post_form(
            "/revoke",
            &[("authorization", &basic)],
            &[("token", &issued[4])],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .tls(None)
        .post_form(
            "/token",
            &[("authorization", &basic)],
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(introspect(issued[2].clone()).await);
    s.stop().await;
}

// === §8: framing ===

#[tokio::test]
async fn a_request_without_host_or_with_two_is_400() {
    let s = Server::start("").await;
    let cases: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\nhost: a\r\nhost: a\r\n\r\n",
    ];
    for req in cases {
        let mut tls = tls_connect(s.tls, None, &[b"http/1.1"]).await;
        let (status, head, body) = raw_exchange(&mut tls, req).await;
        assert_eq!(status, 400, "{}: {head}", String::from_utf8_lossy(req));
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "invalid_request");
    }
    // HTTP/1.0 may omit Host.
    let mut tls = tls_connect(s.tls, None, &[b"http/1.1"]).await;
    let (status, _, _) = raw_exchange(&mut tls, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_400_invalid_request() {
    let s = Server::start(OPEN).await;
    let reg = secret_client(&s).await;
    let path = format!("/register/{}", id(&reg));
    let bearer = format!("Bearer {}", reg_token(&reg));
    let other = format!("Bearer {}", "C".repeat(43));
    let r = s
        .tls(Some("client1"))
        .get(
            &path,
            &[("authorization", &other), ("authorization", &bearer)],
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    // Nothing was rotated or revoked: the token still works.
    let r = s
        .tls(Some("client1"))
        .get(&path, &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn rfc3986_6_2_2_2_a_percent_encoded_own_client_id_names_the_same_client() {
    let s = Server::start(OPEN).await;
    let reg = secret_client(&s).await;
    let cid = id(&reg);
    let encoded: String = cid.bytes().map(|b| format!("%{b:02X}")).collect();
    let bearer = format!("Bearer {}", reg_token(&reg));
    let r = s
        .tls(Some("client1"))
        .get(
            &format!("/register/{encoded}"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["client_id"], cid);
    // An escape of a reserved character names no client (and is not decoded into one).
    let next = format!("Bearer {}", reg_token(&r.json()));
    let r = s
        .tls(Some("client1"))
        .get(&format!("/register/{cid}%2F"), &[("authorization", &next)])
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    s.stop().await;
}

#[tokio::test]
async fn a_ca_removed_by_reload_stops_counting_on_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy("certs/ca.pem", &ca).unwrap();
    let s = Server::start(&format!("[tls]\nclient_ca = \"{}\"\n", ca.display())).await;
    let mut tls = tls_connect(s.tls, Some("client1"), &[b"http/1.1"]).await;
    let get = b"GET /identity HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let (status, _, body) = raw_exchange(&mut tls, get).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["certificate"]["chain_verified"], true);
    std::fs::copy("certs/other-ca.pem", &ca).unwrap();
    s.app.tls.reload().unwrap();
    // Same connection, same handshake certificate: judged against the new CA.
    let (status, _, body) = raw_exchange(&mut tls, get).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["certificate"]["chain_verified"], false, "{v}");
    // And registration (which needs a verified chain) is refused on it.
    let req = b"POST /register HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let (status, _, _) = raw_exchange(&mut tls, req).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(10)).await;
    s.stop().await;
}

/// A refusal over HTTP/2 reaches a client still sending its (small) body as an answer, not
/// as a reset stream: curl reported "Stream error in the HTTP/2 framing layer" instead of the
/// 401 when certgate answered before the body arrived.
#[tokio::test]
async fn an_http2_refusal_waits_for_the_small_body_the_client_is_still_sending() {
    let s = Server::start("").await;
    let tls = tls_connect(s.tls, None, &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("https://localhost/register")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    // Headers now, the body a little later: registration without a certificate is refused
    // before the body matters.
    let (resp, mut body) = client.send_request(req, false).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    body.send_data(bytes::Bytes::from_static(b"{}"), true)
        .expect("the stream is still open when the body follows the headers");
    let resp = resp.await.expect("an answer, not a reset");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let mut answer = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = answer.data().await {
        text.extend_from_slice(&chunk.expect("the whole answer"));
    }
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["error"], "invalid_client");
    s.stop().await;
}
