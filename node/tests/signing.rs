//! Four `vaultd` processes (t = 3) sign for every coin over the network: many requests in
//! flight at once (each approved by three operators), then with one validator killed, then
//! with two killed (two approvals: never signed). Every signature is
//! checked with code that does not come from modular-frost: libsecp256k1 (BIP340 under the P2TR
//! address's output key, and the ETH equation of docs/SIGNING.md) and ed25519-dalek.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const COINS: [&str; 3] = ["BTC", "ETH", "SOL"];
const PER_COIN: usize = 50;

fn message(coin: &str, k: usize) -> Vec<u8> {
    let h = Sha256::digest(format!("{coin} transaction {k}"));
    match coin {
        "SOL" => [&h[..], &h[..], &[k as u8; 7][..]].concat(), // a 71-byte message
        _ => h.to_vec(),
    }
}

async fn post_sign(node: &Node, coin: &str, messages: &[Vec<u8>]) -> (u16, Value) {
    let body = serde_json::json!({
        "coin": coin,
        "messages": messages.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    let (code, body) = node.post("/sign", &body.to_string()).await;
    (code, serde_json::from_str(&body).unwrap())
}

/// The operators of `approvers` each approve the request on their own node: one id for all.
async fn approve(approvers: &[&Node], coin: &str, messages: &[Vec<u8>]) -> String {
    let mut id = None::<String>;
    for node in approvers {
        let (code, body) = post_sign(node, coin, messages).await;
        assert_eq!(code, 202, "{body}");
        let this = body["id"].as_str().unwrap().to_string();
        if let Some(id) = &id {
            assert_eq!(*id, this, "the same content is the same request everywhere");
        }
        id = Some(this);
    }
    id.unwrap()
}

async fn result(api: &str, id: &str) -> Option<Value> {
    sign_record(api, id).await
}

/// Wait until `id` is finished on `api` (a deadline, polling); returns the result.
async fn finished(api: &str, id: &str) -> Value {
    sign_finished(api, id, Duration::from_secs(300)).await
}

async fn wait_disconnected(nodes: &[Node], dead: &str) {
    for n in nodes {
        wait_for(
            &format!("{} to notice {dead} is gone", n.peer_id),
            Duration::from_secs(60),
            || async {
                n.status().await.is_some_and(|s| {
                    s["validators"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v["peer_id"] == dead && v["connected"] == false)
                })
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_then_one_and_two_validators_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ids, network) = fresh_validators(tmp.path(), 4, &COINS);
    // Node 1 also serves its metrics alone on a second listener.
    let mut nodes = vec![
        Node::start_with(
            &dirs[0],
            &network,
            None,
            &["--metrics-listen", "127.0.0.1:0"],
        )
        .await,
    ];
    // Node 2's operator approves at most one SOL message per request.
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[SOL]\nmax_messages = 1\nmax_requests_per_hour = 1000\n",
    )
    .unwrap();
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let boot = nodes[0].p2p.clone();
        let extra: Vec<&str> = match i {
            1 => vec!["--sign-policy", policy.to_str().unwrap()],
            _ => Vec::new(),
        };
        nodes.push(Node::start_with(d, &network, Some(&boot), &extra).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_all_active(&refs, COINS.len(), Duration::from_secs(240)).await;
    let status = nodes[0].status().await.unwrap();

    // Without the operator's token, or with another one, nothing is signed or recorded.
    let api = nodes[0].api.clone();
    let valid = serde_json::json!({"coin": "BTC", "messages": [hex::encode([7u8; 32])]});
    let (code, body) = vaultd::http_client::post_json(&api, "/sign", &valid.to_string())
        .await
        .unwrap();
    assert_eq!(code, 401, "{body}");
    let other = vaultd::token::read(&vaultd::token::path(&dirs[1])).unwrap();
    let (code, body) =
        vaultd::http_client::post_json_authorized(&api, "/sign", &valid.to_string(), &other)
            .await
            .unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains(other.expose()), "the token is not echoed");
    let log = log_of(&dirs[0]);
    assert!(
        log.contains("refused an unauthenticated API request"),
        "{log}"
    );
    assert!(!log.contains(other.expose()) && !log.contains(nodes[0].token.expose()));
    let after = nodes[0].status().await.unwrap();
    for coin in COINS {
        let signing = &vault(&after, coin)["signing"];
        assert_eq!(signing["originating"], 0, "{coin}: {signing}");
        assert_eq!(signing["queued"], 0, "{coin}: {signing}");
    }
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains("vaultd_api_unauthorized_total{endpoint=\"/sign\"} 2"),
        "{metrics}"
    );
    // A rotated token replaces the old one at once, without a restart.
    rotate_token(&dirs[0]);
    let old = std::mem::replace(
        &mut nodes[0].token,
        vaultd::token::read(&vaultd::token::path(&dirs[0])).unwrap(),
    );
    let (code, _) =
        vaultd::http_client::post_json_authorized(&api, "/sign", &valid.to_string(), &old)
            .await
            .unwrap();
    assert_eq!(code, 401, "the old token still works");
    // The metrics listener serves metrics and health, and nothing that signs or reads results.
    let scrape = nodes[0].metrics_api.clone().unwrap();
    let (code, body) = vaultd::http_client::get(&scrape, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("vaultd_api_unauthorized_total"), "{body}");
    assert_eq!(
        vaultd::http_client::get(&scrape, "/health")
            .await
            .unwrap()
            .0,
        200
    );
    let (code, _) = vaultd::http_client::post_json_authorized(
        &scrape,
        "/sign",
        &valid.to_string(),
        &nodes[0].token,
    )
    .await
    .unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        vaultd::http_client::get(&scrape, "/status")
            .await
            .unwrap()
            .0,
        404
    );

    // Past its operator's policy a node answers 429 with the rule, and counts it.
    let (code, body) = post_sign(
        &nodes[1],
        "SOL",
        &[message("SOL", 3000), message("SOL", 3001)],
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 1"),
        "{body}"
    );
    assert!(nodes[1]
        .metrics()
        .await
        .contains("vaultd_sign_policy_refused_total{coin=\"SOL\",rule=\"max_messages\"} 1"));
    assert!(nodes[1]
        .log()
        .contains("refused a signature request by policy"));

    // Bad requests get a 4xx and a reason.
    let (code, body) = post_sign(&nodes[0], "BTC", &[vec![1; 31]]).await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("32-byte"),
        "{body}"
    );
    let (code, body) = nodes[0]
        .post("/sign", r#"{"coin": "DOGE", "messages": ["00"]}"#)
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = nodes[0]
        .post("/sign", r#"{"coin": "SOL", "messages": ["0g"]}"#)
        .await;
    assert_eq!(code, 400);
    let (code, _) = vaultd::http_client::get(&api, "/sign/00").await.unwrap();
    assert_eq!(code, 400);

    // 50 requests per coin, all in flight at once, each approved on three of the four
    // endpoints (its first approver in turn).
    let mut submitted = Vec::new();
    for coin in COINS {
        for k in 0..PER_COIN {
            let origin = k % nodes.len();
            let msgs = vec![message(coin, k)];
            let approvers: Vec<&Node> =
                (0..3).map(|j| &nodes[(origin + j) % nodes.len()]).collect();
            let id = approve(&approvers, coin, &msgs).await;
            submitted.push((coin, origin, msgs, id));
        }
    }
    let distinct: BTreeSet<&String> = submitted.iter().map(|s| &s.3).collect();
    assert_eq!(distinct.len(), COINS.len() * PER_COIN, "ids are unique");
    for (coin, origin, msgs, id) in &submitted {
        let r = finished(&nodes[*origin].api, id).await;
        assert_eq!(r["status"], "done", "{coin} {id}: {r}");
        let sigs = r["signatures"].as_array().unwrap();
        assert_eq!(sigs.len(), msgs.len());
        for (m, s) in msgs.iter().zip(sigs) {
            let s = hex::decode(s.as_str().unwrap()).unwrap();
            assert_eq!(s.len(), 64);
            assert!(
                chain_accepts(coin, vault(&status, coin), m, &s),
                "{coin} {id}"
            );
        }
        let signers = r["signers"].as_array().unwrap();
        assert_eq!(signers.len(), 3);
        assert!(signers.contains(&Value::String(ids[*origin].clone())));
        // The signers are the approvers.
        let approvers: BTreeSet<&str> = r["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["approver"].as_str().unwrap())
            .collect();
        assert!(
            signers
                .iter()
                .all(|s| approvers.contains(s.as_str().unwrap())),
            "{r}"
        );
        // Every validator stores the result, with the same signatures.
        let other = &nodes[(origin + 1) % nodes.len()];
        let theirs = finished(&other.api, id).await;
        assert_eq!(theirs["signatures"], r["signatures"]);
    }
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains("vaultd_sign_requests_total{coin=\"BTC\",outcome=\"done\",reason=\"\"}"),
        "{metrics}"
    );

    // One validator killed: signing still succeeds, without it; through the CLI this time,
    // which approves on the three nodes left.
    let dead = nodes.pop().unwrap();
    let dead_id = dead.peer_id.clone();
    drop(dead); // SIGKILL
    wait_disconnected(&nodes, &dead_id).await;
    for coin in COINS.iter() {
        // Node 2's policy approves one SOL message per request.
        let msgs = if *coin == "SOL" {
            vec![message(coin, 1000)]
        } else {
            vec![message(coin, 1000), message(coin, 1001)]
        };
        let out = Command::new(BIN)
            .args(["sign", "--coin", coin])
            .args(
                nodes
                    .iter()
                    .flat_map(|n| {
                        [
                            "--api".into(),
                            n.api.clone().into(),
                            "--data-dir".into(),
                            n.dir.clone().into_os_string(),
                        ]
                    })
                    .collect::<Vec<std::ffi::OsString>>(),
            )
            .args(
                msgs.iter()
                    .flat_map(|m| ["--message".to_string(), hex::encode(m)]),
            )
            .args(["--timeout", "120"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "vaultd sign {coin}: {stderr}");
        assert!(
            !stderr.contains(&dead_id),
            "the dead validator signed: {stderr}"
        );
        let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(lines.len(), msgs.len());
        for (m, s) in msgs.iter().zip(lines) {
            assert!(chain_accepts(
                coin,
                vault(&status, coin),
                m,
                &hex::decode(s).unwrap()
            ));
        }
    }

    // Two killed: only two operators can approve, fewer than t: nothing is signed, and both
    // nodes list the request as waiting for approvals, with both approvers.
    let dead2 = nodes.pop().unwrap();
    let dead2_id = dead2.peer_id.clone();
    drop(dead2);
    wait_disconnected(&nodes, &dead2_id).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let id = approve(&refs, "SOL", &[message("SOL", 2000)]).await;
    for n in &nodes {
        wait_for(
            &format!("{} to list {id} as waiting for approvals", n.peer_id),
            Duration::from_secs(60),
            || async {
                n.status().await.is_some_and(|s| {
                    vault(&s, "SOL")["signing"]["waiting_for_approvals"]
                        .as_array()
                        .is_some_and(|w| {
                            w.iter().any(|w| {
                                w["id"] == id.as_str()
                                    && w["approvals"].as_array().is_some_and(|a| a.len() == 2)
                            })
                        })
                })
            },
        )
        .await;
    }
    let r = result(&nodes[0].api, &id).await.unwrap();
    assert_eq!(r["status"], "pending", "{r}");
    assert!(r["signatures"].as_array().unwrap().is_empty());
    assert_eq!(r["approvals"].as_array().unwrap().len(), 2, "{r}");
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains("vaultd_sign_approvals_total{coin=\"SOL\",direction=\"received\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("vaultd_sign_duration_seconds_count{coin=\"BTC\",outcome=\"done\"}"));
    for n in &nodes {
        assert!(!n.log().contains("panicked"));
    }
}
