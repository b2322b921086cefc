//! Text and JSON renderings of findings.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Finding, Severity, is_breaking};

/// Compiler-like lines plus a summary line.
pub(super) fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        match &f.location {
            Some(l) => {
                let _ = write!(out, "{}:{}:{}: ", l.file, l.line, l.column);
            }
            None => out.push_str("<unknown>: "),
        }
        let _ = writeln!(out, "{}[{}]: {}", f.severity.as_str(), f.rule, f.message);
    }
    let (errors, warnings) = counts(findings);
    if findings.is_empty() {
        out.push_str("compat: no incompatible changes\n");
    } else {
        let _ = writeln!(
            out,
            "compat: {errors} error{}, {warnings} warning{}{}",
            plural(errors),
            plural(warnings),
            if is_breaking(findings) { " (breaking)" } else { " (not breaking)" }
        );
    }
    out
}

/// The JSON report (schema version 1, documented in docs/compat.md).
pub(super) fn json(findings: &[Finding], probe: Option<&str>) -> String {
    let (errors, warnings) = counts(findings);
    let doc = Report {
        version: 1,
        breaking: is_breaking(findings),
        errors,
        warnings,
        findings: findings
            .iter()
            .map(|f| JsonFinding {
                rule: f.rule,
                severity: f.severity.as_str(),
                buf_rule: f.buf_rule,
                message: &f.message,
                location: f.location.as_ref().map(|l| JsonLocation { file: &l.file, line: l.line, column: l.column }),
            })
            .collect(),
        probe,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn counts(findings: &[Finding]) -> (usize, usize) {
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    (errors, findings.len() - errors)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[derive(Serialize)]
struct Report<'a> {
    version: u32,
    breaking: bool,
    errors: usize,
    warnings: usize,
    findings: Vec<JsonFinding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probe: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    rule: &'a str,
    severity: &'a str,
    buf_rule: bool,
    message: &'a str,
    location: Option<JsonLocation<'a>>,
}

#[derive(Serialize)]
struct JsonLocation<'a> {
    file: &'a str,
    line: u32,
    column: u32,
}
