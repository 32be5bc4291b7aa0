//! Blame evidence of one DKG attempt ([`KeyGenBlame`]): faults everyone can verify, so that a
//! participant votes at once instead of waiting for the timeout (see `attempts.rs`).
//!
//! * An invalid share, judged by dkg-pedpop's blame proof: the sender if the share is bad, the
//!   accuser if the accusation is false.
//! * Two different commitment messages signed by the same participant (equivocation).
//! * Commitments whose proof of knowledge fails (found by every participant alike).
//!
//! The evidence is per attempt: it lives in the attempt's [`KeyGen`] and goes with it.

use std::collections::{BTreeMap, BTreeSet};

use super::{payload_body, KeyGen, Stage, COMMITMENT_DOMAIN, SHARE_DOMAIN};
use crate::{
    dkg,
    error::{ProtocolError, Result},
    ids::ValidatorId,
    keys::verify_processor_signature,
    messages::{BlameEvidence, ExclusionReason, KeyGenBlame, ProcessorMessage},
    party::Party,
    processor::{Handled, Output},
};

/// Most signed copies of one participant's commitments kept as evidence.
const MAX_COPIES: usize = 2;
const BLAME_DOMAIN: &[u8] = b"KeyGenBlame";

/// A signed copy of a commitment message: (bytes, signature).
type SignedCopy = (Vec<u8>, Vec<u8>);

/// What one attempt has proven, and the copies it may need to.
#[derive(Default)]
pub(crate) struct Evidence {
    /// Faults proven by evidence this node checked.
    proven: BTreeMap<ValidatorId, ExclusionReason>,
    /// A fault was proven since the processor last asked (it votes at once).
    fresh: bool,
    /// Signed commitment copies per participant index.
    copies: BTreeMap<u16, Vec<SignedCopy>>,
    /// Participant indexes whose commitments we published.
    published: BTreeSet<u16>,
    /// Test-only sabotage: a false accusation was made in this attempt.
    #[cfg(feature = "fault-injection")]
    accused_falsely: bool,
}

impl Evidence {
    /// Keep a signed copy of participant `l`'s commitments (bounded).
    pub(crate) fn record_commitment(&mut self, l: u16, bytes: &[u8], signature: &[u8]) {
        let copies = self.copies.entry(l).or_default();
        if copies.len() < MAX_COPIES && !copies.iter().any(|(b, _)| b == bytes) {
            copies.push((bytes.to_vec(), signature.to_vec()));
        }
    }

    /// The faults proven so far.
    pub(crate) fn proven(&self) -> &BTreeMap<ValidatorId, ExclusionReason> {
        &self.proven
    }

    /// Whether any fault is proven.
    pub(crate) fn has_proofs(&self) -> bool {
        !self.proven.is_empty()
    }

    /// `v` signed a confirmation of a group key other than ours (which the agreed
    /// commitments give).
    pub(crate) fn wrong_group_key(&mut self, v: ValidatorId) {
        self.prove(v, ExclusionReason::WrongGroupKey);
    }

    fn prove(&mut self, v: ValidatorId, reason: ExclusionReason) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.proven.entry(v) {
            e.insert(reason);
            self.fresh = true;
        }
    }
}

impl KeyGen {
    /// Whether a fault was proven since the last call (then the processor votes at once).
    pub(crate) fn take_fresh_proof(&mut self) -> bool {
        std::mem::take(&mut self.evidence.fresh)
    }

    /// Test-only sabotage: mark this attempt's false accusation as made; false if it was.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn mark_accused_falsely(&mut self) -> bool {
        !std::mem::replace(&mut self.evidence.accused_falsely, true)
    }

    /// A fault this node verified itself (ignored once the DKG is decided).
    pub(crate) fn prove(&mut self, v: ValidatorId, reason: ExclusionReason) {
        if !self.decided() {
            self.evidence.prove(v, reason);
        }
    }

    pub(crate) fn publish_blame(
        &self,
        party: &Party,
        evidence: BlameEvidence,
        out: &mut Vec<Output>,
    ) {
        let mut blame = KeyGenBlame {
            coin: party.coin(),
            context: self.attempt().context(),
            evidence,
            signature: Vec::new(),
        };
        blame.signature = party.signer().sign(BLAME_DOMAIN, &blame_body(&blame));
        out.push(Output::Bus(ProcessorMessage::KeyGenBlame(blame)));
    }

    /// Our share from `accused` failed: publish the evidence, and prove the fault.
    pub(crate) fn blame_share(
        &mut self,
        party: &Party,
        accused: ValidatorId,
        share: Vec<u8>,
        share_signature: Vec<u8>,
        proof: Option<Vec<u8>>,
        out: &mut Vec<Output>,
    ) {
        self.publish_blame(
            party,
            BlameEvidence::InvalidShare {
                accused: accused.clone(),
                share,
                share_signature,
                proof,
            },
            out,
        );
        self.prove(accused, ExclusionReason::InvalidShare);
    }

    /// Echoes differ: publish our signed copy of each commitment message whose hash differs
    /// from someone's echo.
    pub(crate) fn publish_differing_commitments(&mut self, party: &Party, out: &mut Vec<Output>) {
        let Some(mine) = self.hashes.get(&self.attempt().params().i).cloned() else {
            return;
        };
        let mut differing = BTreeSet::new();
        for hashes in self.hashes.values() {
            for (k, (a, b)) in mine.iter().zip(hashes).enumerate() {
                if a != b {
                    if let Ok(l) = u16::try_from(k + 1) {
                        differing.insert(l);
                    }
                }
            }
        }
        for l in differing {
            self.publish_commitment_copy(party, l, out);
        }
        self.check_equivocation();
    }

    /// Publish (once) our signed copy of participant `l`'s commitments, which someone else's
    /// copy contradicts, and prove the equivocation if we hold both.
    pub(crate) fn publish_commitment_copy(&mut self, party: &Party, l: u16, out: &mut Vec<Output>) {
        if self.evidence.published.insert(l) {
            if let (Some(v), Some(bytes), Some(sig)) = (
                self.attempt().member_at(l).cloned(),
                self.commitments.get(&l).cloned(),
                self.commitment_sigs.get(&l).cloned(),
            ) {
                self.publish_blame(
                    party,
                    BlameEvidence::Commitments {
                        accused: v,
                        commitments: bytes,
                        signature: sig,
                    },
                    out,
                );
            }
        }
        self.check_equivocation();
    }

    /// Two different signed commitment messages from one participant prove it equivocated.
    pub(crate) fn check_equivocation(&mut self) {
        let equivocators: Vec<ValidatorId> = self
            .evidence
            .copies
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .filter_map(|(l, _)| self.attempt().member_at(*l).cloned())
            .collect();
        for v in equivocators {
            self.prove(v, ExclusionReason::Equivocation);
        }
    }

    /// Evidence from a participant.
    pub(crate) fn on_blame(
        &mut self,
        party: &Party,
        from: &ValidatorId,
        b: &KeyGenBlame,
    ) -> Result<Handled> {
        if !party.def().is_validator(from) || from == party.me() {
            return Err(ProtocolError::UnknownValidator(from.clone()));
        }
        if b.coin != party.coin() {
            return Err(ProtocolError::peer(from, "blame for another coin"));
        }
        if let Some(h) = self.classify(&b.context) {
            return Ok(h);
        }
        let accuser = self.attempt().index_of(from)?;
        let accused_id = b.evidence.accused().clone();
        let accused = self.attempt().member_index(&accused_id).ok_or_else(|| {
            ProtocolError::peer(from, format!("blames {accused_id}, not a participant"))
        })?;
        if accused == accuser {
            return Err(ProtocolError::peer(from, "blames itself"));
        }
        let (Some(accuser_key), Some(accused_key)) =
            (party.signer_of(from), party.signer_of(&accused_id))
        else {
            return Ok(Handled::Wait);
        };
        if !verify_processor_signature(&accuser_key, BLAME_DOMAIN, &blame_body(b), &b.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad processor signature on blame",
            ));
        }
        let coin = party.coin();
        match &b.evidence {
            BlameEvidence::Commitments {
                commitments,
                signature,
                ..
            } => {
                let body = payload_body(coin, &b.context, &accused_id, None, commitments);
                if !verify_processor_signature(&accused_key, COMMITMENT_DOMAIN, &body, signature) {
                    return Err(ProtocolError::peer(
                        from,
                        format!("evidence against {accused_id} is not signed by it"),
                    ));
                }
                self.evidence
                    .record_commitment(accused, commitments, signature);
                self.check_equivocation();
            }
            BlameEvidence::InvalidShare {
                share,
                share_signature,
                proof,
                ..
            } => {
                let body = payload_body(coin, &b.context, &accused_id, Some(from), share);
                if !verify_processor_signature(&accused_key, SHARE_DOMAIN, &body, share_signature) {
                    return Err(ProtocolError::peer(
                        from,
                        format!("evidence against {accused_id} is not signed by it"),
                    ));
                }
                // Judging needs the attempt's n commitments, agreed by the echo; a decided DKG
                // has nothing left to judge.
                if self.decided() {
                    return Ok(Handled::Done);
                }
                if self.stage < Stage::SharesSent {
                    return Ok(Handled::Wait);
                }
                let faulty = dkg::judge(
                    coin.curve(),
                    self.attempt().params(),
                    &self.commitments,
                    accused,
                    accuser,
                    share,
                    proof.as_deref(),
                )
                .map_err(|e| ProtocolError::Dkg(format!("judging {from}'s blame: {e}")))?;
                if faulty == accused {
                    self.prove(accused_id, ExclusionReason::InvalidShare);
                } else {
                    self.prove(from.clone(), ExclusionReason::FalseAccusation);
                }
            }
        }
        Ok(Handled::Done)
    }
}

fn blame_body(b: &KeyGenBlame) -> Vec<u8> {
    let unsigned = KeyGenBlame {
        signature: Vec::new(),
        ..b.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}
