//! Declarative stubs: YAML or JSON files that say what a method answers, for
//! any method of the schema, with no code.
//!
//! A [`StubResponder`] knows the stub directories. For every schema it reads
//! them again (`node`), checks each stub against that schema (`compile`:
//! methods, fields, value types, answers encoded once) and becomes a
//! per-schema responder that answers the methods its stubs name. A stub with a
//! problem is reported (file:line:col) and left out; the others serve.
//!
//! Ranking, for each call: the stubs of the method whose matchers all hold,
//! the most specific first (the number of fields and headers they pin down),
//! then the higher `priority`, then file order (files by path, stubs in the
//! order written). When stubs exist but none matches, the resource store
//! answers if it serves the method, else NOT_FOUND names the closest stub and
//! what differs.

mod compile;
mod gripmock;
mod matcher;
mod node;
mod respond;
pub(crate) mod runtime;
mod template;
mod template_fn;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost_reflect::MethodDescriptor;
use tonic::metadata::MetadataMap;

use super::{Respond, Responder};
use crate::call::Kind;
use crate::error::BuildError;
use crate::schema::diagnostic::SourceText;
use crate::schema::{Problem, Schema};
use matcher::{Matcher, Subject};

/// The largest stub file read.
const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Where stubs come from: directories (or files), and texts given by code.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sources {
    pub(crate) dirs: Vec<PathBuf>,
    /// (name shown in diagnostics, YAML/JSON text).
    pub(crate) texts: Vec<(String, String)>,
    /// Stubs edited at runtime (the admin API), when it is on.
    pub(crate) runtime: Option<Arc<runtime::Runtime>>,
}

/// Stub sources; resolved into stubs for each schema.
#[derive(Debug)]
pub(crate) struct StubResponder {
    dirs: Vec<PathBuf>,
    texts: Vec<SourceText>,
    runtime: Option<Arc<runtime::Runtime>>,
    /// The counters of the stubs last built, by (id, definition),
    /// and the runtime epoch they belong to: a stub whose definition did not
    /// change keeps its counters in the next snapshot.
    carried: Mutex<(u64, CounterMap)>,
    /// The responder after stubs (the store): answers when no stub matches.
    fallback: Arc<dyn Responder>,
}

/// Counters by (id, definition).
type CounterMap = HashMap<(Arc<str>, u64), Arc<Counters>, foldhash::fast::RandomState>;

impl StubResponder {
    pub(crate) fn new(sources: Sources, fallback: Arc<dyn Responder>) -> Self {
        let texts = sources.texts.into_iter().map(|(display, text)| SourceText { display, text }).collect();
        Self { dirs: sources.dirs, texts, runtime: sources.runtime, carried: Mutex::default(), fallback }
    }

    fn is_off(&self) -> bool {
        self.dirs.is_empty() && self.texts.is_empty() && self.runtime.is_none()
    }

    /// Gives each stub the counters it had in the last build when its
    /// definition is the same, fresh ones otherwise.
    fn carry<'a>(&self, stubs: impl Iterator<Item = &'a mut Stub>, count: usize, epoch: u64) {
        let mut carried = self.carried.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (old_epoch, old) = std::mem::take(&mut *carried);
        let mut old = if old_epoch == epoch { old } else { CounterMap::default() };
        let mut next = CounterMap::with_capacity_and_hasher(count, Default::default());
        for s in stubs {
            let key = (Arc::<str>::from(&*s.id()), s.definition);
            // Two stubs written alike under one id: the first keeps the
            // counters, the other starts again.
            if let Some(c) = old.remove(&key) {
                s.counters = c;
            }
            next.entry(key).or_insert_with(|| s.counters.clone());
        }
        *carried = (epoch, next);
    }

    /// Every stub text (those given by code, then the files under the
    /// directories in path order) to `each`, read one at a time so that only
    /// one file's text is in memory; problems for directories that are missing
    /// or files that cannot be read. Returns the fingerprint of it all.
    fn read(&self, mut each: impl FnMut(&SourceText), problems: &mut Vec<Problem>) -> u64 {
        let mut paths = Vec::new();
        for dir in &self.dirs {
            if dir.is_file() {
                paths.push(dir.clone());
            } else if dir.is_dir() {
                walk(dir, 0, &mut paths);
            } else {
                problems.push(Problem::new(format!("stub directory '{}' does not exist", dir.display())));
            }
        }
        paths.sort();
        paths.dedup();
        let mut h = foldhash::quality::FixedState::default().build_hasher();
        let mut seen = |t: &SourceText| {
            h.write(t.display.as_bytes());
            h.write_u8(0);
            h.write(t.text.as_bytes());
            h.write_u8(0);
            each(t);
        };
        // Texts given by code come first, then files in path order.
        self.texts.iter().for_each(&mut seen);
        let mut read_problems = 0;
        for p in paths {
            match read_file(&p) {
                Ok(text) => seen(&SourceText { display: p.display().to_string(), text }),
                Err(e) => {
                    problems.push(Problem::new(e));
                    read_problems += 1;
                }
            }
        }
        h.write_usize(read_problems);
        h.finish() | 1
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() && depth < 16 {
            walk(&p, depth + 1, out);
        } else if (ft.is_file() || ft.is_symlink()) && [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext))
        {
            out.push(p);
        }
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    let show = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read stub file '{show}': {e}"))?;
    if !meta.is_file() {
        return Err(format!("stub file '{show}' is not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read stub file '{show}': {e}"))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!("stub file '{show}' is larger than {} MiB", MAX_FILE_SIZE >> 20));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("stub file '{show}' is not UTF-8"))?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))
}

impl Responder for StubResponder {
    fn name(&self) -> &'static str {
        "stub"
    }

    fn resolve(&self, _method: &MethodDescriptor) -> Result<Option<Arc<dyn Respond>>, BuildError> {
        // Only the per-schema set answers (see `for_schema`).
        Ok(None)
    }

    fn for_schema(&self, schema: &Schema) -> Option<Arc<dyn Responder>> {
        if self.is_off() {
            return None;
        }
        let edits = self.runtime.as_ref().map(|r| r.state()).unwrap_or_default();
        let mut by_path: HashMap<Arc<str>, Vec<Stub>> = HashMap::new();
        let (mut read_problems, mut problems) = (Vec::new(), Vec::new());
        let mut shared = compile::Shared::default();
        let (mut order, mut count, mut files) = (0, 0usize, 0usize);
        // One text: parsed and checked one stub at a time. `seq` and `id`: the
        // runtime edit it came from (0: a file or a text given by code).
        let mut load = |src: &SourceText, seq: u64, id: Option<&str>| {
            files += 1;
            let mut file = compile::File::new(src, schema.pool(), &mut shared, order);
            let parsed = node::parse_items(&src.text, |item| file.item(&item));
            let (stubs, mut bad) = file.finish();
            if let Err(e) = parsed {
                // Not a stub file at all: nothing of it is served.
                problems.push(Problem::new(e.message).at(src, e.at.offset, 1));
                return;
            }
            order += stubs.len() + bad.len() + 1;
            problems.append(&mut bad);
            for mut s in stubs {
                if let Some(id) = id {
                    s.id = Some(id.into());
                }
                s.seq = seq;
                if !edits.is_hidden(&s.id(), seq) {
                    count += 1;
                    by_path.entry(s.path.clone()).or_default().push(s);
                }
            }
        };
        // Runtime edits first, the newest first (so an added stub wins ties
        // with older ones and with files), then texts given by code and files,
        // file by file: a load never holds more than one file and one stub tree.
        for e in edits.entries.iter().rev() {
            load(&e.source, e.seq, e.id.as_deref());
        }
        let inputs = self.read(|src| load(src, 0, None), &mut read_problems) ^ edits.fingerprint().rotate_left(1);
        read_problems.append(&mut problems);
        let problems = read_problems;
        self.carry(by_path.values_mut().flatten(), count, edits.epoch);
        let by_path = by_path
            .into_iter()
            .map(|(path, mut stubs)| {
                // `order` is unique: the ranking is a total order.
                stubs.sort_unstable_by(|a, b| {
                    b.specificity.cmp(&a.specificity).then(b.priority.cmp(&a.priority)).then(a.order.cmp(&b.order))
                });
                (path, stubs.into_iter().map(Arc::new).collect::<Vec<_>>())
            })
            .collect::<HashMap<_, _>>();
        tracing::debug!(stubs = count, files, methods = by_path.len(), "stubs loaded");
        Some(Arc::new(SchemaStubs { by_path, fallback: self.fallback.clone(), problems, inputs }))
    }

    fn inputs(&self) -> u64 {
        if self.is_off() {
            return 0;
        }
        let edits = self.runtime.as_ref().map_or(0, |r| r.state().fingerprint());
        self.read(|_| {}, &mut Vec::new()) ^ edits.rotate_left(1)
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        self.dirs.clone()
    }
}

/// The stubs of one schema, by method path, ranked.
#[derive(Debug)]
struct SchemaStubs {
    /// Each method's stubs, ranked.
    by_path: HashMap<Arc<str>, Vec<Arc<Stub>>>,
    fallback: Arc<dyn Responder>,
    problems: Vec<Problem>,
    inputs: u64,
}

impl Responder for SchemaStubs {
    fn name(&self) -> &'static str {
        "stub"
    }

    fn resolve(&self, method: &MethodDescriptor) -> Result<Option<Arc<dyn Respond>>, BuildError> {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let Some(stubs) = self.by_path.get(path.as_str()) else { return Ok(None) };
        let fallback = self.fallback.resolve(method)?;
        let uses_headers = stubs
            .iter()
            .any(|s| s.when.headers.is_some() || s.when.uses_cel() || s.answers.iter().any(AnswerSpec::templated));
        Ok(Some(Arc::new(respond::MethodStubs::new(
            path,
            Kind::of(method),
            &method.input(),
            stubs.clone(),
            fallback,
            uses_headers,
        ))))
    }

    fn problems(&self) -> Vec<Problem> {
        self.problems.clone()
    }

    fn stubs(&self) -> Vec<Arc<Stub>> {
        // Source order: runtime edits (newest first), then texts and files.
        let mut all: Vec<Arc<Stub>> = self.by_path.values().flatten().cloned().collect();
        all.sort_unstable_by_key(|s| s.order);
        all
    }

    fn inputs(&self) -> u64 {
        self.inputs
    }
}

/// One checked stub, ready to answer. Kept small: a load may hold 100,000.
#[derive(Debug)]
pub(crate) struct Stub {
    /// The `id` given, if any (else `FILE#N`, see [`Stub::id`]).
    pub(crate) id: Option<Box<str>>,
    pub(crate) place: Place,
    /// The method's path (`/pkg.Service/Method`), shared by its stubs.
    pub(crate) path: Arc<str>,
    pub(crate) priority: i64,
    pub(crate) order: usize,
    pub(crate) specificity: usize,
    pub(crate) when: When,
    pub(crate) answers: Box<[AnswerSpec]>,
    pub(crate) then: Then,
    pub(crate) times: Option<u64>,
    /// A hash of its definition (the stub as written and its method): a stub
    /// whose definition did not change keeps its counters across rebuilds.
    pub(crate) definition: u64,
    /// Which runtime edit it came from (0: a file or a text given by code).
    pub(crate) seq: u64,
    /// Calls taken, the sequence position, calls answered: shared with the
    /// same stub in later snapshots.
    pub(crate) counters: Arc<Counters>,
}

/// A stub's state, carried across snapshot rebuilds while its definition stays.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Calls that reached it (for `times`; only counted when `times` is set).
    used: AtomicU64,
    /// The next answer of a sequence.
    next: AtomicUsize,
    /// Calls it answered.
    answered: AtomicU64,
}

/// Where a stub is written: its file (shared by the file's stubs), its
/// position in the file (0 is the first) and its line and column.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) file: Arc<str>,
    pub(crate) index: u32,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

impl Stub {
    /// Its name for messages: the `id` given, else `FILE#N` (N-th of its file).
    pub(crate) fn id(&self) -> std::borrow::Cow<'_, str> {
        match &self.id {
            Some(id) => std::borrow::Cow::Borrowed(id),
            None => std::borrow::Cow::Owned(format!("{}#{}", self.place.file, self.place.index + 1)),
        }
    }

    /// Where it is written: `file:line:col`.
    pub(crate) fn at(&self) -> String {
        format!("{}:{}:{}", self.place.file, self.place.line, self.place.col)
    }

    /// Takes one answer: `None` when the stub has stepped aside (its `times`
    /// are used up, or its sequence is over with `then: stop`).
    pub(crate) fn take(&self) -> Option<&AnswerSpec> {
        let c = &self.counters;
        if let Some(t) = self.times {
            let used = c.used.fetch_add(1, Ordering::Relaxed);
            if used >= t {
                return None;
            }
        }
        let i = if self.answers.len() == 1 { 0 } else { c.next.fetch_add(1, Ordering::Relaxed) };
        let answer = match self.answers.get(i) {
            Some(a) => Some(a),
            None if self.then == Then::Repeat => self.answers.last(),
            None => None,
        };
        if answer.is_some() {
            c.answered.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// Whether `take` would answer (for the NOT_FOUND explanation).
    pub(crate) fn exhausted(&self) -> bool {
        let c = &self.counters;
        self.times.is_some_and(|t| c.used.load(Ordering::Relaxed) >= t)
            || (self.then == Then::Stop
                && self.answers.len() > 1
                && c.next.load(Ordering::Relaxed) >= self.answers.len())
    }

    /// Calls answered since it went live (or since the counters were reset).
    pub(crate) fn answered(&self) -> u64 {
        self.counters.answered.load(Ordering::Relaxed)
    }

    /// Its state for the admin API: calls answered, `times` left, the
    /// sequence position, whether it stepped aside.
    pub(crate) fn state(&self) -> serde_json::Value {
        let c = &self.counters;
        let mut v = serde_json::json!({
            "answered": self.answered(),
            "exhausted": self.exhausted(),
        });
        if let Some(t) = self.times {
            v["timesLeft"] = t.saturating_sub(c.used.load(Ordering::Relaxed)).into();
        }
        if self.answers.len() > 1 {
            v["sequence"] = serde_json::json!({
                "next": c.next.load(Ordering::Relaxed).min(self.answers.len()),
                "of": self.answers.len(),
                "then": if self.then == Then::Repeat { "repeat" } else { "stop" },
            });
        }
        v
    }
}

/// A verify query checked against a schema: counts calls of one method whose
/// headers and requests match, as a stub would match them.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) path: String,
    kind: Kind,
    when: When,
}

impl Query {
    /// Parses and checks `text` (`{"method": ..., "match": {...}}`, YAML or
    /// JSON) against `pool`; problems are located in `name`.
    pub(crate) fn parse(name: &str, text: &str, pool: &prost_reflect::DescriptorPool) -> Result<Query, Vec<Problem>> {
        let src = SourceText { display: name.to_owned(), text: text.to_owned() };
        let docs = node::parse(text).map_err(|e| vec![Problem::new(e.message).at(&src, e.at.offset, 1)])?;
        let [doc] = docs.as_slice() else {
            return Err(vec![Problem::new("the body must be one JSON object: {\"method\": ..., \"match\": {...}}")]);
        };
        let (method, when) = compile::query(&src, doc, pool)?;
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        Ok(Query { path, kind: Kind::of(&method), when })
    }

    /// Whether a call with these headers and request messages matches: the
    /// headers, and the request (unary, server-streaming), the whole stream
    /// (`messages`, `at`: client-streaming), or at least one message (bidi).
    pub(crate) fn matches(&self, headers: &serde_json::Value, requests: &[prost_reflect::DynamicMessage]) -> bool {
        if !self.when.headers_match(headers) {
            return false;
        }
        let w = &self.when;
        let subjects: Vec<Subject<'_>> = requests.iter().map(|m| Subject::message(m, headers)).collect();
        match self.kind {
            Kind::Unary | Kind::ServerStreaming => match &w.request {
                None => true,
                Some(m) => subjects.first().is_some_and(|s| m.is_match(s)),
            },
            Kind::Bidi => match &w.request {
                None => true,
                Some(m) => subjects.iter().any(|s| m.is_match(s)),
            },
            Kind::ClientStreaming => {
                w.messages
                    .as_ref()
                    .is_none_or(|ms| ms.len() == subjects.len() && ms.iter().zip(&subjects).all(|(m, s)| m.is_match(s)))
                    && w.at.iter().all(|(i, m)| subjects.get(*i).is_some_and(|s| m.is_match(s)))
            }
        }
    }
}

/// What a stub matches.
#[derive(Debug, Default)]
pub(crate) struct When {
    /// The request (unary, server-streaming; each message of a bidi stream).
    pub(crate) request: Option<Matcher>,
    pub(crate) headers: Option<Matcher>,
    /// Client streaming: the whole stream, one matcher per message.
    pub(crate) messages: Option<Vec<Matcher>>,
    /// Client streaming: messages by index.
    pub(crate) at: Vec<(usize, Matcher)>,
}

impl When {
    pub(crate) fn specificity(&self) -> usize {
        let m = |m: &Option<Matcher>| m.as_ref().map_or(0, Matcher::specificity);
        m(&self.request)
            + m(&self.headers)
            + self.messages.as_ref().map_or(0, |ms| ms.iter().map(Matcher::specificity).sum::<usize>() + 1)
            + self.at.iter().map(|(_, m)| m.specificity()).sum::<usize>()
    }

    fn uses_cel(&self) -> bool {
        fn cel(m: &Matcher) -> bool {
            match m {
                Matcher::Cel(_) => true,
                Matcher::AnyOf(ms) | Matcher::All(ms) => ms.iter().any(cel),
                _ => false,
            }
        }
        self.request.as_ref().is_some_and(cel)
            || self.messages.iter().flatten().any(cel)
            || self.at.iter().any(|(_, m)| cel(m))
    }

    /// Headers hold (the request-independent part).
    pub(crate) fn headers_match(&self, headers: &serde_json::Value) -> bool {
        self.headers.as_ref().is_none_or(|m| m.is_match(&Subject::headers(headers)))
    }
}

/// After a sequence's last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    Repeat,
    Stop,
}

/// One answer: headers, a delay, reply messages (encoded), an error. The
/// rarely given parts are boxed (none: no allocation).
#[derive(Debug, Default)]
pub(crate) struct AnswerSpec {
    pub(crate) headers: Option<Box<MetadataMap>>,
    /// Sent after the last reply, beside the status (on an error too).
    pub(crate) trailers: Option<Box<MetadataMap>>,
    pub(crate) delay: Delay,
    pub(crate) items: Box<[Item]>,
    pub(crate) error: Option<Box<ErrorSpec>>,
    /// Headers and trailers whose values are templates, rendered per call.
    pub(crate) header_templates: Box<[HeaderTemplate]>,
}

/// A header (or trailer) value with templates: rendered for each call.
#[derive(Debug, Clone)]
pub(crate) struct HeaderTemplate {
    pub(crate) trailer: bool,
    pub(crate) key: tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
    pub(crate) value: Arc<template::Parsed>,
}

/// One reply message, encoded with the output type (or, with templates,
/// rendered per call), and its delay.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) reply: Bytes,
    pub(crate) template: Option<Arc<template::Templated>>,
    pub(crate) delay: Delay,
}

/// A status with its `google.rpc.Status` details, encoded.
#[derive(Debug, Clone)]
pub(crate) struct ErrorSpec {
    pub(crate) code: tonic::Code,
    pub(crate) message: String,
    /// The encoded `google.rpc.Status` (its message too).
    pub(crate) details: Bytes,
    /// The message as a template (parsed at load), rendered per call (and the
    /// status re-encoded).
    pub(crate) template: Option<Arc<template::Parsed>>,
}

/// Fixed or uniformly random in a range.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Delay {
    #[default]
    None,
    Fixed(Duration),
    Range(Duration, Duration),
}

impl AnswerSpec {
    /// Whether a reply needs the request to be rendered.
    pub(crate) fn templated(&self) -> bool {
        self.items.iter().any(|i| i.template.is_some())
            || !self.header_templates.is_empty()
            || self.error.as_ref().is_some_and(|e| e.template.is_some())
    }
}

impl Delay {
    pub(crate) fn pick(self) -> Option<Duration> {
        match self {
            Delay::None => None,
            Delay::Fixed(d) => Some(d),
            Delay::Range(lo, hi) => {
                let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
                let span = hi.saturating_sub(lo).as_nanos() as u64;
                Some(lo + Duration::from_nanos(if span == 0 { 0 } else { r % (span + 1) }))
            }
        }
    }
}
