//! Why a peer's message was rejected. Logged with the peer that sent it, answered to it
//! (`DirectResponse::Rejected`) and counted by [`Rejection::label`].

use protocol::{messages::MAX_REPLAY_MESSAGES, Coin, ValidatorId};

/// A message a peer sent that we do not take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Gossip without a signed author.
    #[error("unsigned message")]
    Unsigned,
    /// The author or sender is not a validator of the network.
    #[error("not a validator")]
    NotValidator,
    /// Gossip signed with our own key, relayed back.
    #[error("message claims to be ours")]
    ClaimsToBeOurs,
    /// Gossip on a topic that is not one of our coins'.
    #[error("unknown topic")]
    UnknownTopic,
    /// The bytes do not decode.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A message naming one coin on another coin's topic.
    #[error("{kind} message on the {coin} topic")]
    WrongTopic {
        /// Its kind.
        kind: &'static str,
        /// The topic's coin.
        coin: Coin,
    },
    /// A coordinator key that is not the author's own.
    #[error("coordinator key does not match the author")]
    ForeignCoordinatorKey,
    /// Two different processor keys under one sequence number.
    #[error("two {coin} processor keys with seq {seq}")]
    ConflictingProcessorKey {
        /// Coin.
        coin: Coin,
        /// Sequence number.
        seq: u64,
    },
    /// A coin without a vault in this network.
    #[error("{0} has no vault in this network")]
    UnknownCoin(Coin),
    /// A message the inbound table has no slot for.
    #[error("{0} has no inbound slot")]
    NoInboundSlot(&'static str),
    /// A direct-only message gossiped.
    #[error("{0} is not a general message")]
    NotGeneral(&'static str),
    /// A gossip-only message sent as a request.
    #[error("{0} is not a direct request")]
    NotDirect(&'static str),
    /// A request addressed to another validator.
    #[error("addressed to {0}, not to us")]
    NotForUs(ValidatorId),
    /// A key list with more keys than there are coins.
    #[error("key list longer than the coin list")]
    KeyListTooLong,
    /// An announcement replay past its bound.
    #[error("{0} announcements in one replay (at most {MAX_REPLAY_MESSAGES})")]
    ReplayTooLong(usize),
    /// One announcement of a replay was rejected.
    #[error("{kind}: {reason}")]
    InReplay {
        /// Its kind.
        kind: &'static str,
        /// Why.
        reason: Box<Rejection>,
    },
    /// The processor the message is for has stopped (not the sender's fault).
    #[error("processor stopped")]
    ProcessorStopped,
    /// Past the sender's gossip budget (announcements it replayed to us directly).
    #[error("past its gossip rate limit")]
    Limited,
    /// Gossip its author sent before (re-injected), or too old to tell.
    #[error("stale gossip: {0}")]
    Stale(crate::freshness::Stale),
}

impl Rejection {
    /// The `reason` label of `vaultd_messages_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::NotValidator => "not_validator",
            Rejection::ClaimsToBeOurs => "claims_to_be_ours",
            Rejection::UnknownTopic => "unknown_topic",
            Rejection::Malformed(_) => "malformed",
            Rejection::WrongTopic { .. } => "wrong_topic",
            Rejection::ForeignCoordinatorKey => "foreign_coordinator_key",
            Rejection::ConflictingProcessorKey { .. } => "conflicting_processor_key",
            Rejection::UnknownCoin(_) => "unknown_coin",
            Rejection::NoInboundSlot(_) => "no_inbound_slot",
            Rejection::NotGeneral(_) => "not_general",
            Rejection::NotDirect(_) => "not_direct",
            Rejection::NotForUs(_) => "not_for_us",
            Rejection::KeyListTooLong => "key_list_too_long",
            Rejection::ReplayTooLong(_) => "replay_too_long",
            Rejection::InReplay { reason, .. } => reason.label(),
            Rejection::ProcessorStopped => "processor_stopped",
            Rejection::Stale(_) => "stale",
            Rejection::Limited => "rate_limited",
        }
    }
}
