//! The namespaced testnet (`scripts/testnet.sh`) from a test: whether namespaces can be made
//! here, starting one, a guard that removes it, and its nodes' APIs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// The repository's top directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why network namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // A name per probe: tests of one binary probe at the same time.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("vtprobe{}-{k}", std::process::id());
    match Command::new("ip").args(["netns", "add", &name]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            None
        }
        Ok(out) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip`: {e}")),
    }
}

/// True when the test can go on; false (after saying why) when it is skipped. Where
/// `VAULTD_REQUIRE_NETNS=1` (CI, after its probe found namespaces working) a missing
/// capability is a failure, never a skip.
pub fn usable(test: &str) -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    assert!(
        std::env::var("VAULTD_REQUIRE_NETNS").as_deref() != Ok("1"),
        "VAULTD_REQUIRE_NETNS=1 but network namespaces cannot be created: {why}"
    );
    eprintln!("SKIPPED {test}: the namespaced testnet needs network namespaces: {why}");
    false
}

/// Removes the testnet (nodes, namespaces, bridge) however the test ends.
pub struct Testnet(pub PathBuf);

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/stop-cluster.sh"))
            .arg(&self.0)
            .status();
    }
}

/// `scripts/testnet.sh` with `args`, the test's binaries and `--dir dir`.
pub fn testnet_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/testnet.sh"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--bin-dir")
        .arg(Path::new(super::BIN).parent().unwrap_or(Path::new(".")));
    cmd
}

/// Run `scripts/testnet-partition.sh dir args`.
pub fn partition(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(root().join("scripts/testnet-partition.sh"))
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testnet-partition.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The testnet's `cluster.json`.
pub fn cluster(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap()
}

/// `GET path` of `api` as JSON, if it answers 200.
pub async fn get_json(api: &str, path: &str) -> Option<Value> {
    match vaultd::http_client::get(api, path).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}
