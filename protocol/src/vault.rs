//! Vault records: the outcome of a coin's DKG as the node reports and stores it.

use serde::{Deserialize, Serialize};

use crate::ids::{Coin, ValidatorId};

/// Where a vault stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaultStatus {
    /// DKG running, or our key is computed but not every participant confirmed it yet.
    Pending,
    /// Every participant published the same group key.
    Active,
    /// The DKG failed; `reason` says why.
    Failed,
}

/// A coin's vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    /// Coin.
    pub coin: Coin,
    /// Validator-set session.
    pub session: u32,
    /// DKG context of the attempt that produced it.
    pub context: [u8; 32],
    /// Status.
    pub status: VaultStatus,
    /// Group public key (empty until computed).
    pub group_key: Vec<u8>,
    /// Address in the chain's format (empty until computed).
    pub address: String,
    /// Threshold.
    pub threshold: u16,
    /// Participants in index order.
    pub participants: Vec<ValidatorId>,
    /// Why it failed.
    pub reason: Option<String>,
}
