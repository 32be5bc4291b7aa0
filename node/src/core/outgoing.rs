//! Processor out (`protocol::routing::outbound`): announcements go to gossip and are
//! re-announced until every vault is active (gossip does not replay history to late joiners);
//! direct messages go to the outbox, durable ones to its table first, and are retried until the
//! peer acknowledges them (step 7's key list among them).

use std::time::{Duration, Instant};

use protocol::{
    messages::{
        self, AnnouncementRequest, DirectRequest, GeneralMessage, ProcessorMessage,
        ProcessorPublicKeyList,
    },
    routing::{self, AnnouncementSlot, Outbound},
    Coin, ValidatorId,
};
use storage::{Batch, Outbox, OutboxKey};
use tracing::{debug, info, warn};

use super::{Action, Core, Io};
use crate::{error::NodeError, network};

/// How long an announcement replay is retried (a peer that reconnects later subscribes again
/// and gets a new one).
const REPLAY_LIFETIME: Duration = Duration::from_secs(60);

impl Core {
    pub(super) fn on_processor<I: Io>(
        &mut self,
        coin: Coin,
        msg: ProcessorMessage,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        debug!(%coin, kind = msg.kind(), partition = ?msg.partition(), "from processor");
        match routing::outbound(msg) {
            Outbound::Announce { slot, msg } => self.announce(coin, slot, msg, now, out),
            Outbound::Publish(msg) => self.publish(coin, &msg, out),
            Outbound::Direct {
                to,
                request,
                durable: true,
            } => self.enqueue(to, request, now, out),
            Outbound::Direct {
                to,
                request,
                durable: false,
            } => {
                let lifetime = self.sign_timeout * 2;
                self.enqueue_volatile(to, request, lifetime, now);
            }
            Outbound::AskAnnouncements(w) => {
                let from: Vec<ValidatorId> = w
                    .from
                    .into_iter()
                    .filter(|v| *v != self.me && self.def.validators.contains(v))
                    .collect();
                info!(%coin, validators = from.len(), "DKG stalled on announcements: asking the validators it waits for to send theirs directly");
                for v in from {
                    debug!(%coin, validator = %v, "asking for announcements");
                    let req = DirectRequest::AnnouncementRequest(AnnouncementRequest { coin });
                    self.enqueue_volatile(v, req, REPLAY_LIFETIME, now);
                }
            }
        }
    }

    /// A new announcement: published at once, and re-announced with the others (for peers that
    /// connect later) until it is replaced.
    fn announce<I: Io>(
        &mut self,
        coin: Coin,
        slot: AnnouncementSlot,
        msg: GeneralMessage,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        let key_list = match &msg {
            GeneralMessage::ProcessorPublicKey(k) => {
                self.local_keys.insert(coin, k.clone());
                true
            }
            // Step 6: upon SignerReady, the signer list comes from the network definition.
            GeneralMessage::SignerReady(_) => {
                self.signer_ready.insert(coin);
                true
            }
            GeneralMessage::KeyGenExclusionVote(v) => {
                info!(%coin, attempt = v.attempt, round = v.round, exclude = ?v.exclude.iter().map(|x| x.to_string()).collect::<Vec<_>>(), reasons = ?v.reasons, "DKG: voting to leave participants out of the next attempt");
                false
            }
            GeneralMessage::KeyGenBlame(b) => {
                warn!(%coin, accused = %b.evidence.accused(), "DKG: publishing evidence against a participant");
                false
            }
            _ => false,
        };
        let msg = self.announcer.add(coin, slot, msg, now);
        self.publish(coin, &msg, out);
        if key_list {
            self.send_key_list(now, out);
        }
    }

    /// Step 7: once every local processor is ready, send each validator the list of our
    /// processor messaging keys (again after a rotation).
    fn send_key_list<I: Io>(&mut self, now: Instant, out: &mut Vec<Action<I>>) {
        if self
            .def
            .coins
            .iter()
            .any(|c| !self.signer_ready.contains(c) || !self.local_keys.contains_key(c))
        {
            return;
        }
        let list = ProcessorPublicKeyList {
            keys: self.local_keys.values().cloned().collect(),
        };
        for v in self.def.validators.clone() {
            if v != self.me {
                self.enqueue(
                    v,
                    DirectRequest::ProcessorPublicKeyList(list.clone()),
                    now,
                    out,
                );
            }
        }
    }

    /// Persist before send: the request is written to the outbox table (synced) before it can
    /// leave.
    fn enqueue<I: Io>(
        &mut self,
        to: ValidatorId,
        req: DirectRequest,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        let key = OutboxKey::for_request(to, &req);
        let mut batch = Batch::new();
        if let Err(e) = batch.put::<Outbox>(&key, &req) {
            warn!(to = %key.to, kind = req.kind(), error = %e, "cannot encode a request");
            return;
        }
        out.push(Action::Persist {
            batch,
            durable: true,
        });
        if let Err(e) = self.insert_outbox(key, &req, None, now) {
            warn!(kind = req.kind(), error = %e, "cannot encode a request");
        }
    }

    /// Signing traffic and announcement replays: delivered with retries for `lifetime`, not
    /// stored (an attempt cut by a restart is abandoned; announcements are replayed again).
    fn enqueue_volatile(
        &mut self,
        to: ValidatorId,
        req: DirectRequest,
        lifetime: Duration,
        now: Instant,
    ) {
        let key = OutboxKey::for_request(to, &req);
        if let Err(e) = self.insert_outbox(key, &req, Some(now + lifetime), now) {
            warn!(kind = req.kind(), error = %e, "cannot encode a request");
        }
    }

    pub(super) fn insert_outbox(
        &mut self,
        key: OutboxKey,
        req: &DirectRequest,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), NodeError> {
        let bytes = messages::encode(req)?;
        self.outbox.insert(key, bytes, req.kind(), expires, now);
        self.outbox_dirty = true;
        self.metrics.outbox_len.set(self.outbox.len() as i64);
        Ok(())
    }

    /// Our announcements for `coin`, directly to `to` (retried for [`REPLAY_LIFETIME`]).
    pub(super) fn replay_announcements_to(&mut self, to: ValidatorId, coin: Coin, now: Instant) {
        for replay in self.announcer.replay(coin) {
            let req = DirectRequest::AnnouncementReplay(replay);
            self.enqueue_volatile(to.clone(), req, REPLAY_LIFETIME, now);
        }
    }

    /// Gossip one message once (signing announcements are not repeated).
    pub(super) fn publish<I: Io>(
        &mut self,
        coin: Coin,
        msg: &GeneralMessage,
        out: &mut Vec<Action<I>>,
    ) {
        let Some(topic) = self.gossip_topics.get(&coin).cloned() else {
            return;
        };
        let kind = msg.kind();
        match messages::encode(msg) {
            Ok(bytes) => out.push(Action::Publish { topic, kind, bytes }),
            Err(e) => warn!(%coin, kind, error = %e, "cannot encode announcement"),
        }
    }

    /// Send what is due to the validators we can reach (the dial loop reconnects the others; a
    /// connection makes their requests due at once).
    pub(super) fn flush_outbox<I: Io>(&mut self, now: Instant, out: &mut Vec<Action<I>>) {
        if self.outbox.expire(now) {
            self.metrics.outbox_len.set(self.outbox.len() as i64);
        }
        let connected = &self.connected;
        let sends = self.outbox.due(now, |v| {
            network::peer_id_of(v).is_ok_and(|peer| connected.contains(&peer))
        });
        for send in sends {
            let Ok(peer) = network::peer_id_of(&send.to) else {
                continue;
            };
            self.next_token += 1;
            let token = self.next_token;
            out.push(Action::Send {
                peer,
                token,
                kind: send.kind,
                bytes: send.bytes.clone(),
            });
            self.outbox.sent(send, token);
        }
    }
}
