//! Malformed bytes on gossip and on request-response, sent over real connections by a validator
//! identity, give a logged rejection, never a panic, and the DKG still completes.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use futures::StreamExt;
use libp2p::{request_response, swarm::SwarmEvent, Multiaddr, PeerId};
use protocol::{
    messages::{self, *},
    Coin, ValidatorId,
};
use vaultd::network::{self, BehaviourEvent};

const COINS: [&str; 2] = ["BTC", "SOL"];

/// The next answer the hostile swarm gets to one of its direct requests (other events pass).
async fn next_response(
    swarm: &mut libp2p::Swarm<network::Behaviour>,
) -> (request_response::OutboundRequestId, DirectResponse) {
    loop {
        if let SwarmEvent::Behaviour(BehaviourEvent::Direct(request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        })) = swarm.select_next_some().await
        {
            return (request_id, messages::decode(&response).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_gossip_and_requests_are_rejected_and_the_dkg_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, _, network_file) = fresh_validators(tmp.path(), 4, &COINS);

    let mut nodes = vec![Node::start(&dirs[0], &network_file, None).await];
    for d in &dirs[1..3] {
        let boot = nodes[0].p2p.clone();
        nodes.push(Node::start(d, &network_file, Some(&boot)).await);
    }

    // The hostile sender speaks with validator 4's own identity (taken from its data dir), so
    // it passes the allow-list and reaches the message checks.
    let keys = {
        let store =
            storage::Store::open(&vaultd::db_path(&dirs[3]), &storage::Secrets::Insecure).unwrap();
        store.node_keys().unwrap().unwrap()
    };
    let keypair = network::keypair_from_secret(&keys.coordinator_secret).unwrap();
    let def = vaultd::load_definition(&network_file).unwrap();
    let validators: Vec<PeerId> = def
        .validators
        .iter()
        .map(|v| network::peer_id_of(v).unwrap())
        .collect();
    let mut swarm = network::build_swarm(keypair, &def.name, &validators).unwrap();
    let targets: Vec<(PeerId, Multiaddr)> = nodes
        .iter()
        .map(|n| {
            let addr: Multiaddr = n.p2p.parse().unwrap();
            (n.peer_id.parse().unwrap(), addr)
        })
        .collect();
    let running: Vec<&Node> = nodes.iter().collect();
    let topics = join_topics(&mut swarm, &def, &running).await;

    // Gossip: random bytes, an unknown version, a valid envelope with a lie in it.
    let me = keys.validator_id();
    let lie = messages::encode(&GeneralMessage::CoordinatorPublicKey(
        CoordinatorPublicKey { pubkey: [7; 32] },
    ))
    .unwrap();
    let wrong_coin = messages::encode(&GeneralMessage::ProcessorPublicKey(ProcessorPublicKey {
        coin: Coin::Eth,
        pubkey: [1; 32],
        seq: 0,
    }))
    .unwrap();
    for t in &topics {
        for payload in [
            vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x13],
            vec![9, 1, 2, 3],
            lie.clone(),
            wrong_coin.clone(),
        ] {
            swarm
                .behaviour_mut()
                .gossipsub
                .publish(t.clone(), payload)
                .unwrap();
        }
    }
    // Request-response: garbage, an oversized-but-allowed body of junk, a message for someone
    // else, and a well-formed share with an unopenable seal (rejected by the processor).
    let node1_id: ValidatorId = nodes[0].peer_id.parse().unwrap();
    let node2_id: ValidatorId = nodes[1].peer_id.parse().unwrap();
    let context = protocol::dkg::context(&def.name, Coin::Btc, 0, 0, &def.validators);
    let bad_seal = messages::encode(&DirectRequest::EncryptedKeyShareOut(EncryptedKeyShareOut {
        coin: Coin::Btc,
        to: node1_id.clone(),
        context,
        sealed: vec![3; 300],
    }))
    .unwrap();
    let misaddressed = messages::encode(&DirectRequest::EncryptedPublicKeyOut(
        EncryptedPublicKeyOut {
            coin: Coin::Sol,
            to: node2_id,
            sealed: vec![3; 200],
        },
    ))
    .unwrap();
    let mut expected = Vec::new();
    for (peer, _) in &targets {
        expected.push(
            swarm
                .behaviour_mut()
                .direct
                .send_request(peer, vec![0xff; 64]),
        );
        expected.push(
            swarm
                .behaviour_mut()
                .direct
                .send_request(peer, vec![1; 100_000]),
        );
    }
    let (p1, _) = targets[0];
    expected.push(swarm.behaviour_mut().direct.send_request(&p1, misaddressed));
    let bad_seal_id = swarm.behaviour_mut().direct.send_request(&p1, bad_seal);

    let mut rejected = 0;
    let mut accepted_bad_seal = false;
    tokio::time::timeout(Duration::from_secs(30), async {
        while rejected < expected.len() || !accepted_bad_seal {
            let (request_id, r) = next_response(&mut swarm).await;
            if request_id == bad_seal_id {
                // well-formed: the coordinator stores it; the processor rejects it
                assert_eq!(r, DirectResponse::Accepted);
                accepted_bad_seal = true;
            } else {
                assert!(expected.contains(&request_id));
                assert!(matches!(r, DirectResponse::Rejected { .. }), "{r:?}");
                rejected += 1;
            }
        }
    })
    .await
    .expect("every request answered");

    // Asking a node for its announcements: one request per second and coin is answered (with
    // a replay, retried by its outbox); another one within that second gets `Duplicate`.
    let ask = messages::encode(&DirectRequest::AnnouncementRequest(AnnouncementRequest {
        coin: Coin::Btc,
    }))
    .unwrap();
    let asks: BTreeSet<_> = (0..2)
        .map(|_| swarm.behaviour_mut().direct.send_request(&p1, ask.clone()))
        .collect();
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while answers.len() < asks.len() {
            let (request_id, r) = next_response(&mut swarm).await;
            if asks.contains(&request_id) {
                answers.push(r);
            }
        }
    })
    .await
    .expect("both asks answered");
    answers.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        answers,
        vec![DirectResponse::Accepted, DirectResponse::Duplicate]
    );

    // A flood from the same validator identity: past its burst (2000) it gets no answer; the
    // node says so, naming it, and keeps running.
    let (p1, _) = targets[0];
    // Waves below the stream limit (256 concurrent), so that only the rate limit drops any.
    let (mut answered, mut unanswered) = (0usize, 0usize);
    for _ in 0..16 {
        let wave: BTreeSet<_> = (0..250)
            .map(|_| {
                swarm
                    .behaviour_mut()
                    .direct
                    .send_request(&p1, vec![0xee; 8])
            })
            .collect();
        let mut ended = 0;
        tokio::time::timeout(Duration::from_secs(60), async {
            while ended < wave.len() {
                match swarm.select_next_some().await {
                    // A request left unanswered ends with an outbound failure (the stream
                    // closes before any byte: the codec reads that as an I/O error), or with
                    // an empty response from a codec that does not.
                    SwarmEvent::Behaviour(BehaviourEvent::Direct(
                        request_response::Event::Message {
                            message:
                                request_response::Message::Response {
                                    request_id,
                                    response,
                                },
                            ..
                        },
                    )) if wave.contains(&request_id) => {
                        if response.is_empty() {
                            unanswered += 1;
                        } else {
                            answered += 1;
                        }
                        ended += 1;
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Direct(
                        request_response::Event::OutboundFailure { request_id, .. },
                    )) if wave.contains(&request_id) => {
                        unanswered += 1;
                        ended += 1;
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("every flooded request ended");
    }
    assert!(
        unanswered > 0,
        "the flood was never limited: {answered} answered"
    );
    assert!(
        answered >= 1900,
        "only {answered} answered before the limit"
    );
    assert!(nodes[0].alive());
    assert!(nodes[0]
        .log()
        .lines()
        .any(|l| l.contains("rate limit exceeded") && l.contains(&me.to_string())));
    assert!(nodes[0]
        .metrics()
        .await
        .contains("vaultd_rate_limited_total{protocol=\"direct\"}"));

    // Connection churn from the same identity (16 fresh swarms): the node keeps at most 2
    // connections per peer and rate-limits new ones (`rate::RateLimiter`, unit-tested); here it
    // only has to stay up.
    drop(swarm);
    let a1: Multiaddr = targets[0].1.clone();
    for _ in 0..16 {
        let keypair = network::keypair_from_secret(&keys.coordinator_secret).unwrap();
        let mut churn = network::build_swarm(keypair, &def.name, &validators).unwrap();
        churn.dial(a1.clone()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                    churn.select_next_some().await
                {
                    if peer_id == p1 {
                        return;
                    }
                }
            }
        })
        .await
        .expect("the dial connects");
        churn.disconnect_peer_id(p1).ok();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::ConnectionClosed { peer_id, .. } = churn.select_next_some().await
                {
                    if peer_id == p1 {
                        return;
                    }
                }
            }
        })
        .await
        .expect("the connection closes");
    }
    assert!(nodes[0].alive());

    // Every node is still alive and says what it rejected, naming the sender.
    let me = me.to_string();
    for n in nodes.iter_mut() {
        assert!(n.alive());
        let log = n.log();
        assert!(
            log.lines()
                .any(|l| l.contains("rejected gossip message") && l.contains(&me)),
            "{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("rejected direct request") && l.contains(&me)),
            "{log}"
        );
        assert!(n.metrics().await.contains("vaultd_messages_rejected_total"));
    }
    // The real validator 4 joins: the DKG completes everywhere with one key per coin.
    let boot = nodes[0].p2p.clone();
    nodes.push(Node::start(&dirs[3], &network_file, Some(&boot)).await);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_all_active(&refs, COINS.len(), Duration::from_secs(240)).await;
    let mut keys_seen = BTreeSet::new();
    for n in &nodes {
        let s = n.status().await.unwrap();
        for v in s["vaults"].as_array().unwrap() {
            keys_seen.insert((
                v["coin"].as_str().unwrap().to_string(),
                v["group_key"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        keys_seen.len(),
        COINS.len(),
        "one group key per coin: {keys_seen:?}"
    );
    // The well-formed share with the unopenable seal waited until validator 4's key was known,
    // then node 1's processor rejected (and dropped) it, naming validator 4.
    let log = nodes[0].log();
    let rejections: Vec<&str> = log.lines().filter(|l| l.contains("rejected")).collect();
    eprintln!("node 1 rejections:\n{}", rejections.join("\n"));
    wait_for(
        "the processor's rejection of the bad seal",
        Duration::from_secs(20),
        || async {
            nodes[0]
                .log()
                .lines()
                .any(|l| l.contains("processor rejected message") && l.contains(&me))
        },
    )
    .await;

    // A peer outside the network definition cannot keep a connection or get an answer.
    let stranger = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = network::build_swarm(stranger, &def.name, &validators).unwrap();
    let (p1, a1) = targets[0].clone();
    swarm.add_peer_address(p1, a1);
    let id = swarm
        .behaviour_mut()
        .direct
        .send_request(&p1, vec![1, 2, 3]);
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(BehaviourEvent::Direct(
                    request_response::Event::OutboundFailure { request_id, .. },
                )) if request_id == id => return false,
                SwarmEvent::Behaviour(BehaviourEvent::Direct(
                    request_response::Event::Message {
                        message: request_response::Message::Response { .. },
                        ..
                    },
                )) => return true,
                _ => {}
            }
        }
    })
    .await
    .expect("the request ended one way or the other");
    assert!(!answered, "a stranger got an answer");
}
