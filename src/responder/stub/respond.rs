//! Answering calls from the stubs of one method, for the four RPC kinds.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::matcher::{Matcher, Subject, WireKeys};
use super::template::Input;
use super::{AnswerSpec, Delay, Item, Stub};
use crate::Error;
use crate::call::{
    Answer, Answered, Body, CallRequest, Exchange, HEAVY_DECODE, Kind, MetadataCell, Replies, Reply, Respond,
    Responding,
};

/// The most stubs a NOT_FOUND compares the request with to name the closest.
const MAX_EXPLAINED: usize = 1_000;
/// The most messages one client-streaming call answered by stubs may send.
const MAX_STREAM_MESSAGES: usize = 100_000;
/// The most request bytes one client-streaming call answered by stubs may buffer.
const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// Answers one method from its ranked stubs.
#[derive(Debug)]
pub(crate) struct MethodStubs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: String,
    kind: Kind,
    /// In rank order.
    stubs: Vec<Arc<Stub>>,
    /// Stubs that only match an order-sensitive `equals` on the request
    /// (`Matcher::Key`), by the hash of their key: the range of `keyed` holding
    /// their rank positions (ascending). Finding them costs one lookup of a
    /// `u64` and a comparison of the key however many there are; no key is
    /// stored twice.
    by_key: HashMap<u64, (u32, u32), BuildHasherDefault<Prehashed>>,
    keyed: Vec<u32>,
    hasher: foldhash::quality::RandomState,
    /// Keys are wire bytes (the input type is flat enough, see `WireKeys`).
    wire: Option<WireKeys>,
    /// Every stub is found by key and none needs the request decoded (no
    /// headers, CEL or templates): a canonical request is answered from its
    /// bytes alone.
    by_bytes: bool,
    /// The other stubs' rank positions, ascending: scanned.
    scanned: Vec<usize>,
    /// Every rank position (client streams scan them all).
    every: Vec<usize>,
    /// The store's answer, when it serves the method too.
    fallback: Option<Arc<dyn Respond>>,
    uses_headers: bool,
    /// Bidi: some answer sets response headers (the first message is then
    /// answered before the response starts) or trailers.
    bidi_headers: bool,
    bidi_trailers: bool,
}

/// A hasher for keys that are hashes already (`u64`s from `foldhash`).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl MethodStubs {
    pub(crate) fn new(
        path: String,
        kind: Kind,
        input: &prost_reflect::MessageDescriptor,
        stubs: Vec<Arc<Stub>>,
        fallback: Option<Arc<dyn Respond>>,
        uses_headers: bool,
    ) -> Self {
        let hasher = foldhash::quality::RandomState::default();
        let mut hashed: Vec<(u64, u32)> = Vec::new();
        let mut scanned = Vec::new();
        for (rank, s) in stubs.iter().enumerate() {
            // Compile keeps only the key of the stubs it found this way.
            let key = match (&s.when.request, kind) {
                (Some(m), k) if k != Kind::ClientStreaming => m.equals_key(),
                _ => None,
            };
            match key {
                Some(k) => hashed.push((hasher.hash_one(&*k.bytes), rank as u32)),
                None => scanned.push(rank),
            }
        }
        hashed.sort_unstable();
        let mut by_key: HashMap<u64, (u32, u32), BuildHasherDefault<Prehashed>> = HashMap::default();
        by_key.reserve(hashed.len());
        for (i, (h, _)) in hashed.iter().enumerate() {
            by_key.entry(*h).or_insert((i as u32, 0)).1 += 1;
        }
        let keyed = hashed.into_iter().map(|(_, rank)| rank).collect();
        let every = (0..stubs.len()).collect();
        let wire = WireKeys::of(input);
        let by_bytes = wire.is_some() && scanned.is_empty() && !uses_headers && kind != Kind::ClientStreaming;
        let answers = || stubs.iter().flat_map(|s| s.answers.iter());
        let bidi = kind == Kind::Bidi;
        let bidi_headers =
            bidi && answers().any(|a| a.headers.is_some() || a.header_templates.iter().any(|t| !t.trailer));
        let bidi_trailers =
            bidi && answers().any(|a| a.trailers.is_some() || a.header_templates.iter().any(|t| t.trailer));
        let inner = Inner {
            path,
            kind,
            stubs,
            by_key,
            keyed,
            hasher,
            wire,
            by_bytes,
            scanned,
            every,
            fallback,
            uses_headers,
            bidi_headers,
            bidi_trailers,
        };
        MethodStubs { inner: Arc::new(inner) }
    }
}

impl Respond for MethodStubs {
    fn respond(&self, call: CallRequest) -> Responding {
        if matches!(self.inner.kind, Kind::Unary | Kind::ServerStreaming) {
            // The common case: the adapter has read the request and it is small:
            // answer now, without a future (unless the answer waits).
            match call.try_unary() {
                Ok((ex, input)) if input.raw.len() < HEAVY_DECODE => return self.inner.one_now(ex, input),
                Ok((ex, input)) => {
                    let inner = self.inner.clone();
                    return Responding::Later(Box::pin(async move { inner.one(ex, input).await }));
                }
                Err(call) => {
                    let inner = self.inner.clone();
                    return Responding::Later(Box::pin(async move {
                        let (ex, input) = call.into_unary().await?;
                        inner.one(ex, input).await
                    }));
                }
            }
        }
        let inner = self.inner.clone();
        Responding::Later(Box::pin(async move {
            match inner.kind {
                Kind::ClientStreaming => inner.client_stream(call).await,
                _ => inner.bidi(call).await,
            }
        }))
    }

    fn replaces_builtin(&self) -> bool {
        true
    }

    fn responder(&self) -> &'static str {
        "stubs"
    }

    fn describe(&self) -> String {
        let n = self.inner.stubs.len();
        let then = if self.inner.fallback.is_some() { ", else the store" } else { "" };
        format!("stubs ({n} stub{}{then})", if n == 1 { "" } else { "s" })
    }
}

fn header_view(metadata: &MetadataMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for kv in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv
            && let Ok(v) = v.to_str()
        {
            map.entry(k.as_str().to_owned()).or_insert_with(|| serde_json::Value::String(v.to_owned()));
        }
    }
    serde_json::Value::Object(map)
}

async fn fall_back(respond: &Arc<dyn Respond>, call: CallRequest) -> Result<Answer, Error> {
    match respond.respond(call) {
        Responding::Ready(r) => r,
        Responding::Later(f) => f.await,
    }
}

async fn sleep(delay: Delay) {
    if let Some(d) = delay.pick() {
        tokio::time::sleep(d).await;
    }
}

impl Inner {
    /// The first stub, in rank order, whose matchers hold and that still answers.
    /// With a request, `equals` stubs are found by hash and merged in rank order
    /// with the scanned ones.
    fn pick(
        &self,
        headers: &serde_json::Value,
        request: Option<&Subject<'_>>,
        matches: impl Fn(&Stub) -> bool,
        answered: Option<&Answered>,
    ) -> Option<&AnswerSpec> {
        let key = match request {
            Some(subj) if !self.by_key.is_empty() => subj.key(self.wire.is_some()),
            _ => None,
        };
        let mut hits = self.hits(key).peekable();
        // Client streams are matched on no single request: every stub is scanned.
        let scanned: &[usize] = if request.is_some() { &self.scanned } else { &self.every };
        let mut j = 0;
        loop {
            // The next rank position: the smaller head of the two lists.
            let (rank, indexed) = match (hits.peek(), scanned.get(j)) {
                (Some(&h), s) if s.is_none_or(|&s| h < s) => {
                    hits.next();
                    (h, true)
                }
                (_, Some(&s)) => {
                    j += 1;
                    (s, false)
                }
                _ => return None,
            };
            let stub = &self.stubs[rank];
            // A hash hit matches by construction (and has no header matcher).
            if (indexed || (stub.when.headers_match(headers) && matches(stub)))
                && let Some(a) = stub.take()
            {
                if let Some(slot) = answered {
                    slot.note(&stub.id());
                }
                return Some(a);
            }
        }
    }

    /// The rank positions (ascending) of the stubs whose key is `key` (not
    /// just its hash).
    fn hits<'s>(&'s self, key: Option<&'s [u8]>) -> impl Iterator<Item = usize> + 's {
        let range: &[u32] = match key.and_then(|k| self.by_key.get(&self.hasher.hash_one(k))) {
            Some(&(start, len)) => &self.keyed[start as usize..(start + len) as usize],
            None => &[],
        };
        range
            .iter()
            .map(|&r| r as usize)
            .filter(move |&r| matches!(&self.stubs[r].when.request, Some(Matcher::Key(k)) if Some(&*k.bytes) == key))
    }

    /// A request whose bytes are its key (see `by_bytes`): the first stub
    /// with that key that still answers, found without decoding the request.
    /// `None` (no such stub, or the bytes are not canonical): decode it and pick.
    fn pick_by_bytes(&self, ex: &Exchange, raw: &[u8]) -> Option<&AnswerSpec> {
        let wire = self.wire.as_ref().filter(|_| self.by_bytes)?;
        // Validation needs the decoded message.
        if !matches!(ex.route.validation, crate::validate::Validation::None) || !wire.is_canonical(raw) {
            return None;
        }
        self.hits(Some(raw)).find_map(|rank| {
            let stub = &self.stubs[rank];
            let a = stub.take()?;
            if let Some(slot) = ex.answered.as_deref() {
                slot.note(&stub.id());
            }
            Some(a)
        })
    }

    fn headers(&self, metadata: &MetadataMap) -> serde_json::Value {
        if self.uses_headers { header_view(metadata) } else { serde_json::Value::Null }
    }

    /// NOT_FOUND naming the closest stub and what differs.
    fn not_found(&self, headers: &serde_json::Value, diffs: impl Fn(&Stub, &mut Vec<String>)) -> Error {
        let mut best: Option<(&Stub, Vec<String>)> = None;
        // Bounded: with 100,000 stubs a miss must not cost a full comparison each.
        for s in self.stubs.iter().take(MAX_EXPLAINED) {
            let mut d = Vec::new();
            if let Some(h) = &s.when.headers {
                h.diffs(&Subject::headers(headers), "header", &mut d);
            }
            diffs(s, &mut d);
            if best.as_ref().is_none_or(|(_, b)| d.len() < b.len()) {
                best = Some((s, d));
            }
        }
        let message = match best {
            None => format!("no stub answers {}", self.path),
            Some((s, d)) if d.is_empty() && s.exhausted() => format!(
                "no stub for {} matches: stub `{}` ({}) matches but has stepped aside (its times or its sequence are used up)",
                self.path,
                s.id(),
                s.at()
            ),
            Some((s, d)) => {
                format!("no stub for {} matches; the closest is `{}` ({}): {}", self.path, s.id(), s.at(), d.join("; "))
            }
        };
        let message = if self.stubs.len() > MAX_EXPLAINED {
            format!("{message} (compared with the first {MAX_EXPLAINED} of its {} stubs, by rank)", self.stubs.len())
        } else {
            message
        };
        Error::not_found(message)
    }

    /// Unary and server-streaming: the answer to one request message, picked
    /// now; `Err` hands the call back when no stub matches and the store
    /// serves the method. NOT_FOUND is explained only when nothing else answers.
    #[allow(clippy::result_large_err)]
    fn pick_one(
        &self,
        ex: Exchange,
        msg: &DynamicMessage,
        raw: Bytes,
    ) -> Result<Result<Picked<'_>, Error>, CallRequest> {
        let headers = self.headers(&ex.metadata);
        let subj = Subject::message(msg, &headers);
        let request = |s: &Stub| s.when.request.as_ref().is_none_or(|m| m.is_match(&subj));
        if let Some(a) = self.pick(&headers, Some(&subj), request, ex.answered.as_deref()) {
            let input = a.templated().then(|| Arc::new(Input::new(subj.full(), Vec::new(), &headers)));
            return Ok(Ok((a, input)));
        }
        if self.fallback.is_some() {
            let deadline = ex.deadline;
            return Err(CallRequest::new(ex.snap, ex.route, ex.metadata, deadline, Body::One(raw)));
        }
        Ok(Err(self.not_found(&headers, |s, d| {
            if let Some(m) = &s.when.request {
                m.diffs(&subj, "request", d);
            }
        })))
    }

    /// Unary and server-streaming, a small request the adapter has read: all
    /// of it now, unless the answer waits (a delay) or the store answers later.
    fn one_now(self: &Arc<Self>, ex: Exchange, input: crate::call::Input) -> Responding {
        if let Some(a) = self.pick_by_bytes(&ex, &input.raw) {
            return match a.delay.pick() {
                None => Responding::Ready(build(a, self.kind, None)),
                Some(d) => {
                    let answer = build(a, self.kind, None);
                    Responding::Later(Box::pin(async move {
                        tokio::time::sleep(d).await;
                        answer
                    }))
                }
            };
        }
        let raw = input.raw.clone();
        let msg = match ex.message(input) {
            Ok(m) => m,
            Err(e) => return Responding::Ready(Err(e)),
        };
        match self.pick_one(ex, &msg, raw) {
            Ok(Ok((a, input))) => match a.delay.pick() {
                None => Responding::Ready(build(a, self.kind, input)),
                Some(d) => {
                    let answer = build(a, self.kind, input);
                    Responding::Later(Box::pin(async move {
                        tokio::time::sleep(d).await;
                        answer
                    }))
                }
            },
            Ok(Err(e)) => Responding::Ready(Err(e)),
            Err(call) => match &self.fallback {
                Some(fb) => fb.respond(call),
                None => Responding::Ready(Err(Error::internal("a stub fall-through without the store"))),
            },
        }
    }

    /// Unary and server-streaming: one request message (large, or read later).
    async fn one(&self, ex: Exchange, input: crate::call::Input) -> Result<Answer, Error> {
        let raw = input.raw.clone();
        let msg = ex.message_off_worker(input).await?;
        let (a, input) = match self.pick_one(ex, &msg, raw) {
            Ok(picked) => picked?,
            Err(call) => match &self.fallback {
                Some(fb) => return fall_back(fb, call).await,
                None => return Err(Error::internal("a stub fall-through without the store")),
            },
        };
        sleep(a.delay).await;
        build(a, self.kind, input)
    }

    /// Client streaming: every message first, then the stream is matched as a
    /// whole (`messages`) or by index (`at`).
    async fn client_stream(&self, call: CallRequest) -> Result<Answer, Error> {
        let deadline = call.deadline();
        let (ex, mut frames) = call.into_streaming();
        let mut raws: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        while let Some(frame) = frames.next().await {
            let frame = frame?;
            total += frame.len();
            if raws.len() >= MAX_STREAM_MESSAGES || total > MAX_STREAM_BYTES {
                return Err(Error::too_large(format!(
                    "{}: a client stream answered by stubs is limited to {MAX_STREAM_MESSAGES} messages and {} MiB",
                    self.path,
                    MAX_STREAM_BYTES >> 20
                )));
            }
            raws.push(frame);
        }
        let mut msgs: Vec<DynamicMessage> = Vec::with_capacity(raws.len());
        for raw in &raws {
            msgs.push(ex.message_off_worker(ex.input(raw.clone())).await?);
        }
        let headers = self.headers(&ex.metadata);
        let picked = {
            let subjects: Vec<Subject<'_>> = msgs.iter().map(|m| Subject::message(m, &headers)).collect();
            let fits = |s: &Stub| {
                s.when.messages.as_ref().is_none_or(|ms| {
                    ms.len() == subjects.len() && ms.iter().zip(&subjects).all(|(m, subj)| m.is_match(subj))
                }) && s.when.at.iter().all(|(i, m)| subjects.get(*i).is_some_and(|subj| m.is_match(subj)))
            };
            match self.pick(&headers, None, fits, ex.answered.as_deref()) {
                Some(a) => Ok((
                    a,
                    a.templated().then(|| {
                        let all: Vec<serde_json::Value> = subjects.iter().map(|s| s.full().clone()).collect();
                        let last = all.last().cloned().unwrap_or_default();
                        Arc::new(Input::new(&last, all, &headers))
                    }),
                )),
                None => Err(self.not_found(&headers, |s, d| {
                    if let Some(ms) = &s.when.messages {
                        if ms.len() != subjects.len() {
                            d.push(format!("expected {} messages, got {}", ms.len(), subjects.len()));
                        } else {
                            for (i, (m, subj)) in ms.iter().zip(&subjects).enumerate() {
                                m.diffs(subj, &format!("message {i}"), d);
                            }
                        }
                    }
                    for (i, m) in &s.when.at {
                        match subjects.get(*i) {
                            Some(subj) => m.diffs(subj, &format!("message {i}"), d),
                            None => d.push(format!("expected a message at index {i}, got {} messages", subjects.len())),
                        }
                    }
                })),
            }
        };
        match (picked, &self.fallback) {
            (Ok((a, input)), _) => {
                sleep(a.delay).await;
                build(a, self.kind, input)
            }
            (Err(_), Some(fb)) => {
                let replay = futures_util::stream::iter(raws.into_iter().map(Ok));
                let call = CallRequest::new(ex.snap, ex.route, ex.metadata, deadline, Body::Frames(Box::pin(replay)));
                fall_back(fb, call).await
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Bidi: each incoming message is matched and answered (zero or more
    /// messages, maybe an error that ends the stream) before the next is read.
    /// When the method's answers set headers, the first message is answered
    /// before the response starts: its answer's headers are the response's.
    /// Trailers of every answer given are sent at the end.
    async fn bidi(self: &Arc<Self>, call: CallRequest) -> Result<Answer, Error> {
        let (mut ex, frames) = call.into_streaming();
        let headers = self.headers(&std::mem::take(&mut ex.metadata));
        let answered = ex.answered.take();
        let msgs = Box::pin(ex.messages(frames));
        let trailers = self.bidi_trailers.then(MetadataCell::new);
        let mut state = Lockstep {
            inner: self.clone(),
            answered,
            msgs,
            headers,
            pending: VecDeque::new(),
            error: None,
            done: false,
            index: 0,
            trailers: trailers.clone(),
            first_headers: None,
        };
        let mut metadata = MetadataMap::new();
        if self.bidi_headers {
            state.answer_next().await;
            if state.pending.is_empty()
                && let Some(e) = state.error.take()
            {
                return Err(e);
            }
            metadata = state.first_headers.take().unwrap_or_default();
        }
        let mut answer = Answer::stream(Box::pin(futures_util::stream::unfold(state, Lockstep::next)));
        answer.metadata = metadata;
        if let Some(t) = trailers {
            answer = answer.with_trailers(t);
        }
        Ok(answer)
    }
}

struct Lockstep {
    inner: Arc<Inner>,
    /// Where the stubs answering note it (journal on only).
    answered: Option<Arc<Answered>>,
    msgs: std::pin::Pin<Box<dyn Stream<Item = Result<DynamicMessage, Error>> + Send>>,
    headers: serde_json::Value,
    /// Replies to send (rendered already), each after its delay.
    pending: VecDeque<(Result<Reply, Error>, Delay)>,
    error: Option<Error>,
    done: bool,
    /// How many messages came in.
    index: usize,
    /// Where the trailers of the answers given gather (when any stub has some).
    trailers: Option<MetadataCell>,
    /// The headers of the answer to the first message.
    first_headers: Option<MetadataMap>,
}

impl Lockstep {
    async fn next(mut self) -> Option<(Result<Reply, Error>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some((reply, delay)) = self.pending.pop_front() {
                sleep(delay).await;
                if reply.is_err() {
                    self.done = true;
                }
                return Some((reply, self));
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                return Some((Err(e), self));
            }
            if !self.answer_next().await {
                return None;
            }
        }
    }

    /// Reads the next incoming message and answers it (replies into `pending`,
    /// an error into `error`); `false` when the client's stream is over.
    async fn answer_next(&mut self) -> bool {
        let msg = match self.msgs.next().await {
            None => return false,
            Some(Err(e)) => {
                self.error = Some(e);
                return true;
            }
            Some(Ok(m)) => m,
        };
        let inner = self.inner.clone();
        let first = self.index == 0;
        let found = {
            let subj = Subject::message(&msg, &self.headers);
            let request = |s: &Stub| s.when.request.as_ref().is_none_or(|m| m.is_match(&subj));
            match inner.pick(&self.headers, Some(&subj), request, self.answered.as_deref()) {
                Some(a) => {
                    let input = a.templated().then(|| Input::new(subj.full(), Vec::new(), &self.headers));
                    let replies: Vec<_> =
                        a.items.iter().map(|i| (reply_of(i, input.as_ref(), self.index), i.delay)).collect();
                    let error = a
                        .error
                        .as_deref()
                        .map(|e| e.to_error(a, first && replies.is_empty(), input.as_ref(), self.index));
                    // Headers go out once, with the response; trailers gather for its end.
                    let metadata = (error.is_none() || first).then(|| a.metadata(input.as_ref(), self.index));
                    Ok((a.delay, replies, error, metadata))
                }
                None => Err(inner.not_found(&self.headers, |s, d| {
                    if let Some(m) = &s.when.request {
                        m.diffs(&subj, "request", d);
                    }
                })),
            }
        };
        self.index += 1;
        match found {
            Ok((delay, items, error, metadata)) => {
                sleep(delay).await;
                self.pending.extend(items);
                self.error = error;
                match metadata {
                    Some(Ok((headers, trailers))) => {
                        if first {
                            self.first_headers = Some(headers);
                        }
                        if self.error.is_none()
                            && let Some(cell) = &self.trailers
                        {
                            cell.update(|t| append_ascii(t, &trailers));
                        }
                    }
                    Some(Err(e)) => self.error = Some(e),
                    None => {}
                }
            }
            Err(e) => self.error = Some(e),
        }
        true
    }
}

/// Appends the ASCII entries of `from` to `to`.
fn append_ascii(to: &mut MetadataMap, from: &MetadataMap) {
    for kv in from.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            to.append(k.clone(), v.clone());
        }
    }
}

impl AnswerSpec {
    /// This answer's headers and trailers for one call, templates rendered.
    fn metadata(&self, input: Option<&Input>, index: usize) -> Result<(MetadataMap, MetadataMap), Error> {
        let mut headers = self.headers.as_deref().cloned().unwrap_or_default();
        let mut trailers = self.trailers.as_deref().cloned().unwrap_or_default();
        if !self.header_templates.is_empty() {
            let none = Input::default();
            let input = input.unwrap_or(&none);
            for t in self.header_templates.iter() {
                let text = input.render_text(&t.value, index)?;
                let value = MetadataValue::try_from(text.as_str()).map_err(|_| {
                    Error::internal(format!("a stub template for `{}` rendered `{text}`, not a header value", t.key))
                })?;
                if t.trailer { &mut trailers } else { &mut headers }.append(t.key.clone(), value);
            }
        }
        Ok((headers, trailers))
    }
}

impl super::ErrorSpec {
    /// The status, with the answer's trailers as its metadata, and its headers
    /// too when nothing was sent before it (a trailers-only response).
    fn to_error(&self, answer: &AnswerSpec, first: bool, input: Option<&Input>, index: usize) -> Error {
        let (headers, trailers) = match answer.metadata(input, index) {
            Ok(m) => m,
            Err(e) => return e,
        };
        let mut metadata = if first { headers } else { MetadataMap::new() };
        append_ascii(&mut metadata, &trailers);
        let Some(template) = &self.template else {
            return Error::with_code(self.code, self.message.clone(), Some(self.details.clone()), metadata);
        };
        let message = match input.unwrap_or(&Input::default()).render_text(template, index) {
            Ok(m) => m,
            Err(e) => return e,
        };
        // The details carry the message too: re-encoded with the rendered one.
        let mut status = crate::validate::RpcStatus::decode(self.details.clone()).unwrap_or_default();
        status.message = message.clone();
        Error::with_code(self.code, message, Some(Bytes::from(status.encode_to_vec())), metadata)
    }
}

/// A reply: the encoded bytes, or the template rendered for this call.
fn reply_of(item: &Item, input: Option<&Input>, index: usize) -> Result<Reply, Error> {
    match &item.template {
        None => Ok(Reply::Encoded(item.reply.clone())),
        Some(t) => t.render(input.unwrap_or(&Input::default()), index).map(Reply::Message),
    }
}

/// What a stub answers one request with: the answer, and the request's view
/// when its replies are templates.
type Picked<'a> = (&'a AnswerSpec, Option<Arc<Input>>);

/// Builds the answer of a unary, server- or client-streaming call (after the
/// answer's delay).
fn build(spec: &AnswerSpec, kind: Kind, input: Option<Arc<Input>>) -> Result<Answer, Error> {
    // Headers with templates are rendered for this call; fixed ones cloned.
    let rendered = if spec.header_templates.is_empty() { None } else { Some(spec.metadata(input.as_deref(), 0)?) };
    let mut out = match kind {
        Kind::ServerStreaming => {
            let items = spec.items.to_vec();
            let error = spec.error.as_deref().map(|e| e.to_error(spec, false, input.as_deref(), items.len()));
            let replies = futures_util::stream::iter(items.into_iter().enumerate())
                .then(move |(i, item)| {
                    let input = input.clone();
                    async move {
                        sleep(item.delay).await;
                        reply_of(&item, input.as_deref(), i)
                    }
                })
                .chain(futures_util::stream::iter(error.map(Err)));
            let replies: Replies = Box::pin(replies);
            Answer::stream(replies)
        }
        _ => match (&spec.error, spec.items.first()) {
            (Some(e), _) => return Err(e.to_error(spec, true, input.as_deref(), 0)),
            (None, Some(item)) => Answer::one(reply_of(item, input.as_deref(), 0)?),
            (None, None) => return Err(Error::internal("a stub answer without a message")),
        },
    };
    match rendered {
        Some((headers, trailers)) => {
            out.metadata = headers;
            if !trailers.is_empty() {
                out = out.with_trailers(trailers);
            }
        }
        None => {
            if let Some(h) = &spec.headers {
                out.metadata = (**h).clone();
            }
            if let Some(t) = &spec.trailers {
                out = out.with_trailers((**t).clone());
            }
        }
    }
    Ok(out)
}
