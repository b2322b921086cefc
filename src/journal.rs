//! The request journal (admin API): every call's method, time, headers, peer,
//! request and reply messages in the order they passed, status, and the stub
//! that answered. Bounded: the last `capacity` calls, and per call the first
//! [`FRAMES_PER_WAY`] messages each way (the rest counted). Messages are kept
//! as wire bytes and decoded to proto3 JSON only when read, so recording
//! costs a reference-count bump per request message (and an encode for a
//! reply built as a message). Recorded by `middleware::JournalLayer`, which is
//! only installed when the admin API is on.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::metadata::{KeyAndValueRef, MetadataMap};

use crate::call::{Answered, Reply, Route};

/// Messages kept per call and direction; later ones are only counted.
pub const FRAMES_PER_WAY: usize = 1000;

/// Calls kept by default (`--journal-size`).
pub const DEFAULT_CAPACITY: usize = 1000;

/// The last calls, oldest first.
#[derive(Debug)]
pub struct Journal {
    capacity: usize,
    entries: Mutex<VecDeque<Arc<Entry>>>,
}

/// One recorded call.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) route: Arc<Route>,
    pub(crate) generation: u64,
    /// The request headers (a clone: values share their bytes).
    pub(crate) headers: MetadataMap,
    pub(crate) peer: Option<SocketAddr>,
    /// The stubs that answered, noted by the stub responder.
    pub(crate) answered: Arc<Answered>,
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    frames: Vec<Frame>,
    requests: usize,
    replies: usize,
    /// (code, message) once the call is over.
    status: Option<(tonic::Code, String)>,
}

/// One message, in the order it passed.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Request(Bytes),
    Reply(Bytes),
}

impl Journal {
    /// A journal keeping the last `capacity` calls (0: none).
    pub fn new(capacity: usize) -> Self {
        Journal { capacity, entries: Mutex::new(VecDeque::new()) }
    }

    /// How many calls it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts recording a call (the oldest is dropped when full); `None`
    /// when the journal keeps nothing.
    pub(crate) fn start(
        &self,
        route: Arc<Route>,
        generation: u64,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Option<Arc<Entry>> {
        if self.capacity == 0 {
            return None;
        }
        let entry = Arc::new(Entry {
            time: SystemTime::now(),
            route,
            generation,
            headers: metadata.clone(),
            peer,
            answered: Arc::default(),
            record: Mutex::default(),
        });
        let mut entries = self.lock();
        while entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry.clone());
        Some(entry)
    }

    /// The calls kept, oldest first; only those of `path` when given, and the
    /// last `limit` of those.
    pub(crate) fn entries(&self, path: Option<&str>, limit: Option<usize>) -> Vec<Arc<Entry>> {
        let entries = self.lock();
        let mut v: Vec<Arc<Entry>> =
            entries.iter().filter(|e| path.is_none_or(|p| &*e.route.path == p)).cloned().collect();
        if let Some(n) = limit {
            v.drain(..v.len().saturating_sub(n));
        }
        v
    }

    /// Forgets every call.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// The headers as (name, value) in order: binary ones base64 as they travel,
/// `authorization` redacted.
fn headers(metadata: &MetadataMap) -> Vec<(String, String)> {
    metadata
        .iter()
        .map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let v = if k.as_str() == "authorization" {
                    "<redacted>".to_owned()
                } else {
                    v.to_str().unwrap_or_default().to_owned()
                };
                (k.as_str().to_owned(), v)
            }
            KeyAndValueRef::Binary(k, v) => {
                (k.as_str().to_owned(), String::from_utf8_lossy(v.as_encoded_bytes()).into_owned())
            }
        })
        .collect()
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request message passed.
    pub(crate) fn request(&self, raw: &Bytes) {
        let mut r = self.lock();
        r.requests += 1;
        if r.requests <= FRAMES_PER_WAY {
            r.frames.push(Frame::Request(raw.clone()));
        }
    }

    /// A reply passed.
    pub(crate) fn reply(&self, reply: &Reply) {
        let mut r = self.lock();
        r.replies += 1;
        if r.replies <= FRAMES_PER_WAY {
            let bytes = match reply {
                Reply::Encoded(b) => b.clone(),
                Reply::Message(m) => Bytes::from(m.encode_to_vec()),
            };
            r.frames.push(Frame::Reply(bytes));
        }
    }

    /// The call is over with this status (the first one given counts).
    pub(crate) fn done(&self, code: tonic::Code, message: String) {
        let mut r = self.lock();
        if r.status.is_none() {
            r.status = Some((code, message));
        }
    }

    /// The request messages kept, decoded (those that do not decode are left out).
    pub(crate) fn request_messages(&self) -> Vec<DynamicMessage> {
        let desc = self.route.method.input();
        let frames: Vec<Bytes> = self
            .lock()
            .frames
            .iter()
            .filter_map(|f| match f {
                Frame::Request(b) => Some(b.clone()),
                Frame::Reply(_) => None,
            })
            .collect();
        frames.into_iter().filter_map(|b| DynamicMessage::decode(desc.clone(), b).ok()).collect()
    }

    /// The headers as the stub matchers see them: ASCII values, the first
    /// per name, `authorization` included (verify shows counts only).
    pub(crate) fn header_view(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for kv in self.headers.iter() {
            if let KeyAndValueRef::Ascii(k, v) = kv
                && let Ok(v) = v.to_str()
            {
                map.entry(k.as_str().to_owned()).or_insert_with(|| serde_json::Value::String(v.to_owned()));
            }
        }
        serde_json::Value::Object(map)
    }

    /// The entry as the admin API shows it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let (frames, requests, replies, status) = {
            let r = self.lock();
            (r.frames.clone(), r.requests, r.replies, r.status.clone())
        };
        let (input, output) = (self.route.method.input(), self.route.method.output());
        let frames: Vec<serde_json::Value> = frames
            .iter()
            .map(|f| match f {
                Frame::Request(b) => serde_json::json!({"direction": "request", "message": to_json(&input, b)}),
                Frame::Reply(b) => serde_json::json!({"direction": "reply", "message": to_json(&output, b)}),
            })
            .collect();
        let ids = self.answered.ids();
        let stubs: Vec<&str> = ids.iter().map(|s| &**s).collect();
        let answered_by = match stubs.first() {
            Some(id) => (*id).to_owned(),
            None => answerer(&self.route.responder.describe()),
        };
        let mut header_map = serde_json::Map::new();
        for (k, v) in headers(&self.headers) {
            match header_map.get_mut(&k) {
                Some(serde_json::Value::Array(a)) => a.push(v.into()),
                _ => {
                    header_map.insert(k, serde_json::json!([v]));
                }
            }
        }
        serde_json::json!({
            "time": crate::logs::rfc3339(self.time),
            "method": self.route.path.trim_start_matches('/'),
            "kind": self.route.kind.name(),
            "generation": self.generation,
            "peer": self.peer.map(|p| p.to_string()),
            "headers": header_map,
            "frames": frames,
            "requests": requests,
            "replies": replies,
            "framesDropped": {
                "requests": requests.saturating_sub(FRAMES_PER_WAY),
                "replies": replies.saturating_sub(FRAMES_PER_WAY),
            },
            "status": status.map(|(code, message)| serde_json::json!({
                "code": code_name(code),
                "number": code as i32,
                "message": message,
            })),
            "answeredBy": answered_by,
            "stubs": stubs,
        })
    }
}

/// What answered a call no stub answered, from the route's description.
fn answerer(describe: &str) -> String {
    if describe.starts_with("registered handler") {
        "handler".into()
    } else if describe.starts_with("stubs") {
        if describe.contains("else the store") { "store" } else { "none" }.into()
    } else if describe.starts_with("UNIMPLEMENTED") {
        "none".into()
    } else {
        "store".into()
    }
}

fn to_json(desc: &MessageDescriptor, bytes: &Bytes) -> serde_json::Value {
    match DynamicMessage::decode(desc.clone(), bytes.clone()) {
        Ok(m) => m
            .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
            .unwrap_or_else(|e| serde_json::json!({"undecodable": e.to_string()})),
        Err(e) => serde_json::json!({"undecodable": e.to_string()}),
    }
}

/// A code's name in the gRPC spelling (`NOT_FOUND`).
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
