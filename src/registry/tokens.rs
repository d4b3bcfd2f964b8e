//! Access tokens: issue (client_credentials), validate, introspect, revoke, and the
//! initial access tokens that authorize registration (SPEC §5, §6a.8, §6a.21).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use super::{Authenticated, Error, Registry, TokenRecord};
use crate::identity::ClientCertificate;
use crate::secret::{self, Digest};
use crate::store::Change;

/// An access token's record (the token itself is only its digest, the map key).
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

/// The `/token` success body (RFC 6749 §5.1).
#[derive(Serialize)]
pub struct TokenGrant {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The `/introspect` body (RFC 7662 §2.2).
#[derive(Debug, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<IntrospectionDetails>,
}

/// The fields of an active token.
#[derive(Debug, Serialize)]
pub struct IntrospectionDetails {
    pub scope: String,
    pub client_id: String,
    pub token_type: &'static str,
    pub exp: u64,
    pub iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<serde_json::Value>,
}

/// One use of an initial access token, taken for a registration. Dropped without
/// `commit` — the registration failed, or the request was cancelled — it gives the use
/// back (SPEC §6a.3, §6a.8).
#[must_use]
pub struct InitialUse<'a> {
    registry: &'a Registry,
    digest: Digest,
    consumed: bool,
}

impl InitialUse<'_> {
    /// The registration succeeded: the use is spent.
    pub fn commit(mut self) {
        self.consumed = false;
    }
}

impl Drop for InitialUse<'_> {
    fn drop(&mut self) {
        if self.consumed {
            self.registry.refund_initial_access(&self.digest);
        }
    }
}

// === impl Registry ===

impl Registry {
    /// `grant_type=client_credentials` (RFC 6749 §4.4) for an authenticated client.
    pub fn issue_token(
        &self,
        client: &Authenticated,
        grant_type: Option<&str>,
        scope: Option<&str>,
        cert: Option<&ClientCertificate>,
    ) -> Result<TokenGrant, Error> {
        match grant_type {
            None => return Err(Error::InvalidRequest("grant_type is required".into())),
            Some("client_credentials") => {}
            Some(other) => {
                return Err(Error::UnsupportedGrantType(format!(
                    "grant_type {other:?} is not supported (supported: client_credentials)"
                )))
            }
        }
        if !client.rules.client_credentials {
            return Err(Error::UnauthorizedClient(
                "the client is not registered for the client_credentials grant".into(),
            ));
        }
        // The reserved scopes belong to static clients, whatever a registered client has
        // stored (SPEC §6a.25): they are never part of what it may be granted.
        let s = &self.settings;
        let registered: Vec<&str> = client
            .rules
            .scope_tokens()
            .filter(|t| client.is_static || (*t != s.dcrm_scope && *t != s.initial_access_scope))
            .collect();
        let granted: Vec<&str> = match scope {
            None => registered.clone(),
            Some(requested) => {
                let mut out: Vec<&str> = Vec::new();
                for s in requested.split(' ').filter(|s| !s.is_empty()) {
                    if !registered.contains(&s) {
                        return Err(Error::InvalidScope(format!(
                            "scope {s:?} is not registered for this client"
                        )));
                    }
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
                out
            }
        };
        let granted = granted.join(" ");
        let initial = granted == self.settings.initial_access_scope;
        let bound_by_metadata = client.rules.bound_tokens;
        let cnf = if initial {
            // Handed to the registering client: never bound (SPEC §6a.8).
            None
        } else if client.via_certificate || bound_by_metadata {
            match cert {
                Some(c) => Some(c.sha256),
                None => {
                    return Err(Error::InvalidRequest(
                        "this client's access tokens are certificate-bound: present the client certificate"
                            .into(),
                    ))
                }
            }
        } else {
            None
        };
        let token = secret::generate();
        let now = self.now();
        let ttl = self.settings.access_token_ttl;
        let record = AccessToken {
            client_id: client.client_id.clone(),
            scope: granted.clone(),
            iat: now,
            exp: now.saturating_add(ttl),
            cnf,
            dynamic: !client.is_static,
            uses_left: initial.then_some(self.settings.initial_access_token_uses),
        };
        let digest = secret::digest(&token);
        // Insert before journaling, for the same reason as in `register`.
        let change = self.journaling().then(|| Change::Token {
            digest,
            token: record.clone(),
        });
        self.tokens
            .insert(digest, TokenRecord::Access(Box::new(record)));
        if let Some(change) = change {
            self.persist(|| change);
        }
        self.index_token(&client.client_id, now, digest);
        Ok(TokenGrant {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: (!granted.is_empty()).then_some(granted),
        })
    }

    /// Looks up an active access token (401 `invalid_token` otherwise), enforcing its
    /// certificate binding (RFC 8705 §3).
    pub fn access_token(
        &self,
        token: &str,
        cert: Option<&ClientCertificate>,
    ) -> Result<AccessToken, Error> {
        let invalid = |why: &str| Error::InvalidToken(why.to_owned());
        let record = match self
            .tokens
            .get(&secret::digest(token))
            .map(|r| r.value().clone())
        {
            Some(TokenRecord::Access(t)) => *t,
            _ => return Err(invalid("unknown, expired or revoked token")),
        };
        if !self.active(&record) {
            return Err(invalid("unknown, expired or revoked token"));
        }
        if let Some(bound) = record.cnf {
            if cert.is_none_or(|c| c.sha256 != bound) {
                return Err(invalid(
                    "the token is bound to a different client certificate",
                ));
            }
        }
        Ok(record)
    }

    /// Live, and its client (if registered) still exists.
    pub(super) fn active(&self, t: &AccessToken) -> bool {
        t.is_live(self.now()) && (!t.dynamic || self.clients.contains_key(&t.client_id))
    }

    /// Whether `token` is a registration access token (as opposed to an access token).
    pub fn is_registration_token(&self, token: &str) -> bool {
        matches!(
            self.tokens.get(&secret::digest(token)).as_deref(),
            Some(TokenRecord::Registration { .. })
        )
    }

    /// Takes one use of an initial access token (or checks a wider token that includes the
    /// initial access scope, which is not consumed; SPEC §6a.21).
    pub fn begin_initial_access(
        &self,
        token: &str,
        cert: Option<&ClientCertificate>,
    ) -> Result<InitialUse<'_>, Error> {
        let record = self.access_token(token, cert)?;
        if !record.has_scope(&self.settings.initial_access_scope) {
            return Err(Error::InsufficientScope(format!(
                "registration needs a token with scope {:?}",
                self.settings.initial_access_scope
            )));
        }
        let digest = secret::digest(token);
        if record.uses_left.is_none() {
            return Ok(InitialUse {
                registry: self,
                digest,
                consumed: false,
            });
        }
        // Decrement under the shard lock: two registrations cannot share the last use.
        let taken = match self.tokens.get_mut(&digest).as_deref_mut() {
            Some(TokenRecord::Access(t)) if t.uses_left.is_some_and(|n| n > 0) => {
                t.uses_left = t.uses_left.map(|n| n - 1);
                self.persist(|| Change::Token {
                    digest,
                    token: (**t).clone(),
                });
                true
            }
            _ => false,
        };
        if !taken {
            return Err(Error::InvalidToken(
                "the initial access token has been used".into(),
            ));
        }
        Ok(InitialUse {
            registry: self,
            digest,
            consumed: true,
        })
    }

    /// Gives a use back after a registration that did not happen.
    fn refund_initial_access(&self, digest: &Digest) {
        if let Some(TokenRecord::Access(t)) = self.tokens.get_mut(digest).as_deref_mut() {
            t.uses_left = t.uses_left.map(|n| n + 1);
            self.persist(|| Change::Token {
                digest: *digest,
                token: (**t).clone(),
            });
        }
    }

    /// RFC 7662: what `caller` may learn about `token`.
    pub fn introspect(&self, caller: &Authenticated, token: &str) -> Introspection {
        let record = match self
            .tokens
            .get(&secret::digest(token))
            .map(|r| r.value().clone())
        {
            Some(TokenRecord::Access(t)) => t,
            _ => {
                return Introspection {
                    active: false,
                    details: None,
                }
            }
        };
        let allowed = caller.introspect || caller.client_id == record.client_id;
        if !allowed || !self.active(&record) {
            return Introspection {
                active: false,
                details: None,
            };
        }
        Introspection {
            active: true,
            details: Some(IntrospectionDetails {
                scope: record.scope,
                client_id: record.client_id,
                token_type: "Bearer",
                exp: record.exp,
                iat: record.iat,
                cnf: record
                    .cnf
                    .map(|t| serde_json::json!({ "x5t#S256": URL_SAFE_NO_PAD.encode(t) })),
            }),
        }
    }

    /// RFC 7009: revokes `token` if `caller` may; unknown tokens are not an error.
    ///
    /// Registration access tokens can be revoked too, by their client (SPEC §6a.26).
    pub fn revoke(&self, caller: &Authenticated, token: &str) -> Result<(), Error> {
        let digest = secret::digest(token);
        let (owner, registration) = match self.tokens.get(&digest).as_deref() {
            Some(TokenRecord::Access(t)) => (t.client_id.clone(), false),
            Some(TokenRecord::Registration { client_id }) => (client_id.clone(), true),
            None => return Ok(()),
        };
        if !caller.introspect && caller.client_id != owner {
            return Err(Error::UnauthorizedClient(
                "the token was not issued to this client".into(),
            ));
        }
        if registration {
            self.revoke_registration_token(&owner, &digest);
        } else {
            self.revoke_access_token(&owner, &digest);
        }
        Ok(())
    }

    /// Removes an access token, durably, and forgets it in its client's index.
    fn revoke_access_token(&self, owner: &str, digest: &Digest) {
        if self.tokens.remove(digest).is_some() {
            self.persist(|| Change::Revoke { digest: *digest });
        }
        if let Some(mut issued) = self.issued.get_mut(owner) {
            issued.retain(|(_, d)| d != digest);
        }
    }

    /// Records a new access token of `client_id`; beyond `tokens.max_active_per_client`
    /// live tokens, the oldest is revoked (SPEC §8). Tokens that died meanwhile (expired,
    /// revoked elsewhere, pruned) are dropped from the index first and do not count.
    fn index_token(&self, client_id: &str, iat: u64, digest: Digest) {
        let max = self.settings.max_active_per_client as usize;
        let mut evicted = Vec::new();
        {
            let mut issued = match self.issued.get_mut(client_id) {
                Some(e) => e,
                None => self.issued.entry(client_id.to_owned()).or_default(),
            };
            if issued.len() >= max {
                let now = self.now();
                issued.retain(|(_, d)| {
                    matches!(self.tokens.get(d).as_deref(), Some(TokenRecord::Access(t)) if t.is_live(now))
                });
            }
            while issued.len() >= max {
                match issued.pop_front() {
                    Some((_, d)) => evicted.push(d),
                    None => break,
                }
            }
            issued.push_back((iat, digest));
        }
        for d in evicted {
            if self.tokens.remove(&d).is_some() {
                self.persist(|| Change::Revoke { digest: d });
            }
        }
    }

    /// Drops expired access tokens and spent initial access tokens. (Tokens of deleted
    /// clients are already dead and go when they expire: looking at `clients` from inside
    /// `tokens.retain` would invert the lock order.)
    pub fn prune_tokens(&self) -> usize {
        let now = self.now();
        let before = self.tokens.len();
        self.tokens.retain(|_, r| match r {
            TokenRecord::Access(t) => t.is_live(now),
            TokenRecord::Registration { .. } => true,
        });
        self.prune_issued();
        before.saturating_sub(self.tokens.len())
    }
}
