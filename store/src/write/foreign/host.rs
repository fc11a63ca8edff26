//! The agent's side: cuts a stream on the database host, keeps it in a cache there, and reads
//! wanted chunks back for the wire (see `mod.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{encode_wire, ChunkingKeys, Message, Offered, MAX_WIRE_BASES};
use crate::chunker::Chunker;
use crate::id::ChunkId;

/// The cache of one item on the agent's host: `NAME.list` names the chunks of the stream sent
/// last, in order, and where each one's bytes are: in one of the item's segment files
/// `NAME.<16 hex digits>.seg`. A run writes to a new segment only the chunks the last stream
/// lacked, and refers to the last stream's segments for the others, so an unchanged stream
/// writes no data and a changed one what changed.
///
/// `NAME.list`: this magic, the keys' fingerprint (16 bytes), then per chunk its id (32 bytes),
/// length (u32), segment number (u32) and offset in the segment (u64), and at the end the
/// segment ids (u64 each; 0 for a segment no chunk refers to) and their count (u32), all little
/// endian. Segment number `n` is the `n`-th id of that table.
///
/// *Crash safety.* A run writes its segment and list under dot names of its own
/// (`.NAME.<pid>.<random>.…`), renames the segment to its final name, then the list over the old
/// one: the old list stays whole, with its segments, until the new list replaces it; only then
/// are segments no chunk refers to deleted (and, by the next run, any a crash left behind, or
/// dot files of processes that are gone). Every byte read back for a base is hashed first: a
/// damaged cache costs a whole chunk, never a wrong one.
const CACHE_MAGIC: &[u8; 16] = b"cairn agent 2\0\0\0";
/// A cache whose segments hold more than this many times its stream's bytes (old versions of
/// changed chunks) is written again whole by the next run.
const COMPACT_ABOVE: u64 = 2;
const RECORD: usize = 48;

/// Where a chunk's bytes are in the cache (what [`HostChunker::run`] hands out with each offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// 0 for this run's segment, `n + 1` for the last run's `n`-th segment.
    seg: u32,
    offset: u64,
}

/// The stream an agent sent last for one item, kept on its host: its chunks and their bytes.
struct Previous {
    /// Segment ids (0: none) and open files, by segment number.
    segments: Vec<(u64, Option<File>)>,
    /// Offset in the stream, length, id, and where the bytes are.
    chunks: Vec<(u64, u32, ChunkId, u32, u64)>,
    by_id: HashMap<ChunkId, usize>,
    /// Bytes of the segment files the list refers to.
    seg_bytes: u64,
    stream_bytes: u64,
}

fn seg_name(name: &str, id: u64) -> String {
    format!("{name}.{id:016x}.seg")
}

/// The id of `file` if it is one of `name`'s segment files.
fn seg_id(name: &str, file: &str) -> Option<u64> {
    let hex = file.strip_prefix(name)?.strip_prefix('.')?.strip_suffix(".seg")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

impl Previous {
    fn load(dir: &Path, name: &str, keys: &ChunkingKeys) -> Option<Self> {
        let mut list = Vec::new();
        File::open(dir.join(format!("{name}.list")))
            .ok()?
            .read_to_end(&mut list)
            .ok()?;
        if list.len() < 36 || &list[..16] != CACHE_MAGIC || list[16..32] != keys.fingerprint() {
            return None;
        }
        let n = u32::from_le_bytes(list[list.len() - 4..].try_into().unwrap()) as usize;
        let table_at = list.len().checked_sub(4 + 8 * n).filter(|&t| t >= 32)?;
        let body = &list[32..table_at];
        if body.len() % RECORD != 0 {
            return None;
        }
        let mut segments = Vec::with_capacity(n);
        for raw in list[table_at..list.len() - 4].chunks_exact(8) {
            let id = u64::from_le_bytes(raw.try_into().unwrap());
            let file = (id != 0)
                .then(|| File::open(dir.join(seg_name(name, id))).ok())
                .flatten();
            segments.push((id, file));
        }
        let sizes: Vec<u64> = segments
            .iter()
            .map(|(_, f)| f.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len()))
            .collect();
        let (mut chunks, mut by_id, mut off) = (Vec::new(), HashMap::new(), 0u64);
        let mut used = vec![false; n];
        for rec in body.chunks_exact(RECORD) {
            let id = ChunkId(rec[..32].try_into().unwrap());
            let len = u32::from_le_bytes(rec[32..36].try_into().unwrap());
            let seg = u32::from_le_bytes(rec[36..40].try_into().unwrap());
            let at = u64::from_le_bytes(rec[40..48].try_into().unwrap());
            // A chunk outside its segment: the cache is not what its list says.
            if segments.get(seg as usize)?.1.is_none() || at + len as u64 > sizes[seg as usize] {
                return None;
            }
            used[seg as usize] = true;
            by_id.entry(id).or_insert(chunks.len());
            chunks.push((off, len, id, seg, at));
            off += len as u64;
        }
        let seg_bytes = sizes.iter().zip(&used).filter(|(_, u)| **u).map(|(s, _)| s).sum();
        Some(Self {
            segments,
            chunks,
            by_id,
            seg_bytes,
            stream_bytes: off,
        })
    }

    fn read_at(&self, seg: u32, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let file = self
            .segments
            .get(seg as usize)
            .and_then(|s| s.1.as_ref())
            .ok_or_else(|| io::Error::other("a segment of the cache is gone"))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// A chunk's bytes, if the cache still holds them intact.
    fn read(&self, id: &ChunkId, keys: &ChunkingKeys) -> Option<Vec<u8>> {
        let &(_, len, _, seg, at) = self.chunks.get(*self.by_id.get(id)?)?;
        let buf = self.read_at(seg, at, len).ok()?;
        (keys.chunk_id(&buf) == *id).then_some(buf)
    }
}

/// Cuts a stream on the agent's host, keeps it in the cache as it goes, and proposes the
/// previous stream's chunks at the same place as delta bases. See the module's description.
pub struct HostChunker {
    keys: ChunkingKeys,
    chunker: Chunker,
    dir: PathBuf,
    name: String,
    /// This run's files are `.{part}.seg` and `.{part}.list` until it finishes.
    part: String,
    seg_id: u64,
    prev: std::sync::Arc<Option<Previous>>,
    /// Whether chunks the last stream had are referred to rather than written again.
    reuse: bool,
    seg: File,
    seg_len: u64,
    /// Chunks written to this run's segment, by id (a chunk repeated in the stream is written
    /// once).
    written: HashMap<ChunkId, u64>,
    list: BufWriter<File>,
    offset: u64,
    /// Offset in the previous stream minus offset in this one, learned from the last chunk
    /// both have: where this stream's bytes were last time.
    shift: i64,
}

/// The name of streams that are not kept ([`HostChunker::transient`]); no kept stream has it.
const TRANSIENT: &str = "transient";

/// A new file of the cache, `0600`.
fn private_file(path: &Path) -> io::Result<File> {
    crate::util::create_private_file(path).map_err(|e| io::Error::other(e.to_string()))
}

impl HostChunker {
    /// Starts a stream kept as `name` (a file name) in `dir`.
    pub fn open(dir: &Path, name: &str, keys: ChunkingKeys) -> io::Result<Self> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name == TRANSIENT {
            return Err(io::Error::other(format!("bad cache name {name:?}")));
        }
        std::fs::create_dir_all(dir)?;
        // What runs killed before they finished left: their dot files, once their process is gone.
        let dotted = format!(".{name}.");
        for e in std::fs::read_dir(dir)? {
            let file = e?.file_name().to_string_lossy().into_owned();
            if let Some(pid) = file.strip_prefix(&dotted).and_then(|r| r.split('.').next()) {
                if pid.parse::<u32>().is_ok_and(|p| !crate::util::pid_alive(p)) {
                    let _ = std::fs::remove_file(dir.join(&file));
                }
            }
        }
        let prev = Previous::load(dir, name, &keys);
        Self::start(dir, name, keys, prev)
    }

    fn start(dir: &Path, name: &str, keys: ChunkingKeys, prev: Option<Previous>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let reuse = prev
            .as_ref()
            .is_some_and(|p| p.seg_bytes <= COMPACT_ABOVE * p.stream_bytes);
        let seg_id = loop {
            let r = rand::random::<u64>();
            if r != 0 {
                break r;
            }
        };
        let part = format!("{name}.{}.{seg_id:016x}", std::process::id());
        let seg = private_file(&dir.join(format!(".{part}.seg")))?;
        let mut list = BufWriter::new(private_file(&dir.join(format!(".{part}.list")))?);
        list.write_all(CACHE_MAGIC)?;
        list.write_all(&keys.fingerprint())?;
        Ok(Self {
            chunker: Chunker::new(keys.params, &keys.chunker_key),
            keys,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            part,
            seg_id,
            prev: std::sync::Arc::new(prev),
            reuse,
            seg,
            seg_len: 0,
            written: HashMap::new(),
            list,
            offset: 0,
            shift: 0,
        })
    }

    /// Starts a stream that is offered but not kept: no previous stream to propose bases from,
    /// and its files (`.transient.PID.*`) go when it drops, never finished. For a tree's small
    /// files, of which there may be many: nothing is scanned or kept per file. What a killed
    /// agent left of them goes the first time a later agent process starts one.
    pub fn transient(dir: &Path, keys: ChunkingKeys) -> io::Result<Self> {
        static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut swept = SWEPT.lock().unwrap();
        if !swept.iter().any(|d| d == dir) {
            swept.push(dir.to_path_buf());
            let dotted = format!(".{TRANSIENT}.");
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let pid = file.strip_prefix(&dotted).and_then(|r| r.split('.').next());
                if pid
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| !crate::util::pid_alive(p))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        drop(swept);
        Self::start(dir, TRANSIENT, keys, None)
    }

    /// Cuts `reader` to its end, calling `f` with each chunk's offer and where its bytes are.
    pub fn run(&mut self, reader: impl Read, mut f: impl FnMut(Offered, Place) -> io::Result<()>) -> io::Result<()> {
        let chunker = self.chunker.clone();
        chunker.for_each_chunk(
            reader,
            |chunk| {
                let (offered, place) = self.add(chunk)?;
                f(offered, place)
            },
            |e| e,
        )
    }

    fn add(&mut self, chunk: &[u8]) -> io::Result<(Offered, Place)> {
        let id = self.keys.chunk_id(chunk);
        let at = self.offset;
        self.offset += chunk.len() as u64;
        let in_prev = self
            .prev
            .as_ref()
            .as_ref()
            .and_then(|p| p.by_id.get(&id).map(|&i| (p, i)));
        let place = match (in_prev, self.written.get(&id)) {
            (_, Some(&offset)) => Place { seg: 0, offset },
            (Some((p, i)), None) if self.reuse => Place {
                seg: p.chunks[i].3 + 1,
                offset: p.chunks[i].4,
            },
            _ => {
                let offset = self.seg_len;
                self.seg.write_all_at(chunk, offset)?;
                self.seg_len += chunk.len() as u64;
                self.written.insert(id, offset);
                Place { seg: 0, offset }
            }
        };
        self.list.write_all(id.as_bytes())?;
        self.list.write_all(&(chunk.len() as u32).to_le_bytes())?;
        self.list.write_all(&place.seg.to_le_bytes())?;
        self.list.write_all(&place.offset.to_le_bytes())?;
        let mut bases = Vec::new();
        if let Some(prev) = self.prev.as_ref() {
            match in_prev {
                // The same chunk as last time: the streams are aligned again from here on.
                Some((_, i)) => self.shift = prev.chunks[i].0 as i64 - at as i64,
                // A new chunk: last time's chunks over the same bytes (however the cuts moved).
                None => {
                    let start = (at as i64 + self.shift).max(0) as u64;
                    let end = start + chunk.len() as u64;
                    let first = prev.chunks.partition_point(|c| c.0 + c.1 as u64 <= start);
                    bases = prev.chunks[first..]
                        .iter()
                        .take_while(|c| c.0 < end)
                        .take(MAX_WIRE_BASES)
                        .map(|c| c.2)
                        .collect();
                }
            }
        }
        let offered = Offered {
            id,
            len: chunk.len() as u32,
            bases,
        };
        Ok((offered, place))
    }

    /// What reads chunks back for sending (from another thread than the one cutting).
    pub fn reader(&self) -> io::Result<ChunkReader> {
        Ok(ChunkReader {
            keys: self.keys.clone(),
            seg: File::open(self.dir.join(format!(".{}.seg", self.part)))?,
            prev: self.prev.clone(),
            list: self.dir.join(format!("{}.list", self.name)),
        })
    }

    /// Keeps this stream as the one to send deltas against next time (see [`CACHE_MAGIC`] for
    /// the order of the renames), and deletes the segments it no longer refers to. A transient
    /// stream is not kept: its files go as it drops.
    pub fn finish(mut self) -> io::Result<()> {
        if self.name == TRANSIENT {
            return Ok(());
        }
        self.list.flush()?;
        let dir = self.dir.clone();
        let (part, name) = (self.part.clone(), self.name.clone());
        // The list as written numbers segments as `Place` does; the kept one numbers only the
        // segments it refers to, in order of first use (copied record by record: memory does
        // not grow with the stream).
        let prev_ids: Vec<u64> = self
            .prev
            .as_ref()
            .as_ref()
            .map(|p| p.segments.iter().map(|s| s.0).collect())
            .unwrap_or_default();
        let mut written = io::BufReader::new(File::open(dir.join(format!(".{part}.list")))?);
        let mut kept = BufWriter::new(private_file(&dir.join(format!(".{part}.keep")))?);
        let mut head = [0u8; 32];
        written.read_exact(&mut head)?;
        kept.write_all(&head)?;
        let (mut number, mut table): (HashMap<u32, u32>, Vec<u64>) = (HashMap::new(), Vec::new());
        let mut rec = [0u8; RECORD];
        loop {
            match written.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let seg = u32::from_le_bytes(rec[36..40].try_into().unwrap());
            let n = *number.entry(seg).or_insert_with(|| {
                table.push(if seg == 0 {
                    self.seg_id
                } else {
                    prev_ids[seg as usize - 1]
                });
                table.len() as u32 - 1
            });
            rec[36..40].copy_from_slice(&n.to_le_bytes());
            kept.write_all(&rec)?;
        }
        for id in &table {
            kept.write_all(&id.to_le_bytes())?;
        }
        kept.write_all(&(table.len() as u32).to_le_bytes())?;
        kept.flush()?;
        drop(kept);
        if table.contains(&self.seg_id) {
            std::fs::rename(dir.join(format!(".{part}.seg")), dir.join(seg_name(&name, self.seg_id)))?;
        }
        std::fs::rename(dir.join(format!(".{part}.keep")), dir.join(format!("{name}.list")))?;
        let _ = std::fs::remove_file(dir.join(format!(".{part}.list")));
        let _ = std::fs::remove_file(dir.join(format!(".{part}.seg")));
        self.part.clear();
        // Segments no chunk of the new list is in (and the single file of the cache's first
        // format).
        for e in std::fs::read_dir(&dir)? {
            let file = e?.file_name().to_string_lossy().into_owned();
            let stale = match seg_id(&name, &file) {
                Some(id) => !table.contains(&id),
                None => file == format!("{name}.data"),
            };
            if stale {
                std::fs::remove_file(dir.join(&file))?;
            }
        }
        Ok(())
    }
}

impl Drop for HostChunker {
    fn drop(&mut self) {
        if !self.part.is_empty() {
            for ext in ["seg", "list", "keep"] {
                let _ = std::fs::remove_file(self.dir.join(format!(".{}.{ext}", self.part)));
            }
        }
    }
}

/// Reads a stream's chunks back from the agent's cache and compresses them for the wire.
pub struct ChunkReader {
    keys: ChunkingKeys,
    /// This run's segment.
    seg: File,
    prev: std::sync::Arc<Option<Previous>>,
    /// The last run's list: removed if its segments turn out damaged.
    list: PathBuf,
}

impl ChunkReader {
    /// The chunk at `place` as a message: against its bases if `delta` was wanted and the
    /// cache still holds them intact, else alone (the controller accepts either). A chunk in
    /// the last run's segments is hashed first: one that changed there is an error (the
    /// stream's bytes are gone), never sent.
    pub fn message(&self, place: Place, offered: &Offered, delta: bool) -> io::Result<Message> {
        let data = if place.seg == 0 {
            let mut data = vec![0u8; offered.len as usize];
            self.seg.read_exact_at(&mut data, place.offset)?;
            data
        } else {
            let prev = self
                .prev
                .as_ref()
                .as_ref()
                .ok_or_else(|| io::Error::other("no earlier stream"))?;
            let data = prev.read_at(place.seg - 1, place.offset, offered.len)?;
            if self.keys.chunk_id(&data) != offered.id {
                let _ = std::fs::remove_file(&self.list);
                return Err(io::Error::other(format!(
                    "chunk {} in the agent's cache is damaged: the cache was dropped, and the next \
                     run sends and keeps the stream whole",
                    offered.id
                )));
            }
            data
        };
        if delta {
            if let Some(prev) = self.prev.as_ref() {
                let bases: Option<Vec<Vec<u8>>> = offered.bases.iter().map(|b| prev.read(b, &self.keys)).collect();
                if let Some(bases) = bases {
                    return Ok(Message::Chunk {
                        delta: true,
                        payload: encode_wire(&data, &bases.concat(), self.keys.delta_level)?,
                    });
                }
            }
        }
        Ok(Message::Chunk {
            delta: false,
            payload: encode_wire(&data, &[], self.keys.level)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;

    fn keys() -> ChunkingKeys {
        ChunkingKeys {
            params: ChunkerParams::with_avg(4096),
            chunker_key: [1; 32],
            id_key: [2; 32],
            level: 1,
            delta_level: 3,
        }
    }

    /// Cuts `data` with `h`: each chunk's offer and place.
    fn cut(h: &mut HostChunker, data: &[u8]) -> Vec<(Offered, Place)> {
        let mut offers = Vec::new();
        h.run(data, |o, at| {
            offers.push((o, at));
            Ok(())
        })
        .unwrap();
        offers
    }

    #[test]
    fn the_host_chunker_proposes_last_streams_chunks_and_reads_them_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let day0: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i.wrapping_mul(2654435761) >> 7).to_le_bytes())
            .collect();
        let mut day1 = day0.clone();
        day1[400_000..400_004].copy_from_slice(b"CHNG");
        let run = |data: &[u8]| {
            let mut h = HostChunker::open(dir.path(), "item", keys.clone()).unwrap();
            let offers = cut(&mut h, data);
            let r = h.reader().unwrap();
            let msgs: Vec<Message> = offers.iter().map(|(o, at)| r.message(*at, o, true).unwrap()).collect();
            h.finish().unwrap();
            (offers, msgs)
        };
        let (first, _) = run(&day0);
        assert!(first.iter().all(|(o, _)| o.bases.is_empty()));
        let (second, msgs) = run(&day1);
        let changed: Vec<usize> = (0..second.len()).filter(|&i| !second[i].0.bases.is_empty()).collect();
        assert_eq!(changed.len(), 1, "one chunk changed");
        let i = changed[0];
        let Message::Chunk { delta: true, payload } = &msgs[i] else {
            panic!("not a delta")
        };
        assert!(payload.len() < 300, "{}", payload.len());
        // A cache whose bytes were damaged is not used for a base: the chunk goes whole.
        let segs: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        assert_eq!(segs.len(), 2, "day0's segment and day1's one changed chunk: {segs:?}");
        for seg in &segs {
            let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            f.write_all_at(&[0xff; 64], 0).unwrap();
        }
        let mut h = HostChunker::open(dir.path(), "item", keys.clone()).unwrap();
        let offers = cut(&mut h, &day0);
        let r = h.reader().unwrap();
        let mut proposed = 0;
        for (o, at) in offers.iter().filter(|(o, _)| !o.bases.is_empty()) {
            proposed += 1;
            let Message::Chunk { delta, .. } = r.message(*at, o, true).unwrap() else {
                unreachable!()
            };
            let readable = o
                .bases
                .iter()
                .all(|b| h.prev.as_ref().as_ref().unwrap().read(b, &keys).is_some());
            assert_eq!(delta, readable);
            assert!(!readable, "the damaged chunk was the base");
        }
        assert_eq!(proposed, 1);
        // A chunk referred to in a damaged segment is not sent: an error, and the cache is
        // dropped (the next run keeps the stream whole).
        let (o, at) = offers.iter().find(|(o, at)| at.seg > 0 && o.bases.is_empty()).unwrap();
        let damaged = offers.iter().find(|(_, p)| p.seg == at.seg && p.offset == 0).unwrap();
        let e = r.message(damaged.1, &damaged.0, false).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        assert!(r.message(*at, o, false).is_ok() || at.offset == 0);
        assert!(!dir.path().join("item.list").exists());
        drop(h);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left.len(),
            2,
            "an unfinished stream leaves nothing but segments: {left:?}"
        );
    }

    /// Cuts `data` as the cache's item `name` and keeps it; returns the offers and the bytes
    /// the cache's files hold afterwards.
    fn keep(dir: &Path, name: &str, data: &[u8]) -> (Vec<(Offered, Place)>, u64) {
        let mut h = HostChunker::open(dir, name, keys()).unwrap();
        let offers = cut(&mut h, data);
        let r = h.reader().unwrap();
        for (o, at) in &offers {
            let Message::Chunk { payload, .. } = r.message(*at, o, false).unwrap() else {
                unreachable!()
            };
            let back = super::super::decode_wire(&payload, &[], o.len as usize).unwrap();
            assert_eq!(keys().chunk_id(&back), o.id, "every chunk reads back");
        }
        h.finish().unwrap();
        let bytes = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        (offers, bytes)
    }

    fn stream(seed: u32, len: u32) -> Vec<u8> {
        (0..len)
            .flat_map(|i| (i.wrapping_mul(2654435761) ^ seed).rotate_left(7).to_le_bytes())
            .collect()
    }

    /// An unchanged stream writes no data; a changed one writes what changed; old versions of
    /// changed chunks go once the cache holds more than twice its stream, and other items'
    /// files are left alone.
    #[test]
    fn the_cache_writes_what_changed_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let day0 = stream(1, 100_000);
        let (_, first) = keep(dir.path(), "db", &day0);
        assert!(
            first > day0.len() as u64 && first < day0.len() as u64 + 20_000,
            "{first}"
        );
        std::fs::write(dir.path().join("db.x.seg"), b"not a segment of db").unwrap();
        keep(dir.path(), "other", &day0[..1000]);
        let others = dir.path().join("db.x.seg").metadata().unwrap().len() + {
            let o: u64 = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().starts_with("other."))
                .map(|e| e.metadata().unwrap().len())
                .sum();
            o
        };
        let (offers, again) = keep(dir.path(), "db", &day0);
        assert_eq!(again, first + others, "an unchanged stream wrote no data");
        assert!(
            offers.iter().all(|(_, p)| p.seg > 0),
            "every chunk refers to the last run's"
        );

        // Changes day after day: each run writes about what changed, and the cache stays
        // under three times the stream (twice, then a run that writes it whole).
        let mut day = day0.clone();
        let mut grew = Vec::new();
        let mut before = again;
        for d in 1..12u32 {
            for k in 0..40u64 {
                let at =
                    ((u64::from(d) << 32 | k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize % (day.len() - 8);
                day[at..at + 4].copy_from_slice(&d.to_le_bytes());
            }
            let (_, now) = keep(dir.path(), "db", &day);
            grew.push(now as i64 - before as i64);
            before = now;
            assert!(now - others < 3 * day.len() as u64 + 40_000, "day {d}: {now}");
        }
        assert!(
            grew.iter()
                .filter(|g| **g > 0 && (**g as usize) < day.len() * 3 / 4)
                .count()
                >= 5,
            "most days wrote what changed: {grew:?}"
        );
        assert!(grew.iter().any(|g| *g < 0), "and one compacted: {grew:?}");
        assert!(dir.path().join("db.x.seg").exists() && dir.path().join("other.list").exists());
        // The kept stream is the last day's: an unchanged run proposes no base.
        let (offers, _) = keep(dir.path(), "db", &day);
        assert!(offers.iter().all(|(o, _)| o.bases.is_empty()));
    }

    /// What a run killed before it finished left (its dot files) is removed by the next run
    /// once the process is gone.
    #[test]
    fn a_killed_runs_files_go_with_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let dead = ".db.999999999.00000000000000aa";
        for ext in ["seg", "list"] {
            std::fs::write(dir.path().join(format!("{dead}.{ext}")), b"left").unwrap();
        }
        let mine = format!(".db.{}.00000000000000bb.seg", std::process::id());
        std::fs::write(dir.path().join(&mine), b"a run of a live process").unwrap();
        keep(dir.path(), "db", &stream(2, 5000));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with(".db.999999999")), "{names:?}");
        assert!(names.contains(&mine), "{names:?}");
    }

    /// A transient stream (a tree's small file) is offered and read back like any other, and
    /// leaves nothing in the cache: not while a kept stream of its host is there, not after a
    /// killed agent (its files go when a later process starts one).
    #[test]
    fn a_transient_stream_is_read_back_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dead = format!(".{TRANSIENT}.999999999.00000000000000aa.seg");
        std::fs::write(dir.path().join(&dead), b"left by a killed agent").unwrap();
        keep(dir.path(), "db", &stream(3, 5000));
        let before: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| *n != dead)
            .collect();
        let data = stream(4, 3000);
        for _ in 0..2 {
            let mut h = HostChunker::transient(dir.path(), keys()).unwrap();
            let offers = cut(&mut h, &data);
            assert!(offers.iter().all(|(o, _)| o.bases.is_empty()));
            let reader = h.reader().unwrap();
            for (o, at) in &offers {
                assert!(matches!(
                    reader.message(*at, o, false).unwrap(),
                    Message::Chunk { delta: false, .. }
                ));
            }
            drop(reader);
            h.finish().unwrap();
            let after: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(after, before, "a transient stream left files");
        }
        assert!(HostChunker::open(dir.path(), TRANSIENT, keys()).is_err());
    }
}
