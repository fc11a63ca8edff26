//! One module per subcommand.

pub mod agent;
pub mod backup;
pub mod check;
pub mod demo;
pub mod dump;
pub mod forget;
pub mod healthcheck;
pub mod init;
pub mod key;
pub mod maintenance;
pub mod prune;
pub mod reindex;
pub mod repair;
pub mod restore;
pub mod schedule;
pub mod show;
pub mod snapshots;
pub mod system;
pub mod unlock;
