//! `--config FILE`: settings of `vaultd run` from a TOML file.
//!
//! The file is read before the command line is parsed; each of its keys becomes the matching
//! `VAULTD_*` environment variable unless that variable is already set. So flags win over the
//! environment, the environment over the file, and the file over the defaults, and clap checks
//! every value the same way whatever its source. A key the node does not know, or a value of the
//! wrong type, is an error naming the key.

use std::path::{Path, PathBuf};

use crate::error::NodeError;

/// Largest config file read.
const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// What a key may hold.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Flag,
    List,
}

/// The keys of the config file, their environment variables and types.
const KEYS: &[(&str, &str, Kind)] = &[
    ("data_dir", "VAULTD_DATA_DIR", Kind::Text),
    ("network", "VAULTD_NETWORK", Kind::Text),
    ("password_file", "VAULTD_PASSWORD_FILE", Kind::Text),
    (
        "insecure_no_passphrase",
        "VAULTD_INSECURE_NO_PASSPHRASE",
        Kind::Flag,
    ),
    (
        "insecure_permissions",
        "VAULTD_INSECURE_PERMISSIONS",
        Kind::Flag,
    ),
    ("listen", "VAULTD_LISTEN", Kind::List),
    ("api", "VAULTD_API", Kind::Text),
    ("api_allow_remote", "VAULTD_API_ALLOW_REMOTE", Kind::Flag),
    ("metrics_listen", "VAULTD_METRICS_LISTEN", Kind::Text),
    ("bootstrap", "VAULTD_BOOTSTRAP", Kind::List),
    ("external_address", "VAULTD_EXTERNAL_ADDRESS", Kind::List),
    ("sign_timeout", "VAULTD_SIGN_TIMEOUT", Kind::Integer),
    ("approval_ttl", "VAULTD_APPROVAL_TTL", Kind::Integer),
    ("sign_policy", "VAULTD_SIGN_POLICY", Kind::Text),
    ("dkg_timeout", "VAULTD_DKG_TIMEOUT", Kind::Integer),
    ("log_format", "VAULTD_LOG_FORMAT", Kind::Text),
];

/// The config file named by `--config FILE`/`--config=FILE` in `args` or by `VAULTD_CONFIG`.
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("VAULTD_CONFIG").map(PathBuf::from)
}

/// The environment variables a config file sets: (variable, value) for every key, checked.
pub fn read(path: &Path) -> Result<Vec<(&'static str, String)>, NodeError> {
    let err = |msg: String| NodeError::Config(format!("config file {}: {msg}", path.display()));
    let text = read_capped(path, MAX_CONFIG_SIZE, "over 1 MiB").map_err(err)?;
    parse(&text).map_err(err)
}

/// The text of an operator's file (settings, policy, token) of at most `max` bytes; past it,
/// the error is `too_big`. Reads at most `max + 1` bytes, so a file that grows while it is read
/// cannot make the node read more.
pub fn read_capped(path: &Path, max: u64, too_big: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // Sized up front: a secret (the token) is not left behind in reallocated buffers.
    let size = file
        .metadata()
        .map_or(0, |m| m.len())
        .min(max.saturating_add(1));
    let mut text = String::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > max {
        return Err(too_big.to_string());
    }
    Ok(text)
}

fn parse(text: &str) -> Result<Vec<(&'static str, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some(&(_, var, kind)) = KEYS.iter().find(|(k, _, _)| k == key) else {
            let known: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
            return Err(format!("unknown key `{key}` (known: {})", known.join(", ")));
        };
        let wrong = |what: &str| format!("`{key}` must be {what}, not {}", value.type_str());
        let text = match (kind, value) {
            (Kind::Text, toml::Value::String(s)) => s.clone(),
            (Kind::Text, _) => return Err(wrong("a string")),
            (Kind::Integer, toml::Value::Integer(i)) if *i >= 0 => i.to_string(),
            (Kind::Integer, _) => return Err(wrong("a non-negative integer")),
            (Kind::Flag, toml::Value::Boolean(b)) => b.to_string(),
            (Kind::Flag, _) => return Err(wrong("true or false")),
            (Kind::List, toml::Value::Array(items)) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) if !s.contains(',') => parts.push(s.clone()),
                        _ => return Err(wrong("an array of strings without commas")),
                    }
                }
                parts.join(",")
            }
            (Kind::List, _) => return Err(wrong("an array of strings")),
        };
        out.push((var, text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_variables_and_errors_name_the_key() {
        let vars = parse(
            "dkg_timeout = 5\nlisten = [\"/ip4/127.0.0.1/tcp/1\", \"/ip4/127.0.0.1/tcp/2\"]\n\
             insecure_no_passphrase = true\napi = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        assert!(vars.contains(&("VAULTD_DKG_TIMEOUT", "5".into())));
        assert!(vars.contains(&(
            "VAULTD_LISTEN",
            "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2".into()
        )));
        assert!(vars.contains(&("VAULTD_INSECURE_NO_PASSPHRASE", "true".into())));
        let e = parse("dkg_timout = 5").unwrap_err();
        assert!(e.contains("unknown key `dkg_timout`"), "{e}");
        let e = parse("dkg_timeout = \"soon\"").unwrap_err();
        assert!(
            e.contains("`dkg_timeout` must be a non-negative integer"),
            "{e}"
        );
        let e = parse("listen = \"/ip4/1.2.3.4/tcp/1\"").unwrap_err();
        assert!(e.contains("`listen` must be an array"), "{e}");
        assert!(parse("dkg_timeout = ").is_err());
    }

    #[test]
    fn the_config_path_comes_from_the_flag() {
        let args: Vec<String> = ["vaultd", "--config", "a.toml", "run"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(config_path(&args), Some(PathBuf::from("a.toml")));
        let args: Vec<String> = ["vaultd", "run", "--config=b.toml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(config_path(&args), Some(PathBuf::from("b.toml")));
    }
}
