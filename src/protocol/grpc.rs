//! gRPC over HTTP/2: tonic's `Grpc` does the framing, compression and receive
//! limit; this adapter turns a request into a [`CallRequest`] (metadata,
//! `grpc-timeout`, the message stream) for the call stack, and the [`Answer`] or
//! [`Error`] back into a gRPC response through [`Error::into_status`].
//! Health and reflection, tonic services of their own, are answered here too.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use futures_util::{Stream as _, StreamExt as _};
use prost::Message as _;
use prost_reflect::ReflectMessage as _;
use tonic::body::Body;
use tonic::codec::{
    CompressionEncoding, DecodeBuf, Decoder, EncodeBody, EncodeBuf, Encoder, SingleMessageCompressionOverride,
};
use tonic::server::StreamingService;
use tonic::{Request, Response, Status, Streaming};
use tower_service::Service as _;

use super::reflection::{Reflection, V1_PREFIX, V1ALPHA_PREFIX};
use crate::Error;
use crate::call::{
    Answer, Body as CallBody, BoxFuture, CallRequest, CompressionCell, MetadataCell, OutStream, Peer, Reply,
    ReplyCompression, RequestFlags,
};
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
    /// Token auth for what the adapter answers itself (health, reflection,
    /// unknown methods) under `--auth-all`; methods of the schema are checked by
    /// its layer in the call stack.
    pub(crate) builtin_auth: Option<Arc<crate::middleware::TokenAuth>>,
    /// Reflection for the newest generation asked about, built on first use:
    /// most RPCs never need it, and it costs memory and reload time.
    pub(crate) reflection: arc_swap::ArcSwapOption<(u64, Result<Reflection, String>)>,
}

impl GrpcAdapter {
    /// Answers a gRPC request: over HTTP/2 (`Incoming`), or gRPC-Web once
    /// tonic-web has translated it to gRPC framing (any HTTP version).
    pub(crate) async fn serve<B>(&self, req: http::Request<B>, peer: Peer) -> http::Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let path = req.uri().path();
        if self.builtin_auth.is_some()
            && (path.starts_with(HEALTH_PREFIX) || path.starts_with(V1_PREFIX) || path.starts_with(V1ALPHA_PREFIX))
            && let Err(e) = self.builtin_auth(&req)
        {
            return e.into_status().into_http();
        }
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
            // Reflection is rare: boxing its body (one allocation) lets gRPC-Web share it.
            return self.reflect(&snap, req.map(Body::new)).await;
        }
        let Some(route) = snap.routes.get(path).cloned() else {
            // Under --auth-all, strangers do not learn which methods exist either.
            let refused = self.builtin_auth(&req).err();
            return refused.unwrap_or_else(|| unknown_method(path)).into_status().into_http();
        };
        let deadline = grpc_timeout(req.headers()).map(|d| tokio::time::Instant::now() + d);
        let request_encoding = match request_encoding(req.headers()) {
            Ok(e) => e,
            Err(status) => return status.into_http(),
        };
        let reply_encoding = self.reply_encoding(req.headers(), request_encoding);
        // What a responder that asks for compression gets when the server's
        // default gives none: the client's first encoding that we speak.
        let on_request = reply_encoding.or_else(|| accepted(req.headers()).next());
        let (head, body) = req.into_parts();
        // Frame flags are only read for compressed requests (the others are
        // uncompressed throughout).
        let flags = request_encoding.map(|_| Arc::new(RequestFlags::default()));
        let max = Some(self.max_recv);
        let stream = match &flags {
            Some(f) => Streaming::new_request(RawDecoder, FlagTap::new(body, f.clone()), request_encoding, max),
            None => Streaming::new_request(RawDecoder, body, None, max),
        };
        let metadata = tonic::metadata::MetadataMap::from_headers(head.headers);
        let parts = CallParts { snap, route, deadline, peer: Some(peer), flags, calls: self.calls.clone() };
        let request = Request::from_parts(metadata, tonic::Extensions::default(), stream);
        let response = match GrpcCall(Some(parts)).call(request).await {
            Ok(r) => r,
            Err(status) => return status.into_http(),
        };
        let (metadata, replies, mut extensions) = response.into_parts();
        let trailers = extensions.remove::<MetadataCell>();
        let mut response = http::Response::new(());
        *response.version_mut() = http::Version::HTTP_2;
        *response.headers_mut() = metadata.into_headers();
        sanitize(response.headers_mut());
        let cell = extensions.remove::<CompressionCell>();
        let header_encoding = if cell.is_some() { on_request } else { reply_encoding };
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        if let Some(e) = header_encoding {
            headers.insert(GRPC_ENCODING, http::HeaderValue::from_static(encoding_name(e)));
        }
        let body = match cell {
            // The server's default: tonic's encoder compresses every reply alike.
            None => Body::new(EncodeBody::new_server(
                ReplyEncoder,
                replies,
                reply_encoding,
                SingleMessageCompressionOverride::default(),
                None,
            )),
            Some(cell) => {
                Body::new(ChosenCompression { replies, default: reply_encoding, on_request, cell, done: false })
            }
        };
        let body = match trailers {
            Some(trailers) => Body::new(WithTrailers { body, trailers: Some(trailers) }),
            None => body,
        };
        response.map(|()| body)
    }

    /// The encoding replies may be compressed with: the first in the client's
    /// `grpc-accept-encoding` that is the configured one or the request's own
    /// (none when compression is off).
    fn reply_encoding(
        &self,
        headers: &http::HeaderMap,
        request: Option<CompressionEncoding>,
    ) -> Option<CompressionEncoding> {
        let configured = self.compression.encoding()?;
        accepted(headers).find(|&e| e == configured || Some(e) == request)
    }

    /// Under `--auth-all`, what the adapter answers itself (health, reflection,
    /// unknown methods) needs a token too; the call stack's auth layer checks the rest.
    fn builtin_auth<B>(&self, req: &http::Request<B>) -> Result<(), Error> {
        let Some(auth) = &self.builtin_auth else { return Ok(()) };
        let value = req.headers().get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
        auth.check_token(value)
    }

    /// Answers a reflection request on `snap`'s schema.
    async fn reflect(&self, snap: &Snapshot, req: http::Request<Body>) -> http::Response<Body> {
        let reflection = self.reflection_for(snap);
        match &reflection.1 {
            Ok(r) => r.call(req).await,
            Err(e) => Error::internal(format!("reflection is unavailable: {e}")).into_status().into_http(),
        }
    }

    /// Reflection services describing exactly `snap`'s schema.
    fn reflection_for(&self, snap: &Snapshot) -> Arc<(u64, Result<Reflection, String>)> {
        let generation = snap.generation();
        if let Some(cached) = self.reflection.load_full().filter(|c| c.0 == generation) {
            return cached;
        }
        let built = Arc::new((generation, Reflection::new(snap.schema())));
        self.reflection.store(Some(built.clone()));
        built
    }
}

/// The encodings we speak that the client lists in `grpc-accept-encoding`, in its order.
fn accepted(headers: &http::HeaderMap) -> impl Iterator<Item = CompressionEncoding> + '_ {
    let list = headers.get(GRPC_ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or_default();
    list.split(',').filter_map(|name| encoding_named(name.trim().as_bytes()))
}

const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-accept-encoding");

fn encoding_name(e: CompressionEncoding) -> &'static str {
    match e {
        CompressionEncoding::Gzip => "gzip",
        CompressionEncoding::Deflate => "deflate",
        CompressionEncoding::Zstd => "zstd",
        _ => "identity",
    }
}

fn encoding_named(name: &[u8]) -> Option<CompressionEncoding> {
    match name {
        b"gzip" => Some(CompressionEncoding::Gzip),
        b"deflate" => Some(CompressionEncoding::Deflate),
        b"zstd" => Some(CompressionEncoding::Zstd),
        _ => None,
    }
}

/// The encoding a request was compressed with (`None`: identity); one we do
/// not speak is UNIMPLEMENTED, telling the client which we do.
fn request_encoding(headers: &http::HeaderMap) -> Result<Option<CompressionEncoding>, Status> {
    let Some(value) = headers.get(&GRPC_ENCODING) else { return Ok(None) };
    if value.as_bytes() == b"identity" {
        return Ok(None);
    }
    encoding_named(value.as_bytes()).map(Some).ok_or_else(|| {
        let name = String::from_utf8_lossy(value.as_bytes());
        let mut status =
            Error::unimplemented(format!("the request is compressed with {name}, which this server does not speak"))
                .into_status();
        status
            .metadata_mut()
            .insert("grpc-accept-encoding", tonic::metadata::MetadataValue::from_static("gzip,deflate,zstd"));
        status
    })
}

/// Drops response headers the protocol owns (a handler's metadata cannot set them).
fn sanitize(headers: &mut http::HeaderMap) {
    // Most answers set no metadata: six hash lookups saved per call.
    if headers.is_empty() {
        return;
    }
    for name in ["content-type", "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "te"] {
        headers.remove(name);
    }
}

pub(crate) fn unknown_method(path: &str) -> Error {
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
    let mut answer = r.map_err(Error::into_status)?;
    let compression = answer.take_compression();
    let (metadata, stream, trailers) = answer.into_stream();
    let mut extensions = tonic::Extensions::default();
    // Picked up by `serve` as it builds the HTTP response.
    if let Some(trailers) = trailers {
        extensions.insert(trailers);
    }
    if let Some(compression) = compression {
        extensions.insert(compression);
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
            let flags = parts.flags.clone();
            let frames = Box::pin(stream.map(move |r| {
                if let Some(f) = &flags {
                    f.next_message();
                }
                r.map_err(framing_error)
            }));
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
    flags: Option<Arc<RequestFlags>>,
    calls: CallService,
}

impl CallParts {
    pub(crate) fn new(
        snap: Arc<Snapshot>,
        route: Arc<Route>,
        deadline: Option<tokio::time::Instant>,
        calls: CallService,
    ) -> Self {
        Self { snap, route, deadline, peer: None, flags: None, calls }
    }

    /// The same call, from `peer`.
    pub(crate) fn with_peer(mut self, peer: Option<Peer>) -> Self {
        self.peer = peer;
        self
    }

    pub(crate) fn run(
        self,
        metadata: tonic::metadata::MetadataMap,
        body: CallBody,
    ) -> BoxFuture<Result<Answer, Error>> {
        let call = CallRequest::new(self.snap, self.route, metadata, self.deadline, body);
        self.calls.run(call.with_peer(self.peer).with_request_flags(self.flags))
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
                    if let Some(f) = &parts.flags {
                        f.next_message();
                    }
                    *this = GrpcFuture::Calling(parts.run(metadata, CallBody::One(first)));
                }
                GrpcFuture::Calling(fut) => return fut.as_mut().poll(cx).map(head),
            }
        }
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

/// A request body that notes the compressed flag of each gRPC frame as it
/// passes (for [`CompressionCell::request_compressed`]); the bytes go on to
/// tonic's decoder untouched.
struct FlagTap<B> {
    body: B,
    flags: Arc<RequestFlags>,
    frames: FrameFlags,
}

impl<B> FlagTap<B> {
    fn new(body: B, flags: Arc<RequestFlags>) -> Self {
        FlagTap { body, flags, frames: FrameFlags::default() }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for FlagTap<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Ok(Some(data))) = frame.as_ref().map(|f| f.as_ref().map(http_body::Frame::data_ref)) {
            let mut pending = this.flags.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            this.frames.read(data, |flag| pending.push_back(flag));
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Follows gRPC framing (a flag byte, a 4-byte big-endian length, the message)
/// over chunks split anywhere, reporting each frame's compressed flag.
#[derive(Debug, Default)]
struct FrameFlags {
    /// Bytes of the current frame header seen so far (0..5).
    header: [u8; 5],
    header_len: usize,
    /// Message bytes still to skip.
    payload_left: u64,
}

impl FrameFlags {
    fn read(&mut self, mut data: &[u8], mut flag: impl FnMut(bool)) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64);
                self.payload_left -= n;
                data = &data[n as usize..];
                continue;
            }
            let n = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == 5 {
                flag(self.header[0] & 1 == 1);
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                self.payload_left = u64::from(len);
                self.header_len = 0;
            }
        }
    }
}

/// Replies framed one by one, each compressed or not as the responder's
/// [`CompressionCell`] says when the reply is taken from the stream; then the
/// status trailers.
struct ChosenCompression {
    replies: GrpcStream,
    /// What `Auto` uses: the server's default negotiation (`--compression`).
    default: Option<CompressionEncoding>,
    /// What `On` uses (the response's `grpc-encoding`): the default, else the
    /// client's first accepted encoding.
    on_request: Option<CompressionEncoding>,
    cell: CompressionCell,
    done: bool,
}

impl ChosenCompression {
    fn frame(&self, reply: Reply) -> Result<Bytes, Error> {
        let mut raw = bytes::BytesMut::new();
        match reply {
            Reply::Message(m) => m
                .encode(&mut raw)
                .map_err(|e| Error::internal(format!("failed to encode {}: {e}", m.descriptor().full_name())))?,
            Reply::Encoded(b) => raw.extend_from_slice(&b),
        }
        let encoding = match self.cell.get() {
            ReplyCompression::Off => None,
            ReplyCompression::On => self.on_request,
            ReplyCompression::Auto => self.default,
        };
        let (flag, body) = match encoding {
            Some(e) => (1u8, compress(e, &raw).map_err(|e| Error::internal(format!("compressing a reply: {e}")))?),
            None => (0u8, raw.to_vec()),
        };
        let len = u32::try_from(body.len()).map_err(|_| Error::too_large("a reply over 4 GiB"))?;
        let mut out = bytes::BytesMut::with_capacity(5 + body.len());
        out.put_u8(flag);
        out.put_u32(len);
        out.extend_from_slice(&body);
        Ok(out.freeze())
    }
}

fn compress(encoding: CompressionEncoding, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    match encoding {
        CompressionEncoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(raw)?;
            e.finish()
        }
        CompressionEncoding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(raw)?;
            e.finish()
        }
        CompressionEncoding::Zstd => zstd::bulk::compress(raw, zstd::DEFAULT_COMPRESSION_LEVEL),
        other => Err(std::io::Error::other(format!("unsupported encoding {other:?}"))),
    }
}

impl http_body::Body for ChosenCompression {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        let status = match std::task::ready!(std::pin::Pin::new(&mut self.replies).poll_next(cx)) {
            Some(Ok(reply)) => match self.frame(reply) {
                Ok(bytes) => return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes)))),
                Err(e) => Some(e.into_status()),
            },
            Some(Err(status)) => Some(status),
            None => None,
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        match status {
            Some(status) => {
                if let Err(e) = status.add_header(&mut trailers) {
                    trailers.clear();
                    let _ = e.add_header(&mut trailers);
                }
            }
            None => {
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            }
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Parses `grpc-timeout` (at most 8 digits and a unit: H M S m u n).
pub(crate) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
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
    use super::{FrameFlags, grpc_timeout};
    use std::time::Duration;

    /// Random frames split into random chunks (empty ones and splits inside
    /// headers included): the flags come out in order, one per frame.
    #[test]
    fn frame_flags_follow_framing_across_any_chunking() {
        let mut rng = fastrand::Rng::with_seed(14);
        for _ in 0..500 {
            let n = rng.usize(0..8);
            let flags: Vec<bool> = (0..n).map(|_| rng.bool()).collect();
            let mut wire = Vec::new();
            for &f in &flags {
                let len = if rng.u8(..) < 40 { 0 } else { rng.usize(0..300) };
                wire.push(u8::from(f));
                wire.extend_from_slice(&(len as u32).to_be_bytes());
                wire.extend((0..len).map(|_| rng.u8(..)));
            }
            let mut reader = FrameFlags::default();
            let mut seen = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let take = rng.usize(0..=rest.len().min(12));
                reader.read(&rest[..take], |f| seen.push(f));
                rest = &rest[take..];
            }
            assert_eq!(seen, flags);
        }
        // Garbage never panics (a huge length just skips the rest).
        for _ in 0..200 {
            let junk: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            FrameFlags::default().read(&junk, |_| {});
        }
    }

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
