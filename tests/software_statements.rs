//! Software statements (RFC 7591 §2.3, §3.1.1; SPEC §3), signed in the tests with keys the
//! tests generate with openssl (RSA, P-256, Ed25519) and published to certgate as JWKS files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use http::StatusCode;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::*;

const DIRECTORY: &str = "https://directory.example.com";

/// Keys generated once for this test binary.
struct Keys {
    dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            (
                "rsa",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "rsa2",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "p256",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            ("ed25519", &["-algorithm", "ED25519"][..]),
        ] {
            let out = Command::new("openssl")
                .arg("genpkey")
                .args(args)
                .arg("-out")
                .arg(dir.path().join(format!("{name}.pem")))
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Keys { dir }
    })
}

impl Keys {
    fn encoding(&self, name: &str) -> EncodingKey {
        let pem = std::fs::read(self.dir.path().join(format!("{name}.pem"))).unwrap();
        match name {
            "p256" => EncodingKey::from_ec_pem(&pem).unwrap(),
            "ed25519" => EncodingKey::from_ed_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        }
    }

    /// The public JWK of key `name`, with `kid`.
    fn jwk(&self, name: &str, kid: &str) -> Jwk {
        let alg = match name {
            "p256" => Algorithm::ES256,
            "ed25519" => Algorithm::EdDSA,
            _ => Algorithm::RS256,
        };
        let mut jwk = Jwk::from_encoding_key(&self.encoding(name), alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.key_algorithm = None;
        jwk
    }
}

/// A JWKS file with the public keys `names` (kid = name).
fn jwks_file(dir: &Path, file: &str, names: &[&str]) -> PathBuf {
    let set = JwkSet {
        keys: names.iter().map(|n| keys().jwk(n, n)).collect(),
    };
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();
    path
}

/// A statement signed with key `name` (`alg`), `kid` in the header when given.
fn sign(name: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &keys().encoding(name)).unwrap()
}

/// Claims from the directory, valid now (the test server's clock starts at T0).
fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": DIRECTORY,
        "iat": T0 - 10,
        "exp": T0 + 3600,
        "jti": "abc-123",
        "software_id": "4NRB1-0XZABZI9E6-5SM3R",
        "client_name": "Directory Bank App",
        "grant_types": ["client_credentials"],
        "scope": "accounts payments",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// A server trusting DIRECTORY's keys `names`; `extra` is more TOML.
async fn server(names: &[&str], extra: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = jwks_file(dir.path(), "directory.jwks.json", names);
    let s = Server::start(&format!(
        "[registration]\nauthentication = []\n{extra}\n\
         [[registration.software_statement_issuers]]\nissuer = \"{DIRECTORY}\"\n\
         jwks_file = \"{}\"\n",
        jwks.display()
    ))
    .await;
    (s, dir)
}

async fn post(s: &Server, cert: Option<&str>, body: &Value) -> Resp {
    s.tls(cert).post_json("/register", &[], body).await
}

fn refused(r: &Resp, error: &str) {
    assert_error(r, StatusCode::BAD_REQUEST, error);
}

#[tokio::test]
async fn rfc7591_3_1_1_statements_signed_with_rs256_ps256_es256_and_eddsa_register() {
    let (s, _d) = server(&["rsa", "p256", "ed25519"], "").await;
    for (key, alg) in [
        ("rsa", Algorithm::RS256),
        ("rsa", Algorithm::PS256),
        ("p256", Algorithm::ES256),
        ("ed25519", Algorithm::EdDSA),
    ] {
        let jws = sign(key, alg, Some(key), &claims(json!({})));
        // The statement's claims take precedence over the same fields in the body.
        let body = json!({"software_statement": jws, "client_name": "Mine", "contacts": ["ops@bank.example"]});
        let r = post(&s, None, &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{alg:?}: {:?}", r.body);
        let reg = r.json();
        assert_eq!(
            reg["software_statement"], jws,
            "the statement comes back unmodified"
        );
        assert_eq!(reg["client_name"], "Directory Bank App");
        assert_eq!(reg["software_id"], "4NRB1-0XZABZI9E6-5SM3R");
        assert_eq!(reg["scope"], "accounts payments");
        assert_eq!(reg["contacts"], json!(["ops@bank.example"]));
        // Claims about the statement are not client metadata.
        for envelope in ["iss", "iat", "exp", "jti"] {
            assert!(reg.get(envelope).is_none(), "{envelope} registered");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn the_key_is_chosen_by_kid_and_the_signature_must_verify() {
    let (s, _d) = server(&["rsa", "rsa2"], "").await;
    let c = claims(json!({}));
    // Signed by rsa2, named rsa2: fine; without a kid every RSA key is tried.
    assert_eq!(
        post(
            &s,
            None,
            &json!({"software_statement": sign("rsa2", Algorithm::RS256, Some("rsa2"), &c)})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        post(
            &s,
            None,
            &json!({"software_statement": sign("rsa2", Algorithm::RS256, None, &c)})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    // Signed by rsa2 but naming rsa: the named key does not verify it.
    let r = post(
        &s,
        None,
        &json!({"software_statement": sign("rsa2", Algorithm::RS256, Some("rsa"), &c)}),
    )
    .await;
    refused(&r, "invalid_software_statement");
    // A kid the issuer does not have.
    let r = post(
        &s,
        None,
        &json!({"software_statement": sign("rsa", Algorithm::RS256, Some("other"), &c)}),
    )
    .await;
    refused(&r, "invalid_software_statement");
    // A payload changed after signing.
    let jws = sign("rsa", Algorithm::RS256, Some("rsa"), &c);
    let parts: Vec<&str> = jws.split('.').collect();
    let forged = base64_url(&serde_json::to_vec(&claims(json!({"scope": "everything"}))).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    refused(
        &post(&s, None, &json!({"software_statement": tampered})).await,
        "invalid_software_statement",
    );
    // A key of the wrong type for the alg (an ES256 statement, the issuer has only RSA).
    let r = post(
        &s,
        None,
        &json!({"software_statement": sign("p256", Algorithm::ES256, None, &c)}),
    )
    .await;
    refused(&r, "invalid_software_statement");
    s.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn none_hmac_and_other_algorithms_are_invalid_software_statement() {
    let (s, _d) = server(&["rsa"], "").await;
    let payload = base64_url(&serde_json::to_vec(&claims(json!({}))).unwrap());
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "HS256"}),
        json!({"alg": "RS384"}),
        json!({"alg": "ES512"}),
        json!({}),
        json!({"alg": "RS256", "crit": ["exp"], "exp": 1}),
    ] {
        let h = base64_url(&serde_json::to_vec(&header).unwrap());
        let jws = format!("{h}.{payload}.c2lnbmF0dXJl");
        refused(
            &post(&s, None, &json!({"software_statement": jws})).await,
            "invalid_software_statement",
        );
    }
    // An HMAC "signed" with the issuer's public key as the secret (the classic confusion).
    let jwk = serde_json::to_vec(&keys().jwk("rsa", "rsa")).unwrap();
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(&jwk).unwrap(),
    )
    .unwrap();
    refused(
        &post(&s, None, &json!({"software_statement": hmac})).await,
        "invalid_software_statement",
    );
    for malformed in [
        json!("not-a-jws"),
        json!("a.b.c"),
        json!(42),
        json!({"jws": 1}),
    ] {
        let r = post(&s, None, &json!({"software_statement": malformed})).await;
        refused(&r, "invalid_software_statement");
    }
    s.stop().await;
}

#[tokio::test]
async fn rfc7591_3_2_2_a_statement_from_an_unknown_issuer_is_unapproved() {
    let (s, _d) = server(&["rsa"], "").await;
    let jws = sign(
        "rsa",
        Algorithm::RS256,
        Some("rsa"),
        &claims(json!({"iss": "https://other.example"})),
    );
    refused(
        &post(&s, None, &json!({"software_statement": jws})).await,
        "unapproved_software_statement",
    );
    assert_eq!(client_count(&s).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn times_are_checked_with_60_s_leeway() {
    let (s, _d) = server(&["ed25519"], "").await;
    let ok = |extra: Value| sign("ed25519", Algorithm::EdDSA, None, &claims(extra));
    for (extra, good) in [
        (json!({"exp": T0 - 30}), true),
        (json!({"exp": T0 - 61}), false),
        (json!({"iat": T0 + 30}), true),
        (json!({"iat": T0 + 61}), false),
        (json!({"nbf": T0 + 61}), false),
        (json!({"nbf": T0 - 1}), true),
        (json!({"exp": null}), false),
    ] {
        let r = post(&s, None, &json!({"software_statement": ok(extra.clone())})).await;
        if good {
            assert_eq!(r.status, StatusCode::CREATED, "{extra}: {:?}", r.body);
        } else {
            refused(&r, "invalid_software_statement");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn software_statement_max_age_requires_a_recent_iat() {
    let (s, _d) = server(&["p256"], "software_statement_max_age = \"300s\"\n").await;
    let jws = |extra: Value| sign("p256", Algorithm::ES256, None, &claims(extra));
    let mut no_iat = claims(json!({}));
    no_iat.as_object_mut().unwrap().remove("iat");
    let no_iat = sign("p256", Algorithm::ES256, None, &no_iat);
    refused(
        &post(&s, None, &json!({"software_statement": no_iat})).await,
        "invalid_software_statement",
    );
    refused(
        &post(
            &s,
            None,
            &json!({"software_statement": jws(json!({"iat": T0 - 301}))}),
        )
        .await,
        "invalid_software_statement",
    );
    let r = post(
        &s,
        None,
        &json!({"software_statement": jws(json!({"iat": T0 - 300}))}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn require_software_statement_refuses_a_registration_without_one() {
    let (s, _d) = server(&["rsa"], "require_software_statement = true\n").await;
    let r = post(&s, None, &json!({"grant_types": ["client_credentials"]})).await;
    refused(&r, "invalid_software_statement");
    let jws = sign("rsa", Algorithm::RS256, None, &claims(json!({})));
    assert_eq!(
        post(&s, None, &json!({"software_statement": jws}))
            .await
            .status,
        StatusCode::CREATED
    );
    s.stop().await;
}

#[tokio::test]
async fn a_statement_is_validated_like_any_registration() {
    let (s, _d) = server(&["rsa"], "").await;
    // It cannot grant a reserved scope...
    let jws = sign(
        "rsa",
        Algorithm::RS256,
        None,
        &claims(json!({"scope": "dcrm"})),
    );
    refused(
        &post(&s, None, &json!({"software_statement": jws})).await,
        "invalid_client_metadata",
    );
    // ...nor a redirect URI the rules refuse...
    let jws = sign(
        "rsa",
        Algorithm::RS256,
        None,
        &claims(json!({"redirect_uris": ["javascript:x"]})),
    );
    refused(
        &post(&s, None, &json!({"software_statement": jws})).await,
        "invalid_redirect_uri",
    );
    // ...nor get past require_matching_certificate: the registering certificate must
    // satisfy the DN the statement declares.
    let jws = sign(
        "rsa",
        Algorithm::RS256,
        None,
        &claims(json!({"token_endpoint_auth_method": "tls_client_auth",
                       "tls_client_auth_subject_dn": "CN=client2,O=certgate dev"})),
    );
    refused(
        &post(&s, Some("client1"), &json!({"software_statement": jws})).await,
        "invalid_client_metadata",
    );
    s.stop().await;
}

#[tokio::test]
async fn a_put_keeps_the_statements_claims_unless_it_brings_a_new_statement() {
    let (s, _d) = server(&["rsa"], "").await;
    let jws = sign("rsa", Algorithm::RS256, None, &claims(json!({})));
    let reg = post(&s, None, &json!({"software_statement": jws}))
        .await
        .json();
    let id = reg["client_id"].as_str().unwrap();
    let path = format!("/register/{id}");
    let c = s.tls(None);
    // A PUT without a statement: the body cannot override the statement's claims.
    let r = c
        .put_json(
            &path,
            &[("authorization", &bearer(&reg["registration_access_token"]))],
            &json!({"client_id": id, "client_name": "Renamed", "scope": "other",
                    "grant_types": ["client_credentials"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let put = r.json();
    assert_eq!(put["client_name"], "Directory Bank App");
    assert_eq!(put["scope"], "accounts payments");
    assert_eq!(put["software_statement"], jws);
    // A PUT with a new valid statement: its claims.
    let newer = sign(
        "rsa",
        Algorithm::RS256,
        None,
        &claims(json!({"client_name": "Renamed by the directory"})),
    );
    let r = c
        .put_json(
            &path,
            &[("authorization", &bearer(&put["registration_access_token"]))],
            &json!({"client_id": id, "software_statement": newer}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let put2 = r.json();
    assert_eq!(put2["client_name"], "Renamed by the directory");
    assert_eq!(put2["software_statement"], newer);
    // A PUT with a bad statement: refused, nothing changes.
    let r = c
        .put_json(
            &path,
            &[("authorization", &bearer(&put2["registration_access_token"]))],
            &json!({"client_id": id, "software_statement": "x.y.z"}),
        )
        .await;
    refused(&r, "invalid_software_statement");
    s.stop().await;
}

#[tokio::test]
async fn the_issuers_keys_are_read_again_on_reload() {
    let (s, dir) = server(&["rsa"], "").await;
    let by_rsa2 = sign("rsa2", Algorithm::RS256, None, &claims(json!({})));
    refused(
        &post(&s, None, &json!({"software_statement": by_rsa2})).await,
        "invalid_software_statement",
    );
    // The directory rotates its key: the operator replaces the file and sends SIGHUP.
    jwks_file(dir.path(), "directory.jwks.json", &["rsa2"]);
    s.app.registry.reload_statement_issuers().unwrap();
    let r = post(&s, None, &json!({"software_statement": by_rsa2})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let by_rsa = sign("rsa", Algorithm::RS256, None, &claims(json!({})));
    refused(
        &post(&s, None, &json!({"software_statement": by_rsa})).await,
        "invalid_software_statement",
    );
    // A broken file keeps the keys in force.
    std::fs::write(dir.path().join("directory.jwks.json"), "{").unwrap();
    assert!(s.app.registry.reload_statement_issuers().is_err());
    let r = post(&s, None, &json!({"software_statement": by_rsa2})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    s.stop().await;
}
