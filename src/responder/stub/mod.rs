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
    fn carry(&self, stubs: &mut [Stub], epoch: u64) {
        let mut carried = self.carried.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (old_epoch, old) = std::mem::take(&mut *carried);
        let mut old = if old_epoch == epoch { old } else { CounterMap::default() };
        let mut next = CounterMap::with_capacity_and_hasher(stubs.len(), Default::default());
        for s in stubs.iter_mut() {
            let key = (s.id.clone(), s.definition);
            // Two stubs written alike under one id: the first keeps the
            // counters, the other starts again.
            if let Some(c) = old.remove(&key) {
                s.counters = c;
            }
            next.entry(key).or_insert_with(|| s.counters.clone());
        }
        *carried = (epoch, next);
    }

    /// Every stub file under the directories, sorted by path; problems for
    /// directories that are missing or files that cannot be read.
    fn read(&self) -> (Vec<SourceText>, Vec<Problem>) {
        let mut paths = Vec::new();
        let mut problems = Vec::new();
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
        // Texts given by code come first, then files in path order.
        let mut texts = self.texts.clone();
        for p in paths {
            match read_file(&p) {
                Ok(text) => texts.push(SourceText { display: p.display().to_string(), text }),
                Err(e) => problems.push(Problem::new(e)),
            }
        }
        (texts, problems)
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

fn fingerprint(texts: &[SourceText], problems: &[Problem], edits: u64) -> u64 {
    let mut h = foldhash::quality::FixedState::default().build_hasher();
    h.write_u64(edits);
    for t in texts {
        h.write(t.display.as_bytes());
        h.write_u8(0);
        h.write(t.text.as_bytes());
        h.write_u8(0);
    }
    h.write_usize(problems.len());
    h.finish() | 1
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
        let (files, mut problems) = self.read();
        let inputs = fingerprint(&files, &problems, edits.fingerprint());
        // Runtime edits first, the newest first (so an added stub wins ties
        // with older ones and with files), then texts given by code and files.
        let sources = edits
            .entries
            .iter()
            .rev()
            .map(|e| (&e.source, e.seq, e.id.as_deref()))
            .chain(files.iter().map(|f| (f, 0, None)));
        let mut all: Vec<Stub> = Vec::new();
        let mut order = 0;
        let mut texts = 0;
        for (src, seq, id) in sources {
            texts += 1;
            let docs = match node::parse(&src.text) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(Problem::new(e.message).at(src, e.at.offset, 1));
                    continue;
                }
            };
            let (stubs, mut bad) = compile::file(src, &docs, schema.pool(), order);
            order += stubs.len() + bad.len() + 1;
            problems.append(&mut bad);
            for mut s in stubs {
                if let Some(id) = id {
                    s.id = id.into();
                }
                s.seq = seq;
                if !edits.is_hidden(&s.id, seq) {
                    all.push(s);
                }
            }
        }
        self.carry(&mut all, edits.epoch);
        let all: Vec<Arc<Stub>> = all.into_iter().map(Arc::new).collect();
        let mut by_path: HashMap<String, Vec<Arc<Stub>>> = HashMap::new();
        for s in &all {
            by_path.entry(s.path.clone()).or_default().push(s.clone());
        }
        for stubs in by_path.values_mut() {
            stubs.sort_by(|a, b| {
                b.specificity.cmp(&a.specificity).then(b.priority.cmp(&a.priority)).then(a.order.cmp(&b.order))
            });
        }
        tracing::debug!(stubs = all.len(), files = texts, methods = by_path.len(), "stubs loaded");
        Some(Arc::new(SchemaStubs { by_path, all, fallback: self.fallback.clone(), problems, inputs }))
    }

    fn inputs(&self) -> u64 {
        if self.is_off() {
            return 0;
        }
        let (texts, problems) = self.read();
        let edits = self.runtime.as_ref().map_or(0, |r| r.state().fingerprint());
        fingerprint(&texts, &problems, edits)
    }

    fn watch_dirs(&self) -> Vec<PathBuf> {
        self.dirs.clone()
    }
}

/// The stubs of one schema, by method path, ranked.
#[derive(Debug)]
struct SchemaStubs {
    by_path: HashMap<String, Vec<Arc<Stub>>>,
    /// Every stub, in source order (runtime edits first).
    all: Vec<Arc<Stub>>,
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
        let Some(stubs) = self.by_path.get(&path) else { return Ok(None) };
        let fallback = self.fallback.resolve(method)?;
        let uses_headers = stubs
            .iter()
            .any(|s| s.when.headers.is_some() || s.when.uses_cel() || s.answers.iter().any(AnswerSpec::templated));
        Ok(Some(Arc::new(respond::MethodStubs::new(path, Kind::of(method), stubs.clone(), fallback, uses_headers))))
    }

    fn problems(&self) -> Vec<Problem> {
        self.problems.clone()
    }

    fn stubs(&self) -> Vec<Arc<Stub>> {
        self.all.clone()
    }

    fn inputs(&self) -> u64 {
        self.inputs
    }
}

/// One checked stub, ready to answer.
#[derive(Debug)]
pub(crate) struct Stub {
    pub(crate) id: Arc<str>,
    /// Where it is written (`file:line:col`).
    pub(crate) at: String,
    pub(crate) path: String,
    pub(crate) priority: i64,
    pub(crate) order: usize,
    pub(crate) specificity: usize,
    pub(crate) when: When,
    pub(crate) answers: Vec<AnswerSpec>,
    pub(crate) then: Then,
    pub(crate) times: Option<u64>,
    /// A hash of its definition (the stub as written and its method): a stub
    /// whose definition did not change keeps its counters across rebuilds.
    pub(crate) definition: u64,
    /// Which runtime edit it came from (0: a file or a text given by code).
    pub(crate) seq: u64,
    /// Calls taken, the sequence position, calls answered: shared with the
    /// same stub in later snapshots.
    counters: Arc<Counters>,
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

impl Stub {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        at: String,
        path: String,
        priority: i64,
        order: usize,
        when: When,
        answers: Vec<AnswerSpec>,
        then: Then,
        times: Option<u64>,
        definition: u64,
    ) -> Self {
        let specificity = when.specificity();
        Stub {
            id: id.into(),
            at,
            path,
            priority,
            order,
            specificity,
            when,
            answers,
            then,
            times,
            definition,
            seq: 0,
            counters: Arc::default(),
        }
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
    fn specificity(&self) -> usize {
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

/// One answer: headers, a delay, reply messages (encoded), an error.
#[derive(Debug, Default)]
pub(crate) struct AnswerSpec {
    pub(crate) headers: MetadataMap,
    /// Sent after the last reply, beside the status (on an error too).
    pub(crate) trailers: MetadataMap,
    pub(crate) delay: Delay,
    pub(crate) items: Vec<Item>,
    pub(crate) error: Option<ErrorSpec>,
    /// Headers and trailers whose values are templates, rendered per call.
    pub(crate) header_templates: Vec<HeaderTemplate>,
}

/// A header (or trailer) value with templates: rendered for each call.
#[derive(Debug, Clone)]
pub(crate) struct HeaderTemplate {
    pub(crate) trailer: bool,
    pub(crate) key: tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
    pub(crate) text: String,
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
    /// The message is a template, rendered per call (and the status re-encoded).
    pub(crate) templated: bool,
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
            || self.error.as_ref().is_some_and(|e| e.templated)
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
