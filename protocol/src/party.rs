//! Who a coin's processor is and what it knows of its peers' keys: the context every other part
//! of the processor (DKG, votes, signing) reads, and the key exchange (steps 3, 4, 8, 9 and 12)
//! that fills it.
//!
//! The parts get it by shared reference; only this file changes a peer's keys, and only on a
//! message that proves them (a newer `ProcessorPublicKey`, or an `EncryptedPublicKeyOut` sealed
//! by the peer's current messaging key).

use std::collections::BTreeMap;

use crate::{
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
    keys::{MessagingKey, ProcessorSigner},
    messages::*,
    network::NetworkDefinition,
    processor::{Handled, Output},
    seal::{self, SealContext, SealKind},
};

/// What the key exchange's seals bind besides the parties: nothing (zero), since the exchange
/// outlives DKG contexts.
const KEY_EXCHANGE_CONTEXT: [u8; 32] = [0; 32];

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

/// This processor's identity and its peers' keys.
pub(crate) struct Party {
    def: NetworkDefinition,
    coin: Coin,
    me: ValidatorId,
    signer: ProcessorSigner,
    messaging: MessagingKey,
    peers: BTreeMap<ValidatorId, PeerView>,
}

impl Party {
    /// `me` with its processor keys, on `coin` of the network `def`; no peer key known yet.
    pub(crate) fn new(
        def: NetworkDefinition,
        coin: Coin,
        me: ValidatorId,
        signer: ProcessorSigner,
        messaging: MessagingKey,
    ) -> Self {
        let peers = def
            .validators
            .iter()
            .filter(|v| **v != me)
            .map(|v| (v.clone(), PeerView::default()))
            .collect();
        Party {
            def,
            coin,
            me,
            signer,
            messaging,
            peers,
        }
    }

    /// The network definition.
    pub(crate) fn def(&self) -> &NetworkDefinition {
        &self.def
    }

    /// The coin.
    pub(crate) fn coin(&self) -> Coin {
        self.coin
    }

    /// This validator.
    pub(crate) fn me(&self) -> &ValidatorId {
        &self.me
    }

    /// This processor's signature key.
    pub(crate) fn signer(&self) -> &ProcessorSigner {
        &self.signer
    }

    /// This processor's messaging key.
    pub(crate) fn messaging(&self) -> &MessagingKey {
        &self.messaging
    }

    /// Peers as this processor knows them.
    pub(crate) fn peers(&self) -> &BTreeMap<ValidatorId, PeerView> {
        &self.peers
    }

    /// A validator's processor signature key (ours included), once known.
    pub(crate) fn signer_of(&self, v: &ValidatorId) -> Option<[u8; 32]> {
        if *v == self.me {
            return Some(self.signer.public());
        }
        self.peers.get(v).and_then(|p| p.signer)
    }

    /// A message from `from` about `coin`: `from` must be another validator, `coin` ours.
    pub(crate) fn check_sender(&self, from: &ValidatorId, coin: Coin) -> Result<()> {
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

    /// Our `ProcessorPublicKey` (step 3).
    pub(crate) fn processor_public_key(&self) -> ProcessorPublicKey {
        ProcessorPublicKey {
            coin: self.coin,
            pubkey: self.messaging.public,
            seq: self.messaging.seq,
        }
    }

    /// Step 4: replace our messaging key (the caller checked that no DKG needs the old one),
    /// announce it and prove it to every peer whose key we know.
    pub(crate) fn rotate(&mut self, new: MessagingKey) -> Result<Vec<Output>> {
        if new.seq <= self.messaging.seq {
            return Err(ProtocolError::Key(
                "a rotated key needs a higher seq".into(),
            ));
        }
        self.messaging = new.clone();
        let mut out = vec![
            Output::Persist(crate::processor::Persist::MessagingKey {
                coin: self.coin,
                key: new,
            }),
            Output::Bus(ProcessorMessage::ProcessorPublicKey(
                self.processor_public_key(),
            )),
        ];
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

    /// Step 9: our processor signature key, sealed to `to`'s messaging key.
    fn send_exchange(&mut self, to: &ValidatorId) -> Result<Vec<Output>> {
        let payload = postcard::to_stdvec(&PublicKeyPayload {
            signer: self.signer.public(),
            seq: self.messaging.seq,
        })
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let sealed = self.seal_with(SealKind::PublicKey, to, KEY_EXCHANGE_CONTEXT, &payload)?;
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
    pub(crate) fn on_external_key(
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
    pub(crate) fn on_encrypted_public_key(&mut self, m: &EncryptedPublicKeyIn) -> Result<Handled> {
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
            &self.seal_ctx(SealKind::PublicKey, &m.from, &self.me, KEY_EXCHANGE_CONTEXT),
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
        Ok(Handled::Done)
    }
}
