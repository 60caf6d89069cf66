//! Bytes ⇄ messages. A frame on the wire is a 4-byte little-endian body length followed by an rkyv
//! archive of a [`ClientFrame`](crate::message::ClientFrame) or
//! [`ServerFrame`](crate::message::ServerFrame). Every inbound body is validated by bytecheck before
//! anything reads it; no sockets, no clocks here.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::message::{ClientFrame, FRAME_BYTES_MAX};

/// Bytes of the length prefix in front of every frame body.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why bytes could not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announces more than the limit.
    #[error("frame is {bytes} bytes; the limit is {limit}")]
    FrameTooLarge {
        /// Announced body size.
        bytes: u64,
        /// The limit in force.
        limit: u32,
    },
    /// A frame with an empty body.
    #[error("frame is empty")]
    EmptyFrame,
    /// The body is not a valid archive of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The message could not be serialized (a programmer error, reported rather than panicking).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// A serialization buffer kept past this size is dropped after use rather than kept for the next
/// frame, so one large answer does not pin its memory on the thread.
const SCRATCH_KEPT_BYTES_MAX: usize = 64 * 1024;

thread_local! {
    /// Where frames are archived before being copied behind their length prefix: every frame
    /// archived into a fresh buffer cost an allocation and its growth (docs/performance.md, Floors: 138 against
    /// 16 ns for a small message).
    static SCRATCH: std::cell::RefCell<AlignedVec> = std::cell::RefCell::new(AlignedVec::new());
}

/// Appends one frame (length prefix + archived `value`) to `out`.
pub fn encode_frame<T>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    SCRATCH.with_borrow_mut(|scratch| {
        let mut buffer = std::mem::take(scratch);
        buffer.clear();
        let body = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buffer)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        let framed = append_frame(&body, out);
        if body.capacity() <= SCRATCH_KEPT_BYTES_MAX {
            *scratch = body;
        }
        framed
    })
}

fn append_frame(body: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let length = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= FRAME_BYTES_MAX)
        .ok_or(CodecError::FrameTooLarge {
            bytes: body.len() as u64,
            limit: FRAME_BYTES_MAX,
        })?;
    out.reserve(LENGTH_PREFIX_BYTES + body.len());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Reads a length prefix and checks it against `limit`; returns the body size.
pub fn body_length(prefix: [u8; LENGTH_PREFIX_BYTES], limit: u32) -> Result<usize, CodecError> {
    let length = u32::from_le_bytes(prefix);
    if length == 0 {
        return Err(CodecError::EmptyFrame);
    }
    if length > limit {
        return Err(CodecError::FrameTooLarge {
            bytes: u64::from(length),
            limit,
        });
    }
    Ok(length as usize)
}

/// Validates and deserializes a frame body. Unaligned input is copied to an aligned buffer first.
pub fn decode<T>(body: &[u8]) -> Result<T, CodecError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    if body.is_empty() {
        return Err(CodecError::EmptyFrame);
    }
    let malformed = |e: rancor::Error| CodecError::Malformed(e.to_string());
    if (body.as_ptr() as usize).is_multiple_of(16) {
        return rkyv::from_bytes::<T, rancor::Error>(body).map_err(malformed);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(malformed)
}

/// Decodes a client frame. Only bytes that do not decode are an error here: the values a
/// request carries are checked by [`crate::message::validate_request`] afterwards, and one outside a limit is a
/// typed rejection of that request, not a broken stream.
pub fn decode_client_frame(body: &[u8]) -> Result<ClientFrame, CodecError> {
    decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use proptest::prelude::*;

    fn body_of(frame: &[u8]) -> &[u8] {
        &frame[LENGTH_PREFIX_BYTES..]
    }

    fn round_trip(frame: &ClientFrame) -> ClientFrame {
        let mut out = Vec::new();
        encode_frame(frame, &mut out).unwrap();
        let prefix: [u8; 4] = out[..4].try_into().unwrap();
        assert_eq!(body_length(prefix, FRAME_BYTES_MAX).unwrap(), out.len() - 4);
        decode(body_of(&out)).unwrap()
    }

    #[test]
    fn oversized_length_prefix_is_rejected_with_size_and_limit() {
        let err = body_length(70_000u32.to_le_bytes(), 65_536).unwrap_err();
        assert_eq!(err.to_string(), "frame is 70000 bytes; the limit is 65536");
    }

    #[test]
    fn random_bytes_are_malformed_not_a_panic() {
        let garbage = [0xffu8; 64];
        assert!(matches!(
            decode::<ClientFrame>(&garbage),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode::<ClientFrame>(&[]),
            Err(CodecError::EmptyFrame)
        ));
    }

    #[test]
    fn decode_client_frame_decodes_a_bad_value_and_leaves_it_to_validation() {
        let frame = ClientFrame::Request(RequestFrame {
            id: 1,
            request: Request::Check(CheckRequest {
                model: None,
                customer: String::new(),
                feature: "tokens".into(),
                amount: 1,
            }),
        });
        let mut out = Vec::new();
        encode_frame(&frame, &mut out).unwrap();
        let decoded = decode_client_frame(body_of(&out)).expect("the bytes are well formed");
        let ClientFrame::Request(request) = decoded else {
            panic!("a request")
        };
        let err = crate::message::validate_request(&request.request).unwrap_err();
        assert!(err.to_string().contains("customer id is 0 bytes"), "{err}");
    }

    fn report_item() -> impl Strategy<Value = ReportItem> {
        (
            "[a-z0-9-]{1,40}",
            "[a-z-]{1,20}",
            1..=AMOUNT_MAX,
            proptest::option::of(any::<[u8; 16]>()),
            any::<bool>(),
        )
            .prop_map(
                |(customer, feature, amount, idempotency_key, only_if_allowed)| ReportItem {
                    model: None,
                    customer,
                    feature,
                    amount,
                    idempotency_key,
                    only_if_allowed,
                },
            )
    }

    proptest! {
        #[test]
        fn report_frames_round_trip(id in any::<u64>(), items in proptest::collection::vec(report_item(), 1..20)) {
            let single = ClientFrame::Request(RequestFrame { id, request: Request::Report(items[0].clone()) });
            prop_assert_eq!(round_trip(&single), single);
            let batch = ClientFrame::Request(RequestFrame { id, request: Request::ReportBatch(items) });
            prop_assert_eq!(round_trip(&batch), batch);
        }

        #[test]
        fn mutated_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<(usize, u8)>()) {
            let mut bytes = bytes;
            if !bytes.is_empty() {
                let at = flip.0 % bytes.len();
                bytes[at] ^= flip.1;
            }
            let _ = decode_client_frame(&bytes);
            let _ = decode::<ServerFrame>(&bytes);
        }
    }

    #[test]
    fn server_frames_round_trip() {
        let frame = ServerFrame::Response(ResponseFrame {
            id: 7,
            reply: Reply::Err(TallyError::InsufficientBalance {
                cost: 5,
                available: 2,
            }),
        });
        let mut out = Vec::new();
        encode_frame(&frame, &mut out).unwrap();
        assert_eq!(decode::<ServerFrame>(body_of(&out)).unwrap(), frame);
    }
}
