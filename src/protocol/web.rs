//! What the HTTP-body protocols (Connect, JSON) share: the adapter state, reading
//! a request body under the receive limit, the proto3 JSON mapping both ways, and
//! running one request message through the call stack exactly as the gRPC
//! adapter does (one snapshot load, the route by path, [`CallParts`]).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage as _, SerializeOptions};

use super::grpc::{CallParts, unknown_method};
use crate::Error;
use crate::call::{Answer, Body as CallBody, Peer, Reply};
use crate::middleware::CallService;
use crate::registry::{Registry, Route, Snapshot};

/// Which field names JSON responses use (requests accept both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonNames {
    /// lowerCamelCase `json_name`s, the proto3 JSON default.
    #[default]
    Camel,
    /// The names as written in the `.proto` file.
    Proto,
}

/// What the Connect and JSON adapters need, shared by all connections.
#[derive(Clone)]
pub(crate) struct WebAdapter {
    pub(crate) registry: Arc<Registry>,
    pub(crate) calls: CallService,
    pub(crate) max_recv: usize,
    pub(crate) json_names: JsonNames,
    /// `--cors-origin` values (the router's CORS layer; empty: none).
    pub(crate) cors_origins: Vec<String>,
}

impl WebAdapter {
    /// The live snapshot and the route of `path` on it (loaded once per call).
    pub(crate) fn route(&self, path: &str) -> Result<(Arc<Snapshot>, Arc<Route>), Error> {
        let snap = self.registry.load();
        let route = snap.routes.get(path).cloned().ok_or_else(|| unknown_method(path))?;
        Ok((snap, route))
    }

    /// Runs one call whose single request message is `raw` (protobuf bytes).
    pub(crate) async fn call(
        &self,
        snap: Arc<Snapshot>,
        route: Arc<Route>,
        headers: http::HeaderMap,
        peer: Option<Peer>,
        deadline: Option<tokio::time::Instant>,
        raw: Bytes,
    ) -> Result<Answer, Error> {
        self.call_body(snap, route, headers, peer, deadline, CallBody::One(raw)).await
    }

    /// Runs one call with its request body (one message, or a stream of them).
    pub(crate) async fn call_body(
        &self,
        snap: Arc<Snapshot>,
        route: Arc<Route>,
        headers: http::HeaderMap,
        peer: Option<Peer>,
        deadline: Option<tokio::time::Instant>,
        body: CallBody,
    ) -> Result<Answer, Error> {
        let metadata = tonic::metadata::MetadataMap::from_headers(strip_protocol_headers(headers));
        CallParts::new(snap, route, deadline, self.calls.clone()).with_peer(peer).run(metadata, body).await
    }

    /// Reads a whole request body, refusing more than the receive limit
    /// (RESOURCE_EXHAUSTED) without buffering past it.
    pub(crate) async fn read_body<B>(&self, body: B) -> Result<Bytes, Error>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        read_limited(body, self.max_recv).await
    }

    /// How replies are written as JSON.
    pub(crate) fn serialize_options(&self) -> SerializeOptions {
        SerializeOptions::new().use_proto_field_name(self.json_names == JsonNames::Proto)
    }

    /// A reply as JSON text of `desc` (the method's output type).
    pub(crate) fn reply_json(&self, reply: Reply, desc: &MessageDescriptor) -> Result<Vec<u8>, Error> {
        message_json(&reply_message(reply, desc)?, &self.serialize_options())
    }

    /// `reply_json`, on the blocking pool for large replies.
    pub(crate) async fn reply_json_off_worker(&self, reply: Reply, desc: MessageDescriptor) -> Result<Vec<u8>, Error> {
        let options = self.serialize_options();
        maybe_off_worker(reply.encoded_len(), "writing a JSON reply", move || {
            message_json(&reply_message(reply, &desc)?, &options)
        })
        .await
    }
}

/// The request headers as call metadata: without those that belong to the
/// HTTP exchange or the protocol (as tonic leaves `content-type` and `te` out
/// of gRPC metadata), so responders and layers see the same metadata whatever
/// protocol carried the call.
fn strip_protocol_headers(mut headers: http::HeaderMap) -> http::HeaderMap {
    use http::header;
    for name in
        [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::TE, header::CONNECTION, header::TRANSFER_ENCODING]
    {
        headers.remove(name);
    }
    for name in
        ["connect-protocol-version", "connect-timeout-ms", "connect-content-encoding", "connect-accept-encoding"]
    {
        headers.remove(name);
    }
    headers
}

/// Reads at most `max` bytes of `body`.
pub(crate) async fn read_limited<B>(body: B, max: usize) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::too_large(format!("request body is larger than the {max}-byte limit (see --max-message-size)")))
        }
        Err(e) => Err(Error::invalid_argument(format!("cannot read the request body: {e}"))),
    }
}

/// A reply as a message of `desc` (stored replies are wire bytes).
pub(crate) fn reply_message(reply: Reply, desc: &MessageDescriptor) -> Result<DynamicMessage, Error> {
    match reply {
        Reply::Message(m) => Ok(m),
        Reply::Encoded(bytes) => DynamicMessage::decode(desc.clone(), bytes)
            .map_err(|e| Error::internal(format!("a stored {} does not decode: {e}", desc.full_name()))),
    }
}

/// A reply as protobuf bytes.
pub(crate) fn reply_bytes(reply: Reply) -> Bytes {
    match reply {
        Reply::Message(m) => m.encode_to_vec().into(),
        Reply::Encoded(bytes) => bytes,
    }
}

/// A message as proto3 JSON.
pub(crate) fn message_json(msg: &DynamicMessage, options: &SerializeOptions) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, options)
        .map_err(|e| Error::internal(format!("cannot write {} as JSON: {e}", msg.descriptor().full_name())))?;
    Ok(out)
}

/// Parses proto3 JSON text as a message of `desc` (unknown fields refused);
/// an empty body is the empty message. Bad JSON is INVALID_ARGUMENT.
pub(crate) fn json_message(desc: &MessageDescriptor, text: &[u8]) -> Result<DynamicMessage, Error> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(desc.clone()));
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &DeserializeOptions::new())
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| {
            Error::invalid_argument(format!("request is not a valid JSON {} message: {e}", desc.full_name()))
        })?;
    Ok(msg)
}

/// `json_message`, encoded as protobuf bytes for the call.
pub(crate) fn json_request(desc: &MessageDescriptor, text: &[u8]) -> Result<Bytes, Error> {
    Ok(json_message(desc, text)?.encode_to_vec().into())
}

/// Runs `work` on the blocking pool when `len` bytes make it heavy (as the call
/// core does for large decodes), else here.
pub(crate) async fn maybe_off_worker<T: Send + 'static>(
    len: usize,
    what: &'static str,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if len < crate::call::HEAVY_DECODE { work() } else { crate::call::off_worker(what, work).await }
}

/// `json_request`, on the blocking pool for large bodies.
pub(crate) async fn json_request_off_worker(desc: MessageDescriptor, text: Bytes) -> Result<Bytes, Error> {
    maybe_off_worker(text.len(), "parsing a JSON request", move || json_request(&desc, &text)).await
}

/// The client of a request, as the router put it in its extensions.
pub(crate) fn peer_of(extensions: &http::Extensions) -> Option<Peer> {
    extensions.get::<Peer>().cloned()
}
