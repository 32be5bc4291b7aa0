//! N validators' processors joined in one process over plain maps: no network, no disk.
//!
//! What the coordinators would do, reduced to its essence: every message a processor emits is
//! routed as the node routes it ([`routing::carry`]): encoded as it would be on the wire (the
//! gossip `GeneralMessage` or the pairwise `DirectRequest`), decoded, and placed on each
//! recipient's bus in FIFO order. It is the
//! in-process limit the benchmarks compare a cluster of real nodes with, and a harness for
//! driving the sans-IO machines without a node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::{
    keys::NodeKeys,
    messages::*,
    network::NetworkDefinition,
    processor::{Output, Persist, Processor},
    routing,
    vault::{SignRecord, VaultStatus},
    Coin, ProtocolError, Result, ValidatorId,
};

/// A definition of the validators holding `keys`, for `coins`, with the default threshold
/// (⌊2n/3⌋ + 1), session 0 and no addresses: what a local network needs.
pub fn definition(name: &str, keys: &[NodeKeys], coins: &[Coin]) -> NetworkDefinition {
    let mut validators: Vec<ValidatorId> = keys.iter().map(|k| k.validator_id()).collect();
    validators.sort();
    NetworkDefinition {
        name: name.into(),
        session: 0,
        coins: coins.to_vec(),
        threshold: crate::network::default_threshold(keys.len()),
        bootstrap: Vec::new(),
        validator_addrs: vec![Vec::new(); keys.len()],
        validators,
    }
}

/// The validators of one network definition, every coin's processor of each, in one process.
pub struct LocalNetwork {
    def: NetworkDefinition,
    ids: Vec<ValidatorId>,
    procs: BTreeMap<(usize, Coin), Processor>,
    queue: VecDeque<(usize, Coin, CoordinatorMessage)>,
    /// Encoded bytes each validator handed to the network: a pairwise message per recipient, a
    /// gossip message once (as the node's `vaultd_sent_bytes_total` counts them).
    bytes_sent: Vec<u64>,
    /// Messages each validator handed to the network, counted the same way.
    messages_sent: Vec<u64>,
    /// Signature request records per (validator, coin, request id), as persisted.
    records: BTreeMap<(usize, Coin, [u8; 32]), SignRecord>,
    /// Logical clock (milliseconds) handed to the processors' `tick`.
    now_ms: u64,
    /// Wall clock (Unix seconds) the approvals are made at.
    unix: u64,
}

impl LocalNetwork {
    /// One processor per validator and coin of `def`; `keys[i]` must be validator `i`'s.
    pub fn new(def: NetworkDefinition, keys: &[NodeKeys]) -> Result<Self> {
        let mut ids: Vec<ValidatorId> = keys.iter().map(|k| k.validator_id()).collect();
        ids.sort();
        let mut expected = def.validators.clone();
        expected.sort();
        if ids != expected {
            return Err(ProtocolError::Definition {
                field: "validators".into(),
                reason: "the keys are not the definition's validators".into(),
            });
        }
        let mut procs = BTreeMap::new();
        for (i, v) in def.validators.iter().enumerate() {
            let k = keys
                .iter()
                .find(|k| k.validator_id() == *v)
                .ok_or_else(|| ProtocolError::UnknownValidator(v.clone()))?;
            for &coin in &def.coins {
                let p = Processor::new(def.clone(), coin, k, k.processor_messaging.clone(), None)?;
                procs.insert((i, coin), p);
            }
        }
        let n = def.validators.len();
        Ok(LocalNetwork {
            ids: def.validators.clone(),
            def,
            procs,
            queue: VecDeque::new(),
            bytes_sent: vec![0; n],
            messages_sent: vec![0; n],
            records: BTreeMap::new(),
            now_ms: 0,
            unix: 1,
        })
    }

    /// Start every processor (steps 1 to 3) and run until no message is left in flight.
    pub fn start(&mut self) -> Result<()> {
        let keys: Vec<(usize, Coin)> = self.procs.keys().copied().collect();
        for (i, coin) in keys {
            let out = self.processor(i, coin)?.start();
            self.route(i, coin, out)?;
        }
        self.run()
    }

    /// Deliver queued messages in order until none is left.
    pub fn run(&mut self) -> Result<()> {
        while let Some((to, coin, m)) = self.queue.pop_front() {
            let out = self.processor(to, coin)?.handle(m)?;
            self.route(to, coin, out)?;
        }
        Ok(())
    }

    /// Whether every validator's vault of every coin is active.
    pub fn all_active(&self) -> bool {
        self.procs
            .values()
            .all(|p| p.vault().is_some_and(|v| v.status == VaultStatus::Active))
    }

    /// Move every processor's clock forward by `ms`, every validator reachable by every other.
    pub fn tick(&mut self, ms: u64) -> Result<()> {
        self.now_ms += ms;
        let reachable: BTreeSet<ValidatorId> = self.ids.iter().cloned().collect();
        let keys: Vec<(usize, Coin)> = self.procs.keys().copied().collect();
        for (i, coin) in keys {
            let now = self.now_ms;
            let out = self.processor(i, coin)?.tick(now, reachable.clone());
            self.route(i, coin, out)?;
        }
        self.run()
    }

    /// Have the operators of validators `approvers` approve a request to sign `messages` with
    /// `coin`'s vault, as their APIs would (the first approver first); returns the request id.
    /// Once t approved, the ceremony runs on the next [`LocalNetwork::run`].
    pub fn request(
        &mut self,
        approvers: &[usize],
        coin: Coin,
        messages: Vec<Vec<u8>>,
    ) -> Result<[u8; 32]> {
        let first = *approvers
            .first()
            .ok_or_else(|| ProtocolError::Malformed("no approver".into()))?;
        let vault = self
            .processor(first, coin)?
            .vault()
            .map(|v| v.context)
            .ok_or_else(|| ProtocolError::Malformed(format!("no {coin} vault")))?;
        let id = crate::approvals::request_id(&self.def.name, coin, &vault, &messages, None);
        for (k, &i) in approvers.iter().enumerate() {
            let at = self.unix + k as u64;
            let p = self.processor(i, coin)?;
            // Each next operator approves a second later.
            p.set_unix_time(at);
            let out = p.handle(CoordinatorMessage::SignatureRequested(SignatureRequested {
                id,
                messages: messages.clone(),
                reference: None,
            }))?;
            self.route(i, coin, out)?;
        }
        self.unix += approvers.len() as u64;
        Ok(id)
    }

    /// `t` approvers starting at `origin` (in index order, wrapping).
    pub fn approvers_from(&self, origin: usize) -> Vec<usize> {
        let n = self.ids.len();
        (0..usize::from(self.def.threshold))
            .map(|k| (origin + k) % n)
            .collect()
    }

    /// Validator `i`'s record of request `id`, if it stored one.
    pub fn record(&self, i: usize, coin: Coin, id: &[u8; 32]) -> Option<&SignRecord> {
        self.records.get(&(i, coin, *id))
    }

    /// Validator `i`'s processor of `coin`.
    pub fn processor_of(&self, i: usize, coin: Coin) -> Option<&Processor> {
        self.procs.get(&(i, coin))
    }

    /// Encoded bytes validator `i` sent so far.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.bytes_sent.get(i).copied().unwrap_or(0)
    }

    /// Messages validator `i` sent so far (pairwise: one per recipient; gossip: once).
    pub fn messages_sent(&self, i: usize) -> u64 {
        self.messages_sent.get(i).copied().unwrap_or(0)
    }

    /// The network definition.
    pub fn definition(&self) -> &NetworkDefinition {
        &self.def
    }

    fn processor(&mut self, i: usize, coin: Coin) -> Result<&mut Processor> {
        self.procs
            .get_mut(&(i, coin))
            .ok_or_else(|| ProtocolError::Malformed(format!("no {coin} processor for #{i}")))
    }

    fn index(&self, v: &ValidatorId) -> Result<usize> {
        self.ids
            .iter()
            .position(|x| x == v)
            .ok_or_else(|| ProtocolError::UnknownValidator(v.clone()))
    }

    /// The coordinators' part: persist (here: keep the records), then carry each message over
    /// its wire encoding to its recipients ([`routing::carry`]).
    fn route(&mut self, from_i: usize, coin: Coin, out: Vec<Output>) -> Result<()> {
        let from = self.ids[from_i].clone();
        for o in out {
            let m = match o {
                Output::Persist(Persist::SignRecord { record: r, .. }) => {
                    self.records.insert((from_i, coin, r.id), r);
                    continue;
                }
                Output::Persist(_) => continue,
                Output::Bus(m) => m,
            };
            let carried = routing::carry(&from, &self.ids, m)?;
            self.bytes_sent[from_i] += carried.bytes;
            self.messages_sent[from_i] += carried.messages;
            for d in carried.deliveries {
                let to = self.index(&d.to)?;
                self.queue.push_back((to, d.coin, d.msg));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SignStatus;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn network(n: usize, coins: &[Coin]) -> LocalNetwork {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let keys: Vec<NodeKeys> = (0..n)
            .map(|_| NodeKeys::generate(&mut rng).unwrap())
            .collect();
        let def = definition("local", &keys, coins);
        LocalNetwork::new(def, &keys).unwrap()
    }

    #[test]
    fn a_local_network_creates_one_vault_per_coin_and_signs() {
        let mut net = network(4, &[Coin::Btc, Coin::Sol]);
        net.start().unwrap();
        assert!(net.all_active());
        fn key(net: &LocalNetwork, i: usize, coin: Coin) -> Vec<u8> {
            net.processor_of(i, coin)
                .and_then(|p| p.vault())
                .map(|v| v.group_key.clone())
                .unwrap_or_default()
        }
        for coin in [Coin::Btc, Coin::Sol] {
            assert!((1..4).all(|i| key(&net, i, coin) == key(&net, 0, coin)));
        }
        net.tick(1_000).unwrap();
        let approvers = net.approvers_from(2);
        let id = net
            .request(&approvers, Coin::Sol, vec![vec![1; 100]])
            .unwrap();
        net.run().unwrap();
        for i in 0..4 {
            let r = net.record(i, Coin::Sol, &id).unwrap();
            assert_eq!(r.status, SignStatus::Done, "{:?}", r.reason);
        }
        let r = net.record(0, Coin::Sol, &id).unwrap();
        assert!(crate::sign::verify(
            Coin::Sol,
            &key(&net, 0, Coin::Sol),
            &[1; 100],
            &r.signatures[0]
        ));
        assert!((0..4).all(|i| net.bytes_sent(i) > 0 && net.messages_sent(i) > 0));
    }
}
