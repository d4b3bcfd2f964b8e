//! Forwarding an admitted request to its upstream (SPEC §5a): hop-by-hop headers removed,
//! identity headers a client could spoof removed and then set by certgate, the
//! `x-forwarded-*` chain extended, bodies streamed both ways.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use super::Route;
use crate::body::RequestBody;
use crate::identity::ClientCertificate;
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
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers only certgate may set towards an upstream, and the client's credentials.
fn certgates_own(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization"
            | "x-client-id"
            | "x-client-cert-thumbprint"
            | "x-token-scope"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "forwarded"
    )
}

const X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
const X_CLIENT_CERT_THUMBPRINT: HeaderName = HeaderName::from_static("x-client-cert-thumbprint");
const X_TOKEN_SCOPE: HeaderName = HeaderName::from_static("x-token-scope");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sends `req` (admitted with `token`, presented with `cert`) to the route's upstream.
/// `certificate_headers` are the proxy certificate header(s), removed whoever sent them.
pub async fn forward(
    route: &Route,
    mut req: Request<RequestBody>,
    token: &AccessToken,
    cert: Option<&ClientCertificate>,
    peer: &Peer,
    certificate_headers: &[HeaderName],
) -> Forwarded {
    let uri = match route.upstream_uri(req.uri().path(), req.uri().query()) {
        Ok(uri) => uri,
        Err(e) => return Forwarded::Unavailable(e),
    };
    let authority = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => trimmed(req.headers(), &header::HOST),
    };
    let headers = req.headers_mut();
    // What a trusted proxy told us, read before the headers go.
    let (proxy_for, proxy_proto, proxy_host) = if peer.trusted_proxy {
        (
            joined(headers, &X_FORWARDED_FOR),
            trimmed(headers, &X_FORWARDED_PROTO),
            trimmed(headers, &X_FORWARDED_HOST),
        )
    } else {
        (None, None, None)
    };
    strip(headers, |name| {
        certgates_own(name) || certificate_headers.contains(name)
    });
    // certgate's own view of the caller.
    set(headers, X_CLIENT_ID, token.client_id.as_str());
    if let Some(cnf) = token.cnf {
        // Admission matched the two: the certificate's text is the token's, already encoded.
        match cert.filter(|c| c.sha256 == cnf) {
            Some(c) => set(headers, X_CLIENT_CERT_THUMBPRINT, c.thumbprint.as_str()),
            None => set(
                headers,
                X_CLIENT_CERT_THUMBPRINT,
                crate::secret::encode(&cnf),
            ),
        }
    }
    set(headers, X_TOKEN_SCOPE, token.scope.as_str());
    let forwarded_for = match proxy_for {
        Some(chain) => format!("{chain}, {}", peer.addr),
        None => ip_text(peer.addr),
    };
    set(headers, X_FORWARDED_FOR, forwarded_for);
    let proto = proxy_proto.unwrap_or(HeaderValue::from_static(if peer.https {
        "https"
    } else {
        "http"
    }));
    headers.insert(X_FORWARDED_PROTO, proto);
    if let Some(host) = proxy_host.or_else(|| authority.clone()) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    // An HTTP/2 client names the host in :authority; an HTTP/1.1 upstream needs it as Host.
    if !headers.contains_key(header::HOST) {
        if let Some(value) = authority {
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
            strip(resp.headers_mut(), |_| false);
            Forwarded::Response(resp)
        }
    }
}

/// Removes `Connection`, every header it names, the fixed hop-by-hop headers and those
/// `also` names. One pass over the names present: removing each of the fifteen or so by
/// name, present or not, cost more than the rest of forwarding.
fn strip(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    doomed.extend(
        headers
            .keys()
            .filter(|name| hop_by_hop(name) || also(name))
            .cloned(),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// Sets `name` to `value`; a value that cannot be a header value is left out.
fn set<V>(headers: &mut HeaderMap, name: HeaderName, value: V)
where
    HeaderValue: TryFrom<V>,
{
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

/// The header's value with surrounding whitespace removed, if it is text and not empty.
fn trimmed(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let value = headers.get(name)?;
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        None
    } else if text.len() == value.len() {
        Some(value.clone())
    } else {
        HeaderValue::from_str(text).ok()
    }
}

/// Every line of a list-valued header, joined with ", ".
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The address as `Display` writes it; IPv4 without the formatting machinery, which cost
/// about 1 400 instructions a request.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(itoa::Buffer::new().format(octet));
    }
    text
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
        strip(&mut h, |_| false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn what_certgate_sets_goes_whoever_sent_it_and_the_rest_stays() {
        let mut h = HeaderMap::new();
        for name in [
            "authorization",
            "x-client-id",
            "x-client-cert-thumbprint",
            "x-token-scope",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "x-ssl-cert",
            "transfer-encoding",
            "accept",
            "x-kept",
        ] {
            h.append(name, HeaderValue::from_static("1"));
        }
        h.append("x-client-id", HeaderValue::from_static("2"));
        let cert = HeaderName::from_static("x-ssl-cert");
        strip(&mut h, |name| certgates_own(name) || *name == cert);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-kept"]);
    }

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn a_value_is_trimmed_and_an_empty_one_is_none() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(" api.example "));
        h.insert("x-forwarded-host", HeaderValue::from_static("  "));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(trimmed(&h, &header::HOST).unwrap(), "api.example");
        assert_eq!(trimmed(&h, &X_FORWARDED_HOST), None);
        assert_eq!(trimmed(&h, &X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(trimmed(&h, &X_FORWARDED_FOR), None);
    }
}
