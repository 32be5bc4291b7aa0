//! The seed's step 1: the keypairs a validator generates on its first start.
//!
//! * the **coordinator messaging key** (ed25519): the libp2p identity, whose PeerId is the
//!   validator's IDENTITY;
//! * the **processor messaging key** (X25519): the static key of the snow (Noise) seals that
//!   carry steps 9 to 18 end to end between processors;
//! * the **processor signature key** (ed25519): signs what a processor states on the general
//!   partition (commitment digests, `PublicAddressAvailable`); delivered to peers in step 9.
//!
//! Plus 32 bytes of DKG entropy, the root from which every DKG attempt's randomness is derived
//! (so a restarted node regenerates identical messages). All secrets live in [`Zeroizing`]
//! buffers and none of these types implements `Debug` with secret content.

use std::fmt;

use ed25519_dalek::{Signer, Verifier};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    error::{ProtocolError, Result},
    ids::ValidatorId,
};

/// An X25519 keypair for snow, with a rotation counter (step 4).
#[derive(Clone, Serialize, Deserialize)]
pub struct MessagingKey {
    /// Secret scalar bytes.
    #[serde(with = "secret32")]
    pub secret: Zeroizing<[u8; 32]>,
    /// Public key.
    pub public: [u8; 32],
    /// Rotation counter: peers keep the key with the highest `seq`.
    pub seq: u64,
}

impl fmt::Debug for MessagingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MessagingKey {{ public: {}, seq: {} }}",
            hex::encode(self.public),
            self.seq
        )
    }
}

impl MessagingKey {
    /// A fresh X25519 keypair.
    pub fn generate(seq: u64) -> Result<Self> {
        let params = crate::seal::noise_params()?;
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(|e| ProtocolError::Key(format!("x25519 generation: {e}")))?;
        let secret: [u8; 32] = kp
            .private
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::Key("x25519 secret length".into()))?;
        let public: [u8; 32] = kp
            .public
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::Key("x25519 public length".into()))?;
        Ok(MessagingKey {
            secret: Zeroizing::new(secret),
            public,
            seq,
        })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for MessagingKey {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(MessagingKey {
            secret: Zeroizing::new(u.arbitrary()?),
            public: u.arbitrary()?,
            seq: u.arbitrary()?,
        })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for NodeKeys {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(NodeKeys {
            coordinator_secret: Zeroizing::new(u.arbitrary()?),
            processor_messaging: u.arbitrary()?,
            processor_signature_secret: Zeroizing::new(u.arbitrary()?),
            dkg_entropy: Zeroizing::new(u.arbitrary()?),
        })
    }
}

/// Everything generated at `vaultd init`.
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeKeys {
    /// ed25519 secret (seed) of the coordinator messaging key / libp2p identity.
    #[serde(with = "secret32")]
    pub coordinator_secret: Zeroizing<[u8; 32]>,
    /// The processor messaging key every coin's processor starts with.
    pub processor_messaging: MessagingKey,
    /// ed25519 secret (seed) of the processor signature key.
    #[serde(with = "secret32")]
    pub processor_signature_secret: Zeroizing<[u8; 32]>,
    /// Root entropy of the DKG randomness a processor is given (a node gives it its
    /// session's own root instead, drawn and stored per session: `Store::session_entropy`).
    #[serde(with = "secret32")]
    pub dkg_entropy: Zeroizing<[u8; 32]>,
}

/// serde for a 32-byte secret kept in a [`Zeroizing`] buffer.
pub mod secret32 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use zeroize::Zeroizing;

    /// Serialize the bytes.
    pub fn serialize<S: Serializer>(v: &Zeroizing<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        let bytes: &[u8; 32] = v;
        bytes.serialize(s)
    }

    /// Deserialize into a zeroizing buffer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<[u8; 32]>, D::Error> {
        Ok(Zeroizing::new(<[u8; 32]>::deserialize(d)?))
    }
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("validator", &self.validator_id())
            .field("processor_messaging", &self.processor_messaging)
            .finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// Step 1: generate the three keypairs and the DKG entropy.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Result<Self> {
        let mut coordinator = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(coordinator.as_mut());
        let mut signature = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(signature.as_mut());
        let mut entropy = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(entropy.as_mut());
        Ok(NodeKeys {
            coordinator_secret: coordinator,
            processor_messaging: MessagingKey::generate(0)?,
            processor_signature_secret: signature,
            dkg_entropy: entropy,
        })
    }

    /// The coordinator messaging public key (ed25519).
    pub fn coordinator_public(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.coordinator_secret)
            .verifying_key()
            .to_bytes()
    }

    /// This validator's IDENTITY.
    pub fn validator_id(&self) -> ValidatorId {
        ValidatorId::from_ed25519(&self.coordinator_public())
    }

    /// The processor signature key.
    pub fn processor_signer(&self) -> ProcessorSigner {
        ProcessorSigner(ed25519_dalek::SigningKey::from_bytes(
            &self.processor_signature_secret,
        ))
    }
}

/// The public parts, as `vaultd init` prints them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicKeys {
    /// IDENTITY (PeerId, base58).
    pub peer_id: String,
    /// Coordinator messaging public key, hex.
    pub coordinator_public_key: String,
    /// Processor messaging (X25519) public key, hex.
    pub processor_messaging_public_key: String,
    /// Processor signature (ed25519) public key, hex.
    pub processor_signature_public_key: String,
}

impl NodeKeys {
    /// The public parts.
    pub fn public(&self) -> PublicKeys {
        PublicKeys {
            peer_id: self.validator_id().to_string(),
            coordinator_public_key: hex::encode(self.coordinator_public()),
            processor_messaging_public_key: hex::encode(self.processor_messaging.public),
            processor_signature_public_key: hex::encode(self.processor_signer().public()),
        }
    }
}

/// The processor signature key.
pub struct ProcessorSigner(ed25519_dalek::SigningKey);

impl ProcessorSigner {
    /// Public key bytes.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Sign `message` under a domain label.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Vec<u8> {
        self.0
            .sign(&domain_separated(domain, message))
            .to_bytes()
            .to_vec()
    }
}

/// Verify a processor signature made by [`ProcessorSigner::sign`].
pub fn verify_processor_signature(
    public: &[u8; 32],
    domain: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify(&domain_separated(domain, message), &sig).is_ok()
}

fn domain_separated(domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + message.len() + 9);
    m.extend_from_slice(b"vaultd:");
    m.push(u8::try_from(domain.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(domain);
    m.extend_from_slice(message);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_generate_and_sign() {
        let keys = NodeKeys::generate(&mut rand_core::OsRng).unwrap();
        let signer = keys.processor_signer();
        let sig = signer.sign(b"test", b"hello");
        assert!(verify_processor_signature(
            &signer.public(),
            b"test",
            b"hello",
            &sig
        ));
        assert!(!verify_processor_signature(
            &signer.public(),
            b"other",
            b"hello",
            &sig
        ));
        assert!(!format!("{keys:?}").contains(&hex::encode(keys.coordinator_secret.as_ref())));
        let again: NodeKeys = postcard::from_bytes(&postcard::to_stdvec(&keys).unwrap()).unwrap();
        assert_eq!(again.validator_id(), keys.validator_id());
    }
}
