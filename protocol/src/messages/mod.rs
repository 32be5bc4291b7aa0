//! Every message of the seed, under its own name, and the versioned envelope they travel in.
//!
//! Three families:
//! * [`GeneralMessage`]: the general partition. Announcements gossiped on the network
//!   (`CoordinatorPublicKey`, `ProcessorPublicKey`, `SignerReady`, `KeyGenCommitmentsDigest`,
//!   `PublicAddressAvailable`).
//! * [`DirectRequest`]: what one coordinator forwards to another over a request-response stream
//!   (step 7's key list and the `...Out` messages of steps 10, 14 and 17) and [`DirectResponse`].
//! * The local bus between a node's coordinator and its per-coin processors, on the
//!   `{IDENTITY}{COIN}` topic, general or encrypted partition, one enum per direction:
//!   [`CoordinatorMessage`] (coordinator to processor) and [`ProcessorMessage`] (processor to
//!   coordinator).
//!
//! Encoding: one version byte followed by postcard. The size cap is checked before anything is
//! decoded, and trailing bytes are rejected.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{ProtocolError, Result};

/// An enum of messages, one tuple variant per message named as its type is, with `kind()`
/// giving that name (for logs and metrics labels) so no list of names is kept by hand.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident($ty:ty),)*
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant($ty),)*
        }

        impl $name {
            /// The message's name, as the spec writes it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => stringify!($variant),)*
                }
            }
        }
    };
}

mod bus;
mod direct;
mod general;

pub use bus::*;
pub use direct::*;
pub use general::*;

/// Envelope version byte.
pub const WIRE_VERSION: u8 = 1;
/// Largest encoded message accepted anywhere (gossip, request-response, bus, disk).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// Encode a message into a versioned envelope.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let out = postcard::to_extend(msg, vec![WIRE_VERSION])
        .map_err(|e| ProtocolError::Malformed(format!("encode: {e}")))?;
    if out.len() > MAX_MESSAGE_SIZE {
        return Err(ProtocolError::TooLarge {
            size: out.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(out)
}

/// Decode a versioned envelope: size cap first, then version, then postcard with no trailing
/// bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| ProtocolError::Malformed("empty message".into()))?;
    if version != WIRE_VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Coin;

    #[test]
    fn envelope_roundtrip_and_rejections() {
        let msg = GeneralMessage::ProcessorPublicKey(ProcessorPublicKey {
            coin: Coin::Sol,
            pubkey: [9; 32],
            seq: 3,
        });
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode::<GeneralMessage>(&bytes).unwrap(), msg);

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<GeneralMessage>(&trailing),
            Err(ProtocolError::Malformed(_))
        ));
        let mut version = bytes.clone();
        version[0] = 99;
        assert!(matches!(
            decode::<GeneralMessage>(&version),
            Err(ProtocolError::UnsupportedVersion(99))
        ));
        assert!(decode::<GeneralMessage>(&[]).is_err());
        let huge = vec![WIRE_VERSION; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            decode::<GeneralMessage>(&huge),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn kinds_are_the_variant_names() {
        let m = ProcessorMessage::AnnouncementsWanted(AnnouncementsWanted {
            coin: Coin::Btc,
            from: Vec::new(),
        });
        assert_eq!(m.kind(), "AnnouncementsWanted");
        let m = DirectRequest::AnnouncementRequest(AnnouncementRequest { coin: Coin::Eth });
        assert_eq!(m.kind(), "AnnouncementRequest");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of garbage through every decoder.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600usize {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push(state as u8);
            }
            if let Some(first) = buf.first_mut() {
                *first = WIRE_VERSION;
            }
            let _ = decode::<GeneralMessage>(&buf);
            let _ = decode::<DirectRequest>(&buf);
            let _ = decode::<DirectResponse>(&buf);
            let _ = decode::<CoordinatorMessage>(&buf);
            let _ = decode::<ProcessorMessage>(&buf);
        }
    }
}
