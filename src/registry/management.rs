//! RFC 7592 management, and **where rotation happens**.
//!
//! [`decide_self`] turns a client's record, the presented token and the request into the
//! record after it (new registration token, new secret, new metadata) and the answer. It
//! checks everything before it changes anything, so a refused request changes nothing
//! (SPEC §6a.3). The store then commits that record only if the one it was decided from is
//! still current: of N requests presenting the same token, one commits, and every other
//! one reads again, finds its token replaced, and is refused.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    apply_statement, registered_statement, same_certificate, ClientResponse, Error, Fresh,
    Registry, Settings, ATTEMPTS,
};
use crate::cert_match;
use crate::identity::ClientCertificate;
use crate::metadata::{AuthMethod, ClientMetadata, MetadataError, Registered};
use crate::model::{ClientRecord, Grace, RegToken};
use crate::secret::{self, Digest};
use crate::store::StoreError;

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

/// What the bearer token at `/register/{client_id}` is, settled before the body is read.
pub enum TokenKind {
    /// A registration access token (current, or just replaced) of this client.
    Registration(Prefetched),
    /// An access token holding the dcrm scope.
    Admin,
}

/// The client record [`Registry::token_kind`] found, handed on to
/// [`Registry::manage_self`] so it is not read twice.
pub struct Prefetched {
    rec: Arc<ClientRecord>,
    /// Read from the store now. Otherwise it is the store's copy of what this node last
    /// committed (`Store::recent_by_reg_token`), which another node may have changed
    /// since: only a compare-and-set that succeeds proves it current.
    current: bool,
}

/// A PUT body, checked as far as it can be without the client's record.
struct Update {
    metadata: Registered,
    presented_secret: Option<String>,
}

/// Which of the client's tokens the request presented.
#[derive(Clone, Copy)]
enum Presented {
    Current,
    /// The just-replaced token, within the grace period: replay its successor.
    Replaced,
}

/// What to commit.
enum Commit {
    Nothing,
    Replace(ClientRecord),
    Delete,
}

/// What to answer once committed: the credentials issued (or replayed) with the record.
enum Reply {
    Client {
        record: Box<ClientRecord>,
        token: Option<String>,
        secret: Option<String>,
    },
    Deleted,
}

/// Which of `rec`'s tokens `digest` is, and whether it may do what is asked now.
fn check_presented(
    s: &Settings,
    rec: &ClientRecord,
    digest: &Digest,
    cert: Option<&ClientCertificate>,
    delete: bool,
    now: u64,
) -> Result<Presented, Error> {
    // A revoked token never counts (SPEC §6a.26): the flag is part of the record the
    // commit compares against, so a revocation racing this request wins or loses whole.
    let presented = if rec.reg_token.digest == *digest && !rec.reg_token.revoked {
        Presented::Current
    } else if rec.grace.as_ref().is_some_and(|g| {
        g.replaced == *digest && now < g.replaced_at.saturating_add(s.rotation_grace)
    }) {
        Presented::Replaced
    } else {
        return Err(invalid_token("the token has been replaced"));
    };
    if s.require_same_certificate && !same_certificate(rec, cert) {
        return Err(invalid_token(
            "the token is bound to a different client certificate",
        ));
    }
    if let Presented::Current = presented {
        let age = now.saturating_sub(rec.reg_token.issued_at);
        if age >= s.registration_token_ttl {
            return Err(invalid_token("the token has expired"));
        }
        if !delete && age >= s.read_update_ttl {
            return Err(invalid_token(
                "the token's read/update window has passed; it is now good for deletion only",
            ));
        }
    }
    Ok(presented)
}

/// Self-management (SPEC §4): the record after a GET, PUT or DELETE with a registration
/// access token, and the answer.
#[allow(clippy::too_many_arguments)]
fn decide_self(
    s: &Settings,
    rec: &ClientRecord,
    presented: Presented,
    update: Option<&Update>,
    delete: bool,
    cert: Option<&ClientCertificate>,
    token: &str,
    fresh: &Fresh,
    now: u64,
) -> Result<(Commit, Reply), Error> {
    if let Some(update) = update {
        check_update_against(rec, update, cert, s.require_matching_certificate)?;
    }
    // --- no refusal below this line ---
    if delete {
        return Ok((Commit::Delete, Reply::Deleted));
    }
    match presented {
        Presented::Replaced => {
            // Same successor again; a replayed PUT applies its body again (idempotent).
            let Some(grace) = rec.grace.as_deref() else {
                return Err(invalid_token("the token has been replaced"));
            };
            let mut secret = grace.secret.clone();
            let mut record = rec.clone();
            let commit = match update {
                Some(update) => {
                    if let Some(new) = apply_update(&mut record, update.metadata.clone(), fresh) {
                        secret = Some(new);
                    }
                    if record.secret.is_none() {
                        // The replayed body moved to a method without a secret.
                        secret = None;
                    }
                    if let Some(g) = record.grace.as_mut() {
                        g.secret.clone_from(&secret);
                    }
                    Commit::Replace(record.clone())
                }
                None => Commit::Nothing,
            };
            let token = Some(grace.token.clone());
            Ok((
                commit,
                Reply::Client {
                    record: Box::new(record),
                    token,
                    secret,
                },
            ))
        }
        Presented::Current => {
            let mut record = rec.clone();
            // The successor is being used: the replaced token is gone for good.
            let mut changed = record.grace.take().is_some();
            let mut new_secret = None;
            if let Some(update) = update {
                new_secret = apply_update(&mut record, update.metadata.clone(), fresh);
                changed = true;
            }
            if new_secret.is_none() && s.rotate_client_secret && record.secret.is_some() {
                record.secret = Some(fresh.secret_digest);
                new_secret = Some(fresh.secret.clone());
                changed = true;
            }
            let token = if s.reuse_registration_access_token {
                token.to_owned()
            } else {
                let replaced = record.reg_token.digest;
                record.reg_token = RegToken {
                    digest: fresh.token_digest,
                    issued_at: now,
                    revoked: false,
                };
                if s.rotation_grace > 0 {
                    record.grace = Some(Box::new(Grace {
                        replaced,
                        replaced_at: now,
                        token: fresh.token.clone(),
                        secret: new_secret.clone(),
                    }));
                }
                changed = true;
                fresh.token.clone()
            };
            let commit = if changed {
                Commit::Replace(record.clone())
            } else {
                Commit::Nothing
            };
            Ok((
                commit,
                Reply::Client {
                    record: Box::new(record),
                    token: Some(token),
                    secret: new_secret,
                },
            ))
        }
    }
}

/// Administrative management (dcrm): any registered client, no rotation.
fn decide_admin(
    rec: &ClientRecord,
    update: Option<&Update>,
    delete: bool,
    fresh: &Fresh,
) -> Result<(Commit, Reply), Error> {
    if delete {
        return Ok((Commit::Delete, Reply::Deleted));
    }
    let mut record = rec.clone();
    let (commit, secret) = match update {
        Some(update) => {
            check_update_against(rec, update, None, false)?;
            let secret = apply_update(&mut record, update.metadata.clone(), fresh);
            (Commit::Replace(record.clone()), secret)
        }
        None => (Commit::Nothing, None),
    };
    Ok((
        commit,
        Reply::Client {
            record: Box::new(record),
            token: None,
            secret,
        },
    ))
}

/// The record after revoking its registration token `digest`: the current one is marked
/// revoked, a just-replaced one loses its grace replay (SPEC §6a.26). `None` when `digest`
/// is neither.
fn decide_revoke(rec: &ClientRecord, digest: &Digest) -> Option<ClientRecord> {
    let mut record = rec.clone();
    let mut changed = false;
    if rec.reg_token.digest == *digest && !rec.reg_token.revoked {
        record.reg_token.revoked = true;
        changed = true;
    }
    if rec.grace.as_ref().is_some_and(|g| g.replaced == *digest) {
        record.grace = None;
        changed = true;
    }
    changed.then_some(record)
}

// === impl Registry ===

impl Registry {
    /// What `token` is at `/register/{..}`: a registration access token, or an access token
    /// allowed to manage clients (401 / 403 otherwise). `body`: the request carries one
    /// (a PUT), to be read only after this answer.
    pub async fn token_kind(
        &self,
        token: &str,
        cert: Option<&ClientCertificate>,
        body: bool,
    ) -> Result<TokenKind, Error> {
        let digest = secret::digest(token);
        // A request with a body reads it only once the token is known to be good.
        if let Some(rec) = self.store.recent_by_reg_token(&digest).filter(|_| !body) {
            return Ok(TokenKind::Registration(Prefetched {
                rec,
                current: false,
            }));
        }
        if let Some(rec) = self.store.client_by_reg_token(&digest).await? {
            return Ok(TokenKind::Registration(Prefetched { rec, current: true }));
        }
        let access = self.access_token(token, cert).await?;
        let scope = &self.settings.dcrm_scope;
        if !access.has_scope(scope) {
            return Err(Error::InsufficientScope(format!(
                "managing clients needs a registration access token or scope {scope:?}"
            )));
        }
        Ok(TokenKind::Admin)
    }

    /// Self-management with a registration access token (RFC 7592 §2, SPEC §4). `first` is
    /// the record `token_kind` already read, if any.
    pub async fn manage_self(
        &self,
        client_id: &str,
        token: &str,
        cert: Option<&ClientCertificate>,
        op: ManageOp,
        mut first: Option<Prefetched>,
    ) -> Result<Outcome, Error> {
        let digest = secret::digest(token);
        let (delete, mut body) = split(op);
        if body.is_some() {
            // A body is judged once, against a record known to be current.
            first = first.filter(|p| p.current);
        }
        let mut update = None;
        for _ in 0..ATTEMPTS {
            let (rec, current) = match first.take() {
                Some(p) => (p.rec, p.current),
                None => match self.store.client_by_reg_token(&digest).await? {
                    Some(rec) => (rec, true),
                    None => return Err(invalid_token("unknown, expired or revoked token")),
                },
            };
            match self
                .attempt(
                    client_id,
                    token,
                    &digest,
                    cert,
                    &rec,
                    current,
                    delete,
                    &mut body,
                    &mut update,
                )
                .await
            {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => continue,
                // A record that may be stale decides no refusal: the store's copy does.
                Err(_) if !current => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// One attempt of `manage_self` on `rec`: the answer, or `None` to read the record
    /// again (the commit conflicted, or a record that may be stale would commit nothing).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        client_id: &str,
        token: &str,
        digest: &Digest,
        cert: Option<&ClientCertificate>,
        rec: &ClientRecord,
        current: bool,
        delete: bool,
        body: &mut Option<Map<String, Value>>,
        update: &mut Option<Update>,
    ) -> Result<Option<Outcome>, Error> {
        if *rec.client_id != *client_id {
            if !current {
                return Ok(None);
            }
            // RFC 7592 §2.1: an unknown client means the token SHOULD be revoked. A token
            // of another existing client is merely not valid here (SPEC §6a.6).
            if !self.is_static(client_id) && self.store.client(client_id).await?.is_none() {
                self.revoke_on_unknown_client(rec, digest, cert).await?;
            }
            return Err(invalid_token("the token is not valid for this client"));
        }
        let now = self.now();
        let presented = check_presented(&self.settings, rec, digest, cert, delete, now)?;
        // The body is judged only after the token and certificate checks: a caller without
        // a valid token learns nothing about how its body would fare.
        if let Some(body) = body.take() {
            *update = Some(self.prepare_update(rec, body)?);
        }
        let fresh = Fresh::draw();
        let (commit, reply) = decide_self(
            &self.settings,
            rec,
            presented,
            update.as_ref(),
            delete,
            cert,
            token,
            &fresh,
            now,
        )?;
        if !current && matches!(commit, Commit::Nothing) {
            // Only a compare-and-set proves such a record current, and there is none.
            return Ok(None);
        }
        match self.commit(rec, commit).await {
            Ok(()) => Ok(Some(self.outcome(reply, now))),
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Administrative management with a `dcrm` token: any registered client, no rotation.
    /// The caller has already checked the token and its scope.
    pub async fn manage_admin(&self, client_id: &str, op: ManageOp) -> Result<Outcome, Error> {
        let (delete, mut body) = split(op);
        let mut update = None;
        for _ in 0..ATTEMPTS {
            // An unknown client is a 404 whatever the body says (SPEC §6a.7).
            let Some(rec) = self.store.client(client_id).await? else {
                return Err(Error::NotFound(format!(
                    "no registered client {client_id:?}"
                )));
            };
            if let Some(body) = body.take() {
                update = Some(self.prepare_update(&rec, body)?);
            }
            let (commit, reply) = decide_admin(&rec, update.as_ref(), delete, &Fresh::draw())?;
            match self.commit(&rec, commit).await {
                Ok(()) => return Ok(self.outcome(reply, self.now())),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Revokes the registration token `digest` (SPEC §6a.26), whichever client holds it.
    pub(super) async fn revoke_registration_token(&self, digest: &Digest) -> Result<(), Error> {
        for _ in 0..ATTEMPTS {
            let Some(rec) = self.store.client_by_reg_token(digest).await? else {
                return Ok(());
            };
            let Some(new) = decide_revoke(&rec, digest) else {
                return Ok(());
            };
            match self.store.replace(&rec, new).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// RFC 7592 §2.1 revocation — unless `require_same_certificate` binds the token to a
    /// certificate the caller did not present: a leaked bound token must not be enough to
    /// lock its client out (SPEC §6a.3).
    async fn revoke_on_unknown_client(
        &self,
        rec: &ClientRecord,
        digest: &Digest,
        cert: Option<&ClientCertificate>,
    ) -> Result<(), Error> {
        if self.settings.require_same_certificate && !same_certificate(rec, cert) {
            return Ok(());
        }
        self.revoke_registration_token(digest).await
    }

    async fn commit(&self, old: &ClientRecord, commit: Commit) -> Result<(), StoreError> {
        match commit {
            Commit::Nothing => Ok(()),
            Commit::Replace(new) => self.store.replace(old, new).await,
            Commit::Delete => {
                self.store.delete(old).await?;
                // Its access tokens died with it: on this node, at once for edge routes too.
                if let Some(cache) = &self.admissions {
                    cache.clear();
                }
                Ok(())
            }
        }
    }

    fn outcome(&self, reply: Reply, now: u64) -> Outcome {
        match reply {
            Reply::Deleted => Outcome::Deleted,
            Reply::Client {
                record,
                token,
                secret,
            } => Outcome::Client(self.response(&record, now, token, secret)),
        }
    }

    /// RFC 7592 §2.2 checks of the body, and its software statement (a client registered
    /// with one keeps its claims unless the PUT brings a new valid statement).
    fn prepare_update(
        &self,
        client: &ClientRecord,
        mut body: Map<String, Value>,
    ) -> Result<Update, Error> {
        let client_id: &str = &client.client_id;
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
        apply_statement(
            &self.settings,
            &self.issuers,
            &mut body,
            registered_statement(client),
            self.now(),
        )?;
        let metadata = ClientMetadata::parse(body, &self.settings.policy)?.into_registered()?;
        Ok(Update {
            metadata,
            presented_secret,
        })
    }
}

/// (is it a DELETE, the PUT body).
fn split(op: ManageOp) -> (bool, Option<Map<String, Value>>) {
    match op {
        ManageOp::Read => (false, None),
        ManageOp::Update(body) => (false, Some(body)),
        ManageOp::Delete => (true, None),
    }
}

/// PUT checks that need the current record (RFC 7592 §2.2, SPEC §4).
fn check_update_against(
    client: &ClientRecord,
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
        && !update.metadata.same_certificate_rules(&client.metadata)
    {
        // A client cannot widen who may authenticate as it: it must hold a certificate
        // that satisfies the new rules.
        let Some(cert) = cert else {
            return Err(bad(
                "changing the certificate-matching metadata requires presenting a certificate that satisfies it",
            ));
        };
        cert_match::satisfies(&update.metadata, cert).map_err(|e| bad(&e))?;
    }
    Ok(())
}

/// Replaces the metadata (values replace, never merge) and keeps the secret in step with
/// the auth method; returns a newly issued secret, if any.
fn apply_update(
    client: &mut ClientRecord,
    mut metadata: Registered,
    fresh: &Fresh,
) -> Option<String> {
    metadata.release_parsed();
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
