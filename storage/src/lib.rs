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
//! | `nonces_used` | [`NonceKey`] (coin, H(id, originator), attempt) | marker: this attempt was preprocessed |
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

use std::path::Path;

use protocol::{
    keys::{MessagingKey, NodeKeys},
    messages::{CoordinatorMessage, DirectRequest, KeyGenExclusionVote},
    vault::{CheaterReport, SignRecord, SignStatus, VaultRecord},
    Coin, ValidatorId,
};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Serialize};
use zeroize::Zeroizing;

mod layout;
pub mod secrets;
pub use layout::*;
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
impl Value for SignRecord {
    const VERSION: u8 = 2;

    /// Version 1 had no reference, approvals or expiry: postcard writes `None`, an empty list
    /// and `0` as one zero byte each, at the end.
    fn upgrade(version: u8, body: &[u8]) -> Option<Vec<u8>> {
        (version == 1).then(|| [body, &[0, 0, 0][..]].concat())
    }
}
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
            (
                Some(SecretsRecord::Passphrase { .. } | SecretsRecord::Bound { .. }),
                Secrets::Insecure,
            ) => {
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

    /// The root of session `session`'s DKG randomness: drawn at random and stored (synced,
    /// sealed like every secret) the first time the session needs it, then the same across
    /// restarts, so a restarted node regenerates its messages of an attempt byte for byte.
    /// Every other session's root is deleted: a retiring vault runs no DKG, and a copy of an
    /// old data directory then exposes no later session's shares.
    pub fn session_entropy(&self, session: u32) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let mut batch = Batch::new();
        for (key, _) in self.scan::<Identity>(b"dkg-entropy/")? {
            if !matches!(key, IdentityKey::DkgEntropy(s) if s == session) {
                batch.delete::<Identity>(&key);
            }
        }
        let key = IdentityKey::DkgEntropy(session);
        let entropy = match self.get::<Identity>(&key)? {
            Some(IdentityValue::DkgEntropy(e)) => e,
            Some(_) => {
                return Err(StorageError::Corrupt {
                    cf: Identity::CF,
                    reason: "DKG entropy entry".into(),
                })
            }
            None => {
                let mut e = zeroize::Zeroizing::new([0u8; 32]);
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, e.as_mut());
                batch.put::<Identity>(&key, &IdentityValue::DkgEntropy(e.clone()))?;
                e
            }
        };
        if !batch.is_empty() {
            self.write(batch)?;
        }
        Ok(entropy)
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

    /// Every inbound message of a coin, in replay order: the single-entry slots (keys, `seq`
    /// 0) first, then the logged ones in arrival order across kinds and senders, so a restart
    /// hands the processor votes before the later attempts' messages they made current, as
    /// they first arrived.
    pub fn inbound_for(&self, coin: Coin) -> Result<Vec<CoordinatorMessage>> {
        let mut entries = self.scan::<Inbound>(&[coin.id()])?;
        entries.sort_by_key(|(k, _)| k.seq);
        Ok(entries.into_iter().map(|(_, m)| m).collect())
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
mod tests;
