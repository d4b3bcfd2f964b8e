//! Where records live: a store commits what the domain (`registry`) decided, with
//! compare-and-set on the record's version, and answers only once the change is durable.
//!
//! Two backends:
//! - [`memory::MemoryStore`]: hash tables in this process, optionally made durable by a
//!   journal with group commit and snapshots in `store.data_dir` (SPEC §7);
//! - [`postgres::PgStore`]: one PostgreSQL database shared by any number of nodes (SPEC §7a).
//!
//! Neither decides anything: a lost compare-and-set is [`StoreError::Conflict`], and the
//! caller reads again and decides again.

pub mod clients;
pub mod codec;
pub mod frame;
pub mod journal;
pub mod memory;
pub mod postgres;
pub mod seal;
pub mod snapshot;

use std::sync::Arc;

use crate::model::{AccessToken, ClientRecord};
use crate::secret::Digest;

pub use memory::MemoryStore;
pub use postgres::PgStore;

/// One durable state change, as journals and snapshots hold it: resulting states, never
/// operations, so replaying a journal over a snapshot that already has some of it converges.
#[derive(Debug, Clone)]
pub enum Change {
    /// A client's whole record after the change (rotate, update, revoke).
    Client(Box<ClientRecord>),
    /// A client was deleted.
    Delete { id: String },
    /// An access token was issued, or its remaining uses changed.
    Token { digest: Digest, token: AccessToken },
    /// An access token was revoked.
    Revoke { digest: Digest },
    /// A registration, with the initial-access use it spent: one record, so a crash keeps
    /// both or neither.
    Register {
        client: Box<ClientRecord>,
        initial: Option<(Digest, AccessToken)>,
    },
    /// An access token issued, and the client's oldest tokens it pushed out.
    Issue {
        digest: Digest,
        token: AccessToken,
        evicted: Vec<Digest>,
    },
}

/// Why a store did not commit, or could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The record changed since it was read: read again and decide again.
    Conflict,
    /// `registration.max_clients_per_certificate` live registrations are bound to the
    /// certificate already.
    Quota,
    /// The initial access token has no use left (or is gone).
    Spent,
    /// Nothing can be committed now (journal failed, database unreachable), or stored state
    /// could not be read.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict => f.write_str("the record changed meanwhile"),
            Self::Quota => f.write_str("registration quota of the certificate reached"),
            Self::Spent => f.write_str("the initial access token has been used"),
            Self::Unavailable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {}

/// An access token and whether its client still exists (tokens die with their client).
#[derive(Debug, Clone)]
pub struct FoundToken {
    /// Shared with the store's own copy (memory) or made for this answer (PostgreSQL).
    pub token: Arc<AccessToken>,
    pub client_alive: bool,
}

/// What one snapshot wrote.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotStats {
    pub generation: u64,
    pub bytes: u64,
    pub clients: usize,
    pub tokens: usize,
}

/// The store a node runs on (`store.backend`).
pub enum Store {
    Memory(MemoryStore),
    Postgres(PgStore),
}

/// Dispatches a call to whichever backend is in use.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// The client `id`, as last committed.
    pub async fn client(&self, id: &str) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        each!(self, s => s.client(id).await)
    }

    /// The client whose current (or just-replaced, in grace) registration token has
    /// digest `digest`.
    pub async fn client_by_reg_token(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        each!(self, s => s.client_by_reg_token(digest).await)
    }

    /// The record this node last committed for the registration token `digest`, if it
    /// keeps one: possibly changed since by another node, so only for a decision that a
    /// compare-and-set commits. The memory store keeps none (its look-up is as cheap).
    pub fn recent_by_reg_token(&self, digest: &Digest) -> Option<Arc<ClientRecord>> {
        match self {
            Store::Memory(_) => None,
            Store::Postgres(s) => s.recent_by_reg_token(digest),
        }
    }

    /// Inserts a new client; spends one use of `initial` with it (both or neither), and
    /// counts it against `quota` registrations per bound certificate.
    pub async fn register(
        &self,
        client: ClientRecord,
        initial: Option<Digest>,
        quota: u32,
    ) -> Result<(), StoreError> {
        each!(self, s => s.register(client, initial, quota).await)
    }

    /// Replaces `old` with `new` if `old` is still the committed version.
    pub async fn replace(&self, old: &ClientRecord, new: ClientRecord) -> Result<(), StoreError> {
        each!(self, s => s.replace(old, new).await)
    }

    /// Deletes `old` (and its access tokens) if it is still the committed version.
    pub async fn delete(&self, old: &ClientRecord) -> Result<(), StoreError> {
        each!(self, s => s.delete(old).await)
    }

    /// The access token with digest `digest`, if there is one.
    pub async fn access_token(&self, digest: &Digest) -> Result<Option<FoundToken>, StoreError> {
        each!(self, s => s.access_token(digest).await)
    }

    /// Stores a new access token; the client's oldest live ones beyond `max_active` are
    /// revoked with it.
    pub async fn issue_token(
        &self,
        digest: Digest,
        token: AccessToken,
        max_active: u32,
    ) -> Result<(), StoreError> {
        each!(self, s => s.issue_token(digest, token, max_active).await)
    }

    /// Revokes an access token (no error if it is gone already).
    pub async fn revoke_token(&self, digest: &Digest) -> Result<(), StoreError> {
        each!(self, s => s.revoke_token(digest).await)
    }

    /// Number of registered clients (for `/healthz` and metrics; may be approximate).
    pub async fn client_count(&self) -> Result<u64, StoreError> {
        each!(self, s => s.client_count().await)
    }

    /// Why the store cannot commit now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        each!(self, s => s.unavailable())
    }

    /// Resolves when the store has failed for good (fail-stop: the node must exit).
    pub async fn fatal(&self) {
        each!(self, s => s.fatal().await)
    }
}
