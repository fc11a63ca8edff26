//! Blobs: the unit of storage. A blob is one chunk of a stream or file (or of metadata), compressed
//! and sealed on its own so it can be read back without its neighbours.
//!
//! Plaintext layout inside the seal (all integers little-endian):
//! `kind (1) | compression (1) | raw length (4) | payload`. The seal's associated data is
//! `"cairn blob v1" | id (32)`, so a blob cannot be passed off under another id; after decryption
//! the payload is decompressed and its keyed hash must equal the id.

use serde::{Deserialize, Serialize};

use crate::crypto::Keys;
use crate::error::{corrupt, Result};
use crate::id::ChunkId;

/// What a blob holds. The byte values are part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file or stream content, stored whole.
    Data = 0,
    /// A chunk of metadata: chunk lists and directory listings.
    Meta = 1,
    // 2 is reserved for delta-encoded chunks (a base id inside the payload).
}

impl BlobKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Data),
            1 => Some(Self::Meta),
            _ => None,
        }
    }
}

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
const HEADER_LEN: usize = 6;

fn aad(id: &ChunkId) -> [u8; 45] {
    let mut a = [0u8; 45];
    a[..13].copy_from_slice(b"cairn blob v1");
    a[13..].copy_from_slice(id.as_bytes());
    a
}

/// Per-thread compression state, reused across blobs (zstd contexts are costly to create).
pub struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new(level: i32) -> Self {
        Self {
            compressor: zstd::bulk::Compressor::new(level).expect("valid zstd level"),
            decompressor: zstd::bulk::Decompressor::new().expect("zstd context"),
            scratch: Vec::new(),
        }
    }

    /// Compresses and seals `data` as blob `id`, then decodes the result again and checks that it
    /// yields `id`: a compressor or cipher bug fails the backup instead of corrupting the repository.
    pub fn encode(
        &mut self,
        keys: &Keys,
        id: &ChunkId,
        kind: BlobKind,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let bound = zstd::zstd_safe::compress_bound(data.len());
        self.scratch.clear();
        self.scratch.reserve(HEADER_LEN + bound);
        self.scratch.push(kind as u8);
        self.scratch.push(COMPRESSION_ZSTD);
        self.scratch
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.scratch.resize(HEADER_LEN + bound, 0);
        let n = self
            .compressor
            .compress_to_buffer(data, &mut self.scratch[HEADER_LEN..])
            .map_err(|e| {
                corrupt(
                    format!("blob {id}"),
                    format!("zstd compression failed: {e}"),
                )
            })?;
        self.scratch.truncate(HEADER_LEN + n);
        // Incompressible data is stored raw: decompressing it would only cost time.
        if n + n / 32 >= data.len() {
            self.scratch.truncate(HEADER_LEN);
            self.scratch[1] = COMPRESSION_NONE;
            self.scratch.extend_from_slice(data);
        }
        let sealed = keys.seal(&aad(id), &self.scratch);
        // Comparing with the input proves the same as re-hashing it (the id is the input's hash),
        // at a fraction of the cost.
        let back = open_payload(keys, id, &sealed, &mut self.decompressor)?;
        if back.1 != data {
            return Err(corrupt(
                format!("blob {id}"),
                "encoded blob does not decode to its input",
            ));
        }
        Ok(sealed)
    }
}

/// Decrypts, decompresses and verifies a sealed blob, returning its kind and plaintext.
pub fn decode(keys: &Keys, id: &ChunkId, sealed: &[u8]) -> Result<(BlobKind, Vec<u8>)> {
    thread_local! {
        static DEC: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
            std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
    }
    DEC.with(|d| decode_with(keys, id, sealed, &mut d.borrow_mut()))
}

fn decode_with(
    keys: &Keys,
    id: &ChunkId,
    sealed: &[u8],
    dec: &mut zstd::bulk::Decompressor<'static>,
) -> Result<(BlobKind, Vec<u8>)> {
    let (kind, data) = open_payload(keys, id, sealed, dec)?;
    if keys.chunk_id(&data) != *id {
        return Err(corrupt(
            format!("blob {id}"),
            "content does not hash to the blob id",
        ));
    }
    Ok((kind, data))
}

/// Decrypts and decompresses, without checking the content hash.
fn open_payload(
    keys: &Keys,
    id: &ChunkId,
    sealed: &[u8],
    dec: &mut zstd::bulk::Decompressor<'static>,
) -> Result<(BlobKind, Vec<u8>)> {
    let what = || format!("blob {id}");
    let plain = keys.open(&what(), &aad(id), sealed)?;
    if plain.len() < HEADER_LEN {
        return Err(corrupt(what(), "blob header truncated"));
    }
    let kind = BlobKind::from_u8(plain[0])
        .ok_or_else(|| corrupt(what(), format!("unknown blob kind {}", plain[0])))?;
    let raw_len = u32::from_le_bytes(plain[2..6].try_into().unwrap()) as usize;
    let data = match plain[1] {
        COMPRESSION_NONE => plain[HEADER_LEN..].to_vec(),
        COMPRESSION_ZSTD => dec
            .decompress(&plain[HEADER_LEN..], raw_len)
            .map_err(|e| corrupt(what(), format!("zstd: {e}")))?,
        c => return Err(corrupt(what(), format!("unknown compression {c}"))),
    };
    if data.len() != raw_len {
        return Err(corrupt(what(), "length does not match header"));
    }
    Ok((kind, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secrets;

    #[test]
    fn round_trip_compressible_and_random() {
        let keys = Keys::new(Secrets::generate());
        let mut enc = Encoder::new(3);
        let text = b"INSERT INTO t VALUES (1,'abc');\n".repeat(1000);
        let random: Vec<u8> = (0..10_000).map(|_| rand::random::<u8>()).collect();
        for data in [&text[..], &random[..], &[][..]] {
            let id = keys.chunk_id(data);
            let sealed = enc.encode(&keys, &id, BlobKind::Data, data).unwrap();
            let (kind, back) = decode(&keys, &id, &sealed).unwrap();
            assert_eq!(kind, BlobKind::Data);
            assert_eq!(back, data);
        }
        let id = keys.chunk_id(&text);
        let sealed = enc.encode(&keys, &id, BlobKind::Data, &text).unwrap();
        assert!(sealed.len() < text.len() / 10, "text should compress");
        let id_r = keys.chunk_id(&random);
        let sealed_r = enc.encode(&keys, &id_r, BlobKind::Data, &random).unwrap();
        assert!(sealed_r.len() <= random.len() + 6 + crate::crypto::SEAL_OVERHEAD);
        // Wrong id: the associated data no longer matches.
        assert!(decode(&keys, &id_r, &sealed).is_err());
    }
}
