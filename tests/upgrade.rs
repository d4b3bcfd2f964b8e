//! Upgrade (SPEC §7): this release's binary on a data directory the previous release
//! (c5411bc) wrote, committed in `tests/fixtures/previous-release/` (how it was made:
//! README.md there). Its snapshot (written at SIGTERM) holds four clients and a live access
//! token; its journal, without the header this release writes and left by a SIGKILL, holds
//! a fifth client. `credentials.json` has what the previous release answered.
//!
//! Every test copies the fixture to a fresh directory (the committed files are never
//! written) and starts the real binary on the copy, with the dev PKI the fixture used.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod durable;
mod listening;

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

use durable::{root, Gateway, Reply, Setup};

const FIXTURE: &str = "tests/fixtures/previous-release";

/// The fixture's credentials and a private copy of its data directory.
struct Upgrade {
    creds: Value,
    data: tempfile::TempDir,
}

impl Upgrade {
    /// Copies the fixture's data directory, after checking that the certificates it was
    /// made with are still the ones in the tree.
    fn new() -> Self {
        let fixture = root().join(FIXTURE);
        let creds: Value =
            serde_json::from_str(&fs::read_to_string(fixture.join("credentials.json")).unwrap())
                .unwrap();
        for (name, cert) in creds["certificates"].as_object().unwrap() {
            let file = cert["file"].as_str().unwrap();
            assert_eq!(
                hex_sha256_of(&root().join(file)),
                cert["sha256"].as_str().unwrap(),
                "{file} ({name}) is not the certificate the fixture was made with: the dev \
                 PKI was regenerated; remake the fixture ({FIXTURE}/README.md)"
            );
        }
        let data = tempfile::tempdir().unwrap();
        let from = fixture.join("data");
        let mut copied = 0;
        for entry in fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), data.path().join(entry.file_name())).unwrap();
            copied += 1;
        }
        assert!(copied >= 2, "{from:?}: expected a snapshot and a journal");
        Self { creds, data }
    }

    /// What the previous release answered for the fixture client `key`.
    fn client(&self, key: &str) -> &Value {
        let c = &self.creds["clients"][key];
        assert!(c.is_object(), "no client {key:?} in credentials.json");
        c
    }

    fn id(&self, key: &str) -> String {
        str_of(self.client(key), "client_id")
    }

    /// The configuration this release starts with: open registration (as the fixture had),
    /// registration tokens as long-lived as the fixture's.
    fn setup(&self) -> Setup {
        let mut setup = Setup::new(Some(self.data.path()));
        setup.extra = "[management]\n\
                       registration_token_ttl = \"36500d\"\n\
                       read_update_ttl = \"36500d\"\n"
            .into();
        setup
    }

    fn start(&self) -> Gateway {
        Gateway::start(&self.setup())
    }
}

/// The `clients` count of `GET /healthz` on the admin listener.
fn clients_at_healthz(admin: u16) -> u64 {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    tcp.set_read_timeout(Some(durable::IO_TIMEOUT)).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    json["clients"]
        .as_u64()
        .unwrap_or_else(|| panic!("no clients count: {answer}"))
}

fn str_of(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field:?} in {v}"))
        .to_owned()
}

/// Lower-case hex SHA-256 of a PEM certificate's DER.
fn hex_sha256_of(pem: &Path) -> String {
    use rustls::pki_types::pem::PemObject as _;
    use sha2::Digest as _;
    let der = rustls::pki_types::CertificateDer::from_pem_file(pem)
        .unwrap_or_else(|e| panic!("{pem:?}: {e}"));
    sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The certificate argument of `Gateway::api` for a certificate named in credentials.json:
/// a dev PKI name, or the absolute path prefix of the fixture's own certificate.
fn cert(name: &str) -> &'static str {
    static HASH_CN: OnceLock<String> = OnceLock::new();
    match name {
        "client1" => "client1",
        "client2" => "client2",
        "selfsigned" => "selfsigned",
        "hash-cn" => HASH_CN.get_or_init(|| {
            let prefix = root().join(FIXTURE).join("hash-cn");
            prefix.to_str().unwrap().to_owned()
        }),
        other => panic!("no certificate {other:?} in the fixture"),
    }
}

/// `client_credentials` at `/token` authenticated by a certificate (`tls_client_auth`,
/// `self_signed_tls_client_auth`).
fn token_with_cert(g: &Gateway, cert_name: Option<&str>, client_id: &str) -> Reply {
    g.api(cert_name.map(cert))
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
            ],
        )
        .unwrap()
}

/// `client_credentials` at `/token` with `client_secret_basic`.
fn token_with_secret(g: &Gateway, client_id: &str, secret: &str) -> Reply {
    g.api(None).token_basic(client_id, secret).unwrap()
}

/// `GET /register/{id}` with a registration access token, presenting `cert_name`.
fn read_client(g: &Gateway, cert_name: Option<&str>, client_id: &str, token: &str) -> Reply {
    g.api(cert_name.map(cert))
        .manage("GET", client_id, token)
        .unwrap()
}

fn assert_token_issued(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert!(
        !str_of(&r.json(), "access_token").is_empty(),
        "{what}: {}",
        r.text()
    );
}

fn assert_refused(r: &Reply, status: u16, error: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.json()["error"], error, "{what}: {}", r.text());
}

// === what the previous release wrote loads ===

/// Every client the previous release acknowledged is there: four from its snapshot, one
/// from its header-less journal.
#[test]
fn every_client_of_the_previous_release_is_restored_from_its_snapshot_and_journal() {
    let up = Upgrade::new();
    let g = up.start();
    assert_eq!(
        clients_at_healthz(g.admin),
        up.creds["clients"].as_object().unwrap().len() as u64,
        "log:\n{}",
        g.log_tail()
    );
}

/// A crash of the previous release in the middle of a journal write: the copy's header-less
/// journal gets a torn last record (the start of a copy of its first one). It is dropped
/// with a warning; every acknowledged client is there, and stays there after a restart.
#[test]
fn torn_tail_of_the_previous_releases_header_less_journal_is_dropped_and_the_rest_loads() {
    let up = Upgrade::new();
    let journal = durable::files_named(up.data.path(), "journal-", ".log")
        .pop()
        .expect("the fixture has a journal");
    let bytes = fs::read(&journal).unwrap();
    assert!(bytes.len() > 40, "{journal:?} holds a record");
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[..40]);
    fs::write(&journal, &torn).unwrap();

    let mut g = up.start();
    // Lines reach the log in batches, a few milliseconds after what they report.
    let log = g.log_until(|l| l.contains("torn"));
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("torn")),
        "no warning about the torn record; log:\n{log}"
    );
    let all = up.creds["clients"].as_object().unwrap().len() as u64;
    assert_eq!(clients_at_healthz(g.admin), all, "log:\n{log}");
    let c = up.client("secret_journal_only");
    assert_token_issued(
        &token_with_secret(&g, &str_of(c, "client_id"), &str_of(c, "client_secret")),
        "the client in the journal",
    );
    g.kill9();
    let g = up.start();
    assert_eq!(clients_at_healthz(g.admin), all, "log:\n{}", g.log_tail());
}

// === certificate-based authentication of old clients ===

/// The previous release stored the declared subject DN `cn = Client1 ,  o=Certgate   Dev`
/// in its canonical form; client1's certificate (CN=client1,O=certgate dev) still
/// authenticates, another certificate or none does not.
#[test]
fn tls_client_auth_client_with_a_differently_spelled_dn_gets_a_token_with_its_certificate_only() {
    let up = Upgrade::new();
    let g = up.start();
    let id = up.id("tls_client_auth");
    assert_token_issued(&token_with_cert(&g, Some("client1"), &id), "client1");
    for other in [Some("client2"), Some("selfsigned"), Some("hash-cn"), None] {
        assert_refused(
            &token_with_cert(&g, other, &id),
            401,
            "invalid_client",
            &format!("{other:?} for the client1 client"),
        );
    }
}

/// The certificate's CN starts with `#` (`CN=\#3 client3`). The previous release stored
/// the declared DN as `CN=#3 client3,O=certgate dev` (its canonical form did not escape a
/// leading `#`); that client must not be stranded by reading it as a `#hex` value.
#[test]
fn tls_client_auth_client_whose_stored_dn_value_starts_with_a_hash_still_authenticates() {
    let up = Upgrade::new();
    let g = up.start();
    let id = up.id("tls_client_auth_hash_cn");
    assert_token_issued(&token_with_cert(&g, Some("hash-cn"), &id), "hash-cn");
    assert_refused(
        &token_with_cert(&g, Some("client1"), &id),
        401,
        "invalid_client",
        "client1 for the hash-cn client",
    );
}

/// `self_signed_tls_client_auth`: the thumbprint of the `x5c` certificate in the registered
/// jwks survived; that certificate authenticates, a CA-issued one does not.
#[test]
fn self_signed_client_authenticates_with_the_certificate_in_its_registered_jwks() {
    let up = Upgrade::new();
    let g = up.start();
    let id = up.id("self_signed");
    assert_token_issued(&token_with_cert(&g, Some("selfsigned"), &id), "selfsigned");
    assert_refused(
        &token_with_cert(&g, Some("client1"), &id),
        401,
        "invalid_client",
        "client1 for the self-signed client",
    );
}

// === secrets ===

/// Secret digests from the snapshot (a secret the previous release rotated) and from the
/// journal (a client registered after its restart, then SIGKILLed) still authenticate;
/// the secret replaced by the rotation and a wrong one do not.
#[test]
fn secret_clients_from_the_snapshot_and_the_journal_authenticate_with_their_secrets() {
    let up = Upgrade::new();
    let g = up.start();
    for key in ["secret_rotated", "secret_journal_only"] {
        let c = up.client(key);
        let id = str_of(c, "client_id");
        assert_token_issued(
            &token_with_secret(&g, &id, &str_of(c, "client_secret")),
            key,
        );
        assert_refused(
            &token_with_secret(&g, &id, "not-the-secret"),
            401,
            "invalid_client",
            &format!("{key} with a wrong secret"),
        );
    }
    let c = up.client("secret_rotated");
    assert_refused(
        &token_with_secret(
            &g,
            &str_of(c, "client_id"),
            &str_of(c, "replaced_client_secret"),
        ),
        401,
        "invalid_client",
        "the secret the previous release replaced",
    );
}

// === registration access tokens (RFC 7592) ===

/// Every client's stored registration access token reads its client (with the metadata the
/// previous release stored, e.g. the DN as declared) and rotates: the new token works, the
/// stored one is then refused. The token the previous release replaced is refused.
#[test]
fn stored_registration_access_tokens_read_their_clients_and_rotate() {
    let up = Upgrade::new();
    let g = up.start();
    for (key, c) in up.creds["clients"].as_object().unwrap() {
        let id = str_of(c, "client_id");
        let stored = str_of(c, "registration_access_token");
        let bound = c["registered_with_certificate"].as_str();
        let r = read_client(&g, bound, &id, &stored);
        assert_eq!(
            r.status,
            200,
            "{key}: GET with the stored token: {}",
            r.text()
        );
        let body = r.json();
        assert_eq!(body["client_id"], id.as_str(), "{key}: {body}");
        assert_eq!(
            body["token_endpoint_auth_method"], c["token_endpoint_auth_method"],
            "{key}: {body}"
        );
        if let Some(dn) = c.get("tls_client_auth_subject_dn") {
            assert_eq!(&body["tls_client_auth_subject_dn"], dn, "{key}: {body}");
        }
        let rotated = str_of(&body, "registration_access_token");
        assert_ne!(rotated, stored, "{key}: the token was not rotated");

        let r = read_client(&g, bound, &id, &stored);
        assert_refused(
            &r,
            401,
            "invalid_token",
            &format!("{key}: the stored token after the rotation"),
        );
        let r = read_client(&g, bound, &id, &rotated);
        assert_eq!(r.status, 200, "{key}: GET with the new token: {}", r.text());
    }
    let c = up.client("secret_rotated");
    let r = read_client(
        &g,
        Some("client2"),
        &str_of(c, "client_id"),
        &str_of(c, "replaced_registration_access_token"),
    );
    assert_refused(
        &r,
        401,
        "invalid_token",
        "the registration token the previous release replaced",
    );
}

// === access tokens ===

/// The certificate-bound access token the previous release issued (and snapshotted) is
/// still active when its client introspects it.
#[test]
fn access_token_issued_by_the_previous_release_is_still_active() {
    let up = Upgrade::new();
    let g = up.start();
    let c = up.client("tls_client_auth");
    let id = str_of(c, "client_id");
    let r = g
        .api(Some("client1"))
        .form(
            "/introspect",
            &[],
            &[
                ("client_id", id.as_str()),
                ("token", &str_of(c, "access_token")),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "introspect: {}", r.text());
    let body = r.json();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["client_id"], id.as_str(), "{body}");
}

// === after the upgrade ===

/// Everything authenticates in one pass: the checks every restart below must still pass.
/// `secrets`: (client id, secret) of every secret client.
fn assert_all_authenticate(up: &Upgrade, g: &Gateway, secrets: &[(String, String)]) {
    assert_eq!(
        clients_at_healthz(g.admin),
        up.creds["clients"].as_object().unwrap().len() as u64 + 1,
        "log:\n{}",
        g.log_tail()
    );
    for (key, cert_name) in [
        ("tls_client_auth", "client1"),
        ("tls_client_auth_hash_cn", "hash-cn"),
        ("self_signed", "selfsigned"),
    ] {
        let r = token_with_cert(g, Some(cert_name), &up.id(key));
        assert_eq!(r.status, 200, "{key}: {}\nlog:\n{}", r.text(), g.log_tail());
    }
    for (id, secret) in secrets {
        let r = token_with_secret(g, id, secret);
        assert_eq!(r.status, 200, "{id}: {}\nlog:\n{}", r.text(), g.log_tail());
    }
}

/// After the upgrade, the new binary keeps working on the directory it converted: a client
/// registered and a registration token rotated by this release, and everything from the
/// previous one, survive a graceful restart and then a SIGKILL.
#[test]
fn after_the_upgrade_everything_still_loads_across_restarts_of_the_new_binary() {
    let up = Upgrade::new();
    let mut g = up.start();
    let mut secrets: Vec<(String, String)> = ["secret_rotated", "secret_journal_only"]
        .iter()
        .map(|k| (up.id(k), str_of(up.client(k), "client_secret")))
        .collect();

    // A change made by this release: a new secret client.
    let r = g
        .api(None)
        .register(&serde_json::json!({
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["client_credentials"],
        }))
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    secrets.push((r.field("client_id"), r.field("client_secret")));
    // And a rotation of a client of the previous release.
    let id = up.id("tls_client_auth");
    let stored = str_of(up.client("tls_client_auth"), "registration_access_token");
    let r = read_client(&g, Some("client1"), &id, &stored);
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = r.field("registration_access_token");
    assert_all_authenticate(&up, &g, &secrets);

    // A graceful stop (snapshot), then a SIGKILL right after one more rotation.
    g.signal("TERM");
    assert!(g.wait_exit().success(), "log:\n{}", g.log_tail());
    let mut g = up.start();
    assert_all_authenticate(&up, &g, &secrets);
    let r = read_client(&g, Some("client1"), &id, &rotated);
    assert_eq!(r.status, 200, "after the restart: {}", r.text());
    let rotated_again = r.field("registration_access_token");
    g.kill9();

    let g = up.start();
    assert_all_authenticate(&up, &g, &secrets);
    for (token, what) in [
        (&stored, "the token stored by the previous release"),
        (&rotated, "a token replaced before the SIGKILL"),
    ] {
        assert_refused(
            &read_client(&g, Some("client1"), &id, token),
            401,
            "invalid_token",
            what,
        );
    }
    let r = read_client(&g, Some("client1"), &id, &rotated_again);
    assert_eq!(r.status, 200, "after the SIGKILL: {}", r.text());
}
