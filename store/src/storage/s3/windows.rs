//! Ranged reads of a bucket's objects, shared by every reader of one store.
//!
//! A restore's workers and a backup's delta encoders each read packs blob by blob, several
//! threads in the same pack. Object storage answers a request in milliseconds whatever its size,
//! so blob-sized requests one after another would leave the link idle; and a read-ahead window
//! per reader made two workers interleaving segments of one pack each fetch all of it (a
//! restore read 2.4x its packs). Here the windows belong to the store:
//!
//! - An object is cut into aligned windows of [`WINDOW`] bytes. A read that continues where the
//!   last read of the same object ended (within [`NEAR`], whichever thread made it) is
//!   *sequential*: it is served from whole windows, and the next [`AHEAD`] windows are fetched
//!   in the background while the caller decodes what it has.
//! - Any other read (a delta base here and there, a pack's first blob) fetches just its range:
//!   sparse reads do not pay for windows they will not use.
//! - A window being fetched is fetched once: others asking for it wait for that fetch. At most
//!   [`CACHED`] windows are kept, the least recently used dropped first, and at most
//!   [`IN_FLIGHT`] are fetched ahead at once, so memory stays bounded (about 48 MiB).
//!
//! A failed fetch is not kept: the reader that finds it fetches its own range again, and its
//! error (not found, a range past the end, the store's) is the one reported.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;

/// Bytes per window.
pub(super) const WINDOW: u64 = 2 << 20;
/// Windows fetched ahead of a sequential read.
const AHEAD: u64 = 4;
/// Windows kept.
const CACHED: usize = 16;
/// Windows fetched ahead at once (those asked for by a waiting reader are not counted).
const IN_FLIGHT: usize = 8;
/// How far past the end of the last read of an object a read still counts as continuing it.
const NEAR: u64 = 1 << 20;

/// An object's name in the cache.
pub(super) type Name = Arc<str>;

enum Slot {
    Loading { ahead: bool },
    Ready { data: Bytes, used: u64 },
    Failed,
}

#[derive(Default)]
struct State {
    slots: HashMap<(Name, u64), Slot>,
    /// Where the last read of each recently read object ended.
    cursor: HashMap<Name, u64>,
    /// Object sizes learned from fetched windows (so read-ahead stops at the end).
    sizes: HashMap<Name, u64>,
    tick: u64,
}

impl State {
    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn loading_ahead(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Loading { ahead: true, .. }))
            .count()
    }

    /// Drops the least recently used ready (or failed) windows beyond [`CACHED`], and cursors
    /// and sizes of objects no longer cached, beyond a few hundred.
    fn evict(&mut self) {
        while self.slots.len() > CACHED {
            let victim = self
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready { used, .. } => Some((*used, k.clone())),
                    Slot::Failed => Some((0, k.clone())),
                    Slot::Loading { .. } => None,
                })
                .min_by_key(|(used, _)| *used)
                .map(|(_, k)| k);
            match victim {
                Some(k) => {
                    self.slots.remove(&k);
                }
                None => break,
            }
        }
        if self.cursor.len() > 256 {
            let live: std::collections::HashSet<Name> = self.slots.keys().map(|(n, _)| n.clone()).collect();
            self.cursor.retain(|n, _| live.contains(n));
            self.sizes.retain(|n, _| live.contains(n));
        }
    }
}

/// Fetches a range of an object: the bytes and the object's whole size, or why not.
pub(super) type Fetch =
    Arc<dyn Fn(Name, Range<u64>) -> futures::future::BoxFuture<'static, Option<(Bytes, u64)>> + Send + Sync>;

/// The shared windows of one store.
pub(super) struct Windows {
    state: Mutex<State>,
    ready: Condvar,
    fetch: Fetch,
    rt: tokio::runtime::Handle,
}

/// A window being fetched: filled when the fetch ends, and marked failed if the fetch never
/// ends (its task dropped or panicking), so that no reader waits for it forever.
struct Fill {
    windows: Arc<Windows>,
    key: Option<(Name, u64)>,
}

impl Fill {
    fn done(mut self, got: Option<(Bytes, u64)>) {
        if let Some(key) = self.key.take() {
            self.windows.fill(key, got);
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.windows.fill(key, None);
        }
    }
}

/// What [`Windows::read`] could not serve from windows: the caller fetches the range itself.
pub(super) struct Direct;

impl Windows {
    pub(super) fn new(fetch: Fetch, rt: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            fetch,
            rt,
        })
    }

    /// Starts fetching window `w` of `name` unless it is cached or on its way.
    fn start(self: &Arc<Self>, st: &mut State, name: &Name, w: u64, ahead: bool) {
        let key = (name.clone(), w);
        if matches!(st.slots.get(&key), Some(Slot::Loading { .. } | Slot::Ready { .. })) {
            return;
        }
        st.slots.insert(key.clone(), Slot::Loading { ahead });
        let fill = Fill {
            windows: self.clone(),
            key: Some(key),
        };
        let fut = (self.fetch)(name.clone(), w * WINDOW..(w + 1) * WINDOW);
        self.rt.spawn(async move {
            let got = fut.await;
            fill.done(got);
        });
    }

    /// Puts a fetched window (or its failure) in its slot and wakes the readers.
    fn fill(&self, key: (Name, u64), got: Option<(Bytes, u64)>) {
        let mut st = self.state.lock().unwrap();
        let used = st.touch();
        let slot = match got {
            Some((data, size)) => {
                st.sizes.insert(key.0.clone(), size);
                Slot::Ready { data, used }
            }
            None => Slot::Failed,
        };
        st.slots.insert(key, slot);
        st.evict();
        drop(st);
        self.ready.notify_all();
    }

    /// `len` bytes of `name` at `offset` from shared windows, or [`Direct`] when the read is
    /// not sequential (or a window could not be fetched): then the caller fetches the range.
    pub(super) fn read(self: &Arc<Self>, name: &Name, offset: u64, len: usize) -> Result<Vec<u8>, Direct> {
        let end = offset + len as u64;
        let mut st = self.state.lock().unwrap();
        let first = offset / WINDOW;
        let last = end.saturating_sub(1) / WINDOW;
        let cached = (first..=last).all(|w| matches!(st.slots.get(&(name.clone(), w)), Some(Slot::Ready { .. })));
        let sequential = st
            .cursor
            .get(name)
            .is_some_and(|&at| offset + NEAR >= at && offset <= at + NEAR);
        st.cursor.insert(name.clone(), end);
        if len == 0 || !(cached || sequential) {
            return Err(Direct);
        }
        if let Some(&size) = st.sizes.get(name) {
            if end > size {
                // Past the end: the caller's own request reports it.
                return Err(Direct);
            }
        }
        for w in first..=last {
            self.start(&mut st, name, w, false);
        }
        self.read_ahead(&mut st, name, last);
        let mut out = Vec::with_capacity(len);
        for w in first..=last {
            let key = (name.clone(), w);
            let data = loop {
                match st.slots.get(&key) {
                    Some(Slot::Ready { data, .. }) => break data.clone(),
                    Some(Slot::Loading { .. }) => st = self.ready.wait(st).unwrap(),
                    // Failed, or dropped meanwhile (only ready windows are, and only when more
                    // than CACHED are ready): the caller's own request says why.
                    Some(Slot::Failed) | None => {
                        st.slots.remove(&key);
                        return Err(Direct);
                    }
                }
            };
            let used = st.touch();
            if let Some(Slot::Ready { used: u, .. }) = st.slots.get_mut(&key) {
                *u = used;
            }
            let from = offset.max(w * WINDOW) - w * WINDOW;
            let to = (end.min((w + 1) * WINDOW) - w * WINDOW).min(data.len() as u64);
            if from >= to {
                return Err(Direct);
            }
            out.extend_from_slice(&data[from as usize..to as usize]);
        }
        if out.len() != len {
            return Err(Direct);
        }
        Ok(out)
    }

    /// Fetches the windows after `last` (up to [`AHEAD`], within the object's known size).
    fn read_ahead(self: &Arc<Self>, st: &mut State, name: &Name, last: u64) {
        let windows = st.sizes.get(name).map(|s| s.div_ceil(WINDOW));
        for w in last + 1..=last + AHEAD {
            if windows.is_some_and(|n| w >= n) || st.loading_ahead() >= IN_FLIGHT {
                break;
            }
            self.start(st, name, w, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Windows over an in-memory object, counting the bytes fetched.
    fn windows(object: Vec<u8>) -> (Arc<Windows>, Arc<AtomicUsize>, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let object = Bytes::from(object);
        let fetched = Arc::new(AtomicUsize::new(0));
        let f = fetched.clone();
        let fetch: Fetch = Arc::new(move |_name, r: Range<u64>| {
            let object = object.clone();
            let f = f.clone();
            Box::pin(async move {
                let size = object.len() as u64;
                if r.start >= size {
                    return None;
                }
                let got = object.slice(r.start as usize..r.end.min(size) as usize);
                f.fetch_add(got.len(), Ordering::SeqCst);
                Some((got, size))
            })
        });
        (Windows::new(fetch, rt.handle().clone()), fetched, rt)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// Two threads reading alternate runs of one object (as a restore's workers do) get the
    /// right bytes and fetch the object about once, not once each.
    #[test]
    fn interleaved_readers_share_windows() {
        let size = 20 << 20;
        let obj = data(size);
        let (w, fetched, _rt) = windows(obj.clone());
        let name: Name = Arc::from("packs/ab/x");
        let run = 300_000usize;
        let mut direct = 0usize;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let (w, name, obj) = (w.clone(), name.clone(), &obj);
                    s.spawn(move || {
                        let mut direct = 0;
                        let mut at = t * run;
                        while at + run <= size {
                            match w.read(&name, at as u64, run) {
                                Ok(got) => assert!(got == obj[at..at + run], "bytes at {at}"),
                                Err(Direct) => direct += run,
                            }
                            at += 2 * run;
                        }
                        direct
                    })
                })
                .collect();
            for h in hs {
                direct += h.join().unwrap();
            }
        });
        let total = fetched.load(Ordering::SeqCst) + direct;
        assert!(total < size + size / 4, "read {total} for an object of {size}");
    }

    /// A fetch that never ends well (its task panics) fails its window: the reader that waits
    /// for it goes to its own request instead of waiting forever.
    #[test]
    fn a_fetch_that_panics_leaves_no_reader_waiting() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let fetch: Fetch = Arc::new(|_name, _r| Box::pin(async { panic!("a fetch that fails badly") }));
        let w = Windows::new(fetch, rt.handle().clone());
        let name: Name = Arc::from("packs/aa/p");
        assert!(w.read(&name, 0, 100).is_err());
        // Sequential now: served from windows, whose fetch panics.
        assert!(w.read(&name, 100, 100).is_err());
    }

    /// Scattered reads are not served from windows: each costs its own range only.
    #[test]
    fn scattered_reads_fetch_no_windows() {
        let obj = data(40 << 20);
        let (w, fetched, _rt) = windows(obj);
        let name: Name = Arc::from("packs/cd/y");
        for i in 0..10u64 {
            assert!(w.read(&name, i * (4 << 20), 30_000).is_err());
        }
        assert_eq!(fetched.load(Ordering::SeqCst), 0);
    }

    /// A read past the object's end, or of a window that could not be fetched, is left to the
    /// caller's own request (which reports it).
    #[test]
    fn reads_past_the_end_go_direct() {
        let obj = data(3 << 20);
        let (w, _fetched, _rt) = windows(obj.clone());
        let name: Name = Arc::from("packs/ef/z");
        assert!(w.read(&name, 0, 1000).is_err());
        assert_eq!(w.read(&name, 1000, 1000).ok().unwrap(), obj[1000..2000]);
        // The size is known now: a read beyond it goes direct.
        assert!(w.read(&name, 2000, 4 << 20).is_err());
        // A window past the end fails to fetch: direct too.
        assert!(w.read(&name, (3 << 20) - 10, 1 << 20).is_err());
    }
}
