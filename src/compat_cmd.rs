//! The `protoserve compat` command on top of the pure [`crate::compat`] checker:
//! reads both schemas (a directory, a `.proto` file, a descriptor set, or a git
//! reference read without checking it out), reads the configuration (`buf.yaml`'s
//! `breaking` section, `protoserve.yaml`), runs the check, renders the report
//! and decides the exit code (0 compatible, 1 breaking, 2 usage or input errors).
//! All file I/O, git and printing of the command live here and in `git` and
//! `config`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::compat::{self, Finding, Format};
use crate::schema::{self, Schema, SchemaError};

mod config;
mod git;

/// Arguments of `protoserve compat`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The new schema: a directory of protos, a `.proto` file, or a `.binpb`/`.pb` FileDescriptorSet.
    pub new: PathBuf,
    /// What to compare it against.
    pub against: Against,
    /// `--rules`: overrides the rule set that configuration picks.
    pub rules: Option<compat::RuleSet>,
    /// `--config`: a `buf.yaml` or `protoserve.yaml` to use instead of looking
    /// for one next to (or above) `new`.
    pub config: Option<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Also run the encode/decode probe for field-level findings.
    pub probe: bool,
}

/// The old side of the comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Against {
    /// `compat OLD NEW`: a directory, `.proto` file or descriptor set.
    Path(PathBuf),
    /// `compat NEW --against REF`: an existing path as above; else buf's
    /// `<repo>.git#branch=..,tag=..,ref=..,subdir=..` input; else a git
    /// revision (`main`, `HEAD~1`, a tag, `origin/main`) of the repository around NEW.
    Ref(String),
}

/// A loaded side and how to show its file names to the user.
struct Side {
    schema: Schema,
    /// Prefix turning a compiler file name into what the report prints.
    display: Display,
    /// Keeps a git side's files alive until the check is done.
    _files: Option<tempfile::TempDir>,
}

enum Display {
    /// Files of a directory or of a `.proto` file's directory on disk.
    Disk(PathBuf),
    /// Files of a git revision: `REV:dir/file`.
    Git { label: String, dir: String },
    /// A descriptor set: the compiler name as it is.
    Plain,
}

impl Display {
    fn show(&self, file: &str) -> String {
        match self {
            Display::Disk(root) => display_path(root, file),
            Display::Git { label, dir } if dir.is_empty() => format!("{label}:{file}"),
            Display::Git { label, dir } => format!("{label}:{dir}/{file}"),
            Display::Plain => file.to_owned(),
        }
    }
}

/// An input that could not be read or compiled (exit code 2).
#[derive(Debug)]
struct InputError {
    /// `old`, `new` or `config`.
    side: &'static str,
    /// The input as given.
    input: String,
    /// What went wrong (compiler errors as `file:line:col`).
    message: String,
}

/// Loads both sides and the configuration, checks, writes the report to `out`
/// (notes and errors to `err`); returns the exit code: 0 nothing breaking, 1 at
/// least one error finding, 2 an input or the configuration could not be read.
/// With `--format json`, input errors are a JSON document on `out` too.
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match check(opts, err) {
        Ok((findings, probe)) => {
            let report = compat::render(&findings, opts.format, probe.as_deref());
            if let Err(e) = out.write_all(report.as_bytes()) {
                let _ = writeln!(err, "error: cannot write the report: {e}");
                return 2;
            }
            i32::from(compat::is_breaking(&findings))
        }
        Err(e) => {
            let what = if e.side == "config" { "configuration".to_owned() } else { format!("{} schema", e.side) };
            let _ = writeln!(err, "error: cannot load the {what} '{}':", e.input);
            let _ = writeln!(err, "{}", e.message);
            if opts.format == Format::Json {
                let doc = serde_json::json!({
                    "version": 1,
                    "error": { "side": e.side, "input": e.input, "message": e.message },
                });
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            2
        }
    }
}

type Checked = (Vec<Finding>, Option<String>);

fn check(opts: &Options, err: &mut dyn Write) -> Result<Checked, InputError> {
    let new_err = |message: String| InputError { side: "new", input: opts.new.display().to_string(), message };
    let new = load_path(&opts.new).map_err(|e| new_err(e.render()))?;
    let old = match &opts.against {
        Against::Path(p) => {
            load_path(p).map_err(|e| InputError { side: "old", input: p.display().to_string(), message: e.render() })?
        }
        Against::Ref(r) => load_ref(r, &opts.new)?,
    };
    let (policy, notes) = config::policy(&opts.new, opts.config.as_deref(), opts.rules)
        .map_err(|(file, message)| InputError { side: "config", input: file.display().to_string(), message })?;
    for n in notes {
        let _ = writeln!(err, "note: {n}");
    }
    let (old_info, new_info) = (|f: &str| old.schema.source_info(f), |f: &str| new.schema.source_info(f));
    let located = compat::check_sourced((old.schema.pool(), &old_info), (new.schema.pool(), &new_info), &policy);
    let mut in_git_ref = Vec::with_capacity(located.len());
    let mut findings: Vec<Finding> = located
        .into_iter()
        .map(|l| {
            let side = if l.in_old { &old } else { &new };
            in_git_ref.push(l.in_old && matches!(side.display, Display::Git { .. }));
            let mut f = l.finding;
            if let Some(loc) = &mut f.location {
                loc.file = side.display.show(&loc.file);
            }
            f
        })
        .collect();
    let probe = opts.probe.then(|| compat::probe(old.schema.pool(), new.schema.pool(), &findings));
    // Annotations and code scanning attach locations to files of the checkout;
    // a place in the git reference goes into the message instead.
    if matches!(opts.format, Format::GithubActions | Format::Sarif) {
        for (f, _) in findings.iter_mut().zip(in_git_ref).filter(|(_, in_ref)| *in_ref) {
            if let Some(loc) = f.location.take() {
                f.message = format!("{} (at {}:{}:{})", f.message, loc.file, loc.line, loc.column);
            }
        }
    }
    Ok((findings, probe))
}

fn load_path(path: &Path) -> Result<Side, SchemaError> {
    let schema = load_side(path)?;
    let display = if is_descriptor_set(path) { Display::Plain } else { Display::Disk(path.to_path_buf()) };
    Ok(Side { schema, display, _files: None })
}

/// `--against REF`: an existing path, buf's `.git#...` input, or a revision of
/// the repository around `new`.
fn load_ref(reference: &str, new: &Path) -> Result<Side, InputError> {
    let fail = |message: String| InputError { side: "old", input: reference.to_owned(), message };
    let path = Path::new(reference);
    if path.exists() {
        return load_path(path).map_err(|e| fail(e.render()));
    }
    let source = if git::is_buf_input(reference) {
        git::Source::buf_input(reference, new)
    } else {
        git::Source::revision(reference, new)
    }
    .map_err(fail)?;
    let files = source.materialize().map_err(fail)?;
    let root = files.path().join(&source.root);
    // Errors that name a file by its temporary path name it as REF:path instead.
    let tmp_prefix = format!("{}/", files.path().display());
    let schema = load_side(&root).map_err(|e| fail(e.render().replace(&tmp_prefix, &format!("{}:", source.label))))?;
    let display = if is_descriptor_set(&root) {
        Display::Plain
    } else {
        let dir = if root.is_dir() { source.root.clone() } else { parent_of(&source.root) };
        Display::Git { label: source.label, dir }
    };
    Ok(Side { schema, display, _files: Some(files) })
}

fn parent_of(rel: &str) -> String {
    rel.rsplit_once('/').map(|(d, _)| d.to_owned()).unwrap_or_default()
}

fn is_descriptor_set(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "binpb" || e == "pb")
}

/// Loads one side: a FileDescriptorSet by extension, else a proto dir or file.
fn load_side(path: &Path) -> Result<Schema, SchemaError> {
    if is_descriptor_set(path) && path.is_file() {
        schema::load_descriptor_set(path)
    } else {
        schema::load(&[path.to_path_buf()])
    }
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
