//! gRPC's interop TestService (`examples/interop.rs`, on the handler API)
//! against a Python grpcio client implementing every case of the interop test
//! descriptions, and the compressed cases checked on the wire (frame by frame
//! compressed flags), which grpcio cannot observe.

use std::io::Write as _;
use std::process::Command;

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use serde_json::json;

use crate::harness::*;
use crate::interop_example;

async fn start() -> TestServer {
    TestServer::start(interop_example::builder()).await
}

/// Runs the Python interop client (over TLS with `ca`) and returns its output.
async fn python_client(
    pool: &prost_reflect::DescriptorPool,
    addr: std::net::SocketAddr,
    ca: Option<std::path::PathBuf>,
    cases: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("interop.binpb");
    std::fs::write(&set, pool.encode_to_vec()).unwrap();
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test.sh", python.display());
    let cases: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(python);
        cmd.arg(root().join("tests/interop/testservice_client.py"));
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.arg(addr.to_string()).arg(&set).args(cases).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_passes_every_interop_case_over_tls_too() {
    let pki = crate::tls::Pki::new("interop CA");
    pki.issue("server", crate::tls::SERVER_NAMES);
    let server = interop_example::builder().build().unwrap();
    let pool = server.snapshot().schema().pool().clone();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let tls = protoserve::TlsListener::new(tcp, pki.server_files(None)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(tls, async {
        let _ = stopped.await;
    }));
    let stdout = python_client(&pool, addr, Some(pki.path("ca.pem")), &[]).await;
    assert_eq!(stdout.matches(": ok").count(), 18, "{stdout}");
    drop(stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_passes_every_interop_case() {
    let srv = start().await;
    let stdout = python_client(&srv.pool, srv.addr, None, &[]).await;
    for case in [
        "empty_unary",
        "large_unary",
        "client_streaming",
        "server_streaming",
        "ping_pong",
        "empty_stream",
        "timeout_on_sleeping_server",
        "cancel_after_begin",
        "cancel_after_first_response",
        "custom_metadata",
        "status_code_and_message",
        "special_status_message",
        "unimplemented_method",
        "unimplemented_service",
        "client_compressed_unary",
        "server_compressed_unary",
        "client_compressed_streaming",
        "server_compressed_streaming",
    ] {
        assert!(stdout.contains(&format!("{case}: ok")), "{case} did not pass:\n{stdout}");
    }
}

/// One gRPC frame: the compressed flag and the message bytes (decompressed).
fn frame(compressed: bool, message: &[u8]) -> Bytes {
    let body = if compressed {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(message).unwrap();
        e.finish().unwrap()
    } else {
        message.to_vec()
    };
    let mut out = BytesMut::new();
    out.put_u8(u8::from(compressed));
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    out.freeze()
}

/// Splits a response body into frames: (compressed flag, decompressed message).
fn frames(mut body: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let flag = body[0] == 1;
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let raw = &body[5..5 + len];
        let message = if flag {
            let mut d = flate2::read::GzDecoder::new(raw);
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut v).unwrap();
            v
        } else {
            raw.to_vec()
        };
        out.push((flag, message));
        body = &body[5 + len..];
    }
    out
}

/// A raw HTTP/2 gRPC call: the status and every response frame.
async fn raw_call(
    srv: &TestServer,
    method: &str,
    compressed_request: bool,
    body: Bytes,
) -> (String, Vec<(bool, Vec<u8>)>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let mut req = http::Request::post(format!("http://{}/grpc.testing.TestService/{method}", srv.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-accept-encoding", "gzip");
    if compressed_request {
        req = req.header("grpc-encoding", "gzip");
    }
    let res = client.request(req.body(http_body_util::Full::new(body)).unwrap()).await.unwrap();
    let (head, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status =
        trailers.get("grpc-status").or(head.headers.get("grpc-status")).map(|v| v.to_str().unwrap().to_owned());
    (status.unwrap_or_default(), frames(&collected.to_bytes()))
}

fn encode(srv: &TestServer, name: &str, json: serde_json::Value) -> Vec<u8> {
    let desc = srv.pool.get_message_by_name(name).unwrap();
    DynamicMessage::deserialize(desc, json).unwrap().encode_to_vec()
}

fn payload_len(srv: &TestServer, name: &str, message: &[u8]) -> usize {
    let m = DynamicMessage::decode(srv.pool.get_message_by_name(name).unwrap(), message).unwrap();
    let p = m.get_field_by_name("payload").unwrap();
    p.as_message().unwrap().get_field_by_name("body").unwrap().as_bytes().unwrap().len()
}

#[tokio::test]
async fn replies_are_compressed_call_by_call_and_message_by_message() {
    let srv = start().await;
    for compressed in [true, false] {
        let req = encode(
            &srv,
            "grpc.testing.SimpleRequest",
            json!({"responseSize": 1000, "responseCompressed": {"value": compressed}}),
        );
        let (status, got) = raw_call(&srv, "UnaryCall", false, frame(false, &req)).await;
        assert_eq!(status, "0");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, compressed, "UnaryCall with response_compressed={compressed}");
        assert_eq!(payload_len(&srv, "grpc.testing.SimpleResponse", &got[0].1), 1000);
    }
    let req = encode(
        &srv,
        "grpc.testing.StreamingOutputCallRequest",
        json!({"responseParameters": [
            {"size": 31415, "compressed": {"value": true}},
            {"size": 92653, "compressed": {"value": false}},
            {"size": 7, "compressed": {"value": true}},
        ]}),
    );
    let (status, got) = raw_call(&srv, "StreamingOutputCall", false, frame(false, &req)).await;
    assert_eq!(status, "0");
    let flags: Vec<bool> = got.iter().map(|f| f.0).collect();
    assert_eq!(flags, [true, false, true]);
    let sizes: Vec<usize> =
        got.iter().map(|f| payload_len(&srv, "grpc.testing.StreamingOutputCallResponse", &f.1)).collect();
    assert_eq!(sizes, [31415, 92653, 7]);
}

#[tokio::test]
async fn handlers_see_which_request_messages_came_compressed() {
    let srv = start().await;
    let msg = |size: usize, expect: bool| {
        encode(
            &srv,
            "grpc.testing.StreamingInputCallRequest",
            json!({"payload": {"body": base64_zeros(size)}, "expectCompressed": {"value": expect}}),
        )
    };
    // First message compressed, second not, each as it claims: accepted.
    let mut body = BytesMut::new();
    body.extend_from_slice(&frame(true, &msg(27182, true)));
    body.extend_from_slice(&frame(false, &msg(45904, false)));
    let (status, got) = raw_call(&srv, "StreamingInputCall", true, body.freeze()).await;
    assert_eq!(status, "0");
    let reply = DynamicMessage::decode(
        srv.pool.get_message_by_name("grpc.testing.StreamingInputCallResponse").unwrap(),
        &got[0].1[..],
    )
    .unwrap();
    assert_eq!(reply.get_field_by_name("aggregated_payload_size").unwrap().as_i32(), Some(73086));
    // The second claims compression it does not have: INVALID_ARGUMENT (3).
    let mut body = BytesMut::new();
    body.extend_from_slice(&frame(true, &msg(1, true)));
    body.extend_from_slice(&frame(false, &msg(2, true)));
    let (status, _) = raw_call(&srv, "StreamingInputCall", true, body.freeze()).await;
    assert_eq!(status, "3");
    // Unary: an uncompressed frame of a gzip request claiming compression.
    let req =
        encode(&srv, "grpc.testing.SimpleRequest", json!({"responseSize": 1, "expectCompressed": {"value": true}}));
    let (status, _) = raw_call(&srv, "UnaryCall", true, frame(false, &req)).await;
    assert_eq!(status, "3");
    let (status, _) = raw_call(&srv, "UnaryCall", true, frame(true, &req)).await;
    assert_eq!(status, "0");
}

fn base64_zeros(n: usize) -> String {
    // n zero bytes in base64: "AAAA" per 3 bytes, padded.
    let full = n / 3;
    let rest = n % 3;
    let mut s = "AAAA".repeat(full);
    match rest {
        1 => s.push_str("AA=="),
        2 => s.push_str("AAA="),
        _ => {}
    }
    s
}

#[tokio::test]
async fn a_handler_may_compress_when_the_server_default_is_none() {
    let srv = TestServer::start(interop_example::builder().compression(protoserve::Compression::None)).await;
    for (asked, want) in [(Some(true), true), (Some(false), false), (None, false)] {
        let mut req = json!({"responseSize": 500});
        if let Some(on) = asked {
            req["responseCompressed"] = json!({"value": on});
        }
        let req = encode(&srv, "grpc.testing.SimpleRequest", req);
        let (status, got) = raw_call(&srv, "UnaryCall", false, frame(false, &req)).await;
        assert_eq!(status, "0");
        assert_eq!(got[0].0, want, "response_compressed={asked:?} under --compression none");
        assert_eq!(payload_len(&srv, "grpc.testing.SimpleResponse", &got[0].1), 500);
    }
}
