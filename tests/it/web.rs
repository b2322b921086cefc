//! The web protocols on the serving port: gRPC-Web (binary and base64 text) and
//! Connect (unary POST and GET, server streaming, errors, timeouts) through the
//! real `buf curl` client and a plain HTTP client (HTTP/1.1 and HTTP/2), and
//! HTTP/JSON (`POST /pkg.Service/Method`, google.api.http transcoding, CORS).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::{Buf as _, BufMut as _, Bytes};
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use protoserve::{Call, ReplyStream, RequestStream, Server};
use serde_json::{Value, json};
use tonic::Status;

use crate::harness::*;

pub fn web_dir() -> PathBuf {
    root().join("tests/data/web")
}

fn text_of(m: &DynamicMessage) -> String {
    get_str(m, "text")
}

/// The notes schema with echoing handlers: `Say`/`Lookup` answer the request
/// with "said: " before its text (text "missing" is NOT_FOUND, "slow" never
/// answers); `Repeat` answers `times` notes, and after one reply fails with
/// OUT_OF_RANGE when the text is "fail"; the transcoded methods answer a note
/// whose text is the request as JSON (proto names), so tests see every binding.
pub fn notes() -> protoserve::Builder {
    notes_in(&web_dir())
}

/// `notes()` serving the schema in `dir`.
pub fn notes_in(dir: &Path) -> protoserve::Builder {
    fn echo(call: Call<DynamicMessage>) -> Result<DynamicMessage, Status> {
        let text = text_of(&call.message);
        if text == "missing" {
            return Err(Status::not_found("no note called missing"));
        }
        let mut reply = call.message;
        reply.set_field_by_name("text", prost_reflect::Value::String(format!("said: {text}")));
        Ok(reply)
    }
    let mut b = Server::builder()
        .schema_dir(dir)
        .unary("notes.v1.Notes/Say", |call: Call<DynamicMessage>| async move {
            if text_of(&call.message) == "slow" {
                std::future::pending::<()>().await;
            }
            echo(call)
        })
        .unary("notes.v1.Notes/Lookup", |call: Call<DynamicMessage>| async move { echo(call) })
        .server_streaming("notes.v1.Notes/Repeat", |call: Call<DynamicMessage>| async move {
            let text = text_of(&call.message);
            let times = call.message.get_field_by_name("times").and_then(|v| v.as_i32()).unwrap_or(0);
            let mut out: Vec<Result<DynamicMessage, Status>> = (0..times.max(0))
                .map(|i| {
                    let mut m = call.reply();
                    m.set_field_by_name("text", prost_reflect::Value::String(format!("{text} #{i}")));
                    Ok(m)
                })
                .collect();
            if text == "fail" {
                out.truncate(1);
                out.push(Err(Status::out_of_range("no more notes")));
            }
            Ok(Box::pin(futures_util::stream::iter(out)) as ReplyStream)
        });
    b = b
        .client_streaming("notes.v1.Notes/Collect", |call: Call<RequestStream>| async move {
            use futures_util::TryStreamExt as _;
            let notes: Vec<DynamicMessage> = call.message.try_collect().await?;
            let mut reply = DynamicMessage::new(call.method.output());
            let texts: Vec<String> = notes.iter().map(text_of).collect();
            reply.set_field_by_name("text", prost_reflect::Value::String(texts.join("+")));
            Ok(reply)
        })
        .bidi("notes.v1.Notes/Chat", |call: Call<RequestStream>| async move {
            use futures_util::StreamExt as _;
            let replies = call.message.map(|r| {
                r.map(|mut m| {
                    let text = text_of(&m);
                    m.set_field_by_name("text", prost_reflect::Value::String(format!("echo: {text}")));
                    m
                })
            });
            Ok(Box::pin(replies) as ReplyStream)
        });
    for m in ["GetNote", "CreateNote", "UpdateNote", "DeleteNote"] {
        b = b.unary(&format!("notes.v1.Notes/{m}"), |call: Call<DynamicMessage>| async move {
            let opts = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
            let mut ser = serde_json::Serializer::new(Vec::new());
            call.message.serialize_with_options(&mut ser, &opts).unwrap();
            let mut reply = call.reply();
            reply.set_field_by_name("text", prost_reflect::Value::String(String::from_utf8(ser.into_inner()).unwrap()));
            Ok(reply)
        });
    }
    b.unary("notes.v1.Notes/ListFiles", |call: Call<DynamicMessage>| async move {
        let path = get_str(&call.message, "path");
        let mut reply = call.reply();
        let files =
            vec![prost_reflect::Value::String(format!("{path}/a")), prost_reflect::Value::String(format!("{path}/b"))];
        reply.set_field_by_name("files", prost_reflect::Value::List(files));
        reply.set_field_by_name("next_page_token", prost_reflect::Value::String("t".into()));
        Ok(reply)
    })
}

/// The served schema as a descriptor set file, for `buf curl --schema`.
fn schema_file(srv: &TestServer, dir: &Path) -> PathBuf {
    let path = dir.join("notes.binpb");
    std::fs::write(&path, srv.pool.encode_to_vec()).unwrap();
    path
}

/// Runs `buf curl` (off the runtime's thread, so the in-process server keeps serving).
async fn buf_curl(args: Vec<String>) -> Output {
    let buf = root().join("node_modules/.bin/buf");
    assert!(buf.exists(), "{} is missing: run scripts/test.sh, which installs the buf CLI", buf.display());
    let home = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        Command::new(buf)
            .arg("curl")
            .args(args)
            .env("BUF_CACHE_DIR", home.path())
            .env("HOME", home.path())
            .output()
            .expect("buf runs")
    })
    .await
    .unwrap()
}

fn stdout_json(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "buf curl failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>().map(Result::unwrap).collect()
}

/// `buf curl` against the notes server with `protocol`, over HTTP/1.1 or HTTP/2.
async fn curl(srv: &TestServer, protocol: &str, h2: bool, method: &str, data: Value) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(srv, dir.path());
    let mut args = vec![
        "--protocol".to_owned(),
        protocol.to_owned(),
        "--schema".to_owned(),
        schema.display().to_string(),
        "--data".to_owned(),
        data.to_string(),
    ];
    if h2 {
        args.push("--http2-prior-knowledge".to_owned());
    }
    args.push(format!("http://{}/notes.v1.Notes/{method}", srv.addr));
    let out = buf_curl(args).await;
    drop(dir);
    out
}

#[tokio::test]
async fn grpc_web_unary_and_server_streaming_with_buf_curl_over_http1_and_http2() {
    let srv = TestServer::start(notes()).await;
    for h2 in [false, true] {
        let out = curl(&srv, "grpcweb", h2, "Say", json!({"text": "hi", "times": 2})).await;
        assert_eq!(stdout_json(&out), [json!({"text": "said: hi", "times": 2})], "h2={h2}");
        let out = curl(&srv, "grpcweb", h2, "Repeat", json!({"text": "n", "times": 3})).await;
        assert_eq!(stdout_json(&out), [json!({"text": "n #0"}), json!({"text": "n #1"}), json!({"text": "n #2"})]);
    }
}

#[tokio::test]
async fn grpc_web_errors_reach_buf_curl_with_their_code() {
    let srv = TestServer::start(notes()).await;
    let out = curl(&srv, "grpcweb", false, "Say", json!({"text": "missing"})).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not_found") && err.contains("no note called missing"), "{err}");
    // A stream that fails after one reply: the reply, then the error from the body's trailers.
    let out = curl(&srv, "grpcweb", false, "Repeat", json!({"text": "fail", "times": 3})).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("fail #0"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out_of_range") && err.contains("no more notes"), "{err}");
    let out = curl(&srv, "grpcweb", false, "Nope", json!({})).await;
    assert!(!out.status.success(), "an unknown method fails in buf curl already (not in the schema)");
}

/// A gRPC-Web request by hand: one framed message, base64 for the text form.
fn grpc_web_body(msg: &[u8], text: bool) -> Bytes {
    let mut framed = Vec::new();
    framed.put_u8(0);
    framed.put_u32(msg.len() as u32);
    framed.put_slice(msg);
    if text {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(framed).into()
    } else {
        framed.into()
    }
}

/// Decodes a gRPC-Web text body: base64 chunks, each padded on its own.
fn decode_base64_chunks(text: &[u8]) -> Bytes {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // A chunk ends after its padding, or at the end of the body.
        let end = match rest.iter().position(|&b| b == b'=') {
            Some(i) => i + rest[i..].iter().take_while(|&&b| b == b'=').count(),
            None => rest.len(),
        };
        out.extend(base64::engine::general_purpose::STANDARD.decode(&rest[..end]).expect("base64"));
        rest = &rest[end..];
    }
    out.into()
}

/// Splits a gRPC-Web response body into messages and the trailer block.
fn grpc_web_frames(mut body: Bytes) -> (Vec<Bytes>, String) {
    let (mut msgs, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        let chunk = body.split_to(len);
        if flags & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(&chunk));
        } else {
            msgs.push(chunk);
        }
    }
    assert!(body.is_empty(), "no bytes after the last frame");
    (msgs, trailers)
}

#[tokio::test]
async fn grpc_web_text_is_base64_both_ways_and_trailers_are_in_the_body() {
    let srv = TestServer::start(notes()).await;
    let c = srv.client().await;
    let note = c.msg("notes.v1.Note", json!({"text": "t", "times": 2})).encode_to_vec();
    for (ct, text) in [("application/grpc-web-text", true), ("application/grpc-web+proto", false)] {
        let headers = [("content-type", ct), ("accept", ct)];
        let res = http1(&srv, "POST", "/notes.v1.Notes/Repeat", &headers, grpc_web_body(&note, text)).await;
        assert_eq!(res.status, 200);
        assert!(res.header("content-type").starts_with(ct.trim_end_matches("+proto")), "{ct}: {:?}", res.headers);
        let body = if text { decode_base64_chunks(&res.body) } else { res.body.clone() };
        let (msgs, trailers) = grpc_web_frames(body);
        let texts: Vec<String> = msgs
            .into_iter()
            .map(|m| {
                text_of(&DynamicMessage::decode(srv.pool.get_message_by_name("notes.v1.Note").unwrap(), m).unwrap())
            })
            .collect();
        assert_eq!(texts, ["t #0", "t #1"], "{ct}");
        assert!(trailers.contains("grpc-status:0"), "{ct}: {trailers:?}");
    }
}

/// A plain HTTP/1.1 exchange's answer.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP request (HTTP/1.1, or HTTP/2 with prior knowledge) with hyper's client.
pub async fn http_request(
    srv: &TestServer,
    h2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> HttpAnswer {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(h2)
        .build_http::<http_body_util::Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(format!("http://{}{path}", srv.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(http_body_util::Full::new(body)).unwrap()).await.expect("an HTTP answer");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("the whole body").to_bytes();
    HttpAnswer { status, headers, body }
}

pub async fn http1(srv: &TestServer, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> HttpAnswer {
    http_request(srv, false, method, path, headers, body).await
}

#[tokio::test]
async fn connect_unary_and_server_streaming_with_buf_curl_over_http1_and_http2() {
    let srv = TestServer::start(notes()).await;
    for h2 in [false, true] {
        let out = curl(&srv, "connect", h2, "Say", json!({"text": "hi", "createdAt": "2024-01-02T03:04:05Z"})).await;
        assert_eq!(stdout_json(&out), [json!({"text": "said: hi", "createdAt": "2024-01-02T03:04:05Z"})], "h2={h2}");
        let out = curl(&srv, "connect", h2, "Repeat", json!({"text": "n", "times": 2})).await;
        assert_eq!(stdout_json(&out), [json!({"text": "n #0"}), json!({"text": "n #1"})], "h2={h2}");
    }
    let out = curl(&srv, "connect", false, "Say", json!({"text": "missing"})).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not_found") && err.contains("no note called missing"), "{err}");
    let out = curl(&srv, "connect", false, "Repeat", json!({"text": "fail", "times": 3})).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("out_of_range"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fail #0"));
}

const CONNECT_JSON: [(&str, &str); 2] = [("content-type", "application/json"), ("connect-protocol-version", "1")];

#[tokio::test]
async fn connect_unary_json_over_http1_and_http2_uses_the_proto3_json_mapping() {
    let srv = TestServer::start(notes()).await;
    for h2 in [false, true] {
        let body = json!({"text": "hi", "createdAt": "2024-01-02T03:04:05.500Z", "inner": {"counts": ["7", 8]}});
        let res = http_request(&srv, h2, "POST", "/notes.v1.Notes/Say", &CONNECT_JSON, body.to_string().into()).await;
        assert_eq!(res.status, 200, "{:?}", res.body);
        assert_eq!(res.header("content-type"), "application/json");
        // 64-bit integers are strings, names lowerCamelCase, timestamps RFC 3339.
        assert_eq!(
            res.json(),
            json!({"text": "said: hi", "createdAt": "2024-01-02T03:04:05.500Z", "inner": {"counts": ["7", "8"]}})
        );
    }
    // proto field names are accepted in requests too; an empty body is the empty message.
    let res =
        http1(&srv, "POST", "/notes.v1.Notes/Say", &CONNECT_JSON, r#"{"created_at": "2024-01-02T03:04:05Z"}"#.into())
            .await;
    assert_eq!(res.json(), json!({"text": "said: ", "createdAt": "2024-01-02T03:04:05Z"}));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &CONNECT_JSON, Bytes::new()).await;
    assert_eq!(res.json(), json!({"text": "said: "}));
}

#[tokio::test]
async fn connect_binary_unary_round_trips_protobuf() {
    let srv = TestServer::start(notes()).await;
    let c = srv.client().await;
    let note = c.msg("notes.v1.Note", json!({"text": "bin", "times": 4})).encode_to_vec();
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &[("content-type", "application/proto")], note.into()).await;
    assert_eq!((res.status, res.header("content-type")), (200, "application/proto"));
    let got = DynamicMessage::decode(srv.pool.get_message_by_name("notes.v1.Note").unwrap(), res.body).unwrap();
    assert_eq!((text_of(&got), got.get_field_by_name("times").unwrap().as_i32()), ("said: bin".to_owned(), Some(4)));
}

#[tokio::test]
async fn connect_errors_are_json_with_the_protocols_http_status() {
    let srv = TestServer::start(notes().max_message_size(1024)).await;
    let post = |path: &'static str, body: String, extra: Option<(&'static str, &'static str)>| {
        let srv = &srv;
        async move {
            let mut headers = CONNECT_JSON.to_vec();
            headers.extend(extra);
            http1(srv, "POST", path, &headers, body.into()).await
        }
    };
    let cases = [
        (post("/notes.v1.Notes/Say", r#"{"text":"missing"}"#.into(), None).await, 404, "not_found"),
        (post("/notes.v1.Notes/Nope", "{}".into(), None).await, 501, "unimplemented"),
        (post("/nope.Svc/Say", "{}".into(), None).await, 501, "unimplemented"),
        (post("/notes.v1.Notes/Say", r#"{"text": 5"#.into(), None).await, 400, "invalid_argument"),
        (post("/notes.v1.Notes/Say", r#"{"nope": 1}"#.into(), None).await, 400, "invalid_argument"),
        (post("/notes.v1.Notes/Say", r#"{"times": "x"}"#.into(), None).await, 400, "invalid_argument"),
        (
            post("/notes.v1.Notes/Say", format!(r#"{{"text":"{}"}}"#, "x".repeat(2000)), None).await,
            429,
            "resource_exhausted",
        ),
        (post("/notes.v1.Notes/Repeat", "{}".into(), None).await, 501, "unimplemented"),
        (post("/notes.v1.Notes/Say", "{}".into(), Some(("content-encoding", "br"))).await, 501, "unimplemented"),
        (post("/notes.v1.Notes/Say", "{}".into(), Some(("connect-timeout-ms", "soon"))).await, 400, "invalid_argument"),
        (
            post("/notes.v1.Notes/Say", r#"{"text":"slow"}"#.into(), Some(("connect-timeout-ms", "150"))).await,
            504,
            "deadline_exceeded",
        ),
    ];
    for (i, (res, status, code)) in cases.into_iter().enumerate() {
        assert_eq!(res.status, status, "case {i}: {:?}", res.body);
        assert_eq!(res.header("content-type"), "application/json", "case {i}");
        let body = res.json();
        assert_eq!(body["code"], code, "case {i}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}: {body}");
    }
}

#[tokio::test]
async fn connect_get_serves_only_methods_without_side_effects() {
    let srv = TestServer::start(notes()).await;
    let msg = percent_encode(r#"{"text":"g"}"#);
    let res = http1(
        &srv,
        "GET",
        &format!("/notes.v1.Notes/Lookup?connect=v1&encoding=json&message={msg}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((res.status, res.json()), (200, json!({"text": "said: g"})));
    // Binary, URL-safe base64.
    let c = srv.client().await;
    let note = c.msg("notes.v1.Note", json!({"text": "b64"})).encode_to_vec();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(note)
    };
    let res = http_request(
        &srv,
        true,
        "GET",
        &format!("/notes.v1.Notes/Lookup?connect=v1&encoding=proto&base64=1&message={b64}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(res.status, 200);
    let got = DynamicMessage::decode(srv.pool.get_message_by_name("notes.v1.Note").unwrap(), res.body).unwrap();
    assert_eq!(text_of(&got), "said: b64");
    // Say has side effects: GET is refused, POST is the way.
    let res =
        http1(&srv, "GET", &format!("/notes.v1.Notes/Say?connect=v1&encoding=json&message={msg}"), &[], Bytes::new())
            .await;
    assert_eq!((res.status, res.header("allow")), (405, "POST"));
    assert_eq!(res.json()["code"], "unimplemented");
    let res = http1(&srv, "GET", "/notes.v1.Notes/Lookup?connect=v1&encoding=json", &[], Bytes::new()).await;
    assert_eq!((res.status, &res.json()["code"]), (400, &json!("invalid_argument")));
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn envelope(flags: u8, msg: &[u8]) -> Bytes {
    let mut out = Vec::new();
    out.put_u8(flags);
    out.put_u32(msg.len() as u32);
    out.put_slice(msg);
    out.into()
}

/// Splits a Connect stream into its messages and the end-stream message.
fn connect_frames(mut body: Bytes) -> (Vec<Bytes>, Value) {
    let mut msgs = Vec::new();
    while body.len() >= 5 {
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        let chunk = body.split_to(len);
        if flags & 0x02 != 0 {
            assert!(body.is_empty(), "the end-stream message is last");
            return (msgs, serde_json::from_slice(&chunk).unwrap());
        }
        msgs.push(chunk);
    }
    panic!("no end-stream message")
}

#[tokio::test]
async fn connect_json_streams_end_with_an_end_stream_message() {
    let srv = TestServer::start(notes()).await;
    let ct = [("content-type", "application/connect+json")];
    for h2 in [false, true] {
        let req = envelope(0, br#"{"text":"s","times":2}"#);
        let res = http_request(&srv, h2, "POST", "/notes.v1.Notes/Repeat", &ct, req).await;
        assert_eq!((res.status, res.header("content-type")), (200, "application/connect+json"));
        let (msgs, end) = connect_frames(res.body);
        let msgs: Vec<Value> = msgs.iter().map(|m| serde_json::from_slice(m).unwrap()).collect();
        assert_eq!(msgs, [json!({"text": "s #0"}), json!({"text": "s #1"})]);
        assert_eq!(end, json!({}));
    }
    // An error after one reply, and errors before any: HTTP 200, the error in the end-stream message.
    let res = http1(&srv, "POST", "/notes.v1.Notes/Repeat", &ct, envelope(0, br#"{"text":"fail","times":2}"#)).await;
    let (msgs, end) = connect_frames(res.body);
    assert_eq!((msgs.len(), &end["error"]["code"]), (1, &json!("out_of_range")));
    for (path, body, code) in [
        ("/notes.v1.Notes/Repeat", envelope(0, b"{nope"), "invalid_argument"),
        ("/notes.v1.Notes/Repeat", Bytes::from_static(b"\0\0"), "invalid_argument"),
        // Compressed, but no connect-content-encoding says how.
        ("/notes.v1.Notes/Repeat", envelope(1, b"{}"), "invalid_argument"),
        ("/notes.v1.Notes/Say", envelope(0, b"{}"), "unimplemented"),
        ("/notes.v1.Notes/Gone", envelope(0, b"{}"), "unimplemented"),
    ] {
        let res = http1(&srv, "POST", path, &ct, body).await;
        assert_eq!(res.status, 200);
        let (msgs, end) = connect_frames(res.body);
        assert!(msgs.is_empty());
        assert_eq!(end["error"]["code"], code, "{path}: {end}");
    }
    // Codecs Connect does not name are 415.
    let res =
        http1(&srv, "POST", "/notes.v1.Notes/Repeat", &[("content-type", "application/connect+xml")], Bytes::new())
            .await;
    assert_eq!(res.status, 415);
}

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

#[tokio::test]
async fn post_json_reaches_every_method_and_errors_are_google_rpc_status() {
    let srv = TestServer::start(notes()).await;
    for h2 in [false, true] {
        let body = r#"{"text":"j","createdAt":"2024-01-02T03:04:05Z"}"#;
        let res = http_request(&srv, h2, "POST", "/notes.v1.Notes/Say", &JSON, body.into()).await;
        assert_eq!((res.status, res.json()), (200, json!({"text": "said: j", "createdAt": "2024-01-02T03:04:05Z"})));
    }
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &JSON, r#"{"text":"missing"}"#.into()).await;
    assert_eq!((res.status, res.json()), (404, json!({"code": 5, "message": "no note called missing", "details": []})));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &JSON, r#"{"text":"#.into()).await;
    assert_eq!((res.status, &res.json()["code"]), (400, &json!(3)));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &JSON, "[1]".into()).await;
    assert_eq!((res.status, &res.json()["code"]), (400, &json!(3)));
    let slow = [JSON[0], ("grpc-timeout", "150m")];
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &slow, r#"{"text":"slow"}"#.into()).await;
    assert_eq!((res.status, &res.json()["code"]), (504, &json!(4)));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Collect", &JSON, "{}".into()).await;
    assert_eq!((res.status, &res.json()["code"]), (501, &json!(12)));
    let res = http1(&srv, "POST", "/no/where", &JSON, "{}".into()).await;
    assert_eq!((res.status, &res.json()["code"]), (404, &json!(5)));
    // A server stream: one {"result": ...} per line, then {"error": ...} if it fails.
    let res = http1(&srv, "POST", "/notes.v1.Notes/Repeat", &JSON, r#"{"text":"fail","times":3}"#.into()).await;
    assert_eq!((res.status, res.header("content-type")), (200, "application/x-ndjson"));
    let lines: Vec<Value> =
        res.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(lines[0], json!({"result": {"text": "fail #0"}}));
    assert_eq!(lines[1]["error"]["code"], 11);
    assert_eq!(lines.len(), 2);
}

#[tokio::test]
async fn json_names_proto_writes_field_names_as_declared() {
    let srv = TestServer::start(notes().json_names(protoserve::JsonNames::Proto)).await;
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &JSON, r#"{"createdAt":"2024-01-02T03:04:05Z"}"#.into()).await;
    assert_eq!(res.json(), json!({"text": "said: ", "created_at": "2024-01-02T03:04:05Z"}));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &CONNECT_JSON, "{}".into()).await;
    assert_eq!(res.json(), json!({"text": "said: "}));
}

/// The request a transcoded call reached its handler with (the handler echoes it as JSON).
async fn transcoded(srv: &TestServer, method: &str, path: &str, body: &str) -> Value {
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &JSON };
    let res = http1(srv, method, path, headers, body.to_owned().into()).await;
    assert_eq!(res.status, 200, "{method} {path}: {:?}", res.body);
    serde_json::from_str(res.json()["text"].as_str().expect("the echo")).unwrap()
}

#[tokio::test]
async fn google_api_http_rules_bind_paths_bodies_and_query_parameters() {
    let srv = TestServer::start(notes()).await;
    // Path template with a multi-segment variable; query parameters for the rest
    // (repeated, nested, bool, int64).
    let got = transcoded(
        &srv,
        "GET",
        "/v1/shelves/s1/notes/n%201?note_id=x&tags=a&tags=b&verbose=true&filter.label=L&filter.counts=7",
        "",
    )
    .await;
    assert_eq!(
        got,
        json!({"name": "shelves/s1/notes/n 1", "note_id": "x", "tags": ["a", "b"], "verbose": true,
               "filter": {"label": "L", "counts": ["7"]}})
    );
    // additional_bindings.
    assert_eq!(transcoded(&srv, "GET", "/v1/notes/42", "").await, json!({"note_id": "42"}));
    // body: "note" plus a query parameter.
    assert_eq!(
        transcoded(&srv, "POST", "/v1/shelves/s1/notes?request_id=r", r#"{"text":"hi"}"#).await,
        json!({"parent": "shelves/s1", "note": {"text": "hi"}, "request_id": "r"})
    );
    // body: "*" with a nested path variable (note.name) merged into it.
    assert_eq!(
        transcoded(&srv, "PATCH", "/v1/shelves/s/notes/n", r#"{"note":{"text":"t"},"update_mask":"text"}"#).await,
        json!({"note": {"name": "shelves/s/notes/n", "text": "t"}, "update_mask": "text"})
    );
    // A verb.
    assert_eq!(
        transcoded(&srv, "DELETE", "/v1/shelves/s/notes/n:purge", "").await,
        json!({"name": "shelves/s/notes/n"})
    );
    // `**` and response_body.
    let res = http1(&srv, "GET", "/v1/files/a/b/c.txt?page_size=5", &[], Bytes::new()).await;
    assert_eq!((res.status, res.json()), (200, json!(["a/b/c.txt/a", "a/b/c.txt/b"])));
    // HTTP/2 too.
    let res = http_request(&srv, true, "GET", "/v1/notes/7", &[], Bytes::new()).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn transcoding_errors_are_statuses_with_the_gateway_http_codes() {
    let srv = TestServer::start(notes()).await;
    for (method, path, body, status, code) in [
        ("GET", "/v1/shelves/s/notes/n?nope=1", "", 400, 3),
        ("GET", "/v1/shelves/s/notes/n?verbose=maybe", "", 400, 3),
        ("GET", "/v1/files/x?page_size=many", "", 400, 3),
        ("GET", "/v1/shelves/s/notes/n?filter=x", "", 400, 3),
        ("POST", "/v1/shelves/s/notes", "{not json", 400, 3),
        ("POST", "/v1/shelves/s/notes", r#"{"nope": 1}"#, 400, 3),
        ("PUT", "/v1/shelves/s/notes/n", "{}", 404, 5),
        ("GET", "/v1/shelves/s/notes/n%FF", "", 404, 5),
    ] {
        let headers: &[(&str, &str)] = if body.is_empty() { &[("content-type", "application/json")] } else { &JSON };
        let res = http1(&srv, method, path, headers, body.to_owned().into()).await;
        assert_eq!(res.status, status, "{method} {path}: {:?}", res.body);
        let json = res.json();
        assert_eq!(json["code"], code, "{method} {path}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Not JSON and nothing matches: what is served, as before.
    let res = http1(&srv, "GET", "/v1/nothing", &[], Bytes::new()).await;
    assert_eq!(res.status, 415);
}

#[tokio::test]
async fn a_new_annotation_is_live_after_the_reload() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&web_dir(), dir.path());
    let server = notes_in(dir.path()).build().unwrap();
    let handle = server.reload_handle();
    let srv = TestServer::run(server).await;
    let res = http1(&srv, "POST", "/v1/say", &JSON, r#"{"text":"x"}"#.into()).await;
    assert_eq!(res.status, 404);
    let file = dir.path().join("notes.proto");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "rpc Say(Note) returns (Note);",
        "rpc Say(Note) returns (Note) { option (google.api.http) = { post: \"/v1/say\" body: \"*\" }; }",
    );
    std::fs::write(&file, text).unwrap();
    handle.reload().await.unwrap();
    let res = http1(&srv, "POST", "/v1/say", &JSON, r#"{"text":"x"}"#.into()).await;
    assert_eq!((res.status, res.json()), (200, json!({"text": "said: x"})));
}

#[tokio::test]
async fn cors_preflights_are_answered_and_protocol_headers_exposed() {
    let srv = TestServer::start(notes().cors_origin("https://app.example").cors_origin("http://localhost:3000")).await;
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type,connect-protocol-version,x-grpc-web"),
    ];
    for h2 in [false, true] {
        let res = http_request(&srv, h2, "OPTIONS", "/notes.v1.Notes/Say", &preflight, Bytes::new()).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("access-control-allow-origin"), "https://app.example");
        assert!(res.header("access-control-allow-methods").contains("POST"), "{:?}", res.headers);
        assert_eq!(res.header("access-control-allow-headers"), "content-type,connect-protocol-version,x-grpc-web");
        assert!(!res.header("access-control-max-age").is_empty());
    }
    // The calls themselves carry the origin and expose the status headers.
    let mut headers = CONNECT_JSON.to_vec();
    headers.push(("origin", "http://localhost:3000"));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &headers, "{}".into()).await;
    assert_eq!((res.status, res.header("access-control-allow-origin")), (200, "http://localhost:3000"));
    let exposed = res.header("access-control-expose-headers");
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "{exposed}");
    let c = srv.client().await;
    let note = c.msg("notes.v1.Note", json!({"text": "w"})).encode_to_vec();
    let web = [("content-type", "application/grpc-web+proto"), ("origin", "https://app.example")];
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &web, grpc_web_body(&note, false)).await;
    assert_eq!((res.status, res.header("access-control-allow-origin")), (200, "https://app.example"));
    // Another origin gets no grant.
    let other = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    let res = http1(&srv, "OPTIONS", "/notes.v1.Notes/Say", &other, Bytes::new()).await;
    assert!(res.headers.get("access-control-allow-origin").is_none(), "{:?}", res.headers);
}

#[tokio::test]
async fn cors_star_allows_any_origin_and_no_flag_means_no_cors() {
    let srv = TestServer::start(notes().cors_origin("*")).await;
    let preflight = [("origin", "https://any.example"), ("access-control-request-method", "POST")];
    let res = http1(&srv, "OPTIONS", "/v1/notes/1", &preflight, Bytes::new()).await;
    assert_eq!((res.status, res.header("access-control-allow-origin")), (200, "*"));
    let srv = TestServer::start(notes()).await;
    let res = http1(&srv, "OPTIONS", "/v1/notes/1", &preflight, Bytes::new()).await;
    assert!(res.headers.get("access-control-allow-origin").is_none());
    assert_eq!(res.status, 415);
}

#[test]
fn cli_takes_cors_origins_and_json_names() {
    use protoserve::{Command as Cmd, Config};
    let cfg = Config::try_parse_from([
        "protoserve",
        "serve",
        "--cors-origin",
        "https://a.example",
        "--cors-origin",
        "*",
        "--json-names",
        "proto",
    ])
    .unwrap();
    let Cmd::Serve(s) = cfg.command else { panic!("serve") };
    assert_eq!(s.cors_origins, ["https://a.example", "*"]);
    assert_eq!(s.json_names, protoserve::JsonNames::Proto);
    let err = Config::try_parse_from(["protoserve", "serve", "--cors-origin", "a.example/x"]).unwrap_err();
    assert!(err.to_string().contains("not an origin"), "{err}");
    assert!(Config::try_parse_from(["protoserve", "serve", "--json-names", "snake"]).is_err());
}

#[tokio::test]
async fn validation_details_reach_connect_and_json_clients() {
    let srv = TestServer::users().await;
    let body = r#"{"name":"a","email":"nope"}"#;
    let res = http1(&srv, "POST", "/users.UserService/CreateUser", &CONNECT_JSON, body.into()).await;
    assert_eq!(res.status, 400);
    let json = res.json();
    assert_eq!(json["code"], "invalid_argument");
    assert_eq!(json["details"][0]["type"], "google.rpc.BadRequest", "{json}");
    assert!(json["details"][0]["value"].as_str().is_some_and(|v| !v.is_empty() && !v.ends_with('=')));
    let res = http1(&srv, "POST", "/users.UserService/CreateUser", &JSON, body.into()).await;
    assert_eq!(res.status, 400);
    let json = res.json();
    assert_eq!(json["code"], 3);
    assert_eq!(json["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest", "{json}");
    assert!(json["details"][0]["fieldViolations"][0]["field"].as_str().is_some_and(|f| f.contains("email")), "{json}");
    // Created through Connect, read back through HTTP/JSON: one store behind every protocol.
    let ok = r#"{"name":"ann","email":"ann@example.com"}"#;
    let res = http1(&srv, "POST", "/users.UserService/CreateUser", &CONNECT_JSON, ok.into()).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let id = res.json()["id"].as_str().unwrap().to_owned();
    let res = http1(&srv, "POST", "/users.UserService/GetUser", &JSON, json!({"userId": id}).to_string().into()).await;
    assert_eq!((res.status, &res.json()["email"]), (200, &json!("ann@example.com")));
}

#[tokio::test]
async fn random_paths_queries_and_bodies_get_statuses_never_a_server_error() {
    let srv = TestServer::start(notes()).await;
    let mut rng = fastrand::Rng::with_seed(15);
    let pieces = [
        "/v1",
        "/shelves",
        "/s",
        "/notes",
        "/n",
        "/files",
        "/**",
        "/%",
        "%2F",
        "%FF",
        ":purge",
        ":",
        "/notes.v1.Notes",
        "/Say",
        "/Lookup",
        "/Repeat",
        "?",
        "&",
        "=",
        "note_id",
        "tags",
        "filter.label",
        "filter",
        ".",
        "verbose",
        "true",
        "+",
        "page_size",
        "connect=v1",
        "encoding=json",
        "message=",
        "base64=1",
        "%7B",
        "%7D",
    ];
    let bodies = ["", "{}", "{", "[]", "null", r#"{"text":1}"#, r#"{"note":{"name":5}}"#, "\u{0}", r#"{"times":"9"}"#];
    let mut sent = 0;
    for i in 0..400 {
        let mut path = String::from("/");
        for _ in 0..rng.usize(1..8) {
            path.push_str(pieces[rng.usize(..pieces.len())]);
        }
        let path = path.replace("//", "/");
        let Ok(uri) = path.parse::<http::Uri>() else { continue };
        let method = ["GET", "POST", "PATCH", "DELETE", "PUT"][rng.usize(..5)];
        let ct = ["application/json", "application/proto", "application/connect+json", ""][rng.usize(..4)];
        let mut headers = Vec::new();
        if !ct.is_empty() {
            headers.push(("content-type", ct));
        }
        if rng.bool() {
            headers.push(("connect-protocol-version", "1"));
        }
        let body = bodies[rng.usize(..bodies.len())];
        sent += 1;
        let res = http_request(&srv, i % 2 == 0, method, &uri.to_string(), &headers, body.to_owned().into()).await;
        // Protobuf bytes that do not decode are INTERNAL naming the method, as over gRPC.
        if res.status == 500 && ct == "application/proto" {
            assert_eq!(res.json()["code"], "internal");
            assert!(res.json()["message"].as_str().unwrap().contains("is not a valid notes.v1.Note"));
            continue;
        }
        assert!(
            [200, 400, 404, 405, 415, 429, 501].contains(&res.status),
            "{method} {uri} ({ct}, {body:?}): {} {:?}",
            res.status,
            res.body
        );
    }
    assert!(sent > 200, "most random paths are valid URIs ({sent} sent)");
}

#[tokio::test]
async fn health_answers_grpc_web_and_handlers_see_the_same_metadata_over_every_protocol() {
    let srv = TestServer::start(notes().unary("notes.v1.Notes/Lookup", |call: Call<DynamicMessage>| async move {
        let mut keys: Vec<String> = call.metadata.keys().map(|k| format!("{k:?}")).collect();
        keys.sort();
        let mut reply = call.reply();
        let x = call.metadata.get("x-who").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        reply.set_field_by_name("text", prost_reflect::Value::String(format!("{x} {}", keys.join(","))));
        Ok(reply)
    }))
    .await;
    let web = [("content-type", "application/grpc-web+proto")];
    let res = http1(&srv, "POST", "/grpc.health.v1.Health/Check", &web, grpc_web_body(&[], false)).await;
    let (msgs, trailers) = grpc_web_frames(res.body);
    assert_eq!(&msgs[0][..], [8, 1], "SERVING");
    assert!(trailers.contains("grpc-status:0"));
    // Connect and JSON: the caller's header arrives, the protocol's own do not.
    let headers = [CONNECT_JSON[0], CONNECT_JSON[1], ("x-who", "ann"), ("connect-timeout-ms", "5000")];
    let res = http1(&srv, "POST", "/notes.v1.Notes/Lookup", &headers, "{}".into()).await;
    let text = res.json()["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("ann ") && text.contains("x-who"), "{text}");
    for gone in ["content-type", "content-length", "connect-protocol-version", "connect-timeout-ms"] {
        assert!(!text.contains(gone), "{gone} in {text}");
    }
}

#[tokio::test]
async fn large_json_requests_and_replies_round_trip() {
    let srv = TestServer::start(notes()).await;
    let big = "x".repeat(200 * 1024);
    let body = json!({"text": big}).to_string();
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &CONNECT_JSON, body.clone().into()).await;
    assert_eq!((res.status, res.json()["text"].as_str().map(str::len)), (200, Some(big.len() + 6)));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &JSON, body.into()).await;
    assert_eq!((res.status, res.json()["text"].as_str().map(str::len)), (200, Some(big.len() + 6)));
    // Transcoded, body "*": the echo holds the whole request.
    let res =
        http1(&srv, "PATCH", "/v1/shelves/s/notes/n", &JSON, json!({"note": {"text": big}}).to_string().into()).await;
    assert_eq!(res.status, 200);
    assert!(res.json()["text"].as_str().is_some_and(|t| t.len() > big.len()));
}

#[tokio::test]
async fn rules_that_do_not_fit_are_left_out_and_streams_transcode_to_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.proto"),
        r#"syntax = "proto3";
package w;
import "google/api/annotations.proto";
service W {
  rpc Watch(Req) returns (stream Req) {
    option (google.api.http) = { get: "/v1/watch/{id}" additional_bindings { get: "/v1/{nope}" } };
  }
  rpc BadBody(Req) returns (Req) { option (google.api.http) = { post: "/v1/bad" body: "nope" }; }
  rpc BadPath(Req) returns (Req) { option (google.api.http) = { get: "v1/no-slash" }; }
  rpc BadVar(Req) returns (Req) { option (google.api.http) = { get: "/v1/tags/{tags}" }; }
}
message Req { string id = 1; repeated string tags = 2; }
"#,
    )
    .unwrap();
    let srv = TestServer::start(Server::builder().schema_dir(dir.path()).server_streaming(
        "w.W/Watch",
        |call: Call<DynamicMessage>| async move {
            let m = call.message;
            Ok(Box::pin(futures_util::stream::iter([Ok(m.clone()), Ok(m)])) as ReplyStream)
        },
    ))
    .await;
    let res = http1(&srv, "GET", "/v1/watch/7", &[], Bytes::new()).await;
    assert_eq!((res.status, res.header("content-type")), (200, "application/x-ndjson"));
    assert_eq!(&res.body[..], b"{\"result\":{\"id\":\"7\"}}\n{\"result\":{\"id\":\"7\"}}\n");
    for (method, path) in [("GET", "/v1/x"), ("POST", "/v1/bad"), ("GET", "/v1/tags/a")] {
        let res = http1(&srv, method, path, &JSON, "{}".into()).await;
        assert_eq!(res.status, 404, "{method} {path} has no rule");
    }
    // The methods themselves still answer at their own paths.
    let res = http1(&srv, "POST", "/w.W/BadBody", &JSON, "{}".into()).await;
    assert_eq!(res.status, 501, "served (nothing answers it: UNIMPLEMENTED)");
}

#[tokio::test]
async fn buf_curl_over_grpc_web_finds_the_schema_by_reflection() {
    let srv = TestServer::start(notes()).await;
    let url = format!("http://{}", srv.addr);
    let out = buf_curl(vec!["--protocol".into(), "grpcweb".into(), "--list-methods".into(), url.clone()]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("notes.v1.Notes/Say"),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = ["--protocol", "grpcweb", "--data", r#"{"text":"r"}"#].map(String::from).to_vec();
    let out = buf_curl([args, vec![format!("{url}/notes.v1.Notes/Say")]].concat()).await;
    assert_eq!(stdout_json(&out), [json!({"text": "said: r"})]);
}

#[tokio::test]
async fn request_bodies_over_the_receive_limit_are_resource_exhausted_in_every_protocol() {
    let srv = TestServer::start(notes().max_message_size(1024)).await;
    let big = json!({"text": "x".repeat(4096)}).to_string();
    // HTTP/JSON, direct and transcoded.
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &JSON, big.clone().into()).await;
    assert_eq!((res.status, &res.json()["code"]), (429, &json!(8)));
    let res = http1(&srv, "PATCH", "/v1/shelves/s/notes/n", &JSON, big.clone().into()).await;
    assert_eq!((res.status, &res.json()["code"]), (429, &json!(8)));
    // A Connect stream: the end-stream message says so.
    let ct = [("content-type", "application/connect+json")];
    let res = http1(&srv, "POST", "/notes.v1.Notes/Repeat", &ct, envelope(0, big.as_bytes())).await;
    let (_, end) = connect_frames(res.body);
    assert_eq!(end["error"]["code"], "resource_exhausted");
    // gRPC-Web: tonic's framing limit, as for gRPC.
    let c = srv.client().await;
    let note = c.msg("notes.v1.Note", json!({"text": "x".repeat(4096)})).encode_to_vec();
    let web = [("content-type", "application/grpc-web+proto")];
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &web, grpc_web_body(&note, false)).await;
    let (msgs, trailers) = grpc_web_frames(res.body);
    let status = res.headers.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert!(msgs.is_empty());
    assert!(status.as_deref() == Some("8") || trailers.contains("grpc-status:8"), "{status:?} {trailers:?}");
}

#[tokio::test]
async fn connect_client_and_bidi_streams_with_buf_curl_and_by_hand() {
    let srv = TestServer::start(notes()).await;
    // buf curl: several JSON documents are several request messages; bidi needs HTTP/2.
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(&srv, dir.path()).display().to_string();
    for (method, h2, want) in [
        ("Collect", false, vec![json!({"text": "a+b+c"})]),
        ("Collect", true, vec![json!({"text": "a+b+c"})]),
        ("Chat", true, vec![json!({"text": "echo: a"}), json!({"text": "echo: b"}), json!({"text": "echo: c"})]),
    ] {
        let mut args =
            ["--protocol", "connect", "--schema", &schema, "--data", r#"{"text":"a"} {"text":"b"} {"text":"c"}"#]
                .map(String::from)
                .to_vec();
        if h2 {
            args.push("--http2-prior-knowledge".into());
        }
        args.push(format!("http://{}/notes.v1.Notes/{method}", srv.addr));
        assert_eq!(stdout_json(&buf_curl(args).await), want, "{method} h2={h2}");
    }
    // JSON by hand: several envelopes in, one message and the end-stream out.
    let ct = [("content-type", "application/connect+json")];
    let body = [envelope(0, br#"{"text":"x"}"#), envelope(0, br#"{"text":"y"}"#)].concat();
    let res = http1(&srv, "POST", "/notes.v1.Notes/Collect", &ct, body.into()).await;
    let (msgs, end) = connect_frames(res.body);
    assert_eq!((serde_json::from_slice::<Value>(&msgs[0]).unwrap(), end), (json!({"text": "x+y"}), json!({})));
    // A body that ends inside an envelope, and a bad message among good ones.
    let cut = envelope(0, br#"{"text":"x"}"#);
    let res = http1(&srv, "POST", "/notes.v1.Notes/Collect", &ct, cut.slice(..8)).await;
    assert_eq!(connect_frames(res.body).1["error"]["code"], "invalid_argument");
    let body = [envelope(0, br#"{"text":"x"}"#), envelope(0, b"{nope")].concat();
    let res = http1(&srv, "POST", "/notes.v1.Notes/Chat", &ct, body.into()).await;
    let (msgs, end) = connect_frames(res.body);
    assert!(msgs.len() <= 1);
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
}

#[tokio::test]
async fn buf_curl_over_connect_finds_the_schema_by_reflection() {
    let srv = TestServer::start(notes()).await;
    let url = format!("http://{}", srv.addr);
    let out = buf_curl(vec!["--protocol".into(), "connect".into(), "--list-methods".into(), url.clone()]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("notes.v1.Notes/Chat"),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = ["--protocol", "connect", "--data", r#"{"text":"r","times":1}"#].map(String::from).to_vec();
    let out = buf_curl([args.clone(), vec![format!("{url}/notes.v1.Notes/Say")]].concat()).await;
    assert_eq!(stdout_json(&out), [json!({"text": "said: r", "times": 1})]);
    let out = buf_curl([args, vec![format!("{url}/notes.v1.Notes/Repeat")]].concat()).await;
    assert_eq!(stdout_json(&out), [json!({"text": "r #0"})]);
    // Reflection speaks protobuf: a JSON reflection stream is told so in its end-stream message.
    let ct = [("content-type", "application/connect+json")];
    let res =
        http1(&srv, "POST", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &ct, envelope(0, b"{}")).await;
    assert_eq!(connect_frames(res.body).1["error"]["code"], "unimplemented");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn connect_gzip_requests_and_replies() {
    let srv = TestServer::start(notes().max_message_size(64 * 1024)).await;
    let long = "y".repeat(4000);
    // Unary: a gzip request, a gzip reply for a client that accepts it (and is large enough).
    let mut headers = CONNECT_JSON.to_vec();
    headers.extend([("content-encoding", "gzip"), ("accept-encoding", "br, gzip")]);
    let body = gzip(json!({"text": long}).to_string().as_bytes());
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &headers, body.into()).await;
    assert_eq!((res.status, res.header("content-encoding")), (200, "gzip"));
    let reply: Value = serde_json::from_slice(&gunzip(&res.body)).unwrap();
    assert_eq!(reply["text"].as_str().map(str::len), Some(long.len() + 6));
    // GET with compression=gzip (base64 of the gzip bytes).
    let msg = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gzip(br#"{"text":"z"}"#))
    };
    let path = format!("/notes.v1.Notes/Lookup?connect=v1&encoding=json&compression=gzip&base64=1&message={msg}");
    let res = http1(&srv, "GET", &path, &[], Bytes::new()).await;
    assert_eq!((res.status, res.json()), (200, json!({"text": "said: z"})));
    // A gzip bomb is refused at the limit, not inflated; bad gzip is invalid.
    let bomb = gzip(&vec![b' '; 1 << 20]);
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &headers, bomb.into()).await;
    assert_eq!((res.status, &res.json()["code"]), (429, &json!("resource_exhausted")));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Say", &headers, Bytes::from_static(b"not gzip")).await;
    assert_eq!((res.status, &res.json()["code"]), (400, &json!("invalid_argument")));
    // Streams: compressed envelopes in, compressed envelopes out.
    let ct = [
        ("content-type", "application/connect+json"),
        ("connect-content-encoding", "gzip"),
        ("connect-accept-encoding", "gzip"),
    ];
    let body = envelope(1, &gzip(json!({"text": long, "times": 2}).to_string().as_bytes()));
    let res = http1(&srv, "POST", "/notes.v1.Notes/Repeat", &ct, body).await;
    assert_eq!(res.header("connect-content-encoding"), "gzip");
    let mut raw = res.body;
    let mut texts = Vec::new();
    while raw.len() >= 5 {
        let flags = raw.get_u8();
        let len = raw.get_u32() as usize;
        let chunk = raw.split_to(len);
        if flags & 0x02 != 0 {
            assert_eq!(serde_json::from_slice::<Value>(&chunk).unwrap(), json!({}));
            break;
        }
        assert_eq!(flags, 0x01, "large replies are compressed");
        let v: Value = serde_json::from_slice(&gunzip(&chunk)).unwrap();
        texts.push(v["text"].as_str().unwrap().len());
    }
    assert_eq!(texts, [long.len() + 3, long.len() + 3]);
    // Collect: several compressed envelopes.
    let body = [envelope(1, &gzip(br#"{"text":"p"}"#)), envelope(0, br#"{"text":"q"}"#)].concat();
    let res = http1(&srv, "POST", "/notes.v1.Notes/Collect", &ct, body.into()).await;
    let (msgs, end) = connect_frames(res.body);
    assert_eq!((serde_json::from_slice::<Value>(&msgs[0]).unwrap(), end), (json!({"text": "p+q"}), json!({})));
}
