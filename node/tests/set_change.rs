//! A validator set change: a 4-validator network (session 0) gets a new network definition with
//! a 5th validator (session 1); the four restart with it, the new operator starts its node, and
//! all five end with active vaults for the new set, while the session-0 vaults stay listed as
//! retiring on the four that hold them.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use serde_json::Value;

const COINS: [&str; 2] = ["BTC", "SOL"];

fn session_vaults(status: &Value, session: u64) -> Vec<Value> {
    status["vaults"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|v| v["session"] == session)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_validator_joins_through_a_new_definition() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..5).map(|i| tmp.path().join(format!("v{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d)).collect();
    let network0 = tmp.path().join("network-0.toml");
    write_network(&network0, &ids[..4], &COINS);
    let mut nodes = Vec::new();
    for d in &dirs[..4] {
        let boot = nodes.first().map(|n: &Node| n.p2p.clone());
        nodes.push(Node::start(d, &network0, boot.as_deref()).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_all_active(&refs, COINS.len(), Duration::from_secs(120)).await;
    let before = nodes[0].status().await.unwrap();
    drop(refs);

    // The new definition: session 1, five validators.
    let network1 = tmp.path().join("network-1.toml");
    write_network(&network1, &ids, &COINS);
    let text = std::fs::read_to_string(&network1)
        .unwrap()
        .replace("session = 0", "session = 1");
    std::fs::write(&network1, text).unwrap();
    for n in nodes.iter_mut() {
        n.kill9();
    }
    let mut nodes: Vec<Node> = Vec::new();
    for d in &dirs {
        let boot = nodes.first().map(|n: &Node| n.p2p.clone());
        nodes.push(Node::start(d, &network1, boot.as_deref()).await);
    }
    // Every node's session-1 vaults become active with the five validators.
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    for n in &nodes {
        wait_for(
            "session-1 vaults active",
            Duration::from_secs(120),
            || async {
                let Some(s) = n.status().await else {
                    return false;
                };
                let v = session_vaults(&s, 1);
                v.len() == COINS.len() && v.iter().all(|v| v["status"] == "active")
            },
        )
        .await;
    }
    for coin in COINS {
        let mut keys = BTreeSet::new();
        for n in &nodes {
            let s = n.status().await.unwrap();
            let v = session_vaults(&s, 1)
                .into_iter()
                .find(|v| v["coin"] == coin)
                .unwrap();
            let parts: BTreeSet<String> = v["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            assert_eq!(parts, all);
            keys.insert(v["group_key"].as_str().unwrap().to_string());
        }
        assert_eq!(keys.len(), 1, "one {coin} key for the new set");
    }
    // The four that held session-0 vaults still list them, as retiring, with the same keys.
    for n in &nodes[..4] {
        let s = n.status().await.unwrap();
        let old = session_vaults(&s, 0);
        assert_eq!(old.len(), COINS.len(), "{s:#}");
        for v in old {
            assert_eq!(v["status"], "retiring");
            let was = session_vaults(&before, 0)
                .into_iter()
                .find(|b| b["coin"] == v["coin"])
                .unwrap();
            assert_eq!(v["group_key"], was["group_key"]);
        }
    }
    assert!(session_vaults(&nodes[4].status().await.unwrap(), 0).is_empty());

    // Both vaults sign: the new one by default, the retiring one when asked for its session.
    // (SOL: the signature checks with ed25519-dalek under the vault's group key.)
    let message = hex::encode([0x42u8; 40]);
    // Each is approved by t of its own validators, the new operator's among the new set's.
    let status = nodes[1].status().await.unwrap();
    let threshold = |session: u64| {
        session_vaults(&status, session)
            .into_iter()
            .find(|v| v["coin"] == "SOL")
            .and_then(|v| v["threshold"].as_u64())
            .unwrap() as usize
    };
    let order = [(None, vec![4, 0, 1, 2, 3]), (Some(0), vec![1, 2, 3, 0])];
    for (session, order) in order {
        let t = threshold(u64::from(session.unwrap_or(1)));
        let approvers: Vec<vaultd::Approver> = order[..t]
            .iter()
            .map(|&i| vaultd::Approver {
                api: nodes[i].api.clone(),
                token: nodes[i].token.clone(),
            })
            .collect();
        let spec = vaultd::SignSpec {
            coin: protocol::Coin::Sol,
            messages: vec![message.clone()],
            session,
            reference: None,
        };
        let result = vaultd::sign_and_wait(&approvers, &spec, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(result.status, "done", "{:?}", result.reason);
        let s = nodes[1].status().await.unwrap();
        let vault = session_vaults(&s, u64::from(session.unwrap_or(1)))
            .into_iter()
            .find(|v| v["coin"] == "SOL")
            .unwrap();
        let key: [u8; 32] = hex::decode(vault["group_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
        let sig: [u8; 64] = hex::decode(&result.signatures[0])
            .unwrap()
            .try_into()
            .unwrap();
        key.verify_strict(&[0x42u8; 40], &ed25519_dalek::Signature::from_bytes(&sig))
            .unwrap_or_else(|e| panic!("session {session:?}: {e}"));
        let signers: BTreeSet<&String> = result.signers.iter().collect();
        let participants: BTreeSet<String> = vault["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert!(signers.iter().all(|s| participants.contains(*s)));
    }
}
