//! Small helpers shared by the store: time ([`time`]), private files ([`files`]), this host and
//! its processes ([`host`]), and byte counts for people.

mod files;
mod host;
mod time;

pub use files::*;
pub use host::*;
pub use time::*;

/// Crash tests: when `CAIRN_CRASH_POINT` names this point, the process SIGKILLs itself here,
/// so a test can stop an operation at an exact step, as a power cut or `kill -9` would.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("CAIRN_CRASH_POINT").is_ok_and(|v| v == name) {
        eprintln!("cairn: CAIRN_CRASH_POINT={name}: killing myself");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// `1.5 GiB`
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
