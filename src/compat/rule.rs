//! The one table of rules: every rule id, where it comes from, which rule sets
//! run it, and its default severity. Everything else (the checker, the reports,
//! configuration) asks this table; nothing compares rule-name strings.

use std::fmt;
use std::str::FromStr;

/// Which rules [`check`](super::check) applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuleSet {
    /// buf's `WIRE` category plus the protoserve rules: binary compatibility only.
    #[default]
    Wire,
    /// buf's `WIRE_JSON` category plus the protoserve rules: binary and JSON
    /// compatibility (field and enum value names matter too).
    WireJson,
}

impl FromStr for RuleSet {
    type Err = String;

    /// Parses the `--rules` flag value: `wire` or `wire-json`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wire" => Ok(RuleSet::Wire),
            "wire-json" | "wire_json" => Ok(RuleSet::WireJson),
            other => Err(format!("unknown rule set '{other}' (expected 'wire' or 'wire-json')")),
        }
    }
}

/// How bad a finding is.
///
/// Every rule reports [`Severity::Error`] by default: buf's rules as buf does,
/// ours because each names an edit under which the probe shows a value misread
/// or dropped. Configuration may downgrade a rule to [`Severity::Warning`].
/// Only errors make [`is_breaking`](super::is_breaking) true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The edit breaks wire compatibility.
    Error,
    /// Reported, but not breaking (only by configuration).
    Warning,
}

impl Severity {
    /// `"error"` or `"warning"`, as printed in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }

    /// Parses `error` or `warning` (as configuration spells them).
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "error" => Some(Severity::Error),
            "warning" | "warn" => Some(Severity::Warning),
            _ => None,
        }
    }
}

/// A compatibility rule. buf's rules carry buf's ids; ours are prefixed `PROTOSERVE_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // each variant is its id, documented in docs/compat.md
pub enum Rule {
    EnumSameJsonFormat,
    EnumValueNoDeleteUnlessNameReserved,
    EnumValueNoDeleteUnlessNumberReserved,
    EnumValueSameName,
    FieldNoDeleteUnlessNameReserved,
    FieldNoDeleteUnlessNumberReserved,
    FieldSameDefault,
    FieldSameJsonName,
    FieldSameName,
    FieldSameOneof,
    FieldWireCompatibleCardinality,
    FieldWireCompatibleType,
    FieldWireJsonCompatibleCardinality,
    FieldWireJsonCompatibleType,
    FileSamePackage,
    MessageSameJsonFormat,
    MessageSameRequiredFields,
    ReservedEnumNoDelete,
    ReservedMessageNoDelete,
    RpcSameClientStreaming,
    RpcSameIdempotencyLevel,
    RpcSameRequestType,
    RpcSameResponseType,
    RpcSameServerStreaming,
    ProtoserveFieldMovedNumber,
    ProtoserveFieldSwappedNumbers,
    ProtoserveFieldNarrowedType,
    ProtoserveFieldWidenedType,
    ProtoserveFieldSignChanged,
    ProtoserveEnumValueRenumbered,
}

/// Who defined a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Buf,
    Protoserve,
}

/// In which of buf's categories a buf rule is (ours run in both rule sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sets {
    /// `WIRE` and `WIRE_JSON`.
    Both,
    /// `WIRE` only.
    Wire,
    /// `WIRE_JSON` only.
    Json,
}

struct Info {
    id: &'static str,
    /// One sentence: what the rule keeps true.
    summary: &'static str,
    origin: Origin,
    sets: Sets,
    severity: Severity,
    /// False for buf rules that buf's categories include only under a v2
    /// `buf.yaml` (buf adds new rules to v2 configurations only).
    in_v1: bool,
}

const fn buf(id: &'static str, sets: Sets, summary: &'static str) -> Info {
    Info { id, summary, origin: Origin::Buf, sets, severity: Severity::Error, in_v1: true }
}

const fn buf_v2(id: &'static str, sets: Sets, summary: &'static str) -> Info {
    Info { id, summary, origin: Origin::Buf, sets, severity: Severity::Error, in_v1: false }
}

const fn ours(id: &'static str, summary: &'static str) -> Info {
    Info { id, summary, origin: Origin::Protoserve, sets: Sets::Both, severity: Severity::Error, in_v1: true }
}

impl Rule {
    /// Every rule, in id order within each origin.
    pub const ALL: &'static [Rule] = &[
        Rule::EnumSameJsonFormat,
        Rule::EnumValueNoDeleteUnlessNameReserved,
        Rule::EnumValueNoDeleteUnlessNumberReserved,
        Rule::EnumValueSameName,
        Rule::FieldNoDeleteUnlessNameReserved,
        Rule::FieldNoDeleteUnlessNumberReserved,
        Rule::FieldSameDefault,
        Rule::FieldSameJsonName,
        Rule::FieldSameName,
        Rule::FieldSameOneof,
        Rule::FieldWireCompatibleCardinality,
        Rule::FieldWireCompatibleType,
        Rule::FieldWireJsonCompatibleCardinality,
        Rule::FieldWireJsonCompatibleType,
        Rule::FileSamePackage,
        Rule::MessageSameJsonFormat,
        Rule::MessageSameRequiredFields,
        Rule::ReservedEnumNoDelete,
        Rule::ReservedMessageNoDelete,
        Rule::RpcSameClientStreaming,
        Rule::RpcSameIdempotencyLevel,
        Rule::RpcSameRequestType,
        Rule::RpcSameResponseType,
        Rule::RpcSameServerStreaming,
        Rule::ProtoserveFieldMovedNumber,
        Rule::ProtoserveFieldSwappedNumbers,
        Rule::ProtoserveFieldNarrowedType,
        Rule::ProtoserveFieldWidenedType,
        Rule::ProtoserveFieldSignChanged,
        Rule::ProtoserveEnumValueRenumbered,
    ];

    /// The table. Every protoserve rule is an error by default because each one
    /// names an edit under which the probe shows a value misread or dropped.
    const fn info(self) -> Info {
        use Sets::{Both, Json, Wire};
        match self {
            Rule::EnumSameJsonFormat => {
                buf("ENUM_SAME_JSON_FORMAT", Json, "An enum keeps full JSON support (its file stays proto3).")
            }
            Rule::EnumValueNoDeleteUnlessNameReserved => buf(
                "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED",
                Json,
                "A deleted enum value has all its names reserved.",
            ),
            Rule::EnumValueNoDeleteUnlessNumberReserved => buf(
                "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
                Both,
                "A deleted enum value has its number reserved.",
            ),
            Rule::EnumValueSameName => buf("ENUM_VALUE_SAME_NAME", Json, "An enum number keeps every name it had."),
            Rule::FieldNoDeleteUnlessNameReserved => {
                buf("FIELD_NO_DELETE_UNLESS_NAME_RESERVED", Json, "A deleted field has its name reserved.")
            }
            Rule::FieldNoDeleteUnlessNumberReserved => {
                buf("FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", Both, "A deleted field has its number reserved.")
            }
            Rule::FieldSameDefault => buf_v2("FIELD_SAME_DEFAULT", Both, "A field keeps its default value."),
            Rule::FieldSameJsonName => buf("FIELD_SAME_JSON_NAME", Json, "A field keeps its JSON name."),
            Rule::FieldSameName => buf("FIELD_SAME_NAME", Json, "A field keeps its name."),
            Rule::FieldSameOneof => buf("FIELD_SAME_ONEOF", Both, "A field stays in (or out of) the same oneof."),
            Rule::FieldWireCompatibleCardinality => buf(
                "FIELD_WIRE_COMPATIBLE_CARDINALITY",
                Wire,
                "A field changes cardinality only in ways the wire format reads alike.",
            ),
            Rule::FieldWireCompatibleType => buf(
                "FIELD_WIRE_COMPATIBLE_TYPE",
                Wire,
                "A field changes type only within a group whose encodings read each other.",
            ),
            Rule::FieldWireJsonCompatibleCardinality => buf(
                "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY",
                Json,
                "A field changes cardinality only in ways both the wire and JSON read alike.",
            ),
            Rule::FieldWireJsonCompatibleType => buf(
                "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
                Json,
                "A field changes type only within a group that shares wire and JSON forms.",
            ),
            Rule::FileSamePackage => buf("FILE_SAME_PACKAGE", Both, "A file keeps its package."),
            Rule::MessageSameJsonFormat => {
                buf("MESSAGE_SAME_JSON_FORMAT", Json, "A message keeps full JSON support (its file stays proto3).")
            }
            Rule::MessageSameRequiredFields => {
                buf("MESSAGE_SAME_REQUIRED_FIELDS", Both, "A message neither gains nor loses required fields.")
            }
            Rule::ReservedEnumNoDelete => {
                buf("RESERVED_ENUM_NO_DELETE", Both, "An enum keeps every number and name it reserved.")
            }
            Rule::ReservedMessageNoDelete => {
                buf("RESERVED_MESSAGE_NO_DELETE", Both, "A message keeps every number and name it reserved.")
            }
            Rule::RpcSameClientStreaming => {
                buf("RPC_SAME_CLIENT_STREAMING", Both, "An RPC keeps its client streaming.")
            }
            Rule::RpcSameIdempotencyLevel => {
                buf("RPC_SAME_IDEMPOTENCY_LEVEL", Both, "An RPC keeps its idempotency level.")
            }
            Rule::RpcSameRequestType => buf("RPC_SAME_REQUEST_TYPE", Both, "An RPC keeps its request type."),
            Rule::RpcSameResponseType => buf("RPC_SAME_RESPONSE_TYPE", Both, "An RPC keeps its response type."),
            Rule::RpcSameServerStreaming => {
                buf("RPC_SAME_SERVER_STREAMING", Both, "An RPC keeps its server streaming.")
            }
            Rule::ProtoserveFieldMovedNumber => ours(
                "PROTOSERVE_FIELD_MOVED_NUMBER",
                "A field that keeps its name keeps its number: old writers still send the old one.",
            ),
            Rule::ProtoserveFieldSwappedNumbers => ours(
                "PROTOSERVE_FIELD_SWAPPED_NUMBERS",
                "Two fields do not swap numbers: each side reads the other field.",
            ),
            Rule::ProtoserveFieldNarrowedType => ours(
                "PROTOSERVE_FIELD_NARROWED_TYPE",
                "An integer field is not narrowed: old values out of range are truncated.",
            ),
            Rule::ProtoserveFieldWidenedType => ours(
                "PROTOSERVE_FIELD_WIDENED_TYPE",
                "An integer field is not widened: old readers truncate what new writers send.",
            ),
            Rule::ProtoserveFieldSignChanged => ours(
                "PROTOSERVE_FIELD_SIGN_CHANGED",
                "An integer field keeps its signedness: negative and large values swap.",
            ),
            Rule::ProtoserveEnumValueRenumbered => ours(
                "PROTOSERVE_ENUM_VALUE_RENUMBERED",
                "An enum value keeps its number: the old number now means another value.",
            ),
        }
    }

    /// The rule id, e.g. `FIELD_WIRE_COMPATIBLE_TYPE`.
    pub const fn id(self) -> &'static str {
        self.info().id
    }

    /// One sentence: what the rule keeps true (for SARIF's rule descriptions).
    pub const fn summary(self) -> &'static str {
        self.info().summary
    }

    /// True for buf's rules, false for `PROTOSERVE_*` ones.
    pub const fn is_buf(self) -> bool {
        matches!(self.info().origin, Origin::Buf)
    }

    /// The severity a finding of this rule has unless configuration changes it.
    pub const fn default_severity(self) -> Severity {
        self.info().severity
    }

    /// True when `set` runs this rule: buf's rules by buf's category, ours always.
    pub const fn in_set(self, set: RuleSet) -> bool {
        match (self.info().sets, set) {
            (Sets::Both, _) | (Sets::Wire, RuleSet::Wire) | (Sets::Json, RuleSet::WireJson) => true,
            (Sets::Wire, RuleSet::WireJson) | (Sets::Json, RuleSet::Wire) => false,
        }
    }

    /// False for the buf rules that buf's categories leave out under a v1
    /// `buf.yaml` (checked with buf 1.75.0: `FIELD_SAME_DEFAULT`).
    pub const fn in_buf_v1_categories(self) -> bool {
        self.info().in_v1
    }

    /// The rule with this id, if there is one.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl PartialEq<&str> for Rule {
    fn eq(&self, other: &&str) -> bool {
        self.id() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        for (i, r) in Rule::ALL.iter().enumerate() {
            assert_eq!(Rule::from_id(r.id()), Some(*r));
            assert!(Rule::ALL[i + 1..].iter().all(|o| o.id() != r.id()), "{r} twice");
            assert_eq!(r.is_buf(), !r.id().starts_with("PROTOSERVE_"));
        }
        assert_eq!(Rule::from_id("NOPE"), None);
    }

    #[test]
    fn buf_categories_have_bufs_sizes() {
        // buf 1.x: WIRE has 15 rules, WIRE_JSON 22.
        let count = |s| Rule::ALL.iter().filter(|r| r.is_buf() && r.in_set(s)).count();
        assert_eq!(count(RuleSet::Wire), 15);
        assert_eq!(count(RuleSet::WireJson), 22);
    }
}
