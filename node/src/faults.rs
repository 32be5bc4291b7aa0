//! Test-only link faults (feature `fault-injection`), a layer between the swarm and the core:
//! the integration tests' harness cuts or delays the link between chosen pairs of nodes through
//! the control socket. The core never knows: a cut peer looks disconnected to it (its
//! connection events are withheld, its gossip dropped, its requests unanswered, and our requests
//! wait in the outbox until the link heals); a delayed peer's gossip and requests reach the core
//! late; a "lose" rule drops an author's next announcements of one kind. A stall stops one
//! coin's processor from taking commands until it is released, as a processor too slow for its
//! traffic would.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use libp2p::{swarm::ConnectionId, Multiaddr, PeerId};
use protocol::{
    messages::{self, DirectRequest, GeneralMessage},
    Coin,
};
use tracing::warn;

use crate::{
    bus::{Placed, Topic},
    coordinator::Libp2p,
    core::Event,
};

/// Most messages held back at once (older ones are dropped, as a lossy link would).
const MAX_HELD: usize = 4096;

/// What becomes of an event on its way to the core.
pub(crate) enum Intercepted {
    /// On to the core.
    Pass(Box<Event<Libp2p>>),
    /// Held back; [`LinkFaults::due`] gives it back later.
    Held,
    /// Dropped; a gossip message is reported `Ignore` for (id, forwarder).
    Dropped(Option<(libp2p::gossipsub::MessageId, PeerId)>),
}

/// The link faults of this node.
#[derive(Default)]
pub(crate) struct LinkFaults {
    cut: BTreeSet<PeerId>,
    delay: BTreeMap<PeerId, Duration>,
    held: VecDeque<(Instant, Event<Libp2p>)>,
    /// Authors whose next announcements of kind `lose_kind` (gossiped or replayed) are lost:
    /// one per occurrence.
    lose_from: Vec<PeerId>,
    lose_kind: Option<String>,
    /// Stalled processors, each until its flag is cleared.
    stalls: BTreeMap<Coin, Arc<AtomicBool>>,
    /// Every open connection's peer (first connection and its address), cut or not.
    connections: HashMap<PeerId, (ConnectionId, Multiaddr)>,
}

impl LinkFaults {
    /// Replace the faults: `cut` peers, `delayed` peers by `delay`, and one lose rule. Returns
    /// what the core is to hear: newly cut peers disconnect, healed ones connect again.
    pub(crate) fn set(
        &mut self,
        cut: BTreeSet<PeerId>,
        delayed: BTreeSet<PeerId>,
        delay: Duration,
        lose_from: Vec<PeerId>,
        lose_kind: Option<String>,
    ) -> Vec<Event<Libp2p>> {
        let mut events = Vec::new();
        for (peer, (connection, addr)) in &self.connections {
            match (self.cut.contains(peer), cut.contains(peer)) {
                (false, true) => events.push(Event::Disconnected { peer: *peer }),
                (true, false) => events.push(Event::Connected {
                    peer: *peer,
                    connection: *connection,
                    addr: addr.clone(),
                    first: true,
                }),
                _ => {}
            }
        }
        self.cut = cut;
        self.delay = delayed.into_iter().map(|p| (p, delay)).collect();
        self.lose_from = lose_from;
        self.lose_kind = lose_kind;
        events
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

    /// Apply the faults to an event from the swarm.
    pub(crate) fn intercept(&mut self, event: Event<Libp2p>, now: Instant) -> Intercepted {
        self.filter(event, Some(now))
    }

    /// What was held back and is due at `now`, with the other faults applied now (every delayed
    /// link has the same delay, so the queue is in due order).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Intercepted> {
        let mut due = Vec::new();
        while self.held.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, event)) = self.held.pop_front() {
                due.push(event);
            }
        }
        due.into_iter().map(|e| self.filter(e, None)).collect()
    }

    /// Cut, lose, and (when `hold_from` is given) delay.
    fn filter(&mut self, event: Event<Libp2p>, hold_from: Option<Instant>) -> Intercepted {
        let delay_of = |faults: &Self, peer: &PeerId| {
            hold_from.and_then(|now| faults.delay.get(peer).map(|d| now + *d))
        };
        match &event {
            Event::Connected {
                peer,
                connection,
                addr,
                ..
            } => {
                self.connections
                    .entry(*peer)
                    .or_insert((*connection, addr.clone()));
                if self.cut.contains(peer) {
                    return Intercepted::Dropped(None);
                }
            }
            Event::Disconnected { peer } => {
                self.connections.remove(peer);
            }
            Event::Ping { peer, .. } if self.cut.contains(peer) => {
                return Intercepted::Dropped(None);
            }
            Event::Gossip {
                source,
                id,
                author,
                data,
                ..
            } => {
                let ignore = Some((id.clone(), *source));
                let Some(a) = author else {
                    return Intercepted::Pass(Box::new(event));
                };
                if self.cut.contains(a) {
                    return Intercepted::Dropped(ignore);
                }
                if let Some(until) = delay_of(self, a) {
                    return self.hold(event, until);
                }
                if let Ok(m) = messages::decode::<GeneralMessage>(data) {
                    if self.lose(a, m.kind()) {
                        warn!(peer = %a, kind = m.kind(), "test-only: losing this gossip message");
                        return Intercepted::Dropped(ignore);
                    }
                }
            }
            Event::Request { peer, .. } => {
                if self.cut.contains(peer) {
                    return Intercepted::Dropped(None); // no answer: the channel drops
                }
                if let Some(until) = delay_of(self, peer) {
                    return self.hold(event, until);
                }
                return Intercepted::Pass(Box::new(self.lose_replayed(event)));
            }
            _ => {}
        }
        Intercepted::Pass(Box::new(event))
    }

    fn hold(&mut self, event: Event<Libp2p>, until: Instant) -> Intercepted {
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
        }
        self.held.push_back((until, event));
        Intercepted::Held
    }

    /// Whether this announcement (of `kind`, by `author`) is to be lost; each rule fires once.
    fn lose(&mut self, author: &PeerId, kind: &str) -> bool {
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

    /// An announcement replay loses the messages a lose rule names.
    fn lose_replayed(&mut self, event: Event<Libp2p>) -> Event<Libp2p> {
        let Event::Request {
            peer,
            bytes,
            channel,
        } = event
        else {
            return event;
        };
        let bytes = match messages::decode::<DirectRequest>(&bytes) {
            Ok(DirectRequest::AnnouncementReplay(mut r)) => {
                let before = r.messages.len();
                r.messages.retain(|m| {
                    let lost = self.lose(&peer, m.kind());
                    if lost {
                        warn!(%peer, kind = m.kind(), "test-only: losing this replayed message");
                    }
                    !lost
                });
                if r.messages.len() == before {
                    bytes
                } else {
                    messages::encode(&DirectRequest::AnnouncementReplay(r)).unwrap_or(bytes)
                }
            }
            _ => bytes,
        };
        Event::Request {
            peer,
            bytes,
            channel,
        }
    }
}
