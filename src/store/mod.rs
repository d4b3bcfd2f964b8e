//! Durability: every acknowledged change is in the journal (fsynced) before its response
//! is sent; snapshots compact the journal (SPEC §7).
//!
//! The registry stays the source of truth in memory. It describes each change as a
//! [`Change`] holding the *resulting* state (never an operation to redo), so replaying a
//! journal over a snapshot that already contains some of its changes converges on the same
//! state. Nothing secret is written: credentials appear only as SHA-256 digests, and the
//! grace-period successor (SPEC §6a.17) is never persisted.
//!
//! Files in `store.data_dir`:
//! - `journal-<gen>.log`: framed records (length, CRC32C, `codec` binary) appended by one writer thread
//!   with group commit;
//! - `snapshot-<gen>.snap`: everything that journals before `<gen>` contained.

pub mod codec;
pub mod frame;
pub mod journal;
pub mod snapshot;

use crate::metadata::Registered;
use crate::registry::AccessToken;
use crate::secret::Digest;

/// One durable state change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A client's whole record after the change (register, rotate, update).
    Client {
        id: String,
        client: Box<StoredClient>,
    },
    /// A client was deleted.
    Delete { id: String },
    /// An access token was issued, or its remaining uses changed.
    Token { digest: Digest, token: AccessToken },
    /// An access token was revoked.
    Revoke { digest: Digest },
}

/// A client record as written to disk (digests only, never a credential).
#[derive(Debug, Clone)]
pub struct StoredClient {
    pub issued_at: u64,
    pub metadata: std::sync::Arc<Registered>,
    pub secret: Option<Digest>,
    pub bound: Option<[u8; 32]>,
    pub reg_token: Digest,
    pub reg_token_issued_at: u64,
    pub reg_token_revoked: bool,
}

/// A storage failure, naming the file and, for bad data, the byte offset.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}
