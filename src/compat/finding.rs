//! What the checker returns and what steers it: findings with their
//! locations, and the [`Policy`] (rules, severities, ignores).

use std::collections::BTreeMap;

use super::rule::{Rule, RuleSet, Severity};

/// A place in a `.proto` file, 1-based.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file's name as the compiler knows it (relative to its include root).
    /// The `compat` command prefixes it with the directory the file was loaded from.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// One incompatible (or suspicious) edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule, e.g. [`Rule::FieldWireCompatibleType`]; [`Rule::id`] gives its id
    /// and [`Rule::is_buf`] whether it is one of buf's.
    pub rule: Rule,
    /// How bad it is: the rule's default severity unless the [`Policy`] changed it.
    pub severity: Severity,
    /// What changed, naming the element and the numbers involved, and why it misreads.
    pub message: String,
    /// Where: in the new schema, or in the old one for deleted elements.
    /// `None` when the descriptors carry no source info (e.g. a stripped `.binpb`).
    pub location: Option<Location>,
}

/// A finding, the side its location points into, and the element's file and
/// package (known even without source info).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The finding.
    pub finding: Finding,
    /// True when the location is in the old schema (deleted elements).
    pub in_old: bool,
    /// The compiler name of the file holding the element.
    pub file: String,
    /// That file's package.
    pub package: String,
}

/// Which rules run, at which severity, and which findings are ignored: a
/// [`RuleSet`] by default, or what a `buf.yaml` / `protoserve.yaml` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Enabled rules and their severities; a rule not in the map does not run.
    severities: BTreeMap<Rule, Severity>,
    /// Paths (files or directories, as the compiler names them: relative to the
    /// schema root) whose findings are dropped, for every rule.
    pub ignore: Vec<String>,
    /// The same, per rule.
    pub ignore_only: BTreeMap<Rule, Vec<String>>,
    /// Drop findings in packages whose last component is unstable
    /// (`v1alpha1`, `v2beta`, `v1test`, ...), as buf's option of that name does.
    pub ignore_unstable_packages: bool,
}

impl Policy {
    /// The rules of `set` (buf's category plus ours) at their default severities.
    pub fn new(set: RuleSet) -> Policy {
        let severities = Rule::ALL.iter().filter(|r| r.in_set(set)).map(|&r| (r, r.default_severity())).collect();
        Policy { severities, ignore: Vec::new(), ignore_only: BTreeMap::new(), ignore_unstable_packages: false }
    }

    /// No rule at all (configuration then enables some).
    pub fn empty() -> Policy {
        Policy {
            severities: BTreeMap::new(),
            ignore: Vec::new(),
            ignore_only: BTreeMap::new(),
            ignore_unstable_packages: false,
        }
    }

    /// The severity `rule` reports at, or `None` when it is off.
    pub fn severity(&self, rule: Rule) -> Option<Severity> {
        self.severities.get(&rule).copied()
    }

    /// Turns `rule` on at `severity`, or off with `None`.
    pub fn set(&mut self, rule: Rule, severity: Option<Severity>) {
        match severity {
            Some(s) => {
                self.severities.insert(rule, s);
            }
            None => {
                self.severities.remove(&rule);
            }
        }
    }

    /// The enabled rules.
    pub fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.severities.keys().copied()
    }

    pub(super) fn ignores(&self, rule: Rule, file: &str, package: &str) -> bool {
        let under = |p: &String| {
            let p = p.trim_end_matches('/');
            p.is_empty() || p == "." || file == p || file.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
        };
        self.ignore.iter().any(under)
            || self.ignore_only.get(&rule).is_some_and(|paths| paths.iter().any(under))
            || (self.ignore_unstable_packages && is_unstable_package(package))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(RuleSet::Wire)
    }
}

/// `v1alpha`, `v1alpha1`, `v2beta3`, `v1test`, `v1testfoo`: a last package
/// component of `v<digits>` followed by `alpha`/`beta` (and digits) or `test...`.
fn is_unstable_package(package: &str) -> bool {
    let last = package.rsplit('.').next().unwrap_or("");
    let Some(rest) = last.strip_prefix('v') else {
        return false;
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    if let Some(tail) = rest.strip_prefix("alpha").or_else(|| rest.strip_prefix("beta")) {
        return tail.chars().all(|c| c.is_ascii_digit());
    }
    rest.starts_with("test")
}

/// True when at least one finding is an [`Severity::Error`].
pub fn is_breaking(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstable_packages_are_recognised() {
        for p in ["a.v1alpha1", "a.v1alpha", "v2beta3", "x.y.v1test", "x.v1testing"] {
            assert!(is_unstable_package(p), "{p}");
        }
        for p in ["a.v1", "a.valpha1", "a.v1alphax", "", "v", "a.v1.beta", "users"] {
            assert!(!is_unstable_package(p), "{p}");
        }
    }

    #[test]
    fn policy_paths_match_files_and_directories() {
        let mut p = Policy::new(RuleSet::Wire);
        p.ignore = vec!["foo".into(), "bar/x.proto".into()];
        assert!(p.ignores(Rule::FieldSameOneof, "foo/a.proto", "t"));
        assert!(p.ignores(Rule::FieldSameOneof, "bar/x.proto", "t"));
        assert!(!p.ignores(Rule::FieldSameOneof, "foobar/a.proto", "t"));
        assert!(!p.ignores(Rule::FieldSameOneof, "bar/y.proto", "t"));
    }
}
