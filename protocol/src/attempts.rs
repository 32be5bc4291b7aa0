//! DKG attempts: timeouts, exclusion votes and blame evidence (part of the processor).
//!
//! PedPoP has no liveness of its own: one silent participant stalls it, one bad share spoils it.
//! So a DKG runs in attempts, each with its own participant list and context
//! (`dkg::context` binds both), and the participants of an attempt agree to run the next one
//! without some of them by **signed votes** ([`KeyGenExclusionVote`]), gossiped on the general
//! partition so that every validator can check them:
//!
//! * Before that, a phase fed by gossip (the commitment echo, the confirmations) that made no
//!   progress for a quarter of the timeout asks whoever it still misses for their
//!   announcements ([`AnnouncementsWanted`]): gossip may have lost one, and asking is cheaper
//!   than a vote and a new attempt.
//! * A participant votes when its phase made no progress for the DKG timeout (it names whoever
//!   it still misses), or at once when it holds **evidence** ([`KeyGenBlame`]) that everyone
//!   can verify: an invalid share judged by dkg-pedpop's blame proof (the sender if the share is
//!   bad, the accuser if the accusation is false), two different commitment messages signed by
//!   the same participant (equivocation), or commitments whose proof of knowledge fails.
//! * The next attempt runs without `X` once **t participants of the attempt signed a vote for
//!   exactly `X` in the same round**; when several rounds have such a quorum the lowest decides,
//!   so every validator that sees the votes derives the same chain of attempts from attempt 0.
//!   With t > n/2 and fewer than 2t − n faulty voters, two different sets cannot both gather t
//!   votes in one round.
//! * A vote that gathered no quorum is followed, after another timeout, by a vote in the next
//!   round; a later vote also includes whoever was named by at least n − t + 1 votes of the
//!   previous round, so honest views converge.
//! * The chain stops when fewer than t participants remain (the vault fails, naming who was left
//!   out) or when this validator is left out (its vault is marked excluded).
//!
//! Why one file of this size: votes, blame evidence and the recomputed attempt are one
//! mechanism (a vote or a proof changes the next attempt's participants) and its proofs.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    dkg,
    dkg::DkgParams,
    error::{ProtocolError, Result},
    ids::ValidatorId,
    keys::verify_processor_signature,
    messages::{
        AnnouncementsWanted, BlameEvidence, ExclusionReason, KeyGenBlame, KeyGenExclusionVote,
        ProcessorMessage,
    },
    processor::{
        payload_body, DkgStage, DkgState, Handled, Output, Persist, Phase, Processor,
        COMMITMENT_DOMAIN, SHARE_DOMAIN,
    },
    vault::{Exclusion, VaultStatus},
};

/// Default DKG timeout: how long a phase may make no progress before a participant votes.
pub const DEFAULT_DKG_TIMEOUT_MS: u64 = 60_000;
/// A phase that waits for gossiped announcements (the commitment echo, the confirmations) and
/// made no progress for this fraction of the DKG timeout asks the validators it waits for to
/// send their announcements directly ([`AnnouncementsWanted`]), again after each further
/// fraction: three times before the vote at the timeout (15 s, 30 s and 45 s with the default
/// 60 s).
pub const ANNOUNCEMENT_REQUESTS_PER_TIMEOUT: u64 = 4;
/// Most voting rounds per attempt (a node's inbound log keeps 8 messages per sender and slot).
pub const MAX_VOTE_ROUNDS: u32 = 8;
/// Most signed copies of one participant's commitments kept as evidence.
const MAX_COPIES: usize = 2;

const VOTE_DOMAIN: &[u8] = b"KeyGenExclusionVote";
const BLAME_DOMAIN: &[u8] = b"KeyGenBlame";

/// A signed copy of a commitment message: (bytes, signature).
type SignedCopy = (Vec<u8>, Vec<u8>);
type Votes = BTreeMap<[u8; 32], BTreeMap<u32, BTreeMap<ValidatorId, KeyGenExclusionVote>>>;

/// The processor's fault-handling state.
pub(crate) struct Faults {
    timeout_ms: u64,
    /// Every valid vote seen (ours included), by attempt context, round and voter.
    votes: Votes,
    /// Contexts of the attempts before the current one.
    past: Vec<[u8; 32]>,
    /// Current attempt: faults proven by evidence this node checked.
    proven: BTreeMap<ValidatorId, ExclusionReason>,
    /// Current attempt: signed commitment copies per participant index.
    copies: BTreeMap<u16, Vec<SignedCopy>>,
    /// Current attempt: participant indexes whose commitments we published.
    published: BTreeSet<u16>,
    /// Current attempt: when the phase last progressed, and the progress counter then.
    last_progress: Option<(u64, usize)>,
    /// Current attempt: announcement requests made since the phase last progressed.
    requests: u64,
    timed_out: bool,
    /// Current attempt: when we last voted.
    last_vote_at: Option<u64>,
    /// Test-only sabotage: attempts in which a false accusation was made.
    #[cfg(feature = "fault-injection")]
    pub(crate) accused_falsely: BTreeSet<[u8; 32]>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            timeout_ms: DEFAULT_DKG_TIMEOUT_MS,
            votes: Votes::new(),
            past: Vec::new(),
            proven: BTreeMap::new(),
            copies: BTreeMap::new(),
            published: BTreeSet::new(),
            last_progress: None,
            requests: 0,
            timed_out: false,
            last_vote_at: None,
            #[cfg(feature = "fault-injection")]
            accused_falsely: BTreeSet::new(),
        }
    }
}

impl Faults {
    pub(crate) fn is_past(&self, context: &[u8; 32]) -> bool {
        self.past.contains(context)
    }

    /// Keep a signed copy of participant `l`'s commitments (bounded).
    pub(crate) fn record_commitment(&mut self, l: u16, bytes: &[u8], signature: &[u8]) {
        let copies = self.copies.entry(l).or_default();
        if copies.len() < MAX_COPIES && !copies.iter().any(|(b, _)| b == bytes) {
            copies.push((bytes.to_vec(), signature.to_vec()));
        }
    }

    fn new_attempt(&mut self) {
        self.proven.clear();
        self.copies.clear();
        self.published.clear();
        self.last_progress = None;
        self.requests = 0;
        self.timed_out = false;
        self.last_vote_at = None;
    }
}

/// A vote as the status page shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VoteView {
    /// Attempt voted on.
    pub attempt: u32,
    /// Round.
    pub round: u32,
    /// Voter.
    pub voter: ValidatorId,
    /// Who it would leave out, and why.
    pub exclude: Vec<(ValidatorId, ExclusionReason)>,
}

impl Processor {
    /// How long a DKG phase may make no progress before this participant votes.
    pub fn set_dkg_timeout(&mut self, ms: u64) {
        self.faults.timeout_ms = ms.max(1);
    }

    /// After a restart, before the inbound replay: this node's own votes, so it never casts a
    /// different vote in a round it already voted in.
    pub fn restore_votes(&mut self, votes: Vec<KeyGenExclusionVote>) -> Vec<Output> {
        for v in votes {
            if v.coin == self.coin() {
                self.faults
                    .votes
                    .entry(v.context)
                    .or_default()
                    .entry(v.round)
                    .or_default()
                    .insert(self.me.clone(), v);
            }
        }
        let mut out = Vec::new();
        self.recompute_attempt(&mut out);
        out
    }

    /// The votes of the current attempt (for the status page).
    pub fn votes(&self) -> Vec<VoteView> {
        let Some(rounds) = self.faults.votes.get(&self.params.context) else {
            return Vec::new();
        };
        rounds
            .values()
            .flat_map(|by_voter| by_voter.iter())
            .map(|(voter, v)| VoteView {
                attempt: v.attempt,
                round: v.round,
                voter: voter.clone(),
                exclude: v
                    .exclude
                    .iter()
                    .cloned()
                    .zip(v.reasons.iter().copied())
                    .collect(),
            })
            .collect()
    }

    /// A counter that grows whenever the DKG moves on.
    fn progress_mark(&self) -> usize {
        let keys = self
            .participants
            .iter()
            .filter(|v| self.signer_of(v).is_some())
            .count();
        keys + self.dkg.commitments.len()
            + self.dkg.digests.len()
            + self.dkg.shares.len()
            + self.dkg.confirmations.len()
    }

    /// Who the current phase still waits for.
    fn missing(&self) -> (Vec<ValidatorId>, ExclusionReason) {
        let others = self.participants.iter().filter(|v| **v != self.me);
        let has = |map: &BTreeMap<u16, _>, v: &ValidatorId| {
            self.member_index(v).is_some_and(|l| map.contains_key(&l))
        };
        match self.phase() {
            Phase::KeyExchange => (
                others
                    .filter(|v| self.signer_of(v).is_none())
                    .cloned()
                    .collect(),
                ExclusionReason::SilentKeyExchange,
            ),
            Phase::Commitments => (
                others
                    .filter(|v| !has(&self.dkg.commitments, v))
                    .cloned()
                    .collect(),
                ExclusionReason::SilentCommitments,
            ),
            Phase::CommitmentEcho => {
                let mine = self.dkg.digests.get(&self.params.i).copied();
                (
                    others
                        .filter(|v| {
                            let d = self.member_index(v).and_then(|l| self.dkg.digests.get(&l));
                            mine.is_none() || d.copied() != mine
                        })
                        .cloned()
                        .collect(),
                    ExclusionReason::SilentEcho,
                )
            }
            Phase::Shares => (
                others
                    .filter(|v| !has(&self.dkg.shares, v))
                    .cloned()
                    .collect(),
                ExclusionReason::SilentShares,
            ),
            Phase::Confirming => (
                others
                    .filter(|v| !has(&self.dkg.confirmations, v))
                    .cloned()
                    .collect(),
                ExclusionReason::SilentConfirmation,
            ),
            Phase::Active | Phase::Failed | Phase::Excluded => {
                (Vec::new(), ExclusionReason::SilentShares)
            }
        }
    }

    /// The DKG part of [`Processor::tick`]: notice a phase that made no progress for the
    /// timeout, and vote (again, in a later round, while no quorum decided).
    pub(crate) fn dkg_tick(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.vault_decided() || self.member_index(&self.me).is_none() {
            return;
        }
        let mark = self.progress_mark();
        match self.faults.last_progress {
            Some((_, m)) if m == mark => {}
            _ => {
                self.faults.last_progress = Some((now, mark));
                self.faults.requests = 0;
                self.faults.timed_out = false;
            }
        }
        let since = self.faults.last_progress.map_or(now, |(t, _)| t);
        let stalled = now.saturating_sub(since);
        if stalled >= self.faults.timeout_ms {
            self.faults.timed_out = true;
        }
        if !self.faults.timed_out {
            self.request_announcements(stalled, out);
        }
        if self.faults.timed_out || !self.faults.proven.is_empty() {
            self.cast_vote(now, out);
        }
    }

    /// A phase that waits for gossiped announcements and has been stalled for `stalled` ms:
    /// once per [`ANNOUNCEMENT_REQUESTS_PER_TIMEOUT`]th of the timeout, ask the validators it
    /// waits for (the phases fed by direct messages need not: their senders retry until we
    /// answer).
    fn request_announcements(&mut self, stalled: u64, out: &mut Vec<Output>) {
        if !matches!(self.phase(), Phase::CommitmentEcho | Phase::Confirming) {
            return;
        }
        let every = (self.faults.timeout_ms / ANNOUNCEMENT_REQUESTS_PER_TIMEOUT).max(1);
        let due = stalled / every;
        if due <= self.faults.requests {
            return;
        }
        self.faults.requests = due;
        let (from, _) = self.missing();
        if !from.is_empty() {
            out.push(Output::Bus(ProcessorMessage::AnnouncementsWanted(
                AnnouncementsWanted {
                    coin: self.coin(),
                    from,
                },
            )));
        }
    }

    /// Vote for the current attempt if our view changed, a higher round started, or our last
    /// vote gathered no quorum within a timeout.
    fn cast_vote(&mut self, now: u64, out: &mut Vec<Output>) {
        let ctx = self.params.context;
        let t = usize::from(self.params.t);
        let n = self.participants.len();
        let rounds = self.faults.votes.get(&ctx);
        let my_last: Option<(u32, Vec<ValidatorId>)> = rounds.and_then(|r| {
            r.iter()
                .rev()
                .find_map(|(round, by)| by.get(&self.me).map(|v| (*round, v.exclude.clone())))
        });
        let highest = rounds.and_then(|r| r.keys().next_back().copied());

        let mut set: BTreeMap<ValidatorId, ExclusionReason> = self.faults.proven.clone();
        if self.faults.timed_out {
            let (missing, reason) = self.missing();
            for v in missing {
                set.entry(v).or_insert(reason);
            }
        }
        // Converge: take in whoever enough votes of our last round named.
        if let Some((round, _)) = &my_last {
            let mut tally: BTreeMap<&ValidatorId, (usize, ExclusionReason)> = BTreeMap::new();
            if let Some(by) = rounds.and_then(|r| r.get(round)) {
                for vote in by.values() {
                    for (v, reason) in vote.exclude.iter().zip(&vote.reasons) {
                        tally.entry(v).or_insert((0, *reason)).0 += 1;
                    }
                }
            }
            for (v, (count, reason)) in tally {
                if count + t > n {
                    set.entry(v.clone()).or_insert(reason);
                }
            }
        }
        if set.is_empty() {
            return;
        }
        let exclude: Vec<ValidatorId> = set.keys().cloned().collect();
        let round = match (&my_last, highest) {
            (None, h) => h.unwrap_or(0),
            (Some((r, last)), h) => {
                let stale = self
                    .faults
                    .last_vote_at
                    .is_none_or(|at| now.saturating_sub(at) >= self.faults.timeout_ms);
                // `r` is the highest round we voted in: a higher one is one we have not.
                match h.filter(|h| h > r) {
                    Some(h) => h,
                    None if *last == exclude && !stale => return,
                    None => r + 1,
                }
            }
        };
        if round >= MAX_VOTE_ROUNDS {
            return;
        }
        let mut vote = KeyGenExclusionVote {
            coin: self.coin(),
            context: ctx,
            attempt: self.attempt,
            round,
            reasons: set.values().copied().collect(),
            exclude,
            signature: Vec::new(),
        };
        vote.signature = self.signer.sign(VOTE_DOMAIN, &vote_body(&vote));
        self.faults.last_vote_at = Some(now);
        self.faults
            .votes
            .entry(ctx)
            .or_default()
            .entry(round)
            .or_default()
            .insert(self.me.clone(), vote.clone());
        out.push(Output::Persist(Persist::Vote(vote.clone())));
        out.push(Output::Bus(ProcessorMessage::KeyGenExclusionVote(vote)));
        self.recompute_attempt(out);
    }

    /// A vote from a participant.
    pub(crate) fn on_vote(
        &mut self,
        from: &ValidatorId,
        v: &KeyGenExclusionVote,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        self.check_vote_sender(from, v)?;
        if let Some(h) = self.attempt_of(&v.context) {
            return Ok(h);
        }
        if v.attempt != self.attempt {
            return Err(ProtocolError::peer(from, "vote names the wrong attempt"));
        }
        self.index_of(from)?;
        let Some(signer) = self.signer_of(from) else {
            return Ok(Handled::Wait);
        };
        if !verify_processor_signature(&signer, VOTE_DOMAIN, &vote_body(v), &v.signature) {
            return Err(ProtocolError::peer(from, "bad processor signature on vote"));
        }
        let sorted = v.exclude.windows(2).all(|w| w[0] < w[1]);
        if v.exclude.is_empty()
            || !sorted
            || v.reasons.len() != v.exclude.len()
            || v.round >= MAX_VOTE_ROUNDS
            || v.exclude.iter().any(|x| self.member_index(x).is_none())
        {
            return Err(ProtocolError::peer(
                from,
                "malformed vote (empty, unsorted, or naming non-participants)",
            ));
        }
        let by = self
            .faults
            .votes
            .entry(v.context)
            .or_default()
            .entry(v.round)
            .or_default();
        match by.get(from) {
            Some(existing) if existing == v => return Ok(Handled::Done),
            Some(_) => {
                return Err(ProtocolError::peer(
                    from,
                    format!("two different votes in round {}", v.round),
                ))
            }
            None => {}
        }
        by.insert(from.clone(), v.clone());
        self.recompute_attempt(out);
        Ok(Handled::Done)
    }

    fn check_vote_sender(&self, from: &ValidatorId, v: &KeyGenExclusionVote) -> Result<()> {
        if !self.def.is_validator(from) || *from == self.me {
            return Err(ProtocolError::UnknownValidator(from.clone()));
        }
        if v.coin != self.coin() {
            return Err(ProtocolError::peer(from, "vote for another coin"));
        }
        Ok(())
    }

    /// Derive the chain of attempts from attempt 0 and the votes; move to its last attempt if
    /// that is not the current one.
    ///
    /// An active vault follows too: if t participants of its attempt voted to run another one,
    /// the vault was not agreed by them (they missed a confirmation), and keeping it would split
    /// the validator set.
    pub(crate) fn recompute_attempt(&mut self, out: &mut Vec<Output>) {
        if self
            .vault
            .as_ref()
            .is_some_and(|v| matches!(v.status, VaultStatus::Failed | VaultStatus::Excluded))
        {
            return;
        }
        let t = usize::from(self.params.t);
        let mut participants = self.def.validators.clone();
        let mut attempt = 0u32;
        let mut excluded: Vec<Exclusion> = Vec::new();
        let mut past = Vec::new();
        let mut ctx;
        loop {
            ctx = dkg::context(
                &self.def.name,
                self.coin(),
                self.def.session,
                attempt,
                &participants,
            );
            let Some((voters, vote)) = self.quorum(&ctx, &participants, t) else {
                break;
            };
            for (v, reason) in vote.exclude.iter().zip(&vote.reasons) {
                excluded.push(Exclusion {
                    validator: v.clone(),
                    attempt,
                    reason: *reason,
                    voters: voters.clone(),
                });
            }
            participants.retain(|p| !vote.exclude.contains(p));
            past.push(ctx);
            attempt += 1;
        }
        // Attempts only move forward: a node restored at attempt k (its vault from disk) sees
        // the votes that led there again only as its inbound log is replayed.
        if ctx == self.params.context || attempt < self.attempt {
            return;
        }
        // A new attempt: a new context, a new participant list, a fresh DKG.
        self.attempt = attempt;
        self.excluded = excluded;
        self.faults.past = past;
        self.faults.new_attempt();
        self.dkg = DkgState::default();
        self.signing.forget_keys();
        self.vault = None;
        let left_out = self
            .excluded
            .iter()
            .map(|e| {
                format!(
                    "{} ({}, attempt {})",
                    e.validator,
                    e.reason.label(),
                    e.attempt
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let me_in = participants.contains(&self.me);
        let n = u16::try_from(participants.len()).unwrap_or(u16::MAX);
        self.participants = participants;
        self.params = DkgParams {
            t: self.params.t,
            n,
            i: self.member_index(&self.me).unwrap_or(0),
            context: ctx,
        };
        if !me_in {
            self.decide(
                out,
                VaultStatus::Excluded,
                format!("left out of the DKG by the other participants' votes: {left_out}"),
            );
            return;
        }
        if usize::from(n) < t {
            self.fail(
                out,
                format!(
                    "only {n} participants remain and the threshold is {t}; left out: {left_out}"
                ),
            );
            return;
        }
        if let Err(e) = self.maybe_start_dkg(out) {
            self.fail(out, format!("cannot start DKG attempt {attempt}: {e}"));
        }
    }

    /// The lowest round of `ctx` in which t participants voted for the same set.
    fn quorum(
        &self,
        ctx: &[u8; 32],
        participants: &[ValidatorId],
        t: usize,
    ) -> Option<(Vec<ValidatorId>, KeyGenExclusionVote)> {
        for by in self.faults.votes.get(ctx)?.values() {
            let mut sets: BTreeMap<&Vec<ValidatorId>, Vec<ValidatorId>> = BTreeMap::new();
            for (voter, vote) in by {
                if participants.contains(voter)
                    && !vote.exclude.is_empty()
                    && vote.exclude.iter().all(|x| participants.contains(x))
                {
                    sets.entry(&vote.exclude).or_default().push(voter.clone());
                }
            }
            if let Some((set, voters)) = sets.into_iter().find(|(_, v)| v.len() >= t) {
                let vote = by.values().find(|v| &v.exclude == set)?.clone();
                return Some((voters, vote));
            }
        }
        None
    }

    /// A fault this node verified itself: vote at once.
    pub(crate) fn prove_fault(
        &mut self,
        v: ValidatorId,
        reason: ExclusionReason,
        out: &mut Vec<Output>,
    ) {
        if self.faults.proven.contains_key(&v) || self.vault_decided() {
            return;
        }
        self.faults.proven.insert(v, reason);
        let now = self.signing.now();
        self.cast_vote(now, out);
    }

    pub(crate) fn publish_blame(&self, evidence: BlameEvidence, out: &mut Vec<Output>) {
        let mut blame = KeyGenBlame {
            coin: self.coin(),
            context: self.params.context,
            evidence,
            signature: Vec::new(),
        };
        blame.signature = self.signer.sign(BLAME_DOMAIN, &blame_body(&blame));
        out.push(Output::Bus(ProcessorMessage::KeyGenBlame(blame)));
    }

    /// Our share from `accused` failed: publish the evidence, and vote.
    pub(crate) fn blame_share(
        &mut self,
        accused: ValidatorId,
        share: Vec<u8>,
        share_signature: Vec<u8>,
        proof: Option<Vec<u8>>,
        out: &mut Vec<Output>,
    ) {
        self.publish_blame(
            BlameEvidence::InvalidShare {
                accused: accused.clone(),
                share,
                share_signature,
                proof,
            },
            out,
        );
        self.prove_fault(accused, ExclusionReason::InvalidShare, out);
    }

    /// Echoes differ: publish our signed copy of each commitment message whose hash differs
    /// from someone's echo.
    pub(crate) fn publish_differing_commitments(&mut self, out: &mut Vec<Output>) {
        let Some(mine) = self.dkg.hashes.get(&self.params.i).cloned() else {
            return;
        };
        let mut differing = BTreeSet::new();
        for hashes in self.dkg.hashes.values() {
            for (k, (a, b)) in mine.iter().zip(hashes).enumerate() {
                if a != b {
                    if let Ok(l) = u16::try_from(k + 1) {
                        differing.insert(l);
                    }
                }
            }
        }
        for l in differing {
            if !self.faults.published.insert(l) {
                continue;
            }
            let (Some(v), Some(bytes), Some(sig)) = (
                self.member_at(l).cloned(),
                self.dkg.commitments.get(&l).cloned(),
                self.dkg.commitment_sigs.get(&l).cloned(),
            ) else {
                continue;
            };
            self.publish_blame(
                BlameEvidence::Commitments {
                    accused: v,
                    commitments: bytes,
                    signature: sig,
                },
                out,
            );
        }
        self.check_equivocation(out);
    }

    /// Two different signed commitment messages from one participant prove it equivocated.
    pub(crate) fn check_equivocation(&mut self, out: &mut Vec<Output>) {
        let equivocators: Vec<ValidatorId> = self
            .faults
            .copies
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .filter_map(|(l, _)| self.member_at(*l).cloned())
            .collect();
        for v in equivocators {
            self.prove_fault(v, ExclusionReason::Equivocation, out);
        }
    }

    /// Evidence from a participant.
    pub(crate) fn on_blame(
        &mut self,
        from: &ValidatorId,
        b: &KeyGenBlame,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        if !self.def.is_validator(from) || *from == self.me {
            return Err(ProtocolError::UnknownValidator(from.clone()));
        }
        if b.coin != self.coin() {
            return Err(ProtocolError::peer(from, "blame for another coin"));
        }
        if let Some(h) = self.attempt_of(&b.context) {
            return Ok(h);
        }
        let accuser = self.index_of(from)?;
        let accused_id = b.evidence.accused().clone();
        let accused = self.member_index(&accused_id).ok_or_else(|| {
            ProtocolError::peer(from, format!("blames {accused_id}, not a participant"))
        })?;
        if accused == accuser {
            return Err(ProtocolError::peer(from, "blames itself"));
        }
        let (Some(accuser_key), Some(accused_key)) =
            (self.signer_of(from), self.signer_of(&accused_id))
        else {
            return Ok(Handled::Wait);
        };
        if !verify_processor_signature(&accuser_key, BLAME_DOMAIN, &blame_body(b), &b.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad processor signature on blame",
            ));
        }
        let coin = self.coin();
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
                self.faults
                    .record_commitment(accused, commitments, signature);
                self.check_equivocation(out);
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
                // Judging needs the attempt's n commitments, agreed by the echo.
                if self.dkg.stage < DkgStage::SharesSent {
                    return Ok(Handled::Wait);
                }
                let faulty = dkg::judge(
                    coin.curve(),
                    &self.params,
                    &self.dkg.commitments,
                    accused,
                    accuser,
                    share,
                    proof.as_deref(),
                )
                .map_err(|e| ProtocolError::Dkg(format!("judging {from}'s blame: {e}")))?;
                if faulty == accused {
                    self.prove_fault(accused_id, ExclusionReason::InvalidShare, out);
                } else {
                    self.prove_fault(from.clone(), ExclusionReason::FalseAccusation, out);
                }
            }
        }
        Ok(Handled::Done)
    }
}

fn vote_body(v: &KeyGenExclusionVote) -> Vec<u8> {
    let unsigned = KeyGenExclusionVote {
        signature: Vec::new(),
        ..v.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}

fn blame_body(b: &KeyGenBlame) -> Vec<u8> {
    let unsigned = KeyGenBlame {
        signature: Vec::new(),
        ..b.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}
