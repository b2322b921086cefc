//! Serving: connections from any [`Listener`] (a bound `TcpListener`, or an
//! acceptor wrapping one, e.g. for TLS), each driven by hyper-util's auto builder
//! (HTTP/1.1, or HTTP/2 with prior knowledge, detected per connection) with the
//! protocol [`Router`]; per-connection timeouts; graceful drain on shutdown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::call::Peer;
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

    /// Who is on the other end of a connection (its address; over mutual TLS,
    /// its certificates), as handlers see it. Unknown by default.
    fn peer(io: &Self::Io) -> Peer {
        let _ = io;
        Peer::default()
    }
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

    fn peer(io: &Self::Io) -> Peer {
        Peer::new(io.peer_addr().ok())
    }
}

/// Per-connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A connection must complete its handshake and send its first request
    /// within this time, or it is closed.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long (and at most twice
    /// this long) is closed (GOAWAY).
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval to find dead peers (`None`, the default: no keepalive
    /// pings); a peer that does not answer within 20 s is disconnected.
    pub keepalive_interval: Option<Duration>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            // Off by default: hyper reads the clock on every connection wake-up
            // while keepalive is on (~0.5% of a small RPC's cost).
            keepalive_interval: None,
        }
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting, sends
/// GOAWAY and waits (up to [`DRAIN_TIMEOUT`]) for in-flight RPCs to finish.
pub(crate) async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.handshake_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(limits.keepalive_interval);
    if limits.keepalive_interval.is_some() {
        builder.http2().keep_alive_timeout(Duration::from_secs(20));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; the drain waits until all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let conn = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning, and say so
                        // at most once a second.
                        let pause = accept_errors.failed(&e);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
                accept_errors.succeeded();
                let handshake = listener.handshake(conn);
                let conn_task = Connection {
                    builder: builder.clone(),
                    router: router.clone(),
                    limits,
                    stop: stop_rx.clone(),
                    _alive: alive_tx.clone(),
                };
                tokio::spawn(conn_task.run(handshake, L::peer));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight RPCs");
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv()).await.is_err() {
        tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; closing remaining connections");
    }
}

/// One connection's task.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Connection {
    async fn run<Io>(self, handshake: impl Future<Output = io::Result<Io>>, peer_of: fn(&Io) -> Peer)
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = match tokio::time::timeout(self.limits.handshake_timeout, handshake).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return tracing::debug!(error = %e, "connection handshake failed"),
            Err(_) => return tracing::debug!("connection handshake timed out"),
        };
        let activity = Arc::new(Activity::new());
        let peer = peer_of(&io);
        let service = Tracked { router: self.router.clone(), activity: activity.clone(), peer };
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        // Shutdown and the idle timer are watched by a task of their own, which
        // raises `close`: the connection's own wake-ups (one or more per request)
        // then cost one atomic load, not a poll of a timer and a channel.
        let close = Arc::new(CloseSignal::default());
        let watchdog = tokio::spawn({
            let (close, activity, limits, mut stop) = (close.clone(), activity.clone(), self.limits, self.stop.clone());
            async move {
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => {}
                    () = activity.idle_for(limits) => tracing::debug!("closing an idle connection"),
                }
                close.raise();
            }
        });
        let mut closing = false;
        let mut registered = false;
        let done = std::future::poll_fn(|cx| {
            if !registered {
                // A task's waker stays the same for its whole life: register it once.
                close.waker.register(cx.waker());
                registered = true;
            }
            if !closing && close.raised.load(Ordering::Acquire) {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            conn.as_mut().poll(cx)
        })
        .await;
        watchdog.abort();
        if let Err(e) = done {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Raised once to ask a connection to close gracefully.
#[derive(Debug, Default)]
struct CloseSignal {
    raised: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl CloseSignal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Requests in flight on one connection, and how many have finished. The idle
/// timer samples them: a connection with nothing in flight and no request
/// finished during a whole period is idle, so it is closed between one and two
/// idle timeouts after its last request (no clock is read per request).
#[derive(Debug)]
struct Activity {
    active: AtomicUsize,
    finished: AtomicU64,
    /// Whether any request has arrived yet (before that, the handshake timeout applies).
    served: AtomicBool,
    /// Wakes the idle timer when the first request arrives (the limit changes then).
    first_request: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            served: AtomicBool::new(false),
            first_request: tokio::sync::Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        if !self.served.swap(true, Ordering::AcqRel) {
            self.first_request.notify_one();
        }
        ActiveGuard(self.clone())
    }

    /// Resolves once the connection is idle: no first request within the
    /// handshake timeout, or nothing in flight and nothing finished for a whole
    /// idle timeout.
    async fn idle_for(&self, limits: ConnLimits) {
        // Before the first request: the handshake timeout, unless a request comes.
        tokio::select! {
            () = tokio::time::sleep(limits.handshake_timeout) => {
                if !self.served.load(Ordering::Acquire) {
                    return;
                }
            }
            () = self.first_request.notified() => {}
        }
        let mut seen = u64::MAX;
        loop {
            tokio::time::sleep(limits.idle_timeout).await;
            let finished = self.finished.load(Ordering::Acquire);
            if self.active.load(Ordering::Acquire) == 0 && finished == seen {
                return;
            }
            seen = finished;
        }
    }
}

/// One request in flight; dropped with its response body (or when abandoned).
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting requests in flight for the idle timeout, and telling
/// adapters who the peer is (a request extension).
#[derive(Clone)]
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
    peer: Peer,
}

type Inner = <Router as hyper::service::Service<http::Request<Incoming>>>::Future;

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = TrackedFuture;

    fn call(&self, mut req: http::Request<Incoming>) -> TrackedFuture {
        let guard = self.activity.begin();
        req.extensions_mut().insert(self.peer.clone());
        TrackedFuture { inner: hyper::service::Service::call(&self.router, req), guard: Some(guard) }
    }
}

struct TrackedFuture {
    inner: Inner,
    guard: Option<ActiveGuard>,
}

impl Future for TrackedFuture {
    type Output = Result<http::Response<TrackedBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = std::task::ready!(this.inner.as_mut().poll(cx));
        let guard = this.guard.take();
        Poll::Ready(res.map(|r| r.map(|inner| TrackedBody { inner, _guard: guard })))
    }
}

/// A response body that keeps its request counted until it is done.
struct TrackedBody {
    inner: tonic::body::Body,
    _guard: Option<ActiveGuard>,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accept failures: exponential back-off, and one log line a second at most.
#[derive(Debug, Default)]
struct AcceptErrors {
    streak: u32,
    suppressed: u64,
    last_log: Option<Instant>,
}

impl AcceptErrors {
    /// Records a failure; returns how long to pause before accepting again.
    fn failed(&mut self, e: &io::Error) -> Duration {
        self.streak = self.streak.saturating_add(1);
        let now = Instant::now();
        if self.last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            if self.suppressed > 0 {
                tracing::warn!(error = %e, "accept failed ({} more failures since the last report)", self.suppressed);
            } else {
                tracing::warn!(error = %e, "accept failed");
            }
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        Duration::from_millis(5u64 << self.streak.min(8)).min(Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_back_off_grows_and_is_capped() {
        let mut a = AcceptErrors::default();
        let e = io::Error::other("EMFILE");
        let pauses: Vec<_> = (0..12).map(|_| a.failed(&e)).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), Duration::from_secs(1));
        assert_eq!(a.suppressed, 11, "one report for a burst within a second");
        a.succeeded();
        assert_eq!(a.failed(&e), Duration::from_millis(10));
    }
}
