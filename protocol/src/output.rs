//! What a processor returns ([`Output`]: bus messages and [`Persist`] changes, persisted first)
//! and where its DKG stands ([`Phase`]). Re-exported from [`crate::processor`].

use zeroize::Zeroizing;

use crate::{
    ids::Coin,
    keys::MessagingKey,
    messages::{KeyGenExclusionVote, ProcessorMessage},
    vault::{CheaterReport, SignRecord, VaultRecord},
};

/// What the processor wants done.
#[derive(Debug)]
pub enum Output {
    /// Put this on the bus for the coordinator (after persisting this call's `Persist`s).
    Bus(ProcessorMessage),
    /// Persist this.
    Persist(Persist),
}

/// Durable state changes.
pub enum Persist {
    /// The coin's key share (secret), once computed.
    KeyShare {
        /// Coin.
        coin: Coin,
        /// Validator-set session of the DKG that made it: with the coin, where it is stored,
        /// whatever vault the processor holds when the write is applied.
        session: u32,
        /// DKG context.
        context: [u8; 32],
        /// Serialized `ThresholdKeys`.
        keys: Zeroizing<Vec<u8>>,
    },
    /// The vault record.
    Vault(VaultRecord),
    /// A new messaging key of this coin's processor (step 4).
    MessagingKey {
        /// Coin.
        coin: Coin,
        /// The key.
        key: MessagingKey,
    },
    /// Signing: (slot, attempt) was preprocessed here; never again, across restarts too.
    NonceUsed {
        /// Coin.
        coin: Coin,
        /// The nonce slot of (request, originator) (`signing::nonce_slot`).
        id: [u8; 32],
        /// Attempt.
        attempt: u32,
    },
    /// Signing: the markers of a finished request; nothing finished is preprocessed again
    /// (see `docs/SIGNING.md`, "Nonces").
    ForgetNonces {
        /// Coin.
        coin: Coin,
        /// (slot, attempt) pairs.
        used: Vec<([u8; 32], u32)>,
    },
    /// Signing: a request's record (pending, done or failed; `failure` says why it failed).
    SignRecord {
        /// The record.
        record: SignRecord,
        /// Why it failed, when it did.
        failure: Option<crate::vault::SignFailure>,
    },
    /// Signing: an unfinished request nobody here approved expired; its record (peers'
    /// approvals only) is deleted, unless it is finished or approved here.
    ForgetSignRecord {
        /// Request id.
        id: [u8; 32],
    },
    /// Signing: a signer sent an invalid preprocess or share.
    Cheater(CheaterReport),
    /// DKG: our own exclusion vote (a restarted node must never cast a different one).
    Vote(KeyGenExclusionVote),
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Persist::KeyShare { coin, .. } => write!(f, "KeyShare({coin}, <secret>)"),
            Persist::Vault(v) => write!(f, "Vault({:?})", v),
            Persist::MessagingKey { coin, key } => write!(f, "MessagingKey({coin}, {key:?})"),
            Persist::NonceUsed { coin, id, attempt } => {
                write!(f, "NonceUsed({coin}, {}, {attempt})", hex::encode(id))
            }
            Persist::ForgetNonces { coin, used } => {
                write!(f, "ForgetNonces({coin}, {} markers)", used.len())
            }
            Persist::SignRecord { record, .. } => write!(f, "SignRecord({:?})", record),
            Persist::ForgetSignRecord { id } => write!(f, "ForgetSignRecord({})", hex::encode(id)),
            Persist::Cheater(c) => write!(f, "Cheater({:?})", c),
            Persist::Vote(v) => write!(f, "Vote({:?})", v),
        }
    }
}

/// The DKG phase, for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps 7-12: exchanging encrypted public keys.
    KeyExchange,
    /// Steps 13-16: collecting commitments.
    Commitments,
    /// Comparing commitment digests.
    CommitmentEcho,
    /// Steps 16-19: collecting shares.
    Shares,
    /// Step 20: waiting for every participant's PublicAddressAvailable.
    Confirming,
    /// Vault active.
    Active,
    /// Failed.
    Failed,
    /// Left out by the other participants.
    Excluded,
}

impl Phase {
    /// A number for the metrics gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            Phase::KeyExchange => 1,
            Phase::Commitments => 2,
            Phase::CommitmentEcho => 3,
            Phase::Shares => 4,
            Phase::Confirming => 5,
            Phase::Active => 6,
            Phase::Failed => -1,
            Phase::Excluded => -2,
        }
    }
}
