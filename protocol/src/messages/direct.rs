//! What one coordinator forwards to another over a request-response stream: step 7's key list,
//! the sealed `...Out` messages of steps 10, 14 and 17 and of signing, and the announcement
//! replays and requests that make up for gossip's losses.

use serde::{Deserialize, Serialize};

use super::general::{
    GeneralMessage, KeyGenCommitmentsDigest, KeyGenPayload, ProcessorPublicKey,
    PublicAddressAvailable, SignRequest,
};
use crate::ids::{Coin, ValidatorId};

/// Step 7: the list of a coordinator's processor messaging public keys.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorPublicKeyList {
    /// One entry per coin.
    pub keys: Vec<ProcessorPublicKey>,
}

/// Most announcements in one [`AnnouncementReplay`].
pub const MAX_REPLAY_MESSAGES: usize = 32;

/// A validator's current announcements on one coin's topic of the general partition, sent
/// directly to a peer that has just subscribed to it (the peer missed whatever was gossiped
/// before): the same messages the author would gossip, authenticated by the connection instead
/// of a gossip signature. Longer lists go in several replays of at most
/// [`MAX_REPLAY_MESSAGES`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementReplay {
    /// The topic's coin: every message concerns it (or no coin, like the coordinator's key).
    pub coin: Coin,
    /// Which part of a longer list this is (0 for the first).
    pub part: u16,
    /// The announcements.
    pub messages: Vec<GeneralMessage>,
}

/// A validator asks another for its current announcements on one coin's topic, answered with
/// an [`AnnouncementReplay`]. Sent when a DKG phase that waits for gossiped announcements (the
/// commitment echo, the confirmations) has made no progress for a while, to the validators it
/// still waits for: gossip may have abandoned their message in a full send queue, and asking
/// costs one request where waiting costs the DKG timeout and a vote.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementRequest {
    /// The topic's coin.
    pub coin: Coin,
}

/// Step 9: sealed to the external processor; carries the sender's processor signature key.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedPublicKeyOut {
    /// Coin.
    pub coin: Coin,
    /// Recipient validator.
    pub to: ValidatorId,
    /// Sealed [`PublicKeyPayload`].
    pub sealed: Vec<u8>,
}

/// Step 13: sealed round-1 commitments for one recipient.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedKeyGenCommitmentOut {
    /// Coin.
    pub coin: Coin,
    /// Recipient validator.
    pub to: ValidatorId,
    /// DKG context.
    pub context: [u8; 32],
    /// Sealed commitment message bytes.
    pub sealed: Vec<u8>,
}

/// Step 16: a sealed (and PedPoP-encrypted) secret share for one recipient.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedKeyShareOut {
    /// Coin.
    pub coin: Coin,
    /// Recipient validator.
    pub to: ValidatorId,
    /// DKG context.
    pub context: [u8; 32],
    /// Sealed share message bytes.
    pub sealed: Vec<u8>,
}

/// Signing, round 1: a signer's preprocess (nonce commitments, one per message) for the
/// request's originator, which aggregates. The request travels in the clear (it is public and
/// signed by its originator); the preprocesses are sealed, bound to the request's session.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedPreprocessOut {
    /// Recipient validator.
    pub to: ValidatorId,
    /// The request this preprocess is for.
    pub request: SignRequest,
    /// Sealed [`PreprocessPayload`].
    pub sealed: Vec<u8>,
}

/// Plaintext of [`EncryptedPreprocessOut`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreprocessPayload {
    /// One serialized preprocess per message.
    pub preprocesses: Vec<Vec<u8>>,
}

/// Signing, round 1 completed: every signer's preprocess, from the originator to each other
/// signer. Nonce commitments are public, so they travel in the clear, signed once by the
/// originator's processor signature key (one signature for all recipients, where sealing would
/// cost a Noise handshake per recipient).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignPreprocessesOut {
    /// Recipient validator (not signed: the same signed set goes to every signer).
    pub to: ValidatorId,
    /// What the originator signed.
    pub set: PreprocessSet,
    /// The originator's processor signature over `set`.
    pub signature: Vec<u8>,
}

/// The body of [`SignPreprocessesOut`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreprocessSet {
    /// Coin.
    pub coin: Coin,
    /// DKG context of the vault that signs.
    pub vault: [u8; 32],
    /// Request id.
    pub id: [u8; 32],
    /// The originator of the attempt.
    pub origin: ValidatorId,
    /// Attempt.
    pub attempt: u32,
    /// The attempt's session (binds the set to the exact request the originator announced).
    pub session: [u8; 32],
    /// Each signer's FROST index and its preprocesses (one per message), in index order.
    pub preprocesses: Vec<(u16, Vec<Vec<u8>>)>,
}

/// Signing, round 2: a signer's signature shares for the originator, which aggregates.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedSignatureShareOut {
    /// Coin.
    pub coin: Coin,
    /// DKG context of the vault that signs (a node may hold several: retiring sessions).
    pub vault: [u8; 32],
    /// Recipient validator.
    pub to: ValidatorId,
    /// Request id.
    pub id: [u8; 32],
    /// The originator of the attempt (several approvers may originate one request).
    pub origin: ValidatorId,
    /// Attempt.
    pub attempt: u32,
    /// Sealed [`SignatureSharePayload`].
    pub sealed: Vec<u8>,
}

/// Plaintext of [`EncryptedSignatureShareOut`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureSharePayload {
    /// One serialized signature share per message.
    pub shares: Vec<Vec<u8>>,
}

/// Answer to a [`KeyGenComplaint`](super::KeyGenComplaint): what the relayer holds of the
/// validators the complainer waits for, sealed to the complainer. Each item carries its
/// author's processor signature, so the relayer can add nothing of its own.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenRelayOut {
    /// Coin.
    pub coin: Coin,
    /// The complainer.
    pub to: ValidatorId,
    /// DKG context.
    pub context: [u8; 32],
    /// Which part of the relay this is: a relay larger than one sealed message (a large set's
    /// commitments) goes in several, each its own slot of the sender's outbox.
    pub part: u8,
    /// Sealed [`KeyGenRelay`].
    pub sealed: Vec<u8>,
}

/// Plaintext of [`KeyGenRelayOut`]: signed items of other participants, by author.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenRelay {
    /// Round-1 commitments as their author signed them.
    pub commitments: Vec<(ValidatorId, KeyGenPayload)>,
    /// Commitment echoes.
    pub digests: Vec<(ValidatorId, KeyGenCommitmentsDigest)>,
    /// Group-key confirmations.
    pub confirmations: Vec<(ValidatorId, PublicAddressAvailable)>,
}

named_enum! {
/// What one coordinator sends another over a request-response stream.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectRequest {
    /// Step 7.
    ProcessorPublicKeyList(ProcessorPublicKeyList),
    /// Step 10.
    EncryptedPublicKeyOut(EncryptedPublicKeyOut),
    /// Step 14.
    EncryptedKeyGenCommitmentOut(EncryptedKeyGenCommitmentOut),
    /// Step 17.
    EncryptedKeyShareOut(EncryptedKeyShareOut),
    /// Signing, round 1.
    EncryptedPreprocessOut(EncryptedPreprocessOut),
    /// Signing, round 2.
    EncryptedSignatureShareOut(EncryptedSignatureShareOut),
    /// Signing, round 1 completed: the originator hands every signer the preprocess set.
    SignPreprocessesOut(SignPreprocessesOut),
    /// The general partition's announcements for a peer that subscribed after they were
    /// gossiped.
    AnnouncementReplay(AnnouncementReplay),
    /// A request for the recipient's announcements on one coin's topic.
    AnnouncementRequest(AnnouncementRequest),
    /// Signed DKG messages relayed to a participant that complained it lacks them.
    KeyGenRelayOut(KeyGenRelayOut),
}
}

/// The answer to a [`DirectRequest`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectResponse {
    /// Stored; will be placed on the bus.
    Accepted,
    /// Already had it.
    Duplicate,
    /// Refused, with the reason.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Plaintext of [`EncryptedPublicKeyOut`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyPayload {
    /// Sender's processor signature public key.
    pub signer: [u8; 32],
    /// `seq` of the sender's messaging key that sealed this.
    pub seq: u64,
}
