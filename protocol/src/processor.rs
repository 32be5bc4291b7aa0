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

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::{
    address,
    dkg::{self, DkgFailure, DkgParams},
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
    keys::{verify_processor_signature, MessagingKey, NodeKeys, ProcessorSigner},
    messages::*,
    network::NetworkDefinition,
    seal::{self, SealContext, SealKind},
    signing::Signing,
    vault::{CheaterReport, SignRecord, VaultRecord, VaultStatus},
};

const DIGEST_DOMAIN: &[u8] = b"KeyGenCommitmentsDigest";
const ADDRESS_DOMAIN: &[u8] = b"PublicAddressAvailable";

/// What the processor wants done.
#[derive(Debug)]
pub enum Output {
    /// Put this on the bus for the coordinator (after persisting this call's `Persist`s).
    Bus(BusMessage),
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
    /// Signing: a request's record (pending, done or failed).
    SignRecord(SignRecord),
    /// Signing: a signer sent an invalid preprocess or share.
    Cheater(CheaterReport),
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
            Persist::SignRecord(r) => write!(f, "SignRecord({:?})", r),
            Persist::Cheater(c) => write!(f, "Cheater({:?})", c),
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

#[derive(Default)]
struct DkgState {
    started: bool,
    commitments: BTreeMap<u16, Vec<u8>>,
    digests: BTreeMap<u16, [u8; 32]>,
    shares_sent: bool,
    shares: BTreeMap<u16, Vec<u8>>,
    confirmations: BTreeMap<u16, Vec<u8>>,
}

enum Handled {
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
    params: DkgParams,
    messaging: MessagingKey,
    pub(crate) signer: ProcessorSigner,
    entropy: Zeroizing<[u8; 32]>,
    peers: BTreeMap<ValidatorId, PeerView>,
    dkg: DkgState,
    pending: Vec<BusMessage>,
    rejected: Vec<(BusMessage, ProtocolError)>,
    vault: Option<VaultRecord>,
    pub(crate) signing: Signing,
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
        let i = def
            .participant_index(&me)
            .ok_or_else(|| ProtocolError::UnknownValidator(me.clone()))?;
        if !def.coins.contains(&coin) {
            return Err(ProtocolError::Definition {
                field: "coins".into(),
                reason: format!("{coin} has no vault in this network"),
            });
        }
        // Issue-2 scope: one attempt per session, with every validator.
        let context = dkg::context(&def.name, coin, def.session, 0, &def.validators);
        let params = DkgParams {
            t: def.threshold,
            n: def.n(),
            i,
            context,
        };
        let peers = def
            .validators
            .iter()
            .filter(|v| **v != me)
            .map(|v| (v.clone(), PeerView::default()))
            .collect();
        let vault = vault.filter(|v| v.status == VaultStatus::Active && v.context == context);
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
        })
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
                VaultStatus::Pending => Phase::Confirming,
            };
        }
        if !self.dkg.started {
            Phase::KeyExchange
        } else if self.dkg.commitments.len() < usize::from(self.params.n) {
            Phase::Commitments
        } else if !self.dkg.shares_sent {
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
                self.peers.values().filter(|p| p.signer.is_some()).count(),
                n - 1,
            ),
            Phase::Commitments => (self.dkg.commitments.len(), n),
            Phase::CommitmentEcho => (self.dkg.digests.len(), n),
            Phase::Shares => (self.dkg.shares.len(), n - 1),
            Phase::Confirming => (self.dkg.confirmations.len(), n),
            Phase::Active | Phase::Failed => (n, n),
        }
    }

    /// Steps 3 and 5: announce the messaging key (general partition) and SignerReady (encrypted
    /// partition). Called when the processor starts, and again whenever the node wants them
    /// re-announced.
    pub fn start(&mut self) -> Vec<Output> {
        let mut out = vec![
            Output::Bus(BusMessage::ProcessorPublicKey(self.processor_public_key())),
            Output::Bus(BusMessage::SignerReady(SignerReady {
                coin: self.coin,
                pubkey: self.signer.public(),
            })),
        ];
        if let Some(v) = self.vault.clone() {
            if v.status != VaultStatus::Failed {
                out.push(Output::Bus(BusMessage::PublicAddressAvailable(
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
        if self.vault.is_none() && self.dkg.started {
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
            Output::Bus(BusMessage::ProcessorPublicKey(self.processor_public_key())),
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
    pub fn take_rejected(&mut self) -> Vec<(BusMessage, ProtocolError)> {
        std::mem::take(&mut self.rejected)
    }

    /// Handle one `...In` message. Errors name the peer at fault; the processor's state is
    /// unchanged by a rejected message.
    pub fn handle(&mut self, msg: BusMessage) -> Result<Vec<Output>> {
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

    fn retry_pending(&mut self, out: &mut Vec<Output>) {
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

    fn dispatch(&mut self, msg: &BusMessage, out: &mut Vec<Output>) -> Result<Handled> {
        if let Some(result) = self.dispatch_signing(msg, out) {
            return result.map(|()| Handled::Done);
        }
        match msg {
            BusMessage::ExternalPublicKeyIn(m) => self.on_external_key(m, out),
            BusMessage::EncryptedPublicKeyIn(m) => self.on_encrypted_public_key(m, out),
            BusMessage::EncryptedKeyGenCommitmentIn(m) => self.on_commitment(m, out),
            BusMessage::EncryptedKeyShareIn(m) => self.on_share(m, out),
            BusMessage::GeneralIn(m) => self.on_general(m, out),
            other => Err(ProtocolError::Malformed(format!(
                "{} is not an input of the processor",
                other.kind()
            ))),
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

    fn index_of(&self, v: &ValidatorId) -> Result<u16> {
        self.def
            .participant_index(v)
            .ok_or_else(|| ProtocolError::UnknownValidator(v.clone()))
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
        Ok(vec![Output::Bus(BusMessage::EncryptedPublicKeyOut(
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
    fn maybe_start_dkg(&mut self, out: &mut Vec<Output>) -> Result<()> {
        if self.dkg.started
            || self.vault.is_some()
            || self.peers.values().any(|p| p.signer.is_none())
        {
            return Ok(());
        }
        let commitments = dkg::commitments(self.coin.curve(), &self.entropy, &self.params)
            .map_err(|e| ProtocolError::Dkg(e.to_string()))?;
        let mut sends = Vec::new();
        for v in self.peers.keys() {
            let sealed = self.seal_to(SealKind::KeyGenCommitment, v, &commitments)?;
            sends.push(Output::Bus(BusMessage::EncryptedKeyGenCommitmentOut(
                EncryptedKeyGenCommitmentOut {
                    coin: self.coin,
                    to: v.clone(),
                    context: self.params.context,
                    sealed,
                },
            )));
        }
        self.dkg.started = true;
        self.dkg.commitments.insert(self.params.i, commitments);
        out.extend(sends);
        self.after_commitment(out)
    }

    fn check_context(
        &self,
        from: &ValidatorId,
        to: &ValidatorId,
        context: &[u8; 32],
    ) -> Result<()> {
        if *to != self.me {
            return Err(ProtocolError::peer(
                from,
                "message addressed to another validator",
            ));
        }
        if *context != self.params.context {
            return Err(ProtocolError::peer(from, "message for another DKG context"));
        }
        Ok(())
    }

    /// Step 16 (first half): keep a participant's commitments.
    fn on_commitment(
        &mut self,
        m: &EncryptedKeyGenCommitmentIn,
        out: &mut Vec<Output>,
    ) -> Result<Handled> {
        self.check_sender(&m.from, m.msg.coin)?;
        self.check_context(&m.from, &m.msg.to, &m.msg.context)?;
        if self.vault.is_some() {
            return Ok(Handled::Done);
        }
        let Some(bytes) = self.open_from(SealKind::KeyGenCommitment, &m.from, &m.msg.sealed)?
        else {
            return Ok(Handled::Wait);
        };
        let l = self.index_of(&m.from)?;
        let p = DkgParams {
            i: l,
            ..self.params
        };
        dkg::validate_commitment(self.coin.curve(), &p, &bytes)
            .map_err(|e| ProtocolError::peer(&m.from, format!("malformed commitments: {e}")))?;
        if let Some(existing) = self.dkg.commitments.get(&l) {
            if *existing != bytes {
                return Err(ProtocolError::peer(
                    &m.from,
                    "sent two different commitments",
                ));
            }
            return Ok(Handled::Done);
        }
        self.dkg.commitments.insert(l, bytes);
        self.after_commitment(out)?;
        Ok(Handled::Done)
    }

    /// All n commitments in: echo their digest.
    fn after_commitment(&mut self, out: &mut Vec<Output>) -> Result<()> {
        if !self.dkg.started
            || self.dkg.commitments.len() < usize::from(self.params.n)
            || self.dkg.digests.contains_key(&self.params.i)
        {
            return Ok(());
        }
        let digest = dkg::commitments_digest(&self.params.context, &self.dkg.commitments);
        self.dkg.digests.insert(self.params.i, digest);
        let body = digest_body(self.coin, &self.params.context, &digest);
        out.push(Output::Bus(BusMessage::KeyGenCommitmentsDigest(
            KeyGenCommitmentsDigest {
                coin: self.coin,
                context: self.params.context,
                digest,
                signature: self.signer.sign(DIGEST_DOMAIN, &body),
            },
        )));
        self.after_digest(out)
    }

    fn signer_of(&self, v: &ValidatorId) -> Option<[u8; 32]> {
        self.peers.get(v).and_then(|p| p.signer)
    }

    fn on_general(&mut self, m: &GeneralIn, out: &mut Vec<Output>) -> Result<Handled> {
        match &m.msg {
            GeneralMessage::KeyGenCommitmentsDigest(d) => {
                self.check_sender(&m.from, d.coin)?;
                if d.context != self.params.context {
                    return Err(ProtocolError::peer(
                        &m.from,
                        "digest for another DKG context",
                    ));
                }
                if self.vault.is_some() {
                    return Ok(Handled::Done);
                }
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
                let l = self.index_of(&m.from)?;
                match self.dkg.digests.get(&l) {
                    Some(existing) if *existing != d.digest => {
                        return Err(ProtocolError::peer(&m.from, "sent two different digests"))
                    }
                    Some(_) => return Ok(Handled::Done),
                    None => {}
                }
                self.dkg.digests.insert(l, d.digest);
                self.after_digest(out)?;
                Ok(Handled::Done)
            }
            GeneralMessage::PublicAddressAvailable(a) => {
                self.check_sender(&m.from, a.coin)?;
                if a.context != self.params.context {
                    return Err(ProtocolError::peer(
                        &m.from,
                        "address for another DKG context",
                    ));
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
        if self.dkg.shares_sent
            || self.vault.is_some()
            || self.dkg.digests.len() < usize::from(self.params.n)
        {
            return Ok(());
        }
        let Some(mine) = self.dkg.digests.get(&self.params.i).copied() else {
            return Ok(());
        };
        let differing: Vec<String> = self
            .dkg
            .digests
            .iter()
            .filter(|(_, d)| **d != mine)
            .filter_map(|(l, _)| self.def.validator_at(*l).map(|v| v.to_string()))
            .collect();
        if !differing.is_empty() {
            self.fail(
                out,
                format!(
                    "commitments differ: {} saw other commitments than we did",
                    differing.join(", ")
                ),
            );
            return Ok(());
        }
        let shares = match dkg::secret_shares(
            self.coin.curve(),
            &self.entropy,
            &self.params,
            &self.dkg.commitments,
        ) {
            Ok(s) => s,
            Err(e) => {
                self.fail(out, self.describe(&e));
                return Ok(());
            }
        };
        let mut sends = Vec::new();
        for (l, share) in shares {
            let Some(v) = self.def.validator_at(l).cloned() else {
                continue;
            };
            let sealed = self.seal_to(SealKind::KeyShare, &v, &share)?;
            sends.push(Output::Bus(BusMessage::EncryptedKeyShareOut(
                EncryptedKeyShareOut {
                    coin: self.coin,
                    to: v,
                    context: self.params.context,
                    sealed,
                },
            )));
        }
        self.dkg.shares_sent = true;
        out.extend(sends);
        self.after_share(out);
        Ok(())
    }

    /// Step 19: keep a share addressed to us.
    fn on_share(&mut self, m: &EncryptedKeyShareIn, out: &mut Vec<Output>) -> Result<Handled> {
        self.check_sender(&m.from, m.msg.coin)?;
        self.check_context(&m.from, &m.msg.to, &m.msg.context)?;
        if self.vault.is_some() {
            return Ok(Handled::Done);
        }
        let Some(bytes) = self.open_from(SealKind::KeyShare, &m.from, &m.msg.sealed)? else {
            return Ok(Handled::Wait);
        };
        dkg::validate_share(self.coin.curve(), &self.params, &bytes)
            .map_err(|e| ProtocolError::peer(&m.from, format!("malformed share: {e}")))?;
        let l = self.index_of(&m.from)?;
        if let Some(existing) = self.dkg.shares.get(&l) {
            if *existing != bytes {
                return Err(ProtocolError::peer(&m.from, "sent two different shares"));
            }
            return Ok(Handled::Done);
        }
        self.dkg.shares.insert(l, bytes);
        self.after_share(out);
        Ok(Handled::Done)
    }

    /// Step 20: all shares in: compute the key share, the group key and the address.
    fn after_share(&mut self, out: &mut Vec<Output>) {
        if !self.dkg.shares_sent
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
            status: VaultStatus::Pending,
            group_key: output.group_key.clone(),
            address,
            threshold: self.params.t,
            participants: self.def.validators.clone(),
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
        out.push(Output::Bus(BusMessage::PublicAddressAvailable(
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
            .filter_map(|(l, _)| self.def.validator_at(*l).map(|v| v.to_string()))
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
                    .def
                    .validator_at(*participant)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                format!("{who} (participant {participant}): {reason}")
            }
            DkgFailure::Other(s) => s.clone(),
        }
    }

    fn fail(&mut self, out: &mut Vec<Output>, reason: String) {
        let vault = VaultRecord {
            coin: self.coin,
            session: self.def.session,
            context: self.params.context,
            status: VaultStatus::Failed,
            group_key: Vec::new(),
            address: String::new(),
            threshold: self.params.t,
            participants: self.def.validators.clone(),
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

fn sender_of(m: &BusMessage) -> Option<&ValidatorId> {
    match m {
        BusMessage::ExternalPublicKeyIn(m) => Some(&m.from),
        BusMessage::EncryptedPublicKeyIn(m) => Some(&m.from),
        BusMessage::EncryptedKeyGenCommitmentIn(m) => Some(&m.from),
        BusMessage::EncryptedKeyShareIn(m) => Some(&m.from),
        BusMessage::GeneralIn(m) => Some(&m.from),
        _ => None,
    }
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
