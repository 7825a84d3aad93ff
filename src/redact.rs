//! Keeping what Secrets hold out of logs, diagnostics and admin output.
//!
//! Decoders quote the value they could not use (`invalid type: string "LS0tLS1CRUdJTi…",
//! expected a map`), PEM parsers quote the line they could not read, and kube-rs logs a whole
//! response body it could not decode. Every text about a Secret that comes from such a library
//! goes through [`scrub`] before it is logged or stored; a Secret that does not decode is
//! described by [`secret_schema_error`] (the field and the type expected, never the value); and
//! [`log_filter`] drops the library log lines that quote response bodies.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A run of base64 characters at least this long is taken for encoded data. Words, names and
/// paths of messages are shorter; a line of a PEM body is 64.
const BASE64_RUN: usize = 40;

/// What replaces a hidden value.
const HIDDEN: &str = "[hidden]";

/// Replaces what could be Secret data in a message: PEM blocks (a BEGIN line to its END line,
/// or to the end of the text) and lone BEGIN/END lines, double-quoted strings (escapes
/// honoured; empty ones kept), and runs of 40 or more base64 characters. Returns the text
/// unchanged (borrowed) when there is nothing to hide.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let needs =
        bytes.contains(&b'"') || text.contains("-----") || longest_base64_run(bytes) >= BASE64_RUN;
    if !needs {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("-----BEGIN") {
            let end = marker_end(rest, "-----BEGIN".len()).unwrap_or(rest.len());
            out.push_str("[PEM block hidden]");
            i += end;
        } else if rest.starts_with("-----END") {
            out.push_str(HIDDEN);
            i += marker_end(rest, 0).unwrap_or(rest.len());
        } else if bytes[i] == b'"' {
            let end = closing_quote(&bytes[i + 1..]).map_or(bytes.len(), |n| i + 1 + n + 1);
            if end == i + 2 {
                out.push_str("\"\"");
            } else {
                out.push('"');
                out.push_str(HIDDEN);
                out.push('"');
            }
            i = end;
        } else if is_base64(bytes[i]) {
            let run = bytes[i..].iter().take_while(|b| is_base64(**b)).count();
            if run >= BASE64_RUN {
                out.push_str(HIDDEN);
            } else {
                out.push_str(&text[i..i + run]);
            }
            i += run;
        } else {
            // Not ASCII-special: copy the whole character.
            let c = rest.chars().next().unwrap_or('\u{fffd}');
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    Cow::Owned(out)
}

/// The end of the `-----END …-----` marker that starts at or after `from` in `text`.
fn marker_end(text: &str, from: usize) -> Option<usize> {
    let start = from + text.get(from..)?.find("-----END")?;
    let after = start + "-----END".len();
    let close = text.get(after..)?.find("-----")?;
    Some(after + close + "-----".len())
}

/// The index of the closing `"` in `bytes` (which start after the opening one).
fn closing_quote(bytes: &[u8]) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in bytes.iter().enumerate() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(i),
            _ => {}
        }
    }
    None
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

fn longest_base64_run(bytes: &[u8]) -> usize {
    let (mut longest, mut run) = (0, 0);
    for b in bytes {
        run = if is_base64(*b) { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// A value as shown in messages: its length-limited, scrubbed text.
pub fn short_value(text: &str) -> String {
    const MAX: usize = 63;
    let scrubbed = scrub(text);
    match scrubbed.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &scrubbed[..at]),
        None => scrubbed.into_owned(),
    }
}

/// What kind of JSON value this is, for messages ("a string", "a mapping", …).
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Why a Secret document does not decode, as `(field path, reason)`: the first field found
/// wrong with the type it should have and the type it has, never its value. `error` is the
/// decoder's own message, used (scrubbed) only when no field is found wrong.
pub fn secret_schema_error(value: &Value, error: &str) -> (Option<String>, String) {
    let found = value.as_object().and_then(|map| {
        let metadata = map.get("metadata").and_then(metadata_error);
        metadata
            .or_else(|| scalar_error(map, "type", "a string", Value::is_string))
            .or_else(|| scalar_error(map, "immutable", "a boolean", Value::is_boolean))
            .or_else(|| data_error(map))
            .or_else(|| string_map_error(map, "stringData"))
    });
    match found {
        Some((field, reason)) => {
            let reason = format!("{field}: {reason} (Secret values are not shown)");
            (Some(field), reason)
        }
        None => (
            None,
            format!("{} (Secret values are not shown)", scrub(error)),
        ),
    }
}

type FieldError = (String, String);

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", kind_of(found))
}

fn scalar_error(
    map: &Map<String, Value>,
    field: &str,
    what: &str,
    ok: fn(&Value) -> bool,
) -> Option<FieldError> {
    let value = map.get(field).filter(|v| !v.is_null())?;
    (!ok(value)).then(|| (field.to_string(), expected(what, value)))
}

/// `data`: a mapping of base64 strings (null values count as empty).
fn data_error(map: &Map<String, Value>) -> Option<FieldError> {
    let data = map.get("data").filter(|v| !v.is_null())?;
    let Some(entries) = data.as_object() else {
        let reason = expected("a mapping of keys to base64 strings", data);
        return Some(("data".to_string(), reason));
    };
    entries.iter().find_map(|(key, value)| {
        let field = format!("data.{key}");
        match value {
            Value::Null => None,
            Value::String(s) => data_encoding::BASE64
                .decode(s.as_bytes())
                .is_err()
                .then(|| (field, "not valid base64".to_string())),
            other => Some((field, expected("a base64 string", other))),
        }
    })
}

/// A mapping of strings (`stringData`, labels, annotations).
fn string_map_error(map: &Map<String, Value>, field: &str) -> Option<FieldError> {
    let value = map.get(field).filter(|v| !v.is_null())?;
    let Some(entries) = value.as_object() else {
        return Some((field.to_string(), expected("a mapping of strings", value)));
    };
    entries.iter().find_map(|(key, value)| {
        (!value.is_string()).then(|| (format!("{field}.{key}"), expected("a string", value)))
    })
}

fn metadata_error(metadata: &Value) -> Option<FieldError> {
    let Some(map) = metadata.as_object() else {
        return Some(("metadata".to_string(), expected("a mapping", metadata)));
    };
    let strings = [
        "name",
        "namespace",
        "generateName",
        "uid",
        "resourceVersion",
    ];
    let string = strings
        .iter()
        .find_map(|f| scalar_error(map, f, "a string", Value::is_string));
    let found = string
        .or_else(|| string_map_error(map, "labels"))
        .or_else(|| string_map_error(map, "annotations"))
        .map(|(field, reason)| (format!("metadata.{field}"), reason));
    if found.is_some() {
        return found;
    }
    ObjectMeta::deserialize(metadata).err().map(|_| {
        let reason = "does not match ObjectMeta".to_string();
        ("metadata".to_string(), reason)
    })
}

/// Log targets whose events quote what they failed to decode, whole: kube-rs logs the body
/// of a list response it cannot decode (every Secret of the list, data included) at WARN, and
/// its watcher the decoder's error at DEBUG. Portico reports the same failures itself,
/// scrubbed, so these are dropped whatever `RUST_LOG` says.
pub const QUOTING_TARGETS: [&str; 2] = ["kube_client::client", "kube_runtime::watcher"];

/// The filter that drops the events of [`QUOTING_TARGETS`]; the binary adds it to its log
/// layer.
pub fn log_filter() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(logged as fn(&tracing::Metadata<'_>) -> bool)
}

/// Whether events of this callsite may be logged (see [`QUOTING_TARGETS`]).
fn logged(meta: &tracing::Metadata<'_>) -> bool {
    !QUOTING_TARGETS.contains(&meta.target())
}

#[cfg(test)]
mod tests;
