//! Two certgate nodes on one PostgreSQL registry behind real HAProxy, with the shipped
//! `config/haproxy-nodes.cfg` (TLS passthrough, /healthz checks): a client registers and
//! rotates through the balancer and is served by both nodes; when one node dies, the other
//! carries on. Needs HAProxy and PostgreSQL: `cargo test --features real-proxies,postgres`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod durable;
mod listening;
mod pg;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable::{registration_body, root, Api, Gateway, Setup};
use pg::Cluster;

/// HAProxy in the foreground, killed on drop.
struct Haproxy(Child, tempfile::TempDir);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy_bin() -> &'static str {
    if std::path::Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

/// The shipped config with this test's addresses: its front port, and the nodes' TLS and
/// admin ports.
fn start_haproxy(front: u16, nodes: [&Gateway; 2]) -> Haproxy {
    let shipped = fs::read_to_string(root().join("config/haproxy-nodes.cfg")).unwrap();
    let cfg = shipped
        .replace("bind 127.0.0.1:8443", &format!("bind 127.0.0.1:{front}"))
        .replace(
            "server node1 127.0.0.1:18443 check port 19090",
            &format!(
                "server node1 127.0.0.1:{} check port {}",
                nodes[0].tls, nodes[0].admin
            ),
        )
        .replace(
            "server node2 127.0.0.1:28443 check port 29090",
            &format!(
                "server node2 127.0.0.1:{} check port {}",
                nodes[1].tls, nodes[1].admin
            ),
        );
    assert!(
        cfg.contains(&format!("{}", nodes[1].admin)),
        "the shipped config changed shape"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    fs::write(&path, cfg).unwrap();
    let child = Command::new(haproxy_bin())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .expect("haproxy is installed (scripts/install-test-deps.sh)");
    Haproxy(child, dir)
}

/// One request on a fresh connection (so the balancer picks a node each time).
fn fresh(front: u16, cert: Option<&'static str>) -> Api {
    Api {
        port: front,
        cert,
        conn: None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_nodes_behind_haproxy_share_one_registry_and_survive_one_node_dying() {
    let pg = Cluster::start();
    pg.create_db("balanced");
    let mut setup = Setup::new(None);
    setup.store = Some(format!(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"{}\"\n",
        pg.url("balanced")
    ));
    let mut a = Gateway::start(&setup);
    let b = Gateway::start(&setup);
    let front = free_port();
    let haproxy = start_haproxy(front, [&a, &b]);
    // Both nodes up (HAProxy checks every second; a node counts after two good checks).
    let deadline = Instant::now() + Duration::from_secs(15);
    let reg = loop {
        if let Ok(r) = fresh(front, Some("client1")).register(&registration_body()) {
            if r.status == 201 {
                break r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy never forwarded a registration"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(3));
    let id = reg.field("client_id");
    let mut token = reg.field("registration_access_token");
    // Rotations through the balancer, each on a new connection: round robin spreads them.
    for i in 0..8 {
        let r = fresh(front, Some("client1"))
            .manage("GET", &id, &token)
            .unwrap();
        assert_eq!(r.status, 200, "rotation {i}: {}", r.text());
        token = r.field("registration_access_token");
    }
    let path = format!("/register/{id}");
    for (node, g) in [("a", &a), ("b", &b)] {
        assert!(
            g.log_until(|l| l.contains(&path)).contains(&path),
            "node {node} served none of the rotations; HAProxy log:\n{}",
            fs::read_to_string(haproxy.1.path().join("log")).unwrap_or_default()
        );
    }
    // One node dies: the other carries on with the same registry.
    a.kill9();
    for i in 0..6 {
        let r = fresh(front, Some("client1")).manage("GET", &id, &token);
        let r = r.unwrap_or_else(|e| panic!("request {i} after the kill: {e}"));
        assert_eq!(r.status, 200, "rotation {i} after the kill: {}", r.text());
        token = r.field("registration_access_token");
    }
    drop(haproxy);
}
