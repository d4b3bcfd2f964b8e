//! JSON Web Keys a client registers in `jwks` (RFC 7517): public keys only, of a type
//! certgate can hold to a certificate, and `x5c` certificates that really carry the key.
//!
//! A `jwks` is what `self_signed_tls_client_auth` trusts, so a key set that smuggles a
//! private key, a symmetric secret, or an `x5c` certificate of some other key is refused at
//! registration rather than stored (SPEC §3).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// SHA-256 of every `x5c` leaf in a JWK Set.
pub fn jwks_thumbprints(
    jwks: Option<&serde_json::Map<String, serde_json::Value>>,
) -> impl Iterator<Item = [u8; 32]> + '_ {
    jwks.into_iter()
        .flat_map(|jwks| {
            jwks.get("keys")
                .and_then(|k| k.as_array())
                .into_iter()
                .flatten()
        })
        .filter_map(|key| key.get("x5c")?.as_array()?.first()?.as_str())
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .map(|der| Sha256::digest(der).into())
}

/// Members that only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks one key of a `jwks`; the error says what is wrong with it.
pub fn check_key(key: &Map<String, Value>) -> Result<(), String> {
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| key.contains_key(**m)) {
        return Err(format!(
            "jwks keys must be public keys: a key has the private member {member:?}"
        ));
    }
    let public = PublicKey::from_jwk(key)?;
    let Some(x5c) = key.get("x5c") else {
        return Ok(());
    };
    let chain = x5c
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("jwks x5c must be a non-empty array of base64 DER certificates")?;
    for (i, entry) in chain.iter().enumerate() {
        let der = entry
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| format!("jwks x5c[{i}] is not base64"))?;
        let cert = match X509Certificate::from_der(&der) {
            Ok(([], cert)) => cert,
            _ => return Err(format!("jwks x5c[{i}] is not a DER X.509 certificate")),
        };
        // RFC 7517 §4.7: the first certificate holds the key; the rest certify it.
        if i == 0 && PublicKey::from_certificate(&cert).as_ref() != Some(&public) {
            return Err("the public key of jwks x5c[0] is not the key the JWK describes".into());
        }
    }
    Ok(())
}

/// A public key in a comparable form.
#[derive(Debug, PartialEq, Eq)]
enum PublicKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa(Vec<u8>, Vec<u8>),
    /// Curve name and the uncompressed point `04 || x || y`.
    Ec(&'static str, Vec<u8>),
    /// Curve name and the raw public key.
    Okp(&'static str, Vec<u8>),
}

impl PublicKey {
    fn from_jwk(key: &Map<String, Value>) -> Result<Self, String> {
        let member = |name: &str| -> Result<Vec<u8>, String> {
            key.get(name)
                .and_then(Value::as_str)
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| format!("a jwks key lacks a base64url {name:?}"))
        };
        let curve = |known: &[&'static str]| -> Result<&'static str, String> {
            let crv = key.get("crv").and_then(Value::as_str).unwrap_or("");
            known
                .iter()
                .find(|c| **c == crv)
                .copied()
                .ok_or_else(|| format!("unsupported jwks curve {crv:?}"))
        };
        match key.get("kty").and_then(Value::as_str) {
            Some("RSA") => Ok(Self::Rsa(unsigned(&member("n")?), unsigned(&member("e")?))),
            Some("EC") => {
                let crv = curve(&["P-256", "P-384", "P-521"])?;
                let mut point = vec![4u8];
                point.extend(member("x")?);
                point.extend(member("y")?);
                Ok(Self::Ec(crv, point))
            }
            Some("OKP") => Ok(Self::Okp(
                curve(&["Ed25519", "Ed448", "X25519", "X448"])?,
                member("x")?,
            )),
            Some(other) => Err(format!(
                "jwks key type {other:?} is not supported (RSA, EC, OKP)"
            )),
            None => Err("every jwks key needs a \"kty\"".into()),
        }
    }

    fn from_certificate(cert: &X509Certificate<'_>) -> Option<Self> {
        let spki = cert.public_key();
        let raw = spki.subject_public_key.data.to_vec();
        let named = |oid: &str| -> Option<&'static str> {
            Some(match oid {
                "1.2.840.10045.3.1.7" => "P-256",
                "1.3.132.0.34" => "P-384",
                "1.3.132.0.35" => "P-521",
                "1.3.101.112" => "Ed25519",
                "1.3.101.113" => "Ed448",
                "1.3.101.110" => "X25519",
                "1.3.101.111" => "X448",
                _ => return None,
            })
        };
        match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.113549.1.1.1" => match spki.parsed().ok()? {
                x509_parser::public_key::PublicKey::RSA(rsa) => {
                    Some(Self::Rsa(unsigned(rsa.modulus), unsigned(rsa.exponent)))
                }
                _ => None,
            },
            "1.2.840.10045.2.1" => {
                let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
                Some(Self::Ec(named(&curve.to_id_string())?, raw))
            }
            oid => Some(Self::Okp(named(oid)?, raw)),
        }
    }
}

/// A big-endian unsigned integer without its leading zero bytes.
fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn private_and_symmetric_keys_are_refused() {
        let e = check_key(&key(json!({"kty": "oct", "k": "c2VjcmV0"}))).unwrap_err();
        assert!(e.contains("\"k\""), "{e}");
        let e = check_key(&key(
            json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}),
        ))
        .unwrap_err();
        assert!(e.contains("\"d\""), "{e}");
    }

    #[test]
    fn only_rsa_ec_and_okp_with_their_members() {
        assert!(check_key(&key(json!({"kty": "oct"}))).is_err());
        assert!(check_key(&key(json!({"kty": "RSA", "n": "AQAB"}))).is_err());
        assert!(check_key(&key(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}))).is_ok());
        assert!(check_key(&key(
            json!({"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA"})
        ))
        .is_err());
        assert!(check_key(&key(json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}))).is_ok());
    }

    #[test]
    fn leading_zeros_do_not_matter_for_rsa() {
        assert_eq!(unsigned(&[0, 0, 1, 2]), vec![1, 2]);
        assert_eq!(unsigned(&[0]), Vec::<u8>::new());
    }
}
