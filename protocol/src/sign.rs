//! FROST threshold signing in each chain's format (modular-frost 0.11), sans-IO.
//!
//! This is the cryptographic core of the signing ceremony: vault keys loaded from their stored
//! form with the chain's tweaks applied, the algorithms, and byte-level rounds
//! (preprocess → sign → complete) that a ceremony drives over any transport.
//!
//! * **BTC**: BIP340 over the P2TR output key of the vault's address. The group key is made
//!   even-Y, offset by the BIP86 tweak `H_TapTweak(x(P))`, and made even-Y again, so every
//!   signature verifies under the 32-byte program of the vault's `bc1p...` address. The
//!   challenge is BIP340's tagged hash, negated when the aggregate nonce R is odd, and the final
//!   `s` is negated likewise, so `x(R) ‖ s` is a standard 64-byte BIP340 signature.
//! * **SOL**: RFC 8032 Ed25519 (`SHA-512(R ‖ A ‖ M)`), 64 bytes `R ‖ s`.
//!
//! Each signer's transcript binds the ceremony's session id, so nonces are bound to it.

use std::{collections::BTreeMap, collections::HashMap, io};

use ciphersuite::group::GroupEncoding;
use k256::{elliptic_curve::ops::Reduce, ProjectivePoint, Scalar, U256};
use modular_frost::{
    algorithm::{Algorithm, Hram, Schnorr},
    curve::{Ed25519, IetfEd25519Hram, Secp256k1},
    sign::{
        AlgorithmMachine, AlgorithmSignMachine, AlgorithmSignatureMachine, PreprocessMachine,
        SignMachine as _, SignatureMachine as _, Writable,
    },
    FrostError, Participant, ThresholdKeys, ThresholdView,
};
use rand_core::{CryptoRng, RngCore};
use transcript::{RecommendedTranscript, Transcript};
use zeroize::Zeroizing;

use crate::{
    address::{self, x_only},
    dkg::read_exact,
    ids::Coin,
};

/// Why signing failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A participant's preprocess is malformed or invalid.
    #[error("participant {0} sent an invalid preprocess")]
    InvalidPreprocess(u16),
    /// A participant's signature share is malformed or invalid.
    #[error("participant {0} sent an invalid signature share")]
    InvalidShare(u16),
    /// Anything else (keys, signer set, message).
    #[error("{0}")]
    Other(String),
}

impl SignError {
    /// The 1-based index of the participant at fault, if any.
    pub fn culprit(&self) -> Option<u16> {
        match self {
            SignError::InvalidPreprocess(l) | SignError::InvalidShare(l) => Some(*l),
            SignError::Other(_) => None,
        }
    }
}

fn frost(e: FrostError) -> SignError {
    match e {
        FrostError::InvalidPreprocess(l) => SignError::InvalidPreprocess(u16::from(l)),
        FrostError::InvalidShare(l) => SignError::InvalidShare(u16::from(l)),
        other => SignError::Other(format!("{other:?}")),
    }
}

/// BIP340's challenge, negated when R is odd (the signers then sign for -R's even twin).
#[derive(Clone, Copy, Debug)]
pub struct Bip340Hram;

impl Hram<Secp256k1> for Bip340Hram {
    #[allow(non_snake_case)]
    fn hram(R: &ProjectivePoint, A: &ProjectivePoint, m: &[u8]) -> Scalar {
        let (rx, r_odd) = x_only(R);
        let (ax, _) = x_only(A);
        let c = address::tagged_hash(b"BIP0340/challenge", &[&rx, &ax, m]);
        let c = <Scalar as Reduce<U256>>::reduce_bytes(&c.into());
        if r_odd {
            -c
        } else {
            c
        }
    }
}

/// BIP340 signing: Schnorr with [`Bip340Hram`], output `x(R) ‖ s` with `s` negated for odd R.
#[derive(Clone)]
pub struct Bip340(Schnorr<Secp256k1, RecommendedTranscript, Bip340Hram>);

impl Bip340 {
    /// For the ceremony `session`.
    pub fn new(session: &[u8]) -> Self {
        Bip340(Schnorr::new(session_transcript(
            b"vaultd BIP340 v1",
            session,
        )))
    }
}

impl Algorithm<Secp256k1> for Bip340 {
    type Transcript = RecommendedTranscript;
    type Addendum = ();
    type Signature = [u8; 64];

    fn transcript(&mut self) -> &mut Self::Transcript {
        self.0.transcript()
    }
    fn nonces(&self) -> Vec<Vec<ProjectivePoint>> {
        self.0.nonces()
    }
    fn preprocess_addendum<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        keys: &ThresholdKeys<Secp256k1>,
    ) {
        self.0.preprocess_addendum(rng, keys)
    }
    fn read_addendum<R: io::Read>(&self, reader: &mut R) -> io::Result<()> {
        self.0.read_addendum(reader)
    }
    fn process_addendum(
        &mut self,
        view: &ThresholdView<Secp256k1>,
        l: Participant,
        a: (),
    ) -> Result<(), FrostError> {
        self.0.process_addendum(view, l, a)
    }
    fn sign_share(
        &mut self,
        view: &ThresholdView<Secp256k1>,
        nonce_sums: &[Vec<ProjectivePoint>],
        nonces: Vec<Zeroizing<Scalar>>,
        msg: &[u8],
    ) -> Scalar {
        self.0.sign_share(view, nonce_sums, nonces, msg)
    }
    fn verify(
        &self,
        group_key: ProjectivePoint,
        nonces: &[Vec<ProjectivePoint>],
        sum: Scalar,
    ) -> Option<[u8; 64]> {
        let sig = self.0.verify(group_key, nonces, sum)?;
        let (rx, r_odd) = x_only(&sig.R);
        let s = if r_odd { -sig.s } else { sig.s };
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&rx);
        out[32..].copy_from_slice(&s.to_bytes());
        Some(out)
    }
    fn verify_share(
        &self,
        verification_share: ProjectivePoint,
        nonces: &[Vec<ProjectivePoint>],
        share: Scalar,
    ) -> Result<Vec<(Scalar, ProjectivePoint)>, ()> {
        self.0.verify_share(verification_share, nonces, share)
    }
}

/// RFC 8032 Ed25519 signing.
pub type Ed25519Schnorr = Schnorr<Ed25519, RecommendedTranscript, IetfEd25519Hram>;

fn session_transcript(label: &'static [u8], session: &[u8]) -> RecommendedTranscript {
    let mut t = RecommendedTranscript::new(label);
    t.append_message(b"session", session);
    t
}

/// A vault's key share, ready to sign in the coin's format.
#[derive(Clone)]
pub enum VaultKeys {
    /// BTC: tweaked to the P2TR output key (even Y).
    Bitcoin(ThresholdKeys<Secp256k1>),
    /// SOL.
    Solana(ThresholdKeys<Ed25519>),
}

/// Make a secp256k1 key even-Y by negating the whole share set if needed.
fn even(keys: ThresholdKeys<Secp256k1>) -> Result<ThresholdKeys<Secp256k1>, SignError> {
    if x_only(&keys.group_key()).1 {
        keys.scale(-Scalar::ONE)
            .ok_or_else(|| SignError::Other("scaling keys".into()))
    } else {
        Ok(keys)
    }
}

impl VaultKeys {
    /// Load a stored key share (`ThresholdKeys::serialize`) and apply the coin's tweaks.
    pub fn load(coin: Coin, serialized: &[u8]) -> Result<VaultKeys, SignError> {
        let bad = |e: io::Error| SignError::Other(format!("stored key share: {e}"));
        let keys = match coin {
            Coin::Btc => {
                let keys =
                    read_exact(serialized, |r| ThresholdKeys::<Secp256k1>::read(r)).map_err(bad)?;
                let keys = even(keys)?;
                let (px, _) = x_only(&keys.group_key());
                let tweak =
                    address::taproot_tweak(&px).map_err(|e| SignError::Other(e.to_string()))?;
                VaultKeys::Bitcoin(even(keys.offset(tweak))?)
            }
            Coin::Sol => VaultKeys::Solana(
                read_exact(serialized, |r| ThresholdKeys::<Ed25519>::read(r)).map_err(bad)?,
            ),
            Coin::Eth => {
                return Err(SignError::Other(
                    "ETH signing is not implemented yet".into(),
                ));
            }
        };
        Ok(keys)
    }

    /// The key signatures verify under: BIP340 x-only output key, or the Ed25519 public key.
    pub fn verifying_key(&self) -> Vec<u8> {
        match self {
            VaultKeys::Bitcoin(k) => x_only(&k.group_key()).0.to_vec(),
            VaultKeys::Solana(k) => k.group_key().to_bytes().as_ref().to_vec(),
        }
    }

    /// Round 1: commit to nonces. The preprocess bytes go to every other signer.
    ///
    /// # Security
    /// A machine (and its nonces) must be used for exactly one message set; the caller must
    /// record that this ceremony was preprocessed before sending the bytes.
    pub fn preprocess<R: RngCore + CryptoRng>(
        &self,
        session: &[u8],
        rng: &mut R,
    ) -> (SignRound1, Vec<u8>) {
        match self {
            VaultKeys::Bitcoin(k) => {
                let (m, p) = AlgorithmMachine::new(Bip340::new(session), k.clone()).preprocess(rng);
                (SignRound1::Bitcoin(Box::new(m)), p.serialize())
            }
            VaultKeys::Solana(k) => {
                let alg = Ed25519Schnorr::new(session_transcript(b"vaultd Ed25519 v1", session));
                let (m, p) = AlgorithmMachine::new(alg, k.clone()).preprocess(rng);
                (SignRound1::Solana(Box::new(m)), p.serialize())
            }
        }
    }
}

/// After preprocessing.
pub enum SignRound1 {
    /// BTC.
    Bitcoin(Box<AlgorithmSignMachine<Secp256k1, Bip340>>),
    /// SOL.
    Solana(Box<AlgorithmSignMachine<Ed25519, Ed25519Schnorr>>),
}

/// After signing a share.
pub enum SignRound2 {
    /// BTC.
    Bitcoin(Box<AlgorithmSignatureMachine<Secp256k1, Bip340>>),
    /// SOL.
    Solana(Box<AlgorithmSignatureMachine<Ed25519, Ed25519Schnorr>>),
}

fn participant(l: u16) -> Result<Participant, SignError> {
    Participant::new(l).ok_or_else(|| SignError::Other("participant 0".into()))
}

fn read_all<T>(
    l: u16,
    bytes: &[u8],
    read: impl FnOnce(&mut &[u8]) -> io::Result<T>,
    err: fn(u16) -> SignError,
) -> Result<T, SignError> {
    read_exact(bytes, read).map_err(|_| err(l))
}

macro_rules! sign_round {
    ($m:expr, $pre:expr, $msg:expr, $variant:path) => {{
        let mut map = HashMap::new();
        for (l, bytes) in $pre {
            let p = read_all(
                *l,
                bytes,
                |r| $m.read_preprocess(r),
                SignError::InvalidPreprocess,
            )?;
            map.insert(participant(*l)?, p);
        }
        let (next, share) = $m.sign(map, $msg).map_err(frost)?;
        Ok(($variant(Box::new(next)), share.serialize()))
    }};
}

impl SignRound1 {
    /// Round 2: given the other signers' preprocesses (by participant index; the signer set is
    /// their indexes plus ours), sign `msg`. The share bytes go to every other signer.
    pub fn sign(
        self,
        preprocesses: &BTreeMap<u16, Vec<u8>>,
        msg: &[u8],
    ) -> Result<(SignRound2, Vec<u8>), SignError> {
        match self {
            SignRound1::Bitcoin(m) => {
                if msg.len() != 32 {
                    return Err(SignError::Other(format!(
                        "BIP340 signs 32-byte messages, not {}",
                        msg.len()
                    )));
                }
                sign_round!(m, preprocesses, msg, SignRound2::Bitcoin)
            }
            SignRound1::Solana(m) => sign_round!(m, preprocesses, msg, SignRound2::Solana),
        }
    }
}

macro_rules! complete_round {
    ($m:expr, $shares:expr) => {{
        let mut map = HashMap::new();
        for (l, bytes) in $shares {
            let s = read_all(*l, bytes, |r| $m.read_share(r), SignError::InvalidShare)?;
            map.insert(participant(*l)?, s);
        }
        $m.complete(map).map_err(frost)
    }};
}

impl SignRound2 {
    /// Round 3: aggregate the other signers' shares into the 64-byte signature, verified against
    /// the group key; an invalid share names its sender.
    pub fn complete(self, shares: &BTreeMap<u16, Vec<u8>>) -> Result<[u8; 64], SignError> {
        match self {
            SignRound2::Bitcoin(m) => complete_round!(m, shares),
            SignRound2::Solana(m) => {
                let sig = complete_round!(m, shares)?;
                let bytes = sig.serialize();
                bytes
                    .try_into()
                    .map_err(|_| SignError::Other("signature length".into()))
            }
        }
    }
}
