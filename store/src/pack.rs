//! Pack files: many sealed blobs in one file, followed by a sealed list of what the pack holds, so
//! the index can always be rebuilt from the packs alone.
//!
//! Layout: `blob* | trailer | trailer length (u32 LE)`. The trailer is a sealed object whose
//! associated data is `"cairn pack trailer v1" | trailer length`, so altering the length field is
//! detected like any other byte. Its plaintext is `version (1) | count (u32) | entry*`, each
//! entry `id (32) | kind (1) | offset (u32) | sealed length (u32) | raw length (u32)`; in version 2
//! a delta entry (kind 2) continues with `chain depth (1) | base count (1) | base ids (32 each)`,
//! so the index knows what each delta depends on without decrypting it; in version 3 every entry
//! then ends with `sketch length n (1, 0 or 6) | n super-features (u32 each)`, the resemblance
//! sketch of a data chunk (`sketch.rs`), so the index can find similar chunks without reading
//! them. A pack with no sketch gets a version 2 trailer, so repositories of format 1 (whose
//! writers never sketch) keep trailers every earlier reader knows. Versions 1 (no deltas) and 2
//! stay readable.
//! A pack's id is the plain BLAKE3 hash of the whole file; it is stored as `packs/xx/<id>` where
//! `xx` is the first byte of the id in hex.

use crate::blob::BlobKind;
use crate::crypto::Keys;
use crate::error::{corrupt, Result};
use crate::id::{ChunkId, PackId};
use crate::sketch::{Sketch, SUPER_FEATURES};
use crate::storage::{ObjectStore, ObjectWriter};

const ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 4;
/// The newest trailer version, written when a pack holds a sketch.
const TRAILER_VERSION: u8 = 3;
/// The trailer version written for a pack without sketches (every pack of a format 1 repository).
const TRAILER_WITHOUT_SKETCHES: u8 = 2;

/// Where one blob sits in a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// A delta's bases (empty for other kinds).
    pub bases: Vec<ChunkId>,
    /// Deltas to decode to read this blob: 0 for a whole blob, 1 + the deepest base for a delta.
    pub depth: u8,
    /// The chunk's resemblance sketch (empty for metadata, and for packs of format 1).
    pub sketch: Sketch,
}

/// Relative path of a pack file.
pub fn pack_path(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{}", &hex[..2], hex)
}

/// Parses a pack file name (as listed under `packs/xx/`).
pub fn parse_pack_name(name: &str) -> Option<PackId> {
    name.parse().ok()
}

fn trailer_aad(len: u32) -> [u8; 25] {
    let mut a = [0u8; 25];
    a[..21].copy_from_slice(b"cairn pack trailer v1");
    a[21..].copy_from_slice(&len.to_le_bytes());
    a
}

/// Builds one pack, streamed into the object store ([`ObjectStore::writer`]);
/// [`PackWriter::finish`] names it by its hash, which makes it visible whole.
pub struct PackWriter {
    out: Box<dyn ObjectWriter>,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
}

/// A published pack.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new(store: &dyn ObjectStore) -> Result<Self> {
        Ok(Self {
            out: store.writer()?,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a blob, with its chunk's sketch (an empty one: none).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        raw_len: u32,
        sealed: &[u8],
        bases: &[ChunkId],
        depth: u8,
        sketch: Sketch,
    ) -> Result<()> {
        let offset =
            u32::try_from(self.out.len()).map_err(|_| crate::error::Error::Invalid("pack exceeds 4 GiB".into()))?;
        self.out.write(sealed)?;
        self.hasher.update(sealed);
        self.entries.push(PackEntry {
            id,
            kind,
            offset,
            length: sealed.len() as u32,
            raw_len,
            bases: bases.to_vec(),
            depth,
            sketch,
        });
        Ok(())
    }

    /// Appends the trailer and names the pack by its content hash (the object store makes it
    /// visible only whole and durable).
    pub fn finish(mut self, keys: &Keys) -> Result<FinishedPack> {
        let sketched = self.entries.iter().any(|e| !e.sketch.is_empty());
        let mut plain = Vec::with_capacity(5 + self.entries.len() * ENTRY_LEN);
        plain.push(if sketched {
            TRAILER_VERSION
        } else {
            TRAILER_WITHOUT_SKETCHES
        });
        plain.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            plain.extend_from_slice(e.id.as_bytes());
            plain.push(e.kind as u8);
            plain.extend_from_slice(&e.offset.to_le_bytes());
            plain.extend_from_slice(&e.length.to_le_bytes());
            plain.extend_from_slice(&e.raw_len.to_le_bytes());
            if e.kind == BlobKind::Delta {
                plain.push(e.depth);
                plain.push(e.bases.len() as u8);
                for b in &e.bases {
                    plain.extend_from_slice(b.as_bytes());
                }
            }
            if sketched {
                if e.sketch.is_empty() {
                    plain.push(0);
                } else {
                    plain.push(SUPER_FEATURES as u8);
                    for f in e.sketch.0 {
                        plain.extend_from_slice(&f.to_le_bytes());
                    }
                }
            }
        }
        let sealed_len = (plain.len() + crate::crypto::SEAL_OVERHEAD) as u32;
        let mut tail = keys.seal(&trailer_aad(sealed_len), &plain);
        debug_assert_eq!(tail.len() as u32, sealed_len);
        tail.extend_from_slice(&sealed_len.to_le_bytes());
        self.out.write(&tail)?;
        self.hasher.update(&tail);
        let id = PackId(*self.hasher.finalize().as_bytes());
        let size = self.out.len();
        self.out.finish(&pack_path(&id))?;
        Ok(FinishedPack {
            id,
            size,
            entries: self.entries,
        })
    }
}

/// Copies sealed blobs into new packs, authenticating each on the way so a damaged blob is
/// never spread (prune's repacking, a backup's rescue of blobs from packs marked for deletion).
pub(crate) struct Copier<'a> {
    store: &'a dyn ObjectStore,
    keys: &'a Keys,
    pack_size: u64,
    writer: Option<PackWriter>,
    /// Sealed bytes copied so far.
    pub bytes: u64,
}

impl<'a> Copier<'a> {
    pub fn new(store: &'a dyn ObjectStore, keys: &'a Keys, pack_size: u64) -> Self {
        Self {
            store,
            keys,
            pack_size,
            writer: None,
            bytes: 0,
        }
    }

    /// Adds one blob (`sealed`, as `e` in its pack describes it); returns a pack it filled and
    /// published. The bases recorded in the new trailer are the blob's own (the index's `bases`
    /// table is keyed by chunk id and may mix several stored versions of one chunk).
    pub fn add(&mut self, e: &PackEntry, sealed: &[u8]) -> Result<Option<FinishedPack>> {
        let opened = crate::blob::open_blob(self.keys, &e.id, sealed)?;
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(PackWriter::new(self.store)?),
        };
        w.add(e.id, e.kind, e.raw_len, sealed, &opened.bases, e.depth, e.sketch)?;
        self.bytes += sealed.len() as u64;
        if w.len() >= self.pack_size {
            return Ok(Some(self.writer.take().expect("present").finish(self.keys)?));
        }
        Ok(None)
    }

    /// Publishes the last, partly filled pack, if any.
    pub fn finish(mut self) -> Result<Option<FinishedPack>> {
        match self.writer.take() {
            Some(w) if !w.is_empty() => Ok(Some(w.finish(self.keys)?)),
            _ => Ok(None),
        }
    }
}

/// Bytes read from a pack's end to find its trailer. Trailers measured: about 70 KB for a full
/// 32 MiB pack of whole chunks, about 135 KB for a pack of 1 MB of small deltas (more entries,
/// each with its bases); a longer one costs a second request.
const TRAILER_GUESS: usize = 256 << 10;

/// Reads and authenticates a pack's trailer.
pub fn read_trailer(store: &dyn ObjectStore, keys: &Keys, id: &PackId) -> Result<(u64, Vec<PackEntry>)> {
    let path = pack_path(id);
    // The tail most trailers fit in: one request on object storage instead of three.
    let (size, tail) = store.get_tail(&path, TRAILER_GUESS)?;
    let what = format!("pack {id}");
    if size < 4 || tail.len() < 4 {
        return Err(corrupt(what, "shorter than its trailer length field"));
    }
    let tlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().unwrap());
    if tlen as u64 + 4 > size {
        return Err(corrupt(what, "trailer length exceeds the file (truncated?)"));
    }
    let sealed = match tail.len().checked_sub(tlen as usize + 4) {
        Some(at) => tail[at..tail.len() - 4].to_vec(),
        None => store.get_range(&path, size - 4 - tlen as u64, tlen as usize)?,
    };
    let entries = parse_trailer(keys, id, tlen, &sealed, size - 4 - tlen as u64)?;
    Ok((size, entries))
}

/// Authenticates and parses a trailer; `blobs_end` is where the blob area ends.
pub fn parse_trailer(keys: &Keys, id: &PackId, tlen: u32, sealed: &[u8], blobs_end: u64) -> Result<Vec<PackEntry>> {
    let what = || format!("pack {id}");
    let plain = keys.open(&what(), &trailer_aad(tlen), sealed)?;
    if plain.len() < 5 || !(1..=TRAILER_VERSION).contains(&plain[0]) {
        return Err(corrupt(what(), "unknown trailer version"));
    }
    let version = plain[0];
    let count = u32::from_le_bytes(plain[1..5].try_into().unwrap()) as usize;
    if count > plain.len() / ENTRY_LEN {
        return Err(corrupt(what(), "trailer entry count exceeds its length"));
    }
    let mut entries = Vec::with_capacity(count);
    let mut at = 5;
    for _ in 0..count {
        let e = plain
            .get(at..at + ENTRY_LEN)
            .ok_or_else(|| corrupt(what(), "trailer truncated"))?;
        at += ENTRY_LEN;
        let kind = BlobKind::from_u8(e[32]).ok_or_else(|| corrupt(what(), format!("unknown blob kind {}", e[32])))?;
        let mut bases = Vec::new();
        let mut depth = 0;
        if kind == BlobKind::Delta {
            if version < 2 {
                return Err(corrupt(what(), "a version 1 trailer cannot hold deltas"));
            }
            depth = *plain.get(at).ok_or_else(|| corrupt(what(), "trailer truncated"))?;
            at += 1;
            let n = *plain.get(at).ok_or_else(|| corrupt(what(), "trailer truncated"))? as usize;
            let ids = plain
                .get(at + 1..at + 1 + 32 * n)
                .ok_or_else(|| corrupt(what(), "trailer truncated"))?;
            if n == 0 || n > crate::blob::MAX_BASES {
                return Err(corrupt(what(), "delta entry with a bad base count"));
            }
            bases = ids.chunks_exact(32).map(|b| ChunkId::from_slice(b).unwrap()).collect();
            at += 1 + 32 * n;
        }
        let mut sketch = Sketch::default();
        if version >= 3 {
            let n = *plain.get(at).ok_or_else(|| corrupt(what(), "trailer truncated"))? as usize;
            at += 1;
            if n != 0 && n != SUPER_FEATURES {
                return Err(corrupt(what(), format!("sketch of {n} super-features")));
            }
            let fs = plain
                .get(at..at + 4 * n)
                .ok_or_else(|| corrupt(what(), "trailer truncated"))?;
            for (f, b) in sketch.0.iter_mut().zip(fs.chunks_exact(4)) {
                *f = u32::from_le_bytes(b.try_into().unwrap());
            }
            at += 4 * n;
        }
        let entry = PackEntry {
            id: ChunkId::from_slice(&e[..32]).unwrap(),
            kind,
            offset: u32::from_le_bytes(e[33..37].try_into().unwrap()),
            length: u32::from_le_bytes(e[37..41].try_into().unwrap()),
            raw_len: u32::from_le_bytes(e[41..45].try_into().unwrap()),
            bases,
            depth,
            sketch,
        };
        if entry.offset as u64 + entry.length as u64 > blobs_end {
            return Err(corrupt(what(), format!("blob {} lies outside the blob area", entry.id)));
        }
        entries.push(entry);
    }
    if at != plain.len() {
        return Err(corrupt(what(), "trailer length does not match its entries"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{decode, Encoder};
    use crate::crypto::Secrets;
    use crate::storage::LocalStore;

    /// The trailer's version byte, read by opening the sealed trailer.
    fn trailer_version(be: &LocalStore, keys: &Keys, id: &PackId) -> u8 {
        let bytes = be.get(&pack_path(id)).unwrap();
        let tlen = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let sealed = &bytes[bytes.len() - 4 - tlen..bytes.len() - 4];
        keys.open("t", &trailer_aad(tlen as u32), sealed).unwrap()[0]
    }

    /// Sketches round-trip through a version 3 trailer; a pack without any keeps version 2, the
    /// trailer every format 1 reader knows.
    #[test]
    fn sketches_make_a_version_3_trailer_and_only_they_do() {
        let dir = tempfile::tempdir().unwrap();
        let be = LocalStore::create(dir.path()).unwrap();
        let keys = Keys::new(Secrets::generate());
        let mut enc = Encoder::new(3);
        let datas: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 1000]).collect();
        for sketched in [false, true] {
            let mut w = PackWriter::new(&be).unwrap();
            for (i, d) in datas.iter().enumerate() {
                let id = keys.chunk_id(d);
                let sealed = enc.encode(&keys, &id, BlobKind::Data, d).unwrap();
                let sketch = match sketched && i != 1 {
                    true => Sketch([i as u32 + 1; SUPER_FEATURES]),
                    false => Sketch::default(),
                };
                w.add(id, BlobKind::Data, d.len() as u32, &sealed, &[], 0, sketch)
                    .unwrap();
            }
            let fin = w.finish(&keys).unwrap();
            assert_eq!(trailer_version(&be, &keys, &fin.id), if sketched { 3 } else { 2 });
            let (_, entries) = read_trailer(&be, &keys, &fin.id).unwrap();
            assert_eq!(entries, fin.entries);
            assert_eq!(entries[1].sketch, Sketch::default());
            assert_eq!(entries[2].sketch.is_empty(), !sketched);
        }
    }

    #[test]
    fn write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let be = LocalStore::create(dir.path()).unwrap();
        let keys = Keys::new(Secrets::generate());
        let mut enc = Encoder::new(3);
        let mut w = PackWriter::new(&be).unwrap();
        let datas: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 1000 * (i + 1)]).collect();
        for d in &datas {
            let id = keys.chunk_id(d);
            let sealed = enc.encode(&keys, &id, BlobKind::Data, d).unwrap();
            w.add(id, BlobKind::Data, d.len() as u32, &sealed, &[], 0, Sketch::default())
                .unwrap();
        }
        let fin = w.finish(&keys).unwrap();
        let raw = be.get(&pack_path(&fin.id)).unwrap();
        assert_eq!(*blake3::hash(&raw).as_bytes(), fin.id.0);
        let (size, entries) = read_trailer(&be, &keys, &fin.id).unwrap();
        assert_eq!(size, raw.len() as u64);
        assert_eq!(entries, fin.entries);
        for (e, d) in entries.iter().zip(&datas) {
            let b = &raw[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&decode(&keys, &e.id, b).unwrap().1, d);
        }
        // Truncation and a flipped length byte are both detected.
        std::fs::write(dir.path().join(pack_path(&fin.id)), &raw[..raw.len() - 10]).unwrap();
        assert!(read_trailer(&be, &keys, &fin.id).is_err());
        let mut bad = raw.clone();
        let n = bad.len();
        bad[n - 4] ^= 1;
        std::fs::write(dir.path().join(pack_path(&fin.id)), &bad).unwrap();
        assert!(read_trailer(&be, &keys, &fin.id).is_err());
    }

    /// Whatever bytes a pack file holds, reading its trailer returns an error or entries inside
    /// the file; it never panics or reads out of bounds.
    #[test]
    fn garbage_and_mutated_packs_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let be = LocalStore::create(dir.path()).unwrap();
        let keys = Keys::new(Secrets::generate());
        let mut enc = Encoder::new(1);
        let mut w = PackWriter::new(&be).unwrap();
        for i in 0..3u8 {
            let d = vec![i; 500];
            let id = keys.chunk_id(&d);
            w.add(
                id,
                BlobKind::Data,
                500,
                &enc.encode(&keys, &id, BlobKind::Data, &d).unwrap(),
                &[],
                0,
                Sketch::default(),
            )
            .unwrap();
        }
        let fin = w.finish(&keys).unwrap();
        let path = dir.path().join(pack_path(&fin.id));
        let good = std::fs::read(&path).unwrap();
        for round in 0..400u32 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let n = rand::random::<usize>() % 300;
                (0..n).map(|_| rand::random()).collect()
            } else {
                let mut b = good.clone();
                let i = rand::random::<usize>() % b.len();
                b[i] = b[i].wrapping_add(1 + rand::random::<u8>() % 255);
                if round % 3 == 0 {
                    b.truncate(rand::random::<usize>() % b.len());
                }
                b
            };
            std::fs::write(&path, &bytes).unwrap();
            if let Ok((size, entries)) = read_trailer(&be, &keys, &fin.id) {
                // Only the untouched trailer authenticates; a flipped blob byte is caught later,
                // when the blob itself is opened.
                assert_eq!(size, bytes.len() as u64);
                for e in entries {
                    assert!(e.offset as u64 + e.length as u64 <= size);
                }
            }
        }
    }

    mod props {
        use super::*;
        use crate::crypto::Secrets;
        use proptest::prelude::*;

        fn seal_trailer(keys: &Keys, plain: &[u8]) -> (u32, Vec<u8>) {
            let len = (plain.len() + crate::crypto::SEAL_OVERHEAD) as u32;
            (len, keys.seal(&trailer_aad(len), plain))
        }

        proptest! {
            /// Any authenticated trailer plaintext parses or fails cleanly, with no allocation
            /// beyond its own length (the entry count is checked against it).
            #[test]
            fn any_trailer_plaintext_parses_or_fails_cleanly(plain in proptest::collection::vec(any::<u8>(), 0..600),
                                                             blobs_end in any::<u64>()) {
                let keys = Keys::new(Secrets::generate());
                let (len, sealed) = seal_trailer(&keys, &plain);
                if let Ok(entries) = parse_trailer(&keys, &PackId([3; 32]), len, &sealed, blobs_end) {
                    for e in entries {
                        prop_assert!(e.offset as u64 + e.length as u64 <= blobs_end);
                    }
                }
            }

            /// A real trailer with one byte changed (before sealing): never a panic; unchanged,
            /// it parses back to what was written.
            #[test]
            fn mutated_trailers_never_panic(n in 1usize..6, at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                            version in 2u8..=3) {
                let keys = Keys::new(Secrets::generate());
                let mut plain = vec![version];
                plain.extend_from_slice(&(n as u32).to_le_bytes());
                for i in 0..n {
                    plain.extend_from_slice(&[i as u8; 32]);
                    let kind = if i % 2 == 1 { BlobKind::Delta } else { BlobKind::Data };
                    plain.push(kind as u8);
                    plain.extend_from_slice(&((i * 100) as u32).to_le_bytes());
                    plain.extend_from_slice(&100u32.to_le_bytes());
                    plain.extend_from_slice(&200u32.to_le_bytes());
                    if kind == BlobKind::Delta {
                        plain.push(1);
                        plain.push(1);
                        plain.extend_from_slice(&[7; 32]);
                    }
                    if version == 3 {
                        let n = if i % 3 == 0 { 0 } else { SUPER_FEATURES };
                        plain.push(n as u8);
                        plain.extend(std::iter::repeat_n(i as u8 + 1, 4 * n));
                    }
                }
                let (len, sealed) = seal_trailer(&keys, &plain);
                let ok = parse_trailer(&keys, &PackId([3; 32]), len, &sealed, 10_000).unwrap();
                prop_assert_eq!(ok.len(), n);
                let i = at.index(plain.len());
                plain[i] = byte;
                let (len, sealed) = seal_trailer(&keys, &plain);
                let _ = parse_trailer(&keys, &PackId([3; 32]), len, &sealed, 10_000);
            }
        }
    }
}
