//! Hot reload: watch the schema roots (notify + a ~100 ms debouncer), compile the
//! candidate off the serving path, build a complete snapshot, check it against
//! the live one, and swap it in atomically — or keep serving the old one.
//!
//! Only this module publishes snapshots after startup. A schema that fails to
//! compile (or, with `--on-breaking reject`, breaks wire compatibility) never goes
//! live; the next edit is tried again from scratch.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::schema::Schema;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::{Mutex, mpsc, watch};

mod diff;

pub use diff::SchemaDiff;

use crate::compat::{self, Finding};
use crate::registry::{BuildError, Registry, Snapshot};
use crate::schema::{self, LoadOptions, SchemaError};

/// How long the watcher waits for a burst of file events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What to do when a candidate schema has breaking wire changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBreaking {
    /// Log the findings and go live anyway.
    #[default]
    Warn,
    /// Log the findings and keep the live schema.
    Reject,
}

/// A wire-compatibility check between the live schema and a candidate: the findings
/// (the candidate is breaking when [`compat::is_breaking`] says so). Pure:
/// descriptors in, findings out (a schema's source info, for locations, is
/// [`Schema::source_info`]).
pub type CompatCheck = Arc<dyn Fn(&Schema, &Schema) -> Vec<Finding> + Send + Sync>;

/// Why a reload did not go live.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The candidate did not compile.
    #[error("{}; still serving generation {live}:\n{}", compile_headline(error), error.render())]
    Compile {
        /// The compiler's diagnostic.
        error: SchemaError,
        /// The generation still serving.
        live: u64,
    },
    /// The candidate compiled but handlers do not fit it.
    #[error("schema rejected; still serving generation {live}: {error}")]
    Build {
        /// What did not fit.
        error: BuildError,
        /// The generation still serving.
        live: u64,
    },
    /// A file that had content is empty now: caught between the truncate and
    /// the write of an in-place save. The write that follows reloads again.
    #[error("'{file}' is empty (being written?); still serving generation {live} until it has content")]
    NotReady {
        /// The file's name.
        file: String,
        /// The generation still serving.
        live: u64,
    },
    /// `--on-breaking reject` and a schema edit (stub files unchanged) would
    /// disable stubs that work with the live schema.
    #[error(
        "schema rejected: it breaks stubs that work now ({count} problem(s); --on-breaking reject); \
         still serving generation {live}:\n{report}\n\
         fix the stubs, or send SIGUSR1 (kill -USR1 {}) / call ReloadHandle::accept_breaking() to accept the edit once",
        std::process::id()
    )]
    BreaksStubs {
        /// How many problems the stubs would have (one or more per stub).
        count: usize,
        /// Their diagnostics against the candidate schema.
        report: String,
        /// The generation still serving.
        live: u64,
    },
    /// `--on-breaking reject` and the candidate breaks wire compatibility.
    #[error(
        "schema rejected for breaking wire compatibility; still serving generation {live}:\n{}\n\
         to accept this edit as it is, send SIGUSR1 (kill -USR1 {}) or call ReloadHandle::accept_breaking(); \
         it goes live once, later edits are checked again",
        compat::render_text(findings),
        std::process::id()
    )]
    Breaking {
        /// What the compat check found (errors and warnings).
        findings: Vec<Finding>,
        /// The generation still serving.
        live: u64,
    },
}

fn compile_headline(e: &SchemaError) -> &'static str {
    match e {
        SchemaError::NoFiles { .. } => "no .proto files to serve",
        e if e.is_io() => "cannot load the schema",
        _ => "schema does not compile",
    }
}

impl ReloadError {
    /// The compile error, when that is why the reload failed.
    pub fn schema_error(&self) -> Option<&SchemaError> {
        match self {
            ReloadError::Compile { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The generation now live (unchanged when the schema was identical).
    pub generation: u64,
    /// What changed; empty when the compiled schema is identical to the live one.
    pub diff: SchemaDiff,
    /// Time spent compiling (same as `phases.compile`).
    pub compile: Duration,
    /// Time spent building and publishing the snapshot (`phases.build + phases.swap`).
    pub swap: Duration,
    /// Every phase's time.
    pub phases: Phases,
}

/// The result of one reload attempt, published on [`ReloadHandle::outcomes`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which attempt this was: 1 for the first reload after startup, +1 per
    /// attempt (watcher, SIGHUP or [`ReloadHandle::reload`]), successful or not.
    /// 0 stands for the startup load, before any reload was attempted.
    pub attempt: u64,
    /// The generation live once the attempt was over.
    pub generation: u64,
    /// What the attempt did, or why nothing went live.
    pub result: Result<Reloaded, Arc<ReloadError>>,
}

impl Outcome {
    /// The error, when the attempt did not go live.
    pub fn error(&self) -> Option<&ReloadError> {
        self.result.as_ref().err().map(|e| &**e)
    }
}

/// Drives reloads for a running server: from the file watcher, SIGHUP or Rust code.
#[derive(Clone)]
pub struct ReloadHandle {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    load: LoadOptions,
    on_breaking: OnBreaking,
    compat: Option<CompatCheck>,
    /// One reload at a time; held across the compile, never on the RPC path.
    /// Guards the attempt counter.
    running: Mutex<u64>,
    /// The latest attempt's outcome.
    outcomes: watch::Sender<Outcome>,
}

impl fmt::Debug for ReloadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadHandle").field("roots", &self.inner.load.roots).finish_non_exhaustive()
    }
}

impl ReloadHandle {
    pub(crate) fn new(
        registry: Arc<Registry>,
        load: LoadOptions,
        on_breaking: OnBreaking,
        compat: Option<CompatCheck>,
    ) -> Self {
        let generation = registry.load().generation();
        let startup = Outcome {
            attempt: 0,
            generation,
            result: Ok(Reloaded {
                generation,
                diff: SchemaDiff::default(),
                compile: Duration::ZERO,
                swap: Duration::ZERO,
                phases: Phases::default(),
            }),
        };
        let (outcomes, _) = watch::channel(startup);
        Self { inner: Arc::new(Inner { registry, load, on_breaking, compat, running: Mutex::new(0), outcomes }) }
    }

    /// The generation live now.
    pub fn generation(&self) -> u64 {
        self.inner.registry.load().generation()
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.registry.load()
    }

    /// Observes the live generation number as snapshots go live.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.inner.registry.subscribe()
    }

    /// Waits until generation `n` (or a later one) is live.
    pub async fn wait_for_generation(&self, n: u64) {
        let mut rx = self.generations();
        let _ = rx.wait_for(|g| *g >= n).await;
    }

    /// Observes the outcome of every reload attempt, failed ones included; starts
    /// with the startup load (attempt 0). Lets callers wait for "attempt N failed
    /// with error E" instead of guessing how long a watcher takes.
    pub fn outcomes(&self) -> watch::Receiver<Outcome> {
        self.inner.outcomes.subscribe()
    }

    /// The latest attempt's outcome.
    pub fn last_outcome(&self) -> Outcome {
        self.inner.outcomes.borrow().clone()
    }

    /// Waits until an attempt after `after` is over and returns its outcome
    /// (the latest one, if several finished meanwhile).
    pub async fn wait_for_attempt_after(&self, after: u64) -> Outcome {
        let mut rx = self.outcomes();
        match rx.wait_for(|o| o.attempt > after).await {
            Ok(o) => o.clone(),
            // The sender lives as long as this handle: unreachable, but not worth a panic.
            Err(_) => self.last_outcome(),
        }
    }

    /// Recompiles the schema roots and, if the result is good, makes it live.
    /// Logs one line either way and publishes the outcome on [`Self::outcomes`].
    pub async fn reload(&self) -> Result<Reloaded, Arc<ReloadError>> {
        self.reload_gated(true).await
    }

    /// Like [`Self::reload`], but a candidate with breaking wire changes goes live
    /// even under [`OnBreaking::Reject`]: the way to accept an intentional breaking
    /// edit without a restart (`protoserve serve` does this on SIGUSR1).
    pub async fn accept_breaking(&self) -> Result<Reloaded, Arc<ReloadError>> {
        self.reload_gated(false).await
    }

    async fn reload_gated(&self, gate: bool) -> Result<Reloaded, Arc<ReloadError>> {
        let mut attempts = self.inner.running.lock().await;
        *attempts += 1;
        let attempt = *attempts;
        let started = Instant::now();
        // Compiling, diffing, the compat check and building the snapshot are all
        // CPU work (seconds on a large schema): none of it runs on the threads
        // serving RPCs. Only the swap itself happens here.
        let inner = self.inner.clone();
        let live_gen = self.inner.registry.load().generation();
        let (mut phases, prepared) =
            tokio::task::spawn_blocking(move || prepare(&inner, gate)).await.unwrap_or_else(|e| {
                let error = BuildError::Internal(e);
                (Phases::default(), Err(ReloadError::Build { error, live: live_gen }))
            });
        let result = match prepared {
            Ok(Prepared::Unchanged { generation, diff }) => {
                Ok(Reloaded { generation, diff, compile: phases.compile, swap: Duration::ZERO, phases })
            }
            Ok(Prepared::Ready { snapshot, diff }) => {
                let swap_started = Instant::now();
                snapshot.log_problems();
                let published = self.inner.registry.publish(*snapshot).await;
                phases.swap = swap_started.elapsed();
                Ok(Reloaded {
                    generation: published.generation(),
                    diff,
                    compile: phases.compile,
                    swap: phases.build + phases.swap,
                    phases,
                })
            }
            Err(e) => Err(Arc::new(e)),
        };
        let total = started.elapsed();
        match &result {
            Ok(r) if r.diff.is_empty() => {
                tracing::info!(
                    "reload: schema unchanged, generation {} still live ({phases}; total {total:.1?})",
                    r.generation
                );
            }
            Ok(r) => {
                tracing::info!("reload: generation {} live: {} ({phases}; total {total:.1?})", r.generation, r.diff)
            }
            Err(e) if matches!(**e, ReloadError::NotReady { .. }) => {
                tracing::warn!("reload: {e} ({phases}; total {total:.1?})");
            }
            Err(e) => tracing::error!("reload failed ({phases}; total {total:.1?}): {e}"),
        }
        let generation = self.inner.registry.load().generation();
        self.inner.outcomes.send_replace(Outcome { attempt, generation, result: result.clone() });
        result
    }

    /// Applies `edit` (a change of what the responders read: runtime stubs)
    /// and makes a snapshot of the live schema with it live, without
    /// compiling the protos again. Serialised with reloads, so a reload
    /// running meanwhile cannot lose the edit (responders keep it and every
    /// later snapshot reads it). `edit` sees the live snapshot and returns an
    /// undo, run when the snapshot cannot be built. Returns `edit`'s value and
    /// the generation now live.
    pub(crate) async fn edit_responders<T, E>(
        &self,
        edit: impl FnOnce(&Snapshot) -> Result<(T, Box<dyn FnOnce() + Send>), E> + Send + 'static,
    ) -> Result<Result<(T, u64), E>, BuildError>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let _running = self.inner.running.lock().await;
        let registry = self.inner.registry.clone();
        let built = tokio::task::spawn_blocking(move || {
            let live = registry.load();
            let (value, undo) = match edit(&live) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            match registry.prepare(live.schema().clone()) {
                Ok(snapshot) => Ok(Ok((value, snapshot))),
                Err(e) => {
                    undo();
                    Err(e)
                }
            }
        })
        .await
        .map_err(BuildError::Internal)??;
        let (value, snapshot) = match built {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let published = self.inner.registry.publish(snapshot).await;
        tracing::info!("stubs edited: generation {} live ({} stub(s))", published.generation(), published.stubs.len());
        Ok(Ok((value, published.generation())))
    }

    /// Watches the roots and reloads after each burst of changes, until the
    /// returned guard is dropped. Must be called inside a tokio runtime.
    pub fn watch(&self) -> Result<WatchGuard, notify::Error> {
        Ok(self.start_watching()?.run(self.clone()))
    }

    /// Starts the file watcher without a runtime; events queue until
    /// [`Watcher::run`] consumes them, so no edit made in between is missed.
    ///
    /// Each directory root is watched recursively, and its parent directory
    /// non-recursively, so that a root deleted and created again (a folder
    /// regenerated by a build step) is seen and watched anew. A file root is
    /// watched through its directory (editors replace files on save).
    pub(crate) fn start_watching(&self) -> Result<Watcher, notify::Error> {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        // Stub directories are watched too: one reload rebuilds schema and stubs.
        let stub_dirs = self.inner.registry.watch_dirs();
        let roots: Vec<Root> = self
            .inner
            .load
            .roots
            .iter()
            .chain(&self.inner.load.imports)
            .chain(&stub_dirs)
            .map(|p| Root::new(p))
            .collect();
        let scopes: Vec<PathBuf> = roots.iter().map(|r| r.scope.clone()).collect();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| match res {
            Ok(events) => {
                // Opening and reading files (as every compile does) is not a change:
                // reacting to access events would reload forever. Events from a
                // root's parent about its siblings are not ours either.
                let changed = events
                    .iter()
                    .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                    .any(|e| e.paths.iter().any(|p| is_relevant(p) && scopes.iter().any(|s| p.starts_with(s))));
                if changed {
                    let _ = tx.send(());
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "file watcher error");
                }
            }
        })?;
        let mut watcher = Watcher { debouncer: Arc::new(std::sync::Mutex::new(None)), roots, rx };
        for root in &mut watcher.roots {
            if let Some(parent) = &root.parent {
                // Best effort: without it a deleted root is not seen coming back.
                if let Err(e) = debouncer.watch(parent, RecursiveMode::NonRecursive) {
                    tracing::debug!(error = %e, dir = %parent.display(), "cannot watch a root's parent");
                }
            }
            root.arm(&mut debouncer)?;
        }
        watcher.debouncer = Arc::new(std::sync::Mutex::new(Some(debouncer)));
        Ok(watcher)
    }
}

type Debouncer = notify_debouncer_full::Debouncer<notify::RecommendedWatcher, notify_debouncer_full::RecommendedCache>;

/// One watched root.
struct Root {
    /// The root, absolute.
    path: PathBuf,
    /// Paths under here are relevant (the root, or a file root's directory).
    scope: PathBuf,
    /// Watched non-recursively to see the root deleted and created again.
    parent: Option<PathBuf>,
    /// Identity of the directory the recursive watch is on (None: not armed).
    armed: Option<DirId>,
}

/// (device, inode) on Unix; elsewhere only "exists".
type DirId = (u64, u64);

fn dir_id(path: &Path) -> Option<DirId> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0))
    }
}

impl Root {
    fn new(path: &Path) -> Root {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let is_file = path.extension().is_some_and(|e| e == "proto") && !path.is_dir();
        let dir = path.parent().map(Path::to_path_buf);
        let (scope, parent) = if is_file { (dir.unwrap_or_else(|| path.clone()), None) } else { (path.clone(), dir) };
        Root { path, scope, parent, armed: None }
    }

    /// (Re)starts the recursive watch when the root exists and is not the
    /// directory already watched. A missing root is not an error: it is armed
    /// when it comes back.
    fn arm(&mut self, debouncer: &mut Debouncer) -> Result<(), notify::Error> {
        let now = dir_id(&self.scope);
        if now.is_none() || now == self.armed {
            if now.is_none() {
                self.armed = None;
            }
            return Ok(());
        }
        // A stale watch on a deleted directory may still be registered.
        let _ = debouncer.unwatch(&self.scope);
        let mode = if self.scope == self.path { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        debouncer.watch(&self.scope, mode)?;
        self.armed = now;
        Ok(())
    }
}

/// How long each phase of a reload took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Reading and compiling the files.
    pub compile: Duration,
    /// Comparing the candidate with the live schema.
    pub diff: Duration,
    /// The wire-compatibility check.
    pub check: Duration,
    /// Building the snapshot (routes, handlers, validator, reflection).
    pub build: Duration,
    /// Publishing it (the atomic swap and health updates).
    pub swap: Duration,
}

impl fmt::Display for Phases {
    /// `compile 3.8ms, diff 0.2ms, check 1.1ms, build 2.0ms, swap 15µs`, leaving
    /// out the phases that did not run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, d) in [
            ("compile", self.compile),
            ("diff", self.diff),
            ("check", self.check),
            ("build", self.build),
            ("swap", self.swap),
        ] {
            if d.is_zero() && name != "compile" {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name} {d:.1?}")?;
        }
        Ok(())
    }
}

/// What the blocking part of a reload produced.
enum Prepared {
    Unchanged { generation: u64, diff: SchemaDiff },
    Ready { snapshot: Box<Snapshot>, diff: SchemaDiff },
}

/// The blocking part of a reload: compile, diff, check, build. Runs on a
/// blocking thread; times every phase.
fn prepare(inner: &Inner, gate: bool) -> (Phases, Result<Prepared, ReloadError>) {
    let mut phases = Phases::default();
    let result = prepare_timed(inner, gate, &mut phases);
    (phases, result)
}

fn prepare_timed(inner: &Inner, gate: bool, phases: &mut Phases) -> Result<Prepared, ReloadError> {
    let live = inner.registry.load();
    let live_gen = live.generation();
    let t = Instant::now();
    let compiled = schema::load_with(&inner.load);
    phases.compile = t.elapsed();
    let schema = compiled.map_err(|error| ReloadError::Compile { error, live: live_gen })?;
    // Saved in place (truncate, then write): a file caught empty is not the
    // user's schema yet. Wait for the write that follows.
    if let Some(file) = schema
        .blank_files()
        .iter()
        .find(|f| live.schema().files().contains(f) && !live.schema().blank_files().contains(f))
    {
        return Err(ReloadError::NotReady { file: file.clone(), live: live_gen });
    }
    let t = Instant::now();
    let diff = SchemaDiff::between(live.schema().pool(), schema.pool());
    phases.diff = t.elapsed();
    if diff.is_empty() && live.schema().files() == schema.files() && inner.registry.inputs() == live.inputs {
        return Ok(Prepared::Unchanged { generation: live_gen, diff });
    }
    if let Some(check) = &inner.compat {
        let t = Instant::now();
        let findings = check(live.schema(), &schema);
        phases.check = t.elapsed();
        if compat::is_breaking(&findings) {
            match inner.on_breaking {
                OnBreaking::Reject if gate => return Err(ReloadError::Breaking { findings, live: live_gen }),
                OnBreaking::Reject => tracing::warn!(
                    "reload: candidate breaks wire compatibility; going live as asked (accept_breaking / SIGUSR1):\n{}",
                    compat::render_text(&findings)
                ),
                OnBreaking::Warn => tracing::warn!(
                    "reload: candidate breaks wire compatibility (going live, --on-breaking warn):\n{}",
                    compat::render_text(&findings)
                ),
            }
        } else if !findings.is_empty() {
            tracing::info!("reload: compatibility notes:\n{}", compat::render_text(&findings));
        }
    }
    let t = Instant::now();
    let built = inner.registry.prepare(schema);
    phases.build = t.elapsed();
    let snapshot = built.map_err(|error| ReloadError::Build { error, live: live_gen })?;
    // A proto edit (stub files as they were) that disables stubs working now is
    // a breaking edit for their users: reported, and refused under `reject`.
    if snapshot.inputs == live.inputs {
        let was: Vec<String> = live.problems.iter().map(|p| p.to_string()).collect();
        let broken: Vec<_> = snapshot.problems.iter().filter(|p| !was.contains(&p.to_string())).cloned().collect();
        if !broken.is_empty() {
            let report = crate::schema::diagnostic::render(&broken);
            if inner.on_breaking == OnBreaking::Reject && gate {
                return Err(ReloadError::BreaksStubs { count: broken.len(), report, live: live_gen });
            }
            tracing::warn!("reload: this schema edit breaks stubs that worked:\n{report}");
        }
    }
    Ok(Prepared::Ready { snapshot: Box::new(snapshot), diff })
}

/// Reloads on SIGHUP, and on SIGUSR1 reloads accepting breaking changes, until
/// the task is aborted.
pub(crate) fn on_signals(handle: ReloadHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut hup), Ok(mut usr1)) = (signal(SignalKind::hangup()), signal(SignalKind::user_defined1()))
            else {
                tracing::warn!("cannot listen for SIGHUP/SIGUSR1; reload by editing the files");
                return;
            };
            loop {
                tokio::select! {
                    Some(()) = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the schema");
                        let _ = handle.reload().await;
                    }
                    Some(()) = usr1.recv() => {
                        tracing::info!("SIGUSR1: reloading the schema, accepting breaking changes once");
                        let _ = handle.accept_breaking().await;
                    }
                    else => break,
                }
            }
        }
        #[cfg(not(unix))]
        drop(handle);
    })
}

/// A running file watcher whose events have not been hooked to reloads yet.
pub(crate) struct Watcher {
    /// Shared with the reload task, which re-arms roots that came back.
    debouncer: Arc<std::sync::Mutex<Option<Debouncer>>>,
    roots: Vec<Root>,
    rx: mpsc::UnboundedReceiver<()>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watcher")
    }
}

impl Watcher {
    /// Reloads through `handle` after each burst of events, re-arming any root
    /// that was deleted and created again first.
    pub(crate) fn run(self, handle: ReloadHandle) -> WatchGuard {
        let Watcher { debouncer, roots, mut rx } = self;
        let shared = debouncer.clone();
        let task = tokio::spawn(async move {
            let mut roots = roots;
            while rx.recv().await.is_some() {
                // Coalesce whatever else arrived while we were reloading.
                while rx.try_recv().is_ok() {}
                // Watching walks the tree: blocking work, off the async workers.
                let d = shared.clone();
                roots = tokio::task::spawn_blocking(move || {
                    if let Ok(mut guard) = d.lock()
                        && let Some(debouncer) = guard.as_mut()
                    {
                        for root in &mut roots {
                            let was = root.armed;
                            match root.arm(debouncer) {
                                Ok(()) if root.armed.is_some() && root.armed != was => {
                                    tracing::info!(root = %root.path.display(), "schema root was recreated; watching it again");
                                }
                                Ok(()) => {}
                                Err(e) => tracing::warn!(error = %e, root = %root.path.display(), "cannot watch the schema root"),
                            }
                        }
                    }
                    roots
                })
                .await
                .unwrap_or_default();
                let _ = handle.reload().await;
            }
        });
        WatchGuard { _debouncer: debouncer, task }
    }
}

/// Keeps the file watcher running; dropping it stops watching.
pub struct WatchGuard {
    _debouncer: Arc<std::sync::Mutex<Option<Debouncer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchGuard")
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Editor droppings (swap files, backups) do not trigger reloads; anything else
/// under a root may change the schema (a `.proto`, or a folder holding some).
fn is_relevant(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return true };
    !(name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || name == "4913")
}
