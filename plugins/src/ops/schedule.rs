//! Scheduled backups: cron expressions, the system cron entry, and one scheduled run.
//!
//! `cso_backupnrestore -b scheduledbackup -z 0-13-*-*-0 [-m yes]` (or `cairn schedule install`)
//! writes `/etc/cron.d/cairn` (`CAIRN_CRON_DIR` overrides the directory) with one line that
//! runs `cairn schedule fire`. Each fired run backs the platform up as `DAILY/<UTC time>`,
//! applies the configured retention to the scheduled snapshots, and appends what happened to
//! `<state_dir>/schedule.log`; a run that finds the previous one still going (it holds the lock
//! on `<state_dir>/schedule.lock`) skips and says so there. `cairn schedule run`
//! is the same without cron: a foreground loop firing on the expression (UTC).

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_store::{format_bytes, Policy, PruneOptions, Repository, Status};

use crate::config::{Loaded, RetentionConfig};
use crate::controller::{self, BackupRequest};

/// The tag of scheduled backups; `[retention]` applies to these alone.
pub const SCHEDULED_TAG: &str = "scheduled";

/// A five-field cron expression: minute, hour, day of month, month, day of week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day of month and day of week both restricted: cron fires when either matches.
    either_day: bool,
    fields: [String; 5],
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

impl CronExpr {
    /// Parses `m h dom mon dow` (spaces, as in crontab) or the operator tool's `m-h-dom-mon-dow`
    /// (dashes; there a field can be a number, `*`, `*/step` or a list `a,b`, since `-` is
    /// taken: ranges need the space form).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let dashed = !s.contains(char::is_whitespace);
        let parts: Vec<&str> = if dashed {
            s.split('-').collect()
        } else {
            s.split_whitespace().collect()
        };
        if parts.len() != 5 {
            return Err(format!(
                "{s:?} has {} fields; a schedule is minute-hour-day_of_month-month-day_of_week, e.g. 0-13-*-*-0 \
                 (or quoted with spaces and ranges: '0 13 * * 1-5')",
                parts.len()
            ));
        }
        let mut sets = [0u64; 5];
        for (i, (p, (name, lo, hi))) in parts.iter().zip(FIELDS).enumerate() {
            sets[i] = field(p, name, lo, hi)?;
        }
        // Day of week 7 is Sunday, as 0.
        let weekdays = (sets[4] | (sets[4] >> 7)) as u8 & 0x7f;
        Ok(CronExpr {
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            months: sets[3] as u16,
            weekdays,
            // As cron does: a field starting with `*` (also `*/2`) leaves the day unrestricted.
            either_day: !parts[2].starts_with('*') && !parts[4].starts_with('*'),
            fields: std::array::from_fn(|i| parts[i].to_string()),
        })
    }

    /// The expression as a crontab line's first five fields.
    pub fn crontab(&self) -> String {
        self.fields.join(" ")
    }

    /// Does the minute starting at `unix` (UTC) match?
    pub fn matches(&self, unix: i64) -> bool {
        let c = cairn_store::civil(unix);
        let bit = |set: u64, v: u32| set >> v & 1 == 1;
        let dom = bit(u64::from(self.days), c.day);
        let dow = bit(u64::from(self.weekdays), c.weekday);
        let day = if self.either_day { dom || dow } else { dom && dow };
        bit(self.minutes, c.minute) && bit(u64::from(self.hours), c.hour) && bit(u64::from(self.months), c.month) && day
    }

    /// The first matching minute after `unix`, within the next five years.
    pub fn next_after(&self, unix: i64) -> Option<i64> {
        let mut t = (unix.div_euclid(60) + 1) * 60;
        let end = t + 5 * 366 * 86_400;
        while t < end {
            if self.matches(t) {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

/// One field: `*`, `*/n`, `a`, `a-b`, `a-b/n`, or a list of those; a bit set of the values.
fn field(text: &str, name: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let bad = |why: String| format!("{name} field {text:?}: {why} (allowed: {lo}-{hi}, *, */step, lists a,b)");
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| bad(format!("step {s:?} is not a number")))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad("step 0".into()));
        }
        let num = |v: &str| -> Result<u32, String> {
            let n: u32 = v.parse().map_err(|_| bad(format!("{v:?} is not a number")))?;
            if n < lo || n > hi {
                return Err(bad(format!("{n} is out of range")));
            }
            Ok(n)
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if part.contains('/') => {
                    return Err(bad(format!(
                        "a step needs * or a range before it, as in */{step} or {r}-{hi}/{step}"
                    )))
                }
                None => {
                    let n = num(r)?;
                    (n, n)
                }
            },
        };
        if a > b {
            return Err(bad(format!("range {a}-{b} runs backwards")));
        }
        for v in (a..=b).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

/// Where cron entries go (`CAIRN_CRON_DIR`, else `/etc/cron.d`).
pub fn cron_dir() -> PathBuf {
    std::env::var_os("CAIRN_CRON_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/cron.d"))
}

/// The cron file Cairn owns in `dir` (cron ignores names with dots, so it has none).
pub fn cron_file(dir: &Path) -> PathBuf {
    dir.join("cairn")
}

/// Writes (or replaces, atomically) the cron entry in `dir` that fires `cairn schedule fire`.
pub fn install(
    dir: &Path,
    expr: &CronExpr,
    cairn: &Path,
    config: &Path,
    maintenance: bool,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let text = format!(
        "# Cairn scheduled backup, written by `cso_backupnrestore -b scheduledbackup` / `cairn schedule install`.\n\
         # Replace it the same way; remove it with `cairn schedule remove`. Runs log to the state dir's schedule.log.\n\
         SHELL=/bin/sh\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         {} root {} --config {} schedule fire{}\n",
        expr.crontab(),
        shell_quote(&cairn.to_string_lossy()),
        shell_quote(&config.to_string_lossy()),
        if maintenance { " --maintenance" } else { "" }
    );
    let tmp = dir.join(".cairn.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    let path = cron_file(dir);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes the cron entry from `dir`; `Ok(false)` if there was none.
pub fn remove(dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(cron_file(dir)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Appends a timestamped line to `<state_dir>/schedule.log`.
pub fn log(state_dir: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state_dir.join("schedule.log"))?;
    writeln!(
        f,
        "{} [{}] {line}",
        cairn_store::format_rfc3339(cairn_store::now_unix()),
        std::process::id()
    )
}

/// Held while a scheduled run goes: an exclusive lock on `<state_dir>/schedule.lock`, which
/// also names the holder's pid. The kernel drops the lock when the process ends, however it
/// ends, so a crashed run never blocks the next one and a reused pid means nothing.
pub struct RunGuard {
    _file: std::fs::File,
}

impl RunGuard {
    /// Takes the run slot, or returns the pid written by the live run that holds it (0 if it
    /// has not written it yet).
    pub fn acquire(state_dir: &Path) -> std::io::Result<Result<RunGuard, u32>> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        let path = state_dir.join("schedule.lock");
        let mut file = std::fs::OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{}", std::process::id())?;
                Ok(Ok(RunGuard { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                Ok(Err(pid))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// The name of a scheduled backup started at `unix`.
pub fn run_name(unix: i64) -> String {
    format!("DAILY/{}", cairn_store::format_rfc3339(unix))
}

/// One scheduled run, once its slot is taken ([`RunGuard`]): backs the platform up as `name`
/// (tagged [`SCHEDULED_TAG`]), then applies `[retention]`. Each step's outcome goes to `log`.
/// Returns whether the snapshot is complete; a failed one leaves retention for the next run.
pub fn run_once(
    rt: &tokio::runtime::Runtime,
    repo: &Repository,
    loaded: &Loaded,
    name: &str,
    maintenance: bool,
    log: &dyn Fn(&str),
) -> crate::Result<bool> {
    let req = BackupRequest {
        name: Some(name.to_string()),
        tags: vec![SCHEDULED_TAG.into()],
        plugins: None,
        maintenance,
        ..Default::default()
    };
    let (snap, _) = rt.block_on(controller::backup(repo, loaded, &req))?;
    if let Status::Failed { reason } = &snap.status {
        log(&format!("FAILED {name}: {reason}"));
        return Ok(false);
    }
    log(&format!(
        "done {name}: complete, {} logical, {} added",
        format_bytes(snap.size()),
        format_bytes(snap.stats.bytes_added)
    ));
    if let Some(r) = &loaded.config.retention {
        apply_retention(repo, r, log)?;
    }
    Ok(true)
}

/// `[retention]` after a scheduled backup: its policy on the scheduled snapshots alone (manual,
/// safety and other hosts' snapshots are not the schedule's to remove), the newest
/// `keep_safety` safety snapshots, then a prune unless `prune = false`.
pub fn apply_retention(repo: &Repository, r: &RetentionConfig, log: &dyn Fn(&str)) -> crate::Result<()> {
    let decisions = repo.forget_by_policy(&r.policy, false, Some(SCHEDULED_TAG))?;
    let gone: Vec<&str> = decisions.iter().filter(|d| !d.keep).map(|d| d.name.as_str()).collect();
    log(&format!(
        "retention: forgot {} snapshot(s){}",
        gone.len(),
        if gone.is_empty() {
            String::new()
        } else {
            format!(": {}", gone.join(", "))
        }
    ));
    if r.keep_safety > 0 {
        let safety = Policy {
            last: r.keep_safety,
            ..Default::default()
        };
        let decisions = repo.forget_by_policy(&safety, false, Some("safety"))?;
        let gone: Vec<&str> = decisions.iter().filter(|d| !d.keep).map(|d| d.name.as_str()).collect();
        if !gone.is_empty() {
            log(&format!(
                "retention: forgot {} safety snapshot(s) beyond the newest {}: {}",
                gone.len(),
                r.keep_safety,
                gone.join(", ")
            ));
        }
    }
    if r.prune {
        let p = repo.prune(&PruneOptions::default(), &cairn_store::NoProgress)?;
        log(&format!(
            "prune: deleted {} pack(s), marked {} for a later prune, repacked {}, {} -> {}",
            p.packs_deleted,
            p.packs_marked,
            p.packs_repacked,
            format_bytes(p.bytes_before),
            format_bytes(p.bytes_after)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(text: &str) -> Result<RetentionConfig, String> {
        toml::from_str::<RetentionConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn retention_reads_the_same_policy_as_forget_with_its_own_two_settings() {
        let r = retention("keep_daily = 7\nkeep_within = \"2d\"\nkeep_tags = [\"x\"]\n").unwrap();
        assert_eq!(
            r.policy,
            Policy {
                daily: 7,
                within: Some(2 * 86400),
                tags: vec!["x".into()],
                ..Default::default()
            }
        );
        assert!(r.prune, "prune defaults to true");
        assert_eq!(r.keep_safety, 5);
        let r = retention("keep_last = 1\nprune = false\nkeep_safety = 0\n").unwrap();
        assert!(!r.prune);
        assert_eq!(r.keep_safety, 0);
        for (bad, says) in [
            ("prune = true\n", "no keep_* rule"),
            ("keep_last = 1\nprune = 3\n", "prune"),
            ("keep_last = 1\nkeep_safety = -1\n", "keep_safety"),
            ("keep_last = 1\nkeep_within = \"7x\"\n", "keep_within"),
            ("keep_last = 1\nkeep_lsat = 2\n", "keep_lsat"),
        ] {
            let e = retention(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_state_dir_log_and_lock_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/sub");
        log(&state, "hello").unwrap();
        let _g = RunGuard::acquire(&state).unwrap().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&state.join("schedule.log")), 0o600);
        assert_eq!(mode(&state.join("schedule.lock")), 0o600);
    }

    /// 2026-11-22 (a Sunday) 13:00 UTC.
    const SUN_1300: i64 = 1_795_352_400;

    #[test]
    fn parses_both_forms() {
        let e = CronExpr::parse("0-13-*-*-0").unwrap();
        assert_eq!(e.crontab(), "0 13 * * 0");
        assert!(e.matches(SUN_1300));
        assert!(!e.matches(SUN_1300 + 60));
        assert!(!e.matches(SUN_1300 + 86_400));
        assert_eq!(e.next_after(SUN_1300), Some(SUN_1300 + 7 * 86_400));
        assert_eq!(e.next_after(SUN_1300 - 1), Some(SUN_1300));
        let e = CronExpr::parse("*/15 9-17 * * 1-5").unwrap();
        assert_eq!(e.next_after(SUN_1300), Some(SUN_1300 + 86_400 - 4 * 3600));
        let e = CronExpr::parse("30-2-1,15-*-*").unwrap();
        assert!(e.matches(SUN_1300 - 13 * 3600 - 21 * 86_400 + 2 * 3600 + 1800)); // 2026-11-01 02:30
                                                                                  // Sunday as 7; day of month or day of week when both are given.
        assert!(CronExpr::parse("0 13 * * 7").unwrap().matches(SUN_1300));
        assert!(CronExpr::parse("0 13 1 * 0").unwrap().matches(SUN_1300));
        // `*/2` for the day of month leaves it unrestricted: only Mondays match (as in cron).
        let e = CronExpr::parse("0 13 */2 * 1").unwrap();
        assert!(!e.matches(SUN_1300) && e.matches(SUN_1300 + 86_400));
    }

    #[test]
    fn refuses_bad_fields_naming_them() {
        for (expr, want) in [
            ("0-25-*-*-0", "hour field \"25\": 25 is out of range"),
            ("60-1-*-*-*", "minute field"),
            ("0-13-0-*-*", "day of month field"),
            ("0-13-*-13-*", "month field"),
            ("0-13-*-*-8", "day of week field"),
            ("0-13-*-*", "has 4 fields"),
            ("0 13 * * 5-1", "runs backwards"),
            ("x-13-*-*-0", "\"x\" is not a number"),
            ("*/0 * * * *", "step 0"),
            ("5/15 * * * *", "a step needs * or a range"),
        ] {
            let e = CronExpr::parse(expr).unwrap_err();
            assert!(e.contains(want), "{expr}: {e}");
        }
    }

    #[test]
    fn cron_file_round_trip_and_run_slot() {
        let dir = tempfile::tempdir().unwrap();
        let cron = dir.path().join("cron.d");
        let e = CronExpr::parse("0-13-*-*-0").unwrap();
        let p = install(
            &cron,
            &e,
            Path::new("/usr/bin/cairn"),
            Path::new("/etc/cairn/cairn.toml"),
            true,
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains(
                "\n0 13 * * 0 root /usr/bin/cairn --config /etc/cairn/cairn.toml schedule fire --maintenance\n"
            ),
            "{text}"
        );
        install(
            &cron,
            &CronExpr::parse("5 1 * * *").unwrap(),
            Path::new("/usr/bin/cairn"),
            Path::new("/c"),
            false,
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\n5 1 * * * root") && !text.contains("13 * * 0"),
            "{text}"
        );
        assert!(remove(&cron).unwrap());
        assert!(!remove(&cron).unwrap());

        let state = dir.path().join("state");
        let g = RunGuard::acquire(&state).unwrap().unwrap();
        assert_eq!(RunGuard::acquire(&state).unwrap().err(), Some(std::process::id()));
        drop(g);
        // Another test thread's child, between its fork and exec, may hold a copy of the
        // descriptor (and with it the lock) for a moment.
        let free_soon = || {
            (0..100).any(|_| {
                let ok = RunGuard::acquire(&state).unwrap().is_ok();
                if !ok {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                ok
            })
        };
        assert!(free_soon(), "a finished run's slot is free again");
        // The guard taken just now was dropped without unlocking: the lock goes with the file.
        assert!(free_soon(), "a dead run's slot is taken over");
        assert_eq!(run_name(SUN_1300), "DAILY/2026-11-22T13:00:00Z");
    }
}
