//! The protocol crate's error type.

use crate::ids::ValidatorId;

/// Everything that can go wrong in the sans-IO core. Variants that a peer can cause name the peer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The encoded message is larger than the cap, checked before decoding.
    #[error("message of {size} bytes exceeds the {max}-byte cap")]
    TooLarge { size: usize, max: usize },
    /// The envelope carries an unknown version byte.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// The bytes are not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message claims to come from a validator that is not in the network definition.
    #[error("{0} is not a validator of this network")]
    UnknownValidator(ValidatorId),
    /// A peer sent something that breaks the protocol.
    #[error("invalid message from {peer}: {reason}")]
    InvalidFromPeer { peer: ValidatorId, reason: String },
    /// A sealed (snow) payload failed to open or was sealed by the wrong key.
    #[error("sealed payload from {peer} rejected: {reason}")]
    Seal { peer: ValidatorId, reason: String },
    /// Sealing failed locally.
    #[error("sealing failed: {0}")]
    SealLocal(String),
    /// The network definition is invalid; names the field.
    #[error("network definition: {field}: {reason}")]
    Definition { field: String, reason: String },
    /// A key could not be decoded.
    #[error("invalid key material: {0}")]
    Key(String),
    /// The DKG failed in a way that is not attributable to a single peer.
    #[error("dkg: {0}")]
    Dkg(String),
    /// This node's own request was refused (answered to its API with the reason).
    #[error("{0}")]
    Refused(String),
}

impl ProtocolError {
    /// The peer at fault, if the error is attributable to one.
    pub fn culprit(&self) -> Option<&ValidatorId> {
        match self {
            ProtocolError::InvalidFromPeer { peer, .. } | ProtocolError::Seal { peer, .. } => {
                Some(peer)
            }
            ProtocolError::UnknownValidator(v) => Some(v),
            _ => None,
        }
    }

    /// A short name of the variant, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge { .. } => "too_large",
            ProtocolError::UnsupportedVersion(_) => "unsupported_version",
            ProtocolError::Malformed(_) => "malformed",
            ProtocolError::UnknownValidator(_) => "unknown_validator",
            ProtocolError::InvalidFromPeer { .. } => "invalid",
            ProtocolError::Seal { .. } => "seal",
            ProtocolError::SealLocal(_) => "seal_local",
            ProtocolError::Definition { .. } => "definition",
            ProtocolError::Key(_) => "key",
            ProtocolError::Dkg(_) => "dkg",
            ProtocolError::Refused(_) => "refused",
        }
    }

    pub(crate) fn peer(peer: &ValidatorId, reason: impl Into<String>) -> Self {
        ProtocolError::InvalidFromPeer {
            peer: peer.clone(),
            reason: reason.into(),
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ProtocolError>;
