//! Handlers: what answers a method. Rust code registers closures by full method
//! name for any of the four RPC kinds; methods without one fall back to the
//! built-in resource [`store`], and otherwise answer UNIMPLEMENTED.
//!
//! Handlers see requests as [`DynamicMessage`]s of the method's input type and
//! answer with messages of its output type (or with already encoded bytes,
//! which is how the store replies without re-encoding).

pub(crate) mod store;
pub(crate) mod wire;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A boxed stream of responses.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send + 'static>>;
/// The stream of validated request messages of a client- or bidi-streaming call.
pub type RequestStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send + 'static>>;

/// One call as a handler sees it.
#[derive(Debug)]
pub struct Call<T> {
    /// The method being called (`method.input()` / `method.output()` give the types).
    pub method: MethodDescriptor,
    /// The request's metadata (headers).
    pub metadata: MetadataMap,
    /// The request message, or the stream of them.
    pub message: T,
}

impl<T> Call<T> {
    /// An empty message of the method's output type, to fill in and return.
    pub fn reply(&self) -> DynamicMessage {
        DynamicMessage::new(self.method.output())
    }
}

/// A message on its way out: a dynamic message, or bytes already encoded with the
/// method's output type (the store keeps records as wire bytes).
#[derive(Debug, Clone)]
pub enum Reply {
    /// Encode this message.
    Message(DynamicMessage),
    /// Send these bytes as they are.
    Encoded(Bytes),
}

impl From<DynamicMessage> for Reply {
    fn from(m: DynamicMessage) -> Self {
        Reply::Message(m)
    }
}

pub(crate) type Replies = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send + 'static>>;

type UnaryFn = dyn Fn(Call<DynamicMessage>) -> BoxFuture<Result<Reply, Status>> + Send + Sync;
type ServerStreamingFn = dyn Fn(Call<DynamicMessage>) -> BoxFuture<Result<Replies, Status>> + Send + Sync;
type ClientStreamingFn = dyn Fn(Call<RequestStream>) -> BoxFuture<Result<Reply, Status>> + Send + Sync;
type BidiFn = dyn Fn(Call<RequestStream>) -> BoxFuture<Result<Replies, Status>> + Send + Sync;

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

impl Handler {
    /// Wraps an async closure answering a unary method.
    pub fn unary<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<DynamicMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DynamicMessage, Status>> + Send + 'static,
    {
        Handler::Unary(Arc::new(move |call| {
            let fut = f(call);
            Box::pin(async move { fut.await.map(Reply::Message) })
        }))
    }

    /// Wraps an async closure answering a server-streaming method.
    pub fn server_streaming<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<DynamicMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReplyStream, Status>> + Send + 'static,
    {
        Handler::ServerStreaming(Arc::new(move |call| {
            let fut = f(call);
            Box::pin(async move { fut.await.map(into_replies) })
        }))
    }

    /// Wraps an async closure answering a client-streaming method.
    pub fn client_streaming<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<RequestStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DynamicMessage, Status>> + Send + 'static,
    {
        Handler::ClientStreaming(Arc::new(move |call| {
            let fut = f(call);
            Box::pin(async move { fut.await.map(Reply::Message) })
        }))
    }

    /// Wraps an async closure answering a bidi-streaming method.
    pub fn bidi<F, Fut>(f: F) -> Self
    where
        F: Fn(Call<RequestStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReplyStream, Status>> + Send + 'static,
    {
        Handler::Bidi(Arc::new(move |call| {
            let fut = f(call);
            Box::pin(async move { fut.await.map(into_replies) })
        }))
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

fn into_replies(stream: ReplyStream) -> Replies {
    Box::pin(stream.map(|r| r.map(Reply::Message)))
}
