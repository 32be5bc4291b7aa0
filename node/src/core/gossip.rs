//! Gossip in (the general partition): who may author what, on which topic; announced keys
//! (steps 2, 4 and 6: a higher `seq` replaces a processor key); everything else becomes the
//! `...In` message of its coin's processor (`protocol::routing::general_in`).

use std::time::Instant;

use libp2p::{
    gossipsub::{MessageId, TopicHash},
    PeerId,
};
use protocol::{
    messages::{self, CoordinatorMessage, GeneralMessage, ProcessorPublicKey},
    routing::{self, Inbound},
    Coin, ValidatorId,
};
use storage::{Batch, PeerRecord, Peers};
use tracing::{info, warn};

use super::{Action, Core, Io, Rejection, Target, Verdict};

/// Who sent a gossip message to us, and what its author signed besides the data.
pub(super) struct Received {
    /// The propagation source (the connection it came on).
    pub source: PeerId,
    /// Its gossipsub id.
    pub id: MessageId,
    /// Its signed author.
    pub author: Option<PeerId>,
    /// Its author's signed sequence number.
    pub seq: Option<u64>,
}

impl Core {
    pub(super) fn on_gossip<I: Io>(
        &mut self,
        received: Received,
        topic: &TopicHash,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        let Received {
            source,
            id,
            author,
            seq,
        } = received;
        // The author is checked before anything is kept about it: the limiter's buckets and
        // the freshness window are keyed by validators only, so authors made up by a relaying
        // peer cost nothing. A replay is refused before the author's budget is spent: it
        // falls on the connection that carried it.
        let fresh = self.gossip_author(author).and_then(|(peer, from)| {
            self.freshness
                .check(&peer, seq)
                .map_err(Rejection::Stale)
                .map(|_| (peer, from))
        });
        let verdict = match fresh {
            Err(reason) => Err(reason),
            Ok((peer, from)) => {
                if !self.gossip_limit.allow(&peer, now) {
                    self.metrics.limited("gossip");
                    if self.gossip_limit.should_warn(&peer, now) {
                        warn!(%peer, "gossip rate limit exceeded; ignoring its messages for now");
                    }
                    out.push(Action::Report {
                        id,
                        source,
                        verdict: Verdict::Ignore,
                    });
                    return;
                }
                self.check_gossip(from, topic, data, now, out)
            }
        };
        let verdict = match verdict {
            Ok(kind) => {
                self.metrics.received("gossip", kind, data.len());
                Verdict::Accept
            }
            Err(reason) => {
                let peer = author.unwrap_or(source);
                self.metrics.rejected("gossip", reason.label());
                if !matches!(reason, Rejection::Stale(_)) {
                    warn!(%peer, via = %source, %topic, %reason, "rejected gossip message");
                } else if self.stale_warn.should_warn(&source, now) {
                    // A replaying connection can send thousands: one line per window, the
                    // rest counted in vaultd_messages_rejected_total{reason="stale"}.
                    warn!(author = %peer, via = %source, %topic, %reason, "rejected replayed gossip from this connection");
                }
                Verdict::Reject
            }
        };
        out.push(Action::Report {
            id,
            source,
            verdict,
        });
    }

    /// The validator that signed a gossip message (gossipsub checked the signature).
    fn gossip_author(&self, author: Option<PeerId>) -> Result<(PeerId, ValidatorId), Rejection> {
        let author = author.ok_or(Rejection::Unsigned)?;
        let from = self
            .validators
            .get(&author)
            .cloned()
            .ok_or(Rejection::NotValidator)?;
        if from == self.me {
            return Err(Rejection::ClaimsToBeOurs);
        }
        Ok((author, from))
    }

    fn check_gossip<I: Io>(
        &mut self,
        from: ValidatorId,
        topic: &TopicHash,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) -> Result<&'static str, Rejection> {
        let coin = *self.topic_coins.get(topic).ok_or(Rejection::UnknownTopic)?;
        let msg: GeneralMessage =
            messages::decode(data).map_err(|e| Rejection::Malformed(e.to_string()))?;
        self.on_general(from, coin, msg, now, out)
    }

    /// A message of the general partition from validator `from` on `coin`'s topic (gossiped,
    /// or replayed to us directly).
    pub(super) fn on_general<I: Io>(
        &mut self,
        from: ValidatorId,
        coin: Coin,
        msg: GeneralMessage,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) -> Result<&'static str, Rejection> {
        let kind = msg.kind();
        if msg.coin().is_some_and(|c| c != coin) {
            return Err(Rejection::WrongTopic { kind, coin });
        }
        if let GeneralMessage::KeyGenExclusionVote(v) = &msg {
            // Someone has not heard from us: gossip may have lost an announcement (a dropped
            // connection, a full send queue), and the periodic round can be minutes away.
            if v.exclude.contains(&self.me) && self.announcer.named_silent(now) {
                info!(%coin, voter = %from, attempt = v.attempt, "a vote names us as silent; re-announcing");
            }
        }
        match routing::general_in(from.clone(), coin, msg) {
            Inbound::CoordinatorKey(k) => {
                if ValidatorId::from_ed25519(&k.pubkey) != from {
                    return Err(Rejection::ForeignCoordinatorKey);
                }
                self.update_peer(&from, out, |r| r.coordinator_key = Some(k.pubkey));
            }
            Inbound::ProcessorKey(k) => self.on_peer_processor_key(&from, k, out)?,
            Inbound::SignerReady(s) => self.update_peer(&from, out, |r| {
                r.signer_ready.insert(s.coin, s.pubkey);
            }),
            Inbound::Place(coin, msg) => self.place(coin, msg, out)?,
            Inbound::Deliver(coin, msg) => self.deliver(coin, msg, out),
            _ => return Err(Rejection::NotGeneral(kind)),
        }
        Ok(kind)
    }

    /// Change what we know of `v`; a change is written (not synced: peers announce their keys
    /// again, and replay them when we subscribe).
    fn update_peer<I: Io>(
        &mut self,
        v: &ValidatorId,
        out: &mut Vec<Action<I>>,
        f: impl FnOnce(&mut PeerRecord),
    ) {
        let mut rec = self.peer_records.get(v).cloned().unwrap_or_default();
        let before = rec.clone();
        f(&mut rec);
        if rec == before {
            return;
        }
        let mut batch = Batch::new();
        match batch.put::<Peers>(v, &rec) {
            Ok(_) => out.push(Action::Persist {
                batch,
                durable: false,
            }),
            Err(e) => warn!(validator = %v, error = %e, "cannot encode a peer record"),
        }
        self.peer_records.insert(v.clone(), rec);
    }

    /// A coin a peer's message names must be one of the network's.
    pub(super) fn known_coin(&self, coin: Coin) -> Result<(), Rejection> {
        if self.def.coins.contains(&coin) {
            Ok(())
        } else {
            Err(Rejection::UnknownCoin(coin))
        }
    }

    /// Steps 4 and 8: a peer's processor key, from gossip or its step-7 list.
    pub(super) fn on_peer_processor_key<I: Io>(
        &mut self,
        from: &ValidatorId,
        k: ProcessorPublicKey,
        out: &mut Vec<Action<I>>,
    ) -> Result<(), Rejection> {
        self.known_coin(k.coin)?;
        let known = self
            .peer_records
            .get(from)
            .and_then(|r| r.processor_keys.get(&k.coin))
            .cloned();
        match known {
            Some(old) if old.seq > k.seq => return Ok(()), // stale
            Some(old) if old.seq == k.seq && old.pubkey != k.pubkey => {
                return Err(Rejection::ConflictingProcessorKey {
                    coin: k.coin,
                    seq: k.seq,
                });
            }
            Some(old) if old == k => {}
            _ => {
                if known.is_some() {
                    info!(validator = %from, coin = %k.coin, seq = k.seq, "processor key replaced");
                }
                let key = k.clone();
                self.update_peer(from, out, |r| {
                    r.processor_keys.insert(key.coin, key);
                });
            }
        }
        let (coin, msg) = routing::external_key(from.clone(), k);
        self.place(coin, msg, out)
    }

    /// Store an `...In` message, then hand it to the processors it is for. It is taken once it
    /// is stored: when a processor's queue is full it waits in the inbound table, and the peer
    /// is told `Accepted` all the same. Key exchange also reaches the coin's retiring vaults
    /// whose participant sent it; the current session's processor gets what comes from its own
    /// validators.
    pub(super) fn place<I: Io>(
        &mut self,
        coin: Coin,
        msg: CoordinatorMessage,
        out: &mut Vec<Action<I>>,
    ) -> Result<(), Rejection> {
        if crate::inbound::slot_of(coin, &msg).is_none() {
            return Err(Rejection::NoInboundSlot(msg.kind()));
        }
        let sender = match &msg {
            CoordinatorMessage::ExternalPublicKeyIn(m) => Some(&m.from),
            CoordinatorMessage::EncryptedPublicKeyIn(m) => Some(&m.from),
            _ => None,
        };
        let mut targets = Vec::new();
        if let Some(from) = sender {
            targets.extend(
                self.retiring
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.coin == coin && r.participants.contains(from))
                    .map(|(i, _)| Target::Retiring(i)),
            );
        }
        if sender.is_none_or(|from| self.def.is_validator(from)) {
            targets.push(Target::Current(coin));
        }
        out.push(Action::Place { coin, targets, msg });
        Ok(())
    }

    /// Hand signing traffic to the processor of its vault (by the vault's DKG context: a
    /// retiring one, or the current session's).
    pub(super) fn deliver<I: Io>(
        &mut self,
        coin: Coin,
        msg: CoordinatorMessage,
        out: &mut Vec<Action<I>>,
    ) {
        let target = routing::vault_of(&msg)
            .and_then(|vault| self.retiring.iter().position(|r| r.context == vault))
            .map_or(Target::Current(coin), Target::Retiring);
        out.push(Action::Deliver { coin, target, msg });
    }

    /// A validator subscribed to one of our coin topics: it missed what we gossiped there
    /// before, so it gets our announcements for that coin directly, once (later ones reach it
    /// by gossip). Cheaper than gossiping them all again to everyone.
    pub(super) fn replay_announcements(&mut self, peer: PeerId, topic: &TopicHash, now: Instant) {
        let (Some(&coin), Some(to)) = (self.topic_coins.get(topic), self.validators.get(&peer))
        else {
            return;
        };
        self.replay_announcements_to(to.clone(), coin, now);
    }
}
