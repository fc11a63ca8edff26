//! The databases, one module each, and what several of them share.
//!
//! Each database module has a `Config` (its section of `cairn.toml`), a `build` function that
//! checks it and makes the plugin, and the plugin itself (`crate::plugin::Plugin`). A new
//! database is a new module here plus one line in `crate::config`'s `databases!` list, which
//! is also the list `cso_backupnrestore -d` accepts.

pub mod arangodb;
pub mod cassandra;
pub mod elasticsearch;
pub mod etcd;
pub mod mariadb;
pub mod zookeeper;

pub mod exec;
pub mod files;

pub mod common;
pub mod datadir;
pub mod http;
