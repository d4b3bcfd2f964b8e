//! Forwarding an admitted request to its upstream (SPEC §5a): hop-by-hop headers removed,
//! identity headers a client could spoof removed and then set by certgate, the
//! `x-forwarded-*` chain extended, bodies streamed both ways.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use super::Route;
use crate::body::RequestBody;
use crate::model::AccessToken;

/// Who sent the request, as the edge sees it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The TCP peer's address.
    pub addr: IpAddr,
    /// The peer is a trusted proxy (its `x-forwarded-*` values are believed).
    pub trusted_proxy: bool,
    /// The listener speaks TLS.
    pub https: bool,
}

/// How forwarding ended.
pub enum Forwarded {
    /// The upstream's response head (its body streams on).
    Response(Response<Incoming>),
    /// Unreachable, refused, reset, or not HTTP: 502.
    Unavailable(String),
    /// No response head within the route's `timeout`: 504.
    Timeout,
}

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers only certgate may set towards an upstream.
const IDENTITY: [&str; 7] = [
    "x-client-id",
    "x-client-cert-thumbprint",
    "x-token-scope",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// Sends `req` (admitted with `token`) to the route's upstream. `certificate_headers` are
/// the proxy certificate header(s), removed whoever sent them.
pub async fn forward(
    route: &Route,
    mut req: Request<RequestBody>,
    token: &AccessToken,
    peer: &Peer,
    certificate_headers: &[HeaderName],
) -> Forwarded {
    let uri = match route.upstream_uri(req.uri().path(), req.uri().query()) {
        Ok(uri) => uri,
        Err(e) => return Forwarded::Unavailable(e),
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| header_text(req.headers(), &header::HOST));
    let headers = req.headers_mut();
    // What a trusted proxy told us, read before the headers go.
    let (proxy_for, proxy_proto, proxy_host) = if peer.trusted_proxy {
        (
            joined(headers, "x-forwarded-for"),
            header_text(headers, &HeaderName::from_static("x-forwarded-proto")),
            header_text(headers, &HeaderName::from_static("x-forwarded-host")),
        )
    } else {
        (None, None, None)
    };
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    for name in certificate_headers {
        headers.remove(name);
    }
    for name in IDENTITY {
        headers.remove(name);
    }
    // certgate's own view of the caller.
    set(headers, "x-client-id", &token.client_id);
    if let Some(cnf) = token.cnf {
        set(
            headers,
            "x-client-cert-thumbprint",
            &crate::secret::encode(&cnf),
        );
    }
    set(headers, "x-token-scope", &token.scope);
    let addr = peer.addr.to_string();
    let forwarded_for = match proxy_for {
        Some(chain) => format!("{chain}, {addr}"),
        None => addr,
    };
    set(headers, "x-forwarded-for", &forwarded_for);
    let proto = proxy_proto.unwrap_or_else(|| if peer.https { "https" } else { "http" }.into());
    set(headers, "x-forwarded-proto", &proto);
    if let Some(host) = proxy_host.or_else(|| authority.clone()) {
        set(headers, "x-forwarded-host", &host);
    }
    // An HTTP/2 client names the host in :authority; an HTTP/1.1 upstream needs it as Host.
    if !headers.contains_key(header::HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(header::HOST, value);
        }
    }
    *req.uri_mut() = uri;
    // The upstream connection decides (HTTP/2 when ALPN chose it).
    *req.version_mut() = Version::HTTP_11;
    match tokio::time::timeout(route.timeout, route.client.request(req)).await {
        Err(_) => Forwarded::Timeout,
        Ok(Err(e)) => Forwarded::Unavailable(e.to_string()),
        Ok(Ok(mut resp)) => {
            strip_hop_by_hop(resp.headers_mut());
            Forwarded::Response(resp)
        }
    }
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop headers.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Every line of a list-valued header, joined with ", ".
fn joined(headers: &HeaderMap, name: &'static str) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_the_headers_it_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }
}
