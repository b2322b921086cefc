//! End-to-end tests for the wire-compatibility checker (`protoserve compat`).
//!
//! Fixtures live in `tests/data/compat/<case>/{old,new}/`, with the expected
//! findings in `expected.txt` (one `RULE_ID file:line:col` per line) and an
//! optional `rules.txt` (`wire-json`; default `wire`). Set `COMPAT_BLESS=1` to
//! rewrite the `expected.txt` files after reviewing a change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message as _;
use prost_reflect::DescriptorPool;
use protoserve::compat::{self, Format, Rule, RuleSet, Severity};
use protoserve::compat_cmd::{self, Against, Options};
use protoserve::schema;

mod ci;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/compat")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data/compat exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.join("old").is_dir() && p.join("new").is_dir())
        .collect();
    v.sort();
    assert!(v.len() >= 30, "expected the compat fixtures, found {}", v.len());
    v
}

fn case_name(case: &Path) -> String {
    case.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned()
}

fn rule_set(case: &Path) -> RuleSet {
    match std::fs::read_to_string(case.join("rules.txt")) {
        Ok(s) => s.trim().parse().expect("rules.txt holds 'wire' or 'wire-json'"),
        Err(_) => RuleSet::Wire,
    }
}

fn pool(dir: &Path) -> DescriptorPool {
    match schema::load(&[dir.to_path_buf()]) {
        Ok(s) => s.pool_with_source_info(),
        Err(e) => panic!("fixture {} does not compile:\n{}", dir.display(), e.render()),
    }
}

fn findings(case: &Path, rules: RuleSet) -> Vec<compat::Finding> {
    compat::check(&pool(&case.join("old")), &pool(&case.join("new")), rules)
}

fn snapshot(findings: &[compat::Finding]) -> String {
    findings
        .iter()
        .map(|f| match &f.location {
            Some(l) => format!("{} {}:{}:{}\n", f.rule, l.file, l.line, l.column),
            None => format!("{} <unknown>\n", f.rule),
        })
        .collect()
}

#[test]
fn fixtures_match_expected_findings() {
    let bless = std::env::var_os("COMPAT_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let got = snapshot(&findings(&case, rule_set(&case)));
        let path = case.join("expected.txt");
        if bless {
            std::fs::write(&path, &got).expect("write expected.txt");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("== {}\n-- expected\n{want}-- got\n{got}", case_name(&case)));
        }
    }
    assert!(failures.is_empty(), "fixtures differ (COMPAT_BLESS=1 to accept):\n{}", failures.join("\n"));
}

#[test]
fn every_rule_has_a_positive_and_a_negative_fixture() {
    let mut fired: BTreeSet<String> = BTreeSet::new();
    let mut silent_somewhere: BTreeSet<String> = BTreeSet::new();
    let all: BTreeSet<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
    for case in cases() {
        let expected = std::fs::read_to_string(case.join("expected.txt")).unwrap_or_default();
        let rules_here: BTreeSet<&str> = expected.lines().filter_map(|l| l.split(' ').next()).collect();
        let set = rule_set(&case);
        let enabled: Vec<&str> = Rule::ALL.iter().filter(|r| r.in_set(set)).map(|r| r.id()).collect();
        for r in &rules_here {
            fired.insert((*r).to_owned());
        }
        // A negative case for a rule: the rule ran on a fixture that edits what the
        // rule looks at (the case name says so) and stayed silent.
        for r in enabled {
            if !rules_here.contains(r) && case_name(&case).ends_with("compatible") {
                silent_somewhere.insert(r.to_owned());
            }
        }
    }
    let unfired: Vec<&&str> = all.iter().filter(|r| !fired.contains(**r)).collect();
    assert!(unfired.is_empty(), "rules without a positive fixture: {unfired:?}");
    let never_silent: Vec<&&str> = all.iter().filter(|r| !silent_somewhere.contains(**r)).collect();
    assert!(never_silent.is_empty(), "rules without a negative (*compatible) fixture: {never_silent:?}");
}

fn buf_binary() -> PathBuf {
    let buf = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/buf");
    assert!(
        buf.exists(),
        "{} is missing: the buf parity test needs the real buf CLI. Run `npm ci` in the repository root \
         (it installs @bufbuild/buf from package-lock.json), then rerun the tests.",
        buf.display()
    );
    buf
}

/// How many findings each buf rule id reports for `case` under `category`
/// (WIRE or WIRE_JSON), according to buf itself.
fn buf_rules(buf: &Path, case: &Path, category: &str) -> BTreeMap<String, usize> {
    let config = |side: &str| {
        format!(r#"{{"version":"v2","modules":[{{"path":"{side}"}}],"breaking":{{"use":["{category}"]}}}}"#)
    };
    let output = Command::new(buf)
        .current_dir(case)
        .args(["breaking", "new", "--against", "old", "--error-format", "json"])
        .args(["--config", &config("new"), "--against-config", &config("old")])
        .output()
        .expect("buf runs");
    let code = output.status.code();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        code == Some(0) || code == Some(100),
        "buf failed on {} ({category}): {:?}\n{stdout}\n{}",
        case.display(),
        code,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    for l in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).expect("buf prints one JSON object per line");
        let rule = v["type"].as_str().expect("buf finding has a type").to_owned();
        *rules.entry(rule).or_default() += 1;
    }
    assert_eq!(code == Some(100), !rules.is_empty(), "buf exit code and findings disagree");
    rules
}

#[test]
fn buf_parity_on_every_fixture_and_category() {
    let buf = buf_binary();
    let mut mismatches = Vec::new();
    let mut compared = 0;
    // The fixtures plus the worked example of docs/compat.md.
    let docs_example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/compat-renumber");
    for case in cases().into_iter().chain([docs_example]) {
        let (old, new) = (pool(&case.join("old")), pool(&case.join("new")));
        for (category, set) in [("WIRE", RuleSet::Wire), ("WIRE_JSON", RuleSet::WireJson)] {
            let theirs = buf_rules(&buf, &case, category);
            let mut ours: BTreeMap<String, usize> = BTreeMap::new();
            for f in compat::check(&old, &new, set).into_iter().filter(|f| f.rule.is_buf()) {
                *ours.entry(f.rule.id().to_owned()).or_default() += 1;
            }
            compared += 1;
            if theirs != ours {
                mismatches.push(format!("{} {category}: buf {theirs:?} / protoserve {ours:?}", case_name(&case)));
            }
        }
    }
    assert!(compared >= 60);
    assert!(mismatches.is_empty(), "verdicts differ from buf:\n{}", mismatches.join("\n"));
}

fn run(old: &Path, new: &Path, format: Format, probe: bool) -> (i32, String, String) {
    let opts = Options {
        new: new.to_path_buf(),
        against: Against::Path(old.to_path_buf()),
        rules: Some(RuleSet::Wire),
        config: None,
        format,
        probe,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = compat_cmd::run(&opts, &mut out, &mut err);
    (code, String::from_utf8(out).expect("utf-8"), String::from_utf8(err).expect("utf-8"))
}

fn case_dir(name: &str) -> PathBuf {
    data_dir().join(name)
}

#[test]
fn run_exit_codes_follow_the_verdict() {
    let c = case_dir("unchanged");
    let (code, out, err) = run(&c.join("old"), &c.join("new"), Format::Text, false);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("no incompatible changes"), "{out}");

    let c = case_dir("field_delete");
    let (code, out, _) = run(&c.join("old"), &c.join("new"), Format::Text, false);
    assert_eq!(code, 1, "{out}");
    // Deletions point into OLD, at the deleted field, with the path the user passed.
    let old_file = c.join("old/a.proto").display().to_string();
    assert!(
        out.contains(&format!("{old_file}:6:3: error[FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED]: field 2 (\"gone\")")),
        "{out}"
    );

    // Narrowing misreads old writers' large values: an error, exit 1.
    let c = case_dir("field_type_narrowing");
    let (code, out, _) = run(&c.join("old"), &c.join("new"), Format::Text, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error[PROTOSERVE_FIELD_NARROWED_TYPE]"), "{out}");
    assert!(out.contains("compat: 5 errors, 0 warnings (breaking)"), "{out}");
}

#[test]
fn run_accepts_single_files_and_descriptor_sets() {
    let c = case_dir("field_moved_number");
    let tmp = tempfile::tempdir().expect("tempdir");
    let set = tmp.path().join("old.binpb");
    let old = schema::load(&[c.join("old")]).expect("old compiles");
    let fds = prost_types::FileDescriptorSet {
        file: old.pool_with_source_info().file_descriptor_protos().cloned().collect(),
    };
    std::fs::write(&set, fds.encode_to_vec()).expect("write binpb");

    let (code, out, err) = run(&set, &c.join("new/user.proto"), Format::Text, false);
    assert_eq!(code, 1, "{out}{err}");
    let new_file = c.join("new/user.proto").display().to_string();
    assert!(out.contains(&format!("{new_file}:10:18: error[PROTOSERVE_FIELD_MOVED_NUMBER]")), "{out}");
}

#[test]
fn run_reports_load_errors_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    std::fs::write(bad.join("x.proto"), "syntax = \"proto3\";\nmessage M {\n  strin x = 1;\n}\n").expect("write");
    let good = case_dir("unchanged").join("old");
    let (code, out, err) = run(&good, &bad, Format::Text, false);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("cannot load the new schema"), "{err}");
    assert!(err.contains("x.proto:3:3"), "compile errors carry file:line:col: {err}");

    let missing = tmp.path().join("nope");
    let (code, _, err) = run(&missing, &good, Format::Json, false);
    assert_eq!(code, 2);
    assert!(err.contains("cannot load the old schema"), "{err}");
}

#[test]
fn editions_are_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ed = tmp.path().join("ed");
    std::fs::create_dir(&ed).expect("mkdir");
    std::fs::write(ed.join("e.proto"), "edition = \"2023\";\npackage t;\nmessage M { string s = 1; }\n")
        .expect("write");
    let good = case_dir("unchanged").join("old");
    let (code, out, err) = run(&good, &ed, Format::Text, false);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("editions not supported yet"), "{err}");
    let (code, _, err) = run(&ed, &good, Format::Text, false);
    assert_eq!(code, 2);
    assert!(err.contains("editions not supported yet"), "{err}");
}

#[test]
fn json_report_has_the_documented_shape() {
    let c = case_dir("field_moved_number_reused");
    let (code, out, _) = run(&c.join("old"), &c.join("new"), Format::Json, false);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["version"], 1);
    assert_eq!(v["breaking"], true);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 0);
    assert!(v.get("probe").is_none());
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "PROTOSERVE_FIELD_MOVED_NUMBER");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["buf_rule"], false);
    assert_eq!(f["location"]["line"], 10);
    assert_eq!(f["location"]["column"], 18);
    assert!(f["location"]["file"].as_str().is_some_and(|s| s.ends_with("new/user.proto")));
    let msg = f["message"].as_str().expect("message");
    assert!(msg.contains("moved from number 3 to 6"), "{msg}");
    assert!(msg.contains("takes it for \"phone\""), "{msg}");

    let (_, out, _) = run(&c.join("old"), &c.join("new"), Format::Json, true);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert!(v["probe"].as_str().is_some_and(|p| p.contains("MISREAD")), "{out}");
}

#[test]
fn findings_are_deterministic_and_buf_flagged() {
    let c = case_dir("field_type");
    let a = findings(&c, RuleSet::Wire);
    let b = findings(&c, RuleSet::Wire);
    assert_eq!(a, b);
    assert!(a.iter().all(|f| f.rule.is_buf() != f.rule.id().starts_with("PROTOSERVE_")));
    assert!(a.iter().all(|f| f.severity == Severity::Error));
    assert!(compat::is_breaking(&a));
    assert!(!compat::is_breaking(&[]));
    let text = compat::render_text(&a);
    assert!(text.contains("a.proto:10:3: error[FIELD_WIRE_COMPATIBLE_TYPE]: field 1 (\"to_string\") on message \"t.M\" changed type from int32 to string"), "{text}");
}

fn probe_case(name: &str) -> String {
    let c = case_dir(name);
    let (old, new) = (pool(&c.join("old")), pool(&c.join("new")));
    let f = compat::check(&old, &new, rule_set(&c));
    compat::probe(&old, &new, &f)
}

#[test]
fn probe_shows_a_moved_field_misread() {
    let p = probe_case("field_moved_number_reused");
    assert!(
        p.contains("old writer email=\"email-3\" (field 3) -> new reader: phone=\"email-3\", email=\"\" [MISREAD]"),
        "{p}"
    );
    assert!(
        p.contains(
            "new writer phone=\"phone-3\" (field 3), email=\"email-6\" (field 6) -> old reader: \
             email=\"phone-3\", unknown field(s) 6 kept as raw bytes [MISREAD]"
        ),
        "{p}"
    );
}

#[test]
fn probe_shows_swapped_fields_and_narrowing() {
    let p = probe_case("field_swapped_numbers");
    assert!(
        p.contains("old writer name=\"name-2\" (field 2), email=\"email-3\" (field 3) -> new reader: email=\"name-2\", name=\"email-3\" [MISREAD]"),
        "{p}"
    );
    let p = probe_case("field_type_narrowing");
    // -5000000001 as int64 read as int32 keeps the low 32 bits.
    let truncated = (-5_000_000_001_i64) as i32;
    assert!(
        p.contains(&format!("old writer count=-5000000001 (field 1) -> new reader: count={truncated} [MISREAD]")),
        "{p}"
    );
    let p = probe_case("field_type_sign");
    assert!(p.contains("old writer a=-101 (field 1) -> new reader: a=4294967195 [MISREAD]"), "{p}");
}

#[test]
fn probe_shows_compatible_edits_round_tripping() {
    // proto3 implicit <-> explicit presence: same bytes both ways.
    let p = probe_case("cardinality_compatible");
    assert!(p.contains("changed without findings: message t.M"), "{p}");
    assert!(p.contains("old writer to_optional=-101 (field 1)"), "{p}");
    assert!(!p.contains("MISREAD"), "{p}");
    assert_eq!(p.matches("[round-trips unchanged]").count(), 2, "{p}");

    // A rename is invisible on the wire: the value lands in the renamed field.
    let p = probe_case("field_name_wire");
    assert!(p.contains("old writer user_name=\"user_name-1\" (field 1)"), "{p}");
    assert!(p.contains("-> new reader: login=\"user_name-1\""), "{p}");
    assert!(!p.contains("MISREAD"), "{p}");
}

/// Widening is safe old -> new, but new writers' large values are truncated by
/// old readers: the rule is an error and its message tells the probe's story.
#[test]
fn widening_is_an_error_that_the_probe_confirms() {
    let c = case_dir("field_type_widening");
    let (code, out, _) = run(&c.join("old"), &c.join("new"), Format::Text, true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "error[PROTOSERVE_FIELD_WIDENED_TYPE]: field 1 (\"widen\") on message \"t.M\" changed type from \
             int32 to int64: new writers may send int64 values outside the int32 range, which old readers \
             truncate to their low 32 bits (new writer 5000000000 -> old reader 705032704)"
        ),
        "{out}"
    );
    assert!(out.contains("old writer widen=-101 (field 1) -> new reader: widen=-101 [round-trips unchanged]"), "{out}");
    assert!(out.contains("new writer widen=-5000000001 (field 1) -> old reader: widen=-705032705 [MISREAD]"), "{out}");
    assert!(out.contains("new writer flag=-104 (field 4) -> old reader: flag=true [MISREAD]"), "{out}");
    // Every widened field is probed, and each probe shows the misread.
    assert_eq!(out.matches("error[PROTOSERVE_FIELD_WIDENED_TYPE]").count(), 5, "{out}");
    assert_eq!(out.matches("-> old reader:").count(), 5, "{out}");
    assert_eq!(out.matches("[MISREAD]").count(), 5, "{out}");
}

/// Every protoserve finding on the fixtures is an error, and the probe of each
/// field-level one shows a value misread or dropped in at least one direction.
#[test]
fn protoserve_errors_never_contradict_the_probe() {
    let mut checked = 0;
    for case in cases() {
        let (old, new) = (pool(&case.join("old")), pool(&case.join("new")));
        for f in compat::check(&old, &new, rule_set(&case)).into_iter().filter(|f| !f.rule.is_buf()) {
            assert_eq!(f.severity, Severity::Error, "{}: {}", case_name(&case), f.message);
            let p = compat::probe(&old, &new, std::slice::from_ref(&f));
            if p.contains("nothing to probe") || !p.contains(f.rule.id()) {
                continue; // not field-level (e.g. an enum without a carrying field)
            }
            assert!(
                p.contains("[MISREAD]") || p.contains("[DROPPED]") || p.contains("cannot decode"),
                "{}: {} but the probe shows no misread:\n{p}",
                case_name(&case),
                f.message
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} findings probed");
}

/// The converse: on every fixture that exits 0, the probe shows no value
/// misread, dropped or undecodable in either direction. Added fields, deleted
/// reserved fields and added enum values show as kept unknown.
#[test]
fn compatible_verdicts_never_contradict_the_probe() {
    let mut compatible = 0;
    for case in cases() {
        let (old, new) = (pool(&case.join("old")), pool(&case.join("new")));
        let f = compat::check(&old, &new, rule_set(&case));
        if compat::is_breaking(&f) {
            continue;
        }
        compatible += 1;
        let p = compat::probe(&old, &new, &f);
        for bad in ["[MISREAD]", "[DROPPED]", "cannot decode"] {
            assert!(!p.contains(bad), "{} exits 0 but the probe shows {bad}:\n{p}", case_name(&case));
        }
    }
    assert!(compatible >= 15, "only {compatible} compatible fixtures");
    let p = probe_case("additions_compatible");
    assert!(p.contains("unknown field(s) 6, 7 kept as raw bytes [kept as unknown]"), "{p}");
    let p = probe_case("field_type_compatible");
    assert!(p.contains("old reader: to_bytes=\"to_bytes-3\", color=2 (unknown) [kept as unknown]"), "{p}");
}

/// A message replaced by one of another name with the same fields: buf's
/// verdict stays (an error under buf's rule id), and the message no longer
/// claims that the bytes mean something else.
#[test]
fn renamed_message_types_are_explained_truthfully() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (side, pkg) in [("old", "a"), ("new", "b")] {
        let dir = tmp.path().join(side);
        std::fs::create_dir(&dir).expect("mkdir");
        let text = format!(
            "syntax = \"proto3\";\npackage t;\nimport \"{pkg}.proto\";\nmessage M {{ {pkg}.Inner inner = 1; }}\n"
        );
        std::fs::write(dir.join("t.proto"), text).expect("write");
        let inner = format!("syntax = \"proto3\";\npackage {pkg};\nmessage Inner {{ string s = 1; int32 n = 2; }}\n");
        std::fs::write(dir.join(format!("{pkg}.proto")), inner).expect("write");
    }
    let (old, new) = (pool(&tmp.path().join("old")), pool(&tmp.path().join("new")));
    let f = compat::check(&old, &new, RuleSet::Wire);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, Rule::FieldWireCompatibleType);
    assert!(f[0].message.contains("has the same field numbers and types"), "{}", f[0].message);
    assert!(!f[0].message.contains("different field meanings"), "{}", f[0].message);
    let p = compat::probe(&old, &new, &f);
    assert_eq!(p.matches("[round-trips unchanged]").count(), 2, "{p}");

    // Nested types that moved along are compared by shape too; a real
    // difference below the top level is still called one.
    for (nested_new, same) in [("int32", true), ("string", false)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (side, pkg, ty) in [("old", "a", "int32"), ("new", "b", nested_new)] {
            let dir = tmp.path().join(side);
            std::fs::create_dir(&dir).expect("mkdir");
            let text = format!(
                "syntax = \"proto3\";\npackage t;\nimport \"{pkg}.proto\";\nmessage M {{ {pkg}.Outer o = 1; }}\n"
            );
            std::fs::write(dir.join("t.proto"), text).expect("write");
            let types = format!(
                "syntax = \"proto3\";\npackage {pkg};\nmessage Outer {{ repeated Inner items = 1; }}\n\
                 message Inner {{ {ty} n = 1; }}\n"
            );
            std::fs::write(dir.join(format!("{pkg}.proto")), types).expect("write");
        }
        let (old, new) = (pool(&tmp.path().join("old")), pool(&tmp.path().join("new")));
        let f = compat::check(&old, &new, RuleSet::Wire);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].message.contains("has the same field numbers and types"), same, "{}", f[0].message);
    }
}

/// Under WIRE_JSON, int32 -> int64 breaks JSON (int64 is a quoted string), and
/// the message says that rather than blaming the bytes.
#[test]
fn json_only_type_changes_name_the_json_forms() {
    let text = compat::render_text(&findings(&case_dir("field_type_json"), RuleSet::WireJson));
    let line = text.lines().find(|l| l.contains("FIELD_WIRE_JSON_COMPATIBLE_TYPE") && l.contains("int32 to int64"));
    let line = line.unwrap_or_else(|| panic!("no int32 -> int64 finding:\n{text}"));
    assert!(line.contains("JSON writes int32 as a JSON number and int64 as a quoted decimal string"), "{line}");
    assert!(!line.contains("bytes mean different things"), "{line}");
}

#[test]
fn probe_reports_undecodable_type_changes() {
    let p = probe_case("field_type");
    assert!(p.contains("FIELD_WIRE_COMPATIBLE_TYPE t.M"), "{p}");
    assert!(p.contains("to_string"), "{p}");
    assert!(p.contains("cannot decode") || p.contains("MISREAD"), "{p}");
}

#[test]
fn never_panics_on_unrelated_schema_pairs() {
    // Every old side against every new side: messages change kinds, files change
    // packages, fields change everything at once.
    let pools: Vec<(String, DescriptorPool)> = cases()
        .into_iter()
        .flat_map(|c| {
            let name = case_name(&c);
            [(format!("{name}/old"), pool(&c.join("old"))), (format!("{name}/new"), pool(&c.join("new")))]
        })
        .collect();
    let empty = DescriptorPool::new();
    let mut total = 0;
    for (_, a) in &pools {
        for (_, b) in &pools {
            let f = compat::check(a, b, RuleSet::WireJson);
            total += f.len();
            let _ = compat::render_text(&f);
            let _ = compat::render_json(&f);
        }
        assert!(compat::check(a, &empty, RuleSet::Wire).is_empty());
        assert!(compat::check(&empty, a, RuleSet::Wire).is_empty());
    }
    assert!(total > 0);
    // The probe on a sample of mismatched pairs.
    for (i, (_, a)) in pools.iter().enumerate().step_by(3) {
        let (_, b) = &pools[(i * 7 + 5) % pools.len()];
        let f = compat::check(a, b, RuleSet::Wire);
        let _ = compat::probe(a, b, &f);
    }
}

#[test]
fn probe_writes_oneof_siblings_together() {
    let p = probe_case("oneof");
    // "out" left oneof "first" and "between" moved to "second": a new writer sets both,
    // an old reader keeps only the last member of "first" it sees.
    assert!(
        p.contains(
            "new writer out=\"out-2\" (field 2), between=\"between-3\" (field 3) -> old reader: \
             out=\"\", between=\"between-3\" [MISREAD]"
        ),
        "{p}"
    );
}

#[test]
fn probe_marks_deleted_fields_as_dropped() {
    let p = probe_case("field_moved_number");
    assert!(
        p.contains(
            "old writer email=\"email-3\" (field 3) -> new reader: email=\"\", unknown field(s) 3 kept \
             as raw bytes [DROPPED]"
        ),
        "{p}"
    );
}

#[test]
fn docs_worked_example_output_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("docs/examples/compat-renumber");
    let (code, out, err) = run(&example.join("old"), &example.join("new"), Format::Text, true);
    assert_eq!(code, 1, "{out}{err}");
    let doc = std::fs::read_to_string(root.join("docs/compat.md")).expect("docs/compat.md");
    let prefix = format!("{}/", root.display());
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.replace(&prefix, "");
        assert!(doc.contains(&line), "docs/compat.md is missing this output line:\n{line}");
    }
}

#[test]
fn descriptor_sets_without_source_info_give_unknown_locations() {
    let c = case_dir("field_type");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for side in ["old", "new"] {
        let schema = schema::load(&[c.join(side)]).expect("fixture compiles");
        let fds = prost_types::FileDescriptorSet {
            file: schema
                .pool()
                .file_descriptor_protos()
                .cloned()
                .map(|mut f| {
                    f.source_code_info = None;
                    f
                })
                .collect(),
        };
        let path = tmp.path().join(format!("{side}.pb"));
        std::fs::write(&path, fds.encode_to_vec()).expect("write pb");
        paths.push(path);
    }
    let (code, out, err) = run(&paths[0], &paths[1], Format::Text, true);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("<unknown>: error[FIELD_WIRE_COMPATIBLE_TYPE]").count(), 7, "{out}");
    assert!(out.contains("probe"), "{out}");
    let (_, json, _) = run(&paths[0], &paths[1], Format::Json, false);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert!(v["findings"][0]["location"].is_null(), "{json}");
}

#[test]
fn seed_schema_is_compatible_with_itself() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/users");
    let (code, out, err) = run(&seed, &seed, Format::Text, true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("compat: no incompatible changes"), "{out}");
    assert!(out.contains("nothing to probe"), "{out}");
}

#[test]
fn rule_set_and_format_parse_from_flags() {
    assert_eq!("wire".parse::<RuleSet>(), Ok(RuleSet::Wire));
    assert_eq!("wire-json".parse::<RuleSet>(), Ok(RuleSet::WireJson));
    assert!("file".parse::<RuleSet>().is_err());
    assert_eq!("json".parse::<Format>(), Ok(Format::Json));
    assert_eq!("text".parse::<Format>(), Ok(Format::Text));
    assert!("yaml".parse::<Format>().is_err());
    assert_eq!(RuleSet::default(), RuleSet::Wire);
}

#[test]
fn protoserve_findings_explain_the_misread() {
    let text = compat::render_text(&findings(&case_dir("enum_value_renumbered"), RuleSet::Wire));
    assert!(
        text.contains(
            "a.proto:7:19: error[PROTOSERVE_ENUM_VALUE_RENUMBERED]: enum value \"STATUS_ACTIVE\" on enum \
             \"t.Status\" was renumbered from 1 to 2: old writers send it as 1, which reads as \
             \"STATUS_BANNED\" for new readers; new writers send 2, which old readers take for \
             \"STATUS_BANNED\""
        ),
        "{text}"
    );
    let text = compat::render_text(&findings(&case_dir("field_swapped_numbers"), RuleSet::Wire));
    assert!(text.contains("swapped numbers (2 <-> 3)"), "{text}");
    assert!(text.contains("silently, because the wire types match"), "{text}");
    let text = compat::render_text(&findings(&case_dir("field_type_sign"), RuleSet::Wire));
    assert!(
        text.contains(
            "error[PROTOSERVE_FIELD_SIGN_CHANGED]: field 1 (\"a\") on message \"t.M\" changed type from \
             int32 to uint32: negative int32 values are misread as large unsigned numbers (old writer -1 -> \
             new reader 4294967295)"
        ),
        "{text}"
    );
    assert!(text.contains("compat: 6 errors, 0 warnings (breaking)"), "{text}");
    let text = compat::render_text(&findings(&case_dir("field_type_narrowing"), RuleSet::Wire));
    assert!(
        text.contains("int64 values outside the int32 range are truncated to their low 32 bits (old writer 5000000000 -> new reader 705032704)"),
        "{text}"
    );
}

#[test]
fn probe_shows_renumbered_enum_values_misread() {
    let p = probe_case("enum_value_renumbered");
    assert!(
        p.contains("old writer status=STATUS_ACTIVE (field 1) -> new reader: status=STATUS_BANNED [MISREAD]"),
        "{p}"
    );
    assert!(
        p.contains("new writer status=STATUS_ACTIVE (field 1) -> old reader: status=STATUS_BANNED [MISREAD]"),
        "{p}"
    );
}

/// Deterministic pseudo-random numbers (xorshift64), so the mutation test is
/// reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SCALARS: &[&str] = &[
    "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64", "bool",
    "string", "bytes", "float", "double",
];

/// A field declaration line: `[label] type name = number [options];`.
struct FieldLine {
    indent: String,
    label: String,
    ty: String,
    name: String,
    number: u32,
    options: String,
}

fn parse_field_line(line: &str) -> Option<FieldLine> {
    let body = line.trim().strip_suffix(';')?;
    let (decl, rest) = body.split_once(" = ")?;
    let words: Vec<&str> = decl.split_whitespace().collect();
    let keywords = ["option", "reserved", "rpc", "syntax", "package", "import", "extensions"];
    if words.first().is_none_or(|w| keywords.contains(w)) || decl.contains("map<") || decl.contains('{') {
        return None;
    }
    let (label, ty, name) = match words.as_slice() {
        [ty, name] => ("", *ty, *name),
        [label, ty, name] => (*label, *ty, *name),
        _ => return None,
    };
    let (number, options) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(FieldLine {
        indent: line[..line.len() - line.trim_start().len()].to_owned(),
        label: label.to_owned(),
        ty: ty.to_owned(),
        name: name.to_owned(),
        number: number.parse().ok()?,
        options: options.to_owned(),
    })
}

/// One random edit of a field line: another scalar type, another number, another
/// label, a rename, a deletion, or a deletion that reserves the number.
fn mutate_field(mut f: FieldLine, proto2: bool, rng: &mut Rng) -> String {
    match rng.below(6) {
        0 if SCALARS.contains(&f.ty.as_str()) => f.ty = rng.pick(SCALARS).to_owned(),
        0 | 1 => f.number += [1, 2, 50][rng.below(3)],
        2 => {
            let labels: &[&str] =
                if proto2 { &["optional", "repeated", "required"] } else { &["", "optional", "repeated"] };
            f.label = rng.pick(labels).to_owned();
            f.options.clear();
        }
        3 => f.name.push_str("_x"),
        4 => return String::new(),
        _ => return format!("{}reserved {};", f.indent, f.number),
    }
    let label = if f.label.is_empty() { String::new() } else { format!("{} ", f.label) };
    let options = if f.options.is_empty() { String::new() } else { format!(" {}", f.options) };
    format!("{}{label}{} {} = {}{options};", f.indent, f.ty, f.name, f.number)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let target = to.join(path.file_name().expect("file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Edits 1 to 3 random field lines in every `.proto` file directly under `dir`;
/// returns the new text, or `None` when nothing was edited.
fn mutate_protos(dir: &Path, rng: &mut Rng) -> Option<String> {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "proto") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read proto");
        let proto2 = text.contains("\"proto2\"");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let fields: Vec<usize> = (0..lines.len()).filter(|&i| parse_field_line(&lines[i]).is_some()).collect();
        for _ in 0..1 + rng.below(3) {
            if fields.is_empty() {
                break;
            }
            let i = fields[rng.below(fields.len())];
            if let Some(f) = parse_field_line(&lines[i]) {
                lines[i] = mutate_field(f, proto2, rng);
            }
        }
        let new_text = lines.join("\n") + "\n";
        std::fs::write(&path, &new_text).expect("write proto");
        if !fields.is_empty() {
            all.push_str(&new_text);
        }
    }
    (!all.is_empty()).then_some(all)
}

/// Random edits of every fixture's old schema (two rounds), checked against buf:
/// the same findings per buf rule, and no panic in the probe.
#[test]
fn buf_parity_on_random_mutations() {
    let buf = buf_binary();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0x5eed_c0de_1234_5678);
    let (mut compared, mut mismatches) = (0, Vec::new());
    for (case, round) in cases().into_iter().flat_map(|c| [(c.clone(), 0), (c, 1)]) {
        let name = format!("{}-{round}", case_name(&case));
        let dir = tmp.path().join(&name);
        copy_dir(&case.join("old"), &dir.join("old"));
        copy_dir(&case.join("old"), &dir.join("new"));
        let Some(new_text) = mutate_protos(&dir.join("new"), &mut rng) else {
            continue;
        };
        let (Ok(old), Ok(new)) = (schema::load(&[dir.join("old")]), schema::load(&[dir.join("new")])) else {
            continue; // the edit made the schema invalid (e.g. a duplicate number)
        };
        for (category, set) in [("WIRE", RuleSet::Wire), ("WIRE_JSON", RuleSet::WireJson)] {
            let theirs = buf_rules(&buf, &dir, category);
            let (old, new) = (old.pool_with_source_info(), new.pool_with_source_info());
            let findings = compat::check(&old, &new, set);
            let _ = compat::probe(&old, &new, &findings);
            let mut ours: BTreeMap<String, usize> = BTreeMap::new();
            for f in findings.into_iter().filter(|f| f.rule.is_buf()) {
                *ours.entry(f.rule.id().to_owned()).or_default() += 1;
            }
            compared += 1;
            if theirs != ours {
                mismatches
                    .push(format!("{name} {category}: buf {theirs:?} / protoserve {ours:?}\nnew schema:\n{new_text}"));
            }
        }
    }
    eprintln!("compared {compared} mutated schemas with buf");
    assert!(compared >= 100, "only {compared} mutated schemas compiled");
    assert!(mismatches.is_empty(), "verdicts differ from buf:\n{}", mismatches.join("\n"));
}
