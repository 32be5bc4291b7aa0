//! End-to-end sealing of processor-to-processor payloads with snow.
//!
//! Every `...Out` message of steps 9 to 18 carries a payload sealed by the sending processor to
//! the receiving processor's messaging key, in a one-way Noise `X` handshake message
//! (`Noise_X_25519_ChaChaPoly_BLAKE2s`, `-> e, es, s, ss`): a fresh ephemeral key per message,
//! the sender's static key transmitted encrypted and authenticated by `ss`. A relaying
//! coordinator can neither read nor forge it. The Noise prologue binds the network, coin, kind,
//! sender, recipient and DKG context, so a sealed blob cannot be replayed in another slot.

use serde::{Deserialize, Serialize};

use crate::{
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
    keys::MessagingKey,
};

/// The Noise protocol name.
pub const NOISE_PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
/// Largest Noise message.
pub const MAX_SEALED_LEN: usize = 65535;
/// Noise X overhead: e (32) + encrypted s (32 + 16) + payload tag (16).
pub const SEAL_OVERHEAD: usize = 96;

/// What a sealed payload is, bound into the prologue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealKind {
    /// Steps 9-12.
    PublicKey,
    /// Steps 13-16.
    KeyGenCommitment,
    /// Steps 16-19.
    KeyShare,
    /// Signing, round 1: a signer's nonce commitments.
    Preprocess,
    /// Signing, round 2: a signer's signature shares.
    SignatureShare,
    /// Signed DKG messages relayed to a participant that complained it lacks them.
    KeyGenRelay,
}

/// Who seals what to whom, for which DKG.
#[derive(Clone, Copy, Debug)]
pub struct SealContext<'a> {
    /// Network name.
    pub network: &'a str,
    /// Coin.
    pub coin: Coin,
    /// Kind.
    pub kind: SealKind,
    /// Sender validator.
    pub from: &'a ValidatorId,
    /// Recipient validator.
    pub to: &'a ValidatorId,
    /// DKG context (zero for the public key exchange), or the signing session.
    pub context: [u8; 32],
}

impl SealContext<'_> {
    fn prologue(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(256);
        p.extend_from_slice(b"vaultd seal v1");
        for part in [
            self.network.as_bytes(),
            self.coin.ticker().as_bytes(),
            &[self.kind as u8],
            self.from.as_bytes(),
            self.to.as_bytes(),
            &self.context,
        ] {
            p.extend_from_slice(&(part.len() as u32).to_le_bytes());
            p.extend_from_slice(part);
        }
        p
    }
}

pub(crate) fn noise_params() -> Result<snow::params::NoiseParams> {
    NOISE_PATTERN
        .parse()
        .map_err(|e| ProtocolError::SealLocal(format!("noise params: {e:?}")))
}

/// Seal `payload` from `sender` to the holder of `recipient_public`.
pub fn seal(
    sender: &MessagingKey,
    recipient_public: &[u8; 32],
    ctx: &SealContext<'_>,
    payload: &[u8],
) -> Result<Vec<u8>> {
    if payload.len() + SEAL_OVERHEAD > MAX_SEALED_LEN {
        return Err(ProtocolError::SealLocal(format!(
            "payload of {} bytes",
            payload.len()
        )));
    }
    let prologue = ctx.prologue();
    let local = |e: snow::Error| ProtocolError::SealLocal(e.to_string());
    let mut hs = snow::Builder::new(noise_params()?)
        .local_private_key(sender.secret.as_ref())
        .map_err(local)?
        .remote_public_key(recipient_public)
        .map_err(local)?
        .prologue(&prologue)
        .map_err(local)?
        .build_initiator()
        .map_err(local)?;
    let mut out = vec![0u8; payload.len() + SEAL_OVERHEAD];
    let len = hs.write_message(payload, &mut out).map_err(local)?;
    out.truncate(len);
    Ok(out)
}

/// Open a sealed payload addressed to `recipient`. Returns the sender's static key, which the
/// caller must compare with the key it knows for `ctx.from`, and the payload.
pub fn open(
    recipient: &MessagingKey,
    ctx: &SealContext<'_>,
    sealed: &[u8],
) -> Result<([u8; 32], Vec<u8>)> {
    let peer = |reason: String| ProtocolError::Seal {
        peer: ctx.from.clone(),
        reason,
    };
    if sealed.len() < SEAL_OVERHEAD || sealed.len() > MAX_SEALED_LEN {
        return Err(peer(format!("sealed payload of {} bytes", sealed.len())));
    }
    let prologue = ctx.prologue();
    let local = |e: snow::Error| ProtocolError::SealLocal(e.to_string());
    let mut hs = snow::Builder::new(noise_params()?)
        .local_private_key(recipient.secret.as_ref())
        .map_err(local)?
        .prologue(&prologue)
        .map_err(local)?
        .build_responder()
        .map_err(local)?;
    let mut payload = vec![0u8; sealed.len()];
    let len = hs
        .read_message(sealed, &mut payload)
        .map_err(|e| peer(format!("cannot open: {e}")))?;
    payload.truncate(len);
    let remote: [u8; 32] = hs
        .get_remote_static()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| peer("no sender static key".into()))?;
    Ok((remote, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(from: &'a ValidatorId, to: &'a ValidatorId, kind: SealKind) -> SealContext<'a> {
        SealContext {
            network: "test",
            coin: Coin::Btc,
            kind,
            from,
            to,
            context: [1; 32],
        }
    }

    #[test]
    fn seal_open_roundtrip_and_binding() {
        let a = MessagingKey::generate(0).unwrap();
        let b = MessagingKey::generate(0).unwrap();
        let (ia, ib) = (
            ValidatorId::from_ed25519(&[1; 32]),
            ValidatorId::from_ed25519(&[2; 32]),
        );
        let c = ctx(&ia, &ib, SealKind::KeyShare);
        let sealed = seal(&a, &b.public, &c, b"share").unwrap();
        let (sender, payload) = open(&b, &c, &sealed).unwrap();
        assert_eq!(sender, a.public);
        assert_eq!(payload, b"share");
        // another slot (kind) does not open
        assert!(open(&b, &ctx(&ia, &ib, SealKind::KeyGenCommitment), &sealed).is_err());
        // a third party cannot open
        let c3 = MessagingKey::generate(0).unwrap();
        assert!(open(&c3, &c, &sealed).is_err());
        // tampering is detected
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&b, &c, &bad).is_err());
        assert!(open(&b, &c, &sealed[..10]).is_err());
    }
}
