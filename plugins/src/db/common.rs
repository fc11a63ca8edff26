//! Checks every database module applies to its configuration section.

use std::path::Path;

/// Checks that a configured path is absolute; `key` names it in the message.
pub fn absolute(key: &str, p: &Path) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{key} = {:?} must be an absolute path",
            p.display().to_string()
        ))
    }
}

/// Checks a plugin or item name: letters, digits, `-`, `_`, `.`.
pub fn plain_name(key: &str, name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(())
    } else {
        Err(format!(
            "{key} = {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
        ))
    }
}
