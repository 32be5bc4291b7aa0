//! Four validators on hosts of their own (network namespaces, `scripts/testnet.sh`), 50 ms
//! apart one way, with only the bootstrap validator's address in the network definition and
//! one validator that accepts no inbound connection: they find each other, form every vault
//! and sign. Where namespaces cannot be created (not root, no CAP_SYS_ADMIN), the test says
//! so and is skipped, unless `VAULTD_REQUIRE_NETNS=1` (CI, where the probe in scripts/test.sh
//! found them working) makes that a failure.

mod common;

use std::{path::Path, process::Command};

use common::{
    chain_accepts,
    netns::{self, root, Testnet},
    vault, BIN,
};
use serde_json::Value;

const COINS: [&str; 3] = ["BTC", "ETH", "SOL"];
const DELAY_MS: f64 = 50.0;

fn get(api: &str, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", &format!("http://{api}{path}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET {api}{path}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn four_namespaced_validators_50ms_apart_form_every_vault_from_one_bootstrap_address_and_sign() {
    if !netns::usable("the namespaced testnet") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testnet");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let guard = Testnet(dir.clone());
    let out = Command::new("bash")
        .arg(root().join("scripts/testnet.sh"))
        .args([
            "4",
            "--delay",
            "50",
            "--jitter",
            "5",
            "--detach",
            "--timeout",
            "300",
        ])
        .arg("--dir")
        .arg(&dir)
        .arg("--bin-dir")
        .arg(bin_dir)
        // Validator 4 is behind a firewall: every connection it has, it dialled.
        .args(["--outbound-only", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "testnet.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all vaults active"), "{stdout}");

    // Only the bootstrap validator's address is in the definition.
    let network = std::fs::read_to_string(dir.join("network.toml")).unwrap();
    assert_eq!(network.matches("/ip4/").count(), 1, "{network}");
    assert!(!network.contains("addrs"), "{network}");

    let cluster: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap();
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let apis: Vec<&str> = nodes.iter().map(|n| n["api"].as_str().unwrap()).collect();
    let ips: Vec<&str> = apis.iter().map(|a| a.split(':').next().unwrap()).collect();
    let mut group_keys = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let s = get(api, "/status");
        // Each advertises its own namespace's address, never loopback or 0.0.0.0.
        let advertised: Vec<&str> = s["advertised_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            advertised,
            [format!("/ip4/{}/tcp/30555", ips[i])],
            "node {i}"
        );
        for v in s["validators"].as_array().unwrap() {
            if v["peer_id"] == nodes[i]["peer_id"] {
                continue;
            }
            assert_eq!(v["connected"], true, "node {i}: {v}");
            // Two links of 50 ms (± 5) each way: the shaping is there.
            let rtt = v["rtt_ms"].as_f64().unwrap_or(0.0);
            assert!(rtt >= 2.0 * (DELAY_MS - 5.0), "node {i}: rtt {rtt} ms: {v}");
            let addr = v["addr"].as_str().unwrap_or("");
            assert!(!addr.contains("/ip4/127."), "node {i}: {v}");
        }
        let keys: Vec<String> = COINS
            .iter()
            .map(|c| {
                let v = vault(&s, c);
                assert_eq!(v["status"], "active", "node {i} {c}");
                v["group_key"].as_str().unwrap().to_string()
            })
            .collect();
        group_keys.push(keys);
    }
    assert!(
        group_keys.windows(2).all(|w| w[0] == w[1]),
        "one key per coin: {group_keys:?}"
    );

    // The outbound-only validator (its namespace drops every incoming connection attempt) is
    // connected to all three (checked above: every connection it has, it dialled) and holds
    // a share of every vault.
    let status1 = get(apis[0], "/status");
    assert!(vault(&status1, "BTC")["participants"]
        .as_array()
        .unwrap()
        .contains(&nodes[3]["peer_id"]));

    // Sign with every vault, approved on t = 3 validators of the testnet.
    for coin in COINS {
        let msg = [0x5a_u8; 32];
        let out = Command::new(BIN)
            .args(["sign", "--coin", coin, "--cluster"])
            .arg(dir.join("cluster.json"))
            .args(["--message", &hex::encode(msg), "--timeout", "120"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vaultd sign {coin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sig = hex::decode(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert!(
            chain_accepts(coin, vault(&status1, coin), &msg, &sig),
            "{coin}"
        );
    }

    // Stopping removes the nodes, the namespaces and the bridge.
    let tag = std::fs::read_to_string(dir.join("testnet.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("TN_TAG=").map(str::to_string))
        .unwrap();
    drop(guard);
    let spaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&spaces.stdout).contains(&format!("vtn{tag}-")),
        "namespaces left behind"
    );
    let links = Command::new("ip").args(["link", "show"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&format!("vtb{tag}")),
        "bridge left behind"
    );
}
