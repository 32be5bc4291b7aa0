//! Fuzz the envelope decoder: whatever bytes a peer sends (gossip, request-response, bus, disk)
//! decode to a message or an error, never a panic; and whatever decodes re-encodes to bytes that
//! decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::messages::{
    self, CoordinatorMessage, DirectRequest, DirectResponse, GeneralMessage, ProcessorMessage,
};
use serde::{de::DeserializeOwned, Serialize};

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(msg) = messages::decode::<T>(data) {
        let again = messages::encode(&msg).expect("a decoded message re-encodes");
        let back: T = messages::decode(&again).expect("a re-encoded message decodes");
        assert_eq!(back, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<GeneralMessage>(data);
    check::<DirectRequest>(data);
    check::<DirectResponse>(data);
    check::<CoordinatorMessage>(data);
    check::<ProcessorMessage>(data);
});
