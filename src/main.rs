//! The `protoserve` binary: parse arguments, call the library, map errors to exit codes
//! (0 ok, 1 schema errors or breaking changes, 2 usage or I/O errors).

use std::process::ExitCode;

use protoserve::{Command, Config};

fn main() -> ExitCode {
    let config = Config::from_args();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match config.command {
        Command::Check(c) => protoserve::check(&c).map(|out| print!("{out}")),
        Command::Serve(c) => match runtime() {
            Ok(rt) => rt.block_on(protoserve::serve(&c, shutdown_signal())),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// One worker per usable core (affinity and cgroup quotas respected); a
/// single-threaded runtime on one core, where a multi-thread one halves throughput.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
