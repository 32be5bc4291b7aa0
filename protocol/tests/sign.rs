//! t-of-n FROST signing over plain maps, each signature checked with an implementation that
//! does not come from modular-frost: libsecp256k1 (BIP340) and ed25519-dalek (RFC 8032).

use std::collections::BTreeMap;

use protocol::{
    address,
    dkg::{self, DkgParams},
    sign::{SignError, VaultKeys},
    Coin,
};

/// Run a 3-of-4 DKG for `coin` in process; returns (group key, serialized keys by index).
fn dkg(coin: Coin) -> (Vec<u8>, BTreeMap<u16, Vec<u8>>) {
    let (t, n) = (3u16, 4u16);
    let params = |i| DkgParams {
        t,
        n,
        i,
        context: [coin as u8 + 1; 32],
    };
    let entropy = |i: u16| [i as u8 + 40; 32];
    let curve = coin.curve();
    let commitments: BTreeMap<u16, Vec<u8>> = (1..=n)
        .map(|i| (i, dkg::commitments(curve, &entropy(i), &params(i)).unwrap()))
        .collect();
    let mut inbox: BTreeMap<u16, BTreeMap<u16, Vec<u8>>> = BTreeMap::new();
    let mut held = BTreeMap::new();
    for i in 1..=n {
        let (machine, shares) =
            dkg::secret_shares(curve, &entropy(i), &params(i), &commitments).unwrap();
        held.insert(i, machine);
        for (l, s) in shares {
            inbox.entry(l).or_default().insert(i, s);
        }
    }
    let mut keys = BTreeMap::new();
    let mut group = None;
    for i in 1..=n {
        // Odd participants as after a restart (round 2 regenerated), even ones with the
        // machine kept: the same keys either way.
        let machine = held.remove(&i).filter(|_| i % 2 == 0);
        let out = dkg::complete(
            curve,
            machine,
            &entropy(i),
            &params(i),
            &commitments,
            &inbox[&i],
        )
        .unwrap();
        assert!(group.as_ref().is_none_or(|g| *g == out.group_key));
        group = Some(out.group_key.clone());
        keys.insert(i, out.keys.to_vec());
    }
    (group.unwrap(), keys)
}

/// Drive one ceremony among `signers` and return every signer's result.
fn ceremony(
    coin: Coin,
    keys: &BTreeMap<u16, Vec<u8>>,
    signers: &[u16],
    msg: &[u8],
    tamper_share_of: Option<u16>,
) -> Vec<Result<[u8; 64], SignError>> {
    let mut rng = rand_core::OsRng;
    let session = b"test session";
    let mut round1 = BTreeMap::new();
    let mut preprocesses = BTreeMap::new();
    for &i in signers {
        let vk = VaultKeys::load(coin, &keys[&i]).unwrap();
        let (m, p) = vk.preprocess(session, &mut rng);
        round1.insert(i, m);
        preprocesses.insert(i, p);
    }
    let mut round2 = BTreeMap::new();
    let mut shares = BTreeMap::new();
    for (i, m) in round1 {
        let others: BTreeMap<u16, Vec<u8>> = preprocesses
            .iter()
            .filter(|(l, _)| **l != i)
            .map(|(l, p)| (*l, p.clone()))
            .collect();
        let (m, mut share) = m.sign(&others, msg).unwrap();
        if tamper_share_of == Some(i) {
            share[31] ^= 1;
        }
        round2.insert(i, m);
        shares.insert(i, share);
    }
    round2
        .into_iter()
        .map(|(i, m)| {
            let others: BTreeMap<u16, Vec<u8>> = shares
                .iter()
                .filter(|(l, _)| **l != i)
                .map(|(l, s)| (*l, s.clone()))
                .collect();
            m.complete(&others)
        })
        .collect()
}

#[test]
fn btc_bip340_signatures_verify_under_the_vault_address() {
    let (group, keys) = dkg(Coin::Btc);
    let addr = address::btc_address(&group).unwrap();
    let (_, _, program) = bech32::segwit::decode(&addr).unwrap();
    let secp = secp256k1::Secp256k1::verification_only();
    let xonly = secp256k1::XOnlyPublicKey::from_slice(&program).unwrap();
    for signers in [&[1u16, 2, 3][..], &[2, 3, 4], &[1, 3, 4], &[1, 2, 3, 4]] {
        let vk = VaultKeys::load(Coin::Btc, &keys[&signers[0]]).unwrap();
        assert_eq!(
            vk.verifying_key(),
            program,
            "signing key is the P2TR output key"
        );
        for m in 0u8..4 {
            let msg = [m; 32];
            let sigs = ceremony(Coin::Btc, &keys, signers, &msg, None);
            let first = *sigs[0].as_ref().unwrap();
            for s in &sigs {
                assert_eq!(
                    s.as_ref().unwrap(),
                    &first,
                    "every signer aggregates the same signature"
                );
            }
            let sig = secp256k1::schnorr::Signature::from_slice(&first).unwrap();
            let message = secp256k1::Message::from_digest(msg);
            secp.verify_schnorr(&sig, &message, &xonly)
                .expect("libsecp256k1 accepts it");
        }
    }
    // BIP340 signs 32-byte digests only.
    let vk = VaultKeys::load(Coin::Btc, &keys[&1]).unwrap();
    let (m, _) = vk.preprocess(b"s", &mut rand_core::OsRng);
    assert!(m.sign(&BTreeMap::new(), &[0; 31]).is_err());
}

#[test]
fn sol_ed25519_signatures_verify_with_ed25519_dalek() {
    let (group, keys) = dkg(Coin::Sol);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&group.clone().try_into().unwrap()).unwrap();
    assert_eq!(
        bs58::decode(address::sol_address(&group).unwrap())
            .into_vec()
            .unwrap(),
        group
    );
    for signers in [&[1u16, 2, 4][..], &[1, 2, 3, 4]] {
        for msg in [&b"a solana transaction message"[..], &[1], &[7; 1232]] {
            let sigs = ceremony(Coin::Sol, &keys, signers, msg, None);
            let sig = ed25519_dalek::Signature::from_bytes(sigs[0].as_ref().unwrap());
            key.verify_strict(msg, &sig)
                .expect("ed25519-dalek accepts it");
        }
    }
}

#[test]
fn an_invalid_share_names_its_sender() {
    for coin in [Coin::Btc, Coin::Sol] {
        let (_, keys) = dkg(coin);
        let results = ceremony(coin, &keys, &[1, 2, 4], &[9; 32], Some(4));
        for (i, r) in [1u16, 2, 4].iter().zip(results) {
            if *i == 4 {
                continue; // the cheater's own view
            }
            let e = r.unwrap_err();
            assert_eq!(e.culprit(), Some(4), "{coin}: {e}");
        }
    }
}

#[test]
fn too_few_signers_and_bad_bytes_are_errors() {
    let (_, keys) = dkg(Coin::Sol);
    let vk = VaultKeys::load(Coin::Sol, &keys[&1]).unwrap();
    let (m, _) = vk.preprocess(b"s", &mut rand_core::OsRng);
    let mut one = BTreeMap::new();
    one.insert(2u16, vec![0u8; 3]);
    assert_eq!(
        m.sign(&one, b"m").err(),
        Some(SignError::InvalidPreprocess(2))
    );
    assert!(VaultKeys::load(Coin::Sol, &[1, 2, 3]).is_err());
    assert!(
        VaultKeys::load(Coin::Btc, &keys[&1]).is_err(),
        "an ed25519 share is not a BTC key"
    );
    assert!(VaultKeys::load(Coin::Eth, &keys[&1]).is_err());
}
