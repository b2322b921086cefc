//! The `--probe` report: real encode/decode round trips for field-level findings.
//!
//! For each finding about fields, a message holding distinctive values in the
//! fields involved is encoded with one schema's descriptors and decoded with the
//! other's, in both directions (old writer -> new reader, new writer -> old reader).
//! The report prints what each reader actually holds afterwards.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};

use super::rules::{self, Subject};
use super::{Finding, RuleSet};

/// Builds the probe report for `findings` (which must come from the same pools).
pub(super) fn report(old: &DescriptorPool, new: &DescriptorPool, findings: &[Finding]) -> String {
    let raws = rules::check(old, new, RuleSet::WireJson);
    let mut out = String::from("probe (encode with one schema, decode with the other):\n");
    let mut seen: BTreeSet<(String, Vec<u32>, Vec<u32>)> = BTreeSet::new();
    let mut probed_messages: BTreeSet<String> = BTreeSet::new();
    for f in findings {
        let Some(subject) = raws
            .iter()
            .find(|r| r.finding.rule == f.rule && r.finding.message == f.message)
            .and_then(|r| r.subject.as_ref())
        else {
            continue;
        };
        let key = (
            subject.message.clone(),
            subject.old_numbers.clone(),
            subject.new_numbers.clone(),
        );
        if !seen.insert(key) {
            continue;
        }
        let (Some(om), Some(nm)) = (
            old.get_message_by_name(&subject.message),
            new.get_message_by_name(&subject.message),
        ) else {
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
        let subject = Subject {
            message: om.full_name().to_owned(),
            old_numbers: numbers,
            new_numbers,
        };
        let _ = writeln!(
            out,
            "\nchanged without findings: message {}",
            om.full_name()
        );
        out.push_str(&round_trip(&om, &nm, &subject));
    }
    if seen.is_empty() && out.lines().count() == 1 {
        out.push_str("  nothing to probe: no field-level findings and no changed messages\n");
    }
    out
}

fn describe(s: &Subject) -> String {
    let nums = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    format!(
        "{} (old fields {} / new fields {})",
        s.message,
        nums(&s.old_numbers),
        nums(&s.new_numbers)
    )
}

/// Name, number and type of every field, to spot messages that changed at all.
fn fields_signature(m: &MessageDescriptor) -> Vec<(String, u32, String, bool)> {
    let mut v: Vec<_> = m
        .fields()
        .map(|f| {
            (
                f.name().to_owned(),
                f.number(),
                format!("{:?}", f.kind()),
                f.is_list() || f.is_map(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Both directions for one subject, two lines each.
fn round_trip(om: &MessageDescriptor, nm: &MessageDescriptor, s: &Subject) -> String {
    let mut out = String::new();
    out.push_str(&one_way(
        "old writer",
        om,
        &s.old_numbers,
        "new reader",
        nm,
        &s.new_numbers,
    ));
    out.push_str(&one_way(
        "new writer",
        nm,
        &s.new_numbers,
        "old reader",
        om,
        &s.old_numbers,
    ));
    out
}

/// Writes the `write` fields of `wm` with distinctive values, decodes the bytes as
/// `rm`, and reports the reader's view of the fields that matter.
fn one_way(
    writer: &str,
    wm: &MessageDescriptor,
    write: &[u32],
    reader: &str,
    rm: &MessageDescriptor,
    also: &[u32],
) -> String {
    let mut msg = DynamicMessage::new(wm.clone());
    let mut written: Vec<FieldDescriptor> = Vec::new();
    for number in write {
        let Some(field) = wm.get_field(*number) else {
            continue;
        };
        if let Some(v) = sample_value(&field, 0)
            && msg.try_set_field(&field, v).is_ok()
        {
            written.retain(|w| {
                w.containing_oneof().is_none() || w.containing_oneof() != field.containing_oneof()
            });
            written.push(field);
        }
    }
    if written.is_empty() {
        return format!(
            "  {writer} -> {reader}: nothing to write (the field does not exist on the {writer} side)\n"
        );
    }
    let bytes = msg.encode_to_vec();
    let wrote = written
        .iter()
        .map(|f| {
            format!(
                "{}={} (field {})",
                f.name(),
                show(f, &msg.get_field(f)),
                f.number()
            )
        })
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
        let list = unknown
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        seen_parts.push(format!("unknown field(s) {list} kept as raw bytes"));
    }

    let unchanged = written.iter().all(|w| {
        rm.get_field_by_name(w.name()).is_some_and(|rf| {
            rf.number() == w.number() && same_value(&msg.get_field(w), &decoded.get_field(&rf))
        })
    });
    let verdict = if unchanged {
        "round-trips unchanged"
    } else {
        "MISREAD"
    };
    format!(
        "  {writer} {wrote} -> {reader}: {} [{verdict}]\n",
        seen_parts.join(", ")
    )
}

fn same_value(a: &Value, b: &Value) -> bool {
    a == b
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
    if f.is_list() {
        Some(Value::List(vec![one]))
    } else {
        Some(one)
    }
}

fn single_sample(f: &FieldDescriptor, owner: &FieldDescriptor, depth: u32) -> Option<Value> {
    match f.kind() {
        Kind::Message(m) => {
            let mut nested = DynamicMessage::new(m.clone());
            if depth < 1 {
                for nf in m.fields() {
                    if nf.containing_oneof().is_some()
                        && nested
                            .fields()
                            .any(|(g, _)| g.containing_oneof() == nf.containing_oneof())
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
                    Value::EnumNumber(n) => e
                        .get_value(*n)
                        .map_or_else(|| n.to_string(), |ev| ev.name().to_owned()),
                    other => other.to_string(),
                })
                .collect();
            format!("[{}]", parts.join(","))
        }
        _ => v.to_string(),
    }
}
