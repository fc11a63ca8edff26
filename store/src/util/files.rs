//! Files and directories Cairn creates: private (`0600`/`0700`) whatever the umask, and
//! durable where the crash arguments need it.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use crate::error::{IoContext, Result};

/// Creates a directory and its missing parents, each `0700` whatever the umask (everything Cairn
/// keeps may reveal what is backed up).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).at(dir)
}

/// Makes a file Cairn created readable by its owner only (`0600`), whatever the umask.
pub fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = fs::metadata(path).at(path)?;
    if md.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).at(path)?;
    }
    Ok(())
}

/// Opens a new file, `0600` whatever the umask; fails if it exists.
pub fn create_private_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at(path)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
