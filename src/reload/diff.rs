//! What changed between the live schema and a candidate, element by element and
//! field by field, for the one reload log line (`users.User: +field phone = 6`).

use std::collections::BTreeMap;
use std::fmt;

use prost::Message as _;
use prost_reflect::{Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

/// How many changes the log line lists before summarising the rest.
pub(crate) const LISTED: usize = 8;

/// Services, methods, messages and enums added, removed or changed between two
/// schemas, and what changed inside each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDiff {
    /// Added elements: `service x.S`, `method x.S/M`, `message x.M`, `enum x.E`.
    pub added: Vec<String>,
    /// Removed elements, named the same way.
    pub removed: Vec<String>,
    /// Elements present in both with a different definition.
    pub changed: Vec<String>,
    /// One line per change, e.g. `users.User: +field phone = 6`,
    /// `users.User: field email 3 -> 6`, `+rpc users.UserService/DeleteUser`.
    pub details: Vec<String>,
}

/// One element's identity and how to compare it.
enum Element {
    Service,
    Method(prost_types::MethodDescriptorProto),
    Message(MessageDescriptor, Vec<u8>),
    Enum(EnumDescriptor, Vec<u8>),
}

/// Files every pool may carry that are not the user's: well-known types,
/// buf.validate and the built-in googleapis files. Their elements are not listed.
fn is_builtin(file: &str) -> bool {
    file.starts_with("google/protobuf/")
        || file == "buf/validate/validate.proto"
        || crate::schema::builtin::FILES.iter().any(|(n, _)| *n == file)
}

/// Services first, then rpcs, messages and enums: the log line leads with what
/// clients call.
fn rank(key: &str) -> u8 {
    match key.split_once(' ').map_or(key, |(k, _)| k) {
        "service" => 0,
        "method" => 1,
        "message" => 2,
        _ => 3,
    }
}

fn elements(pool: &DescriptorPool) -> BTreeMap<(u8, String), Element> {
    let mut v = BTreeMap::new();
    let mut insert = |k: String, e: Element| {
        v.insert((rank(&k), k), e);
    };
    collect(pool, &mut insert);
    v
}

fn collect(pool: &DescriptorPool, insert: &mut impl FnMut(String, Element)) {
    for s in pool.services().filter(|s| !is_builtin(s.parent_file().name())) {
        insert(format!("service {}", s.full_name()), Element::Service);
        for m in s.methods() {
            insert(
                format!("method {}/{}", s.full_name(), m.name()),
                Element::Method(m.method_descriptor_proto().clone()),
            );
        }
    }
    for m in pool.all_messages().filter(|m| !is_builtin(m.parent_file().name())) {
        if !m.is_map_entry() {
            // Nested declarations are elements of their own: compare the rest.
            let mut own = m.descriptor_proto().clone();
            own.nested_type.retain(|n| n.options.as_ref().is_some_and(|o| o.map_entry()));
            own.enum_type.clear();
            insert(format!("message {}", m.full_name()), Element::Message(m.clone(), own.encode_to_vec()));
        }
    }

    for e in pool.all_enums().filter(|e| !is_builtin(e.parent_file().name())) {
        let bytes = e.enum_descriptor_proto().encode_to_vec();
        insert(format!("enum {}", e.full_name()), Element::Enum(e, bytes));
    }
}

impl SchemaDiff {
    /// Compares the user-visible elements of two pools.
    pub fn between(old: &DescriptorPool, new: &DescriptorPool) -> SchemaDiff {
        let (a, b) = (elements(old), elements(new));
        let mut d = SchemaDiff::default();
        // (element rank, line): sorted by rank so removals and additions of the
        // same kind sit together (`-service a.S; +service b.S`).
        let mut lines: Vec<(u8, String)> = Vec::new();
        for (key, x) in &a {
            let k = &key.1;
            match b.get(key) {
                None => {
                    d.removed.push(k.clone());
                    lines.push((key.0, format!("-{}", short(k))));
                }
                Some(y) => {
                    let changed = changes(k, x, y);
                    if !changed.is_empty() {
                        d.changed.push(k.clone());
                        lines.extend(changed.into_iter().map(|l| (key.0, l)));
                    }
                }
            }
        }
        for key in b.keys().filter(|k| !a.contains_key(*k)) {
            d.added.push(key.1.clone());
            lines.push((key.0, format!("+{}", short(&key.1))));
        }
        lines.sort_by_key(|(rank, _)| *rank);
        d.details = lines.into_iter().map(|(_, l)| l).collect();
        d
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// `method x.S/M` reads `rpc x.S/M` in the log.
fn short(key: &str) -> String {
    match key.strip_prefix("method ") {
        Some(m) => format!("rpc {m}"),
        None => key.to_owned(),
    }
}

fn name_of(key: &str) -> &str {
    key.split_once(' ').map_or(key, |(_, n)| n)
}

fn changes(key: &str, old: &Element, new: &Element) -> Vec<String> {
    let name = name_of(key);
    match (old, new) {
        (Element::Method(x), Element::Method(y)) if x != y => {
            let mut out = Vec::new();
            for (what, a, b) in
                [("input", x.input_type(), y.input_type()), ("output", x.output_type(), y.output_type())]
            {
                if a != b {
                    out.push(format!("{name}: {what} {} -> {}", a.trim_start_matches('.'), b.trim_start_matches('.')));
                }
            }
            for (what, a, b) in [
                ("client streaming", x.client_streaming(), y.client_streaming()),
                ("server streaming", x.server_streaming(), y.server_streaming()),
            ] {
                if a != b {
                    out.push(format!("{name}: {}{what}", if b { "now " } else { "no longer " }));
                }
            }
            if out.is_empty() {
                out.push(format!("{name}: options changed"));
            }
            out
        }
        (Element::Message(x, xb), Element::Message(y, yb)) if xb != yb => {
            let mut out = message_changes(x, y).into_iter().map(|c| format!("{name}: {c}")).collect::<Vec<_>>();
            if out.is_empty() {
                out.push(format!("{name}: options or reserved names/numbers changed"));
            }
            out
        }
        (Element::Enum(x, xb), Element::Enum(y, yb)) if xb != yb => {
            let mut out = Vec::new();
            for v in x.values() {
                match y.get_value_by_name(v.name()) {
                    None => out.push(format!("{name}: -value {} = {}", v.name(), v.number())),
                    Some(w) if w.number() != v.number() => {
                        out.push(format!("{name}: value {} {} -> {}", v.name(), v.number(), w.number()));
                    }
                    Some(_) => {}
                }
            }
            for w in y.values().filter(|w| x.get_value_by_name(w.name()).is_none()) {
                out.push(format!("{name}: +value {} = {}", w.name(), w.number()));
            }
            if out.is_empty() {
                out.push(format!("{name}: options or reserved names/numbers changed"));
            }
            out
        }
        _ => Vec::new(),
    }
}

fn message_changes(old: &MessageDescriptor, new: &MessageDescriptor) -> Vec<String> {
    let mut out = Vec::new();
    for f in old.fields() {
        let Some(g) = new.get_field_by_name(f.name()) else {
            out.push(format!("-field {} = {}", f.name(), f.number()));
            continue;
        };
        if f.number() != g.number() {
            out.push(format!("field {} {} -> {}", f.name(), f.number(), g.number()));
        }
        let (a, b) = (type_name(&f), type_name(&g));
        if a != b {
            out.push(format!("field {}: {a} -> {b}", f.name()));
        }
        if f.containing_oneof().map(|o| o.name().to_owned()) != g.containing_oneof().map(|o| o.name().to_owned()) {
            out.push(format!("field {}: oneof membership changed", f.name()));
        }
    }
    for g in new.fields().filter(|g| old.get_field_by_name(g.name()).is_none()) {
        out.push(format!("+field {} = {}", g.name(), g.number()));
    }
    out
}

/// `repeated string`, `map<string, int32>`, `optional users.User`, ...
fn type_name(f: &FieldDescriptor) -> String {
    fn kind(k: &Kind) -> String {
        match k {
            Kind::Message(m) => m.full_name().to_owned(),
            Kind::Enum(e) => e.full_name().to_owned(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
    if let Kind::Message(entry) = f.kind()
        && f.is_map()
    {
        return format!(
            "map<{}, {}>",
            kind(&entry.map_entry_key_field().kind()),
            kind(&entry.map_entry_value_field().kind())
        );
    }
    let base = kind(&f.kind());
    match f.cardinality() {
        Cardinality::Repeated => format!("repeated {base}"),
        Cardinality::Required => format!("required {base}"),
        Cardinality::Optional
            if f.supports_presence() && f.containing_oneof().is_none() && f.kind().as_message().is_none() =>
        {
            format!("optional {base}")
        }
        Cardinality::Optional => base,
    }
}

impl fmt::Display for SchemaDiff {
    /// The changes, at most [`LISTED`] of them, then a count of the rest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            return f.write_str("no changes");
        }
        let n = self.details.len();
        if n > LISTED {
            write!(
                f,
                "{n} changes ({} added, {} removed, {} changed): ",
                self.added.len(),
                self.removed.len(),
                self.changed.len()
            )?;
        }
        f.write_str(&self.details[..n.min(LISTED)].join("; "))?;
        if n > LISTED {
            write!(f, "; and {} more", n - LISTED)?;
        }
        Ok(())
    }
}
