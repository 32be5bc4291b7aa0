//! The store against RocksDB on disk: typed tables, batches, upgrades and sealed secrets.

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
    let session_root;
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
        session_root = store.session_entropy(3).unwrap();
        store.db.flush_cf(store.cf(Identity::CF).unwrap()).unwrap();
        store.db.flush_cf(store.cf(KeyShares::CF).unwrap()).unwrap();
    }
    let secrets_written = vec![
        keys.coordinator_secret.to_vec(),
        keys.processor_signature_secret.to_vec(),
        keys.dkg_entropy.to_vec(),
        keys.processor_messaging.secret.to_vec(),
        share,
        session_root.to_vec(),
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
        kind in 0usize..10,
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
            InboundKind::Relay,
            InboundKind::ShareAnswer,
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

#[test]
fn inbound_replays_in_arrival_order_across_kinds() {
    use protocol::messages::{GeneralIn, GeneralMessage, KeyGenCommitmentsDigest};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &Secrets::Insecure).unwrap();
    let from = NodeKeys::generate(&mut rand_core::OsRng)
        .unwrap()
        .validator_id();
    let key = ExternalPublicKeyIn {
        from: from.clone(),
        key: ProcessorPublicKey {
            coin: Coin::Btc,
            pubkey: [1; 32],
            seq: 2,
        },
    };
    // A vote (kind 6) arrived before a digest of the attempt it made current (kind 3): the
    // key order of the table puts the digest first, arrival order the vote.
    let digest = |context| {
        CoordinatorMessage::GeneralIn(GeneralIn {
            from: from.clone(),
            msg: GeneralMessage::KeyGenCommitmentsDigest(KeyGenCommitmentsDigest {
                coin: Coin::Btc,
                context,
                digest: [0; 32],
                hashes: Vec::new(),
                signature: Vec::new(),
            }),
        })
    };
    let vote = CoordinatorMessage::GeneralIn(GeneralIn {
        from: from.clone(),
        msg: GeneralMessage::KeyGenExclusionVote(protocol::messages::KeyGenExclusionVote {
            coin: Coin::Btc,
            context: [7; 32],
            attempt: 0,
            round: 0,
            exclude: Vec::new(),
            reasons: Vec::new(),
            signature: Vec::new(),
        }),
    });
    let slot = |kind, context, seq| InboundKey {
        coin: Coin::Btc,
        kind,
        from: from.clone(),
        context,
        seq,
    };
    let mut b = Batch::new();
    b.put::<Inbound>(&slot(InboundKind::Vote, [7; 32], 10), &vote)
        .unwrap();
    b.put::<Inbound>(&slot(InboundKind::Digest, [8; 32], 11), &digest([8; 32]))
        .unwrap();
    b.put::<Inbound>(&slot(InboundKind::Digest, [7; 32], 5), &digest([7; 32]))
        .unwrap();
    let key_msg = CoordinatorMessage::ExternalPublicKeyIn(key);
    b.put::<Inbound>(&slot(InboundKind::ExternalPublicKey, [0; 32], 0), &key_msg)
        .unwrap();
    store.write(b).unwrap();
    assert_eq!(
        store.inbound_for(Coin::Btc).unwrap(),
        vec![key_msg, digest([7; 32]), vote, digest([8; 32])]
    );
}

#[test]
fn each_session_has_its_own_dkg_entropy_and_older_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &Secrets::Insecure).unwrap();
    let first = store.session_entropy(0).unwrap();
    assert_eq!(
        *store.session_entropy(0).unwrap(),
        *first,
        "stable across calls"
    );
    drop(store);
    let store = Store::open(dir.path(), &Secrets::Insecure).unwrap();
    assert_eq!(
        *store.session_entropy(0).unwrap(),
        *first,
        "stable across a reopen"
    );
    let next = store.session_entropy(1).unwrap();
    assert_ne!(*next, *first, "a new session draws a new root");
    let roots = store.scan::<Identity>(b"dkg-entropy/").unwrap();
    assert_eq!(roots.len(), 1, "the old session's root is deleted");
    assert!(matches!(roots[0].0, IdentityKey::DkgEntropy(1)));
    assert_eq!(
        IdentityKey::from_key(&IdentityKey::DkgEntropy(7).to_key()),
        Some(IdentityKey::DkgEntropy(7))
    );
}
