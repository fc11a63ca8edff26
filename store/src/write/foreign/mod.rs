//! Streams cut and hashed on another host: the data path of a remote agent.
//!
//! ```text
//! database host (agent)                          controller
//! read -> chunk -> hash -> keep in cache --offer(id, len, bases)-->  have it? (this host's chunks only)
//!                                        <--want: have/whole/delta--
//! read back, zstd (against the bases) ----chunk---------------->  decode, check length and id,
//!                                                                 then dedup.rs as a local backup
//! ```
//!
//! The agent ([`HostChunker`], `host.rs`) cuts its stream with this repository's chunker and hashes each
//! chunk with the repository's keyed id, so identical content gets the ids a local backup gives
//! it. It holds only [`ChunkingKeys`]: nothing that opens a blob, a manifest or a key file. It
//! keeps the stream it sent last in a cache on its host, so a chunk that changed goes over the
//! wire as a zstd delta against that chunk's previous version instead of whole.
//!
//! The controller ([`Backup::add_foreign_stream`](crate::Backup::add_foreign_stream), `receive.rs`) answers each offered chunk:
//! - *have* only for a chunk **this host** sent before (the item's newest complete version, or
//!   ids recorded in the cache as this host sent them in a run that did not finish) and that the
//!   destination holds. For any other id the host must send the bytes, even when the repository
//!   holds them: a "have" for another host's chunk would tell an agent what the repository holds.
//! - *delta* when every proposed base is such a chunk and is stored, *whole* otherwise.
//!
//! Every chunk received is decoded (with the bases read from the repository, as a restore reads
//! them), and must have the offered length and hash to the offered id; then it takes the same
//! path as a chunk of a local backup (`Sink::store_foreign` in `dedup.rs`): same dedup, same delta bases, same
//! blobs. A host can only make its own item wrong, and not silently: an id it did not send
//! bytes for is one it sent before.
//!
//! The agent's cache is only an optimisation: a base it reads back is hashed before use (a torn
//! or stale cache costs a whole chunk, never a wrong one), and a controller that does not accept
//! a base asks for the chunk whole.

use std::io;

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::ChunkId;

mod host;
mod receive;

pub use host::{ChunkReader, HostChunker, Place};
pub(crate) use receive::Receiver;
pub use receive::{ForeignSource, WireCounts, WIRE_CHUNKS_META};

/// Item metadata: the host whose agent sent the item.
pub const HOST_META: &str = "host";

/// The cache name of one file of a tree whose item's cache name is `item` (a file name).
pub fn file_cache_name(item: &str, rel: &[u8]) -> String {
    let mut h = blake3::Hasher::new_derive_key("cairn agent cache of a tree's file");
    h.update(item.as_bytes());
    h.update(&[0]);
    h.update(rel);
    h.finalize().to_hex()[..32].to_string()
}

/// Most bases an agent proposes for one chunk.
pub const MAX_WIRE_BASES: usize = crate::blob::MAX_BASES - 1;
/// zstd window for a delta on the wire (bases and chunk must fit; a larger one goes whole).
const WIRE_WINDOW_LOG: u32 = 24;

/// What an agent needs to cut and name chunks as this repository does, and nothing more.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingKeys {
    pub params: ChunkerParams,
    #[serde(with = "hex_key")]
    pub chunker_key: [u8; 32],
    #[serde(with = "hex_key")]
    pub id_key: [u8; 32],
    /// zstd levels on the wire: the repository's, so a chunk sent whole is stored as it came
    /// (and a delta costs on the wire what it costs stored).
    #[serde(default = "default_level")]
    pub level: i32,
    #[serde(default = "default_level")]
    pub delta_level: i32,
}

fn default_level() -> i32 {
    3
}

impl std::fmt::Debug for ChunkingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkingKeys")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|_| serde::de::Error::custom("a key is 32 bytes"))
    }
}

impl ChunkingKeys {
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// Names the keys without revealing them: a cache made under other keys is not used.
    fn fingerprint(&self) -> [u8; 16] {
        let mut h = blake3::Hasher::new_derive_key("cairn agent cache keys");
        h.update(&self.id_key);
        h.update(&self.chunker_key);
        h.update(&self.params.min.to_le_bytes());
        h.update(&self.params.avg.to_le_bytes());
        h.update(&self.params.max.to_le_bytes());
        h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
    }
}

/// One offered chunk: its id, length, and the previous chunks at its place (empty when the
/// host's previous stream had this very chunk, or had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub id: ChunkId,
    pub len: u32,
    pub bases: Vec<ChunkId>,
}

/// The controller's answer for one offered chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Want {
    Have = 0,
    Whole = 1,
    Delta = 2,
}

/// A message of the exchange. Each travels as `length (4, LE) | kind (1) | body`
/// ([`encode_message`], [`MessageBuffer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Agent: the next chunks of the stream, in order.
    Offer(Vec<Offered>),
    /// Controller: the answers for the next offer not answered yet.
    Wants(Vec<Want>),
    /// Agent: the next wanted chunk, compressed alone or (`delta`) against its proposed bases.
    Chunk { delta: bool, payload: Vec<u8> },
}

/// Largest message accepted: a chunk of the largest size, compressed badly, with room to spare.
pub const MAX_MESSAGE: usize = 80 << 20;
const OFFER: u8 = 1;
const WANTS: u8 = 2;
const CHUNK: u8 = 3;

/// Appends `m` to `out` as one framed message.
pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    match m {
        Message::Offer(chunks) => {
            out.push(OFFER);
            out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
            for c in chunks {
                out.extend_from_slice(c.id.as_bytes());
                out.extend_from_slice(&c.len.to_le_bytes());
                out.push(c.bases.len() as u8);
                for b in &c.bases {
                    out.extend_from_slice(b.as_bytes());
                }
            }
        }
        Message::Wants(w) => {
            out.push(WANTS);
            out.extend(w.iter().map(|w| *w as u8));
        }
        Message::Chunk { delta, payload } => {
            out.push(CHUNK);
            out.push(*delta as u8);
            out.extend_from_slice(payload);
        }
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Invalid(format!("agent message: {}", reason.into()))
}

/// Decodes one message body (kind and what follows).
pub fn decode_message(body: &[u8]) -> Result<Message> {
    let (&kind, rest) = body.split_first().ok_or_else(|| bad("empty"))?;
    match kind {
        OFFER => {
            let n = u32::from_le_bytes(rest.get(..4).ok_or_else(|| bad("short offer"))?.try_into().unwrap());
            let mut r = &rest[4..];
            let mut chunks = Vec::with_capacity((n as usize).min(r.len() / 37));
            for _ in 0..n {
                if r.len() < 37 {
                    return Err(bad("offer ends inside a chunk"));
                }
                let id = ChunkId(r[..32].try_into().unwrap());
                let len = u32::from_le_bytes(r[32..36].try_into().unwrap());
                let nb = r[36] as usize;
                if nb > MAX_WIRE_BASES {
                    return Err(bad(format!("{nb} bases for one chunk")));
                }
                r = &r[37..];
                if r.len() < 32 * nb {
                    return Err(bad("offer ends inside a base"));
                }
                let bases = r[..32 * nb]
                    .chunks(32)
                    .map(|b| ChunkId(b.try_into().unwrap()))
                    .collect();
                r = &r[32 * nb..];
                chunks.push(Offered { id, len, bases });
            }
            if !r.is_empty() {
                return Err(bad("bytes after an offer"));
            }
            Ok(Message::Offer(chunks))
        }
        WANTS => rest
            .iter()
            .map(|b| match b {
                0 => Ok(Want::Have),
                1 => Ok(Want::Whole),
                2 => Ok(Want::Delta),
                b => Err(bad(format!("unknown answer {b}"))),
            })
            .collect::<Result<_>>()
            .map(Message::Wants),
        CHUNK => match rest.split_first() {
            Some((&d, payload)) if d <= 1 => Ok(Message::Chunk {
                delta: d == 1,
                payload: payload.to_vec(),
            }),
            _ => Err(bad("bad chunk header")),
        },
        k => Err(bad(format!("unknown kind {k}"))),
    }
}

/// Collects the bytes of a message stream (in pieces of any size) into whole messages.
#[derive(Default)]
pub struct MessageBuffer {
    buf: Vec<u8>,
}

impl MessageBuffer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        let Some(head) = self.buf.get(..4) else { return Ok(None) };
        let len = u32::from_le_bytes(head.try_into().unwrap()) as usize;
        if len > MAX_MESSAGE {
            return Err(bad(format!("{len} bytes is too long")));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let m = decode_message(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        m.map(Some)
    }

    /// Whether bytes of an unfinished message are left.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn zerr(c: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))
}

/// Compresses a chunk for the wire at `level`, against `prefix` (its bases' bytes,
/// concatenated) if any. Alone, it is the frame a local backup's encoder makes at that level.
pub fn encode_wire(data: &[u8], prefix: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; zstd::zstd_safe::compress_bound(data.len())];
    let mut cctx = zstd::zstd_safe::CCtx::create();
    cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    if !prefix.is_empty() {
        cctx.set_parameter(zstd::zstd_safe::CParameter::WindowLog(WIRE_WINDOW_LOG))
            .map_err(zerr)?;
        cctx.ref_prefix(prefix).map_err(zerr)?;
    }
    let n = cctx.compress2(&mut out[..], data).map_err(zerr)?;
    out.truncate(n);
    Ok(out)
}

/// Decompresses a chunk from the wire; it must be exactly `len` bytes.
pub fn decode_wire(payload: &[u8], prefix: &[u8], len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut d = zstd::zstd_safe::DCtx::create();
    d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(WIRE_WINDOW_LOG))
        .map_err(zerr)?;
    if !prefix.is_empty() {
        d.ref_prefix(prefix).map_err(zerr)?;
    }
    d.decompress(&mut out, payload).map_err(zerr)?;
    if out.len() != len {
        return Err(io::Error::other(format!("{} bytes, {len} offered", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> ChunkId {
        ChunkId([b; 32])
    }

    #[test]
    fn messages_round_trip_through_pieces() {
        let msgs = vec![
            Message::Offer(vec![
                Offered {
                    id: id(1),
                    len: 7,
                    bases: vec![],
                },
                Offered {
                    id: id(2),
                    len: 65536,
                    bases: vec![id(3), id(4)],
                },
            ]),
            Message::Wants(vec![Want::Have, Want::Whole, Want::Delta]),
            Message::Chunk {
                delta: true,
                payload: vec![9; 1000],
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            encode_message(m, &mut bytes);
        }
        let mut buf = MessageBuffer::default();
        let mut got = Vec::new();
        for piece in bytes.chunks(7) {
            buf.push(piece);
            while let Some(m) = buf.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert!(buf.is_empty());
    }

    #[test]
    fn wire_chunks_decode_only_to_their_length() {
        let base: Vec<u8> = (0..70_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let mut changed = base.clone();
        changed[1000..1010].copy_from_slice(b"0123456789");
        let delta = encode_wire(&changed, &base, 3).unwrap();
        assert!(delta.len() < 200, "{}", delta.len());
        assert_eq!(decode_wire(&delta, &base, changed.len()).unwrap(), changed);
        assert!(decode_wire(&delta, &base, changed.len() - 1).is_err());
        assert!(decode_wire(&delta, &[], changed.len()).is_err());
        let whole = encode_wire(&changed, &[], 1).unwrap();
        assert_eq!(decode_wire(&whole, &[], changed.len()).unwrap(), changed);
    }

    proptest! {
        #[test]
        fn message_decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_message(&body);
            let mut buf = MessageBuffer::default();
            buf.push(&body);
            while let Ok(Some(_)) = buf.next_message() {}
        }

        #[test]
        fn offers_round_trip(chunks in proptest::collection::vec((any::<[u8; 32]>(), 1u32.., 0usize..=MAX_WIRE_BASES), 0..20)) {
            let offer = Message::Offer(chunks.iter().map(|(i, l, n)| Offered {
                id: ChunkId(*i),
                len: *l,
                bases: (0..*n).map(|k| ChunkId([k as u8; 32])).collect(),
            }).collect());
            let mut bytes = Vec::new();
            encode_message(&offer, &mut bytes);
            prop_assert_eq!(decode_message(&bytes[4..]).unwrap(), offer);
        }
    }
}
