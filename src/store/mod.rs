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
//! - `journal-<gen>.log`: framed records (length, CRC32C, JSON) appended by one writer thread
//!   with group commit;
//! - `snapshot-<gen>.snap`: everything that journals before `<gen>` contained.

pub mod frame;
pub mod journal;
pub mod snapshot;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::metadata::Registered;
use crate::registry::AccessToken;
use crate::secret::Digest;

/// One durable state change.
#[derive(Debug, Clone, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum would buffer each record, which is slower
// and cannot carry the raw metadata JSON.
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A client's whole record after the change (register, rotate, update).
    Client {
        id: String,
        client: Box<StoredClient>,
    },
    /// A client was deleted.
    Delete { id: String },
    /// An access token was issued, or its remaining uses changed.
    Token {
        #[serde(with = "b64")]
        digest: Digest,
        token: StoredToken,
    },
    /// An access token was revoked.
    Revoke {
        #[serde(with = "b64")]
        digest: Digest,
    },
}

/// A client record as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredClient {
    pub issued_at: u64,
    pub metadata: std::sync::Arc<Registered>,
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub secret: Option<Digest>,
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub bound: Option<[u8; 32]>,
    #[serde(with = "b64")]
    pub reg_token: Digest,
    pub reg_token_issued_at: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reg_token_revoked: bool,
}

/// An access token record as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    pub client_id: String,
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub cnf: Option<[u8; 32]>,
    pub dynamic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
}

impl From<&AccessToken> for StoredToken {
    fn from(t: &AccessToken) -> Self {
        Self {
            client_id: t.client_id.clone(),
            scope: t.scope.clone(),
            iat: t.iat,
            exp: t.exp,
            cnf: t.cnf,
            dynamic: t.dynamic,
            uses_left: t.uses_left,
        }
    }
}

impl From<StoredToken> for AccessToken {
    fn from(t: StoredToken) -> Self {
        Self {
            client_id: t.client_id,
            scope: t.scope,
            iat: t.iat,
            exp: t.exp,
            cnf: t.cnf,
            dynamic: t.dynamic,
            uses_left: t.uses_left,
        }
    }
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

mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("digest is not 32 bytes"))
    }
}

mod b64_opt {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => b64::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "b64")] [u8; 32]);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
