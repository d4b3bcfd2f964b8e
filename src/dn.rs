//! Distinguished names in RFC 4514 string form: parsing, and the canonical form in which
//! equal names are equal strings (used wherever a DN is compared: registration,
//! `tls_client_auth`, static clients).

/// Distinguished-name equality in the spirit of RFC 4517 `distinguishedNameMatch`:
/// attribute types case-insensitive (short names and OIDs alike), values compared
/// case-insensitively with insignificant spaces removed, AVA order inside an RDN ignored.
pub fn dn_equal(a: &str, b: &str) -> bool {
    match (canonical_dn(a), canonical_dn(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A form of a distinguished name in which equal names (as `dn_equal` sees them) are
/// equal strings, so a declared DN is parsed once and compared by `==` afterwards.
/// `None` when `s` is not a non-empty RFC 4514 name.
pub fn canonical_dn(s: &str) -> Option<String> {
    let rdns = parse_dn(s)?;
    if rdns.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    for (i, rdn) in rdns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, (ty, value)) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            out.push_str(ty);
            out.push('=');
            match value {
                // Only lowercase hex digits: nothing to escape.
                Value::Hex(hex) => out.push_str(hex),
                Value::Str(s) => {
                    // A leading '#' would read back as a hex string.
                    if s.starts_with('#') {
                        out.push('\\');
                    }
                    for c in s.chars() {
                        if matches!(c, ',' | '+' | '=' | '\\') {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
            }
        }
    }
    Some(out)
}

type Rdn = Vec<(String, Value)>;

/// An attribute value, folded for comparison.
#[derive(Debug)]
enum Value {
    /// RFC 4514 `#` hexstring (the BER encoding), `#` and lowercase hex digits.
    Hex(String),
    /// A string value, unescaped.
    Str(String),
}

impl Value {
    fn text(&self) -> &str {
        match self {
            Value::Hex(s) | Value::Str(s) => s,
        }
    }
}

fn parse_dn(s: &str) -> Option<Vec<Rdn>> {
    let mut rdns = Vec::new();
    if s.trim().is_empty() {
        return Some(rdns);
    }
    for rdn in split_unescaped(s, ',') {
        let mut avas = Vec::new();
        for ava in split_unescaped(&rdn, '+') {
            let (ty, value) = ava.split_once('=')?;
            let ty = canonical_type(ty.trim())?;
            avas.push((ty, normalize_value(value)?));
        }
        avas.sort_by(|(ta, va), (tb, vb)| (ta, va.text()).cmp(&(tb, vb.text())));
        rdns.push(avas);
    }
    Some(rdns)
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn canonical_type(ty: &str) -> Option<String> {
    let upper = ty.to_ascii_uppercase();
    let upper = match upper.strip_prefix("OID.") {
        // The legacy prefix only ever precedes a numeric OID.
        Some(oid) if oid.bytes().all(|b| b.is_ascii_digit() || b == b'.') => oid.to_owned(),
        Some(_) => return None,
        None => upper,
    };
    let short = match upper.as_str() {
        "2.5.4.3" | "COMMONNAME" => "CN",
        "2.5.4.7" | "LOCALITYNAME" => "L",
        "2.5.4.8" | "STATEORPROVINCENAME" | "S" => "ST",
        "2.5.4.10" | "ORGANIZATIONNAME" => "O",
        "2.5.4.11" | "ORGANIZATIONALUNITNAME" => "OU",
        "2.5.4.6" | "COUNTRYNAME" => "C",
        "2.5.4.9" | "STREETADDRESS" => "STREET",
        "0.9.2342.19200300.100.1.25" | "DOMAINCOMPONENT" => "DC",
        "0.9.2342.19200300.100.1.1" | "USERID" => "UID",
        "1.2.840.113549.1.9.1" | "EMAILADDRESS" | "E" => "EMAILADDRESS",
        _ => {
            let valid = !upper.is_empty()
                && upper
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            return valid.then_some(upper);
        }
    };
    Some(short.to_owned())
}

/// Unescapes an RFC 4514 value and folds it for comparison.
fn normalize_value(raw: &str) -> Option<Value> {
    let raw = raw.trim_start();
    if let Some(hex) = raw.strip_prefix('#') {
        // hexstring = SHARP 1*hexpair (RFC 4514 §3); anything else after an unescaped '#'
        // is not a name.
        let hex = hex.trim();
        let valid =
            !hex.is_empty() && hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        return valid.then(|| Value::Hex(format!("#{}", hex.to_ascii_lowercase())));
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    // Trailing spaces count only when escaped.
    let mut significant_len = 0;
    while let Some(c) = chars.next() {
        if c == '\\' {
            let next = chars.next()?;
            if next.is_ascii_hexdigit() {
                let lo = chars.next()?;
                let byte = u8::from_str_radix(&format!("{next}{lo}"), 16).ok()?;
                bytes.push(byte);
            } else {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
            }
            significant_len = bytes.len();
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            if c != ' ' {
                significant_len = bytes.len();
            }
        }
    }
    bytes.truncate(significant_len);
    let value = String::from_utf8(bytes).ok()?;
    // caseIgnoreMatch with insignificant-space handling (RFC 4518, simplified).
    Some(Value::Str(
        value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_match_ignores_case_spacing_and_type_spelling() {
        assert!(dn_equal(
            "CN=admin,O=certgate dev",
            "cn=Admin, o=Certgate  Dev"
        ));
        assert!(dn_equal(
            "CN=admin,O=certgate dev",
            "2.5.4.3=admin,2.5.4.10=certgate dev"
        ));
        assert!(!dn_equal(
            "CN=admin,O=certgate dev",
            "O=certgate dev,CN=admin"
        ));
        assert!(!dn_equal(
            "CN=admin,O=certgate dev",
            "CN=admin2,O=certgate dev"
        ));
    }

    #[test]
    fn dn_match_handles_escapes_and_multivalued_rdns() {
        assert!(dn_equal(r"CN=a\,b,O=x", r"CN=a\2cb,O=x"));
        assert!(dn_equal("CN=a+UID=1,O=x", "UID=1+CN=a,O=x"));
        assert!(!dn_equal(r"CN=a\,b,O=x", "CN=a,CN=b,O=x"));
    }

    #[test]
    fn dn_validity() {
        assert!(canonical_dn("CN=x").is_some());
        assert!(canonical_dn("just text").is_none());
        assert!(canonical_dn("").is_none());
    }

    /// Found by `fuzz/fuzz_targets/dn.rs`: a '#' value that is not hex pairs kept its text,
    /// escapes included, and gained a backslash on every pass through `canonical_dn`.
    #[test]
    fn canonical_dn_is_idempotent() {
        for dn in [
            "CN=x",
            r"CN=a\,b+UID=\#1,O=x",
            "CN=#0403616263",
            "CN= #04 ,O=x",
            r"CN=\#x",
            r"CN=\#ab",
            r"CN=\23ab",
        ] {
            let c = canonical_dn(dn).unwrap();
            assert_eq!(canonical_dn(&c).as_deref(), Some(c.as_str()), "{dn:?}");
        }
        // "4=#=" is the minimized fuzzer input.
        for not_hex in ["4=#=", "1.2.3.4=#0402=870", r"CN=#a\,b", "CN=#", "CN=#abc"] {
            assert_eq!(canonical_dn(not_hex), None, "{not_hex:?}");
        }
    }

    /// Found by `fuzz/fuzz_targets/dn.rs` (minimized input "OID.OID.="): the "OID." prefix
    /// was stripped once, so "OID.OID.x" became the type "OID.x", which loses its own prefix
    /// on the next pass.
    #[test]
    fn oid_prefix_only_before_a_numeric_oid() {
        assert_eq!(canonical_dn("OID.OID.="), None);
        assert_eq!(canonical_dn("OID.OID.4.3=a"), None);
        assert_eq!(canonical_dn("oid.cn=a"), None);
        assert_eq!(canonical_dn("OID.1.2.3=a").as_deref(), Some("1.2.3=a"));
        assert!(dn_equal("oid.2.5.4.3=a", "CN=A"));
    }

    #[test]
    fn escaped_hash_is_a_string_not_a_hex_value() {
        assert!(!dn_equal(r"CN=\#0403616263", "CN=#0403616263"));
        assert!(dn_equal(r"CN=\#AB", r"CN=\23ab"));
        assert_eq!(canonical_dn(r"CN=\#x").as_deref(), Some(r"CN=\#x"));
    }

    #[test]
    fn canonical_dn_keeps_escaped_separators_apart() {
        assert_ne!(canonical_dn(r"CN=a\,b,O=x"), canonical_dn("CN=a,CN=b,O=x"));
        assert_ne!(canonical_dn(r"CN=a\+UID=1"), canonical_dn("CN=a+UID=1"));
    }
}
