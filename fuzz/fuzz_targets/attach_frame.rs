//! The shim's attach socket protocol (`kubenode_runtime::shim::attach`): what a client sends
//! is cut anywhere and reassembled by `Decoder`. Input: the first byte picks the size of the
//! pieces the rest is fed in (1 to 256 bytes). Invariants: no panic; the frames decoded,
//! encoded again, are exactly the bytes they came from (a prefix of the input); a frame is
//! never longer than `MAX_FRAME`, and an error only for a length over it; a resize payload
//! that parses encodes back to itself.
#![no_main]

use kubenode_runtime::shim::attach::{encode, parse_resize, resize_payload, Decoder, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(pick) + 1;
    let mut decoder = Decoder::default();
    let mut again = Vec::new();
    let mut failed = false;
    'feed: for chunk in stream.chunks(piece) {
        decoder.feed(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some((kind, payload))) => {
                    assert!(payload.len() <= MAX_FRAME);
                    encode(&mut again, kind, &payload);
                    if let Some((w, h)) = parse_resize(&payload) {
                        assert_eq!(resize_payload(w, h)[..], payload[..]);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert!(
        stream.starts_with(&again),
        "decoded frames are not the input"
    );
    let rest = &stream[again.len()..];
    if failed {
        // only a header announcing more than MAX_FRAME bytes is refused
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(len > MAX_FRAME);
    } else {
        // what is left is an incomplete frame
        let complete = rest.len() >= 5
            && rest.len() >= 5 + u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(!complete, "a whole frame was left undecoded");
    }
});
