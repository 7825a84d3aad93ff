//! Parsing one manifest file into objects and problems, without touching the filesystem.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::MessageFormatter;

use super::ManifestProblem;
use crate::source::{Object, ObjectError, ObjectKey};
use document::Document;

/// What one manifest file holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileParse {
    /// The objects of kinds Portico reads, one per key (a later document replaces an earlier
    /// one with the same key, which is reported), sorted by key. Decoded even when the file is
    /// broken, but then not to be used.
    pub objects: Vec<Object>,
    /// Everything wrong with the file, in document order.
    pub problems: Vec<ManifestProblem>,
    /// True when the file has a YAML/JSON error or a malformed document (not a mapping, no
    /// `apiVersion`/`kind`, or a kind Portico reads that fails its schema). A broken file is
    /// not used: it keeps contributing the objects of its last good parse.
    pub broken: bool,
}

/// Parses the text of one manifest file: JSON (a stream of values) when the path ends in
/// `.json`, multi-document YAML otherwise. Lines and columns in problems are 1-based and
/// relative to the file; documents are numbered from 1 in file order.
pub fn parse_file(path: &Path, text: &str) -> FileParse {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Collector::new(path);
    if path.extension().is_some_and(|ext| ext == "json") {
        parse_json(text, &mut out);
    } else {
        parse_yaml(text, &mut out);
    }
    out.finish()
}

/// One YAML document: where it starts (1-based line) and its text, `---` line included.
#[derive(Debug, PartialEq)]
struct Chunk<'a> {
    first_line: usize,
    text: &'a str,
}

fn parse_yaml(text: &str, out: &mut Collector<'_>) {
    let options = serde_saphyr::options! { with_snippet: false };
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        let document = index + 1;
        match serde_saphyr::from_multiple_with_options::<Document>(chunk.text, options.clone()) {
            Ok(values) => values
                .into_iter()
                .for_each(|v| out.document(document, v, Some(&chunk))),
            Err(e) => {
                let at = e.location().and_then(|l| {
                    let line = usize::try_from(l.line()).ok().filter(|&n| n > 0)?;
                    let column = usize::try_from(l.column()).ok()?;
                    Some((line + chunk.first_line - 1, column))
                });
                let reason = serde_saphyr::DefaultMessageFormatter.format_message(&e);
                out.broken(document, at, scrub_if_secret(chunk.text, &reason));
            }
        }
    }
}

/// Splits YAML text at document markers: a line starting with `---` followed by a space, a
/// tab or the end of the line. YAML forbids such a line inside any scalar, so this split agrees
/// with the YAML parser, and it lets each document be parsed (and fail) on its own. Text before
/// the first marker is a document only when it has content (not just comments or directives).
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut starts = vec![(1, 0)];
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if index > 0 && is_document_marker(line) {
            starts.push((index + 1, offset));
        }
        offset += line.len();
    }
    let ends = starts.iter().skip(1).map(|&(_, at)| at).chain([text.len()]);
    let mut chunks: Vec<Chunk<'_>> = starts
        .iter()
        .zip(ends)
        .filter_map(|(&(first_line, start), end)| {
            let text = text.get(start..end)?;
            Some(Chunk { first_line, text })
        })
        .collect();
    if chunks
        .first()
        .is_some_and(|c| !is_document_marker(c.text) && !has_content(c.text))
    {
        chunks.remove(0);
    }
    chunks
}

fn is_document_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && !line.starts_with('%')
    })
}

fn parse_json(text: &str, out: &mut Collector<'_>) {
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Document>();
    for (index, value) in stream.enumerate() {
        let document = index + 1;
        match value {
            Ok(value) => out.document(document, value, None),
            Err(e) => {
                let at = (e.line() > 0).then(|| (e.line(), e.column()));
                let message = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let reason = message.strip_suffix(&suffix).unwrap_or(&message);
                out.broken(document, at, scrub_if_secret(text, reason));
                // The stream cannot resume after a syntax error.
                break;
            }
        }
    }
}

/// Gathers one file's objects (with the document each came from) and problems.
struct Collector<'a> {
    file: &'a Path,
    objects: Vec<(usize, Object)>,
    problems: Vec<ManifestProblem>,
    broken: bool,
}

// === impl Collector ===

impl<'a> Collector<'a> {
    fn new(file: &'a Path) -> Self {
        Collector {
            file,
            objects: Vec::new(),
            problems: Vec::new(),
            broken: false,
        }
    }

    fn problem(&mut self, document: usize, at: Option<(usize, usize)>, reason: String) {
        let problem = ManifestProblem::warning(self.file, Some(document), at, reason);
        self.problems.push(problem);
    }

    fn broken(&mut self, document: usize, at: Option<(usize, usize)>, reason: String) {
        self.broken = true;
        let problem = ManifestProblem::error(self.file, Some(document), at, reason);
        self.problems.push(problem);
    }

    /// One parsed document (with its YAML text, to locate fields in): a `List` stands for
    /// its items (decoded already).
    fn document(&mut self, document: usize, parsed: Document, chunk: Option<&Chunk<'_>>) {
        match parsed {
            Document::List(items) => {
                for (index, item) in items.into_iter().enumerate() {
                    self.decoded(document, &format!("items[{index}]: "), item, None);
                }
            }
            Document::Other(value) => self.decoded(document, "", decode(value), chunk),
        }
    }

    fn decoded(
        &mut self,
        document: usize,
        prefix: &str,
        decoded: Decoded,
        chunk: Option<&Chunk<'_>>,
    ) {
        match decoded {
            Decoded::Object(object) => self.objects.push((document, object)),
            Decoded::Ignored(reason) => {
                self.problem(document, None, format!("{prefix}{reason}; ignored"));
            }
            Decoded::Broken(reason, field) => {
                let at = field.zip(chunk).and_then(|(f, c)| locate(c, &f));
                self.broken(document, at, format!("{prefix}{reason}"));
            }
        }
    }

    /// Keeps the last object per key, reporting the earlier definitions.
    fn finish(mut self) -> FileParse {
        let mut by_key: BTreeMap<ObjectKey, (usize, Object)> = BTreeMap::new();
        for (document, object) in std::mem::take(&mut self.objects) {
            let key = object.key();
            if let Some((earlier, _)) = by_key.insert(key.clone(), (document, object)) {
                let reason =
                    format!("{key} is also defined in document {earlier}; this definition wins");
                self.problem(document, None, reason);
            }
        }
        self.problems.sort();
        FileParse {
            objects: by_key.into_values().map(|(_, object)| object).collect(),
            problems: self.problems,
            broken: self.broken,
        }
    }
}

/// What one document (or one item of a List) became.
enum Decoded {
    /// An object of a kind Portico reads.
    Object(Object),
    /// A kind Portico does not read: why.
    Ignored(String),
    /// Not a Kubernetes object, or one that fails its kind's schema: why, and the field
    /// found wrong when known.
    Broken(String, Option<String>),
}

/// Decodes one document (or List item) into an object.
fn decode(value: Value) -> Decoded {
    if let Some(reason) = malformed(&value) {
        return Decoded::Broken(reason.into_owned(), None);
    }
    match Object::from_value(value) {
        Ok(object) => Decoded::Object(object),
        Err(e @ ObjectError::UnsupportedKind { .. }) => Decoded::Ignored(e.to_string()),
        Err(e) => {
            let field = match &e {
                ObjectError::Schema { field, .. } => field.clone(),
                _ => None,
            };
            Decoded::Broken(e.to_string(), field)
        }
    }
}

/// A syntax error's message, scrubbed ([`crate::redact::scrub`]) when the text it is about
/// may be a Secret: the parser may quote what it could not read.
fn scrub_if_secret(text: &str, reason: &str) -> String {
    if text.contains("Secret") {
        crate::redact::scrub(reason).into_owned()
    } else {
        reason.to_string()
    }
}

/// The line and column (1-based) of a field (`data`, `data.tls.key`: a top-level key and
/// optionally one key under it) in a block-style YAML document; the top-level key's when the
/// one under it is not found on a line of its own.
fn locate(chunk: &Chunk<'_>, field: &str) -> Option<(usize, usize)> {
    let (top, below) = match field.split_once('.') {
        Some((top, below)) => (top, Some(below)),
        None => (field, None),
    };
    let lines: Vec<&str> = chunk.text.lines().collect();
    let indented = |line: &str| line.starts_with([' ', '\t']);
    let top_at = lines
        .iter()
        .position(|l| !indented(l) && is_key_line(l, top))?;
    let mut at = (top_at, 1);
    if let Some(below) = below {
        for (i, line) in lines.iter().enumerate().skip(top_at + 1) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !indented(line) {
                break;
            }
            if is_key_line(line, below) {
                at = (i, line.len() - trimmed.len() + 1);
                break;
            }
        }
    }
    Some((chunk.first_line + at.0, at.1))
}

/// Whether a line starts (after its indentation) with `key:`, the key plain or quoted.
fn is_key_line(line: &str, key: &str) -> bool {
    let line = line.trim_start();
    let rest = line
        .strip_prefix(key)
        .or_else(|| line.strip_prefix('"')?.strip_prefix(key)?.strip_prefix('"'))
        .or_else(|| {
            line.strip_prefix('\'')?
                .strip_prefix(key)?
                .strip_prefix('\'')
        });
    rest.is_some_and(|r| r.trim_start().starts_with(':'))
}

/// Why a document cannot be a Kubernetes object at all (`kubectl apply` rejects these too).
fn malformed(value: &Value) -> Option<Cow<'static, str>> {
    let Some(map) = value.as_object() else {
        return Some("the document is not a mapping".into());
    };
    ["apiVersion", "kind"]
        .into_iter()
        .find(|field| !map.get(*field).is_some_and(Value::is_string))
        .map(|field| format!("{field} is missing or not a string").into())
}

mod document;

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn markers_split_and_leading_comments_are_not_a_document() {
        let text = "# header\n---\na: 1\n--- # two\nb: 2\n----\n---x\n";
        let chunks = split_documents(text);
        assert_eq!(
            chunks,
            vec![
                Chunk {
                    first_line: 2,
                    text: "---\na: 1\n"
                },
                Chunk {
                    first_line: 4,
                    text: "--- # two\nb: 2\n----\n---x\n"
                },
            ]
        );
        let chunks = split_documents("a: 1\n---\n---\nb: 2");
        let lines: Vec<_> = chunks.iter().map(|c| c.first_line).collect();
        assert_eq!(lines, vec![1, 2, 3]);
        assert!(split_documents("").is_empty());
    }
}
