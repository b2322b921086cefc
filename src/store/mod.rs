//! Where records live: a [`Store`] keeps records as (table, id, wire bytes).
//! Tables are named by message full name; records keep insertion order.
//!
//! The resource-store responder (`responder::store`) turns CRUD-shaped methods
//! into these operations; [`memory::MemoryStore`] is the built-in implementation.
//! Another store joins with `Builder::store(..)`.

pub mod memory;

use bytes::Bytes;

use crate::Error;

pub use memory::MemoryStore;

/// One page of a table.
#[derive(Debug, Default)]
pub struct Page {
    /// The records, in insertion order.
    pub records: Vec<Bytes>,
    /// An opaque token for [`After::Token`] continuing after the last record
    /// returned, when more records may follow.
    pub next: Option<String>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy)]
pub enum After<'a> {
    /// At the first record.
    Start,
    /// After the position a [`Page::next`] token names; it stays valid when records
    /// are deleted (the record it followed included).
    Token(&'a str),
    /// After the record with this id (how a client that only sees records, as in a
    /// server-streaming list, continues). A recently deleted id still works.
    Id(&'a str),
}

/// A replacement computed from a record's current bytes, under the record's lock.
pub type Merge<'a> = &'a mut dyn FnMut(&Bytes) -> Result<Bytes, Error>;

/// A store of records as wire bytes. Implementations must make each operation
/// atomic: `insert_all` stores all records or none, and `update` runs the merge
/// with no other write to that record in between.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The record `id` in `table`, if present.
    fn get(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error>;

    /// Inserts one record; an id already present fails.
    fn insert(&self, table: &str, id: String, bytes: Bytes) -> Result<(), InsertError> {
        self.insert_all(table, vec![(id, bytes)])
    }

    /// Inserts all records or none: an id already present, or repeated in the batch,
    /// fails the whole batch.
    fn insert_all(&self, table: &str, records: Vec<(String, Bytes)>) -> Result<(), InsertError>;

    /// Replaces record `id` with `merge(current)`, atomically. `Ok(None)` when there
    /// is no such record; an error from `merge` leaves the record as it was.
    fn update(&self, table: &str, id: &str, merge: Merge<'_>) -> Result<Option<Bytes>, Error>;

    /// Removes record `id`, returning its bytes.
    fn delete(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error>;

    /// Up to `n` records in insertion order, starting as `after` says. A token or
    /// id the store cannot place is INVALID_ARGUMENT.
    fn page(&self, table: &str, after: After<'_>, n: usize) -> Result<Page, Error>;
}

/// Why an insert failed.
#[derive(Debug)]
pub enum InsertError {
    /// A record with this id exists (or the batch repeats it).
    Exists(String),
    /// The store itself failed.
    Store(Error),
}

/// A shared store is a store (so callers can keep a handle to the one they plug in).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error> {
        (**self).get(table, id)
    }
    fn insert(&self, table: &str, id: String, bytes: Bytes) -> Result<(), InsertError> {
        (**self).insert(table, id, bytes)
    }
    fn insert_all(&self, table: &str, records: Vec<(String, Bytes)>) -> Result<(), InsertError> {
        (**self).insert_all(table, records)
    }
    fn update(&self, table: &str, id: &str, merge: Merge<'_>) -> Result<Option<Bytes>, Error> {
        (**self).update(table, id, merge)
    }
    fn delete(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error> {
        (**self).delete(table, id)
    }
    fn page(&self, table: &str, after: After<'_>, n: usize) -> Result<Page, Error> {
        (**self).page(table, after, n)
    }
}
