//! AES-256-GCM for the one plaintext the shared store must keep: the grace successor
//! (SPEC §7a), sealed under `store.secret_key_file` so a replay may land on any node while
//! a database dump alone yields nothing.
//!
//! `ring` (already beneath rustls) does the cryptography; a sealed value is
//! `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with a fresh random nonce each time
//! and the row's identity as associated data, so a sealed value copied to another row does
//! not open.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// The key that seals grace successors.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// Reads the key file: 32 bytes in base64, surrounding whitespace ignored. The error
    /// names the file and never quotes its contents.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            format!(
                "{}: not base64 (make one with: openssl rand -base64 32)",
                path.display()
            )
        })?;
        Self::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 32 {
            return Err(format!(
                "the key must be 32 bytes, this one is {}",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "unusable key".to_owned())?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Seals `plaintext`, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::secret::random::<NONCE_LEN>();
        let mut out = nonce_bytes.to_vec();
        let mut sealed = plaintext.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Sealing only fails for inputs beyond AES-GCM's 64 GiB limit.
        if self
            .0
            .seal_in_place_append_tag(nonce, Aad::from(context), &mut sealed)
            .is_err()
        {
            return Vec::new();
        }
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what `seal` made with the same `context`; `None` if it was made under another
    /// key or context, or altered.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SealKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = key.seal(b"client-a", b"successor");
        assert!(!sealed.windows(9).any(|w| w == b"successor"));
        assert_eq!(key.open(b"client-a", &sealed).unwrap(), b"successor");
        assert!(key.open(b"client-b", &sealed).is_none());
        let other = SealKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open(b"client-a", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[15] ^= 1;
        assert!(key.open(b"client-a", &tampered).is_none());
        // A fresh nonce each time.
        assert_ne!(key.seal(b"c", b"x"), key.seal(b"c", b"x"));
    }

    #[test]
    fn key_files_are_32_bytes_of_base64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("  {}\n", STANDARD.encode([1u8; 32]))).unwrap();
        assert!(SealKey::load(&path).is_ok());
        std::fs::write(&path, STANDARD.encode([1u8; 16])).unwrap();
        let e = SealKey::load(&path).unwrap_err();
        assert!(e.contains("32 bytes"), "{e}");
        std::fs::write(&path, "not base64!").unwrap();
        assert!(SealKey::load(&path).is_err());
    }
}
