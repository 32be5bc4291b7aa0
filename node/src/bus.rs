//! The local bus between the coordinator and the per-coin processors.
//!
//! Each coin has a topic named `{IDENTITY}{COIN}` with a general and an encrypted partition (the
//! partition of a message is given by its `partition()`). Processors emit
//! [`ProcessorMessage`]s (the `...Out` messages); the coordinator places
//! [`CoordinatorMessage`]s (the `...In` ones). Channels are bounded.

use std::collections::BTreeMap;

use protocol::{
    messages::{bus_topic, CoordinatorMessage, ProcessorMessage},
    processor::PeerView,
    vault::VaultRecord,
    Coin, ValidatorId,
};
use storage::{InboundKey, InboundKind};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Capacity of each direction of a topic.
pub const BUS_CAPACITY: usize = 4096;

/// The coordinator's end of one `{IDENTITY}{COIN}` topic.
pub struct Topic {
    name: String,
    coin: Coin,
    to_processor: mpsc::Sender<ProcessorCommand>,
}

/// A vault of an earlier validator-set session, still signing: its processor's topic and
/// snapshot.
pub struct RetiringVault {
    /// The vault.
    pub record: VaultRecord,
    /// Its processor's topic.
    pub topic: Topic,
    /// Its processor's snapshot (one entry, under its coin).
    pub snapshots: crate::processor_task::Snapshots,
}

/// The processor behind a topic has stopped.
#[derive(Debug)]
pub struct ProcessorGone;

impl Topic {
    /// A topic of `identity` for `coin`, whose processor reads `to_processor`.
    pub fn new(
        identity: &ValidatorId,
        coin: Coin,
        to_processor: mpsc::Sender<ProcessorCommand>,
    ) -> Topic {
        Topic {
            name: bus_topic(identity, coin),
            coin,
            to_processor,
        }
    }

    /// The topic's name, `{IDENTITY}{COIN}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Place an `...In` message on the topic (on the message's partition). Waits while the
    /// processor's queue is full.
    pub async fn place(&self, msg: CoordinatorMessage) -> Result<(), ProcessorGone> {
        debug!(topic = %self.name, coin = %self.coin, partition = ?msg.partition(), kind = msg.kind(), "placed");
        self.to_processor
            .send(ProcessorCommand::Input(Box::new(msg)))
            .await
            .map_err(|_| ProcessorGone)
    }

    /// A clock tick; dropped when the processor is busy (the next one carries the time).
    pub fn tick(&self, now_ms: u64, reachable: std::collections::BTreeSet<ValidatorId>) {
        let _ = self
            .to_processor
            .try_send(ProcessorCommand::Tick { now_ms, reachable });
    }

    /// Ask the processor to rotate its messaging key (step 4).
    pub async fn rotate(
        &self,
        reply: oneshot::Sender<Result<([u8; 32], u64), String>>,
    ) -> Result<(), ProcessorGone> {
        self.to_processor
            .send(ProcessorCommand::Rotate(reply))
            .await
            .map_err(|_| ProcessorGone)
    }
}

/// What the coordinator sends a processor.
pub enum ProcessorCommand {
    /// An `...In` message (already persisted in the inbound table).
    Input(Box<CoordinatorMessage>),
    /// Step 4: rotate the messaging key; replies with the new public key and seq.
    Rotate(oneshot::Sender<Result<([u8; 32], u64), String>>),
    /// Time passes (monotonic milliseconds); `reachable` are the connected validators.
    Tick {
        /// Now.
        now_ms: u64,
        /// Connected validators.
        reachable: std::collections::BTreeSet<ValidatorId>,
    },
}

/// What a processor sends the coordinator.
pub enum ProcessorEvent {
    /// An `...Out` message on the coin's topic (its state is already persisted).
    Out(Coin, Box<ProcessorMessage>),
    /// Storage failed: the node must stop rather than send unpersisted state.
    Fatal(String),
}

/// What the processor thread publishes for status and metrics.
#[derive(Clone, Debug)]
pub struct ProcessorSnapshot {
    /// DKG phase.
    pub phase: protocol::processor::Phase,
    /// (received, expected).
    pub progress: (usize, usize),
    /// Vault, once computed.
    pub vault: Option<VaultRecord>,
    /// Our messaging key (public, seq).
    pub messaging: ([u8; 32], u64),
    /// Peers as the processor knows them.
    pub peers: BTreeMap<ValidatorId, PeerView>,
    /// Signing ceremonies and cheater reports.
    pub signing: protocol::signing::SigningStatus,
    /// Whether the vault can sign.
    pub can_sign: bool,
    /// DKG attempt and its participants.
    pub attempt: u32,
    /// Participants of the attempt.
    pub participants: Vec<ValidatorId>,
    /// Left out of earlier attempts.
    pub excluded: Vec<protocol::vault::Exclusion>,
    /// Exclusion votes of the current attempt.
    pub votes: Vec<protocol::attempts::VoteView>,
}

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
pub fn inbound_slot(coin: Coin, msg: &CoordinatorMessage) -> Option<(InboundKey, SlotPolicy)> {
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
        CoordinatorMessage::GeneralIn(g) => match &g.msg {
            G::KeyGenCommitmentsDigest(d) => {
                (InboundKind::Digest, &g.from, d.context, SlotPolicy::Log)
            }
            G::PublicAddressAvailable(a) => {
                (InboundKind::Address, &g.from, a.context, SlotPolicy::Log)
            }
            G::KeyGenExclusionVote(v) => (InboundKind::Vote, &g.from, v.context, SlotPolicy::Log),
            G::KeyGenBlame(b) => (InboundKind::Blame, &g.from, b.context, SlotPolicy::Log),
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
