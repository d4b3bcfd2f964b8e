//! The binary encoding of journal and snapshot records.
//!
//! Hand-written rather than JSON: a snapshot of a million clients is mostly copying each
//! client's metadata JSON, and encoding or decoding the rest should cost next to nothing
//! (SPEC §10: snapshot write and restore in seconds). Integers are little-endian; strings
//! and byte strings carry a `u32` length. Framing and checksums live in `frame`.

use std::net::IpAddr;
use std::sync::Arc;

use super::Change;
use crate::metadata::{AuthMethod, ClientRules, DeclaredDn, Registered, Subject, SubjectRule};
use crate::model::{AccessToken, ClientRecord, RegToken};

const CLIENT: u8 = 1;
const DELETE: u8 = 2;
const TOKEN: u8 = 3;
const REVOKE: u8 = 4;
const REGISTER: u8 = 5;
const ISSUE: u8 = 6;
/// Snapshot header: format version and generation.
pub const HEADER: u8 = 0x10;
/// Snapshot trailer: number of records.
pub const TRAILER: u8 = 0x11;
/// Journal header: format version and generation.
pub const JOURNAL_HEADER: u8 = 0x12;
/// Snapshot (format 3): a batch of framed records, LZ4-compressed.
const BATCH: u8 = 0x13;

/// Largest batch a reader accepts: a batch is written at about a megabyte, a record too
/// large for one is written on its own, so a larger claim is damage.
const MAX_BATCH: usize = 16 << 20;

/// Appends a batch record holding `framed` (records as `frame` frames them), compressed.
/// The metadata JSON that makes up most of a snapshot repeats its member names and, across
/// clients, much of its values: the disk, not the encoding, bounds a snapshot's time.
pub fn encode_batch(framed: &[u8], out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(BATCH);
    w.u32(framed.len() as u32);
    out.extend_from_slice(&lz4_flex::block::compress(framed));
}

/// The framed records of a batch record; `None` when `bytes` is not a batch record.
pub fn decode_batch(bytes: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let mut r = Reader { buf: bytes, pos: 0 };
    (r.u8().ok()? == BATCH).then_some(())?;
    Some((|| {
        let len = r.u32()? as usize;
        if len > MAX_BATCH {
            return Err(format!("a batch of {len} bytes exceeds {MAX_BATCH}"));
        }
        let framed = lz4_flex::block::decompress(&bytes[r.pos..], len)
            .map_err(|e| format!("batch does not decompress: {e}"))?;
        if framed.len() != len {
            return Err(format!("batch of {} bytes, {len} declared", framed.len()));
        }
        Ok(framed)
    })())
}

/// The record `encode` makes of `Change::Client`, from a client record that is not in a
/// `Change` (a snapshot encodes the shared records as they are).
pub fn encode_client(client: &ClientRecord, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(CLIENT);
    client_fields(&mut w, client);
}

/// Appends the encoding of `change` to `out`.
pub fn encode(change: &Change, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match change {
        Change::Client(client) => {
            w.u8(CLIENT);
            client_fields(&mut w, client);
        }
        Change::Delete { id } => {
            w.u8(DELETE);
            w.str(id);
        }
        Change::Token { digest, token } => {
            w.u8(TOKEN);
            w.bytes32(digest);
            token_fields(&mut w, token);
        }
        Change::Revoke { digest } => {
            w.u8(REVOKE);
            w.bytes32(digest);
        }
        Change::Register { client, initial } => {
            w.u8(REGISTER);
            client_fields(&mut w, client);
            match initial {
                Some((digest, token)) => {
                    w.u8(1);
                    w.bytes32(digest);
                    token_fields(&mut w, token);
                }
                None => w.u8(0),
            }
        }
        Change::Issue {
            digest,
            token,
            evicted,
        } => {
            w.u8(ISSUE);
            w.bytes32(digest);
            token_fields(&mut w, token);
            w.u32(evicted.len() as u32);
            for d in evicted {
                w.bytes32(d);
            }
        }
    }
}

/// A client record's durable fields (never its version or grace successor).
fn client_fields(w: &mut Writer<'_>, c: &ClientRecord) {
    w.str(&c.client_id);
    w.u64(c.issued_at);
    w.opt32(&c.secret);
    w.opt32(&c.bound);
    w.bytes32(&c.reg_token.digest);
    w.u64(c.reg_token.issued_at);
    w.u8(c.reg_token.revoked as u8);
    w.str(c.metadata.json());
    rules(w, &c.metadata);
}

fn token_fields(w: &mut Writer<'_>, token: &AccessToken) {
    w.str(&token.client_id);
    w.str(&token.scope);
    w.u64(token.iat);
    w.u64(token.exp);
    w.opt32(&token.cnf);
    w.u8(token.dynamic as u8);
    match token.uses_left {
        Some(n) => {
            w.u8(1);
            w.u32(n);
        }
        None => w.u8(0),
    }
}

fn read_client(r: &mut Reader<'_>) -> Result<ClientRecord, String> {
    Ok(ClientRecord {
        client_id: r.string()?.into(),
        version: 0,
        issued_at: r.u64()?,
        secret: r.opt32()?,
        bound: r.opt32()?,
        reg_token: RegToken {
            digest: r.bytes32()?,
            issued_at: r.u64()?,
            revoked: r.u8()? != 0,
        },
        metadata: {
            let json = r.string()?;
            Arc::new(Registered::new(json, read_rules(r)?))
        },
        grace: None,
    })
}

fn read_token(r: &mut Reader<'_>) -> Result<AccessToken, String> {
    Ok(AccessToken {
        client_id: r.string()?,
        scope: r.string()?,
        iat: r.u64()?,
        exp: r.u64()?,
        cnf: r.opt32()?,
        dynamic: r.u8()? != 0,
        uses_left: match r.u8()? {
            0 => None,
            _ => Some(r.u32()?),
        },
    })
}

/// Decodes one record (the whole of `bytes`).
pub fn decode(bytes: &[u8]) -> Result<Change, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let change = match r.u8()? {
        CLIENT => Change::Client(Box::new(read_client(&mut r)?)),
        DELETE => Change::Delete { id: r.string()? },
        TOKEN => Change::Token {
            digest: r.bytes32()?,
            token: read_token(&mut r)?,
        },
        REVOKE => Change::Revoke {
            digest: r.bytes32()?,
        },
        REGISTER => Change::Register {
            client: Box::new(read_client(&mut r)?),
            initial: match r.u8()? {
                0 => None,
                _ => Some((r.bytes32()?, read_token(&mut r)?)),
            },
        },
        ISSUE => {
            let digest = r.bytes32()?;
            let token = read_token(&mut r)?;
            let n = r.u32()? as usize;
            if n > r.remaining() / 32 {
                return Err("evicted count exceeds the record".into());
            }
            let evicted = (0..n).map(|_| r.bytes32()).collect::<Result<_, _>>()?;
            Change::Issue {
                digest,
                token,
                evicted,
            }
        }
        other => return Err(format!("unknown record type {other}")),
    };
    r.end()?;
    Ok(change)
}

/// A journal header record: the first record of every journal this release writes.
pub fn encode_journal_header(generation: u64, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(JOURNAL_HEADER);
    w.u32(1);
    w.u64(generation);
}

/// Reads a journal header record: (format version, generation).
pub fn decode_journal_header(bytes: &[u8]) -> Option<(u32, u64)> {
    let mut r = Reader { buf: bytes, pos: 0 };
    (r.u8().ok()? == JOURNAL_HEADER).then_some(())?;
    let v = (r.u32().ok()?, r.u64().ok()?);
    r.end().ok()?;
    Some(v)
}

/// A snapshot header record (format 2: with the record counts).
pub fn encode_header(header: &SnapshotHeader, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(HEADER);
    match header.counts {
        // Format 3: format 2's fields, and records come in compressed batches.
        Some((clients, tokens)) => {
            w.u32(3);
            w.u64(header.generation);
            w.u64(clients);
            w.u64(tokens);
        }
        None => {
            w.u32(1);
            w.u64(header.generation);
        }
    }
}

/// A snapshot trailer record.
pub fn encode_trailer(count: u64, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(TRAILER);
    w.u64(count);
}

/// What a snapshot's first record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub generation: u64,
    /// (clients, access tokens) the snapshot holds, so a restore sizes its tables once.
    /// Format 1 (earlier releases) has none.
    pub counts: Option<(u64, u64)>,
}

/// Reads a header record of format 1, 2 or 3 (a reader takes batches and plain records
/// alike, so the formats differ only in what the header holds).
pub fn decode_header(bytes: &[u8]) -> Option<SnapshotHeader> {
    let mut r = Reader { buf: bytes, pos: 0 };
    (r.u8().ok()? == HEADER).then_some(())?;
    let version = r.u32().ok()?;
    let generation = r.u64().ok()?;
    let counts = match version {
        1 => None,
        2 | 3 => Some((r.u64().ok()?, r.u64().ok()?)),
        _ => return None,
    };
    r.end().ok()?;
    Some(SnapshotHeader { generation, counts })
}

/// Reads a trailer record: the record count.
pub fn decode_trailer(bytes: &[u8]) -> Option<u64> {
    let mut r = Reader { buf: bytes, pos: 0 };
    (r.u8().ok()? == TRAILER).then_some(())?;
    let n = r.u64().ok()?;
    r.end().ok()?;
    Some(n)
}

/// The encoding of a client's enforced rules alone (the shared store keeps it in a column).
pub fn encode_rules(metadata: &Registered) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    self::rules(&mut Writer(&mut out), metadata);
    out
}

/// Decodes what `encode_rules` wrote.
pub fn decode_rules(bytes: &[u8]) -> Result<ClientRules, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let rules = read_rules(&mut r)?;
    r.end()?;
    Ok(rules)
}

fn rules(w: &mut Writer<'_>, metadata: &Registered) {
    let rules = &metadata.rules;
    w.u8(match rules.auth {
        AuthMethod::None => 0,
        AuthMethod::ClientSecretBasic => 1,
        AuthMethod::ClientSecretPost => 2,
        AuthMethod::TlsClientAuth => 3,
        AuthMethod::SelfSignedTlsClientAuth => 4,
    });
    w.u8(rules.client_credentials as u8
        | (rules.jwks_uri as u8) << 1
        | (rules.bound_tokens as u8) << 2);
    match metadata.scope() {
        Some(s) => {
            w.u8(1);
            w.str(s);
        }
        None => w.u8(0),
    }
    match metadata.subject() {
        None => w.u8(0),
        Some(Subject::Dn(s)) => {
            w.u8(1);
            w.str(s);
        }
        Some(Subject::Dns(s)) => {
            w.u8(2);
            w.str(s);
        }
        Some(Subject::Uri(s)) => {
            w.u8(3);
            w.str(s);
        }
        Some(Subject::Ip(ip)) => {
            w.u8(4);
            w.str(&ip.to_string());
        }
        Some(Subject::Email(s)) => {
            w.u8(5);
            w.str(s);
        }
    }
    w.u32(metadata.x5c_count() as u32);
    for t in metadata.x5c() {
        w.bytes32(&t);
    }
}

fn read_rules(r: &mut Reader<'_>) -> Result<ClientRules, String> {
    let auth = match r.u8()? {
        0 => AuthMethod::None,
        1 => AuthMethod::ClientSecretBasic,
        2 => AuthMethod::ClientSecretPost,
        3 => AuthMethod::TlsClientAuth,
        4 => AuthMethod::SelfSignedTlsClientAuth,
        other => return Err(format!("unknown auth method {other}")),
    };
    let flags = r.u8()?;
    let scope = match r.u8()? {
        0 => None,
        _ => Some(r.string()?.into_boxed_str()),
    };
    let subject = match r.u8()? {
        0 => None,
        // As declared, or the canonical form the previous release stored.
        1 => Some(SubjectRule::Dn(DeclaredDn::stored(&r.string()?))),
        2 => Some(SubjectRule::Dns(r.string()?.into())),
        3 => Some(SubjectRule::Uri(r.string()?.into())),
        4 => {
            Some(SubjectRule::Ip(r.string()?.parse::<IpAddr>().map_err(
                |_| "bad IP address in a subject rule".to_owned(),
            )?))
        }
        5 => Some(SubjectRule::Email(r.string()?.into())),
        other => return Err(format!("unknown subject rule {other}")),
    };
    let n = r.u32()? as usize;
    if n > r.remaining() / 32 {
        return Err("x5c count exceeds the record".into());
    }
    let mut x5c = Vec::with_capacity(n);
    for _ in 0..n {
        x5c.push(r.bytes32()?);
    }
    Ok(ClientRules {
        auth,
        client_credentials: flags & 1 != 0,
        jwks_uri: flags & 2 != 0,
        bound_tokens: flags & 4 != 0,
        scope,
        subject,
        x5c: x5c.into(),
    })
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes32(&mut self, v: &[u8; 32]) {
        self.0.extend_from_slice(v);
    }

    fn opt32(&mut self, v: &Option<[u8; 32]>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.bytes32(v);
            }
            None => self.u8(0),
        }
    }

    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| "record ends early".to_owned())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes32(&mut self) -> Result<[u8; 32], String> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }

    fn opt32(&mut self) -> Result<Option<[u8; 32]>, String> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.bytes32().map(Some),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".to_owned())
    }

    fn end(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err("trailing bytes in the record".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientRecord {
        ClientRecord {
            client_id: "abc".into(),
            version: 0,
            issued_at: 7,
            metadata: Arc::new(Registered::new(
                r#"{"client_name":"x"}"#.to_owned(),
                ClientRules {
                    auth: AuthMethod::SelfSignedTlsClientAuth,
                    client_credentials: true,
                    scope: Some("a b".into()),
                    subject: Some(SubjectRule::Ip("::1".parse().unwrap())),
                    x5c: vec![[9u8; 32]].into(),
                    jwks_uri: false,
                    bound_tokens: true,
                },
            )),
            secret: Some([1u8; 32]),
            bound: None,
            reg_token: RegToken {
                digest: [2u8; 32],
                issued_at: 8,
                revoked: true,
            },
            grace: None,
        }
    }

    fn token() -> AccessToken {
        AccessToken {
            client_id: "abc".into(),
            scope: "dcr".into(),
            iat: 1,
            exp: 2,
            cnf: Some([4u8; 32]),
            dynamic: true,
            uses_left: Some(3),
        }
    }

    #[test]
    fn a_snapshot_client_is_the_client_change_record() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_client(&client(), &mut a);
        encode(&Change::Client(Box::new(client())), &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn every_record_round_trips() {
        for change in [
            Change::Client(Box::new(client())),
            Change::Token {
                digest: [3u8; 32],
                token: token(),
            },
            Change::Delete { id: "abc".into() },
            Change::Revoke { digest: [5u8; 32] },
            Change::Register {
                client: Box::new(client()),
                initial: Some(([6u8; 32], token())),
            },
            Change::Register {
                client: Box::new(client()),
                initial: None,
            },
            Change::Issue {
                digest: [7u8; 32],
                token: token(),
                evicted: vec![[8u8; 32], [9u8; 32]],
            },
        ] {
            let mut buf = Vec::new();
            encode(&change, &mut buf);
            let back = decode(&buf).unwrap();
            assert_eq!(format!("{back:?}"), format!("{change:?}"));
        }
    }

    #[test]
    fn truncated_or_padded_records_are_errors() {
        let mut buf = Vec::new();
        encode(&Change::Client(Box::new(client())), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        buf.push(0);
        assert!(decode(&buf).is_err());
    }

    #[test]
    fn snapshot_headers_of_every_format_are_read() {
        for header in [
            SnapshotHeader {
                generation: 7,
                counts: Some((1_000_000, 42)),
            },
            SnapshotHeader {
                generation: 9,
                counts: None,
            },
        ] {
            let mut buf = Vec::new();
            encode_header(&header, &mut buf);
            assert_eq!(decode_header(&buf), Some(header));
            for cut in 0..buf.len() {
                assert_eq!(decode_header(&buf[..cut]), None, "cut at {cut}");
            }
        }
        // Format 1 as earlier releases wrote it, byte for byte.
        let mut v1 = vec![HEADER];
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(
            decode_header(&v1),
            Some(SnapshotHeader {
                generation: 5,
                counts: None
            })
        );
        // Format 2 (the previous release: the same fields, records never batched).
        let mut v2 = vec![HEADER];
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(&5u64.to_le_bytes());
        v2.extend_from_slice(&3u64.to_le_bytes());
        v2.extend_from_slice(&4u64.to_le_bytes());
        assert_eq!(
            decode_header(&v2),
            Some(SnapshotHeader {
                generation: 5,
                counts: Some((3, 4))
            })
        );
        // A format this release does not know is refused, not guessed at.
        let mut v4 = vec![HEADER];
        v4.extend_from_slice(&4u32.to_le_bytes());
        v4.extend_from_slice(&5u64.to_le_bytes());
        v4.extend_from_slice(&[0; 16]);
        assert_eq!(decode_header(&v4), None);
    }

    #[test]
    fn a_batch_round_trips_and_damage_is_an_error_not_a_guess() {
        let mut framed = Vec::new();
        for i in 0..200 {
            let record = format!(r#"{{"client_name":"client {i}","scope":"api:read"}}"#);
            crate::store::frame::encode(record.as_bytes(), &mut framed);
        }
        let mut batch = Vec::new();
        encode_batch(&framed, &mut batch);
        assert!(
            batch.len() < framed.len() / 4,
            "{} of {}",
            batch.len(),
            framed.len()
        );
        assert_eq!(decode_batch(&batch), Some(Ok(framed.clone())));
        // Any other record is not a batch.
        assert_eq!(decode_batch(&[CLIENT, 0, 0]), None);
        // A length that lies, a cut block, an absurd length: errors, never a guess.
        let claim = |n: u32| {
            let mut b = batch.clone();
            b[1..5].copy_from_slice(&n.to_le_bytes());
            decode_batch(&b)
        };
        assert!(matches!(claim(framed.len() as u32 + 1), Some(Err(_))));
        assert!(matches!(claim(framed.len() as u32 - 1), Some(Err(_))));
        assert!(matches!(claim(u32::MAX), Some(Err(_))));
        assert!(matches!(
            decode_batch(&batch[..batch.len() - 3]),
            Some(Err(_))
        ));
        assert!(matches!(decode_batch(&batch[..3]), Some(Err(_))));
    }
}
