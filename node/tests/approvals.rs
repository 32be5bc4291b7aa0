//! t-of-n end to end, over four real `vaultd` processes (t = 3, one coin): a request is signed
//! only once three operators approved it on their own nodes. Approved on one, then two, it is
//! never signed and expires naming its approvers; approved on three it is signed by approvers
//! (checked with libsecp256k1); a validator that gossips approvals in the others' names gets no
//! preprocess from anybody and is named in their logs; an approver killed with SIGKILL between
//! approvals loses none, and the request completes after its restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const COIN: &str = "BTC";
/// Seconds an approval counts on these nodes (short, so that expiry can be seen).
const TTL: &str = "20";

fn message(k: u8) -> Vec<u8> {
    vec![k; 32]
}

/// `POST /sign` on `node`: the id it answers (202), or panics.
async fn approve(node: &Node, msg: &[u8]) -> String {
    let body = serde_json::json!({"coin": COIN, "messages": [hex::encode(msg)]});
    let (code, reply) = node.post("/sign", &body.to_string()).await;
    assert_eq!(code, 202, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    reply["id"].as_str().unwrap().to_string()
}

async fn record(node: &Node, id: &str) -> Option<Value> {
    sign_record(&node.api, id).await
}

fn approvers(r: &Value) -> Vec<String> {
    let mut v: Vec<String> = r["approvals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| a["approver"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait until `node` knows exactly `want` as the approvers of `id`.
async fn wait_approvals(node: &Node, id: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_for(
        &format!("{} to know the approvals {want:?} of {id}", node.peer_id),
        Duration::from_secs(30),
        || async {
            record(node, id)
                .await
                .is_some_and(|r| approvers(&r) == want)
        },
    )
    .await;
}

/// Wait until `id` is finished on `node`; returns its record.
async fn finished(node: &Node, id: &str, deadline: Duration) -> Value {
    sign_finished(&node.api, id, deadline).await
}

fn preprocesses_sent(metrics: &str) -> f64 {
    counter(
        metrics,
        "vaultd_messages_sent_total{protocol=\"direct\",kind=\"EncryptedPreprocessOut\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_needs_three_operators_approval_and_forgeries_get_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ids, network) = fresh_validators(tmp.path(), 4, &[COIN]);
    // Validator 4 is hostile: with its own approval it forges the others'.
    let mut nodes: Vec<Node> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let boot = nodes.first().map(|n| n.p2p.clone());
        let mut extra = vec!["--approval-ttl", TTL];
        if i == 3 {
            extra.extend(["--sabotage", "forge-approvals"]);
        }
        nodes.push(Node::start_with(d, &network, boot.as_deref(), &extra).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_all_active(&refs, 1, Duration::from_secs(120)).await;
    let status = nodes[0].status().await.unwrap();
    let vault = status["vaults"][0].clone();
    assert_eq!(vault["threshold"], 3);

    // Approved on one, then on two: never signed; every validator shows the approvals so far,
    // and /status lists the request as waiting; then it expires naming both approvers.
    let a = message(1);
    let id = approve(&nodes[0], &a).await;
    for n in &nodes {
        wait_approvals(n, &id, &[&ids[0]]).await;
    }
    assert_eq!(approve(&nodes[1], &a).await, id, "one request, one id");
    for n in &nodes {
        wait_approvals(n, &id, &[&ids[0], &ids[1]]).await;
        let r = record(n, &id).await.unwrap();
        assert_eq!(r["status"], "pending", "{r}");
        assert!(r["signatures"].as_array().unwrap().is_empty());
    }
    // The status page (a snapshot refreshed in the background) lists it on the non-approver.
    wait_for(
        "the third node's status to list the request as waiting",
        Duration::from_secs(30),
        || async {
            nodes[2].status().await.is_some_and(|s| {
                s["vaults"][0]["signing"]["waiting_for_approvals"]
                    .as_array()
                    .is_some_and(|w| {
                        w.iter()
                            .any(|w| w["id"] == id.as_str() && w["approved_here"] == false)
                    })
            })
        },
    )
    .await;
    for n in &nodes[..2] {
        let r = finished(n, &id, Duration::from_secs(60)).await;
        assert_eq!(r["status"], "failed", "{r}");
        assert!(r["signatures"].as_array().unwrap().is_empty());
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("expired"), "{reason}");
        assert!(reason.contains("2 of the 3 needed"), "{reason}");
        assert!(
            reason.contains(&ids[0]) && reason.contains(&ids[1]),
            "{reason}"
        );
        assert!(
            counter(
                &n.metrics().await,
                "vaultd_sign_expired_total{coin=\"BTC\"}"
            ) >= 1.0,
            "expiry not counted"
        );
    }
    // A validator that approved nothing keeps nothing of it.
    wait_for(
        "validator 3 to forget the expired request",
        Duration::from_secs(30),
        || async { record(&nodes[2], &id).await.is_none() },
    )
    .await;
    // Approving it again changes nothing: an approver answers with its finished record, a
    // validator that forgot it refuses, naming why.
    assert_eq!(approve(&nodes[0], &a).await, id);
    assert_eq!(record(&nodes[0], &id).await.unwrap()["status"], "failed");
    let body = serde_json::json!({"coin": COIN, "messages": [hex::encode(&a)]});
    let (code, reply) = nodes[2].post("/sign", &body.to_string()).await;
    assert_eq!(code, 409, "{reply}");
    assert!(reply.contains("expired"), "{reply}");

    // Approved on three: signed, by approvers; the signature checks with libsecp256k1.
    let b = message(2);
    let id = approve(&nodes[0], &b).await;
    approve(&nodes[1], &b).await;
    approve(&nodes[2], &b).await;
    for n in &nodes {
        let r = finished(n, &id, Duration::from_secs(60)).await;
        assert_eq!(r["status"], "done", "{r}");
        let signers: Vec<&str> = r["signers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(signers.len(), 3);
        assert!(!signers.contains(&ids[3].as_str()), "a non-approver signed");
        let sig = hex::decode(r["signatures"][0].as_str().unwrap()).unwrap();
        assert!(chain_accepts(COIN, &vault, &b, &sig));
    }
    let m = nodes[0].metrics().await;
    assert!(
        counter(
            &m,
            "vaultd_sign_approvals_total{coin=\"BTC\",direction=\"given\"}"
        ) >= 2.0
    );
    assert!(
        counter(
            &m,
            "vaultd_sign_approvals_total{coin=\"BTC\",direction=\"received\"}"
        ) >= 3.0
    );

    // The hostile validator approves a request and claims the others did too: nobody sends it
    // a preprocess, each names it, and its forged approvals are not recorded.
    let before: Vec<f64> = preprocesses(&nodes[..3]).await;
    let c = message(3);
    let id = approve(&nodes[3], &c).await;
    for (i, n) in nodes[..3].iter().enumerate() {
        wait_for(
            &format!("validator {} to log the forged approvals", i + 1),
            Duration::from_secs(30),
            || async {
                n.log()
                    .lines()
                    .any(|l| l.contains(&ids[3]) && l.contains("sent an approval in the name of"))
            },
        )
        .await;
        wait_approvals(n, &id, &[&ids[3]]).await;
    }
    // The two it named as signers refused its request, naming it.
    wait_for(
        "two validators to refuse the forged request",
        Duration::from_secs(30),
        || async {
            nodes[..3]
                .iter()
                .filter(|n| {
                    n.log()
                        .lines()
                        .any(|l| l.contains(&ids[3]) && l.contains("did not approve"))
                })
                .count()
                == 2
        },
    )
    .await;
    assert_eq!(
        preprocesses(&nodes[..3]).await,
        before,
        "a preprocess went out"
    );
    assert_eq!(record(&nodes[0], &id).await.unwrap()["status"], "pending");

    // An approver killed with SIGKILL between the approvals: its approval was on disk, and the
    // request completes once it is back (the signers are approvers, so it is one of them).
    let d = message(4);
    let id = approve(&nodes[0], &d).await;
    for n in &nodes[1..3] {
        wait_approvals(n, &id, &[&ids[0]]).await;
    }
    nodes[0].kill9();
    approve(&nodes[1], &d).await;
    approve(&nodes[2], &d).await;
    for n in &nodes[1..3] {
        wait_approvals(n, &id, &[&ids[0], &ids[1], &ids[2]]).await;
        assert_eq!(record(n, &id).await.unwrap()["status"], "pending");
    }
    let boot = nodes[1].p2p.clone();
    nodes[0] = Node::start_with(&dirs[0], &network, Some(&boot), &["--approval-ttl", TTL]).await;
    for n in &nodes[..3] {
        let r = finished(n, &id, Duration::from_secs(60)).await;
        assert_eq!(r["status"], "done", "{r}");
        let sig = hex::decode(r["signatures"][0].as_str().unwrap()).unwrap();
        assert!(chain_accepts(COIN, &vault, &d, &sig));
    }
    for n in &nodes {
        assert!(!n.log().contains("panicked"));
    }
}

/// Preprocesses each node sent so far.
async fn preprocesses(nodes: &[Node]) -> Vec<f64> {
    let mut v = Vec::new();
    for n in nodes {
        v.push(preprocesses_sent(&n.metrics().await));
    }
    v
}
