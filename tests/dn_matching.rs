//! Exact subject DN matching (SPEC §5 "Subject DN matching"): certificates made here with
//! openssl, from the dev CA, carrying every attribute type and ASN.1 string type the
//! ecosystems use, matched against declared RFC 4514 strings at registration, at `/token`
//! (`tls_client_auth`) and for static clients.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::path::Path;
use std::process::Command;

use http::StatusCode;
use serde_json::json;

use common::*;

/// A certificate for `subject` (openssl `-subj` syntax, UTF-8), issued by the dev CA, with
/// openssl's `string_mask` (`default`: PrintableString, T61String or BMPString as the
/// characters need; `utf8only`: UTF8String). Returns the path prefix for the test client.
fn make_cert(dir: &Path, name: &str, subject: &str, mask: &str) -> String {
    let prefix = dir.join(name);
    let key = format!("{}-key.pem", prefix.display());
    let csr = format!("{}.csr", prefix.display());
    let cnf = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &cnf,
        format!("[req]\ndistinguished_name = dn\nstring_mask = {mask}\n[dn]\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &key,
    ]);
    run(&[
        "req",
        "-new",
        "-utf8",
        "-multivalue-rdn",
        "-key",
        &key,
        "-subj",
        subject,
        "-config",
        cnf.to_str().unwrap(),
        "-out",
        &csr,
    ]);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "certs/ca.pem",
        "-CAkey",
        "certs/ca-key.pem",
        "-set_serial",
        "1000",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        &format!("{}.pem", prefix.display()),
    ]);
    prefix.display().to_string()
}

/// Registers a tls_client_auth client declaring `dn` with certificate `cert`.
async fn register_dn(s: &Server, cert: &str, dn: &str) -> Resp {
    s.tls(Some(cert))
        .post_json(
            "/register",
            &[],
            &json!({"grant_types": ["client_credentials"], "scope": "accounts",
                    "token_endpoint_auth_method": "tls_client_auth",
                    "tls_client_auth_subject_dn": dn}),
        )
        .await
}

#[tokio::test]
async fn every_attribute_type_and_string_type_matches_as_declared() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start("").await;
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        // (subject, string_mask, the RFC 4514 string as certgate prints it, other spellings)
        (
            "/C=GB/O=Bank Ltd/organizationIdentifier=PSDGB-FCA-123456/CN=0015800001HQQrZAAX",
            "default",
            "CN=0015800001HQQrZAAX,organizationIdentifier=PSDGB-FCA-123456,O=Bank Ltd,C=GB",
            vec![
                "CN=0015800001hqqrzaax, 2.5.4.97=psdgb-fca-123456, O=BANK LTD, C=gb",
                "2.5.4.3=0015800001HQQrZAAX,OID.2.5.4.97=PSDGB-FCA-123456,2.5.4.10=Bank  Ltd,2.5.4.6=GB",
            ],
        ),
        (
            "/emailAddress=Ops@Bank.example/serialNumber=RSSN-77/CN=ops",
            "default",
            "CN=ops,serialNumber=RSSN-77,emailAddress=Ops@Bank.example",
            vec!["CN=OPS,SERIALNUMBER=rssn-77,E=ops@bank.example"],
        ),
        (
            "/DC=com/DC=example/UID=ann/GN=Ann/SN=Smith/title=CTO/street=1 Main St/L=Leeds/ST=West Yorkshire/OU=Treasury",
            "default",
            "OU=Treasury,ST=West Yorkshire,L=Leeds,STREET=1 Main St,title=CTO,SN=Smith,GN=Ann,UID=ann,DC=example,DC=com",
            vec!["ou=treasury,s=west yorkshire,localityName=leeds,streetAddress=1 main st,2.5.4.12=cto,surname=smith,givenName=ann,userId=ANN,domainComponent=example,dc=COM"],
        ),
        // TeletexString (Latin-1 characters) and BMPString (beyond Latin-1).
        (
            "/L=Zürich/O=東京 Bank/CN=Zoë",
            "default",
            "CN=Zoë,O=東京 Bank,L=Zürich",
            vec!["CN=ZOË,O=東京  BANK,L=ZÜRICH", r"CN=Zo\C3\AB,O=東京 Bank,L=Z\C3\BCrich"],
        ),
        // UTF8String throughout.
        (
            "/L=Zürich/O=東京 Bank/CN=Zoë",
            "utf8only",
            "CN=Zoë,O=東京 Bank,L=Zürich",
            vec!["cn=zoë,o=東京 bank,l=zürich"],
        ),
        // A multi-valued RDN matches in any order.
        (
            "/O=Bank/CN=Ann+UID=a1",
            "default",
            "CN=Ann+UID=a1,O=Bank",
            vec!["UID=a1+CN=ann,O=bank"],
        ),
    ];
    for (i, (subject, mask, printed, spellings)) in cases.iter().enumerate() {
        let cert = make_cert(dir.path(), &format!("c{i}"), subject, mask);
        // certgate prints the subject it sees in RFC 4514 form, every attribute by name.
        let seen = identity_of(&s.tls(Some(&cert)).get("/identity", &[]).await);
        assert_eq!(seen["subject"], *printed, "{subject} ({mask})");
        assert_eq!(seen["chain_verified"], true);
        for dn in std::iter::once(*printed).chain(spellings.iter().copied()) {
            let r = register_dn(&s, &cert, dn).await;
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "{subject} ({mask}) declared {dn:?}: {:?}",
                r.body
            );
            // ...and at /token the same certificate authenticates the client.
            let id = r.json()["client_id"].as_str().unwrap().to_owned();
            let t = s
                .tls(Some(&cert))
                .post_form(
                    "/token",
                    &[],
                    &[("grant_type", "client_credentials"), ("client_id", &id)],
                )
                .await;
            assert_eq!(t.status, StatusCode::OK, "{dn:?}: {:?}", t.body);
        }
        // One attribute different, one missing, one extra, or another order: no match.
        let wrong = format!("{printed},O=Extra");
        for dn in [wrong.as_str(), &printed.replacen('=', "=x", 1)] {
            let r = register_dn(&s, &cert, dn).await;
            assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_hex_value_compares_with_the_der_of_the_certificates_value() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start("").await;
    let cert = make_cert(dir.path(), "hex", "/O=Bank/CN=Ann", "default");
    // CN "Ann" as a PrintableString: 13 03 41 6e 6e.
    let r = register_dn(&s, &cert, "CN=#1303416e6e,O=Bank").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // The same text as a UTF8String (0c) is another encoding: no match.
    let r = register_dn(&s, &cert, "CN=#0c03416e6e,O=Bank").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    s.stop().await;
}

#[tokio::test]
async fn psd2_a_qwac_like_certificate_registers_and_gets_a_bound_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start("").await;
    let cert = make_cert(
        dir.path(),
        "qwac",
        "/C=DE/L=Berlin/O=Fintech GmbH/organizationIdentifier=PSDDE-BAFIN-123456/CN=api.fintech.example",
        "default",
    );
    let dn = "CN=api.fintech.example,organizationIdentifier=PSDDE-BAFIN-123456,O=Fintech GmbH,L=Berlin,C=DE";
    let r = register_dn(&s, &cert, dn).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let reg = r.json();
    // Stored (and answered) as declared.
    assert_eq!(reg["tls_client_auth_subject_dn"], dn);
    let id = reg["client_id"].as_str().unwrap();
    let t = s
        .tls(Some(&cert))
        .post_form(
            "/token",
            &[],
            &[("grant_type", "client_credentials"), ("client_id", id)],
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{:?}", t.body);
    let token = t.json()["access_token"].as_str().unwrap().to_owned();
    // Bound to the QWAC.
    let basic_caller = [("client_id", id), ("token", token.as_str())];
    let i = s
        .tls(Some(&cert))
        .post_form("/introspect", &[], &basic_caller)
        .await;
    let cnf = i.json()["cnf"]["x5t#S256"].as_str().unwrap().to_owned();
    let seen = identity_of(&s.tls(Some(&cert)).get("/identity", &[]).await);
    assert_eq!(cnf, seen["x5t#S256"]);
    // Another certificate of the same organisation but another CN does not authenticate.
    let other = make_cert(
        dir.path(),
        "qwac2",
        "/C=DE/L=Berlin/O=Fintech GmbH/organizationIdentifier=PSDDE-BAFIN-123456/CN=other.fintech.example",
        "default",
    );
    let t = s
        .tls(Some(&other))
        .post_form(
            "/token",
            &[],
            &[("grant_type", "client_credentials"), ("client_id", id)],
        )
        .await;
    assert_error(&t, StatusCode::UNAUTHORIZED, "invalid_client");
    s.stop().await;
}

#[tokio::test]
async fn a_static_client_with_an_organization_identifier_dn_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(
        dir.path(),
        "tpp",
        "/C=GB/O=TPP Ltd/organizationIdentifier=PSDGB-FCA-654321/CN=tpp",
        "utf8only",
    );
    let s = Server::start(
        "[[clients]]\nclient_id = \"tpp\"\ntoken_endpoint_auth_method = \"tls_client_auth\"\n\
         tls_client_auth_subject_dn = \"cn=TPP, 2.5.4.97=psdgb-fca-654321, o=tpp ltd, c=GB\"\n\
         scope = \"accounts\"\n",
    )
    .await;
    let t = s
        .tls(Some(&cert))
        .post_form(
            "/token",
            &[],
            &[("grant_type", "client_credentials"), ("client_id", "tpp")],
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{:?}", t.body);
    s.stop().await;
}
