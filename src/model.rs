//! The records certgate keeps, whatever the backend: registered clients and access tokens.
//!
//! A leaf module: the domain (`registry`) decides new records from old ones, a store
//! (`store`) commits them. Credentials appear only as SHA-256 digests, except the grace
//! successor (SPEC §4), whose plaintext a store keeps in memory or sealed, never as is.

use std::sync::Arc;

use crate::metadata::Registered;
use crate::secret::Digest;

/// One dynamically registered client.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// Shared with the store's indexes: one allocation per client.
    pub client_id: Arc<str>,
    /// Bumped by every committed change: the compare-and-set key.
    pub version: u64,
    /// `client_id_issued_at`.
    pub issued_at: u64,
    pub metadata: Arc<Registered>,
    /// Digest of the current `client_secret`, for secret-based methods.
    pub secret: Option<Digest>,
    /// SHA-256 of the certificate the client registered with.
    pub bound: Option<[u8; 32]>,
    /// The current registration access token.
    pub reg_token: RegToken,
    /// The token just replaced, while `rotation_grace` may still replay its successor.
    pub grace: Option<Box<Grace>>,
}

/// A registration access token, kept as its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegToken {
    pub digest: Digest,
    pub issued_at: u64,
    /// Revoked (at `/revoke`, or by use on an unknown client's URI); kept so a restart does
    /// not bring it back.
    pub revoked: bool,
}

/// What a client whose rotation answer was lost gets again (SPEC §4, §6a.17).
#[derive(Clone, PartialEq, Eq)]
pub struct Grace {
    /// Digest of the replaced token.
    pub replaced: Digest,
    pub replaced_at: u64,
    /// The successor token's plaintext.
    pub token: String,
    /// The secret issued with it, if any.
    pub secret: Option<String>,
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

/// An access token's record (the token itself is only its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub client_id: String,
    /// Space-separated granted scope.
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
    /// `cnf.x5t#S256`: the SHA-256 of the certificate the token is bound to.
    pub cnf: Option<[u8; 32]>,
    /// Issued to a registered client: it dies with the client.
    pub dynamic: bool,
    /// For an initial access token: registrations it may still authorize.
    pub uses_left: Option<u32>,
}

impl AccessToken {
    /// Not expired and, for an initial access token, not used up.
    pub fn is_live(&self, now: u64) -> bool {
        now < self.exp && self.uses_left != Some(0)
    }

    /// Whether the granted scope includes `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}
