//! The built-in in-memory [`Store`]: a table per message type, each behind its
//! own lock (one busy table never blocks another), records in insertion order.
//! std locks, held only in synchronous sections (never across `.await`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{After, InsertError, Merge, Page, Store};
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

/// How many deleted ids a table remembers, so a client paging by the id of a
/// record deleted meanwhile can still continue after it.
const REMEMBERED_DELETIONS: usize = 4096;

#[derive(Debug, Default)]
struct Table {
    /// Insertion order, by sequence number. A deleted record leaves its slot
    /// (`None`) until the next compaction, so positions stay valid in between.
    rows: Vec<(u64, Option<Row>)>,
    /// id -> position in `rows`.
    index: FastMap<Arc<str>, usize>,
    /// The next record's sequence number.
    next_seq: u64,
    /// Empty slots in `rows`.
    dead: usize,
    /// Recently deleted ids -> their sequence numbers (at most
    /// [`REMEMBERED_DELETIONS`], oldest first in `gone_order`).
    gone: FastMap<Arc<str>, u64>,
    gone_order: std::collections::VecDeque<Arc<str>>,
}

#[derive(Debug)]
struct Row {
    /// Shared with the index (one allocation per record).
    id: Arc<str>,
    bytes: Bytes,
}

impl Table {
    fn get(&self, id: &str) -> Option<&Bytes> {
        let pos = *self.index.get(id)?;
        self.rows[pos].1.as_ref().map(|r| &r.bytes)
    }

    /// Appends a record unless its id is taken (one hash lookup).
    fn try_insert(&mut self, id: String, bytes: Bytes) -> Result<(), InsertError> {
        let id: Arc<str> = Arc::from(id);
        match self.index.entry(id.clone()) {
            Entry::Occupied(_) => Err(InsertError::Exists(id.to_string())),
            Entry::Vacant(v) => {
                v.insert(self.rows.len());
                self.rows.push((self.next_seq, Some(Row { id, bytes })));
                self.next_seq += 1;
                Ok(())
            }
        }
    }

    /// Undoes the inserts since `rows` had `len` entries (an all-or-nothing batch).
    fn truncate(&mut self, len: usize) {
        for (_, row) in self.rows.drain(len..) {
            if let Some(row) = row {
                self.index.remove(&row.id);
            } else {
                self.dead -= 1;
            }
        }
    }

    fn delete(&mut self, id: &str) -> Option<Bytes> {
        let pos = self.index.remove(id)?;
        let (seq, slot) = &mut self.rows[pos];
        let row = slot.take()?;
        self.dead += 1;
        if self.gone_order.len() == REMEMBERED_DELETIONS
            && let Some(old) = self.gone_order.pop_front()
        {
            self.gone.remove(&old);
        }
        self.gone.insert(row.id.clone(), *seq);
        self.gone_order.push_back(row.id);
        // Memory follows live records: drop the empty slots once they outnumber them.
        if self.dead > 64 && self.dead > self.index.len() {
            self.compact();
        }
        Some(row.bytes)
    }

    fn compact(&mut self) {
        self.rows.retain(|(_, r)| r.is_some());
        self.rows.shrink_to(self.rows.len() * 2);
        for (pos, (_, row)) in self.rows.iter().enumerate() {
            if let Some(row) = row {
                *self.index.get_mut(&row.id).expect("every live row is indexed") = pos;
            }
        }
        self.dead = 0;
    }

    /// The position of the first row after `after`.
    fn start(&self, after: After<'_>) -> Result<usize, Error> {
        let after_seq = |seq: u64| self.rows.partition_point(|(s, _)| *s <= seq);
        match after {
            After::Start => Ok(0),
            After::Id(id) => match self.index.get(id) {
                Some(&pos) => Ok(pos + 1),
                None => self.gone.get(id).map(|&seq| after_seq(seq)).ok_or_else(|| bad_token(id)),
            },
            After::Token(tok) => parse_token(tok).map(after_seq).ok_or_else(|| bad_token(tok)),
        }
    }
}

/// Page tokens: the sequence number of the last record returned, opaque to
/// clients (`p` and the number in base 36).
fn token(seq: u64) -> String {
    let mut digits = Vec::new();
    let mut n = seq;
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    std::iter::once('p').chain(digits.into_iter().rev()).collect()
}

fn parse_token(tok: &str) -> Option<u64> {
    let digits = tok.strip_prefix('p').filter(|d| !d.is_empty() && d.len() <= 13)?;
    u64::from_str_radix(digits, 36).ok()
}

fn bad_token(tok: &str) -> Error {
    Error::invalid_argument(format!("invalid page_token '{tok}': it names no position in this list"))
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
    /// Number of live records in a table.
    #[cfg(test)]
    pub(crate) fn len(&self, table: &str) -> usize {
        self.read(table, |t| t.index.len()).unwrap_or(0)
    }

    /// Slots (live and empty) in a table: what its memory follows.
    #[cfg(test)]
    pub(crate) fn slots(&self, table: &str) -> usize {
        self.read(table, |t| t.rows.len()).unwrap_or(0)
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
                    t.truncate(start);
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
            let Some(row) = t.rows[pos].1.as_mut() else { return Ok(None) };
            let next = merge(&row.bytes)?;
            row.bytes = next.clone();
            Ok(Some(next))
        })
        .unwrap_or(Ok(None))
    }

    fn delete(&self, table: &str, id: &str) -> Result<Option<Bytes>, Error> {
        Ok(self.write(table, false, |t| t.delete(id)).flatten())
    }

    fn page(&self, table: &str, after: After<'_>, n: usize) -> Result<Page, Error> {
        self.read(table, |t| {
            let start = t.start(after)?;
            let mut records = Vec::with_capacity(n.min(1024));
            let mut last = None;
            for (seq, row) in &t.rows[start..] {
                if records.len() == n {
                    break;
                }
                if let Some(row) = row {
                    records.push(row.bytes.clone());
                    last = Some(*seq);
                }
            }
            // More may follow when rows (live or not) remain after the last one returned.
            let more = last.is_some_and(|seq| t.rows.last().is_some_and(|(s, _)| *s > seq));
            Ok(Page { records, next: if more { last.map(token) } else { None } })
        })
        .unwrap_or_else(|| match after {
            After::Start => Ok(Page::default()),
            After::Token(tok) if parse_token(tok).is_some() => Ok(Page::default()),
            After::Token(tok) | After::Id(tok) => Err(bad_token(tok)),
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
        let p1 = s.page("t", After::Start, 2).unwrap();
        assert_eq!(p1.records, vec![Bytes::from(vec![0]), Bytes::from(vec![1])]);
        let next = p1.next.expect("more follow");
        s.delete("t", "id2").unwrap();
        let p2 = s.page("t", After::Token(&next), 2).unwrap();
        assert_eq!(p2.records, vec![Bytes::from(vec![3]), Bytes::from(vec![4])]);
        assert_eq!(p2.next, None);
        // By id, as a streaming client continues.
        assert_eq!(s.page("t", After::Id("id3"), 5).unwrap().records, vec![Bytes::from(vec![4])]);
        assert!(s.page("t", After::Id("nope"), 2).is_err());
        assert!(s.page("t", After::Token("nope"), 2).is_err());
        assert_eq!(s.len("t"), 4);
    }

    #[test]
    fn tokens_and_ids_survive_deleting_the_record_they_follow() {
        let s = MemoryStore::default();
        s.insert_all("t", (0..6u8).map(|i| (format!("id{i}"), Bytes::from(vec![i]))).collect()).unwrap();
        let p1 = s.page("t", After::Start, 3).unwrap();
        let tok = p1.next.unwrap();
        // The record the token follows, and the next one, are deleted meanwhile.
        s.delete("t", "id2").unwrap();
        s.delete("t", "id3").unwrap();
        assert_eq!(
            s.page("t", After::Token(&tok), 10).unwrap().records,
            vec![Bytes::from(vec![4]), Bytes::from(vec![5])]
        );
        assert_eq!(
            s.page("t", After::Id("id2"), 10).unwrap().records,
            vec![Bytes::from(vec![4]), Bytes::from(vec![5])]
        );
        // A token past the end of an emptied table is an empty page, not an error.
        for i in 0..6 {
            let _ = s.delete("t", &format!("id{i}"));
        }
        assert!(s.page("t", After::Token(&tok), 10).unwrap().records.is_empty());
    }

    #[test]
    fn memory_follows_live_records_through_create_delete_cycles() {
        let s = MemoryStore::default();
        for i in 0..100_000u32 {
            s.insert("t", format!("r{i}"), Bytes::from_static(b"x")).unwrap();
            if i >= 64 {
                s.delete("t", &format!("r{}", i - 64)).unwrap();
            }
        }
        assert_eq!(s.len("t"), 64);
        assert!(s.slots("t") <= 64 * 2 + 65, "slots {} for 64 live records", s.slots("t"));
        // Paging still sees exactly the live records, in order.
        let page = s.page("t", After::Start, 1000).unwrap();
        assert_eq!(page.records.len(), 64);
        assert_eq!(s.get("t", "r99999").unwrap(), Some(Bytes::from_static(b"x")));
    }

    #[test]
    fn page_tokens_round_trip() {
        for seq in [0, 1, 35, 36, 1 << 40, u64::MAX] {
            assert_eq!(parse_token(&token(seq)), Some(seq));
        }
        for bad in ["", "p", "x1", "p-1", "pzzzzzzzzzzzzzz", "p\u{e9}"] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
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
        assert_eq!(s.page("t", After::Start, 10).unwrap().records.len(), 2);
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
