//! Vault records: the outcome of a coin's DKG as the node reports and stores it.

use serde::{Deserialize, Serialize};

use crate::{
    ids::{Coin, ValidatorId},
    messages::ExclusionReason,
};

/// Where a vault stands.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaultStatus {
    /// DKG running, or our key is computed but not every participant confirmed it yet.
    Pending,
    /// Every participant published the same group key.
    Active,
    /// The DKG failed; `reason` says why.
    Failed,
    /// This validator was left out of the DKG by the other participants' votes; the vault
    /// belongs to them.
    Excluded,
}

/// A participant left out of a DKG attempt.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    /// Who.
    pub validator: ValidatorId,
    /// The attempt it was left out of (it took part in it; the next one ran without it).
    pub attempt: u32,
    /// Why.
    pub reason: ExclusionReason,
    /// The participants whose signed votes decided it.
    pub voters: Vec<ValidatorId>,
}

/// A coin's vault.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    /// Coin.
    pub coin: Coin,
    /// Validator-set session.
    pub session: u32,
    /// DKG context of the attempt that produced it.
    pub context: [u8; 32],
    /// That attempt's number (0 unless participants were left out).
    pub attempt: u32,
    /// Status.
    pub status: VaultStatus,
    /// Group public key (empty until computed).
    pub group_key: Vec<u8>,
    /// Address in the chain's format (empty until computed).
    pub address: String,
    /// Threshold.
    pub threshold: u16,
    /// Participants in index order (the attempt's: those left out are not among them).
    pub participants: Vec<ValidatorId>,
    /// Validators left out of earlier attempts, and why.
    pub excluded: Vec<Exclusion>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Where a signature request stands.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignStatus {
    /// Accepted; a ceremony is running or queued.
    Pending,
    /// Signed: `signatures` holds one signature per message.
    Done,
    /// Gave up: `reason` says why.
    Failed,
}

/// Why this node gave up a request it originated (the record's `reason` says it in words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFailure {
    /// Fewer than t signers are reachable and honest.
    SignersUnavailable,
    /// No signer set answered within the attempts allowed.
    AttemptsExhausted,
    /// An attempt could not start here, or failed without a culprit.
    Other,
    /// Fewer than t validators approved it (or it was not signed) before it expired.
    Expired,
}

impl SignFailure {
    /// A short name, for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            SignFailure::SignersUnavailable => "signers_unavailable",
            SignFailure::AttemptsExhausted => "attempts_exhausted",
            SignFailure::Other => "other",
            SignFailure::Expired => "expired",
        }
    }
}

/// A signature request as the node stores and reports it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRecord {
    /// Request id.
    pub id: [u8; 32],
    /// Coin.
    pub coin: Coin,
    /// The validator that originates its ceremony (an approver; before one starts, the first
    /// approver known here).
    pub origin: ValidatorId,
    /// DKG context of the vault that signs (the current session's or a retiring one).
    pub vault: [u8; 32],
    /// The messages.
    pub messages: Vec<Vec<u8>>,
    /// Status.
    pub status: SignStatus,
    /// Current (or final) attempt.
    pub attempt: u32,
    /// Signer set of that attempt.
    pub signers: Vec<ValidatorId>,
    /// One signature per message, once done.
    pub signatures: Vec<Vec<u8>>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Validators left out of later attempts, and why.
    pub left_out: Vec<(ValidatorId, String)>,
    /// The client's reference (part of the request id).
    pub reference: Option<String>,
    /// The signed approvals known here, ours among them once our operator approved.
    pub approvals: Vec<crate::messages::SignApproval>,
    /// Unix time (seconds) when the request expires unless signed: the earliest approval's.
    pub expires_at: u64,
}

impl SignRecord {
    /// A new request, pending, before its first attempt.
    pub fn pending(
        id: [u8; 32],
        coin: Coin,
        origin: ValidatorId,
        vault: [u8; 32],
        messages: Vec<Vec<u8>>,
    ) -> SignRecord {
        SignRecord {
            id,
            coin,
            origin,
            vault,
            messages,
            status: SignStatus::Pending,
            attempt: 0,
            signers: Vec::new(),
            signatures: Vec::new(),
            reason: None,
            left_out: Vec::new(),
            reference: None,
            approvals: Vec::new(),
            expires_at: 0,
        }
    }

    /// Whether `v` approved it (a signed approval of `v` is recorded).
    pub fn approved_by(&self, v: &ValidatorId) -> bool {
        self.approvals.iter().any(|a| a.approver == *v)
    }
}

/// A signer caught sending an invalid preprocess or signature share.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheaterReport {
    /// Coin.
    pub coin: Coin,
    /// The cheater.
    pub peer: ValidatorId,
    /// Request id.
    pub id: [u8; 32],
    /// Attempt.
    pub attempt: u32,
    /// What it sent.
    pub reason: String,
}
