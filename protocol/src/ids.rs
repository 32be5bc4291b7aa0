//! Identifiers: validators (libp2p PeerIds, as bytes) and coins.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::{ProtocolError, Result};

/// Longest PeerId (multihash) we accept, in bytes.
pub const MAX_VALIDATOR_ID_LEN: usize = 64;

/// A validator's IDENTITY: the bytes of its libp2p PeerId (a multihash of its coordinator
/// messaging public key). Displayed in base58, exactly like `libp2p::PeerId`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValidatorId(#[serde(with = "serde_bytes_vec")] Vec<u8>);

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v: &[u8] = Deserialize::deserialize(d)?;
        if v.is_empty() || v.len() > super::MAX_VALIDATOR_ID_LEN {
            return Err(serde::de::Error::custom("validator id length out of range"));
        }
        Ok(v.to_vec())
    }
}

impl ValidatorId {
    /// From the raw PeerId bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() || bytes.len() > MAX_VALIDATOR_ID_LEN {
            return Err(ProtocolError::Malformed(format!(
                "validator id of {} bytes",
                bytes.len()
            )));
        }
        Ok(ValidatorId(bytes.to_vec()))
    }

    /// The PeerId of an ed25519 public key: identity multihash over the protobuf-encoded key,
    /// as libp2p derives it for keys of 42 bytes or fewer.
    pub fn from_ed25519(public: &[u8; 32]) -> Self {
        let mut bytes = Vec::with_capacity(38);
        // multihash: code 0x00 (identity), length 36; protobuf: field 1 (KeyType) = 1 (Ed25519),
        // field 2 (Data) = 32 bytes.
        bytes.extend_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        bytes.extend_from_slice(public);
        ValidatorId(bytes)
    }

    /// The raw PeerId bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for ValidatorId {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(1..=MAX_VALIDATOR_ID_LEN)?;
        Ok(ValidatorId(u.bytes(len)?.to_vec()))
    }
}

impl fmt::Display for ValidatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.0).into_string())
    }
}

impl fmt::Debug for ValidatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValidatorId({self})")
    }
}

impl FromStr for ValidatorId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self> {
        if s.len() > 2 * MAX_VALIDATOR_ID_LEN {
            return Err(ProtocolError::Malformed("validator id too long".into()));
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|e| ProtocolError::Malformed(format!("validator id {s:?}: {e}")))?;
        ValidatorId::from_bytes(&bytes)
    }
}

/// The elliptic curve a coin's vault lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// secp256k1 (BTC, ETH).
    Secp256k1,
    /// edwards25519 (SOL).
    Ed25519,
}

/// A coin with a vault. Each coin has its own processor and its own `{IDENTITY}{COIN}` topic.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Coin {
    /// Bitcoin: P2TR address, BIP340 key.
    #[serde(rename = "BTC")]
    Btc,
    /// Ethereum: EIP-55 address of the group key.
    #[serde(rename = "ETH")]
    Eth,
    /// Solana: base58 ed25519 group key.
    #[serde(rename = "SOL")]
    Sol,
}

impl Coin {
    /// Every supported coin.
    pub const ALL: [Coin; 3] = [Coin::Btc, Coin::Eth, Coin::Sol];

    /// The ticker, as used in topics and in the API.
    pub fn ticker(self) -> &'static str {
        match self {
            Coin::Btc => "BTC",
            Coin::Eth => "ETH",
            Coin::Sol => "SOL",
        }
    }

    /// A stable one-byte id, used in storage keys. Never reuse a retired id.
    pub fn id(self) -> u8 {
        match self {
            Coin::Btc => 0,
            Coin::Eth => 1,
            Coin::Sol => 2,
        }
    }

    /// The coin of an id from [`Coin::id`].
    pub fn from_id(id: u8) -> Option<Coin> {
        Coin::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The vault's curve.
    pub fn curve(self) -> Curve {
        match self {
            Coin::Btc | Coin::Eth => Curve::Secp256k1,
            Coin::Sol => Curve::Ed25519,
        }
    }
}

impl fmt::Display for Coin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ticker())
    }
}

impl FromStr for Coin {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "BTC" => Ok(Coin::Btc),
            "ETH" => Ok(Coin::Eth),
            "SOL" => Ok(Coin::Sol),
            _ => Err(ProtocolError::Malformed(format!(
                "unknown coin {s:?} (expected BTC, ETH or SOL)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_id_roundtrips_through_base58() {
        let id = ValidatorId::from_ed25519(&[7; 32]);
        let s = id.to_string();
        assert!(s.starts_with("12D3KooW"), "{s}");
        assert_eq!(s.parse::<ValidatorId>().unwrap(), id);
        assert!("not-base58-0OIl".parse::<ValidatorId>().is_err());
    }

    #[test]
    fn coins_parse_case_insensitively() {
        assert_eq!("btc".parse::<Coin>().unwrap(), Coin::Btc);
        assert!("DOGE".parse::<Coin>().is_err());
        for c in Coin::ALL {
            assert_eq!(Coin::from_id(c.id()), Some(c));
        }
        assert_eq!(Coin::from_id(200), None);
    }
}
