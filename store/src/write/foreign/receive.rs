//! The controller's side: answers an agent's offers and stores what it sends, as a local backup
//! would (see `mod.rs`).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use super::{decode_wire, ChunkingKeys, Message, Want, HOST_META};
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::read::BlobReader;
use crate::snapshot::{Item, ItemKind};
use crate::write::chunklist::RefList;
use crate::write::dedup::Sink;
use crate::write::Backup;

/// Puts the chunks at the front of `queue` that need no bytes (stored, and sent by this host
/// before) into the list: each goes in as soon as everything before it has.
fn drain(queue: &mut VecDeque<Pending>, refs: &mut RefList, sink: &mut Sink, size: &mut u64) -> Result<()> {
    while queue.front().is_some_and(|p| p.want == Want::Have) {
        let p = queue.pop_front().expect("a front");
        *size += p.len as u64;
        let r = sink.store_foreign(p.id, p.len as usize, None, None, false)?;
        refs.push(r, sink)?;
    }
    Ok(())
}

/// The agent end of one stream, as the controller sees it.
pub trait ForeignSource {
    /// The next message from the agent; `None` once its stream ended.
    fn next(&mut self) -> Result<Option<Message>>;
    /// Sends the answers to one offer.
    fn answer(&mut self, wants: Vec<Want>) -> Result<()>;
}

/// Item metadata: how the host sent the item's chunks ([`WireCounts`]).
pub const WIRE_CHUNKS_META: &str = "wire_chunks";

/// How the chunks of a stream came: stored already and sent before (only their ids), whole or
/// as deltas (with their compressed bytes).
#[derive(Debug, Default, serde::Serialize)]
pub struct WireCounts {
    pub have: u64,
    pub whole: u64,
    pub whole_bytes: u64,
    pub delta: u64,
    pub delta_bytes: u64,
}

/// An offered chunk waiting for its turn in the chunk list.
struct Pending {
    id: ChunkId,
    len: u32,
    want: Want,
    bases: Vec<ChunkId>,
    /// The destination answered "missing": encode it here.
    claimed: bool,
}

/// Ids a host sent for an item, recorded as they arrive (in the controller's cache directory).
struct SentLog {
    path: PathBuf,
    file: Option<File>,
}

impl SentLog {
    fn load(&mut self) -> HashSet<ChunkId> {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&self.path) {
            let _ = f.read_to_end(&mut bytes);
        }
        bytes.chunks_exact(32).map(|c| ChunkId(c.try_into().unwrap())).collect()
    }

    /// Records one id; the log is a cache, so failing to write it only costs a resend.
    fn add(&mut self, id: &ChunkId) {
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(id.as_bytes()).is_err() {
                self.file = None;
            }
        }
    }

    /// Replaces the log with `ids` (written beside it, then renamed over it).
    fn replace(&mut self, ids: &[ChunkId]) {
        self.file = None;
        let tmp = self.path.with_extension("new");
        let r = File::create(&tmp)
            .and_then(|mut f| f.write_all(&ids.iter().flat_map(|i| i.0).collect::<Vec<u8>>()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

impl Backup {
    /// What an agent needs to cut and name this repository's chunks.
    pub fn chunking_keys(&self) -> ChunkingKeys {
        let s = self.repo.keys.secrets();
        ChunkingKeys {
            params: self.chunker.params(),
            chunker_key: s.chunker_key,
            id_key: s.id_key,
            level: self.repo.config.compression_level,
            delta_level: self.repo.config.delta.level,
        }
    }

    /// The chunks of the newest complete version of item `name` that came from `host` (a
    /// stream's, or every file's of a tree). What cannot be read is left out: it only costs
    /// those chunks being sent again.
    fn chunks_from(&self, name: &str, host: &str, reader: &BlobReader) -> Result<HashSet<ChunkId>> {
        let newest = self.with_latest(|l| l.hosted.get(&(name.to_string(), host.to_string())).cloned())?;
        let contents = match newest {
            Some(ItemKind::Stream { content }) => vec![content],
            Some(ItemKind::Tree { listing, .. }) => self
                .repo
                .tree_entries(&listing)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.content)
                .collect(),
            None => Vec::new(),
        };
        let mut ids = HashSet::new();
        for c in contents {
            let _ = reader.for_each_leaf(&c, &mut |_| {}, &mut |r| {
                ids.insert(r.0);
                Ok(())
            });
        }
        Ok(ids)
    }

    /// What the controller knows of the chunks `host` sent for item `name`.
    pub(crate) fn receiver(&self, name: &str, host: &str) -> Result<Receiver> {
        let reader = BlobReader::new(&self.synced)?;
        // The chunks this host sent before: its item's newest complete version, and what the
        // log says it sent since (a cache: losing it costs a resend, never a wrong answer).
        let parent = self.chunks_from(name, host, &reader)?;
        let dir = self
            .repo
            .opts
            .cache_dir
            .join(self.repo.config.repo_id.to_hex())
            .join("agents");
        crate::util::create_private_dir(&dir)?;
        let key = self
            .repo
            .keys
            .keyed_name("agent sent", format!("{host}\0{name}").as_bytes());
        let mut log = SentLog {
            path: dir.join(hex::encode(&key[..16])),
            file: None,
        };
        let mut before = log.load();
        before.extend(parent.iter().copied());
        Ok(Receiver {
            what: format!("{host}:{name}"),
            reader,
            known: before.clone(),
            before,
            parent,
            log,
            fresh: Vec::new(),
            fresh_seen: HashSet::new(),
            counts: WireCounts::default(),
        })
    }

    /// The name an agent keeps item `name`'s stream under in its cache: one per repository and
    /// item, and a plain file name.
    pub fn agent_cache_name(&self, name: &str) -> String {
        hex::encode(&self.repo.keys.keyed_name("agent cache", name.as_bytes())[..16])
    }

    /// Adds a stream item that `host`'s agent cuts and sends through `source` (see the module's
    /// description); the item is the one a local backup of the same bytes would store.
    pub fn add_foreign_stream(&self, name: &str, host: &str, source: &mut dyn ForeignSource) -> Result<Item> {
        let mut receiver = self.receiver(name, host)?;
        let meta = [(HOST_META.to_string(), serde_json::json!(host))].into();
        let item = self.add_stream_with(name, &format!("backup {name} from {host}"), meta, |counters| {
            let mut sink = self.sink(counters, self.selector_for(name)?);
            receiver.content(self, &mut sink, source)
        })?;
        let counts = receiver.finish();
        self.set_item_meta(
            name,
            WIRE_CHUNKS_META,
            serde_json::to_value(&counts).expect("counts serialise"),
        )?;
        Ok(item)
    }
}

/// What the controller knows of the chunks one host sent for one item (a stream, or the files
/// of a tree), and what it learns as they come.
pub(crate) struct Receiver {
    /// `host:item`, for errors.
    what: String,
    reader: BlobReader,
    /// Chunks the host sent before this run: the only ones it may be told are stored, or use
    /// as delta bases.
    before: HashSet<ChunkId>,
    /// `before` and what the host sends in this run (a repeated chunk is sent once).
    known: HashSet<ChunkId>,
    /// The item's newest complete version from this host.
    parent: HashSet<ChunkId>,
    log: SentLog,
    /// This run's chunks that `parent` lacks: what the log keeps.
    fresh: Vec<ChunkId>,
    fresh_seen: HashSet<ChunkId>,
    counts: WireCounts,
}

impl Receiver {
    /// Takes one content (a stream, or one file of a tree) from `source` into `sink`.
    pub(crate) fn content(
        &mut self,
        backup: &Backup,
        sink: &mut Sink,
        source: &mut dyn ForeignSource,
    ) -> Result<crate::snapshot::ContentRef> {
        let max = backup.chunker.params().max;
        let dest = backup.pipeline.destination();
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let (mut refs, mut size) = (RefList::default(), 0u64);
        sink.sent.get_or_insert(0);
        let what = self.what.clone();
        let broken = |reason: String| Error::Source {
            path: what.clone(),
            reason,
        };
        while let Some(m) = source.next()? {
            match m {
                Message::Offer(chunks) => {
                    let mut wants = Vec::with_capacity(chunks.len());
                    for c in chunks {
                        if c.len == 0 || c.len > max {
                            return Err(broken(format!("a chunk of {} bytes (at most {max})", c.len)));
                        }
                        if !self.parent.contains(&c.id) && self.fresh_seen.insert(c.id) {
                            self.fresh.push(c.id);
                        }
                        let was_known = self.known.contains(&c.id);
                        let claimed = dest.missing(&[c.id])?[0];
                        let want = if was_known && !claimed {
                            self.counts.have += 1;
                            Want::Have
                        } else {
                            self.known.insert(c.id);
                            let mut delta = !c.bases.is_empty();
                            for b in &c.bases {
                                delta = delta && self.before.contains(b) && b != &c.id && dest.base_depth(b)?.is_some();
                            }
                            if delta {
                                Want::Delta
                            } else {
                                Want::Whole
                            }
                        };
                        wants.push(want);
                        queue.push_back(Pending {
                            id: c.id,
                            len: c.len,
                            want,
                            bases: c.bases,
                            claimed,
                        });
                    }
                    source.answer(wants)?;
                }
                Message::Chunk { delta, payload } => {
                    drain(&mut queue, &mut refs, sink, &mut size)?;
                    let p = queue
                        .pop_front()
                        .ok_or_else(|| broken("the agent sent a chunk nobody asked for".into()))?;
                    let data = if delta {
                        if p.want != Want::Delta {
                            return Err(broken(format!("chunk {} came as a delta, not asked so", p.id)));
                        }
                        self.counts.delta += 1;
                        self.counts.delta_bytes += payload.len() as u64;
                        let prefix = self.reader.prefix_for(&p.id, None, &p.bases)?;
                        decode_wire(&payload, prefix.as_slice(), p.len as usize)
                    } else {
                        self.counts.whole += 1;
                        self.counts.whole_bytes += payload.len() as u64;
                        decode_wire(&payload, &[], p.len as usize)
                    }
                    .map_err(|e| broken(format!("chunk {} does not decode: {e}", p.id)))?;
                    if backup.repo.keys.chunk_id(&data) != p.id {
                        return Err(broken(format!("chunk {} does not hash to its id", p.id)));
                    }
                    size += p.len as u64;
                    *sink.sent.get_or_insert(0) += payload.len() as u64;
                    // A whole chunk's frame was made at this repository's level: stored as it came.
                    let frame = (!delta).then_some(payload);
                    let r = sink.store_foreign(p.id, data.len(), Some(&data), frame, p.claimed)?;
                    refs.push(r, sink)?;
                    self.log.add(&p.id);
                }
                Message::Wants(_) => return Err(broken("the agent sent answers".into())),
            }
        }
        drain(&mut queue, &mut refs, sink, &mut size)?;
        if !queue.is_empty() {
            return Err(broken(format!("the stream ended with {} chunks not sent", queue.len())));
        }
        refs.finish(size, sink)
    }

    /// Keeps in the log this run's chunks that the item's last version lacked (what the next
    /// run needs if this snapshot does not commit); how the chunks came.
    pub(crate) fn finish(mut self) -> WireCounts {
        self.log.replace(&self.fresh);
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::super::{encode_message, encode_wire, ChunkReader, HostChunker, Offered};
    use super::*;
    use std::path::Path;

    /// An agent in this thread: cuts `data` with a [`HostChunker`] (cache in `dir`) and answers
    /// as the agent does; counts the bytes its messages take.
    struct LocalAgent {
        offers: VecDeque<Vec<(Offered, super::super::Place)>>,
        answered: VecDeque<Vec<(Offered, super::super::Place)>>,
        out: VecDeque<Message>,
        reader: ChunkReader,
        wire: u64,
        chunker: Option<HostChunker>,
        /// Replaces the bytes of every wanted chunk (a hostile agent).
        tamper: bool,
    }

    impl LocalAgent {
        fn new(dir: &Path, keys: &ChunkingKeys, data: &[u8]) -> Self {
            let mut h = HostChunker::open(dir, "item", keys.clone()).unwrap();
            let mut all = Vec::new();
            h.run(data, |o, at| {
                all.push((o, at));
                Ok(())
            })
            .unwrap();
            let offers = all.chunks(50).map(|c| c.to_vec()).collect();
            Self {
                offers,
                answered: VecDeque::new(),
                out: VecDeque::new(),
                reader: h.reader().unwrap(),
                wire: 0,
                chunker: Some(h),
                tamper: false,
            }
        }

        fn count(&mut self, m: &Message) {
            let mut b = Vec::new();
            encode_message(m, &mut b);
            self.wire += b.len() as u64;
        }
    }

    impl ForeignSource for LocalAgent {
        fn next(&mut self) -> Result<Option<Message>> {
            let m = match self.out.pop_front() {
                Some(m) => m,
                None => match self.offers.pop_front() {
                    Some(b) => {
                        let m = Message::Offer(b.iter().map(|(o, _)| o.clone()).collect());
                        self.answered.push_back(b);
                        m
                    }
                    None => {
                        if let Some(h) = self.chunker.take() {
                            h.finish().unwrap();
                        }
                        return Ok(None);
                    }
                },
            };
            self.count(&m);
            Ok(Some(m))
        }

        fn answer(&mut self, wants: Vec<Want>) -> Result<()> {
            self.count(&Message::Wants(wants.clone()));
            let batch = self.answered.pop_front().unwrap();
            for ((o, at), w) in batch.iter().zip(wants) {
                if w != Want::Have {
                    let mut m = self.reader.message(*at, o, w == Want::Delta).unwrap();
                    if self.tamper {
                        m = Message::Chunk {
                            delta: false,
                            payload: encode_wire(&vec![b'x'; o.len as usize], &[], 1).unwrap(),
                        };
                    }
                    self.out.push_back(m);
                }
            }
            Ok(())
        }
    }

    /// Rows of a table dump, some changed by `day`.
    fn dump(day: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..60_000u32 {
            let v = if i % 4001 == 0 { i + day } else { i };
            out.extend_from_slice(
                format!(
                    "({i},{},'row {} of the table {}'),\n",
                    v.wrapping_mul(2654435761) % 99991,
                    v * 7,
                    v % 13
                )
                .as_bytes(),
            );
        }
        out
    }

    fn content_of(snap: &crate::Snapshot, item: &str) -> crate::snapshot::ContentRef {
        match &snap.items.iter().find(|i| i.name == item).unwrap().kind {
            ItemKind::Stream { content } => content.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_foreign_stream_is_stored_as_a_local_one_and_later_ones_send_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repo::test_repo(dir.path());
        let agent_dir = dir.path().join("agent");
        let (day0, day1) = (dump(0), dump(1));

        let b = crate::repo::test_backup(&repo, "s0");
        let keys = b.chunking_keys();
        b.add_stream("local", &day0[..]).unwrap();
        let mut a = LocalAgent::new(&agent_dir, &keys, &day0);
        b.add_foreign_stream("db", "h1", &mut a).unwrap();
        let s0 = b.commit().unwrap();
        assert_eq!(
            content_of(&s0, "db"),
            content_of(&s0, "local"),
            "the same chunks as a local backup"
        );
        assert!(
            a.wire > day0.len() as u64 / 20,
            "the first run sends the data: {}",
            a.wire
        );

        // Unchanged: ids only.
        let b = crate::repo::test_backup(&repo, "s1");
        let mut a = LocalAgent::new(&agent_dir, &keys, &day0);
        b.add_foreign_stream("db", "h1", &mut a).unwrap();
        let s1 = b.commit().unwrap();
        assert_eq!(content_of(&s1, "db"), content_of(&s0, "db"));
        assert!(
            a.wire * 100 < day0.len() as u64,
            "unchanged: {} bytes for {}",
            a.wire,
            day0.len()
        );

        // A few rows changed: deltas against last time's chunks.
        let b = crate::repo::test_backup(&repo, "s2");
        b.add_stream("local", &day1[..]).unwrap();
        let mut a = LocalAgent::new(&agent_dir, &keys, &day1);
        b.add_foreign_stream("db", "h1", &mut a).unwrap();
        let s2 = b.commit().unwrap();
        assert_eq!(content_of(&s2, "db"), content_of(&s2, "local"));
        let changed = day0.chunks(1).zip(&day1).filter(|(a, b)| a[0] != **b).count();
        assert!(changed > 0);
        assert!(a.wire < 12_000, "a changed day: {} bytes on the wire", a.wire);
        let mut back = Vec::new();
        repo.dump("s2", "db", &mut back, &crate::NoProgress).unwrap();
        assert!(back == day1);

        // Another host offering the same bytes must send them: "have" is only for its own.
        let b = crate::repo::test_backup(&repo, "s3");
        let mut a = LocalAgent::new(&dir.path().join("agent2"), &keys, &day1);
        let item = b.add_foreign_stream("db", "h2", &mut a).unwrap();
        assert!(a.wire > day1.len() as u64 / 20, "another host sent {}", a.wire);
        assert_eq!(item.stats.bytes_added, 0, "and nothing new is stored");
        drop(b);

        // Bytes that do not hash to the offered id are refused, and no item is left.
        let b = crate::repo::test_backup(&repo, "s4");
        let mut a = LocalAgent::new(&dir.path().join("agent3"), &keys, &dump(9));
        a.tamper = true;
        let e = b.add_foreign_stream("db", "h3", &mut a).unwrap_err();
        assert!(e.to_string().contains("does not hash to its id"), "{e}");
        assert!(b.commit().unwrap().items.is_empty());
    }
}
