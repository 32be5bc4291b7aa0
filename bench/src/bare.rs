//! The bare limit: dkg-pedpop and modular-frost called directly, with no vaultd code, all
//! parties in this thread, timed in this thread's CPU time.
//!
//! What it leaves out on purpose: networking, storage, vaultd's sealing and signatures, and
//! the rounds that make the DKG robust (echoes, confirmations). What it keeps: every message
//! goes through its byte encoding (`serialize` then `read`), as it must between processes.
//! The signature uses the IETF ciphersuite of each curve (RFC 9591); BIP340's and vaultd's
//! Ethereum challenge cost the same group operations (one hash differs), and the keys carry an
//! offset as the coins' tweaked keys do.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use dkg_pedpop::{
    EncryptedMessage, EncryptionKeyMessage, KeyGenMachine, Participant, SecretShare,
    ThresholdParams,
};
use modular_frost::{
    algorithm::{Algorithm, IetfSchnorr},
    curve::{Curve, Ed25519, IetfEd25519Hram, IetfSecp256k1Hram, Secp256k1},
    sign::{AlgorithmMachine, PreprocessMachine, SignMachine, SignatureMachine, Writable},
    ThresholdKeys,
};
use rand_core::OsRng;

use protocol::Coin;

/// CPU time this thread has run, in seconds (`CLOCK_THREAD_CPUTIME_ID`, nanoseconds;
/// `/proc/thread-self/schedstat` counts in scheduler ticks on this kernel).
pub fn thread_cpu_s() -> Result<f64> {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// CPU seconds `f` takes on this thread.
fn cpu<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = thread_cpu_s()?;
    let out = f()?;
    Ok((out, thread_cpu_s()? - start))
}

/// One curve's bare figures at one (n, t).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Curve1 {
    /// A whole DKG, all n parties, CPU seconds.
    pub dkg_cpu_s: f64,
    /// One signature, all t signers: preprocess, sign, and one aggregation, CPU seconds.
    pub sign_cpu_s: f64,
    /// Of which: every signer's preprocess.
    pub preprocess_cpu_s: f64,
    /// Every signer's `sign` (its share).
    pub share_cpu_s: f64,
    /// One aggregation (`complete`, which checks the signature).
    pub aggregate_cpu_s: f64,
}

/// The bare figures of both curves at one (n, t).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Bare {
    pub secp256k1: Curve1,
    pub ed25519: Curve1,
}

impl Bare {
    /// Measure the curves `coins` use: the DKG best of `dkg_runs`, a signature best of three.
    pub fn measure(n: u16, t: u16, dkg_runs: usize, coins: &[Coin]) -> Result<Bare> {
        let secp256k1 = if coins.iter().any(|c| *c != Coin::Sol) {
            measure_curve::<Secp256k1, IetfSecp256k1Hram>(n, t, dkg_runs)
                .context("bare secp256k1")?
        } else {
            Curve1::default()
        };
        let ed25519 = if coins.contains(&Coin::Sol) {
            measure_curve::<Ed25519, IetfEd25519Hram>(n, t, dkg_runs).context("bare ed25519")?
        } else {
            Curve1::default()
        };
        Ok(Bare { secp256k1, ed25519 })
    }

    fn curve(&self, coin: Coin) -> &Curve1 {
        match coin {
            Coin::Sol => &self.ed25519,
            _ => &self.secp256k1,
        }
    }

    /// The DKG CPU of one vault per coin.
    pub fn dkg_cpu_s(&self, coins: &[Coin]) -> f64 {
        coins.iter().map(|c| self.curve(*c).dkg_cpu_s).sum()
    }

    /// A signature's CPU, averaged over the coins (requests are spread evenly over them).
    pub fn sign_cpu_s(&self, coins: &[Coin]) -> f64 {
        let sum: f64 = coins.iter().map(|c| self.curve(*c).sign_cpu_s).sum();
        sum / coins.len().max(1) as f64
    }
}

fn measure_curve<C: Curve, H: modular_frost::algorithm::Hram<C>>(
    n: u16,
    t: u16,
    dkg_runs: usize,
) -> Result<Curve1> {
    let mut best: Option<(Vec<ThresholdKeys<C>>, f64)> = None;
    for run in 0..dkg_runs.max(1) {
        let (keys, s) = cpu(|| dkg::<C>(n, t, run as u8))?;
        if best.as_ref().is_none_or(|(_, b)| s < *b) {
            best = Some((keys, s));
        }
    }
    let (keys, dkg_cpu_s) = best.ok_or_else(|| anyhow!("no DKG run"))?;
    // A tweaked key, as every coin signs with (taproot, even-Y).
    let keys: Vec<ThresholdKeys<C>> = keys
        .into_iter()
        .map(|k| k.offset(C::F::from(7u64)))
        .collect();
    let mut best = Curve1 {
        dkg_cpu_s,
        sign_cpu_s: f64::INFINITY,
        ..Curve1::default()
    };
    for k in 0..3u8 {
        let s = sign::<C, H>(&keys[..usize::from(t)], &[k; 32])?;
        if s.sign_cpu_s < best.sign_cpu_s {
            best = Curve1 { dkg_cpu_s, ..s };
        }
    }
    Ok(best)
}

fn participant(i: u16) -> Result<Participant> {
    Participant::new(i).ok_or_else(|| anyhow!("participant 0"))
}

/// A whole PedPoP DKG among n parties (rounds 1 to 3), every message through bytes.
fn dkg<C: Curve>(n: u16, t: u16, run: u8) -> Result<Vec<ThresholdKeys<C>>> {
    let context = [run; 32];
    let params = |i: u16| -> Result<ThresholdParams> {
        ThresholdParams::new(t, n, participant(i)?).map_err(|e| anyhow!("{e:?}"))
    };
    // Round 1: every party's commitments (broadcast).
    let mut machines = Vec::new();
    let mut commitments: Vec<Vec<u8>> = Vec::new();
    for i in 1..=n {
        let (m, c) = KeyGenMachine::<C>::new(params(i)?, context).generate_coefficients(&mut OsRng);
        machines.push(m);
        commitments.push(c.serialize());
    }
    // Round 2: every party reads the others' commitments and deals a share to each.
    let mut key_machines = Vec::new();
    let mut shares: Vec<HashMap<Participant, Vec<u8>>> = Vec::new();
    for (i, m) in (1..=n).zip(machines) {
        let mut theirs = HashMap::new();
        for (j, bytes) in (1..=n).zip(&commitments) {
            if j == i {
                continue;
            }
            let msg = EncryptionKeyMessage::<C, dkg_pedpop::Commitments<C>>::read(
                &mut bytes.as_slice(),
                params(j)?,
            )?;
            theirs.insert(participant(j)?, msg);
        }
        let (km, out) = m
            .generate_secret_shares(&mut OsRng, theirs)
            .map_err(|e| anyhow!("round 2: {e:?}"))?;
        key_machines.push(km);
        shares.push(out.into_iter().map(|(l, s)| (l, s.serialize())).collect());
    }
    // Round 3: every party reads the shares dealt to it and computes its key share.
    let mut keys = Vec::new();
    for (i, km) in (1..=n).zip(key_machines) {
        let me = participant(i)?;
        let mut mine = HashMap::new();
        for (j, dealt) in (1..=n).zip(&shares) {
            if j == i {
                continue;
            }
            let bytes = dealt
                .get(&me)
                .ok_or_else(|| anyhow!("no share {j} -> {i}"))?;
            let msg =
                EncryptedMessage::<C, SecretShare<C::F>>::read(&mut bytes.as_slice(), params(j)?)?;
            mine.insert(participant(j)?, msg);
        }
        let blame = km
            .calculate_share(&mut OsRng, mine)
            .map_err(|e| anyhow!("round 3: {e:?}"))?;
        keys.push(blame.complete());
    }
    Ok(keys)
}

/// One signature by `signers` (the first t key shares): every signer preprocesses and signs,
/// one of them aggregates.
fn sign<C: Curve, H: modular_frost::algorithm::Hram<C>>(
    signers: &[ThresholdKeys<C>],
    msg: &[u8],
) -> Result<Curve1> {
    let algorithm = IetfSchnorr::<C, H>::ietf();
    let (pre, preprocess_cpu_s) = cpu(|| {
        let mut out = Vec::new();
        for k in signers {
            let (m, p) = AlgorithmMachine::new(algorithm.clone(), k.clone()).preprocess(&mut OsRng);
            out.push((k.params().i(), m, p.serialize()));
        }
        Ok(out)
    })?;
    let ids: Vec<Participant> = pre.iter().map(|(i, _, _)| *i).collect();
    let bytes: Vec<Vec<u8>> = pre.iter().map(|(_, _, p)| p.clone()).collect();
    let (machines, share_cpu_s) = cpu(|| {
        let mut out = Vec::new();
        for (me, m, _) in pre {
            let mut theirs = HashMap::new();
            for (l, b) in ids.iter().zip(&bytes) {
                if *l != me {
                    theirs.insert(*l, m.read_preprocess(&mut b.as_slice())?);
                }
            }
            let (sm, share) = m.sign(theirs, msg).map_err(|e| anyhow!("sign: {e:?}"))?;
            out.push((me, sm, share.serialize()));
        }
        Ok(out)
    })?;
    let ((), aggregate_cpu_s) = cpu(|| {
        let mut it = machines.into_iter();
        let (me, aggregator, _) = it.next().ok_or_else(|| anyhow!("no signer"))?;
        let mut shares = HashMap::new();
        for (l, _, b) in it {
            if l != me {
                shares.insert(l, aggregator.read_share(&mut b.as_slice())?);
            }
        }
        let _signature: <IetfSchnorr<C, H> as Algorithm<C>>::Signature = aggregator
            .complete(shares)
            .map_err(|e| anyhow!("aggregate: {e:?}"))?;
        Ok(())
    })?;
    Ok(Curve1 {
        dkg_cpu_s: 0.0,
        sign_cpu_s: preprocess_cpu_s + share_cpu_s + aggregate_cpu_s,
        preprocess_cpu_s,
        share_cpu_s,
        aggregate_cpu_s,
    })
}
