//! The caller's certificate identity: thumbprint, subject DN, SANs, chain status, source.
//!
//! Computed once per TLS connection (or once per proxied request) and shared as an `Arc`.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dashmap::DashMap;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use serde::Serialize;

use crate::dn::{rfc4514, Dn};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

/// Where a certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// The TLS handshake on certgate's own listener.
    Tls,
    /// A header set by a trusted reverse proxy.
    Proxy,
}

/// Subject alternative names, grouped the way RFC 8705 §2.1.2 matches them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub email: Vec<String>,
}

/// One client certificate as certgate sees it.
#[derive(Clone, Debug)]
pub struct ClientCertificate {
    /// The leaf certificate's DER bytes.
    pub der: CertificateDer<'static>,
    /// `x5t#S256` (RFC 8705 §3.1).
    pub thumbprint: String,
    /// The raw SHA-256 behind the thumbprint (compared without re-encoding).
    pub sha256: [u8; 32],
    /// Subject DN in RFC 4514 string form.
    pub subject: String,
    /// The subject, parsed for distinguished-name matching (`dn`).
    pub subject_dn: Dn,
    /// Subject alternative names.
    pub san: SubjectAltNames,
    /// Whether the chain verifies against `tls.client_ca`.
    pub chain_verified: bool,
    /// Handshake or proxy header.
    pub source: CertSource,
    /// The leaf's notAfter (Unix seconds): a cached identity is not trusted past it.
    pub not_after: i64,
}

/// Why a certificate could not be turned into an identity.
#[derive(Debug, PartialEq, Eq)]
pub struct IdentityError(pub String);

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityError {}

/// `x5t#S256`: base64url (no padding) of SHA-256 over the DER.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

// === impl ClientCertificate ===

impl ClientCertificate {
    /// Parses the leaf of `chain` (leaf first) and checks the chain with `verifier`.
    pub fn from_chain(
        chain: &[CertificateDer<'_>],
        verifier: &dyn ClientCertVerifier,
        source: CertSource,
    ) -> Result<Arc<Self>, IdentityError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| IdentityError("empty certificate chain".into()))?;
        let (rest, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| IdentityError(format!("certificate is not valid DER X.509: {e}")))?;
        if !rest.is_empty() {
            return Err(IdentityError("trailing bytes after the certificate".into()));
        }
        let subject = rfc4514(cert.subject());
        let subject_dn = Dn::from_x509(cert.subject());
        let san = subject_alt_names(&cert)?;
        let chain_verified = verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok();
        let sha256: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        Ok(Arc::new(Self {
            der: leaf.clone().into_owned(),
            subject_dn,
            thumbprint: URL_SAFE_NO_PAD.encode(sha256),
            sha256,
            subject,
            san,
            chain_verified,
            source,
            not_after: cert.validity().not_after.timestamp(),
        }))
    }

    /// Roughly the heap bytes this identity holds (for the cache's byte budget).
    pub fn weight(&self) -> usize {
        let san = &self.san;
        std::mem::size_of::<Self>()
            + self.der.len()
            + self.thumbprint.len()
            + self.subject.len()
            + self.subject.len() * 2
            + san
                .dns
                .iter()
                .chain(&san.uri)
                .chain(&san.email)
                .map(String::len)
                .sum::<usize>()
            + san.ip.len() * std::mem::size_of::<IpAddr>()
    }

    /// The JSON shape `GET /identity` returns.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "x5t#S256": self.thumbprint,
            "subject": self.subject,
            "san": self.san,
            "chain_verified": self.chain_verified,
            "source": self.source,
        })
    }
}

/// Identities already computed, for one generation of the TLS files: a returning client's
/// chain is neither parsed nor verified again on every connection or proxied request.
///
/// Bounded in bytes, not only entries (SPEC §8): one key can sign any number of fresh
/// self-signed certificates of up to ~60 KiB each. When the budget is spent the cache
/// starts over, which costs returning clients one verification each.
pub struct IdentityCache {
    entries: DashMap<[u8; 32], (Arc<ClientCertificate>, i64)>,
    bytes: std::sync::atomic::AtomicUsize,
    budget: usize,
}

impl Default for IdentityCache {
    fn default() -> Self {
        Self::with_budget(CACHE_BYTES)
    }
}

/// Bytes of certificates the cache may hold before it starts over.
const CACHE_BYTES: usize = 32 << 20;

/// Entries kept before the cache starts over, however small they are.
const CACHE_CAPACITY: usize = 50_000;

/// How long a verification result is reused, at most.
const CACHE_TTL: i64 = 300;

impl IdentityCache {
    /// A cache holding at most `budget` bytes of identities.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            entries: DashMap::default(),
            bytes: std::sync::atomic::AtomicUsize::new(0),
            budget,
        }
    }

    /// Bytes of identities held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `ClientCertificate::from_chain`, remembered per exact chain and source.
    pub fn identify(
        &self,
        chain: &[CertificateDer<'_>],
        verifier: &dyn ClientCertVerifier,
        source: CertSource,
    ) -> Result<Arc<ClientCertificate>, IdentityError> {
        use std::sync::atomic::Ordering;
        let mut h = Sha256::new();
        h.update([source as u8]);
        for cert in chain {
            h.update((cert.len() as u32).to_le_bytes());
            h.update(cert.as_ref());
        }
        let key: [u8; 32] = h.finalize().into();
        let now = UnixTime::now().as_secs() as i64;
        if let Some(entry) = self.entries.get(&key) {
            if now < entry.1 {
                return Ok(entry.0.clone());
            }
        }
        let identity = ClientCertificate::from_chain(chain, verifier, source)?;
        let size = identity.weight();
        let used = self.bytes.fetch_add(size, Ordering::Relaxed) + size;
        if used > self.budget || self.entries.len() >= CACHE_CAPACITY {
            self.entries.clear();
            self.bytes.store(size, Ordering::Relaxed);
        }
        let until = (now + CACHE_TTL).min(identity.not_after);
        self.entries.insert(key, (identity.clone(), until));
        Ok(identity)
    }
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Result<SubjectAltNames, IdentityError> {
    let mut out = SubjectAltNames::default();
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError(format!("bad subjectAltName extension: {e}")))?;
    let Some(ext) = ext else { return Ok(out) };
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(s) => out.dns.push((*s).to_owned()),
            GeneralName::URI(s) => out.uri.push((*s).to_owned()),
            GeneralName::RFC822Name(s) => out.email.push((*s).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => out
                    .ip
                    .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                16 => out
                    .ip
                    .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                _ => return Err(IdentityError("malformed IP address SAN".into())),
            },
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_cache_stays_within_its_byte_budget() {
        use rustls::pki_types::pem::PemObject as _;
        let pem = |name: &str| CertificateDer::from_pem_file(format!("certs/{name}.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem("ca")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let names = ["client1", "client2", "admin", "selfsigned", "untrusted"];
        let one =
            ClientCertificate::from_chain(&[pem("client1")], verifier.as_ref(), CertSource::Tls)
                .unwrap()
                .weight();
        let cache = IdentityCache::with_budget(2 * one + one / 2);
        for round in 0..3 {
            for name in names {
                for source in [CertSource::Tls, CertSource::Proxy] {
                    let id = cache
                        .identify(&[pem(name)], verifier.as_ref(), source)
                        .unwrap();
                    assert_eq!(id.thumbprint, thumbprint(pem(name).as_ref()));
                    assert!(
                        cache.bytes() <= 2 * one + one / 2,
                        "round {round}: {} bytes cached",
                        cache.bytes()
                    );
                }
            }
        }
    }

    #[test]
    fn thumbprint_is_base64url_sha256_without_padding() {
        // SHA-256 of the empty string.
        assert_eq!(
            thumbprint(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
