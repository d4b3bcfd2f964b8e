//! Client authentication at `/token`, `/introspect` and `/revoke` (RFC 6749 §2.3,
//! RFC 8705 §2): `client_secret_basic`, `client_secret_post`, `tls_client_auth`,
//! `self_signed_tls_client_auth`. A client must use the method it registered.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Error, Registry, StaticClient};
use crate::cert_match;
use crate::config;
use crate::identity::ClientCertificate;
use crate::metadata::{AuthMethod, ClientMetadata, Policy, Registered, Rules};
use crate::secret;

/// The credentials a request carried, as the HTTP layer found them (borrowed from the
/// request: nothing is copied to authenticate).
#[derive(Default)]
pub struct ClientCredentials<'a> {
    /// From `Authorization: Basic` (already form-decoded).
    pub basic: Option<(&'a str, &'a str)>,
    /// `client_id` form parameter.
    pub client_id: Option<&'a str>,
    /// `client_secret` form parameter.
    pub client_secret: Option<&'a str>,
}

impl std::fmt::Debug for ClientCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("ClientCredentials")
            .field(
                "basic",
                &self.basic.as_ref().map(|(id, _)| (id, "<redacted>")),
            )
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A client that proved who it is.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Shared with the client's record (or the static client's entry).
    pub client_id: Arc<str>,
    pub is_static: bool,
    /// May introspect and revoke any token.
    pub introspect: bool,
    /// Its metadata, shared with its record: nothing is copied per request.
    pub metadata: Arc<Registered>,
    /// Authenticated with a certificate (so its tokens are bound to it).
    pub via_certificate: bool,
}

impl Authenticated {
    /// The rules the client registered (or the operator configured).
    pub fn rules(&self) -> &Rules {
        &self.metadata.rules
    }
}

/// Builds the in-registry form of a `[[clients]]` entry.
pub(super) fn static_client(c: &config::StaticClient) -> Result<StaticClient, String> {
    let mut m = Map::new();
    m.insert(
        "token_endpoint_auth_method".into(),
        Value::String(c.token_endpoint_auth_method.clone()),
    );
    m.insert(
        "grant_types".into(),
        serde_json::json!(["client_credentials"]),
    );
    for (k, v) in [
        ("tls_client_auth_subject_dn", &c.tls_client_auth_subject_dn),
        ("tls_client_auth_san_dns", &c.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", &c.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", &c.tls_client_auth_san_ip),
        ("tls_client_auth_san_email", &c.tls_client_auth_san_email),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v.clone()));
        }
    }
    if !c.scope.trim().is_empty() {
        m.insert("scope".into(), Value::String(c.scope.clone()));
    }
    // Static clients may hold the reserved scopes: that is what they are for.
    let policy = Policy {
        allowed_grant_types: vec!["client_credentials".into()],
        allowed_scopes: Vec::new(),
        reserved_scopes: Vec::new(),
    };
    let metadata = ClientMetadata::parse(m, &policy)
        .and_then(ClientMetadata::into_registered)
        .map_err(|e| e.to_string())?;
    let secret = match &c.client_secret_sha256 {
        Some(hex) => Some(secret::from_hex(hex).ok_or("client_secret_sha256: not 64 hex digits")?),
        None => None,
    };
    Ok(StaticClient {
        client_id: c.client_id.as_str().into(),
        metadata: Arc::new(metadata),
        secret,
        introspect: c.introspect,
    })
}

// === impl Registry ===

impl Registry {
    /// Authenticates the calling client (401 `invalid_client` on failure).
    pub async fn authenticate_client(
        &self,
        creds: &ClientCredentials<'_>,
        cert: Option<&ClientCertificate>,
    ) -> Result<Authenticated, Error> {
        if creds.basic.is_some() && creds.client_secret.is_some() {
            return Err(Error::InvalidRequest(
                "use exactly one client authentication method (RFC 6749 §2.3)".into(),
            ));
        }
        let client_id = match (creds.basic, creds.client_id) {
            (Some((id, _)), Some(form_id)) if id != form_id => {
                return Err(Error::InvalidRequest(
                    "client_id differs from the Basic credentials".into(),
                ))
            }
            (Some((id, _)), _) => id,
            (None, Some(id)) => id,
            (None, None) => {
                return Err(Error::InvalidClient(
                    "client authentication required".into(),
                ))
            }
        };
        let unknown = || Error::InvalidClient("client authentication failed".into());
        let (client_id, metadata, secret_digest, is_static, introspect) =
            match self.statics.get(client_id) {
                Some(s) => (
                    s.client_id.clone(),
                    s.metadata.clone(),
                    s.secret,
                    true,
                    s.introspect,
                ),
                None => {
                    let c = self.store.client(client_id).await?.ok_or_else(unknown)?;
                    (
                        c.client_id.clone(),
                        c.metadata.clone(),
                        c.secret,
                        false,
                        false,
                    )
                }
            };
        let secret_ok = |presented: Option<&str>| -> bool {
            match (presented, &secret_digest) {
                (Some(p), Some(d)) => secret::matches(p, d),
                _ => false,
            }
        };
        let method = metadata.rules.auth;
        let via_certificate = matches!(
            method,
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
        );
        let ok = match method {
            AuthMethod::ClientSecretBasic => secret_ok(creds.basic.map(|b| b.1)),
            AuthMethod::ClientSecretPost => creds.basic.is_none() && secret_ok(creds.client_secret),
            AuthMethod::TlsClientAuth => {
                creds.basic.is_none()
                    && creds.client_secret.is_none()
                    && cert.is_some_and(|c| {
                        c.chain_verified && cert_match::satisfies(&metadata, c).is_ok()
                    })
            }
            AuthMethod::SelfSignedTlsClientAuth => {
                creds.basic.is_none()
                    && creds.client_secret.is_none()
                    && cert.is_some_and(|c| cert_match::satisfies(&metadata, c).is_ok())
            }
            AuthMethod::None => false,
        };
        if !ok {
            return Err(unknown());
        }
        Ok(Authenticated {
            client_id,
            is_static,
            introspect,
            metadata,
            via_certificate,
        })
    }
}
