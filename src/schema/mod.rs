//! Loading a schema: find the `.proto` files under the roots and compile them
//! in-process with protox into a [`DescriptorPool`].
//!
//! This module knows nothing of tokio, tonic or HTTP: paths in, descriptors or a
//! [`SchemaError`] out. Well-known types (`google/protobuf/*.proto`),
//! `buf/validate/validate.proto` and the common googleapis files
//! (`google/api/*`, `google/rpc/*`, `google/type/*`, see [`builtin`]) resolve
//! without being vendored. Diagnostics share one format ([`diagnostic`]).

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use miette::Diagnostic;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, DescriptorSetFileResolver, GoogleFileResolver};

pub mod builtin;
pub mod diagnostic;
mod source;
mod sources;

pub use diagnostic::{Position, Problem};
pub use source::{MAX_FILE_SIZE, SKIPPED_DIRS};

use source::{DiskResolver, Excludes, Found, Reads};

/// A compiled schema: the pool with every file (imports included) and the names of
/// the files that were found under the include roots.
#[derive(Clone, Debug)]
pub struct Schema {
    /// Without source info (kept encoded in `sources`).
    pool: DescriptorPool,
    files: Vec<String>,
    /// Served files whose text is blank (nothing but white space).
    blank: Vec<String>,
    sources: std::sync::Arc<sources::Sources>,
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

    /// Served files whose text was blank when read (e.g. caught between the
    /// truncate and the write of an in-place save).
    pub fn blank_files(&self) -> &[String] {
        &self.blank
    }

    /// Wraps an already built pool (every file in it counts as a user file).
    pub fn from_pool(pool: DescriptorPool) -> Self {
        let files = pool.files().map(|f| f.name().to_owned()).collect();
        Self { pool, files, blank: Vec::new(), sources: Default::default() }
    }

    /// The source info (positions and comments) of `file`: kept apart from the
    /// pool, which a compiled schema serves without it. `None` if it has none.
    pub fn source_info(&self, file: &str) -> Option<prost_types::SourceCodeInfo> {
        match self.sources.get(file) {
            Some(bytes) => prost::Message::decode(bytes.clone()).ok(),
            None => self.pool.get_file_by_name(file)?.file_descriptor_proto().source_code_info.clone(),
        }
    }

    /// The pool as compiled, source info included (for positions in
    /// `compat::check`'s findings). It is decoded anew on each call: the served
    /// pool leaves source info out to save memory.
    pub fn pool_with_source_info(&self) -> DescriptorPool {
        if self.sources.is_empty() {
            return self.pool.clone();
        }
        DescriptorPool::decode(self.encode_with_source_info().as_slice()).unwrap_or_else(|_| self.pool.clone())
    }

    /// The schema as an encoded `FileDescriptorSet`, imports and source info included.
    pub fn encode_with_source_info(&self) -> Vec<u8> {
        let bare = self.pool.encode_to_vec();
        if self.sources.is_empty() {
            return bare;
        }
        sources::join(&bare, &self.sources).unwrap_or(bare)
    }
}

/// Where to find a schema.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Served roots: directories (every `.proto` under them is served and each is
    /// an include path) or single `.proto` files (their directory is the include path).
    pub roots: Vec<PathBuf>,
    /// Import-only roots (`-I`): they resolve imports but their files are not served.
    pub imports: Vec<PathBuf>,
    /// Glob patterns (`--exclude`) matched against paths relative to a root, and
    /// against file and folder names; matches are not walked into or served.
    pub exclude: Vec<String>,
}

impl LoadOptions {
    /// Options for served roots only.
    pub fn roots(roots: &[PathBuf]) -> Self {
        Self { roots: roots.to_vec(), ..Self::default() }
    }
}

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum SchemaError {
    /// A path could not be read.
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The include roots hold no `.proto` file.
    #[error("no .proto files found under {}", list_paths(dirs))]
    NoFiles {
        /// The roots that were searched.
        dirs: Vec<PathBuf>,
    },
    /// A root is a file that is not a `.proto` file.
    #[error("'{}' is not a .proto file: pass .proto files or directories that hold them", path.display())]
    NotProto {
        /// The path given.
        path: PathBuf,
    },
    /// A `.proto` path is a FIFO, device or other non-regular file.
    #[error("'{}' is not a regular file (a FIFO, socket or device?); only regular files are read", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// A `.proto` file is larger than [`MAX_FILE_SIZE`].
    #[error("'{}' is larger than {} MiB; not reading it", path.display(), limit / (1024 * 1024))]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A `.proto` file's name is not valid UTF-8, so imports cannot name it.
    #[error("'{}': the file name is not valid UTF-8; rename it (imports name files in UTF-8)", path.display())]
    NotUtf8Name {
        /// The path.
        path: PathBuf,
    },
    /// An `--exclude` pattern is not a valid glob.
    #[error("{0}")]
    BadExclude(String),
    /// The schema's text is wrong: parse, semantic, encoding or import errors,
    /// editions files. Each problem carries `file:line:col`.
    #[error("{}", diagnostic::render(problems))]
    Invalid {
        /// Every problem found (rendering shows the first [`diagnostic::MAX_SHOWN`]).
        problems: Vec<Problem>,
    },
    /// A binary FileDescriptorSet could not be decoded.
    #[error("'{}' is not a valid FileDescriptorSet: {message}", path.display())]
    DescriptorSet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl SchemaError {
    /// True when the failure is about reading paths or the command line rather
    /// than the schema's content (exit code 2 rather than 1).
    pub fn is_io(&self) -> bool {
        !matches!(self, SchemaError::Invalid { .. } | SchemaError::DescriptorSet { .. })
    }

    /// The problems in the schema's text, when that is what is wrong.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SchemaError::Invalid { problems } => problems,
            _ => &[],
        }
    }

    /// Renders the error like a compiler does: `file:line:col: error: ...`, the
    /// source line and a caret under the problem; other errors as `error: ...`.
    /// No colours, so it reads the same in logs.
    pub fn render(&self) -> String {
        match self {
            SchemaError::Invalid { problems } => diagnostic::render(problems),
            other => format!("error: {other}"),
        }
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
    load_with(&LoadOptions::roots(roots))
}

/// How many times a compile is retried when a file changed while it was read.
const STABLE_TRIES: usize = 3;

/// Compiles the served roots of `opts`, resolving imports from them, the
/// import-only roots and the built-in files, in that order.
pub fn load_with(opts: &LoadOptions) -> Result<Schema, SchemaError> {
    let excludes = Excludes::new(&opts.exclude).map_err(SchemaError::BadExclude)?;
    let mut includes: Vec<PathBuf> = Vec::new();
    let mut sources: Vec<(Found, PathBuf)> = Vec::new();
    for root in &opts.roots {
        let meta = std::fs::metadata(root).map_err(|source| SchemaError::Io { path: root.clone(), source })?;
        if meta.is_dir() {
            push_unique(&mut includes, root.clone());
            let mut found = Vec::new();
            source::walk(root, &excludes, &mut found)?;
            sources.extend(found.into_iter().map(|f| (f, root.clone())));
        } else if root.extension().is_some_and(|e| e == "proto") {
            if !meta.is_file() {
                return Err(SchemaError::NotRegular { path: root.clone() });
            }
            let parent = match root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = source::file_name(Path::new(root.file_name().unwrap_or_default()))
                .ok_or_else(|| SchemaError::NotUtf8Name { path: root.clone() })?;
            push_unique(&mut includes, parent.clone());
            sources.push((Found { name, path: root.clone() }, parent));
        } else {
            return Err(SchemaError::NotProto { path: root.clone() });
        }
    }
    for dir in &opts.imports {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => push_unique(&mut includes, dir.clone()),
            Ok(_) => {
                return Err(SchemaError::Io { path: dir.clone(), source: std::io::Error::other("not a directory") });
            }
            Err(source) => return Err(SchemaError::Io { path: dir.clone(), source }),
        }
    }
    if sources.is_empty() {
        return Err(SchemaError::NoFiles { dirs: opts.roots.clone() });
    }
    compile_stable(&includes, sources)
}

/// A schema with no files of the user's (only the built-ins every pool has), for
/// a server started on roots that hold no `.proto` yet.
pub fn empty() -> Schema {
    match compile(&[], &[]) {
        Ok((schema, _)) => schema,
        // The built-ins compile (a test says so); an empty pool is still correct.
        Err(_) => {
            Schema { pool: DescriptorPool::new(), files: Vec::new(), blank: Vec::new(), sources: Default::default() }
        }
    }
}

fn compile_stable(includes: &[PathBuf], mut sources: Vec<(Found, PathBuf)>) -> Result<Schema, SchemaError> {
    sources.sort_by(|a, b| a.0.name.cmp(&b.0.name).then_with(|| a.0.path.cmp(&b.0.path)));
    sources.dedup_by(|a, b| a.0.path == b.0.path);
    let mut problems = Vec::new();
    for pair in sources.windows(2) {
        let ((a, ra), (b, rb)) = (&pair[0], &pair[1]);
        if a.name == b.name {
            problems.push(
                Problem::new(format!(
                    "'{}' is found under two roots: '{}' and '{}'",
                    a.name,
                    source::display_path(ra, &a.name),
                    source::display_path(rb, &b.name)
                ))
                .with_help("import names must be unique across roots; serve one of them"),
            );
        }
    }
    if !problems.is_empty() {
        return Err(SchemaError::Invalid { problems });
    }
    let names: Vec<&str> = sources.iter().map(|(f, _)| f.name.as_str()).collect();
    let mut tries = 0;
    loop {
        tries += 1;
        let (schema, reads) = compile(includes, &names)?;
        // A file written while we read it (truncate, then write) may have been
        // caught half-written: if any file changed since, read everything again.
        let stable = reads.stamps.iter().all(|(_, path, stamp)| source::Stamp::of(path).as_ref() == Some(stamp));
        if stable || tries >= STABLE_TRIES {
            return Ok(schema);
        }
    }
}

fn push_unique(v: &mut Vec<PathBuf>, p: PathBuf) {
    if !v.contains(&p) {
        v.push(p);
    }
}

fn compile(includes: &[PathBuf], names: &[&str]) -> Result<(Schema, Reads), SchemaError> {
    // protox's compile allocates several times the served pool and frees it all.
    // A reload (off the main thread, beside a live schema and the store) runs it
    // on a thread of its own, so those allocations come from that thread's malloc
    // arena and are reused by the next compile, instead of fragmenting the heap
    // the long-lived pools and records live in: only encoded bytes cross back,
    // and the pool is decoded here. The first compile, on the main thread before
    // anything long-lived exists, runs in place, so the pool reuses its garbage.
    if std::thread::current().name() == Some("main") {
        return finish(compile_raw(includes, names)?);
    }
    let raw = std::thread::scope(|s| {
        match std::thread::Builder::new().name("compile".into()).spawn_scoped(s, || compile_raw(includes, names)) {
            Ok(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => compile_raw(includes, names),
        }
    })?;
    finish(raw)
}

/// The served schema from what the compile made.
fn finish(raw: Raw) -> Result<(Schema, Reads), SchemaError> {
    let pool = DescriptorPool::decode(raw.set.bare.as_slice()).map_err(|e| SchemaError::Invalid {
        problems: vec![Problem::new(format!("the compiled schema does not decode: {e}"))],
    })?;
    let own = |v: &[String]| v.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>();
    let schema = Schema {
        pool,
        files: own(&raw.files),
        blank: own(&raw.blank),
        sources: std::sync::Arc::new(raw.set.sources()),
    };
    Ok((schema, raw.reads))
}

/// What the compile thread hands back: the served descriptor set, encoded.
struct Raw {
    set: sources::Split,
    files: Vec<String>,
    blank: Vec<String>,
    reads: Reads,
}

fn compile_raw(includes: &[PathBuf], names: &[&str]) -> Result<Raw, SchemaError> {
    let reads = Rc::new(RefCell::new(Reads::default()));
    let mut resolver = ChainFileResolver::new();
    resolver.add(DiskResolver::new(includes.to_vec(), reads.clone()));
    resolver.add(GoogleFileResolver::new());
    resolver.add(builtin::BuiltinResolver);
    resolver.add(ValidateResolver::get());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.include_source_info(true);
    let opened = compiler.open_files(names);
    if let Err(e) = opened {
        let mut reads = reads.borrow_mut();
        if let Some(failure) = reads.failure.take() {
            return Err(failure);
        }
        return Err(SchemaError::Invalid { problems: diagnostic::from_protox(&e, &reads.texts) });
    }
    let files: Vec<String> = compiler.files().filter(|f| !f.is_import()).map(|f| f.name().to_owned()).collect();
    for extra in builtin::ALWAYS {
        if compiler.files().all(|f| f.name() != *extra) {
            // Best effort: a schema that defines these names itself keeps its own.
            let _ = compiler.open_file(extra);
        }
    }
    let set = served_set(&compiler.descriptor_pool(), &files);
    drop(compiler);
    let reads = std::mem::take(&mut *reads.borrow_mut());
    let blank =
        files.iter().filter(|f| reads.texts.get(*f).is_some_and(|t| t.text.trim().is_empty())).cloned().collect();
    Ok(Raw { set, files, blank, reads })
}

/// The descriptor set protoserve serves, from protox's pool: the same files
/// without their source info (kept encoded apart, see [`sources`]), and without
/// the services of import-only files (`-I` roots), so neither routing nor
/// reflection offers them.
fn served_set(full: &DescriptorPool, served: &[String]) -> sources::Split {
    let encoded = full.encode_to_vec();
    let import_services = |name: &str| !served.iter().any(|n| n == name);
    // The split cannot fail on protox's own encoding; keep everything if it does.
    sources::split(&encoded, import_services).unwrap_or_else(|| sources::Split::whole(encoded))
}

/// Resolves `buf/validate/validate.proto` from the copy that prost-protovalidate ships,
/// keeping its extension options. Decoded once per process, shared by every compile.
struct ValidateResolver(&'static DescriptorSetFileResolver);

impl ValidateResolver {
    fn get() -> Self {
        static DECODED: std::sync::OnceLock<DescriptorSetFileResolver> = std::sync::OnceLock::new();
        ValidateResolver(DECODED.get_or_init(|| {
            let bytes = prost_protovalidate::types::DESCRIPTOR_POOL.encode_to_vec();
            DescriptorSetFileResolver::decode(bytes.as_slice())
                .expect("prost-protovalidate's embedded descriptor set decodes")
        }))
    }
}

impl protox::file::FileResolver for ValidateResolver {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        self.0.open_file(name)
    }
}

/// Decodes a binary FileDescriptorSet (`buf build -o x.binpb`, `protoc -o`),
/// refusing editions files up front: prost-reflect 0.16 panics on them.
pub fn load_descriptor_set(path: &Path) -> Result<Schema, SchemaError> {
    let bytes = std::fs::read(path).map_err(|source| SchemaError::Io { path: path.to_path_buf(), source })?;
    let set = prost_types::FileDescriptorSet::decode(bytes.as_slice())
        .map_err(|e| SchemaError::DescriptorSet { path: path.to_path_buf(), message: e.to_string() })?;
    if let Some(f) = set.file.iter().find(|f| f.syntax() == "editions") {
        let p = Problem::new(format!("{}: editions not supported yet (in '{}')", f.name(), path.display()))
            .with_help("prost-reflect 0.16 cannot load editions descriptors; build the set from proto2/proto3 files");
        return Err(SchemaError::Invalid { problems: vec![p] });
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
