//! `config/certgate.toml` parsed into a typed, validated `Config` (SPEC §6).
//!
//! Every key has a default and unknown keys are errors: a typo in a security setting must
//! not pass silently. Validation happens here, before anything binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::proxy_header::HeaderFormat;

/// A configuration problem, naming the key (and file) at fault.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub proxy: ProxyConfig,
    pub limits: LimitsConfig,
    pub registration: RegistrationConfig,
    pub management: ManagementConfig,
    pub tokens: TokensConfig,
    pub store: StoreConfig,
    pub clients: Vec<StaticClient>,
    pub routes: Vec<RouteConfig>,
}

/// `[[routes]]`: a path prefix certgate admits certificate-bound tokens for, and the
/// upstream it forwards to (SPEC §5a).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Starts and ends with "/"; the longest matching prefix wins.
    pub path_prefix: String,
    /// `http://` or `https://` (an optional base path is prepended).
    pub upstream: String,
    /// PEM trust anchors for an https upstream; empty: the system's.
    #[serde(default)]
    pub upstream_ca: PathBuf,
    /// Empty: any active token.
    #[serde(default)]
    pub required_scope: String,
    /// `/api/x` is sent upstream as `/x`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Connect plus time to the response head.
    #[serde(default = "default_route_timeout", with = "humantime_serde_str")]
    pub timeout: Duration,
}

fn default_route_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Paths certgate serves itself: they always win, and no route may start with one.
pub const OWN_PATHS: [&str; 7] = [
    "/register",
    "/token",
    "/introspect",
    "/revoke",
    "/identity",
    "/healthz",
    "/.well-known/",
];

/// `[server]`: listeners and the issuer URL.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub issuer: String,
    pub tls_listen: SocketAddr,
    #[serde(deserialize_with = "opt_addr")]
    pub proxy_listen: Option<SocketAddr>,
    #[serde(deserialize_with = "opt_addr")]
    pub admin_listen: Option<SocketAddr>,
    pub mtls_issuer: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            issuer: "https://localhost:8443".into(),
            tls_listen: ([127, 0, 0, 1], 8443).into(),
            // Omitted (or "") disables the listener.
            proxy_listen: None,
            admin_listen: None,
            mtls_issuer: String::new(),
        }
    }
}

/// Whether the TLS listener insists on a client certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

/// `[tls]`: server certificate and client trust anchors.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_auth: ClientAuth,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: "certs/server.pem".into(),
            key: "certs/server-key.pem".into(),
            client_ca: "certs/ca.pem".into(),
            client_auth: ClientAuth::Optional,
        }
    }
}

/// `[proxy]`: who may forward certificates, and how.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<IpNet>,
    pub header_format: HeaderFormat,
    /// Empty: the format's default header.
    pub header: String,
    /// Serve the proxy listener over HTTPS with `[tls]`'s certificate (a proxy on another host).
    pub tls: bool,
    /// Non-empty: a proxy must also present a certificate whose subject DN matches one of
    /// these (SPEC §5 matching), or its header is not believed.
    pub trusted_proxy_subjects: Vec<String>,
    /// Trust anchors for proxies' certificates; empty = `tls.client_ca`.
    pub client_ca: PathBuf,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: vec![
                IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)),
                IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            header_format: HeaderFormat::default(),
            header: String::new(),
            tls: false,
            trusted_proxy_subjects: Vec::new(),
            client_ca: PathBuf::new(),
        }
    }
}

impl ProxyConfig {
    /// The header to read: the configured one, or the format's default.
    pub fn header_name(&self) -> http::HeaderName {
        let name = if self.header.is_empty() {
            self.header_format.default_header()
        } else {
            &self.header
        };
        // `validate` checked that the name parses.
        http::HeaderName::try_from(name.to_ascii_lowercase())
            .unwrap_or(http::HeaderName::from_static("x-ssl-client-cert"))
    }

    /// Whether `ip` is inside `trusted_proxies` (empty list: nobody is).
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) compare as IPv4.
fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// `[limits]`: time boxes and caps against abuse (SPEC §8).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    #[serde(with = "humantime_serde_str")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde_str")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde_str")]
    pub request_timeout: Duration,
    /// A connection (HTTP/1 or HTTP/2) with no request in flight for this long is closed.
    #[serde(with = "humantime_serde_str")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde_str")]
    pub drain_timeout: Duration,
    /// Per listener: exactly this many connections are served at once.
    pub max_connections: u64,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// The request head (request line or pseudo-headers, and every header) → 431 beyond.
    pub max_header_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// A way to authenticate a registration request (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationAuth {
    MutualTls,
    MutualTlsByProxy,
    InitialAccessToken,
}

/// `[registration]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub authentication: Vec<RegistrationAuth>,
    pub require_matching_certificate: bool,
    pub allowed_grant_types: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub initial_access_token_uses: u32,
    pub initial_access_scope: String,
    pub max_body_bytes: usize,
    /// Live registrations bound to one certificate thumbprint.
    pub max_clients_per_certificate: u32,
    /// A registration without a valid software statement is refused.
    pub require_software_statement: bool,
    /// > 0: statements need `iat`, at most this old.
    #[serde(with = "humantime_serde_str")]
    pub software_statement_max_age: Duration,
    /// The directories whose statements are trusted.
    pub software_statement_issuers: Vec<StatementIssuer>,
}

/// `[[registration.software_statement_issuers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementIssuer {
    /// The statement's `iss`.
    pub issuer: String,
    /// A JWKS file with the issuer's public keys (read again on SIGHUP).
    pub jwks_file: PathBuf,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            authentication: vec![
                RegistrationAuth::MutualTls,
                RegistrationAuth::MutualTlsByProxy,
            ],
            require_matching_certificate: true,
            allowed_grant_types: vec![
                "client_credentials".into(),
                "authorization_code".into(),
                "refresh_token".into(),
            ],
            allowed_scopes: Vec::new(),
            initial_access_token_uses: 1,
            initial_access_scope: "dcr".into(),
            max_body_bytes: 64 * 1024,
            max_clients_per_certificate: 100,
            require_software_statement: false,
            software_statement_max_age: Duration::ZERO,
            software_statement_issuers: Vec::new(),
        }
    }
}

/// `[management]`: RFC 7592 behaviour and rotation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    #[serde(with = "humantime_serde_str")]
    pub registration_token_ttl: Duration,
    #[serde(with = "humantime_serde_str")]
    pub read_update_ttl: Duration,
    pub reuse_registration_access_token: bool,
    #[serde(with = "humantime_serde_str")]
    pub rotation_grace: Duration,
    pub rotate_client_secret: bool,
    pub require_same_certificate: bool,
    pub dcrm_scope: String,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            registration_token_ttl: Duration::from_secs(365 * 86_400),
            read_update_ttl: Duration::from_secs(28 * 86_400),
            reuse_registration_access_token: false,
            rotation_grace: Duration::ZERO,
            rotate_client_secret: true,
            require_same_certificate: false,
            dcrm_scope: "dcrm".into(),
        }
    }
}

/// `[tokens]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    #[serde(with = "humantime_serde_str")]
    pub access_token_ttl: Duration,
    /// Live access tokens per client; issuing one more revokes the oldest.
    pub max_active_per_client: u32,
    /// Shared store only: how long a node may reuse a positive edge-route token check.
    #[serde(with = "humantime_serde_str")]
    pub validation_cache_ttl: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(3600),
            max_active_per_client: 1000,
            validation_cache_ttl: Duration::from_secs(5),
        }
    }
}

/// Where the registry lives (`store.backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `dashmap`s in this process; journal and snapshots in `data_dir` when set.
    #[default]
    Memory,
    /// One PostgreSQL database shared by every node (SPEC §7a).
    Postgres,
}

/// `[store]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// Empty: memory only.
    pub data_dir: PathBuf,
    #[serde(with = "humantime_serde_str")]
    pub snapshot_interval: Duration,
    /// The database (`backend = "postgres"`); `CERTGATE_POSTGRES_URL` overrides it.
    pub postgres_url: String,
    pub postgres_pool_size: u32,
    /// PEM trust anchors for `sslmode=verify-full`; empty: the system's roots.
    pub postgres_ca: PathBuf,
    /// 32 random bytes, base64: the key that seals grace successors in the database.
    pub secret_key_file: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            data_dir: PathBuf::new(),
            snapshot_interval: Duration::from_secs(300),
            postgres_url: String::new(),
            postgres_pool_size: 16,
            postgres_ca: PathBuf::new(),
            secret_key_file: PathBuf::new(),
        }
    }
}

impl StoreConfig {
    /// The database URL: `CERTGATE_POSTGRES_URL` when set (so a password need not sit in
    /// the config file), else `postgres_url`.
    pub fn postgres_url(&self) -> String {
        std::env::var("CERTGATE_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.postgres_url.clone())
    }
}

/// `[[clients]]`: a statically configured client.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticClient {
    pub client_id: String,
    #[serde(default = "default_static_auth")]
    pub token_endpoint_auth_method: String,
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    pub tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    pub tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    pub tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    pub tls_client_auth_san_email: Option<String>,
    /// Hex SHA-256 of the secret, never the plaintext.
    #[serde(default)]
    pub client_secret_sha256: Option<String>,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub introspect: bool,
}

fn default_static_auth() -> String {
    "client_secret_basic".into()
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message names the key and shows the offending line.
            ConfigError(e.to_string().trim_end().to_owned())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        match url::Url::parse(&self.server.issuer) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                if u.query().is_some() || u.fragment().is_some() {
                    return bad("server.issuer", "must not have a query or fragment");
                }
            }
            _ => return bad("server.issuer", "must be an absolute http(s) URL"),
        }
        if !self.server.mtls_issuer.is_empty() && url::Url::parse(&self.server.mtls_issuer).is_err()
        {
            return bad("server.mtls_issuer", "must be empty or an absolute URL");
        }
        if http::HeaderName::try_from(self.proxy.header.to_ascii_lowercase()).is_err()
            && !self.proxy.header.is_empty()
        {
            return bad("proxy.header", "is not a valid HTTP header name");
        }
        for (i, subject) in self.proxy.trusted_proxy_subjects.iter().enumerate() {
            if crate::dn::Dn::parse(subject).is_none() {
                return bad(
                    &format!("proxy.trusted_proxy_subjects[{i}]"),
                    &format!("{subject:?} is not an RFC 4514 distinguished name"),
                );
            }
        }
        if !self.proxy.tls
            && (!self.proxy.trusted_proxy_subjects.is_empty()
                || !self.proxy.client_ca.as_os_str().is_empty())
        {
            let key = if self.proxy.trusted_proxy_subjects.is_empty() {
                "proxy.client_ca"
            } else {
                "proxy.trusted_proxy_subjects"
            };
            return bad(
                key,
                "needs proxy.tls = true: a plain-HTTP proxy listener sees no certificate",
            );
        }
        if self.limits.max_connections == 0 || self.limits.max_connections > MAX_CONNECTIONS {
            return bad(
                "limits.max_connections",
                &format!("must be between 1 and {MAX_CONNECTIONS}"),
            );
        }
        if self.limits.max_concurrent_streams == 0 {
            return bad("limits.max_concurrent_streams", "must be at least 1");
        }
        if self.limits.max_header_bytes < MIN_HEADER_BYTES {
            return bad(
                "limits.max_header_bytes",
                &format!("must be at least {MIN_HEADER_BYTES}"),
            );
        }
        let l = &self.limits;
        for (key, d) in [
            ("limits.handshake_timeout", l.handshake_timeout),
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.request_timeout", l.request_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.drain_timeout", l.drain_timeout),
        ] {
            check_timeout(key, d)?;
        }
        let m = &self.management;
        for (key, d, zero_means_off) in [
            (
                "management.registration_token_ttl",
                m.registration_token_ttl,
                false,
            ),
            ("management.read_update_ttl", m.read_update_ttl, false),
            ("management.rotation_grace", m.rotation_grace, true),
            (
                "tokens.access_token_ttl",
                self.tokens.access_token_ttl,
                false,
            ),
            (
                "store.snapshot_interval",
                self.store.snapshot_interval,
                false,
            ),
        ] {
            check_seconds(key, d, zero_means_off)?;
        }
        if self.management.read_update_ttl > self.management.registration_token_ttl {
            return bad(
                "management.read_update_ttl",
                "must not exceed management.registration_token_ttl",
            );
        }
        if self.registration.max_clients_per_certificate == 0 {
            return bad(
                "registration.max_clients_per_certificate",
                "must be at least 1",
            );
        }
        if self.tokens.max_active_per_client == 0 {
            return bad("tokens.max_active_per_client", "must be at least 1");
        }
        if self.store.backend == Backend::Postgres {
            if self.store.postgres_url().is_empty() {
                return bad(
                    "store.postgres_url",
                    "backend \"postgres\" needs a database URL (or CERTGATE_POSTGRES_URL)",
                );
            }
            if self.store.postgres_pool_size == 0 {
                return bad("store.postgres_pool_size", "must be at least 1");
            }
            if !self.store.data_dir.as_os_str().is_empty() {
                return bad(
                    "store.data_dir",
                    "is for the memory backend; the postgres backend keeps nothing on local disk",
                );
            }
            if !self.management.rotation_grace.is_zero()
                && self.store.secret_key_file.as_os_str().is_empty()
            {
                return bad(
                    "store.secret_key_file",
                    "management.rotation_grace > 0 with the postgres backend needs a key to seal \
                     grace successors (32 random bytes, base64: openssl rand -base64 32)",
                );
            }
        }
        if self.registration.max_body_bytes == 0 {
            return bad("registration.max_body_bytes", "must be at least 1");
        }
        if self.registration.initial_access_scope.is_empty()
            || self.registration.initial_access_scope.contains(' ')
        {
            return bad(
                "registration.initial_access_scope",
                "must be one scope token",
            );
        }
        if self.management.dcrm_scope.is_empty() || self.management.dcrm_scope.contains(' ') {
            return bad("management.dcrm_scope", "must be one scope token");
        }
        if self.registration.initial_access_token_uses == 0 {
            return bad(
                "registration.initial_access_token_uses",
                "must be at least 1",
            );
        }
        const GRANTS: [&str; 3] = ["client_credentials", "authorization_code", "refresh_token"];
        for g in &self.registration.allowed_grant_types {
            if !GRANTS.contains(&g.as_str()) {
                return bad(
                    "registration.allowed_grant_types",
                    &format!("unknown grant type {g:?} (known: {})", GRANTS.join(", ")),
                );
            }
        }
        for s in &self.registration.allowed_scopes {
            if *s == self.management.dcrm_scope || *s == self.registration.initial_access_scope {
                return bad(
                    "registration.allowed_scopes",
                    &format!("{s:?} is reserved for static clients"),
                );
            }
        }
        self.validate_routes()?;
        let mut issuers = std::collections::HashSet::new();
        for (i, iss) in self
            .registration
            .software_statement_issuers
            .iter()
            .enumerate()
        {
            let key = format!("registration.software_statement_issuers[{i}]");
            if iss.issuer.is_empty() {
                return bad(&format!("{key}.issuer"), "must not be empty");
            }
            if !issuers.insert(iss.issuer.as_str()) {
                return bad(
                    &format!("{key}.issuer"),
                    &format!("duplicate {:?}", iss.issuer),
                );
            }
            if iss.jwks_file.as_os_str().is_empty() {
                return bad(&format!("{key}.jwks_file"), "must name a JWKS file");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = |k: &str| format!("clients[{i}].{k}");
            if c.client_id.is_empty() {
                return bad(&key("client_id"), "must not be empty");
            }
            if !seen.insert(c.client_id.as_str()) {
                return bad(&key("client_id"), &format!("duplicate {:?}", c.client_id));
            }
            match c.token_endpoint_auth_method.as_str() {
                "client_secret_basic" | "client_secret_post" => {
                    let ok = c.client_secret_sha256.as_deref().is_some_and(|h| {
                        h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
                    });
                    if !ok {
                        return bad(
                            &key("client_secret_sha256"),
                            "secret-based clients need the hex SHA-256 of their secret",
                        );
                    }
                }
                "tls_client_auth" => {
                    let n = [
                        &c.tls_client_auth_subject_dn,
                        &c.tls_client_auth_san_dns,
                        &c.tls_client_auth_san_uri,
                        &c.tls_client_auth_san_ip,
                        &c.tls_client_auth_san_email,
                    ]
                    .iter()
                    .filter(|v| v.is_some())
                    .count();
                    if n != 1 {
                        return bad(
                            &key("token_endpoint_auth_method"),
                            "tls_client_auth needs exactly one tls_client_auth_* field",
                        );
                    }
                }
                other => {
                    return bad(
                        &key("token_endpoint_auth_method"),
                        &format!(
                            "unsupported {other:?} (client_secret_basic, client_secret_post, tls_client_auth)"
                        ),
                    )
                }
            }
        }
        Ok(())
    }

    /// `[[routes]]` shape (files are read by `route::Table`, at start-up and by check-config).
    fn validate_routes(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let bad = |k: &str, why: String| {
                Err(ConfigError(format!(
                    "routes[{i}].{k} ({}): {why}",
                    r.path_prefix
                )))
            };
            let p = &r.path_prefix;
            if !p.starts_with('/') || !p.ends_with('/') {
                return bad("path_prefix", "must start and end with \"/\"".into());
            }
            if p.contains("//") || p.split('/').any(|seg| seg == "." || seg == "..") {
                return bad("path_prefix", "must be a plain path".into());
            }
            if let Some(own) = OWN_PATHS.iter().find(|own| p.starts_with(**own)) {
                return bad(
                    "path_prefix",
                    format!("shadows certgate's own {own} (its own paths always win)"),
                );
            }
            if !seen.insert(p.as_str()) {
                return bad("path_prefix", "another route has the same prefix".into());
            }
            match url::Url::parse(&r.upstream) {
                Ok(u)
                    if (u.scheme() == "http" || u.scheme() == "https")
                        && u.host().is_some()
                        && u.query().is_none()
                        && u.fragment().is_none()
                        && u.username().is_empty()
                        && u.password().is_none() => {}
                _ => {
                    return bad(
                        "upstream",
                        format!(
                            "{:?} is not an http:// or https:// URL (host, optional path; no query or credentials)",
                            r.upstream
                        ),
                    )
                }
            }
            if !r.required_scope.is_empty()
                && !r
                    .required_scope
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return bad("required_scope", "must be one scope token".into());
            }
            check_timeout(&format!("routes[{i}].timeout"), r.timeout)?;
        }
        Ok(())
    }

    /// Legal but dangerous settings (SPEC §8), one line each naming the key: `check-config`
    /// and start-up print them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for net in &self.proxy.trusted_proxies {
            if net.prefix_len() == 0 {
                out.push(format!(
                    "proxy.trusted_proxies: {net} trusts every address: any client that reaches \
                     proxy_listen can claim any certificate"
                ));
            }
        }
        if self.server.issuer.starts_with("http://") {
            out.push(
                "server.issuer: an http:// issuer sends tokens and secrets in clear text".into(),
            );
        }
        for (key, addr) in [
            ("server.admin_listen", self.server.admin_listen),
            ("server.proxy_listen", self.server.proxy_listen),
        ] {
            if let Some(addr) = addr.filter(|a| a.ip().is_unspecified()) {
                out.push(format!(
                    "{key}: {addr} listens on every interface; bind it where only trusted \
                     hosts can reach it"
                ));
            }
        }
        if let Some(addr) = self.server.proxy_listen {
            if !self.proxy.tls && !addr.ip().is_loopback() {
                out.push(format!(
                    "proxy.tls = false while server.proxy_listen ({addr}) is not on loopback: \
                     forwarded certificates and tokens cross the network in clear text"
                ));
            }
            if self.proxy.tls && self.proxy.trusted_proxy_subjects.is_empty() {
                out.push(
                    "proxy.trusted_proxy_subjects is empty: proxies are trusted by their address \
                     alone"
                        .into(),
                );
            }
        }
        if !self.management.require_same_certificate && !self.management.rotation_grace.is_zero() {
            out.push(
                "management.rotation_grace: a replayed (possibly stolen) token gets the \
                 successor without the bound certificate unless \
                 management.require_same_certificate = true"
                    .into(),
            );
        }
        out
    }

    /// The base URL of the mTLS endpoint aliases (SPEC §6a.13).
    pub fn mtls_issuer(&self) -> &str {
        if self.server.mtls_issuer.is_empty() {
            &self.server.issuer
        } else {
            &self.server.mtls_issuer
        }
    }

    /// The issuer without a trailing slash, for building endpoint URLs.
    pub fn issuer_base(&self) -> &str {
        self.server.issuer.trim_end_matches('/')
    }
}

/// Above this, `max_connections` could not be represented by the connection semaphores.
const MAX_CONNECTIONS: u64 = u32::MAX as u64;

/// A request line and a handful of ordinary headers must always fit.
const MIN_HEADER_BYTES: u32 = 1024;

/// Longer than any sensible lifetime or timeout, and far from where `Instant + Duration`
/// overflows.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Token lifetimes and windows count whole seconds (SPEC §6): a fraction would silently be
/// cut off, so it is an error instead.
fn check_seconds(key: &str, d: Duration, zero_means_off: bool) -> Result<(), ConfigError> {
    let shown = humantime::format_duration(d);
    if d.subsec_nanos() != 0 {
        return Err(ConfigError(format!(
            "{key}: must be whole seconds (got {shown})"
        )));
    }
    if d.is_zero() && !zero_means_off {
        return Err(ConfigError(format!("{key}: must be longer than 0s")));
    }
    check_max(key, d)
}

/// Timeouts may be given in milliseconds, not finer, and must be > 0.
fn check_timeout(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(ConfigError(format!(
            "{key}: finer than millisecond precision (got {})",
            humantime::format_duration(d)
        )));
    }
    if d.is_zero() {
        return Err(ConfigError(format!("{key}: must be longer than 0s")));
    }
    check_max(key, d)
}

fn check_max(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d > MAX_DURATION {
        return Err(ConfigError(format!(
            "{key}: {} is too long (at most 100 years)",
            humantime::format_duration(d)
        )));
    }
    Ok(())
}

fn opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("{s:?} is not an address like 127.0.0.1:8080"))
    })
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| {
            // A bare address means a single host.
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{s:?} is not a CIDR like 10.0.0.0/8"))
                })
        })
        .collect()
}

/// Durations as strings: "30s", "1h", "28d".
mod humantime_serde_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"30s\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(
            c.management.read_update_ttl,
            Duration::from_secs(28 * 86_400)
        );
        assert_eq!(c.registration.max_body_bytes, 65_536);
        assert_eq!(c.proxy.header_name().as_str(), "x-ssl-client-cert");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[management]\nreuse_registration_acess_token = true\n").unwrap_err();
        assert!(e.0.contains("reuse_registration_acess_token"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = Config::parse("[management]\nrotation_grace = \"soon\"\n").unwrap_err();
        assert!(e.0.contains("rotation_grace"), "{e}");
    }

    #[test]
    fn empty_trusted_proxies_trusts_nobody() {
        let c = Config::parse("[proxy]\ntrusted_proxies = []\n").unwrap();
        assert!(!c.proxy.is_trusted("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_plain_proxy_listener_off_loopback_and_an_address_only_tls_one_are_warned_about() {
        let c = Config::parse("[server]\nproxy_listen = \"10.0.0.5:8080\"\n").unwrap();
        assert!(c.warnings().iter().any(|w| w.contains("clear text")));
        let c = Config::parse("[server]\nproxy_listen = \"127.0.0.1:8080\"\n[proxy]\ntls = true\n")
            .unwrap();
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("proxy.trusted_proxy_subjects")));
        assert!(Config::parse("").unwrap().warnings().is_empty());
    }

    #[test]
    fn mapped_ipv4_is_trusted_like_ipv4() {
        let c = Config::parse("").unwrap();
        assert!(c.proxy.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.proxy.is_trusted("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn whole_second_fields_refuse_fractions_and_name_the_key() {
        let e = Config::parse("[management]\nread_update_ttl = \"500ms\"\n").unwrap_err();
        assert!(e.0.starts_with("management.read_update_ttl:"), "{e}");
        let e = Config::parse("[management]\nrotation_grace = \"2500ms\"\n").unwrap_err();
        assert!(e.0.starts_with("management.rotation_grace:"), "{e}");
        // Zero means off for the grace, and is refused for lifetimes.
        assert!(Config::parse("[management]\nrotation_grace = \"0s\"\n").is_ok());
        let e = Config::parse("[tokens]\naccess_token_ttl = \"0s\"\n").unwrap_err();
        assert!(e.0.starts_with("tokens.access_token_ttl:"), "{e}");
    }

    #[test]
    fn timeouts_take_milliseconds_but_nothing_finer() {
        let c = Config::parse("[limits]\nheader_read_timeout = \"250ms\"\n").unwrap();
        assert_eq!(c.limits.header_read_timeout, Duration::from_millis(250));
        let e = Config::parse("[limits]\nheader_read_timeout = \"250us\"\n").unwrap_err();
        assert!(e.0.starts_with("limits.header_read_timeout:"), "{e}");
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for text in [
            "[store]\nsnapshot_interval = \"1000000y\"\n",
            "[limits]\nidle_timeout = \"584942417355y\"\n",
            "[management]\nregistration_token_ttl = \"99999999999999999999999d\"\n",
        ] {
            assert!(Config::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn max_connections_must_fit_the_semaphores() {
        assert!(Config::parse("[limits]\nmax_connections = 4294967295\n").is_ok());
        let e = Config::parse("[limits]\nmax_connections = 4294967296\n").unwrap_err();
        assert!(e.0.starts_with("limits.max_connections:"), "{e}");
        assert!(Config::parse("[limits]\nmax_connections = 0\n").is_err());
    }

    #[test]
    fn dangerous_settings_warn_once_each() {
        assert!(Config::parse("").unwrap().warnings().is_empty());
        let c = Config::parse(
            "[server]\nissuer = \"http://x\"\nproxy_listen = \"[::]:8080\"\n\
             [proxy]\ntrusted_proxies = [\"::/0\"]\n[management]\nrotation_grace = \"5s\"\n",
        )
        .unwrap();
        let w = c.warnings();
        // proxy_listen twice: on every interface, and in clear text.
        assert_eq!(w.len(), 5, "{w:?}");
        for key in [
            "proxy.trusted_proxies",
            "server.issuer",
            "server.proxy_listen",
            "proxy.tls",
            "management.rotation_grace",
        ] {
            assert_eq!(w.iter().filter(|l| l.starts_with(key)).count(), 1, "{w:?}");
        }
        let quiet = Config::parse(
            "[management]\nrotation_grace = \"5s\"\nrequire_same_certificate = true\n",
        )
        .unwrap();
        assert!(quiet.warnings().is_empty());
    }

    #[test]
    fn routes_are_validated_naming_the_route() {
        let route = |prefix: &str, upstream: &str| {
            format!("[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n")
        };
        assert!(Config::parse(&route("/api/", "http://127.0.0.1:9000")).is_ok());
        assert!(Config::parse(&route("/", "https://api.internal/base")).is_ok());
        for (text, needle) in [
            (route("/api", "http://a"), "routes[0].path_prefix (/api)"),
            (route("api/", "http://a"), "routes[0].path_prefix"),
            (
                route("/token/", "http://a"),
                "shadows certgate's own /token",
            ),
            (
                route("/registerx/", "http://a"),
                "shadows certgate's own /register",
            ),
            (route("/.well-known/x/", "http://a"), "/.well-known/"),
            (route("/a/../b/", "http://a"), "plain path"),
            (route("/api/", "ftp://a"), "routes[0].upstream"),
            (route("/api/", "http://a/?q=1"), "routes[0].upstream"),
            (route("/api/", "http://user:pw@a"), "routes[0].upstream"),
            (
                format!(
                    "{}{}",
                    route("/api/", "http://a"),
                    route("/api/", "http://b")
                ),
                "routes[1].path_prefix (/api/): another route has the same prefix",
            ),
            (
                format!("{}timeout = \"0s\"\n", route("/api/", "http://a")),
                "routes[0].timeout",
            ),
            (
                format!("{}required_scope = \"a b\"\n", route("/api/", "http://a")),
                "routes[0].required_scope",
            ),
        ] {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.0.contains(needle), "{needle:?} not in {e}");
        }
    }

    #[test]
    fn reserved_scope_cannot_be_allowed() {
        let e = Config::parse("[registration]\nallowed_scopes = [\"dcrm\"]\n").unwrap_err();
        assert!(e.0.contains("registration.allowed_scopes"), "{e}");
    }
}
