//! Vault addresses in each chain's own format (step 20).
//!
//! * **BTC**: a P2TR (segwit v1, bech32m) address. The group key `P` is first made even-Y (its
//!   x-only form is unchanged), then tweaked BIP86-style with no script path:
//!   `Q = P + H_TapTweak(x(P))·G`; the address commits to `x(Q)`. Signers apply the same tweak
//!   (and negate when `Q` is odd) so the vault key makes BIP340 signatures valid for `x(Q)`.
//! * **ETH**: the EIP-55 checksummed `keccak256(uncompressed(P)[1..])[12..]`.
//! * **SOL**: the base58 encoding of the 32-byte ed25519 group key.

use k256::{
    elliptic_curve::{
        sec1::{FromEncodedPoint, ToEncodedPoint},
        PrimeField,
    },
    AffinePoint, EncodedPoint, ProjectivePoint, Scalar,
};
use sha2::{Digest, Sha256};
use sha3::Keccak256;

use crate::{
    error::{ProtocolError, Result},
    ids::Coin,
};

/// Bitcoin network of the P2TR address's human-readable part.
pub const BTC_HRP: bech32::Hrp = bech32::hrp::BC;

pub(crate) fn parse_secp256k1(group_key: &[u8]) -> Result<ProjectivePoint> {
    let encoded = EncodedPoint::from_bytes(group_key)
        .map_err(|e| ProtocolError::Key(format!("secp256k1 group key: {e}")))?;
    Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&encoded))
        .map(ProjectivePoint::from)
        .ok_or_else(|| ProtocolError::Key("secp256k1 group key is not on the curve".into()))
}

fn compressed(p: &ProjectivePoint) -> [u8; 33] {
    let enc = p.to_affine().to_encoded_point(true);
    let mut out = [0u8; 33];
    out.copy_from_slice(enc.as_bytes());
    out
}

/// The x coordinate of `p` and whether its y is odd (BIP340's x-only form plus parity).
pub(crate) fn x_only(p: &ProjectivePoint) -> ([u8; 32], bool) {
    let c = compressed(p);
    let mut x = [0u8; 32];
    x.copy_from_slice(&c[1..]);
    (x, c[0] == 0x03)
}

/// `SHA256(SHA256(tag) || SHA256(tag) || data)`, BIP340's tagged hash.
pub fn tagged_hash(tag: &[u8], data: &[&[u8]]) -> [u8; 32] {
    let tag = Sha256::digest(tag);
    let mut h = Sha256::new();
    h.update(tag);
    h.update(tag);
    for d in data {
        h.update(d);
    }
    h.finalize().into()
}

/// The BIP86 taproot tweak of an x-only internal key, as a scalar. Fails (with negligible
/// probability) when the hash is not below the group order, as BIP341 requires.
pub fn taproot_tweak(internal_x: &[u8; 32]) -> Result<Scalar> {
    let t = tagged_hash(b"TapTweak", &[internal_x]);
    Option::<Scalar>::from(Scalar::from_repr(t.into()))
        .ok_or_else(|| ProtocolError::Key("taproot tweak out of range".into()))
}

/// The x-only taproot output key `x(Q)` for a group key (33-byte SEC1, either parity).
pub fn taproot_output_key(group_key: &[u8]) -> Result<[u8; 32]> {
    let p = parse_secp256k1(group_key)?;
    let (x, odd) = x_only(&p);
    let even = if odd { -p } else { p };
    let q = even + ProjectivePoint::GENERATOR * taproot_tweak(&x)?;
    Ok(x_only(&q).0)
}

/// The P2TR address of a secp256k1 group key.
pub fn btc_address(group_key: &[u8]) -> Result<String> {
    let q = taproot_output_key(group_key)?;
    bech32::segwit::encode_v1(BTC_HRP, &q).map_err(|e| ProtocolError::Key(format!("bech32m: {e}")))
}

/// The even-Y point with x coordinate `x` (BIP340's `lift_x`), if there is one.
pub(crate) fn lift_x(x: &[u8; 32]) -> Option<ProjectivePoint> {
    let mut c = [0u8; 33];
    c[0] = 0x02;
    c[1..].copy_from_slice(x);
    parse_secp256k1(&c).ok()
}

/// The 20-byte Ethereum address of a point: `keccak256(uncompressed(P)[1..])[12..]`.
pub fn eth_address_bytes(p: &ProjectivePoint) -> [u8; 20] {
    let uncompressed = p.to_affine().to_encoded_point(false);
    let hash = Keccak256::digest(&uncompressed.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    out
}

/// The EIP-55 address of a secp256k1 group key.
pub fn eth_address(group_key: &[u8]) -> Result<String> {
    Ok(eip55(&eth_address_bytes(&parse_secp256k1(group_key)?)))
}

/// EIP-55 mixed-case checksum encoding of a 20-byte address.
pub fn eip55(address: &[u8]) -> String {
    let lower = hex::encode(address);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, ch) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        if ch.is_ascii_alphabetic() && nibble >= 8 {
            out.push(ch.to_ascii_uppercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The Solana address (base58) of an ed25519 group key.
pub fn sol_address(group_key: &[u8]) -> Result<String> {
    if group_key.len() != 32 {
        return Err(ProtocolError::Key(format!(
            "ed25519 group key of {} bytes",
            group_key.len()
        )));
    }
    Ok(bs58::encode(group_key).into_string())
}

/// The vault address of `coin` for its group key.
pub fn address(coin: Coin, group_key: &[u8]) -> Result<String> {
    match coin {
        Coin::Btc => btc_address(group_key),
        Coin::Eth => eth_address(group_key),
        Coin::Sol => sol_address(group_key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip86_vector() {
        // BIP86, m/86'/0'/0'/0/0.
        let internal =
            hex::decode("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115")
                .unwrap();
        let expected = "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr";
        for prefix in [0x02u8, 0x03] {
            let mut key = vec![prefix];
            key.extend_from_slice(&internal);
            assert_eq!(btc_address(&key).unwrap(), expected);
        }
        let mut key = vec![0x02];
        key.extend_from_slice(&internal);
        assert_eq!(
            hex::encode(taproot_output_key(&key).unwrap()),
            "a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c"
        );
    }

    #[test]
    fn taproot_matches_libsecp256k1() {
        let secp = secp256k1::Secp256k1::new();
        for i in 1u8..=20 {
            let sk = secp256k1::SecretKey::from_slice(&[i; 32]).unwrap();
            let pk = secp256k1::PublicKey::from_secret_key(&secp, &sk);
            let (xonly, _) = pk.x_only_public_key();
            let tweak = tagged_hash(b"TapTweak", &[&xonly.serialize()]);
            let tweak = secp256k1::Scalar::from_be_bytes(tweak).unwrap();
            let (q, _) = xonly.add_tweak(&secp, &tweak).unwrap();
            assert_eq!(taproot_output_key(&pk.serialize()).unwrap(), q.serialize());
        }
    }

    #[test]
    fn eth_vectors() {
        // secret key 1 -> G
        let g = compressed(&ProjectivePoint::GENERATOR);
        assert_eq!(
            eth_address(&g).unwrap(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let raw = hex::decode(a[2..].to_lowercase()).unwrap();
            assert_eq!(eip55(&raw), a);
        }
    }

    #[test]
    fn sol_vectors() {
        assert_eq!(
            sol_address(&[0; 32]).unwrap(),
            "11111111111111111111111111111111"
        );
        let token = hex::decode("06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a9")
            .unwrap();
        assert_eq!(
            sol_address(&token).unwrap(),
            "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
        );
        assert!(sol_address(&[0; 31]).is_err());
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(btc_address(&[0x05; 33]).is_err());
        assert!(eth_address(&[]).is_err());
    }
}
