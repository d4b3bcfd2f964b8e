//! rustls server configuration: server certificate, client-certificate policy, reload.
//!
//! The handshake accepts any client certificate whose handshake signature verifies, because
//! `self_signed_tls_client_auth` (RFC 8705 §2.2) needs self-signed certificates to get
//! through. Whether the chain verifies against `tls.client_ca` is decided once per connection
//! afterwards (`identity`), and enforced by the rules that need it.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsConfig};
use crate::identity::{CertSource, ClientCertificate, IdentityCache, IdentityError};

/// A TLS set-up problem, naming the file at fault.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// What one generation of the TLS files yields.
pub struct TlsState {
    /// Accepts handshakes on the TLS listener.
    pub acceptor: TlsAcceptor,
    /// Checks client chains against `tls.client_ca` (both listeners use it).
    pub chain_verifier: Arc<dyn ClientCertVerifier>,
    /// Identities computed under this client CA.
    pub identities: IdentityCache,
    /// Counts reloads: an identity judged under another generation is judged again.
    pub generation: u64,
}

impl TlsState {
    /// The identity of a presented chain (leaf first), cached.
    pub fn identify(
        &self,
        chain: &[CertificateDer<'_>],
        source: CertSource,
    ) -> Result<Arc<ClientCertificate>, IdentityError> {
        self.identities
            .identify(chain, self.chain_verifier.as_ref(), source)
    }
}

/// The reloadable TLS state (SIGHUP swaps it; open connections keep the old one).
pub struct Tls {
    config: TlsConfig,
    // A std lock is fine: it is held only to clone an Arc, never across `.await`.
    state: RwLock<Arc<TlsState>>,
}

// === impl Tls ===

impl Tls {
    /// Loads certificate, key and client CA, failing with a message that names the file.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let state = build(config, 0)?;
        Ok(Self {
            config: config.clone(),
            state: RwLock::new(Arc::new(state)),
        })
    }

    /// The state new handshakes use.
    pub fn current(&self) -> Arc<TlsState> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files; on error the old state stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let new = Arc::new(build(&self.config, self.current().generation + 1)?);
        match self.state.write() {
            Ok(mut s) => *s = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(config: &TlsConfig, generation: u64) -> Result<TlsState, TlsError> {
    let provider = provider();
    let certs = read_certs(&config.cert, "tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
        TlsError(format!(
            "tls.key: {}: no usable private key: {e}",
            config.key.display()
        ))
    })?;
    let chain_verifier = client_chain_verifier(&config.client_ca, provider.clone())?;
    let verifier = Arc::new(AnyClientCert {
        algorithms: provider.signature_verification_algorithms,
        mandatory: config.client_auth == ClientAuth::Required,
    });
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("tls: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "tls.cert / tls.key: {} and {} do not form a usable pair: {e}",
                config.cert.display(),
                config.key.display()
            ))
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsState {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        chain_verifier,
        identities: IdentityCache::default(),
        generation,
    })
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{key}: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{key}: {}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// The verifier that decides `chain_verified` (anonymous clients are allowed through it;
/// callers only ask it about certificates they have).
fn client_chain_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "tls.client_ca")? {
        roots.add(cert).map_err(|e| {
            TlsError(format!(
                "tls.client_ca: {}: not a usable CA: {e}",
                path.display()
            ))
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError(format!("tls.client_ca: {}: {e}", path.display())))
}

/// Accepts any client certificate at the TLS layer but always verifies the handshake
/// signature, so the peer provably holds the certificate's private key.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA hints: clients holding self-signed certificates must not filter theirs out
        // (RFC 8705 §2.2).
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
