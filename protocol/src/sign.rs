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
//! * **ETH**: Schnorr on secp256k1 in the form an Ethereum contract verifies with one
//!   `ecrecover`: challenge `c = keccak256(address(R) ‖ v ‖ px ‖ m)` (v = 27 + parity of the
//!   group key's y, px its x), signature `c ‖ s`. The equation and a contract are in
//!   `docs/SIGNING.md`.
//! * **SOL**: RFC 8032 Ed25519 (`SHA-512(R ‖ A ‖ M)`), 64 bytes `R ‖ s`.
//!
//! Each signer's transcript binds the ceremony's session id, so nonces are bound to it.

use std::{collections::BTreeMap, collections::HashMap, io};

use ciphersuite::group::{Group, GroupEncoding};
use k256::{
    elliptic_curve::{ops::Reduce, PrimeField},
    ProjectivePoint, Scalar, U256,
};
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
use sha3::{Digest, Keccak256};
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

/// The challenge of the Ethereum Schnorr verifier (see `docs/SIGNING.md`):
/// `c = keccak256(address(R) ‖ v ‖ px ‖ m)` with `v = 27 + parity(A.y)` and `px = x(A)`.
#[derive(Clone, Copy, Debug)]
pub struct EthereumHram;

impl EthereumHram {
    /// The challenge bytes, before reduction (the contract compares these).
    #[allow(non_snake_case)]
    pub fn challenge(R: &ProjectivePoint, A: &ProjectivePoint, m: &[u8]) -> [u8; 32] {
        let (ax, a_odd) = x_only(A);
        let v = 27 + u8::from(a_odd);
        let mut h = Keccak256::new();
        h.update(address::eth_address_bytes(R));
        h.update([v]);
        h.update(ax);
        h.update(m);
        h.finalize().into()
    }
}

impl Hram<Secp256k1> for EthereumHram {
    #[allow(non_snake_case)]
    fn hram(R: &ProjectivePoint, A: &ProjectivePoint, m: &[u8]) -> Scalar {
        <Scalar as Reduce<U256>>::reduce_bytes(&Self::challenge(R, A, m).into())
    }
}

/// How a secp256k1 Schnorr signature is laid out for a chain.
pub trait SignatureFormat: Clone + Send + Sync + 'static {
    /// The chain's challenge.
    type Challenge: Hram<Secp256k1>;
    /// Transcript label.
    const LABEL: &'static [u8];
    /// The 64 signature bytes for nonce `R`, group key `A`, response `s` and message `m`;
    /// `None` if the chain cannot accept this signature.
    #[allow(non_snake_case)]
    fn encode(R: &ProjectivePoint, A: &ProjectivePoint, s: Scalar, m: &[u8]) -> Option<[u8; 64]>;
}

/// BIP340: `x(R) ‖ s`, with `s` negated for odd R (the challenge was negated likewise).
#[derive(Clone, Copy, Debug)]
pub struct Bip340Format;

impl SignatureFormat for Bip340Format {
    type Challenge = Bip340Hram;
    const LABEL: &'static [u8] = b"vaultd BIP340 v1";
    #[allow(non_snake_case)]
    fn encode(R: &ProjectivePoint, _: &ProjectivePoint, s: Scalar, _: &[u8]) -> Option<[u8; 64]> {
        let (rx, r_odd) = x_only(R);
        let s = if r_odd { -s } else { s };
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&rx);
        out[32..].copy_from_slice(&s.to_bytes());
        Some(out)
    }
}

/// Ethereum: `c ‖ s`, both 32-byte big-endian, verifiable with one `ecrecover`.
#[derive(Clone, Copy, Debug)]
pub struct EthereumFormat;

impl SignatureFormat for EthereumFormat {
    type Challenge = EthereumHram;
    const LABEL: &'static [u8] = b"vaultd Ethereum Schnorr v1";
    #[allow(non_snake_case)]
    fn encode(R: &ProjectivePoint, A: &ProjectivePoint, s: Scalar, m: &[u8]) -> Option<[u8; 64]> {
        let c = EthereumHram::challenge(R, A, m);
        // The contract uses the unreduced hash: a hash at or above the group order (probability
        // about 2^-128) would not verify there.
        Option::<Scalar>::from(Scalar::from_repr(c.into()))?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&c);
        out[32..].copy_from_slice(&s.to_bytes());
        Some(out)
    }
}

/// Schnorr on secp256k1 with a chain's challenge and signature layout.
#[derive(Clone)]
pub struct Secp256k1Schnorr<F: SignatureFormat> {
    inner: Schnorr<Secp256k1, RecommendedTranscript, F::Challenge>,
    msg: Vec<u8>,
}

/// BIP340 signing.
pub type Bip340 = Secp256k1Schnorr<Bip340Format>;
/// Ethereum Schnorr signing.
pub type EthereumSchnorr = Secp256k1Schnorr<EthereumFormat>;

impl<F: SignatureFormat> Secp256k1Schnorr<F> {
    /// For the ceremony `session`.
    pub fn new(session: &[u8]) -> Self {
        Secp256k1Schnorr {
            inner: Schnorr::new(session_transcript(F::LABEL, session)),
            msg: Vec::new(),
        }
    }
}

impl<F: SignatureFormat> Algorithm<Secp256k1> for Secp256k1Schnorr<F> {
    type Transcript = RecommendedTranscript;
    type Addendum = ();
    type Signature = [u8; 64];

    fn transcript(&mut self) -> &mut Self::Transcript {
        self.inner.transcript()
    }
    fn nonces(&self) -> Vec<Vec<ProjectivePoint>> {
        self.inner.nonces()
    }
    fn preprocess_addendum<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        keys: &ThresholdKeys<Secp256k1>,
    ) {
        self.inner.preprocess_addendum(rng, keys)
    }
    fn read_addendum<R: io::Read>(&self, reader: &mut R) -> io::Result<()> {
        self.inner.read_addendum(reader)
    }
    fn process_addendum(
        &mut self,
        view: &ThresholdView<Secp256k1>,
        l: Participant,
        a: (),
    ) -> Result<(), FrostError> {
        self.inner.process_addendum(view, l, a)
    }
    fn sign_share(
        &mut self,
        view: &ThresholdView<Secp256k1>,
        nonce_sums: &[Vec<ProjectivePoint>],
        nonces: Vec<Zeroizing<Scalar>>,
        msg: &[u8],
    ) -> Scalar {
        self.msg = msg.to_vec();
        self.inner.sign_share(view, nonce_sums, nonces, msg)
    }
    fn verify(
        &self,
        group_key: ProjectivePoint,
        nonces: &[Vec<ProjectivePoint>],
        sum: Scalar,
    ) -> Option<[u8; 64]> {
        let sig = self.inner.verify(group_key, nonces, sum)?;
        F::encode(&sig.R, &group_key, sig.s, &self.msg)
    }
    fn verify_share(
        &self,
        verification_share: ProjectivePoint,
        nonces: &[Vec<ProjectivePoint>],
        share: Scalar,
    ) -> Result<Vec<(Scalar, ProjectivePoint)>, ()> {
        self.inner.verify_share(verification_share, nonces, share)
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
    /// ETH: the group key as is; its x coordinate is below the group order.
    Ethereum(ThresholdKeys<Secp256k1>),
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

/// The most bytes of one message a coin signs: a 32-byte digest for BTC (BIP341 sighash) and
/// ETH, a whole serialized transaction message (at most 1232 bytes) for SOL.
pub fn message_len_ok(coin: Coin, len: usize) -> Result<(), String> {
    match coin {
        Coin::Btc | Coin::Eth if len != 32 => Err(format!(
            "{coin} signs 32-byte digests, not {len}-byte messages"
        )),
        Coin::Sol if len == 0 || len > MAX_SOL_MESSAGE => Err(format!(
            "SOL messages are 1 to {MAX_SOL_MESSAGE} bytes, not {len}"
        )),
        _ => Ok(()),
    }
}

/// Largest Solana transaction message (the packet size of a whole transaction).
pub const MAX_SOL_MESSAGE: usize = 1232;

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
            Coin::Eth => {
                let keys =
                    read_exact(serialized, |r| ThresholdKeys::<Secp256k1>::read(r)).map_err(bad)?;
                let (px, _) = x_only(&keys.group_key());
                // ecrecover takes px as the `r` of an ECDSA signature: it must be below n.
                if Option::<Scalar>::from(Scalar::from_repr(px.into()))
                    .is_none_or(|x| bool::from(x.is_zero()))
                {
                    return Err(SignError::Other(
                        "the group key's x coordinate is not below the group order; the ETH \
                         verifier cannot take this key"
                            .into(),
                    ));
                }
                VaultKeys::Ethereum(keys)
            }
            Coin::Sol => VaultKeys::Solana(
                read_exact(serialized, |r| ThresholdKeys::<Ed25519>::read(r)).map_err(bad)?,
            ),
        };
        Ok(keys)
    }

    /// The key signatures verify under: BIP340 x-only output key (32 bytes), ETH compressed
    /// SEC1 key (33 bytes: parity, px), or the Ed25519 public key (32 bytes).
    pub fn verifying_key(&self) -> Vec<u8> {
        match self {
            VaultKeys::Bitcoin(k) => x_only(&k.group_key()).0.to_vec(),
            VaultKeys::Ethereum(k) => k.group_key().to_bytes().to_vec(),
            VaultKeys::Solana(k) => k.group_key().to_bytes().as_ref().to_vec(),
        }
    }

    /// This share's participant index.
    pub fn index(&self) -> u16 {
        match self {
            VaultKeys::Bitcoin(k) | VaultKeys::Ethereum(k) => u16::from(k.params().i()),
            VaultKeys::Solana(k) => u16::from(k.params().i()),
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
            VaultKeys::Ethereum(k) => {
                let (m, p) =
                    AlgorithmMachine::new(EthereumSchnorr::new(session), k.clone()).preprocess(rng);
                (SignRound1::Ethereum(Box::new(m)), p.serialize())
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
    /// ETH.
    Ethereum(Box<AlgorithmSignMachine<Secp256k1, EthereumSchnorr>>),
    /// SOL.
    Solana(Box<AlgorithmSignMachine<Ed25519, Ed25519Schnorr>>),
}

/// After signing a share.
pub enum SignRound2 {
    /// BTC.
    Bitcoin(Box<AlgorithmSignatureMachine<Secp256k1, Bip340>>),
    /// ETH.
    Ethereum(Box<AlgorithmSignatureMachine<Secp256k1, EthereumSchnorr>>),
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
        let coin = match self {
            SignRound1::Bitcoin(_) => Coin::Btc,
            SignRound1::Ethereum(_) => Coin::Eth,
            SignRound1::Solana(_) => Coin::Sol,
        };
        message_len_ok(coin, msg.len()).map_err(SignError::Other)?;
        match self {
            SignRound1::Bitcoin(m) => sign_round!(m, preprocesses, msg, SignRound2::Bitcoin),
            SignRound1::Ethereum(m) => sign_round!(m, preprocesses, msg, SignRound2::Ethereum),
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
            SignRound2::Ethereum(m) => complete_round!(m, shares),
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

/// Check a finished signature the way the chain does, without modular-frost: what a validator
/// that did not sign runs on an announced `SignatureAvailable`. `key` is
/// [`VaultKeys::verifying_key`].
pub fn verify(coin: Coin, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    if sig.len() != 64 || message_len_ok(coin, msg.len()).is_err() {
        return false;
    }
    match coin {
        Coin::Btc => verify_bip340(key, msg, sig).unwrap_or(false),
        Coin::Eth => verify_ethereum(key, msg, sig).unwrap_or(false),
        Coin::Sol => {
            let Ok(key) = <[u8; 32]>::try_from(key) else {
                return false;
            };
            let Ok(sig) = <[u8; 64]>::try_from(sig) else {
                return false;
            };
            ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map(|k| {
                    k.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
                        .is_ok()
                })
                .unwrap_or(false)
        }
    }
}

fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let b: [u8; 32] = bytes.try_into().ok()?;
    Option::from(Scalar::from_repr(b.into()))
}

/// BIP340 verification (the BIP's own algorithm).
fn verify_bip340(key: &[u8], msg: &[u8], sig: &[u8]) -> Option<bool> {
    let px: [u8; 32] = key.try_into().ok()?;
    let p = address::lift_x(&px)?;
    let s = scalar(&sig[32..])?;
    let e = address::tagged_hash(b"BIP0340/challenge", &[&sig[..32], &px, msg]);
    let e = <Scalar as Reduce<U256>>::reduce_bytes(&e.into());
    let r = ProjectivePoint::GENERATOR * s - p * e;
    if bool::from(r.is_identity()) {
        return Some(false);
    }
    let (rx, odd) = x_only(&r);
    Some(!odd && rx[..] == sig[..32])
}

/// The equation of `docs/SIGNING.md`: `R' = s·G − c·P`, then
/// `c == keccak256(address(R') ‖ v ‖ px ‖ m)`.
fn verify_ethereum(key: &[u8], msg: &[u8], sig: &[u8]) -> Option<bool> {
    let p = address::parse_secp256k1(key).ok()?;
    let c = scalar(&sig[..32])?;
    let s = scalar(&sig[32..])?;
    let r = ProjectivePoint::GENERATOR * s - p * c;
    if bool::from(r.is_identity()) {
        return Some(false);
    }
    Some(EthereumHram::challenge(&r, &p, msg)[..] == sig[..32])
}
