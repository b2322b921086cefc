//! gRPC's interoperability test server (`grpc.testing.TestService`) written on
//! protoserve's handler API, from the interop test descriptions. The schema is
//! `examples/interop/grpc/testing/*.proto`, served as data; every method is a
//! registered handler except `UnimplementedCall` and the whole
//! `UnimplementedService`, which the server answers UNIMPLEMENTED by itself.
//!
//! Run it with `cargo run --release --example interop -- --addr 127.0.0.1:10000`
//! (`--port N` is `--addr 127.0.0.1:N`, as gRPC's interop harness starts servers;
//! `--tls-cert FILE --tls-key FILE` serve TLS),
//! and point an interop client at it, e.g. `tests/interop/testservice_client.py`.
//!
//! What the handlers do, per the descriptions:
//! - every method echoes `x-grpc-test-echo-initial` in the response headers and
//!   `x-grpc-test-echo-trailing-bin` in the trailers (on success and on error);
//! - `response_status` (a code and message) ends the call with that status;
//! - payloads are zero bytes of the requested size;
//! - `response_compressed` / `ResponseParameters.compressed` compress (or not)
//!   each response; `expect_compressed` makes the server check that the client
//!   compressed (or did not compress) the request, INVALID_ARGUMENT otherwise.

#![allow(unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use protoserve::{Builder, Call, ReplyCompression, ReplyStream, RequestStream, Server};
use tokio::sync::mpsc;
use tonic::{Code, Status};

const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// The directory holding `grpc/testing/*.proto`.
pub fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/interop")
}

/// Copies the echo metadata of the request to the response headers and trailers.
fn echo_metadata<T>(call: &Call<T>) {
    if let Some(v) = call.metadata.get(ECHO_INITIAL) {
        let v = v.clone();
        call.headers.update(|h| h.insert(ECHO_INITIAL, v));
    }
    if let Some(v) = call.metadata.get_bin(ECHO_TRAILING) {
        let v = v.clone();
        call.trailers.update(|t| t.insert_bin(ECHO_TRAILING, v));
    }
}

fn message(desc: &MessageDescriptor, name: &str) -> MessageDescriptor {
    desc.parent_pool().get_message_by_name(&format!("grpc.testing.{name}")).expect("grpc.testing schema")
}

/// A `Payload` of `size` zero bytes (COMPRESSABLE, the enum's 0).
fn payload(any: &MessageDescriptor, size: i32) -> Result<DynamicMessage, Status> {
    let size = usize::try_from(size).map_err(|_| Status::invalid_argument(format!("negative payload size {size}")))?;
    let mut p = DynamicMessage::new(message(any, "Payload"));
    p.set_field_by_name("type", Value::EnumNumber(0));
    p.set_field_by_name("body", Value::Bytes(vec![0u8; size].into()));
    Ok(p)
}

fn int(m: &DynamicMessage, field: &str) -> i32 {
    m.get_field_by_name(field).and_then(|v| v.as_i32()).unwrap_or(0)
}

/// A `BoolValue` field: `None` when absent.
fn bool_value(m: &DynamicMessage, field: &str) -> Option<bool> {
    if !m.has_field_by_name(field) {
        return None;
    }
    let v = m.get_field_by_name(field)?;
    v.as_message()?.get_field_by_name("value")?.as_bool()
}

/// The status asked for by `response_status`, if any (code 0 is none).
fn echo_status(m: &DynamicMessage) -> Option<Status> {
    let s = m.get_field_by_name("response_status")?;
    let s = s.as_message()?;
    let code = int(s, "code");
    if code == 0 {
        return None;
    }
    let text = s.get_field_by_name("message").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    Some(Status::new(Code::from_i32(code), text))
}

/// Checks `expect_compressed` against how the request message arrived.
fn check_compressed(expected: Option<bool>, was: bool) -> Result<(), Status> {
    match expected {
        Some(true) if !was => Err(Status::invalid_argument("expected a compressed request message")),
        Some(false) if was => Err(Status::invalid_argument("expected an uncompressed request message")),
        _ => Ok(()),
    }
}

fn compression(on: Option<bool>) -> ReplyCompression {
    match on {
        Some(true) => ReplyCompression::On,
        Some(false) => ReplyCompression::Off,
        None => ReplyCompression::Auto,
    }
}

/// UnaryCall and CacheableUnaryCall.
async fn unary_call(call: Call<DynamicMessage>) -> Result<DynamicMessage, Status> {
    echo_metadata(&call);
    let req = &call.message;
    check_compressed(bool_value(req, "expect_compressed"), call.compression.request_compressed())?;
    if let Some(status) = echo_status(req) {
        return Err(status);
    }
    call.compression.set(compression(bool_value(req, "response_compressed")));
    let mut out = call.reply();
    out.set_field_by_name("payload", Value::Message(payload(&call.method.output(), int(req, "response_size"))?));
    Ok(out)
}

/// A reply and how it is to be compressed.
type Out = Result<(DynamicMessage, ReplyCompression), Status>;

/// The responses one `StreamingOutputCallRequest` asks for, sent into `tx`
/// (each after its interval), then its `response_status` if any. Returns false
/// when the call is over (the client went away, or a status was sent).
async fn respond(call_out: &MessageDescriptor, req: &DynamicMessage, tx: &mpsc::Sender<Out>) -> bool {
    let params = req.get_field_by_name("response_parameters").and_then(|v| v.as_list().map(<[Value]>::to_vec));
    for p in params.unwrap_or_default() {
        let Some(p) = p.as_message() else { continue };
        let interval = int(p, "interval_us");
        if interval > 0 {
            tokio::time::sleep(Duration::from_micros(interval as u64)).await;
        }
        let reply = payload(call_out, int(p, "size")).map(|body| {
            let mut out = DynamicMessage::new(call_out.clone());
            out.set_field_by_name("payload", Value::Message(body));
            (out, compression(bool_value(p, "compressed")))
        });
        let failed = reply.is_err();
        if tx.send(reply).await.is_err() || failed {
            return false;
        }
    }
    if let Some(status) = echo_status(req) {
        let _ = tx.send(Err(status)).await;
        return false;
    }
    true
}

/// StreamingOutputCall, FullDuplexCall and HalfDuplexCall: responses as the
/// requests ask, produced by a task (`half`: after all requests arrived).
fn stream_out(call: Call<RequestStream>, half: bool) -> ReplyStream {
    echo_metadata(&call);
    let (tx, rx) = mpsc::channel::<Out>(16);
    let out = call.method.output();
    let mut requests = call.message;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(r) = requests.next().await {
            match r {
                Ok(req) if half => held.push(req),
                Ok(req) => {
                    if !respond(&out, &req, &tx).await {
                        return;
                    }
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
        for req in held {
            if !respond(&out, &req, &tx).await {
                return;
            }
        }
    });
    // Each reply's compression is set as the server takes it from the stream.
    let cell = call.compression;
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).map(move |r| {
        r.map(|(reply, compression)| {
            cell.set(compression);
            reply
        })
    }))
}

/// The TestService handlers on a builder for the interop schema.
pub fn builder() -> Builder {
    Server::builder()
        .schema_dir(schema_dir())
        .unary("grpc.testing.TestService/EmptyCall", |call: Call<DynamicMessage>| async move {
            echo_metadata(&call);
            Ok(call.reply())
        })
        .unary("grpc.testing.TestService/UnaryCall", unary_call)
        .unary("grpc.testing.TestService/CacheableUnaryCall", unary_call)
        .server_streaming("grpc.testing.TestService/StreamingOutputCall", |call: Call<DynamicMessage>| async move {
            let call = call.map(|one| -> RequestStream { Box::pin(futures_util::stream::iter([Ok(one)])) });
            Ok(stream_out(call, false))
        })
        .client_streaming("grpc.testing.TestService/StreamingInputCall", |mut call: Call<RequestStream>| async move {
            echo_metadata(&call);
            let mut total = 0i64;
            while let Some(req) = call.message.next().await {
                let req = req?;
                check_compressed(bool_value(&req, "expect_compressed"), call.compression.request_compressed())?;
                let size = req
                    .get_field_by_name("payload")
                    .and_then(|p| {
                        p.as_message()
                            .and_then(|p| p.get_field_by_name("body"))
                            .map(|b| b.as_bytes().map_or(0, |b| b.len()))
                    })
                    .unwrap_or(0);
                total += size as i64;
            }
            let total = i32::try_from(total).map_err(|_| Status::out_of_range("aggregated payload size over 2^31"))?;
            let mut out = call.reply();
            out.set_field_by_name("aggregated_payload_size", Value::I32(total));
            Ok(out)
        })
        .bidi("grpc.testing.TestService/FullDuplexCall", |call: Call<RequestStream>| async move {
            Ok(stream_out(call, false))
        })
        .bidi("grpc.testing.TestService/HalfDuplexCall", |call: Call<RequestStream>| async move {
            Ok(stream_out(call, true))
        })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:10000".to_owned();
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--port" => addr = format!("127.0.0.1:{}", value()?),
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            // gRPC's harness passes --use_tls; TLS needs --tls-cert and --tls-key here.
            "--use_tls" => {
                let _ = value()?;
            }
            other => {
                let usage = "usage: interop [--addr HOST:PORT | --port N] [--tls-cert FILE --tls-key FILE]";
                return Err(format!("unknown argument {other}; {usage}").into());
            }
        }
    }
    let server = builder().build()?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let tls = protoserve::TlsListener::new(listener, protoserve::TlsFiles { cert, key, client_ca: None })?;
            println!("interop server listening on {local} (TLS)");
            server.serve(tls, shutdown).await;
        }
        (None, None) => {
            println!("interop server listening on {local}");
            server.serve(listener, shutdown).await;
        }
        _ => return Err("--tls-cert and --tls-key go together".into()),
    }
    Ok(())
}
