//! When each held packet leaves: its arrival plus the link's delay plus a jitter drawn uniformly
//! from [-jitter, +jitter], never before the packet ahead of it (a link keeps its order, as a
//! real path mostly does; netem would reorder). Sans-IO: the caller passes the time.

use std::time::{Duration, Instant};

/// One link's delay line.
pub struct Schedule {
    delay: Duration,
    jitter: Duration,
    rng: u64,
    last: Option<Instant>,
}

impl Schedule {
    /// A link of `delay` ± `jitter`; `seed` picks the jitter sequence.
    pub fn new(delay: Duration, jitter: Duration, seed: u64) -> Schedule {
        Schedule {
            delay,
            jitter: jitter.min(delay),
            // xorshift64* needs a non-zero state.
            rng: seed | 1,
            last: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// When a packet that arrived at `now` is released.
    pub fn release_at(&mut self, now: Instant) -> Instant {
        let j = self.jitter.as_nanos() as u64;
        let offset = if j == 0 {
            0i128
        } else {
            (self.next_u64() % (2 * j + 1)) as i128 - j as i128
        };
        let ns = (self.delay.as_nanos() as i128 + offset).max(0) as u64;
        let mut at = now + Duration::from_nanos(ns);
        if let Some(last) = self.last {
            at = at.max(last);
        }
        self.last = Some(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_jitter_every_packet_waits_the_delay() {
        let mut s = Schedule::new(Duration::from_millis(50), Duration::ZERO, 7);
        let t0 = Instant::now();
        for i in 0..10 {
            let now = t0 + Duration::from_millis(i * 3);
            assert_eq!(s.release_at(now) - now, Duration::from_millis(50));
        }
    }

    #[test]
    fn jitter_stays_within_its_bound_averages_out_and_keeps_the_order() {
        let (d, j) = (Duration::from_millis(50), Duration::from_millis(5));
        let mut s = Schedule::new(d, j, 42);
        let t0 = Instant::now();
        let mut prev = t0;
        let mut total = Duration::ZERO;
        let n = 10_000u32;
        for i in 0..n {
            // One packet every 20 ms: far enough apart that the order never holds one back.
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            let at = s.release_at(now);
            assert!(at >= prev, "reordered");
            prev = at;
            let wait = at - now;
            assert!(wait >= d - j && wait <= d + j, "{wait:?}");
            total += wait;
        }
        let mean = total / n;
        assert!(
            mean > Duration::from_micros(49_800) && mean < Duration::from_micros(50_200),
            "{mean:?}"
        );
        // Packets closer together than the jitter: later ones wait for earlier ones.
        let mut s = Schedule::new(d, j, 42);
        let mut prev = t0;
        for i in 0..1000u64 {
            let at = s.release_at(t0 + Duration::from_micros(i * 10));
            assert!(at >= prev);
            prev = at;
        }
    }

    #[test]
    fn jitter_larger_than_the_delay_is_capped_at_the_delay() {
        let mut s = Schedule::new(Duration::from_millis(2), Duration::from_millis(10), 1);
        let t0 = Instant::now();
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            assert!(s.release_at(now) - now <= Duration::from_millis(4));
        }
    }
}
