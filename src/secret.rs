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

/// `N` bytes from the OS RNG in one system call (callers that need several values draw
/// them together).
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill(&mut bytes);
    bytes
}

fn fill(buf: &mut [u8]) {
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
