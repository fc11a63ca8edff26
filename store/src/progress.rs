//! Progress reporting. The library only counts; the CLI decides how to draw it (a bar on a
//! terminal, a periodic log line otherwise).

/// Receives progress from long operations. Implementations must be cheap: `advance` is called
/// once per chunk.
pub trait Progress: Send + Sync {
    /// A new phase starts (`"backup stdin"`, `"restore"`, `"check"`); `total` bytes if known.
    fn start(&self, _what: &str, _total: Option<u64>) {}
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
