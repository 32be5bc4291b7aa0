//! # vaultd storage
//!
//! The only crate that opens the RocksDB database. Every column family and key layout is
//! declared here once, as a [`Table`] with a typed key and value; writes go through atomic
//! [`Batch`]es with synced WAL writes, so a crash never leaves half of a state change on disk.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `identity` | [`IdentityKey`] | [`IdentityValue`]: step 1's keys, rotated messaging keys |
//! | `peers` | validator | [`PeerRecord`]: what a peer announced (steps 2, 3, 5, 7) |
//! | `inbound` | [`InboundKey`] (coin, kind, from, context) | every inbound `...In` message |
//! | `outbox` | [`OutboxKey`] (to, coin, kind, context) | a `DirectRequest` not yet acknowledged |
//! | `vaults` | [`VaultKey`] (coin, session) | [`VaultRecord`] |
//! | `key_shares` | [`VaultKey`] | serialized `ThresholdKeys` (secret) |
//! | `sign_requests` | request id | [`SignRecord`]: a signature request and its outcome |
//! | `nonces_used` | [`NonceKey`] (coin, id, attempt) | marker: this attempt was preprocessed |
//! | `cheaters` | [`CheaterKey`] (coin, id, attempt, peer) | [`CheaterReport`] |
//! | `dkg_votes` | [`VoteKey`] (coin, context, round) | our own `KeyGenExclusionVote`s |
//! | `meta` | [`MetaKey`] | [`SecretsRecord`]: how the secrets are protected (KDF salt, check) |
//!
//! The values of `identity` and `key_shares` are secret: with a passphrase they are sealed
//! (XChaCha20-Poly1305 under an Argon2id key, bound to their column family and key; see
//! [`secrets`]), so the database without the passphrase reveals nothing secret.
//!
//! Values are postcard behind a one-byte schema version; a value that does not decode is
//! reported as [`StorageError::Corrupt`] naming the column family, never a panic.

use std::{collections::BTreeMap, path::Path};

use protocol::{
    keys::{MessagingKey, NodeKeys},
    messages::{BusMessage, DirectRequest, KeyGenExclusionVote, ProcessorPublicKey},
    vault::{CheaterReport, SignRecord, SignStatus, VaultRecord},
    Coin, ValidatorId,
};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

pub mod secrets;
use secrets::Sealer;
pub use secrets::{Secrets, SecretsRecord};

/// Schema version byte in front of every value.
pub const SCHEMA_VERSION: u8 = 1;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// A stored value does not decode.
    #[error("corrupt value in column family {cf}: {reason}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// What failed.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// Missing column family (database from another program?).
    #[error("missing column family {0}")]
    MissingCf(&'static str),
    /// The secrets cannot be opened (wrong passphrase, or not how the directory was made).
    #[error("secrets: {0}")]
    Secrets(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StorageError>;

/// A key that encodes to bytes whose order groups what is iterated together.
pub trait StorageKey: Sized {
    /// Encode.
    fn to_key(&self) -> Vec<u8>;
}

/// A typed column family.
pub trait Table {
    /// Column family name.
    const CF: &'static str;
    /// Key type.
    type Key: StorageKey;
    /// Value type.
    type Value: Serialize + DeserializeOwned;
    /// Whether values are secret (sealed under the passphrase key).
    const SECRET: bool = false;
}

macro_rules! table {
    ($(#[$doc:meta])* $name:ident, $cf:literal, $key:ty, $value:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl Table for $name {
            const CF: &'static str = $cf;
            type Key = $key;
            type Value = $value;
        }
    };
    ($(#[$doc:meta])* secret $name:ident, $cf:literal, $key:ty, $value:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl Table for $name {
            const CF: &'static str = $cf;
            type Key = $key;
            type Value = $value;
            const SECRET: bool = true;
        }
    };
}

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
}

/// Keys of the `identity` column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityKey {
    /// Step 1's keys.
    Node,
    /// The current messaging key of a coin's processor, after a rotation.
    Messaging(Coin),
}

impl StorageKey for IdentityKey {
    fn to_key(&self) -> Vec<u8> {
        match self {
            IdentityKey::Node => b"node".to_vec(),
            IdentityKey::Messaging(c) => format!("messaging/{c}").into_bytes(),
        }
    }
}

/// Values of the `identity` column family.
#[derive(Clone, Serialize, Deserialize)]
pub enum IdentityValue {
    /// Step 1's keys.
    Node(NodeKeys),
    /// A rotated messaging key.
    Messaging(MessagingKey),
}

impl StorageKey for ValidatorId {
    fn to_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
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

impl InboundKey {
    /// The key bytes of the slot (everything but `seq`).
    pub fn slot_prefix(&self) -> Vec<u8> {
        let mut k = vec![
            self.coin.id(),
            self.kind as u8,
            self.from.as_bytes().len() as u8,
        ];
        k.extend_from_slice(self.from.as_bytes());
        k.extend_from_slice(&self.context);
        k
    }

    fn decode(raw: &[u8]) -> Option<InboundKey> {
        let (&coin, rest) = raw.split_first()?;
        let coin = Coin::from_id(coin)?;
        let (&kind, rest) = rest.split_first()?;
        let kind = match kind {
            0 => InboundKind::ExternalPublicKey,
            1 => InboundKind::EncryptedPublicKey,
            2 => InboundKind::Commitment,
            3 => InboundKind::Digest,
            4 => InboundKind::Share,
            5 => InboundKind::Address,
            6 => InboundKind::Vote,
            7 => InboundKind::Blame,
            _ => return None,
        };
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if rest.len() != len + 32 + 8 {
            return None;
        }
        let from = ValidatorId::from_bytes(&rest[..len]).ok()?;
        let context = rest[len..len + 32].try_into().ok()?;
        let seq = u64::from_be_bytes(rest[len + 32..].try_into().ok()?);
        Some(InboundKey {
            coin,
            kind,
            from,
            context,
            seq,
        })
    }
}

impl StorageKey for InboundKey {
    fn to_key(&self) -> Vec<u8> {
        let mut k = self.slot_prefix();
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
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
        };
        OutboxKey { to, slot }
    }
}

impl StorageKey for OutboxKey {
    fn to_key(&self) -> Vec<u8> {
        let mut k = vec![self.to.as_bytes().len() as u8];
        k.extend_from_slice(self.to.as_bytes());
        k.extend_from_slice(&self.slot);
        k
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
}

/// Key of `sign_requests`: the request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub [u8; 32]);

impl StorageKey for RequestId {
    fn to_key(&self) -> Vec<u8> {
        self.0.to_vec()
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

table!(
    /// Step 1's keys and rotated messaging keys (secret).
    secret Identity, "identity", IdentityKey, IdentityValue
);
table!(
    /// Peers' announcements.
    Peers, "peers", ValidatorId, PeerRecord
);
table!(
    /// Every inbound message placed for a processor.
    Inbound, "inbound", InboundKey, BusMessage
);
table!(
    /// Direct requests waiting for an acknowledgement.
    Outbox, "outbox", OutboxKey, DirectRequest
);
table!(
    /// Vault records.
    Vaults, "vaults", VaultKey, VaultRecord
);
table!(
    /// Key shares (secret).
    secret KeyShares, "key_shares", VaultKey, KeyShareRecord
);

table!(
    /// Signature requests and their outcomes.
    SignRequests, "sign_requests", RequestId, SignRecord
);
table!(
    /// Signing attempts preprocessed here (never preprocess one twice).
    NoncesUsed, "nonces_used", NonceKey, ()
);
table!(
    /// Signers caught sending invalid preprocesses or shares.
    Cheaters, "cheaters", CheaterKey, CheaterReport
);

table!(
    /// Our own DKG exclusion votes (a restarted node never votes differently in a round).
    DkgVotes, "dkg_votes", VoteKey, KeyGenExclusionVote
);

table!(
    /// How the secrets are protected.
    Meta, "meta", MetaKey, SecretsRecord
);

const ALL_CFS: [&str; 11] = [
    Identity::CF,
    Peers::CF,
    Inbound::CF,
    Outbox::CF,
    Vaults::CF,
    KeyShares::CF,
    SignRequests::CF,
    NoncesUsed::CF,
    Cheaters::CF,
    DkgVotes::CF,
    Meta::CF,
];

/// Each column family's options. vaultd's tables are small (keys, vault records, the outbox of
/// a DKG): RocksDB's defaults (a 64 MiB memtable, allocated in 1 MiB blocks) gave every table
/// written since the last flush a 1 MiB block; at n = 64 that was 5 MiB of a node's 25 MiB
/// heap. 64 KiB blocks and a 4 MiB memtable (flushed to disk when full) fit these tables.
fn column_family_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(4 << 20);
    o.set_arena_block_size(64 << 10);
    o
}

fn encode_value<V: Serialize>(v: &V) -> Result<Zeroizing<Vec<u8>>> {
    postcard::to_extend(v, vec![SCHEMA_VERSION])
        .map(Zeroizing::new)
        .map_err(|e| StorageError::Encode(e.to_string()))
}

fn decode_value<T: Table>(bytes: &[u8]) -> Result<T::Value> {
    let corrupt = |reason: String| StorageError::Corrupt { cf: T::CF, reason };
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(corrupt(format!("schema version {v}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// One write of a batch: a put (value) or a delete (no value).
struct Op {
    cf: &'static str,
    secret: bool,
    key: Vec<u8>,
    value: Option<Zeroizing<Vec<u8>>>,
}

/// What a sealed value is bound to: its column family and key.
fn aad(cf: &str, key: &[u8]) -> Vec<u8> {
    [cf.as_bytes(), &[0], key].concat()
}

/// An atomic set of writes.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// A new, empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Put a typed value.
    pub fn put<T: Table>(&mut self, key: &T::Key, value: &T::Value) -> Result<&mut Self> {
        self.ops.push(Op {
            cf: T::CF,
            secret: T::SECRET,
            key: key.to_key(),
            value: Some(encode_value(value)?),
        });
        Ok(self)
    }

    /// Delete a key.
    pub fn delete<T: Table>(&mut self, key: &T::Key) -> &mut Self {
        self.ops.push(Op {
            cf: T::CF,
            secret: T::SECRET,
            key: key.to_key(),
            value: None,
        });
        self
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The database.
pub struct Store {
    db: DB,
    /// `None`: an insecure data directory (secrets stored as they are).
    sealer: Option<Sealer>,
}

impl Store {
    /// Open (creating if needed) the database under `path`, with the secrets protected as
    /// `secrets` says. A new database records the choice; an existing one must be opened the
    /// way it was created, with the right passphrase.
    pub fn open(path: &Path, secrets: &Secrets) -> Result<Store> {
        let mut store = Store::open_raw(path)?;
        let recorded = store.get::<Meta>(&MetaKey::Secrets)?;
        store.sealer = match (recorded, secrets) {
            (Some(record), Secrets::Passphrase(p)) => Some(Sealer::unlock(&record, p)?),
            (Some(SecretsRecord::Insecure), Secrets::Insecure) => None,
            (Some(SecretsRecord::Passphrase { .. }), Secrets::Insecure) => {
                return Err(StorageError::Secrets(
                    "this data directory is encrypted; give its passphrase (--password-file)"
                        .into(),
                ))
            }
            (None, secrets) => {
                if store
                    .db
                    .iterator_cf(store.cf(Identity::CF)?, rocksdb::IteratorMode::Start)
                    .next()
                    .is_some()
                {
                    return Err(StorageError::Secrets(
                        "keys stored without a secrets record (a data directory from an older vaultd?)".into(),
                    ));
                }
                match secrets {
                    Secrets::Insecure => {
                        store.put::<Meta>(&MetaKey::Secrets, &SecretsRecord::Insecure)?;
                        None
                    }
                    Secrets::Passphrase(p) => {
                        let (record, sealer) = Sealer::create(p)?;
                        store.put::<Meta>(&MetaKey::Secrets, &record)?;
                        Some(sealer)
                    }
                }
            }
        };
        Ok(store)
    }

    /// How this database protects its secrets.
    pub fn secrets_record(&self) -> Result<Option<SecretsRecord>> {
        self.get::<Meta>(&MetaKey::Secrets)
    }

    fn open_raw(path: &Path) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(4);
        let cfs = ALL_CFS
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(*cf, column_family_options()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Store { db, sealer: None })
    }

    /// Decode a stored value of `T` (opening it first if it is sealed).
    fn decode<T: Table>(&self, key: &[u8], bytes: &[u8]) -> Result<T::Value> {
        if T::SECRET && bytes.first() == Some(&secrets::SEALED) {
            let Some(sealer) = &self.sealer else {
                return Err(StorageError::Secrets(format!(
                    "a sealed value in {} but no passphrase",
                    T::CF
                )));
            };
            let plain = sealer.open(&aad(T::CF, key), bytes)?;
            return decode_value::<T>(&plain);
        }
        if T::SECRET && self.sealer.is_some() {
            return Err(StorageError::Corrupt {
                cf: T::CF,
                reason: "an unsealed secret in an encrypted data directory".into(),
            });
        }
        decode_value::<T>(bytes)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or(StorageError::MissingCf(name))
    }

    /// Read a typed value.
    pub fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>> {
        let key = key.to_key();
        match self.db.get_pinned_cf(self.cf(T::CF)?, &key)? {
            Some(bytes) => self.decode::<T>(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every (raw key, value) of a table whose key starts with `prefix`, in key order.
    pub fn scan<T: Table>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T::Value)>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(T::CF)?, prefix) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), self.decode::<T>(&k, &v)?));
        }
        Ok(out)
    }

    /// Apply a batch atomically, with the WAL synced to disk.
    pub fn write(&self, batch: Batch) -> Result<()> {
        self.write_opt(batch, true)
    }

    /// Apply a batch atomically without waiting for the disk: it survives the process being
    /// killed (the WAL is written), and the next [`Store::write`] makes it durable, but a power
    /// failure before that may lose it. Only for state whose loss is harmless: a delivered
    /// request's removal (resent, the peer answers that it has it) or what peers announce
    /// again.
    pub fn write_lazy(&self, batch: Batch) -> Result<()> {
        self.write_opt(batch, false)
    }

    fn write_opt(&self, batch: Batch, sync: bool) -> Result<()> {
        let mut wb = WriteBatch::default();
        for op in &batch.ops {
            let cf = self.cf(op.cf)?;
            match (&op.value, &self.sealer) {
                (Some(v), Some(sealer)) if op.secret => {
                    wb.put_cf(cf, &op.key, sealer.seal(&aad(op.cf, &op.key), v)?)
                }
                (Some(v), _) => wb.put_cf(cf, &op.key, v.as_slice()),
                (None, _) => wb.delete_cf(cf, &op.key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }

    /// Put one value.
    pub fn put<T: Table>(&self, key: &T::Key, value: &T::Value) -> Result<()> {
        let mut b = Batch::new();
        b.put::<T>(key, value)?;
        self.write(b)
    }

    /// Step 1's keys, if initialised.
    pub fn node_keys(&self) -> Result<Option<NodeKeys>> {
        match self.get::<Identity>(&IdentityKey::Node)? {
            Some(IdentityValue::Node(k)) => Ok(Some(k)),
            Some(_) => Err(StorageError::Corrupt {
                cf: Identity::CF,
                reason: "node entry".into(),
            }),
            None => Ok(None),
        }
    }

    /// The current messaging key of a coin's processor.
    pub fn messaging_key(&self, coin: Coin, keys: &NodeKeys) -> Result<MessagingKey> {
        match self.get::<Identity>(&IdentityKey::Messaging(coin))? {
            Some(IdentityValue::Messaging(k)) => Ok(k),
            Some(_) => Err(StorageError::Corrupt {
                cf: Identity::CF,
                reason: "messaging entry".into(),
            }),
            None => Ok(keys.processor_messaging.clone()),
        }
    }

    /// Every inbound message of a coin, in replay order.
    pub fn inbound_for(&self, coin: Coin) -> Result<Vec<BusMessage>> {
        Ok(self
            .scan::<Inbound>(&[coin.id()])?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// The entries of one inbound slot (the `seq` of `slot` is ignored), in arrival order.
    pub fn inbound_slot(&self, slot: &InboundKey) -> Result<Vec<(InboundKey, BusMessage)>> {
        let mut out = Vec::new();
        for (raw, msg) in self.scan::<Inbound>(&slot.slot_prefix())? {
            let key = InboundKey::decode(&raw).ok_or(StorageError::Corrupt {
                cf: Inbound::CF,
                reason: "key layout".into(),
            })?;
            out.push((key, msg));
        }
        Ok(out)
    }

    /// Delete the entries of `slot` that hold exactly `msg`; returns how many.
    pub fn delete_inbound_matching(&self, slot: &InboundKey, msg: &BusMessage) -> Result<usize> {
        let mut b = Batch::new();
        let mut n = 0;
        for (key, stored) in self.inbound_slot(slot)? {
            if stored == *msg {
                b.delete::<Inbound>(&key);
                n += 1;
            }
        }
        if n > 0 {
            self.write(b)?;
        }
        Ok(n)
    }

    /// Every vault record.
    pub fn vaults(&self) -> Result<Vec<VaultRecord>> {
        Ok(self
            .scan::<Vaults>(&[])?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Every queued outbound request, with its key.
    pub fn outbox(&self) -> Result<Vec<(OutboxKey, DirectRequest)>> {
        let mut out = Vec::new();
        for (raw, req) in self.scan::<Outbox>(&[])? {
            let Some((&len, rest)) = raw.split_first() else {
                continue;
            };
            let len = usize::from(len);
            if rest.len() < len {
                return Err(StorageError::Corrupt {
                    cf: Outbox::CF,
                    reason: "short key".into(),
                });
            }
            let to = ValidatorId::from_bytes(&rest[..len]).map_err(|e| StorageError::Corrupt {
                cf: Outbox::CF,
                reason: e.to_string(),
            })?;
            out.push((
                OutboxKey {
                    to,
                    slot: rest[len..].to_vec(),
                },
                req,
            ));
        }
        Ok(out)
    }

    /// The signing attempts of a coin this node preprocessed.
    pub fn nonces_used(&self, coin: Coin) -> Result<Vec<([u8; 32], u32)>> {
        let mut out = Vec::new();
        for (raw, ()) in self.scan::<NoncesUsed>(&[coin.id()])? {
            if raw.len() != 1 + 32 + 4 {
                return Err(StorageError::Corrupt {
                    cf: NoncesUsed::CF,
                    reason: "key layout".into(),
                });
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&raw[1..33]);
            let mut attempt = [0u8; 4];
            attempt.copy_from_slice(&raw[33..]);
            out.push((id, u32::from_be_bytes(attempt)));
        }
        Ok(out)
    }

    /// Pending signature requests of a coin (to resume after a restart).
    pub fn pending_sign_requests(&self, coin: Coin) -> Result<Vec<SignRecord>> {
        Ok(self
            .scan::<SignRequests>(&[])?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.coin == coin && r.status == SignStatus::Pending)
            .collect())
    }

    /// Our DKG exclusion votes for a coin.
    pub fn dkg_votes(&self, coin: Coin) -> Result<Vec<KeyGenExclusionVote>> {
        Ok(self
            .scan::<DkgVotes>(&[coin.id()])?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Cheater reports of a coin.
    pub fn cheaters(&self, coin: Coin) -> Result<Vec<CheaterReport>> {
        Ok(self
            .scan::<Cheaters>(&[coin.id()])?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Every peer record.
    pub fn peers(&self) -> Result<Vec<(ValidatorId, PeerRecord)>> {
        let mut out = Vec::new();
        for (raw, rec) in self.scan::<Peers>(&[])? {
            let id = ValidatorId::from_bytes(&raw).map_err(|e| StorageError::Corrupt {
                cf: Peers::CF,
                reason: e.to_string(),
            })?;
            out.push((id, rec));
        }
        Ok(out)
    }

    /// Approximate on-disk size in bytes.
    pub fn size_bytes(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::messages::{ExternalPublicKeyIn, ProcessorPublicKey};

    /// Every byte RocksDB wrote under `dir` (WAL, SST, manifest, ...).
    fn raw_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                out.extend(std::fs::read(path).unwrap());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Write keys and a key share with `secrets`, flush, and return the secrets and the raw bytes.
    fn store_secrets(dir: &Path, secrets: &Secrets) -> (Vec<Vec<u8>>, Vec<u8>) {
        let keys = NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let share = vec![0x5au8; 40];
        {
            let store = Store::open(dir, secrets).unwrap();
            let mut b = Batch::new();
            b.put::<Identity>(&IdentityKey::Node, &IdentityValue::Node(keys.clone()))
                .unwrap();
            let key = VaultKey {
                coin: Coin::Btc,
                session: 0,
            };
            let record = KeyShareRecord {
                context: [1; 32],
                keys: share.clone(),
            };
            b.put::<KeyShares>(&key, &record).unwrap();
            store.write(b).unwrap();
            store.db.flush_cf(store.cf(Identity::CF).unwrap()).unwrap();
            store.db.flush_cf(store.cf(KeyShares::CF).unwrap()).unwrap();
        }
        let secrets_written = vec![
            keys.coordinator_secret.to_vec(),
            keys.processor_signature_secret.to_vec(),
            keys.dkg_entropy.to_vec(),
            keys.processor_messaging.secret.to_vec(),
            share,
        ];
        (secrets_written, raw_bytes(dir))
    }

    #[test]
    fn with_a_passphrase_no_secret_reaches_the_disk_and_reopening_needs_it() {
        let pass = || Secrets::Passphrase(Zeroizing::new(b"correct horse".to_vec()));
        let dir = tempfile::tempdir().unwrap();
        let (secrets, raw) = store_secrets(dir.path(), &pass());
        for s in &secrets {
            assert!(!contains(&raw, s), "a secret is on disk in the clear");
        }
        // The right passphrase gives everything back; a wrong one or none is a clear error.
        let store = Store::open(dir.path(), &pass()).unwrap();
        assert!(store.node_keys().unwrap().is_some());
        drop(store);
        let wrong = Secrets::Passphrase(Zeroizing::new(b"battery staple".to_vec()));
        let e = Store::open(dir.path(), &wrong).err().unwrap().to_string();
        assert!(e.contains("wrong passphrase"), "{e}");
        let e = Store::open(dir.path(), &Secrets::Insecure)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("encrypted"), "{e}");
        // The check above can fail: an insecure directory shows its secrets.
        let insecure = tempfile::tempdir().unwrap();
        let (secrets, raw) = store_secrets(insecure.path(), &Secrets::Insecure);
        assert!(secrets.iter().any(|s| contains(&raw, s)));
        let e = Store::open(insecure.path(), &pass())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("without a passphrase"), "{e}");
    }

    #[test]
    fn a_sealed_value_moved_to_another_key_does_not_open() {
        let pass = Secrets::Passphrase(Zeroizing::new(b"pw".to_vec()));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &pass).unwrap();
        let a = VaultKey {
            coin: Coin::Btc,
            session: 0,
        };
        let b = VaultKey {
            coin: Coin::Eth,
            session: 0,
        };
        store
            .put::<KeyShares>(
                &a,
                &KeyShareRecord {
                    context: [2; 32],
                    keys: vec![9; 8],
                },
            )
            .unwrap();
        let cf = store.cf(KeyShares::CF).unwrap();
        let raw = store.db.get_cf(cf, a.to_key()).unwrap().unwrap();
        store.db.put_cf(cf, b.to_key(), raw).unwrap();
        assert!(store.get::<KeyShares>(&a).unwrap().is_some());
        assert!(matches!(
            store.get::<KeyShares>(&b),
            Err(StorageError::Secrets(_))
        ));
    }

    proptest::proptest! {
        /// Inbound keys survive their byte layout, and any bytes decode or fail cleanly.
        #[test]
        fn inbound_keys_roundtrip_and_hostile_keys_never_panic(
            coin in 0usize..3,
            kind in 0usize..8,
            from in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
            context in proptest::prelude::any::<[u8; 32]>(),
            seq in proptest::prelude::any::<u64>(),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let kinds = [
                InboundKind::ExternalPublicKey,
                InboundKind::EncryptedPublicKey,
                InboundKind::Commitment,
                InboundKind::Digest,
                InboundKind::Share,
                InboundKind::Address,
                InboundKind::Vote,
                InboundKind::Blame,
            ];
            let key = InboundKey {
                coin: [Coin::Btc, Coin::Eth, Coin::Sol][coin],
                kind: kinds[kind],
                from: ValidatorId::from_bytes(&from).unwrap(),
                context,
                seq,
            };
            proptest::prop_assert_eq!(InboundKey::decode(&key.to_key()), Some(key));
            let _ = InboundKey::decode(&junk);
        }

        /// Any stored bytes decode to a value or a `Corrupt` error naming the column family.
        #[test]
        fn hostile_values_are_errors(junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            fn check<T: Table>(bytes: &[u8]) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
                if let Err(e) = decode_value::<T>(bytes) {
                    proptest::prop_assert!(e.to_string().contains(T::CF));
                }
                Ok(())
            }
            let mut with_version = vec![SCHEMA_VERSION];
            with_version.extend_from_slice(&junk);
            for bytes in [&junk[..], &with_version[..]] {
                check::<Identity>(bytes)?;
                check::<Peers>(bytes)?;
                check::<Inbound>(bytes)?;
                check::<Outbox>(bytes)?;
                check::<Vaults>(bytes)?;
                check::<KeyShares>(bytes)?;
                check::<SignRequests>(bytes)?;
                check::<NoncesUsed>(bytes)?;
                check::<Cheaters>(bytes)?;
                check::<DkgVotes>(bytes)?;
                check::<Meta>(bytes)?;
            }
        }
    }

    #[test]
    fn typed_tables_roundtrip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let keys = NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let from = keys.validator_id();
        {
            let store = Store::open(dir.path(), &Secrets::Insecure).unwrap();
            assert!(store.node_keys().unwrap().is_none());
            let mut b = Batch::new();
            b.put::<Identity>(&IdentityKey::Node, &IdentityValue::Node(keys.clone()))
                .unwrap();
            for coin in [Coin::Sol, Coin::Btc] {
                let msg = BusMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
                    from: from.clone(),
                    key: ProcessorPublicKey {
                        coin,
                        pubkey: [1; 32],
                        seq: 0,
                    },
                });
                let k = InboundKey {
                    coin,
                    kind: InboundKind::ExternalPublicKey,
                    from: from.clone(),
                    context: [0; 32],
                    seq: 7,
                };
                b.put::<Inbound>(&k, &msg).unwrap();
            }
            store.write(b).unwrap();
        }
        let store = Store::open(dir.path(), &Secrets::Insecure).unwrap();
        assert_eq!(store.node_keys().unwrap().unwrap().validator_id(), from);
        assert_eq!(store.inbound_for(Coin::Btc).unwrap().len(), 1);
        assert_eq!(store.inbound_for(Coin::Eth).unwrap().len(), 0);
        let slot = InboundKey {
            coin: Coin::Btc,
            kind: InboundKind::ExternalPublicKey,
            from: from.clone(),
            context: [0; 32],
            seq: 0,
        };
        let entries = store.inbound_slot(&slot).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.seq, 7);
        let msg = entries[0].1.clone();
        assert_eq!(store.delete_inbound_matching(&slot, &msg).unwrap(), 1);
        assert!(store.inbound_for(Coin::Btc).unwrap().is_empty());
        assert_eq!(
            store.messaging_key(Coin::Btc, &keys).unwrap().public,
            keys.processor_messaging.public
        );
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(matches!(
            decode_value::<Vaults>(&[]),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_value::<Vaults>(&[9, 1, 2]),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_value::<Vaults>(&[SCHEMA_VERSION, 0xff]),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
