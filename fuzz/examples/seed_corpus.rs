//! Writes the seed corpora for the fuzz targets from the repository's fixtures:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus -- <repo> <out-dir>`
//! creates `<out-dir>/<target>/seed-*` (scripts/fuzz.sh does this before fuzzing).
//!
//! Seeds are generated, not committed: they follow the dev certificates in `certs/`, the
//! shipped `config/*.toml` and the current record encoding.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use certgate::metadata::{ClientMetadata, Policy};
use certgate::model::{AccessToken, ClientRecord, RegToken};
use certgate::store::{codec, frame, Change};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// nginx `$ssl_client_escaped_cert`: all but RFC 3986 unreserved characters escaped.
const NGINX: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// AWS ALB leaves `+`, `=` and `/` alone.
const ALB: &AsciiSet = &NGINX.remove(b'+').remove(b'=').remove(b'/');

/// Proxy-target selector bytes: `format % 6` (order of the target's FORMATS table).
const PEM_URLENCODED: u8 = 0;
const PEM: u8 = 1;
const XFCC: u8 = 2;
const DER_BASE64: u8 = 3;
const TRAEFIK: u8 = 4;
const RFC9440: u8 = 5;
/// Added to a selector: the same format under a custom header name.
const CUSTOM_NAME: u8 = 6;

struct Corpus {
    dir: PathBuf,
    n: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Self {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        Self { dir, n: 0 }
    }

    fn add(&mut self, bytes: impl AsRef<[u8]>) {
        fs::write(self.dir.join(format!("seed-{:03}", self.n)), bytes).unwrap();
        self.n += 1;
    }
}

/// The first certificate of a PEM file, as DER.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(body).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, out] = &args[..] else {
        eprintln!("usage: seed_corpus <repo> <out-dir>");
        std::process::exit(2);
    };
    let (repo, out) = (Path::new(repo), Path::new(out));

    let mut pems = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(repo.join("certs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    entries.sort();
    for path in &entries {
        let text = fs::read_to_string(path).unwrap();
        if text.contains("BEGIN CERTIFICATE") {
            pems.push(text);
        }
    }
    let key = fs::read_to_string(repo.join("certs/client1-key.pem")).unwrap();
    let client = fs::read_to_string(repo.join("certs/client1.pem")).unwrap();
    let ca = fs::read_to_string(repo.join("certs/ca.pem")).unwrap();

    proxy_header(out, &pems, &client, &ca, &key);
    let subjects = subjects(&pems);
    dn(out, &subjects);
    metadata(out, &client, &subjects);
    codec(out);
    config(out, repo);
}

fn proxy_header(out: &Path, pems: &[String], client: &str, ca: &str, key: &str) {
    let mut c = Corpus::new(out, "proxy_header");
    let mut add = |selector: u8, lines: &[&str]| {
        let mut seed = vec![selector];
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                // Lines starting with ':' after the first go to client-cert-chain.
                seed.push(if selector % 6 == RFC9440 {
                    b'\r'
                } else {
                    b'\n'
                });
            }
            seed.extend_from_slice(line.as_bytes());
        }
        c.add(seed);
    };
    let b64 = |pem: &str| STANDARD.encode(pem_der(pem));
    let envoy = |pem: &str| utf8_percent_encode(pem, NGINX).to_string();
    let hash = |pem: &str| -> String {
        Sha256::digest(pem_der(pem))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };

    for pem in pems {
        add(
            PEM_URLENCODED,
            &[&utf8_percent_encode(pem, NGINX).to_string()],
        );
        add(PEM, &[&pem.replace('\n', " ")]);
        add(DER_BASE64, &[&b64(pem)]);
        add(TRAEFIK, &[&b64(pem)]);
        add(RFC9440, &[&format!(":{}:", b64(pem))]);
        add(
            XFCC,
            &[&format!(
                "By=spiffe://cluster.local/ns/edge/sa/certgate;Hash={};Cert=\"{}\";Subject=\"CN=x\";URI=spiffe://a",
                hash(pem),
                envoy(pem)
            )],
        );
    }
    let both = format!("{client}{ca}");
    add(
        PEM_URLENCODED,
        &[&utf8_percent_encode(client, ALB).to_string()],
    );
    add(
        PEM_URLENCODED,
        &[&utf8_percent_encode(&both, NGINX).to_string()],
    );
    add(
        PEM_URLENCODED,
        &[&utf8_percent_encode(key, NGINX).to_string()],
    );
    add(PEM, &[&both.replace('\n', "\t")]);
    add(PEM, &[&key.replace('\n', " ")]);
    add(PEM_URLENCODED + CUSTOM_NAME, &[&envoy(client)]);
    add(DER_BASE64 + CUSTOM_NAME, &[&b64(client), &b64(client)]);
    let traefik = format!("{},{}", b64(client), b64(ca));
    add(TRAEFIK, &[&traefik]);
    add(
        TRAEFIK,
        &[&utf8_percent_encode(&traefik, NON_ALPHANUMERIC).to_string()],
    );
    add(
        XFCC,
        &[
            &format!("By=x;Cert=\"{}\";Subject=\"a=\\\"b\\\\,c;d\"", envoy(ca)),
            &format!(
                "Hash={};Cert={};Chain={}",
                hash(client),
                envoy(client),
                envoy(&both)
            ),
        ],
    );
    add(XFCC + CUSTOM_NAME, &[&format!("Cert={}", envoy(client))]);
    let leaf = format!(":{}:", b64(client));
    let chain = format!(":{}:", b64(ca));
    add(RFC9440, &[&leaf, &chain, &chain]);
    add(RFC9440, &[&leaf, &format!("{chain}, {chain}")]);
    add(RFC9440 + CUSTOM_NAME, &[&leaf, &chain]);
    add(RFC9440 + 2 * CUSTOM_NAME, &[&leaf]);
    for s in ["", " ", "-", "%", ":AA==:", "(:AA==:)", "Cert=\"", "MII"] {
        for selector in 0..6 {
            add(selector, &[s]);
        }
    }
}

/// Subjects of the dev certificates as certgate renders them (`dn::rfc4514`).
fn subjects(pems: &[String]) -> Vec<String> {
    pems.iter()
        .map(|pem| {
            let der = pem_der(pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            certgate::dn::rfc4514(cert.subject())
        })
        .collect()
}

fn dn(out: &Path, subjects: &[String]) {
    let mut c = Corpus::new(out, "dn");
    let mut names: Vec<String> = subjects.to_vec();
    names.extend(
        [
            "cn=Admin, o=Certgate  Dev",
            "2.5.4.3=admin,2.5.4.10=certgate dev",
            "OID.2.5.4.3=admin,organizationName=certgate dev",
            r"CN=a\,b,O=x",
            r"CN=a\2cb,O=x",
            "CN=a+UID=1,O=x",
            r"CN=a\+UID=1",
            "CN=#0403616263",
            r"CN=\#x\ ,O=\ y",
            r#"CN=\"q\"\\\;x"#,
            "emailAddress=a@b.example,DC=example,DC=com",
            "E=A@B.example,ST=x,S=y,L=z,C=DE,STREET=1 Main St",
            "1.2.3.4=#04024869",
            "CN=caf\u{e9},O=\u{130}stanbul",
            "CN=",
            "just text",
        ]
        .map(String::from),
    );
    for a in &names {
        c.add(a);
    }
    for pair in names.windows(2) {
        let mut seed = pair[0].as_bytes().to_vec();
        seed.push(0xff);
        seed.extend_from_slice(pair[1].as_bytes());
        c.add(seed);
    }
}

fn metadata(out: &Path, client: &str, subjects: &[String]) {
    let mut c = Corpus::new(out, "metadata");
    let x5c = STANDARD.encode(pem_der(client));
    let bodies = [
        json!({}),
        json!({"grant_types": ["client_credentials"], "scope": "read write read"}),
        json!({"redirect_uris": ["https://a.example/cb", "com.example.app:/cb"],
               "client_name": "A", "client_name#fr": "Un", "logo_uri": "https://a.example/l.png",
               "logo_uri#fr": "https://a.example/fr.png", "contacts": ["a@b.example"],
               "x_custom": {"a": [1, 2.5, null]}}),
        json!({"token_endpoint_auth_method": "tls_client_auth",
               "tls_client_auth_subject_dn": subjects[0],
               "tls_client_certificate_bound_access_tokens": true,
               "grant_types": ["client_credentials"]}),
        json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_dns": "a.example"}),
        json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_uri": "spiffe://a/b"}),
        json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_ip": "::1"}),
        json!({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_email": "a@B.example"}),
        json!({"token_endpoint_auth_method": "self_signed_tls_client_auth",
               "jwks": {"keys": [{"kty": "RSA", "x5c": [x5c]}, {"kty": "EC", "x5c": [x5c]}]}}),
        json!({"token_endpoint_auth_method": "self_signed_tls_client_auth",
               "jwks_uri": "https://a.example/jwks"}),
        json!({"token_endpoint_auth_method": "none", "response_types": ["code"],
               "grant_types": ["authorization_code", "refresh_token"],
               "software_id": "s", "software_version": "1", "tos_uri": "http://a.example/tos",
               "policy_uri": "https://a.example/p", "client_uri": "https://a.example"}),
        json!({"token_endpoint_auth_method": "client_secret_post", "scope": "dcrm"}),
        json!({"software_statement": "eyJ"}),
        json!({"client_id": "x", "client_secret": "y", "registration_access_token": "z"}),
    ];
    for body in &bodies {
        c.add(serde_json::to_vec(body).unwrap());
    }
    c.add(serde_json::to_vec_pretty(&bodies[3]).unwrap());
}

fn codec(out: &Path) {
    let mut c = Corpus::new(out, "codec");
    let policy = Policy {
        allowed_grant_types: vec!["client_credentials".into(), "authorization_code".into()],
        allowed_scopes: vec![],
        reserved_scopes: vec!["dcrm".into()],
    };
    let registered = |body: Value| {
        let Value::Object(map) = body else {
            unreachable!()
        };
        Arc::new(
            ClientMetadata::parse(map, &policy)
                .unwrap()
                .into_registered()
                .unwrap(),
        )
    };
    let record = |id: &str, metadata, secret: bool| ClientRecord {
        client_id: id.into(),
        version: 0,
        issued_at: 1_700_000_000,
        metadata,
        secret: secret.then_some([1; 32]),
        bound: (!secret).then_some([2; 32]),
        reg_token: RegToken {
            digest: [3; 32],
            issued_at: 1_700_000_001,
            revoked: false,
        },
        grace: None,
    };
    let client = |id: &str, metadata, secret: bool| Change::Client(Box::new(record(id, metadata, secret)));
    let changes = [
        client(
            "c1",
            registered(json!({"grant_types": ["client_credentials"], "scope": "a b"})),
            true,
        ),
        client(
            "c2",
            registered(json!({"token_endpoint_auth_method": "tls_client_auth",
                              "tls_client_auth_subject_dn": "CN=client1,O=certgate dev"})),
            false,
        ),
        client(
            "c3",
            registered(json!({"token_endpoint_auth_method": "tls_client_auth",
                              "tls_client_auth_san_ip": "10.0.0.1"})),
            false,
        ),
        client(
            "c4",
            registered(json!({"token_endpoint_auth_method": "self_signed_tls_client_auth",
                              "jwks_uri": "https://client.example/jwks"})),
            false,
        ),
        client(
            "c5",
            registered(json!({"token_endpoint_auth_method": "tls_client_auth",
                              "tls_client_auth_san_email": "a@b.example"})),
            false,
        ),
        Change::Delete { id: "c1".into() },
        Change::Token {
            digest: [4; 32],
            token: AccessToken {
                client_id: "c2".into(),
                scope: "a".into(),
                iat: 1,
                exp: 3601,
                cnf: Some([5; 32]),
                dynamic: true,
                uses_left: None,
            },
        },
        Change::Token {
            digest: [6; 32],
            token: AccessToken {
                client_id: "admin".into(),
                scope: "dcr".into(),
                iat: 1,
                exp: 3601,
                cnf: None,
                dynamic: false,
                uses_left: Some(1),
            },
        },
        Change::Revoke { digest: [4; 32] },
        Change::Register {
            client: Box::new(record(
                "c6",
                registered(json!({"grant_types": ["client_credentials"]})),
                true,
            )),
            initial: Some((
                [6; 32],
                AccessToken {
                    client_id: "admin".into(),
                    scope: "dcr".into(),
                    iat: 1,
                    exp: 3601,
                    cnf: None,
                    dynamic: false,
                    uses_left: Some(0),
                },
            )),
        },
        Change::Issue {
            digest: [7; 32],
            token: AccessToken {
                client_id: "c6".into(),
                scope: "a".into(),
                iat: 2,
                exp: 3602,
                cnf: None,
                dynamic: true,
                uses_left: None,
            },
            evicted: vec![[8; 32]],
        },
    ];

    // Bare records, one per seed.
    for change in &changes {
        let mut buf = Vec::new();
        codec::encode(change, &mut buf);
        c.add(buf);
    }
    let mut header = Vec::new();
    codec::encode_header(7, &mut header);
    c.add(&header);
    let mut trailer = Vec::new();
    codec::encode_trailer(changes.len() as u64, &mut trailer);
    c.add(&trailer);

    // A framed snapshot and a framed journal, as on disk.
    let mut snapshot = Vec::new();
    frame::encode_with(&mut snapshot, |o| codec::encode_header(7, o));
    for change in &changes {
        frame::encode_with(&mut snapshot, |o| codec::encode(change, o));
    }
    frame::encode_with(&mut snapshot, |o| {
        codec::encode_trailer(changes.len() as u64, o)
    });
    c.add(&snapshot);
    let mut journal = Vec::new();
    frame::encode_with(&mut journal, |o| codec::encode_journal_header(1, o));
    for change in &changes[5..] {
        frame::encode_with(&mut journal, |o| codec::encode(change, o));
    }
    c.add(&journal);
    // A torn tail and a zero-filled tail.
    c.add(&journal[..journal.len() - 5]);
    let mut zeros = journal.clone();
    zeros.extend_from_slice(&[0; 32]);
    c.add(zeros);
}

fn config(out: &Path, repo: &Path) {
    let mut c = Corpus::new(out, "config");
    let mut tomls: Vec<_> = fs::read_dir(repo.join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    tomls.sort();
    for path in tomls {
        c.add(fs::read(path).unwrap());
    }
    for snippet in [
        "",
        "[management]\nregistration_token_ttl = \"365d\"\nread_update_ttl = \"28d 12h 1m 1s 10ms\"\n",
        "[tokens]\naccess_token_ttl = \"1h\"\n[store]\nsnapshot_interval = \"5min\"\n",
        "[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nheader_format = \"rfc9440\"\nheader = \"\"\n",
        "[[clients]]\nclient_id = \"s\"\ntoken_endpoint_auth_method = \"client_secret_post\"\nclient_secret_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    ] {
        c.add(snippet);
    }
}
