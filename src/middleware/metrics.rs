//! Prometheus metrics with the names and labels of go-grpc-prometheus (what
//! existing gRPC dashboards query), plus the schema generation and reload
//! outcomes. Each method's label handles are resolved once and cached by path
//! (every method of a new generation is registered when it goes live, so it
//! shows up with zeros before its first call); a call then costs atomic adds.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::call::Kind;
use crate::registry::Snapshot;
use crate::reload::Outcome;

/// gRPC codes as go-grpc-prometheus labels them (Go's `codes.Code.String()`),
/// indexed by code number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// go-grpc-prometheus's `grpc_type` label.
fn grpc_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Unary => "unary",
        Kind::ClientStreaming => "client_stream",
        Kind::ServerStreaming => "server_stream",
        Kind::Bidi => "bidi_stream",
    }
}

/// The server's metrics and the registry they are gathered from.
pub struct Metrics {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    seconds: HistogramVec,
    generation: IntGauge,
    reloads: IntCounterVec,
    /// Label handles per method path, copied on write (a miss happens once per
    /// method; a hit is one atomic load and a hash lookup).
    methods: ArcSwap<HashMap<Box<str>, Arc<MethodMetrics>, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// One method's label handles.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    kind: Kind,
    pub(crate) started: IntCounter,
    pub(crate) received: IntCounter,
    pub(crate) sent: IntCounter,
    seconds: Histogram,
    handled: [IntCounter; 17],
}

impl MethodMetrics {
    /// Records a finished call.
    pub(crate) fn handled(&self, code: tonic::Code, seconds: f64) {
        let i = code as usize;
        self.handled.get(i).unwrap_or(&self.handled[2]).inc();
        self.seconds.observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics in a registry of their own.
    pub fn new() -> Self {
        let method_labels = &["grpc_type", "grpc_service", "grpc_method"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric names and labels")
        };
        let started =
            counter("grpc_server_started_total", "Total number of RPCs started on the server.", method_labels);
        let handled = counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let received = counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            method_labels,
        );
        let sent = counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            method_labels,
        );
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            method_labels,
        )
        .expect("valid histogram");
        let generation =
            IntGauge::new("protoserve_schema_generation", "The schema generation being served.").expect("valid gauge");
        let reloads = counter(
            "protoserve_reloads_total",
            "Schema reload attempts by result (success, compile_error, rejected, not_ready).",
            &["result"],
        );
        let registry = Registry::new();
        for c in [&started, &handled, &received, &sent, &reloads] {
            registry.register(Box::new(c.clone())).expect("metric registered once");
        }
        registry.register(Box::new(seconds.clone())).expect("metric registered once");
        registry.register(Box::new(generation.clone())).expect("metric registered once");
        Self {
            registry,
            started,
            handled,
            received,
            sent,
            seconds,
            generation,
            reloads,
            methods: ArcSwap::from_pointee(HashMap::default()),
        }
    }

    /// The handles of one method (created on first use).
    pub(crate) fn method(&self, path: &str, kind: Kind) -> Arc<MethodMetrics> {
        if let Some(m) = self.methods.load().get(path).filter(|m| m.kind == kind) {
            return m.clone();
        }
        let made = Arc::new(self.make(path, kind));
        self.methods.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(path.into(), made.clone());
            map
        });
        made
    }

    fn make(&self, path: &str, kind: Kind) -> MethodMetrics {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        let labels = [grpc_type(kind), service, method];
        MethodMetrics {
            kind,
            started: self.started.with_label_values(&labels),
            received: self.received.with_label_values(&labels),
            sent: self.sent.with_label_values(&labels),
            seconds: self.seconds.with_label_values(&labels),
            handled: CODE_NAMES.map(|code| self.handled.with_label_values(&[labels[0], service, method, code])),
        }
    }

    /// Registers every method of a generation (so each shows up at zero) and
    /// sets the generation gauge.
    pub(crate) fn register_snapshot(&self, snap: &Snapshot) {
        let missing: Vec<_> = {
            let known = self.methods.load();
            snap.routes
                .iter()
                .filter(|(path, r)| known.get(&***path).is_none_or(|m| m.kind != r.kind))
                .map(|(path, r)| (path.clone(), r.kind))
                .collect()
        };
        if !missing.is_empty() {
            let made: Vec<_> = missing.into_iter().map(|(p, k)| (p.clone(), Arc::new(self.make(&p, k)))).collect();
            self.methods.rcu(|map| {
                let mut map = HashMap::clone(map);
                map.extend(made.iter().cloned());
                map
            });
        }
        self.generation.set(i64::try_from(snap.generation()).unwrap_or(i64::MAX));
    }

    /// Counts one reload attempt.
    pub(crate) fn reloaded(&self, outcome: &Outcome) {
        use crate::reload::ReloadError;
        let result = match outcome.error() {
            None => "success",
            Some(ReloadError::Compile { .. }) => "compile_error",
            Some(ReloadError::NotReady { .. }) => "not_ready",
            Some(_) => "rejected",
        };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot encode metrics");
            String::new()
        })
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
