//! Liveness of one DKG attempt: a phase that made no progress complains (`relay.rs`) and asks
//! for announcements gossip may have lost, then (at the DKG timeout) proposes a vote against
//! whoever it still waits for and nobody vouches for, and gives up once no vote can help.

use std::collections::BTreeMap;

use super::KeyGen;
use crate::{
    attempts::{ANNOUNCEMENT_REQUESTS_PER_TIMEOUT, MAX_VOTE_ROUNDS},
    ids::ValidatorId,
    messages::{AnnouncementsWanted, ExclusionReason, ProcessorMessage},
    party::Party,
    processor::{Output, Phase},
};

/// When the current phase last progressed.
#[derive(Default)]
pub(super) struct Stall {
    /// When the phase last progressed, and the progress counter then.
    last_progress: Option<(u64, usize)>,
    /// Announcement requests made since the phase last progressed.
    requests: u64,
    timed_out: bool,
}

impl KeyGen {
    /// A counter that grows whenever the DKG moves on.
    fn progress_mark(&self, party: &Party) -> usize {
        let keys = self
            .attempt
            .participants()
            .iter()
            .filter(|v| party.signer_of(v).is_some())
            .count();
        keys + self.commitments.len()
            + self.digests.len()
            + self.shares.len()
            + self.confirmations.len()
    }

    /// Who the current phase still waits for, and what a vote would say of them.
    fn missing(&self, party: &Party) -> (Vec<ValidatorId>, ExclusionReason) {
        let me = party.me();
        let others = self.attempt.participants().iter().filter(|v| *v != me);
        let has = |map: &BTreeMap<u16, _>, v: &ValidatorId| {
            self.attempt
                .member_index(v)
                .is_some_and(|l| map.contains_key(&l))
        };
        match self.phase() {
            Phase::KeyExchange => (
                others
                    .filter(|v| party.signer_of(v).is_none())
                    .cloned()
                    .collect(),
                ExclusionReason::SilentKeyExchange,
            ),
            Phase::Commitments => (
                others
                    .filter(|v| !has(&self.commitments, v))
                    .cloned()
                    .collect(),
                ExclusionReason::SilentCommitments,
            ),
            Phase::CommitmentEcho => {
                let mine = self.digests.get(&self.attempt.params().i).copied();
                (
                    others
                        .filter(|v| {
                            let d = self
                                .attempt
                                .member_index(v)
                                .and_then(|l| self.digests.get(&l));
                            mine.is_none() || d.copied() != mine
                        })
                        .cloned()
                        .collect(),
                    ExclusionReason::SilentEcho,
                )
            }
            Phase::Shares => (
                others.filter(|v| !has(&self.shares, v)).cloned().collect(),
                ExclusionReason::SilentShares,
            ),
            Phase::Confirming => (
                others
                    .filter(|v| !has(&self.confirmations, v))
                    .cloned()
                    .collect(),
                ExclusionReason::SilentConfirmation,
            ),
            Phase::Active | Phase::Failed | Phase::Excluded => {
                (Vec::new(), ExclusionReason::SilentShares)
            }
        }
    }

    /// Time passes: notice a phase that made no progress, ask for lost announcements, and say
    /// whether it is time to vote (the phase timed out, or a fault is proven).
    pub(crate) fn tick(
        &mut self,
        party: &Party,
        now: u64,
        timeout_ms: u64,
        out: &mut Vec<Output>,
    ) -> bool {
        if self.decided() || self.attempt.member_index(party.me()).is_none() {
            return false;
        }
        let mark = self.progress_mark(party);
        match self.stall.last_progress {
            Some((_, m)) if m == mark => {}
            _ => {
                self.stall.last_progress = Some((now, mark));
                self.stall.requests = 0;
                self.stall.timed_out = false;
            }
        }
        let since = self.stall.last_progress.map_or(now, |(t, _)| t);
        let stalled = now.saturating_sub(since);
        if stalled >= timeout_ms {
            self.stall.timed_out = true;
        }
        if !self.stall.timed_out {
            self.request_help(party, stalled, timeout_ms, out);
        }
        if stalled >= timeout_ms.saturating_mul(u64::from(MAX_VOTE_ROUNDS)) {
            self.give_up_if_hopeless(party);
        }
        self.stall.timed_out || self.evidence.has_proofs()
    }

    /// After as many timeouts as a vote has rounds: if leaving out everyone we would vote
    /// against leaves fewer than t participants, no vote can ever start an attempt that
    /// finishes (with n = t, any silent participant does this): the DKG fails, naming them.
    fn give_up_if_hopeless(&mut self, party: &Party) {
        let proposal = self.proposal(party);
        let n = self.attempt.participants().len();
        let t = usize::from(self.attempt.params().t);
        if proposal.is_empty() || n - proposal.len().min(n) >= t {
            return;
        }
        let named = proposal
            .iter()
            .map(|(v, r)| format!("{v} ({})", r.label()))
            .collect::<Vec<_>>()
            .join(", ");
        self.fail(format!(
            "the DKG cannot finish: without {named}, {} of {n} participants remain and the threshold is {t}",
            n - proposal.len().min(n)
        ));
    }

    /// A phase stalled for `stalled` ms: once per [`ANNOUNCEMENT_REQUESTS_PER_TIMEOUT`]th of
    /// the timeout, complain of whom it waits for (the others relay their signed messages, a
    /// dealer publishes a share; `relay.rs`), and where it waits for gossiped announcements
    /// (the echo, the confirmations) ask their authors too, with the dealers that leave a
    /// complaint unanswered (gossip may have lost their answer).
    fn request_help(
        &mut self,
        party: &Party,
        stalled: u64,
        timeout_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let every = (timeout_ms / ANNOUNCEMENT_REQUESTS_PER_TIMEOUT).max(1);
        let due = stalled / every;
        if due <= self.stall.requests {
            return;
        }
        self.stall.requests = due;
        if let Some(c) = self.complaint(party) {
            out.push(Output::Bus(ProcessorMessage::KeyGenComplaint(c)));
        }
        if !matches!(self.phase(), Phase::CommitmentEcho | Phase::Confirming) {
            return;
        }
        let (mut from, _) = self.missing(party);
        let dealers: Vec<ValidatorId> = from
            .iter()
            .filter_map(|v| self.attempt.member_index(v))
            .flat_map(|l| self.unanswered_dealers(l))
            .filter_map(|d| self.attempt.member_at(d).cloned())
            .collect();
        for d in dealers {
            if !from.contains(&d) {
                from.push(d);
            }
        }
        if !from.is_empty() {
            out.push(Output::Bus(ProcessorMessage::AnnouncementsWanted(
                AnnouncementsWanted {
                    coin: party.coin(),
                    from,
                },
            )));
        }
    }

    /// Who a vote of ours would leave out now: the faults proven, and (once the phase timed
    /// out) whoever it still waits for.
    pub(crate) fn proposal(&self, party: &Party) -> BTreeMap<ValidatorId, ExclusionReason> {
        let mut set = self.evidence.proven().clone();
        if self.stall.timed_out {
            let (missing, reason) = self.missing(party);
            for v in missing {
                // Someone waiting for a share its dealer never published is spared: the
                // dealer is the one nobody can vouch for.
                let dealers = self
                    .attempt
                    .member_index(&v)
                    .map(|l| self.unanswered_dealers(l))
                    .unwrap_or_default();
                if dealers.is_empty() {
                    set.entry(v).or_insert(reason);
                }
                for d in dealers.iter().filter_map(|d| self.attempt.member_at(*d)) {
                    set.entry(d.clone())
                        .or_insert(ExclusionReason::SilentShares);
                }
            }
        }
        set
    }
}
