//! The domain: registered clients, their credentials, and every rule about them.
//!
//! Every rule is decided once, in plain synchronous functions from a record and a request
//! to a new record and an answer (or a refusal): `registration`, `management` (**where
//! rotation happens**), `tokens`, `client_auth`. They run without sockets or a store, and
//! they are the same whatever the backend.
//!
//! [`Registry`] wires them to a [`Store`]: read the record, decide, commit with
//! compare-and-set; when the commit loses a race, read again and decide again — the loser
//! then finds its token replaced and is refused, never merged.

mod client_auth;
mod management;
mod registration;
mod tokens;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Backend;
use crate::config::Config;
use crate::json;
use crate::metadata::{MetadataError, Policy, Registered};
use crate::model::{AccessToken, ClientRecord};
use crate::secret::Digest;
use crate::statement::Issuers;
use crate::store::postgres::PgSettings;
use crate::store::{MemoryStore, PgStore, SnapshotStats, Store, StoreError};

pub use client_auth::{Authenticated, ClientCredentials};
pub use management::{ManageOp, Outcome, TokenKind};
pub use tokens::{InitialAccess, Introspection, Refused, TokenGrant};

/// A domain failure; `http::error` maps each to its RFC error code and status, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad client metadata (RFC 7591 §3.2.2 codes).
    Metadata(MetadataError),
    /// 400 `invalid_request`.
    InvalidRequest(String),
    /// 401 `invalid_client`: client authentication failed at /token, /introspect, /revoke.
    InvalidClient(String),
    /// 401 `invalid_client`: no accepted way to register was used (SPEC §3).
    RegistrationDenied(String),
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
    /// 503 `temporarily_unavailable`: the store cannot commit or answer now.
    Unavailable(String),
}

impl From<MetadataError> for Error {
    fn from(e: MetadataError) -> Self {
        Self::Metadata(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Quota => Self::Metadata(MetadataError::ClientMetadata(
                "this certificate has as many live registrations as \
                 registration.max_clients_per_certificate allows: delete one, or ask an \
                 administrator to"
                    .into(),
            )),
            StoreError::Spent => {
                Self::InvalidToken("the initial access token has been used".into())
            }
            // Callers retry conflicts; one that still conflicts after many tries is load,
            // not the client's fault.
            StoreError::Conflict => Self::Unavailable("the record kept changing; try again".into()),
            StoreError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// How often a decision is retried after losing a compare-and-set before giving up.
const ATTEMPTS: usize = 16;

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
    pub max_clients_per_certificate: u32,
    pub max_active_per_client: u32,
    pub validation_cache_ttl: std::time::Duration,
    pub require_software_statement: bool,
    pub software_statement_max_age: u64,
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
            max_clients_per_certificate: c.registration.max_clients_per_certificate,
            max_active_per_client: c.tokens.max_active_per_client,
            validation_cache_ttl: c.tokens.validation_cache_ttl,
            require_software_statement: c.registration.require_software_statement,
            software_statement_max_age: c.registration.software_statement_max_age.as_secs(),
        }
    }
}

/// The `[[clients]]` entries by `client_id`. Every token request looks here first, with
/// the id it presents: a fast hash, as the table is the operator's and never grows.
pub type StaticClients = rustc_hash::FxHashMap<String, StaticClient>;

/// A statically configured client (`[[clients]]`): never in the store, never managed.
#[derive(Debug, Clone)]
pub struct StaticClient {
    /// Its `client_id`, shared with every request it authenticates.
    pub client_id: Arc<str>,
    /// Its metadata and rules, in the same form registered clients have.
    pub metadata: Arc<Registered>,
    /// Digest of its secret, for secret-based methods.
    pub secret: Option<Digest>,
    /// May introspect and revoke any token (SPEC §6a.9).
    pub introspect: bool,
}

/// The registry of clients: the domain rules over a store.
pub struct Registry {
    store: Store,
    statics: StaticClients,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// Positive edge-route admissions, per node (shared store only, SPEC §5a).
    admissions: Option<AdmissionCache>,
    /// The directories whose software statements are trusted (SPEC §3).
    issuers: Arc<Issuers>,
}

/// Tokens an edge route admitted recently, reused for at most `tokens.validation_cache_ttl`
/// so that the shared store is not asked on every proxied request. Only positive answers
/// are kept; a revocation or deletion on this node takes effect at once, one on another
/// node within the TTL.
struct AdmissionCache {
    entries: dashmap::DashMap<Digest, (Arc<AccessToken>, std::time::Instant), BuildDigest>,
    ttl: std::time::Duration,
}

type BuildDigest = std::hash::BuildHasherDefault<crate::store::memory::DigestHasher>;

/// Entries kept before the cache starts over (each is a few hundred bytes).
const ADMISSION_CACHE_ENTRIES: usize = 100_000;

impl AdmissionCache {
    fn get(&self, digest: &Digest) -> Option<Arc<AccessToken>> {
        let entry = self.entries.get(digest)?;
        (entry.1 > std::time::Instant::now()).then(|| entry.0.clone())
    }

    fn put(&self, digest: Digest, token: &Arc<AccessToken>) {
        if self.entries.len() >= ADMISSION_CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            digest,
            (token.clone(), std::time::Instant::now() + self.ttl),
        );
    }

    fn forget(&self, digest: &Digest) {
        self.entries.remove(digest);
    }

    fn clear(&self) {
        self.entries.clear();
    }
}

/// The body of a registration or management response (RFC 7591 §3.2.1, RFC 7592 §3):
/// the server-issued fields, then the registered metadata spliced in verbatim.
#[derive(Clone)]
pub struct ClientResponse {
    pub client_id: String,
    pub client_id_issued_at: u64,
    pub client_secret: Option<String>,
    pub client_secret_expires_at: Option<u64>,
    pub registration_access_token: Option<String>,
    pub registration_access_token_expires_in: Option<u64>,
    pub registration_client_uri: String,
    pub metadata: Arc<Registered>,
}

impl std::fmt::Debug for ClientResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never reach a log line.
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ClientResponse")
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field(
                "registration_access_token",
                &redacted(&self.registration_access_token),
            )
            .field("registration_client_uri", &self.registration_client_uri)
            .finish_non_exhaustive()
    }
}

impl ClientResponse {
    /// The JSON body, written directly (as the token answer is): every registration and
    /// every rotation sends one.
    pub fn to_json(&self) -> Vec<u8> {
        let meta = self.metadata.json().trim();
        // The issued fields (id, secret, token, URI, times) take about 300 bytes: one
        // allocation, never a regrowth that copies the answer.
        let mut out = Vec::with_capacity(512 + meta.len());
        out.extend_from_slice(br#"{"client_id":"#);
        json::push_str(&mut out, &self.client_id);
        out.extend_from_slice(br#","client_id_issued_at":"#);
        json::push_u64(&mut out, self.client_id_issued_at);
        if let Some(secret) = &self.client_secret {
            out.extend_from_slice(br#","client_secret":"#);
            json::push_str(&mut out, secret);
        }
        if let Some(at) = self.client_secret_expires_at {
            out.extend_from_slice(br#","client_secret_expires_at":"#);
            json::push_u64(&mut out, at);
        }
        if let Some(token) = &self.registration_access_token {
            out.extend_from_slice(br#","registration_access_token":"#);
            json::push_str(&mut out, token);
        }
        if let Some(ttl) = self.registration_access_token_expires_in {
            out.extend_from_slice(br#","registration_access_token_expires_in":"#);
            json::push_u64(&mut out, ttl);
        }
        out.extend_from_slice(br#","registration_client_uri":"#);
        json::push_str(&mut out, &self.registration_client_uri);
        let inner = meta
            .strip_prefix('{')
            .and_then(|m| m.strip_suffix('}'))
            .unwrap_or("")
            .trim();
        if !inner.is_empty() {
            out.push(b',');
            out.extend_from_slice(inner.as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// Credentials drawn before a decision, so deciding covers no syscall. (No `Debug`: it
/// holds plaintext credentials.)
struct Fresh {
    id: [u8; 16],
    token: String,
    token_digest: Digest,
    secret: String,
    secret_digest: Digest,
}

impl Fresh {
    fn draw() -> Self {
        let bytes = crate::secret::random::<80>();
        let token = crate::secret::encode(&bytes[16..48]);
        let secret = crate::secret::encode(&bytes[48..80]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        Self {
            id,
            token_digest: crate::secret::digest(&token),
            secret_digest: crate::secret::digest(&secret),
            token,
            secret,
        }
    }

    /// A new client_id (22 characters).
    fn client_id(&self) -> String {
        crate::secret::encode(&self.id)
    }
}

// === impl Registry ===

impl Registry {
    /// A registry over `store`.
    pub fn new(
        store: Store,
        statics: StaticClients,
        issuers: Arc<Issuers>,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let admissions = match (&store, settings.validation_cache_ttl) {
            (Store::Postgres(_), ttl) if !ttl.is_zero() => Some(AdmissionCache {
                entries: dashmap::DashMap::default(),
                ttl,
            }),
            _ => None,
        };
        Self {
            store,
            statics,
            settings,
            clock,
            admissions,
            issuers,
        }
    }

    /// A registry with the config's static clients over the configured store: the embedded
    /// one (recovered from `store.data_dir` when set), or PostgreSQL (which needs a tokio
    /// runtime: it connects in the background).
    pub fn from_config(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let statics = Self::static_clients(config)?;
        let issuers = Arc::new(Self::statement_issuers(config)?);
        let dir = &config.store.data_dir;
        let store = match config.store.backend {
            Backend::Postgres => Store::Postgres(PgStore::start(
                PgSettings::from_config(config)?,
                clock.clone(),
            )?),
            Backend::Memory if dir.as_os_str().is_empty() => {
                Store::Memory(MemoryStore::new(clock.clone()))
            }
            Backend::Memory => {
                Store::Memory(MemoryStore::open(dir, clock.clone()).map_err(|e| e.to_string())?)
            }
        };
        Ok(Self::new(
            store,
            statics,
            issuers,
            Settings::from_config(config),
            clock,
        ))
    }

    /// The `[[clients]]` entries in the form the registry uses; an error names the entry
    /// and the key at fault (`check-config` runs this too).
    pub fn static_clients(config: &Config) -> Result<StaticClients, String> {
        config
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                client_auth::static_client(c)
                    .map(|client| (c.client_id.clone(), client))
                    .map_err(|e| format!("clients[{i}] ({}): {e}", c.client_id))
            })
            .collect()
    }

    /// The trusted software statement issuers, their JWKS files read (`check-config` runs
    /// this too).
    pub fn statement_issuers(config: &Config) -> Result<Issuers, String> {
        Issuers::load(
            config
                .registration
                .software_statement_issuers
                .iter()
                .map(|i| (i.issuer.clone(), i.jwks_file.clone()))
                .collect(),
        )
    }

    /// Reads the issuers' JWKS files again (SIGHUP); the keys in force stay on error.
    pub fn reload_statement_issuers(&self) -> Result<(), String> {
        self.issuers.reload()
    }

    /// The store the registry commits to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Why changes cannot be committed now, if they cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.store.unavailable()
    }

    /// Drops expired tokens (embedded store; the shared store sweeps on its own).
    pub fn prune_tokens(&self) -> usize {
        match &self.store {
            Store::Memory(m) => m.prune(),
            Store::Postgres(_) => 0,
        }
    }

    /// Writes a snapshot (embedded store with a data directory). Blocking.
    pub fn snapshot(&self) -> Result<Option<SnapshotStats>, StoreError> {
        match &self.store {
            Store::Memory(m) => m.snapshot(),
            Store::Postgres(_) => Ok(None),
        }
    }

    /// A canonical listing of the state, to compare two states (embedded store).
    pub fn dump(&self) -> String {
        match &self.store {
            Store::Memory(m) => m.dump(),
            Store::Postgres(_) => String::new(),
        }
    }

    /// Whether `client_id` names a statically configured client.
    pub fn is_static(&self, client_id: &str) -> bool {
        self.statics.contains_key(client_id)
    }

    /// The domain settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn client_uri(&self, client_id: &str) -> String {
        // Built by hand: `format!` cost a measurable share of a management request.
        let issuer = &self.settings.issuer;
        let mut uri = String::with_capacity(issuer.len() + 10 + client_id.len());
        uri.push_str(issuer);
        uri.push_str("/register/");
        uri.push_str(client_id);
        uri
    }

    /// The answer for `client` with the credentials issued now, if any.
    fn response(
        &self,
        client: &ClientRecord,
        now: u64,
        token: Option<String>,
        secret: Option<String>,
    ) -> ClientResponse {
        // expires_in follows the token: the full lifetime of a new one, the remaining
        // lifetime of a reused one (SPEC §6a.4).
        let expires_in = token.as_ref().map(|_| {
            client
                .reg_token
                .issued_at
                .saturating_add(self.settings.registration_token_ttl)
                .saturating_sub(now)
        });
        ClientResponse {
            client_id: client.client_id.to_string(),
            client_id_issued_at: client.issued_at,
            client_secret: secret,
            client_secret_expires_at: client.secret.map(|_| 0),
            registration_access_token: token,
            registration_access_token_expires_in: expires_in,
            registration_client_uri: self.client_uri(&client.client_id),
            metadata: client.metadata.clone(),
        }
    }
}

/// Applies a software statement to a registration or update body (SPEC §3): a statement in
/// the body is verified and its claims take precedence over the body's fields; without one,
/// the statement `kept` (a PUT's client's, verified when registered) applies the same way.
/// The statement itself stays in the body, to be registered and returned unmodified.
fn apply_statement(
    s: &Settings,
    issuers: &Issuers,
    body: &mut serde_json::Map<String, serde_json::Value>,
    kept: Option<String>,
    now: u64,
) -> Result<(), Error> {
    use serde_json::Value;
    let claims = match body.get("software_statement") {
        Some(Value::String(jws)) => issuers.verify(jws, now, s.software_statement_max_age)?,
        Some(_) => {
            return Err(MetadataError::InvalidSoftwareStatement(
                "software_statement must be a string (a compact JWS)".into(),
            )
            .into())
        }
        None => match kept {
            Some(jws) => {
                let claims = crate::statement::registered_claims(&jws).unwrap_or_default();
                body.insert("software_statement".into(), Value::String(jws));
                claims
            }
            None if s.require_software_statement => {
                return Err(MetadataError::InvalidSoftwareStatement(
                    "this server accepts registrations with a software statement only".into(),
                )
                .into())
            }
            None => return Ok(()),
        },
    };
    for (k, v) in claims {
        body.insert(k, v);
    }
    Ok(())
}

/// The software statement a client registered with, if any.
fn registered_statement(client: &ClientRecord) -> Option<String> {
    let meta: serde_json::Value = serde_json::from_str(client.metadata.json()).ok()?;
    meta.get("software_statement")?.as_str().map(str::to_owned)
}

/// Whether the presented certificate is the one `client` is bound to.
fn same_certificate(
    client: &ClientRecord,
    cert: Option<&crate::identity::ClientCertificate>,
) -> bool {
    match client.bound {
        None => true,
        Some(bound) => cert.is_some_and(|c| c.sha256 == bound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(json: &str) -> Arc<Registered> {
        Arc::new(Registered::new(
            json.to_owned(),
            crate::metadata::ClientRules {
                auth: crate::metadata::AuthMethod::ClientSecretBasic,
                client_credentials: true,
                scope: None,
                subject: None,
                x5c: Box::new([]),
                jwks_uri: false,
                bound_tokens: false,
            },
        ))
    }

    #[test]
    fn rfc7591_3_2_1_a_response_is_the_issued_fields_then_the_registered_metadata() {
        let response = |secret: Option<&str>, metadata: &str| ClientResponse {
            client_id: "c\"1".into(),
            client_id_issued_at: 1_700_000_000,
            client_secret: secret.map(Into::into),
            client_secret_expires_at: secret.map(|_| 0),
            registration_access_token: Some("tok".into()),
            registration_access_token_expires_in: Some(u64::MAX),
            registration_client_uri: "https://h/register/c%221".into(),
            metadata: stored(metadata),
        };
        let parsed = |r: ClientResponse| -> serde_json::Value {
            crate::json::from_slice(&r.to_json()).unwrap()
        };
        assert_eq!(
            parsed(response(
                Some("s"),
                r#" {"client_name":"n\u00e9","scope":"a b"} "#
            )),
            serde_json::json!({
                "client_id": "c\"1", "client_id_issued_at": 1_700_000_000u64,
                "client_secret": "s", "client_secret_expires_at": 0,
                "registration_access_token": "tok",
                "registration_access_token_expires_in": u64::MAX,
                "registration_client_uri": "https://h/register/c%221",
                "client_name": "n\u{e9}", "scope": "a b"
            })
        );
        // No secret (a certificate-authenticated client), and nothing registered beyond it.
        let v = parsed(response(None, "{}"));
        assert!(v.get("client_secret").is_none() && v.get("client_secret_expires_at").is_none());
        assert_eq!(v.as_object().map(|m| m.len()), Some(5), "{v}");
    }

    #[test]
    fn debug_of_every_type_holding_a_plaintext_credential_is_redacted() {
        let secret = "s3cret-plaintext-value";
        let metadata = stored("{}");
        let shown = [
            format!(
                "{:?}",
                ClientResponse {
                    client_id: "c".into(),
                    client_id_issued_at: 0,
                    client_secret: Some(secret.into()),
                    client_secret_expires_at: Some(0),
                    registration_access_token: Some(secret.into()),
                    registration_access_token_expires_in: Some(1),
                    registration_client_uri: "u".into(),
                    metadata,
                }
            ),
            format!(
                "{:?}",
                TokenGrant {
                    access_token: secret.into(),
                    token_type: "Bearer",
                    expires_in: 1,
                    scope: None,
                }
            ),
            format!(
                "{:?}",
                ClientCredentials {
                    basic: Some(("c", secret)),
                    client_id: None,
                    client_secret: Some(secret),
                }
            ),
            format!(
                "{:?}",
                crate::model::Grace {
                    replaced: [0; 32],
                    replaced_at: 0,
                    token: secret.into(),
                    secret: Some(secret.into()),
                }
            ),
        ];
        for s in shown {
            assert!(!s.contains(secret), "{s}");
            assert!(s.contains("redacted"), "{s}");
        }
    }
}
