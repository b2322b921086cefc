//! The middleware seam: every call passes through a tower stack of layers over
//! [`CallRequest`] -> [`Answer`] before the call core runs its responder. Layers
//! see the method descriptor, the metadata and the deadline, never HTTP.
//!
//! The stack, outermost first: [`TraceLayer`] (the per-RPC span and a debug line),
//! [`ObserveLayer`] when request logs or metrics are on (one info line per RPC,
//! Prometheus counters), [`DeadlineLayer`] (the whole call, streamed replies
//! included), token auth when on ([`TokenAuth`]), the layers added with
//! `Builder::layer` (and interceptors, [`InterceptLayer`]) in the order added,
//! then the core. With the admin API on, [`JournalLayer`] wraps it all.

mod auth;
mod deadline;
mod intercept;
mod journal;
pub mod metrics;
mod observe;
mod trace;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

pub use auth::{AuthLayer, TokenAuth, UNAUTHENTICATED_MESSAGE};
pub use deadline::DeadlineLayer;
pub use intercept::InterceptLayer;
pub use journal::JournalLayer;
pub use metrics::Metrics;
pub use observe::ObserveLayer;
pub use trace::TraceLayer;

use crate::Error;
use crate::call::{Answer, BoxFuture, CallRequest, Core};

type CallFn = dyn Fn(CallRequest) -> BoxFuture<Result<Answer, Error>> + Send + Sync;

/// A type-erased call service: what layers wrap and what protocol adapters call.
/// Cloning is one reference-count bump.
#[derive(Clone)]
pub struct CallService(Arc<CallFn>);

impl fmt::Debug for CallService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallService")
    }
}

impl CallService {
    /// Erases a tower service over calls.
    pub fn new<S>(svc: S) -> Self
    where
        S: Service<CallRequest, Response = Answer, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        CallService(Arc::new(move |call| {
            let mut svc = svc.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                svc.call(call).await
            })
        }))
    }

    /// Runs one call through the stack.
    pub fn run(&self, call: CallRequest) -> BoxFuture<Result<Answer, Error>> {
        (self.0)(call)
    }
}

impl Service<CallRequest> for CallService {
    type Response = Answer;
    type Error = Error;
    type Future = BoxFuture<Result<Answer, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: CallRequest) -> Self::Future {
        self.run(call)
    }
}

/// A layer added with `Builder::layer`, type-erased.
pub(crate) type UserLayer = Arc<dyn Fn(CallService) -> CallService + Send + Sync>;

/// Erases a tower layer over call services.
pub(crate) fn user_layer<L>(layer: L) -> UserLayer
where
    L: Layer<CallService> + Send + Sync + 'static,
    L::Service: Service<CallRequest, Response = Answer, Error = Error> + Clone + Send + Sync + 'static,
    <L::Service as Service<CallRequest>>::Future: Send + 'static,
{
    Arc::new(move |inner| CallService::new(layer.layer(inner)))
}

/// Builds the call stack around the core (`observe`: request logs and metrics,
/// not installed when inactive; `journal`: the request journal, outermost,
/// only when the admin API is on).
pub(crate) fn stack(
    core: Core,
    layers: &[UserLayer],
    observe: &ObserveLayer,
    journal: Option<JournalLayer>,
) -> CallService {
    let calls = stack_inner(core, layers, observe);
    match journal {
        Some(j) => CallService::new(j.layer(calls)),
        None => calls,
    }
}

fn stack_inner(core: Core, layers: &[UserLayer], observe: &ObserveLayer) -> CallService {
    fn outer<S>(inner: S, observe: &ObserveLayer) -> CallService
    where
        S: Service<CallRequest, Response = Answer, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        if observe.is_active() {
            CallService::new(TraceLayer.layer(observe.layer(DeadlineLayer.layer(inner))))
        } else {
            CallService::new(TraceLayer.layer(DeadlineLayer.layer(inner)))
        }
    }
    if layers.is_empty() {
        // No user layers: the core's future is not boxed twice.
        return outer(core, observe);
    }
    let inner = layers.iter().rev().fold(CallService::new(core), |svc, l| l(svc));
    outer(inner, observe)
}
