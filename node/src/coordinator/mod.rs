//! The coordinator: one task that owns the swarm and moves bytes between the network, the
//! local bus and the database (steps 2, 4, 6, 7, 8, 10, 11, 14, 15, 17 and 18).
//!
//! * Gossip in: checks the author is a validator and the message decodes, records announced
//!   keys (step 4: a higher `seq` replaces the previous key) and places `...In` messages.
//! * Request-response in: the `...Out` message of a peer becomes our processor's `...In`
//!   message, stored before it is acknowledged.
//! * Processor out: announcements go to gossip (and are re-announced until every vault is
//!   active, since gossip does not replay history to late joiners); direct messages go to a
//!   persistent outbox and are retried with backoff until the peer acknowledges them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash},
    identify,
    metrics::Recorder,
    request_response::{self, OutboundRequestId},
    swarm::{dial_opts::DialOpts, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use protocol::{
    messages::{self, *},
    network::NetworkDefinition,
    processor::Phase,
    routing::{self, AnnouncementSlot, Inbound, Outbound},
    Coin, ValidatorId,
};
use storage::{Batch, Outbox, OutboxKey, PeerRecord, Peers, Store};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{
    announce::Announcer,
    bus::{self, ProcessorEvent},
    error::NodeError,
    inbound::{self, SlotPolicy},
    metrics::Metrics,
    network::{self, Behaviour, BehaviourEvent},
    outbox::{self, Settled},
    processor_task::Snapshots,
    rate::RateLimiter,
    redial::Redial,
    status::{Names, Status},
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

/// How long an announcement replay is retried (a peer that reconnects later subscribes again
/// and gets a new one).
const REPLAY_LIFETIME: Duration = Duration::from_secs(60);
/// Least time between two warnings about gossip abandoned on its way to slow peers.
const SLOW_PEER_WARN_GAP: Duration = Duration::from_secs(10);

/// Called once with the listen addresses, when the first one is known.
pub type OnListening = Box<dyn FnOnce(&[Multiaddr]) + Send>;

/// Why the node refused a signature request (`api.rs` maps each to its HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum SignRefusal {
    /// The coin is not one of the network's.
    #[error("{0} has no vault in this network")]
    UnknownCoin(Coin),
    /// No vault of that session (current or retiring) here.
    #[error("no {coin} vault of session {session} here")]
    UnknownSession {
        /// Coin.
        coin: Coin,
        /// Session asked for.
        session: u32,
    },
    /// The vault's DKG has not finished.
    #[error("the {0} vault is not active yet")]
    NotActive(Coin),
    /// The messages are not what the coin's format signs.
    #[error("{0}")]
    InvalidMessages(String),
    /// Too many requests of this coin already wait.
    #[error("{queued} {coin} requests already wait; try again later")]
    Queued {
        /// Coin.
        coin: Coin,
        /// How many wait.
        queued: usize,
    },
    /// The coin's processor queue is full.
    #[error("the {0} processor is busy; try again later")]
    Busy(Coin),
    /// The coin's processor has stopped.
    #[error("the {0} processor has stopped")]
    Stopped(Coin),
    /// The request could not be stored.
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
}

/// Why a peer's message was not taken.
#[derive(Debug)]
enum Refusal {
    /// It is invalid: logged naming the peer, answered `Rejected` (gossip: rejected).
    Invalid(String),
    /// It is valid but the coin's processor queue is full and the message is not stored: not
    /// answered (the sender retries), gossip ignored; counted in `vaultd_bus_full_total`.
    Busy(Coin),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Invalid(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Invalid(reason.to_string())
    }
}

/// A signature request from the HTTP endpoint.
pub struct SignCommand {
    /// Coin.
    pub coin: Coin,
    /// Messages (already hex-decoded).
    pub messages: Vec<Vec<u8>>,
    /// Session of the vault to sign with (`None`: the current one).
    pub session: Option<u32>,
    /// The request id, once accepted (stored) and handed to the processor.
    pub reply: oneshot::Sender<Result<[u8; 32], SignRefusal>>,
}

/// Commands from the control socket.
pub enum ControlCommand {
    /// Step 4 for a coin.
    RotateKey(Coin, oneshot::Sender<Result<([u8; 32], u64), String>>),
    /// Test-only: cut the links to `cut`, delay those to `delayed` (replacing earlier faults).
    #[cfg(feature = "fault-injection")]
    LinkFaults {
        /// Peers to cut off.
        cut: BTreeSet<PeerId>,
        /// Peers whose traffic is held back.
        delayed: BTreeSet<PeerId>,
        /// By how long.
        delay: Duration,
        /// Peers whose first gossip message of kind `lose_kind` is lost (one per occurrence).
        lose_from: Vec<PeerId>,
        /// That kind.
        lose_kind: Option<String>,
    },
    /// Test-only: stall (or release) a coin's processor.
    #[cfg(feature = "fault-injection")]
    StallProcessor {
        /// Coin.
        coin: Coin,
        /// Stall or release.
        stalled: bool,
        /// Whether it worked.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// What a coordinator is assembled from.
pub struct CoordinatorParts {
    /// The network definition.
    pub def: NetworkDefinition,
    /// This validator.
    pub me: ValidatorId,
    /// Its coordinator public key (step 2).
    pub coordinator_key: [u8; 32],
    /// The database.
    pub store: Arc<Store>,
    /// The libp2p swarm.
    pub swarm: Swarm<Behaviour>,
    /// libp2p's metrics.
    pub libp2p_metrics: libp2p::metrics::Metrics,
    /// vaultd's metrics.
    pub metrics: Metrics,
    /// The current session's processors, by coin.
    pub bus: BTreeMap<Coin, bus::Topic>,
    /// What every processor sends back.
    pub from_processors: mpsc::Receiver<ProcessorEvent>,
    /// Commands from the control socket.
    pub control: mpsc::Receiver<ControlCommand>,
    /// The processors' snapshots.
    pub snapshots: Snapshots,
    /// The status page.
    pub status: Arc<RwLock<Status>>,
    /// Bootstrap addresses.
    pub bootstrap: Vec<Multiaddr>,
    /// Called once with the listen addresses.
    pub on_listening: Option<OnListening>,
    /// `POST /sign` requests.
    pub sign_requests: mpsc::Receiver<SignCommand>,
    /// Signing settings.
    pub signing: protocol::signing::SigningConfig,
    /// Vaults of earlier sessions, still signing.
    pub retiring: Vec<bus::RetiringVault>,
}

/// The coordinator's state.
pub struct Coordinator {
    pub(crate) def: NetworkDefinition,
    pub(crate) me: ValidatorId,
    pub(crate) coordinator_key: [u8; 32],
    pub(crate) store: Arc<Store>,
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) libp2p_metrics: libp2p::metrics::Metrics,
    pub(crate) metrics: Metrics,
    pub(crate) bus: BTreeMap<Coin, bus::Topic>,
    pub(crate) from_processors: mpsc::Receiver<ProcessorEvent>,
    pub(crate) control: mpsc::Receiver<ControlCommand>,
    pub(crate) snapshots: Snapshots,
    pub(crate) status: Arc<RwLock<Status>>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) on_listening: Option<OnListening>,
    pub(crate) sign_requests: mpsc::Receiver<SignCommand>,
    pub(crate) sign_timeout: Duration,
    pub(crate) max_queued: usize,
    gossip_topics: BTreeMap<Coin, IdentTopic>,
    topic_coins: HashMap<TopicHash, Coin>,
    validators: BTreeMap<PeerId, ValidatorId>,
    /// The validators' names for the status page.
    names: Names,
    /// What we announce, and when again.
    announcer: Announcer,
    local_keys: BTreeMap<Coin, ProcessorPublicKey>,
    signer_ready: BTreeSet<Coin>,
    outbox: outbox::Outbox<OutboundRequestId>,
    connected: BTreeSet<PeerId>,
    peer_records: BTreeMap<ValidatorId, PeerRecord>,
    listen_addrs: Vec<Multiaddr>,
    /// When gossip abandoned to a slow peer was last logged.
    slow_peer_warned: Option<Instant>,
    /// When a message turned away by a full processor queue was last logged.
    busy_warned: Option<Instant>,
    /// Outbox entries wait to be sent: flushed right after the event that queued them.
    outbox_dirty: bool,
    last_seq: u64,
    #[cfg(feature = "fault-injection")]
    link_faults: crate::faults::LinkFaults,
    gossip_limit: RateLimiter,
    direct_limit: RateLimiter,
    connection_limit: RateLimiter,
    /// Remote address of each connected peer, and the last ping round trip.
    peer_addrs: HashMap<PeerId, Multiaddr>,
    peer_rtt: HashMap<PeerId, Duration>,
    /// When to dial each missing validator next.
    redial: Redial,
    /// Vaults of earlier sessions, still signing (listed as retiring).
    retiring: Vec<bus::RetiringVault>,
}

impl Coordinator {
    /// Assemble; call [`Coordinator::run`] next.
    pub fn new(parts: CoordinatorParts) -> Result<Self, NodeError> {
        let CoordinatorParts {
            def,
            me,
            coordinator_key,
            store,
            swarm,
            libp2p_metrics,
            metrics,
            bus,
            from_processors,
            control,
            snapshots,
            status,
            bootstrap,
            on_listening,
            sign_requests,
            signing,
            retiring,
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
            .chain(retiring.iter().flat_map(|r| r.record.participants.iter()))
        {
            validators.insert(network::peer_id_of(v)?, v.clone());
        }
        let peer_records = store.peers()?.into_iter().collect();
        Ok(Coordinator {
            def,
            me,
            coordinator_key,
            store,
            swarm,
            libp2p_metrics,
            metrics,
            bus,
            from_processors,
            control,
            snapshots,
            status,
            bootstrap,
            on_listening,
            sign_requests,
            sign_timeout: Duration::from_millis(signing.attempt_timeout_ms),
            max_queued: signing.max_queued,
            gossip_topics,
            topic_coins,
            names: Names::new(validators.values()),
            validators,
            announcer: Announcer::default(),
            local_keys: BTreeMap::new(),
            signer_ready: BTreeSet::new(),
            outbox: outbox::Outbox::default(),
            connected: BTreeSet::new(),
            peer_records,
            listen_addrs: Vec::new(),
            slow_peer_warned: None,
            busy_warned: None,
            outbox_dirty: false,
            #[cfg(feature = "fault-injection")]
            link_faults: Default::default(),
            gossip_limit: RateLimiter::new(GOSSIP_PER_SECOND, GOSSIP_BURST),
            direct_limit: RateLimiter::new(DIRECT_PER_SECOND, DIRECT_BURST),
            connection_limit: RateLimiter::per_minute(CONNECTIONS_PER_MINUTE, CONNECTION_BURST),
            peer_addrs: HashMap::new(),
            peer_rtt: HashMap::new(),
            redial: Redial::default(),
            retiring,
            last_seq: 0,
        })
    }

    /// The DKG timeout the processors use: re-announcements while a DKG runs come at least
    /// once within it, and those asked for by votes at most three times.
    pub fn with_dkg_timeout(mut self, dkg_timeout: Duration) -> Self {
        self.announcer = self.announcer.with_dkg_timeout(dkg_timeout);
        self
    }

    /// The event loop, until `shutdown` resolves.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        for topic in self.gossip_topics.values() {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(topic)
                .map_err(|e| NodeError::Network(format!("subscribe: {e}")))?;
        }
        // Step 2: the coordinator's key, on every coin topic.
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
                Instant::now(),
            );
        }
        // Known addresses of validators, then the bootstrap list.
        for (i, v) in self.def.validators.clone().iter().enumerate() {
            let peer = network::peer_id_of(v)?;
            for a in self.def.validator_addrs.get(i).cloned().unwrap_or_default() {
                match a.parse::<Multiaddr>() {
                    Ok(addr) => {
                        self.swarm.add_peer_address(peer, addr.clone());
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                    Err(e) => {
                        warn!(validator = %v, addr = %a, error = %e, "ignoring invalid validator address")
                    }
                }
            }
        }
        // Every validator whose address we know, at once (one that starts after us dials us),
        // and the bootstrap list (discovery of the others).
        self.dial_missing();
        for (key, req) in self.store.outbox()? {
            let kind = req.kind();
            let bytes = messages::encode(&req)?;
            self.insert_outbox(key, bytes, kind, None);
        }

        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_dial = Instant::now();
        let mut last_kad = Instant::now();
        let mut last_size = Instant::now() - Duration::from_secs(10);
        let start = Instant::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    info!("shutting down");
                    return Ok(());
                }
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                ev = self.from_processors.recv() => match ev {
                    Some(ProcessorEvent::Out(coin, msg)) => self.on_processor(coin, *msg)?,
                    Some(ProcessorEvent::Fatal(e)) => return Err(NodeError::Processor(format!("storage failure: {e}"))),
                    None => return Err(NodeError::Processor("every processor stopped".into())),
                },
                Some(cmd) = self.control.recv() => self.on_control(cmd),
                Some(cmd) = self.sign_requests.recv() => self.on_sign(cmd),
                _ = tick.tick() => {
                    let now = Instant::now();
                    let all_active = self.all_active();
                    let round = self.announcer.round_due(now, all_active);
                    let repeats = self.announcer.repeats_due(now);
                    for (coin, msg) in round.into_iter().chain(repeats) {
                        self.publish(coin, msg);
                    }
                    if now.duration_since(last_dial) >= Duration::from_secs(2) {
                        self.dial_missing();
                        last_dial = now;
                    }
                    if now.duration_since(last_size) >= Duration::from_secs(10) {
                        self.metrics.db_size.set(i64::try_from(self.store.size_bytes()).unwrap_or(i64::MAX));
                        last_size = now;
                    }
                    self.metrics.validators_missing.set(self.missing_validators() as i64);
                    if now.duration_since(last_kad) >= Duration::from_secs(10) && self.missing_validators() > 0 {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                        last_kad = now;
                    }
                    #[cfg(feature = "fault-injection")]
                    self.release_held();
                    self.drain_backlogs();
                    self.tick_processors(start);
                    self.flush_outbox();
                    self.refresh_status();
                }
            }
            // What an event queued leaves now, not at the next tick.
            if self.outbox_dirty {
                self.outbox_dirty = false;
                self.flush_outbox();
            }
        }
    }

    /// Give every processor the time and the validators it can reach.
    fn tick_processors(&self, start: Instant) {
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let reachable: BTreeSet<ValidatorId> = self
            .connected
            .iter()
            .filter(|p| {
                #[cfg(feature = "fault-injection")]
                if self.link_faults.is_cut(p) {
                    return false;
                }
                let _ = p;
                true
            })
            .filter_map(|p| self.validators.get(p).cloned())
            .collect();
        for topic in self
            .bus
            .values()
            .chain(self.retiring.iter().map(|r| &r.topic))
        {
            topic.tick(now_ms, reachable.clone());
        }
    }

    /// `POST /sign`: check, store the request, hand it to the coin's processor.
    fn on_sign(&mut self, cmd: SignCommand) {
        let result = self.accept_sign(cmd.coin, cmd.messages, cmd.session);
        let _ = cmd.reply.send(result);
    }

    fn accept_sign(
        &mut self,
        coin: Coin,
        messages: Vec<Vec<u8>>,
        session: Option<u32>,
    ) -> Result<[u8; 32], SignRefusal> {
        if !self.def.coins.contains(&coin) {
            return Err(SignRefusal::UnknownCoin(coin));
        }
        // The current session's vault, or a retiring one.
        let retiring = match session.filter(|s| *s != self.def.session) {
            None => None,
            Some(s) => Some(
                self.retiring
                    .iter()
                    .position(|r| r.record.coin == coin && r.record.session == s)
                    .ok_or(SignRefusal::UnknownSession { coin, session: s })?,
            ),
        };
        let snapshots = match retiring {
            Some(i) => &self.retiring[i].snapshots,
            None => &self.snapshots,
        };
        let (can_sign, queued) = snapshots
            .read()
            .ok()
            .and_then(|s| s.get(&coin).map(|p| (p.can_sign, p.signing.queued)))
            .unwrap_or((false, 0));
        if !can_sign {
            return Err(SignRefusal::NotActive(coin));
        }
        protocol::signing::check_messages(coin, &messages).map_err(SignRefusal::InvalidMessages)?;
        if queued >= self.max_queued {
            return Err(SignRefusal::Queued { coin, queued });
        }
        let vault = match retiring {
            Some(i) => self.retiring[i].record.context,
            None => self
                .store
                .get::<storage::Vaults>(&storage::VaultKey {
                    coin,
                    session: self.def.session,
                })?
                .map(|v| v.context)
                .ok_or(SignRefusal::NotActive(coin))?,
        };
        let topic = match retiring {
            Some(i) => &self.retiring[i].topic,
            None => self.bus.get(&coin).ok_or(SignRefusal::Stopped(coin))?,
        };
        // Only this loop sends on the topic: room now is room after the write below.
        if !topic.has_room() {
            self.metrics.bus_full(coin);
            return Err(SignRefusal::Busy(coin));
        }
        let mut id = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        // Stored before the id is returned: a request is never lost, even across a crash.
        let record = protocol::vault::SignRecord {
            id,
            coin,
            origin: self.me.clone(),
            vault,
            messages: messages.clone(),
            status: protocol::vault::SignStatus::Pending,
            attempt: 0,
            signers: Vec::new(),
            signatures: Vec::new(),
            reason: None,
            left_out: Vec::new(),
        };
        self.store
            .put::<storage::SignRequests>(&storage::RequestId(id), &record)?;
        let request = CoordinatorMessage::SignatureRequested(SignatureRequested { id, messages });
        if topic.place_volatile(request) == bus::Placed::Gone {
            // Stored as pending: a restart resumes it.
            return Err(SignRefusal::Stopped(coin));
        }
        info!(%coin, request = %hex::encode(id), "signature requested");
        Ok(id)
    }

    fn all_active(&self) -> bool {
        self.snapshots
            .read()
            .map(|s| {
                s.len() == self.def.coins.len() && s.values().all(|p| p.phase == Phase::Active)
            })
            .unwrap_or(false)
    }

    fn missing_validators(&self) -> usize {
        self.validators
            .keys()
            .filter(|p| **p != *self.swarm.local_peer_id() && !self.connected.contains(p))
            .count()
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            let mut a = addr.clone();
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = a.pop() {
                if peer == *self.swarm.local_peer_id() {
                    continue;
                }
                self.swarm.add_peer_address(peer, a.clone());
                self.swarm.behaviour_mut().kad.add_address(&peer, a);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    /// Dial the validators we are not connected to, each with its own exponential backoff
    /// (2 s doubling to 60 s; reset when it connects).
    fn dial_missing(&mut self) {
        let me = *self.swarm.local_peer_id();
        let missing: Vec<PeerId> = self
            .validators
            .keys()
            .filter(|p| **p != me && !self.connected.contains(p))
            .copied()
            .collect();
        for (p, backoff) in self.redial.due(missing, Instant::now()) {
            debug!(peer = %p, retry_in = ?backoff, "dialing a missing validator");
            if let Err(e) = self.swarm.dial(DialOpts::peer_id(p).build()) {
                debug!(peer = %p, error = %e, "dial failed");
            }
        }
        if self.connected.is_empty() {
            self.dial_bootstrap();
        }
    }

    fn on_control(&mut self, cmd: ControlCommand) {
        match cmd {
            ControlCommand::RotateKey(coin, reply) => match self.bus.get(&coin) {
                Some(topic) => {
                    if topic.rotate(reply) == bus::Placed::Gone {
                        warn!(%coin, "processor stopped");
                    }
                }
                None => {
                    let _ = reply.send(Err(format!("{coin} has no vault in this network")));
                }
            },
            #[cfg(feature = "fault-injection")]
            ControlCommand::LinkFaults {
                cut,
                delayed,
                delay,
                lose_from,
                lose_kind,
            } => {
                warn!(cut = ?cut, delayed = ?delayed, ?delay, lose_from = ?lose_from, lose_kind = ?lose_kind, "test-only link faults set");
                self.link_faults.set(cut, delayed, delay);
                self.link_faults.lose_once(lose_from, lose_kind);
                self.announcer.ask_round(); // a healed peer hears what it missed
            }
            #[cfg(feature = "fault-injection")]
            ControlCommand::StallProcessor {
                coin,
                stalled,
                reply,
            } => {
                let result = match self.bus.get(&coin) {
                    Some(topic) => self.link_faults.stall(coin, stalled, topic),
                    None => Err(format!("{coin} has no vault in this network")),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Test-only: handle what the link faults held back and is due now.
    #[cfg(feature = "fault-injection")]
    fn release_held(&mut self) {
        let (gossip, requests) = self.link_faults.due();
        for g in gossip {
            self.on_gossip_message(g.propagation_source, g.message_id, g.message);
        }
        for r in requests {
            self.answer_request(r.peer, r.request, r.channel);
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&ev);
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address);
                if let Some(f) = self.on_listening.take() {
                    f(&self.listen_addrs);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                connection_id,
                endpoint,
                ..
            } => {
                let now = Instant::now();
                if !self.connection_limit.allow(&peer_id, now) {
                    self.metrics.limited("connection");
                    if self.connection_limit.should_warn(&peer_id, now) {
                        warn!(peer = %peer_id, "connection rate limit exceeded; closing its new connections for now");
                    }
                    self.swarm.close_connection(connection_id);
                    return;
                }
                if num_established.get() == 1 {
                    info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                self.peer_addrs
                    .insert(peer_id, endpoint.get_remote_address().clone());
                self.redial.connected(&peer_id);
                self.connected.insert(peer_id);
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
                // Deliver what waits for this peer now (our announcements follow its
                // subscriptions: see `replay_announcements`).
                if let Some(v) = self.validators.get(&peer_id) {
                    self.outbox.connected(v, Instant::now());
                    self.outbox_dirty = true;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                info!(peer = %peer_id, cause = ?cause, "disconnected");
                self.connected.remove(&peer_id);
                self.peer_addrs.remove(&peer_id);
                self.peer_rtt.remove(&peer_id);
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(addr = %send_back_addr, error = %error, "incoming connection failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => {
                self.libp2p_metrics.record(&ev);
                self.on_gossip_event(ev);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(ev)) => self.on_direct_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => {
                self.libp2p_metrics.record(&ev);
                if let identify::Event::Received { peer_id, info, .. } = ev {
                    if self.validators.contains_key(&peer_id) {
                        for addr in info.listen_addrs {
                            self.swarm
                                .behaviour_mut()
                                .kad
                                .add_address(&peer_id, addr.clone());
                            self.swarm.add_peer_address(peer_id, addr);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.libp2p_metrics.record(&ev),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => {
                self.libp2p_metrics.record(&ev);
                match ev.result {
                    Ok(rtt) => {
                        self.peer_rtt.insert(ev.peer, rtt);
                    }
                    Err(e) => {
                        debug!(peer = %ev.peer, error = %e, "ping failed; closing connection");
                        self.swarm.close_connection(ev.connection);
                    }
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- gossip (general partition)

    fn on_gossip_event(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                #[cfg(feature = "fault-injection")]
                let Some(crate::faults::HeldGossip {
                    propagation_source,
                    message_id,
                    message,
                }) = self.link_faults.hold_gossip(
                    message.source,
                    crate::faults::HeldGossip {
                        propagation_source,
                        message_id,
                        message,
                    },
                )
                else {
                    return;
                };
                self.on_gossip_message(propagation_source, message_id, message);
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer subscribed");
                self.replay_announcements(peer_id, &topic);
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                // Not re-announced here: under overload that would feed the queues that
                // overflowed. A validator that misses an announcement votes, and the vote
                // brings it (see on_general).
                let dropped = failed_messages.priority + failed_messages.non_priority;
                self.metrics.gossip_dropped.inc_by(dropped as u64);
                let now = Instant::now();
                if self
                    .slow_peer_warned
                    .is_none_or(|t| now.duration_since(t) >= SLOW_PEER_WARN_GAP)
                {
                    self.slow_peer_warned = Some(now);
                    warn!(peer = %peer_id, dropped, "gossip messages to a slow peer were abandoned (vaultd_gossip_dropped_total counts them all)");
                }
            }
            _ => {}
        }
    }

    /// Drop a gossip message without judging it (not forwarded, not held against its sender).
    fn ignore_gossip(&mut self, message_id: &gossipsub::MessageId, source: &PeerId) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, source, MessageAcceptance::Ignore);
    }

    fn on_gossip_message(
        &mut self,
        propagation_source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let author = message.source;
        let limited_peer = author.unwrap_or(propagation_source);
        let now = Instant::now();
        if !self.gossip_limit.allow(&limited_peer, now) {
            self.metrics.limited("gossip");
            if self.gossip_limit.should_warn(&limited_peer, now) {
                warn!(peer = %limited_peer, "gossip rate limit exceeded; ignoring its messages for now");
            }
            self.ignore_gossip(&message_id, &propagation_source);
            return;
        }
        #[cfg(feature = "fault-injection")]
        if author.is_some_and(|a| self.link_faults.is_cut(&a)) {
            self.ignore_gossip(&message_id, &propagation_source);
            return;
        }
        #[cfg(feature = "fault-injection")]
        if let (Some(a), Ok(m)) = (author, messages::decode::<GeneralMessage>(&message.data)) {
            if self.link_faults.lose(&a, m.kind()) {
                warn!(peer = %a, kind = m.kind(), "test-only: losing this gossip message");
                self.ignore_gossip(&message_id, &propagation_source);
                return;
            }
        }
        let verdict = self.on_gossip(author, &message.topic, &message.data);
        let acceptance = match verdict {
            Ok(kind) => {
                self.metrics.received("gossip", kind, message.data.len());
                MessageAcceptance::Accept
            }
            Err(Refusal::Invalid(reason)) => {
                let peer = author
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| propagation_source.to_string());
                warn!(%peer, via = %propagation_source, topic = %message.topic, %reason, "rejected gossip message");
                self.metrics.rejected("gossip");
                MessageAcceptance::Reject
            }
            // Not the sender's fault: neither forwarded nor held against it.
            Err(Refusal::Busy(coin)) => {
                self.warn_busy(coin);
                MessageAcceptance::Ignore
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    fn on_gossip(
        &mut self,
        author: Option<PeerId>,
        topic: &TopicHash,
        data: &[u8],
    ) -> Result<&'static str, Refusal> {
        let author = author.ok_or("unsigned message")?;
        let from = self
            .validators
            .get(&author)
            .cloned()
            .ok_or("author is not a validator")?;
        if from == self.me {
            return Err("message claims to be ours".into());
        }
        let coin = *self.topic_coins.get(topic).ok_or("unknown topic")?;
        let msg: GeneralMessage = messages::decode(data).map_err(|e| e.to_string())?;
        self.on_general(from, coin, msg)
    }

    /// A message of the general partition from validator `from` on `coin`'s topic (gossiped,
    /// or replayed to us directly).
    fn on_general(
        &mut self,
        from: ValidatorId,
        coin: Coin,
        msg: GeneralMessage,
    ) -> Result<&'static str, Refusal> {
        if msg.coin().is_some_and(|c| c != coin) {
            return Err(format!("{} message on the {coin} topic", msg.kind()).into());
        }
        let kind = msg.kind();
        if let GeneralMessage::KeyGenExclusionVote(v) = &msg {
            // Someone has not heard from us: gossip may have lost an announcement (a dropped
            // connection, a full send queue), and the periodic round can be minutes away.
            if v.exclude.contains(&self.me) && self.announcer.named_silent(Instant::now()) {
                info!(%coin, voter = %from, attempt = v.attempt, "a vote names us as silent; re-announcing");
            }
        }
        match routing::general_in(from.clone(), coin, msg) {
            Inbound::CoordinatorKey(k) => {
                if ValidatorId::from_ed25519(&k.pubkey) != from {
                    return Err("coordinator key does not match the author".into());
                }
                self.update_peer(&from, |r| r.coordinator_key = Some(k.pubkey))
                    .map_err(|e| e.to_string())?;
            }
            Inbound::ProcessorKey(k) => self.on_peer_processor_key(&from, k)?,
            Inbound::SignerReady(s) => {
                self.update_peer(&from, |r| {
                    r.signer_ready.insert(s.coin, s.pubkey);
                })
                .map_err(|e| e.to_string())?;
            }
            Inbound::Place(coin, msg) => {
                self.place(coin, msg)?;
            }
            Inbound::Deliver(coin, msg) => {
                self.deliver(coin, msg)?;
            }
            _ => return Err(format!("{kind} is not a general message").into()),
        }
        Ok(kind)
    }

    fn update_peer(
        &mut self,
        v: &ValidatorId,
        f: impl FnOnce(&mut PeerRecord),
    ) -> Result<(), NodeError> {
        let mut rec = self.peer_records.get(v).cloned().unwrap_or_default();
        let before = rec.clone();
        f(&mut rec);
        if rec != before {
            // Peers announce their keys again (and replay them when we subscribe): not worth a
            // disk sync per announcement.
            let mut b = Batch::new();
            b.put::<Peers>(v, &rec)?;
            self.store.write_lazy(b)?;
            self.peer_records.insert(v.clone(), rec);
        }
        Ok(())
    }

    /// A coin a peer's message names must be one of the network's.
    fn known_coin(&self, coin: Coin) -> Result<(), String> {
        if self.def.coins.contains(&coin) {
            Ok(())
        } else {
            Err(format!("{coin} has no vault in this network"))
        }
    }

    /// Steps 4 and 8: a peer's processor key, from gossip or its step-7 list.
    fn on_peer_processor_key(
        &mut self,
        from: &ValidatorId,
        k: ProcessorPublicKey,
    ) -> Result<(), Refusal> {
        self.known_coin(k.coin)?;
        let known = self
            .peer_records
            .get(from)
            .and_then(|r| r.processor_keys.get(&k.coin))
            .cloned();
        match known {
            Some(old) if old.seq > k.seq => return Ok(()), // stale
            Some(old) if old.seq == k.seq && old.pubkey != k.pubkey => {
                return Err(format!("two {} processor keys with seq {}", k.coin, k.seq).into());
            }
            Some(old) if old == k => {}
            _ => {
                if known.is_some() {
                    info!(validator = %from, coin = %k.coin, seq = k.seq, "processor key replaced");
                }
                let key = k.clone();
                self.update_peer(from, |r| {
                    r.processor_keys.insert(key.coin, key);
                })
                .map_err(|e| e.to_string())?;
            }
        }
        let (coin, msg) = routing::external_key(from.clone(), k);
        self.place(coin, msg)?;
        Ok(())
    }

    /// Store an `...In` message, then hand it to the coin's processor. It is taken once it is
    /// stored: when the processor's queue is full it waits in the inbound table (see
    /// `bus::Topic::place_stored`), and the peer is told `Accepted` all the same.
    fn place(&mut self, coin: Coin, msg: CoordinatorMessage) -> Result<DirectResponse, Refusal> {
        let Some((mut key, policy)) = inbound::slot_of(coin, &msg) else {
            return Err(format!("{} has no inbound slot", msg.kind()).into());
        };
        let entries = match policy {
            SlotPolicy::Replace => self
                .store
                .get::<storage::Inbound>(&key)
                .map_err(|e| e.to_string())?
                .map(|m| (key.clone(), m))
                .into_iter()
                .collect(),
            SlotPolicy::Log => self.store.inbound_slot(&key).map_err(|e| e.to_string())?,
        };
        let evict = match inbound::plan(policy, &entries, &msg) {
            inbound::Plan::Duplicate => return Ok(DirectResponse::Duplicate),
            inbound::Plan::Store { evict } => evict,
        };
        if !evict.is_empty() {
            // A sender re-sealing after restarts, or flooding its own slot.
            debug!(%coin, kind = msg.kind(), evicted = evict.len(), "inbound slot full; dropping its oldest entries");
        }
        if policy == SlotPolicy::Log {
            key.seq = self.next_seq();
        }
        let mut b = Batch::new();
        for old in &evict {
            b.delete::<storage::Inbound>(old);
        }
        b.put::<storage::Inbound>(&key, &msg)
            .map_err(|e| e.to_string())?;
        self.store.write(b).map_err(|e| e.to_string())?;
        // Key exchange also reaches the coin's retiring vaults whose participant sent it; the
        // current session's processor gets what comes from its own validators.
        let sender = match &msg {
            CoordinatorMessage::ExternalPublicKeyIn(m) => Some(m.from.clone()),
            CoordinatorMessage::EncryptedPublicKeyIn(m) => Some(m.from.clone()),
            _ => None,
        };
        let mut placed = Vec::new();
        if let Some(from) = &sender {
            for r in self.retiring.iter_mut().filter(|r| r.record.coin == coin) {
                if r.record.participants.contains(from) {
                    placed.push(r.topic.place_stored(msg.clone(), &key, policy));
                }
            }
        }
        if sender
            .as_ref()
            .is_none_or(|from| self.def.is_validator(from))
        {
            let topic = self
                .bus
                .get_mut(&coin)
                .ok_or_else(|| format!("no processor for {coin}"))?;
            placed.push(topic.place_stored(msg, &key, policy));
        }
        for p in placed {
            match p {
                bus::Placed::Queued => {}
                bus::Placed::Full => self.metrics.bus_full(coin),
                bus::Placed::Gone => return Err("processor stopped".to_string().into()),
            }
        }
        Ok(DirectResponse::Accepted)
    }

    /// The retiring vault a signing message is for, if any (by the vault's DKG context).
    fn retiring_topic(&self, msg: &CoordinatorMessage) -> Option<&bus::Topic> {
        let vault = routing::vault_of(msg)?;
        self.retiring
            .iter()
            .find(|r| r.record.context == vault)
            .map(|r| &r.topic)
    }

    /// Hand signing traffic to the processor of its vault (not stored: never replayed). When
    /// its queue is full the message is not taken ([`Refusal::Busy`]).
    fn deliver(&mut self, coin: Coin, msg: CoordinatorMessage) -> Result<DirectResponse, Refusal> {
        let topic = match self.retiring_topic(&msg) {
            Some(t) => t,
            None => self
                .bus
                .get(&coin)
                .ok_or_else(|| format!("no processor for {coin}"))?,
        };
        match topic.place_volatile(msg) {
            bus::Placed::Queued => Ok(DirectResponse::Accepted),
            bus::Placed::Full => {
                self.metrics.bus_full(coin);
                Err(Refusal::Busy(coin))
            }
            bus::Placed::Gone => Err("processor stopped".to_string().into()),
        }
    }

    /// Log (at most every `SLOW_PEER_WARN_GAP`) that a coin's processor queue turned a message
    /// away.
    fn warn_busy(&mut self, coin: Coin) {
        let now = Instant::now();
        if self
            .busy_warned
            .is_none_or(|t| now.duration_since(t) >= SLOW_PEER_WARN_GAP)
        {
            self.busy_warned = Some(now);
            warn!(%coin, "the processor's queue is full: a signing message was not taken (its sender retries; vaultd_bus_full_total counts them)");
        }
    }

    /// Hand each processor what waited in the inbound table while its queue was full, once it
    /// has room again.
    fn drain_backlogs(&mut self) {
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

    /// Arrival order of inbound log entries: increasing, also across restarts.
    fn next_seq(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_seq = now.max(self.last_seq + 1);
        self.last_seq
    }

    /// A validator subscribed to one of our coin topics: it missed what we gossiped there
    /// before, so it gets our announcements for that coin directly, once (later ones reach it
    /// by gossip). Cheaper than gossiping them all again to everyone.
    fn replay_announcements(&mut self, peer: PeerId, topic: &TopicHash) {
        let (Some(&coin), Some(to)) = (self.topic_coins.get(topic), self.validators.get(&peer))
        else {
            return;
        };
        self.replay_announcements_to(to.clone(), coin);
    }

    /// Our announcements for `coin`, directly to `to` (retried for [`REPLAY_LIFETIME`]).
    fn replay_announcements_to(&mut self, to: ValidatorId, coin: Coin) {
        for replay in self.announcer.replay(coin) {
            let req = DirectRequest::AnnouncementReplay(replay);
            if let Err(e) = self.enqueue_volatile(to.clone(), req, REPLAY_LIFETIME) {
                warn!(%coin, validator = %to, error = %e, "cannot replay announcements");
            }
        }
    }

    // ---------------------------------------------------------------- processor out

    fn on_processor(&mut self, coin: Coin, msg: ProcessorMessage) -> Result<(), NodeError> {
        if let Some(topic) = self.bus.get(&coin) {
            debug!(topic = topic.name(), kind = msg.kind(), partition = ?msg.partition(), "from processor");
        }
        match routing::outbound(msg) {
            Outbound::Announce { slot, msg } => {
                match &msg {
                    GeneralMessage::ProcessorPublicKey(k) => {
                        self.local_keys.insert(coin, k.clone());
                    }
                    // Step 6: upon SignerReady, the signer list comes from the network
                    // definition.
                    GeneralMessage::SignerReady(_) => {
                        self.signer_ready.insert(coin);
                    }
                    GeneralMessage::KeyGenExclusionVote(v) => {
                        info!(%coin, attempt = v.attempt, round = v.round, exclude = ?v.exclude.iter().map(|x| x.to_string()).collect::<Vec<_>>(), reasons = ?v.reasons, "DKG: voting to leave participants out of the next attempt");
                    }
                    GeneralMessage::KeyGenBlame(b) => {
                        warn!(%coin, accused = %b.evidence.accused(), "DKG: publishing evidence against a participant");
                    }
                    _ => {}
                }
                let key_list = matches!(
                    msg,
                    GeneralMessage::ProcessorPublicKey(_) | GeneralMessage::SignerReady(_)
                );
                self.add_announcement(coin, slot, msg);
                if key_list {
                    self.send_key_list()?;
                }
            }
            Outbound::Publish(msg) => self.publish(coin, msg),
            Outbound::Direct {
                to,
                request,
                durable: true,
            } => self.enqueue(to, request)?,
            Outbound::Direct {
                to,
                request,
                durable: false,
            } => {
                let lifetime = self.sign_timeout * 2;
                self.enqueue_volatile(to, request, lifetime)?;
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
                    self.enqueue_volatile(v, req, REPLAY_LIFETIME)?;
                }
            }
        }
        Ok(())
    }

    /// Step 7: once every local processor is ready, send each validator the list of our
    /// processor messaging keys (again after a rotation).
    fn send_key_list(&mut self) -> Result<(), NodeError> {
        if self
            .def
            .coins
            .iter()
            .any(|c| !self.signer_ready.contains(c) || !self.local_keys.contains_key(c))
        {
            return Ok(());
        }
        let list = ProcessorPublicKeyList {
            keys: self.local_keys.values().cloned().collect(),
        };
        for v in self.def.validators.clone() {
            if v != self.me {
                self.enqueue(v, DirectRequest::ProcessorPublicKeyList(list.clone()))?;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- request-response

    /// Persist before send: the request is in the outbox table before it leaves.
    fn enqueue(&mut self, to: ValidatorId, req: DirectRequest) -> Result<(), NodeError> {
        let kind = req.kind();
        let bytes = messages::encode(&req)?;
        let key = OutboxKey::for_request(to, &req);
        self.store.put::<Outbox>(&key, &req)?;
        self.insert_outbox(key, bytes, kind, None);
        Ok(())
    }

    /// Signing traffic and announcement replays: delivered with retries for `lifetime`, not
    /// stored (an attempt cut by a restart is abandoned; announcements are replayed again).
    fn enqueue_volatile(
        &mut self,
        to: ValidatorId,
        req: DirectRequest,
        lifetime: Duration,
    ) -> Result<(), NodeError> {
        let kind = req.kind();
        let bytes = messages::encode(&req)?;
        let key = OutboxKey::for_request(to, &req);
        self.insert_outbox(key, bytes, kind, Some(Instant::now() + lifetime));
        Ok(())
    }

    /// A new announcement: published at once, and re-announced with the others (for peers that
    /// connect later) until it is replaced.
    fn add_announcement(&mut self, coin: Coin, slot: AnnouncementSlot, msg: GeneralMessage) {
        let msg = self.announcer.add(coin, slot, msg, Instant::now());
        self.publish(coin, msg);
    }

    /// Gossip one message once (signing announcements are not repeated).
    fn publish(&mut self, coin: Coin, msg: GeneralMessage) {
        let Some(topic) = self.gossip_topics.get(&coin).cloned() else {
            return;
        };
        let kind = msg.kind();
        let bytes = match messages::encode(&msg) {
            Ok(b) => b,
            Err(e) => {
                warn!(%coin, kind, error = %e, "cannot encode announcement");
                return;
            }
        };
        let len = bytes.len();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => self.metrics.sent("gossip", kind, len),
            Err(e) => debug!(%coin, kind, error = %e, "publish failed"),
        }
    }

    fn insert_outbox(
        &mut self,
        key: OutboxKey,
        bytes: Vec<u8>,
        kind: &'static str,
        expires: Option<Instant>,
    ) {
        self.outbox
            .insert(key, bytes, kind, expires, Instant::now());
        self.outbox_dirty = true;
        self.metrics.outbox_len.set(self.outbox.len() as i64);
    }

    /// Send what is due to the validators we can reach (the dial loop reconnects the others; a
    /// connection makes their requests due at once).
    fn flush_outbox(&mut self) {
        let now = Instant::now();
        if self.outbox.expire(now) {
            self.metrics.outbox_len.set(self.outbox.len() as i64);
        }
        let reachable = |v: &ValidatorId| {
            let Ok(peer) = network::peer_id_of(v) else {
                return false;
            };
            #[cfg(feature = "fault-injection")]
            if self.link_faults.is_cut(&peer) {
                return false; // kept until the link heals
            }
            self.connected.contains(&peer)
        };
        let sends = self.outbox.due(now, reachable);
        for send in sends {
            let Ok(peer) = network::peer_id_of(&send.to) else {
                continue;
            };
            self.metrics.sent("direct", send.kind, send.bytes.len());
            let id = self
                .swarm
                .behaviour_mut()
                .direct
                .send_request(&peer, send.bytes.clone());
            self.outbox.sent(send, id);
        }
    }

    fn settle(&mut self, id: OutboundRequestId, delivered: bool, why: &str) {
        match self.outbox.settle(&id, delivered, Instant::now()) {
            Settled::Delivered(stored) => {
                self.metrics.outbox_len.set(self.outbox.len() as i64);
                if let Some(key) = stored {
                    let mut b = Batch::new();
                    b.delete::<Outbox>(&key);
                    if let Err(err) = self.store.write_lazy(b) {
                        warn!(error = %err, "could not clear delivered request");
                    }
                }
            }
            Settled::Retry { to, kind, retry_in } => {
                debug!(%to, kind, why, ?retry_in, "delivery failed; will retry");
            }
            Settled::Stale => {}
        }
    }

    /// Answer a direct request from `peer`.
    fn answer_request(
        &mut self,
        peer: PeerId,
        request: Vec<u8>,
        channel: request_response::ResponseChannel<Vec<u8>>,
    ) {
        #[cfg(feature = "fault-injection")]
        if self.link_faults.is_cut(&peer) {
            return; // no answer: the channel drops
        }
        let now = Instant::now();
        if !self.direct_limit.allow(&peer, now) {
            // No answer: an honest sender's outbox retries later; a flood gets nothing.
            self.metrics.limited("direct");
            if self.direct_limit.should_warn(&peer, now) {
                warn!(%peer, "request rate limit exceeded; not answering it for now");
            }
            return;
        }
        let response = match self.on_direct(peer, &request) {
            Ok((kind, r)) => {
                self.metrics.received("direct", kind, request.len());
                r
            }
            Err(Refusal::Invalid(reason)) => {
                warn!(%peer, %reason, bytes = request.len(), "rejected direct request");
                self.metrics.rejected("direct");
                DirectResponse::Rejected { reason }
            }
            Err(Refusal::Busy(coin)) => {
                // No answer: the sender retries once the processor has caught up.
                self.warn_busy(coin);
                return;
            }
        };
        let bytes = messages::encode(&response).unwrap_or_default();
        if self
            .swarm
            .behaviour_mut()
            .direct
            .send_response(channel, bytes)
            .is_err()
        {
            debug!(%peer, "response channel closed");
        }
    }

    fn on_direct_event(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    #[cfg(feature = "fault-injection")]
                    let Some(crate::faults::HeldRequest {
                        peer,
                        request,
                        channel,
                    }) = self.link_faults.hold_request(crate::faults::HeldRequest {
                        peer,
                        request,
                        channel,
                    })
                    else {
                        return;
                    };
                    self.answer_request(peer, request, channel);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => match messages::decode::<DirectResponse>(&response) {
                    Ok(DirectResponse::Accepted) | Ok(DirectResponse::Duplicate) => {
                        self.settle(request_id, true, "")
                    }
                    Ok(DirectResponse::Rejected { reason }) => {
                        warn!(%peer, %reason, "peer rejected our request; dropping it");
                        self.settle(request_id, true, "");
                    }
                    Err(e) => {
                        warn!(%peer, error = %e, "malformed response");
                        self.settle(request_id, false, "malformed response");
                    }
                },
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                debug!(%peer, error = %error, "request failed");
                self.settle(request_id, false, "outbound failure");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_direct(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<(&'static str, DirectResponse), Refusal> {
        let from = self
            .validators
            .get(&peer)
            .cloned()
            .ok_or("not a validator")?;
        let req: DirectRequest = messages::decode(bytes).map_err(|e| e.to_string())?;
        let kind = req.kind();
        if let Some(to) = routing::addressee(&req) {
            if *to != self.me {
                return Err(format!("addressed to {to}, not to us").into());
            }
        }
        let response = match routing::direct_in(from.clone(), req) {
            Inbound::KeyList(list) => {
                if list.keys.len() > self.def.coins.len() {
                    return Err("key list longer than the coin list".into());
                }
                for k in list.keys {
                    self.on_peer_processor_key(&from, k)?;
                }
                DirectResponse::Accepted
            }
            Inbound::Place(coin, msg) => {
                self.known_coin(coin)?;
                self.place(coin, msg)?
            }
            Inbound::Deliver(coin, msg) => {
                self.known_coin(coin)?;
                self.deliver(coin, msg)?
            }
            Inbound::AnnouncementReplay(r) => {
                self.known_coin(r.coin)?;
                if r.messages.len() > MAX_REPLAY_MESSAGES {
                    return Err(format!(
                        "{} announcements in one replay (at most {MAX_REPLAY_MESSAGES})",
                        r.messages.len()
                    )
                    .into());
                }
                // Each is judged like the same message gossiped by `from`; the first refusal
                // is the answer, after the others were taken.
                let mut refused = None;
                let mut busy = None;
                for msg in r.messages {
                    let kind = msg.kind();
                    #[cfg(feature = "fault-injection")]
                    if self.link_faults.lose(&peer, kind) {
                        warn!(%peer, kind, "test-only: losing this replayed message");
                        continue;
                    }
                    match self.on_general(from.clone(), r.coin, msg) {
                        Ok(_) => {}
                        Err(Refusal::Invalid(reason)) => {
                            refused.get_or_insert(format!("{kind}: {reason}"));
                        }
                        Err(Refusal::Busy(coin)) => busy = Some(coin),
                    }
                }
                if let Some(reason) = refused {
                    return Err(reason.into());
                }
                if let Some(coin) = busy {
                    return Err(Refusal::Busy(coin));
                }
                DirectResponse::Accepted
            }
            Inbound::AnnouncementRequest(r) => {
                self.known_coin(r.coin)?;
                // One replay per asker and coin per second: a validator asking in a loop gets
                // no more than that (its outbox slot holds one replay at a time).
                if self.announcer.answer_request(&from, r.coin, Instant::now()) {
                    debug!(coin = %r.coin, validator = %from, "replaying our announcements on request");
                    self.replay_announcements_to(from, r.coin);
                    DirectResponse::Accepted
                } else {
                    DirectResponse::Duplicate
                }
            }
            _ => return Err(format!("{kind} is not a direct request").into()),
        };
        Ok((kind, response))
    }

    // ---------------------------------------------------------------- status

    /// Rebuild the status page's view (every 250 ms tick).
    fn refresh_status(&self) {
        let Ok(snapshots) = self.snapshots.read() else {
            return;
        };
        let status = crate::status_view::project(&crate::status_view::StatusInput {
            def: &self.def,
            me: &self.me,
            peer_id: *self.swarm.local_peer_id(),
            names: &self.names,
            validators: &self.validators,
            peer_records: &self.peer_records,
            connected: &self.connected,
            peer_addrs: &self.peer_addrs,
            peer_rtt: &self.peer_rtt,
            listen_addrs: &self.listen_addrs,
            snapshots: &snapshots,
            retiring: self.retiring.iter().map(|r| &r.record).collect(),
        });
        if let Ok(mut s) = self.status.write() {
            *s = status;
        }
    }
}
