//! The architecture's invariants, checked on the source tree (ARCHITECTURE.md
//! names the test holding each): no module cycles, only protocol adapters (and
//! the server) know HTTP, and exactly one function builds a gRPC status from an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::root;

/// Every `.rs` file under `src/`, with its code only (comment lines dropped).
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = root().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code: String =
                text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
            (p.strip_prefix(&src).unwrap().to_path_buf(), code)
        })
        .collect()
}

/// `a/b.rs` -> ["a", "b"]; `a/mod.rs` -> ["a"]; `lib.rs` -> [].
fn module_path(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The identifiers following `prefix` in `code` (`crate::` -> `call`, `error`, ...).
fn idents_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    code.match_indices(prefix).filter_map(move |(i, _)| {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &code[i + prefix.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        (end > 0).then(|| rest[..end].to_owned())
    })
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|x| x == m).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_module_cycles_between_top_level_modules_or_within_one() {
    let files = sources();
    let top: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_path(p).first().cloned()).collect();
    // Top level: `crate::x` from a file of module `y` is an edge y -> x.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Within each directory module: `super::x` / `crate::dir::x` between its children.
    let mut inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, code) in &files {
        let m = module_path(path);
        let Some(first) = m.first() else { continue };
        for target in idents_after(code, "crate::").filter(|t| top.contains(t) && t != first) {
            graph.entry(first.clone()).or_default().insert(target);
        }
        if m.len() == 2 {
            let children: BTreeSet<String> = files
                .iter()
                .map(|(p, _)| module_path(p))
                .filter(|q| q.len() == 2 && q[0] == *first)
                .map(|q| q[1].clone())
                .collect();
            let prefix = format!("crate::{first}::");
            for target in idents_after(code, "super::").chain(idents_after(code, &prefix)) {
                if children.contains(&target) && target != m[1] {
                    inner.entry(first.clone()).or_default().entry(m[1].clone()).or_default().insert(target);
                }
            }
        }
    }
    assert!(graph.len() > 5, "the scan found the modules: {graph:?}");
    if let Some(c) = find_cycle(&graph) {
        panic!("module cycle: {}", c.join(" -> "));
    }
    for (dir, g) in &inner {
        if let Some(c) = find_cycle(g) {
            panic!("module cycle inside {dir}: {}", c.join(" -> "));
        }
    }
}

#[test]
fn only_protocol_adapters_and_the_server_know_http() {
    let mut offenders = Vec::new();
    for (path, code) in sources() {
        let m = module_path(&path);
        if matches!(m.first().map(String::as_str), Some("protocol" | "server")) {
            continue;
        }
        for needle in ["http::", "hyper::", "hyper_util::", "http_body"] {
            if idents_after(&code, needle).next().is_some() {
                offenders.push(format!("{} uses {needle}", path.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn exactly_one_function_builds_statuses_from_errors() {
    const CONSTRUCTORS: &[&str] = &[
        "new",
        "with_details",
        "with_metadata",
        "with_details_and_metadata",
        "from_error",
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    let mut offenders = Vec::new();
    let mut in_error = 0;
    for (path, code) in sources() {
        let built: Vec<String> =
            idents_after(&code, "Status::").filter(|c| CONSTRUCTORS.contains(&c.as_str())).collect();
        if path == Path::new("error.rs") {
            in_error = built.len();
        } else if !built.is_empty() {
            offenders.push(format!("{}: Status::{}", path.display(), built.join(", Status::")));
        }
    }
    assert!(offenders.is_empty(), "statuses built outside error.rs: {offenders:#?}");
    assert!(in_error > 0, "error.rs builds them");
}
