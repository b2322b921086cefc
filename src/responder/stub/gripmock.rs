//! GripMock's stub format (v3: `service`, `method`, `input`/`inputs`, `headers`,
//! `priority`, `options.times`, `output` with `data`/`stream`/`error`/`code`/
//! `details`/`headers`/`delay`), rewritten into protoserve's format node by node,
//! so that every position still points into the user's file and the result is
//! checked like any stub. What differs from GripMock is listed in docs/stubs.md.

use super::node::{At, Node, Value};
use crate::call::Kind;

/// A GripMock stub names its `service` (protoserve's names a `method` path).
pub(crate) fn is_gripmock(node: &Node) -> bool {
    node.as_map().is_some_and(|pairs| pairs.iter().any(|(k, _)| k.text() == "service"))
}

const TOP: &[&str] = &[
    "id",
    "service",
    "package",
    "method",
    "description",
    "priority",
    "headers",
    "input",
    "inputs",
    "output",
    "options",
];
const OUTPUT: &[&str] = &["data", "stream", "error", "code", "details", "headers", "trailers", "delay"];

fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.as_map()?.iter().find(|(k, _)| k.text() == key).map(|(_, v)| v)
}

fn key(text: &str, at: At) -> Node {
    Node { at, value: Value::Scalar(serde_json::Value::String(text.to_owned()), text.to_owned()) }
}

fn scalar(v: serde_json::Value, at: At) -> Node {
    let text = match &v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Node { at, value: Value::Scalar(v, text) }
}

fn map(at: At, pairs: Vec<(Node, Node)>) -> Node {
    Node { at, value: Value::Map(pairs) }
}

/// A problem with a GripMock stub: where, and what.
pub(crate) type Problem = (At, String);

/// The `method` node (`Service/Method`, at the position of GripMock's `method`).
pub(crate) fn method(node: &Node) -> Result<Node, Problem> {
    let pairs = node.as_map().unwrap_or_default();
    for (k, _) in pairs {
        if !TOP.contains(&k.text()) {
            return Err((
                k.at,
                format!("unknown key `{}` in a GripMock stub (it takes: {})", k.text(), TOP.join(", ")),
            ));
        }
    }
    let service = get(node, "service").and_then(Node::as_str).ok_or((node.at, "`service` must be a string".into()))?;
    let Some(m) = get(node, "method") else { return Err((node.at, "a GripMock stub needs `method`".into())) };
    let name = m.as_str().ok_or((m.at, "`method` must be a string".to_owned()))?;
    let service = match get(node, "package").and_then(Node::as_str) {
        Some(p) if !service.contains('.') => format!("{p}.{service}"),
        _ => service.to_owned(),
    };
    Ok(key(&format!("{service}/{name}"), m.at))
}

/// The same stub in protoserve's format, for a method of `kind`.
pub(crate) fn translate(node: &Node, method: Node, kind: Kind) -> Result<Node, Problem> {
    let mut out: Vec<(Node, Node)> = vec![(key("method", method.at), method)];
    for k in ["id", "description", "priority"] {
        if let Some(v) = get(node, k) {
            out.push((key(k, v.at), v.clone()));
        }
    }
    if let Some(options) = get(node, "options") {
        for (k, v) in options.as_map().unwrap_or_default() {
            match k.text() {
                "times" => out.push((key("times", v.at), v.clone())),
                other => return Err((k.at, format!("unknown option `{other}` (GripMock options: times)"))),
            }
        }
    }
    // What is matched.
    let mut matching: Vec<(Node, Node)> = Vec::new();
    let headers = get(node, "headers").or_else(|| get(node, "input").and_then(|i| get(i, "headers")));
    if let Some(h) = headers {
        matching.push((key("headers", h.at), h.clone()));
    }
    let without_headers = |input: &Node| -> Node {
        let pairs = input.as_map().unwrap_or_default();
        map(input.at, pairs.iter().filter(|(k, _)| k.text() != "headers").cloned().collect())
    };
    match (get(node, "input"), get(node, "inputs"), kind) {
        (Some(_), Some(b), _) => return Err((b.at, "give `input` or `inputs`, not both".into())),
        (Some(i), None, Kind::ClientStreaming) => {
            // One matcher for a client stream: every message must match it.
            let _ = i;
            return Err((i.at, "a client-streaming stub matches `inputs` (one matcher per message)".into()));
        }
        (Some(i), None, _) => {
            let i = without_headers(i);
            if i.as_map().is_some_and(|p| !p.is_empty()) {
                matching.push((key("request", i.at), i));
            }
        }
        (None, Some(list), Kind::ClientStreaming) => matching.push((key("messages", list.at), list.clone())),
        (None, Some(list), _) => {
            // Bidi (and others): any of the patterns matches a message.
            let any = map(list.at, vec![(key("anyOf", list.at), list.clone())]);
            matching.push((key("request", list.at), any));
        }
        (None, None, _) => {}
    }
    if !matching.is_empty() {
        out.push((key("match", node.at), map(node.at, matching)));
    }
    // What is answered.
    let Some(output) = get(node, "output") else { return Err((node.at, "a GripMock stub needs `output`".into())) };
    let Some(pairs) = output.as_map() else { return Err((output.at, "`output` must be a mapping".into())) };
    for (k, _) in pairs {
        if !OUTPUT.contains(&k.text()) {
            return Err((k.at, format!("unknown key `{}` in `output` (it takes: {})", k.text(), OUTPUT.join(", "))));
        }
    }
    let streams = matches!(kind, Kind::ServerStreaming | Kind::Bidi);
    let delay = get(output, "delay");
    let mut answer: Vec<(Node, Node)> = Vec::new();
    match (get(output, "data"), get(output, "stream")) {
        (_, Some(stream)) if streams => {
            // GripMock waits `delay` between messages.
            let items = stream.as_seq().ok_or((stream.at, "`stream` must be a list of messages".to_owned()))?;
            let items = items
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut item = vec![(key("message", m.at), m.clone())];
                    if let (Some(d), true) = (delay, i > 0) {
                        item.push((key("delay", d.at), d.clone()));
                    }
                    map(m.at, item)
                })
                .collect();
            answer.push((key("stream", stream.at), Node { at: stream.at, value: Value::Seq(items) }));
        }
        (Some(data), _) if streams => {
            answer.push((key("messages", data.at), Node { at: data.at, value: Value::Seq(vec![data.clone()]) }))
        }
        (Some(data), _) => {
            answer.push((key("message", data.at), data.clone()));
            if let Some(d) = delay {
                answer.push((key("delay", d.at), d.clone()));
            }
        }
        (None, Some(stream)) => answer.push((key("messages", stream.at), stream.clone())),
        (None, None) => {}
    }
    let code = get(output, "code");
    let code_is_ok = code
        .is_some_and(|c| matches!(&c.value, Value::Scalar(serde_json::Value::Number(n), _) if n.as_i64() == Some(0)));
    if get(output, "error").is_some() || (code.is_some() && !code_is_ok) {
        let at = get(output, "error").or(code).map_or(output.at, |n| n.at);
        let mut error = vec![(
            key("code", at),
            match code {
                Some(c) if !code_is_ok => c.clone(),
                // GripMock answers an error without a code as UNKNOWN.
                _ => scalar(serde_json::Value::from(2), at),
            },
        )];
        if let Some(m) = get(output, "error") {
            error.push((key("message", m.at), m.clone()));
        }
        if let Some(d) = get(output, "details") {
            error.push((key("details", d.at), d.clone()));
        }
        answer.push((key("error", at), map(at, error)));
    } else if answer.is_empty() {
        // `output: {}` (or code 0 alone): an empty message.
        let empty = map(output.at, Vec::new());
        let k = if streams { "messages" } else { "message" };
        let v = if streams { Node { at: output.at, value: Value::Seq(Vec::new()) } } else { empty };
        answer.push((key(k, output.at), v));
    }
    for k in ["headers", "trailers"] {
        if let Some(v) = get(output, k) {
            answer.push((key(k, v.at), v.clone()));
        }
    }
    out.push((key("answer", output.at), map(output.at, answer)));
    Ok(map(node.at, out))
}
