//! Finding and reading `.proto` files: which files under the roots are served,
//! and a protox [`FileResolver`] that reads them (and imports) from disk the way
//! a user expects: regular files only, with a size limit, a UTF-8 BOM accepted,
//! editions refused with a location, and every text kept for diagnostics.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use globset::{Glob, GlobSet, GlobSetBuilder};
use protox::file::{File, FileResolver};

use super::SchemaError;
use super::diagnostic::{Problem, SourceText};

/// The largest `.proto` file read (protox's own limit is 2 GiB; a schema file
/// anywhere near this is a mistake such as a link to `/dev/zero`).
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Folder names never walked into under a root (they hold other tools' protos:
/// npm packages, cargo build output).
pub const SKIPPED_DIRS: &[&str] = &["node_modules", "target"];

/// The user's `--exclude` patterns, compiled.
#[derive(Debug, Default, Clone)]
pub(crate) struct Excludes {
    set: Option<GlobSet>,
}

impl Excludes {
    pub(crate) fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p.trim_end_matches('/')).map_err(|e| format!("--exclude '{p}': {e}"))?;
            b.add(glob);
        }
        Ok(Self { set: Some(b.build().map_err(|e| e.to_string())?) })
    }

    /// True when `rel` (a path relative to its root, `/`-separated) or its last
    /// component matches a pattern.
    fn matches(&self, rel: &str) -> bool {
        let Some(set) = &self.set else { return false };
        let name = rel.rsplit('/').next().unwrap_or(rel);
        set.is_match(rel) || set.is_match(name)
    }
}

/// A file to compile: its name for the compiler and where it was found.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
}

/// Every `.proto` file under `dir`, skipping hidden entries, [`SKIPPED_DIRS`] and
/// excluded paths; names are relative to `dir` with `/` separators.
pub(crate) fn walk(dir: &Path, excludes: &Excludes, out: &mut Vec<Found>) -> Result<(), SchemaError> {
    walk_in(dir, "", excludes, out)
}

fn walk_in(dir: &Path, prefix: &str, excludes: &Excludes, out: &mut Vec<Found>) -> Result<(), SchemaError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| SchemaError::Io { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            if Path::new(&os_name).extension().is_some_and(|e| e == "proto") {
                return Err(SchemaError::NotUtf8Name { path });
            }
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") };
        if excludes.matches(&rel) {
            continue;
        }
        let ty = entry.file_type().map_err(|source| SchemaError::Io { path: path.clone(), source })?;
        if ty.is_dir() {
            if !SKIPPED_DIRS.contains(&name) {
                walk_in(&path, &rel, excludes, out)?;
            }
        } else if name.ends_with(".proto") {
            out.push(Found { name: rel, path });
        }
    }
    Ok(())
}

/// The path to show for `name` found under include root `dir`: the root as the
/// user gave it, joined with the name (no `./` for the current directory).
pub(crate) fn display_path(dir: &Path, name: &str) -> String {
    if dir.as_os_str().is_empty() || dir == Path::new(".") {
        name.to_owned()
    } else {
        dir.join(name).display().to_string()
    }
}

/// What a file looked like when it was read, to notice a write racing the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) len: u64,
    pub(crate) modified: Option<SystemTime>,
}

impl Stamp {
    pub(crate) fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp { len: m.len(), modified: m.modified().ok() })
    }
}

/// What the resolver learned while the compiler ran.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Text of every file read from disk, by compiler name.
    pub(crate) texts: HashMap<String, SourceText>,
    /// Path and stamp of every file read from disk.
    pub(crate) stamps: Vec<(String, PathBuf, Stamp)>,
    /// A failure that is ours to report (the compiler only sees "stop").
    pub(crate) failure: Option<SchemaError>,
}

/// Reads files by name from the include directories, first match wins.
pub(crate) struct DiskResolver {
    includes: Vec<PathBuf>,
    reads: Rc<RefCell<Reads>>,
}

impl DiskResolver {
    pub(crate) fn new(includes: Vec<PathBuf>, reads: Rc<RefCell<Reads>>) -> Self {
        Self { includes, reads }
    }

    fn fail(&self, e: SchemaError) -> protox::Error {
        let mut reads = self.reads.borrow_mut();
        let msg = e.to_string();
        reads.failure.get_or_insert(e);
        protox::Error::new(msg)
    }

    fn read(&self, name: &str, path: &Path, display: String) -> Result<File, protox::Error> {
        let before = Stamp::of(path);
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes));
        if let Err(source) = read {
            return Err(self.fail(SchemaError::Io { path: path.to_path_buf(), source }));
        }
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(self.fail(SchemaError::TooLarge { path: path.to_path_buf(), limit: MAX_FILE_SIZE }));
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let src = SourceText { display, text: String::from_utf8_lossy(e.as_bytes()).into_owned() };
                // The lossy text has the same bytes up to the first invalid one.
                let p = Problem::new("file is not valid UTF-8")
                    .at(&src, at, 1)
                    .with_help("save the file as UTF-8 (protobuf sources must be UTF-8)");
                return Err(self.fail(SchemaError::Invalid { problems: vec![p] }));
            }
        };
        // A UTF-8 byte order mark is not part of the text (buf and protoc accept it).
        let text = match text.strip_prefix('\u{FEFF}') {
            Some(rest) => rest.to_owned(),
            None => text,
        };
        let src = SourceText { display, text };
        if let Some(offset) = edition_declaration(&src.text) {
            let p = Problem::new("editions not supported yet")
                .at(&src, offset, "edition".len())
                .with_help("protox 0.10 compiles proto2 and proto3 only; use `syntax = \"proto3\";` for now");
            return Err(self.fail(SchemaError::Invalid { problems: vec![p] }));
        }
        let parsed = File::from_source(name, &src.text);
        let mut reads = self.reads.borrow_mut();
        if let Some(stamp) = before {
            reads.stamps.push((name.to_owned(), path.to_path_buf(), stamp));
        }
        reads.texts.insert(name.to_owned(), src);
        parsed
    }
}

impl FileResolver for DiskResolver {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.includes.iter().find_map(|inc| path.strip_prefix(inc).ok().and_then(file_name))
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if file_name(Path::new(name)).as_deref() != Some(name) {
            // `..`, absolute paths and the like never leave the include roots.
            return Err(protox::Error::file_not_found(name));
        }
        for inc in &self.includes {
            let path = inc.join(name);
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(self.fail(SchemaError::Io { path, source })),
                Ok(m) if !m.is_file() => return Err(self.fail(SchemaError::NotRegular { path })),
                Ok(m) if m.len() > MAX_FILE_SIZE => {
                    return Err(self.fail(SchemaError::TooLarge { path, limit: MAX_FILE_SIZE }));
                }
                Ok(_) => return self.read(name, &path, display_path(inc, name)),
            }
        }
        Err(protox::Error::file_not_found(name))
    }
}

/// A relative path as a compiler file name (`a/b.proto`), or `None` if it has
/// anything but plain UTF-8 components.
pub(crate) fn file_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Byte offset of a leading `edition = ...` statement, skipping blank space, a
/// BOM and comments. Works on bytes only, so no input can make it panic.
pub(crate) fn edition_declaration(text: &str) -> Option<usize> {
    const BOM: &[u8] = "\u{FEFF}".as_bytes();
    let b = text.as_bytes();
    let mut i = 0;
    loop {
        loop {
            match b.get(i..) {
                Some(rest) if rest.first().is_some_and(u8::is_ascii_whitespace) => i += 1,
                Some(rest) if rest.starts_with(BOM) => i += BOM.len(),
                _ => break,
            }
        }
        let rest = b.get(i..).unwrap_or_default();
        if rest.starts_with(b"//") {
            i = rest.iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
        } else if rest.starts_with(b"/*") {
            i = rest[2..].windows(2).position(|w| w == b"*/").map_or(b.len(), |n| i + 2 + n + 2);
        } else {
            break;
        }
    }
    let rest = b.get(i..).unwrap_or_default();
    let after = rest.strip_prefix(b"edition")?;
    let after = &after[after.iter().take_while(|c| c.is_ascii_whitespace()).count()..];
    (after.first() == Some(&b'=')).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::edition_declaration;

    #[test]
    fn finds_edition_after_comments() {
        assert_eq!(edition_declaration("// hi\n/* x */ edition = \"2023\";"), Some(14));
        assert_eq!(edition_declaration("\u{FEFF}edition = \"2023\";"), Some(3));
        assert_eq!(edition_declaration("syntax = \"proto3\";"), None);
        assert_eq!(edition_declaration("editions_are_not_this = 1"), None);
        assert_eq!(edition_declaration(""), None);
        assert_eq!(edition_declaration("\u{FFFD}"), None);
        assert_eq!(edition_declaration("\u{FF01}edition = 1"), None);
        assert_eq!(edition_declaration("/*"), None);
    }
}
