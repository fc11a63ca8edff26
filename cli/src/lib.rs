//! The command-line front ends of Cairn: `cairn` (src/main.rs) and `cso_backupnrestore`
//! (src/bin/cso_backupnrestore.rs, the operator interface Cairn replaces) share these modules.
//! They stay thin: parse options, load the configuration, call `cairn-store` and
//! `cairn-plugins`, print.

pub mod cmd;
pub mod common;
pub mod progress;

/// The exit status of a command whose output was cut off by a closed pipe, as if SIGPIPE had
/// ended it (`cairn snapshots | head -1`); it prints nothing more.
pub const BROKEN_PIPE_STATUS: u8 = 128 + 13;

/// The first thing either binary does, while it is still one thread: takes the passphrase out of
/// the environment, so no child process (dump tools, plugin and exec commands, hooks) inherits
/// it, and makes a failed write to standard output or error a clear error instead of a panic.
pub fn start() {
    secrets::take();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // What `println!` and `eprintln!` panic with when the write fails.
        if let Some(rest) = msg.strip_prefix("failed printing to ") {
            if rest.contains("Broken pipe") {
                std::process::exit(BROKEN_PIPE_STATUS.into());
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: cannot write to {rest}");
            std::process::exit(1);
        }
        default(info)
    }));
}

static CSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this process as `cso_backupnrestore`, whose messages must name only what it has: its
/// configuration file and variables, not `cairn`'s flags.
pub fn set_cso() {
    CSO.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process is `cso_backupnrestore`.
pub fn is_cso() -> bool {
    CSO.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints what clap has to say (help, version, a usage error) and exits as the rest of the
/// binary does when the output cannot be written: 141 for a closed pipe, 1 for other errors.
pub fn clap_exit(e: clap::Error) -> std::process::ExitCode {
    match e.print() {
        Ok(()) => std::process::ExitCode::from(e.exit_code().clamp(0, 255) as u8),
        Err(io) if io.kind() == std::io::ErrorKind::BrokenPipe => std::process::ExitCode::from(BROKEN_PIPE_STATUS),
        Err(io) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: cannot write the output: {io}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// After the options are parsed: the variables that point at key material go too.
pub fn forget_key_env() {
    for v in ["CAIRN_PASSWORD_FILE", "CAIRN_IDENTITY"] {
        std::env::remove_var(v);
    }
}

/// The passphrase given in the environment, kept in memory only.
pub mod secrets {
    use std::sync::OnceLock;

    static PASSWORD: OnceLock<Option<String>> = OnceLock::new();

    /// Reads `CAIRN_PASSWORD` and removes it from the environment.
    pub fn take() {
        let v = std::env::var("CAIRN_PASSWORD").ok();
        let _ = PASSWORD.set(v);
        std::env::remove_var("CAIRN_PASSWORD");
    }

    /// `CAIRN_PASSWORD` as it was when the process started.
    pub fn password() -> Option<String> {
        PASSWORD.get_or_init(|| std::env::var("CAIRN_PASSWORD").ok()).clone()
    }
}

/// Prints an error and its causes the way both binaries do; exit code 1.
pub fn report(e: &anyhow::Error) -> std::process::ExitCode {
    if common::is_broken_pipe(e) {
        return std::process::ExitCode::from(BROKEN_PIPE_STATUS);
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    std::process::ExitCode::FAILURE
}
