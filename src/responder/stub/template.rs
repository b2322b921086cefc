//! Answer templates: string values with `{{ ... }}` in Go's text/template syntax
//! (as GripMock's stub files write them), rendered per call with gtmpl.
//!
//! The context: `.Request` (the request's JSON view, proto field names),
//! `.Requests` (every message of a client stream), `.Headers` (name -> first
//! value), `.MessageIndex` (the reply's position in a stream; for bidi, the
//! incoming message's). Functions: `uuid`, `unix`, `unixMilli`, `randInt MIN MAX`.
//! A value that is one whole action (`"{{ .Request.qty }}"`) keeps the type it
//! renders to (number, boolean), so it can fill a numeric or boolean field.

use std::collections::HashMap;

use gtmpl::{Context, Template, Value};
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::Value as J;

use crate::Error;

/// Whether a string is a template.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("{{")
}

fn template(text: &str) -> Result<Template, String> {
    let mut t = Template::default();
    t.add_funcs(super::template_fn::FUNCS);
    t.parse(text).map_err(|e| e.to_string())?;
    Ok(t)
}

/// Every `{{` closed by a `}}` outside quotes and comments. gtmpl 0.7's lexer
/// never returns on an action left open at the end of the text, so such text
/// is refused before it sees it.
fn actions_closed(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i..].starts_with(b"{{") {
            i += 1;
            continue;
        }
        i += 2;
        loop {
            let Some(&c) = b.get(i) else { return false };
            match c {
                b'"' | b'\'' | b'`' => {
                    i += 1;
                    while let Some(&d) = b.get(i) {
                        i += if d == b'\\' && c != b'`' { 2 } else { 1 };
                        if d == c {
                            break;
                        }
                    }
                }
                b'/' if b[i..].starts_with(b"/*") => {
                    let Some(end) = text[i + 2..].find("*/") else { return false };
                    i += end + 4;
                }
                b'}' if b[i..].starts_with(b"}}") => {
                    i += 2;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    true
}

/// Checks a template's syntax (at load).
pub(crate) fn check(text: &str) -> Result<(), String> {
    if text.len() > 4096 {
        return Err("a template is at most 4096 characters".into());
    }
    if !actions_closed(text) {
        return Err("an action `{{` is not closed by `}}`".into());
    }
    std::panic::catch_unwind(|| template(text)).map_err(|_| "the template parser failed on it".to_owned())??;
    unknown_fields(text)
}

/// What a template can read at its top level.
const FIELDS: &[&str] = &["Request", "Requests", "Headers", "MessageIndex", "RequestTime", "Timestamp"];

/// Refuses a top-level `.Name` the context lacks (`.StubID`): it would print
/// `<no value>`. Inside `range` or `with` the dot moves, so those are not
/// checked; lower-case names are message fields, not checked either.
fn unknown_fields(text: &str) -> Result<(), String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"(?:^|[\s(|{])\.([A-Z][A-Za-z0-9_]*)").expect("a valid pattern"));
    if text.contains("range") || text.contains("with") {
        return Ok(());
    }
    match re.captures_iter(text).map(|c| c.get(1).map_or("", |m| m.as_str())).find(|n| !FIELDS.contains(n)) {
        Some(name) => {
            Err(format!("`.{name}` is not something a template can read (it can read .{})", FIELDS.join(", .")))
        }
        None => Ok(()),
    }
}

/// The `.Request.a.b` paths a template reads (to check them against the schema).
pub(crate) fn request_paths(text: &str) -> Vec<Vec<String>> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re =
        RE.get_or_init(|| regex::Regex::new(r"\.Request((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").expect("a valid pattern"));
    re.captures_iter(text).map(|c| c[1].split('.').filter(|s| !s.is_empty()).map(str::to_owned).collect()).collect()
}

fn to_value(j: &J) -> Value {
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::Nil,
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        J::Object(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect::<HashMap<_, _>>()),
    }
}

/// What a template may read for one call.
#[derive(Debug, Default)]
pub(crate) struct Input {
    pub(crate) request: J,
    pub(crate) requests: Vec<J>,
    pub(crate) headers: J,
    /// When the call was answered (RFC 3339), the same in every template of it.
    pub(crate) time: String,
}

/// A reply whose message has templates: its JSON, rendered per call, and
/// each template string in it parsed once, at load.
#[derive(Debug)]
pub(crate) struct Templated {
    json: J,
    desc: MessageDescriptor,
    parsed: HashMap<String, Parsed>,
}

/// A template parsed once (at load), rendered per call.
pub(crate) struct Parsed(Template);

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Parsed").field(&self.0.text).finish()
    }
}

impl Parsed {
    /// Parses a template already checked with [`check`].
    pub(crate) fn new(text: &str) -> Result<Parsed, String> {
        if !actions_closed(text) {
            return Err("an action `{{` is not closed by `}}`".into());
        }
        template(text).map(Parsed)
    }

    fn render(&self, cx: &Context) -> Result<String, Error> {
        self.0.render(cx).map_err(|e| Error::internal(format!("stub template `{}`: {e}", self.0.text)))
    }
}

impl Input {
    pub(crate) fn new(request: &J, requests: Vec<J>, headers: &J) -> Self {
        Input { request: request.clone(), requests, headers: headers.clone(), time: super::template_fn::now_text() }
    }

    fn context(&self, index: usize) -> Context {
        let mut cx = HashMap::new();
        cx.insert("Request".to_owned(), to_value(&self.request));
        cx.insert("Requests".to_owned(), Value::Array(self.requests.iter().map(to_value).collect()));
        cx.insert("Headers".to_owned(), to_value(&self.headers));
        cx.insert("MessageIndex".to_owned(), Value::from(index as i64));
        let time = Value::String(self.time.clone());
        cx.insert("RequestTime".to_owned(), time.clone());
        cx.insert("Timestamp".to_owned(), time);
        Context::from(Value::Map(cx))
    }

    /// Renders a text template (a header or trailer value, an error message)
    /// for this call.
    pub(crate) fn render_text(&self, parsed: &Parsed, index: usize) -> Result<String, Error> {
        parsed.render(&self.context(index))
    }
}

impl Templated {
    /// A reply's JSON with its template strings (checked already) parsed.
    pub(crate) fn new(json: J, desc: MessageDescriptor) -> Result<Self, String> {
        fn collect(j: &J, out: &mut HashMap<String, Parsed>) -> Result<(), String> {
            match j {
                J::String(s) if is_template(s) && !out.contains_key(s) => {
                    out.insert(s.clone(), Parsed::new(s)?);
                }
                J::Array(a) => a.iter().try_for_each(|v| collect(v, out))?,
                J::Object(m) => m.values().try_for_each(|v| collect(v, out))?,
                _ => {}
            }
            Ok(())
        }
        let mut parsed = HashMap::new();
        collect(&json, &mut parsed)?;
        Ok(Templated { json, desc, parsed })
    }

    /// Renders every template and decodes the result as the output type.
    pub(crate) fn render(&self, input: &Input, index: usize) -> Result<DynamicMessage, Error> {
        let json = fill(&self.json, &input.context(index), &self.parsed)?;
        DynamicMessage::deserialize_with_options(self.desc.clone(), json, &DeserializeOptions::new()).map_err(|e| {
            Error::internal(format!(
                "a stub template rendered a value that is not a valid {}: {e}",
                self.desc.full_name()
            ))
        })
    }
}

fn fill(j: &J, cx: &Context, parsed: &HashMap<String, Parsed>) -> Result<J, Error> {
    Ok(match j {
        J::String(s) if is_template(s) => {
            let out = match parsed.get(s) {
                Some(p) => p.render(cx)?,
                None => return Err(Error::internal(format!("stub template `{s}` was not parsed at load"))),
            };
            let whole = s.trim().starts_with("{{") && s.trim().ends_with("}}") && s.matches("{{").count() == 1;
            match serde_json::from_str::<J>(&out) {
                Ok(v @ (J::Number(_) | J::Bool(_))) if whole => v,
                _ => J::String(out),
            }
        }
        J::Array(a) => J::Array(a.iter().map(|v| fill(v, cx, parsed)).collect::<Result<_, _>>()?),
        J::Object(m) => {
            J::Object(m.iter().map(|(k, v)| Ok((k.clone(), fill(v, cx, parsed)?))).collect::<Result<_, Error>>()?)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_syntax() {
        assert_eq!(
            request_paths("{{ .Request.user_id }}-{{.Request.address.city}}"),
            vec![vec!["user_id".to_owned()], vec!["address".to_owned(), "city".to_owned()]]
        );
        assert!(check("{{ .Request.x }}").is_ok());
        assert!(check("{{ .Request.x ").is_err());
        assert!(check("{{ randInt 1 5 }} {{ uuid }} {{ unix }}").is_ok());
        assert!(check("{{ \"}}\" }}").is_ok());
        for open in ["{{ .A", "{{ \"}}\" ", "{{ `}}` ", "{{ /* }} */", "a {{ 1 ", "{{ .A }} {{ ("] {
            assert!(check(open).is_err(), "{open}");
        }
    }

    /// Random template-like text: every check returns (within seconds), never hangs.
    #[test]
    fn random_templates_never_hang() {
        let alphabet: &[&str] = &[
            "{{",
            "}}",
            "\"",
            "'",
            "`",
            "/*",
            "*/",
            " ",
            ".A",
            ".Request.x",
            "(",
            ")",
            "|",
            "$x",
            ":=",
            "1",
            "if",
            "end",
            "range",
            "-",
            "\\",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let cases: Vec<String> =
            (0..2000).map(|_| (0..rng.usize(1..12)).map(|_| alphabet[rng.usize(..alphabet.len())]).collect()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for c in &cases {
                let _ = check(c);
            }
            let _ = tx.send(());
        });
        assert!(rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), "a template check did not return");
    }
}

#[cfg(test)]
mod unknown_tests {
    use super::*;

    #[test]
    fn unknown_functions_are_refused_at_load() {
        let e = check("{{ faker.Person.FirstName }}").unwrap_err();
        assert!(e.contains("faker"), "{e}");
        let e = check("{{ backoff 1 2 }}").unwrap_err();
        assert!(e.contains("backoff"), "{e}");
        let e = check("{{ .StubID }}").unwrap_err();
        assert!(e.contains("`.StubID` is not something a template can read"), "{e}");
        assert!(check("{{ .Request.Foo }} {{ (index .Requests 0).qty }} {{ .RequestTime }}").is_ok());
        assert!(check("{{ range .Requests }}{{ .Qty }}{{ end }}").is_ok());
    }
}
