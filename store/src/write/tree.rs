//! The tree walk: a directory tree becomes a listing (one JSON line per entry, stored as a
//! `Meta` stream) and one content per regular file. Names are kept byte for byte, hard links as
//! links to the first name, extended attributes (POSIX ACLs, SELinux labels) with each entry.
//! Entries and bytes come from a [`TreeSource`]: this filesystem or another host's.

use std::path::Path;

use super::chunklist::MetaWriter;
use super::dedup::Sink;
use super::source::TreeSource;
use super::Backup;
use crate::error::Result;
use crate::snapshot::{ContentRef, EntryType};

impl Backup {
    pub(super) fn store_tree(
        &self,
        sink: &mut Sink,
        source: &dyn TreeSource,
        root: &Path,
        keep: &dyn Fn(&Path) -> bool,
        mut receiver: Option<&mut super::foreign::Receiver>,
    ) -> Result<(ContentRef, u64, u64, u64, u64)> {
        let mut listing = MetaWriter::default();
        let (mut size, mut files, mut dirs, mut symlinks) = (0u64, 0u64, 0u64, 0u64);
        // Files with several names: (device, inode) -> the listing line of the first name.
        let mut seen_inodes: std::collections::HashMap<(u64, u64), u64> = Default::default();
        for (line_no, s) in (0u64..).zip(source.entries(root, keep)?) {
            let s = s?;
            let mut e = s.entry;
            match e.entry_type {
                EntryType::Dir => dirs += 1,
                EntryType::Symlink => symlinks += 1,
                EntryType::File => {
                    let first = (s.nlink > 1)
                        .then(|| *seen_inodes.entry((s.dev, s.ino)).or_insert(line_no))
                        .filter(|first| *first != line_no);
                    if let Some(first) = first {
                        // Another name of a file already stored: restored as a hard link to it.
                        e.link = Some(first);
                    } else {
                        let rel = e.path_bytes().map_err(|m| crate::error::Error::Source {
                            path: e.path.clone(),
                            reason: m,
                        })?;
                        let foreign = match receiver.as_deref_mut() {
                            Some(r) => source.foreign(root, &rel, s.len, &mut |src| r.content(self, sink, src)),
                            None => None,
                        };
                        let c = match foreign {
                            Some(c) => c?,
                            None => {
                                let f = source.open(root, &rel)?;
                                let shown = root.join(&e.path);
                                self.store_reader(sink, f, &shown.display().to_string())?
                            }
                        };
                        size += c.size;
                        e.content = Some(c);
                    }
                    files += 1;
                }
            }
            let mut line = serde_json::to_vec(&e).expect("entry serialises");
            line.push(b'\n');
            listing.write(&line, sink)?;
        }
        Ok((listing.finish(sink)?, size, files, dirs, symlinks))
    }
}
