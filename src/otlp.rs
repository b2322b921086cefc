//! `serve --otlp-endpoint`: the per-RPC `rpc` span (see `middleware::trace`)
//! exported with OpenTelemetry over OTLP/gRPC, continuing an incoming W3C
//! `traceparent`.
//!
//! [`start`] builds the exporter (batched in the background by the SDK's batch
//! span processor, on a small runtime of its own so serving threads never
//! export) and the `tracing` layer that turns `rpc` spans into OTel spans, and
//! switches span export on for the process. Without it nothing on the request
//! path changes: `middleware::trace` asks [`active`] once per call.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long shutdown waits for the last batch to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once by [`start`]: span export is on for this process.
static ACTIVE: OnceLock<Settings> = OnceLock::new();

/// What the per-RPC span needs when export is on.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Reads `traceparent` (and `tracestate`) from request metadata.
    pub(crate) propagator: TraceContextPropagator,
    /// The configured listen address (`server.address`/`server.port`).
    pub(crate) listen: SocketAddr,
}

/// Span export settings, when `--otlp-endpoint` turned it on.
#[inline]
pub(crate) fn active() -> Option<&'static Settings> {
    ACTIVE.get()
}

/// Checks an `--otlp-endpoint` value: an `http://HOST[:PORT]` URL of an
/// OTLP/gRPC collector (path-less; TLS is not supported).
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let example = "expected http://HOST:PORT of an OTLP/gRPC collector, e.g. http://127.0.0.1:4317";
    let Some(rest) = s.strip_prefix("http://") else {
        if s.starts_with("https://") {
            return Err(format!("{s:?}: https is not supported (no TLS to the collector); {example}"));
        }
        return Err(format!("{s:?}: not an http:// URL; {example}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("{s:?}: no host; {example}"));
    }
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?}: only a host and port may follow http://; {example}"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => (authority, None),
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{s:?}: no host; {example}"));
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err(format!("{s:?}: {port:?} is not a port (1-65535); {example}"));
    }
    tonic::transport::Endpoint::from_shared(s.to_string()).map_err(|e| format!("{s:?}: {e}; {example}"))?;
    Ok(s.to_string())
}

/// The running exporter; [`Exporter::shutdown`] flushes what is still batched.
pub struct Exporter {
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Sends the spans still batched (waiting at most 5 s) and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            eprintln!("protoserve: OTLP export at shutdown: {e}");
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Starts exporting the per-RPC spans to `endpoint` (checked by
/// [`parse_endpoint`]): returns the exporter, to shut down on exit, and the
/// layer to add to the process's subscriber (it sees only `rpc` spans).
///
/// The batch processor reads the usual `OTEL_BSP_*` variables (e.g.
/// `OTEL_BSP_SCHEDULE_DELAY` in ms); the service name is `protoserve` unless
/// `OTEL_SERVICE_NAME` says otherwise. Call it once per process.
pub fn start<S>(endpoint: &str, listen: SocketAddr) -> Result<(Exporter, impl Layer<S>), String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let endpoint = parse_endpoint(endpoint)?;
    // The tonic channel's tasks live on this runtime; the SDK's batch thread
    // drives the exports.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the OTLP exporter's runtime: {e}"))?;
    let exporter = {
        let _in_runtime = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("protoserve");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("protoserve");
    ACTIVE
        .set(Settings { propagator: TraceContextPropagator::new(), listen })
        .map_err(|_| "OTLP export was already started".to_string())?;
    let layer =
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.name() == "rpc" && meta.target().starts_with("protoserve")
        }));
    Ok((Exporter { provider, runtime }, layer))
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint;

    #[test]
    fn endpoints_are_http_host_and_port() {
        for ok in ["http://127.0.0.1:4317", "http://collector:4317/", "http://[::1]:4317", "http://otel"] {
            assert_eq!(parse_endpoint(ok).as_deref(), Ok(ok), "{ok}");
        }
        for (bad, says) in [
            ("127.0.0.1:4317", "not an http:// URL"),
            ("https://collector:4317", "https is not supported"),
            ("http://", "no host"),
            ("http://:4317", "no host"),
            ("http://host:0", "not a port"),
            ("http://host:70000", "not a port"),
            ("http://host:43a7", "not a port"),
            ("http://host:4317/v1/traces", "only a host and port"),
            ("http://user@host:4317", "only a host and port"),
            ("http://ho st:4317", "only a host and port"),
        ] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn random_endpoints_never_panic() {
        let mut rng = fastrand::Rng::with_seed(14);
        let alphabet: Vec<char> = "http:/[]@?#%.0123456789abcXYZ \u{0}\u{7f}é-_~".chars().collect();
        for _ in 0..20_000 {
            let len = rng.usize(0..24);
            let tail: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let s = if rng.bool() { format!("http://{tail}") } else { tail };
            if let Ok(ok) = parse_endpoint(&s) {
                assert_eq!(ok, s);
                assert!(s.starts_with("http://") && s.len() > "http://".len(), "{s:?}");
            }
        }
    }
}
