//! Declarative stubs: every matcher, the ranking, times and sequences, the four
//! RPC kinds, errors with details, headers, delays, type-check errors with
//! their locations, and stubs reloaded together with the protos.

use std::path::{Path, PathBuf};

use prost::Message as _;
use protoserve::Server;
use tonic::{Code, Request};

use crate::harness::{Client, RpcStatus, TestServer, get_i64, get_str, users_dir};

pub(crate) fn shop_dir() -> PathBuf {
    crate::harness::root().join("tests/data/stubs/proto")
}

/// A temporary stub directory holding `files` (name, text).
pub(crate) fn stub_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

async fn shop(stubs: &Path) -> (TestServer, Client) {
    let server = TestServer::start(Server::builder().schema_dir(shop_dir()).stubs(stubs)).await;
    let client = server.client().await;
    (server, client)
}

fn order(c: &Client, json: serde_json::Value) -> prost_reflect::DynamicMessage {
    c.msg("shop.Order", json)
}

async fn place(c: &mut Client, json: serde_json::Value) -> Result<String, tonic::Status> {
    let m = order(c, json);
    c.unary("/shop.Shop/PlaceOrder", m).await.map(|r| get_str(&r, "note"))
}

#[tokio::test]
async fn every_matcher_answers_the_request_it_describes() {
    let dir = stub_dir(&[(
        "orders.yaml",
        r#"
- method: shop.Shop/PlaceOrder
  match:
    request:
      equals: {orderId: "eq-1", qty: 2}
  answer:
    message: {note: equals}
- method: shop.Shop/PlaceOrder
  match:
    request:
      contains: {address: {city: Paris}, tier: TIER_GOLD}
  answer:
    message: {note: contains}
- method: shop.Shop/PlaceOrder
  match:
    request:
      matches: {order_id: "re-[0-9]+", total_cents: "9+"}
  answer:
    message: {note: matches}
- method: Shop/PlaceOrder
  match:
    request:
      glob: {customer_name: "*@example.com"}
  answer:
    message: {note: glob}
- method: shop.Shop/PlaceOrder
  match:
    request:
      anyOf:
        - equals: {order_id: any-a}
        - contains: {tags: [urgent]}
  answer:
    message: {note: anyOf}
- method: shop.Shop/PlaceOrder
  match:
    request:
      cel: "request.qty > 100 && request.tags.size() == 0"
  answer:
    message: {note: cel}
- method: shop.Shop/PlaceOrder
  answer:
    message: {note: catch-all}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "eq-1", "qty": 2})).await.unwrap(), "equals");
    // equals is the whole request: one more field and it no longer holds.
    assert_eq!(
        place(&mut c, serde_json::json!({"orderId": "eq-1", "qty": 2, "tags": ["x"]})).await.unwrap(),
        "catch-all"
    );
    let paris =
        serde_json::json!({"orderId": "o", "tier": "TIER_GOLD", "address": {"city": "Paris", "zipCode": "75001"}});
    assert_eq!(place(&mut c, paris).await.unwrap(), "contains");
    assert_eq!(
        place(&mut c, serde_json::json!({"tier": "TIER_GOLD", "address": {"city": "Lyon"}})).await.unwrap(),
        "catch-all"
    );
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "re-42", "totalCents": "999"})).await.unwrap(), "matches");
    // Whole-value: a prefix is not enough.
    assert_eq!(
        place(&mut c, serde_json::json!({"orderId": "xre-42", "totalCents": "999"})).await.unwrap(),
        "catch-all"
    );
    assert_eq!(place(&mut c, serde_json::json!({"customerName": "ann@example.com"})).await.unwrap(), "glob");
    assert_eq!(place(&mut c, serde_json::json!({"customerName": "ann@example.org"})).await.unwrap(), "catch-all");
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "any-a"})).await.unwrap(), "anyOf");
    assert_eq!(place(&mut c, serde_json::json!({"tags": ["a", "urgent"]})).await.unwrap(), "anyOf");
    assert_eq!(place(&mut c, serde_json::json!({"qty": 101})).await.unwrap(), "cel");
    assert_eq!(place(&mut c, serde_json::json!({"qty": 101, "tags": ["t"]})).await.unwrap(), "catch-all");
}

#[tokio::test]
async fn equals_with_ignore_array_order_and_json_files() {
    let dir = stub_dir(&[(
        "orders.json",
        r#"[{"method": "shop.Shop/PlaceOrder",
             "match": {"request": {"equals": {"tags": ["b", "a"]}, "ignoreArrayOrder": true}},
             "answer": {"message": {"note": "unordered"}}},
            {"method": "shop.Shop/PlaceOrder",
             "match": {"request": {"equals": {"tags": ["b", "a"]}}},
             "answer": {"message": {"note": "ordered"}}}]"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    assert_eq!(place(&mut c, serde_json::json!({"tags": ["a", "b"]})).await.unwrap(), "unordered");
    let e = place(&mut c, serde_json::json!({"tags": ["a", "c"]})).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test]
async fn ranking_is_most_specific_then_priority_then_file_order() {
    let dir = stub_dir(&[
        (
            "a.yaml",
            r#"
- id: first-catch-all
  method: shop.Shop/PlaceOrder
  answer: {message: {note: first-catch-all}}
- id: one-field
  method: shop.Shop/PlaceOrder
  match: {request: {contains: {tier: TIER_GOLD}}}
  answer: {message: {note: one-field}}
- id: two-fields
  method: shop.Shop/PlaceOrder
  match: {request: {contains: {tier: TIER_GOLD, qty: 3}}}
  answer: {message: {note: two-fields}}
- id: low
  method: shop.Shop/PlaceOrder
  match: {request: {contains: {order_id: p}}}
  answer: {message: {note: low}}
"#,
        ),
        (
            "b.yaml",
            r#"
- id: high
  method: shop.Shop/PlaceOrder
  priority: 10
  match: {request: {contains: {order_id: p}}}
  answer: {message: {note: high}}
- id: second-catch-all
  method: shop.Shop/PlaceOrder
  answer: {message: {note: second-catch-all}}
"#,
        ),
    ]);
    let (_s, mut c) = shop(dir.path()).await;
    // Two fields pinned beat one, whatever the order written.
    assert_eq!(place(&mut c, serde_json::json!({"tier": "TIER_GOLD", "qty": 3})).await.unwrap(), "two-fields");
    assert_eq!(place(&mut c, serde_json::json!({"tier": "TIER_GOLD", "qty": 4})).await.unwrap(), "one-field");
    // Equally specific: the higher priority, though in a later file.
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "p"})).await.unwrap(), "high");
    // Equally specific, same priority: file order (a.yaml before b.yaml).
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "zzz"})).await.unwrap(), "first-catch-all");
}

#[tokio::test]
async fn headers_are_matched_and_answers_send_headers_and_trailers() {
    let dir = stub_dir(&[(
        "h.yaml",
        r#"
- method: shop.Shop/PlaceOrder
  match:
    headers:
      equals: {x-tenant: acme}
      matches: {authorization: "Bearer [a-z]+"}
  answer:
    headers: {x-served-by: stub, x-tenant-seen: acme}
    trailers: {x-cost: "3"}
    message: {note: acme}
- method: shop.Shop/PlaceOrder
  match: {request: {equals: {order_id: refuse}}}
  answer:
    headers: {x-served-by: stub}
    trailers: {x-reason: policy}
    error: {code: FAILED_PRECONDITION, message: refused}
- method: shop.Shop/PlaceOrder
  answer: {message: {note: anyone}}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let mut req = Request::new(order(&c, serde_json::json!({})));
    req.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    req.metadata_mut().insert("authorization", "Bearer abc".parse().unwrap());
    c.grpc.ready().await.unwrap();
    let out = c.pool.get_message_by_name("shop.Receipt").unwrap();
    let r = c
        .grpc
        .unary(req, "/shop.Shop/PlaceOrder".parse().unwrap(), crate::harness::DynCodec(out.clone()))
        .await
        .unwrap();
    assert_eq!(r.metadata().get("x-served-by").unwrap(), "stub");
    assert_eq!(r.metadata().get("x-cost").unwrap(), "3", "the trailer: {:?}", r.metadata());
    assert_eq!(get_str(r.get_ref(), "note"), "acme");
    // An error answer sends its headers and trailers with the status.
    let e = place(&mut c, serde_json::json!({"orderId": "refuse"})).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "refused"));
    assert_eq!(e.metadata().get("x-served-by").unwrap(), "stub");
    assert_eq!(e.metadata().get("x-reason").unwrap(), "policy");
    let mut req = Request::new(order(&c, serde_json::json!({})));
    req.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    req.metadata_mut().insert("authorization", "Basic abc".parse().unwrap());
    let r = c.unary_req("/shop.Shop/PlaceOrder", req).await.unwrap();
    assert_eq!(get_str(&r, "note"), "anyone");
}

#[tokio::test]
async fn times_then_step_aside_and_sequences_for_retries() {
    let dir = stub_dir(&[(
        "s.yaml",
        r#"
- method: shop.Shop/PlaceOrder
  times: 2
  match: {request: {contains: {order_id: limited}}}
  answer: {message: {note: limited}}
- method: shop.Shop/PlaceOrder
  match: {request: {contains: {order_id: retry}}}
  answers:
    - error: {code: UNAVAILABLE, message: try again}
    - error: {code: UNAVAILABLE, message: try again}
    - message: {note: finally}
- method: shop.Shop/PlaceOrder
  match: {request: {contains: {order_id: once}}}
  then: stop
  answers:
    - message: {note: one}
    - message: {note: two}
- method: shop.Shop/PlaceOrder
  answer: {message: {note: default}}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    for _ in 0..2 {
        assert_eq!(place(&mut c, serde_json::json!({"orderId": "limited"})).await.unwrap(), "limited");
    }
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "limited"})).await.unwrap(), "default");
    for _ in 0..2 {
        let e = place(&mut c, serde_json::json!({"orderId": "retry"})).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unavailable, "try again"));
    }
    for _ in 0..3 {
        // The last answer repeats.
        assert_eq!(place(&mut c, serde_json::json!({"orderId": "retry"})).await.unwrap(), "finally");
    }
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "once"})).await.unwrap(), "one");
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "once"})).await.unwrap(), "two");
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "once"})).await.unwrap(), "default");
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

#[tokio::test]
async fn errors_carry_any_code_and_google_rpc_details() {
    let dir = stub_dir(&[(
        "e.yaml",
        r#"
method: shop.Shop/PlaceOrder
answer:
  error:
    code: RESOURCE_EXHAUSTED
    message: slow down
    details:
      - "@type": type.googleapis.com/google.rpc.ErrorInfo
        reason: QUOTA
        domain: shop.example.com
        metadata: {limit: "10"}
      - "@type": google.rpc.RetryInfo
        retryDelay: 1.5s
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let e = place(&mut c, serde_json::json!({})).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "slow down"));
    let st = RpcStatus::decode(e.details()).expect("grpc-status-details-bin is a google.rpc.Status");
    assert_eq!((st.code, st.message.as_str()), (Code::ResourceExhausted as i32, "slow down"));
    assert_eq!(st.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    let info = ErrorInfo::decode(st.details[0].value.as_slice()).unwrap();
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("QUOTA", "shop.example.com"));
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some("10"));
    assert_eq!(st.details[1].type_url, "type.googleapis.com/google.rpc.RetryInfo");
    let retry = RetryInfo::decode(st.details[1].value.as_slice()).unwrap();
    assert_eq!(retry.retry_delay, Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }));
}

#[tokio::test]
async fn server_streaming_answers_a_list_with_delays_then_an_error() {
    let dir = stub_dir(&[(
        "t.yaml",
        r#"
- method: shop.Shop/Track
  match: {request: {contains: {order_id: ok}}}
  answer:
    messages: [{id: a}, {id: b}]
- method: shop.Shop/Track
  match: {request: {contains: {order_id: failing}}}
  answer:
    delay: {min: 1ms, max: 5ms}
    stream:
      - message: {id: first, amount: 5}
      - message: {id: second}
        delay: 20ms
    error: {code: ABORTED, message: lost track}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let m = order(&c, serde_json::json!({"orderId": "ok"}));
    let got = c.server_stream("/shop.Shop/Track", m).await.unwrap();
    assert_eq!(got.iter().map(|r| get_str(r, "id")).collect::<Vec<_>>(), ["a", "b"]);
    let m = order(&c, serde_json::json!({"orderId": "failing"}));
    let mut s = c.server_stream_open("/shop.Shop/Track", m).await.unwrap();
    let first = s.message().await.unwrap().unwrap();
    assert_eq!((get_str(&first, "id"), get_i64(&first, "amount")), ("first".to_owned(), 5));
    assert_eq!(get_str(&s.message().await.unwrap().unwrap(), "id"), "second");
    let e = s.message().await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Aborted, "lost track"));
}

#[tokio::test]
async fn a_delay_is_bounded_by_the_callers_deadline() {
    let dir = stub_dir(&[("d.yaml", "method: shop.Shop/PlaceOrder\nanswer: {delay: 10m, message: {}}\n")]);
    let (s, c) = shop(dir.path()).await;
    // A client that does not enforce deadlines itself: the answer is the server's.
    let msg = order(&c, serde_json::json!({}));
    let mut c = c.with_grpc(s.raw_grpc());
    let mut req = Request::new(msg);
    req.metadata_mut().insert("grpc-timeout", "100m".parse().unwrap());
    let out = c.pool.get_message_by_name("shop.Receipt").unwrap();
    c.grpc.ready().await.unwrap();
    let e =
        c.grpc.unary(req, "/shop.Shop/PlaceOrder".parse().unwrap(), crate::harness::DynCodec(out)).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
}

#[tokio::test]
async fn client_streaming_is_matched_as_a_whole_or_by_index() {
    let dir = stub_dir(&[(
        "u.yaml",
        r#"
- method: shop.Shop/Upload
  match:
    messages:
      - equals: {order_id: a}
      - contains: {order_id: b}
  answer: {message: {note: whole}}
- method: shop.Shop/Upload
  match:
    at:
      1: {matches: {order_id: "x.*"}}
  answer: {message: {note: second-is-x}}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let msgs =
        |ids: &[&str], c: &Client| ids.iter().map(|i| order(c, serde_json::json!({"orderId": i}))).collect::<Vec<_>>();
    let r = c.client_stream("/shop.Shop/Upload", msgs(&["a", "b"], &c)).await.unwrap();
    assert_eq!(get_str(&r, "note"), "whole");
    let r = c.client_stream("/shop.Shop/Upload", msgs(&["q", "xyz", "r"], &c)).await.unwrap();
    assert_eq!(get_str(&r, "note"), "second-is-x");
    let e = c.client_stream("/shop.Shop/Upload", msgs(&["a", "b", "c"], &c)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("expected 2 messages, got 3") || e.message().contains("message 1"), "{}", e.message());
}

#[tokio::test]
async fn bidi_answers_each_message_in_lockstep() {
    let dir = stub_dir(&[(
        "talk.yaml",
        r#"
- method: shop.Shop/Talk
  match: {request: {equals: {text: hello}}}
  answer: {messages: [{text: hi}, {text: "how are you?"}]}
- method: shop.Shop/Talk
  match: {request: {equals: {text: quiet}}}
  answer: {messages: []}
- method: shop.Shop/Talk
  match: {request: {equals: {text: bye}}}
  answer:
    message: {text: see you}
    error: {code: CANCELLED, message: hung up}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let chat = |t: &str, c: &Client| c.msg("shop.Chat", serde_json::json!({"text": t}));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let out = c.pool.get_message_by_name("shop.Chat").unwrap();
    c.grpc.ready().await.unwrap();
    let mut s = c
        .grpc
        .streaming(
            Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            "/shop.Shop/Talk".parse().unwrap(),
            crate::harness::DynCodec(out),
        )
        .await
        .unwrap()
        .into_inner();
    // One message in, its answers out, before the next is sent.
    tx.send(chat("hello", &c)).await.unwrap();
    assert_eq!(get_str(&s.message().await.unwrap().unwrap(), "text"), "hi");
    assert_eq!(get_str(&s.message().await.unwrap().unwrap(), "text"), "how are you?");
    tx.send(chat("quiet", &c)).await.unwrap();
    tx.send(chat("bye", &c)).await.unwrap();
    assert_eq!(get_str(&s.message().await.unwrap().unwrap(), "text"), "see you");
    let e = s.message().await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Cancelled, "hung up"));
    // A message no stub matches ends the stream with NOT_FOUND.
    let e = c.bidi("/shop.Shop/Talk", vec![chat("hello", &c), chat("what?", &c)]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test]
async fn no_match_is_not_found_naming_the_closest_stub_and_each_difference() {
    let dir = stub_dir(&[(
        "n.yaml",
        r#"
- id: gold-paris
  method: shop.Shop/PlaceOrder
  match: {request: {contains: {tier: TIER_GOLD, address: {city: Paris}, qty: 1}}}
  answer: {message: {}}
- id: far-away
  method: shop.Shop/PlaceOrder
  match: {request: {equals: {order_id: "1", customer_name: x, qty: 9, tags: [a]}}}
  answer: {message: {}}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let e = place(&mut c, serde_json::json!({"tier": "TIER_SILVER", "address": {"city": "Paris"}, "qty": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let m = e.message();
    assert!(m.contains("`gold-paris`") && m.contains("n.yaml:2:3"), "{m}");
    assert!(m.contains(r#"request `tier`: expected "TIER_GOLD", got "TIER_SILVER""#), "{m}");
    assert!(!m.contains("city"), "only what differs: {m}");
}

#[tokio::test]
async fn a_miss_of_stubs_found_by_hash_names_the_closest_with_its_default_id_and_place() {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "- method: shop.Shop/PlaceOrder\n  match: {{request: {{equals: {{order_id: o{i}, qty: {i}}}}}}}\n  answer: {{message: {{note: n{i}}}}}\n"
        ));
    }
    let dir = stub_dir(&[("k.yaml", &text)]);
    let (_s, mut c) = shop(dir.path()).await;
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "o7", "qty": 7})).await.unwrap(), "n7");
    let e = place(&mut c, serde_json::json!({"orderId": "o7", "qty": 70})).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let m = e.message();
    let file = dir.path().join("k.yaml").display().to_string();
    // The 8th stub of the file, on line 22 (three lines per stub).
    assert!(m.contains(&format!("the closest is `{file}#8` ({file}:22:3)")), "{m}");
    assert!(m.contains("request `qty`: expected 7, got 70"), "{m}");
}

#[tokio::test]
async fn a_file_with_a_syntax_error_serves_none_of_its_stubs() {
    let good = "- method: shop.Shop/PlaceOrder\n  answer: {message: {note: from-good}}\n";
    let broken = "- method: shop.Shop/PlaceOrder\n  priority: 9\n  answer: {message: {note: from-broken}}\n- method: [unclosed\n";
    let dir = stub_dir(&[("a.yaml", good), ("b.yaml", broken)]);
    let server = Server::builder().schema_dir(shop_dir()).stubs(dir.path()).build().unwrap();
    let problems: Vec<String> = server.snapshot().problems().iter().map(|p| p.to_string()).collect();
    let file = dir.path().join("b.yaml").display().to_string();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with(&format!("{file}:")) && problems[0].contains("not valid YAML"), "{problems:#?}");
    // The stub before the error in b.yaml (priority 9) is not served.
    let server = TestServer::run(server).await;
    let mut c = server.client().await;
    assert_eq!(place(&mut c, serde_json::json!({})).await.unwrap(), "from-good");
}

#[tokio::test]
async fn unmatched_calls_fall_through_to_the_store_when_it_serves_the_method() {
    let dir = stub_dir(&[(
        "u.yaml",
        r#"
method: users.UserService/GetUser
match: {request: {equals: {user_id: stubbed}}}
answer: {message: {id: stubbed, name: From A Stub}}
"#,
    )]);
    let server = TestServer::start(Server::builder().schema_dir(users_dir()).stubs(dir.path())).await;
    let mut c = server.client().await;
    let r = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", serde_json::json!({"userId": "stubbed"})))
        .await
        .unwrap();
    assert_eq!(get_str(&r, "name"), "From A Stub");
    let created = c
        .unary(
            "/users.UserService/CreateUser",
            c.msg("users.CreateUserRequest", serde_json::json!({"name": "Ann", "email": "a@x"})),
        )
        .await
        .unwrap();
    let id = get_str(&created, "id");
    let r = c
        .unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", serde_json::json!({"userId": id})))
        .await
        .unwrap();
    assert_eq!(get_str(&r, "name"), "Ann", "the store answered");
    let routes = server_routes(&users_dir(), dir.path());
    assert!(routes.iter().any(|l| l.contains("GetUser") && l.contains("stubs (1 stub, else the store)")), "{routes:?}");
}

#[tokio::test]
async fn requests_found_from_their_bytes_keep_times_and_the_ranking_whatever_their_encoding() {
    // GetUserRequest is flat: its stubs are found from the request's bytes.
    let dir = stub_dir(&[(
        "u.yaml",
        r#"
- method: users.UserService/GetUser
  times: 1
  match: {request: {equals: {user_id: a}}}
  answer: {message: {id: a, name: once}}
- method: users.UserService/GetUser
  match: {request: {equals: {user_id: a}}}
  answer: {message: {id: a, name: then}}
"#,
    )]);
    let server = TestServer::start(Server::builder().schema_dir(users_dir()).stubs(dir.path())).await;
    let mut c = server.client().await;
    let desc = c.pool.get_message_by_name("users.GetUserRequest").unwrap();
    let get = |c: &mut Client, bytes: &'static [u8]| {
        let m = prost_reflect::DynamicMessage::decode(desc.clone(), bytes).unwrap();
        let c = c.clone();
        async move {
            let mut c = c;
            c.unary("/users.UserService/GetUser", m).await.map(|r| get_str(&r, "name"))
        }
    };
    // Canonical bytes (field 1 = "a"): the first stub once, then the second.
    assert_eq!(get(&mut c, b"\x0a\x01a").await.unwrap(), "once");
    assert_eq!(get(&mut c, b"\x0a\x01a").await.unwrap(), "then");
    // The same request written otherwise (an unknown field 9, a field given twice,
    // the last winning): decoded, same key, same stub.
    assert_eq!(get(&mut c, b"\x0a\x01a\x48\x07").await.unwrap(), "then");
    assert_eq!(get(&mut c, b"\x0a\x01b\x0a\x01a").await.unwrap(), "then");
    // Another id: no stub; the store answers NOT_FOUND in its own words.
    let e = get(&mut c, b"\x0a\x01b").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("User 'b' not found"), "{}", e.message());
}

fn server_routes(schema: &Path, stubs: &Path) -> Vec<String> {
    Server::builder().schema_dir(schema).stubs(stubs).build().unwrap().snapshot().describe_routes()
}

#[tokio::test]
async fn ping_with_empty_answers_from_a_stub() {
    let dir = stub_dir(&[("p.yaml", "method: shop.Shop/Ping\nanswer: {message: {}}\n")]);
    let (_s, mut c) = shop(dir.path()).await;
    let empty = c.msg("google.protobuf.Empty", serde_json::json!({}));
    c.unary("/shop.Shop/Ping", empty).await.unwrap();
}

const BAD: &str = r#"- id: good
  method: shop.Shop/PlaceOrder
  answer: {message: {note: still serving}}
- method: shop.Shop/PlaceOrdr
  answer: {message: {}}
- method: shop.Shop/PlaceOrder
  match:
    request:
      contains: {custmer_name: x}
  answer: {message: {}}
- method: shop.Shop/PlaceOrder
  match: {request: {contains: {tier: TIER_GOLDD, qty: "many"}}}
  answer: {message: {amount: 1.5}}
- method: shop.Shop/Track
  answer: {message: {id: x}}
- method: shop.Shop/PlaceOrder
  answer:
    error: {code: NOT_FOUND, details: [{"@type": google.rpc.ErrorInf}]}
"#;

#[tokio::test]
async fn bad_stubs_are_reported_at_their_location_and_the_others_serve() {
    let dir = stub_dir(&[("bad.yaml", BAD)]);
    let server = Server::builder().schema_dir(shop_dir()).stubs(dir.path()).build().unwrap();
    let problems: Vec<String> = server.snapshot().problems().iter().map(|p| p.to_string()).collect();
    let file = dir.path().join("bad.yaml").display().to_string();
    let find = |needle: &str| {
        problems
            .iter()
            .find(|p| p.contains(needle))
            .unwrap_or_else(|| panic!("no problem with {needle:?} in {problems:#?}"))
    };
    let p = find("no method `shop.Shop/PlaceOrdr`");
    assert!(
        p.starts_with(&format!("{file}:4:11: error:")) && p.contains("did you mean `shop.Shop/PlaceOrder`?"),
        "{p}"
    );
    let p = find("no field `custmer_name` in shop.Order");
    assert!(p.starts_with(&format!("{file}:9:18: error:")) && p.contains("did you mean `customer_name`?"), "{p}");
    let p = find("`TIER_GOLDD` is not a value of shop.Tier");
    assert!(p.starts_with(&format!("{file}:12:38:")) && p.contains("did you mean `TIER_GOLD`?"), "{p}");
    let p = find("`qty` is an int32, found a string");
    assert!(p.starts_with(&format!("{file}:12:55:")), "{p}");
    let p = find("`amount` is an int64");
    assert!(p.starts_with(&format!("{file}:13:30:")), "{p}");
    let p = find("a server-streaming answer is a list");
    assert!(p.starts_with(&format!("{file}:15:12:")), "{p}");
    let p = find("no message `google.rpc.ErrorInf`");
    assert!(p.contains("did you mean `google.rpc.ErrorInfo`?"), "{p}");
    assert_eq!(problems.len(), 7, "{problems:#?}");
    // The good stub serves.
    let server = TestServer::run(server).await;
    let mut c = server.client().await;
    assert_eq!(place(&mut c, serde_json::json!({})).await.unwrap(), "still serving");
}

#[test]
fn check_prints_stub_problems_and_fails() {
    let dir = stub_dir(&[("bad.yaml", BAD)]);
    let config = protoserve::CheckConfig {
        roots: vec![shop_dir()],
        imports: vec![],
        exclude: vec![],
        stubs: vec![dir.path().to_path_buf()],
        descriptor_set_out: None,
    };
    let e = protoserve::check(&config).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let text = e.to_string();
    assert!(text.contains("7 stub problem(s)") && text.contains("bad.yaml:4:11: error: no method"), "{text}");
    let good = stub_dir(&[("ok.yaml", "method: shop.Shop/Ping\nanswer: {message: {}}\n")]);
    let config = protoserve::CheckConfig { stubs: vec![good.path().to_path_buf()], ..config };
    let out = protoserve::check(&config).unwrap();
    assert!(out.contains("/shop.Shop/Ping  [unary] stubs (1 stub)"), "{out}");
}

#[tokio::test]
async fn stubs_and_protos_reload_together() {
    let tmp = tempfile::tempdir().unwrap();
    let protos = tmp.path().join("proto");
    crate::harness::copy_dir(&shop_dir(), &protos);
    let stubs = tmp.path().join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let stub = |note: &str| {
        format!(
            "method: shop.Shop/PlaceOrder\nmatch: {{request: {{contains: {{customer_name: ann}}}}}}\nanswer: {{message: {{note: {note}}}}}\n"
        )
    };
    std::fs::write(stubs.join("s.yaml"), stub("v1")).unwrap();
    let server = Server::builder().schema_dir(&protos).stubs(&stubs).watch(true).build().unwrap();
    let reload = server.reload_handle();
    let server = TestServer::run(server).await;
    let mut c = server.client().await;
    assert_eq!(place(&mut c, serde_json::json!({"customerName": "ann"})).await.unwrap(), "v1");

    // A stub edit alone reloads (the schema is unchanged).
    let g = reload.generation();
    std::fs::write(stubs.join("s.yaml"), stub("v2")).unwrap();
    reload.wait_for_generation(g + 1).await;
    assert_eq!(place(&mut c, serde_json::json!({"customerName": "ann"})).await.unwrap(), "v2");

    // A proto edit that removes the matched field disables the stub, reported
    // against the new schema.
    let g = reload.generation();
    let text = std::fs::read_to_string(protos.join("shop.proto")).unwrap();
    std::fs::write(protos.join("shop.proto"), text.replace("string customer_name = 2;", "string buyer = 2;")).unwrap();
    reload.wait_for_generation(g + 1).await;
    let snap = reload.snapshot();
    let p: Vec<String> = snap.problems().iter().map(|p| p.to_string()).collect();
    assert!(
        p.len() == 1 && p[0].contains("no field `customer_name` in shop.Order") && p[0].contains("s.yaml:2:"),
        "{p:?}"
    );
    let e = c.unary("/shop.Shop/PlaceOrder", c.msg("shop.Order", serde_json::json!({}))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "no stub left for the method: {e:?}");

    // Fixing the stub to the new field brings it back.
    let g = reload.generation();
    std::fs::write(stubs.join("s.yaml"), stub("v3").replace("customer_name", "buyer")).unwrap();
    reload.wait_for_generation(g + 1).await;
    assert!(reload.snapshot().problems().is_empty(), "{:?}", reload.snapshot().problems());
    let mut c = server.client().await.with_pool(reload.snapshot().schema().pool().clone());
    let m = c.msg("shop.Order", serde_json::json!({"buyer": "ann"}));
    let r = c.unary("/shop.Shop/PlaceOrder", m).await.unwrap();
    assert_eq!(get_str(&r, "note"), "v3");
}

#[test]
fn mutated_stub_files_never_panic_the_checker() {
    let seeds = [BAD, include_str!("../../examples/stubs/users.yaml"), GRIPMOCK, TEMPLATED];
    let mut rng = fastrand::Rng::with_seed(0x57ab);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..150 {
        let mut b = seeds[round % seeds.len()].as_bytes().to_vec();
        for _ in 0..rng.usize(1..8) {
            if b.is_empty() {
                break;
            }
            let i = rng.usize(..b.len());
            match rng.u8(..4) {
                0 => b[i] = rng.u8(32..127),
                1 => {
                    b.remove(i);
                }
                2 => b.insert(i, b"{}[]:-&*!|>'\"\n #,@"[rng.usize(..18)]),
                _ => {
                    let j = rng.usize(..b.len());
                    let chunk: Vec<u8> = b[i.min(j)..i.max(j)].to_vec();
                    b.splice(i..i, chunk.into_iter().take(200));
                }
            }
        }
        std::fs::write(dir.path().join("fuzz.yaml"), &b).unwrap();
        let built = Server::builder().schema_dir(shop_dir()).schema_dir(users_dir()).stubs(dir.path()).build();
        assert!(built.is_ok(), "a bad stub never stops the server: {:?}", built.err());
    }
}

#[test]
fn the_check_command_prints_located_stub_errors_and_exits_1() {
    let dir = stub_dir(&[("bad.yaml", BAD)]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .arg("check")
        .arg(shop_dir())
        .arg("--stubs")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("bad.yaml").display().to_string();
    assert!(err.contains(&format!("{file}:9:18: error: no field `custmer_name` in shop.Order")), "{err}");
    assert!(err.contains("help: did you mean `customer_name`?"), "{err}");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .args(["check", "schemas/users", "--stubs", "examples/stubs"])
        .current_dir(crate::harness::root())
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("/users.UserService/GetUser  [unary] stubs (3 stubs, else the store)")
    );
}

/// The Python grpcio client (from `.venv`, set up by scripts/test.sh) decodes
/// the details a stub's error sends.
#[test]
fn python_grpcio_decodes_a_stubs_error_details() {
    let root = crate::harness::root();
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test.sh, which sets up the interop clients", python.display());
    let bin = std::env::var_os("PROTOSERVE_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_protoserve")), PathBuf::from);
    let gen_dir = tempfile::tempdir().unwrap();
    let set = gen_dir.path().join("set.binpb");
    let ok = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(std::process::Command::new(&bin).arg("check").arg(users_dir()).arg("--descriptor-set-out").arg(&set));
    ok(std::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("--descriptor_set_in={}", set.display()))
        .arg(format!("--python_out={}", gen_dir.path().display()))
        .args(["google/rpc/status.proto", "google/rpc/error_details.proto"]));
    let stubs = root.join("examples/stubs");
    let (mut child, port) =
        crate::cli::spawn_server_with(&bin, &[users_dir().to_str().unwrap(), "--stubs", stubs.to_str().unwrap()]);
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/interop/stub_errors.py"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(gen_dir.path())
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("stub errors: ok"),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn many_equals_stubs_are_found_by_hash_and_keep_the_ranking() {
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!(
            "- method: shop.Shop/PlaceOrder\n  match: {{request: {{equals: {{order_id: o{i}, qty: {i}}}}}}}\n  answer: {{message: {{note: n{i}}}}}\n"
        ));
    }
    text.push_str(
        r#"
- method: shop.Shop/PlaceOrder
  match: {request: {equals: {order_id: tie, qty: 3}}}
  answer: {message: {note: equals-loses-on-priority}}
- method: shop.Shop/PlaceOrder
  priority: 5
  match: {request: {contains: {order_id: tie, qty: 3}}}
  answer: {message: {note: contains-wins-on-priority}}
- method: shop.Shop/PlaceOrder
  priority: -1
  match: {request: {contains: {order_id: o8, qty: 8}}}
  answer: {message: {note: contains-loses}}
- method: shop.Shop/PlaceOrder
  times: 1
  match: {request: {equals: {order_id: once}}}
  answer: {message: {note: once}}
- method: shop.Shop/PlaceOrder
  answer: {message: {note: catch-all}}
"#,
    );
    let dir = stub_dir(&[("many.yaml", &text)]);
    let (_s, mut c) = shop(dir.path()).await;
    for i in [0, 1, 1234, 2999] {
        assert_eq!(
            place(&mut c, serde_json::json!({"orderId": format!("o{i}"), "qty": i})).await.unwrap(),
            format!("n{i}")
        );
    }
    // Defaults written or not, JSON names or proto names: the same request.
    assert_eq!(
        place(&mut c, serde_json::json!({"orderId": "o5", "qty": 5, "tier": "TIER_UNSPECIFIED"})).await.unwrap(),
        "n5"
    );
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "o5", "qty": 6})).await.unwrap(), "catch-all");
    // Stubs found by hash and scanned ones merge in rank order.
    assert_eq!(
        place(&mut c, serde_json::json!({"orderId": "tie", "qty": 3})).await.unwrap(),
        "contains-wins-on-priority"
    );
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "o8", "qty": 8})).await.unwrap(), "n8");
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "once"})).await.unwrap(), "once");
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "once"})).await.unwrap(), "catch-all");
}

#[tokio::test]
async fn under_on_breaking_reject_a_proto_edit_that_breaks_stubs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let protos = tmp.path().join("proto");
    crate::harness::copy_dir(&shop_dir(), &protos);
    let stubs = stub_dir(&[(
        "s.yaml",
        "method: shop.Shop/PlaceOrder\nmatch: {request: {contains: {customer_name: ann}}}\nanswer: {message: {note: ok}}\n",
    )]);
    let server = Server::builder()
        .schema_dir(&protos)
        .stubs(stubs.path())
        .on_breaking(protoserve::OnBreaking::Reject)
        .build()
        .unwrap();
    let reload = server.reload_handle();
    let server = TestServer::run(server).await;
    let mut c = server.client().await;
    // Renaming a field is wire-compatible, but the stub matches on its name.
    let text = std::fs::read_to_string(protos.join("shop.proto")).unwrap();
    std::fs::write(protos.join("shop.proto"), text.replace("string customer_name = 2;", "string buyer = 2;")).unwrap();
    let err = reload.reload().await.unwrap_err();
    let protoserve::ReloadError::BreaksStubs { live: 1, report, .. } = &*err else { panic!("{err}") };
    assert!(report.contains("s.yaml:2:30: error: no field `customer_name` in shop.Order"), "{report}");
    assert!(report.contains("help: shop.Order has: order_id, buyer,"), "{report}");
    assert_eq!(reload.generation(), 1);
    assert_eq!(place(&mut c, serde_json::json!({"customerName": "ann"})).await.unwrap(), "ok");
    // Accepted once, it goes live and the stub is disabled.
    let done = reload.accept_breaking().await.unwrap();
    assert!(done.generation > 1 && reload.generation() == done.generation, "{done:?}");
    assert_eq!(reload.snapshot().problems().len(), 1);
}

#[tokio::test]
async fn calls_under_load_lose_nothing_while_stubs_and_protos_reload() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let protos = tmp.path().join("proto");
    crate::harness::copy_dir(&shop_dir(), &protos);
    let stubs = tmp.path().join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let stub = |v: usize| {
        format!(
            "- method: shop.Shop/PlaceOrder\n  answer: {{message: {{note: v{v}}}}}\n\
             - method: shop.Shop/Track\n  answer: {{messages: [{{id: a{v}}}, {{id: b{v}}}]}}\n\
             - method: shop.Shop/Talk\n  answer: {{message: {{text: t{v}}}}}\n"
        )
    };
    std::fs::write(stubs.join("s.yaml"), stub(0)).unwrap();
    let server = Server::builder().schema_dir(&protos).stubs(&stubs).watch(true).build().unwrap();
    let reload = server.reload_handle();
    let server = TestServer::run(server).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut c = server.client().await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut calls = 0usize;
            while !stop.load(Ordering::Relaxed) || calls < 10 {
                let note = place(&mut c, serde_json::json!({"orderId": "x"})).await.expect("PlaceOrder");
                assert!(note.starts_with('v'), "{note}");
                let m = order(&c, serde_json::json!({}));
                let got = c.server_stream("/shop.Shop/Track", m).await.expect("Track");
                assert_eq!(got.len(), 2);
                let chat = c.msg("shop.Chat", serde_json::json!({"text": "x"}));
                let r = c.bidi("/shop.Shop/Talk", vec![chat.clone(), chat]).await.expect("Talk");
                assert_eq!(r.len(), 2);
                calls += 3;
            }
            calls
        }));
    }
    // Stub edits and proto edits, one after the other, through the watcher.
    for n in 1..=8usize {
        let g = reload.generation();
        if n % 2 == 0 {
            std::fs::write(stubs.join("s.yaml"), stub(n)).unwrap();
        } else {
            let text = std::fs::read_to_string(protos.join("shop.proto")).unwrap();
            std::fs::write(protos.join("shop.proto"), format!("{text}\nmessage Extra{n} {{ string note = 1; }}\n"))
                .unwrap();
        }
        reload.wait_for_generation(g + 1).await;
        assert!(reload.snapshot().problems().is_empty(), "{:?}", reload.snapshot().problems());
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.expect("no call failed");
    }
    assert!(total >= 30, "{total}");
    let mut c = server.client().await;
    assert_eq!(place(&mut c, serde_json::json!({})).await.unwrap(), "v8", "the last stub edit is live");
}

#[tokio::test]
async fn stubs_given_by_code_are_checked_and_served_like_files() {
    let server = Server::builder()
        .schema_dir(shop_dir())
        .stub_text("inline", "method: shop.Shop/PlaceOrder\nanswer: {message: {note: from code}}\n")
        .stub_text("broken", "method: shop.Shop/Track\nanswer: {messages: [{idd: x}]}\n")
        .build()
        .unwrap();
    let problems: Vec<String> = server.snapshot().problems().iter().map(|p| p.to_string()).collect();
    assert!(
        problems.len() == 1 && problems[0].starts_with("broken:2:22: error: no field `idd` in shop.Receipt"),
        "{problems:?}"
    );
    let server = TestServer::run(server).await;
    let mut c = server.client().await;
    assert_eq!(place(&mut c, serde_json::json!({})).await.unwrap(), "from code");
}

/// GripMock v3 files, written for these tests from its documented format.
const GRIPMOCK: &str = r#"
- service: Shop
  method: PlaceOrder
  input:
    equals: {order_id: g1}
  output:
    data: {note: from gripmock}
    headers: {x-g: "1"}
- service: shop.Shop
  method: PlaceOrder
  priority: 10
  input:
    contains: {customer_name: vip}
  output:
    error: vip orders are closed
    code: 9
    details:
      - "@type": type.googleapis.com/google.rpc.ErrorInfo
        reason: CLOSED
- service: Shop
  method: PlaceOrder
  headers:
    equals: {x-env: test}
  options: {times: 1}
  output:
    data: {note: once for the test env}
- service: Shop
  method: Track
  input: {matches: {order_id: "t-.*"}}
  output:
    delay: 5ms
    stream:
      - {id: s1}
      - {id: s2}
- service: Shop
  method: Upload
  inputs:
    - equals: {order_id: u1}
    - equals: {order_id: u2}
  output:
    data: {note: two uploads}
- service: Shop
  method: PlaceOrder
  output:
    error: boom
"#;

#[tokio::test]
async fn gripmock_files_load_unchanged() {
    let dir = stub_dir(&[("gripmock.yaml", GRIPMOCK)]);
    let (_s, mut c) = shop(dir.path()).await;
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "g1"})).await.unwrap(), "from gripmock");
    // Priority first, whatever the specificity: GripMock's rule.
    let e = place(&mut c, serde_json::json!({"orderId": "g1", "customerName": "vip"})).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "vip orders are closed"));
    let st = RpcStatus::decode(e.details()).unwrap();
    assert_eq!(ErrorInfo::decode(st.details[0].value.as_slice()).unwrap().reason, "CLOSED");
    // An error without a code is UNKNOWN.
    let e = place(&mut c, serde_json::json!({"orderId": "other"})).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unknown, "boom"));
    // Headers and options.times.
    for expect in ["once for the test env", "boom"] {
        let mut req = Request::new(order(&c, serde_json::json!({"orderId": "h"})));
        req.metadata_mut().insert("x-env", "test".parse().unwrap());
        match c.unary_req("/shop.Shop/PlaceOrder", req).await {
            Ok(r) => assert_eq!(get_str(&r, "note"), expect),
            Err(e) => assert_eq!(e.message(), expect),
        }
    }
    let m = order(&c, serde_json::json!({"orderId": "t-1"}));
    let got = c.server_stream("/shop.Shop/Track", m).await.unwrap();
    assert_eq!(got.iter().map(|r| get_str(r, "id")).collect::<Vec<_>>(), ["s1", "s2"]);
    let ups = vec![order(&c, serde_json::json!({"orderId": "u1"})), order(&c, serde_json::json!({"orderId": "u2"}))];
    assert_eq!(get_str(&c.client_stream("/shop.Shop/Upload", ups).await.unwrap(), "note"), "two uploads");
}

#[test]
fn gripmock_stubs_are_checked_with_locations_too() {
    let text = r#"- service: Shop
  method: PlaceOrder
  input:
    equals: {ordr_id: x}
  output:
    data: {note: ok}
- service: Shop
  method: PlaceOrder
  output:
    data: {note: "{{ .Request.ordr }}"}
- service: Shop
  method: PlaceOrder
  output:
    body: {note: x}
- service: Shopp
  method: PlaceOrder
  output: {data: {}}
"#;
    let dir = stub_dir(&[("g.yaml", text)]);
    let server = Server::builder().schema_dir(shop_dir()).stubs(dir.path()).build().unwrap();
    let problems: Vec<String> = server.snapshot().problems().iter().map(|p| p.to_string()).collect();
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(has("g.yaml:4:14: error: no field `ordr_id` in shop.Order"), "{problems:#?}");
    assert!(has("did you mean `order_id`?"), "{problems:#?}");
    assert!(has("g.yaml:10:18: error: template reads `.Request.ordr`: no field `ordr` in shop.Order"), "{problems:#?}");
    assert!(has("g.yaml:14:5: error: unknown key `body` in `output`"), "{problems:#?}");
    assert!(has("g.yaml:16:11: error: no method `Shopp/PlaceOrder`"), "{problems:#?}");
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[tokio::test]
async fn stubs_replace_the_built_in_health_answers_when_the_schema_defines_health() {
    let health_dir = crate::harness::root().join("tests/data/stubs/health");
    let dir = stub_dir(&[(
        "health.yaml",
        r#"
- method: grpc.health.v1.Health/Check
  match: {request: {equals: {service: db}}}
  answer: {message: {status: NOT_SERVING}}
- method: grpc.health.v1.Health/Check
  answer: {message: {status: SERVING}}
- method: grpc.health.v1.Health/Watch
  answer:
    stream:
      - message: {status: SERVING}
      - message: {status: NOT_SERVING}
        delay: 10ms
"#,
    )]);
    let server =
        TestServer::start(Server::builder().schema_dir(shop_dir()).schema_dir(&health_dir).stubs(dir.path())).await;
    let mut c = server.client().await;
    let status = |r: &prost_reflect::DynamicMessage| r.get_field_by_name("status").unwrap().as_enum_number().unwrap();
    let req = |c: &Client, s: &str| c.msg("grpc.health.v1.HealthCheckRequest", serde_json::json!({"service": s}));
    let r = c.unary("/grpc.health.v1.Health/Check", req(&c, "db")).await.unwrap();
    assert_eq!(status(&r), 2, "NOT_SERVING from the stub");
    let r = c.unary("/grpc.health.v1.Health/Check", req(&c, "")).await.unwrap();
    assert_eq!(status(&r), 1);
    // A Watch answered by a stub ends after the stub's messages.
    let got = c.server_stream("/grpc.health.v1.Health/Watch", req(&c, "db")).await.unwrap();
    assert_eq!(got.iter().map(status).collect::<Vec<_>>(), [1, 2]);

    // The same schema without stubs: the built-in health service answers.
    let plain = TestServer::start(Server::builder().schema_dir(shop_dir()).schema_dir(&health_dir)).await;
    let mut c = plain.client().await;
    let r = c.unary("/grpc.health.v1.Health/Check", req(&c, "shop.Shop")).await.unwrap();
    assert_eq!(status(&r), 1);
    let e = c.unary("/grpc.health.v1.Health/Check", req(&c, "db")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

const TEMPLATED: &str = r#"
- method: shop.Shop/PlaceOrder
  match: {request: {contains: {order_id: tpl}}}
  answer:
    message:
      id: "{{ uuid }}"
      note: 'hello {{ .Request.customer_name }} from {{ index .Headers "x-tenant" }}'
      amount: "{{ .Request.qty }}"
- method: shop.Shop/Track
  answer:
    messages: [{id: "{{ .MessageIndex }}-{{ .Request.order_id }}"}, {id: "{{ .MessageIndex }}-again"}]
- method: shop.Shop/Upload
  answer: {message: {note: "{{ len .Requests }} orders, last {{ .Request.order_id }}"}}
- method: shop.Shop/Talk
  answer: {message: {text: "echo {{ .Request.text }} #{{ .MessageIndex }}"}}
"#;

#[tokio::test]
async fn templates_fill_answers_from_the_request_headers_and_stream_position() {
    let dir = stub_dir(&[
        ("t.yaml", TEMPLATED),
        (
            "g.yaml",
            r#"
service: Shop
method: PlaceOrder
input: {equals: {order_id: grip}}
output:
  data: {note: "gripmock says {{ .Request.order_id }}"}
"#,
        ),
    ]);
    let (_s, mut c) = shop(dir.path()).await;
    let mut req = Request::new(order(&c, serde_json::json!({"orderId": "tpl", "customerName": "Ann", "qty": 7})));
    req.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    let r = c.unary_req("/shop.Shop/PlaceOrder", req).await.unwrap();
    assert_eq!(get_str(&r, "note"), "hello Ann from acme");
    assert_eq!(get_i64(&r, "amount"), 7);
    assert_eq!(get_str(&r, "id").len(), 36, "a uuid: {}", get_str(&r, "id"));
    let r2 = c.unary("/shop.Shop/PlaceOrder", order(&c, serde_json::json!({"orderId": "tpl"}))).await.unwrap();
    assert_ne!(get_str(&r2, "id"), get_str(&r, "id"), "rendered per call");
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "grip"})).await.unwrap(), "gripmock says grip");
    let m = order(&c, serde_json::json!({"orderId": "o9"}));
    let got = c.server_stream("/shop.Shop/Track", m).await.unwrap();
    assert_eq!(got.iter().map(|r| get_str(r, "id")).collect::<Vec<_>>(), ["0-o9", "1-again"]);
    let ups = vec![order(&c, serde_json::json!({"orderId": "a"})), order(&c, serde_json::json!({"orderId": "b"}))];
    assert_eq!(get_str(&c.client_stream("/shop.Shop/Upload", ups).await.unwrap(), "note"), "2 orders, last b");
    let chat = |t: &str, c: &Client| c.msg("shop.Chat", serde_json::json!({"text": t}));
    let r = c.bidi("/shop.Shop/Talk", vec![chat("hi", &c), chat("yo", &c)]).await.unwrap();
    assert_eq!(r.iter().map(|m| get_str(m, "text")).collect::<Vec<_>>(), ["echo hi #0", "echo yo #1"]);
}

#[test]
fn templates_are_checked_against_the_request_type() {
    let text = r#"- method: shop.Shop/PlaceOrder
  answer: {message: {note: "{{ .Request.custmer_name }}"}}
- method: shop.Shop/PlaceOrder
  answer: {message: {note: "{{ .Request.order_id "}}
- method: shop.Shop/PlaceOrder
  answer: {message: {note: "{{ .Request.address.cty }}"}}
"#;
    let dir = stub_dir(&[("t.yaml", text)]);
    let server = Server::builder().schema_dir(shop_dir()).stubs(dir.path()).build().unwrap();
    let problems: Vec<String> = server.snapshot().problems().iter().map(|p| p.to_string()).collect();
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(
        has("t.yaml:2:28: error: template reads `.Request.custmer_name`: no field `custmer_name` in shop.Order"),
        "{problems:#?}"
    );
    assert!(has("did you mean `customer_name`?"), "{problems:#?}");
    assert!(has("t.yaml:4:28: error: template does not parse"), "{problems:#?}");
    assert!(has("no field `cty` in shop.Address"), "{problems:#?}");
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[tokio::test]
async fn templates_fill_error_messages_and_header_and_trailer_values() {
    let dir = stub_dir(&[(
        "t.yaml",
        r#"
- method: shop.Shop/PlaceOrder
  match: {request: {matches: {order_id: "bad-.*"}}}
  answer:
    headers: {x-order: "{{ .Request.order_id }}"}
    trailers: {x-tenant: 't-{{ index .Headers "x-tenant" }}'}
    error:
      code: INVALID_ARGUMENT
      message: "order {{ .Request.order_id }} has no quantity"
      details:
        - "@type": google.rpc.ErrorInfo
          reason: NO_QTY
- method: shop.Shop/PlaceOrder
  answer:
    headers: {x-order: "{{ .Request.order_id }}", x-fixed: "yes"}
    trailers: {x-qty: "{{ .Request.qty }}"}
    message: {note: ok}
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let mut req = Request::new(order(&c, serde_json::json!({"orderId": "bad-1"})));
    req.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    let e = c.unary_req("/shop.Shop/PlaceOrder", req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "order bad-1 has no quantity"));
    assert_eq!(e.metadata().get("x-order").unwrap(), "bad-1");
    assert_eq!(e.metadata().get("x-tenant").unwrap(), "t-acme");
    // The google.rpc.Status in the details carries the rendered message too.
    let st = RpcStatus::decode(e.details()).unwrap();
    assert_eq!(st.message, "order bad-1 has no quantity");
    assert_eq!(st.details.len(), 1);

    c.grpc.ready().await.unwrap();
    let out = c.pool.get_message_by_name("shop.Receipt").unwrap();
    let m = order(&c, serde_json::json!({"orderId": "o-2", "qty": 5}));
    let r = c
        .grpc
        .unary(Request::new(m), "/shop.Shop/PlaceOrder".parse().unwrap(), crate::harness::DynCodec(out))
        .await
        .unwrap();
    assert_eq!(r.metadata().get("x-order").unwrap(), "o-2");
    assert_eq!(r.metadata().get("x-fixed").unwrap(), "yes");
    assert_eq!(r.metadata().get("x-qty").unwrap(), "5", "{:?}", r.metadata());
}

#[test]
fn templates_in_headers_and_error_messages_are_checked_against_the_request_type() {
    let text = r#"- method: shop.Shop/PlaceOrder
  answer:
    headers: {x-a: "{{ .Request.ordr_id }}"}
    message: {}
- method: shop.Shop/PlaceOrder
  answer:
    error: {code: NOT_FOUND, message: "no {{ .Request.custmer }}"}
"#;
    let dir = stub_dir(&[("t.yaml", text)]);
    let server = Server::builder().schema_dir(shop_dir()).stubs(dir.path()).build().unwrap();
    let problems: Vec<String> = server.snapshot().problems().iter().map(|p| p.to_string()).collect();
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(has("t.yaml:3:20: error: template reads `.Request.ordr_id`: no field `ordr_id`"), "{problems:#?}");
    assert!(has("did you mean `order_id`?"), "{problems:#?}");
    assert!(has("t.yaml:7:39: error: template reads `.Request.custmer`"), "{problems:#?}");
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[tokio::test]
async fn bidi_answers_send_the_first_answers_headers_and_every_answers_trailers() {
    let dir = stub_dir(&[(
        "talk.yaml",
        r#"
- method: shop.Shop/Talk
  match: {request: {equals: {text: hello}}}
  answer:
    headers: {x-greeted: "{{ .Request.text }}"}
    trailers: {x-said: hello}
    messages: [{text: hi}]
- method: shop.Shop/Talk
  match: {request: {equals: {text: bye}}}
  answer:
    headers: {x-ignored: "yes"}
    trailers: {x-said: bye}
    messages: [{text: see you}]
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let chat = |t: &str, c: &Client| c.msg("shop.Chat", serde_json::json!({"text": t}));
    let out = c.pool.get_message_by_name("shop.Chat").unwrap();
    c.grpc.ready().await.unwrap();
    let reqs = tokio_stream::iter(vec![chat("hello", &c), chat("bye", &c)]);
    let r = c
        .grpc
        .streaming(Request::new(reqs), "/shop.Shop/Talk".parse().unwrap(), crate::harness::DynCodec(out))
        .await
        .unwrap();
    // The response headers are those of the answer to the first message.
    assert_eq!(r.metadata().get("x-greeted").unwrap(), "hello", "{:?}", r.metadata());
    assert!(r.metadata().get("x-ignored").is_none());
    let mut s = r.into_inner();
    let mut texts = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        texts.push(get_str(&m, "text"));
    }
    assert_eq!(texts, ["hi", "see you"]);
    let trailers = s.trailers().await.unwrap().expect("trailers");
    let said: Vec<_> = trailers.get_all("x-said").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(said, ["hello", "bye"]);
}

/// GripMock's template helpers, written as its documentation describes them.
#[tokio::test]
async fn gripmock_template_helpers_compute_answers() {
    let dir = stub_dir(&[(
        "helpers.yaml",
        r#"
- service: Shop
  method: PlaceOrder
  input: {matches: {order_id: "ord_.*"}}
  output:
    data:
      note: '{{ .Request.order_id | split "_" | index 1 | upper }} {{ sum 1 2 3 }} {{ .Request.qty | mul 2 }} {{ lower "ABC" }} {{ join (split "a-b" "-") "+" }}'
      id: '{{ format .RequestTime "2006" }}/{{ string2base64 "hi" }}/{{ avg 1 2 }}'
      amount: '{{ add .Request.qty 0.5 | round }}'
- service: Shop
  method: Upload
  output:
    data:
      note: '{{ sum (extract .Requests "qty") }} in {{ len .Requests }}, max {{ max (extract .Requests "qty") }}'
"#,
    )]);
    let (_s, mut c) = shop(dir.path()).await;
    let r = c.unary("/shop.Shop/PlaceOrder", order(&c, serde_json::json!({"orderId": "ord_abc", "qty": 7}))).await;
    let r = r.unwrap();
    assert_eq!(get_str(&r, "note"), "ABC 6 14 abc a+b");
    let year = get_str(&r, "id");
    let (year, rest) = year.split_once('/').unwrap();
    assert!(year.len() == 4 && year.parse::<u32>().unwrap() >= 2026, "{year}");
    assert_eq!(rest, "aGk=/1.5");
    assert_eq!(get_i64(&r, "amount"), 8);
    let ups = [3, 5, 1].map(|q| order(&c, serde_json::json!({"orderId": "u", "qty": q}))).to_vec();
    let r = c.client_stream("/shop.Shop/Upload", ups).await.unwrap();
    assert_eq!(get_str(&r, "note"), "9 in 3, max 5");
}

/// The startup log says what answers each method, as `check` does.
#[test]
fn the_startup_log_says_what_answers_each_method() {
    let root = crate::harness::root();
    let users = root.join("schemas/users");
    let stubs = root.join("examples/stubs");
    let (child, _port) = crate::cli::spawn_server(&[users.to_str().unwrap(), "--stubs", stubs.to_str().unwrap()]);
    let st = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("what answers each method:"), "{log}");
    assert!(log.contains("/users.UserService/GetUser  [unary] stubs (3 stubs, else the store)"), "{log}");
    assert!(log.contains("/users.UserService/CreateUser  [unary] store: create User"), "{log}");
}

/// A miss on a method with many stubs compares the request with a bounded
/// number of them (in rank order) and says so.
#[tokio::test]
async fn a_miss_among_many_stubs_is_explained_from_a_bounded_search() {
    let mut text = String::new();
    for i in 0..1001 {
        text.push_str(&format!(
            "- method: shop.Shop/PlaceOrder\n  match: {{request: {{equals: {{order_id: o{i}}}}}}}\n  answer: {{message: {{note: n{i}}}}}\n"
        ));
    }
    let server = TestServer::start(Server::builder().schema_dir(shop_dir()).stub_text("many.yaml", text)).await;
    let mut c = server.client().await;
    assert_eq!(place(&mut c, serde_json::json!({"orderId": "o1000"})).await.unwrap(), "n1000");
    let e = place(&mut c, serde_json::json!({"orderId": "nope"})).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("the closest is"), "{}", e.message());
    assert!(e.message().ends_with("(compared with the first 1000 of its 1001 stubs, by rank)"), "{}", e.message());
}
