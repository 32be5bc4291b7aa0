//! The node crate's error type.

/// Errors of the node library. What a peer can cause is a `ProtocolError` naming the peer, or
/// a typed `core::Rejection`; neither stops the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Configuration or CLI input is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// libp2p setup failed.
    #[error("network: {0}")]
    Network(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The protocol core rejected something.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    /// A processor thread failed (its storage) or every one stopped: the node stops rather
    /// than send state it could not persist.
    #[error("processor: {0}")]
    Processor(String),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
