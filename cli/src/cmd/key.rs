use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cairn_store::NewKey;

use crate::common::{print_table, GlobalOpts};

/// Manage the keys that unlock the repository (no data is re-encrypted).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Add a key: a new passphrase, or an age X25519 recipient / identity file.
    Add {
        /// Read the new passphrase from this file (first line).
        #[arg(long, conflicts_with_all = ["recipient", "new_identity"])]
        new_password_file: Option<PathBuf>,
        /// An age recipient (`age1...`) whose identity will unlock the repository.
        #[arg(long, conflicts_with = "new_identity")]
        recipient: Option<String>,
        /// An age identity file whose recipient will unlock the repository.
        #[arg(long)]
        new_identity: Option<PathBuf>,
        /// A label stored inside the key file.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List key files.
    List,
    /// Write a new age X25519 identity file (mode 0600) and print its recipient.
    GenerateIdentity { path: PathBuf },
    /// Remove a key file (not the one in use, nor the last).
    Remove { id: String },
}

pub fn run(g: &GlobalOpts, c: Command) -> Result<ExitCode> {
    if let Command::GenerateIdentity { path } = &c {
        let recipient = cairn_store::generate_identity_file(path)?;
        println!("wrote {}; its recipient is {recipient}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let repo = g.open()?;
    match c {
        Command::GenerateIdentity { .. } => unreachable!("handled above"),
        Command::Add {
            new_password_file,
            recipient,
            new_identity,
            label,
        } => {
            let key = if let Some(r) = recipient {
                NewKey::Recipient(r)
            } else if let Some(f) = new_identity {
                NewKey::Recipient(cairn_store::recipient_of_identity_file(&f)?)
            } else if let Some(f) = new_password_file {
                let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
                let p = text.lines().next().unwrap_or("").to_string();
                if p.is_empty() {
                    bail!("{} holds no passphrase", f.display());
                }
                NewKey::Passphrase {
                    passphrase: p.into(),
                    log_n: g.scrypt_log_n,
                }
            } else {
                let a = rpassword::prompt_password("new passphrase: ")?;
                let b = rpassword::prompt_password("again: ")?;
                if a != b || a.is_empty() {
                    bail!("the passphrases differ or are empty");
                }
                NewKey::Passphrase {
                    passphrase: a.into(),
                    log_n: g.scrypt_log_n,
                }
            };
            let id = repo.add_key(&key, &label)?;
            println!("added key {id}");
        }
        Command::List => {
            let rows: Vec<Vec<String>> = repo
                .list_keys()?
                .into_iter()
                .map(|k| vec![if k.current { "*".into() } else { String::new() }, k.id, k.kind])
                .collect();
            print_table(&["", "ID", "KIND"], &rows);
        }
        Command::Remove { id } => {
            repo.remove_key(&id)?;
            println!("removed key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
