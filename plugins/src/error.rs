//! Errors of plugins and of the controller that runs them.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is wrong; `line` is 1-based.
    #[error("{}{}: {msg}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Config {
        path: PathBuf,
        line: Option<usize>,
        msg: String,
    },
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// A command a plugin runs failed; `stderr` is the tail of what it printed.
    #[error("{what} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The plugins asked for do not fit the configuration or the snapshot.
    #[error("{0}")]
    Selection(String),
    /// A database, node or cluster is not healthy or does not answer.
    #[error("{0}")]
    Unhealthy(String),
    /// A database or its tool answered something Cairn cannot use.
    #[error("{0}")]
    Answer(String),
    /// An HTTP API refused or failed a request.
    #[error("{0}")]
    Http(String),
    /// What is on the host is not what the operation needs (a data directory that is not
    /// empty, a configured database that does not exist, a damaged state file).
    #[error("{0}")]
    State(String),
    /// A snapshot lacks an item or a fact (what verify compares against) that a restore needs,
    /// or holds it in a form this cairn cannot read.
    #[error("snapshot item {item}: {reason}")]
    Facts { item: String, reason: String },
    /// A restored database differs from what the snapshot recorded.
    #[error("{0}")]
    Mismatch(String),
    /// A step failed because the one it depends on did.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// A host's agent could not be reached, or failed a request; `msg` says why.
    #[error("host {host}: {msg}")]
    Host { host: String, msg: String },
    /// A thread or task of Cairn's own stopped.
    #[error("{0}")]
    Task(String),
}

impl Error {
    /// Wraps an error with what was being done.
    pub fn context(context: impl Into<String>) -> impl FnOnce(Error) -> Error {
        let context = context.into();
        move |source| Error::Context {
            context,
            source: Box::new(source),
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `return Err(Error::Kind(format!(...)))`: `bail!(Mismatch, "...", args)`.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($t:tt)*) => { return Err($crate::error::Error::$kind(format!($($t)*))) };
}
