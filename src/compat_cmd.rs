//! The `protoserve compat` command on top of the pure [`crate::compat`] checker:
//! reads both schemas (directory, `.proto` file or descriptor set), runs the
//! check, renders the report and decides the exit code (0 compatible, 1
//! breaking, 2 usage or input errors). All file I/O and printing of the
//! command live here.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::compat::{self, Finding, Format, Policy, RuleSet};
use crate::schema::{self, Schema, SchemaError};

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

/// Loads both sides, checks, writes the report to `out`; returns the exit code
/// (0: nothing breaking, 1: at least one error finding, 2: a side could not be
/// loaded or compiled, editions files included; the error goes to `err`).
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let old = match load_side(&opts.old) {
        Ok(s) => s,
        Err(e) => return load_failed("old", &opts.old, &e, err),
    };
    let new = match load_side(&opts.new) {
        Ok(s) => s,
        Err(e) => return load_failed("new", &opts.new, &e, err),
    };
    let findings: Vec<Finding> = compat::check_with(old.pool(), new.pool(), &Policy::new(opts.rules))
        .into_iter()
        .map(|l| {
            let root = if l.in_old { &opts.old } else { &opts.new };
            let mut f = l.finding;
            if let Some(loc) = &mut f.location {
                loc.file = display_path(root, &loc.file);
            }
            f
        })
        .collect();
    let probe = opts.probe.then(|| compat::probe(old.pool(), new.pool(), &findings));
    let report = compat::render(&findings, opts.format, probe.as_deref());
    if let Err(e) = out.write_all(report.as_bytes()) {
        let _ = writeln!(err, "error: cannot write the report: {e}");
        return 2;
    }
    i32::from(compat::is_breaking(&findings))
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
