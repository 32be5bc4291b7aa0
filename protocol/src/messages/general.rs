//! The general partition: announcements gossiped on each coin's `{IDENTITY}{COIN}` topic
//! (steps 2, 3, 5 and 20, the commitment echo, the DKG's votes and blame, and signing's requests
//! and results).

use serde::{Deserialize, Serialize};

use crate::ids::{Coin, ValidatorId};

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
    /// Sender's processor signature (see `keygen::payload_body`).
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
    /// Confirmed (signed) a group key other than the one the agreed commitments give.
    WrongGroupKey,
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
            ExclusionReason::WrongGroupKey => "wrong_group_key",
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
                | ExclusionReason::WrongGroupKey
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

/// What a stalled DKG phase still waits for ([`KeyGenComplaint`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Awaited {
    /// Round-1 commitments (step 15).
    Commitments,
    /// Commitment echoes ([`KeyGenCommitmentsDigest`]).
    Digests,
    /// Secret shares addressed to the complainer (step 18).
    Shares,
    /// Group-key confirmations ([`PublicAddressAvailable`]).
    Confirmations,
}

/// A participant whose DKG phase made no progress for a while names whom it still waits for,
/// so that a validator who withholds a message from it alone cannot make the others vote it
/// out: every participant relays what it holds of theirs, signed by its author
/// ([`KeyGenRelayOut`](super::KeyGenRelayOut)); a share only its dealer has, so the dealer
/// answers publicly ([`KeyGenShareAnswer`]), and until it does a vote spares the complainer
/// and names the dealer. Authenticated by the gossip signature.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenComplaint {
    /// Coin.
    pub coin: Coin,
    /// Context of the attempt.
    pub context: [u8; 32],
    /// What the complainer's phase waits for.
    pub awaited: Awaited,
    /// Whose, sorted, no duplicates, never empty, participants of the attempt.
    pub missing: Vec<ValidatorId>,
}

/// A dealer's answer to complaints about its shares: the signed, dkg-pedpop-encrypted shares
/// of the complainers (each opens only for its recipient), cumulative over the attempt, so
/// that everyone sees the complaint answered and the complainer takes its share as if it came
/// directly.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenShareAnswer {
    /// Coin.
    pub coin: Coin,
    /// Context of the attempt.
    pub context: [u8; 32],
    /// Recipient and its share as the dealer signed it (as in step 16), sorted by recipient.
    pub shares: Vec<(ValidatorId, KeyGenPayload)>,
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
    /// Request id (`approvals::request_id` of its content).
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

/// One validator's approval of a signing request: its operator submitted the request
/// (`POST /sign`) to its own node. The request id is derived from the request's content
/// (`approvals::request_id`), so every validator that approves the same content approves the
/// same id. Signed by the approver's processor signature key; gossiped by the approver only.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignApproval {
    /// Coin.
    pub coin: Coin,
    /// Request id (a hash of network, coin, vault, messages and reference).
    pub id: [u8; 32],
    /// DKG context of the vault that is to sign.
    pub vault: [u8; 32],
    /// The approving validator.
    pub approver: ValidatorId,
    /// Unix time (seconds) after which the approval no longer counts.
    pub expires_at: u64,
    /// Approver's processor signature over the above.
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
    /// The request's client reference: with the network, coin, vault and messages it hashes
    /// to `id`, so a receiver that never saw the request checks that these signatures are
    /// the ones it names.
    pub reference: Option<String>,
}

named_enum! {
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
    /// Signing: one validator's approval of a request.
    SignApproval(SignApproval),
    /// DKG liveness: whom a stalled participant still waits for.
    KeyGenComplaint(KeyGenComplaint),
    /// DKG liveness: a dealer's published answer to complaints about its shares.
    KeyGenShareAnswer(KeyGenShareAnswer),
}
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
            GeneralMessage::SignApproval(m) => Some(m.coin),
            GeneralMessage::KeyGenComplaint(m) => Some(m.coin),
            GeneralMessage::KeyGenShareAnswer(m) => Some(m.coin),
        }
    }
}
