//! Serving: connections from any [`Listener`] (a bound `TcpListener`, or an
//! acceptor wrapping one, e.g. for TLS), each driven by hyper-util's auto builder
//! (HTTP/1.1, or HTTP/2 with prior knowledge, detected per connection) with the
//! protocol [`Router`]; graceful drain on shutdown.

use std::future::Future;
use std::io;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::protocol::Router;

/// How long in-flight RPCs get to finish after shutdown is requested.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where connections come from. Implemented for `TcpListener`; an acceptor
/// (TLS, a Unix socket, an in-memory pipe) implements it to serve over itself.
pub trait Listener: Send + 'static {
    /// A connection as accepted, before any handshake.
    type Conn: Send + 'static;
    /// A connection ready to carry HTTP.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection. Should not wait on the peer: handshakes
    /// belong in [`Listener::handshake`], which runs in the connection's own task.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;

    /// Turns an accepted connection into one ready for HTTP (e.g. a TLS handshake).
    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static;
}

impl Listener for TcpListener {
    type Conn = tokio::net::TcpStream;
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Self::Conn> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Small RPCs must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static {
        std::future::ready(Ok(conn))
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting, sends
/// GOAWAY and waits (up to [`DRAIN_TIMEOUT`]) for in-flight RPCs to finish.
pub(crate) async fn serve<L: Listener>(mut listener: L, router: Router, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let conn = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let watcher = graceful.watcher();
                let (builder, router) = (builder.clone(), router.clone());
                let handshake = listener.handshake(conn);
                tokio::spawn(async move {
                    let io = match handshake.await {
                        Ok(io) => io,
                        Err(e) => {
                            tracing::debug!(error = %e, "connection handshake failed");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(io), router);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight RPCs");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; closing remaining connections");
    }
}
