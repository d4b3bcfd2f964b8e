//! Journal and snapshot files after a crash, disk damage or tampering: framing and record
//! decoding answer `Err`/`None`/a `Tail`, never panic; what decodes re-encodes faithfully.
//!
//! The input is read both as a framed file (`frame::decode`, then every record) and as one
//! bare record, because the fuzzer rarely forges a valid CRC32C by itself.

#![no_main]

use certgate::store::{codec, frame};
use libfuzzer_sys::fuzz_target;

fn record(bytes: &[u8]) {
    let _ = codec::decode_header(bytes);
    let _ = codec::decode_trailer(bytes);
    if let Ok(change) = codec::decode(bytes) {
        // Round trip: what the decoder accepts, the encoder reproduces.
        let mut again = Vec::new();
        codec::encode(&change, &mut again);
        let back = codec::decode(&again).expect("re-encoded record decodes");
        assert_eq!(format!("{back:?}"), format!("{change:?}"));
        let mut third = Vec::new();
        codec::encode(&back, &mut third);
        assert_eq!(again, third, "encoding is not deterministic");
    }
}

fuzz_target!(|data: &[u8]| {
    let (records, tail) = frame::decode(data);
    // Records are consecutive from offset 0; the tail starts where the last one ends.
    let consumed: usize = records.iter().map(|r| 8 + r.len()).sum();
    match tail {
        frame::Tail::Clean => assert_eq!(consumed, data.len()),
        frame::Tail::Torn { offset } | frame::Tail::Corrupt { offset } => {
            assert_eq!(consumed, offset);
            assert!(offset < data.len());
        }
    }
    for r in &records {
        assert!(!r.is_empty());
        record(r);
    }
    record(data);

    // Framing round trip for any non-empty payload.
    if !data.is_empty() {
        let mut framed = Vec::new();
        frame::encode(data, &mut framed);
        let (back, tail) = frame::decode(&framed);
        assert_eq!(tail, frame::Tail::Clean);
        assert_eq!(back, [data]);
    }
});
