//! Protocol adapters: the only code that knows HTTP. The [`Router`] is the
//! service hyper calls for every request (HTTP/1.1 or HTTP/2), behind CORS when
//! configured; it picks an adapter by content-type (gRPC, gRPC-Web, Connect,
//! HTTP/JSON), and each adapter turns requests into calls for the call stack
//! and answers back into its protocol. Adding a protocol is a module here plus
//! one variant in [`Protocol::of`] and its arm in `Dispatch::dispatch`.

pub(crate) mod admin;
mod connect;
mod cors;
pub(crate) mod grpc;
mod grpc_web;
mod json;
pub(crate) mod metrics;
mod reflection;
mod template;
pub(crate) mod web;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use tonic::body::Body;

pub(crate) use cors::parse_origin;
pub use grpc::Compression;
pub use web::JsonNames;

/// The protocols served, by request content-type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `application/grpc` and `application/grpc+<codec>`.
    Grpc,
    /// `application/grpc-web`, `+proto`, and the base64 `-text` forms, any HTTP version.
    GrpcWeb,
    /// Connect: `application/connect+*` streams, unary `application/proto`, unary
    /// `application/json` with `connect-protocol-version`, GET with `connect=v1`.
    Connect,
    /// HTTP/JSON: `application/json` without Connect's header, or no content-type
    /// (GET, DELETE): google.api.http rules and `POST /pkg.Service/Method`.
    Json,
    /// Anything else: answered 415 (the gRPC spec's answer to a foreign content-type).
    Unsupported,
}

impl Protocol {
    fn of(req: &http::Request<Incoming>) -> Protocol {
        let ct = req.headers().get(http::header::CONTENT_TYPE).map(http::HeaderValue::as_bytes).unwrap_or_default();
        match ct.strip_prefix(b"application/grpc") {
            Some(rest) if rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";") => Protocol::Grpc,
            Some(_) if grpc_web::is_grpc_web(ct) => Protocol::GrpcWeb,
            Some(_) => Protocol::Unsupported,
            None => Self::of_web(req, ct),
        }
    }

    /// The protocols besides gRPC (off gRPC's path: called only when the
    /// content-type is not `application/grpc*`).
    #[cold]
    fn of_web(req: &http::Request<Incoming>, ct: &[u8]) -> Protocol {
        if connect::is_connect(req, ct) {
            Protocol::Connect
        } else if ct.is_empty() || connect::Codec::of_unary(ct) == Some(connect::Codec::Json) {
            Protocol::Json
        } else {
            Protocol::Unsupported
        }
    }
}

/// The service hyper calls for every request: the protocol dispatch, behind
/// CORS when `--cors-origin` is given.
#[derive(Clone)]
pub(crate) struct Router {
    dispatch: Dispatch,
    cors: Option<tower_http::cors::Cors<Dispatch>>,
    cors_layer: Option<tower_http::cors::CorsLayer>,
}

/// Picks the adapter for a request by content-type.
#[derive(Clone)]
struct Dispatch {
    grpc: Arc<grpc::GrpcAdapter>,
    grpc_web: grpc_web::GrpcWeb,
    web: Arc<web::WebAdapter>,
    json: Arc<json::JsonAdapter>,
    /// The client: routers are cloned per connection ([`Router::for_peer`]).
    peer: crate::call::Peer,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("cors", &self.cors.is_some()).finish_non_exhaustive()
    }
}

impl Router {
    pub(crate) fn new(grpc: grpc::GrpcAdapter, web: web::WebAdapter) -> Self {
        let grpc = Arc::new(grpc);
        let cors_layer = cors::layer(&web.cors_origins);
        let web = Arc::new(web);
        let json = Arc::new(json::JsonAdapter::new(web.clone()));
        let dispatch =
            Dispatch { grpc_web: grpc_web::service(grpc.clone()), grpc, web, json, peer: Default::default() };
        let cors = cors_layer.as_ref().map(|layer| tower_layer::Layer::layer(layer, dispatch.clone()));
        Self { dispatch, cors, cors_layer }
    }

    /// This router for one connection, from `peer`.
    pub(crate) fn for_peer(&self, peer: crate::call::Peer) -> Self {
        let dispatch = Dispatch { peer, ..self.dispatch.clone() };
        let cors = self.cors_layer.as_ref().map(|layer| tower_layer::Layer::layer(layer, dispatch.clone()));
        Self { dispatch, cors, cors_layer: self.cors_layer.clone() }
    }
}

type RouterFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RouterFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        match &self.cors {
            None => self.dispatch.dispatch(req),
            Some(cors) => Box::pin(tower_service::Service::call(&mut cors.clone(), req)),
        }
    }
}

impl tower_service::Service<http::Request<Incoming>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> RouterFuture {
        self.dispatch(req)
    }
}

impl Dispatch {
    fn dispatch(&self, mut req: http::Request<Incoming>) -> RouterFuture {
        let protocol = Protocol::of(&req);
        if !matches!(protocol, Protocol::Grpc) {
            // The web adapters find the client in the request (one allocation, off gRPC's path).
            req.extensions_mut().insert(self.peer.clone());
        }
        match protocol {
            Protocol::Grpc if req.version() == http::Version::HTTP_2 => {
                let (grpc, peer) = (self.grpc.clone(), self.peer.clone());
                Box::pin(async move { Ok(grpc.serve(req, peer).await) })
            }
            Protocol::Grpc => Box::pin(std::future::ready(Ok(plain(
                http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2 (cleartext HTTP/2 with prior knowledge, or TLS with ALPN h2)\n",
            )))),
            Protocol::GrpcWeb => {
                let fut = tower_service::Service::call(&mut self.grpc_web.clone(), req);
                Box::pin(async move {
                    match fut.await {
                        Ok(r) => Ok(r),
                        Err(never) => match never {},
                    }
                })
            }
            Protocol::Connect if reflection::is_reflection(req.uri().path()) => {
                let grpc = self.grpc.clone();
                Box::pin(async move { Ok(connect::reflection(&grpc, req).await) })
            }
            Protocol::Connect => {
                let web = self.web.clone();
                Box::pin(async move { Ok(connect::serve(&web, req).await) })
            }
            Protocol::Json => {
                let json = self.json.clone();
                Box::pin(async move {
                    Ok(match json.serve(req).await {
                        Ok(res) => res,
                        Err(req) => unmatched(&req),
                    })
                })
            }
            Protocol::Unsupported => {
                Box::pin(std::future::ready(Ok(plain(http::StatusCode::UNSUPPORTED_MEDIA_TYPE, SERVED))))
            }
        }
    }
}

/// A request no protocol serves: JSON ones learn that no rule matches (404);
/// others, what is served here (415).
fn unmatched(req: &http::Request<Incoming>) -> http::Response<Body> {
    if req.headers().contains_key(http::header::CONTENT_TYPE) {
        let what = format!("no google.api.http rule or method matches {} {}", req.method(), req.uri().path());
        return json::not_found(what);
    }
    plain(http::StatusCode::UNSUPPORTED_MEDIA_TYPE, SERVED)
}

/// What is served here, for clients that speak none of it.
const SERVED: &str = "protoserve serves gRPC (content-type application/grpc over HTTP/2), gRPC-Web \
                      (application/grpc-web, application/grpc-web-text), Connect (application/proto, \
                      application/json, application/connect+proto, application/connect+json) and \
                      HTTP/JSON (google.api.http rules, POST /package.Service/Method) here\n";

/// A plain-text HTTP answer (for clients that do not speak a served protocol).
fn plain(status: http::StatusCode, text: &'static str) -> http::Response<Body> {
    let mut res = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(text.as_bytes()))));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}
