//! The running gateway's state, assembled once from a validated config: the composition
//! root that the server, the HTTP layer and the metrics read from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::tls::Tls;

/// Shared state of a running gateway.
pub struct App {
    pub config: Config,
    pub registry: Registry,
    pub tls: Tls,
    pub metrics: Metrics,
    /// The header a trusted proxy forwards certificates in.
    pub proxy_header: http::HeaderName,
    /// The RFC 8414 document, rendered once.
    pub discovery: Bytes,
    /// Edge routes (SPEC §5a).
    pub routes: crate::route::Table,
    /// Set when shutdown begins: `/healthz` says so.
    draining: AtomicBool,
}

impl App {
    /// Builds the application state from a validated config.
    pub fn new(config: Config, tls: Tls, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let routes = crate::route::Table::from_config(&config)?;
        let registry = Registry::from_config(&config, clock)?;
        Ok(Self::with_registry(config, tls, registry, routes))
    }

    /// The application state over an already built registry and route table.
    pub fn with_registry(
        config: Config,
        tls: Tls,
        registry: Registry,
        routes: crate::route::Table,
    ) -> Self {
        let proxy_header = config.proxy.header_name();
        let discovery = Bytes::from(crate::discovery::document(&config));
        Self {
            config,
            registry,
            tls,
            metrics: Metrics::new(),
            proxy_header,
            discovery,
            routes,
            draining: AtomicBool::new(false),
        }
    }

    /// Loads the TLS files and the stored registry: everything but the sockets.
    pub fn start(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let tls = Tls::load(&config.tls, &config.proxy)?;
        Ok(Self::new(config, tls, clock)?)
    }

    /// Shutdown has begun: the node no longer counts as ready.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Why the node cannot serve, if it cannot (SPEC §2 `/healthz`).
    pub fn unavailable(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining: the node is shutting down".into());
        }
        self.registry.unavailable()
    }
}
