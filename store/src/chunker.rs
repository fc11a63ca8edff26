//! Content-defined chunking: FastCDC (Xia et al., 2016) with normalized chunking, level 2.
//!
//! A rolling "gear" hash is updated with one table lookup per byte; a cut falls where its top bits
//! are zero. Between `min` and the average size a stricter mask (two more bits) is used, after it
//! a looser one (two fewer), which pulls chunk sizes towards the average. The gear table is derived
//! from the repository's chunker key, so chunk boundaries reveal nothing about the content to
//! someone who sees only chunk sizes.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// Chunk size parameters, recorded in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// Parameters for an average size (a power of two); min = avg/4, max = avg*4.
    pub fn with_avg(avg: u32) -> Self {
        Self {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.avg.is_power_of_two() || self.avg < 256 || self.avg > (16 << 20) {
            return Err(format!(
                "average chunk size {} must be a power of two between 256 B and 16 MiB",
                self.avg
            ));
        }
        if !(64 <= self.min && self.min < self.avg && self.avg < self.max && self.max <= 64 << 20) {
            return Err(format!(
                "chunk sizes must satisfy 64 <= min < avg < max <= 64 MiB (got {}/{}/{})",
                self.min, self.avg, self.max
            ));
        }
        Ok(())
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::with_avg(DEFAULT_AVG)
    }
}

/// The default average chunk size; docs/benchmarks.md has the measurements behind it.
pub const DEFAULT_AVG: u32 = 64 * 1024;

/// Finds chunk boundaries. Cheap to clone; holds the 2 KiB gear table.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    params: ChunkerParams,
    mask_small: u64,
    mask_large: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, key: &[u8; 32]) -> Self {
        let mut gear = Box::new([0u64; 256]);
        let mut xof = blake3::Hasher::new_keyed(key);
        xof.update(b"cairn chunker gear table v1");
        let mut reader = xof.finalize_xof();
        let mut bytes = [0u8; 256 * 8];
        reader.fill(&mut bytes);
        for (g, b) in gear.iter_mut().zip(bytes.chunks_exact(8)) {
            *g = u64::from_le_bytes(b.try_into().unwrap());
        }
        let bits = params.avg.trailing_zeros();
        // Top bits of the gear hash depend on the most recent bytes (up to 64 of them).
        let top = |n: u32| !0u64 << (64 - n);
        Self {
            gear,
            params,
            mask_small: top(bits + 2),
            mask_large: top(bits.saturating_sub(2).max(1)),
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. When `data` is shorter than `max` and no cut is found,
    /// returns `data.len()`: the caller decides whether more input may follow.
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
        if data.len() <= min {
            return data.len();
        }
        let end = data.len().min(max);
        let normal = end.min(avg);
        let mut h: u64 = 0;
        let mut i = min;
        while i < normal {
            h = (h << 1).wrapping_add(self.gear[data[i] as usize]);
            if h & self.mask_small == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < end {
            h = (h << 1).wrapping_add(self.gear[data[i] as usize]);
            if h & self.mask_large == 0 {
                return i + 1;
            }
            i += 1;
        }
        end
    }

    /// Splits a reader into chunks, calling `f` with each. Memory: one buffer of 2 x max.
    pub fn for_each_chunk<R: Read, E>(
        &self,
        mut reader: R,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
        mut on_read_error: impl FnMut(std::io::Error) -> E,
    ) -> Result<(), E> {
        let max = self.params.max as usize;
        let mut buf = vec![0u8; (2 * max).max(1 << 20)];
        let (mut start, mut end) = (0usize, 0usize);
        let mut eof = false;
        loop {
            if !eof && end - start < max {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < buf.len() {
                    match reader.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(on_read_error(e)),
                    }
                }
            }
            if start == end {
                return Ok(());
            }
            let n = self.cut(&buf[start..end]);
            f(&buf[start..start + n])?;
            start += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.for_each_chunk(
            data,
            |ch| {
                out.push(ch.to_vec());
                Ok::<_, std::io::Error>(())
            },
            |e| e,
        )
        .unwrap();
        out
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let p = ChunkerParams::with_avg(4096);
        let c = Chunker::new(p, &[1; 32]);
        let data = pseudo_random(1 << 20, 42);
        let cs = chunks(&c, &data);
        assert_eq!(cs.concat(), data);
        for ch in &cs[..cs.len() - 1] {
            assert!(ch.len() >= p.min as usize && ch.len() <= p.max as usize);
        }
        let avg = data.len() / cs.len();
        assert!(avg > 2048 && avg < 8192, "average {avg}");
    }

    #[test]
    fn boundaries_resynchronise_after_an_insert() {
        let c = Chunker::new(ChunkerParams::with_avg(4096), &[2; 32]);
        let a = pseudo_random(1 << 19, 7);
        let mut b = a.clone();
        b.splice(1000..1000, b"inserted bytes".iter().copied());
        let ca = chunks(&c, &a);
        let cb = chunks(&c, &b);
        let shared = cb.iter().filter(|x| ca.contains(x)).count();
        assert!(shared + 3 >= ca.len(), "{shared} of {} shared", ca.len());
    }

    #[test]
    fn key_changes_boundaries() {
        let data = pseudo_random(1 << 18, 9);
        let a = chunks(&Chunker::new(ChunkerParams::with_avg(4096), &[1; 32]), &data);
        let b = chunks(&Chunker::new(ChunkerParams::with_avg(4096), &[3; 32]), &data);
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn params_validation() {
        assert!(ChunkerParams::with_avg(65536).validate().is_ok());
        assert!(ChunkerParams::with_avg(1000).validate().is_err());
        assert!(ChunkerParams {
            min: 10,
            avg: 4096,
            max: 8192
        }
        .validate()
        .is_err());
    }
}
