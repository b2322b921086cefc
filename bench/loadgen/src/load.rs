//! Closed-loop load for the streaming RPCs (ListUsers, BulkCreateUsers) and the
//! bulk fill used for the memory measurement.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use baseline::pb::user_service_client::UserServiceClient;
use baseline::pb::{CreateUserRequest, ListUsersRequest};
use tokio_stream::StreamExt as _;
use tonic::Request;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::codec::CountingCodec;
use crate::stats::percentile;

/// How many connections and concurrent calls per connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub(crate) conns: usize,
    pub(crate) streams: usize,
}

/// What a timed run measured (only calls that started after the warm-up and ended
/// before the deadline count).
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Messages in successful, complete calls, per second.
    pub(crate) msgs_per_s: f64,
    /// Successful calls per second.
    pub(crate) calls_per_s: f64,
    /// Call latency percentiles in microseconds (successful calls).
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    /// Share of finished calls that succeeded, in percent.
    pub(crate) ok_pct: f64,
    /// The first failure, if any, for the log.
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    /// `value p50_us p99_us ok_pct`, tab-separated: the row format of raw.tsv.
    pub(crate) fn tsv(&self) -> String {
        format!("{:.1}\t{}\t{}\t{:.2}", self.msgs_per_s, self.p50_us, self.p99_us, self.ok_pct)
    }
}

/// One plaintext HTTP/2 connection to a loopback server.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    anyhow::ensure!(addr.ip().is_loopback(), "refusing to send load to {addr}: loopback only");
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// Runs `call` in `shape.conns * shape.streams` concurrent loops for
/// `warmup + duration`. A call returns how many messages it moved, or an error.
pub(crate) async fn closed_loop<F, Fut>(
    addr: SocketAddr,
    shape: Shape,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send,
{
    let mut channels = Vec::with_capacity(shape.conns);
    for _ in 0..shape.conns {
        channels.push(connect(addr).await?);
    }
    let call = Arc::new(call);
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..shape.streams {
            let (channel, call, failed) = (channel.clone(), Arc::clone(&call), Arc::clone(&failed));
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                let mut msgs = 0u64;
                let mut first_error = None;
                loop {
                    let t0 = Instant::now();
                    if t0 >= deadline {
                        break;
                    }
                    let result = call(channel.clone()).await;
                    let t1 = Instant::now();
                    let counted = t0 >= measure_from && t1 <= deadline;
                    match result {
                        Ok(n) if counted => {
                            msgs += n;
                            latencies.push(u64::try_from((t1 - t0).as_micros()).unwrap_or(u64::MAX));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if counted {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            first_error.get_or_insert(e);
                            // Do not spin on a server that refuses everything.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                (latencies, msgs, first_error)
            });
        }
    }
    let mut latencies = Vec::new();
    let mut msgs = 0u64;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (l, m, e) = joined.context("load task panicked")?;
        latencies.extend(l);
        msgs += m;
        if first_error.is_none() {
            first_error = e;
        }
    }
    latencies.sort_unstable();
    let ok = latencies.len() as f64;
    let failed = failed.load(Ordering::Relaxed) as f64;
    let secs = duration.as_secs_f64();
    Ok(Outcome {
        msgs_per_s: msgs as f64 / secs,
        calls_per_s: ok / secs,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        ok_pct: if ok + failed > 0.0 { 100.0 * ok / (ok + failed) } else { 0.0 },
        first_error,
    })
}

const LIST_USERS: &str = "/users.UserService/ListUsers";

/// One ListUsers call that counts the streamed users without decoding them.
/// Succeeds only when the server streamed exactly `page_size` users.
pub(crate) async fn list_once(channel: Channel, page_size: i32) -> Result<u64, String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let request = Request::new(ListUsersRequest { page_size, page_token: String::new() });
    let mut stream = grpc
        .server_streaming(request, PathAndQuery::from_static(LIST_USERS), CountingCodec::<ListUsersRequest>::default())
        .await
        .map_err(|s| format!("ListUsers: {s}"))?
        .into_inner();
    let mut n = 0u64;
    while let Some(msg) = stream.next().await {
        msg.map_err(|s| format!("ListUsers stream: {s}"))?;
        n += 1;
    }
    if n == u64::from(page_size.unsigned_abs()) {
        Ok(n)
    } else {
        Err(format!("ListUsers streamed {n} users, want {page_size}"))
    }
}

/// A valid CreateUser request; `i` makes the name and email distinct.
pub(crate) fn create_request(i: usize) -> CreateUserRequest {
    CreateUserRequest {
        name: format!("Load {i}"),
        email: format!("load{i}@example.com"),
        age: i32::try_from(i % 100).unwrap_or(0),
    }
}

/// One BulkCreateUsers call of `batch` valid users; succeeds only when the server
/// reports all of them created.
pub(crate) async fn bulk_once(channel: Channel, batch: usize) -> Result<u64, String> {
    let requests: Vec<CreateUserRequest> = (0..batch).map(create_request).collect();
    let response = UserServiceClient::new(channel)
        .bulk_create_users(tokio_stream::iter(requests))
        .await
        .map_err(|s| format!("BulkCreateUsers: {s}"))?
        .into_inner();
    let created = usize::try_from(response.created_count).unwrap_or(0);
    if created == batch && response.user_ids.len() == batch {
        Ok(batch as u64)
    } else {
        Err(format!(
            "BulkCreateUsers created {} ({} ids), want {batch}",
            response.created_count,
            response.user_ids.len()
        ))
    }
}

/// Makes sure the store holds at least `n` users (ListUsers needs full pages).
pub(crate) async fn ensure_users(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let channel = connect(addr).await?;
    let mut client = UserServiceClient::new(channel);
    let have = count_users(&mut client, n).await?;
    if have < n {
        let requests: Vec<CreateUserRequest> = (have..n).map(create_request).collect();
        client.bulk_create_users(tokio_stream::iter(requests)).await.context("seeding users with BulkCreateUsers")?;
    }
    Ok(())
}

/// How many users a ListUsers call of `up_to` returns.
async fn count_users(client: &mut UserServiceClient<Channel>, up_to: usize) -> anyhow::Result<usize> {
    let page_size = i32::try_from(up_to).context("page size too large")?;
    let mut stream = client
        .list_users(ListUsersRequest { page_size, page_token: String::new() })
        .await
        .context("ListUsers")?
        .into_inner();
    let mut n = 0;
    while let Some(user) = stream.next().await {
        user.context("ListUsers stream")?;
        n += 1;
    }
    Ok(n)
}

/// Sends `n` unary CreateUser calls, `shape.conns * shape.streams` at a time.
/// Returns how long it took; fails on the first error.
pub(crate) async fn fill(addr: SocketAddr, shape: Shape, n: usize) -> anyhow::Result<Duration> {
    let mut channels = Vec::with_capacity(shape.conns);
    for _ in 0..shape.conns {
        channels.push(connect(addr).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let n = n as u64;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..shape.streams {
            let mut client = UserServiceClient::new(channel.clone());
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    client
                        .create_user(create_request(usize::try_from(i).unwrap_or(0)))
                        .await
                        .with_context(|| format!("CreateUser #{i}"))?;
                }
            });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("fill task panicked")??;
    }
    Ok(start.elapsed())
}
