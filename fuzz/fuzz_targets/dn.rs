//! RFC 4514 distinguished names as clients declare them (`tls_client_auth_subject_dn`) and
//! as certificates carry them: `canonical_dn` and `dn_equal` never panic, and the canonical
//! form is a fixed point; `Dn::parse_legacy` agrees with `Dn::parse` wherever it succeeds.
//!
//! Input layout: two names separated by the first 0xFF byte (never part of UTF-8), each
//! decoded lossily.

#![no_main]

use certgate::dn::{canonical_dn, dn_equal, Dn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let a = String::from_utf8_lossy(a);
    let b = String::from_utf8_lossy(b);

    // Stored names read as the previous release meant them, and exactly as `parse` reads
    // anything it accepts.
    for s in [&a, &b] {
        if let Some(strict) = Dn::parse(s) {
            assert_eq!(Dn::parse_legacy(s), Some(strict), "parse_legacy differs on {s:?}");
        }
    }

    let ca = canonical_dn(&a);
    let cb = canonical_dn(&b);
    for (s, c) in [(&a, &ca), (&b, &cb)] {
        if let Some(c) = c {
            // Canonicalizing a canonical name changes nothing: equal names are equal strings
            // however often they pass through `canonical_dn`.
            assert_eq!(
                canonical_dn(c).as_deref(),
                Some(c.as_str()),
                "canonical_dn is not idempotent on {s:?}"
            );
            assert!(
                dn_equal(s, c),
                "{s:?} is not equal to its canonical form {c:?}"
            );
            assert!(dn_equal(s, s));
        } else {
            assert!(!dn_equal(s, s));
        }
    }
    let equal = dn_equal(&a, &b);
    assert_eq!(equal, dn_equal(&b, &a), "dn_equal is not symmetric");
    assert_eq!(equal, ca.is_some() && ca == cb);
});
