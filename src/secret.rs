//! Random credentials and their digests.
//!
//! Tokens and client secrets are 256 bits from the OS RNG, handed out once in base64url and
//! kept only as SHA-256 digests: a stolen store or snapshot yields nothing usable, and a
//! digest is a fine hash-map key (look-up by digest leaks nothing about the plaintext).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a credential.
pub type Digest = [u8; 32];

/// A fresh credential: 32 random bytes, base64url without padding (43 characters).
pub fn generate() -> String {
    encode(&random::<32>())
}

/// base64url without padding, the form every credential and id is handed out in.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `N` bytes from the OS RNG.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill(&mut bytes);
    bytes
}

/// Bytes are read from the OS RNG in blocks of this size and handed out once each: a
/// `getrandom` call per credential cost as much as the rest of issuing an access token.
const POOL_BYTES: usize = 4096;

/// One thread's unused OS random bytes: `pool[used..]`.
struct Pool {
    bytes: Box<[u8; POOL_BYTES]>,
    used: usize,
}

fn fill(buf: &mut [u8]) {
    thread_local! {
        static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool {
            bytes: Box::new([0; POOL_BYTES]),
            used: POOL_BYTES,
        });
    }
    if buf.len() > POOL_BYTES / 8 {
        return os_fill(buf);
    }
    POOL.with_borrow_mut(|pool| {
        if POOL_BYTES - pool.used < buf.len() {
            os_fill(&mut pool.bytes[..]);
            pool.used = 0;
        }
        let taken = &mut pool.bytes[pool.used..pool.used + buf.len()];
        buf.copy_from_slice(taken);
        // Handed out once: the copy left behind is wiped, never reused.
        taken.fill(0);
        pool.used += buf.len();
    });
}

fn os_fill(buf: &mut [u8]) {
    // The OS RNG failing is not something to limp on with weaker randomness.
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// The digest under which a credential is stored.
pub fn digest(credential: &str) -> Digest {
    Sha256::digest(credential.as_bytes()).into()
}

/// Constant-time comparison of a presented credential with a stored digest.
pub fn matches(credential: &str, stored: &Digest) -> bool {
    digest(credential).ct_eq(stored).into()
}

/// Whether `s` could be a credential certgate issued (shape only), so garbage is not
/// looked up or revoked.
pub fn well_formed(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Hex form of a digest (config files name static secrets this way).
pub fn from_hex(hex: &str) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn pooled_draws_are_never_handed_out_twice_across_refills() {
        // 80-byte draws do not divide the pool: refills leave a tail, and must skip it.
        let draws: Vec<[u8; 80]> = (0..2000).map(|_| random::<80>()).collect();
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert_eq!(distinct.len(), draws.len());
        for d in &draws {
            // A wiped (reused) slice would read as zeros.
            assert!(d.chunks(16).all(|c| c.iter().any(|&b| b != 0)), "{d:?}");
        }
        let big = random::<1024>();
        assert!(big.iter().filter(|&&b| b == 0).count() < 64);
    }

    #[test]
    fn only_the_right_credential_matches() {
        let t = generate();
        let d = digest(&t);
        assert!(matches(&t, &d));
        assert!(!matches(&generate(), &d));
    }

    #[test]
    fn hex_round_trip() {
        let d = digest("s3cret");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(from_hex(&hex), Some(d));
        assert_eq!(from_hex("zz"), None);
    }
}
