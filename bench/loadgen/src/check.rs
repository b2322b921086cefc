//! A semantic check of a `users.UserService` server: the behaviour the benchmark
//! assumes (and that protoserve's zero-code store must share with the baseline).
//! Every target is checked before it is measured, so fast-but-wrong cannot win.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use baseline::pb::user_service_client::UserServiceClient;
use baseline::pb::{CreateUserRequest, GetUserRequest, ListUsersRequest, User};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::load::connect;

type Client = UserServiceClient<Channel>;

pub(crate) async fn run(addr: SocketAddr) -> anyhow::Result<()> {
    let mut c = UserServiceClient::new(connect(addr).await?);

    let bench = get(&mut c, "bench-user").await.context("GetUser bench-user")?;
    ensure!(
        bench
            == User {
                id: "bench-user".into(),
                name: "Bench".into(),
                email: "bench@example.com".into(),
                age: 30,
                created_at: 0,
            },
        "GetUser bench-user returned {bench:?}"
    );

    let alice = create(&mut c, "Alice", "alice@example.com", 31).await.context("CreateUser valid")?;
    ensure_uuid_v4(&alice.id)?;
    ensure!(
        (alice.name.as_str(), alice.email.as_str(), alice.age) == ("Alice", "alice@example.com", 31),
        "CreateUser echoed {alice:?}"
    );
    let now = unix_now();
    ensure!(
        (now - 120..=now + 120).contains(&alice.created_at),
        "CreateUser created_at {} is not now ({now})",
        alice.created_at
    );
    let fetched = get(&mut c, &alice.id).await.context("GetUser of the created user")?;
    ensure!(fetched == alice, "GetUser returned {fetched:?}, created {alice:?}");

    for (what, email) in [("no '@'", "no-at-sign"), ("empty", "")] {
        let status = create(&mut c, "Bad", email, 1)
            .await
            .err()
            .and_then(|e| e.downcast::<tonic::Status>().ok())
            .with_context(|| format!("CreateUser with {what} email succeeded"))?;
        ensure_status(&status, Code::InvalidArgument, Some("Invalid email address"))
            .with_context(|| format!("CreateUser with {what} email"))?;
    }

    let status =
        c.get_user(GetUserRequest { user_id: "nobody".into() }).await.err().context("GetUser nobody succeeded")?;
    ensure_status(&status, Code::NotFound, Some("User 'nobody' not found")).context("GetUser nobody")?;

    let before = list(&mut c, 1000, "").await?.len();
    let batch: Vec<CreateUserRequest> = (1..=12)
        .map(|i| CreateUserRequest { name: format!("u{i}"), email: format!("u{i}@example.com"), age: i })
        .collect();
    let bulk =
        c.bulk_create_users(tokio_stream::iter(batch.clone())).await.context("BulkCreateUsers x12")?.into_inner();
    ensure!(bulk.created_count == 12, "BulkCreateUsers created_count {}", bulk.created_count);
    ensure!(bulk.user_ids.len() == 12, "BulkCreateUsers returned {} ids", bulk.user_ids.len());
    for id in &bulk.user_ids {
        ensure_uuid_v4(id)?;
    }
    let last = get(&mut c, &bulk.user_ids[11]).await.context("GetUser of a bulk-created user")?;
    ensure!(last.name == "u12" && last.age == 12, "bulk user 12 is {last:?}");

    let mut mixed = batch;
    mixed.insert(5, CreateUserRequest { name: "Bad".into(), email: "bad".into(), age: 0 });
    let status = c
        .bulk_create_users(tokio_stream::iter(mixed))
        .await
        .err()
        .context("BulkCreateUsers with an invalid email succeeded")?;
    ensure_status(&status, Code::InvalidArgument, None).context("BulkCreateUsers with one invalid")?;
    let after = list(&mut c, 1000, "").await?.len();
    ensure!(
        after == before + 12,
        "BulkCreateUsers is not all-or-nothing: {before} users before, {after} after (+12 expected)"
    );

    let all = list(&mut c, 1000, "").await?;
    ensure!(all.first().map(|u| u.id.as_str()) == Some("bench-user"), "ListUsers does not start with bench-user");
    ensure!(list(&mut c, 3, "").await?.len() == 3, "ListUsers page_size=3");
    let default_page = list(&mut c, 0, "").await?;
    ensure!(default_page.len() == 10, "ListUsers default page has {} users, want 10", default_page.len());
    let ids = |users: &[User]| users.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
    let next = list(&mut c, 3, &all[2].id).await?;
    ensure!(ids(&next) == ids(&all[3..6]), "ListUsers page_token does not continue after the last id");
    let order: Vec<String> = all[all.len() - 12..].iter().map(|u| u.name.clone()).collect();
    let want: Vec<String> = (1..=12).map(|i| format!("u{i}")).collect();
    ensure!(order == want, "ListUsers is not in insertion order: {order:?}");
    Ok(())
}

async fn get(c: &mut Client, id: &str) -> anyhow::Result<User> {
    Ok(c.get_user(GetUserRequest { user_id: id.into() }).await?.into_inner())
}

async fn create(c: &mut Client, name: &str, email: &str, age: i32) -> anyhow::Result<User> {
    let request = CreateUserRequest { name: name.into(), email: email.into(), age };
    Ok(c.create_user(request).await?.into_inner())
}

async fn list(c: &mut Client, page_size: i32, token: &str) -> anyhow::Result<Vec<User>> {
    let request = ListUsersRequest { page_size, page_token: token.into() };
    let mut stream = c.list_users(request).await.context("ListUsers")?.into_inner();
    let mut users = Vec::new();
    while let Some(user) = stream.next().await {
        users.push(user.context("ListUsers stream")?);
    }
    Ok(users)
}

fn ensure_status(status: &tonic::Status, code: Code, message: Option<&str>) -> anyhow::Result<()> {
    if status.code() != code || message.is_some_and(|m| status.message() != m) {
        bail!(
            "got {:?} {:?}, want {code:?}{}",
            status.code(),
            status.message(),
            message.map(|m| format!(" {m:?}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn ensure_uuid_v4(id: &str) -> anyhow::Result<()> {
    let uuid = uuid::Uuid::parse_str(id).with_context(|| format!("id {id:?} is not a UUID"))?;
    ensure!(uuid.get_version_num() == 4, "id {id} is not a version 4 UUID");
    ensure!(id.len() == 36, "id {id} is not in hyphenated form");
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
