//! gRPC-Web (`application/grpc-web`, `+proto`, and the base64 `-text` forms) over
//! HTTP/1.1 or HTTP/2: tonic-web turns the request into gRPC framing (decoding
//! base64 for `-text`) and writes the response's trailers into the body as the
//! protocol says; in between, the call runs through the gRPC adapter itself
//! (health, reflection, the same snapshot load, route lookup, framing, limits
//! and call stack).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower_layer::Layer as _;

use super::grpc::GrpcAdapter;
use crate::call::BoxFuture;

/// The gRPC adapter as the service tonic-web wraps.
#[derive(Clone)]
pub(crate) struct WebCalls(Arc<GrpcAdapter>);

impl tower_service::Service<http::Request<Body>> for WebCalls {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let grpc = self.0.clone();
        let peer = req.extensions().get::<crate::call::Peer>().cloned().unwrap_or_default();
        Box::pin(async move { Ok(grpc.serve(req, peer).await) })
    }
}

/// The gRPC-Web service.
pub(crate) type GrpcWeb = tonic_web::GrpcWebService<WebCalls>;

pub(crate) fn service(grpc: Arc<GrpcAdapter>) -> GrpcWeb {
    tonic_web::GrpcWebLayer::new().layer(WebCalls(grpc))
}

/// Whether `ct` (the whole content-type) is one of the four gRPC-Web types
/// tonic-web translates.
pub(crate) fn is_grpc_web(ct: &[u8]) -> bool {
    matches!(
        ct,
        b"application/grpc-web"
            | b"application/grpc-web+proto"
            | b"application/grpc-web-text"
            | b"application/grpc-web-text+proto"
    )
}
