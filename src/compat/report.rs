//! Renderings of findings: compiler-like text, the JSON document, GitHub Actions
//! workflow commands and SARIF 2.1.0. Strings in, strings out.

use std::fmt::Write as _;
use std::str::FromStr;

use serde::Serialize;
use serde_json::json;

use super::finding::{Finding, is_breaking};
use super::rule::{Rule, Severity};

/// A report format (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Compiler-like text.
    #[default]
    Text,
    /// The stable JSON document (schema version 1).
    Json,
    /// GitHub Actions workflow commands (`::error file=..,line=..,col=..::msg`).
    GithubActions,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
}

impl FromStr for Format {
    type Err = String;

    /// Parses the `--format` flag value.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "github-actions" | "github" => Ok(Format::GithubActions),
            "sarif" => Ok(Format::Sarif),
            other => Err(format!("unknown format '{other}' (expected text, json, github-actions or sarif)")),
        }
    }
}

/// `findings` in `format`; the probe report is appended to text, a field of
/// JSON, and left out of the CI formats (which have no place for it).
pub(super) fn render(findings: &[Finding], format: Format, probe: Option<&str>) -> String {
    match format {
        Format::Text => {
            let mut s = text(findings);
            if let Some(p) = probe {
                s.push('\n');
                s.push_str(p);
            }
            s
        }
        Format::Json => {
            let mut s = json(findings, probe);
            s.push('\n');
            s
        }
        Format::GithubActions => github_actions(findings),
        Format::Sarif => {
            let mut s = sarif(findings);
            s.push('\n');
            s
        }
    }
}

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
    out.push_str(&summary(findings));
    out
}

fn summary(findings: &[Finding]) -> String {
    let (errors, warnings) = counts(findings);
    if findings.is_empty() {
        "compat: no incompatible changes\n".to_owned()
    } else {
        format!(
            "compat: {errors} error{}, {warnings} warning{}{}\n",
            plural(errors),
            plural(warnings),
            if is_breaking(findings) { " (breaking)" } else { " (not breaking)" }
        )
    }
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
                rule: f.rule.id(),
                severity: f.severity.as_str(),
                buf_rule: f.rule.is_buf(),
                message: &f.message,
                location: f.location.as_ref().map(|l| JsonLocation { file: &l.file, line: l.line, column: l.column }),
            })
            .collect(),
        probe,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// One workflow command per finding, then the summary as a plain log line.
/// Escaping follows GitHub's rules: `%`, CR and LF in messages; also `:` and
/// `,` in properties.
pub(super) fn github_actions(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(l) = &f.location {
            props.push(format!("file={}", escape_property(&l.file)));
            props.push(format!("line={}", l.line));
            props.push(format!("col={}", l.column));
        }
        props.push(format!("title={}", escape_property(f.rule.id())));
        let _ = writeln!(out, "::{level} {}::{}", props.join(","), escape_data(&f.message));
    }
    out.push_str(&summary(findings));
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// A SARIF 2.1.0 log with one run: every rule that can fire is described in the
/// driver, every finding is a result pointing at its rule by id and index.
pub(super) fn sarif(findings: &[Finding]) -> String {
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let rules: Vec<serde_json::Value> = Rule::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "name": r.id(),
                "shortDescription": { "text": r.summary() },
                "defaultConfiguration": { "level": level(r.default_severity()) },
                "properties": { "buf_rule": r.is_buf() },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": f.rule.id(),
                "ruleIndex": Rule::ALL.iter().position(|r| *r == f.rule).unwrap_or(0),
                "level": level(f.severity),
                "message": { "text": f.message },
            });
            if let Some(l) = &f.location {
                result["locations"] = json!([{
                    "physicalLocation": {
                        "artifactLocation": { "uri": file_uri(&l.file) },
                        "region": { "startLine": l.line, "startColumn": l.column },
                    }
                }]);
            }
            result
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "protoserve",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A relative path as a relative URI reference (absolute paths as `file://`),
/// percent-encoding everything but unreserved characters and `/`.
fn file_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_follow_githubs_rules() {
        assert_eq!(escape_data("a%b\r\nc"), "a%25b%0D%0Ac");
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
    }

    #[test]
    fn file_uris_are_percent_encoded() {
        assert_eq!(file_uri("proto/a b.proto"), "proto/a%20b.proto");
        assert_eq!(file_uri("/tmp/x.proto"), "file:///tmp/x.proto");
        assert_eq!(file_uri("é.proto"), "%C3%A9.proto");
    }
}
