//! What this node announces on the general partition, and when it announces it again.
//!
//! Gossip is not a log: a validator that subscribes late, or whose copy was abandoned in a full
//! send queue, misses a message. New announcements are published at once; a validator that
//! subscribes gets ours replayed directly; one whose DKG misses an announcement asks for it
//! (`AnnouncementRequest`, answered at most once per second per asker and coin). Whole
//! re-announcement rounds reach every validator, and each checks every copy, so they are a
//! safety net: one per DKG period (at most 60 s, at most `--dkg-timeout`) while a vault is not
//! active, one per 5 minutes after, one at once when a vote names us as silent unless our last
//! round is more recent than the fast period (20 s, at most a third of `--dkg-timeout`: one round
//! answers all the votes of an attempt). Our `PublicAddressAvailable`, which completes
//! everyone's vault, is gossiped once more a quarter of the fast period after it was first.
//! Measurements: docs/BENCHMARKS.md, items 4, 10, 14 and 16. Sans-IO: the caller passes the
//! time and gossips what it is given.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use protocol::{
    messages::{AnnouncementReplay, GeneralMessage, MAX_REPLAY_MESSAGES},
    routing::AnnouncementSlot,
    Coin, ValidatorId,
};

/// Longest re-announce period while a vault is not active (it is also at most the DKG timeout).
const DKG_PERIOD: Duration = Duration::from_secs(60);
/// Longest fast period (see the module doc).
const FAST_PERIOD: Duration = Duration::from_secs(20);
/// Least time between two rounds asked for by events, and between two answers to one asker's
/// requests for one coin.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// Re-announce period once every vault is active.
const SLOW_PERIOD: Duration = Duration::from_secs(300);
/// The confirmation's repeat comes this fraction of the fast period after it was first.
const CONFIRMATION_REPEAT_DIVISOR: u32 = 4;

/// Our announcements and their schedule.
pub struct Announcer {
    announcements: BTreeMap<(Coin, AnnouncementSlot), GeneralMessage>,
    /// A round was asked for (at start, by a vote naming us, by a healed link).
    asked: bool,
    last_round: Option<Instant>,
    dkg_period: Duration,
    fast_period: Duration,
    /// Our `PublicAddressAvailable` per coin, to be gossiped once more at the instant given.
    repeats: BTreeMap<Coin, (Instant, GeneralMessage)>,
    /// When each validator's last request per coin was answered (keyed by authenticated
    /// validators and the network's coins only, so bounded by validators × coins).
    answered: HashMap<(ValidatorId, Coin), Instant>,
}

impl Default for Announcer {
    fn default() -> Self {
        Announcer {
            announcements: BTreeMap::new(),
            asked: true,
            last_round: None,
            dkg_period: DKG_PERIOD,
            fast_period: FAST_PERIOD,
            repeats: BTreeMap::new(),
            answered: HashMap::new(),
        }
    }
}

impl Announcer {
    /// Periods fitted to the processors' DKG timeout.
    pub fn with_dkg_timeout(mut self, dkg_timeout: Duration) -> Self {
        self.dkg_period = dkg_timeout.clamp(Duration::from_secs(1), DKG_PERIOD);
        self.fast_period = (dkg_timeout / 3).clamp(Duration::from_secs(1), FAST_PERIOD);
        self
    }

    /// Keep `msg` (replacing what its slot held) and return it, to be published now.
    pub fn add(
        &mut self,
        coin: Coin,
        slot: AnnouncementSlot,
        msg: GeneralMessage,
        now: Instant,
    ) -> GeneralMessage {
        if matches!(msg, GeneralMessage::PublicAddressAvailable(_)) {
            let at = now + self.fast_period / CONFIRMATION_REPEAT_DIVISOR;
            self.repeats.insert(coin, (at, msg.clone()));
        }
        self.announcements.insert((coin, slot), msg.clone());
        msg
    }

    /// Ask for a round at the next tick (at most one per [`MIN_GAP`]).
    pub fn ask_round(&mut self) {
        self.asked = true;
    }

    /// A vote names us as silent: ask for a round unless one is already asked for or ours is
    /// more recent than the fast period. Returns whether it asked.
    pub fn named_silent(&mut self, now: Instant) -> bool {
        if self.asked || self.since_round(now) < self.fast_period {
            return false;
        }
        self.asked = true;
        true
    }

    /// Every announcement, if a round is due at `now` (`all_active`: every vault is active).
    pub fn round_due(&mut self, now: Instant, all_active: bool) -> Vec<(Coin, GeneralMessage)> {
        let period = if all_active {
            SLOW_PERIOD
        } else {
            self.dkg_period
        };
        let since = self.since_round(now);
        if !((self.asked && since >= MIN_GAP) || since >= period) {
            return Vec::new();
        }
        self.asked = false;
        self.last_round = Some(now);
        self.announcements
            .iter()
            .map(|((coin, _), m)| (*coin, m.clone()))
            .collect()
    }

    /// The confirmations whose repeat is due at `now` (each once).
    pub fn repeats_due(&mut self, now: Instant) -> Vec<(Coin, GeneralMessage)> {
        let due: Vec<Coin> = self
            .repeats
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(coin, _)| *coin)
            .collect();
        due.into_iter()
            .filter_map(|coin| self.repeats.remove(&coin).map(|(_, m)| (coin, m)))
            .collect()
    }

    /// Our announcements for `coin`, as replays of at most [`MAX_REPLAY_MESSAGES`] each.
    pub fn replay(&self, coin: Coin) -> Vec<AnnouncementReplay> {
        let messages: Vec<GeneralMessage> = self
            .announcements
            .iter()
            .filter(|((c, _), _)| *c == coin)
            .map(|(_, m)| m.clone())
            .collect();
        messages
            .chunks(MAX_REPLAY_MESSAGES)
            .enumerate()
            .map(|(part, chunk)| AnnouncementReplay {
                coin,
                part: u16::try_from(part).unwrap_or(u16::MAX),
                messages: chunk.to_vec(),
            })
            .collect()
    }

    /// Whether to answer `from`'s request for our `coin` announcements now (at most one answer
    /// per asker and coin per [`MIN_GAP`]).
    pub fn answer_request(&mut self, from: &ValidatorId, coin: Coin, now: Instant) -> bool {
        let key = (from.clone(), coin);
        if self
            .answered
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < MIN_GAP)
        {
            return false;
        }
        self.answered.insert(key, now);
        true
    }

    /// Time since our last round (`Duration::MAX` before the first).
    fn since_round(&self, now: Instant) -> Duration {
        self.last_round
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::messages::{CoordinatorPublicKey, PublicAddressAvailable};

    fn key(b: u8) -> GeneralMessage {
        GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey { pubkey: [b; 32] })
    }

    fn slot(kind: &'static str, key: u8) -> AnnouncementSlot {
        AnnouncementSlot {
            kind,
            key: vec![key],
        }
    }

    fn confirmation() -> GeneralMessage {
        GeneralMessage::PublicAddressAvailable(PublicAddressAvailable {
            coin: Coin::Btc,
            context: [0; 32],
            group_key: vec![2; 33],
            address: String::new(),
            threshold: 3,
            participants: Vec::new(),
            signature: Vec::new(),
        })
    }

    #[test]
    fn rounds_come_at_start_then_per_period_slower_once_active() {
        let t0 = Instant::now();
        let mut a = Announcer::default().with_dkg_timeout(Duration::from_secs(30));
        a.add(Coin::Btc, slot("A", 0), key(1), t0);
        a.add(Coin::Btc, slot("A", 0), key(2), t0); // replaces
        a.add(Coin::Eth, slot("A", 0), key(3), t0);
        assert_eq!(a.round_due(t0, false).len(), 2, "the first tick announces");
        assert!(a.round_due(t0 + Duration::from_secs(29), false).is_empty());
        let round = a.round_due(t0 + Duration::from_secs(30), false);
        assert_eq!(round, vec![(Coin::Btc, key(2)), (Coin::Eth, key(3))]);
        let t1 = t0 + Duration::from_secs(30);
        assert!(a.round_due(t1 + Duration::from_secs(299), true).is_empty());
        assert_eq!(a.round_due(t1 + Duration::from_secs(300), true).len(), 2);
    }

    #[test]
    fn votes_naming_us_bring_at_most_one_round_per_fast_period() {
        let t0 = Instant::now();
        let mut a = Announcer::default(); // fast period 20 s
        a.add(Coin::Btc, slot("A", 0), key(1), t0);
        assert_eq!(a.round_due(t0, false).len(), 1);
        let t1 = t0 + Duration::from_secs(10);
        assert!(!a.named_silent(t1), "our last round is recent");
        let t2 = t0 + Duration::from_secs(21);
        assert!(a.named_silent(t2));
        assert!(!a.named_silent(t2), "one round answers every vote");
        assert_eq!(a.round_due(t2 + MIN_GAP, false).len(), 1);
        assert!(!a.named_silent(t2 + Duration::from_secs(5)));
        assert!(a.round_due(t2 + Duration::from_secs(5), false).is_empty());
    }

    #[test]
    fn a_confirmation_is_repeated_once_a_quarter_of_the_fast_period_later() {
        let t0 = Instant::now();
        let mut a = Announcer::default();
        let slot = slot("PublicAddressAvailable", 0);
        assert_eq!(a.add(Coin::Btc, slot, confirmation(), t0), confirmation());
        assert!(a.repeats_due(t0 + Duration::from_millis(4_999)).is_empty());
        let due = a.repeats_due(t0 + Duration::from_secs(5));
        assert_eq!(due, vec![(Coin::Btc, confirmation())]);
        assert!(a.repeats_due(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn replays_are_chunked_per_coin_and_requests_answered_once_per_second() {
        let t0 = Instant::now();
        let mut a = Announcer::default();
        for i in 0..70u8 {
            a.add(Coin::Sol, slot("KeyGenExclusionVote", i), key(i), t0);
        }
        a.add(Coin::Btc, slot("A", 0), key(0), t0);
        let parts = a.replay(Coin::Sol);
        let sizes: Vec<usize> = parts.iter().map(|p| p.messages.len()).collect();
        assert_eq!(sizes, [32, 32, 6]);
        assert_eq!(parts.iter().map(|p| p.part).collect::<Vec<_>>(), [0, 1, 2]);
        let v = ValidatorId::from_bytes(&[1; 8]).unwrap();
        assert!(a.answer_request(&v, Coin::Sol, t0));
        assert!(!a.answer_request(&v, Coin::Sol, t0 + Duration::from_millis(900)));
        assert!(a.answer_request(&v, Coin::Btc, t0), "per coin");
        assert!(a.answer_request(&v, Coin::Sol, t0 + MIN_GAP));
    }
}
