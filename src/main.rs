//! The `protoserve` binary: parse arguments, call the library, map errors to exit codes
//! (0 ok, 1 schema errors or breaking changes, 2 usage or I/O errors).

use std::process::ExitCode;

use protoserve::{Command, Config};

fn main() -> ExitCode {
    let config = Config::from_args();
    let otlp = match otlp_start(&config) {
        Ok(otlp) => otlp,
        Err(code) => return code,
    };
    // Held until the end of `main`: dropping it flushes the log lines. With
    // `--otlp-endpoint`, otlp_start installed the subscriber (with its span layer).
    let logs = otlp.is_none().then(|| {
        protoserve::logs::init(match &config.command {
            Command::Serve(c) => Some(c.log_format),
            _ => None,
        })
    });
    let result = match config.command {
        Command::Compat(opts) => {
            let code = protoserve::compat_cmd::run(&opts, &mut std::io::stdout().lock(), &mut std::io::stderr().lock());
            return ExitCode::from(code as u8);
        }
        Command::Check(c) => protoserve::check(&c).map(|out| print!("{out}")),
        Command::Serve(c) => {
            let shutdown = match signals::install() {
                Ok(s) => s,
                Err(e) => {
                    protoserve::logs::flush();
                    eprintln!("error: cannot handle SIGINT/SIGTERM: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime() {
                Ok(rt) => {
                    let served = rt.block_on(async { protoserve::serve(&c, shutdown).await });
                    // Drained: do not wait for blocking work still running (a reload's
                    // compile of a large schema can take seconds); exit now.
                    rt.shutdown_background();
                    served
                }
                Err(e) => {
                    protoserve::logs::flush();
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// `serve --otlp-endpoint`: starts the span exporter and installs the
/// subscriber (the usual log lines, filtered by RUST_LOG as usual, plus the
/// exported `rpc` spans, which RUST_LOG does not filter). `None` without the flag.
fn otlp_start(config: &Config) -> Result<Option<protoserve::otlp::Exporter>, ExitCode> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};

    let Command::Serve(c) = &config.command else { return Ok(None) };
    let Some(endpoint) = &c.otlp_endpoint else { return Ok(None) };
    let (exporter, spans) = protoserve::otlp::start(endpoint, c.addr).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if c.log_format == protoserve::LogFormat::Json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_filter(filter).boxed()
    };
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(Some(exporter))
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

/// SIGINT/SIGTERM, handled on a thread of their own so that they work while the
/// server is still starting (a slow `--data`, a blocked read) as well as while it
/// drains:
///
/// - during startup, the first signal exits at once (128 + signal number);
/// - while serving, the first signal starts the graceful drain (exit 0 once
///   every in-flight RPC finished);
/// - during the drain, a second signal ends it at once (128 + signal number), so
///   the exit code says whether the drain completed.
mod signals {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};

    const STARTING: u8 = 0;
    const SERVING: u8 = 1;
    const DRAINING: u8 = 2;

    /// Starts the signal thread; returns the future that resolves when serving
    /// should stop. The server polls it once it is up, which ends "startup".
    pub(crate) fn install() -> std::io::Result<impl std::future::Future<Output = ()>> {
        let phase = Arc::new(AtomicU8::new(STARTING));
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        #[cfg(unix)]
        let (mut int, mut term) = {
            use tokio::signal::unix::{SignalKind, signal};
            let _guard = rt.enter();
            (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
        };
        let seen = phase.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            rt.block_on(async move {
                loop {
                    #[cfg(unix)]
                    let (name, number) = tokio::select! {
                        Some(()) = int.recv() => ("SIGINT", 2),
                        Some(()) = term.recv() => ("SIGTERM", 15),
                        else => return,
                    };
                    #[cfg(not(unix))]
                    let (name, number) = match tokio::signal::ctrl_c().await {
                        Ok(()) => ("Ctrl-C", 2),
                        Err(_) => return,
                    };
                    match seen.load(Ordering::SeqCst) {
                        STARTING => {
                            protoserve::logs::flush();
                            eprintln!("protoserve: {name} during startup: exiting");
                            std::process::exit(128 + number);
                        }
                        SERVING => {
                            seen.store(DRAINING, Ordering::SeqCst);
                            tracing::info!("{name}: draining in-flight RPCs; send it again to stop at once");
                            let _ = tx.send(true);
                        }
                        _ => {
                            protoserve::logs::flush();
                            eprintln!("protoserve: second {name}: stopping without waiting for in-flight RPCs");
                            std::process::exit(128 + number);
                        }
                    }
                }
            });
        })?;
        tracing::debug!("signals: SIGINT/SIGTERM handled (startup: exit; serving: drain; draining: exit now)");
        Ok(async move {
            phase.store(SERVING, Ordering::SeqCst);
            let _ = rx.wait_for(|stop| *stop).await;
        })
    }
}
