//! # vaultd protocol
//!
//! The sans-IO core of vaultd: everything about the signature process of the seed that is not
//! moving bytes. No tokio, no libp2p, no RocksDB: its state machines take a message and return
//! what to send and what to persist, so N validators can be driven in one test over plain maps.
//!
//! * [`keys`]: step 1's keypairs;
//! * [`messages`]: every message of the seed under its own name, and the versioned envelope;
//! * [`seal`]: end-to-end snow sealing between processors;
//! * [`network`]: the network definition (step 6's signer list);
//! * [`dkg`]: the deterministic PedPoP driver;
//! * [`processor`]: the per-coin processor (steps 3 to 20), a façade joining its parts:
//!   `party` (our keys, peers' keys, the key exchange), `keygen` (one DKG attempt and its blame
//!   evidence), [`attempts`] (exclusion votes and the chain of attempts) and [`signing`];
//! * [`address`]: BTC P2TR, ETH EIP-55 and SOL base58 addresses;
//! * [`sign`]: FROST signing in each chain's format, and independent verifiers;
//! * [`signing`]: the processor's signing ceremonies (request, preprocess, shares, retries);
//! * [`vault`]: vault, signature request and cheater records;
//! * [`routing`]: the bus's routing: processor output to wire, wire to processor input;
//! * [`local`]: N validators' processors joined in one process (the benchmarks' in-process limit).

pub mod address;
pub mod approvals;
pub mod attempts;
mod catch_up;
pub mod dkg;
pub mod error;
pub mod ids;
mod keygen;
pub mod keys;
pub mod local;
pub mod messages;
pub mod network;
mod output;
mod party;
pub mod processor;
pub mod routing;
#[cfg(feature = "fault-injection")]
pub mod sabotage;
pub mod seal;
pub mod sign;
pub mod signing;
pub mod vault;

pub use error::{ProtocolError, Result};
pub use ids::{Coin, Curve, ValidatorId};
