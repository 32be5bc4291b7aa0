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
//! | `inbound` | [`InboundKey`] (coin, kind, from, context) | every stored `...In` message ([`CoordinatorMessage`]) |
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
//! Keys encode and decode through [`StorageKey`], values through [`Value`]: postcard behind a
//! one-byte schema version, with an upgrade path for values written by an older vaultd. A key or
//! value that does not decode is reported as [`StorageError::Corrupt`] naming the column
//! family, never a panic.

use std::{collections::BTreeMap, path::Path};

use protocol::{
    keys::{MessagingKey, NodeKeys},
    messages::{CoordinatorMessage, DirectRequest, KeyGenExclusionVote, ProcessorPublicKey},
    vault::{CheaterReport, SignRecord, SignStatus, VaultRecord},
    Coin, ValidatorId,
};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

pub mod secrets;
use secrets::Sealer;
pub use secrets::{Secrets, SecretsRecord};

/// Schema version byte in front of every value, unless its [`Value::VERSION`] says otherwise.
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

/// A key that encodes to bytes whose order groups what is iterated together, and decodes from
/// them again (`None`: not a key of this type).
pub trait StorageKey: Sized {
    /// Encode.
    fn to_key(&self) -> Vec<u8>;
    /// Decode.
    fn from_key(raw: &[u8]) -> Option<Self>;
}

/// A stored value: postcard behind a schema version byte.
pub trait Value: Serialize + DeserializeOwned {
    /// The version written now.
    const VERSION: u8 = SCHEMA_VERSION;
    /// The postcard body of a value written under an older `version`, as the current version
    /// writes it (`None`: that version cannot be read).
    fn upgrade(version: u8, body: &[u8]) -> Option<Vec<u8>> {
        let _ = (version, body);
        None
    }
}

/// A typed column family.
pub trait Table {
    /// Column family name.
    const CF: &'static str;
    /// Key type.
    type Key: StorageKey;
    /// Value type.
    type Value: Value;
    /// Whether values are secret (sealed under the passphrase key).
    const SECRET: bool = false;
}

/// Declares each table once: its type, column family, key and value, and whether its values
/// are `secret`; the list of column families the database opens is generated from the same
/// declarations.
macro_rules! tables {
    ($($(#[$doc:meta])* $visibility:ident $name:ident: $cf:literal, $key:ty => $value:ty;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl Table for $name {
                const CF: &'static str = $cf;
                type Key = $key;
                type Value = $value;
                const SECRET: bool = tables!(@secret $visibility);
            }
        )*
        /// Every column family, in declaration order.
        pub const ALL_CFS: &[&str] = &[$($cf),*];
    };
    (@secret secret) => { true };
    (@secret public) => { false };
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
}

impl StorageKey for IdentityKey {
    fn to_key(&self) -> Vec<u8> {
        match self {
            IdentityKey::Node => b"node".to_vec(),
            IdentityKey::Messaging(c) => format!("messaging/{c}").into_bytes(),
        }
    }

    fn from_key(raw: &[u8]) -> Option<Self> {
        if raw == b"node" {
            return Some(IdentityKey::Node);
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

tables! {
    /// Step 1's keys and rotated messaging keys.
    secret Identity: "identity", IdentityKey => IdentityValue;
    /// Peers' announcements.
    public Peers: "peers", ValidatorId => PeerRecord;
    /// Every inbound message placed for a processor that a restart replays.
    public Inbound: "inbound", InboundKey => CoordinatorMessage;
    /// Direct requests waiting for an acknowledgement.
    public Outbox: "outbox", OutboxKey => DirectRequest;
    /// Vault records.
    public Vaults: "vaults", VaultKey => VaultRecord;
    /// Key shares.
    secret KeyShares: "key_shares", VaultKey => KeyShareRecord;
    /// Signature requests and their outcomes.
    public SignRequests: "sign_requests", RequestId => SignRecord;
    /// Signing attempts preprocessed here (never preprocess one twice).
    public NoncesUsed: "nonces_used", NonceKey => ();
    /// Signers caught sending invalid preprocesses or shares.
    public Cheaters: "cheaters", CheaterKey => CheaterReport;
    /// Our own DKG exclusion votes (a restarted node never votes differently in a round).
    public DkgVotes: "dkg_votes", VoteKey => KeyGenExclusionVote;
    /// How the secrets are protected.
    public Meta: "meta", MetaKey => SecretsRecord;
}

impl Value for IdentityValue {}
impl Value for PeerRecord {}
impl Value for DirectRequest {}
impl Value for VaultRecord {}
impl Value for KeyShareRecord {}
impl Value for SignRecord {}
impl Value for () {}
impl Value for CheaterReport {}
impl Value for KeyGenExclusionVote {}
impl Value for SecretsRecord {}

/// Where the `...In` messages started in vaultd's one bus enum of both directions (version 1 of
/// the inbound table): its variants 13 to 20 are [`CoordinatorMessage`]'s 0 to 7, in order.
const LEGACY_BUS_FIRST_INPUT: u8 = 13;

impl Value for CoordinatorMessage {
    const VERSION: u8 = 2;

    fn upgrade(version: u8, body: &[u8]) -> Option<Vec<u8>> {
        // postcard writes the variant index as a varint: one byte below 128.
        let (&variant, rest) = body.split_first()?;
        if version != 1 || variant >= 0x80 {
            return None;
        }
        let variant = variant.checked_sub(LEGACY_BUS_FIRST_INPUT)?;
        Some([&[variant][..], rest].concat())
    }
}

/// Each column family's options. vaultd's tables are small (keys, vault records, the outbox of
/// a DKG): RocksDB's defaults (a 64 MiB memtable, allocated in 1 MiB blocks) give every table
/// written since the last flush a 1 MiB block. 64 KiB blocks and a 4 MiB memtable (flushed to
/// disk when full) fit these tables (docs/BENCHMARKS.md, item 13).
fn column_family_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(4 << 20);
    o.set_arena_block_size(64 << 10);
    o
}

fn encode_value<V: Value>(v: &V) -> Result<Zeroizing<Vec<u8>>> {
    postcard::to_extend(v, vec![V::VERSION])
        .map(Zeroizing::new)
        .map_err(|e| StorageError::Encode(e.to_string()))
}

fn decode_value<T: Table>(bytes: &[u8]) -> Result<T::Value> {
    let corrupt = |reason: String| StorageError::Corrupt { cf: T::CF, reason };
    let decode = |body: &[u8]| postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()));
    match bytes.split_first() {
        Some((&v, body)) if v == <T::Value as Value>::VERSION => decode(body),
        Some((&v, body)) => match <T::Value as Value>::upgrade(v, body) {
            Some(body) => decode(&body),
            None => Err(corrupt(format!("schema version {v}"))),
        },
        None => Err(corrupt("empty value".into())),
    }
}

fn decode_key<T: Table>(raw: &[u8]) -> Result<T::Key> {
    T::Key::from_key(raw).ok_or(StorageError::Corrupt {
        cf: T::CF,
        reason: "key layout".into(),
    })
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

    /// Every (key, value) of a table whose key bytes start with `prefix`, in key order.
    pub fn scan<T: Table>(&self, prefix: &[u8]) -> Result<Vec<(T::Key, T::Value)>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(T::CF)?, prefix) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((decode_key::<T>(&k)?, self.decode::<T>(&k, &v)?));
        }
        Ok(out)
    }

    /// Every value of a table whose key bytes start with `prefix`, in key order.
    fn values<T: Table>(&self, prefix: &[u8]) -> Result<Vec<T::Value>> {
        Ok(self
            .scan::<T>(prefix)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
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
    pub fn inbound_for(&self, coin: Coin) -> Result<Vec<CoordinatorMessage>> {
        self.values::<Inbound>(&[coin.id()])
    }

    /// The entries of one inbound slot (the `seq` of `slot` is ignored), in arrival order.
    pub fn inbound_slot(&self, slot: &InboundKey) -> Result<Vec<(InboundKey, CoordinatorMessage)>> {
        self.scan::<Inbound>(&slot.slot_prefix())
    }

    /// Delete the entries of `slot` that hold exactly `msg`; returns how many.
    pub fn delete_inbound_matching(
        &self,
        slot: &InboundKey,
        msg: &CoordinatorMessage,
    ) -> Result<usize> {
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
        self.values::<Vaults>(&[])
    }

    /// Every queued outbound request, with its key.
    pub fn outbox(&self) -> Result<Vec<(OutboxKey, DirectRequest)>> {
        self.scan::<Outbox>(&[])
    }

    /// The signing attempts of a coin this node preprocessed.
    pub fn nonces_used(&self, coin: Coin) -> Result<Vec<([u8; 32], u32)>> {
        Ok(self
            .scan::<NoncesUsed>(&[coin.id()])?
            .into_iter()
            .map(|(k, ())| (k.id, k.attempt))
            .collect())
    }

    /// Pending signature requests of a coin (to resume after a restart).
    pub fn pending_sign_requests(&self, coin: Coin) -> Result<Vec<SignRecord>> {
        Ok(self
            .values::<SignRequests>(&[])?
            .into_iter()
            .filter(|r| r.coin == coin && r.status == SignStatus::Pending)
            .collect())
    }

    /// Our DKG exclusion votes for a coin.
    pub fn dkg_votes(&self, coin: Coin) -> Result<Vec<KeyGenExclusionVote>> {
        self.values::<DkgVotes>(&[coin.id()])
    }

    /// Cheater reports of a coin.
    pub fn cheaters(&self, coin: Coin) -> Result<Vec<CheaterReport>> {
        self.values::<Cheaters>(&[coin.id()])
    }

    /// Every peer record.
    pub fn peers(&self) -> Result<Vec<(ValidatorId, PeerRecord)>> {
        self.scan::<Peers>(&[])
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
            proptest::prop_assert_eq!(InboundKey::from_key(&key.to_key()), Some(key));
            let _ = InboundKey::from_key(&junk);
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
                let msg = CoordinatorMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
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
    fn every_key_type_decodes_what_it_encodes() {
        fn roundtrip<K: StorageKey + PartialEq + std::fmt::Debug>(k: K) {
            assert_eq!(K::from_key(&k.to_key()), Some(k));
        }
        let v = NodeKeys::generate(&mut rand_core::OsRng)
            .unwrap()
            .validator_id();
        roundtrip(MetaKey::Secrets);
        roundtrip(IdentityKey::Node);
        roundtrip(IdentityKey::Messaging(Coin::Sol));
        roundtrip(v.clone());
        roundtrip(OutboxKey {
            to: v.clone(),
            slot: vec![3, 1, 2],
        });
        roundtrip(VaultKey {
            coin: Coin::Eth,
            session: 7,
        });
        roundtrip(RequestId([9; 32]));
        roundtrip(NonceKey {
            coin: Coin::Btc,
            id: [1; 32],
            attempt: 4,
        });
        roundtrip(CheaterKey {
            coin: Coin::Sol,
            id: [2; 32],
            attempt: 1,
            peer: v.clone(),
        });
        roundtrip(VoteKey {
            coin: Coin::Btc,
            context: [5; 32],
            round: 2,
        });
        // A key of another layout is no key of this type.
        assert_eq!(VaultKey::from_key(&[0, 0, 0]), None);
        assert_eq!(NonceKey::from_key(&[9; 37]), None);
    }

    #[test]
    fn inbound_messages_of_the_one_enum_bus_are_still_read() {
        // Before the bus was split by direction, the inbound table stored the `...In` messages
        // as variants 13 to 20 of one enum, under schema version 1.
        let msg = CoordinatorMessage::ExternalPublicKeyIn(ExternalPublicKeyIn {
            from: NodeKeys::generate(&mut rand_core::OsRng)
                .unwrap()
                .validator_id(),
            key: ProcessorPublicKey {
                coin: Coin::Btc,
                pubkey: [1; 32],
                seq: 2,
            },
        });
        let current = encode_value(&msg).unwrap();
        assert_eq!(current[0], 2);
        assert_eq!(decode_value::<Inbound>(&current).unwrap(), msg);
        let mut legacy = current.to_vec();
        legacy[0] = 1;
        legacy[1] += LEGACY_BUS_FIRST_INPUT;
        assert_eq!(decode_value::<Inbound>(&legacy).unwrap(), msg);
        // An output of the old enum was never stored there: not a message of the table.
        legacy[1] = 3;
        assert!(decode_value::<Inbound>(&legacy).is_err());
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
