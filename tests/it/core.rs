//! Serving the seed UserService with zero code, the four RPC kinds through
//! registered handlers, statuses, validation, reflection, health, limits.

use std::time::Duration;

use futures_util::StreamExt;
use prost_reflect::{DynamicMessage, Value};
use protoserve::{Call, ReplyStream, RequestStream, Server};
use serde_json::json;
use tonic::{Code, Request, Status};

use crate::harness::*;

const GET: &str = "/users.UserService/GetUser";
const CREATE: &str = "/users.UserService/CreateUser";
const LIST: &str = "/users.UserService/ListUsers";
const BULK: &str = "/users.UserService/BulkCreateUsers";

async fn create(c: &mut Client, name: &str, email: &str) -> Result<DynamicMessage, Status> {
    let req = c.msg("users.CreateUserRequest", json!({"name": name, "email": email, "age": 30}));
    c.unary(CREATE, req).await
}

#[tokio::test]
async fn create_then_get_round_trips_with_uuid_and_timestamp() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let user = create(&mut c, "Alice", "alice@example.com").await.unwrap();
    let id = get_str(&user, "id");
    assert!(uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 4), "id {id} is a UUID v4");
    assert_eq!(get_str(&user, "name"), "Alice");
    assert_eq!(get_str(&user, "email"), "alice@example.com");
    assert_eq!(get_i64(&user, "age"), 30);
    let created = get_i64(&user, "created_at");
    assert!(created >= before && created <= before + 5, "created_at {created} is now");

    let got = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": id}))).await.unwrap();
    assert_eq!(got, user);
}

#[tokio::test]
async fn get_missing_is_not_found_with_exact_message() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let err = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": "nonexistent"}))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "User 'nonexistent' not found");
}

#[tokio::test]
async fn invalid_email_is_rejected_by_the_schema_rule() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    for email in ["not-an-email", ""] {
        let err = create(&mut c, "Bob", email).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "email {email:?}");
        assert_eq!(err.message(), "Invalid email address");
        let violations = bad_request_violations(&err);
        assert_eq!(violations, vec![("email".to_owned(), "Invalid email address".to_owned())]);
    }
    // Nothing was stored by the rejected calls.
    let all = c.server_stream(LIST, c.msg("users.ListUsersRequest", json!({"page_size": 100}))).await.unwrap();
    assert!(all.is_empty());
}

#[tokio::test]
async fn list_pages_in_insertion_order() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let u = create(&mut c, &format!("u{i}"), &format!("u{i}@x.io")).await.unwrap();
        ids.push(get_str(&u, "id"));
    }
    let list = |c: &mut Client, size: i32, token: &str| {
        let req = c.msg("users.ListUsersRequest", json!({"page_size": size, "page_token": token}));
        let mut c = c.clone();
        async move { c.server_stream(LIST, req).await.unwrap().iter().map(|u| get_str(u, "id")).collect::<Vec<_>>() }
    };
    assert_eq!(list(&mut c, 0, "").await, ids[..10], "default page size is 10");
    let first = list(&mut c, 3, "").await;
    assert_eq!(first, ids[..3]);
    assert_eq!(list(&mut c, 3, &first[2]).await, ids[3..6], "page_token continues after the last id");
    assert_eq!(list(&mut c, 100, "").await, ids);
    let err = c.server_stream(LIST, c.msg("users.ListUsersRequest", json!({"page_token": "nope"}))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bulk_create_returns_count_and_ids_in_order() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let reqs = ["Bob", "Carol"]
        .iter()
        .map(|n| c.msg("users.CreateUserRequest", json!({"name": n, "email": format!("{n}@x.io")})))
        .collect();
    let resp = c.client_stream(BULK, reqs).await.unwrap();
    assert_eq!(get_i64(&resp, "created_count"), 2);
    let ids: Vec<String> = resp
        .get_field_by_name("user_ids")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    for (id, name) in ids.iter().zip(["Bob", "Carol"]) {
        let u = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": id}))).await.unwrap();
        assert_eq!(get_str(&u, "name"), name);
    }
}

#[tokio::test]
async fn bulk_create_is_all_or_nothing() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let reqs = vec![
        c.msg("users.CreateUserRequest", json!({"name": "Ok", "email": "ok@x.io"})),
        c.msg("users.CreateUserRequest", json!({"name": "Bad", "email": "bad"})),
    ];
    let err = c.client_stream(BULK, reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "requests[1].email: Invalid email address");
    let all = c.server_stream(LIST, c.msg("users.ListUsersRequest", json!({"page_size": 100}))).await.unwrap();
    assert!(all.is_empty(), "nothing was created");
}

#[tokio::test]
async fn data_file_preloads_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("seed.yaml");
    std::fs::write(
        &data,
        "users.User:\n  - {id: bench-user, name: Bench, email: bench@example.com, age: 30, createdAt: \"0\"}\n",
    )
    .unwrap();
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).data_file(&data)).await;
    let mut c = srv.client().await;
    let u = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": "bench-user"}))).await.unwrap();
    assert_eq!(get_str(&u, "name"), "Bench");
    assert_eq!(get_str(&u, "email"), "bench@example.com");
    assert_eq!(get_i64(&u, "age"), 30);
    assert_eq!(get_i64(&u, "created_at"), 0);
}

#[tokio::test]
async fn data_file_with_bad_record_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("seed.json");
    std::fs::write(&data, r#"{"users.User": [{"id": "a"}, {"id": "b", "age": "old"}]}"#).unwrap();
    let err = Server::builder().schema_dir(users_dir()).data_file(&data).build().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("users.User record #2"), "{text}");
    assert_eq!(err.exit_code(), 2);

    std::fs::write(&data, r#"{"users.Nope": []}"#).unwrap();
    let err = Server::builder().schema_dir(users_dir()).data_file(&data).build().unwrap_err();
    assert!(err.to_string().contains("no message named 'users.Nope'"), "{err}");
}

fn kinds_server() -> protoserve::Builder {
    Server::builder()
        .schema_dir(kinds_dir())
        .unary("kinds.Echo/Say", |call: Call<DynamicMessage>| async move {
            let mut out = call.reply();
            let text = get_str(&call.message, "text");
            let who = call.metadata.get("x-who").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            out.set_field_by_name("text", Value::String(format!("{who}{text}")));
            Ok(out)
        })
        .server_streaming("kinds.Echo/Repeat", |call: Call<DynamicMessage>| async move {
            let n = get_i64(&call.message, "times");
            let text = get_str(&call.message, "text");
            let out = call.reply();
            let items: Vec<Result<DynamicMessage, Status>> = (0..n)
                .map(|i| {
                    let mut m = out.clone();
                    m.set_field_by_name("text", Value::String(format!("{text}{i}")));
                    Ok(m)
                })
                .collect();
            Ok(Box::pin(futures_util::stream::iter(items)) as ReplyStream)
        })
        .client_streaming("kinds.Echo/Join", |call: Call<RequestStream>| async move {
            let mut out = DynamicMessage::new(call.method.output());
            let parts: Vec<String> = call
                .message
                .map(|m| m.map(|m| get_str(&m, "text")))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            out.set_field_by_name("times", Value::I32(parts.len() as i32));
            out.set_field_by_name("text", Value::String(parts.join(" ")));
            Ok(out)
        })
        .bidi("kinds.Echo/Chat", |call: Call<RequestStream>| async move {
            let out = call.reply();
            let s = call.message.map(move |m| {
                m.map(|m| {
                    let mut o = out.clone();
                    o.set_field_by_name("text", Value::String(get_str(&m, "text").to_uppercase()));
                    o
                })
            });
            Ok(Box::pin(s) as ReplyStream)
        })
        .unary("kinds.Echo/Slow", |call: Call<DynamicMessage>| async move {
            tokio::time::sleep(Duration::from_millis(get_i64(&call.message, "times") as u64)).await;
            Ok(call.reply())
        })
}

fn note<T>(c: &Client<T>, text: &str, times: i32) -> DynamicMessage {
    c.msg("kinds.Note", json!({"text": text, "times": times}))
}

#[tokio::test]
async fn all_four_rpc_kinds_reach_registered_handlers() {
    let srv = TestServer::start(kinds_server()).await;
    let mut c = srv.client().await;
    let mut req = Request::new(note(&c, "hi", 0));
    req.metadata_mut().insert("x-who", "ann: ".parse().unwrap());
    assert_eq!(get_str(&c.unary_req("/kinds.Echo/Say", req).await.unwrap(), "text"), "ann: hi");

    let got = c.server_stream("/kinds.Echo/Repeat", note(&c, "r", 3)).await.unwrap();
    assert_eq!(got.iter().map(|m| get_str(m, "text")).collect::<Vec<_>>(), ["r0", "r1", "r2"]);

    let joined = c.client_stream("/kinds.Echo/Join", vec![note(&c, "a", 0), note(&c, "b", 0)]).await.unwrap();
    assert_eq!(get_str(&joined, "text"), "a b");
    assert_eq!(get_i64(&joined, "times"), 2);

    let chat = c.bidi("/kinds.Echo/Chat", vec![note(&c, "x", 0), note(&c, "yz", 0)]).await.unwrap();
    assert_eq!(chat.iter().map(|m| get_str(m, "text")).collect::<Vec<_>>(), ["X", "YZ"]);
}

#[tokio::test]
async fn registered_handler_wins_over_the_store() {
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).unary(
        "users.UserService/GetUser",
        |call: Call<DynamicMessage>| async move {
            let mut u = call.reply();
            u.set_field_by_name("id", Value::String(get_str(&call.message, "user_id")));
            u.set_field_by_name("name", Value::String("from handler".into()));
            Ok(u)
        },
    ))
    .await;
    let mut c = srv.client().await;
    let u = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": "zz"}))).await.unwrap();
    assert_eq!(get_str(&u, "name"), "from handler");
}

#[tokio::test]
async fn handler_of_the_wrong_kind_is_a_build_error() {
    let err = Server::builder()
        .schema_dir(users_dir())
        .unary("users.UserService/ListUsers", |call: Call<DynamicMessage>| async move { Ok(call.reply()) })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("is unary but the method is server-streaming"), "{err}");
}

#[tokio::test]
async fn unknown_and_uncovered_methods_are_unimplemented() {
    let srv = TestServer::start(kinds_server()).await;
    let mut c = srv.client().await;
    let err = c.unary("/kinds.Echo/Frobnicate", note(&c, "", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("kinds.Echo/Frobnicate") && err.message().contains("register a handler"),
        "{}",
        err.message()
    );

    // A method the schema does not have at all.
    let err = c.raw_unary_to("/kinds.Nope/Missing", "kinds.Note", vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("Missing") && err.message().contains("kinds.Nope"), "{}", err.message());
}

#[tokio::test]
async fn malformed_request_is_internal_naming_the_method() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    // Field 1 claims 100 bytes of string but the message ends.
    let err = c.raw_unary(GET, vec![0x0a, 100, b'a']).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("/users.UserService/GetUser"), "{}", err.message());
    // The server is still fine afterwards.
    let e = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": "x"}))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn oversize_messages_are_resource_exhausted() {
    let srv = TestServer::start(Server::builder().schema_dir(users_dir()).max_message_size(1024)).await;
    let mut c = srv.client().await;
    let big = "x".repeat(2000);
    let err = create(&mut c, &big, "a@b.c").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Within the limit works.
    create(&mut c, "small", "a@b.c").await.unwrap();
}

#[tokio::test]
async fn oversize_reply_is_resource_exhausted() {
    let srv = TestServer::start(kinds_server().max_message_size(1024)).await;
    let mut c = srv.client().await;
    // Repeat streams messages; make the handler produce a big one via Say + metadata.
    let mut req = Request::new(note(&c, "", 0));
    req.metadata_mut().insert("x-who", "y".repeat(1500).parse().unwrap());
    let err = c.unary_req("/kinds.Echo/Say", req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn deadlines_are_honoured() {
    let srv = TestServer::start(kinds_server()).await;
    let c = srv.client().await;
    // A client that does not enforce deadlines itself, so the answer is the server's.
    let mut c = c.with_grpc(srv.raw_grpc());
    let mut req = Request::new(note(&c, "", 5_000));
    req.metadata_mut().insert("grpc-timeout", "100m".parse().unwrap());
    let started = std::time::Instant::now();
    let err = c.unary_req("/kinds.Echo/Slow", req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "the call did not wait for the handler");
}

#[tokio::test]
async fn shutdown_drains_in_flight_rpcs() {
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let entered = started.clone();
    let builder =
        Server::builder().schema_dir(kinds_dir()).unary("kinds.Echo/Slow", move |call: Call<DynamicMessage>| {
            let entered = entered.clone();
            async move {
                entered.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut out = call.reply();
                out.set_field_by_name("text", Value::String("finished".into()));
                Ok(out)
            }
        });
    let mut srv = TestServer::start(builder).await;
    let mut c = srv.client().await;
    let req = note(&c, "", 0);
    let call = tokio::spawn(async move { c.unary("/kinds.Echo/Slow", req).await });
    // Shut down while the handler is running.
    started.notified().await;
    let task = srv.begin_shutdown();
    let res = call.await.unwrap().expect("the in-flight call completed");
    assert_eq!(get_str(&res, "text"), "finished");
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("serve returns after draining").unwrap();
}

#[tokio::test]
async fn health_check_and_watch() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let srv = TestServer::users().await;
    let mut h = HealthClient::new(srv.channel().await);
    for svc in ["", "users.UserService"] {
        let r = h.check(HealthCheckRequest { service: svc.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "service {svc:?}");
    }
    let err = h.check(HealthCheckRequest { service: "nope.Svc".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut watch = h.watch(HealthCheckRequest { service: "users.UserService".into() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_describe_the_schema() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as Req1;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as Resp1;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_client::ServerReflectionClient};
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as ReqA;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as RespA;

    let srv = TestServer::users().await;
    let mut v1 = ServerReflectionClient::new(srv.channel().await);
    let reqs = vec![
        ServerReflectionRequest { host: String::new(), message_request: Some(Req1::ListServices(String::new())) },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(Req1::FileContainingSymbol("users.User".into())),
        },
    ];
    let mut s = v1.server_reflection_info(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let Some(Resp1::ListServicesResponse(list)) = s.message().await.unwrap().unwrap().message_response else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"users.UserService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let Some(Resp1::FileDescriptorResponse(files)) = s.message().await.unwrap().unwrap().message_response else {
        panic!("expected file descriptors")
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|b| <prost_types::FileDescriptorProto as prost::Message>::decode(b.as_slice()).unwrap())
        .find(|f| f.name() == "user_service.proto")
        .expect("user_service.proto is served");
    assert!(file.message_type.iter().any(|m| m.name() == "User"));
    assert!(file.dependency.iter().any(|d| d == "buf/validate/validate.proto"));

    let mut alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(srv.channel().await);
    // The service's file and its imports (so clients can resolve every dependency).
    for (req, want) in [
        (ReqA::FileContainingSymbol("users.UserService".into()), "user_service.proto"),
        (ReqA::FileByFilename("buf/validate/validate.proto".into()), "buf/validate/validate.proto"),
        (ReqA::FileByFilename("google/protobuf/descriptor.proto".into()), "google/protobuf/descriptor.proto"),
    ] {
        let req =
            tonic_reflection::pb::v1alpha::ServerReflectionRequest { host: String::new(), message_request: Some(req) };
        let mut s = alpha.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let Some(RespA::FileDescriptorResponse(files)) = s.message().await.unwrap().unwrap().message_response else {
            panic!("expected file descriptors from v1alpha for {want}")
        };
        let names: Vec<String> = files
            .file_descriptor_proto
            .iter()
            .map(|b| {
                <prost_types::FileDescriptorProto as prost::Message>::decode(b.as_slice()).unwrap().name().to_owned()
            })
            .collect();
        assert!(names.contains(&want.to_owned()), "{want}: {names:?}");
    }
}

#[tokio::test]
async fn library_example_serves_the_seed_semantics() {
    let srv = TestServer::start(crate::example::builder(users_dir())).await;
    let mut c = srv.client().await;
    let alice = create(&mut c, "Alice", "alice@example.com").await.unwrap();
    let id = get_str(&alice, "id");
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let got = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": id}))).await.unwrap();
    assert_eq!(got, alice);
    let err = c.unary(GET, c.msg("users.GetUserRequest", json!({"user_id": "nonexistent"}))).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "User 'nonexistent' not found"));
    let err = create(&mut c, "Bad", "bad").await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "Invalid email address"));
    let reqs = ["Bob", "Carol"]
        .iter()
        .map(|n| c.msg("users.CreateUserRequest", json!({"name": n, "email": format!("{n}@x.io")})))
        .collect();
    let bulk = c.client_stream(BULK, reqs).await.unwrap();
    assert_eq!(get_i64(&bulk, "created_count"), 2);
    let listed = c.server_stream(LIST, c.msg("users.ListUsersRequest", json!({"page_size": 2}))).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(get_str(&listed[0], "name"), "Alice");
    let listed = c.server_stream(LIST, c.msg("users.ListUsersRequest", json!({}))).await.unwrap();
    assert_eq!(listed.len(), 3);
}

#[tokio::test]
async fn every_violation_is_reported_in_bad_request_details() {
    let srv = TestServer::start(Server::builder().schema_dir(root().join("tests/data/validated"))).await;
    let mut c = srv.client().await;
    let req = c.msg("signup.Signup", json!({"name": "", "age": 12, "address": {"city": "X"}}));
    let err = c.unary("/signup.Signups/CreateSignup", req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields: Vec<String> = bad_request_violations(&err).into_iter().map(|(f, _)| f).collect();
    fields.sort();
    assert_eq!(fields, ["address.city", "age", "name"]);
    for f in ["name", "age", "address.city"] {
        assert!(err.message().contains(f), "{}", err.message());
    }
    // A valid request goes through to the store.
    let ok = c.msg("signup.Signup", json!({"name": "Ann", "age": 30, "address": {"city": "Oslo"}}));
    let created = c.unary("/signup.Signups/CreateSignup", ok).await.unwrap();
    assert_eq!(get_str(&created, "name"), "Ann");
    assert!(!get_str(&created, "id").is_empty());
}

#[tokio::test]
async fn store_conventions_ids_timestamps_pages_update_delete() {
    let srv = TestServer::start(Server::builder().schema_dir(root().join("tests/data/store"))).await;
    let mut c = srv.client().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let create = |c: &Client, v: serde_json::Value| c.msg("items.CreateItemRequest", v);

    // An empty id becomes a UUID; a given one is kept; packed repeated fields survive.
    let a = c.unary("/items.Items/CreateItem", create(&c, json!({"title": "A", "sizes": [1, 2, 300]}))).await.unwrap();
    assert!(uuid::Uuid::parse_str(&get_str(&a, "id")).is_ok());
    let sizes: Vec<i32> =
        a.get_field_by_name("sizes").unwrap().as_list().unwrap().iter().map(|v| v.as_i32().unwrap()).collect();
    assert_eq!(sizes, [1, 2, 300]);
    let ts = a.get_field_by_name("create_time").unwrap().as_message().unwrap().clone();
    let secs = ts.get_field_by_name("seconds").unwrap().as_i64().unwrap();
    assert!((now..now + 5).contains(&secs), "create_time {secs} is now");
    assert!(a.has_field_by_name("update_time"));
    let b = c.unary("/items.Items/CreateItem", create(&c, json!({"id": "b", "title": "B"}))).await.unwrap();
    assert_eq!(get_str(&b, "id"), "b");
    let dup = c.unary("/items.Items/CreateItem", create(&c, json!({"id": "b"}))).await.unwrap_err();
    assert_eq!((dup.code(), dup.message()), (Code::AlreadyExists, "Item 'b' already exists"));

    let got = c.unary("/items.Items/GetItem", c.msg("items.GetItemRequest", json!({"item_id": "b"}))).await.unwrap();
    assert_eq!(got, b);

    // Unary List with page tokens.
    let page = |c: &Client, token: &str| c.msg("items.ListItemsRequest", json!({"page_size": 1, "page_token": token}));
    let p1 = c.unary("/items.Items/ListItems", page(&c, "")).await.unwrap();
    let items = p1.get_field_by_name("items").unwrap().as_list().unwrap().to_vec();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_message().unwrap(), &a);
    let token = get_str(&p1, "next_page_token");
    assert!(!token.is_empty(), "more pages follow");
    let p2 = c.unary("/items.Items/ListItems", page(&c, &token)).await.unwrap();
    assert_eq!(p2.get_field_by_name("items").unwrap().as_list().unwrap()[0].as_message().unwrap(), &b);
    assert_eq!(get_str(&p2, "next_page_token"), "", "no more pages");

    // Update merges the fields the request sets; Delete returns the record.
    let upd = c.unary("/items.Items/UpdateItem", c.msg("items.Item", json!({"id": "b", "title": "B2"}))).await.unwrap();
    assert_eq!(get_str(&upd, "title"), "B2");
    assert_eq!(get_str(&upd, "id"), "b");
    let missing = c.unary("/items.Items/UpdateItem", c.msg("items.Item", json!({"id": "zz"}))).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let del = c.unary("/items.Items/DeleteItem", c.msg("items.GetItemRequest", json!({"item_id": "b"}))).await.unwrap();
    assert_eq!(get_str(&del, "title"), "B2");
    let gone =
        c.unary("/items.Items/GetItem", c.msg("items.GetItemRequest", json!({"item_id": "b"}))).await.unwrap_err();
    assert_eq!((gone.code(), gone.message()), (Code::NotFound, "Item 'b' not found"));

    // Integer ids: zero gets a fresh positive number, a given one is kept.
    let n = c.unary("/items.Items/CreateCounter", c.msg("items.Counter", json!({"label": "x"}))).await.unwrap();
    let id = n.get_field_by_name("id").unwrap().as_i64().unwrap();
    assert!(id > 0);
    let seven =
        c.unary("/items.Items/CreateCounter", c.msg("items.Counter", json!({"id": "7", "label": "y"}))).await.unwrap();
    assert_eq!(seven.get_field_by_name("id").unwrap().as_i64(), Some(7));
    let got =
        c.unary("/items.Items/GetCounter", c.msg("items.CounterKey", json!({"id": id.to_string()}))).await.unwrap();
    assert_eq!(got, n);
}

#[tokio::test]
async fn wrong_wire_type_and_bad_utf8_are_internal_like_a_full_decode() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    // Field 1 (string user_id) sent as a varint.
    let err = c.raw_unary(GET, vec![0x08, 1]).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    // Field 1 with invalid UTF-8.
    let err = c.raw_unary(GET, vec![0x0a, 1, 0xff]).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("users.GetUserRequest"), "{}", err.message());
    // Unknown fields are fine, as for any protobuf reader.
    let err = c.raw_unary(GET, vec![0x0a, 1, b'x', 0x48, 1]).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "User 'x' not found"));
}

#[tokio::test]
async fn a_panicking_handler_is_internal_and_the_server_lives_on() {
    let srv = TestServer::start(Server::builder().schema_dir(kinds_dir()).unary(
        "kinds.Echo/Say",
        |call: Call<DynamicMessage>| async move {
            if get_str(&call.message, "text") == "boom" {
                panic!("handler bug");
            }
            Ok(call.reply())
        },
    ))
    .await;
    let mut c = srv.client().await;
    let err = c.unary("/kinds.Echo/Say", note(&c, "boom", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("/kinds.Echo/Say") && err.message().contains("panicked"), "{}", err.message());
    c.unary("/kinds.Echo/Say", note(&c, "fine", 0)).await.expect("the server still serves");
}

#[tokio::test]
async fn page_tokens_survive_deleting_the_record_they_follow() {
    let srv = TestServer::start(Server::builder().schema_dir(root().join("tests/data/store"))).await;
    let mut c = srv.client().await;
    for id in ["a", "b", "c", "d"] {
        let req = c.msg("items.CreateItemRequest", json!({"id": id, "title": id}));
        c.unary("/items.Items/CreateItem", req).await.unwrap();
    }
    let ids = |m: &DynamicMessage| -> Vec<String> {
        m.get_field_by_name("items")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .map(|v| get_str(v.as_message().unwrap(), "id"))
            .collect()
    };
    let page = |c: &Client, token: &str| c.msg("items.ListItemsRequest", json!({"page_size": 2, "page_token": token}));
    let p1 = c.unary("/items.Items/ListItems", page(&c, "")).await.unwrap();
    assert_eq!(ids(&p1), ["a", "b"]);
    // The record the token follows is deleted before the next page is asked for.
    c.unary("/items.Items/DeleteItem", c.msg("items.GetItemRequest", json!({"item_id": "b"}))).await.unwrap();
    let p2 = c.unary("/items.Items/ListItems", page(&c, &get_str(&p1, "next_page_token"))).await.unwrap();
    assert_eq!(ids(&p2), ["c", "d"]);
    // A record id as the token (what a client of a streaming list has) works too,
    // also when that record is gone.
    assert_eq!(ids(&c.unary("/items.Items/ListItems", page(&c, "a")).await.unwrap()), ["c", "d"]);
    assert_eq!(ids(&c.unary("/items.Items/ListItems", page(&c, "b")).await.unwrap()), ["c", "d"]);
    let err = c.unary("/items.Items/ListItems", page(&c, "never-existed")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_streaming_list_continues_after_a_deleted_record_and_streams_lazily() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("notes.proto"),
        r#"syntax = "proto3";
package notes;
service Notes {
  rpc CreateNote(Note) returns (Note);
  rpc DeleteNote(DeleteNoteRequest) returns (Note);
  rpc ListNotes(ListNotesRequest) returns (stream Note);
}
message Note { string id = 1; string text = 2; }
message DeleteNoteRequest { string id = 1; }
message ListNotesRequest { int32 page_size = 1; string page_token = 2; }
"#,
    )
    .unwrap();
    let srv = TestServer::start(Server::builder().schema_dir(dir.path())).await;
    let mut c = srv.client().await;
    // More than one chunk of the lazy stream (256 records per read).
    let ids: Vec<String> = (0..600).map(|i| format!("n{i:03}")).collect();
    for id in &ids {
        c.unary("/notes.Notes/CreateNote", c.msg("notes.Note", json!({"id": id}))).await.unwrap();
    }
    let list = |c: &Client, size: i32, token: &str| {
        c.msg("notes.ListNotesRequest", json!({"page_size": size, "page_token": token}))
    };
    let all: Vec<String> = c
        .server_stream("/notes.Notes/ListNotes", list(&c, 1000, ""))
        .await
        .unwrap()
        .iter()
        .map(|n| get_str(n, "id"))
        .collect();
    assert_eq!(all, ids, "every record once, in order, across chunks");
    // The last record a client saw is deleted; continuing after it still works.
    c.unary("/notes.Notes/DeleteNote", c.msg("notes.DeleteNoteRequest", json!({"id": "n299"}))).await.unwrap();
    let next: Vec<String> = c
        .server_stream("/notes.Notes/ListNotes", list(&c, 3, "n299"))
        .await
        .unwrap()
        .iter()
        .map(|n| get_str(n, "id"))
        .collect();
    assert_eq!(next, ["n300", "n301", "n302"]);
}
