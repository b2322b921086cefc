//! From parsed stub files to checked stubs: every key is known, the method
//! exists and its kind fits, matched fields exist and their values have the
//! field's type, answers decode into the output type and are encoded here, once
//! per schema generation. Each problem is a diagnostic at its file:line:col; a
//! stub with a problem is left out, the others are kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind as FieldKind, MessageDescriptor,
    MethodDescriptor, SerializeOptions,
};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::gripmock;
use super::matcher::{Leaf, Matcher, Pattern};
use super::node::{At, Node, Value};
use super::{AnswerSpec, Delay, ErrorSpec, HeaderTemplate, Item, Stub, Then, When};
use crate::call::Kind;
use crate::schema::Problem;
use crate::schema::diagnostic::SourceText;

/// What the files of one load share: methods found by the name a stub gives
/// (each looked up in the schema once, its path allocated once).
#[derive(Default)]
pub(crate) struct Shared {
    methods: HashMap<String, (MethodDescriptor, Arc<str>)>,
    /// Input types by full name: whether their keys are wire bytes.
    wire_keyed: HashMap<String, bool>,
}

/// Checks the stubs of one file as the parser hands them over (see
/// [`super::node::parse_items`]); `finish` gives the good stubs and the
/// problems of the others.
pub(crate) struct File<'a> {
    cx: Cx<'a>,
    stubs: Vec<Stub>,
    index: usize,
    first_order: usize,
}

impl<'a> File<'a> {
    pub(crate) fn new(
        src: &'a SourceText,
        pool: &'a DescriptorPool,
        shared: &'a mut Shared,
        first_order: usize,
    ) -> Self {
        let file = Arc::from(src.display.as_str());
        let cx = Cx { src, pool, problems: Vec::new(), templates: None, shared, file };
        File { cx, stubs: Vec::new(), index: 0, first_order }
    }

    /// Checks the file's next stub.
    pub(crate) fn item(&mut self, node: &Node) {
        let before = self.cx.problems.len();
        let stub = self.cx.stub(node, self.index, self.first_order + self.index);
        self.index += 1;
        match stub {
            Some(s) if self.cx.problems.len() == before => self.stubs.push(s),
            _ => {}
        }
    }

    pub(crate) fn finish(self) -> (Vec<Stub>, Vec<Problem>) {
        (self.stubs, self.cx.problems)
    }
}

/// Checks a verify query (`{method, match}`, `match` optional) like a
/// stub's: the method and its matcher, or every problem.
pub(crate) fn query(
    src: &SourceText,
    doc: &Node,
    pool: &DescriptorPool,
) -> Result<(MethodDescriptor, When), Vec<Problem>> {
    let mut shared = Shared::default();
    let file = Arc::from(src.display.as_str());
    let mut cx = Cx { src, pool, problems: Vec::new(), templates: None, shared: &mut shared, file };
    let found = (|| {
        let entries = cx.keys(doc, "a verify query", &["method", "match"])?;
        let get = |k: &str| entries.iter().find(|(n, _, _)| *n == k).map(|(_, _, v)| *v);
        let Some(method_node) = get("method") else {
            cx.error(doc.at, 1, "a verify query needs `method` (`package.Service/Method`)", None);
            return None;
        };
        let (method, _) = cx.method_cached(method_node)?;
        let when = match get("match") {
            Some(m) => cx.when(m, &method, Kind::of(&method))?,
            None => When::default(),
        };
        Some((method, when))
    })();
    match found {
        Some(q) if cx.problems.is_empty() => Ok(q),
        _ if cx.problems.is_empty() => Err(vec![Problem::new("not a verify query")]),
        _ => Err(cx.problems),
    }
}

struct Cx<'a> {
    src: &'a SourceText,
    pool: &'a DescriptorPool,
    problems: Vec<Problem>,
    /// While checking an answer's messages: the request type templates may read.
    templates: Option<MessageDescriptor>,
    shared: &'a mut Shared,
    /// The file's name, shared by its stubs.
    file: Arc<str>,
}

/// The closest of `candidates` to `name`, when it is close enough to suggest.
pub(crate) fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn json_opts() -> SerializeOptions {
    SerializeOptions::new().use_proto_field_name(true)
}

impl Cx<'_> {
    fn error(&mut self, at: At, len: usize, message: impl Into<String>, help: Option<String>) {
        let mut p = Problem::new(message).at_line(self.src, at.offset, len, at.line);
        p.help = help;
        self.problems.push(p);
    }

    fn bad(&mut self, node: &Node, message: impl Into<String>) {
        let len = node.text().len().max(1);
        self.error(node.at, len, message, None);
    }

    /// A mapping's entries, checking its keys against `known`.
    fn keys<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
        let Some(pairs) = node.as_map() else {
            self.bad(node, format!("{what} must be a mapping, found {}", node.kind_name()));
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (k, v) in pairs {
            let name = k.text();
            if !known.contains(&name) {
                let help = did_you_mean(name, known.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some(format!("{what} takes: {}", known.join(", "))));
                self.error(k.at, name.len().max(1), format!("unknown key `{name}` in {what}"), help);
                ok = false;
                continue;
            }
            if out.iter().any(|(n, _, _)| *n == name) {
                self.error(k.at, name.len().max(1), format!("`{name}` is given twice in {what}"), None);
                ok = false;
                continue;
            }
            out.push((name, k, v));
        }
        ok.then_some(out)
    }

    fn stub(&mut self, node: &Node, index: usize, order: usize) -> Option<Stub> {
        if !gripmock::is_gripmock(node) {
            return self.ours(node, index, order);
        }
        // GripMock's format: rewritten into ours (positions kept), then checked.
        let translated = gripmock::method(node).and_then(|name| {
            let method = self.method(&name).ok_or((name.at, String::new()))?;
            gripmock::translate(node, name, Kind::of(&method))
        });
        match translated {
            Ok(n) => {
                let mut stub = self.ours(&n, index, order)?;
                // GripMock ranks by priority, then file order.
                stub.specificity = 0;
                Some(stub)
            }
            Err((_, m)) if m.is_empty() => None,
            Err((at, m)) => {
                self.error(at, 1, m, None);
                None
            }
        }
    }

    fn ours(&mut self, node: &Node, index: usize, order: usize) -> Option<Stub> {
        const KEYS: &[&str] =
            &["method", "id", "description", "priority", "times", "match", "answer", "answers", "then"];
        let entries = self.keys(node, "a stub", KEYS)?;
        let get = |k: &str| entries.iter().find(|(n, _, _)| *n == k).map(|(_, _, v)| *v);
        let Some(method_node) = get("method") else {
            self.error(node.at, 1, "a stub needs `method` (`package.Service/Method`)", None);
            return None;
        };
        let (method, path) = self.method_cached(method_node)?;
        let kind = Kind::of(&method);
        let id = match get("id") {
            Some(n) => match n.as_str().or_else(|| Some(n.text()).filter(|t| !t.is_empty())) {
                Some(s) => Some(Box::from(s)),
                None => {
                    self.bad(n, "`id` must be a string");
                    return None;
                }
            },
            // `FILE#N`, written out when shown.
            None => None,
        };
        let priority = match get("priority") {
            Some(n) => self.int(n, "priority")?,
            None => 0,
        };
        let times = match get("times") {
            Some(n) => {
                let t = self.int(n, "times")?;
                if t < 1 {
                    self.bad(n, "`times` must be at least 1");
                    return None;
                }
                Some(t as u64)
            }
            None => None,
        };
        // Everything is checked, so that one pass reports every problem.
        let when = match get("match") {
            Some(m) => self.when(m, &method, kind),
            None => Some(When::default()),
        };
        let answers = match (get("answer"), get("answers")) {
            (Some(a), None) => self.answer(a, &method, kind).map(|a| vec![a]),
            (None, Some(list)) => match list.as_seq().filter(|s| !s.is_empty()) {
                Some(items) => {
                    let out: Vec<Option<AnswerSpec>> = items.iter().map(|a| self.answer(a, &method, kind)).collect();
                    out.into_iter().collect::<Option<Vec<_>>>()
                }
                None => {
                    self.bad(list, "`answers` must be a non-empty list of answers");
                    None
                }
            },
            (Some(_), Some(b)) => {
                self.bad(b, "give `answer` or `answers` (a sequence), not both");
                None
            }
            (None, None) => {
                self.error(node.at, 1, "a stub needs `answer` (or `answers`, a sequence)", None);
                None
            }
        };
        let (when, answers) = (when?, answers?);
        let then = match get("then") {
            None => Then::Repeat,
            Some(n) => match n.as_str() {
                Some("repeat") => Then::Repeat,
                Some("stop") => Then::Stop,
                _ => {
                    self.bad(n, "`then` is `repeat` (answer the last again) or `stop` (step aside)");
                    return None;
                }
            },
        };
        let specificity = when.specificity();
        // The stub as written and its method: unchanged, it keeps its counters
        // across rebuilds.
        let definition = {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = foldhash::quality::FixedState::default().build_hasher();
            node.hash_into(&mut h);
            h.write(method.full_name().as_bytes());
            h.finish()
        };
        // Found by hash: an order-sensitive `equals` alone on the request keeps
        // only its key (not for client streams, matched on no single request).
        let mut when = when;
        if when.headers.is_none() && when.messages.is_none() && when.at.is_empty() && kind != Kind::ClientStreaming {
            when.request = when.request.map(Matcher::into_key);
        }
        Some(Stub {
            id,
            // The node knows its line and column: no scan of the file per stub.
            place: super::Place {
                file: self.file.clone(),
                index: index as u32,
                line: node.at.line as u32,
                col: node.at.col as u32,
            },
            path,
            priority,
            order,
            specificity,
            when,
            answers: answers.into_boxed_slice(),
            then,
            times,
            definition,
            seq: 0,
            counters: Default::default(),
        })
    }

    /// Whether `equals` keys of this type are wire bytes (see `WireKeys`).
    fn wire_keyed(&mut self, desc: &MessageDescriptor) -> bool {
        if let Some(&w) = self.shared.wire_keyed.get(desc.full_name()) {
            return w;
        }
        let w = super::matcher::WireKeys::of(desc).is_some();
        self.shared.wire_keyed.insert(desc.full_name().to_owned(), w);
        w
    }

    /// `method`, looked up once per name in a load (problems are reported each time).
    fn method_cached(&mut self, node: &Node) -> Option<(MethodDescriptor, Arc<str>)> {
        if let Some(found) = node.as_str().and_then(|name| self.shared.methods.get(name)) {
            return Some(found.clone());
        }
        let method = self.method(node)?;
        let path: Arc<str> = Arc::from(format!("/{}/{}", method.parent_service().full_name(), method.name()));
        let name = node.as_str().unwrap_or_default().to_owned();
        self.shared.methods.insert(name, (method.clone(), path.clone()));
        Some((method, path))
    }

    fn int(&mut self, node: &Node, what: &str) -> Option<i64> {
        match &node.value {
            Value::Scalar(serde_json::Value::Number(n), _) if n.is_i64() => n.as_i64(),
            _ => {
                self.bad(node, format!("`{what}` must be an integer, found {}", node.kind_name()));
                None
            }
        }
    }

    fn method(&mut self, node: &Node) -> Option<MethodDescriptor> {
        let Some(name) = node.as_str() else {
            self.bad(node, "`method` must be a string: `package.Service/Method`");
            return None;
        };
        let name = name.trim_start_matches('/');
        let all: Vec<MethodDescriptor> = self.pool.services().flat_map(|s| s.methods().collect::<Vec<_>>()).collect();
        let full = |m: &MethodDescriptor| format!("{}/{}", m.parent_service().full_name(), m.name());
        if let Some(m) = all.iter().find(|m| full(m) == name) {
            return Some(m.clone());
        }
        if let Some((svc, meth)) = name.split_once('/')
            && !svc.contains('.')
        {
            let short: Vec<&MethodDescriptor> =
                all.iter().filter(|m| m.parent_service().name() == svc && m.name() == meth).collect();
            match short.as_slice() {
                [one] => return Some((*one).clone()),
                [] => {}
                many => {
                    let names: Vec<String> = many.iter().map(|m| full(m)).collect();
                    self.error(
                        node.at,
                        node.text().len(),
                        format!("`{name}` is ambiguous: {} services are named `{svc}`", many.len()),
                        Some(format!("write the full name: {}", names.join(" or "))),
                    );
                    return None;
                }
            }
        }
        let names: Vec<String> = all.iter().map(full).collect();
        let help = did_you_mean(name, names.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| (!name.contains('/')).then(|| "write it as `package.Service/Method`".to_owned()));
        self.error(node.at, node.text().len(), format!("no method `{name}` in the schema"), help);
        None
    }

    fn when(&mut self, node: &Node, method: &MethodDescriptor, kind: Kind) -> Option<When> {
        let entries = self.keys(node, "`match`", &["request", "headers", "messages", "at"])?;
        let mut when = When::default();
        let input = method.input();
        let mut ok = true;
        for (name, key, value) in entries {
            match name {
                "request" if kind == Kind::ClientStreaming => {
                    self.error(
                        key.at,
                        name.len(),
                        "a client-streaming method is matched on its `messages` (the whole stream) or `at` (by index), not `request`",
                        None,
                    );
                    ok = false;
                }
                "request" => match self.matcher(value, &input) {
                    Some(m) => when.request = Some(m),
                    None => ok = false,
                },
                "headers" => match self.header_matcher(value) {
                    Some(m) => when.headers = Some(m),
                    None => ok = false,
                },
                "messages" | "at" if kind != Kind::ClientStreaming => {
                    self.error(
                        key.at,
                        name.len(),
                        format!("`{name}` is for client-streaming methods; this one is {}", kind.name()),
                        Some("match each request with `request`".into()),
                    );
                    ok = false;
                }
                "messages" => {
                    let Some(items) = value.as_seq() else {
                        self.bad(value, "`messages` must be a list of matchers, one per message of the stream");
                        ok = false;
                        continue;
                    };
                    let ms: Vec<Option<Matcher>> = items.iter().map(|m| self.matcher(m, &input)).collect();
                    match ms.into_iter().collect::<Option<Vec<_>>>() {
                        Some(ms) => when.messages = Some(ms),
                        None => ok = false,
                    }
                }
                _ => {
                    // at: {index: matcher}
                    let Some(pairs) = value.as_map() else {
                        self.bad(value, "`at` maps a message index (0 is the first) to a matcher");
                        ok = false;
                        continue;
                    };
                    for (k, m) in pairs {
                        let Ok(i) = k.text().parse::<usize>() else {
                            self.bad(k, "an index of `at` is a number (0 is the first message)");
                            ok = false;
                            continue;
                        };
                        match self.matcher(m, &input) {
                            Some(m) => when.at.push((i, m)),
                            None => ok = false,
                        }
                    }
                }
            }
        }
        ok.then_some(when)
    }

    /// A request matcher: a mapping of `equals`, `contains`, `matches`, `glob`,
    /// `anyOf`, `ignoreArrayOrder`, `cel`; all given must hold.
    fn matcher(&mut self, node: &Node, desc: &MessageDescriptor) -> Option<Matcher> {
        const KEYS: &[&str] = &["equals", "contains", "matches", "glob", "anyOf", "ignoreArrayOrder", "cel"];
        let entries = self.keys(node, "a matcher", KEYS)?;
        let ignore_order = match entries.iter().find(|(n, _, _)| *n == "ignoreArrayOrder") {
            Some((_, _, v)) => match &v.value {
                Value::Scalar(serde_json::Value::Bool(b), _) => *b,
                _ => {
                    self.bad(v, "`ignoreArrayOrder` is true or false");
                    return None;
                }
            },
            None => false,
        };
        let mut all = Vec::new();
        let mut ok = true;
        for (name, _, value) in entries {
            let m = match name {
                "equals" => self.values(value, desc).and_then(|v| {
                    let (full, key) = self.canonical(value, desc, v, !ignore_order)?;
                    Some(Matcher::Equals { value: full, ignore_order, key })
                }),
                "contains" => self.values(value, desc).map(Matcher::Contains),
                "matches" | "glob" => {
                    let mut leaves = Vec::new();
                    self.patterns(value, desc, &mut Vec::new(), name == "glob", &mut leaves)
                        .then_some(Matcher::Leaves(leaves))
                }
                "anyOf" => match value.as_seq().filter(|s| !s.is_empty()) {
                    Some(items) => {
                        let ms: Vec<Option<Matcher>> = items.iter().map(|m| self.matcher(m, desc)).collect();
                        ms.into_iter().collect::<Option<Vec<_>>>().map(Matcher::AnyOf)
                    }
                    None => {
                        self.bad(value, "`anyOf` is a non-empty list of matchers");
                        None
                    }
                },
                "cel" => self.cel(value),
                _ => continue,
            };
            match m {
                Some(m) => all.push(m),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(if all.len() == 1 { all.remove(0) } else { Matcher::All(all) })
    }

    fn cel(&mut self, node: &Node) -> Option<Matcher> {
        let Some(expr) = node.as_str() else {
            self.bad(node, "`cel` is an expression over `request` and `headers`, as a string");
            return None;
        };
        match super::matcher::Cel::compile(expr) {
            Ok(c) => Some(Matcher::Cel(Arc::new(c))),
            Err(e) => {
                self.bad(node, format!("CEL expression does not parse: {e}"));
                None
            }
        }
    }

    /// Header matchers: the same keys; values are strings keyed by header name.
    fn header_matcher(&mut self, node: &Node) -> Option<Matcher> {
        let entries = self.keys(node, "a headers matcher", &["equals", "contains", "matches", "glob", "anyOf"])?;
        let mut all = Vec::new();
        let mut ok = true;
        for (name, _, value) in entries {
            if name == "anyOf" {
                match value.as_seq().filter(|s| !s.is_empty()) {
                    Some(items) => {
                        let ms: Vec<Option<Matcher>> = items.iter().map(|m| self.header_matcher(m)).collect();
                        match ms.into_iter().collect::<Option<Vec<_>>>() {
                            Some(ms) => all.push(Matcher::AnyOf(ms)),
                            None => ok = false,
                        }
                    }
                    None => {
                        self.bad(value, "`anyOf` is a non-empty list of matchers");
                        ok = false;
                    }
                }
                continue;
            }
            let Some(pairs) = value.as_map() else {
                self.bad(value, format!("headers `{name}` maps header names to strings"));
                ok = false;
                continue;
            };
            let mut obj = serde_json::Map::new();
            let mut leaves = Vec::new();
            for (k, v) in pairs {
                let key = k.text().to_ascii_lowercase();
                if MetadataKey::<tonic::metadata::Ascii>::from_bytes(key.as_bytes()).is_err() {
                    self.bad(k, format!("`{}` is not a valid header name", k.text()));
                    ok = false;
                    continue;
                }
                let text = match &v.value {
                    Value::Scalar(serde_json::Value::String(s), _) => s.clone(),
                    Value::Scalar(serde_json::Value::Number(_) | serde_json::Value::Bool(_), t) => t.clone(),
                    _ => {
                        self.bad(v, format!("a header value is a string, found {}", v.kind_name()));
                        ok = false;
                        continue;
                    }
                };
                if name == "equals" || name == "contains" {
                    obj.insert(key, serde_json::Value::String(text));
                } else {
                    match Pattern::new(&text, name == "glob") {
                        Ok(p) => leaves.push(Leaf { path: vec![key], pattern: p }),
                        Err(e) => {
                            self.bad(v, e);
                            ok = false;
                        }
                    }
                }
            }
            all.push(if name == "equals" || name == "contains" {
                Matcher::Contains(serde_json::Value::Object(obj))
            } else {
                Matcher::Leaves(leaves)
            });
        }
        if !ok {
            return None;
        }
        Some(if all.len() == 1 { all.remove(0) } else { Matcher::All(all) })
    }

    /// The message `equals` describes, as the request's JSON with defaults left
    /// out, and (`keyed`) its key.
    fn canonical(
        &mut self,
        node: &Node,
        desc: &MessageDescriptor,
        partial: serde_json::Value,
        keyed: bool,
    ) -> Option<(serde_json::Value, Option<super::matcher::Key>)> {
        let msg = match DynamicMessage::deserialize_with_options(desc.clone(), partial, &DeserializeOptions::new()) {
            Ok(m) => m,
            Err(e) => {
                self.bad(node, format!("not a valid {}: {e}", desc.full_name()));
                return None;
            }
        };
        let key = if keyed { super::matcher::Key::of(&msg, self.wire_keyed(desc)) } else { None };
        match msg.serialize_with_options(serde_json::value::Serializer, &json_opts()) {
            Ok(v) => Some((v, key)),
            Err(e) => {
                self.bad(node, format!("cannot represent this {}: {e}", desc.full_name()));
                None
            }
        }
    }

    /// Checks a (partial) message value field by field; returns it with proto
    /// field names and the JSON forms the request's view uses (64-bit integers
    /// as strings, enums by name).
    fn values(&mut self, node: &Node, desc: &MessageDescriptor) -> Option<serde_json::Value> {
        if is_wkt(desc) {
            return self.wkt(node, desc);
        }
        let Some(pairs) = node.as_map() else {
            self.bad(node, format!("a {} is a mapping of its fields, found {}", desc.full_name(), node.kind_name()));
            return None;
        };
        let mut out = serde_json::Map::new();
        let mut ok = true;
        for (k, v) in pairs {
            let Some(field) = self.field(k, desc) else {
                ok = false;
                continue;
            };
            match self.field_value(v, &field) {
                Some(j) => {
                    out.insert(field.name().to_owned(), j);
                }
                None => ok = false,
            }
        }
        ok.then_some(serde_json::Value::Object(out))
    }

    fn field(&mut self, key: &Node, desc: &MessageDescriptor) -> Option<FieldDescriptor> {
        let name = key.text();
        if let Some(f) = desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name)) {
            return Some(f);
        }
        let names: Vec<String> = desc.fields().map(|f| f.name().to_owned()).collect();
        let help = match did_you_mean(name, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None if names.is_empty() => format!("{} has no fields", desc.full_name()),
            None => format!("{} has: {}", desc.full_name(), names.join(", ")),
        };
        self.error(key.at, name.len().max(1), format!("no field `{name}` in {}", desc.full_name()), Some(help));
        None
    }

    fn field_value(&mut self, node: &Node, field: &FieldDescriptor) -> Option<serde_json::Value> {
        if node.is_null() {
            return Some(serde_json::Value::Null);
        }
        if field.is_map() {
            let FieldKind::Message(entry) = field.kind() else { return None };
            let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let Some(pairs) = node.as_map() else {
                self.bad(node, format!("`{}` is a map, found {}", field.name(), node.kind_name()));
                return None;
            };
            let mut out = serde_json::Map::new();
            let mut ok = true;
            for (k, v) in pairs {
                let key_ok = match kf.kind() {
                    FieldKind::String => true,
                    FieldKind::Bool => matches!(k.text(), "true" | "false"),
                    _ => k.text().parse::<i128>().is_ok(),
                };
                if !key_ok {
                    self.bad(k, format!("`{}` is not a key of `{}` ({:?} keys)", k.text(), field.name(), kf.kind()));
                    ok = false;
                    continue;
                }
                match self.single(v, &vf.kind(), field) {
                    Some(j) => {
                        out.insert(k.text().to_owned(), j);
                    }
                    None => ok = false,
                }
            }
            return ok.then_some(serde_json::Value::Object(out));
        }
        if field.is_list() {
            let Some(items) = node.as_seq() else {
                self.bad(
                    node,
                    format!("`{}` is a repeated field: give a list, found {}", field.name(), node.kind_name()),
                );
                return None;
            };
            let vs: Vec<Option<serde_json::Value>> =
                items.iter().map(|i| self.single(i, &field.kind(), field)).collect();
            return vs.into_iter().collect::<Option<Vec<_>>>().map(serde_json::Value::Array);
        }
        self.single(node, &field.kind(), field)
    }

    fn single(&mut self, node: &Node, kind: &FieldKind, field: &FieldDescriptor) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        let name = field.name();
        let want = |what: &str| format!("`{name}` is {what}, found {}", node.kind_name());
        let scalar = match &node.value {
            Value::Scalar(v, _) => v,
            _ if matches!(kind, FieldKind::Message(_)) => &J::Null,
            _ => {
                self.bad(node, want(kind_name(kind)));
                return None;
            }
        };
        if let (J::String(s), Some(input)) = (scalar, self.templates.clone())
            && super::template::is_template(s)
            && !matches!(kind, FieldKind::Message(_))
        {
            return self.template(node, s, &input).then(|| J::String(s.clone()));
        }
        match kind {
            FieldKind::Message(m) => self.values(node, m),
            FieldKind::String => match scalar {
                J::String(s) => Some(J::String(s.clone())),
                _ => {
                    self.bad(node, want("a string"));
                    None
                }
            },
            FieldKind::Bytes => match scalar {
                J::String(s) if base64_ok(s) => Some(J::String(s.clone())),
                _ => {
                    self.bad(node, want("bytes (a base64 string)"));
                    None
                }
            },
            FieldKind::Bool => match scalar {
                J::Bool(b) => Some(J::Bool(*b)),
                _ => {
                    self.bad(node, want("a boolean"));
                    None
                }
            },
            FieldKind::Enum(e) => {
                let found = match scalar {
                    J::String(s) => e.get_value_by_name(s).map(|v| J::String(v.name().to_owned())),
                    J::Number(n) => n.as_i64().and_then(|i| i32::try_from(i).ok()).map(|i| match e.get_value(i) {
                        Some(v) => J::String(v.name().to_owned()),
                        None => J::from(i),
                    }),
                    _ => None,
                };
                if found.is_none() {
                    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    let help = match did_you_mean(node.text(), names.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("{} has: {}", e.full_name(), names.join(", ")),
                    };
                    self.error(
                        node.at,
                        node.text().len().max(1),
                        format!("`{}` is not a value of {} (field `{name}`)", node.text(), e.full_name()),
                        Some(help),
                    );
                }
                found
            }
            FieldKind::Float | FieldKind::Double => {
                let v = match scalar {
                    J::Number(n) => n.as_f64(),
                    J::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                        return Some(J::String(s.clone()));
                    }
                    J::String(s) => s.parse::<f64>().ok(),
                    _ => None,
                };
                let Some(mut v) = v else {
                    self.bad(node, want("a number"));
                    return None;
                };
                if matches!(kind, FieldKind::Float) {
                    v = f64::from(v as f32);
                }
                serde_json::Number::from_f64(v).map(J::Number)
            }
            _ => {
                // Integers: a number or a decimal string, in the field's range.
                let n: Option<i128> = match scalar {
                    J::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
                    J::String(s) => s.parse::<i128>().ok(),
                    _ => None,
                };
                let (lo, hi, wide) = match kind {
                    FieldKind::Int32 | FieldKind::Sint32 | FieldKind::Sfixed32 => {
                        (i128::from(i32::MIN), i128::from(i32::MAX), false)
                    }
                    FieldKind::Uint32 | FieldKind::Fixed32 => (0, i128::from(u32::MAX), false),
                    FieldKind::Uint64 | FieldKind::Fixed64 => (0, i128::from(u64::MAX), true),
                    _ => (i128::from(i64::MIN), i128::from(i64::MAX), true),
                };
                match n {
                    Some(n) if n >= lo && n <= hi => {
                        Some(if wide { J::String(n.to_string()) } else { J::from(n as i64) })
                    }
                    Some(_) => {
                        self.bad(node, format!("{} is out of range for `{name}` ({})", node.text(), kind_name(kind)));
                        None
                    }
                    None => {
                        self.bad(node, want(kind_name(kind)));
                        None
                    }
                }
            }
        }
    }

    /// Checks a template's syntax and that the request fields it reads exist.
    fn template(&mut self, node: &Node, text: &str, input: &MessageDescriptor) -> bool {
        if let Err(e) = super::template::check(text) {
            self.bad(node, format!("template does not parse: {e}"));
            return false;
        }
        let mut ok = true;
        for path in super::template::request_paths(text) {
            let mut desc = Some(input.clone());
            for name in &path {
                let Some(d) = desc.take() else { break };
                match d.get_field_by_name(name).or_else(|| d.get_field_by_json_name(name)) {
                    Some(f) => {
                        if let FieldKind::Message(m) = f.kind() {
                            desc = Some(m);
                        }
                    }
                    None => {
                        let names: Vec<String> = d.fields().map(|f| f.name().to_owned()).collect();
                        let help = did_you_mean(name, names.iter().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?"))
                            .or_else(|| Some(format!("{} has: {}", d.full_name(), names.join(", "))));
                        self.error(
                            node.at,
                            node.text().len().max(1),
                            format!(
                                "template reads `.Request.{}`: no field `{name}` in {}",
                                path.join("."),
                                d.full_name()
                            ),
                            help,
                        );
                        ok = false;
                        break;
                    }
                }
            }
        }
        ok
    }

    /// A well-known type (Timestamp, Duration, Struct, wrappers, ...): its own
    /// JSON form, checked by decoding it.
    fn wkt(&mut self, node: &Node, desc: &MessageDescriptor) -> Option<serde_json::Value> {
        let v = node.to_json();
        match DynamicMessage::deserialize_with_options(desc.clone(), v, &DeserializeOptions::new()) {
            Ok(m) => m.serialize_with_options(serde_json::value::Serializer, &json_opts()).ok(),
            Err(e) => {
                self.bad(node, format!("not a valid {}: {e}", desc.full_name()));
                None
            }
        }
    }

    /// `matches` / `glob`: a tree of fields whose leaves are patterns.
    fn patterns(
        &mut self,
        node: &Node,
        desc: &MessageDescriptor,
        path: &mut Vec<String>,
        glob: bool,
        out: &mut Vec<Leaf>,
    ) -> bool {
        let Some(pairs) = node.as_map() else {
            self.bad(node, format!("a pattern for {} is a mapping of its fields", desc.full_name()));
            return false;
        };
        let mut ok = true;
        for (k, v) in pairs {
            let Some(field) = self.field(k, desc) else {
                ok = false;
                continue;
            };
            path.push(field.name().to_owned());
            match (field.kind(), &v.value) {
                (FieldKind::Message(m), Value::Map(_)) if !is_wkt(&m) && !field.is_map() => {
                    ok &= self.patterns(v, &m, path, glob, out);
                }
                (_, Value::Scalar(j, text)) if !j.is_null() => {
                    let text = j.as_str().unwrap_or(text);
                    match Pattern::new(text, glob) {
                        Ok(p) => out.push(Leaf { path: path.clone(), pattern: p }),
                        Err(e) => {
                            self.bad(v, e);
                            ok = false;
                        }
                    }
                }
                _ => {
                    self.bad(v, format!("a pattern for `{}` is a string, found {}", field.name(), v.kind_name()));
                    ok = false;
                }
            }
            path.pop();
        }
        ok
    }

    fn answer(&mut self, node: &Node, method: &MethodDescriptor, kind: Kind) -> Option<AnswerSpec> {
        const KEYS: &[&str] = &["message", "messages", "stream", "error", "headers", "trailers", "delay"];
        let entries = self.keys(node, "an answer", KEYS)?;
        let output = method.output();
        let mut spec = AnswerSpec::default();
        let mut items = Vec::new();
        let mut ok = true;
        let one_reply = matches!(kind, Kind::Unary | Kind::ClientStreaming);
        let mut has_reply = false;
        for (name, key, value) in &entries {
            match *name {
                "message" if kind == Kind::ServerStreaming => {
                    self.error(
                        key.at,
                        name.len(),
                        "a server-streaming answer is a list: use `messages` or `stream`",
                        None,
                    );
                    ok = false;
                }
                "messages" | "stream" if one_reply => {
                    self.error(
                        key.at,
                        name.len(),
                        format!("`{name}` is for streaming answers; {} answers one `message`", kind.name()),
                        None,
                    );
                    ok = false;
                }
                "message" => match self.reply(value, &output, Delay::None, &method.input()) {
                    Some(item) => {
                        has_reply = true;
                        items.push(item);
                    }
                    None => ok = false,
                },
                "messages" | "stream" => {
                    let Some(list) = value.as_seq() else {
                        self.bad(value, format!("`{name}` is a list"));
                        ok = false;
                        continue;
                    };
                    has_reply = true;
                    for item in list {
                        let encoded = if *name == "messages" {
                            self.reply(item, &output, Delay::None, &method.input())
                        } else {
                            self.stream_item(item, &output, &method.input())
                        };
                        match encoded {
                            Some(i) => items.push(i),
                            None => ok = false,
                        }
                    }
                }
                "error" => match self.error_spec(value, &method.input()) {
                    Some(e) => spec.error = Some(Box::new(e)),
                    None => ok = false,
                },
                "headers" | "trailers" => {
                    let trailer = *name == "trailers";
                    match self.headers(value, trailer, &method.input()) {
                        Some((h, templated)) => {
                            let h = (!h.is_empty()).then(|| Box::new(h));
                            if trailer {
                                spec.trailers = h
                            } else {
                                spec.headers = h
                            }
                            let mut all = std::mem::take(&mut spec.header_templates).into_vec();
                            all.extend(templated);
                            spec.header_templates = all.into_boxed_slice();
                        }
                        None => ok = false,
                    }
                }
                _ => match self.delay(value) {
                    Some(d) => spec.delay = d,
                    None => ok = false,
                },
            }
        }
        if ok && one_reply && has_reply == spec.error.is_some() {
            let msg =
                if has_reply { "give `message` or `error`, not both" } else { "an answer needs `message` or `error`" };
            self.error(node.at, 1, msg, None);
            return None;
        }
        spec.items = items.into_boxed_slice();
        ok.then_some(spec)
    }

    fn stream_item(&mut self, node: &Node, output: &MessageDescriptor, input: &MessageDescriptor) -> Option<Item> {
        let entries = self.keys(node, "a stream item", &["message", "delay"])?;
        let delay = match entries.iter().find(|(n, _, _)| *n == "delay") {
            Some((_, _, v)) => self.delay(v)?,
            None => Delay::None,
        };
        let Some((_, _, message)) = entries.iter().find(|(n, _, _)| *n == "message") else {
            self.error(node.at, 1, "a stream item needs `message`", None);
            return None;
        };
        self.reply(message, output, delay, input)
    }

    /// Checks a reply message and encodes it once (or keeps it to render per
    /// call when it has templates).
    fn reply(
        &mut self,
        node: &Node,
        desc: &MessageDescriptor,
        delay: Delay,
        input: &MessageDescriptor,
    ) -> Option<Item> {
        self.templates = Some(input.clone());
        let partial = self.values(node, desc);
        self.templates = None;
        let partial = partial?;
        if has_template(&partial) {
            let template = match super::template::Templated::new(partial, desc.clone()) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    self.bad(node, format!("template does not parse: {e}"));
                    return None;
                }
            };
            return Some(Item { reply: Bytes::new(), template: Some(template), delay });
        }
        let reply = self.encode_checked(node, desc, partial)?;
        Some(Item { reply, template: None, delay })
    }

    /// Checks a message value and encodes it once.
    fn encode(&mut self, node: &Node, desc: &MessageDescriptor) -> Option<Bytes> {
        let partial = self.values(node, desc)?;
        self.encode_checked(node, desc, partial)
    }

    fn encode_checked(&mut self, node: &Node, desc: &MessageDescriptor, partial: serde_json::Value) -> Option<Bytes> {
        match DynamicMessage::deserialize_with_options(desc.clone(), partial, &DeserializeOptions::new()) {
            Ok(m) => Some(Bytes::from(m.encode_to_vec())),
            Err(e) => {
                self.bad(node, format!("not a valid {}: {e}", desc.full_name()));
                None
            }
        }
    }

    fn delay(&mut self, node: &Node) -> Option<Delay> {
        let one = |cx: &mut Self, n: &Node| -> Option<Duration> {
            let text = n.as_str().map(str::to_owned).unwrap_or_else(|| n.text().to_owned());
            match crate::units::parse_duration(&text) {
                Ok(d) if d <= Duration::from_secs(3600) => Some(d),
                Ok(_) => {
                    cx.bad(n, "a delay is at most 1h");
                    None
                }
                Err(e) => {
                    cx.bad(n, e);
                    None
                }
            }
        };
        match &node.value {
            Value::Map(_) => {
                let entries = self.keys(node, "a delay range", &["min", "max"])?;
                let (mut lo, mut hi) = (None, None);
                for (name, _, v) in entries {
                    let d = one(self, v)?;
                    if name == "min" { lo = Some(d) } else { hi = Some(d) }
                }
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Some(Delay::Range(lo, hi)),
                    _ => {
                        self.bad(node, "a delay range needs `min` <= `max`");
                        None
                    }
                }
            }
            _ => one(self, node).map(Delay::Fixed),
        }
    }

    /// Fixed headers (or trailers), and those whose values are templates.
    fn headers(
        &mut self,
        node: &Node,
        trailer: bool,
        input: &MessageDescriptor,
    ) -> Option<(MetadataMap, Vec<HeaderTemplate>)> {
        let Some(pairs) = node.as_map() else {
            self.bad(node, "`headers` and `trailers` map names to strings");
            return None;
        };
        let mut map = MetadataMap::new();
        let mut templated = Vec::new();
        for (k, v) in pairs {
            let name = k.text().to_ascii_lowercase();
            let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.text().to_owned());
            let key = MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes());
            let sendable = !name.ends_with("-bin") && !name.starts_with("grpc-");
            if super::template::is_template(&text)
                && let Ok(key) = &key
                && sendable
            {
                if !self.template(v, &text, input) {
                    return None;
                }
                match super::template::Parsed::new(&text) {
                    Ok(p) => templated.push(HeaderTemplate { trailer, key: key.clone(), value: Arc::new(p) }),
                    Err(e) => {
                        self.bad(v, format!("template does not parse: {e}"));
                        return None;
                    }
                }
                continue;
            }
            let value = MetadataValue::try_from(text.as_str());
            match (key, value) {
                (Ok(key), Ok(value)) if sendable => {
                    map.append(key, value);
                }
                _ => {
                    self.bad(
                        k,
                        format!(
                            "`{}: {text}` is not a header protoserve can send (ASCII, not grpc-*, not -bin)",
                            k.text()
                        ),
                    );
                    return None;
                }
            }
        }
        Some((map, templated))
    }

    fn error_spec(&mut self, node: &Node, input: &MessageDescriptor) -> Option<ErrorSpec> {
        let entries = self.keys(node, "an error", &["code", "message", "details"])?;
        let mut code = None;
        let mut message = String::new();
        let mut details = Vec::new();
        for (name, _, v) in entries {
            match name {
                "code" => code = Some(self.code(v)?),
                "message" => {
                    message = v.as_str().map(str::to_owned).unwrap_or_else(|| v.text().to_owned());
                    if super::template::is_template(&message) && !self.template(v, &message, input) {
                        return None;
                    }
                }
                _ => {
                    let Some(items) = v.as_seq() else {
                        self.bad(v, "`details` is a list of messages, each with its `@type`");
                        return None;
                    };
                    for item in items {
                        details.push(self.detail(item));
                    }
                }
            }
        }
        let Some(code) = code else {
            self.error(node.at, 1, "an error needs `code` (e.g. NOT_FOUND or 5)", None);
            return None;
        };
        let details = details.into_iter().collect::<Option<Vec<_>>>()?;
        let status = crate::validate::RpcStatus { code: code as i32, message: message.clone(), details };
        // Checked above when it is a template: parsed once, here.
        let template = match super::template::is_template(&message) {
            true => match super::template::Parsed::new(&message) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    self.bad(node, format!("template does not parse: {e}"));
                    return None;
                }
            },
            false => None,
        };
        Some(ErrorSpec { code, message, details: Bytes::from(status.encode_to_vec()), template })
    }

    fn code(&mut self, node: &Node) -> Option<tonic::Code> {
        const NAMES: &[&str] = &[
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        let n = match &node.value {
            Value::Scalar(serde_json::Value::Number(n), _) => n.as_i64().filter(|i| (0..=16).contains(i)),
            Value::Scalar(serde_json::Value::String(s), _) => {
                let up = s.to_ascii_uppercase().replace(['-', ' '], "_");
                let up = if up == "CANCELED" { "CANCELLED".to_owned() } else { up };
                NAMES.iter().position(|c| *c == up).map(|i| i as i64)
            }
            _ => None,
        };
        match n {
            Some(0) => {
                self.bad(node, "code OK is not an error; answer a `message` instead");
                None
            }
            Some(n) => Some(tonic::Code::from_i32(n as i32)),
            None => {
                let help = did_you_mean(node.text(), NAMES.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                self.error(
                    node.at,
                    node.text().len().max(1),
                    format!("`{}` is not a gRPC status code", node.text()),
                    help,
                );
                None
            }
        }
    }

    fn detail(&mut self, node: &Node) -> Option<prost_types::Any> {
        let Some(pairs) = node.as_map() else {
            self.bad(node, "an error detail is a mapping with `@type` and the message's fields");
            return None;
        };
        let Some((tk, tv)) = pairs.iter().find(|(k, _)| k.text() == "@type") else {
            self.error(node.at, 1, "an error detail needs `@type`, e.g. google.rpc.ErrorInfo", None);
            return None;
        };
        let _ = tk;
        let type_name = tv.as_str().unwrap_or_default();
        let short = type_name.rsplit('/').next().unwrap_or_default();
        let Some(desc) = self.pool.get_message_by_name(short) else {
            let names: Vec<String> = self.pool.all_messages().map(|m| m.full_name().to_owned()).collect();
            let help = did_you_mean(short, names.iter().map(String::as_str)).map(|s| format!("did you mean `{s}`?"));
            self.error(
                tv.at,
                tv.text().len().max(1),
                format!("no message `{short}` in the schema for an error detail"),
                help,
            );
            return None;
        };
        let rest = Node {
            at: node.at,
            value: Value::Map(pairs.iter().filter(|(k, _)| k.text() != "@type").cloned().collect()),
        };
        let value = self.encode(&rest, &desc)?;
        Some(prost_types::Any { type_url: format!("type.googleapis.com/{}", desc.full_name()), value: value.to_vec() })
    }
}

fn is_wkt(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Any"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn kind_name(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Double | FieldKind::Float => "a number",
        FieldKind::Int32 | FieldKind::Sint32 | FieldKind::Sfixed32 => "an int32",
        FieldKind::Int64 | FieldKind::Sint64 | FieldKind::Sfixed64 => "an int64",
        FieldKind::Uint32 | FieldKind::Fixed32 => "a uint32",
        FieldKind::Uint64 | FieldKind::Fixed64 => "a uint64",
        FieldKind::Bool => "a boolean",
        FieldKind::String => "a string",
        FieldKind::Bytes => "bytes (base64)",
        FieldKind::Message(_) => "a message",
        FieldKind::Enum(_) => "an enum value",
    }
}

fn has_template(j: &serde_json::Value) -> bool {
    match j {
        serde_json::Value::String(s) => super::template::is_template(s),
        serde_json::Value::Array(a) => a.iter().any(has_template),
        serde_json::Value::Object(m) => m.values().any(has_template),
        _ => false,
    }
}

fn base64_ok(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}
