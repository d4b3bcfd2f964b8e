//! certgate: a mutual-TLS-aware edge gateway for OAuth 2.0 clients.
//!
//! # Layout
//!
//! - `app`          — the composition root: config, registry, TLS, metrics of a running node
//! - `config`       — TOML → typed, validated [`Config`] (SPEC §6)
//! - `discovery`    — the RFC 8414 metadata document
//! - `server`       — listeners, accept loops, limits, graceful shutdown, SIGHUP reload
//! - `tls`          — rustls server config and the client-certificate verifier
//! - `identity`     — `ClientCertificate`: thumbprint, subject DN, SANs, chain status
//! - `dn`           — distinguished names: RFC 4514 parsing and canonical comparison
//! - `proxy_header` — the six proxy header formats → certificate chain
//! - `http`         — routing, decoding, the one error → (status, RFC code) mapping
//! - `metadata`     — RFC 7591 / RFC 8705 client metadata parsed into valid types
//! - `json`         — strict JSON from the network (duplicate members refused)
//! - `statement`    — software statements: trusted issuers' keys, verification, claims
//! - `jwk`          — registered JWKs: public keys only, `x5c` certificates of that key
//! - `cert_match`   — does a certificate satisfy declared subject DN / SAN / jwks
//! - `model`        — the records every backend keeps (clients, access tokens)
//! - `registry`     — the domain: registration, binding, rotation (`registry::management`)
//! - `route`        — edge routes: the upstream clients, header rewriting, streaming
//! - `store`        — commits decided records: memory (journal, snapshots) or PostgreSQL
//! - `secret`       — random credentials and their digests
//! - `clock`        — injectable time
//! - `metrics`      — Prometheus counters for the admin listener

pub mod app;
pub mod body;
pub mod cert_match;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod dn;
pub mod http;
pub mod identity;
pub mod json;
pub mod jwk;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod proxy_header;
pub mod registry;
pub mod route;
pub mod secret;
pub mod server;
pub mod statement;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

pub use app::App;
pub use config::Config;
pub use server::Listeners;

/// Every check start-up makes of a configuration beyond parsing it (TLS files, static
/// clients, statement issuers' JWKS files, routes, the database settings), without binding a socket or touching stored state: what `check-config` runs.
pub fn check(config: &Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tls::Tls::load(&config.tls, &config.proxy)?;
    registry::Registry::static_clients(config)?;
    registry::Registry::statement_issuers(config)?;
    route::Table::from_config(config)?;
    if config.store.backend == config::Backend::Postgres {
        store::postgres::PgSettings::from_config(config)?;
    }
    Ok(())
}

/// Serves `config` on pre-bound `listeners` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listeners: Listeners,
    clock: Arc<dyn clock::Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let app = Arc::new(App::start(config, clock)?);
    serve(app, listeners, shutdown).await
}

/// Serves `app` until `shutdown` resolves — or until its store fails for good: then the node
/// stops acknowledging, finishes what is in flight, and returns an error so the process
/// exits non-zero and a supervisor restarts it on what the disk holds (SPEC §7).
pub async fn serve(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let failed = std::sync::atomic::AtomicBool::new(false);
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            () = app.registry.store().fatal() => {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::error!("storage failed: no change is acknowledged any more; stopping");
            }
        }
    };
    server::serve(app.clone(), listeners, stop).await;
    if failed.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(app
            .registry
            .unavailable()
            .unwrap_or_else(|| "storage failed".into())
            .into());
    }
    Ok(())
}
