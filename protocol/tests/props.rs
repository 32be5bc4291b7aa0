//! Property tests for every wire type: any value survives an encode/decode round trip, and any
//! bytes decode to a value or an error without panicking and without allocating much more than
//! the cap (an instrumented allocator counts what every decode allocates). Tests run on several
//! threads, so the counts include other threads' allocations: the bound is loose, a decoder
//! that reserved a hostile length prefix would still exceed it by far.

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use protocol::{
    keys::NodeKeys,
    messages::{self, *},
    network::NetworkDefinition,
    vault::{CheaterReport, SignRecord, VaultRecord},
};
use serde::{de::DeserializeOwned, Serialize};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The most a decode of hostile bytes may allocate in all: serde caps a sequence's
/// pre-allocation at 1 MiB, and the envelope cap bounds everything else.
const ALLOCATION_BOUND: usize = 4 * 1024 * 1024;

fn roundtrip<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: for<'a> Arbitrary<'a> + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut u = Unstructured::new(bytes);
    let Ok(value) = T::arbitrary(&mut u) else {
        return Ok(());
    };
    match messages::encode(&value) {
        Ok(encoded) => {
            let back: T = messages::decode(&encoded)
                .map_err(|e| TestCaseError::fail(format!("{value:?}: {e}")))?;
            prop_assert_eq!(back, value);
        }
        // Only a value over the envelope cap may fail to encode.
        Err(protocol::ProtocolError::TooLarge { .. }) => {}
        Err(e) => return Err(TestCaseError::fail(format!("{value:?}: {e}"))),
    }
    Ok(())
}

fn hostile<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    for decode in [
        (|b: &[u8]| drop(messages::decode::<T>(b))) as fn(&[u8]),
        |b: &[u8]| drop(postcard::from_bytes::<T>(b)),
    ] {
        let region = Region::new(GLOBAL);
        decode(bytes);
        let allocated = region.change().bytes_allocated;
        prop_assert!(
            allocated <= ALLOCATION_BOUND + 64 * bytes.len(),
            "a decode of {} bytes allocated {allocated} bytes",
            bytes.len()
        );
    }
    Ok(())
}

macro_rules! wire_props {
    ($($name:ident: $t:ty),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                    roundtrip::<$t>(&bytes)?;
                    hostile::<$t>(&bytes)?;
                }
            )*
        }
    };
}

wire_props!(
    general_message: GeneralMessage,
    direct_request: DirectRequest,
    direct_response: DirectResponse,
    coordinator_message: CoordinatorMessage,
    processor_message: ProcessorMessage,
    public_key_payload: PublicKeyPayload,
    keygen_payload: KeyGenPayload,
    preprocess_payload: PreprocessPayload,
    signature_share_payload: SignatureSharePayload,
    preprocess_set: PreprocessSet,
    vault_record: VaultRecord,
    sign_record: SignRecord,
    cheater_report: CheaterReport,
    exclusion_vote: KeyGenExclusionVote,
    keygen_relay: KeyGenRelay,
    keygen_complaint: KeyGenComplaint,
    keygen_share_answer: KeyGenShareAnswer,
);

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A huge length prefix must not make a decoder reserve it.
    #[test]
    fn length_prefixes_do_not_allocate(len in 1u64 << 20..u64::MAX >> 8, kind in 0u8..30) {
        let mut bytes = vec![messages::WIRE_VERSION, kind];
        let mut v = len;
        while v >= 0x80 {
            bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        bytes.push(v as u8);
        bytes.extend_from_slice(&[7; 64]);
        hostile::<GeneralMessage>(&bytes)?;
        hostile::<CoordinatorMessage>(&bytes)?;
        hostile::<ProcessorMessage>(&bytes)?;
        hostile::<DirectRequest>(&bytes)?;
    }

    /// Keys (secrets included) survive their storage encoding.
    #[test]
    fn node_keys_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 200..400)) {
        let mut u = Unstructured::new(&bytes);
        if let Ok(keys) = NodeKeys::arbitrary(&mut u) {
            let encoded = postcard::to_stdvec(&keys).unwrap();
            let back: NodeKeys = postcard::from_bytes(&encoded).unwrap();
            prop_assert_eq!(back.validator_id(), keys.validator_id());
            prop_assert_eq!(*back.dkg_entropy, *keys.dkg_entropy);
            prop_assert_eq!(back.processor_messaging.public, keys.processor_messaging.public);
        }
        let _ = postcard::from_bytes::<NodeKeys>(&bytes);
    }

    /// Any text is a network definition or an error naming a field; never a panic.
    #[test]
    fn network_definitions_never_panic(text in ".{0,600}") {
        if let Err(e) = NetworkDefinition::from_toml(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
