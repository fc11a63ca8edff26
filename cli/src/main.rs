//! `cairn`: back up, restore, list and check a Cairn repository.
//!
//! The binary is thin: it parses options (clap derive; doc comments are the help text), unlocks
//! the repository and calls `cairn-store`. Errors print as one `error:` line plus their causes and
//! exit 1; clap's usage errors exit 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cairn_cli::cmd;
use cairn_cli::common::GlobalOpts;

/// Cairn: consistent, deduplicated, encrypted backups of a whole platform.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Init(cmd::init::Args),
    Backup(cmd::backup::Args),
    Snapshots(cmd::snapshots::Args),
    Show(cmd::show::Args),
    Restore(cmd::restore::Args),
    Dump(cmd::dump::Args),
    Check(cmd::check::Args),
    Forget(cmd::forget::Args),
    Prune(cmd::prune::Args),
    #[command(subcommand)]
    Repair(cmd::repair::Command),
    #[command(subcommand)]
    Key(cmd::key::Command),
    Unlock(cmd::unlock::Args),
    Healthcheck(cmd::healthcheck::Args),
    Maintenance(cmd::maintenance::Args),
    Reindex(cmd::reindex::Args),
    #[command(subcommand)]
    Schedule(cmd::schedule::Command),
    Demo(cmd::demo::Args),
    Agent(cmd::agent::Args),
}

fn main() -> ExitCode {
    cairn_cli::start();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cairn_cli::clap_exit(e),
    };
    cairn_cli::forget_key_env();
    let result = match cli.command {
        Command::Init(a) => cmd::init::run(&cli.global, a),
        Command::Backup(a) => cmd::backup::run(&cli.global, a),
        Command::Snapshots(a) => cmd::snapshots::run(&cli.global, a),
        Command::Show(a) => cmd::show::run(&cli.global, a),
        Command::Restore(a) => cmd::restore::run(&cli.global, a),
        Command::Dump(a) => cmd::dump::run(&cli.global, a),
        Command::Check(a) => cmd::check::run(&cli.global, a),
        Command::Forget(a) => cmd::forget::run(&cli.global, a),
        Command::Prune(a) => cmd::prune::run(&cli.global, a),
        Command::Repair(c) => cmd::repair::run(&cli.global, c),
        Command::Key(c) => cmd::key::run(&cli.global, c),
        Command::Unlock(a) => cmd::unlock::run(&cli.global, a),
        Command::Healthcheck(a) => cmd::healthcheck::run(&cli.global, a),
        Command::Maintenance(a) => cmd::maintenance::run(&cli.global, a),
        Command::Reindex(a) => cmd::reindex::run(&cli.global, a),
        Command::Schedule(c) => cmd::schedule::run(&cli.global, c),
        Command::Demo(a) => cmd::demo::run(&cli.global, a),
        Command::Agent(a) => cmd::agent::run(&cli.global, a),
    };
    result.unwrap_or_else(|e| cairn_cli::report(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
