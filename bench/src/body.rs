//! The request every workload sends, and the ceiling's answer to it.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// A typical registration of an mTLS client: `tls_client_auth` bound to client1's subject,
/// two redirect URIs, the usual human-readable fields.
pub fn registration_body() -> Map<String, Value> {
    let body = json!({
        "client_name": "Benchmark client",
        "redirect_uris": [
            "https://client.example.com/callback",
            "https://client.example.com/callback/alt"
        ],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": "CN=client1,O=certgate dev",
        "tls_client_certificate_bound_access_tokens": true,
        "scope": "openid profile api:read api:write",
        "contacts": ["ops@client.example.com"],
        "client_uri": "https://client.example.com",
        "software_id": "4NRB1-0XZABZI9E6-5SM3R",
        "software_version": "2.1.0"
    });
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What the ceiling answers: a registration response for `registration_body()` with
/// placeholder credentials, so it has the size of certgate's real answer.
pub fn ceiling_body() -> Bytes {
    let mut body = Map::new();
    body.insert("client_id".into(), json!("Wk9vQ2xpZW50SWRCZW5jaA"));
    body.insert("client_id_issued_at".into(), json!(1_767_225_600u64));
    body.insert(
        "registration_access_token".into(),
        json!("dG9rZW5kZ3NhZmRzYWZkc2FmZHNhZmRzYWZkc2FmZHNh"),
    );
    body.insert(
        "registration_access_token_expires_in".into(),
        json!(31_536_000u64),
    );
    body.insert(
        "registration_client_uri".into(),
        json!("https://localhost:8443/register/Wk9vQ2xpZW50SWRCZW5jaA"),
    );
    body.extend(registration_body());
    Bytes::from(Value::Object(body).to_string())
}

/// The ceiling's answer of the size of a `client_credentials` token response.
pub fn ceiling_token_body() -> Bytes {
    Bytes::from(
        json!({
            "access_token": "dG9rZW5kZ3NhZmRzYWZkc2FmZHNhZmRzYWZkc2FmZHNh",
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "api:read"
        })
        .to_string(),
    )
}

/// The ceiling's answer of the size of an introspection of an active, certificate-bound
/// token.
pub fn ceiling_introspect_body() -> Bytes {
    Bytes::from(
        json!({
            "active": true,
            "scope": "api:read",
            "client_id": "Wk9vQ2xpZW50SWRCZW5jaA",
            "token_type": "Bearer",
            "exp": 1_767_229_200u64,
            "iat": 1_767_225_600u64,
            "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}
        })
        .to_string(),
    )
}
