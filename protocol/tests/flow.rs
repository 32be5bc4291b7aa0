//! N processors driven through the whole signature process (steps 1 to 20) over plain maps,
//! with a minimal coordinator in between that serialises every hop through the envelope.
//!
//! Why one file of this size: every scenario shares the one in-process cluster harness at its
//! top (routing through `protocol::routing::carry`, crash and tamper hooks).

use std::collections::{BTreeMap, VecDeque};

use protocol::{
    address,
    keys::{MessagingKey, NodeKeys},
    messages::{self, *},
    network::NetworkDefinition,
    processor::{Output, Persist, Phase, Processor},
    routing,
    sabotage::Sabotage,
    seal::{self, SealContext, SealKind},
    vault::{CheaterReport, SignRecord, SignStatus, VaultStatus},
    Coin, ValidatorId,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Tampering with what leaves a node: (sending node, message, cluster).
type Tamper = Box<dyn FnMut(usize, &mut ProcessorMessage, &Cluster)>;
type Hold = Box<dyn Fn(usize, &CoordinatorMessage) -> bool>;

struct Cluster {
    def: NetworkDefinition,
    keys: Vec<NodeKeys>,
    ids: Vec<ValidatorId>,
    procs: BTreeMap<(usize, Coin), Processor>,
    /// Inbound log per (node, coin): what a coordinator would have stored.
    inbound: BTreeMap<(usize, Coin), Vec<CoordinatorMessage>>,
    queue: VecDeque<(usize, Coin, CoordinatorMessage)>,
    persisted: BTreeMap<(usize, Coin), Vec<String>>,
    rng: ChaCha20Rng,
    /// Wall clock (Unix seconds) of the operators' approvals.
    unix: u64,
    /// Optional tampering of what leaves a node.
    tamper: Option<Tamper>,
    /// Signing records persisted, per (node, coin, id).
    records: BTreeMap<(usize, Coin, [u8; 32]), SignRecord>,
    /// Cheater reports persisted, per node.
    cheaters: BTreeMap<usize, Vec<CheaterReport>>,
    /// Sign requests seen, by (id, attempt).
    requests: BTreeMap<([u8; 32], u32), SignRequest>,
    /// Nodes that are down: nothing reaches them.
    down: std::collections::BTreeSet<usize>,
    /// Signing messages a node rejected.
    sign_errors: Vec<(usize, String)>,
    /// Key shares persisted.
    key_shares: BTreeMap<(usize, Coin), Vec<u8>>,
    /// Malicious validators.
    sabotage: BTreeMap<usize, Sabotage>,
    /// Own exclusion votes persisted, per (node, coin).
    votes: BTreeMap<(usize, Coin), Vec<KeyGenExclusionVote>>,
    /// Messages a node rejected (node, error).
    rejected: Vec<(usize, String)>,
    /// Which messages (recipient, message) are held back instead of delivered.
    hold: Option<Hold>,
    /// What `hold` kept, in order.
    held: VecDeque<(usize, Coin, CoordinatorMessage)>,
    /// Announcement requests a node's processor asked its coordinator for: (node, coin, whom).
    wanted: Vec<(usize, Coin, Vec<ValidatorId>)>,
}

fn hop<T: serde::Serialize + serde::de::DeserializeOwned>(m: &T) -> T {
    messages::decode(&messages::encode(m).unwrap()).unwrap()
}

impl Cluster {
    fn new(n: usize, coins: &[Coin], seed: u64) -> Cluster {
        Cluster::in_session(n, coins, seed, 0)
    }

    /// A cluster of validator-set session `session`.
    fn in_session(n: usize, coins: &[Coin], seed: u64, session: u32) -> Cluster {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<NodeKeys> = (0..n)
            .map(|_| NodeKeys::generate(&mut rng).unwrap())
            .collect();
        let mut toml = format!(
            "name = \"flow\"\nsession = {session}\ncoins = [{}]\n",
            coins
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for k in &keys {
            toml.push_str(&format!(
                "[[validators]]\npeer_id = \"{}\"\n",
                k.validator_id()
            ));
        }
        let def = NetworkDefinition::from_toml(&toml).unwrap();
        let ids = keys.iter().map(|k| k.validator_id()).collect();
        let mut c = Cluster {
            def,
            keys,
            ids,
            procs: BTreeMap::new(),
            inbound: BTreeMap::new(),
            queue: VecDeque::new(),
            persisted: BTreeMap::new(),
            rng,
            unix: 1_000,
            tamper: None,
            records: BTreeMap::new(),
            cheaters: BTreeMap::new(),
            requests: BTreeMap::new(),
            down: Default::default(),
            sign_errors: Vec::new(),
            key_shares: BTreeMap::new(),
            sabotage: BTreeMap::new(),
            rejected: Vec::new(),
            votes: BTreeMap::new(),
            hold: None,
            held: VecDeque::new(),
            wanted: Vec::new(),
        };
        for node in 0..n {
            for &coin in coins {
                c.start(node, coin);
            }
        }
        c
    }

    fn start(&mut self, node: usize, coin: Coin) {
        let k = &self.keys[node];
        let mut p = Processor::new(
            self.def.clone(),
            coin,
            k,
            k.processor_messaging.clone(),
            None,
        )
        .unwrap();
        let out = p.start();
        self.procs.insert((node, coin), p);
        self.route(node, coin, out);
    }

    /// The coordinator: persist, then forward Out messages as In messages to their targets.
    fn route(&mut self, node: usize, coin: Coin, out: Vec<Output>) {
        let out = match self.sabotage.get(&node) {
            Some(how) => self
                .procs
                .get_mut(&(node, coin))
                .unwrap()
                .sabotage(*how, out),
            None => out,
        };
        for o in out {
            match o {
                Output::Persist(p) => {
                    match &p {
                        Persist::SignRecord { record: r, .. } => {
                            self.records.insert((node, coin, r.id), r.clone());
                        }
                        Persist::Cheater(c) => {
                            self.cheaters.entry(node).or_default().push(c.clone())
                        }
                        Persist::KeyShare { keys, session, .. } => {
                            // Stored under the DKG's own session, whatever the processor holds.
                            assert_eq!(*session, self.def.session, "node {node}");
                            self.key_shares.insert((node, coin), keys.to_vec());
                        }
                        Persist::Vote(v) => {
                            self.votes.entry((node, coin)).or_default().push(v.clone())
                        }
                        _ => {}
                    }
                    self.persisted
                        .entry((node, coin))
                        .or_default()
                        .push(format!("{p:?}"))
                }
                Output::Bus(mut m) => {
                    if let Some(mut t) = self.tamper.take() {
                        t(node, &mut m, self);
                        self.tamper = Some(t);
                    }
                    let m = hop(&m);
                    match &m {
                        ProcessorMessage::SignRequest(r) => {
                            self.requests.insert((r.id, r.attempt), r.clone());
                        }
                        ProcessorMessage::AnnouncementsWanted(w) => {
                            assert_eq!(w.coin, coin);
                            self.wanted.push((node, coin, w.from.clone()));
                        }
                        _ => {}
                    }
                    let from = self.ids[node].clone();
                    for d in routing::carry(&from, &self.ids, m).unwrap().deliveries {
                        let to = self.index(&d.to);
                        self.deliver(to, d.coin, d.msg);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, coin: Coin, m: CoordinatorMessage) {
        if self.down.contains(&to) {
            return;
        }
        if self.hold.as_ref().is_some_and(|h| h(to, &m)) {
            self.held.push_back((to, coin, m));
        } else {
            self.queue.push_back((to, coin, m));
        }
    }

    /// Deliver the oldest held message that `which` picks now.
    fn release_first(&mut self, which: impl Fn(&CoordinatorMessage) -> bool) {
        let i = self
            .held
            .iter()
            .position(|(_, _, m)| which(m))
            .expect("a held message");
        let m = self.held.remove(i).expect("in range");
        self.queue.push_back(m);
        self.run();
    }

    /// Every live node's clock moves to `now`; each sees the other live nodes as reachable.
    fn tick(&mut self, now: u64, coins: &[Coin]) {
        let live: std::collections::BTreeSet<ValidatorId> = (0..self.ids.len())
            .filter(|i| !self.down.contains(i))
            .map(|i| self.ids[i].clone())
            .collect();
        for node in 0..self.ids.len() {
            if self.down.contains(&node) {
                continue;
            }
            for &coin in coins {
                let out = self
                    .procs
                    .get_mut(&(node, coin))
                    .unwrap()
                    .tick(now, live.clone());
                self.route(node, coin, out);
            }
        }
        self.run();
    }

    /// Have node `origin`'s operator and those of the next live nodes (in index order, t in
    /// all) approve a request to sign `messages`, `origin` first; returns the request id.
    fn request(&mut self, origin: usize, coin: Coin, messages: Vec<Vec<u8>>) -> [u8; 32] {
        let n = self.ids.len();
        let approvers: Vec<usize> = (0..n)
            .map(|k| (origin + k) % n)
            .filter(|i| !self.down.contains(i))
            .take(usize::from(self.def.threshold))
            .collect();
        self.request_on(&approvers, coin, messages)
    }

    /// Have the operators of `approvers` approve a request to sign `messages`, in that order
    /// and a second apart, as their APIs would; returns the request id.
    fn request_on(&mut self, approvers: &[usize], coin: Coin, messages: Vec<Vec<u8>>) -> [u8; 32] {
        let context = self.procs[&(approvers[0], coin)].vault().unwrap().context;
        let id = protocol::approvals::request_id(&self.def.name, coin, &context, &messages, None);
        for &i in approvers {
            self.unix += 1;
            let p = self.procs.get_mut(&(i, coin)).unwrap();
            p.set_unix_time(self.unix);
            let out = p
                .handle(CoordinatorMessage::SignatureRequested(SignatureRequested {
                    id,
                    messages: messages.clone(),
                    reference: None,
                }))
                .unwrap();
            self.route(i, coin, out);
            self.run();
        }
        id
    }

    /// Every live node's wall clock moves to `unix` (approvals expire by it) at `now`.
    fn set_unix(&mut self, unix: u64, now: u64, coins: &[Coin]) {
        self.unix = unix;
        for ((node, _), p) in self.procs.iter_mut() {
            if !self.down.contains(node) {
                p.set_unix_time(unix);
            }
        }
        self.tick(now, coins);
    }

    fn index(&self, v: &ValidatorId) -> usize {
        self.ids.iter().position(|x| x == v).unwrap()
    }

    /// Deliver queued messages in a shuffled order until quiet.
    fn run(&mut self) {
        let mut steps = 0;
        while !self.queue.is_empty() {
            steps += 1;
            assert!(steps < 1_000_000, "no quiescence");
            let pick = (self.rng.next_u32() as usize) % self.queue.len().min(4);
            let (to, coin, m) = self.queue.remove(pick).unwrap();
            self.inbound.entry((to, coin)).or_default().push(m.clone());
            let signing = matches!(
                m,
                CoordinatorMessage::EncryptedPreprocessIn(_)
                    | CoordinatorMessage::EncryptedSignatureShareIn(_)
                    | CoordinatorMessage::SignPreprocessesIn(_)
                    | CoordinatorMessage::GeneralIn(GeneralIn {
                        msg: GeneralMessage::SignRequest(_) | GeneralMessage::SignatureAvailable(_),
                        ..
                    })
            );
            let p = self.procs.get_mut(&(to, coin)).unwrap();
            let result = p.handle(m);
            // What the processor rejected without an error (buffered, or proving a fault).
            for (_, e) in p.take_rejected() {
                self.rejected.push((to, e.to_string()));
            }
            match result {
                Ok(out) => self.route(to, coin, out),
                // A late signing message for a finished attempt: the node logs and drops it.
                Err(e) if signing => self.sign_errors.push((to, e.to_string())),
                // A malicious validator's messages may be rejected; an honest one's never.
                Err(e) if !self.sabotage.is_empty() => self.rejected.push((to, e.to_string())),
                Err(e) => panic!("node {to}: {e}"),
            }
        }
    }
}

fn assert_all_active(c: &Cluster, coins: &[Coin]) {
    for &coin in coins {
        let vaults: Vec<_> = (0..c.ids.len())
            .map(|i| c.procs[&(i, coin)].vault().cloned().unwrap())
            .collect();
        for v in &vaults {
            assert_eq!(v.status, VaultStatus::Active, "{coin}: {:?}", v.reason);
            assert_eq!(v.group_key, vaults[0].group_key);
            assert_eq!(v.address, address::address(coin, &v.group_key).unwrap());
            assert_eq!(v.participants, c.def.validators);
        }
        match coin {
            Coin::Btc => assert!(vaults[0].address.starts_with("bc1p")),
            Coin::Eth => assert!(vaults[0].address.starts_with("0x")),
            Coin::Sol => assert_eq!(bs58_len(&vaults[0].address), 32),
        }
        for i in 0..c.ids.len() {
            assert_eq!(c.procs[&(i, coin)].phase(), Phase::Active);
            let persisted = &c.persisted[&(i, coin)];
            assert!(persisted.iter().any(|p| p.starts_with("KeyShare")));
            assert!(persisted.iter().all(|p| !p.contains("secret_share")));
        }
    }
}

fn bs58_len(s: &str) -> usize {
    // decode base58 by hand (independent of the crate under test's dependency)
    const A: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut n: Vec<u8> = Vec::new(); // little-endian base-256
    for ch in s.chars() {
        let mut carry = A.find(ch).unwrap() as u32;
        for d in n.iter_mut() {
            carry += (*d as u32) * 58;
            *d = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            n.push(carry as u8);
            carry >>= 8;
        }
    }
    n.len() + s.chars().take_while(|c| *c == '1').count()
}

#[test]
fn four_validators_reach_active_vaults_for_every_coin() {
    let coins = [Coin::Btc, Coin::Eth, Coin::Sol];
    let mut c = Cluster::new(4, &coins, 1);
    c.run();
    assert_all_active(&c, &coins);
    assert_eq!(c.def.threshold, 3);
}

#[test]
fn seven_validators_with_custom_threshold() {
    let mut c = Cluster::new(7, &[Coin::Sol], 2);
    c.run();
    assert_all_active(&c, &[Coin::Sol]);
}

/// The honest nodes (all but `culprit`) end with one active vault at attempt 1 without the
/// culprit, which every one of them lists as left out for `reason`; the vault signs.
fn assert_left_out(c: &mut Cluster, coin: Coin, culprit: usize, reason: ExclusionReason) {
    let honest: Vec<usize> = (0..c.ids.len()).filter(|n| *n != culprit).collect();
    let expected: Vec<ValidatorId> = c
        .def
        .validators
        .iter()
        .filter(|v| **v != c.ids[culprit])
        .cloned()
        .collect();
    let first = c.procs[&(honest[0], coin)].vault().cloned().unwrap();
    for &n in &honest {
        let v = c.procs[&(n, coin)].vault().cloned().expect("decided");
        assert_eq!(v.status, VaultStatus::Active, "node {n}: {:?}", v.reason);
        assert_eq!(v.attempt, 1);
        assert_eq!(v.participants, expected);
        assert_eq!(v.group_key, first.group_key);
        assert_eq!(v.excluded.len(), 1, "{:?}", v.excluded);
        assert_eq!(v.excluded[0].validator, c.ids[culprit]);
        assert_eq!(v.excluded[0].reason, reason);
        assert_eq!(v.excluded[0].attempt, 0);
        assert!(v.excluded[0].voters.len() >= usize::from(c.def.threshold));
    }
    // The culprit learnt it was left out (from the same votes).
    if !c.down.contains(&culprit) {
        let v = c.procs[&(culprit, coin)].vault().cloned().expect("decided");
        assert_eq!(v.status, VaultStatus::Excluded, "{:?}", v.reason);
    }
    // The new vault signs with its three participants (culprit down so it is not picked).
    c.down.insert(culprit);
    c.tick(10_000_000, &[coin]);
    let msgs = messages_for(coin, 1, 0x5a);
    let id = c.request(honest[0], coin, msgs.clone());
    let r = assert_signed(c, coin, id, &msgs);
    assert!(!r.signers.contains(&c.ids[culprit]));
}

#[test]
fn equivocating_commitments_are_proven_and_the_equivocator_left_out() {
    for coin in [Coin::Btc, Coin::Sol] {
        let mut c = Cluster::new(4, &[coin], 3);
        c.sabotage.insert(0, Sabotage::Equivocate);
        c.run();
        assert_left_out(&mut c, coin, 0, ExclusionReason::Equivocation);
    }
}

#[test]
fn an_invalid_share_is_blamed_on_its_sender_through_the_pedpop_proof() {
    for coin in [Coin::Eth, Coin::Sol] {
        let mut c = Cluster::new(4, &[coin], 31);
        c.sabotage.insert(2, Sabotage::BadShare);
        c.run();
        assert_left_out(&mut c, coin, 2, ExclusionReason::InvalidShare);
    }
}

#[test]
fn a_signed_wrong_group_key_excludes_its_signer_instead_of_failing_the_vault() {
    for coin in [Coin::Btc, Coin::Sol] {
        let mut c = Cluster::new(4, &[coin], 37);
        c.sabotage.insert(1, Sabotage::WrongGroupKey);
        c.run();
        // Nobody's vault failed; the DKG went on without the signer of the wrong key.
        c.tick(1_000, &[coin]);
        assert_left_out(&mut c, coin, 1, ExclusionReason::WrongGroupKey);
        assert!(
            c.rejected
                .iter()
                .any(|(_, e)| e.contains(&c.ids[1].to_string()) && e.contains("group key")),
            "{:?}",
            c.rejected
        );
    }
}

#[test]
fn a_false_accusation_is_blamed_on_the_accuser() {
    let coin = Coin::Btc;
    let mut c = Cluster::new(4, &[coin], 32);
    c.sabotage.insert(1, Sabotage::FalseAccusation);
    c.run();
    // The accusation can race the honest completion: tick so everyone's vote is counted.
    c.tick(1, &[coin]);

    assert_left_out(&mut c, coin, 1, ExclusionReason::FalseAccusation);
}

#[test]
fn a_silent_participant_is_voted_out_after_the_timeout() {
    let coin = Coin::Eth;
    let mut c = Cluster::new(4, &[coin], 33);
    // Validator 3 announced its key, then stops answering.
    c.down.insert(3);
    c.run();
    for n in 0..3 {
        assert_eq!(c.procs[&(n, coin)].phase(), Phase::Commitments);
    }
    c.tick(1_000, &[coin]);
    // Before the timeout: nobody votes.
    assert!(c.procs[&(0, coin)].votes().is_empty());
    c.tick(1_000 + 60_000, &[coin]);
    let v = c.procs[&(0, coin)].vault().cloned().expect("decided");
    assert_eq!(v.excluded[0].reason, ExclusionReason::SilentCommitments);
    // A restart (own votes from disk, then the inbound log) lands on the same attempt and key.
    let keys0 = c.keys[0].clone();
    let k = &keys0;
    let mut p =
        Processor::new(c.def.clone(), coin, k, k.processor_messaging.clone(), None).unwrap();
    let mut out = p.restore_votes(c.votes[&(0, coin)].clone());
    out.extend(p.start());
    for m in c.inbound[&(0, coin)].clone() {
        out.extend(p.handle(m).unwrap());
    }
    c.procs.insert((0, coin), p);
    c.route(0, coin, out);
    c.run();
    let again = c.procs[&(0, coin)].vault().cloned().expect("decided again");
    assert_eq!(again.status, VaultStatus::Active);
    assert_eq!(again.group_key, v.group_key);
    assert_eq!(again.attempt, 1);
    // And a restart with the active attempt-1 vault from disk keeps it through the replay.
    let mut p = Processor::new(
        c.def.clone(),
        coin,
        k,
        k.processor_messaging.clone(),
        Some(again.clone()),
    )
    .unwrap();
    assert_eq!(p.attempt(), 1);
    p.set_key_share(&c.key_shares[&(0, coin)]).unwrap();
    let mut out = p.restore_votes(c.votes[&(0, coin)].clone());
    out.extend(p.start());
    for m in c.inbound[&(0, coin)].clone() {
        out.extend(p.handle(m).unwrap());
    }
    assert_eq!(p.vault(), Some(&again));
    assert_eq!(p.participants(), &again.participants[..]);
    c.procs.insert((0, coin), p);
    c.route(0, coin, out);
    c.run();
    assert_left_out(&mut c, coin, 3, ExclusionReason::SilentCommitments);
}

#[test]
fn with_fewer_than_t_answering_nobody_is_left_out_and_the_dkg_waits() {
    let coin = Coin::Sol;
    let mut c = Cluster::new(4, &[coin], 34);
    c.down.insert(2);
    c.down.insert(3);
    c.run();
    c.tick(1_000, &[coin]);
    c.tick(61_000, &[coin]);
    c.tick(122_000, &[coin]);
    for n in 0..2 {
        let p = &c.procs[&(n, coin)];
        assert!(p.vault().is_none());
        assert_eq!(p.attempt(), 0);
        // Both voted (twice: the second round after no quorum), but two votes are not t.
        let votes = p.votes();
        assert!(votes.len() >= 2, "{votes:?}");
        let mut silent = [&c.ids[2], &c.ids[3]];
        silent.sort();
        assert!(
            votes
                .iter()
                .all(|v| v.exclude.iter().map(|(x, _)| x).eq(silent.iter().copied())),
            "{votes:?}"
        );
    }
}

/// The participant a `withhold-*` saboteur at `node` starves: the first other one in
/// definition order.
fn victim_of(c: &Cluster, node: usize) -> usize {
    let v = c
        .def
        .validators
        .iter()
        .find(|v| **v != c.ids[node])
        .unwrap();
    c.index(v)
}

#[test]
fn a_commitment_withheld_from_one_node_is_relayed_and_nobody_is_left_out() {
    for coin in [Coin::Btc, Coin::Sol] {
        let mut c = Cluster::new(4, &[coin], 41);
        c.sabotage.insert(0, Sabotage::WithholdCommitment);
        c.run();
        let victim = victim_of(&c, 0);
        assert_eq!(c.procs[&(victim, coin)].phase(), Phase::Commitments);
        // A quarter of the timeout later the victim complains; the others relay the signed
        // commitments they got, and the DKG completes with all four at attempt 0.
        c.tick(1_000, &[coin]);
        c.tick(1_000 + 15_000, &[coin]);
        assert_all_active(&c, &[coin]);
        for n in 0..4 {
            let v = c.procs[&(n, coin)].vault().unwrap();
            assert_eq!((v.attempt, v.excluded.len()), (0, 0), "node {n}");
            assert!(c.procs[&(n, coin)].votes().is_empty(), "node {n} voted");
        }
    }
}

#[test]
fn a_share_withheld_from_one_node_excludes_the_withholder_not_the_starved_node() {
    for coin in [Coin::Eth, Coin::Sol] {
        let mut c = Cluster::new(4, &[coin], 42);
        c.sabotage.insert(1, Sabotage::WithholdShare);
        c.run();
        let victim = victim_of(&c, 1);
        assert_eq!(c.procs[&(victim, coin)].phase(), Phase::Shares);
        c.tick(1_000, &[coin]);
        // The victim's complaint goes unanswered; at the timeout the others, who wait for the
        // victim's confirmation, name the dealer instead of it.
        c.tick(1_000 + 15_000, &[coin]);
        c.tick(1_000 + 60_000, &[coin]);
        assert_left_out(&mut c, coin, 1, ExclusionReason::SilentShares);
    }
}

#[test]
fn a_false_complaint_is_answered_and_spares_nobody() {
    let coin = Coin::Btc;
    let mut c = Cluster::new(4, &[coin], 43);
    // Validator 3 has every share, but its confirmation never leaves it, and it claims it
    // lacks validator 0's share.
    let liar = c.ids[3].clone();
    c.hold = Some(Box::new(move |_, m| {
        matches!(m, CoordinatorMessage::GeneralIn(GeneralIn {
            from,
            msg: GeneralMessage::PublicAddressAvailable(_),
        }) if *from == liar)
    }));
    c.run();
    let complaint = GeneralMessage::KeyGenComplaint(KeyGenComplaint {
        coin,
        context: c.procs[&(0, coin)].context(),
        awaited: Awaited::Shares,
        missing: vec![c.ids[0].clone()],
    });
    for to in 0..3 {
        c.deliver(
            to,
            coin,
            CoordinatorMessage::GeneralIn(GeneralIn {
                from: c.ids[3].clone(),
                msg: complaint.clone(),
            }),
        );
    }
    c.run();
    // Validator 0 published the share; the complaint is answered, so the timeout names the
    // one whose confirmation is missing.
    c.tick(1_000, &[coin]);
    c.tick(1_000 + 60_000, &[coin]);
    c.hold = None;
    assert_left_out(&mut c, coin, 3, ExclusionReason::SilentConfirmation);
}

#[test]
fn with_n_equal_to_t_a_silent_participant_fails_the_dkg_naming_it() {
    let coin = Coin::Eth;
    let mut c = Cluster::new(3, &[coin], 44);
    assert_eq!(c.def.threshold, 3);
    c.down.insert(2);
    c.run();
    c.tick(1_000, &[coin]);
    // Votes cannot leave anyone out (t = n); after as many timeouts as a vote has rounds the
    // DKG gives up instead of waiting forever.
    for k in 1..=7u64 {
        c.tick(1_000 + k * 60_000, &[coin]);
        assert!(
            c.procs[&(0, coin)].vault().is_none(),
            "failed after {k} timeouts"
        );
    }
    c.tick(1_000 + 8 * 60_000, &[coin]);
    for n in 0..2 {
        let v = c.procs[&(n, coin)].vault().cloned().expect("decided");
        assert_eq!(v.status, VaultStatus::Failed);
        let reason = v.reason.unwrap_or_default();
        assert!(reason.contains(&c.ids[2].to_string()), "{reason}");
        assert!(reason.contains("threshold is 3"), "{reason}");
        assert!(!reason.contains(&c.ids[1 - n].to_string()), "{reason}");
    }
}

#[test]
fn a_lost_confirmation_is_asked_for_three_times_before_the_vote() {
    let coin = Coin::Eth;
    let mut c = Cluster::new(4, &[coin], 35);
    // Validator 3 does not receive validator 0's PublicAddressAvailable (gossip lost it).
    let author = c.ids[0].clone();
    c.hold = Some(Box::new(move |to, m| {
        to == 3
            && matches!(m, CoordinatorMessage::GeneralIn(GeneralIn {
                from,
                msg: GeneralMessage::PublicAddressAvailable(_),
            }) if *from == author)
    }));
    c.run();
    for n in 0..3 {
        assert_eq!(c.procs[&(n, coin)].phase(), Phase::Active);
    }
    assert_eq!(c.procs[&(3, coin)].phase(), Phase::Confirming);
    // Default timeout 60 s: a request for 0's announcements after each 15 s without progress.
    c.tick(1_000, &[coin]);
    c.tick(15_999, &[coin]);
    assert!(c.wanted.is_empty());
    let asked = (3, coin, vec![c.ids[0].clone()]);
    c.tick(16_000, &[coin]);
    assert_eq!(c.wanted, vec![asked.clone()]);
    c.tick(30_999, &[coin]);
    assert_eq!(c.wanted.len(), 1, "once per quarter of the timeout");
    c.tick(31_000, &[coin]);
    c.tick(46_000, &[coin]);
    assert_eq!(c.wanted, vec![asked.clone(); 3]);
    assert!(c.procs[&(3, coin)].votes().is_empty());
    // Still nothing at the timeout: the vote names 0, and no request comes with it.
    c.tick(61_000, &[coin]);
    let votes = c.procs[&(3, coin)].votes();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].exclude[0].0, c.ids[0]);
    assert_eq!(c.wanted.len(), 3);
    // The answer arrives (a replay, or the re-announcement the vote triggers): attempt 0
    // completes with the same key, and nobody asks again.
    c.hold = None;
    c.release_first(|_| true);
    let group_key = |n: usize| c.procs[&(n, coin)].vault().map(|v| v.group_key.clone());
    assert_eq!(c.procs[&(3, coin)].phase(), Phase::Active);
    assert_eq!(c.procs[&(3, coin)].attempt(), 0);
    assert_eq!(group_key(3), group_key(0));
    c.tick(200_000, &[coin]);
    assert_eq!(c.wanted.len(), 3);
}

#[test]
fn a_processor_restarted_mid_dkg_regenerates_its_messages() {
    let coins = [Coin::Eth];
    let mut c = Cluster::new(4, &coins, 4);
    // Run until validator 2 has sent its commitments, then "crash" it.
    let mut steps = 0;
    while let Some((to, coin, m)) = c.queue.pop_front() {
        c.inbound.entry((to, coin)).or_default().push(m.clone());
        let out = c.procs.get_mut(&(to, coin)).unwrap().handle(m).unwrap();
        c.route(to, coin, out);
        steps += 1;
        if c.procs[&(2, Coin::Eth)].phase() == Phase::Commitments {
            break;
        }
    }
    assert!(steps > 10);
    assert_eq!(c.procs[&(2, Coin::Eth)].phase(), Phase::Commitments);
    // Restart: a new processor from the same keys, fed the stored inbound log.
    let k = &c.keys[2];
    let mut p = Processor::new(
        c.def.clone(),
        Coin::Eth,
        k,
        k.processor_messaging.clone(),
        None,
    )
    .unwrap();
    let mut out = p.start();
    for m in c.inbound[&(2, Coin::Eth)].clone() {
        out.extend(p.handle(m).unwrap());
    }
    c.procs.insert((2, Coin::Eth), p);
    // Its regenerated messages are duplicates of what peers already hold (same plaintext), and
    // the DKG completes with one key.
    c.route(2, Coin::Eth, out);
    c.run();
    assert_all_active(&c, &coins);
}

/// Crash one processor after a random number of delivered messages (any point of the DKG, from
/// the key exchange to the confirmations), restart it from its stored inbound log and its own
/// votes, and check every vault ends active with one key. 60 seeds.
#[test]
fn a_processor_crashed_at_any_step_and_restarted_ends_with_one_key() {
    let coin = Coin::Btc;
    let mut steps_seen = std::collections::BTreeSet::new();
    for seed in 0..60u64 {
        let mut c = Cluster::new(4, &[coin], 1000 + seed);
        let victim = (seed % 4) as usize;
        let crash_after = 1 + (c.rng.next_u32() % 120) as usize;
        let mut delivered = 0;
        while let Some((to, coin, m)) = c.queue.pop_front() {
            c.inbound.entry((to, coin)).or_default().push(m.clone());
            let out = c.procs.get_mut(&(to, coin)).unwrap().handle(m).unwrap();
            c.route(to, coin, out);
            delivered += 1;
            if delivered == crash_after {
                break;
            }
        }
        steps_seen.insert(format!("{:?}", c.procs[&(victim, coin)].phase()));
        // The crash loses whatever the victim had in memory; messages in flight to it were not
        // acknowledged, so their senders' outboxes deliver them again after the restart.
        let k = &c.keys[victim];
        let mut p =
            Processor::new(c.def.clone(), coin, k, k.processor_messaging.clone(), None).unwrap();
        let mut out = p.restore_votes(c.votes.get(&(victim, coin)).cloned().unwrap_or_default());
        out.extend(p.start());
        for m in c.inbound.get(&(victim, coin)).cloned().unwrap_or_default() {
            out.extend(p.handle(m).unwrap());
        }
        c.procs.insert((victim, coin), p);
        c.route(victim, coin, out);
        c.run();
        assert_all_active(&c, &[coin]);
    }
    // The crashes landed in several phases.
    eprintln!("crashed in phases: {steps_seen:?}");
    assert!(steps_seen.len() >= 5, "{steps_seen:?}");
}

#[test]
fn rotated_messaging_key_replaces_the_old_one_everywhere() {
    let coins = [Coin::Sol];
    let mut c = Cluster::new(4, &coins, 5);
    c.run();
    assert_all_active(&c, &coins);
    let new = MessagingKey::generate(1).unwrap();
    let new_pub = new.public;
    let out = c
        .procs
        .get_mut(&(0, Coin::Sol))
        .unwrap()
        .rotate_messaging_key(new)
        .unwrap();
    assert!(matches!(
        out[0],
        Output::Persist(Persist::MessagingKey { .. })
    ));
    c.route(0, Coin::Sol, out);
    c.run();
    for i in 1..4 {
        let view = &c.procs[&(i, Coin::Sol)].peers()[&c.ids[0]];
        assert_eq!(view.messaging_key, Some((new_pub, 1)));
        assert!(view.signer.is_some());
    }
    // stale announcements of the old key are ignored
    let old = c.keys[0].processor_messaging.public;
    let from = c.ids[0].clone();
    let out = c
        .procs
        .get_mut(&(1, Coin::Sol))
        .unwrap()
        .handle(CoordinatorMessage::ExternalPublicKeyIn(
            ExternalPublicKeyIn {
                from,
                key: ProcessorPublicKey {
                    coin: Coin::Sol,
                    pubkey: old,
                    seq: 0,
                },
            },
        ))
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(
        c.procs[&(1, Coin::Sol)].peers()[&c.ids[0]].messaging_key,
        Some((new_pub, 1))
    );
}

#[test]
fn forged_and_malformed_inputs_are_rejected_and_name_the_peer() {
    let coins = [Coin::Btc];
    let mut c = Cluster::new(4, &coins, 6);
    // Run until validator 0 knows every peer's keys (its DKG has started).
    while c.procs[&(0, Coin::Btc)].phase() == Phase::KeyExchange {
        let (to, coin, m) = c.queue.pop_front().unwrap();
        let out = c.procs.get_mut(&(to, coin)).unwrap().handle(m).unwrap();
        c.route(to, coin, out);
    }
    let from = c.ids[3].clone();
    let me = c.ids[0].clone();
    let p = c.procs.get_mut(&(0, Coin::Btc)).unwrap();
    // garbage sealed bytes
    let e = p
        .handle(CoordinatorMessage::EncryptedKeyShareIn(
            EncryptedKeyShareIn {
                from: from.clone(),
                msg: EncryptedKeyShareOut {
                    coin: Coin::Btc,
                    to: me.clone(),
                    context: p.context(),
                    sealed: vec![1; 200],
                },
            },
        ))
        .unwrap_err();
    assert_eq!(e.culprit(), Some(&from), "{e}");
    // an outsider
    let stranger = ValidatorId::from_ed25519(&[0xab; 32]);
    let e = p
        .handle(CoordinatorMessage::ExternalPublicKeyIn(
            ExternalPublicKeyIn {
                from: stranger.clone(),
                key: ProcessorPublicKey {
                    coin: Coin::Btc,
                    pubkey: [1; 32],
                    seq: 9,
                },
            },
        ))
        .unwrap_err();
    assert_eq!(e.culprit(), Some(&stranger));
    // a message that claims another coin
    let e = p
        .handle(CoordinatorMessage::ExternalPublicKeyIn(
            ExternalPublicKeyIn {
                from: from.clone(),
                key: ProcessorPublicKey {
                    coin: Coin::Eth,
                    pubkey: [1; 32],
                    seq: 9,
                },
            },
        ))
        .unwrap_err();
    assert_eq!(e.culprit(), Some(&from));
    // nothing was taken in: the DKG still completes
    c.run();
    assert_all_active(&c, &coins);
}

// ------------------------------------------------------------------------------------ signing

/// Checks a signature the way each chain does, with code that does not come from modular-frost:
/// libsecp256k1 for BIP340 and for the ETH contract's `ecrecover`, ed25519-dalek for Ed25519.
fn chain_verifies(coin: Coin, group_key: &[u8], address: &str, msg: &[u8], sig: &[u8]) -> bool {
    let secp = secp256k1::Secp256k1::new();
    match coin {
        Coin::Btc => {
            let (_, version, program) = bech32::segwit::decode(address).unwrap();
            assert_eq!(version, bech32::segwit::VERSION_1);
            let key = secp256k1::XOnlyPublicKey::from_slice(&program).unwrap();
            let sig = secp256k1::schnorr::Signature::from_slice(sig).unwrap();
            let msg = secp256k1::Message::from_digest(msg.try_into().unwrap());
            secp.verify_schnorr(&sig, &msg, &key).is_ok()
        }
        Coin::Eth => eth_contract_verifies(group_key, msg, sig),
        Coin::Sol => {
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(group_key.try_into().unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_bytes(sig.try_into().unwrap());
            key.verify_strict(msg, &sig).is_ok()
        }
    }
}

/// The contract of docs/SIGNING.md, step by step: `sa = -s·px`, `ca = -c·px` (mod n),
/// `R = ecrecover(sa, v, px, ca)`, accept iff `c == keccak256(R ‖ v ‖ px ‖ m)`.
fn eth_contract_verifies(group_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use k256::elliptic_curve::PrimeField;
    use sha3::{Digest, Keccak256};
    let secp = secp256k1::Secp256k1::new();
    let parity = group_key[0] - 2; // SEC1 prefix 02/03
    let px: [u8; 32] = group_key[1..].try_into().unwrap();
    let scalar = |b: &[u8]| {
        Option::<k256::Scalar>::from(k256::Scalar::from_repr(
            <[u8; 32]>::try_from(b).unwrap().into(),
        ))
        .unwrap()
    };
    let (c, s, x) = (scalar(&sig[..32]), scalar(&sig[32..]), scalar(&px));
    let sa: [u8; 32] = (-(s * x)).to_bytes().into();
    let ca: [u8; 32] = (-(c * x)).to_bytes().into();
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&px);
    compact[32..].copy_from_slice(&ca);
    let rsig = secp256k1::ecdsa::RecoverableSignature::from_compact(
        &compact,
        secp256k1::ecdsa::RecoveryId::from_i32(i32::from(parity)).unwrap(),
    )
    .unwrap();
    let Ok(r) = secp.recover_ecdsa(&secp256k1::Message::from_digest(sa), &rsig) else {
        return false;
    };
    let r_address = &Keccak256::digest(&r.serialize_uncompressed()[1..])[12..];
    let mut h = Keccak256::new();
    h.update(r_address);
    h.update([27 + parity]);
    h.update(px);
    h.update(msg);
    h.finalize()[..] == sig[..32]
}

fn sign_cluster(coins: &[Coin], seed: u64) -> Cluster {
    let mut c = Cluster::new(4, coins, seed);
    c.run();
    assert_all_active(&c, coins);
    c.tick(1_000, coins);
    c
}

fn messages_for(coin: Coin, k: usize, tag: u8) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| match coin {
            Coin::Sol => vec![tag; 100 + i],
            _ => vec![tag.wrapping_add(i as u8); 32],
        })
        .collect()
}

/// Every live node stored the request as done, with the same valid signatures.
fn assert_signed(c: &Cluster, coin: Coin, id: [u8; 32], messages: &[Vec<u8>]) -> SignRecord {
    let live = (0..c.ids.len()).find(|n| !c.down.contains(n)).unwrap();
    let vault = c.procs[&(live, coin)].vault().unwrap().clone();
    let mut first: Option<SignRecord> = None;
    for node in (0..c.ids.len()).filter(|n| !c.down.contains(n)) {
        let r = c
            .records
            .get(&(node, coin, id))
            .unwrap_or_else(|| panic!("node {node} stored no record"));
        assert_eq!(r.status, SignStatus::Done, "node {node}: {:?}", r.reason);
        assert_eq!(r.messages, messages);
        assert_eq!(r.signers.len(), 3);
        for (m, s) in messages.iter().zip(&r.signatures) {
            assert!(
                chain_verifies(coin, &vault.group_key, &vault.address, m, s),
                "{coin} signature rejected by the independent verifier"
            );
        }
        if let Some(f) = &first {
            assert_eq!(f.signatures, r.signatures);
        }
        first = Some(r.clone());
    }
    first.unwrap()
}

#[test]
fn three_of_four_sign_every_coin_and_chains_accept_the_signatures() {
    let coins = [Coin::Btc, Coin::Eth, Coin::Sol];
    let mut c = sign_cluster(&coins, 10);
    for (n, &coin) in coins.iter().enumerate() {
        for origin in [0, 3] {
            let msgs = messages_for(coin, 3, (n * 10 + origin) as u8);
            let id = c.request(origin, coin, msgs.clone());
            let r = assert_signed(&c, coin, id, &msgs);
            assert_eq!(r.attempt, 0);
            assert!(r.signers.contains(&c.ids[origin]));
        }
    }
    assert!(c.sign_errors.is_empty(), "{:?}", c.sign_errors);
    // Each (id, attempt) was marked preprocessed before the node's preprocess went out.
    for node in 0..4 {
        for &coin in &coins {
            let p = &c.persisted[&(node, coin)];
            assert!(p.iter().any(|e| e.starts_with("NonceUsed")));
            assert!(p
                .iter()
                .all(|e| !e.contains("nonce") || e.starts_with("NonceUsed")));
        }
    }
}

#[test]
fn an_invalid_share_names_its_sender_who_is_left_out_of_the_retry() {
    let coin = Coin::Btc;
    let mut c = sign_cluster(&[coin], 11);
    // The first signer other than the originator (node 0) corrupts the shares it sends the
    // originator in attempt 0, re-sealed so that only FROST can tell.
    let cheater = std::rc::Rc::new(std::cell::Cell::new(None::<usize>));
    let seen = cheater.clone();
    c.tamper = Some(Box::new(move |node, m, c| {
        let ProcessorMessage::EncryptedSignatureShareOut(out) = m else {
            return;
        };
        let Some(r) = c.requests.get(&(out.id, out.attempt)) else {
            return;
        };
        let first_other = r.signers.iter().find(|v| **v != c.ids[0]).unwrap();
        if out.attempt != 0 || c.ids[node] != *first_other {
            return;
        }
        seen.set(Some(node));
        let to = c.index(&out.to);
        let session = protocol::signing::session(&c.def.name, r);
        let ctx = SealContext {
            network: &c.def.name,
            coin,
            kind: SealKind::SignatureShare,
            from: &c.ids[node],
            to: &c.ids[to],
            context: session,
        };
        let (_, plain) = seal::open(&c.keys[to].processor_messaging, &ctx, &out.sealed).unwrap();
        let mut payload: SignatureSharePayload = postcard::from_bytes(&plain).unwrap();
        payload.shares[0][31] ^= 1;
        out.sealed = seal::seal(
            &c.keys[node].processor_messaging,
            &c.keys[to].processor_messaging.public,
            &ctx,
            &postcard::to_stdvec(&payload).unwrap(),
        )
        .unwrap();
    }));
    // Every operator approves: with one cheater left out, three approvers remain to sign.
    let msgs = messages_for(coin, 2, 7);
    let id = c.request_on(&[0, 1, 2, 3], coin, msgs.clone());
    let bad = cheater.get().expect("a signer sent shares");
    // Shares go to the originator alone, which aggregates: it alone saw the invalid share.
    assert!(c.cheaters.keys().all(|node| *node == 0), "{:?}", c.cheaters);
    c.down.insert(bad); // the cheater's own records are not checked below
    let r = assert_signed(&c, coin, id, &msgs);
    assert_eq!(r.attempt, 1);
    assert!(!r.signers.contains(&c.ids[bad]), "the cheater signed again");
    let r = &c.records[&(0, coin, id)];
    assert_eq!(r.attempt, 1);
    assert!(r
        .left_out
        .iter()
        .any(|(v, why)| *v == c.ids[bad] && why.contains("invalid signature share")));
    let reports = &c.cheaters[&0];
    assert!(reports
        .iter()
        .any(|r| r.peer == c.ids[bad] && r.attempt == 0));
    let status = c.procs[&(0, coin)].signing_status();
    assert_eq!(status.cheaters[0].peer, c.ids[bad]);
}

#[test]
fn a_hostile_originators_preprocess_set_is_refused_naming_it() {
    let coin = Coin::Btc;
    let mut c = sign_cluster(&[coin], 23);
    // The originator (node 0) aggregates. In attempt 0 it hands one signer a set in which that
    // signer's own preprocess is replaced, and the other a set it did not sign: each signer
    // refuses its set, naming the originator, and releases no share.
    let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = seen.clone();
    c.tamper = Some(Box::new(move |node, m, c| {
        let ProcessorMessage::SignPreprocessesOut(out) = m else {
            return;
        };
        if node != 0 || out.set.attempt != 0 {
            return;
        }
        count.set(count.get() + 1);
        if count.get() == 1 {
            out.signature[0] ^= 1;
        } else {
            // Every entry replaced (the recipient's own among them) and signed again with the
            // originator's key, which a hostile originator holds.
            for (_, p) in &mut out.set.preprocesses {
                p[0] = vec![2; 66];
            }
            out.signature = c.keys[0].processor_signer().sign(
                protocol::signing::PREPROCESS_SET_DOMAIN,
                &postcard::to_stdvec(&out.set).unwrap(),
            );
        }
    }));
    let msgs = messages_for(coin, 1, 13);
    let id = c.request(0, coin, msgs.clone());
    assert_eq!(seen.get(), 2, "the originator handed out two sets");
    let origin = c.ids[0].to_string();
    for what in [
        "bad originator signature on the preprocess set",
        "preprocess set carries another preprocess as ours",
    ] {
        assert!(
            c.sign_errors
                .iter()
                .any(|(n, e)| *n != 0 && e.contains(what) && e.contains(&origin)),
            "{what}: {:?}",
            c.sign_errors
        );
    }
    // No share left either signer: the originator has nothing to aggregate or blame with.
    assert!(c.cheaters.is_empty(), "{:?}", c.cheaters);
    assert_eq!(c.records[&(0, coin, id)].status, SignStatus::Pending);
}

#[test]
fn a_silent_signer_is_replaced_and_too_few_signers_fail_naming_the_missing() {
    let coin = Coin::Sol;
    let mut c = sign_cluster(&[coin], 12);
    // Node 2 stops answering, but the originator still believes it reachable.
    c.down.insert(2);
    let mut done = 0;
    for k in 0..6u8 {
        let msgs = messages_for(coin, 1, 50 + k);
        let id = c.request(0, coin, msgs.clone());
        let mut now = 1_000u64;
        while c.records[&(0, coin, id)].status == SignStatus::Pending {
            now += 10_000;
            c.tick(now, &[coin]);
            // The tick of the harness sees node 2 as down, like the node's connection set.
        }
        let r = assert_signed(&c, coin, id, &msgs);
        assert!(!r.signers.contains(&c.ids[2]));
        done += 1;
    }
    assert_eq!(done, 6);

    // Two of four down: only two operators can approve, so it is never signed; it expires
    // naming both approvers.
    c.down.insert(3);
    c.tick(100_000, &[coin]);
    let id = c.request(0, coin, messages_for(coin, 1, 99));
    assert_eq!(c.records[&(0, coin, id)].status, SignStatus::Pending);
    c.tick(200_000, &[coin]);
    assert_eq!(c.records[&(0, coin, id)].status, SignStatus::Pending);
    let unix = c.unix + protocol::approvals::DEFAULT_TTL_S + 1;
    c.set_unix(unix, 300_000, &[coin]);
    for node in [0, 1] {
        let r = &c.records[&(node, coin, id)];
        assert_eq!(r.status, SignStatus::Failed);
        assert!(r.signatures.is_empty());
        let reason = r.reason.clone().unwrap();
        assert!(
            reason.contains("expired") && reason.contains("2 of the 3"),
            "{reason}"
        );
        assert!(reason.contains(&c.ids[0].to_string()) && reason.contains(&c.ids[1].to_string()));
    }
}

#[test]
fn a_slow_attempt_that_still_progresses_is_not_abandoned_at_its_first_deadline() {
    let coin = Coin::Btc;
    let mut c = sign_cluster(&[coin], 21);
    // The originator's signature shares arrive late, one at a time (a loaded set), and so does
    // the other signers' announcement of the signature.
    let share =
        |m: &CoordinatorMessage| matches!(m, CoordinatorMessage::EncryptedSignatureShareIn(_));
    let late = move |to: usize, m: &CoordinatorMessage| {
        to == 0
            && (share(m)
                || matches!(
                    m,
                    CoordinatorMessage::GeneralIn(GeneralIn {
                        msg: GeneralMessage::SignatureAvailable(_),
                        ..
                    })
                ))
    };
    c.hold = Some(Box::new(late));
    let msgs = messages_for(coin, 1, 9);
    let id = c.request(0, coin, msgs.clone()); // at 1 000 ms: deadline 11 000
    assert_eq!(
        c.held.iter().filter(|(_, _, m)| share(m)).count(),
        2,
        "the two other signers' shares are held"
    );
    c.tick(9_000, &[coin]);
    c.release_first(share); // progress at 9 000: the deadline moves to 19 000
    c.tick(12_000, &[coin]);
    let r = &c.records[&(0, coin, id)];
    assert_eq!(r.status, SignStatus::Pending);
    assert_eq!(
        r.attempt, 0,
        "the attempt was abandoned although it progressed"
    );
    assert!(!c.requests.contains_key(&(id, 1)));
    c.release_first(share);
    c.hold = None;
    while !c.held.is_empty() {
        c.release_first(|_| true);
    }
    let r = assert_signed(&c, coin, id, &msgs);
    assert_eq!(r.attempt, 0);

    // Without progress the deadline holds: shares that never come end the attempt.
    c.hold = Some(Box::new(late));
    let msgs = messages_for(coin, 1, 10);
    let id = c.request(0, coin, msgs.clone()); // at 12 000 ms: deadline 22 000
    c.tick(21_000, &[coin]);
    assert_eq!(c.records[&(0, coin, id)].attempt, 0);
    c.tick(22_000, &[coin]);
    assert_eq!(
        c.records[&(0, coin, id)].attempt,
        1,
        "no new attempt at the deadline"
    );
}

#[test]
fn a_late_preprocess_set_for_an_attempt_a_signer_dropped_is_not_an_error() {
    let coin = Coin::Btc;
    let mut c = sign_cluster(&[coin], 22);
    // Every signer but the originator gets attempt 0's preprocess set from the originator
    // only after it dropped that attempt (the originator moved on to attempt 1).
    let set0 = |m: &CoordinatorMessage| matches!(m, CoordinatorMessage::SignPreprocessesIn(p) if p.msg.set.attempt == 0);
    c.hold = Some(Box::new(move |to, m| to != 0 && set0(m)));
    let msgs = messages_for(coin, 1, 12);
    let id = c.request(0, coin, msgs.clone());
    assert!(c.held.iter().any(|(_, _, m)| set0(m)));
    assert_eq!(c.records[&(0, coin, id)].status, SignStatus::Pending);
    c.tick(40_000, &[coin]);
    c.hold = None;
    while !c.held.is_empty() {
        c.release_first(|_| true);
    }
    assert!(c.sign_errors.is_empty(), "{:?}", c.sign_errors);
    let r = assert_signed(&c, coin, id, &msgs);
    assert_eq!(r.attempt, 1);
}

#[test]
fn a_signer_that_restarts_never_preprocesses_an_attempt_twice() {
    let coin = Coin::Eth;
    let mut c = sign_cluster(&[coin], 13);
    let msgs = messages_for(coin, 1, 3);
    let id = c.request(0, coin, msgs.clone());
    let r = assert_signed(&c, coin, id, &msgs);
    // A restarted signer knows from disk that it preprocessed (id, 0): a replayed request for
    // that attempt is refused instead of producing a second preprocess.
    let signer = c.index(r.signers.iter().find(|v| **v != c.ids[0]).unwrap());
    let request = c.requests[&(id, 0)].clone();
    let k = &c.keys[signer];
    let vault = c.procs[&(signer, coin)].vault().cloned();
    let mut p =
        Processor::new(c.def.clone(), coin, k, k.processor_messaging.clone(), vault).unwrap();
    p.set_key_share(&c.key_shares[&(signer, coin)]).unwrap();
    // The node's inbound log holds the DKG's messages (signing messages are not replayed).
    for m in c.inbound[&(signer, coin)].clone() {
        if !matches!(
            m,
            CoordinatorMessage::GeneralIn(GeneralIn {
                msg: GeneralMessage::SignRequest(_) | GeneralMessage::SignatureAvailable(_),
                ..
            }) | CoordinatorMessage::EncryptedPreprocessIn(_)
                | CoordinatorMessage::EncryptedSignatureShareIn(_)
                | CoordinatorMessage::SignPreprocessesIn(_)
        ) {
            let _ = p.handle(m);
        }
    }
    assert!(p.can_sign());
    // It crashed mid-request: the record on its disk is still pending, so the marker stays.
    let slot = protocol::signing::nonce_slot(&id, &c.ids[0]);
    let pending = SignRecord {
        status: SignStatus::Pending,
        signatures: Vec::new(),
        ..r.clone()
    };
    let stale =
        protocol::signing::stale_markers(&[(slot, 0)], std::slice::from_ref(&pending), &c.ids);
    assert!(stale.is_empty(), "{stale:?}");
    p.restore_signing([(slot, 0)], vec![pending], Vec::new());
    let err = p
        .handle(CoordinatorMessage::GeneralIn(GeneralIn {
            from: c.ids[0].clone(),
            msg: GeneralMessage::SignRequest(request),
        }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already preprocessed"), "{err}");
    // The next attempt is a new session: that one it joins.
    let mut next = c.requests[&(id, 0)].clone();
    next.attempt = 1;
    next.signature = Vec::new();
    let err = p
        .handle(CoordinatorMessage::GeneralIn(GeneralIn {
            from: c.ids[0].clone(),
            msg: GeneralMessage::SignRequest(next),
        }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad originator signature"), "{err}");
}

#[test]
fn a_restarted_processor_resumes_only_its_own_vaults_pending_requests() {
    let coin = Coin::Sol;
    let mut c = sign_cluster(&[coin], 17);
    let msgs = messages_for(coin, 1, 5);
    let id = c.request(0, coin, msgs.clone());
    let done = assert_signed(&c, coin, id, &msgs);
    let k = &c.keys[0];
    let vault = c.procs[&(0, coin)].vault().cloned();
    let context = vault.as_ref().unwrap().context;
    let mut p =
        Processor::new(c.def.clone(), coin, k, k.processor_messaging.clone(), vault).unwrap();
    p.set_key_share(&c.key_shares[&(0, coin)]).unwrap();
    // The node's inbound log holds the DKG's messages (signing messages are not replayed).
    for m in c.inbound[&(0, coin)].clone() {
        if !matches!(m, CoordinatorMessage::GeneralIn(GeneralIn { ref msg, .. }) if matches!(msg, GeneralMessage::SignApproval(_) | GeneralMessage::SignRequest(_) | GeneralMessage::SignatureAvailable(_)))
        {
            let _ = p.handle(m);
        }
    }
    assert!(p.can_sign());
    // Two requests were pending at the crash: one for this vault, one for another (a retiring
    // vault of the same coin, whose own processor resumes it).
    let pending = |id: u8, vault: [u8; 32]| SignRecord {
        id: [id; 32],
        vault,
        status: SignStatus::Pending,
        signatures: Vec::new(),
        ..done.clone()
    };
    let mut other = context;
    other[0] ^= 1;
    p.restore_signing(
        Vec::new(),
        vec![pending(1, context), pending(2, other)],
        Vec::new(),
    );
    assert_eq!(p.signing_status().unfinished, 1);
}

#[test]
fn signatures_of_another_request_never_complete_the_one_they_name() {
    let coin = Coin::Btc;
    let mut c = sign_cluster(&[coin], 23);
    // A signed by 0, 1, 2; B approved on 0 only, pending everywhere.
    let old = messages_for(coin, 1, 1);
    let a = c.request(0, coin, old.clone());
    let done = assert_signed(&c, coin, a, &old);
    let b = c.request_on(&[0], coin, messages_for(coin, 1, 2));
    let open = |c: &Cluster| {
        c.records
            .get(&(3, coin, b))
            .is_none_or(|r| r.status == SignStatus::Pending)
    };
    assert!(open(&c));
    // Validator 1 replays A's valid signatures to node 3 (which approved neither) as B's.
    let forged = |id, reference: Option<&str>| {
        CoordinatorMessage::GeneralIn(GeneralIn {
            from: c.ids[1].clone(),
            msg: GeneralMessage::SignatureAvailable(SignatureAvailable {
                coin,
                id,
                origin: c.ids[0].clone(),
                attempt: 0,
                vault: done.vault,
                signers: done.signers.clone(),
                messages: done.messages.clone(),
                signatures: done.signatures.clone(),
                reference: reference.map(str::to_string),
            }),
        })
    };
    for m in [forged(b, None), forged(b, Some("b")), forged([9; 32], None)] {
        let err = c.procs.get_mut(&(3, coin)).unwrap().handle(m).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&c.ids[1].to_string()), "{text}");
        assert!(text.contains("other content"), "{text}");
    }
    // B is still open on node 3 and nowhere done; A's record is unchanged.
    assert!(open(&c));
    assert_eq!(c.records[&(3, coin, a)].signatures, done.signatures);
    // Approved on two more validators B is signed over its own messages, also on node 3.
    c.request_on(&[1, 2], coin, messages_for(coin, 1, 2));
    assert_signed(&c, coin, b, &messages_for(coin, 1, 2));
}

#[test]
fn a_key_share_replayed_after_a_replaced_attempt_names_its_own_session() {
    // Session 2 (a retiring session-1 vault would share the coin): validator 3 is silent, so
    // attempt 0 is replaced; node 0 restarts with no vault on disk and replays its log.
    let coin = Coin::Btc;
    let mut c = Cluster::in_session(4, &[coin], 41, 2);
    c.down.insert(3);
    c.run();
    c.tick(1_000, &[coin]);
    c.tick(1_000 + 60_000, &[coin]);
    let v = c.procs[&(0, coin)].vault().cloned().expect("decided");
    assert_eq!((v.session, v.attempt), (2, 1));
    let k = c.keys[0].clone();
    let mut p =
        Processor::new(c.def.clone(), coin, &k, k.processor_messaging.clone(), None).unwrap();
    let mut out = p.restore_votes(c.votes[&(0, coin)].clone());
    out.extend(p.start());
    for m in c.inbound[&(0, coin)].clone() {
        out.extend(p.handle(m).unwrap());
    }
    let shares: Vec<(u32, [u8; 32])> = out
        .iter()
        .filter_map(|o| match o {
            Output::Persist(Persist::KeyShare {
                session, context, ..
            }) => Some((*session, *context)),
            _ => None,
        })
        .collect();
    assert_eq!(shares, vec![(2, v.context)]);
    c.procs.insert((0, coin), p);
    c.route(0, coin, out);
    c.run();
    assert_eq!(
        c.procs[&(0, coin)].vault().map(|v| v.context),
        Some(v.context)
    );
}

#[test]
fn one_originator_gets_its_share_of_ceremonies_and_finished_requests_leave_no_markers() {
    use protocol::signing::SigningConfig;
    let coin = Coin::Btc;
    let mut c = sign_cluster(&[coin], 29);
    let hostile = 3;
    // Each originator's share at a signer: twice the requests it originates at once.
    let (max_originating, share) = (1, 2);
    for node in 0..4 {
        c.procs
            .get_mut(&(node, coin))
            .unwrap()
            .set_signing_config(SigningConfig {
                max_originating,
                ..SigningConfig::default()
            });
    }
    // Honest originators' announcements (and the preprocesses that carry them) wait, so the
    // ceremonies node 0 holds are the hostile one's.
    let h = c.ids[hostile].clone();
    c.hold = Some(Box::new(move |_, m: &CoordinatorMessage| match m {
        CoordinatorMessage::GeneralIn(GeneralIn {
            msg: GeneralMessage::SignRequest(r),
            ..
        }) => r.origin != h,
        CoordinatorMessage::EncryptedPreprocessIn(p) => p.msg.request.origin != h,
        _ => false,
    }));
    let vault = c.procs[&(0, coin)].vault().cloned().unwrap();
    let signers: Vec<ValidatorId> = vault
        .participants
        .iter()
        .filter(|v| [0, 1, hostile].iter().any(|&i| c.ids[i] == **v))
        .cloned()
        .collect();
    let forged = |c: &mut Cluster, id, messages: Vec<Vec<u8>>, attempt| {
        let r = SignRequest {
            coin,
            id,
            attempt,
            origin: c.ids[hostile].clone(),
            vault: vault.context,
            signers: signers.clone(),
            messages,
            signature: Vec::new(),
        };
        let r = c
            .procs
            .get_mut(&(hostile, coin))
            .unwrap()
            .originate_as_self(r);
        CoordinatorMessage::GeneralIn(GeneralIn {
            from: c.ids[hostile].clone(),
            msg: GeneralMessage::SignRequest(r),
        })
    };
    let markers = |c: &Cluster| {
        c.persisted[&(0, coin)]
            .iter()
            .filter(|e| e.starts_with("NonceUsed"))
            .count()
    };
    // 300 requests node 0's operator never approved: refused, and not one marker written.
    let before = markers(&c);
    for k in 0..300u32 {
        let msgs = vec![k.to_be_bytes().repeat(8)];
        let id = protocol::approvals::request_id(&c.def.name, coin, &vault.context, &msgs, None);
        let m = forged(&mut c, id, msgs, 0);
        let err = c.procs.get_mut(&(0, coin)).unwrap().handle(m).unwrap_err();
        assert!(err.to_string().contains("did not approve"), "{err}");
        assert!(
            err.to_string().contains(&c.ids[hostile].to_string()),
            "{err}"
        );
    }
    assert_eq!(markers(&c), before);
    // Five requests three honest operators approved: the hostile originator gets `share`
    // ceremonies at node 0, each of its later attempts replacing its earlier one, and no more.
    let requests: Vec<([u8; 32], Vec<Vec<u8>>)> = (0..5u8)
        .map(|k| {
            let msgs = messages_for(coin, 1, 100 + k);
            (c.request_on(&[0, 1, 2], coin, msgs.clone()), msgs)
        })
        .collect();
    let open_before = c.procs[&(0, coin)].signing_status().ceremonies;
    let mut refused = 0;
    for (id, msgs) in &requests {
        for attempt in 0..3 {
            let m = forged(&mut c, *id, msgs.clone(), attempt);
            match c.procs.get_mut(&(0, coin)).unwrap().handle(m) {
                Ok(out) => c.route(0, coin, out),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains(&c.ids[hostile].to_string()), "{e}");
                    // Its own honest machine may have announced another attempt 0 already.
                    assert!(
                        e.contains("its share is 2") || e.contains("two different requests"),
                        "{e}"
                    );
                    refused += usize::from(e.contains("its share is 2"));
                }
            }
        }
    }
    assert!(refused >= 3, "{refused}");
    let open_after = c.procs[&(0, coin)].signing_status().ceremonies;
    assert!(
        open_after <= open_before + share,
        "{open_before} -> {open_after}"
    );
    // The honest originators' announcements go through: every request is signed, node 0
    // taking part beside the hostile one's open ceremonies.
    c.hold = None;
    while let Some(m) = c.held.pop_front() {
        c.queue.push_back(m);
    }
    c.run();
    for step in 1..=20u64 {
        if requests.iter().all(|(id, _)| {
            (0..4).all(|n| {
                c.records
                    .get(&(n, coin, *id))
                    .is_some_and(|r| r.status == SignStatus::Done)
            })
        }) {
            break;
        }
        c.tick(1_000 + step * 11_000, &[coin]);
    }
    for (id, msgs) in &requests {
        assert_signed(&c, coin, *id, msgs);
    }
    // Finished requests leave no marker: each one node 0 wrote is deleted as its request
    // finishes, and any a crash kept are pruned at the next start.
    let forgotten: usize = c.persisted[&(0, coin)]
        .iter()
        .filter_map(|e| e.strip_prefix("ForgetNonces(BTC, "))
        .filter_map(|e| e.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(markers(&c) > 0);
    assert_eq!(forgotten, markers(&c));
    let old: Vec<([u8; 32], u32)> = requests
        .iter()
        .map(|(id, _)| (protocol::signing::nonce_slot(id, &c.ids[hostile]), 0))
        .collect();
    assert_eq!(protocol::signing::stale_markers(&old, &[], &c.ids), old);
}

#[test]
fn an_originator_whose_peers_have_not_reconnected_waits_instead_of_failing() {
    let coin = Coin::Eth;
    let mut c = sign_cluster(&[coin], 43);
    // Node 0 just restarted: it reaches nobody yet; the others reach everyone.
    let everyone: std::collections::BTreeSet<ValidatorId> = c.ids.iter().cloned().collect();
    let out = c
        .procs
        .get_mut(&(0, coin))
        .unwrap()
        .tick(2_000, Default::default());
    c.route(0, coin, out);
    for node in 1..4 {
        let out = c
            .procs
            .get_mut(&(node, coin))
            .unwrap()
            .tick(2_000, everyone.clone());
        c.route(node, coin, out);
    }
    c.run();
    let all: Vec<usize> = (0..4).collect();
    let requests: Vec<([u8; 32], Vec<Vec<u8>>)> = (0..8u8)
        .map(|k| {
            let msgs = messages_for(coin, 1, 60 + k);
            (c.request_on(&all, coin, msgs.clone()), msgs)
        })
        .collect();
    let at_0 = |c: &Cluster, id| c.records.get(&(0, coin, id)).cloned();
    let mut waited = 0;
    for (id, _) in &requests {
        let r = at_0(&c, *id).expect("approved at node 0");
        assert_ne!(r.status, SignStatus::Failed, "{:?}", r.reason);
        if r.origin == c.ids[0] && r.status == SignStatus::Pending {
            let reason = r.reason.clone().unwrap_or_default();
            assert!(reason.contains("waiting"), "{reason}");
            waited += 1;
        }
    }
    assert!(waited > 0, "node 0 originated none of the requests");
    // Its peers reconnect: every request is signed.
    for step in 1..=10u64 {
        c.tick(2_000 + step * 11_000, &[coin]);
    }
    for (id, msgs) in &requests {
        assert_signed(&c, coin, *id, msgs);
    }
}
