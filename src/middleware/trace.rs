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
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    Box::pin(
        async move {
            let result = fut.await;
            // The same debug line as without export.
            if let Some(started) = started {
                let took = started.elapsed();
                match &result {
                    Ok(_) => tracing::debug!(?took, "answered"),
                    Err(e) => tracing::debug!(?took, error = %e, "failed"),
                }
            }
            match result {
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

/// Request metadata as an OTel propagation carrier (ASCII values only; a
/// `traceparent` only when it is well formed, see [`well_formed_traceparent`]).
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key).and_then(|v| v.to_str().ok())?;
        if key.eq_ignore_ascii_case("traceparent") && !well_formed_traceparent(value) {
            return None;
        }
        Some(value)
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

/// W3C Trace Context's `traceparent`: `VERSION-TRACEID-PARENTID-FLAGS`, lowercase
/// hex of exactly 2, 32, 16 and 2 digits; version `ff` is invalid, version `00`
/// has nothing after the flags, a later version may add `-...`. (The SDK's
/// parser accepts shorter ids and a `+` sign, which the spec does not.)
fn well_formed_traceparent(value: &str) -> bool {
    let b = value.trim_matches([' ', '\t']).as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    b.len() >= 55
        && hex(0..2)
        && b[2] == b'-'
        && hex(3..35)
        && b[35] == b'-'
        && hex(36..52)
        && b[52] == b'-'
        && hex(53..55)
        && &b[0..2] != b"ff"
        && (b.len() == 55 || (&b[0..2] != b"00" && b[55] == b'-'))
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tonic::metadata::MetadataMap;

    use super::Metadata;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// The remote parent found in metadata carrying these `traceparent` values.
    fn parent(values: &[&str]) -> Option<opentelemetry::trace::SpanContext> {
        let mut md = MetadataMap::new();
        for v in values {
            md.append("traceparent", v.parse().ok()?);
        }
        let cx = TraceContextPropagator::new().extract(&Metadata(&md));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    #[test]
    fn traceparent_in_metadata_is_the_remote_parent() {
        let sc = parent(&[VALID]).unwrap();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            &VALID.replace("0af7", "xyz0"),
            &VALID.replace("0af7", "af7"),
            &VALID.replace("0af7", "+af7"),
            &VALID.replace("0af7", "0AF7"),
            &VALID.replace("00-", "ff-"),
            &format!("{VALID}-00"),
            "00-1-2-01",
        ] {
            assert!(parent(&[bad]).is_none(), "{bad:?}");
        }
        assert!(parent(&["00-00000000000000000000000000000000-b7ad6b7169203331-01"]).is_none());
        // A later version may carry more fields; surrounding blanks are allowed.
        assert!(parent(&[&format!("{}-what-ever", VALID.replacen("00", "01", 1))]).is_some());
        assert!(parent(&[&format!(" {VALID}\t")]).is_some());
    }

    /// Random and mutated `traceparent` values never panic; whatever is accepted
    /// names the trace and span ids the header spelled.
    #[test]
    fn random_traceparents_never_panic() {
        let mut rng = fastrand::Rng::with_seed(14);
        let alphabet = b"0123456789abcdefABCDEF-xz ;,=\t";
        for _ in 0..20_000 {
            let value: String = if rng.bool() {
                let mut v = VALID.as_bytes().to_vec();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..v.len());
                    match rng.u8(..3) {
                        0 => v[at] = alphabet[rng.usize(..alphabet.len())],
                        1 => {
                            v.remove(at);
                        }
                        _ => v.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    }
                }
                String::from_utf8(v).unwrap()
            } else {
                (0..rng.usize(0..70)).map(|_| alphabet[rng.usize(..alphabet.len())] as char).collect()
            };
            if let Some(sc) = parent(&[&value]) {
                let ids = format!("-{}-{}-", sc.trace_id(), sc.span_id());
                assert!(value.trim().get(2..36 + 16 + 1) == Some(&ids[..]), "{value:?}");
            }
        }
    }
}
