//! The rules. Elements are paired the way buf pairs them: files by name, messages,
//! enums and services by full name, fields by number inside a message, enum values
//! by number, methods by name inside a service. Each rule then looks at one pair.
//! Which rules exist, and how severe each is, is `super::rule`'s table.

use std::collections::{BTreeSet, HashMap};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, EnumValueDescriptor, ExtensionDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, Syntax,
};

use super::field::{
    FieldInfo, cardinality, cardinality_reason, default_of, integer_change, is_named, json_change_reason,
    named_type_mismatch, real_oneof, same_wire_shape, type_change_reason, type_text, wire_group, wire_json_group,
};
use super::finding::{Finding, Policy};
use super::rule::Rule;
use super::source::{self, SourceIndex, join};

/// Highest field number (`max` in `reserved 10 to max;`).
const MESSAGE_MAX: i64 = 536_870_911;
/// Highest enum value number.
const ENUM_MAX: i64 = i32::MAX as i64;

/// Which schema a finding's location points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Old,
    New,
}

/// The fields a field-level finding is about, for the probe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Subject {
    /// Full name of the message (same in both schemas).
    pub(super) message: String,
    /// Field numbers involved, in the old message.
    pub(super) old_numbers: Vec<u32>,
    /// Field numbers involved, in the new message.
    pub(super) new_numbers: Vec<u32>,
    /// For a renumbered enum value: its old and new number, which the probe writes
    /// into enum fields instead of a sample value.
    pub(super) enum_value: Option<(i32, i32)>,
}

/// A finding plus what only this module needs to know about it.
#[derive(Clone, Debug)]
pub(super) struct Raw {
    pub(super) finding: Finding,
    pub(super) side: Side,
    pub(super) subject: Option<Subject>,
    /// The file (compiler name) and package of the element the finding is
    /// about, with or without source info, for `ignore` configuration.
    pub(super) file: String,
    pub(super) package: String,
}

/// Where a finding points: a source path in a file of one side.
pub(super) struct At<'a> {
    side: Side,
    file: &'a FileDescriptor,
    path: Vec<i32>,
}

impl<'a> At<'a> {
    fn new(side: Side, file: &'a FileDescriptor, path: Vec<i32>) -> Self {
        At { side, file, path }
    }
}

/// Runs the rules `policy` enables (every rule at its default severity when
/// `None`) and sorts the findings.
pub(super) fn check(old: &DescriptorPool, new: &DescriptorPool, policy: Option<&Policy>) -> Vec<Raw> {
    check_sourced(old, None, new, None, policy)
}

/// [`check`], with source info kept apart from either pool.
pub(super) fn check_sourced(
    old: &DescriptorPool,
    old_info: Option<super::SourceInfo<'_>>,
    new: &DescriptorPool,
    new_info: Option<super::SourceInfo<'_>>,
    policy: Option<&Policy>,
) -> Vec<Raw> {
    let mut c =
        Checker { policy, old_src: SourceIndex::new(old_info), new_src: SourceIndex::new(new_info), out: Vec::new() };
    for of in old.files() {
        if let Some(nf) = new.get_file_by_name(of.name()) {
            c.file_pair(&of, &nf);
        }
    }
    for om in old.all_messages() {
        if let Some(nm) = new.get_message_by_name(om.full_name()) {
            c.message_pair(&om, &nm);
        }
    }
    for oe in old.all_enums() {
        if let Some(ne) = new.get_enum_by_name(oe.full_name()) {
            c.enum_pair(&oe, &ne);
        }
    }
    let new_extensions: HashMap<(String, u32), ExtensionDescriptor> =
        new.all_extensions().map(|e| ((e.containing_message().full_name().to_owned(), e.number()), e)).collect();
    for oe in old.all_extensions() {
        let key = (oe.containing_message().full_name().to_owned(), oe.number());
        if let Some(ne) = new_extensions.get(&key) {
            c.field_pair(&FieldInfo::extension(&oe), &FieldInfo::extension(ne));
        }
    }
    for os in old.services() {
        if let Some(ns) = new.get_service_by_name(os.full_name()) {
            for omethod in os.methods() {
                if let Some(nmethod) = ns.methods().find(|m| m.name() == omethod.name()) {
                    c.method_pair(&omethod, &nmethod);
                }
            }
        }
    }
    let mut out = c.out;
    out.sort_by(|a, b| {
        let key = |r: &Raw| (r.finding.location.is_none(), r.finding.location.clone());
        key(a)
            .cmp(&key(b))
            .then_with(|| a.finding.rule.id().cmp(b.finding.rule.id()))
            .then_with(|| a.finding.message.cmp(&b.finding.message))
    });
    out.dedup_by(|a, b| a.finding == b.finding);
    out
}

struct Checker<'p> {
    policy: Option<&'p Policy>,
    old_src: SourceIndex<'p>,
    new_src: SourceIndex<'p>,
    out: Vec<Raw>,
}

impl Checker<'_> {
    fn on(&self, rule: Rule) -> bool {
        self.policy.is_none_or(|p| p.severity(rule).is_some())
    }

    /// Records a finding if its rule is enabled, at the severity the policy gives it.
    fn emit(&mut self, rule: Rule, message: String, at: At<'_>, subject: Option<Subject>) {
        let severity = match self.policy {
            None => rule.default_severity(),
            Some(p) => match p.severity(rule) {
                Some(s) => s,
                None => return,
            },
        };
        let index = match at.side {
            Side::Old => &mut self.old_src,
            Side::New => &mut self.new_src,
        };
        let location = index.locate(at.file, &at.path);
        self.out.push(Raw {
            finding: Finding { rule, severity, message, location },
            side: at.side,
            subject,
            file: at.file.name().to_owned(),
            package: at.file.package_name().to_owned(),
        });
    }

    /// RESERVED_*_NO_DELETE: every number and name the old element reserved is still
    /// reserved by the new one; findings point at the old reservation.
    fn reserved_kept(&mut self, r: Reserved<'_>) {
        for (i, &old) in r.old_ranges.iter().enumerate() {
            let missing = missing_ranges(old, &r.new_ranges);
            if !missing.is_empty() {
                let msg =
                    format!("{} no longer reserves {}: {}", r.element, ranges_text(&missing, r.max), r.consequence);
                let at = At::new(Side::Old, r.file, join(r.path, &[r.tags.0, index(i)]));
                self.emit(r.rule, msg, at, None);
            }
        }
        for (i, rn) in r.old_names.iter().enumerate() {
            if !r.new_names.contains(rn) {
                let msg = format!("{} no longer reserves the name \"{rn}\"", r.element);
                let at = At::new(Side::Old, r.file, join(r.path, &[r.tags.1, index(i)]));
                self.emit(r.rule, msg, at, None);
            }
        }
    }

    fn file_pair(&mut self, of: &FileDescriptor, nf: &FileDescriptor) {
        if of.package_name() != nf.package_name() {
            let msg = format!(
                "file \"{}\" changed package from \"{}\" to \"{}\": every type in it gets a new full name, \
                 so peers on the old schema no longer find its services and messages",
                nf.name(),
                of.package_name(),
                nf.package_name()
            );
            self.emit(Rule::FileSamePackage, msg, At::new(Side::New, nf, vec![source::FILE_PACKAGE]), None);
        }
    }

    fn message_pair(&mut self, om: &MessageDescriptor, nm: &MessageDescriptor) {
        let name = om.full_name().to_owned();
        let ofile = om.parent_file();
        let nfile = nm.parent_file();

        for of in om.fields() {
            match nm.get_field(of.number()) {
                Some(nf) => self.field_pair(&FieldInfo::field(&of), &FieldInfo::field(&nf)),
                None => self.field_deleted(&of, nm),
            }
        }

        // MESSAGE_SAME_REQUIRED_FIELDS
        for of in om.fields().filter(|f| f.is_required()) {
            if !nm.get_field(of.number()).is_some_and(|f| f.is_required()) {
                let msg = format!(
                    "message \"{name}\" no longer has required field {} (\"{}\"): old readers reject \
                     messages from new writers that do not send it",
                    of.number(),
                    of.name()
                );
                let subject = subject(&name, &[of.number()], &[of.number()]);
                self.emit(
                    Rule::MessageSameRequiredFields,
                    msg,
                    At::new(Side::Old, &ofile, of.path().to_vec()),
                    subject,
                );
            }
        }
        for nf in nm.fields().filter(|f| f.is_required()) {
            if !om.get_field(nf.number()).is_some_and(|f| f.is_required()) {
                let msg = format!(
                    "message \"{name}\" has new required field {} (\"{}\"): new readers reject messages \
                     from old writers that do not send it",
                    nf.number(),
                    nf.name()
                );
                let subject = subject(&name, &[nf.number()], &[nf.number()]);
                self.emit(
                    Rule::MessageSameRequiredFields,
                    msg,
                    At::new(Side::New, &nfile, nf.path().to_vec()),
                    subject,
                );
            }
        }

        // RESERVED_MESSAGE_NO_DELETE (message reserved ranges are end-exclusive)
        let ranges = |m: &MessageDescriptor| -> Vec<(i64, i64)> {
            m.reserved_ranges().map(|r| (i64::from(r.start), i64::from(r.end) - 1)).collect()
        };
        self.reserved_kept(Reserved {
            rule: Rule::ReservedMessageNoDelete,
            element: format!("message \"{name}\""),
            consequence: "those numbers may now be reused by fields that misread old data",
            max: MESSAGE_MAX,
            old_ranges: ranges(om),
            new_ranges: ranges(nm),
            old_names: om.reserved_names().collect(),
            new_names: nm.reserved_names().collect(),
            file: &ofile,
            path: om.path(),
            tags: (source::MESSAGE_RESERVED_RANGE, source::MESSAGE_RESERVED_NAME),
        });

        // MESSAGE_SAME_JSON_FORMAT: proto3 files allow JSON, proto2 ones only "best effort".
        if ofile.syntax() == Syntax::Proto3 && nfile.syntax() != Syntax::Proto3 {
            let msg = format!(
                "message \"{name}\" lost full JSON support: its file changed from proto3 to proto2 \
                 (json_format ALLOW -> LEGACY_BEST_EFFORT)"
            );
            self.emit(Rule::MessageSameJsonFormat, msg, At::new(Side::New, &nfile, nm.path().to_vec()), None);
        }

        self.moved_fields(om, nm);
    }

    fn field_deleted(&mut self, of: &FieldDescriptor, nm: &MessageDescriptor) {
        let n = of.number();
        let name = nm.full_name();
        let ofile = of.parent_file();
        let at = || At::new(Side::Old, &ofile, of.path().to_vec());
        let subj = subject(name, &[n], &[]);
        if !nm.reserved_ranges().any(|r| r.contains(&n)) {
            let msg = format!(
                "field {n} (\"{}\") was deleted from message \"{name}\" without reserving number {n}: \
                 a later field may reuse {n} and misread what old writers still send",
                of.name()
            );
            self.emit(Rule::FieldNoDeleteUnlessNumberReserved, msg, at(), subj.clone());
        }
        if !nm.reserved_names().any(|r| r == of.name()) {
            let msg = format!(
                "field {n} (\"{}\") was deleted from message \"{name}\" without reserving the name \"{}\": \
                 a later field may reuse the name and misread old JSON",
                of.name(),
                of.name()
            );
            self.emit(Rule::FieldNoDeleteUnlessNameReserved, msg, at(), subj);
        }
    }

    fn field_pair(&mut self, of: &FieldInfo, nf: &FieldInfo) {
        let message = nf.owner.clone();
        let nfile = nf.parent_file();
        let n = nf.number();
        let what = if nf.extension { "extension" } else { "field" };
        let desc = format!("{what} {n} (\"{}\") on message \"{message}\"", nf.name());
        // The probe only handles message fields.
        let subj = if nf.extension { None } else { subject(&message, &[n], &[n]) };
        // Fields of map entries have no source of their own: point at the map field.
        let map_field = nf.map_field.clone();
        let desc = match &map_field {
            Some(mf) => format!(
                "the {} of map field {} (\"{}\") on message \"{}\"",
                if n == 1 { "key" } else { "value" },
                mf.number(),
                mf.name(),
                mf.parent_message().full_name()
            ),
            None => desc,
        };
        let type_at = || match &map_field {
            Some(mf) => At::new(Side::New, &nfile, join(mf.path(), &[source::FIELD_TYPE_NAME])),
            None => {
                let sub = if is_named(nf) { source::FIELD_TYPE_NAME } else { source::FIELD_TYPE };
                At::new(Side::New, &nfile, join(nf.path(), &[sub]))
            }
        };
        let field_path = map_field.as_ref().map_or(nf.path(), |mf| mf.path()).to_vec();
        let field_at = || At::new(Side::New, &nfile, field_path.clone());
        let sub_at = |sub: i32| At::new(Side::New, &nfile, join(nf.path(), &[sub]));

        // FIELD_WIRE_COMPATIBLE_TYPE / FIELD_WIRE_JSON_COMPATIBLE_TYPE
        for (rule, groups) in [
            (Rule::FieldWireCompatibleType, wire_group as fn(&FieldInfo) -> u8),
            (Rule::FieldWireJsonCompatibleType, wire_json_group),
        ] {
            if !self.on(rule) {
                continue;
            }
            let allowed_string_to_bytes =
                rule == Rule::FieldWireCompatibleType && of.kind() == Kind::String && nf.kind() == Kind::Bytes;
            if groups(of) != groups(nf) {
                if !allowed_string_to_bytes {
                    // Same wire group but another JSON group: the JSON form is what differs.
                    let why = if wire_group(of) == wire_group(nf) {
                        json_change_reason(of, nf)
                    } else {
                        type_change_reason(of, nf)
                    };
                    let msg = format!("{desc} changed type from {} to {}: {why}", type_text(of), type_text(nf));
                    self.emit(rule, msg, type_at(), subj.clone());
                }
            } else if let Some(why) = named_type_mismatch(of, nf) {
                let msg = format!("{desc} changed type from {} to {}: {why}", type_text(of), type_text(nf));
                self.emit(rule, msg, type_at(), subj.clone());
            }
        }

        // FIELD_WIRE_COMPATIBLE_CARDINALITY / FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY
        let both_map_entries = of.in_map_entry && nf.in_map_entry;
        if !both_map_entries {
            let (oc, nc) = (cardinality(of), cardinality(nf));
            if oc.wire_group() != nc.wire_group() {
                let msg = format!(
                    "{desc} changed cardinality from {} to {}: {}",
                    oc.text(),
                    nc.text(),
                    cardinality_reason(oc, nc)
                );
                self.emit(Rule::FieldWireCompatibleCardinality, msg, field_at(), subj.clone());
            }
            if oc.wire_json_group() != nc.wire_json_group() {
                let msg = format!(
                    "{desc} changed cardinality from {} to {}: {}",
                    oc.text(),
                    nc.text(),
                    cardinality_reason(oc, nc)
                );
                self.emit(Rule::FieldWireJsonCompatibleCardinality, msg, field_at(), subj.clone());
            }
        }

        // FIELD_SAME_ONEOF
        let (oo, no) = (real_oneof(of), real_oneof(nf));
        let oneof_change = match (&oo, &no) {
            (None, None) => None,
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("moved from oneof \"{a}\" to oneof \"{b}\"")),
            (Some(a), None) => Some(format!("moved out of oneof \"{a}\"")),
            (None, Some(b)) => Some(format!("moved into oneof \"{b}\"")),
        };
        if let Some(change) = oneof_change {
            // The probe writes the field together with its oneof siblings on both sides.
            let mut numbers: BTreeSet<u32> = BTreeSet::from([n]);
            numbers.extend(of.oneof_numbers.iter().chain(&nf.oneof_numbers));
            let numbers: Vec<u32> = numbers.into_iter().collect();
            let subj = subject(&message, &numbers, &numbers);
            let msg = format!(
                "{desc} {change}: setting one member of a oneof clears the others, so readers on each side \
                 can drop values the other side sent together"
            );
            self.emit(Rule::FieldSameOneof, msg, field_at(), subj);
        }

        // FIELD_SAME_DEFAULT
        if let (Some(od), Some(nd)) = (default_of(of), default_of(nf))
            && !(od.value.is_zero() && nd.value.is_zero())
            && !od.value.same_as(&nd.value)
        {
            let msg = format!(
                "{desc} changed default value from {} to {}: an unset field reads differently on each side",
                od.text, nd.text
            );
            self.emit(Rule::FieldSameDefault, msg, sub_at(source::FIELD_DEFAULT), subj.clone());
        }

        // FIELD_SAME_NAME / FIELD_SAME_JSON_NAME
        if of.name() != nf.name() {
            let msg =
                format!("{what} {n} on message \"{message}\" changed name from \"{}\" to \"{}\"", of.name(), nf.name());
            self.emit(Rule::FieldSameName, msg, sub_at(source::FIELD_NAME), subj.clone());
        }
        if let (Some(oj), Some(nj)) = (of.json_name(), nf.json_name())
            && oj != nj
        {
            let msg = format!(
                "{desc} changed its JSON name from \"{}\" to \"{}\": JSON written by one side is not read \
                 by the other",
                oj, nj
            );
            self.emit(Rule::FieldSameJsonName, msg, sub_at(source::FIELD_JSON_NAME), subj.clone());
        }

        // PROTOSERVE_FIELD_NARROWED_TYPE / PROTOSERVE_FIELD_SIGN_CHANGED
        if cardinality(of).wire_group() == cardinality(nf).wire_group()
            && let Some((rule, why)) = integer_change(of, nf)
        {
            let msg = format!("{desc} changed type from {} to {}: {why}", type_text(of), type_text(nf));
            self.emit(rule, msg, type_at(), subj);
        }
    }

    /// PROTOSERVE_FIELD_MOVED_NUMBER and PROTOSERVE_FIELD_SWAPPED_NUMBERS.
    fn moved_fields(&mut self, om: &MessageDescriptor, nm: &MessageDescriptor) {
        let message = nm.full_name().to_owned();
        let nfile = nm.parent_file();
        let moved: Vec<(FieldDescriptor, FieldDescriptor)> = om
            .fields()
            .filter_map(|of| {
                let nf = nm.get_field_by_name(of.name())?;
                (nf.number() != of.number()).then_some((of, nf))
            })
            .collect();
        let mut in_swap = vec![false; moved.len()];
        for i in 0..moved.len() {
            for j in i + 1..moved.len() {
                let (ao, an) = &moved[i];
                let (bo, bn) = &moved[j];
                if in_swap[i] || in_swap[j] || an.number() != bo.number() || bn.number() != ao.number() {
                    continue;
                }
                in_swap[i] = true;
                in_swap[j] = true;
                let msg = format!(
                    "fields \"{}\" and \"{}\" on message \"{message}\" swapped numbers ({} <-> {}): \
                     each side reads the other's \"{}\" as \"{}\" and vice versa{}",
                    ao.name(),
                    bo.name(),
                    ao.number(),
                    bo.number(),
                    ao.name(),
                    bo.name(),
                    if same_wire_shape(ao, bo) { ", silently, because the wire types match" } else { "" }
                );
                let subj = subject(&message, &[ao.number(), bo.number()], &[an.number(), bn.number()]);
                self.emit(
                    Rule::ProtoserveFieldSwappedNumbers,
                    msg,
                    At::new(Side::New, &nfile, an.path().to_vec()),
                    subj,
                );
            }
        }
        for (k, (of, nf)) in moved.iter().enumerate() {
            if in_swap[k] {
                continue;
            }
            let (on, nn) = (of.number(), nf.number());
            let new_reader = match nm.get_field(on) {
                Some(f) => format!("the new reader takes it for \"{}\"", f.name()),
                None => "the new reader drops it as unknown".to_owned(),
            };
            let old_reader = match om.get_field(nn) {
                Some(f) => format!("old readers take it for \"{}\"", f.name()),
                None => "old readers drop it as unknown".to_owned(),
            };
            let msg = format!(
                "field \"{}\" on message \"{message}\" moved from number {on} to {nn}: old writers still send \
                 it as field {on} and {new_reader}; new writers send field {nn} and {old_reader}",
                of.name()
            );
            let at = At::new(Side::New, &nfile, join(nf.path(), &[source::FIELD_NUMBER]));
            let subj = subject(&message, &[on], &[on, nn]);
            self.emit(Rule::ProtoserveFieldMovedNumber, msg, at, subj);
        }
    }

    fn enum_pair(&mut self, oe: &EnumDescriptor, ne: &EnumDescriptor) {
        let name = oe.full_name().to_owned();
        let ofile = oe.parent_file();
        let nfile = ne.parent_file();
        let numbers: BTreeSet<i32> = oe.values().map(|v| v.number()).collect();

        for &number in &numbers {
            let old_values: Vec<EnumValueDescriptor> = oe.values().filter(|v| v.number() == number).collect();
            let old_names: BTreeSet<String> = old_values.iter().map(|v| v.name().to_owned()).collect();
            let new_values: Vec<EnumValueDescriptor> = ne.values().filter(|v| v.number() == number).collect();
            let first_old_path = old_values.first().map(|v| v.path().to_vec()).unwrap_or_else(|| oe.path().to_vec());
            let first_old_at = || At::new(Side::Old, &ofile, first_old_path.clone());
            let names_text = quoted_list(&old_names);
            if new_values.is_empty() {
                if !ne.reserved_ranges().any(|r| r.contains(&number)) {
                    let msg = format!(
                        "enum value {number} ({names_text}) was deleted from enum \"{name}\" without reserving \
                         number {number}: a later value may reuse {number} and change its meaning"
                    );
                    self.emit(Rule::EnumValueNoDeleteUnlessNumberReserved, msg, first_old_at(), None);
                }
                if !old_names.iter().all(|n| ne.reserved_names().any(|r| r == n)) {
                    let msg = format!(
                        "enum value {number} ({names_text}) was deleted from enum \"{name}\" without reserving \
                         its name: a later value may reuse the name and misread old JSON"
                    );
                    self.emit(Rule::EnumValueNoDeleteUnlessNameReserved, msg, first_old_at(), None);
                }
                continue;
            }
            // ENUM_VALUE_SAME_NAME: every old name for this number must still name it
            // (adding an alias is fine, dropping or renaming one is not).
            let new_names: BTreeSet<String> = new_values.iter().map(|v| v.name().to_owned()).collect();
            if !old_names.is_subset(&new_names) {
                for v in &new_values {
                    let msg = format!(
                        "enum value {number} on enum \"{name}\" changed name from {names_text} to {}: JSON and \
                         text written by one side is not read by the other",
                        quoted_list(&new_names)
                    );
                    let at = At::new(Side::New, &nfile, join(v.path(), &[source::ENUM_VALUE_NUMBER]));
                    self.emit(Rule::EnumValueSameName, msg, at, None);
                }
            }
        }

        // RESERVED_ENUM_NO_DELETE (enum reserved ranges are end-inclusive)
        let ranges = |e: &EnumDescriptor| -> Vec<(i64, i64)> {
            e.reserved_ranges().map(|r| (i64::from(*r.start()), i64::from(*r.end()))).collect()
        };
        self.reserved_kept(Reserved {
            rule: Rule::ReservedEnumNoDelete,
            element: format!("enum \"{name}\""),
            consequence: "those numbers may be reused with another meaning",
            max: ENUM_MAX,
            old_ranges: ranges(oe),
            new_ranges: ranges(ne),
            old_names: oe.reserved_names().collect(),
            new_names: ne.reserved_names().collect(),
            file: &ofile,
            path: oe.path(),
            tags: (source::ENUM_RESERVED_RANGE, source::ENUM_RESERVED_NAME),
        });

        // ENUM_SAME_JSON_FORMAT
        if ofile.syntax() == Syntax::Proto3 && nfile.syntax() != Syntax::Proto3 {
            let msg = format!(
                "enum \"{name}\" lost full JSON support: its file changed from proto3 to proto2 \
                 (json_format ALLOW -> LEGACY_BEST_EFFORT)"
            );
            self.emit(Rule::EnumSameJsonFormat, msg, At::new(Side::New, &nfile, ne.path().to_vec()), None);
        }

        // PROTOSERVE_ENUM_VALUE_RENUMBERED
        for ov in oe.values() {
            let Some(nv) = ne.get_value_by_name(ov.name()) else {
                continue;
            };
            if nv.number() == ov.number() {
                continue;
            }
            let (on, nn) = (ov.number(), nv.number());
            let now = match ne.get_value(on) {
                Some(v) => format!("reads as \"{}\"", v.name()),
                None => "is an unknown value".to_owned(),
            };
            let then = match oe.get_value(nn) {
                Some(v) => format!("old readers take for \"{}\"", v.name()),
                None => "old readers do not know".to_owned(),
            };
            let msg = format!(
                "enum value \"{}\" on enum \"{name}\" was renumbered from {on} to {nn}: old writers send it \
                 as {on}, which {now} for new readers; new writers send {nn}, which {then}",
                ov.name()
            );
            let at = At::new(Side::New, &nfile, join(nv.path(), &[source::ENUM_VALUE_NUMBER]));
            let subject = enum_carrier(oe, ne.parent_pool()).map(|(message, number)| Subject {
                message,
                old_numbers: vec![number],
                new_numbers: vec![number],
                enum_value: Some((on, nn)),
            });
            self.emit(Rule::ProtoserveEnumValueRenumbered, msg, at, subject);
        }
    }

    fn method_pair(&mut self, om: &MethodDescriptor, nm: &MethodDescriptor) {
        let nfile = nm.parent_service().parent_file();
        let what = format!("RPC \"{}\" on service \"{}\"", nm.name(), nm.parent_service().full_name());
        let at = |extra: &[i32]| At::new(Side::New, &nfile, join(nm.path(), extra));
        if om.input().full_name() != nm.input().full_name() {
            let msg = format!(
                "{what} changed request type from \"{}\" to \"{}\"",
                om.input().full_name(),
                nm.input().full_name()
            );
            self.emit(Rule::RpcSameRequestType, msg, at(&[source::METHOD_INPUT]), None);
        }
        if om.output().full_name() != nm.output().full_name() {
            let msg = format!(
                "{what} changed response type from \"{}\" to \"{}\"",
                om.output().full_name(),
                nm.output().full_name()
            );
            self.emit(Rule::RpcSameResponseType, msg, at(&[source::METHOD_OUTPUT]), None);
        }
        if om.is_client_streaming() != nm.is_client_streaming() {
            let msg = format!(
                "{what} changed from client {} to client {}",
                streaming(om.is_client_streaming()),
                streaming(nm.is_client_streaming())
            );
            self.emit(Rule::RpcSameClientStreaming, msg, at(&[]), None);
        }
        if om.is_server_streaming() != nm.is_server_streaming() {
            let msg = format!(
                "{what} changed from server {} to server {}",
                streaming(om.is_server_streaming()),
                streaming(nm.is_server_streaming())
            );
            self.emit(Rule::RpcSameServerStreaming, msg, at(&[]), None);
        }
        let (ol, nl) = (idempotency(om), idempotency(nm));
        if ol != nl {
            let msg = format!(
                "{what} changed option idempotency_level from {} to {}: clients and proxies may retry or \
                 cache calls differently",
                idempotency_name(ol),
                idempotency_name(nl)
            );
            self.emit(Rule::RpcSameIdempotencyLevel, msg, at(&[source::METHOD_OPTIONS]), None);
        }
    }
}

fn subject(message: &str, old_numbers: &[u32], new_numbers: &[u32]) -> Option<Subject> {
    Some(Subject {
        message: message.to_owned(),
        old_numbers: old_numbers.to_vec(),
        new_numbers: new_numbers.to_vec(),
        enum_value: None,
    })
}

/// A message field of enum type `e` that exists with the same number and enum in
/// both schemas, for the probe to carry a renumbered enum value.
fn enum_carrier(oe: &EnumDescriptor, new: &DescriptorPool) -> Option<(String, u32)> {
    let uses =
        |f: &FieldDescriptor, name: &str| matches!(f.kind(), Kind::Enum(e) if e.full_name() == name) && !f.is_map();
    oe.parent_pool().all_messages().find_map(|m| {
        let nm = new.get_message_by_name(m.full_name())?;
        m.fields().find_map(|f| {
            let nf = nm.get_field(f.number())?;
            (uses(&f, oe.full_name()) && uses(&nf, oe.full_name())).then(|| (m.full_name().to_owned(), f.number()))
        })
    })
}

/// The reservations of one message or enum, old and new, for [`Checker::reserved_kept`].
struct Reserved<'a> {
    rule: Rule,
    /// `message "pkg.M"` or `enum "pkg.E"`.
    element: String,
    /// Why losing a reserved number matters, for the finding's message.
    consequence: &'static str,
    /// The largest number, written as "max".
    max: i64,
    /// Inclusive ranges.
    old_ranges: Vec<(i64, i64)>,
    new_ranges: Vec<(i64, i64)>,
    old_names: Vec<&'a str>,
    new_names: Vec<&'a str>,
    /// The old element's file and source path, and the source tags of its
    /// reserved ranges and names.
    file: &'a FileDescriptor,
    path: &'a [i32],
    tags: (i32, i32),
}

fn index(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

fn streaming(b: bool) -> &'static str {
    if b { "streaming" } else { "unary" }
}

fn idempotency(m: &MethodDescriptor) -> i32 {
    m.method_descriptor_proto().options.as_ref().and_then(|o| o.idempotency_level).unwrap_or(0)
}

fn idempotency_name(level: i32) -> String {
    match level {
        0 => "IDEMPOTENCY_UNKNOWN".to_owned(),
        1 => "NO_SIDE_EFFECTS".to_owned(),
        2 => "IDEMPOTENT".to_owned(),
        other => other.to_string(),
    }
}

fn quoted_list(names: &BTreeSet<String>) -> String {
    names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
}

/// The parts of `old` (inclusive) not covered by any of `new` (inclusive).
fn missing_ranges(old: (i64, i64), new: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut sorted = new.to_vec();
    sorted.sort_unstable();
    let (mut cursor, end) = old;
    let mut missing = Vec::new();
    for (lo, hi) in sorted {
        if cursor > end {
            break;
        }
        if hi < cursor {
            continue;
        }
        if lo > cursor {
            missing.push((cursor, end.min(lo - 1)));
        }
        if hi >= end {
            return missing;
        }
        cursor = cursor.max(hi + 1);
    }
    if cursor <= end {
        missing.push((cursor, end));
    }
    missing
}

fn ranges_text(ranges: &[(i64, i64)], max: i64) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| match (lo == hi, hi == max) {
            (true, _) => format!("{lo}"),
            (false, true) => format!("{lo} to max"),
            (false, false) => format!("{lo} to {hi}"),
        })
        .collect();
    format!("number{} {}", if matches!(ranges, [(lo, hi)] if lo == hi) { "" } else { "s" }, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_text_reads_naturally() {
        assert_eq!(ranges_text(&[(2, 2)], MESSAGE_MAX), "number 2");
        assert_eq!(ranges_text(&[(8, 8), (10, 10)], MESSAGE_MAX), "numbers 8, 10");
        assert_eq!(ranges_text(&[(101, MESSAGE_MAX)], MESSAGE_MAX), "numbers 101 to max");
        assert_eq!(ranges_text(&[(-10, -8)], ENUM_MAX), "numbers -10 to -8");
    }

    #[test]
    fn missing_ranges_finds_gaps() {
        assert_eq!(missing_ranges((5, 10), &[(5, 10)]), vec![]);
        assert_eq!(missing_ranges((5, 10), &[(1, 6), (9, 20)]), vec![(7, 8)]);
        assert_eq!(missing_ranges((5, 10), &[]), vec![(5, 10)]);
        assert_eq!(missing_ranges((5, 10), &[(5, 5), (6, 7)]), vec![(8, 10)]);
        assert_eq!(missing_ranges((1, i64::MAX), &[(1, i64::MAX)]), vec![]);
    }
}
