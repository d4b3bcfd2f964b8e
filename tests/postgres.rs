//! Several nodes, one registry (SPEC §7a): real `certgate` processes on one real PostgreSQL
//! cluster the test starts (`tests/pg`). Run with `cargo test --features postgres` (Debian's
//! `postgresql` installed; `.ci/run` does that).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod durable;
mod listening;
mod pg;
mod upstream;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

use durable::{dcrm_token, registration_body, root, Api, Gateway, Reply, Setup};
use pg::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// The `[store]` table of a node on database `db`.
fn store(cluster: &Cluster, db: &str, extra: &str) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"{}\"\npostgres_pool_size = 8\n{extra}",
        cluster.url(db)
    )
}

fn setup(cluster: &Cluster, db: &str) -> Setup {
    let mut s = Setup::new(None);
    s.store = Some(store(cluster, db, ""));
    s
}

/// A fresh database and two nodes on it (`registration`: the `authentication` value, and
/// any further keys of `[registration]` on the lines after it).
fn two_nodes(db: &str, registration: &'static str) -> (Cluster, Gateway, Gateway, Setup) {
    let cluster = Cluster::start();
    cluster.create_db(db);
    let mut s = setup(&cluster, db);
    if !registration.is_empty() {
        s.registration_auth = registration;
    }
    let a = Gateway::start(&s);
    let b = Gateway::start(&s);
    (cluster, a, b, s)
}

fn register(api: &mut Api) -> Reply {
    let r = api.register(&registration_body()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    r
}

/// A GET of client `id` on `node` with `token`: it must rotate; the new token.
fn rotate(node: &Gateway, id: &str, token: &str) -> String {
    let r = node.api(Some("client1")).manage("GET", id, token).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.field("registration_access_token")
}

fn introspect(api: &mut Api, id: &str, secret: &str, token: &str) -> bool {
    let auth = common::basic_auth(id, secret);
    let r = api
        .form(
            "/introspect",
            &[("authorization", &auth)],
            &[("token", token)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["active"] == true
}

/// `/healthz` on the (plain HTTP) admin listener: its status, 0 when unreachable.
fn healthz(g: &Gateway) -> u16 {
    use std::io::{Read as _, Write as _};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", g.admin)) else {
        return 0;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen within {within:?}");
}

#[test]
fn rfc7592_a_client_registered_on_one_node_rotates_on_the_other() {
    let (_pg, a, b, _) = two_nodes("rotate", "");
    let reg = register(&mut a.api(Some("client1")));
    let (id, t1, s1) = (
        reg.field("client_id"),
        reg.field("registration_access_token"),
        reg.field("client_secret"),
    );
    let r = b.api(Some("client1")).manage("GET", &id, &t1).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (t2, s2) = (
        r.field("registration_access_token"),
        r.field("client_secret"),
    );
    // The old token and secret died on every node at once.
    assert_eq!(
        a.api(Some("client1"))
            .manage("GET", &id, &t1)
            .unwrap()
            .status,
        401
    );
    assert_eq!(a.api(None).token_basic(&id, &s1).unwrap().status, 401);
    assert_eq!(a.api(None).token_basic(&id, &s2).unwrap().status, 200);
    let r = a.api(Some("client1")).manage("GET", &id, &t2).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn rotation_is_atomic_across_nodes_32_concurrent_reads_have_one_winner() {
    let (_pg, a, b, _) = two_nodes("race", "");
    let ports = [a.tls, b.tls];
    for round in 0..5 {
        let reg = register(&mut a.api(Some("client1")));
        let id = reg.field("client_id");
        let token = reg.field("registration_access_token");
        let barrier = Arc::new(Barrier::new(32));
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (id, token, barrier) = (id.clone(), token.clone(), barrier.clone());
                let port = ports[i % 2];
                std::thread::spawn(move || {
                    let mut api = Api {
                        port,
                        cert: Some("client1"),
                        conn: None,
                    };
                    // Connect first, so the requests leave together.
                    let _ = api.call("GET", "/healthz", &[], b"");
                    barrier.wait();
                    api.manage("GET", &id, &token).unwrap()
                })
            })
            .collect();
        let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {:?}",
            replies.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        assert!(
            replies.iter().all(|r| r.status == 200 || r.status == 401),
            "round {round}: {:?}",
            replies
                .iter()
                .map(|r| (r.status, r.text()))
                .collect::<Vec<_>>()
        );
        // The one successor works (on either node).
        let next = winners[0].field("registration_access_token");
        let r = b.api(Some("client1")).manage("GET", &id, &next).unwrap();
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
    }
}

#[test]
fn initial_access_uses_are_spent_atomically_across_nodes() {
    let (_pg, a, b, _) = two_nodes(
        "initial",
        "[\"initial-access-token\"]\ninitial_access_token_uses = 3",
    );
    // Registration by initial access token only; the admin hands one out.
    let mut s_auth = a.api(Some("admin"));
    let r = s_auth
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "admin"),
                ("scope", "dcr"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let iat = r.field("access_token");
    let ports = [a.tls, b.tls];
    let barrier = Arc::new(Barrier::new(12));
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let (iat, barrier, port) = (iat.clone(), barrier.clone(), ports[i % 2]);
            std::thread::spawn(move || {
                let mut api = Api {
                    port,
                    cert: None,
                    conn: None,
                };
                let _ = api.call("GET", "/healthz", &[], b"");
                barrier.wait();
                let auth = format!("Bearer {iat}");
                api.call(
                    "POST",
                    "/register",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &auth),
                    ],
                    registration_body().to_string().as_bytes(),
                )
                .unwrap()
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 401),
        "{statuses:?}"
    );
}

#[test]
fn revocation_and_deletion_take_effect_on_the_other_node_at_once() {
    let (_pg, a, b, _) = two_nodes("revoke", "");
    let reg = register(&mut a.api(Some("client1")));
    let (id, secret, rat) = (
        reg.field("client_id"),
        reg.field("client_secret"),
        reg.field("registration_access_token"),
    );
    let r = a.api(None).token_basic(&id, &secret).unwrap();
    let access = r.field("access_token");
    assert!(introspect(&mut b.api(None), &id, &secret, &access));
    // Revoked on B: inactive on A at once.
    let auth = common::basic_auth(&id, &secret);
    let r = b
        .api(None)
        .form(
            "/revoke",
            &[("authorization", &auth)],
            &[("token", &access)],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!introspect(&mut a.api(None), &id, &secret, &access));
    // The registration token, revoked on A: dead on B.
    let r = a
        .api(None)
        .form("/revoke", &[("authorization", &auth)], &[("token", &rat)])
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        b.api(Some("client1"))
            .manage("GET", &id, &rat)
            .unwrap()
            .status,
        401
    );
    // Deleted by an administrator on B: gone on A, with its access tokens.
    let access = a
        .api(None)
        .token_basic(&id, &secret)
        .unwrap()
        .field("access_token");
    let mut admin = b.api(Some("admin"));
    let dcrm = dcrm_token(&mut admin);
    assert_eq!(admin.manage("DELETE", &id, &dcrm).unwrap().status, 204);
    assert_eq!(a.api(None).token_basic(&id, &secret).unwrap().status, 401);
    let r = a
        .api(Some("admin"))
        .form(
            "/introspect",
            &[],
            &[("client_id", "admin"), ("token", &access)],
        )
        .unwrap();
    assert_eq!(r.json()["active"], false);
}

/// A node answers a rotation it served last from its own copy of the record, which the
/// other node may have changed since: that copy must never decide anything but a
/// compare-and-set (with the Reuse flag and no secret rotation, a GET commits nothing at
/// all).
#[test]
fn a_node_never_answers_from_its_copy_of_a_record_the_other_node_changed() {
    let cluster = Cluster::start();
    cluster.create_db("stale");
    let mut rotating = setup(&cluster, "stale");
    let a = Gateway::start(&rotating);
    rotating.extra =
        "[management]\nreuse_registration_access_token = true\nrotate_client_secret = false\n"
            .into();
    let reuse = Gateway::start(&rotating);
    let b = Gateway::start(&setup(&cluster, "stale"));

    // Rotation: A rotated last; B rotates; A is asked with the token B replaced.
    let reg = register(&mut a.api(Some("client1")));
    let (id, t0) = (
        reg.field("client_id"),
        reg.field("registration_access_token"),
    );
    let t1 = rotate(&a, &id, &t0);
    let t2 = rotate(&b, &id, &t1);
    let r = a.api(Some("client1")).manage("GET", &id, &t1).unwrap();
    assert_eq!(r.status, 401, "a replaced token worked again: {}", r.text());
    let t3 = rotate(&a, &id, &t2);
    // A DELETE on A with a token B rotated away deletes nothing.
    let t4 = rotate(&b, &id, &t3);
    let r = a.api(Some("client1")).manage("DELETE", &id, &t3).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = b.api(Some("client1")).manage("GET", &id, &t4).unwrap();
    assert_eq!(r.status, 200, "the client was deleted with a stale token");

    // Reuse: the node that registered the client keeps its copy; the client is revoked,
    // then deleted, through the other node.
    let reg = register(&mut reuse.api(Some("client1")));
    let (id, rat) = (
        reg.field("client_id"),
        reg.field("registration_access_token"),
    );
    let r = reuse.api(Some("client1")).manage("GET", &id, &rat).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("registration_access_token"), rat, "Reuse rotated");
    let auth = common::basic_auth(&id, &reg.field("client_secret"));
    let r = b
        .api(None)
        .form("/revoke", &[("authorization", &auth)], &[("token", &rat)])
        .unwrap();
    assert_eq!(r.status, 200);
    let r = reuse.api(Some("client1")).manage("GET", &id, &rat).unwrap();
    assert_eq!(
        r.status,
        401,
        "a revoked token read the client: {}",
        r.text()
    );

    let reg = register(&mut reuse.api(Some("client1")));
    let (id, rat) = (
        reg.field("client_id"),
        reg.field("registration_access_token"),
    );
    let mut admin = b.api(Some("admin"));
    let dcrm = dcrm_token(&mut admin);
    assert_eq!(admin.manage("DELETE", &id, &dcrm).unwrap().status, 204);
    let r = reuse.api(Some("client1")).manage("GET", &id, &rat).unwrap();
    assert_eq!(r.status, 401, "a deleted client was read: {}", r.text());
}

#[test]
fn an_edge_route_revocation_holds_at_once_on_its_node_and_within_the_cache_ttl_elsewhere() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(upstream::Upstream::start());
    let pg = Cluster::start();
    pg.create_db("routes");
    let mut s = setup(&pg, "routes");
    s.store = Some(store(&pg, "routes", ""));
    s.extra = format!(
        "[tokens]\nvalidation_cache_ttl = \"2s\"\n\
         [[routes]]\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
        up.url()
    );
    let a = Gateway::start(&s);
    let b = Gateway::start(&s);
    let body = json!({"grant_types": ["client_credentials"], "scope": "api",
                      "token_endpoint_auth_method": "tls_client_auth",
                      "tls_client_auth_subject_dn": "CN=client1,O=certgate dev"});
    let r = a.api(Some("client1")).register(&body).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.field("client_id");
    let r = a
        .api(Some("client1"))
        .form(
            "/token",
            &[],
            &[("grant_type", "client_credentials"), ("client_id", &id)],
        )
        .unwrap();
    let token = r.field("access_token");
    let call = |g: &Gateway| {
        let auth = format!("Bearer {token}");
        g.api(Some("client1"))
            .call("GET", "/api/orders", &[("authorization", &auth)], b"")
            .unwrap()
            .status
    };
    assert_eq!(call(&a), 200);
    assert_eq!(call(&b), 200);
    let r = a
        .api(Some("client1"))
        .form("/revoke", &[], &[("client_id", &id), ("token", &token)])
        .unwrap();
    assert_eq!(r.status, 200);
    // The revoking node: at once.
    assert_eq!(call(&a), 401);
    // The other node: within validation_cache_ttl (2 s).
    let revoked = Instant::now();
    wait_until("the other node to refuse", Duration::from_secs(6), || {
        call(&b) == 401
    });
    assert!(
        revoked.elapsed() < Duration::from_secs(4),
        "{:?}",
        revoked.elapsed()
    );
}

#[test]
fn sigkill_of_one_node_mid_burst_loses_no_acknowledged_change() {
    let (_pg, mut a, b, _) = two_nodes("sigkill", "");
    let port = a.tls;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut api = Api {
                    port,
                    cert: Some("client1"),
                    conn: None,
                };
                let mut acknowledged = Vec::new();
                let until = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until {
                    match api.register(&registration_body()) {
                        Ok(r) if r.status == 201 => {
                            let (id, secret) = (r.field("client_id"), r.field("client_secret"));
                            match api.token_basic(&id, &secret) {
                                Ok(t) if t.status == 200 => {
                                    acknowledged.push((id, secret, Some(t.field("access_token"))))
                                }
                                _ => {
                                    acknowledged.push((id, secret, None));
                                    break;
                                }
                            }
                        }
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    a.kill9();
    let acknowledged: Vec<_> = workers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(
        acknowledged.len() > 10,
        "too little load: {}",
        acknowledged.len()
    );
    let mut api = b.api(None);
    for (id, secret, access) in &acknowledged {
        let r = api.token_basic(id, secret).unwrap();
        assert_eq!(r.status, 200, "acknowledged client {id} lost: {}", r.text());
        if let Some(access) = access {
            assert!(
                introspect(&mut api, id, secret, access),
                "token of {id} lost"
            );
        }
    }
}

#[test]
fn postgres_stopped_under_load_gives_503_then_service_resumes_without_a_restart() {
    let (pg, a, _b, _) = two_nodes("outage", "");
    let reg = register(&mut a.api(Some("client1")));
    let (id, secret) = (reg.field("client_id"), reg.field("client_secret"));
    pg.stop();
    let mut api = a.api(None);
    let mut saw_503 = false;
    wait_until(
        "a 503 while the database is down",
        Duration::from_secs(10),
        || match api.token_basic(&id, &secret) {
            Ok(r) if r.status == 503 => {
                saw_503 = r.field("error") == "temporarily_unavailable";
                true
            }
            _ => false,
        },
    );
    assert!(saw_503);
    let r = api.token_basic(&id, &secret).unwrap();
    assert_eq!(r.status, 503);
    wait_until("/healthz 503", Duration::from_secs(10), || {
        healthz(&a) == 503
    });
    pg.restart();
    wait_until(
        "service to resume",
        Duration::from_secs(20),
        || matches!(api.token_basic(&id, &secret), Ok(r) if r.status == 200),
    );
    wait_until("/healthz 200", Duration::from_secs(10), || {
        healthz(&a) == 200
    });
    // Writes too.
    register(&mut a.api(Some("client1")));
}

#[test]
fn a_node_started_before_its_database_answers_503_then_serves() {
    let pg = Cluster::start();
    pg.create_db("late");
    pg.stop();
    let s = setup(&pg, "late");
    let a = Gateway::start_listening(&s);
    wait_until("/healthz 503", Duration::from_secs(10), || {
        healthz(&a) == 503
    });
    let r = a
        .api(Some("client1"))
        .register(&registration_body())
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    pg.restart();
    wait_until("the node to become ready", Duration::from_secs(20), || {
        healthz(&a) == 200
    });
    register(&mut a.api(Some("client1")));
}

/// Every form a credential could take in a dump.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let mut out = vec![secret.as_bytes().to_vec()];
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(secret) {
        out.push(
            raw.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        );
        out.push(STANDARD.encode(&raw).into_bytes());
        out.push(raw);
    }
    out
}

#[test]
fn no_plaintext_credential_reaches_the_database() {
    let pg = Cluster::start();
    pg.create_db("secrets");
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), STANDARD.encode([9u8; 32])).unwrap();
    let mut s = Setup::new(None);
    s.store = Some(store(
        &pg,
        "secrets",
        &format!("secret_key_file = \"{}\"\n", key.path().display()),
    ));
    s.extra = "[management]\nrotation_grace = \"60s\"\nrequire_same_certificate = true\n".into();
    let a = Gateway::start(&s);
    let mut api = a.api(Some("client1"));
    let reg = register(&mut api);
    let id = reg.field("client_id");
    let mut secrets = vec![
        reg.field("registration_access_token"),
        reg.field("client_secret"),
    ];
    // A rotation leaves a (sealed) grace successor in the row.
    let r = api.manage("GET", &id, &secrets[0]).unwrap();
    assert_eq!(r.status, 200);
    secrets.push(r.field("registration_access_token"));
    secrets.push(r.field("client_secret"));
    let r = api.token_basic(&id, &secrets[3]).unwrap();
    secrets.push(r.field("access_token"));
    // The grace replay works from the sealed successor (on a second node too).
    let b = Gateway::start(&s);
    let r = b
        .api(Some("client1"))
        .manage("GET", &id, &secrets[0])
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("registration_access_token"), secrets[2]);
    let dump = pg.dump("secrets");
    assert!(
        dump.windows(id.len()).any(|w| w == id.as_bytes()),
        "the dump lacks the client"
    );
    for secret in &secrets {
        for form in forms(secret) {
            assert!(
                !dump.windows(form.len()).any(|w| w == form.as_slice()),
                "a credential appears in pg_dump"
            );
        }
    }
}

#[test]
fn two_nodes_migrating_an_empty_database_at_once_both_start() {
    let pg = Cluster::start();
    pg.create_db("together");
    let s = setup(&pg, "together");
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Gateway::start(&s));
        let b = scope.spawn(|| Gateway::start(&s));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(
        pg.psql("together", "SELECT version FROM certgate_schema"),
        "1"
    );
    register(&mut a.api(Some("client1")));
    register(&mut b.api(Some("client1")));
}

#[test]
fn certgate_migrate_applies_the_schema_and_a_newer_schema_is_refused() {
    let pg = Cluster::start();
    pg.create_db("schema");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("certgate.toml");
    std::fs::write(&config, setup(&pg, "schema").toml()).unwrap();
    let out = Command::new(BIN)
        .current_dir(root())
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.psql("schema", "SELECT version FROM certgate_schema"),
        "1"
    );
    // A release from the future was here.
    pg.psql("schema", "UPDATE certgate_schema SET version = 99");
    let (status, log) = Gateway::refuse(&setup(&pg, "schema"));
    assert!(!status.success());
    assert!(log.contains("newer than this release"), "{log}");
}

#[test]
fn migrate_store_moves_a_data_dir_into_an_empty_database() {
    let data = tempfile::tempdir().unwrap();
    let memory = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&memory);
    let mut api = g.api(Some("client1"));
    let mut clients = Vec::new();
    for _ in 0..5 {
        let r = register(&mut api);
        clients.push((
            r.field("client_id"),
            r.field("client_secret"),
            r.field("registration_access_token"),
        ));
    }
    // A rotation, a live access token, a revoked one, a revoked registration token.
    let r = api.manage("GET", &clients[0].0, &clients[0].2).unwrap();
    clients[0].2 = r.field("registration_access_token");
    clients[0].1 = r.field("client_secret");
    let live = api
        .token_basic(&clients[1].0, &clients[1].1)
        .unwrap()
        .field("access_token");
    let revoked = api
        .token_basic(&clients[2].0, &clients[2].1)
        .unwrap()
        .field("access_token");
    let auth = common::basic_auth(&clients[2].0, &clients[2].1);
    api.form(
        "/revoke",
        &[("authorization", &auth)],
        &[("token", &revoked)],
    )
    .unwrap();
    let auth = common::basic_auth(&clients[3].0, &clients[3].1);
    api.form(
        "/revoke",
        &[("authorization", &auth)],
        &[("token", &clients[3].2)],
    )
    .unwrap();
    drop(api);
    g.signal("TERM");
    assert!(g.wait_exit().success());

    let pg = Cluster::start();
    pg.create_db("moved");
    let migrate = || {
        Command::new(BIN)
            .current_dir(root())
            .args(["migrate-store", "--from"])
            .arg(data.path())
            .args(["--to", &pg.url("moved")])
            .output()
            .unwrap()
    };
    let out = migrate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrated 5 clients"));
    // Only into an empty database.
    let again = migrate();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let node = Gateway::start(&setup(&pg, "moved"));
    let mut api = node.api(Some("client1"));
    for (id, secret, _) in &clients {
        assert_eq!(
            api.token_basic(id, secret).unwrap().status,
            200,
            "client {id}"
        );
    }
    assert!(introspect(&mut api, &clients[1].0, &clients[1].1, &live));
    assert!(!introspect(
        &mut api,
        &clients[2].0,
        &clients[2].1,
        &revoked
    ));
    assert_eq!(
        api.manage("GET", &clients[3].0, &clients[3].2)
            .unwrap()
            .status,
        401
    );
    let r = api.manage("GET", &clients[0].0, &clients[0].2).unwrap();
    assert_eq!(
        r.status,
        200,
        "the rotated token carried over: {}",
        r.text()
    );
    let r = api.manage("GET", &clients[4].0, &clients[4].2).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn sslmode_verify_full_connects_only_to_a_server_whose_certificate_verifies() {
    let pg = Cluster::start();
    pg.create_db("tls");
    // The dev server certificate (for 127.0.0.1 and localhost, from the dev CA).
    let ssl = tempfile::tempdir().unwrap();
    let (cert, key) = (
        ssl.path().join("server.pem"),
        ssl.path().join("server-key.pem"),
    );
    std::fs::copy(root().join("certs/server.pem"), &cert).unwrap();
    std::fs::copy(root().join("certs/server-key.pem"), &key).unwrap();
    for f in [&cert, &key] {
        Command::new("chown")
            .arg("postgres")
            .arg(f)
            .status()
            .unwrap();
        Command::new("chmod").arg("600").arg(f).status().unwrap();
    }
    Command::new("chmod")
        .arg("755")
        .arg(ssl.path())
        .status()
        .unwrap();
    pg.psql("postgres", "ALTER SYSTEM SET ssl = on");
    pg.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
    );
    pg.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let url = |mode: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/tls?sslmode={mode}",
            pg.port
        )
    };
    let node = |mode: &str, ca: &Path| {
        let mut s = Setup::new(None);
        s.store = Some(format!(
            "[store]\nbackend = \"postgres\"\npostgres_url = \"{}\"\npostgres_ca = \"{}\"\n",
            url(mode),
            ca.display()
        ));
        s
    };
    let good = Gateway::start(&node("verify-full", &root().join("certs/ca.pem")));
    register(&mut good.api(Some("client1")));
    // The wrong trust anchor: never a connection, never a fallback to plain.
    let bad = Gateway::start_listening(&node("verify-full", &root().join("certs/other-ca.pem")));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(healthz(&bad), 503);
    let r = bad
        .api(Some("client1"))
        .register(&registration_body())
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(bad.log_text().contains("database"), "{}", bad.log_tail());
}

#[test]
fn a_registration_token_is_found_by_index_never_by_scanning_every_client() {
    let cluster = Cluster::start();
    cluster.create_db("plan");
    let a = Gateway::start(&setup(&cluster, "plan"));
    register(&mut a.api(Some("client1")));
    // A registry that grew faster than its statistics (a new deployment filling up, an
    // import): 20 000 clients the planner has not analyzed.
    cluster.psql(
        "plan",
        "ALTER TABLE clients SET (autovacuum_enabled = false); \
         INSERT INTO clients (client_id, version, issued_at, metadata, rules, rat, rat_iat, \
                              rat_revoked) \
         SELECT 'c' || i, 1, 0, '{}', '\\x00', sha256(i::text::bytea), 0, false \
         FROM generate_series(1, 20000) i",
    );
    // The statement the store prepares, planned generically as a prepared statement is.
    let sql = certgate::store::postgres::reg_token_lookup();
    let plan = cluster.psql(
        "plan",
        &format!(
            "SET plan_cache_mode = force_generic_plan; \
             PREPARE p(bytea) AS {sql}; EXPLAIN EXECUTE p('\\x00');"
        ),
    );
    assert!(plan.contains("Index Scan"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}
