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
use storage::InboundKey;

use crate::inbound::SlotPolicy;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Default capacity of each direction of a topic.
pub const BUS_CAPACITY: usize = 4096;

/// What became of a message placed on a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// In the processor's queue.
    Queued,
    /// The queue was full. A stored message waits in the inbound table and reaches the
    /// processor once there is room ([`Topic::drain`]); a volatile one was not taken.
    Full,
    /// The processor has stopped.
    Gone,
}

/// Stored messages that found the processor's queue full: they wait in the inbound table, and
/// everything stored after them waits there too, so the processor still gets them in arrival
/// order.
#[derive(Debug, Default)]
struct Backlog {
    /// Arrival range (`InboundKey::seq`) of the `Log` entries that wait.
    seqs: Option<(u64, u64)>,
    /// The latest message of each `Replace` slot that waits (one per validator and kind).
    latest: BTreeMap<Vec<u8>, CoordinatorMessage>,
    /// How many messages wait.
    count: u64,
    /// Whether this backlog was reported ([`Topic::new_backlog`]).
    reported: bool,
}

impl Backlog {
    fn add(&mut self, msg: CoordinatorMessage, key: &InboundKey, policy: SlotPolicy) {
        self.count += 1;
        match policy {
            SlotPolicy::Replace => {
                self.latest.insert(key.slot_prefix(), msg);
            }
            SlotPolicy::Log => {
                let (from, _) = self.seqs.unwrap_or((key.seq, key.seq));
                self.seqs = Some((from.min(key.seq), key.seq));
            }
        }
    }
}

/// The coordinator's end of one `{IDENTITY}{COIN}` topic. Nothing here waits: a full queue is
/// reported to the caller, never a stall of the event loop (which also serves every other coin,
/// gossip, ping and request-response).
pub struct Topic {
    name: String,
    coin: Coin,
    to_processor: mpsc::Sender<ProcessorCommand>,
    backlog: Option<Backlog>,
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
            backlog: None,
        }
    }

    /// The topic's name, `{IDENTITY}{COIN}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many stored messages wait in the inbound table for room in the queue, once per
    /// backlog (`None` when there is none, or it was reported already).
    pub fn new_backlog(&mut self) -> Option<u64> {
        let b = self.backlog.as_mut().filter(|b| !b.reported)?;
        b.reported = true;
        Some(b.count)
    }

    /// Whether the queue can take one more command now.
    pub fn has_room(&self) -> bool {
        self.to_processor.capacity() > 0
    }

    /// Place a message that is already stored in the inbound table under `key` (with `policy`).
    /// [`Placed::Full`] means it waits there until [`Topic::drain`] finds room.
    pub fn place_stored(
        &mut self,
        msg: CoordinatorMessage,
        key: &InboundKey,
        policy: SlotPolicy,
    ) -> Placed {
        debug!(topic = %self.name, coin = %self.coin, partition = ?msg.partition(), kind = msg.kind(), "placed");
        // Behind a backlog, a new message waits too: the processor gets them in arrival order.
        let msg = match self.backlog {
            Some(_) => msg,
            None => match self.send(ProcessorCommand::Input(Box::new(msg))) {
                Ok(()) => return Placed::Queued,
                Err(mpsc::error::TrySendError::Full(ProcessorCommand::Input(msg))) => *msg,
                Err(_) => return Placed::Gone,
            },
        };
        self.backlog
            .get_or_insert_with(Backlog::default)
            .add(msg, key, policy);
        Placed::Full
    }

    /// Hand a message that is not stored to the processor (signing traffic, this node's own
    /// requests): queued, or not taken when the queue is full.
    pub fn place_volatile(&self, msg: CoordinatorMessage) -> Placed {
        debug!(topic = %self.name, coin = %self.coin, partition = ?msg.partition(), kind = msg.kind(), "delivered");
        match self.send(ProcessorCommand::Input(Box::new(msg))) {
            Ok(()) => Placed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Placed::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Placed::Gone,
        }
    }

    /// Once the queue has room, hand the processor what waited in the inbound table (one
    /// command: the processor reads it from there). Returns how many messages that was.
    pub fn drain(&mut self) -> Option<u64> {
        let b = self.backlog.as_ref()?;
        if !self.has_room() {
            return None;
        }
        let count = b.count;
        let b = self.backlog.take()?;
        let cmd = ProcessorCommand::Replay {
            latest: b.latest.into_values().collect(),
            seqs: b.seqs,
        };
        if let Err(e) = self.to_processor.try_send(cmd) {
            // Only we send on this channel, and it had room: the processor has stopped.
            debug!(topic = %self.name, error = %e, "backlog not handed over");
        }
        Some(count)
    }

    fn send(
        &self,
        cmd: ProcessorCommand,
    ) -> Result<(), mpsc::error::TrySendError<ProcessorCommand>> {
        self.to_processor.try_send(cmd)
    }

    /// A clock tick; dropped when the processor is busy (the next one carries the time).
    pub fn tick(&self, now_ms: u64, reachable: std::collections::BTreeSet<ValidatorId>) {
        let _ = self.send(ProcessorCommand::Tick { now_ms, reachable });
    }

    /// Ask the processor to rotate its messaging key (step 4); refused when its queue is full.
    pub fn rotate(&self, reply: oneshot::Sender<Result<([u8; 32], u64), String>>) -> Placed {
        match self.send(ProcessorCommand::Rotate(reply)) {
            Ok(()) => Placed::Queued,
            Err(mpsc::error::TrySendError::Full(ProcessorCommand::Rotate(reply))) => {
                let _ = reply.send(Err(format!(
                    "the {} processor is busy; try again",
                    self.coin
                )));
                Placed::Full
            }
            Err(_) => Placed::Gone,
        }
    }

    /// An operator's approval of a signing request; the processor answers `reply` once it is
    /// stored. A full queue or a stopped processor is answered here.
    pub fn approve(
        &self,
        msg: protocol::messages::SignatureRequested,
        reply: oneshot::Sender<Result<[u8; 32], crate::core::SignRefusal>>,
    ) -> Placed {
        use crate::core::SignRefusal;
        match self.send(ProcessorCommand::Approve { msg, reply }) {
            Ok(()) => Placed::Queued,
            Err(mpsc::error::TrySendError::Full(ProcessorCommand::Approve { reply, .. })) => {
                let _ = reply.send(Err(SignRefusal::Busy(self.coin)));
                Placed::Full
            }
            Err(e) => {
                if let ProcessorCommand::Approve { reply, .. } = e.into_inner() {
                    let _ = reply.send(Err(SignRefusal::Stopped(self.coin)));
                }
                Placed::Gone
            }
        }
    }

    /// Test-only: the processor stops taking commands while `flag` is set.
    #[cfg(feature = "fault-injection")]
    pub fn stall(&self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Placed {
        match self.send(ProcessorCommand::Stall(flag)) {
            Ok(()) => Placed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Placed::Full,
            Err(_) => Placed::Gone,
        }
    }
}

/// What the coordinator sends a processor.
pub enum ProcessorCommand {
    /// An `...In` message (a stored one is already in the inbound table).
    Input(Box<CoordinatorMessage>),
    /// Stored messages that waited in the inbound table for room in the queue: the latest
    /// message of some `Replace` slots, and the `Log` entries of this coin that arrived in
    /// `seqs` (inclusive), in arrival order.
    Replay {
        /// Latest messages of `Replace` slots.
        latest: Vec<CoordinatorMessage>,
        /// Arrival range of the `Log` entries.
        seqs: Option<(u64, u64)>,
    },
    /// An operator's approval of a signing request (`POST /sign`); replies with the request
    /// id once the approval is stored, or why it was refused.
    Approve {
        /// The approval.
        msg: protocol::messages::SignatureRequested,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<[u8; 32], crate::core::SignRefusal>>,
    },
    /// Step 4: rotate the messaging key; replies with the new public key and seq.
    Rotate(oneshot::Sender<Result<([u8; 32], u64), String>>),
    /// Time passes (monotonic milliseconds); `reachable` are the connected validators.
    Tick {
        /// Now.
        now_ms: u64,
        /// Connected validators.
        reachable: std::collections::BTreeSet<ValidatorId>,
    },
    /// Test-only: take no command while the flag is set.
    #[cfg(feature = "fault-injection")]
    Stall(std::sync::Arc<std::sync::atomic::AtomicBool>),
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
    /// Messages rejected, per validator at fault.
    pub rejections: BTreeMap<ValidatorId, crate::processor_task::PeerRejections>,
}
