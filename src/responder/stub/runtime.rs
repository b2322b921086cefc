//! Stubs edited at runtime (the admin API): stub texts added after startup,
//! and which stubs (from files or earlier edits) are hidden by a replacement
//! or a deletion. The stub responder reads this set for every snapshot it
//! builds, so a schema reload keeps the edits; a reset drops them.
//!
//! Each edit gets a sequence number. A stub is hidden when a later edit
//! replaced or deleted its id: `hidden[id] > seq` (files are edit 0).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use prost_reflect::DescriptorPool;

use super::{Stub, compile, node};
use crate::schema::Problem;
use crate::schema::diagnostic::SourceText;

/// The runtime edits, shared by the stub responder and the admin API.
#[derive(Debug, Default)]
pub(crate) struct Runtime {
    state: Mutex<State>,
}

/// The edits at one moment.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    /// Added texts, oldest first.
    pub(crate) entries: Vec<Entry>,
    /// A stub with this id from an edit before this one (or a file) is hidden.
    pub(crate) hidden: HashMap<String, u64>,
    /// The last sequence number given out.
    seq: u64,
    /// Bumped by a reset: stub counters are not carried over it.
    pub(crate) epoch: u64,
}

/// One added text: one stub or a list.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) source: SourceText,
    /// The id its one stub takes (a replacement: `PUT /stubs/{id}`).
    pub(crate) id: Option<String>,
}

impl State {
    /// Whether the stub `id` of edit `seq` is hidden by a later edit.
    pub(crate) fn is_hidden(&self, id: &str, seq: u64) -> bool {
        self.hidden.get(id).is_some_and(|&h| h > seq)
    }

    /// A fingerprint of the edits (0 when there are none).
    pub(crate) fn fingerprint(&self) -> u64 {
        if self.entries.is_empty() && self.hidden.is_empty() {
            return 0;
        }
        self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.epoch.rotate_left(32) | 1
    }
}

impl Runtime {
    /// The edits now.
    pub(crate) fn state(&self) -> State {
        self.lock().clone()
    }

    /// Puts back a state taken before (an edit whose snapshot failed to build).
    pub(crate) fn restore(&self, state: State) {
        *self.lock() = state;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The name the next edit's text has in diagnostics and default ids.
    pub(crate) fn next_name(&self) -> String {
        format!("admin/{}", self.lock().seq + 1)
    }

    /// Adds a checked text; `id`: the id its one stub takes, hiding earlier
    /// stubs of that id (a replacement).
    pub(crate) fn add(&self, source: SourceText, id: Option<String>) {
        let mut s = self.lock();
        s.seq += 1;
        let seq = s.seq;
        if let Some(id) = &id {
            s.hidden.insert(id.clone(), seq);
        }
        s.entries.push(Entry { seq, source, id });
    }

    /// Hides every stub of this id present now.
    pub(crate) fn delete(&self, id: &str) {
        let mut s = self.lock();
        s.seq += 1;
        let seq = s.seq;
        s.hidden.insert(id.to_owned(), seq);
        // Texts whose stubs are all hidden now are dropped.
        s.entries.retain(|e| e.id.as_deref() != Some(id));
    }

    /// Back to the files: every edit dropped, counters restarted.
    pub(crate) fn reset(&self) {
        let mut s = self.lock();
        let epoch = s.epoch + 1;
        *s = State { epoch, ..State::default() };
    }
}

/// Checks a stub text against `pool` as a stub file would be: its stubs, or
/// every problem (located in `name`). `id`: the one stub's id (a replacement).
pub(crate) fn check(
    name: &str,
    text: &str,
    pool: &DescriptorPool,
    id: Option<&str>,
) -> Result<Vec<Stub>, Vec<Problem>> {
    let src = SourceText { display: name.to_owned(), text: text.to_owned() };
    let mut shared = compile::Shared::default();
    let mut file = compile::File::new(&src, pool, &mut shared, 0);
    let parsed = node::parse_items(text, |item| file.item(&item));
    let (mut stubs, problems) = file.finish();
    parsed.map_err(|e| vec![Problem::new(e.message).at(&src, e.at.offset, 1)])?;
    if !problems.is_empty() {
        return Err(problems);
    }
    if stubs.is_empty() {
        return Err(vec![Problem::new("the body holds no stub: send one stub (a mapping) or a list of them")]);
    }
    if let Some(id) = id {
        if stubs.len() != 1 {
            return Err(vec![Problem::new(format!("a replacement is one stub; the body holds {}", stubs.len()))]);
        }
        let given = stubs[0].id();
        if stubs[0].id.is_some() && given != id {
            return Err(vec![Problem::new(format!(
                "the body's id `{given}` is not the id being replaced, `{id}` (leave `id` out or give the same)"
            ))]);
        }
        stubs[0].id = Some(id.into());
    }
    Ok(stubs)
}
