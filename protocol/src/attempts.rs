//! DKG attempts: which validators take part in which attempt, and the exclusion votes that
//! decide the next one.
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
//! Here live the two things that outlast one attempt: [`Attempt`] (an attempt's number,
//! participants, PedPoP parameters and the contexts of the attempts before it) and [`Votes`]
//! (every vote seen, and the derivation of the chain of attempts from them). What one attempt
//! observes (stalls, evidence) belongs to its DKG machine (`keygen.rs`, `blame.rs`), which is
//! replaced as a whole when the attempt changes.

use std::collections::BTreeMap;

use crate::{
    dkg::{self, DkgParams},
    error::{ProtocolError, Result},
    ids::ValidatorId,
    keys::verify_processor_signature,
    messages::{ExclusionReason, KeyGenExclusionVote},
    network::NetworkDefinition,
    party::Party,
    processor::Handled,
    vault::Exclusion,
};

/// Default DKG timeout: how long a phase may make no progress before a participant votes.
pub const DEFAULT_DKG_TIMEOUT_MS: u64 = 60_000;
/// A phase that waits for gossiped announcements (the commitment echo, the confirmations) and
/// made no progress for this fraction of the DKG timeout asks the validators it waits for to
/// send their announcements directly ([`crate::messages::AnnouncementsWanted`]), again after
/// each further fraction: three times before the vote at the timeout (15 s, 30 s and 45 s with
/// the default 60 s).
pub const ANNOUNCEMENT_REQUESTS_PER_TIMEOUT: u64 = 4;
/// Most voting rounds per attempt (a node's inbound log keeps 8 messages per sender and slot).
pub const MAX_VOTE_ROUNDS: u32 = 8;

const VOTE_DOMAIN: &[u8] = b"KeyGenExclusionVote";

type VoteMap = BTreeMap<[u8; 32], BTreeMap<u32, BTreeMap<ValidatorId, KeyGenExclusionVote>>>;

/// One DKG attempt: its number, its participants (sorted like the definition), who was left
/// out before it, its PedPoP parameters, and the contexts of the attempts that led to it.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    number: u32,
    participants: Vec<ValidatorId>,
    excluded: Vec<Exclusion>,
    params: DkgParams,
    past: Vec<[u8; 32]>,
}

impl Attempt {
    /// Attempt `number` of `coin`'s DKG in `def` with `participants`, as `me` sees it (`me`'s
    /// index is 0 when it is not among them).
    pub(crate) fn new(
        def: &NetworkDefinition,
        coin: crate::Coin,
        me: &ValidatorId,
        number: u32,
        participants: Vec<ValidatorId>,
        excluded: Vec<Exclusion>,
        past: Vec<[u8; 32]>,
    ) -> Self {
        let context = dkg::context(&def.name, coin, def.session, number, &participants);
        let n = u16::try_from(participants.len()).unwrap_or(u16::MAX);
        let i = position(&participants, me).unwrap_or(0);
        Attempt {
            number,
            participants,
            excluded,
            params: DkgParams {
                t: def.threshold,
                n,
                i,
                context,
            },
            past,
        }
    }

    /// The attempt's number.
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// Its participants.
    pub(crate) fn participants(&self) -> &[ValidatorId] {
        &self.participants
    }

    /// Validators left out of earlier attempts.
    pub(crate) fn excluded(&self) -> &[Exclusion] {
        &self.excluded
    }

    /// Its PedPoP parameters (our index, n, t, context).
    pub(crate) fn params(&self) -> &DkgParams {
        &self.params
    }

    /// Its context.
    pub(crate) fn context(&self) -> [u8; 32] {
        self.params.context
    }

    /// Position (1-based) of `v` among the participants: its PedPoP and FROST index.
    pub(crate) fn member_index(&self, v: &ValidatorId) -> Option<u16> {
        position(&self.participants, v)
    }

    /// The participant with index `l`.
    pub(crate) fn member_at(&self, l: u16) -> Option<&ValidatorId> {
        usize::from(l)
            .checked_sub(1)
            .and_then(|i| self.participants.get(i))
    }

    /// `v`'s index, or an error naming `v` if it is not a participant.
    pub(crate) fn index_of(&self, v: &ValidatorId) -> Result<u16> {
        self.member_index(v).ok_or_else(|| {
            ProtocolError::peer(
                v,
                format!("not a participant of DKG attempt {}", self.number),
            )
        })
    }

    /// Whether a DKG message for `context` belongs to this attempt: `None` if it does, else
    /// what to do with it (done with if it is for an earlier attempt or the DKG is `decided`;
    /// wait if it may be for a later attempt this node has not reached yet).
    pub(crate) fn classify(&self, context: &[u8; 32], decided: bool) -> Option<Handled> {
        if *context == self.params.context {
            None
        } else if self.past.contains(context) || decided {
            Some(Handled::Done)
        } else {
            Some(Handled::Wait)
        }
    }
}

fn position(participants: &[ValidatorId], v: &ValidatorId) -> Option<u16> {
    participants
        .iter()
        .position(|p| p == v)
        .and_then(|i| u16::try_from(i + 1).ok())
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

/// Every valid exclusion vote seen (ours included), and when we last voted.
pub(crate) struct Votes {
    timeout_ms: u64,
    /// By attempt context, round and voter.
    votes: VoteMap,
    /// When we last voted in the current attempt.
    last_vote_at: Option<u64>,
}

impl Default for Votes {
    fn default() -> Self {
        Votes {
            timeout_ms: DEFAULT_DKG_TIMEOUT_MS,
            votes: VoteMap::new(),
            last_vote_at: None,
        }
    }
}

impl Votes {
    /// How long a DKG phase may make no progress before this participant votes.
    pub(crate) fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Replace the DKG timeout.
    pub(crate) fn set_timeout(&mut self, ms: u64) {
        self.timeout_ms = ms.max(1);
    }

    /// After a restart: this node's own votes, so it never casts a different vote in a round
    /// it already voted in.
    pub(crate) fn restore(&mut self, party: &Party, votes: Vec<KeyGenExclusionVote>) {
        for v in votes.into_iter().filter(|v| v.coin == party.coin()) {
            self.votes
                .entry(v.context)
                .or_default()
                .entry(v.round)
                .or_default()
                .insert(party.me().clone(), v);
        }
    }

    /// The votes on the attempt with `context` (for the status page).
    pub(crate) fn views(&self, context: &[u8; 32]) -> Vec<VoteView> {
        let Some(rounds) = self.votes.get(context) else {
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

    /// Our vote on `attempt`, leaving out `proposal` (who our DKG machine would leave out and
    /// why) and whoever enough votes of our last round named; `None` if there is nothing to
    /// vote on, or our last vote says the same and is not stale yet. The caller persists and
    /// publishes it, then asks [`Votes::next_attempt`].
    pub(crate) fn cast(
        &mut self,
        party: &Party,
        attempt: &Attempt,
        proposal: BTreeMap<ValidatorId, ExclusionReason>,
        now: u64,
    ) -> Option<KeyGenExclusionVote> {
        let ctx = attempt.context();
        let me = party.me();
        let t = usize::from(attempt.params().t);
        let n = attempt.participants().len();
        let rounds = self.votes.get(&ctx);
        let my_last: Option<(u32, Vec<ValidatorId>)> = rounds.and_then(|r| {
            r.iter()
                .rev()
                .find_map(|(round, by)| by.get(me).map(|v| (*round, v.exclude.clone())))
        });
        let highest = rounds.and_then(|r| r.keys().next_back().copied());

        let mut set = proposal;
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
            return None;
        }
        let exclude: Vec<ValidatorId> = set.keys().cloned().collect();
        let round = match (&my_last, highest) {
            (None, h) => h.unwrap_or(0),
            (Some((r, last)), h) => {
                let stale = self
                    .last_vote_at
                    .is_none_or(|at| now.saturating_sub(at) >= self.timeout_ms);
                // `r` is the highest round we voted in: a higher one is one we have not.
                match h.filter(|h| h > r) {
                    Some(h) => h,
                    None if *last == exclude && !stale => return None,
                    None => r + 1,
                }
            }
        };
        if round >= MAX_VOTE_ROUNDS {
            return None;
        }
        let mut vote = KeyGenExclusionVote {
            coin: party.coin(),
            context: ctx,
            attempt: attempt.number(),
            round,
            reasons: set.values().copied().collect(),
            exclude,
            signature: Vec::new(),
        };
        vote.signature = party.signer().sign(VOTE_DOMAIN, &vote_body(&vote));
        self.last_vote_at = Some(now);
        self.votes
            .entry(ctx)
            .or_default()
            .entry(round)
            .or_default()
            .insert(me.clone(), vote.clone());
        Some(vote)
    }

    /// A vote from a participant of `attempt` (the DKG is `decided` here when it is over).
    pub(crate) fn on_vote(
        &mut self,
        party: &Party,
        attempt: &Attempt,
        decided: bool,
        from: &ValidatorId,
        v: &KeyGenExclusionVote,
    ) -> Result<Handled> {
        if !party.def().is_validator(from) || from == party.me() {
            return Err(ProtocolError::UnknownValidator(from.clone()));
        }
        if v.coin != party.coin() {
            return Err(ProtocolError::peer(from, "vote for another coin"));
        }
        if let Some(h) = attempt.classify(&v.context, decided) {
            return Ok(h);
        }
        if v.attempt != attempt.number() {
            return Err(ProtocolError::peer(from, "vote names the wrong attempt"));
        }
        attempt.index_of(from)?;
        let Some(signer) = party.signer_of(from) else {
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
            || v.exclude.iter().any(|x| attempt.member_index(x).is_none())
        {
            return Err(ProtocolError::peer(
                from,
                "malformed vote (empty, unsorted, or naming non-participants)",
            ));
        }
        let by = self
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
        Ok(Handled::Done)
    }

    /// Derive the chain of attempts from attempt 0 and the votes; its last attempt if that is
    /// not `current` (attempts only move forward: a node restored at attempt k, its vault from
    /// disk, sees the votes that led there again only as its inbound log is replayed).
    pub(crate) fn next_attempt(&mut self, party: &Party, current: &Attempt) -> Option<Attempt> {
        let def = party.def();
        let t = usize::from(def.threshold);
        let mut participants = def.validators.clone();
        let mut number = 0u32;
        let mut excluded: Vec<Exclusion> = Vec::new();
        let mut past = Vec::new();
        let mut ctx;
        loop {
            ctx = dkg::context(&def.name, party.coin(), def.session, number, &participants);
            let Some((voters, vote)) = self.quorum(&ctx, &participants, t) else {
                break;
            };
            for (v, reason) in vote.exclude.iter().zip(&vote.reasons) {
                excluded.push(Exclusion {
                    validator: v.clone(),
                    attempt: number,
                    reason: *reason,
                    voters: voters.clone(),
                });
            }
            participants.retain(|p| !vote.exclude.contains(p));
            past.push(ctx);
            number += 1;
        }
        if ctx == current.context() || number < current.number() {
            return None;
        }
        self.last_vote_at = None;
        Some(Attempt::new(
            def,
            party.coin(),
            party.me(),
            number,
            participants,
            excluded,
            past,
        ))
    }

    /// The lowest round of `ctx` in which t participants voted for the same set.
    fn quorum(
        &self,
        ctx: &[u8; 32],
        participants: &[ValidatorId],
        t: usize,
    ) -> Option<(Vec<ValidatorId>, KeyGenExclusionVote)> {
        for by in self.votes.get(ctx)?.values() {
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
}

fn vote_body(v: &KeyGenExclusionVote) -> Vec<u8> {
    let unsigned = KeyGenExclusionVote {
        signature: Vec::new(),
        ..v.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        keys::{MessagingKey, NodeKeys},
        Coin,
    };

    /// Four validators (t = 3); the party is the first of them in definition order.
    fn setup() -> (Party, Vec<ValidatorId>, Attempt) {
        let keys: Vec<NodeKeys> = (0..4)
            .map(|_| NodeKeys::generate(&mut rand_core::OsRng).unwrap())
            .collect();
        let mut toml = String::from("name = \"votes\"\ncoins = [\"BTC\"]\n");
        for k in &keys {
            toml.push_str(&format!(
                "[[validators]]\npeer_id = \"{}\"\n",
                k.validator_id()
            ));
        }
        let def = NetworkDefinition::from_toml(&toml).unwrap();
        let ids = def.validators.clone();
        let mine = keys.iter().find(|k| k.validator_id() == ids[0]).unwrap();
        let messaging = MessagingKey::generate(0).unwrap();
        let party = Party::new(
            def.clone(),
            Coin::Btc,
            ids[0].clone(),
            mine.processor_signer(),
            messaging,
        );
        let first = Attempt::new(&def, Coin::Btc, &ids[0], 0, ids.clone(), vec![], vec![]);
        (party, ids, first)
    }

    /// A vote as `voter` would have signed it (signatures are checked by `on_vote`, not here).
    fn put(votes: &mut Votes, a: &Attempt, round: u32, voter: &ValidatorId, out: &[&ValidatorId]) {
        let v = KeyGenExclusionVote {
            coin: Coin::Btc,
            context: a.context(),
            attempt: a.number(),
            round,
            exclude: out.iter().map(|v| (*v).clone()).collect(),
            reasons: vec![ExclusionReason::SilentShares; out.len()],
            signature: Vec::new(),
        };
        votes
            .votes
            .entry(a.context())
            .or_default()
            .entry(round)
            .or_default()
            .insert(voter.clone(), v);
    }

    #[test]
    fn t_votes_for_one_set_decide_the_next_attempt() {
        let (party, ids, first) = setup();
        let mut votes = Votes::default();
        put(&mut votes, &first, 0, &ids[0], &[&ids[3]]);
        put(&mut votes, &first, 0, &ids[1], &[&ids[3]]);
        put(&mut votes, &first, 0, &ids[2], &[&ids[2], &ids[3]]);
        assert!(
            votes.next_attempt(&party, &first).is_none(),
            "two votes for one set and one for another are no quorum at t = 3"
        );
        put(&mut votes, &first, 0, &ids[2], &[&ids[3]]);
        let next = votes.next_attempt(&party, &first).expect("a quorum");
        assert_eq!(next.number(), 1);
        assert_eq!(next.participants(), &ids[..3]);
        assert_eq!(next.params().n, 3);
        assert_eq!(next.member_index(&ids[0]), Some(1));
        assert_ne!(next.context(), first.context());
        let left = &next.excluded()[0];
        assert_eq!((&left.validator, left.attempt), (&ids[3], 0));
        assert_eq!(left.voters, ids[..3].to_vec());
        // Messages of attempt 0 are done with; others may be for an attempt still to come.
        assert!(matches!(
            next.classify(&first.context(), false),
            Some(Handled::Done)
        ));
        assert!(matches!(
            next.classify(&[7; 32], false),
            Some(Handled::Wait)
        ));
        assert!(next.classify(&next.context(), false).is_none());
        // The chain stops at the attempt already reached.
        assert!(votes.next_attempt(&party, &next).is_none());
    }

    #[test]
    fn the_lowest_round_with_a_quorum_decides() {
        let (party, ids, first) = setup();
        let mut votes = Votes::default();
        for v in &ids[..3] {
            put(&mut votes, &first, 1, v, &[&ids[2]]);
        }
        for v in &ids[1..] {
            put(&mut votes, &first, 0, v, &[&ids[0]]);
        }
        let next = votes.next_attempt(&party, &first).expect("a quorum");
        assert_eq!(next.excluded()[0].validator, ids[0]);
        assert_eq!(next.member_index(&ids[0]), None, "we are left out");
        assert_eq!(next.params().i, 0);
    }

    #[test]
    fn a_vote_is_cast_once_per_view_until_it_goes_stale() {
        let (party, ids, first) = setup();
        let mut votes = Votes::default();
        votes.set_timeout(1_000);
        assert!(votes.cast(&party, &first, BTreeMap::new(), 0).is_none());
        let silent = |v: &ValidatorId| BTreeMap::from([(v.clone(), ExclusionReason::SilentShares)]);
        let vote = votes.cast(&party, &first, silent(&ids[3]), 0).unwrap();
        assert_eq!((vote.round, vote.attempt), (0, 0));
        assert_eq!(vote.exclude, vec![ids[3].clone()]);
        assert!(verify_processor_signature(
            &party.signer().public(),
            VOTE_DOMAIN,
            &vote_body(&vote),
            &vote.signature
        ));
        assert!(
            votes.cast(&party, &first, silent(&ids[3]), 999).is_none(),
            "the same view is not voted twice within a timeout"
        );
        let again = votes.cast(&party, &first, silent(&ids[3]), 1_000).unwrap();
        assert_eq!(
            again.round, 1,
            "a vote with no quorum is repeated in the next round"
        );
        assert_eq!(votes.views(&first.context()).len(), 2);
    }

    #[test]
    fn a_later_vote_takes_in_whom_enough_voters_named() {
        let (party, ids, first) = setup();
        let mut votes = Votes::default();
        put(&mut votes, &first, 0, &ids[0], &[&ids[3]]);
        // n − t + 1 = 2 voters of round 0 name ids[2].
        put(&mut votes, &first, 0, &ids[1], &[&ids[2]]);
        put(&mut votes, &first, 0, &ids[3], &[&ids[2]]);
        let silent = BTreeMap::from([(ids[3].clone(), ExclusionReason::SilentShares)]);
        let vote = votes.cast(&party, &first, silent, 0).unwrap();
        assert_eq!(vote.round, 1);
        let mut expected = vec![ids[2].clone(), ids[3].clone()];
        expected.sort();
        assert_eq!(vote.exclude, expected);
    }
}
