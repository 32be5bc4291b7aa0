//! Redials of the validators we are not connected to: each with its own exponential backoff
//! (2 s doubling to 60 s), reset when it connects. Sans-IO: the caller passes the time and
//! dials.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// Wait before the second dial of a missing validator.
const REDIAL_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between two dials.
const REDIAL_MAX: Duration = Duration::from_secs(60);

/// When to dial each missing validator next (one entry per validator of the definition).
#[derive(Default)]
pub struct Redial {
    next: HashMap<PeerId, (Instant, Duration)>,
    /// When a lookup last made us dial each validator (one entry per validator).
    found: HashMap<PeerId, Instant>,
}

impl Redial {
    /// Which of the `missing` validators to dial at `now`, with the wait before the next dial
    /// of each.
    pub fn due(
        &mut self,
        missing: impl IntoIterator<Item = PeerId>,
        now: Instant,
    ) -> Vec<(PeerId, Duration)> {
        let mut out = Vec::new();
        for p in missing {
            let backoff = match self.next.get(&p) {
                Some((at, _)) if *at > now => continue,
                Some((_, b)) => (*b * 2).min(REDIAL_MAX),
                None => REDIAL_FIRST,
            };
            self.next.insert(p, (now + backoff, backoff));
            out.push((p, backoff));
        }
        out
    }

    /// A lookup found addresses of these `missing` validators: they are dialled now, whatever
    /// their backoff (the dials before may have had no address to try), and their backoff
    /// starts anew. One a lookup made us dial less than [`REDIAL_FIRST`] ago is left alone, so
    /// lookups cannot make us dial in a loop.
    pub fn discovered(
        &mut self,
        missing: impl IntoIterator<Item = PeerId>,
        now: Instant,
    ) -> Vec<PeerId> {
        let mut out = Vec::new();
        for p in missing {
            if self
                .found
                .get(&p)
                .is_some_and(|at| now.saturating_duration_since(*at) < REDIAL_FIRST)
            {
                continue;
            }
            self.found.insert(p, now);
            self.next.insert(p, (now + REDIAL_FIRST, REDIAL_FIRST));
            out.push(p);
        }
        out
    }

    /// `peer` connected: its next disconnection starts the backoff anew.
    pub fn connected(&mut self, peer: &PeerId) {
        self.next.remove(peer);
        self.found.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_validator_is_dialled_with_its_own_doubling_backoff() {
        let mut r = Redial::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let waits = |d: Vec<(PeerId, Duration)>| -> Vec<u64> {
            d.into_iter().map(|(_, w)| w.as_secs()).collect()
        };
        assert_eq!(waits(r.due([a], t0)), [2]);
        assert!(r.due([a], t0 + Duration::from_secs(1)).is_empty());
        // b has its own schedule.
        assert_eq!(waits(r.due([a, b], t0 + Duration::from_secs(2))), [4, 2]);
        let mut at = t0 + Duration::from_secs(2);
        let mut seen = Vec::new();
        for _ in 0..6 {
            at += Duration::from_secs(60);
            seen.extend(waits(r.due([a], at)));
        }
        assert_eq!(seen, [8, 16, 32, 60, 60, 60]);
        r.connected(&a);
        assert_eq!(
            waits(r.due([a], at)),
            [2],
            "a connection resets the backoff"
        );
    }

    #[test]
    fn a_lookup_right_after_a_blind_dial_still_dials() {
        // At start every validator is dialled before any address is known; a lookup that
        // finds them a moment later must not wait for that dial's backoff.
        let mut r = Redial::default();
        let a = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(r.due([a], t0).len(), 1);
        assert_eq!(r.discovered([a], t0 + Duration::from_millis(500)), [a]);
        assert!(r
            .discovered([a], t0 + Duration::from_millis(1500))
            .is_empty());
    }

    #[test]
    fn a_validator_a_lookup_finds_is_dialled_at_once_but_not_twice_within_the_first_wait() {
        let mut r = Redial::default();
        let a = PeerId::random();
        let t0 = Instant::now();
        let mut at = t0;
        for _ in 0..5 {
            r.due([a], at);
            at += Duration::from_secs(60);
        }
        // Its backoff is at 60 s; a lookup found it: dialled now.
        assert_eq!(r.discovered([a], at), [a]);
        assert!(
            r.discovered([a], at + Duration::from_secs(1)).is_empty(),
            "not again within 2 s"
        );
        assert_eq!(r.discovered([a], at + Duration::from_secs(3)), [a]);
        // The backoff started anew.
        assert!(r.due([a], at + Duration::from_secs(4)).is_empty());
        assert_eq!(r.due([a], at + Duration::from_secs(5)).len(), 1);
        // Never dialled before: at once.
        let b = PeerId::random();
        assert_eq!(r.discovered([b], t0), [b]);
    }
}
