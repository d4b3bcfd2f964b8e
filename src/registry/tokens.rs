//! Access tokens: issue (client_credentials), validate, introspect, revoke, and the
//! initial access tokens that authorize registration (SPEC §5, §6a.8, §6a.21, §6a.25).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{Authenticated, Error, Registry, Settings};
use crate::identity::ClientCertificate;
use crate::json;
use crate::model::AccessToken;
use crate::secret::{self, Digest};

/// The `/token` success body (RFC 6749 §5.1).
pub struct TokenGrant {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: Option<String>,
}

impl TokenGrant {
    /// The answer's JSON. Written directly rather than through `serde`: this is the most
    /// served answer, and its member names need no escaping.
    pub fn to_json(&self) -> Vec<u8> {
        let scope = self.scope.as_deref();
        let mut out = Vec::with_capacity(96 + self.access_token.len() + scope.map_or(0, str::len));
        out.extend_from_slice(b"{\"access_token\":");
        json::push_str(&mut out, &self.access_token);
        out.extend_from_slice(b",\"token_type\":");
        json::push_str(&mut out, self.token_type);
        out.extend_from_slice(b",\"expires_in\":");
        json::push_u64(&mut out, self.expires_in);
        if let Some(scope) = scope {
            out.extend_from_slice(b",\"scope\":");
            json::push_str(&mut out, scope);
        }
        out.push(b'}');
        out
    }
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
#[derive(Debug)]
pub struct Introspection {
    /// What an active token tells; `None` is `{"active":false}`.
    pub details: Option<IntrospectionDetails>,
}

/// What an active token's introspection tells, read from its stored record.
#[derive(Debug)]
pub struct IntrospectionDetails {
    /// The record, shared with the store: written out, not copied.
    pub token: Arc<AccessToken>,
    pub cnf: Option<Confirmation>,
}

impl Introspection {
    /// The answer's JSON, written directly as [`TokenGrant::to_json`] is.
    pub fn to_json(&self) -> Vec<u8> {
        let Some(d) = &self.details else {
            return br#"{"active":false}"#.to_vec();
        };
        let t = &d.token;
        let mut out = Vec::with_capacity(160 + t.scope.len() + t.client_id.len());
        out.extend_from_slice(br#"{"active":true,"scope":"#);
        json::push_str(&mut out, &t.scope);
        out.extend_from_slice(br#","client_id":"#);
        json::push_str(&mut out, &t.client_id);
        out.extend_from_slice(br#","token_type":"Bearer","exp":"#);
        json::push_u64(&mut out, t.exp);
        out.extend_from_slice(br#","iat":"#);
        json::push_u64(&mut out, t.iat);
        if let Some(cnf) = &d.cnf {
            out.extend_from_slice(br#","cnf":{"x5t#S256":"#);
            json::push_str(&mut out, &cnf.x5t_s256);
            out.push(b'}');
        }
        out.push(b'}');
        out
    }
}

/// RFC 8705 §3.1: the certificate a token is bound to.
#[derive(Debug)]
pub struct Confirmation {
    /// base64url of the certificate's SHA-256 (`x5t#S256`).
    pub x5t_s256: String,
}

/// Why an edge route refused a request (SPEC §5a): the metric label, and the answer.
#[derive(Debug)]
pub struct Refused {
    pub reason: &'static str,
    pub error: Error,
}

impl Refused {
    fn new(reason: &'static str, error: Error) -> Self {
        Self { reason, error }
    }
}

/// An initial access token that authorized a registration.
#[derive(Debug, Clone, Copy)]
pub struct InitialAccess {
    /// The token whose use the registration spends; `None` for a wider token that merely
    /// includes the initial-access scope (SPEC §6a.21), which is not consumed.
    pub consumes: Option<Digest>,
}

/// Decides a `client_credentials` grant (RFC 6749 §4.4): the token's record and answer.
fn decide_grant(
    s: &Settings,
    client: &Authenticated,
    grant_type: Option<&str>,
    scope: Option<&str>,
    cert: Option<&ClientCertificate>,
    token: String,
    now: u64,
) -> Result<(AccessToken, TokenGrant), Error> {
    match grant_type {
        None => return Err(Error::InvalidRequest("grant_type is required".into())),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(Error::UnsupportedGrantType(format!(
                "grant_type {other:?} is not supported (supported: client_credentials)"
            )))
        }
    }
    if !client.rules().client_credentials {
        return Err(Error::UnauthorizedClient(
            "the client is not registered for the client_credentials grant".into(),
        ));
    }
    // The reserved scopes belong to static clients, whatever a registered client has
    // stored (SPEC §6a.25): they are never part of what it may be granted.
    let registered = || {
        client
            .metadata
            .scope_tokens()
            .filter(|t| client.is_static || (*t != s.dcrm_scope && *t != s.initial_access_scope))
    };
    // Built as one string in the order asked (or registered), each scope once.
    let mut granted = String::new();
    let mut grant = |t: &str| {
        if !granted.split(' ').any(|g| g == t) {
            if !granted.is_empty() {
                granted.push(' ');
            }
            granted.push_str(t);
        }
    };
    match scope {
        None => registered().for_each(&mut grant),
        Some(requested) => {
            for t in requested.split(' ').filter(|t| !t.is_empty()) {
                if !registered().any(|r| r == t) {
                    return Err(Error::InvalidScope(format!(
                        "scope {t:?} is not registered for this client"
                    )));
                }
                grant(t);
            }
        }
    }
    let initial = granted == s.initial_access_scope;
    let cnf = if initial {
        // Handed to the registering client: never bound (SPEC §6a.8).
        None
    } else if client.via_certificate || client.rules().bound_tokens {
        match cert {
            Some(c) => Some(c.sha256),
            None => return Err(Error::InvalidRequest(
                "this client's access tokens are certificate-bound: present the client certificate"
                    .into(),
            )),
        }
    } else {
        None
    };
    let record = AccessToken {
        client_id: client.client_id.to_string(),
        scope: granted.clone(),
        iat: now,
        exp: now.saturating_add(s.access_token_ttl),
        cnf,
        dynamic: !client.is_static,
        uses_left: initial.then_some(s.initial_access_token_uses),
    };
    let grant = TokenGrant {
        access_token: token,
        token_type: "Bearer",
        expires_in: s.access_token_ttl,
        scope: (!granted.is_empty()).then_some(granted),
    };
    Ok((record, grant))
}

// === impl Registry ===

impl Registry {
    /// `grant_type=client_credentials` for an authenticated client.
    pub async fn issue_token(
        &self,
        client: &Authenticated,
        grant_type: Option<&str>,
        scope: Option<&str>,
        cert: Option<&ClientCertificate>,
    ) -> Result<TokenGrant, Error> {
        let token = secret::generate();
        let digest = secret::digest(&token);
        let (record, grant) = decide_grant(
            &self.settings,
            client,
            grant_type,
            scope,
            cert,
            token,
            self.now(),
        )?;
        self.store
            .issue_token(digest, record, self.settings.max_active_per_client)
            .await?;
        Ok(grant)
    }

    /// Looks up an active access token (401 `invalid_token` otherwise), enforcing its
    /// certificate binding (RFC 8705 §3).
    pub async fn access_token(
        &self,
        token: &str,
        cert: Option<&ClientCertificate>,
    ) -> Result<Arc<AccessToken>, Error> {
        let invalid = |why: &str| Error::InvalidToken(why.to_owned());
        let found = self
            .store
            .access_token(&secret::digest(token))
            .await?
            .filter(|f| f.client_alive && f.token.is_live(self.now()));
        let Some(found) = found else {
            return Err(invalid("unknown, expired or revoked token"));
        };
        if let Some(bound) = found.token.cnf {
            if cert.is_none_or(|c| c.sha256 != bound) {
                return Err(invalid(
                    "the token is bound to a different client certificate",
                ));
            }
        }
        Ok(found.token)
    }

    /// Admission at an edge route (SPEC §5a): an access token issued by certgate, active,
    /// holding `required_scope` (if any), presented with the certificate it is bound to.
    /// Registration access tokens and initial access tokens are never admitted. With the
    /// shared store, a positive answer may come from this node's cache
    /// (`tokens.validation_cache_ttl`).
    pub async fn admit(
        &self,
        token: &str,
        cert: Option<&ClientCertificate>,
        required_scope: &str,
    ) -> Result<Arc<AccessToken>, Refused> {
        let invalid = |why: &str| Error::InvalidToken(why.to_owned());
        let unavailable = |e: Error| Refused::new("unavailable", e);
        let digest = secret::digest(token);
        let now = self.now();
        let cached = self.admissions.as_ref().and_then(|c| c.get(&digest));
        let record = match cached {
            Some(record) => record,
            None => {
                let found = self
                    .store
                    .access_token(&digest)
                    .await
                    .map_err(|e| unavailable(e.into()))?
                    .filter(|f| f.client_alive && f.token.is_live(now))
                    .map(|f| f.token);
                let Some(record) = found else {
                    return Err(Refused::new(
                        "invalid_token",
                        invalid("unknown, expired or revoked token"),
                    ));
                };
                if let Some(cache) = &self.admissions {
                    cache.put(digest, &record);
                }
                record
            }
        };
        if !record.is_live(now) {
            return Err(Refused::new(
                "invalid_token",
                invalid("the token has expired"),
            ));
        }
        if record.uses_left.is_some() {
            return Err(Refused::new(
                "invalid_token",
                invalid("an initial access token is for registration only"),
            ));
        }
        if let Some(bound) = record.cnf {
            if cert.is_none_or(|c| c.sha256 != bound) {
                return Err(Refused::new(
                    "certificate",
                    invalid("the token is bound to a different client certificate"),
                ));
            }
        }
        if !required_scope.is_empty() && !record.has_scope(required_scope) {
            return Err(Refused::new(
                "scope",
                Error::InsufficientScope(format!("this API needs scope {required_scope:?}")),
            ));
        }
        Ok(record)
    }

    /// Checks a Bearer token presented to `/register`: an initial access token (one use
    /// of it is spent by the registration) or a wider token that includes the
    /// initial-access scope (not spent, SPEC §6a.21).
    pub async fn initial_access(
        &self,
        token: &str,
        cert: Option<&ClientCertificate>,
    ) -> Result<InitialAccess, Error> {
        let record = self.access_token(token, cert).await?;
        if !record.has_scope(&self.settings.initial_access_scope) {
            return Err(Error::InsufficientScope(format!(
                "registration needs a token with scope {:?}",
                self.settings.initial_access_scope
            )));
        }
        Ok(InitialAccess {
            consumes: record.uses_left.map(|_| secret::digest(token)),
        })
    }

    /// RFC 7662: what `caller` may learn about `token`.
    pub async fn introspect(
        &self,
        caller: &Authenticated,
        token: &str,
    ) -> Result<Introspection, Error> {
        let inactive = Introspection { details: None };
        let Some(found) = self.store.access_token(&secret::digest(token)).await? else {
            return Ok(inactive);
        };
        let record = found.token;
        let allowed = caller.introspect || *caller.client_id == *record.client_id;
        if !allowed || !found.client_alive || !record.is_live(self.now()) {
            return Ok(inactive);
        }
        Ok(Introspection {
            details: Some(IntrospectionDetails {
                cnf: record.cnf.map(|t| Confirmation {
                    x5t_s256: URL_SAFE_NO_PAD.encode(t),
                }),
                token: record,
            }),
        })
    }

    /// RFC 7009: revokes `token` if `caller` may; unknown tokens are not an error.
    /// Registration access tokens can be revoked too, by their client (SPEC §6a.26).
    pub async fn revoke(&self, caller: &Authenticated, token: &str) -> Result<(), Error> {
        let digest = secret::digest(token);
        let may = |owner: &str| caller.introspect || &*caller.client_id == owner;
        let refused =
            || Error::UnauthorizedClient("the token was not issued to this client".into());
        if let Some(found) = self.store.access_token(&digest).await? {
            if !may(&found.token.client_id) {
                return Err(refused());
            }
            self.store.revoke_token(&digest).await?;
            // On this node revocation takes effect at once, also for edge routes.
            if let Some(cache) = &self.admissions {
                cache.forget(&digest);
            }
            return Ok(());
        }
        if let Some(rec) = self.store.client_by_reg_token(&digest).await? {
            if !may(&rec.client_id) {
                return Err(refused());
            }
            self.revoke_registration_token(&digest).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parsed(bytes: Vec<u8>) -> Value {
        crate::json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_token_answer_is_the_json_rfc_6749_5_1_names_escaped_where_it_must_be() {
        let grant = |scope: Option<&str>| TokenGrant {
            access_token: "tok-_123".into(),
            token_type: "Bearer",
            expires_in: 3600,
            scope: scope.map(Into::into),
        };
        assert_eq!(
            parsed(grant(Some("api:read dcr")).to_json()),
            json!({"access_token": "tok-_123", "token_type": "Bearer", "expires_in": 3600,
                   "scope": "api:read dcr"})
        );
        assert_eq!(
            parsed(grant(None).to_json()),
            json!({"access_token": "tok-_123", "token_type": "Bearer", "expires_in": 3600})
        );
        let odd = "q\"uote back\\slash \u{1} é";
        assert_eq!(parsed(grant(Some(odd)).to_json())["scope"], odd);
    }

    #[test]
    fn an_introspection_answer_is_the_json_rfc_7662_2_2_names() {
        let token = |client_id: &str, cnf| AccessToken {
            client_id: client_id.into(),
            scope: "api:read".into(),
            iat: 100,
            exp: u64::MAX,
            cnf,
            dynamic: true,
            uses_left: None,
        };
        let active = |t: AccessToken| Introspection {
            details: Some(IntrospectionDetails {
                cnf: t.cnf.map(|c| Confirmation {
                    x5t_s256: URL_SAFE_NO_PAD.encode(c),
                }),
                token: Arc::new(t),
            }),
        };
        let inactive = Introspection { details: None };
        assert_eq!(parsed(inactive.to_json()), json!({"active": false}));
        assert_eq!(
            parsed(active(token("c1", Some([7; 32]))).to_json()),
            json!({"active": true, "scope": "api:read", "client_id": "c1",
                   "token_type": "Bearer", "exp": u64::MAX, "iat": 100,
                   "cnf": {"x5t#S256": URL_SAFE_NO_PAD.encode([7; 32])}})
        );
        let odd = "static \"admin\"\n";
        let v = parsed(active(token(odd, None)).to_json());
        assert_eq!(v["client_id"], odd);
        assert!(v.get("cnf").is_none(), "{v}");
    }
}
