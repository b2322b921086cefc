//! Operating the server: interceptors, bearer-token auth (in process, and the
//! binary with grpcio and grpcurl as clients), request logs, Prometheus metrics
//! scraped over plain HTTP/1.1, `--config`, `--max-concurrent-streams`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use protoserve::Server;
use protoserve::middleware::TokenAuth;
use tonic::Code;

use crate::cli::{spawn_server, spawn_server_env};
use crate::harness::*;

fn bearer<T>(req: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stop(child: std::process::Child) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn client_at(port: u16) -> Client {
    let pool = protoserve::schema::load(&[users_dir()]).unwrap().pool().clone();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    Client { grpc: tonic::client::Grpc::new(channel), pool }
}

// ---------------------------------------------------------------- interceptors

#[tokio::test]
async fn the_auth_interceptor_example_refuses_strangers_and_tells_handlers_who_called() {
    let srv = TestServer::start(crate::auth_example::builder(users_dir())).await;
    let mut c = srv.client().await;
    let req = || c.msg("users.GetUserRequest", serde_json::json!({"user_id": "u1"}));
    let (a, b, d) = (req(), req(), req());
    let err = c.unary_req("/users.UserService/GetUser", tonic::Request::new(a)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "Missing or invalid token"));
    let err = c.unary_req("/users.UserService/GetUser", bearer(b, "mallory-token")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A client cannot forge the interceptor's metadata: it is overwritten.
    let mut forged = bearer(d, "bob-token");
    forged.metadata_mut().insert("x-user", "alice".parse().unwrap());
    let user = c.unary_req("/users.UserService/GetUser", forged).await.unwrap();
    assert_eq!((get_str(&user, "id"), get_str(&user, "name")), ("u1".into(), "bob".into()));
    // The store's methods are behind the interceptor too.
    let list = c.msg("users.ListUsersRequest", serde_json::json!({}));
    assert_eq!(c.server_stream("/users.UserService/ListUsers", list).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_interceptor_sees_the_method_descriptor() {
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).interceptor(|method, _| {
        if method.is_server_streaming() {
            Err(tonic::Status::permission_denied(format!("{} is closed", method.name())))
        } else {
            Ok(())
        }
    }))
    .await;
    let mut c = srv.client().await;
    let list = c.msg("users.ListUsersRequest", serde_json::json!({}));
    let err = c.server_stream("/users.UserService/ListUsers", list).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::PermissionDenied, "ListUsers is closed"));
    let get = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "x"}));
    assert_eq!(c.unary("/users.UserService/GetUser", get).await.unwrap_err().code(), Code::NotFound);
}

// ------------------------------------------------------------------ token auth

#[tokio::test]
async fn token_auth_guards_methods_in_scope_and_leaves_health_and_reflection_open() {
    let auth = TokenAuth::new(["s3cret"]).scope(["*/Create*"]).unwrap();
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).token_auth(auth)).await;
    let mut c = srv.client().await;
    let create = || c.msg("users.CreateUserRequest", serde_json::json!({"name": "A", "email": "a@example.com"}));
    let (a, b) = (create(), create());
    let err = c.unary("/users.UserService/CreateUser", a).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "Missing or invalid token"));
    c.unary_req("/users.UserService/CreateUser", bearer(b, "s3cret")).await.unwrap();
    // Out of scope: open.
    let get = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "x"}));
    assert_eq!(c.unary("/users.UserService/GetUser", get).await.unwrap_err().code(), Code::NotFound);
    // Health stays open without --auth-all.
    let health = c.raw_unary_to("/grpc.health.v1.Health/Check", HEALTH_REPLY, Vec::new()).await.unwrap();
    assert_eq!(get_i64(&health, "page_size"), 1, "SERVING");
}

/// Reads a HealthCheckResponse: its `status` is field 1, a varint, as is
/// ListUsersRequest's `page_size` (SERVING is 1).
const HEALTH_REPLY: &str = "users.ListUsersRequest";

#[tokio::test]
async fn auth_all_covers_health_and_unknown_methods_too_whatever_the_scope() {
    let auth = TokenAuth::new(["s3cret"]).scope(["*/Delete*"]).unwrap().all(true);
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).token_auth(auth)).await;
    let mut c = srv.client().await;
    let err = c.raw_unary_to("/grpc.health.v1.Health/Check", HEALTH_REPLY, Vec::new()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "Missing or invalid token"));
    let out = c.pool.get_message_by_name(HEALTH_REPLY).unwrap();
    c.grpc.ready().await.unwrap();
    let ok = c
        .grpc
        .unary(bearer(Vec::<u8>::new(), "s3cret"), "/grpc.health.v1.Health/Check".parse().unwrap(), RawCodec(out))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // Unknown methods: strangers cannot probe which exist.
    let err = c.raw_unary_to("/users.UserService/Nope", HEALTH_REPLY, Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let out = c.pool.get_message_by_name(HEALTH_REPLY).unwrap();
    c.grpc.ready().await.unwrap();
    let nope = c
        .grpc
        .unary(bearer(Vec::<u8>::new(), "s3cret"), "/users.UserService/Nope".parse().unwrap(), RawCodec(out))
        .await;
    assert_eq!(nope.unwrap_err().code(), Code::Unimplemented);
    // Out of --auth-scope: open.
    let get = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "x"}));
    assert_eq!(c.unary("/users.UserService/GetUser", get).await.unwrap_err().code(), Code::NotFound);
}

/// The `grpc_code` counts of one method in a rendered exposition.
fn handled(text: &str, method: &str) -> BTreeMap<String, f64> {
    let (samples, _) = parse_exposition(text).unwrap();
    samples
        .into_iter()
        .filter(|s| s.name == "grpc_server_handled_total" && s.labels["grpc_method"] == method && s.value > 0.0)
        .map(|s| (s.labels["grpc_code"].clone(), s.value))
        .collect()
}

#[tokio::test]
async fn metrics_see_deadlines_cancellations_and_refusals_with_their_codes() {
    let auth = TokenAuth::new(["s3cret"]).scope(["*/CreateUser"]).unwrap();
    let server = Server::builder()
        .schema_dir(users_dir())
        .token_auth(auth)
        .observe(false, true)
        .unary("users.UserService/GetUser", |_call| std::future::pending())
        .server_streaming("users.UserService/ListUsers", |call| async move {
            let first = futures_util::stream::once(async move { Ok(call.reply()) });
            Ok(Box::pin(futures_util::StreamExt::chain(first, futures_util::stream::pending()))
                as protoserve::ReplyStream)
        })
        .build()
        .unwrap();
    let metrics = server.metrics().expect("metrics are on");
    let srv = TestServer::run(server).await;
    // A deadline: the raw client does not enforce grpc-timeout itself.
    let mut raw = srv.client().await.with_grpc(srv.raw_grpc());
    let get = raw.msg("users.GetUserRequest", serde_json::json!({"user_id": "x"}));
    let mut req = tonic::Request::new(get);
    req.set_timeout(Duration::from_millis(50));
    assert_eq!(raw.unary_req("/users.UserService/GetUser", req).await.unwrap_err().code(), Code::DeadlineExceeded);
    // A refusal.
    let mut c = srv.client().await;
    let create = c.msg("users.CreateUserRequest", serde_json::json!({"name": "A", "email": "a@x.io"}));
    assert_eq!(c.unary("/users.UserService/CreateUser", create).await.unwrap_err().code(), Code::Unauthenticated);
    // A stream the client walks away from after its first reply.
    let list = c.msg("users.ListUsersRequest", serde_json::json!({}));
    let mut stream = c.server_stream_open("/users.UserService/ListUsers", list).await.unwrap();
    assert!(stream.message().await.unwrap().is_some());
    drop(stream);
    eventually(Duration::from_secs(10), || {
        let text = metrics.render();
        async move { handled(&text, "ListUsers").contains_key("Canceled").then_some(()) }
    })
    .await;
    let text = metrics.render();
    assert_eq!(handled(&text, "GetUser"), BTreeMap::from([("DeadlineExceeded".to_owned(), 1.0)]), "{text}");
    assert_eq!(handled(&text, "CreateUser"), BTreeMap::from([("Unauthenticated".to_owned(), 1.0)]), "{text}");
    assert_eq!(handled(&text, "ListUsers"), BTreeMap::from([("Canceled".to_owned(), 1.0)]), "{text}");
    let (samples, _) = parse_exposition(&text).unwrap();
    let list = [("grpc_type", "server_stream"), ("grpc_method", "ListUsers")];
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &list), 1.0);
}

#[tokio::test]
async fn a_tokens_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# ops team\nfirst\n").unwrap();
    let auth = TokenAuth::new(Vec::<String>::new()).from_file(&file).unwrap();
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).token_auth(auth)).await;
    let mut c = srv.client().await;
    let get = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "x"}));
    let code = |r: Result<prost_reflect::DynamicMessage, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(c.unary_req("/users.UserService/GetUser", bearer(get.clone(), "first")).await), Code::NotFound);
    assert_eq!(
        code(c.unary_req("/users.UserService/GetUser", bearer(get.clone(), "second")).await),
        Code::Unauthenticated
    );
    std::fs::write(&file, "second\n").unwrap();
    eventually(Duration::from_secs(10), || {
        let (mut c, get) = (c.clone(), get.clone());
        async move {
            let r = c.unary_req("/users.UserService/GetUser", bearer(get, "second")).await;
            (r.unwrap_err().code() == Code::NotFound).then_some(())
        }
    })
    .await;
    assert_eq!(code(c.unary_req("/users.UserService/GetUser", bearer(get, "first")).await), Code::Unauthenticated);
}

/// grpcio sends raw bytes (no stubs needed): an empty ListUsersRequest, an
/// empty health check request; prints one `name code details` line per call.
const GRPCIO_CALLS: &str = r#"
import sys, grpc
addr = sys.argv[1]
calls = [
    ("no-token", "/users.UserService/ListUsers", None, True),
    ("wrong-token", "/users.UserService/ListUsers", "Bearer nope", True),
    ("good-token", "/users.UserService/ListUsers", "Bearer s3cret", True),
    ("health", "/grpc.health.v1.Health/Check", None, False),
]
with grpc.insecure_channel(addr) as ch:
    for name, path, auth, streaming in calls:
        md = [("authorization", auth)] if auth else []
        try:
            if streaming:
                list(ch.unary_stream(path)(b"", metadata=md, timeout=10))
            else:
                ch.unary_unary(path)(b"", metadata=md, timeout=10)
            print(name, "OK", "-")
        except grpc.RpcError as e:
            print(name, e.code().name, e.details())
"#;

#[test]
fn grpcio_and_grpcurl_against_the_binary_with_auth_tokens() {
    let python = venv_bin("python");
    let grpcurl = venv_bin("grpcurl");
    let (child, port) = spawn_server(&[users_dir().to_str().unwrap(), "--auth-token", "s3cret", "--no-watch"]);
    let out = Command::new(&python).args(["-c", GRPCIO_CALLS, &format!("127.0.0.1:{port}")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    // Reflection is open: grpcurl lists services without a token.
    let listed = Command::new(&grpcurl).args(["-plaintext", &format!("127.0.0.1:{port}"), "list"]).output().unwrap();
    let log = stop(child);
    assert!(out.status.success(), "{text}\n{}\n{log}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        lines,
        [
            "no-token UNAUTHENTICATED Missing or invalid token",
            "wrong-token UNAUTHENTICATED Missing or invalid token",
            "good-token OK -",
            "health OK -"
        ],
        "{log}"
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("users.UserService"), "{listed:?}");
}

#[test]
fn grpcurl_needs_the_token_for_reflection_with_auth_all() {
    let grpcurl = venv_bin("grpcurl");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let tokens = tokens.to_str().unwrap();
    let (child, port) =
        spawn_server(&[users_dir().to_str().unwrap(), "--auth-tokens", tokens, "--auth-all", "--no-watch"]);
    let addr = format!("127.0.0.1:{port}");
    let refused = Command::new(&grpcurl).args(["-plaintext", &addr, "list"]).output().unwrap();
    let allowed = Command::new(&grpcurl)
        .args(["-plaintext", "-H", "authorization: Bearer t0ken", &addr, "list"])
        .output()
        .unwrap();
    let called = Command::new(&grpcurl)
        .args(["-plaintext", "-H", "authorization: Bearer t0ken", "-d", r#"{"user_id":"x"}"#, &addr])
        .arg("users.UserService/GetUser")
        .output()
        .unwrap();
    let log = stop(child);
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && refused_err.contains("Missing or invalid token"), "{refused:?}\n{log}");
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("users.UserService"), "{allowed:?}\n{log}");
    assert!(String::from_utf8_lossy(&called.stderr).contains("NotFound"), "{called:?}\n{log}");
}

#[test]
fn auth_flags_without_tokens_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .args(["serve", users_dir().to_str().unwrap(), "--auth-all", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("need tokens"), "{out:?}");
    let missing = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .args(["serve", users_dir().to_str().unwrap(), "--auth-tokens", "/nonexistent/tokens", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/tokens"), "{missing:?}");
}

// ---------------------------------------------------------------- request logs

#[test]
fn one_json_log_line_per_rpc() {
    let bin = Path::new(env!("CARGO_BIN_EXE_protoserve"));
    let (child, port) = spawn_server_env(bin, &[users_dir().to_str().unwrap(), "--log-format", "json"], &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = client_at(port).await;
        let req = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "nobody"}));
        assert_eq!(c.unary("/users.UserService/GetUser", req).await.unwrap_err().code(), Code::NotFound);
        let req = c.msg("users.CreateUserRequest", serde_json::json!({"name": "A", "email": "a@example.com"}));
        c.unary("/users.UserService/CreateUser", req).await.unwrap();
        let list = c.msg("users.ListUsersRequest", serde_json::json!({}));
        assert_eq!(c.server_stream("/users.UserService/ListUsers", list).await.unwrap().len(), 1);
        // Each CreateUserRequest {name: "B", email: "b@x.io"} is 3 + 8 = 11 bytes.
        let bulk = vec![c.msg("users.CreateUserRequest", serde_json::json!({"name": "B", "email": "b@x.io"})); 3];
        c.client_stream("/users.UserService/BulkCreateUsers", bulk).await.unwrap();
    });
    // Closes the client's connection: the server's drain does not wait for it.
    drop(rt);
    let log = stop(child);
    let rpcs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v["target"] == "protoserve::rpc")
        .collect();
    assert_eq!(rpcs.len(), 4, "{log}");
    let f = |i: usize| rpcs[i]["fields"].clone();
    assert_eq!(
        (f(0)["method"].as_str(), f(0)["code"].as_str()),
        (Some("/users.UserService/GetUser"), Some("NotFound"))
    );
    assert_eq!(rpcs[0]["level"], "INFO");
    assert_eq!(f(1)["code"], "Ok");
    assert_eq!(f(2)["method"], "/users.UserService/ListUsers");
    for i in 0..3 {
        let fields = f(i);
        assert!(fields["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{fields}");
        assert_eq!(fields["generation"], 1, "{fields}");
        assert!(fields["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{fields}");
        assert!(fields["request_bytes"].as_u64().is_some(), "{fields}");
    }
    // "nobody" is 6 bytes in a length-delimited field: 8 request bytes; NotFound sends none.
    assert_eq!((f(0)["request_bytes"].as_u64(), f(0)["response_bytes"].as_u64()), (Some(8), Some(0)));
    // The created user comes back in full, and the list streams that same user.
    let created = f(1)["response_bytes"].as_u64().unwrap();
    assert!(created > 20, "{}", f(1));
    assert_eq!(f(2)["response_bytes"].as_u64(), Some(created));
    // A client stream's request bytes are counted as its messages arrive.
    assert_eq!(
        (f(3)["method"].as_str(), f(3)["request_bytes"].as_u64()),
        (Some("/users.UserService/BulkCreateUsers"), Some(33))
    );
}

#[test]
fn text_log_lines_can_be_filtered_out_with_rust_log() {
    let bin = Path::new(env!("CARGO_BIN_EXE_protoserve"));
    for (filter, expect_line) in [("info", true), ("info,protoserve::rpc=off", false)] {
        let (child, port) = spawn_server_env(bin, &[users_dir().to_str().unwrap()], &[("RUST_LOG", filter)]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = client_at(port).await;
            let req = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "nobody"}));
            assert_eq!(c.unary("/users.UserService/GetUser", req).await.unwrap_err().code(), Code::NotFound);
        });
        drop(rt);
        let log = stop(child);
        let line = log.lines().find(|l| l.contains("protoserve::rpc"));
        assert_eq!(line.is_some(), expect_line, "{filter}: {log}");
        if let Some(line) = line {
            for part in ["method=/users.UserService/GetUser", "code=NotFound", "peer=127.0.0.1:", "generation=1"] {
                assert!(line.contains(part), "{part} missing in {line}");
            }
        }
    }
}

// --------------------------------------------------------------------- metrics

/// One sample of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly: every line is a comment
/// (`# HELP`/`# TYPE` with a known type) or a sample; anything else fails.
fn parse_exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(_), _) => {}
                (Some("TYPE"), Some(name), Some(t @ ("counter" | "gauge" | "histogram" | "summary" | "untyped"))) => {
                    types.insert(name.to_owned(), t.to_owned());
                }
                _ => return Err(format!("bad comment line: {line}")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| format!("no value: {line}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| format!("unclosed labels: {line}"))?;
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').ok_or_else(|| format!("bad label: {line}"))?;
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or_else(|| format!("unquoted: {line}"))?;
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name, labels)
            }
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            return Err(format!("bad metric name: {line}"));
        }
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok((samples, types))
}

/// GET /metrics over a plain TCP connection (HTTP/1.1), returning the status line, headers and body.
fn scrape(port: u16) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}")).value
}

#[test]
fn metrics_follow_go_grpc_prometheus_and_new_methods_appear_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&users_dir(), dir.path());
    let mport = free_port();
    let (child, port) = spawn_server(&[dir.path().to_str().unwrap(), "--metrics-addr", &format!("127.0.0.1:{mport}")]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = client_at(port).await;
        let req = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "nobody"}));
        assert_eq!(c.unary("/users.UserService/GetUser", req).await.unwrap_err().code(), Code::NotFound);
        for i in 0..2 {
            let req = c.msg("users.CreateUserRequest", serde_json::json!({"name": "A", "email": format!("a{i}@x.io")}));
            c.unary("/users.UserService/CreateUser", req).await.unwrap();
        }
        let list = c.msg("users.ListUsersRequest", serde_json::json!({}));
        assert_eq!(c.server_stream("/users.UserService/ListUsers", list).await.unwrap().len(), 2);
        let bulk = vec![c.msg("users.CreateUserRequest", serde_json::json!({"name": "B", "email": "b@x.io"})); 3];
        c.client_stream("/users.UserService/BulkCreateUsers", bulk).await.unwrap();
    });
    drop(rt);
    let (head, body) = scrape(mport);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let (samples, types) = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    for (name, t) in [
        ("grpc_server_started_total", "counter"),
        ("grpc_server_handled_total", "counter"),
        ("grpc_server_msg_received_total", "counter"),
        ("grpc_server_msg_sent_total", "counter"),
        ("grpc_server_handling_seconds", "histogram"),
        ("protoserve_schema_generation", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(t), "{name}\n{body}");
    }
    let svc = ("grpc_service", "users.UserService");
    let unary = ("grpc_type", "unary");
    let get = [unary, svc, ("grpc_method", "GetUser")];
    let create = [unary, svc, ("grpc_method", "CreateUser")];
    let list = [("grpc_type", "server_stream"), svc, ("grpc_method", "ListUsers")];
    let bulk = [("grpc_type", "client_stream"), svc, ("grpc_method", "BulkCreateUsers")];
    assert_eq!(value(&samples, "grpc_server_started_total", &get), 1.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &[get[0], get[1], get[2], ("grpc_code", "NotFound")]), 1.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &[get[0], get[1], get[2], ("grpc_code", "OK")]), 0.0);
    assert_eq!(
        value(&samples, "grpc_server_handled_total", &[create[0], create[1], create[2], ("grpc_code", "OK")]),
        2.0
    );
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &list), 2.0);
    assert_eq!(value(&samples, "grpc_server_msg_received_total", &list), 1.0);
    assert_eq!(value(&samples, "grpc_server_msg_received_total", &bulk), 3.0);
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &bulk), 1.0);
    assert_eq!(value(&samples, "grpc_server_handling_seconds_count", &create), 2.0);
    let inf = [create[0], create[1], create[2], ("le", "+Inf")];
    assert_eq!(value(&samples, "grpc_server_handling_seconds_bucket", &inf), 2.0);
    assert_eq!(value(&samples, "protoserve_schema_generation", &[]), 1.0);

    // A method added by a reload shows up (at zero) without a restart.
    let proto = dir.path().join("user_service.proto");
    let text = std::fs::read_to_string(&proto).unwrap();
    let edited = text.replacen(
        "rpc GetUser(GetUserRequest) returns (User);",
        "rpc GetUser(GetUserRequest) returns (User);\n  rpc FindUser(GetUserRequest) returns (User);",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&proto, edited).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let (_, body) = scrape(mport);
        let (samples, _) = parse_exposition(&body).unwrap();
        if find(&samples, "grpc_server_started_total", &[("grpc_method", "FindUser")]).is_some() {
            break samples;
        }
        assert!(std::time::Instant::now() < deadline, "FindUser never appeared:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let find_user = [unary, svc, ("grpc_method", "FindUser")];
    assert_eq!(value(&samples, "grpc_server_started_total", &find_user), 0.0);
    assert_eq!(
        value(&samples, "grpc_server_handled_total", &[unary, svc, find_user[2], ("grpc_code", "Unauthenticated")]),
        0.0
    );
    assert_eq!(value(&samples, "protoserve_schema_generation", &[]), 2.0);
    assert_eq!(value(&samples, "protoserve_reloads_total", &[("result", "success")]), 1.0);
    // The old counts survive the reload.
    assert_eq!(value(&samples, "grpc_server_started_total", &get), 1.0);
    // A failed reload is counted by its result; the generation stays.
    std::fs::write(&proto, "syntax = \"proto3\";\nmessage {").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let (_, body) = scrape(mport);
        let (samples, _) = parse_exposition(&body).unwrap();
        if find(&samples, "protoserve_reloads_total", &[("result", "compile_error")]).is_some() {
            break samples;
        }
        assert!(std::time::Instant::now() < deadline, "the failed reload was never counted:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(value(&samples, "protoserve_reloads_total", &[("result", "compile_error")]), 1.0);
    assert_eq!(value(&samples, "protoserve_schema_generation", &[]), 2.0);
    stop(child);
}

#[test]
fn the_metrics_endpoint_answers_404_elsewhere_and_the_parser_refuses_garbage() {
    let mport = free_port();
    let (child, _port) =
        spawn_server(&[users_dir().to_str().unwrap(), "--metrics-addr", &format!("127.0.0.1:{mport}")]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    stop(child);
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    // The test's parser is strict, so the checks above mean something.
    for bad in ["x{a=\"1\" 1", "x 1 2 3x", "# TYPE x gauge2", "x{a=1} 1", "x-y 1", "x"] {
        assert!(parse_exposition(bad).is_err(), "{bad}");
    }
}

// ----------------------------------------------------- --config and HTTP/2 knobs

#[test]
fn a_config_file_sets_flags_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("protoserve.yaml");
    std::fs::write(&config, "auth-token: [from-file, other]\nno-watch: true\nmax-message-size: 1MiB\n").unwrap();
    let config = config.to_str().unwrap();
    let (child, port) = spawn_server(&[users_dir().to_str().unwrap(), "--config", config]);
    let (child2, port2) =
        spawn_server(&[users_dir().to_str().unwrap(), "--config", config, "--auth-token", "from-cli"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = client_at(port).await;
        let get = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "x"}));
        let code = |r: Result<prost_reflect::DynamicMessage, tonic::Status>| r.unwrap_err().code();
        assert_eq!(code(c.unary("/users.UserService/GetUser", get.clone()).await), Code::Unauthenticated);
        assert_eq!(code(c.unary_req("/users.UserService/GetUser", bearer(get.clone(), "other")).await), Code::NotFound);
        // max-message-size from the file: a 2 MiB request is refused.
        let big = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "x".repeat(2 << 20)}));
        assert_eq!(
            code(c.unary_req("/users.UserService/GetUser", bearer(big, "other")).await),
            Code::ResourceExhausted
        );
        let mut c2 = client_at(port2).await;
        assert_eq!(
            code(c2.unary_req("/users.UserService/GetUser", bearer(get.clone(), "from-file")).await),
            Code::Unauthenticated
        );
        assert_eq!(code(c2.unary_req("/users.UserService/GetUser", bearer(get, "from-cli")).await), Code::NotFound);
    });
    drop(rt);
    stop(child);
    stop(child2);
}

#[test]
fn a_config_file_with_an_unknown_key_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "addr: 127.0.0.1:0\nmax-mesage-size: 1MiB\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .args(["serve", users_dir().to_str().unwrap(), "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key 'max-mesage-size'") && err.contains("bad.yaml"), "{err}");
}

#[tokio::test]
async fn max_concurrent_streams_is_announced_in_http2_settings() {
    let limits = protoserve::ConnLimits { max_concurrent_streams: Some(7), ..Default::default() };
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).conn_limits(limits)).await;
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    // One request and its answer: by then the server's SETTINGS are in.
    let req = http::Request::post(format!("http://{}/grpc.health.v1.Health/Check", srv.addr))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(send.current_max_send_streams(), 7);
}

#[tokio::test]
async fn keepalive_pings_reach_an_idle_client() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limits = protoserve::ConnLimits { keepalive_interval: Some(Duration::from_millis(100)), ..Default::default() };
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).conn_limits(limits)).await;
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing: an idle client.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    // Without keepalive no PING comes (checked by hand: this then fails after 10 s).
    let ping = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            // PING (type 6) without the ACK flag: the server asking.
            if head[3] == 6 && head[4] & 1 == 0 {
                return payload;
            }
        }
    })
    .await
    .expect("the server sent a keepalive PING");
    assert_eq!(ping.len(), 8, "a PING carries 8 bytes");
}
