//! Test-only link faults (feature `fault-injection`): the integration tests' harness cuts or
//! delays the link between chosen pairs of nodes through the control socket. A cut drops the
//! gossip a peer authored (however it was relayed), its requests (unanswered) and our requests to
//! it (kept in the outbox until the link heals); a delay holds its gossip and requests back.
//! A stall stops one coin's processor from taking commands until it is released, as a processor
//! too slow for its traffic would.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use protocol::Coin;

use crate::bus::{Placed, Topic};

use libp2p::{
    gossipsub::{self, MessageId},
    request_response::ResponseChannel,
    PeerId,
};

/// A gossip message held back.
pub(crate) struct HeldGossip {
    pub(crate) propagation_source: PeerId,
    pub(crate) message_id: MessageId,
    pub(crate) message: gossipsub::Message,
}

/// A direct request held back.
pub(crate) struct HeldRequest {
    pub(crate) peer: PeerId,
    pub(crate) request: Vec<u8>,
    pub(crate) channel: ResponseChannel<Vec<u8>>,
}

/// The link faults of this node.
#[derive(Default)]
pub(crate) struct LinkFaults {
    cut: BTreeSet<PeerId>,
    delay: BTreeMap<PeerId, Duration>,
    held_gossip: VecDeque<(Instant, HeldGossip)>,
    held_requests: VecDeque<(Instant, HeldRequest)>,
    /// Authors whose next announcements of kind `lose_kind` (gossiped or replayed) are lost:
    /// one per occurrence.
    lose_from: Vec<PeerId>,
    lose_kind: Option<String>,
    /// Stalled processors, each until its flag is cleared.
    stalls: BTreeMap<Coin, Arc<AtomicBool>>,
}

/// Most messages held back at once (older ones are dropped, as a lossy link would).
const MAX_HELD: usize = 4096;

impl LinkFaults {
    /// Replace the faults: `cut` peers and `delayed` peers by `delay`.
    pub(crate) fn set(
        &mut self,
        cut: BTreeSet<PeerId>,
        delayed: BTreeSet<PeerId>,
        delay: Duration,
    ) {
        self.cut = cut;
        self.delay = delayed.into_iter().map(|p| (p, delay)).collect();
    }

    /// Lose the next announcement of `kind` (gossiped or replayed) from each of `from`, as many
    /// as an author is listed (replacing an earlier rule).
    pub(crate) fn lose_once(&mut self, from: Vec<PeerId>, kind: Option<String>) {
        self.lose_from = from;
        self.lose_kind = kind;
    }

    /// Whether this announcement (of `kind`, by `author`) is to be lost; each rule fires once.
    pub(crate) fn lose(&mut self, author: &PeerId, kind: &str) -> bool {
        if self.lose_kind.as_deref() != Some(kind) {
            return false;
        }
        match self.lose_from.iter().position(|p| p == author) {
            Some(i) => {
                self.lose_from.remove(i);
                true
            }
            None => false,
        }
    }

    /// Stall `coin`'s processor (behind `topic`) or release it.
    pub(crate) fn stall(&mut self, coin: Coin, stalled: bool, topic: &Topic) -> Result<(), String> {
        if !stalled {
            if let Some(flag) = self.stalls.remove(&coin) {
                flag.store(false, Ordering::Relaxed);
            }
            return Ok(());
        }
        if self.stalls.contains_key(&coin) {
            return Ok(());
        }
        let flag = Arc::new(AtomicBool::new(true));
        match topic.stall(flag.clone()) {
            Placed::Queued => {
                self.stalls.insert(coin, flag);
                Ok(())
            }
            Placed::Full => Err(format!("the {coin} processor's queue is full")),
            Placed::Gone => Err(format!("the {coin} processor has stopped")),
        }
    }

    /// Whether the link to `peer` is cut.
    pub(crate) fn is_cut(&self, peer: &PeerId) -> bool {
        self.cut.contains(peer)
    }

    /// Hold a gossip message back if its author's link is delayed; gives it back otherwise.
    pub(crate) fn hold_gossip(
        &mut self,
        author: Option<PeerId>,
        g: HeldGossip,
    ) -> Option<HeldGossip> {
        let delay = author.and_then(|a| self.delay.get(&a)).copied();
        hold(&mut self.held_gossip, delay, g)
    }

    /// Hold a request back if its sender's link is delayed; gives it back otherwise.
    pub(crate) fn hold_request(&mut self, r: HeldRequest) -> Option<HeldRequest> {
        let delay = self.delay.get(&r.peer).copied();
        hold(&mut self.held_requests, delay, r)
    }

    /// What is due now.
    pub(crate) fn due(&mut self) -> (Vec<HeldGossip>, Vec<HeldRequest>) {
        let now = Instant::now();
        (
            due(&mut self.held_gossip, now),
            due(&mut self.held_requests, now),
        )
    }
}

/// Queue `item` until `delay` from now, or give it back if there is no delay.
fn hold<T>(queue: &mut VecDeque<(Instant, T)>, delay: Option<Duration>, item: T) -> Option<T> {
    let Some(delay) = delay else {
        return Some(item);
    };
    if queue.len() >= MAX_HELD {
        queue.pop_front();
    }
    queue.push_back((Instant::now() + delay, item));
    None
}

/// Take what is due at `now` (every delayed link has the same delay, so the queue is in due
/// order).
fn due<T>(queue: &mut VecDeque<(Instant, T)>, now: Instant) -> Vec<T> {
    let mut out = Vec::new();
    while queue.front().is_some_and(|(t, _)| *t <= now) {
        if let Some((_, item)) = queue.pop_front() {
            out.push(item);
        }
    }
    out
}
