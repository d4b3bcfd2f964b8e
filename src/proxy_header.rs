//! Client certificates forwarded by a trusted reverse proxy in an HTTP header.
//!
//! Every proxy has its own encoding; each [`HeaderFormat`] decodes one of them into the chain
//! (DER, leaf first) exactly as the client presented it. The caller has already decided the
//! peer is a trusted proxy: this module only decodes, and treats anything unexpected as an
//! error rather than guessing, because a lenient decoder is where header spoofing hides.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sfv::{BareItem, ListEntry, Parser};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Any, FromDer};

/// The header encodings certgate understands (config word in kebab-case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderFormat {
    /// Percent-encoded PEM: nginx `$ssl_client_escaped_cert`, AWS ALB.
    #[default]
    PemUrlencoded,
    /// PEM with line breaks turned into spaces or tabs: Apache `%{SSL_CLIENT_CERT}s`.
    Pem,
    /// Envoy / Istio `x-forwarded-client-cert`.
    Xfcc,
    /// Base64 DER without armour: HAProxy `%[ssl_c_der,base64]`.
    DerBase64,
    /// Traefik `passTLSClientCert`: comma-joined base64 DER, optionally percent-encoded.
    Traefik,
    /// RFC 9440 `Client-Cert` / `Client-Cert-Chain` structured fields.
    #[serde(rename = "rfc9440")]
    Rfc9440,
}

impl HeaderFormat {
    /// The header this format arrives in unless the operator names another.
    pub fn default_header(self) -> &'static str {
        match self {
            Self::PemUrlencoded | Self::Pem => "x-ssl-client-cert",
            Self::Xfcc => "x-forwarded-client-cert",
            Self::DerBase64 => "x-ssl-client-der",
            Self::Traefik => "x-forwarded-tls-client-cert",
            Self::Rfc9440 => "client-cert",
        }
    }

    /// Config word, e.g. "pem-urlencoded".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PemUrlencoded => "pem-urlencoded",
            Self::Pem => "pem",
            Self::Xfcc => "xfcc",
            Self::DerBase64 => "der-base64",
            Self::Traefik => "traefik",
            Self::Rfc9440 => "rfc9440",
        }
    }
}

/// A header that is present but cannot be decoded (answered with 400 invalid_request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeaderError(pub String);

impl ProxyHeaderError {
    // Messages never quote the value: it is attacker-influenced and may be 64 KiB long.
    fn new(header: &HeaderName, problem: impl fmt::Display) -> Self {
        Self(format!("malformed {header} header: {problem}"))
    }
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Reads the certificate chain (leaf first) the proxy forwarded.
///
/// `Ok(None)` means no certificate: the header is absent or blank (HAProxy sends an empty
/// header when the client presented none).
pub fn extract(
    format: HeaderFormat,
    header: &HeaderName,
    headers: &HeaderMap,
) -> Result<Option<Vec<CertificateDer<'static>>>, ProxyHeaderError> {
    let ders = match format {
        HeaderFormat::PemUrlencoded => single_value(header, headers)?
            .map(|value| percent_decode(value).and_then(|pem| pem_certs(&pem))),
        HeaderFormat::Pem => {
            single_value(header, headers)?.map(|value| pem_certs(value.as_bytes()))
        }
        HeaderFormat::Xfcc => joined_value(header, headers)?.map(|value| xfcc(&value)),
        HeaderFormat::DerBase64 => {
            single_value(header, headers)?.map(|value| base64_der(value).map(|der| vec![der]))
        }
        HeaderFormat::Traefik => single_value(header, headers)?.map(traefik),
        HeaderFormat::Rfc9440 => rfc9440(header, headers)?.map(Ok),
    };
    let Some(ders) = ders else {
        return Ok(None);
    };
    ders.and_then(checked_chain)
        .map(Some)
        .map_err(|problem| ProxyHeaderError::new(header, problem))
}

/// True when the request carries a non-empty value in the header(s) this format reads.
pub fn is_claimed(format: HeaderFormat, header: &HeaderName, headers: &HeaderMap) -> bool {
    header_names(format, header).iter().any(|name| {
        headers
            .get_all(name)
            .iter()
            .any(|value| !value.as_bytes().trim_ascii().is_empty())
    })
}

/// Names of every header this format reads (for stripping them before forwarding upstream).
pub fn header_names(format: HeaderFormat, header: &HeaderName) -> Vec<HeaderName> {
    let mut names = vec![header.clone()];
    if format == HeaderFormat::Rfc9440 && header != CLIENT_CERT_CHAIN {
        names.push(HeaderName::from_static(CLIENT_CERT_CHAIN));
    }
    names
}

/// RFC 9440 `Client-Cert` is an SF Item; `Client-Cert-Chain` an SF List of intermediates.
fn rfc9440(
    header: &HeaderName,
    headers: &HeaderMap,
) -> Result<Option<Vec<Vec<u8>>>, ProxyHeaderError> {
    let Some(leaf) = single_value(header, headers)? else {
        // A chain without a leaf identifies nobody.
        return Ok(None);
    };
    let leaf = Parser::parse_item(leaf.as_bytes())
        .map_err(|_| "not a structured-field item")
        .and_then(|item| byte_sequence(item.bare_item))
        .map_err(|problem| ProxyHeaderError::new(header, problem))?;

    let mut ders = vec![leaf];
    let chain_header = HeaderName::from_static(CLIENT_CERT_CHAIN);
    if let Some(chain) = joined_value(&chain_header, headers)? {
        let list = Parser::parse_list(chain.as_bytes())
            .map_err(|_| ProxyHeaderError::new(&chain_header, "not a structured-field list"))?;
        for entry in list {
            let der = match entry {
                ListEntry::Item(item) => byte_sequence(item.bare_item),
                ListEntry::InnerList(_) => Err("inner list instead of a byte sequence"),
            };
            ders.push(der.map_err(|problem| ProxyHeaderError::new(&chain_header, problem))?);
        }
    }
    Ok(Some(ders))
}

fn byte_sequence(item: BareItem) -> Result<Vec<u8>, &'static str> {
    match item {
        BareItem::ByteSeq(der) if !der.is_empty() => Ok(der),
        BareItem::ByteSeq(_) => Err("empty byte sequence"),
        _ => Err("item is not a byte sequence"),
    }
}

/// Envoy's XFCC: `,`-separated elements of `;`-separated `key=value` pairs.
///
/// Each hop appends an element, so only the last one was written by the trusted proxy.
fn xfcc(value: &str) -> Result<Vec<Vec<u8>>, String> {
    let (mut cert, mut chain, mut hash) = (None, None, None);
    for (key, value) in xfcc_last_element(value)? {
        let slot = match key.as_str() {
            "cert" => &mut cert,
            "chain" => &mut chain,
            "hash" => &mut hash,
            _ => continue,
        };
        // Two Cert keys in one element would let the decoder pick the wrong one.
        if slot.replace(value).is_some() {
            return Err(format!("duplicate {key} in the last element"));
        }
    }

    let Some(cert) = cert else {
        return Err("last element has no Cert".into());
    };
    let [leaf]: [Vec<u8>; 1] = pem_certs(&percent_decode(&cert)?)?
        .try_into()
        .map_err(|_| "Cert must hold exactly one certificate")?;

    if let Some(hash) = hash {
        let actual: String = Sha256::digest(&leaf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !hash.eq_ignore_ascii_case(&actual) {
            return Err("Hash does not match Cert".into());
        }
    }

    let Some(chain) = chain else {
        return Ok(vec![leaf]);
    };
    let chain = pem_certs(&percent_decode(&chain)?)?;
    // Envoy's Chain includes the leaf; a different first certificate means a confused proxy.
    if chain.first() != Some(&leaf) {
        return Err("Chain does not start with Cert".into());
    }
    Ok(chain)
}

/// Tokenises the whole XFCC value and returns the pairs of its last element, keys lowercased.
///
/// Every element is parsed, not just the last: quoting is stateful, so a stray quote in an
/// earlier element would otherwise shift where the last one appears to begin. A closing quote
/// must be followed by `;`, `,` or the end, which makes such shifts fail loudly.
fn xfcc_last_element(value: &str) -> Result<Vec<(String, String)>, &'static str> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Key,
        ValueStart,
        Unquoted,
        Quoted,
        Escaped,
        AfterQuote,
    }

    let mut state = State::Key;
    let (mut key, mut val) = (String::new(), String::new());
    let mut element = Vec::new();
    for c in value.chars() {
        state = match (state, c) {
            (State::Key, '=') if key.trim_ascii().is_empty() => return Err("empty key"),
            (State::Key, '=') => State::ValueStart,
            (State::Key, ';' | ',' | '"') => return Err("expected key=value"),
            (State::Key, c) => {
                key.push(c);
                State::Key
            }
            (State::ValueStart, '"') => State::Quoted,
            (State::Unquoted, '"') => return Err("quote inside an unquoted value"),
            (State::Quoted, '\\') => State::Escaped,
            (State::Quoted, '"') => State::AfterQuote,
            (State::Quoted | State::Escaped, c) => {
                val.push(c);
                State::Quoted
            }
            (State::AfterQuote, ' ' | '\t') => State::AfterQuote,
            (State::AfterQuote, ';' | ',') | (State::ValueStart | State::Unquoted, ';' | ',') => {
                element.push(xfcc_pair(&mut key, &mut val, state == State::AfterQuote));
                // Only the last element matters; earlier ones just had to parse.
                if c == ',' {
                    element.clear();
                }
                State::Key
            }
            (State::AfterQuote, _) => return Err("data after a closing quote"),
            (State::ValueStart | State::Unquoted, c) => {
                val.push(c);
                State::Unquoted
            }
        };
    }

    match state {
        State::Quoted | State::Escaped => Err("unterminated quote"),
        State::Key if key.trim_ascii().is_empty() => Err("empty element"),
        State::Key => Err("expected key=value"),
        _ => {
            element.push(xfcc_pair(&mut key, &mut val, state == State::AfterQuote));
            Ok(element)
        }
    }
}

fn xfcc_pair(key: &mut String, val: &mut String, quoted: bool) -> (String, String) {
    let key = std::mem::take(key).trim_ascii().to_ascii_lowercase();
    let val = std::mem::take(val);
    match quoted {
        true => (key, val),
        false => (key, val.trim_ascii().to_owned()),
    }
}

/// Traefik: base64 DER per certificate, joined with `,`; percent-encoded before 2.9.4.
fn traefik(value: &str) -> Result<Vec<Vec<u8>>, String> {
    // Old Traefik escaped the joined string, so the separator may itself be `%2C`.
    let decoded = percent_decode(value)?;
    let decoded = std::str::from_utf8(&decoded).map_err(|_| "not base64")?;
    decoded.split(',').map(base64_der).collect()
}

fn base64_der(value: &str) -> Result<Vec<u8>, String> {
    match STANDARD.decode(value.trim_ascii()) {
        Ok(der) if !der.is_empty() => Ok(der),
        _ => Err("not valid base64".into()),
    }
}

/// Strict percent-decoding; `+` stays `+`.
///
/// `percent_encoding` passes a stray `%` through unchanged, but no proxy emits one, so it can
/// only mean a corrupted or hand-made value.
fn percent_decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || matches!(bytes.get(i + 1..i + 3), Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
    });
    match well_formed {
        true => Ok(percent_encoding::percent_decode(bytes).collect()),
        false => Err("bad percent-encoding".into()),
    }
}

/// Decodes one or more `CERTIFICATE` PEM blocks whose line breaks may have become any ASCII
/// whitespace (Apache turns them into spaces, some proxies into tabs).
///
/// Written by hand rather than with `PemObject` because that parser needs real line breaks and
/// silently skips foreign blocks and text between blocks, both of which must be errors here.
fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    const DASHES: &[u8] = b"-----";

    let mut certs = Vec::new();
    let mut rest = pem.trim_ascii();
    while !rest.is_empty() {
        let Some(after_begin) = rest.strip_prefix(BEGIN) else {
            return Err("data outside a PEM block".into());
        };
        let Some((label, body)) = split_once(after_begin, DASHES) else {
            return Err("malformed PEM BEGIN line".into());
        };
        if label != b"CERTIFICATE" {
            // Name short labels ("PRIVATE KEY" is the usual misconfiguration), nothing longer.
            if label.len() > 32 || !label.iter().all(|b| b.is_ascii_uppercase() || *b == b' ') {
                return Err("PEM block is not a CERTIFICATE".into());
            }
            return Err(format!(
                "PEM block is {}, not CERTIFICATE",
                label.escape_ascii()
            ));
        }
        let Some((body, after)) = split_once(body, END) else {
            return Err("PEM block has no END CERTIFICATE line".into());
        };
        let b64: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        match STANDARD.decode(b64) {
            Ok(der) => certs.push(der),
            Err(_) => return Err("PEM body is not valid base64".into()),
        }
        rest = after.trim_ascii_start();
    }
    Ok(certs)
}

fn split_once<'a>(haystack: &'a [u8], needle: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = haystack
        .windows(needle.len())
        .position(|window| window == needle)?;
    Some((haystack.get(..at)?, haystack.get(at + needle.len()..)?))
}

/// Applies the checks common to every format and converts to `CertificateDer`.
fn checked_chain(ders: Vec<Vec<u8>>) -> Result<Vec<CertificateDer<'static>>, String> {
    if ders.is_empty() {
        return Err("no certificate in a non-empty value".into());
    }
    if ders.len() > MAX_CHAIN_LEN {
        return Err(format!("more than {MAX_CHAIN_LEN} certificates"));
    }
    for (i, der) in ders.iter().enumerate() {
        // One complete DER SEQUENCE and nothing after it: trailing bytes would make the
        // thumbprint differ from what the client presented.
        let sequence = der.first() == Some(&0x30)
            && matches!(Any::from_der(der), Ok((rest, _)) if rest.is_empty());
        if !sequence {
            return Err(format!("certificate {} is not DER", i + 1));
        }
    }
    // The leaf becomes an identity, so it must really be a certificate; intermediates are the
    // chain verifier's business.
    match ders.first().map(|leaf| X509Certificate::from_der(leaf)) {
        Some(Ok(([], _))) => {}
        _ => return Err("leaf is not an X.509 certificate".into()),
    }
    Ok(ders.into_iter().map(CertificateDer::from).collect())
}

/// The value of a header that must appear at most once, trimmed; `None` when absent or blank.
fn single_value<'h>(
    name: &HeaderName,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, ProxyHeaderError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two lines mean two parties set it (e.g. the client and the proxy): refuse to pick one.
    if values.next().is_some() {
        return Err(ProxyHeaderError::new(name, "header appears more than once"));
    }
    let value = visible_ascii(name, value)?.trim_ascii();
    Ok((!value.is_empty()).then_some(value))
}

/// All lines of a list-valued header joined with `, ` (RFC 9110 §5.3); `None` when blank.
fn joined_value(
    name: &HeaderName,
    headers: &HeaderMap,
) -> Result<Option<String>, ProxyHeaderError> {
    let mut joined = String::new();
    for value in headers.get_all(name) {
        if joined.len() + value.len() > MAX_VALUE_LEN {
            return Err(ProxyHeaderError::new(name, "value exceeds 64 KiB"));
        }
        let value = visible_ascii(name, value)?.trim_ascii();
        if value.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(value);
    }
    Ok((!joined.is_empty()).then_some(joined))
}

fn visible_ascii<'h>(
    name: &HeaderName,
    value: &'h HeaderValue,
) -> Result<&'h str, ProxyHeaderError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ProxyHeaderError::new(name, "value exceeds 64 KiB"));
    }
    value
        .to_str()
        .map_err(|_| ProxyHeaderError::new(name, "value is not visible ASCII"))
}

const CLIENT_CERT_CHAIN: &str = "client-cert-chain";

/// Real chains are 2-4 certificates deep; the cap bounds the caller's verification work.
const MAX_CHAIN_LEN: usize = 10;

/// Bounds decoding work; ten percent-encoded RSA-4096 certificates (~35 KiB) still fit.
const MAX_VALUE_LEN: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    use rustls::pki_types::pem::PemObject;

    use super::*;

    const CLIENT_PEM: &str = include_str!("../certs/client1.pem");
    const CA_PEM: &str = include_str!("../certs/ca.pem");
    const KEY_PEM: &str = include_str!("../certs/client1-key.pem");

    /// nginx `$ssl_client_escaped_cert`: everything but RFC 3986 unreserved is escaped.
    const NGINX: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    /// AWS ALB additionally leaves `+`, `=` and `/` alone.
    const ALB: &AsciiSet = &NGINX.remove(b'+').remove(b'=').remove(b'/');

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn b64(pem: &str) -> String {
        STANDARD.encode(der(pem))
    }

    fn hex_sha256(pem: &str) -> String {
        Sha256::digest(der(pem))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn run(
        format: HeaderFormat,
        values: &[&str],
    ) -> Result<Option<Vec<CertificateDer<'static>>>, ProxyHeaderError> {
        let name = format.default_header();
        let lines: Vec<_> = values.iter().map(|v| (name, *v)).collect();
        extract(format, &HeaderName::from_static(name), &map(&lines))
    }

    fn chain(format: HeaderFormat, values: &[&str]) -> Vec<CertificateDer<'static>> {
        run(format, values).unwrap().unwrap()
    }

    fn leaf_only(format: HeaderFormat, value: &str) {
        assert_eq!(chain(format, &[value]), vec![der(CLIENT_PEM)], "{format:?}");
    }

    fn malformed(format: HeaderFormat, value: &str) {
        let err = run(format, &[value]).unwrap_err();
        assert!(err.0.contains(format.default_header()), "{err}");
    }

    #[test]
    fn nginx_escaped_pem() {
        let value = utf8_percent_encode(CLIENT_PEM, NGINX).to_string();
        assert!(value.contains("%0A") && value.contains("%2B"));
        leaf_only(HeaderFormat::PemUrlencoded, &value);
    }

    #[test]
    fn nginx_escaped_chain() {
        let value = utf8_percent_encode(&format!("{CLIENT_PEM}{CA_PEM}"), NGINX).to_string();
        let got = chain(HeaderFormat::PemUrlencoded, &[&value]);
        assert_eq!(got, vec![der(CLIENT_PEM), der(CA_PEM)]);
    }

    #[test]
    fn alb_keeps_plus_literal() {
        let value = utf8_percent_encode(CLIENT_PEM, ALB).to_string();
        assert!(value.contains('+'), "test cert should exercise '+'");
        leaf_only(HeaderFormat::PemUrlencoded, &value);
    }

    #[test]
    fn apache_spaces_and_tabs() {
        leaf_only(HeaderFormat::Pem, &CLIENT_PEM.replace('\n', " "));
        leaf_only(HeaderFormat::Pem, &CLIENT_PEM.replace('\n', "\t"));
        let both = format!("{CLIENT_PEM}{CA_PEM}").replace('\n', " ");
        assert_eq!(
            chain(HeaderFormat::Pem, &[&both]),
            vec![der(CLIENT_PEM), der(CA_PEM)]
        );
    }

    #[test]
    fn haproxy_base64() {
        leaf_only(HeaderFormat::DerBase64, &b64(CLIENT_PEM));
    }

    #[test]
    fn traefik_plain_and_escaped() {
        let plain = format!("{},{}", b64(CLIENT_PEM), b64(CA_PEM));
        let want = vec![der(CLIENT_PEM), der(CA_PEM)];
        assert_eq!(chain(HeaderFormat::Traefik, &[&plain]), want);
        // Traefik < 2.9.4 ran url.QueryEscape over the joined value.
        let escaped = utf8_percent_encode(&plain, NON_ALPHANUMERIC).to_string();
        assert!(escaped.contains("%2C"));
        assert_eq!(chain(HeaderFormat::Traefik, &[&escaped]), want);
        leaf_only(HeaderFormat::Traefik, &b64(CLIENT_PEM));
    }

    fn envoy_cert(pem: &str) -> String {
        utf8_percent_encode(pem, NGINX)
            .to_string()
            .replace("%0A", "%0a")
    }

    fn xfcc_element(hash: &str) -> String {
        format!(
            "By=spiffe://cluster.local/ns/edge/sa/certgate;Hash={hash};Cert=\"{}\";Subject=\"O=x,CN=y\";URI=spiffe://a;URI=spiffe://b",
            envoy_cert(CLIENT_PEM)
        )
    }

    #[test]
    fn xfcc_last_element_wins() {
        let real = xfcc_element(&hex_sha256(CLIENT_PEM).to_uppercase());
        let forged = format!(
            "By=x;Cert=\"{}\";Subject=\"a=\\\"b\\\\,c;d\"",
            envoy_cert(CA_PEM)
        );
        leaf_only(HeaderFormat::Xfcc, &real);
        leaf_only(HeaderFormat::Xfcc, &format!("{forged},{real}"));
        // Separate header lines form one list.
        assert_eq!(
            chain(HeaderFormat::Xfcc, &[&forged, &real]),
            vec![der(CLIENT_PEM)]
        );
    }

    #[test]
    fn xfcc_chain_supplies_intermediates() {
        let value = format!(
            "Cert={};Chain={}",
            envoy_cert(CLIENT_PEM),
            envoy_cert(&format!("{CLIENT_PEM}{CA_PEM}"))
        );
        assert_eq!(
            chain(HeaderFormat::Xfcc, &[&value]),
            vec![der(CLIENT_PEM), der(CA_PEM)]
        );
        let wrong = format!(
            "Cert={};Chain={}",
            envoy_cert(CLIENT_PEM),
            envoy_cert(CA_PEM)
        );
        malformed(HeaderFormat::Xfcc, &wrong);
    }

    #[test]
    fn rfc9440() {
        let leaf = format!(":{}:", b64(CLIENT_PEM));
        leaf_only(HeaderFormat::Rfc9440, &leaf);
        let headers = map(&[
            ("client-cert", &leaf),
            ("client-cert-chain", &format!(":{}:", b64(CA_PEM))),
            ("client-cert-chain", &format!(":{}:", b64(CA_PEM))),
        ]);
        let got = extract(
            HeaderFormat::Rfc9440,
            &HeaderName::from_static("client-cert"),
            &headers,
        );
        assert_eq!(
            got.unwrap().unwrap(),
            vec![der(CLIENT_PEM), der(CA_PEM), der(CA_PEM)]
        );
    }

    #[test]
    fn rfc9440_malformed() {
        malformed(HeaderFormat::Rfc9440, "::");
        malformed(HeaderFormat::Rfc9440, "\"not-bytes\"");
        malformed(HeaderFormat::Rfc9440, &b64(CLIENT_PEM));
        let leaf = format!(":{}:", b64(CLIENT_PEM));
        for bad_chain in [
            format!(":{}:, 42", b64(CA_PEM)),
            "(:AA==:)".into(),
            "::".into(),
        ] {
            let headers = map(&[("client-cert", &leaf), ("client-cert-chain", &bad_chain)]);
            let err = extract(
                HeaderFormat::Rfc9440,
                &HeaderName::from_static("client-cert"),
                &headers,
            );
            assert!(
                err.unwrap_err().0.contains("client-cert-chain"),
                "{bad_chain}"
            );
        }
    }

    #[test]
    fn malformed_values() {
        use HeaderFormat::*;
        let nginx = utf8_percent_encode(CLIENT_PEM, NGINX).to_string();
        malformed(PemUrlencoded, &nginx.replacen("%0A", "%0", 1));
        malformed(PemUrlencoded, &format!("{nginx}%"));
        malformed(PemUrlencoded, &format!("{nginx}%zz"));
        malformed(
            PemUrlencoded,
            &utf8_percent_encode(KEY_PEM, NGINX).to_string(),
        );
        malformed(PemUrlencoded, &nginx[..nginx.len() / 2]);
        malformed(PemUrlencoded, &format!("{nginx}trailing"));
        malformed(PemUrlencoded, "hello");
        malformed(Pem, &KEY_PEM.replace('\n', " "));
        malformed(Pem, &CLIENT_PEM.replace('\n', " ").replace("MII", "MI!"));
        malformed(Pem, "-----BEGIN CERTIFICATE----- -----END CERTIFICATE-----");
        malformed(DerBase64, "not base64!");
        malformed(
            DerBase64,
            &b64(CLIENT_PEM).trim_end_matches('=').replacen('A', "", 1),
        );
        malformed(DerBase64, &STANDARD.encode(b"hello world"));
        // A well-formed DER SEQUENCE that is not a certificate.
        malformed(DerBase64, &STANDARD.encode([0x30, 0x03, 0x02, 0x01, 0x01]));
        let mut trailing = der(CLIENT_PEM).to_vec();
        trailing.extend([0, 0, 0]);
        malformed(DerBase64, &STANDARD.encode(trailing));
        malformed(Traefik, &format!("{},", b64(CLIENT_PEM)));
        malformed(Traefik, &format!("{}%2", b64(CLIENT_PEM)));
        let hash = hex_sha256(CLIENT_PEM);
        let reversed: String = hash.chars().rev().collect();
        malformed(Xfcc, &xfcc_element(&reversed));
        malformed(Xfcc, "By=spiffe://a;Hash=00;Subject=\"CN=x\"");
        malformed(Xfcc, &format!("{},By=x", xfcc_element(&hash)));
        malformed(Xfcc, &format!("{},", xfcc_element(&hash)));
        malformed(Xfcc, &format!("{};Subject=\"CN=x", xfcc_element(&hash)));
        // An open quote in an earlier element must not shift where the last one starts.
        malformed(Xfcc, &format!("By=\"unterminated,{}", xfcc_element(&hash)));
        malformed(Xfcc, &format!("By=a\"b,{}", xfcc_element(&hash)));
        malformed(Xfcc, &format!("{};Cert=x", xfcc_element(&hash)));
    }

    #[test]
    fn mangled_values_never_panic() {
        let hash = hex_sha256(CLIENT_PEM);
        let valid = [
            (
                HeaderFormat::PemUrlencoded,
                utf8_percent_encode(CLIENT_PEM, NGINX).to_string(),
            ),
            (HeaderFormat::Pem, CLIENT_PEM.replace('\n', " ")),
            (HeaderFormat::Xfcc, format!("By=a,{}", xfcc_element(&hash))),
            (HeaderFormat::DerBase64, b64(CLIENT_PEM)),
            (
                HeaderFormat::Traefik,
                format!("{},{}", b64(CLIENT_PEM), b64(CA_PEM)),
            ),
            (HeaderFormat::Rfc9440, format!(":{}:", b64(CLIENT_PEM))),
        ];
        for (format, value) in valid {
            assert!(run(format, &[&value]).is_ok());
            for cut in 0..value.len() {
                let _ = run(format, &[&value[..cut]]);
                for c in ["\"", "%", ",", ":"] {
                    let _ = run(
                        format,
                        &[&format!("{}{c}{}", &value[..cut], &value[cut + 1..])],
                    );
                }
            }
        }
    }

    #[test]
    fn limits() {
        let one = b64(CLIENT_PEM);
        malformed(HeaderFormat::Traefik, &[one.as_str(); 11].join(","));
        assert_eq!(
            chain(HeaderFormat::Traefik, &[&[one.as_str(); 10].join(",")]).len(),
            10
        );
        malformed(HeaderFormat::DerBase64, &"A".repeat(MAX_VALUE_LEN + 4));
        let big = "A".repeat(MAX_VALUE_LEN / 2 + 1);
        assert!(run(HeaderFormat::Xfcc, &[&big, &big])
            .unwrap_err()
            .0
            .contains("64 KiB"));
    }

    #[test]
    fn repeated_header_is_ambiguous() {
        let one = b64(CLIENT_PEM);
        for format in [HeaderFormat::DerBase64, HeaderFormat::Traefik] {
            let err = run(format, &[&one, &one]).unwrap_err();
            assert!(err.0.contains("more than once"), "{err}");
        }
        let pem = utf8_percent_encode(CLIENT_PEM, NGINX).to_string();
        assert!(run(HeaderFormat::PemUrlencoded, &[&pem, ""]).is_err());
        let sf = format!(":{one}:");
        assert!(run(HeaderFormat::Rfc9440, &[&sf, &sf]).is_err());
    }

    #[test]
    fn absent_or_empty_means_no_certificate() {
        let formats = [
            HeaderFormat::PemUrlencoded,
            HeaderFormat::Pem,
            HeaderFormat::Xfcc,
            HeaderFormat::DerBase64,
            HeaderFormat::Traefik,
            HeaderFormat::Rfc9440,
        ];
        for format in formats {
            let name = HeaderName::from_static(format.default_header());
            assert_eq!(run(format, &[]), Ok(None));
            assert_eq!(run(format, &[""]), Ok(None));
            assert_eq!(run(format, &["  \t "]), Ok(None));
            assert!(!is_claimed(format, &name, &HeaderMap::new()));
            assert!(!is_claimed(
                format,
                &name,
                &map(&[(format.default_header(), " ")])
            ));
            assert!(is_claimed(
                format,
                &name,
                &map(&[(format.default_header(), "x")])
            ));
            assert_eq!(header_names(format, &name)[0], name);
        }
        let name = HeaderName::from_static("client-cert");
        let only_chain = map(&[("client-cert-chain", ":AA==:")]);
        assert!(is_claimed(HeaderFormat::Rfc9440, &name, &only_chain));
        assert_eq!(extract(HeaderFormat::Rfc9440, &name, &only_chain), Ok(None));
        assert_eq!(header_names(HeaderFormat::Rfc9440, &name).len(), 2);
    }

    #[test]
    fn non_visible_ascii_is_malformed() {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("x-ssl-client-der");
        headers.insert(&name, HeaderValue::from_bytes(b"MII\xff").unwrap());
        assert!(extract(HeaderFormat::DerBase64, &name, &headers).is_err());
    }

    #[test]
    fn config_words() {
        assert_eq!(HeaderFormat::default(), HeaderFormat::PemUrlencoded);
        for (format, word) in [
            (HeaderFormat::PemUrlencoded, "pem-urlencoded"),
            (HeaderFormat::Pem, "pem"),
            (HeaderFormat::Xfcc, "xfcc"),
            (HeaderFormat::DerBase64, "der-base64"),
            (HeaderFormat::Traefik, "traefik"),
            (HeaderFormat::Rfc9440, "rfc9440"),
        ] {
            assert_eq!(format.as_str(), word);
            assert_eq!(
                serde_json::to_string(&format).unwrap(),
                format!("\"{word}\"")
            );
            assert_eq!(
                serde_json::from_str::<HeaderFormat>(&format!("\"{word}\"")).unwrap(),
                format
            );
        }
    }
}
