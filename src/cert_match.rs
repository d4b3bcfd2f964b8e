//! Does a certificate satisfy the metadata a client declared? (RFC 8705 §2.1.2, §2.2)
//!
//! Used at registration, on a self-management PUT that changes these fields, and when a
//! client authenticates with `tls_client_auth` / `self_signed_tls_client_auth`.

use crate::identity::ClientCertificate;
use crate::metadata::{AuthMethod, Registered, Subject};

/// Whether `cert` satisfies what `metadata` declares for the client's authentication method.
///
/// For `tls_client_auth` this is the subject/SAN rule only; chain verification is the
/// caller's business (registration and token authentication differ there).
pub fn satisfies(metadata: &Registered, cert: &ClientCertificate) -> Result<(), String> {
    let rules = &metadata.rules;
    match rules.auth {
        AuthMethod::TlsClientAuth => {
            let ok = match metadata.subject() {
                Some(Subject::Dn(_)) => metadata
                    .declared_dn()
                    .is_some_and(|dn| dn.matches(&cert.subject_dn)),
                Some(Subject::Dns(dns)) => cert.san.dns.iter().any(|d| d.eq_ignore_ascii_case(dns)),
                Some(Subject::Uri(uri)) => cert.san.uri.iter().any(|u| **u == *uri),
                Some(Subject::Ip(ip)) => cert.san.ip.contains(&ip),
                Some(Subject::Email(email)) => cert.san.email.iter().any(|e| email_equal(e, email)),
                None => false,
            };
            if ok {
                Ok(())
            } else {
                Err(
                    "the certificate does not match the declared tls_client_auth subject or SAN"
                        .into(),
                )
            }
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            if metadata.x5c_count() == 0 && rules.jwks_uri {
                return Err(
                    "jwks_uri is not fetched by this server: declare the certificate in jwks"
                        .into(),
                );
            }
            if metadata.has_x5c(&cert.sha256) {
                Ok(())
            } else {
                Err("the certificate is not among the jwks x5c certificates".into())
            }
        }
        _ => Ok(()),
    }
}

/// The local part is case-sensitive, the domain is not (RFC 5321).
fn email_equal(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_domain_is_case_insensitive() {
        assert!(email_equal("a@Example.COM", "a@example.com"));
        assert!(!email_equal("A@example.com", "a@example.com"));
    }
}
