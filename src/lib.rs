//! protoserve: a gRPC server whose schema is data.
//!
//! Point it at a directory of `.proto` files and it serves them: the files are
//! compiled in-process with protox, requests are decoded as
//! [`prost_reflect::DynamicMessage`]s and routed by full method name to a handler
//! registered by Rust code or, with zero code, to a built-in resource store for
//! CRUD-shaped services. Requests are validated against `buf.validate` rules first.
//!
//! ```no_run
//! # async fn demo() -> Result<(), protoserve::Error> {
//! use protoserve::Server;
//! let server = Server::builder()
//!     .schema_dir("schemas/users")
//!     .unary("users.UserService/GetUser", |call| async move {
//!         let mut user = call.reply();
//!         user.set_field_by_name("id", call.message.get_field_by_name("user_id").unwrap().into_owned());
//!         Ok(user)
//!     })
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! server.serve(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `cli`: command-line arguments -> one validated [`Config`].
//! - [`schema`]: find `.proto` files, compile them with protox, render errors.
//! - [`compat`]: pure wire-compatibility checks between two pools (buf's rules
//!   and ours), reports, and the encode/decode probe.
//! - `registry`: the live [`Snapshot`] (pool, routes, validator, reflection)
//!   behind an `ArcSwap`; building and publishing snapshots.
//! - [`compat_cmd`]: the `protoserve compat` command (reading inputs, printing).
//! - [`reload`]: file watching, recompiling, checking and swapping snapshots.
//! - `call`: the protocol-neutral call core ([`CallRequest`] -> [`Answer`]).
//! - `protocol`: adapters from HTTP (gRPC, gRPC-Web, Connect, HTTP/JSON) to calls;
//!   CORS; the only code that knows HTTP.
//! - [`middleware`]: tower layers over calls (deadline, tracing span, request
//!   logs and Prometheus metrics, bearer-token auth, interceptors, yours).
//! - `responder`: what answers a method: registered handlers, then the resource store.
//! - [`store`]: the [`Store`](store::Store) trait and the in-memory store.
//! - [`error`]: the one [`Error`] type and its one mapping to gRPC statuses.
//! - `validate`: `buf.validate` checks (prost-protovalidate, CEL included).
//! - `reflection`, `health`: the built-in gRPC services.
//! - `server`: listener/acceptor (TCP, [`TlsListener`] with certificate reload),
//!   HTTP/1.1 + HTTP/2 connections, graceful drain.

pub mod admin;
mod call;
mod cli;
pub mod compat;
pub mod compat_cmd;
pub mod error;
mod health;
pub mod journal;
pub mod logs;
pub mod middleware;
pub mod otlp;
mod protocol;
mod registry;
pub mod reload;
mod responder;
pub mod schema;
mod server;
pub mod store;
mod units;
mod validate;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use prost_reflect::DynamicMessage;
use tokio::net::TcpListener;
use tonic::Status;

pub use call::{
    Answer, BoxFuture, CallRequest, CompressionCell, Kind, MetadataCell, Peer, Replies, Reply, ReplyCompression,
};
pub use cli::{CheckConfig, Command, Config, LogFormat, ServeConfig, parse_duration, parse_size};
pub use error::Error;
pub use middleware::CallService;
pub use protocol::{Compression, JsonNames};
pub use registry::{BuildError, Snapshot};
pub use reload::{OnBreaking, Outcome, Phases, ReloadError, ReloadHandle, Reloaded, SchemaDiff};
pub use responder::handler::{Call, Cancellation, Handler, ReplyStream, RequestStream};
pub use schema::{Schema, SchemaError};
pub use server::{ConnLimits, Listener, TlsFiles, TlsListener, TlsReloads};

use protocol::Router;
use protocol::grpc::GrpcAdapter;
use registry::{Registry, method_path};
use responder::handler::Handlers;
use store::{MemoryStore, Store};

/// Default maximum message size, both directions: 10 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Default for the request bytes one client-streaming store call may buffer: 64 MiB.
pub const DEFAULT_MAX_CALL_BUFFER: usize = 64 * 1024 * 1024;

/// Configures a [`Server`]: schema roots, handlers, data, limits.
pub struct Builder {
    roots: Vec<PathBuf>,
    imports: Vec<PathBuf>,
    exclude: Vec<String>,
    allow_empty: bool,
    handlers: HashMap<String, Handler>,
    store: Option<Arc<dyn Store>>,
    layers: Vec<middleware::UserLayer>,
    auth: Option<Arc<middleware::TokenAuth>>,
    observe: middleware::ObserveLayer,
    compression: Compression,
    json_names: JsonNames,
    cors_origins: Vec<String>,
    data: Option<PathBuf>,
    stubs: responder::stub::Sources,
    max_recv: usize,
    max_send: usize,
    max_call_buffer: usize,
    conn_limits: ConnLimits,
    watch: bool,
    on_breaking: OnBreaking,
    compat: Option<reload::CompatCheck>,
    /// The journal size, when the admin API is on.
    admin: Option<usize>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("roots", &self.roots)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            roots: Vec::new(),
            imports: Vec::new(),
            exclude: Vec::new(),
            allow_empty: false,
            handlers: HashMap::new(),
            store: None,
            layers: Vec::new(),
            auth: None,
            observe: middleware::ObserveLayer::default(),
            compression: Compression::default(),
            json_names: JsonNames::default(),
            cors_origins: Vec::new(),
            data: None,
            stubs: Default::default(),
            max_recv: DEFAULT_MAX_MESSAGE_SIZE,
            max_send: DEFAULT_MAX_MESSAGE_SIZE,
            max_call_buffer: DEFAULT_MAX_CALL_BUFFER,
            conn_limits: ConnLimits::default(),
            watch: false,
            on_breaking: OnBreaking::Warn,
            compat: Some(Arc::new(wire_check)),
            admin: None,
        }
    }
}

impl Builder {
    /// Adds a schema root: every `.proto` file under it is served, and it is an include path.
    pub fn schema_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.roots.push(dir.into());
        self
    }

    /// Adds an import-only root (`-I`): it resolves imports, its files are not served.
    pub fn import_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.imports.push(dir.into());
        self
    }

    /// Skips paths under the schema roots that match a glob (`--exclude`), matched
    /// against the path relative to its root and against file and folder names.
    pub fn exclude(mut self, glob: impl Into<String>) -> Self {
        self.exclude.push(glob.into());
        self
    }

    /// Starts even when the roots hold no `.proto` file yet, serving nothing
    /// (health and reflection up) until files arrive (off by default; `protoserve
    /// serve` turns it on).
    pub fn allow_empty(mut self, yes: bool) -> Self {
        self.allow_empty = yes;
        self
    }

    /// Registers a handler for a method, by full name (`pkg.Service/Method`).
    /// Registered handlers win over the built-in store.
    pub fn handler(mut self, method: &str, handler: Handler) -> Self {
        self.handlers.insert(method_path(method), handler);
        self
    }

    /// Registers a unary handler.
    pub fn unary<F, Fut>(self, method: &str, f: F) -> Self
    where
        F: Fn(Call<DynamicMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DynamicMessage, Status>> + Send + 'static,
    {
        self.handler(method, Handler::unary(f))
    }

    /// Registers a server-streaming handler.
    pub fn server_streaming<F, Fut>(self, method: &str, f: F) -> Self
    where
        F: Fn(Call<DynamicMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReplyStream, Status>> + Send + 'static,
    {
        self.handler(method, Handler::server_streaming(f))
    }

    /// Registers a client-streaming handler.
    pub fn client_streaming<F, Fut>(self, method: &str, f: F) -> Self
    where
        F: Fn(Call<RequestStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<DynamicMessage, Status>> + Send + 'static,
    {
        self.handler(method, Handler::client_streaming(f))
    }

    /// Registers a bidi-streaming handler.
    pub fn bidi<F, Fut>(self, method: &str, f: F) -> Self
    where
        F: Fn(Call<RequestStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReplyStream, Status>> + Send + 'static,
    {
        self.handler(method, Handler::bidi(f))
    }

    /// Keeps resource-store records in `store` instead of the built-in in-memory one.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Adds a tower layer around every call (after the deadline and tracing
    /// layers, before the responder; layers run in the order added).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<CallService> + Send + Sync + 'static,
        L::Service:
            tower_service::Service<CallRequest, Response = Answer, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<CallRequest>>::Future: Send + 'static,
    {
        self.layers.push(middleware::user_layer(layer));
        self
    }

    /// Adds an interceptor: it sees each call's method and request metadata
    /// before the responder, and either lets the call through (with whatever it
    /// added to the metadata, which the handler sees) or rejects it with a status
    /// the client receives unchanged. Runs where a [`Builder::layer`] would.
    pub fn interceptor<F>(self, f: F) -> Self
    where
        F: Fn(&prost_reflect::MethodDescriptor, &mut tonic::metadata::MetadataMap) -> Result<(), Status>
            + Send
            + Sync
            + 'static,
    {
        self.layer(middleware::InterceptLayer::new(f))
    }

    /// Requires `authorization: Bearer <token>` with a token `auth` knows;
    /// other calls answer UNAUTHENTICATED before any responder or user layer
    /// runs. Health and reflection stay open unless [`TokenAuth::all`].
    pub fn token_auth(mut self, auth: middleware::TokenAuth) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Request logs (one `info` line per RPC, target `protoserve::rpc`) and/or
    /// metrics (see [`Server::metrics`]). Both off by default, and then cost nothing.
    pub fn observe(mut self, request_logs: bool, metrics: bool) -> Self {
        let metrics = metrics.then(|| Arc::new(middleware::Metrics::new()));
        self.observe = middleware::ObserveLayer::new(request_logs, metrics);
        self
    }

    /// Which encoding compresses responses (default gzip, for clients that accept it).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Allows browser pages from `origin` (`*`: any) to call the server:
    /// CORS preflights are answered and the gRPC/Connect response headers
    /// exposed. Repeatable; without it no CORS headers are sent.
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }

    /// Which field names JSON responses (Connect, HTTP/JSON) use: lowerCamelCase
    /// (the default) or the names in the `.proto` files.
    pub fn json_names(mut self, names: JsonNames) -> Self {
        self.json_names = names;
        self
    }

    /// Pre-loads the resource store from a YAML or JSON file.
    pub fn data_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.data = Some(path.into());
        self
    }

    /// Adds a stub directory (or file): YAML/JSON stubs answering methods with
    /// no code, checked against the schema and reloaded with it (see docs/stubs.md).
    pub fn stubs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.stubs.dirs.push(dir.into());
        self
    }

    /// Adds stubs from YAML or JSON text (one stub or a list), checked and
    /// served like a stub file; `name` stands for the file in diagnostics.
    /// Texts given this way come before the files in the ranking's file order.
    pub fn stub_text(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.stubs.texts.push((name.into(), text.into()));
        self
    }

    /// Turns the admin API's state on: stubs can be edited at runtime and
    /// every call is recorded in a journal of the last `journal_size` calls (0:
    /// no journal). Off by default, and then it costs nothing per call. Use it
    /// through [`Server::admin`]; `protoserve serve --admin-addr` serves it
    /// over HTTP.
    pub fn admin(mut self, journal_size: usize) -> Self {
        self.admin = Some(journal_size);
        self
    }

    /// Sets the maximum message size for both directions.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_recv = bytes;
        self.max_send = bytes;
        self
    }

    /// The most request bytes one client-streaming call answered by the store
    /// (BulkCreate) may buffer before storing all or nothing; more is RESOURCE_EXHAUSTED.
    pub fn max_call_buffer(mut self, bytes: usize) -> Self {
        self.max_call_buffer = bytes;
        self
    }

    /// Per-connection timeouts: handshake (to the first request), idle, keepalive.
    pub fn conn_limits(mut self, limits: ConnLimits) -> Self {
        self.conn_limits = limits;
        self
    }

    /// Watches the schema roots while serving and hot-reloads on changes
    /// (off by default for the library; on by default for `protoserve serve`).
    pub fn watch(mut self, yes: bool) -> Self {
        self.watch = yes;
        self
    }

    /// What a reload does with a candidate that breaks wire compatibility.
    pub fn on_breaking(mut self, policy: OnBreaking) -> Self {
        self.on_breaking = policy;
        self
    }

    /// Replaces the wire-compatibility check every reload runs against the live
    /// schema (default: buf's WIRE rules plus protoserve's), or turns it off with `None`.
    pub fn compat_check(mut self, check: Option<reload::CompatCheck>) -> Self {
        self.compat = check;
        self
    }

    /// Compiles the schema, loads data and resolves every route.
    pub fn build(self) -> Result<Server, Error> {
        let roots = if self.roots.is_empty() { vec![PathBuf::from(".")] } else { self.roots };
        let load = schema::LoadOptions { roots, imports: self.imports, exclude: self.exclude };
        let schema = match schema::load_with(&load) {
            Err(SchemaError::NoFiles { dirs }) if self.allow_empty => {
                let dirs: Vec<String> = dirs.iter().map(|d| format!("'{}'", d.display())).collect();
                tracing::warn!("no .proto files under {} yet: serving nothing until some arrive", dirs.join(", "));
                schema::empty()
            }
            other => other?,
        };
        let store: Arc<dyn Store> = self.store.unwrap_or_else(|| Arc::new(MemoryStore::default()));
        if let Some(path) = &self.data {
            let n = responder::store::load_data(&*store, schema.pool(), path).map_err(Error::data)?;
            tracing::info!(records = n, file = %path.display(), "pre-loaded data");
        }
        let health = health::HealthState::default();
        let health_server = health.server();
        let mut stubs = self.stubs;
        let admin_parts = self.admin.map(|size| {
            let runtime = Arc::new(responder::stub::runtime::Runtime::default());
            stubs.runtime = Some(runtime.clone());
            (runtime, Arc::new(journal::Journal::new(size)))
        });
        let chain = responder::chain(Handlers::new(self.handlers), store, self.max_send, self.max_call_buffer, stubs);
        let registry = Arc::new(Registry::new(schema, chain, health)?);
        let mut layers = self.layers;
        if let Some(auth) = &self.auth {
            layers.insert(0, middleware::user_layer(auth.layer()));
        }
        let metrics = self.observe.metrics().cloned();
        if let Some(m) = &metrics {
            m.register_snapshot(&registry.load());
        }
        let journal_layer = admin_parts
            .as_ref()
            .filter(|(_, j)| j.capacity() > 0)
            .map(|(_, j)| middleware::JournalLayer::new(j.clone()));
        let calls = middleware::stack(call::Core { max_send: self.max_send }, &layers, &self.observe, journal_layer);
        let router = Router::new(
            GrpcAdapter {
                builtin_auth: self.auth.clone().filter(|a| a.covers_builtin()),
                registry: registry.clone(),
                health: health_server,
                calls: calls.clone(),
                max_recv: self.max_recv,
                compression: self.compression,
                reflection: Default::default(),
            },
            protocol::web::WebAdapter {
                registry: registry.clone(),
                calls,
                max_recv: self.max_recv,
                json_names: self.json_names,
                cors_origins: self.cors_origins,
            },
        );
        let reload = ReloadHandle::new(registry.clone(), load, self.on_breaking, self.compat);
        // Watch from now on, so an edit made before `serve` runs is not missed.
        let watcher = if self.watch {
            match reload.start_watching() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the schema roots; hot reload is off (SIGHUP still works)");
                    None
                }
            }
        } else {
            None
        };
        let admin = admin_parts.map(|(runtime, journal)| admin::Admin::new(reload.clone(), runtime, journal));
        Ok(Server { router, registry, reload, watcher, conn_limits: self.conn_limits, auth: self.auth, metrics, admin })
    }
}

/// The check every reload runs: buf's WIRE rules plus ours, between the live
/// schema and the candidate.
fn wire_check(old: &Schema, new: &Schema) -> Vec<compat::Finding> {
    let policy = compat::Policy::new(compat::RuleSet::Wire);
    let (old_info, new_info) = (|f: &str| old.source_info(f), |f: &str| new.source_info(f));
    compat::check_sourced((old.pool(), &old_info), (new.pool(), &new_info), &policy)
        .into_iter()
        .map(|l| l.finding)
        .collect()
}

/// A built server: serve it on a listener you bound.
#[derive(Debug)]
pub struct Server {
    registry: Arc<Registry>,
    router: Router,
    conn_limits: ConnLimits,
    reload: ReloadHandle,
    watcher: Option<reload::Watcher>,
    auth: Option<Arc<middleware::TokenAuth>>,
    metrics: Option<Arc<middleware::Metrics>>,
    admin: Option<admin::Admin>,
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.registry.load()
    }

    /// The metrics, when on ([`Builder::observe`]): render them with
    /// [`Metrics::render`](middleware::Metrics::render) (`protoserve serve
    /// --metrics-addr` serves them over HTTP).
    pub fn metrics(&self) -> Option<Arc<middleware::Metrics>> {
        self.metrics.clone()
    }

    /// The admin API (runtime stubs, journal, verify), when on
    /// ([`Builder::admin`]); serve it over HTTP with [`Server::serve_admin`].
    pub fn admin(&self) -> Option<admin::Admin> {
        self.admin.clone()
    }

    /// Serves the admin API over HTTP/JSON on `listener` until the returned
    /// task is aborted (`None` when the admin API is off).
    pub fn serve_admin(&self, listener: TcpListener) -> Option<tokio::task::JoinHandle<()>> {
        let admin = self.admin.clone()?;
        Some(tokio::spawn(protocol::admin::serve(listener, admin)))
    }

    /// A handle to reload the schema from Rust code and observe generations.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Serves on `listener` (a bound `TcpListener`, or any [`Listener`]) until
    /// `shutdown` resolves, then drains in-flight RPCs. With [`Builder::watch`],
    /// schema edits are hot-reloaded meanwhile.
    pub async fn serve<L: Listener>(self, listener: L, shutdown: impl Future<Output = ()>) {
        let _watching = self.watcher.map(|w| w.run(self.reload.clone()));
        let _tokens = self.auth.map(|a| AbortOnDrop(tokio::spawn(a.watch_file())));
        let _reloads = self.metrics.map(|m| AbortOnDrop(tokio::spawn(count_reloads(m, self.reload.clone()))));
        let registry = self.registry.clone();
        registry.set_health(&registry.load());
        let drain = async {
            shutdown.await;
            registry.set_not_serving();
        };
        server::serve(listener, self.router, self.conn_limits, drain).await;
    }
}

/// Aborts a background task when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts reload attempts and registers each new generation's methods. The
/// outcomes channel keeps the latest attempt only: attempts finishing faster
/// than this task wakes up are counted by the last one's result.
async fn count_reloads(metrics: Arc<middleware::Metrics>, reload: ReloadHandle) {
    let mut outcomes = reload.outcomes();
    // Attempt 0 is the startup load; reloads made before serving (the watcher
    // runs from `build`) are counted here too.
    let mut seen = 0;
    loop {
        let outcome = outcomes.borrow_and_update().clone();
        if outcome.attempt > seen {
            for _ in seen..outcome.attempt {
                metrics.reloaded(&outcome);
            }
            seen = outcome.attempt;
            if outcome.result.is_ok() {
                metrics.register_snapshot(&reload.snapshot());
            }
        }
        if outcomes.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `protoserve serve`: build, bind, log one line, serve until `shutdown`.
pub async fn serve(config: &ServeConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let mut builder = Server::builder()
        .max_message_size(config.max_message_size)
        .watch(config.watch)
        .on_breaking(config.on_breaking)
        .compression(config.compression)
        .json_names(config.json_names)
        .max_call_buffer(config.max_call_buffer)
        .conn_limits(config.conn_limits)
        .allow_empty(true);
    for root in &config.roots {
        builder = builder.schema_dir(root);
    }
    for dir in &config.imports {
        builder = builder.import_dir(dir);
    }
    for glob in &config.exclude {
        builder = builder.exclude(glob);
    }
    for origin in &config.cors_origins {
        builder = builder.cors_origin(origin);
    }
    if let Some(data) = &config.data {
        builder = builder.data_file(data);
    }
    for dir in &config.stubs {
        builder = builder.stubs(dir);
    }
    if !config.auth_tokens.is_empty() || config.auth_tokens_file.is_some() {
        let mut auth = middleware::TokenAuth::new(config.auth_tokens.iter().cloned());
        if let Some(file) = &config.auth_tokens_file {
            auth = auth.from_file(file)?;
        }
        builder = builder.token_auth(auth.scope(&config.auth_scope)?.all(config.auth_all));
    } else if config.auth_all || !config.auth_scope.is_empty() {
        return Err(Error::invalid_argument(
            "--auth-all and --auth-scope need tokens: add --auth-token TOKEN or --auth-tokens FILE",
        ));
    }
    // Request logs cost nothing when RUST_LOG filters their target out.
    let request_logs = tracing::enabled!(target: "protoserve::rpc", tracing::Level::INFO);
    builder = builder.observe(request_logs, config.metrics_addr.is_some());
    if config.admin_addr.is_some() {
        builder = builder.admin(config.journal_size);
    }
    let server = builder.build()?;
    let _admin = match config.admin_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::io(format!("cannot listen on {addr} for the admin API"), source))?;
            let bound = listener.local_addr().map_err(|source| Error::io("admin address", source))?;
            if !bound.ip().is_loopback() {
                tracing::warn!(
                    "the admin API listens on {bound}, which is not loopback: anyone who reaches it can change what the server answers"
                );
            }
            tracing::info!("admin API listening on http://{bound} (OpenAPI at http://{bound}/openapi.json)");
            server.serve_admin(listener).map(AbortOnDrop)
        }
        None => None,
    };
    let _metrics = match (config.metrics_addr, server.metrics()) {
        (Some(addr), Some(metrics)) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::io(format!("cannot listen on {addr} for metrics"), source))?;
            let bound = listener.local_addr().map_err(|source| Error::io("metrics address", source))?;
            tracing::info!("metrics at http://{bound}/metrics");
            Some(AbortOnDrop(tokio::spawn(protocol::metrics::serve(listener, metrics))))
        }
        _ => None,
    };
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| Error::io(format!("cannot listen on {}", config.addr), source))?;
    let addr = listener.local_addr().map_err(|source| Error::io("local address", source))?;
    // TLS, or plain TCP when no certificate is configured.
    let listener = match config.tls.clone() {
        Some(files) => Ok(TlsListener::new(listener, files)?),
        None => Err(listener),
    };
    let snap = server.snapshot();
    snap.log_problems();
    let services = snap.services();
    tracing::info!(
        "protoserve listening on {addr}{}: {} service(s), {} method(s) [{}]",
        match &config.tls {
            Some(TlsFiles { client_ca: Some(_), .. }) => " (TLS, client certificates required)",
            Some(_) => " (TLS)",
            None => "",
        },
        services.len(),
        snap.method_count(),
        services.join(", ")
    );
    log_routes(&snap);
    let hup = reload::on_signals(server.reload_handle());
    match listener {
        Ok(tls) => server.serve(tls, shutdown).await,
        Err(tcp) => server.serve(tcp, shutdown).await,
    }
    hup.abort();
    Ok(())
}

/// Runs `protoserve check`: compiles and describes what would be served.
pub fn check(config: &CheckConfig) -> Result<String, Error> {
    let server = Server::builder();
    let server = config.roots.iter().fold(server, |b, r| b.schema_dir(r));
    let server = config.imports.iter().fold(server, |b, d| b.import_dir(d));
    let server = config.stubs.iter().fold(server, |b, d| b.stubs(d));
    let server = config.exclude.iter().fold(server, |b, g| b.exclude(g)).build()?;
    let snap = server.snapshot();
    if let Some(path) = &config.descriptor_set_out {
        std::fs::write(path, snap.schema().encode_with_source_info())
            .map_err(|source| Error::io(format!("cannot write '{}'", path.display()), source))?;
    }
    let mut out = format!(
        "{} file(s), {} service(s), {} method(s)\n",
        snap.schema().files().len(),
        snap.services().len(),
        snap.method_count()
    );
    for line in snap.describe_routes() {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    if !snap.problems().is_empty() {
        // Bad stubs fail the check (exit 1), with the routes above for context.
        return Err(Error::stubs(format!(
            "{out}{} stub problem(s):\n{}",
            snap.problems().len(),
            schema::diagnostic::render(snap.problems())
        )));
    }
    Ok(out)
}

/// What answers each method, at startup: listed when there are few, else
/// counted by responder (`check` lists them all; `RUST_LOG=debug` logs them).
fn log_routes(snap: &Snapshot) {
    const LISTED: usize = 64;
    let routes = snap.describe_routes();
    if routes.len() <= LISTED {
        tracing::info!("what answers each method:\n  {}", routes.join("\n  "));
        return;
    }
    let mut by: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in snap.routes.values() {
        *by.entry(r.responder.responder()).or_default() += 1;
    }
    let counts: Vec<String> = by.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    tracing::info!("what answers the {} methods: {} (`protoserve check` lists each)", routes.len(), counts.join(", "));
    tracing::debug!("what answers each method:\n  {}", routes.join("\n  "));
}
