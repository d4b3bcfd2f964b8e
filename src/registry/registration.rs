//! RFC 7591 registration: who may register, and what a new client record holds.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{apply_statement, ClientResponse, Error, Fresh, Registry, Settings};
use crate::cert_match;
use crate::config::RegistrationAuth;
use crate::identity::{CertSource, ClientCertificate};
use crate::metadata::{ClientMetadata, MetadataError};
use crate::model::{ClientRecord, RegToken};
use crate::secret::Digest;
use crate::statement::Issuers;

/// Checks `registration.authentication` (SPEC §3): any one accepted way suffices.
///
/// `initial_access` says whether the request carried a valid initial access token
/// (checked by the token layer); certificates must chain to `tls.client_ca`.
pub fn authorize(
    settings: &Settings,
    cert: Option<&ClientCertificate>,
    initial_access: bool,
) -> Result<(), Error> {
    let ways = &settings.authentication;
    if ways.is_empty() {
        return Ok(());
    }
    let verified = |source| cert.is_some_and(|c| c.source == source && c.chain_verified);
    let ok = ways.iter().any(|way| match way {
        RegistrationAuth::MutualTls => verified(CertSource::Tls),
        RegistrationAuth::MutualTlsByProxy => verified(CertSource::Proxy),
        RegistrationAuth::InitialAccessToken => initial_access,
    });
    if ok {
        return Ok(());
    }
    let mut why = match cert {
        Some(c) if !c.chain_verified => {
            "the client certificate does not chain to a trusted CA".to_owned()
        }
        Some(_) => "the client certificate did not arrive in an accepted way".to_owned(),
        None => "registration requires authentication".to_owned(),
    };
    let accepted: Vec<&str> = ways
        .iter()
        .map(|w| match w {
            RegistrationAuth::MutualTls => "mutual-tls",
            RegistrationAuth::MutualTlsByProxy => "mutual-tls-by-proxy",
            RegistrationAuth::InitialAccessToken => "initial-access-token",
        })
        .collect();
    why.push_str(&format!(" (accepted: {})", accepted.join(", ")));
    Err(Error::RegistrationDenied(why))
}

/// Decides a registration (RFC 7591 §3): the new record and its answer. Binding: a
/// presented certificate's thumbprint is stored, and the registration access token is
/// bound to it.
fn decide(
    settings: &Settings,
    issuers: &Issuers,
    mut body: Map<String, Value>,
    cert: Option<&ClientCertificate>,
    fresh: Fresh,
    now: u64,
) -> Result<(ClientRecord, Fresh), Error> {
    // A statement's claims win over the body's, then the whole is judged like any body: a
    // statement cannot grant a reserved scope or skip the certificate rules.
    apply_statement(settings, issuers, &mut body, None, now)?;
    let mut metadata = ClientMetadata::parse(body, &settings.policy)?.into_registered()?;
    if let Some(cert) = cert {
        if settings.require_matching_certificate {
            cert_match::satisfies(&metadata, cert).map_err(MetadataError::ClientMetadata)?;
        }
    }
    metadata.release_parsed();
    let uses_secret = metadata.rules.uses_secret();
    let client = ClientRecord {
        client_id: fresh.client_id().into(),
        version: 0,
        issued_at: now,
        metadata: Arc::new(metadata),
        secret: uses_secret.then_some(fresh.secret_digest),
        bound: cert.map(|c| c.sha256),
        reg_token: RegToken {
            digest: fresh.token_digest,
            issued_at: now,
            revoked: false,
        },
        grace: None,
    };
    Ok((client, fresh))
}

// === impl Registry ===

impl Registry {
    /// Checks `registration.authentication` (SPEC §3).
    pub fn authorize_registration(
        &self,
        cert: Option<&ClientCertificate>,
        initial_access: bool,
    ) -> Result<(), Error> {
        authorize(&self.settings, cert, initial_access)
    }

    /// Registers a client; `initial` is the initial access token whose use the
    /// registration spends (committed together, SPEC §6a.8).
    pub async fn register(
        &self,
        body: Map<String, Value>,
        cert: Option<&ClientCertificate>,
        initial: Option<Digest>,
    ) -> Result<ClientResponse, Error> {
        let now = self.now();
        let (client, fresh) = decide(
            &self.settings,
            &self.issuers,
            body,
            cert,
            Fresh::draw(),
            now,
        )?;
        let uses_secret = client.secret.is_some();
        let response = ClientResponse {
            registration_client_uri: self.client_uri(&client.client_id),
            client_id: client.client_id.to_string(),
            client_id_issued_at: now,
            client_secret: uses_secret.then_some(fresh.secret),
            client_secret_expires_at: uses_secret.then_some(0),
            registration_access_token: Some(fresh.token),
            registration_access_token_expires_in: Some(self.settings.registration_token_ttl),
            metadata: client.metadata.clone(),
        };
        self.store
            .register(client, initial, self.settings.max_clients_per_certificate)
            .await?;
        Ok(response)
    }
}
