//! Schema diagnostics in one format: `path:line:col: error: message`, the source
//! line with a caret under the problem, then any notes and help. Paths are the
//! ones the user can open (the root as given, joined with the file's name), and
//! every diagnostic that concerns a file's text carries a line and a column, end
//! of file included.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

/// How many problems one report shows before "... and N more".
pub const MAX_SHOWN: usize = 10;

/// A place in a source file, 1-based; `column` counts characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The file as the user can open it (e.g. `schemas/users/user_service.proto`).
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path, self.line, self.column)
    }
}

/// One problem found in a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// Where, when the problem is about a file's text.
    pub position: Option<Position>,
    /// The source line at `position`, and how many characters the caret spans.
    pub excerpt: Option<(String, usize)>,
    /// The caret's label (e.g. "found here").
    pub label: Option<String>,
    /// Other places involved (e.g. where a name was first defined).
    pub notes: Vec<(String, Position)>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Problem {
    /// A problem with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Problem { message: message.into(), position: None, excerpt: None, label: None, notes: Vec::new(), help: None }
    }

    /// Places the problem at byte `offset` (clamped to the text) spanning `len` bytes.
    pub fn at(self, src: &SourceText, offset: usize, len: usize) -> Self {
        let position = src.position(offset);
        self.placed(src, offset, len, position)
    }

    /// Like [`Problem::at`] when the caller knows the line number of `offset`
    /// already (a parser's marker): no count of the lines before it, so
    /// locating many problems in one big file stays linear.
    pub fn at_line(self, src: &SourceText, offset: usize, len: usize, line_no: usize) -> Self {
        let position = src.position_on_line(offset, line_no);
        self.placed(src, offset, len, position)
    }

    fn placed(mut self, src: &SourceText, offset: usize, len: usize, (position, line): (Position, String)) -> Self {
        let end = offset.saturating_add(len.max(1));
        let caret = src.text.get(offset.min(src.text.len())..end.min(src.text.len())).map_or(1, |s| {
            let first_line = s.split('\n').next().unwrap_or("");
            first_line.chars().count().max(1)
        });
        self.excerpt = Some((line, caret));
        self.position = Some(position);
        self
    }

    /// Adds help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            Some(p) => write!(f, "{p}: error: {}", self.message)?,
            None => write!(f, "error: {}", self.message)?,
        }
        if let (Some(p), Some((line, caret))) = (&self.position, &self.excerpt) {
            let number = p.line.to_string();
            let pad = " ".repeat(number.len());
            // Tabs keep their width under the caret line.
            let lead: String = line.chars().take(p.column - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            write!(f, "\n {pad} |\n {number} | {line}\n {pad} | {lead}{}", "^".repeat(*caret))?;
            if let Some(label) = &self.label {
                write!(f, " {label}")?;
            }
        }
        for (what, at) in &self.notes {
            write!(f, "\n  note: {what} at {at}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Renders problems one after the other, at most [`MAX_SHOWN`], then "and N more".
pub fn render(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().take(MAX_SHOWN).enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        let _ = write!(out, "{p}");
    }
    if problems.len() > MAX_SHOWN {
        let _ = write!(out, "\n\n... and {} more error(s) not shown", problems.len() - MAX_SHOWN);
    }
    out
}

/// A file's text as the compiler saw it, and the path to show for it.
#[derive(Clone, Debug)]
pub struct SourceText {
    /// The path the user can open.
    pub display: String,
    /// The text (a leading BOM removed).
    pub text: String,
}

impl SourceText {
    /// The position of byte `offset` (clamped to the text and moved back to a
    /// character boundary) and its whole line.
    pub fn position(&self, offset: usize) -> (Position, String) {
        let offset = self.boundary(offset);
        let line_no = self.text[..offset].matches('\n').count() + 1;
        self.position_on_line(offset, line_no)
    }

    /// `offset` clamped to the text and moved back to a character boundary.
    fn boundary(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// [`SourceText::position`] with the line number given (1-based): only
    /// the line itself is scanned.
    pub fn position_on_line(&self, offset: usize, line_no: usize) -> (Position, String) {
        let text = &self.text;
        let offset = self.boundary(offset);
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        let column = text[line_start..offset].chars().count() + 1;
        let line = text[line_start..line_end].trim_end_matches('\r').to_owned();
        (Position { path: self.display.clone(), line: line_no, column }, line)
    }

    /// Where "reached end of file" should point: just after the last thing written.
    pub fn end_offset(&self) -> usize {
        self.text.trim_end().len()
    }
}

/// Turns a protox error (with its related errors) into problems, locating each in
/// the texts the resolver read.
pub fn from_protox(err: &protox::Error, texts: &HashMap<String, SourceText>) -> Vec<Problem> {
    let file = err.file().map(str::to_owned);
    let src = file.as_deref().and_then(|f| texts.get(f));
    let mut out = vec![one(err, file.as_deref(), src, err.is_parse())];
    if let Some(related) = miette::Diagnostic::related(err) {
        for r in related {
            out.push(one(r, file.as_deref(), src, err.is_parse()));
        }
    }
    out
}

fn one(d: &dyn miette::Diagnostic, file: Option<&str>, src: Option<&SourceText>, parse: bool) -> Problem {
    let mut p = Problem::new(d.to_string());
    p.help = d.help().map(|h| h.to_string());
    if p.message == "invalid group name" && p.help.as_deref().is_some_and(|h| h.starts_with("imports may not")) {
        // protox-parse 0.10 titles its bad-import error like a bad group name.
        p.message = "invalid import path: imports name a file relative to an include root".to_owned();
    }
    let labels: Vec<miette::LabeledSpan> = d.labels().map(|l| l.collect()).unwrap_or_default();
    match (src, labels.split_last()) {
        (Some(src), Some((main, others))) => {
            p = p.at(src, main.offset(), main.len());
            p.label = main.label().map(str::to_owned);
            for o in others {
                let (pos, _) = src.position(o.offset());
                p.notes.push((o.label().unwrap_or("related").to_owned(), pos));
            }
        }
        (Some(src), None) if parse => {
            // protox reports "reached end of file" without a span: point at the end.
            p = p.at(src, src.end_offset(), 1);
            p.label = Some("the file ends here".to_owned());
        }
        (Some(src), None) => {
            p = p.at(src, 0, 1);
        }
        (None, _) => {
            if let Some(f) = file {
                p.message = format!("{f}: {}", p.message);
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placing a problem with a known line number gives what counting the
    /// lines gives, at any offset of any text (multi-byte characters, CRLF,
    /// offsets inside a character or past the end).
    #[test]
    fn a_known_line_places_a_problem_as_counting_does() {
        let pieces = ["a", "é", "\n", "\r\n", " ", "\t", "日本", "x: 1", "- y"];
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..500 {
            let text: String = (0..rng.usize(0..40)).map(|_| pieces[rng.usize(..pieces.len())]).collect();
            let src = SourceText { display: "f.yaml".into(), text };
            let offset = rng.usize(0..=src.text.len() + 2);
            let len = rng.usize(0..5);
            let boundary = src.boundary(offset);
            let line_no = src.text[..boundary].matches('\n').count() + 1;
            let counted = Problem::new("m").at(&src, offset, len).to_string();
            let known = Problem::new("m").at_line(&src, offset, len, line_no).to_string();
            assert_eq!(counted, known, "{:?} at {offset}", src.text);
        }
    }
}
