//! The PedPoP DKG driver (dkg-pedpop 0.6), deterministic per attempt.
//!
//! All randomness of an attempt is derived from the node's persisted DKG entropy, the attempt's
//! context and the participant index, so a node restarted mid-DKG regenerates byte-identical
//! commitments and (given the same received commitments) identical encrypted shares. The PedPoP
//! machines are therefore never persisted: every round is recomputed from bytes on demand.

use std::{
    collections::{BTreeMap, HashMap},
    io,
};

use ciphersuite::group::GroupEncoding;
use dkg_pedpop::{
    AdditionalBlameMachine, Commitments, EncryptedMessage, EncryptionKeyMessage,
    EncryptionKeyProof, KeyGenMachine, KeyMachine, Participant, PedPoPError, SecretShare,
    ThresholdParams,
};
use modular_frost::curve::{Ciphersuite, Ed25519, Secp256k1};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use transcript::{RecommendedTranscript, Transcript};
use zeroize::Zeroizing;

use crate::ids::{Coin, Curve, ValidatorId};

/// The parameters of one DKG attempt, from one participant's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DkgParams {
    /// Threshold.
    pub t: u16,
    /// Participants.
    pub n: u16,
    /// Our 1-based index.
    pub i: u16,
    /// The attempt's unique context.
    pub context: [u8; 32],
}

/// Why a DKG round failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DkgFailure {
    /// A participant's message is invalid.
    #[error("participant {participant}: {reason}")]
    Blame {
        /// 1-based index.
        participant: u16,
        /// What was wrong.
        reason: String,
    },
    /// The encrypted share from `participant` failed; `proof` is dkg-pedpop's blame proof
    /// (`EncryptionKeyProof` bytes), absent when the ciphertext itself was invalid.
    #[error("participant {participant}: invalid secret share")]
    InvalidShare {
        /// 1-based index of the sender.
        participant: u16,
        /// Serialized `EncryptionKeyProof`.
        proof: Option<Vec<u8>>,
    },
    /// Anything else (bad parameters, missing messages).
    #[error("{0}")]
    Other(String),
}

/// The result of a completed DKG.
pub struct DkgOutput {
    /// Group public key bytes.
    pub group_key: Vec<u8>,
    /// Serialized `ThresholdKeys` (contains the secret share).
    pub keys: Zeroizing<Vec<u8>>,
}

/// The context of an attempt: unique per network, coin, session, attempt and participant set.
pub fn context(
    network: &str,
    coin: Coin,
    session: u32,
    attempt: u32,
    participants: &[ValidatorId],
) -> [u8; 32] {
    let mut t = RecommendedTranscript::new(b"vaultd DKG context v1");
    t.append_message(b"network", network.as_bytes());
    t.append_message(b"coin", coin.ticker().as_bytes());
    t.append_message(b"session", session.to_le_bytes());
    t.append_message(b"attempt", attempt.to_le_bytes());
    for p in participants {
        t.append_message(b"participant", p.as_bytes());
    }
    let challenge = t.challenge(b"context");
    let mut out = [0u8; 32];
    let bytes: &[u8] = challenge.as_ref();
    out.copy_from_slice(&bytes[..32]);
    out
}

/// Hash of one participant's commitment message.
pub fn commitment_hash(context: &[u8; 32], participant: u16, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vaultd commitment hash v1");
    h.update(context);
    h.update(participant.to_le_bytes());
    h.update(bytes);
    h.finalize().into()
}

/// The hash of every commitment message, in participant order.
pub fn commitment_hashes(
    context: &[u8; 32],
    commitments: &BTreeMap<u16, Vec<u8>>,
) -> Vec<[u8; 32]> {
    commitments
        .iter()
        .map(|(l, bytes)| commitment_hash(context, *l, bytes))
        .collect()
}

/// Hash of all n commitment messages (through their hashes): what the echo compares.
pub fn commitments_digest(context: &[u8; 32], hashes: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"vaultd commitments digest v2");
    h.update(context);
    for x in hashes {
        h.update(x);
    }
    h.finalize().into()
}

fn rng(entropy: &[u8; 32], label: &'static [u8], p: &DkgParams) -> ChaCha20Rng {
    let mut t = RecommendedTranscript::new(label);
    t.append_message(b"entropy", entropy);
    t.append_message(b"context", p.context);
    t.append_message(b"threshold", p.t.to_le_bytes());
    t.append_message(b"participants", p.n.to_le_bytes());
    t.append_message(b"participant", p.i.to_le_bytes());
    ChaCha20Rng::from_seed(t.rng_seed(b"rng"))
}

fn participant(i: u16) -> Result<Participant, DkgFailure> {
    Participant::new(i).ok_or_else(|| DkgFailure::Other("participant index 0".into()))
}

fn threshold_params(p: &DkgParams) -> Result<ThresholdParams, DkgFailure> {
    ThresholdParams::new(p.t, p.n, participant(p.i)?)
        .map_err(|e| DkgFailure::Other(format!("threshold parameters: {e:?}")))
}

/// Read exactly one value from `bytes`, rejecting trailing bytes.
pub(crate) fn read_exact<T>(
    bytes: &[u8],
    read: impl FnOnce(&mut &[u8]) -> io::Result<T>,
) -> io::Result<T> {
    let mut r = bytes;
    let v = read(&mut r)?;
    if !r.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "trailing bytes"));
    }
    Ok(v)
}

fn pedpop_failure<C: Ciphersuite>(e: PedPoPError<C>) -> DkgFailure {
    match e {
        PedPoPError::InvalidCommitments(l) => DkgFailure::Blame {
            participant: u16::from(l),
            reason: "invalid commitments".into(),
        },
        PedPoPError::InvalidShare { participant, blame } => DkgFailure::InvalidShare {
            participant: u16::from(participant),
            proof: blame.map(|p| p.serialize()),
        },
        PedPoPError::MissingParticipant(l) => DkgFailure::Blame {
            participant: u16::from(l),
            reason: "missing message".into(),
        },
        other => DkgFailure::Other(format!("{other:?}")),
    }
}

fn round1<C: Ciphersuite>(
    entropy: &[u8; 32],
    p: &DkgParams,
) -> Result<(dkg_pedpop::SecretShareMachine<C>, Vec<u8>), DkgFailure> {
    let params = threshold_params(p)?;
    let (machine, msg) = KeyGenMachine::<C>::new(params, p.context)
        .generate_coefficients(&mut rng(entropy, b"vaultd DKG coefficients", p));
    Ok((machine, msg.serialize()))
}

/// Parse commitment messages (all but `skip`'s), blaming the sender of one that does not parse.
fn read_commitments<C: Ciphersuite>(
    p: &DkgParams,
    commitments: &BTreeMap<u16, Vec<u8>>,
    skip: Option<u16>,
) -> Result<HashMap<Participant, EncryptionKeyMessage<C, Commitments<C>>>, DkgFailure> {
    let params = threshold_params(p)?;
    let mut out = HashMap::new();
    for (&l, bytes) in commitments {
        if Some(l) == skip {
            continue;
        }
        let msg = read_exact(bytes, |r| {
            EncryptionKeyMessage::<C, Commitments<C>>::read(r, params)
        })
        .map_err(|e| DkgFailure::Blame {
            participant: l,
            reason: format!("malformed commitments: {e}"),
        })?;
        out.insert(participant(l)?, msg);
    }
    Ok(out)
}

/// Messages by 1-based participant index.
pub type ByParticipant = BTreeMap<u16, Vec<u8>>;

fn round2<C: Ciphersuite>(
    entropy: &[u8; 32],
    p: &DkgParams,
    commitments: &ByParticipant,
) -> Result<(KeyMachine<C>, ByParticipant), DkgFailure> {
    let (machine, _) = round1::<C>(entropy, p)?;
    let others = read_commitments::<C>(p, commitments, Some(p.i))?;
    let (key_machine, shares) = machine
        .generate_secret_shares(&mut rng(entropy, b"vaultd DKG secret shares", p), others)
        .map_err(pedpop_failure)?;
    Ok((
        key_machine,
        shares
            .into_iter()
            .map(|(l, m)| (u16::from(l), m.serialize()))
            .collect(),
    ))
}

fn round3<C: Ciphersuite>(
    held: Option<KeyMachine<C>>,
    entropy: &[u8; 32],
    p: &DkgParams,
    commitments: &BTreeMap<u16, Vec<u8>>,
    shares: &BTreeMap<u16, Vec<u8>>,
) -> Result<DkgOutput, DkgFailure> {
    let params = threshold_params(p)?;
    // Round 2's machine if this process made it; after a restart, the same one regenerated.
    let key_machine = match held {
        Some(m) => m,
        None => round2::<C>(entropy, p, commitments)?.0,
    };
    let mut received = HashMap::new();
    for (&l, bytes) in shares {
        let msg = read_exact(bytes, |r| {
            EncryptedMessage::<C, SecretShare<C::F>>::read(r, params)
        })
        .map_err(|e| DkgFailure::Blame {
            participant: l,
            reason: format!("malformed share: {e}"),
        })?;
        received.insert(participant(l)?, msg);
    }
    let blame_machine = key_machine
        .calculate_share(&mut rng(entropy, b"vaultd DKG share", p), received)
        .map_err(pedpop_failure)?;
    // Completion is confirmed by every participant publishing the same group key
    // (PublicAddressAvailable) before the vault is considered active.
    let keys = blame_machine.complete();
    Ok(DkgOutput {
        group_key: keys.group_key().to_bytes().as_ref().to_vec(),
        keys: keys.serialize(),
    })
}

fn check_commitment<C: Ciphersuite>(p: &DkgParams, bytes: &[u8]) -> Result<(), String> {
    let params = threshold_params(p).map_err(|e| e.to_string())?;
    read_exact(bytes, |r| {
        EncryptionKeyMessage::<C, Commitments<C>>::read(r, params)
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn check_share<C: Ciphersuite>(p: &DkgParams, bytes: &[u8]) -> Result<(), String> {
    let params = threshold_params(p).map_err(|e| e.to_string())?;
    read_exact(bytes, |r| {
        EncryptedMessage::<C, SecretShare<C::F>>::read(r, params)
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

macro_rules! on_curve {
    ($curve:expr, $f:ident ( $($arg:expr),* )) => {
        match $curve {
            Curve::Secp256k1 => $f::<Secp256k1>($($arg),*),
            Curve::Ed25519 => $f::<Ed25519>($($arg),*),
        }
    };
}

/// Round 1: our commitment message (broadcast to every participant).
pub fn commitments(curve: Curve, entropy: &[u8; 32], p: &DkgParams) -> Result<Vec<u8>, DkgFailure> {
    fn inner<C: Ciphersuite>(e: &[u8; 32], p: &DkgParams) -> Result<Vec<u8>, DkgFailure> {
        round1::<C>(e, p).map(|(_, m)| m)
    }
    on_curve!(curve, inner(entropy, p))
}

/// Round 2's machine, kept in memory for round 3 (machines cannot be stored: after a restart
/// round 3 regenerates it from the entropy, which costs round 2 again).
pub struct HeldKeyMachine {
    /// The commitments it was made from (round 3 must use the same).
    context: [u8; 32],
    commitments: [u8; 32],
    machine: HeldCurve,
}

/// Without the machine's contents: it holds our polynomial's secret coefficients.
impl std::fmt::Debug for HeldKeyMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKeyMachine").finish_non_exhaustive()
    }
}

enum HeldCurve {
    Secp256k1(KeyMachine<Secp256k1>),
    Ed25519(KeyMachine<Ed25519>),
}

fn commitments_fingerprint(commitments: &BTreeMap<u16, Vec<u8>>) -> [u8; 32] {
    let mut h = Sha256::new();
    for (l, c) in commitments {
        h.update(l.to_be_bytes());
        h.update((c.len() as u64).to_be_bytes());
        h.update(c);
    }
    h.finalize().into()
}

/// Round 2: our encrypted share for each other participant, from all n commitments, and the
/// machine round 3 continues with.
pub fn secret_shares(
    curve: Curve,
    entropy: &[u8; 32],
    p: &DkgParams,
    commitments: &BTreeMap<u16, Vec<u8>>,
) -> Result<(HeldKeyMachine, BTreeMap<u16, Vec<u8>>), DkgFailure> {
    let machine = match curve {
        Curve::Secp256k1 => {
            let (m, s) = round2::<Secp256k1>(entropy, p, commitments)?;
            (HeldCurve::Secp256k1(m), s)
        }
        Curve::Ed25519 => {
            let (m, s) = round2::<Ed25519>(entropy, p, commitments)?;
            (HeldCurve::Ed25519(m), s)
        }
    };
    Ok((
        HeldKeyMachine {
            context: p.context,
            commitments: commitments_fingerprint(commitments),
            machine: machine.0,
        },
        machine.1,
    ))
}

/// Round 3: our key share and the group key, from all commitments and the n-1 shares to us;
/// with round 2's machine where this process still holds it for these commitments.
pub fn complete(
    curve: Curve,
    held: Option<HeldKeyMachine>,
    entropy: &[u8; 32],
    p: &DkgParams,
    commitments: &BTreeMap<u16, Vec<u8>>,
    shares: &BTreeMap<u16, Vec<u8>>,
) -> Result<DkgOutput, DkgFailure> {
    let held = held
        .filter(|h| h.context == p.context && h.commitments == commitments_fingerprint(commitments))
        .map(|h| h.machine);
    match (curve, held) {
        (Curve::Secp256k1, Some(HeldCurve::Secp256k1(m))) => {
            round3::<Secp256k1>(Some(m), entropy, p, commitments, shares)
        }
        (Curve::Ed25519, Some(HeldCurve::Ed25519(m))) => {
            round3::<Ed25519>(Some(m), entropy, p, commitments, shares)
        }
        (Curve::Secp256k1, _) => round3::<Secp256k1>(None, entropy, p, commitments, shares),
        (Curve::Ed25519, _) => round3::<Ed25519>(None, entropy, p, commitments, shares),
    }
}

fn judge_inner<C: Ciphersuite>(
    p: &DkgParams,
    commitments: &BTreeMap<u16, Vec<u8>>,
    accused: u16,
    accuser: u16,
    share: &[u8],
    proof: Option<&[u8]>,
) -> Result<u16, DkgFailure> {
    let params = threshold_params(p)?;
    let msgs = read_commitments::<C>(p, commitments, None)?;
    if msgs.len() != usize::from(p.n) {
        return Err(DkgFailure::Other(format!(
            "{} of {} commitments to judge with",
            msgs.len(),
            p.n
        )));
    }
    let judge = AdditionalBlameMachine::<C>::new(p.context, p.n, msgs).map_err(pedpop_failure)?;
    // A share that does not even parse is the sender's fault: it signed those bytes.
    let Ok(msg) = read_exact(share, |r| {
        EncryptedMessage::<C, SecretShare<C::F>>::read(r, params)
    }) else {
        return Ok(accused);
    };
    // A proof that does not parse is no proof: the accusation is false.
    let proof = match proof {
        Some(bytes) => match read_exact(bytes, |r| EncryptionKeyProof::<C>::read(r)) {
            Ok(p) => Some(p),
            Err(_) => return Ok(accuser),
        },
        None => None,
    };
    Ok(u16::from(judge.blame(
        participant(accused)?,
        participant(accuser)?,
        msg,
        proof,
    )))
}

/// PedPoP blame: given the attempt's n commitment messages (already agreed by the echo), the
/// share `accused` sent to `accuser` and the accuser's proof, who is at fault (the accused if
/// its share was bad, the accuser if the accusation is false). Every validator gets the same
/// answer from the same evidence.
pub fn judge(
    curve: Curve,
    p: &DkgParams,
    commitments: &BTreeMap<u16, Vec<u8>>,
    accused: u16,
    accuser: u16,
    share: &[u8],
    proof: Option<&[u8]>,
) -> Result<u16, DkgFailure> {
    if accused == accuser || accused == 0 || accuser == 0 || accused > p.n || accuser > p.n {
        return Err(DkgFailure::Other(
            "blame between invalid participants".into(),
        ));
    }
    on_curve!(
        curve,
        judge_inner(p, commitments, accused, accuser, share, proof)
    )
}

/// Whether `bytes` is a well-formed commitment message for these parameters.
pub fn validate_commitment(curve: Curve, p: &DkgParams, bytes: &[u8]) -> Result<(), String> {
    on_curve!(curve, check_commitment(p, bytes))
}

/// Whether `bytes` is a well-formed encrypted share.
pub fn validate_share(curve: Curve, p: &DkgParams, bytes: &[u8]) -> Result<(), String> {
    on_curve!(curve, check_share(p, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(curve: Curve, t: u16, n: u16) -> Vec<DkgOutput> {
        let ctx = [7u8; 32];
        let entropy: Vec<[u8; 32]> = (1..=n).map(|i| [i as u8; 32]).collect();
        let params = |i: u16| DkgParams {
            t,
            n,
            i,
            context: ctx,
        };
        let mut commits = BTreeMap::new();
        for i in 1..=n {
            let c = commitments(curve, &entropy[usize::from(i - 1)], &params(i)).unwrap();
            // deterministic
            assert_eq!(
                c,
                commitments(curve, &entropy[usize::from(i - 1)], &params(i)).unwrap()
            );
            validate_commitment(curve, &params(i), &c).unwrap();
            commits.insert(i, c);
        }
        let mut inbox: BTreeMap<u16, BTreeMap<u16, Vec<u8>>> = BTreeMap::new();
        for i in 1..=n {
            let (_, shares) =
                secret_shares(curve, &entropy[usize::from(i - 1)], &params(i), &commits).unwrap();
            assert_eq!(shares.len(), usize::from(n - 1));
            for (l, s) in shares {
                validate_share(curve, &params(l), &s).unwrap();
                inbox.entry(l).or_default().insert(i, s);
            }
        }
        (1..=n)
            .map(|i| {
                complete(
                    curve,
                    None,
                    &entropy[usize::from(i - 1)],
                    &params(i),
                    &commits,
                    &inbox[&i],
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn all_parties_agree_on_both_curves() {
        for curve in [Curve::Secp256k1, Curve::Ed25519] {
            let out = run(curve, 3, 4);
            assert!(out.windows(2).all(|w| w[0].group_key == w[1].group_key));
        }
    }

    #[test]
    fn malformed_commitments_blame_the_sender() {
        let p = DkgParams {
            t: 2,
            n: 3,
            i: 1,
            context: [1; 32],
        };
        let mut commits = BTreeMap::new();
        for i in 1..=3u16 {
            let pi = DkgParams { i, ..p };
            commits.insert(
                i,
                commitments(Curve::Secp256k1, &[i as u8; 32], &pi).unwrap(),
            );
        }
        commits.insert(3, vec![0u8; 10]);
        let e = secret_shares(Curve::Secp256k1, &[1; 32], &p, &commits).unwrap_err();
        assert!(
            matches!(e, DkgFailure::Blame { participant: 3, .. }),
            "{e:?}"
        );
        assert!(validate_commitment(Curve::Secp256k1, &p, &[1, 2, 3]).is_err());
    }
}
