//! Reading blobs: the first copy that authenticates, deltas resolved through their bases.

use std::cell::RefCell;
use std::sync::Arc;

use crate::blob;
use crate::cache::{ChunkCache, SharedCache};
use crate::crypto::Keys;
use crate::error::{corrupt, Error, Result};
use crate::id::ChunkId;
use crate::id::PackId;
use crate::index::Index;
use crate::pack::pack_path;
use crate::repo::Synced;
use crate::snapshot::{parse_records, ChunkRef, ContentRef};
use crate::storage::{ObjectReader, ObjectStore};

/// Open packs kept by a reader: chunks of one stream mostly sit in a few packs in a row.
const OPEN_PACKS: usize = 8;

/// Reads blobs through the index.
pub(crate) struct BlobReader {
    store: Arc<dyn ObjectStore>,
    keys: Keys,
    pub(crate) index: Index,
    open: RefCell<Vec<(PackId, Box<dyn ObjectReader>)>>,
    cache: SharedCache,
}

/// A delta's zstd prefix: one base shared from the cache, or several concatenated.
pub(crate) enum Prefix {
    One(Arc<Vec<u8>>),
    Many(Vec<u8>),
}

impl Prefix {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Prefix::One(a) => a,
            Prefix::Many(v) => v,
        }
    }
}

/// A pack found missing, by opening it or by a read (a store may open without asking).
fn missing(e: Error, pack: PackId) -> Error {
    match e {
        Error::NotFound(_) => Error::MissingPack { id: pack },
        e => e,
    }
}

/// The copies (blob, pack) a delta being decoded waits on, innermost last.
type Path = Vec<(ChunkId, PackId)>;

/// Deepest delta chain a reader follows; deeper (or cyclic) chains are reported as damage. The
/// writer's own bound (`DeltaConfig::max_depth`) is far below it.
const MAX_CHAIN: usize = 64;
/// Decoded chunks kept for reuse as bases, per restore or backup (shared by its workers). Chains
/// of neighbouring deltas share ancestors a few chunks wide per level, so 16 MiB holds them with
/// room to spare at the default chain depth and chunk size.
pub(crate) const CACHE_BYTES: usize = 16 << 20;
/// Cache of a reader that mostly walks chunk lists (metadata) rather than decoding content.
const LIST_CACHE_BYTES: usize = 4 << 20;

impl BlobReader {
    /// A reader with a small cache of its own, for walking chunk lists and tree listings.
    pub(crate) fn new(repo: &Synced) -> Result<Self> {
        Self::with_cache(repo, ChunkCache::shared(LIST_CACHE_BYTES))
    }

    /// A reader sharing `cache` with others (the workers of one restore or backup).
    pub(crate) fn with_cache(repo: &Synced, cache: SharedCache) -> Result<Self> {
        Ok(Self {
            store: repo.store.clone(),
            keys: repo.keys.clone(),
            index: repo.index()?,
            open: RefCell::new(Vec::new()),
            cache,
        })
    }

    fn read_sealed_at(&self, id: &ChunkId, loc: &crate::index::BlobLocation) -> Result<Vec<u8>> {
        let mut open = self.open.borrow_mut();
        let pos = match open.iter().position(|(p, _)| *p == loc.pack) {
            Some(i) => i,
            None => {
                let r = self
                    .store
                    .open(&pack_path(&loc.pack))
                    .map_err(|e| missing(e, loc.pack))?;
                if open.len() == OPEN_PACKS {
                    open.remove(0);
                }
                open.push((loc.pack, r));
                open.len() - 1
            }
        };
        open[pos]
            .1
            .read_at(loc.offset as u64, loc.length as usize)
            .map_err(|e| match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => corrupt(
                    format!("pack {}", loc.pack),
                    format!("truncated: blob {id} lies beyond its end"),
                ),
                e => missing(e, loc.pack),
            })
    }

    /// A blob's verified plaintext.
    pub(crate) fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        Ok(Arc::unwrap_or_clone(self.read_shared(id)?))
    }

    /// A blob's verified plaintext, resolving deltas through their bases (cached for reuse).
    pub(crate) fn read_shared(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        let (data, verified) = self.read_level(id, &mut Vec::new(), false)?;
        if !verified {
            if self.keys.chunk_id(&data) != *id {
                // Intermediate bases are not hashed on the fast path: decode again verifying
                // every level, so the error names the blob that is really damaged (and a copy
                // that decodes wrong is passed over for another).
                // The cache may hold the bad base: empty it (a rare path) before decoding again.
                self.cache.lock().unwrap().clear();
                return self.read_level(id, &mut Vec::new(), true).map(|(d, _)| d);
            }
            self.cache.lock().unwrap().mark_verified(id);
        }
        Ok(data)
    }

    /// Decodes a blob; returns its plaintext and whether that was verified against its id. The
    /// top level (`path` empty) is always verified when decoded here; bases only with `verify_all`.
    ///
    /// `path` holds the copies (blob, pack) whose decoding waits on this one. Copies are tried in
    /// the index's order (shortest recorded chain first); a copy is passed over for the next one
    /// when it is on `path` (its chain came back to it), does not authenticate, or has a base
    /// that cannot be read. Recorded depths alone do not rule such loops out: a prune killed
    /// while deleting packs can leave a delta copy whose recorded depth was counted through a
    /// base copy now gone, beside a newer copy of that base that is a delta against it
    /// (`prune/keyframes.rs`); the blobs still read, through their other copies.
    fn read_level(&self, id: &ChunkId, path: &mut Path, verify_all: bool) -> Result<(Arc<Vec<u8>>, bool)> {
        if !verify_all {
            if let Some(hit) = self.cache.lock().unwrap().get(id) {
                return Ok(hit);
            }
        }
        if path.len() > MAX_CHAIN {
            return Err(corrupt(format!("blob {id}"), "delta chain too deep"));
        }
        let verify = verify_all || path.is_empty();
        let data = Arc::new(self.read_some_copy(id, path, verify_all, verify)?);
        self.cache.lock().unwrap().insert(*id, data.clone(), verify);
        Ok((data, verify))
    }

    fn read_some_copy(&self, id: &ChunkId, path: &mut Path, verify_all: bool, verify: bool) -> Result<Vec<u8>> {
        let mut first_err = None;
        for loc in self.index.locations(id)? {
            if path.contains(&(*id, loc.pack)) {
                first_err.get_or_insert_with(|| {
                    corrupt(
                        format!("blob {id}"),
                        format!("its copy in pack {} is a delta whose chain leads back to it", loc.pack),
                    )
                });
                continue;
            }
            let tried = self
                .read_sealed_at(id, &loc)
                .and_then(|sealed| blob::open_blob_owned(&self.keys, id, sealed))
                .and_then(|opened| {
                    path.push((*id, loc.pack));
                    let prefix = self.bases_prefix(id, &opened.bases, path, verify_all);
                    path.pop();
                    let prefix = prefix?;
                    if verify {
                        opened.finish(&self.keys, id, prefix.as_slice())
                    } else {
                        opened.finish_unverified(id, prefix.as_slice())
                    }
                });
            match tried {
                Ok(data) => return Ok(data),
                Err(e @ (Error::MissingPack { .. } | Error::Corrupt { .. } | Error::MissingBlob { .. })) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err.unwrap_or(Error::MissingBlob { id: *id }))
    }

    /// The plaintexts of the bases of `of`'s copy in pack `copy` (or of a copy not yet written),
    /// concatenated: the zstd prefix it was encoded against. An unreadable base is reported as
    /// damage to `of`, the delta that needs it.
    pub(crate) fn prefix_for(&self, of: &ChunkId, copy: Option<PackId>, bases: &[ChunkId]) -> Result<Prefix> {
        let mut path: Path = copy.map(|p| (*of, p)).into_iter().collect();
        self.bases_prefix(of, bases, &mut path, false)
    }

    fn bases_prefix(&self, of: &ChunkId, bases: &[ChunkId], path: &mut Path, verify_all: bool) -> Result<Prefix> {
        let mut read = |b: &ChunkId| {
            self.read_level(b, path, verify_all)
                .map(|(d, _)| d)
                .map_err(|e| match e {
                    Error::Corrupt { what, reason } => corrupt(
                        format!("blob {of}"),
                        format!("its delta base is unreadable: {what}: {reason}"),
                    ),
                    Error::MissingBlob { id: missing } => {
                        corrupt(format!("blob {of}"), format!("its delta base {missing} is missing"))
                    }
                    e => e,
                })
        };
        match bases {
            [] => Ok(Prefix::Many(Vec::new())),
            [one] => Ok(Prefix::One(read(one)?)),
            many => {
                let mut prefix = Vec::new();
                for b in many {
                    prefix.extend_from_slice(&read(b)?);
                }
                Ok(Prefix::Many(prefix))
            }
        }
    }

    /// Calls `f` with every leaf chunk of `content`, in order, loading stored lists on the way.
    /// `on_meta` sees every list chunk id (check uses it).
    pub(crate) fn for_each_leaf(
        &self,
        content: &ContentRef,
        on_meta: &mut dyn FnMut(&ChunkId),
        f: &mut dyn FnMut(ChunkRef) -> Result<()>,
    ) -> Result<()> {
        let mut carries = vec![Vec::new(); content.depth as usize];
        self.walk(&content.chunks, content.depth as usize, &mut carries, on_meta, f)?;
        if carries.iter().any(|c| !c.is_empty()) {
            return Err(corrupt("chunk list", "ends inside a record"));
        }
        Ok(())
    }

    /// The pieces of a content's chunk list one level up from its chunks (the `Meta` blobs
    /// holding the records of its chunks), in order; none for a list kept inline.
    pub(crate) fn list_pieces(&self, content: &ContentRef) -> Result<Vec<ChunkRef>> {
        if content.depth == 0 {
            return Ok(Vec::new());
        }
        // The same references one level less deep: their "leaves" are the pieces.
        let upper = ContentRef {
            depth: content.depth - 1,
            ..content.clone()
        };
        let mut pieces = Vec::new();
        self.for_each_leaf(&upper, &mut |_| {}, &mut |r| {
            pieces.push(r);
            Ok(())
        })?;
        Ok(pieces)
    }

    fn walk(
        &self,
        refs: &[ChunkRef],
        depth: usize,
        carries: &mut [Vec<u8>],
        on_meta: &mut dyn FnMut(&ChunkId),
        f: &mut dyn FnMut(ChunkRef) -> Result<()>,
    ) -> Result<()> {
        if depth == 0 {
            return refs.iter().try_for_each(|r| f(*r));
        }
        for r in refs {
            on_meta(&r.0);
            let bytes = self.read(&r.0)?;
            let mut lower = Vec::new();
            parse_records(&mut carries[depth - 1], &bytes, &mut lower);
            self.walk(&lower, depth - 1, carries, on_meta, f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobKind, Encoder};
    use crate::pack::PackWriter;
    use crate::repo::test_repo;

    fn data(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|n| (n.wrapping_mul(2654435761) ^ seed) as u8)
            .collect()
    }

    #[test]
    fn deltas_resolve_through_their_bases_and_damage_names_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let mut enc = Encoder::with_delta_level(3, 3);
        let base = data(1, 50_000);
        let mut new = base.clone();
        new[1000..1100].fill(7);
        let (bid, nid) = (repo.keys.chunk_id(&base), repo.keys.chunk_id(&new));
        let sealed_base = enc.encode(&repo.keys, &bid, BlobKind::Data, &base).unwrap();
        let delta = enc
            .encode_delta(&repo.keys, &nid, &new, &[bid], &base, new.len())
            .unwrap()
            .expect("a small delta");
        let mut w = PackWriter::new(repo.store.as_ref()).unwrap();
        w.add(
            bid,
            BlobKind::Data,
            base.len() as u32,
            &sealed_base,
            &[],
            0,
            Default::default(),
        )
        .unwrap();
        w.add(
            nid,
            BlobKind::Delta,
            new.len() as u32,
            &delta,
            &[bid],
            1,
            Default::default(),
        )
        .unwrap();
        let fin = w.finish(&repo.keys).unwrap();

        let (synced, _) = repo.synced().unwrap();
        let r = BlobReader::new(&synced).unwrap();
        assert!(r.read(&nid).unwrap() == new);
        assert!(r.read(&bid).unwrap() == base);

        // Only the delta is left: its missing base is reported as damage to the delta.
        repo.store.delete(&pack_path(&fin.id)).unwrap();
        let mut w = PackWriter::new(repo.store.as_ref()).unwrap();
        w.add(
            nid,
            BlobKind::Delta,
            new.len() as u32,
            &delta,
            &[bid],
            1,
            Default::default(),
        )
        .unwrap();
        w.finish(&repo.keys).unwrap();
        let (synced, _) = repo.synced().unwrap();
        let e = BlobReader::new(&synced).unwrap().read(&nid).unwrap_err();
        assert!(
            e.to_string().contains(&format!("blob {nid}")) && e.to_string().contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_copy_is_passed_over_and_a_lost_pack_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let mut enc = Encoder::new(3);
        let d = data(2, 20_000);
        let id = repo.keys.chunk_id(&d);
        let sealed = enc.encode(&repo.keys, &id, BlobKind::Data, &d).unwrap();
        let mut bad = sealed.clone();
        bad[40] ^= 0x55;
        let put = |blob: &[u8]| {
            let mut w = PackWriter::new(repo.store.as_ref()).unwrap();
            w.add(id, BlobKind::Data, d.len() as u32, blob, &[], 0, Default::default())
                .unwrap();
            w.finish(&repo.keys).unwrap()
        };
        let (damaged, good) = (put(&bad), put(&sealed));
        let (synced, idx) = repo.synced().unwrap();
        assert_eq!(idx.locations(&id).unwrap().len(), 2);
        assert!(
            BlobReader::new(&synced).unwrap().read(&id).unwrap() == d,
            "the good copy is read"
        );

        repo.store.delete(&pack_path(&good.id)).unwrap();
        let e = BlobReader::new(&synced).unwrap().read(&id).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. } | Error::MissingPack { .. }), "{e}");
        repo.store.delete(&pack_path(&damaged.id)).unwrap();
        let e = BlobReader::new(&synced).unwrap().read(&id).unwrap_err();
        assert!(matches!(e, Error::MissingPack { .. }), "{e}");
    }

    /// What a prune killed while deleting packs can leave (see `read_level`): the copy of X with
    /// the shortest recorded chain is a delta against Y whose base copy is gone, and Y's only
    /// copy is a delta against X. Both read, through X's other copy (a delta against A).
    #[test]
    fn a_copy_whose_chain_leads_back_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let mut enc = Encoder::with_delta_level(3, 3);
        let a = data(3, 40_000);
        let (mut x, mut y) = (a.clone(), a.clone());
        x[100..200].fill(1);
        y[30_000..30_100].fill(2);
        let [aid, xid, yid] = [&a, &x, &y].map(|d| repo.keys.chunk_id(d));
        let delta = |enc: &mut Encoder, id, new: &[u8], base_id, base: &[u8]| {
            enc.encode_delta(&repo.keys, &id, new, &[base_id], base, new.len())
                .unwrap()
                .expect("a small delta")
        };
        let x_on_y = delta(&mut enc, xid, &x, yid, &y);
        let y_on_x = delta(&mut enc, yid, &y, xid, &x);
        let x_on_a = delta(&mut enc, xid, &x, aid, &a);
        let a_whole = enc.encode(&repo.keys, &aid, BlobKind::Data, &a).unwrap();
        // (id, kind, sealed, base, recorded depth) of each blob of one pack.
        type Blob<'a> = (ChunkId, BlobKind, &'a [u8], Option<ChunkId>, u8);
        let pack = |blobs: &[Blob]| {
            let mut w = PackWriter::new(repo.store.as_ref()).unwrap();
            for (id, kind, sealed, base, depth) in blobs {
                let bases: Vec<ChunkId> = base.iter().copied().collect();
                w.add(*id, *kind, 40_000, sealed, &bases, *depth, Default::default())
                    .unwrap();
            }
            w.finish(&repo.keys).unwrap();
        };
        pack(&[(xid, BlobKind::Delta, &x_on_y, Some(yid), 1)]);
        pack(&[(yid, BlobKind::Delta, &y_on_x, Some(xid), 2)]);
        pack(&[
            (aid, BlobKind::Data, &a_whole, None, 0),
            (xid, BlobKind::Delta, &x_on_a, Some(aid), 2),
        ]);
        let (synced, idx) = repo.synced().unwrap();
        assert_eq!(
            idx.locations(&xid).unwrap()[0].depth,
            1,
            "the copy leading back is tried first"
        );
        assert!(BlobReader::new(&synced).unwrap().read(&xid).unwrap() == x);
        assert!(BlobReader::new(&synced).unwrap().read(&yid).unwrap() == y);
        let r = BlobReader::new(&synced).unwrap();
        assert!(r.read(&yid).unwrap() == y && r.read(&xid).unwrap() == x);
        // Every copy decodes, the one leading back too (its base reads through X's other copy).
        let opts = crate::check::CheckOptions {
            read_data: crate::check::ReadData::All,
        };
        let report = repo.check(&opts, &crate::progress::NoProgress).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.blobs_verified, 4);
    }
}
