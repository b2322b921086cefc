//! What handlers (and layers) can send and see beyond messages: response
//! trailers and headers, statuses with details and metadata, the peer address,
//! the deadline and cancellation.

use std::task::{Context, Poll};

use futures_util::StreamExt as _;

use prost_reflect::DynamicMessage;
use protoserve::{Answer, BoxFuture, Call, CallRequest, CallService, Server};
use serde_json::json;
use tonic::Request;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::harness::*;

fn note<T>(c: &Client<T>, text: &str) -> DynamicMessage {
    c.msg("kinds.Note", json!({"text": text}))
}

fn kinds() -> protoserve::Builder {
    Server::builder().schema_dir(kinds_dir())
}

fn say(
    text: &'static str,
) -> impl Fn(Call<DynamicMessage>) -> BoxFuture<Result<DynamicMessage, tonic::Status>> + Clone {
    move |call: Call<DynamicMessage>| {
        let mut out = call.reply();
        out.set_field_by_name("text", prost_reflect::Value::String(text.to_owned()));
        Box::pin(async move { Ok(out) })
    }
}

/// A user layer that adds trailers to every answer, among them one the
/// protocol reserves (which must not reach the client).
#[derive(Clone)]
struct AddTrailers;

impl tower_layer::Layer<CallService> for AddTrailers {
    type Service = AddTrailersService;
    fn layer(&self, inner: CallService) -> AddTrailersService {
        AddTrailersService(inner)
    }
}

#[derive(Clone)]
struct AddTrailersService(CallService);

impl tower_service::Service<CallRequest> for AddTrailersService {
    type Response = Answer;
    type Error = protoserve::Error;
    type Future = BoxFuture<Result<Answer, protoserve::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), protoserve::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: CallRequest) -> Self::Future {
        let fut = self.0.run(call);
        Box::pin(async move {
            let answer = fut.await?;
            let mut t = MetadataMap::new();
            t.insert("x-layer", "added".parse().unwrap());
            t.append("x-multi", "one".parse().unwrap());
            t.append("x-multi", "two".parse().unwrap());
            t.insert_bin("x-raw-bin", MetadataValue::from_bytes(&[0, 159, 255]));
            t.insert("grpc-status", "13".parse().unwrap());
            Ok(answer.with_trailers(t))
        })
    }
}

#[tokio::test]
async fn answer_trailers_reach_the_client_after_unary_and_streamed_replies() {
    let srv = TestServer::start(kinds().layer(AddTrailers).unary("kinds.Echo/Say", say("hi")).server_streaming(
        "kinds.Echo/Repeat",
        |call: Call<DynamicMessage>| async move {
            let out = call.reply();
            let s: protoserve::ReplyStream = Box::pin(futures_util::stream::iter(vec![Ok(out.clone()), Ok(out)]));
            Ok(s)
        },
    ))
    .await;
    let c = srv.client().await;
    let mut grpc = c.grpc.clone();
    let out = c.pool.get_message_by_name("kinds.Note").unwrap();

    grpc.ready().await.unwrap();
    let r = grpc.unary(Request::new(note(&c, "x")), "/kinds.Echo/Say".parse().unwrap(), DynCodec(out.clone())).await;
    // tonic merges a unary call's trailers into the response metadata.
    let r = r.expect("the reserved grpc-status trailer did not override the OK status");
    let md = r.metadata();
    assert_eq!(md.get("x-layer").unwrap(), "added");
    let multi: Vec<_> = md.get_all("x-multi").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(md.get_bin("x-raw-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 159, 255]);

    grpc.ready().await.unwrap();
    let mut s = grpc
        .server_streaming(Request::new(note(&c, "x")), "/kinds.Echo/Repeat".parse().unwrap(), DynCodec(out))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while s.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2);
    let trailers = s.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get("x-layer").unwrap(), "added");
    assert_eq!(trailers.get_bin("x-raw-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 159, 255]);
}

/// What a unary handler saw of its call.
#[derive(Debug, Default, Clone)]
struct Seen {
    peer: Option<std::net::SocketAddr>,
    deadline_left: Option<std::time::Duration>,
    key: Option<String>,
}

#[tokio::test]
async fn handlers_see_peer_deadline_metadata_and_set_headers_and_trailers() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let srv = TestServer::start(kinds().unary("kinds.Echo/Say", move |call: Call<DynamicMessage>| {
        let seen = seen2.clone();
        async move {
            *seen.lock().unwrap() = Seen {
                peer: call.peer.addr(),
                deadline_left: call.deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now())),
                key: call.metadata.get("x-key").map(|v| v.to_str().unwrap().to_owned()),
            };
            call.headers.update(|h| h.insert("x-head", "h1".parse().unwrap()));
            call.trailers.update(|t| {
                t.insert("x-tail", "t1".parse().unwrap());
                t.insert_bin("x-tail-bin", MetadataValue::from_bytes(b"\x00\xff"));
            });
            Ok(call.reply())
        }
    }))
    .await;
    let c = srv.client().await;
    let mut grpc = c.grpc.clone();
    let out = c.pool.get_message_by_name("kinds.Note").unwrap();
    let mut req = Request::new(note(&c, "x"));
    req.metadata_mut().insert("x-key", "k1".parse().unwrap());
    req.set_timeout(std::time::Duration::from_secs(60));
    grpc.ready().await.unwrap();
    let r = grpc.unary(req, "/kinds.Echo/Say".parse().unwrap(), DynCodec(out)).await.unwrap();
    assert_eq!(r.metadata().get("x-head").unwrap(), "h1");
    assert_eq!(r.metadata().get("x-tail").unwrap(), "t1");
    assert_eq!(r.metadata().get_bin("x-tail-bin").unwrap().to_bytes().unwrap().as_ref(), b"\x00\xff");
    let seen = seen.lock().unwrap().clone();
    let peer = seen.peer.expect("the handler knows the peer address");
    assert!(peer.ip().is_loopback() && peer.port() != srv.addr.port(), "{peer}");
    let left = seen.deadline_left.expect("the client's grpc-timeout is the handler's deadline");
    assert!(left > std::time::Duration::from_secs(1) && left <= std::time::Duration::from_secs(60), "{left:?}");
    assert_eq!(seen.key.as_deref(), Some("k1"));
}

#[tokio::test]
async fn a_handlers_status_keeps_details_and_metadata_and_its_trailers_join_it() {
    let srv = TestServer::start(kinds().unary("kinds.Echo/Say", |call: Call<DynamicMessage>| async move {
        call.trailers.update(|t| t.insert("x-from-trailers", "yes".parse().unwrap()));
        let mut md = MetadataMap::new();
        md.insert("x-from-status", "also".parse().unwrap());
        Err(tonic::Status::with_details_and_metadata(
            tonic::Code::FailedPrecondition,
            "not now: \u{00e9}t\u{00e9}\r\n",
            bytes::Bytes::from_static(b"\x08\x09\x12\x03abc"),
            md,
        ))
    }))
    .await;
    let mut c = srv.client().await;
    let err = c.unary("/kinds.Echo/Say", note(&c, "x")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "not now: \u{00e9}t\u{00e9}\r\n");
    assert_eq!(err.details(), b"\x08\x09\x12\x03abc");
    assert_eq!(err.metadata().get("x-from-status").unwrap(), "also");
    assert_eq!(err.metadata().get("x-from-trailers").unwrap(), "yes");
}

#[tokio::test]
async fn handlers_observe_cancellation_by_the_client_and_by_the_deadline() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, bool)>();
    let (tx1, tx2) = (tx.clone(), tx);
    let srv = TestServer::start(
        kinds()
            .server_streaming("kinds.Echo/Repeat", move |call: Call<DynamicMessage>| {
                let tx = tx1.clone();
                async move {
                    let cancel = call.cancellation.clone();
                    tokio::spawn(async move {
                        cancel.cancelled().await;
                        let _ = tx.send(("stream", cancel.is_cancelled()));
                    });
                    // One reply, then nothing: the client gives up.
                    let first = futures_util::stream::iter(vec![Ok(call.reply())]);
                    let s: protoserve::ReplyStream = Box::pin(first.chain(futures_util::stream::pending()));
                    Ok(s)
                }
            })
            .unary("kinds.Echo/Slow", move |call: Call<DynamicMessage>| {
                let tx = tx2.clone();
                async move {
                    let cancel = call.cancellation.clone();
                    tokio::spawn(async move {
                        cancel.cancelled().await;
                        let _ = tx.send(("unary", cancel.is_cancelled()));
                    });
                    std::future::pending::<()>().await;
                    Ok(call.reply())
                }
            })
            .unary("kinds.Echo/Say", say("done")),
    )
    .await;
    let mut c = srv.client().await;
    let mut s = c.server_stream_open("/kinds.Echo/Repeat", note(&c, "x")).await.unwrap();
    assert!(s.message().await.unwrap().is_some());
    drop(s);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.expect("cancellation seen");
    assert_eq!(got, Some(("stream", true)));

    // The deadline: the raw client does not enforce grpc-timeout itself.
    let mut raw = c.clone().with_grpc(srv.raw_grpc());
    let mut req = Request::new(note(&c, "x"));
    req.set_timeout(std::time::Duration::from_millis(200));
    let err = raw.unary_req("/kinds.Echo/Slow", req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.expect("cancellation seen");
    assert_eq!(got, Some(("unary", true)));

    // The server goes on serving.
    let reply = c.unary("/kinds.Echo/Say", note(&c, "x")).await.unwrap();
    assert_eq!(get_str(&reply, "text"), "done");
}
