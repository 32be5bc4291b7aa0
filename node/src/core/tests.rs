//! The core's jobs, each driven with plain values: no swarm, no database, no channel.
//!
//! Why one file of this size: one section per job of the core, sharing the small harness at the
//! top (a network definition, a started core, helpers that pick actions out).

use std::time::{Duration, Instant};

use libp2p::{
    gossipsub::{MessageAcceptance, MessageId},
    swarm::ConnectionId,
    Multiaddr, PeerId,
};
use protocol::{
    keys::NodeKeys,
    messages::{
        self, CoordinatorPublicKey, DirectRequest, DirectResponse, EncryptedPublicKeyOut,
        GeneralMessage, ProcessorMessage, ProcessorPublicKey, ProcessorPublicKeyList,
    },
    signing::SigningConfig,
    Coin, ValidatorId,
};

use super::*;

/// Plain handles: a request's channel and a sign reply are numbers here.
struct Plain;

impl Io for Plain {
    type Channel = u32;
    type SignReply = u32;
}

struct Net {
    keys: Vec<NodeKeys>,
    def: NetworkDefinition,
}

impl Net {
    fn new(n: usize, coins: &[Coin]) -> Net {
        let keys: Vec<NodeKeys> = (0..n)
            .map(|_| NodeKeys::generate(&mut rand_core::OsRng).unwrap())
            .collect();
        let def = protocol::local::definition("t", &keys, coins);
        Net { keys, def }
    }

    fn v(&self, i: usize) -> ValidatorId {
        self.def.validators[i].clone()
    }

    fn peer(&self, i: usize) -> PeerId {
        network::peer_id_of(&self.def.validators[i]).unwrap()
    }

    /// The keys of validator `i` (the definition sorts validators).
    fn keys_of(&self, i: usize) -> &NodeKeys {
        let v = self.v(i);
        self.keys.iter().find(|k| k.validator_id() == v).unwrap()
    }

    /// Validator `i`'s core, started.
    fn core(&self, i: usize, now: Instant) -> (Core, Vec<Action<Plain>>) {
        self.core_with(i, Vec::new(), now)
    }

    fn core_with(
        &self,
        i: usize,
        retiring: Vec<VaultRecord>,
        now: Instant,
    ) -> (Core, Vec<Action<Plain>>) {
        let mut registry = prometheus_client::registry::Registry::default();
        let mut core = Core::new(CoreParts {
            def: self.def.clone(),
            me: self.v(i),
            local_peer: self.peer(i),
            coordinator_key: self.keys_of(i).coordinator_public(),
            peer_records: BTreeMap::new(),
            bootstrap: Vec::new(),
            retiring,
            signing: SigningConfig::default(),
            dkg_timeout: Duration::from_secs(60),
            metrics: Metrics::register(&mut registry),
            policy: crate::policy::SignPolicy::default(),
        })
        .unwrap();
        let actions = core.handle(Event::Start { outbox: Vec::new() }, now);
        (core, actions)
    }
}

fn connect(core: &mut Core, peer: PeerId, now: Instant) -> Vec<Action<Plain>> {
    core.handle(
        Event::Connected {
            peer,
            connection: ConnectionId::new_unchecked(1),
            addr: "/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap(),
            first: true,
        },
        now,
    )
}

/// One instant for every gossip message of a test: no time passes, no rate refills.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn gossip(core: &mut Core, author: Option<PeerId>, coin: Coin, msg: &GeneralMessage) -> Verdict {
    gossip_bytes(core, author, coin, messages::encode(msg).unwrap())
}

/// A fresh gossip sequence number (authors number their messages up).
fn next_seq() -> Option<u64> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Some(SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn gossip_bytes(core: &mut Core, author: Option<PeerId>, coin: Coin, data: Vec<u8>) -> Verdict {
    gossip_numbered(core, author, next_seq(), coin, data)
}

fn gossip_numbered(
    core: &mut Core,
    author: Option<PeerId>,
    seq: Option<u64>,
    coin: Coin,
    data: Vec<u8>,
) -> Verdict {
    let topic = network::coin_topic("t", coin).hash();
    let source = author.unwrap_or_else(PeerId::random);
    let actions = core.handle::<Plain>(
        Event::Gossip {
            source,
            id: MessageId::new(b"m"),
            author,
            seq,
            topic,
            data,
        },
        t0(),
    );
    actions
        .iter()
        .find_map(|a| match a {
            Action::Report { verdict, .. } => Some(*verdict),
            _ => None,
        })
        .expect("every gossip message is reported")
}

fn request(core: &mut Core, peer: PeerId, req: &DirectRequest) -> (Answer, Vec<Action<Plain>>) {
    let actions = core.handle::<Plain>(
        Event::Request {
            peer,
            bytes: messages::encode(req).unwrap(),
            channel: 7,
        },
        t0(),
    );
    let answer = actions
        .iter()
        .find_map(|a| match a {
            Action::Answer { answer, .. } => Some(answer.clone()),
            _ => None,
        })
        .unwrap_or(Answer::Accepted);
    (answer, actions)
}

fn sends(actions: &[Action<Plain>]) -> Vec<(PeerId, u64, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                peer, token, kind, ..
            } => Some((*peer, *token, *kind)),
            _ => None,
        })
        .collect()
}

fn places(actions: &[Action<Plain>]) -> Vec<(Vec<Target>, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Place { targets, msg, .. } => Some((targets.clone(), msg.kind())),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------ inbound validation

#[test]
fn gossip_is_taken_only_from_validators_signing_their_own_keys() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let key = |i: usize| {
        GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey {
            pubkey: net.keys_of(i).coordinator_public(),
        })
    };
    assert_eq!(gossip(&mut core, None, Coin::Btc, &key(1)), Verdict::Reject);
    assert_eq!(
        gossip(&mut core, Some(PeerId::random()), Coin::Btc, &key(1)),
        Verdict::Reject
    );
    assert_eq!(
        gossip(&mut core, Some(net.peer(0)), Coin::Btc, &key(0)),
        Verdict::Reject,
        "our own key relayed back"
    );
    assert_eq!(
        gossip(&mut core, Some(net.peer(2)), Coin::Btc, &key(1)),
        Verdict::Reject,
        "validator 2 announcing 1's key"
    );
    assert_eq!(
        gossip_bytes(&mut core, Some(net.peer(1)), Coin::Btc, vec![0xff; 9]),
        Verdict::Reject
    );
    assert_eq!(
        gossip(&mut core, Some(net.peer(1)), Coin::Eth, &key(1)),
        Verdict::Reject,
        "a topic that is not one of the network's"
    );
    assert_eq!(
        gossip(&mut core, Some(net.peer(1)), Coin::Btc, &key(1)),
        Verdict::Accept
    );
    assert_eq!(
        core.peer_records[&net.v(1)].coordinator_key,
        Some(net.keys_of(1).coordinator_public())
    );
}

#[test]
fn a_processor_key_is_replaced_only_by_a_higher_seq_and_two_keys_under_one_seq_are_rejected() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let key = |pubkey: u8, seq| {
        GeneralMessage::ProcessorPublicKey(ProcessorPublicKey {
            coin: Coin::Btc,
            pubkey: [pubkey; 32],
            seq,
        })
    };
    let from = Some(net.peer(1));
    assert_eq!(
        gossip(&mut core, from, Coin::Btc, &key(1, 5)),
        Verdict::Accept
    );
    assert_eq!(
        gossip(&mut core, from, Coin::Btc, &key(2, 5)),
        Verdict::Reject
    );
    assert_eq!(
        gossip(&mut core, from, Coin::Btc, &key(3, 4)),
        Verdict::Accept
    );
    let stored = |core: &Core| core.peer_records[&net.v(1)].processor_keys[&Coin::Btc].clone();
    assert_eq!(stored(&core).pubkey, [1; 32], "a stale key changes nothing");
    assert_eq!(
        gossip(&mut core, from, Coin::Btc, &key(4, 6)),
        Verdict::Accept
    );
    assert_eq!(stored(&core).pubkey, [4; 32]);
    // A processor key on another coin's topic.
    let net2 = Net::new(3, &[Coin::Btc, Coin::Sol]);
    let (mut core2, _) = net2.core(0, Instant::now());
    assert_eq!(
        gossip(&mut core2, Some(net2.peer(1)), Coin::Sol, &key(1, 1)),
        Verdict::Reject
    );
}

#[test]
fn a_peers_key_becomes_its_external_key_message_placed_for_the_current_processor() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let k = ProcessorPublicKey {
        coin: Coin::Btc,
        pubkey: [9; 32],
        seq: 1,
    };
    let actions = core.handle::<Plain>(
        Event::Gossip {
            source: net.peer(1),
            id: MessageId::new(b"k"),
            author: Some(net.peer(1)),
            seq: next_seq(),
            topic: network::coin_topic("t", Coin::Btc).hash(),
            data: messages::encode(&GeneralMessage::ProcessorPublicKey(k)).unwrap(),
        },
        Instant::now(),
    );
    assert_eq!(
        places(&actions),
        vec![(vec![Target::Current(Coin::Btc)], "ExternalPublicKeyIn")]
    );
    // The peer record is written (lazily) before the placement is reported.
    assert!(matches!(actions[0], Action::Persist { durable: false, .. }));
    assert!(matches!(actions.last(), Some(Action::Report { .. })));
}

#[test]
fn requests_from_strangers_for_others_or_too_long_are_rejected_naming_why() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let sealed = |to: ValidatorId| {
        DirectRequest::EncryptedPublicKeyOut(EncryptedPublicKeyOut {
            coin: Coin::Btc,
            to,
            sealed: vec![1, 2, 3],
        })
    };
    let (answer, _) = request(&mut core, PeerId::random(), &sealed(net.v(0)));
    assert_eq!(answer, Answer::Rejected(Rejection::NotValidator));
    let (answer, actions) = request(&mut core, net.peer(1), &sealed(net.v(2)));
    assert_eq!(answer, Answer::Rejected(Rejection::NotForUs(net.v(2))));
    assert!(places(&actions).is_empty());
    let list = DirectRequest::ProcessorPublicKeyList(ProcessorPublicKeyList {
        keys: vec![
            ProcessorPublicKey {
                coin: Coin::Btc,
                pubkey: [1; 32],
                seq: 1,
            };
            2
        ],
    });
    let (answer, _) = request(&mut core, net.peer(1), &list);
    assert_eq!(answer, Answer::Rejected(Rejection::KeyListTooLong));
    let (answer, actions) = request(&mut core, net.peer(1), &sealed(net.v(0)));
    assert_eq!(answer, Answer::ByPlacement);
    assert_eq!(
        places(&actions),
        vec![(vec![Target::Current(Coin::Btc)], "EncryptedPublicKeyIn")]
    );
    let (answer, _) = request(&mut core, net.peer(1), &sealed(net.v(0)));
    assert_eq!(
        answer,
        Answer::ByPlacement,
        "the driver finds the duplicate"
    );
}

#[test]
fn answers_fold_in_what_the_placements_became() {
    let mut placed = Placements::default();
    assert_eq!(
        Answer::ByPlacement.finish(&placed),
        Some(DirectResponse::Accepted)
    );
    placed.add(Placement::Duplicate);
    assert_eq!(
        Answer::ByPlacement.finish(&placed),
        Some(DirectResponse::Duplicate)
    );
    assert_eq!(
        Answer::Accepted.finish(&placed),
        Some(DirectResponse::Accepted)
    );
    assert_eq!(Verdict::Accept.finish(&placed), MessageAcceptance::Accept);
    placed.add(Placement::Busy(Coin::Btc));
    assert_eq!(Answer::Accepted.finish(&placed), None, "left for a retry");
    assert_eq!(Verdict::Accept.finish(&placed), MessageAcceptance::Ignore);
    let mut gone = Placements::default();
    gone.add(Placement::Gone(Coin::Btc));
    assert!(matches!(
        Answer::Accepted.finish(&gone),
        Some(DirectResponse::Rejected { .. })
    ));
    assert_eq!(Verdict::Reject.finish(&gone), MessageAcceptance::Reject);
    assert_eq!(Verdict::Accept.finish(&gone), MessageAcceptance::Ignore);
}

// ------------------------------------------------------------------ rate limits

#[test]
fn gossip_past_an_authors_burst_is_ignored_and_others_are_not() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let msg = GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey {
        pubkey: net.keys_of(1).coordinator_public(),
    });
    let mut ignored = 0;
    for _ in 0..GOSSIP_BURST + 50 {
        if gossip(&mut core, Some(net.peer(1)), Coin::Btc, &msg) == Verdict::Ignore {
            ignored += 1;
        }
    }
    assert_eq!(ignored, 50);
    let other = GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey {
        pubkey: net.keys_of(2).coordinator_public(),
    });
    assert_eq!(
        gossip(&mut core, Some(net.peer(2)), Coin::Btc, &other),
        Verdict::Accept
    );
}

#[test]
fn replayed_gossip_is_rejected_without_spending_its_authors_budget() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let msg = GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey {
        pubkey: net.keys_of(1).coordinator_public(),
    });
    let data = messages::encode(&msg).unwrap();
    let seq = next_seq();
    let author = Some(net.peer(1));
    assert_eq!(
        gossip_numbered(&mut core, author, seq, Coin::Btc, data.clone()),
        Verdict::Accept
    );
    // Re-injected after gossipsub forgot it, 10,000 times: rejected every time (gossipsub
    // penalises the connection that carried it), counted, and never charged to the author.
    for _ in 0..10_000 {
        assert_eq!(
            gossip_numbered(&mut core, author, seq, Coin::Btc, data.clone()),
            Verdict::Reject
        );
    }
    assert_eq!(
        gossip_numbered(&mut core, author, None, Coin::Btc, data.clone()),
        Verdict::Reject
    );
    // The first message took one token; the 10,001 refusals took none.
    for _ in 1..GOSSIP_BURST {
        assert_eq!(
            gossip(&mut core, author, Coin::Btc, &msg),
            Verdict::Accept,
            "the author's own new messages are within its budget"
        );
    }
    assert_eq!(gossip(&mut core, author, Coin::Btc, &msg), Verdict::Ignore);
    let stale = core
        .metrics
        .messages_rejected
        .get_or_create(&vec![
            ("kind".to_string(), "gossip".to_string()),
            ("reason".to_string(), "stale".to_string()),
        ])
        .get();
    assert_eq!(stale, 10_001);
}

#[test]
fn announcements_replayed_directly_are_charged_to_the_senders_gossip_budget() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let msg = GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey {
        pubkey: net.keys_of(1).coordinator_public(),
    });
    let replay = DirectRequest::AnnouncementReplay(protocol::messages::AnnouncementReplay {
        coin: Coin::Btc,
        part: 0,
        messages: vec![msg.clone(); protocol::messages::MAX_REPLAY_MESSAGES],
    });
    // 100 replays of 32: the budget of 2000 runs out in the 63rd, and the rest are refused.
    let mut refused = 0;
    for _ in 0..100 {
        if let (Answer::Rejected(reason), _) = request(&mut core, net.peer(1), &replay) {
            assert!(matches!(reason, Rejection::Limited), "{reason}");
            refused += 1;
        }
    }
    assert_eq!(refused, 38);
    let limited = core
        .metrics
        .rate_limited
        .get_or_create(&vec![("protocol".to_string(), "gossip".to_string())])
        .get();
    assert_eq!(limited, 38);
    // Gossip of the same sender is limited too: it is one budget.
    assert_eq!(
        gossip(&mut core, Some(net.peer(1)), Coin::Btc, &msg),
        Verdict::Ignore
    );
}

#[test]
fn a_peer_churning_connections_has_its_new_ones_closed() {
    let net = Net::new(3, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    let closed = (0..CONNECTION_BURST + 3)
        .filter(|_| {
            connect(&mut core, net.peer(1), now)
                .iter()
                .any(|a| matches!(a, Action::Close(_)))
        })
        .count();
    assert_eq!(closed, 3);
}

#[test]
fn a_connection_is_closed_only_after_three_failed_pings_in_a_row() {
    let net = Net::new(3, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    connect(&mut core, net.peer(1), now);
    let mut ping = |rtt: Option<Duration>| {
        core.handle::<Plain>(
            Event::Ping {
                peer: net.peer(1),
                connection: ConnectionId::new_unchecked(1),
                rtt,
            },
            now,
        )
        .iter()
        .any(|a| matches!(a, Action::Close(_)))
    };
    // Two failures, then an answer: the count starts again.
    assert!(!ping(None) && !ping(None));
    assert!(!ping(Some(Duration::from_millis(3))));
    assert!(!ping(None) && !ping(None));
    assert!(
        ping(None),
        "three failed pings in a row close the connection"
    );
}

// ------------------------------------------------------------------ outbox and processor out

#[test]
fn a_dkg_request_is_persisted_before_it_is_sent_and_sent_once_its_peer_connects() {
    let net = Net::new(3, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    let out = ProcessorMessage::EncryptedPublicKeyOut(EncryptedPublicKeyOut {
        coin: Coin::Btc,
        to: net.v(1),
        sealed: vec![7; 40],
    });
    let actions = core.handle::<Plain>(
        Event::Processor {
            coin: Coin::Btc,
            msg: out,
        },
        now,
    );
    assert!(matches!(
        actions[..],
        [Action::Persist { durable: true, .. }]
    ));
    assert!(sends(&actions).is_empty(), "not connected yet");
    let actions = connect(&mut core, net.peer(1), now);
    let sent = sends(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, net.peer(1));
    // It fails: retried after the backoff, not at once.
    let token = sent[0].1;
    let actions = core.handle::<Plain>(
        Event::Response {
            token,
            peer: net.peer(1),
            answer: Err("timeout".into()),
        },
        now,
    );
    assert!(sends(&actions).is_empty());
    let tick = |core: &mut Core, at| core.handle::<Plain>(Event::Tick { all_active: false }, at);
    assert!(sends(&tick(&mut core, now + Duration::from_millis(100))).is_empty());
    let retry = sends(&tick(&mut core, now + Duration::from_millis(600)));
    assert_eq!(retry.len(), 1);
    // Acknowledged: the stored copy is deleted, and nothing is sent again.
    let actions = core.handle::<Plain>(
        Event::Response {
            token: retry[0].1,
            peer: net.peer(1),
            answer: Ok(messages::encode(&DirectResponse::Accepted).unwrap()),
        },
        now + Duration::from_millis(600),
    );
    assert!(matches!(
        actions[..],
        [Action::Persist { durable: false, .. }]
    ));
    assert_eq!(core.outbox_len(), 0);
    assert!(sends(&tick(&mut core, now + Duration::from_secs(60))).is_empty());
}

#[test]
fn our_keys_are_gossiped_and_the_key_list_goes_to_every_validator_once_all_processors_are_ready() {
    let net = Net::new(3, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    for i in [1, 2] {
        connect(&mut core, net.peer(i), now);
    }
    let key = ProcessorMessage::ProcessorPublicKey(ProcessorPublicKey {
        coin: Coin::Btc,
        pubkey: [3; 32],
        seq: 0,
    });
    let actions = core.handle::<Plain>(
        Event::Processor {
            coin: Coin::Btc,
            msg: key,
        },
        now,
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Publish {
            kind: "ProcessorPublicKey",
            ..
        }
    )));
    assert!(sends(&actions).is_empty(), "no SignerReady yet");
    let ready = ProcessorMessage::SignerReady(protocol::messages::SignerReady {
        coin: Coin::Btc,
        pubkey: [4; 32],
    });
    let actions = core.handle::<Plain>(
        Event::Processor {
            coin: Coin::Btc,
            msg: ready,
        },
        now,
    );
    let lists: Vec<PeerId> = sends(&actions)
        .into_iter()
        .filter(|s| s.2 == "ProcessorPublicKeyList")
        .map(|s| s.0)
        .collect();
    assert_eq!(lists.len(), 2);
    assert!(lists.contains(&net.peer(1)) && lists.contains(&net.peer(2)));
}

// ------------------------------------------------------------------ announcements

#[test]
fn a_subscribing_validator_gets_our_announcements_directly_and_a_stranger_does_not() {
    let net = Net::new(3, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    let topic = network::coin_topic("t", Coin::Btc).hash();
    let stranger = PeerId::random();
    connect(&mut core, stranger, now);
    let actions = core.handle::<Plain>(
        Event::Subscribed {
            peer: stranger,
            topic: topic.clone(),
        },
        now,
    );
    assert!(sends(&actions).is_empty());
    connect(&mut core, net.peer(1), now);
    let actions = core.handle::<Plain>(
        Event::Subscribed {
            peer: net.peer(1),
            topic,
        },
        now,
    );
    assert_eq!(
        sends(&actions)
            .iter()
            .map(|s| (s.0, s.2))
            .collect::<Vec<_>>(),
        vec![(net.peer(1), "AnnouncementReplay")]
    );
}

#[test]
fn the_coordinator_key_is_announced_at_start_and_again_in_rounds() {
    let net = Net::new(3, &[Coin::Btc, Coin::Eth]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    let published = |actions: &[Action<Plain>]| {
        actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Publish {
                        kind: "CoordinatorPublicKey",
                        ..
                    }
                )
            })
            .count()
    };
    let first = core.handle::<Plain>(Event::Tick { all_active: false }, now);
    assert_eq!(published(&first), 2, "one per coin topic");
    let soon = core.handle::<Plain>(
        Event::Tick { all_active: false },
        now + Duration::from_millis(250),
    );
    assert_eq!(published(&soon), 0);
    core.handle::<Plain>(Event::ReAnnounce, now);
    let early = core.handle::<Plain>(
        Event::Tick { all_active: false },
        now + Duration::from_millis(500),
    );
    assert_eq!(published(&early), 0, "at most one round a second");
    let asked = core.handle::<Plain>(
        Event::Tick { all_active: false },
        now + Duration::from_millis(1000),
    );
    assert_eq!(published(&asked), 2);
}

// ------------------------------------------------------------------ redial

#[test]
fn a_joining_node_looks_up_the_set_often_at_first_and_dials_what_it_finds_at_once() {
    // Only the bootstrap is known at start; every other validator was dialled blind (no
    // address yet). A lookup that finds them half a second later dials them then, and lookups
    // come after 0.25, 0.5, 1, 2, 4, 8 s, then every 10 s while anyone is missing.
    let net = Net::new(4, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, _) = net.core(0, now);
    let lookups = |core: &mut Core, at: Instant| {
        core.handle::<Plain>(Event::Tick { all_active: false }, at)
            .iter()
            .filter(|a| matches!(a, Action::KadBootstrap))
            .count()
    };
    let mut at_ms = Vec::new();
    for ms in (0..40_000).step_by(250) {
        if lookups(&mut core, now + Duration::from_millis(ms)) > 0 {
            at_ms.push(ms);
        }
    }
    assert_eq!(at_ms, [0, 250, 750, 1750, 3750, 7750, 15750, 25750, 35750]);

    // A lookup half a second after the start's blind dials.
    let (mut fresh, _) = net.core(1, now);
    let found = fresh.handle::<Plain>(
        Event::Discovered {
            peers: vec![net.peer(0), net.peer(2)],
        },
        now + Duration::from_millis(500),
    );
    let dialled = found
        .iter()
        .filter(|a| matches!(a, Action::Dial(_)))
        .count();
    assert_eq!(
        dialled, 2,
        "the blind dials at start do not hold back what a lookup found"
    );

    let found = core.handle::<Plain>(
        Event::Discovered {
            peers: vec![net.peer(1), net.peer(2), net.peer(3)],
        },
        now + Duration::from_millis(40_100),
    );
    let dialled = found
        .iter()
        .filter(|a| matches!(a, Action::Dial(_)))
        .count();
    assert_eq!(dialled, 3, "found validators are dialled at once");
    let again = core.handle::<Plain>(
        Event::Discovered {
            peers: vec![net.peer(1)],
        },
        now + Duration::from_millis(40_600),
    );
    assert!(
        !again.iter().any(|a| matches!(a, Action::Dial(_))),
        "not twice within 2 s"
    );
    // Everyone connected: no more lookups.
    for i in 1..4 {
        connect(&mut core, net.peer(i), now + Duration::from_millis(41_000));
    }
    assert_eq!(lookups(&mut core, now + Duration::from_secs(60)), 0);
}

#[test]
fn missing_validators_are_dialed_with_backoff_and_connected_ones_are_not() {
    let net = Net::new(3, &[Coin::Btc]);
    let now = Instant::now();
    let (mut core, start) = net.core(0, now);
    let dials = |actions: &[Action<Plain>]| {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dial(p) => Some(*p),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut first = dials(&start);
    first.sort();
    let mut expected = vec![net.peer(1), net.peer(2)];
    expected.sort();
    assert_eq!(first, expected);
    connect(&mut core, net.peer(1), now);
    let mut t = |s| core_tick(&mut core, now + Duration::from_secs(s));
    assert!(dials(&t(1)).is_empty(), "within the tick gap");
    assert_eq!(dials(&t(2)), vec![net.peer(2)], "only the missing one");
    assert!(dials(&t(4)).is_empty(), "its backoff doubled to 4 s");
    assert_eq!(dials(&t(6)), vec![net.peer(2)]);
}

fn core_tick(core: &mut Core, at: Instant) -> Vec<Action<Plain>> {
    core.handle::<Plain>(Event::Tick { all_active: false }, at)
}

// ------------------------------------------------------------------ sign admission

fn view(session: u32) -> TargetView {
    TargetView {
        target: Target::Current(Coin::Btc),
        session,
        can_sign: true,
        queued: 0,
        vault: Some([5; 32]),
        has_room: true,
    }
}

fn sign(coin: Coin, session: Option<u32>) -> SignRequest {
    SignRequest {
        coin,
        messages: vec![vec![0xab; 32]],
        session,
        reference: None,
    }
}

#[test]
fn sign_admission_refuses_what_cannot_sign_now_with_a_typed_reason() {
    let coins = [Coin::Btc];
    let admit = |req: &SignRequest, views: &[TargetView]| {
        admission::admit(req, views, &coins, 1, 4, "net").map(|(t, r)| (t, r.vault))
    };
    assert!(matches!(
        admit(&sign(Coin::Eth, None), &[view(1)]),
        Err(SignRefusal::UnknownCoin(Coin::Eth))
    ));
    assert!(matches!(
        admit(&sign(Coin::Btc, Some(0)), &[view(1)]),
        Err(SignRefusal::UnknownSession { session: 0, .. })
    ));
    let inactive = TargetView {
        can_sign: false,
        ..view(1)
    };
    assert!(matches!(
        admit(&sign(Coin::Btc, None), &[inactive]),
        Err(SignRefusal::NotActive(_))
    ));
    let bad = SignRequest {
        messages: vec![vec![1; 3]],
        ..sign(Coin::Btc, None)
    };
    assert!(matches!(
        admit(&bad, &[view(1)]),
        Err(SignRefusal::InvalidMessages(_))
    ));
    let queued = TargetView {
        queued: 4,
        ..view(1)
    };
    assert!(matches!(
        admit(&sign(Coin::Btc, None), &[queued]),
        Err(SignRefusal::Queued { queued: 4, .. })
    ));
    let full = TargetView {
        has_room: false,
        ..view(1)
    };
    assert!(matches!(
        admit(&sign(Coin::Btc, None), &[full]),
        Err(SignRefusal::Busy(_))
    ));
    let retiring = TargetView {
        target: Target::Retiring(0),
        vault: Some([6; 32]),
        ..view(0)
    };
    assert_eq!(
        admit(&sign(Coin::Btc, Some(0)), &[view(1), retiring.clone()]).unwrap(),
        (Target::Retiring(0), [6; 32])
    );
    assert_eq!(
        admit(&sign(Coin::Btc, None), &[view(1), retiring]).unwrap(),
        (Target::Current(Coin::Btc), [5; 32])
    );
}

#[test]
fn an_admitted_request_goes_to_its_processor_as_an_approval_named_by_its_content() {
    let net = Net::new(3, &[Coin::Btc]);
    let (mut core, _) = net.core(0, Instant::now());
    let mut approve = |request: SignRequest| {
        let actions = core.handle::<Plain>(
            Event::Sign {
                request,
                targets: vec![view(net.def.session)],
                reply: 3,
            },
            Instant::now(),
        );
        // The processor stores the approval and answers; nothing is written before it.
        match &actions[..] {
            [Action::Approve {
                target: Target::Current(Coin::Btc),
                msg,
                reply: 3,
                ..
            }] => msg.clone(),
            other => panic!("{} actions, not one approval", other.len()),
        }
    };
    let a = approve(sign(Coin::Btc, None));
    let b = approve(sign(Coin::Btc, None));
    assert_eq!(a.id, b.id, "the same content is the same request");
    assert_eq!(
        a.id,
        protocol::approvals::request_id(&net.def.name, Coin::Btc, &[5; 32], &a.messages, None)
    );
    let referenced = approve(SignRequest {
        reference: Some("tx 1".into()),
        ..sign(Coin::Btc, None)
    });
    assert_ne!(referenced.id, a.id, "the reference is part of the id");
    let long = SignRequest {
        reference: Some("x".repeat(admission::MAX_REFERENCE + 1)),
        ..sign(Coin::Btc, None)
    };
    assert!(matches!(
        admission::admit(&long, &[view(net.def.session)], &[Coin::Btc], 0, 4, "n"),
        Err(SignRefusal::InvalidReference(_))
    ));
    let mut gone = Placements::default();
    gone.add(Placement::Gone(Coin::Btc));
    assert!(matches!(
        admission::finish(Ok([1; 32]), &gone),
        Err(SignRefusal::Stopped(Coin::Btc))
    ));
}

// ------------------------------------------------------------------ retiring vaults

#[test]
fn signing_traffic_for_a_retiring_vault_goes_to_its_processor() {
    let net = Net::new(3, &[Coin::Btc]);
    let old = VaultRecord {
        coin: Coin::Btc,
        session: 0,
        context: [8; 32],
        attempt: 0,
        status: protocol::vault::VaultStatus::Active,
        group_key: Vec::new(),
        address: String::new(),
        threshold: 2,
        participants: net.def.validators.clone(),
        excluded: Vec::new(),
        reason: None,
    };
    let (mut core, _) = net.core_with(0, vec![old], Instant::now());
    let for_vault = |vault| {
        protocol::messages::GeneralMessage::SignatureAvailable(
            protocol::messages::SignatureAvailable {
                coin: Coin::Btc,
                id: [1; 32],
                origin: net.v(1),
                attempt: 0,
                vault,
                signers: Vec::new(),
                messages: Vec::new(),
                signatures: Vec::new(),
                reference: None,
            },
        )
    };
    let targets = |core: &mut Core, vault| {
        let actions = core.handle::<Plain>(
            Event::Gossip {
                source: net.peer(1),
                id: MessageId::new(b"s"),
                author: Some(net.peer(1)),
                seq: next_seq(),
                topic: network::coin_topic("t", Coin::Btc).hash(),
                data: messages::encode(&for_vault(vault)).unwrap(),
            },
            Instant::now(),
        );
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver { target, .. } => Some(*target),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(targets(&mut core, [8; 32]), vec![Target::Retiring(0)]);
    assert_eq!(
        targets(&mut core, [9; 32]),
        vec![Target::Current(Coin::Btc)]
    );
}
