//! The one catch-all gRPC service: look the path up in the live snapshot, pick the
//! RPC kind from the method, validate, call the handler, and drive tonic's `Grpc`
//! with the dynamic codec. Every failure leaves here as a gRPC status; nothing
//! errors towards hyper.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt, TryStreamExt};
use hyper::body::Incoming;
use prost_reflect::DynamicMessage;
use tonic::body::Body;
use tonic::server::{ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tower_service::Service as _;
use tracing::Instrument as _;

use bytes::Bytes;

use crate::codec::{self, DynamicCodec};
use crate::handler::store::{Input, SharedStore};
use crate::handler::{BoxFuture, Call, Handler, Kind, Replies, Reply, RequestStream};
use crate::reflection::{V1_PREFIX, V1ALPHA_PREFIX};
use crate::registry::{Registry, Route, Snapshot, Target};
use crate::validate::{self, Validation};

type HealthServer = tonic_health::pb::health_server::HealthServer<crate::health::HealthState>;
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Message size limits applied by tonic's framing layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_recv: usize,
    pub(crate) max_send: usize,
}

/// The service hyper calls for every HTTP/2 request.
#[derive(Clone)]
pub(crate) struct Router {
    registry: Arc<Registry>,
    health: HealthServer,
    limits: Limits,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Router {
    pub(crate) fn new(registry: Arc<Registry>, health: HealthServer, limits: Limits) -> Self {
        Self { registry, health, limits }
    }

    async fn route(self, req: http::Request<Incoming>) -> http::Response<Body> {
        let path = req.uri().path();
        if path.starts_with(HEALTH_PREFIX) {
            return match self.health.clone().call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        // The one snapshot this RPC uses, start to end.
        let snap = self.registry.load();
        if path.starts_with(V1_PREFIX) || path.starts_with(V1ALPHA_PREFIX) {
            return match snap.reflection() {
                Ok(r) => r.call(req).await,
                Err(e) => Status::internal(format!("reflection is unavailable: {e}")).into_http(),
            };
        }
        let Some(route) = snap.routes.get(path).cloned() else {
            return unknown_method(path).into_http();
        };
        let deadline = grpc_timeout(req.headers());
        let span = tracing::debug_span!("rpc", method = %route.path, generation = snap.generation);
        let ctx = Ctx { snap, route, store: self.registry.store.clone(), max_send: self.limits.max_send };
        let call = dispatch(ctx, req, self.limits.max_recv).instrument(span);
        match deadline {
            None => call.await,
            Some(d) => match tokio::time::timeout(d, call).await {
                Ok(r) => r,
                Err(_) => Status::deadline_exceeded("deadline exceeded before the handler finished").into_http(),
            },
        }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.route(req).await) })
    }
}

fn unknown_method(path: &str) -> Status {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    Status::unimplemented(format!("unknown method {method} for service {service}: the live schema does not define it"))
}

async fn dispatch(ctx: Ctx, req: http::Request<Incoming>, max_recv: usize) -> http::Response<Body> {
    // tonic enforces the receive limit while framing; the send limit is checked in `Ctx`.
    let mut grpc = Grpc::new(DynamicCodec).max_decoding_message_size(max_recv).max_encoding_message_size(usize::MAX);
    let svc = Svc(ctx);
    let mut response = match svc.0.route.kind {
        Kind::Unary => grpc.unary(svc, req).await,
        Kind::ServerStreaming => grpc.server_streaming(svc, req).await,
        Kind::ClientStreaming => grpc.client_streaming(svc, req).await,
        Kind::Bidi => grpc.streaming(svc, req).await,
    };
    codec::fix_oversize_headers(response.headers_mut());
    response
}

/// The tonic service for one call: tonic's traits want `&mut self` and a `'static`
/// future, so each call clones its [`Ctx`] (reference counts only).
struct Svc(Ctx);

/// One call's view of the world: its snapshot, its route, the shared store.
#[derive(Clone)]
struct Ctx {
    snap: Arc<Snapshot>,
    route: Arc<Route>,
    store: SharedStore,
    max_send: usize,
}

impl Ctx {
    fn input(&self, raw: Bytes) -> Input {
        Input { raw, decoded: None, desc: self.route.method.input(), path: self.route.path.clone() }
    }

    /// The request as the store needs it: decoded and validated only when the
    /// method's input carries `buf.validate` rules.
    fn store_input(&self, raw: Bytes) -> Result<Input, Status> {
        let mut input = self.input(raw);
        match &self.route.validation {
            Validation::None => {}
            Validation::Native(rules) => {
                rules.check_raw(&input.raw).map_err(|e| e.unwrap_or_else(|bad| input.malformed(bad)))?
            }
            Validation::Full => validate::check(&self.snap.validator, input.message_ref()?)?,
        }
        Ok(input)
    }

    /// The request as a handler sees it: decoded and validated.
    fn message(&self, raw: Bytes) -> Result<DynamicMessage, Status> {
        let msg = self.input(raw).message()?;
        match &self.route.validation {
            Validation::None => {}
            Validation::Native(rules) => rules.check_message(&msg)?,
            Validation::Full => validate::check(&self.snap.validator, &msg)?,
        }
        Ok(msg)
    }

    /// A streaming request: oversize frames mapped to RESOURCE_EXHAUSTED.
    fn frames(stream: Streaming<Bytes>) -> impl futures_util::Stream<Item = Result<Bytes, Status>> + Send {
        stream.map(|r| r.map_err(codec::fix_oversize))
    }

    /// The request stream a handler sees: each message decoded and validated as it arrives.
    fn request_stream(&self, stream: Streaming<Bytes>) -> RequestStream {
        let ctx = self.clone();
        Box::pin(Self::frames(stream).map(move |r| r.and_then(|raw| ctx.message(raw))))
    }

    /// Runs a registered handler's future; a panic in it becomes INTERNAL for this
    /// call (and is logged) instead of a reset stream.
    async fn guard<T>(&self, fut: BoxFuture<Result<T, Status>>) -> Result<T, Status> {
        match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(method = %self.route.path, panic = %what, "handler panicked");
                Err(Status::internal(format!("{}: the handler panicked", self.route.path)))
            }
        }
    }

    fn mismatch(&self) -> Status {
        Status::internal(format!("{}: handler kind does not match the method", self.route.path))
    }

    fn limit(&self, reply: Reply) -> Result<Reply, Status> {
        codec::check_reply_size(reply, self.max_send)
    }

    fn limit_stream(&self, replies: Replies) -> Replies {
        let max = self.max_send;
        Box::pin(replies.map(move |r| r.and_then(|r| codec::check_reply_size(r, max))))
    }
}

fn not_implemented(msg: &str) -> Status {
    Status::unimplemented(msg.to_owned())
}

impl UnaryService<Bytes> for Svc {
    type Response = Reply;
    type Future = BoxFuture<Result<Response<Reply>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (metadata, _, raw) = request.into_parts();
        let ctx = self.0.clone();
        Box::pin(async move {
            let reply = match &ctx.route.target {
                Target::Store(conv) => conv.unary(&ctx.store, ctx.store_input(raw)?)?,
                Target::Handler(Handler::Unary(f)) => {
                    let message = ctx.message(raw)?;
                    ctx.guard(f(Call { method: ctx.route.method.clone(), metadata, message })).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Handler(_) => return Err(ctx.mismatch()),
            };
            Ok(Response::new(ctx.limit(reply)?))
        })
    }
}

impl ServerStreamingService<Bytes> for Svc {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (metadata, _, raw) = request.into_parts();
        let ctx = self.0.clone();
        Box::pin(async move {
            let replies: Replies = match &ctx.route.target {
                Target::Store(conv) => {
                    let page = conv.stream(&ctx.store, ctx.store_input(raw)?)?;
                    Box::pin(futures_util::stream::iter(page.into_iter().map(|b| Ok(Reply::Encoded(b)))))
                }
                Target::Handler(Handler::ServerStreaming(f)) => {
                    let message = ctx.message(raw)?;
                    ctx.guard(f(Call { method: ctx.route.method.clone(), metadata, message })).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Handler(_) => return Err(ctx.mismatch()),
            };
            Ok(Response::new(ctx.limit_stream(replies)))
        })
    }
}

impl ClientStreamingService<Bytes> for Svc {
    type Response = Reply;
    type Future = BoxFuture<Result<Response<Reply>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (metadata, _, stream) = request.into_parts();
        let ctx = self.0.clone();
        Box::pin(async move {
            let reply = match &ctx.route.target {
                Target::Store(conv) => {
                    // All or nothing: read (and validate) every request before storing any.
                    let frames: Vec<Bytes> = Ctx::frames(stream).try_collect().await?;
                    let inputs = frames.into_iter().map(|raw| ctx.store_input(raw)).collect::<Result<Vec<_>, _>>()?;
                    conv.bulk(&ctx.store, inputs)?
                }
                Target::Handler(Handler::ClientStreaming(f)) => {
                    let message = ctx.request_stream(stream);
                    ctx.guard(f(Call { method: ctx.route.method.clone(), metadata, message })).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Handler(_) => return Err(ctx.mismatch()),
            };
            Ok(Response::new(ctx.limit(reply)?))
        })
    }
}

impl StreamingService<Bytes> for Svc {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (metadata, _, stream) = request.into_parts();
        let ctx = self.0.clone();
        Box::pin(async move {
            let replies = match &ctx.route.target {
                Target::Handler(Handler::Bidi(f)) => {
                    let message = ctx.request_stream(stream);
                    ctx.guard(f(Call { method: ctx.route.method.clone(), metadata, message })).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Store(_) | Target::Handler(_) => return Err(ctx.mismatch()),
            };
            Ok(Response::new(ctx.limit_stream(replies)))
        })
    }
}

/// Parses `grpc-timeout` (at most 8 digits and a unit: H M S m u n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
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
