//! Every message of the seed, under its own name, and the versioned envelope they travel in.
//!
//! Three families:
//! * [`GeneralMessage`]: the general partition. Announcements gossiped on the network
//!   (`CoordinatorPublicKey`, `ProcessorPublicKey`, `SignerReady`, `KeyGenCommitmentsDigest`,
//!   `PublicAddressAvailable`).
//! * [`DirectRequest`]: what one coordinator forwards to another over a request-response stream
//!   (step 7's key list and the `...Out` messages of steps 10, 14 and 17) and [`DirectResponse`].
//! * [`BusMessage`]: the local bus between a node's coordinator and its per-coin processors, on
//!   the `{IDENTITY}{COIN}` topic, general or encrypted partition.
//!
//! Encoding: one version byte followed by postcard. The size cap is checked before anything is
//! decoded, and trailing bytes are rejected.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
};

/// Envelope version byte.
pub const WIRE_VERSION: u8 = 1;
/// Largest encoded message accepted anywhere (gossip, request-response, bus, disk).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// Encode a message into a versioned envelope.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let out = postcard::to_extend(msg, vec![WIRE_VERSION])
        .map_err(|e| ProtocolError::Malformed(format!("encode: {e}")))?;
    if out.len() > MAX_MESSAGE_SIZE {
        return Err(ProtocolError::TooLarge {
            size: out.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(out)
}

/// Decode a versioned envelope: size cap first, then version, then postcard with no trailing
/// bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| ProtocolError::Malformed("empty message".into()))?;
    if version != WIRE_VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Step 2: the coordinator's public key (ed25519, the libp2p identity key).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorPublicKey {
    /// ed25519 public key; its PeerId must be the message's author.
    pub pubkey: [u8; 32],
}

/// Step 3 (and step 4's rotation): a processor's messaging public key (X25519).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorPublicKey {
    /// Coin of the processor.
    pub coin: Coin,
    /// X25519 public key.
    pub pubkey: [u8; 32],
    /// Rotation counter: a higher `seq` replaces the previous key.
    pub seq: u64,
}

/// Step 5: a processor is ready to sign; carries its processor signature public key.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerReady {
    /// Coin of the processor.
    pub coin: Coin,
    /// ed25519 processor signature public key.
    pub pubkey: [u8; 32],
}

/// Between steps 16 and 17: what a processor saw in round 1, echoed so that nobody goes on to
/// shares while another participant saw different commitments from the same sender.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenCommitmentsDigest {
    /// Coin.
    pub coin: Coin,
    /// DKG context.
    pub context: [u8; 32],
    /// Hash of all n commitment messages in participant order.
    pub digest: [u8; 32],
    /// The hash of each participant's commitment message, in participant order: where two
    /// echoes differ, these say whose commitments differed.
    pub hashes: Vec<[u8; 32]>,
    /// Processor signature over the above.
    pub signature: Vec<u8>,
}

/// What a DKG payload (commitments or an encrypted share) carries inside its seal: the PedPoP
/// bytes and the sender's processor signature over them, so that a recipient can later show
/// them to everyone as evidence (the seal itself is deniable).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenPayload {
    /// dkg-pedpop's serialized message.
    pub bytes: Vec<u8>,
    /// Sender's processor signature (see `processor::payload_body`).
    pub signature: Vec<u8>,
}

/// Why a participant is left out of the next DKG attempt.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// Sent nothing for a whole timeout during the key exchange.
    SilentKeyExchange,
    /// Sent no commitments within the timeout.
    SilentCommitments,
    /// Echoed no matching commitments digest within the timeout.
    SilentEcho,
    /// Sent no share within the timeout.
    SilentShares,
    /// Did not confirm the group key within the timeout.
    SilentConfirmation,
    /// Its commitments failed PedPoP's proof of knowledge (everyone checks the same bytes).
    InvalidCommitments,
    /// Sent different commitments to different peers (two copies it signed).
    Equivocation,
    /// Sent an invalid encrypted share (dkg-pedpop's blame proof verified).
    InvalidShare,
    /// Accused an honest sender (dkg-pedpop's blame proof failed).
    FalseAccusation,
}

impl ExclusionReason {
    /// Label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ExclusionReason::SilentKeyExchange => "silent_key_exchange",
            ExclusionReason::SilentCommitments => "silent_commitments",
            ExclusionReason::SilentEcho => "silent_echo",
            ExclusionReason::SilentShares => "silent_shares",
            ExclusionReason::SilentConfirmation => "silent_confirmation",
            ExclusionReason::InvalidCommitments => "invalid_commitments",
            ExclusionReason::Equivocation => "equivocation",
            ExclusionReason::InvalidShare => "invalid_share",
            ExclusionReason::FalseAccusation => "false_accusation",
        }
    }

    /// Whether the reason rests on evidence anyone can check (rather than on votes alone).
    pub fn proven(self) -> bool {
        matches!(
            self,
            ExclusionReason::InvalidCommitments
                | ExclusionReason::Equivocation
                | ExclusionReason::InvalidShare
                | ExclusionReason::FalseAccusation
        )
    }
}

/// A participant's vote to run the next DKG attempt without `exclude`. The next attempt starts
/// when t participants of this attempt signed the same set in the same round (the lowest such
/// round decides); see `docs/RELIABILITY.md`.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenExclusionVote {
    /// Coin.
    pub coin: Coin,
    /// Context of the attempt voted on.
    pub context: [u8; 32],
    /// Attempt number.
    pub attempt: u32,
    /// Voting round within the attempt.
    pub round: u32,
    /// Who to leave out, sorted, no duplicates, never empty.
    pub exclude: Vec<ValidatorId>,
    /// Why, one per `exclude` entry (informative; votes are compared on `exclude`).
    pub reasons: Vec<ExclusionReason>,
    /// Voter's processor signature over the above.
    pub signature: Vec<u8>,
}

/// Evidence against a participant of a DKG attempt, published by the participant who holds it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlameEvidence {
    /// The encrypted share `accused` sent to the publisher failed to decrypt or verify.
    InvalidShare {
        /// Sender of the share.
        accused: ValidatorId,
        /// The dkg-pedpop encrypted share, as received.
        share: Vec<u8>,
        /// `accused`'s processor signature over the share.
        share_signature: Vec<u8>,
        /// dkg-pedpop's `EncryptionKeyProof` (absent when the ciphertext itself was invalid).
        proof: Option<Vec<u8>>,
    },
    /// The commitments `accused` sent to the publisher; with a different signed copy from
    /// anyone else, proof that it equivocated.
    Commitments {
        /// Sender of the commitments.
        accused: ValidatorId,
        /// dkg-pedpop's commitment message, as received.
        commitments: Vec<u8>,
        /// `accused`'s processor signature over them.
        signature: Vec<u8>,
    },
}

impl BlameEvidence {
    /// Who the evidence is against.
    pub fn accused(&self) -> &ValidatorId {
        match self {
            BlameEvidence::InvalidShare { accused, .. }
            | BlameEvidence::Commitments { accused, .. } => accused,
        }
    }
}

/// Evidence against a DKG participant, gossiped so every validator reaches the same verdict.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenBlame {
    /// Coin.
    pub coin: Coin,
    /// Context of the attempt.
    pub context: [u8; 32],
    /// The evidence.
    pub evidence: BlameEvidence,
    /// Publisher's processor signature over the above.
    pub signature: Vec<u8>,
}

/// Step 20: the vault's group key and address.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAddressAvailable {
    /// Coin.
    pub coin: Coin,
    /// DKG context.
    pub context: [u8; 32],
    /// Group public key (33-byte SEC1 for secp256k1, 32 bytes for ed25519).
    pub group_key: Vec<u8>,
    /// Address in the chain's own format.
    pub address: String,
    /// Threshold t.
    pub threshold: u16,
    /// Participants, in participant-index order.
    pub participants: Vec<ValidatorId>,
    /// Processor signature over the above.
    pub signature: Vec<u8>,
}

/// A request to sign `messages` with a coin's vault, announced by the validator whose API
/// received it (the originator), for one attempt with one signer set of exactly t validators.
/// Signed by the originator's processor signature key, so every signer checks the same set.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRequest {
    /// Coin.
    pub coin: Coin,
    /// Request id, chosen by the originator.
    pub id: [u8; 32],
    /// Attempt number (a retry with another signer set is a new attempt).
    pub attempt: u32,
    /// The originator.
    pub origin: ValidatorId,
    /// DKG context of the vault that signs.
    pub vault: [u8; 32],
    /// The signer set, t validators in participant-index order; includes the originator.
    pub signers: Vec<ValidatorId>,
    /// The messages, signed in one ceremony.
    pub messages: Vec<Vec<u8>>,
    /// Originator's processor signature over the above.
    pub signature: Vec<u8>,
}

/// A finished signature set, announced by each signer and stored by every validator.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureAvailable {
    /// Coin.
    pub coin: Coin,
    /// Request id.
    pub id: [u8; 32],
    /// The originator.
    pub origin: ValidatorId,
    /// Attempt that produced the signatures.
    pub attempt: u32,
    /// DKG context of the vault.
    pub vault: [u8; 32],
    /// Who signed.
    pub signers: Vec<ValidatorId>,
    /// The messages.
    pub messages: Vec<Vec<u8>>,
    /// One 64-byte signature per message, in the chain's format.
    pub signatures: Vec<Vec<u8>>,
}

/// The general partition.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GeneralMessage {
    /// Step 2.
    CoordinatorPublicKey(CoordinatorPublicKey),
    /// Steps 3-4.
    ProcessorPublicKey(ProcessorPublicKey),
    /// Step 5 (announced to peers once the local coordinator has consumed it).
    SignerReady(SignerReady),
    /// Commitment echo.
    KeyGenCommitmentsDigest(KeyGenCommitmentsDigest),
    /// Step 20.
    PublicAddressAvailable(PublicAddressAvailable),
    /// Signing: a request and its signer set.
    SignRequest(SignRequest),
    /// Signing: the result.
    SignatureAvailable(SignatureAvailable),
    /// DKG liveness: a vote to leave participants out of the next attempt.
    KeyGenExclusionVote(KeyGenExclusionVote),
    /// DKG blame: evidence against a participant.
    KeyGenBlame(KeyGenBlame),
}

impl GeneralMessage {
    /// The coin it concerns (`None` for the coordinator's key).
    pub fn coin(&self) -> Option<Coin> {
        match self {
            GeneralMessage::CoordinatorPublicKey(_) => None,
            GeneralMessage::ProcessorPublicKey(m) => Some(m.coin),
            GeneralMessage::SignerReady(m) => Some(m.coin),
            GeneralMessage::KeyGenCommitmentsDigest(m) => Some(m.coin),
            GeneralMessage::PublicAddressAvailable(m) => Some(m.coin),
            GeneralMessage::SignRequest(m) => Some(m.coin),
            GeneralMessage::SignatureAvailable(m) => Some(m.coin),
            GeneralMessage::KeyGenExclusionVote(m) => Some(m.coin),
            GeneralMessage::KeyGenBlame(m) => Some(m.coin),
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GeneralMessage::CoordinatorPublicKey(_) => "CoordinatorPublicKey",
            GeneralMessage::ProcessorPublicKey(_) => "ProcessorPublicKey",
            GeneralMessage::SignerReady(_) => "SignerReady",
            GeneralMessage::KeyGenCommitmentsDigest(_) => "KeyGenCommitmentsDigest",
            GeneralMessage::PublicAddressAvailable(_) => "PublicAddressAvailable",
            GeneralMessage::SignRequest(_) => "SignRequest",
            GeneralMessage::SignatureAvailable(_) => "SignatureAvailable",
            GeneralMessage::KeyGenExclusionVote(_) => "KeyGenExclusionVote",
            GeneralMessage::KeyGenBlame(_) => "KeyGenBlame",
        }
    }
}

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

/// Signing, round 1: a signer's preprocess (nonce commitments, one per message) for another
/// signer. The request travels in the clear (it is public and signed by its originator); the
/// preprocesses are sealed, bound to the request's session.
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

/// Signing, round 2: a signer's signature shares for another signer.
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
    /// The general partition's announcements for a peer that subscribed after they were
    /// gossiped.
    AnnouncementReplay(AnnouncementReplay),
    /// A request for the recipient's announcements on one coin's topic.
    AnnouncementRequest(AnnouncementRequest),
}

impl DirectRequest {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DirectRequest::ProcessorPublicKeyList(_) => "ProcessorPublicKeyList",
            DirectRequest::EncryptedPublicKeyOut(_) => "EncryptedPublicKeyOut",
            DirectRequest::EncryptedKeyGenCommitmentOut(_) => "EncryptedKeyGenCommitmentOut",
            DirectRequest::EncryptedKeyShareOut(_) => "EncryptedKeyShareOut",
            DirectRequest::EncryptedPreprocessOut(_) => "EncryptedPreprocessOut",
            DirectRequest::EncryptedSignatureShareOut(_) => "EncryptedSignatureShareOut",
            DirectRequest::AnnouncementReplay(_) => "AnnouncementReplay",
            DirectRequest::AnnouncementRequest(_) => "AnnouncementRequest",
        }
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

/// A signature request received by this node's API, for its processor to originate.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRequested {
    /// Request id.
    pub id: [u8; 32],
    /// The messages.
    pub messages: Vec<Vec<u8>>,
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

/// What travels on the local bus.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BusMessage {
    // processor -> coordinator
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
    // coordinator -> processor
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
    // processor -> coordinator
    /// The DKG waits for these validators' announcements: ask them (local only).
    AnnouncementsWanted(AnnouncementsWanted),
}

impl BusMessage {
    /// The partition the message is placed on.
    pub fn partition(&self) -> Partition {
        match self {
            BusMessage::ProcessorPublicKey(_)
            | BusMessage::KeyGenCommitmentsDigest(_)
            | BusMessage::PublicAddressAvailable(_)
            | BusMessage::SignRequest(_)
            | BusMessage::SignatureAvailable(_)
            | BusMessage::KeyGenExclusionVote(_)
            | BusMessage::KeyGenBlame(_)
            | BusMessage::GeneralIn(_) => Partition::General,
            _ => Partition::Encrypted,
        }
    }

    /// The message's name.
    pub fn kind(&self) -> &'static str {
        match self {
            BusMessage::ProcessorPublicKey(_) => "ProcessorPublicKey",
            BusMessage::SignerReady(_) => "SignerReady",
            BusMessage::EncryptedPublicKeyOut(_) => "EncryptedPublicKeyOut",
            BusMessage::EncryptedKeyGenCommitmentOut(_) => "EncryptedKeyGenCommitmentOut",
            BusMessage::KeyGenCommitmentsDigest(_) => "KeyGenCommitmentsDigest",
            BusMessage::EncryptedKeyShareOut(_) => "EncryptedKeyShareOut",
            BusMessage::PublicAddressAvailable(_) => "PublicAddressAvailable",
            BusMessage::ExternalPublicKeyIn(_) => "ExternalPublicKeyIn",
            BusMessage::EncryptedPublicKeyIn(_) => "EncryptedPublicKeyIn",
            BusMessage::EncryptedKeyGenCommitmentIn(_) => "EncryptedKeyGenCommitmentIn",
            BusMessage::EncryptedKeyShareIn(_) => "EncryptedKeyShareIn",
            BusMessage::GeneralIn(_) => "GeneralIn",
            BusMessage::SignRequest(_) => "SignRequest",
            BusMessage::EncryptedPreprocessOut(_) => "EncryptedPreprocessOut",
            BusMessage::EncryptedSignatureShareOut(_) => "EncryptedSignatureShareOut",
            BusMessage::SignatureAvailable(_) => "SignatureAvailable",
            BusMessage::KeyGenExclusionVote(_) => "KeyGenExclusionVote",
            BusMessage::KeyGenBlame(_) => "KeyGenBlame",
            BusMessage::EncryptedPreprocessIn(_) => "EncryptedPreprocessIn",
            BusMessage::EncryptedSignatureShareIn(_) => "EncryptedSignatureShareIn",
            BusMessage::SignatureRequested(_) => "SignatureRequested",
            BusMessage::AnnouncementsWanted(_) => "AnnouncementsWanted",
        }
    }
}

/// A `{IDENTITY}{COIN}` topic name on the local bus.
pub fn bus_topic(identity: &ValidatorId, coin: Coin) -> String {
    format!("{identity}{coin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip_and_rejections() {
        let msg = GeneralMessage::ProcessorPublicKey(ProcessorPublicKey {
            coin: Coin::Sol,
            pubkey: [9; 32],
            seq: 3,
        });
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode::<GeneralMessage>(&bytes).unwrap(), msg);

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<GeneralMessage>(&trailing),
            Err(ProtocolError::Malformed(_))
        ));
        let mut version = bytes.clone();
        version[0] = 99;
        assert!(matches!(
            decode::<GeneralMessage>(&version),
            Err(ProtocolError::UnsupportedVersion(99))
        ));
        assert!(decode::<GeneralMessage>(&[]).is_err());
        let huge = vec![WIRE_VERSION; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            decode::<GeneralMessage>(&huge),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of garbage through every decoder.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600usize {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push(state as u8);
            }
            if let Some(first) = buf.first_mut() {
                *first = WIRE_VERSION;
            }
            let _ = decode::<GeneralMessage>(&buf);
            let _ = decode::<DirectRequest>(&buf);
            let _ = decode::<DirectResponse>(&buf);
            let _ = decode::<BusMessage>(&buf);
        }
    }
}
