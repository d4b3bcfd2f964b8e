//! Edge routes (SPEC §5a): certgate in front of the APIs its clients call. A request under a
//! `[[routes]]` prefix is admitted only with an active, certificate-bound access token
//! (`registry::Registry::admit`), then forwarded to the route's upstream with its
//! identity headers set by certgate (`forward`), bodies streamed both ways.

mod forward;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::{Config, RouteConfig};

pub use forward::{forward, Forwarded, Peer};

/// The upstream client of one route: pooled connections, HTTP/1.1, and HTTP/2 when an
/// https upstream offers it (ALPN).
type Upstream = Client<HttpsConnector<HttpConnector>, crate::body::RequestBody>;

/// One `[[routes]]` entry, ready to serve.
pub struct Route {
    /// `path_prefix`, also the metrics label (shared, so counting a request copies nothing).
    pub prefix: Arc<String>,
    /// Scheme and authority of the upstream, parsed once, and its base path (no trailing
    /// slash).
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base: String,
    pub required_scope: String,
    strip_prefix: bool,
    pub timeout: Duration,
    client: Upstream,
}

/// The routes, longest prefix first.
#[derive(Default)]
pub struct Table(Vec<Arc<Route>>);

impl Table {
    /// Builds every route's client; an error names the route and the file at fault
    /// (`check-config` runs this too).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Route::new(r)
                    .map(Arc::new)
                    .map_err(|e| format!("routes[{i}] ({}): {e}", r.path_prefix))
            })
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self(routes))
    }

    /// The route serving `path`, if any (certgate's own paths are matched before this).
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|r| path.starts_with(r.prefix.as_str()))
    }

    /// Whether any route is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every route (for metrics).
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.0.iter()
    }
}

impl Route {
    fn new(r: &RouteConfig) -> Result<Self, String> {
        let url = url::Url::parse(&r.upstream).map_err(|e| format!("upstream: {e}"))?;
        let origin: http::Uri = url
            .origin()
            .ascii_serialization()
            .parse()
            .map_err(|e| format!("upstream: {e}"))?;
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            return Err("upstream: an http(s) URL with a host is needed".into());
        };
        let (scheme, authority) = (scheme.clone(), authority.clone());
        let base = url.path().trim_end_matches('/').to_owned();
        let tls = upstream_tls(&r.upstream_ca)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(r.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Self {
            prefix: Arc::new(r.path_prefix.clone()),
            scheme,
            authority,
            base,
            required_scope: r.required_scope.clone(),
            strip_prefix: r.strip_prefix,
            timeout: r.timeout,
            client,
        })
    }

    /// The upstream URI for a request to `path_and_query` (path, then `?query` if any).
    fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<http::Uri, String> {
        let path = match self.strip_prefix {
            // "/api/x" under "/api/" → "/x"; the prefix itself → "/".
            true => &path[self.prefix.len() - 1..],
            false => path,
        };
        let mut target =
            String::with_capacity(self.base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        target.push_str(&self.base);
        target.push_str(path);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        // Only the path and query are new per request: parsing the whole URI again cost
        // about 2 000 instructions a request.
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            http::uri::PathAndQuery::try_from(target).map_err(|e| format!("upstream URI: {e}"))?,
        );
        http::Uri::from_parts(parts).map_err(|e| format!("upstream URI: {e}"))
    }
}

/// Trust anchors for an https upstream: `upstream_ca`, or the system's.
fn upstream_tls(ca: &Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if ca.as_os_str().is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("upstream_ca: {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "upstream_ca: {}: no PEM certificate found",
                ca.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("upstream_ca: {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("upstream TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(upstream: &str, strip_prefix: bool) -> Route {
        Route::new(&RouteConfig {
            path_prefix: "/api/".into(),
            upstream: upstream.into(),
            upstream_ca: Default::default(),
            required_scope: "api:read".into(),
            strip_prefix,
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn the_upstream_uri_is_the_upstream_base_then_the_request_path_and_query() {
        let cases = [
            (
                "http://127.0.0.1:8080",
                true,
                "/api/items",
                None,
                "http://127.0.0.1:8080/items",
            ),
            (
                "http://127.0.0.1:8080",
                true,
                "/api/",
                Some("a=1&b"),
                "http://127.0.0.1:8080/?a=1&b",
            ),
            (
                "http://up.example/v1/",
                true,
                "/api/x/y",
                Some("q"),
                "http://up.example/v1/x/y?q",
            ),
            (
                "http://up.example:80/v1",
                false,
                "/api/x",
                None,
                "http://up.example/v1/api/x",
            ),
            (
                "https://up.example:8443",
                false,
                "/api/x",
                None,
                "https://up.example:8443/api/x",
            ),
        ];
        for (upstream, strip, path, query, want) in cases {
            let uri = route(upstream, strip).upstream_uri(path, query).unwrap();
            assert_eq!(uri.to_string(), want, "{upstream} {path} {query:?}");
            assert_eq!(uri, want.parse::<http::Uri>().unwrap());
        }
    }
}
