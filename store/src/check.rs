//! `cairn check`: is everything every snapshot needs present and intact?
//!
//! Without `--read-data` the check is structural and cheap: every pack trailer is read and
//! authenticated again and its size compared with the index, every manifest is decrypted, and
//! every chunk any snapshot references (through stored chunk lists and tree listings too) must be
//! in the index. With `--read-data` (or a subset of packs) every selected pack is read whole, its
//! hash compared with its name, and every blob in it decrypted, decompressed and verified; the
//! snapshots that reference a damaged blob are named.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::pack::{self, pack_path};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::BlobReader;
use crate::snapshot::{ContentRef, ItemKind};

/// How much pack data to read.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    #[default]
    None,
    All,
    /// Percentage of packs (chosen at random), 0 < p <= 100.
    Subset(f64),
}

/// Options for `cairn check`.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: ReadData,
}

/// What check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_verified: u64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Snapshots that cannot be fully restored.
    pub damaged_snapshots: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Repository {
    /// Checks the repository; problems go into the report, only failures to run are errors.
    pub fn check(&self, opts: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        // A shared lock: backups may run beside a check, an exclusive operation (prune) may not.
        let _lock = self.lock(false, "check")?;
        let mut report = CheckReport::default();
        let mut idx = crate::index::Index::open(&self.opts.cache_dir, &self.config.repo_id)?;
        let sync = idx.sync(self.backend.as_ref(), &self.keys)?;
        for (id, e) in &sync.unreadable {
            report.errors.push(format!("pack {id}: {e}"));
        }
        let leftovers = self.backend.list("tmp")?;
        if !leftovers.is_empty() {
            report.warnings.push(format!(
                "{} temporary file(s) in tmp/ from interrupted or running backups (removed by the next backup on their host)",
                leftovers.len()
            ));
        }

        // 1. Packs: trailer authenticates and matches the index; optionally read everything.
        let mut packs: Vec<(PackId, u64)> = Vec::new();
        for b in 0..=255u8 {
            packs.extend(idx.packs_with_prefix(b)?);
        }
        report.packs = packs.len() + sync.unreadable.len();
        let mut bad_blobs: HashSet<ChunkId> = HashSet::new();
        let selected: HashSet<PackId> = match opts.read_data {
            ReadData::None => HashSet::new(),
            ReadData::All => packs.iter().map(|p| p.0).collect(),
            ReadData::Subset(pct) => packs
                .iter()
                .filter(|_| rand::random::<f64>() * 100.0 < pct)
                .map(|p| p.0)
                .collect(),
        };
        let total_read: u64 = packs
            .iter()
            .filter(|p| selected.contains(&p.0))
            .map(|p| p.1)
            .sum();
        progress.start("check packs", Some(total_read));
        for (id, size) in &packs {
            let entries = idx.pack_entries(id)?;
            match self.backend.size(&pack_path(id)) {
                Ok(s) if s == *size => {}
                Ok(s) => {
                    report.errors.push(format!(
                        "pack {id}: size {s} differs from the {size} bytes indexed (truncated?)"
                    ));
                    bad_blobs.extend(entries.iter().map(|e| e.id));
                    continue;
                }
                Err(e) => {
                    report.errors.push(format!("pack {id}: {e}"));
                    bad_blobs.extend(entries.iter().map(|e| e.id));
                    continue;
                }
            }
            if let Err(e) = pack::read_trailer(self.backend.as_ref(), &self.keys, id) {
                report.errors.push(e.to_string());
                bad_blobs.extend(entries.iter().map(|e| e.id));
                continue;
            }
            if selected.contains(id) {
                report.packs_read += 1;
                self.read_pack(id, &entries, &mut report, &mut bad_blobs)?;
                progress.advance(*size);
            }
        }
        progress.finish();

        // 2. Snapshots: every referenced blob present (and not found damaged above).
        let reader = BlobReader::new(self, idx);
        for snap in self.snapshots()? {
            report.snapshots += 1;
            let snap = match snap {
                Ok(s) => s,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            let mut problems = Vec::new();
            for item in &snap.items {
                let mut contents: Vec<ContentRef> = Vec::new();
                match &item.kind {
                    ItemKind::Stream { content } => contents.push(content.clone()),
                    ItemKind::Tree { listing, .. } => {
                        contents.push(listing.clone());
                        match self.tree_entries(listing) {
                            Ok(entries) => {
                                contents.extend(entries.into_iter().filter_map(|e| e.content))
                            }
                            Err(e) => {
                                problems.push(format!("item {:?}: tree listing: {e}", item.name))
                            }
                        }
                    }
                }
                for c in &contents {
                    let missing = std::cell::Cell::new(0u64);
                    let damaged = std::cell::Cell::new(0u64);
                    let lookup_err = std::cell::RefCell::new(None);
                    let check_id = |id: &ChunkId| {
                        if bad_blobs.contains(id) {
                            damaged.set(damaged.get() + 1);
                        } else {
                            match reader.index.contains(id) {
                                Ok(true) => {}
                                Ok(false) => missing.set(missing.get() + 1),
                                Err(e) => *lookup_err.borrow_mut() = Some(e),
                            }
                        }
                    };
                    let walked = reader.for_each_leaf(c, &mut |id| check_id(id), &mut |r| {
                        check_id(&r.0);
                        Ok(())
                    });
                    if let Some(e) = lookup_err.into_inner() {
                        return Err(e);
                    }
                    let (missing, damaged) = (missing.get(), damaged.get());
                    if let Err(e) = walked {
                        problems.push(format!("item {:?}: chunk list unreadable: {e}", item.name));
                    }
                    if missing > 0 {
                        problems.push(format!("item {:?}: {missing} chunk(s) missing", item.name));
                    }
                    if damaged > 0 {
                        problems.push(format!("item {:?}: {damaged} chunk(s) damaged", item.name));
                    }
                }
            }
            if !problems.is_empty() {
                report.damaged_snapshots.push(snap.name.clone());
                for p in problems {
                    report.errors.push(format!("snapshot {:?}: {p}", snap.name));
                }
            }
        }
        Ok(report)
    }

    fn read_pack(
        &self,
        id: &PackId,
        entries: &[pack::PackEntry],
        report: &mut CheckReport,
        bad: &mut HashSet<ChunkId>,
    ) -> Result<()> {
        let data = match self.backend.read(&pack_path(id)) {
            Ok(d) => d,
            Err(e) => {
                report.errors.push(format!("pack {id}: {e}"));
                bad.extend(entries.iter().map(|e| e.id));
                return Ok(());
            }
        };
        if blake3::hash(&data).as_bytes() != id.as_bytes() {
            report.errors.push(format!(
                "pack {id}: content does not match its name (damaged or tampered)"
            ));
        }
        for e in entries {
            let range = e.offset as usize..(e.offset as usize + e.length as usize);
            let ok = data
                .get(range)
                .ok_or_else(|| "outside the file".to_string())
                .and_then(|b| {
                    crate::blob::decode(&self.keys, &e.id, b).map_err(|err| err.to_string())
                });
            match ok {
                Ok(_) => report.blobs_verified += 1,
                Err(why) => {
                    report
                        .errors
                        .push(format!("pack {id}: blob {}: {why}", e.id));
                    bad.insert(e.id);
                }
            }
        }
        Ok(())
    }
}
