//! `cso_backupnrestore`: the operator interface Cairn replaces, option for option.
//!
//! ```text
//! cso_backupnrestore -b backup -s MAR09 [-m yes]
//! cso_backupnrestore -b scheduledbackup -z 0-13-*-*-0 [-m yes]
//! cso_backupnrestore -b restore -s MAR09|/backups/DAILY/... [-d mariadb,etcd|*] [-r yes|no]
//! cso_backupnrestore -b healthcheck | reindex | listbackups
//! cso_backupnrestore -b backupdetails -s MAR09
//! ```
//!
//! Every combination is checked before anything runs: an option that does not belong to the
//! operation, a bad value or a bad cron field is refused naming the option and what it allows
//! (exit 2). The configuration comes from `CAIRN_CONFIG` or `/etc/cairn/cairn.toml`, as for
//! `cairn`; the repository from the configuration (default `/backups`).

use std::process::ExitCode;

use anyhow::{bail, Result};
use cairn_cli::cmd::{schedule, system};
use cairn_cli::common::{bytes, print_table, GlobalOpts};
use cairn_plugins::controller::{BackupRequest, Reporter, RestoreRequest, PLUGINS_META};
use cairn_plugins::ops::schedule::CronExpr;
use cairn_plugins::plugin::Mode;
use cairn_store::{format_rfc3339, Snapshot, Status};
use clap::{Parser, ValueEnum};

/// Back up and restore the whole platform (Cairn's implementation of the CSO operator tool).
#[derive(Parser, Debug)]
#[command(
    name = "cso_backupnrestore",
    version,
    disable_help_subcommand = true,
    after_help = "Where things come from: the configuration is the file named by CAIRN_CONFIG, else \
/etc/cairn/cairn.toml (see examples/cairn.toml). It names the databases, the repository \
(`repository`, default /backups; CAIRN_REPO overrides it), the key (`password_file` or \
`identity_file`; CAIRN_PASSWORD also works) and the index cache (`cache_dir`). A restore \
first saves what it replaces in a safety snapshot (a database that is down: its data \
directory, as it is on disk)."
)]
struct Cli {
    /// Operation (required).
    #[arg(short = 'b', value_enum)]
    op: Op,
    /// Snapshot name to create (backup) or to restore, or its path under the repository
    /// (`/backups/DAILY/2019-03-16T04:00:00Z`).
    #[arg(short = 's')]
    snapshot: Option<String>,
    /// Maintenance mode during a backup (or during scheduled backups).
    #[arg(short = 'm', value_enum)]
    maintenance: Option<YesNo>,
    /// Databases: `*` (backup: only `*`), or a comma list of cassandra, elasticsearch,
    /// zookeeper, mariadb, etcd, arangodb (restore).
    #[arg(short = 'd')]
    databases: Option<String>,
    /// Disaster-recovery restore onto fresh nodes.
    #[arg(short = 'r', value_enum)]
    disaster_recovery: Option<YesNo>,
    /// Cron schedule for scheduledbackup: m-h-dom-mon-dow (e.g. 0-13-*-*-0).
    #[arg(short = 'z', allow_hyphen_values = true)]
    cron: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    Backup,
    Restore,
    Healthcheck,
    Reindex,
    Backupdetails,
    Listbackups,
    Scheduledbackup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum YesNo {
    Yes,
    No,
}

/// `cairn`'s global options, from the environment only (CAIRN_CONFIG, CAIRN_REPO, ...).
#[derive(Parser, Debug)]
struct Env {
    #[command(flatten)]
    global: GlobalOpts,
}

/// What the options ask for, checked.
#[derive(Debug, PartialEq)]
enum Plan {
    Backup {
        name: Option<String>,
        maintenance: bool,
    },
    Restore {
        snapshot: String,
        databases: Option<Vec<String>>,
        disaster_recovery: bool,
    },
    Healthcheck,
    Reindex,
    Details(String),
    List,
    Schedule {
        cron: CronExpr,
        maintenance: bool,
    },
}

fn plan(c: &Cli) -> Result<Plan, String> {
    let op = format!("{:?}", c.op).to_lowercase();
    let not_with = |opt: &str, allowed: &str| format!("option {opt} is not valid with -b {op} ({allowed})");
    let refuse = |given: bool, opt: &str, allowed: &str| if given { Err(not_with(opt, allowed)) } else { Ok(()) };
    let yes = |v: Option<YesNo>| v == Some(YesNo::Yes);
    match c.op {
        Op::Backup => {
            refuse(c.disaster_recovery.is_some(), "-r", "-r is only for -b restore")?;
            refuse(c.cron.is_some(), "-z", "-z is only for -b scheduledbackup")?;
            if let Some(d) = &c.databases {
                if d != "*" {
                    return Err(format!(
                        "option -d {d:?}: -b backup backs up every database; only -d '*' is allowed"
                    ));
                }
            }
            Ok(Plan::Backup {
                name: c.snapshot.clone(),
                maintenance: yes(c.maintenance),
            })
        }
        Op::Restore => {
            refuse(
                c.maintenance.is_some(),
                "-m",
                "-m is only for -b backup and -b scheduledbackup; a restore always runs in maintenance mode",
            )?;
            refuse(c.cron.is_some(), "-z", "-z is only for -b scheduledbackup")?;
            let snapshot = c
                .snapshot
                .clone()
                .ok_or("-b restore needs -s NAME (the snapshot to restore)")?;
            let databases = match c.databases.as_deref() {
                None | Some("*") => None,
                Some(list) => {
                    let mut out = Vec::new();
                    for d in list.split(',').map(str::trim) {
                        // The databases `-d` may name are the plugins' own list; `arrangodb`
                        // (the old tool's spelling) means arangodb.
                        let d = if d == "arrangodb" { "arangodb" } else { d };
                        if !cairn_plugins::config::DATABASES.contains(&d) {
                            return Err(format!(
                                "option -d: unknown database {d:?}; allowed: {} (comma separated) or '*'",
                                cairn_plugins::config::DATABASES.join(", ")
                            ));
                        }
                        if !out.iter().any(|x| x == d) {
                            out.push(d.to_string());
                        }
                    }
                    Some(out)
                }
            };
            Ok(Plan::Restore {
                snapshot,
                databases,
                disaster_recovery: yes(c.disaster_recovery),
            })
        }
        Op::Scheduledbackup => {
            refuse(
                c.snapshot.is_some(),
                "-s",
                "scheduled backups are named DAILY/<UTC time>",
            )?;
            refuse(c.disaster_recovery.is_some(), "-r", "-r is only for -b restore")?;
            if c.databases.as_deref().is_some_and(|d| d != "*") {
                return Err("option -d: scheduled backups back up every database; only -d '*' is allowed".into());
            }
            let z = c
                .cron
                .as_deref()
                .ok_or("-b scheduledbackup needs -z m-h-dom-mon-dow (e.g. 0-13-*-*-0)")?;
            let cron = CronExpr::parse(z).map_err(|e| format!("option -z: {e}"))?;
            Ok(Plan::Schedule {
                cron,
                maintenance: yes(c.maintenance),
            })
        }
        Op::Healthcheck | Op::Reindex | Op::Listbackups | Op::Backupdetails => {
            let details = c.op == Op::Backupdetails;
            refuse(c.snapshot.is_some() && !details, "-s", "it takes no other option")?;
            refuse(
                c.maintenance.is_some(),
                "-m",
                "-m is only for -b backup and -b scheduledbackup",
            )?;
            refuse(c.databases.is_some(), "-d", "-d is only for -b backup and -b restore")?;
            refuse(c.disaster_recovery.is_some(), "-r", "-r is only for -b restore")?;
            refuse(c.cron.is_some(), "-z", "-z is only for -b scheduledbackup")?;
            Ok(match c.op {
                Op::Healthcheck => Plan::Healthcheck,
                Op::Reindex => Plan::Reindex,
                Op::Listbackups => Plan::List,
                _ => Plan::Details(c.snapshot.clone().ok_or("-b backupdetails needs -s NAME")?),
            })
        }
    }
}

/// A snapshot named by its path under the repository (`/backups/DAILY/...`) or by name.
fn snapshot_name(g: &GlobalOpts, s: &str) -> Result<String> {
    if !s.starts_with('/') {
        return Ok(s.to_string());
    }
    let g = g.with_config(g.load_config()?.as_ref());
    let Some(repo) = g.repo_location()?.local_path().map(std::path::Path::to_path_buf) else {
        return Ok(s.to_string());
    };
    let canonical = std::fs::canonicalize(&repo).unwrap_or(repo.clone());
    let path = std::path::Path::new(s);
    for root in [&repo, &canonical] {
        if let Ok(rest) = path.strip_prefix(root) {
            if !rest.as_os_str().is_empty() {
                return Ok(rest.to_string_lossy().trim_end_matches('/').to_string());
            }
        }
    }
    bail!("-s {s}: a path must lie under the repository {}", repo.display())
}

fn databases_of(s: &Snapshot) -> String {
    s.meta
        .get(PLUGINS_META)
        .and_then(|p| p.as_object())
        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| "-".into())
}

fn list(g: &GlobalOpts) -> Result<ExitCode> {
    let repo = g.open()?;
    let mut rows = Vec::new();
    for s in repo.snapshots()? {
        match s {
            Ok(s) => rows.push(vec![
                s.name.clone(),
                format_rfc3339(s.time),
                match &s.status {
                    Status::Complete => "complete".into(),
                    Status::Failed { .. } => "FAILED".into(),
                },
                databases_of(&s),
                bytes(s.size()),
                bytes(s.stats.bytes_added),
            ]),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    print_table(&["name", "time", "status", "databases", "size", "added"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn details(g: &GlobalOpts, name: &str) -> Result<ExitCode> {
    let repo = g.open()?;
    let s = repo.snapshot(name)?;
    println!("snapshot:   {}", s.name);
    println!("time:       {} (host {})", format_rfc3339(s.time), s.host);
    match &s.status {
        Status::Complete => println!("status:     complete (restorable)"),
        Status::Failed { reason } => println!("status:     FAILED, not restorable: {reason}"),
    }
    println!(
        "size:       {} logical, {} added; {} chunks, {} new ({} as deltas), dedup {:.1}x; {:.1}s",
        bytes(s.size()),
        bytes(s.stats.bytes_added),
        s.stats.chunks,
        s.stats.chunks_new,
        s.stats.chunks_delta,
        s.dedup_ratio(),
        s.duration_secs
    );
    if !s.tags.is_empty() {
        println!("tags:       {}", s.tags.join(", "));
    }
    if let Some(p) = s.meta.get(PLUGINS_META).and_then(|p| p.as_object()) {
        let rows: Vec<Vec<String>> = p
            .iter()
            .map(|(name, o)| {
                vec![
                    name.clone(),
                    o["kind"].as_str().unwrap_or("").into(),
                    if o["ok"].as_bool() == Some(true) {
                        "ok".into()
                    } else {
                        "FAILED".into()
                    },
                    format!("{:.1}s", o["duration_secs"].as_f64().unwrap_or(0.0)),
                    o["error"].as_str().unwrap_or("").chars().take(120).collect(),
                ]
            })
            .collect();
        println!();
        print_table(&["database", "kind", "status", "time", "error"], &rows);
    }
    let rows: Vec<Vec<String>> = s
        .items
        .iter()
        .map(|i| {
            let verification = match i.meta.get("exact").and_then(|v| v.as_bool()) {
                Some(true) => "exact: counts/checksums recorded, unchanged during the dump",
                Some(false) => "recorded; data changed during the dump",
                None if i.meta.is_empty() => "-",
                None => "facts recorded",
            };
            vec![
                i.name.clone(),
                bytes(i.size),
                bytes(i.stats.bytes_added),
                format!("{:.1}s", i.duration_secs),
                verification.into(),
            ]
        })
        .collect();
    println!();
    print_table(&["item", "size", "added", "time", "verification"], &rows);
    if let Some(w) = s.meta.get("warnings").and_then(|w| w.as_array()) {
        for w in w {
            println!("warning: {}", w.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    cairn_cli::start();
    cairn_cli::set_cso();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cairn_cli::clap_exit(e),
    };
    cairn_cli::forget_key_env();
    let plan = match plan(&cli) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    let g = Env::parse_from(["cso_backupnrestore"]).global;
    let result = match plan {
        Plan::Backup { name, maintenance } => system::backup(
            &g,
            BackupRequest {
                name,
                tags: vec![],
                plugins: None,
                maintenance,
                progress: Reporter(cairn_cli::progress::for_system(false)),
            },
            false,
        ),
        Plan::Restore {
            snapshot,
            databases,
            disaster_recovery,
        } => snapshot_name(&g, &snapshot).and_then(|snapshot| {
            system::restore(
                &g,
                RestoreRequest {
                    snapshot,
                    plugins: databases,
                    mode: if disaster_recovery {
                        Mode::DisasterRecovery
                    } else {
                        Mode::Normal
                    },
                    safety_snapshot: true,
                    progress: Reporter(cairn_cli::progress::for_system(false)),
                },
                false,
            )
        }),
        Plan::Healthcheck => system::healthcheck(&g, false),
        Plan::Reindex => system::reindex(&g, &[], false),
        Plan::Details(name) => snapshot_name(&g, &name).and_then(|n| details(&g, &n)),
        Plan::List => list(&g),
        Plan::Schedule { cron, maintenance } => schedule::install(&g, &cron, maintenance),
    };
    result.unwrap_or_else(|e| cairn_cli::report(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of the argument definitions (conflicting flags, bad
    /// defaults), which otherwise fire only when the bad argument is used.
    #[test]
    fn the_argument_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn plan_of(args: &str) -> Result<Plan, String> {
        let argv = std::iter::once("cso_backupnrestore").chain(args.split_whitespace());
        plan(&Cli::try_parse_from(argv).map_err(|e| e.to_string())?)
    }

    #[test]
    fn the_documented_examples_are_accepted() {
        assert_eq!(
            plan_of("-b backup -s MAR09"),
            Ok(Plan::Backup {
                name: Some("MAR09".into()),
                maintenance: false
            })
        );
        assert!(matches!(
            plan_of("-b scheduledbackup -z 0-13-*-*-0 -m yes"),
            Ok(Plan::Schedule { maintenance: true, .. })
        ));
        assert_eq!(
            plan_of("-b restore -s /backups/DAILY-09/2019-03-16T04 -r no"),
            Ok(Plan::Restore {
                snapshot: "/backups/DAILY-09/2019-03-16T04".into(),
                databases: None,
                disaster_recovery: false
            })
        );
        assert_eq!(
            plan_of("-b restore -s MAR09 -d mariadb,etcd -r yes"),
            Ok(Plan::Restore {
                snapshot: "MAR09".into(),
                databases: Some(vec!["mariadb".into(), "etcd".into()]),
                disaster_recovery: true
            })
        );
        assert_eq!(plan_of("-b healthcheck"), Ok(Plan::Healthcheck));
        assert_eq!(plan_of("-b reindex"), Ok(Plan::Reindex));
        assert_eq!(plan_of("-b listbackups"), Ok(Plan::List));
        assert_eq!(plan_of("-b backupdetails -s MAR09"), Ok(Plan::Details("MAR09".into())));
        assert_eq!(
            plan_of("-b restore -s X -d arrangodb,cassandra,arangodb"),
            Ok(Plan::Restore {
                snapshot: "X".into(),
                databases: Some(vec!["arangodb".into(), "cassandra".into()]),
                disaster_recovery: false
            })
        );
        assert!(matches!(
            plan_of("-b restore -s X -d *"),
            Ok(Plan::Restore { databases: None, .. })
        ));
    }

    #[test]
    fn combinations_that_do_not_fit_are_refused_naming_the_option() {
        for (args, want) in [
            ("-b backup -z 0-13-*-*-0", "option -z is not valid with -b backup"),
            ("-b backup -d mariadb", "option -d \"mariadb\""),
            ("-b backup -r yes", "option -r is not valid with -b backup"),
            ("-b scheduledbackup -z 0-25-*-*-0", "option -z: hour field"),
            ("-b scheduledbackup -z 0-13-*-*", "option -z"),
            ("-b scheduledbackup", "needs -z"),
            ("-b scheduledbackup -z 0-13-*-*-0 -s X", "option -s is not valid"),
            ("-b restore -s X -d mysql", "unknown database \"mysql\""),
            ("-b restore -s X -m yes", "option -m is not valid with -b restore"),
            ("-b restore -d mariadb", "needs -s"),
            (
                "-b restore -s X -z 0-13-*-*-0",
                "option -z is not valid with -b restore",
            ),
            (
                "-b healthcheck -d mariadb",
                "option -d is not valid with -b healthcheck",
            ),
            ("-b listbackups -s X", "option -s is not valid with -b listbackups"),
            ("-b reindex -r no", "option -r is not valid with -b reindex"),
            ("-b backupdetails", "needs -s"),
        ] {
            let e = plan_of(args).unwrap_err();
            assert!(e.contains(want), "{args}: {e}");
        }
        // clap refuses bad values and unknown operations itself (exit 2).
        for args in ["-b copy", "-b backup -m maybe", "-b restore -s X -r si", "-s X"] {
            assert!(plan_of(args).is_err(), "{args}");
        }
    }
}
