//! What handlers (and layers) can send and see beyond messages: response
//! trailers and headers, statuses with details and metadata, the peer address,
//! the deadline and cancellation.

use std::task::{Context, Poll};

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
