//! Software statements (RFC 7591 §2.3, §3.1.1; SPEC §3): a directory signs what it knows
//! about a piece of software, and certgate trusts the directory, not the request.
//!
//! A statement is a JWS in compact serialization. It is accepted only when its `alg` is
//! RS256, PS256, ES256 or EdDSA (never `none`, never an HMAC), its `iss` is a configured
//! issuer, its signature verifies with a key from that issuer's JWKS file (chosen by `kid`
//! when the header has one; never fetched from `jku`/`x5u`), and its times hold (60 s
//! leeway; `software_statement_max_age` bounds `iat`). The cryptography is `jsonwebtoken`'s;
//! this module only chooses the key and reads the claims.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::metadata::MetadataError;

/// Clock skew allowed on `exp`, `iat` and `nbf`.
pub const LEEWAY: u64 = 60;

/// Claims about the statement itself, never registered as client metadata.
const ENVELOPE: [&str; 5] = ["iss", "iat", "exp", "nbf", "jti"];

/// One trusted issuer's public keys.
struct Issuer {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    kind: KeyKind,
    decoding: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

/// The configured issuers and their keys; reloadable (SIGHUP).
pub struct Issuers {
    files: Vec<(String, PathBuf)>,
    keys: RwLock<Arc<HashMap<String, Issuer>>>,
}

impl Issuers {
    /// Loads every issuer's JWKS file; an error names the issuer and the file.
    pub fn load(files: Vec<(String, PathBuf)>) -> Result<Self, String> {
        let keys = read_all(&files)?;
        Ok(Self {
            files,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    /// Reads the files again; on error the keys in force stay.
    pub fn reload(&self) -> Result<(), String> {
        let keys = Arc::new(read_all(&self.files)?);
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
        Ok(())
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn current(&self) -> Arc<HashMap<String, Issuer>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Verifies `jws` and returns its claims that are client metadata (everything but the
    /// envelope claims). `max_age` > 0 requires `iat`, at most that many seconds old.
    pub fn verify(
        &self,
        jws: &str,
        now: u64,
        max_age: u64,
    ) -> Result<Map<String, Value>, MetadataError> {
        let (header, claims) = parse(jws)?;
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => Algorithm::RS256,
            Some("PS256") => Algorithm::PS256,
            Some("ES256") => Algorithm::ES256,
            Some("EdDSA") => Algorithm::EdDSA,
            Some(other) => {
                return Err(invalid(format!(
                    "alg {other:?} is not accepted (RS256, PS256, ES256, EdDSA)"
                )))
            }
            None => return Err(invalid("the header has no alg".into())),
        };
        if header.contains_key("crit") {
            // No extension is understood, so none may be critical (RFC 7515 §4.1.11).
            return Err(invalid(
                "critical header extensions are not supported".into(),
            ));
        }
        let iss = match claims.get("iss") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(invalid("the statement has no iss".into())),
        };
        let issuers = self.current();
        let Some(issuer) = issuers.get(&iss) else {
            return Err(MetadataError::UnapprovedSoftwareStatement(format!(
                "issuer {iss:?} is not trusted by this server"
            )));
        };
        let kind = match alg {
            Algorithm::RS256 | Algorithm::PS256 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::P256,
            _ => KeyKind::Ed25519,
        };
        let kid = header.get("kid").and_then(Value::as_str);
        let candidates: Vec<&Key> = issuer
            .keys
            .iter()
            .filter(|k| k.kind == kind && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .collect();
        if candidates.is_empty() {
            return Err(invalid(match kid {
                Some(kid) => format!("issuer {iss:?} has no {alg:?} key with kid {kid:?}"),
                None => format!("issuer {iss:?} has no {alg:?} key"),
            }));
        }
        let (message, signature) = jws
            .rsplit_once('.')
            .ok_or_else(|| invalid("not a compact JWS".into()))?;
        let verified = candidates.iter().any(|k| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &k.decoding, alg)
                .unwrap_or(false)
        });
        if !verified {
            return Err(invalid("the signature does not verify".into()));
        }
        check_times(&claims, now, max_age)?;
        Ok(claims
            .into_iter()
            .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()))
            .collect())
    }
}

/// The metadata claims of a statement that was verified when it was registered (a PUT keeps
/// them): decoded, not verified again.
pub fn registered_claims(jws: &str) -> Option<Map<String, Value>> {
    let (_, claims) = parse(jws).ok()?;
    Some(
        claims
            .into_iter()
            .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()))
            .collect(),
    )
}

fn invalid(why: String) -> MetadataError {
    MetadataError::InvalidSoftwareStatement(why)
}

/// A JSON object.
type Object = Map<String, Value>;

/// Splits a compact JWS into its header and claims (JSON objects, strictly parsed).
fn parse(jws: &str) -> Result<(Object, Object), MetadataError> {
    let parts: Vec<&str> = jws.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(invalid("not a compact JWS (three base64url parts)".into()));
    };
    if signature.is_empty() {
        return Err(invalid("the statement is not signed".into()));
    }
    let object = |part: &str, what: &str| -> Result<Object, MetadataError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| invalid(format!("the {what} is not base64url")))?;
        match crate::json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(invalid(format!("the {what} is not a JSON object"))),
        }
    };
    Ok((object(header, "header")?, object(payload, "payload")?))
}

/// `exp` not past, `iat`/`nbf` not in the future (with leeway); `max_age` bounds `iat`.
fn check_times(claims: &Map<String, Value>, now: u64, max_age: u64) -> Result<(), MetadataError> {
    let time = |name: &str| -> Result<Option<u64>, MetadataError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} is not a NumericDate"))),
        }
    };
    if let Some(exp) = time("exp")? {
        if now >= exp.saturating_add(LEEWAY) {
            return Err(invalid("the statement has expired".into()));
        }
    }
    for name in ["iat", "nbf"] {
        if let Some(t) = time(name)? {
            if t > now.saturating_add(LEEWAY) {
                return Err(invalid(format!("{name} is in the future")));
            }
        }
    }
    if max_age > 0 {
        let Some(iat) = time("iat")? else {
            return Err(invalid(
                "iat is required (registration.software_statement_max_age)".into(),
            ));
        };
        if now.saturating_sub(iat) > max_age {
            return Err(invalid(format!(
                "the statement is older than {max_age} s (registration.software_statement_max_age)"
            )));
        }
    }
    Ok(())
}

fn read_all(files: &[(String, PathBuf)]) -> Result<HashMap<String, Issuer>, String> {
    files
        .iter()
        .enumerate()
        .map(|(i, (iss, path))| {
            read_jwks(path)
                .map(|keys| (iss.clone(), Issuer { keys }))
                .map_err(|e| {
                    format!(
                        "registration.software_statement_issuers[{i}] ({iss}): jwks_file {}: {e}",
                        path.display()
                    )
                })
        })
        .collect()
}

/// An issuer's public keys: RSA, EC P-256 and Ed25519 only; a private or symmetric key in
/// the file is an error (it has no business there).
fn read_jwks(path: &Path) -> Result<Vec<Key>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let raw: Value =
        crate::json::from_slice(text.as_bytes()).map_err(|e| format!("not JSON: {e}"))?;
    for key in raw
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            if key.get(private).is_some() {
                return Err(format!(
                    "a key has the private member {private:?}: publish public keys only"
                ));
            }
        }
    }
    let set: JwkSet = serde_json::from_value(raw).map_err(|e| format!("not a JWK Set: {e}"))?;
    if set.keys.is_empty() {
        return Err("no keys".into());
    }
    set.keys.iter().map(key).collect()
}

fn key(jwk: &Jwk) -> Result<Key, String> {
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => KeyKind::P256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        _ => return Err("only RSA, EC P-256 and Ed25519 keys are accepted".into()),
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        kind,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn times_hold_with_leeway_and_max_age() {
        let now = 1_000_000;
        assert!(check_times(&claims(json!({"exp": now + 10})), now, 0).is_ok());
        assert!(check_times(&claims(json!({"exp": now - 30})), now, 0).is_ok());
        assert!(check_times(&claims(json!({"exp": now - 61})), now, 0).is_err());
        assert!(check_times(&claims(json!({"iat": now + 59})), now, 0).is_ok());
        assert!(check_times(&claims(json!({"iat": now + 61})), now, 0).is_err());
        assert!(check_times(&claims(json!({"nbf": now + 61})), now, 0).is_err());
        assert!(check_times(&claims(json!({})), now, 300).is_err());
        assert!(check_times(&claims(json!({"iat": now - 300})), now, 300).is_ok());
        assert!(check_times(&claims(json!({"iat": now - 301})), now, 300).is_err());
        assert!(check_times(&claims(json!({"exp": "soon"})), now, 0).is_err());
    }

    #[test]
    fn malformed_statements_are_invalid() {
        for jws in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.c2ln",
            "e30.e30.",
            "W10.e30.c2ln",
        ] {
            assert!(
                matches!(parse(jws), Err(MetadataError::InvalidSoftwareStatement(_))),
                "{jws:?}"
            );
        }
    }
}
