//! Cold start: spawn a server and time until it has answered one GetUser.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use baseline::pb::GetUserRequest;
use baseline::pb::user_service_client::UserServiceClient;
use tonic::transport::Endpoint;

/// Resolves when `child` has exited, with its exit status.
async fn exited(child: &mut Child) -> String {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return format!("cannot wait for it: {e}"),
        }
    }
}

/// A port the kernel just handed out on 127.0.0.1 (free unless someone races us).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `addr` until a GetUser of `bench-user` succeeds or `timeout` passes.
pub(crate) async fn wait_ready(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Duration> {
    anyhow::ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    let start = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(2));
    let mut last_error = String::from("never tried");
    while start.elapsed() < timeout {
        match endpoint.connect().await {
            Ok(channel) => {
                let request = GetUserRequest { user_id: "bench-user".into() };
                match UserServiceClient::new(channel).get_user(request).await {
                    Ok(_) => return Ok(start.elapsed()),
                    Err(status) => last_error = format!("GetUser: {status}"),
                }
            }
            Err(e) => last_error = format!("connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("{addr} did not answer GetUser within {timeout:?} (last: {last_error})")
}

/// Spawns `command` (each `{port}` replaced by a fresh free port) `runs` times and
/// returns the time from spawn to the first successful GetUser, in ms, per run.
/// The child is killed after each run.
pub(crate) async fn measure(command: &[String], runs: usize) -> anyhow::Result<Vec<f64>> {
    let (program, args) = command.split_first().context("no command given")?;
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let port = free_port()?.to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port)).collect();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {program}"))?;
        let outcome = tokio::select! {
            ready = wait_ready(addr, Duration::from_secs(30)) => ready.map(|_| start.elapsed()),
            status = exited(&mut child) => Err(anyhow::anyhow!("the server exited during startup ({status})")),
        };
        // Best effort: the child may already have exited.
        let _ = child.kill();
        let _ = child.wait();
        let elapsed = outcome.with_context(|| format!("cold start run {run}: {}", command.join(" ")))?;
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    Ok(times)
}
