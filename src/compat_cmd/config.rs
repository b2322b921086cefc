//! Configuration of `protoserve compat`: the `breaking` section of an existing
//! `buf.yaml` (v1 or v2) and the `compat` section of `protoserve.yaml`, found
//! next to or above the new schema, or named with `--config`.
//!
//! ```yaml
//! # protoserve.yaml
//! compat:
//!   rules: wire-json            # wire (default) or wire-json
//!   severity:                   # any rule id: error, warning or off
//!     PROTOSERVE_FIELD_WIDENED_TYPE: warning
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compat::{Policy, Rule, RuleSet, Severity};

const BUF_FILES: [&str; 2] = ["buf.yaml", "buf.yml"];
const OUR_FILES: [&str; 2] = ["protoserve.yaml", "protoserve.yml"];

/// A configuration file that could not be read or understood, and why.
pub(super) type ConfigError = (PathBuf, String);

/// The policy for this run and notes about buf settings protoserve does not
/// apply: from `config` when given, else the nearest directory (from the new
/// schema up to the repository root) holding a `buf.yaml` and/or a
/// `protoserve.yaml`; `rules` (`--rules`) overrides the rule set either picks.
pub(super) fn policy(
    new: &Path,
    config: Option<&Path>,
    rules: Option<RuleSet>,
) -> Result<(Policy, Vec<String>), ConfigError> {
    let files = match config {
        Some(f) => vec![f.to_path_buf()],
        None => discover(new),
    };
    let mut buf: Option<(PathBuf, Value)> = None;
    let mut ours: Option<(PathBuf, Value)> = None;
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| (file.clone(), e.to_string()))?;
        let doc: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            yaml_serde::from_str(&text).map_err(|e| (file.clone(), e.to_string()))?
        };
        if doc.get("version").is_some() || doc.get("breaking").is_some() {
            buf = Some((file, doc));
        } else {
            ours = Some((file, doc));
        }
    }
    let mut notes = Vec::new();
    let mut policy = match &buf {
        Some((file, doc)) => from_buf(doc, new, file, rules, &mut notes).map_err(|m| (file.clone(), m))?,
        None => Policy::new(rules.unwrap_or_default()),
    };
    if let Some((file, doc)) = &ours {
        apply_ours(&mut policy, doc, rules.is_none() && buf.is_none()).map_err(|m| (file.clone(), m))?;
    }
    Ok((policy, notes))
}

/// The configuration files of the nearest directory that has any, from the new
/// schema's directory up to the repository root (a directory holding `.git`).
fn discover(new: &Path) -> Vec<PathBuf> {
    let start = if new.is_dir() { new.to_path_buf() } else { new.parent().unwrap_or(Path::new(".")).to_path_buf() };
    let start = start.canonicalize().unwrap_or(start);
    for dir in start.ancestors() {
        let found: Vec<PathBuf> =
            BUF_FILES.iter().chain(&OUR_FILES).map(|name| dir.join(name)).filter(|p| p.is_file()).collect();
        if !found.is_empty() || dir.join(".git").exists() {
            return found;
        }
    }
    Vec::new()
}

/// buf's `breaking` section: v1 at the top level; v2 at the top level with a
/// per-module override for the module containing the new schema.
fn from_buf(
    doc: &Value,
    new: &Path,
    file: &Path,
    rules: Option<RuleSet>,
    notes: &mut Vec<String>,
) -> Result<Policy, String> {
    let version = doc.get("version").and_then(Value::as_str).unwrap_or("v1");
    let mut section = doc.get("breaking").cloned().unwrap_or(Value::Null);
    // Paths in a v2 file are relative to the file's directory and include the
    // module path; ours are relative to the schema root, so strip the module path.
    let mut module_path = String::new();
    let v1 = version == "v1";
    match version {
        "v1" => {}
        "v2" => {
            let base = file.parent().unwrap_or(Path::new(".")).canonicalize().unwrap_or_default();
            let target = new.canonicalize().unwrap_or_else(|_| new.to_path_buf());
            let modules = doc.get("modules").and_then(Value::as_array).cloned().unwrap_or_default();
            for m in modules {
                let path = m.get("path").and_then(Value::as_str).unwrap_or(".");
                if target.starts_with(base.join(path)) {
                    module_path = path.trim_start_matches("./").trim_end_matches('/').to_owned();
                    if module_path == "." {
                        module_path.clear();
                    }
                    if let Some(b) = m.get("breaking") {
                        section = b.clone();
                    }
                    break;
                }
            }
        }
        other => return Err(format!("buf.yaml version '{other}' is not supported (expected v1 or v2)")),
    }
    let uses = strings(&section, "use")?;
    let uses = if uses.is_empty() { vec!["FILE".to_owned()] } else { uses };
    let mut policy = Policy::empty();
    match rules {
        Some(set) => policy = Policy::new(set),
        None => {
            for u in &uses {
                enable(&mut policy, u, v1, notes);
            }
        }
    }
    for r in Rule::ALL.iter().filter(|r| !r.is_buf()) {
        policy.set(*r, Some(r.default_severity()));
    }
    for e in strings(&section, "except")? {
        match category(&e, v1) {
            Some(rules) => rules.into_iter().for_each(|r| policy.set(r, None)),
            None => match Rule::from_id(&e) {
                Some(r) => policy.set(r, None),
                None => notes.push(format!("buf.yaml excepts {e}, which is not a wire rule protoserve checks")),
            },
        }
    }
    let strip = |p: String| -> String {
        if module_path.is_empty() {
            return p;
        }
        match p.strip_prefix(&module_path) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/').to_owned(),
            _ => p,
        }
    };
    policy.ignore = strings(&section, "ignore")?.into_iter().map(strip).collect();
    if let Some(only) = section.get("ignore_only") {
        let map = only.as_object().ok_or("breaking.ignore_only must map rule ids to lists of paths")?;
        let mut out: BTreeMap<Rule, Vec<String>> = BTreeMap::new();
        for (key, paths) in map {
            let paths: Vec<String> = string_list(paths, "breaking.ignore_only")?.into_iter().map(strip).collect();
            let targets = category(key, v1).or_else(|| Rule::from_id(key).map(|r| vec![r]));
            match targets {
                Some(rules) => rules.into_iter().for_each(|r| out.entry(r).or_default().extend(paths.clone())),
                None => {
                    notes.push(format!("buf.yaml ignore_only names {key}, which is not a wire rule protoserve checks"))
                }
            }
        }
        policy.ignore_only = out;
    }
    policy.ignore_unstable_packages = match section.get("ignore_unstable_packages") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("breaking.ignore_unstable_packages must be true or false".to_owned()),
    };
    Ok(policy)
}

/// Turns on what one `use` entry names.
fn enable(policy: &mut Policy, entry: &str, v1: bool, notes: &mut Vec<String>) {
    if matches!(entry, "FILE" | "PACKAGE") {
        notes.push(format!(
            "buf.yaml uses {entry}: protoserve checks its wire and JSON rules (WIRE_JSON); \
             its source-level rules (deleting files, messages, services, ...) are not checked"
        ));
    }
    match category(entry, v1) {
        Some(rules) => rules.into_iter().for_each(|r| policy.set(r, Some(r.default_severity()))),
        None => match Rule::from_id(entry) {
            Some(r) => policy.set(r, Some(r.default_severity())),
            None => notes.push(format!("buf.yaml uses {entry}, which is not a wire rule protoserve checks")),
        },
    }
}

/// buf's rules of a category: WIRE, WIRE_JSON, and FILE / PACKAGE (their wire
/// and JSON part, which is WIRE_JSON's rules), as a v1 or v2 buf.yaml defines it.
fn category(name: &str, v1: bool) -> Option<Vec<Rule>> {
    let set = match name {
        "WIRE" => RuleSet::Wire,
        "WIRE_JSON" | "FILE" | "PACKAGE" => RuleSet::WireJson,
        _ => return None,
    };
    let rules = Rule::ALL.iter().copied().filter(|r| r.is_buf() && r.in_set(set));
    Some(rules.filter(|r| !v1 || r.in_buf_v1_categories()).collect())
}

/// `protoserve.yaml`'s `compat` section: the rule set (when neither `--rules`
/// nor a buf.yaml chose one) and per-rule severities.
fn apply_ours(policy: &mut Policy, doc: &Value, may_set_rules: bool) -> Result<(), String> {
    let Some(section) = doc.get("compat") else {
        return Ok(());
    };
    if let Some(rules) = section.get("rules") {
        let set: RuleSet = rules.as_str().ok_or("compat.rules must be 'wire' or 'wire-json'")?.parse()?;
        if may_set_rules {
            let keep = policy.clone();
            *policy = Policy::new(set);
            policy.ignore = keep.ignore;
            policy.ignore_only = keep.ignore_only;
            policy.ignore_unstable_packages = keep.ignore_unstable_packages;
        }
    }
    if let Some(sev) = section.get("severity") {
        let map = sev.as_object().ok_or("compat.severity must map rule ids to error, warning or off")?;
        for (id, level) in map {
            let rule = Rule::from_id(id).ok_or_else(|| format!("compat.severity: unknown rule id '{id}'"))?;
            let level = match level {
                Value::String(s) if s == "off" => None,
                Value::Bool(false) => None,
                Value::String(s) => Some(
                    Severity::parse(s)
                        .ok_or_else(|| format!("compat.severity.{id}: '{s}' is not error, warning or off"))?,
                ),
                _ => return Err(format!("compat.severity.{id} must be error, warning or off")),
            };
            policy.set(rule, level);
        }
    }
    for key in section.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        if key != "rules" && key != "severity" {
            return Err(format!("compat.{key}: unknown key (expected rules, severity)"));
        }
    }
    Ok(())
}

fn strings(section: &Value, key: &str) -> Result<Vec<String>, String> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => string_list(v, &format!("breaking.{key}")),
    }
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, String> {
    let list = v.as_array().ok_or_else(|| format!("{what} must be a list of strings"))?;
    list.iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| format!("{what} must be a list of strings")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf_policy(yaml: &str) -> (Policy, Vec<String>) {
        let doc: Value = yaml_serde::from_str(yaml).unwrap();
        let mut notes = Vec::new();
        let p = from_buf(&doc, Path::new("."), Path::new("buf.yaml"), None, &mut notes).unwrap();
        (p, notes)
    }

    #[test]
    fn buf_v1_use_except_and_ignores() {
        let (p, notes) = buf_policy(
            "version: v1\nbreaking:\n  use: [WIRE]\n  except: [FIELD_SAME_ONEOF]\n  ignore: [foo]\n  \
             ignore_only:\n    FIELD_WIRE_COMPATIBLE_TYPE: [bar/x.proto]\n  ignore_unstable_packages: true\n",
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(p.severity(Rule::FieldSameOneof), None);
        assert_eq!(p.severity(Rule::FieldWireCompatibleType), Some(Severity::Error));
        assert_eq!(p.severity(Rule::FieldSameName), None, "WIRE_JSON only");
        assert_eq!(p.severity(Rule::FieldSameDefault), None, "not in v1's WIRE");
        assert_eq!(p.severity(Rule::ProtoserveFieldWidenedType), Some(Severity::Error), "ours stay on");
        assert_eq!(p.ignore, vec!["foo"]);
        assert_eq!(p.ignore_only[&Rule::FieldWireCompatibleType], vec!["bar/x.proto"]);
        assert!(p.ignore_unstable_packages);
    }

    #[test]
    fn buf_defaults_to_file_with_a_note() {
        let (p, notes) = buf_policy("version: v2\n");
        assert_eq!(p.severity(Rule::FieldSameName), Some(Severity::Error));
        assert_eq!(p.severity(Rule::FieldSameDefault), Some(Severity::Error));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("FILE"), "{notes:?}");
    }

    #[test]
    fn bad_buf_sections_are_errors_not_panics() {
        for yaml in ["version: v3\n", "version: v1\nbreaking:\n  use: WIRE\n", "breaking:\n  ignore_only: [x]\n"] {
            let doc: Value = yaml_serde::from_str(yaml).unwrap();
            assert!(from_buf(&doc, Path::new("."), Path::new("buf.yaml"), None, &mut Vec::new()).is_err(), "{yaml}");
        }
    }

    /// Random YAML-ish documents (xorshift64, deterministic) built from the
    /// keys both files use: every one parses to a policy or an error, no panic.
    #[test]
    fn random_configs_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pieces = [
            "version: v1\n",
            "version: v2\n",
            "version: 3\n",
            "breaking:\n",
            "  use: [WIRE]\n",
            "  use: WIRE\n",
            "  except: [FILE, NOPE]\n",
            "  ignore: [a, 1]\n",
            "  ignore_only:\n",
            "    WIRE: [x]\n",
            "    X: 1\n",
            "  ignore_unstable_packages: yes\n",
            "modules:\n",
            "  - path: .\n",
            "    breaking: {use: [WIRE_JSON]}\n",
            "  - 7\n",
            "compat:\n",
            "  rules: wire-json\n",
            "  rules: [1]\n",
            "  severity:\n",
            "    FIELD_SAME_NAME: off\n",
            "    PROTOSERVE_FIELD_WIDENED_TYPE: 3\n",
            "  - x\n",
            "null\n",
            "[]\n",
        ];
        let mut parsed = 0;
        for _ in 0..3_000 {
            let n = (next() % 8) as usize;
            let text: String = (0..n).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect();
            let Ok(doc) = yaml_serde::from_str::<Value>(&text) else { continue };
            parsed += 1;
            let _ = from_buf(&doc, Path::new("."), Path::new("buf.yaml"), None, &mut Vec::new());
            let _ = apply_ours(&mut Policy::new(RuleSet::Wire), &doc, true);
        }
        assert!(parsed > 100, "only {parsed} documents parsed");
    }

    #[test]
    fn our_severities_apply() {
        let mut p = Policy::new(RuleSet::Wire);
        let doc: Value = yaml_serde::from_str(
            "compat:\n  rules: wire-json\n  severity:\n    PROTOSERVE_FIELD_WIDENED_TYPE: warning\n    \
             FIELD_SAME_NAME: off\n",
        )
        .unwrap();
        apply_ours(&mut p, &doc, true).unwrap();
        assert_eq!(p.severity(Rule::ProtoserveFieldWidenedType), Some(Severity::Warning));
        assert_eq!(p.severity(Rule::FieldSameName), None);
        assert_eq!(p.severity(Rule::FieldSameJsonName), Some(Severity::Error));
        for bad in [
            "compat:\n  severity:\n    NOPE: off\n",
            "compat:\n  severity:\n    FIELD_SAME_NAME: fatal\n",
            "compat:\n  colour: red\n",
        ] {
            let doc: Value = yaml_serde::from_str(bad).unwrap();
            assert!(apply_ours(&mut p, &doc, true).is_err(), "{bad}");
        }
    }
}
