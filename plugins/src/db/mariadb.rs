//! MariaDB: a consistent online dump streamed into the snapshot.
//!
//! Backup: `mariadb-dump --single-transaction` of every user database (routines, events,
//! triggers, `--add-drop-database`), uncompressed so it deduplicates, plus the accounts and
//! grants (`--system=users`, without the administrative accounts `root` and `mariadb.sys`,
//! which the target keeps as they are) as a second item. Row counts and `CHECKSUM TABLE` of every table
//! are taken before and after the dump; when they agree nothing changed meanwhile and the
//! restore is verified against them exactly.
//!
//! Restore feeds both items to the `mariadb` client of the running server. A disaster-recovery
//! restore first initialises the (empty) data directory and starts the server.
//! Credentials come from an option file (`credentials_file`, `[client]` user/password, mode
//! 0600) given as `--defaults-extra-file`; they never appear on a command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::db::common::absolute;
use crate::error::{Error, Result};
use crate::plugin::{Ctx, Health, ItemSink, ItemSource, Mode, Plugin};
use crate::process;
use crate::remote::host::{Host, Hosts};

/// `[mariadb]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Unix socket of the server (or `host` and `port`).
    pub socket: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Option file with `[client]` user and password (mode 0600).
    pub credentials_file: Option<PathBuf>,
    /// Databases to back up (default: all but the system schemas).
    #[serde(default)]
    pub databases: Vec<String>,
    /// The server's data directory (a disaster-recovery restore initialises it).
    pub datadir: Option<PathBuf>,
    /// Shell commands that start and stop the server.
    pub start: Option<String>,
    pub stop: Option<String>,
    /// Initialises an empty data directory (default:
    /// `mariadb-install-db --datadir=DATADIR --auth-root-authentication-method=socket`).
    pub install_db: Option<String>,
    /// Client programs (default `mariadb`, `mariadb-dump`).
    pub client: Option<String>,
    pub dump: Option<String>,
    /// The `[hosts.NAME]` this server runs on: the dump tools, the client, `datadir`,
    /// `credentials_file` and the start and stop commands are all there (default: this host).
    pub runs_on: Option<String>,
}

pub struct MariaDb {
    name: String,
    cfg: Config,
    host: Host,
}

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    if cfg.socket.is_none() && cfg.host.is_none() {
        return Err("give socket or host (and port) to reach the server".into());
    }
    if cfg.socket.is_some() && cfg.host.is_some() {
        return Err("give socket or host, not both".into());
    }
    for (k, p) in [
        ("socket", &cfg.socket),
        ("credentials_file", &cfg.credentials_file),
        ("datadir", &cfg.datadir),
    ] {
        if let Some(p) = p {
            absolute(k, p)?;
        }
    }
    for d in &cfg.databases {
        if SYSTEM_SCHEMAS.contains(&d.as_str()) || d.contains('`') || d.is_empty() {
            return Err(format!("databases: {d:?} cannot be backed up as a user database"));
        }
    }
    Ok(Arc::new(MariaDb {
        name: name.to_string(),
        cfg: cfg.clone(),
        host: hosts.get(cfg.runs_on.as_deref())?,
    }))
}

const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// Item names.
const DATABASES: &str = "databases.sql";
const USERS: &str = "users.sql";

/// Row count and checksum per `db.table`.
type TableStats = BTreeMap<String, (u64, String)>;

impl MariaDb {
    /// Connection arguments; the option file must come first.
    fn conn_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(f) = &self.cfg.credentials_file {
            a.push(format!("--defaults-extra-file={}", f.display()));
        }
        if let Some(s) = &self.cfg.socket {
            a.push(format!("--socket={}", s.display()));
        } else {
            a.push(format!("--host={}", self.cfg.host.as_deref().unwrap_or("localhost")));
            a.push("--protocol=TCP".into());
            if let Some(p) = self.cfg.port {
                a.push(format!("--port={p}"));
            }
        }
        a
    }

    fn tool(&self, program: &str, extra: &[&str]) -> Command {
        let mut c = process::command(program, &[]);
        c.args(self.conn_args()).args(extra);
        c
    }

    fn client(&self, extra: &[&str]) -> Command {
        self.tool(self.cfg.client.as_deref().unwrap_or("mariadb"), extra)
    }

    /// The fresh server's own administrator: `root` over the socket (unix_socket
    /// authentication, as `mariadb-install-db --auth-root-authentication-method=socket` sets
    /// up), without the configured credentials, which a freshly initialised server does not
    /// know yet. `None` without a socket.
    fn admin_client(&self) -> Option<Command> {
        let sock = self.cfg.socket.as_ref()?;
        let mut c = process::command(self.cfg.client.as_deref().unwrap_or("mariadb"), &[]);
        c.arg(format!("--socket={}", sock.display())).arg("--user=root");
        Some(c)
    }

    /// Whether the server answers at all: an "access denied" is an answer.
    async fn answers(&self) -> Result<()> {
        match self.ping().await {
            Err(e) if access_denied(&e) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Runs SQL and returns rows of tab-separated columns.
    async fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let out = self
            .host
            .output(&mut self.client(&["--batch", "--skip-column-names", "-e", sql]))
            .await?;
        Ok(out
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    async fn databases(&self) -> Result<Vec<String>> {
        let all: Vec<String> = self
            .query("SELECT schema_name FROM information_schema.schemata ORDER BY schema_name")
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        if self.cfg.databases.is_empty() {
            return Ok(all
                .into_iter()
                .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()))
                .collect());
        }
        for d in &self.cfg.databases {
            if !all.contains(d) {
                return Err(Error::State(format!("database {d:?} is configured but does not exist")));
            }
        }
        Ok(self.cfg.databases.clone())
    }

    /// Row counts and checksums of every base table in `dbs`.
    async fn table_stats(&self, dbs: &[String]) -> Result<TableStats> {
        if dbs.is_empty() {
            return Ok(TableStats::new());
        }
        let list = dbs
            .iter()
            .map(|d| format!("'{}'", d.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",");
        let tables: Vec<String> = self
            .query(&format!(
                "SELECT CONCAT('`', REPLACE(table_schema,'`','``'), '`.`', REPLACE(table_name,'`','``'), '`') \
                 FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema IN ({list}) \
                 ORDER BY table_schema, table_name"
            ))
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        let mut stats = TableStats::new();
        for batch in tables.chunks(200) {
            let counts = batch
                .iter()
                .map(|t| format!("SELECT '{}', COUNT(*) FROM {t}", t.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            for r in self.query(&counts).await? {
                if let [t, n] = r.as_slice() {
                    let rows = n
                        .parse()
                        .map_err(|_| Error::Answer(format!("COUNT(*) of {t} answered {n:?}")))?;
                    stats.insert(t.clone(), (rows, String::new()));
                }
            }
            for r in self.query(&format!("CHECKSUM TABLE {}", batch.join(", "))).await? {
                if let [t, sum] = r.as_slice() {
                    // CHECKSUM TABLE names tables `db.table` without quotes.
                    let key = batch
                        .iter()
                        .find(|q| unquote(q) == *t)
                        .cloned()
                        .unwrap_or_else(|| t.clone());
                    if let Some(e) = stats.get_mut(&key) {
                        e.1 = sum.clone();
                    }
                }
            }
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<String> {
        let r = self
            .query("SELECT VERSION(), (SELECT COUNT(*) FROM information_schema.tables WHERE table_type='BASE TABLE')")
            .await?;
        match r.first().map(Vec::as_slice) {
            Some([v, n]) => Ok(format!("MariaDB {v}, {n} tables")),
            _ => Err(Error::Answer("unexpected answer to a status query".into())),
        }
    }

    /// Disaster recovery: initialise an empty data directory and start the server.
    async fn bootstrap(&self, ctx: &Ctx) -> Result<()> {
        if self.answers().await.is_ok() {
            return Ok(());
        }
        let datadir = self.cfg.datadir.as_ref().ok_or_else(|| {
            Error::State("the server is not running and no datadir is configured to initialise".into())
        })?;
        if self.host.dir_has_entries(datadir).await? {
            return Err(Error::State(format!(
                "disaster recovery needs an empty data directory; {} is not empty and its server does not answer",
                datadir.display()
            )));
        }
        ctx.log(format!("initialising {}", datadir.display()));
        let install = self.cfg.install_db.clone().unwrap_or_else(|| {
            format!(
                "mariadb-install-db --datadir='{}' --auth-root-authentication-method=socket --skip-test-db",
                datadir.display()
            )
        });
        self.host.output(&mut process::shell(&install)).await?;
        ctx.log("starting the server");
        self.host.run_configured(self.cfg.start.as_deref()).await?;
        process::wait_until(120, || async { self.answers().await }).await
    }
}

/// The server refused the credentials (it is up and answering).
fn access_denied(e: &Error) -> bool {
    matches!(e, Error::Command { stderr, .. } if stderr.contains("Access denied"))
}

/// Accounts a restore leaves alone on the target.
const ADMIN_ACCOUNTS: [&str; 2] = ["root", "mariadb.sys"];

/// Drops the statements (one per line in `--system=users` output) about administrative accounts.
fn without_admin_accounts(sql: &str) -> String {
    sql.lines()
        .filter(|l| {
            !ADMIN_ACCOUNTS
                .iter()
                .any(|a| l.contains(&format!("`{a}`@")) || l.contains(&format!("'{a}'@")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn unquote(q: &str) -> String {
    q.replace("`.`", ".").trim_matches('`').replace("``", "`")
}

/// What a backup records of the dump, for the restore and its verification.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// The databases dumped: after a restore, others are dropped.
    databases: Vec<String>,
    /// Rows and checksum of each table (`db.table`) when the dump started.
    tables: BTreeMap<String, TableFact>,
    /// Whether the tables were the same when the dump ended, so counts compare exactly.
    exact: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct TableFact {
    rows: u64,
    checksum: String,
}

#[async_trait]
impl Plugin for MariaDb {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "mariadb"
    }

    fn cold_paths(&self) -> Vec<std::path::PathBuf> {
        // Copied cold by the controller, so only where it can see them.
        match self.host.is_local() {
            true => self.cfg.datadir.iter().cloned().collect(),
            false => Vec::new(),
        }
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        Health::from_result(self.ping().await)
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let dbs = self.databases().await?;
        let before = self.table_stats(&dbs).await?;
        ctx.log(format!("dumping {} databases, {} tables", dbs.len(), before.len()));
        let mut args = vec![
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--add-drop-database",
            "--hex-blob",
            "--skip-dump-date",
            "--databases",
        ];
        args.extend(dbs.iter().map(String::as_str));
        let dump = self.cfg.dump.as_deref().unwrap_or("mariadb-dump");
        if dbs.is_empty() {
            sink.stream(DATABASES, tokio::io::empty()).await?;
        } else {
            sink.command_output(&self.host, DATABASES, &mut self.tool(dump, &args))
                .await?;
        }
        // IF NOT EXISTS: accounts present on the target are kept as they are. The administrative
        // accounts are left out: the target has its own, and a restore must not change them.
        let users = self
            .host
            .output(&mut self.tool(dump, &["--system=users", "--insert-ignore", "--skip-dump-date"]))
            .await?;
        sink.stream(USERS, std::io::Cursor::new(without_admin_accounts(&users).into_bytes()))
            .await?;
        let after = self.table_stats(&dbs).await?;
        let exact = before == after;
        if !exact {
            sink.warn("tables changed while dumping; the restore will be checked for tables, not rows".into());
        }
        let facts = Facts {
            databases: dbs,
            tables: before
                .into_iter()
                .map(|(t, (rows, checksum))| (t, TableFact { rows, checksum }))
                .collect(),
            exact,
        };
        sink.set_facts(DATABASES, &facts)?;
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        if ctx.mode == Mode::DisasterRecovery {
            self.bootstrap(ctx).await?;
        } else if self.answers().await.is_err() && self.cfg.start.is_some() {
            // Down but with its data (a crash): start it, then restore into it.
            ctx.log("the server does not answer: starting it");
            self.host.run_configured(self.cfg.start.as_deref()).await?;
            process::wait_until(120, || async { self.answers().await }).await?;
        }
        ctx.log("loading accounts and grants");
        match self.ping().await {
            // A fresh server does not know the configured account yet: the accounts go in
            // through its own administrator, and with them the configured account.
            Err(e) if access_denied(&e) => {
                match self.admin_client() {
                    Some(mut admin) => {
                        ctx.log("the configured account is not on this server yet: loading accounts as root over the socket");
                        source.pipe_to(&self.host, USERS, &mut admin).await?;
                        let mut admin = self.admin_client().expect("socket configured");
                        self.host.output(admin.args(["-e", "FLUSH PRIVILEGES"])).await?;
                    }
                    None => return Err(e),
                }
            }
            _ => source.pipe_to(&self.host, USERS, &mut self.client(&[])).await?,
        }
        ctx.log("loading databases");
        source.pipe_to(&self.host, DATABASES, &mut self.client(&[])).await?;
        self.host.output(&mut self.client(&["-e", "FLUSH PRIVILEGES"])).await?;
        // The snapshot's state, not more: databases created since go (the safety snapshot has them).
        let want = source.facts::<Facts>(DATABASES)?.databases;
        for row in self.query("SHOW DATABASES").await? {
            let Some(db) = row.first() else { continue };
            if SYSTEM_SCHEMAS.contains(&db.as_str()) || want.contains(db) {
                continue;
            }
            let quoted = format!("`{}`", db.replace('`', "``"));
            self.host
                .output(&mut self.client(&["-e", &format!("DROP DATABASE {quoted}")]))
                .await?;
            ctx.removed(format!("database {db}"));
        }
        Ok(())
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let Facts {
            databases,
            tables,
            exact,
        } = source.facts(DATABASES)?;
        let want: TableStats = tables.into_iter().map(|(t, f)| (t, (f.rows, f.checksum))).collect();
        let now = self.table_stats(&databases).await?;
        let missing: Vec<&String> = want.keys().filter(|t| !now.contains_key(*t)).collect();
        if !missing.is_empty() {
            return Err(Error::Mismatch(format!("tables missing after restore: {missing:?}")));
        }
        if exact {
            for (t, w) in &want {
                if now[t] != *w {
                    return Err(Error::Mismatch(format!(
                        "{t} after restore: {} rows, checksum {}; the backup had {} rows, checksum {}",
                        now[t].0, now[t].1, w.0, w.1
                    )));
                }
            }
            let rows: u64 = want.values().map(|w| w.0).sum();
            Ok(format!(
                "{} tables, {rows} rows: counts and checksums equal the backup's",
                want.len()
            ))
        } else {
            Ok(format!(
                "{} tables present (data changed during the backup, rows not compared)",
                want.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn administrative_accounts_are_left_out_of_the_accounts_dump() {
        let dump = "CREATE USER IF NOT EXISTS `root`@`localhost`;\n\
                    CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*AB';\n\
                    GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION;\n\
                    GRANT SELECT ON `shop`.* TO `app`@`%`;\n\
                    CREATE USER IF NOT EXISTS `mariadb.sys`@`localhost`;\n";
        let kept = without_admin_accounts(dump);
        assert_eq!(
            kept,
            "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*AB';\nGRANT SELECT ON `shop`.* TO `app`@`%`;\n"
        );
        assert_eq!(unquote("`shop`.`orders`"), "shop.orders");
    }
}
