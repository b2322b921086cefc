//! The generic codec: requests decode as [`DynamicMessage`]s of the method's input
//! type; replies encode from a [`DynamicMessage`] or pass through as pre-encoded
//! bytes. Framing, compression and size limits stay in tonic's `Grpc`.

use std::sync::Arc;

use bytes::BufMut as _;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage as _};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::handler::Reply;

/// Codec for one method; built per call from the route (two reference-count bumps).
#[derive(Debug, Clone)]
pub(crate) struct DynamicCodec {
    input: MessageDescriptor,
    /// The method path, named in decode errors.
    path: Arc<str>,
}

impl DynamicCodec {
    pub(crate) fn new(input: MessageDescriptor, path: Arc<str>) -> Self {
        Self { input, path }
    }
}

impl Codec for DynamicCodec {
    type Encode = Reply;
    type Decode = DynamicMessage;
    type Encoder = ReplyEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder { input: self.input.clone(), path: self.path.clone() }
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

/// Decodes requests of one message type.
#[derive(Debug)]
pub(crate) struct DynamicDecoder {
    input: MessageDescriptor,
    path: Arc<str>,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        // Per gRPC's status code guide, a message the server cannot parse is INTERNAL.
        DynamicMessage::decode(self.input.clone(), src).map(Some).map_err(|e| {
            Status::internal(format!("{}: request is not a valid {} message: {e}", self.path, self.input.full_name()))
        })
    }
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
