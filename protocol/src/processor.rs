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
//! This file is the façade that joins the processor's parts, each with its own state:
//!
//! | part | file | state |
//! |---|---|---|
//! | [`Party`](crate::party) | `party.rs` | our keys, peers' keys; the key exchange (steps 3-12) |
//! | `KeyGen` | `keygen/` | one attempt's DKG (steps 13-20) and its blame evidence |
//! | `Votes` | `attempts.rs` | exclusion votes, and the chain of attempts they decide |
//! | `Signing` | `signing.rs` | the key share, ceremonies, originated requests, nonce markers |
//!
//! The façade routes each message to its part, turns the DKG's outcomes into the vault record,
//! casts a vote when the DKG proved a fault or timed out, and replaces the DKG machine when the
//! votes decide a new attempt. A retiring vault's processor is built with [`Processor::retiring`]:
//! its DKG machine is decided from the start, and only the key exchange and signing run.
//!
//! Why a file of this size: a third of it is the processor's public API as the node sees it
//! (status accessors, restore and signing delegators); the rest is the routing and the
//! outcome handling, which read together.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    address,
    attempts::{Attempt, VoteView, Votes},
    dkg,
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
    keygen::{self, KeyGen, Outcome},
    keys::{MessagingKey, NodeKeys},
    messages::*,
    network::NetworkDefinition,
    party::Party,
    signing::{Scope, Signing, SigningConfig, SigningStatus},
    vault::{CheaterReport, Exclusion, SignRecord, VaultRecord, VaultStatus},
};

pub use crate::{
    output::{Output, Persist, Phase},
    party::PeerView,
};

/// What a part did with a message.
pub(crate) enum Handled {
    /// Taken (or dropped as stale or already seen).
    Done,
    /// Not checkable yet (a key or an earlier message is missing): retry later.
    Wait,
}

/// Most messages from one sender waiting to be checked.
pub const MAX_PENDING_PER_SENDER: usize = 16;

/// The processor of one coin.
pub struct Processor {
    /// Who we are, and our peers' keys.
    party: Party,
    /// The current DKG attempt's machine.
    keygen: KeyGen,
    /// Exclusion votes, across attempts.
    votes: Votes,
    /// Signing with the vault's key share.
    signing: Signing,
    /// The vault, once computed (pending until every participant confirmed it) or decided.
    vault: Option<VaultRecord>,
    pending: Vec<CoordinatorMessage>,
    rejected: Vec<(CoordinatorMessage, ProtocolError)>,
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
        let (number, participants, excluded) = match &vault {
            Some(v) => (v.attempt, v.participants.clone(), v.excluded.clone()),
            None => (0, def.validators.clone(), Vec::new()),
        };
        if u16::try_from(participants.len()).is_err() {
            return Err(ProtocolError::Dkg("too many participants".into()));
        }
        if !participants.contains(&me) {
            return Err(ProtocolError::UnknownValidator(me));
        }
        let attempt = Attempt::new(&def, coin, &me, number, participants, excluded, Vec::new());
        let mut keygen = KeyGen::new(attempt, keys.dkg_entropy.clone());
        if vault.is_some() {
            keygen.stop();
        }
        Ok(Processor {
            party: Party::new(def, coin, me, keys.processor_signer(), messaging),
            keygen,
            votes: Votes::default(),
            signing: Signing::default(),
            vault,
            pending: Vec::new(),
            rejected: Vec::new(),
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

    /// The current DKG attempt.
    pub fn attempt(&self) -> u32 {
        self.keygen.attempt().number()
    }

    /// The current attempt's participants.
    pub fn participants(&self) -> &[ValidatorId] {
        self.keygen.attempt().participants()
    }

    /// Validators left out of earlier attempts, and why.
    pub fn excluded(&self) -> &[Exclusion] {
        self.keygen.attempt().excluded()
    }

    /// The coin.
    pub fn coin(&self) -> Coin {
        self.party.coin()
    }

    /// This validator.
    pub fn me(&self) -> &ValidatorId {
        self.party.me()
    }

    /// The current DKG context.
    pub fn context(&self) -> [u8; 32] {
        self.keygen.attempt().context()
    }

    /// The vault, once computed.
    pub fn vault(&self) -> Option<&VaultRecord> {
        self.vault.as_ref()
    }

    /// Whether `v` is a validator of this processor's definition.
    pub fn is_validator(&self, v: &ValidatorId) -> bool {
        self.party.def().is_validator(v)
    }

    /// Peers as this processor knows them.
    pub fn peers(&self) -> &BTreeMap<ValidatorId, PeerView> {
        self.party.peers()
    }

    /// This processor's messaging key (public part and seq are what matter outside).
    pub fn messaging_key(&self) -> &MessagingKey {
        self.party.messaging()
    }

    /// Messages waiting to be checked.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Where the DKG stands.
    pub fn phase(&self) -> Phase {
        match &self.vault {
            Some(v) => match v.status {
                VaultStatus::Active => Phase::Active,
                VaultStatus::Failed => Phase::Failed,
                VaultStatus::Excluded => Phase::Excluded,
                VaultStatus::Pending => Phase::Confirming,
            },
            None => self.keygen.phase(),
        }
    }

    /// Progress counters of the current phase: (received, expected).
    pub fn progress(&self) -> (usize, usize) {
        self.keygen.progress(&self.party, self.phase())
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
                coin: self.coin(),
                pubkey: self.party.signer().public(),
            })),
        ];
        if let Some(v) = &self.vault {
            if matches!(v.status, VaultStatus::Pending | VaultStatus::Active) {
                out.push(Output::Bus(ProcessorMessage::PublicAddressAvailable(
                    self.address_message(v),
                )));
            }
        }
        out
    }

    /// Our `ProcessorPublicKey`.
    pub fn processor_public_key(&self) -> ProcessorPublicKey {
        self.party.processor_public_key()
    }

    /// Step 4: replace this processor's messaging key. Refused while a DKG is running, since
    /// peers may have sealed messages to the old key that would be lost.
    pub fn rotate_messaging_key(&mut self, new: MessagingKey) -> Result<Vec<Output>> {
        if self.vault.is_none() && self.keygen.running() {
            return Err(ProtocolError::Dkg(format!(
                "a {} DKG is in progress; rotate the messaging key after it completes",
                self.coin()
            )));
        }
        self.party.rotate(new)
    }

    /// Messages rejected without an error from [`Processor::handle`]: ones that waited in the
    /// buffer and failed once they could be checked, and bad ones that proved a fault (the
    /// vote is in `handle`'s outputs). The node logs them and drops them from its inbound
    /// table.
    pub fn take_rejected(&mut self) -> Vec<(CoordinatorMessage, ProtocolError)> {
        std::mem::take(&mut self.rejected)
    }

    /// Handle one `...In` message. Errors name the peer at fault; the processor's state is
    /// unchanged by a rejected message, except for the evidence it is (then it is listed by
    /// [`Processor::take_rejected`] and the outputs hold our vote).
    pub fn handle(&mut self, msg: CoordinatorMessage) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        let handled = match self.dispatch(&msg, &mut out) {
            Ok(h) => h,
            Err(e) => {
                // A bad message can still prove a fault (a signed wrong confirmation): our
                // vote goes out now, and the message is reported as rejected.
                self.settle(&mut out);
                if out.is_empty() {
                    return Err(e);
                }
                self.rejected.push((msg, e));
                return Ok(out);
            }
        };
        match handled {
            Handled::Wait => {
                let sender = sender_of(&msg);
                let waiting = self
                    .pending
                    .iter()
                    .filter(|m| sender_of(m) == sender)
                    .count();
                if waiting >= MAX_PENDING_PER_SENDER {
                    let peer = sender.cloned().unwrap_or_else(|| self.me().clone());
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

    /// Route one message to its part, then act on what the DKG reports.
    fn dispatch(&mut self, msg: &CoordinatorMessage, out: &mut Vec<Output>) -> Result<Handled> {
        let handled = self.route(msg, out);
        self.settle(out);
        handled
    }

    fn route(&mut self, msg: &CoordinatorMessage, out: &mut Vec<Output>) -> Result<Handled> {
        let retiring = self.role == Role::Retiring;
        if retiring && sender_of(msg).is_some_and(|v| !self.party.def().is_validator(v)) {
            return Ok(Handled::Done); // not a participant of this (retiring) vault
        }
        let cx = Scope {
            party: &self.party,
            vault: self.vault.as_ref(),
        };
        if let Some(result) = self.signing.dispatch(&cx, msg, out) {
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
        let party = &self.party;
        match msg {
            CoordinatorMessage::ExternalPublicKeyIn(m) => self.party.on_external_key(m, out),
            CoordinatorMessage::EncryptedPublicKeyIn(m) => {
                let handled = self.party.on_encrypted_public_key(m)?;
                // Step 13 starts once every participant's key is known.
                self.keygen.start(&self.party, out)?;
                Ok(handled)
            }
            CoordinatorMessage::EncryptedKeyGenCommitmentIn(m) => {
                self.keygen.on_commitment(party, m, out)
            }
            CoordinatorMessage::EncryptedKeyShareIn(m) => self.keygen.on_share(party, m, out),
            CoordinatorMessage::KeyGenRelayIn(m) => self.keygen.on_relay(party, m, out),
            CoordinatorMessage::GeneralIn(m) => self.on_general(m, out),
            // Signing's inputs were taken by `Signing::dispatch` above.
            CoordinatorMessage::EncryptedPreprocessIn(_)
            | CoordinatorMessage::EncryptedSignatureShareIn(_)
            | CoordinatorMessage::SignPreprocessesIn(_)
            | CoordinatorMessage::SignatureRequested(_) => Ok(Handled::Done),
        }
    }

    fn on_general(&mut self, m: &GeneralIn, out: &mut Vec<Output>) -> Result<Handled> {
        let party = &self.party;
        match &m.msg {
            GeneralMessage::KeyGenCommitmentsDigest(d) => {
                self.keygen.on_digest(party, &m.from, d, out)
            }
            GeneralMessage::KeyGenExclusionVote(v) => {
                let decided = self.keygen.decided();
                let handled =
                    self.votes
                        .on_vote(party, self.keygen.attempt(), decided, &m.from, v)?;
                if matches!(handled, Handled::Done) {
                    self.next_attempt(out);
                }
                Ok(handled)
            }
            GeneralMessage::KeyGenBlame(b) => self.keygen.on_blame(party, &m.from, b),
            GeneralMessage::PublicAddressAvailable(a) => {
                self.keygen.on_confirmation(party, &m.from, a)
            }
            GeneralMessage::KeyGenComplaint(c) => self.keygen.on_complaint(party, &m.from, c, out),
            GeneralMessage::KeyGenShareAnswer(a) => {
                self.keygen.on_share_answer(party, &m.from, a, out)
            }
            // Keys arrive as ExternalPublicKeyIn; the rest is informational (signing messages
            // were dispatched before).
            GeneralMessage::CoordinatorPublicKey(_)
            | GeneralMessage::ProcessorPublicKey(_)
            | GeneralMessage::SignerReady(_)
            | GeneralMessage::SignRequest(_)
            | GeneralMessage::SignatureAvailable(_)
            | GeneralMessage::SignApproval(_) => Ok(Handled::Done),
        }
    }

    /// Act on what the DKG machine reported: its outcomes become the vault record, a freshly
    /// proven fault becomes our vote (which may start the next attempt, whose machine may
    /// report in turn).
    fn settle(&mut self, out: &mut Vec<Output>) {
        loop {
            let outcomes = self.keygen.take_outcomes();
            let fresh = self.keygen.take_fresh_proof();
            if outcomes.is_empty() && !fresh {
                return;
            }
            for outcome in outcomes {
                self.apply(outcome, out);
            }
            if fresh {
                self.vote(out);
            }
        }
    }

    fn apply(&mut self, outcome: Outcome, out: &mut Vec<Output>) {
        match outcome {
            Outcome::Computed(output) => self.computed(output, out),
            Outcome::Confirmed(agreed) => {
                let Some(vault) = self.vault.as_mut() else {
                    return;
                };
                match agreed {
                    Ok(()) => vault.status = VaultStatus::Active,
                    Err(reason) => {
                        vault.status = VaultStatus::Failed;
                        vault.reason = Some(reason);
                    }
                }
                out.push(Output::Persist(Persist::Vault(vault.clone())));
            }
            Outcome::Failed(reason) => self.fail(out, reason),
        }
    }

    /// Step 20: our key share and the group key: keep them as the pending vault, publish its
    /// address, and see whether every participant already confirmed it.
    fn computed(&mut self, output: dkg::DkgOutput, out: &mut Vec<Output>) {
        let coin = self.coin();
        let address = match address::address(coin, &output.group_key) {
            Ok(a) => a,
            Err(e) => return self.fail(out, format!("address: {e}")),
        };
        if let Err(e) = self.signing.load_keys(coin, &output.keys) {
            return self.fail(out, format!("key share unusable for signing: {e}"));
        }
        let attempt = self.keygen.attempt();
        let vault = VaultRecord {
            coin,
            session: self.party.def().session,
            context: attempt.context(),
            attempt: attempt.number(),
            status: VaultStatus::Pending,
            group_key: output.group_key.clone(),
            address,
            threshold: attempt.params().t,
            participants: attempt.participants().to_vec(),
            excluded: attempt.excluded().to_vec(),
            reason: None,
        };
        out.push(Output::Persist(Persist::KeyShare {
            coin,
            session: self.party.def().session,
            context: attempt.context(),
            keys: output.keys,
        }));
        out.push(Output::Persist(Persist::Vault(vault.clone())));
        let confirmation = self.address_message(&vault);
        self.keygen.keep_own_confirmation(&confirmation);
        out.push(Output::Bus(ProcessorMessage::PublicAddressAvailable(
            confirmation,
        )));
        self.vault = Some(vault);
        self.keygen.check_confirmations();
    }

    /// Our vote on the current attempt, if the DKG machine proposes one (a proven fault, or a
    /// phase that timed out) and it differs from our last.
    fn vote(&mut self, out: &mut Vec<Output>) {
        let now = self.signing.now();
        let proposal = self.keygen.proposal(&self.party);
        let Some(vote) = self
            .votes
            .cast(&self.party, self.keygen.attempt(), proposal, now)
        else {
            return;
        };
        out.push(Output::Persist(Persist::Vote(vote.clone())));
        out.push(Output::Bus(ProcessorMessage::KeyGenExclusionVote(vote)));
        self.next_attempt(out);
    }

    /// If the votes decide an attempt after the current one, move to it: a new DKG machine, no
    /// vault and no key share of the old attempt.
    ///
    /// An active vault follows too: if t participants of its attempt voted to run another one,
    /// the vault was not agreed by them (they missed a confirmation), and keeping it would split
    /// the validator set.
    fn next_attempt(&mut self, out: &mut Vec<Output>) {
        if self
            .vault
            .as_ref()
            .is_some_and(|v| matches!(v.status, VaultStatus::Failed | VaultStatus::Excluded))
        {
            return;
        }
        let Some(next) = self.votes.next_attempt(&self.party, self.keygen.attempt()) else {
            return;
        };
        self.keygen = self.keygen.next(next);
        self.signing.forget_keys();
        self.vault = None;
        let attempt = self.keygen.attempt();
        let left_out = attempt
            .excluded()
            .iter()
            .map(|e| {
                format!(
                    "{} ({}, attempt {})",
                    e.validator,
                    e.reason.label(),
                    e.attempt
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let (number, n) = (attempt.number(), attempt.participants().len());
        let t = usize::from(self.party.def().threshold);
        if attempt.member_index(self.party.me()).is_none() {
            return self.decide(
                out,
                VaultStatus::Excluded,
                format!("left out of the DKG by the other participants' votes: {left_out}"),
            );
        }
        if n < t {
            return self.fail(
                out,
                format!(
                    "only {n} participants remain and the threshold is {t}; left out: {left_out}"
                ),
            );
        }
        if let Err(e) = self.keygen.start(&self.party, out) {
            self.fail(out, format!("cannot start DKG attempt {number}: {e}"));
        }
    }

    fn fail(&mut self, out: &mut Vec<Output>, reason: String) {
        self.decide(out, VaultStatus::Failed, reason);
    }

    /// End this coin's DKG here without a key (failed, or left out by the others).
    fn decide(&mut self, out: &mut Vec<Output>, status: VaultStatus, reason: String) {
        self.keygen.stop();
        let attempt = self.keygen.attempt();
        let vault = VaultRecord {
            coin: self.coin(),
            session: self.party.def().session,
            context: attempt.context(),
            attempt: attempt.number(),
            status,
            group_key: Vec::new(),
            address: String::new(),
            threshold: attempt.params().t,
            participants: attempt.participants().to_vec(),
            excluded: attempt.excluded().to_vec(),
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
        msg.signature = self
            .party
            .signer()
            .sign(keygen::ADDRESS_DOMAIN, &keygen::address_body(&msg));
        msg
    }

    /// How long a DKG phase may make no progress before this participant votes.
    pub fn set_dkg_timeout(&mut self, ms: u64) {
        self.votes.set_timeout(ms);
    }

    /// After a restart, before the inbound replay: this node's own votes, so it never casts a
    /// different vote in a round it already voted in.
    pub fn restore_votes(&mut self, votes: Vec<KeyGenExclusionVote>) -> Vec<Output> {
        self.votes.restore(&self.party, votes);
        let mut out = Vec::new();
        self.next_attempt(&mut out);
        self.settle(&mut out);
        out
    }

    /// The votes of the current attempt (for the status page).
    pub fn votes(&self) -> Vec<VoteView> {
        self.votes.views(&self.context())
    }

    /// Replace the signing bounds and timeouts.
    pub fn set_signing_config(&mut self, config: SigningConfig) {
        self.signing.set_config(config);
    }

    /// Load the vault's key share (stored `ThresholdKeys`) so the processor can sign.
    pub fn set_key_share(&mut self, serialized: &[u8]) -> Result<()> {
        self.signing.load_keys(self.party.coin(), serialized)
    }

    /// The key this vault's signatures verify under.
    pub fn verifying_key(&self) -> Option<Vec<u8>> {
        self.signing.verifying_key()
    }

    /// After a restart: the (slot, attempt) pairs already preprocessed (see
    /// [`crate::signing::nonce_slot`]), the coin's unfinished requests (of any vault) with
    /// their approvals, and past cheater reports.
    pub fn restore_signing(
        &mut self,
        used: impl IntoIterator<Item = ([u8; 32], u32)>,
        pending: Vec<SignRecord>,
        cheaters: Vec<CheaterReport>,
    ) {
        let cx = Scope {
            party: &self.party,
            vault: self.vault.as_ref(),
        };
        self.signing.restore(&cx, used, pending, cheaters)
    }

    /// The wall clock (Unix seconds) that signing approvals expire by; the driver sets it
    /// before each input.
    pub fn set_unix_time(&mut self, unix: u64) {
        self.signing.set_unix_time(unix);
    }

    /// Signing state for status.
    pub fn signing_status(&self) -> SigningStatus {
        self.signing.status(self.party.me())
    }

    /// Whether the vault can sign now (active, key share loaded).
    pub fn can_sign(&self) -> bool {
        let cx = Scope {
            party: &self.party,
            vault: self.vault.as_ref(),
        };
        self.signing.can_sign(&cx)
    }

    /// Time passes: `now_ms` is a monotonic clock, `reachable` the validators the node is
    /// connected to. A stalled DKG phase asks for announcements or votes, waiting messages are
    /// retried, signing attempts past their deadline are retried with another signer set,
    /// queued requests start, and stale ceremonies are dropped.
    pub fn tick(&mut self, now_ms: u64, reachable: BTreeSet<ValidatorId>) -> Vec<Output> {
        let mut out = Vec::new();
        self.signing.set_clock(now_ms, reachable);
        let timeout = self.votes.timeout_ms();
        if self.keygen.tick(&self.party, now_ms, timeout, &mut out) {
            self.vote(&mut out);
        }
        self.settle(&mut out);
        self.retry_pending(&mut out);
        let cx = Scope {
            party: &self.party,
            vault: self.vault.as_ref(),
        };
        self.signing.tick(&cx, &mut out);
        out
    }

    /// Test-only sabotage reaches the DKG machine with our identity.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn dkg_parts(&mut self) -> (&Party, &mut KeyGen) {
        (&self.party, &mut self.keygen)
    }
}

/// The sender of a DKG input (signing inputs are checked by `signing`).
fn sender_of(m: &CoordinatorMessage) -> Option<&ValidatorId> {
    match m {
        CoordinatorMessage::ExternalPublicKeyIn(m) => Some(&m.from),
        CoordinatorMessage::EncryptedPublicKeyIn(m) => Some(&m.from),
        CoordinatorMessage::EncryptedKeyGenCommitmentIn(m) => Some(&m.from),
        CoordinatorMessage::EncryptedKeyShareIn(m) => Some(&m.from),
        CoordinatorMessage::KeyGenRelayIn(m) => Some(&m.from),
        CoordinatorMessage::GeneralIn(m) => Some(&m.from),
        _ => None,
    }
}
