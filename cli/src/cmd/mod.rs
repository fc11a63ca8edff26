//! One module per subcommand.

pub mod backup;
pub mod check;
pub mod demo;
pub mod dump;
pub mod init;
pub mod key;
pub mod repair;
pub mod restore;
pub mod show;
pub mod snapshots;
pub mod unlock;
