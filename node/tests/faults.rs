//! The fault-injection harness over real `vaultd` processes on loopback: SIGKILL and restart,
//! cut and delayed links between chosen nodes, and nodes run with a test-only malicious
//! behaviour (`--sabotage`, feature `fault-injection`). Each scenario asserts the outcome a
//! validator operator would check on `/status` and `/metrics`, and that nothing stored was lost.

mod common;

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use common::*;
use futures::StreamExt;
use libp2p::{gossipsub, swarm::SwarmEvent, PeerId};
use serde_json::Value;
use vaultd::network::{self, BehaviourEvent, GossipTweak};

struct Cluster {
    _tmp: tempfile::TempDir,
    network: PathBuf,
    dirs: Vec<PathBuf>,
    ids: Vec<String>,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    /// `n` initialised data directories and a network definition; no node started yet.
    fn new(n: usize, coins: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let (dirs, ids, network) = fresh_validators(tmp.path(), n, coins);
        Cluster {
            _tmp: tmp,
            network,
            dirs,
            ids,
            nodes: (0..n).map(|_| None).collect(),
        }
    }

    async fn start(&mut self, i: usize, extra: &[&str]) {
        let bootstrap = self
            .nodes
            .iter()
            .flatten()
            .next()
            .map(|n: &Node| n.p2p.clone());
        let node =
            Node::start_with(&self.dirs[i], &self.network, bootstrap.as_deref(), extra).await;
        assert_eq!(
            node.peer_id, self.ids[i],
            "identity changed across a restart"
        );
        self.nodes[i] = Some(node);
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap()
    }

    fn live(&self) -> Vec<&Node> {
        self.nodes.iter().flatten().collect()
    }
}

fn vault<'a>(status: &'a Value, coin: &str) -> &'a Value {
    status["vaults"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["coin"] == coin))
        .unwrap_or(&Value::Null)
}

async fn status(n: &Node) -> Value {
    n.status().await.unwrap_or(Value::Null)
}

/// Wait until every node in `nodes` shows `want` for `coin`'s vault status.
async fn wait_vault_status(nodes: &[&Node], coin: &str, want: &str, deadline: Duration) {
    for n in nodes {
        let what = format!("{} {coin} vault {want}", n.peer_id);
        let start = std::time::Instant::now();
        loop {
            if vault(&status(n).await, coin)["status"] == want {
                break;
            }
            if start.elapsed() > deadline {
                panic!(
                    "timed out waiting for {what}: {:#}\n--- log tail:\n{}",
                    vault(&status(n).await, coin),
                    n.log()
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every honest node has one active vault per coin at attempt 1, without `culprit`, which each
/// lists as left out for `reason`; the culprit knows it was left out.
async fn assert_left_out(c: &Cluster, coins: &[&str], culprit: usize, reason: &str) {
    let honest: Vec<&Node> = (0..c.ids.len())
        .filter(|i| *i != culprit)
        .map(|i| c.node(i))
        .collect();
    for coin in coins {
        wait_vault_status(&honest, coin, "active", Duration::from_secs(60)).await;
        let mut keys = BTreeSet::new();
        for n in &honest {
            let s = status(n).await;
            let v = vault(&s, coin);
            assert_eq!(v["attempt"], 1, "{v:#}");
            let participants: Vec<&str> = v["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(participants.len(), c.ids.len() - 1);
            assert!(!participants.contains(&c.ids[culprit].as_str()));
            let excluded = v["excluded"].as_array().unwrap();
            assert_eq!(excluded.len(), 1, "{v:#}");
            assert_eq!(excluded[0]["peer"], c.ids[culprit]);
            assert_eq!(excluded[0]["reason"], reason);
            assert_eq!(excluded[0]["attempt"], 0);
            assert!(excluded[0]["voters"].as_array().unwrap().len() >= 3);
            keys.insert(v["group_key"].as_str().unwrap().to_string());
            let metrics = n.metrics().await;
            let line = format!(
                "vaultd_dkg_excluded{{coin=\"{coin}\",peer=\"{}\",reason=\"{reason}\"}} 1",
                c.ids[culprit]
            );
            assert!(metrics.contains(&line), "missing {line}");
        }
        assert_eq!(
            keys.len(),
            1,
            "honest nodes disagree on the {coin} group key"
        );
    }
    if let Some(n) = c.nodes[culprit].as_ref() {
        for coin in coins {
            wait_vault_status(&[n], coin, "excluded", Duration::from_secs(60)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_validator_is_voted_out_after_the_dkg_timeout() {
    let coins = ["BTC", "SOL"];
    let mut c = Cluster::new(4, &coins);
    // Validators 0-2 hear nothing from validator 3: its links are cut from the start.
    for i in 0..3 {
        c.start(i, &["--dkg-timeout", "2"]).await;
        c.node(i).links(&[c.ids[3].as_str()], &[], 0).await;
    }
    c.start(3, &["--dkg-timeout", "2"]).await;
    // While it is silent nobody moves on before the timeout; then the three vote it out.
    let honest: Vec<&Node> = (0..3).map(|i| c.node(i)).collect();
    for coin in coins {
        wait_vault_status(&honest, coin, "active", Duration::from_secs(60)).await;
    }
    // The link heals: the silent validator learns from the signed votes that it was left out.
    for i in 0..3 {
        c.node(i).links(&[], &[], 0).await;
    }
    assert_left_out(&c, &coins, 3, "silent_key_exchange").await;
    let s = status(c.node(0)).await;
    let votes_ok = vault(&s, "BTC")["excluded"][0]["proven"] == false;
    assert!(votes_ok, "a silence is decided by votes, not proven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_naming_an_active_validator_silent_makes_it_announce_again() {
    // Validator 3 loses validator 0's PublicAddressAvailable, its one repeat and the three
    // replays it asks for (a quarter of the timeout apart) before its timeout. 0, 1 and 2
    // complete; 0, active, would re-announce only every 5 minutes. 3 votes 0 silent at its
    // DKG timeout; the vote makes 0 announce again at once, and 3 completes the same attempt
    // with the same key.
    let c = four_where_3_loses_confirmations_of_0(5, "3").await;
    let first: Vec<&Node> = (0..3).map(|i| c.node(i)).collect();
    wait_vault_status(&first, "ETH", "active", Duration::from_secs(60)).await;
    wait_all_active(&c.live(), 1, Duration::from_secs(60)).await;
    assert_3_lost_then_joined_attempt_0(&c).await;
    assert!(c.node(3).log().contains("voting to leave participants out"));
    assert!(c
        .node(0)
        .log()
        .contains("a vote names us as silent; re-announcing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_confirmation_is_repeated_before_anyone_votes() {
    // Validator 3 loses validator 0's PublicAddressAvailable once. 0 gossips it once more a
    // quarter of a re-announce period later, so 3 completes without waiting for its DKG
    // timeout and without a vote. The timeout is long (30 s) so that a vote could not come
    // before the deadline of the wait below.
    let c = four_where_3_loses_confirmations_of_0(1, "30").await;
    wait_all_active(&c.live(), 1, Duration::from_secs(25)).await;
    assert_3_lost_then_joined_attempt_0(&c).await;
    assert!(!c.node(3).log().contains("DKG stalled on announcements"));
    for n in c.live() {
        assert!(!n.log().contains("voting to leave participants out"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_confirmation_and_its_repeat_are_asked_for_before_anyone_votes() {
    // Validator 3 loses validator 0's PublicAddressAvailable and its repeat. 0 is active and
    // would re-announce only every 5 minutes; 3 asks 0 for its announcements after a quarter
    // of its 30 s timeout without progress, gets them replayed directly, and completes attempt
    // 0 long before it would vote.
    let c = four_where_3_loses_confirmations_of_0(2, "30").await;
    wait_all_active(&c.live(), 1, Duration::from_secs(25)).await;
    assert_3_lost_then_joined_attempt_0(&c).await;
    assert!(c
        .node(3)
        .log()
        .contains("DKG stalled on announcements: asking the validators it waits for"));
    let asked = "vaultd_messages_received_total{protocol=\"direct\",kind=\"AnnouncementRequest\"}";
    assert!(c.node(0).metrics().await.contains(asked), "0 was not asked");
    for n in c.live() {
        assert!(!n.log().contains("voting to leave participants out"));
    }
}

/// Four validators running an ETH DKG with `--dkg-timeout TIMEOUT`; validator 3 loses the
/// next `losses` `PublicAddressAvailable` messages of validator 0, gossiped or replayed
/// (test-only fault). It
/// is set before 3 has taken part in the key exchange, when nobody can have one yet.
async fn four_where_3_loses_confirmations_of_0(losses: usize, timeout: &str) -> Cluster {
    let mut c = Cluster::new(4, &["ETH"]);
    for i in 0..4 {
        c.start(i, &["--dkg-timeout", timeout]).await;
    }
    let from = vec![c.ids[0].as_str(); losses];
    c.node(3).lose_first(&from, "PublicAddressAvailable").await;
    c
}

/// Validator 3 lost a message of 0 and still holds 0's ETH vault: attempt 0, same group key.
async fn assert_3_lost_then_joined_attempt_0(c: &Cluster) {
    assert!(c
        .node(3)
        .log()
        .contains("test-only: losing this gossip message"));
    let s0 = status(c.node(0)).await;
    let s3 = status(c.node(3)).await;
    assert_eq!(vault(&s3, "ETH")["attempt"], 0);
    assert_eq!(
        vault(&s3, "ETH")["group_key"],
        vault(&s0, "ETH")["group_key"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_validators_are_blamed_the_same_way_everywhere() {
    let coins = ["BTC", "SOL"];
    for (sabotage, reason) in [
        ("bad-share", "invalid_share"),
        ("equivocate", "equivocation"),
        ("false-accusation", "false_accusation"),
        ("garbage", "silent_commitments"),
        ("wrong-group-key", "wrong_group_key"),
        // Its victim complains, the share is never published: the dealer is named, not the
        // validator it starved.
        ("withhold-share", "silent_shares"),
    ] {
        let mut c = Cluster::new(4, &coins);
        for i in 0..3 {
            c.start(i, &["--dkg-timeout", "3"]).await;
        }
        c.start(3, &["--dkg-timeout", "3", "--sabotage", sabotage])
            .await;
        assert_left_out(&c, &coins, 3, reason).await;
        for i in 0..3 {
            let s = status(c.node(i)).await;
            let proven = vault(&s, "BTC")["excluded"][0]["proven"].as_bool();
            let silent = matches!(sabotage, "garbage" | "withhold-share");
            assert_eq!(proven, Some(!silent), "{sabotage}");
        }
        if sabotage == "garbage" {
            // Its garbage was rejected with log lines naming it.
            let log = c.node(0).log();
            assert!(log.contains("processor rejected message") && log.contains(&c.ids[3]));
        }
        for n in c.live() {
            let log = n.log();
            assert!(!log.contains("panicked"), "{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commitment_withheld_from_one_validator_reaches_it_through_the_others() {
    let coins = ["BTC", "ETH"];
    let mut c = Cluster::new(4, &coins);
    for i in 0..3 {
        c.start(i, &["--dkg-timeout", "4"]).await;
    }
    c.start(
        3,
        &["--dkg-timeout", "4", "--sabotage", "withhold-commitment"],
    )
    .await;
    // The starved validator complains; the others relay the signed commitments they got. All
    // four end in attempt 0, nobody left out, nobody voted.
    wait_all_active(&c.live(), coins.len(), Duration::from_secs(60)).await;
    let mut keys = BTreeSet::new();
    for n in c.live() {
        let s = status(n).await;
        for coin in coins {
            let v = vault(&s, coin);
            assert_eq!(v["attempt"], 0, "{v:#}");
            assert_eq!(v["participants"].as_array().map(Vec::len), Some(4));
            assert_eq!(v["excluded"].as_array().map(Vec::len), Some(0), "{v:#}");
            keys.insert(v["group_key"].as_str().unwrap_or_default().to_string());
        }
        assert!(!n.log().contains("voting to leave"), "{}", n.peer_id);
    }
    assert_eq!(keys.len(), coins.len(), "one key per coin everywhere");
    let relays = "vaultd_messages_received_total{protocol=\"direct\",kind=\"KeyGenRelayOut\"}";
    let mut relayed = 0.0;
    for n in &c.live()[..3] {
        relayed += counter(&n.metrics().await, relays);
    }
    assert!(relayed >= 1.0, "no relay reached the starved validator");
}

/// The sum of every `vaultd_messages_rejected_total` series of gossip refused for `reason`.
fn gossip_rejected(metrics: &str, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("vaultd_messages_rejected_total{") && l.contains(&label))
        .filter(|l| l.contains("kind=\"gossip\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of `reason`'s gossip refusals over `nodes`.
async fn gossip_rejected_on(nodes: &[&Node], reason: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += gossip_rejected(&n.metrics().await, reason);
    }
    sum
}

/// A swarm speaking with a validator's identity (`keypair`), tweaked as an attacker would
/// run it, connected to `nodes` and subscribed to every coin topic of `def`, each node
/// subscribed towards it.
async fn attacker(
    keypair: libp2p::identity::Keypair,
    def: &protocol::network::NetworkDefinition,
    nodes: &[&Node],
    tweak: GossipTweak,
) -> (
    libp2p::Swarm<network::Behaviour>,
    Vec<gossipsub::IdentTopic>,
) {
    let validators: Vec<PeerId> = def
        .validators
        .iter()
        .map(|v| network::peer_id_of(v).unwrap())
        .collect();
    let mut swarm = network::build_hostile_swarm(keypair, &def.name, &validators, tweak).unwrap();
    let topics = join_topics(&mut swarm, def, nodes).await;
    (swarm, topics)
}

/// Drive `swarm` for `d`, keeping as valid (so that it is advertised) the gossip it
/// receives; how many messages came.
async fn drive(swarm: &mut libp2p::Swarm<network::Behaviour>, d: Duration) -> usize {
    let mut got = 0;
    let _ = tokio::time::timeout(d, async {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                ..
            })) = swarm.select_next_some().await
            {
                got += 1;
                swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Accept,
                    );
            }
        }
    })
    .await;
    got
}

/// Have the operators of `nodes` approve `msg` on `coin`, driving `swarm` meanwhile, until
/// every one of them has it signed; what `swarm` received.
async fn sign_while_driving(
    swarm: &mut libp2p::Swarm<network::Behaviour>,
    nodes: &[&Node],
    coin: &str,
    msg: &[u8],
) -> usize {
    let mut got = 0;
    let mut id = String::new();
    for n in nodes {
        id = approve(n, coin, msg).await;
        got += drive(swarm, Duration::from_millis(100)).await;
    }
    let start = std::time::Instant::now();
    loop {
        got += drive(swarm, Duration::from_millis(500)).await;
        let mut done = 0;
        for n in nodes {
            let r = sign_record(&n.api, &id).await;
            done += usize::from(r.is_some_and(|r| r["status"] == "done"));
        }
        if done == nodes.len() {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "request {id} signed on {done} of {} nodes",
            nodes.len()
        );
    }
}

/// `POST /sign` of `msg` on `coin`'s vault at `node`; the request id.
async fn approve(node: &Node, coin: &str, msg: &[u8]) -> String {
    let body = serde_json::json!({"coin": coin, "messages": [hex::encode(msg)]});
    let (code, reply) = node.post("/sign", &body.to_string()).await;
    assert_eq!(code, 202, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    reply["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hostile_validator_cannot_stall_fail_or_mislead_the_set() {
    // Five validators (t = 4); validator 4 runs `--sabotage hostile`: on ETH (the last coin) it
    // confirms a wrong group key; on BTC it withholds its commitments from one validator, then
    // with each approval of its own forges the others' approvals and the signer set, announces
    // a forged result, and floods signed requests nobody approved.
    let coins = ["BTC", "ETH"];
    let hostile = 4;
    let mut c = Cluster::new(5, &coins);
    // Its key, for the program it switches to later (read before its node locks the store).
    let hostile_key = {
        let store = storage::Store::open(
            &vaultd::db_path(&c.dirs[hostile]),
            &storage::Secrets::Insecure,
        )
        .unwrap();
        let keys = store.node_keys().unwrap().unwrap();
        network::keypair_from_secret(&keys.coordinator_secret).unwrap()
    };
    let def = vaultd::load_definition(&c.network).unwrap();
    for i in 0..4 {
        c.start(i, &["--dkg-timeout", "4"]).await;
    }
    c.start(hostile, &["--dkg-timeout", "4", "--sabotage", "hostile"])
        .await;
    let bad = c.ids[hostile].clone();
    let honest: Vec<&Node> = (0..4).map(|i| c.node(i)).collect();

    // Every vault forms: BTC with all five at attempt 0 (the withheld commitment was relayed),
    // ETH at attempt 1 without the hostile one, proven against it and named.
    wait_vault_status(&honest, "ETH", "active", Duration::from_secs(90)).await;
    wait_vault_status(&honest, "BTC", "active", Duration::from_secs(90)).await;
    let mut keys = BTreeSet::new();
    for n in &honest {
        let s = status(n).await;
        let btc = vault(&s, "BTC");
        assert_eq!(btc["attempt"], 0, "{btc:#}");
        assert_eq!(btc["participants"].as_array().map(Vec::len), Some(5));
        let eth = vault(&s, "ETH");
        assert_eq!(eth["attempt"], 1, "{eth:#}");
        assert_eq!(eth["excluded"][0]["peer"], bad.as_str());
        assert_eq!(eth["excluded"][0]["reason"], "wrong_group_key");
        assert_eq!(eth["excluded"][0]["proven"], true);
        let line = format!(
            "vaultd_dkg_excluded{{coin=\"ETH\",peer=\"{bad}\",reason=\"wrong_group_key\"}} 1"
        );
        assert!(n.metrics().await.contains(&line), "missing {line}");
        keys.insert((
            btc["group_key"].as_str().unwrap().to_string(),
            eth["group_key"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(keys.len(), 1, "the honest validators disagree on a key");

    // Every request the four honest operators approve is signed, on both coins; on BTC the
    // hostile operator approves first, which sets off its forgeries.
    let mut requests = Vec::new();
    for k in 0..3u8 {
        for coin in coins {
            let mut msg = [k; 32].to_vec();
            msg[..3].copy_from_slice(coin.as_bytes());
            if coin == "BTC" {
                approve(c.node(hostile), coin, &msg).await;
            }
            let mut id = String::new();
            for n in &honest {
                id = approve(n, coin, &msg).await;
            }
            requests.push((coin, msg, id));
        }
    }
    for (coin, msg, id) in &requests {
        for n in &honest {
            let r = sign_finished(&n.api, id, Duration::from_secs(90)).await;
            assert_eq!(r["status"], "done", "{coin} {r}");
            let s = status(n).await;
            let sig = hex::decode(r["signatures"][0].as_str().unwrap()).unwrap();
            assert!(chain_accepts(coin, vault(&s, coin), msg, &sig), "{coin}");
        }
    }

    // The hostile one is named where its messages were refused: /status and the metrics of
    // every honest node.
    for n in &honest {
        let series = format!("vaultd_peer_rejected_total{{coin=\"BTC\",peer=\"{bad}\"}}");
        // The status page is rebuilt every 250 ms, so it may name the hostile one a moment
        // after the metric counts it: wait for both.
        wait_for(
            &format!("{} to name the hostile validator", n.peer_id),
            Duration::from_secs(30),
            || async {
                let named = vault(&status(n).await, "BTC")["rejected"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["peer"] == bad.as_str()));
                named && counter(&n.metrics().await, &series) >= 1.0
            },
        )
        .await;
        let s = status(n).await;
        let rejected = vault(&s, "BTC")["rejected"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            rejected.iter().all(|r| r["peer"] == bad.as_str()),
            "an honest validator was named: {rejected:?}"
        );
        assert!(!n.log().contains("panicked"));
    }

    // The withheld commitments reached their victim through the others; the flood of
    // unapproved requests was refused, each refusal counted against its author.
    let relays = "vaultd_messages_received_total{protocol=\"direct\",kind=\"KeyGenRelayOut\"}";
    let series = format!("vaultd_peer_rejected_total{{coin=\"BTC\",peer=\"{bad}\"}}");
    let (mut relayed, mut refused) = (0.0, 0.0);
    for n in &honest {
        let m = n.metrics().await;
        relayed += counter(&m, relays);
        refused += counter(&m, &series);
    }
    assert!(relayed >= 1.0, "no relay reached the starved validator");
    assert!(
        refused >= protocol::sabotage::FLOOD as f64,
        "only {refused} refusals"
    );

    // Nothing accepted or stored is lost: a validator killed and restarted still has both
    // vaults and every finished request.
    if let Some(mut n) = c.nodes[0].take() {
        n.kill9();
    }
    c.start(0, &["--dkg-timeout", "4"]).await;
    wait_all_active(&[c.node(0)], coins.len(), Duration::from_secs(60)).await;
    for (coin, _, id) in &requests {
        let r = sign_record(&c.node(0).api, id).await;
        assert_eq!(
            r.map(|r| r["status"].clone()),
            Some(Value::from("done")),
            "{coin} {id}"
        );
    }

    // The hostile operator goes on with other software and the same key (H6, then H4).
    // First it records the honest gossip of a request and keeps advertising it: once a node's
    // gossipsub forgot a message (60 s, and forgotten when the next message comes in), it asks
    // for it and gets the author's original signed frame again, a replay that only the
    // freshness check can refuse.
    c.nodes[hostile].as_mut().unwrap().kill9();
    let honest: Vec<&Node> = (0..4).map(|i| c.node(i)).collect();
    let stale_before = gossip_rejected_on(&honest, "stale").await;
    let tweak = GossipTweak {
        author: None,
        advertise_for: Some(400),
    };
    let (mut swarm, _) = attacker(hostile_key.clone(), &def, &honest, tweak).await;
    let mut msg = [9u8; 32].to_vec();
    msg[..3].copy_from_slice(b"BTC");
    let recorded = sign_while_driving(&mut swarm, &honest, "BTC", &msg).await;
    assert!(recorded >= 4, "only {recorded} messages recorded");
    drive(&mut swarm, Duration::from_secs(61)).await;
    msg[3] = 1;
    sign_while_driving(&mut swarm, &honest, "BTC", &msg).await;
    let start = std::time::Instant::now();
    let mut stale_after = stale_before;
    while stale_after <= stale_before && start.elapsed() < Duration::from_secs(60) {
        drive(&mut swarm, Duration::from_secs(1)).await;
        stale_after = gossip_rejected_on(&honest, "stale").await;
    }
    assert!(
        stale_after > stale_before,
        "no replay was refused as stale ({stale_before} before, {stale_after} after)"
    );
    drop(swarm);

    // Then it relays gossip signed by made-up authors (H4), refused before anything is kept
    // about them.
    let made_up_before = gossip_rejected_on(&honest, "not_validator").await;
    for _ in 0..3 {
        let tweak = GossipTweak {
            author: Some(libp2p::identity::Keypair::generate_ed25519()),
            advertise_for: None,
        };
        let (mut swarm, topics) = attacker(hostile_key.clone(), &def, &honest, tweak).await;
        for k in 0..20u8 {
            for t in &topics {
                let _ = swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t.clone(), vec![1, k]);
            }
        }
        drive(&mut swarm, Duration::from_secs(1)).await;
    }
    let made_up = gossip_rejected_on(&honest, "not_validator").await - made_up_before;
    assert!(made_up >= 3.0, "only {made_up} made-up authors refused");

    // Through all of it the honest validators' budgets were untouched: the next approved
    // requests on both coins are signed.
    for coin in coins {
        let mut msg = [10u8; 32].to_vec();
        msg[..3].copy_from_slice(coin.as_bytes());
        let mut id = String::new();
        for n in &honest {
            id = approve(n, coin, &msg).await;
        }
        for n in &honest {
            let r = sign_finished(&n.api, &id, Duration::from_secs(60)).await;
            assert_eq!(r["status"], "done", "{coin} {r}");
            let s = status(n).await;
            let sig = hex::decode(r["signatures"][0].as_str().unwrap()).unwrap();
            assert!(chain_accepts(coin, vault(&s, coin), &msg, &sig), "{coin}");
            assert!(!n.log().contains("rate limit exceeded"), "{}", n.peer_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_of_a_dkg_and_restart_ends_with_one_key() {
    let coins = ["BTC", "ETH", "SOL"];
    // Kill validator 1 at increasing offsets after the last validator started: before, during
    // and after the rounds of the DKG.
    for (round, delay_ms) in [0u64, 150, 400, 800, 1500].into_iter().enumerate() {
        let mut c = Cluster::new(4, &coins);
        for i in 0..4 {
            c.start(i, &[]).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let before = status(c.node(1)).await;
        c.nodes[1].as_mut().unwrap().kill9();
        c.nodes[1] = None;
        c.start(1, &[]).await;
        let nodes = c.live();
        wait_all_active(&nodes, coins.len(), Duration::from_secs(60)).await;
        for coin in coins {
            let mut keys = BTreeSet::new();
            for n in &nodes {
                let s = status(n).await;
                let v = vault(&s, coin);
                assert_eq!(v["participants"].as_array().unwrap().len(), 4);
                assert_eq!(v["attempt"], 0, "round {round}: nobody is left out");
                keys.insert(v["group_key"].as_str().unwrap().to_string());
            }
            assert_eq!(
                keys.len(),
                1,
                "round {round} ({delay_ms} ms): {coin} keys differ"
            );
            // What the killed node had on disk before is still there.
            let was = vault(&before, coin);
            if was["status"] == "active" {
                let now = status(c.node(1)).await;
                assert_eq!(vault(&now, coin)["group_key"], was["group_key"]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_signing_then_restart_finishes_every_request() {
    let coins = ["BTC", "SOL"];
    let mut c = Cluster::new(4, &coins);
    for i in 0..4 {
        c.start(i, &[]).await;
    }
    wait_all_active(&c.live(), coins.len(), Duration::from_secs(60)).await;
    let mut ids = Vec::new();
    for coin in coins {
        for k in 0..20u8 {
            let msg = match coin {
                "SOL" => vec![k; 80],
                _ => vec![k; 32],
            };
            // Approved by three operators, the signer about to die among them.
            let body = serde_json::json!({"coin": coin, "messages": [hex::encode(msg)]});
            let mut id = None;
            for i in 0..3 {
                let (code, reply) = c.node(i).post("/sign", &body.to_string()).await;
                assert_eq!(code, 202, "{reply}");
                let reply: Value = serde_json::from_str(&reply).unwrap();
                id = Some(reply["id"].as_str().unwrap().to_string());
            }
            ids.push(id.unwrap());
        }
    }
    // A signer dies in the middle of the ceremonies, and comes back.
    c.nodes[2].as_mut().unwrap().kill9();
    c.nodes[2] = None;
    c.start(2, &[]).await;
    let mut done = 0;
    for id in &ids {
        let api = c.node(0).api.clone();
        let path = format!("/sign/{id}");
        let start = std::time::Instant::now();
        let last = loop {
            if let Ok((200, body)) = vaultd::http_client::get(&api, &path).await {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if v["status"] != "pending" {
                    break v;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "request {id} still pending"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match last["status"].as_str() {
            Some("done") => done += 1,
            Some("failed") => assert!(last["reason"].as_str().is_some_and(|r| !r.is_empty())),
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert!(done >= ids.len() / 2, "only {done} of {} signed", ids.len());
    // The restarted signer still holds its vaults (nothing on disk was lost).
    wait_all_active(&c.live(), coins.len(), Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_stalls_the_dkg_until_it_heals_and_a_slow_link_only_slows_it() {
    let coins = ["ETH"];
    // Cut: validators 0 and 1 cannot talk; the DKG waits (60 s timeout), then completes with
    // all four once the link heals: nothing was lost meanwhile (outbox, inbound log).
    let mut c = Cluster::new(4, &coins);
    // Each side's cut is in place before the other can reach it (nodes dial each other at once).
    for i in 0..4 {
        c.start(i, &[]).await;
        match i {
            0 => c.node(0).links(&[c.ids[1].as_str()], &[], 0).await,
            1 => c.node(1).links(&[c.ids[0].as_str()], &[], 0).await,
            _ => {}
        }
    }
    wait_for(
        "validator 0 to be stuck",
        Duration::from_secs(30),
        || async {
            let s = status(c.node(0)).await;
            vault(&s, "ETH")["phase"] == "KeyExchange"
                && s["peers"].as_array().is_some_and(|p| p.len() >= 2)
        },
    )
    .await;
    assert_ne!(vault(&status(c.node(2)).await, "ETH")["status"], "active");
    c.node(0).links(&[], &[], 0).await;
    c.node(1).links(&[], &[], 0).await;
    wait_all_active(&c.live(), 1, Duration::from_secs(60)).await;
    // Delay: every message between 0 and 1 is held back 300 ms; the DKG completes, nobody is
    // left out.
    let mut c = Cluster::new(4, &coins);
    for i in 0..2 {
        c.start(i, &[]).await;
    }
    c.node(0).links(&[], &[c.ids[1].as_str()], 300).await;
    c.node(1).links(&[], &[c.ids[0].as_str()], 300).await;
    for i in 2..4 {
        c.start(i, &[]).await;
    }
    wait_all_active(&c.live(), 1, Duration::from_secs(60)).await;
    for n in c.live() {
        assert_eq!(vault(&status(n).await, "ETH")["attempt"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_at_rest_open_only_with_the_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let pw = tmp.path().join("passphrase");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("VAULTD_INSECURE_NO_PASSPHRASE")
            .output()
            .unwrap()
    };
    // Neither flag: refused, naming both ways.
    let out = run(&["init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-file"));
    let out = run(&["init", "--password-file", pw.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = id["peer_id"].as_str().unwrap().to_string();
    let network = tmp.path().join("network.toml");
    let other = init(&tmp.path().join("other")); // a second validator, never started
    write_network(&network, &[id.clone(), other], &["BTC"]);
    // The right passphrase: the node runs with the same identity.
    let mut node = Node::start_with(
        &dir,
        &network,
        None,
        &["--password-file", pw.to_str().unwrap()],
    )
    .await;
    assert_eq!(node.peer_id, id);
    node.kill9();
    // A wrong one, or none: it refuses to start, with a clear error.
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "battery horse correct\n").unwrap();
    let refused = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["run", "--network"])
            .arg(&network)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("VAULTD_INSECURE_NO_PASSPHRASE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A passphrase file, or a data directory, other users can read: refused, naming it.
        let err = refused(&["--password-file", wrong.to_str().unwrap()]);
        assert!(
            err.contains("the passphrase file") && err.contains("wrong") && err.contains("644"),
            "{err}"
        );
        let err = refused(&[
            "--password-file",
            wrong.to_str().unwrap(),
            "--insecure-permissions",
        ]);
        assert!(err.contains("wrong passphrase"), "overridden: {err}");
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = refused(&["--password-file", pw.to_str().unwrap()]);
        assert!(
            err.contains("the data directory") && err.contains("chmod 700"),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // The control socket's directory is the operator's alone.
        let control = dir.join("control");
        let mode = std::fs::metadata(&control).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "control directory mode {mode:o}");
    }
    for extra in [
        vec!["--password-file", wrong.to_str().unwrap()],
        vec!["--insecure-no-passphrase"],
    ] {
        let out = std::process::Command::new(BIN)
            .args(["run", "--network"])
            .arg(&network)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .args(&extra)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("VAULTD_INSECURE_NO_PASSPHRASE")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("wrong passphrase") || err.contains("encrypted"),
            "{err}"
        );
        assert!(
            !err.contains("correct horse"),
            "the passphrase leaked into an error"
        );
    }
}
