//! Signing ceremonies of a coin's processor: t of the vault's n validators sign a request's
//! messages with FROST, over the same bus and sealing as the DKG.
//!
//! 1. The node's API hands its processor a [`SignatureRequested`]; that processor is the
//!    request's **originator**. It picks a signer set of t validators (itself and t - 1 reachable
//!    ones, cheaters left out, slow ones last), signs a [`SignRequest`] with its processor
//!    signature key and announces it on the general partition.
//! 2. Each signer checks the request, **marks (id, attempt) as preprocessed on disk**
//!    ([`Persist::NonceUsed`], persisted before any output of the same call leaves), and sends
//!    every other signer its sealed preprocess ([`EncryptedPreprocessOut`], carrying the request so
//!    it needs no ordering with the gossip). A signer never preprocesses the same (id, attempt)
//!    twice, across restarts too: nonces are fresh randomness and never stored, so an attempt cut
//!    by a restart is abandoned and the originator's next attempt takes over.
//! 3. With every preprocess in, each signer sends its sealed signature shares
//!    ([`EncryptedSignatureShareOut`]); with every share in, each aggregates and checks the
//!    signatures against the group key, stores them and announces [`SignatureAvailable`]. Every
//!    other validator checks them with [`sign::verify`] and stores them.
//! 4. **Liveness**: the originator gives each attempt a deadline. Signers whose preprocess or
//!    shares did not arrive are named, put last in later selections, and a new attempt (a new
//!    session id) runs with another set while t validators are reachable; otherwise the request
//!    fails with a reason that names who was missing.
//! 5. **Cheaters**: an invalid preprocess or share names its sender (modular-frost identifies
//!    it); it is reported ([`Persist::Cheater`]) and left out of the request's later attempts.
//!
//! Why one file of this size: it is the whole life of a request (admission, attempts,
//! preprocess, share, aggregation, cheaters, timeouts) on both the originator's and a signer's
//! side, which share the ceremony map and the used-nonce markers; the FROST calls themselves
//! are in `sign.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sha2::{Digest, Sha256};

use crate::{
    approvals::{self, Book, WaitingView},
    catch_up::CatchUp,
    error::{ProtocolError, Result},
    ids::ValidatorId,
    keys::verify_processor_signature,
    messages::*,
    party::Party,
    processor::{Output, Persist},
    seal::SealKind,
    sign::{self, SignError, SignRound1, SignRound2, VaultKeys},
    vault::{CheaterReport, SignFailure, SignRecord, SignStatus, VaultRecord, VaultStatus},
};

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 64;
/// Most message bytes in one request (so a request fits in one wire message).
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;
/// Attempts a request may take before it fails.
pub const MAX_ATTEMPTS: u32 = 8;
/// Cheater reports kept for status.
const MAX_CHEATER_REPORTS: usize = 64;
/// Finished request ids remembered to drop late duplicates.
const RECENT_DONE: usize = 4096;
const REQUEST_DOMAIN: &[u8] = b"SignRequest";
/// The domain of the originator's signature over a [`PreprocessSet`].
pub const PREPROCESS_SET_DOMAIN: &[u8] = b"SignPreprocesses";

/// Bounds and timeouts of the signing ceremonies.
#[derive(Clone, Copy, Debug)]
pub struct SigningConfig {
    /// How long the originator waits for an attempt's preprocesses and shares.
    pub attempt_timeout_ms: u64,
    /// Ceremonies this processor originates at once; more requests wait in a queue.
    pub max_originating: usize,
    /// Requests waiting for a slot; past it, requests are refused.
    pub max_queued: usize,
    /// Ceremonies this processor takes part in at once, in all (each originator has at most
    /// twice `max_originating` of them, so this only bounds memory).
    pub max_participating: usize,
    /// How long this node's approvals count (seconds): a request fewer than t validators
    /// approved in that time expires.
    pub approval_ttl_s: u64,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            attempt_timeout_ms: 10_000,
            max_originating: 32,
            max_queued: 1024,
            max_participating: 64 * crate::network::MAX_VALIDATORS,
            approval_ttl_s: approvals::DEFAULT_TTL_S,
        }
    }
}

/// Check a request's messages for `coin`: count, total size, each message's length.
pub fn check_messages(coin: crate::Coin, messages: &[Vec<u8>]) -> std::result::Result<(), String> {
    if messages.is_empty() {
        return Err("no messages to sign".into());
    }
    if messages.len() > MAX_MESSAGES {
        return Err(format!(
            "{} messages; at most {MAX_MESSAGES} per request",
            messages.len()
        ));
    }
    let total: usize = messages.iter().map(Vec::len).sum();
    if total > MAX_REQUEST_BYTES {
        return Err(format!(
            "{total} message bytes; at most {MAX_REQUEST_BYTES} per request"
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        sign::message_len_ok(coin, m.len()).map_err(|e| format!("message {i}: {e}"))?;
    }
    Ok(())
}

/// Most messages per request with `t` signers: the originator's preprocess set (t signers ×
/// one preprocess of at most 66 bytes per message) must fit in one wire message. 64 up to
/// t = 55; 41 at t = 86 (n = 128); 20 at t = 171 (n = 256).
pub fn max_messages(t: u16) -> usize {
    let per_message = usize::from(t.max(1)) * 72;
    ((crate::messages::MAX_MESSAGE_SIZE - 8 * 1024) / per_message).clamp(1, MAX_MESSAGES)
}

/// A request of `count` messages must fit the preprocess set of `t` signers.
fn check_set_size(t: u16, count: usize) -> std::result::Result<(), String> {
    let max = max_messages(t);
    if count > max {
        return Err(format!(
            "{count} messages; at most {max} per request with {t} signers"
        ));
    }
    Ok(())
}

/// Signing state for status and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SigningStatus {
    /// Requests this node originates with an attempt running.
    pub originating: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Ceremonies (any originator) not finished.
    pub ceremonies: usize,
    /// Recent cheater reports, oldest first.
    pub cheaters: Vec<CheaterReport>,
    /// Requests known here that are not finished (waiting for approvals, or signing).
    pub unfinished: usize,
    /// Requests waiting for approvals (at most [`MAX_WAITING_SHOWN`], earliest expiry first).
    pub waiting: Vec<WaitingView>,
}

/// Requests waiting for approvals listed in [`SigningStatus::waiting`].
pub const MAX_WAITING_SHOWN: usize = 32;

/// Where one attempt's ceremony stands. Each stage owns the machines it needs, consumed when
/// the next one starts: a preprocess's nonces can be used for one share only.
enum Stage {
    /// Our preprocess is out (one machine per message). The originator waits for every other
    /// signer's; a signer waits for the originator's set of them all.
    AwaitingPreprocesses(Vec<SignRound1>),
    /// The originator only: its share is made, the set is out; waiting for every other
    /// signer's shares.
    AwaitingShares(Vec<SignRound2>),
    /// Signed, failed, timed out or superseded: nothing more happens in it.
    Done,
}

struct Ceremony {
    request: SignRequest,
    session: [u8; 32],
    indices: BTreeMap<ValidatorId, u16>,
    stage: Stage,
    /// Our own preprocesses (the originator puts them in the set it hands out).
    own: Vec<Vec<u8>>,
    preprocesses: BTreeMap<u16, Vec<Vec<u8>>>,
    shares: BTreeMap<u16, Vec<Vec<u8>>>,
    started: u64,
}

impl Ceremony {
    fn done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }
}

/// `vault` (named by `from`'s `what`) must be our active vault's DKG context.
fn check_active_vault(cx: &Scope, from: &ValidatorId, vault: &[u8; 32], what: &str) -> Result<()> {
    let coin = cx.party.coin();
    let ours = cx
        .vault
        .filter(|v| v.status == VaultStatus::Active)
        .ok_or_else(|| ProtocolError::peer(from, format!("our {coin} vault is not active")))?;
    if *vault != ours.context {
        return Err(ProtocolError::peer(
            from,
            format!("{what} for another vault"),
        ));
    }
    Ok(())
}

/// A ceremony's key: the nonce slot of (request, originator), and the attempt. Several
/// approvers may originate one request; each has its own attempts, so two of them never make a
/// signer preprocess twice under one (slot, attempt).
type CeremonyKey = ([u8; 32], u32);

/// The slot of `origin`'s attempts at request `id` (also the `nonces_used` key's id).
pub fn nonce_slot(id: &[u8; 32], origin: &ValidatorId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vaultd nonce slot v1");
    h.update(id);
    h.update(origin.as_bytes());
    h.finalize().into()
}

/// The markers among `used` that belong to no unfinished request of `pending` with any of
/// `validators` (every validator this node may sign with, of every vault) as its originator.
/// They may be deleted: a finished request left the book, and without this node's approval
/// there nothing is preprocessed (see `docs/SIGNING.md`, "Nonces").
pub fn stale_markers(
    used: &[([u8; 32], u32)],
    pending: &[SignRecord],
    validators: &[ValidatorId],
) -> Vec<([u8; 32], u32)> {
    let live: BTreeSet<[u8; 32]> = pending
        .iter()
        .filter(|r| r.status == SignStatus::Pending)
        .flat_map(|r| validators.iter().map(move |v| nonce_slot(&r.id, v)))
        .collect();
    used.iter()
        .filter(|(slot, _)| !live.contains(slot))
        .copied()
        .collect()
}

struct Origination {
    record: SignRecord,
    cheaters: BTreeMap<ValidatorId, String>,
    slow: BTreeMap<ValidatorId, String>,
    /// `None` while queued.
    deadline: Option<u64>,
    /// When the current attempt started.
    attempt_started: u64,
}

/// What signing reads of the rest of the processor: who we are (and our peers' keys), and the
/// vault whose key share signs.
pub(crate) struct Scope<'a> {
    pub(crate) party: &'a Party,
    pub(crate) vault: Option<&'a VaultRecord>,
}

impl Scope<'_> {
    /// The vault's participants (none before a vault exists).
    fn participants(&self) -> &[ValidatorId] {
        self.vault.map_or(&[], |v| v.participants.as_slice())
    }

    /// `v`'s FROST index: its 1-based position among the vault's participants.
    fn member_index(&self, v: &ValidatorId) -> Option<u16> {
        self.participants()
            .iter()
            .position(|p| p == v)
            .and_then(|i| u16::try_from(i + 1).ok())
    }

    /// The participant with FROST index `l`.
    fn member_at(&self, l: u16) -> Option<&ValidatorId> {
        usize::from(l)
            .checked_sub(1)
            .and_then(|i| self.participants().get(i))
    }
}

/// The signing part of a processor: its key share, the ceremonies it takes part in, the
/// requests it originates, and the used-nonce markers.
#[derive(Default)]
pub(crate) struct Signing {
    config: SigningConfig,
    now: u64,
    reachable: BTreeSet<ValidatorId>,
    keys: Option<VaultKeys>,
    /// Wall clock (Unix seconds), for approvals' expiry.
    unix: u64,
    ceremonies: BTreeMap<CeremonyKey, Ceremony>,
    originated: BTreeMap<[u8; 32], Origination>,
    queue: VecDeque<[u8; 32]>,
    used: BTreeSet<CeremonyKey>,
    book: Book,
    /// After a restart: announce our approvals of unfinished requests again.
    reannounce: bool,
    /// What to announce again after a partition (`catch_up.rs`).
    catch_up: CatchUp,
    recent_done: BTreeSet<[u8; 32]>,
    recent_order: VecDeque<[u8; 32]>,
    cheaters: VecDeque<CheaterReport>,
    slow_until: BTreeMap<ValidatorId, u64>,
}

impl Signing {
    /// The processor's clock (monotonic milliseconds, from the last tick).
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// The wall clock (Unix seconds) that approvals' expiry is read against.
    pub(crate) fn set_unix_time(&mut self, unix: u64) {
        self.unix = unix;
    }

    /// A new DKG attempt: the key share of the previous one can no longer sign.
    pub(crate) fn forget_keys(&mut self) {
        self.keys = None;
    }
}

/// The session id of a request's attempt: what every signer's transcript and seals bind.
pub fn session(network: &str, request: &SignRequest) -> [u8; 32] {
    let unsigned = SignRequest {
        signature: Vec::new(),
        ..request.clone()
    };
    let mut h = Sha256::new();
    h.update(b"vaultd sign session v1");
    h.update((network.len() as u64).to_be_bytes());
    h.update(network.as_bytes());
    h.update(postcard::to_stdvec(&unsigned).unwrap_or_default());
    h.finalize().into()
}

/// `request` signed by `party` as its originator.
#[cfg(feature = "fault-injection")]
pub(crate) fn sign_request(party: &Party, mut request: SignRequest) -> SignRequest {
    request.signature = party.signer().sign(REQUEST_DOMAIN, &request_body(&request));
    request
}

fn request_body(request: &SignRequest) -> Vec<u8> {
    let unsigned = SignRequest {
        signature: Vec::new(),
        ..request.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}

fn preprocess_set_body(set: &PreprocessSet) -> Vec<u8> {
    postcard::to_stdvec(set).unwrap_or_default()
}

fn message_session(session: &[u8; 32], i: usize) -> Vec<u8> {
    let mut s = session.to_vec();
    s.extend_from_slice(&(i as u32).to_be_bytes());
    s
}

impl Signing {
    /// Replace the signing bounds and timeouts.
    pub(crate) fn set_config(&mut self, config: SigningConfig) {
        self.config = config;
    }

    /// Load the vault's key share (stored `ThresholdKeys`) so the processor can sign.
    pub(crate) fn load_keys(&mut self, coin: crate::Coin, serialized: &[u8]) -> Result<()> {
        let keys =
            VaultKeys::load(coin, serialized).map_err(|e| ProtocolError::Key(e.to_string()))?;
        self.keys = Some(keys);
        Ok(())
    }

    /// The key this vault's signatures verify under (see [`VaultKeys::verifying_key`]).
    pub(crate) fn verifying_key(&self) -> Option<Vec<u8>> {
        self.keys.as_ref().map(VaultKeys::verifying_key)
    }

    /// After a restart: the (slot, attempt) pairs already preprocessed, the unfinished
    /// requests with their approvals (ours are announced again at the next tick; one this node
    /// approved is originated again once t approved) and past cheater reports.
    pub(crate) fn restore(
        &mut self,
        cx: &Scope,
        used: impl IntoIterator<Item = ([u8; 32], u32)>,
        pending: Vec<SignRecord>,
        cheaters: Vec<CheaterReport>,
    ) {
        self.used.extend(used);
        let vault = cx.vault.map(|v| v.context);
        for mut record in pending {
            // Only requests for this very vault (a retiring vault of the same coin restores
            // its own).
            if record.status != SignStatus::Pending || Some(record.vault) != vault {
                continue;
            }
            record.signers.clear();
            self.book.entry(record);
        }
        self.reannounce = true;
        for c in cheaters {
            self.push_cheater(c);
        }
    }

    /// Signing state for status.
    pub(crate) fn status(&self, me: &ValidatorId) -> SigningStatus {
        let s = self;
        SigningStatus {
            originating: s
                .originated
                .values()
                .filter(|o| o.deadline.is_some())
                .count(),
            queued: s.queue.len(),
            ceremonies: s.ceremonies.values().filter(|c| !c.done()).count(),
            cheaters: s.cheaters.iter().cloned().collect(),
            unfinished: s.book.len(),
            waiting: s
                .book
                .waiting(me, MAX_WAITING_SHOWN, |id| s.originated.contains_key(id)),
        }
    }

    /// Whether the vault can sign now (active, key share loaded).
    pub(crate) fn can_sign(&self, cx: &Scope) -> bool {
        self.keys.is_some() && cx.vault.is_some_and(|v| v.status == VaultStatus::Active)
    }

    /// Time passes: `now_ms` is a monotonic clock, `reachable` the validators the node is
    /// connected to (read by the next [`Signing::tick`] and every selection until then).
    pub(crate) fn set_clock(&mut self, now_ms: u64, reachable: BTreeSet<ValidatorId>) {
        self.now = now_ms;
        self.reachable = reachable;
    }

    /// Requests past their expiry end, our approvals are announced again after a restart,
    /// approved requests are originated, attempts past their deadline are retried with another
    /// signer set, queued requests start, and stale ceremonies are dropped.
    pub(crate) fn tick(&mut self, cx: &Scope, out: &mut Vec<Output>) {
        self.expire(cx, out);
        if std::mem::take(&mut self.reannounce) {
            for id in self.book.ids() {
                let Some(e) = self.book.get(&id) else {
                    continue;
                };
                let ours = e
                    .record
                    .approvals
                    .iter()
                    .find(|a| a.approver == *cx.party.me());
                if let Some(a) = ours {
                    out.push(Output::Bus(ProcessorMessage::SignApproval(a.clone())));
                }
            }
        }
        // Our approvals of requests still pending, announced again now and then: a validator
        // cut off when they were gossiped gets them after the cut heals.
        let me = cx.party.me();
        let ours: BTreeSet<[u8; 32]> = self
            .book
            .ids()
            .into_iter()
            .filter(|id| self.book.get(id).is_some_and(|e| e.record.approved_by(me)))
            .collect();
        for id in self.catch_up.approvals_due(&ours, self.now) {
            let ours = self
                .book
                .get(&id)
                .and_then(|e| e.record.approvals.iter().find(|a| a.approver == *me));
            if let Some(a) = ours {
                out.push(Output::Bus(ProcessorMessage::SignApproval(a.clone())));
            }
        }
        for id in self.book.ids() {
            self.consider(cx, id, out);
        }
        let now_ms = self.now;
        let due: Vec<[u8; 32]> = self
            .originated
            .iter()
            .filter(|(_, o)| o.deadline.is_some_and(|d| d <= now_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.attempt_timed_out(cx, id);
            self.start_attempt(cx, id, out);
        }
        let ttl = self.config.attempt_timeout_ms.saturating_mul(3);
        let originated = &self.originated;
        let me = cx.party.me();
        self.ceremonies.retain(|(_, attempt), c| {
            let current = c.request.origin == *me
                && originated
                    .get(&c.request.id)
                    .is_some_and(|o| o.record.attempt == *attempt && o.deadline.is_some());
            current || c.started.saturating_add(ttl) > now_ms
        });
        self.slow_until.retain(|_, until| *until > now_ms);
        self.start_queued(cx, out);
    }

    /// Signing messages of [`crate::processor::Processor::handle`]; `None` for the others.
    pub(crate) fn dispatch(
        &mut self,
        cx: &Scope,
        msg: &CoordinatorMessage,
        out: &mut Vec<Output>,
    ) -> Option<Result<()>> {
        Some(match msg {
            CoordinatorMessage::SignatureRequested(r) => self.on_requested(cx, r, out),
            CoordinatorMessage::EncryptedPreprocessIn(m) => self.on_preprocess(cx, m, out),
            CoordinatorMessage::EncryptedSignatureShareIn(m) => self.on_signature_share(cx, m, out),
            CoordinatorMessage::SignPreprocessesIn(m) => self.on_preprocess_set(cx, m, out),
            CoordinatorMessage::GeneralIn(GeneralIn {
                from,
                msg: GeneralMessage::SignRequest(r),
            }) => self.on_sign_request(cx, from, r, out),
            CoordinatorMessage::GeneralIn(GeneralIn {
                from,
                msg: GeneralMessage::SignatureAvailable(a),
            }) => self.on_signature_available(cx, from, a, out),
            CoordinatorMessage::GeneralIn(GeneralIn {
                from,
                msg: GeneralMessage::SignApproval(a),
            }) => self.on_approval(cx, from, a, out),
            _ => return None,
        })
    }

    /// A request from this node's API: our operator's approval. Signed, recorded and
    /// announced; once t validators approved, the request is originated (`consider`). A request
    /// refused here is answered to the API with the reason and leaves nothing behind.
    fn on_requested(
        &mut self,
        cx: &Scope,
        r: &SignatureRequested,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let coin = cx.party.coin();
        check_messages(coin, &r.messages).map_err(ProtocolError::Refused)?;
        check_set_size(cx.party.def().threshold, r.messages.len())
            .map_err(ProtocolError::Refused)?;
        let vault = match cx.vault {
            Some(v) if self.can_sign(cx) => v.context,
            _ => {
                return Err(ProtocolError::Refused(format!(
                    "the {coin} vault is not active"
                )))
            }
        };
        let id = approvals::request_id(
            &cx.party.def().name,
            coin,
            &vault,
            &r.messages,
            r.reference.as_deref(),
        );
        if id != r.id {
            return Err(ProtocolError::Refused(
                "the request id does not match its content".into(),
            ));
        }
        let me = cx.party.me().clone();
        if self.recent_done.contains(&id) {
            // Finished (the node answers a stored record before asking here) or expired.
            return Err(ProtocolError::Refused(format!(
                "request {} is finished or expired; to sign the same messages again, give another reference",
                hex::encode(id)
            )));
        }
        if self
            .book
            .get(&id)
            .is_some_and(|e| e.record.approved_by(&me))
        {
            return Ok(()); // approved before: the stored record answers
        }
        let held = self.book.held_by(&me);
        if held >= self.config.max_queued {
            return Err(ProtocolError::Refused(format!(
                "{held} requests approved here are not finished; try again later"
            )));
        }
        let expires_at = self.unix.saturating_add(self.config.approval_ttl_s);
        let approval = approvals::sign(cx.party.signer(), coin, id, vault, me.clone(), expires_at);
        let entry = self
            .book
            .entry(SignRecord::pending(id, coin, me, vault, Vec::new()));
        entry.record.messages = r.messages.clone();
        entry.record.reference = r.reference.clone();
        approvals::add(&mut entry.record, approval.clone());
        out.push(Output::Persist(Persist::SignRecord {
            record: entry.record.clone(),
            failure: None,
        }));
        out.push(Output::Bus(ProcessorMessage::SignApproval(approval)));
        self.consider(cx, id, out);
        Ok(())
    }

    /// Another validator's approval, gossiped by that validator.
    fn on_approval(
        &mut self,
        cx: &Scope,
        from: &ValidatorId,
        a: &SignApproval,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let coin = cx.party.coin();
        if a.coin != coin {
            return Err(ProtocolError::peer(from, "approval for another coin"));
        }
        if a.approver != *from {
            return Err(ProtocolError::peer(
                from,
                format!("sent an approval in the name of {}", a.approver),
            ));
        }
        check_active_vault(cx, from, &a.vault, "approval")?;
        Self::index_of_validator(cx, from, from)?;
        let key = cx
            .party
            .signer_of(from)
            .ok_or_else(|| ProtocolError::peer(from, "its processor key is unknown"))?;
        if !approvals::verify(&key, a) {
            return Err(ProtocolError::peer(from, "bad signature on its approval"));
        }
        if a.expires_at <= self.unix {
            return Err(ProtocolError::peer(
                from,
                format!("approval of {} expired (replayed?)", hex::encode(a.id)),
            ));
        }
        let latest = self
            .unix
            .saturating_add(approvals::MAX_TTL_S + approvals::CLOCK_SKEW_S);
        if a.expires_at > latest {
            return Err(ProtocolError::peer(from, "approval valid for too long"));
        }
        if self.recent_done.contains(&a.id) {
            // Its approver still waits for it: it missed our signatures (a partition).
            if let Some(again) = self.catch_up.resend(&a.id, self.now) {
                out.push(Output::Bus(ProcessorMessage::SignatureAvailable(again)));
            }
            return Ok(());
        }
        match self.book.get(&a.id) {
            Some(e) if e.record.approved_by(from) => return Ok(()), // a copy
            Some(_) => {}
            None => {
                let held = self.book.held_by(from);
                if held >= approvals::MAX_PER_APPROVER {
                    return Err(ProtocolError::peer(
                        from,
                        format!("{held} of its approved requests are unfinished here already"),
                    ));
                }
            }
        }
        let entry = self.book.entry(SignRecord::pending(
            a.id,
            coin,
            from.clone(),
            a.vault,
            Vec::new(),
        ));
        approvals::add(&mut entry.record, a.clone());
        let record = entry.record.clone();
        match self.originated.get_mut(&a.id) {
            Some(o) => {
                // Ours to sign: the record we keep is the origination's.
                approvals::add(&mut o.record, a.clone());
                let waiting = o.deadline.is_some() && o.record.signers.is_empty();
                out.push(Output::Persist(Persist::SignRecord {
                    record: o.record.clone(),
                    failure: None,
                }));
                if waiting {
                    // It waited for reachable approvers: one more may be enough.
                    self.start_attempt(cx, a.id, out);
                }
            }
            None => {
                out.push(Output::Persist(Persist::SignRecord {
                    record,
                    failure: None,
                }));
                self.consider(cx, a.id, out);
            }
        }
        Ok(())
    }

    /// Originate request `id` if our operator approved it, t approvals are live and it is our
    /// turn: the first approver (earliest expiry, then a per-request hash order) originates;
    /// each next one takes over only after two attempt timeouts without anyone's attempt (a
    /// first approver that is down or silent does not hold the request up).
    fn consider(&mut self, cx: &Scope, id: [u8; 32], out: &mut Vec<Output>) {
        if self.originated.contains_key(&id) || !self.can_sign(cx) {
            return;
        }
        let t = usize::from(cx.party.def().threshold);
        let me = cx.party.me();
        let live = self.book.live(&id, self.unix);
        let now = self.now;
        let Some(e) = self.book.get_mut(&id) else {
            return;
        };
        if !live.contains(me) || e.record.messages.is_empty() || live.len() < t {
            e.quorum_since = None;
            return;
        }
        let since = *e.quorum_since.get_or_insert(now);
        let rank = approvals::turn_of(&e.record, me, self.unix) as u64;
        let turn = self
            .config
            .attempt_timeout_ms
            .saturating_mul(2)
            .saturating_mul(rank);
        if now < since.saturating_add(turn) {
            return;
        }
        let mut record = e.record.clone();
        record.origin = me.clone();
        record.attempt = 0;
        record.signers.clear();
        self.originated.insert(
            id,
            Origination {
                slow: record.left_out.iter().cloned().collect(),
                record,
                cheaters: BTreeMap::new(),
                deadline: None,
                attempt_started: 0,
            },
        );
        self.queue.push_back(id);
        self.start_queued(cx, out);
    }

    /// Requests past their expiry: one we originate or approved fails naming its approvers;
    /// one nobody here approved is forgotten (a peer's approvals alone leave nothing stored).
    fn expire(&mut self, cx: &Scope, out: &mut Vec<Output>) {
        if self.unix == 0 {
            return; // no wall clock yet
        }
        let threshold = cx.party.def().threshold;
        for id in self.book.expired(self.unix) {
            let Some(e) = self.book.remove(&id) else {
                continue;
            };
            let reason = format!(
                "expired unsigned; approved by {}",
                approvals::approvers_text(&e.record, threshold)
            );
            self.finished(cx, id, out);
            if let Some(o) = self.originated.get_mut(&id) {
                o.record.approvals = e.record.approvals;
                o.record.expires_at = e.record.expires_at;
                self.fail_request(id, SignFailure::Expired, reason, out);
            } else if e.record.approved_by(cx.party.me()) {
                let mut record = e.record;
                record.status = SignStatus::Failed;
                record.reason = Some(reason);
                out.push(Output::Persist(Persist::SignRecord {
                    record,
                    failure: Some(SignFailure::Expired),
                }));
            } else {
                out.push(Output::Persist(Persist::ForgetSignRecord { id }));
            }
        }
    }

    fn start_queued(&mut self, cx: &Scope, out: &mut Vec<Output>) {
        loop {
            let running = self
                .originated
                .values()
                .filter(|o| o.deadline.is_some())
                .count();
            if running >= self.config.max_originating || !self.can_sign(cx) {
                return;
            }
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            self.start_attempt(cx, id, out);
        }
    }

    /// The originator's deadline passed: name who did not answer.
    fn attempt_timed_out(&mut self, cx: &Scope, id: [u8; 32]) {
        let Some(o) = self.originated.get(&id) else {
            return;
        };
        let attempt = o.record.attempt;
        let mut slow = Vec::new();
        let slot = nonce_slot(&id, cx.party.me());
        if let Some(c) = self.ceremonies.get_mut(&(slot, attempt)) {
            c.stage = Stage::Done;
            let waiting_preprocess = c.preprocesses.len() + 1 < c.indices.len();
            for (v, l) in &c.indices {
                if v == cx.party.me() {
                    continue;
                }
                if waiting_preprocess && !c.preprocesses.contains_key(l) {
                    slow.push((v.clone(), format!("no preprocess in attempt {attempt}")));
                } else if !waiting_preprocess && !c.shares.contains_key(l) {
                    slow.push((
                        v.clone(),
                        format!("no signature share in attempt {attempt}"),
                    ));
                }
            }
        }
        let until = self.now + self.config.attempt_timeout_ms * 3;
        for (v, _) in &slow {
            self.slow_until.insert(v.clone(), until);
        }
        if let Some(o) = self.originated.get_mut(&id) {
            o.slow.extend(slow);
        }
    }

    /// An originated attempt made progress (a preprocess or a share was taken): its deadline
    /// becomes a full attempt timeout from now, up to three timeouts after it started. Under
    /// load an attempt that still advances is not abandoned (and its work redone by a new
    /// attempt) only for being slow; a silent signer stops the progress and the attempt times
    /// out as before, and the cap bounds what a set of slow signers can delay.
    fn extend_deadline(&mut self, id: [u8; 32], attempt: u32) {
        let (now, timeout) = (self.now, self.config.attempt_timeout_ms);
        let Some(o) = self.originated.get_mut(&id) else {
            return;
        };
        if o.record.attempt != attempt {
            return;
        }
        let cap = o.attempt_started.saturating_add(timeout.saturating_mul(3));
        if let Some(d) = o.deadline.as_mut() {
            *d = (*d).max(now.saturating_add(timeout).min(cap));
        }
    }

    /// Start the next attempt of an originated request, wait for its approvers to be
    /// reachable, or fail it.
    fn start_attempt(&mut self, cx: &Scope, id: [u8; 32], out: &mut Vec<Output>) {
        let t = usize::from(cx.party.def().threshold);
        let Some(o) = self.originated.get(&id) else {
            return;
        };
        let slot = nonce_slot(&id, cx.party.me());
        let mut attempt = if o.record.signers.is_empty() {
            o.record.attempt
        } else {
            o.record.attempt + 1
        };
        while self.used.contains(&(slot, attempt)) {
            attempt += 1;
        }
        let Some(vault) = cx.vault.map(|v| v.context) else {
            return;
        };
        let approvers = self.book.live(&id, self.unix);
        // Candidates: reachable approvers that did not cheat on this request; slow ones last.
        let mut candidates: Vec<(bool, [u8; 32], ValidatorId)> = cx
            .participants()
            .iter()
            .filter(|v| *v != cx.party.me() && approvers.contains(*v))
            .filter(|v| self.reachable.contains(*v) && !o.cheaters.contains_key(*v))
            .map(|v| {
                let slow = o.slow.contains_key(v) || self.slow_until.contains_key(v);
                let mut h = Sha256::new();
                h.update(id);
                h.update(attempt.to_be_bytes());
                h.update(v.as_bytes());
                (slow, h.finalize().into(), v.clone())
            })
            .collect();
        candidates.sort();
        if candidates.len() + 1 < t || attempt >= MAX_ATTEMPTS {
            let mut missing: Vec<String> = Vec::new();
            for v in cx.participants().iter().filter(|v| *v != cx.party.me()) {
                if !approvers.contains(v) {
                    continue;
                }
                if let Some(why) = o.cheaters.get(v) {
                    missing.push(format!("{v} ({why})"));
                } else if !self.reachable.contains(v) {
                    missing.push(format!("{v} (unreachable)"));
                } else if let Some(why) = o.slow.get(v) {
                    missing.push(format!("{v} ({why})"));
                }
            }
            if attempt >= MAX_ATTEMPTS {
                let reason = format!(
                    "no signer set answered in {MAX_ATTEMPTS} attempts; missing: {}",
                    missing.join(", ")
                );
                self.fail_request(id, SignFailure::AttemptsExhausted, reason, out);
                return;
            }
            // Too few approvers reachable (one restarting, say): look again after a timeout,
            // until the request expires.
            let reason = format!(
                "waiting: only {} of the {t} signers needed are reachable approvers; missing: {}",
                candidates.len() + 1,
                missing.join(", ")
            );
            let (now, timeout) = (self.now, self.config.attempt_timeout_ms);
            let Some(o) = self.originated.get_mut(&id) else {
                return;
            };
            o.deadline = Some(now.saturating_add(timeout));
            o.attempt_started = now;
            o.record.attempt = attempt;
            o.record.signers.clear();
            if o.record.reason.as_deref() != Some(reason.as_str()) {
                o.record.reason = Some(reason);
                out.push(Output::Persist(Persist::SignRecord {
                    record: o.record.clone(),
                    failure: None,
                }));
            }
            return;
        }
        let mut signers: Vec<ValidatorId> = candidates
            .into_iter()
            .take(t - 1)
            .map(|(_, _, v)| v)
            .chain(std::iter::once(cx.party.me().clone()))
            .collect();
        signers.sort_by_key(|v| cx.member_index(v));
        let mut request = SignRequest {
            coin: cx.party.coin(),
            id,
            attempt,
            origin: cx.party.me().clone(),
            vault,
            signers: signers.clone(),
            messages: o.record.messages.clone(),
            signature: Vec::new(),
        };
        request.signature = cx
            .party
            .signer()
            .sign(REQUEST_DOMAIN, &request_body(&request));
        let deadline = self.now + self.config.attempt_timeout_ms;
        let left_out: Vec<(ValidatorId, String)> = o
            .cheaters
            .iter()
            .chain(o.slow.iter())
            .map(|(v, w)| (v.clone(), w.clone()))
            .collect();
        let Some(o) = self.originated.get_mut(&id) else {
            return;
        };
        o.record.attempt = attempt;
        o.record.signers = signers;
        o.record.left_out = left_out;
        o.record.reason = None;
        o.deadline = Some(deadline);
        o.attempt_started = self.now;
        let record = o.record.clone();
        let mut sends = Vec::new();
        match self.join(cx, &request, &mut sends) {
            Ok(()) => {
                out.push(Output::Persist(Persist::SignRecord {
                    record,
                    failure: None,
                }));
                out.push(Output::Bus(ProcessorMessage::SignRequest(request)));
                out.extend(sends);
            }
            Err(e) => self.fail_request(
                id,
                SignFailure::Other,
                format!("cannot start attempt {attempt}: {e}"),
                out,
            ),
        }
    }

    fn fail_request(
        &mut self,
        id: [u8; 32],
        failure: SignFailure,
        reason: String,
        out: &mut Vec<Output>,
    ) {
        self.queue.retain(|q| *q != id);
        if let Some(mut o) = self.originated.remove(&id) {
            o.record.status = SignStatus::Failed;
            o.record.reason = Some(reason);
            out.push(Output::Persist(Persist::SignRecord {
                record: o.record,
                failure: Some(failure),
            }));
        }
    }

    /// Check a request announced by `request.origin`.
    fn check_request(&self, cx: &Scope, from: &ValidatorId, r: &SignRequest) -> Result<()> {
        let coin = cx.party.coin();
        if r.coin != coin {
            return Err(ProtocolError::peer(
                from,
                format!("{} request on the {coin} topic", r.coin),
            ));
        }
        check_active_vault(cx, from, &r.vault, "request")?;
        if r.attempt >= MAX_ATTEMPTS {
            return Err(ProtocolError::peer(from, format!("attempt {}", r.attempt)));
        }
        if r.signers.len() != usize::from(cx.party.def().threshold) {
            return Err(ProtocolError::peer(
                from,
                format!(
                    "{} signers, the threshold is {}",
                    r.signers.len(),
                    cx.party.def().threshold
                ),
            ));
        }
        let mut last = 0u16;
        for v in &r.signers {
            let l = Self::index_of_validator(cx, from, v)?;
            if l <= last {
                return Err(ProtocolError::peer(
                    from,
                    "signers not in participant order",
                ));
            }
            last = l;
        }
        if !r.signers.contains(&r.origin) {
            return Err(ProtocolError::peer(from, "the originator is not a signer"));
        }
        check_messages(coin, &r.messages).map_err(|e| ProtocolError::peer(from, e))?;
        check_set_size(cx.party.def().threshold, r.messages.len())
            .map_err(|e| ProtocolError::peer(from, e))?;
        let key = if r.origin == *cx.party.me() {
            Some(cx.party.signer().public())
        } else {
            cx.party.peers().get(&r.origin).and_then(|p| p.signer)
        };
        let key = key.ok_or_else(|| {
            ProtocolError::peer(from, format!("unknown processor key of {}", r.origin))
        })?;
        if !verify_processor_signature(&key, REQUEST_DOMAIN, &request_body(r), &r.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad originator signature on the request",
            ));
        }
        Ok(())
    }

    fn index_of_validator(cx: &Scope, from: &ValidatorId, v: &ValidatorId) -> Result<u16> {
        cx.member_index(v).ok_or_else(|| {
            ProtocolError::peer(from, format!("{v} is not a participant of the vault"))
        })
    }

    /// Open a signing payload from `from`, bound to the ceremony's `session`.
    fn open_sign(
        cx: &Scope,
        kind: SealKind,
        from: &ValidatorId,
        session: [u8; 32],
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        cx.party
            .open_with(kind, from, session, sealed)?
            .ok_or_else(|| ProtocolError::peer(from, "its messaging key is unknown"))
    }

    /// Whether our operator approved `request` (its id, vault and messages) and our approval
    /// still counts: the only reason this node ever releases a preprocess.
    fn approved_here(&self, cx: &Scope, request: &SignRequest) -> bool {
        let me = cx.party.me();
        self.book.get(&request.id).is_some_and(|e| {
            e.record.approved_by(me)
                && e.record.vault == request.vault
                && e.record.messages == request.messages
        }) && self.book.live(&request.id, self.unix).contains(me)
    }

    /// Take part in `request`'s ceremony: mark it preprocessed, then send our preprocesses.
    fn join(&mut self, cx: &Scope, request: &SignRequest, out: &mut Vec<Output>) -> Result<()> {
        let key = (nonce_slot(&request.id, &request.origin), request.attempt);
        if self.ceremonies.contains_key(&key) {
            return Ok(());
        }

        if self.used.contains(&key) {
            return Err(ProtocolError::peer(
                &request.origin,
                format!(
                    "attempt {} was already preprocessed here (before a restart?)",
                    request.attempt
                ),
            ));
        }
        if !self.approved_here(cx, request) {
            return Err(ProtocolError::peer(
                &request.origin,
                format!(
                    "asked for a preprocess of request {}, which this validator's operator did not approve",
                    hex::encode(request.id)
                ),
            ));
        }
        if request.origin != *cx.party.me() {
            // One open attempt per (request, originator): a newer attempt replaces the older
            // (its nonces are dropped unused), an older one arriving late is ignored. So an
            // originator holds at most one slot per request it may originate.
            let slot = key.0;
            let open = |c: &Ceremony| !c.done();
            if self
                .ceremonies
                .range((slot, request.attempt.saturating_add(1))..=(slot, u32::MAX))
                .any(|(_, c)| open(c))
            {
                return Ok(());
            }
            for (_, c) in self
                .ceremonies
                .range_mut((slot, 0)..(slot, request.attempt))
                .filter(|(_, c)| !c.done())
            {
                c.stage = Stage::Done;
            }
            // A fair share per originator: twice what an honest one runs at once (a signer
            // may still hold a finished attempt open while its last shares are in flight), so
            // one validator's requests cannot take the slots every other originator needs.
            let share = self.config.max_originating.saturating_mul(2);
            let theirs = self
                .ceremonies
                .values()
                .filter(|c| open(c) && c.request.origin == request.origin)
                .count();
            if theirs >= share {
                return Err(ProtocolError::peer(
                    &request.origin,
                    format!(
                        "{theirs} of its ceremonies already in progress here, its share is {share}"
                    ),
                ));
            }
            let participating = self.ceremonies.values().filter(|c| open(c)).count();
            if participating >= self.config.max_participating {
                return Err(ProtocolError::peer(
                    &request.origin,
                    format!("{participating} ceremonies already in progress here"),
                ));
            }
        }
        let keys = self
            .keys
            .clone()
            .ok_or_else(|| ProtocolError::Key("no key share loaded".into()))?;
        let session = session(&cx.party.def().name, request);
        let mut indices = BTreeMap::new();
        for v in &request.signers {
            indices.insert(v.clone(), Self::index_of_validator(cx, &request.origin, v)?);
        }
        let mut machines = Vec::new();
        let mut preprocesses = Vec::new();
        for i in 0..request.messages.len() {
            let (m, p) = keys.preprocess(&message_session(&session, i), &mut rand_core::OsRng);
            machines.push(m);
            preprocesses.push(p);
        }
        // Only the originator aggregates: our preprocess goes to it alone, and it hands every
        // signer the set (O(t) messages per signature, not O(t²)).
        let mut sends = Vec::new();
        if request.origin != *cx.party.me() {
            let payload = postcard::to_stdvec(&PreprocessPayload {
                preprocesses: preprocesses.clone(),
            })
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            let sealed =
                cx.party
                    .seal_with(SealKind::Preprocess, &request.origin, session, &payload)?;
            sends.push(Output::Bus(ProcessorMessage::EncryptedPreprocessOut(
                EncryptedPreprocessOut {
                    to: request.origin.clone(),
                    request: request.clone(),
                    sealed,
                },
            )));
        }
        // Persist before send: the marker is in this call's outputs, ahead of the messages.
        self.used.insert(key);
        out.push(Output::Persist(Persist::NonceUsed {
            coin: cx.party.coin(),
            id: key.0,
            attempt: request.attempt,
        }));
        out.extend(sends);
        self.ceremonies.insert(
            key,
            Ceremony {
                request: request.clone(),
                session,
                indices,
                stage: Stage::AwaitingPreprocesses(machines),
                own: preprocesses,
                preprocesses: BTreeMap::new(),
                shares: BTreeMap::new(),
                started: self.now,
            },
        );
        Ok(())
    }

    fn on_sign_request(
        &mut self,
        cx: &Scope,
        from: &ValidatorId,
        r: &SignRequest,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        if *from != r.origin {
            return Err(ProtocolError::peer(
                from,
                "announced another validator's request",
            ));
        }
        if self.recent_done.contains(&r.id) {
            return Ok(()); // already signed
        }
        if !r.signers.contains(cx.party.me()) {
            // Not ours to sign; an approver's attempt still tells us the request is under way.
            if self.book.get(&r.id).is_some() && self.check_request(cx, from, r).is_ok() {
                self.attempt_seen(r);
            }
            return Ok(());
        }
        self.check_request(cx, from, r)?;
        self.attempt_seen(r);
        let key = (nonce_slot(&r.id, &r.origin), r.attempt);
        if let Some(c) = self.ceremonies.get(&key) {
            if c.request != *r {
                return Err(ProtocolError::peer(
                    from,
                    "two different requests for one attempt",
                ));
            }
            return Ok(());
        }
        self.join(cx, r, out)?;
        self.advance(cx, key, out);
        Ok(())
    }

    /// Another approver's valid attempt at `r.id`: our turn to originate it waits from now.
    fn attempt_seen(&mut self, r: &SignRequest) {
        if let Some(e) = self.book.get_mut(&r.id) {
            if e.quorum_since.is_some() {
                e.quorum_since = Some(self.now);
            }
            e.record.origin = r.origin.clone();
        }
    }

    fn on_preprocess(
        &mut self,
        cx: &Scope,
        m: &EncryptedPreprocessIn,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let from = &m.from;
        if m.msg.to != *cx.party.me() {
            return Err(ProtocolError::peer(
                from,
                "preprocess addressed to another validator",
            ));
        }
        let r = &m.msg.request;
        if !r.signers.contains(from) || !r.signers.contains(cx.party.me()) {
            return Err(ProtocolError::peer(
                from,
                "preprocess from or to a non-signer",
            ));
        }
        if r.origin != *cx.party.me() {
            return Err(ProtocolError::peer(
                from,
                "preprocess for an attempt this validator does not originate",
            ));
        }
        if self.recent_done.contains(&r.id) {
            return Ok(());
        }
        let key = (nonce_slot(&r.id, &r.origin), r.attempt);
        if !self.ceremonies.contains_key(&key) && self.used.contains(&key) {
            // Late: our attempt was dropped (superseded, or cut by a restart).
            return Ok(());
        }
        match self.ceremonies.get(&key) {
            Some(c) if c.request != *r => {
                // Both versions signed by the originator: it announced two different requests
                // for one attempt, and the signer that forwarded this one is not at fault.
                let culprit = match self.check_request(cx, from, r) {
                    Ok(()) => &r.origin,
                    Err(_) => from,
                };
                return Err(ProtocolError::peer(
                    culprit,
                    "two different requests for one attempt (one came with a preprocess)",
                ));
            }
            Some(_) => {}
            None => {
                self.check_request(cx, from, r)?;
                self.join(cx, r, out)?;
            }
        }
        let Some(c) = self.ceremonies.get(&key) else {
            return Ok(());
        };
        let (session, l) = (c.session, c.indices.get(from).copied());
        let l = l.ok_or_else(|| ProtocolError::peer(from, "not a signer of this attempt"))?;
        let payload = Self::open_sign(cx, SealKind::Preprocess, from, session, &m.msg.sealed)?;
        let payload: PreprocessPayload = postcard::from_bytes(&payload)
            .map_err(|e| ProtocolError::peer(from, format!("preprocess payload: {e}")))?;
        if payload.preprocesses.len() != r.messages.len() {
            return Err(ProtocolError::peer(
                from,
                "preprocess count differs from the message count",
            ));
        }
        let Some(c) = self.ceremonies.get_mut(&key) else {
            return Ok(());
        };
        match c.preprocesses.get(&l) {
            Some(existing) if *existing != payload.preprocesses => {
                return Err(ProtocolError::peer(from, "sent two different preprocesses"));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        c.preprocesses.insert(l, payload.preprocesses);
        self.advance(cx, key, out);
        Ok(())
    }

    /// The ceremony a signing message from `from` (a `what`, for the error) is for: `None` when
    /// there is nothing to do, because the request is finished, or because we took part in
    /// that attempt and have since dropped it (it expired under load, was superseded, or a
    /// restart cut it: late, and nobody to blame).
    fn ceremony_of(
        &self,
        from: &ValidatorId,
        what: &str,
        id: &[u8; 32],
        origin: &ValidatorId,
        attempt: u32,
    ) -> Result<Option<CeremonyKey>> {
        if self.recent_done.contains(id) {
            return Ok(None);
        }
        let key = (nonce_slot(id, origin), attempt);
        if self.ceremonies.contains_key(&key) {
            return Ok(Some(key));
        }
        if self.used.contains(&key) {
            return Ok(None);
        }
        Err(ProtocolError::peer(
            from,
            format!("{what} for an attempt {attempt} we are not in"),
        ))
    }

    fn on_signature_share(
        &mut self,
        cx: &Scope,
        m: &EncryptedSignatureShareIn,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let from = &m.from;
        if m.msg.to != *cx.party.me() {
            return Err(ProtocolError::peer(
                from,
                "share addressed to another validator",
            ));
        }
        if m.msg.coin != cx.party.coin() {
            return Err(ProtocolError::peer(from, "share for another coin"));
        }
        let Some(key) = self.ceremony_of(
            from,
            "signature share",
            &m.msg.id,
            &m.msg.origin,
            m.msg.attempt,
        )?
        else {
            return Ok(());
        };
        let Some(c) = self.ceremonies.get(&key) else {
            return Ok(());
        };
        if c.request.origin != *cx.party.me() {
            return Err(ProtocolError::peer(
                from,
                "signature share for an attempt this validator does not originate",
            ));
        }
        let session = c.session;
        let l = c
            .indices
            .get(from)
            .copied()
            .ok_or_else(|| ProtocolError::peer(from, "not a signer of this attempt"))?;
        let payload = Self::open_sign(cx, SealKind::SignatureShare, from, session, &m.msg.sealed)?;
        let payload: SignatureSharePayload = postcard::from_bytes(&payload)
            .map_err(|e| ProtocolError::peer(from, format!("share payload: {e}")))?;
        let Some(c) = self.ceremonies.get_mut(&key) else {
            return Ok(());
        };
        if payload.shares.len() != c.request.messages.len() {
            return Err(ProtocolError::peer(
                from,
                "share count differs from the message count",
            ));
        }
        match c.shares.get(&l) {
            Some(existing) if *existing != payload.shares => {
                return Err(ProtocolError::peer(
                    from,
                    "sent two different signature shares",
                ));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        c.shares.insert(l, payload.shares);
        self.advance(cx, key, out);
        Ok(())
    }

    /// Move a ceremony on as far as its inputs allow. The originator signs once every
    /// preprocess is in (which checks each of them), hands every other signer the set, and
    /// aggregates once every share is in; another signer signs once the originator's set is in
    /// and sends its shares to the originator alone.
    fn advance(&mut self, cx: &Scope, key: CeremonyKey, out: &mut Vec<Output>) {
        let me = cx.party.me().clone();
        let Some(c) = self.ceremonies.get(&key) else {
            return;
        };
        let (id, attempt) = (c.request.id, key.1);
        let ours = c.request.origin == me;
        let origin_index = cx.member_index(&c.request.origin).unwrap_or_default();
        if ours {
            self.extend_deadline(id, attempt);
        }
        let Some(c) = self.ceremonies.get_mut(&key) else {
            return;
        };
        let others = c.indices.len() - 1;
        // Round 2: every preprocess in.
        if matches!(c.stage, Stage::AwaitingPreprocesses(_)) && c.preprocesses.len() == others {
            let Stage::AwaitingPreprocesses(machines) =
                std::mem::replace(&mut c.stage, Stage::Done)
            else {
                return;
            };
            let mut next = Vec::new();
            let mut shares = Vec::new();
            for (i, m) in machines.into_iter().enumerate() {
                let pre: BTreeMap<u16, Vec<u8>> = c
                    .preprocesses
                    .iter()
                    .filter_map(|(l, p)| p.get(i).map(|p| (*l, p.clone())))
                    .collect();
                match m.sign(&pre, &c.request.messages[i]) {
                    Ok((m, s)) => {
                        next.push(m);
                        shares.push(s);
                    }
                    // The originator checked every preprocess of its set when it signed with
                    // them: an invalid one in the set is the originator's.
                    Err(SignError::InvalidPreprocess(_)) if !ours => {
                        let e = SignError::InvalidPreprocess(origin_index);
                        self.ceremony_failed(cx, key, e, out);
                        return;
                    }
                    Err(e) => {
                        self.ceremony_failed(cx, key, e, out);
                        return;
                    }
                }
            }
            let session = c.session;
            if ours {
                c.stage = Stage::AwaitingShares(next);
                let mine = c.indices.get(&me).copied().unwrap_or_default();
                let mut all = c.preprocesses.clone();
                all.insert(mine, c.own.clone());
                let set = PreprocessSet {
                    coin: cx.party.coin(),
                    vault: c.request.vault,
                    id,
                    origin: me.clone(),
                    attempt,
                    session,
                    preprocesses: all.into_iter().collect(),
                };
                let signature = cx
                    .party
                    .signer()
                    .sign(PREPROCESS_SET_DOMAIN, &preprocess_set_body(&set));
                for v in c.indices.keys().filter(|v| **v != me) {
                    out.push(Output::Bus(ProcessorMessage::SignPreprocessesOut(
                        SignPreprocessesOut {
                            to: v.clone(),
                            set: set.clone(),
                            signature: signature.clone(),
                        },
                    )));
                }
            } else {
                // Our part ends with the shares; the originator aggregates and announces.
                let origin = c.request.origin.clone();
                let payload = match postcard::to_stdvec(&SignatureSharePayload { shares }) {
                    Ok(p) => p,
                    Err(_) => return,
                };
                match cx
                    .party
                    .seal_with(SealKind::SignatureShare, &origin, session, &payload)
                {
                    Ok(sealed) => out.push(Output::Bus(
                        ProcessorMessage::EncryptedSignatureShareOut(EncryptedSignatureShareOut {
                            coin: cx.party.coin(),
                            vault: c.request.vault,
                            to: origin.clone(),
                            id,
                            origin,
                            attempt,
                            sealed,
                        }),
                    )),
                    Err(e) => self.ceremony_failed(cx, key, SignError::Other(e.to_string()), out),
                }
                return;
            }
        }
        let Some(c) = self.ceremonies.get_mut(&key) else {
            return;
        };
        // Round 3 (the originator): every share in.
        if !matches!(c.stage, Stage::AwaitingShares(_)) || c.shares.len() < others {
            return;
        }
        let Stage::AwaitingShares(machines) = std::mem::replace(&mut c.stage, Stage::Done) else {
            return;
        };
        let mut signatures = Vec::new();
        for (i, m) in machines.into_iter().enumerate() {
            let shares: BTreeMap<u16, Vec<u8>> = c
                .shares
                .iter()
                .filter_map(|(l, s)| s.get(i).map(|s| (*l, s.clone())))
                .collect();
            match m.complete(&shares) {
                Ok(sig) => signatures.push(sig.to_vec()),
                Err(e) => {
                    self.ceremony_failed(cx, key, e, out);
                    return;
                }
            }
        }
        let r = c.request.clone();
        let available = SignatureAvailable {
            coin: r.coin,
            id,
            origin: r.origin.clone(),
            attempt,
            vault: r.vault,
            signers: r.signers.clone(),
            messages: r.messages.clone(),
            signatures,
            reference: self.reference_of(&id),
        };
        self.signature_done(cx, &available, out);
        self.catch_up.signed(&available, self.now);
        out.push(Output::Bus(ProcessorMessage::SignatureAvailable(available)));
    }

    /// The originator's set of every signer's preprocess: sign with it, and send our shares
    /// to the originator.
    fn on_preprocess_set(
        &mut self,
        cx: &Scope,
        m: &SignPreprocessesIn,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let (from, set) = (&m.from, &m.msg.set);
        if m.msg.to != *cx.party.me() {
            return Err(ProtocolError::peer(
                from,
                "preprocess set addressed to another validator",
            ));
        }
        if set.origin != *from {
            return Err(ProtocolError::peer(
                from,
                "preprocess set for an attempt another validator originates",
            ));
        }
        if set.coin != cx.party.coin() {
            return Err(ProtocolError::peer(from, "preprocess set for another coin"));
        }
        let Some(key) =
            self.ceremony_of(from, "preprocess set", &set.id, &set.origin, set.attempt)?
        else {
            return Ok(());
        };
        let Some(c) = self.ceremonies.get(&key) else {
            return Ok(());
        };
        if !matches!(c.stage, Stage::AwaitingPreprocesses(_)) {
            return Ok(()); // a copy, or the attempt ended here
        }
        if set.session != c.session || set.vault != c.request.vault {
            return Err(ProtocolError::peer(
                from,
                "preprocess set for another version of the request",
            ));
        }
        let key_of_origin = cx
            .party
            .peers()
            .get(from)
            .and_then(|p| p.signer)
            .ok_or_else(|| ProtocolError::peer(from, "its processor key is unknown"))?;
        if !verify_processor_signature(
            &key_of_origin,
            PREPROCESS_SET_DOMAIN,
            &preprocess_set_body(set),
            &m.msg.signature,
        ) {
            return Err(ProtocolError::peer(
                from,
                "bad originator signature on the preprocess set",
            ));
        }
        let mut want: Vec<u16> = c.indices.values().copied().collect();
        want.sort_unstable();
        if !set.preprocesses.iter().map(|(l, _)| *l).eq(want) {
            return Err(ProtocolError::peer(
                from,
                "preprocess set does not list exactly the attempt's signers",
            ));
        }
        let mine = c.indices.get(cx.party.me()).copied();
        for (l, p) in &set.preprocesses {
            if p.len() != c.request.messages.len() {
                return Err(ProtocolError::peer(
                    from,
                    "preprocess count differs from the message count",
                ));
            }
            if Some(*l) == mine && *p != c.own {
                return Err(ProtocolError::peer(
                    from,
                    "preprocess set carries another preprocess as ours",
                ));
            }
        }
        let theirs = set
            .preprocesses
            .iter()
            .filter(|(l, _)| Some(*l) != mine)
            .cloned()
            .collect();
        if let Some(c) = self.ceremonies.get_mut(&key) {
            c.preprocesses = theirs;
        }
        self.advance(cx, key, out);
        Ok(())
    }

    fn ceremony_failed(
        &mut self,
        cx: &Scope,
        key: CeremonyKey,
        e: SignError,
        out: &mut Vec<Output>,
    ) {
        let attempt = key.1;
        let Some(c) = self.ceremonies.get_mut(&key) else {
            return;
        };
        c.stage = Stage::Done;
        let id = c.request.id;
        let ours = c.request.origin == *cx.party.me();
        let culprit = e.culprit().and_then(|l| cx.member_at(l).cloned());
        let Some(peer) = culprit else {
            if ours
                && self
                    .originated
                    .get(&id)
                    .is_some_and(|o| o.record.attempt == attempt)
            {
                self.fail_request(
                    id,
                    SignFailure::Other,
                    format!("attempt {attempt}: {e}"),
                    out,
                );
            }
            return;
        };
        let what = match e {
            SignError::InvalidPreprocess(_) => "invalid preprocess",
            _ => "invalid signature share",
        };
        let report = CheaterReport {
            coin: cx.party.coin(),
            peer: peer.clone(),
            id,
            attempt,
            reason: format!("{what} in attempt {attempt}"),
        };
        out.push(Output::Persist(Persist::Cheater(report.clone())));
        self.push_cheater(report.clone());
        if let Some(o) = self.originated.get_mut(&id).filter(|_| ours) {
            if o.record.attempt == attempt {
                o.cheaters.insert(peer, report.reason);
                self.start_attempt(cx, id, out);
            }
        }
    }

    fn push_cheater(&mut self, report: CheaterReport) {
        if self.cheaters.len() >= MAX_CHEATER_REPORTS {
            self.cheaters.pop_front();
        }
        self.cheaters.push_back(report);
    }

    /// A valid signature set for `a.id`: store it once, finish the request.
    fn signature_done(&mut self, cx: &Scope, a: &SignatureAvailable, out: &mut Vec<Output>) {
        if !self.finished(cx, a.id, out) {
            return;
        }
        let known = self.book.remove(&a.id).map(|e| e.record);
        let record = match self.originated.remove(&a.id).map(|o| o.record).or(known) {
            Some(r) => SignRecord {
                status: SignStatus::Done,
                origin: a.origin.clone(),
                attempt: a.attempt,
                signers: a.signers.clone(),
                signatures: a.signatures.clone(),
                messages: a.messages.clone(),
                reason: None,
                ..r
            },
            None => SignRecord {
                status: SignStatus::Done,
                attempt: a.attempt,
                signers: a.signers.clone(),
                signatures: a.signatures.clone(),
                reference: a.reference.clone(),
                ..SignRecord::pending(a.id, a.coin, a.origin.clone(), a.vault, a.messages.clone())
            },
        };
        self.queue.retain(|q| *q != a.id);
        out.push(Output::Persist(Persist::SignRecord {
            record,
            failure: None,
        }));
        self.start_queued(cx, out);
    }

    /// The client reference of a request this node approved or originated.
    fn reference_of(&self, id: &[u8; 32]) -> Option<String> {
        self.originated
            .get(id)
            .map(|o| &o.record)
            .or_else(|| self.book.get(id).map(|e| &e.record))
            .and_then(|r| r.reference.clone())
    }

    /// `id` is finished (signed or expired): its ceremonies stop and late messages about it are
    /// dropped. Returns false when it already was.
    fn finished(&mut self, cx: &Scope, id: [u8; 32], out: &mut Vec<Output>) -> bool {
        if !self.recent_done.insert(id) {
            return false;
        }
        // Its nonce markers go: a finished request is out of the book, and a preprocess needs
        // our approval there (`approved_here`), so none of its attempts is preprocessed again.
        let mut forget = Vec::new();
        for v in &cx.party.def().validators {
            let slot = nonce_slot(&id, v);
            forget.extend(self.used.range((slot, 0)..=(slot, u32::MAX)).copied());
        }
        if !forget.is_empty() {
            for k in &forget {
                self.used.remove(k);
            }
            out.push(Output::Persist(Persist::ForgetNonces {
                coin: cx.party.coin(),
                used: forget,
            }));
        }
        self.recent_order.push_back(id);
        if self.recent_order.len() > RECENT_DONE {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent_done.remove(&old);
            }
        }
        for c in self.ceremonies.values_mut() {
            if c.request.id == id {
                c.stage = Stage::Done;
            }
        }
        true
    }

    fn on_signature_available(
        &mut self,
        cx: &Scope,
        from: &ValidatorId,
        a: &SignatureAvailable,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        if a.coin != cx.party.coin() {
            return Err(ProtocolError::peer(from, "signatures for another coin"));
        }
        if self.recent_done.contains(&a.id) {
            return Ok(());
        }
        let vault = cx
            .vault
            .filter(|v| v.status == VaultStatus::Active)
            .map(|v| v.context);
        if vault != Some(a.vault) {
            return Err(ProtocolError::peer(from, "signatures for another vault"));
        }
        if !a.signers.contains(from) || !cx.party.def().is_validator(&a.origin) {
            return Err(ProtocolError::peer(
                from,
                "announced signatures it did not make",
            ));
        }
        check_messages(a.coin, &a.messages).map_err(|e| ProtocolError::peer(from, e))?;
        // The id is the hash of the request's content: signatures over other messages (an
        // old valid pair, say) never complete the request this names.
        if a.reference
            .as_ref()
            .is_some_and(|r| r.len() > approvals::MAX_REFERENCE)
            || approvals::request_id(
                &cx.party.def().name,
                a.coin,
                &a.vault,
                &a.messages,
                a.reference.as_deref(),
            ) != a.id
        {
            return Err(ProtocolError::peer(
                from,
                format!(
                    "announced signatures for request {} over other content than that request's",
                    hex::encode(a.id)
                ),
            ));
        }
        if a.signatures.len() != a.messages.len() {
            return Err(ProtocolError::peer(
                from,
                "signature count differs from the message count",
            ));
        }
        let key = self
            .verifying_key()
            .ok_or_else(|| ProtocolError::Key("no key share loaded".into()))?;
        for (i, (m, s)) in a.messages.iter().zip(&a.signatures).enumerate() {
            if !sign::verify(a.coin, &key, m, s) {
                return Err(ProtocolError::peer(
                    from,
                    format!("signature {i} does not verify"),
                ));
            }
        }
        // The id check above binds these messages to the request, so what we know of its
        // content can only agree. A request of ours that we no longer hold: nothing to answer.
        let known = self.originated.contains_key(&a.id)
            || self
                .book
                .get(&a.id)
                .is_some_and(|e| !e.record.messages.is_empty());
        if !known && a.origin == *cx.party.me() {
            return Ok(());
        }
        self.signature_done(cx, a, out);
        Ok(())
    }
}
