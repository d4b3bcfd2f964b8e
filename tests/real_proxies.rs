#![cfg(feature = "real-proxies")]
//! Real nginx and HAProxy in front of the real certgate binary, driven with `curl --cert`
//! (SPEC §1, §6a.10, §6a.14, §6a.22; docs/deployment.md).
//!
//! Each test runs certgate, the proxy and curl as child processes on loopback, in a temporary
//! directory. The proxies run the configurations shipped in `config/`, with only their ports
//! and file paths replaced, so those files are what is tested. certgate listens on port 0 and
//! the tests read its ports from its log (tests/listening); the proxy's configuration, which
//! needs certgate's real port as its upstream, is written after that. Only the proxy's own
//! listening port is picked in advance (it is in certgate's `issuer`, and neither proxy can
//! report a port it chose): if another process takes it first, the deployment starts again.
//!
//! Needs nginx, HAProxy and curl (`sudo apt-get install -y nginx haproxy curl` on Debian or
//! Ubuntu). Run with `cargo test --features real-proxies --test real_proxies`; a plain
//! `cargo test` leaves this target out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod listening;
mod upstream;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CERTGATE: &str = env!("CARGO_BIN_EXE_certgate");
/// The registration every test makes.
const REGISTRATION: &str = r#"{"grant_types":["client_credentials"],"scope":"api"}"#;
const UNTRUSTED_METRIC: &str = "certgate_proxy_header_untrusted_total";
const MALFORMED_METRIC: &str = "certgate_proxy_header_malformed_total";
/// The address tests connect from to play a peer outside `trusted_proxies`.
const UNTRUSTED_SOURCE: &str = "127.0.0.2";
/// Bound on each process start-up; generous for a loaded CI machine.
const STARTUP: Duration = Duration::from_secs(30);
/// Bound on each curl call.
const CURL_MAX_TIME: &str = "20";

// === nginx ===

#[test]
fn nginx_forwards_the_identity_a_direct_handshake_yields() {
    forwards_the_identity_a_direct_handshake_yields(Proxy::Nginx);
}

#[test]
fn nginx_without_a_client_certificate_forwards_no_identity() {
    without_a_client_certificate_forwards_no_identity(Proxy::Nginx);
}

#[test]
fn registration_through_nginx_binds_the_certificate_a_direct_handshake_presents() {
    registration_binds_the_certificate_a_direct_handshake_presents(Proxy::Nginx);
}

#[test]
fn a_client_sent_header_through_nginx_cannot_impersonate_another_certificate() {
    a_client_sent_header_cannot_impersonate_another_certificate(Proxy::Nginx);
}

#[test]
fn an_nginx_header_reaching_the_proxy_listener_from_an_untrusted_address_is_ignored() {
    a_header_from_an_untrusted_address_is_ignored(Proxy::Nginx);
}

#[test]
fn certgate_with_empty_trusted_proxies_believes_nothing_nginx_forwards() {
    empty_trusted_proxies_believes_nothing_forwarded(Proxy::Nginx);
}

#[test]
fn a_route_behind_nginx_admits_the_token_bound_to_the_certificate_nginx_forwards() {
    // A real upstream, served by a runtime of this test's own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(upstream::Upstream::start());
    let route = format!(
        "\n[[routes]]\npath_prefix = \"/api/\"\nupstream = \"{}\"\nrequired_scope = \"api\"\n",
        up.url()
    );
    let d = Deployment::start_with(Proxy::Nginx, |toml| format!("{toml}{route}"));
    // A tls_client_auth client, registered and issued a token through nginx: the token is
    // bound to the certificate nginx forwarded.
    let body = r#"{"grant_types":["client_credentials"],"scope":"api","token_endpoint_auth_method":"tls_client_auth","tls_client_auth_subject_dn":"CN=client1,O=certgate dev"}"#;
    let reg = Curl::new()
        .cert("client1")
        .post_json(&d.front("/register"), body);
    assert_eq!(reg.status, 201, "{}", reg.body);
    let id = reg.json()["client_id"].as_str().unwrap().to_owned();
    let mut c = Curl::new().cert("client1");
    c.args.extend([
        "--data-urlencode".into(),
        "grant_type=client_credentials".into(),
        "--data-urlencode".into(),
        format!("client_id={id}"),
    ]);
    let t = c.run(&d.front("/token"));
    assert_eq!(t.status, 200, "{}", t.body);
    let token = t.json()["access_token"].as_str().unwrap().to_owned();

    let r = Curl::new()
        .cert("client1")
        .bearer(&token)
        .get(&d.front("/api/orders?page=2"));
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.last();
    assert_eq!(seen.target, "/api/orders?page=2");
    assert_eq!(seen.header("x-client-id"), Some(id.as_str()));
    assert_eq!(
        seen.header("x-client-cert-thumbprint"),
        Some(thumbprint("client1").as_str())
    );
    assert_eq!(seen.header("x-token-scope"), Some("api"));
    // nginx's X-Forwarded-For (the client) followed by nginx's own address.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-ssl-client-cert"), None);
    assert_eq!(seen.header("authorization"), None);
    // Through nginx with another certificate: refused, and the upstream sees nothing.
    let before = up.count();
    let r = Curl::new()
        .cert("client2")
        .bearer(&token)
        .get(&d.front("/api/orders"));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = Curl::new().bearer(&token).get(&d.front("/api/orders"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(up.count(), before);
}

// === nginx on another host: TLS and a client certificate to certgate's proxy listener ===

#[test]
fn nginx_over_tls_forwards_the_identity_a_direct_handshake_yields() {
    forwards_the_identity_a_direct_handshake_yields(Proxy::NginxTls);
}

#[test]
fn nginx_over_tls_without_a_client_certificate_forwards_no_identity() {
    without_a_client_certificate_forwards_no_identity(Proxy::NginxTls);
}

#[test]
fn registration_through_nginx_over_tls_binds_the_certificate_a_direct_handshake_presents() {
    registration_binds_the_certificate_a_direct_handshake_presents(Proxy::NginxTls);
}

#[test]
fn a_client_sent_header_through_nginx_over_tls_cannot_impersonate_another_certificate() {
    a_client_sent_header_cannot_impersonate_another_certificate(Proxy::NginxTls);
}

/// On a TLS proxy listener with `trusted_proxy_subjects`, address and certificate must both
/// pass: the listed proxy certificate from another address, or another certificate (even one
/// the client CA issued) from the trusted address, forwards nothing; the proxy's own
/// certificate is never an identity.
#[test]
fn a_proxy_over_tls_is_believed_for_its_address_and_its_certificate_together() {
    let d = Deployment::start(Proxy::NginxTls);
    let claim = format!("X-SSL-Client-Cert: {}", Proxy::NginxTls.encode("client1"));

    // What nginx does, done by hand: the proxy's certificate from the trusted address.
    let r = Curl::new()
        .cert("proxy")
        .header(&claim)
        .get(&d.plain("/identity"));
    let got = identity(&r);
    assert_eq!(got["x5t#S256"], thumbprint("client1"), "{got}");
    assert_eq!(got["source"], "proxy");
    assert_eq!(d.metric(UNTRUSTED_METRIC), 0.0);

    let mut counted = 0.0;
    for (cert, source) in [
        (Some("proxy"), Some(UNTRUSTED_SOURCE)),
        (Some("client2"), None),
        (None, None),
        (Some("untrusted"), None),
    ] {
        let mut curl = Curl::new().header(&claim);
        if let Some(cert) = cert {
            curl = curl.cert(cert);
        }
        if let Some(source) = source {
            curl = curl.source_address(source);
        }
        let r = curl.get(&d.plain("/identity"));
        assert_eq!(identity(&r), Value::Null, "{cert:?} from {source:?}");
        counted += 1.0;
        assert_eq!(
            d.metric(UNTRUSTED_METRIC),
            counted,
            "{cert:?} from {source:?}"
        );
    }

    // The proxy's own certificate, with no forwarded one: no identity, no registration.
    let r = Curl::new().cert("proxy").get(&d.plain("/identity"));
    assert_eq!(identity(&r), Value::Null);
    let r = Curl::new()
        .cert("proxy")
        .post_json(&d.plain("/register"), REGISTRATION);
    assert_eq!(r.status, 401, "{}", r.body);
}

/// nginx presenting a certificate whose subject is not listed (here client2's, which the
/// client CA did issue) is not believed: through it nobody has a certificate, and certgate's
/// log says why.
#[test]
fn nginx_presenting_an_unlisted_certificate_is_not_believed() {
    let d = Deployment::start_edited(
        Proxy::NginxTls,
        |toml| toml,
        |conf| replace(&conf, "../certs/proxy", "../certs/client2"),
    );
    let r = Curl::new().cert("client1").get(&d.front("/identity"));
    assert_eq!(identity(&r), Value::Null);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 1.0);
    let r = Curl::new()
        .cert("client1")
        .post_json(&d.front("/register"), REGISTRATION);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        d.certgate
            .log()
            .contains("not in proxy.trusted_proxy_subjects"),
        "{}",
        d.certgate.log()
    );
}

// === HAProxy ===

#[test]
fn haproxy_forwards_the_identity_a_direct_handshake_yields() {
    forwards_the_identity_a_direct_handshake_yields(Proxy::Haproxy);
}

#[test]
fn haproxy_without_a_client_certificate_forwards_no_identity() {
    without_a_client_certificate_forwards_no_identity(Proxy::Haproxy);
}

#[test]
fn registration_through_haproxy_binds_the_certificate_a_direct_handshake_presents() {
    registration_binds_the_certificate_a_direct_handshake_presents(Proxy::Haproxy);
}

#[test]
fn a_client_sent_header_through_haproxy_cannot_impersonate_another_certificate() {
    a_client_sent_header_cannot_impersonate_another_certificate(Proxy::Haproxy);
}

#[test]
fn a_haproxy_header_reaching_the_proxy_listener_from_an_untrusted_address_is_ignored() {
    a_header_from_an_untrusted_address_is_ignored(Proxy::Haproxy);
}

#[test]
fn certgate_with_empty_trusted_proxies_believes_nothing_haproxy_forwards() {
    empty_trusted_proxies_believes_nothing_forwarded(Proxy::Haproxy);
}

// === the shipped certgate configurations ===

#[test]
fn shipped_proxy_configurations_pass_check_config() {
    for file in [
        "config/certgate-nginx.toml",
        "config/certgate-nginx-tls.toml",
        "config/certgate-haproxy.toml",
        "config/certgate-envoy.toml",
    ] {
        let out = Command::new(CERTGATE)
            .args(["check-config", "--config", file])
            .current_dir(ROOT)
            .output()
            .expect("run certgate check-config");
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// === the rules, for either proxy ===

/// A certificate forwarded by the proxy yields exactly the identity certgate computes from a
/// direct handshake with the same certificate, including certificates whose chain does not
/// verify: the proxy passes them on and certgate judges them.
fn forwards_the_identity_a_direct_handshake_yields(proxy: Proxy) {
    let d = Deployment::start(proxy);
    for (name, chain_verified) in [
        ("client1", true),
        ("selfsigned", false),
        ("untrusted", false),
    ] {
        let mut via_proxy = identity(&Curl::new().cert(name).get(&d.front("/identity")));
        let direct = identity(&Curl::new().cert(name).get(&d.direct("/identity")));
        assert_eq!(via_proxy["source"], "proxy", "{name}: {via_proxy}");
        assert_eq!(direct["source"], "tls", "{name}: {direct}");
        assert_eq!(
            via_proxy["x5t#S256"],
            thumbprint(name),
            "{name}: {via_proxy}"
        );
        assert_eq!(via_proxy["chain_verified"], chain_verified, "{name}");
        via_proxy["source"] = "tls".into();
        assert_eq!(via_proxy, direct, "{name}: same certificate, same identity");
    }
    assert_eq!(d.metric(MALFORMED_METRIC), 0.0);
}

/// Without a client certificate the proxy forwards nothing certgate believes (nginx sends no
/// header, HAProxy an empty one): no identity, no 400, and no registration by proxy.
fn without_a_client_certificate_forwards_no_identity(proxy: Proxy) {
    let d = Deployment::start(proxy);
    let r = Curl::new().get(&d.front("/identity"));
    assert_eq!(identity(&r), Value::Null);

    let r = Curl::new().post_json(&d.front("/register"), REGISTRATION);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(d.metric(MALFORMED_METRIC), 0.0);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 0.0);
}

/// A client registered through the proxy is bound to the thumbprint of its certificate as a
/// direct handshake presents it: with `require_same_certificate = true` (the shipped
/// configuration) it manages itself directly over TLS with that certificate, and through the
/// proxy, but never with another certificate or none.
fn registration_binds_the_certificate_a_direct_handshake_presents(proxy: Proxy) {
    let d = Deployment::start(proxy);
    let reg = Curl::new()
        .cert("client1")
        .post_json(&d.front("/register"), REGISTRATION);
    assert_eq!(reg.status, 201, "{}", reg.body);
    let reg = reg.json();
    let client_id = reg["client_id"].as_str().expect("client_id").to_owned();
    assert_eq!(
        reg["registration_client_uri"],
        format!("https://localhost:{}/register/{client_id}", d.front_port),
        "the issuer is the proxy's address"
    );
    let direct = d.direct(&format!("/register/{client_id}"));
    let via_proxy = d.front(&format!("/register/{client_id}"));
    let mut token = token_of(&reg);

    // Another certificate, directly: refused, and the token survives (SPEC §6a.3).
    let r = Curl::new().cert("client2").bearer(&token).get(&direct);
    assert_invalid_token(&r);

    // The registering certificate, directly: the binding is the handshake's thumbprint.
    let r = Curl::new().cert("client1").bearer(&token).get(&direct);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["client_id"], client_id.as_str());
    let rotated = token_of(&r.json());
    assert_ne!(rotated, token, "GET rotates the token");
    let r = Curl::new().cert("client1").bearer(&token).get(&direct);
    assert_invalid_token(&r);
    token = rotated;

    // Through the proxy: the same certificate works, another one or none does not.
    let r = Curl::new().cert("client1").bearer(&token).get(&via_proxy);
    assert_eq!(r.status, 200, "{}", r.body);
    token = token_of(&r.json());
    for cert in [Some("client2"), Some("selfsigned"), None] {
        let mut curl = Curl::new().bearer(&token);
        if let Some(cert) = cert {
            curl = curl.cert(cert);
        }
        assert_invalid_token(&curl.get(&via_proxy));
    }

    let r = Curl::new().cert("client1").bearer(&token).get(&direct);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The proxy replaces whatever certificate header the client sends, so a client cannot claim
/// another certificate, with a certificate of its own or without one.
fn a_client_sent_header_cannot_impersonate_another_certificate(proxy: Proxy) {
    let d = Deployment::start(proxy);
    let forged = |name: &str| format!("{}: {}", proxy.header(), proxy.encode(name));
    let spellings = [
        forged("client2"),
        format!(
            "{}: {}",
            proxy.header().to_ascii_lowercase(),
            proxy.encode("client2")
        ),
        format!("{}: not a certificate", proxy.header()),
    ];
    for header in &spellings {
        let r = Curl::new()
            .cert("client1")
            .header(header)
            .get(&d.front("/identity"));
        let got = identity(&r);
        assert_eq!(got["x5t#S256"], thumbprint("client1"), "{header}: {got}");
        assert_eq!(got["source"], "proxy");

        let r = Curl::new().header(header).get(&d.front("/identity"));
        assert_eq!(identity(&r), Value::Null, "{header}");
    }

    // Registering "as client1" without holding its key.
    let r = Curl::new()
        .header(&forged("client1"))
        .post_json(&d.front("/register"), REGISTRATION);
    assert_eq!(r.status, 401, "{}", r.body);

    // Managing client1's registration with its token, client2's certificate and a header
    // claiming client1's.
    let reg = Curl::new()
        .cert("client1")
        .post_json(&d.front("/register"), REGISTRATION);
    assert_eq!(reg.status, 201, "{}", reg.body);
    let reg = reg.json();
    let path = format!(
        "/register/{}",
        reg["client_id"].as_str().expect("client_id")
    );
    let token = token_of(&reg);
    let r = Curl::new()
        .cert("client2")
        .header(&forged("client1"))
        .bearer(&token)
        .get(&d.front(&path));
    assert_invalid_token(&r);
    let r = Curl::new()
        .cert("client1")
        .bearer(&token)
        .get(&d.direct(&path));
    assert_eq!(r.status, 200, "the token survived the attempt: {}", r.body);

    // The forged values never reached certgate: nothing was malformed.
    assert_eq!(d.metric(MALFORMED_METRIC), 0.0);
}

/// certgate's proxy listener believes the header only from `trusted_proxies`: the same
/// request from another address gets no identity, cannot register by proxy, and is counted.
/// From the trusted address it is believed, whoever sent it: trust is in an address.
fn a_header_from_an_untrusted_address_is_ignored(proxy: Proxy) {
    let d = Deployment::start(proxy);
    let claim = format!("{}: {}", proxy.header(), proxy.encode("client1"));

    let r = Curl::new()
        .source_address(UNTRUSTED_SOURCE)
        .header(&claim)
        .get(&d.plain("/identity"));
    assert_eq!(identity(&r), Value::Null);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 1.0);

    let r = Curl::new()
        .source_address(UNTRUSTED_SOURCE)
        .header(&claim)
        .post_json(&d.plain("/register"), REGISTRATION);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 2.0);

    // An empty header claims nothing and is not counted (SPEC §6a.22).
    let r = Curl::new()
        .source_address(UNTRUSTED_SOURCE)
        .header(&format!("{};", proxy.header()))
        .get(&d.plain("/identity"));
    assert_eq!(identity(&r), Value::Null);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 2.0);

    let r = Curl::new().header(&claim).get(&d.plain("/identity"));
    let got = identity(&r);
    assert_eq!(got["x5t#S256"], thumbprint("client1"), "{got}");
    assert_eq!(got["source"], "proxy");
    assert_eq!(d.metric(UNTRUSTED_METRIC), 2.0);
}

/// With `trusted_proxies = []` certgate trusts no proxy, the real one included: what it
/// forwards is ignored and counted, while direct mutual TLS keeps working.
fn empty_trusted_proxies_believes_nothing_forwarded(proxy: Proxy) {
    let d = Deployment::start_with(proxy, |toml| {
        replace(
            &toml,
            r#"trusted_proxies = ["127.0.0.1/32"]"#,
            "trusted_proxies = []",
        )
    });

    // No client certificate: nothing claimed (HAProxy's empty header included), nothing counted.
    let r = Curl::new().get(&d.front("/identity"));
    assert_eq!(identity(&r), Value::Null);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 0.0);

    let r = Curl::new().cert("client1").get(&d.front("/identity"));
    assert_eq!(identity(&r), Value::Null);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 1.0);

    let r = Curl::new()
        .cert("client1")
        .post_json(&d.front("/register"), REGISTRATION);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(d.metric(UNTRUSTED_METRIC), 2.0);

    let r = Curl::new().cert("client1").get(&d.direct("/identity"));
    assert_eq!(identity(&r)["x5t#S256"], thumbprint("client1"));
    let r = Curl::new()
        .cert("client1")
        .post_json(&d.direct("/register"), REGISTRATION);
    assert_eq!(r.status, 201, "{}", r.body);
}

// === the proxies ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Nginx,
    /// nginx on "another host": HTTPS to certgate's proxy listener, with its own certificate.
    NginxTls,
    Haproxy,
}

/// nginx `$ssl_client_escaped_cert`: everything but the RFC 3986 unreserved set is escaped.
const NGINX_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Proxy {
    fn program(self) -> &'static str {
        match self {
            Self::Nginx | Self::NginxTls => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    /// The shipped certgate configuration for this proxy.
    fn certgate_config(self) -> &'static str {
        match self {
            Self::Nginx => "config/certgate-nginx.toml",
            Self::NginxTls => "config/certgate-nginx-tls.toml",
            Self::Haproxy => "config/certgate-haproxy.toml",
        }
    }

    /// The address the shipped configurations give the proxy's TLS listener.
    fn shipped_front(self) -> &'static str {
        match self {
            Self::Nginx => "127.0.0.1:8444",
            Self::NginxTls => "127.0.0.1:8448",
            Self::Haproxy => "127.0.0.1:8445",
        }
    }

    /// The certificate header this proxy sets.
    fn header(self) -> &'static str {
        match self {
            Self::Nginx | Self::NginxTls => "X-SSL-Client-Cert",
            Self::Haproxy => "X-SSL-Client-DER",
        }
    }

    /// A dev PKI certificate encoded as this proxy encodes it in `header()`.
    fn encode(self, name: &str) -> String {
        match self {
            Self::Nginx | Self::NginxTls => {
                utf8_percent_encode(&pem_text(name), NGINX_ESCAPED).to_string()
            }
            Self::Haproxy => STANDARD.encode(der(name)),
        }
    }

    /// Writes this proxy's configuration (the shipped one, ports and paths replaced) into
    /// `dir` and starts it in the foreground.
    fn spawn(
        self,
        dir: &Path,
        front: u16,
        upstream: u16,
        edit: &dyn Fn(String) -> String,
    ) -> Running {
        let program = find_program(self.program());
        let shipped = edit(read(&format!("config/{}", self.shipped_file())));
        let text = replace(
            &shipped,
            self.shipped_front(),
            &format!("127.0.0.1:{front}"),
        );
        let text = replace(&text, "127.0.0.1:8080", &format!("127.0.0.1:{upstream}"));
        let log = dir.join(format!("{}.log", self.program()));
        match self {
            Self::Nginx | Self::NginxTls => {
                // Certificates are relative to the configuration file's directory.
                let text = replace(&text, "../certs/", &format!("{ROOT}/certs/"));
                let conf = dir.join("nginx.conf");
                write(&conf, &text);
                let mut cmd = Command::new(program);
                cmd.arg("-p")
                    .arg(dir)
                    .args(["-e", "stderr", "-c"])
                    .arg(&conf);
                Running::spawn("nginx", cmd, log)
            }
            Self::Haproxy => {
                // HAProxy wants the chain and its key in one file.
                let pem = dir.join("haproxy.pem");
                let combined = read("certs/server.pem") + &read("certs/server-key.pem");
                write(&pem, &combined);
                let text = replace(&text, "/tmp/certgate-haproxy.pem", &pem.to_string_lossy());
                let cfg = dir.join("haproxy.cfg");
                write(&cfg, &text);
                let mut cmd = Command::new(program);
                // Relative paths (ca-file) are relative to the repository root, as documented.
                cmd.arg("-db").arg("-f").arg(&cfg).current_dir(ROOT);
                Running::spawn("haproxy", cmd, log)
            }
        }
    }

    fn shipped_file(self) -> &'static str {
        match self {
            Self::Nginx => "nginx.conf",
            Self::NginxTls => "nginx-tls.conf",
            Self::Haproxy => "haproxy.cfg",
        }
    }
}

// === a running deployment ===

/// certgate and a proxy in front of it, on loopback.
struct Deployment {
    /// The proxy's TLS listener.
    front_port: u16,
    /// certgate's `server.tls_listen`.
    tls_port: u16,
    /// certgate's `server.proxy_listen` (the proxy's upstream).
    plain_port: u16,
    /// certgate's `server.admin_listen`.
    admin_port: u16,
    /// What certgate's proxy listener speaks.
    plain_scheme: &'static str,
    // Processes before the directory: they stop before their files go.
    proxy: Running,
    certgate: Running,
    _dir: tempfile::TempDir,
}

/// Why a start-up attempt failed.
enum StartError {
    /// The proxy's port, picked as free, was taken before the proxy bound it: try another.
    PortTaken(String),
    Failed(String),
}

impl Deployment {
    /// certgate with the proxy's shipped configuration, behind that proxy.
    fn start(proxy: Proxy) -> Self {
        Self::start_with(proxy, |toml| toml)
    }

    /// Like `start`, with `edit` applied to certgate's configuration text.
    fn start_with(proxy: Proxy, edit: impl Fn(String) -> String) -> Self {
        Self::start_edited(proxy, edit, |text| text)
    }

    /// Like `start_with`, with `edit_proxy` applied to the proxy's shipped configuration too.
    fn start_edited(
        proxy: Proxy,
        edit: impl Fn(String) -> String,
        edit_proxy: impl Fn(String) -> String,
    ) -> Self {
        find_program(proxy.program());
        find_program("curl");
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start(proxy, &edit, &edit_proxy) {
                Ok(d) => return d,
                Err(StartError::PortTaken(_)) if attempt < ATTEMPTS => continue,
                Err(StartError::PortTaken(log) | StartError::Failed(log)) => {
                    panic!("cannot start certgate behind {}:\n{log}", proxy.program())
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(
        proxy: Proxy,
        edit: &impl Fn(String) -> String,
        edit_proxy: &impl Fn(String) -> String,
    ) -> Result<Self, StartError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        // nginx workers drop root privileges and must still reach their temporary files.
        set_mode(dir.path(), 0o755);
        let front_port = free_port();

        // certgate's own listeners on port 0: their ports come from its log.
        let shipped = read(proxy.certgate_config());
        let toml = replace(
            &shipped,
            &format!("https://localhost:{}", port_of(proxy.shipped_front())),
            &format!("https://localhost:{front_port}"),
        );
        let toml = replace(&toml, "127.0.0.1:8443", "127.0.0.1:0");
        let toml = replace(&toml, "127.0.0.1:8080", "127.0.0.1:0");
        let toml = replace(&toml, "127.0.0.1:9090", "127.0.0.1:0");
        let config = dir.path().join("certgate.toml");
        write(&config, &edit(toml));

        let mut cmd = Command::new(CERTGATE);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(ROOT)
            .env("RUST_LOG", "info");
        let mut certgate = Running::spawn("certgate", cmd, dir.path().join("certgate.log"));
        let bound = certgate.listening()?;
        let (tls_port, plain_port, admin_port) =
            (bound.tls_port(), bound.proxy_port(), bound.admin_port());
        certgate.wait_until("certgate", || admin_healthz(admin_port))?;

        let mut running = proxy.spawn(dir.path(), front_port, plain_port, edit_proxy);
        running.wait_until(proxy.program(), || {
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, front_port)),
                Duration::from_secs(1),
            )
            .is_ok()
        })?;
        let d = Self {
            front_port,
            tls_port,
            plain_port,
            admin_port,
            plain_scheme: if proxy == Proxy::NginxTls {
                "https"
            } else {
                "http"
            },
            proxy: running,
            certgate,
            _dir: dir,
        };
        // End to end: the proxy reaches certgate.
        let r = Curl::new().get(&d.front("/healthz"));
        if r.status != 200 {
            return Err(StartError::Failed(format!(
                "GET /healthz through {}: {} {}\n{}",
                proxy.program(),
                r.status,
                r.body,
                d.logs()
            )));
        }
        Ok(d)
    }

    /// A URL on the proxy's TLS listener.
    fn front(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.front_port)
    }

    /// A URL on certgate's own TLS listener (direct mutual TLS).
    fn direct(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }

    /// A URL on certgate's proxy listener, bypassing the proxy.
    fn plain(&self, path: &str) -> String {
        format!(
            "{}://127.0.0.1:{}{path}",
            self.plain_scheme, self.plain_port
        )
    }

    /// An unlabelled sample from certgate's admin `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let r = Curl::new().get(&format!("http://127.0.0.1:{}/metrics", self.admin_port));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("metric {name} not in /metrics:\n{}", r.body))
    }

    fn logs(&self) -> String {
        format!("{}{}", self.certgate.log(), self.proxy.log())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

// === child processes ===

/// A child process whose stdout and stderr go to a log file; stopped on drop.
struct Running {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    /// Polls `ready` until it holds, the process exits, or `STARTUP` passes.
    fn wait_until(&mut self, what: &str, ready: impl Fn() -> bool) -> Result<(), StartError> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.exited() {
                let log = format!("{what} exited with {status}\n{}", self.log());
                return Err(if log.contains("in use") {
                    StartError::PortTaken(log)
                } else {
                    StartError::Failed(log)
                });
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "{what} not ready after {STARTUP:?}\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// For certgate: waits (bounded) for its `certgate listening` line and returns the
    /// addresses it names.
    fn listening(&mut self) -> Result<listening::Bound, StartError> {
        match listening::wait(&mut self.child, &self.log, STARTUP) {
            listening::Listening::Bound(bound) => Ok(bound),
            listening::Listening::Exited(status) => Err(StartError::Failed(format!(
                "{} exited with {status} before listening\n{}",
                self.name,
                self.log()
            ))),
            listening::Listening::TimedOut => Err(StartError::Failed(format!(
                "{} logged no \"certgate listening\" line within {STARTUP:?}\n{}",
                self.name,
                self.log()
            ))),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} log ---\n{text}\n", self.name)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SIGTERM first: nginx's master stops its workers only when asked (SIGKILL would
        // orphan them, still listening).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `name` on `PATH` or in the sbin directories Debian installs nginx and HAProxy to
/// (not on an ordinary user's `PATH`); panics with how to install it.
fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed, and the real-proxy tests run it.\n\
                 Install nginx, HAProxy and curl with `sudo apt-get install -y nginx haproxy curl`\n\
                 or `scripts/install-test-deps.sh`. To run the other tests without them, use plain\n\
                 `cargo test`: this target needs `--features real-proxies`."
            )
        })
}

// === curl ===

/// One curl invocation, trusting the dev CA, from the repository root.
struct Curl {
    args: Vec<String>,
}

/// A response: status and body.
struct Call {
    status: u16,
    body: String,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

impl Curl {
    fn new() -> Self {
        let args = [
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            CURL_MAX_TIME,
            "--cacert",
            "certs/ca.pem",
            "-w",
            "\n%{http_code}",
        ];
        Self {
            args: args.map(str::to_owned).to_vec(),
        }
    }

    /// Presents the dev PKI certificate `name` (`certs/{name}.pem` and its key).
    fn cert(mut self, name: &str) -> Self {
        self.args.extend([
            "--cert".into(),
            format!("certs/{name}.pem"),
            "--key".into(),
            format!("certs/{name}-key.pem"),
        ]);
        self
    }

    /// Adds a header line (`Name: value`; `Name;` sends it empty).
    fn header(mut self, line: &str) -> Self {
        self.args.extend(["-H".into(), line.into()]);
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header(&format!("Authorization: Bearer {token}"))
    }

    /// Connects from `ip` (any address in 127.0.0.0/8 works on Linux loopback).
    fn source_address(mut self, ip: &str) -> Self {
        self.args.extend(["--interface".into(), ip.into()]);
        self
    }

    fn get(self, url: &str) -> Call {
        self.run(url)
    }

    fn post_json(self, url: &str, body: &str) -> Call {
        let mut c = self.header("Content-Type: application/json");
        c.args.extend(["--data-raw".into(), body.into()]);
        c.run(url)
    }

    fn run(self, url: &str) -> Call {
        let out = Command::new(find_program("curl"))
            .args(&self.args)
            .arg(url)
            .current_dir(ROOT)
            .output()
            .expect("run curl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {:?} {url} failed: {}{stdout}",
            self.args,
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, status) = stdout.rsplit_once('\n').expect("curl -w status line");
        Call {
            status: status.trim().parse().expect("HTTP status"),
            body: body.to_owned(),
        }
    }
}

// === helpers ===

/// The `certificate` member of a 200 `GET /identity` answer.
fn identity(r: &Call) -> Value {
    assert_eq!(r.status, 200, "GET /identity: {}", r.body);
    r.json()["certificate"].clone()
}

fn token_of(registration: &Value) -> String {
    registration["registration_access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no registration_access_token in {registration}"))
        .to_owned()
}

fn assert_invalid_token(r: &Call) {
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_token", "{}", r.body);
}

/// `x5t#S256` of a dev PKI certificate, computed here rather than by certgate.
fn thumbprint(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der(name)))
}

fn der(name: &str) -> Vec<u8> {
    let path = Path::new(ROOT).join(format!("certs/{name}.pem"));
    CertificateDer::from_pem_file(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_vec()
}

fn pem_text(name: &str) -> String {
    read(&format!("certs/{name}.pem"))
}

/// A file of the repository, as text.
fn read(relative: &str) -> String {
    let path = Path::new(ROOT).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Replaces every `from` in `text`; panics if there is none, so a shipped file that drifts
/// from what the tests substitute fails loudly instead of testing something else.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in:\n{text}");
    text.replace(from, to)
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(_, port)| port)
}

/// A port that was free a moment ago, for the proxy's listener (the caller retries if it is
/// taken before the proxy binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether certgate's admin listener answers `GET /healthz` with 200.
fn admin_healthz(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
