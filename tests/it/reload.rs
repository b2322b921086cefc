//! Hot reload: edits go live, in-flight RPCs finish on their schema, bad edits
//! never go live, records survive and follow the wire rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use prost_reflect::{DynamicMessage, Value};
use protoserve::{Call, ReloadHandle, ReplyStream, Server};
use serde_json::json;
use tonic::Code;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(10);

/// A schema file and a reload handle, with no watcher.
struct Unwatched {
    file: PathBuf,
    handle: ReloadHandle,
}

impl Unwatched {
    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.file).unwrap();
        assert!(text.contains(from), "schema has {from:?}");
        std::fs::write(&self.file, text.replacen(from, to, 1)).unwrap();
    }
}

/// A temp copy of the seed schema served with the file watcher on.
struct Live {
    _dir: tempfile::TempDir,
    file: PathBuf,
    handle: ReloadHandle,
    srv: TestServer,
}

impl Live {
    async fn start(builder: impl FnOnce(&Path) -> protoserve::Builder) -> Live {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&users_dir(), &dir.path().join("users"));
        let server = builder(dir.path()).watch(true).build().unwrap();
        let handle = server.reload_handle();
        let srv = TestServer::run(server).await;
        Live { file: dir.path().join("users/user_service.proto"), _dir: dir, handle, srv }
    }

    async fn users() -> Live {
        Self::start(|d| Server::builder().schema_dir(d.join("users"))).await
    }

    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.file).unwrap();
        assert!(text.contains(from), "schema has {from:?}");
        std::fs::write(&self.file, text.replacen(from, to, 1)).unwrap();
    }

    async fn wait_gen(&self, n: u64) {
        tokio::time::timeout(WAIT, self.handle.wait_for_generation(n)).await.expect("new generation went live");
    }

    /// Waits (bounded) for a reload attempt after `after` that failed; attempts that
    /// went through meanwhile (e.g. a reload of an earlier edit) are skipped.
    async fn wait_failed_after(&self, after: u64) -> protoserve::Outcome {
        let mut rx = self.handle.outcomes();
        let o = tokio::time::timeout(WAIT, rx.wait_for(|o| o.attempt > after && o.result.is_err()))
            .await
            .expect("a failed reload attempt was published")
            .expect("the reload handle is alive");
        o.clone()
    }

    /// A client that knows the live schema.
    async fn client(&self) -> Client {
        self.srv.client().await.with_pool(self.handle.snapshot().schema().pool().clone())
    }
}

#[tokio::test]
async fn added_field_shows_in_reflection_and_replies() {
    let live = Live::users().await;
    live.edit("int64 created_at = 5; // unix seconds", "int64 created_at = 5;\n  string phone = 6;");
    live.edit("int32 age = 3;\n}", "int32 age = 3;\n  string phone = 4;\n}");
    live.wait_gen(2).await;
    let mut c = live.client().await;
    let req = c.msg("users.CreateUserRequest", json!({"name": "A", "email": "a@b.c", "phone": "555"}));
    let u = c.unary("/users.UserService/CreateUser", req).await.unwrap();
    assert_eq!(get_str(&u, "phone"), "555");

    // Reflection describes the new field.
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_client::ServerReflectionClient};
    let mut r = ServerReflectionClient::new(live.srv.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("users.User".into())),
    };
    let mut s = r.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let Some(MessageResponse::FileDescriptorResponse(f)) = s.message().await.unwrap().unwrap().message_response else {
        panic!("no descriptor")
    };
    let file =
        <prost_types::FileDescriptorProto as prost::Message>::decode(f.file_descriptor_proto[0].as_slice()).unwrap();
    let user = file.message_type.iter().find(|m| m.name() == "User").unwrap();
    assert!(user.field.iter().any(|f| f.name() == "phone" && f.number() == 6), "{user:?}");
}

#[tokio::test]
async fn added_method_is_callable_and_removed_service_is_unimplemented() {
    let live = Live::users().await;
    let mut c = live.client().await;
    let u = c
        .unary(
            "/users.UserService/CreateUser",
            c.msg("users.CreateUserRequest", json!({"name": "A", "email": "a@b.c"})),
        )
        .await
        .unwrap();
    live.edit(
        "rpc GetUser(GetUserRequest) returns (User);",
        "rpc GetUser(GetUserRequest) returns (User);\n  rpc DeleteUser(GetUserRequest) returns (User);",
    );
    live.wait_gen(2).await;
    let mut c = live.client().await;
    let req = c.msg("users.GetUserRequest", json!({"user_id": get_str(&u, "id")}));
    let deleted = c.unary("/users.UserService/DeleteUser", req.clone()).await.unwrap();
    assert_eq!(get_str(&deleted, "name"), "A");
    assert_eq!(c.unary("/users.UserService/GetUser", req).await.unwrap_err().code(), Code::NotFound);

    // Watch health, then remove the service.
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut h = HealthClient::new(live.srv.channel().await);
    let mut watch = h.watch(HealthCheckRequest { service: "users.UserService".into() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let text = std::fs::read_to_string(&live.file).unwrap();
    let start = text.find("service UserService").unwrap();
    let end = start + text[start..].find("\n}\n").unwrap() + 3;
    std::fs::write(&live.file, format!("{}{}", &text[..start], &text[end..])).unwrap();
    live.wait_gen(3).await;
    let err = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": "x"})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::ServiceUnknown);
    let err = h.check(HealthCheckRequest { service: "users.UserService".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn syntax_error_keeps_old_schema_and_fix_recovers() {
    let live = Live::users().await;
    live.edit("string user_id = 1;", "string user_id = ;");
    // The watcher's reload fails; ask for one explicitly to see the error.
    let err = live.handle.reload().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("user_service.proto:27:"), "{text}");
    assert!(text.contains("string user_id = ;"), "{text}");
    assert_eq!(live.handle.generation(), 1);
    let mut c = live.client().await;
    let e = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "the old schema still serves");

    live.edit("string user_id = ;", "string user_id = 1;\n  bool verbose = 2;");
    live.wait_gen(2).await;
    assert!(
        live.handle
            .snapshot()
            .schema()
            .pool()
            .get_message_by_name("users.GetUserRequest")
            .unwrap()
            .get_field_by_name("verbose")
            .is_some()
    );
}

#[tokio::test]
async fn every_attempt_is_published_on_the_outcome_channel() {
    let live = Live::users().await;
    let start = live.handle.last_outcome();
    assert_eq!((start.attempt, start.generation), (0, 1), "the startup load: {start:?}");
    assert!(start.result.is_ok());

    // The watcher's attempt on a broken edit: observed, with its error.
    live.edit("string user_id = 1;", "string user_id = ;");
    let failed = live.wait_failed_after(0).await;
    assert_eq!(failed.generation, 1);
    let text = failed.error().expect("failed").to_string();
    assert!(text.contains("user_service.proto:27:") && text.contains("string user_id = ;"), "{text}");

    // An explicit attempt gets the next number, and its error is the one published.
    let mut rx = live.handle.outcomes();
    let err = live.handle.reload().await.unwrap_err();
    let published =
        tokio::time::timeout(WAIT, rx.wait_for(|o| o.result.as_ref().err().is_some_and(|e| Arc::ptr_eq(e, &err))))
            .await
            .expect("the error reload() returned was published")
            .unwrap()
            .clone();
    assert!(published.attempt > failed.attempt);

    // The fix goes live and says so.
    live.edit("string user_id = ;", "string user_id = 1;\n  bool verbose = 2;");
    let mut rx = live.handle.outcomes();
    let ok = tokio::time::timeout(WAIT, rx.wait_for(|o| o.generation == 2)).await.unwrap().unwrap().clone();
    let reloaded = ok.result.expect("went live");
    assert_eq!(reloaded.generation, 2);
    assert!(!reloaded.diff.is_empty());
}

#[tokio::test]
async fn rename_save_and_new_files_reload() {
    let live = Live::users().await;
    // Write-to-temp-then-rename, as many editors save.
    let text =
        std::fs::read_to_string(&live.file).unwrap().replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;");
    let tmp = live.file.with_extension("proto.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &live.file).unwrap();
    live.wait_gen(2).await;
    let pool = live.handle.snapshot().schema().pool().clone();
    assert!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("nick").is_some());

    // Delete-then-create, as other editors save.
    let text = std::fs::read_to_string(&live.file)
        .unwrap()
        .replace("string nick = 6;", "string nick = 6;\n  string mood = 7;");
    std::fs::remove_file(&live.file).unwrap();
    std::fs::write(&live.file, text).unwrap();
    live.wait_gen(3).await;
    let pool = live.handle.snapshot().schema().pool().clone();
    assert!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("mood").is_some());

    // A new file in a new folder.
    let extra = live.file.parent().unwrap().join("more");
    std::fs::create_dir(&extra).unwrap();
    std::fs::write(extra.join("tags.proto"), "syntax = \"proto3\";\npackage tags;\nmessage Tag { string name = 1; }\n")
        .unwrap();
    live.wait_gen(4).await;
    assert!(live.handle.snapshot().schema().pool().get_message_by_name("tags.Tag").is_some());
    // Deleting the folder removes it again.
    std::fs::remove_dir_all(&extra).unwrap();
    live.wait_gen(5).await;
    assert!(live.handle.snapshot().schema().pool().get_message_by_name("tags.Tag").is_none());
}

#[tokio::test]
async fn records_survive_reload_and_decode_by_the_new_field_numbers() {
    let live = Live::users().await;
    let mut c = live.client().await;
    let u = c
        .unary(
            "/users.UserService/CreateUser",
            c.msg("users.CreateUserRequest", json!({"name": "Ann", "email": "ann@x.io", "age": 41})),
        )
        .await
        .unwrap();
    let id = get_str(&u, "id");
    // Renumber: email moves to 6 and a new field takes its old number 3.
    live.edit("string email = 3;", "string phone = 3;\n  string email = 6;");
    live.wait_gen(2).await;
    let mut c = live.client().await;
    let got =
        c.unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": id}))).await.unwrap();
    assert_eq!(get_str(&got, "phone"), "ann@x.io", "old field-3 bytes now read as phone");
    assert_eq!(get_str(&got, "email"), "", "nothing was ever written to field 6");
    assert_eq!(get_str(&got, "name"), "Ann");
    assert_eq!(get_i64(&got, "age"), 41);
    let all =
        c.server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({}))).await.unwrap();
    assert_eq!(all.len(), 1, "the record was kept");
}

#[tokio::test]
async fn in_flight_stream_finishes_on_its_own_schema() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&kinds_dir(), dir.path());
    let server = Server::builder()
        .schema_dir(dir.path())
        .server_streaming("kinds.Echo/Repeat", |call: Call<DynamicMessage>| async move {
            let n = get_i64(&call.message, "times");
            let method = call.method.clone();
            let s = futures_util::stream::iter(0..n).then(move |i| {
                let method = method.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    let mut m = DynamicMessage::new(method.output());
                    // Which schema does this call see, item after item?
                    let has_extra = method.output().get_field_by_name("extra").is_some();
                    m.set_field_by_name("text", Value::String(format!("{i}:{has_extra}")));
                    Ok(m)
                }
            });
            Ok(Box::pin(s) as ReplyStream)
        })
        .build()
        .unwrap();
    let handle = server.reload_handle();
    let srv = TestServer::run(server).await;
    let mut c = srv.client().await;
    let req = c.msg("kinds.Note", json!({"times": 10}));
    let mut stream = c.server_stream_open("/kinds.Echo/Repeat", req).await.unwrap();
    // The call is under way: it has produced its first message.
    let first = stream.message().await.unwrap().expect("first item");
    let file = dir.path().join("kinds.proto");
    let text =
        std::fs::read_to_string(&file).unwrap().replace("int32 times = 2;", "int32 times = 2;\n  string extra = 3;");
    std::fs::write(&file, text).unwrap();
    handle.reload().await.unwrap();
    assert_eq!(handle.generation(), 2);
    let mut texts = vec![get_str(&first, "text")];
    while let Some(m) = stream.message().await.expect("the in-flight stream completes") {
        texts.push(get_str(&m, "text"));
    }
    assert_eq!(texts.len(), 10);
    assert!(texts.iter().all(|t| t.ends_with(":false")), "the old schema to the end: {texts:?}");
    let again = c.server_stream("/kinds.Echo/Repeat", c.msg("kinds.Note", json!({"times": 1}))).await.unwrap();
    assert_eq!(get_str(&again[0], "text"), "0:true", "new calls see the new schema");
}

#[tokio::test]
async fn load_during_many_valid_and_invalid_edits_loses_nothing() {
    let live = Live::start(|d| {
        copy_dir(&kinds_dir(), &d.join("kinds"));
        Server::builder().schema_dir(d.join("users")).schema_dir(d.join("kinds")).bidi(
            "kinds.Echo/Chat",
            |call: protoserve::Call<protoserve::RequestStream>| async move {
                let out = call.reply();
                Ok(Box::pin(call.message.map(move |m| {
                    m.map(|m| {
                        let mut o = out.clone();
                        o.set_field_by_name("text", Value::String(get_str(&m, "text")));
                        o
                    })
                })) as ReplyStream)
            },
        )
    })
    .await;
    let created = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut c = live.client().await;
        let (created, stop) = (created.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut calls = 0usize;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 5 {
                i += 1;
                let req = c.msg("users.CreateUserRequest", json!({"name": format!("w{w}-{i}"), "email": "x@y.z"}));
                let u = c.unary("/users.UserService/CreateUser", req).await.expect("CreateUser");
                created.fetch_add(1, Ordering::Relaxed);
                let got = c
                    .unary(
                        "/users.UserService/GetUser",
                        c.msg("users.GetUserRequest", json!({"user_id": get_str(&u, "id")})),
                    )
                    .await
                    .expect("GetUser");
                assert_eq!(got, u);
                c.server_stream(
                    "/users.UserService/ListUsers",
                    c.msg("users.ListUsersRequest", json!({"page_size": 5})),
                )
                .await
                .expect("ListUsers");
                let bulk = vec![c.msg("users.CreateUserRequest", json!({"name": "b", "email": "b@c.d"})); 3];
                let r = c.client_stream("/users.UserService/BulkCreateUsers", bulk).await.expect("BulkCreateUsers");
                assert_eq!(get_i64(&r, "created_count"), 3);
                created.fetch_add(3, Ordering::Relaxed);
                let chat =
                    c.bidi("/kinds.Echo/Chat", vec![c.msg("kinds.Note", json!({"text": "hi"}))]).await.expect("Chat");
                assert_eq!(chat.len(), 1);
                calls += 5;
            }
            calls
        }));
    }
    // Alternate valid and invalid edits through the watcher.
    let mut valid = 0;
    for n in 0..12 {
        if n % 2 == 0 {
            let text = std::fs::read_to_string(&live.file).unwrap().replace("= ;", "= 1;");
            std::fs::write(&live.file, format!("{text}\nmessage Extra{n} {{ string note = 1; }}\n")).unwrap();
            valid += 1;
            live.wait_gen(1 + valid).await;
        } else {
            let before = live.handle.last_outcome().attempt;
            live.edit("string user_id = 1;", "string user_id = ;");
            // The watcher's attempt on the broken file fails, and nothing new goes live.
            let failed = live.wait_failed_after(before).await;
            assert!(failed.error().and_then(|e| e.schema_error()).is_some(), "a compile error: {failed:?}");
            assert_eq!(failed.generation, 1 + valid, "a broken edit never goes live");
            assert_eq!(live.handle.generation(), 1 + valid, "a broken edit never goes live");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.expect("no RPC failed");
    }
    assert!(total >= 4 * 5 * 5);
    let mut c = live.client().await;
    let all = c
        .server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({"page_size": 100000})))
        .await
        .unwrap();
    assert_eq!(all.len(), created.load(Ordering::Relaxed), "no record was lost");
}

#[tokio::test]
async fn on_breaking_reject_keeps_the_live_schema_until_a_compatible_edit() {
    let live =
        Live::start(|d| Server::builder().schema_dir(d.join("users")).on_breaking(protoserve::OnBreaking::Reject))
            .await;
    // Renumbering email (3 -> 6) breaks old clients.
    live.edit("string email = 3;", "string email = 6;");
    let err = live.handle.reload().await.unwrap_err();
    let protoserve::ReloadError::Breaking { live: 1, findings } = &*err else { panic!("{err}") };
    let moved = findings.iter().find(|f| f.rule == "PROTOSERVE_FIELD_MOVED_NUMBER").expect("typed finding");
    assert_eq!(moved.severity, protoserve::compat::Severity::Error);
    assert!(moved.message.contains("users.User"), "{}", moved.message);
    let text = err.to_string();
    assert!(text.contains("FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"), "{text}");
    assert!(text.contains("PROTOSERVE_FIELD_MOVED_NUMBER"), "{text}");
    assert_eq!(live.handle.generation(), 1);
    let pool = live.handle.snapshot().schema().pool().clone();
    assert_eq!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("email").unwrap().number(), 3);

    // Undo it and make a compatible edit: that goes live.
    live.edit("string email = 6;", "string email = 3;\n  string nick = 7;");
    live.wait_gen(2).await;
    let pool = live.handle.snapshot().schema().pool().clone();
    assert!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("nick").is_some());
}

#[tokio::test]
async fn on_breaking_warn_goes_live() {
    let live = Live::users().await;
    live.edit("string email = 3;", "string email = 6;");
    live.wait_gen(2).await;
    let pool = live.handle.snapshot().schema().pool().clone();
    assert_eq!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("email").unwrap().number(), 6);
}

#[tokio::test]
async fn reload_diff_says_what_changed_in_each_element_and_summarises_long_ones() {
    // No watcher: each explicit reload() sees exactly the edits before it.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&users_dir(), dir.path());
    let server = Server::builder().schema_dir(dir.path()).build().unwrap();
    let live = Unwatched { file: dir.path().join("user_service.proto"), handle: server.reload_handle() };
    live.edit("int32 age = 4;", "int32 age = 4;\n  string phone = 6;");
    live.edit("string email = 3;", "string email = 7;");
    live.edit("string page_token = 2;", "int64 page_token = 2;");
    let r = live.handle.reload().await.unwrap();
    let text = r.diff.to_string();
    for want in [
        "users.User: +field phone = 6",
        "users.User: field email 3 -> 7",
        "users.ListUsersRequest: field page_token: string -> int64",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert_eq!(r.diff.changed, vec!["message users.ListUsersRequest", "message users.User"]);

    // A package rename touches every element: the line is summarised.
    live.edit("package users;", "package people;");
    let r = live.handle.reload().await.unwrap();
    let text = r.diff.to_string();
    assert!(text.starts_with(&format!("{} changes (", r.diff.details.len())), "{text}");
    assert!(text.contains("-service users.UserService; +service people.UserService"), "{text}");
    assert!(text.contains("; and ") && text.ends_with(" more"), "{text}");
    assert!(text.len() < 600, "one readable line: {} chars: {text}", text.len());
}

#[tokio::test]
async fn an_intentional_breaking_edit_is_accepted_on_request() {
    let live =
        Live::start(|d| Server::builder().schema_dir(d.join("users")).on_breaking(protoserve::OnBreaking::Reject))
            .await;
    live.edit("string email = 3;", "string email = 6;");
    let err = live.handle.reload().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("kill -USR1") && text.contains("accept_breaking()"), "the way out is named: {text}");
    assert_eq!(live.handle.generation(), 1);

    let r = live.handle.accept_breaking().await.expect("accepted");
    assert_eq!(r.generation, 2);
    let pool = live.handle.snapshot().schema().pool().clone();
    assert_eq!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("email").unwrap().number(), 6);

    // Only that once: the next breaking edit is refused again.
    live.edit("string name = 2;", "string name = 9;");
    let err = live.handle.reload().await.unwrap_err();
    assert!(matches!(*err, protoserve::ReloadError::Breaking { live: 2, .. }), "{err}");
}

#[tokio::test]
async fn a_deleted_root_keeps_the_last_schema_and_is_watched_again_when_recreated() {
    let live = Live::users().await;
    let root = live.file.parent().unwrap().to_path_buf();
    let seed = std::fs::read_to_string(&live.file).unwrap();

    // A build step regenerates the folder: first it is gone.
    let before = live.handle.last_outcome().attempt;
    std::fs::remove_dir_all(&root).unwrap();
    let failed = live.wait_failed_after(before).await;
    assert_eq!(failed.generation, 1, "the last good schema keeps serving");
    let mut c = live.client().await;
    let e = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "still served: {e:?}");

    // Then it is back, with an edit: picked up.
    std::fs::create_dir(&root).unwrap();
    std::fs::write(&live.file, seed.replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;")).unwrap();
    live.wait_gen(2).await;
    // And later edits inside the new folder are seen too: the watch was re-armed.
    live.edit("string nick = 6;", "string nick = 6;\n  string mood = 7;");
    live.wait_gen(3).await;
    let pool = live.handle.snapshot().schema().pool().clone();
    assert!(pool.get_message_by_name("users.User").unwrap().get_field_by_name("mood").is_some());
}

#[tokio::test]
async fn an_empty_root_serves_nothing_until_files_arrive() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Server::builder().schema_dir(dir.path()).build().is_err(), "the library refuses empty roots by default");
    let server = Server::builder().schema_dir(dir.path()).allow_empty(true).watch(true).build().unwrap();
    let handle = server.reload_handle();
    let srv = TestServer::run(server).await;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut h = HealthClient::new(srv.channel().await);
    let up = h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(up.status(), ServingStatus::Serving);
    assert_eq!(handle.snapshot().services().len(), 0);

    // Files arrive: served.
    copy_dir(&users_dir(), dir.path());
    tokio::time::timeout(WAIT, handle.wait_for_generation(2)).await.expect("the new files went live");
    let mut c = srv.client().await.with_pool(handle.snapshot().schema().pool().clone());
    let e = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Emptied again during a reload: "no .proto files", and the last schema stays.
    let before = handle.last_outcome().attempt;
    std::fs::remove_file(dir.path().join("user_service.proto")).unwrap();
    let mut rx = handle.outcomes();
    let failed = tokio::time::timeout(WAIT, rx.wait_for(|o| o.attempt > before && o.result.is_err()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let text = failed.error().unwrap().to_string();
    assert!(text.contains("no .proto files") && !text.contains("does not compile"), "{text}");
    assert_eq!(failed.generation, 2);
}

#[tokio::test]
async fn the_compat_check_runs_off_the_async_workers() {
    // A compat check that blocks until the test lets it go. The test runtime has
    // one thread: if the check ran on it, nothing else could be served meanwhile.
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let check: protoserve::reload::CompatCheck = Arc::new(move |old, new| {
        let _ = entered_tx.send(());
        let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
        protoserve::compat::check(old.pool(), new.pool(), protoserve::compat::RuleSet::Wire)
    });
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&users_dir(), dir.path());
    let server = Server::builder().schema_dir(dir.path()).compat_check(Some(check)).build().unwrap();
    let handle = server.reload_handle();
    let srv = TestServer::run(server).await;
    let file = dir.path().join("user_service.proto");
    let text = std::fs::read_to_string(&file).unwrap().replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;");
    std::fs::write(&file, text).unwrap();

    let reloading = tokio::spawn({
        let handle = handle.clone();
        async move { handle.reload().await }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(WAIT)).await.unwrap().expect("the check started");
    // The check is blocked right now; an RPC is answered anyway.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut h = HealthClient::new(srv.channel().await);
    h.check(HealthCheckRequest { service: String::new() }).await.expect("served during the compat check");
    assert!(!reloading.is_finished(), "the check was still running when the RPC was answered");
    release_tx.send(()).unwrap();
    let r = reloading.await.unwrap().expect("the reload went live");
    assert_eq!(r.generation, 2);
    assert!(r.phases.check > Duration::ZERO && r.phases.compile > Duration::ZERO, "{:?}", r.phases);
}

#[tokio::test]
async fn a_file_caught_empty_by_an_in_place_save_never_goes_live() {
    let live = Live::users().await;
    // Truncate, as an in-place save (or a generator) does before writing.
    let before = live.handle.last_outcome().attempt;
    let seed = std::fs::read_to_string(&live.file).unwrap();
    std::fs::write(&live.file, "").unwrap();
    let failed = live.wait_failed_after(before).await;
    assert!(matches!(failed.error(), Some(protoserve::ReloadError::NotReady { .. })), "{failed:?}");
    assert_eq!(failed.generation, 1);
    let mut c = live.client().await;
    let e = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "UserService is still served: {e:?}");
    // The write that follows goes live.
    std::fs::write(&live.file, seed.replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;")).unwrap();
    live.wait_gen(2).await;
}
