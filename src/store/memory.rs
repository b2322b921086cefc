//! The built-in in-memory [`Store`]: a table per message type, each behind its
//! own lock (one busy table never blocks another), records in insertion order.
//! std locks, held only in synchronous sections (never across `.await`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{InsertError, Merge, Page, Store};
use crate::Error;

/// A fast, seeded hasher for the store's maps (ids can be long UUID strings, and
/// SipHash showed up in profiles); foldhash is already in the tree via hashbrown.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Records by table, in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The outer lock is written only to create a table.
    tables: RwLock<FastMap<String, RwLock<Table>>>,
}

#[derive(Debug, Default)]
struct Table {
    /// Insertion order; a deleted record leaves `None` so positions stay valid.
    /// The id is shared with the index (one allocation per record).
    rows: Vec<Option<(Arc<str>, Bytes)>>,
    /// id -> position in `rows`.
    index: FastMap<Arc<str>, usize>,
}

impl Table {
    fn get(&self, id: &str) -> Option<&Bytes> {
        let pos = *self.index.get(id)?;
        self.rows[pos].as_ref().map(|(_, b)| b)
    }

    /// Appends a record unless its id is taken (one hash lookup).
    fn try_insert(&mut self, id: String, bytes: Bytes) -> Result<(), InsertError> {
        let id: Arc<str> = Arc::from(id);
        match self.index.entry(id.clone()) {
            Entry::Occupied(_) => Err(InsertError::Exists(id.to_string())),
            Entry::Vacant(v) => {
                v.insert(self.rows.len());
                self.rows.push(Some((id, bytes)));
                Ok(())
            }
        }
    }
}

fn bad_token(tok: &str) -> Error {
    Error::invalid_argument(format!("invalid page_token '{tok}': no such record"))
}

impl MemoryStore {
    /// Runs `f` on table `name` under its read lock (`None` when it does not exist).
    fn read<T>(&self, name: &str, f: impl FnOnce(&Table) -> T) -> Option<T> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let table = tables.get(name)?.read().unwrap_or_else(|e| e.into_inner());
        Some(f(&table))
    }

    /// Runs `f` on table `name` under its write lock, creating the table if asked.
    fn write<T>(&self, name: &str, create: bool, f: impl FnOnce(&mut Table) -> T) -> Option<T> {
        {
            let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = tables.get(name) {
                return Some(f(&mut t.write().unwrap_or_else(|e| e.into_inner())));
            }
        }
        if !create {
            return None;
        }
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let t = tables.entry(name.to_owned()).or_default();
        Some(f(t.get_mut().unwrap_or_else(|e| e.into_inner())))
    }

    /// Number of live records in a table.
    #[cfg(test)]
    pub(crate) fn len(&self, table: &str) -> usize {
        self.read(table, |t| t.index.len()).unwrap_or(0)
    }
}

impl Store for MemoryStore {
    fn get(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error> {
        Ok(self.read(table, |t| t.get(id).cloned()).flatten())
    }

    fn insert(&self, table: &str, id: String, bytes: Bytes) -> Result<(), InsertError> {
        self.write(table, true, |t| t.try_insert(id, bytes)).unwrap_or(Ok(()))
    }

    fn insert_all(&self, table: &str, records: Vec<(String, Bytes)>) -> Result<(), InsertError> {
        self.write(table, true, |t| {
            let start = t.rows.len();
            t.rows.reserve(records.len());
            t.index.reserve(records.len());
            for (id, bytes) in records {
                if let Err(e) = t.try_insert(id, bytes) {
                    for (id, _) in t.rows.drain(start..).flatten() {
                        t.index.remove(&id);
                    }
                    return Err(e);
                }
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    fn update(&self, table: &str, id: &str, merge: Merge<'_>) -> Result<Option<Bytes>, Error> {
        self.write(table, false, |t| {
            let Some(&pos) = t.index.get(id) else { return Ok(None) };
            let Some((_, current)) = t.rows[pos].as_mut() else { return Ok(None) };
            let next = merge(current)?;
            *current = next.clone();
            Ok(Some(next))
        })
        .unwrap_or(Ok(None))
    }

    fn delete(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error> {
        Ok(self
            .write(table, false, |t| {
                let pos = t.index.remove(id)?;
                t.rows[pos].take().map(|(_, b)| b)
            })
            .flatten())
    }

    fn page(&self, table: &str, after: Option<&str>, n: usize) -> Result<Page, Error> {
        self.read(table, |t| {
            let start = match after {
                None => 0,
                Some(tok) => t.index.get(tok).map(|p| p + 1).ok_or_else(|| bad_token(tok))?,
            };
            let mut records = Vec::with_capacity(n.min(1024));
            let mut last = None;
            for (id, bytes) in t.rows[start..].iter().flatten() {
                if records.len() == n {
                    break;
                }
                records.push(bytes.clone());
                last = Some(id);
            }
            // More follow when a live row remains after the last one returned.
            let more = last.is_some_and(|id| {
                let pos = t.index[&**id];
                t.rows[pos + 1..].iter().any(Option::is_some)
            });
            Ok(Page { records, next: if more { last.map(|id| id.to_string()) } else { None } })
        })
        .unwrap_or_else(|| match after {
            None => Ok(Page::default()),
            Some(tok) => Err(bad_token(tok)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_insertion_order_and_tokens() {
        let s = MemoryStore::default();
        let recs = (0..5).map(|i| (format!("id{i}"), Bytes::from(vec![i as u8]))).collect();
        s.insert_all("t", recs).unwrap();
        let p1 = s.page("t", None, 2).unwrap();
        assert_eq!(p1.records, vec![Bytes::from(vec![0]), Bytes::from(vec![1])]);
        assert_eq!(p1.next.as_deref(), Some("id1"));
        s.delete("t", "id2").unwrap();
        let p2 = s.page("t", p1.next.as_deref(), 2).unwrap();
        assert_eq!(p2.records, vec![Bytes::from(vec![3]), Bytes::from(vec![4])]);
        assert_eq!(p2.next, None);
        assert!(s.page("t", Some("nope"), 2).is_err());
        assert_eq!(s.len("t"), 4);
    }

    #[test]
    fn insert_all_is_all_or_nothing() {
        let s = MemoryStore::default();
        s.insert_all("t", vec![("a".into(), Bytes::new())]).unwrap();
        let err = s.insert_all("t", vec![("b".into(), Bytes::new()), ("a".into(), Bytes::new())]);
        assert!(matches!(err, Err(InsertError::Exists(id)) if id == "a"));
        assert_eq!(s.len("t"), 1);
        assert!(s.get("t", "b").unwrap().is_none(), "the batch was undone");
        // A repeated id inside one batch fails it too.
        let err = s.insert_all("t", vec![("c".into(), Bytes::new()), ("c".into(), Bytes::new())]);
        assert!(err.is_err());
        assert!(s.get("t", "c").unwrap().is_none());
        // And the table still works afterwards.
        s.insert_all("t", vec![("c".into(), Bytes::from_static(b"x"))]).unwrap();
        assert_eq!(s.get("t", "c").unwrap(), Some(Bytes::from_static(b"x")));
        assert_eq!(s.page("t", None, 10).unwrap().records.len(), 2);
    }

    #[test]
    fn concurrent_updates_of_one_record_are_never_lost() {
        // Each thread appends its own byte under the record's lock; a lost update
        // would drop some thread's bytes.
        let s = Arc::new(MemoryStore::default());
        s.insert("t", "r".into(), Bytes::new()).unwrap();
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        s.update("t", "r", &mut |cur| {
                            let mut v = cur.to_vec();
                            v.push(i);
                            Ok(Bytes::from(v))
                        })
                        .unwrap()
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = s.get("t", "r").unwrap().unwrap();
        assert_eq!(r.len(), 8 * 200);
        for i in 0..8u8 {
            assert_eq!(r.iter().filter(|b| **b == i).count(), 200);
        }
    }

    #[test]
    fn a_failed_merge_leaves_the_record() {
        let s = MemoryStore::default();
        s.insert("t", "r".into(), Bytes::from_static(b"old")).unwrap();
        let err = s.update("t", "r", &mut |_| Err(Error::invalid_argument("no"))).unwrap_err();
        assert!(err.is_invalid_argument());
        assert_eq!(s.get("t", "r").unwrap(), Some(Bytes::from_static(b"old")));
        assert_eq!(s.update("t", "missing", &mut |b| Ok(b.clone())).unwrap(), None);
    }
}
