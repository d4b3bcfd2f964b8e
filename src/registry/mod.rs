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
use crate::metadata::{ClientRules, MetadataError, Policy, Registered};
use crate::secret::Digest;
use crate::store::journal::Journal;
use crate::store::{self, Change, StoreError, StoredClient};

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
    pub max_clients_per_certificate: u32,
    pub max_active_per_client: u32,
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
        }
    }
}

/// One dynamically registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id_issued_at`.
    pub issued_at: u64,
    /// Shared so responses can be encoded after the shard lock is released.
    pub metadata: Arc<Registered>,
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
    /// Revoked by use on an unknown client's URI (RFC 7592 §2.1); kept so a restart does
    /// not bring it back.
    pub revoked: bool,
}

/// What a client whose rotation response was lost gets again.
#[derive(Clone)]
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
    /// An access token from `/token` (boxed: registration entries, one per client, stay
    /// small).
    Access(Box<AccessToken>),
}

/// A statically configured client (`[[clients]]`): never in `clients`, never managed.
#[derive(Debug, Clone)]
pub struct StaticClient {
    /// Its authentication rules, in the same form registered clients have.
    pub rules: ClientRules,
    /// Digest of its secret, for secret-based methods.
    pub secret: Option<Digest>,
    /// May introspect and revoke any token (SPEC §6a.9).
    pub introspect: bool,
}

/// The registry of dynamically registered clients.
pub struct Registry {
    clients: ClientMap,
    tokens: TokenMap,
    /// Live registrations per bound certificate (`registration.max_clients_per_certificate`).
    per_certificate: DashMap<[u8; 32], u32, std::hash::BuildHasherDefault<DigestHasher>>,
    /// Each client's access tokens, oldest first (`tokens.max_active_per_client`).
    issued: DashMap<String, std::collections::VecDeque<(u64, Digest)>, rustc_hash::FxBuildHasher>,
    statics: std::collections::HashMap<String, StaticClient>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// Present when `store.data_dir` is set.
    store: Option<Store>,
}

/// The journal and the generation bookkeeping of snapshots.
struct Store {
    journal: Journal,
    dir: std::path::PathBuf,
    // Serializes snapshots; held only by the (blocking) snapshot task.
    generation: std::sync::Mutex<u64>,
}

/// What one snapshot wrote.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotStats {
    pub generation: u64,
    pub bytes: u64,
    pub clients: usize,
    pub tokens: usize,
}

/// The body of a registration or management response (RFC 7591 §3.2.1, RFC 7592 §3):
/// the server-issued fields, then the registered metadata spliced in verbatim.
#[derive(Clone, Serialize)]
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
    #[serde(skip)]
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
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let meta = self.metadata.json.trim();
        let mut out = Vec::with_capacity(256 + meta.len());
        // Serializing strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        let inner = meta
            .strip_prefix('{')
            .and_then(|m| m.strip_suffix('}'))
            .unwrap_or("")
            .trim();
        if !inner.is_empty() && out.last() == Some(&b'}') {
            out.pop();
            out.push(b',');
            out.extend_from_slice(inner.as_bytes());
            out.push(b'}');
        }
        out
    }

    /// Whether the body carries a credential (and so needs `Cache-Control: no-store`).
    pub fn has_secret(&self) -> bool {
        self.client_secret.is_some() || self.registration_access_token.is_some()
    }
}

/// Credentials drawn before taking a lock, so the lock covers no syscall. (No `Debug`:
/// it holds plaintext credentials.)
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

/// `clients` keys are server-generated random ids; look-ups with hostile keys cannot
/// insert, so a fast non-keyed hash is safe here.
type ClientMap = DashMap<String, Client, rustc_hash::FxBuildHasher>;

/// `tokens` keys are SHA-256 digests, already uniformly random: folding their words is
/// hash enough.
type TokenMap = DashMap<Digest, TokenRecord, std::hash::BuildHasherDefault<DigestHasher>>;

/// Hashes a digest by folding its 8-byte words.
#[derive(Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A [u8; 32] key arrives as one 32-byte write (after its length, below).
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _: usize) {}
}

impl std::fmt::Debug for Grace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The successor's plaintext must never reach a log line.
        f.debug_struct("Grace")
            .field("replaced_at", &self.replaced_at)
            .field("token", &"<redacted>")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

// === impl Registry ===

impl Registry {
    /// An empty registry.
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        // Many shards keep each shard's lock short, also while a snapshot copies it.
        Self {
            clients: ClientMap::with_capacity_and_hasher_and_shard_amount(
                0,
                Default::default(),
                64,
            ),
            tokens: TokenMap::with_capacity_and_hasher_and_shard_amount(0, Default::default(), 64),
            per_certificate: DashMap::default(),
            issued: DashMap::default(),
            statics: std::collections::HashMap::new(),
            settings,
            clock,
            store: None,
        }
    }

    /// A registry with the config's static clients.
    pub fn from_config(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let mut registry = Self::new(Settings::from_config(config), clock);
        registry.statics = Self::static_clients(config)?;
        let dir = &config.store.data_dir;
        if !dir.as_os_str().is_empty() {
            let started = std::time::Instant::now();
            let generation =
                store::snapshot::recover(dir, |change| registry.apply(change)).map_err(|e| e.0)?;
            let pruned = registry.prune_on_load();
            // A snapshot loads on several threads: put each client's tokens back in
            // issue order.
            for mut issued in registry.issued.iter_mut() {
                issued.make_contiguous().sort_unstable();
            }
            tracing::info!(
                dir = %dir.display(),
                clients = registry.clients.len(),
                tokens = registry.tokens.len(),
                pruned,
                ms = started.elapsed().as_millis() as u64,
                "registry restored"
            );
            registry.store = Some(Store {
                journal: Journal::open(dir, generation).map_err(|e| e.0)?,
                dir: dir.clone(),
                generation: std::sync::Mutex::new(generation),
            });
        }
        Ok(registry)
    }

    /// The `[[clients]]` entries in the form the registry uses; an error names the entry
    /// and the key at fault (`check-config` runs this too).
    pub fn static_clients(
        config: &Config,
    ) -> Result<std::collections::HashMap<String, StaticClient>, String> {
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

    /// Whether changes are journaled (`store.data_dir` is set).
    fn journaling(&self) -> bool {
        self.store.is_some()
    }

    /// Queues `change` for the journal (no-op without a data dir). Call it after the
    /// in-memory change and while the state it describes is still locked: a snapshot
    /// then never misses a change whose record went to a journal it deletes.
    fn persist(&self, change: impl FnOnce() -> Change) {
        if let Some(store) = &self.store {
            store.journal.append(&change());
        }
    }

    /// The journal record of a client's current state.
    fn client_change(client_id: &str, client: &Client) -> Change {
        Change::Client {
            id: client_id.to_owned(),
            client: Box::new(StoredClient {
                issued_at: client.issued_at,
                metadata: client.metadata.clone(),
                secret: client.secret,
                bound: client.bound,
                reg_token: client.reg_token.digest,
                reg_token_issued_at: client.reg_token.issued_at,
                reg_token_revoked: client.reg_token.revoked,
            }),
        }
    }

    /// The journal's last sequence number (0 without a data dir): compare it before and
    /// after a request to know whether anything was appended meanwhile.
    pub fn journal_seq(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.journal.last_seq())
    }

    /// Waits until every change made so far is durable, if anything was appended since
    /// `seq` (immediately without a data dir).
    pub async fn sync_since(&self, seq: u64) -> Result<(), StoreError> {
        match &self.store {
            Some(store) if store.journal.last_seq() != seq => store.journal.sync().await,
            _ => Ok(()),
        }
    }

    /// Replays one recovered change.
    fn apply(&self, change: Change) {
        match change {
            Change::Client { id, client: c } => {
                let c = *c;
                let client = Client {
                    issued_at: c.issued_at,
                    metadata: c.metadata,
                    secret: c.secret,
                    bound: c.bound,
                    reg_token: RegToken {
                        digest: c.reg_token,
                        issued_at: c.reg_token_issued_at,
                        revoked: c.reg_token_revoked,
                    },
                    grace: None,
                };
                let bound = client.bound;
                match self.clients.insert(id.clone(), client) {
                    Some(old) => {
                        self.tokens.remove(&old.reg_token.digest);
                    }
                    None => {
                        if let Some(sha) = bound {
                            *self.per_certificate.entry(sha).or_insert(0) += 1;
                        }
                    }
                }
                if !c.reg_token_revoked {
                    self.tokens
                        .insert(c.reg_token, TokenRecord::Registration { client_id: id });
                }
            }
            Change::Delete { id } => {
                if let Some((_, old)) = self.clients.remove(&id) {
                    self.tokens.remove(&old.reg_token.digest);
                    self.unbind(&old);
                }
                self.issued.remove(&id);
            }
            Change::Token { digest, token } => {
                let (owner, iat) = (token.client_id.clone(), token.iat);
                let new = self
                    .tokens
                    .insert(digest, TokenRecord::Access(Box::new(token)))
                    .is_none();
                if new {
                    self.issued
                        .entry(owner)
                        .or_default()
                        .push_back((iat, digest));
                }
            }
            Change::Revoke { digest } => {
                if let Some((_, TokenRecord::Access(t))) = self.tokens.remove(&digest) {
                    if let Some(mut issued) = self.issued.get_mut(&t.client_id) {
                        issued.retain(|(_, d)| *d != digest);
                    }
                }
            }
        }
    }

    /// Drops what is dead after a restart: expired or spent access tokens and tokens of
    /// deleted clients.
    fn prune_on_load(&self) -> usize {
        let dead: Vec<Digest> = self
            .tokens
            .iter()
            .filter_map(|e| match e.value() {
                TokenRecord::Access(t) if !self.active(t) => Some(*e.key()),
                _ => None,
            })
            .collect();
        for d in &dead {
            self.tokens.remove(d);
        }
        self.prune_issued();
        dead.len()
    }

    /// Forgets index entries of tokens that are gone (lock order: `issued`, then `tokens`).
    fn prune_issued(&self) {
        self.issued.retain(|_, q| {
            q.retain(|(_, d)| self.tokens.contains_key(d));
            !q.is_empty()
        });
    }

    /// Writes a snapshot and drops the journals it covers. Blocking: run it off the
    /// async runtime. Writes continue meanwhile.
    pub fn snapshot(&self) -> Result<Option<SnapshotStats>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let mut generation = match store.generation.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let next = *generation + 1;
        // From here on new changes go to journal `next`; the snapshot then contains at
        // least everything in the journals before it.
        store.journal.rotate(next)?;
        *generation = next;
        let mut clients = Vec::with_capacity(self.clients.len());
        for shard in self.clients.iter() {
            clients.push(Self::client_change(shard.key(), shard.value()));
        }
        let now = self.now();
        let tokens: Vec<Change> = self
            .tokens
            .iter()
            .filter_map(|e| match e.value() {
                TokenRecord::Access(t) if t.is_live(now) => Some(Change::Token {
                    digest: *e.key(),
                    token: (**t).clone(),
                }),
                _ => None,
            })
            .collect();
        let stats = SnapshotStats {
            generation: next,
            bytes: 0,
            clients: clients.len(),
            tokens: tokens.len(),
        };
        let bytes = store::snapshot::write(&store.dir, next, clients.into_iter().chain(tokens))?;
        store::snapshot::remove_older(&store.dir, next);
        Ok(Some(SnapshotStats { bytes, ..stats }))
    }

    /// Why changes cannot be committed now, if they cannot.
    pub fn unavailable(&self) -> Option<String> {
        match &self.store {
            Some(store) if store.journal.has_failed() => {
                Some("storage: the journal cannot be written".into())
            }
            _ => None,
        }
    }

    /// A canonical listing of the whole state (digests only, never a credential), one line
    /// per client or token in a fixed order: two equal states give equal dumps.
    pub fn dump(&self) -> String {
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let opt = |d: &Option<[u8; 32]>| d.as_ref().map_or("-".to_owned(), |d| hex(d));
        let mut lines: Vec<String> = self
            .clients
            .iter()
            .map(|e| {
                let c = e.value();
                format!(
                    "client {} issued={} secret={} bound={} token={} token_iat={} revoked={} {}",
                    e.key(),
                    c.issued_at,
                    opt(&c.secret),
                    opt(&c.bound),
                    hex(&c.reg_token.digest),
                    c.reg_token.issued_at,
                    c.reg_token.revoked,
                    c.metadata.json
                )
            })
            .collect();
        lines.extend(self.tokens.iter().map(|e| match e.value() {
            TokenRecord::Registration { client_id } => {
                format!("token {} registration {client_id}", hex(e.key()))
            }
            TokenRecord::Access(t) => format!("token {} access {t:?}", hex(e.key())),
        }));
        lines.sort_unstable();
        lines.join("\n")
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

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn client_uri(&self, client_id: &str) -> String {
        format!("{}/register/{client_id}", self.settings.issuer)
    }

    /// Gives back the quota slot of a removed client's certificate.
    fn unbind(&self, client: &Client) {
        if let Some(sha) = client.bound {
            self.per_certificate.remove_if_mut(&sha, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }

    /// Whether the presented certificate is the one `client` is bound to.
    fn same_certificate(client: &Client, cert: Option<&ClientCertificate>) -> bool {
        match client.bound {
            None => true,
            Some(bound) => cert.is_some_and(|c| c.sha256 == bound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_every_type_holding_a_plaintext_credential_is_redacted() {
        let secret = "s3cret-plaintext-value";
        let metadata = Arc::new(Registered {
            json: "{}".into(),
            rules: crate::metadata::ClientRules {
                auth: crate::metadata::AuthMethod::ClientSecretBasic,
                client_credentials: true,
                scope: None,
                subject: None,
                x5c: Box::new([]),
                jwks_uri: false,
                bound_tokens: false,
            },
        });
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
                    basic: Some(("c".into(), secret.into())),
                    client_id: None,
                    client_secret: Some(secret.into()),
                }
            ),
            format!(
                "{:?}",
                Grace {
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
