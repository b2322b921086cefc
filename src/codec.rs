//! The generic codec: requests decode as [`DynamicMessage`]s of the method's input
//! type; replies encode from a [`DynamicMessage`] or pass through as pre-encoded
//! bytes. Framing, compression and size limits stay in tonic's `Grpc`.

use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage as _};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::handler::Reply;

/// The codec of every method: requests stay bytes until needed, replies are
/// encoded from a dynamic message or sent as stored bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DynamicCodec;

impl Codec for DynamicCodec {
    type Encode = Reply;
    type Decode = Bytes;
    type Encoder = ReplyEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// Encodes replies (their size was checked against the limit by the router).
#[derive(Debug)]
pub(crate) struct ReplyEncoder;

impl Encoder for ReplyEncoder {
    type Item = Reply;
    type Error = Status;

    fn encode(&mut self, item: Reply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Reply::Message(m) => m
                .encode(dst)
                .map_err(|e| Status::internal(format!("failed to encode {}: {e}", m.descriptor().full_name()))),
            Reply::Encoded(bytes) => {
                dst.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

/// Hands each request message over as its bytes (zero-copy): decoding into a
/// dynamic message happens later, and only when something needs it.
#[derive(Debug)]
pub(crate) struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Decodes a request message of type `desc`.
pub(crate) fn decode(desc: &MessageDescriptor, path: &str, raw: Bytes) -> Result<DynamicMessage, Status> {
    DynamicMessage::decode(desc.clone(), raw).map_err(|e| malformed(path, desc, e))
}

/// Per gRPC's status code guide, a message the server cannot parse is INTERNAL.
pub(crate) fn malformed(path: &str, desc: &MessageDescriptor, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{path}: request is not a valid {} message: {e}", desc.full_name()))
}

/// Refuses a reply over the send limit with RESOURCE_EXHAUSTED. Done before the
/// reply reaches tonic, which would report its own check as OUT_OF_RANGE and an
/// encoder error as INTERNAL.
pub(crate) fn check_reply_size(reply: Reply, limit: usize) -> Result<Reply, Status> {
    let len = match &reply {
        Reply::Message(m) => m.encoded_len(),
        Reply::Encoded(b) => b.len(),
    };
    if len > limit {
        return Err(Status::resource_exhausted(format!(
            "reply of {len} bytes is larger than the {limit}-byte limit (see --max-message-size)"
        )));
    }
    Ok(reply)
}

/// tonic reports an oversized incoming message as OUT_OF_RANGE; gRPC servers
/// conventionally answer RESOURCE_EXHAUSTED, so that is what we send.
pub(crate) fn fix_oversize(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

/// The same fix for a trailers-only response tonic built before our code ran.
pub(crate) fn fix_oversize_headers(headers: &mut http::HeaderMap) {
    let is_out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let is_size = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if is_out_of_range && is_size {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}
