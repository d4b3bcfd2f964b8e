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

use crate::config::{ClientAuth, ProxyConfig, TlsConfig};
use crate::dn::Dn;
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
    /// The proxy listener's TLS (`proxy.tls`), if it speaks HTTPS.
    pub proxy: Option<ProxyTls>,
}

/// The proxy listener over TLS, and how a proxy proves who it is (SPEC §1).
pub struct ProxyTls {
    /// Accepts handshakes on the proxy listener.
    pub acceptor: TlsAcceptor,
    /// `proxy.trusted_proxy_subjects` and the CA their certificates chain to; `None` when
    /// proxies are trusted by address alone.
    subjects: Option<(Vec<Dn>, Arc<dyn ClientCertVerifier>)>,
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

    /// Whether a peer of the proxy listener that presented `chain` (leaf first; empty: no
    /// certificate) may forward certificates, as far as its certificate goes; `Err` says why
    /// not. The address is checked separately.
    pub fn judge_proxy(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let Some((subjects, verifier)) = self.proxy.as_ref().and_then(|p| p.subjects.as_ref())
        else {
            return Ok(());
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("it presented no certificate (proxy.trusted_proxy_subjects is set)".into());
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| format!("its certificate does not verify against proxy.client_ca: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("its certificate does not parse: {e}"))?;
        let subject = Dn::from_x509(cert.subject());
        if subjects.iter().any(|s| s.matches(&subject)) {
            Ok(())
        } else {
            Err(format!(
                "its certificate subject {:?} is not in proxy.trusted_proxy_subjects",
                crate::dn::rfc4514(cert.subject())
            ))
        }
    }
}

/// The reloadable TLS state (SIGHUP swaps it; open connections keep the old one).
pub struct Tls {
    config: TlsConfig,
    proxy: ProxyConfig,
    // A std lock is fine: it is held only to clone an Arc, never across `.await`.
    state: RwLock<Arc<TlsState>>,
}

// === impl Tls ===

impl Tls {
    /// Loads certificate, key and client CAs, failing with a message that names the file.
    pub fn load(config: &TlsConfig, proxy: &ProxyConfig) -> Result<Self, TlsError> {
        let state = build(config, proxy, 0)?;
        Ok(Self {
            config: config.clone(),
            proxy: proxy.clone(),
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
        let new = Arc::new(build(
            &self.config,
            &self.proxy,
            self.current().generation + 1,
        )?);
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

fn build(config: &TlsConfig, proxy: &ProxyConfig, generation: u64) -> Result<TlsState, TlsError> {
    let provider = provider();
    let certs = read_certs(&config.cert, "tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
        TlsError(format!(
            "tls.key: {}: no usable private key: {e}",
            config.key.display()
        ))
    })?;
    let chain_verifier = client_chain_verifier(&config.client_ca, "tls.client_ca", &provider)?;
    let verifier = Arc::new(AnyClientCert {
        algorithms: provider.signature_verification_algorithms,
        mandatory: config.client_auth == ClientAuth::Required,
        offered: true,
    });
    let server = server_config(config, &provider, verifier, certs.clone(), key.clone_key())?;
    let proxy = if proxy.tls {
        let subjects = if proxy.trusted_proxy_subjects.is_empty() {
            None
        } else {
            // `Config::validate` parsed each subject already.
            let dns = proxy
                .trusted_proxy_subjects
                .iter()
                .filter_map(|s| Dn::parse(s))
                .collect();
            let (path, key) = if proxy.client_ca.as_os_str().is_empty() {
                (&config.client_ca, "tls.client_ca")
            } else {
                (&proxy.client_ca, "proxy.client_ca")
            };
            Some((dns, client_chain_verifier(path, key, &provider)?))
        };
        // A certificate is only asked for when one is checked; it is judged after the
        // handshake, so a proxy with the wrong one is told why in the log, not by an alert.
        let verifier = Arc::new(AnyClientCert {
            algorithms: provider.signature_verification_algorithms,
            mandatory: false,
            offered: subjects.is_some(),
        });
        let server = server_config(config, &provider, verifier, certs, key)?;
        Some(ProxyTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            subjects,
        })
    } else {
        None
    };
    Ok(TlsState {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        chain_verifier,
        identities: IdentityCache::default(),
        generation,
        proxy,
    })
}

fn server_config(
    config: &TlsConfig,
    provider: &Arc<CryptoProvider>,
    verifier: Arc<AnyClientCert>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut server = ServerConfig::builder_with_provider(provider.clone())
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
    Ok(server)
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
    key: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, key)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{key}: {}: not a usable CA: {e}", path.display())))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError(format!("{key}: {}: {e}", path.display())))
}

/// Accepts any client certificate at the TLS layer but always verifies the handshake
/// signature, so the peer provably holds the certificate's private key.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
    mandatory: bool,
    /// Whether the handshake asks for a certificate at all.
    offered: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        self.offered
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
