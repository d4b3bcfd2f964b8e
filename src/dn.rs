//! Distinguished names: the RFC 4514 strings clients and operators declare, the subjects
//! certificates carry, and RFC 4517 `distinguishedNameMatch` between them (SPEC §5).
//!
//! A name is a sequence of RDNs, each a set of (attribute type OID, value). Two names match
//! when they have the same number of RDNs, in the same order, each RDN the same set of
//! types, and the values equal after RFC 4518 string preparation (transcoding, mapping,
//! NFKC, case folding, insignificant-space handling) whatever the ASN.1 string type
//! (UTF8String, PrintableString, IA5String, BMPString, TeletexString). A declared `#hex`
//! value compares byte for byte with the DER encoding of the certificate's value.
//! Declared names are kept as declared; this parsed form is derived from them when needed.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization as _;
use x509_parser::der_parser::asn1_rs::ToDer;
use x509_parser::x509::X509Name;

/// A parsed distinguished name.
///
/// Boxed slices and static OIDs keep it small: every `tls_client_auth` client holds one
/// for as long as it is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(Box<[Rdn]>);

/// One RDN: its attribute-value assertions, sorted so that equal sets compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rdn(Box<[Ava]>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ava {
    /// The attribute type, dotted (borrowed from `NAMES` when it is a known type).
    oid: Cow<'static, str>,
    value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    /// Prepared text (RFC 4518), of a string value.
    Text(Box<str>),
    /// The DER encoding of the value (a declared `#hex`).
    Der(Box<[u8]>),
    /// A certificate's value: its DER, and its prepared text when it is a string type.
    Both(Box<[u8]>, Option<Box<str>>),
}

/// Attribute type names, as RFC 4514 strings may write them (matched case-insensitively),
/// and their OIDs. The first name of each OID is the one printed.
const NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("commonName", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("surname", "2.5.4.4"),
    ("serialNumber", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("countryName", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("localityName", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("S", "2.5.4.8"),
    ("stateOrProvinceName", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("streetAddress", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("organizationName", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("organizationalUnitName", "2.5.4.11"),
    ("title", "2.5.4.12"),
    ("description", "2.5.4.13"),
    ("businessCategory", "2.5.4.15"),
    ("postalCode", "2.5.4.17"),
    ("GN", "2.5.4.42"),
    ("givenName", "2.5.4.42"),
    ("initials", "2.5.4.43"),
    ("generationQualifier", "2.5.4.44"),
    ("dnQualifier", "2.5.4.46"),
    ("pseudonym", "2.5.4.65"),
    ("organizationIdentifier", "2.5.4.97"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("domainComponent", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("userId", "0.9.2342.19200300.100.1.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
    ("E", "1.2.840.113549.1.9.1"),
    ("email", "1.2.840.113549.1.9.1"),
    ("jurisdictionC", "1.3.6.1.4.1.311.60.2.1.3"),
    ("jurisdictionST", "1.3.6.1.4.1.311.60.2.1.2"),
    ("jurisdictionL", "1.3.6.1.4.1.311.60.2.1.1"),
];

/// The name an OID is printed with, if it has one.
pub fn short_name(oid: &str) -> Option<&'static str> {
    NAMES.iter().find(|(_, o)| *o == oid).map(|(n, _)| *n)
}

// === impl Dn ===

impl Dn {
    /// Parses an RFC 4514 string; `None` when it is not a non-empty name certgate can
    /// compare (an unknown attribute name, a malformed value).
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_with(s, false)
    }

    /// Parses a stored name, which the previous release (c5411bc) wrote in its canonical
    /// form: like `parse` (the same result wherever `parse` succeeds), except that a value
    /// starting with an unescaped `#` that is not a hexstring is text (that form did not
    /// escape a leading `#`).
    pub fn parse_legacy(s: &str) -> Option<Self> {
        Self::parse_with(s, true)
    }

    fn parse_with(s: &str, legacy: bool) -> Option<Self> {
        if s.trim().is_empty() {
            return None;
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(s, ',') {
            let mut avas = Vec::new();
            for ava in split_unescaped(rdn, '+') {
                let (ty, value) = ava.split_once('=')?;
                let oid = attribute_oid(ty.trim())?;
                avas.push(Ava {
                    oid,
                    value: declared_value(value, legacy)?,
                });
            }
            avas.sort();
            rdns.push(Rdn(avas.into_boxed_slice()));
        }
        Some(Self(rdns.into_boxed_slice()))
    }

    /// A certificate's subject (or issuer).
    pub fn from_x509(name: &X509Name<'_>) -> Self {
        let rdns = name
            .iter()
            .map(|rdn| {
                let mut avas: Vec<Ava> = rdn
                    .iter()
                    .map(|atv| {
                        let value = atv.attr_value();
                        let der = value.to_der_vec().unwrap_or_default();
                        let text = decode_string(value.header.tag().0, value.data)
                            .and_then(|t| prepare(&t));
                        Ava {
                            oid: known_oid(atv.attr_type().to_id_string()),
                            value: Value::Both(der.into_boxed_slice(), text),
                        }
                    })
                    .collect();
                avas.sort();
                Rdn(avas.into_boxed_slice())
            })
            .collect::<Vec<_>>();
        // X.509 lists RDNs from the root; RFC 4514 strings from the leaf.
        Self(rdns.into_iter().rev().collect())
    }

    /// RFC 4517 `distinguishedNameMatch` of this (declared) name against `other`.
    pub fn matches(&self, other: &Dn) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(other.0.iter()).all(|(a, b)| a.matches(b))
    }

    /// A canonical text form: equal declared names give equal strings.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, ava) in rdn.0.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                out.push_str(short_name(&ava.oid).unwrap_or(&ava.oid));
                out.push('=');
                match &ava.value {
                    Value::Text(t) | Value::Both(_, Some(t)) => escape(t, &mut out),
                    Value::Der(der) | Value::Both(der, None) => {
                        out.push('#');
                        for b in der.iter() {
                            let _ = write!(out, "{b:02x}");
                        }
                    }
                }
            }
        }
        out
    }
}

impl Rdn {
    /// The same set of (type, value): every declared AVA pairs with a distinct one of
    /// `other`'s.
    fn matches(&self, other: &Rdn) -> bool {
        if self.0.len() != other.0.len() {
            return false;
        }
        // Which of `other`'s AVAs are paired already: a bit each for the usual few
        // (nearly every RDN has one), a vector beyond 64.
        let mut few = 0u64;
        let mut many = if other.0.len() > 64 {
            vec![false; other.0.len()]
        } else {
            Vec::new()
        };
        self.0.iter().all(|a| {
            let used = |i: usize| {
                if many.is_empty() {
                    few >> i & 1 == 1
                } else {
                    many[i]
                }
            };
            let found = other
                .0
                .iter()
                .enumerate()
                .position(|(i, b)| !used(i) && a.oid == b.oid && a.value.matches(&b.value));
            match found {
                Some(i) if many.is_empty() => {
                    few |= 1 << i;
                    true
                }
                Some(i) => {
                    many[i] = true;
                    true
                }
                None => false,
            }
        })
    }
}

impl Value {
    fn matches(&self, other: &Value) -> bool {
        fn der(v: &Value) -> Option<&[u8]> {
            match v {
                Value::Der(d) | Value::Both(d, _) => Some(d),
                Value::Text(_) => None,
            }
        }
        fn text(v: &Value) -> Option<&str> {
            match v {
                Value::Text(t) | Value::Both(_, Some(t)) => Some(t),
                _ => None,
            }
        }
        match (self, other) {
            // A #hex side compares encodings, byte for byte.
            (Value::Der(_), _) | (_, Value::Der(_)) => {
                der(self).is_some() && der(self) == der(other)
            }
            _ => text(self).is_some() && text(self) == text(other),
        }
    }
}

/// Whether two RFC 4514 strings name the same entry.
pub fn dn_equal(a: &str, b: &str) -> bool {
    match (Dn::parse(a), Dn::parse(b)) {
        (Some(a), Some(b)) => a.matches(&b),
        _ => false,
    }
}

/// The canonical form of an RFC 4514 string (`None` if it is not one).
pub fn canonical_dn(s: &str) -> Option<String> {
    Dn::parse(s).map(|d| d.canonical())
}

/// The RFC 4514 string form of a certificate's name (for display: `/identity`, logs).
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let value = atv.attr_value();
            let text = decode_string(value.header.tag().0, value.data);
            match (short_name(&oid), text) {
                (Some(name), Some(text)) => {
                    out.push_str(name);
                    out.push('=');
                    escape(&text, &mut out);
                }
                // RFC 4514 §2.4: a type without a name, or a value without a string form,
                // is written as #hex of its BER encoding.
                (name, _) => {
                    out.push_str(name.unwrap_or(&oid));
                    out.push_str("=#");
                    for b in value.to_der_vec().unwrap_or_default() {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
        }
    }
    out
}

// === parsing RFC 4514 ===

/// `s` split at each `sep` that no backslash escapes.
fn split_unescaped(s: &str, sep: char) -> impl Iterator<Item = &str> {
    // Each part is a slice of `s`, escapes kept: nothing is copied.
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == sep {
                rest = Some(&text[i + c.len_utf8()..]);
                return Some(&text[..i]);
            }
        }
        rest = None;
        Some(text)
    })
}

/// An attribute type: a known name (any case), a dotted OID, or `OID.` and a dotted OID.
fn attribute_oid(ty: &str) -> Option<Cow<'static, str>> {
    let numeric = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
            && s.contains('.')
    };
    let ty = match ty.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("OID.") => {
            let oid = &ty[4..];
            return numeric(oid).then(|| known_oid(oid.to_owned()));
        }
        _ => ty,
    };
    if numeric(ty) {
        return Some(known_oid(ty.to_owned()));
    }
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(ty))
        .map(|(_, oid)| Cow::Borrowed(*oid))
}

/// A dotted OID, borrowed from `NAMES` when it is one of them (no allocation to keep).
fn known_oid(oid: String) -> Cow<'static, str> {
    match NAMES.iter().find(|(_, known)| *known == oid) {
        Some((_, known)) => Cow::Borrowed(*known),
        None => Cow::Owned(oid),
    }
}

/// A declared value: `#hex` (the DER encoding), or a string with RFC 4514 escapes.
/// `legacy`: a `#` value that is not a hexstring is text (see `Dn::parse_legacy`).
fn declared_value(raw: &str, legacy: bool) -> Option<Value> {
    let raw = raw.trim_start();
    if let Some(hex) = raw.strip_prefix('#') {
        match hexstring(hex) {
            Some(bytes) => return Some(Value::Der(bytes.into_boxed_slice())),
            None if !legacy => return None,
            None => {}
        }
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // RFC 4514 §3: a hex pair, or one of the characters that need escaping.
            let next = chars.next()?;
            if next.is_ascii_hexdigit() {
                let lo = chars.next()?;
                let byte = u8::from_str_radix(&format!("{next}{lo}"), 16).ok()?;
                bytes.push(byte);
            } else if matches!(
                next,
                ' ' | '"' | '#' | '+' | ',' | ';' | '<' | '=' | '>' | '\\'
            ) {
                bytes.push(next as u8);
            } else {
                return None;
            }
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    prepare(&text).map(Value::Text)
}

/// hexstring = SHARP 1*hexpair (RFC 4514 §3), without its `#`.
fn hexstring(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// RFC 4514 escaping of a value for printing.
fn escape(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

// === certificate values ===

/// The text of an ASN.1 string value, by its universal tag; `None` for other types.
fn decode_string(tag: u32, data: &[u8]) -> Option<String> {
    match tag {
        // UTF8String
        12 => std::str::from_utf8(data).ok().map(str::to_owned),
        // NumericString, PrintableString, IA5String, VisibleString: ASCII
        18 | 19 | 22 | 26 => data
            .is_ascii()
            .then(|| String::from_utf8_lossy(data).into_owned()),
        // TeletexString: read as ISO 8859-1, as certificate software does in practice.
        20 => Some(data.iter().map(|&b| char::from(b)).collect()),
        // UniversalString: UCS-4, big-endian.
        28 => data
            .chunks(4)
            .map(|c| {
                let c: [u8; 4] = c.try_into().ok()?;
                char::from_u32(u32::from_be_bytes(c))
            })
            .collect(),
        // BMPString: UCS-2, big-endian.
        30 => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

// === RFC 4518 string preparation (caseIgnoreMatch) ===

/// Prepares a value for comparison: maps (control characters to nothing or to SPACE,
/// other separators to SPACE), case-folds, normalizes (NFKC), refuses prohibited code
/// points, and folds insignificant spaces (RFC 4518 §2).
fn prepare(s: &str) -> Option<Box<str>> {
    if s.is_ascii() {
        return Some(prepare_ascii(s));
    }
    prepare_unicode(s)
}

/// `prepare`, for any text.
fn prepare_unicode(s: &str) -> Option<Box<str>> {
    let mut mapped = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{09}' | '\u{0A}' | '\u{0B}' | '\u{0C}' | '\u{0D}' | '\u{85}' => mapped.push(' '),
            // Mapped to nothing: soft hyphen, combining grapheme joiner, Mongolian free
            // variation selectors and soft hyphen, zero-width characters, variation
            // selectors, the object replacement character, and other controls.
            '\u{AD}'
            | '\u{34F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFFC}' => {}
            c if c.is_control() => {}
            c if c.is_whitespace() => mapped.push(' '),
            c => mapped.push(c),
        }
    }
    let folded: String = mapped
        .to_lowercase()
        .nfkc()
        .collect::<String>()
        .to_lowercase();
    // Prohibited: private use, non-characters, the replacement character.
    let prohibited = |c: char| {
        let n = c as u32;
        matches!(n, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD | 0xFFFD)
            || (n & 0xFFFE) == 0xFFFE
            || (0xFDD0..=0xFDEF).contains(&n)
    };
    if folded.chars().any(prohibited) {
        return None;
    }
    let mut out = String::with_capacity(folded.len());
    for word in folded.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Some(out.into_boxed_str())
}

/// `prepare` for ASCII text, which most names are: NFKC changes no ASCII character and
/// case folding is ASCII lowercasing, so only the mapping and the space folding remain.
/// Gives exactly what `prepare_unicode` gives (a unit test compares them).
fn prepare_ascii(s: &str) -> Box<str> {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for b in s.bytes() {
        let c = match b {
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => {
                space = !out.is_empty();
                continue;
            }
            c if c.is_ascii_control() => continue,
            c => c.to_ascii_lowercase(),
        };
        if space {
            out.push(' ');
            space = false;
        }
        out.push(char::from(c));
    }
    out.into_boxed_str()
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
        assert!(dn_equal("CN=admin", "OID.2.5.4.3=admin"));
        assert!(!dn_equal(
            "CN=admin,O=certgate dev",
            "O=certgate dev,CN=admin"
        ));
        assert!(!dn_equal(
            "CN=admin,O=certgate dev",
            "CN=admin2,O=certgate dev"
        ));
        assert!(!dn_equal("CN=admin", "CN=admin,O=x"));
    }

    #[test]
    fn every_named_attribute_and_its_oid_agree() {
        for (dn, same) in [
            (
                "organizationIdentifier=PSDGB-FCA-123456",
                "2.5.4.97=psdgb-fca-123456",
            ),
            ("emailAddress=A@B.example", "E=a@b.example"),
            ("serialNumber=1234", "SERIALNUMBER=1234"),
            ("GN=Zoë+SN=Smith", "givenName=zoë+surname=SMITH"),
            ("title=CTO", "2.5.4.12=cto"),
            ("STREET=1 Main St", "streetAddress=1 main st"),
            ("DC=example,DC=com", "domainComponent=EXAMPLE,dc=com"),
            ("UID=ann", "userId=ANN"),
        ] {
            assert!(dn_equal(dn, same), "{dn} / {same}");
        }
    }

    #[test]
    fn escapes_and_multivalued_rdns() {
        assert!(dn_equal(r"CN=a\,b,O=x", r"CN=a\2cb,O=x"));
        assert!(dn_equal("CN=a+UID=1,O=x", "UID=1+CN=a,O=x"));
        assert!(!dn_equal(r"CN=a\,b,O=x", "CN=a,CN=b,O=x"));
        assert!(dn_equal(r"CN=Z\C3\BCrich", "CN=Zürich"));
        assert!(!dn_equal(r"CN=\#0403616263", "CN=#0403616263"));
    }

    #[test]
    fn splitting_skips_escaped_separators() {
        let split = |s| split_unescaped(s, ',').collect::<Vec<_>>();
        assert_eq!(split(r"a\,b,c"), [r"a\,b", "c"]);
        assert_eq!(split(r"a\\,b"), [r"a\\", "b"]);
        assert_eq!(split("a,"), ["a", ""]);
        assert_eq!(split(""), [""]);
        assert_eq!(split("é,ü"), ["é", "ü"]);
    }

    #[test]
    fn each_value_of_a_multivalued_rdn_pairs_with_a_distinct_one() {
        assert!(dn_equal("CN=a+CN=b", "CN=b+CN=a"));
        assert!(!dn_equal("CN=a+CN=a", "CN=a+CN=b"));
        assert!(!dn_equal("CN=a+CN=b", "CN=a+CN=a"));
        // Beyond 64 values the pairing is tracked differently; the rule is the same.
        let values = |n: usize| (0..n).map(|i| format!("CN=v{i}")).collect::<Vec<_>>();
        let mut reversed = values(70);
        reversed.reverse();
        assert!(dn_equal(&values(70).join("+"), &reversed.join("+")));
        let mut twice = values(70);
        twice[69] = "CN=v0".into();
        assert!(!dn_equal(&twice.join("+"), &values(70).join("+")));
        assert!(!dn_equal(&values(70).join("+"), &twice.join("+")));
    }

    #[test]
    fn ascii_preparation_is_the_general_preparation() {
        let mut samples: Vec<String> = [
            "",
            " ",
            "  A  B\tC  ",
            "certgate dev",
            "PSDGB-FCA-123456",
            "a\u{7f}b",
            "x\r\ny",
            "\u{1}lead",
            "trail\u{0}",
            "Mixed   CASE  words ",
            "#23",
            "\\,+=\"<>;",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        samples.push((0u8..128).map(char::from).collect());
        for s in &samples {
            assert_eq!(Some(prepare_ascii(s)), prepare_unicode(s), "{s:?}");
        }
    }

    #[test]
    fn rfc4518_preparation() {
        assert_eq!(&*prepare("  A  B\tC  ").unwrap(), "a b c");
        assert_eq!(&*prepare("ﬁ").unwrap(), "fi"); // NFKC
        assert_eq!(&*prepare("Stra\u{AD}sse").unwrap(), "strasse"); // soft hyphen
        assert_eq!(&*prepare("A\u{00A0}B").unwrap(), "a b"); // no-break space
        assert!(prepare("\u{E000}").is_none()); // private use
    }

    #[test]
    fn names_that_are_not_names() {
        for bad in [
            "",
            "just text",
            "CN",
            "unknownName=x",
            "OID.cn=a",
            "OID.OID.4.3=a",
            "4=#=",
            "CN=#abc",
            "CN=#",
            r"CN=a\",
            r"CN=\zz",
        ] {
            assert!(Dn::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_forms_are_stable() {
        for dn in [
            "CN=x",
            r"CN=a\,b+UID=\#1,O=x",
            "CN=#0403616263",
            r"CN=\#x",
            "organizationIdentifier=PSDGB-FCA-123456,O=Bank",
            "1.2.3.4=#0c0161",
        ] {
            let c = canonical_dn(dn).unwrap();
            assert_eq!(canonical_dn(&c).as_deref(), Some(c.as_str()), "{dn:?}");
            assert!(dn_equal(dn, &c), "{dn:?} / {c:?}");
        }
    }

    #[test]
    fn names_stored_by_the_previous_release_read_as_it_meant_them() {
        // Its canonical form of CN=\#3 Client3 left the leading '#' unescaped.
        let stored = Dn::parse_legacy("CN=#3 client3,O=certgate dev").unwrap();
        assert!(Dn::parse("CN=#3 client3,O=certgate dev").is_none());
        assert_eq!(Some(stored), Dn::parse(r"cn=\#3 Client3, o=Certgate Dev"));
        // A hexstring stays the DER encoding.
        assert_eq!(Dn::parse_legacy("CN=#0c0161"), Dn::parse("CN=#0c0161"));
    }

    #[test]
    fn asn1_string_types_decode() {
        assert_eq!(decode_string(30, &[0, b'A', 0x67, 0x71]).unwrap(), "A東");
        assert_eq!(decode_string(20, b"Z\xfcrich").unwrap(), "Zürich");
        assert_eq!(decode_string(28, &[0, 0, 0, b'a']).unwrap(), "a");
        assert_eq!(decode_string(19, b"GB").unwrap(), "GB");
        assert_eq!(decode_string(19, b"\xff"), None);
        assert_eq!(decode_string(4, b"octets"), None);
    }
}
