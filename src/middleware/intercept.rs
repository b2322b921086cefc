//! Interceptors: a function that sees each call's method and request metadata
//! before anything answers it, and either lets it through (possibly adding
//! metadata the responder sees) or rejects it with a status. `Builder::interceptor`
//! installs one as a layer.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready};
use prost_reflect::MethodDescriptor;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tower_layer::Layer;
use tower_service::Service;

use crate::Error;
use crate::call::{Answer, CallRequest};

type InterceptFn = dyn Fn(&MethodDescriptor, &mut MetadataMap) -> Result<(), Status> + Send + Sync;

/// A layer running an interceptor before the rest of the stack: `Ok(())` lets
/// the call through (with whatever the interceptor added to the metadata),
/// `Err(status)` answers that status to the client unchanged.
#[derive(Clone)]
pub struct InterceptLayer(Arc<InterceptFn>);

impl fmt::Debug for InterceptLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InterceptLayer")
    }
}

impl InterceptLayer {
    /// Wraps an interceptor function.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&MethodDescriptor, &mut MetadataMap) -> Result<(), Status> + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }
}

impl<S> Layer<S> for InterceptLayer {
    type Service = Intercept<S>;

    fn layer(&self, inner: S) -> Intercept<S> {
        Intercept { f: self.0.clone(), inner }
    }
}

/// The service [`InterceptLayer`] makes.
#[derive(Clone)]
pub struct Intercept<S> {
    f: Arc<InterceptFn>,
    inner: S,
}

impl<S> fmt::Debug for Intercept<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Intercept")
    }
}

impl<S> Service<CallRequest> for Intercept<S>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
{
    type Response = Answer;
    type Error = Error;
    type Future = Either<S::Future, Ready<Result<Answer, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: CallRequest) -> Self::Future {
        let method = call.route.method.clone();
        match (self.f)(&method, call.metadata_mut()) {
            Ok(()) => Either::Left(self.inner.call(call)),
            Err(status) => Either::Right(futures_util::future::ready(Err(Error::from(status)))),
        }
    }
}
