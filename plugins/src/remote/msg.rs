//! The agent protocol's messages: the JSON bodies of `Hello`, `Request` and `Reply` frames.
//!
//! Versioning: [`PROTOCOL`] changes when a message changes meaning or a request is removed;
//! a new request or a new optional field does not change it (unknown fields are ignored, an
//! unknown request is answered with an error). Both sides send [`Hello`] first and refuse a
//! peer of another protocol, naming both versions.

use serde::{Deserialize, Serialize};

/// The protocol this build speaks.
/// 2: a chunk stream with an empty cache name is cut and offered but not kept (a tree's small
/// files); an agent of protocol 1 refuses such a name.
pub const PROTOCOL: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The cairn version of the sender (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The agent's private directory for staged files (mode 0700, removed when it exits).
    #[serde(default)]
    pub work_dir: Option<String>,
    /// The agent's host name, for messages.
    #[serde(default)]
    pub hostname: Option<String>,
}

impl Hello {
    pub fn ours() -> Self {
        Self {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_string(),
            work_dir: None,
            hostname: None,
        }
    }
}

/// What the controller asks an agent to do on its host. Paths are absolute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Runs a program. With `stdin`, the channel's `Data` frames are its input (`End` closes
    /// it); else its input is empty. Its output comes back as `Data`, then `End`, then a
    /// [`Reply::Exit`] with the tail of its stderr.
    Exec {
        program: String,
        args: Vec<String>,
        /// Variables to set (`Some`) or remove (`None`).
        #[serde(default)]
        env: Vec<(String, Option<String>)>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        stdin: bool,
    },
    /// Cuts a program's output (`program`) or a file (`path`) into this repository's chunks and
    /// offers them, sending only those the controller wants (`cairn_store::write::foreign`):
    /// the channel's `Data` both ways are that exchange's messages. Then `End`, and
    /// [`Reply::Exit`] for a program, [`Reply::Done`] for a file. The stream is kept in the
    /// agent's cache under `cache`, as the base for next time's deltas.
    ChunkStream {
        #[serde(default)]
        program: Option<String>,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: Vec<(String, Option<String>)>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        path: Option<String>,
        keys: cairn_store::write::foreign::ChunkingKeys,
        cache: String,
    },
    /// A file's bytes as `Data`, then `End`, then [`Reply::Done`]; with `tail`, only its
    /// last `tail` bytes (an agent that does not know `tail` sends the whole file).
    ReadFile {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<u64>,
    },
    /// Writes the channel's `Data` into a new file beside `path` and renames it over `path`
    /// once `End` came and the bytes are synced: readers see the old file or the whole new one.
    WriteFile {
        path: String,
        mode: u32,
    },
    /// [`Reply::Stat`] of a path, not following a final symlink.
    Stat {
        path: String,
    },
    /// [`Reply::Names`]: a directory's entries, sorted.
    ListDir {
        path: String,
    },
    /// Removes a file, a symlink or a directory with everything in it; absent is not an error.
    Remove {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    /// The entries of the tree at `root` (`cairn_store::write::source::SourceEntry`, one JSON
    /// line each, as `Data`), walked as a local backup walks; then `End` and [`Reply::Done`].
    Walk {
        root: String,
    },
    /// Places the channel's `Data`, an item placement stream (`cairn_store::TreePlacer`), at
    /// `dest`; [`Reply::Done`] once it is all in place.
    PlaceTree {
        dest: String,
        overwrite: bool,
    },
}

/// A path's type, size and permission bits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stat {
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub len: u64,
    pub mode: u32,
    /// Modification time, seconds since the epoch (0 from an agent that does not send it).
    #[serde(default)]
    pub mtime: i64,
}

impl Stat {
    /// What `symlink_metadata` says of a path, on the agent's host or the controller's.
    pub fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = m.file_type();
        let kind = if t.is_file() {
            "file"
        } else if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        Stat {
            kind: kind.into(),
            len: m.len(),
            mode: m.permissions().mode() & 0o7777,
            mtime: m.mtime(),
        }
    }
}

/// Removes a file, a symlink or a directory with everything in it; absent is not an error.
/// What the agent's `Remove` does, and a local host's.
pub fn remove_path(p: &std::path::Path) -> std::io::Result<()> {
    match p.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    }
}

/// How a request ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    /// The program's exit code, or the signal that ended it, and the tail of its stderr.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        stderr: String,
    },
    /// `None`: the path does not exist.
    Stat {
        stat: Option<Stat>,
    },
    Names {
        names: Vec<String>,
    },
    /// The request failed on the host; `not_found` when the path (or program) does not exist.
    Failed {
        error: String,
        #[serde(default)]
        not_found: bool,
    },
}

impl Reply {
    pub fn failed(context: &str, e: &std::io::Error) -> Self {
        Reply::Failed {
            error: format!("{context}: {e}"),
            not_found: e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_and_ignore_unknown_fields() {
        let r = Request::Exec {
            program: "mariadb-dump".into(),
            args: vec!["--all-databases".into()],
            env: vec![("LC_ALL".into(), Some("C".into()))],
            cwd: None,
            stdin: false,
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.starts_with(r#"{"op":"exec""#), "{j}");
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let later: Request = serde_json::from_str(r#"{"op":"stat","path":"/x","follow":true}"#).unwrap();
        assert_eq!(later, Request::Stat { path: "/x".into() });
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
        let h: Hello = serde_json::from_str(r#"{"protocol":1,"version":"9.9.9","new":1}"#).unwrap();
        assert_eq!((h.protocol, h.work_dir), (1, None));
    }
}
