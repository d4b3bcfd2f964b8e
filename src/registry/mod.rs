//! The domain: registered clients, their credentials, and every rule about them.
//!
//! Plain synchronous Rust over two `DashMap`s, testable without sockets:
//!
//! - `clients`: client_id → [`Client`], the registration record;
//! - `tokens`: SHA-256 of a token → [`TokenRecord`], for O(1) look-up of any bearer token.
//!
//! Lock order: a `clients` guard may be held while touching `tokens`, never the other way
//! round, and no guard ever lives across an `.await` (this module has none). Rotation happens
//! under the client's shard lock, which is what makes it atomic (see `management`).

mod client_auth;
mod management;
mod registration;
mod tokens;

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::identity::ClientCertificate;
use crate::metadata::{ClientMetadata, MetadataError, Policy};
use crate::secret::Digest;

pub use client_auth::{Authenticated, ClientCredentials};
pub use management::{ManageOp, Outcome};
pub use tokens::{AccessToken, InitialUse, Introspection, TokenGrant};

/// A domain failure; `http::error` maps each to its RFC error code and status, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad client metadata (RFC 7591 §3.2.2 codes).
    Metadata(MetadataError),
    /// 400 `invalid_request`.
    InvalidRequest(String),
    /// 401 `invalid_client`.
    InvalidClient(String),
    /// 401 `invalid_token` (RFC 6750 §3.1).
    InvalidToken(String),
    /// 403 `insufficient_scope`.
    InsufficientScope(String),
    /// 404.
    NotFound(String),
    /// 400 `invalid_grant`.
    InvalidGrant(String),
    /// 400 `invalid_scope`.
    InvalidScope(String),
    /// 400 `unsupported_grant_type`.
    UnsupportedGrantType(String),
    /// 400 `unauthorized_client`.
    UnauthorizedClient(String),
}

impl From<MetadataError> for Error {
    fn from(e: MetadataError) -> Self {
        Self::Metadata(e)
    }
}

/// The settings the domain needs, taken from `Config` once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub policy: Policy,
    pub authentication: Vec<crate::config::RegistrationAuth>,
    pub require_matching_certificate: bool,
    pub registration_token_ttl: u64,
    pub read_update_ttl: u64,
    pub reuse_registration_access_token: bool,
    pub rotation_grace: u64,
    pub rotate_client_secret: bool,
    pub require_same_certificate: bool,
    pub dcrm_scope: String,
    pub initial_access_scope: String,
    pub initial_access_token_uses: u32,
    pub access_token_ttl: u64,
}

impl Settings {
    /// Derives the domain settings from a validated config.
    pub fn from_config(c: &Config) -> Self {
        Self {
            issuer: c.issuer_base().to_owned(),
            policy: Policy {
                allowed_grant_types: c.registration.allowed_grant_types.clone(),
                allowed_scopes: c.registration.allowed_scopes.clone(),
                reserved_scopes: vec![
                    c.management.dcrm_scope.clone(),
                    c.registration.initial_access_scope.clone(),
                ],
            },
            authentication: c.registration.authentication.clone(),
            require_matching_certificate: c.registration.require_matching_certificate,
            registration_token_ttl: c.management.registration_token_ttl.as_secs(),
            read_update_ttl: c.management.read_update_ttl.as_secs(),
            reuse_registration_access_token: c.management.reuse_registration_access_token,
            rotation_grace: c.management.rotation_grace.as_secs(),
            rotate_client_secret: c.management.rotate_client_secret,
            require_same_certificate: c.management.require_same_certificate,
            dcrm_scope: c.management.dcrm_scope.clone(),
            initial_access_scope: c.registration.initial_access_scope.clone(),
            initial_access_token_uses: c.registration.initial_access_token_uses,
            access_token_ttl: c.tokens.access_token_ttl.as_secs(),
        }
    }
}

/// One dynamically registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id_issued_at`.
    pub issued_at: u64,
    /// Shared so responses can be encoded after the shard lock is released.
    pub metadata: Arc<ClientMetadata>,
    /// Digest of the current `client_secret`, for secret-based methods.
    pub secret: Option<Digest>,
    /// SHA-256 of the certificate the client registered with.
    pub bound: Option<[u8; 32]>,
    /// The current registration access token.
    pub reg_token: RegToken,
    /// The token just replaced, while `rotation_grace` may still replay its successor.
    /// Memory only: never persisted (SPEC §6a.17).
    pub grace: Option<Box<Grace>>,
}

/// A registration access token, kept as its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegToken {
    pub digest: Digest,
    pub issued_at: u64,
}

/// What a client whose rotation response was lost gets again.
#[derive(Debug, Clone)]
pub struct Grace {
    pub replaced: Digest,
    pub replaced_at: u64,
    pub token: String,
    pub secret: Option<String>,
}

/// What a bearer token's digest points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRecord {
    /// A registration access token of this client (current, or just replaced in grace).
    Registration { client_id: String },
    /// An access token from `/token`.
    Access(AccessToken),
}

/// A statically configured client (`[[clients]]`): never in `clients`, never managed.
#[derive(Debug, Clone)]
pub struct StaticClient {
    /// Its authentication rules, in the same form registered clients have.
    pub metadata: ClientMetadata,
    /// Digest of its secret, for secret-based methods.
    pub secret: Option<Digest>,
    /// May introspect and revoke any token (SPEC §6a.9).
    pub introspect: bool,
}

/// The registry of dynamically registered clients.
pub struct Registry {
    clients: DashMap<String, Client>,
    tokens: DashMap<Digest, TokenRecord>,
    statics: std::collections::HashMap<String, StaticClient>,
    settings: Settings,
    clock: Arc<dyn Clock>,
}

/// The body of a registration or management response (RFC 7591 §3.2.1, RFC 7592 §3).
#[derive(Debug, Clone, Serialize)]
pub struct ClientResponse {
    pub client_id: String,
    pub client_id_issued_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_access_token_expires_in: Option<u64>,
    pub registration_client_uri: String,
    #[serde(flatten)]
    pub metadata: Arc<ClientMetadata>,
}

impl ClientResponse {
    /// Whether the body carries a credential (and so needs `Cache-Control: no-store`).
    pub fn has_secret(&self) -> bool {
        self.client_secret.is_some() || self.registration_access_token.is_some()
    }
}

/// Credentials drawn before taking a lock, so the lock covers no syscall.
struct Fresh {
    token: String,
    token_digest: Digest,
    secret: String,
    secret_digest: Digest,
}

impl Fresh {
    fn draw() -> Self {
        let token = crate::secret::generate();
        let secret = crate::secret::generate();
        Self {
            token_digest: crate::secret::digest(&token),
            secret_digest: crate::secret::digest(&secret),
            token,
            secret,
        }
    }
}

// === impl Registry ===

impl Registry {
    /// An empty registry.
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self {
            clients: DashMap::new(),
            tokens: DashMap::new(),
            statics: std::collections::HashMap::new(),
            settings,
            clock,
        }
    }

    /// A registry with the config's static clients.
    pub fn from_config(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let mut registry = Self::new(Settings::from_config(config), clock);
        for (i, c) in config.clients.iter().enumerate() {
            let client = client_auth::static_client(c)
                .map_err(|e| format!("clients[{i}] ({}): {e}", c.client_id))?;
            registry.statics.insert(c.client_id.clone(), client);
        }
        Ok(registry)
    }

    /// Whether `client_id` names a statically configured client.
    pub fn is_static(&self, client_id: &str) -> bool {
        self.statics.contains_key(client_id)
    }

    /// The domain settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Whether `client_id` is a registered (dynamic) client.
    pub fn contains(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id)
    }

    /// A copy of one client's record (tests and operators; not on a hot path).
    pub fn client(&self, client_id: &str) -> Option<Client> {
        self.clients.get(client_id).map(|c| c.clone())
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn client_uri(&self, client_id: &str) -> String {
        format!("{}/register/{client_id}", self.settings.issuer)
    }

    /// Whether the presented certificate is the one `client` is bound to.
    fn same_certificate(client: &Client, cert: Option<&ClientCertificate>) -> bool {
        match client.bound {
            None => true,
            Some(bound) => cert.is_some_and(|c| c.sha256 == bound),
        }
    }
}
