//! Record framing shared by journals and snapshots: `len: u32 LE`, `crc32c: u32 LE` of the
//! payload, then `len` payload bytes.

/// Largest record accepted when reading; a larger length is damage, not data.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

const HEADER: usize = 8;

/// Appends one framed record to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    encode_with(out, |out| out.extend_from_slice(payload));
}

/// Appends one framed record whose payload `write` appends to `out` (no extra copy).
pub fn encode_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    write(out);
    let payload = &out[start + HEADER..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
}

/// What reading a buffer of records found.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belonged to a valid record.
    Clean,
    /// From `offset` on, an incomplete or damaged record with nothing valid after it
    /// (a crash mid-write).
    Torn { offset: usize },
    /// A damaged record at `offset` followed by a valid one: real corruption.
    Corrupt { offset: usize },
}

/// Splits `buf` into record payloads, reporting how it ends.
pub fn decode(buf: &[u8]) -> (Vec<&[u8]>, Tail) {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match record_at(buf, pos) {
            Some(payload) => {
                records.push(payload);
                pos += HEADER + payload.len();
            }
            None => {
                let tail = if valid_record_after(buf, pos) {
                    Tail::Corrupt { offset: pos }
                } else {
                    Tail::Torn { offset: pos }
                };
                return (records, tail);
            }
        }
    }
    (records, Tail::Clean)
}

/// Whether the record at `pos` reaches past the end of `buf`: its header, or the length
/// its header declares (one a reader accepts), is not all there.
pub fn cut_short(buf: &[u8], pos: usize) -> bool {
    let Some(header) = buf.get(pos..pos + HEADER) else {
        return true;
    };
    accepted_len(header).is_some_and(|len| pos + HEADER + len > buf.len())
}

/// The payload length a record header declares, if a reader accepts it.
fn accepted_len(header: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    // Zero length is never written; rejecting it keeps zero-filled space (left by a
    // crash after the file grew) from reading as records.
    (1..=MAX_RECORD).contains(&len).then_some(len)
}

fn record_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let header = buf.get(pos..pos + HEADER)?;
    let len = accepted_len(header)?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = buf.get(pos + HEADER..pos + HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then_some(payload)
}

/// Whether any valid record starts after a damaged one at `pos`.
fn valid_record_after(buf: &[u8], pos: usize) -> bool {
    (pos + 1..buf.len()).any(|p| record_at(buf, p).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            encode(format!("{{\"record\":{i}}}").as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn clean_buffer_yields_every_record() {
        let buf = records(3);
        let (r, tail) = decode(&buf);
        assert_eq!(r.len(), 3);
        assert_eq!(tail, Tail::Clean);
    }

    #[test]
    fn truncated_last_record_is_a_torn_tail() {
        let buf = records(3);
        for cut in 1..20 {
            let (r, tail) = decode(&buf[..buf.len() - cut]);
            assert_eq!(r.len(), 2);
            assert!(matches!(tail, Tail::Torn { .. }), "cut {cut}: {tail:?}");
        }
    }

    #[test]
    fn damaged_record_followed_by_valid_ones_is_corruption() {
        let mut buf = records(3);
        buf[10] ^= 0xff; // inside the first record's payload
        let (r, tail) = decode(&buf);
        assert!(r.is_empty());
        assert_eq!(tail, Tail::Corrupt { offset: 0 });
    }

    #[test]
    fn damaged_last_record_is_torn() {
        let mut buf = records(3);
        let last = buf.len() - 2;
        buf[last] ^= 0xff;
        let (r, tail) = decode(&buf);
        assert_eq!(r.len(), 2);
        assert!(matches!(tail, Tail::Torn { .. }));
    }

    #[test]
    fn a_record_is_cut_short_until_its_declared_length_is_there() {
        let buf = records(2);
        let second = buf.len() / 2;
        assert!(!cut_short(&buf, 0));
        for end in second + 1..buf.len() {
            assert!(cut_short(&buf[..end], second), "end {end}");
        }
        // A length no reader accepts is damage, not a record still arriving.
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!cut_short(&huge, 0));
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut buf = records(2);
        let len = buf.len();
        buf.extend_from_slice(&[0u8; 64]);
        let (r, tail) = decode(&buf);
        assert_eq!(r.len(), 2);
        assert_eq!(tail, Tail::Torn { offset: len });
    }
}
