//! Protocol adapters: the only code that knows HTTP. The [`Router`] is the
//! service hyper calls for every request (HTTP/1.1 or HTTP/2); it picks an
//! adapter by content-type, and each adapter turns requests into calls for the
//! call stack and answers back into its protocol. Adding a protocol is a module
//! here plus one arm in [`Protocol::of`].

pub(crate) mod grpc;
pub(crate) mod metrics;
mod reflection;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use tonic::body::Body;

pub use grpc::Compression;

/// The protocols served, by request content-type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `application/grpc` and `application/grpc+<codec>`.
    Grpc,
    /// Anything else: answered 415 (the gRPC spec's answer to a foreign content-type).
    Unsupported,
}

impl Protocol {
    fn of(req: &http::Request<Incoming>) -> Protocol {
        let ct = req.headers().get(http::header::CONTENT_TYPE).map(http::HeaderValue::as_bytes).unwrap_or_default();
        match ct.strip_prefix(b"application/grpc") {
            Some(rest) if rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";") => Protocol::Grpc,
            _ => Protocol::Unsupported,
        }
    }
}

/// The service hyper calls for every request.
#[derive(Clone)]
pub(crate) struct Router {
    grpc: Arc<grpc::GrpcAdapter>,
    /// The client's address: routers are cloned per connection.
    peer: crate::call::Peer,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub(crate) fn new(grpc: grpc::GrpcAdapter) -> Self {
        Self { grpc: Arc::new(grpc), peer: Default::default() }
    }

    /// This router for one connection, from `peer`.
    pub(crate) fn for_peer(&self, peer: crate::call::Peer) -> Self {
        Self { grpc: self.grpc.clone(), peer }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        match Protocol::of(&req) {
            Protocol::Grpc if req.version() == http::Version::HTTP_2 => {
                let (grpc, peer) = (self.grpc.clone(), self.peer.clone());
                Box::pin(async move { Ok(grpc.serve(req, peer).await) })
            }
            Protocol::Grpc => Box::pin(std::future::ready(Ok(plain(
                http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2 (cleartext HTTP/2 with prior knowledge, or TLS with ALPN h2)\n",
            )))),
            Protocol::Unsupported => Box::pin(std::future::ready(Ok(plain(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "protoserve serves gRPC here: send content-type application/grpc over HTTP/2\n",
            )))),
        }
    }
}

/// A plain-text HTTP answer (for clients that do not speak a served protocol).
fn plain(status: http::StatusCode, text: &'static str) -> http::Response<Body> {
    let mut res = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(text.as_bytes()))));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}
