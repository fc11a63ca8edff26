//! Resemblance sketches: a few numbers per chunk such that similar chunks (a row changed, a
//! column added, rows deleted) share some of them and unrelated chunks almost never do. They let
//! the base selector find a delta base for a new chunk wherever a similar one is stored.
//!
//! The method is N-transform super-features (Shilane et al., "WAN optimized replication of backup
//! datasets using stream-informed delta compression", 2012) with the content-defined sampling of
//! Odess (Zhang et al., 2021): a rolling hash over a window of [`WINDOW`] bytes is computed at every
//! position; at positions where its top bits are zero (1 in [`SAMPLE`]) it is fed through
//! [`FEATURES`] random linear transforms, and each feature is the largest transformed value seen.
//! Features are grouped [`PER_SUPER`] at a time and each group is hashed into one super-feature.
//! Two chunks whose windows mostly agree keep most features, and a super-feature survives when
//! all its features do; one shared super-feature makes a candidate, more make a better one.
//!
//! The rolling hash's table and the transforms are derived from the repository's key, so
//! sketches, like chunk ids, say nothing about the content to someone without the key.

/// Bytes a rolling hash value depends on (a 32-bit gear hash shifted two bits per byte).
pub const WINDOW: usize = 16;
/// One position in `SAMPLE` (on average) is sampled.
pub const SAMPLE: u32 = 128;
/// A position is sampled when its hash is below this: the hash's top bits are zero, and they
/// depend on the whole window.
const BELOW: u32 = 1 << (32 - SAMPLE.trailing_zeros());
/// Features per chunk.
pub const FEATURES: usize = 12;
/// Features per super-feature.
pub const PER_SUPER: usize = 2;
/// Super-features per chunk: the numbers kept and indexed.
pub const SUPER_FEATURES: usize = FEATURES / PER_SUPER;

/// A chunk's super-features, 32 bits each (a chance collision only proposes a candidate, which
/// the delta encoder then finds useless). All zero for a chunk too short to sample: no sketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sketch(pub [u32; SUPER_FEATURES]);

impl Sketch {
    /// Whether the chunk had no sampled position (nothing to match on).
    pub fn is_empty(&self) -> bool {
        self.0 == [0; SUPER_FEATURES]
    }
}

/// Computes sketches with one repository's keyed table and transforms.
#[derive(Clone)]
pub struct Sketcher {
    gear: Box<[u32; 256]>,
    mul: [u64; FEATURES],
    add: [u64; FEATURES],
    mix: u64,
}

impl Sketcher {
    /// A sketcher keyed by `key` (the repository derives one for sketches alone).
    pub fn new(key: &[u8; 32]) -> Self {
        let mut rng = blake3::Hasher::new_keyed(key);
        rng.update(b"cairn sketch v1");
        let mut xof = rng.finalize_xof();
        let mut word = || {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            u64::from_le_bytes(b)
        };
        let mut gear = Box::new([0u32; 256]);
        for g in gear.iter_mut() {
            *g = word() as u32;
        }
        let mut mul = [0u64; FEATURES];
        let mut add = [0u64; FEATURES];
        for i in 0..FEATURES {
            mul[i] = word() | 1;
            add[i] = word();
        }
        Self {
            gear,
            mul,
            add,
            mix: word() | 1,
        }
    }

    #[inline(always)]
    fn roll(&self, h: u32, b: u8) -> u32 {
        (h << 2).wrapping_add(self.gear[b as usize])
    }

    /// Feeds a sampled hash through the transforms; true.
    #[inline]
    fn sample(&self, h: u32, features: &mut [u64; FEATURES]) -> bool {
        let x = h as u64;
        for (f, (m, a)) in features.iter_mut().zip(self.mul.iter().zip(&self.add)) {
            *f = (*f).max(x.wrapping_mul(*m).wrapping_add(*a));
        }
        true
    }

    /// The sketch of one chunk.
    pub fn sketch(&self, data: &[u8]) -> Sketch {
        let mut features = [0u64; FEATURES];
        let mut sampled = false;
        let (head, rest) = data.split_at(data.len().min(WINDOW - 1));
        let mut h = head.iter().fold(0u32, |h, &b| self.roll(h, b));
        for &b in rest {
            h = self.roll(h, b);
            if h < BELOW {
                sampled |= self.sample(h, &mut features);
            }
        }
        let mut sk = Sketch::default();
        if !sampled {
            return sk;
        }
        for (s, group) in sk.0.iter_mut().zip(features.chunks(PER_SUPER)) {
            let mut v = 0u64;
            for f in group {
                v = (v ^ f).wrapping_mul(self.mix).rotate_left(29);
            }
            // Zero means "no sketch"; a real zero is nudged.
            *s = ((v >> 32) as u32).max(1);
        }
        sk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, seed: u64, extra: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut x = seed;
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Rows shaped like sysbench's: an id, a number and two long strings of digits.
            let (a, b, c) = (x, x.rotate_left(17), x.rotate_left(41));
            out.extend_from_slice(
                format!(
                    "({i},{},'{a:020}-{b:020}-{c:020}-{a:020}-{b:020}','{c:020}-{a:020}'{extra}),\n",
                    x >> 40
                )
                .as_bytes(),
            );
        }
        out
    }

    fn shared(a: &Sketch, b: &Sketch) -> usize {
        a.0.iter().filter(|f| b.0.contains(f)).count()
    }

    #[test]
    fn similar_chunks_share_super_features_and_unrelated_ones_do_not() {
        let s = Sketcher::new(&[1; 32]);
        let base = rows(300, 1, "");
        // One row changed.
        let mut edited = base.clone();
        edited[20_000..20_010].copy_from_slice(b"9999999999");
        assert!(shared(&s.sketch(&base), &s.sketch(&edited)) >= 3);
        // A column added to every row.
        let widened = rows(300, 1, ",0");
        assert!(shared(&s.sketch(&base), &s.sketch(&widened)) >= 1);
        // Other rows altogether.
        let other = rows(300, 2, "");
        assert_eq!(shared(&s.sketch(&base), &s.sketch(&other)), 0);
        // Another key, other sketches.
        let t = Sketcher::new(&[2; 32]);
        assert_eq!(shared(&s.sketch(&base), &t.sketch(&base)), 0);
    }

    #[test]
    fn tiny_chunks_have_empty_sketches() {
        let s = Sketcher::new(&[1; 32]);
        assert!(s.sketch(b"short").is_empty());
        assert!(!s.sketch(&rows(100, 3, "")).is_empty());
    }
}
