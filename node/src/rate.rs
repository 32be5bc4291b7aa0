//! Per-peer rate limits: a token bucket per peer and protocol. Past its burst, a peer's gossip is
//! ignored and its requests go unanswered (an honest sender's outbox retries with backoff; a
//! flooding one gets nothing), with one log line per peer and window.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// Most peers tracked. Gossip is limited per author once the author is known to be a
/// validator, and requests per connected validator, so this is never reached honestly; it
/// bounds the map whatever the keys.
const MAX_TRACKED: usize = 4096;
/// At most one warning per peer in this window.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A token bucket per peer.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
    warned: HashMap<PeerId, Instant>,
}

impl RateLimiter {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: HashMap::new(),
            warned: HashMap::new(),
        }
    }

    /// `per_minute` sustained, `burst` at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            ..RateLimiter::new(0, burst)
        }
    }

    /// Whether `peer` may send one more message at `now`.
    pub fn allow(&mut self, peer: &PeerId, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(peer) {
            self.evict(now);
        }
        let (tokens, last) = self.buckets.entry(*peer).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Make room for new peers: forget those whose bucket has refilled by `now` (forgetting
    /// them changes nothing: a new bucket starts full), and if that frees less than a quarter
    /// of the map, the least recently seen quarter too. One pass frees a quarter at least, so
    /// the scan is paid once per `MAX_TRACKED / 4` new peers, not per message.
    fn evict(&mut self, now: Instant) {
        let (burst, per_second) = (self.burst, self.per_second);
        self.buckets.retain(|_, (tokens, last)| {
            let refill = now.saturating_duration_since(*last).as_secs_f64() * per_second;
            *tokens + refill < burst
        });
        let target = MAX_TRACKED - MAX_TRACKED / 4;
        if self.buckets.len() > target {
            let mut seen: Vec<Instant> = self.buckets.values().map(|(_, last)| *last).collect();
            let cut = self.buckets.len() - target;
            seen.select_nth_unstable(cut - 1);
            let before = seen[cut - 1];
            self.buckets.retain(|_, (_, last)| *last > before);
        }
    }

    /// Peers tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Whether to log that `peer` is limited now (once per window).
    pub fn should_warn(&mut self, peer: &PeerId, now: Instant) -> bool {
        if self.warned.len() >= MAX_TRACKED {
            self.warned.clear();
        }
        match self.warned.get(peer) {
            Some(t) if now.saturating_duration_since(*t) < WARN_EVERY => false,
            _ => {
                self.warned.insert(*peer, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut r = RateLimiter::new(10, 5);
        let p = PeerId::random();
        let q = PeerId::random();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| r.allow(&p, t0)).count(), 5);
        // Another peer has its own bucket.
        assert!(r.allow(&q, t0));
        // 300 ms later, 3 more tokens.
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!((0..8).filter(|_| r.allow(&p, t1)).count(), 3);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..8).filter(|_| r.allow(&p, t2)).count(), 5);
        assert!(r.should_warn(&p, t2));
        assert!(!r.should_warn(&p, t2 + Duration::from_secs(1)));
        assert!(r.should_warn(&p, t2 + Duration::from_secs(11)));
        // Per minute: 3 at once, then one every 20 s.
        let mut c = RateLimiter::per_minute(3, 3);
        assert_eq!((0..5).filter(|_| c.allow(&p, t0)).count(), 3);
        assert!(!c.allow(&p, t0 + Duration::from_secs(19)));
        assert!(c.allow(&p, t0 + Duration::from_secs(21)));
    }

    #[test]
    fn ten_thousand_random_peers_keep_the_map_bounded() {
        let mut r = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        let busy = PeerId::random();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            // A flooding peer spends its burst and stays limited...
            r.allow(&busy, now);
            assert!(r.allow(&PeerId::random(), now));
            assert!(r.tracked() <= MAX_TRACKED);
        }
        // ...across the evictions: its bucket is the most recently used, never forgotten.
        let now = t0 + Duration::from_millis(10_000);
        assert!(!r.allow(&busy, now) || !r.allow(&busy, now));
        // Peers all at once (no time passing, nothing refilled): still bounded.
        for _ in 0..10_000 {
            r.allow(&PeerId::random(), now);
        }
        assert!(r.tracked() <= MAX_TRACKED);
    }
}
