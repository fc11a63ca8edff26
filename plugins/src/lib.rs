//! # cairn-plugins
//!
//! Databases and orchestration. Each database is one module of [`db`] implementing
//! [`plugin::Plugin`] (healthcheck, backup, restore, verify) and one line in [`config`]'s
//! `databases!` list; [`ops`] holds the schedule and maintenance mode; the
//! [`controller`] runs the configured plugins concurrently on tokio and writes one snapshot for
//! the whole system, or restores one. Dumps stream into the store as they are produced
//! ([`plugin::ItemSink`]); the store's own threads chunk, compress and encrypt them.
//!
//! Adding a database: see README.md ("Adding a database").

pub mod config;
pub mod controller;
pub mod db;
pub mod error;
pub mod ops;
pub mod plugin;
pub mod process;
pub mod remote;

pub use cairn_store as store;
pub use error::{Error, Result};
