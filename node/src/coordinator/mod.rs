//! The coordinator's driver: one task that owns the swarm, the database and the processors' bus
//! topics, turns what they produce into [`Event`]s for the sans-IO core (`core/`), and does the
//! [`Action`]s the core returns, in order. Nothing here decides what a message means; nothing
//! here waits on a bounded channel (a full processor queue is reported back, see `bus.rs`).
//!
//! Test-only link faults (`faults.rs`) sit between the swarm and the core, here.

#[cfg(feature = "fault-injection")]
use std::collections::BTreeSet;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    gossipsub::{self, MessageAcceptance},
    request_response::{OutboundRequestId, ResponseChannel},
    swarm::dial_opts::DialOpts,
    Multiaddr, PeerId, Swarm,
};
use protocol::{
    messages::{self},
    processor::Phase,
    Coin,
};
use storage::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

mod place;
mod swarm;

pub use crate::core::SignRefusal;
use crate::{
    bus::{self, ProcessorEvent},
    core::{self, Action, Core, Event, Placements, Target, TargetView},
    error::NodeError,
    metrics::Metrics,
    network::Behaviour,
    processor_task::Snapshots,
    status::Status,
};

/// Least time between two warnings about messages a full processor queue turned away.
const BUSY_WARN_GAP: Duration = Duration::from_secs(10);

/// Called once with the listen addresses, when the first one is known.
pub type OnListening = Box<dyn FnOnce(&[Multiaddr]) + Send>;

/// The driver's handles in the core's events and actions.
pub struct Libp2p;

impl core::Io for Libp2p {
    type Channel = ResponseChannel<Vec<u8>>;
    type SignReply = oneshot::Sender<Result<[u8; 32], SignRefusal>>;
}

/// A signature request from the HTTP endpoint.
pub struct SignCommand {
    /// Coin.
    pub coin: Coin,
    /// Messages (already hex-decoded).
    pub messages: Vec<Vec<u8>>,
    /// Session of the vault to sign with (`None`: the current one).
    pub session: Option<u32>,
    /// The client's reference, part of the request id.
    pub reference: Option<String>,
    /// The request id, once this node's approval is stored and announced.
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
    /// The core, with what it knows at start.
    pub core: Core,
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
    /// Vaults of earlier sessions, still signing (in the order the core's retiring list has).
    pub retiring: Vec<bus::RetiringVault>,
    /// What every processor sends back.
    pub from_processors: mpsc::Receiver<ProcessorEvent>,
    /// Commands from the control socket.
    pub control: mpsc::Receiver<ControlCommand>,
    /// `POST /sign` requests.
    pub sign_requests: mpsc::Receiver<SignCommand>,
    /// The current session's processors' snapshots.
    pub snapshots: Snapshots,
    /// The status page.
    pub status: Arc<RwLock<Status>>,
    /// Called once with the listen addresses.
    pub on_listening: Option<OnListening>,
    /// `--external-address`: advertised before the listen addresses.
    pub external_addrs: Vec<Multiaddr>,
}

/// The driver.
pub struct Coordinator {
    core: Core,
    store: Arc<Store>,
    swarm: Swarm<Behaviour>,
    libp2p_metrics: libp2p::metrics::Metrics,
    metrics: Metrics,
    bus: BTreeMap<Coin, bus::Topic>,
    retiring: Vec<bus::RetiringVault>,
    from_processors: mpsc::Receiver<ProcessorEvent>,
    control: mpsc::Receiver<ControlCommand>,
    sign_requests: mpsc::Receiver<SignCommand>,
    snapshots: Snapshots,
    status: Arc<RwLock<Status>>,
    on_listening: Option<OnListening>,
    listen_addrs: Vec<Multiaddr>,
    external_addrs: Vec<Multiaddr>,
    /// What identify tells peers now (`addresses::advertised`).
    advertised: Vec<Multiaddr>,
    /// Our requests in flight: the swarm's id to the core's token.
    in_flight: HashMap<OutboundRequestId, u64>,
    /// Arrival order of inbound log entries.
    last_seq: u64,
    /// When a message turned away by a full processor queue was last logged.
    busy_warned: Option<Instant>,
    /// When the loop started (the processors' clock counts from it).
    started: Instant,
    #[cfg(feature = "fault-injection")]
    faults: crate::faults::LinkFaults,
}

impl Coordinator {
    /// Assemble; call [`Coordinator::run`] next.
    pub fn new(parts: CoordinatorParts) -> Coordinator {
        Coordinator {
            core: parts.core,
            store: parts.store,
            swarm: parts.swarm,
            libp2p_metrics: parts.libp2p_metrics,
            metrics: parts.metrics,
            bus: parts.bus,
            retiring: parts.retiring,
            from_processors: parts.from_processors,
            control: parts.control,
            sign_requests: parts.sign_requests,
            snapshots: parts.snapshots,
            status: parts.status,
            on_listening: parts.on_listening,
            listen_addrs: Vec::new(),
            external_addrs: parts.external_addrs,
            advertised: Vec::new(),
            in_flight: HashMap::new(),
            last_seq: 0,
            busy_warned: None,
            started: Instant::now(),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
    }

    /// The event loop, until `shutdown` resolves. Each arm hands one thing to a handler.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        self.advertise();
        for topic in self.core.topics().cloned().collect::<Vec<_>>() {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic)
                .map_err(|e| NodeError::Network(format!("subscribe: {e}")))?;
        }
        let outbox = self.store.outbox()?;
        self.event(Event::Start { outbox })?;

        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_size: Option<Instant> = None;
        self.started = Instant::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    info!("shutting down");
                    return Ok(());
                }
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev)?,
                ev = self.from_processors.recv() => match ev {
                    Some(ProcessorEvent::Out(coin, msg)) => self.event(Event::Processor { coin, msg: *msg })?,
                    Some(ProcessorEvent::Fatal(e)) => return Err(NodeError::Processor(format!("storage failure: {e}"))),
                    None => return Err(NodeError::Processor("every processor stopped".into())),
                },
                Some(cmd) = self.control.recv() => self.on_control(cmd)?,
                Some(cmd) = self.sign_requests.recv() => self.on_sign(cmd)?,
                _ = tick.tick() => {
                    let now = Instant::now();
                    if last_size.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                        self.metrics.db_size.set(i64::try_from(self.store.size_bytes()).unwrap_or(i64::MAX));
                        last_size = Some(now);
                    }
                    #[cfg(feature = "fault-injection")]
                    for held in self.faults.due(now) {
                        self.intercepted(held, now)?;
                    }
                    self.drain_backlogs();
                    let all_active = self.all_active();
                    let actions = self.core.handle(Event::Tick { all_active }, now);
                    self.execute(actions)?;
                    self.refresh_status();
                }
            }
        }
    }

    /// Hand one event to the core (through the test-only link faults) and do what it says.
    fn event(&mut self, event: Event<Libp2p>) -> Result<(), NodeError> {
        let now = Instant::now();
        #[cfg(feature = "fault-injection")]
        {
            let intercepted = self.faults.intercept(event, now);
            self.intercepted(intercepted, now)
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let actions = self.core.handle(event, now);
            self.execute(actions)
        }
    }

    /// Test-only: what the link faults let through reaches the core.
    #[cfg(feature = "fault-injection")]
    fn intercepted(
        &mut self,
        intercepted: crate::faults::Intercepted,
        now: Instant,
    ) -> Result<(), NodeError> {
        match intercepted {
            crate::faults::Intercepted::Pass(event) => {
                let actions = self.core.handle(*event, now);
                self.execute(actions)
            }
            crate::faults::Intercepted::Held => Ok(()),
            crate::faults::Intercepted::Dropped(ignore) => {
                if let Some((id, source)) = ignore {
                    self.report(&id, &source, MessageAcceptance::Ignore);
                }
                Ok(())
            }
        }
    }

    /// Do the core's actions in order. A durable write that fails stops the node before
    /// anything after it (what it would have sent) is done.
    fn execute(&mut self, actions: Vec<Action<Libp2p>>) -> Result<(), NodeError> {
        let mut placed = Placements::default();
        for action in actions {
            match action {
                Action::Persist { batch, durable } => {
                    if durable {
                        self.store.write(batch)?;
                    } else if let Err(e) = self.store.write_lazy(batch) {
                        warn!(error = %e, "could not write");
                    }
                }
                Action::Publish { topic, kind, bytes } => {
                    let len = bytes.len();
                    match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                        Ok(_) => self.metrics.sent("gossip", kind, len),
                        Err(e) => debug!(kind, error = %e, "publish failed"),
                    }
                }
                Action::Send {
                    peer,
                    token,
                    kind,
                    bytes,
                } => {
                    self.metrics.sent("direct", kind, bytes.len());
                    let id = self.swarm.behaviour_mut().direct.send_request(&peer, bytes);
                    self.in_flight.insert(id, token);
                }
                Action::Place { coin, targets, msg } => {
                    placed.add(self.place(coin, &targets, msg));
                }
                Action::Deliver { coin, target, msg } => {
                    placed.add(self.deliver(coin, target, msg));
                }
                Action::Answer {
                    channel,
                    peer,
                    answer,
                } => {
                    let placements = std::mem::take(&mut placed);
                    self.answer(channel, peer, answer, &placements);
                }
                Action::Report {
                    id,
                    source,
                    verdict,
                } => {
                    let placements = std::mem::take(&mut placed);
                    self.report(&id, &source, verdict.finish(&placements));
                }
                Action::SignReply { reply, result } => {
                    let placements = std::mem::take(&mut placed);
                    let _ = reply.send(core::admission::finish(result, &placements));
                }
                Action::Approve {
                    coin,
                    target,
                    msg,
                    reply,
                } => self.approve(coin, target, msg, reply),
                Action::Dial(peer) => {
                    if let Err(e) = self.swarm.dial(DialOpts::peer_id(peer).build()) {
                        debug!(%peer, error = %e, "dial failed");
                    }
                }
                Action::DialAddr(addr) => {
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        debug!(%addr, error = %e, "bootstrap dial failed");
                    }
                }
                Action::AddAddress { peer, addr } => {
                    self.swarm.add_peer_address(peer, addr.clone());
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
                Action::KadBootstrap => {
                    // A lookup of our own id answers with the validators closest to us and
                    // their addresses (`Event::Discovered`); bootstrap refreshes the buckets.
                    let local = *self.swarm.local_peer_id();
                    self.swarm.behaviour_mut().kad.get_closest_peers(local);
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                Action::Close(connection) => {
                    self.swarm.close_connection(connection);
                }
                Action::TickProcessors { reachable } => {
                    let now_ms =
                        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    for topic in self
                        .bus
                        .values()
                        .chain(self.retiring.iter().map(|r| &r.topic))
                    {
                        topic.tick(now_ms, reachable.clone());
                    }
                }
            }
        }
        Ok(())
    }

    fn answer(
        &mut self,
        channel: ResponseChannel<Vec<u8>>,
        peer: PeerId,
        answer: core::Answer,
        placed: &Placements,
    ) {
        let Some(response) = answer.finish(placed) else {
            return; // a processor queue was full: the sender retries once it has caught up
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

    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    fn all_active(&self) -> bool {
        self.snapshots
            .read()
            .map(|s| s.len() == self.bus.len() && s.values().all(|p| p.phase == Phase::Active))
            .unwrap_or(false)
    }

    /// `POST /sign`: the core decides from what the coin's processors show now.
    fn on_sign(&mut self, cmd: SignCommand) -> Result<(), NodeError> {
        let targets = self.sign_targets(cmd.coin);
        self.event(Event::Sign {
            request: core::SignRequest {
                coin: cmd.coin,
                messages: cmd.messages,
                session: cmd.session,
                reference: cmd.reference,
            },
            targets,
            reply: cmd.reply,
        })
    }

    /// The processors of `coin` that could sign: the current session's and the retiring ones.
    fn sign_targets(&self, coin: Coin) -> Vec<TargetView> {
        let view = |target, snapshots: &Snapshots, topic: &bus::Topic, session| {
            // Read in place: a snapshot holds every peer and vote, and this runs per request.
            let (can_sign, queued, vault) = snapshots
                .read()
                .ok()
                .and_then(|s| {
                    s.get(&coin).map(|p| {
                        let vault = p.vault.as_ref().map(|v| v.context);
                        (p.can_sign, p.signing.queued, vault)
                    })
                })
                .unwrap_or((false, 0, None));
            TargetView {
                target,
                session,
                can_sign,
                queued,
                vault,
                has_room: topic.has_room(),
            }
        };
        let mut targets = Vec::new();
        if let Some(topic) = self.bus.get(&coin) {
            let session = self.core.session();
            targets.push(view(Target::Current(coin), &self.snapshots, topic, session));
        }
        for (i, r) in self.retiring.iter().enumerate() {
            if r.record.coin == coin {
                let session = r.record.session;
                targets.push(view(Target::Retiring(i), &r.snapshots, &r.topic, session));
            }
        }
        targets
    }

    fn on_control(&mut self, cmd: ControlCommand) -> Result<(), NodeError> {
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
                let events = self.faults.set(cut, delayed, delay, lose_from, lose_kind);
                let now = Instant::now();
                for event in events.into_iter().chain([Event::ReAnnounce]) {
                    // A healed peer hears what it missed.
                    let actions = self.core.handle(event, now);
                    self.execute(actions)?;
                }
            }
            #[cfg(feature = "fault-injection")]
            ControlCommand::StallProcessor {
                coin,
                stalled,
                reply,
            } => {
                let result = match self.bus.get(&coin) {
                    Some(topic) => self.faults.stall(coin, stalled, topic),
                    None => Err(format!("{coin} has no vault in this network")),
                };
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    /// Rebuild the status page's view (every 250 ms tick).
    fn refresh_status(&self) {
        let Ok(snapshots) = self.snapshots.read() else {
            return;
        };
        let status = crate::status_view::project(&self.core.status_input(
            &snapshots,
            &self.listen_addrs,
            &self.advertised,
        ));
        if let Ok(mut s) = self.status.write() {
            *s = status;
        }
    }
}
