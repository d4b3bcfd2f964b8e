//! JSON from the network, parsed strictly, and the pieces the most frequent answers are
//! written with.
//!
//! Parsing: an object with the same member twice is an error, at any depth. RFC 8259 leaves
//! duplicates' meaning open and `serde_json` keeps the last one, so a proxy, a WAF or a
//! logger that keeps the first would judge a different request than certgate acts on;
//! refusing is the only reading both sides agree on.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Whether `value` is its own JSON string body: no control character, quote or backslash.
pub fn is_plain(value: &str) -> bool {
    // No early exit, so the loop vectorizes: the strings are short and almost always plain.
    value.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

/// Appends `value` as a JSON string, escaped only when it must be (as `serde_json` would).
pub fn push_str(out: &mut Vec<u8>, value: &str) {
    if is_plain(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, value).is_err() {
        // Writing a string into a Vec cannot fail; keep the JSON well formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// Appends `value` as a JSON number.
pub fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Parses `bytes` as one JSON value, refusing duplicate object members.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = de.deserialize_any(Strict)?;
    de.end()?;
    Ok(value)
}

/// Deserializes any JSON value, checking every object for duplicate members.
struct Strict;

impl<'de> de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One look-up per member: the slot found free is the one filled.
            let slot = match out.entry(key) {
                serde_json::map::Entry::Vacant(slot) => slot,
                serde_json::map::Entry::Occupied(taken) => {
                    let key = taken.key();
                    return Err(de::Error::custom(format_args!("duplicate member {key:?}")));
                }
            };
            slot.insert(map.next_value_seed(Strict)?);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(from_slice(br#"{"a":1,"a":2}"#).is_err());
        assert!(from_slice(br#"{"x":{"b":[{"c":1,"c":1}]}}"#).is_err());
        let v = from_slice(br#"{"a":[1,"two",{"b":null}],"c":1.5,"d":-3,"e":true}"#).unwrap();
        assert_eq!(v["a"][2]["b"], Value::Null);
        assert_eq!(v["c"], 1.5);
        assert_eq!(v["d"], -3);
    }

    #[test]
    fn trailing_data_and_deep_nesting_are_errors_not_panics() {
        assert!(from_slice(b"{} x").is_err());
        let deep = "[".repeat(100_000);
        assert!(from_slice(deep.as_bytes()).is_err());
    }
}
