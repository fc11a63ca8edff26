//! Running the tools a plugin drives (dump and restore commands, server start/stop commands).
//!
//! Every child is async (tokio) so that many plugins wait on their processes at once. Secrets
//! never go on a command line: plugins pass them through option files, environment or stdin.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::error::{Error, Result};

/// How much of a failing command's stderr is kept for its error message.
pub const STDERR_TAIL: usize = 4096;

/// A command for `program args...` with stdin closed and the child killed if dropped.
pub fn command(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// An operator-configured command line, run by `sh -c`.
pub fn shell(line: &str) -> Command {
    command("sh", &["-c", line])
}

/// What to call a command in messages: the program and its first argument.
pub fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    let mut s = std.get_program().to_string_lossy().into_owned();
    if let Some(a) = std.get_args().next() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Reads a child's stderr to its end, keeping the last [`STDERR_TAIL`] bytes.
pub async fn read_tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    String::from_utf8_lossy(&tail).trim().to_string()
}

/// Runs a command to completion and returns its stdout; a non-zero exit is an error carrying
/// the tail of its stderr.
pub async fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(Error::io(format!("cannot start {what}")))?;
    if !out.status.success() {
        let mut err = out.stderr;
        if err.len() > STDERR_TAIL {
            err.drain(..err.len() - STDERR_TAIL);
        }
        let mut stderr = String::from_utf8_lossy(&err).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout)
                .trim()
                .chars()
                .take(STDERR_TAIL)
                .collect();
        }
        return Err(Error::Command {
            what,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs an operator-configured command line; `None` or an empty line does nothing.
pub async fn run_configured(line: Option<&str>) -> Result<()> {
    match line.map(str::trim) {
        Some(l) if !l.is_empty() => output(&mut shell(l)).await.map(drop),
        _ => Ok(()),
    }
}

/// Polls `check` every 250 ms until it succeeds or `secs` pass; returns the last error.
pub async fn wait_until<F, Fut>(secs: u64, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_command_reports_its_status_and_stderr() {
        let err = output(&mut shell("echo fine; echo broken >&2; exit 3"))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c failed"), "{msg}");
        assert!(msg.contains("exit status: 3") && msg.contains("broken"), "{msg}");
        assert_eq!(output(&mut shell("echo fine")).await.unwrap(), "fine\n");
        run_configured(None).await.unwrap();
        assert!(run_configured(Some("false")).await.is_err());
    }
}
