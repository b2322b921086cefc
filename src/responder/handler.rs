//! Rust handlers: closures registered by full method name, for any of the four
//! RPC kinds. The first responder in the chain: a registered handler wins over
//! stubs and the resource store.
//!
//! Handlers see requests as validated [`DynamicMessage`]s of the method's input
//! type and answer with messages of its output type. Beside the message a
//! [`Call`] carries what any gRPC service needs: request metadata, the peer,
//! the deadline and a [`Cancellation`] signal; response headers and trailers to
//! set. A handler's own `Status` (code, message, details, metadata) reaches the
//! client unchanged.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::{Respond, Responder};
use crate::Error;
use crate::call::{
    Answer, BoxFuture, CallRequest, CompressionCell, Exchange, Kind, MetadataCell, Peer, Replies, Reply,
    ReplyCompression, Responding,
};
use crate::error::BuildError;

/// A boxed stream of responses.
pub type ReplyStream = std::pin::Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send + 'static>>;
/// The stream of validated request messages of a client- or bidi-streaming call.
pub type RequestStream = std::pin::Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send + 'static>>;

/// One call as a handler sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Call<T> {
    /// The method being called (`method.input()` / `method.output()` give the types).
    pub method: MethodDescriptor,
    /// The request's metadata (headers).
    pub metadata: MetadataMap,
    /// The request message, or the stream of them.
    pub message: T,
    /// Who is calling: the remote address, and the client certificates over mutual TLS.
    pub peer: Peer,
    /// When the call must be over (the client's `grpc-timeout`), if it set one.
    /// Past it the call ends with DEADLINE_EXCEEDED and the handler is dropped.
    pub deadline: Option<Instant>,
    /// Response headers: sent with the first reply, so set them before the
    /// handler's future completes.
    pub headers: MetadataCell,
    /// Response trailers, sent after the last reply (or with the error status).
    /// A unary handler sets them before it returns; a streaming one may add to
    /// them (through a clone) until its reply stream ends.
    pub trailers: MetadataCell,
    /// Fires if the call is abandoned before the handler has finished: the
    /// client cancelled, the connection went away, or the deadline passed.
    pub cancellation: Cancellation,
    /// Response compression for this call (`set` it for the whole call, or
    /// before each reply of a stream), and whether the request message
    /// received last arrived compressed.
    pub compression: CompressionCell,
}

/// Whether a call was abandoned (cancelled by the client, its connection lost,
/// or past its deadline) before its handler finished. Cloneable, so a task the
/// handler spawns can watch it too.
#[derive(Debug, Clone)]
pub struct Cancellation(watch::Receiver<CallState>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Running,
    Finished,
    Cancelled,
}

impl Cancellation {
    /// Whether the call was abandoned.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow() == CallState::Cancelled
    }

    /// Resolves when the call is abandoned; stays pending if the handler
    /// finishes normally (its replies sent or its error returned).
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s == CallState::Cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Held while a handler runs (and while its reply stream is read): dropped
/// before [`CallGuard::finish`], it marks the call cancelled.
struct CallGuard(watch::Sender<CallState>);

impl CallGuard {
    fn new() -> (CallGuard, Cancellation) {
        let (tx, rx) = watch::channel(CallState::Running);
        (CallGuard(tx), Cancellation(rx))
    }

    fn finish(&self) {
        self.0.send_replace(CallState::Finished);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.send_if_modified(|s| {
            let running = *s == CallState::Running;
            if running {
                *s = CallState::Cancelled;
            }
            running
        });
    }
}

/// A handler's reply stream, marking the call finished when it ends (or fails)
/// and cancelled when it is dropped before that.
struct Guarded {
    inner: ReplyStream,
    guard: Option<CallGuard>,
}

impl Stream for Guarded {
    type Item = Result<Reply, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        if matches!(item, None | Some(Err(_)))
            && let Some(guard) = self.guard.take()
        {
            guard.finish();
        }
        Poll::Ready(item.map(|r| r.map(Reply::Message).map_err(Error::from)))
    }
}

impl<T> Call<T> {
    /// A call of `method` carrying `message`, with no metadata, peer or
    /// deadline, never cancelled: for calling a handler directly in a test.
    pub fn new(method: MethodDescriptor, message: T) -> Self {
        let (guard, cancellation) = CallGuard::new();
        guard.finish();
        Call {
            method,
            metadata: MetadataMap::new(),
            message,
            peer: Peer::default(),
            deadline: None,
            headers: MetadataCell::new(),
            trailers: MetadataCell::new(),
            cancellation,
            compression: CompressionCell::default(),
        }
    }

    /// An empty message of the method's output type, to fill in and return.
    pub fn reply(&self) -> DynamicMessage {
        DynamicMessage::new(self.method.output())
    }

    /// The same call carrying another message or stream (e.g. to share code
    /// between a server-streaming and a bidi handler).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Call<U> {
        let Call { method, metadata, message, peer, deadline, headers, trailers, cancellation, compression } = self;
        Call { method, metadata, message: f(message), peer, deadline, headers, trailers, cancellation, compression }
    }

    fn with_message<U>(self, message: U) -> Call<U> {
        self.map(|_| message)
    }
}

type UnaryFn = dyn Fn(Call<DynamicMessage>) -> BoxFuture<Result<DynamicMessage, Status>> + Send + Sync;
type ServerStreamingFn = dyn Fn(Call<DynamicMessage>) -> BoxFuture<Result<ReplyStream, Status>> + Send + Sync;
type ClientStreamingFn = dyn Fn(Call<RequestStream>) -> BoxFuture<Result<DynamicMessage, Status>> + Send + Sync;
type BidiFn = dyn Fn(Call<RequestStream>) -> BoxFuture<Result<ReplyStream, Status>> + Send + Sync;

/// A handler for one method, of one of the four kinds.
#[derive(Clone)]
pub enum Handler {
    /// One request, one response.
    Unary(Arc<UnaryFn>),
    /// One request, a stream of responses.
    ServerStreaming(Arc<ServerStreamingFn>),
    /// A stream of requests, one response.
    ClientStreaming(Arc<ClientStreamingFn>),
    /// Streams both ways.
    Bidi(Arc<BidiFn>),
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().name())
    }
}

impl Handler {
    /// Wraps an async closure answering a unary method.
    pub fn unary<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<DynamicMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DynamicMessage, Status>> + Send + 'static,
    {
        Handler::Unary(Arc::new(move |call| Box::pin(f(call))))
    }

    /// Wraps an async closure answering a server-streaming method.
    pub fn server_streaming<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<DynamicMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReplyStream, Status>> + Send + 'static,
    {
        Handler::ServerStreaming(Arc::new(move |call| Box::pin(f(call))))
    }

    /// Wraps an async closure answering a client-streaming method.
    pub fn client_streaming<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<RequestStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DynamicMessage, Status>> + Send + 'static,
    {
        Handler::ClientStreaming(Arc::new(move |call| Box::pin(f(call))))
    }

    /// Wraps an async closure answering a bidi-streaming method.
    pub fn bidi<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<RequestStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReplyStream, Status>> + Send + 'static,
    {
        Handler::Bidi(Arc::new(move |call| Box::pin(f(call))))
    }

    /// Which RPC kind this handler answers.
    pub fn kind(&self) -> Kind {
        match self {
            Handler::Unary(_) => Kind::Unary,
            Handler::ServerStreaming(_) => Kind::ServerStreaming,
            Handler::ClientStreaming(_) => Kind::ClientStreaming,
            Handler::Bidi(_) => Kind::Bidi,
        }
    }
}

/// What a handler returns besides its message(s): the response headers and
/// trailers it set, and the guard marking the call finished or cancelled.
struct Parts {
    headers: MetadataCell,
    trailers: MetadataCell,
    compression: CompressionCell,
    guard: CallGuard,
}

impl Parts {
    fn call<T>(ex: &Exchange, method: MethodDescriptor, metadata: MetadataMap, message: T) -> (Call<T>, Parts) {
        let (guard, cancellation) = CallGuard::new();
        let (headers, trailers) = (MetadataCell::new(), MetadataCell::new());
        let compression = CompressionCell::new(ex.flags.clone());
        let call = Call {
            method,
            metadata,
            message,
            peer: ex.peer.clone(),
            deadline: ex.deadline,
            headers: headers.clone(),
            trailers: trailers.clone(),
            cancellation,
            compression: compression.clone(),
        };
        (call, Parts { headers, trailers, compression, guard })
    }

    /// A handler's error: it finished (not cancelled); its trailers go out
    /// with the status.
    fn error(self, status: Status) -> Error {
        self.guard.finish();
        let mut status = status;
        let trailers = self.trailers.take();
        if !trailers.is_empty() {
            let md = status.metadata_mut();
            for kv in trailers.iter() {
                match kv {
                    tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                        md.append(k.clone(), v.clone());
                    }
                    tonic::metadata::KeyAndValueRef::Binary(k, v) => {
                        md.append_bin(k.clone(), v.clone());
                    }
                }
            }
        }
        Error::from(status)
    }

    fn one(self, reply: DynamicMessage) -> Answer {
        self.guard.finish();
        let mut answer = Answer::one(reply);
        answer.metadata = self.headers.take();
        if self.compression.get() != ReplyCompression::Auto {
            answer = answer.with_compression(self.compression);
        }
        if self.trailers.update(|t| !t.is_empty()) { answer.with_trailers(self.trailers) } else { answer }
    }

    fn stream(self, replies: ReplyStream) -> Answer {
        let guarded: Replies = Box::pin(Guarded { inner: replies, guard: Some(self.guard) });
        let mut answer = Answer::stream(guarded);
        answer.metadata = self.headers.take();
        answer.with_trailers(self.trailers).with_compression(self.compression)
    }
}

impl Handler {
    /// Runs this handler for one call: the request decoded and validated first.
    /// (The call core guards against panics, in building this future too.)
    fn run(&self, call: CallRequest) -> BoxFuture<Result<Answer, Error>> {
        let this = self.clone();
        Box::pin(async move {
            let method = call.method().clone();
            match this {
                Handler::Unary(f) => {
                    let (mut ex, input) = call.into_unary().await?;
                    let message = ex.message_off_worker(input).await?;
                    let metadata = std::mem::take(&mut ex.metadata);
                    let (call, parts) = Parts::call(&ex, method, metadata, message);
                    match f(call).await {
                        Ok(reply) => Ok(parts.one(reply)),
                        Err(status) => Err(parts.error(status)),
                    }
                }
                Handler::ServerStreaming(f) => {
                    let (mut ex, input) = call.into_unary().await?;
                    let message = ex.message_off_worker(input).await?;
                    let metadata = std::mem::take(&mut ex.metadata);
                    let (call, parts) = Parts::call(&ex, method, metadata, message);
                    match f(call).await {
                        Ok(replies) => Ok(parts.stream(replies)),
                        Err(status) => Err(parts.error(status)),
                    }
                }
                Handler::ClientStreaming(f) => {
                    let (mut ex, frames) = call.into_streaming();
                    let metadata = std::mem::take(&mut ex.metadata);
                    let (call, parts) = Parts::call(&ex, method, metadata, ());
                    let message: RequestStream = Box::pin(ex.messages(frames).map(|r| r.map_err(Error::into_status)));
                    match f(call.with_message(message)).await {
                        Ok(reply) => Ok(parts.one(reply)),
                        Err(status) => Err(parts.error(status)),
                    }
                }
                Handler::Bidi(f) => {
                    let (mut ex, frames) = call.into_streaming();
                    let metadata = std::mem::take(&mut ex.metadata);
                    let (call, parts) = Parts::call(&ex, method, metadata, ());
                    let message: RequestStream = Box::pin(ex.messages(frames).map(|r| r.map_err(Error::into_status)));
                    match f(call.with_message(message)).await {
                        Ok(replies) => Ok(parts.stream(replies)),
                        Err(status) => Err(parts.error(status)),
                    }
                }
            }
        })
    }
}

impl Respond for Handler {
    fn responder(&self) -> &'static str {
        "handler"
    }

    fn respond(&self, call: CallRequest) -> Responding {
        Responding::Later(self.run(call))
    }

    fn describe(&self) -> String {
        "registered handler".to_owned()
    }
}

/// The handlers registered by Rust code, by path (`/pkg.Service/Method`).
#[derive(Debug, Default)]
pub(crate) struct Handlers {
    by_path: HashMap<String, Handler>,
}

impl Handlers {
    pub(crate) fn new(by_path: HashMap<String, Handler>) -> Self {
        Self { by_path }
    }
}

impl Responder for Handlers {
    fn name(&self) -> &'static str {
        "handler"
    }

    fn resolve(&self, method: &MethodDescriptor) -> Result<Option<Arc<dyn Respond>>, BuildError> {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let Some(h) = self.by_path.get(&path) else { return Ok(None) };
        let kind = Kind::of(method);
        if h.kind() != kind {
            return Err(BuildError::KindMismatch { path, handler: h.kind().name(), method: kind.name() });
        }
        Ok(Some(Arc::new(h.clone())))
    }

    fn unmatched(&self, routes: &dyn Fn(&str) -> bool) {
        for path in self.by_path.keys() {
            if !routes(path) {
                tracing::warn!(%path, "a handler is registered for a method the schema does not have");
            }
        }
    }
}
