//! The configuration file (`/etc/cairn/cairn.toml`, `--config`, `CAIRN_CONFIG`).
//!
//! One TOML file names the repository and its key, every database instance, the files to carry
//! and the maintenance-mode commands; `examples/cairn.toml` shows every key. Unknown keys and
//! wrong types are refused with the line they are on; each plugin then checks its own section
//! and names the key that is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_store::Policy;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::plugin::Plugin;

/// Where the configuration is looked for when none is named.
pub const DEFAULT_PATH: &str = "/etc/cairn/cairn.toml";

/// Declares the database plugins: each line adds a `[name]` section to the file and the plugin
/// built from it. Adding a database is one module plus one line here.
macro_rules! databases {
    ($($name:ident => $module:ident),* $(,)?) => {
        /// The whole configuration file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            /// Repository path (default `/backups`).
            pub repository: Option<PathBuf>,
            /// File whose first line is the repository passphrase.
            pub password_file: Option<PathBuf>,
            /// age identity file that unlocks the repository (instead of a passphrase).
            pub identity_file: Option<PathBuf>,
            /// Local index cache.
            pub cache_dir: Option<PathBuf>,
            /// Where plugins stage what cannot be streamed (default: the system temp dir).
            pub work_dir: Option<PathBuf>,
            /// Host state: maintenance status, schedule logs (default `/var/lib/cairn`).
            pub state_dir: Option<PathBuf>,
            /// The healthcheck is unhealthy when the newest complete system snapshot (safety
            /// snapshots aside) is older than this (`26h`, `8d`); unset: no limit.
            pub max_snapshot_age: Option<String>,
            #[serde(default)]
            pub maintenance: MaintenanceConfig,
            /// `[retention]`: applied after each scheduled backup.
            pub retention: Option<RetentionConfig>,
            /// `[files.NAME]`: certificates, encrypted passwords and other files to carry.
            #[serde(default)]
            pub files: BTreeMap<String, crate::db::files::Config>,
            /// `[hosts.NAME]`: other hosts, reached through `cairn agent` over SSH; a section
            /// names the host it runs on with `runs_on`.
            #[serde(default)]
            pub hosts: BTreeMap<String, crate::remote::host::HostConfig>,
            /// `[[exec]]`: a database added by configuring its dump and restore commands.
            #[serde(default)]
            pub exec: Vec<crate::db::exec::Config>,
            $(
                pub $name: Option<crate::db::$module::Config>,
            )*
        }

        /// The database kinds built in, in the order they are listed.
        pub const DATABASES: &[&str] = &[$(stringify!($name)),*];

        impl Config {
            fn database_plugins(&self, text: &str, hosts: &crate::remote::host::Hosts) -> Vec<(Option<usize>, String, Result<Arc<dyn Plugin>, String>)> {
                let mut out = Vec::new();
                $(
                    if let Some(c) = &self.$name {
                        let name = stringify!($name);
                        out.push((section_line(text, name, 0), name.to_string(), crate::db::$module::build(name, c, hosts)));
                    }
                )*
                out
            }
        }
    };
}

databases! {
    mariadb => mariadb,
    etcd => etcd,
    zookeeper => zookeeper,
    cassandra => cassandra,
    elasticsearch => elasticsearch,
    arangodb => arangodb,
}

/// `[maintenance]`: what puts the platform in and out of maintenance mode.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Shell command run when entering maintenance mode (stop traffic, say).
    pub enter: Option<String>,
    /// Shell command run when leaving it; runs also after a failed restore.
    pub leave: Option<String>,
}

/// A loaded configuration with its plugins built.
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
    pub plugins: Vec<Arc<dyn Plugin>>,
    /// The configured hosts (connected on first use).
    pub hosts: crate::remote::host::Hosts,
}

impl Loaded {
    pub fn state_dir(&self) -> PathBuf {
        self.config
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/cairn"))
    }

    pub fn work_dir(&self) -> PathBuf {
        self.config.work_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    pub fn plugin(&self, name: &str) -> Option<&Arc<dyn Plugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }
}

/// Reads and checks a configuration file and builds its plugins.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.into(),
        line: None,
        msg: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of the `nth` header that opens table `name` (`[name]`, `[name.x]`, `[[name]]`,
/// `[[name.x]]`), for messages about a whole section.
fn section_line(text: &str, name: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let h = l.trim_start().trim_start_matches('[').trim_start();
            l.trim_start().starts_with('[')
                && h.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(']') || rest.starts_with('.'))
        })
        .map(|(i, _)| i + 1)
        .nth(nth)
}

/// Parses configuration text (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<Loaded> {
    let err = |line: Option<usize>, msg: String| Error::Config {
        path: path.into(),
        line,
        msg,
    };
    let config: Config = toml::from_str(text).map_err(|e| {
        // toml's message already quotes the offending text; keep its first line only.
        let msg = e.message().lines().next().unwrap_or("invalid TOML").to_string();
        err(e.span().map(|s| line_of(text, s.start)), msg)
    })?;
    if let Some(age) = &config.max_snapshot_age {
        cairn_store::parse_duration(age).map_err(|m| err(None, format!("max_snapshot_age: {m}")))?;
    }
    let hosts = crate::remote::host::Hosts::new(&config.hosts).map_err(|m| err(section_line(text, "hosts", 0), m))?;
    let mut built = config.database_plugins(text, &hosts);
    for (name, c) in &config.files {
        built.push((
            section_line(text, &format!("files.{name}"), 0),
            "files".into(),
            crate::db::files::build(name, c, &hosts),
        ));
    }
    for (i, c) in config.exec.iter().enumerate() {
        built.push((
            section_line(text, "exec", i),
            "exec".into(),
            crate::db::exec::build(c, &hosts),
        ));
    }
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    for (line, section, plugin) in built {
        let plugin = plugin.map_err(|m| err(line, format!("[{section}] {m}")))?;
        if plugins.iter().any(|p| p.name() == plugin.name()) {
            return Err(err(
                line,
                format!("[{section}] the name {:?} is used by two plugins", plugin.name()),
            ));
        }
        plugins.push(plugin);
    }
    if config.password_file.is_some() && config.identity_file.is_some() {
        return Err(err(None, "give password_file or identity_file, not both".into()));
    }
    Ok(Loaded {
        path: path.into(),
        config,
        plugins,
        hosts,
    })
}

/// `[retention]`: the policy applied after each scheduled backup (the same `keep_*` rules as
/// `cairn forget`), whether to prune after it, and how many safety snapshots to keep.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub policy: Policy,
    /// Prune after forgetting (`prune`, default true).
    pub prune: bool,
    /// Safety snapshots (taken before each restore) kept by their own rule: the newest N
    /// (`keep_safety`, default 5; 0 keeps them all).
    pub keep_safety: u32,
}

impl<'de> Deserialize<'de> for RetentionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let prune = match table.remove("prune") {
            None => true,
            Some(toml::Value::Boolean(b)) => b,
            Some(v) => return Err(D::Error::custom(format!("prune: expected true or false, found {v}"))),
        };
        let keep_safety = match table.remove("keep_safety") {
            None => 5,
            Some(toml::Value::Integer(n)) => {
                u32::try_from(n).map_err(|_| D::Error::custom(format!("keep_safety: {n} is not a count")))?
            }
            Some(v) => return Err(D::Error::custom(format!("keep_safety: expected a number, found {v}"))),
        };
        let policy = Policy::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        if policy.is_empty() {
            return Err(D::Error::custom("no keep_* rule: it would forget every snapshot"));
        }
        Ok(Self {
            policy,
            prune,
            keep_safety,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        match parse(Path::new("cairn.toml"), text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = parse_err("repository = \"/b\"\n\n[mariadb]\nsockett = \"/x\"\n");
        assert!(e.starts_with("cairn.toml line 4:") && e.contains("sockett"), "{e}");
        let e = parse_err("repository = 3\n");
        assert!(e.contains("line 1") && e.contains("string"), "{e}");
        let e = parse_err("[files.certs]\npaths = [\"relative/dir\"]\n");
        assert!(
            e.contains("line 1") && e.contains("[files] paths") && e.contains("absolute"),
            "{e}"
        );
        let e =
            parse_err("[files.certs]\npaths = [\"/a\"]\n\n[[exec]]\nname = \"certs\"\ndump = \"x\"\nrestore = \"y\"\n");
        assert!(e.contains("line 4") && e.contains("used by two plugins"), "{e}");
        let e = parse_err("repository = \"/b\"\n[retention]\nkeep_within = \"7x\"\n");
        assert!(e.contains("line 2") && e.contains("keep_within"), "{e}");
        let e = parse_err("[retention]\nprune = true\n");
        assert!(e.contains("no keep_* rule"), "{e}");
        let e = parse_err("[nosuchdb]\nx = 1\n");
        assert!(e.contains("line 1") && e.contains("nosuchdb"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cairn.toml");
        let loaded = load(&path).unwrap();
        let names: Vec<&str> = loaded.plugins.iter().map(|p| p.name()).collect();
        for db in DATABASES {
            assert!(names.contains(db), "examples/cairn.toml lacks [{db}]: {names:?}");
        }
        assert!(loaded.plugins.iter().any(|p| p.kind() == "files"));
        assert!(loaded.plugins.iter().any(|p| p.kind() == "exec"));
    }
}
