//! Loading a schema: find the `.proto` files under the include roots and compile
//! them in-process with protox into a [`DescriptorPool`].
//!
//! This module knows nothing of tokio, tonic or HTTP: paths in, descriptors or a
//! [`SchemaError`] out. Well-known types (`google/protobuf/*.proto`) and
//! `buf/validate/validate.proto` resolve without being vendored.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, DescriptorSetFileResolver, GoogleFileResolver, IncludeFileResolver};

/// A compiled schema: the pool with every file (imports included) and the names of
/// the files that were found under the include roots.
#[derive(Clone, Debug)]
pub struct Schema {
    pool: DescriptorPool,
    files: Vec<String>,
}

impl Schema {
    /// The descriptor pool, imports included.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Proto file names (relative to their include root) that were compiled.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Wraps an already built pool (every file in it counts as a user file).
    pub fn from_pool(pool: DescriptorPool) -> Self {
        let files = pool.files().map(|f| f.name().to_owned()).collect();
        Self { pool, files }
    }
}

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum SchemaError {
    /// A path could not be read.
    #[error("cannot read '{}': {source}", path.display())]
    #[diagnostic(code(protoserve::io))]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The include roots hold no `.proto` file.
    #[error("no .proto files found under {}", list_paths(dirs))]
    #[diagnostic(code(protoserve::no_protos), help("pass the directory that holds your .proto files"))]
    NoFiles {
        /// The roots that were searched.
        dirs: Vec<PathBuf>,
    },
    /// A file uses `edition = "..."`, which protox cannot compile yet.
    #[error("{file}: editions not supported yet")]
    #[diagnostic(
        code(protoserve::editions),
        help("protox 0.10 compiles proto2 and proto3 only; use `syntax = \"proto3\";` for now")
    )]
    Editions {
        /// The file's name.
        file: String,
        /// The file's text.
        #[source_code]
        src: Option<NamedSource<String>>,
        /// Where the edition declaration is.
        #[label("edition declared here")]
        span: Option<SourceSpan>,
    },
    /// protox reported a parse or semantic error.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Compile(Box<protox::Error>),
    /// A binary FileDescriptorSet could not be decoded.
    #[error("'{}' is not a valid FileDescriptorSet: {message}", path.display())]
    #[diagnostic(code(protoserve::descriptor_set))]
    DescriptorSet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl SchemaError {
    /// True when the failure is about reading paths rather than the schema's content
    /// (exit code 2 rather than 1).
    pub fn is_io(&self) -> bool {
        match self {
            SchemaError::Io { .. } | SchemaError::NoFiles { .. } => true,
            SchemaError::Compile(e) => e.is_io() || e.is_file_not_found(),
            _ => false,
        }
    }

    /// Renders the error like a compiler does: `file:line:col`, the source line and
    /// a caret under the problem. No colours, so it reads the same in logs.
    pub fn render(&self) -> String {
        render_diagnostic(self)
    }
}

/// Renders any diagnostic without colours (file:line:col, source line, caret).
pub fn render_diagnostic(diag: &dyn Diagnostic) -> String {
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, diag).is_err() {
        out = diag.to_string();
    }
    out
}

fn list_paths(paths: &[PathBuf]) -> String {
    let v: Vec<String> = paths.iter().map(|p| format!("'{}'", p.display())).collect();
    v.join(", ")
}

/// Compiles every `.proto` file under `roots` (each root is also an include path).
/// A root may also be a single `.proto` file, whose directory becomes the include root.
pub fn load(roots: &[PathBuf]) -> Result<Schema, SchemaError> {
    let mut includes = Vec::new();
    let mut sources = Vec::new();
    for root in roots {
        let meta = std::fs::metadata(root).map_err(|source| SchemaError::Io { path: root.clone(), source })?;
        if meta.is_dir() {
            includes.push(root.clone());
            collect_protos(root, &mut sources)?;
        } else {
            let parent = match root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            includes.push(parent);
            sources.push(root.clone());
        }
    }
    if sources.is_empty() {
        return Err(SchemaError::NoFiles { dirs: roots.to_vec() });
    }
    sources.sort();
    sources.dedup();
    for path in &sources {
        check_not_editions(path)?;
    }

    let mut resolver = ChainFileResolver::new();
    for inc in &includes {
        resolver.add(IncludeFileResolver::new(inc.clone()));
    }
    resolver.add(GoogleFileResolver::new());
    resolver.add(validate_resolver());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.include_source_info(true);
    compiler.open_files(&sources).map_err(|e| SchemaError::Compile(Box::new(e)))?;
    let files = compiler.files().filter(|f| !f.is_import()).map(|f| f.name().to_owned()).collect();
    Ok(Schema { pool: compiler.descriptor_pool(), files })
}

/// Resolves `buf/validate/validate.proto` from the copy that prost-protovalidate ships,
/// keeping its extension options.
fn validate_resolver() -> DescriptorSetFileResolver {
    let bytes = prost_protovalidate::types::DESCRIPTOR_POOL.encode_to_vec();
    DescriptorSetFileResolver::decode(bytes.as_slice()).expect("prost-protovalidate's embedded descriptor set decodes")
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SchemaError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| SchemaError::Io { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = entry.file_type().map_err(|source| SchemaError::Io { path: path.clone(), source })?;
        if ty.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// protox 0.10 cannot parse editions files; say so plainly instead of a parse error.
fn check_not_editions(path: &Path) -> Result<(), SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io { path: path.to_path_buf(), source })?;
    if let Some(offset) = edition_declaration(&text) {
        let file = path.display().to_string();
        return Err(SchemaError::Editions {
            span: Some(SourceSpan::from((offset, "edition".len()))),
            src: Some(NamedSource::new(file.clone(), text)),
            file,
        });
    }
    Ok(())
}

/// Byte offset of a leading `edition = ...` statement, skipping comments and blank space.
pub(crate) fn edition_declaration(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len()
            && (bytes[i].is_ascii_whitespace() || bytes[i] == 0xEF || bytes[i] == 0xBB || bytes[i] == 0xBF)
        {
            i += 1;
        }
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if text[i..].starts_with("/*") {
            i = text[i + 2..].find("*/").map_or(bytes.len(), |n| i + 2 + n + 2);
        } else {
            break;
        }
    }
    let rest = &text[i..];
    let after = rest.strip_prefix("edition")?;
    after.trim_start().starts_with('=').then_some(i)
}

/// Decodes a binary FileDescriptorSet (`buf build -o x.binpb`, `protoc -o`),
/// refusing editions files up front: prost-reflect 0.16 panics on them.
pub fn load_descriptor_set(path: &Path) -> Result<Schema, SchemaError> {
    let bytes = std::fs::read(path).map_err(|source| SchemaError::Io { path: path.to_path_buf(), source })?;
    let set = prost_types::FileDescriptorSet::decode(bytes.as_slice())
        .map_err(|e| SchemaError::DescriptorSet { path: path.to_path_buf(), message: e.to_string() })?;
    if let Some(f) = set.file.iter().find(|f| f.syntax() == "editions") {
        return Err(SchemaError::Editions { file: f.name().to_owned(), src: None, span: None });
    }
    let pool = DescriptorPool::decode(bytes.as_slice())
        .map_err(|e| SchemaError::DescriptorSet { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(Schema::from_pool(pool))
}

impl fmt::Display for Schema {
    /// Lists services and methods, one method per line, the way `check` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for service in self.pool.services() {
            writeln!(f, "{}", service.full_name())?;
            for m in service.methods() {
                let kind = match (m.is_client_streaming(), m.is_server_streaming()) {
                    (false, false) => "unary",
                    (false, true) => "server-streaming",
                    (true, false) => "client-streaming",
                    (true, true) => "bidi-streaming",
                };
                writeln!(
                    f,
                    "  /{}/{}  ({} -> {}, {kind})",
                    service.full_name(),
                    m.name(),
                    m.input().full_name(),
                    m.output().full_name()
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::edition_declaration;

    #[test]
    fn finds_edition_after_comments() {
        assert_eq!(edition_declaration("// hi\n/* x */ edition = \"2023\";"), Some(14));
        assert_eq!(edition_declaration("syntax = \"proto3\";"), None);
        assert_eq!(edition_declaration("editions_are_not_this = 1"), None);
        assert_eq!(edition_declaration(""), None);
    }
}
