//! `protoserve compat` as CI runs it: `--against` git references in temporary
//! repositories (parity with `buf breaking --against '.git#...'`), buf.yaml and
//! protoserve.yaml configuration, and the CI output formats.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{buf_binary, case_dir, case_name, cases, copy_dir, rule_set};
use protoserve::compat::RuleSet;

/// A temporary git repository with a committer identity and no global config.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo { dir: tempfile::tempdir().expect("tempdir") };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Replaces `proto/` with a copy of `from` (plus `proto/buf.yaml` when given).
    fn set_proto(&self, from: &Path, buf_yaml: Option<&str>) {
        let proto = self.path().join("proto");
        if proto.exists() {
            std::fs::remove_dir_all(&proto).expect("rm proto");
        }
        copy_dir(from, &proto);
        if let Some(y) = buf_yaml {
            self.write("proto/buf.yaml", y);
        }
    }

    fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    /// `protoserve ARGS` run from the repository root.
    fn compat(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
            .current_dir(self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .arg("compat")
            .args(args)
            .output()
            .expect("protoserve runs");
        split(out)
    }
}

fn split(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A repository whose `main` (also tagged `v1` and recorded as `origin/main`)
/// holds `case`'s old schema under `proto/`, and whose branch `feature` has one
/// more commit with the new schema, checked out.
fn repo_for(case: &str) -> Repo {
    let r = Repo::new();
    let c = case_dir(case);
    r.set_proto(&c.join("old"), None);
    r.commit("old");
    r.git(&["tag", "v1"]);
    let main = r.git(&["rev-parse", "HEAD"]);
    r.git(&["update-ref", "refs/remotes/origin/main", main.trim()]);
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.set_proto(&c.join("new"), None);
    r.commit("new");
    r
}

#[test]
fn against_accepts_every_reference_form() {
    let r = repo_for("field_moved_number");
    let abs_git = format!("{}/.git#branch=main,subdir=proto", r.path().display());
    let forms = [
        "main",
        "HEAD~1",
        "v1",
        "origin/main",
        ".git#branch=main,subdir=proto",
        ".git#tag=v1,subdir=proto",
        ".git#ref=HEAD~1,subdir=proto",
        abs_git.as_str(),
    ];
    for reference in forms {
        let (code, out, err) = r.compat(&["proto", "--against", reference]);
        assert_eq!(code, 1, "--against {reference}: {out}{err}");
        assert!(
            out.contains("proto/user.proto:10:18: error[PROTOSERVE_FIELD_MOVED_NUMBER]"),
            "--against {reference}: {out}"
        );
    }
    // A single .proto file resolves its siblings on both sides.
    let (code, out, err) = r.compat(&["proto/user.proto", "--against", "main"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("proto/user.proto:10:18: error[PROTOSERVE_FIELD_MOVED_NUMBER]"), "{out}");
    // Against itself: compatible.
    let (code, out, err) = r.compat(&["proto", "--against", "HEAD"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    // Nothing was checked out: the work tree still holds the new schema.
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    assert_eq!(r.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "feature");
}

#[test]
fn deleted_elements_point_into_the_reference() {
    let r = repo_for("field_delete");
    let (code, out, _) = r.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("main:proto/a.proto:6:3: error[FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED]"), "{out}");
    // CI formats attach locations to checked-out files only: the place in the
    // reference moves into the message.
    let (code, out, _) = r.compat(&["proto", "--against", "main", "--format", "github-actions"]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.contains("FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED")).expect("annotation");
    assert!(line.starts_with("::error title=FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED::"), "{line}");
    assert!(line.ends_with("(at main:proto/a.proto:6:3)"), "{line}");
    let (_, out, _) = r.compat(&["proto", "--against", "main", "--format", "sarif"]);
    let log: serde_json::Value = serde_json::from_str(&out).expect("SARIF");
    assert_sarif(&log);
    let result = &log["runs"][0]["results"][0];
    assert!(result.get("locations").is_none(), "{result}");
    assert!(result["message"]["text"].as_str().is_some_and(|t| t.ends_with("(at main:proto/a.proto:6:3)")));
}

/// A descriptor set as NEW: the file of the same path at REF is the old side.
#[test]
fn descriptor_sets_compare_against_their_committed_version() {
    use prost::Message as _;
    let r = Repo::new();
    let c = case_dir("field_moved_number");
    let write_set = |side: &str| {
        let schema = protoserve::schema::load(&[c.join(side)]).expect("fixture compiles");
        let fds = prost_types::FileDescriptorSet {
            file: schema.pool_with_source_info().file_descriptor_protos().cloned().collect(),
        };
        std::fs::create_dir_all(r.path().join("build")).expect("mkdir");
        std::fs::write(r.path().join("build/schema.binpb"), fds.encode_to_vec()).expect("write");
    };
    write_set("old");
    r.commit("old");
    write_set("new");
    let (code, out, err) = r.compat(&["build/schema.binpb", "--against", "HEAD"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("user.proto:10:18: error[PROTOSERVE_FIELD_MOVED_NUMBER]"), "{out}");
}

/// A single `.proto` file as NEW: its sibling imports resolve from its
/// directory, in the work tree and at the reference alike.
#[test]
fn single_file_against_a_reference_resolves_sibling_imports() {
    let r = Repo::new();
    r.write("proto/common.proto", "syntax = \"proto3\";\npackage t;\nmessage Money { int64 units = 1; }\n");
    r.write(
        "proto/order.proto",
        "syntax = \"proto3\";\npackage t;\nimport \"common.proto\";\nmessage Order { Money total = 1; }\n",
    );
    r.commit("old");
    r.write(
        "proto/order.proto",
        "syntax = \"proto3\";\npackage t;\nimport \"common.proto\";\nmessage Order { repeated Money total = 1; }\n",
    );
    let (code, out, err) = r.compat(&["proto/order.proto", "--against", "HEAD"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("proto/order.proto:4:17: error[FIELD_WIRE_COMPATIBLE_CARDINALITY]"), "{out}");
}

#[test]
fn against_errors_exit_2_and_are_json_with_format_json() {
    let r = repo_for("field_moved_number");
    for bad in ["no-such-ref", "--upload-pack=x", ".git#colour=red", "https://example.com/x.git#branch=main"] {
        let (code, out, err) = r.compat(&["proto", &format!("--against={bad}")]);
        assert_eq!(code, 2, "--against {bad}: {out}{err}");
        assert!(err.contains("cannot load the old schema"), "{err}");
    }
    let (code, _, err) = r.compat(&["proto", "--against", ".git#branch=main,subdir=nowhere"]);
    assert_eq!(code, 2);
    assert!(err.contains("has no .proto files"), "{err}");
    // Outside any repository, a name that is not a path is an input error.
    let plain = tempfile::tempdir().expect("tempdir");
    copy_dir(&case_dir("unchanged").join("new"), &plain.path().join("p"));
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .current_dir(plain.path())
        .args(["compat", "p", "--against", "main"])
        .output()
        .expect("runs");
    let (code, _, err) = split(out);
    assert_eq!(code, 2);
    assert!(err.contains("not in a git repository"), "{err}");

    // An editions file at the reference: refused, named by its place in REF.
    let ed = Repo::new();
    ed.write("proto/e.proto", "edition = \"2023\";\npackage t;\nmessage M { string s = 1; }\n");
    ed.commit("editions");
    ed.write("proto/e.proto", "syntax = \"proto3\";\npackage t;\nmessage M { string s = 1; }\n");
    let (code, _, err) = ed.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 2);
    assert!(err.contains("main:proto/e.proto:1:1: error: editions not supported yet"), "{err}");
    assert!(!err.contains("protoserve-compat-"), "temporary paths stay hidden: {err}");

    // A compile error in NEW, as JSON on stdout.
    r.write("proto/user.proto", "syntax = \"proto3\";\nmessage M {\n  strin x = 1;\n}\n");
    let (code, out, _) = r.compat(&["proto", "--against", "main", "--format", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON error document");
    assert_eq!(v["version"], 1);
    assert_eq!(v["error"]["side"], "new");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("user.proto:3:3")), "{out}");
    // Usage errors: both forms at once, or neither.
    let (code, _, _) = r.compat(&["a", "b", "--against", "main"]);
    assert_eq!(code, 2);
    let (code, _, _) = r.compat(&["proto"]);
    assert_eq!(code, 2);
}

/// How many findings buf reports per rule id, as `buf breaking proto
/// --against '.git#branch=main,subdir=proto'` run in the repository.
fn buf_counts(buf: &Path, r: &Repo) -> BTreeMap<String, usize> {
    let out = Command::new(buf)
        .current_dir(r.path())
        .args(["breaking", "proto", "--against", ".git#branch=main,subdir=proto", "--error-format", "json"])
        .output()
        .expect("buf runs");
    let code = out.status.code();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(code == Some(0) || code == Some(100), "buf: {code:?} {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let mut counts = BTreeMap::new();
    for l in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
        *counts.entry(v["type"].as_str().expect("type").to_owned()).or_default() += 1;
    }
    counts
}

fn our_counts(r: &Repo, reference: &str) -> (i32, BTreeMap<String, usize>) {
    let (code, out, err) = r.compat(&["proto", "--against", reference, "--format", "json"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    let mut counts = BTreeMap::new();
    for f in v["findings"].as_array().expect("findings") {
        if f["buf_rule"] == true {
            *counts.entry(f["rule"].as_str().expect("rule").to_owned()).or_default() += 1;
        }
    }
    (code, counts)
}

/// On every fixture committed to a repository (with a buf.yaml naming the
/// fixture's category, which both tools read), protoserve reports what
/// `buf breaking --against '.git#...'` reports, for both reference syntaxes.
#[test]
fn buf_parity_against_git_references() {
    let buf = buf_binary();
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for case in cases() {
        let category = match rule_set(&case) {
            RuleSet::Wire => "WIRE",
            RuleSet::WireJson => "WIRE_JSON",
        };
        let yaml = format!("version: v1\nbreaking:\n  use: [{category}]\n");
        let r = Repo::new();
        r.set_proto(&case.join("old"), Some(&yaml));
        r.commit("old");
        r.set_proto(&case.join("new"), Some(&yaml));
        let theirs = buf_counts(&buf, &r);
        for reference in [".git#branch=main,subdir=proto", "main"] {
            let (_, ours) = our_counts(&r, reference);
            compared += 1;
            if ours != theirs {
                mismatches.push(format!("{} --against {reference}: buf {theirs:?} / ours {ours:?}", case_name(&case)));
            }
        }
    }
    assert!(compared >= 60, "{compared}");
    assert!(mismatches.is_empty(), "verdicts differ from buf:\n{}", mismatches.join("\n"));
}

fn dirs_case(name: &str) -> (PathBuf, PathBuf) {
    let c = case_dir(name);
    (c.join("old"), c.join("new"))
}

/// Runs `compat OLD NEW --config FILE` with `yaml` as the config file.
fn with_config(case: &str, file_name: &str, yaml: &str, extra: &[&str]) -> (i32, String, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join(file_name);
    std::fs::write(&cfg, yaml).expect("write config");
    let (old, new) = dirs_case(case);
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .arg("compat")
        .arg(&old)
        .arg(&new)
        .arg("--config")
        .arg(&cfg)
        .args(extra)
        .output()
        .expect("runs");
    split(out)
}

#[test]
fn buf_yaml_breaking_keys_apply() {
    // use: WIRE_JSON adds the name rules.
    let (code, out, _) = with_config("field_name_json", "buf.yaml", "version: v1\nbreaking:\n  use: [WIRE]\n", &[]);
    assert!(!out.contains("FIELD_SAME_NAME"), "{out}");
    let wire_code = code;
    let (code, out, _) =
        with_config("field_name_json", "buf.yaml", "version: v1\nbreaking:\n  use: [WIRE_JSON]\n", &[]);
    assert!(out.contains("error[FIELD_SAME_NAME]"), "{out}");
    assert_eq!((wire_code, code), (0, 1), "{out}");
    // except removes a rule.
    let (code, out, _) = with_config(
        "field_delete",
        "buf.yaml",
        "version: v1\nbreaking:\n  use: [WIRE]\n  except: [FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED]\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no incompatible changes"), "{out}");
    // ignore drops a path for every rule; ignore_only for one rule.
    let (code, out, _) =
        with_config("field_delete", "buf.yaml", "version: v1\nbreaking:\n  use: [WIRE]\n  ignore: [a.proto]\n", &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = with_config(
        "field_delete",
        "buf.yaml",
        "version: v1\nbreaking:\n  use: [WIRE]\n  ignore_only:\n    FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED: [a.proto]\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = with_config(
        "field_delete",
        "buf.yaml",
        "version: v1\nbreaking:\n  use: [WIRE]\n  ignore_only:\n    FIELD_SAME_ONEOF: [a.proto]\n",
        &[],
    );
    assert_eq!(code, 1);
    // v1 and v2 define the categories as buf does: FIELD_SAME_DEFAULT is in v2's WIRE only.
    let (_, out, _) = with_config("default", "buf.yaml", "version: v1\nbreaking:\n  use: [WIRE]\n", &[]);
    assert!(!out.contains("FIELD_SAME_DEFAULT"), "{out}");
    let (_, out, _) = with_config("default", "buf.yaml", "version: v2\nbreaking:\n  use: [WIRE]\n", &[]);
    assert!(out.contains("error[FIELD_SAME_DEFAULT]"), "{out}");
    // --rules overrides the configured category.
    let (code, out, _) = with_config(
        "field_name_json",
        "buf.yaml",
        "version: v1\nbreaking:\n  use: [WIRE_JSON]\n",
        &["--rules", "wire"],
    );
    assert_eq!(code, 0, "{out}");
    // The default category (FILE) is checked as WIRE_JSON, with a note.
    let (code, out, err) = with_config("field_name_json", "buf.yaml", "version: v1\n", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("note: buf.yaml uses FILE"), "{err}");
    // Malformed configuration: exit 2.
    let (code, _, err) = with_config("unchanged", "buf.yaml", "version: v1\nbreaking:\n  use: WIRE\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot load the configuration"), "{err}");
}

/// A v2 buf.yaml at the repository root: the module holding NEW picks its own
/// breaking section, and ignore paths (relative to the buf.yaml, module path
/// included) apply to the module's files.
#[test]
fn buf_yaml_v2_modules_apply_to_their_schema() {
    let r = repo_for("field_name_json");
    let v2 =
        "version: v2\nmodules:\n  - path: proto\n    breaking:\n      use: [WIRE_JSON]\nbreaking:\n  use: [WIRE]\n";
    r.write("buf.yaml", v2);
    let (code, out, _) = r.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error[FIELD_SAME_NAME]"), "{out}");
    let ignored = "version: v2\nmodules:\n  - path: proto\nbreaking:\n  use: [WIRE_JSON]\n  ignore: [proto/a.proto]\n";
    r.write("buf.yaml", ignored);
    let (code, out, _) = r.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn ignore_unstable_packages_drops_alpha_packages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (side, ty) in [("old", "int32"), ("new", "string")] {
        let dir = tmp.path().join(side);
        std::fs::create_dir(&dir).expect("mkdir");
        let text = format!("syntax = \"proto3\";\npackage acme.v1alpha1;\nmessage M {{ {ty} x = 1; }}\n");
        std::fs::write(dir.join("m.proto"), text).expect("write");
    }
    let cfg = tmp.path().join("buf.yaml");
    let run = |yaml: &str| {
        std::fs::write(&cfg, yaml).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
            .arg("compat")
            .arg(tmp.path().join("old"))
            .arg(tmp.path().join("new"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("runs");
        split(out)
    };
    let (code, out, _) = run("version: v1\nbreaking:\n  use: [WIRE]\n");
    assert_eq!(code, 1, "{out}");
    let (code, out, _) = run("version: v1\nbreaking:\n  use: [WIRE]\n  ignore_unstable_packages: true\n");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn protoserve_yaml_downgrades_and_turns_off_rules() {
    let (code, out, _) = with_config(
        "field_type_widening",
        "protoserve.yaml",
        "compat:\n  severity:\n    PROTOSERVE_FIELD_WIDENED_TYPE: warning\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning[PROTOSERVE_FIELD_WIDENED_TYPE]"), "{out}");
    assert!(out.contains("compat: 0 errors, 5 warnings (not breaking)"), "{out}");
    let (code, out, _) = with_config(
        "field_type_widening",
        "protoserve.yaml",
        "compat:\n  severity:\n    PROTOSERVE_FIELD_WIDENED_TYPE: off\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no incompatible changes"), "{out}");
    let (code, out, _) = with_config("field_name_json", "protoserve.yaml", "compat:\n  rules: wire-json\n", &[]);
    assert_eq!(code, 1, "{out}");
    let (code, _, err) = with_config("unchanged", "protoserve.yaml", "compat:\n  severity:\n    NOPE: off\n", &[]);
    assert_eq!(code, 2, "{err}");
}

/// Without --config, the nearest buf.yaml and protoserve.yaml next to or
/// above NEW apply (up to the repository root).
#[test]
fn configuration_is_discovered_next_to_the_schema() {
    let r = repo_for("field_type_widening");
    let (code, _, _) = r.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 1);
    r.write("protoserve.yaml", "compat:\n  severity:\n    PROTOSERVE_FIELD_WIDENED_TYPE: warning\n");
    let (code, out, _) = r.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning[PROTOSERVE_FIELD_WIDENED_TYPE]"), "{out}");
    // A buf.yaml in the schema directory is nearer and wins.
    r.write("proto/buf.yaml", "version: v1\nbreaking:\n  use: [WIRE]\n");
    let (code, _, _) = r.compat(&["proto", "--against", "main"]);
    assert_eq!(code, 1);
}

#[test]
fn github_actions_format_annotates_each_finding() {
    let (old, new) = dirs_case("field_type_widening");
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .arg("compat")
        .arg(&old)
        .arg(&new)
        .args(["--format", "github-actions"])
        .output()
        .expect("runs");
    let (code, out, _) = split(out);
    assert_eq!(code, 1);
    let commands: Vec<&str> = out.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(commands.len(), 5, "{out}");
    for line in &commands {
        // ::error file=F,line=N,col=N,title=RULE::message
        let rest = line.strip_prefix("::error ").unwrap_or_else(|| panic!("not an error command: {line}"));
        let (props, message) = rest.split_once("::").expect("properties::message");
        let props: BTreeMap<&str, &str> = props.split(',').filter_map(|p| p.split_once('=')).collect();
        assert!(props["file"].ends_with("new/a.proto"), "{line}");
        assert!(props["line"].parse::<u32>().is_ok_and(|n| n >= 5), "{line}");
        assert_eq!(props["col"], "3", "{line}");
        assert_eq!(props["title"], "PROTOSERVE_FIELD_WIDENED_TYPE", "{line}");
        assert!(message.contains("changed type from"), "{line}");
        assert!(!message.contains('\n'));
    }
    assert!(out.ends_with("compat: 5 errors, 0 warnings (breaking)\n"), "{out}");
}

/// SARIF 2.1.0: every log validates against the OASIS JSON schema (the copy in
/// the `@microsoft/jest-sarif` npm package, validated with ajv by
/// `tests/tools/validate_sarif.js`), and is checked structurally for what the
/// schema leaves open (rule indexes, unique ids, locations).
#[test]
fn sarif_format_is_a_valid_sarif_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut checked = 0;
    for case in ["field_delete", "field_type_widening", "unchanged", "rpc"] {
        let (old, new) = dirs_case(case);
        let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
            .arg("compat")
            .arg(&old)
            .arg(&new)
            .args(["--format", "sarif"])
            .output()
            .expect("runs");
        let (code, out, err) = split(out);
        assert!(code == 0 || code == 1, "{err}");
        let log: serde_json::Value = serde_json::from_str(&out).expect("SARIF is JSON");
        assert_sarif(&log);
        let results = log["runs"][0]["results"].as_array().expect("results").len();
        assert_eq!(results > 0, code == 1, "{case}: {out}");
        checked += results;
        let file = tmp.path().join(format!("{case}.sarif"));
        std::fs::write(&file, &out).expect("write");
        files.push(file);
    }
    assert!(checked >= 8, "{checked}");
    let (ok, report) = validate_sarif(&files);
    assert!(ok, "not valid against the SARIF 2.1.0 schema:\n{report}");
    assert_eq!(report.matches("valid SARIF 2.1.0").count(), files.len(), "{report}");
    // The validator can fail: a result level SARIF does not define is refused.
    let mut bad: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    bad["runs"][0]["results"][0]["level"] = "fatal".into();
    let bad_file = tmp.path().join("bad.sarif");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let (ok, report) = validate_sarif(&[bad_file]);
    assert!(!ok && report.contains("/runs/0/results/0/level"), "{report}");
}

/// Runs the schema validator on `files`: (all valid, its report).
fn validate_sarif(files: &[PathBuf]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = root.join("node_modules/@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json");
    assert!(schema.exists(), "{} is missing: run scripts/test.sh, which runs npm ci", schema.display());
    let out =
        Command::new("node").arg(root.join("tests/tools/validate_sarif.js")).args(files).output().expect("node runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

fn assert_sarif(log: &serde_json::Value) {
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().is_some_and(|s| s.contains("sarif-2.1.0")));
    let runs = log["runs"].as_array().expect("runs is an array");
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "protoserve");
    let rules = driver["rules"].as_array().expect("driver.rules");
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().expect("rule id")).collect();
    let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "rule ids are unique");
    for r in rules {
        assert!(r["shortDescription"]["text"].as_str().is_some_and(|t| t.ends_with('.')), "{r}");
        let level = r["defaultConfiguration"]["level"].as_str().expect("level");
        assert!(["none", "note", "warning", "error"].contains(&level));
    }
    for res in runs[0]["results"].as_array().expect("results") {
        let id = res["ruleId"].as_str().expect("ruleId");
        let index = res["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(ids.get(index), Some(&id), "ruleIndex points at ruleId");
        assert!(["none", "note", "warning", "error"].contains(&res["level"].as_str().expect("level")));
        assert!(res["message"]["text"].as_str().is_some_and(|t| !t.is_empty()));
        // locations is optional (a place in a git reference is in the message).
        for loc in res["locations"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let phys = &loc["physicalLocation"];
            let uri = phys["artifactLocation"]["uri"].as_str().expect("uri");
            assert!(!uri.contains(' ') && uri.ends_with(".proto"), "{uri}");
            assert!(phys["region"]["startLine"].as_u64().is_some_and(|n| n >= 1));
            assert!(phys["region"]["startColumn"].as_u64().is_some_and(|n| n >= 1));
        }
        let allowed = ["ruleId", "ruleIndex", "level", "message", "locations"];
        assert!(res.as_object().expect("result object").keys().all(|k| allowed.contains(&k.as_str())));
    }
}
