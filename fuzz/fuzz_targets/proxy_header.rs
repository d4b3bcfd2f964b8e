//! The six proxy-header decoders: whatever a (trusted) proxy forwards, `extract` answers
//! `Ok` or `Err`, never panics.
//!
//! Input layout: byte 0 picks the format (`% 6`) and the header name (`/ 6 % 3`: the
//! format's default, a custom name, or `client-cert-chain` itself). The rest is split into
//! header lines: a `\n` starts a new line of the main header, a `\r` a new line of RFC 9440's
//! `client-cert-chain`. Neither byte can occur inside a header value, so every seed value
//! stays intact.

#![no_main]

use certgate::proxy_header::{extract, header_names, is_claimed, HeaderFormat};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const FORMATS: [HeaderFormat; 6] = [
    HeaderFormat::PemUrlencoded,
    HeaderFormat::Pem,
    HeaderFormat::Xfcc,
    HeaderFormat::DerBase64,
    HeaderFormat::Traefik,
    HeaderFormat::Rfc9440,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(selector) % FORMATS.len()];
    let name = match usize::from(selector) / FORMATS.len() % 3 {
        0 => HeaderName::from_static(format.default_header()),
        1 => HeaderName::from_static("x-client-cert"),
        _ => HeaderName::from_static("client-cert-chain"),
    };
    let chain = HeaderName::from_static("client-cert-chain");

    let mut headers = HeaderMap::new();
    let mut target = &name;
    let mut start = 0;
    for end in (0..=rest.len()).filter(|&i| i == rest.len() || matches!(rest[i], b'\n' | b'\r')) {
        if let Ok(value) = HeaderValue::from_bytes(&rest[start..end]) {
            headers.append(target, value);
        }
        if end < rest.len() {
            target = if rest[end] == b'\n' { &name } else { &chain };
        }
        start = end + 1;
    }

    let claimed = is_claimed(format, &name, &headers);
    let names = header_names(format, &name);
    assert_eq!(names[0], name);
    match extract(format, &name, &headers) {
        Ok(Some(certs)) => {
            // A decoded chain: the documented bounds hold, and something was claimed.
            assert!(
                !certs.is_empty() && certs.len() <= 10,
                "{} certificates",
                certs.len()
            );
            assert!(certs.iter().all(|c| c.first() == Some(&0x30)));
            assert!(
                claimed,
                "a certificate from a header that is_claimed calls blank"
            );
        }
        Ok(None) => {}
        Err(e) => {
            // Errors name the header, never echo the value.
            assert!(names.iter().any(|n| e.0.contains(n.as_str())), "{e}");
        }
    }
});
