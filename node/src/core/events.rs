//! The core's vocabulary: the [`Event`]s it is handed, the [`Action`]s it returns, and how the
//! driver folds what a placement became into the answer the core left for it.

use std::{collections::BTreeSet, time::Duration};

use libp2p::{
    gossipsub::{IdentTopic, MessageAcceptance, MessageId, TopicHash},
    swarm::ConnectionId,
    Multiaddr, PeerId,
};
use protocol::{
    messages::{CoordinatorMessage, DirectRequest, DirectResponse, ProcessorMessage},
    Coin, ValidatorId,
};
use storage::{Batch, OutboxKey};

use super::{Rejection, SignRefusal, SignRequest, TargetView};

/// The driver's handles the core passes through without looking inside: the channel a direct
/// request is answered on, and the reply of a `POST /sign`.
pub trait Io {
    /// Answers one inbound request.
    type Channel;
    /// Answers one signature request.
    type SignReply;
}

/// Where a message for a processor goes: the current session's processor of its coin, or the
/// retiring vault at this index of [`CoreParts::retiring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The current session's processor of the coin.
    Current(Coin),
    /// A retiring vault's processor.
    Retiring(usize),
}

/// What happened.
pub enum Event<I: Io> {
    /// The node starts: the requests the outbox table held.
    Start {
        /// The stored outbox.
        outbox: Vec<(OutboxKey, DirectRequest)>,
    },
    /// 250 ms passed.
    Tick {
        /// Whether every coin's vault is active (announcements slow down).
        all_active: bool,
    },
    /// A connection to `peer` was established.
    Connected {
        /// Peer.
        peer: PeerId,
        /// Its connection.
        connection: ConnectionId,
        /// Its remote address.
        addr: Multiaddr,
        /// Whether it is the first connection to that peer.
        first: bool,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// Peer.
        peer: PeerId,
    },
    /// Identify told us a peer's listen addresses.
    /// A Kademlia lookup found these peers (their addresses are in Kademlia's table).
    Discovered {
        /// Peers found.
        peers: Vec<PeerId>,
    },
    /// A peer told us about itself (identify).
    Identified {
        /// Peer.
        peer: PeerId,
        /// The addresses it advertises.
        addrs: Vec<Multiaddr>,
        /// The software it says it runs (identify's agent version).
        agent: String,
    },
    /// A ping came back (`rtt`) or failed (`None`).
    Ping {
        /// Peer.
        peer: PeerId,
        /// The connection pinged.
        connection: ConnectionId,
        /// Round trip.
        rtt: Option<Duration>,
    },
    /// A gossip message, to validate.
    Gossip {
        /// Who forwarded it.
        source: PeerId,
        /// Its gossipsub id.
        id: MessageId,
        /// Its signed author.
        author: Option<PeerId>,
        /// Its author's signed sequence number.
        seq: Option<u64>,
        /// Its topic.
        topic: TopicHash,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A peer subscribed to a topic.
    Subscribed {
        /// Peer.
        peer: PeerId,
        /// Topic.
        topic: TopicHash,
    },
    /// Gossip to a slow peer was abandoned.
    SlowPeer {
        /// Peer.
        peer: PeerId,
        /// Messages abandoned.
        dropped: usize,
    },
    /// A direct request from `peer`.
    Request {
        /// Sender.
        peer: PeerId,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Where to answer.
        channel: I::Channel,
    },
    /// The answer to our request `token` (see [`Action::Send`]), or its failure (`Err`).
    Response {
        /// The request's token.
        token: u64,
        /// Recipient.
        peer: PeerId,
        /// The answer's bytes, or why there is none.
        answer: Result<Vec<u8>, String>,
    },
    /// A processor's output.
    Processor {
        /// Its coin.
        coin: Coin,
        /// The message (its state is already persisted).
        msg: ProcessorMessage,
    },
    /// `POST /sign`.
    Sign {
        /// The request.
        request: SignRequest,
        /// The processors able to take it: the coin's current and retiring ones.
        targets: Vec<TargetView>,
        /// Where to answer.
        reply: I::SignReply,
    },
    /// Announce everything again at the next tick (a healed link hears what it missed).
    ReAnnounce,
}

/// What the driver is to do, in the order given. A failed durable [`Action::Persist`] stops the
/// node before anything after it is done (persist before send).
pub enum Action<I: Io> {
    /// Write `batch`; `durable` syncs it before the next action.
    Persist {
        /// What to write.
        batch: Batch,
        /// Whether to sync.
        durable: bool,
    },
    /// Gossip `bytes` on `topic`.
    Publish {
        /// Topic.
        topic: IdentTopic,
        /// Kind, for metrics.
        kind: &'static str,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// Send a request; its answer comes back as [`Event::Response`] with `token`.
    Send {
        /// Recipient.
        peer: PeerId,
        /// Token of the request.
        token: u64,
        /// Kind, for metrics.
        kind: &'static str,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// Store an `...In` message (unless it duplicates what its slot holds), then hand it to
    /// each target's processor (see `inbound.rs` for the slots).
    Place {
        /// Coin.
        coin: Coin,
        /// Processors to hand it to.
        targets: Vec<Target>,
        /// The message.
        msg: CoordinatorMessage,
    },
    /// Hand a signing message to a processor, not stored (a full queue turns it away).
    Deliver {
        /// Coin.
        coin: Coin,
        /// The processor.
        target: Target,
        /// The message.
        msg: CoordinatorMessage,
    },
    /// Answer a request, folding in what the placements before it (since the last answer)
    /// became ([`Answer::finish`]).
    Answer {
        /// Where.
        channel: I::Channel,
        /// Sender, for logs.
        peer: PeerId,
        /// The answer, before placements.
        answer: Answer,
    },
    /// Report a gossip message's validation, folding in its placements ([`Verdict::finish`]).
    Report {
        /// The message.
        id: MessageId,
        /// Who forwarded it.
        source: PeerId,
        /// The verdict, before placements.
        verdict: Verdict,
    },
    /// Answer `POST /sign`, folding in the placement before it ([`admission::finish`]).
    SignReply {
        /// Where.
        reply: I::SignReply,
        /// The outcome.
        result: Result<[u8; 32], SignRefusal>,
    },
    /// Hand this operator's approval of a signing request to the vault's processor, which
    /// persists and announces it, then answers `reply` (the driver answers it when the
    /// processor's queue is full or gone).
    Approve {
        /// Coin.
        coin: Coin,
        /// The processor.
        target: Target,
        /// The approval.
        msg: protocol::messages::SignatureRequested,
        /// Where the answer goes.
        reply: I::SignReply,
    },
    /// Dial a validator by peer id.
    Dial(PeerId),
    /// Dial an address (the bootstrap list).
    DialAddr(Multiaddr),
    /// Learn an address of a peer (swarm and Kademlia).
    AddAddress {
        /// Peer.
        peer: PeerId,
        /// Address.
        addr: Multiaddr,
    },
    /// Ask Kademlia to look for peers.
    KadBootstrap,
    /// Close a connection.
    Close(ConnectionId),
    /// Tell every processor which validators it can reach now.
    TickProcessors {
        /// Connected validators.
        reachable: BTreeSet<ValidatorId>,
    },
}

/// What a placement became (the driver reports it to [`Answer::finish`] and
/// [`Verdict::finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Stored (if it is stored at all) and queued, or waiting in the inbound table.
    Taken,
    /// Its slot held the same message already.
    Duplicate,
    /// A volatile message found the queue full and was not taken.
    Busy(Coin),
    /// The processor has stopped.
    Gone(Coin),
}

/// The placements of one inbound message, as the driver folds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placements {
    outcomes: Vec<Placement>,
}

impl Placements {
    /// Record one.
    pub fn add(&mut self, p: Placement) {
        self.outcomes.push(p);
    }

    pub(super) fn gone(&self) -> Option<Coin> {
        self.outcomes.iter().find_map(|p| match p {
            Placement::Gone(c) => Some(*c),
            _ => None,
        })
    }

    pub(super) fn busy(&self) -> Option<Coin> {
        self.outcomes.iter().find_map(|p| match p {
            Placement::Busy(c) => Some(*c),
            _ => None,
        })
    }
}

/// The answer to a direct request, before its placements are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted, whatever the placements were (unless a processor was gone or busy).
    Accepted,
    /// `Duplicate` if its one placement was, `Accepted` otherwise.
    ByPlacement,
    /// Already had (or already answered).
    Duplicate,
    /// Rejected (already logged, naming the sender).
    Rejected(Rejection),
}

impl Answer {
    /// The response to send, or `None` to leave the request unanswered (a processor queue was
    /// full: the sender retries later).
    pub fn finish(self, placed: &Placements) -> Option<DirectResponse> {
        let rejection = match &self {
            Answer::Rejected(r) => Some(r.clone()),
            _ if placed.gone().is_some() => Some(Rejection::ProcessorStopped),
            _ => None,
        };
        if let Some(r) = rejection {
            return Some(DirectResponse::Rejected {
                reason: r.to_string(),
            });
        }
        if placed.busy().is_some() {
            return None;
        }
        match self {
            Answer::ByPlacement if placed.outcomes == [Placement::Duplicate] => {
                Some(DirectResponse::Duplicate)
            }
            Answer::Duplicate => Some(DirectResponse::Duplicate),
            _ => Some(DirectResponse::Accepted),
        }
    }
}

/// The validation of a gossip message, before its placements are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forwarded.
    Accept,
    /// Invalid: not forwarded, held against its sender (already logged).
    Reject,
    /// Neither (rate-limited, or a link fault): dropped.
    Ignore,
}

impl Verdict {
    /// The acceptance to report. A processor that is gone or busy is not the sender's fault:
    /// the message is dropped without judging it.
    pub fn finish(self, placed: &Placements) -> MessageAcceptance {
        match self {
            Verdict::Accept if placed.gone().is_some() || placed.busy().is_some() => {
                MessageAcceptance::Ignore
            }
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        }
    }
}
