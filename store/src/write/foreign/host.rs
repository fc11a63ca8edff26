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

const CACHE_MAGIC: &[u8; 16] = b"cairn agent 1\0\0\0";

/// The stream an agent sent last for one item, kept on its host: the bytes and their chunks.
struct Previous {
    data: File,
    chunks: Vec<(u64, u32, ChunkId)>,
    by_id: HashMap<ChunkId, usize>,
}

impl Previous {
    fn load(dir: &Path, name: &str, keys: &ChunkingKeys) -> Option<Self> {
        let mut list = Vec::new();
        File::open(dir.join(format!("{name}.list")))
            .ok()?
            .read_to_end(&mut list)
            .ok()?;
        let data = File::open(dir.join(format!("{name}.data"))).ok()?;
        let size = data.metadata().ok()?.len();
        if list.len() < 32 || &list[..16] != CACHE_MAGIC || list[16..32] != keys.fingerprint() {
            return None;
        }
        let (mut chunks, mut by_id, mut off) = (Vec::new(), HashMap::new(), 0u64);
        for rec in list[32..].chunks_exact(36) {
            let id = ChunkId(rec[..32].try_into().unwrap());
            let len = u32::from_le_bytes(rec[32..].try_into().unwrap());
            by_id.entry(id).or_insert(chunks.len());
            chunks.push((off, len, id));
            off += len as u64;
        }
        (off == size).then_some(Self { data, chunks, by_id })
    }

    /// A chunk's bytes, if the cache still holds them intact.
    fn read(&self, id: &ChunkId, keys: &ChunkingKeys) -> Option<Vec<u8>> {
        let &(off, len, _) = self.chunks.get(*self.by_id.get(id)?)?;
        let mut buf = vec![0u8; len as usize];
        self.data.read_exact_at(&mut buf, off).ok()?;
        (keys.chunk_id(&buf) == *id).then_some(buf)
    }
}

/// Cuts a stream on the agent's host, writes it to the cache as it goes, and proposes the
/// previous stream's chunks at the same place as delta bases. See the module's description.
pub struct HostChunker {
    keys: ChunkingKeys,
    chunker: Chunker,
    dir: PathBuf,
    name: String,
    part: String,
    prev: std::sync::Arc<Option<Previous>>,
    data: File,
    list: BufWriter<File>,
    offset: u64,
    /// Offset in the previous stream minus offset in this one, learned from the last chunk
    /// both have: where this stream's bytes were last time.
    shift: i64,
}

impl HostChunker {
    /// Starts a stream kept as `name` (a file name) in `dir`.
    pub fn open(dir: &Path, name: &str, keys: ChunkingKeys) -> io::Result<Self> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::other(format!("bad cache name {name:?}")));
        }
        std::fs::create_dir_all(dir)?;
        let prev = Previous::load(dir, name, &keys);
        let part = format!("{name}.{}.{:016x}", std::process::id(), rand::random::<u64>());
        let open = |ext: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(format!(".{part}.{ext}")))
        };
        let data = open("data")?;
        let mut list = BufWriter::new(open("list")?);
        list.write_all(CACHE_MAGIC)?;
        list.write_all(&keys.fingerprint())?;
        Ok(Self {
            chunker: Chunker::new(keys.params, &keys.chunker_key),
            keys,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            part,
            prev: std::sync::Arc::new(prev),
            data,
            list,
            offset: 0,
            shift: 0,
        })
    }

    /// Cuts `reader` to its end, calling `f` with each chunk's offer and offset in the stream.
    pub fn run(&mut self, reader: impl Read, mut f: impl FnMut(Offered, u64) -> io::Result<()>) -> io::Result<()> {
        let chunker = self.chunker.clone();
        chunker.for_each_chunk(
            reader,
            |chunk| {
                let at = self.offset;
                let offered = self.add(chunk)?;
                f(offered, at)
            },
            |e| e,
        )
    }

    fn add(&mut self, chunk: &[u8]) -> io::Result<Offered> {
        let id = self.keys.chunk_id(chunk);
        let at = self.offset;
        self.data.write_all_at(chunk, at)?;
        self.offset += chunk.len() as u64;
        self.list.write_all(id.as_bytes())?;
        self.list.write_all(&(chunk.len() as u32).to_le_bytes())?;
        let mut bases = Vec::new();
        if let Some(prev) = self.prev.as_ref() {
            match prev.by_id.get(&id) {
                // The same chunk as last time: the streams are aligned again from here on.
                Some(&i) => self.shift = prev.chunks[i].0 as i64 - at as i64,
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
        Ok(Offered {
            id,
            len: chunk.len() as u32,
            bases,
        })
    }

    /// What reads chunks back for sending (from another thread than the one cutting).
    pub fn reader(&self) -> io::Result<ChunkReader> {
        Ok(ChunkReader {
            keys: self.keys.clone(),
            data: File::open(self.dir.join(format!(".{}.data", self.part)))?,
            prev: self.prev.clone(),
        })
    }

    /// Keeps this stream as the one to send deltas against next time.
    pub fn finish(mut self) -> io::Result<()> {
        self.list.flush()?;
        let dir = self.dir.clone();
        let (part, name) = (self.part.clone(), self.name.clone());
        std::fs::rename(dir.join(format!(".{part}.data")), dir.join(format!("{name}.data")))?;
        std::fs::rename(dir.join(format!(".{part}.list")), dir.join(format!("{name}.list")))?;
        self.part.clear();
        Ok(())
    }
}

impl Drop for HostChunker {
    fn drop(&mut self) {
        if !self.part.is_empty() {
            for ext in ["data", "list"] {
                let _ = std::fs::remove_file(self.dir.join(format!(".{}.{ext}", self.part)));
            }
        }
    }
}

/// Reads a stream's chunks back from the agent's cache and compresses them for the wire.
pub struct ChunkReader {
    keys: ChunkingKeys,
    data: File,
    prev: std::sync::Arc<Option<Previous>>,
}

impl ChunkReader {
    /// The chunk at `offset` as a message: against its bases if `delta` was wanted and the
    /// cache still holds them intact, else alone (the controller accepts either).
    pub fn message(&self, offset: u64, offered: &Offered, delta: bool) -> io::Result<Message> {
        let mut data = vec![0u8; offered.len as usize];
        self.data.read_exact_at(&mut data, offset)?;
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

    #[test]
    fn the_host_chunker_proposes_last_streams_chunks_and_reads_them_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ChunkingKeys {
            params: ChunkerParams::with_avg(4096),
            chunker_key: [1; 32],
            id_key: [2; 32],
            level: 1,
            delta_level: 3,
        };
        let day0: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i.wrapping_mul(2654435761) >> 7).to_le_bytes())
            .collect();
        let mut day1 = day0.clone();
        day1[400_000..400_004].copy_from_slice(b"CHNG");
        let run = |data: &[u8]| {
            let mut h = HostChunker::open(dir.path(), "item", keys.clone()).unwrap();
            let mut offers = Vec::new();
            h.run(data, |o, at| {
                offers.push((o, at));
                Ok(())
            })
            .unwrap();
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
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("item.data"))
            .unwrap();
        data.write_all_at(&[0xff; 64], 0).unwrap();
        data.write_all_at(&[0xff; 64], second[i].1).unwrap();
        let mut h = HostChunker::open(dir.path(), "item", keys.clone()).unwrap();
        let mut offers = Vec::new();
        h.run(&day0[..], |o, at| {
            offers.push((o, at));
            Ok(())
        })
        .unwrap();
        let r = h.reader().unwrap();
        for (o, at) in offers.iter().filter(|(o, _)| !o.bases.is_empty()) {
            let Message::Chunk { delta, .. } = r.message(*at, o, true).unwrap() else {
                unreachable!()
            };
            let readable = o
                .bases
                .iter()
                .all(|b| h.prev.as_ref().as_ref().unwrap().read(b, &keys).is_some());
            assert_eq!(delta, readable);
        }
        drop(h);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "an unfinished stream leaves nothing: {left:?}");
    }
}
