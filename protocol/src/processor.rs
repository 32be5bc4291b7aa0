//! The processor of one coin: a sans-IO state machine for steps 3, 5, 9, 12, 13, 16, 19 and 20.
//!
//! The node feeds it the `...In` messages its coordinator places on the coin's
//! `{IDENTITY}{COIN}` topic; [`Processor::handle`] returns the `...Out` messages to put on the
//! bus and what to persist. The node must persist every [`Output::Persist`] before it forwards
//! any [`Output::Bus`] of the same call ("persist before you send").
//!
//! Its only long-lived state is the result. Everything in between is a deterministic function of
//! the node's keys and the inbound messages (which the node stores), so after a restart the node
//! replays the stored inbound messages and the processor regenerates identical DKG messages.
//! Messages that arrive before they can be checked (a share before the sender's key is known)
//! wait in a bounded buffer and are retried after every state change.
//!
//! Why one file of this size: it is the DKG's steps 8 to 20 in the order the spec gives them,
//! each handler next to the state it reads (`DkgState`, the keys, the attempt's participants).
//! Exclusion votes and blame live in `attempts.rs`, signing in `signing.rs`; splitting the
//! steps further would separate each check from the message it guards.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::{
    address,
    attempts::Faults,
    dkg::{self, DkgFailure, DkgParams},
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
    keys::{verify_processor_signature, MessagingKey, NodeKeys, ProcessorSigner},
    messages::*,
    network::NetworkDefinition,
    seal::{self, SealContext, SealKind},
    signing::Signing,
    vault::{CheaterReport, Exclusion, SignRecord, VaultRecord, VaultStatus},
};

const DIGEST_DOMAIN: &[u8] = b"KeyGenCommitmentsDigest";
const ADDRESS_DOMAIN: &[u8] = b"PublicAddressAvailable";
pub(crate) const COMMITMENT_DOMAIN: &[u8] = b"EncryptedKeyGenCommitment";
pub(crate) const SHARE_DOMAIN: &[u8] = b"EncryptedKeyShare";

/// What the processor wants done.
#[derive(Debug)]
pub enum Output {
    /// Put this on the bus for the coordinator (after persisting this call's `Persist`s).
    Bus(ProcessorMessage),
    /// Persist this.
    Persist(Persist),
}

/// Durable state changes.
pub enum Persist {
    /// The coin's key share (secret), once computed.
    KeyShare {
        /// Coin.
        coin: Coin,
        /// DKG context.
        context: [u8; 32],
        /// Serialized `ThresholdKeys`.
        keys: Zeroizing<Vec<u8>>,
    },
    /// The vault record.
    Vault(VaultRecord),
    /// A new messaging key of this coin's processor (step 4).
    MessagingKey {
        /// Coin.
        coin: Coin,
        /// The key.
        key: MessagingKey,
    },
    /// Signing: (id, attempt) was preprocessed here; never again, across restarts too.
    NonceUsed {
        /// Coin.
        coin: Coin,
        /// Request id.
        id: [u8; 32],
        /// Attempt.
        attempt: u32,
    },
    /// Signing: a request's record (pending, done or failed; `failure` says why it failed).
    SignRecord {
        /// The record.
        record: SignRecord,
        /// Why it failed, when it did.
        failure: Option<crate::vault::SignFailure>,
    },
    /// Signing: a signer sent an invalid preprocess or share.
    Cheater(CheaterReport),
    /// DKG: our own exclusion vote (a restarted node must never cast a different one).
    Vote(KeyGenExclusionVote),
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Persist::KeyShare { coin, .. } => write!(f, "KeyShare({coin}, <secret>)"),
            Persist::Vault(v) => write!(f, "Vault({:?})", v),
            Persist::MessagingKey { coin, key } => write!(f, "MessagingKey({coin}, {key:?})"),
            Persist::NonceUsed { coin, id, attempt } => {
                write!(f, "NonceUsed({coin}, {}, {attempt})", hex::encode(id))
            }
            Persist::SignRecord { record, .. } => write!(f, "SignRecord({:?})", record),
            Persist::Cheater(c) => write!(f, "Cheater({:?})", c),
            Persist::Vote(v) => write!(f, "Vote({:?})", v),
        }
    }
}

/// The DKG phase, for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps 7-12: exchanging encrypted public keys.
    KeyExchange,
    /// Steps 13-16: collecting commitments.
    Commitments,
    /// Comparing commitment digests.
    CommitmentEcho,
    /// Steps 16-19: collecting shares.
    Shares,
    /// Step 20: waiting for every participant's PublicAddressAvailable.
    Confirming,
    /// Vault active.
    Active,
    /// Failed.
    Failed,
    /// Left out by the other participants.
    Excluded,
}

impl Phase {
    /// A number for the metrics gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            Phase::KeyExchange => 1,
            Phase::Commitments => 2,
            Phase::CommitmentEcho => 3,
            Phase::Shares => 4,
            Phase::Confirming => 5,
            Phase::Active => 6,
            Phase::Failed => -1,
            Phase::Excluded => -2,
        }
    }
}

/// A peer as this processor knows it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PeerView {
    /// Its processor messaging key and rotation counter, from steps 3/7/8.
    pub messaging_key: Option<([u8; 32], u64)>,
    /// Its processor signature key, verified in step 12.
    pub signer: Option<[u8; 32]>,
    /// The `seq` of its messaging key under which its EncryptedPublicKeyOut was verified.
    pub verified_seq: Option<u64>,
    /// Which of its key's `seq` we sealed our EncryptedPublicKeyOut to.
    #[serde(skip)]
    sent_exchange_to: Option<u64>,
}

/// How far this attempt's DKG has gone (in order): what this node has sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DkgStage {
    /// Keys are still being exchanged (steps 8-12): nothing of the DKG sent.
    #[default]
    KeyExchange,
    /// Our commitments are out (step 13); waiting for everyone's and the echo.
    Committed,
    /// Our shares are out (step 16); waiting for everyone's and the confirmations.
    SharesSent,
}

#[derive(Default)]
pub(crate) struct DkgState {
    pub(crate) stage: DkgStage,
    pub(crate) commitments: BTreeMap<u16, Vec<u8>>,
    /// Each sender's signature over its commitments (ours included).
    pub(crate) commitment_sigs: BTreeMap<u16, Vec<u8>>,
    pub(crate) digests: BTreeMap<u16, [u8; 32]>,
    /// Each echo's per-participant commitment hashes.
    pub(crate) hashes: BTreeMap<u16, Vec<[u8; 32]>>,
    pub(crate) shares: BTreeMap<u16, Vec<u8>>,
    /// Each sender's signature over the share it sent us.
    pub(crate) share_sigs: BTreeMap<u16, Vec<u8>>,
    pub(crate) confirmations: BTreeMap<u16, Vec<u8>>,
}

pub(crate) enum Handled {
    Done,
    Wait,
}

/// Most messages from one sender waiting to be checked.
pub const MAX_PENDING_PER_SENDER: usize = 16;

/// The processor of one coin.
pub struct Processor {
    pub(crate) def: NetworkDefinition,
    coin: Coin,
    pub(crate) me: ValidatorId,
    pub(crate) params: DkgParams,
    messaging: MessagingKey,
    pub(crate) signer: ProcessorSigner,
    entropy: Zeroizing<[u8; 32]>,
    peers: BTreeMap<ValidatorId, PeerView>,
    pub(crate) dkg: DkgState,
    pending: Vec<CoordinatorMessage>,
    rejected: Vec<(CoordinatorMessage, ProtocolError)>,
    pub(crate) vault: Option<VaultRecord>,
    pub(crate) signing: Signing,
    /// The current DKG attempt's number and participants (sorted like the definition).
    pub(crate) attempt: u32,
    pub(crate) participants: Vec<ValidatorId>,
    /// Validators left out of earlier attempts.
    pub(crate) excluded: Vec<Exclusion>,
    /// Timeouts, exclusion votes and blame evidence.
    pub(crate) faults: Faults,
    /// What this processor is for.
    role: Role,
}

/// What a processor is for: the current session's vault (key exchange, DKG, signing), or a
/// retiring vault of an earlier session, which only learns peers' keys and signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The current session's vault.
    Member,
    /// An earlier session's active vault: no DKG, no announcements.
    Retiring,
}

impl Processor {
    /// A processor for `coin`. `messaging` is the coin processor's current messaging key;
    /// `vault` a previously stored *active* vault (then no DKG runs).
    pub fn new(
        def: NetworkDefinition,
        coin: Coin,
        keys: &NodeKeys,
        messaging: MessagingKey,
        vault: Option<VaultRecord>,
    ) -> Result<Self> {
        let me = keys.validator_id();
        if !def.is_validator(&me) {
            return Err(ProtocolError::UnknownValidator(me));
        }
        if !def.coins.contains(&coin) {
            return Err(ProtocolError::Definition {
                field: "coins".into(),
                reason: format!("{coin} has no vault in this network"),
            });
        }
        // A stored active vault is kept only if it belongs to this definition: same session,
        // participants among its validators, and the context those imply.
        let vault = vault.filter(|v| {
            v.status == VaultStatus::Active
                && v.coin == coin
                && v.session == def.session
                && v.participants.iter().all(|p| def.is_validator(p))
                && v.participants.contains(&me)
                && v.context
                    == dkg::context(&def.name, coin, def.session, v.attempt, &v.participants)
        });
        // Without one, the DKG starts at attempt 0 with every validator.
        let (attempt, participants, excluded) = match &vault {
            Some(v) => (v.attempt, v.participants.clone(), v.excluded.clone()),
            None => (0, def.validators.clone(), Vec::new()),
        };
        let context = dkg::context(&def.name, coin, def.session, attempt, &participants);
        let i = participants
            .iter()
            .position(|p| *p == me)
            .and_then(|i| u16::try_from(i + 1).ok())
            .ok_or_else(|| ProtocolError::UnknownValidator(me.clone()))?;
        let n = u16::try_from(participants.len())
            .map_err(|_| ProtocolError::Dkg("too many participants".into()))?;
        let params = DkgParams {
            t: def.threshold,
            n,
            i,
            context,
        };
        let peers = def
            .validators
            .iter()
            .filter(|v| **v != me)
            .map(|v| (v.clone(), PeerView::default()))
            .collect();
        Ok(Processor {
            coin,
            me,
            params,
            messaging,
            signer: keys.processor_signer(),
            entropy: keys.dkg_entropy.clone(),
            peers,
            dkg: DkgState::default(),
            pending: Vec::new(),
            rejected: Vec::new(),
            vault,
            def,
            signing: Signing::default(),
            attempt,
            participants,
            excluded,
            faults: Faults::default(),
            role: Role::Member,
        })
    }

    /// The processor of a retiring vault (an earlier validator-set session, described by `def`):
    /// built with its active `vault` and its key share (serialized `ThresholdKeys`), it takes
    /// part in signing with that vault and learns peers' keys, and ignores DKG traffic.
    pub fn retiring(
        def: NetworkDefinition,
        keys: &NodeKeys,
        messaging: MessagingKey,
        vault: VaultRecord,
        share: &[u8],
    ) -> Result<Self> {
        let mut p = Processor::new(def, vault.coin, keys, messaging, Some(vault))?;
        p.role = Role::Retiring;
        p.set_key_share(share)?;
        Ok(p)
    }

    /// What this processor is for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Position (1-based) of `v` among the current attempt's participants (the vault's, once
    /// it exists): its PedPoP and FROST index.
    pub(crate) fn member_index(&self, v: &ValidatorId) -> Option<u16> {
        self.participants
            .iter()
            .position(|p| p == v)
            .and_then(|i| u16::try_from(i + 1).ok())
    }

    /// The participant with index `l`.
    pub(crate) fn member_at(&self, l: u16) -> Option<&ValidatorId> {
        usize::from(l)
            .checked_sub(1)
            .and_then(|i| self.participants.get(i))
    }

    /// The current DKG attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The current attempt's participants.
    pub fn participants(&self) -> &[ValidatorId] {
        &self.participants
    }

    /// Validators left out of earlier attempts, and why.
    pub fn excluded(&self) -> &[Exclusion] {
        &self.excluded
    }

    /// The coin.
    pub fn coin(&self) -> Coin {
        self.coin
    }

    /// This validator.
    pub fn me(&self) -> &ValidatorId {
        &self.me
    }

    /// The current DKG context.
    pub fn context(&self) -> [u8; 32] {
        self.params.context
    }

    /// The vault, once computed.
    pub fn vault(&self) -> Option<&VaultRecord> {
        self.vault.as_ref()
    }

    /// Peers as this processor knows them.
    pub fn peers(&self) -> &BTreeMap<ValidatorId, PeerView> {
        &self.peers
    }

    /// This processor's messaging key (public part and seq are what matter outside).
    pub fn messaging_key(&self) -> &MessagingKey {
        &self.messaging
    }

    /// Messages waiting to be checked.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Where the DKG stands.
    pub fn phase(&self) -> Phase {
        if let Some(v) = &self.vault {
            return match v.status {
                VaultStatus::Active => Phase::Active,
                VaultStatus::Failed => Phase::Failed,
                VaultStatus::Excluded => Phase::Excluded,
                VaultStatus::Pending => Phase::Confirming,
            };
        }
        if self.dkg.stage < DkgStage::Committed {
            Phase::KeyExchange
        } else if self.dkg.commitments.len() < usize::from(self.params.n) {
            Phase::Commitments
        } else if self.dkg.stage < DkgStage::SharesSent {
            Phase::CommitmentEcho
        } else {
            Phase::Shares
        }
    }

    /// Progress counters of the current phase: (received, expected).
    pub fn progress(&self) -> (usize, usize) {
        let n = usize::from(self.params.n);
        match self.phase() {
            Phase::KeyExchange => (
                self.participants
                    .iter()
                    .filter(|v| self.signer_of(v).is_some())
                    .count(),
                n - 1,
            ),
            Phase::Commitments => (self.dkg.commitments.len(), n),
            Phase::CommitmentEcho => (self.dkg.digests.len(), n),
            Phase::Shares => (self.dkg.shares.len(), n - 1),
            Phase::Confirming => (self.dkg.confirmations.len(), n),
            Phase::Active | Phase::Failed | Phase::Excluded => (n, n),
        }
    }

    /// Steps 3 and 5: announce the messaging key (general partition) and SignerReady (encrypted
    /// partition). Called when the processor starts, and again whenever the node wants them
    /// re-announced.
    pub fn start(&mut self) -> Vec<Output> {
        if self.role == Role::Retiring {
            return Vec::new(); // the current session's processor announces this coin's keys
        }
        let mut out = vec![
            Output::Bus(ProcessorMessage::ProcessorPublicKey(
                self.processor_public_key(),
            )),
            Output::Bus(ProcessorMessage::SignerReady(SignerReady {
                coin: self.coin,
                pubkey: self.signer.public(),
            })),
        ];
        if let Some(v) = self.vault.clone() {
            if matches!(v.status, VaultStatus::Pending | VaultStatus::Active) {
                out.push(Output::Bus(ProcessorMessage::PublicAddressAvailable(
                    self.address_message(&v),
                )));
            }
        }
        out
    }

    /// Our `ProcessorPublicKey`.
    pub fn processor_public_key(&self) -> ProcessorPublicKey {
        ProcessorPublicKey {
            coin: self.coin,
            pubkey: self.messaging.public,
            seq: self.messaging.seq,
        }
    }

    /// Step 4: replace this processor's messaging key. Refused while a DKG is running, since
    /// peers may have sealed messages to the old key that would be lost.
    pub fn rotate_messaging_key(&mut self, new: MessagingKey) -> Result<Vec<Output>> {
        if self.vault.is_none() && self.dkg.stage >= DkgStage::Committed {
            return Err(ProtocolError::Dkg(format!(
                "a {} DKG is in progress; rotate the messaging key after it completes",
                self.coin
            )));
        }
        if new.seq <= self.messaging.seq {
            return Err(ProtocolError::Key(
                "a rotated key needs a higher seq".into(),
            ));
        }
        self.messaging = new.clone();
        let mut out = vec![
            Output::Persist(Persist::MessagingKey {
                coin: self.coin,
                key: new,
            }),
            Output::Bus(ProcessorMessage::ProcessorPublicKey(
                self.processor_public_key(),
            )),
        ];
        // Prove the new key to every peer whose key we know.
        let targets: Vec<ValidatorId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.messaging_key.is_some())
            .map(|(v, _)| v.clone())
            .collect();
        for v in targets {
            out.extend(self.send_exchange(&v)?);
        }
        Ok(out)
    }

    /// Messages that waited in the buffer and were rejected once they could be checked. The
    /// node logs them and drops them from its inbound table.
    pub fn take_rejected(&mut self) -> Vec<(CoordinatorMessage, ProtocolError)> {
        std::mem::take(&mut self.rejected)
    }

    /// Handle one `...In` message. Errors name the peer at fault; the processor's state is
    /// unchanged by a rejected message.
    pub fn handle(&mut self, msg: CoordinatorMessage) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        match self.dispatch(&msg, &mut out)? {
            Handled::Wait => {
                let sender = sender_of(&msg);
                let waiting = self
                    .pending
                    .iter()
                    .filter(|m| sender_of(m) == sender)
                    .count();
                if waiting >= MAX_PENDING_PER_SENDER {
                    let peer = sender.cloned().unwrap_or_else(|| self.me.clone());
                    return Err(ProtocolError::peer(
                        &peer,
                        format!(
                            "{waiting} of its messages already wait to be checked; dropped a {}",
                            msg.kind()
                        ),
                    ));
                }
                self.pending.push(msg);
            }
            Handled::Done => self.retry_pending(&mut out),
        }
        Ok(out)
    }

    pub(crate) fn retry_pending(&mut self, out: &mut Vec<Output>) {
        loop {
            let mut progressed = false;
            let pending = std::mem::take(&mut self.pending);
            for msg in pending {
                match self.dispatch(&msg, out) {
                    Ok(Handled::Wait) => self.pending.push(msg),
                    Ok(Handled::Done) => progressed = true,
                    // It was checkable now and turned out bad: drop it, and say so.
                    Err(e) => {
                        self.rejected.push((msg, e));
                        progressed = true;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn dispatch(&mut self, msg: &CoordinatorMessage, out: &mut Vec<Output>) -> Result<Handled> {
        let retiring = self.role == Role::Retiring;
        if retiring && sender_of(msg).is_some_and(|v| !self.def.is_validator(v)) {
            return Ok(Handled::Done); // not a participant of this (retiring) vault
        }
        if let Some(result) = self.dispatch_signing(msg, out) {
            return result.map(|()| Handled::Done);
        }
        if retiring
            && !matches!(
                msg,
                CoordinatorMessage::ExternalPublicKeyIn(_)
                    | CoordinatorMessage::EncryptedPublicKeyIn(_)
            )
        {
            return Ok(Handled::Done); // DKG traffic of the current session
        }
        match msg {
            CoordinatorMessage::ExternalPublicKeyIn(m) => self.on_external_key(m, out),
            CoordinatorMessage::EncryptedPublicKeyIn(m) => self.on_encrypted_public_key(m, out),
            CoordinatorMessage::EncryptedKeyGenCommitmentIn(m) => self.on_commitment(m, out),
            CoordinatorMessage::EncryptedKeyShareIn(m) => self.on_share(m, out),
            CoordinatorMessage::GeneralIn(m) => self.on_general(m, out),
            // Signing's inputs were taken by `dispatch_signing` above.
            CoordinatorMessage::EncryptedPreprocessIn(_)
            | CoordinatorMessage::EncryptedSignatureShareIn(_)
            | CoordinatorMessage::SignatureRequested(_) => Ok(Handled::Done),
        }
    }

    fn check_sender(&self, from: &ValidatorId, coin: Coin) -> Result<()> {
        if !self.def.is_validator(from) || *from == self.me {
            return Err(ProtocolError::UnknownValidator(from.clone()));
        }
        if coin != self.coin {
            return Err(ProtocolError::peer(
                from,
                format!("{coin} message on the {} topic", self.coin),
            ));
        }
        Ok(())
    }

    pub(crate) fn index_of(&self, v: &ValidatorId) -> Result<u16> {
        self.member_index(v).ok_or_else(|| {
            ProtocolError::peer(
                v,
                format!("not a participant of DKG attempt {}", self.attempt),
            )
        })
    }

    /// What a DKG seal binds besides the parties: the DKG context (zero for the key exchange,
    /// which outlives contexts).
    fn dkg_seal_context(&self, kind: SealKind) -> [u8; 32] {
        if kind == SealKind::PublicKey {
            [0; 32]
        } else {
            self.params.context
        }
    }

    fn seal_ctx<'a>(
        &'a self,
        kind: SealKind,
        from: &'a ValidatorId,
        to: &'a ValidatorId,
        context: [u8; 32],
    ) -> SealContext<'a> {
        SealContext {
            network: &self.def.name,
            coin: self.coin,
            kind,
            from,
            to,
            context,
        }
    }

    /// Open a DKG payload from `from` (see [`Processor::open_with`]).
    fn open_from(
        &self,
        kind: SealKind,
        from: &ValidatorId,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.open_with(kind, from, self.dkg_seal_context(kind), sealed)
    }

    /// Open a sealed payload from `from`, bound to `context`, and check it was sealed by
    /// `from`'s known messaging key; `None` while that key is unknown.
    pub(crate) fn open_with(
        &self,
        kind: SealKind,
        from: &ValidatorId,
        context: [u8; 32],
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let Some((known, _)) = self.peers.get(from).and_then(|p| p.messaging_key) else {
            return Ok(None);
        };
        let (static_key, payload) = seal::open(
            &self.messaging,
            &self.seal_ctx(kind, from, &self.me, context),
            sealed,
        )?;
        if static_key != known {
            return Err(ProtocolError::Seal {
                peer: from.clone(),
                reason: "sealed by a key that is not the sender's processor messaging key".into(),
            });
        }
        Ok(Some(payload))
    }

    /// Seal a DKG payload to `to` (see [`Processor::seal_with`]).
    fn seal_to(&self, kind: SealKind, to: &ValidatorId, payload: &[u8]) -> Result<Vec<u8>> {
        self.seal_with(kind, to, self.dkg_seal_context(kind), payload)
    }

    /// Seal `payload` to `to`'s processor messaging key, bound to `context`.
    pub(crate) fn seal_with(
        &self,
        kind: SealKind,
        to: &ValidatorId,
        context: [u8; 32],
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let (key, _) = self
            .peers
            .get(to)
            .and_then(|p| p.messaging_key)
            .ok_or_else(|| ProtocolError::SealLocal(format!("no messaging key for {to}")))?;
        seal::seal(
            &self.messaging,
            &key,
            &self.seal_ctx(kind, &self.me, to, context),
            payload,
        )
    }

    /// Step 9.
    fn send_exchange(&mut self, to: &ValidatorId) -> Result<Vec<Output>> {
        let payload = postcard::to_stdvec(&PublicKeyPayload {
            signer: self.signer.public(),
            seq: self.messaging.seq,
        })
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let sealed = self.seal_to(SealKind::PublicKey, to, &payload)?;
        if let Some(p) = self.peers.get_mut(to) {
            p.sent_exchange_to = p.messaging_key.map(|(_, seq)| seq);
        }
        Ok(vec![Output::Bus(ProcessorMessage::EncryptedPublicKeyOut(
            EncryptedPublicKeyOut {
                coin: self.coin,
                to: to.clone(),
                sealed,
            },
        ))])
    }

    /// Step 8 as received: learn (or replace, step 4) an external processor's messaging key,
    /// then send it ours sealed (step 9).
    fn on_external_key(
        &mut self,
        m: &ExternalPublicKeyIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        self.check_sender(&m.from, m.key.coin)?;
        let peer = self
            .peers
            .get_mut(&m.from)
            .ok_or_else(|| ProtocolError::UnknownValidator(m.from.clone()))?;
        match peer.messaging_key {
            Some((_, seq)) if seq > m.key.seq => return Ok(Handled::Done), // stale
            Some((key, seq)) if seq == m.key.seq && key != m.key.pubkey => {
                return Err(ProtocolError::peer(
                    &m.from,
                    format!("two messaging keys with seq {seq}"),
                ));
            }
            Some((_, seq)) if seq == m.key.seq && peer.sent_exchange_to == Some(seq) => {
                return Ok(Handled::Done); // already have it, already answered
            }
            _ => {}
        }
        // Step 4: forget the previous key.
        peer.messaging_key = Some((m.key.pubkey, m.key.seq));
        out.extend(self.send_exchange(&m.from)?);
        Ok(Handled::Done)
    }

    /// Step 12: decrypt the external processor's public key message and keep its signer key.
    fn on_encrypted_public_key(
        &mut self,
        m: &EncryptedPublicKeyIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        self.check_sender(&m.from, m.msg.coin)?;
        if m.msg.to != self.me {
            return Err(ProtocolError::peer(
                &m.from,
                "EncryptedPublicKeyOut addressed to another validator",
            ));
        }
        let Some((_, known_seq)) = self.peers.get(&m.from).and_then(|p| p.messaging_key) else {
            return Ok(Handled::Wait);
        };
        // Open without the static check first, to read which key version sealed it.
        let (static_key, payload) = seal::open(
            &self.messaging,
            &self.seal_ctx(
                SealKind::PublicKey,
                &m.from,
                &self.me,
                self.dkg_seal_context(SealKind::PublicKey),
            ),
            &m.msg.sealed,
        )?;
        let payload: PublicKeyPayload = postcard::from_bytes(&payload)
            .map_err(|e| ProtocolError::peer(&m.from, format!("public key payload: {e}")))?;
        if payload.seq > known_seq {
            return Ok(Handled::Wait); // its new ProcessorPublicKey has not reached us yet
        }
        if payload.seq < known_seq {
            return Ok(Handled::Done); // stale
        }
        let peer = self
            .peers
            .get_mut(&m.from)
            .ok_or_else(|| ProtocolError::UnknownValidator(m.from.clone()))?;
        if Some((static_key, payload.seq)) != peer.messaging_key {
            return Err(ProtocolError::Seal {
                peer: m.from.clone(),
                reason: "sealed by a key that is not the sender's processor messaging key".into(),
            });
        }
        if let Some(existing) = peer.signer {
            if existing != payload.signer {
                return Err(ProtocolError::peer(
                    &m.from,
                    "processor signature key changed",
                ));
            }
        }
        peer.signer = Some(payload.signer);
        peer.verified_seq = Some(payload.seq);
        self.maybe_start_dkg(out)?;
        Ok(Handled::Done)
    }

    /// Step 13: once every participant's encrypted key arrived, send our commitments.
    pub(crate) fn maybe_start_dkg(&mut self, out: &mut Vec<Output>) -> Result<()> {
        let others: Vec<ValidatorId> = self
            .participants
            .iter()
            .filter(|v| **v != self.me)
            .cloned()
            .collect();
        if self.dkg.stage >= DkgStage::Committed
            || self.vault.is_some()
            || others.iter().any(|v| self.signer_of(v).is_none())
        {
            return Ok(());
        }
        let commitments = dkg::commitments(self.coin.curve(), &self.entropy, &self.params)
            .map_err(|e| ProtocolError::Dkg(e.to_string()))?;
        let signature = self.signer.sign(
            COMMITMENT_DOMAIN,
            &payload_body(
                self.coin,
                &self.params.context,
                &self.me,
                None,
                &commitments,
            ),
        );
        let payload = postcard::to_stdvec(&KeyGenPayload {
            bytes: commitments.clone(),
            signature: signature.clone(),
        })
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let mut sends = Vec::new();
        for v in &others {
            let sealed = self.seal_to(SealKind::KeyGenCommitment, v, &payload)?;
            sends.push(Output::Bus(ProcessorMessage::EncryptedKeyGenCommitmentOut(
                EncryptedKeyGenCommitmentOut {
                    coin: self.coin,
                    to: v.clone(),
                    context: self.params.context,
                    sealed,
                },
            )));
        }
        self.dkg.stage = DkgStage::Committed;
        self.faults
            .record_commitment(self.params.i, &commitments, &signature);
        self.dkg.commitments.insert(self.params.i, commitments);
        self.dkg.commitment_sigs.insert(self.params.i, signature);
        out.extend(sends);
        self.after_commitment(out)
    }

    /// Whether a DKG message belongs to the current attempt: `None` if it does, else what to
    /// do with it (done with if it is for an earlier attempt, wait if it may be for a later one
    /// this node has not reached yet).
    pub(crate) fn attempt_of(&self, context: &[u8; 32]) -> Option<Handled> {
        if *context == self.params.context {
            None
        } else if self.faults.is_past(context) || self.vault_decided() {
            Some(Handled::Done)
        } else {
            Some(Handled::Wait)
        }
    }

    /// Whether this coin's DKG is over here (active, failed or left out).
    pub(crate) fn vault_decided(&self) -> bool {
        self.vault
            .as_ref()
            .is_some_and(|v| v.status != VaultStatus::Pending)
    }

    fn check_addressed(&self, from: &ValidatorId, to: &ValidatorId) -> Result<()> {
        if *to != self.me {
            return Err(ProtocolError::peer(
                from,
                "message addressed to another validator",
            ));
        }
        Ok(())
    }

    /// Open a signed DKG payload and check its sender's processor signature; `None` while the
    /// sender's keys are unknown.
    fn open_signed(
        &self,
        kind: SealKind,
        from: &ValidatorId,
        sealed: &[u8],
        domain: &[u8],
        to: Option<&ValidatorId>,
    ) -> Result<Option<KeyGenPayload>> {
        let Some(signer) = self.signer_of(from) else {
            return Ok(None);
        };
        let Some(bytes) = self.open_from(kind, from, sealed)? else {
            return Ok(None);
        };
        let payload: KeyGenPayload = postcard::from_bytes(&bytes)
            .map_err(|e| ProtocolError::peer(from, format!("DKG payload: {e}")))?;
        let body = payload_body(self.coin, &self.params.context, from, to, &payload.bytes);
        if !verify_processor_signature(&signer, domain, &body, &payload.signature) {
            return Err(ProtocolError::peer(
                from,
                "bad processor signature on its DKG payload",
            ));
        }
        Ok(Some(payload))
    }

    /// Step 16 (first half): keep a participant's commitments.
    fn on_commitment(
        &mut self,
        m: &EncryptedKeyGenCommitmentIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        self.check_sender(&m.from, m.msg.coin)?;
        self.check_addressed(&m.from, &m.msg.to)?;
        if let Some(h) = self.attempt_of(&m.msg.context) {
            return Ok(h);
        }
        if self.vault.is_some() {
            return Ok(Handled::Done);
        }
        let l = self.index_of(&m.from)?;
        let Some(payload) = self.open_signed(
            SealKind::KeyGenCommitment,
            &m.from,
            &m.msg.sealed,
            COMMITMENT_DOMAIN,
            None,
        )?
        else {
            return Ok(Handled::Wait);
        };
        let p = DkgParams {
            i: l,
            ..self.params
        };
        dkg::validate_commitment(self.coin.curve(), &p, &payload.bytes)
            .map_err(|e| ProtocolError::peer(&m.from, format!("malformed commitments: {e}")))?;
        if let Some(existing) = self.dkg.commitments.get(&l) {
            if *existing != payload.bytes {
                return Err(ProtocolError::peer(
                    &m.from,
                    "sent two different commitments",
                ));
            }
            return Ok(Handled::Done);
        }
        self.faults
            .record_commitment(l, &payload.bytes, &payload.signature);
        self.dkg.commitments.insert(l, payload.bytes);
        self.dkg.commitment_sigs.insert(l, payload.signature);
        self.after_commitment(out)?;
        self.check_equivocation(out);
        Ok(Handled::Done)
    }

    /// All n commitments in: echo their digest.
    fn after_commitment(&mut self, out: &mut Vec<Output>) -> Result<()> {
        if self.dkg.stage < DkgStage::Committed
            || self.dkg.commitments.len() < usize::from(self.params.n)
            || self.dkg.digests.contains_key(&self.params.i)
        {
            return Ok(());
        }
        let hashes = dkg::commitment_hashes(&self.params.context, &self.dkg.commitments);
        let digest = dkg::commitments_digest(&self.params.context, &hashes);
        self.dkg.digests.insert(self.params.i, digest);
        self.dkg.hashes.insert(self.params.i, hashes.clone());
        self.publish_differing_commitments(out);
        let body = digest_body(self.coin, &self.params.context, &digest);
        out.push(Output::Bus(ProcessorMessage::KeyGenCommitmentsDigest(
            KeyGenCommitmentsDigest {
                coin: self.coin,
                context: self.params.context,
                digest,
                hashes,
                signature: self.signer.sign(DIGEST_DOMAIN, &body),
            },
        )));
        self.after_digest(out)
    }

    /// A participant's processor signature key (ours included), once known.
    pub(crate) fn signer_of(&self, v: &ValidatorId) -> Option<[u8; 32]> {
        if *v == self.me {
            return Some(self.signer.public());
        }
        self.peers.get(v).and_then(|p| p.signer)
    }

    fn on_general(&mut self, m: &GeneralIn, out: &mut Vec<Output>) -> Result<Handled> {
        match &m.msg {
            GeneralMessage::KeyGenCommitmentsDigest(d) => {
                self.check_sender(&m.from, d.coin)?;
                if let Some(h) = self.attempt_of(&d.context) {
                    return Ok(h);
                }
                if self.vault.is_some() {
                    return Ok(Handled::Done);
                }
                let l = self.index_of(&m.from)?;
                let Some(signer) = self.signer_of(&m.from) else {
                    return Ok(Handled::Wait);
                };
                let body = digest_body(d.coin, &d.context, &d.digest);
                if !verify_processor_signature(&signer, DIGEST_DOMAIN, &body, &d.signature) {
                    return Err(ProtocolError::peer(
                        &m.from,
                        "bad processor signature on digest",
                    ));
                }
                if d.hashes.len() != usize::from(self.params.n)
                    || dkg::commitments_digest(&d.context, &d.hashes) != d.digest
                {
                    return Err(ProtocolError::peer(
                        &m.from,
                        "digest does not match its commitment hashes",
                    ));
                }
                match self.dkg.digests.get(&l) {
                    Some(existing) if *existing != d.digest => {
                        return Err(ProtocolError::peer(&m.from, "sent two different digests"))
                    }
                    Some(_) => return Ok(Handled::Done),
                    None => {}
                }
                self.dkg.digests.insert(l, d.digest);
                self.dkg.hashes.insert(l, d.hashes.clone());
                self.publish_differing_commitments(out);
                self.after_digest(out)?;
                Ok(Handled::Done)
            }
            GeneralMessage::KeyGenExclusionVote(v) => self.on_vote(&m.from, v, out),
            GeneralMessage::KeyGenBlame(b) => self.on_blame(&m.from, b, out),
            GeneralMessage::PublicAddressAvailable(a) => {
                self.check_sender(&m.from, a.coin)?;
                if let Some(h) = self.attempt_of(&a.context) {
                    return Ok(h);
                }
                if self
                    .vault
                    .as_ref()
                    .is_some_and(|v| v.status != VaultStatus::Pending)
                {
                    return Ok(Handled::Done); // decided: nothing left to confirm
                }
                let Some(signer) = self.signer_of(&m.from) else {
                    return Ok(Handled::Wait);
                };
                if !verify_processor_signature(
                    &signer,
                    ADDRESS_DOMAIN,
                    &address_body(a),
                    &a.signature,
                ) {
                    return Err(ProtocolError::peer(
                        &m.from,
                        "bad processor signature on address",
                    ));
                }
                let l = self.index_of(&m.from)?;
                if self.member_index(&self.me).is_none() {
                    return Ok(Handled::Done);
                }
                match self.dkg.confirmations.get(&l) {
                    Some(existing) if *existing != a.group_key => {
                        return Err(ProtocolError::peer(
                            &m.from,
                            "announced two different group keys",
                        ))
                    }
                    Some(_) => return Ok(Handled::Done),
                    None => {}
                }
                self.dkg.confirmations.insert(l, a.group_key.clone());
                self.after_confirmation(out);
                Ok(Handled::Done)
            }
            // Keys arrive as ExternalPublicKeyIn; the rest is informational (signing messages
            // were dispatched before).
            GeneralMessage::CoordinatorPublicKey(_)
            | GeneralMessage::ProcessorPublicKey(_)
            | GeneralMessage::SignerReady(_)
            | GeneralMessage::SignRequest(_)
            | GeneralMessage::SignatureAvailable(_) => Ok(Handled::Done),
        }
    }

    /// All n digests in: go on to shares if they match, fail if they do not.
    fn after_digest(&mut self, out: &mut Vec<Output>) -> Result<()> {
        if self.dkg.stage >= DkgStage::SharesSent
            || self.vault.is_some()
            || self.dkg.digests.len() < usize::from(self.params.n)
        {
            return Ok(());
        }
        let Some(mine) = self.dkg.digests.get(&self.params.i).copied() else {
            return Ok(());
        };
        if self.dkg.digests.values().any(|d| *d != mine) {
            // Someone saw other commitments than we did: our signed copies of the differing
            // ones are published (`publish_differing_commitments`), so whoever holds another
            // copy proves the equivocation. A false echo proves nothing and is left to the
            // timeout vote.
            return Ok(());
        }
        let shares = match dkg::secret_shares(
            self.coin.curve(),
            &self.entropy,
            &self.params,
            &self.dkg.commitments,
        ) {
            Ok(s) => s,
            Err(DkgFailure::Blame { participant, .. }) => {
                // Every participant checks the same commitments (the echo matched), so every
                // one of them finds the same invalid proof of knowledge.
                if let Some(v) = self.member_at(participant).cloned() {
                    self.prove_fault(v, ExclusionReason::InvalidCommitments, out);
                }
                return Ok(());
            }
            Err(e) => {
                self.fail(out, self.describe(&e));
                return Ok(());
            }
        };
        let mut sends = Vec::new();
        for (l, share) in shares {
            let Some(v) = self.member_at(l).cloned() else {
                continue;
            };
            let signature = self.signer.sign(
                SHARE_DOMAIN,
                &payload_body(self.coin, &self.params.context, &self.me, Some(&v), &share),
            );
            let payload = postcard::to_stdvec(&KeyGenPayload {
                bytes: share,
                signature,
            })
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            let sealed = self.seal_to(SealKind::KeyShare, &v, &payload)?;
            sends.push(Output::Bus(ProcessorMessage::EncryptedKeyShareOut(
                EncryptedKeyShareOut {
                    coin: self.coin,
                    to: v,
                    context: self.params.context,
                    sealed,
                },
            )));
        }
        self.dkg.stage = DkgStage::SharesSent;
        out.extend(sends);
        self.after_share(out);
        Ok(())
    }

    /// Step 19: keep a share addressed to us.
    fn on_share(&mut self, m: &EncryptedKeyShareIn, out: &mut Vec<Output>) -> Result<Handled> {
        self.check_sender(&m.from, m.msg.coin)?;
        self.check_addressed(&m.from, &m.msg.to)?;
        if let Some(h) = self.attempt_of(&m.msg.context) {
            return Ok(h);
        }
        if self.vault.is_some() {
            return Ok(Handled::Done);
        }
        let l = self.index_of(&m.from)?;
        let me = self.me.clone();
        let Some(payload) = self.open_signed(
            SealKind::KeyShare,
            &m.from,
            &m.msg.sealed,
            SHARE_DOMAIN,
            Some(&me),
        )?
        else {
            return Ok(Handled::Wait);
        };
        if let Some(existing) = self.dkg.shares.get(&l) {
            if *existing != payload.bytes {
                return Err(ProtocolError::peer(&m.from, "sent two different shares"));
            }
            return Ok(Handled::Done);
        }
        if dkg::validate_share(self.coin.curve(), &self.params, &payload.bytes).is_err() {
            // Signed garbage is evidence too: publish it so everyone blames the sender.
            self.blame_share(m.from.clone(), payload.bytes, payload.signature, None, out);
            return Ok(Handled::Done);
        }
        self.dkg.shares.insert(l, payload.bytes);
        self.dkg.share_sigs.insert(l, payload.signature);
        self.after_share(out);
        Ok(Handled::Done)
    }

    /// Step 20: all shares in: compute the key share, the group key and the address.
    fn after_share(&mut self, out: &mut Vec<Output>) {
        if self.dkg.stage < DkgStage::SharesSent
            || self.vault.is_some()
            || self.dkg.shares.len() + 1 < usize::from(self.params.n)
        {
            return;
        }
        let result = dkg::complete(
            self.coin.curve(),
            &self.entropy,
            &self.params,
            &self.dkg.commitments,
            &self.dkg.shares,
        );
        let output = match result {
            Ok(o) => o,
            Err(DkgFailure::InvalidShare { participant, proof }) => {
                let (Some(v), Some(share), Some(sig)) = (
                    self.member_at(participant).cloned(),
                    self.dkg.shares.get(&participant).cloned(),
                    self.dkg.share_sigs.get(&participant).cloned(),
                ) else {
                    self.fail(out, format!("participant {participant}: invalid share"));
                    return;
                };
                self.blame_share(v, share, sig, proof, out);
                return;
            }
            Err(e) => {
                self.fail(out, self.describe(&e));
                return;
            }
        };
        let address = match address::address(self.coin, &output.group_key) {
            Ok(a) => a,
            Err(e) => {
                self.fail(out, format!("address: {e}"));
                return;
            }
        };
        let vault = VaultRecord {
            coin: self.coin,
            session: self.def.session,
            context: self.params.context,
            attempt: self.attempt,
            status: VaultStatus::Pending,
            group_key: output.group_key.clone(),
            address,
            threshold: self.params.t,
            participants: self.participants.clone(),
            excluded: self.excluded.clone(),
            reason: None,
        };
        if let Err(e) = self.set_key_share(&output.keys) {
            self.fail(out, format!("key share unusable for signing: {e}"));
            return;
        }
        out.push(Output::Persist(Persist::KeyShare {
            coin: self.coin,
            context: self.params.context,
            keys: output.keys,
        }));
        out.push(Output::Persist(Persist::Vault(vault.clone())));
        out.push(Output::Bus(ProcessorMessage::PublicAddressAvailable(
            self.address_message(&vault),
        )));
        self.dkg
            .confirmations
            .insert(self.params.i, output.group_key);
        self.vault = Some(vault);
        self.after_confirmation(out);
    }

    /// A vault is active when every participant published the same group key.
    fn after_confirmation(&mut self, out: &mut Vec<Output>) {
        let Some(vault) = self.vault.as_mut() else {
            return;
        };
        if vault.status != VaultStatus::Pending
            || self.dkg.confirmations.len() < usize::from(self.params.n)
        {
            return;
        }
        let differing: Vec<String> = self
            .dkg
            .confirmations
            .iter()
            .filter(|(_, k)| **k != vault.group_key)
            .filter_map(|(l, _)| {
                usize::from(*l)
                    .checked_sub(1)
                    .and_then(|i| self.participants.get(i))
                    .map(|v| v.to_string())
            })
            .collect();
        if differing.is_empty() {
            vault.status = VaultStatus::Active;
        } else {
            vault.status = VaultStatus::Failed;
            vault.reason = Some(format!("group key differs at {}", differing.join(", ")));
        }
        out.push(Output::Persist(Persist::Vault(vault.clone())));
    }

    fn describe(&self, e: &DkgFailure) -> String {
        match e {
            DkgFailure::Blame {
                participant,
                reason,
            } => {
                let who = self
                    .member_at(*participant)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                format!("{who} (participant {participant}): {reason}")
            }
            DkgFailure::InvalidShare { participant, .. } => {
                let who = self
                    .member_at(*participant)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                format!("{who} (participant {participant}): invalid secret share")
            }
            DkgFailure::Other(s) => s.clone(),
        }
    }

    pub(crate) fn fail(&mut self, out: &mut Vec<Output>, reason: String) {
        self.decide(out, VaultStatus::Failed, reason);
    }

    /// End this coin's DKG here without a key (failed, or left out by the others).
    pub(crate) fn decide(&mut self, out: &mut Vec<Output>, status: VaultStatus, reason: String) {
        let vault = VaultRecord {
            coin: self.coin,
            session: self.def.session,
            context: self.params.context,
            attempt: self.attempt,
            status,
            group_key: Vec::new(),
            address: String::new(),
            threshold: self.params.t,
            participants: self.participants.clone(),
            excluded: self.excluded.clone(),
            reason: Some(reason),
        };
        out.push(Output::Persist(Persist::Vault(vault.clone())));
        self.vault = Some(vault);
    }

    fn address_message(&self, v: &VaultRecord) -> PublicAddressAvailable {
        let mut msg = PublicAddressAvailable {
            coin: v.coin,
            context: v.context,
            group_key: v.group_key.clone(),
            address: v.address.clone(),
            threshold: v.threshold,
            participants: v.participants.clone(),
            signature: Vec::new(),
        };
        msg.signature = self.signer.sign(ADDRESS_DOMAIN, &address_body(&msg));
        msg
    }
}

/// The sender of a DKG input (signing inputs are checked by `signing`).
fn sender_of(m: &CoordinatorMessage) -> Option<&ValidatorId> {
    match m {
        CoordinatorMessage::ExternalPublicKeyIn(m) => Some(&m.from),
        CoordinatorMessage::EncryptedPublicKeyIn(m) => Some(&m.from),
        CoordinatorMessage::EncryptedKeyGenCommitmentIn(m) => Some(&m.from),
        CoordinatorMessage::EncryptedKeyShareIn(m) => Some(&m.from),
        CoordinatorMessage::GeneralIn(m) => Some(&m.from),
        _ => None,
    }
}

/// What a sender signs over a DKG payload: coin, context, sender, recipient (shares only) and
/// the PedPoP bytes.
pub(crate) fn payload_body(
    coin: Coin,
    context: &[u8; 32],
    from: &ValidatorId,
    to: Option<&ValidatorId>,
    bytes: &[u8],
) -> Vec<u8> {
    let mut b = coin.ticker().as_bytes().to_vec();
    b.extend_from_slice(context);
    for v in std::iter::once(from).chain(to) {
        b.push(v.as_bytes().len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    b.extend_from_slice(bytes);
    b
}

fn digest_body(coin: Coin, context: &[u8; 32], digest: &[u8; 32]) -> Vec<u8> {
    let mut b = coin.ticker().as_bytes().to_vec();
    b.extend_from_slice(context);
    b.extend_from_slice(digest);
    b
}

fn address_body(a: &PublicAddressAvailable) -> Vec<u8> {
    let unsigned = PublicAddressAvailable {
        signature: Vec::new(),
        ..a.clone()
    };
    postcard::to_stdvec(&unsigned).unwrap_or_default()
}
