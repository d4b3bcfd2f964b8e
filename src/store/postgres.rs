//! The shared store: one PostgreSQL database, any number of certgate nodes (SPEC §7a).
//!
//! Every change is one statement (or one short transaction) that commits before the answer
//! is sent. Rotation is a conditional `UPDATE … WHERE version = $old`: under READ COMMITTED
//! a second writer of the same row waits for the first to commit, re-evaluates its `WHERE`
//! against the new row, and updates nothing — so of N nodes racing on one token exactly one
//! wins, with no `SELECT … FOR UPDATE` and one round trip. Initial-access uses are spent with
//! `uses_left > 0` in the `WHERE`, registration quotas with a conditional upsert.
//!
//! The node starts whether or not the database answers: until it does (and until the
//! schema is migrated, under an advisory lock), requests that need it get 503 and
//! `/healthz` says why; connections that die are replaced by the pool on next use.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::Notify;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::memory::ByDigest;
use super::seal::SealKey;
use super::{codec, FoundToken, StoreError};
use crate::clock::Clock;
use crate::metadata::Registered;
use crate::model::{AccessToken, ClientRecord, Grace, RegToken};
use crate::secret::Digest;

/// The schema this release knows, in order; each entry runs once, in one transaction.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE clients (
    client_id    text PRIMARY KEY,
    version      bigint NOT NULL,
    issued_at    bigint NOT NULL,
    metadata     text NOT NULL,
    rules        bytea NOT NULL,
    secret       bytea,
    bound        bytea,
    rat          bytea NOT NULL,
    rat_iat      bigint NOT NULL,
    rat_revoked  boolean NOT NULL,
    grace_rat    bytea,
    grace_at     bigint,
    grace_sealed bytea
);
CREATE UNIQUE INDEX clients_rat ON clients (rat);
CREATE UNIQUE INDEX clients_grace_rat ON clients (grace_rat) WHERE grace_rat IS NOT NULL;
CREATE TABLE tokens (
    digest    bytea PRIMARY KEY,
    client_id text NOT NULL,
    owner     text REFERENCES clients (client_id) ON DELETE CASCADE,
    scope     text NOT NULL,
    iat       bigint NOT NULL,
    exp       bigint NOT NULL,
    cnf       bytea,
    uses_left integer
);
CREATE INDEX tokens_client ON tokens (client_id, iat);
CREATE INDEX tokens_owner ON tokens (owner) WHERE owner IS NOT NULL;
CREATE INDEX tokens_exp ON tokens (exp);
CREATE INDEX tokens_spent ON tokens (digest) WHERE uses_left = 0;
CREATE TABLE cert_quota (
    thumbprint bytea PRIMARY KEY,
    n          integer NOT NULL
);
"#,
)];

/// The statement finding a client by a registration token digest: two index look-ups, not
/// one `OR`, for which PostgreSQL cannot use the partial grace index and scanned the whole
/// table (3 ms at 8 000 clients, on every management request). Public for the test that
/// keeps it that way.
pub fn reg_token_lookup() -> String {
    format!(
        "SELECT {CLIENT_COLUMNS} FROM clients WHERE rat = $1 AND NOT rat_revoked \
         UNION ALL \
         SELECT {CLIENT_COLUMNS} FROM clients WHERE grace_rat = $1 \
         LIMIT 1"
    )
}

/// Advisory lock keys (arbitrary constants, "certgate" in ASCII and a purpose).
const MIGRATION_LOCK: i64 = 0x6365_7274_6761_0001;
const SWEEP_LOCK: i64 = 0x6365_7274_6761_0002;

/// Expired tokens deleted per statement: short transactions, no long row locks.
const SWEEP_BATCH: i64 = 1000;

const CLIENT_COLUMNS: &str = "client_id, version, issued_at, metadata, rules, secret, bound, \
     rat, rat_iat, rat_revoked, grace_rat, grace_at, grace_sealed";

/// Everything the store needs from the configuration, prepared (and checked) without
/// touching the network: `check-config` runs this too.
pub struct PgSettings {
    config: tokio_postgres::Config,
    tls: rustls::ClientConfig,
    pool_size: usize,
    seal: Option<SealKey>,
}

impl PgSettings {
    /// Reads `[store]`: the URL (with `sslmode`), the CA file, the seal key.
    pub fn from_config(c: &crate::config::Config) -> Result<Self, String> {
        let url = c.store.postgres_url();
        let (rest, sslmode) = split_sslmode(&url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| format!("store.postgres_url: not a PostgreSQL connection string: {e}"))?;
        config
            .application_name("certgate")
            .connect_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(30));
        let tls = client_tls(sslmode, &c.store.postgres_ca)?;
        config.ssl_mode(match sslmode {
            SslChoice::Disable => SslMode::Disable,
            SslChoice::Prefer => SslMode::Prefer,
            SslChoice::Require | SslChoice::VerifyFull => SslMode::Require,
        });
        let seal = if c.store.secret_key_file.as_os_str().is_empty() {
            None
        } else {
            Some(
                SealKey::load(&c.store.secret_key_file)
                    .map_err(|e| format!("store.secret_key_file: {e}"))?,
            )
        };
        Ok(Self {
            config,
            tls,
            pool_size: c.store.postgres_pool_size as usize,
            seal,
        })
    }

    fn pool(self) -> Result<(Pool, Option<SealKey>), String> {
        let manager = Manager::from_config(
            self.config,
            MakeRustlsConnect::new(self.tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("store: cannot build the connection pool: {e}"))?;
        Ok((pool, self.seal))
    }
}

/// `sslmode` as certgate understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslChoice {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without verification (libpq's default).
    Prefer,
    /// TLS, without verification (as in libpq: encryption, not authentication).
    Require,
    /// TLS, chain and host name verified against `store.postgres_ca` or the system roots;
    /// a certificate that does not verify means no connection.
    VerifyFull,
}

/// Takes `sslmode` out of a URL or key=value connection string (tokio-postgres does not
/// know `verify-full`); never quotes the string, which may hold a password.
fn split_sslmode(url: &str) -> Result<(String, SslChoice), String> {
    let parse = |v: &str| {
        match v {
        "disable" => Ok(SslChoice::Disable),
        "prefer" => Ok(SslChoice::Prefer),
        "require" => Ok(SslChoice::Require),
        "verify-full" => Ok(SslChoice::VerifyFull),
        other => Err(format!(
            "store.postgres_url: sslmode={other} is not supported (disable, prefer, require, verify-full)"
        )),
    }
    };
    let mut mode = SslChoice::Prefer;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url)
            .map_err(|_| "store.postgres_url: not a valid postgres:// URL".to_owned())?;
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            if k == "sslmode" {
                mode = parse(&v)?;
            } else {
                kept.push((k.into_owned(), v.into_owned()));
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        return Ok((parsed.to_string(), mode));
    }
    let mut kept = Vec::new();
    for part in url.split_whitespace() {
        match part.strip_prefix("sslmode=") {
            Some(v) => mode = parse(v)?,
            None => kept.push(part),
        }
    }
    Ok((kept.join(" "), mode))
}

/// The rustls client configuration for the database connection.
fn client_tls(mode: SslChoice, ca: &Path) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("store: TLS: {e}"))?;
    if mode != SslChoice::VerifyFull {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    if ca.as_os_str().is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(
                "store.postgres_ca: sslmode=verify-full needs trust anchors and the system has none; name a PEM file".into(),
            );
        }
    } else {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("store.postgres_ca: {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "store.postgres_ca: {}: no PEM certificate found",
                ca.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("store.postgres_ca: {}: {e}", ca.display()))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `sslmode=prefer|require`: encryption without authentication, as libpq does it. (The
/// handshake signature is still checked, so the peer holds the key of what it shows.)
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether the database can be used, and why not.
struct Health {
    /// The schema is migrated: requests may run.
    ready: AtomicBool,
    /// The last use of the database succeeded.
    healthy: AtomicBool,
    problem: Mutex<String>,
    /// Set for problems no retry fixes (a schema newer than this release).
    fatal: AtomicBool,
    fatal_notify: Notify,
}

impl Health {
    fn trouble(&self, why: String) {
        self.healthy.store(false, Ordering::SeqCst);
        if let Ok(mut p) = self.problem.lock() {
            *p = why;
        }
    }

    fn fine(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }

    fn problem(&self) -> String {
        self.problem
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|_| "unknown".into())
    }
}

/// The shared store.
pub struct PgStore {
    pool: Pool,
    seal: Option<Arc<SealKey>>,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    /// The records this node last committed, by current registration token digest
    /// ([`PgStore::recent_by_reg_token`]).
    recent: DashMap<Digest, Arc<ClientRecord>, ByDigest>,
    /// Bytes of metadata remembered in `recent` since it last started over.
    recent_bytes: AtomicUsize,
}

/// Records kept in `PgStore::recent` at most; a full cache starts over.
const RECENT_MAX: usize = 16 * 1024;

/// Metadata bytes remembered in `PgStore::recent` before it starts over: large clients
/// (metadata up to `max_body_bytes` each) must not make it hold gigabytes.
const RECENT_MAX_BYTES: usize = 16 << 20;

/// Why migrating failed.
#[derive(Debug)]
pub enum MigrateError {
    /// The database holds a schema a newer release wrote.
    TooNew(i32),
    /// Anything that may pass (the database is down, say).
    Other(String),
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooNew(v) => write!(
                f,
                "the database schema is version {v}, newer than this release knows ({}): upgrade certgate",
                latest()
            ),
            Self::Other(why) => f.write_str(why),
        }
    }
}

fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

fn db_error(e: impl std::fmt::Display) -> String {
    format!("database: {e}")
}

/// Applies every migration the database lacks, under an advisory lock (several nodes may
/// start at once); refuses a schema newer than this release.
pub async fn migrate(pool: &Pool) -> Result<(), MigrateError> {
    let other = |e: &dyn std::fmt::Display| MigrateError::Other(db_error(e));
    let mut client = pool.get().await.map_err(|e| other(&e))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| other(&e))?;
    let result = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS certgate_schema (version integer NOT NULL)")
            .await
            .map_err(|e| other(&e))?;
        let current: i32 = client
            .query_opt("SELECT max(version) FROM certgate_schema", &[])
            .await
            .map_err(|e| other(&e))?
            .and_then(|row| row.get::<_, Option<i32>>(0))
            .unwrap_or(0);
        if current > latest() {
            return Err(MigrateError::TooNew(current));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let tx = client.transaction().await.map_err(|e| other(&e))?;
            tx.batch_execute(sql).await.map_err(|e| other(&e))?;
            tx.execute("DELETE FROM certgate_schema", &[])
                .await
                .map_err(|e| other(&e))?;
            tx.execute(
                "INSERT INTO certgate_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(|e| other(&e))?;
            tx.commit().await.map_err(|e| other(&e))?;
            tracing::info!(version, "database schema migrated");
        }
        Ok(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

/// Connects and migrates once (`certgate migrate`, and `migrate-store`'s target).
pub async fn connect_and_migrate(settings: PgSettings) -> Result<Pool, String> {
    let (pool, _) = settings.pool()?;
    migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok(pool)
}

// === impl PgStore ===

impl PgStore {
    /// Starts the store: the pool connects on first use, and a background task migrates
    /// the schema (retrying until the database answers), then sweeps expired tokens and
    /// watches the database's health. Must run inside a tokio runtime.
    pub fn start(settings: PgSettings, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let (pool, seal) = settings.pool()?;
        let health = Arc::new(Health {
            ready: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            problem: Mutex::new("database: not reached yet".into()),
            fatal: AtomicBool::new(false),
            fatal_notify: Notify::new(),
        });
        tokio::spawn(maintain(pool.clone(), health.clone(), clock.clone()));
        Ok(Self {
            pool,
            seal: seal.map(Arc::new),
            health,
            clock,
            recent: DashMap::default(),
            recent_bytes: AtomicUsize::new(0),
        })
    }

    /// The record this node last committed for the registration token `digest`, without
    /// asking the database. Another node may have changed it since: it is only good for a
    /// decision that a compare-and-set then commits (a stale one conflicts, and is
    /// forgotten). A rotation served by the node that made the previous one thus costs one
    /// round trip instead of two.
    pub fn recent_by_reg_token(&self, digest: &Digest) -> Option<Arc<ClientRecord>> {
        self.recent.get(digest).map(|r| r.value().clone())
    }

    /// Remembers `rec` as committed (unless its token is revoked).
    fn remember(&self, rec: ClientRecord) {
        if rec.reg_token.revoked {
            return;
        }
        let bytes = rec.metadata.json().len() + 256;
        if self.recent.len() >= RECENT_MAX
            || self.recent_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > RECENT_MAX_BYTES
        {
            self.recent.clear();
            self.recent_bytes.store(bytes, Ordering::Relaxed);
        }
        self.recent.insert(rec.reg_token.digest, Arc::new(rec));
    }

    fn forget(&self, rec: &ClientRecord) {
        self.recent.remove(&rec.reg_token.digest);
    }

    async fn conn(&self) -> Result<deadpool_postgres::Client, StoreError> {
        if !self.health.ready.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(self.health.problem()));
        }
        self.pool.get().await.map_err(|e| self.failed(e))
    }

    /// A database failure: the node is not healthy until the next success.
    fn failed(&self, e: impl std::fmt::Display) -> StoreError {
        let why = db_error(e);
        self.health.trouble(why.clone());
        StoreError::Unavailable(why)
    }

    fn ok<T>(&self, v: T) -> Result<T, StoreError> {
        self.health.fine();
        Ok(v)
    }

    /// Maps a statement's error: constraint violations are conflicts (another node got
    /// there first), anything else is the database being unavailable.
    fn sql(&self, e: tokio_postgres::Error) -> StoreError {
        match e.code() {
            Some(c)
                if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION =>
            {
                StoreError::Conflict
            }
            _ => self.failed(e),
        }
    }

    /// The client `id`.
    pub async fn client(&self, id: &str) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1"
            ))
            .await
            .map_err(|e| self.sql(e))?;
        let row = c.query_opt(&stmt, &[&id]).await.map_err(|e| self.sql(e))?;
        let rec = row.map(|r| self.record(&r)).transpose()?;
        self.ok(rec.map(Arc::new))
    }

    /// The client whose live registration token (or just-replaced one) has `digest`.
    pub async fn client_by_reg_token(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(&reg_token_lookup())
            .await
            .map_err(|e| self.sql(e))?;
        let row = c
            .query_opt(&stmt, &[&digest.as_slice()])
            .await
            .map_err(|e| self.sql(e))?;
        let rec = row.map(|r| self.record(&r)).transpose()?;
        self.ok(rec.map(Arc::new))
    }

    /// Inserts a new client; spends one use of `initial` in the same transaction.
    pub async fn register(
        &self,
        client: ClientRecord,
        initial: Option<Digest>,
        quota: u32,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let row = self.columns(&client);
        let insert = match client.bound {
            // The quota upsert and the insert are one statement: both or neither.
            Some(_) => format!(
                "WITH q AS (\
                   INSERT INTO cert_quota (thumbprint, n) VALUES ($7, 1) \
                   ON CONFLICT (thumbprint) DO UPDATE SET n = cert_quota.n + 1 \
                   WHERE cert_quota.n < $14 RETURNING n) \
                 INSERT INTO clients ({CLIENT_COLUMNS}) \
                 SELECT $1::text, $2::bigint, $3::bigint, $4::text, $5::bytea, $6::bytea, \
                        $7::bytea, $8::bytea, $9::bigint, $10::boolean, $11::bytea, \
                        $12::bigint, $13::bytea FROM q"
            ),
            None => format!(
                "INSERT INTO clients ({CLIENT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
        };
        let quota = i32::try_from(quota).unwrap_or(i32::MAX);
        let mut params = row.params();
        if client.bound.is_some() {
            params.push(&quota);
        }
        let Some(digest) = initial else {
            let stmt = c.prepare_cached(&insert).await.map_err(|e| self.sql(e))?;
            let n = c.execute(&stmt, &params).await.map_err(|e| self.sql(e))?;
            if n != 1 {
                return Err(StoreError::Quota);
            }
            drop(params);
            self.remember(client);
            return self.ok(());
        };
        let tx = c.transaction().await.map_err(|e| self.sql(e))?;
        let now = self.clock.now() as i64;
        let spent = tx
            .execute(
                "UPDATE tokens SET uses_left = uses_left - 1 \
                 WHERE digest = $1 AND uses_left > 0 AND exp > $2",
                &[&digest.as_slice(), &now],
            )
            .await
            .map_err(|e| self.sql(e))?;
        if spent != 1 {
            return Err(StoreError::Spent);
        }
        let n = tx
            .execute(&insert, &params)
            .await
            .map_err(|e| self.sql(e))?;
        if n != 1 {
            return Err(StoreError::Quota);
        }
        tx.commit().await.map_err(|e| self.sql(e))?;
        drop(params);
        self.remember(client);
        self.ok(())
    }

    /// Replaces `old` with `new` if `old` is still the committed version.
    pub async fn replace(&self, old: &ClientRecord, new: ClientRecord) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE clients SET version = version + 1, metadata = $3, rules = $4, \
                 secret = $5, rat = $6, rat_iat = $7, rat_revoked = $8, grace_rat = $9, \
                 grace_at = $10, grace_sealed = $11 \
                 WHERE client_id = $1 AND version = $2 AND rat = $12",
            )
            .await
            .map_err(|e| self.sql(e))?;
        let row = self.columns(&new);
        let version = old.version as i64;
        // The token as well as the version: a database restored from a backup under
        // running nodes reuses versions, and a node's copy of the record must not match then.
        let old_rat = old.reg_token.digest.as_slice();
        let id: &str = &old.client_id;
        let n = c
            .execute(
                &stmt,
                &[
                    &id,
                    &version,
                    &row.metadata,
                    &row.rules,
                    &row.secret,
                    &row.rat,
                    &row.rat_iat,
                    &row.rat_revoked,
                    &row.grace_rat,
                    &row.grace_at,
                    &row.grace_sealed,
                    &old_rat,
                ],
            )
            .await
            .map_err(|e| self.sql(e))?;
        self.forget(old);
        if n == 1 {
            self.remember(ClientRecord {
                version: old.version + 1,
                ..new
            });
            self.ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// Deletes `old` (its access tokens go by cascade) if it is still the committed version.
    pub async fn delete(&self, old: &ClientRecord) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "WITH d AS (DELETE FROM clients \
                            WHERE client_id = $1 AND version = $2 AND rat = $3 \
                            RETURNING bound), \
                      u AS (UPDATE cert_quota SET n = n - 1 FROM d \
                            WHERE cert_quota.thumbprint = d.bound RETURNING 1) \
                 SELECT count(*) FROM d",
            )
            .await
            .map_err(|e| self.sql(e))?;
        let version = old.version as i64;
        self.forget(old);
        let id: &str = &old.client_id;
        let row = c
            .query_one(&stmt, &[&id, &version, &old.reg_token.digest.as_slice()])
            .await
            .map_err(|e| self.sql(e))?;
        if row.get::<_, i64>(0) == 1 {
            self.ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// The access token with digest `digest`.
    pub async fn access_token(&self, digest: &Digest) -> Result<Option<FoundToken>, StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "SELECT client_id, owner IS NOT NULL, scope, iat, exp, cnf, uses_left \
                 FROM tokens WHERE digest = $1",
            )
            .await
            .map_err(|e| self.sql(e))?;
        let row = c
            .query_opt(&stmt, &[&digest.as_slice()])
            .await
            .map_err(|e| self.sql(e))?;
        let found = row
            .map(|r| {
                Ok::<_, StoreError>(FoundToken {
                    token: Arc::new(AccessToken {
                        client_id: r.get(0),
                        dynamic: r.get(1),
                        scope: r.get(2),
                        iat: r.get::<_, i64>(3) as u64,
                        exp: r.get::<_, i64>(4) as u64,
                        cnf: opt32(r.get(5))?,
                        uses_left: r.get::<_, Option<i32>>(6).map(|n| n.max(0) as u32),
                    }),
                    // A deleted client's tokens are deleted with it.
                    client_alive: true,
                })
            })
            .transpose()?;
        self.ok(found)
    }

    /// Stores a new access token and revokes the client's oldest live ones beyond
    /// `max_active`, in one statement.
    pub async fn issue_token(
        &self,
        digest: Digest,
        token: AccessToken,
        max_active: u32,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached(
                "WITH ins AS (\
                   INSERT INTO tokens (digest, client_id, owner, scope, iat, exp, cnf, uses_left) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING 1) \
                 DELETE FROM tokens WHERE digest IN (\
                   SELECT digest FROM tokens \
                   WHERE client_id = $2 AND exp > $9 AND uses_left IS DISTINCT FROM 0 \
                   ORDER BY iat DESC, digest OFFSET $10)",
            )
            .await
            .map_err(|e| self.sql(e))?;
        let owner = token.dynamic.then_some(token.client_id.as_str());
        let (iat, exp) = (token.iat as i64, token.exp as i64);
        let cnf = token.cnf.as_ref().map(|c| c.as_slice());
        let uses = token
            .uses_left
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let now = self.clock.now() as i64;
        // The new token is not visible to the statement's own DELETE: keep max - 1 others.
        let keep = i64::from(max_active.saturating_sub(1));
        c.execute(
            &stmt,
            &[
                &digest.as_slice(),
                &token.client_id,
                &owner,
                &token.scope,
                &iat,
                &exp,
                &cnf,
                &uses,
                &now,
                &keep,
            ],
        )
        .await
        .map_err(|e| self.sql(e))?;
        self.ok(())
    }

    /// Revokes an access token.
    pub async fn revoke_token(&self, digest: &Digest) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let stmt = c
            .prepare_cached("DELETE FROM tokens WHERE digest = $1")
            .await
            .map_err(|e| self.sql(e))?;
        c.execute(&stmt, &[&digest.as_slice()])
            .await
            .map_err(|e| self.sql(e))?;
        self.ok(())
    }

    /// Number of registered clients.
    pub async fn client_count(&self) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_one("SELECT count(*) FROM clients", &[])
            .await
            .map_err(|e| self.sql(e))?;
        self.ok(row.get::<_, i64>(0) as u64)
    }

    /// Why the database cannot be used now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        let h = &self.health;
        let usable = h.ready.load(Ordering::SeqCst) && h.healthy.load(Ordering::SeqCst);
        (!usable).then(|| h.problem())
    }

    /// Resolves on a problem no retry fixes (a schema newer than this release).
    pub async fn fatal(&self) {
        loop {
            let notified = self.health.fatal_notify.notified();
            if self.health.fatal.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Inserts `clients` and `tokens` into an empty database (`certgate migrate-store`).
    pub async fn import(
        pool: &Pool,
        seal: Option<&SealKey>,
        clients: &[Arc<ClientRecord>],
        tokens: &[(Digest, AccessToken)],
    ) -> Result<(), String> {
        let mut c = pool.get().await.map_err(db_error)?;
        let tx = c.transaction().await.map_err(db_error)?;
        let existing: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM clients) + (SELECT count(*) FROM tokens)",
                &[],
            )
            .await
            .map_err(db_error)?
            .get(0);
        if existing > 0 {
            return Err(
                "the target database is not empty: migrate-store only fills a new one".into(),
            );
        }
        let insert = tx
            .prepare(&format!(
                "INSERT INTO clients ({CLIENT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .await
            .map_err(db_error)?;
        for client in clients {
            let row = Columns::of(client, seal);
            tx.execute(&insert, &row.params()).await.map_err(db_error)?;
        }
        tx.batch_execute(
            "INSERT INTO cert_quota (thumbprint, n) \
             SELECT bound, count(*) FROM clients WHERE bound IS NOT NULL GROUP BY bound",
        )
        .await
        .map_err(db_error)?;
        let insert = tx
            .prepare(
                "INSERT INTO tokens (digest, client_id, owner, scope, iat, exp, cnf, uses_left) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await
            .map_err(db_error)?;
        for (digest, token) in tokens {
            let owner = token.dynamic.then_some(token.client_id.as_str());
            let (iat, exp) = (token.iat as i64, token.exp as i64);
            let cnf = token.cnf.as_ref().map(|c| c.as_slice());
            let uses = token
                .uses_left
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
            tx.execute(
                &insert,
                &[
                    &digest.as_slice(),
                    &token.client_id,
                    &owner,
                    &token.scope,
                    &iat,
                    &exp,
                    &cnf,
                    &uses,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        // Fresh statistics for the planner: autovacuum would get there, but only later.
        c.batch_execute("ANALYZE clients, tokens, cert_quota")
            .await
            .map_err(db_error)
    }

    fn columns(&self, rec: &ClientRecord) -> Columns {
        Columns::of(rec, self.seal.as_deref())
    }

    /// A client record from a row of `CLIENT_COLUMNS`.
    fn record(&self, r: &Row) -> Result<ClientRecord, StoreError> {
        let bad = |why: String| {
            StoreError::Unavailable(format!("database: unreadable client row: {why}"))
        };
        let client_id: String = r.get(0);
        let rules = codec::decode_rules(r.get(4)).map_err(bad)?;
        let rat = digest32(r.get(7)).map_err(bad)?;
        let grace_rat: Option<&[u8]> = r.get(10);
        let grace = match (grace_rat, self.seal.as_deref()) {
            (Some(replaced), Some(key)) => {
                let replaced = digest32(replaced).map_err(bad)?;
                let sealed: Option<&[u8]> = r.get(12);
                sealed
                    .and_then(|s| key.open(&seal_context(&client_id, &replaced), s))
                    .and_then(|plain| String::from_utf8(plain).ok())
                    .map(|plain| {
                        let (token, secret) = match plain.split_once('\n') {
                            Some((t, s)) => (t.to_owned(), Some(s.to_owned())),
                            None => (plain, None),
                        };
                        Box::new(Grace {
                            replaced,
                            replaced_at: r.get::<_, Option<i64>>(11).unwrap_or(0) as u64,
                            token,
                            secret,
                        })
                    })
            }
            _ => None,
        };
        Ok(ClientRecord {
            client_id: client_id.into(),
            version: r.get::<_, i64>(1) as u64,
            issued_at: r.get::<_, i64>(2) as u64,
            metadata: Arc::new(Registered::new(r.get::<_, String>(3), rules)),
            secret: opt32(r.get(5))?,
            bound: opt32(r.get(6))?,
            reg_token: RegToken {
                digest: rat,
                issued_at: r.get::<_, i64>(8) as u64,
                revoked: r.get(9),
            },
            grace,
        })
    }
}

/// A client record as the `clients` table holds it.
struct Columns {
    client_id: String,
    version: i64,
    issued_at: i64,
    metadata: String,
    rules: Vec<u8>,
    secret: Option<Vec<u8>>,
    bound: Option<Vec<u8>>,
    rat: Vec<u8>,
    rat_iat: i64,
    rat_revoked: bool,
    grace_rat: Option<Vec<u8>>,
    grace_at: Option<i64>,
    grace_sealed: Option<Vec<u8>>,
}

impl Columns {
    fn of(rec: &ClientRecord, seal: Option<&SealKey>) -> Self {
        // Without a key there is no grace to keep (config requires one when grace is on).
        let grace = rec.grace.as_deref().zip(seal).map(|(g, key)| {
            let plain = match &g.secret {
                Some(s) => format!("{}\n{s}", g.token),
                None => g.token.clone(),
            };
            (
                g.replaced.to_vec(),
                g.replaced_at as i64,
                key.seal(&seal_context(&rec.client_id, &g.replaced), plain.as_bytes()),
            )
        });
        Self {
            client_id: rec.client_id.to_string(),
            version: rec.version as i64,
            issued_at: rec.issued_at as i64,
            metadata: rec.metadata.json().to_owned(),
            rules: codec::encode_rules(&rec.metadata),
            secret: rec.secret.map(|d| d.to_vec()),
            bound: rec.bound.map(|d| d.to_vec()),
            rat: rec.reg_token.digest.to_vec(),
            rat_iat: rec.reg_token.issued_at as i64,
            rat_revoked: rec.reg_token.revoked,
            grace_rat: grace.as_ref().map(|g| g.0.clone()),
            grace_at: grace.as_ref().map(|g| g.1),
            grace_sealed: grace.map(|g| g.2),
        }
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.client_id,
            &self.version,
            &self.issued_at,
            &self.metadata,
            &self.rules,
            &self.secret,
            &self.bound,
            &self.rat,
            &self.rat_iat,
            &self.rat_revoked,
            &self.grace_rat,
            &self.grace_at,
            &self.grace_sealed,
        ]
    }
}

/// What a sealed successor is bound to: its client and the token it replaced.
fn seal_context(client_id: &str, replaced: &Digest) -> Vec<u8> {
    let mut out = client_id.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(replaced);
    out
}

fn digest32(b: &[u8]) -> Result<Digest, String> {
    b.try_into()
        .map_err(|_| format!("a digest of {} bytes", b.len()))
}

fn opt32(b: Option<&[u8]>) -> Result<Option<[u8; 32]>, StoreError> {
    b.map(digest32)
        .transpose()
        .map_err(|why| StoreError::Unavailable(format!("database: unreadable row: {why}")))
}

/// Migrates (retrying until the database answers), then keeps an eye on its health and
/// sweeps expired tokens — one node at a time — for as long as the process runs.
async fn maintain(pool: Pool, health: Arc<Health>, clock: Arc<dyn Clock>) {
    let mut wait = Duration::from_millis(250);
    loop {
        match migrate(&pool).await {
            Ok(()) => break,
            Err(MigrateError::TooNew(v)) => {
                let why = MigrateError::TooNew(v).to_string();
                tracing::error!(error = %why, "refusing to serve");
                health.trouble(why);
                health.fatal.store(true, Ordering::SeqCst);
                health.fatal_notify.notify_waiters();
                return;
            }
            Err(MigrateError::Other(why)) => {
                tracing::warn!(error = %why, "database not available yet; retrying");
                health.trouble(why);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    health.ready.store(true, Ordering::SeqCst);
    health.fine();
    tracing::info!("database ready");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_every = 0u32;
    loop {
        tick.tick().await;
        match probe(&pool).await {
            Ok(()) => {
                if !health.healthy.swap(true, Ordering::SeqCst) {
                    tracing::info!("database reachable again");
                }
            }
            Err(why) => {
                if health.healthy.load(Ordering::SeqCst) {
                    tracing::error!(error = %why, "database unreachable");
                }
                health.trouble(why);
                continue;
            }
        }
        sweep_every += 1;
        if sweep_every >= 30 {
            sweep_every = 0;
            match sweep(&pool, clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired access tokens swept"),
                Err(why) => tracing::warn!(error = %why, "sweep failed"),
            }
        }
    }
}

async fn probe(pool: &Pool) -> Result<(), String> {
    let c = pool.get().await.map_err(db_error)?;
    c.simple_query("SELECT 1").await.map_err(db_error)?;
    Ok(())
}

/// Deletes expired and spent access tokens in batches, if no other node is sweeping.
async fn sweep(pool: &Pool, now: u64) -> Result<u64, String> {
    let mut c = pool.get().await.map_err(db_error)?;
    let now = now as i64;
    let mut total = 0;
    loop {
        let tx = c.transaction().await.map_err(db_error)?;
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(db_error)?
            .get(0);
        if !mine {
            return Ok(total);
        }
        let n = tx
            .execute(
                "DELETE FROM tokens WHERE digest IN (\
                   SELECT digest FROM tokens WHERE exp <= $1 OR uses_left = 0 LIMIT $2)",
                &[&now, &SWEEP_BATCH],
            )
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        total += n;
        if n < SWEEP_BATCH as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_urls_and_key_value_strings() {
        let (rest, mode) =
            split_sslmode("postgres://u:p@db.example:5433/certgate?sslmode=verify-full&x=1")
                .unwrap();
        assert_eq!(mode, SslChoice::VerifyFull);
        assert!(!rest.contains("sslmode"), "{rest}");
        assert!(rest.contains("x=1"), "{rest}");
        let (rest, mode) = split_sslmode("postgresql://db/certgate?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), mode),
            ("postgresql://db/certgate", SslChoice::Disable)
        );
        let (rest, mode) = split_sslmode("host=db user=u sslmode=require dbname=c").unwrap();
        assert_eq!(
            (rest.as_str(), mode),
            ("host=db user=u dbname=c", SslChoice::Require)
        );
        assert_eq!(split_sslmode("host=db").unwrap().1, SslChoice::Prefer);
        let e = split_sslmode("postgres://u:hunter2@db/c?sslmode=verify-ca").unwrap_err();
        assert!(e.contains("verify-ca") && !e.contains("hunter2"), "{e}");
    }
}
