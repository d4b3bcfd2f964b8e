//! Prometheus metrics (`certgate_*`), served only on `server.admin_listen`.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// HTTP status label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub code: u16,
}

/// Route and status labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: Arc<String>,
    pub status: u16,
}

/// Route label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Arc<String>,
}

/// Route and refusal reason labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteReason {
    pub route: Arc<String>,
    pub reason: &'static str,
}

/// Every metric certgate exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    pub proxy_header_untrusted: Counter,
    pub proxy_header_malformed: Counter,
    pub tls_handshake_failures: Counter,
    pub connections_open: Gauge,
    pub registrations: Counter,
    pub rotations: Counter,
    clients: Gauge,
    route_requests: Family<RouteStatus, Counter>,
    route_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    route_refusals: Family<RouteReason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `certgate_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("certgate");
        let m = Self {
            requests: Family::default(),
            proxy_header_untrusted: Counter::default(),
            proxy_header_malformed: Counter::default(),
            tls_handshake_failures: Counter::default(),
            connections_open: Gauge::default(),
            registrations: Counter::default(),
            rotations: Counter::default(),
            clients: Gauge::default(),
            route_requests: Family::default(),
            route_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            route_refusals: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "route_requests",
            "Requests under an edge route, by route prefix and status (refusals included)",
            m.route_requests.clone(),
        );
        registry.register(
            "route_upstream_latency_seconds",
            "Time from receiving a routed request to the upstream's response head",
            m.route_latency.clone(),
        );
        registry.register(
            "route_refusals",
            "Requests an edge route refused, by reason",
            m.route_refusals.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP responses by status code",
            m.requests.clone(),
        );
        registry.register(
            "proxy_header_untrusted",
            "Client-certificate headers ignored because the peer is not a trusted proxy",
            m.proxy_header_untrusted.clone(),
        );
        registry.register(
            "proxy_header_malformed",
            "Client-certificate headers from trusted proxies that could not be decoded",
            m.proxy_header_malformed.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections",
            m.connections_open.clone(),
        );
        registry.register(
            "registrations",
            "Successful client registrations",
            m.registrations.clone(),
        );
        registry.register(
            "registration_token_rotations",
            "Registration access token rotations",
            m.rotations.clone(),
        );
        registry.register(
            "registered_clients",
            "Dynamically registered clients",
            m.clients.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts one response.
    pub fn observe(&self, status: http::StatusCode) {
        self.requests
            .get_or_create(&StatusLabel {
                code: status.as_u16(),
            })
            .inc();
    }

    /// Counts a routed request's answer and how long it took to get it.
    pub fn route_request(&self, route: &Arc<String>, status: u16, took: std::time::Duration) {
        self.route_requests
            .get_or_create(&RouteStatus {
                route: route.clone(),
                status,
            })
            .inc();
        self.route_latency
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a refusal at a route.
    pub fn route_refused(&self, route: &Arc<String>, reason: &'static str) {
        self.route_refusals
            .get_or_create(&RouteReason {
                route: route.clone(),
                reason,
            })
            .inc();
    }

    /// The text exposition format; `clients` is the registry's size when it could be read.
    pub fn encode(&self, clients: Option<u64>) -> String {
        if let Some(n) = clients {
            self.clients.set(n as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
