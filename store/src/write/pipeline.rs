//! The encode stage: worker threads compress and seal new chunks (as deltas against their
//! bases where that pays) and hand them to the chunk destination.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::destination::{ChunkDestination, SealedBlob};
use super::failure::fail;
use super::stats::Counters;
use crate::blob::{BlobKind, Encoder};
use crate::cache::ChunkCache;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::read::{BlobReader, CACHE_BYTES};
use crate::repo::Synced;
use crate::sketch::{Sketch, Sketcher};

/// A new chunk to encode.
pub(crate) struct Job {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub data: Vec<u8>,
    /// Chunks to try as delta bases (empty: store whole).
    pub bases: Vec<ChunkId>,
    /// Chain depth a delta against `bases` would have.
    pub depth: u8,
    /// The data chunk's resemblance sketch, if the selector already made it (the worker makes
    /// it otherwise, where the repository keeps sketches).
    pub sketch: Option<Sketch>,
    /// The chunk compressed already, at this repository's level, by the agent that sent it
    /// (`foreign/`): sealed as it is when the chunk is stored whole.
    pub frame: Option<Vec<u8>>,
    pub counters: Arc<Counters>,
}

type Failure = Arc<Mutex<Option<Error>>>;

/// The workers and the destination they feed; the first error anywhere stops the backup.
pub(crate) struct Pipeline {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    dest: Arc<dyn ChunkDestination>,
    failure: Failure,
    /// The message of the failure an item already reported.
    reported: Mutex<Option<String>>,
}

impl Pipeline {
    /// Starts one worker per core. Each reads delta bases through its own index connection;
    /// decoded bases are shared through one cache, since neighbouring chunks share bases. The
    /// job channel holds two jobs per worker: enough that no worker waits while the caller
    /// chunks, small enough that memory stays at a few chunks per worker.
    pub fn start(repo: &Synced, dest: Arc<dyn ChunkDestination>) -> Result<Pipeline> {
        let n = workers();
        let (tx, job_rx) = bounded::<Job>(2 * n);
        let failure: Failure = Arc::default();
        let cache = ChunkCache::shared(CACHE_BYTES);
        let workers = (0..n)
            .map(|_| {
                let (rx, dest, keys, failure) = (job_rx.clone(), dest.clone(), repo.keys.clone(), failure.clone());
                let enc = Encoder::with_delta_level(repo.config.compression_level, repo.config.delta.level);
                let reader = BlobReader::with_cache(repo, cache.clone());
                let sketcher = repo.config.sketches().then(|| Sketcher::new(&keys.sketch_key()));
                std::thread::spawn(move || worker(rx, dest.as_ref(), keys, enc, reader, sketcher, failure))
            })
            .collect();
        Ok(Pipeline {
            tx: Some(tx),
            workers,
            dest,
            failure,
            reported: Mutex::default(),
        })
    }

    pub fn destination(&self) -> &dyn ChunkDestination {
        self.dest.as_ref()
    }

    pub fn failed(&self) -> bool {
        self.failure.lock().unwrap().is_some()
    }

    /// Queues a new chunk for encoding.
    pub fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.as_ref().expect("pipeline open while backing up");
        tx.send(job).map_err(|_| Error::Pipeline("its workers stopped".into()))
    }

    /// The error that stopped the pipeline. The first caller gets it; later callers (other
    /// items of the same backup) get its message, never a bare "stopped".
    pub fn take_failure(&self) -> Option<Error> {
        let mut reported = self.reported.lock().unwrap();
        if let Some(e) = self.failure.lock().unwrap().take() {
            *reported = Some(e.to_string());
            return Some(e);
        }
        reported
            .as_ref()
            .map(|m| Error::Pipeline(format!("after an earlier error: {m}")))
    }

    /// Waits until every submitted chunk is encoded and in a published, indexed pack
    /// (crash-safety step 4).
    pub fn finish(&mut self) -> Result<()> {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                fail(&self.failure, Error::Pipeline("a worker thread panicked".into()));
            }
        }
        if let Err(e) = self.dest.flush() {
            fail(&self.failure, e);
        }
        // Only an error no item has reported yet: a failed snapshot may still be committed.
        match self.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Threads for the encode stage: one per core.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn worker(
    rx: Receiver<Job>,
    dest: &dyn ChunkDestination,
    keys: Keys,
    mut enc: Encoder,
    reader: Result<BlobReader>,
    sketcher: Option<Sketcher>,
    failure: Failure,
) {
    for job in rx {
        let raw_len = job.data.len() as u32;
        // A delta must be well under what the chunk costs whole (about half its size for dumps)
        // to be worth the reads it adds; otherwise, or if a base cannot be read, store it whole.
        let delta = match (&reader, job.bases.is_empty()) {
            (Ok(r), false) => delta_for(&mut enc, &keys, r, &job).unwrap_or(None),
            _ => None,
        };
        let (kind, sealed, bases, depth) = match delta {
            Some(sealed) => {
                Counters::add(&job.counters.chunks_delta, 1);
                (BlobKind::Delta, sealed, job.bases, job.depth)
            }
            None => match match &job.frame {
                Some(frame) => enc.seal_frame(&keys, &job.id, job.kind, &job.data, frame),
                None => enc.encode(&keys, &job.id, job.kind, &job.data),
            } {
                Ok(sealed) => (job.kind, sealed, Vec::new(), 0),
                Err(e) => return fail(&failure, e),
            },
        };
        // Only data chunks stored whole get a sketch (about 26 bytes in the trailer): a similar
        // chunk found later is then the root of its chain, one delta deep, and a chunk that
        // changes a little every day does not pay for a sketch every day.
        let sketch = match (&sketcher, job.sketch) {
            _ if kind != BlobKind::Data => Sketch::default(),
            (_, Some(s)) => s,
            (Some(s), None) => s.sketch(&job.data),
            (None, None) => Sketch::default(),
        };
        Counters::add(&job.counters.bytes_added, sealed.len() as u64);
        let blob = SealedBlob {
            id: job.id,
            kind,
            raw_len,
            sealed,
            bases,
            depth,
            sketch,
        };
        if let Err(e) = dest.accept(blob) {
            return fail(&failure, e);
        }
    }
}

/// The sealed delta for a job, if it is small enough. Errors reading a base are not fatal: the
/// chunk is then stored whole (a chunk is only as good as its base).
fn delta_for(enc: &mut Encoder, keys: &Keys, reader: &BlobReader, job: &Job) -> Result<Option<Vec<u8>>> {
    let prefix = reader.prefix_for(&job.id, None, &job.bases)?;
    // A piece of a chunk list is mostly random ids and costs about its own size whole, and its
    // delta is read once per restore: worth it whenever it saves a quarter.
    let limit = match job.kind {
        BlobKind::Meta => job.data.len() * 3 / 4,
        _ => job.data.len() / 4,
    };
    enc.encode_delta(keys, &job.id, &job.data, &job.bases, prefix.as_slice(), limit)
}
