//! The API token: a bearer secret in `DATA_DIR/api-token` (mode 0600) that every request which
//! changes state (`POST /sign`) must carry as `Authorization: Bearer <token>`.
//!
//! `vaultd init` creates it; `vaultd rotate-token` replaces it in place (write to a private
//! temporary file, then rename), and the running node reads the file on each state-changing
//! request, so a rotation takes effect at once without a restart. The token never reaches a log
//! line, a status page or an error: errors name the file only.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::error::NodeError;

/// File name of the token in the data directory.
pub const TOKEN_FILE: &str = "api-token";
/// Random bytes in a token (hex-encoded in the file).
const TOKEN_BYTES: usize = 32;
/// Longest token file read.
const MAX_TOKEN_FILE: u64 = 1024;

/// Where the token of `data_dir` lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// A bearer token (secret).
#[derive(Clone)]
pub struct ApiToken(Zeroizing<String>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<secret>)")
    }
}

impl ApiToken {
    /// The token as sent in the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Read the token file at `file`.
pub fn read(file: &Path) -> Result<ApiToken, NodeError> {
    let err =
        |what: String| NodeError::Config(format!("API token file {}: {what}", file.display()));
    let text = Zeroizing::new(
        crate::config::read_capped(file, MAX_TOKEN_FILE, "too large to be a token").map_err(err)?,
    );
    let token = text.trim();
    if token.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(ApiToken(Zeroizing::new(token.to_string())))
}

/// Write a fresh token for `data_dir`, replacing any earlier one; returns the file.
pub fn rotate(data_dir: &Path) -> Result<PathBuf, NodeError> {
    let file = path(data_dir);
    let tmp = data_dir.join(format!("{TOKEN_FILE}.new"));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp)?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

/// Create the token of `data_dir` unless it exists; returns the file and whether it was made.
pub fn ensure(data_dir: &Path) -> Result<(PathBuf, bool), NodeError> {
    let file = path(data_dir);
    if file.exists() {
        return Ok((file, false));
    }
    write_new(&file)?;
    Ok((file, true))
}

/// Create `file` (it must not exist) readable by its owner only, holding a random token.
fn write_new(file: &Path) -> Result<(), NodeError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, bytes.as_mut());
    let text = Zeroizing::new(hex::encode(bytes.as_ref()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(file)
        .map_err(|e| NodeError::Config(format!("API token file {}: {e}", file.display())))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_private_random_and_rotates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (file, made) = ensure(dir).unwrap();
        assert!(made);
        let first = read(&file).unwrap();
        assert_eq!(first.expose().len(), 2 * TOKEN_BYTES);
        assert!(!ensure(dir).unwrap().1, "an existing token is kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        rotate(dir).unwrap();
        let second = read(&file).unwrap();
        assert!(!second.matches(first.expose()));
        assert!(second.matches(second.expose()));
        assert!(!second.matches(""));
        assert!(!format!("{second:?}").contains(second.expose()));
    }
}
