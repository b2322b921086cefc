//! Reading a schema from a git revision without checking it out: the `git`
//! binary's plumbing (`rev-parse`, `ls-tree`, `cat-file --batch`) lists and reads
//! the blobs under the schema root, which are written to a temporary directory
//! and compiled like any other directory. The work tree and index are never
//! touched.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Component, Path};
use std::process::{Command, Stdio};

/// A schema root inside a git revision.
#[derive(Debug)]
pub(super) struct Source {
    /// How git finds the repository: `-C <dir>` or `--git-dir=<dir>`.
    repo: Vec<OsString>,
    /// The resolved commit id.
    commit: String,
    /// The schema root in the tree, `/`-separated, `""` for the whole tree: a
    /// directory, or a single `.proto` / descriptor set file.
    pub(super) root: String,
    /// What reports print before the file names of this side: the reference as given.
    pub(super) label: String,
}

/// True for buf's git input syntax: `<path>.git` optionally followed by
/// `#branch=..,tag=..,ref=..,subdir=..`.
pub(super) fn is_buf_input(s: &str) -> bool {
    let path = s.split_once('#').map_or(s, |(p, _)| p);
    path.ends_with(".git")
}

impl Source {
    /// A revision (`main`, `HEAD~1`, a tag, `origin/main`) of the repository
    /// around `new`; the schema root is where `new` is in that repository.
    pub(super) fn revision(rev: &str, new: &Path) -> Result<Source, String> {
        let (dir, tail) = if new.is_dir() {
            (new.to_path_buf(), None)
        } else {
            let parent = new.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (parent.to_path_buf(), new.file_name().map(|n| n.to_string_lossy().into_owned()))
        };
        let repo = vec![OsString::from("-C"), dir.clone().into_os_string()];
        let top = run_git(&repo, &["rev-parse", "--show-toplevel"]).map_err(|e| {
            format!(
                "'{rev}' is not a path, so it must be a git reference, but '{}' is not in a git repository ({e})",
                new.display()
            )
        })?;
        let top = String::from_utf8_lossy(&top).trim_end_matches(['\n', '\r']).to_owned();
        let commit = resolve(&repo, rev)?;
        let abs = dir.canonicalize().map_err(|e| format!("cannot resolve '{}': {e}", dir.display()))?;
        let top = Path::new(&top).canonicalize().map_err(|e| format!("cannot resolve the repository root: {e}"))?;
        let rel = abs.strip_prefix(&top).map_err(|_| format!("'{}' is outside the repository", dir.display()))?;
        let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        parts.extend(tail);
        Ok(Source { repo, commit, root: parts.join("/"), label: rev.to_owned() })
    }

    /// buf's input syntax: `<path>.git#branch=main,subdir=proto` (also `tag=`,
    /// `ref=`; `depth=` and `recurse_submodules=` are accepted and ignored).
    /// Only local repositories: fetch first and name the remote-tracking branch.
    pub(super) fn buf_input(input: &str, new: &Path) -> Result<Source, String> {
        let BufInput { path, rev, subdir } = parse_buf_input(input)?;
        let mut git_dir = OsString::from("--git-dir=");
        git_dir.push(if path.is_empty() { ".git" } else { path.as_str() });
        let repo = vec![git_dir];
        let commit = resolve(&repo, &rev)?;
        let mut root = subdir;
        if !new.is_dir()
            && let Some(name) = new.file_name()
        {
            if !root.is_empty() {
                root.push('/');
            }
            root.push_str(&name.to_string_lossy());
        }
        Ok(Source { repo, commit, root, label: input.to_owned() })
    }

    /// Writes the `.proto` files under the root (a `.proto` root: its
    /// directory's; a descriptor set root: the file itself) at this commit into
    /// a new temporary directory, at their paths in the tree.
    pub(super) fn materialize(&self) -> Result<tempfile::TempDir, String> {
        // A single .proto file needs its directory: its siblings resolve its imports.
        let list_root = match self.root.strip_suffix(".proto") {
            Some(_) => self.root.rsplit_once('/').map_or("", |(dir, _)| dir),
            None => self.root.as_str(),
        };
        let mut args: Vec<&str> = vec!["ls-tree", "-r", "-z", "--full-tree", &self.commit];
        if !list_root.is_empty() {
            args.extend(["--", list_root]);
        }
        let listing = run_git(&self.repo, &args)?;
        let mut blobs: Vec<(String, String)> = Vec::new();
        for entry in listing.split(|&b| b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else { continue };
            let mut meta = meta.split(' ');
            let (Some(mode), Some(kind), Some(id)) = (meta.next(), meta.next(), meta.next()) else { continue };
            // Blobs only: no symlinks (120000), no submodules (commits).
            if kind != "blob" || mode == "120000" {
                continue;
            }
            if path.ends_with(".proto") || path == self.root {
                blobs.push((id.to_owned(), path.to_owned()));
            }
        }
        if blobs.is_empty() {
            let place =
                if self.root.is_empty() { "the repository root".to_owned() } else { format!("'{}'", self.root) };
            return Err(format!("{} has no .proto files at {place}", self.label));
        }
        let dir = tempfile::Builder::new()
            .prefix("protoserve-compat-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let contents = cat_blobs(&self.repo, blobs.iter().map(|(id, _)| id.as_str()))?;
        if contents.len() != blobs.len() {
            return Err(format!("git returned {} of {} files", contents.len(), blobs.len()));
        }
        for ((_, path), bytes) in blobs.iter().zip(contents) {
            let rel = Path::new(path);
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(format!("refusing the tree path '{path}'"));
            }
            let target = dir.path().join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot write {}: {e}", parent.display()))?;
            }
            std::fs::write(&target, bytes).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        }
        Ok(dir)
    }
}

/// buf's git input, parsed.
#[derive(Debug, PartialEq, Eq)]
struct BufInput {
    /// The repository (its `.git` directory, or a bare repository).
    path: String,
    rev: String,
    subdir: String,
}

fn parse_buf_input(input: &str) -> Result<BufInput, String> {
    let (path, params) = input.split_once('#').unwrap_or((input, ""));
    if path.contains("://") || path.starts_with("git@") {
        return Err(format!(
            "remote repositories are not read ('{path}'); fetch and compare against a local \
             reference such as origin/main"
        ));
    }
    let (mut rev, mut subdir) = (None, String::new());
    for kv in params.split(',').filter(|kv| !kv.is_empty()) {
        let (key, value) = kv.split_once('=').ok_or_else(|| format!("'{kv}' is not key=value"))?;
        match key {
            "branch" | "ref" => rev = Some(value.to_owned()),
            "tag" => rev = Some(format!("refs/tags/{value}")),
            "subdir" => subdir = value.trim_matches('/').to_owned(),
            "depth" | "recurse_submodules" => {}
            other => {
                return Err(format!("unknown git input option '{other}' (expected branch, tag, ref, subdir)"));
            }
        }
    }
    let rev = rev.unwrap_or_else(|| "HEAD".to_owned());
    Ok(BufInput { path: path.to_owned(), rev, subdir })
}

/// The commit a revision names; revisions that look like options are refused.
fn resolve(repo: &[OsString], rev: &str) -> Result<String, String> {
    if rev.starts_with('-') || rev.is_empty() {
        return Err(format!("'{rev}' is not a git reference"));
    }
    let spec = format!("{rev}^{{commit}}");
    let out = run_git(repo, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])
        .map_err(|_| format!("'{rev}' is neither a path nor a git reference of the repository"))?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Runs git with `repo`'s location arguments; stdout on success, stderr as the error.
fn run_git(repo: &[OsString], args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .args(repo)
        .arg("--literal-pathspecs")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// The contents of the given blobs, in order, through one `git cat-file --batch`.
fn cat_blobs<'a>(repo: &[OsString], ids: impl Iterator<Item = &'a str>) -> Result<Vec<Vec<u8>>, String> {
    let request: String = ids.map(|id| format!("{id}\n")).collect();
    let mut child = Command::new("git")
        .args(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("git cat-file has no stdin")?;
    // Written from another thread: git answers while it reads, and both pipes are bounded.
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
    let mut stdout = Vec::new();
    let read = child.stdout.take().ok_or("git cat-file has no stdout")?.read_to_end(&mut stdout);
    let status = child.wait().map_err(|e| format!("git cat-file: {e}"))?;
    let wrote = writer.join().map_err(|_| "git cat-file: writer failed".to_owned())?;
    read.map_err(|e| format!("git cat-file: {e}"))?;
    wrote.map_err(|e| format!("git cat-file: {e}"))?;
    if !status.success() {
        return Err(format!("git cat-file failed ({status})"));
    }
    parse_batch(&stdout)
}

/// Parses `cat-file --batch` output: `<id> <type> <size>\n<bytes>\n` per object.
fn parse_batch(mut out: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut blobs = Vec::new();
    while !out.is_empty() {
        let nl = out.iter().position(|&b| b == b'\n').ok_or("truncated git cat-file header")?;
        let header = String::from_utf8_lossy(&out[..nl]).into_owned();
        let size: usize = header
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unexpected git cat-file header '{header}'"))?;
        let body = nl + 1;
        let end = body.checked_add(size).filter(|&e| e < out.len()).ok_or("truncated git cat-file body")?;
        blobs.push(out[body..end].to_vec());
        out = &out[end + 1..];
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buf_inputs_are_recognised() {
        assert!(is_buf_input(".git#branch=main,subdir=proto"));
        assert!(is_buf_input("../repo/.git"));
        assert!(is_buf_input("x.git#tag=v1"));
        assert!(!is_buf_input("main"));
        assert!(!is_buf_input("origin/main"));
        assert!(!is_buf_input("HEAD~1"));
    }

    #[test]
    fn buf_input_options_parse() {
        let b = parse_buf_input(".git#branch=main,subdir=proto/").unwrap();
        assert_eq!(b, BufInput { path: ".git".into(), rev: "main".into(), subdir: "proto".into() });
        assert_eq!(parse_buf_input("r.git#tag=v1,depth=1").unwrap().rev, "refs/tags/v1");
        assert_eq!(parse_buf_input(".git").unwrap().rev, "HEAD");
        assert!(parse_buf_input(".git#colour=red").is_err());
        assert!(parse_buf_input(".git#branch").is_err());
        assert!(parse_buf_input("https://github.com/x/y.git#branch=main").is_err());
    }

    /// Deterministic pseudo-random inputs (xorshift64): the parsers of user
    /// text and of git's output return errors, never panic.
    #[test]
    fn parsers_never_panic_on_random_input() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[u8] = b"#=,./ab-_~^:0123456789 \nblobgit\xff";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let _ = parse_batch(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_buf_input(&text);
            let _ = is_buf_input(&text);
        }
    }

    #[test]
    fn batch_output_parses_and_rejects_truncation() {
        let out = b"abc blob 3\nxyz\ndef blob 0\n\n";
        assert_eq!(parse_batch(out).unwrap(), vec![b"xyz".to_vec(), Vec::new()]);
        assert!(parse_batch(b"abc blob 5\nxy\n").is_err());
        assert!(parse_batch(b"abc missing\n").is_err());
        assert!(parse_batch(b"abc blob 18446744073709551615\n").is_err());
    }
}
