//! An authentication interceptor with protoserve's interceptor API: callers
//! prove who they are with `authorization: Bearer <token>`; the interceptor
//! refuses everyone else with UNAUTHENTICATED before any handler runs, and tells
//! handlers who called through the `x-user` metadata entry (which a client cannot
//! forge: whatever it sent under that name is replaced).
//!
//! Run it with `cargo run --example auth_interceptor` and call it with grpcurl:
//! `grpcurl -plaintext -H 'authorization: Bearer alice-token' -d '{"user_id":"me"}' 127.0.0.1:50051 users.UserService/GetUser`

#![allow(unreachable_pub)] // `builder` is also used by the integration tests

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use prost_reflect::{MethodDescriptor, Value};
use protoserve::{Builder, Server};
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Known tokens and whose they are.
pub struct AuthInterceptor {
    users_by_token: HashMap<String, String>,
}

// Not derived: tokens are secrets and stay out of logs.
impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInterceptor").field("tokens", &self.users_by_token.len()).finish()
    }
}

impl AuthInterceptor {
    /// Accepts `(token, user)` pairs.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self { users_by_token: pairs.into_iter().map(|(t, u)| (t.to_owned(), u.to_owned())).collect() }
    }

    /// Lets a call through with `x-user` set to its caller, or refuses it.
    pub fn check(&self, _method: &MethodDescriptor, metadata: &mut MetadataMap) -> Result<(), Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let user = token.and_then(|t| self.users_by_token.get(t));
        let Some(user) = user else {
            return Err(Status::unauthenticated("Missing or invalid token"));
        };
        let value = MetadataValue::try_from(user.as_str()).map_err(|_| Status::internal("user name is not ASCII"))?;
        metadata.insert("x-user", value);
        Ok(())
    }
}

/// The seed schema with the interceptor in front and a `GetUser` that answers
/// with the caller's own name: proof that handlers see what the interceptor added.
pub fn builder(schema_dir: PathBuf) -> Builder {
    let auth = Arc::new(AuthInterceptor::new([("alice-token", "alice"), ("bob-token", "bob")]));
    Server::builder().schema_dir(schema_dir).interceptor(move |method, metadata| auth.check(method, metadata)).unary(
        "users.UserService/GetUser",
        |call| async move {
            let caller = call.metadata.get("x-user").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let mut user = call.reply();
            user.set_field_by_name("id", call.message.get_field_by_name("user_id").unwrap().into_owned());
            user.set_field_by_name("name", Value::String(caller));
            Ok(user)
        },
    )
}

#[allow(dead_code)] // the tests use `builder` only
#[tokio::main]
async fn main() -> Result<(), protoserve::Error> {
    tracing_subscriber::fmt().init();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/users");
    let server = builder(dir).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051")
        .await
        .map_err(|e| protoserve::Error::io("cannot listen on 127.0.0.1:50051", e))?;
    println!("listening on 127.0.0.1:50051; tokens: alice-token, bob-token");
    server.serve(listener, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
    Ok(())
}
