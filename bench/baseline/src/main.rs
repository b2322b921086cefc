//! The codegen baseline: `users.UserService` served by tonic with prost generated
//! types, the same semantics as protoserve's zero-code store. The yardstick that
//! protoserve's numbers are divided by.
//!
//!     baseline --addr 127.0.0.1:50051

mod service;
mod store;

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use anyhow::Context as _;
use baseline::pb::user_service_server::UserServiceServer;
use clap::Parser;
use tonic::transport::server::TcpIncoming;

#[derive(Debug, Parser)]
#[command(about = "users.UserService on tonic + prost generated code (benchmark baseline)")]
struct Args {
    /// Address to listen on (plaintext HTTP/2).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One worker per core this process may run on (available_parallelism honours the
    // CPU affinity mask, e.g. under taskset). On a single core a multi-thread runtime
    // only adds cross-thread wake-ups, so use the current-thread one there.
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cores);
        builder
    }
    .enable_all()
    .build()
    .context("building the tokio runtime")?;
    runtime.block_on(serve(args.addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let directory = service::Directory::new(store::Store::seeded());
    // TCP_NODELAY on accepted connections: without it a response's HEADERS, DATA and
    // trailers frames meet Nagle's algorithm and a lone request can wait ~40 ms for
    // the client's delayed ACK.
    let incoming = TcpIncoming::bind(addr).with_context(|| format!("binding {addr}"))?.with_nodelay(Some(true));
    eprintln!("baseline: serving users.UserService on {addr}");
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(directory))
        .serve_with_incoming_shutdown(incoming, async {
            // Ctrl-C stops cleanly; the bench script stops us with SIGTERM/SIGKILL.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}
