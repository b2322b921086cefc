//! The bench client: everything `bench/run.sh` needs besides h2load, so the kit has
//! no Python or protoc dependency. Every address must be a loopback one.
//!
//!     loadgen bodies --out DIR              GetUser/CreateUser bodies for h2load (gRPC-framed, JSON)
//!     loadgen free-port                     print a free 127.0.0.1 port
//!     loadgen wait --addr A                 wait until GetUser(bench-user) succeeds
//!     loadgen check --addr A                semantic check of users.UserService
//!     loadgen list --addr A                 ListUsers(page_size) load: msgs/s
//!     loadgen bulk --addr A                 BulkCreateUsers(batch) load: users/s
//!     loadgen fill --addr A -n N            N unary CreateUser calls
//!     loadgen coldstart --runs K -- CMD..   spawn -> first GetUser, ms per run
//!     loadgen h2stats OUT LOG REF_BYTES     good responses/s and latency of an h2load run
//!     loadgen report RAW_TSV BASELINE       the results table

mod check;
mod codec;
mod coldstart;
mod h2stats;
mod load;
mod report;
mod stats;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use baseline::pb::{CreateUserRequest, GetUserRequest};
use clap::{Args, Parser, Subcommand};

use crate::load::Shape;

#[derive(Debug, Parser)]
#[command(about = "Load and measurement helper for bench/run.sh (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Server address (loopback).
    #[arg(long)]
    addr: SocketAddr,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    conns: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 50)]
    streams: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write GetUser.bin and CreateUser.bin (gRPC-framed) and CreateUser.json (the same
    /// request as Connect / HTTP JSON): request bodies for h2load -d.
    Bodies {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Wait until GetUser(bench-user) succeeds; prints the ms it took.
    Wait {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Check the users.UserService semantics the benchmark relies on.
    Check {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// ListUsers load; prints `msgs/s p50_us p99_us ok%` (per call latency).
    List {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
    },
    /// BulkCreateUsers load; prints `users/s p50_us p99_us ok%` (per call latency).
    Bulk {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Send N unary CreateUser calls (for memory growth); prints seconds taken.
    Fill {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(short, long)]
        n: usize,
        #[arg(long, default_value_t = 2)]
        conns: usize,
        #[arg(long, default_value_t = 50)]
        streams: usize,
    },
    /// Spawn CMD (`{port}` is replaced by a free port) RUNS times; prints the median
    /// ms from spawn to the first successful GetUser, then every run's.
    Coldstart {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Summarise an h2load run; prints `ok/s p50_us p99_us ok%`.
    H2stats {
        /// h2load's stdout.
        summary: PathBuf,
        /// h2load's --log-file.
        log: PathBuf,
        /// DATA bytes of one good response.
        ref_bytes: u64,
    },
    /// Print the results table from raw.tsv.
    Report { raw: PathBuf, baseline: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Bodies { out } => write_bodies(&out),
        Cmd::FreePort => {
            println!("{}", coldstart::free_port()?);
            Ok(())
        }
        Cmd::H2stats { summary, log, ref_bytes } => {
            println!("{}", h2stats::from_files(&summary, &log, ref_bytes)?.tsv());
            Ok(())
        }
        Cmd::Report { raw, baseline } => {
            let text = std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?;
            print!("{}", report::render(&text, &baseline)?);
            Ok(())
        }
        command => runtime()?.block_on(run_async(command)),
    }
}

/// Like the baseline server: one worker per usable core, current-thread on one.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cores);
        b
    };
    builder.enable_all().build().context("building the tokio runtime")
}

async fn run_async(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Wait { addr, timeout } => {
            let took = coldstart::wait_ready(addr, Duration::from_secs_f64(timeout)).await?;
            println!("{:.1}", took.as_secs_f64() * 1e3);
        }
        Cmd::Check { addr } => check::run(addr).await?,
        Cmd::List { load, page_size } => {
            let size = usize::try_from(page_size).context("page size must be positive")?;
            load::ensure_users(load.addr, size).await?;
            let outcome = timed(&load, move |ch| load::list_once(ch, page_size)).await?;
            println!("{}", outcome.tsv());
        }
        Cmd::Bulk { load, batch } => {
            let outcome = timed(&load, move |ch| load::bulk_once(ch, batch)).await?;
            println!("{}", outcome.tsv());
        }
        Cmd::Fill { addr, n, conns, streams } => {
            let took = load::fill(addr, Shape { conns, streams }, n).await?;
            println!("{:.2}", took.as_secs_f64());
        }
        Cmd::Coldstart { runs, command } => {
            let times = coldstart::measure(&command, runs).await?;
            let med = stats::median(&times).context("no runs")?;
            let all: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
            println!("{med:.1}\t{}", all.join(" "));
        }
        Cmd::Bodies { .. } | Cmd::FreePort | Cmd::H2stats { .. } | Cmd::Report { .. } => {
            unreachable!("handled without a runtime")
        }
    }
    Ok(())
}

async fn timed<F, Fut>(load: &LoadArgs, call: F) -> anyhow::Result<load::Outcome>
where
    F: Fn(tonic::transport::Channel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send,
{
    let shape = Shape { conns: load.conns, streams: load.streams };
    let outcome = load::closed_loop(
        load.addr,
        shape,
        Duration::from_secs_f64(load.warmup),
        Duration::from_secs_f64(load.duration),
        call,
    )
    .await?;
    if let Some(e) = &outcome.first_error {
        eprintln!("first error: {e} ({:.1}% ok, {:.0} calls/s)", outcome.ok_pct, outcome.calls_per_s);
    }
    Ok(outcome)
}

/// gRPC length-prefixed framing: flag 0 (uncompressed), u32 big-endian length, message.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let len = u32::try_from(body.len()).expect("a bench request is far below 4 GiB");
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

fn write_bodies(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let get = GetUserRequest { user_id: "bench-user".into() };
    let create = CreateUserRequest { name: "Load Test".into(), email: "load@example.com".into(), age: 42 };
    for (name, body) in [("GetUser", grpc_frame(&get)), ("CreateUser", grpc_frame(&create))] {
        let path = out.join(format!("{name}.bin"));
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    let path = out.join("CreateUser.json");
    std::fs::write(&path, create_json(&create)).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The request in proto3 JSON (camelCase names) for the Connect and HTTP/JSON rows.
/// Its strings are plain ASCII without quotes or backslashes, so no escaping is needed.
fn create_json(req: &CreateUserRequest) -> String {
    for s in [&req.name, &req.email] {
        assert!(s.chars().all(|c| c.is_ascii() && !c.is_control() && c != '"' && c != '\\'), "{s:?}");
    }
    format!(r#"{{"name":"{}","email":"{}","age":{}}}"#, req.name, req.email, req.age)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn frames_have_a_five_byte_header() {
        let get = GetUserRequest { user_id: "bench-user".into() };
        let framed = grpc_frame(&get);
        assert_eq!(framed[0], 0);
        assert_eq!(u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize, framed.len() - 5);
        assert_eq!(GetUserRequest::decode(&framed[5..]).unwrap(), get);
    }

    #[test]
    fn create_json_is_the_same_request() {
        let req = CreateUserRequest { name: "Load Test".into(), email: "load@example.com".into(), age: 42 };
        assert_eq!(create_json(&req), r#"{"name":"Load Test","email":"load@example.com","age":42}"#);
    }
}
