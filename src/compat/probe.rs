//! The `--probe` report: real encode/decode round trips for field-level findings.
//!
//! For each finding about fields, a message holding distinctive values in the
//! fields involved is encoded with one schema's descriptors and decoded with the
//! other's, in both directions (old writer -> new reader, new writer -> old reader).
//! The report prints what each reader actually holds afterwards.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use super::finding::Finding;
use super::rules::{self, Subject};

/// Builds the probe report for `findings` (which must come from the same pools).
pub(super) fn report(old: &DescriptorPool, new: &DescriptorPool, findings: &[Finding]) -> String {
    let raws = rules::check(old, new, None);
    let mut out = String::from("probe (encode with one schema, decode with the other):\n");
    let mut seen: BTreeSet<Subject> = BTreeSet::new();
    let mut probed_messages: BTreeSet<String> = BTreeSet::new();
    for f in findings {
        let Some(subject) = raws
            .iter()
            .find(|r| r.finding.rule == f.rule && r.finding.message == f.message)
            .and_then(|r| r.subject.as_ref())
        else {
            continue;
        };
        if !seen.insert(subject.clone()) {
            continue;
        }
        let (Some(om), Some(nm)) =
            (old.get_message_by_name(&subject.message), new.get_message_by_name(&subject.message))
        else {
            continue;
        };
        probed_messages.insert(subject.message.clone());
        let _ = writeln!(out, "\n{} {}", f.rule, describe(subject));
        out.push_str(&round_trip(&om, &nm, subject));
    }

    // Changed messages without field-level findings: show that they round-trip.
    for om in old.all_messages() {
        if om.is_map_entry() || probed_messages.contains(om.full_name()) {
            continue;
        }
        let Some(nm) = new.get_message_by_name(om.full_name()) else {
            continue;
        };
        if fields_signature(&om) == fields_signature(&nm) {
            continue;
        }
        let numbers: Vec<u32> = om.fields().map(|f| f.number()).collect();
        let new_numbers: Vec<u32> = nm.fields().map(|f| f.number()).collect();
        let subject =
            Subject { message: om.full_name().to_owned(), old_numbers: numbers, new_numbers, enum_value: None };
        let _ = writeln!(out, "\nchanged without findings: message {}", om.full_name());
        out.push_str(&round_trip(&om, &nm, &subject));
    }
    if seen.is_empty() && out.lines().count() == 1 {
        out.push_str("  nothing to probe: no field-level findings and no changed messages\n");
    }
    out
}

fn describe(s: &Subject) -> String {
    let nums = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    format!("{} (old fields {} / new fields {})", s.message, nums(&s.old_numbers), nums(&s.new_numbers))
}

/// Name, number, type, label and presence of every field, to spot messages that changed.
fn fields_signature(m: &MessageDescriptor) -> Vec<String> {
    let mut v: Vec<String> = m
        .fields()
        .map(|f| {
            format!(
                "{} {} {:?} {:?} {} {:?}",
                f.name(),
                f.number(),
                f.kind(),
                f.cardinality(),
                f.supports_presence(),
                f.containing_oneof().map(|o| o.name().to_owned())
            )
        })
        .collect();
    v.sort();
    v
}

/// Both directions for one subject, two lines each.
fn round_trip(om: &MessageDescriptor, nm: &MessageDescriptor, s: &Subject) -> String {
    let mut out = String::new();
    let (old_enum, new_enum) = match s.enum_value {
        Some((o, n)) => (Some(o), Some(n)),
        None => (None, None),
    };
    out.push_str(&one_way(
        Side { writer: "old writer", wm: om, write: &s.old_numbers, enum_value: old_enum },
        "new reader",
        nm,
        &s.new_numbers,
    ));
    out.push_str(&one_way(
        Side { writer: "new writer", wm: nm, write: &s.new_numbers, enum_value: new_enum },
        "old reader",
        om,
        &s.old_numbers,
    ));
    out
}

/// Writes the `write` fields of `wm` with distinctive values, decodes the bytes as
/// `rm`, and reports the reader's view of the fields that matter.
/// The writing side of one direction.
struct Side<'a> {
    writer: &'a str,
    wm: &'a MessageDescriptor,
    write: &'a [u32],
    /// Write this number into enum fields instead of a sample value.
    enum_value: Option<i32>,
}

fn one_way(side: Side<'_>, reader: &str, rm: &MessageDescriptor, also: &[u32]) -> String {
    let Side { writer, wm, write, enum_value } = side;
    let mut msg = DynamicMessage::new(wm.clone());
    let mut written: Vec<FieldDescriptor> = Vec::new();
    for number in write {
        let Some(field) = wm.get_field(*number) else {
            continue;
        };
        let value = match (enum_value, field.kind()) {
            (Some(n), Kind::Enum(_)) if field.is_list() => Some(Value::List(vec![Value::EnumNumber(n)])),
            (Some(n), Kind::Enum(_)) => Some(Value::EnumNumber(n)),
            _ => sample_value(&field, 0),
        };
        if let Some(v) = value
            && msg.try_set_field(&field, v).is_ok()
        {
            written.retain(|w| w.containing_oneof().is_none() || w.containing_oneof() != field.containing_oneof());
            written.push(field);
        }
    }
    if written.is_empty() {
        return format!("  {writer} -> {reader}: nothing to write (the field does not exist on the {writer} side)\n");
    }
    let bytes = msg.encode_to_vec();
    let wrote = written
        .iter()
        .map(|f| format!("{}={} (field {})", f.name(), show(f, &msg.get_field(f)), f.number()))
        .collect::<Vec<_>>()
        .join(", ");

    let decoded = match DynamicMessage::decode(rm.clone(), bytes.as_slice()) {
        Ok(d) => d,
        Err(e) => return format!("  {writer} {wrote} -> {reader}: cannot decode: {e}\n"),
    };

    // The reader fields to show: same numbers, and same names as what was written.
    let mut numbers: BTreeSet<u32> = write.iter().chain(also).copied().collect();
    for w in &written {
        if let Some(f) = rm.get_field_by_name(w.name()) {
            numbers.insert(f.number());
        }
    }
    let mut seen_parts = Vec::new();
    for n in &numbers {
        if let Some(f) = rm.get_field(*n) {
            seen_parts.push(format!("{}={}", f.name(), show(&f, &decoded.get_field(&f))));
        }
    }
    let unknown: BTreeSet<u32> = decoded.unknown_fields().map(|u| u.number()).collect();
    if !unknown.is_empty() {
        let list = unknown.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        seen_parts.push(format!("unknown field(s) {list} kept as raw bytes"));
    }

    // Unchanged: each value lands in the reader's field with the same number, holding
    // the same value, and neither side uses the other's name on another number (a
    // rename is fine). Dropped: the reader has no field with that number but has
    // one of that name, which stays empty. Unknown: the reader has neither (a
    // field added on one side, or deleted), or an enum value it has no name for
    // at all; it keeps what it cannot read, as protobuf readers do.
    let mut dropped = false;
    let mut misread = false;
    let mut unknown_kept = false;
    for w in &written {
        let Some(rf) = rm.get_field(w.number()) else {
            if rm.get_field_by_name(w.name()).is_some() {
                dropped = true;
            } else {
                unknown_kept = true;
            }
            continue;
        };
        // A rename keeps the number and leaves neither name on another number.
        let same_name_elsewhere = rm.get_field_by_name(w.name()).is_some_and(|by_name| by_name.number() != w.number())
            || wm.get_field_by_name(rf.name()).is_some_and(|by_name| by_name.number() != w.number());
        let (wv, rv) = (msg.get_field(w), decoded.get_field(&rf));
        // Enum values are compared by name: the same number may mean another value.
        let both_enums = matches!((w.kind(), rf.kind()), (Kind::Enum(_), Kind::Enum(_)));
        let same_content = if both_enums { show(w, &wv) == show(&rf, &rv) } else { same_value(&wv, &rv) };
        let same = decoded.has_field(&rf) == msg.has_field(w) && same_content;
        if both_enums && !same_name_elsewhere && new_enum_value(w, &wv, &rf) {
            unknown_kept = true;
        } else if same_name_elsewhere || !same {
            misread = true;
        }
    }
    let verdict = match (misread, dropped, unknown_kept) {
        (true, _, _) => "MISREAD",
        (false, true, _) => "DROPPED",
        (false, false, true) => "kept as unknown",
        (false, false, false) => "round-trips unchanged",
    };
    format!("  {writer} {wrote} -> {reader}: {} [{verdict}]\n", seen_parts.join(", "))
}

/// True when every enum value written in `wv` that the reader's enum has no
/// number for is also a name the reader's enum does not have (a value added on
/// the writer's side or deleted on the reader's), and at least one such value
/// was written: the reader keeps the number without misreading it as another value.
fn new_enum_value(w: &FieldDescriptor, wv: &Value, rf: &FieldDescriptor) -> bool {
    let (Kind::Enum(we), Kind::Enum(re)) = (w.kind(), rf.kind()) else {
        return false;
    };
    let numbers: Vec<i32> = match wv {
        Value::EnumNumber(n) => vec![*n],
        Value::List(items) => items.iter().filter_map(|i| i.as_enum_number()).collect(),
        _ => return false,
    };
    let mut any_new = false;
    for n in numbers {
        match (we.get_value(n), re.get_value(n)) {
            // Same number, same name on both sides: read as written.
            (Some(a), Some(b)) if a.name() == b.name() => {}
            // Unknown number to the reader, and no reader value of that name.
            (Some(a), None) if re.get_value_by_name(a.name()).is_none() => any_new = true,
            (None, None) => any_new = true,
            _ => return false,
        }
    }
    any_new
}

/// Equal as protobuf values, across kinds that share a wire form: numbers by value
/// (bools as 0/1, enums by number), strings and bytes by their bytes, messages by
/// their encoding.
fn same_value(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

#[derive(Debug, PartialEq)]
enum Norm {
    Int(i128),
    Float(u64),
    Bytes(Vec<u8>),
    List(Vec<Norm>),
    Map(Vec<(Norm, Norm)>),
}

fn normalize(v: &Value) -> Norm {
    match v {
        Value::Bool(b) => Norm::Int(i128::from(*b)),
        Value::I32(i) => Norm::Int(i128::from(*i)),
        Value::I64(i) => Norm::Int(i128::from(*i)),
        Value::U32(i) => Norm::Int(i128::from(*i)),
        Value::U64(i) => Norm::Int(i128::from(*i)),
        Value::EnumNumber(i) => Norm::Int(i128::from(*i)),
        Value::F32(f) => Norm::Float(f64::from(*f).to_bits()),
        Value::F64(f) => Norm::Float(f.to_bits()),
        Value::String(s) => Norm::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => Norm::Bytes(b.to_vec()),
        Value::Message(m) => Norm::Bytes(m.encode_to_vec()),
        Value::List(items) => Norm::List(items.iter().map(normalize).collect()),
        Value::Map(entries) => {
            let mut pairs: Vec<(Norm, Norm)> =
                entries.iter().map(|(k, v)| (normalize(&Value::from(k.clone())), normalize(v))).collect();
            pairs.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            Norm::Map(pairs)
        }
    }
}

/// A value that is easy to recognise in the output and shows misreads: negative
/// numbers for signed kinds, numbers past 32 bits for 64-bit kinds, the field's own
/// name for strings.
fn sample_value(f: &FieldDescriptor, depth: u32) -> Option<Value> {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return None;
        };
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let key = match scalar_sample(&key_field, f)? {
            Value::String(s) => MapKey::String(s),
            Value::I32(i) => MapKey::I32(i),
            Value::I64(i) => MapKey::I64(i),
            Value::U32(i) => MapKey::U32(i),
            Value::U64(i) => MapKey::U64(i),
            Value::Bool(b) => MapKey::Bool(b),
            _ => return None,
        };
        let value = single_sample(&value_field, f, depth)?;
        return Some(Value::Map(HashMap::from([(key, value)])));
    }
    let one = single_sample(f, f, depth)?;
    if f.is_list() { Some(Value::List(vec![one])) } else { Some(one) }
}

fn single_sample(f: &FieldDescriptor, owner: &FieldDescriptor, depth: u32) -> Option<Value> {
    match f.kind() {
        Kind::Message(m) => {
            let mut nested = DynamicMessage::new(m.clone());
            if depth < 1 {
                for nf in m.fields() {
                    if nf.containing_oneof().is_some()
                        && nested.fields().any(|(g, _)| g.containing_oneof() == nf.containing_oneof())
                    {
                        continue;
                    }
                    if let Some(v) = sample_value(&nf, depth + 1) {
                        let _ = nested.try_set_field(&nf, v);
                    }
                }
            }
            Some(Value::Message(nested))
        }
        _ => scalar_sample(f, owner),
    }
}

fn scalar_sample(f: &FieldDescriptor, owner: &FieldDescriptor) -> Option<Value> {
    let n = owner.number();
    let small = i64::from(n % 1000);
    Some(match f.kind() {
        Kind::Double => Value::F64(small as f64 + 0.25),
        Kind::Float => Value::F32(small as f32 + 0.5),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-(100 + small as i32)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(-(5_000_000_000 + small)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(4_000_000_000 + small as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(10_000_000_000_000_000_000 + small as u64),
        Kind::Bool => Value::Bool(true),
        Kind::String => Value::String(format!("{}-{}", owner.name(), n)),
        Kind::Bytes => Value::Bytes(format!("{}-{}", owner.name(), n).into_bytes().into()),
        Kind::Enum(e) => Value::EnumNumber(e.values().last()?.number()),
        Kind::Message(_) => return None,
    })
}

/// A value as `name=value` shows it: text format, enum numbers with their names.
fn show(f: &FieldDescriptor, v: &Value) -> String {
    match (f.kind(), v) {
        (Kind::Enum(e), Value::EnumNumber(n)) => match e.get_value(*n) {
            Some(ev) => ev.name().to_owned(),
            None => format!("{n} (unknown)"),
        },
        (Kind::Enum(e), Value::List(items)) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::EnumNumber(n) => e.get_value(*n).map_or_else(|| n.to_string(), |ev| ev.name().to_owned()),
                    other => other.to_string(),
                })
                .collect();
            format!("[{}]", parts.join(","))
        }
        _ => v.to_string(),
    }
}
