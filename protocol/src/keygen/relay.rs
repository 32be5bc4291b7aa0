//! Complaints and relays: a validator that withholds its DKG messages from one honest
//! participant must not be able to make the others vote that participant out.
//!
//! * A participant whose phase made no progress for a fraction of the timeout names whom it
//!   still waits for ([`KeyGenComplaint`], gossiped).
//! * Commitments, echoes and confirmations carry their author's processor signature, so any
//!   participant holding them relays them to the complainer ([`KeyGenRelayOut`], sealed to it):
//!   the starved node gets what the others got, and the relayer can add nothing of its own.
//! * A share only its dealer has (and only its recipient can open): the dealer answers a
//!   complaint about it publicly ([`KeyGenShareAnswer`]), and until it has, a vote spares the
//!   complainer and names the dealer (`stall.rs`). A false complaint is answered and spares
//!   nobody; a bad published share is blamed like a bad direct one.
//!
//! Bounded: one complaint per complainer kept (the latest), at most
//! [`MAX_RELAYS_PER_COMPLAINER`] relays sent to one complainer per attempt, each list no longer
//! than the attempt's participants.

use std::collections::{BTreeMap, BTreeSet};

use super::{address_body, digest_body, payload_body, KeyGen, Stage};
use super::{ADDRESS_DOMAIN, COMMITMENT_DOMAIN, DIGEST_DOMAIN, SHARE_DOMAIN};
use crate::{
    error::{ProtocolError, Result},
    ids::ValidatorId,
    keys::verify_processor_signature,
    messages::*,
    party::Party,
    processor::{Handled, Output, Phase},
    seal::SealKind,
};

/// Most relays this node sends one complainer in one attempt (a complainer asks at most
/// [`crate::attempts::ANNOUNCEMENT_REQUESTS_PER_TIMEOUT`] times per phase).
pub(crate) const MAX_RELAYS_PER_COMPLAINER: u8 = 8;

/// Largest plaintext of one relay part: a Noise message less its overhead, with room for
/// postcard's length prefixes.
const MAX_RELAY_PART: usize = crate::seal::MAX_SEALED_LEN - crate::seal::SEAL_OVERHEAD - 1024;

/// `relay` in parts that each seal into one Noise message (at n = 128 a commitment message
/// alone is about 3 KB, and a relay may carry one per participant). Every item is far smaller
/// than a part.
fn split_relay(relay: KeyGenRelay) -> Result<Vec<KeyGenRelay>> {
    fn len<T: serde::Serialize>(v: &T) -> Result<usize> {
        postcard::to_stdvec(v)
            .map(|b| b.len())
            .map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
    /// The part an item of `n` bytes goes in: the last one, or a new one when it is full.
    fn part_for<'a>(
        parts: &'a mut Vec<KeyGenRelay>,
        used: &mut usize,
        n: usize,
    ) -> &'a mut KeyGenRelay {
        if parts.is_empty() || (*used > 0 && *used + n > MAX_RELAY_PART) {
            parts.push(KeyGenRelay::default());
            *used = 0;
        }
        *used += n;
        let last = parts.len() - 1;
        &mut parts[last]
    }
    let (mut parts, mut used) = (Vec::new(), 0usize);
    for item in relay.commitments {
        let n = len(&item)?;
        part_for(&mut parts, &mut used, n).commitments.push(item);
    }
    for item in relay.digests {
        let n = len(&item)?;
        part_for(&mut parts, &mut used, n).digests.push(item);
    }
    for item in relay.confirmations {
        let n = len(&item)?;
        part_for(&mut parts, &mut used, n).confirmations.push(item);
    }
    Ok(parts)
}

/// What one attempt keeps to relay, and the complaints and answers it saw.
#[derive(Default)]
pub(crate) struct Relay {
    /// Each participant's signed echo (ours included).
    digests: BTreeMap<u16, KeyGenCommitmentsDigest>,
    /// Each participant's signed confirmation (ours included).
    confirmations: BTreeMap<u16, PublicAddressAvailable>,
    /// The signed shares we dealt, by recipient.
    sent_shares: BTreeMap<u16, KeyGenPayload>,
    /// Per complainer, the dealers its latest complaint about shares names.
    share_complaints: BTreeMap<u16, BTreeSet<u16>>,
    /// Per dealer, the recipients it published a signed share for (ours included).
    answered: BTreeMap<u16, BTreeSet<u16>>,
    /// Relays sent per complainer.
    relays_sent: BTreeMap<u16, u8>,
}

impl Relay {
    pub(super) fn keep_digest(&mut self, l: u16, d: &KeyGenCommitmentsDigest) {
        self.digests.entry(l).or_insert_with(|| d.clone());
    }

    pub(super) fn keep_confirmation(&mut self, l: u16, a: &PublicAddressAvailable) {
        self.confirmations.entry(l).or_insert_with(|| a.clone());
    }

    pub(super) fn keep_sent_share(&mut self, l: u16, share: KeyGenPayload) {
        self.sent_shares.insert(l, share);
    }
}

impl KeyGen {
    /// Our own confirmation, kept to relay.
    pub(crate) fn keep_own_confirmation(&mut self, a: &PublicAddressAvailable) {
        let i = self.attempt.params().i;
        self.relay.keep_confirmation(i, a);
    }

    /// What a complaint of ours would say now: what the phase waits for and from whom.
    pub(super) fn complaint(&self, party: &Party) -> Option<KeyGenComplaint> {
        let (awaited, have): (Awaited, BTreeSet<u16>) = match self.phase() {
            Phase::Commitments => (
                Awaited::Commitments,
                self.commitments.keys().copied().collect(),
            ),
            Phase::CommitmentEcho => (Awaited::Digests, self.digests.keys().copied().collect()),
            Phase::Shares => (Awaited::Shares, self.shares.keys().copied().collect()),
            Phase::Confirming => (
                Awaited::Confirmations,
                self.confirmations.keys().copied().collect(),
            ),
            _ => return None,
        };
        let me = party.me();
        let missing: Vec<ValidatorId> = self
            .attempt
            .participants()
            .iter()
            .filter(|v| *v != me)
            .filter(|v| {
                self.attempt
                    .member_index(v)
                    .is_some_and(|l| !have.contains(&l))
            })
            .cloned()
            .collect();
        (!missing.is_empty()).then(|| KeyGenComplaint {
            coin: party.coin(),
            context: self.attempt.context(),
            awaited,
            missing,
        })
    }

    /// The dealers that complainer `l` said it waits for and that have not published its
    /// share (never us: we answer every complaint we can).
    pub(super) fn unanswered_dealers(&self, l: u16) -> Vec<u16> {
        let me = self.attempt.params().i;
        self.relay
            .share_complaints
            .get(&l)
            .into_iter()
            .flatten()
            .filter(|d| **d != me)
            .filter(|d| !self.relay.answered.get(d).is_some_and(|r| r.contains(&l)))
            .copied()
            .collect()
    }

    /// A participant's complaint: relay what we hold of whom it waits for, or (for our shares)
    /// publish its share.
    pub(crate) fn on_complaint(
        &mut self,
        party: &Party,
        from: &ValidatorId,
        c: &KeyGenComplaint,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        party.check_sender(from, c.coin)?;
        if let Some(h) = self.classify(&c.context) {
            return Ok(h);
        }
        let l = self.attempt.index_of(from)?;
        let missing = self.participant_indexes(from, "complaint", &c.missing)?;
        if missing.contains(&l) {
            return Err(ProtocolError::peer(
                from,
                "complains it lacks its own message",
            ));
        }
        let me = self.attempt.params().i;
        if self.decided() || self.attempt.member_index(party.me()).is_none() {
            return Ok(Handled::Done);
        }
        if c.awaited == Awaited::Shares {
            self.relay
                .share_complaints
                .insert(l, missing.iter().copied().collect());
            if missing.contains(&me) {
                self.answer_share_complaint(party, l, out);
            }
            return Ok(Handled::Done);
        }
        self.relay.share_complaints.remove(&l);
        self.send_relay(party, from, l, c.awaited, &missing, out)?;
        Ok(Handled::Done)
    }

    /// `vs` (of `from`'s `what`) as participant indexes: in participant order, no duplicates,
    /// at least one.
    fn participant_indexes(
        &self,
        from: &ValidatorId,
        what: &str,
        vs: &[ValidatorId],
    ) -> Result<Vec<u16>> {
        let ls: Option<Vec<u16>> = vs.iter().map(|v| self.attempt.member_index(v)).collect();
        match ls {
            Some(ls) if !ls.is_empty() && ls.windows(2).all(|w| w[0] < w[1]) => Ok(ls),
            _ => Err(ProtocolError::peer(
                from,
                format!(
                    "malformed {what} (empty, out of participant order, or naming non-participants)"
                ),
            )),
        }
    }

    /// Publish (again, cumulatively) our signed shares for every complainer so far.
    fn answer_share_complaint(&mut self, party: &Party, complainer: u16, out: &mut Vec<Output>) {
        let me = self.attempt.params().i;
        if !self.relay.sent_shares.contains_key(&complainer)
            || self
                .relay
                .answered
                .get(&me)
                .is_some_and(|r| r.contains(&complainer))
        {
            return;
        }
        let answered = self.relay.answered.entry(me).or_default();
        answered.insert(complainer);
        let shares = answered
            .iter()
            .filter_map(|r| {
                let v = self.attempt.member_at(*r)?.clone();
                Some((v, self.relay.sent_shares.get(r)?.clone()))
            })
            .collect();
        out.push(Output::Bus(ProcessorMessage::KeyGenShareAnswer(
            KeyGenShareAnswer {
                coin: party.coin(),
                context: self.attempt.context(),
                shares,
            },
        )));
    }

    /// Seal to complainer `l` the signed messages of `missing` that we hold.
    fn send_relay(
        &mut self,
        party: &Party,
        to: &ValidatorId,
        l: u16,
        awaited: Awaited,
        missing: &[u16],
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let sent = self.relay.relays_sent.entry(l).or_default();
        if *sent >= MAX_RELAYS_PER_COMPLAINER {
            return Ok(());
        }
        let mut relay = KeyGenRelay::default();
        for &m in missing {
            let Some(author) = self.attempt.member_at(m).cloned() else {
                continue;
            };
            match awaited {
                Awaited::Commitments => {
                    if let (Some(bytes), Some(signature)) =
                        (self.commitments.get(&m), self.commitment_sigs.get(&m))
                    {
                        let payload = KeyGenPayload {
                            bytes: bytes.clone(),
                            signature: signature.clone(),
                        };
                        relay.commitments.push((author, payload));
                    }
                }
                Awaited::Digests => {
                    if let Some(d) = self.relay.digests.get(&m) {
                        relay.digests.push((author, d.clone()));
                    }
                }
                Awaited::Confirmations => {
                    if let Some(a) = self.relay.confirmations.get(&m) {
                        relay.confirmations.push((author, a.clone()));
                    }
                }
                Awaited::Shares => {}
            }
        }
        if relay.commitments.is_empty()
            && relay.digests.is_empty()
            && relay.confirmations.is_empty()
        {
            return Ok(());
        }
        *sent += 1;
        let context = self.attempt.context();
        for (part, relay) in split_relay(relay)?.into_iter().enumerate() {
            let payload =
                postcard::to_stdvec(&relay).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            let sealed = party.seal_with(SealKind::KeyGenRelay, to, context, &payload)?;
            out.push(Output::Bus(ProcessorMessage::KeyGenRelayOut(
                KeyGenRelayOut {
                    coin: party.coin(),
                    to: to.clone(),
                    context,
                    part: u8::try_from(part).unwrap_or(u8::MAX),
                    sealed,
                },
            )));
        }
        Ok(())
    }

    /// Messages relayed to us: each is checked against its author's signature (a forgery
    /// names the relayer), then taken as if its author had sent it (a fault in what the
    /// author signed names the author).
    pub(crate) fn on_relay(
        &mut self,
        party: &Party,
        m: &KeyGenRelayIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        let from = &m.from;
        party.check_sender(from, m.msg.coin)?;
        if m.msg.to != *party.me() {
            return Err(ProtocolError::peer(
                from,
                "relay addressed to another validator",
            ));
        }
        if let Some(h) = self.classify(&m.msg.context) {
            return Ok(h);
        }
        self.attempt.index_of(from)?;
        if self.decided() {
            return Ok(Handled::Done);
        }
        let context = self.attempt.context();
        let Some(bytes) = party.open_with(SealKind::KeyGenRelay, from, context, &m.msg.sealed)?
        else {
            return Ok(Handled::Wait);
        };
        let relay: KeyGenRelay = postcard::from_bytes(&bytes)
            .map_err(|e| ProtocolError::peer(from, format!("relay: {e}")))?;
        let n = self.attempt.participants().len();
        if relay.commitments.len() > n || relay.digests.len() > n || relay.confirmations.len() > n {
            return Err(ProtocolError::peer(
                from,
                "relay longer than the participants",
            ));
        }
        let coin = party.coin();
        let forged = |author: &ValidatorId| {
            ProtocolError::peer(from, format!("relayed a message {author} did not sign"))
        };
        let mut first_error = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        for (author, payload) in relay.commitments {
            let Some((la, signer)) = self.relayed_author(party, from, &author)? else {
                continue;
            };
            if self.stage >= Stage::Computed {
                continue;
            }
            let body = payload_body(coin, &context, &author, None, &payload.bytes);
            if !verify_processor_signature(&signer, COMMITMENT_DOMAIN, &body, &payload.signature) {
                return Err(forged(&author));
            }
            note(self.take_commitment(party, &author, la, payload, out));
        }
        for (author, d) in relay.digests {
            let Some((_, signer)) = self.relayed_author(party, from, &author)? else {
                continue;
            };
            let body = digest_body(d.coin, &d.context, &d.digest);
            if d.context != context
                || !verify_processor_signature(&signer, DIGEST_DOMAIN, &body, &d.signature)
            {
                return Err(forged(&author));
            }
            note(self.on_digest(party, &author, &d, out).map(|_| ()));
        }
        for (author, a) in relay.confirmations {
            let Some((_, signer)) = self.relayed_author(party, from, &author)? else {
                continue;
            };
            if a.context != context
                || !verify_processor_signature(
                    &signer,
                    ADDRESS_DOMAIN,
                    &address_body(&a),
                    &a.signature,
                )
            {
                return Err(forged(&author));
            }
            note(self.on_confirmation(party, &author, &a).map(|_| ()));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Handled::Done),
        }
    }

    /// A relayed item's author: its index and processor signature key; `None` for our own
    /// messages and authors whose key we do not know yet; an error naming the relayer for a
    /// non-participant.
    fn relayed_author(
        &self,
        party: &Party,
        relayer: &ValidatorId,
        author: &ValidatorId,
    ) -> Result<Option<(u16, [u8; 32])>> {
        let Some(l) = self.attempt.member_index(author) else {
            return Err(ProtocolError::peer(
                relayer,
                format!("relayed a message of {author}, not a participant"),
            ));
        };
        if author == party.me() {
            return Ok(None);
        }
        Ok(party.signer_of(author).map(|s| (l, s)))
    }

    /// A dealer's published shares: every participant notes whose complaint it answered; the
    /// recipient takes its share as if it came directly.
    pub(crate) fn on_share_answer(
        &mut self,
        party: &Party,
        from: &ValidatorId,
        a: &KeyGenShareAnswer,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        party.check_sender(from, a.coin)?;
        if let Some(h) = self.classify(&a.context) {
            return Ok(h);
        }
        let l = self.attempt.index_of(from)?;
        if self.decided() {
            return Ok(Handled::Done);
        }
        let Some(signer) = party.signer_of(from) else {
            return Ok(Handled::Wait);
        };
        let recipients: Vec<ValidatorId> = a.shares.iter().map(|(v, _)| v.clone()).collect();
        let ls = self.participant_indexes(from, "share answer", &recipients)?;
        if ls.contains(&l) {
            return Err(ProtocolError::peer(from, "published a share for itself"));
        }
        let context = self.attempt.context();
        for (to, payload) in &a.shares {
            let body = payload_body(party.coin(), &context, from, Some(to), &payload.bytes);
            if !verify_processor_signature(&signer, SHARE_DOMAIN, &body, &payload.signature) {
                return Err(ProtocolError::peer(
                    from,
                    "bad processor signature on a published share",
                ));
            }
        }
        self.relay.answered.entry(l).or_default().extend(ls);
        let mine = a.shares.iter().find(|(to, _)| to == party.me());
        if let Some((_, payload)) = mine {
            if self.stage < Stage::Computed && self.attempt.member_index(party.me()).is_some() {
                self.take_share(party, from, l, payload.clone(), out)?;
            }
        }
        Ok(Handled::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_relay_is_split_into_parts_that_each_seal() {
        // n = 128, t = 86: 127 signed commitment messages of 33 * 86 + 98 bytes.
        let author = ValidatorId::from_ed25519(&[3; 32]);
        let item = (
            author,
            KeyGenPayload {
                bytes: vec![7; 33 * 86 + 98],
                signature: vec![1; 64],
            },
        );
        let relay = KeyGenRelay {
            commitments: vec![item; 127],
            ..KeyGenRelay::default()
        };
        let whole = postcard::to_stdvec(&relay).unwrap().len();
        assert!(whole > crate::seal::MAX_SEALED_LEN, "{whole}");
        let parts = split_relay(relay).unwrap();
        assert!(parts.len() > 1);
        assert_eq!(
            parts.iter().map(|p| p.commitments.len()).sum::<usize>(),
            127
        );
        for p in &parts {
            let len = postcard::to_stdvec(p).unwrap().len();
            assert!(
                len + crate::seal::SEAL_OVERHEAD <= crate::seal::MAX_SEALED_LEN,
                "{len}"
            );
        }
    }
}
