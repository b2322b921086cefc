//! The per-RPC tracing span (`rpc`, with the method and schema generation) and,
//! at debug level, one line per RPC saying how its answer began and how long it took.
//! With `--otlp-endpoint` (`crate::otlp`), the span carries OpenTelemetry's RPC
//! attributes, continues an incoming `traceparent`, and lasts until the last reply.

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
        if let Some(otlp) = crate::otlp::active() {
            return futures_util::future::Either::Right(exported(otlp, &mut self.0, call));
        }
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

/// The `rpc` span exported over OTLP: OTel RPC semantic-convention attributes,
/// the parent from `traceparent`, and the gRPC status once the call (or its
/// reply stream) ends.
fn exported<S>(
    otlp: &'static crate::otlp::Settings,
    inner: &mut S,
    call: CallRequest,
) -> BoxFuture<Result<Answer, Error>>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
    S::Future: Send + 'static,
{
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let path = call.path();
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::debug_span!(
        "rpc",
        method = %path,
        generation = call.generation(),
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        server.address = %otlp.listen.ip(),
        server.port = Empty,
        client.address = Empty,
        client.port = Empty,
    );
    if otlp.listen.port() != 0 {
        span.record("server.port", i64::from(otlp.listen.port()));
    }
    if let Some(peer) = call.peer_addr() {
        span.record("client.address", tracing::field::display(peer.ip()));
        span.record("client.port", i64::from(peer.port()));
    }
    let parent = otlp.propagator.extract(&Metadata(call.metadata()));
    // Not found only when the OTel layer is filtered out: the span is then a plain one.
    let _ = span.set_parent(parent);
    let fut = inner.call(call);
    let in_span = span.clone();
    Box::pin(
        async move {
            match fut.await {
                Err(e) => {
                    record_status(&span, e.code());
                    Err(e)
                }
                Ok(answer) => Ok(match &answer.body {
                    crate::call::Output::One(_) => {
                        record_status(&span, tonic::Code::Ok);
                        answer
                    }
                    crate::call::Output::Many(_) => answer.map_stream(|s| -> crate::call::Replies {
                        Box::pin(SpannedStream { inner: s, span: Some(span) })
                    }),
                }),
            }
        }
        .instrument(in_span),
    )
}

/// The gRPC status on the span; OTel's error status for the codes the RPC
/// conventions call server errors.
fn record_status(span: &tracing::Span, code: tonic::Code) {
    use tonic::Code;
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// A reply stream that keeps its call's span open and records the status at its end.
struct SpannedStream {
    inner: crate::call::Replies,
    span: Option<tracing::Span>,
}

impl futures_util::Stream for SpannedStream {
    type Item = Result<crate::call::Reply, Error>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = {
            let _entered = this.span.as_ref().map(tracing::Span::enter);
            std::task::ready!(this.inner.as_mut().poll_next(cx))
        };
        let code = match &item {
            Some(Ok(_)) => return Poll::Ready(item),
            Some(Err(e)) => e.code(),
            None => tonic::Code::Ok,
        };
        if let Some(span) = this.span.take() {
            record_status(&span, code);
        }
        Poll::Ready(item)
    }
}

impl Drop for SpannedStream {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            record_status(&span, tonic::Code::Cancelled);
        }
    }
}

/// Request metadata as an OTel propagation carrier (ASCII values only).
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
