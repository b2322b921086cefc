//! Request logs and metrics: [`ObserveLayer`] times each call from its start to
//! its last reply (or failure, or cancellation), counts messages and bytes both
//! ways, and then writes one `info` line (method, gRPC code, duration, peer,
//! bytes, schema generation) and/or updates the [`Metrics`]. It sits outside
//! the deadline layer, so deadline failures are seen with their code. Not
//! installed at all when both logs and metrics are off.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use tower_layer::Layer;
use tower_service::Service;

use super::metrics::{MethodMetrics, Metrics};
use crate::Error;
use crate::call::{Answer, CallRequest, Output, Replies, Reply};

/// What to observe.
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {
    log: bool,
    metrics: Option<Arc<Metrics>>,
}

impl ObserveLayer {
    /// One `info` line per RPC (`log`), metrics (`metrics`), or both.
    pub fn new(log: bool, metrics: Option<Arc<Metrics>>) -> Self {
        Self { log, metrics }
    }

    /// The metrics, when on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Whether there is anything to do (else the layer is not installed).
    pub fn is_active(&self) -> bool {
        self.log || self.metrics.is_some()
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { layer: self.clone(), inner }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    layer: ObserveLayer,
    inner: S,
}

/// Request bytes of a client stream, counted as they arrive
/// (shared with the request stream; only allocated for logged client streams).
#[derive(Debug, Default)]
struct Tally {
    bytes: AtomicU64,
}

/// Everything needed to report a call once it is over.
struct Report {
    started: Instant,
    log: bool,
    path: Arc<str>,
    generation: u64,
    peer: Option<SocketAddr>,
    method: Option<Arc<MethodMetrics>>,
    /// Request bytes when the request was one message, else counted in `tally`.
    request_bytes: u64,
    tally: Option<Arc<Tally>>,
    sent: u64,
    sent_bytes: u64,
}

impl Report {
    fn reply(&mut self, reply: &Reply) {
        self.sent += 1;
        if let Some(m) = &self.method {
            m.sent.inc();
        }
        if self.log {
            self.sent_bytes += reply.encoded_len() as u64;
        }
    }

    fn done(self, code: tonic::Code) {
        let took = self.started.elapsed();
        if let Some(m) = &self.method {
            m.handled(code, took.as_secs_f64());
        }
        if self.log {
            let request_bytes = self.tally.as_ref().map_or(self.request_bytes, |t| t.bytes.load(Ordering::Relaxed));
            crate::logs::RpcLine {
                method: &self.path,
                code,
                micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                peer: self.peer,
                request_bytes,
                response_bytes: self.sent_bytes,
                generation: self.generation,
            }
            .log();
        }
    }
}

impl<S> Service<CallRequest> for Observe<S>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: CallRequest) -> Self::Future {
        let started = Instant::now();
        let method = self.layer.metrics.as_ref().map(|m| m.method(call.path(), call.route.kind));
        if let Some(m) = &method {
            m.started.inc();
        }
        let log = self.layer.log;
        let tally = (log && call.route.kind.client_streaming()).then(|| Arc::new(Tally::default()));
        let counter = method.as_ref().map(|m| m.received.clone());
        let request_bytes = {
            let tally = tally.clone();
            call.inspect_requests(move |len| {
                if let Some(c) = &counter {
                    c.inc();
                }
                if let Some(t) = &tally {
                    t.bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
            })
        };
        let report = Report {
            started,
            log,
            path: call.route.path.clone(),
            generation: call.generation(),
            peer: call.peer_addr(),
            method,
            request_bytes: request_bytes as u64,
            tally,
            sent: 0,
            sent_bytes: 0,
        };
        ObserveFuture { inner: self.inner.call(call), report: Some(report) }
    }
}

pin_project_lite::pin_project! {
    /// An observed call's future (no allocation of its own): reports the call
    /// when its answer or failure comes, and as CANCELLED when dropped before
    /// (the client went away).
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        report: Option<Report>,
    }

    impl<F> PinnedDrop for ObserveFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(r) = this.project().report.take() {
                r.done(tonic::Code::Cancelled);
            }
        }
    }
}

impl<F> std::future::Future for ObserveFuture<F>
where
    F: std::future::Future<Output = Result<Answer, Error>>,
{
    type Output = Result<Answer, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(mut report) = this.report.take() else { return Poll::Ready(result) };
        Poll::Ready(match result {
            Err(e) => {
                report.done(e.code());
                Err(e)
            }
            Ok(answer) => Ok(match &answer.body {
                Output::One(reply) => {
                    report.reply(reply);
                    report.done(tonic::Code::Ok);
                    answer
                }
                Output::Many(_) => {
                    answer.map_stream(|s| -> Replies { Box::pin(Watched { inner: s, report: Some(report) }) })
                }
            }),
        })
    }
}

/// A reply stream, reported when it ends, fails, or is dropped early (CANCELLED).
struct Watched {
    inner: Replies,
    report: Option<Report>,
}

impl Stream for Watched {
    type Item = Result<Reply, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = std::task::ready!(this.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(reply)) => {
                if let Some(r) = &mut this.report {
                    r.reply(reply);
                }
            }
            Some(Err(e)) => {
                if let Some(r) = this.report.take() {
                    r.done(e.code());
                }
            }
            None => {
                if let Some(r) = this.report.take() {
                    r.done(tonic::Code::Ok);
                }
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(r) = self.report.take() {
            r.done(tonic::Code::Cancelled);
        }
    }
}
