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
        "token_endpoint_auth_methods_supported": AuthMethod::ALL,
        "grant_types_supported": config.registration.allowed_grant_types,
        "response_types_supported": ["code"],
        "tls_client_certificate_bound_access_tokens": true,
        "mtls_endpoint_aliases": {
            "registration_endpoint": format!("{mtls}/register"),
        },
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}
