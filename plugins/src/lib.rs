//! # cairn-plugins
//!
//! Databases and orchestration. Each database is one module implementing [`plugin::Plugin`]
//! (healthcheck, backup, restore, verify) and one line in [`config`]'s `databases!` list; the
//! [`controller`] runs the configured plugins concurrently on tokio and writes one snapshot for
//! the whole system, or restores one. Dumps stream into the store as they are produced
//! ([`plugin::ItemSink`]); the store's own threads chunk, compress and encrypt them.
//!
//! Adding a database: see README.md ("Adding a database").

pub mod arangodb;
pub mod cassandra;
pub mod config;
pub mod controller;
pub mod datadir;
pub mod elasticsearch;
pub mod error;
pub mod etcd;
pub mod exec;
pub mod files;
pub mod http;
pub mod maintenance;
pub mod mariadb;
pub mod plugin;
pub mod process;
pub mod schedule;
pub mod zookeeper;

pub use cairn_store as store;
pub use error::{Error, Result};
