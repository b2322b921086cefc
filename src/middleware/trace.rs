//! The per-RPC tracing span (`rpc`, with the method and schema generation) and,
//! at debug level, one line per RPC saying how its answer began and how long it took.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

use crate::Error;
use crate::call::{Answer, BoxFuture, CallRequest};

/// Wraps each call in an `rpc` span.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace(inner)
    }
}

/// The service [`TraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct Trace<S>(S);

impl<S> Service<CallRequest> for Trace<S>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Error;
    type Future =
        futures_util::future::Either<tracing::instrument::Instrumented<S::Future>, BoxFuture<Result<Answer, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: CallRequest) -> Self::Future {
        let span = tracing::debug_span!("rpc", method = %call.path(), generation = call.generation());
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return futures_util::future::Either::Left(self.0.call(call).instrument(span));
        }
        let started = std::time::Instant::now();
        let fut = self.0.call(call);
        futures_util::future::Either::Right(Box::pin(
            async move {
                let result = fut.await;
                let took = started.elapsed();
                match &result {
                    Ok(_) => tracing::debug!(?took, "answered"),
                    Err(e) => tracing::debug!(?took, error = %e, "failed"),
                }
                result
            }
            .instrument(span),
        ))
    }
}
