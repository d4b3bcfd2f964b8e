//! RFC 7591 registration: who may register, and what a new client record holds.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Client, ClientResponse, Error, Fresh, RegToken, Registry, TokenRecord};
use crate::cert_match;
use crate::config::RegistrationAuth;
use crate::identity::{CertSource, ClientCertificate};
use crate::metadata::{ClientMetadata, MetadataError};

// === impl Registry ===

impl Registry {
    /// Checks `registration.authentication` (SPEC §3): any one accepted way suffices.
    ///
    /// `initial_access` says whether the request carried a valid initial access token
    /// (checked by the token layer); certificates must chain to `tls.client_ca`.
    pub fn authorize_registration(
        &self,
        cert: Option<&ClientCertificate>,
        initial_access: bool,
    ) -> Result<(), Error> {
        let ways = &self.settings.authentication;
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

    /// Counts one more live registration bound to `sha256`, or refuses beyond
    /// `registration.max_clients_per_certificate` (SPEC §3). Checked and counted under the
    /// entry's lock, so concurrent registrations cannot overshoot.
    fn take_quota(&self, sha256: &[u8; 32]) -> Result<(), Error> {
        let max = self.settings.max_clients_per_certificate;
        let mut n = self.per_certificate.entry(*sha256).or_insert(0);
        if *n >= max {
            return Err(MetadataError::ClientMetadata(format!(
                "this certificate already has {max} live registrations \
                 (registration.max_clients_per_certificate): delete one, or ask an \
                 administrator to"
            ))
            .into());
        }
        *n += 1;
        Ok(())
    }

    /// Registers a client (RFC 7591 §3). Binding: a presented certificate's thumbprint is
    /// stored, and the registration access token is bound to it.
    pub fn register(
        &self,
        body: Map<String, Value>,
        cert: Option<&ClientCertificate>,
    ) -> Result<ClientResponse, Error> {
        let metadata = ClientMetadata::parse(body, &self.settings.policy)?.into_registered()?;
        if let Some(cert) = cert {
            if self.settings.require_matching_certificate {
                cert_match::satisfies(&metadata.rules, cert)
                    .map_err(MetadataError::ClientMetadata)?;
            }
        }
        if let Some(cert) = cert {
            self.take_quota(&cert.sha256)?;
        }
        let fresh = Fresh::draw();
        let client_id = fresh.client_id();
        let now = self.now();
        let metadata = Arc::new(metadata);
        let uses_secret = metadata.rules.uses_secret();
        let client = Client {
            issued_at: now,
            metadata: metadata.clone(),
            secret: uses_secret.then_some(fresh.secret_digest),
            bound: cert.map(|c| c.sha256),
            reg_token: RegToken {
                digest: fresh.token_digest,
                issued_at: now,
                revoked: false,
            },
            grace: None,
        };
        // Insert first, journal second: a snapshot taken in between then either sees the
        // client or is followed by the journal holding its record, never neither. Nobody
        // can change the new client before its response is out, so order is kept.
        let change = self
            .journaling()
            .then(|| Self::client_change(&client_id, &client));
        self.clients.insert(client_id.clone(), client);
        self.tokens.insert(
            fresh.token_digest,
            TokenRecord::Registration {
                client_id: client_id.clone(),
            },
        );
        if let Some(change) = change {
            self.persist(|| change);
        }
        Ok(ClientResponse {
            registration_client_uri: self.client_uri(&client_id),
            client_id,
            client_id_issued_at: now,
            client_secret: uses_secret.then_some(fresh.secret),
            client_secret_expires_at: uses_secret.then_some(0),
            registration_access_token: Some(fresh.token),
            registration_access_token_expires_in: Some(self.settings.registration_token_ttl),
            metadata,
        })
    }
}
