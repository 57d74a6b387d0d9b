//! The SPDY/3.1 frame parser (`kubenode_spdy::FrameReader`, what the kubelet reads from the API
//! server on exec, attach and port-forward): the input is a byte stream of frames, parsed in
//! order with one header decompression context, as a connection does. Invariants: no panic;
//! every frame parsed encodes (with its own compression context) to bytes that parse back to
//! the same frame; a stream error consumed a whole frame; a session error ends the stream;
//! `parse_buf` (what a connection runs, over its read buffer) sees the same frames and errors
//! as `parse` and takes the same bytes off.
#![no_main]

use kubenode_spdy::frame::{frame_len, HEADER_LEN};
use kubenode_spdy::{BytesMut, FrameError, FrameReader, FrameWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new();
    let mut writer = FrameWriter::new();
    let mut again = FrameReader::new();
    let mut by_buf = FrameReader::new();
    let mut buf = BytesMut::from(data);
    let mut at = 0;
    while at < data.len() {
        let parsed = reader.parse(&data[at..]);
        let taken = by_buf.parse_buf(&mut buf);
        match (&parsed, &taken) {
            (Ok(Some((a, n))), Ok(Some(b))) => {
                assert_eq!(a, b);
                assert_eq!(buf.len(), data.len() - at - n);
            }
            (Ok(None), Ok(None)) => assert_eq!(buf.len(), data.len() - at),
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("parse {parsed:?}, parse_buf {taken:?}"),
        }
        match parsed {
            Ok(None) => break,
            Ok(Some((frame, n))) => {
                assert!(n >= HEADER_LEN && at + n <= data.len());
                at += n;
                let mut wire = Vec::new();
                writer.encode(&frame, &mut wire);
                let (back, m) = again
                    .parse(&wire)
                    .expect("an encoded frame parses")
                    .expect("an encoded frame is whole");
                assert_eq!(m, wire.len());
                assert_eq!(back, frame);
            }
            Err(FrameError::Stream { .. }) => {
                let len = frame_len(&data[at..])
                    .expect("a stream error's frame has a valid length")
                    .expect("a stream error's frame is whole");
                at += HEADER_LEN + len;
            }
            Err(FrameError::Session { .. }) => break,
        }
    }
});
