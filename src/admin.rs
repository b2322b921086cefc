//! The admin API's operations, protocol-neutral: list, add, replace and
//! delete stubs at runtime, reset to the files, read and clear the request
//! journal, verify (count journaled calls matching a method and matcher),
//! unused stubs. `protocol::admin` serves them over HTTP/JSON.
//!
//! An edit is checked against the live schema exactly like a stub file
//! (diagnostics name `admin/N:line:col`); a bad one changes nothing. A good one
//! goes live as a new snapshot of the same schema (no proto compile),
//! serialised with reloads, before the operation returns.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::journal::Journal;
use crate::registry::Snapshot;
use crate::reload::ReloadHandle;
use crate::responder::stub::runtime::{self, Runtime};
use crate::responder::stub::{Query, Stub};
use crate::schema::Problem;

/// The largest request body the admin API reads (a stub text, a verify query).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The admin API's state: the runtime stub set and the journal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    reload: ReloadHandle,
    runtime: Arc<Runtime>,
    journal: Arc<Journal>,
}

/// Why an admin operation did nothing.
#[derive(Debug)]
pub enum AdminError {
    /// The input is wrong (HTTP 400): what, and the located problems.
    BadRequest(String, Vec<Problem>),
    /// No such stub (HTTP 404).
    NotFound(String),
    /// A stub with that id exists already (HTTP 409).
    Conflict(String),
    /// The snapshot could not be built (HTTP 500).
    Internal(String),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::BadRequest(m, problems) if !problems.is_empty() => {
                write!(f, "{m}:\n{}", crate::schema::diagnostic::render(problems))
            }
            AdminError::BadRequest(m, _)
            | AdminError::NotFound(m)
            | AdminError::Conflict(m)
            | AdminError::Internal(m) => f.write_str(m),
        }
    }
}

impl AdminError {
    /// The error as the admin API's JSON body: `error`, and `problems` (each
    /// with `message`, `line`, `column`, `source`, `help`) for a bad stub.
    pub fn to_json(&self) -> Value {
        let message = match self {
            AdminError::BadRequest(m, _)
            | AdminError::NotFound(m)
            | AdminError::Conflict(m)
            | AdminError::Internal(m) => m,
        };
        let mut body = json!({ "error": message });
        if let AdminError::BadRequest(_, problems) = self
            && !problems.is_empty()
        {
            body["problems"] = problems.iter().map(problem_json).collect();
        }
        body
    }
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "message": p.message,
        "source": p.position.as_ref().map(|at| at.path.clone()),
        "line": p.position.as_ref().map(|at| at.line),
        "column": p.position.as_ref().map(|at| at.column),
        "help": p.help,
        "text": p.to_string(),
    })
}

fn bad_stub(problems: Vec<Problem>) -> AdminError {
    let first = problems.first().map_or_else(String::new, |p| p.message.clone());
    AdminError::BadRequest(format!("the stub is not valid: {first}"), problems)
}

impl Admin {
    pub(crate) fn new(reload: ReloadHandle, runtime: Arc<Runtime>, journal: Arc<Journal>) -> Self {
        Admin { reload, runtime, journal }
    }

    /// How many calls the journal keeps.
    pub fn journal_size(&self) -> usize {
        self.journal.capacity()
    }

    /// Every stub serving now: id, method, where it comes from, its state;
    /// and the problems of the stubs left out (files that do not check).
    pub fn stubs(&self) -> Value {
        let snap = self.reload.snapshot();
        json!({
            "generation": snap.generation(),
            "stubs": snap.stubs.iter().map(|s| stub_json(s)).collect::<Vec<_>>(),
            "problems": snap.problems().iter().map(problem_json).collect::<Vec<_>>(),
        })
    }

    /// The stubs serving now that have answered no call since they went live
    /// (or since the last reset).
    pub fn unused(&self) -> Value {
        let snap = self.reload.snapshot();
        json!({
            "generation": snap.generation(),
            "stubs": snap.stubs.iter().filter(|s| s.answered() == 0).map(|s| stub_json(s)).collect::<Vec<_>>(),
        })
    }

    /// Adds the stubs of `text` (YAML or JSON: one stub or a list). Returns
    /// their ids and the generation serving them.
    pub async fn add(&self, text: String) -> Result<Value, AdminError> {
        let rt = self.runtime.clone();
        let (ids, generation) = self
            .edit(move |live| {
                let name = rt.next_name();
                let stubs = runtime::check(&name, &text, live.schema().pool(), None).map_err(bad_stub)?;
                let taken: HashSet<String> = live.stubs.iter().map(|s| s.id().into_owned()).collect();
                let mut seen = HashSet::new();
                for s in &stubs {
                    let id = s.id();
                    if taken.contains(&*id) || !seen.insert(id.clone()) {
                        return Err(AdminError::Conflict(format!(
                            "a stub with id `{id}` exists already (replace it with PUT /stubs/{{id}}, or choose another id)"
                        )));
                    }
                }
                let ids: Vec<String> = stubs.iter().map(|s| s.id().into_owned()).collect();
                let before = rt.state();
                rt.add(crate::schema::diagnostic::SourceText { display: name, text }, None);
                Ok((ids, undo(rt, before)))
            })
            .await?;
        Ok(json!({ "ids": ids, "generation": generation }))
    }

    /// Replaces the stub `id` (from a file or an earlier edit) with the one
    /// stub of `text`; a file stub stays replaced until a reset.
    pub async fn replace(&self, id: String, text: String) -> Result<Value, AdminError> {
        let rt = self.runtime.clone();
        let (id, generation) = self
            .edit(move |live| {
                if !live.stubs.iter().any(|s| *s.id() == *id) {
                    return Err(AdminError::NotFound(format!("no stub `{id}` is serving")));
                }
                let name = rt.next_name();
                runtime::check(&name, &text, live.schema().pool(), Some(&id)).map_err(bad_stub)?;
                let before = rt.state();
                rt.add(crate::schema::diagnostic::SourceText { display: name, text }, Some(id.clone()));
                Ok((id, undo(rt, before)))
            })
            .await?;
        Ok(json!({ "ids": [id], "generation": generation }))
    }

    /// Deletes the stub `id` (a file stub stays deleted until a reset).
    pub async fn delete(&self, id: String) -> Result<Value, AdminError> {
        let rt = self.runtime.clone();
        let (id, generation) = self
            .edit(move |live| {
                if !live.stubs.iter().any(|s| *s.id() == *id) {
                    return Err(AdminError::NotFound(format!("no stub `{id}` is serving")));
                }
                let before = rt.state();
                rt.delete(&id);
                Ok((id, undo(rt, before)))
            })
            .await?;
        Ok(json!({ "deleted": id, "generation": generation }))
    }

    /// Back to the files: runtime stubs, replacements and deletions dropped,
    /// stub counters and sequences restarted, the journal cleared.
    pub async fn reset(&self) -> Result<Value, AdminError> {
        let rt = self.runtime.clone();
        let ((), generation) = self
            .edit(move |_| {
                let before = rt.state();
                rt.reset();
                Ok(((), undo(rt, before)))
            })
            .await?;
        self.journal.clear();
        Ok(json!({ "generation": generation }))
    }

    /// The journal, oldest first: only calls of `method` when given
    /// (`pkg.Svc/Method`), the last `limit` of them.
    pub fn journal(&self, method: Option<&str>, limit: Option<usize>) -> Result<Value, AdminError> {
        let path = method.map(|m| self.path_of(m)).transpose()?;
        let entries = self.journal.entries(path.as_deref(), limit);
        Ok(json!({
            "size": self.journal.capacity(),
            "calls": entries.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
        }))
    }

    /// Forgets every call in the journal.
    pub fn clear_journal(&self) {
        self.journal.clear();
    }

    /// How many calls the journal holds of a method whose headers and
    /// requests match: `{"method": ..., "match": {...}}` (YAML or JSON;
    /// `match` as in a stub, optional).
    pub fn verify(&self, body: &str) -> Result<Value, AdminError> {
        let snap = self.reload.snapshot();
        let query = Query::parse("verify", body, snap.schema().pool()).map_err(|problems| {
            let first = problems.first().map_or_else(String::new, |p| p.message.clone());
            AdminError::BadRequest(format!("the verify query is not valid: {first}"), problems)
        })?;
        let count = self
            .journal
            .entries(Some(&query.path), None)
            .iter()
            .filter(|e| query.matches(&e.header_view(), &e.request_messages()))
            .count();
        Ok(json!({ "count": count, "method": query.path.trim_start_matches('/') }))
    }

    /// `pkg.Svc/Method` (or `/pkg.Svc/Method`) as a path of the live schema.
    fn path_of(&self, method: &str) -> Result<String, AdminError> {
        let path = crate::registry::method_path(method);
        if self.reload.snapshot().routes.contains_key(path.as_str()) {
            Ok(path)
        } else {
            Err(AdminError::BadRequest(
                format!("no method `{method}` in the schema (write `package.Service/Method`)"),
                Vec::new(),
            ))
        }
    }

    async fn edit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<(T, Box<dyn FnOnce() + Send>), AdminError> + Send + 'static,
    ) -> Result<(T, u64), AdminError> {
        match self.reload.edit_responders(f).await {
            Ok(r) => r,
            Err(e) => Err(AdminError::Internal(format!("the new snapshot could not be built; nothing changed: {e}"))),
        }
    }
}

fn undo(rt: Arc<Runtime>, before: runtime::State) -> Box<dyn FnOnce() + Send> {
    Box::new(move || rt.restore(before))
}

fn stub_json(s: &Stub) -> Value {
    let mut v = json!({
        "id": s.id(),
        "method": s.path.trim_start_matches('/'),
        "source": if s.seq > 0 { "admin" } else { "file" },
        "at": s.at(),
        "priority": s.priority,
        "times": s.times,
    });
    if let (Value::Object(out), Value::Object(state)) = (&mut v, s.state()) {
        out.extend(state);
    }
    v
}
