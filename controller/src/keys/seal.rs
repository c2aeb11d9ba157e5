//! AES-256-GCM with random 96-bit nonces: the one primitive behind both layers of the envelope
//! (chunks sealed under data keys, data keys wrapped under the key-encryption key).
//!
//! Every sealed value is `nonce ‖ ciphertext ‖ tag`, and its associated data says what it is
//! and where it belongs, so a value moved to another place (a chunk under another chunk's
//! name, a data key under another id) fails authentication instead of decrypting.

pub use aws_lc_rs::aead::NONCE_LEN;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// What sealing adds to a value.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A 256-bit key. The raw bytes are kept only where they must be rewrapped or written out.
#[derive(Clone)]
pub struct RawKey(pub [u8; KEY_LEN]);

impl RawKey {
    pub fn random() -> Self {
        Self(random())
    }

    pub fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

impl Drop for RawKey {
    fn drop(&mut self) {
        self.0 = [0; KEY_LEN];
    }
}

pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0; N];
    aws_lc_rs::rand::fill(&mut b).expect("the system's random number generator");
    b
}

/// Append `nonce ‖ seal(plaintext) ‖ tag` to `out`. The nonce must never repeat for two
/// different plaintexts under one key: random, or derived from the plaintext itself.
pub fn seal_into(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        )
        .expect("AES-GCM seals any input below 64 GiB");
    out.extend_from_slice(tag.as_ref());
}

/// Open `nonce ‖ ciphertext ‖ tag` in place; returns the plaintext's range within `sealed`.
/// None when the value is too short or fails authentication (damaged, or sealed elsewhere).
pub fn open_in_place(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &mut [u8],
) -> Option<std::ops::Range<usize>> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, body)
        .ok()?;
    Some(NONCE_LEN..NONCE_LEN + body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_any_change() {
        let key = RawKey::random().aead();
        let mut sealed = b"head".to_vec();
        seal_into(&key, random(), b"where", b"secret rows", &mut sealed);
        assert_eq!(sealed.len(), 4 + OVERHEAD + 11);
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "ciphertext holds no plaintext"
        );
        let mut ok = sealed[4..].to_vec();
        let r = open_in_place(&key, b"where", &mut ok).unwrap();
        assert_eq!(&ok[r], b"secret rows");

        for i in 0..sealed.len() - 4 {
            let mut bad = sealed[4..].to_vec();
            bad[i] ^= 1;
            assert!(open_in_place(&key, b"where", &mut bad).is_none(), "bit {i}");
        }
        let mut moved = sealed[4..].to_vec();
        assert!(open_in_place(&key, b"elsewhere", &mut moved).is_none());
        let mut other_key = sealed[4..].to_vec();
        assert!(open_in_place(&RawKey::random().aead(), b"where", &mut other_key).is_none());
        assert!(open_in_place(&key, b"where", &mut [0u8; OVERHEAD - 1]).is_none());
    }

    #[test]
    fn nonces_differ_between_seals() {
        let key = RawKey::random().aead();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        seal_into(&key, random(), b"", b"same", &mut a);
        seal_into(&key, random(), b"", b"same", &mut b);
        assert_ne!(a, b, "random nonces");
    }
}
