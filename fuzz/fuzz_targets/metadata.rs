//! RFC 7591 client metadata: any JSON object a client POSTs is either registered or refused
//! with a `MetadataError`, never a panic.

#![no_main]

use certgate::metadata::{AuthMethod, ClientMetadata, Policy, SubjectRule};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // As in config/certgate.toml.
    let policy = Policy {
        allowed_grant_types: vec![
            "client_credentials".into(),
            "authorization_code".into(),
            "refresh_token".into(),
        ],
        allowed_scopes: vec![],
        reserved_scopes: vec!["dcrm".into(), "dcr".into()],
    };
    let Ok(meta) = ClientMetadata::parse(body, &policy) else {
        return;
    };
    let auth = meta.token_endpoint_auth_method;
    let dn = meta.tls_client_auth_subject_dn.clone();
    let Ok(registered) = meta.into_registered() else {
        return;
    };

    // The stored JSON is an object that parses back.
    let json: Value = serde_json::from_str(&registered.json).expect("stored JSON parses");
    assert!(json.is_object());
    let rules = &registered.rules;
    assert_eq!(rules.auth, auth);
    // Reserved scopes never reach a registered client.
    assert!(rules.scope_tokens().all(|s| s != "dcrm" && s != "dcr"));
    // x5c thumbprints are sorted and unique.
    assert!(rules.x5c.windows(2).all(|w| w[0] < w[1]));
    // tls_client_auth always ends up with exactly one subject rule.
    if auth == AuthMethod::TlsClientAuth {
        assert!(rules.subject.is_some());
    }
    // The declared DN is stored as declared, and parses.
    if let (Some(dn), Some(SubjectRule::Dn(declared))) = (dn, &rules.subject) {
        assert_eq!(&*declared.text, dn.as_str());
        assert!(declared.dn().is_some());
    }
});
