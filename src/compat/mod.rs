//! Wire-compatibility checking between two versions of a schema.
//!
//! [`check`] compares an old and a new [`DescriptorPool`] and returns a list of
//! [`Finding`]s: edits that would make a reader on one side misread bytes written
//! by the other. The default [`RuleSet::Wire`] implements every rule of buf's
//! `WIRE` breaking category with buf's rule ids and scope; [`RuleSet::WireJson`]
//! adds the `WIRE_JSON` rules. On top of these, a few protoserve rules (ids
//! prefixed `PROTOSERVE_`) catch edits that buf accepts but that still misread
//! data: a field moved to another number, two fields swapping numbers, integer
//! narrowing or sign changes, and renumbered enum values.
//!
//! The module is pure: descriptors in, findings out. [`run`] is the
//! `protoserve compat OLD NEW` command on top of it (loading, rendering, exit code),
//! and [`probe`] shows what real readers decode for each field-level finding.
//! See `docs/compat.md` for the rules table and the JSON schema.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use prost_reflect::DescriptorPool;

use crate::schema::{self, Schema, SchemaError};

mod field;
mod probe;
mod report;
mod rules;
mod source;

/// buf's `WIRE` rule ids, all checked by [`RuleSet::Wire`].
pub const BUF_WIRE_RULES: &[&str] = rules::BUF_WIRE;
/// buf's `WIRE_JSON` rule ids, all checked by [`RuleSet::WireJson`].
pub const BUF_WIRE_JSON_RULES: &[&str] = rules::BUF_WIRE_JSON;
/// protoserve's own rule ids, checked by both rule sets.
pub const PROTOSERVE_RULES: &[&str] = rules::PROTOSERVE;

/// Which rules [`check`] applies.
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
/// Every buf rule reports [`Severity::Error`]. The protoserve rules report
/// [`Severity::Error`] when every value written by one side is misread by the other
/// (a field moved or swapped numbers, an enum value renumbered) and
/// [`Severity::Warning`] when only some values are (narrowing, sign changes).
/// Only errors make [`is_breaking`] true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The edit breaks wire compatibility.
    Error,
    /// The edit misreads some values; worth a look but not breaking by itself.
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
}

/// A place in a `.proto` file, 1-based.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file's name as the compiler knows it (relative to its include root).
    /// [`run`] prefixes it with the directory the file was loaded from.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// One incompatible (or suspicious) edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule id, e.g. `FIELD_WIRE_COMPATIBLE_TYPE` or `PROTOSERVE_FIELD_MOVED_NUMBER`.
    pub rule: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What changed, naming the element and the numbers involved, and why it misreads.
    pub message: String,
    /// Where: in the new schema, or in the old one for deleted elements.
    /// `None` when the descriptors carry no source info (e.g. a stripped `.binpb`).
    pub location: Option<Location>,
    /// True when `rule` is one of buf's rule ids (false for `PROTOSERVE_*`).
    pub buf_rule: bool,
}

/// Compares `old` against `new` and returns the findings in a deterministic order
/// (by file, line, column, then rule id). Never panics, whatever the descriptors.
pub fn check(old: &DescriptorPool, new: &DescriptorPool, rules: RuleSet) -> Vec<Finding> {
    rules::check(old, new, Some(rules)).into_iter().map(|f| f.finding).collect()
}

/// True when at least one finding is an [`Severity::Error`].
pub fn is_breaking(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Renders findings like a compiler: `file:line:col: error[RULE]: message`, one
/// per line, then a one-line summary.
pub fn render_text(findings: &[Finding]) -> String {
    report::text(findings)
}

/// Renders findings as the stable JSON document described in `docs/compat.md`
/// (`{"version":1,"breaking":..,"errors":..,"warnings":..,"findings":[..]}`).
pub fn render_json(findings: &[Finding]) -> String {
    report::json(findings, None)
}

/// For every field-level finding, encodes a message with distinctive values with
/// one side's descriptors and decodes it with the other's, both ways, and reports
/// what each reader sees. Findings that are not about fields are skipped.
pub fn probe(old: &DescriptorPool, new: &DescriptorPool, findings: &[Finding]) -> String {
    probe::report(old, new, findings)
}

/// Output format of [`run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Compiler-like text.
    #[default]
    Text,
    /// The JSON document of [`render_json`].
    Json,
}

impl FromStr for Format {
    type Err = String;

    /// Parses the `--format` flag value: `text` or `json`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format '{other}' (expected 'text' or 'json')")),
        }
    }
}

/// Arguments of `protoserve compat`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The old schema: a directory of protos, a `.proto` file, or a `.binpb`/`.pb` FileDescriptorSet.
    pub old: PathBuf,
    /// The new schema, same forms as `old`.
    pub new: PathBuf,
    /// Which rules to apply.
    pub rules: RuleSet,
    /// Output format.
    pub format: Format,
    /// Also run the encode/decode probe for field-level findings.
    pub probe: bool,
}

/// Loads both sides (dir / .proto / .binpb / .pb), checks, writes the report to `out`;
/// returns the exit code 0/1/2 (2: load errors rendered to `err`).
///
/// 0: nothing breaking (warnings may still be printed), 1: at least one error
/// finding, 2: a side could not be loaded or compiled (editions files included).
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let old = match load_side(&opts.old) {
        Ok(s) => s,
        Err(e) => return load_failed("old", &opts.old, &e, err),
    };
    let new = match load_side(&opts.new) {
        Ok(s) => s,
        Err(e) => return load_failed("new", &opts.new, &e, err),
    };
    let raw = rules::check(old.pool(), new.pool(), Some(opts.rules));
    let findings: Vec<Finding> = raw
        .into_iter()
        .map(|r| {
            let root = match r.side {
                rules::Side::Old => &opts.old,
                rules::Side::New => &opts.new,
            };
            let mut f = r.finding;
            if let Some(loc) = &mut f.location {
                loc.file = display_path(root, &loc.file);
            }
            f
        })
        .collect();
    let probe_text = opts.probe.then(|| probe(old.pool(), new.pool(), &findings));
    let written = match opts.format {
        Format::Text => {
            let mut s = render_text(&findings);
            if let Some(p) = &probe_text {
                s.push('\n');
                s.push_str(p);
            }
            out.write_all(s.as_bytes())
        }
        Format::Json => {
            let mut s = report::json(&findings, probe_text.as_deref());
            s.push('\n');
            out.write_all(s.as_bytes())
        }
    };
    if let Err(e) = written {
        let _ = writeln!(err, "error: cannot write the report: {e}");
        return 2;
    }
    i32::from(is_breaking(&findings))
}

fn load_failed(side: &str, path: &Path, e: &SchemaError, err: &mut dyn Write) -> i32 {
    let _ = writeln!(err, "error: cannot load the {side} schema '{}':", path.display());
    let _ = writeln!(err, "{}", e.render());
    2
}

/// Loads one side: a FileDescriptorSet by extension, else a proto dir or file.
fn load_side(path: &Path) -> Result<Schema, SchemaError> {
    let is_set = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "binpb" || e == "pb");
    if is_set && path.is_file() { schema::load_descriptor_set(path) } else { schema::load(&[path.to_path_buf()]) }
}

/// Turns a compiler file name back into a path the user can open: under the
/// directory they passed, or next to the single `.proto` they passed.
fn display_path(root: &Path, file: &str) -> String {
    let base = if root.is_dir() {
        Some(root)
    } else if root.extension().is_some_and(|e| e == "proto") {
        root.parent()
    } else {
        None
    };
    match base {
        Some(b) if !b.as_os_str().is_empty() && b.join(file).exists() => b.join(file).display().to_string(),
        _ => file.to_owned(),
    }
}
