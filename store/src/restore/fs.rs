//! The filesystem primitives of a restore: nothing below the target is looked up by path.
//!
//! Every directory is opened relative to its parent's descriptor with `O_NOFOLLOW`, and every
//! file, link and directory is created relative to one (`openat`, `mkdirat`, `symlinkat`,
//! `linkat`). A symlink or file found in the way (planted, or left from before) is removed,
//! never followed, so a restore never writes, chmods or chowns outside its target. Stored names
//! are checked here ([`components`]): an empty, `.` or `..` component, or a NUL byte, is refused
//! as a hostile snapshot. Metadata (modes, owners, times, extended attributes) and sparse
//! writing are applied through descriptors too.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{corrupt, Error, Result};
use crate::snapshot::TreeEntry;

pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

pub(crate) fn io_err(path: &Path, e: Errno) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// The checked components of a stored `/`-separated path (`""` has none).
pub(crate) fn components(bytes: &[u8]) -> Result<Vec<&OsStr>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    bytes
        .split(|b| *b == b'/')
        .map(|c| {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
                Err(Error::Invalid(format!(
                    "unsafe path {:?} in snapshot: refusing to restore it",
                    String::from_utf8_lossy(bytes)
                )))
            } else {
                Ok(OsStr::from_bytes(c))
            }
        })
        .collect()
}

/// Removes whatever is at `name` in `dir` (a directory with everything in it), never following
/// a symlink. Absent is fine.
pub(crate) fn remove_at(dir: BorrowedFd, name: &OsStr) -> std::result::Result<(), Errno> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory {
        let sub = rfs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
        let mut names = Vec::new();
        for entry in rfs::Dir::read_from(&sub)? {
            let entry = entry?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        for n in names {
            remove_at(sub.as_fd(), OsStr::from_bytes(&n))?;
        }
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty())
    }
}

/// Opens (creating what is missing, replacing what is not a directory) `comps` below `base`.
pub(crate) fn open_dir(base: BorrowedFd, comps: &[&OsStr]) -> std::result::Result<OwnedFd, Errno> {
    let mut cur: Option<OwnedFd> = None;
    for c in comps {
        let at = cur.as_ref().map_or(base, |f| f.as_fd());
        let fd = match rfs::openat(at, *c, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                if e == Errno::LOOP || e == Errno::NOTDIR {
                    remove_at(at, c)?;
                } else if e != Errno::NOENT {
                    return Err(e);
                }
                match rfs::mkdirat(at, *c, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                rfs::openat(at, *c, DIR_FLAGS, Mode::empty())?
            }
        };
        cur = Some(fd);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => rfs::openat(base, ".", DIR_FLAGS, Mode::empty()),
    }
}

/// Creates `name` in `dir` as a new, empty, private file, replacing what is there.
pub(crate) fn create_file(dir: BorrowedFd, name: &OsStr) -> std::result::Result<std::fs::File, Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o600);
    let fd = match rfs::openat(dir, name, flags, mode) {
        Err(Errno::EXIST) => {
            remove_at(dir, name)?;
            rfs::openat(dir, name, flags, mode)?
        }
        r => r?,
    };
    Ok(std::fs::File::from(fd))
}

pub(crate) fn timestamps(e: &TreeEntry) -> Timestamps {
    let t = Timespec {
        tv_sec: e.mtime,
        tv_nsec: e.mtime_nsec.min(999_999_999).into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner (when allowed), mode, extended attributes and time, in that order (a chown clears
/// set-id bits; writing attributes would change the time).
/// An owner of `u32::MAX` (an id no file has) leaves the owner as the restoring process makes
/// it: a stream item placed as a file carries no owner.
pub(crate) fn apply_meta(fd: BorrowedFd, e: &TreeEntry, path: &Path) -> Result<()> {
    if e.uid != u32::MAX && e.gid != u32::MAX {
        match rfs::fchown(fd, Some(rfs::Uid::from_raw(e.uid)), Some(rfs::Gid::from_raw(e.gid))) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(err) => return Err(io_err(path, err)),
        }
    }
    rfs::fchmod(fd, Mode::from_raw_mode(e.mode)).map_err(|err| io_err(path, err))?;
    for (name, value) in &e.xattrs {
        let value = hex::decode(value).map_err(|_| corrupt("tree listing", format!("bad xattr value of {name}")))?;
        match rfs::fsetxattr(fd, name.as_str(), &value, rfs::XattrFlags::empty()) {
            // Not root, or a filesystem without them: the attribute cannot be set here.
            Ok(()) | Err(Errno::PERM) | Err(Errno::NOTSUP) | Err(Errno::ACCESS) => {}
            Err(err) => return Err(io_err(path, err)),
        }
    }
    rfs::futimens(fd, &timestamps(e)).map_err(|err| io_err(path, err))
}

/// Opens a directory the operator named (the target, a configured path), following symlinks in
/// it as any path given on a command line; below it nothing is followed.
pub(crate) fn open_trusted_dir(path: &Path) -> Result<OwnedFd> {
    std::fs::create_dir_all(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [&b"../x"[..], b"a/../../x", b"/abs", b"a//b", b"a/./b", b"a\0b", b"a/"] {
            assert!(components(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(components(b"").unwrap().len(), 0);
        assert_eq!(components(b"a/b\xff/c\nd").unwrap().len(), 3);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever bytes a listing holds, accepted components are plain names.
            #[test]
            fn components_are_plain_names(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(comps) = components(&bytes) {
                    for c in comps {
                        let b = c.as_bytes();
                        prop_assert!(!b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0));
                    }
                }
            }
        }
    }
}
