//! Chunk lists: an item's content is the list of its chunks. A short list is kept inline in the
//! manifest; a long one is itself stored as chunked `Meta` blobs (records of [`LIST_RECORD`]
//! bytes), one level up, so memory stays bounded however long the content is.
//!
//! The pieces of the first level up (the list of the content's own chunks) are offered to the
//! base selector like data chunks: a stream that is mostly its previous version has a list that
//! is mostly the previous list, and a delta against it costs the records that changed, not the
//! whole list again.

use super::dedup::Sink;
use crate::blob::BlobKind;
use crate::error::Result;
use crate::snapshot::{encode_record, ChunkRef, ContentRef, INLINE_MAX, LIST_RECORD};

/// Builds a chunk list as chunks arrive, spilling it into a stored `Meta` stream once it
/// outgrows [`INLINE_MAX`].
#[derive(Default)]
pub(crate) struct RefList {
    first: Vec<ChunkRef>,
    upper: Option<Box<MetaWriter>>,
    /// How many list levels these references are above the content (0: the content's chunks).
    level: u8,
}

impl RefList {
    pub fn push(&mut self, r: ChunkRef, sink: &mut Sink) -> Result<()> {
        if let Some(u) = &mut self.upper {
            let mut rec = Vec::with_capacity(LIST_RECORD);
            encode_record(&r, &mut rec);
            return u.write(&rec, sink);
        }
        if self.first.len() < INLINE_MAX {
            self.first.push(r);
            return Ok(());
        }
        let mut u = Box::new(MetaWriter::list(self.level + 1));
        let mut rec = Vec::with_capacity(LIST_RECORD * (INLINE_MAX + 1));
        for f in self.first.drain(..).chain(std::iter::once(r)) {
            encode_record(&f, &mut rec);
        }
        u.write(&rec, sink)?;
        self.upper = Some(u);
        Ok(())
    }

    pub fn finish(self, size: u64, sink: &mut Sink) -> Result<ContentRef> {
        match self.upper {
            None => Ok(ContentRef {
                size,
                depth: 0,
                chunks: self.first,
            }),
            Some(u) => {
                let inner = u.finish(sink)?;
                Ok(ContentRef {
                    size,
                    depth: inner.depth + 1,
                    chunks: inner.chunks,
                })
            }
        }
    }
}

/// A stream of metadata bytes (a chunk list, a tree listing), chunked and stored as `Meta` blobs
/// as it is written.
#[derive(Default)]
pub(crate) struct MetaWriter {
    buf: Vec<u8>,
    size: u64,
    refs: RefList,
    /// Which level of a chunk list this stream is (0: not a chunk list).
    list_level: u8,
}

impl MetaWriter {
    fn list(level: u8) -> Self {
        Self {
            list_level: level,
            refs: RefList {
                level,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn write(&mut self, data: &[u8], sink: &mut Sink) -> Result<()> {
        self.buf.extend_from_slice(data);
        self.size += data.len() as u64;
        let max = sink.chunker.params().max as usize;
        while self.buf.len() >= max {
            self.cut_one(sink)?;
        }
        Ok(())
    }

    fn cut_one(&mut self, sink: &mut Sink) -> Result<()> {
        let n = sink.chunker.cut(&self.buf);
        let r = if self.list_level == 1 {
            let start = self.size - self.buf.len() as u64;
            sink.store_list_piece(start, &self.buf[..n])?
        } else {
            sink.store(BlobKind::Meta, &self.buf[..n])?
        };
        self.refs.push(r, sink)?;
        self.buf.drain(..n);
        Ok(())
    }

    pub fn finish(mut self, sink: &mut Sink) -> Result<ContentRef> {
        while !self.buf.is_empty() {
            self.cut_one(sink)?;
        }
        self.refs.finish(self.size, sink)
    }
}
