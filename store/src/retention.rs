//! Retention policies: which snapshots `cairn forget` keeps, and why.
//!
//! The rules follow the ones operators know from restic and borg. Snapshots are walked newest
//! first; `last N` keeps the N newest; `hourly/daily/weekly/monthly/yearly N` keep the newest
//! snapshot of each of the N most recent hours/days/ISO weeks (Monday to Sunday)/months/years
//! that have one; `within D` keeps everything up to D older than the newest snapshot; `tags`
//! keeps every snapshot carrying one of them. A snapshot is kept if any rule keeps it, and each
//! kept snapshot lists every rule that did. Failed snapshots are never kept (and never fill a
//! bucket). Time is UTC and comes from the snapshots, not the clock, so a decision is the same
//! whenever it is made.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::util::civil_from_days;

/// What to keep. An empty policy keeps nothing and is refused by `forget`. The one shape of a
/// retention policy: `cairn forget`'s flags build it, and a configuration's `[retention]` reads
/// into it under the same names (`keep_last = 7`, `keep_within = "30d"`, `keep_tags = [..]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename(deserialize = "keep_last"))]
    pub last: u32,
    #[serde(default, rename(deserialize = "keep_hourly"))]
    pub hourly: u32,
    #[serde(default, rename(deserialize = "keep_daily"))]
    pub daily: u32,
    #[serde(default, rename(deserialize = "keep_weekly"))]
    pub weekly: u32,
    #[serde(default, rename(deserialize = "keep_monthly"))]
    pub monthly: u32,
    #[serde(default, rename(deserialize = "keep_yearly"))]
    pub yearly: u32,
    /// Seconds before the newest snapshot within which everything is kept.
    #[serde(default, rename(deserialize = "keep_within"), deserialize_with = "within_text")]
    pub within: Option<i64>,
    #[serde(default, rename(deserialize = "keep_tags"))]
    pub tags: Vec<String>,
}

/// `keep_within` as a duration text (`30d`, `1y6m`).
fn within_text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("keep_within: {e}")))
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub time: i64,
    pub tags: Vec<String>,
    pub complete: bool,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub name: String,
    pub time: i64,
    pub keep: bool,
    /// Why it is kept (`daily 2026-11-20`, `last 3`, `tag safety`), or why it goes.
    pub reasons: Vec<String>,
}

impl Repository {
    /// Applies a policy to every snapshot (or only those tagged `only_tag`) and forgets what it
    /// does not keep, unless `dry_run`. Returns every decision, newest first. An empty policy
    /// is refused (it would forget everything), and so is a repository with a manifest that
    /// cannot be read (the policy could not see it).
    pub fn forget_by_policy(&self, policy: &Policy, dry_run: bool, only_tag: Option<&str>) -> Result<Vec<Decision>> {
        if policy.is_empty() {
            return Err(Error::Invalid(
                "no keep rule given: that would forget every snapshot (use --keep-last, --keep-daily, \
                 ... or name snapshots)"
                    .into(),
            ));
        }
        let mut entries = Vec::new();
        for s in self.snapshots()? {
            let s = s.map_err(|e| Error::Invalid(format!("{e}; run `cairn check` before forgetting by policy")))?;
            if only_tag.is_some_and(|t| !s.tags.iter().any(|x| x == t)) {
                continue;
            }
            entries.push(Entry {
                name: s.name.clone(),
                time: s.time,
                tags: s.tags.clone(),
                complete: s.is_complete(),
            });
        }
        let decisions = policy.apply(&entries);
        if !dry_run {
            let gone: Vec<String> = decisions.iter().filter(|d| !d.keep).map(|d| d.name.clone()).collect();
            self.forget(&gone)?;
        }
        Ok(decisions)
    }
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }

    /// Decides for every snapshot; the result is newest first.
    pub fn apply(&self, snaps: &[Entry]) -> Vec<Decision> {
        let mut order: Vec<&Entry> = snaps.iter().collect();
        order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
        let mut out: Vec<Decision> = order
            .iter()
            .map(|s| Decision {
                name: s.name.clone(),
                time: s.time,
                keep: false,
                reasons: Vec::new(),
            })
            .collect();
        let newest = order.iter().filter(|s| s.complete).map(|s| s.time).max();
        type Bucket = fn(i64) -> (i64, String);
        let rules: [(&str, u32, Bucket); 5] = [
            ("hourly", self.hourly, hour_of),
            ("daily", self.daily, day_of),
            ("weekly", self.weekly, week_of),
            ("monthly", self.monthly, month_of),
            ("yearly", self.yearly, year_of),
        ];
        let mut last_left = self.last;
        let mut seen: Vec<(u32, Option<i64>)> = rules.iter().map(|r| (r.1, None)).collect();
        for (s, d) in order.iter().zip(out.iter_mut()) {
            if !s.complete {
                d.reasons.push("failed snapshot".into());
                continue;
            }
            if last_left > 0 {
                d.reasons.push(format!("last {}", self.last));
                last_left -= 1;
            }
            for ((kind, _, bucket), (left, prev)) in rules.iter().zip(seen.iter_mut()) {
                let (key, label) = bucket(s.time);
                if *left > 0 && *prev != Some(key) {
                    d.reasons.push(format!("{kind} {label}"));
                    *left -= 1;
                    *prev = Some(key);
                }
            }
            if let (Some(w), Some(n)) = (self.within, newest) {
                if s.time >= n - w {
                    d.reasons.push(format!("within {} of the newest", format_duration(w)));
                }
            }
            for t in &self.tags {
                if s.tags.contains(t) {
                    d.reasons.push(format!("tag {t}"));
                }
            }
            d.keep = !d.reasons.is_empty();
            if !d.keep {
                d.reasons.push("no rule keeps it".into());
            }
        }
        out
    }
}

fn hour_of(t: i64) -> (i64, String) {
    let h = t.div_euclid(3600);
    let (y, m, d) = civil_from_days(h.div_euclid(24));
    (h, format!("{y:04}-{m:02}-{d:02}T{:02}", h.rem_euclid(24)))
}

fn day_of(t: i64) -> (i64, String) {
    let days = t.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (days, format!("{y:04}-{m:02}-{d:02}"))
}

/// ISO week: keyed by its Monday; labelled `YYYY-Www` with the ISO week-numbering year.
fn week_of(t: i64) -> (i64, String) {
    let days = t.div_euclid(86_400);
    let monday = days - (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday
    let thursday = monday + 3;
    let (iso_year, _, _) = civil_from_days(thursday);
    let jan1 = days_from_civil(iso_year, 1, 1);
    let week = (thursday - jan1) / 7 + 1;
    (monday, format!("{iso_year:04}-W{week:02}"))
}

fn month_of(t: i64) -> (i64, String) {
    let (y, m, _) = civil_from_days(t.div_euclid(86_400));
    (y * 12 + i64::from(m), format!("{y:04}-{m:02}"))
}

fn year_of(t: i64) -> (i64, String) {
    let (y, _, _) = civil_from_days(t.div_euclid(86_400));
    (y, format!("{y:04}"))
}

/// Days since 1970-01-01 of a date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const UNITS: [(char, i64); 5] = [
    ('y', 365 * 86_400),
    ('m', 30 * 86_400),
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3600),
];

/// Parses `7d`, `36h`, `2w`, `1y6m` (y = 365 days, m = 30 days, w, d, h).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration like 7d, 36h, 2w, 6m or 1y6m");
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = UNITS.iter().find(|u| u.0 == c).ok_or_else(bad)?.1;
        let n: i64 = num.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

fn format_duration(mut secs: i64) -> String {
    let mut out = String::new();
    for (c, unit) in UNITS {
        if secs >= unit {
            out.push_str(&format!("{}{c}", secs / unit));
            secs %= unit;
        }
    }
    if out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `2026-11-22T10:00:00Z` plus `days` and `hours`.
    fn at(days: i64, hours: i64) -> i64 {
        1_795_341_600 + days * 86_400 + hours * 3600
    }

    fn entries(times: &[(i64, &str)]) -> Vec<Entry> {
        times
            .iter()
            .enumerate()
            .map(|(i, (t, tag))| Entry {
                name: format!("s{i:02}"),
                time: *t,
                tags: if tag.is_empty() { vec![] } else { vec![tag.to_string()] },
                complete: *tag != "FAILED",
            })
            .collect()
    }

    fn kept(p: &Policy, snaps: &[Entry]) -> Vec<String> {
        let mut k: Vec<String> = p.apply(snaps).into_iter().filter(|d| d.keep).map(|d| d.name).collect();
        k.sort();
        k
    }

    #[test]
    fn calendar_buckets() {
        assert_eq!(day_of(at(0, 0)).1, "2026-11-22");
        assert_eq!(hour_of(at(0, 5)).1, "2026-11-22T15");
        // 2026-11-22 is a Sunday: ISO week 47, whose Monday is 2026-11-16.
        assert_eq!(week_of(at(0, 0)).1, "2026-W47");
        assert_eq!(week_of(at(1, 0)).1, "2026-W48");
        assert_eq!(week_of(at(0, 0)).0, week_of(at(-6, 0)).0);
        // 2027-01-01 is a Friday: it belongs to ISO week 53 of 2026.
        assert_eq!(week_of(1_798_761_600).1, "2026-W53");
        assert_eq!(month_of(at(9, 0)).1, "2026-12");
        assert_eq!(year_of(at(40, 0)).1, "2027");
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn policies_keep_what_they_say() {
        // 30 daily snapshots at 04:00 (one failed on day -3), two extra on the newest day, one tagged.
        let mut times: Vec<(i64, &str)> = (0..30).map(|d| (at(-d, -6), "")).collect();
        times[3].1 = "FAILED";
        times[20].1 = "safety";
        times.push((at(0, 1), ""));
        times.push((at(0, 2), ""));
        let snaps = entries(&times);
        let names = |idx: &[usize]| -> Vec<String> {
            let mut v: Vec<String> = idx.iter().map(|i| format!("s{i:02}")).collect();
            v.sort();
            v
        };
        let table: Vec<(Policy, Vec<String>)> = vec![
            (
                Policy {
                    last: 3,
                    ..Default::default()
                },
                names(&[31, 30, 0]),
            ),
            // The newest per day: day 0's is s31; day -3 is failed and fills no bucket.
            (
                Policy {
                    daily: 7,
                    ..Default::default()
                },
                names(&[31, 1, 2, 4, 5, 6, 7]),
            ),
            (
                Policy {
                    hourly: 2,
                    ..Default::default()
                },
                names(&[31, 30]),
            ),
            // Weeks (Mon-Sun): day 0 is a Sunday; days -6..0, -13..-7, -20..-14 are whole weeks.
            (
                Policy {
                    weekly: 3,
                    ..Default::default()
                },
                names(&[31, 7, 14]),
            ),
            (
                Policy {
                    monthly: 2,
                    ..Default::default()
                },
                names(&[31, 22]),
            ),
            (
                Policy {
                    yearly: 5,
                    ..Default::default()
                },
                names(&[31]),
            ),
            (
                Policy {
                    within: Some(2 * 86_400),
                    ..Default::default()
                },
                names(&[31, 30, 0, 1]),
            ),
            (
                Policy {
                    tags: vec!["safety".into()],
                    ..Default::default()
                },
                names(&[20]),
            ),
            (
                Policy {
                    last: 1,
                    daily: 2,
                    tags: vec!["safety".into()],
                    ..Default::default()
                },
                names(&[31, 1, 20]),
            ),
            (Policy::default(), vec![]),
        ];
        for (policy, want) in table {
            assert_eq!(kept(&policy, &snaps), want, "{policy:?}");
        }
    }

    #[test]
    fn every_decision_has_reasons() {
        let snaps = entries(&[(at(0, 0), ""), (at(-1, 0), "FAILED"), (at(-2, 0), "")]);
        let d = Policy {
            last: 1,
            daily: 1,
            ..Default::default()
        }
        .apply(&snaps);
        assert_eq!(d[0].reasons, ["last 1", "daily 2026-11-22"]);
        assert_eq!(d[1].reasons, ["failed snapshot"]);
        assert!(!d[2].keep && d[2].reasons == ["no rule keeps it"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        assert_eq!(parse_duration("1y6m"), Ok(365 * 86_400 + 180 * 86_400));
        assert_eq!(parse_duration("36h"), Ok(36 * 3600));
        for bad in ["", "7", "d", "7x", "0d", "99999999999999999y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(2 * 86_400 + 3600), "2d1h");
    }
}
