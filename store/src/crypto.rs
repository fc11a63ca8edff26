//! Secret keys and the sealed-object format.
//!
//! A repository has three independent 256-bit secrets, kept only inside age-encrypted key files:
//! - the **id key** keys BLAKE3 for chunk ids and snapshot file names (dedup needs it; it reveals
//!   nothing about content),
//! - the **data key** encrypts and authenticates every object with XChaCha20-Poly1305,
//! - the **chunker key** seeds the content-defined chunker's gear table, so chunk boundaries do not
//!   leak content either.
//!
//! Keeping them separate (rather than deriving all three from one master secret) is what lets a
//! later write-only key file carry the id and chunker keys plus a public key, but no data key.
//!
//! Every encrypted object in the repository is a *sealed object*:
//! `version (1 byte, = 1) | key slot (1 byte, 0 = repository data key) | nonce (24) | ciphertext | tag (16)`.
//! The associated data binds each object to what it claims to be (a blob to its id, a manifest to
//! its snapshot file name), so objects cannot be swapped undetected. Key slot 1 is reserved for
//! objects sealed to a public key by a future write-only key.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::error::{corrupt, Result};
use crate::id::ChunkId;

/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 2 + 24 + 16;
const SEAL_VERSION: u8 = 1;
const SLOT_DATA_KEY: u8 = 0;

/// The repository's secrets, as stored (hex) inside a key file.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secrets {
    #[serde(with = "hex_key")]
    pub(crate) id_key: [u8; 32],
    #[serde(with = "hex_key")]
    pub(crate) data_key: [u8; 32],
    #[serde(with = "hex_key")]
    pub(crate) chunker_key: [u8; 32],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

impl Secrets {
    /// Fresh random secrets for a new repository.
    pub fn generate() -> Self {
        Self {
            id_key: rand::random(),
            data_key: rand::random(),
            chunker_key: rand::random(),
        }
    }
}

/// The working form of the secrets: a ready cipher and hasher keys.
#[derive(Clone)]
pub struct Keys {
    secrets: Secrets,
    cipher: XChaCha20Poly1305,
}

impl Keys {
    pub fn new(secrets: Secrets) -> Self {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&secrets.data_key));
        Self { secrets, cipher }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn chunker_key(&self) -> &[u8; 32] {
        &self.secrets.chunker_key
    }

    /// The key of resemblance sketches (`sketch.rs`), derived from the chunk-id key so that it
    /// needs no place of its own in the key file (BLAKE3's key derivation mode, separate from
    /// the keyed hashing that names chunks).
    pub fn sketch_key(&self) -> [u8; 32] {
        blake3::derive_key("cairn 2026-12-01 resemblance sketch key", &self.secrets.id_key)
    }

    /// The id of a blob with this plaintext.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.secrets.id_key, data).as_bytes())
    }

    /// A keyed hash under a domain label, for names that must not be guessable.
    pub fn keyed_name(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.secrets.id_key);
        h.update(domain.as_bytes());
        h.update(&[0]);
        h.update(data);
        *h.finalize().as_bytes()
    }

    /// Encrypts `plaintext` and appends the sealed object to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; 24] = rand::random();
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.push(SEAL_VERSION);
        out.push(SLOT_DATA_KEY);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
            .expect("XChaCha20-Poly1305 encrypts any length a Vec can hold");
        out.extend_from_slice(&tag);
    }

    /// Encrypts `plaintext` into a new sealed object.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Authenticates and decrypts a sealed object where it lies: returns the buffer and the range
    /// of the plaintext in it (no copy of the body, unlike [`Keys::open`]).
    pub fn open_in_place(
        &self,
        what: &str,
        aad: &[u8],
        mut sealed: Vec<u8>,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>)> {
        self.check_sealed(what, &sealed)?;
        let end = sealed.len() - 16;
        let (head, rest) = sealed.split_at_mut(26);
        let (body, tag) = rest.split_at_mut(end - 26);
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(&head[2..26]), aad, body, Tag::from_slice(tag))
            .map_err(|_| corrupt(what, "authentication failed (tampered, damaged or wrong key)"))?;
        Ok((sealed, 26..end))
    }

    fn check_sealed(&self, what: &str, sealed: &[u8]) -> Result<()> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(corrupt(what, "truncated encrypted object"));
        }
        if sealed[0] != SEAL_VERSION {
            return Err(corrupt(what, format!("unknown encryption version {}", sealed[0])));
        }
        if sealed[1] != SLOT_DATA_KEY {
            return Err(corrupt(
                what,
                format!("unsupported key slot {} (written by a newer cairn?)", sealed[1]),
            ));
        }
        Ok(())
    }

    /// Authenticates and decrypts a sealed object. `what` names it in the error.
    pub fn open(&self, what: &str, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        self.check_sealed(what, sealed)?;
        let nonce = XNonce::from_slice(&sealed[2..26]);
        let (body, tag) = sealed[26..].split_at(sealed.len() - 26 - 16);
        let mut buf = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(nonce, aad, &mut buf, Tag::from_slice(tag))
            .map_err(|_| corrupt(what, "authentication failed (tampered, damaged or wrong key)"))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let keys = Keys::new(Secrets::generate());
        let sealed = keys.seal(b"ctx", b"hello world");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(keys.open("x", b"ctx", &sealed).unwrap(), b"hello world");
        assert!(keys.open("x", b"other", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(keys.open("x", b"ctx", &bad).is_err(), "flip at {i} undetected");
        }
        let other = Keys::new(Secrets::generate());
        assert!(other.open("x", b"ctx", &sealed).is_err());
        assert!(keys.open("x", b"ctx", &sealed[..sealed.len() - 1]).is_err());
    }

    /// Opening in place authenticates exactly as `open` does, and hands back the same bytes.
    #[test]
    fn open_in_place_agrees_with_open() {
        let keys = Keys::new(Secrets::generate());
        for len in [0usize, 1, 63, 64, 65, 4096, 70_001] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let sealed = keys.seal(b"ctx", &plain);
            let (buf, range) = keys.open_in_place("x", b"ctx", sealed.clone()).unwrap();
            assert_eq!(&buf[range], &plain[..]);
            assert!(keys.open_in_place("x", b"other", sealed.clone()).is_err());
            for i in [0, 1, 2, 25, 26, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                assert!(
                    keys.open_in_place("x", b"ctx", bad).is_err(),
                    "flip at {i} of {len} undetected"
                );
            }
            assert!(keys
                .open_in_place("x", b"ctx", sealed[..sealed.len() - 1].to_vec())
                .is_err());
        }
        assert!(keys.open_in_place("x", b"ctx", vec![1; SEAL_OVERHEAD - 1]).is_err());
    }

    #[test]
    fn chunk_ids_are_keyed() {
        let a = Keys::new(Secrets::generate());
        let b = Keys::new(Secrets::generate());
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }
}
