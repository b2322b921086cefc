//! The resource store's conventions end to end: keys, ids, update masks,
//! plurals, `--data`, bulk errors, size limits and concurrent updates.

use prost_reflect::DynamicMessage;
use protoserve::Server;
use serde_json::json;
use tonic::Code;

use crate::harness::*;

fn items() -> protoserve::Builder {
    Server::builder().schema_dir(root().join("tests/data/store"))
}

fn item<T>(c: &Client<T>, v: serde_json::Value) -> DynamicMessage {
    c.msg("items.Item", v)
}

/// Two concurrent `UpdateItem` calls set different fields of one record; both
/// must survive, in every one of 1,000 trials (issue 12, item 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_record_never_lose_a_field() {
    let srv = TestServer::start(items()).await;
    // Four workers, 250 trials each, every trial on its own record with two
    // connections racing; each worker counts the trials that lost a field.
    let mut workers = Vec::new();
    for w in 0..4 {
        let (mut a, mut b) = (srv.client().await, srv.client().await);
        workers.push(tokio::spawn(async move {
            let mut lost = 0;
            for i in 0..250 {
                let id = format!("r{w}-{i}");
                let create = a.msg("items.CreateItemRequest", json!({"id": id}));
                a.unary("/items.Items/CreateItem", create).await.unwrap();
                let title = item(&a, json!({"id": id, "title": "T"}));
                let sizes = item(&b, json!({"id": id, "sizes": [7]}));
                let (x, y) =
                    tokio::join!(a.unary("/items.Items/UpdateItem", title), b.unary("/items.Items/UpdateItem", sizes));
                x.unwrap();
                y.unwrap();
                let get = a.msg("items.GetItemRequest", json!({"item_id": id}));
                let got = a.unary("/items.Items/GetItem", get).await.unwrap();
                let has_sizes = got.get_field_by_name("sizes").unwrap().as_list().is_some_and(|l| l.len() == 1);
                if get_str(&got, "title") != "T" || !has_sizes {
                    lost += 1;
                }
            }
            lost
        }));
    }
    let mut lost = 0;
    for w in workers {
        lost += w.await.unwrap();
    }
    assert_eq!(lost, 0, "updates lost in 1,000 trials");
}

fn list_all<T>(c: &Client<T>) -> DynamicMessage {
    c.msg("items.ListItemsRequest", json!({"page_size": 1000}))
}

async fn count_items(c: &mut Client) -> usize {
    let page = c.unary("/items.Items/ListItems", list_all(c)).await.unwrap();
    page.get_field_by_name("items").unwrap().as_list().unwrap().len()
}

/// A call that answers RESOURCE_EXHAUSTED because its reply would be too large
/// has stored nothing (issue 12, item 2): Create, Update and BulkCreate.
#[tokio::test]
async fn a_reply_over_the_limit_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bulk.proto"),
        r#"syntax = "proto3";
package bulk;
service Tags {
  rpc BulkCreateTags(stream CreateTagRequest) returns (BulkCreateTagsResponse);
  rpc ListTags(ListTagsRequest) returns (stream Tag);
}
message CreateTagRequest { string label = 1; }
message Tag { string id = 1; string label = 2; }
message ListTagsRequest { int32 page_size = 1; }
message BulkCreateTagsResponse { int32 created_count = 1; repeated string tag_ids = 2; }
"#,
    )
    .unwrap();
    let srv = TestServer::start(items().schema_dir(dir.path()).max_message_size(200)).await;
    let mut c = srv.client().await;

    // The request (188 bytes) is under the limit; the record, with its two
    // timestamps, is not.
    let big = c.msg("items.CreateItemRequest", json!({"id": "big", "title": "x".repeat(180)}));
    let err = c.unary("/items.Items/CreateItem", big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("nothing was stored"), "{}", err.message());
    assert_eq!(count_items(&mut c).await, 0);
    let get = c.msg("items.GetItemRequest", json!({"item_id": "big"}));
    assert_eq!(c.unary("/items.Items/GetItem", get).await.unwrap_err().code(), Code::NotFound);

    // An update that would make the record too large leaves it as it was.
    let small = c.msg("items.CreateItemRequest", json!({"id": "s", "title": "small"}));
    let before = c.unary("/items.Items/CreateItem", small).await.unwrap();
    let grow = item(&c, json!({"id": "s", "title": "y".repeat(185)}));
    let err = c.unary("/items.Items/UpdateItem", grow).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let get = c.msg("items.GetItemRequest", json!({"item_id": "s"}));
    assert_eq!(c.unary("/items.Items/GetItem", get).await.unwrap(), before);

    // Six small creates whose reply (six UUIDs) is over the limit: none stored.
    let reqs = (0..6).map(|i| c.msg("bulk.CreateTagRequest", json!({"label": format!("t{i}")}))).collect();
    let err = c.client_stream("/bulk.Tags/BulkCreateTags", reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("nothing was stored"), "{}", err.message());
    let tags = c.server_stream("/bulk.Tags/ListTags", c.msg("bulk.ListTagsRequest", json!({"page_size": 100})));
    assert!(tags.await.unwrap().is_empty(), "no tag was stored");
    // Two fit.
    let reqs = (0..2).map(|i| c.msg("bulk.CreateTagRequest", json!({"label": format!("t{i}")}))).collect();
    c.client_stream("/bulk.Tags/BulkCreateTags", reqs).await.unwrap();
}

fn people() -> protoserve::Builder {
    Server::builder().schema_dir(root().join("tests/data/store_keys"))
}

/// A failed BulkCreate names the position of the streamed message that failed,
/// in the message and the BadRequest field path (issue 11, item 19): with rules
/// checked on the wire (users) and by the full validator (people).
#[tokio::test]
async fn a_failed_bulk_create_names_the_failing_message() {
    let srv = TestServer::users().await;
    let mut c = srv.client().await;
    let user = |c: &Client, email: &str| c.msg("users.CreateUserRequest", json!({"name": "n", "email": email}));
    let reqs = vec![user(&c, "a@x"), user(&c, "b@x"), user(&c, "c@x"), user(&c, "nope"), user(&c, "e@x")];
    let err = c.client_stream("/users.UserService/BulkCreateUsers", reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "requests[3].email: Invalid email address");
    assert_eq!(bad_request_violations(&err), [("requests[3].email".to_owned(), "Invalid email address".to_owned())]);

    // A message that does not decode (field 3, `age`, sent as a string) is named too.
    let wrong = c.msg("users.User", json!({"email": "x"}));
    let reqs = vec![user(&c, "a@x"), user(&c, "b@x"), wrong];
    let err = c.client_stream("/users.UserService/BulkCreateUsers", reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().starts_with("requests[2]: "), "{}", err.message());
    let all = c.server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({})));
    assert!(all.await.unwrap().is_empty(), "nothing was created");

    let srv = TestServer::start(people()).await;
    let mut c = srv.client().await;
    let member = |c: &Client, email: &str| c.msg("members.CreateMemberRequest", json!({"email": email}));
    let reqs = vec![member(&c, "a@x"), member(&c, "")];
    let err = c.client_stream("/members.Members/BulkCreateMembers", reqs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let violations = bad_request_violations(&err);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].0, "requests[1].email");
    assert!(err.message().starts_with("requests[1].email: "), "{}", err.message());
}

/// What `check` prints for the store-keys schemas, one line per method.
fn check_lines() -> Vec<String> {
    let config = protoserve::CheckConfig {
        roots: vec![root().join("tests/data/store_keys")],
        imports: Vec::new(),
        exclude: Vec::new(),
        stubs: Vec::new(),
        descriptor_set_out: None,
    };
    protoserve::check(&config).unwrap().lines().map(|l| l.trim().to_owned()).collect()
}

fn line_for(lines: &[String], path: &str) -> String {
    lines.iter().find(|l| l.starts_with(&format!("{path} "))).cloned().unwrap_or_else(|| panic!("{path}: {lines:#?}"))
}

/// A resource keyed by its own `<x>_id` is stored under it, generated when
/// empty, and `check` says so (issue 11, item 1).
#[tokio::test]
async fn a_resource_is_keyed_by_its_own_x_id() {
    let srv = TestServer::start(people()).await;
    let mut c = srv.client().await;
    let create = |c: &Client, v: serde_json::Value| c.msg("people.CreatePersonRequest", v);
    let get = |c: &Client, id: &str| c.msg("people.GetPersonRequest", json!({"person_id": id}));

    let p1 = c.unary("/people.People/CreatePerson", create(&c, json!({"person_id": "p1", "email": "p@x"}))).await;
    assert_eq!(get_str(&p1.unwrap(), "person_id"), "p1");
    let got = c.unary("/people.People/GetPerson", get(&c, "p1")).await.unwrap();
    assert_eq!(get_str(&got, "email"), "p@x");
    let dup = c.unary("/people.People/CreatePerson", create(&c, json!({"person_id": "p1", "email": "q@x"})));
    let dup = dup.await.unwrap_err();
    assert_eq!((dup.code(), dup.message()), (Code::AlreadyExists, "Person 'p1' already exists"));

    // Two creates with an empty key get two generated keys, each readable.
    let mut ids = Vec::new();
    for email in ["a@x", "b@x"] {
        let p = c.unary("/people.People/CreatePerson", create(&c, json!({"email": email}))).await.unwrap();
        let id = get_str(&p, "person_id");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "generated {id:?}");
        let got = c.unary("/people.People/GetPerson", get(&c, &id)).await.unwrap();
        assert_eq!(got, p);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let del = c.unary("/people.People/DeletePerson", get(&c, &ids[0])).await.unwrap();
    assert_eq!(get_str(&del, "email"), "a@x");

    let lines = check_lines();
    assert!(
        line_for(&lines, "/people.People/CreatePerson")
            .contains("store: create Person (key person_id, generated when empty)"),
        "{lines:#?}"
    );
    assert!(
        line_for(&lines, "/people.People/GetPerson")
            .ends_with("store: get Person by GetPersonRequest.person_id = Person.person_id"),
        "{lines:#?}"
    );
}

/// Generated ids fit int32 and uint32 fields, and Get/Update/Delete find the
/// record by the id the client received (issue 11, item 2).
#[tokio::test]
async fn generated_integer_ids_fit_their_fields() {
    let srv = TestServer::start(Server::builder().schema_dir(root().join("tests/data/store_keys"))).await;
    let mut c = srv.client().await;
    for i in 0..40 {
        let t = c.unary("/tickets.Tickets/CreateTicket", c.msg("tickets.Ticket", json!({"title": "t"}))).await.unwrap();
        let id = t.get_field_by_name("ticket_id").unwrap().as_i32().unwrap();
        assert!(id > 0, "ticket_id {id}");
        let key = c.msg("tickets.TicketKey", json!({"ticket_id": id}));
        assert_eq!(c.unary("/tickets.Tickets/GetTicket", key.clone()).await.unwrap(), t);
        let upd = c.msg("tickets.Ticket", json!({"ticket_id": id, "title": format!("u{i}")}));
        let upd = c.unary("/tickets.Tickets/UpdateTicket", upd).await.unwrap();
        assert_eq!(get_str(&upd, "title"), format!("u{i}"));
        c.unary("/tickets.Tickets/DeleteTicket", key.clone()).await.unwrap();
        let gone = c.unary("/tickets.Tickets/GetTicket", key).await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);

        let b = c.unary("/tickets.Tickets/CreateBadge", c.msg("tickets.Badge", json!({"label": "b"}))).await.unwrap();
        let id = b.get_field_by_name("id").unwrap().as_u32().unwrap();
        assert!(id > 0);
        let key = c.msg("tickets.Badge", json!({"id": id}));
        assert_eq!(c.unary("/tickets.Tickets/GetBadge", key).await.unwrap(), b);
    }
    // Bulk creates get fitting ids too, and report them as the keys they are.
    let reqs = (0..20).map(|_| c.msg("tickets.Ticket", json!({"title": "bulk"}))).collect();
    let resp = c.client_stream("/tickets.Tickets/BulkCreateTickets", reqs).await.unwrap();
    let ids = resp.get_field_by_name("ticket_ids").unwrap().as_list().unwrap().to_vec();
    assert_eq!(ids.len(), 20);
    for id in ids {
        let id: i32 = id.as_str().unwrap().parse().expect("an int32");
        let key = c.msg("tickets.TicketKey", json!({"ticket_id": id}));
        assert_eq!(get_str(&c.unary("/tickets.Tickets/GetTicket", key).await.unwrap(), "title"), "bulk");
    }
}

/// A method named like a convention that does not fit answers UNIMPLEMENTED
/// saying why, and `check` says it too (issue 11, item 6).
#[tokio::test]
async fn check_and_unimplemented_say_why_a_convention_did_not_fit() {
    let lines = check_lines();
    let list = line_for(&lines, "/tickets.Tickets/ListTickets");
    assert!(list.contains("UNIMPLEMENTED") && list.contains("ListTickets must stream Ticket"), "{list}");
    let get = line_for(&lines, "/tickets.Tickets/GetEvent");
    assert!(get.contains("Event has no event_id, id or name field to find records by"), "{get}");
    let create = line_for(&lines, "/tickets.Tickets/CreateEvent");
    assert!(create.contains("records get a hidden key and can be listed, not fetched"), "{create}");

    let srv = TestServer::start(Server::builder().schema_dir(root().join("tests/data/store_keys"))).await;
    let mut c = srv.client().await;
    let err = c.unary("/tickets.Tickets/GetEvent", c.msg("tickets.EventKey", json!({"id": "x"}))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("Event has no event_id, id or name field"), "{}", err.message());
    // A keyless resource can still be created and listed.
    c.unary("/tickets.Tickets/CreateEvent", c.msg("tickets.Event", json!({"text": "hi"}))).await.unwrap();
    let page = c.unary("/tickets.Tickets/ListEvents", c.msg("tickets.ListEventsRequest", json!({}))).await.unwrap();
    assert_eq!(page.get_field_by_name("events").unwrap().as_list().unwrap().len(), 1);
}

/// Irregular plurals match their resource: `ListPeople` streams `Person`s and
/// `BulkCreatePeople` creates them (issue 11, item 6).
#[tokio::test]
async fn irregular_plurals_match_their_resource() {
    let srv = TestServer::start(people()).await;
    let mut c = srv.client().await;
    let reqs = ["a@x", "b@x", "c@x"].iter().map(|e| c.msg("people.CreatePersonRequest", json!({"email": e}))).collect();
    let made = c.client_stream("/people.People/BulkCreatePeople", reqs).await.unwrap();
    assert_eq!(get_i64(&made, "created_count"), 3);
    let listed = c.server_stream("/people.People/ListPeople", c.msg("people.ListPeopleRequest", json!({})));
    let emails: Vec<String> = listed.await.unwrap().iter().map(|p| get_str(p, "email")).collect();
    assert_eq!(emails, ["a@x", "b@x", "c@x"]);
    let lines = check_lines();
    assert!(line_for(&lines, "/people.People/ListPeople").ends_with("store: list Person"), "{lines:#?}");
}

const UPDATE_PERSON: &str = "/people.People/UpdatePerson";

fn update_person<T>(c: &Client<T>, person: serde_json::Value, paths: &[&str]) -> DynamicMessage {
    let mut req = json!({"person": person});
    if !paths.is_empty() {
        req["updateMask"] = json!(paths.join(","));
    }
    c.msg("people.UpdatePersonRequest", req)
}

async fn get_person(c: &mut Client, id: &str) -> serde_json::Value {
    let p = c.unary("/people.People/GetPerson", c.msg("people.GetPersonRequest", json!({"person_id": id}))).await;
    let p = p.unwrap();
    serde_json::to_value(&p).unwrap()
}

/// `Update<X>` honours `update_mask` (AIP-134): only masked paths change (nested
/// ones and oneof members included), `*` replaces the record, an unknown path is
/// INVALID_ARGUMENT naming it; the merged record is what gets validated, and a
/// violation names its field (issue 11, item 3).
#[tokio::test]
async fn update_honours_the_field_mask_and_validates_the_merged_record() {
    let srv = TestServer::start(people()).await;
    let mut c = srv.client().await;
    let create = c.msg("people.CreatePersonRequest", json!({"person_id": "p1", "email": "p@x", "name": "Old"}));
    c.unary("/people.People/CreatePerson", create).await.unwrap();
    // Fill in the fields Create cannot set (no mask: the fields the request sets).
    let fill = json!({"personId": "p1", "phone": "123", "address": {"city": "Oslo", "zip": "0150"}, "count": "5"});
    c.unary(UPDATE_PERSON, update_person(&c, fill, &[])).await.unwrap();
    let start = get_person(&mut c, "p1").await;
    assert_eq!(start["phone"], "123");
    assert_eq!(start["address"]["city"], "Oslo");

    // Only `name` changes although the request sets more (and would clear
    // `phone` by setting `pager`, a member of the same oneof). The request's own
    // email is empty, which is fine: the merged record is valid.
    let req = json!({"personId": "p1", "name": "New", "pager": "999", "count": "9"});
    let got = c.unary(UPDATE_PERSON, update_person(&c, req, &["name"])).await.unwrap();
    let got = serde_json::to_value(&got).unwrap();
    let mut expect = start.clone();
    expect["name"] = json!("New");
    assert_eq!(got, expect);
    assert_eq!(get_person(&mut c, "p1").await, expect);

    // A nested path changes only that field; a masked field the request leaves
    // unset is cleared; a masked oneof member replaces its sibling.
    let req = json!({"personId": "p1", "address": {"zip": "9999", "city": "Nowhere"}, "pager": "777"});
    c.unary(UPDATE_PERSON, update_person(&c, req, &["address.zip", "count", "pager"])).await.unwrap();
    let now = get_person(&mut c, "p1").await;
    assert_eq!(now["address"], json!({"city": "Oslo", "zip": "9999"}));
    assert_eq!(now.get("count"), None, "count was masked and not set: cleared");
    assert_eq!((now.get("phone"), &now["pager"]), (None, &json!("777")));
    assert_eq!(now["name"], "New");

    // Unknown paths are INVALID_ARGUMENT naming the path, and change nothing.
    for (path, names) in
        [("nope", "nope"), ("address.nope", "address.nope"), ("name.first", "name.first"), ("tags.x", "tags.x")]
    {
        let req = json!({"personId": "p1", "name": "Changed"});
        let err = c.unary(UPDATE_PERSON, update_person(&c, req, &["name", path])).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}");
        assert!(err.message().contains(&format!("'{names}'")), "{path}: {}", err.message());
    }
    let err = c.unary(UPDATE_PERSON, update_person(&c, json!({"personId": "p1"}), &["*", "name"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(get_person(&mut c, "p1").await, now);

    // The merged record is validated; the one violation names its field.
    let req = json!({"personId": "p1", "email": "x"});
    let err = c.unary(UPDATE_PERSON, update_person(&c, req, &["email"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "person.email: value length must be at least 3 characters");
    let violations = bad_request_violations(&err);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].0, "person.email");
    assert_eq!(get_person(&mut c, "p1").await, now, "a rejected update changes nothing");

    // `*` replaces the whole record.
    let req = json!({"personId": "p1", "email": "all@x"});
    let got = c.unary(UPDATE_PERSON, update_person(&c, req, &["*"])).await.unwrap();
    assert_eq!(serde_json::to_value(&got).unwrap(), json!({"personId": "p1", "email": "all@x"}));

    // A missing record is NOT_FOUND.
    let req = json!({"personId": "nobody", "name": "x"});
    let err = c.unary(UPDATE_PERSON, update_person(&c, req, &["name"])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "Person 'nobody' not found"));
}

/// Mask paths are user text: random ones are answered OK or INVALID_ARGUMENT,
/// never anything else, and the server keeps serving.
#[tokio::test]
async fn random_update_mask_paths_are_ok_or_invalid_argument() {
    let srv = TestServer::start(people()).await;
    let mut c = srv.client().await;
    let create = c.msg("people.CreatePersonRequest", json!({"person_id": "p", "email": "p@x"}));
    c.unary("/people.People/CreatePerson", create).await.unwrap();
    let words = ["name", "email", "address", "city", "zip", "tags", "*", "", ".", "phone", "person_id", "é", "count"];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let paths: Vec<String> = (0..1 + next() % 3)
            .map(|_| {
                let n = 1 + next() % 3;
                (0..n).map(|_| words[(next() % words.len() as u64) as usize]).collect::<Vec<_>>().join(".")
            })
            .collect();
        let mut mask = DynamicMessage::new(c.pool.get_message_by_name("google.protobuf.FieldMask").unwrap());
        mask.set_field_by_name(
            "paths",
            prost_reflect::Value::List(paths.iter().map(|p| prost_reflect::Value::String(p.clone())).collect()),
        );
        let mut req = update_person(&c, json!({"personId": "p", "email": "q@x", "name": "n"}), &[]);
        req.set_field_by_name("update_mask", prost_reflect::Value::Message(mask));
        match c.unary(UPDATE_PERSON, req).await {
            Ok(_) => {}
            Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{paths:?}: {e:?}"),
        }
    }
    get_person(&mut c, "p").await;
}

/// Log lines written while `f` runs on this thread (warnings and above).
fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// Same-named request and resource fields of different types are not copied,
/// and `check` and the startup log say so (issue 11, item 4).
#[tokio::test]
async fn fields_of_another_type_are_reported_by_check_and_the_log() {
    let lines = check_lines();
    for method in ["CreatePerson", "BulkCreatePeople"] {
        let line = line_for(&lines, &format!("/people.People/{method}"));
        assert!(
            line.contains(
                "not copied: count is int32 in CreatePersonRequest but int64 in Person; \
                 tags is string in CreatePersonRequest but repeated string in Person"
            ),
            "{line}"
        );
    }
    let (server, log) = warnings_during(|| people().build().unwrap());
    assert!(log.contains("people.People.CreatePerson"), "{log}");
    assert!(log.contains("count is int32 in CreatePersonRequest but int64 in Person"), "{log}");

    // And indeed they are not copied.
    let srv = TestServer::run(server).await;
    let mut c = srv.client().await;
    let req = c.msg("people.CreatePersonRequest", json!({"email": "a@x", "count": 3, "tags": "t"}));
    let p = c.unary("/people.People/CreatePerson", req).await.unwrap();
    assert_eq!((get_i64(&p, "count"), p.get_field_by_name("tags").unwrap().as_list().unwrap().len()), (0, 0));
}

fn data_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `--data` errors name the field and the value (nested ones too), a record
/// without a key gets one generated (fitting its type), and records of a type
/// no method serves are loaded with a warning naming it (issue 11, item 5).
#[tokio::test]
async fn data_file_names_bad_fields_generates_keys_and_warns_about_unserved_types() {
    let both = || Server::builder().schema_dir(users_dir()).schema_dir(root().join("tests/data/store_keys"));
    for (text, expect) in [
        (
            r#"{"users.User": [{"id": "a"}, {"id": "b", "age": "old"}]}"#,
            r#"users.User record #2: field 'age' = "old": "#,
        ),
        (r#"{"people.Person": [{"personId": "a", "address": {"zip": 5}}]}"#, "field 'address.zip' = 5: "),
        (r#"{"users.User": [{"id": "a", "nope": 1}]}"#, "users.User has no field 'nope'"),
        (r#"{"users.User": ["just text"]}"#, r#"expected an object, found "just text""#),
    ] {
        let (_dir, path) = data_file(text);
        let err = both().data_file(&path).build().unwrap_err();
        assert!(err.is_data(), "{err}");
        assert!(err.to_string().contains(expect), "{text}: {err}");
    }

    let (_dir, path) = data_file(
        "users.User:\n  - {name: NoId, email: n@x}\ntickets.Ticket:\n  - {title: t}\n\
         users.CreateUserRequest:\n  - {name: stray}\n",
    );
    let (server, log) = warnings_during(|| both().data_file(&path).build().unwrap());
    assert!(log.contains("users.CreateUserRequest"), "{log}");
    assert!(!log.contains("users.User "), "users.User is served: {log}");
    let srv = TestServer::run(server).await;
    let mut c = srv.client().await;
    let users = c.server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({})));
    let users = users.await.unwrap();
    assert_eq!(users.len(), 1);
    let id = get_str(&users[0], "id");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "generated {id:?}");
    let got = c.unary("/users.UserService/GetUser", c.msg("users.GetUserRequest", json!({"user_id": id})));
    assert_eq!(get_str(&got.await.unwrap(), "name"), "NoId");
}

/// The page token in a "cannot be listed" message.
fn token_past(err: &tonic::Status) -> String {
    let m = err.message();
    let start = m.find("page_token \"").unwrap_or_else(|| panic!("no page token in: {m}")) + "page_token \"".len();
    m[start..].split('"').next().unwrap().to_owned()
}

/// A record too large for any reply (loaded with `--data` under a smaller
/// limit) can always be listed around: the page that reaches it says so, naming
/// it, and its page token continues past it (issue 12, item 2), in unary lists
/// (whose pages are also cut to what fits in a reply) and in server streams.
#[tokio::test]
async fn a_record_larger_than_a_reply_is_named_and_listing_continues_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("seed.yaml");
    let big = "x".repeat(300);
    let mut yaml = format!("items.Item:\n  - {{id: a}}\n  - {{id: big, title: {big}}}\n");
    for i in 0..30 {
        yaml += &format!("  - {{id: s{i:02}, title: small}}\n");
    }
    yaml += &format!(
        "users.User:\n  - {{id: u1, name: one, email: a@x}}\n  - {{id: u2, name: {big}, email: b@x}}\n  - {{id: u3, name: three, email: c@x}}\n"
    );
    std::fs::write(&data, yaml).unwrap();
    let srv = TestServer::start(items().schema_dir(users_dir()).data_file(&data).max_message_size(200)).await;
    let mut c = srv.client().await;

    // Unary: the first page stops before the big record, with a token.
    let list =
        |c: &Client, token: &str| c.msg("items.ListItemsRequest", json!({"page_size": 100, "page_token": token}));
    let page = c.unary("/items.Items/ListItems", list(&c, "")).await.unwrap();
    let ids = |page: &DynamicMessage| -> Vec<String> {
        page.get_field_by_name("items")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .map(|m| get_str(m.as_message().unwrap(), "id"))
            .collect()
    };
    assert_eq!(ids(&page), ["a"]);
    let next = get_str(&page, "next_page_token");
    assert!(!next.is_empty());
    // The next page cannot hold the big record: an error naming it.
    let err = c.unary("/items.Items/ListItems", list(&c, &next)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().starts_with("Item 'big' is "), "{}", err.message());
    assert!(err.message().contains("200-byte reply limit"), "{}", err.message());
    // Its token continues past it; pages are cut to fit 200 bytes, and every
    // small record arrives exactly once.
    let (mut token, mut seen, mut pages) = (token_past(&err), Vec::new(), 0);
    loop {
        let page = c.unary("/items.Items/ListItems", list(&c, &token)).await.unwrap();
        assert!(prost::Message::encoded_len(&page) <= 200);
        seen.extend(ids(&page));
        pages += 1;
        token = get_str(&page, "next_page_token");
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, (0..30).map(|i| format!("s{i:02}")).collect::<Vec<_>>());
    assert!(pages > 1, "30 records do not fit one 200-byte reply");

    // Streams: the stream ends at the big record, naming it; its token resumes.
    let err = c
        .server_stream("/users.UserService/ListUsers", c.msg("users.ListUsersRequest", json!({"page_size": 10})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().starts_with("User 'u2' is "), "{}", err.message());
    let rest = c
        .server_stream(
            "/users.UserService/ListUsers",
            c.msg("users.ListUsersRequest", json!({"page_size": 10, "page_token": token_past(&err)})),
        )
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|u| get_str(u, "id")).collect::<Vec<_>>(), ["u3"]);
}
