//! The command-line front ends of Cairn: `cairn` (src/main.rs) and `cso_backupnrestore`
//! (src/bin/cso_backupnrestore.rs, the operator interface Cairn replaces) share these modules.
//! They stay thin: parse options, load the configuration, call `cairn-store` and
//! `cairn-plugins`, print.

pub mod cmd;
pub mod common;
pub mod progress;

/// Prints an error and its causes the way both binaries do; exit code 1.
pub fn report(e: &anyhow::Error) -> std::process::ExitCode {
    if common::is_broken_pipe(e) {
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    std::process::ExitCode::FAILURE
}
