//! The local bus between a node's coordinator and its per-coin processors, split by direction
//! as the processor sees it: [`CoordinatorMessage`] is what the coordinator places for a
//! processor (the `...In` messages), [`ProcessorMessage`] what a processor emits (the `...Out`
//! messages and its announcements). A processor takes only the first and returns only the
//! second, so handing it a message it emits does not compile.

use serde::{Deserialize, Serialize};

use super::{direct::*, general::*};
use crate::ids::{Coin, ValidatorId};

/// A partition of a `{IDENTITY}{COIN}` topic.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partition {
    /// Announcements, public.
    General,
    /// Sealed processor-to-processor traffic and local-only signals.
    Encrypted,
}

/// Step 8: the coordinator places an external processor's messaging key for its processor.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalPublicKeyIn {
    /// The external validator.
    pub from: ValidatorId,
    /// Its processor's messaging key.
    pub key: ProcessorPublicKey,
}

/// Step 11.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedPublicKeyIn {
    /// Sending validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: EncryptedPublicKeyOut,
}

/// Step 15.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedKeyGenCommitmentIn {
    /// Sending validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: EncryptedKeyGenCommitmentOut,
}

/// Signed DKG messages relayed by a peer, for a complaint of ours.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenRelayIn {
    /// Relaying validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: KeyGenRelayOut,
}

/// Step 18.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedKeyShareIn {
    /// Sending validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: EncryptedKeyShareOut,
}

/// Signing, round 1, as received.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedPreprocessIn {
    /// Sending validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: EncryptedPreprocessOut,
}

/// Signing, round 2, as received.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedSignatureShareIn {
    /// Sending validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: EncryptedSignatureShareOut,
}

/// Signing, round 1 completed, as received from the originator.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignPreprocessesIn {
    /// Sending validator (authenticated by the transport).
    pub from: ValidatorId,
    /// The forwarded message.
    pub msg: SignPreprocessesOut,
}

/// A signature request received by this node's API: the operator's approval, for the
/// processor to sign, announce and (once t validators approved) take to a ceremony.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRequested {
    /// Request id (`approvals::request_id` of the content; the processor checks it).
    pub id: [u8; 32],
    /// The messages.
    pub messages: Vec<Vec<u8>>,
    /// The client's reference (for example the transaction's id), part of the id.
    pub reference: Option<String>,
}

/// The processor's DKG waits for announcements of these validators and made no progress for a
/// while: the coordinator asks each of them for its announcements directly (local only; see
/// [`AnnouncementRequest`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementsWanted {
    /// Coin.
    pub coin: Coin,
    /// The validators whose announcements the DKG still waits for.
    pub from: Vec<ValidatorId>,
}

/// A general-partition message from another validator, placed for the processor.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneralIn {
    /// Author (the gossip source, checked to be a validator).
    pub from: ValidatorId,
    /// The message.
    pub msg: GeneralMessage,
}

named_enum! {
    /// What the coordinator places for a processor on the coin's topic.
    #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum CoordinatorMessage {
        /// Step 8, encrypted partition.
        ExternalPublicKeyIn(ExternalPublicKeyIn),
        /// Step 11, encrypted partition.
        EncryptedPublicKeyIn(EncryptedPublicKeyIn),
        /// Step 15, encrypted partition.
        EncryptedKeyGenCommitmentIn(EncryptedKeyGenCommitmentIn),
        /// Step 18, encrypted partition.
        EncryptedKeyShareIn(EncryptedKeyShareIn),
        /// General partition, from a peer.
        GeneralIn(GeneralIn),
        /// Signing round 1 from a peer, encrypted partition.
        EncryptedPreprocessIn(EncryptedPreprocessIn),
        /// Signing round 2 from a peer, encrypted partition.
        EncryptedSignatureShareIn(EncryptedSignatureShareIn),
        /// A request from this node's API, encrypted partition (local only).
        SignatureRequested(SignatureRequested),
        /// DKG messages relayed for a complaint of ours, encrypted partition.
        KeyGenRelayIn(KeyGenRelayIn),
        /// Signing: the originator's preprocess set, encrypted partition.
        SignPreprocessesIn(SignPreprocessesIn),
    }
}

impl CoordinatorMessage {
    /// The partition the message is placed on.
    pub fn partition(&self) -> Partition {
        match self {
            CoordinatorMessage::GeneralIn(_) => Partition::General,
            _ => Partition::Encrypted,
        }
    }
}

named_enum! {
    /// What a processor emits on the coin's topic for its coordinator.
    #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum ProcessorMessage {
        /// Step 3/4, general partition.
        ProcessorPublicKey(ProcessorPublicKey),
        /// Step 5, encrypted partition.
        SignerReady(SignerReady),
        /// Step 9, encrypted partition.
        EncryptedPublicKeyOut(EncryptedPublicKeyOut),
        /// Step 13, encrypted partition.
        EncryptedKeyGenCommitmentOut(EncryptedKeyGenCommitmentOut),
        /// General partition.
        KeyGenCommitmentsDigest(KeyGenCommitmentsDigest),
        /// Step 16, encrypted partition.
        EncryptedKeyShareOut(EncryptedKeyShareOut),
        /// Step 20, general partition.
        PublicAddressAvailable(PublicAddressAvailable),
        /// Signing: announce a request (general partition).
        SignRequest(SignRequest),
        /// Signing round 1, encrypted partition.
        EncryptedPreprocessOut(EncryptedPreprocessOut),
        /// Signing round 2, encrypted partition.
        EncryptedSignatureShareOut(EncryptedSignatureShareOut),
        /// Signing: announce the result (general partition).
        SignatureAvailable(SignatureAvailable),
        /// DKG liveness vote (general partition).
        KeyGenExclusionVote(KeyGenExclusionVote),
        /// DKG blame evidence (general partition).
        KeyGenBlame(KeyGenBlame),
        /// The DKG waits for these validators' announcements: ask them (local only).
        AnnouncementsWanted(AnnouncementsWanted),
        /// Signing: this validator's approval of a request (general partition).
        SignApproval(SignApproval),
        /// DKG liveness: whom our stalled phase waits for (general partition).
        KeyGenComplaint(KeyGenComplaint),
        /// DKG liveness: our shares for those who complained of them (general partition).
        KeyGenShareAnswer(KeyGenShareAnswer),
        /// DKG liveness: signed messages relayed to a complainer, encrypted partition.
        KeyGenRelayOut(KeyGenRelayOut),
        /// Signing: the originator's preprocess set for one signer, encrypted partition.
        SignPreprocessesOut(SignPreprocessesOut),
    }
}

impl ProcessorMessage {
    /// The partition the message is placed on.
    pub fn partition(&self) -> Partition {
        match self {
            ProcessorMessage::ProcessorPublicKey(_)
            | ProcessorMessage::KeyGenCommitmentsDigest(_)
            | ProcessorMessage::PublicAddressAvailable(_)
            | ProcessorMessage::SignRequest(_)
            | ProcessorMessage::SignatureAvailable(_)
            | ProcessorMessage::KeyGenExclusionVote(_)
            | ProcessorMessage::KeyGenBlame(_)
            | ProcessorMessage::SignApproval(_)
            | ProcessorMessage::KeyGenComplaint(_)
            | ProcessorMessage::KeyGenShareAnswer(_) => Partition::General,
            ProcessorMessage::SignerReady(_)
            | ProcessorMessage::EncryptedPublicKeyOut(_)
            | ProcessorMessage::EncryptedKeyGenCommitmentOut(_)
            | ProcessorMessage::EncryptedKeyShareOut(_)
            | ProcessorMessage::EncryptedPreprocessOut(_)
            | ProcessorMessage::EncryptedSignatureShareOut(_)
            | ProcessorMessage::AnnouncementsWanted(_)
            | ProcessorMessage::KeyGenRelayOut(_)
            | ProcessorMessage::SignPreprocessesOut(_) => Partition::Encrypted,
        }
    }
}

/// A `{IDENTITY}{COIN}` topic name on the local bus.
pub fn bus_topic(identity: &ValidatorId, coin: Coin) -> String {
    format!("{identity}{coin}")
}
