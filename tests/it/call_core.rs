//! The call core's seams and guarantees: statuses pass through unchanged, panics
//! anywhere in a handler are INTERNAL, deadlines bound whole streams, compression
//! both ways, HTTP answers for non-gRPC requests, user layers and custom stores.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use prost_reflect::DynamicMessage;
use protoserve::store::{After, InsertError, MemoryStore, Merge, Page, Store};
use protoserve::{Answer, BoxFuture, Call, CallRequest, CallService, Compression, ReplyStream, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Status};

use crate::harness::*;

fn note<T>(c: &Client<T>, text: &str) -> DynamicMessage {
    c.msg("kinds.Note", json!({"text": text}))
}

fn kinds() -> protoserve::Builder {
    Server::builder().schema_dir(kinds_dir())
}

#[tokio::test]
async fn a_handlers_own_out_of_range_reaches_the_client_unchanged() {
    let srv = TestServer::start(
        kinds()
            .unary("kinds.Echo/Say", |_call: Call<DynamicMessage>| async {
                Err(Status::out_of_range("page too large"))
            })
            .server_streaming("kinds.Echo/Repeat", |call: Call<DynamicMessage>| async move {
                let first = Ok(call.reply());
                let then = Err(Status::out_of_range("offset too large"));
                Ok(Box::pin(futures_util::stream::iter([first, then])) as ReplyStream)
            }),
    )
    .await;
    let mut c = srv.client().await;
    let err = c.unary("/kinds.Echo/Say", note(&c, "x")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::OutOfRange, "page too large"));
    let err = c.server_stream("/kinds.Echo/Repeat", note(&c, "x")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::OutOfRange, "offset too large"));
}

#[tokio::test]
async fn a_panic_before_the_handlers_future_is_internal_and_the_server_lives_on() {
    let srv = TestServer::start(kinds().unary("kinds.Echo/Say", |call: Call<DynamicMessage>| {
        // The synchronous part of the closure, before any future exists.
        if get_str(&call.message, "text") == "boom" {
            panic!("bug before the async block");
        }
        async move { Ok(call.reply()) }
    }))
    .await;
    let mut c = srv.client().await;
    let err = c.unary("/kinds.Echo/Say", note(&c, "boom")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("panicked"), "{}", err.message());
    c.unary("/kinds.Echo/Say", note(&c, "fine")).await.expect("the server still serves");
}

#[tokio::test]
async fn a_panic_inside_a_reply_stream_is_internal() {
    let srv =
        TestServer::start(kinds().server_streaming("kinds.Echo/Repeat", |call: Call<DynamicMessage>| async move {
            let first = futures_util::stream::once(async move { Ok(call.reply()) });
            let boom = futures_util::stream::once(async { panic!("bug while streaming") });
            Ok(Box::pin(first.chain(boom)) as ReplyStream)
        }))
        .await;
    let mut c = srv.client().await;
    let mut s = c.server_stream_open("/kinds.Echo/Repeat", note(&c, "x")).await.unwrap();
    assert!(s.message().await.unwrap().is_some(), "the first reply arrives");
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("panicked"), "a status, not a reset stream: {}", err.message());
}

#[tokio::test]
async fn a_server_stream_that_outlives_its_deadline_ends_with_deadline_exceeded() {
    let srv =
        TestServer::start(kinds().server_streaming("kinds.Echo/Repeat", |call: Call<DynamicMessage>| async move {
            // One reply, then nothing ever again.
            let first = futures_util::stream::once(async move { Ok(call.reply()) });
            Ok(Box::pin(first.chain(futures_util::stream::pending())) as ReplyStream)
        }))
        .await;
    // A client that does not enforce deadlines itself: the answer is the server's.
    let c = srv.client().await;
    let msg = note(&c, "x");
    let mut c = c.with_grpc(srv.raw_grpc());
    let out = c.pool.get_message_by_name("kinds.Note").unwrap();
    let mut req = Request::new(msg);
    req.metadata_mut().insert("grpc-timeout", "300m".parse().unwrap());
    c.grpc.ready().await.unwrap();
    let mut s = c
        .grpc
        .server_streaming(req, "/kinds.Echo/Repeat".parse().unwrap(), DynCodec(out))
        .await
        .expect("the stream starts")
        .into_inner();
    assert!(s.message().await.unwrap().is_some(), "the first reply arrives");
    // Bounded only so a regression fails instead of hanging the suite.
    let end = tokio::time::timeout(Duration::from_secs(20), s.message()).await.expect("the server ended the stream");
    let err = end.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
}

/// Calls GetUser with the given client-side compression settings; returns the
/// reply and the response's `grpc-encoding`.
async fn get_user_with(
    srv: &TestServer,
    send: Option<CompressionEncoding>,
    accept: Option<CompressionEncoding>,
) -> Result<(DynamicMessage, Option<String>), Status> {
    let mut c = srv.client().await;
    let created = c
        .unary(
            "/users.UserService/CreateUser",
            c.msg("users.CreateUserRequest", json!({"name": "Zed", "email": "zed@example.com"})),
        )
        .await?;
    let id = get_str(&created, "id");
    let mut grpc = c.grpc.clone();
    if let Some(e) = send {
        grpc = grpc.send_compressed(e);
    }
    if let Some(e) = accept {
        grpc = grpc.accept_compressed(e);
    }
    let out = c.pool.get_message_by_name("users.User").unwrap();
    grpc.ready().await.unwrap();
    let req = Request::new(c.msg("users.GetUserRequest", json!({"user_id": id})));
    let res = grpc.unary(req, "/users.UserService/GetUser".parse().unwrap(), DynCodec(out)).await?;
    let enc = res.metadata().get("grpc-encoding").map(|v| v.to_str().unwrap().to_owned());
    let user = res.into_inner();
    assert_eq!(get_str(&user, "name"), "Zed");
    Ok((user, enc))
}

#[tokio::test]
async fn compressed_requests_are_accepted_and_responses_compressed_on_request() {
    let srv = TestServer::users().await;
    // Each encoding both ways: the request compressed, the response too when accepted.
    for (enc, name) in [
        (CompressionEncoding::Gzip, "gzip"),
        (CompressionEncoding::Deflate, "deflate"),
        (CompressionEncoding::Zstd, "zstd"),
    ] {
        let (_, got) = get_user_with(&srv, Some(enc), Some(enc)).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(got.as_deref(), Some(name), "a {name} request from a {name} client is answered in {name}");
    }
    // The default (gzip) for a client that accepts gzip without compressing its request.
    let (_, got) = get_user_with(&srv, None, Some(CompressionEncoding::Gzip)).await.unwrap();
    assert_eq!(got.as_deref(), Some("gzip"));
    // A client that accepts nothing gets nothing compressed.
    let (_, got) = get_user_with(&srv, None, None).await.unwrap();
    assert_eq!(got, None);
}

#[tokio::test]
async fn compression_none_never_compresses_responses_but_accepts_compressed_requests() {
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).compression(Compression::None)).await;
    let (_, got) = get_user_with(&srv, Some(CompressionEncoding::Gzip), Some(CompressionEncoding::Gzip)).await.unwrap();
    assert_eq!(got, None);
    // zstd configured: zstd for clients that accept it, nothing for gzip-only clients.
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).compression(Compression::Zstd)).await;
    let (_, got) = get_user_with(&srv, None, Some(CompressionEncoding::Zstd)).await.unwrap();
    assert_eq!(got.as_deref(), Some("zstd"));
    let (_, got) = get_user_with(&srv, None, Some(CompressionEncoding::Gzip)).await.unwrap();
    assert_eq!(got, None);
}

#[tokio::test]
async fn a_foreign_content_type_over_http2_gets_415() {
    let srv = TestServer::users().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let req = http::Request::post(format!("http://{}/users.UserService/GetUser", srv.addr))
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let res = client.request(req).await.expect("an HTTP answer");
    assert_eq!(res.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(res.version(), http::Version::HTTP_2);
}

/// Sends `request` on a fresh connection and reads the whole answer.
async fn http1_exchange(srv: &TestServer, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.expect("the server closes").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_plain_http1_request_gets_an_http1_answer() {
    let srv = TestServer::users().await;
    let got = http1_exchange(&srv, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 415 "), "{got}");
    assert!(got.contains("application/grpc"), "the answer says what is served: {got}");
    // gRPC needs HTTP/2: a gRPC content-type over HTTP/1.1 is told so.
    let got = http1_exchange(
        &srv,
        "POST /users.UserService/GetUser HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/grpc\r\n\
         content-length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 505 "), "{got}");
}

/// A user layer: rejects calls without `x-key: k`, adds `x-who` for handlers,
/// and records the methods it saw.
#[derive(Clone)]
struct RequireKey(Arc<Mutex<Vec<String>>>);

impl tower_layer::Layer<CallService> for RequireKey {
    type Service = KeyCheck;
    fn layer(&self, inner: CallService) -> KeyCheck {
        KeyCheck { inner, seen: self.0.clone() }
    }
}

#[derive(Clone)]
struct KeyCheck {
    inner: CallService,
    seen: Arc<Mutex<Vec<String>>>,
}

impl tower_service::Service<CallRequest> for KeyCheck {
    type Response = Answer;
    type Error = protoserve::Error;
    type Future = BoxFuture<Result<Answer, protoserve::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), protoserve::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: CallRequest) -> Self::Future {
        self.seen.lock().unwrap().push(call.method().full_name().to_owned());
        if call.metadata().get("x-key").is_none_or(|v| v != "k") {
            return Box::pin(async { Err(Status::unauthenticated("Missing or invalid token").into()) });
        }
        call.metadata_mut().insert("x-who", "layer".parse().unwrap());
        self.inner.run(call)
    }
}

#[tokio::test]
async fn a_user_layer_sees_every_call_and_can_reject_or_add_metadata() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let srv = TestServer::start(kinds().layer(RequireKey(seen.clone())).unary(
        "kinds.Echo/Say",
        |call: Call<DynamicMessage>| async move {
            let mut out = call.reply();
            let who = call.metadata.get("x-who").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_owned();
            out.set_field_by_name("text", prost_reflect::Value::String(who));
            Ok(out)
        },
    ))
    .await;
    let mut c = srv.client().await;
    let err = c.unary("/kinds.Echo/Say", note(&c, "x")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "Missing or invalid token"));
    let mut req = Request::new(note(&c, "x"));
    req.metadata_mut().insert("x-key", "k".parse().unwrap());
    let got = c.unary_req("/kinds.Echo/Say", req).await.unwrap();
    assert_eq!(get_str(&got, "text"), "layer");
    // Store routes and UNIMPLEMENTED ones pass through the layer too.
    let err = c.unary("/kinds.Echo/Frobnicate", note(&c, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(*seen.lock().unwrap(), ["kinds.Echo.Say", "kinds.Echo.Say", "kinds.Echo.Frobnicate"]);
}

/// A store that counts what goes through it, on top of the in-memory one.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    ops: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn tick(&self) {
        self.ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Store for CountingStore {
    fn get(&self, table: &str, id: &str) -> Result<Option<Bytes>, protoserve::Error> {
        self.tick();
        self.inner.get(table, id)
    }
    fn insert_all(&self, table: &str, records: Vec<(String, Bytes)>) -> Result<(), InsertError> {
        self.tick();
        self.inner.insert_all(table, records)
    }
    fn update(&self, table: &str, id: &str, merge: Merge<'_>) -> Result<Option<Bytes>, protoserve::Error> {
        self.tick();
        self.inner.update(table, id, merge)
    }
    fn delete(&self, table: &str, id: &str) -> Result<Option<Bytes>, protoserve::Error> {
        self.tick();
        self.inner.delete(table, id)
    }
    fn page(&self, table: &str, after: After<'_>, n: usize) -> Result<Page, protoserve::Error> {
        self.tick();
        self.inner.page(table, after, n)
    }
}

#[tokio::test]
async fn another_store_plugs_in_with_builder_store() {
    let store = Arc::new(CountingStore::default());
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).store(store.clone())).await;
    let mut c = srv.client().await;
    let created = c
        .unary(
            "/users.UserService/CreateUser",
            c.msg("users.CreateUserRequest", json!({"name": "Ann", "email": "ann@example.com"})),
        )
        .await
        .unwrap();
    let id = get_str(&created, "id");
    let got =
        c.unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": id}))).await.unwrap();
    assert_eq!(got, created);
    assert_eq!(store.ops.load(std::sync::atomic::Ordering::Relaxed), 2, "create and get went through it");
    assert!(store.inner.get("users.User", &id).unwrap().is_some());
}

#[tokio::test]
async fn a_large_request_is_decoded_off_the_workers_and_answered_the_same() {
    let srv = TestServer::start(kinds().unary("kinds.Echo/Say", |call: Call<DynamicMessage>| async move {
        let mut out = call.reply();
        let n = get_str(&call.message, "text").len();
        out.set_field_by_name("times", prost_reflect::Value::I32(n as i32));
        Ok(out)
    }))
    .await;
    let mut c = srv.client().await;
    for n in [10, 64 * 1024, 3 * 1024 * 1024] {
        let got = c.unary("/kinds.Echo/Say", note(&c, &"y".repeat(n))).await.unwrap();
        assert_eq!(get_i64(&got, "times"), n as i64);
    }
    // Malformed bytes are still INTERNAL naming the method when large.
    let mut bad = vec![0x0a, 0xff, 0xff, 0x7f];
    bad.resize(200 * 1024, 0);
    let err = c.raw_unary("/kinds.Echo/Say", bad).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("/kinds.Echo/Say"), "{}", err.message());
}

fn create_req(c: &Client, i: usize) -> DynamicMessage {
    c.msg("users.CreateUserRequest", json!({"name": format!("u{i}"), "email": "u@example.com"}))
}

#[tokio::test]
async fn bulk_create_buffers_at_most_max_call_buffer_and_stores_nothing_beyond() {
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).max_call_buffer(4096)).await;
    let mut c = srv.client().await;
    let bulk = "/users.UserService/BulkCreateUsers";
    let reqs: Vec<_> = (0..500).map(|i| create_req(&c, i)).collect();
    let err = c.client_stream(bulk, reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-call-buffer") && err.message().contains("nothing was stored"), "{err:?}");
    let listed = c
        .server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({"page_size": 1000})))
        .await
        .unwrap();
    assert!(listed.is_empty(), "nothing was stored: {}", listed.len());
    // Within the limit works.
    let ok = c.client_stream(bulk, (0..10).map(|i| create_req(&c, i)).collect()).await.unwrap();
    assert_eq!(get_i64(&ok, "created_count"), 10);
}

#[tokio::test]
async fn a_large_bulk_create_is_stored_all_or_nothing_off_the_workers() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let bulk = "/users.UserService/BulkCreateUsers";
    let n = 3000; // above the batch size that moves to the blocking pool
    let ok = c.client_stream(bulk, (0..n).map(|i| create_req(&c, i)).collect()).await.unwrap();
    assert_eq!(get_i64(&ok, "created_count"), n as i64);
    let ids = ok.get_field_by_name("user_ids").unwrap().as_list().unwrap().len();
    assert_eq!(ids, n);
    // One bad email in a large batch: nothing of it is stored.
    let mut reqs: Vec<_> = (0..n).map(|i| create_req(&c, i)).collect();
    reqs[n - 1] = c.msg("users.CreateUserRequest", json!({"name": "bad", "email": "nope"}));
    let err = c.client_stream(bulk, reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let listed = c
        .server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({"page_size": 10000})))
        .await
        .unwrap();
    assert_eq!(listed.len(), n, "only the first batch is stored");
}

fn with_limits(handshake_ms: u64, idle_ms: u64) -> protoserve::Builder {
    kinds()
        .conn_limits(protoserve::ConnLimits {
            handshake_timeout: Duration::from_millis(handshake_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            keepalive_interval: None,
            stall_timeout: None,
        })
        .server_streaming("kinds.Echo/Repeat", |call: Call<DynamicMessage>| async move {
            let first = futures_util::stream::once(async move { Ok(call.reply()) });
            Ok(Box::pin(first.chain(futures_util::stream::pending())) as ReplyStream)
        })
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let srv = TestServer::start(with_limits(200, 60_000)).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    // EOF is the signal; the bound only turns a regression into a failure.
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("the server closed the silent connection")
        .unwrap();
}

/// An HTTP/2 connection whose end the test can observe.
async fn h2_connection(
    srv: &TestServer,
) -> (hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_not_one_with_a_call_in_flight() {
    let srv = TestServer::start(with_limits(60_000, 200)).await;
    // A connection with a server stream that never ends stays open...
    let c = srv.client().await;
    let msg = note(&c, "x");
    let mut busy = c.with_grpc(srv.raw_grpc());
    let out = busy.pool.get_message_by_name("kinds.Note").unwrap();
    busy.grpc.ready().await.unwrap();
    let mut stream = busy
        .grpc
        .server_streaming(Request::new(msg), "/kinds.Echo/Repeat".parse().unwrap(), DynCodec(out))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    // ...while one whose only request is done is closed after the idle timeout.
    let (mut send, closed) = h2_connection(&srv).await;
    let req = http::Request::post(format!("http://{}/x", srv.addr))
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    drop(res);
    tokio::time::timeout(Duration::from_secs(20), closed).await.expect("the idle connection was closed").unwrap();
    // The busy one outlived that idle timeout and still holds its stream.
    assert!(
        futures_util::FutureExt::now_or_never(stream.message()).is_none(),
        "the stream in flight is still open (no end, no error)"
    );
}

#[tokio::test]
async fn a_garbage_reflection_request_is_internal_not_ok() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        // Field 1 as a varint with no end: not a ServerReflectionRequest.
        let err = c.raw_unary_to(path, "users.User", vec![0x08, 0xff, 0xff, 0xff]).await.unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{path}: {err:?}");
        assert!(err.message().contains("ServerReflectionRequest"), "{path}: {}", err.message());
    }
}

/// A server whose `kinds.Echo/Repeat` answers `times` notes of 16 KiB, each after
/// `gap`, with the given stall timeout.
async fn repeating_server(stall: Duration, gap: Duration) -> TestServer {
    let limits = protoserve::ConnLimits { stall_timeout: Some(stall), ..Default::default() };
    TestServer::start(kinds().conn_limits(limits).server_streaming(
        "kinds.Echo/Repeat",
        move |call: Call<DynamicMessage>| async move {
            let times = call.message.get_field_by_name("times").and_then(|v| v.as_i32()).unwrap_or(0);
            let mut reply = call.reply();
            reply.set_field_by_name("text", prost_reflect::Value::String("x".repeat(16 * 1024)));
            let replies = futures_util::stream::iter(0..times).then(move |_| {
                let reply = reply.clone();
                async move {
                    tokio::time::sleep(gap).await;
                    Ok(reply)
                }
            });
            Ok(Box::pin(replies) as ReplyStream)
        },
    ))
    .await
}

#[tokio::test]
async fn a_connection_whose_client_stops_reading_is_closed_after_the_stall_timeout() {
    let srv = repeating_server(Duration::from_millis(200), Duration::ZERO).await;
    let (mut send, closed) = h2_connection(&srv).await;
    // 10,000 notes of 16 KiB: far more than HTTP/2's 64 KiB initial window.
    let note = [0x10, 0x90, 0x4e]; // field 2 (times) = 10000
    let mut frame = vec![0, 0, 0, 0, note.len() as u8];
    frame.extend_from_slice(&note);
    let req = http::Request::post(format!("http://{}/kinds.Echo/Repeat", srv.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from(frame)))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    // The response body is never read: the server's frames wait on flow control
    // until it gives up and closes the connection (the end of `closed`).
    tokio::time::timeout(Duration::from_secs(20), closed).await.expect("the stalled connection was closed").unwrap();
    let mut body = http_body_util::BodyExt::boxed(res.into_body());
    let mut got = 0usize;
    let end = loop {
        match http_body_util::BodyExt::frame(&mut body).await {
            Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(end.is_some(), "the stream ended with an error, not a clean end");
    assert!(got < 10_000 * 16 * 1024, "only what the window let through arrived: {got} bytes");
}

#[tokio::test]
async fn a_slow_producer_is_not_mistaken_for_a_stalled_client() {
    // Gaps of 3 stall periods between replies: the client reads everything, so
    // nothing is waiting on it and the stream completes.
    let srv = repeating_server(Duration::from_millis(100), Duration::from_millis(300)).await;
    let mut c = srv.client().await;
    let got = c.server_stream("/kinds.Echo/Repeat", c.msg("kinds.Note", json!({"times": 4}))).await.unwrap();
    assert_eq!(got.len(), 4);
}
