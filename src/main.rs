//! The `protoserve` binary: parse arguments, call the library, map errors to exit codes
//! (0 ok, 1 schema errors or breaking changes, 2 usage or I/O errors).

use std::process::ExitCode;

use protoserve::{Command, Config};

fn main() -> ExitCode {
    let config = Config::from_args();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match config.command {
        Command::Compat(opts) => {
            let code = protoserve::compat_cmd::run(&opts, &mut std::io::stdout().lock(), &mut std::io::stderr().lock());
            return ExitCode::from(code as u8);
        }
        Command::Check(c) => protoserve::check(&c).map(|out| print!("{out}")),
        Command::Serve(c) => match runtime() {
            Ok(rt) => rt.block_on(async { protoserve::serve(&c, shutdown_signal()).await }),
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
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build()
    }
}

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives while the
/// server starts is not lost) and returns a future that resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
