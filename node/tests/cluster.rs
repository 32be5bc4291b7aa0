//! Four `vaultd` processes on loopback run the signature process from first start to
//! `PublicAddressAvailable` for BTC, ETH and SOL.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sha3::Keccak256;

const COINS: [&str; 3] = ["BTC", "ETH", "SOL"];

fn tagged(tag: &[u8], data: &[u8]) -> [u8; 32] {
    let t = Sha256::digest(tag);
    Sha256::new()
        .chain_update(t)
        .chain_update(t)
        .chain_update(data)
        .finalize()
        .into()
}

/// Independent checks of each address against the group key (libsecp256k1, sha3, bs58).
fn check_address(coin: &str, group_key_hex: &str, address: &str) {
    let key = hex::decode(group_key_hex).unwrap();
    match coin {
        "BTC" => {
            let (hrp, version, program) = bech32::segwit::decode(address).unwrap();
            assert_eq!(hrp, bech32::hrp::BC);
            assert_eq!(version, bech32::segwit::VERSION_1);
            let secp = secp256k1::Secp256k1::verification_only();
            let pk = secp256k1::PublicKey::from_slice(&key).unwrap();
            let (xonly, _) = pk.x_only_public_key();
            let t =
                secp256k1::Scalar::from_be_bytes(tagged(b"TapTweak", &xonly.serialize())).unwrap();
            let (q, _) = xonly.add_tweak(&secp, &t).unwrap();
            assert_eq!(program, q.serialize().to_vec(), "P2TR output key");
        }
        "ETH" => {
            let pk = secp256k1::PublicKey::from_slice(&key).unwrap();
            let hash = Keccak256::digest(&pk.serialize_uncompressed()[1..]);
            let lower = hex::encode(&hash[12..]);
            assert_eq!(address[2..].to_lowercase(), lower);
            let check = Keccak256::digest(lower.as_bytes());
            for (i, c) in address[2..].chars().enumerate() {
                let nibble = (check[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0xf;
                if c.is_ascii_alphabetic() {
                    assert_eq!(
                        c.is_ascii_uppercase(),
                        nibble >= 8,
                        "EIP-55 checksum of {address}"
                    );
                }
            }
        }
        "SOL" => {
            assert_eq!(key.len(), 32);
            assert_eq!(bs58::decode(address).into_vec().unwrap(), key);
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_agree_on_every_vault_and_follow_a_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (1..=4)
        .map(|i| tmp.path().join(format!("node{i}")))
        .collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d)).collect();
    // A second init refuses to overwrite the identity.
    let again = Command::new(BIN)
        .args(["init", "--insecure-no-passphrase", "--data-dir"])
        .arg(&dirs[0])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let network = tmp.path().join("network.toml");
    write_network(&network, &ids, &COINS);
    let first = Node::start(&dirs[0], &network, None).await;
    let mut nodes = vec![first];
    for d in &dirs[1..] {
        let boot = nodes[0].p2p.clone();
        nodes.push(Node::start(d, &network, Some(&boot)).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_all_active(&refs, COINS.len(), Duration::from_secs(240)).await;

    let mut statuses = Vec::new();
    for n in &nodes {
        statuses.push(n.status().await.unwrap());
    }
    // The operator's view: `vaultd status` and `vaultd peers`.
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let summary = run(&["status", "--api", &nodes[0].api]);
    assert!(
        summary.contains("peers: 3 of 3 validators connected"),
        "{summary}"
    );
    for coin in COINS {
        let line = summary
            .lines()
            .find(|l| l.trim_start().starts_with(coin))
            .unwrap_or_else(|| panic!("no {coin} line in {summary}"));
        assert!(line.contains("active") && line.contains("3-of-4"), "{line}");
    }
    let peers = run(&["peers", "--api", &nodes[0].api]);
    for id in &ids[1..] {
        let line = peers.lines().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(
            line.contains("connected") && line.contains("/ip4/127.0.0.1/tcp/"),
            "{line}"
        );
        // Identify names the software a peer runs.
        let agent = format!("vaultd/{}", env!("CARGO_PKG_VERSION"));
        assert!(line.contains(&agent), "{line}");
    }
    // Listening on loopback only, a node advertises its loopback address (its peers are on
    // the same host); never the unspecified address.
    assert!(
        summary.contains(&format!(
            "advertised to peers: {}",
            nodes[0].p2p.split("/p2p/").next().unwrap()
        )),
        "{summary}"
    );
    let json: Value =
        serde_json::from_str(&run(&["status", "--json", "--api", &nodes[0].api])).unwrap();
    assert_eq!(json["peer_id"], Value::String(ids[0].clone()));
    let all_ids: BTreeSet<String> = ids.iter().cloned().collect();
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(s["peer_id"], Value::String(ids[i].clone()));
        assert_eq!(s["network"], "it");
        let peers: BTreeSet<String> = s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        // The definition lists no addresses and nodes 2-4 were given node 1's address only:
        // each found every other validator (identify + Kademlia on the network's protocol).
        let others: BTreeSet<String> = all_ids.iter().filter(|p| **p != ids[i]).cloned().collect();
        assert!(others.is_subset(&peers), "node {i} peers {peers:?}");
    }
    for coin in COINS {
        let v0 = vault(&statuses[0], coin);
        for s in &statuses[1..] {
            let v = vault(s, coin);
            assert_eq!(v["group_key"], v0["group_key"], "{coin} group key");
            assert_eq!(v["address"], v0["address"], "{coin} address");
        }
        assert_eq!(v0["threshold"], 3);
        let parts: BTreeSet<String> = v0["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(parts, all_ids);
        check_address(
            coin,
            v0["group_key"].as_str().unwrap(),
            v0["address"].as_str().unwrap(),
        );
    }

    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains("vaultd_messages_received_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vaultd_dkg_phase{coin=\"BTC\"} 6"),
        "{metrics}"
    );
    assert!(metrics.contains("vaultd_peers_connected 3"), "{metrics}");
    for name in [
        "vaultd_validators_missing 0",
        "vaultd_sent_bytes_total{protocol=\"direct\",kind=\"EncryptedKeyShareOut\"}",
        // Peers that subscribed after node 0 announced got its announcements replayed.
        "vaultd_messages_sent_total{protocol=\"direct\",kind=\"AnnouncementReplay\"}",
        "vaultd_received_bytes_total{protocol=\"gossip\",kind=\"KeyGenCommitmentsDigest\"}",
        "vaultd_dkg_duration_seconds_count{coin=\"BTC\"} 1",
        "vaultd_dkg_outcomes_total{coin=\"SOL\",outcome=\"active\"} 1",
        "vaultd_db_size_bytes",
    ] {
        assert!(metrics.contains(name), "no {name} in {metrics}");
    }
    // Every metric the Grafana dashboard charts is exposed.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testnet/grafana/vaultd-dashboard.json"),
    )
    .unwrap();
    let mut charted = BTreeSet::new();
    for piece in dashboard.split("vaultd_").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        charted.insert(format!("vaultd_{}", name.trim_end_matches("_bucket")));
    }
    charted.remove("vaultd_"); // the dashboard's uid
    assert!(charted.len() >= 12, "{charted:?}");
    // Families with no sample yet (nobody left out, no signing in this test) are not exposed;
    // those must at least be registered.
    let source = include_str!("../src/metrics.rs");
    let empty_here = [
        ("vaultd_dkg_excluded", "\"dkg_excluded\""),
        ("vaultd_sign_cheaters_total", "\"sign_cheaters\""),
        ("vaultd_rate_limited_total", "\"rate_limited\""),
        ("vaultd_messages_rejected_total", "\"messages_rejected\""),
        ("vaultd_sign_duration_seconds", "\"sign_duration\""),
        ("vaultd_sign_requests_total", "\"sign_requests\""),
    ];
    for name in &charted {
        if metrics.contains(&format!("# TYPE {name} ")) {
            continue;
        }
        let registered = empty_here
            .iter()
            .any(|(n, reg)| n == name && source.contains(reg));
        assert!(
            registered,
            "the dashboard charts {name}, which /metrics does not expose"
        );
    }
    // The exposition passes promtool (installed by scripts/test.sh; required there).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(metrics.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => assert!(
            std::env::var_os("VAULTD_REQUIRE_PROMTOOL").is_none(),
            "promtool is required here: {e}"
        ),
    }
    assert!(metrics.contains("libp2p_"), "libp2p metrics missing");
    let (code, _) = vaultd::http_client::get(&nodes[0].api, "/health")
        .await
        .unwrap();
    assert_eq!(code, 200);

    // Step 4: node 2 rotates its BTC processor key; every peer replaces it and verifies the
    // encrypted public key exchange under the new key.
    let reply = cli(&["rotate-key", "--coin", "BTC"], &dirs[1]);
    let new_key = reply["pubkey"].as_str().unwrap().to_string();
    assert_eq!(reply["seq"], 1);
    for (i, n) in nodes.iter().enumerate() {
        if i == 1 {
            continue;
        }
        let node2 = ids[1].clone();
        let want = new_key.clone();
        wait_for(
            "the rotated key at every peer",
            Duration::from_secs(60),
            || async {
                let Some(s) = n.status().await else {
                    return false;
                };
                s["validators"].as_array().unwrap().iter().any(|v| {
                    v["peer_id"] == Value::String(node2.clone())
                        && v["processor_keys"]["BTC"]["pubkey"] == Value::String(want.clone())
                        && v["processor_keys"]["BTC"]["seq"] == 1
                        && v["processor_keys"]["BTC"]["verified"] == true
                })
            },
        )
        .await;
    }
    // Vaults are untouched by the rotation.
    for n in &nodes {
        assert!(all_active(&n.status().await.unwrap(), COINS.len()));
    }

    // A restarted node comes back with its vaults from RocksDB and reconnects.
    let before = nodes[2].status().await.unwrap()["vaults"].clone();
    let dir = nodes[2].dir.clone();
    let log_len = nodes[2].log().len();
    drop(nodes.remove(2));
    let boot = nodes[0].p2p.clone();
    let restarted = Node::start(&dir, &network, Some(&boot)).await;
    wait_for(
        "the restarted node to reconnect",
        Duration::from_secs(60),
        || async {
            restarted
                .status()
                .await
                .is_some_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 3))
        },
    )
    .await;
    let after = restarted.status().await.unwrap();
    assert!(all_active(&after, COINS.len()));
    for (b, a) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after["vaults"].as_array().unwrap())
    {
        assert_eq!(a["group_key"], b["group_key"]);
        assert_eq!(a["address"], b["address"]);
    }
    // It re-learnt every peer's processor keys (steps 8-12) from its stored inbound messages.
    wait_for(
        "the restarted node's view of its peers",
        Duration::from_secs(60),
        || async {
            restarted.status().await.is_some_and(|s| {
                s["validators"].as_array().is_some_and(|vs| {
                    vs.len() == 3
                        && vs.iter().all(|v| {
                            COINS
                                .iter()
                                .all(|c| v["processor_keys"][*c]["verified"] == true)
                        })
                })
            })
        },
    )
    .await;
    let new_log = restarted.log()[log_len..].to_string();
    assert!(!new_log.contains("rejected"), "{new_log}");
}
