//! Benchmarks live in `benches/store.rs` (criterion) and `peers.sh` (Cairn beside restic and borg).
