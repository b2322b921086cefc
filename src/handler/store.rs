//! The built-in resource store: zero-code behaviour for CRUD-shaped services.
//!
//! Methods named `Create<X>`, `Get<X>`, `List<X>s`, `BulkCreate<X>s`, `Update<X>` and
//! `Delete<X>` are matched to a resource message `X` once per schema ([`Plan::resolve`]);
//! requests then run against an in-memory table per message type.
//!
//! Records are kept as **wire bytes**, the way a database keeps what old clients
//! wrote: after a schema reload each record reads back exactly as its bytes decode
//! under the new schema, and replies go out without being re-encoded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind as FieldKind, MessageDescriptor, MethodDescriptor, Value,
};
use tonic::Status;

use super::wire::{self, FlatShape};
use super::{Kind, Reply};

/// A fast, seeded hasher for the store's maps (ids can be long UUID strings, and
/// SipHash showed up in profiles); foldhash is already in the tree via hashbrown.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Records by message full name; each table keeps insertion order.
#[derive(Debug, Default)]
pub(crate) struct Store {
    tables: RwLock<FastMap<String, Table>>,
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
    fn try_insert(&mut self, id: String, bytes: Bytes) -> Result<(), StoreError> {
        let id: Arc<str> = Arc::from(id);
        match self.index.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(StoreError::Exists(id.to_string())),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.rows.len());
                self.rows.push(Some((id, bytes)));
                Ok(())
            }
        }
    }
}

/// Why a store operation failed; mapped to a status by the caller.
#[derive(Debug)]
pub(crate) enum StoreError {
    Exists(String),
}

impl Store {
    pub(crate) fn get(&self, table: &str, id: &str) -> Option<Bytes> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(table)?.get(id).cloned()
    }

    /// Inserts one record; an id already present fails.
    pub(crate) fn insert(&self, table: &str, id: String, bytes: Bytes) -> Result<(), StoreError> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        table_mut(&mut tables, table).try_insert(id, bytes)
    }

    /// Inserts all records or none: an id already present (or repeated in the
    /// batch) fails the whole batch and undoes what this call inserted.
    pub(crate) fn insert_all(&self, table: &str, records: Vec<(String, Bytes)>) -> Result<(), StoreError> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let t = table_mut(&mut tables, table);
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
    }

    /// Replaces an existing record; false when there is none.
    pub(crate) fn replace(&self, table: &str, id: &str, bytes: Bytes) -> bool {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let Some(t) = tables.get_mut(table) else {
            return false;
        };
        let Some(&pos) = t.index.get(id) else {
            return false;
        };
        match &mut t.rows[pos] {
            Some((_, b)) => {
                *b = bytes;
                true
            }
            None => false,
        }
    }

    pub(crate) fn delete(&self, table: &str, id: &str) -> Option<Bytes> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let t = tables.get_mut(table)?;
        let pos = t.index.remove(id)?;
        t.rows[pos].take().map(|(_, b)| b)
    }

    /// Up to `n` records after the record `after` (from the start when `None`),
    /// plus the id of the last one returned when more follow.
    pub(crate) fn page(
        &self,
        table: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<Bytes>, Option<String>), Status> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let Some(t) = tables.get(table) else {
            return match after {
                None => Ok((Vec::new(), None)),
                Some(tok) => Err(bad_token(tok)),
            };
        };
        let start = match after {
            None => 0,
            Some(tok) => t.index.get(tok).map(|p| p + 1).ok_or_else(|| bad_token(tok))?,
        };
        let mut out = Vec::with_capacity(n.min(1024));
        let mut last = None;
        let mut rows = t.rows[start..].iter().flatten();
        for (id, bytes) in rows.by_ref() {
            if out.len() == n {
                break;
            }
            out.push(bytes.clone());
            last = Some(id);
        }
        // More follow when a live row remains after the last one returned.
        let more = last.is_some_and(|id| {
            let pos = t.index[&**id];
            t.rows[pos + 1..].iter().any(Option::is_some)
        });
        Ok((out, if more { last.map(|id| id.to_string()) } else { None }))
    }

    /// Number of live records in a table.
    #[cfg(test)]
    pub(crate) fn len(&self, table: &str) -> usize {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(table).map_or(0, |t| t.index.len())
    }
}

/// The table for `name`, created on first use (no allocation when it exists).
fn table_mut<'a>(tables: &'a mut FastMap<String, Table>, name: &str) -> &'a mut Table {
    if !tables.contains_key(name) {
        tables.insert(name.to_owned(), Table::default());
    }
    tables.get_mut(name).expect("just inserted")
}

fn bad_token(tok: &str) -> Status {
    Status::invalid_argument(format!("invalid page_token '{tok}': no such record"))
}

/// The resource message a convention works on.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    msg: MessageDescriptor,
    /// Short name used in messages: `User`.
    display: String,
    /// The field that identifies a record (`id` or `name`).
    id: Option<FieldDescriptor>,
    /// `created_at` / `create_time`, set on create.
    created: Option<FieldDescriptor>,
    /// `updated_at` / `update_time`, set on create and update.
    updated: Option<FieldDescriptor>,
}

impl Resource {
    fn new(msg: MessageDescriptor) -> Self {
        let field = |names: &[&str]| names.iter().find_map(|n| msg.get_field_by_name(n));
        Resource {
            display: msg.name().to_owned(),
            id: field(&["id", "name"]).filter(is_key_kind),
            created: field(&["created_at", "create_time"]).filter(is_time_field),
            updated: field(&["updated_at", "update_time"]).filter(is_time_field),
            msg,
        }
    }

    fn table(&self) -> &str {
        self.msg.full_name()
    }

    fn not_found(&self, id: &str) -> Status {
        Status::not_found(format!("{} '{}' not found", self.display, id))
    }
}

fn is_key_kind(f: &FieldDescriptor) -> bool {
    !f.is_list()
        && !f.is_map()
        && matches!(
            f.kind(),
            FieldKind::String | FieldKind::Int32 | FieldKind::Int64 | FieldKind::Uint32 | FieldKind::Uint64
        )
}

fn is_time_field(f: &FieldDescriptor) -> bool {
    if f.is_list() {
        return false;
    }
    match f.kind() {
        FieldKind::Int64 | FieldKind::Uint64 => true,
        FieldKind::Message(m) => m.full_name() == "google.protobuf.Timestamp",
        _ => false,
    }
}

/// Where a new record's fields come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Same-named request fields of the same type, as (request field, resource field).
    Fields(Vec<(FieldDescriptor, FieldDescriptor)>),
    /// A request field whose type is the resource (AIP style: `User user = 1`).
    Embedded(FieldDescriptor),
}

impl Source {
    fn resolve(input: &MessageDescriptor, res: &Resource) -> Option<Source> {
        if let Some(f) =
            input.fields().find(|f| !f.is_list() && matches!(f.kind(), FieldKind::Message(m) if m == res.msg))
        {
            return Some(Source::Embedded(f));
        }
        let pairs: Vec<_> = input
            .fields()
            .filter_map(|rf| {
                let of = res.msg.get_field_by_name(rf.name())?;
                (of.kind() == rf.kind() && of.cardinality() == rf.cardinality()).then_some((rf, of))
            })
            .collect();
        (!pairs.is_empty()).then_some(Source::Fields(pairs))
    }

    /// Builds the resource from the request, moving field values (no copies).
    fn build(&self, res: &Resource, mut req: DynamicMessage) -> DynamicMessage {
        match self {
            Source::Embedded(f) => match req.take_field(f) {
                Some(Value::Message(m)) => m,
                _ => DynamicMessage::new(res.msg.clone()),
            },
            Source::Fields(pairs) => {
                let mut out = DynamicMessage::new(res.msg.clone());
                for (rf, of) in pairs {
                    if let Some(v) = req.take_field(rf) {
                        out.set_field(of, v);
                    }
                }
                out
            }
        }
    }
}

/// Which request field names the record to read, update or delete.
fn key_field(input: &MessageDescriptor, res: &Resource) -> Option<FieldDescriptor> {
    let snake = snake_case(&res.display);
    [format!("{snake}_id"), "id".to_owned(), "name".to_owned()]
        .iter()
        .find_map(|n| input.get_field_by_name(n))
        .filter(is_key_kind)
}

/// A resolved convention for one method.
#[derive(Debug)]
pub(crate) enum Plan {
    Create { res: Resource, from: Source },
    Get { res: Resource, key: FieldDescriptor },
    List(ListPlan),
    BulkCreate { res: Resource, from: Source, count: Option<FieldDescriptor>, ids: Option<FieldDescriptor> },
    Update { res: Resource, from: Source },
    Delete { res: Resource, key: FieldDescriptor, output: MessageDescriptor },
}

#[derive(Debug)]
pub(crate) struct ListPlan {
    res: Resource,
    page_size: Option<FieldDescriptor>,
    page_token: Option<FieldDescriptor>,
    /// For unary lists: the repeated resource field and `next_page_token`.
    unary: Option<(MessageDescriptor, FieldDescriptor, Option<FieldDescriptor>)>,
}

impl Plan {
    /// Matches a method to a convention, or `None` when none applies.
    fn resolve(method: &MethodDescriptor) -> Option<Plan> {
        let pool = method.parent_pool();
        let package = method.parent_service().package_name().to_owned();
        let name = method.name();
        let input = method.input();
        let output = method.output();
        let kind = Kind::of(method);
        let find = |x: &str| resource(pool, &package, x, &output);

        if let Some(x) = name.strip_prefix("BulkCreate") {
            if kind != Kind::ClientStreaming {
                return None;
            }
            let res = plural_candidates(x).into_iter().find_map(|c| find(&c))?;
            let from = Source::resolve(&input, &res)?;
            let count = output.fields().find(|f| {
                f.name().ends_with("count")
                    && matches!(f.kind(), FieldKind::Int32 | FieldKind::Int64 | FieldKind::Uint32 | FieldKind::Uint64)
                    && !f.is_list()
            });
            let ids =
                output.fields().find(|f| f.is_list() && f.kind() == FieldKind::String && f.name().ends_with("ids"));
            return Some(Plan::BulkCreate { res, from, count, ids });
        }
        if let Some(x) = name.strip_prefix("Create") {
            let res = find(x)?;
            (kind == Kind::Unary && output == res.msg).then_some(())?;
            let from = Source::resolve(&input, &res)?;
            return Some(Plan::Create { res, from });
        }
        if let Some(x) = name.strip_prefix("Get") {
            let res = find(x)?;
            (kind == Kind::Unary && output == res.msg).then_some(())?;
            let key = key_field(&input, &res)?;
            return Some(Plan::Get { res, key });
        }
        if let Some(x) = name.strip_prefix("Update") {
            let res = find(x)?;
            (kind == Kind::Unary && output == res.msg && res.id.is_some()).then_some(())?;
            let from = Source::resolve(&input, &res)?;
            return Some(Plan::Update { res, from });
        }
        if let Some(x) = name.strip_prefix("Delete") {
            let res = find(x)?;
            (kind == Kind::Unary).then_some(())?;
            let key = key_field(&input, &res)?;
            return Some(Plan::Delete { res, key, output });
        }
        if let Some(x) = name.strip_prefix("List") {
            let res = plural_candidates(x).into_iter().find_map(|c| find(&c))?;
            let page_size = input.get_field_by_name("page_size").filter(|f| {
                !f.is_list()
                    && matches!(f.kind(), FieldKind::Int32 | FieldKind::Int64 | FieldKind::Uint32 | FieldKind::Uint64)
            });
            let page_token =
                input.get_field_by_name("page_token").filter(|f| f.kind() == FieldKind::String && !f.is_list());
            let unary = match kind {
                Kind::ServerStreaming if output == res.msg => None,
                Kind::Unary => {
                    let items = output
                        .fields()
                        .find(|f| f.is_list() && matches!(f.kind(), FieldKind::Message(m) if m == res.msg))?;
                    let next = output.get_field_by_name("next_page_token").filter(|f| f.kind() == FieldKind::String);
                    Some((output, items, next))
                }
                _ => return None,
            };
            return Some(Plan::List(ListPlan { res, page_size, page_token, unary }));
        }
        None
    }

    /// Serves a unary method.
    pub(crate) fn unary(&self, store: &Store, req: DynamicMessage) -> Result<Reply, Status> {
        match self {
            Plan::Create { res, from } => {
                let (id, bytes) = new_record(res, from, req);
                store.insert(res.table(), id, bytes.clone()).map_err(|e| exists(res, e))?;
                Ok(Reply::Encoded(bytes))
            }
            Plan::Get { res, key } => {
                let id = req.get_field(key);
                let id = key_str(&id);
                store.get(res.table(), &id).map(Reply::Encoded).ok_or_else(|| res.not_found(&id))
            }
            Plan::Update { res, from } => {
                let mut msg = from.build(res, req);
                let Some(id_field) = res.id.as_ref() else {
                    return Err(Status::internal("update convention without an id field"));
                };
                let id = key_string(&msg.get_field(id_field));
                if let Some(f) = &res.updated {
                    msg.set_field(f, now_value(f));
                }
                // Keep what the old record had for fields the request leaves unset.
                let old = store.get(res.table(), &id).ok_or_else(|| res.not_found(&id))?;
                let mut merged = DynamicMessage::decode(res.msg.clone(), old)
                    .map_err(|e| Status::internal(format!("stored {} '{id}' does not decode: {e}", res.display)))?;
                for (f, v) in msg.fields() {
                    merged.set_field(&f, v.clone());
                }
                let bytes = Bytes::from(merged.encode_to_vec());
                if store.replace(res.table(), &id, bytes.clone()) {
                    Ok(Reply::Encoded(bytes))
                } else {
                    Err(res.not_found(&id))
                }
            }
            Plan::Delete { res, key, output } => {
                let id = key_string(&req.get_field(key));
                let old = store.delete(res.table(), &id).ok_or_else(|| res.not_found(&id))?;
                Ok(if *output == res.msg {
                    Reply::Encoded(old)
                } else {
                    Reply::Message(DynamicMessage::new(output.clone()))
                })
            }
            Plan::List(list) => {
                let (items, next) = list.page(store, &req)?;
                let Some((output, items_field, next_field)) = list.unary.as_ref() else {
                    return Err(Status::internal("streaming list called as unary"));
                };
                let mut out = DynamicMessage::new(output.clone());
                let decoded = items
                    .into_iter()
                    .map(|b| DynamicMessage::decode(list.res.msg.clone(), b).map(Value::Message))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Status::internal(format!("stored {} does not decode: {e}", list.res.display)))?;
                out.set_field(items_field, Value::List(decoded));
                if let (Some(f), Some(tok)) = (next_field, next) {
                    out.set_field(f, Value::String(tok));
                }
                Ok(Reply::Message(out))
            }
            Plan::BulkCreate { .. } => Err(Status::internal("BulkCreate is client-streaming")),
        }
    }

    /// Serves a server-streaming list: the page, as encoded records.
    pub(crate) fn stream(&self, store: &Store, req: &DynamicMessage) -> Result<Vec<Bytes>, Status> {
        match self {
            Plan::List(list) => list.page(store, req).map(|(items, _)| items),
            _ => Err(Status::internal("not a streaming convention")),
        }
    }

    /// One line saying what this convention does, for `check` and logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Plan::Create { res, .. } => format!("store: create {}", res.display),
            Plan::Get { res, key } => format!("store: get {} by {}", res.display, key.name()),
            Plan::List(l) => format!("store: list {}", l.res.display),
            Plan::BulkCreate { res, .. } => format!("store: bulk create {}", res.display),
            Plan::Update { res, .. } => format!("store: update {}", res.display),
            Plan::Delete { res, .. } => format!("store: delete {}", res.display),
        }
    }
}

impl ListPlan {
    fn page(&self, store: &Store, req: &DynamicMessage) -> Result<(Vec<Bytes>, Option<String>), Status> {
        let size = self.page_size.as_ref().map(|f| key_string(&req.get_field(f)));
        let token = self.page_token.as_ref().map(|f| key_string(&req.get_field(f)));
        store.page(self.res.table(), token.as_deref().filter(|t| !t.is_empty()), page_size(size.as_deref()))
    }

    /// The same, reading `page_size` and `page_token` straight from the request bytes.
    fn page_raw(&self, store: &Store, shape: &FlatShape, input: &Input) -> Result<Vec<Bytes>, Status> {
        let (mut size, mut token) = (None, None);
        wire::walk(&input.raw, shape, |f| {
            if let Some(pf) = self.page_size.as_ref().filter(|pf| pf.number() == f.number) {
                size = Some(wire::key_of(pf, &f));
            } else if let Some(tf) = self.page_token.as_ref().filter(|tf| tf.number() == f.number) {
                token = Some(wire::key_of(tf, &f));
            }
        })
        .map_err(|e| input.malformed(e))?;
        let token = token.filter(|t| !t.is_empty());
        store.page(self.res.table(), token.as_deref(), page_size(size.as_deref())).map(|(items, _)| items)
    }
}

/// `page_size` when positive, else the default of 10.
fn page_size(value: Option<&str>) -> usize {
    match value.map(str::parse::<i64>) {
        Some(Ok(n)) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => 10,
    }
}

/// A request as the store receives it: the wire bytes, and the decoded message
/// when someone (validation) already needed it.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) raw: Bytes,
    pub(crate) decoded: Option<DynamicMessage>,
    pub(crate) desc: MessageDescriptor,
    pub(crate) path: std::sync::Arc<str>,
}

impl Input {
    /// The decoded message, decoding it now (and keeping it) if nobody has yet.
    pub(crate) fn message_ref(&mut self) -> Result<&DynamicMessage, Status> {
        if self.decoded.is_none() {
            self.decoded = Some(crate::codec::decode(&self.desc, &self.path, self.raw.clone())?);
        }
        Ok(self.decoded.as_ref().expect("decoded just above"))
    }

    /// The decoded message (decoding now if nobody has yet).
    pub(crate) fn message(self) -> Result<DynamicMessage, Status> {
        match self.decoded {
            Some(m) => Ok(m),
            None => crate::codec::decode(&self.desc, &self.path, self.raw),
        }
    }

    pub(crate) fn malformed(&self, e: impl std::fmt::Display) -> Status {
        crate::codec::malformed(&self.path, &self.desc, e)
    }
}

/// A convention plus its wire-level fast paths, used when the request type is
/// flat (see [`wire`]): then Get, List and Create never build a dynamic message.
#[derive(Debug)]
pub(crate) struct Convention {
    plan: Plan,
    shape: Option<FlatShape>,
    create: Option<FastCreate>,
}

impl Convention {
    /// Matches a method to a convention, or `None` when none applies.
    pub(crate) fn resolve(method: &MethodDescriptor) -> Option<Convention> {
        let plan = Plan::resolve(method)?;
        let shape = FlatShape::of(&method.input());
        let create = match (&plan, &shape) {
            (
                Plan::Create { res, from: Source::Fields(pairs) }
                | Plan::BulkCreate { res, from: Source::Fields(pairs), .. },
                Some(_),
            ) => Some(FastCreate::new(res, pairs)),
            _ => None,
        };
        Some(Convention { plan, shape, create })
    }

    /// One line saying what this convention does, for `check` and logs.
    pub(crate) fn describe(&self) -> String {
        self.plan.describe()
    }

    /// Serves a unary method.
    pub(crate) fn unary(&self, store: &Store, input: Input) -> Result<Reply, Status> {
        match (&self.plan, &self.shape, &self.create) {
            (Plan::Get { res, key }, Some(shape), _) => {
                let mut id = None;
                wire::walk(&input.raw, shape, |f| {
                    if f.number == key.number() {
                        id = Some(f);
                    }
                })
                .map_err(|e| input.malformed(e))?;
                let id = id.map(|f| wire::key_of(key, &f)).unwrap_or_default();
                store.get(res.table(), &id).map(Reply::Encoded).ok_or_else(|| res.not_found(&id))
            }
            (Plan::Create { res, .. }, Some(shape), Some(fast)) => {
                let (id, bytes) = fast.record(res, shape, &input.raw).map_err(|e| input.malformed(e))?;
                store.insert(res.table(), id, bytes.clone()).map_err(|e| exists(res, e))?;
                Ok(Reply::Encoded(bytes))
            }
            _ => self.plan.unary(store, input.message()?),
        }
    }

    /// Serves a server-streaming list: the page, as encoded records.
    pub(crate) fn stream(&self, store: &Store, input: Input) -> Result<Vec<Bytes>, Status> {
        match (&self.plan, &self.shape) {
            (Plan::List(list), Some(shape)) if list.unary.is_none() => list.page_raw(store, shape, &input),
            _ => self.plan.stream(store, &input.message()?),
        }
    }

    /// Serves a client-streaming bulk create, all or nothing.
    pub(crate) fn bulk(&self, store: &Store, inputs: Vec<Input>) -> Result<Reply, Status> {
        let Plan::BulkCreate { res, from, count, ids } = &self.plan else {
            return Err(Status::internal("not a client-streaming convention"));
        };
        let records = match (&self.shape, &self.create) {
            (Some(shape), Some(fast)) => inputs
                .iter()
                .map(|i| fast.record(res, shape, &i.raw).map_err(|e| i.malformed(e)))
                .collect::<Result<Vec<_>, _>>()?,
            _ => inputs
                .into_iter()
                .map(|i| i.message().map(|m| new_record(res, from, m)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        // The response, written straight to the wire: the count, then the ids in order.
        let mut out = Vec::with_capacity(8 + records.iter().map(|(id, _)| id.len() + 2).sum::<usize>());
        if let Some(f) = count {
            wire::put_varint(&mut out, f.number(), records.len() as u64);
        }
        if let Some(f) = ids {
            for (id, _) in &records {
                wire::put_string(&mut out, f.number(), id);
            }
        }
        store.insert_all(res.table(), records).map_err(|e| exists(res, e))?;
        Ok(Reply::Encoded(Bytes::from(out)))
    }
}

/// Create without dynamic messages: re-tag the request's fields to the resource's
/// numbers, then append the generated id and timestamps (last one wins on the wire).
#[derive(Debug)]
struct FastCreate {
    /// (request field number, resource field number), timestamps excluded.
    map: Vec<(u32, u32)>,
    /// The request field that becomes the resource's id, if any.
    id_in: Option<u32>,
    /// `created_at`/`updated_at`-like fields, set to now.
    times: Vec<FieldDescriptor>,
}

impl FastCreate {
    fn new(res: &Resource, pairs: &[(FieldDescriptor, FieldDescriptor)]) -> FastCreate {
        let times: Vec<FieldDescriptor> = [&res.created, &res.updated].into_iter().flatten().cloned().collect();
        FastCreate {
            map: pairs
                .iter()
                .filter(|(_, of)| !times.contains(of))
                .map(|(rf, of)| (rf.number(), of.number()))
                .collect(),
            id_in: res.id.as_ref().and_then(|idf| pairs.iter().find(|(_, of)| of == idf)).map(|(rf, _)| rf.number()),
            times,
        }
    }

    fn record(&self, res: &Resource, shape: &FlatShape, raw: &[u8]) -> Result<(String, Bytes), String> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut given = None;
        wire::walk(raw, shape, |f| {
            if let Some(&(_, to)) = self.map.iter().find(|(from, _)| *from == f.number) {
                if Some(f.number) == self.id_in {
                    given = Some(f);
                }
                wire::put_retagged(&mut out, to, &f);
            }
        })?;
        let id = match &res.id {
            Some(idf) => {
                let given = given.map(|f| wire::key_of(idf, &f)).unwrap_or_default();
                if needs_new_id(idf, &given) {
                    let fresh = new_id(idf);
                    match idf.kind() {
                        FieldKind::String => wire::put_string(&mut out, idf.number(), &fresh),
                        _ => wire::put_varint(&mut out, idf.number(), fresh.parse().unwrap_or(1)),
                    }
                    fresh
                } else {
                    given
                }
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        for f in &self.times {
            match f.kind() {
                FieldKind::Message(_) => {
                    wire::put_timestamp(&mut out, f.number(), now.as_secs() as i64, now.subsec_nanos() as i32)
                }
                _ => wire::put_varint(&mut out, f.number(), now.as_secs()),
            }
        }
        Ok((id, Bytes::from(out)))
    }
}

/// Whether a create must generate the id: an empty string, or a zero number.
fn needs_new_id(field: &FieldDescriptor, given: &str) -> bool {
    match field.kind() {
        FieldKind::String => given.is_empty(),
        _ => given.is_empty() || given == "0",
    }
}

/// A fresh id: a UUID v4 for strings, a random positive 53-bit number otherwise.
fn new_id(field: &FieldDescriptor) -> String {
    let uuid = uuid::Uuid::new_v4();
    match field.kind() {
        FieldKind::String => uuid.to_string(),
        _ => ((uuid.as_u128() as u64) >> 11).max(1).to_string(),
    }
}

fn exists(res: &Resource, e: StoreError) -> Status {
    match e {
        StoreError::Exists(id) => Status::already_exists(format!("{} '{}' already exists", res.display, id)),
    }
}

/// Builds and encodes a new record: fields from the request, a UUID v4 for an empty
/// string id, a sequence number for a zero integer id, `created_at` = now.
fn new_record(res: &Resource, from: &Source, req: DynamicMessage) -> (String, Bytes) {
    let mut msg = from.build(res, req);
    let id;
    if let Some(f) = &res.id {
        let mut given = key_string(&msg.get_field(f));
        if needs_new_id(f, &given) {
            given = new_id(f);
            match f.kind() {
                FieldKind::String => msg.set_field(f, Value::String(given.clone())),
                _ => msg.set_field(f, int_value(f, given.parse().unwrap_or(1))),
            }
        }
        id = given;
    } else {
        id = uuid::Uuid::new_v4().to_string();
    }
    for f in [&res.created, &res.updated].into_iter().flatten() {
        msg.set_field(f, now_value(f));
    }
    (id, Bytes::from(msg.encode_to_vec()))
}

fn now_value(f: &FieldDescriptor) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    match f.kind() {
        FieldKind::Message(m) => {
            let mut ts = DynamicMessage::new(m);
            ts.set_field_by_name("seconds", Value::I64(now.as_secs() as i64));
            ts.set_field_by_name("nanos", Value::I32(now.subsec_nanos() as i32));
            Value::Message(ts)
        }
        _ => int_value(f, now.as_secs()),
    }
}

fn int_value(f: &FieldDescriptor, n: u64) -> Value {
    match f.kind() {
        FieldKind::Int32 | FieldKind::Sint32 | FieldKind::Sfixed32 => Value::I32(n as i32),
        FieldKind::Uint32 | FieldKind::Fixed32 => Value::U32(n as u32),
        FieldKind::Uint64 | FieldKind::Fixed64 => Value::U64(n),
        _ => Value::I64(n as i64),
    }
}

/// A key field's value as the string records are indexed by, borrowed when it is one.
fn key_str(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(key_string(other)),
    }
}

/// A key field's value as the string records are indexed by.
pub(crate) fn key_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        _ => String::new(),
    }
}

/// The resource message called `x` in the service's package (or the output type
/// when it has that name).
fn resource(pool: &DescriptorPool, package: &str, x: &str, output: &MessageDescriptor) -> Option<Resource> {
    if x.is_empty() {
        return None;
    }
    if output.name() == x {
        return Some(Resource::new(output.clone()));
    }
    let full = if package.is_empty() { x.to_owned() } else { format!("{package}.{x}") };
    pool.get_message_by_name(&full).map(Resource::new)
}

/// `Users` -> [`User`, `Users`]; `Categories` -> [`Category`, ...]; `Boxes` -> [`Box`, ...].
fn plural_candidates(x: &str) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(s) = x.strip_suffix("ies") {
        v.push(format!("{s}y"));
    }
    if let Some(s) = x.strip_suffix("es") {
        v.push(s.to_owned());
    }
    if let Some(s) = x.strip_suffix('s') {
        v.push(s.to_owned());
    }
    v.push(x.to_owned());
    v
}

fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Pre-loads records from a YAML or JSON file: message full name -> list of records
/// in the proto3 JSON mapping. Returns how many records were loaded.
pub(crate) fn load_data(store: &Store, pool: &DescriptorPool, path: &std::path::Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read data file '{}': {e}", path.display()))?;
    let doc: serde_json::Value = yaml_serde::from_str(&text)
        .map_err(|e| format!("data file '{}' is not valid YAML/JSON: {e}", path.display()))?;
    let serde_json::Value::Object(map) = doc else {
        return Err(format!("data file '{}': expected a map of message full name -> list of records", path.display()));
    };
    let mut total = 0;
    for (name, records) in map {
        let desc = pool
            .get_message_by_name(&name)
            .ok_or_else(|| format!("data file '{}': no message named '{name}' in the schema", path.display()))?;
        let res = Resource::new(desc.clone());
        let serde_json::Value::Array(records) = records else {
            return Err(format!("data file '{}': '{name}' must be a list of records", path.display()));
        };
        let mut batch = Vec::with_capacity(records.len());
        for (i, rec) in records.into_iter().enumerate() {
            let msg = DynamicMessage::deserialize(desc.clone(), rec)
                .map_err(|e| format!("data file '{}': {name} record #{}: {e}", path.display(), i + 1))?;
            let id = match &res.id {
                Some(f) => key_string(&msg.get_field(f)),
                None => String::new(),
            };
            let id = if id.is_empty() { uuid::Uuid::new_v4().to_string() } else { id };
            batch.push((id, Bytes::from(msg.encode_to_vec())));
        }
        total += batch.len();
        store.insert_all(&name, batch).map_err(|StoreError::Exists(id)| {
            format!("data file '{}': {name} record with id '{id}' appears twice", path.display())
        })?;
    }
    Ok(total)
}

/// Shared handle to the store (it outlives schema reloads).
pub(crate) type SharedStore = Arc<Store>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_insertion_order_and_tokens() {
        let s = Store::default();
        let recs = (0..5).map(|i| (format!("id{i}"), Bytes::from(vec![i as u8]))).collect();
        s.insert_all("t", recs).unwrap();
        let (p1, next) = s.page("t", None, 2).unwrap();
        assert_eq!(p1, vec![Bytes::from(vec![0]), Bytes::from(vec![1])]);
        assert_eq!(next.as_deref(), Some("id1"));
        s.delete("t", "id2").unwrap();
        let (p2, next) = s.page("t", next.as_deref(), 2).unwrap();
        assert_eq!(p2, vec![Bytes::from(vec![3]), Bytes::from(vec![4])]);
        assert_eq!(next, None);
        assert!(s.page("t", Some("nope"), 2).is_err());
        assert_eq!(s.len("t"), 4);
    }

    #[test]
    fn insert_all_is_all_or_nothing() {
        let s = Store::default();
        s.insert_all("t", vec![("a".into(), Bytes::new())]).unwrap();
        let err = s.insert_all("t", vec![("b".into(), Bytes::new()), ("a".into(), Bytes::new())]);
        assert!(err.is_err());
        assert_eq!(s.len("t"), 1);
        assert!(s.get("t", "b").is_none(), "the batch was undone");
        // A repeated id inside one batch fails it too.
        let err = s.insert_all("t", vec![("c".into(), Bytes::new()), ("c".into(), Bytes::new())]);
        assert!(err.is_err());
        assert!(s.get("t", "c").is_none());
        // And the table still works afterwards.
        s.insert_all("t", vec![("c".into(), Bytes::from_static(b"x"))]).unwrap();
        assert_eq!(s.get("t", "c"), Some(Bytes::from_static(b"x")));
        let (page, _) = s.page("t", None, 10).unwrap();
        assert_eq!(page.len(), 2);
    }

    #[test]
    fn plural_and_snake() {
        assert_eq!(plural_candidates("Users")[0], "User");
        assert_eq!(plural_candidates("Categories")[0], "Category");
        assert_eq!(snake_case("UserProfile"), "user_profile");
    }
}
