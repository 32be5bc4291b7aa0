//! The outbox: direct requests waiting for their recipient's acknowledgement, with retries.
//!
//! One entry per (recipient, slot): a newer request of the same slot replaces the older one
//! (`storage::OutboxKey::for_request` chooses the slot). A durable entry (DKG traffic) is in the
//! `outbox` table before it is first sent and is deleted from there once acknowledged; a
//! volatile one (signing, announcement replays) lives here only, until it is acknowledged or
//! expires. A failed delivery is retried with exponential backoff from 0.5 s to 30 s (at most
//! 1 s for volatile entries, whose ceremony has a deadline); the recipient connecting again
//! makes its entries due at once. Sans-IO: the caller passes the time and does the sending.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    time::{Duration, Instant},
};

use protocol::ValidatorId;
use storage::OutboxKey;

/// First wait after a failed delivery.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts to deliver a durable request.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait between two attempts to deliver a volatile request.
const MAX_VOLATILE_BACKOFF: Duration = Duration::from_secs(1);

type Slot = (ValidatorId, Vec<u8>);

struct Entry {
    bytes: Vec<u8>,
    kind: &'static str,
    generation: u64,
    next_attempt: Instant,
    backoff: Duration,
    in_flight: bool,
    /// Volatile entries give up at this instant.
    expires: Option<Instant>,
}

/// A request to send now.
#[derive(Debug, PartialEq, Eq)]
pub struct Send {
    /// Recipient.
    pub to: ValidatorId,
    /// The encoded request.
    pub bytes: Vec<u8>,
    /// Its kind, for metrics.
    pub kind: &'static str,
    slot: Slot,
    generation: u64,
}

/// What an answer (or its absence) did to the outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Delivered; `Some` names the stored copy to delete (durable entries).
    Delivered(Option<OutboxKey>),
    /// Not delivered: tried again after `retry_in`.
    Retry {
        /// Recipient.
        to: ValidatorId,
        /// Kind.
        kind: &'static str,
        /// When the next attempt comes.
        retry_in: Duration,
    },
    /// The answer was for an entry that has since been replaced, expired or is unknown.
    Stale,
}

/// The outbox; `Id` is the transport's request id.
pub struct Outbox<Id> {
    entries: BTreeMap<Slot, Entry>,
    in_flight: HashMap<Id, (Slot, u64)>,
    generation: u64,
}

impl<Id> Default for Outbox<Id> {
    fn default() -> Self {
        Outbox {
            entries: BTreeMap::new(),
            in_flight: HashMap::new(),
            generation: 0,
        }
    }
}

impl<Id: Hash + Eq> Outbox<Id> {
    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queue `bytes` for `key`, due at once, replacing what the slot held; `expires` makes it
    /// volatile.
    pub fn insert(
        &mut self,
        key: OutboxKey,
        bytes: Vec<u8>,
        kind: &'static str,
        expires: Option<Instant>,
        now: Instant,
    ) {
        self.generation += 1;
        self.entries.insert(
            (key.to, key.slot),
            Entry {
                bytes,
                kind,
                generation: self.generation,
                next_attempt: now,
                backoff: FIRST_BACKOFF,
                in_flight: false,
                expires,
            },
        );
    }

    /// Drop the volatile entries whose time is up (those in flight wait for their answer).
    /// Returns whether any was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.in_flight || e.expires.is_none_or(|x| x > now));
        self.entries.len() != before
    }

    /// The entries due at `now` whose recipient `reachable` says can be reached; each is in
    /// flight until [`Outbox::sent`] and then [`Outbox::settle`].
    pub fn due(&mut self, now: Instant, reachable: impl Fn(&ValidatorId) -> bool) -> Vec<Send> {
        let mut sends = Vec::new();
        for (slot, e) in self.entries.iter_mut() {
            if e.in_flight || e.next_attempt > now || !reachable(&slot.0) {
                continue;
            }
            if e.expires.is_some() {
                e.backoff = e.backoff.min(MAX_VOLATILE_BACKOFF);
            }
            e.in_flight = true;
            sends.push(Send {
                to: slot.0.clone(),
                bytes: e.bytes.clone(),
                kind: e.kind,
                slot: slot.clone(),
                generation: e.generation,
            });
        }
        sends
    }

    /// `send` left as transport request `id`.
    pub fn sent(&mut self, send: Send, id: Id) {
        self.in_flight.insert(id, (send.slot, send.generation));
    }

    /// The answer to request `id`: `delivered` (acknowledged) or not (failed, unanswered).
    pub fn settle(&mut self, id: &Id, delivered: bool, now: Instant) -> Settled {
        let Some((slot, generation)) = self.in_flight.remove(id) else {
            return Settled::Stale;
        };
        let Some(e) = self.entries.get_mut(&slot) else {
            return Settled::Stale;
        };
        if e.generation != generation {
            return Settled::Stale; // replaced meanwhile: the new entry is sent on its own
        }
        if delivered {
            let durable = self
                .entries
                .remove(&slot)
                .is_some_and(|e| e.expires.is_none());
            let (to, slot) = slot;
            return Settled::Delivered(durable.then_some(OutboxKey { to, slot }));
        }
        e.in_flight = false;
        e.next_attempt = now + e.backoff;
        let retry_in = e.backoff;
        e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
        Settled::Retry {
            to: slot.0,
            kind: e.kind,
            retry_in,
        }
    }

    /// `to` connected: what waits for it is due at once, with the backoff reset.
    pub fn connected(&mut self, to: &ValidatorId, now: Instant) {
        for ((v, _), e) in self.entries.iter_mut() {
            if v == to && !e.in_flight {
                e.next_attempt = now;
                e.backoff = FIRST_BACKOFF;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: u8) -> ValidatorId {
        ValidatorId::from_bytes(&[b; 8]).unwrap()
    }

    fn key(to: u8, slot: u8) -> OutboxKey {
        OutboxKey {
            to: v(to),
            slot: vec![slot],
        }
    }

    /// Send everything due and return the transport ids used (1, 2, ... per call order).
    fn send_due(o: &mut Outbox<u64>, now: Instant, next_id: &mut u64) -> Vec<u64> {
        let mut ids = Vec::new();
        for s in o.due(now, |_| true) {
            *next_id += 1;
            o.sent(s, *next_id);
            ids.push(*next_id);
        }
        ids
    }

    #[test]
    fn a_failed_delivery_is_retried_with_doubling_backoff_until_acknowledged() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut id = 0;
        o.insert(key(1, 0), vec![7], "EncryptedKeyShareOut", None, t0);
        let first = send_due(&mut o, t0, &mut id);
        assert_eq!(first.len(), 1);
        // In flight: not sent twice.
        assert!(o.due(t0, |_| true).is_empty());
        let mut at = t0;
        let mut waits = Vec::new();
        let mut last = first[0];
        for _ in 0..8 {
            match o.settle(&last, false, at) {
                Settled::Retry { retry_in, .. } => waits.push(retry_in),
                other => panic!("{other:?}"),
            }
            assert!(o.due(at, |_| true).is_empty(), "not before its backoff");
            at += *waits.last().unwrap();
            let again = send_due(&mut o, at, &mut id);
            assert_eq!(again.len(), 1);
            last = again[0];
        }
        let ms: Vec<u64> = waits.iter().map(|d| d.as_millis() as u64).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(
            o.settle(&last, true, at),
            Settled::Delivered(Some(key(1, 0)))
        );
        assert!(o.is_empty());
    }

    #[test]
    fn a_replaced_request_is_sent_anew_and_the_old_answer_is_stale() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut id = 0;
        o.insert(key(1, 3), vec![1], "k", None, t0);
        let old = send_due(&mut o, t0, &mut id)[0];
        o.insert(key(1, 3), vec![2], "k", None, t0);
        let sends = o.due(t0, |_| true);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].bytes, vec![2]);
        assert_eq!(o.settle(&old, true, t0), Settled::Stale);
        assert_eq!(o.len(), 1, "the new request still waits for its own answer");
    }

    #[test]
    fn volatile_requests_expire_retry_within_a_second_and_leave_nothing_stored() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut id = 0;
        let expires = Some(t0 + Duration::from_secs(10));
        o.insert(key(2, 5), vec![1], "EncryptedPreprocessOut", expires, t0);
        let mut last = send_due(&mut o, t0, &mut id)[0];
        let mut at = t0;
        for _ in 0..4 {
            let Settled::Retry { retry_in, .. } = o.settle(&last, false, at) else {
                panic!()
            };
            assert!(retry_in <= Duration::from_secs(1));
            at += retry_in;
            last = send_due(&mut o, at, &mut id)[0];
        }
        assert_eq!(o.settle(&last, true, at), Settled::Delivered(None));
        // Another one, never delivered, is gone after its lifetime.
        o.insert(key(2, 6), vec![1], "k", expires, t0);
        assert!(!o.expire(t0 + Duration::from_secs(9)));
        assert!(o.expire(t0 + Duration::from_secs(11)));
        assert!(o.is_empty());
    }

    #[test]
    fn unreachable_recipients_wait_and_a_connection_makes_them_due_at_once() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut id = 100;
        o.insert(key(1, 0), vec![1], "k", None, t0);
        o.insert(key(2, 0), vec![2], "k", None, t0);
        let only_2 = o.due(t0, |to| *to == v(2));
        assert_eq!(only_2.len(), 1);
        assert_eq!(only_2[0].to, v(2));
        o.sent(only_2.into_iter().next().unwrap(), 1);
        // Validator 1 failed twice: its backoff grew to 2 s.
        let first = send_due(&mut o, t0, &mut id);
        let Settled::Retry { .. } = o.settle(&first[0], false, t0) else {
            panic!()
        };
        let t1 = t0 + Duration::from_millis(500);
        let second = send_due(&mut o, t1, &mut id);
        let _ = o.settle(&second[0], false, t1);
        assert!(o.due(t1, |_| true).is_empty());
        o.connected(&v(1), t1);
        assert_eq!(
            o.due(t1, |_| true).len(),
            1,
            "due at once after a connection"
        );
    }
}
