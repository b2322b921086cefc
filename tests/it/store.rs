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
