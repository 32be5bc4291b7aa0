//! The status page's projection: what `GET /status` shows, built from the coordinator's view
//! of its peers and the processors' snapshots, every 250 ms. Pure: it reads what it is given.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use libp2p::{Multiaddr, PeerId};
use protocol::{
    network::NetworkDefinition,
    vault::{VaultRecord, VaultStatus as ProtoVaultStatus},
    Coin, ValidatorId,
};
use storage::PeerRecord;

use crate::{
    bus::ProcessorSnapshot,
    network,
    status::{
        CheaterView, ExclusionView, KeyStatus, Names, SigningView, Status, ValidatorStatus,
        VaultStatus, VoteView as StatusVote,
    },
};

/// What the status page is built from.
pub(crate) struct StatusInput<'a> {
    pub(crate) def: &'a NetworkDefinition,
    pub(crate) me: &'a ValidatorId,
    pub(crate) peer_id: PeerId,
    pub(crate) names: &'a Names,
    pub(crate) validators: &'a BTreeMap<PeerId, ValidatorId>,
    pub(crate) peer_records: &'a BTreeMap<ValidatorId, PeerRecord>,
    pub(crate) connected: &'a BTreeSet<PeerId>,
    pub(crate) peer_addrs: &'a HashMap<PeerId, Multiaddr>,
    pub(crate) peer_agents: &'a HashMap<PeerId, String>,
    pub(crate) peer_rtt: &'a HashMap<PeerId, std::time::Duration>,
    pub(crate) listen_addrs: &'a [Multiaddr],
    pub(crate) advertised: &'a [Multiaddr],
    pub(crate) snapshots: &'a BTreeMap<Coin, ProcessorSnapshot>,
    /// Vaults of earlier sessions, listed as retiring.
    pub(crate) retiring: Vec<&'a VaultRecord>,
}

/// The status document. Each validator's base58 name comes from `names` (encoded once), and
/// the snapshots are read in place, not copied.
pub(crate) fn project(v_in: &StatusInput<'_>) -> Status {
    let snapshots = v_in.snapshots;
    let name = |v: &ValidatorId| v_in.names.name(v);
    let no_record = PeerRecord::default();
    let me = v_in.peer_id;
    let validators = v_in
        .def
        .validators
        .iter()
        .filter(|v| **v != *v_in.me)
        .map(|v| {
            let rec = v_in.peer_records.get(v).unwrap_or(&no_record);
            let peer = network::peer_id_of(v).ok();
            let connected = peer.is_some_and(|p| v_in.connected.contains(&p));
            let processor_keys = rec
                .processor_keys
                .iter()
                .map(|(coin, k)| {
                    let verified = snapshots
                        .get(coin)
                        .and_then(|s| s.peers.get(v))
                        .is_some_and(|p| {
                            p.messaging_key == Some((k.pubkey, k.seq))
                                && p.verified_seq == Some(k.seq)
                        });
                    (
                        coin.to_string(),
                        KeyStatus {
                            pubkey: hex::encode(k.pubkey),
                            seq: k.seq,
                            verified,
                        },
                    )
                })
                .collect();
            ValidatorStatus {
                peer_id: name(v),
                connected,
                addr: peer
                    .and_then(|p| v_in.peer_addrs.get(&p))
                    .map(|a| a.to_string()),
                agent: peer.and_then(|p| v_in.peer_agents.get(&p)).cloned(),
                rtt_ms: peer
                    .and_then(|p| v_in.peer_rtt.get(&p))
                    .map(|d| d.as_secs_f64() * 1000.0),
                coordinator_key: rec.coordinator_key.map(hex::encode),
                processor_keys,
            }
        })
        .collect();
    let mut vaults: Vec<VaultStatus> = v_in
        .def
        .coins
        .iter()
        .map(|coin| {
            let snap = snapshots.get(coin);
            let vault = snap.and_then(|s| s.vault.clone());
            let status = match vault.as_ref().map(|v| v.status) {
                Some(ProtoVaultStatus::Active) => "active",
                Some(ProtoVaultStatus::Failed) => "failed",
                Some(ProtoVaultStatus::Excluded) => "excluded",
                _ => "pending",
            };
            VaultStatus {
                coin: coin.to_string(),
                status: status.to_string(),
                session: v_in.def.session,
                phase: snap
                    .map(|s| format!("{:?}", s.phase))
                    .unwrap_or_else(|| "starting".into()),
                progress: snap.map(|s| s.progress).unwrap_or_default(),
                group_key: vault
                    .as_ref()
                    .map(|v| hex::encode(&v.group_key))
                    .unwrap_or_default(),
                address: vault
                    .as_ref()
                    .map(|v| v.address.clone())
                    .unwrap_or_default(),
                threshold: v_in.def.threshold,
                attempt: snap.map(|s| s.attempt).unwrap_or_default(),
                participants: snap
                    .map(|s| s.participants.iter().map(name).collect())
                    .unwrap_or_default(),
                excluded: snap
                    .map(|s| {
                        s.excluded
                            .iter()
                            .map(|e| ExclusionView {
                                peer: name(&e.validator),
                                attempt: e.attempt,
                                reason: e.reason.label().to_string(),
                                proven: e.reason.proven(),
                                voters: e.voters.iter().map(name).collect(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                votes: snap
                    .map(|s| {
                        s.votes
                            .iter()
                            .map(|v| StatusVote {
                                voter: name(&v.voter),
                                round: v.round,
                                exclude: v
                                    .exclude
                                    .iter()
                                    .map(|(p, r)| format!("{}: {}", name(p), r.label()))
                                    .collect(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                reason: vault.and_then(|v| v.reason),
                rejected: snap
                    .map(|s| {
                        s.rejections
                            .iter()
                            .map(|(v, r)| crate::status::RejectedView {
                                peer: name(v),
                                count: r.count,
                                kind: r.kind.to_string(),
                                reason: r.reason.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                processor_key: snap
                    .map(|s| KeyStatus {
                        pubkey: hex::encode(s.messaging.0),
                        seq: s.messaging.1,
                        verified: true,
                    })
                    .unwrap_or_default(),
                signing: snap
                    .map(|s| SigningView {
                        originating: s.signing.originating,
                        queued: s.signing.queued,
                        ceremonies: s.signing.ceremonies,
                        cheaters: s
                            .signing
                            .cheaters
                            .iter()
                            .map(|c| CheaterView {
                                peer: name(&c.peer),
                                request: hex::encode(c.id),
                                attempt: c.attempt,
                                reason: c.reason.clone(),
                            })
                            .collect(),
                        unfinished: s.signing.unfinished,
                        waiting_for_approvals: s
                            .signing
                            .waiting
                            .iter()
                            .map(|w| crate::status::WaitingView {
                                id: w.id.clone(),
                                approvals: w.approvals.iter().map(name).collect(),
                                expires_at: w.expires_at,
                                approved_here: w.approved_here,
                            })
                            .collect(),
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    // Vaults of earlier sessions: listed, retiring.
    vaults.extend(v_in.retiring.iter().map(|v| VaultStatus {
        coin: v.coin.to_string(),
        status: "retiring".into(),
        session: v.session,
        attempt: v.attempt,
        phase: "Active".into(),
        group_key: hex::encode(&v.group_key),
        address: v.address.clone(),
        threshold: v.threshold,
        participants: v.participants.iter().map(name).collect(),
        excluded: Vec::new(),
        ..Default::default()
    }));
    let status = Status {
        peer_id: me.to_string(),
        network: v_in.def.name.clone(),
        session: v_in.def.session,
        listen_addrs: v_in.listen_addrs.iter().map(|a| a.to_string()).collect(),
        advertised_addrs: v_in.advertised.iter().map(|a| a.to_string()).collect(),
        peers: v_in
            .connected
            .iter()
            .map(|p| v_in.validators.get(p).map_or_else(|| p.to_string(), name))
            .collect(),
        validators,
        vaults,
    };
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::keys::NodeKeys;

    #[test]
    fn the_page_lists_every_other_validator_and_every_coin_before_any_snapshot() {
        let keys: Vec<NodeKeys> = (0..3)
            .map(|_| NodeKeys::generate(&mut rand_core::OsRng).unwrap())
            .collect();
        let def = protocol::local::definition("t", &keys, &[Coin::Btc, Coin::Sol]);
        let me = def.validators[0].clone();
        let other = def.validators[1].clone();
        let other_peer = network::peer_id_of(&other).unwrap();
        let validators: BTreeMap<PeerId, ValidatorId> = def
            .validators
            .iter()
            .map(|v| (network::peer_id_of(v).unwrap(), v.clone()))
            .collect();
        let names = Names::new(def.validators.iter());
        let connected: BTreeSet<PeerId> = [other_peer].into();
        let rtt: HashMap<PeerId, std::time::Duration> =
            [(other_peer, std::time::Duration::from_millis(3))].into();
        let status = project(&StatusInput {
            def: &def,
            me: &me,
            peer_id: network::peer_id_of(&me).unwrap(),
            names: &names,
            validators: &validators,
            peer_records: &BTreeMap::new(),
            connected: &connected,
            peer_addrs: &HashMap::new(),
            peer_agents: &HashMap::new(),
            peer_rtt: &rtt,
            listen_addrs: &[],
            advertised: &[],
            snapshots: &BTreeMap::new(),
            retiring: Vec::new(),
        });
        assert_eq!(status.validators.len(), 2);
        let v = status
            .validators
            .iter()
            .find(|v| v.peer_id == other.to_string())
            .unwrap();
        assert!(v.connected);
        assert_eq!(v.rtt_ms, Some(3.0));
        assert_eq!(status.peers, vec![other.to_string()]);
        assert_eq!(status.vaults.len(), 2);
        assert!(status.vaults.iter().all(|v| v.status == "pending"));
    }
}
