//! gRPC over HTTP/2: tonic's `Grpc` does the framing, compression and receive
//! limit; this adapter turns a request into a [`CallRequest`] (metadata,
//! `grpc-timeout`, the message stream) for the call stack, and the [`Answer`] or
//! [`Error`] back into a gRPC response through [`Error::into_status`].
//! Health and reflection, tonic services of their own, are answered here too.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use futures_util::{Stream as _, StreamExt as _};
use hyper::body::Incoming;
use prost::Message as _;
use prost_reflect::ReflectMessage as _;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tower_service::Service as _;

use super::reflection::{Reflection, V1_PREFIX, V1ALPHA_PREFIX};
use crate::Error;
use crate::call::{Answer, Body as CallBody, BoxFuture, CallRequest, MetadataCell, OutStream, Peer, Reply};
use crate::middleware::CallService;
use crate::registry::{Registry, Route, Snapshot};

type HealthServer = tonic_health::pb::health_server::HealthServer<crate::health::HealthState>;
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Which encoding compresses responses (requests in gzip, deflate and zstd are
/// always accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Never compress responses.
    None,
    /// gzip, when the client lists it in `grpc-accept-encoding` (the default).
    #[default]
    Gzip,
    /// deflate, when the client accepts it.
    Deflate,
    /// zstd, when the client accepts it.
    Zstd,
}

impl Compression {
    fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Deflate => Some(CompressionEncoding::Deflate),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        }
    }
}

/// What the gRPC adapter needs, shared by all connections.
pub(crate) struct GrpcAdapter {
    pub(crate) registry: Arc<Registry>,
    pub(crate) health: HealthServer,
    pub(crate) calls: CallService,
    pub(crate) max_recv: usize,
    pub(crate) compression: Compression,
    /// Reflection for the newest generation asked about, built on first use:
    /// most RPCs never need it, and it costs memory and reload time.
    pub(crate) reflection: arc_swap::ArcSwapOption<(u64, Result<Reflection, String>)>,
}

impl GrpcAdapter {
    pub(crate) async fn serve(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let path = req.uri().path();
        // The one snapshot this RPC uses, start to end.
        let snap = self.registry.load();
        // Health is answered here, unless the schema defines it and stubs answer it.
        if path.starts_with(HEALTH_PREFIX) && !snap.routes.get(path).is_some_and(|r| r.responder.replaces_builtin()) {
            return match self.health.clone().call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        if path.starts_with(V1_PREFIX) || path.starts_with(V1ALPHA_PREFIX) {
            let reflection = self.reflection_for(&snap);
            return match &reflection.1 {
                Ok(r) => r.call(req).await,
                Err(e) => Error::internal(format!("reflection is unavailable: {e}")).into_status().into_http(),
            };
        }
        let Some(route) = snap.routes.get(path).cloned() else {
            return unknown_method(path).into_status().into_http();
        };
        let deadline = grpc_timeout(req.headers()).map(|d| tokio::time::Instant::now() + d);
        let mut grpc = self.framing(req.headers());
        let peer = req.extensions().get::<Peer>().cloned();
        let parts = CallParts { snap, route, deadline, peer, calls: self.calls.clone() };
        let mut response = grpc.streaming(GrpcCall(Some(parts)), req).await;
        match response.extensions_mut().remove::<MetadataCell>() {
            Some(trailers) => response.map(|body| Body::new(WithTrailers { body, trailers: Some(trailers) })),
            None => response,
        }
    }

    /// Reflection services describing exactly `snap`'s schema.
    fn reflection_for(&self, snap: &Snapshot) -> Arc<(u64, Result<Reflection, String>)> {
        let generation = snap.generation();
        if let Some(cached) = self.reflection.load_full().filter(|c| c.0 == generation) {
            return cached;
        }
        let built = Arc::new((generation, Reflection::new(snap.schema().pool())));
        self.reflection.store(Some(built.clone()));
        built
    }

    /// tonic's framing for one request: the receive limit, every encoding
    /// accepted, and the response compressed when configured and the client
    /// accepts it (a compressed request may also be answered in its own encoding).
    fn framing(&self, headers: &http::HeaderMap) -> Grpc<DynamicCodec> {
        let mut grpc = Grpc::new(DynamicCodec)
            .max_decoding_message_size(self.max_recv)
            // The send limit is the call core's, which answers RESOURCE_EXHAUSTED.
            .max_encoding_message_size(usize::MAX)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Deflate)
            .accept_compressed(CompressionEncoding::Zstd);
        if let Some(configured) = self.compression.encoding() {
            grpc = grpc.send_compressed(configured);
            if let Some(own) = request_encoding(headers) {
                grpc = grpc.send_compressed(own);
            }
        }
        grpc
    }
}

/// The encoding a request was compressed with, if it is one we speak.
fn request_encoding(headers: &http::HeaderMap) -> Option<CompressionEncoding> {
    const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
    match headers.get(&GRPC_ENCODING)?.as_bytes() {
        b"gzip" => Some(CompressionEncoding::Gzip),
        b"deflate" => Some(CompressionEncoding::Deflate),
        b"zstd" => Some(CompressionEncoding::Zstd),
        _ => None,
    }
}

fn unknown_method(path: &str) -> Error {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    Error::unimplemented(format!("unknown method {method} for service {service}: the live schema does not define it"))
}

/// A failure reported by tonic's framing of the request stream. Its only
/// OUT_OF_RANGE is the receive limit, which gRPC servers answer as RESOURCE_EXHAUSTED.
fn framing_error(status: Status) -> Error {
    if status.code() == tonic::Code::OutOfRange {
        Error::too_large(status.message().to_owned())
    } else {
        Error::from(status)
    }
}

/// One call as tonic's `Grpc::streaming` drives it (all four kinds: unary
/// kinds read their one request message first). tonic calls it once.
struct GrpcCall(Option<CallParts>);

type ReplyItem = fn(Result<Reply, Error>) -> Result<Reply, Status>;
type GrpcStream = futures_util::stream::Map<OutStream, ReplyItem>;

fn reply_item(r: Result<Reply, Error>) -> Result<Reply, Status> {
    r.map_err(Error::into_status)
}

fn head(r: Result<Answer, Error>) -> Result<Response<GrpcStream>, Status> {
    let (metadata, stream, trailers) = r.map_err(Error::into_status)?.into_stream();
    let mut extensions = tonic::Extensions::default();
    if let Some(trailers) = trailers {
        // Picked up by `serve` from the HTTP response tonic builds.
        extensions.insert(trailers);
    }
    Ok(Response::from_parts(metadata, stream.map(reply_item as ReplyItem), extensions))
}

/// A response body whose final trailers (tonic's `grpc-status` and the
/// status's own metadata) get the answer's trailers added.
struct WithTrailers {
    body: Body,
    trailers: Option<MetadataCell>,
}

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx));
        let frame = match frame {
            Some(Ok(frame)) => match frame.into_trailers() {
                Ok(mut map) => {
                    if let Some(trailers) = self.trailers.take() {
                        add_trailers(&mut map, trailers.take());
                    }
                    http_body::Frame::trailers(map)
                }
                Err(frame) => frame,
            },
            other => return std::task::Poll::Ready(other),
        };
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Adds custom trailers to the final HTTP trailers, leaving out the keys the
/// protocol reserves (`grpc-*`, so a handler cannot forge the status).
fn add_trailers(map: &mut http::HeaderMap, custom: tonic::metadata::MetadataMap) {
    // A repeated key comes once with its name, then with `None` for each further value.
    let mut last: Option<http::HeaderName> = None;
    for (name, value) in custom.into_headers() {
        if name.is_some() {
            last = name;
        }
        if let Some(name) = last.as_ref().filter(|n| !n.as_str().starts_with("grpc-")) {
            map.append(name.clone(), value);
        }
    }
}

impl StreamingService<Bytes> for GrpcCall {
    type Response = Reply;
    type ResponseStream = GrpcStream;
    type Future = GrpcFuture;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> GrpcFuture {
        let (metadata, _, stream) = request.into_parts();
        let Some(parts) = self.0.take() else {
            return GrpcFuture::Calling(Box::pin(std::future::ready(Err(Error::internal("the call was made twice")))));
        };
        if parts.route.kind.client_streaming() {
            let frames = Box::pin(stream.map(|r| r.map_err(framing_error)));
            GrpcFuture::Calling(parts.run(metadata, CallBody::Frames(frames)))
        } else {
            // One request message: read it here, so responders answer it at once.
            GrpcFuture::Reading { stream, call: Some((parts, metadata)) }
        }
    }
}

/// What a call is built from once its request is in.
pub(crate) struct CallParts {
    snap: Arc<Snapshot>,
    route: Arc<Route>,
    deadline: Option<tokio::time::Instant>,
    peer: Option<Peer>,
    calls: CallService,
}

impl CallParts {
    fn run(self, metadata: tonic::metadata::MetadataMap, body: CallBody) -> BoxFuture<Result<Answer, Error>> {
        self.calls.run(CallRequest::new(self.snap, self.route, metadata, self.deadline, body).with_peer(self.peer))
    }
}

/// A gRPC call: reading the one request message (unary kinds), then running the call.
// Named only as tonic's associated Future type; it lives inside the request's
// (already boxed) future, so its size costs no allocation.
#[allow(private_interfaces, clippy::large_enum_variant)]
pub(crate) enum GrpcFuture {
    Reading { stream: Streaming<Bytes>, call: Option<(CallParts, tonic::metadata::MetadataMap)> },
    Calling(BoxFuture<Result<Answer, Error>>),
}

impl std::future::Future for GrpcFuture {
    type Output = Result<Response<GrpcStream>, Status>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            match this {
                GrpcFuture::Reading { stream, call } => {
                    let first = match std::task::ready!(std::pin::Pin::new(&mut *stream).poll_next(cx)) {
                        Some(Ok(raw)) => raw,
                        Some(Err(status)) => return Poll::Ready(head(Err(framing_error(status)))),
                        None => {
                            let path = call.as_ref().map_or("", |(p, _)| &p.route.path);
                            return Poll::Ready(head(Err(Error::internal(format!("{path}: missing request message")))));
                        }
                    };
                    let Some((parts, metadata)) = call.take() else {
                        return Poll::Ready(head(Err(Error::internal("the call was polled after it ended"))));
                    };
                    *this = GrpcFuture::Calling(parts.run(metadata, CallBody::One(first)));
                }
                GrpcFuture::Calling(fut) => return fut.as_mut().poll(cx).map(head),
            }
        }
    }
}

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

/// Encodes replies (their size was checked against the limit by the call core).
#[derive(Debug)]
pub(crate) struct ReplyEncoder;

impl Encoder for ReplyEncoder {
    type Item = Reply;
    type Error = Status;

    fn encode(&mut self, item: Reply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Reply::Message(m) => m.encode(dst).map_err(|e| {
                Error::internal(format!("failed to encode {}: {e}", m.descriptor().full_name())).into_status()
            }),
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

/// Parses `grpc-timeout` (at most 8 digits and a unit: H M S m u n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn parses_grpc_timeout() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", "150m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(150)));
        h.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(2)));
        h.insert("grpc-timeout", "123456789m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "5x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }
}
