//! Freshness of gossip per author: gossipsub signs each message's sequence number, which
//! the author's node counts up from its start time (in nanoseconds), so a validator that
//! re-injects an honest author's recorded messages after gossipsub's duplicate cache has
//! forgotten them is caught here. A replay is rejected before it reaches the author's rate
//! budget, so it costs the author nothing; the rejection falls on the connection that carried
//! it (gossipsub penalises the propagation source).
//!
//! Per author: the highest sequence number seen and the last [`WINDOW`] seen below it. A
//! number already seen is a replay; one more than [`WINDOW`] below the highest is too old to
//! tell apart from a replay and is refused too (honest gossip arrives a few messages out of
//! order at most). Authors are validators only (checked before), so the map is bounded by the
//! validator set; [`MAX_AUTHORS`] bounds it whatever the keys.

use std::collections::{BTreeSet, HashMap};

use libp2p::PeerId;

/// Sequence numbers remembered below an author's highest.
pub const WINDOW: u64 = 1024;
/// Most authors tracked.
const MAX_AUTHORS: usize = 1024;

/// Why a message is not fresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Its author's message with this sequence number was taken before.
    Replayed,
    /// More than [`WINDOW`] below the author's newest.
    TooOld,
    /// Unsigned by a sequence number.
    Unnumbered,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stale::Replayed => "a replay of a message its author sent before",
            Stale::TooOld => "older than the author's recent messages",
            Stale::Unnumbered => "no sequence number",
        })
    }
}

#[derive(Default)]
struct Author {
    highest: u64,
    seen: BTreeSet<u64>,
}

/// Sequence numbers seen per author.
#[derive(Default)]
pub struct Freshness {
    authors: HashMap<PeerId, Author>,
}

impl Freshness {
    /// Take `author`'s message numbered `seq` if it is fresh (and remember it).
    pub fn check(&mut self, author: &PeerId, seq: Option<u64>) -> Result<(), Stale> {
        let seq = seq.ok_or(Stale::Unnumbered)?;
        if !self.authors.contains_key(author) && self.authors.len() >= MAX_AUTHORS {
            // Never reached with validators only; forget the quietest half rather than grow.
            let mut highest: Vec<u64> = self.authors.values().map(|a| a.highest).collect();
            highest.sort_unstable();
            let cut = highest[highest.len() / 2];
            self.authors.retain(|_, a| a.highest > cut);
        }
        let a = self.authors.entry(*author).or_default();
        if a.seen.contains(&seq) {
            return Err(Stale::Replayed);
        }
        if seq.saturating_add(WINDOW) < a.highest {
            return Err(Stale::TooOld);
        }
        a.seen.insert(seq);
        if seq > a.highest {
            a.highest = seq;
            let floor = seq.saturating_sub(WINDOW);
            a.seen = a.seen.split_off(&floor);
        }
        Ok(())
    }

    /// Authors tracked.
    pub fn tracked(&self) -> usize {
        self.authors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_stale_numbers_are_refused_reordering_is_not() {
        let mut f = Freshness::default();
        let a = PeerId::random();
        let b = PeerId::random();
        let base = 1_700_000_000_000_000_000u64;
        // Out of order within the window: all taken.
        for s in [base + 3, base + 1, base + 2, base + 5, base + 4] {
            assert_eq!(f.check(&a, Some(s)), Ok(()));
        }
        // The same numbers again, however late: replays.
        for s in [base + 1, base + 5] {
            assert_eq!(f.check(&a, Some(s)), Err(Stale::Replayed));
        }
        // Another author's numbers are its own.
        assert_eq!(f.check(&b, Some(base + 1)), Ok(()));
        // Far behind the newest: refused; the author's restart (a later base) is fresh.
        assert_eq!(f.check(&a, Some(base + 5 + WINDOW)), Ok(()));
        assert_eq!(f.check(&a, Some(base + 4)), Err(Stale::TooOld));
        assert_eq!(f.check(&a, Some(base + 10 * WINDOW)), Ok(()));
        assert_eq!(f.check(&a, None), Err(Stale::Unnumbered));
        // The memory per author stays within the window.
        for s in 0..10 * WINDOW {
            let _ = f.check(&a, Some(base + 20 * WINDOW + s));
        }
        assert!(f.authors[&a].seen.len() as u64 <= WINDOW + 1);
    }

    #[test]
    fn many_authors_stay_bounded() {
        let mut f = Freshness::default();
        for i in 0..10_000u64 {
            assert_eq!(f.check(&PeerId::random(), Some(i)), Ok(()));
            assert!(f.tracked() <= MAX_AUTHORS);
        }
    }
}
