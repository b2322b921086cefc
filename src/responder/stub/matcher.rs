//! Matchers over the proto3 JSON view of a request (proto field names, 64-bit
//! integers as strings, enums by name) and over request headers; their
//! specificity (for ranking) and, when nothing matched, what differs.

use std::cell::OnceCell;
use std::fmt;
use std::sync::Arc;

use prost_reflect::{DynamicMessage, ReflectMessage as _, SerializeOptions, Value as PV};
use serde_json::Value as J;

/// One matcher; all of a stub's matchers must hold.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// The whole request equals this (defaults left out on both sides). An
    /// order-sensitive one has its key too (see [`Subject::key`]).
    Equals { value: J, ignore_order: bool, key: Option<Key> },
    /// An order-sensitive `equals` kept as its key alone: the stubs the
    /// responder finds by hash. Matching compares the key; only explaining a
    /// miss turns it back into the value.
    Key(Key),
    /// The request holds at least these fields with these values.
    Contains(J),
    /// Each leaf's field matches its pattern (regex or glob, whole value).
    Leaves(Vec<Leaf>),
    /// Any of these.
    AnyOf(Vec<Matcher>),
    /// All of these.
    All(Vec<Matcher>),
    /// A CEL expression over `request` and `headers` is true.
    Cel(Arc<Cel>),
}

/// The key of a message (see [`Subject::key`]): its canonical wire bytes for
/// input types that [`WireKeys`] covers, else the text of its JSON view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) bytes: Box<[u8]>,
    pub(crate) wire: bool,
}

impl Key {
    /// The key of `msg` (of an input type that is wire-keyed or not).
    pub(crate) fn of(msg: &DynamicMessage, wire: bool) -> Option<Key> {
        let bytes = if wire { wire_key(msg) } else { key_text(msg)?.into_bytes() };
        Some(Key { bytes: bytes.into_boxed_slice(), wire })
    }
}

/// A pattern at a field path.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) path: Vec<String>,
    pub(crate) pattern: Pattern,
}

/// A whole-value regular expression or glob.
#[derive(Clone)]
pub(crate) struct Pattern {
    text: String,
    glob: bool,
    re: Option<regex::Regex>,
    matcher: Option<globset::GlobMatcher>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.text)
    }
}

impl Pattern {
    pub(crate) fn new(text: &str, glob: bool) -> Result<Pattern, String> {
        if glob {
            let g = globset::Glob::new(text).map_err(|e| format!("not a valid glob: {e}"))?;
            Ok(Pattern { text: text.to_owned(), glob, re: None, matcher: Some(g.compile_matcher()) })
        } else {
            let re = regex::RegexBuilder::new(&format!("^(?:{text})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("not a valid regular expression: {e}"))?;
            Ok(Pattern { text: text.to_owned(), glob, re: Some(re), matcher: None })
        }
    }

    fn is_match(&self, s: &str) -> bool {
        match (&self.re, &self.matcher) {
            (Some(re), _) => re.is_match(s),
            (_, Some(g)) => g.is_match(s),
            _ => false,
        }
    }

    fn show(&self) -> String {
        if self.glob { format!("glob `{}`", self.text) } else { format!("/{}/", self.text) }
    }
}

/// A compiled CEL expression.
pub(crate) struct Cel {
    text: String,
    program: cel::Program,
}

impl fmt::Debug for Cel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cel({})", self.text)
    }
}

impl Cel {
    pub(crate) fn compile(text: &str) -> Result<Cel, String> {
        // The parser is deeply recursive: bound what it is given.
        if text.len() > 4096 {
            return Err("longer than 4096 characters".into());
        }
        let program = std::panic::catch_unwind(|| cel::Program::compile(text))
            .map_err(|_| "the CEL parser failed on it".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(Cel { text: text.to_owned(), program })
    }

    fn eval(&self, request: &J, headers: &J) -> Result<bool, String> {
        let mut cx = cel::Context::default();
        cx.add_variable("request", request.clone()).map_err(|e| e.to_string())?;
        cx.add_variable("headers", headers.clone()).map_err(|e| e.to_string())?;
        match self.program.execute(&cx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("it gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a matcher looks at: a request message (its JSON views computed once,
/// when first needed) or the request headers, and the headers for CEL.
pub(crate) struct Subject<'a> {
    msg: Option<&'a DynamicMessage>,
    fixed: Option<&'a J>,
    full: OnceCell<J>,
    sparse: OnceCell<J>,
    key: OnceCell<Option<Key>>,
    headers: &'a J,
}

impl<'a> Subject<'a> {
    pub(crate) fn message(msg: &'a DynamicMessage, headers: &'a J) -> Self {
        Subject {
            msg: Some(msg),
            fixed: None,
            full: OnceCell::new(),
            sparse: OnceCell::new(),
            key: OnceCell::new(),
            headers,
        }
    }

    pub(crate) fn headers(headers: &'a J) -> Self {
        Subject {
            msg: None,
            fixed: Some(headers),
            full: OnceCell::new(),
            sparse: OnceCell::new(),
            key: OnceCell::new(),
            headers,
        }
    }

    fn view<'s>(&'s self, cell: &'s OnceCell<J>, skip_defaults: bool) -> &'s J {
        if let Some(f) = self.fixed {
            return f;
        }
        cell.get_or_init(|| {
            let opts = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(skip_defaults);
            self.msg
                .and_then(|m| m.serialize_with_options(serde_json::value::Serializer, &opts).ok())
                .unwrap_or(J::Null)
        })
    }

    /// Every field, defaults included.
    pub(crate) fn full(&self) -> &J {
        self.view(&self.full, false)
    }

    /// Defaults left out (what `equals` compares).
    pub(crate) fn sparse(&self) -> &J {
        self.view(&self.sparse, true)
    }

    /// The request's key, in the form its type uses (`wire`: see
    /// [`WireKeys`]); `None` for headers. Two messages have the same key
    /// exactly when an order-sensitive `equals` holds between them.
    pub(crate) fn key(&self, wire: bool) -> Option<&[u8]> {
        let key = self.key.get_or_init(|| self.msg.and_then(|m| Key::of(m, wire)));
        key.as_ref().filter(|k| k.wire == wire).map(|k| &*k.bytes)
    }
}

/// Input types whose `equals` keys are wire bytes: proto3-style flat messages
/// (no message, map, repeated, float or double fields, no extensions), where
/// a message's canonical encoding (known fields in number order, minimal
/// varints, defaults left out unless the field has presence) is one-to-one
/// with its JSON view. A request whose bytes are already canonical is its own
/// key: found without being decoded, as the store's wire fast paths do.
#[derive(Debug, Clone)]
pub(crate) struct WireKeys {
    /// By field number: what a canonical field looks like.
    fields: Vec<(u32, Canon, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Canon {
    /// A varint holding an int32 or enum (negative ones sign-extended to 64 bits).
    I32,
    /// A varint holding a uint32 or a zigzagged sint32.
    U32,
    Bool,
    /// A varint of 64 bits.
    U64,
    Fixed32,
    Fixed64,
    Utf8,
    Bytes,
}

impl WireKeys {
    pub(crate) fn of(desc: &prost_reflect::MessageDescriptor) -> Option<WireKeys> {
        use prost_reflect::Kind as K;
        if desc.extension_ranges().len() > 0 {
            return None;
        }
        let mut fields = Vec::new();
        for f in desc.fields() {
            if f.is_list() || f.is_map() || f.is_group() {
                return None;
            }
            let canon = match f.kind() {
                K::Int32 | K::Enum(_) => Canon::I32,
                K::Uint32 | K::Sint32 => Canon::U32,
                K::Bool => Canon::Bool,
                K::Int64 | K::Uint64 | K::Sint64 => Canon::U64,
                K::Fixed32 | K::Sfixed32 => Canon::Fixed32,
                K::Fixed64 | K::Sfixed64 => Canon::Fixed64,
                K::String => Canon::Utf8,
                K::Bytes => Canon::Bytes,
                K::Float | K::Double | K::Message(_) => return None,
            };
            fields.push((f.number(), canon, f.supports_presence()));
        }
        fields.sort_unstable_by_key(|f| f.0);
        Some(WireKeys { fields })
    }

    /// Whether `raw` is the canonical encoding of the message it decodes to
    /// (every field known, in increasing number order, once, with the wire
    /// type, minimal varints and lengths, and not a default unless the field
    /// has presence). Anything else (a valid message written otherwise, or not
    /// a valid message) is `false`: it is decoded and its key computed.
    pub(crate) fn is_canonical(&self, raw: &[u8]) -> bool {
        use prost::encoding::{WireType, decode_key, decode_varint, encoded_len_varint, key_len};
        let mut buf = raw;
        let mut last = 0;
        let mut next = 0;
        while !buf.is_empty() {
            let before = buf.len();
            let Ok((number, wire_type)) = decode_key(&mut buf) else { return false };
            if before - buf.len() != key_len(number) || number <= last {
                return false;
            }
            last = number;
            // Fields come in number order: search on from the last one.
            let Some(i) = self.fields[next..].iter().position(|f| f.0 == number) else { return false };
            next += i + 1;
            let (_, canon, presence) = self.fields[next - 1];
            let varint = |buf: &mut &[u8]| -> Option<u64> {
                let before = buf.len();
                let v = decode_varint(buf).ok()?;
                (before - buf.len() == encoded_len_varint(v)).then_some(v)
            };
            let ok = match (canon, wire_type) {
                (Canon::I32 | Canon::U32 | Canon::Bool | Canon::U64, WireType::Varint) => {
                    let Some(v) = varint(&mut buf) else { return false };
                    let fits = match canon {
                        Canon::I32 => v as i32 as i64 as u64 == v,
                        Canon::U32 => v <= u64::from(u32::MAX),
                        Canon::Bool => v <= 1,
                        _ => true,
                    };
                    fits && (presence || v != 0)
                }
                (Canon::Fixed32 | Canon::Fixed64, WireType::ThirtyTwoBit | WireType::SixtyFourBit) => {
                    let n = if canon == Canon::Fixed32 { 4 } else { 8 };
                    if (wire_type == WireType::ThirtyTwoBit) != (n == 4) || buf.len() < n {
                        return false;
                    }
                    let (value, rest) = buf.split_at(n);
                    buf = rest;
                    presence || value.iter().any(|b| *b != 0)
                }
                (Canon::Utf8 | Canon::Bytes, WireType::LengthDelimited) => {
                    let Some(len) = varint(&mut buf) else { return false };
                    let Some(len) = usize::try_from(len).ok().filter(|l| *l <= buf.len()) else { return false };
                    let (payload, rest) = buf.split_at(len);
                    buf = rest;
                    (canon == Canon::Bytes || std::str::from_utf8(payload).is_ok()) && (presence || len != 0)
                }
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// The canonical encoding of a message's known fields (unknown fields are not
/// in the JSON view, so not in the key).
fn wire_key(msg: &DynamicMessage) -> Vec<u8> {
    use prost::Message as _;
    if msg.unknown_fields().next().is_none() {
        return msg.encode_to_vec();
    }
    let mut known = DynamicMessage::new(msg.descriptor());
    for (f, v) in msg.fields() {
        known.set_field(&f, v.clone());
    }
    known.encode_to_vec()
}

/// The text of a message's sparse JSON view (proto field names, defaults left
/// out) that two messages share exactly when an order-sensitive `equals`
/// holds between them: stubs are found by it, and both the stub's message and
/// each request go through this one function. A message with no map entries
/// and no `Any` is written straight from the message (fields in the schema's
/// order; no tree is built per request); maps iterate in no fixed order, so a
/// message with map entries (or an `Any`, whose content may have some) is
/// written from its JSON tree, whose keys are sorted. Texts of the two forms
/// never collide: they differ in whether a non-empty map is there.
pub(crate) fn key_text(msg: &DynamicMessage) -> Option<String> {
    let opts = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(true);
    if plain(msg) {
        let mut out = Vec::with_capacity(64);
        msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &opts).ok()?;
        String::from_utf8(out).ok()
    } else {
        let tree = msg.serialize_with_options(serde_json::value::Serializer, &opts).ok()?;
        serde_json::to_string(&tree).ok()
    }
}

/// No map entries and no `Any`, at any depth.
fn plain(msg: &DynamicMessage) -> bool {
    fn value(v: &PV) -> bool {
        match v {
            PV::Map(m) => m.is_empty(),
            PV::Message(m) => m.descriptor().full_name() != "google.protobuf.Any" && plain(m),
            PV::List(items) => items.iter().all(value),
            _ => true,
        }
    }
    msg.fields().all(|(_, v)| value(v)) && msg.extensions().all(|(_, v)| value(v))
}

impl Matcher {
    /// For an order-sensitive `equals`, the text the request's sparse view has
    /// exactly when it matches (both sides come from the same serializer: keys
    /// sorted, numbers and enums in one form), to find such stubs by hash.
    pub(crate) fn equals_key(&self) -> Option<&Key> {
        match self {
            Matcher::Key(k) => Some(k),
            _ => None,
        }
    }

    /// An order-sensitive `equals` as its key alone (the value dropped).
    pub(crate) fn into_key(self) -> Matcher {
        match self {
            Matcher::Equals { key: Some(k), ignore_order: false, .. } => Matcher::Key(k),
            m => m,
        }
    }

    /// The value a `Key` stands for (its text parsed, or its bytes decoded
    /// with the request's type), as the sparse view of a request.
    fn key_value(key: &Key, s: &Subject<'_>) -> J {
        if !key.wire {
            return serde_json::from_slice(&key.bytes).unwrap_or(J::Null);
        }
        let opts = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(true);
        s.msg
            .and_then(|m| DynamicMessage::decode(m.descriptor(), &*key.bytes).ok())
            .and_then(|m| m.serialize_with_options(serde_json::value::Serializer, &opts).ok())
            .unwrap_or(J::Null)
    }

    pub(crate) fn is_match(&self, s: &Subject<'_>) -> bool {
        match self {
            Matcher::Equals { value, ignore_order, .. } => equal(value, s.sparse(), *ignore_order),
            Matcher::Key(k) => s.key(k.wire) == Some(&*k.bytes),
            Matcher::Contains(v) => contains(v, Some(s.full())),
            Matcher::Leaves(leaves) => leaves.iter().all(|l| leaf_matches(l, s.full())),
            Matcher::AnyOf(ms) => ms.iter().any(|m| m.is_match(s)),
            Matcher::All(ms) => ms.iter().all(|m| m.is_match(s)),
            Matcher::Cel(c) => c.eval(s.full(), s.headers).unwrap_or(false),
        }
    }

    /// How many fields it pins down: the ranking's "most specific".
    pub(crate) fn specificity(&self) -> usize {
        match self {
            Matcher::Equals { value, .. } | Matcher::Contains(value) => leaves(value),
            // Counted before the value became a key (this is not called then).
            Matcher::Key(_) => 1,
            Matcher::Leaves(l) => l.len(),
            Matcher::AnyOf(ms) => ms.iter().map(Matcher::specificity).min().unwrap_or(0),
            Matcher::All(ms) => ms.iter().map(Matcher::specificity).sum(),
            Matcher::Cel(_) => 1,
        }
    }

    /// What differs, one line per field (`what` names the subject: "request", "header").
    pub(crate) fn diffs(&self, s: &Subject<'_>, what: &str, out: &mut Vec<String>) {
        match self {
            Matcher::Equals { value, ignore_order, .. } => {
                if !equal(value, s.sparse(), *ignore_order) {
                    diff_values(value, Some(s.sparse()), &mut Vec::new(), what, true, out);
                }
            }
            Matcher::Key(k) => {
                if s.key(k.wire) != Some(&*k.bytes) {
                    let value = Matcher::key_value(k, s);
                    diff_values(&value, Some(s.sparse()), &mut Vec::new(), what, true, out);
                }
            }
            Matcher::Contains(v) => diff_values(v, Some(s.full()), &mut Vec::new(), what, false, out),
            Matcher::Leaves(ls) => {
                for l in ls {
                    if !leaf_matches(l, s.full()) {
                        let got = lookup(s.full(), &l.path).map_or("nothing".to_owned(), show);
                        out.push(format!(
                            "{what} `{}`: expected to match {}, got {got}",
                            l.path.join("."),
                            l.pattern.show()
                        ));
                    }
                }
            }
            Matcher::AnyOf(ms) => {
                if !ms.iter().any(|m| m.is_match(s)) {
                    let best = ms
                        .iter()
                        .map(|m| {
                            let mut d = Vec::new();
                            m.diffs(s, what, &mut d);
                            d
                        })
                        .min_by_key(Vec::len)
                        .unwrap_or_default();
                    out.push(format!("none of `anyOf` matched; the closest differs in: {}", best.join("; ")));
                }
            }
            Matcher::All(ms) => ms.iter().for_each(|m| m.diffs(s, what, out)),
            Matcher::Cel(c) => match c.eval(s.full(), s.headers) {
                Ok(true) => {}
                Ok(false) => out.push(format!("cel `{}` is false", c.text)),
                Err(e) => out.push(format!("cel `{}` failed: {e}", c.text)),
            },
        }
    }
}

fn leaves(v: &J) -> usize {
    match v {
        J::Object(m) => m.values().map(leaves).sum::<usize>().max(1),
        J::Array(a) => a.iter().map(leaves).sum::<usize>().max(1),
        _ => 1,
    }
}

fn lookup<'v>(mut v: &'v J, path: &[String]) -> Option<&'v J> {
    for p in path {
        v = v.get(p)?;
    }
    Some(v)
}

/// The values at `path`, descending into lists (any element may match).
fn values_at<'v>(v: &'v J, path: &[String], out: &mut Vec<&'v J>) {
    match (v, path.split_first()) {
        (J::Array(items), _) => items.iter().for_each(|i| values_at(i, path, out)),
        (_, None) => out.push(v),
        (J::Object(m), Some((first, rest))) => {
            if let Some(next) = m.get(first) {
                values_at(next, rest, out);
            }
        }
        _ => {}
    }
}

fn leaf_matches(leaf: &Leaf, v: &J) -> bool {
    let mut found = Vec::new();
    values_at(v, &leaf.path, &mut found);
    if found.is_empty() {
        return leaf.pattern.is_match("");
    }
    found.iter().any(|v| match v {
        J::String(s) => leaf.pattern.is_match(s),
        J::Null => leaf.pattern.is_match(""),
        J::Number(_) | J::Bool(_) => leaf.pattern.is_match(&v.to_string()),
        _ => false,
    })
}

fn is_default(v: &J) -> bool {
    match v {
        J::Null => true,
        J::Bool(b) => !b,
        J::Number(n) => n.as_f64() == Some(0.0),
        J::String(s) => s.is_empty() || s == "0",
        J::Array(a) => a.is_empty(),
        J::Object(m) => m.values().all(is_default),
    }
}

fn scalar_eq(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        // 64-bit integers are strings in the view; a stub may give either.
        (J::Number(x), J::String(y)) | (J::String(y), J::Number(x)) => y.parse::<f64>().ok() == x.as_f64(),
        _ => a == b,
    }
}

/// Deep equality; with `ignore_order`, lists are compared as multisets.
pub(crate) fn equal(a: &J, b: &J, ignore_order: bool) -> bool {
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            let get = |m: &serde_json::Map<String, J>, k: &str| m.get(k).filter(|v| !v.is_null()).cloned();
            x.keys().chain(y.keys()).all(|k| match (get(x, k), get(y, k)) {
                (Some(p), Some(q)) => equal(&p, &q, ignore_order),
                (Some(p), None) | (None, Some(p)) => is_default(&p),
                (None, None) => true,
            })
        }
        (J::Array(x), J::Array(y)) if x.len() == y.len() => {
            if !ignore_order {
                return x.iter().zip(y).all(|(p, q)| equal(p, q, false));
            }
            let mut used = vec![false; y.len()];
            x.iter().all(|p| {
                let hit = y.iter().enumerate().position(|(i, q)| !used[i] && equal(p, q, true));
                hit.map(|i| used[i] = true).is_some()
            })
        }
        (J::Array(_), _) | (_, J::Array(_)) => false,
        (J::Null, o) | (o, J::Null) => is_default(o),
        _ => scalar_eq(a, b),
    }
}

/// Structural subset: every field of `want` is in `got` with a value that
/// contains it; a list element of `want` is contained by some element of `got`.
pub(crate) fn contains(want: &J, got: Option<&J>) -> bool {
    match (want, got) {
        (J::Null, g) => g.is_none_or(is_default),
        (J::Object(w), Some(J::Object(g))) => w.iter().all(|(k, v)| contains(v, g.get(k))),
        (J::Object(w), None | Some(J::Null)) => w.values().all(|v| contains(v, None)),
        (J::Array(w), Some(J::Array(g))) => w.iter().all(|x| g.iter().any(|y| contains(x, Some(y)))),
        (J::Array(w), None) => w.is_empty(),
        (_, None) => is_default(want),
        (w, Some(g)) => scalar_eq(w, g),
    }
}

fn show(v: &J) -> String {
    let s = v.to_string();
    if s.len() > 80 { format!("{}...", &s[..s.floor_char_boundary(77)]) } else { s }
}

/// One line per leaf where `want` and `got` differ.
fn diff_values(want: &J, got: Option<&J>, path: &mut Vec<String>, what: &str, exact: bool, out: &mut Vec<String>) {
    let ok = if exact { got.is_some_and(|g| equal(want, g, false)) } else { contains(want, got) };
    if ok {
        return;
    }
    match (want, got) {
        (J::Object(w), Some(J::Object(g))) => {
            for (k, v) in w {
                path.push(k.clone());
                diff_values(v, g.get(k), path, what, exact, out);
                path.pop();
            }
            if exact {
                for (k, v) in g {
                    if !w.contains_key(k) && !is_default(v) {
                        out.push(format!("{what} `{}`: expected nothing, got {}", join(path, k), show(v)));
                    }
                }
            }
        }
        _ => {
            let got = got.map_or("nothing".to_owned(), show);
            let at = if path.is_empty() { "(whole)".to_owned() } else { path.join(".") };
            out.push(format!("{what} `{at}`: expected {}, got {got}", show(want)));
        }
    }
}

fn join(path: &[String], k: &str) -> String {
    let mut p = path.to_vec();
    p.push(k.to_owned());
    p.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equality_and_subsets() {
        assert!(equal(&json!({"a": 1, "b": [1, 2]}), &json!({"a": 1.0, "b": [1, 2], "c": ""}), false));
        assert!(!equal(&json!({"b": [1, 2]}), &json!({"b": [2, 1]}), false));
        assert!(equal(&json!({"b": [1, 2]}), &json!({"b": [2, 1]}), true));
        assert!(!equal(&json!({"b": [1, 1]}), &json!({"b": [1, 2]}), true));
        assert!(contains(&json!({"a": {"x": "1"}}), Some(&json!({"a": {"x": "1", "y": 2}, "b": 3}))));
        assert!(!contains(&json!({"a": {"x": "2"}}), Some(&json!({"a": {"x": "1"}}))));
        assert!(contains(&json!({"t": ["b"]}), Some(&json!({"t": ["a", "b"]}))));
        assert!(contains(&json!({"n": 5}), Some(&json!({"n": "5"}))));
    }

    #[test]
    fn patterns_are_whole_value() {
        let p = Pattern::new("a.c", false).unwrap();
        assert!(p.is_match("abc") && !p.is_match("xabc"));
        let g = Pattern::new("*@example.com", true).unwrap();
        assert!(g.is_match("ann@example.com") && !g.is_match("ann@example.org"));
        assert!(Pattern::new("(", false).is_err());
    }

    const KEYED: &str = r#"syntax = "proto3";
package k;
message K {
  string a = 1;
  int64 b = 2;
  repeated int32 c = 3;
  map<string, string> m = 4;
  K child = 5;
  double d = 6;
}
enum E { E0 = 0; E1 = 1; }
message W {
  string a = 1;
  int64 b = 2;
  bool c = 3;
  int32 i = 4;
  optional string o = 5;
  sint32 s = 6;
  fixed64 f = 7;
  E e = 8;
  uint32 u = 9;
  bytes y = 10;
}
"#;

    fn keyed() -> prost_reflect::MessageDescriptor {
        message("k.K")
    }

    fn message(name: &str) -> prost_reflect::MessageDescriptor {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.proto"), KEYED).unwrap();
        let schema = crate::schema::load(&[dir.path().to_path_buf()]).unwrap();
        schema.pool().get_message_by_name(name).unwrap()
    }

    /// A random `k.W` from small domains.
    fn random_w(rng: &mut fastrand::Rng, desc: &prost_reflect::MessageDescriptor) -> DynamicMessage {
        let mut j = serde_json::Map::new();
        let mut coin = fastrand::Rng::with_seed(rng.u64(..));
        let mut put = |k: &str, v: J| {
            if coin.u8(..3) == 0 {
                j.insert(k.into(), v);
            }
        };
        put("a", json!(["", "x"][rng.usize(..2)]));
        put("b", json!(rng.i64(-1..2).to_string()));
        put("c", json!(rng.bool()));
        put("i", json!(rng.i32(-1..2)));
        put("o", json!(["", "p"][rng.usize(..2)]));
        put("s", json!(rng.i32(-1..2)));
        put("f", json!(rng.u64(0..2).to_string()));
        put("e", json!(["E0", "E1"][rng.usize(..2)]));
        put("u", json!(rng.u32(0..2)));
        put("y", json!(["", "AQ=="][rng.usize(..2)]));
        DynamicMessage::deserialize(desc.clone(), J::Object(j)).unwrap()
    }

    /// `msg` written otherwise: fields shuffled, some twice (the last wins),
    /// explicit defaults, padded varints, unknown fields.
    fn scrambled(rng: &mut fastrand::Rng, msg: &DynamicMessage) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let canonical = prost::Message::encode_to_vec(msg);
        // Split the canonical bytes into fields (walk them with the flat walker).
        let shape = crate::wire::FlatShape::of(&msg.descriptor()).unwrap();
        let mut fields: Vec<Vec<u8>> = Vec::new();
        crate::wire::walk(&canonical, &shape, |f| {
            let mut out = Vec::new();
            encode_key(f.number, f.wire_type, &mut out);
            out.extend_from_slice(f.after_key);
            fields.push(out);
        })
        .unwrap();
        let mut out = Vec::new();
        if rng.u8(..4) == 0 {
            // The same field first with another value (the last occurrence wins).
            encode_key(1, WireType::LengthDelimited, &mut out);
            out.extend_from_slice(&[1, b'z']);
        }
        if rng.u8(..4) == 0 {
            rng.shuffle(&mut fields);
        }
        for f in fields {
            out.extend_from_slice(&f);
        }
        match rng.u8(..4) {
            0 => {
                // An explicit default of a field without presence, last.
                encode_key(9, WireType::Varint, &mut out);
                out.push(0);
            }
            1 => {
                // An unknown field.
                encode_key(99, WireType::Varint, &mut out);
                encode_varint(7, &mut out);
            }
            2 => {
                // A padded varint: 1 written in two bytes.
                encode_key(9, WireType::Varint, &mut out);
                out.extend_from_slice(&[0x81, 0x00]);
            }
            _ => {}
        }
        out
    }

    #[test]
    fn wire_keys_are_one_to_one_with_text_keys_and_canonical_bytes_are_their_own() {
        let desc = message("k.W");
        let wire = WireKeys::of(&desc).expect("k.W is flat");
        assert!(WireKeys::of(&keyed()).is_none(), "maps, lists, doubles, messages: text keys");
        let mut rng = fastrand::Rng::with_seed(29);
        let (mut same, mut canonical, mut other) = (0, 0, 0);
        for _ in 0..3000 {
            let (x, y) = (random_w(&mut rng, &desc), random_w(&mut rng, &desc));
            let (wx, wy) = (Key::of(&x, true).unwrap(), Key::of(&y, true).unwrap());
            assert_eq!(wx == wy, key_text(&x) == key_text(&y), "{x:?} / {y:?}");
            same += usize::from(wx == wy);
            // A message's encoding is canonical, and is its key.
            let bytes = prost::Message::encode_to_vec(&x);
            assert!(wire.is_canonical(&bytes), "{x:?}");
            assert_eq!(&*wx.bytes, &bytes[..]);
            // Written otherwise: canonical only if it is the key of what it decodes to.
            let raw = scrambled(&mut rng, &x);
            let decoded = DynamicMessage::decode(desc.clone(), raw.as_slice()).unwrap();
            let key = Key::of(&decoded, true).unwrap();
            if wire.is_canonical(&raw) {
                assert_eq!(&*key.bytes, &raw[..], "{raw:?}");
                canonical += 1;
            } else {
                other += 1;
            }
            // Random bytes: never canonical unless they are the key of their decoding.
            let mut junk = raw.clone();
            if !junk.is_empty() {
                let i = rng.usize(..junk.len());
                junk[i] = rng.u8(..);
            }
            if wire.is_canonical(&junk) {
                let m = DynamicMessage::decode(desc.clone(), junk.as_slice()).expect("canonical bytes decode");
                assert_eq!(&*Key::of(&m, true).unwrap().bytes, &junk[..], "{junk:?}");
            }
        }
        assert!(same > 20 && canonical > 300 && other > 300, "{same} {canonical} {other}");
    }

    /// A random `k.K` from small domains (so that equal pairs are common), with
    /// its map entries inserted in a random order.
    fn random(rng: &mut fastrand::Rng, desc: &prost_reflect::MessageDescriptor, depth: u8) -> DynamicMessage {
        let mut j = serde_json::Map::new();
        if rng.u8(..3) == 0 {
            j.insert("a".into(), json!(["", "x", "y"][rng.usize(..3)]));
        }
        if rng.u8(..3) == 0 {
            j.insert("b".into(), json!(rng.i64(-1..2).to_string()));
        }
        if rng.u8(..3) == 0 {
            j.insert("c".into(), json!((0..rng.usize(..3)).map(|_| rng.i32(0..2)).collect::<Vec<_>>()));
        }
        if rng.u8(..3) == 0 {
            let mut keys = vec!["k1", "k2", "k3", "k4"];
            keys.truncate(rng.usize(..5));
            rng.shuffle(&mut keys);
            let mut m = serde_json::Map::new();
            for k in keys {
                m.insert(k.into(), json!(["w", "v"][rng.usize(..2)]));
            }
            j.insert("m".into(), J::Object(m));
        }
        if rng.u8(..3) == 0 {
            j.insert("d".into(), json!([0.0, 1.5, -2.0][rng.usize(..3)]));
        }
        let mut msg = DynamicMessage::deserialize(desc.clone(), J::Object(j)).unwrap();
        if depth < 1 && rng.u8(..4) == 0 {
            let child = random(rng, desc, depth + 1);
            msg.set_field_by_name("child", prost_reflect::Value::Message(child));
        }
        msg
    }

    /// The same message with its maps rebuilt (another hash order).
    fn rebuilt(msg: &DynamicMessage) -> DynamicMessage {
        let bytes = prost::Message::encode_to_vec(msg);
        DynamicMessage::decode(prost_reflect::ReflectMessage::descriptor(msg), bytes.as_slice()).unwrap()
    }

    #[test]
    fn keys_are_equal_exactly_when_equals_holds() {
        let desc = keyed();
        let null = J::Null;
        let mut rng = fastrand::Rng::with_seed(13);
        let (mut same, mut maps) = (0, 0);
        for _ in 0..3000 {
            let (x, y) = (random(&mut rng, &desc, 0), random(&mut rng, &desc, 0));
            let (kx, ky) = (key_text(&x).unwrap(), key_text(&y).unwrap());
            let (sx, sy) = (Subject::message(&x, &null), Subject::message(&y, &null));
            // The key tells messages apart exactly as the text of their JSON
            // trees does (what stubs were found by before), and equal keys
            // mean `equals` holds.
            let tree = |s: &Subject<'_>| serde_json::to_string(s.sparse()).unwrap();
            assert_eq!(kx == ky, tree(&sx) == tree(&sy), "{kx} / {ky}");
            assert!(kx != ky || equal(sx.sparse(), sy.sparse(), false), "{kx}");
            same += usize::from(kx == ky);
            // The subject's key is this key; the same message rebuilt has it too.
            assert_eq!(sx.key(false), Some(kx.as_bytes()));
            assert_eq!(key_text(&rebuilt(&x)).unwrap(), kx);
            maps += usize::from(!plain(&x));
        }
        assert!(same > 100 && maps > 300, "the generator covers equal pairs ({same}) and maps ({maps})");
    }

    #[test]
    fn a_key_matches_like_its_equals_and_explains_a_miss() {
        let desc = keyed();
        let null = J::Null;
        let want = DynamicMessage::deserialize(desc.clone(), json!({"a": "x", "b": "5"})).unwrap();
        let key = Matcher::Equals {
            value: Subject::message(&want, &null).sparse().clone(),
            ignore_order: false,
            key: Key::of(&want, false),
        }
        .into_key();
        assert!(matches!(&key, Matcher::Key(_)));
        let same = DynamicMessage::deserialize(desc.clone(), json!({"b": 5, "a": "x", "d": 0})).unwrap();
        assert!(key.is_match(&Subject::message(&same, &null)));
        let other = DynamicMessage::deserialize(desc, json!({"a": "x", "b": "6"})).unwrap();
        let subj = Subject::message(&other, &null);
        assert!(!key.is_match(&subj));
        let mut out = Vec::new();
        key.diffs(&subj, "request", &mut out);
        assert_eq!(out, vec![r#"request `b`: expected "5", got "6""#.to_owned()]);
        // The same with a wire key (a flat type): a miss decodes the key to explain.
        let wdesc = message("k.W");
        let want = DynamicMessage::deserialize(wdesc.clone(), json!({"a": "x", "e": "E1"})).unwrap();
        let key = Matcher::Key(Key::of(&want, true).unwrap());
        let same = DynamicMessage::deserialize(wdesc.clone(), json!({"e": 1, "a": "x", "b": "0"})).unwrap();
        assert!(key.is_match(&Subject::message(&same, &null)));
        let other = DynamicMessage::deserialize(wdesc, json!({"a": "x"})).unwrap();
        let mut out = Vec::new();
        key.diffs(&Subject::message(&other, &null), "request", &mut out);
        assert_eq!(out, vec![r#"request `e`: expected "E1", got nothing"#.to_owned()]);
        // ignoreArrayOrder keeps its value: it is compared, not looked up.
        let unordered = Matcher::Equals { value: json!({}), ignore_order: true, key: None }.into_key();
        assert!(matches!(unordered, Matcher::Equals { .. }));
    }

    #[test]
    fn cel_over_request_and_headers() {
        let c = Cel::compile("request.n > 3 && headers['x-a'] == 'b'").unwrap();
        assert_eq!(c.eval(&json!({"n": 5}), &json!({"x-a": "b"})), Ok(true));
        assert_eq!(c.eval(&json!({"n": 1}), &json!({"x-a": "b"})), Ok(false));
        assert!(Cel::compile("request.n >").is_err());
    }
}
