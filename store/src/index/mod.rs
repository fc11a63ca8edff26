//! The blob index: which pack holds each blob, at which offset. It lives in SQLite on local disk
//! (`<cache dir>/<repo id>/index.sqlite`), outside the repository, because it is only a cache:
//! the pack trailers are the truth and [`Index::sync`] / [`Index::rebuild`] recreate it from them.
//! Keeping it out of the repository also keeps the repository free of plaintext metadata.
//!
//! SQLite keeps memory flat however large the repository grows: lookups go through its page cache
//! (bounded by `cache_size`), never through an in-memory map of all blobs. WAL mode lets several
//! backups on one host read while one writes. A blob may sit in more than one pack (two concurrent
//! backups can both store it); every copy is indexed, so losing one pack does not lose the blob.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};

use crate::blob::BlobKind;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, RepoId};
use crate::pack::{self, FinishedPack, PackEntry};
use crate::sketch::Sketch;
use crate::storage::ObjectStore;

/// Bumped whenever the schema changes; an index of another version is simply rebuilt.
const SCHEMA_VERSION: i64 = 4;

fn wal(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Left beside the cache by a run that met damage in it, so the next open starts afresh.
fn damage_flag(path: &Path) -> PathBuf {
    wal(path, ".damaged")
}

fn is_damage(e: &Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e, Error::Index { source, .. }
        if matches!(source.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase)))
}

/// An index error; damage also flags the cache, so the next open rebuilds it.
fn index_error(path: &Path, source: rusqlite::Error) -> Error {
    let e = Error::Index {
        path: path.into(),
        source,
    };
    if is_damage(&e) {
        let _ = std::fs::write(damage_flag(path), b"");
    }
    e
}

/// Moves a damaged cache (and its WAL files) aside; returns where it went.
fn set_aside(path: &Path) -> Result<PathBuf> {
    let aside = wal(path, &format!(".damaged-{}", crate::util::now_unix()));
    for (from, to) in [
        (path.to_path_buf(), aside.clone()),
        (wal(path, "-wal"), wal(&aside, "-wal")),
        (wal(path, "-shm"), wal(&aside, "-shm")),
    ] {
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path: from, source: e }),
            _ => {}
        }
    }
    let _ = std::fs::remove_file(damage_flag(path));
    Ok(aside)
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// Deltas to decode to read it (0: stored whole).
    pub depth: u8,
}

/// What a sync found.
#[derive(Debug, Default, Clone)]
pub struct SyncStats {
    pub packs_added: usize,
    pub packs_removed: usize,
    /// Packs whose trailer could not be read or authenticated; they are left out of the index
    /// (so nothing dedups against them) and `cairn check` reports them.
    pub unreadable: Vec<(PackId, String)>,
}

/// One connection to the index cache. Open one per thread.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) the cache for `repo_id` under `cache_dir`. A cache that is
    /// damaged (not a database, malformed, or flagged by an earlier run that met damage) is set
    /// aside as `index.sqlite.damaged-<time>` with a warning and started afresh: the next sync
    /// rebuilds it from the pack trailers, so no damage to the cache stops a command.
    pub fn open(cache_dir: &Path, repo_id: &RepoId) -> Result<Self> {
        let dir = cache_dir.join(repo_id.to_hex());
        crate::util::create_private_dir(&dir)?;
        let path = dir.join("index.sqlite");
        let flagged = damage_flag(&path).exists();
        if !flagged {
            match Self::open_path(&path).and_then(|i| i.probe().map(|()| i)) {
                Err(e) if is_damage(&e) => {}
                r => return r,
            }
        }
        let aside = set_aside(&path)?;
        eprintln!(
            "warning: the index cache {} was damaged; moved it to {} and rebuilding it from the packs",
            path.display(),
            aside.display()
        );
        Self::open_path(&path)
    }

    /// Deletes the cache for `repo_id` without opening it (`cairn repair index`).
    pub fn discard(cache_dir: &Path, repo_id: &RepoId) -> Result<()> {
        let path = cache_dir.join(repo_id.to_hex()).join("index.sqlite");
        for p in [path.clone(), wal(&path, "-wal"), wal(&path, "-shm"), damage_flag(&path)] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path: p, source: e }),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a little of every table, so a file that is not a database or whose schema pages are
    /// damaged is found at once.
    fn probe(&self) -> Result<()> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM packs), (SELECT max(id) FROM blobs), (SELECT max(id) FROM bases)",
                [],
                |_| Ok(()),
            )
            .map_err(|e| self.err(e))
    }

    pub fn open_path(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| index_error(path, source))?;
        crate::util::make_private(path)?;
        let idx = Self {
            conn,
            path: path.into(),
        };
        idx.setup().map_err(|source| index_error(path, source))?;
        Ok(idx)
    }

    /// Another connection to the same file, for another thread.
    pub fn reopen(&self) -> Result<Self> {
        Self::open_path(&self.path)
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        index_error(&self.path, source)
    }

    fn setup(&self) -> rusqlite::Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(60))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is safe against corruption in WAL mode; a lost last transaction after a power
        // failure is harmless because sync() finds the pack again.
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.pragma_update(None, "cache_size", -16_000)?; // 16 MB of page cache at most
        let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        // Migrations run in an immediate transaction so two processes cannot race them. The index
        // is a cache, so any older schema is dropped and rebuilt from the packs by the next sync.
        let mut c2 = Connection::open(&self.path)?;
        c2.busy_timeout(Duration::from_secs(60))?;
        let tx = c2.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            tx.execute_batch(
                "DROP TABLE IF EXISTS blobs; DROP TABLE IF EXISTS packs; DROP TABLE IF EXISTS bases;
                 DROP TABLE IF EXISTS sketches;
                 CREATE TABLE packs(pid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
                 CREATE TABLE blobs(id BLOB NOT NULL, pid INTEGER NOT NULL, kind INTEGER NOT NULL,
                    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_len INTEGER NOT NULL,
                    depth INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY(id, pid)) WITHOUT ROWID;
                 CREATE INDEX blobs_by_pack ON blobs(pid);
                 CREATE TABLE bases(id BLOB NOT NULL, pid INTEGER NOT NULL, base BLOB NOT NULL,
                    PRIMARY KEY(id, pid, base)) WITHOUT ROWID;
                 CREATE INDEX bases_by_pack ON bases(pid);
                 CREATE INDEX bases_by_base ON bases(base);
                 CREATE TABLE sketches(id BLOB NOT NULL, pos INTEGER NOT NULL, sf INTEGER NOT NULL,
                    PRIMARY KEY(id, pos)) WITHOUT ROWID;
                 CREATE INDEX sketches_by_sf ON sketches(sf, pos);",
            )?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()
    }

    /// Every indexed copy of a blob, the shortest delta chain first.
    pub fn locations(&self, id: &ChunkId) -> Result<Vec<BlobLocation>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT p.id, b.kind, b.offset, b.length, b.raw_len, b.depth FROM blobs b JOIN packs p ON p.pid = b.pid
                 WHERE b.id = ?1 ORDER BY b.depth, p.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([&id.0[..]], |r| {
                let pack: Vec<u8> = r.get(0)?;
                Ok(BlobLocation {
                    pack: PackId::from_slice(&pack).unwrap_or(PackId([0; 32])),
                    kind: BlobKind::from_u8(r.get::<_, u8>(1)?).unwrap_or(BlobKind::Data),
                    offset: r.get(2)?,
                    length: r.get(3)?,
                    raw_len: r.get(4)?,
                    depth: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// Replaces what the index says of a pack by what its trailer says.
    pub fn replace_pack(&mut self, id: &PackId, size: u64, entries: &[PackEntry]) -> Result<()> {
        self.remove_pack(id)?;
        self.add_entries(id, size, entries)
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1 LIMIT 1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// Records a published pack and its blobs in one transaction.
    pub fn add_pack(&mut self, pack: &FinishedPack) -> Result<()> {
        self.add_entries(&pack.id, pack.size, &pack.entries)
    }

    /// Runs `f` in an immediate (write-locking) transaction and commits it.
    fn write<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>) -> Result<T> {
        let path = self.path.clone();
        let e = |source| index_error(&path, source);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let out = f(&tx).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(out)
    }

    fn add_entries(&mut self, id: &PackId, size: u64, entries: &[PackEntry]) -> Result<()> {
        self.write(|tx| {
            tx.execute("INSERT OR IGNORE INTO packs(id, size) VALUES (?1, ?2)", params![&id.0[..], size as i64])?;
            let pid: i64 = tx.query_row("SELECT pid FROM packs WHERE id = ?1", [&id.0[..]], |r| r.get(0))?;
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs(id, pid, kind, offset, length, raw_len, depth) VALUES (?1,?2,?3,?4,?5,?6,?7)",
            )?;
            let mut sb = tx.prepare_cached("INSERT OR IGNORE INTO bases(id, pid, base) VALUES (?1, ?2, ?3)")?;
            let mut ss = tx.prepare_cached("INSERT OR IGNORE INTO sketches(id, pos, sf) VALUES (?1, ?2, ?3)")?;
            for b in entries {
                st.execute(params![&b.id.0[..], pid, b.kind as u8, b.offset, b.length, b.raw_len, b.depth])?;
                for base in &b.bases {
                    sb.execute(params![&b.id.0[..], pid, &base.0[..]])?;
                }
                if !b.sketch.is_empty() {
                    for (pos, sf) in b.sketch.0.iter().enumerate() {
                        ss.execute(params![&b.id.0[..], pos, sf])?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Forgets a pack and its blobs.
    pub fn remove_pack(&mut self, id: &PackId) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM blobs WHERE pid = (SELECT pid FROM packs WHERE id = ?1)",
                [&id.0[..]],
            )?;
            tx.execute(
                "DELETE FROM bases WHERE pid = (SELECT pid FROM packs WHERE id = ?1)",
                [&id.0[..]],
            )?;
            tx.execute("DELETE FROM packs WHERE id = ?1", [&id.0[..]])?;
            tx.execute("DELETE FROM sketches WHERE id NOT IN (SELECT id FROM blobs)", [])?;
            Ok(())
        })
    }

    /// Every indexed pack and its size, by id.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, size FROM packs ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, size) = r.map_err(|e| self.err(e))?;
            if let Some(id) = PackId::from_slice(&id) {
                out.push((id, size as u64));
            }
        }
        Ok(out)
    }

    /// The entries recorded for one pack.
    pub fn pack_entries(&self, id: &PackId) -> Result<Vec<PackEntry>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT b.id, b.kind, b.offset, b.length, b.raw_len, b.depth, b.pid FROM blobs b JOIN packs p ON p.pid = b.pid
                 WHERE p.id = ?1 ORDER BY b.offset",
            )
            .map_err(|e| self.err(e))?;
        let mut pid = None;
        let rows = st
            .query_map([&id.0[..]], |r| {
                pid = Some(r.get::<_, i64>(6)?);
                Ok(PackEntry {
                    id: ChunkId::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or(ChunkId([0; 32])),
                    kind: BlobKind::from_u8(r.get::<_, u8>(1)?).unwrap_or(BlobKind::Data),
                    offset: r.get(2)?,
                    length: r.get(3)?,
                    raw_len: r.get(4)?,
                    bases: Vec::new(),
                    depth: r.get(5)?,
                    sketch: Sketch::default(),
                })
            })
            .map_err(|e| self.err(e))?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))?;
        for e in out.iter_mut() {
            if let (BlobKind::Delta, Some(pid)) = (e.kind, pid) {
                e.bases = self.bases_in(&e.id, pid)?;
            }
            e.sketch = self.sketch(&e.id)?;
        }
        Ok(out)
    }

    /// Whether any indexed chunk has a sketch.
    pub fn has_sketches(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM sketches)", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// A chunk's resemblance sketch as its pack's trailer recorded it (empty if none did).
    pub fn sketch(&self, id: &ChunkId) -> Result<Sketch> {
        let mut st = self
            .conn
            .prepare_cached("SELECT pos, sf FROM sketches WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([&id.0[..]], |r| Ok((r.get::<_, usize>(0)?, r.get::<_, u32>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut sk = Sketch::default();
        for r in rows {
            let (pos, sf) = r.map_err(|e| self.err(e))?;
            if let Some(f) = sk.0.get_mut(pos) {
                *f = sf;
            }
        }
        Ok(sk)
    }

    /// Stored chunks sharing super-features with `sketch`, the most shared first (at most
    /// `limit`). Memory follows the answer, not the repository: SQLite looks each feature up in
    /// its own index.
    pub fn similar(&self, sketch: &Sketch, limit: usize) -> Result<Vec<(ChunkId, usize)>> {
        // One statement for all six features (SQLite looks each (sf, pos) term up in the index).
        const _: () = assert!(crate::sketch::SUPER_FEATURES == 6);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, count(*) FROM sketches WHERE (sf = ?1 AND pos = 0) OR (sf = ?2 AND pos = 1)
                 OR (sf = ?3 AND pos = 2) OR (sf = ?4 AND pos = 3) OR (sf = ?5 AND pos = 4)
                 OR (sf = ?6 AND pos = 5) GROUP BY id ORDER BY count(*) DESC LIMIT ?7",
            )
            .map_err(|e| self.err(e))?;
        let f = &sketch.0;
        let rows = st
            .query_map(params![f[0], f[1], f[2], f[3], f[4], f[5], limit], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, usize>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut found: Vec<(ChunkId, usize)> = Vec::new();
        for r in rows {
            let (id, n) = r.map_err(|e| self.err(e))?;
            if let Some(id) = ChunkId::from_slice(&id) {
                found.push((id, n));
            }
        }
        Ok(found)
    }

    /// The bases of the copy of a blob that readers take (the shortest delta chain, as
    /// [`Index::locations`] orders them): empty when that copy is stored whole. A chunk may be
    /// stored more than once, differently (prune's keyframes store the newest version whole and
    /// the one before as a delta against it, beside the old copies until those packs go).
    pub fn bases(&self, id: &ChunkId) -> Result<Vec<ChunkId>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT base FROM bases WHERE id = ?1 AND pid = (SELECT b.pid FROM blobs b JOIN packs p ON p.pid = b.pid
                   WHERE b.id = ?1 ORDER BY b.depth, p.id LIMIT 1)",
            )
            .map_err(|e| self.err(e))?;
        self.collect_ids(&mut st, params![&id.0[..]])
    }

    /// The bases of every stored copy of a blob: what must stay for all of them to decode.
    pub fn all_bases(&self, id: &ChunkId) -> Result<Vec<ChunkId>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT DISTINCT base FROM bases WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        self.collect_ids(&mut st, params![&id.0[..]])
    }

    /// Every copy of a blob stored as a delta: its pack and its bases.
    pub fn delta_copies(&self, id: &ChunkId) -> Result<Vec<(PackId, Vec<ChunkId>)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT p.id, b.pid FROM blobs b JOIN packs p ON p.pid = b.pid WHERE b.id = ?1 AND b.kind = ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![&id.0[..], BlobKind::Delta as u8], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for (pack, pid) in rows {
            if let Some(pack) = PackId::from_slice(&pack) {
                out.push((pack, self.bases_in(id, pid)?));
            }
        }
        Ok(out)
    }

    fn bases_in(&self, id: &ChunkId, pid: i64) -> Result<Vec<ChunkId>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT base FROM bases WHERE id = ?1 AND pid = ?2")
            .map_err(|e| self.err(e))?;
        self.collect_ids(&mut st, params![&id.0[..], pid])
    }

    fn collect_ids(&self, st: &mut rusqlite::CachedStatement<'_>, p: impl rusqlite::Params) -> Result<Vec<ChunkId>> {
        let rows = st.query_map(p, |r| r.get::<_, Vec<u8>>(0)).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(b) = ChunkId::from_slice(&r.map_err(|e| self.err(e))?) {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Every blob that cannot be read because it is in `damaged`, or is a delta whose chain leads
    /// to a damaged blob or to a base no pack holds. Computed in SQLite (a recursive query over
    /// the `bases` table), so memory follows the damage, not the repository.
    pub fn broken_closure(
        &self,
        damaged: &std::collections::HashSet<ChunkId>,
    ) -> Result<std::collections::HashSet<ChunkId>> {
        let e = |source| index_error(&self.path, source);
        self.conn
            .execute_batch("CREATE TEMP TABLE IF NOT EXISTS damaged(id BLOB PRIMARY KEY); DELETE FROM damaged;")
            .map_err(e)?;
        {
            let mut st = self
                .conn
                .prepare_cached("INSERT OR IGNORE INTO damaged(id) VALUES (?1)")
                .map_err(e)?;
            for id in damaged {
                st.execute([&id.0[..]]).map_err(e)?;
            }
        }
        let mut st = self
            .conn
            .prepare(
                "WITH RECURSIVE broken(id) AS (
                    SELECT id FROM damaged
                    UNION SELECT b.id FROM bases b WHERE NOT EXISTS (SELECT 1 FROM blobs x WHERE x.id = b.base)
                    UNION SELECT b.id FROM bases b JOIN broken k ON b.base = k.id
                 ) SELECT id FROM broken",
            )
            .map_err(e)?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0)).map_err(e)?;
        let mut out = std::collections::HashSet::new();
        for r in rows {
            if let Some(id) = ChunkId::from_slice(&r.map_err(e)?) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// The longest delta chain any indexed blob needs (0 without deltas).
    pub fn deepest_chain(&self) -> Result<u8> {
        self.conn
            .query_row("SELECT coalesce(max(depth), 0) FROM blobs", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Brings the cache in line with the packs in the repository: indexes packs it has not seen
    /// (written by a crashed run, another process or another host) and drops packs that are gone.
    /// One listing of `packs/` (one paginated listing on an object store), not one per directory.
    pub fn sync(&mut self, store: &dyn ObjectStore, keys: &Keys) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        // The index first, then the listing: a pack another process publishes (and indexes) in
        // between is then merely found in the listing again, never taken for deleted.
        let known: std::collections::HashSet<PackId> = self.packs()?.into_iter().map(|k| k.0).collect();
        let listed: std::collections::HashSet<PackId> = store
            .list("packs/")?
            .iter()
            .filter_map(|o| o.name.rsplit('/').next().and_then(pack::parse_pack_name))
            .collect();
        for id in &listed {
            if !known.contains(id) {
                match pack::read_trailer(store, keys, id) {
                    Ok((size, entries)) => {
                        self.add_entries(id, size, &entries)?;
                        stats.packs_added += 1;
                    }
                    Err(e) => stats.unreadable.push((*id, e.to_string())),
                }
            }
        }
        for id in known.difference(&listed) {
            self.remove_pack(id)?;
            stats.packs_removed += 1;
        }
        Ok(stats)
    }

    /// Throws the cache away and reads every pack trailer again.
    pub fn rebuild(&mut self, store: &dyn ObjectStore, keys: &Keys) -> Result<SyncStats> {
        self.conn
            .execute_batch("DELETE FROM blobs; DELETE FROM packs; DELETE FROM bases;")
            .map_err(|e| self.err(e))?;
        self.sync(store, keys)
    }
}

#[cfg(test)]
mod tests;
