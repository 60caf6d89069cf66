//! The daemon's whole inbound path for one frame, as it runs on every byte a peer sends: the
//! length prefix against the frame limit, rkyv validation (bytecheck) of the body, and request
//! validation. Whatever the input: no panic, no out-of-bounds read (the sanitizer watches), and
//! anything accepted survives an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_protocol::codec::{body_length, decode, decode_client_frame, encode_frame};
use tally_protocol::message::{validate_request, ClientFrame, ServerFrame, FRAME_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(length) = body_length(*prefix, FRAME_BYTES_MAX) else {
        return;
    };
    let body = &body[..length.min(body.len())];
    if let Ok(frame) = decode_client_frame(body) {
        let mut bytes = Vec::new();
        encode_frame(&frame, &mut bytes).expect("an accepted frame re-encodes");
        let again = decode_client_frame(&bytes[4..]).expect("a re-encoded frame decodes");
        assert_eq!(again, frame);
        if let ClientFrame::Request(request) = &frame {
            let _ = validate_request(&request.request);
        }
    }
    // The client reads the daemon's frames with the same code.
    let _ = decode::<ServerFrame>(body);
});
