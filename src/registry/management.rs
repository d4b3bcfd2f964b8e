//! RFC 7592 management, and **where rotation happens**.
//!
//! A self-management GET or PUT replaces the registration access token (and the client
//! secret) under the client's shard lock: of N requests presenting the same token, the
//! first to take the lock rotates and every other one finds its token no longer current.
//! Every check runs before the first mutation, so a refused request changes nothing
//! (SPEC §6a.3).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Client, ClientResponse, Error, Fresh, Grace, RegToken, Registry, TokenRecord};
use crate::cert_match;
use crate::identity::ClientCertificate;
use crate::metadata::{AuthMethod, ClientMetadata, MetadataError, Registered};
use crate::secret::{self, Digest};
use crate::store::Change;

/// A management operation (RFC 7592 §2.1-§2.3).
#[derive(Debug)]
pub enum ManageOp {
    /// GET.
    Read,
    /// PUT with the request's JSON object.
    Update(Map<String, Value>),
    /// DELETE.
    Delete,
}

/// What a successful management request yields.
#[derive(Debug)]
pub enum Outcome {
    /// 200 with this body.
    Client(ClientResponse),
    /// 204.
    Deleted,
}

/// A PUT body, checked as far as it can be without the client's record.
struct Update {
    metadata: Registered,
    presented_secret: Option<String>,
}

/// Which of the client's tokens the request presented.
enum Presented {
    Current,
    /// The just-replaced token, within the grace period: replay its successor.
    Replaced,
}

// === impl Registry ===

impl Registry {
    /// Self-management with a registration access token (RFC 7592 §2, SPEC §4).
    pub fn manage_self(
        &self,
        client_id: &str,
        token: &str,
        cert: Option<&ClientCertificate>,
        op: ManageOp,
    ) -> Result<Outcome, Error> {
        let digest = secret::digest(token);
        let owner = match self.tokens.get(&digest).map(|r| r.value().clone()) {
            Some(TokenRecord::Registration { client_id }) => client_id,
            _ => return Err(invalid_token("unknown, expired or revoked token")),
        };
        if owner != client_id {
            // RFC 7592 §2.1: an unknown client means the token SHOULD be revoked. A
            // token of another existing client is merely not valid here (SPEC §6a.6).
            if !self.clients.contains_key(client_id) && !self.is_static(client_id) {
                self.revoke_on_unknown_client(&owner, &digest, cert);
            }
            return Err(invalid_token("the token is not valid for this client"));
        }
        // The body is judged only after the token and certificate checks: a caller without
        // a valid token learns nothing about how its body would fare.
        let (op, body) = match op {
            ManageOp::Update(body) => (ManageOp::Read, Some(body)),
            other => (other, None),
        };
        let fresh = Fresh::draw();
        let now = self.now();
        let s = &self.settings;

        let Some(mut client) = self.clients.get_mut(client_id) else {
            self.tokens.remove(&digest);
            return Err(invalid_token("the client no longer exists"));
        };
        // A revoked token never counts, also when the revocation landed after the look-up
        // above (SPEC §6a.26): the flag is read under the same lock that rotation takes.
        let presented =
            if secret::matches(token, &client.reg_token.digest) && !client.reg_token.revoked {
                Presented::Current
            } else if client.grace.as_ref().is_some_and(|g| {
                g.replaced == digest && now < g.replaced_at.saturating_add(s.rotation_grace)
            }) {
                Presented::Replaced
            } else {
                // A replaced token whose grace is over: forget it.
                drop(client);
                self.tokens.remove(&digest);
                return Err(invalid_token("the token has been replaced"));
            };

        if s.require_same_certificate && !Self::same_certificate(&client, cert) {
            return Err(invalid_token(
                "the token is bound to a different client certificate",
            ));
        }
        if let Presented::Current = presented {
            let age = now.saturating_sub(client.reg_token.issued_at);
            if age >= s.registration_token_ttl {
                return Err(invalid_token("the token has expired"));
            }
            if !matches!(op, ManageOp::Delete) && age >= s.read_update_ttl {
                return Err(invalid_token(
                    "the token's read/update window has passed; it is now good for deletion only",
                ));
            }
        }
        // Field validation only (no I/O): cheap enough to run under the shard lock.
        let update = match body {
            Some(body) => Some(self.prepare_update(client_id, body)?),
            None => None,
        };
        if let Some(update) = &update {
            check_update_against(&client, update, cert, s.require_matching_certificate)?;
        }

        // --- no refusal below this line: mutate ---
        if let ManageOp::Delete = op {
            // The guard must go before `remove` (same shard); `delete_if` re-checks that
            // the token is still the one presented, so a rotation in between wins.
            drop(client);
            return if self.delete_if(client_id, |c| {
                (c.reg_token.digest == digest && !c.reg_token.revoked)
                    || c.grace.as_ref().is_some_and(|g| g.replaced == digest)
            }) {
                Ok(Outcome::Deleted)
            } else {
                Err(invalid_token("the token has been replaced"))
            };
        }

        let response = match presented {
            Presented::Replaced => {
                // Same successor again; a replayed PUT applies its body again.
                let mut secret = client.grace.as_ref().and_then(|g| g.secret.clone());
                let update_applied = update.is_some();
                if let Some(update) = update {
                    if let Some(new) = apply_update(&mut client, update.metadata, &fresh) {
                        secret = Some(new);
                    }
                    if client.secret.is_none() {
                        // The replayed body moved to a method without a secret.
                        secret = None;
                    }
                    if let Some(g) = client.grace.as_mut() {
                        g.secret.clone_from(&secret);
                    }
                }
                let token = client.grace.as_ref().map(|g| g.token.clone());
                if update_applied {
                    self.persist(|| Self::client_change(client_id, &client));
                }
                self.response(client_id, &client, now, token, secret)
            }
            Presented::Current => {
                // The successor is being used: the replaced token is gone for good.
                if let Some(old) = client.grace.take() {
                    self.tokens.remove(&old.replaced);
                }
                let mut new_secret = None;
                let changed = update.is_some();
                if let Some(update) = update {
                    new_secret = apply_update(&mut client, update.metadata, &fresh);
                }
                if new_secret.is_none() && s.rotate_client_secret && client.secret.is_some() {
                    client.secret = Some(fresh.secret_digest);
                    new_secret = Some(fresh.secret.clone());
                }
                let token = if s.reuse_registration_access_token {
                    token.to_owned()
                } else {
                    client.reg_token = RegToken {
                        digest: fresh.token_digest,
                        issued_at: now,
                        revoked: false,
                    };
                    self.tokens.insert(
                        fresh.token_digest,
                        TokenRecord::Registration {
                            client_id: client_id.to_owned(),
                        },
                    );
                    if s.rotation_grace > 0 {
                        client.grace = Some(Box::new(Grace {
                            replaced: digest,
                            replaced_at: now,
                            token: fresh.token.clone(),
                            secret: new_secret.clone(),
                        }));
                    } else {
                        self.tokens.remove(&digest);
                    }
                    fresh.token
                };
                if changed || !s.reuse_registration_access_token || new_secret.is_some() {
                    self.persist(|| Self::client_change(client_id, &client));
                }
                // expires_in follows the token: the full lifetime of a new one, the
                // remaining lifetime of a reused one (SPEC §6a.4).
                self.response(client_id, &client, now, Some(token), new_secret)
            }
        };
        Ok(Outcome::Client(response))
    }

    /// Administrative management with a `dcrm` token: any registered client, no rotation.
    /// The caller has already checked the token and its scope.
    pub fn manage_admin(&self, client_id: &str, op: ManageOp) -> Result<Outcome, Error> {
        // An unknown client is a 404 whatever the body says (SPEC §6a.7).
        if !self.clients.contains_key(client_id) {
            return Err(Error::NotFound(format!(
                "no registered client {client_id:?}"
            )));
        }
        let (delete, update) = match op {
            ManageOp::Update(body) => (false, Some(self.prepare_update(client_id, body)?)),
            ManageOp::Read => (false, None),
            ManageOp::Delete => (true, None),
        };
        let fresh = Fresh::draw();
        let now = self.now();
        let Some(mut client) = self.clients.get_mut(client_id) else {
            return Err(Error::NotFound(format!(
                "no registered client {client_id:?}"
            )));
        };
        if delete {
            drop(client);
            self.delete(client_id);
            return Ok(Outcome::Deleted);
        }
        let mut secret = None;
        if let Some(update) = update {
            check_update_against(&client, &update, None, false)?;
            secret = apply_update(&mut client, update.metadata, &fresh);
            self.persist(|| Self::client_change(client_id, &client));
        }
        Ok(Outcome::Client(
            self.response(client_id, &client, now, None, secret),
        ))
    }

    /// RFC 7592 §2.2 checks that need only the body.
    fn prepare_update(
        &self,
        client_id: &str,
        mut body: Map<String, Value>,
    ) -> Result<Update, Error> {
        let bad = |msg: String| Error::Metadata(MetadataError::ClientMetadata(msg));
        for field in [
            "registration_access_token",
            "registration_client_uri",
            "client_secret_expires_at",
            "client_id_issued_at",
        ] {
            if body.contains_key(field) {
                return Err(bad(format!(
                    "{field} is issued by the server and must not be sent"
                )));
            }
        }
        match body.remove("client_id") {
            Some(Value::String(id)) if id == client_id => {}
            Some(_) => {
                return Err(bad(
                    "client_id does not match the client being updated".into()
                ))
            }
            None => return Err(bad("the request must include the client_id".into())),
        }
        let presented_secret = match body.remove("client_secret") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(bad("client_secret must be a string".into())),
        };
        body.remove("registration_access_token_expires_in");
        let metadata = ClientMetadata::parse(body, &self.settings.policy)?.into_registered()?;
        Ok(Update {
            metadata,
            presented_secret,
        })
    }

    /// Revokes `owner`'s registration token `digest` (RFC 7592 §2.1), durably — unless
    /// `require_same_certificate` binds it to a certificate the caller did not present:
    /// a leaked bound token must not be enough to lock its client out (SPEC §6a.3).
    fn revoke_on_unknown_client(
        &self,
        owner: &str,
        digest: &Digest,
        cert: Option<&ClientCertificate>,
    ) {
        if self.settings.require_same_certificate {
            let bound_elsewhere = self
                .clients
                .get(owner)
                .is_some_and(|c| !Self::same_certificate(&c, cert));
            if bound_elsewhere {
                return;
            }
        }
        self.revoke_registration_token(owner, digest);
    }

    /// Revokes `owner`'s registration token `digest`, durably: the current one is marked
    /// revoked under the client's lock (so a request that already looked it up cannot use
    /// it), a just-replaced one loses its grace replay (SPEC §6a.26).
    pub(super) fn revoke_registration_token(&self, owner: &str, digest: &Digest) {
        if let Some(mut client) = self.clients.get_mut(owner) {
            if client.reg_token.digest == *digest && !client.reg_token.revoked {
                client.reg_token.revoked = true;
                self.persist(|| Self::client_change(owner, &client));
            }
            if client.grace.as_ref().is_some_and(|g| g.replaced == *digest) {
                client.grace = None;
            }
        }
        self.tokens.remove_if(
            digest,
            |_, r| matches!(r, TokenRecord::Registration { client_id } if client_id == owner),
        );
    }

    /// Deletes a client and the index entries of its registration tokens. Its access
    /// tokens die because they are checked against the live client on use.
    fn delete(&self, client_id: &str) {
        self.delete_if(client_id, |_| true);
    }

    /// Deletes the client if `still` holds for it at the moment of removal.
    fn delete_if(&self, client_id: &str, still: impl FnOnce(&Client) -> bool) -> bool {
        let Some((_, client)) = self.clients.remove_if(client_id, |_, c| still(c)) else {
            return false;
        };
        self.persist(|| Change::Delete {
            id: client_id.to_owned(),
        });
        self.unbind(&client);
        self.issued.remove(client_id);
        self.tokens.remove(&client.reg_token.digest);
        if let Some(g) = &client.grace {
            self.tokens.remove(&g.replaced);
        }
        true
    }

    pub(super) fn response(
        &self,
        client_id: &str,
        client: &Client,
        now: u64,
        token: Option<String>,
        secret: Option<String>,
    ) -> ClientResponse {
        let expires_in = token.as_ref().map(|_| {
            client
                .reg_token
                .issued_at
                .saturating_add(self.settings.registration_token_ttl)
                .saturating_sub(now)
        });
        ClientResponse {
            client_id: client_id.to_owned(),
            client_id_issued_at: client.issued_at,
            client_secret: secret,
            client_secret_expires_at: client.secret.map(|_| 0),
            registration_access_token: token,
            registration_access_token_expires_in: expires_in,
            registration_client_uri: self.client_uri(client_id),
            metadata: client.metadata.clone(),
        }
    }
}

/// PUT checks that need the current record (RFC 7592 §2.2, SPEC §4).
fn check_update_against(
    client: &Client,
    update: &Update,
    cert: Option<&ClientCertificate>,
    require_matching_certificate: bool,
) -> Result<(), Error> {
    let bad = |msg: &str| Error::Metadata(MetadataError::ClientMetadata(msg.to_owned()));
    if let Some(presented) = &update.presented_secret {
        let ok = client
            .secret
            .as_ref()
            .is_some_and(|d| secret::matches(presented, d));
        if !ok {
            return Err(bad("client_secret does not match the current secret"));
        }
    }
    let new = &update.metadata.rules;
    let certificate_method = matches!(
        new.auth,
        AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
    );
    if require_matching_certificate
        && certificate_method
        && !new.same_certificate_rules(&client.metadata.rules)
    {
        // A client cannot widen who may authenticate as it: it must hold a certificate
        // that satisfies the new rules.
        let Some(cert) = cert else {
            return Err(bad(
                "changing the certificate-matching metadata requires presenting a certificate that satisfies it",
            ));
        };
        cert_match::satisfies(&update.metadata.rules, cert).map_err(|e| bad(&e))?;
    }
    Ok(())
}

/// Replaces the metadata (values replace, never merge) and keeps the secret in step with
/// the auth method; returns a newly issued secret, if any.
fn apply_update(client: &mut Client, metadata: Registered, fresh: &Fresh) -> Option<String> {
    let needs_secret = metadata.rules.uses_secret();
    client.metadata = Arc::new(metadata);
    match (needs_secret, client.secret.is_some()) {
        (true, false) => {
            client.secret = Some(fresh.secret_digest);
            Some(fresh.secret.clone())
        }
        (false, true) => {
            client.secret = None;
            None
        }
        _ => None,
    }
}

fn invalid_token(msg: &str) -> Error {
    Error::InvalidToken(msg.to_owned())
}
