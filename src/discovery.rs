//! RFC 8414 authorization server metadata, rendered once at start-up.

use crate::config::Config;
use crate::metadata::AuthMethod;

/// The `/.well-known/oauth-authorization-server` document.
pub fn document(config: &Config) -> Vec<u8> {
    let issuer = config.issuer_base();
    let mtls = config.mtls_issuer().trim_end_matches('/');
    let doc = serde_json::json!({
        "issuer": config.server.issuer,
        "registration_endpoint": format!("{issuer}/register"),
        "token_endpoint": format!("{issuer}/token"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "token_endpoint_auth_methods_supported": &AuthMethod::ALL[..4],
        "introspection_endpoint_auth_methods_supported": &AuthMethod::ALL[..4],
        "revocation_endpoint_auth_methods_supported": &AuthMethod::ALL[..4],
        // Only what certgate itself serves: client_credentials at /token, and no
        // authorization endpoint, so no response type (SPEC §6a.24).
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "tls_client_certificate_bound_access_tokens": true,
        "mtls_endpoint_aliases": {
            "token_endpoint": format!("{mtls}/token"),
            "registration_endpoint": format!("{mtls}/register"),
            "introspection_endpoint": format!("{mtls}/introspect"),
            "revocation_endpoint": format!("{mtls}/revoke"),
        },
    });
    let mut doc = doc;
    // The scopes a registered client may obtain; omitted when any non-reserved one may be.
    if !config.registration.allowed_scopes.is_empty() {
        doc["scopes_supported"] = serde_json::json!(config.registration.allowed_scopes);
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}
