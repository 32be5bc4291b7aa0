//! One coin's processor that cannot keep up stalls nothing else: the coordinator never waits on
//! a processor's queue, so the other coins' DKGs, ping and gossip go on, and what the slow coin
//! was sent waits in the inbound table until its processor has room (nothing accepted is lost).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn vault<'a>(status: &'a Value, coin: &str) -> Option<&'a Value> {
    status["vaults"]
        .as_array()?
        .iter()
        .find(|v| v["coin"] == coin)
}

fn active(status: &Value, coin: &str) -> bool {
    vault(status, coin).is_some_and(|v| v["status"] == "active")
}

/// The value of a counter sample of the Prometheus text `metrics`, if present.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_processor_holds_up_no_other_coin_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, _, network) = fresh_validators(tmp.path(), 4, &["BTC", "ETH", "SOL"]);

    // Node 0's processors have queues of 4; its BTC processor takes nothing until released, so
    // every BTC message its peers send it finds the queue full.
    let first = Node::start_with(&dirs[0], &network, None, &["--bus-capacity", "4"]).await;
    first.stall("BTC", true).await;
    let mut nodes = vec![first];
    for d in &dirs[1..] {
        let bootstrap = nodes[0].p2p.clone();
        nodes.push(Node::start(d, &network, Some(&bootstrap)).await);
    }

    // ETH and SOL become active on every node while node 0's BTC processor is stalled.
    wait_for(
        "ETH and SOL active on every node",
        Duration::from_secs(90),
        || {
            let nodes = &nodes;
            async move {
                for n in nodes {
                    match n.status().await {
                        Some(s) if active(&s, "ETH") && active(&s, "SOL") => {}
                        _ => return false,
                    }
                }
                true
            }
        },
    )
    .await;
    let status = nodes[0].status().await.unwrap();
    assert!(!active(&status, "BTC"), "BTC went on without its processor");
    // Ping answered on every link of node 0 (gossip did: the other vaults are active).
    wait_for(
        "a ping round trip to every peer",
        Duration::from_secs(30),
        || {
            let node = &nodes[0];
            async move {
                node.status().await.is_some_and(|s| {
                    s["validators"].as_array().is_some_and(|v| {
                        v.len() == 3
                            && v.iter()
                                .all(|p| p["connected"] == true && p["rtt_ms"].is_number())
                    })
                })
            }
        },
    )
    .await;
    // The BTC queue did overflow: its messages waited in the inbound table.
    let metrics = nodes[0].metrics().await;
    let full = sample(&metrics, "vaultd_bus_full_total{coin=\"BTC\"}").unwrap_or(0.0);
    assert!(full > 0.0, "the BTC queue never filled:\n{metrics}");
    assert!(nodes[0]
        .log()
        .contains("stored messages wait in the inbound table"));

    // Released, node 0's BTC processor takes what waited, and every BTC vault forms.
    nodes[0].stall("BTC", false).await;
    let all: Vec<&Node> = nodes.iter().collect();
    wait_all_active(&all, 3, Duration::from_secs(120)).await;
    let mut keys = Vec::new();
    for n in &nodes {
        let s = n.status().await.unwrap();
        keys.push(vault(&s, "BTC").unwrap()["group_key"].clone());
    }
    assert!(keys
        .iter()
        .all(|k| *k == keys[0] && k.as_str().is_some_and(|k| !k.is_empty())));
    assert!(nodes[0]
        .log()
        .contains("handing it the messages that waited"));
}
