//! The stub admin API over real HTTP: runtime stubs (add, a bad stub refused,
//! replace, delete, reset, unused), the request journal (unary, server
//! stream, bidi frames in order; its bound), verify, the OpenAPI document,
//! and the API being off by default.

use std::time::Duration;

use protoserve::Server;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{Client, TestServer, get_str};

use crate::stubs::{shop_dir, stub_dir};

const FILE_STUBS: &str = r#"
- id: file-default
  method: shop.Shop/PlaceOrder
  answer: {message: {note: file}}
- id: limited
  method: shop.Shop/PlaceOrder
  times: 2
  match: {request: {contains: {order_id: limited}}}
  answer: {message: {note: limited}}
- id: tracker
  method: shop.Shop/Track
  answer: {messages: [{id: t1}, {id: t2}]}
- id: talker
  method: shop.Shop/Talk
  match: {request: {contains: {text: hello}}}
  answer: {messages: [{text: hi}, {text: there}]}
- id: talker-bye
  method: shop.Shop/Talk
  match: {request: {contains: {text: bye}}}
  answer: {message: {text: see you}}
"#;

/// A shop server with stubs and the admin API on, and the admin address.
struct Shop {
    server: TestServer,
    client: Client,
    admin: std::net::SocketAddr,
    _task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
    reload: protoserve::ReloadHandle,
    admin_handle: protoserve::admin::Admin,
}

async fn shop(journal: usize) -> Shop {
    let dir = stub_dir(&[("shop.yaml", FILE_STUBS)]);
    let server = Server::builder().schema_dir(shop_dir()).stubs(dir.path()).admin(journal).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let task = server.serve_admin(listener).expect("the admin API is on");
    let reload = server.reload_handle();
    let admin_handle = server.admin().expect("the admin API is on");
    let server = TestServer::run(server).await;
    let client = server.client().await;
    Shop { server, client, admin, _task: task, _dir: dir, reload, admin_handle }
}

/// One HTTP/1.1 request (`Connection: close`); the status and the JSON body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, body.map(str::as_bytes)).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, json)
}

async fn http_raw(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await.expect("answer in time").unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn place(c: &mut Client, json: Value) -> Result<String, tonic::Status> {
    let m = c.msg("shop.Order", json);
    c.unary("/shop.Shop/PlaceOrder", m).await.map(|r| get_str(&r, "note"))
}

fn ids(v: &Value) -> Vec<String> {
    v["stubs"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

fn stub<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["stubs"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no stub {id} in {v}"))
}

#[tokio::test]
async fn stubs_are_added_refused_replaced_deleted_and_reset_over_http() {
    let mut s = shop(100).await;
    let a = s.admin;
    let (code, list) = http(a, "GET", "/stubs", None).await;
    assert_eq!(code, 200);
    assert_eq!(ids(&list), ["file-default", "limited", "tracker", "talker", "talker-bye"]);
    assert_eq!(stub(&list, "file-default")["source"], "file");
    assert_eq!(list["problems"], json!([]));
    assert!(stub(&list, "file-default")["at"].as_str().unwrap().ends_with("shop.yaml:2:3"), "{list}");

    // Add (JSON), then the RPC sees it right after the 201.
    let vip = r#"{"id": "vip", "method": "shop.Shop/PlaceOrder",
                  "match": {"request": {"equals": {"order_id": "vip"}}},
                  "answer": {"message": {"note": "vip"}}}"#;
    let (code, added) = http(a, "POST", "/stubs", Some(vip)).await;
    assert_eq!((code, &added["ids"]), (201, &json!(["vip"])), "{added}");
    assert_eq!(place(&mut s.client, json!({"orderId": "vip"})).await.unwrap(), "vip");
    assert_eq!(place(&mut s.client, json!({"orderId": "other"})).await.unwrap(), "file");
    assert_eq!(stub(&http(a, "GET", "/stubs", None).await.1, "vip")["source"], "admin");

    // A bad stub is a 400 naming the problem; nothing changes.
    let bad =
        "method: shop.Shop/PlaceOrder\nmatch: {request: {equals: {ordr_id: x}}}\nanswer: {message: {note: bad}}\n";
    let (code, err) = http(a, "POST", "/stubs", Some(bad)).await;
    assert_eq!(code, 400, "{err}");
    let p = &err["problems"][0];
    assert!(p["message"].as_str().unwrap().contains("ordr_id"), "{err}");
    assert_eq!(p["line"].as_u64(), Some(2), "{err}");
    assert!(p["column"].as_u64().is_some(), "{err}");
    assert!(p["source"].as_str().unwrap().starts_with("admin/"), "{err}");
    assert!(p["help"].as_str().unwrap().contains("order_id"), "{err}");
    assert!(err["error"].as_str().unwrap().contains("ordr_id"), "{err}");
    let (code, err) = http(a, "POST", "/stubs", Some("method: nope.Nope/X\nanswer: {message: {}}\n")).await;
    assert_eq!(code, 400);
    assert!(err["problems"][0]["message"].as_str().unwrap().contains("no method `nope.Nope/X`"), "{err}");
    let (code, _) = http(a, "POST", "/stubs", Some("{not yaml: [")).await;
    assert_eq!(code, 400);
    assert_eq!(place(&mut s.client, json!({"orderId": "vip"})).await.unwrap(), "vip");
    assert_eq!(ids(&http(a, "GET", "/stubs", None).await.1).len(), 6);

    // A duplicate id is a conflict.
    let (code, err) = http(a, "POST", "/stubs", Some(vip)).await;
    assert_eq!(code, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("`vip`"), "{err}");

    // Replace a file stub (and the body's id may be left out).
    let (code, r) = http(
        a,
        "PUT",
        "/stubs/file-default",
        Some(r#"{"method": "shop.Shop/PlaceOrder", "answer": {"message": {"note": "replaced"}}}"#),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(place(&mut s.client, json!({"orderId": "other"})).await.unwrap(), "replaced");
    let list = http(a, "GET", "/stubs", None).await.1;
    assert_eq!(stub(&list, "file-default")["source"], "admin");
    assert_eq!(ids(&list).iter().filter(|i| *i == "file-default").count(), 1);
    let (code, _) = http(a, "PUT", "/stubs/nope", Some(vip)).await;
    assert_eq!(code, 404);
    let (code, err) = http(
        a,
        "PUT",
        "/stubs/vip",
        Some(r#"{"id": "other", "method": "shop.Shop/PlaceOrder", "answer": {"message": {}}}"#),
    )
    .await;
    assert_eq!(code, 400, "{err}");

    // Edits survive a schema reload (the runtime set lives in the responder).
    let r = s.reload.reload().await.unwrap();
    assert!(r.diff.is_empty());
    std::fs::write(s._dir.path().join("more.yaml"), "id: more\nmethod: shop.Shop/Ping\nanswer: {message: {}}\n")
        .unwrap();
    s.reload.reload().await.unwrap();
    assert_eq!(place(&mut s.client, json!({"orderId": "vip"})).await.unwrap(), "vip");
    assert!(ids(&http(a, "GET", "/stubs", None).await.1).contains(&"more".to_owned()));
    std::fs::write(s._dir.path().join("broken.yaml"), "method: shop.Shop/Pong\nanswer: {message: {}}\n").unwrap();
    s.reload.reload().await.unwrap();
    let problems = http(a, "GET", "/stubs", None).await.1["problems"].clone();
    assert!(problems[0]["text"].as_str().unwrap().contains("broken.yaml:1:9"), "{problems}");
    assert!(problems[0]["help"].as_str().unwrap().contains("shop.Shop/Ping"), "{problems}");
    std::fs::remove_file(s._dir.path().join("broken.yaml")).unwrap();
    s.reload.reload().await.unwrap();

    // Unused: stubs that answered nothing yet.
    let (code, unused) = http(a, "GET", "/stubs/unused", None).await;
    assert_eq!(code, 200);
    let unused = ids(&unused);
    for id in ["limited", "tracker", "talker", "more"] {
        assert!(unused.contains(&id.to_owned()), "{id} missing in {unused:?}");
    }
    assert!(!unused.contains(&"vip".to_owned()) && !unused.contains(&"file-default".to_owned()), "{unused:?}");

    // Delete (the path's id percent-decoded).
    let (code, _) = http(a, "DELETE", "/stubs/v%69p", None).await;
    assert_eq!(code, 200);
    assert_eq!(place(&mut s.client, json!({"orderId": "vip"})).await.unwrap(), "replaced");
    let (code, err) = http(a, "DELETE", "/stubs/vip", None).await;
    assert_eq!(code, 404, "{err}");
    let (code, _) = http(a, "DELETE", "/stubs/tracker", None).await;
    assert_eq!(code, 200);
    let m = s.client.msg("shop.Order", json!({}));
    assert_eq!(s.client.server_stream("/shop.Shop/Track", m).await.unwrap_err().code(), tonic::Code::Unimplemented);

    // Reset: back to the files, journal cleared.
    assert!(!http(a, "GET", "/journal", None).await.1["calls"].as_array().unwrap().is_empty());
    let (code, _) = http(a, "POST", "/reset", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        ids(&http(a, "GET", "/stubs", None).await.1),
        ["more", "file-default", "limited", "tracker", "talker", "talker-bye"]
    );
    assert!(http(a, "GET", "/journal", None).await.1["calls"].as_array().unwrap().is_empty());
    assert_eq!(place(&mut s.client, json!({"orderId": "vip"})).await.unwrap(), "file");
    let m = s.client.msg("shop.Order", json!({}));
    assert_eq!(s.client.server_stream("/shop.Shop/Track", m).await.unwrap().len(), 2);

    // Wrong method, unknown path.
    let (code, err) = http(a, "PATCH", "/stubs", None).await;
    assert_eq!(code, 405, "{err}");
    assert!(err["error"].as_str().unwrap().contains("GET, POST"), "{err}");
    assert_eq!(http(a, "GET", "/nope", None).await.0, 404);
    assert_eq!(http(a, "GET", "/stubs/vip", None).await.0, 405);
    drop(s.server);
}

#[tokio::test]
async fn counters_survive_rebuilds_while_the_definition_stays_and_reset_restarts_them() {
    let mut s = shop(10).await;
    let a = s.admin;
    assert_eq!(place(&mut s.client, json!({"orderId": "limited"})).await.unwrap(), "limited");
    assert_eq!(stub(&http(a, "GET", "/stubs", None).await.1, "limited")["timesLeft"], 1);
    // An unrelated edit rebuilds the snapshot: `limited` keeps its count.
    let (code, _) = http(a, "POST", "/stubs", Some("id: ping\nmethod: shop.Shop/Ping\nanswer: {message: {}}\n")).await;
    assert_eq!(code, 201);
    let list = http(a, "GET", "/stubs", None).await.1;
    assert_eq!(
        (stub(&list, "limited")["timesLeft"].clone(), stub(&list, "limited")["answered"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(place(&mut s.client, json!({"orderId": "limited"})).await.unwrap(), "limited");
    // Used up: the catch-all answers.
    assert_eq!(place(&mut s.client, json!({"orderId": "limited"})).await.unwrap(), "file");
    assert_eq!(stub(&http(a, "GET", "/stubs", None).await.1, "limited")["exhausted"], true);
    http(a, "POST", "/reset", None).await;
    assert_eq!(stub(&http(a, "GET", "/stubs", None).await.1, "limited")["timesLeft"], 2);
    assert_eq!(place(&mut s.client, json!({"orderId": "limited"})).await.unwrap(), "limited");
    // Same specificity and priority: the stub added last wins, over files too.
    for note in ["older", "newest"] {
        let text = format!("id: {note}\nmethod: shop.Shop/PlaceOrder\nanswer: {{message: {{note: {note}}}}}\n");
        assert_eq!(http(a, "POST", "/stubs", Some(&text)).await.0, 201);
    }
    assert_eq!(place(&mut s.client, json!({"orderId": "x"})).await.unwrap(), "newest");
}

#[tokio::test]
async fn the_journal_shows_unary_server_stream_and_bidi_frames_in_order() {
    let mut s = shop(100).await;
    let a = s.admin;
    let mut req = tonic::Request::new(s.client.msg("shop.Order", json!({"orderId": "o-1", "qty": 2})));
    req.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    assert_eq!(get_str(&s.client.unary_req("/shop.Shop/PlaceOrder", req).await.unwrap(), "note"), "file");
    let m = s.client.msg("shop.Order", json!({"orderId": "t"}));
    assert_eq!(s.client.server_stream("/shop.Shop/Track", m).await.unwrap().len(), 2);
    let c2 = s.client.clone();
    let chat = |t: &str| c2.msg("shop.Chat", json!({"text": t}));
    let msgs = vec![chat("hello"), chat("bye"), chat("hello")];
    let got = s.client.bidi("/shop.Shop/Talk", msgs).await.unwrap();
    assert_eq!(got.len(), 5);
    // A failing call: no stub for this message.
    let e = s.client.bidi("/shop.Shop/Talk", vec![chat("what?")]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let (code, j) = http(a, "GET", "/journal", None).await;
    assert_eq!(code, 200, "{j}");
    let calls = j["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 4, "{j}");

    let unary = &calls[0];
    assert_eq!(unary["method"], "shop.Shop/PlaceOrder");
    assert_eq!(unary["kind"], "unary");
    assert_eq!(unary["answeredBy"], "file-default");
    assert_eq!(unary["status"]["code"], "OK");
    assert_eq!(unary["headers"]["x-tenant"], json!(["acme"]));
    assert!(unary["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{unary}");
    assert_eq!(unary["generation"], 1);
    let t = unary["time"].as_str().unwrap();
    assert!(t.len() == 27 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    assert_eq!(
        unary["frames"],
        json!([
            {"direction": "request", "message": {"orderId": "o-1", "qty": 2}},
            {"direction": "reply", "message": {"note": "file"}}
        ])
    );

    let stream = &calls[1];
    assert_eq!(stream["answeredBy"], "tracker");
    assert_eq!(
        stream["frames"],
        json!([
            {"direction": "request", "message": {"orderId": "t"}},
            {"direction": "reply", "message": {"id": "t1"}},
            {"direction": "reply", "message": {"id": "t2"}}
        ])
    );

    let bidi = &calls[2];
    assert_eq!(bidi["kind"], "bidi-streaming");
    assert_eq!(bidi["stubs"], json!(["talker", "talker-bye", "talker"]));
    assert_eq!((bidi["requests"].clone(), bidi["replies"].clone()), (json!(3), json!(5)));
    let frames: Vec<(String, String)> = bidi["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["direction"].as_str().unwrap().to_owned(), f["message"]["text"].as_str().unwrap().to_owned()))
        .collect();
    let want = [
        ("request", "hello"),
        ("reply", "hi"),
        ("reply", "there"),
        ("request", "bye"),
        ("reply", "see you"),
        ("request", "hello"),
        ("reply", "hi"),
        ("reply", "there"),
    ];
    assert_eq!(frames, want.map(|(d, t)| (d.to_owned(), t.to_owned())));
    assert_eq!(bidi["status"]["code"], "OK");

    let failed = &calls[3];
    assert_eq!(failed["status"]["code"], "NOT_FOUND");
    assert!(failed["status"]["message"].as_str().unwrap().contains("no stub for /shop.Shop/Talk matches"), "{failed}");

    // Filter by method, and the last N.
    let (_, j) = http(a, "GET", "/journal?method=shop.Shop%2FTalk&limit=1", None).await;
    let calls = j["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["status"]["code"], "NOT_FOUND");
    assert_eq!(http(a, "GET", "/journal?method=shop.Shop/Talk", None).await.1["calls"].as_array().unwrap().len(), 2);
    assert_eq!(http(a, "GET", "/journal?method=nope.X/Y", None).await.0, 400);
    assert_eq!(http(a, "GET", "/journal?limit=many", None).await.0, 400);
    // Clear.
    assert_eq!(http(a, "DELETE", "/journal", None).await.0, 200);
    assert!(http(a, "GET", "/journal", None).await.1["calls"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn verify_counts_journaled_calls_with_and_without_a_matcher() {
    let mut s = shop(100).await;
    let a = s.admin;
    for id in ["a", "b", "a"] {
        place(&mut s.client, json!({"orderId": id})).await.unwrap();
    }
    let mut req = tonic::Request::new(s.client.msg("shop.Order", json!({"orderId": "c"})));
    req.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    s.client.unary_req("/shop.Shop/PlaceOrder", req).await.unwrap();
    let c2 = s.client.clone();
    let chat = |t: &str| c2.msg("shop.Chat", json!({"text": t}));
    s.client.bidi("/shop.Shop/Talk", vec![chat("hello"), chat("bye")]).await.unwrap();

    let count = |body: Value| async move {
        let (code, v) = http(a, "POST", "/verify", Some(&body.to_string())).await;
        assert_eq!(code, 200, "{v}");
        v["count"].as_u64().unwrap()
    };
    assert_eq!(count(json!({"method": "shop.Shop/PlaceOrder"})).await, 4);
    assert_eq!(
        count(json!({"method": "shop.Shop/PlaceOrder", "match": {"request": {"equals": {"orderId": "a"}}}})).await,
        2
    );
    assert_eq!(
        count(json!({"method": "shop.Shop/PlaceOrder", "match": {"request": {"contains": {"order_id": "b"}}}})).await,
        1
    );
    assert_eq!(
        count(json!({"method": "shop.Shop/PlaceOrder", "match": {"headers": {"equals": {"x-tenant": "acme"}}}})).await,
        1
    );
    assert_eq!(
        count(json!({"method": "shop.Shop/PlaceOrder", "match": {"request": {"equals": {"orderId": "zzz"}}}})).await,
        0
    );
    // Bidi: a call counts when one of its messages matches.
    assert_eq!(count(json!({"method": "shop.Shop/Talk", "match": {"request": {"equals": {"text": "bye"}}}})).await, 1);
    assert_eq!(count(json!({"method": "shop.Shop/Track"})).await, 0);

    // Bad queries are 400s naming the problem.
    let (code, err) = http(a, "POST", "/verify", Some(r#"{"method": "shop.Shop/PlaceOrdr"}"#)).await;
    assert_eq!(code, 400);
    assert!(err["problems"][0]["help"].as_str().unwrap().contains("shop.Shop/PlaceOrder"), "{err}");
    let (code, err) = http(
        a,
        "POST",
        "/verify",
        Some(r#"{"method": "shop.Shop/PlaceOrder", "match": {"request": {"equals": {"nope": 1}}}}"#),
    )
    .await;
    assert_eq!(code, 400);
    assert!(err["error"].as_str().unwrap().contains("nope"), "{err}");
    assert_eq!(http(a, "POST", "/verify", Some(r#"{"match": {}}"#)).await.0, 400);
    assert_eq!(http(a, "POST", "/verify", Some(r#"{"method": "shop.Shop/PlaceOrder", "extra": 1}"#)).await.0, 400);
    assert_eq!(http(a, "POST", "/verify", Some("")).await.0, 400);
    assert_eq!(http_raw(a, "POST", "/verify", Some(&[0xff, 0xfe])).await.0, 400);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_documented_route_answers() {
    let s = shop(10).await;
    let a = s.admin;
    let (code, doc) = http(a, "GET", "/openapi.json", None).await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    // Every route the server serves is documented...
    let served = [
        ("get", "/openapi.json"),
        ("get", "/stubs"),
        ("post", "/stubs"),
        ("get", "/stubs/unused"),
        ("put", "/stubs/{id}"),
        ("delete", "/stubs/{id}"),
        ("post", "/reset"),
        ("get", "/journal"),
        ("delete", "/journal"),
        ("post", "/verify"),
    ];
    for (m, p) in served {
        assert!(paths.get(p).and_then(|ops| ops.get(m)).is_some(), "{m} {p} is not documented");
    }
    // ...and every documented route answers (not 404); deletions last.
    let mut routes: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object().unwrap().keys().filter(|k| *k != "parameters").map(|m| (m.clone(), p.clone()))
        })
        .collect();
    routes.sort_by_key(|(m, p)| (m == "delete", p.clone()));
    assert_eq!(routes.len(), served.len());
    {
        for (m, p) in &routes {
            let path = p.replace("{id}", "talker");
            let body = match (m.as_str(), p.as_str()) {
                ("put", _) => Some("method: shop.Shop/Talk\nanswer: {message: {text: x}}\n"),
                ("post", "/stubs") => Some("id: new-one\nmethod: shop.Shop/Ping\nanswer: {message: {}}\n"),
                ("post", "/verify") => Some(r#"{"method": "shop.Shop/Ping"}"#),
                _ => None,
            };
            let (code, v) = http(a, &m.to_uppercase(), &path, body).await;
            assert!((200..300).contains(&code), "{m} {path}: {code} {v}");
        }
    }
}

#[tokio::test]
async fn random_bodies_never_panic_and_get_a_4xx() {
    let s = shop(10).await;
    let a = s.admin;
    let pieces = [
        "method: ",
        "shop.Shop/PlaceOrder",
        "shop.Shop/Talk",
        "\n",
        "  ",
        "match:",
        " {request: {equals: ",
        "{",
        "}",
        "[",
        "]",
        "answer:",
        " {message: {note: x}}",
        "id: ",
        "times: ",
        "-1",
        "&a ",
        "*a",
        "\"",
        "'",
        ": ",
        "- ",
        "cel: ",
        "request.qty >",
        "headers:",
        "matches: ",
        "(",
        "\u{e9}",
        "\t",
        "?",
        "!!binary ",
        "0x1",
        "null",
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let admin = s.server_admin();
    for i in 0..400 {
        let n = rng.usize(0..14);
        let text: String = (0..n).map(|_| pieces[rng.usize(0..pieces.len())]).collect();
        // Straight to the operations (many cases), and over HTTP (some).
        match admin.add(text.clone()).await {
            Ok(v) => {
                // A random text that is a valid stub: remove it again.
                for id in v["ids"].as_array().unwrap() {
                    admin.delete(id.as_str().unwrap().to_owned()).await.unwrap();
                }
            }
            Err(e) => assert!(
                matches!(e, protoserve::admin::AdminError::BadRequest(..) | protoserve::admin::AdminError::Conflict(_)),
                "{text:?}: {e}"
            ),
        }
        if let Err(e) = admin.verify(&text) {
            assert!(matches!(e, protoserve::admin::AdminError::BadRequest(..)), "{text:?}: {e}");
        }
        if i % 20 == 0 {
            for (m, p) in [("POST", "/stubs"), ("POST", "/verify"), ("PUT", "/stubs/talker")] {
                let (code, v) = http(a, m, p, Some(&text)).await;
                assert!((200..300).contains(&code) || (400..500).contains(&code), "{m} {p} {text:?}: {code} {v}");
            }
            let q: String =
                (0..rng.usize(0..10)).map(|_| ["%", "=", "&", "limit", "method", "2F", "x"][rng.usize(0..7)]).collect();
            let (code, v) = http(a, "GET", &format!("/journal?{q}"), None).await;
            assert!(code == 200 || code == 400, "{q}: {code} {v}");
        }
    }
    // Oversized bodies are refused with 413.
    let big = vec![b'#'; protoserve::admin::MAX_BODY + 1];
    assert_eq!(http_raw(a, "POST", "/stubs", Some(&big)).await.0, 413);
}

impl Shop {
    fn server_admin(&self) -> protoserve::admin::Admin {
        self.admin_handle.clone()
    }
}

#[test]
fn the_binary_serves_the_admin_api_with_a_bounded_journal_and_is_off_by_default() {
    let dir = stub_dir(&[("shop.yaml", FILE_STUBS)]);
    let shop = shop_dir();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args = [
        shop.to_str().unwrap(),
        "--stubs",
        dir.path().to_str().unwrap(),
        "--admin-addr",
        &format!(":{admin_port}"),
        "--journal-size",
        "2",
    ];
    let (mut child, port) = crate::cli::spawn_server(&args);
    let mut log = crate::cli::LogTail::new(&mut child);
    log.wait_for(&format!("admin API listening on http://127.0.0.1:{admin_port}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let pool = Server::builder().schema_dir(shop_dir()).build().unwrap().snapshot().schema().pool().clone();
        let mut c = Client { grpc: tonic::client::Grpc::new(channel), pool };
        for id in ["one", "two", "three"] {
            place(&mut c, json!({"orderId": id})).await.unwrap();
        }
        let a: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let (code, j) = http(a, "GET", "/journal", None).await;
        assert_eq!(code, 200);
        assert_eq!(j["size"], 2);
        let got: Vec<&str> = j["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["frames"][0]["message"]["orderId"].as_str().unwrap())
            .collect();
        assert_eq!(got, ["two", "three"]);
    });
    let _ = child.kill();
    let _ = child.wait();

    // Off by default: no admin listener, no journal.
    let (mut child, _port) =
        crate::cli::spawn_server(&[shop.to_str().unwrap(), "--stubs", dir.path().to_str().unwrap()]);
    let mut log = crate::cli::LogTail::new(&mut child);
    log.wait_for("listening on");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let rest = String::from_utf8_lossy(&out.stderr);
    assert!(!log_text(&log).contains("admin API") && !rest.contains("admin API"), "{}", log_text(&log));
    let server = Server::builder().schema_dir(shop_dir()).build().unwrap();
    assert!(server.admin().is_none());
}

fn log_text(log: &crate::cli::LogTail) -> String {
    log.seen().to_owned()
}

#[tokio::test]
async fn a_long_stream_keeps_the_first_frames_each_way_and_counts_the_rest() {
    let mut s = shop(10).await;
    let a = s.admin;
    let n = protoserve::journal::FRAMES_PER_WAY + 3;
    let hello = s.client.msg("shop.Chat", json!({"text": "hello"}));
    let got = s.client.bidi("/shop.Shop/Talk", vec![hello; n]).await.unwrap();
    assert_eq!(got.len(), 2 * n);
    let (_, j) = http(a, "GET", "/journal", None).await;
    let call = &j["calls"][0];
    assert_eq!((call["requests"].as_u64(), call["replies"].as_u64()), (Some(n as u64), Some(2 * n as u64)));
    assert_eq!(call["framesDropped"], json!({"requests": 3, "replies": n + 3}));
    let frames = call["frames"].as_array().unwrap();
    let count = |d: &str| frames.iter().filter(|f| f["direction"] == d).count();
    assert_eq!(
        (count("request"), count("reply")),
        (protoserve::journal::FRAMES_PER_WAY, protoserve::journal::FRAMES_PER_WAY)
    );
}

#[tokio::test]
async fn verify_matches_client_streams_as_a_whole() {
    let mut s = shop(10).await;
    let a = s.admin;
    let (code, _) =
        http(a, "POST", "/stubs", Some("id: up\nmethod: shop.Shop/Upload\nanswer: {message: {note: up}}\n")).await;
    assert_eq!(code, 201);
    let order = |id: &str| s.client.msg("shop.Order", json!({"orderId": id}));
    let (x, y, z) = (order("x"), order("y"), order("z"));
    s.client.client_stream("/shop.Shop/Upload", vec![x.clone(), y]).await.unwrap();
    s.client.client_stream("/shop.Shop/Upload", vec![x, z]).await.unwrap();
    let count = |body: Value| async move {
        let (code, v) = http(a, "POST", "/verify", Some(&body.to_string())).await;
        assert_eq!(code, 200, "{v}");
        v["count"].as_u64().unwrap()
    };
    assert_eq!(count(json!({"method": "shop.Shop/Upload"})).await, 2);
    assert_eq!(
        count(json!({"method": "shop.Shop/Upload", "match": {"at": {"1": {"equals": {"orderId": "y"}}}}})).await,
        1
    );
    let both = json!({"method": "shop.Shop/Upload", "match": {"messages": [{"contains": {"orderId": "x"}}, {"contains": {"orderId": "z"}}]}});
    assert_eq!(count(both).await, 1);
    // `request` is not how a client stream is matched: the stub rule, a 400.
    let (code, err) =
        http(a, "POST", "/verify", Some(r#"{"method": "shop.Shop/Upload", "match": {"request": {"equals": {}}}}"#))
            .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(stub(&http(a, "GET", "/stubs", None).await.1, "up")["answered"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Edits made while reloads run all survive them (a reload rebuilds from the
/// responder's runtime set). The narrow race between a reload's build and its
/// swap is closed by the reload mutex `edit_responders` takes; this test does
/// not hit that window reliably.
async fn edits_interleaved_with_reloads_all_survive() {
    let s = shop(10).await;
    let admin = s.server_admin();
    for i in 0..15 {
        // A stub-file change makes each reload build and publish a snapshot.
        std::fs::write(
            s._dir.path().join("extra.yaml"),
            format!("id: extra\nmethod: shop.Shop/Ping\npriority: {i}\nanswer: {{message: {{}}}}\n"),
        )
        .unwrap();
        let reload = s.reload.clone();
        let reloading = tokio::spawn(async move { reload.reload().await.map(|_| ()) });
        let text = format!("id: race-{i}\nmethod: shop.Shop/Ping\nanswer: {{message: {{}}}}\n");
        admin.add(text).await.unwrap();
        reloading.await.unwrap().unwrap();
    }
    let live = ids(&admin.stubs());
    for i in 0..15 {
        assert!(live.contains(&format!("race-{i}")), "race-{i} lost: {live:?}");
    }
    assert_eq!(stub(&admin.stubs(), "extra")["priority"], 14);
}

#[tokio::test]
async fn the_journal_names_the_store_or_the_handler_and_redacts_authorization() {
    let server = Server::builder()
        .schema_dir(crate::harness::users_dir())
        .unary("users.UserService/GetUser", |call| async move { Ok(call.reply()) })
        .admin(10)
        .build()
        .unwrap();
    let admin = server.admin().unwrap();
    let s = TestServer::run(server).await;
    let mut c = s.client().await;
    let m = c.msg("users.CreateUserRequest", json!({"name": "ann", "email": "ann@example.com"}));
    c.unary("/users.UserService/CreateUser", m).await.unwrap();
    let mut req = tonic::Request::new(c.msg("users.GetUserRequest", json!({"userId": "1"})));
    req.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
    c.unary_req("/users.UserService/GetUser", req).await.unwrap();
    let j = admin.journal(None, None).unwrap();
    let calls = j["calls"].as_array().unwrap();
    assert_eq!((calls[0]["answeredBy"].as_str(), calls[1]["answeredBy"].as_str()), (Some("store"), Some("handler")));
    assert_eq!(calls[0]["frames"][1]["message"]["name"], "ann");
    assert_eq!(calls[1]["headers"]["authorization"], json!(["<redacted>"]));
    assert!(!j.to_string().contains("s3cret"));
    // Verify still sees the real header (it only shows counts).
    let q = |token: &str| {
        json!({"method": "users.UserService/GetUser", "match": {"headers": {"equals": {"authorization": token}}}})
            .to_string()
    };
    assert_eq!(admin.verify(&q("Bearer s3cret")).unwrap()["count"], 1);
    assert_eq!(admin.verify(&q("Bearer other")).unwrap()["count"], 0);
}

#[tokio::test]
async fn connect_calls_are_journaled_too() {
    let s = shop(10).await;
    let (code, reply) =
        http(s.server.addr, "POST", "/shop.Shop/PlaceOrder", Some(r#"{"orderId": "via-connect"}"#)).await;
    assert_eq!((code, &reply["note"]), (200, &json!("file")), "{reply}");
    let j = s.server_admin().journal(Some("shop.Shop/PlaceOrder"), None).unwrap();
    let call = &j["calls"][0];
    assert_eq!(call["frames"][0]["message"]["orderId"], "via-connect", "{j}");
    assert_eq!((call["answeredBy"].as_str(), call["status"]["code"].as_str()), (Some("file-default"), Some("OK")));
}
