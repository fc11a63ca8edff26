//! The tree walk: a directory tree becomes a listing (one JSON line per entry, stored as a
//! `Meta` stream) and one content per regular file. Names are kept byte for byte, hard links as
//! links to the first name, extended attributes (POSIX ACLs, SELinux labels) with each entry.

use std::path::Path;

use super::chunklist::MetaWriter;
use super::dedup::Sink;
use super::Backup;
use crate::error::{Error, Result};
use crate::snapshot::{ContentRef, EntryType, TreeEntry};

/// Reads extended attributes (POSIX ACLs and SELinux labels among them) without following
/// symlinks, reusing its buffers across entries.
#[derive(Default)]
struct XattrBuffers {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl XattrBuffers {
    /// Name and hex value of each attribute, sorted; none where the filesystem keeps none.
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<(String, String)>> {
        use rustix::io::Errno;
        const MAX: usize = 64 << 10; // the largest value and list Linux allows
        if self.names.is_empty() {
            self.names = vec![0; MAX];
            self.value = vec![0; MAX];
        }
        let n = match rustix::fs::llistxattr(path, &mut self.names[..]) {
            Ok(n) => n,
            Err(e) if e == Errno::NOTSUP || e == Errno::NOSYS => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for name in self.names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(text) = std::str::from_utf8(name) else {
                continue;
            };
            match rustix::fs::lgetxattr(path, name, &mut self.value[..]) {
                Ok(len) => out.push((text.to_string(), hex::encode(&self.value[..len]))),
                Err(e) if e == Errno::NODATA => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Backup {
    pub(super) fn store_tree(
        &self,
        sink: &mut Sink,
        root: &Path,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<(ContentRef, u64, u64, u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let src_err = |p: &Path, reason: String| Error::Source {
            path: p.display().to_string(),
            reason,
        };
        let mut listing = MetaWriter::default();
        let (mut size, mut files, mut dirs, mut symlinks) = (0u64, 0u64, 0u64, 0u64);
        // Files with several names: (device, inode) -> the listing line of the first name.
        let mut seen_inodes: std::collections::HashMap<(u64, u64), u64> = Default::default();
        let mut line_no = 0u64;
        let mut xattr_buf = XattrBuffers::default();
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || keep(e.path().strip_prefix(root).unwrap_or(e.path())));
        for entry in walker {
            let entry = entry.map_err(|e| {
                let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                src_err(&p, e.io_error().map(|e| e.to_string()).unwrap_or_else(|| e.to_string()))
            })?;
            let path = entry.path();
            let md = std::fs::symlink_metadata(path).map_err(|e| src_err(path, e.to_string()))?;
            let rel = path.strip_prefix(root).unwrap_or(path);
            // Any name a filesystem allows, byte for byte: not UTF-8 goes in hex beside a lossy form.
            let (rel, raw_path) = crate::snapshot::text_and_raw(rel.as_os_str().as_bytes());
            let ft = md.file_type();
            if !(ft.is_dir() || ft.is_symlink() || ft.is_file()) {
                // Sockets, fifos and devices are not backed up; they are recreated by their owners.
                continue;
            }
            let mut e = TreeEntry {
                path: rel,
                entry_type: EntryType::File,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                mtime_nsec: md.mtime_nsec() as u32,
                target: None,
                content: None,
                raw_path,
                raw_target: None,
                link: None,
                xattrs: xattr_buf
                    .read(path)
                    .map_err(|err| src_err(path, format!("extended attributes: {err}")))?,
            };
            if ft.is_dir() {
                e.entry_type = EntryType::Dir;
                dirs += 1;
            } else if ft.is_symlink() {
                e.entry_type = EntryType::Symlink;
                let t = std::fs::read_link(path).map_err(|err| src_err(path, err.to_string()))?;
                let (t, raw) = crate::snapshot::text_and_raw(t.as_os_str().as_bytes());
                e.target = Some(t);
                e.raw_target = raw;
                symlinks += 1;
            } else {
                let first = (md.nlink() > 1)
                    .then(|| *seen_inodes.entry((md.dev(), md.ino())).or_insert(line_no))
                    .filter(|first| *first != line_no);
                if let Some(first) = first {
                    // Another name of a file already stored: restored as a hard link to it.
                    e.link = Some(first);
                } else {
                    let f = std::fs::File::open(path).map_err(|err| src_err(path, format!("cannot read: {err}")))?;
                    let c = self.store_reader(sink, f, &path.display().to_string())?;
                    size += c.size;
                    e.content = Some(c);
                }
                files += 1;
            }
            let mut line = serde_json::to_vec(&e).expect("entry serialises");
            line.push(b'\n');
            listing.write(&line, sink)?;
            line_no += 1;
        }
        Ok((listing.finish(sink)?, size, files, dirs, symlinks))
    }
}
