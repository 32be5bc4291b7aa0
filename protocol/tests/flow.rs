//! N processors driven through the whole signature process (steps 1 to 20) over plain maps,
//! with a minimal coordinator in between that serialises every hop through the envelope.

use std::collections::{BTreeMap, VecDeque};

use protocol::{
    address,
    keys::{MessagingKey, NodeKeys},
    messages::{self, *},
    network::NetworkDefinition,
    processor::{Output, Persist, Phase, Processor},
    seal::{self, SealContext, SealKind},
    vault::VaultStatus,
    Coin, ValidatorId,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Tampering with what leaves a node: (sending node, message, cluster).
type Tamper = Box<dyn FnMut(usize, &mut BusMessage, &Cluster)>;

struct Cluster {
    def: NetworkDefinition,
    keys: Vec<NodeKeys>,
    ids: Vec<ValidatorId>,
    procs: BTreeMap<(usize, Coin), Processor>,
    /// Inbound log per (node, coin): what a coordinator would have stored.
    inbound: BTreeMap<(usize, Coin), Vec<BusMessage>>,
    queue: VecDeque<(usize, Coin, BusMessage)>,
    persisted: BTreeMap<(usize, Coin), Vec<String>>,
    rng: ChaCha20Rng,
    /// Optional tampering of what leaves a node.
    tamper: Option<Tamper>,
}

fn hop<T: serde::Serialize + serde::de::DeserializeOwned>(m: &T) -> T {
    messages::decode(&messages::encode(m).unwrap()).unwrap()
}

impl Cluster {
    fn new(n: usize, coins: &[Coin], seed: u64) -> Cluster {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<NodeKeys> = (0..n)
            .map(|_| NodeKeys::generate(&mut rng).unwrap())
            .collect();
        let mut toml = format!(
            "name = \"flow\"\ncoins = [{}]\n",
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
            tamper: None,
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
        for o in out {
            match o {
                Output::Persist(p) => self
                    .persisted
                    .entry((node, coin))
                    .or_default()
                    .push(format!("{p:?}")),
                Output::Bus(mut m) => {
                    if let Some(mut t) = self.tamper.take() {
                        t(node, &mut m, self);
                        self.tamper = Some(t);
                    }
                    let m = hop(&m);
                    let from = self.ids[node].clone();
                    match m {
                        BusMessage::ProcessorPublicKey(key) => {
                            // steps 2-3 (gossip) and 7-8 (direct list): ExternalPublicKeyIn
                            let list = hop(&DirectRequest::ProcessorPublicKeyList(
                                ProcessorPublicKeyList { keys: vec![key] },
                            ));
                            let DirectRequest::ProcessorPublicKeyList(list) = list else {
                                unreachable!()
                            };
                            for to in 0..self.ids.len() {
                                if to != node {
                                    for key in &list.keys {
                                        self.deliver(
                                            to,
                                            key.coin,
                                            BusMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
                                                from: from.clone(),
                                                key: key.clone(),
                                            }),
                                        );
                                    }
                                }
                            }
                        }
                        BusMessage::SignerReady(_) => {}
                        BusMessage::EncryptedPublicKeyOut(m) => {
                            let to = self.index(&m.to);
                            let DirectRequest::EncryptedPublicKeyOut(m) =
                                hop(&DirectRequest::EncryptedPublicKeyOut(m))
                            else {
                                unreachable!()
                            };
                            self.deliver(
                                to,
                                coin,
                                BusMessage::EncryptedPublicKeyIn(EncryptedPublicKeyIn {
                                    from,
                                    msg: m,
                                }),
                            );
                        }
                        BusMessage::EncryptedKeyGenCommitmentOut(m) => {
                            let to = self.index(&m.to);
                            let DirectRequest::EncryptedKeyGenCommitmentOut(m) =
                                hop(&DirectRequest::EncryptedKeyGenCommitmentOut(m))
                            else {
                                unreachable!()
                            };
                            self.deliver(
                                to,
                                coin,
                                BusMessage::EncryptedKeyGenCommitmentIn(
                                    EncryptedKeyGenCommitmentIn { from, msg: m },
                                ),
                            );
                        }
                        BusMessage::EncryptedKeyShareOut(m) => {
                            let to = self.index(&m.to);
                            let DirectRequest::EncryptedKeyShareOut(m) =
                                hop(&DirectRequest::EncryptedKeyShareOut(m))
                            else {
                                unreachable!()
                            };
                            self.deliver(
                                to,
                                coin,
                                BusMessage::EncryptedKeyShareIn(EncryptedKeyShareIn {
                                    from,
                                    msg: m,
                                }),
                            );
                        }
                        BusMessage::KeyGenCommitmentsDigest(d) => {
                            self.gossip(node, coin, GeneralMessage::KeyGenCommitmentsDigest(d))
                        }
                        BusMessage::PublicAddressAvailable(a) => {
                            self.gossip(node, coin, GeneralMessage::PublicAddressAvailable(a))
                        }
                        other => panic!("processor emitted an input: {}", other.kind()),
                    }
                }
            }
        }
    }

    fn gossip(&mut self, node: usize, coin: Coin, msg: GeneralMessage) {
        let msg = hop(&msg);
        for to in 0..self.ids.len() {
            if to != node {
                let from = self.ids[node].clone();
                self.deliver(
                    to,
                    coin,
                    BusMessage::GeneralIn(GeneralIn {
                        from,
                        msg: msg.clone(),
                    }),
                );
            }
        }
    }

    fn deliver(&mut self, to: usize, coin: Coin, m: BusMessage) {
        self.queue.push_back((to, coin, m));
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
            let p = self.procs.get_mut(&(to, coin)).unwrap();
            let out = p.handle(m).unwrap();
            self.route(to, coin, out);
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

#[test]
fn equivocating_commitments_stop_everyone_before_shares() {
    let coins = [Coin::Btc];
    let mut c = Cluster::new(4, &coins, 3);
    // Validator 0 sends validator 1 commitments from another polynomial, properly sealed.
    c.tamper = Some(Box::new(|node, m, c: &Cluster| {
        if let BusMessage::EncryptedKeyGenCommitmentOut(out) = m {
            if node == 0 && out.to == c.ids[1] {
                let i = c.def.participant_index(&c.ids[0]).unwrap();
                let p = protocol::dkg::DkgParams {
                    t: c.def.threshold,
                    n: c.def.n(),
                    i,
                    context: out.context,
                };
                let other = protocol::dkg::commitments(Coin::Btc.curve(), &[0xee; 32], &p).unwrap();
                let ctx = SealContext {
                    network: &c.def.name,
                    coin: Coin::Btc,
                    kind: SealKind::KeyGenCommitment,
                    from: &c.ids[0],
                    to: &c.ids[1],
                    context: out.context,
                };
                let to_key = c.keys[1].processor_messaging.public;
                out.sealed =
                    seal::seal(&c.keys[0].processor_messaging, &to_key, &ctx, &other).unwrap();
            }
        }
    }));
    c.run();
    for i in 0..4 {
        let p = &c.procs[&(i, Coin::Btc)];
        let v = p.vault().expect("every node decided");
        assert_eq!(v.status, VaultStatus::Failed);
        assert!(v.group_key.is_empty(), "no key computed");
        assert!(v
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("commitments differ"));
        assert!(!c.persisted[&(i, Coin::Btc)]
            .iter()
            .any(|p| p.starts_with("KeyShare")));
    }
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
        .handle(BusMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
            from,
            key: ProcessorPublicKey {
                coin: Coin::Sol,
                pubkey: old,
                seq: 0,
            },
        }))
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
        .handle(BusMessage::EncryptedKeyShareIn(EncryptedKeyShareIn {
            from: from.clone(),
            msg: EncryptedKeyShareOut {
                coin: Coin::Btc,
                to: me.clone(),
                context: p.context(),
                sealed: vec![1; 200],
            },
        }))
        .unwrap_err();
    assert_eq!(e.culprit(), Some(&from), "{e}");
    // an outsider
    let stranger = ValidatorId::from_ed25519(&[0xab; 32]);
    let e = p
        .handle(BusMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
            from: stranger.clone(),
            key: ProcessorPublicKey {
                coin: Coin::Btc,
                pubkey: [1; 32],
                seq: 9,
            },
        }))
        .unwrap_err();
    assert_eq!(e.culprit(), Some(&stranger));
    // a message that claims another coin
    let e = p
        .handle(BusMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
            from: from.clone(),
            key: ProcessorPublicKey {
                coin: Coin::Eth,
                pubkey: [1; 32],
                seq: 9,
            },
        }))
        .unwrap_err();
    assert_eq!(e.culprit(), Some(&from));
    // nothing was taken in: the DKG still completes
    c.run();
    assert_all_active(&c, &coins);
}
