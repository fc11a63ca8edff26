//! The **chunk destination** seam: where sealed blobs go once chunked, hashed and encoded.
//!
//! The first half of the write path (chunk, hash, choose bases, compress, seal) needs only a
//! [`ChunkDestination`]; the second half (pack, publish, index) is behind it. Today's one
//! implementation, [`LocalDestination`], packs into the repository from this process; an agent on
//! a database host would implement the trait by asking a controller over the network.
//!
//! # Contract
//! - [`missing`](ChunkDestination::missing) answers, for each id, whether the caller must send
//!   that chunk: it is neither stored in a pack the destination trusts nor on its way. An id
//!   answered `true` is *claimed*: the caller owes it to [`accept`](ChunkDestination::accept),
//!   and every later question about it is answered `false`, so each chunk is encoded once.
//! - [`base_depth`](ChunkDestination::base_depth) tells whether a stored chunk may serve as a
//!   delta base, and the chain depth a delta against it would extend.
//! - [`bases`](ChunkDestination::bases) names a stored delta's bases (none for a chunk stored
//!   whole), so a chain can be restarted from where it began.
//! - [`accept`](ChunkDestination::accept) takes a claimed blob. It may return before the blob is
//!   durable; an error means the destination stopped, and the backup must not commit.
//! - [`flush`](ChunkDestination::flush) returns once every accepted blob is in a published,
//!   findable pack: crash-safety step 4 in `write/mod.rs`. Only after it may a manifest name them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::blob::BlobKind;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::Index;
use crate::pack::PackWriter;
use crate::storage::ObjectStore;
use crate::trust::Trust;

/// A compressed, encrypted blob on its way to a pack.
pub struct SealedBlob {
    pub id: ChunkId,
    pub kind: BlobKind,
    /// Length of the chunk's plaintext.
    pub raw_len: u32,
    pub sealed: Vec<u8>,
    /// A delta's bases (empty for other kinds).
    pub bases: Vec<ChunkId>,
    pub depth: u8,
    /// A data chunk's resemblance sketch (empty: none).
    pub sketch: crate::sketch::Sketch,
}

/// Where sealed blobs go (see the module's contract).
pub trait ChunkDestination: Send + Sync {
    /// For each id, whether the caller must send that chunk (and has now claimed it).
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>>;
    /// The chain depth of a stored chunk usable as a delta base; `None` if it is not usable.
    fn base_depth(&self, id: &ChunkId) -> Result<Option<u8>>;
    /// The bases of a stored delta; empty for a chunk stored whole or not stored.
    fn bases(&self, id: &ChunkId) -> Result<Vec<ChunkId>>;
    /// Takes one claimed blob.
    fn accept(&self, blob: SealedBlob) -> Result<()>;
    /// Waits until every accepted blob is published and findable; the first error if any.
    fn flush(&self) -> Result<()>;
}

type Slot = Arc<Mutex<Option<Error>>>;

fn keep_first(slot: &Slot, e: Error) {
    super::failure::fail(slot, e);
}

/// Packs blobs into this repository: a packer thread appends them to a pack in memory, a
/// publisher thread puts full packs and records them in the index cache, so a slow put never
/// stalls the encoders; one pack may wait for it while the next one fills.
pub(crate) struct LocalDestination {
    tx: Mutex<Option<Sender<SealedBlob>>>,
    packer: Mutex<Option<JoinHandle<()>>>,
    /// Blobs claimed and not yet in an indexed pack.
    pending: Arc<Mutex<HashSet<ChunkId>>>,
    trust: Arc<Trust>,
    /// Index connections for the dedup questions of several item threads at once.
    pool: Mutex<Vec<Index>>,
    failure: Slot,
}

impl LocalDestination {
    /// Starts the packer and publisher. `index` records published packs; `capacity` blobs may
    /// wait for the packer.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        keys: Keys,
        index: Index,
        trust: Arc<Trust>,
        pack_size: u64,
        capacity: usize,
    ) -> Result<Self> {
        let (tx, rx) = bounded::<SealedBlob>(capacity);
        let failure: Slot = Arc::default();
        let pending: Arc<Mutex<HashSet<ChunkId>>> = Arc::default();
        let pool = Mutex::new(vec![index.reopen()?]);
        let published = Published {
            index,
            pending: pending.clone(),
            trust: trust.clone(),
        };
        let slot = failure.clone();
        let packer = std::thread::spawn(move || {
            if let Err(e) = packer(rx, store, keys, published, pack_size, &slot) {
                keep_first(&slot, e);
            }
        });
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            packer: Mutex::new(Some(packer)),
            pending,
            trust,
            pool,
            failure,
        })
    }

    /// Runs `f` with an index connection of the pool (a new one when all are in use).
    fn with_index<T>(&self, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        let taken = self.pool.lock().unwrap().pop();
        let idx = match taken {
            Some(i) => i,
            None => self.trust.index_connection()?,
        };
        let r = f(&idx);
        self.pool.lock().unwrap().push(idx);
        r
    }

    /// Why the packer stopped: waits for it to end (its error is recorded as it ends).
    fn stopped(&self) -> Error {
        let mut packer = self.packer.lock().unwrap();
        if let Some(p) = packer.take() {
            if p.join().is_err() {
                keep_first(&self.failure, Error::Pipeline("the packer thread panicked".into()));
            }
        }
        self.failure
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| Error::Pipeline("its packer stopped".into()))
    }
}

impl ChunkDestination for LocalDestination {
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        self.with_index(|idx| {
            ids.iter()
                .map(|id| {
                    // `pending` is checked before the index: the publisher indexes a pack before
                    // removing its blobs from `pending`, so a blob is always in one of the two.
                    // The index is only believed for packs the repository confirms (`trust.rs`).
                    Ok(!self.pending.lock().unwrap().contains(id)
                        && self.trust.resolve(idx, id)?.is_none()
                        && self.pending.lock().unwrap().insert(*id))
                })
                .collect()
        })
    }

    fn base_depth(&self, id: &ChunkId) -> Result<Option<u8>> {
        self.with_index(|idx| Ok(self.trust.resolve(idx, id)?.map(|loc| loc.depth)))
    }

    fn bases(&self, id: &ChunkId) -> Result<Vec<ChunkId>> {
        self.with_index(|idx| idx.bases(id))
    }

    fn accept(&self, blob: SealedBlob) -> Result<()> {
        let tx = self.tx.lock().unwrap().clone();
        match tx {
            Some(tx) if tx.send(blob).is_ok() => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    fn flush(&self) -> Result<()> {
        drop(self.tx.lock().unwrap().take());
        if let Some(p) = self.packer.lock().unwrap().take() {
            if p.join().is_err() {
                keep_first(&self.failure, Error::Pipeline("the packer thread panicked".into()));
            }
        }
        match self.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for LocalDestination {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Where the publisher records a published pack.
struct Published {
    index: Index,
    pending: Arc<Mutex<HashSet<ChunkId>>>,
    trust: Arc<Trust>,
}

fn packer(
    rx: Receiver<SealedBlob>,
    store: Arc<dyn ObjectStore>,
    keys: Keys,
    published: Published,
    pack_size: u64,
    failure: &Slot,
) -> Result<()> {
    let (pub_tx, pub_rx) = bounded::<PackWriter>(1);
    let slot = failure.clone();
    // As many packs are put at once as the store asks for (object storage: a request's latency
    // is hidden behind another's transfer); each is indexed once it is put.
    let putters = store.puts_in_flight().max(1);
    let publisher = std::thread::spawn(move || {
        let Published {
            mut index,
            pending,
            trust,
        } = published;
        let (put_tx, put_rx) = bounded(putters);
        std::thread::scope(|s| {
            for _ in 0..putters {
                let (pub_rx, put_tx, keys, slot) = (pub_rx.clone(), put_tx.clone(), &keys, &slot);
                s.spawn(move || {
                    for w in pub_rx {
                        match w.finish(keys) {
                            Ok(fin) => {
                                if put_tx.send(fin).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                keep_first(slot, e);
                                return;
                            }
                        }
                    }
                });
            }
            drop((put_tx, pub_rx));
            // Crash-safety steps 2 and 3: a pack is indexed only once it is put, and its blobs
            // stop being pending only once it is indexed.
            for fin in put_rx {
                let r = index.add_pack(&fin).map(|()| {
                    trust.wrote(fin.id);
                    let mut p = pending.lock().unwrap();
                    for e in &fin.entries {
                        p.remove(&e.id);
                    }
                });
                if let Err(e) = r {
                    keep_first(&slot, e);
                    return;
                }
            }
        });
    });
    let mut writer: Option<PackWriter> = None;
    let mut result = Ok(());
    for blob in rx {
        if writer.is_none() {
            match PackWriter::new(store.as_ref()) {
                Ok(w) => writer = Some(w),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let w = writer.as_mut().expect("just made");
        if let Err(e) = w.add(
            blob.id,
            blob.kind,
            blob.raw_len,
            &blob.sealed,
            &blob.bases,
            blob.depth,
            blob.sketch,
        ) {
            result = Err(e);
            break;
        }
        if w.len() >= pack_size && pub_tx.send(writer.take().unwrap()).is_err() {
            break;
        }
    }
    if result.is_ok() {
        if let Some(w) = writer.filter(|w| !w.is_empty()) {
            let _ = pub_tx.send(w);
        }
    }
    drop(pub_tx);
    if publisher.join().is_err() {
        keep_first(failure, Error::Pipeline("the publisher thread panicked".into()));
    }
    result
}
