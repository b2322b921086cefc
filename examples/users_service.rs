//! The seed's UserService written against protoserve's handler API: the same
//! behaviour the built-in resource store gives with zero code, spelled out in Rust.
//!
//! Run it with `cargo run --example users_service` and call it with grpcurl:
//! `grpcurl -plaintext -d '{"name":"Alice","email":"alice@example.com"}' 127.0.0.1:50051 users.UserService/CreateUser`

#![allow(unreachable_pub)] // `builder` is also used by the integration tests

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use prost_reflect::{DynamicMessage, Value};
use protoserve::{Builder, Call, ReplyStream, RequestStream, Server};
use tonic::Status;

/// Users in insertion order, with an index by id.
#[derive(Default)]
struct Users {
    order: Vec<String>,
    by_id: HashMap<String, DynamicMessage>,
}

fn text(m: &DynamicMessage, field: &str) -> String {
    m.get_field_by_name(field).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Builds a user from a CreateUserRequest; the email check is the schema's CEL rule,
/// already enforced before handlers run.
fn new_user(call_output: &prost_reflect::MessageDescriptor, req: &DynamicMessage) -> DynamicMessage {
    let mut user = DynamicMessage::new(call_output.clone());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    user.set_field_by_name("id", Value::String(uuid::Uuid::new_v4().to_string()));
    user.set_field_by_name("name", Value::String(text(req, "name")));
    user.set_field_by_name("email", Value::String(text(req, "email")));
    user.set_field_by_name("age", req.get_field_by_name("age").map_or(Value::I32(0), |v| v.into_owned()));
    user.set_field_by_name("created_at", Value::I64(now));
    user
}

/// The UserService handlers, registered on a builder for the schema in `schema_dir`.
pub fn builder(schema_dir: PathBuf) -> Builder {
    let users = Arc::new(Mutex::new(Users::default()));
    let (u1, u2, u3, u4) = (users.clone(), users.clone(), users.clone(), users);
    Server::builder()
        .schema_dir(schema_dir)
        .unary("users.UserService/GetUser", move |call: Call<DynamicMessage>| {
            let id = text(&call.message, "user_id");
            let found = u1.lock().unwrap().by_id.get(&id).cloned();
            async move { found.ok_or_else(|| Status::not_found(format!("User '{id}' not found"))) }
        })
        .unary("users.UserService/CreateUser", move |call: Call<DynamicMessage>| {
            let user = new_user(&call.method.output(), &call.message);
            let mut db = u2.lock().unwrap();
            let id = text(&user, "id");
            db.order.push(id.clone());
            db.by_id.insert(id, user.clone());
            async move { Ok(user) }
        })
        .server_streaming("users.UserService/ListUsers", move |call: Call<DynamicMessage>| {
            let size = match call.message.get_field_by_name("page_size").and_then(|v| v.as_i32()) {
                Some(n) if n > 0 => n as usize,
                _ => 10,
            };
            let db = u3.lock().unwrap();
            let page: Vec<Result<DynamicMessage, Status>> =
                db.order.iter().take(size).map(|id| Ok(db.by_id[id].clone())).collect();
            async move { Ok(Box::pin(futures_util::stream::iter(page)) as ReplyStream) }
        })
        .client_streaming("users.UserService/BulkCreateUsers", move |call: Call<RequestStream>| {
            let users = u4.clone();
            async move {
                let user_type = call.method.parent_pool().get_message_by_name("users.User").expect("users.User");
                // All or nothing: collect (and so validate) every request first.
                let reqs: Vec<DynamicMessage> =
                    call.message.collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
                let created: Vec<DynamicMessage> = reqs.iter().map(|r| new_user(&user_type, r)).collect();
                let ids: Vec<Value> = created.iter().map(|u| Value::String(text(u, "id"))).collect();
                {
                    let mut db = users.lock().unwrap();
                    for u in created {
                        let id = text(&u, "id");
                        db.order.push(id.clone());
                        db.by_id.insert(id, u);
                    }
                }
                let mut out = DynamicMessage::new(call.method.output());
                out.set_field_by_name("created_count", Value::I32(ids.len() as i32));
                out.set_field_by_name("user_ids", Value::List(ids));
                Ok(out)
            }
        })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/users");
    let server = builder(dir).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    println!("users_service example listening on {}", listener.local_addr()?);
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
