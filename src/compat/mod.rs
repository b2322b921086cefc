//! Wire-compatibility checking between two versions of a schema.
//!
//! [`check`] compares an old and a new [`DescriptorPool`] and returns a list of
//! [`Finding`]s: edits that would make a reader on one side misread bytes written
//! by the other. The default [`RuleSet::Wire`] implements every rule of buf's
//! `WIRE` breaking category with buf's rule ids and scope; [`RuleSet::WireJson`]
//! adds the `WIRE_JSON` rules. On top of these, a few protoserve rules (ids
//! prefixed `PROTOSERVE_`) catch edits that buf accepts but that still misread
//! data: a field moved to another number, two fields swapping numbers, integer
//! narrowing, widening or sign changes, and renumbered enum values.
//!
//! The module is pure: descriptors in, findings out, no file I/O, no printing,
//! no async. [`Rule`] is the one table of rule ids and default severities; a
//! [`Policy`] (built from a [`RuleSet`] or from configuration) picks rules and
//! severities; [`probe`] shows what real readers decode for each field-level
//! finding. The `protoserve compat` command (reading files and git refs,
//! configuration, printing, exit codes) lives in `crate::compat_cmd`.
//! See `docs/compat.md` for the rules table and the report formats.

use prost_reflect::DescriptorPool;

mod field;
mod finding;
mod probe;
mod report;
mod rule;
mod rules;
mod source;

pub use finding::{Finding, Located, Location, Policy, is_breaking};
pub use report::Format;
pub use rule::{Rule, RuleSet, Severity};

/// Compares `old` against `new` with the rules of `rules` at their default
/// severities; findings come in a deterministic order (by file, line, column,
/// then rule id). Never panics, whatever the descriptors.
pub fn check(old: &DescriptorPool, new: &DescriptorPool, rules: RuleSet) -> Vec<Finding> {
    check_with(old, new, &Policy::new(rules)).into_iter().map(|l| l.finding).collect()
}

/// [`check`] under a [`Policy`], with each finding's side, file and package.
pub fn check_with(old: &DescriptorPool, new: &DescriptorPool, policy: &Policy) -> Vec<Located> {
    located(rules::check(old, new, Some(policy)), policy)
}

/// Source info kept apart from a pool, by file name (a served schema keeps it
/// encoded beside its pool: `Schema::source_info`). Finding locations come from
/// a file's own descriptor first, then from here.
pub type SourceInfo<'a> = &'a dyn Fn(&str) -> Option<prost_types::SourceCodeInfo>;

/// [`check_with`], for pools whose source info is kept apart.
pub fn check_sourced(
    old: (&DescriptorPool, SourceInfo<'_>),
    new: (&DescriptorPool, SourceInfo<'_>),
    policy: &Policy,
) -> Vec<Located> {
    located(rules::check_sourced(old.0, Some(old.1), new.0, Some(new.1), Some(policy)), policy)
}

fn located(raw: Vec<rules::Raw>, policy: &Policy) -> Vec<Located> {
    raw.into_iter()
        .filter(|r| !policy.ignores(r.finding.rule, &r.file, &r.package))
        .map(|r| Located { finding: r.finding, in_old: r.side == rules::Side::Old, file: r.file, package: r.package })
        .collect()
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

/// Renders findings in `format`, with the probe report when there is one.
pub fn render(findings: &[Finding], format: Format, probe: Option<&str>) -> String {
    report::render(findings, format, probe)
}

/// For every field-level finding, encodes a message with distinctive values with
/// one side's descriptors and decodes it with the other's, both ways, and reports
/// what each reader sees. Findings that are not about fields are skipped.
pub fn probe(old: &DescriptorPool, new: &DescriptorPool, findings: &[Finding]) -> String {
    probe::report(old, new, findings)
}
