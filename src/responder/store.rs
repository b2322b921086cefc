//! The built-in resource store: zero-code behaviour for CRUD-shaped services.
//!
//! Methods named `Create<X>`, `Get<X>`, `List<X>s`, `BulkCreate<X>s`, `Update<X>` and
//! `Delete<X>` are matched to a resource message `X` once per schema ([`Plan::resolve`]);
//! requests then run against an in-memory table per message type.
//!
//! Records are kept as **wire bytes**, the way a database keeps what old clients
//! wrote: after a schema reload each record reads back exactly as its bytes decode
//! under the new schema, and replies go out without being re-encoded.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind as FieldKind, MessageDescriptor, MethodDescriptor, Value,
};

use super::{Respond, Responder};
use crate::Error;
use crate::call::{Answer, CallRequest, Exchange, Input, Kind, Reply, Responding};
use crate::error::BuildError;
use crate::store::{After, InsertError, Page, Store};
use crate::validate::{self, Naming, Validation};
use crate::wire::{self, FlatShape};

/// The resource message a convention works on.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    msg: MessageDescriptor,
    /// Short name used in messages: `User`.
    display: String,
    /// The field that identifies a record: its own `<x>_id`, `id` or `name`
    /// (the first present of a key type). Without one, records get a hidden key
    /// and can be listed but not fetched.
    id: Option<FieldDescriptor>,
    /// `created_at` / `create_time`, set on create.
    created: Option<FieldDescriptor>,
    /// `updated_at` / `update_time`, set on create and update.
    updated: Option<FieldDescriptor>,
}

impl Resource {
    fn new(msg: MessageDescriptor) -> Self {
        let field = |names: &[&str]| names.iter().find_map(|n| msg.get_field_by_name(n));
        let own = format!("{}_id", snake_case(msg.name()));
        Resource {
            display: msg.name().to_owned(),
            id: [own.as_str(), "id", "name"].iter().filter_map(|n| msg.get_field_by_name(n)).find(is_key_kind),
            created: field(&["created_at", "create_time"]).filter(is_time_field),
            updated: field(&["updated_at", "update_time"]).filter(is_time_field),
            msg,
        }
    }

    fn table(&self) -> &str {
        self.msg.full_name()
    }

    /// The names a key field may have, for messages: `person_id, id or name`.
    fn key_names(&self) -> String {
        format!("{}_id, id or name", snake_case(&self.display))
    }

    /// How records are keyed, for `check`: ` (key person_id, generated when empty)`.
    fn key_note(&self) -> String {
        match &self.id {
            Some(k) => format!(" (key {}, generated when empty)", k.name()),
            None => {
                format!(" (no {} field: records get a hidden key and can be listed, not fetched)", self.key_names())
            }
        }
    }

    /// `GetPersonRequest.person_id = Person.person_id`, for `check`.
    fn lookup(&self, key: &FieldDescriptor) -> String {
        let own = self.id.as_ref().map_or("?", |f| f.name());
        format!("{}.{} = {}.{own}", key.parent_message().name(), key.name(), self.display)
    }

    fn not_found(&self, id: &str) -> Error {
        Error::not_found(format!("{} '{}' not found", self.display, id))
    }

    /// A stored record too large to send: named, with the page token that
    /// continues past it (`None` when it is the last record).
    fn unlistable(&self, bytes: &Bytes, max: usize, past: Option<String>) -> Error {
        let id = self.id.as_ref().and_then(|f| {
            let m = DynamicMessage::decode(self.msg.clone(), bytes.clone()).ok()?;
            Some(format!(" '{}'", key_str(&m.get_field(f))))
        });
        let resume = match past {
            Some(t) => format!("; page_token \"{t}\" continues past it"),
            None => "; it is the last record".to_owned(),
        };
        Error::too_large(format!(
            "{}{} is {} bytes, larger than the {max}-byte reply limit (see --max-message-size), \
             so it cannot be listed{resume}",
            self.display,
            id.unwrap_or_default(),
            bytes.len()
        ))
    }
}

/// Where a list page starts, owned (a client's `page_token` is a store token,
/// or the id of the last record it saw).
#[derive(Debug, Clone)]
enum Cursor {
    Start,
    Token(String),
    Id(String),
}

impl Cursor {
    fn after(&self) -> After<'_> {
        match self {
            Cursor::Start => After::Start,
            Cursor::Token(t) => After::Token(t),
            Cursor::Id(id) => After::Id(id),
        }
    }

    /// The first page of a list: `page_token` read as a store token, else as an id.
    fn first(store: &dyn Store, q: &ListQuery, n: usize) -> Result<(Page, Cursor), Error> {
        let Some(tok) = q.after_id.as_deref() else {
            return Ok((store.page(&q.table, After::Start, n)?, Cursor::Start));
        };
        match store.page(&q.table, After::Token(tok), n) {
            Ok(page) => Ok((page, Cursor::Token(tok.to_owned()))),
            Err(e) if e.is_invalid_argument() => {
                Ok((store.page(&q.table, After::Id(tok), n)?, Cursor::Id(tok.to_owned())))
            }
            Err(e) => Err(e),
        }
    }

    /// The token that continues after the first `k` records from here.
    fn past(&self, store: &dyn Store, table: &str, k: usize) -> Result<Option<String>, Error> {
        Ok(store.page(table, self.after(), k)?.next)
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
    fn resolve(input: &MessageDescriptor, res: &Resource) -> Result<Source, Miss> {
        if let Some(f) =
            input.fields().find(|f| !f.is_list() && matches!(f.kind(), FieldKind::Message(m) if m == res.msg))
        {
            return Ok(Source::Embedded(f));
        }
        let pairs: Vec<_> = input
            .fields()
            .filter_map(|rf| {
                let of = res.msg.get_field_by_name(rf.name())?;
                (of.kind() == rf.kind() && of.cardinality() == rf.cardinality()).then_some((rf, of))
            })
            .collect();
        require(!pairs.is_empty(), || {
            let mut why = format!(
                "{} has no {} field and no field of the same name and type as one of {}'s",
                input.name(),
                res.display,
                res.display
            );
            let skipped = type_mismatches(input, res);
            if !skipped.is_empty() {
                why.push_str(&format!(" ({})", skipped.join("; ")));
            }
            why
        })?;
        Ok(Source::Fields(pairs))
    }

    /// Request fields named like a resource field of another type, which are
    /// not copied (for `check` and the startup log).
    fn skipped(&self, res: &Resource) -> Vec<String> {
        match self {
            Source::Fields(pairs) => {
                pairs.first().map(|(rf, _)| type_mismatches(rf.parent_message(), res)).unwrap_or_default()
            }
            Source::Embedded(_) => Vec::new(),
        }
    }

    /// The request as it would be had it carried the whole record `merged`
    /// (validation rules are written on the request type).
    fn as_request(&self, req: &DynamicMessage, merged: &DynamicMessage) -> DynamicMessage {
        let mut out = req.clone();
        match self {
            Source::Embedded(f) => out.set_field(f, Value::Message(merged.clone())),
            Source::Fields(pairs) => {
                for (rf, of) in pairs {
                    if merged.has_field(of) {
                        out.set_field(rf, merged.get_field(of).into_owned());
                    } else {
                        out.clear_field(rf);
                    }
                }
            }
        }
        out
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

/// `count is int32 in CreatePersonRequest but int64 in Person` for every request
/// field whose resource namesake has another type or cardinality.
fn type_mismatches(input: &MessageDescriptor, res: &Resource) -> Vec<String> {
    input
        .fields()
        .filter_map(|rf| {
            let of = res.msg.get_field_by_name(rf.name())?;
            (of.kind() != rf.kind() || of.cardinality() != rf.cardinality()).then(|| {
                format!(
                    "{} is {} in {} but {} in {}",
                    rf.name(),
                    type_name(&rf),
                    input.name(),
                    type_name(&of),
                    res.display
                )
            })
        })
        .collect()
}

/// A field's type as written in a .proto file: `repeated string`, `int64`, `users.Address`.
fn type_name(f: &FieldDescriptor) -> String {
    let kind = match f.kind() {
        FieldKind::Message(m) => m.full_name().to_owned(),
        FieldKind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_ascii_lowercase(),
    };
    if f.is_map() {
        format!("map ({kind})")
    } else if f.is_list() {
        format!("repeated {kind}")
    } else {
        kind
    }
}

/// Which request field names the record to read or delete: a field named like
/// the resource's key, else `<x>_id` or `id` (`name` only names a record of a
/// resource keyed by `name`).
fn key_field(input: &MessageDescriptor, res: &Resource) -> Result<FieldDescriptor, Miss> {
    let Some(key) = &res.id else {
        return Err(Miss::Why(format!("{} has no {} field to find records by", res.display, res.key_names())));
    };
    let own = format!("{}_id", snake_case(&res.display));
    let mut names = vec![key.name(), own.as_str(), "id"];
    names.dedup();
    names.iter().filter_map(|n| input.get_field_by_name(n)).find(is_key_kind).ok_or_else(|| {
        Miss::Why(format!(
            "{} has no {} field naming the {} (keyed by {})",
            input.name(),
            names.join(" or "),
            res.display,
            key.name()
        ))
    })
}

/// Why a method is not served by the store.
#[derive(Debug)]
enum Miss {
    /// Its name follows no convention.
    NoConvention,
    /// Its name looks like one, but the schema does not fit; says why.
    Why(String),
}

/// `Err(Miss::Why(..))` unless `ok`.
fn require(ok: bool, why: impl FnOnce() -> String) -> Result<(), Miss> {
    if ok { Ok(()) } else { Err(Miss::Why(why())) }
}

/// A resolved convention for one method. Update's `mask` is the request's
/// `update_mask` field (`google.protobuf.FieldMask`), if it has one.
#[derive(Debug)]
pub(crate) enum Plan {
    Create { res: Resource, from: Source },
    Get { res: Resource, key: FieldDescriptor },
    List(ListPlan),
    BulkCreate { res: Resource, from: Source, count: Option<FieldDescriptor>, ids: Option<FieldDescriptor> },
    Update { res: Resource, from: Source, mask: Option<FieldDescriptor> },
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
    /// Matches a method to a convention: `Miss::NoConvention` when its name
    /// follows none, `Miss::Why` when it does but the schema does not fit.
    fn resolve(method: &MethodDescriptor) -> Result<Plan, Miss> {
        let pool = method.parent_pool();
        let package = method.parent_service().package_name().to_owned();
        let name = method.name();
        let input = method.input();
        let output = method.output();
        let kind = Kind::of(method);
        let find = |x: &str| resource(pool, &package, x, &output);
        let find_one = |x: &str| {
            find(x).ok_or_else(|| Miss::Why(format!("no message {x} in package '{package}' (nor as the output type)")))
        };
        let find_plural = |x: &str| {
            // The regular plural first: pluralizer's rules are regexes compiled on
            // first use (tens of milliseconds and megabytes at startup), so they
            // are only consulted for names like `People` or `Categories`.
            if let Some(res) = x.strip_suffix('s').filter(|s| !s.is_empty()).and_then(&find) {
                return Ok(res);
            }
            let candidates = plural_candidates(x);
            candidates.iter().find_map(|c| find(c)).ok_or_else(|| {
                Miss::Why(format!(
                    "none of {} is a message in package '{package}' (nor the output type)",
                    candidates.join(", ")
                ))
            })
        };
        let unary_returning = |res: &Resource| {
            require(kind == Kind::Unary && output == res.msg, || {
                format!("{name} must be unary and return {}, not {} {}", res.display, kind.name(), output.name())
            })
        };

        if let Some(x) = name.strip_prefix("BulkCreate") {
            let res = find_plural(x)?;
            require(kind == Kind::ClientStreaming, || format!("{name} must be client-streaming, not {}", kind.name()))?;
            let from = Source::resolve(&input, &res)?;
            let count = output.fields().find(|f| {
                f.name().ends_with("count")
                    && matches!(f.kind(), FieldKind::Int32 | FieldKind::Int64 | FieldKind::Uint32 | FieldKind::Uint64)
                    && !f.is_list()
            });
            let ids =
                output.fields().find(|f| f.is_list() && f.kind() == FieldKind::String && f.name().ends_with("ids"));
            return Ok(Plan::BulkCreate { res, from, count, ids });
        }
        if let Some(x) = name.strip_prefix("Create") {
            let res = find_one(x)?;
            unary_returning(&res)?;
            let from = Source::resolve(&input, &res)?;
            return Ok(Plan::Create { res, from });
        }
        if let Some(x) = name.strip_prefix("Get") {
            let res = find_one(x)?;
            unary_returning(&res)?;
            let key = key_field(&input, &res)?;
            return Ok(Plan::Get { res, key });
        }
        if let Some(x) = name.strip_prefix("Update") {
            let res = find_one(x)?;
            unary_returning(&res)?;
            require(res.id.is_some(), || {
                format!("{} has no {} field to find records by", res.display, res.key_names())
            })?;
            let from = Source::resolve(&input, &res)?;
            let mask = (input != res.msg)
                .then(|| input.get_field_by_name("update_mask"))
                .flatten()
                .filter(|f| !f.is_list() && matches!(f.kind(), FieldKind::Message(m) if m.full_name() == FIELD_MASK));
            return Ok(Plan::Update { res, from, mask });
        }
        if let Some(x) = name.strip_prefix("Delete") {
            let res = find_one(x)?;
            require(kind == Kind::Unary, || format!("{name} must be unary, not {}", kind.name()))?;
            let key = key_field(&input, &res)?;
            return Ok(Plan::Delete { res, key, output });
        }
        if let Some(x) = name.strip_prefix("List") {
            let res = find_plural(x)?;
            let page_size = input.get_field_by_name("page_size").filter(|f| {
                !f.is_list()
                    && matches!(f.kind(), FieldKind::Int32 | FieldKind::Int64 | FieldKind::Uint32 | FieldKind::Uint64)
            });
            let page_token =
                input.get_field_by_name("page_token").filter(|f| f.kind() == FieldKind::String && !f.is_list());
            let shape = || {
                format!(
                    "{name} must stream {0} (returns (stream {0})) or be unary returning a message \
                     with a repeated {0} field; it is {1} returning {2}",
                    res.display,
                    kind.name(),
                    output.name()
                )
            };
            let unary = match kind {
                Kind::ServerStreaming if output == res.msg => None,
                Kind::Unary => {
                    let items = output
                        .fields()
                        .find(|f| f.is_list() && matches!(f.kind(), FieldKind::Message(m) if m == res.msg))
                        .ok_or_else(|| Miss::Why(shape()))?;
                    let next = output.get_field_by_name("next_page_token").filter(|f| f.kind() == FieldKind::String);
                    Some((output.clone(), items, next))
                }
                _ => return Err(Miss::Why(shape())),
            };
            return Ok(Plan::List(ListPlan { res, page_size, page_token, unary }));
        }
        Err(Miss::NoConvention)
    }

    /// Serves a unary method; `max` is the reply size limit.
    pub(crate) fn unary(&self, store: &dyn Store, req: DynamicMessage, max: usize) -> Result<Reply, Error> {
        match self {
            Plan::Create { res, from } => {
                let (id, bytes) = new_record(res, from, req, &mut in_table(store, res));
                fits(res, &bytes, max)?;
                store.insert(res.table(), id, bytes.clone()).map_err(|e| exists(res, e))?;
                Ok(Reply::Encoded(bytes))
            }
            Plan::Get { res, key } => {
                let id = req.get_field(key);
                let id = key_str(&id);
                store.get(res.table(), &id)?.map(Reply::Encoded).ok_or_else(|| res.not_found(&id))
            }
            Plan::Update { .. } => Err(Error::internal("Update is served by Convention::update")),
            Plan::Delete { res, key, output } => {
                let id = key_string(&req.get_field(key));
                let old = store.delete(res.table(), &id)?.ok_or_else(|| res.not_found(&id))?;
                Ok(if *output == res.msg {
                    Reply::Encoded(old)
                } else {
                    Reply::Message(DynamicMessage::new(output.clone()))
                })
            }
            Plan::List(list) => {
                let (items, next) = list.page(store, &req, max)?;
                let Some((output, items_field, next_field)) = list.unary.as_ref() else {
                    return Err(Error::internal("streaming list called as unary"));
                };
                let mut out = DynamicMessage::new(output.clone());
                let decoded = items
                    .into_iter()
                    .map(|b| DynamicMessage::decode(list.res.msg.clone(), b).map(Value::Message))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::internal(format!("stored {} does not decode: {e}", list.res.display)))?;
                out.set_field(items_field, Value::List(decoded));
                if let (Some(f), Some(tok)) = (next_field, next) {
                    out.set_field(f, Value::String(tok));
                }
                Ok(Reply::Message(out))
            }
            Plan::BulkCreate { .. } => Err(Error::internal("BulkCreate is client-streaming")),
        }
    }

    /// What a server-streaming list asks for.
    pub(crate) fn stream(&self, req: &DynamicMessage) -> Result<ListQuery, Error> {
        match self {
            Plan::List(list) => Ok(list.query(req)),
            _ => Err(Error::internal("not a streaming convention")),
        }
    }

    /// The resource this convention works on.
    fn resource(&self) -> &Resource {
        match self {
            Plan::Create { res, .. }
            | Plan::Get { res, .. }
            | Plan::BulkCreate { res, .. }
            | Plan::Update { res, .. }
            | Plan::Delete { res, .. } => res,
            Plan::List(l) => &l.res,
        }
    }

    /// One line saying what this convention does, for `check` and logs.
    pub(crate) fn describe(&self) -> String {
        let skipped = self.skipped();
        if skipped.is_empty() { self.what() } else { format!("{}; not copied: {}", self.what(), skipped.join("; ")) }
    }

    /// Request fields not copied because their types differ from the resource's.
    fn skipped(&self) -> Vec<String> {
        match self {
            Plan::Create { res, from } | Plan::BulkCreate { res, from, .. } | Plan::Update { res, from, .. } => {
                from.skipped(res)
            }
            _ => Vec::new(),
        }
    }

    fn what(&self) -> String {
        match self {
            Plan::Create { res, .. } => format!("store: create {}{}", res.display, res.key_note()),
            Plan::Get { res, key } => format!("store: get {} by {}", res.display, res.lookup(key)),
            Plan::List(l) => format!("store: list {}", l.res.display),
            Plan::BulkCreate { res, .. } => format!("store: bulk create {}{}", res.display, res.key_note()),
            Plan::Update { res, mask, .. } => format!(
                "store: update {} by {}.{}{}",
                res.display,
                res.display,
                res.id.as_ref().map_or("?", |f| f.name()),
                if mask.is_some() { ", honouring update_mask" } else { ", merging the fields the request sets" }
            ),
            Plan::Delete { res, key, .. } => format!("store: delete {} by {}", res.display, res.lookup(key)),
        }
    }
}

/// A list request: up to `n` records of `table` after the record `after_id`.
#[derive(Debug)]
pub(crate) struct ListQuery {
    pub(crate) table: String,
    pub(crate) after_id: Option<String>,
    pub(crate) n: usize,
}

impl ListPlan {
    fn query(&self, req: &DynamicMessage) -> ListQuery {
        let size = self.page_size.as_ref().map(|f| key_string(&req.get_field(f)));
        let token = self.page_token.as_ref().map(|f| key_string(&req.get_field(f))).filter(|t| !t.is_empty());
        ListQuery { table: self.res.table().to_owned(), after_id: token, n: page_size(size.as_deref()) }
    }

    /// A unary list's page. Its `page_token` is the `next_page_token` of the
    /// previous page (opaque, valid across deletions) or, as before tokens were
    /// opaque, the id of the last record seen. A page holds what fits in a
    /// reply of `max` bytes (its token continues from there); a first record too
    /// large for any reply is an error naming it, with the token past it.
    fn page(&self, store: &dyn Store, req: &DynamicMessage, max: usize) -> Result<(Vec<Bytes>, Option<String>), Error> {
        let q = self.query(req);
        let (mut page, cursor) = Cursor::first(store, &q, q.n)?;
        // Room for the next_page_token field and the reply's own framing.
        let budget = max.saturating_sub(64);
        let (mut total, mut keep) = (0usize, 0usize);
        for b in &page.records {
            let add = b.len() + 16;
            if total + add > budget {
                break;
            }
            total += add;
            keep += 1;
        }
        if keep < page.records.len() {
            if keep == 0 {
                let past = cursor.past(store, &q.table, 1)?;
                return Err(self.res.unlistable(&page.records[0], max, past));
            }
            page.records.truncate(keep);
            page.next = cursor.past(store, &q.table, keep)?;
        }
        Ok((page.records, page.next))
    }

    /// [`Self::query`], reading `page_size` and `page_token` straight from the request bytes.
    fn query_raw(&self, shape: &FlatShape, input: &Input) -> Result<ListQuery, Error> {
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
        Ok(ListQuery { table: self.res.table().to_owned(), after_id: token, n: page_size(size.as_deref()) })
    }
}

/// `page_size` when positive, else the default of 10.
fn page_size(value: Option<&str>) -> usize {
    match value.map(str::parse::<i64>) {
        Some(Ok(n)) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => 10,
    }
}

/// A convention plus its wire-level fast paths, used when the request type is
/// flat (see [`wire`]): then Get, List and Create never build a dynamic message.
#[derive(Debug)]
pub(crate) struct Convention {
    plan: Plan,
    shape: Option<FlatShape>,
    create: Option<FastCreate>,
    /// The reply size limit: checked before anything is stored, so a call that
    /// answers RESOURCE_EXHAUSTED has stored nothing.
    max_send: usize,
}

impl Convention {
    /// Matches a method to a convention, or `None` when none applies.
    fn resolve(method: &MethodDescriptor, max_send: usize) -> Result<Convention, Miss> {
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
        Ok(Convention { plan, shape, create, max_send })
    }

    /// One line saying what this convention does, for `check` and logs.
    pub(crate) fn describe(&self) -> String {
        self.plan.describe()
    }

    /// Serves a unary method: validates the request (an update validates the
    /// merged record instead), then answers it.
    pub(crate) fn unary(&self, store: &dyn Store, ex: &Exchange, input: Input) -> Result<Reply, Error> {
        if let Plan::Update { res, from, mask } = &self.plan {
            return self.update(store, ex, res, from, mask.as_ref(), input.message()?);
        }
        let input = ex.checked(input)?;
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
                store.get(res.table(), &id)?.map(Reply::Encoded).ok_or_else(|| res.not_found(&id))
            }
            (Plan::Create { res, .. }, Some(shape), Some(fast)) => {
                let (id, bytes) =
                    fast.record(res, shape, &input.raw, &mut in_table(store, res)).map_err(|e| input.malformed(e))?;
                fits(res, &bytes, self.max_send)?;
                store.insert(res.table(), id, bytes.clone()).map_err(|e| exists(res, e))?;
                Ok(Reply::Encoded(bytes))
            }
            _ => self.plan.unary(store, input.message()?, self.max_send),
        }
    }

    /// `Update<X>`: with an `update_mask` only its paths change (AIP-134; `*`
    /// replaces the record, keeping its create time), without one the fields the
    /// request sets. The store runs the merge under the record's lock, so
    /// concurrent updates of one record never lose each other's fields; the
    /// merged record is validated (as the request would carry it) and
    /// size-checked there, and an error leaves the record as it was.
    fn update(
        &self,
        store: &dyn Store,
        ex: &Exchange,
        res: &Resource,
        from: &Source,
        mask: Option<&FieldDescriptor>,
        req: DynamicMessage,
    ) -> Result<Reply, Error> {
        let mask = match mask {
            Some(f) => Mask::parse(res, &req.get_field(f))?,
            None => Mask::SetFields,
        };
        let check = !matches!(ex.route.validation, Validation::None);
        let original = if check { Some(req.clone()) } else { None };
        let mut patch = from.build(res, req);
        let Some(id_field) = res.id.as_ref() else {
            return Err(Error::internal("update convention without an id field"));
        };
        let id = key_string(&patch.get_field(id_field));
        if let Some(f) = &res.updated {
            patch.set_field(f, now_value(f));
        }
        let merged = store.update(res.table(), &id, &mut |old| {
            let old = DynamicMessage::decode(res.msg.clone(), old.clone())
                .map_err(|e| Error::internal(format!("stored {} '{id}' does not decode: {e}", res.display)))?;
            let merged = mask.apply(res, old, &patch);
            if let Some(req) = &original {
                let as_sent = from.as_request(req, &merged);
                match &ex.route.validation {
                    Validation::None => {}
                    Validation::Native(rules) => rules.check_message_as(&as_sent, Naming::Named)?,
                    Validation::Full => validate::check_as(ex.snap.validator(), &as_sent, Naming::Named)?,
                }
            }
            let bytes = Bytes::from(merged.encode_to_vec());
            fits(res, &bytes, self.max_send)?;
            Ok(bytes)
        })?;
        merged.map(Reply::Encoded).ok_or_else(|| res.not_found(&id))
    }

    /// What a server-streaming list asks for (read from the request bytes when flat).
    pub(crate) fn stream(&self, input: Input) -> Result<ListQuery, Error> {
        match (&self.plan, &self.shape) {
            (Plan::List(list), Some(shape)) if list.unary.is_none() => list.query_raw(shape, &input),
            _ => self.plan.stream(&input.message()?),
        }
    }

    /// Serves a client-streaming bulk create, all or nothing: every request is
    /// read and validated before any is stored, and an error names the position
    /// of the message that failed (`requests[3]`, also in BadRequest field paths).
    pub(crate) fn bulk(&self, store: &dyn Store, ex: &Exchange, frames: Vec<Bytes>) -> Result<Reply, Error> {
        let Plan::BulkCreate { res, from, count, ids } = &self.plan else {
            return Err(Error::internal("not a client-streaming convention"));
        };
        let inputs = frames
            .into_iter()
            .enumerate()
            .map(|(i, raw)| checked_as(ex, ex.input(raw), Naming::InStream(i)).map_err(|e| in_stream(e, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut batch = std::collections::HashSet::new();
        let mut taken = in_table_or_batch(store, res, &mut batch);
        let records = match (&self.shape, &self.create) {
            (Some(shape), Some(fast)) => inputs
                .iter()
                .enumerate()
                .map(|(n, i)| fast.record(res, shape, &i.raw, &mut taken).map_err(|e| in_stream(i.malformed(e), n)))
                .collect::<Result<Vec<_>, _>>()?,
            _ => inputs
                .into_iter()
                .enumerate()
                .map(|(n, i)| i.message().map(|m| new_record(res, from, m, &mut taken)).map_err(|e| in_stream(e, n)))
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
        if out.len() > self.max_send {
            return Err(Error::too_large(format!(
                "the reply to {} {} creates would be {} bytes, larger than the {}-byte limit \
                 (see --max-message-size); nothing was stored",
                records.len(),
                res.display,
                out.len(),
                self.max_send
            )));
        }
        store.insert_all(res.table(), records).map_err(|e| exists(res, e))?;
        Ok(Reply::Encoded(Bytes::from(out)))
    }
}

const FIELD_MASK: &str = "google.protobuf.FieldMask";

/// What an update changes.
#[derive(Debug)]
enum Mask {
    /// No mask (or an empty one): the fields the request sets.
    SetFields,
    /// `*`: the whole record.
    All,
    /// These paths, each a chain of fields from the resource down.
    Paths(Vec<Vec<FieldDescriptor>>),
}

impl Mask {
    /// Reads an `update_mask` value: every path must name fields of the resource
    /// (singular message fields before the last dot); `*` only alone.
    fn parse(res: &Resource, value: &Value) -> Result<Mask, Error> {
        let paths: Vec<String> = match value {
            Value::Message(m) => match m.get_field_by_name("paths").as_deref() {
                Some(Value::List(l)) => l.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        match paths.as_slice() {
            [] => return Ok(Mask::SetFields),
            ["*"] => return Ok(Mask::All),
            _ => {}
        }
        let bad =
            |path: &str, why: String| Error::invalid_argument(format!("update_mask: invalid path '{path}': {why}"));
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            if path == "*" {
                return Err(bad(path, "'*' must be the only path".to_owned()));
            }
            let mut msg = res.msg.clone();
            let mut chain = Vec::new();
            let mut segments = path.split('.').peekable();
            while let Some(seg) = segments.next() {
                let field = msg
                    .get_field_by_name(seg)
                    .or_else(|| msg.get_field_by_json_name(seg))
                    .ok_or_else(|| bad(path, format!("{} has no field '{seg}'", msg.name())))?;
                if segments.peek().is_some() {
                    match field.kind() {
                        FieldKind::Message(m) if !field.is_list() && !field.is_map() => msg = m,
                        _ => return Err(bad(path, format!("'{seg}' is not a singular message field"))),
                    }
                }
                chain.push(field);
            }
            out.push(chain);
        }
        Ok(Mask::Paths(out))
    }

    /// The record after the update: `old` with the masked parts of `patch`.
    fn apply(&self, res: &Resource, mut old: DynamicMessage, patch: &DynamicMessage) -> DynamicMessage {
        match self {
            Mask::SetFields => {
                for (f, v) in patch.fields() {
                    old.set_field(&f, v.clone());
                }
                old
            }
            Mask::All => {
                // A full replacement, but the create time stays the server's.
                let mut next = patch.clone();
                if let Some(f) = &res.created {
                    if old.has_field(f) {
                        next.set_field(f, old.get_field(f).into_owned());
                    } else {
                        next.clear_field(f);
                    }
                }
                next
            }
            Mask::Paths(paths) => {
                for path in paths {
                    replace_path(&mut old, patch, path);
                }
                // The update time is the server's, whatever the mask says.
                if let Some(f) = &res.updated {
                    old.set_field(f, patch.get_field(f).into_owned());
                }
                old
            }
        }
    }
}

/// Sets the field at `path` in `target` to its value in `patch` (clears it when
/// `patch` does not set it).
fn replace_path(target: &mut DynamicMessage, patch: &DynamicMessage, path: &[FieldDescriptor]) {
    let Some((field, rest)) = path.split_first() else { return };
    if rest.is_empty() {
        if patch.has_field(field) {
            target.set_field(field, patch.get_field(field).into_owned());
        } else {
            target.clear_field(field);
        }
        return;
    }
    let sub_patch = patch.get_field(field);
    let Some(sub_patch) = sub_patch.as_message() else { return };
    if let Value::Message(sub) = target.get_field_mut(field) {
        replace_path(sub, sub_patch, rest);
    }
}

/// Validates a request like `Exchange::checked`, reporting violations as `naming` says.
fn checked_as(ex: &Exchange, mut input: Input, naming: Naming) -> Result<Input, Error> {
    match &ex.route.validation {
        Validation::None => {}
        Validation::Native(rules) => {
            rules.check_raw_as(&input.raw, naming).map_err(|e| e.unwrap_or_else(|bad| input.malformed(bad)))?
        }
        Validation::Full => validate::check_as(ex.snap.validator(), input.message_ref()?, naming)?,
    }
    Ok(input)
}

/// Names the position of a client stream's message in a malformed-request error
/// (validation errors name it in their field paths already).
fn in_stream(e: Error, i: usize) -> Error {
    if e.is_malformed() { Error::malformed(format!("requests[{i}]: {e}")) } else { e }
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

    fn record(
        &self,
        res: &Resource,
        shape: &FlatShape,
        raw: &[u8],
        taken: Taken<'_>,
    ) -> Result<(String, Bytes), String> {
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
                    let fresh = new_id(idf, taken);
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

/// Says whether another record has an id already (to draw a generated one again).
type Taken<'a> = &'a mut dyn FnMut(&str) -> bool;

/// A fresh id that fits the field: a UUID v4 for strings; for integers a random
/// positive number in the field's range (31 bits for int32, 32 for uint32, 53 for
/// 64-bit fields, exact in JSON clients' doubles), drawn again while `taken`
/// says another record has it (small ranges collide).
fn new_id(field: &FieldDescriptor, taken: Taken<'_>) -> String {
    let bits = match field.kind() {
        FieldKind::String => return uuid::Uuid::new_v4().to_string(),
        FieldKind::Int32 => 31,
        FieldKind::Uint32 => 32,
        _ => 53,
    };
    let mut id = String::new();
    for _ in 0..64 {
        let n = (uuid::Uuid::new_v4().as_u128() as u64) >> (64 - bits);
        id = n.max(1).to_string();
        if !taken(&id) {
            break;
        }
    }
    id
}

/// `taken` for one record: is the id in the table already?
fn in_table<'a>(store: &'a dyn Store, res: &'a Resource) -> impl FnMut(&str) -> bool + 'a {
    move |id| store.get(res.table(), id).ok().flatten().is_some()
}

/// `taken` for a batch: in the table, or generated earlier in the batch (a
/// generated id is remembered as it is handed out).
fn in_table_or_batch<'a>(
    store: &'a dyn Store,
    res: &'a Resource,
    batch: &'a mut std::collections::HashSet<String>,
) -> impl FnMut(&str) -> bool + 'a {
    move |id| batch.contains(id) || store.get(res.table(), id).ok().flatten().is_some() || !batch.insert(id.to_owned())
}

/// Refuses a record that could not be sent back (the reply to Create and Update
/// is the record) before it is stored.
fn fits(res: &Resource, bytes: &Bytes, max: usize) -> Result<(), Error> {
    if bytes.len() > max {
        return Err(Error::too_large(format!(
            "the {} record would be {} bytes, larger than the {max}-byte reply limit \
             (see --max-message-size); nothing was stored",
            res.display,
            bytes.len()
        )));
    }
    Ok(())
}

fn exists(res: &Resource, e: InsertError) -> Error {
    match e {
        InsertError::Exists(id) => Error::already_exists(format!("{} '{}' already exists", res.display, id)),
        InsertError::Store(e) => e,
    }
}

/// Builds and encodes a new record: fields from the request, a UUID v4 for an empty
/// string id, a sequence number for a zero integer id, `created_at` = now.
fn new_record(res: &Resource, from: &Source, req: DynamicMessage, taken: Taken<'_>) -> (String, Bytes) {
    let mut msg = from.build(res, req);
    let id;
    if let Some(f) = &res.id {
        let mut given = key_string(&msg.get_field(f));
        if needs_new_id(f, &given) {
            given = new_id(f, taken);
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

/// The resource names a plural method name may mean, most likely first:
/// `People` -> [`Person`, `People`], `OrderItems` -> [`OrderItem`, ...]. The last
/// word of a CamelCase name carries the plural, so it is singularised on its own
/// (by the pluralizer crate's English rules, irregular nouns included), then the
/// whole name, then the name as it is (`News`, `UserData`).
fn plural_candidates(x: &str) -> Vec<String> {
    let split = x.char_indices().rev().find(|(_, c)| c.is_ascii_uppercase()).map_or(0, |(i, _)| i);
    let (head, last) = x.split_at(split);
    let mut v = vec![format!("{head}{}", pluralizer::pluralize(last, 1, false))];
    for c in [pluralizer::pluralize(x, 1, false), x.to_owned()] {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

/// `OrderItem` -> `order_item`; an acronym is one word: `APIKey` -> `api_key`.
fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let starts_word = match prev {
                None | Some('_') => false,
                Some(p) => p.is_ascii_lowercase() || p.is_ascii_digit() || (p.is_ascii_uppercase() && next_lower),
            };
            if starts_word {
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
pub(crate) fn load_data(store: &dyn Store, pool: &DescriptorPool, path: &std::path::Path) -> Result<usize, String> {
    let doc: serde_json::Value = super::data::read(path)?;
    load_doc(store, pool, doc).map_err(|e| format!("data file '{}': {e}", path.display()))
}

/// Loads a parsed data document. A record without a key gets one generated, as
/// Create does; records of a message no store method serves are loaded with a
/// warning naming it; a record that does not fit its message is refused,
/// naming the field and the value.
fn load_doc(store: &dyn Store, pool: &DescriptorPool, doc: serde_json::Value) -> Result<usize, String> {
    let serde_json::Value::Object(map) = doc else {
        return Err("expected a map of message full name -> list of records".to_owned());
    };
    let served = served_tables(pool);
    let mut total = 0;
    for (name, records) in map {
        let desc = pool.get_message_by_name(&name).ok_or_else(|| format!("no message named '{name}' in the schema"))?;
        let res = Resource::new(desc.clone());
        let serde_json::Value::Array(records) = records else {
            return Err(format!("'{name}' must be a list of records"));
        };
        if !served.contains(name.as_str()) {
            tracing::warn!(
                "--data: {} {name} record(s) loaded, but no store method serves {name} \
                 (no Create/Get/List/Update/Delete method of the schema matches it); nothing will read them",
                records.len()
            );
        }
        let mut batch = Vec::with_capacity(records.len());
        let mut generated = std::collections::HashSet::new();
        let mut taken = in_table_or_batch(store, &res, &mut generated);
        for (i, rec) in records.iter().enumerate() {
            let mut msg = DynamicMessage::deserialize(desc.clone(), rec)
                .map_err(|e| format!("{name} record #{}: {}{e}", i + 1, locate(&desc, rec, "").unwrap_or_default()))?;
            let id = match &res.id {
                Some(f) => {
                    let id = key_string(&msg.get_field(f));
                    if needs_new_id(f, &id) {
                        let fresh = new_id(f, &mut taken);
                        let value = match f.kind() {
                            FieldKind::String => Value::String(fresh.clone()),
                            _ => int_value(f, fresh.parse().unwrap_or(1)),
                        };
                        msg.set_field(f, value);
                        fresh
                    } else {
                        id
                    }
                }
                None => uuid::Uuid::new_v4().to_string(),
            };
            batch.push((id, Bytes::from(msg.encode_to_vec())));
        }
        total += batch.len();
        store.insert_all(&name, batch).map_err(|e| match e {
            InsertError::Exists(id) => format!("{name} record with id '{id}' appears twice"),
            InsertError::Store(e) => format!("{name}: {e}"),
        })?;
    }
    Ok(total)
}

/// The tables (message full names) some store convention of the schema uses.
fn served_tables(pool: &DescriptorPool) -> std::collections::HashSet<String> {
    pool.services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .filter_map(|m| Plan::resolve(&m).ok().map(|p| p.resource().table().to_owned()))
        .collect()
}

/// Finds the field of a record that does not fit `desc`, for the error message:
/// `field 'address.zip' = 5: `. `None` when no single field is to blame.
fn locate(desc: &MessageDescriptor, rec: &serde_json::Value, prefix: &str) -> Option<String> {
    let serde_json::Value::Object(fields) = rec else {
        let at = if prefix.is_empty() { String::new() } else { format!(" at '{}'", prefix.trim_end_matches('.')) };
        return Some(format!("expected an object{at}, found {}: ", short(rec)));
    };
    for (key, value) in fields {
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else {
            return Some(format!("{} has no field '{prefix}{key}': ", desc.full_name()));
        };
        let alone = serde_json::Value::Object([(key.clone(), value.clone())].into_iter().collect());
        if DynamicMessage::deserialize(desc.clone(), &alone).is_ok() {
            continue;
        }
        let path = format!("{prefix}{}", field.name());
        if let FieldKind::Message(m) = field.kind() {
            if field.is_list() {
                if let serde_json::Value::Array(items) = value {
                    for (i, item) in items.iter().enumerate() {
                        if DynamicMessage::deserialize(m.clone(), item).is_err() {
                            return locate(&m, item, &format!("{path}[{i}]."))
                                .or_else(|| Some(format!("field '{path}[{i}]' = {}: ", short(item))));
                        }
                    }
                }
            } else if !field.is_map()
                && value.is_object()
                && let Some(inner) = locate(&m, value, &format!("{path}."))
            {
                return Some(inner);
            }
        }
        return Some(format!("field '{path}' = {}: ", short(value)));
    }
    None
}

/// A JSON value for a message, cut to 60 characters.
fn short(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The resource-store responder: CRUD-shaped methods answered from a [`Store`].
#[derive(Debug)]
pub(crate) struct StoreResponder {
    store: Arc<dyn Store>,
    /// The reply size limit (`--max-message-size`).
    max_send: usize,
    /// Most request bytes one client-streaming call may buffer before storing.
    max_call_buffer: usize,
}

impl StoreResponder {
    pub(crate) fn new(store: Arc<dyn Store>, max_send: usize, max_call_buffer: usize) -> Self {
        Self { store, max_send, max_call_buffer }
    }
}

impl Responder for StoreResponder {
    fn name(&self) -> &'static str {
        "store"
    }

    fn resolve(&self, method: &MethodDescriptor) -> Result<Option<Arc<dyn Respond>>, BuildError> {
        Ok(Convention::resolve(method, self.max_send).ok().map(|conv| {
            let skipped = conv.plan.skipped();
            if !skipped.is_empty() {
                tracing::warn!(
                    method = method.full_name(),
                    "request fields of another type than the resource's are not copied: {}",
                    skipped.join("; ")
                );
            }
            let route = StoreRoute { conv, store: self.store.clone(), max_call_buffer: self.max_call_buffer };
            Arc::new(StoreRouteRef(Arc::new(route))) as Arc<dyn Respond>
        }))
    }

    fn explain(&self, method: &MethodDescriptor) -> Option<String> {
        match Plan::resolve(method) {
            Err(Miss::Why(why)) => Some(why),
            _ => None,
        }
    }
}

/// One method answered by the store.
#[derive(Debug)]
struct StoreRoute {
    conv: Convention,
    store: Arc<dyn Store>,
    max_call_buffer: usize,
}

/// A batch this large is validated, built and stored on the blocking pool.
const HEAVY_BATCH: usize = 1024;

impl StoreRoute {
    /// Reads a client stream whole (all or nothing needs every request before
    /// storing any), refusing more than `max_call_buffer` bytes.
    async fn collect(&self, path: &str, mut frames: crate::call::Frames) -> Result<Vec<Bytes>, Error> {
        let (mut all, mut bytes) = (Vec::new(), 0usize);
        while let Some(raw) = frames.try_next().await? {
            bytes += raw.len();
            if bytes > self.max_call_buffer {
                return Err(Error::too_large(format!(
                    "{path}: the request stream is larger than the {}-byte limit one call may buffer \
                     (see --max-call-buffer); nothing was stored",
                    self.max_call_buffer
                )));
            }
            all.push(raw);
        }
        Ok(all)
    }

    /// Validates, builds and stores a batch, all or nothing.
    fn bulk(&self, ex: &Exchange, frames: Vec<Bytes>) -> Result<Reply, Error> {
        self.conv.bulk(&*self.store, ex, frames)
    }
}

/// Shared so each call's future owns a reference (one count bump per call).
#[derive(Debug)]
struct StoreRouteRef(Arc<StoreRoute>);

impl StoreRoute {
    /// Whether this request is large and must be decoded (validation or a
    /// non-flat request type): then it is answered on the blocking pool.
    fn heavy(&self, ex: &Exchange, input: &Input) -> bool {
        input.raw.len() >= crate::call::HEAVY_DECODE
            && (self.conv.shape.is_none() || matches!(ex.route.validation, Validation::Full))
    }

    /// Answers now, or on the blocking pool when the request is heavy (decoding,
    /// building and encoding a large record is CPU work).
    async fn answer_in_place(self: Arc<Self>, kind: Kind, ex: Exchange, input: Input) -> Result<Answer, Error> {
        if self.heavy(&ex, &input) {
            crate::call::off_worker("answering the request", move || self.answer(kind, &ex, input)).await
        } else {
            self.answer(kind, &ex, input)
        }
    }

    /// Unary and server-streaming answers, once the request is in hand (and decoded if heavy).
    fn answer(self: &Arc<Self>, kind: Kind, ex: &Exchange, input: Input) -> Result<Answer, Error> {
        let store = &*self.store;
        match kind {
            Kind::ServerStreaming => {
                let query = self.conv.stream(ex.checked(input)?)?;
                Ok(Answer::stream(Box::pin(ListStream::start(self.clone(), query)?)))
            }
            _ => Ok(Answer::one(self.conv.unary(store, ex, input)?)),
        }
    }
}

impl Respond for StoreRouteRef {
    fn responder(&self) -> &'static str {
        "store"
    }

    fn respond(&self, call: CallRequest) -> Responding {
        let kind = Kind::of(call.method());
        if matches!(kind, Kind::Unary | Kind::ServerStreaming) {
            // The common case: the adapter has read the request and it is small:
            // answer now, without a future.
            let call = match call.try_unary() {
                Ok((ex, input)) if !self.0.heavy(&ex, &input) => {
                    return Responding::Ready(self.0.answer(kind, &ex, input));
                }
                Ok((ex, input)) => return Responding::Later(Box::pin(self.0.clone().answer_in_place(kind, ex, input))),
                Err(call) => call,
            };
            let this = self.0.clone();
            return Responding::Later(Box::pin(async move {
                let (ex, input) = call.into_unary().await?;
                this.answer_in_place(kind, ex, input).await
            }));
        }
        let this = self.0.clone();
        Responding::Later(Box::pin(async move {
            match kind {
                Kind::ClientStreaming => {
                    let (ex, frames) = call.into_streaming();
                    let frames = this.collect(&ex.route.path, frames).await?;
                    let bytes: usize = frames.iter().map(Bytes::len).sum();
                    if frames.len() < HEAVY_BATCH && bytes < crate::call::HEAVY_DECODE {
                        return Ok(Answer::one(this.bulk(&ex, frames)?));
                    }
                    // A large batch is CPU work and holds the table's lock while it
                    // is inserted: keep it off the async workers, a few at a time.
                    let reply = crate::call::off_worker("storing the batch", move || this.bulk(&ex, frames)).await?;
                    Ok(Answer::one(reply))
                }
                _ => Err(Error::internal(format!("{}: no store convention is bidi-streaming", call.path()))),
            }
        }))
    }

    fn describe(&self) -> String {
        self.0.conv.describe()
    }
}

/// A server-streaming list, read from the store a chunk at a time as the client
/// takes replies: a stream nobody reads holds one chunk, not the whole page.
struct ListStream {
    route: Arc<StoreRoute>,
    table: String,
    /// Records still to send after `buf`.
    left: usize,
    /// Where the chunk in `buf` started, and how many of it were sent.
    chunk: Cursor,
    sent: usize,
    /// Where the next chunk starts (the store's token), `None` at the end.
    next: Option<String>,
    buf: std::vec::IntoIter<Bytes>,
}

/// Records read from the store per chunk.
const LIST_CHUNK: usize = 256;

impl ListStream {
    /// Reads the first chunk now, so a bad page token fails the call before it streams.
    fn start(route: Arc<StoreRoute>, q: ListQuery) -> Result<Self, Error> {
        let (first, chunk) = Cursor::first(&*route.store, &q, q.n.min(LIST_CHUNK))?;
        let left = q.n - first.records.len();
        Ok(Self { route, table: q.table, left, chunk, sent: 0, next: first.next, buf: first.records.into_iter() })
    }

    /// The next record, from `buf` or a new chunk.
    fn record(&mut self) -> Option<Result<Bytes, Error>> {
        if let Some(b) = self.buf.next() {
            return Some(Ok(b));
        }
        let token = self.next.take().filter(|_| self.left > 0)?;
        match self.route.store.page(&self.table, After::Token(&token), self.left.min(LIST_CHUNK)) {
            Ok(page) => {
                self.left -= page.records.len();
                self.next = page.next;
                self.buf = page.records.into_iter();
                self.chunk = Cursor::Token(token);
                self.sent = 0;
                self.buf.next().map(Ok)
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl futures_util::Stream for ListStream {
    type Item = Result<Reply, Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // A list is always ready, so a client that grants a large flow-control
        // window could keep a worker busy for its whole window: spend the task's
        // cooperative budget, so other connections are served in between.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        coop.made_progress();
        let this = self.get_mut();
        let item = match this.record() {
            Some(Ok(b)) if b.len() > this.route.conv.max_send => {
                // Too large for any reply: the stream ends naming it, with the
                // page token that continues past it.
                let (route, table) = (&this.route, &this.table);
                let err = match this.chunk.past(&*route.store, table, this.sent + 1) {
                    Ok(past) => route.conv.plan.resource().unlistable(&b, route.conv.max_send, past),
                    Err(e) => e,
                };
                (this.next, this.buf) = (None, Vec::new().into_iter());
                Some(Err(err))
            }
            Some(Ok(b)) => {
                this.sent += 1;
                Some(Ok(Reply::Encoded(b)))
            }
            other => other.map(|r| r.map(Reply::Encoded)),
        };
        std::task::Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_keeps_acronyms_together() {
        for (name, snake) in [
            ("User", "user"),
            ("OrderItem", "order_item"),
            ("APIKey", "api_key"),
            ("HTTPServer", "http_server"),
            ("UserID", "user_id"),
            ("V2Thing", "v2_thing"),
            ("Already_Snake", "already_snake"),
        ] {
            assert_eq!(snake_case(name), snake, "{name}");
        }
    }

    #[test]
    fn plurals_name_their_resource() {
        for (plural, singular) in [
            ("People", "Person"),
            ("Categories", "Category"),
            ("Boxes", "Box"),
            ("Users", "User"),
            ("Statuses", "Status"),
            ("Children", "Child"),
            ("OrderItems", "OrderItem"),
            ("SalesPeople", "SalesPerson"),
            ("APIKeys", "APIKey"),
        ] {
            assert_eq!(plural_candidates(plural)[0], singular, "{plural}");
        }
        assert!(plural_candidates("News").contains(&"News".to_owned()));
        assert!(plural_candidates("UserData").contains(&"UserData".to_owned()));
    }

    /// Method names are user text: any identifier-like name (and any other
    /// string) gives candidates without panicking, the name itself among them.
    #[test]
    fn plural_candidates_never_panic_on_any_name() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = "aAeEiIsSyYzZhHxXoO_09éß".chars().collect();
        for _ in 0..3000 {
            let len = (next() % 12) as usize;
            let name: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let c = plural_candidates(&name);
            assert!(c.contains(&name), "{name:?}: {c:?}");
        }
    }

    /// Generated integer ids fit their field, and one another record has is
    /// drawn again.
    #[test]
    fn generated_ids_fit_the_field_and_avoid_taken_ones() {
        let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let pool = crate::schema::load(&[data.join("store_keys"), data.join("store")]).unwrap().pool().clone();
        let field = |m: &str, f: &str| pool.get_message_by_name(m).unwrap().get_field_by_name(f).unwrap();
        for (f, max) in [
            (field("tickets.Ticket", "ticket_id"), i32::MAX as u64),
            (field("tickets.Badge", "id"), u32::MAX as u64),
            (field("items.Counter", "id"), (1 << 53) - 1),
        ] {
            for _ in 0..200 {
                let n: u64 = new_id(&f, &mut |_| false).parse().unwrap();
                assert!((1..=max).contains(&n), "{} {n}", f.full_name());
            }
            let mut seen = Vec::new();
            let id = new_id(&f, &mut |id| {
                seen.push(id.to_owned());
                seen.len() < 4
            });
            assert_eq!(seen.len(), 4, "drawn again while taken");
            assert_eq!(seen.last(), Some(&id));
        }
    }

    /// `--data` records are user text: random records never panic; each load
    /// either succeeds or says which record (and usually which field) failed.
    #[test]
    fn random_data_records_load_or_name_the_problem() {
        let pool =
            crate::schema::load(&[std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/store_keys")])
                .unwrap()
                .pool()
                .clone();
        let mut state = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let keys = [
            "personId",
            "person_id",
            "email",
            "name",
            "phone",
            "pager",
            "address",
            "count",
            "tags",
            "nope",
            "city",
            "zip",
        ];
        fn value(next: &mut dyn FnMut() -> u64, keys: &[&str], depth: u32) -> serde_json::Value {
            match next() % if depth > 2 { 6 } else { 8 } {
                0 => serde_json::Value::Null,
                1 => serde_json::json!(next().is_multiple_of(2)),
                2 => serde_json::json!((next() % 2000) as i64 - 1000),
                3 => serde_json::json!(format!("s{}", next() % 5)),
                4 => serde_json::json!("12345678901234567890123"),
                5 => serde_json::json!(1.5),
                6 => serde_json::Value::Array((0..next() % 3).map(|_| value(next, keys, depth + 1)).collect()),
                _ => serde_json::Value::Object(
                    (0..next() % 4)
                        .map(|_| (keys[(next() % keys.len() as u64) as usize].to_owned(), value(next, keys, depth + 1)))
                        .collect(),
                ),
            }
        }
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..400 {
            let records: Vec<serde_json::Value> = (0..1 + next() % 3)
                .map(|_| {
                    let fields = (0..next() % 4)
                        .map(|_| (keys[(next() % keys.len() as u64) as usize].to_owned(), value(&mut next, &keys, 0)))
                        .collect();
                    serde_json::Value::Object(fields)
                })
                .collect();
            let doc = serde_json::json!({ "people.Person": records });
            let store = crate::store::MemoryStore::default();
            match load_doc(&store, &pool, doc.clone()) {
                Ok(n) => {
                    ok += 1;
                    assert_eq!(store.len("people.Person"), n, "{doc}");
                }
                Err(e) => {
                    failed += 1;
                    let named =
                        e.contains("field '") || e.contains("expected an object") || e.contains("appears twice");
                    assert!(e.contains("people.Person") && named, "{doc}: {e}");
                }
            }
        }
        assert!(ok > 0 && failed > 0, "the corpus exercises both ({ok} ok, {failed} failed)");
    }
}
