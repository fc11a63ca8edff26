//! Database plugins and the controller that builds system-wide snapshots from them.
//!
//! Not built yet: issue 4 adds the `Plugin` trait, the registry and the MariaDB, etcd, ZooKeeper,
//! certificate, Cassandra, Elasticsearch and ArangoDB plugins on top of `cairn-store`.

pub use cairn_store as store;
