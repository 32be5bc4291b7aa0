//! Placing on the bus: an `...In` message is stored in the inbound table (its slot decides
//! duplicates and eviction, `inbound.rs`) and then handed to its processors' topics; signing
//! traffic is handed over without storing. What became of it goes back to the core's answer.

use std::time::Instant;

use protocol::{messages::CoordinatorMessage, Coin};
use tracing::{debug, info, warn};

use super::{Coordinator, SignRefusal, BUSY_WARN_GAP};
use crate::{
    bus,
    core::{Placement, Target},
    inbound::{self, SlotPolicy},
};

impl Coordinator {
    /// Store an `...In` message (once: a duplicate of what its slot holds is not stored again),
    /// then hand it to each target's processor. Stored means taken: a full queue leaves it in
    /// the inbound table until the processor has room (`bus::Topic::place_stored`).
    pub(super) fn place(
        &mut self,
        coin: Coin,
        targets: &[Target],
        msg: CoordinatorMessage,
    ) -> Placement {
        let Some((mut key, policy)) = inbound::slot_of(coin, &msg) else {
            return Placement::Gone(coin); // the core checked there is a slot
        };
        let entries = match policy {
            SlotPolicy::Replace => self
                .store
                .get::<storage::Inbound>(&key)
                .map(|m| m.map(|m| (key.clone(), m)).into_iter().collect()),
            SlotPolicy::Log => self.store.inbound_slot(&key),
        };
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                warn!(%coin, error = %e, "cannot read the inbound table");
                return Placement::Gone(coin);
            }
        };
        let evict = match inbound::plan(policy, &entries, &msg) {
            inbound::Plan::Duplicate => return Placement::Duplicate,
            inbound::Plan::Store { evict } => evict,
        };
        if !evict.is_empty() {
            // A sender re-sealing after restarts, or flooding its own slot.
            debug!(%coin, kind = msg.kind(), evicted = evict.len(), "inbound slot full; dropping its oldest entries");
        }
        if policy == SlotPolicy::Log {
            key.seq = self.next_seq();
        }
        let mut b = storage::Batch::new();
        for old in &evict {
            b.delete::<storage::Inbound>(old);
        }
        let written = b
            .put::<storage::Inbound>(&key, &msg)
            .map(|_| ())
            .and_then(|_| self.store.write(b));
        if let Err(e) = written {
            warn!(%coin, error = %e, "cannot store an inbound message");
            return Placement::Gone(coin);
        }
        let mut outcome = Placement::Taken;
        for target in targets {
            let Some(topic) = self.topic_mut(*target) else {
                outcome = Placement::Gone(coin);
                continue;
            };
            match topic.place_stored(msg.clone(), &key, policy) {
                bus::Placed::Queued => {}
                bus::Placed::Full => self.metrics.bus_full(coin),
                bus::Placed::Gone => outcome = Placement::Gone(coin),
            }
        }
        outcome
    }

    /// Hand signing traffic to its processor, not stored; a full queue does not take it.
    pub(super) fn deliver(
        &mut self,
        coin: Coin,
        target: Target,
        msg: CoordinatorMessage,
    ) -> Placement {
        let Some(topic) = self.topic_mut(target) else {
            return Placement::Gone(coin);
        };
        match topic.place_volatile(msg) {
            bus::Placed::Queued => Placement::Taken,
            bus::Placed::Full => {
                self.metrics.bus_full(coin);
                self.warn_busy(coin);
                Placement::Busy(coin)
            }
            bus::Placed::Gone => Placement::Gone(coin),
        }
    }

    /// Hand an operator's approval to its processor, which answers `reply` once it is stored;
    /// a full or stopped processor is answered here.
    pub(super) fn approve(
        &mut self,
        coin: Coin,
        target: Target,
        msg: protocol::messages::SignatureRequested,
        reply: tokio::sync::oneshot::Sender<Result<[u8; 32], SignRefusal>>,
    ) {
        let Some(topic) = self.topic_mut(target) else {
            let _ = reply.send(Err(SignRefusal::Stopped(coin)));
            return;
        };
        match topic.approve(msg, reply) {
            bus::Placed::Queued => {}
            bus::Placed::Full => {
                self.metrics.bus_full(coin);
                self.warn_busy(coin);
            }
            bus::Placed::Gone => {}
        }
    }

    fn topic_mut(&mut self, target: Target) -> Option<&mut bus::Topic> {
        match target {
            Target::Current(coin) => self.bus.get_mut(&coin),
            Target::Retiring(i) => self.retiring.get_mut(i).map(|r| &mut r.topic),
        }
    }

    /// Arrival order of inbound log entries: increasing, also across restarts.
    fn next_seq(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_seq = now.max(self.last_seq + 1);
        self.last_seq
    }

    /// Log (at most every [`BUSY_WARN_GAP`]) that a processor queue turned a message away
    /// (gossip is then ignored, a request left unanswered).
    fn warn_busy(&mut self, coin: Coin) {
        let now = Instant::now();
        if self
            .busy_warned
            .is_none_or(|t| now.duration_since(t) >= BUSY_WARN_GAP)
        {
            self.busy_warned = Some(now);
            warn!(%coin, "the processor's queue is full: a signing message was not taken (its sender retries; vaultd_bus_full_total counts them)");
        }
    }

    /// Hand each processor what waited in the inbound table while its queue was full, once it
    /// has room again.
    pub(super) fn drain_backlogs(&mut self) {
        for (coin, topic) in self.bus.iter_mut().map(|(c, t)| (*c, t)).chain(
            self.retiring
                .iter_mut()
                .map(|r| (r.record.coin, &mut r.topic)),
        ) {
            if let Some(waiting) = topic.new_backlog() {
                warn!(%coin, topic = topic.name(), waiting, "the processor's queue is full: stored messages wait in the inbound table until it has room");
            }
            if let Some(n) = topic.drain() {
                info!(%coin, topic = topic.name(), messages = n, "the processor has room again: handing it the messages that waited");
            }
        }
    }
}
