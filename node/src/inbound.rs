//! The inbound table's slots: where a peer's stored message goes, and what storing it does to
//! its slot. One slot per (coin, kind, sender, context) holds one authenticated sender's
//! messages only, so a sender can fill its own slots and nobody else's. Pure: the caller reads
//! the slot and writes what [`plan`] says.

use protocol::{messages::CoordinatorMessage, Coin};
use storage::{InboundKey, InboundKind};

/// Most distinct messages kept in one inbound slot (a sender re-sealing after a restart, a
/// rotated key, or junk); past it the slot's oldest entry makes room.
pub const MAX_SLOT_ENTRIES: usize = 8;

/// How a slot keeps messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPolicy {
    /// One entry, the latest wins (a key whose `seq` the coordinator already ordered).
    Replace,
    /// Every distinct message, in arrival order, the latest [`MAX_SLOT_ENTRIES`]: the coordinator
    /// cannot read sealed payloads, so the processor decides which is valid and the ones it
    /// rejects are deleted.
    Log,
}

/// The inbound-table slot of an `...In` message (with `seq` 0).
pub fn slot_of(coin: Coin, msg: &CoordinatorMessage) -> Option<(InboundKey, SlotPolicy)> {
    use protocol::messages::GeneralMessage as G;
    let (kind, from, context, policy) = match msg {
        CoordinatorMessage::ExternalPublicKeyIn(m) => (
            InboundKind::ExternalPublicKey,
            &m.from,
            [0; 32],
            SlotPolicy::Replace,
        ),
        CoordinatorMessage::EncryptedPublicKeyIn(m) => (
            InboundKind::EncryptedPublicKey,
            &m.from,
            [0; 32],
            SlotPolicy::Log,
        ),
        CoordinatorMessage::EncryptedKeyGenCommitmentIn(m) => (
            InboundKind::Commitment,
            &m.from,
            m.msg.context,
            SlotPolicy::Log,
        ),
        CoordinatorMessage::EncryptedKeyShareIn(m) => {
            (InboundKind::Share, &m.from, m.msg.context, SlotPolicy::Log)
        }
        CoordinatorMessage::KeyGenRelayIn(m) => {
            (InboundKind::Relay, &m.from, m.msg.context, SlotPolicy::Log)
        }
        CoordinatorMessage::GeneralIn(g) => match &g.msg {
            G::KeyGenCommitmentsDigest(d) => {
                (InboundKind::Digest, &g.from, d.context, SlotPolicy::Log)
            }
            G::PublicAddressAvailable(a) => {
                (InboundKind::Address, &g.from, a.context, SlotPolicy::Log)
            }
            G::KeyGenExclusionVote(v) => (InboundKind::Vote, &g.from, v.context, SlotPolicy::Log),
            G::KeyGenBlame(b) => (InboundKind::Blame, &g.from, b.context, SlotPolicy::Log),
            G::KeyGenShareAnswer(a) => (
                InboundKind::ShareAnswer,
                &g.from,
                a.context,
                SlotPolicy::Log,
            ),
            _ => return None,
        },
        _ => return None,
    };
    Some((
        InboundKey {
            coin,
            kind,
            from: from.clone(),
            context,
            seq: 0,
        },
        policy,
    ))
}

/// What storing a message does to its slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// The slot already holds this very message: nothing to store (answered `Duplicate`).
    Duplicate,
    /// Store it, deleting these entries first (the oldest ones past [`MAX_SLOT_ENTRIES`]).
    Store {
        /// Entries to delete.
        evict: Vec<InboundKey>,
    },
}

/// What storing `msg` does to a slot of `policy` that holds `entries` (in arrival order; for a
/// `Replace` slot, its one entry if any, which the new one overwrites).
pub fn plan(
    policy: SlotPolicy,
    entries: &[(InboundKey, CoordinatorMessage)],
    msg: &CoordinatorMessage,
) -> Plan {
    if entries.iter().any(|(_, m)| m == msg) {
        return Plan::Duplicate;
    }
    let evict = match policy {
        SlotPolicy::Replace => Vec::new(),
        SlotPolicy::Log => {
            let excess = (entries.len() + 1).saturating_sub(MAX_SLOT_ENTRIES);
            entries
                .iter()
                .take(excess)
                .map(|(k, _)| k.clone())
                .collect()
        }
    };
    Plan::Store { evict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{
        messages::{
            EncryptedKeyShareIn, EncryptedKeyShareOut, ExternalPublicKeyIn, ProcessorPublicKey,
        },
        ValidatorId,
    };

    fn share(from: &ValidatorId, sealed: u8) -> CoordinatorMessage {
        CoordinatorMessage::EncryptedKeyShareIn(EncryptedKeyShareIn {
            from: from.clone(),
            msg: EncryptedKeyShareOut {
                coin: Coin::Btc,
                to: from.clone(),
                context: [3; 32],
                sealed: vec![sealed],
            },
        })
    }

    #[test]
    fn a_log_slot_keeps_distinct_messages_and_drops_its_oldest_past_the_bound() {
        let from = ValidatorId::from_bytes(&[1; 8]).unwrap();
        let (slot, policy) = slot_of(Coin::Btc, &share(&from, 0)).unwrap();
        assert_eq!(policy, SlotPolicy::Log);
        assert_eq!((slot.kind, slot.context), (InboundKind::Share, [3; 32]));
        let mut entries: Vec<(InboundKey, CoordinatorMessage)> = Vec::new();
        for i in 0..=MAX_SLOT_ENTRIES as u8 {
            let m = share(&from, i);
            let expected = if entries.len() < MAX_SLOT_ENTRIES {
                Plan::Store { evict: Vec::new() }
            } else {
                Plan::Store {
                    evict: vec![entries[0].0.clone()],
                }
            };
            assert_eq!(plan(policy, &entries, &m), expected);
            if let Plan::Store { evict } = expected {
                entries.retain(|(k, _)| !evict.contains(k));
            }
            let key = InboundKey {
                seq: u64::from(i) + 1,
                ..slot.clone()
            };
            entries.push((key, m));
        }
        assert_eq!(plan(policy, &entries, &share(&from, 3)), Plan::Duplicate);
    }

    #[test]
    fn a_key_replaces_the_slots_one_entry_and_signing_traffic_has_no_slot() {
        let from = ValidatorId::from_bytes(&[2; 8]).unwrap();
        let key = |seq| {
            CoordinatorMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
                from: from.clone(),
                key: ProcessorPublicKey {
                    coin: Coin::Eth,
                    pubkey: [9; 32],
                    seq,
                },
            })
        };
        let (slot, policy) = slot_of(Coin::Eth, &key(0)).unwrap();
        assert_eq!(policy, SlotPolicy::Replace);
        let entries = vec![(slot, key(0))];
        assert_eq!(plan(policy, &entries, &key(0)), Plan::Duplicate);
        assert_eq!(
            plan(policy, &entries, &key(1)),
            Plan::Store { evict: Vec::new() }
        );
        let request =
            CoordinatorMessage::SignatureRequested(protocol::messages::SignatureRequested {
                reference: None,
                id: [0; 32],
                messages: Vec::new(),
            });
        assert!(slot_of(Coin::Eth, &request).is_none());
    }
}
