//! Blobs: the unit of storage. A blob is one chunk of a stream or file (or of metadata), compressed
//! and sealed on its own so it can be read back without its neighbours.
//!
//! Plaintext layout inside the seal (all integers little-endian):
//! `kind (1) | compression (1) | raw length (4) | payload`. The seal's associated data is
//! `"cairn blob v1" | id (32)`, so a blob cannot be passed off under another id; after decryption
//! the payload is decompressed and its keyed hash must equal the id.
//!
//! A *delta* blob (kind 2, compression 2) stores a chunk relative to one or more earlier chunks,
//! its bases: the payload is `base count (1) | base ids (32 each) | zstd frame`, where the frame was
//! compressed with the bases' plaintexts, concatenated in order, as zstd prefix. Reading it means
//! reading the bases first (which may be deltas themselves, up to the repository's chain depth).

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
    /// A chunk of content stored as a zstd delta against its bases.
    Delta = 2,
}

impl BlobKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Data),
            1 => Some(Self::Meta),
            2 => Some(Self::Delta),
            _ => None,
        }
    }
}

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
const COMPRESSION_ZSTD_PREFIX: u8 = 2;
const HEADER_LEN: usize = 6;
/// Most bases a delta may have.
pub const MAX_BASES: usize = 4;
/// zstd window for deltas: bases plus the chunk must fit (4 x 4 MiB bases at the largest chunk
/// size would not; such chunks are simply stored whole).
const DELTA_WINDOW_LOG: u32 = 24;

/// A decrypted blob whose content may still need its bases.
pub struct Opened {
    pub kind: BlobKind,
    /// Bases to concatenate as prefix (empty unless `kind` is `Delta`).
    pub bases: Vec<ChunkId>,
    compression: u8,
    raw_len: usize,
    /// The decrypted blob is `plain[..end]` from its header on; the payload starts at `payload_at`.
    plain: Vec<u8>,
    payload_at: usize,
    end: usize,
}

impl Opened {
    /// Decompresses (with the bases' concatenated plaintext for a delta) and verifies the id.
    pub fn finish(self, keys: &Keys, id: &ChunkId, prefix: &[u8]) -> Result<Vec<u8>> {
        let data = self.finish_unverified(id, prefix)?;
        if keys.chunk_id(&data) != *id {
            return Err(corrupt(format!("blob {id}"), "content does not hash to the blob id"));
        }
        Ok(data)
    }

    /// Decompresses without checking the content hash. For an intermediate base of a delta
    /// chain (the chunk finally handed out is verified against its own id, and a wrong base
    /// cannot produce content that matches it), and for the writer's check, which compares with
    /// its input instead.
    pub fn finish_unverified(self, id: &ChunkId, prefix: &[u8]) -> Result<Vec<u8>> {
        thread_local! {
            static DEC: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
                std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
            static DELTA_DEC: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
                std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
        }
        let what = || format!("blob {id}");
        let zerr = |c| corrupt(what(), format!("zstd: {}", zstd::zstd_safe::get_error_name(c)));
        let payload = &self.plain[self.payload_at..self.end];
        let data = match self.compression {
            COMPRESSION_NONE => payload.to_vec(),
            // Whole blobs reuse this thread's context: creating one per blob is measurable.
            COMPRESSION_ZSTD => DEC
                .with(|d| d.borrow_mut().decompress(payload, self.raw_len))
                .map_err(|e| corrupt(what(), format!("zstd: {e}")))?,
            COMPRESSION_ZSTD_PREFIX => {
                let mut out = Vec::with_capacity(self.raw_len);
                if raw_content_dictionary(prefix) {
                    // The prefix passed as a dictionary for this one call: zstd takes a dictionary
                    // without its magic number as raw content, which is what a prefix is, so the
                    // thread's context is reused (one per delta cost ~6% of a restore).
                    DELTA_DEC
                        .with(|d| d.borrow_mut().decompress_using_dict(&mut out, payload, prefix))
                        .map_err(zerr)?;
                } else {
                    // A prefix that starts like a zstd dictionary must be referenced as a prefix
                    // (a context of its own: the reference must outlive the context).
                    let mut d = zstd::zstd_safe::DCtx::create();
                    d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(DELTA_WINDOW_LOG))
                        .map_err(zerr)?;
                    d.ref_prefix(prefix).map_err(zerr)?;
                    d.decompress(&mut out, payload).map_err(zerr)?;
                }
                out
            }
            c => return Err(corrupt(what(), format!("unknown compression {c}"))),
        };
        if data.len() != self.raw_len {
            return Err(corrupt(what(), "length does not match header"));
        }
        Ok(data)
    }
}

/// Whether zstd reads `prefix`, given as a dictionary, as raw content: anything shorter than 8
/// bytes or not starting with the dictionary magic number (`ZSTD_decompress_insertDictionary`).
fn raw_content_dictionary(prefix: &[u8]) -> bool {
    prefix.len() < 8 || prefix[..4] != 0xEC30_A437u32.to_le_bytes()
}

/// Whether a blob's own bytes are intact: it authenticates and parses and, unless it is a delta
/// (as good as its bases, which are judged on their own), decodes to its id.
pub fn intact_alone(keys: &Keys, id: &ChunkId, sealed: &[u8]) -> bool {
    match open_blob(keys, id, sealed) {
        Err(_) => false,
        Ok(o) if !o.bases.is_empty() => true,
        Ok(o) => o.finish(keys, id, &[]).is_ok(),
    }
}

/// The largest chunk any repository's chunker cuts (`ChunkerParams::validate`: max <= 64 MiB).
pub const MAX_RAW_LEN: usize = 64 << 20;

/// Decrypts a blob and parses its header (and a delta's base list).
pub fn open_blob(keys: &Keys, id: &ChunkId, sealed: &[u8]) -> Result<Opened> {
    let plain = keys.open(&format!("blob {id}"), &aad(id), sealed)?;
    let end = plain.len();
    parse_opened(id, plain, 0..end)
}

/// [`open_blob`] on a sealed blob the caller owns: decrypted where it lies, not copied.
pub fn open_blob_owned(keys: &Keys, id: &ChunkId, sealed: Vec<u8>) -> Result<Opened> {
    let (buf, range) = keys.open_in_place(&format!("blob {id}"), &aad(id), sealed)?;
    parse_opened(id, buf, range)
}

fn parse_opened(id: &ChunkId, buf: Vec<u8>, range: std::ops::Range<usize>) -> Result<Opened> {
    let what = || format!("blob {id}");
    let plain = &buf[range.clone()];
    if plain.len() < HEADER_LEN {
        return Err(corrupt(what(), "blob header truncated"));
    }
    let kind = BlobKind::from_u8(plain[0]).ok_or_else(|| corrupt(what(), format!("unknown blob kind {}", plain[0])))?;
    let compression = plain[1];
    let raw_len = u32::from_le_bytes(plain[2..6].try_into().unwrap()) as usize;
    // Decoding allocates `raw_len`: never more than the largest chunk a chunker may cut.
    if raw_len > MAX_RAW_LEN {
        return Err(corrupt(what(), format!("raw length {raw_len} exceeds {MAX_RAW_LEN}")));
    }
    let mut bases = Vec::new();
    let mut payload_at = HEADER_LEN;
    if kind == BlobKind::Delta {
        let n = *plain
            .get(HEADER_LEN)
            .ok_or_else(|| corrupt(what(), "delta without base count"))? as usize;
        if n == 0 || n > MAX_BASES || plain.len() < HEADER_LEN + 1 + 32 * n || compression != COMPRESSION_ZSTD_PREFIX {
            return Err(corrupt(what(), "malformed delta header"));
        }
        for b in plain[HEADER_LEN + 1..HEADER_LEN + 1 + 32 * n].chunks_exact(32) {
            bases.push(ChunkId::from_slice(b).unwrap());
        }
        payload_at = HEADER_LEN + 1 + 32 * n;
    } else if compression == COMPRESSION_ZSTD_PREFIX {
        return Err(corrupt(what(), "prefix compression outside a delta"));
    }
    Ok(Opened {
        kind,
        bases,
        compression,
        raw_len,
        payload_at: range.start + payload_at,
        end: range.end,
        plain: buf,
    })
}

fn aad(id: &ChunkId) -> [u8; 45] {
    let mut a = [0u8; 45];
    a[..13].copy_from_slice(b"cairn blob v1");
    a[13..].copy_from_slice(id.as_bytes());
    a
}

/// Per-thread compression state, reused across blobs (zstd contexts are costly to create).
pub struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    delta_level: i32,
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new(level: i32) -> Self {
        Self::with_delta_level(level, level)
    }

    /// `delta_level` is the zstd level for deltas: they compress only changed chunks, against a
    /// prefix that matches almost all of them, so a higher level costs little.
    pub fn with_delta_level(level: i32, delta_level: i32) -> Self {
        Self {
            compressor: zstd::bulk::Compressor::new(level).expect("valid zstd level"),
            delta_level,
            scratch: Vec::new(),
        }
    }

    /// Encodes `data` as a delta against `bases` (whose plaintexts, concatenated, are `prefix`),
    /// if that is smaller than `limit` sealed bytes; `None` means "store it whole". The result is
    /// decoded again and compared with `data` before it is returned.
    pub fn encode_delta(
        &mut self,
        keys: &Keys,
        id: &ChunkId,
        data: &[u8],
        bases: &[ChunkId],
        prefix: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>> {
        if bases.is_empty() || bases.len() > MAX_BASES || prefix.len() + data.len() > (1 << DELTA_WINDOW_LOG) {
            return Ok(None);
        }
        let head = HEADER_LEN + 1 + 32 * bases.len();
        let bound = zstd::zstd_safe::compress_bound(data.len());
        self.header(BlobKind::Delta, COMPRESSION_ZSTD_PREFIX, data.len());
        self.scratch.push(bases.len() as u8);
        for b in bases {
            self.scratch.extend_from_slice(b.as_bytes());
        }
        self.scratch.resize(head + bound, 0);
        let what = || format!("blob {id}");
        let zerr = |c| corrupt(what(), format!("zstd delta: {}", zstd::zstd_safe::get_error_name(c)));
        // A context per delta: a referenced prefix must outlive the context that uses it.
        let mut cctx = zstd::zstd_safe::CCtx::create();
        cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(self.delta_level))
            .map_err(zerr)?;
        cctx.set_parameter(zstd::zstd_safe::CParameter::WindowLog(DELTA_WINDOW_LOG))
            .map_err(zerr)?;
        cctx.ref_prefix(prefix).map_err(zerr)?;
        let n = cctx.compress2(&mut self.scratch[head..], data).map_err(zerr)?;
        self.scratch.truncate(head + n);
        if self.scratch.len() + crate::crypto::SEAL_OVERHEAD >= limit {
            return Ok(None);
        }
        let sealed = keys.seal(&aad(id), &self.scratch);
        let opened = open_blob(keys, id, &sealed)?;
        if opened.bases != bases {
            return Err(corrupt(what(), "encoded delta does not decode to its bases"));
        }
        // Comparing with the input proves what re-hashing would (as in `encode`).
        let back = opened.finish_unverified(id, prefix)?;
        if back != data {
            return Err(corrupt(what(), "encoded delta does not decode to its input"));
        }
        Ok(Some(sealed))
    }

    /// Seals `frame`, a zstd frame of `data` compressed elsewhere at this repository's level
    /// (an agent, `write/foreign/`), as blob `id`: what [`encode`](Self::encode) stores with
    /// its own frame, the same bytes when the frame is the same. Checked as `encode` is.
    pub fn seal_frame(
        &mut self,
        keys: &Keys,
        id: &ChunkId,
        kind: BlobKind,
        data: &[u8],
        frame: &[u8],
    ) -> Result<Vec<u8>> {
        self.header(kind, COMPRESSION_ZSTD, data.len());
        self.scratch.extend_from_slice(frame);
        self.seal_whole(keys, id, data)
    }

    /// Compresses and seals `data` as blob `id`, then decodes the result again and checks that it
    /// yields `id`: a compressor or cipher bug fails the backup instead of corrupting the repository.
    pub fn encode(&mut self, keys: &Keys, id: &ChunkId, kind: BlobKind, data: &[u8]) -> Result<Vec<u8>> {
        let bound = zstd::zstd_safe::compress_bound(data.len());
        self.header(kind, COMPRESSION_ZSTD, data.len());
        self.scratch.resize(HEADER_LEN + bound, 0);
        let n = self
            .compressor
            .compress_to_buffer(data, &mut self.scratch[HEADER_LEN..])
            .map_err(|e| corrupt(format!("blob {id}"), format!("zstd compression failed: {e}")))?;
        self.scratch.truncate(HEADER_LEN + n);
        self.seal_whole(keys, id, data)
    }

    /// Starts a blob's plaintext in the scratch buffer: its header.
    fn header(&mut self, kind: BlobKind, compression: u8, len: usize) {
        self.scratch.clear();
        self.scratch.push(kind as u8);
        self.scratch.push(compression);
        self.scratch.extend_from_slice(&(len as u32).to_le_bytes());
    }

    /// Seals the scratch buffer (header and a zstd frame of `data`) as blob `id`, with `data`
    /// raw instead where the frame saves too little, and checks that it decodes to `data`.
    fn seal_whole(&mut self, keys: &Keys, id: &ChunkId, data: &[u8]) -> Result<Vec<u8>> {
        let n = self.scratch.len() - HEADER_LEN;
        // Incompressible data is stored raw: decompressing it would only cost time.
        if n + n / 32 >= data.len() {
            self.scratch.truncate(HEADER_LEN);
            self.scratch[1] = COMPRESSION_NONE;
            self.scratch.extend_from_slice(data);
        }
        let sealed = keys.seal(&aad(id), &self.scratch);
        // Comparing with the input proves the same as re-hashing it (the id is the input's hash),
        // at a fraction of the cost.
        let back = open_blob(keys, id, &sealed)?.finish_unverified(id, &[])?;
        if back != data {
            return Err(corrupt(
                format!("blob {id}"),
                "encoded blob does not decode to its input",
            ));
        }
        Ok(sealed)
    }
}

/// Decrypts, decompresses and verifies a sealed blob that is not a delta, returning its kind
/// and plaintext. Deltas go through [`open_blob`] and [`Opened::finish`] with their bases.
pub fn decode(keys: &Keys, id: &ChunkId, sealed: &[u8]) -> Result<(BlobKind, Vec<u8>)> {
    let opened = open_blob(keys, id, sealed)?;
    if opened.kind == BlobKind::Delta {
        return Err(corrupt(
            format!("blob {id}"),
            "a delta cannot be decoded without its bases",
        ));
    }
    let kind = opened.kind;
    Ok((kind, opened.finish(keys, id, &[])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secrets;

    #[test]
    fn a_frame_made_by_an_agent_is_stored_as_the_local_encoder_stores_it() {
        let keys = Keys::new(Secrets::generate());
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("({i},'row {}'),", i % 97).into_bytes())
            .collect();
        let noise: Vec<u8> = (0..65_536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for level in [1, 3] {
            for data in [&text, &noise] {
                let id = keys.chunk_id(data);
                let mut enc = Encoder::new(level);
                let local = enc.encode(&keys, &id, BlobKind::Data, data).unwrap();
                let frame = crate::write::foreign::encode_wire(data, &[], level).unwrap();
                let agent = enc.seal_frame(&keys, &id, BlobKind::Data, data, &frame).unwrap();
                let (a, b) = (
                    open_blob(&keys, &id, &local).unwrap(),
                    open_blob(&keys, &id, &agent).unwrap(),
                );
                assert!(
                    a.plain[..a.end] == b.plain[..b.end],
                    "level {level}: the stored bytes differ"
                );
            }
        }
        let id = keys.chunk_id(&text);
        let wrong = crate::write::foreign::encode_wire(&noise, &[], 1).unwrap();
        assert!(Encoder::new(1)
            .seal_frame(&keys, &id, BlobKind::Data, &text, &wrong)
            .is_err());
    }

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

    #[test]
    fn delta_round_trip_and_wrong_base() {
        let keys = Keys::new(Secrets::generate());
        let mut enc = Encoder::with_delta_level(1, 3);
        let mut x = 7u64;
        let base: Vec<u8> = (0..65536)
            .map(|i| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                if i % 100 == 99 {
                    b'\n'
                } else {
                    b'0' + (x >> 60) as u8 % 10
                }
            })
            .collect();
        let mut data = base.clone();
        data[1000..1010].copy_from_slice(b"0123456789");
        let (bid, id) = (keys.chunk_id(&base), keys.chunk_id(&data));
        let sealed = enc
            .encode_delta(&keys, &id, &data, &[bid], &base, usize::MAX)
            .unwrap()
            .unwrap();
        assert!(
            sealed.len() < 300,
            "delta of a 10-byte change is {} bytes",
            sealed.len()
        );
        let opened = open_blob(&keys, &id, &sealed).unwrap();
        assert_eq!((opened.kind, opened.bases.clone()), (BlobKind::Delta, vec![bid]));
        assert_eq!(opened.finish(&keys, &id, &base).unwrap(), data);
        // A wrong or damaged base never yields wrong content: decoding fails.
        let mut bad = base.clone();
        bad[5] ^= 1;
        assert!(open_blob(&keys, &id, &sealed)
            .unwrap()
            .finish(&keys, &id, &bad)
            .is_err());
        assert!(decode(&keys, &id, &sealed).is_err(), "plain decode refuses deltas");
        // A limit below the delta's size means: store it whole.
        assert!(enc
            .encode_delta(&keys, &id, &data, &[bid], &base, 50)
            .unwrap()
            .is_none());
    }

    /// Deltas decode on a context reused by the thread, with the prefix passed as a raw-content
    /// dictionary; a base that starts with zstd's dictionary magic number must not be read as a
    /// dictionary. Several deltas against different bases in a row, whole blobs in between.
    #[test]
    fn reused_context_decodes_deltas_whatever_their_bases_start_with() {
        let keys = Keys::new(Secrets::generate());
        let mut enc = Encoder::with_delta_level(1, 3);
        for round in 0..3u8 {
            for magic in [false, true] {
                let mut base: Vec<u8> = (0..20_000u32)
                    .flat_map(|i| format!("({i},'{round}-{}'),", i.wrapping_mul(2_654_435_761) % 997).into_bytes())
                    .collect();
                if magic {
                    base[..4].copy_from_slice(&0xEC30_A437u32.to_le_bytes());
                }
                assert_eq!(raw_content_dictionary(&base), !magic);
                let mut data = base.clone();
                data[5000..5004].copy_from_slice(b"XXXX");
                let (bid, id) = (keys.chunk_id(&base), keys.chunk_id(&data));
                let sealed = enc
                    .encode_delta(&keys, &id, &data, &[bid], &base, usize::MAX)
                    .unwrap()
                    .unwrap();
                assert!(sealed.len() < 500, "a 4-byte change costs {} bytes", sealed.len());
                let opened = open_blob(&keys, &id, &sealed).unwrap();
                assert_eq!(
                    opened.finish(&keys, &id, &base).unwrap(),
                    data,
                    "round {round} magic {magic}"
                );
                let whole = enc.encode(&keys, &bid, BlobKind::Data, &base).unwrap();
                assert_eq!(decode(&keys, &bid, &whole).unwrap().1, base);
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any authenticated plaintext, however malformed, is an error or a blob: never a
            /// panic, and decoding never allocates more than `MAX_RAW_LEN`.
            #[test]
            fn any_blob_plaintext_parses_or_fails_cleanly(plain in proptest::collection::vec(any::<u8>(), 0..400)) {
                let keys = Keys::new(Secrets::generate());
                let id = ChunkId([9; 32]);
                let sealed = keys.seal(&aad(&id), &plain);
                if let Ok(o) = open_blob(&keys, &id, &sealed) {
                    prop_assert!(o.raw_len <= MAX_RAW_LEN);
                    let _ = o.finish_unverified(&id, &[]);
                }
            }

            /// Mutating a real blob's plaintext: still an error or a blob, never a panic.
            #[test]
            fn mutated_blob_plaintext_never_panics(data in proptest::collection::vec(any::<u8>(), 1..3000),
                                                   at in any::<prop::sample::Index>(), byte in any::<u8>()) {
                let keys = Keys::new(Secrets::generate());
                let id = keys.chunk_id(&data);
                let mut enc = Encoder::new(3);
                let sealed = enc.encode(&keys, &id, BlobKind::Data, &data).unwrap();
                let mut plain = keys.open("t", &aad(&id), &sealed).unwrap();
                let i = at.index(plain.len());
                plain[i] = byte;
                let resealed = keys.seal(&aad(&id), &plain);
                if let Ok(o) = open_blob(&keys, &id, &resealed) {
                    let _ = o.finish(&keys, &id, &[]);
                }
            }

            /// A blob decrypted in place parses and decodes exactly as one decrypted into a copy.
            #[test]
            fn opening_in_place_or_by_copy_agrees(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                                  flip in proptest::option::of(any::<prop::sample::Index>())) {
                let keys = Keys::new(Secrets::generate());
                let id = keys.chunk_id(&data);
                let mut enc = Encoder::new(3);
                let mut sealed = enc.encode(&keys, &id, BlobKind::Data, &data).unwrap();
                if let Some(i) = flip {
                    let i = i.index(sealed.len());
                    sealed[i] ^= 1;
                }
                let a = open_blob(&keys, &id, &sealed).and_then(|o| o.finish(&keys, &id, &[]));
                let b = open_blob_owned(&keys, &id, sealed).and_then(|o| o.finish(&keys, &id, &[]));
                prop_assert_eq!(a.is_ok(), b.is_ok());
                prop_assert_eq!(a.ok(), b.ok());
            }

            /// Bytes that were never sealed do not authenticate.
            #[test]
            fn random_bytes_are_not_a_blob(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let keys = Keys::new(Secrets::generate());
                prop_assert!(open_blob(&keys, &ChunkId([1; 32]), &bytes).is_err());
            }
        }
    }
}
