//! gRPC server reflection (v1 and v1alpha), built per snapshot from the schema's
//! descriptors, so reflection always describes exactly the live schema.

use std::convert::Infallible;
use std::sync::Arc;

use crate::call::BoxFuture;

use hyper::body::Incoming;
use prost_reflect::DescriptorPool;
use tonic::body::Body;

/// A type-erased service (tonic-reflection's service types cannot be named).
type Erased = Arc<dyn Fn(http::Request<Incoming>) -> BoxFuture<http::Response<Body>> + Send + Sync>;

fn erase<S>(svc: S) -> Erased
where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    Arc::new(move |req| {
        let fut = svc.clone().call(req);
        Box::pin(async move {
            match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        })
    })
}

/// Both reflection services for one schema.
#[derive(Clone)]
pub(crate) struct Reflection {
    v1: Erased,
    v1alpha: Erased,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reflection")
    }
}

/// Path prefixes the reflection services answer.
pub(crate) const V1_PREFIX: &str = "/grpc.reflection.v1.ServerReflection/";
pub(crate) const V1ALPHA_PREFIX: &str = "/grpc.reflection.v1alpha.ServerReflection/";

impl Reflection {
    pub(crate) fn new(pool: &DescriptorPool) -> Result<Self, String> {
        let encoded = pool.encode_to_vec();
        let with_health = pool.get_service_by_name("grpc.health.v1.Health").is_none();
        let builder = || {
            let mut b = tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(&encoded);
            if with_health {
                b = b.register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            }
            b
        };
        Ok(Self {
            v1: erase(builder().build_v1().map_err(|e| e.to_string())?),
            v1alpha: erase(builder().build_v1alpha().map_err(|e| e.to_string())?),
        })
    }

    /// Answers a request whose path starts with one of the prefixes above.
    pub(crate) async fn call(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        if req.uri().path().starts_with(V1_PREFIX) { (self.v1)(req).await } else { (self.v1alpha)(req).await }
    }
}
