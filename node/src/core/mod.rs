//! The coordinator core, sans-IO: [`Core::handle`] takes one [`Event`] (a swarm event, a
//! processor's output, a `POST /sign`, a tick) and the time, and returns the [`Action`]s to take
//! in order (persist, publish, send a request, answer one, place on a coin's bus topic, dial).
//! It never touches the swarm, the database or a channel: the driver (`coordinator/`) does,
//! so every job here is tested with plain values (`tests.rs`).
//!
//! Its jobs, each a small type of its own: inbound validation ([`gossip`], [`direct`]) with the
//! slot policy (`inbound.rs`), the outbox (`outbox.rs`), announcement scheduling
//! (`announce.rs`), rate limits (`rate.rs`), redial backoff (`redial.rs`) and sign admission
//! ([`admission`]). Spec steps 2, 4, 6, 7, 8, 10, 11, 14, 15, 17 and 18 pass through here.

pub mod admission;
mod direct;
mod events;
mod gossip;
mod outgoing;
mod rejection;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use libp2p::{
    gossipsub::{IdentTopic, TopicHash},
    swarm::ConnectionId,
    Multiaddr, PeerId,
};
use protocol::{
    messages::{CoordinatorPublicKey, DirectRequest},
    messages::{GeneralMessage, ProcessorPublicKey},
    network::NetworkDefinition,
    routing::AnnouncementSlot,
    vault::VaultRecord,
    Coin, ValidatorId,
};
use storage::{OutboxKey, PeerRecord};
use tracing::{debug, info, warn};

pub use admission::{SignRefusal, SignRequest, TargetView};
pub use events::{Action, Answer, Event, Io, Placement, Placements, Target, Verdict};
pub use rejection::Rejection;

use crate::{
    announce::Announcer, error::NodeError, metrics::Metrics, network, outbox, rate::RateLimiter,
    redial::Redial, status::Names,
};

/// Per-peer limits: gossip messages a validator may author, and requests it may send, per second
/// and at once. A DKG or a burst of signing ceremonies stays well below them.
const GOSSIP_PER_SECOND: u32 = 200;
const GOSSIP_BURST: u32 = 2000;
const DIRECT_PER_SECOND: u32 = 200;
const DIRECT_BURST: u32 = 2000;
/// Connections a validator may open to us per minute, and at once (restarts and redials stay far
/// below; a peer churning connections is cut off).
const CONNECTIONS_PER_MINUTE: u32 = 30;
const CONNECTION_BURST: u32 = 10;
/// How often missing validators are considered for a dial (each has its own backoff).
const DIAL_EVERY: Duration = Duration::from_secs(2);
/// While validators are missing Kademlia looks for them after 250 ms, then 0.5, 1, 2, 4, 8 s
/// and every 10 s: validators that reached the bootstrap at the same moment asked it before
/// it knew the others (n = 4 at 25 ms: the last pair met 1 s later, at the next lookup), and a
/// validator that stays away costs one lookup per 10 s.
const KAD_FIRST: Duration = Duration::from_millis(250);
/// Least time between two lookups a new peer's identify set off.
const KAD_GAP: Duration = Duration::from_millis(500);
const KAD_EVERY: Duration = Duration::from_secs(10);
/// Least time between two warnings about gossip abandoned on its way to slow peers.
const SLOW_PEER_WARN_GAP: Duration = Duration::from_secs(10);
/// Failed pings in a row (15 s apart) before a connection is closed as dead. One failure is
/// not enough: on an overloaded host (128 validators on 2 cores) a ping waits behind the
/// connection's other streams past its 20 s timeout, and closing then turned load into a
/// storm of reconnections, each a new Noise handshake.
const PING_FAILURES_TO_CLOSE: u32 = 3;

/// What a core is made from.
pub struct CoreParts {
    /// The network definition.
    pub def: NetworkDefinition,
    /// This validator.
    pub me: ValidatorId,
    /// Our peer id.
    pub local_peer: PeerId,
    /// Our coordinator public key (step 2).
    pub coordinator_key: [u8; 32],
    /// What we know of each validator (from the peers table).
    pub peer_records: BTreeMap<ValidatorId, PeerRecord>,
    /// Bootstrap addresses.
    pub bootstrap: Vec<Multiaddr>,
    /// Vaults of earlier sessions, still signing ([`Target::Retiring`] indexes them).
    pub retiring: Vec<VaultRecord>,
    /// Signing settings.
    pub signing: protocol::signing::SigningConfig,
    /// The processors' DKG timeout (re-announcement pace).
    pub dkg_timeout: Duration,
    /// vaultd's metrics (counters only: in memory).
    pub metrics: Metrics,
    /// The operator's signing policy (`--sign-policy`).
    pub policy: crate::policy::SignPolicy,
}

/// The coordinator's state.
pub struct Core {
    def: NetworkDefinition,
    me: ValidatorId,
    local_peer: PeerId,
    coordinator_key: [u8; 32],
    metrics: Metrics,
    bootstrap: Vec<Multiaddr>,
    retiring: Vec<VaultRecord>,
    sign_timeout: Duration,
    max_queued: usize,
    /// The operator's signing policy, and what it accepted in the last hour.
    policy: crate::policy::SignPolicy,
    gossip_topics: BTreeMap<Coin, IdentTopic>,
    topic_coins: HashMap<TopicHash, Coin>,
    validators: BTreeMap<PeerId, ValidatorId>,
    names: Names,
    announcer: Announcer,
    local_keys: BTreeMap<Coin, ProcessorPublicKey>,
    signer_ready: BTreeSet<Coin>,
    outbox: outbox::Outbox<u64>,
    next_token: u64,
    connected: BTreeSet<PeerId>,
    peer_records: BTreeMap<ValidatorId, PeerRecord>,
    peer_addrs: HashMap<PeerId, Multiaddr>,
    /// What each connected validator says it runs (identify), for the status page.
    peer_agents: HashMap<PeerId, String>,
    peer_rtt: HashMap<PeerId, Duration>,
    /// Failed pings in a row per connected peer (removed when it disconnects).
    ping_failures: HashMap<PeerId, u32>,
    gossip_limit: RateLimiter,
    /// Sequence numbers seen per gossip author (replays are refused).
    freshness: crate::freshness::Freshness,
    /// When a connection's replayed gossip was last logged.
    stale_warn: RateLimiter,
    direct_limit: RateLimiter,
    connection_limit: RateLimiter,
    redial: Redial,
    last_dial: Option<Instant>,
    last_kad: Option<Instant>,
    /// Wait before the next lookup while validators are missing (`KAD_FIRST` doubling).
    kad_wait: Duration,
    slow_peer_warned: Option<Instant>,
    /// Outbox entries wait to be sent: flushed at the end of the event that queued them.
    outbox_dirty: bool,
}

impl Core {
    /// Assemble; [`Event::Start`] comes first.
    pub fn new(parts: CoreParts) -> Result<Core, NodeError> {
        let CoreParts {
            def,
            me,
            local_peer,
            coordinator_key,
            peer_records,
            bootstrap,
            retiring,
            signing,
            dkg_timeout,
            metrics,
            policy,
        } = parts;
        let gossip_topics: BTreeMap<Coin, IdentTopic> = def
            .coins
            .iter()
            .map(|c| (*c, network::coin_topic(&def.name, *c)))
            .collect();
        let topic_coins = gossip_topics.iter().map(|(c, t)| (t.hash(), *c)).collect();
        // The definition's validators, and the participants of retiring vaults (they still sign).
        let mut validators = BTreeMap::new();
        for v in def
            .validators
            .iter()
            .chain(retiring.iter().flat_map(|r| r.participants.iter()))
        {
            validators.insert(network::peer_id_of(v)?, v.clone());
        }
        Ok(Core {
            sign_timeout: Duration::from_millis(signing.attempt_timeout_ms),
            max_queued: signing.max_queued,
            policy,
            names: Names::new(validators.values()),
            announcer: Announcer::default().with_dkg_timeout(dkg_timeout),
            def,
            me,
            local_peer,
            coordinator_key,
            metrics,
            bootstrap,
            retiring,
            gossip_topics,
            topic_coins,
            validators,
            local_keys: BTreeMap::new(),
            signer_ready: BTreeSet::new(),
            outbox: outbox::Outbox::default(),
            next_token: 0,
            connected: BTreeSet::new(),
            peer_records,
            peer_addrs: HashMap::new(),
            peer_agents: HashMap::new(),
            peer_rtt: HashMap::new(),
            ping_failures: HashMap::new(),
            gossip_limit: RateLimiter::new(GOSSIP_PER_SECOND, GOSSIP_BURST),
            freshness: Default::default(),
            stale_warn: RateLimiter::new(0, 0),
            direct_limit: RateLimiter::new(DIRECT_PER_SECOND, DIRECT_BURST),
            connection_limit: RateLimiter::per_minute(CONNECTIONS_PER_MINUTE, CONNECTION_BURST),
            redial: Redial::default(),
            last_dial: None,
            last_kad: None,
            kad_wait: KAD_FIRST,
            slow_peer_warned: None,
            outbox_dirty: false,
        })
    }

    /// The gossip topics to subscribe to, one per coin.
    pub fn topics(&self) -> impl Iterator<Item = &IdentTopic> {
        self.gossip_topics.values()
    }

    /// Handle one event at `now`.
    pub fn handle<I: Io>(&mut self, event: Event<I>, now: Instant) -> Vec<Action<I>> {
        let mut out = Vec::new();
        match event {
            Event::Start { outbox } => self.start(outbox, now, &mut out),
            Event::Tick { all_active } => self.tick(all_active, now, &mut out),
            Event::Connected {
                peer,
                connection,
                addr,
                first,
            } => self.on_connected(peer, connection, addr, first, now, &mut out),
            Event::Disconnected { peer } => {
                self.connected.remove(&peer);
                self.peer_addrs.remove(&peer);
                self.peer_agents.remove(&peer);
                self.peer_rtt.remove(&peer);
                self.ping_failures.remove(&peer);
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
            }
            Event::Discovered { peers } => {
                let missing: Vec<PeerId> = peers
                    .into_iter()
                    .filter(|p| {
                        *p != self.local_peer
                            && self.validators.contains_key(p)
                            && !self.connected.contains(p)
                    })
                    .collect();
                for peer in self.redial.discovered(missing, now) {
                    debug!(%peer, "dialing a validator a lookup found");
                    out.push(Action::Dial(peer));
                }
            }
            Event::Identified { peer, addrs, agent } => {
                if self.validators.contains_key(&peer) {
                    self.peer_agents
                        .insert(peer, crate::addresses::agent_for_display(&agent));
                    // Loopback from a peer on another host, unspecified addresses and more
                    // than a few are dropped (`addresses.rs`).
                    let usable = crate::addresses::from_peer(self.peer_addrs.get(&peer), addrs);
                    out.extend(
                        usable
                            .into_iter()
                            .map(|addr| Action::AddAddress { peer, addr }),
                    );
                    // A validator that just told us who it is can name the ones we miss: ask
                    // now (at most every `KAD_GAP`) rather than at the next scheduled lookup.
                    if self.missing_validators() > 0
                        && self
                            .last_kad
                            .is_none_or(|t| now.duration_since(t) >= KAD_GAP)
                    {
                        out.push(Action::KadBootstrap);
                        self.last_kad = Some(now);
                    }
                }
            }
            Event::Ping {
                peer,
                connection,
                rtt,
            } => match rtt {
                Some(rtt) => {
                    self.peer_rtt.insert(peer, rtt);
                    self.ping_failures.remove(&peer);
                }
                None => {
                    let failures = self.ping_failures.entry(peer).or_default();
                    *failures += 1;
                    if *failures >= PING_FAILURES_TO_CLOSE {
                        self.ping_failures.remove(&peer);
                        out.push(Action::Close(connection));
                    }
                }
            },
            Event::Gossip {
                source,
                id,
                author,
                seq,
                topic,
                data,
            } => self.on_gossip(
                gossip::Received {
                    source,
                    id,
                    author,
                    seq,
                },
                &topic,
                &data,
                now,
                &mut out,
            ),
            Event::Subscribed { peer, topic } => {
                debug!(%peer, %topic, "peer subscribed");
                self.replay_announcements(peer, &topic, now);
            }
            Event::SlowPeer { peer, dropped } => self.on_slow_peer(peer, dropped, now),
            Event::Request {
                peer,
                bytes,
                channel,
            } => self.on_request(peer, bytes, channel, now, &mut out),
            Event::Response {
                token,
                peer,
                answer,
            } => self.on_response(token, peer, answer, now, &mut out),
            Event::Processor { coin, msg } => self.on_processor(coin, msg, now, &mut out),
            Event::Sign {
                request,
                targets,
                reply,
            } => self.on_sign(request, targets, reply, now, &mut out),
            Event::ReAnnounce => self.announcer.ask_round(),
        }
        // What the event queued leaves now, not at the next tick.
        if self.outbox_dirty {
            self.outbox_dirty = false;
            self.flush_outbox(now, &mut out);
        }
        out
    }

    /// Step 2's announcement, known addresses, the stored outbox, and the first dials.
    fn start<I: Io>(
        &mut self,
        stored: Vec<(OutboxKey, DirectRequest)>,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        for coin in self.def.coins.clone() {
            self.announcer.add(
                coin,
                AnnouncementSlot {
                    kind: "CoordinatorPublicKey",
                    key: Vec::new(),
                },
                GeneralMessage::CoordinatorPublicKey(CoordinatorPublicKey {
                    pubkey: self.coordinator_key,
                }),
                now,
            );
        }
        for (i, v) in self.def.validators.iter().enumerate() {
            let Ok(peer) = network::peer_id_of(v) else {
                continue; // checked in `new`
            };
            for a in self.def.validator_addrs.get(i).into_iter().flatten() {
                match a.parse::<Multiaddr>() {
                    Ok(addr) => out.push(Action::AddAddress { peer, addr }),
                    Err(e) => {
                        warn!(validator = %v, addr = %a, error = %e, "ignoring invalid validator address")
                    }
                }
            }
        }
        for (key, req) in stored {
            if let Err(e) = self.insert_outbox(key, &req, None, now) {
                warn!(kind = req.kind(), error = %e, "cannot restore a stored request");
            }
        }
        // Every validator whose address we know, at once (one that starts after us dials us),
        // and the bootstrap list (discovery of the others).
        self.dial_missing(now, out);
    }

    fn tick<I: Io>(&mut self, all_active: bool, now: Instant, out: &mut Vec<Action<I>>) {
        let round = self.announcer.round_due(now, all_active);
        let repeats = self.announcer.repeats_due(now);
        for (coin, msg) in round.into_iter().chain(repeats) {
            self.publish(coin, &msg, out);
        }
        if self
            .last_dial
            .is_none_or(|t| now.duration_since(t) >= DIAL_EVERY)
        {
            self.dial_missing(now, out);
        }
        let missing = self.missing_validators();
        self.metrics.validators_missing.set(missing as i64);
        if missing == 0 {
            self.kad_wait = KAD_FIRST;
        } else if self
            .last_kad
            .is_none_or(|t| now.duration_since(t) >= self.kad_wait)
        {
            out.push(Action::KadBootstrap);
            if self.last_kad.is_some() {
                self.kad_wait = (self.kad_wait * 2).min(KAD_EVERY);
            }
            self.last_kad = Some(now);
        }
        out.push(Action::TickProcessors {
            reachable: self.reachable(),
        });
        self.flush_outbox(now, out);
    }

    /// The connected validators.
    fn reachable(&self) -> BTreeSet<ValidatorId> {
        self.connected
            .iter()
            .filter_map(|p| self.validators.get(p).cloned())
            .collect()
    }

    fn missing_validators(&self) -> usize {
        self.validators
            .keys()
            .filter(|p| **p != self.local_peer && !self.connected.contains(p))
            .count()
    }

    /// Dial the validators we are not connected to, each with its own exponential backoff
    /// (`redial.rs`); the bootstrap list while we know nobody.
    fn dial_missing<I: Io>(&mut self, now: Instant, out: &mut Vec<Action<I>>) {
        self.last_dial = Some(now);
        let missing: Vec<PeerId> = self
            .validators
            .keys()
            .filter(|p| **p != self.local_peer && !self.connected.contains(p))
            .copied()
            .collect();
        for (peer, backoff) in self.redial.due(missing, now) {
            debug!(%peer, retry_in = ?backoff, "dialing a missing validator");
            out.push(Action::Dial(peer));
        }
        if self.connected.is_empty() {
            for addr in &self.bootstrap {
                let mut a = addr.clone();
                if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = a.pop() {
                    if peer == self.local_peer {
                        continue;
                    }
                    out.push(Action::AddAddress { peer, addr: a });
                }
                out.push(Action::DialAddr(addr.clone()));
            }
        }
    }

    fn on_connected<I: Io>(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        addr: Multiaddr,
        first: bool,
        now: Instant,
        out: &mut Vec<Action<I>>,
    ) {
        if !self.connection_limit.allow(&peer, now) {
            self.metrics.limited("connection");
            if self.connection_limit.should_warn(&peer, now) {
                warn!(%peer, "connection rate limit exceeded; closing its new connections for now");
            }
            out.push(Action::Close(connection));
            return;
        }
        if first {
            info!(%peer, %addr, "connected");
        }
        self.peer_addrs.insert(peer, addr);
        self.redial.connected(&peer);
        self.connected.insert(peer);
        self.metrics
            .peers_connected
            .set(self.connected.len() as i64);
        // Deliver what waits for this peer now (our announcements follow its subscriptions:
        // see `replay_announcements`).
        if let Some(v) = self.validators.get(&peer) {
            self.outbox.connected(v, now);
            self.outbox_dirty = true;
        }
    }

    fn on_slow_peer(&mut self, peer: PeerId, dropped: usize, now: Instant) {
        // Not re-announced here: under overload that would feed the queues that overflowed. A
        // validator that misses an announcement votes, and the vote brings it (see
        // `gossip::on_general`).
        self.metrics.gossip_dropped.inc_by(dropped as u64);
        if self
            .slow_peer_warned
            .is_none_or(|t| now.duration_since(t) >= SLOW_PEER_WARN_GAP)
        {
            self.slow_peer_warned = Some(now);
            warn!(%peer, dropped, "gossip messages to a slow peer were abandoned (vaultd_gossip_dropped_total counts them all)");
        }
    }

    /// What the status page is built from (with the processors' snapshots and the listen
    /// addresses, which the driver has).
    pub(crate) fn status_input<'a>(
        &'a self,
        snapshots: &'a BTreeMap<Coin, crate::bus::ProcessorSnapshot>,
        listen_addrs: &'a [Multiaddr],
        advertised: &'a [Multiaddr],
    ) -> crate::status_view::StatusInput<'a> {
        crate::status_view::StatusInput {
            def: &self.def,
            me: &self.me,
            peer_id: self.local_peer,
            names: &self.names,
            validators: &self.validators,
            peer_records: &self.peer_records,
            connected: &self.connected,
            peer_addrs: &self.peer_addrs,
            peer_agents: &self.peer_agents,
            peer_rtt: &self.peer_rtt,
            listen_addrs,
            advertised,
            snapshots,
            retiring: self.retiring.iter().collect(),
        }
    }

    /// The current validator-set session.
    pub fn session(&self) -> u32 {
        self.def.session
    }

    /// Requests waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}
