//! RFC 7591 §2 / RFC 8705 §2.1.2 client metadata, parsed into types that cannot hold an
//! invalid value.
//!
//! Parsing takes the request's JSON object apart field by field; what is left (unknown
//! fields, language-tagged variants) is kept verbatim and returned, as RFC 7591 §2 asks.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The RFC 7591 §3.2.2 error a metadata problem maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// `invalid_redirect_uri`.
    RedirectUri(String),
    /// `invalid_client_metadata`.
    ClientMetadata(String),
    /// `invalid_software_statement`.
    InvalidSoftwareStatement(String),
    /// `unapproved_software_statement`.
    UnapprovedSoftwareStatement(String),
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RedirectUri(d)
            | Self::ClientMetadata(d)
            | Self::InvalidSoftwareStatement(d)
            | Self::UnapprovedSoftwareStatement(d) => f.write_str(d),
        }
    }
}

/// What the operator allows registered clients to ask for.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `registration.allowed_grant_types`.
    pub allowed_grant_types: Vec<String>,
    /// `registration.allowed_scopes` (empty: anything not reserved).
    pub allowed_scopes: Vec<String>,
    /// `management.dcrm_scope` and `registration.initial_access_scope`.
    pub reserved_scopes: Vec<String>,
}

/// `token_endpoint_auth_method` values certgate supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    TlsClientAuth,
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// Every supported method, as discovery lists them.
    pub const ALL: [&'static str; 5] = [
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "none",
    ];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "client_secret_basic" => Self::ClientSecretBasic,
            "client_secret_post" => Self::ClientSecretPost,
            "tls_client_auth" => Self::TlsClientAuth,
            "self_signed_tls_client_auth" => Self::SelfSignedTlsClientAuth,
            _ => return None,
        })
    }

    /// Whether clients using this method get a `client_secret`.
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

/// A redirect URI: absolute, without a fragment (RFC 7591 §2, RFC 6749 §3.1.2).
// Serialize only: a RedirectUri is made by `parse`, never read back from JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RedirectUri(String);

impl RedirectUri {
    fn parse(s: &str) -> Result<Self, MetadataError> {
        uri_characters(s).map_err(|why| MetadataError::RedirectUri(format!("{s:?} {why}")))?;
        let url = url::Url::parse(s)
            .map_err(|_| MetadataError::RedirectUri(format!("{s:?} is not an absolute URI")))?;
        if url.fragment().is_some() {
            return Err(MetadataError::RedirectUri(format!(
                "{s:?} must not contain a fragment"
            )));
        }
        if REFUSED_SCHEMES.contains(&url.scheme()) {
            // Schemes that run code or read local files in the user agent are never a
            // place to send an authorization response.
            return Err(MetadataError::RedirectUri(format!(
                "the {}: scheme is not allowed for redirect URIs",
                url.scheme()
            )));
        }
        if url.cannot_be_a_base() && url.scheme() != "urn" {
            // "mailto:x" and the like are not redirect targets; private-use schemes
            // ("com.example.app:/cb") and http(s) are.
            return Err(MetadataError::RedirectUri(format!(
                "{s:?} is not a usable redirect URI"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The URI as registered.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Redirect URI schemes that are never accepted.
const REFUSED_SCHEMES: [&str; 4] = ["javascript", "data", "file", "vbscript"];

/// Only characters RFC 3986 allows in a URI, and well-formed percent-encodings: no
/// whitespace, control characters, NUL or raw non-ASCII anywhere (URL parsers would quietly
/// strip or re-encode them, so what is registered would not be what is compared).
fn uri_characters(s: &str) -> Result<(), &'static str> {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b);
        if !allowed {
            return Err(
                "contains a character a URI may not hold (whitespace, control, or non-ASCII)",
            );
        }
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err("has a malformed percent-encoding");
            }
        }
    }
    Ok(())
}

/// Registered client metadata, defaults applied: the result of `parse`, serialized once
/// into `Registered::json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientMetadata {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<RedirectUri>,
    pub token_endpoint_auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// Space-separated scope tokens, normalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_certificate_bound_access_tokens: Option<bool>,
    /// Unknown and language-tagged fields, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What the registry keeps of a client's metadata: the JSON it answers with, verbatim,
/// and the few rules the server acts on, parsed once at registration or update. Keeping
/// the JSON as one string (not 20 optional fields) is what keeps a client near 1 KiB.
///
/// The rules' texts (scope, declared subject) are spans of the same string: of the JSON
/// where it holds them verbatim (it nearly always does), else appended after it. Two
/// allocations of their own were about 100 bytes per client.
#[derive(Clone)]
pub struct Registered {
    /// The registered metadata as a compact JSON object (no server-issued fields), then
    /// any rule text the JSON does not hold verbatim.
    text: Box<str>,
    json_len: u32,
    /// What authentication and token issuance need, besides the texts.
    pub rules: Rules,
    /// [`Span::ABSENT`] without a scope (an `Option` would cost four bytes more, and make
    /// the whole eight bytes larger).
    scope: Span,
    /// The `x5c` thumbprints, sorted, each as 43 characters of base64url.
    x5c: Span,
    subject: Option<StoredSubject>,
}

/// A piece of a [`Registered`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const ABSENT: Self = Self {
        start: u32::MAX,
        len: 0,
    };
}

/// The length of a thumbprint in base64url.
const THUMBPRINT_LEN: usize = 43;

/// A string member's opening, `"name":"`, as the stored JSON spells it, ready to search.
struct Field(memchr::memmem::Finder<'static>);

impl Field {
    fn new(opening: &'static str) -> Self {
        Self(memchr::memmem::Finder::new(opening))
    }
}

/// The members whose values a [`Registered`] can point into.
struct Fields {
    scope: Field,
    dn: Field,
    dns: Field,
    uri: Field,
    email: Field,
}

static FIELDS: std::sync::LazyLock<Fields> = std::sync::LazyLock::new(|| Fields {
    scope: Field::new(r#""scope":""#),
    dn: Field::new(r#""tls_client_auth_subject_dn":""#),
    dns: Field::new(r#""tls_client_auth_san_dns":""#),
    uri: Field::new(r#""tls_client_auth_san_uri":""#),
    email: Field::new(r#""tls_client_auth_san_email":""#),
});

/// A declared subject as stored: its text is a span.
#[derive(Debug, Clone)]
enum StoredSubject {
    Dn {
        text: Span,
        stored: bool,
        /// Boxed: eight bytes smaller in every client, and only a client that authenticates
        /// with its DN has one.
        parsed: OnceLock<Option<Box<crate::dn::Dn>>>,
    },
    Dns(Span),
    Uri(Span),
    Ip(std::net::IpAddr),
    Email(Span),
}

/// A client's declared certificate subject or SAN (RFC 8705 §2.1.2), as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Dn(&'a str),
    Dns(&'a str),
    Uri(&'a str),
    Ip(std::net::IpAddr),
    Email(&'a str),
}

/// The rules of a stored client that are not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub auth: AuthMethod,
    /// `client_credentials` is among the grant types.
    pub client_credentials: bool,
    /// A `jwks_uri` is registered.
    pub jwks_uri: bool,
    /// `tls_client_certificate_bound_access_tokens`.
    pub bound_tokens: bool,
}

impl Rules {
    /// Whether the client gets a `client_secret`.
    pub fn uses_secret(&self) -> bool {
        self.auth.uses_secret()
    }
}

/// The parts of a client's metadata the server enforces, as decided or read back; a
/// [`Registered`] stores them with the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRules {
    pub auth: AuthMethod,
    /// `client_credentials` is among the grant types.
    pub client_credentials: bool,
    /// Space-separated registered scope.
    pub scope: Option<Box<str>>,
    /// The one `tls_client_auth_*` value, for `tls_client_auth`.
    pub subject: Option<SubjectRule>,
    /// SHA-256 of the `jwks` `x5c` leaf certificates (in any order: a [`Registered`] sorts them).
    pub x5c: Box<[[u8; 32]]>,
    /// A `jwks_uri` is registered.
    pub jwks_uri: bool,
    /// `tls_client_certificate_bound_access_tokens`.
    pub bound_tokens: bool,
}

/// The declared certificate subject or SAN of a `tls_client_auth` client (RFC 8705 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectRule {
    Dn(DeclaredDn),
    Dns(Box<str>),
    Uri(Box<str>),
    Ip(std::net::IpAddr),
    Email(Box<str>),
}

/// A subject DN as the client (or the operator) declared it, and parsed for matching. Only
/// the declared text is stored: a later fix to matching never strands a stored client.
#[derive(Debug, Clone)]
pub struct DeclaredDn {
    /// As declared.
    pub text: Box<str>,
    /// Read from storage: parsed with `Dn::parse_legacy`.
    stored: bool,
    /// Parsed on first use; `None` for stored text this release cannot read (it then
    /// matches nothing). A restore leaves it unparsed: parsing every declared DN was an
    /// eighth of restoring a million clients, and most are not needed soon after a start.
    parsed: OnceLock<Option<crate::dn::Dn>>,
}

impl DeclaredDn {
    /// Parses `text` at once (a registration checks it).
    pub fn new(text: &str) -> Self {
        Self {
            text: text.into(),
            stored: false,
            parsed: OnceLock::from(crate::dn::Dn::parse(text)),
        }
    }

    /// Stored text, parsed when first used: as `new` reads it, and also the canonical form
    /// the previous release stored (`Dn::parse_legacy`), so an upgrade strands no client.
    pub fn stored(text: &str) -> Self {
        Self {
            text: text.into(),
            stored: true,
            parsed: OnceLock::new(),
        }
    }

    /// The parsed name, or `None` when the text is not one.
    pub fn dn(&self) -> Option<&crate::dn::Dn> {
        self.parsed
            .get_or_init(|| parse_declared(&self.text, self.stored))
            .as_ref()
    }
}

/// A declared DN as it is read: stored text also in the canonical form the previous release
/// stored (`Dn::parse_legacy`).
fn parse_declared(text: &str, stored: bool) -> Option<crate::dn::Dn> {
    if stored {
        crate::dn::Dn::parse_legacy(text)
    } else {
        crate::dn::Dn::parse(text)
    }
}

impl PartialEq for DeclaredDn {
    /// The same name, however it is spelled.
    fn eq(&self, other: &Self) -> bool {
        self.dn().is_some() && self.dn() == other.dn()
    }
}

impl Eq for DeclaredDn {}

impl Registered {
    /// Stores `rules` with the metadata `json`.
    pub fn new(json: String, rules: ClientRules) -> Self {
        let ClientRules {
            auth,
            client_credentials,
            scope,
            subject,
            x5c,
            jwks_uri,
            bound_tokens,
        } = rules;
        let mut text = json;
        // Rule text and JSON are far below 4 GiB (a body is at most 64 KiB, a snapshot
        // record at most its frame); past that a span would be wrong, never unsafe.
        let json_len = text.len() as u32;
        let mut x5c = x5c.into_vec();
        x5c.sort_unstable();
        x5c.dedup();
        let x5c = {
            let start = text.len();
            for t in &x5c {
                base64::Engine::encode_string(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    t,
                    &mut text,
                );
            }
            Span {
                start: start as u32,
                len: (text.len() - start) as u32,
            }
        };
        // Where the JSON holds `"field":"piece"`, the span points there; else the piece is
        // appended. Only the field's member is looked at (a search for the piece anywhere
        // was an eighth of restoring a snapshot), and any bytes equal to the piece would do.
        let mut place = |field: &Field, piece: &str| -> Span {
            let json = &text.as_bytes()[..json_len as usize];
            let start = field
                .0
                .find(json)
                .map(|at| at + field.0.needle().len())
                .filter(|&at| json[at..].starts_with(piece.as_bytes()))
                .unwrap_or_else(|| {
                    text.push_str(piece);
                    text.len() - piece.len()
                });
            Span {
                start: start as u32,
                len: piece.len() as u32,
            }
        };
        let scope = scope
            .as_deref()
            .map_or(Span::ABSENT, |v| place(&FIELDS.scope, v));
        let subject = subject.map(|s| match s {
            SubjectRule::Dn(d) => StoredSubject::Dn {
                text: place(&FIELDS.dn, &d.text),
                stored: d.stored,
                parsed: match d.parsed.into_inner() {
                    Some(dn) => OnceLock::from(dn.map(Box::new)),
                    None => OnceLock::new(),
                },
            },
            SubjectRule::Dns(v) => StoredSubject::Dns(place(&FIELDS.dns, &v)),
            SubjectRule::Uri(v) => StoredSubject::Uri(place(&FIELDS.uri, &v)),
            SubjectRule::Ip(ip) => StoredSubject::Ip(ip),
            SubjectRule::Email(v) => StoredSubject::Email(place(&FIELDS.email, &v)),
        });
        Self {
            text: text.into_boxed_str(),
            json_len,
            rules: Rules {
                auth,
                client_credentials,
                jwks_uri,
                bound_tokens,
            },
            scope,
            x5c,
            subject,
        }
    }

    /// The registered metadata as a compact JSON object.
    pub fn json(&self) -> &str {
        self.text.get(..self.json_len as usize).unwrap_or("")
    }

    fn span(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.text
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }

    /// The registered scope, space-separated.
    pub fn scope(&self) -> Option<&str> {
        (self.scope != Span::ABSENT).then(|| self.span(self.scope))
    }

    /// SHA-256 of the `jwks` `x5c` leaf certificates, sorted.
    pub fn x5c(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.span(self.x5c)
            .as_bytes()
            .chunks(THUMBPRINT_LEN)
            .filter_map(|b64| {
                let mut t = [0u8; 32];
                let n = base64::Engine::decode_slice(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    b64,
                    &mut t,
                );
                (n.ok() == Some(32)).then_some(t)
            })
    }

    /// How many `x5c` thumbprints there are (without decoding them).
    pub fn x5c_count(&self) -> usize {
        self.x5c.len as usize / THUMBPRINT_LEN
    }

    /// Whether `sha256` is among the `x5c` thumbprints.
    pub fn has_x5c(&self, sha256: &[u8; 32]) -> bool {
        self.x5c().any(|t| t == *sha256)
    }

    /// The registered scope tokens.
    pub fn scope_tokens(&self) -> impl Iterator<Item = &str> {
        self.scope()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    /// The one `tls_client_auth_*` value, for `tls_client_auth`.
    pub fn subject(&self) -> Option<Subject<'_>> {
        Some(match self.subject.as_ref()? {
            StoredSubject::Dn { text, .. } => Subject::Dn(self.span(*text)),
            StoredSubject::Dns(s) => Subject::Dns(self.span(*s)),
            StoredSubject::Uri(s) => Subject::Uri(self.span(*s)),
            StoredSubject::Ip(ip) => Subject::Ip(*ip),
            StoredSubject::Email(s) => Subject::Email(self.span(*s)),
        })
    }

    /// The declared subject DN, parsed (on first use for a stored client); `None` when
    /// none is declared or the text is not one this release reads (it then matches
    /// nothing).
    pub fn declared_dn(&self) -> Option<&crate::dn::Dn> {
        match &self.subject {
            Some(StoredSubject::Dn {
                text,
                stored,
                parsed,
            }) => parsed
                .get_or_init(|| parse_declared(self.span(*text), *stored).map(Box::new))
                .as_deref(),
            _ => None,
        }
    }

    /// Drops what is parsed again on first use: a stored client keeps only its text until
    /// it is used (the parsed form of a two-RDN name is five allocations and about 250
    /// bytes, a quarter of an idle client).
    pub fn release_parsed(&mut self) {
        if let Some(StoredSubject::Dn { parsed, .. }) = &mut self.subject {
            *parsed = OnceLock::new();
        }
    }

    /// Whether two rule sets let the same certificates authenticate (a PUT that changes
    /// this must prove it holds a certificate satisfying the new values). Only the rule of
    /// the certificate-based method in force counts: switching to a secret, or editing
    /// keys without `x5c`, lets no new certificate in.
    pub fn same_certificate_rules(&self, other: &Self) -> bool {
        let (a, b) = (&self.rules, &other.rules);
        let certificate = |m: AuthMethod| {
            matches!(
                m,
                AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
            )
        };
        if !certificate(a.auth) && !certificate(b.auth) {
            return true;
        }
        a.auth == b.auth
            && match a.auth {
                AuthMethod::TlsClientAuth => self.same_subject(other),
                _ => self.span(self.x5c) == other.span(other.x5c) && a.jwks_uri == b.jwks_uri,
            }
    }

    /// The same declared subject: a DN however it is spelled, other values exactly.
    fn same_subject(&self, other: &Self) -> bool {
        match (self.subject(), other.subject()) {
            (Some(Subject::Dn(_)), Some(Subject::Dn(_))) => {
                self.declared_dn().is_some() && self.declared_dn() == other.declared_dn()
            }
            (a, b) => a == b,
        }
    }
}

impl PartialEq for Registered {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
            && self.rules == other.rules
            && self.scope() == other.scope()
            && self.span(self.x5c) == other.span(other.x5c)
            && self.same_subject(other)
    }
}

impl Eq for Registered {}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("json", &self.json())
            .field("rules", &self.rules)
            .field("scope", &self.scope())
            .field("x5c", &self.span(self.x5c))
            .field("subject", &self.subject())
            .finish()
    }
}

/// Fields the server issues; a client never sets them.
pub const SERVER_FIELDS: [&str; 7] = [
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "registration_access_token",
    "registration_client_uri",
    "registration_access_token_expires_in",
];

/// Human-readable fields that may carry a language tag (`client_name#fr`).
const LOCALIZABLE: [&str; 5] = [
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
];

// === impl ClientMetadata ===

impl ClientMetadata {
    /// Parses a request object. Server-issued fields must already be removed by the caller
    /// (registration ignores them, PUT checks them first).
    pub fn parse(mut body: Map<String, Value>, policy: &Policy) -> Result<Self, MetadataError> {
        // A statement was verified and its claims merged in by the caller (`statement`);
        // here it is only kept, verbatim, to be returned (RFC 7591 §3.2.1).
        if body
            .get("software_statement")
            .is_some_and(|v| !v.is_string())
        {
            return Err(MetadataError::InvalidSoftwareStatement(
                "software_statement must be a string (a compact JWS)".into(),
            ));
        }
        for field in SERVER_FIELDS {
            body.remove(field);
        }

        let redirect_uris = match body.remove("redirect_uris") {
            None => Vec::new(),
            Some(v) => string_list(v, "redirect_uris", MAX_REDIRECT_URIS)?
                .iter()
                .map(|s| RedirectUri::parse(s))
                .collect::<Result<_, _>>()?,
        };
        let token_endpoint_auth_method = match body.remove("token_endpoint_auth_method") {
            None => AuthMethod::ClientSecretBasic,
            Some(v) => {
                let s = string(v, "token_endpoint_auth_method")?;
                AuthMethod::parse(&s).ok_or_else(|| {
                    invalid(format!(
                        "token_endpoint_auth_method {s:?} is not supported (supported: {})",
                        AuthMethod::ALL.join(", ")
                    ))
                })?
            }
        };
        let grant_types = body
            .remove("grant_types")
            .map(|v| string_list(v, "grant_types", MAX_TYPES))
            .transpose()?;
        let response_types = body
            .remove("response_types")
            .map(|v| string_list(v, "response_types", MAX_TYPES))
            .transpose()?;
        let (grant_types, response_types) = types(grant_types, response_types, policy)?;

        let mut meta = Self {
            redirect_uris,
            token_endpoint_auth_method,
            grant_types,
            response_types,
            client_name: opt_string(&mut body, "client_name")?,
            client_uri: opt_uri(&mut body, "client_uri")?,
            logo_uri: opt_uri(&mut body, "logo_uri")?,
            scope: scope(body.remove("scope"), policy)?,
            contacts: body
                .remove("contacts")
                .map(|v| string_list(v, "contacts", MAX_CONTACTS))
                .transpose()?,
            tos_uri: opt_uri(&mut body, "tos_uri")?,
            policy_uri: opt_uri(&mut body, "policy_uri")?,
            jwks_uri: opt_uri(&mut body, "jwks_uri")?,
            jwks: body.remove("jwks").map(jwks).transpose()?,
            software_id: opt_string(&mut body, "software_id")?,
            software_version: opt_string(&mut body, "software_version")?,
            tls_client_auth_subject_dn: opt_string(&mut body, "tls_client_auth_subject_dn")?,
            tls_client_auth_san_dns: opt_string(&mut body, "tls_client_auth_san_dns")?,
            tls_client_auth_san_uri: opt_string(&mut body, "tls_client_auth_san_uri")?,
            tls_client_auth_san_ip: opt_string(&mut body, "tls_client_auth_san_ip")?,
            tls_client_auth_san_email: opt_string(&mut body, "tls_client_auth_san_email")?,
            tls_client_certificate_bound_access_tokens: match body
                .remove("tls_client_certificate_bound_access_tokens")
            {
                None => None,
                Some(Value::Bool(b)) => Some(b),
                Some(_) => {
                    return Err(invalid(
                        "tls_client_certificate_bound_access_tokens must be a boolean".into(),
                    ))
                }
            },
            extra: Map::new(),
        };
        meta.check_cross_field_rules()?;

        for (key, value) in &body {
            if let Some((base, tag)) = key.split_once('#') {
                if LOCALIZABLE.contains(&base) {
                    localized(base, tag, value)?;
                }
            }
        }
        meta.extra = body;
        Ok(meta)
    }

    fn check_cross_field_rules(&self) -> Result<(), MetadataError> {
        if self.jwks.is_some() && self.jwks_uri.is_some() {
            return Err(invalid("jwks and jwks_uri are mutually exclusive".into()));
        }
        if let Some(uri) = &self.jwks_uri {
            if !uri.starts_with("https://") {
                return Err(invalid("jwks_uri must use https".into()));
            }
        }
        if let Some(ip) = &self.tls_client_auth_san_ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(format!(
                    "tls_client_auth_san_ip {ip:?} is not an IP address"
                )));
            }
        }
        if let Some(uri) = &self.tls_client_auth_san_uri {
            if url::Url::parse(uri).is_err() {
                return Err(invalid(format!(
                    "tls_client_auth_san_uri {uri:?} is not an absolute URI"
                )));
            }
        }
        for (name, value) in [
            ("tls_client_auth_san_dns", &self.tls_client_auth_san_dns),
            ("tls_client_auth_san_email", &self.tls_client_auth_san_email),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(format!("{name} must not be empty")));
            }
        }
        match self.token_endpoint_auth_method {
            AuthMethod::TlsClientAuth => {
                let n = self.subject_fields().iter().filter(|f| f.is_some()).count();
                if n != 1 {
                    return Err(invalid(
                        "tls_client_auth requires exactly one of tls_client_auth_subject_dn, \
                         tls_client_auth_san_dns, tls_client_auth_san_uri, \
                         tls_client_auth_san_ip, tls_client_auth_san_email"
                            .into(),
                    ));
                }
            }
            AuthMethod::SelfSignedTlsClientAuth => {
                let has_x5c = crate::jwk::jwks_thumbprints(self.jwks.as_ref())
                    .next()
                    .is_some();
                if !has_x5c && self.jwks_uri.is_none() {
                    return Err(invalid(
                        "self_signed_tls_client_auth requires jwks with an x5c certificate, or jwks_uri"
                            .into(),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn subject_fields(&self) -> [&Option<String>; 5] {
        [
            &self.tls_client_auth_subject_dn,
            &self.tls_client_auth_san_dns,
            &self.tls_client_auth_san_uri,
            &self.tls_client_auth_san_ip,
            &self.tls_client_auth_san_email,
        ]
    }

    /// The rules the server enforces, parsed once. The declared subject DN is checked
    /// here, where it is parsed: parsing it twice per registration showed in profiles.
    pub fn rules(&self) -> Result<ClientRules, MetadataError> {
        let subject = if let Some(dn) = &self.tls_client_auth_subject_dn {
            let declared = DeclaredDn::new(dn);
            if declared.dn().is_none() {
                return Err(invalid(format!(
                    "tls_client_auth_subject_dn {dn:?} is not an RFC 4514 distinguished name \
                     (attribute types by name, e.g. CN, O, organizationIdentifier, or dotted OID)"
                )));
            }
            Some(SubjectRule::Dn(declared))
        } else if let Some(v) = &self.tls_client_auth_san_dns {
            Some(SubjectRule::Dns(v.as_str().into()))
        } else if let Some(v) = &self.tls_client_auth_san_uri {
            Some(SubjectRule::Uri(v.as_str().into()))
        } else if let Some(v) = &self.tls_client_auth_san_ip {
            v.parse().ok().map(SubjectRule::Ip)
        } else {
            self.tls_client_auth_san_email
                .as_ref()
                .map(|v| SubjectRule::Email(v.as_str().into()))
        };
        // `Registered::new` sorts them and drops repeats.
        let x5c: Vec<[u8; 32]> = crate::jwk::jwks_thumbprints(self.jwks.as_ref()).collect();
        Ok(ClientRules {
            auth: self.token_endpoint_auth_method,
            client_credentials: self.grant_types.iter().any(|g| g == "client_credentials"),
            scope: self.scope.as_deref().map(Into::into),
            subject,
            x5c: x5c.into(),
            jwks_uri: self.jwks_uri.is_some(),
            bound_tokens: self.tls_client_certificate_bound_access_tokens == Some(true),
        })
    }

    /// The stored form: canonical JSON plus rules.
    pub fn into_registered(self) -> Result<Registered, MetadataError> {
        let rules = self.rules()?;
        // Serializing plain data into a string cannot fail; `{}` would only lose the
        // echo of the metadata, never a rule.
        let json = serde_json::to_string(&self).unwrap_or_else(|_| "{}".into());
        Ok(Registered::new(json, rules))
    }
}

fn invalid(msg: String) -> MetadataError {
    MetadataError::ClientMetadata(msg)
}

/// How many entries a list may hold (a registration is ~1 KiB of metadata; these keep a
/// 64 KiB body from becoming tens of thousands of stored entries).
const MAX_REDIRECT_URIS: usize = 100;
const MAX_CONTACTS: usize = 20;
const MAX_TYPES: usize = 16;
const MAX_SCOPES: usize = 100;
const MAX_KEYS: usize = 32;

/// A string member without control characters (they have no place in a name, an
/// identifier or an address, and break the logs and screens that show them).
fn string(v: Value, field: &str) -> Result<String, MetadataError> {
    match v {
        Value::String(s) if s.chars().any(char::is_control) => Err(invalid(format!(
            "{field} must not contain control characters"
        ))),
        Value::String(s) => Ok(s),
        _ => Err(invalid(format!("{field} must be a string"))),
    }
}

fn opt_string(body: &mut Map<String, Value>, field: &str) -> Result<Option<String>, MetadataError> {
    body.remove(field).map(|v| string(v, field)).transpose()
}

fn opt_uri(body: &mut Map<String, Value>, field: &str) -> Result<Option<String>, MetadataError> {
    let Some(s) = opt_string(body, field)? else {
        return Ok(None);
    };
    check_uri(field, &s)?;
    Ok(Some(s))
}

fn check_uri(field: &str, s: &str) -> Result<(), MetadataError> {
    uri_characters(s).map_err(|why| invalid(format!("{field} {s:?} {why}")))?;
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        _ => Err(invalid(format!(
            "{field} {s:?} is not an absolute http(s) URL"
        ))),
    }
}

fn string_list(v: Value, field: &str, max: usize) -> Result<Vec<String>, MetadataError> {
    let Value::Array(items) = v else {
        return Err(invalid(format!("{field} must be an array of strings")));
    };
    if items.len() > max {
        return Err(invalid(format!("{field} may list at most {max} entries")));
    }
    items
        .into_iter()
        .map(|item| match item {
            // URIs are judged by their own rules (and their own error code).
            Value::String(s) if field == "redirect_uris" => Ok(s),
            Value::String(_) => string(item, field),
            _ => Err(invalid(format!("{field} must be an array of strings"))),
        })
        .collect()
}

fn localized(base: &str, tag: &str, value: &Value) -> Result<(), MetadataError> {
    let tag_ok = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !tag_ok {
        return Err(invalid(format!(
            "{base}#{tag}: {tag:?} is not a language tag"
        )));
    }
    let s = string(value.clone(), &format!("{base}#{tag}"))?;
    if base != "client_name" {
        check_uri(&format!("{base}#{tag}"), &s)?;
    }
    Ok(())
}

/// SPEC §6a.1: grant and response types default from each other and must agree.
fn types(
    grants: Option<Vec<String>>,
    responses: Option<Vec<String>>,
    policy: &Policy,
) -> Result<(Vec<String>, Vec<String>), MetadataError> {
    let implied_responses = |grants: &[String]| -> Vec<String> {
        if grants.iter().any(|g| g == "authorization_code") {
            vec!["code".to_owned()]
        } else {
            Vec::new()
        }
    };
    let implied_grants = |responses: &[String]| -> Vec<String> {
        responses
            .iter()
            .map(|r| match r.as_str() {
                "code" => "authorization_code".to_owned(),
                "token" => "implicit".to_owned(),
                other => other.to_owned(),
            })
            .collect()
    };
    let (grants, responses) = match (grants, responses) {
        (None, None) => (
            vec!["authorization_code".to_owned()],
            vec!["code".to_owned()],
        ),
        (Some(g), None) => {
            let r = implied_responses(&g);
            (g, r)
        }
        (None, Some(r)) => (implied_grants(&r), r),
        (Some(g), Some(r)) => (g, r),
    };
    for r in &responses {
        if r != "code" {
            return Err(invalid(format!(
                "response_type {r:?} is not supported (supported: code)"
            )));
        }
    }
    for g in &grants {
        if !policy.allowed_grant_types.iter().any(|a| a == g) {
            return Err(invalid(format!(
                "grant_type {g:?} is not allowed (allowed: {})",
                policy.allowed_grant_types.join(", ")
            )));
        }
    }
    let has_code_grant = grants.iter().any(|g| g == "authorization_code");
    let has_code_response = responses.iter().any(|r| r == "code");
    if has_code_grant != has_code_response {
        return Err(invalid(
            "grant_types and response_types are inconsistent: authorization_code goes with the \
             code response type (RFC 7591 §2.1)"
                .into(),
        ));
    }
    Ok((dedup(grants), dedup(responses)))
}

/// Drops repeats, keeping each value's first place. The lists hold at most `MAX_TYPES`
/// entries: comparing with the kept ones beats hashing a copy of each.
fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut kept = 0;
    for i in 0..v.len() {
        if !v[..kept].contains(&v[i]) {
            v.swap(kept, i);
            kept += 1;
        }
    }
    v.truncate(kept);
    v
}

/// SPEC §6a.2: any scope but the reserved ones, unless `allowed_scopes` narrows it.
fn scope(v: Option<Value>, policy: &Policy) -> Result<Option<String>, MetadataError> {
    let Some(v) = v else { return Ok(None) };
    let s = string(v, "scope")?;
    let mut tokens: Vec<&str> = Vec::new();
    for token in s.split(' ').filter(|t| !t.is_empty()) {
        if tokens.len() == MAX_SCOPES {
            return Err(invalid(format!(
                "scope may hold at most {MAX_SCOPES} scope tokens"
            )));
        }
        // RFC 6749 §3.3 scope-token characters.
        let valid = token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(invalid(format!(
                "scope token {token:?} has invalid characters"
            )));
        }
        if policy.reserved_scopes.iter().any(|r| r == token) {
            return Err(invalid(format!(
                "scope {token:?} is reserved for statically configured clients"
            )));
        }
        if !policy.allowed_scopes.is_empty() && !policy.allowed_scopes.iter().any(|a| a == token) {
            return Err(invalid(format!("scope {token:?} is not allowed")));
        }
        if !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    Ok((!tokens.is_empty()).then(|| tokens.join(" ")))
}

fn jwks(v: Value) -> Result<Map<String, Value>, MetadataError> {
    let Value::Object(set) = v else {
        return Err(invalid("jwks must be a JWK Set object".into()));
    };
    let Some(Value::Array(keys)) = set.get("keys") else {
        return Err(invalid("jwks must have a \"keys\" array".into()));
    };
    if keys.len() > MAX_KEYS {
        return Err(invalid(format!("jwks may hold at most {MAX_KEYS} keys")));
    }
    for key in keys {
        let Value::Object(key) = key else {
            return Err(invalid("jwks keys must be objects".into()));
        };
        crate::jwk::check_key(key).map_err(invalid)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_stored_declared_dn_is_parsed_when_first_used_as_a_new_one_is() {
        let stored = DeclaredDn::stored("CN=client1, O=certgate dev");
        let new = DeclaredDn::new("cn=client1,o=certgate dev");
        assert_eq!(stored.dn(), new.dn());
        assert!(stored.dn().is_some());
        assert_eq!(stored, new);
        // Stored text this release cannot read matches nothing, not even itself.
        let unreadable = DeclaredDn::stored("not a DN");
        assert!(unreadable.dn().is_none());
        assert_ne!(unreadable, unreadable.clone());
    }

    fn rules(scope: Option<&str>, subject: Option<SubjectRule>, x5c: &[[u8; 32]]) -> ClientRules {
        ClientRules {
            auth: AuthMethod::TlsClientAuth,
            client_credentials: true,
            scope: scope.map(Into::into),
            subject,
            x5c: x5c.into(),
            jwks_uri: false,
            bound_tokens: true,
        }
    }

    #[test]
    fn stored_rule_texts_read_back_whether_the_json_holds_them_or_not() {
        // In the JSON verbatim: read from there, nothing appended.
        let json = r#"{"scope":"a b","tls_client_auth_subject_dn":"CN=x,O=y"}"#;
        let dn = SubjectRule::Dn(DeclaredDn::new("CN=x,O=y"));
        let r = Registered::new(json.into(), rules(Some("a b"), Some(dn), &[]));
        assert_eq!(r.json(), json);
        assert_eq!(r.text.len(), json.len());
        assert_eq!(r.scope(), Some("a b"));
        assert_eq!(r.scope_tokens().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(r.subject(), Some(Subject::Dn("CN=x,O=y")));
        assert!(r.declared_dn().is_some());

        // Escaped in the JSON (a backslash in a DN, a quote): appended after it, and the
        // JSON answered is still exactly the JSON.
        let escaped = r"CN=a\,b";
        let json = r#"{"tls_client_auth_subject_dn":"CN=a\\,b","scope":"q\"s"}"#;
        let x5c = [[3u8; 32], [1u8; 32], [3u8; 32]];
        let r = Registered::new(
            json.into(),
            rules(Some("q\"s"), Some(SubjectRule::Dns("h\"x".into())), &x5c),
        );
        assert_eq!(r.json(), json);
        assert_eq!(r.scope(), Some("q\"s"));
        assert_eq!(r.subject(), Some(Subject::Dns("h\"x")));
        assert!(r.declared_dn().is_none());
        // Sorted and without repeats, as the codec writes them.
        assert_eq!(r.x5c().collect::<Vec<_>>(), [[1u8; 32], [3u8; 32]]);
        assert_eq!(r.x5c_count(), 2);
        assert!(r.has_x5c(&[3u8; 32]) && !r.has_x5c(&[2u8; 32]));
        let stored = SubjectRule::Dn(DeclaredDn::stored(escaped));
        let r = Registered::new(json.into(), rules(None, Some(stored), &[]));
        assert_eq!(r.scope(), None);
        assert_eq!(r.subject(), Some(Subject::Dn(escaped)));
        assert_eq!(r.json(), json);

        // An empty scope is a scope, not none.
        let r = Registered::new("{}".into(), rules(Some(""), None, &[]));
        assert_eq!(r.scope(), Some(""));
    }

    #[test]
    fn stored_rules_compare_by_what_they_let_in() {
        let with = |dn: &str| {
            let subject = SubjectRule::Dn(DeclaredDn::new(dn));
            Registered::new("{}".into(), rules(None, Some(subject), &[]))
        };
        // The same DN however spelled; a different one is different.
        assert!(with("CN=x,O=y").same_certificate_rules(&with("cn=x, o=y")));
        assert!(!with("CN=x,O=y").same_certificate_rules(&with("CN=x,O=z")));
        // The x5c set, whatever order it was declared in.
        let self_signed = |x5c: &[[u8; 32]]| {
            let mut r = rules(None, None, x5c);
            r.auth = AuthMethod::SelfSignedTlsClientAuth;
            Registered::new("{}".into(), r)
        };
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(self_signed(&[a, b]).same_certificate_rules(&self_signed(&[b, a])));
        assert!(!self_signed(&[a]).same_certificate_rules(&self_signed(&[a, b])));
        // Two secret-based methods let no certificate in: the same as far as this goes.
        let secret = |auth| {
            let mut r = rules(None, None, &[]);
            r.auth = auth;
            Registered::new("{}".into(), r)
        };
        assert!(secret(AuthMethod::ClientSecretBasic)
            .same_certificate_rules(&secret(AuthMethod::ClientSecretPost)));
        assert!(!secret(AuthMethod::ClientSecretBasic).same_certificate_rules(&with("CN=x")));
    }

    fn policy() -> Policy {
        Policy {
            allowed_grant_types: vec![
                "client_credentials".into(),
                "authorization_code".into(),
                "refresh_token".into(),
            ],
            allowed_scopes: vec![],
            reserved_scopes: vec!["dcrm".into(), "dcr".into()],
        }
    }

    fn parse(v: Value) -> Result<ClientMetadata, MetadataError> {
        let Value::Object(map) = v else { panic!() };
        ClientMetadata::parse(map, &policy())
    }

    #[test]
    fn neither_type_defaults_to_authorization_code() {
        let m = parse(json!({})).unwrap();
        assert_eq!(m.grant_types, ["authorization_code"]);
        assert_eq!(m.response_types, ["code"]);
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::ClientSecretBasic);
    }

    #[test]
    fn repeated_types_are_kept_once_in_the_order_first_given() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            dedup(v(&["a", "b", "a", "c", "b", "c"])),
            v(&["a", "b", "c"])
        );
        assert_eq!(dedup(v(&["b", "b", "b"])), v(&["b"]));
        assert_eq!(dedup(v(&[])), v(&[]));
        let m = parse(json!({
            "grant_types": ["client_credentials", "authorization_code", "client_credentials"],
            "response_types": ["code", "code"],
        }))
        .unwrap();
        assert_eq!(m.grant_types, ["client_credentials", "authorization_code"]);
        assert_eq!(m.response_types, ["code"]);
    }

    #[test]
    fn grant_types_imply_response_types() {
        let m = parse(json!({"grant_types": ["client_credentials"]})).unwrap();
        assert!(m.response_types.is_empty());
        let m = parse(json!({"response_types": ["code"]})).unwrap();
        assert_eq!(m.grant_types, ["authorization_code"]);
    }

    #[test]
    fn inconsistent_types_are_invalid_client_metadata() {
        let e = parse(json!({"grant_types": ["client_credentials"], "response_types": ["code"]}));
        assert!(matches!(e, Err(MetadataError::ClientMetadata(_))));
        let e = parse(json!({"response_types": ["token"]}));
        assert!(matches!(e, Err(MetadataError::ClientMetadata(_))));
    }

    #[test]
    fn disallowed_grant_type_is_invalid_client_metadata() {
        let e = parse(json!({"grant_types": ["password"]}));
        assert!(matches!(e, Err(MetadataError::ClientMetadata(_))));
    }

    #[test]
    fn redirect_uri_must_be_absolute_without_fragment() {
        assert!(matches!(
            parse(json!({"redirect_uris": ["/relative"]})),
            Err(MetadataError::RedirectUri(_))
        ));
        assert!(matches!(
            parse(json!({"redirect_uris": ["https://a.example/cb#frag"]})),
            Err(MetadataError::RedirectUri(_))
        ));
        assert!(
            parse(json!({"redirect_uris": ["https://a.example/cb", "com.example.app:/cb"]}))
                .is_ok()
        );
    }

    #[test]
    fn jwks_and_jwks_uri_are_mutually_exclusive() {
        let e = parse(json!({"jwks": {"keys": []}, "jwks_uri": "https://a.example/jwks"}));
        assert!(matches!(e, Err(MetadataError::ClientMetadata(_))));
    }

    #[test]
    fn tls_client_auth_needs_exactly_one_subject_field() {
        let base = json!({"token_endpoint_auth_method": "tls_client_auth"});
        assert!(parse(base).is_err());
        assert!(
            parse(json!({"token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=a", "tls_client_auth_san_dns": "a"}))
            .is_err()
        );
        assert!(
            parse(json!({"token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_san_dns": "a.example"}))
            .is_ok()
        );
    }

    #[test]
    fn self_signed_needs_jwks_or_jwks_uri() {
        assert!(
            parse(json!({"token_endpoint_auth_method": "self_signed_tls_client_auth"})).is_err()
        );
        assert!(parse(
            json!({"token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks_uri": "https://a.example/jwks"})
        )
        .is_ok());
    }

    #[test]
    fn unsupported_auth_method_is_invalid_client_metadata() {
        let e = parse(json!({"token_endpoint_auth_method": "private_key_jwt"}));
        assert!(matches!(e, Err(MetadataError::ClientMetadata(_))));
    }

    #[test]
    fn unknown_and_language_tagged_fields_are_kept() {
        let m = parse(json!({"client_name#fr": "Mon client", "x_custom": {"a": 1}})).unwrap();
        let out = serde_json::to_value(&m).unwrap();
        assert_eq!(out["client_name#fr"], "Mon client");
        assert_eq!(out["x_custom"], json!({"a": 1}));
    }

    #[test]
    fn reserved_scopes_are_refused() {
        assert!(parse(json!({"scope": "read dcrm"})).is_err());
        assert_eq!(
            parse(json!({"scope": "read  write read"}))
                .unwrap()
                .scope
                .as_deref(),
            Some("read write")
        );
    }

    #[test]
    fn server_fields_in_a_request_are_ignored() {
        let m = parse(json!({"client_id": "mine", "client_secret": "x"})).unwrap();
        assert!(m.extra.is_empty());
    }

    #[test]
    fn lists_are_capped_and_strings_hold_no_control_characters() {
        let many: Vec<String> = (0..101).map(|i| format!("https://a.example/{i}")).collect();
        assert!(parse(json!({"redirect_uris": many})).is_err());
        assert!(parse(json!({"contacts": vec!["a@b.example"; 21]})).is_err());
        let scopes: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
        assert!(parse(json!({"scope": scopes.join(" ")})).is_err());
        assert!(parse(json!({"scope": vec!["s"; 500].join(" ")})).is_ok());
        for body in [
            json!({"client_name": "a\u{0}b"}),
            json!({"client_name#fr": "a\nb"}),
            json!({"contacts": ["a@b.example\r\nBcc: x"]}),
            json!({"software_id": "\u{1b}[31m"}),
        ] {
            assert!(parse(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn wrong_types_are_invalid_client_metadata() {
        for body in [
            json!({"redirect_uris": "https://a.example"}),
            json!({"client_name": 5}),
            json!({"contacts": [1]}),
            json!({"tls_client_certificate_bound_access_tokens": "yes"}),
        ] {
            assert!(parse(body).is_err());
        }
    }
}
