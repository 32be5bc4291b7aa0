//! Runs one coin's [`Processor`] on its own thread: the DKG's curve arithmetic never stalls the
//! network loop. Every output is persisted before the `...Out` messages of the same step are
//! handed to the coordinator.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    thread,
    time::Instant,
};

use protocol::{
    keys::MessagingKey,
    messages::CoordinatorMessage,
    processor::{Output, Persist, Processor},
    vault::VaultStatus,
    Coin,
};
use storage::{
    Batch, CheaterKey, Cheaters, DkgVotes, IdentityKey, IdentityValue, Inbound, KeyShareRecord,
    KeyShares, NonceKey, NoncesUsed, RequestId, SignRequests, Store, VaultKey, Vaults, VoteKey,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    bus::{ProcessorCommand, ProcessorEvent, ProcessorSnapshot},
    inbound,
    metrics::Metrics,
};

/// Shared snapshots of every processor.
pub type Snapshots = Arc<RwLock<BTreeMap<Coin, ProcessorSnapshot>>>;

/// Everything a processor thread needs.
pub struct ProcessorTask {
    /// The machine.
    pub processor: Processor,
    /// The database.
    pub store: Arc<Store>,
    /// Commands from the coordinator.
    pub commands: mpsc::Receiver<ProcessorCommand>,
    /// Events to the coordinator.
    pub events: mpsc::Sender<ProcessorEvent>,
    /// Status.
    pub snapshots: Snapshots,
    /// Metrics.
    pub metrics: Metrics,
    /// Test-only malicious behaviour.
    #[cfg(feature = "fault-injection")]
    pub sabotage: Option<protocol::sabotage::Sabotage>,
    /// Durations and progress, for metrics and logs.
    pub timers: Timers,
    /// Messages this processor rejected, per validator named at fault (for the status page).
    pub rejections: BTreeMap<protocol::ValidatorId, PeerRejections>,
}

/// What one validator sent that this processor rejected: how many, and the latest.
#[derive(Clone, Debug, Default)]
pub struct PeerRejections {
    /// Messages rejected.
    pub count: u64,
    /// Kind of the latest.
    pub kind: &'static str,
    /// Why the latest was rejected.
    pub reason: String,
}

/// When things started, for the duration histograms and the progress log.
pub struct Timers {
    dkg_started: Instant,
    attempt: u32,
    sign_started: HashMap<[u8; 32], Instant>,
    progress: Option<(protocol::processor::Phase, (usize, usize))>,
}

/// Most signature requests timed at once.
const MAX_TIMED: usize = 4096;

impl Default for Timers {
    fn default() -> Self {
        Timers {
            dkg_started: Instant::now(),
            attempt: 0,
            sign_started: HashMap::new(),
            progress: None,
        }
    }
}

impl ProcessorTask {
    /// Start the thread.
    pub fn spawn(self) -> std::io::Result<thread::JoinHandle<()>> {
        let name = format!("processor-{}", self.processor.coin());
        thread::Builder::new().name(name).spawn(move || self.run())
    }

    fn run(mut self) {
        let coin = self.processor.coin();
        // Our own exclusion votes first: a restarted node never votes differently in a round.
        let mut outputs = match self.store.dkg_votes(coin) {
            Ok(votes) => self.processor.restore_votes(votes),
            Err(e) => {
                let _ = self
                    .events
                    .blocking_send(ProcessorEvent::Fatal(e.to_string()));
                return;
            }
        };
        outputs.extend(self.processor.start());
        // A restart: replay what was received before. With a decided vault the DKG messages are
        // no-ops, but the peers' keys of steps 8-12 are learnt again.
        let log = match self.store.inbound_for(coin) {
            Ok(log) => log,
            Err(e) => {
                let _ = self
                    .events
                    .blocking_send(ProcessorEvent::Fatal(e.to_string()));
                return;
            }
        };
        if !log.is_empty() {
            info!(%coin, messages = log.len(), "replaying stored inbound messages");
        }
        for m in log {
            outputs.extend(self.input(m));
        }
        if !self.apply(outputs) {
            return;
        }
        while let Some(cmd) = self.commands.blocking_recv() {
            // Approvals expire by the wall clock; the machine reads it from here.
            self.processor.set_unix_time(unix_now());
            let ok = match cmd {
                ProcessorCommand::Approve { msg, reply } => self.approve(msg, reply),
                ProcessorCommand::Input(msg) => {
                    let outputs = self.input(*msg);
                    self.apply(outputs)
                }
                ProcessorCommand::Replay { latest, seqs } => self.replay(latest, seqs),
                #[cfg(feature = "fault-injection")]
                ProcessorCommand::Stall(flag) => {
                    warn!(%coin, "test-only: this processor takes no command until released");
                    while flag.load(std::sync::atomic::Ordering::Relaxed) {
                        thread::sleep(std::time::Duration::from_millis(20));
                    }
                    info!(%coin, "test-only: processor released");
                    true
                }
                ProcessorCommand::Tick { now_ms, reachable } => {
                    let outputs = self.processor.tick(now_ms, reachable);
                    self.apply(outputs)
                }
                ProcessorCommand::Rotate(reply) => {
                    let seq = self.processor.messaging_key().seq + 1;
                    let result = MessagingKey::generate(seq)
                        .and_then(|k| self.processor.rotate_messaging_key(k));
                    match result {
                        Ok(o) => {
                            let ok = self.apply(o);
                            let k = self.processor.messaging_key();
                            let _ = reply.send(Ok((k.public, k.seq)));
                            ok
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                            true
                        }
                    }
                }
            };
            if !ok {
                return;
            }
        }
    }

    /// This operator's approval of a request (`POST /sign`): answered with the id once it is
    /// stored (and announced), or with the reason it was refused. A request already finished
    /// here is answered from its record.
    fn approve(
        &mut self,
        msg: protocol::messages::SignatureRequested,
        reply: tokio::sync::oneshot::Sender<Result<[u8; 32], crate::core::SignRefusal>>,
    ) -> bool {
        use crate::core::SignRefusal;
        let coin = self.processor.coin();
        let id = msg.id;
        match self.store.get::<SignRequests>(&RequestId(id)) {
            Ok(Some(r)) if r.status != protocol::vault::SignStatus::Pending => {
                let _ = reply.send(Ok(id));
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = reply.send(Err(SignRefusal::Storage(e)));
                return true;
            }
        }
        match self
            .processor
            .handle(CoordinatorMessage::SignatureRequested(msg))
        {
            Ok(outputs) => {
                let approved = outputs.iter().any(|o| {
                    matches!(
                        o,
                        Output::Bus(protocol::messages::ProcessorMessage::SignApproval(_))
                    )
                });
                let ok = self.apply(outputs);
                if ok {
                    if approved {
                        info!(%coin, request = %hex::encode(id), "approved by this operator");
                    }
                    let _ = reply.send(Ok(id));
                }
                ok
            }
            Err(e) => {
                info!(%coin, request = %hex::encode(id), reason = %e, "approval refused");
                let _ = reply.send(Err(SignRefusal::Refused(e.to_string())));
                true
            }
        }
    }

    /// Messages that waited in the inbound table while our queue was full: the latest of some
    /// `Replace` slots, then this coin's `Log` entries that arrived in `seqs`, in arrival order.
    fn replay(&mut self, latest: Vec<CoordinatorMessage>, seqs: Option<(u64, u64)>) -> bool {
        let coin = self.processor.coin();
        let mut log = Vec::new();
        if let Some((from, upto)) = seqs {
            match self.store.scan::<Inbound>(&[coin.id()]) {
                Ok(entries) => log = entries,
                Err(e) => {
                    let _ = self
                        .events
                        .blocking_send(ProcessorEvent::Fatal(e.to_string()));
                    return false;
                }
            }
            log.retain(|(k, _)| (from..=upto).contains(&k.seq));
            log.sort_by_key(|(k, _)| k.seq);
        }
        info!(%coin, messages = latest.len() + log.len(), "taking the messages that waited in the inbound table");
        let mut outputs = Vec::new();
        for m in latest.into_iter().chain(log.into_iter().map(|(_, m)| m)) {
            outputs.extend(self.input(m));
        }
        self.apply(outputs)
    }

    /// Hand one `...In` message to the processor; log and drop whatever it rejects (the message
    /// itself, or buffered ones it could check now). Returns what to persist and send.
    fn input(&mut self, msg: CoordinatorMessage) -> Vec<Output> {
        let approval = matches!(
            &msg,
            CoordinatorMessage::GeneralIn(protocol::messages::GeneralIn {
                msg: protocol::messages::GeneralMessage::SignApproval(_),
                ..
            })
        );
        let result = self.processor.handle(msg.clone());
        if approval && result.is_ok() {
            self.metrics.approval(self.processor.coin(), "received");
        }
        let mut rejected = self.processor.take_rejected();
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                rejected.push((msg, e));
                Vec::new()
            }
        };
        for (m, e) in rejected {
            self.reject(m, e);
        }
        outputs
    }

    /// Log a rejected message and drop it from the inbound table: what failed its checks is not
    /// kept, and the sender's later valid message takes its place.
    fn reject(&mut self, msg: CoordinatorMessage, e: protocol::ProtocolError) {
        let coin = self.processor.coin();
        let kind = msg.kind();
        let peer = e.culprit().map(|p| p.to_string()).unwrap_or_default();
        // A retiring vault's processor shares the coin's inbound log with the current session's
        // processor: what it does not take is not deleted from there.
        let retiring = self.processor.role() == protocol::processor::Role::Retiring;
        warn!(%coin, %peer, kind, error = %e, retiring, "processor rejected message");
        self.metrics.rejected(kind, e.label());
        // Named where a validator is at fault (one entry per validator of the definition).
        let me = self.processor.me();
        if let Some(v) = e
            .culprit()
            .filter(|v| *v != me && self.processor.is_validator(v))
        {
            self.metrics.peer_rejected(coin, v);
            let r = self.rejections.entry(v.clone()).or_default();
            r.count += 1;
            r.kind = kind;
            r.reason = e.to_string();
        }
        if retiring {
            return;
        }
        if let Some((slot, _)) = inbound::slot_of(coin, &msg) {
            if let Err(e) = self.store.delete_inbound_matching(&slot, &msg) {
                warn!(%coin, error = %e, "could not drop a rejected inbound message");
            }
        }
    }

    /// Store a key share under its own vault's key (the DKG's session, not whatever vault the
    /// processor holds now). An active vault's share of another DKG is never overwritten:
    /// funds at its address need it.
    fn key_share(
        &self,
        batch: &mut Batch,
        key: VaultKey,
        context: [u8; 32],
        keys: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<(), storage::StorageError> {
        let active_elsewhere = self
            .store
            .get::<Vaults>(&key)?
            .is_some_and(|v| v.status == VaultStatus::Active && v.context != context);
        if active_elsewhere {
            error!(coin = %key.coin, session = key.session, "a key share of another DKG would replace an active vault's; keeping the active one");
            return Ok(());
        }
        let record = KeyShareRecord {
            context,
            keys: keys.to_vec(),
        };
        batch.put::<KeyShares>(&key, &record).map(|_| ())
    }

    /// Persist, then hand the messages over. Returns false on a fatal storage error.
    fn apply(&mut self, outputs: Vec<Output>) -> bool {
        let coin = self.processor.coin();
        #[cfg(feature = "fault-injection")]
        let outputs = match self.sabotage {
            Some(how) => self.processor.sabotage(how, outputs),
            None => outputs,
        };
        let mut batch = Batch::new();
        let mut messages = Vec::new();
        for o in outputs {
            let r = match o {
                Output::Bus(m) => {
                    if matches!(m, protocol::messages::ProcessorMessage::SignApproval(_)) {
                        self.metrics.approval(coin, "given");
                    }
                    messages.push(m);
                    Ok(())
                }
                Output::Persist(Persist::Vault(v)) => {
                    let seconds = self.timers.dkg_started.elapsed().as_secs_f64();
                    match v.status {
                        VaultStatus::Active => self.metrics.dkg_outcome(coin, "active", seconds),
                        VaultStatus::Failed => self.metrics.dkg_outcome(coin, "failed", seconds),
                        VaultStatus::Excluded => {
                            self.metrics.dkg_outcome(coin, "excluded", seconds)
                        }
                        VaultStatus::Pending => {}
                    }
                    match v.status {
                        VaultStatus::Active => info!(%coin, address = %v.address, "vault active"),
                        VaultStatus::Failed => warn!(%coin, reason = ?v.reason, "DKG failed"),
                        VaultStatus::Excluded => {
                            warn!(%coin, reason = ?v.reason, "left out of the DKG by the other participants")
                        }
                        VaultStatus::Pending => {
                            info!(%coin, address = %v.address, "key share computed; waiting for every participant's PublicAddressAvailable")
                        }
                    }
                    batch
                        .put::<Vaults>(
                            &VaultKey {
                                coin,
                                session: v.session,
                            },
                            &v,
                        )
                        .map(|_| ())
                }
                Output::Persist(Persist::KeyShare {
                    coin,
                    session,
                    context,
                    keys,
                }) => self.key_share(&mut batch, VaultKey { coin, session }, context, keys),
                Output::Persist(Persist::MessagingKey { coin, key }) => batch
                    .put::<storage::Identity>(
                        &IdentityKey::Messaging(coin),
                        &IdentityValue::Messaging(key),
                    )
                    .map(|_| ()),
                Output::Persist(Persist::NonceUsed { coin, id, attempt }) => batch
                    .put::<NoncesUsed>(&NonceKey { coin, id, attempt }, &())
                    .map(|_| ()),
                Output::Persist(Persist::ForgetNonces { coin, used }) => {
                    for (id, attempt) in used {
                        batch.delete::<NoncesUsed>(&NonceKey { coin, id, attempt });
                    }
                    Ok(())
                }
                Output::Persist(Persist::SignRecord { record, failure }) => {
                    self.sign_record(&mut batch, record, failure)
                }
                Output::Persist(Persist::ForgetSignRecord { id }) => {
                    self.forget_record(&mut batch, id)
                }
                Output::Persist(Persist::Vote(v)) => batch
                    .put::<DkgVotes>(
                        &VoteKey {
                            coin,
                            context: v.context,
                            round: v.round,
                        },
                        &v,
                    )
                    .map(|_| ()),
                Output::Persist(Persist::Cheater(c)) => {
                    warn!(%coin, peer = %c.peer, request = %hex::encode(c.id), attempt = c.attempt, reason = %c.reason, "signer cheated");
                    self.metrics.cheater(coin, &c.peer);
                    let key = CheaterKey {
                        coin,
                        id: c.id,
                        attempt: c.attempt,
                        peer: c.peer.clone(),
                    };
                    batch.put::<Cheaters>(&key, &c).map(|_| ())
                }
            };
            if let Err(e) = r {
                let _ = self
                    .events
                    .blocking_send(ProcessorEvent::Fatal(e.to_string()));
                return false;
            }
        }
        if !batch.is_empty() {
            if let Err(e) = self.store.write(batch) {
                let _ = self
                    .events
                    .blocking_send(ProcessorEvent::Fatal(e.to_string()));
                return false;
            }
        }
        self.publish_snapshot();
        for m in messages {
            if self
                .events
                .blocking_send(ProcessorEvent::Out(coin, Box::new(m)))
                .is_err()
            {
                return false; // coordinator gone: shutting down
            }
        }
        true
    }

    /// A request's record: a finished one (done or failed) is never overwritten, so no request
    /// is answered twice; a pending one keeps every approval and the content it already had
    /// (the origination's and the approval book's writes never undo each other).
    fn sign_record(
        &mut self,
        batch: &mut Batch,
        mut r: protocol::vault::SignRecord,
        failure: Option<protocol::vault::SignFailure>,
    ) -> Result<(), storage::StorageError> {
        use protocol::vault::{SignFailure, SignStatus};
        let coin = r.coin;
        if let Some(old) = self.store.get::<SignRequests>(&RequestId(r.id))? {
            if old.status != SignStatus::Pending {
                return Ok(());
            }
            merge_record(&mut r, old);
        }
        if failure == Some(SignFailure::Expired) {
            self.metrics.sign_expired(coin);
        }
        let id = hex::encode(r.id);
        match r.status {
            SignStatus::Pending => {
                info!(%coin, request = %id, attempt = r.attempt, signers = ?r.signers.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "signing attempt")
            }
            SignStatus::Done => {
                info!(%coin, request = %id, attempt = r.attempt, messages = r.messages.len(), "signed")
            }
            SignStatus::Failed => {
                warn!(%coin, request = %id, reason = ?r.reason, "signing failed")
            }
        }
        if r.origin == *self.processor.me() {
            let timers = &mut self.timers.sign_started;
            if r.status == SignStatus::Pending {
                if timers.len() < MAX_TIMED {
                    timers.entry(r.id).or_insert_with(Instant::now);
                }
            } else {
                let (outcome, reason) = if r.status == SignStatus::Done {
                    ("done", "")
                } else {
                    let failure = failure.unwrap_or(protocol::vault::SignFailure::Other);
                    ("failed", failure.label())
                };
                self.metrics.sign_outcome(coin, outcome, reason);
                if let Some(start) = timers.remove(&r.id) {
                    self.metrics
                        .sign_duration(coin, outcome, start.elapsed().as_secs_f64());
                }
            }
        }
        batch.put::<SignRequests>(&RequestId(r.id), &r).map(|_| ())
    }

    /// An expired request nobody here approved: its record goes, unless it is finished or our
    /// operator approved it meanwhile.
    fn forget_record(
        &mut self,
        batch: &mut Batch,
        id: [u8; 32],
    ) -> Result<(), storage::StorageError> {
        let me = self.processor.me().clone();
        if let Some(old) = self.store.get::<SignRequests>(&RequestId(id))? {
            if old.status == protocol::vault::SignStatus::Pending && !old.approved_by(&me) {
                batch.delete::<SignRequests>(&RequestId(id));
            }
        }
        Ok(())
    }

    fn publish_snapshot(&mut self) {
        let p = &self.processor;
        // A new attempt restarts the DKG clock; a phase that moved on is logged.
        if p.attempt() != self.timers.attempt {
            self.timers.attempt = p.attempt();
            self.timers.dkg_started = Instant::now();
        }
        let progress = (p.phase(), p.progress());
        if self.timers.progress != Some(progress)
            && progress.0 != protocol::processor::Phase::Active
        {
            let (phase, (have, want)) = progress;
            info!(coin = %p.coin(), attempt = p.attempt(), "DKG {}: {phase:?} {have}/{want}", p.coin());
        }
        self.timers.progress = Some(progress);
        let snap = ProcessorSnapshot {
            phase: p.phase(),
            progress: p.progress(),
            vault: p.vault().cloned(),
            messaging: (p.messaging_key().public, p.messaging_key().seq),
            peers: p.peers().clone(),
            signing: p.signing_status(),
            can_sign: p.can_sign(),
            attempt: p.attempt(),
            participants: p.participants().to_vec(),
            excluded: p.excluded().to_vec(),
            votes: p.votes(),
            rejections: self.rejections.clone(),
        };
        for e in &snap.excluded {
            self.metrics.excluded(p.coin(), e);
        }
        self.metrics.attempt(p.coin(), i64::from(snap.attempt));
        self.metrics
            .ceremonies(p.coin(), snap.signing.ceremonies as i64);
        self.metrics.phase(p.coin(), snap.phase.as_gauge());
        if let Ok(mut s) = self.snapshots.write() {
            s.insert(p.coin(), snap);
        }
    }
}

/// Wall-clock Unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fold what a stored pending record `old` has into its new version `r`: approvals `r` lacks,
/// and the content (messages, reference) when `r` does not carry it.
fn merge_record(r: &mut protocol::vault::SignRecord, old: protocol::vault::SignRecord) {
    if r.messages.is_empty() {
        r.messages = old.messages;
    }
    if r.reference.is_none() {
        r.reference = old.reference;
    }
    for a in old.approvals {
        if !r.approved_by(&a.approver) {
            r.expires_at = if r.approvals.is_empty() {
                a.expires_at
            } else {
                r.expires_at.min(a.expires_at)
            };
            r.approvals.push(a);
        }
    }
}
