//! `serve --otlp-endpoint`: the binary exports a span per RPC over OTLP/gRPC to
//! a small collector the test runs itself (a tonic `TraceService` server on
//! `127.0.0.1:0` that keeps every span it receives).

use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::cli::spawn_server_env;
use crate::harness::*;

/// The spans received so far, in arrival order.
struct Collector(tokio::sync::watch::Sender<Vec<Span>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.send_modify(|all| all.extend(spans));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the collector; returns its port and the spans it receives.
async fn collector() -> (u16, tokio::sync::watch::Receiver<Vec<Span>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Collector(tx)))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    (port, rx)
}

/// Waits (bounded) for a span that `want` accepts.
async fn span_where(rx: &mut tokio::sync::watch::Receiver<Vec<Span>>, want: impl Fn(&Span) -> bool) -> Span {
    let found = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|spans| spans.iter().any(&want)))
        .await
        .map(|spans| spans.unwrap().iter().find(|s| want(s)).cloned());
    match found {
        Ok(Some(span)) => span,
        _ => panic!("no such span arrived; got:\n{:#?}", *rx.borrow()),
    }
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
}

fn string_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Runs the binary against the collector on `collector_port`, exporting batches
/// every `delay_ms` milliseconds.
fn serve(collector_port: u16, delay_ms: &str) -> (std::process::Child, u16) {
    let endpoint = format!("http://127.0.0.1:{collector_port}");
    spawn_server_env(
        &server_bin(),
        &[users_dir().to_str().unwrap(), "--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", delay_ms), ("RUST_LOG", "info,protoserve::middleware::trace=debug")],
    )
}

async fn client(port: u16) -> Client {
    let pool = protoserve::schema::load(&[users_dir()]).unwrap().pool().clone();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    Client { grpc: tonic::client::Grpc::new(channel), pool }
}

/// GetUser for a user that does not exist (NOT_FOUND), with these request headers.
async fn get_user(c: &mut Client, headers: &[(&'static str, &str)]) {
    let mut req = tonic::Request::new(c.msg("users.GetUserRequest", serde_json::json!({"user_id": "nobody"})));
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let err = c.unary_req("/users.UserService/GetUser", req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn terminate(child: std::process::Child) -> std::process::Output {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_continue_traceparent_and_carry_rpc_attributes() {
    let (collector_port, mut spans) = collector().await;
    let (child, port) = serve(collector_port, "50");
    let mut c = client(port).await;

    let trace_id = format!("{:032x}", fastrand::u128(1..));
    let parent_id = format!("{:016x}", fastrand::u64(1..));
    get_user(&mut c, &[("traceparent", &format!("00-{trace_id}-{parent_id}-01"))]).await;
    let span = span_where(&mut spans, |s| hex(&s.trace_id) == trace_id).await;
    assert_eq!(hex(&span.parent_span_id), parent_id, "{span:#?}");
    assert_eq!(span.name, "users.UserService/GetUser");
    assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
    assert_eq!(string_attr(&span, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(string_attr(&span, "rpc.service").as_deref(), Some("users.UserService"));
    assert_eq!(string_attr(&span, "rpc.method").as_deref(), Some("GetUser"));
    assert_eq!(attr(&span, "rpc.grpc.status_code"), Some(Value::IntValue(tonic::Code::NotFound as i64)));
    assert_eq!(string_attr(&span, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(&span, "server.port"), Some(Value::IntValue(i64::from(port))));
    assert_eq!(string_attr(&span, "client.address").as_deref(), Some("127.0.0.1"));
    assert!(matches!(attr(&span, "client.port"), Some(Value::IntValue(p)) if p > 0), "{span:#?}");

    // No traceparent, then a malformed one: each call starts a trace of its own.
    get_user(&mut c, &[("x-call", "plain")]).await;
    get_user(&mut c, &[("traceparent", "00-not-a-trace-parent-01"), ("x-call", "malformed")]).await;
    let fresh = |s: &Span| hex(&s.trace_id) != trace_id && s.name.ends_with("/GetUser");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let roots = loop {
        let roots: Vec<Span> = spans.borrow().iter().filter(|s| fresh(s)).cloned().collect();
        if roots.len() >= 2 {
            break roots;
        }
        assert!(tokio::time::Instant::now() < deadline, "two fresh spans never arrived: {roots:#?}");
        let _ = tokio::time::timeout(Duration::from_secs(1), spans.changed()).await;
    };
    for span in &roots {
        assert!(span.parent_span_id.is_empty(), "{span:#?}");
        assert_eq!(span.trace_id.len(), 16);
        assert!(span.trace_id.iter().any(|b| *b != 0), "{span:#?}");
    }
    assert_ne!(roots[0].trace_id, roots[1].trace_id, "each call gets a trace id of its own");

    // A reply stream: the span gets its status when the stream ends.
    let create = c.msg("users.CreateUserRequest", serde_json::json!({"name": "Ada", "email": "ada@example.com"}));
    c.unary("/users.UserService/CreateUser", create).await.unwrap();
    let listed =
        c.server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", serde_json::json!({})));
    assert_eq!(listed.await.unwrap().len(), 1);
    let span = span_where(&mut spans, |s| s.name == "users.UserService/ListUsers").await;
    assert_eq!(attr(&span, "rpc.grpc.status_code"), Some(Value::IntValue(0)), "{span:#?}");
    assert_eq!(string_attr(&span, "rpc.method").as_deref(), Some("ListUsers"));

    let out = tokio::task::spawn_blocking(move || terminate(child)).await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    // RUST_LOG still drives the log lines: the per-RPC info line and, as asked
    // here, the debug line inside the span.
    assert!(log.contains("protoserve::rpc") && log.contains("code=NotFound"), "{log}");
    let line = log.lines().find(|l| l.contains("users.UserService/GetUser") && l.contains("took"));
    assert!(line.is_some_and(|l| l.contains("failed") && l.contains("User 'nobody' not found")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_batched_are_flushed_on_shutdown() {
    let (collector_port, spans) = collector().await;
    // Ten minutes between batches: only the shutdown flush can deliver the
    // span. The endpoint comes from a --config file this time.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("protoserve.yaml");
    std::fs::write(&config, format!("otlp-endpoint: http://127.0.0.1:{collector_port}\n")).unwrap();
    let (child, port) = spawn_server_env(
        &server_bin(),
        &[users_dir().to_str().unwrap(), "--config", config.to_str().unwrap()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let mut c = client(port).await;
    let trace_id = format!("{:032x}", fastrand::u128(1..));
    get_user(&mut c, &[("traceparent", &format!("00-{trace_id}-{:016x}-01", fastrand::u64(1..)))]).await;
    assert!(spans.borrow().is_empty(), "nothing is exported before the batch is due");
    drop(c);
    let out = tokio::task::spawn_blocking(move || terminate(child)).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The flush finished before the process exited.
    assert!(spans.borrow().iter().any(|s| hex(&s.trace_id) == trace_id), "{:#?}", *spans.borrow());
}

#[test]
fn a_bad_endpoint_is_a_usage_error() {
    for (endpoint, says) in [
        ("127.0.0.1:4317", "not an http:// URL"),
        ("https://collector:4317", "https is not supported"),
        ("http://collector:99999", "not a port"),
    ] {
        let out = Command::new(server_bin())
            .args(["serve", users_dir().to_str().unwrap(), "--otlp-endpoint", endpoint])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{endpoint}: {err}");
        assert!(err.contains("--otlp-endpoint") && err.contains(says), "{endpoint}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("protoserve.yaml");
    std::fs::write(&config, "otlp-endpoint: grpc://collector:4317\n").unwrap();
    let out = Command::new(server_bin())
        .args(["serve", users_dir().to_str().unwrap(), "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("grpc://collector:4317") && err.contains("not an http:// URL"), "{err}");
}
