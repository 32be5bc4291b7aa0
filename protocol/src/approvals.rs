//! Approvals: a vault signs a request only once t of its validators' operators approved it.
//!
//! A request is named by its content ([`request_id`]: network, coin, vault, messages and the
//! client's optional reference), so the same request submitted to several validators' APIs is
//! one request. Each submission is that operator's approval: its processor signs a
//! [`SignApproval`] (valid until a wall-clock expiry), persists it in the request's record and
//! gossips it. Every validator keeps the approvals it verified in a [`Book`]; a ceremony starts
//! once t approvals are live, with signers among the approvers, and each signer releases its
//! preprocess only for a request its own operator approved (`signing.rs`).
//!
//! What a hostile validator can do with approvals, and why it gains nothing:
//! - speak for another validator: an approval is accepted only from its approver (the gossip
//!   author) and only with the approver's processor signature;
//! - replay one: the same approval again changes nothing, an expired one is refused, and the id
//!   binds network, coin and vault, so it counts for nothing else;
//! - fill the book: each approver holds at most [`MAX_PER_APPROVER`] unfinished requests here,
//!   and a request nobody here approved is forgotten (its record deleted) when it expires.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::{
    ids::ValidatorId,
    keys::{verify_processor_signature, ProcessorSigner},
    messages::SignApproval,
    vault::SignRecord,
    Coin,
};

/// How long an approval counts unless the operator says otherwise (`--approval-ttl`).
pub const DEFAULT_TTL_S: u64 = 3600;
/// Longest approval lifetime accepted from a peer.
pub const MAX_TTL_S: u64 = 7 * 24 * 3600;
/// How far a peer's clock may run ahead of ours.
pub const CLOCK_SKEW_S: u64 = 300;
/// Unfinished requests one approver may hold in another validator's book.
pub const MAX_PER_APPROVER: usize = 256;
/// Longest client reference (bytes) a request may carry.
pub const MAX_REFERENCE: usize = 256;
const DOMAIN: &[u8] = b"SignApproval";

/// The id of a request: a hash of everything that decides what gets signed and by which key.
pub fn request_id(
    network: &str,
    coin: Coin,
    vault: &[u8; 32],
    messages: &[Vec<u8>],
    reference: Option<&str>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vaultd sign request v1");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(network.as_bytes());
    field(&[coin.id()]);
    field(vault);
    field(&(messages.len() as u64).to_be_bytes());
    for m in messages {
        field(m);
    }
    match reference {
        None => field(&[0]),
        Some(r) => {
            field(&[1]);
            field(r.as_bytes());
        }
    }
    h.finalize().into()
}

fn body(a: &SignApproval) -> Vec<u8> {
    let unsigned = SignApproval {
        signature: Vec::new(),
        ..a.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}

/// Our approval of request `id`, signed with our processor signature key.
pub(crate) fn sign(
    signer: &ProcessorSigner,
    coin: Coin,
    id: [u8; 32],
    vault: [u8; 32],
    approver: ValidatorId,
    expires_at: u64,
) -> SignApproval {
    let mut a = SignApproval {
        coin,
        id,
        vault,
        approver,
        expires_at,
        signature: Vec::new(),
    };
    a.signature = signer.sign(DOMAIN, &body(&a));
    a
}

/// Whether `a` carries its approver's signature under processor key `key`.
pub(crate) fn verify(key: &[u8; 32], a: &SignApproval) -> bool {
    verify_processor_signature(key, DOMAIN, &body(a), &a.signature)
}

fn rank_key(id: &[u8; 32], v: &ValidatorId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vaultd originator v1");
    h.update(id);
    h.update(v.as_bytes());
    h.finalize().into()
}

/// `v`'s turn to originate `record`'s request among its live approvers at `unix`: the first
/// approver (earliest expiry: usually who approved first) is 0, ties broken by a per-request
/// hash. Every validator that holds the same approvals computes the same order.
pub(crate) fn turn_of(record: &SignRecord, v: &ValidatorId, unix: u64) -> usize {
    let mut live: Vec<(u64, [u8; 32], &ValidatorId)> = record
        .approvals
        .iter()
        .filter(|a| a.expires_at > unix)
        .map(|a| (a.expires_at, rank_key(&record.id, &a.approver), &a.approver))
        .collect();
    live.sort();
    live.iter()
        .position(|(_, _, a)| *a == v)
        .unwrap_or(live.len())
}

/// One request known here that is not finished.
pub(crate) struct Entry {
    /// Its record: content (once our operator approved), the verified approvals, expiry.
    pub(crate) record: SignRecord,
    /// When (processor clock) t live approvals were first seen here, ours among them; moved
    /// on whenever another approver's attempt shows the request is being signed.
    pub(crate) quorum_since: Option<u64>,
}

/// A request waiting for approvals, for `/status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WaitingView {
    /// Request id, hex.
    pub id: String,
    /// Who approved it so far.
    pub approvals: Vec<ValidatorId>,
    /// Unix time (seconds) when it expires unless signed.
    pub expires_at: u64,
    /// Whether this node's operator approved it.
    pub approved_here: bool,
}

/// The unfinished requests known here and their approvals.
#[derive(Default)]
pub(crate) struct Book {
    entries: BTreeMap<[u8; 32], Entry>,
}

impl Book {
    pub(crate) fn get(&self, id: &[u8; 32]) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &[u8; 32]) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    pub(crate) fn remove(&mut self, id: &[u8; 32]) -> Option<Entry> {
        self.entries.remove(id)
    }

    pub(crate) fn ids(&self) -> Vec<[u8; 32]> {
        self.entries.keys().copied().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Unfinished requests `v` approved.
    pub(crate) fn held_by(&self, v: &ValidatorId) -> usize {
        self.entries
            .values()
            .filter(|e| e.record.approved_by(v))
            .count()
    }

    /// The entry of `record.id`, made from `record` if new (a restart, or a first approval).
    pub(crate) fn entry(&mut self, record: SignRecord) -> &mut Entry {
        self.entries.entry(record.id).or_insert(Entry {
            record,
            quorum_since: None,
        })
    }

    /// The approvers of `id` whose approval still counts at `unix` seconds.
    pub(crate) fn live(&self, id: &[u8; 32], unix: u64) -> Vec<ValidatorId> {
        self.entries.get(id).map_or_else(Vec::new, |e| {
            e.record
                .approvals
                .iter()
                .filter(|a| a.expires_at > unix)
                .map(|a| a.approver.clone())
                .collect()
        })
    }

    /// Requests whose expiry has passed at `unix` seconds.
    pub(crate) fn expired(&self, unix: u64) -> Vec<[u8; 32]> {
        self.entries
            .iter()
            .filter(|(_, e)| e.record.expires_at <= unix)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Requests waiting (those `signing` does not name), earliest expiry first, at most `most`.
    pub(crate) fn waiting(
        &self,
        me: &ValidatorId,
        most: usize,
        signing: impl Fn(&[u8; 32]) -> bool,
    ) -> Vec<WaitingView> {
        let mut v: Vec<WaitingView> = self
            .entries
            .iter()
            .filter(|(id, _)| !signing(id))
            .map(|(id, e)| WaitingView {
                id: hex::encode(id),
                approvals: e
                    .record
                    .approvals
                    .iter()
                    .map(|a| a.approver.clone())
                    .collect(),
                expires_at: e.record.expires_at,
                approved_here: e.record.approved_by(me),
            })
            .collect();
        v.sort_by_key(|w| w.expires_at);
        v.truncate(most);
        v
    }
}

/// Add approval `a` to `record` (once per approver); the request expires with its earliest
/// approval. Returns whether it was new.
pub(crate) fn add(record: &mut SignRecord, a: SignApproval) -> bool {
    if record.approved_by(&a.approver) {
        return false;
    }
    record.expires_at = if record.approvals.is_empty() {
        a.expires_at
    } else {
        record.expires_at.min(a.expires_at)
    };
    record.approvals.push(a);
    true
}

/// Who approved, for a reason or a log line: "A, B (2 of the 3 needed)".
pub(crate) fn approvers_text(record: &SignRecord, threshold: u16) -> String {
    let names: Vec<String> = record
        .approvals
        .iter()
        .map(|a| a.approver.to_string())
        .collect();
    let names = if names.is_empty() {
        "nobody".to_string()
    } else {
        names.join(", ")
    };
    format!(
        "{names} ({} of the {threshold} needed)",
        record.approvals.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_binds_every_field() {
        let v = [7u8; 32];
        let m = vec![vec![1u8; 32]];
        let base = request_id("net", Coin::Btc, &v, &m, None);
        assert_eq!(base, request_id("net", Coin::Btc, &v, &m, None));
        assert_ne!(base, request_id("other", Coin::Btc, &v, &m, None));
        assert_ne!(base, request_id("net", Coin::Eth, &v, &m, None));
        assert_ne!(base, request_id("net", Coin::Btc, &[8; 32], &m, None));
        assert_ne!(base, request_id("net", Coin::Btc, &v, &[vec![2; 32]], None));
        assert_ne!(base, request_id("net", Coin::Btc, &v, &m, Some("")));
        assert_ne!(
            request_id("net", Coin::Btc, &v, &m, Some("a")),
            request_id("net", Coin::Btc, &v, &m, Some("b"))
        );
        // Message boundaries count: [ab] is not [a, b].
        assert_ne!(
            request_id("net", Coin::Sol, &v, &[vec![1, 2]], None),
            request_id("net", Coin::Sol, &v, &[vec![1], vec![2]], None)
        );
    }

    #[test]
    fn an_approval_verifies_only_unchanged_and_under_its_key() {
        let keys = crate::keys::NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let other = crate::keys::NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let signer = keys.processor_signer();
        let a = sign(
            &signer,
            Coin::Btc,
            [1; 32],
            [2; 32],
            keys.validator_id(),
            100,
        );
        assert!(verify(&signer.public(), &a));
        assert!(!verify(&other.processor_signer().public(), &a));
        for forged in [
            SignApproval {
                id: [9; 32],
                ..a.clone()
            },
            SignApproval {
                vault: [9; 32],
                ..a.clone()
            },
            SignApproval {
                expires_at: 101,
                ..a.clone()
            },
            SignApproval {
                approver: other.validator_id(),
                ..a.clone()
            },
        ] {
            assert!(!verify(&signer.public(), &forged));
        }
    }

    #[test]
    fn a_request_expires_with_its_earliest_approval() {
        let keys = crate::keys::NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let other = crate::keys::NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let mut r = SignRecord::pending([1; 32], Coin::Btc, keys.validator_id(), [2; 32], vec![]);
        let s = keys.processor_signer();
        assert!(add(
            &mut r,
            sign(&s, Coin::Btc, [1; 32], [2; 32], keys.validator_id(), 50)
        ));
        assert!(!add(
            &mut r,
            sign(&s, Coin::Btc, [1; 32], [2; 32], keys.validator_id(), 10)
        ));
        let o = other.processor_signer();
        assert!(add(
            &mut r,
            sign(&o, Coin::Btc, [1; 32], [2; 32], other.validator_id(), 90)
        ));
        assert_eq!(r.expires_at, 50);
        assert!(approvers_text(&r, 3).ends_with("(2 of the 3 needed)"));
    }
}
