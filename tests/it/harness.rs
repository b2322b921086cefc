//! Shared test harness: an in-process server on 127.0.0.1:0 and a dynamic client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BufMut;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use protoserve::{Builder, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn users_dir() -> PathBuf {
    root().join("schemas/users")
}

pub fn kinds_dir() -> PathBuf {
    root().join("tests/data/kinds")
}

/// A server running in this process; shuts down when dropped.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub pool: DescriptorPool,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(builder: Builder) -> TestServer {
        let server = builder.build().expect("server builds");
        Self::run(server).await
    }

    pub async fn run(server: Server) -> TestServer {
        init_logs();
        let pool = server.snapshot().schema().pool().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        TestServer { addr, pool, shutdown: Some(tx), task: Some(task) }
    }

    pub async fn users() -> TestServer {
        Self::start(Server::builder().schema_dir(users_dir())).await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.expect("connect")
    }

    pub async fn client(&self) -> Client {
        Client { grpc: tonic::client::Grpc::new(self.channel().await), pool: self.pool.clone() }
    }

    /// Asks the server to drain and returns the serve task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A plain HTTP/2 client: unlike tonic's Channel it does not enforce
/// `grpc-timeout` on its own, so deadline tests see the server's answer.
pub type RawHttp =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, tonic::body::Body>;

impl TestServer {
    pub fn raw_grpc(&self) -> tonic::client::Grpc<RawHttp> {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
        tonic::client::Grpc::with_origin(client, format!("http://{}", self.addr).parse().unwrap())
    }
}

/// A gRPC client that speaks DynamicMessage for any method of the pool.
#[derive(Clone)]
pub struct Client<T = Channel> {
    pub grpc: tonic::client::Grpc<T>,
    pub pool: DescriptorPool,
}

impl<T> Client<T> {
    pub fn with_grpc<U>(self, grpc: tonic::client::Grpc<U>) -> Client<U> {
        Client { grpc, pool: self.pool }
    }

    /// A message of type `name` from proto3 JSON.
    pub fn msg(&self, name: &str, json: serde_json::Value) -> DynamicMessage {
        let desc = self.pool.get_message_by_name(name).unwrap_or_else(|| panic!("no message {name}"));
        DynamicMessage::deserialize(desc, json).expect("valid JSON for message")
    }

    fn method(&self, path: &str) -> (MessageDescriptor, MessageDescriptor) {
        let (svc, m) = path.trim_start_matches('/').split_once('/').unwrap();
        let svc = self.pool.get_service_by_name(svc).unwrap_or_else(|| panic!("no service {svc}"));
        let m = svc.methods().find(|x| x.name() == m).unwrap_or_else(|| panic!("no method {path}"));
        (m.input(), m.output())
    }
}

impl<T> Client<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn with_pool(mut self, pool: DescriptorPool) -> Self {
        self.pool = pool;
        self
    }

    pub async fn unary(&mut self, path: &str, req: DynamicMessage) -> Result<DynamicMessage, Status> {
        self.unary_req(path, Request::new(req)).await
    }

    pub async fn unary_req(&mut self, path: &str, req: Request<DynamicMessage>) -> Result<DynamicMessage, Status> {
        let (_, out) = self.method(path);
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        let r = self.grpc.unary(req, path.parse().unwrap(), DynCodec(out)).await?;
        Ok(r.into_inner())
    }

    pub async fn server_stream(&mut self, path: &str, req: DynamicMessage) -> Result<Vec<DynamicMessage>, Status> {
        let (_, out) = self.method(path);
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        let mut s =
            self.grpc.server_streaming(Request::new(req), path.parse().unwrap(), DynCodec(out)).await?.into_inner();
        let mut v = Vec::new();
        while let Some(m) = s.message().await? {
            v.push(m);
        }
        Ok(v)
    }

    /// Starts a server-streaming call and returns the open response stream.
    pub async fn server_stream_open(
        &mut self,
        path: &str,
        req: DynamicMessage,
    ) -> Result<tonic::Streaming<DynamicMessage>, Status> {
        let (_, out) = self.method(path);
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        Ok(self.grpc.server_streaming(Request::new(req), path.parse().unwrap(), DynCodec(out)).await?.into_inner())
    }

    pub async fn client_stream(&mut self, path: &str, reqs: Vec<DynamicMessage>) -> Result<DynamicMessage, Status> {
        let (_, out) = self.method(path);
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        let stream = tokio_stream::iter(reqs);
        let r = self.grpc.client_streaming(Request::new(stream), path.parse().unwrap(), DynCodec(out)).await?;
        Ok(r.into_inner())
    }

    pub async fn bidi(&mut self, path: &str, reqs: Vec<DynamicMessage>) -> Result<Vec<DynamicMessage>, Status> {
        let (_, out) = self.method(path);
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        let stream = tokio_stream::iter(reqs);
        let mut s = self.grpc.streaming(Request::new(stream), path.parse().unwrap(), DynCodec(out)).await?.into_inner();
        let mut v = Vec::new();
        while let Some(m) = s.message().await? {
            v.push(m);
        }
        Ok(v)
    }

    /// Sends raw bytes to any path, decoding a reply as `reply_type`.
    pub async fn raw_unary_to(
        &mut self,
        path: &str,
        reply_type: &str,
        body: Vec<u8>,
    ) -> Result<DynamicMessage, Status> {
        let out = self.pool.get_message_by_name(reply_type).unwrap();
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        let r = self.grpc.unary(Request::new(body), path.parse().unwrap(), RawCodec(out)).await?;
        Ok(r.into_inner())
    }

    /// Sends raw bytes as the request body of a unary call.
    pub async fn raw_unary(&mut self, path: &str, body: Vec<u8>) -> Result<DynamicMessage, Status> {
        let (_, out) = self.method(path);
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
        let r = self.grpc.unary(Request::new(body), path.parse().unwrap(), RawCodec(out)).await?;
        Ok(r.into_inner())
    }
}

pub fn get_str(m: &DynamicMessage, field: &str) -> String {
    m.get_field_by_name(field).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

pub fn get_i64(m: &DynamicMessage, field: &str) -> i64 {
    let v = m.get_field_by_name(field).unwrap();
    v.as_i64().or(v.as_i32().map(i64::from)).or(v.as_u32().map(i64::from)).unwrap_or_default()
}

/// Codec for the client: encodes any DynamicMessage, decodes the given type.
#[derive(Clone)]
pub struct DynCodec(pub MessageDescriptor);

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEnc;
    type Decoder = DynDec;
    fn encoder(&mut self) -> DynEnc {
        DynEnc
    }
    fn decoder(&mut self) -> DynDec {
        DynDec(self.0.clone())
    }
}

pub struct DynEnc;
impl Encoder for DynEnc {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))
    }
}

pub struct DynDec(MessageDescriptor);
impl Decoder for DynDec {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// Codec that sends raw bytes (for malformed-input tests).
#[derive(Clone)]
pub struct RawCodec(pub MessageDescriptor);
pub struct RawEnc;
impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = DynamicMessage;
    type Encoder = RawEnc;
    type Decoder = DynDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> DynDec {
        DynDec(self.0.clone())
    }
}

/// Polls `f` every 10 ms until it returns Some, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Copies a directory tree (for tests that edit schemas).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// Decodes `google.rpc.Status` details into (field, description) pairs of a BadRequest.
pub fn bad_request_violations(status: &Status) -> Vec<(String, String)> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct BadRequest {
        #[prost(message, repeated, tag = "1")]
        field_violations: Vec<FieldViolation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct FieldViolation {
        #[prost(string, tag = "1")]
        field: String,
        #[prost(string, tag = "2")]
        description: String,
    }
    let st = RpcStatus::decode(status.details()).expect("details are a google.rpc.Status");
    st.details
        .iter()
        .filter(|a| a.type_url.ends_with("google.rpc.BadRequest"))
        .flat_map(|a| BadRequest::decode(a.value.as_slice()).unwrap().field_violations)
        .map(|v| (v.field, v.description))
        .collect()
}

/// Shows the server's logs in failing tests' output (RUST_LOG to change the level).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
}

/// A tool from `.venv/bin` (grpcio's Python, grpcurl), which `scripts/test.sh` installs.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(name);
    assert!(p.exists(), "{} is missing: run scripts/test.sh, which sets up the interop clients", p.display());
    p
}

/// The binary under test: `PROTOSERVE_BIN` (the release build in scripts/test.sh),
/// else the test profile's.
pub fn server_bin() -> PathBuf {
    std::env::var_os("PROTOSERVE_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_protoserve")), PathBuf::from)
}

/// Runs `cmd`, asserts it succeeded, returns its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
