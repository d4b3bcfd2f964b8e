//! RFC 8414 authorization server metadata, rendered once at start-up.

use crate::config::Config;
use crate::metadata::AuthMethod;

/// The `/.well-known/oauth-authorization-server` document.
pub fn document(config: &Config) -> Vec<u8> {
    let issuer = config.issuer_base();
    let mtls = config.mtls_issuer().trim_end_matches('/');
    let mut scopes: Vec<&str> = config
        .clients
        .iter()
        .flat_map(|c| c.scope.split(' '))
        .chain(
            config
                .registration
                .allowed_scopes
                .iter()
                .map(String::as_str),
        )
        .filter(|s| !s.is_empty())
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    let doc = serde_json::json!({
        "issuer": config.server.issuer,
        "registration_endpoint": format!("{issuer}/register"),
        "token_endpoint": format!("{issuer}/token"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "token_endpoint_auth_methods_supported": &AuthMethod::ALL[..4],
        "introspection_endpoint_auth_methods_supported": &AuthMethod::ALL[..4],
        "revocation_endpoint_auth_methods_supported": &AuthMethod::ALL[..4],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["code"],
        "scopes_supported": scopes,
        "tls_client_certificate_bound_access_tokens": true,
        "mtls_endpoint_aliases": {
            "token_endpoint": format!("{mtls}/token"),
            "registration_endpoint": format!("{mtls}/register"),
            "introspection_endpoint": format!("{mtls}/introspect"),
            "revocation_endpoint": format!("{mtls}/revoke"),
        },
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}
