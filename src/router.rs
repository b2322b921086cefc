//! The one catch-all gRPC service: look the path up in the live snapshot, pick the
//! RPC kind from the method, validate, call the handler, and drive tonic's `Grpc`
//! with the dynamic codec. Every failure leaves here as a gRPC status; nothing
//! errors towards hyper.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use hyper::body::Incoming;
use prost_reflect::DynamicMessage;
use tonic::body::Body;
use tonic::server::{ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tower_service::Service as _;
use tracing::Instrument as _;

use crate::codec::{self, DynamicCodec};
use crate::handler::{BoxFuture, Call, Handler, Kind, Replies, Reply, RequestStream};
use crate::reflection::{V1_PREFIX, V1ALPHA_PREFIX};
use crate::registry::{Registry, Route, Snapshot, Target};
use crate::validate;

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
        let call = dispatch(snap, route, req, self.limits, self.registry.clone()).instrument(span);
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

async fn dispatch(
    snap: Arc<Snapshot>,
    route: Arc<Route>,
    req: http::Request<Incoming>,
    limits: Limits,
    registry: Arc<Registry>,
) -> http::Response<Body> {
    let codec = DynamicCodec::new(route.method.input(), route.path.clone());
    // tonic enforces the receive limit while framing; the send limit is checked in `Svc`.
    let mut grpc = Grpc::new(codec).max_decoding_message_size(limits.max_recv).max_encoding_message_size(usize::MAX);
    let svc = Svc { snap, route, registry, max_send: limits.max_send };
    let mut response = match svc.route.kind {
        Kind::Unary => grpc.unary(svc, req).await,
        Kind::ServerStreaming => grpc.server_streaming(svc, req).await,
        Kind::ClientStreaming => grpc.client_streaming(svc, req).await,
        Kind::Bidi => grpc.streaming(svc, req).await,
    };
    codec::fix_oversize_headers(response.headers_mut());
    response
}

/// One call's view of the world: its snapshot, its route, the shared store.
struct Svc {
    snap: Arc<Snapshot>,
    route: Arc<Route>,
    registry: Arc<Registry>,
    max_send: usize,
}

impl Svc {
    fn validate(&self, msg: &DynamicMessage) -> Result<(), Status> {
        if self.route.validate { validate::check(&self.snap.validator, msg) } else { Ok(()) }
    }

    /// The request stream of a streaming call, each message validated as it arrives.
    fn request_stream(&self, stream: Streaming<DynamicMessage>) -> RequestStream {
        let snap = self.snap.clone();
        let validate = self.route.validate;
        Box::pin(stream.map(move |r| match r {
            Ok(m) if validate => validate::check(&snap.validator, &m).map(|()| m),
            Ok(m) => Ok(m),
            Err(e) => Err(codec::fix_oversize(e)),
        }))
    }

    fn mismatch(&self) -> Status {
        Status::internal(format!("{}: handler kind does not match the method", self.route.path))
    }
}

fn limit_stream(replies: Replies, max: usize) -> Replies {
    Box::pin(replies.map(move |r| r.and_then(|r| codec::check_reply_size(r, max))))
}

fn not_implemented(msg: &str) -> Status {
    Status::unimplemented(msg.to_owned())
}

impl UnaryService<DynamicMessage> for Svc {
    type Response = Reply;
    type Future = BoxFuture<Result<Response<Reply>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let (metadata, _, message) = request.into_parts();
        let checked = self.validate(&message);
        let route = self.route.clone();
        let store = self.registry.store.clone();
        let mismatch = self.mismatch();
        let max_send = self.max_send;
        Box::pin(async move {
            checked?;
            let reply = match &route.target {
                Target::Store(plan) => plan.unary(&store, message)?,
                Target::Handler(Handler::Unary(f)) => {
                    f(Call { method: route.method.clone(), metadata, message }).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Handler(_) => return Err(mismatch),
            };
            Ok(Response::new(codec::check_reply_size(reply, max_send)?))
        })
    }
}

impl ServerStreamingService<DynamicMessage> for Svc {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let (metadata, _, message) = request.into_parts();
        let checked = self.validate(&message);
        let route = self.route.clone();
        let store = self.registry.store.clone();
        let mismatch = self.mismatch();
        let max_send = self.max_send;
        Box::pin(async move {
            checked?;
            let replies: Replies = match &route.target {
                Target::Store(plan) => {
                    let page = plan.stream(&store, &message)?;
                    Box::pin(futures_util::stream::iter(page.into_iter().map(|b| Ok(Reply::Encoded(b)))))
                }
                Target::Handler(Handler::ServerStreaming(f)) => {
                    f(Call { method: route.method.clone(), metadata, message }).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Handler(_) => return Err(mismatch),
            };
            Ok(Response::new(limit_stream(replies, max_send)))
        })
    }
}

impl ClientStreamingService<DynamicMessage> for Svc {
    type Response = Reply;
    type Future = BoxFuture<Result<Response<Reply>, Status>>;

    fn call(&mut self, request: Request<Streaming<DynamicMessage>>) -> Self::Future {
        let (metadata, _, stream) = request.into_parts();
        let stream = self.request_stream(stream);
        let route = self.route.clone();
        let store = self.registry.store.clone();
        let mismatch = self.mismatch();
        let max_send = self.max_send;
        Box::pin(async move {
            let reply = match &route.target {
                Target::Store(plan) => {
                    // All or nothing: read (and validate) every request before storing any.
                    let all: Vec<DynamicMessage> = stream.try_collect().await?;
                    plan.bulk(&store, all)?
                }
                Target::Handler(Handler::ClientStreaming(f)) => {
                    f(Call { method: route.method.clone(), metadata, message: stream }).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Handler(_) => return Err(mismatch),
            };
            Ok(Response::new(codec::check_reply_size(reply, max_send)?))
        })
    }
}

impl StreamingService<DynamicMessage> for Svc {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<Streaming<DynamicMessage>>) -> Self::Future {
        let (metadata, _, stream) = request.into_parts();
        let stream = self.request_stream(stream);
        let route = self.route.clone();
        let mismatch = self.mismatch();
        let max_send = self.max_send;
        Box::pin(async move {
            let replies = match &route.target {
                Target::Handler(Handler::Bidi(f)) => {
                    f(Call { method: route.method.clone(), metadata, message: stream }).await?
                }
                Target::Unimplemented(m) => return Err(not_implemented(m)),
                Target::Store(_) | Target::Handler(_) => return Err(mismatch),
            };
            Ok(Response::new(limit_stream(replies, max_send)))
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
