//! What answers a method: a chain of [`Responder`]s, resolved once per snapshot.
//!
//! For every method of a new schema the registry asks each responder in order
//! (registered handler > stub > resource store) whether it answers it; the
//! first that does is the route's [`Respond`]. A method nobody answers gets
//! [`Unimplemented`], whose message says how to serve it. A new responder joins
//! by implementing [`Responder`] and adding one line to [`chain`].

pub(crate) mod data;
pub(crate) mod handler;
pub(crate) mod store;
pub(crate) mod stub;

use std::fmt;
use std::sync::Arc;

use prost_reflect::MethodDescriptor;

use crate::Error;
pub(crate) use crate::call::Respond;
use crate::call::{CallRequest, Responding};
use crate::error::BuildError;

/// A kind of responder: decides, once per schema, which methods it answers.
pub(crate) trait Responder: Send + Sync + fmt::Debug {
    /// A short name: `handler`, `stub`, `store`.
    fn name(&self) -> &'static str;

    /// How this responder answers `method`, or `None` to leave it to the next.
    /// An error refuses the whole schema (e.g. a handler of the wrong kind).
    fn resolve(&self, method: &MethodDescriptor) -> Result<Option<Arc<dyn Respond>>, BuildError>;

    /// Why this responder does not answer `method` although it looked like one
    /// it would (for `check` and the UNIMPLEMENTED message); `None` otherwise.
    fn explain(&self, _method: &MethodDescriptor) -> Option<String> {
        None
    }

    /// Called once per schema with a lookup of the schema's paths, to warn about
    /// anything registered for a method the schema does not have.
    fn unmatched(&self, _routes: &dyn Fn(&str) -> bool) {}

    /// What answers for one schema, when that depends on the schema (stubs are
    /// read and checked against it); `None`: this responder as it is.
    fn for_schema(&self, _schema: &crate::schema::Schema) -> Option<Arc<dyn Responder>> {
        None
    }

    /// Problems found preparing for a schema (bad stubs, reported, left out).
    fn problems(&self) -> Vec<crate::schema::Problem> {
        Vec::new()
    }

    /// A fingerprint of what this responder reads from disk (0: nothing), so a
    /// reload with an unchanged schema still rebuilds when it changed.
    fn inputs(&self) -> u64 {
        0
    }

    /// The stubs serving in this schema (the stub responder), for the admin API.
    fn stubs(&self) -> Vec<Arc<stub::Stub>> {
        Vec::new()
    }

    /// Directories to watch besides the schema roots.
    fn watch_dirs(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

/// The chain in priority order. Adding a responder is one line here.
/// `max_send` is the reply size limit, which the store checks before it writes;
/// `max_call_buffer` bounds what one client-streaming store call may buffer;
/// `stubs` are where stubs come from (the stub responder falls back to the store).
pub(crate) fn chain(
    handlers: handler::Handlers,
    store: Arc<dyn crate::store::Store>,
    max_send: usize,
    max_call_buffer: usize,
    stubs: stub::Sources,
) -> Vec<Arc<dyn Responder>> {
    let store: Arc<dyn Responder> = Arc::new(store::StoreResponder::new(store, max_send, max_call_buffer));
    vec![Arc::new(handlers), Arc::new(stub::StubResponder::new(stubs, store.clone())), store]
}

/// Resolves `method` against the chain: the first responder that answers it,
/// else [`Unimplemented`] with an explanation.
pub(crate) fn resolve(chain: &[Arc<dyn Responder>], method: &MethodDescriptor) -> Result<Arc<dyn Respond>, BuildError> {
    for r in chain {
        if let Some(answer) = r.resolve(method)? {
            tracing::trace!(method = method.full_name(), responder = r.name(), "resolved");
            return Ok(answer);
        }
    }
    let why: Vec<String> =
        chain.iter().filter_map(|r| r.explain(method).map(|why| format!("{}: {why}", r.name()))).collect();
    Ok(Arc::new(Unimplemented::for_method(method, &why)))
}

/// The end of the chain: UNIMPLEMENTED, saying how to serve the method.
#[derive(Debug)]
pub(crate) struct Unimplemented {
    message: String,
    /// Why responders that nearly answered it did not (`store: ...`).
    why: String,
}

impl Unimplemented {
    fn for_method(method: &MethodDescriptor, why: &[String]) -> Self {
        let name = format!("{}/{}", method.parent_service().full_name(), method.name());
        let why = why.join("; ");
        let message = if why.is_empty() {
            format!(
                "{name} is not implemented: no handler is registered for it and its name \
                 follows no resource-store convention (Create/Get/List/Update/Delete/BulkCreate<X>); \
                 register a handler for \"{name}\" in Rust"
            )
        } else {
            format!(
                "{name} is not implemented: no handler is registered for it and no resource-store \
                 convention fits it ({why}); register a handler for \"{name}\" in Rust"
            )
        };
        Self { message, why }
    }
}

impl Respond for Unimplemented {
    fn responder(&self) -> &'static str {
        "UNIMPLEMENTED"
    }

    fn respond(&self, _call: CallRequest) -> Responding {
        Responding::Ready(Err(Error::unimplemented(self.message.clone())))
    }

    fn describe(&self) -> String {
        if self.why.is_empty() {
            "UNIMPLEMENTED (no handler, no convention)".to_owned()
        } else {
            format!("UNIMPLEMENTED (no handler; {})", self.why)
        }
    }
}
