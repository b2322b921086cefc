//! Rust handlers: closures registered by full method name, for any of the four
//! RPC kinds. The first responder in the chain: a registered handler wins over
//! stubs and the resource store.
//!
//! Handlers see requests as validated [`DynamicMessage`]s of the method's input
//! type and answer with messages of its output type.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::{Respond, Responder};
use crate::Error;
use crate::call::{Answer, BoxFuture, CallRequest, Kind, Replies, Reply, Responding};
use crate::error::BuildError;

/// A boxed stream of responses.
pub type ReplyStream = std::pin::Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send + 'static>>;
/// The stream of validated request messages of a client- or bidi-streaming call.
pub type RequestStream = std::pin::Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send + 'static>>;

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
    Box::pin(stream.map(|r| r.map(Reply::Message).map_err(Error::from)))
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
                    let (ex, input) = call.into_unary().await?;
                    let message = ex.message_off_worker(input).await?;
                    let reply = f(Call { method, metadata: ex.metadata, message }).await?;
                    Ok(Answer::one(reply))
                }
                Handler::ServerStreaming(f) => {
                    let (ex, input) = call.into_unary().await?;
                    let message = ex.message_off_worker(input).await?;
                    let replies = f(Call { method, metadata: ex.metadata, message }).await?;
                    Ok(Answer::stream(replies))
                }
                Handler::ClientStreaming(f) => {
                    let (mut ex, frames) = call.into_streaming();
                    let metadata = std::mem::take(&mut ex.metadata);
                    let message: RequestStream = Box::pin(ex.messages(frames).map(|r| r.map_err(Error::into_status)));
                    let reply = f(Call { method, metadata, message }).await?;
                    Ok(Answer::one(reply))
                }
                Handler::Bidi(f) => {
                    let (mut ex, frames) = call.into_streaming();
                    let metadata = std::mem::take(&mut ex.metadata);
                    let message: RequestStream = Box::pin(ex.messages(frames).map(|r| r.map_err(Error::into_status)));
                    let replies = f(Call { method, metadata, message }).await?;
                    Ok(Answer::stream(replies))
                }
            }
        })
    }
}

impl Respond for Handler {
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
