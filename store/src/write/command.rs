//! Command output as an item: the dump tools' standard output streams straight into the backup.

use std::io::Read;
use std::process::{Command, Stdio};

use super::Backup;
use crate::error::{Error, Result};
use crate::snapshot::Item;

impl Backup {
    /// Adds a command's standard output as a stream. A non-zero exit is an error (the caller
    /// should then drop the backup); empty output with exit 0 is kept with a warning.
    pub fn add_command_output(&self, name: &str, argv: &[String]) -> Result<Item> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| Error::Invalid("no command given".into()))?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Source {
                path: prog.clone(),
                reason: format!("cannot start command: {e}"),
            })?;
        let mut stderr = child.stderr.take().expect("piped");
        let err_thread = std::thread::spawn(move || {
            // Keep the last 4 KiB of stderr for the error message; pass it all through.
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                use std::io::Write;
                let _ = std::io::stderr().write_all(&buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            String::from_utf8_lossy(&tail).trim().to_string()
        });
        let stdout = child.stdout.take().expect("piped");
        let added = self.add_stream(name, stdout);
        let status = child.wait().map_err(|e| Error::Source {
            path: prog.clone(),
            reason: e.to_string(),
        });
        let tail = err_thread.join().unwrap_or_default();
        let item = added?;
        let status = status?;
        if !status.success() {
            self.remove_item(name);
            let mut reason = format!("command {argv:?} failed ({status})");
            if !tail.is_empty() {
                reason.push_str(&format!("; stderr: {tail}"));
            }
            return Err(Error::Source {
                path: name.to_string(),
                reason,
            });
        }
        if item.size == 0 {
            self.warn(format!(
                "command {argv:?} for item {name:?} exited 0 but wrote nothing; kept an empty item"
            ));
        }
        Ok(item)
    }
}
