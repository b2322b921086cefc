//! Stub files as a tree of positioned nodes: YAML (and JSON, which YAML 1.2
//! reads as well) parsed with saphyr-parser's event stream, so that every key
//! and value keeps the line and column it came from for diagnostics.
//!
//! Hostile input is bounded: nesting depth ([`MAX_DEPTH`]), the size aliases
//! may expand to ([`crate::responder::data::expansion_limit`]), and the file
//! size (checked by the reader).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::responder::data::{MAX_DEPTH, expansion_limit};

/// A place in a stub file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct At {
    pub(crate) line: usize,
    pub(crate) col: usize,
    /// Byte offset, for the excerpt under the diagnostic.
    pub(crate) offset: usize,
}

/// One value of a stub file, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) at: At,
    pub(crate) value: Value,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A scalar, resolved as YAML 1.2's core schema does (plain `1` is a number,
    /// quoted `"1"` a string), with its text as written.
    Scalar(serde_json::Value, String),
    Seq(Vec<Node>),
    /// Keys in file order (keys are scalars; their text is the key).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The node as JSON (keys are their text).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar(v, _) => v.clone(),
            Value::Seq(items) => serde_json::Value::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(pairs) => {
                serde_json::Value::Object(pairs.iter().map(|(k, v)| (k.text().to_owned(), v.to_json())).collect())
            }
        }
    }

    /// Feeds the node's content (not its position) to `h`: two stubs written
    /// alike hash alike wherever they are.
    pub(crate) fn hash_into(&self, h: &mut impl std::hash::Hasher) {
        match &self.value {
            Value::Scalar(v, t) => {
                h.write_u8(if v.is_string() { 1 } else { 0 });
                h.write(t.as_bytes());
                h.write_u8(0xff);
            }
            Value::Seq(items) => {
                h.write_u8(2);
                h.write_usize(items.len());
                items.iter().for_each(|n| n.hash_into(h));
            }
            Value::Map(pairs) => {
                h.write_u8(3);
                h.write_usize(pairs.len());
                for (k, v) in pairs {
                    k.hash_into(h);
                    v.hash_into(h);
                }
            }
        }
    }

    /// A scalar's text as written (empty for collections).
    pub(crate) fn text(&self) -> &str {
        match &self.value {
            Value::Scalar(_, t) => t,
            _ => "",
        }
    }

    /// The string value of a scalar string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(serde_json::Value::String(s), _) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(serde_json::Value::Null, _))
    }

    /// What kind of value this is, for messages ("a list", "a string", ...).
    pub(crate) fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar(v, _) => match v {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                _ => "a value",
            },
        }
    }
}

/// Why a text is not a stub file at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) at: At,
    pub(crate) message: String,
}

/// Turns saphyr's character indexes into byte offsets, walking forward from
/// the last one (events come mostly in order).
struct Bytes<'t> {
    text: &'t str,
    chars: usize,
    bytes: usize,
}

impl Bytes<'_> {
    fn offset(&mut self, char_index: usize) -> usize {
        if char_index < self.chars {
            (self.chars, self.bytes) = (0, 0);
        }
        let rest = &self.text[self.bytes..];
        let step = rest.char_indices().nth(char_index - self.chars).map_or(rest.len(), |(b, _)| b);
        self.bytes += step;
        self.chars = char_index;
        self.bytes
    }

    fn at(&mut self, m: &saphyr_parser::Marker) -> At {
        At { line: m.line(), col: m.col() + 1, offset: self.offset(m.index()) }
    }
}

/// Parses every document of `text` (usually one). Never panics; deep nesting and
/// alias bombs are refused with a position.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    walk(text, false, |n| docs.push(n))?;
    Ok(docs)
}

/// Parses `text` and hands over its stubs one at a time, as each ends: the
/// items of a document that is a list, else each document that is not null.
/// Only one stub's tree is alive at a time (a file of 10,000 stubs never
/// exists as one tree). On a syntax error, the stubs already handed over came
/// before it: the caller drops them.
pub(crate) fn parse_items(text: &str, each: impl FnMut(Node)) -> Result<(), SyntaxError> {
    walk(text, true, each)
}

/// The parser: each document (with `stubs`: each stub of each document) to `emit`.
fn walk(text: &str, stubs: bool, mut emit: impl FnMut(Node)) -> Result<(), SyntaxError> {
    let limit = expansion_limit(text.len());
    let mut parser = Parser::new_from_str(text);
    // Open collections: the node being built and, for maps, a pending key.
    enum Open {
        Seq(At, usize, Vec<Node>),
        Map(At, usize, Vec<(Node, Node)>, Option<Node>),
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut weight: u64 = 0;
    let mut bytes = Bytes { text, chars: 0, bytes: 0 };
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(ok) => ok,
            Err(e) => {
                let at = bytes.at(e.marker());
                return Err(SyntaxError { at, message: format!("not valid YAML/JSON: {}", e.info()) });
            }
        };
        let here = bytes.at(&span.start);
        let done: Option<(Node, usize)> = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError { at: here, message: format!("nested more than {MAX_DEPTH} levels deep") });
                }
                weight += 1;
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Open::Seq(here, anchor, Vec::new()));
                } else {
                    stack.push(Open::Map(here, anchor, Vec::new(), None));
                }
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(at, anchor, items)) => Some((Node { at, value: Value::Seq(items) }, anchor)),
                Some(Open::Map(at, anchor, pairs, _)) => Some((Node { at, value: Value::Map(pairs) }, anchor)),
                None => None,
            },
            Event::Scalar(text, style, anchor, _) => {
                weight += 1 + text.len() as u64;
                let value = if style == ScalarStyle::Plain { resolve(&text) } else { text.to_string().into() };
                Some((Node { at: here, value: Value::Scalar(value, text.into_owned()) }, anchor))
            }
            Event::Alias(id) => {
                let Some(node) = anchors.get(&id) else {
                    return Err(SyntaxError { at: here, message: "alias to an unknown anchor".into() });
                };
                weight += node_weight(node);
                let mut node = node.clone();
                node.at = here;
                Some((node, 0))
            }
            _ => None,
        };
        if weight > limit {
            return Err(SyntaxError { at: here, message: format!("aliases expand the file past {limit} units") });
        }
        let Some((node, anchor)) = done else { continue };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        let depth = stack.len();
        match stack.last_mut() {
            // With `stubs`, a top-level list's items went out one by one.
            None if stubs && (node.is_null() || matches!(node.value, Value::Seq(_))) => {}
            None => emit(node),
            Some(Open::Seq(..)) if stubs && depth == 1 => emit(node),
            Some(Open::Seq(_, _, items)) => items.push(node),
            Some(Open::Map(_, _, pairs, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
    }
    Ok(())
}

fn node_weight(node: &Node) -> u64 {
    match &node.value {
        Value::Scalar(_, t) => 1 + t.len() as u64,
        Value::Seq(items) => 1 + items.iter().map(node_weight).sum::<u64>(),
        Value::Map(pairs) => 1 + pairs.iter().map(|(k, v)| node_weight(k) + node_weight(v)).sum::<u64>(),
    }
}

/// A plain scalar under YAML 1.2's core schema.
fn resolve(text: &str) -> serde_json::Value {
    use serde_json::Value as J;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return J::Null,
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return J::from(i);
        }
        if let Ok(u) = text.trim_start_matches('+').parse::<u64>() {
            return J::from(u);
        }
    }
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return J::Number(n);
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => J::String("Infinity".into()),
        "-.inf" | "-.Inf" | "-.INF" => J::String("-Infinity".into()),
        ".nan" | ".NaN" | ".NAN" => J::String("NaN".into()),
        _ => J::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_scalars() {
        let docs = parse("a: 1\nb:\n  - \"1\"\n  - x\n  - true\n").unwrap();
        let m = docs[0].as_map().unwrap();
        assert_eq!(m[0].0.text(), "a");
        assert_eq!(m[0].1.to_json(), serde_json::json!(1));
        assert_eq!((m[1].0.at.line, m[1].0.at.col), (2, 1));
        let seq = m[1].1.as_seq().unwrap();
        assert_eq!(seq[0].to_json(), serde_json::json!("1"));
        assert_eq!((seq[1].at.line, seq[1].at.col), (4, 5));
        assert_eq!(seq[2].to_json(), serde_json::json!(true));
    }

    #[test]
    fn offsets_are_bytes_after_non_ascii_text() {
        let text = "# café, naïve\nname: \"héllo\"\nnext: x\n";
        let docs = parse(text).unwrap();
        let m = docs[0].as_map().unwrap();
        let next = &m[1].0;
        assert_eq!((next.at.line, next.at.col), (3, 1));
        assert_eq!(Some(next.at.offset), text.find("next"));
        let value = &m[0].1;
        assert_eq!(Some(value.at.offset), text.find("\"hé"));
    }

    #[test]
    fn json_parses_too() {
        let docs = parse(r#"{"method": "a.B/C", "n": [1, 2.5, null]}"#).unwrap();
        assert_eq!(docs[0].to_json(), serde_json::json!({"method": "a.B/C", "n": [1, 2.5, null]}));
    }

    #[test]
    fn bombs_and_depth_are_refused() {
        let deep = "[".repeat(500);
        assert!(parse(&deep).is_err());
        let mut s = String::from("a: &x [");
        s.push_str(&vec!["lol"; 1000].join(", "));
        s.push_str("]\nb: [");
        s.push_str(&vec!["*x"; 2000].join(", "));
        s.push_str("]\n");
        assert!(parse(&s).unwrap_err().message.contains("aliases"));
    }

    /// What `parse_items` should give: the items of list documents, the other
    /// documents that are not null.
    fn flat(docs: Vec<Node>) -> Vec<Node> {
        docs.into_iter()
            .flat_map(|d| match d.value {
                Value::Seq(items) => items,
                _ if d.is_null() => Vec::new(),
                _ => vec![d],
            })
            .collect()
    }

    fn items(text: &str) -> Result<Vec<Node>, SyntaxError> {
        let mut out = Vec::new();
        parse_items(text, |n| out.push(n))?;
        Ok(out)
    }

    #[test]
    fn items_come_one_at_a_time_as_parse_has_them() {
        let text = "- a: 1\n- &x {b: [2, 3]}\n- *x\n---\nc: 4\n---\n---\n[5, {d: 6}]\n";
        let got = items(text).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got, flat(parse(text).unwrap()));
        assert_eq!(got[2].to_json(), serde_json::json!({"b": [2, 3]}), "an alias to an earlier item");
        assert_eq!((got[3].at.line, got[3].at.col), (5, 1));
    }

    /// `seed` with 1 to `most - 1` random bytes changed, removed or inserted
    /// (YAML's punctuation favoured).
    fn mutate(rng: &mut fastrand::Rng, seed: &str, most: usize) -> String {
        let mut b = seed.as_bytes().to_vec();
        for _ in 0..rng.usize(1..most) {
            let i = rng.usize(..b.len());
            match rng.u8(..3) {
                0 => b[i] = rng.u8(..128),
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, b"{}[]:-&*!|>'\"\n #,"[rng.usize(..17)]),
            }
            if b.is_empty() {
                break;
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    #[test]
    fn mutated_text_gives_the_same_items_as_parse() {
        let seed = "- method: a.B/C\n  id: &i x\n  match: {request: {equals: {n: [1, 2]}}}\n- {method: a.B/D, id: *i}\n---\nmethod: z\n";
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..3000 {
            let text = mutate(&mut rng, seed, 5);
            match (parse(&text), items(&text)) {
                (Ok(docs), Ok(got)) => assert_eq!(got, flat(docs), "{text:?}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{text:?}"),
                (a, b) => panic!("parse {a:?} but parse_items {b:?} for {text:?}"),
            }
        }
    }

    #[test]
    fn mutated_text_never_panics() {
        let seed = "- method: a.B/C\n  match:\n    request:\n      equals: {name: \"x\", n: [1, 2]}\n  answer:\n    message: {id: '1'}\n";
        let mut rng = fastrand::Rng::with_seed(13);
        for _ in 0..3000 {
            let _ = parse(&mutate(&mut rng, seed, 6));
        }
    }
}
