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
    /// Something a plugin found wrong (unhealthy server, failed verification, bad state).
    #[error("{0}")]
    Plugin(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `Err(Error::Plugin(format!(...)))`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::error::Error::Plugin(format!($($t)*))) };
}
