//! Host hygiene: the data directory (keys, shares, the API token, the control socket) and the
//! passphrase file must be the operator's alone. A node refuses to start, naming the file, when
//! either can be read by group or others, unless the operator passes `--insecure-permissions`.

use std::path::Path;

use crate::error::NodeError;

/// Refuse `path` (what it is: `what`) if group or others may read, write or enter it; with
/// `allow`, only warn.
pub fn check_private(path: &Path, what: &str, allow: bool) -> Result<(), NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| NodeError::Config(format!("{what} {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let fix = if meta.is_dir() {
                "chmod 700"
            } else {
                "chmod 600"
            };
            if allow {
                tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "{what} is open to other users (--insecure-permissions)");
                return Ok(());
            }
            return Err(NodeError::Config(format!(
                "{what} {} has mode {mode:o}: other users could read it; {fix} it, or pass \
                 --insecure-permissions",
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what, allow);
    Ok(())
}

/// Create `dir` (and its parents) if needed, and make it the owner's alone (0700).
pub fn make_private_dir(dir: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Create `dir` inside a private parent as 0700 from the start (no moment in which it is
/// wider), or tighten it to 0700 if it exists.
pub fn private_subdir(dir: &Path) -> Result<(), NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}
