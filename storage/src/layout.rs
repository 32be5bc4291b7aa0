//! The key layouts and record types of every table: each key type encodes to bytes whose order
//! groups what is iterated together (a coin's inbound slot, a request's attempts) and decodes
//! from them again.

use std::collections::BTreeMap;

use protocol::{
    keys::{MessagingKey, NodeKeys},
    messages::{DirectRequest, ProcessorPublicKey},
    Coin, ValidatorId,
};
use serde::{Deserialize, Serialize};

use crate::StorageKey;

/// Keys of the `meta` column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    /// How the secrets are protected.
    Secrets,
}

impl StorageKey for MetaKey {
    fn to_key(&self) -> Vec<u8> {
        match self {
            MetaKey::Secrets => b"secrets".to_vec(),
        }
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        (raw == b"secrets").then_some(MetaKey::Secrets)
    }
}

/// Keys of the `identity` column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityKey {
    /// Step 1's keys.
    Node,
    /// The current messaging key of a coin's processor, after a rotation.
    Messaging(Coin),
    /// The root of one validator-set session's DKG randomness.
    DkgEntropy(u32),
}

impl StorageKey for IdentityKey {
    fn to_key(&self) -> Vec<u8> {
        match self {
            IdentityKey::Node => b"node".to_vec(),
            IdentityKey::Messaging(c) => format!("messaging/{c}").into_bytes(),
            IdentityKey::DkgEntropy(s) => [&b"dkg-entropy/"[..], &s.to_be_bytes()].concat(),
        }
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        if raw == b"node" {
            return Some(IdentityKey::Node);
        }
        if let Some(s) = raw.strip_prefix(b"dkg-entropy/") {
            return Some(IdentityKey::DkgEntropy(u32::from_be_bytes(
                s.try_into().ok()?,
            )));
        }
        let coin = std::str::from_utf8(raw.strip_prefix(b"messaging/")?).ok()?;
        coin.parse().ok().map(IdentityKey::Messaging)
    }
}

/// Values of the `identity` column family.
#[derive(Clone, Serialize, Deserialize)]
pub enum IdentityValue {
    /// Step 1's keys.
    Node(NodeKeys),
    /// A rotated messaging key.
    Messaging(MessagingKey),
    /// A session's DKG entropy.
    DkgEntropy(#[serde(with = "protocol::keys::secret32")] zeroize::Zeroizing<[u8; 32]>),
}

impl StorageKey for ValidatorId {
    fn to_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        ValidatorId::from_bytes(raw).ok()
    }
}

/// A validator id with its length in front, so that what follows it in a key can be found.
fn put_validator(k: &mut Vec<u8>, v: &ValidatorId) {
    k.push(v.as_bytes().len() as u8);
    k.extend_from_slice(v.as_bytes());
}

/// Reads what [`put_validator`] wrote; returns it and the rest.
fn take_validator(raw: &[u8]) -> Option<(ValidatorId, &[u8])> {
    let (&len, rest) = raw.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (id, rest) = rest.split_at(len);
    Some((ValidatorId::from_bytes(id).ok()?, rest))
}

/// The fixed-size array at the front of `raw`, and the rest.
fn take_array<const N: usize>(raw: &[u8]) -> Option<([u8; N], &[u8])> {
    if raw.len() < N {
        return None;
    }
    let (a, rest) = raw.split_at(N);
    Some((a.try_into().ok()?, rest))
}

/// The coin whose id is the first byte of `raw`, and the rest.
fn take_coin(raw: &[u8]) -> Option<(Coin, &[u8])> {
    let (&coin, rest) = raw.split_first()?;
    Some((Coin::from_id(coin)?, rest))
}

/// What a peer announced about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// CoordinatorPublicKey.
    pub coordinator_key: Option<[u8; 32]>,
    /// ProcessorPublicKey per coin (highest seq).
    pub processor_keys: BTreeMap<Coin, ProcessorPublicKey>,
    /// SignerReady per coin.
    pub signer_ready: BTreeMap<Coin, [u8; 32]>,
}

/// Kinds of inbound messages, in replay order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum InboundKind {
    /// ExternalPublicKeyIn.
    ExternalPublicKey = 0,
    /// EncryptedPublicKeyIn.
    EncryptedPublicKey = 1,
    /// EncryptedKeyGenCommitmentIn.
    Commitment = 2,
    /// KeyGenCommitmentsDigest (general).
    Digest = 3,
    /// EncryptedKeyShareIn.
    Share = 4,
    /// PublicAddressAvailable (general).
    Address = 5,
    /// KeyGenExclusionVote (general).
    Vote = 6,
    /// KeyGenBlame (general).
    Blame = 7,
    /// KeyGenRelayIn: signed DKG messages relayed for a complaint of ours.
    Relay = 8,
    /// KeyGenShareAnswer (general): a dealer's published shares.
    ShareAnswer = 9,
}

/// Key of the `inbound` column family: a slot per (coin, kind, sender, context), and within a
/// slot one entry per distinct message in arrival order (`seq`), so a malformed message never
/// hides a later valid one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundKey {
    /// Coin (first, so one coin's messages iterate together).
    pub coin: Coin,
    /// Kind.
    pub kind: InboundKind,
    /// Sender.
    pub from: ValidatorId,
    /// DKG context (zero where none).
    pub context: [u8; 32],
    /// Arrival order within the slot (0 for single-entry slots).
    pub seq: u64,
}

impl InboundKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => InboundKind::ExternalPublicKey,
            1 => InboundKind::EncryptedPublicKey,
            2 => InboundKind::Commitment,
            3 => InboundKind::Digest,
            4 => InboundKind::Share,
            5 => InboundKind::Address,
            6 => InboundKind::Vote,
            7 => InboundKind::Blame,
            8 => InboundKind::Relay,
            9 => InboundKind::ShareAnswer,
            _ => return None,
        })
    }
}

impl InboundKey {
    /// The key bytes of the slot (everything but `seq`).
    pub fn slot_prefix(&self) -> Vec<u8> {
        let mut k = vec![self.coin.id(), self.kind as u8];
        put_validator(&mut k, &self.from);
        k.extend_from_slice(&self.context);
        k
    }
}

impl StorageKey for InboundKey {
    fn to_key(&self) -> Vec<u8> {
        let mut k = self.slot_prefix();
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        let (coin, rest) = take_coin(raw)?;
        let (&kind, rest) = rest.split_first()?;
        let kind = InboundKind::from_u8(kind)?;
        let (from, rest) = take_validator(rest)?;
        let (context, rest) = take_array::<32>(rest)?;
        let (seq, rest) = take_array::<8>(rest)?;
        rest.is_empty().then_some(InboundKey {
            coin,
            kind,
            from,
            context,
            seq: u64::from_be_bytes(seq),
        })
    }
}

/// Key of the `outbox` column family: one slot per (recipient, kind, coin, context), so a newer
/// request of the same slot replaces the older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxKey {
    /// Recipient.
    pub to: ValidatorId,
    /// Slot: kind, then coin and DKG context where the request has them.
    pub slot: Vec<u8>,
}

impl OutboxKey {
    /// The slot of `req` towards `to`.
    pub fn for_request(to: ValidatorId, req: &DirectRequest) -> OutboxKey {
        let slot = match req {
            DirectRequest::ProcessorPublicKeyList(_) => vec![0],
            DirectRequest::EncryptedPublicKeyOut(m) => vec![1, m.coin.id()],
            DirectRequest::EncryptedKeyGenCommitmentOut(m) => {
                [&[2, m.coin.id()][..], &m.context].concat()
            }
            DirectRequest::EncryptedKeyShareOut(m) => [&[3, m.coin.id()][..], &m.context].concat(),
            DirectRequest::EncryptedPreprocessOut(m) => [
                &[4, m.request.coin.id()][..],
                &m.request.id,
                &m.request.attempt.to_be_bytes(),
            ]
            .concat(),
            DirectRequest::EncryptedSignatureShareOut(m) => {
                [&[5, m.coin.id()][..], &m.id, &m.attempt.to_be_bytes()].concat()
            }
            DirectRequest::AnnouncementReplay(r) => {
                [&[6, r.coin.id()][..], &r.part.to_be_bytes()].concat()
            }
            DirectRequest::AnnouncementRequest(r) => vec![7, r.coin.id()],
            DirectRequest::KeyGenRelayOut(m) => {
                [&[8, m.coin.id()][..], &m.context, &[m.part]].concat()
            }
            DirectRequest::SignPreprocessesOut(m) => [
                &[9, m.set.coin.id()][..],
                &m.set.id,
                &m.set.attempt.to_be_bytes(),
            ]
            .concat(),
        };
        OutboxKey { to, slot }
    }
}

impl StorageKey for OutboxKey {
    fn to_key(&self) -> Vec<u8> {
        let mut k = Vec::new();
        put_validator(&mut k, &self.to);
        k.extend_from_slice(&self.slot);
        k
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        let (to, slot) = take_validator(raw)?;
        Some(OutboxKey {
            to,
            slot: slot.to_vec(),
        })
    }
}

/// Key of `vaults` and `key_shares`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaultKey {
    /// Coin.
    pub coin: Coin,
    /// Session.
    pub session: u32,
}

impl StorageKey for VaultKey {
    fn to_key(&self) -> Vec<u8> {
        let mut k = vec![self.coin.id()];
        k.extend_from_slice(&self.session.to_be_bytes());
        k
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        let (coin, rest) = take_coin(raw)?;
        let (session, rest) = take_array::<4>(rest)?;
        rest.is_empty().then_some(VaultKey {
            coin,
            session: u32::from_be_bytes(session),
        })
    }
}

/// Key of `sign_requests`: the request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub [u8; 32]);

impl StorageKey for RequestId {
    fn to_key(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        raw.try_into().ok().map(RequestId)
    }
}

/// Key of `nonces_used`: a signing attempt this node preprocessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceKey {
    /// Coin (first: one coin's markers iterate together).
    pub coin: Coin,
    /// Request id.
    pub id: [u8; 32],
    /// Attempt.
    pub attempt: u32,
}

impl StorageKey for NonceKey {
    fn to_key(&self) -> Vec<u8> {
        [&[self.coin.id()][..], &self.id, &self.attempt.to_be_bytes()].concat()
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        let (coin, rest) = take_coin(raw)?;
        let (id, rest) = take_array::<32>(rest)?;
        let (attempt, rest) = take_array::<4>(rest)?;
        rest.is_empty().then_some(NonceKey {
            coin,
            id,
            attempt: u32::from_be_bytes(attempt),
        })
    }
}

/// Key of `cheaters`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheaterKey {
    /// Coin.
    pub coin: Coin,
    /// Request id.
    pub id: [u8; 32],
    /// Attempt.
    pub attempt: u32,
    /// The cheater.
    pub peer: ValidatorId,
}

impl StorageKey for CheaterKey {
    fn to_key(&self) -> Vec<u8> {
        [
            &[self.coin.id()][..],
            &self.id,
            &self.attempt.to_be_bytes(),
            self.peer.as_bytes(),
        ]
        .concat()
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        let (coin, rest) = take_coin(raw)?;
        let (id, rest) = take_array::<32>(rest)?;
        let (attempt, rest) = take_array::<4>(rest)?;
        Some(CheaterKey {
            coin,
            id,
            attempt: u32::from_be_bytes(attempt),
            peer: ValidatorId::from_bytes(rest).ok()?,
        })
    }
}

/// Key of `dkg_votes`: one of our exclusion votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteKey {
    /// Coin.
    pub coin: Coin,
    /// Context of the attempt voted on.
    pub context: [u8; 32],
    /// Round.
    pub round: u32,
}

impl StorageKey for VoteKey {
    fn to_key(&self) -> Vec<u8> {
        [
            &[self.coin.id()][..],
            &self.context,
            &self.round.to_be_bytes(),
        ]
        .concat()
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        let (coin, rest) = take_coin(raw)?;
        let (context, rest) = take_array::<32>(rest)?;
        let (round, rest) = take_array::<4>(rest)?;
        rest.is_empty().then_some(VoteKey {
            coin,
            context,
            round: u32::from_be_bytes(round),
        })
    }
}

/// A secret key share, kept in a zeroizing buffer.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyShareRecord {
    /// DKG context.
    pub context: [u8; 32],
    /// Serialized `ThresholdKeys`.
    pub keys: Vec<u8>,
}

impl Drop for KeyShareRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.keys);
    }
}
