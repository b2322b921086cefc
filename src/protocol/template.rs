//! `google.api.http` path templates: parsing (once per schema) and matching
//! request paths against them, capturing variables.
//!
//! Grammar (google/api/http.proto):
//! `Template = "/" Segments [ Verb ]`, `Segments = Segment { "/" Segment }`,
//! `Segment = "*" | "**" | LITERAL | Variable`,
//! `Variable = "{" FieldPath [ "=" Segments ] "}"`, `Verb = ":" LITERAL`.
//! `{var}` is `{var=*}`; `**` matches the rest of the path and must come last.

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A variable: the field path it sets and the template segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Var {
    pub(crate) field_path: Vec<String>,
    start: usize,
    end: usize,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segs: Vec<Seg>,
    verb: Option<String>,
    pub(crate) vars: Vec<Var>,
}

impl Template {
    /// Parses a template, or says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let body = text.strip_prefix('/').ok_or_else(|| format!("template {text:?} does not start with '/'"))?;
        // The verb is a ':' after the last '/' and outside braces.
        let tail_start = body.rfind(['/', '}']).map_or(0, |i| i + 1);
        let (body, verb) = match body[tail_start..].find(':') {
            Some(i) => {
                let verb = &body[tail_start + i + 1..];
                if verb.is_empty() || verb.contains(['/', '{', '}', '*']) {
                    return Err(format!("template {text:?} has a bad verb {verb:?}"));
                }
                (&body[..tail_start + i], Some(verb.to_owned()))
            }
            None => (body, None),
        };
        let mut segs = Vec::new();
        let mut vars = Vec::new();
        let mut rest = body;
        loop {
            if let Some(after) = rest.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| format!("template {text:?}: '{{' without '}}'"))?;
                let inner = &after[..close];
                let (path, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field_path: Vec<String> = path.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    return Err(format!("template {text:?}: bad field path {path:?}"));
                }
                let start = segs.len();
                for part in pattern.split('/') {
                    segs.push(segment(part, text)?);
                }
                vars.push(Var { field_path, start, end: segs.len() });
                rest = &after[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                segs.push(segment(&rest[..end], text)?);
                rest = &rest[end..];
            }
            match rest.strip_prefix('/') {
                Some(r) => rest = r,
                None if rest.is_empty() => break,
                None => return Err(format!("template {text:?}: expected '/' before {rest:?}")),
            }
        }
        if segs.iter().rev().skip(1).any(|s| *s == Seg::Rest) {
            return Err(format!("template {text:?}: '**' must be the last segment"));
        }
        Ok(Template { segs, verb, vars })
    }

    /// Number of literal segments (more literals: a more specific template).
    pub(crate) fn literals(&self) -> usize {
        self.segs.iter().filter(|s| matches!(s, Seg::Literal(_))).count()
    }

    /// Matches a request path (no query); the captured value of every variable,
    /// percent-decoded segment by segment (multi-segment values joined by '/').
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<String>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
        let rest = self.segs.last() == Some(&Seg::Rest);
        let fixed = self.segs.len() - usize::from(rest);
        if parts.len() < fixed || (!rest && parts.len() != fixed) {
            return None;
        }
        let decoded: Vec<String> = parts.iter().map(|p| decode(p)).collect::<Option<_>>()?;
        for (seg, part) in self.segs.iter().zip(&decoded) {
            match seg {
                Seg::Literal(l) if l != part => return None,
                Seg::One if part.is_empty() => return None,
                _ => {}
            }
        }
        Some(
            self.vars
                .iter()
                .map(|v| {
                    let end = if rest && v.end == self.segs.len() { decoded.len() } else { v.end };
                    decoded[v.start..end].join("/")
                })
                .collect(),
        )
    }
}

fn segment(part: &str, text: &str) -> Result<Seg, String> {
    match part {
        "*" => Ok(Seg::One),
        "**" => Ok(Seg::Rest),
        "" => Err(format!("template {text:?} has an empty segment")),
        lit if lit.contains(['{', '}', '*', '=']) => Err(format!("template {text:?}: bad segment {lit:?}")),
        lit => Ok(Seg::Literal(lit.to_owned())),
    }
}

/// Percent-decodes one path segment (UTF-8 required).
fn decode(seg: &str) -> Option<String> {
    percent_encoding::percent_decode_str(seg).decode_utf8().ok().map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &Template) -> Vec<String> {
        t.vars.iter().map(|v| v.field_path.join(".")).collect()
    }

    #[test]
    fn parses_and_matches_the_forms_of_the_grammar() {
        let t = Template::parse("/v1/{name=shelves/*/notes/*}").unwrap();
        assert_eq!(vars(&t), ["name"]);
        assert_eq!(t.matches("/v1/shelves/s1/notes/n%201"), Some(vec!["shelves/s1/notes/n 1".to_owned()]));
        assert_eq!(t.matches("/v1/shelves/s1/notes"), None);
        assert_eq!(t.matches("/v1/shelves//notes/x"), None);
        assert_eq!(t.matches("/v2/shelves/s1/notes/n"), None);

        let t = Template::parse("/v1/notes/{note_id}").unwrap();
        assert_eq!(t.matches("/v1/notes/42"), Some(vec!["42".to_owned()]));
        assert_eq!(t.matches("/v1/notes/42/x"), None);

        let t = Template::parse("/v1/{note.name=shelves/*/notes/*}").unwrap();
        assert_eq!(vars(&t), ["note.name"]);

        let t = Template::parse("/v1/files/{path=**}").unwrap();
        assert_eq!(t.matches("/v1/files/a/b/c.txt"), Some(vec!["a/b/c.txt".to_owned()]));
        assert_eq!(t.matches("/v1/files"), Some(vec![String::new()]));

        let t = Template::parse("/v1/{name=shelves/*/notes/*}:purge").unwrap();
        assert_eq!(t.matches("/v1/shelves/a/notes/b:purge"), Some(vec!["shelves/a/notes/b".to_owned()]));
        assert_eq!(t.matches("/v1/shelves/a/notes/b"), None);

        let t = Template::parse("/v1/a/**").unwrap();
        assert!(t.vars.is_empty() && t.matches("/v1/a/x/y").is_some());
        assert_eq!(Template::parse("/v1:batchGet").unwrap().matches("/v1:batchGet"), Some(vec![]));
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for bad in ["v1/x", "/v1/**/x", "/v1/{name", "/v1/{na-me}", "/v1//x", "/v1/x:", "/v1/{}", "/v1/a{b}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arbitrary_templates_and_paths_never_panic() {
        let mut rng = fastrand::Rng::with_seed(6);
        let alphabet = b"/{}=*:.ab_%2F";
        for _ in 0..20_000 {
            let t: String = (0..rng.usize(0..16)).map(|_| alphabet[rng.usize(..alphabet.len())] as char).collect();
            let p: String = (0..rng.usize(0..16)).map(|_| alphabet[rng.usize(..alphabet.len())] as char).collect();
            if let Ok(t) = Template::parse(&t) {
                let _ = t.matches(&p);
            }
        }
    }
}
