//! The live schema: an immutable [`Snapshot`] (pool, routes, handlers, validator,
//! reflection) behind an [`ArcSwap`]. Each RPC loads the snapshot once and keeps
//! that `Arc` to its end; a reload builds a complete new snapshot off the serving
//! path and publishes it with one atomic store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use prost_protovalidate::Validator;
use tokio::sync::watch;
use tonic_health::pb::health_check_response::ServingStatus;

pub(crate) use crate::call::Route;
use crate::call::{CallSchema, Kind};
pub use crate::error::BuildError;
use crate::health::HealthState;
use crate::responder::{self, Responder};
use crate::schema::Schema;
use crate::validate::Validation;

/// Everything one generation of the schema needs to serve RPCs.
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) schema: Schema,
    /// By path; looked up once per RPC, hence the fast hasher.
    pub(crate) routes: HashMap<Box<str>, Arc<Route>, foldhash::fast::RandomState>,
    pub(crate) validator: Validator,
    /// Problems of this generation's stubs (those stubs are left out).
    pub(crate) problems: Vec<crate::schema::Problem>,
    /// Fingerprint of what the responders read besides the schema (stub files).
    pub(crate) inputs: u64,
    /// The stubs serving in this generation (for the admin API).
    pub(crate) stubs: Vec<Arc<responder::stub::Stub>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The generation number: 1 for the schema loaded at startup, +1 per reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The compiled schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Full names of the services served.
    pub fn services(&self) -> Vec<String> {
        self.schema.pool().services().map(|s| s.full_name().to_owned()).collect()
    }

    /// Number of methods served.
    pub fn method_count(&self) -> usize {
        self.routes.len()
    }

    /// Problems found in the stubs checked against this schema (those stubs
    /// are disabled; the others serve).
    pub fn problems(&self) -> &[crate::schema::Problem] {
        &self.problems
    }

    /// Logs the stub problems of this generation (startup and each reload).
    pub(crate) fn log_problems(&self) {
        if !self.problems.is_empty() {
            tracing::warn!(
                "{} stub problem(s); those stubs are disabled, the others serve:\n{}",
                self.problems.len(),
                crate::schema::diagnostic::render(&self.problems)
            );
        }
    }

    /// One line per method: path, kind and what answers it.
    pub fn describe_routes(&self) -> Vec<String> {
        let mut v: Vec<_> = self
            .routes
            .values()
            .map(|r| format!("{}  [{}] {}", r.path, r.kind.name(), r.responder.describe()))
            .collect();
        v.sort();
        v
    }
}

/// Owns the live snapshot, the responder chain (handlers registered by code, the
/// store, which outlive reloads) and health statuses.
pub(crate) struct Registry {
    live: ArcSwap<Snapshot>,
    chain: Vec<Arc<dyn Responder>>,
    health: HealthState,
    next_generation: AtomicU64,
    generations: watch::Sender<u64>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("live", &self.live.load().generation).finish_non_exhaustive()
    }
}

/// Normalises `pkg.Service/Method` or `/pkg.Service/Method` to the HTTP path form.
pub(crate) fn method_path(name: &str) -> String {
    if name.starts_with('/') { name.to_owned() } else { format!("/{name}") }
}

impl Registry {
    /// Builds the first snapshot. Handlers are keyed by path (`/pkg.Service/Method`).
    pub(crate) fn new(schema: Schema, chain: Vec<Arc<dyn Responder>>, health: HealthState) -> Result<Self, BuildError> {
        let first = build_snapshot(schema, &chain, 1)?;
        for r in &chain {
            r.unmatched(&|path| first.routes.contains_key(path));
        }
        let (generations, _) = watch::channel(1);
        Ok(Self { live: ArcSwap::from_pointee(first), chain, health, next_generation: AtomicU64::new(2), generations })
    }

    /// The live snapshot (one atomic load and a reference-count bump).
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Builds a snapshot for `schema` without publishing it.
    pub(crate) fn prepare(&self, schema: Schema) -> Result<Snapshot, BuildError> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        build_snapshot(schema, &self.chain, generation)
    }

    /// Publishes a complete snapshot and updates health to match its services.
    pub(crate) async fn publish(&self, next: Snapshot) -> Arc<Snapshot> {
        let next = Arc::new(next);
        let old = self.live.swap(next.clone());
        let new_services = next.services();
        for s in old.services() {
            if !new_services.contains(&s) {
                // Watchers of a removed service learn it is gone.
                self.health.set(&s, ServingStatus::ServiceUnknown);
            }
        }
        self.set_health(&next);
        self.generations.send_replace(next.generation);
        next
    }

    /// Marks `""` and every served service SERVING.
    pub(crate) fn set_health(&self, snap: &Snapshot) {
        self.health.set("", ServingStatus::Serving);
        for s in snap.services() {
            self.health.set(&s, ServingStatus::Serving);
        }
    }

    /// Marks everything NOT_SERVING (used when draining for shutdown).
    pub(crate) fn set_not_serving(&self) {
        self.health.set("", ServingStatus::NotServing);
        for s in self.load().services() {
            self.health.set(&s, ServingStatus::NotServing);
        }
    }

    /// Fingerprint of what the responders read from disk now (stub files).
    pub(crate) fn inputs(&self) -> u64 {
        self.chain.iter().fold(0u64, |h, r| h.rotate_left(5) ^ r.inputs())
    }

    /// Directories the responders read from (stub directories), to watch.
    pub(crate) fn watch_dirs(&self) -> Vec<std::path::PathBuf> {
        self.chain.iter().flat_map(|r| r.watch_dirs()).collect()
    }

    /// Observes generation numbers as snapshots go live.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generations.subscribe()
    }
}

fn build_snapshot(schema: Schema, chain: &[Arc<dyn Responder>], generation: u64) -> Result<Snapshot, BuildError> {
    // Responders that depend on the schema (stubs) are prepared for this one.
    let chain: Vec<Arc<dyn Responder>> =
        chain.iter().map(|r| r.for_schema(&schema).unwrap_or_else(|| r.clone())).collect();
    let problems = chain.iter().flat_map(|r| r.problems()).collect();
    let stubs = chain.iter().flat_map(|r| r.stubs()).collect();
    let inputs = chain.iter().fold(0u64, |h, r| h.rotate_left(5) ^ r.inputs());
    let chain = &chain[..];
    let mut routes = HashMap::default();
    for service in schema.pool().services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let responder = responder::resolve(chain, &method)?;
            let route = Route {
                path: Arc::from(path.as_str()),
                kind: Kind::of(&method),
                validation: Validation::of(&method.input()),
                method,
                responder,
            };
            routes.insert(path.into_boxed_str(), Arc::new(route));
        }
    }
    Ok(Snapshot { generation, schema, routes, validator: Validator::new(), problems, inputs, stubs })
}

impl CallSchema for Snapshot {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn validator(&self) -> &Validator {
        &self.validator
    }
}
