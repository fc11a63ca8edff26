//! Delta encoding of changed chunks, through the real binary.

mod support;

use support::*;

/// A dump of `rows` rows where version `v` has rewritten every row whose id % 997 < v (so each
/// version changes a few rows in every region of the file, as a database dump does).
fn version(rows: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for id in 0..rows {
        let gen = if id % 997 < v { v } else { 0 };
        let r = random_bytes(60, id * 31 + gen * 7 + 1);
        let digits: String = r.iter().map(|b| char::from(b'0' + b % 10)).collect();
        out.extend_from_slice(format!("({id},{gen},'{digits}'),\n").as_bytes());
    }
    out
}

fn check_json(env: &Env) -> serde_json::Value {
    let o = env.run(&["check", "--read-data", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn changed_chunks_are_stored_as_small_deltas_and_read_back() {
    let env = Env::new();
    let rows = 60_000; // ~4.5 MB
    let v0 = version(rows, 0);
    let s0 = env.backup_bytes("v0", "db.sql", &v0);
    assert_eq!(json_u64(&s0, "chunks_delta"), 0, "nothing to delta against yet");
    let mut previous_added = json_u64(&s0, "bytes_added");
    for v in 1..=4 {
        let data = version(rows, v);
        let s = env.backup_bytes(&format!("v{v}"), "db.sql", &data);
        let (new, delta, added) = (
            json_u64(&s, "chunks_new"),
            json_u64(&s, "chunks_delta"),
            json_u64(&s, "bytes_added"),
        );
        assert!(new > 10, "every region changed: {s}");
        assert!(delta * 10 >= new * 9, "most changed chunks are deltas: {s}");
        assert!(added * 20 < json_u64(&s0, "bytes_added"), "v{v} added {added}");
        previous_added = previous_added.min(added);
        assert_eq!(env.dump(&format!("v{v}"), "db.sql"), data);
    }
    assert!(previous_added > 0);
    assert_eq!(env.dump("v0", "db.sql"), v0);
    let report = check_json(&env);
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");
    assert!(report["deepest_delta_chain"].as_u64().unwrap() >= 3, "{report}");
    let show = env.ok(&["show", "v4"]);
    assert!(show.contains("as deltas") && show.contains("stored whole"), "{show}");
}

#[test]
fn a_damaged_base_is_named_with_the_deltas_and_snapshots_it_breaks() {
    let env = Env::new();
    let rows = 40_000;
    env.backup_bytes("v0", "db.sql", &version(rows, 0));
    let base_packs = env.pack_files();
    env.backup_bytes("v1", "db.sql", &version(rows, 1));
    let s2 = env.backup_bytes("v2", "db.sql", &version(rows, 2));
    assert!(json_u64(&s2, "chunks_delta") > 0);
    // Damage every blob in the first half of v0's first pack (a byte every 2 KiB; the trailer
    // at the end stays): v0's chunks there are bases of v1's deltas, which are bases of v2's.
    // (One damaged byte hit a chunk no delta used in about one run in thirteen: the keyed
    // chunker cuts differently in every repository.)
    let victim = &base_packs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    for at in (0..bytes.len() / 2).step_by(2048) {
        bytes[at] ^= 0x20;
    }
    std::fs::write(victim, &bytes).unwrap();
    let out = env.fails(&["check", "--read-data"]);
    assert!(out.contains("its delta base is unreadable"), "{out}");
    for snap in ["v0", "v1", "v2"] {
        assert!(
            out.contains(&format!("snapshot \"{snap}\": item \"db.sql\"")),
            "{snap} not named:\n{out}"
        );
    }
    assert!(out.contains("chunk(s) damaged, e.g. "), "{out}");
    let err = env.fails(&["dump", "v2", "db.sql"]);
    assert!(err.contains("integrity error"), "{err}");

    // Without reading data, a base whose pack is gone is enough to know its deltas are broken.
    std::fs::remove_file(victim).unwrap();
    let out = env.fails(&["check"]);
    assert!(out.contains("depend on damaged or missing bases"), "{out}");
    assert!(
        out.contains("snapshot \"v0\": item \"db.sql\"") && out.contains("missing, e.g. "),
        "{out}"
    );
    for snap in ["v1", "v2"] {
        assert!(
            out.contains(&format!("snapshot \"{snap}\": item \"db.sql\"")),
            "{snap} not named:\n{out}"
        );
    }
}

#[test]
fn deltas_can_be_turned_off_and_chains_are_bounded() {
    let off = Env::empty();
    off.ok(&["init", "--no-delta"]);
    off.backup_bytes("v0", "d", &version(30_000, 0));
    let s = off.backup_bytes("v1", "d", &version(30_000, 1));
    assert_eq!(json_u64(&s, "chunks_delta"), 0);
    assert!(json_u64(&s, "chunks_new") > 0);

    let bounded = Env::empty();
    bounded.ok(&["init", "--delta-max-depth", "2"]);
    let (mut whole_after_first, mut deltas_after_first) = (0, 0);
    for v in 0..6 {
        let s = bounded.backup_bytes(&format!("v{v}"), "d", &version(30_000, v));
        if v >= 1 {
            whole_after_first += json_u64(&s, "chunks_new") - json_u64(&s, "chunks_delta");
            deltas_after_first += json_u64(&s, "chunks_delta");
        }
    }
    let report = check_json(&bounded);
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["deepest_delta_chain"].as_u64(), Some(2), "{report}");
    // A chain at its limit restarts from its root, one delta deep, rather than whole (a chunk
    // whose cut moved off its root's may still be stored whole).
    assert!(
        whole_after_first * 10 <= deltas_after_first,
        "chains at their limit restart from their roots: {whole_after_first} whole, {deltas_after_first} deltas"
    );
    assert_eq!(bounded.dump("v5", "d"), version(30_000, 5));
}
