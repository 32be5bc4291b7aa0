//! Request-response in (the encrypted partition and step 7's key list): the `...Out` message of a
//! peer becomes our processor's `...In` message (`protocol::routing::direct_in`), stored before
//! it is acknowledged; and the answers to our own requests, which settle the outbox.

use std::time::Instant;

use libp2p::PeerId;
use protocol::{
    messages::{self, DirectRequest, DirectResponse, MAX_REPLAY_MESSAGES},
    routing::{self, Inbound},
};
use storage::{Batch, Outbox};
use tracing::{debug, warn};

use super::{Action, Answer, Core, Io, Rejection};
use crate::outbox::Settled;

impl Core {
    pub(super) fn on_request<I: Io>(
        &mut self,
        peer: PeerId,
        bytes: Vec<u8>,
        channel: I::Channel,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        if !self.direct_limit.allow(&peer, now) {
            // No answer: an honest sender's outbox retries later; a flood gets nothing.
            self.metrics.limited("direct");
            if self.direct_limit.should_warn(&peer, now) {
                warn!(%peer, "request rate limit exceeded; not answering it for now");
            }
            return;
        }
        let answer = match self.check_request(peer, &bytes, now, out) {
            Ok((kind, answer)) => {
                self.metrics.received("direct", kind, bytes.len());
                answer
            }
            Err(reason) => {
                warn!(%peer, %reason, bytes = bytes.len(), "rejected direct request");
                self.metrics.rejected("direct", reason.label());
                Answer::Rejected(reason)
            }
        };
        out.push(Action::Answer {
            channel,
            peer,
            answer,
        });
    }

    fn check_request<I: Io>(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) -> Result<(&'static str, Answer), Rejection> {
        let from = self
            .validators
            .get(&peer)
            .cloned()
            .ok_or(Rejection::NotValidator)?;
        let req: DirectRequest =
            messages::decode(bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let kind = req.kind();
        if let Some(to) = routing::addressee(&req) {
            if *to != self.me {
                return Err(Rejection::NotForUs(to.clone()));
            }
        }
        let answer = match routing::direct_in(from.clone(), req) {
            Inbound::KeyList(list) => {
                if list.keys.len() > self.def.coins.len() {
                    return Err(Rejection::KeyListTooLong);
                }
                for k in list.keys {
                    self.on_peer_processor_key(&from, k, out)?;
                }
                Answer::Accepted
            }
            Inbound::Place(coin, msg) => {
                self.known_coin(coin)?;
                self.place(coin, msg, out)?;
                Answer::ByPlacement
            }
            Inbound::Deliver(coin, msg) => {
                self.known_coin(coin)?;
                self.deliver(coin, msg, out);
                Answer::Accepted
            }
            Inbound::AnnouncementReplay(r) => {
                self.known_coin(r.coin)?;
                if r.messages.len() > MAX_REPLAY_MESSAGES {
                    return Err(Rejection::ReplayTooLong(r.messages.len()));
                }
                // Each is judged like the same message gossiped by `from`, and charged to its
                // gossip budget like one (a replay is no way around the limiter); the first
                // refusal is the answer, after the others were taken.
                let mut refused = None;
                for msg in r.messages {
                    let kind = msg.kind();
                    if !self.gossip_limit.allow(&peer, now) {
                        self.metrics.limited("gossip");
                        refused.get_or_insert(Rejection::Limited);
                        break;
                    }
                    if let Err(reason) = self.on_general(from.clone(), r.coin, msg, now, out) {
                        refused.get_or_insert(Rejection::InReplay {
                            kind,
                            reason: Box::new(reason),
                        });
                    }
                }
                match refused {
                    Some(reason) => return Err(reason),
                    None => Answer::Accepted,
                }
            }
            Inbound::AnnouncementRequest(r) => {
                self.known_coin(r.coin)?;
                // One replay per asker and coin per second: a validator asking in a loop gets
                // no more than that (its outbox slot holds one replay at a time).
                if self.announcer.answer_request(&from, r.coin, now) {
                    debug!(coin = %r.coin, validator = %from, "replaying our announcements on request");
                    self.replay_announcements_to(from, r.coin, now);
                    Answer::Accepted
                } else {
                    Answer::Duplicate
                }
            }
            _ => return Err(Rejection::NotDirect(kind)),
        };
        Ok((kind, answer))
    }

    /// The answer to our request `token` settles its outbox entry.
    pub(super) fn on_response<I: Io>(
        &mut self,
        token: u64,
        peer: PeerId,
        answer: Result<Vec<u8>, String>,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        let delivered = match answer.map(|b| messages::decode::<DirectResponse>(&b)) {
            Ok(Ok(DirectResponse::Accepted | DirectResponse::Duplicate)) => true,
            Ok(Ok(DirectResponse::Rejected { reason })) => {
                warn!(%peer, %reason, "peer rejected our request; dropping it");
                true
            }
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "malformed response");
                false
            }
            Err(error) => {
                debug!(%peer, %error, "request failed");
                false
            }
        };
        match self.outbox.settle(&token, delivered, now) {
            Settled::Delivered(stored) => {
                self.metrics.outbox_len.set(self.outbox.len() as i64);
                if let Some(key) = stored {
                    let mut batch = Batch::new();
                    batch.delete::<Outbox>(&key);
                    out.push(Action::Persist {
                        batch,
                        durable: false,
                    });
                }
            }
            Settled::Retry { to, kind, retry_in } => {
                debug!(%to, kind, ?retry_in, "delivery failed; will retry");
            }
            Settled::Stale => {}
        }
    }
}
