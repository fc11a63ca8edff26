//! This host and its processes: the name recorded in locks and temp files, and whether a
//! recorded process is proven gone (pid namespace and start time, never age).

use std::fs;
use std::path::Path;

/// This host's name, for lock files and temp names.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid namespace of this process, as `/proc/self/ns/pid` names it.
pub fn current_pidns() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether process `pid` of this host, recorded with its pid namespace and start time, is
/// proven gone: the namespace is this process's, and no such pid runs or the one that does
/// started at another time. Without a namespace recorded nothing can be proven.
pub fn process_gone(pid: u32, pidns: Option<&str>, start: Option<u64>) -> bool {
    if pidns.is_none() || pidns.map(str::to_string) != current_pidns() {
        return false;
    }
    match process_start(pid) {
        None => true,
        Some(now) => start.is_some_and(|s| s != now),
    }
}

/// When a process started (field 22 of `/proc/<pid>/stat`), or `None` if it is not running.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
