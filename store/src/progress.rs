//! Progress reporting. The library only counts; the CLI decides how to draw it (a bar on a
//! terminal, a periodic log line otherwise).

/// Receives progress from long operations. Implementations must be cheap: `advance` is called
/// once per chunk.
pub trait Progress: Send + Sync {
    /// A new phase starts (`"backup stdin"`, `"restore"`, `"check"`); `total` bytes if known.
    fn start(&self, _what: &str, _total: Option<u64>) {}
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// Running totals of the current phase beside its bytes, from the thread that started it:
    /// what came over the network from another host's agent (`None` for a local source) and
    /// what the phase has added to the repository so far. Called once per chunk, like `advance`.
    fn totals(&self, _sent: Option<u64>, _stored: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
