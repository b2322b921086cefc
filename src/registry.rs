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
use prost_reflect::MethodDescriptor;
use tokio::sync::watch;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::handler::store::{Convention, SharedStore};
use crate::handler::{Handler, Kind};
use crate::health::HealthState;
use crate::reflection::Reflection;
use crate::schema::Schema;
use crate::validate::Validation;

/// How a route answers.
#[derive(Debug)]
pub(crate) enum Target {
    /// A handler registered by Rust code.
    Handler(Handler),
    /// A resource-store convention.
    Store(Box<Convention>),
    /// Nothing serves this method; the message says how to serve it.
    Unimplemented(String),
}

/// One method of the live schema, resolved once per schema.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) path: Arc<str>,
    pub(crate) method: MethodDescriptor,
    pub(crate) kind: Kind,
    pub(crate) target: Target,
    /// How requests are checked against their `buf.validate` rules.
    pub(crate) validation: Validation,
}

/// Everything one generation of the schema needs to serve RPCs.
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) schema: Schema,
    /// By path; looked up once per RPC, hence the fast hasher.
    pub(crate) routes: HashMap<Box<str>, Arc<Route>, foldhash::fast::RandomState>,
    pub(crate) validator: Validator,
    /// Built on the first reflection request: most RPCs never need it, and it
    /// costs memory and reload time.
    reflection: std::sync::OnceLock<Result<Reflection, String>>,
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

    /// Reflection for this schema, built on first use.
    pub(crate) fn reflection(&self) -> Result<&Reflection, &str> {
        self.reflection.get_or_init(|| Reflection::new(self.schema.pool())).as_ref().map_err(String::as_str)
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

    /// One line per method: path, kind and what answers it.
    pub fn describe_routes(&self) -> Vec<String> {
        let mut v: Vec<_> = self
            .routes
            .values()
            .map(|r| {
                let by = match &r.target {
                    Target::Handler(_) => "registered handler".to_owned(),
                    Target::Store(p) => p.describe(),
                    Target::Unimplemented(_) => "UNIMPLEMENTED (no handler, no convention)".to_owned(),
                };
                format!("{}  [{}] {}", r.path, r.kind.name(), by)
            })
            .collect();
        v.sort();
        v
    }
}

/// Why a snapshot could not be built from a compiled schema.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A registered handler's kind does not match the method's.
    #[error("handler for {path} is {handler} but the method is {method}")]
    KindMismatch {
        /// The method path.
        path: String,
        /// What the handler answers.
        handler: &'static str,
        /// What the method is.
        method: &'static str,
    },
    /// Building the snapshot failed unexpectedly (a bug; the live schema is kept).
    #[error("building the snapshot failed: {0}")]
    Internal(String),
}

/// Owns the live snapshot, the handlers registered by code, the store (which
/// outlives reloads) and health statuses.
pub(crate) struct Registry {
    live: ArcSwap<Snapshot>,
    handlers: HashMap<String, Handler>,
    pub(crate) store: SharedStore,
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
    pub(crate) fn new(
        schema: Schema,
        handlers: HashMap<String, Handler>,
        store: SharedStore,
        health: HealthState,
    ) -> Result<Self, BuildError> {
        let first = build_snapshot(schema, &handlers, 1)?;
        for path in handlers.keys() {
            if !first.routes.contains_key(path.as_str()) {
                tracing::warn!(%path, "a handler is registered for a method the schema does not have");
            }
        }
        let (generations, _) = watch::channel(1);
        Ok(Self {
            live: ArcSwap::from_pointee(first),
            handlers,
            store,
            health,
            next_generation: AtomicU64::new(2),
            generations,
        })
    }

    /// The live snapshot (one atomic load and a reference-count bump).
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Builds a snapshot for `schema` without publishing it.
    pub(crate) fn prepare(&self, schema: Schema) -> Result<Snapshot, BuildError> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        build_snapshot(schema, &self.handlers, generation)
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

    /// Observes generation numbers as snapshots go live.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generations.subscribe()
    }
}

fn build_snapshot(
    schema: Schema,
    handlers: &HashMap<String, Handler>,
    generation: u64,
) -> Result<Snapshot, BuildError> {
    let mut routes = HashMap::default();
    for service in schema.pool().services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let kind = Kind::of(&method);
            let target = match handlers.get(&path) {
                Some(h) if h.kind() == kind => Target::Handler(h.clone()),
                Some(h) => {
                    return Err(BuildError::KindMismatch { path, handler: h.kind().name(), method: kind.name() });
                }
                None => match Convention::resolve(&method) {
                    Some(conv) => Target::Store(Box::new(conv)),
                    None => Target::Unimplemented(format!(
                        "{} is not implemented: no handler is registered for it and its name \
                         follows no resource-store convention (Create/Get/List/Update/Delete/BulkCreate<X>); \
                         register a handler for \"{}\" in Rust",
                        &path[1..],
                        &path[1..]
                    )),
                },
            };
            let validation = Validation::of(&method.input());
            let route = Route { path: Arc::from(path.as_str()), method, kind, target, validation };
            routes.insert(path.into_boxed_str(), Arc::new(route));
        }
    }
    Ok(Snapshot { generation, schema, routes, validator: Validator::new(), reflection: std::sync::OnceLock::new() })
}
