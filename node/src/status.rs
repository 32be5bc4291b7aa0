//! What `GET /status` reports.

use std::collections::{BTreeMap, HashMap};

use protocol::ValidatorId;
use serde::{Deserialize, Serialize};

/// The validators' base58 names, encoded once: the status page lists them on every refresh,
/// and encoding them each time was measurable (docs/BENCHMARKS.md, item 11).
#[derive(Debug, Default)]
pub(crate) struct Names(HashMap<ValidatorId, String>);

impl Names {
    pub(crate) fn new<'a>(validators: impl IntoIterator<Item = &'a ValidatorId>) -> Self {
        Names(
            validators
                .into_iter()
                .map(|v| (v.clone(), v.to_string()))
                .collect(),
        )
    }

    /// A validator's name (encoded now if it is not one of ours).
    pub(crate) fn name(&self, v: &ValidatorId) -> String {
        self.0.get(v).cloned().unwrap_or_else(|| v.to_string())
    }
}

/// The whole status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// This validator's IDENTITY.
    pub peer_id: String,
    /// Network name.
    pub network: String,
    /// Validator-set session.
    pub session: u32,
    /// Where we listen.
    pub listen_addrs: Vec<String>,
    /// What we tell peers to dial (`--external-address`, then the dialable listen addresses).
    #[serde(default)]
    pub advertised_addrs: Vec<String>,
    /// Connected validators.
    pub peers: Vec<String>,
    /// Every validator of the definition and what we know of it.
    pub validators: Vec<ValidatorStatus>,
    /// One entry per coin.
    pub vaults: Vec<VaultStatus>,
}

/// A validator as this node knows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ValidatorStatus {
    /// PeerId.
    pub peer_id: String,
    /// Connected now.
    pub connected: bool,
    /// The connection's remote address.
    pub addr: Option<String>,
    /// The software it says it runs (identify's agent version, e.g. `vaultd/0.1.0`).
    #[serde(default)]
    pub agent: Option<String>,
    /// Last ping round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its CoordinatorPublicKey, hex.
    pub coordinator_key: Option<String>,
    /// Its ProcessorPublicKey per coin.
    pub processor_keys: BTreeMap<String, KeyStatus>,
}

/// A processor messaging key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyStatus {
    /// X25519 public key, hex.
    pub pubkey: String,
    /// Rotation counter.
    pub seq: u64,
    /// Whether our processor verified the encrypted public key exchange under this key
    /// (steps 9-12).
    pub verified: bool,
}

/// A coin's vault.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VaultStatus {
    /// Coin ticker.
    pub coin: String,
    /// `pending`, `active`, `failed`, `excluded` (this validator was left out) or `retiring`
    /// (a vault of an earlier validator-set session).
    pub status: String,
    /// Validator-set session of the vault.
    pub session: u32,
    /// DKG attempt (0 unless participants were left out).
    pub attempt: u32,
    /// DKG phase.
    pub phase: String,
    /// (received, expected) of the current phase.
    pub progress: (usize, usize),
    /// Group public key, hex (empty until computed).
    pub group_key: String,
    /// Address (empty until computed).
    pub address: String,
    /// Threshold.
    pub threshold: u16,
    /// Participants of the attempt (PeerIds): who holds a share of the vault.
    pub participants: Vec<String>,
    /// Validators left out of earlier attempts, why, and whose votes decided it.
    pub excluded: Vec<ExclusionView>,
    /// Exclusion votes cast in the current attempt (while a DKG is stuck).
    pub votes: Vec<VoteView>,
    /// Why it failed.
    pub reason: Option<String>,
    /// This node's processor messaging key for the coin.
    pub processor_key: KeyStatus,
    /// Signing ceremonies and cheaters.
    pub signing: SigningView,
    /// Validators whose messages this vault's processor rejected (forged, malformed or
    /// contradicting what it holds), how many, and the latest reason.
    #[serde(default)]
    pub rejected: Vec<RejectedView>,
}

/// A validator whose messages were rejected.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RejectedView {
    /// PeerId.
    pub peer: String,
    /// Messages rejected.
    pub count: u64,
    /// Kind of the latest.
    pub kind: String,
    /// Why the latest was rejected.
    pub reason: String,
}

/// A validator left out of a DKG attempt.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExclusionView {
    /// PeerId.
    pub peer: String,
    /// The attempt it was left out of.
    pub attempt: u32,
    /// Why (`silent_commitments`, `invalid_share`, `false_accusation`, `equivocation`, ...).
    pub reason: String,
    /// Whether the reason is proven by evidence every validator checked (rather than votes).
    pub proven: bool,
    /// Voters (PeerIds).
    pub voters: Vec<String>,
}

/// An exclusion vote.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VoteView {
    /// Voter (PeerId).
    pub voter: String,
    /// Round.
    pub round: u32,
    /// Who it would leave out, with reasons (`peer: reason`).
    pub exclude: Vec<String>,
}

/// Signing, per coin.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SigningView {
    /// Requests this node originates with an attempt running.
    pub originating: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Ceremonies in progress (any originator).
    pub ceremonies: usize,
    /// Signers caught sending invalid preprocesses or shares (most recent last).
    pub cheaters: Vec<CheaterView>,
    /// Requests known here that are not finished (waiting for approvals, or signing).
    #[serde(default)]
    pub unfinished: usize,
    /// Requests waiting for approvals (at most 32, earliest expiry first).
    #[serde(default)]
    pub waiting_for_approvals: Vec<WaitingView>,
}

/// A signing request waiting for approvals.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WaitingView {
    /// Request id, hex.
    pub id: String,
    /// Who approved it so far.
    pub approvals: Vec<String>,
    /// Unix time (seconds) when it expires unless signed.
    pub expires_at: u64,
    /// Whether this node's operator approved it.
    pub approved_here: bool,
}

/// One cheater report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheaterView {
    /// The cheating validator.
    pub peer: String,
    /// Request id, hex.
    pub request: String,
    /// Attempt.
    pub attempt: u32,
    /// What it sent.
    pub reason: String,
}

impl Status {
    /// `vaultd peers`: one line per validator of the network.
    pub fn peers_table(&self) -> String {
        let mut out = format!(
            "{:<54} {:<10} {:>8}  {:<16} {}\n",
            "VALIDATOR", "STATE", "RTT", "AGENT", "ADDRESS"
        );
        for v in &self.validators {
            let state = if v.connected { "connected" } else { "missing" };
            let rtt = v
                .rtt_ms
                .map(|ms| format!("{ms:.1}ms"))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<54} {:<10} {:>8}  {:<16} {}\n",
                v.peer_id,
                state,
                rtt,
                v.agent.as_deref().unwrap_or("-"),
                v.addr.as_deref().unwrap_or("-")
            ));
        }
        out
    }

    /// `vaultd status`: a readable summary (peers, vaults, ceremonies, failures).
    pub fn summary(&self) -> String {
        let connected = self.validators.iter().filter(|v| v.connected).count();
        let mut out = format!(
            "validator {}\nnetwork {} (session {}), listening on {}\nadvertised to peers: {}\n\npeers: {connected} of {} validators connected\n",
            self.peer_id,
            self.network,
            self.session,
            self.listen_addrs.join(", "),
            if self.advertised_addrs.is_empty() { "none".to_string() } else { self.advertised_addrs.join(", ") },
            self.validators.len()
        );
        for line in self.peers_table().lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("\nvaults:\n");
        for v in &self.vaults {
            let detail = match v.status.as_str() {
                "active" | "retiring" => v.address.clone(),
                "pending" => format!(
                    "DKG attempt {}: {} {}/{}",
                    v.attempt, v.phase, v.progress.0, v.progress.1
                ),
                _ => v.reason.clone().unwrap_or_default(),
            };
            out.push_str(&format!(
                "  {:<4} session {} {:<9} {}-of-{}  {}\n",
                v.coin,
                v.session,
                v.status,
                v.threshold,
                v.participants.len(),
                detail
            ));
            if v.signing.originating + v.signing.queued + v.signing.ceremonies > 0 {
                out.push_str(&format!(
                    "       signing: {} originating, {} queued, {} ceremonies in progress\n",
                    v.signing.originating, v.signing.queued, v.signing.ceremonies
                ));
            }
            for w in &v.signing.waiting_for_approvals {
                out.push_str(&format!(
                    "       waiting for approvals: request {} approved by {} of {} ({}){}\n",
                    w.id,
                    w.approvals.len(),
                    v.threshold,
                    w.approvals.join(", "),
                    if w.approved_here {
                        ""
                    } else {
                        "; not approved here"
                    }
                ));
            }
            for e in &v.excluded {
                out.push_str(&format!(
                    "       left out of attempt {}: {} ({}{})\n",
                    e.attempt,
                    e.peer,
                    e.reason,
                    if e.proven { ", proven" } else { ", by votes" }
                ));
            }
            for vote in &v.votes {
                out.push_str(&format!(
                    "       vote by {} (round {}): leave out {}\n",
                    vote.voter,
                    vote.round,
                    vote.exclude.join(", ")
                ));
            }
        }
        let failures: Vec<String> = self
            .vaults
            .iter()
            .flat_map(|v| {
                v.signing.cheaters.iter().map(move |c| {
                    format!(
                        "  {} signing request {} attempt {}: {} {}",
                        v.coin, c.request, c.attempt, c.peer, c.reason
                    )
                })
            })
            .collect();
        if !failures.is_empty() {
            out.push_str("\nrecent failures:\n");
            for f in failures {
                out.push_str(&f);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_base58_ids_for_known_and_unknown_validators() {
        let known = ValidatorId::from_ed25519(&[3; 32]);
        let unknown = ValidatorId::from_ed25519(&[4; 32]);
        let names = Names::new([&known]);
        assert_eq!(names.name(&known), known.to_string());
        assert_eq!(
            names.name(&known),
            libp2p::PeerId::from_bytes(known.as_bytes())
                .unwrap()
                .to_string()
        );
        assert_eq!(names.name(&unknown), unknown.to_string());
    }
}
