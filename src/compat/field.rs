//! A uniform view of fields and extensions, and what the field rules know about
//! protobuf types: buf's compatibility groups, cardinalities, default values, and
//! how integers are reinterpreted when one kind reads another's bytes.

use prost_reflect::{Cardinality, ExtensionDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};

use super::rule::Rule;

/// What the field rules need to know about a message field or an extension.
pub(super) struct FieldInfo {
    number: u32,
    /// Short name for fields, full name for extensions.
    name: String,
    kind: Kind,
    group: bool,
    list: bool,
    map: bool,
    cardinality: Cardinality,
    presence: bool,
    /// The real (not synthetic) oneof holding the field, and its members' numbers.
    oneof: Option<String>,
    pub(super) oneof_numbers: Vec<u32>,
    /// `None` for extensions, whose JSON name cannot be set.
    json_name: Option<String>,
    default: prost_reflect::Value,
    file: FileDescriptor,
    path: Vec<i32>,
    /// Full name of the containing message (the extendee for extensions).
    pub(super) owner: String,
    pub(super) in_map_entry: bool,
    pub(super) map_field: Option<FieldDescriptor>,
    pub(super) extension: bool,
}

impl FieldInfo {
    pub(super) fn field(f: &FieldDescriptor) -> Self {
        let oneof = f.containing_oneof().filter(|o| !o.is_synthetic());
        FieldInfo {
            number: f.number(),
            name: f.name().to_owned(),
            kind: f.kind(),
            group: f.is_group(),
            list: f.is_list(),
            map: f.is_map(),
            cardinality: f.cardinality(),
            presence: f.supports_presence(),
            oneof_numbers: oneof.as_ref().map(|o| o.fields().map(|g| g.number()).collect()).unwrap_or_default(),
            oneof: oneof.map(|o| o.name().to_owned()),
            json_name: Some(f.json_name().to_owned()),
            default: f.default_value(),
            file: f.parent_file(),
            path: f.path().to_vec(),
            owner: f.parent_message().full_name().to_owned(),
            in_map_entry: f.parent_message().is_map_entry(),
            map_field: map_field_of(f),
            extension: false,
        }
    }

    pub(super) fn extension(e: &ExtensionDescriptor) -> Self {
        FieldInfo {
            number: e.number(),
            name: e.full_name().to_owned(),
            kind: e.kind(),
            group: e.is_group(),
            list: e.is_list(),
            map: e.is_map(),
            cardinality: e.cardinality(),
            presence: e.supports_presence(),
            oneof: None,
            oneof_numbers: Vec::new(),
            json_name: None,
            default: e.default_value(),
            file: e.parent_file(),
            path: e.path().to_vec(),
            owner: e.containing_message().full_name().to_owned(),
            in_map_entry: false,
            map_field: None,
            extension: true,
        }
    }

    pub(super) fn number(&self) -> u32 {
        self.number
    }
    pub(super) fn name(&self) -> &str {
        &self.name
    }
    pub(super) fn kind(&self) -> Kind {
        self.kind.clone()
    }
    pub(super) fn is_group(&self) -> bool {
        self.group
    }
    pub(super) fn is_list(&self) -> bool {
        self.list
    }
    pub(super) fn is_map(&self) -> bool {
        self.map
    }
    pub(super) fn cardinality(&self) -> Cardinality {
        self.cardinality
    }
    pub(super) fn supports_presence(&self) -> bool {
        self.presence
    }
    pub(super) fn json_name(&self) -> Option<&str> {
        self.json_name.as_deref()
    }
    pub(super) fn default_value(&self) -> prost_reflect::Value {
        self.default.clone()
    }
    pub(super) fn parent_file(&self) -> FileDescriptor {
        self.file.clone()
    }
    pub(super) fn path(&self) -> &[i32] {
        &self.path
    }
}

/// For a field of a map entry, the map field that declares the entry.
pub(super) fn map_field_of(entry_field: &FieldDescriptor) -> Option<FieldDescriptor> {
    let entry = entry_field.parent_message();
    if !entry.is_map_entry() {
        return None;
    }
    let owner = entry.parent_message()?;
    owner.fields().find(|f| matches!(f.kind(), Kind::Message(m) if m.full_name() == entry.full_name()))
}

pub(super) fn is_named(f: &FieldInfo) -> bool {
    matches!(f.kind(), Kind::Message(_) | Kind::Enum(_))
}

pub(super) fn real_oneof(f: &FieldInfo) -> Option<String> {
    f.oneof.clone()
}

/// buf's wire compatibility groups: kinds in one group read each other's bytes.
pub(super) fn wire_group(f: &FieldInfo) -> u8 {
    match f.kind() {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool => 1,
        Kind::Sint32 | Kind::Sint64 => 2,
        Kind::String => 3,
        Kind::Bytes => 4,
        Kind::Fixed32 | Kind::Sfixed32 => 5,
        Kind::Fixed64 | Kind::Sfixed64 => 6,
        Kind::Double => 7,
        Kind::Float => 8,
        Kind::Message(_) if f.is_group() => 9,
        Kind::Message(_) => 10,
        Kind::Enum(_) => 11,
    }
}

/// buf's wire-and-JSON groups: also the same JSON representation.
pub(super) fn wire_json_group(f: &FieldInfo) -> u8 {
    match f.kind() {
        Kind::Int32 | Kind::Uint32 => 1,
        Kind::Int64 | Kind::Uint64 => 2,
        Kind::Fixed32 | Kind::Sfixed32 => 3,
        Kind::Fixed64 | Kind::Sfixed64 => 4,
        Kind::Bool => 5,
        Kind::Sint32 => 6,
        Kind::Sint64 => 7,
        Kind::String => 8,
        Kind::Bytes => 9,
        Kind::Double => 10,
        Kind::Float => 11,
        Kind::Message(_) if f.is_group() => 12,
        Kind::Message(_) => 13,
        Kind::Enum(_) => 14,
    }
}

/// For same-group message and enum fields: why the named types are not interchangeable.
pub(super) fn named_type_mismatch(of: &FieldInfo, nf: &FieldInfo) -> Option<String> {
    match (of.kind(), nf.kind()) {
        (Kind::Message(a), Kind::Message(b)) if a.full_name() != b.full_name() => Some(if same_fields(&a, &b) {
            format!(
                "buf treats a message of another full name as another type, although \"{}\" has the same \
                 field numbers and types as \"{}\" and both read the same bytes alike",
                b.full_name(),
                a.full_name()
            )
        } else {
            "the other message type has other fields, so each side reads the other's field numbers with its \
             own meanings"
                .to_owned()
        }),
        (Kind::Enum(a), Kind::Enum(b)) if a.full_name() != b.full_name() => {
            if a.name() != b.name() {
                return Some("a differently named enum is treated as a different type".to_owned());
            }
            let subset = a.values().all(|v| b.get_value_by_name(v.name()).is_some_and(|w| w.number() == v.number()));
            (!subset).then(|| "the new enum does not keep every old value name with its number".to_owned())
        }
        _ => None,
    }
}

/// The same field numbers, each with the same cardinality, oneof membership
/// and kind; message-typed fields compared the same way (a few levels deep, so
/// a package move that renames nested types too is still recognised), enums by
/// their value names and numbers.
fn same_fields(a: &MessageDescriptor, b: &MessageDescriptor) -> bool {
    same_shape(a, b, 4)
}

fn same_shape(a: &MessageDescriptor, b: &MessageDescriptor, depth: u32) -> bool {
    if a.full_name() == b.full_name() {
        return true;
    }
    if depth == 0 || a.fields().len() != b.fields().len() {
        return false;
    }
    a.fields().all(|fa| {
        let Some(fb) = b.get_field(fa.number()) else {
            return false;
        };
        let oneof = |f: &FieldDescriptor| f.containing_oneof().is_some_and(|o| !o.is_synthetic());
        if fa.is_list() != fb.is_list() || fa.is_map() != fb.is_map() || oneof(&fa) != oneof(&fb) {
            return false;
        }
        match (fa.kind(), fb.kind()) {
            (Kind::Message(x), Kind::Message(y)) => fa.is_group() == fb.is_group() && same_shape(&x, &y, depth - 1),
            (Kind::Enum(x), Kind::Enum(y)) => {
                let values = |e: &prost_reflect::EnumDescriptor| {
                    let mut v: Vec<(String, i32)> = e.values().map(|v| (v.name().to_owned(), v.number())).collect();
                    v.sort();
                    v
                };
                values(&x) == values(&y)
            }
            (x, y) => x == y,
        }
    })
}

pub(super) fn type_text(f: &FieldInfo) -> String {
    match f.kind() {
        Kind::Message(m) if f.is_group() => format!("group \"{}\"", m.full_name()),
        Kind::Message(m) => format!("\"{}\"", m.full_name()),
        Kind::Enum(e) => format!("enum \"{}\"", e.full_name()),
        k => scalar_name(&k).to_owned(),
    }
}

fn scalar_name(k: &Kind) -> &'static str {
    match k {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Message(_) => "message",
        Kind::Enum(_) => "enum",
    }
}

/// The protobuf wire type a field's values use.
fn wire_type_name(kind: &Kind, group: bool) -> &'static str {
    match kind {
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Bool
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Enum(_) => "varint",
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => "32-bit",
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => "64-bit",
        Kind::Message(_) if group => "group",
        Kind::String | Kind::Bytes | Kind::Message(_) => "length-delimited",
    }
}

pub(super) fn same_wire_shape(a: &FieldDescriptor, b: &FieldDescriptor) -> bool {
    wire_type_name(&a.kind(), a.is_group()) == wire_type_name(&b.kind(), b.is_group())
}

/// How the proto3 JSON mapping writes a value of this kind.
fn json_form(f: &FieldInfo) -> &'static str {
    match f.kind() {
        Kind::Int64 | Kind::Uint64 | Kind::Sint64 | Kind::Fixed64 | Kind::Sfixed64 => "a quoted decimal string",
        Kind::Int32 | Kind::Uint32 | Kind::Sint32 | Kind::Fixed32 | Kind::Sfixed32 => "a JSON number",
        Kind::Double | Kind::Float => "a JSON number (or \"NaN\"/\"Infinity\")",
        Kind::Bool => "true or false",
        Kind::String => "a JSON string",
        Kind::Bytes => "a base64 string",
        Kind::Enum(_) => "the value's name",
        Kind::Message(_) => "a JSON object",
    }
}

/// For kinds that read each other's bytes but not each other's JSON.
pub(super) fn json_change_reason(of: &FieldInfo, nf: &FieldInfo) -> String {
    let (o, n) = (json_form(of), json_form(nf));
    if o == n {
        format!(
            "the binary encoding is compatible, but buf's JSON rules treat {} and {} as different JSON types",
            type_text(of),
            type_text(nf)
        )
    } else {
        format!(
            "the binary encoding is compatible, but JSON writes {} as {o} and {} as {n}, which the other side's \
             JSON parser may reject",
            type_text(of),
            type_text(nf)
        )
    }
}

pub(super) fn type_change_reason(of: &FieldInfo, nf: &FieldInfo) -> String {
    let (ow, nw) = (wire_type_name(&of.kind(), of.is_group()), wire_type_name(&nf.kind(), nf.is_group()));
    if ow != nw {
        format!("old writers send {ow} values that the new reader cannot parse as {nw}")
    } else {
        match (of.kind(), nf.kind()) {
            (Kind::Bytes, Kind::String) => {
                "bytes need not be valid UTF-8, and a string reader rejects them when they are not".to_owned()
            }
            (Kind::Sint32 | Kind::Sint64, _) | (_, Kind::Sint32 | Kind::Sint64) => {
                "zigzag and plain varints encode the same number differently (-1 reads as 1 and 1 as -1)".to_owned()
            }
            _ => format!("both use {ow} encoding, but the bytes mean different things"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Card {
    Explicit,
    Implicit,
    Required,
    Repeated,
    Map,
}

impl Card {
    pub(super) fn wire_group(self) -> u8 {
        match self {
            Card::Explicit | Card::Implicit => 1,
            Card::Required => 2,
            Card::Repeated | Card::Map => 3,
        }
    }

    pub(super) fn wire_json_group(self) -> u8 {
        match self {
            Card::Map => 4,
            other => other.wire_group(),
        }
    }

    pub(super) fn text(self) -> &'static str {
        match self {
            Card::Explicit => "optional (explicit presence)",
            Card::Implicit => "optional (implicit presence)",
            Card::Required => "required",
            Card::Repeated => "repeated",
            Card::Map => "map",
        }
    }
}

pub(super) fn cardinality(f: &FieldInfo) -> Card {
    if f.is_list() {
        Card::Repeated
    } else if f.is_map() {
        Card::Map
    } else if f.cardinality() == Cardinality::Required {
        Card::Required
    } else if f.supports_presence() {
        Card::Explicit
    } else {
        Card::Implicit
    }
}

pub(super) fn cardinality_reason(o: Card, n: Card) -> &'static str {
    match (o, n) {
        (Card::Required, _) | (_, Card::Required) => {
            "a reader that requires the field rejects messages from a writer that may omit it"
        }
        (Card::Map, Card::Repeated) | (Card::Repeated, Card::Map) => "maps and lists have different JSON forms",
        _ => "a singular reader keeps only the last of several values, and packed lists do not parse as one value",
    }
}

/// A field's default value, comparable across types the way buf compares them.
#[derive(Clone, Debug)]
pub(super) enum DefaultValue {
    Bytes(Vec<u8>),
    Int(i128),
    F32(f32),
    F64(f64),
}

impl DefaultValue {
    pub(super) fn is_zero(&self) -> bool {
        match self {
            DefaultValue::Bytes(b) => b.is_empty(),
            DefaultValue::Int(i) => *i == 0,
            DefaultValue::F32(f) => f.to_bits() == 0,
            DefaultValue::F64(f) => f.to_bits() == 0,
        }
    }

    pub(super) fn same_as(&self, other: &DefaultValue) -> bool {
        use DefaultValue::{Bytes, F32, F64, Int};
        match (self, other) {
            (Bytes(a), Bytes(b)) => a == b,
            (Bytes(_), _) | (_, Bytes(_)) => false,
            (Int(a), Int(b)) => a == b,
            (F32(a), F32(b)) => (a.is_nan() && b.is_nan()) || a == b,
            (F32(a), F64(b)) | (F64(b), F32(a)) => (a.is_nan() && b.is_nan()) || *a == (*b as f32),
            (F64(a), F64(b)) => (a.is_nan() && b.is_nan()) || a == b,
            (Int(i), F32(f)) | (F32(f), Int(i)) => !f.is_nan() && (*i as f64) == f64::from(*f),
            (Int(i), F64(f)) | (F64(f), Int(i)) => !f.is_nan() && (*i as f64) == *f,
        }
    }
}

pub(super) struct FieldDefault {
    pub(super) value: DefaultValue,
    pub(super) text: String,
}

pub(super) fn default_of(f: &FieldInfo) -> Option<FieldDefault> {
    if f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(_)) {
        return None;
    }
    let v = f.default_value();
    let value = match &v {
        prost_reflect::Value::Bool(b) => DefaultValue::Int(i128::from(*b)),
        prost_reflect::Value::I32(i) => DefaultValue::Int(i128::from(*i)),
        prost_reflect::Value::I64(i) => DefaultValue::Int(i128::from(*i)),
        prost_reflect::Value::U32(i) => DefaultValue::Int(i128::from(*i)),
        prost_reflect::Value::U64(i) => DefaultValue::Int(i128::from(*i)),
        prost_reflect::Value::F32(x) => DefaultValue::F32(*x),
        prost_reflect::Value::F64(x) => DefaultValue::F64(*x),
        prost_reflect::Value::String(s) => DefaultValue::Bytes(s.as_bytes().to_vec()),
        prost_reflect::Value::Bytes(b) => DefaultValue::Bytes(b.to_vec()),
        prost_reflect::Value::EnumNumber(n) => DefaultValue::Int(i128::from(*n)),
        _ => return None,
    };
    let text = match (&v, f.kind()) {
        (prost_reflect::Value::EnumNumber(n), Kind::Enum(e)) => match e.get_value(*n) {
            Some(ev) => ev.name().to_owned(),
            None => n.to_string(),
        },
        _ => v.to_string(),
    };
    Some(FieldDefault { value, text })
}

/// How an integer kind is represented: its encoding family, width and sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Varint,
    ZigZag,
    Fixed32,
    Fixed64,
}

fn int_shape(k: &Kind) -> Option<(Family, u32, bool)> {
    Some(match k {
        Kind::Int32 => (Family::Varint, 32, true),
        Kind::Int64 => (Family::Varint, 64, true),
        Kind::Uint32 => (Family::Varint, 32, false),
        Kind::Uint64 => (Family::Varint, 64, false),
        Kind::Bool => (Family::Varint, 1, false),
        Kind::Sint32 => (Family::ZigZag, 32, true),
        Kind::Sint64 => (Family::ZigZag, 64, true),
        Kind::Fixed32 => (Family::Fixed32, 32, false),
        Kind::Sfixed32 => (Family::Fixed32, 32, true),
        Kind::Fixed64 => (Family::Fixed64, 64, false),
        Kind::Sfixed64 => (Family::Fixed64, 64, true),
        _ => return None,
    })
}

/// Narrowing, widening or sign changes between two integer kinds that share an
/// encoding (buf accepts these): the rule and an explanation with a worked value
/// that the probe reproduces.
pub(super) fn integer_change(of: &FieldInfo, nf: &FieldInfo) -> Option<(Rule, String)> {
    let (ok, nk) = (of.kind(), nf.kind());
    let (ofam, obits, osigned) = int_shape(&ok)?;
    let (nfam, nbits, nsigned) = int_shape(&nk)?;
    if ofam != nfam || ok == nk {
        return None;
    }
    let (oname, nname) = (scalar_name(&ok), scalar_name(&nk));
    if nbits < obits {
        let sample: i128 = if obits == 64 { 5_000_000_000 } else { 2 };
        let sample = if nk == Kind::Bool && obits != 64 { 2 } else { sample };
        let seen = reinterpret(&ok, &nk, sample);
        let mut why = if nk == Kind::Bool {
            format!("every non-zero {oname} reads as true (old writer {sample} -> new reader {seen})")
        } else {
            format!(
                "{oname} values outside the {nname} range are truncated to their low {nbits} bits \
                 (old writer {sample} -> new reader {seen})"
            )
        };
        if osigned && !nsigned && nk != Kind::Bool {
            why.push_str(&format!(", and negative values turn positive (-1 -> {})", reinterpret(&ok, &nk, -1)));
        }
        return Some((Rule::ProtoserveFieldNarrowedType, why));
    }
    if osigned && !nsigned {
        let why = format!(
            "negative {oname} values are misread as large unsigned numbers (old writer -1 -> new reader {})",
            reinterpret(&ok, &nk, -1)
        );
        return Some((Rule::ProtoserveFieldSignChanged, why));
    }
    if nbits > obits {
        // Old data always fits; what the new side may now write does not.
        let why = if ok == Kind::Bool {
            let seen = reinterpret(&nk, &ok, 2);
            format!(
                "new writers may send {nname} values other than 0 and 1, which old readers read as true (new writer 2 -> old reader {seen})"
            )
        } else {
            let sample: i128 = if nbits == 64 { 5_000_000_000 } else { 2 };
            let seen = reinterpret(&nk, &ok, sample);
            let mut why = format!(
                "new writers may send {nname} values outside the {oname} range, which old readers truncate to \
                 their low {obits} bits (new writer {sample} -> old reader {seen})"
            );
            if nsigned && !osigned {
                why.push_str(&format!(", and read negative values as positive (-1 -> {})", reinterpret(&nk, &ok, -1)));
            }
            why
        };
        return Some((Rule::ProtoserveFieldWidenedType, why));
    }
    // Same width, unsigned -> signed.
    let big = if obits == 64 { i128::from(u64::MAX) } else { i128::from(u32::MAX) };
    let why = format!(
        "{oname} values above the {nname} maximum are misread as negative numbers (old writer {big} -> \
         new reader {})",
        reinterpret(&ok, &nk, big)
    );
    Some((Rule::ProtoserveFieldSignChanged, why))
}

/// Encodes `value` as a `from` field would on the wire and decodes it as a `to`
/// field would, returning what the reader sees.
fn reinterpret(from: &Kind, to: &Kind, value: i128) -> String {
    // The wire word: a varint's 64-bit payload, or a fixed field's raw bits.
    let word: u64 = match from {
        Kind::Int32 => i64::from(value as i32) as u64,
        Kind::Int64 => value as i64 as u64,
        Kind::Uint32 => u64::from(value as u32),
        Kind::Uint64 => value as u64,
        Kind::Bool => u64::from(value != 0),
        Kind::Sint32 => {
            let v = value as i32;
            u64::from(((v << 1) ^ (v >> 31)) as u32)
        }
        Kind::Sint64 => {
            let v = value as i64;
            ((v << 1) ^ (v >> 63)) as u64
        }
        Kind::Fixed32 | Kind::Sfixed32 => u64::from(value as u32),
        Kind::Fixed64 | Kind::Sfixed64 => value as u64,
        _ => return "?".to_owned(),
    };
    match to {
        Kind::Int32 | Kind::Sfixed32 => (word as u32 as i32).to_string(),
        Kind::Int64 | Kind::Sfixed64 => (word as i64).to_string(),
        Kind::Uint32 | Kind::Fixed32 => (word as u32).to_string(),
        Kind::Uint64 | Kind::Fixed64 => word.to_string(),
        Kind::Bool => (word != 0).to_string(),
        Kind::Sint32 => {
            let w = word as u32;
            (((w >> 1) as i32) ^ -((w & 1) as i32)).to_string()
        }
        Kind::Sint64 => (((word >> 1) as i64) ^ -((word & 1) as i64)).to_string(),
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinterpret_matches_protobuf_decoding() {
        assert_eq!(reinterpret(&Kind::Int64, &Kind::Int32, 5_000_000_000), "705032704");
        assert_eq!(reinterpret(&Kind::Int32, &Kind::Uint32, -1), "4294967295");
        assert_eq!(reinterpret(&Kind::Uint32, &Kind::Int32, 4_294_967_295), "-1");
        assert_eq!(reinterpret(&Kind::Int32, &Kind::Int64, -1), "-1");
        assert_eq!(reinterpret(&Kind::Int64, &Kind::Uint64, -1), "18446744073709551615");
        assert_eq!(reinterpret(&Kind::Sint64, &Kind::Sint32, -3), "-3");
        assert_eq!(reinterpret(&Kind::Sint32, &Kind::Sint64, -3), "-3");
        assert_eq!(reinterpret(&Kind::Fixed32, &Kind::Sfixed32, 4_294_967_295), "-1");
        assert_eq!(reinterpret(&Kind::Int32, &Kind::Bool, 2), "true");
    }
}
