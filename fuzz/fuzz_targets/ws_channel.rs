//! The WebSocket channel demultiplexer of the kubelet's streaming endpoints
//! (`api::stream::channel::decode`, every subprotocol) and the resize channel's JSON stream
//! (`take_sizes`). Input: the first byte picks the subprotocol, the rest is one client message.
//! Invariants: no panic; data decoded under a protocol encodes back to a message that decodes
//! to the same channel and data; the resize buffer only shrinks by what was parsed.
#![no_main]

use kubenode_kubelet::api::stream::channel::{
    decode, encode, take_sizes, Inbound, Outbound, Protocol,
};
use libfuzzer_sys::fuzz_target;

const PROTOCOLS: [Protocol; 5] = [
    Protocol::V1,
    Protocol::V1Base64,
    Protocol::V4,
    Protocol::V4Base64,
    Protocol::V5,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let protocol = PROTOCOLS[usize::from(pick) % PROTOCOLS.len()];
    match decode(protocol, message) {
        Ok(Inbound::Data { channel, data }) => {
            let again = match encode(protocol, channel, &data) {
                Outbound::Binary(b) => decode(protocol, &b),
                Outbound::Text(t) => decode(protocol, t.as_bytes()),
            };
            assert_eq!(again, Ok(Inbound::Data { channel, data }), "{protocol:?}");
        }
        Ok(Inbound::Close { channel }) => {
            assert!(protocol.supports_close());
            assert_eq!(message, [255, channel]);
        }
        Ok(Inbound::Empty) => assert!(message.is_empty()),
        Err(_) => {}
    }
    let mut buf = message.to_vec();
    let before = buf.len();
    if take_sizes(&mut buf).is_ok() {
        assert!(buf.len() <= before);
        assert!(message.ends_with(&buf));
    }
});
