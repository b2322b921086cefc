//! Reading a `--data` file without letting it hang or exhaust the process.
//!
//! `yaml_serde` (libyaml underneath) has two weak spots for hostile input: its
//! scanner is quadratic in the nesting depth of flow collections (100k levels
//! of `{a: ` took 53 s before its recursion limit said no), and its alias
//! guard bounds alias *jumps*, not the size they expand to (one anchor of 1,000
//! nodes referenced 1,000 times is a million nodes). So before yaml_serde sees
//! a text, one streaming pass over its events (saphyr-parser, which has a flow
//! depth limit of its own) stops at the first collection nested deeper than
//! [`MAX_DEPTH`] and adds up what every alias expands to, stopping as soon as
//! the total passes [`expansion_limit`]. Only then does yaml_serde parse it, so
//! scalars resolve exactly as they always did.
//!
//! The file itself must be a regular file of at most [`MAX_FILE_SIZE`] bytes:
//! `/dev/zero` or a FIFO is refused before anything is read.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use saphyr_parser::{Event, Parser, Span};

/// The largest `--data` file read.
pub(crate) const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// The deepest nesting of collections accepted (yaml_serde's own recursion
/// limit is 128 as well, so nothing it would accept is refused).
pub(crate) const MAX_DEPTH: usize = 128;

/// The expanded size allowed below which any file passes, in units of one per
/// node plus one per byte of scalar text.
const MIN_EXPANSION_LIMIT: u64 = 1 << 20;

/// Aliases may make the document at most this many times as large as the text
/// (a file without aliases is about one unit per byte or less).
const EXPANSION_FACTOR: u64 = 4;

/// What the parsed document may weigh, in units of one per node plus one per
/// byte of scalar text, for a text of `len` bytes.
pub(crate) fn expansion_limit(len: usize) -> u64 {
    (len as u64).saturating_mul(EXPANSION_FACTOR).max(MIN_EXPANSION_LIMIT)
}

/// Why a text was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataError {
    /// Not YAML (or JSON) at all.
    Syntax(String),
    /// Collections nested deeper than [`MAX_DEPTH`]; line and column (1-based)
    /// of the collection that went too deep.
    TooDeep { line: usize, column: usize },
    /// Aliases expand the document past its limit; where the expansion passed it.
    TooLarge { line: usize, column: usize, limit: u64 },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Syntax(e) => write!(f, "not valid YAML/JSON: {e}"),
            DataError::TooDeep { line, column } => {
                write!(f, "collections are nested more than {MAX_DEPTH} levels deep (at line {line}, column {column})")
            }
            DataError::TooLarge { line, column, limit } => write!(
                f,
                "aliases expand it past {limit} nodes and scalar bytes (at line {line}, column {column}); \
                 write the repeated records out instead of referencing anchors"
            ),
        }
    }
}

/// Reads and parses a `--data` file: a regular file of at most
/// [`MAX_FILE_SIZE`] bytes, UTF-8, YAML or JSON, checked by [`parse`].
pub(crate) fn read(path: &Path) -> Result<serde_json::Value, String> {
    let show = path.display();
    // Looked at before opening: opening a FIFO for reading blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read data file '{show}': {e}"))?;
    if !meta.is_file() {
        return Err(format!("data file '{show}' is not a regular file"));
    }
    let too_large = || format!("data file '{show}' is larger than the limit of {} MiB", MAX_FILE_SIZE >> 20);
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read data file '{show}': {e}"))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!("cannot read data file '{show}': not UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to())
    })?;
    parse(&text).map_err(|e| format!("data file '{show}' is {}", refusal(&e)))
}

fn refusal(e: &DataError) -> String {
    match e {
        DataError::Syntax(_) => e.to_string(),
        _ => format!("refused: {e}"),
    }
}

/// Parses YAML or JSON text into a JSON value, refusing deep nesting and alias
/// bombs before yaml_serde parses it (see the module documentation).
pub(crate) fn parse(text: &str) -> Result<serde_json::Value, DataError> {
    precheck(text)?;
    yaml_serde::from_str(text).map_err(|e| DataError::Syntax(e.to_string()))
}

/// One open collection: where it started and the expanded size before it.
struct Open {
    anchor: usize,
    size_before: u64,
}

/// The streaming pass: nesting depth and expanded size, stopping at the first
/// event past either limit.
fn precheck(text: &str) -> Result<(), DataError> {
    let limit = expansion_limit(text.len());
    let mut parser = Parser::new_from_str(text);
    let mut open: Vec<Open> = Vec::new();
    // Expanded size of every anchored node seen so far (a later anchor of the
    // same name gets a new id from the parser).
    let mut anchors: HashMap<usize, u64> = HashMap::new();
    let mut size: u64 = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            if e.info() == "recursion limit exceeded" {
                // saphyr-parser's own flow limit (255), met while scanning ahead.
                DataError::TooDeep { line: e.marker().line(), column: e.marker().col() + 1 }
            } else {
                DataError::Syntax(e.to_string())
            }
        })?;
        let grow = |size: &mut u64, by: u64| {
            *size = size.saturating_add(by);
            if *size > limit { Err(too_large(&span, limit)) } else { Ok(()) }
        };
        match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    let (line, column) = position(&span);
                    return Err(DataError::TooDeep { line, column });
                }
                open.push(Open { anchor, size_before: size });
                grow(&mut size, 1)?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(done) = open.pop()
                    && done.anchor != 0
                {
                    anchors.insert(done.anchor, size - done.size_before);
                }
            }
            Event::Scalar(value, _, anchor, _) => {
                let units = 1 + value.len() as u64;
                if anchor != 0 {
                    anchors.insert(anchor, units);
                }
                grow(&mut size, units)?;
            }
            Event::Alias(id) => grow(&mut size, anchors.get(&id).copied().unwrap_or(1))?,
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd => {}
        }
    }
    Ok(())
}

fn position(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

fn too_large(span: &Span, limit: u64) -> DataError {
    let (line, column) = position(span);
    DataError::TooLarge { line, column, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml_serde_says(text: &str) -> Result<serde_json::Value, String> {
        yaml_serde::from_str(text).map_err(|e| e.to_string())
    }

    /// A bomb: one anchor of `width` scalars, referenced `refs` times.
    fn alias_bomb(width: usize, refs: usize) -> String {
        let mut s = String::from("a: &x [");
        s.push_str(&vec!["lol"; width].join(", "));
        s.push_str("]\nb: [");
        s.push_str(&vec!["*x"; refs].join(", "));
        s.push_str("]\n");
        s
    }

    #[test]
    fn ordinary_data_parses_as_yaml_serde_parses_it() {
        let text = "users.User:\n  - {id: u1, name: Ann, age: 30, createdAt: \"0\"}\n  - id: u2\n    tags: [a, b]\n    on: true\n    n: 0x10\n    f: .inf\n    none: ~\n";
        assert_eq!(parse(text).unwrap(), yaml_serde_says(text).unwrap());
        let json = r#"{"users.User": [{"id": "u1", "nested": {"a": [1, 2.5, null, "x"]}}]}"#;
        assert_eq!(parse(json).unwrap(), yaml_serde_says(json).unwrap());
        assert_eq!(parse("").unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn anchors_used_a_few_times_are_fine() {
        let text = "defaults: &d {name: x, age: 1}\nusers.User:\n  - *d\n  - *d\n  - {id: u3}\n";
        let v = parse(text).unwrap();
        assert_eq!(v, yaml_serde_says(text).unwrap());
        assert_eq!(v["users.User"][1]["name"], "x");
    }

    #[test]
    fn deep_flow_nesting_is_refused_at_the_limit() {
        for opener in ["[", "{a: ", "[{a: ", "- ", "? ", "{? ", "[ '[', ", "{\"k\": "] {
            // 100k levels took 53 s in yaml_serde alone; refused at level 129 here.
            let text = opener.repeat(100_000);
            match parse(&text) {
                Err(DataError::TooDeep { line: 1, .. }) => {}
                other => panic!("{opener:?}: {other:?}"),
            }
        }
        let closed = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(parse(&closed), Err(DataError::TooDeep { line: 1, column: 129 })), "{:?}", parse(&closed));
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted_if_yaml_serde_accepts_it() {
        // yaml_serde's own recursion limit decides the last few levels.
        for depth in [1, 10, 100, 120] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(parse(&text).map_err(|e| e.to_string()), yaml_serde_says(&text), "depth {depth}");
        }
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&" ".repeat(i));
            text.push_str("a:\n");
        }
        assert!(matches!(parse(&text), Err(DataError::TooDeep { line: 129, column: 129 })), "{:?}", parse(&text));
    }

    #[test]
    fn one_level_of_aliasing_cannot_blow_up() {
        // 1,000 x 1,000: a million nodes from ~8 KB of text (the 100 KB version aborted the process).
        let text = alias_bomb(1000, 1000);
        assert!(matches!(parse(&text), Err(DataError::TooLarge { line: 2, .. })), "{:?}", parse(&text));
        // The classic nested one too.
        let mut lol = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (i, c) in "bcdefghi".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            lol.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(matches!(parse(&lol), Err(DataError::TooLarge { .. })), "{:?}", parse(&lol));
        // A modest expansion passes.
        let small = alias_bomb(10, 10);
        assert_eq!(parse(&small).unwrap(), yaml_serde_says(&small).unwrap());
    }

    #[test]
    fn long_scalars_count_by_their_bytes() {
        // One 300 KB string referenced 20 times: few nodes, 6 MB of text.
        let text = format!("a: &s {}\nb: [{}]\n", "x".repeat(300_000), vec!["*s"; 20].join(", "));
        assert!(matches!(parse(&text), Err(DataError::TooLarge { .. })), "{:?}", parse(&text));
    }

    #[test]
    fn files_that_are_not_regular_or_too_large_are_refused_before_reading() {
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("'/dev/zero' is not a regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::File::create(&big).unwrap().set_len(MAX_FILE_SIZE + 1).unwrap();
        let err = read(&big).unwrap_err();
        assert!(err.contains("larger than the limit of 64 MiB"), "{err}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, b"a: \xff\n").unwrap();
        let err = read(&bad).unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
        let deep = dir.path().join("deep.yaml");
        std::fs::write(&deep, "{a: ".repeat(100_000)).unwrap();
        let err = read(&deep).unwrap_err();
        assert!(err.contains("deep.yaml' is refused: collections are nested more than 128"), "{err}");
        let missing = read(&dir.path().join("nope.yaml")).unwrap_err();
        assert!(missing.starts_with("cannot read data file"), "{missing}");
    }

    /// A random JSON-ish value of bounded size.
    fn random_value(rng: &mut fastrand::Rng, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        match rng.usize(0..if depth > 5 { 4 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.bool()),
            2 => Value::from(rng.i64(-1_000_000..1_000_000)),
            3 => {
                let chars =
                    ["a", "b", " ", "[", "]", "{", "}", ",", ":", "#", "'", "\"", "&x", "*x", "-", "?", "é", "\n", "|"];
                Value::String((0..rng.usize(0..12)).map(|_| chars[rng.usize(0..chars.len())]).collect())
            }
            4 | 5 => Value::Array((0..rng.usize(0..5)).map(|_| random_value(rng, depth + 1)).collect()),
            _ => Value::Object(
                (0..rng.usize(0..5)).map(|i| (format!("k{i}{}", rng.u8(..)), random_value(rng, depth + 1))).collect(),
            ),
        }
    }

    /// Random edits of a valid text: the parse never panics, and whatever it
    /// accepts is exactly what yaml_serde makes of it.
    #[test]
    fn random_and_mutated_texts_agree_with_yaml_serde_or_are_refused() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_da7a);
        let pieces = [
            "[", "]", "{", "}", ",", ": ", "- ", "? ", "&a ", "*a", "\n", "  ", "'", "\"", "#", "|", "!!str ", "\t",
            "---\n",
        ];
        let mut accepted = 0;
        let mut stricter = 0;
        for round in 0..600 {
            let value = random_value(&mut rng, 0);
            let mut text = if round % 2 == 0 {
                yaml_serde::to_string(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            // Valid as written: accepted and equal.
            assert_eq!(parse(&text).unwrap(), yaml_serde_says(&text).unwrap(), "{text:?}");
            for _ in 0..rng.usize(0..6) {
                let mut at = rng.usize(0..=text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                if rng.bool() {
                    text.insert_str(at, pieces[rng.usize(0..pieces.len())]);
                } else {
                    let mut end = (at + rng.usize(1..4)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, "");
                }
            }
            match parse(&text) {
                Ok(v) => {
                    accepted += 1;
                    assert_eq!(Ok(v), yaml_serde_says(&text), "{text:?}");
                }
                Err(DataError::TooDeep { .. } | DataError::TooLarge { .. }) => {
                    panic!("{text:?} is neither deep nor large")
                }
                Err(DataError::Syntax(_)) => stricter += usize::from(yaml_serde_says(&text).is_ok()),
            }
        }
        // Texts only the pre-check refuses (saphyr is YAML 1.2, libyaml 1.1): shown, not hidden.
        eprintln!("mutated texts: {accepted} accepted, {stricter} refused that yaml_serde alone accepts");
        assert!(accepted > 100, "only {accepted} mutated texts parsed");
    }

    /// Hostile shapes of random depth, width and mix: deep ones are refused as
    /// deep, bombs as too large, and none of them is parsed by yaml_serde.
    #[test]
    fn random_hostile_inputs_are_refused_for_what_they_are() {
        let mut rng = fastrand::Rng::with_seed(0xb0_0b);
        let block = ["- ", "? ", "- ? "];
        // The last one breaks the line: only where no block indentation applies.
        let flow = ["[", "{a: ", "[{b: ", "{\"k\": ", "[ \"]\", ", "['}', ", "{? ", "[!!str x, &y [", "[ # ]\n"];
        for _ in 0..200 {
            // Some block levels, then flow levels: every prefix is valid YAML so far.
            let depth = MAX_DEPTH + 1 + rng.usize(0..20_000);
            let in_block = rng.usize(0..depth.min(2 * MAX_DEPTH));
            let text: String = (0..depth)
                .map(|i| {
                    if i < in_block {
                        block[rng.usize(0..block.len())]
                    } else {
                        flow[rng.usize(0..flow.len() - usize::from(in_block > 0))]
                    }
                })
                .collect();
            match parse(&text) {
                Err(DataError::TooDeep { .. }) => {}
                other => panic!("depth {depth}: {other:?} for {:?}", &text[..80.min(text.len())]),
            }
        }
        for _ in 0..50 {
            let width = rng.usize(300..3000);
            let refs = rng.usize(2000..6000);
            let text = alias_bomb(width, refs);
            assert!(matches!(parse(&text), Err(DataError::TooLarge { .. })), "{width} x {refs}");
        }
    }
}
