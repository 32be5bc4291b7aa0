//! One DKG attempt's machine (steps 13 to 20): commitments, their echo, shares, the group key
//! and its confirmations, and what the attempt observed about its participants (stalls in
//! `stall`, evidence in `blame`).
//!
//! A new attempt gets a new machine: nothing of an abandoned attempt survives it. The machine
//! never decides the vault itself; it reports [`Outcome`]s (key computed, confirmed, failed)
//! that the processor turns into a vault record, and proven faults that the processor turns
//! into a vote (`attempts.rs`).
//!
//! Why a file of this size: it is steps 13 to 20 in the order the spec gives them, each
//! handler next to the check it guards; blame evidence and stall detection are the child
//! modules `blame` and `stall`.

use std::{collections::BTreeMap, ops::ControlFlow};

use zeroize::Zeroizing;

mod blame;
mod relay;
mod stall;

use crate::{
    attempts::Attempt,
    dkg::{self, DkgFailure, DkgOutput},
    error::{ProtocolError, Result},
    ids::ValidatorId,
    keys::verify_processor_signature,
    messages::*,
    party::Party,
    processor::{Handled, Output, Phase},
    seal::SealKind,
};

const DIGEST_DOMAIN: &[u8] = b"KeyGenCommitmentsDigest";
pub(crate) const ADDRESS_DOMAIN: &[u8] = b"PublicAddressAvailable";
pub(crate) const COMMITMENT_DOMAIN: &[u8] = b"EncryptedKeyGenCommitment";
pub(crate) const SHARE_DOMAIN: &[u8] = b"EncryptedKeyShare";

/// How far the attempt has gone (in order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Keys are still being exchanged (steps 8-12): nothing of the DKG sent.
    #[default]
    KeyExchange,
    /// Our commitments are out (step 13); waiting for everyone's and the echo.
    Committed,
    /// Our shares are out (step 16); waiting for everyone's.
    SharesSent,
    /// Our key share and the group key are computed (step 20); waiting for the confirmations.
    Computed,
    /// Over: the vault is active, failed, or we are left out. Nothing more happens here.
    Decided,
}

/// What the machine reports to the processor.
pub(crate) enum Outcome {
    /// Step 20: our key share and the group key (the processor stores them as a pending
    /// vault, then calls [`KeyGen::check_confirmations`]).
    Computed(DkgOutput),
    /// Every participant confirmed the group key: `Ok` if all agree, else who differed.
    Confirmed(std::result::Result<(), String>),
    /// The DKG cannot go on, and why.
    Failed(String),
}

/// One attempt's DKG.
pub(crate) struct KeyGen {
    attempt: Attempt,
    entropy: Zeroizing<[u8; 32]>,
    stage: Stage,
    commitments: BTreeMap<u16, Vec<u8>>,
    /// Each sender's signature over its commitments (ours included).
    commitment_sigs: BTreeMap<u16, Vec<u8>>,
    digests: BTreeMap<u16, [u8; 32]>,
    /// Each echo's per-participant commitment hashes.
    hashes: BTreeMap<u16, Vec<[u8; 32]>>,
    shares: BTreeMap<u16, Vec<u8>>,
    /// Each sender's signature over the share it sent us.
    share_sigs: BTreeMap<u16, Vec<u8>>,
    confirmations: BTreeMap<u16, Vec<u8>>,
    /// What `relay` keeps: the signed messages it can relay, complaints, answers.
    relay: relay::Relay,
    /// What blame.rs keeps: proven faults, signed commitment copies, what we published.
    evidence: blame::Evidence,
    /// When the phase last made progress (`stall.rs`).
    stall: stall::Stall,
    /// Round 2's machine, for round 3 (none after a restart: round 3 regenerates it).
    held: Option<dkg::HeldKeyMachine>,
    outcomes: Vec<Outcome>,
}

impl KeyGen {
    /// A fresh machine for `attempt`, seeded by this node's DKG entropy (so a restarted node
    /// regenerates the same commitments and shares for the same attempt).
    pub(crate) fn new(attempt: Attempt, entropy: Zeroizing<[u8; 32]>) -> Self {
        KeyGen {
            attempt,
            entropy,
            stage: Stage::default(),
            commitments: BTreeMap::new(),
            commitment_sigs: BTreeMap::new(),
            digests: BTreeMap::new(),
            hashes: BTreeMap::new(),
            shares: BTreeMap::new(),
            share_sigs: BTreeMap::new(),
            confirmations: BTreeMap::new(),
            relay: Default::default(),
            evidence: Default::default(),
            stall: stall::Stall::default(),
            held: None,
            outcomes: Vec::new(),
        }
    }

    /// The machine for the next attempt (same entropy; everything else starts over).
    pub(crate) fn next(&self, attempt: Attempt) -> Self {
        KeyGen::new(attempt, self.entropy.clone())
    }

    /// The attempt this machine runs.
    pub(crate) fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    /// The commitments received (ours included), by participant index.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn commitments(&self) -> &BTreeMap<u16, Vec<u8>> {
        &self.commitments
    }

    /// The shares received, by sender index, with the sender's signature over each.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn shares(&self) -> impl Iterator<Item = (u16, &Vec<u8>, Option<&Vec<u8>>)> {
        self.shares
            .iter()
            .map(|(l, s)| (*l, s, self.share_sigs.get(l)))
    }

    /// This attempt's DKG is over here.
    pub(crate) fn stop(&mut self) {
        self.stage = Stage::Decided;
    }

    /// Whether the DKG is over here (active, failed or left out).
    pub(crate) fn decided(&self) -> bool {
        self.stage == Stage::Decided
    }

    /// Whether a DKG runs: our commitments are out and the vault is not decided.
    pub(crate) fn running(&self) -> bool {
        self.stage >= Stage::Committed && self.stage < Stage::Decided
    }

    /// What the machine has to report, in order.
    pub(crate) fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// Where the DKG stands before a vault exists (`Decided` reads as the vault's status).
    pub(crate) fn phase(&self) -> Phase {
        let n = usize::from(self.attempt.params().n);
        match self.stage {
            Stage::KeyExchange => Phase::KeyExchange,
            Stage::Committed if self.commitments.len() < n => Phase::Commitments,
            Stage::Committed => Phase::CommitmentEcho,
            Stage::SharesSent => Phase::Shares,
            Stage::Computed => Phase::Confirming,
            Stage::Decided => Phase::Active,
        }
    }

    /// Progress counters of a running phase: (received, expected).
    pub(crate) fn progress(&self, party: &Party, phase: Phase) -> (usize, usize) {
        let n = usize::from(self.attempt.params().n);
        match phase {
            Phase::KeyExchange => (
                self.attempt
                    .participants()
                    .iter()
                    .filter(|v| party.signer_of(v).is_some())
                    .count(),
                n - 1,
            ),
            Phase::Commitments => (self.commitments.len(), n),
            Phase::CommitmentEcho => (self.digests.len(), n),
            Phase::Shares => (self.shares.len(), n - 1),
            Phase::Confirming => (self.confirmations.len(), n),
            Phase::Active | Phase::Failed | Phase::Excluded => (n, n),
        }
    }

    /// Step 13: once every participant's processor key is known, send our commitments.
    pub(crate) fn start(&mut self, party: &Party, out: &mut Vec<Output>) -> Result<()> {
        let me = party.me();
        let others: Vec<ValidatorId> = self
            .attempt
            .participants()
            .iter()
            .filter(|v| *v != me)
            .cloned()
            .collect();
        if self.stage >= Stage::Committed || others.iter().any(|v| party.signer_of(v).is_none()) {
            return Ok(());
        }
        let params = *self.attempt.params();
        let coin = party.coin();
        let commitments = dkg::commitments(coin.curve(), &self.entropy, &params)
            .map_err(|e| ProtocolError::Dkg(e.to_string()))?;
        let signature = party.signer().sign(
            COMMITMENT_DOMAIN,
            &payload_body(coin, &params.context, me, None, &commitments),
        );
        let payload = postcard::to_stdvec(&KeyGenPayload {
            bytes: commitments.clone(),
            signature: signature.clone(),
        })
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let mut sends = Vec::new();
        for v in &others {
            let sealed =
                party.seal_with(SealKind::KeyGenCommitment, v, params.context, &payload)?;
            sends.push(Output::Bus(ProcessorMessage::EncryptedKeyGenCommitmentOut(
                EncryptedKeyGenCommitmentOut {
                    coin,
                    to: v.clone(),
                    context: params.context,
                    sealed,
                },
            )));
        }
        self.stage = Stage::Committed;
        self.evidence
            .record_commitment(params.i, &commitments, &signature);
        self.commitments.insert(params.i, commitments);
        self.commitment_sigs.insert(params.i, signature);
        out.extend(sends);
        self.after_commitment(party, out)
    }

    /// Where a message for `context` belongs (see [`Attempt::classify`]).
    pub(crate) fn classify(&self, context: &[u8; 32]) -> Option<Handled> {
        self.attempt.classify(context, self.decided())
    }

    /// Open a signed DKG payload and check its sender's processor signature; `None` while the
    /// sender's keys are unknown.
    fn open_signed(
        &self,
        party: &Party,
        kind: SealKind,
        from: &ValidatorId,
        sealed: &[u8],
        domain: &[u8],
        to: Option<&ValidatorId>,
    ) -> Result<Option<KeyGenPayload>> {
        let Some(signer) = party.signer_of(from) else {
            return Ok(None);
        };
        let context = self.attempt.context();
        let Some(bytes) = party.open_with(kind, from, context, sealed)? else {
            return Ok(None);
        };
        let payload: KeyGenPayload = postcard::from_bytes(&bytes)
            .map_err(|e| ProtocolError::peer(from, format!("DKG payload: {e}")))?;
        let body = payload_body(party.coin(), &context, from, to, &payload.bytes);
        if !verify_processor_signature(&signer, domain, &body, &payload.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad processor signature on its DKG payload",
            ));
        }
        Ok(Some(payload))
    }

    /// What every sealed DKG message (commitments, shares) passes before it is opened: a
    /// validator's, addressed to us, for this attempt while it still takes them. Continues
    /// with the sender's participant index.
    fn admit_sealed(
        &self,
        party: &Party,
        from: &ValidatorId,
        coin: crate::Coin,
        to: &ValidatorId,
        context: &[u8; 32],
    ) -> Result<ControlFlow<Handled, u16>> {
        party.check_sender(from, coin)?;
        if to != party.me() {
            return Err(ProtocolError::peer(
                from,
                "message addressed to another validator",
            ));
        }
        if let Some(h) = self.classify(context) {
            return Ok(ControlFlow::Break(h));
        }
        if self.stage >= Stage::Computed {
            return Ok(ControlFlow::Break(Handled::Done));
        }
        self.attempt.index_of(from).map(ControlFlow::Continue)
    }

    /// Step 16 (first half): keep a participant's commitments.
    pub(crate) fn on_commitment(
        &mut self,
        party: &Party,
        m: &EncryptedKeyGenCommitmentIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        let l = match self.admit_sealed(party, &m.from, m.msg.coin, &m.msg.to, &m.msg.context)? {
            ControlFlow::Continue(l) => l,
            ControlFlow::Break(h) => return Ok(h),
        };
        let Some(payload) = self.open_signed(
            party,
            SealKind::KeyGenCommitment,
            &m.from,
            &m.msg.sealed,
            COMMITMENT_DOMAIN,
            None,
        )?
        else {
            return Ok(Handled::Wait);
        };
        self.take_commitment(party, &m.from, l, payload, out)?;
        Ok(Handled::Done)
    }

    /// Keep participant `l`'s (`author`'s) signed commitments, received directly or relayed.
    /// A second, different signed copy proves it equivocated: ours is published as evidence.
    fn take_commitment(
        &mut self,
        party: &Party,
        author: &ValidatorId,
        l: u16,
        payload: KeyGenPayload,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let p = dkg::DkgParams {
            i: l,
            ..*self.attempt.params()
        };
        dkg::validate_commitment(party.coin().curve(), &p, &payload.bytes)
            .map_err(|e| ProtocolError::peer(author, format!("malformed commitments: {e}")))?;
        if let Some(existing) = self.commitments.get(&l) {
            if *existing != payload.bytes {
                self.evidence
                    .record_commitment(l, &payload.bytes, &payload.signature);
                self.publish_commitment_copy(party, l, out);
                return Err(ProtocolError::peer(
                    author,
                    "sent two different commitments",
                ));
            }
            return Ok(());
        }
        self.evidence
            .record_commitment(l, &payload.bytes, &payload.signature);
        self.commitments.insert(l, payload.bytes);
        self.commitment_sigs.insert(l, payload.signature);
        self.after_commitment(party, out)?;
        self.check_equivocation();
        Ok(())
    }

    /// All n commitments in: echo their digest.
    fn after_commitment(&mut self, party: &Party, out: &mut Vec<Output>) -> Result<()> {
        let params = *self.attempt.params();
        if self.stage < Stage::Committed
            || self.commitments.len() < usize::from(params.n)
            || self.digests.contains_key(&params.i)
        {
            return Ok(());
        }
        let hashes = dkg::commitment_hashes(&params.context, &self.commitments);
        let digest = dkg::commitments_digest(&params.context, &hashes);
        self.digests.insert(params.i, digest);
        self.hashes.insert(params.i, hashes.clone());
        self.publish_differing_commitments(party, out);
        let body = digest_body(party.coin(), &params.context, &digest);
        let echo = KeyGenCommitmentsDigest {
            coin: party.coin(),
            context: params.context,
            digest,
            hashes,
            signature: party.signer().sign(DIGEST_DOMAIN, &body),
        };
        self.relay.keep_digest(params.i, &echo);
        out.push(Output::Bus(ProcessorMessage::KeyGenCommitmentsDigest(echo)));
        self.after_digest(party, out)
    }

    /// Step 16 (second half): a participant's echo of the commitments it holds.
    pub(crate) fn on_digest(
        &mut self,
        party: &Party,
        from: &ValidatorId,
        d: &KeyGenCommitmentsDigest,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        party.check_sender(from, d.coin)?;
        if let Some(h) = self.classify(&d.context) {
            return Ok(h);
        }
        if self.stage >= Stage::Computed {
            return Ok(Handled::Done);
        }
        let l = self.attempt.index_of(from)?;
        let Some(signer) = party.signer_of(from) else {
            return Ok(Handled::Wait);
        };
        let body = digest_body(d.coin, &d.context, &d.digest);
        if !verify_processor_signature(&signer, DIGEST_DOMAIN, &body, &d.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad processor signature on digest",
            ));
        }
        if d.hashes.len() != usize::from(self.attempt.params().n)
            || dkg::commitments_digest(&d.context, &d.hashes) != d.digest
        {
            return Err(ProtocolError::peer(
                from,
                "digest does not match its commitment hashes",
            ));
        }
        match self.digests.get(&l) {
            Some(existing) if *existing != d.digest => {
                return Err(ProtocolError::peer(from, "sent two different digests"))
            }
            Some(_) => return Ok(Handled::Done),
            None => {}
        }
        self.digests.insert(l, d.digest);
        self.hashes.insert(l, d.hashes.clone());
        self.relay.keep_digest(l, d);
        self.publish_differing_commitments(party, out);
        self.after_digest(party, out)?;
        Ok(Handled::Done)
    }

    /// All n digests in: go on to shares if they match.
    fn after_digest(&mut self, party: &Party, out: &mut Vec<Output>) -> Result<()> {
        let params = *self.attempt.params();
        if self.stage >= Stage::SharesSent || self.digests.len() < usize::from(params.n) {
            return Ok(());
        }
        let Some(mine) = self.digests.get(&params.i).copied() else {
            return Ok(());
        };
        if self.digests.values().any(|d| *d != mine) {
            // Someone saw other commitments than we did: our signed copies of the differing
            // ones are published (`publish_differing_commitments`), so whoever holds another
            // copy proves the equivocation. A false echo proves nothing and is left to the
            // timeout vote.
            return Ok(());
        }
        let coin = party.coin();
        let shares =
            match dkg::secret_shares(coin.curve(), &self.entropy, &params, &self.commitments) {
                Ok((held, s)) => {
                    self.held = Some(held);
                    s
                }
                Err(DkgFailure::Blame { participant, .. }) => {
                    // Every participant checks the same commitments (the echo matched), so every
                    // one of them finds the same invalid proof of knowledge.
                    if let Some(v) = self.attempt.member_at(participant).cloned() {
                        self.prove(v, ExclusionReason::InvalidCommitments);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.fail(self.describe(&e));
                    return Ok(());
                }
            };
        let mut sends = Vec::new();
        for (l, share) in shares {
            let Some(v) = self.attempt.member_at(l).cloned() else {
                continue;
            };
            let signature = party.signer().sign(
                SHARE_DOMAIN,
                &payload_body(coin, &params.context, party.me(), Some(&v), &share),
            );
            let signed = KeyGenPayload {
                bytes: share,
                signature,
            };
            let payload = postcard::to_stdvec(&signed)
                .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            self.relay.keep_sent_share(l, signed);
            let sealed = party.seal_with(SealKind::KeyShare, &v, params.context, &payload)?;
            sends.push(Output::Bus(ProcessorMessage::EncryptedKeyShareOut(
                EncryptedKeyShareOut {
                    coin,
                    to: v,
                    context: params.context,
                    sealed,
                },
            )));
        }
        self.stage = Stage::SharesSent;
        out.extend(sends);
        self.after_share(party, out);
        Ok(())
    }

    /// Step 19: keep a share addressed to us.
    pub(crate) fn on_share(
        &mut self,
        party: &Party,
        m: &EncryptedKeyShareIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        let l = match self.admit_sealed(party, &m.from, m.msg.coin, &m.msg.to, &m.msg.context)? {
            ControlFlow::Continue(l) => l,
            ControlFlow::Break(h) => return Ok(h),
        };
        let Some(payload) = self.open_signed(
            party,
            SealKind::KeyShare,
            &m.from,
            &m.msg.sealed,
            SHARE_DOMAIN,
            Some(party.me()),
        )?
        else {
            return Ok(Handled::Wait);
        };
        self.take_share(party, &m.from, l, payload, out)?;
        Ok(Handled::Done)
    }

    /// Keep the share dealer `l` (`dealer`) signed for us, received directly or published in
    /// its answer to our complaint.
    fn take_share(
        &mut self,
        party: &Party,
        dealer: &ValidatorId,
        l: u16,
        payload: KeyGenPayload,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        // A dealer we proved faulty (a bad share, say) cannot make up for it with another
        // share: the attempt is to be replaced without it.
        if self.evidence.proven().contains_key(dealer) {
            return Ok(());
        }
        if let Some(existing) = self.shares.get(&l) {
            if *existing != payload.bytes {
                return Err(ProtocolError::peer(dealer, "sent two different shares"));
            }
            return Ok(());
        }
        let params = *self.attempt.params();
        if dkg::validate_share(party.coin().curve(), &params, &payload.bytes).is_err() {
            // Signed garbage is evidence too: publish it so everyone blames the sender.
            self.blame_share(
                party,
                dealer.clone(),
                payload.bytes,
                payload.signature,
                None,
                out,
            );
            return Ok(());
        }
        self.shares.insert(l, payload.bytes);
        self.share_sigs.insert(l, payload.signature);
        self.after_share(party, out);
        Ok(())
    }

    /// Step 20: all shares in: compute the key share and the group key.
    fn after_share(&mut self, party: &Party, out: &mut Vec<Output>) {
        let params = *self.attempt.params();
        if self.stage != Stage::SharesSent || self.shares.len() + 1 < usize::from(params.n) {
            return;
        }
        let result = dkg::complete(
            party.coin().curve(),
            self.held.take(),
            &self.entropy,
            &params,
            &self.commitments,
            &self.shares,
        );
        match result {
            Ok(output) => {
                self.stage = Stage::Computed;
                // Confirmations that came before our key: those of another key are evidence.
                let wrong: Vec<u16> = self
                    .confirmations
                    .iter()
                    .filter(|(_, k)| **k != output.group_key)
                    .map(|(l, _)| *l)
                    .collect();
                for l in wrong {
                    self.confirmations.remove(&l);
                    if let Some(v) = self.attempt.member_at(l).cloned() {
                        self.evidence.wrong_group_key(v);
                    }
                }
                self.confirmations
                    .insert(params.i, output.group_key.clone());
                self.outcomes.push(Outcome::Computed(output));
            }
            Err(DkgFailure::InvalidShare { participant, proof }) => {
                let (Some(v), Some(share), Some(sig)) = (
                    self.attempt.member_at(participant).cloned(),
                    self.shares.get(&participant).cloned(),
                    self.share_sigs.get(&participant).cloned(),
                ) else {
                    self.fail(format!("participant {participant}: invalid share"));
                    return;
                };
                self.blame_share(party, v, share, sig, proof, out);
            }
            Err(e) => self.fail(self.describe(&e)),
        }
    }

    /// Step 20 as received: a participant's group key.
    pub(crate) fn on_confirmation(
        &mut self,
        party: &Party,
        from: &ValidatorId,
        a: &PublicAddressAvailable,
    ) -> Result<Handled> {
        party.check_sender(from, a.coin)?;
        if let Some(h) = self.classify(&a.context) {
            return Ok(h);
        }
        if self.decided() {
            return Ok(Handled::Done); // nothing left to confirm
        }
        let Some(signer) = party.signer_of(from) else {
            return Ok(Handled::Wait);
        };
        if !verify_processor_signature(&signer, ADDRESS_DOMAIN, &address_body(a), &a.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad processor signature on address",
            ));
        }
        let l = self.attempt.index_of(from)?;
        if self.attempt.member_index(party.me()).is_none() {
            return Ok(Handled::Done);
        }
        // The group key follows from the commitments everyone echoed: once ours is computed,
        // a signed confirmation of another key is evidence against its signer (voted out, and
        // the DKG goes on without it), not a reason for the vault to fail.
        if let Some(ours) = self.computed_key() {
            if *ours != a.group_key {
                self.evidence.wrong_group_key(from.clone());
                return Err(ProtocolError::peer(
                    from,
                    "confirmed a group key the agreed commitments do not give",
                ));
            }
        }
        match self.confirmations.get(&l) {
            Some(existing) if *existing != a.group_key => {
                return Err(ProtocolError::peer(
                    from,
                    "announced two different group keys",
                ))
            }
            Some(_) => return Ok(Handled::Done),
            None => {}
        }
        self.confirmations.insert(l, a.group_key.clone());
        self.relay.keep_confirmation(l, a);
        self.check_confirmations();
        Ok(Handled::Done)
    }

    /// Our group key, once computed.
    fn computed_key(&self) -> Option<&Vec<u8>> {
        match self.stage {
            Stage::Computed | Stage::Decided => self.confirmations.get(&self.attempt.params().i),
            _ => None,
        }
    }

    /// Once our key is computed and every participant published its group key: report
    /// whether they all agree.
    pub(crate) fn check_confirmations(&mut self) {
        let params = self.attempt.params();
        if self.stage != Stage::Computed || self.confirmations.len() < usize::from(params.n) {
            return;
        }
        let Some(ours) = self.confirmations.get(&params.i) else {
            return;
        };
        let differing: Vec<String> = self
            .confirmations
            .iter()
            .filter(|(_, k)| *k != ours)
            .filter_map(|(l, _)| self.attempt.member_at(*l).map(|v| v.to_string()))
            .collect();
        self.stage = Stage::Decided;
        self.outcomes
            .push(Outcome::Confirmed(if differing.is_empty() {
                Ok(())
            } else {
                Err(format!("group key differs at {}", differing.join(", ")))
            }));
    }

    fn fail(&mut self, reason: String) {
        self.stage = Stage::Decided;
        self.outcomes.push(Outcome::Failed(reason));
    }

    fn describe(&self, e: &DkgFailure) -> String {
        let who = |l: &u16| {
            self.attempt
                .member_at(*l)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        match e {
            DkgFailure::Blame {
                participant,
                reason,
            } => format!("{} (participant {participant}): {reason}", who(participant)),
            DkgFailure::InvalidShare { participant, .. } => format!(
                "{} (participant {participant}): invalid secret share",
                who(participant)
            ),
            DkgFailure::Other(s) => s.clone(),
        }
    }
}

/// What a sender signs over a DKG payload: coin, context, sender, recipient (shares only) and
/// the PedPoP bytes.
pub(crate) fn payload_body(
    coin: crate::Coin,
    context: &[u8; 32],
    from: &ValidatorId,
    to: Option<&ValidatorId>,
    bytes: &[u8],
) -> Vec<u8> {
    let mut b = coin.ticker().as_bytes().to_vec();
    b.extend_from_slice(context);
    for v in std::iter::once(from).chain(to) {
        b.push(v.as_bytes().len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    b.extend_from_slice(bytes);
    b
}

fn digest_body(coin: crate::Coin, context: &[u8; 32], digest: &[u8; 32]) -> Vec<u8> {
    let mut b = coin.ticker().as_bytes().to_vec();
    b.extend_from_slice(context);
    b.extend_from_slice(digest);
    b
}

/// What a participant signs of its `PublicAddressAvailable`: all of it but the signature.
pub(crate) fn address_body(a: &PublicAddressAvailable) -> Vec<u8> {
    let unsigned = PublicAddressAvailable {
        signature: Vec::new(),
        ..a.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}
