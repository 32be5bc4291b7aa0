//! The routing of the bus, written once: what a processor's message becomes on the wire
//! ([`outbound`]) and what a peer's wire message becomes for this node ([`general_in`],
//! [`direct_in`]). The node's coordinator, the in-process [`crate::local`] network and the flow
//! tests all route through here; [`carry`] joins both ends for harnesses that run every
//! validator in one process.

use crate::{
    error::Result,
    ids::{Coin, ValidatorId},
    messages::{self, *},
};

/// Which announcement a newer one replaces: its kind, and a key within the kind (empty for the
/// kinds a processor has one of at a time; votes are kept per attempt and round, blame evidence
/// per accused and kind of evidence).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AnnouncementSlot {
    /// The message's kind.
    pub kind: &'static str,
    /// Key within the kind.
    pub key: Vec<u8>,
}

/// Where a processor's message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Gossiped on the coin's general topic and kept, to be announced again (for late
    /// subscribers and lost copies) until a newer one of the same slot replaces it.
    Announce {
        /// What it replaces.
        slot: AnnouncementSlot,
        /// The announcement.
        msg: GeneralMessage,
    },
    /// Gossiped once: a signing request or result is never announced again.
    Publish(GeneralMessage),
    /// To one validator over request-response.
    Direct {
        /// Recipient.
        to: ValidatorId,
        /// The request.
        request: DirectRequest,
        /// DKG traffic is kept in the outbox table until acknowledged; signing traffic is
        /// volatile, retried only while its ceremony can use it.
        durable: bool,
    },
    /// For this node's coordinator: ask these validators for their announcements.
    AskAnnouncements(AnnouncementsWanted),
}

/// Where a processor's message goes, and as what.
pub fn outbound(msg: ProcessorMessage) -> Outbound {
    let announce = |kind: &'static str, key: Vec<u8>, msg: GeneralMessage| Outbound::Announce {
        slot: AnnouncementSlot { kind, key },
        msg,
    };
    let direct = |to: &ValidatorId, request: DirectRequest, durable: bool| Outbound::Direct {
        to: to.clone(),
        request,
        durable,
    };
    match msg {
        ProcessorMessage::ProcessorPublicKey(k) => announce(
            "ProcessorPublicKey",
            Vec::new(),
            GeneralMessage::ProcessorPublicKey(k),
        ),
        ProcessorMessage::SignerReady(s) => {
            announce("SignerReady", Vec::new(), GeneralMessage::SignerReady(s))
        }
        ProcessorMessage::KeyGenCommitmentsDigest(d) => announce(
            "KeyGenCommitmentsDigest",
            Vec::new(),
            GeneralMessage::KeyGenCommitmentsDigest(d),
        ),
        ProcessorMessage::PublicAddressAvailable(a) => announce(
            "PublicAddressAvailable",
            Vec::new(),
            GeneralMessage::PublicAddressAvailable(a),
        ),
        ProcessorMessage::KeyGenExclusionVote(v) => {
            let key = [&v.context[..], &v.round.to_be_bytes()].concat();
            announce(
                "KeyGenExclusionVote",
                key,
                GeneralMessage::KeyGenExclusionVote(v),
            )
        }
        ProcessorMessage::KeyGenBlame(b) => {
            let kind = [u8::from(matches!(
                b.evidence,
                BlameEvidence::InvalidShare { .. }
            ))];
            let key = [&b.context[..], &kind, b.evidence.accused().as_bytes()].concat();
            announce("KeyGenBlame", key, GeneralMessage::KeyGenBlame(b))
        }
        // A complaint is repeated while its phase stalls; an answer grows with the complaints.
        ProcessorMessage::KeyGenComplaint(c) => {
            Outbound::Publish(GeneralMessage::KeyGenComplaint(c))
        }
        ProcessorMessage::KeyGenShareAnswer(a) => {
            let key = a.context.to_vec();
            announce(
                "KeyGenShareAnswer",
                key,
                GeneralMessage::KeyGenShareAnswer(a),
            )
        }
        ProcessorMessage::KeyGenRelayOut(m) => {
            direct(&m.to.clone(), DirectRequest::KeyGenRelayOut(m), false)
        }
        ProcessorMessage::SignRequest(r) => Outbound::Publish(GeneralMessage::SignRequest(r)),
        ProcessorMessage::SignApproval(a) => Outbound::Publish(GeneralMessage::SignApproval(a)),
        ProcessorMessage::SignatureAvailable(a) => {
            Outbound::Publish(GeneralMessage::SignatureAvailable(a))
        }
        ProcessorMessage::EncryptedPublicKeyOut(m) => {
            direct(&m.to.clone(), DirectRequest::EncryptedPublicKeyOut(m), true)
        }
        ProcessorMessage::EncryptedKeyGenCommitmentOut(m) => direct(
            &m.to.clone(),
            DirectRequest::EncryptedKeyGenCommitmentOut(m),
            true,
        ),
        ProcessorMessage::EncryptedKeyShareOut(m) => {
            direct(&m.to.clone(), DirectRequest::EncryptedKeyShareOut(m), true)
        }
        ProcessorMessage::EncryptedPreprocessOut(m) => direct(
            &m.to.clone(),
            DirectRequest::EncryptedPreprocessOut(m),
            false,
        ),
        ProcessorMessage::EncryptedSignatureShareOut(m) => direct(
            &m.to.clone(),
            DirectRequest::EncryptedSignatureShareOut(m),
            false,
        ),
        ProcessorMessage::SignPreprocessesOut(m) => {
            direct(&m.to.clone(), DirectRequest::SignPreprocessesOut(m), false)
        }
        ProcessorMessage::AnnouncementsWanted(w) => Outbound::AskAnnouncements(w),
    }
}

/// What a peer's message is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// For the coin's processor, stored in the inbound table before it is acknowledged and
    /// placed (DKG traffic: a restart replays it).
    Place(Coin, CoordinatorMessage),
    /// For the coin's processor, handed over without being stored (signing traffic: an attempt
    /// cut by a restart is abandoned, never replayed).
    Deliver(Coin, CoordinatorMessage),
    /// Steps 3-4 and 7-8: a peer's processor messaging key. The coordinator orders a peer's
    /// keys by `seq`, then places the current one as [`external_key`] says.
    ProcessorKey(ProcessorPublicKey),
    /// Step 2: recorded by the coordinator (the key must be the author's identity).
    CoordinatorKey(CoordinatorPublicKey),
    /// Step 5: recorded by the coordinator.
    SignerReady(SignerReady),
    /// Step 7: the peer's processor keys, one per coin.
    KeyList(ProcessorPublicKeyList),
    /// A peer's announcements, replayed to us directly: each is taken as if `from` gossiped it.
    AnnouncementReplay(AnnouncementReplay),
    /// A peer asks for our announcements on one coin.
    AnnouncementRequest(AnnouncementRequest),
}

/// What a general-partition message from validator `from`, on `coin`'s topic, is for.
pub fn general_in(from: ValidatorId, coin: Coin, msg: GeneralMessage) -> Inbound {
    let general = |msg| CoordinatorMessage::GeneralIn(GeneralIn { from, msg });
    match msg {
        GeneralMessage::CoordinatorPublicKey(k) => Inbound::CoordinatorKey(k),
        GeneralMessage::ProcessorPublicKey(k) => Inbound::ProcessorKey(k),
        GeneralMessage::SignerReady(s) => Inbound::SignerReady(s),
        msg @ (GeneralMessage::KeyGenCommitmentsDigest(_)
        | GeneralMessage::PublicAddressAvailable(_)
        | GeneralMessage::KeyGenExclusionVote(_)
        | GeneralMessage::KeyGenBlame(_)
        | GeneralMessage::KeyGenShareAnswer(_)) => Inbound::Place(coin, general(msg)),
        // A complaint asks for what is relayed now; a restart's stall complains afresh.
        msg @ GeneralMessage::KeyGenComplaint(_) => Inbound::Deliver(coin, general(msg)),
        msg @ (GeneralMessage::SignRequest(_)
        | GeneralMessage::SignatureAvailable(_)
        | GeneralMessage::SignApproval(_)) => Inbound::Deliver(coin, general(msg)),
    }
}

/// What a direct request from validator `from` is for. The `...Out` messages of a peer's
/// processor become our processor's `...In` messages (steps 11, 15 and 18, and signing's two
/// rounds); check [`addressee`] first.
pub fn direct_in(from: ValidatorId, req: DirectRequest) -> Inbound {
    match req {
        DirectRequest::ProcessorPublicKeyList(l) => Inbound::KeyList(l),
        DirectRequest::AnnouncementReplay(r) => Inbound::AnnouncementReplay(r),
        DirectRequest::AnnouncementRequest(r) => Inbound::AnnouncementRequest(r),
        DirectRequest::EncryptedPublicKeyOut(msg) => Inbound::Place(
            msg.coin,
            CoordinatorMessage::EncryptedPublicKeyIn(EncryptedPublicKeyIn { from, msg }),
        ),
        DirectRequest::EncryptedKeyGenCommitmentOut(msg) => Inbound::Place(
            msg.coin,
            CoordinatorMessage::EncryptedKeyGenCommitmentIn(EncryptedKeyGenCommitmentIn {
                from,
                msg,
            }),
        ),
        DirectRequest::EncryptedKeyShareOut(msg) => Inbound::Place(
            msg.coin,
            CoordinatorMessage::EncryptedKeyShareIn(EncryptedKeyShareIn { from, msg }),
        ),
        DirectRequest::KeyGenRelayOut(msg) => Inbound::Place(
            msg.coin,
            CoordinatorMessage::KeyGenRelayIn(KeyGenRelayIn { from, msg }),
        ),
        DirectRequest::EncryptedPreprocessOut(msg) => Inbound::Deliver(
            msg.request.coin,
            CoordinatorMessage::EncryptedPreprocessIn(EncryptedPreprocessIn { from, msg }),
        ),
        DirectRequest::EncryptedSignatureShareOut(msg) => Inbound::Deliver(
            msg.coin,
            CoordinatorMessage::EncryptedSignatureShareIn(EncryptedSignatureShareIn { from, msg }),
        ),
        DirectRequest::SignPreprocessesOut(msg) => Inbound::Deliver(
            msg.set.coin,
            CoordinatorMessage::SignPreprocessesIn(SignPreprocessesIn { from, msg }),
        ),
    }
}

/// The validator a direct request is addressed to, for those that name one (a sealed message
/// is only for the processor it was sealed to).
pub fn addressee(req: &DirectRequest) -> Option<&ValidatorId> {
    match req {
        DirectRequest::EncryptedPublicKeyOut(m) => Some(&m.to),
        DirectRequest::EncryptedKeyGenCommitmentOut(m) => Some(&m.to),
        DirectRequest::EncryptedKeyShareOut(m) => Some(&m.to),
        DirectRequest::EncryptedPreprocessOut(m) => Some(&m.to),
        DirectRequest::EncryptedSignatureShareOut(m) => Some(&m.to),
        DirectRequest::KeyGenRelayOut(m) => Some(&m.to),
        DirectRequest::SignPreprocessesOut(m) => Some(&m.to),
        DirectRequest::ProcessorPublicKeyList(_)
        | DirectRequest::AnnouncementReplay(_)
        | DirectRequest::AnnouncementRequest(_) => None,
    }
}

/// Step 8: a peer's current processor key, placed for the processor of its coin.
pub fn external_key(from: ValidatorId, key: ProcessorPublicKey) -> (Coin, CoordinatorMessage) {
    (
        key.coin,
        CoordinatorMessage::ExternalPublicKeyIn(ExternalPublicKeyIn { from, key }),
    )
}

/// The vault a signing message is for (by its DKG context): a node may hold several, the
/// current session's and retiring ones.
pub fn vault_of(msg: &CoordinatorMessage) -> Option<[u8; 32]> {
    match msg {
        CoordinatorMessage::GeneralIn(GeneralIn {
            msg: GeneralMessage::SignRequest(r),
            ..
        }) => Some(r.vault),
        CoordinatorMessage::GeneralIn(GeneralIn {
            msg: GeneralMessage::SignatureAvailable(a),
            ..
        }) => Some(a.vault),
        CoordinatorMessage::GeneralIn(GeneralIn {
            msg: GeneralMessage::SignApproval(a),
            ..
        }) => Some(a.vault),
        CoordinatorMessage::EncryptedPreprocessIn(m) => Some(m.msg.request.vault),
        CoordinatorMessage::EncryptedSignatureShareIn(m) => Some(m.msg.vault),
        CoordinatorMessage::SignPreprocessesIn(m) => Some(m.msg.set.vault),
        _ => None,
    }
}

/// One message handed to a recipient's processor by [`carry`].
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Recipient.
    pub to: ValidatorId,
    /// Its coin's processor.
    pub coin: Coin,
    /// The message.
    pub msg: CoordinatorMessage,
    /// Whether its coordinator would store it first (and replay it after a restart).
    pub stored: bool,
}

/// What [`carry`] did with one processor message.
#[derive(Clone, Debug, Default)]
pub struct Carried {
    /// What each recipient's processors get, in order.
    pub deliveries: Vec<Delivery>,
    /// Encoded bytes handed to the network: a pairwise message once per recipient, a gossip
    /// message once.
    pub bytes: u64,
    /// Messages handed to the network, counted the same way.
    pub messages: u64,
}

/// One message of `from`'s processor carried to the other `validators` the way their
/// coordinators carry it, every hop through its wire encoding. In one process nothing is lost,
/// so nothing is asked for again ([`Outbound::AskAnnouncements`] goes nowhere), and what only a
/// coordinator records (a peer's coordinator key, its `SignerReady`) reaches no processor.
pub fn carry(
    from: &ValidatorId,
    validators: &[ValidatorId],
    msg: ProcessorMessage,
) -> Result<Carried> {
    let mut carried = Carried::default();
    let take = |to: &ValidatorId, inbound: Inbound, c: &mut Carried| {
        let (coin, msg, stored) = match inbound {
            Inbound::Place(coin, msg) => (coin, msg, true),
            Inbound::Deliver(coin, msg) => (coin, msg, false),
            Inbound::ProcessorKey(key) => {
                let (coin, msg) = external_key(from.clone(), key);
                (coin, msg, true)
            }
            _ => return,
        };
        c.deliveries.push(Delivery {
            to: to.clone(),
            coin,
            msg,
            stored,
        });
    };
    match outbound(msg) {
        Outbound::Announce { msg, .. } | Outbound::Publish(msg) => {
            let coin = msg.coin();
            let bytes = messages::encode(&msg)?;
            carried.bytes += bytes.len() as u64;
            carried.messages += 1;
            for to in validators.iter().filter(|v| *v != from) {
                let msg: GeneralMessage = messages::decode(&bytes)?;
                let Some(coin) = coin.or(msg.coin()) else {
                    continue;
                };
                take(to, general_in(from.clone(), coin, msg), &mut carried);
            }
        }
        Outbound::Direct { to, request, .. } => {
            let bytes = messages::encode(&request)?;
            carried.bytes += bytes.len() as u64;
            carried.messages += 1;
            let request: DirectRequest = messages::decode(&bytes)?;
            take(&to, direct_in(from.clone(), request), &mut carried);
        }
        Outbound::AskAnnouncements(_) => {}
    }
    Ok(carried)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ValidatorId {
        ValidatorId::from_bytes(&[b; 8]).unwrap()
    }

    #[test]
    fn every_processor_message_goes_where_its_kind_says() {
        let vote = KeyGenExclusionVote {
            coin: Coin::Btc,
            context: [1; 32],
            attempt: 0,
            round: 2,
            exclude: vec![id(3)],
            reasons: vec![ExclusionReason::SilentShares],
            signature: Vec::new(),
        };
        match outbound(ProcessorMessage::KeyGenExclusionVote(vote)) {
            Outbound::Announce { slot, .. } => {
                assert_eq!(slot.kind, "KeyGenExclusionVote");
                assert_eq!(slot.key, [&[1u8; 32][..], &2u32.to_be_bytes()].concat());
            }
            other => panic!("{other:?}"),
        }
        let share = EncryptedKeyShareOut {
            coin: Coin::Sol,
            to: id(2),
            context: [0; 32],
            sealed: vec![1],
        };
        assert!(matches!(
            outbound(ProcessorMessage::EncryptedKeyShareOut(share)),
            Outbound::Direct { durable: true, .. }
        ));
    }

    #[test]
    fn a_forwarded_out_message_becomes_the_recipients_in_message() {
        let (a, b, c) = (id(1), id(2), id(3));
        let out = EncryptedKeyGenCommitmentOut {
            coin: Coin::Eth,
            to: b.clone(),
            context: [4; 32],
            sealed: vec![5; 10],
        };
        let carried = carry(
            &a,
            &[a.clone(), b.clone(), c.clone()],
            ProcessorMessage::EncryptedKeyGenCommitmentOut(out.clone()),
        )
        .unwrap();
        assert_eq!(carried.messages, 1);
        assert_eq!(carried.deliveries.len(), 1);
        let d = &carried.deliveries[0];
        assert_eq!((&d.to, d.coin, d.stored), (&b, Coin::Eth, true));
        assert_eq!(
            d.msg,
            CoordinatorMessage::EncryptedKeyGenCommitmentIn(EncryptedKeyGenCommitmentIn {
                from: a,
                msg: out
            })
        );
    }

    #[test]
    fn gossip_reaches_everyone_else_and_keys_become_external_keys() {
        let (a, b, c) = (id(1), id(2), id(3));
        let key = ProcessorPublicKey {
            coin: Coin::Btc,
            pubkey: [7; 32],
            seq: 1,
        };
        let carried = carry(
            &b,
            &[a.clone(), b.clone(), c.clone()],
            ProcessorMessage::ProcessorPublicKey(key.clone()),
        )
        .unwrap();
        let to: Vec<_> = carried.deliveries.iter().map(|d| d.to.clone()).collect();
        assert_eq!(to, vec![a, c]);
        assert!(carried.deliveries.iter().all(|d| d.msg
            == CoordinatorMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
                from: b.clone(),
                key: key.clone()
            })));
        // SignerReady is the coordinator's, not the processors'.
        let ready = carry(
            &b,
            &[b.clone(), id(9)],
            ProcessorMessage::SignerReady(SignerReady {
                coin: Coin::Btc,
                pubkey: [0; 32],
            }),
        )
        .unwrap();
        assert!(ready.deliveries.is_empty());
        assert_eq!(ready.messages, 1);
    }
}
