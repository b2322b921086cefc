//! The protocol-neutral call: a route plus a request (one message or a stream of
//! them, as protobuf bytes) in, an [`Answer`] (one reply or a stream) out.
//!
//! Protocol adapters build a [`CallRequest`] and hand it to the call stack: the
//! middleware layers, then [`Core`], which runs the route's responder under a
//! panic guard (building its future included), checks reply sizes and turns a
//! panic in a reply stream into INTERNAL. Requests stay bytes until a responder
//! needs a message: [`Input`] decodes and validates on demand.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::Error;
use crate::validate::{self, Validation};
use prost_protovalidate::Validator;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// A stream of request messages as bytes, in arrival order.
pub(crate) type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send + 'static>>;

/// A stream of replies.
pub type Replies = Pin<Box<dyn Stream<Item = Result<Reply, Error>> + Send + 'static>>;

/// A message on its way out: a dynamic message, or bytes already encoded with the
/// method's output type (the store keeps records as wire bytes).
#[derive(Debug, Clone)]
pub enum Reply {
    /// Encode this message.
    Message(DynamicMessage),
    /// Send these bytes as they are.
    Encoded(Bytes),
}

impl Reply {
    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Reply::Message(m) => m.encoded_len(),
            Reply::Encoded(b) => b.len(),
        }
    }
}

impl From<DynamicMessage> for Reply {
    fn from(m: DynamicMessage) -> Self {
        Reply::Message(m)
    }
}

/// The four RPC kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unary.
    Unary,
    /// Server-streaming.
    ServerStreaming,
    /// Client-streaming.
    ClientStreaming,
    /// Bidirectional streaming.
    Bidi,
}

impl Kind {
    /// The kind of a method, from its descriptor.
    pub fn of(method: &MethodDescriptor) -> Kind {
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        }
    }

    /// Whether requests come as a stream (client-streaming and bidi).
    pub fn client_streaming(self) -> bool {
        matches!(self, Kind::ClientStreaming | Kind::Bidi)
    }

    /// A human name: `unary`, `server-streaming`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStreaming => "server-streaming",
            Kind::ClientStreaming => "client-streaming",
            Kind::Bidi => "bidi-streaming",
        }
    }
}

/// One method of the live schema, resolved once per schema.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) path: Arc<str>,
    pub(crate) method: MethodDescriptor,
    pub(crate) kind: Kind,
    /// What answers it (the first responder of the chain that does).
    pub(crate) responder: Arc<dyn Respond>,
    /// How requests are checked against their `buf.validate` rules.
    pub(crate) validation: Validation,
}

/// What a call needs of the schema generation it runs on (the registry's
/// snapshot); the call keeps it alive to its end.
pub(crate) trait CallSchema: Send + Sync {
    /// The generation number.
    fn generation(&self) -> u64;
    /// The `buf.validate` validator of this generation.
    fn validator(&self) -> &Validator;
}

/// Answers calls of one method (resolved per snapshot; shared by its calls).
/// Implemented by the responders (`crate::responder`).
pub(crate) trait Respond: Send + Sync + fmt::Debug {
    /// Answers one call, at once when it can (no allocation for a future) or
    /// later. The call core guards this against panics (building the future
    /// included), and checks reply sizes; the deadline layer bounds it.
    fn respond(&self, call: CallRequest) -> Responding;

    /// One line saying what answers, for `check` and the logs.
    fn describe(&self) -> String;

    /// Which responder this is (`handler`, `stubs`, `store`, `UNIMPLEMENTED`),
    /// for the startup summary.
    fn responder(&self) -> &'static str {
        "other"
    }

    /// Whether this answers even a method protoserve serves itself (health):
    /// stubs for `grpc.health.v1.Health` replace the built-in answer.
    fn replaces_builtin(&self) -> bool {
        false
    }
}

/// A responder's answer: ready now, or a future.
pub(crate) enum Responding {
    Ready(Result<Answer, Error>),
    Later(BoxFuture<Result<Answer, Error>>),
}

/// The body of a request.
pub(crate) enum Body {
    /// Exactly one message, read by the adapter (unary and server-streaming).
    One(Bytes),
    /// Messages as they arrive.
    Frames(Frames),
}

/// Who is calling: the connection's remote address and, over mutual TLS, the
/// certificate chain the client presented (DER, leaf first). Set per connection
/// by the server; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    addr: Option<std::net::SocketAddr>,
    /// Shared by every call of the connection.
    certificates: Option<Arc<[Bytes]>>,
}

impl Peer {
    /// A peer at `addr` (`None` when the transport has no address).
    pub fn new(addr: Option<std::net::SocketAddr>) -> Self {
        Peer { addr, certificates: None }
    }

    /// The same peer with the certificate chain it presented (DER, leaf first).
    pub fn with_certificates(mut self, chain: Vec<Bytes>) -> Self {
        self.certificates = (!chain.is_empty()).then(|| chain.into());
        self
    }

    /// The remote address.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.addr
    }

    /// The client's certificate chain (DER, leaf first); empty without mutual TLS.
    pub fn certificates(&self) -> &[Bytes] {
        self.certificates.as_deref().unwrap_or_default()
    }
}

/// One call as the middleware and the responders see it.
pub struct CallRequest {
    pub(crate) snap: Arc<dyn CallSchema>,
    pub(crate) route: Arc<Route>,
    metadata: MetadataMap,
    deadline: Option<Instant>,
    peer: Option<Peer>,
    /// Per-message compressed flags (only for requests with a `grpc-encoding`).
    flags: Option<Arc<RequestFlags>>,
    /// Where the stub responder notes which stubs answered (only set while the
    /// request journal is on: `None` costs nothing).
    answered: Option<Arc<Answered>>,
    body: Body,
}

/// The stubs that answered one call, in order (a bidi call may be answered by
/// several, one per request message). Shared by the call and its journal entry.
#[derive(Debug, Default)]
pub(crate) struct Answered(std::sync::Mutex<Vec<Arc<str>>>);

impl Answered {
    /// Notes that stub `id` answered (a repeat of the last one is kept once).
    pub(crate) fn note(&self, id: &str) {
        let mut v = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.last().is_none_or(|last| **last != *id) {
            v.push(Arc::from(id));
        }
    }

    /// The stubs noted so far.
    pub(crate) fn ids(&self) -> Vec<Arc<str>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRequest")
            .field("path", &self.route.path)
            .field("generation", &self.snap.generation())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl CallRequest {
    pub(crate) fn new(
        snap: Arc<dyn CallSchema>,
        route: Arc<Route>,
        metadata: MetadataMap,
        deadline: Option<Instant>,
        body: Body,
    ) -> Self {
        Self { snap, route, metadata, deadline, peer: None, flags: None, answered: None, body }
    }

    /// The same call, noting the stubs that answer it in `slot` (the journal).
    pub(crate) fn with_answered(mut self, slot: Option<Arc<Answered>>) -> Self {
        self.answered = slot;
        self
    }

    /// Lets `seen` see each request message's bytes as it is read (the
    /// journal); a request already read as one message is seen now.
    pub(crate) fn tap_requests(&mut self, seen: impl Fn(&Bytes) + Send + Sync + 'static) {
        match &mut self.body {
            Body::One(b) => seen(b),
            Body::Frames(frames) => {
                let inner = std::mem::replace(frames, Box::pin(futures_util::stream::empty()));
                *frames = Box::pin(inner.inspect(move |r| {
                    if let Ok(b) = r {
                        seen(b);
                    }
                }));
            }
        }
    }

    /// The same call, from `peer` (protocol adapters set it from the connection).
    pub(crate) fn with_peer(mut self, peer: Option<Peer>) -> Self {
        self.peer = peer;
        self
    }

    /// The same call, with the compressed flags of its request messages.
    pub(crate) fn with_request_flags(mut self, flags: Option<Arc<RequestFlags>>) -> Self {
        self.flags = flags;
        self
    }

    /// Who is calling, when the adapter knows.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// The client's address, when the transport knows it.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer.as_ref().and_then(Peer::addr)
    }

    /// Lets `seen` see each request message's size as it is read (logs,
    /// metrics). A request already read as one message is seen now; the
    /// return value is its size (0 for a stream).
    pub(crate) fn inspect_requests(&mut self, seen: impl Fn(usize) + Send + Sync + 'static) -> usize {
        match &mut self.body {
            Body::One(b) => {
                seen(b.len());
                b.len()
            }
            Body::Frames(frames) => {
                let inner = std::mem::replace(frames, Box::pin(futures_util::stream::empty()));
                *frames = Box::pin(inner.inspect(move |r| {
                    if let Ok(b) = r {
                        seen(b.len());
                    }
                }));
                0
            }
        }
    }

    /// The method called.
    pub fn method(&self) -> &MethodDescriptor {
        &self.route.method
    }

    /// The method's path, `/pkg.Service/Method`.
    pub fn path(&self) -> &str {
        &self.route.path
    }

    /// The schema generation this call runs on, start to end.
    pub fn generation(&self) -> u64 {
        self.snap.generation()
    }

    /// The request metadata (headers).
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// The request metadata, for layers that add to what responders see.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// When the whole call (streamed replies included) must be over.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets (or clears) the deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The exchange (what decoding and validation need) and the body.
    fn split(self) -> (Exchange, Body) {
        let exchange = Exchange {
            snap: self.snap,
            route: self.route,
            metadata: self.metadata,
            deadline: self.deadline,
            peer: self.peer.unwrap_or_default(),
            flags: self.flags,
            answered: self.answered,
        };
        (exchange, self.body)
    }

    /// The metadata and the one request message, when the adapter has read it
    /// already (no waiting); else the call back.
    // Handing the call back by value is the point: boxing it would cost the
    // allocation this fast path avoids.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_unary(self) -> Result<(Exchange, Input), CallRequest> {
        match self.body {
            Body::One(raw) => {
                let exchange = Exchange {
                    snap: self.snap,
                    route: self.route,
                    metadata: self.metadata,
                    deadline: self.deadline,
                    peer: self.peer.unwrap_or_default(),
                    flags: self.flags,
                    answered: self.answered,
                };
                let input = exchange.input(raw);
                Ok((exchange, input))
            }
            Body::Frames(_) => Err(self),
        }
    }

    /// Splits off the metadata and the one request message (unary and
    /// server-streaming methods).
    pub(crate) async fn into_unary(self) -> Result<(Exchange, Input), Error> {
        let (exchange, body) = self.split();
        let raw = match body {
            Body::One(b) => b,
            Body::Frames(mut frames) => match frames.next().await {
                Some(r) => r?,
                None => return Err(Error::internal(format!("{}: missing request message", exchange.route.path))),
            },
        };
        let input = exchange.input(raw);
        Ok((exchange, input))
    }

    /// Splits off the metadata and the request stream (client- and bidi-streaming).
    pub(crate) fn into_streaming(self) -> (Exchange, Frames) {
        let (exchange, body) = self.split();
        let frames = match body {
            Body::One(b) => Box::pin(futures_util::stream::once(std::future::ready(Ok(b)))),
            Body::Frames(f) => f,
        };
        (exchange, frames)
    }
}

/// A call once its body has been split off: what decoding and validation need.
#[derive(Clone)]
pub(crate) struct Exchange {
    pub(crate) snap: Arc<dyn CallSchema>,
    pub(crate) route: Arc<Route>,
    pub(crate) metadata: MetadataMap,
    pub(crate) deadline: Option<Instant>,
    pub(crate) peer: Peer,
    pub(crate) flags: Option<Arc<RequestFlags>>,
    /// Where stubs note that they answered (journal on only).
    pub(crate) answered: Option<Arc<Answered>>,
}

impl Exchange {
    pub(crate) fn input(&self, raw: Bytes) -> Input {
        Input { raw, decoded: None, desc: self.route.method.input(), path: self.route.path.clone() }
    }

    /// The request as the store needs it: decoded and validated only when the
    /// method's input carries `buf.validate` rules.
    pub(crate) fn checked(&self, mut input: Input) -> Result<Input, Error> {
        match &self.route.validation {
            Validation::None => {}
            Validation::Native(rules) => {
                rules.check_raw(&input.raw).map_err(|e| e.unwrap_or_else(|bad| input.malformed(bad)))?
            }
            Validation::Full => validate::check(self.snap.validator(), input.message_ref()?)?,
        }
        Ok(input)
    }

    /// The request decoded and validated.
    pub(crate) fn message(&self, input: Input) -> Result<DynamicMessage, Error> {
        let msg = input.message()?;
        match &self.route.validation {
            Validation::None => {}
            Validation::Native(rules) => rules.check_message(&msg)?,
            Validation::Full => validate::check(self.snap.validator(), &msg)?,
        }
        Ok(msg)
    }

    /// The request decoded (off the async workers when large) and validated.
    pub(crate) async fn message_off_worker(&self, mut input: Input) -> Result<DynamicMessage, Error> {
        input.predecode().await?;
        self.message(input)
    }

    /// A request stream decoded and validated message by message.
    pub(crate) fn messages(self, frames: Frames) -> impl Stream<Item = Result<DynamicMessage, Error>> + Send {
        frames.then(move |r| {
            let ex = self.clone();
            async move { ex.message_off_worker(ex.input(r?)).await }
        })
    }
}

/// A request message: its wire bytes, and the decoded message once someone needed it.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) raw: Bytes,
    decoded: Option<DynamicMessage>,
    desc: MessageDescriptor,
    path: Arc<str>,
}

impl Input {
    /// The decoded message, decoding it now (and keeping it) if nobody has yet.
    pub(crate) fn message_ref(&mut self) -> Result<&DynamicMessage, Error> {
        let decoded = match self.decoded.take() {
            Some(m) => m,
            None => decode(&self.desc, &self.path, self.raw.clone())?,
        };
        Ok(self.decoded.insert(decoded))
    }

    /// Decodes a large request now on the blocking pool (a few at a time), so
    /// that decoding it never stalls the async workers serving other calls.
    /// Small requests are left to decode in place, where that is cheaper.
    pub(crate) async fn predecode(&mut self) -> Result<(), Error> {
        if self.decoded.is_some() || self.raw.len() < HEAVY_DECODE {
            return Ok(());
        }
        let (desc, path, raw) = (self.desc.clone(), self.path.clone(), self.raw.clone());
        let decoded = off_worker("decoding the request", move || decode(&desc, &path, raw)).await?;
        self.decoded = Some(decoded);
        Ok(())
    }

    /// The decoded message (decoding now if nobody has yet).
    pub(crate) fn message(self) -> Result<DynamicMessage, Error> {
        match self.decoded {
            Some(m) => Ok(m),
            None => decode(&self.desc, &self.path, self.raw),
        }
    }

    /// A request whose bytes are not a valid message of the input type.
    pub(crate) fn malformed(&self, e: impl fmt::Display) -> Error {
        malformed(&self.path, &self.desc, e)
    }
}

/// Requests at least this large are decoded on the blocking pool.
pub(crate) const HEAVY_DECODE: usize = 64 * 1024;

/// Bounds how much heavy work (large decodes, large batch inserts) runs at once:
/// one task per core, so heavy calls queue behind each other instead of
/// occupying every thread.
fn heavy_work() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

/// Runs CPU-heavy work on the blocking pool, at most one task per core at a
/// time, so it never stalls the async workers serving other calls.
pub(crate) async fn off_worker<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let _permit = heavy_work().acquire().await.map_err(|_| Error::internal("the heavy-work pool is closed"))?;
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal(format!("{what} failed: {e}")))?
}

/// Decodes a request message of type `desc`.
pub(crate) fn decode(desc: &MessageDescriptor, path: &str, raw: Bytes) -> Result<DynamicMessage, Error> {
    DynamicMessage::decode(desc.clone(), raw).map_err(|e| malformed(path, desc, e))
}

fn malformed(path: &str, desc: &MessageDescriptor, e: impl fmt::Display) -> Error {
    Error::malformed(format!("{path}: request is not a valid {} message: {e}", desc.full_name()))
}

/// What a call answers: response metadata, one reply or a stream of them, and
/// optionally trailers sent after the last reply.
pub struct Answer {
    /// Response metadata (headers) to send.
    pub metadata: MetadataMap,
    pub(crate) body: Output,
    /// Trailers to send beside the status; `None` (no allocation) when there are none.
    pub(crate) trailers: Option<MetadataCell>,
    /// The responder's say on reply compression, read as each reply is sent;
    /// `None`: the server's default.
    pub(crate) compression: Option<CompressionCell>,
}

/// Whether a call's replies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyCompression {
    /// The server's default: compressed when configured and the client accepts it.
    #[default]
    Auto,
    /// Compressed, with the encoding negotiated with the client (sent
    /// uncompressed only if the client accepts no encoding the server speaks).
    On,
    /// Not compressed.
    Off,
}

/// Compression for one call: what its replies should be (set by the responder,
/// for the whole call or reply by reply: the server reads it as it takes each
/// reply from the stream), and whether the request message last received
/// arrived compressed. A cloneable handle.
#[derive(Debug, Clone, Default)]
pub struct CompressionCell {
    reply: Arc<std::sync::atomic::AtomicU8>,
    request: Option<Arc<RequestFlags>>,
}

impl CompressionCell {
    pub(crate) fn new(request: Option<Arc<RequestFlags>>) -> Self {
        CompressionCell { reply: Arc::default(), request }
    }

    /// Sets how the next replies (all of them, until set again) are compressed.
    pub fn set(&self, compression: ReplyCompression) {
        let v = match compression {
            ReplyCompression::Auto => 0,
            ReplyCompression::On => 1,
            ReplyCompression::Off => 2,
        };
        self.reply.store(v, std::sync::atomic::Ordering::Release);
    }

    /// How replies are compressed now.
    pub fn get(&self) -> ReplyCompression {
        match self.reply.load(std::sync::atomic::Ordering::Acquire) {
            1 => ReplyCompression::On,
            2 => ReplyCompression::Off,
            _ => ReplyCompression::Auto,
        }
    }

    /// Whether the request message received last arrived compressed (its
    /// gRPC frame's compressed flag).
    pub fn request_compressed(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.last.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// Per-message compressed flags of a compressed request, as the adapter reads
/// its frames; `last` is the flag of the message handed over last.
#[derive(Debug, Default)]
pub(crate) struct RequestFlags {
    /// Flags of frames read but not yet handed over, in order.
    pub(crate) pending: std::sync::Mutex<std::collections::VecDeque<bool>>,
    pub(crate) last: std::sync::atomic::AtomicBool,
}

impl RequestFlags {
    /// A message is being handed over: its flag becomes `last`.
    pub(crate) fn next_message(&self) {
        let flag = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
        self.last.store(flag.unwrap_or(false), std::sync::atomic::Ordering::Release);
    }
}

/// Metadata shared between a call's answer and whoever produces its replies:
/// the answer's trailers (custom metadata sent after the last reply, beside
/// `grpc-status`, on success and on failure alike), or a handler's response
/// headers. A cloneable handle, so a reply stream can add trailers up to its
/// end; protocol adapters [`take`](MetadataCell::take) them when the replies are
/// over. Keys the protocol reserves (`grpc-*`) are not sent.
///
/// Errors carry trailers of their own as the metadata of a [`tonic::Status`]
/// (`Status::with_metadata`); a failed stream sends both.
#[derive(Clone, Default)]
pub struct MetadataCell(Arc<std::sync::Mutex<MetadataMap>>);

impl MetadataCell {
    /// Empty trailers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the trailers (the lock is held only while `f` runs).
    pub fn update<R>(&self, f: impl FnOnce(&mut MetadataMap) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    /// Takes the trailers out, leaving them empty.
    pub fn take(&self) -> MetadataMap {
        self.update(std::mem::take)
    }
}

impl From<MetadataMap> for MetadataCell {
    fn from(map: MetadataMap) -> Self {
        MetadataCell(Arc::new(std::sync::Mutex::new(map)))
    }
}

impl fmt::Debug for MetadataCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.update(|m| f.debug_tuple("MetadataCell").field(m).finish())
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match &self.body {
            Output::One(_) => "one",
            Output::Many(_) => "stream",
        };
        f.debug_struct("Answer").field("body", &body).field("trailers", &self.trailers).finish_non_exhaustive()
    }
}

pub(crate) enum Output {
    One(Reply),
    Many(Replies),
}

impl Answer {
    /// One reply.
    pub fn one(reply: impl Into<Reply>) -> Self {
        Answer { metadata: MetadataMap::new(), body: Output::One(reply.into()), trailers: None, compression: None }
    }

    /// A stream of replies.
    pub fn stream(replies: Replies) -> Self {
        Answer { metadata: MetadataMap::new(), body: Output::Many(replies), trailers: None, compression: None }
    }

    /// Sends these trailers after the last reply (a handle: whoever keeps a clone
    /// may still add to them while the replies stream).
    pub fn with_trailers(mut self, trailers: impl Into<MetadataCell>) -> Self {
        self.trailers = Some(trailers.into());
        self
    }

    /// The trailers this answer sends, if any.
    pub fn trailers(&self) -> Option<&MetadataCell> {
        self.trailers.as_ref()
    }

    /// Lets `cell` decide how the replies are compressed (read as each is sent).
    pub fn with_compression(mut self, cell: CompressionCell) -> Self {
        self.compression = Some(cell);
        self
    }

    /// The responder's compression choice, if it made one.
    pub fn compression(&self) -> Option<&CompressionCell> {
        self.compression.as_ref()
    }

    /// Takes the responder's compression choice out (adapters, before `into_stream`).
    pub(crate) fn take_compression(&mut self) -> Option<CompressionCell> {
        self.compression.take()
    }

    /// Maps a stream answer's replies (a one-reply answer goes through `f` once).
    pub fn map_stream(self, f: impl FnOnce(Replies) -> Replies) -> Self {
        let body = match self.body {
            Output::One(r) => Output::One(r),
            Output::Many(s) => Output::Many(f(s)),
        };
        Answer { metadata: self.metadata, body, trailers: self.trailers, compression: self.compression }
    }

    /// The replies as one stream, without allocating for a single reply; the
    /// metadata and the trailers beside it.
    pub(crate) fn into_stream(self) -> (MetadataMap, OutStream, Option<MetadataCell>) {
        let s = match self.body {
            Output::One(r) => OutStream::One(Some(r)),
            Output::Many(s) => OutStream::Many(s),
        };
        (self.metadata, s, self.trailers)
    }
}

/// One reply or a stream of them, as a stream.
pub(crate) enum OutStream {
    One(Option<Reply>),
    Many(Replies),
}

impl Stream for OutStream {
    type Item = Result<Reply, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            OutStream::One(r) => Poll::Ready(r.take().map(Ok)),
            OutStream::Many(s) => s.as_mut().poll_next(cx),
        }
    }
}

/// Refuses a reply over the send limit with RESOURCE_EXHAUSTED.
fn limit(reply: Reply, max: usize) -> Result<Reply, Error> {
    let len = reply.encoded_len();
    if len > max {
        return Err(Error::too_large(format!(
            "reply of {len} bytes is larger than the {max}-byte limit (see --max-message-size)"
        )));
    }
    Ok(reply)
}

fn panicked(path: &str, panic: Box<dyn Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(method = %path, panic = %what, "responder panicked");
    Error::internal(format!("{path}: the handler panicked"))
}

/// The innermost service of the call stack: runs the route's responder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Core {
    pub(crate) max_send: usize,
}

impl tower_service::Service<CallRequest> for Core {
    type Response = Answer;
    type Error = Error;
    type Future = CoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: CallRequest) -> CoreFuture {
        let route = call.route.clone();
        // The guard covers building the responder's future as well as running it.
        let state = match std::panic::catch_unwind(AssertUnwindSafe(|| route.responder.respond(call))) {
            Ok(Responding::Ready(r)) => CoreState::Ready(Some(r)),
            Ok(Responding::Later(fut)) => CoreState::Later(fut),
            Err(panic) => CoreState::Ready(Some(Err(panicked(&route.path, panic)))),
        };
        CoreFuture { state, route, max: self.max_send }
    }
}

/// The core's future: the responder's answer (ready, or its future polled under
/// the panic guard), then the reply size checks.
pub(crate) struct CoreFuture {
    state: CoreState,
    route: Arc<Route>,
    max: usize,
}

enum CoreState {
    Ready(Option<Result<Answer, Error>>),
    Later(BoxFuture<Result<Answer, Error>>),
}

impl std::future::Future for CoreFuture {
    type Output = Result<Answer, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = match &mut this.state {
            CoreState::Ready(r) => {
                r.take().unwrap_or_else(|| Err(Error::internal("the call was polled after it ended")))
            }
            CoreState::Later(fut) => match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(r)) => r,
                Err(panic) => Err(panicked(&this.route.path, panic)),
            },
        };
        Poll::Ready(answer.and_then(|a| finish(a, &this.route, this.max)))
    }
}

/// Checks reply sizes and guards a reply stream against panics.
fn finish(answer: Answer, route: &Arc<Route>, max: usize) -> Result<Answer, Error> {
    Ok(match answer.body {
        Output::One(r) => Answer { body: Output::One(limit(r, max)?), ..answer },
        Output::Many(s) => {
            let route = route.clone();
            let guarded = AssertUnwindSafe(s).catch_unwind().map(move |r| match r {
                Ok(item) => item.and_then(|r| limit(r, max)),
                Err(panic) => Err(panicked(&route.path, panic)),
            });
            Answer { body: Output::Many(Box::pin(guarded)), ..answer }
        }
    })
}
