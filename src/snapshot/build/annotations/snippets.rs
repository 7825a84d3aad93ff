//! `configuration-snippet` and `server-snippet`: nginx text, of which Portico understands the
//! header directives and nothing else. Each is parsed (nginx's tokens: words, '…' and "…"
//! strings with backslash escapes, `#` comments, `;` ends a directive) into typed
//! [`HeaderOps`]; any other directive, a block, or a value Portico cannot vouch for is an
//! error naming it. Nothing is ever pasted into a configuration language.

use http::HeaderName;

use super::values::parse_field_template;
use crate::snapshot::routes::{FieldName, FieldValue, HeaderOps, ResponseFilter, ResponseOp};

/// The longest snippet read (bytes).
const MAX_SNIPPET: usize = 16 * 1024;

/// The directives understood.
pub const DIRECTIVES: [&str; 4] = [
    "more_set_headers",
    "more_clear_headers",
    "add_header",
    "proxy_set_header",
];

/// Fields no snippet may set or clear, and no auth answer may copy onto a request
/// (`auth-response-headers`): the message framing, hop-by-hop fields and Host, which Portico
/// writes itself.
pub const FORBIDDEN: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "host",
];

/// Parses one snippet into header operations appended to `ops`.
pub fn parse(text: &str, ops: &mut HeaderOps) -> Result<(), String> {
    if text.len() > MAX_SNIPPET {
        return Err(format!("is longer than {MAX_SNIPPET} bytes"));
    }
    for directive in statements(text)? {
        let (name, args) = directive
            .split_first()
            .ok_or_else(|| "has an empty directive".to_string())?;
        match name.as_str() {
            "more_set_headers" => more_set_headers(args, ops)?,
            "more_clear_headers" => more_clear_headers(args, ops)?,
            "add_header" => add_header(args, ops)?,
            "proxy_set_header" => proxy_set_header(args, ops)?,
            other => {
                return Err(format!(
                    "uses the directive {other:?}, which Portico does not run (only {})",
                    DIRECTIVES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// nginx's tokenizer: directives as lists of words.
fn statements(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => while chars.next().is_some_and(|c| c != '\n') {},
            ';' => {
                chars.next();
                out.push(std::mem::take(&mut words));
            }
            '{' | '}' => {
                let what = words
                    .first()
                    .map_or("a block".to_string(), |w| format!("{w:?}"));
                return Err(format!(
                    "opens a block ({what}), which Portico does not run (only {})",
                    DIRECTIVES.join(", ")
                ));
            }
            '\'' | '"' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err("has an unterminated quoted string".to_string()),
                        Some('\\') => match chars.next() {
                            Some(e @ ('\'' | '"' | '\\')) => word.push(e),
                            Some('t') => word.push('\t'),
                            Some(e @ ('n' | 'r')) => {
                                return Err(format!(
                                    "has \\{e} in a string: a field value cannot hold a line break"
                                ));
                            }
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => {
                                return Err("has an unterminated quoted string".to_string());
                            }
                        },
                        Some(q) if q == c => break,
                        Some(other) => word.push(other),
                    }
                }
                words.push(word);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}' | '\'' | '"') {
                        break;
                    }
                    if c == '\\' {
                        chars.next();
                        if let Some(e) = chars.next() {
                            word.push(e);
                        }
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                words.push(word);
            }
        }
    }
    if !words.is_empty() {
        return Err(format!(
            "ends without ';' after {:?}",
            words.first().map(String::as_str).unwrap_or_default()
        ));
    }
    Ok(out)
}

/// One entry of the ConfigMap's `add-headers` ConfigMap: `more_set_headers "name: value"` at
/// nginx's http level (as ingress-nginx's template writes it), appended to `ops`.
pub fn global_response_field(name: &str, value: &str, ops: &mut HeaderOps) -> Result<(), String> {
    let name = field_name(name, "add-headers")?;
    let value = field_value(value, "add-headers")?;
    let when = ResponseFilter::default();
    ops.response.push(ResponseOp::Set { name, value, when });
    Ok(())
}

/// One entry of the ConfigMap's `proxy-set-headers` ConfigMap: `proxy_set_header name value`
/// in every location, appended to `ops`.
pub fn global_request_field(name: &str, value: &str, ops: &mut HeaderOps) -> Result<(), String> {
    proxy_set_header(&[name.to_string(), value.to_string()], ops)
}

/// A field name anyone may set: a valid token, not framing or hop-by-hop.
fn field_name(name: &str, directive: &str) -> Result<FieldName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{directive}: {name:?} is not a header field name"))?;
    if FORBIDDEN.contains(&parsed.as_str()) {
        let hint = if parsed == http::header::HOST {
            " (use the upstream-vhost annotation for the Host sent upstream)"
        } else {
            ""
        };
        return Err(format!(
            "{directive}: {name:?} is a field Portico writes itself (framing or hop-by-hop){hint}"
        ));
    }
    Ok(FieldName(parsed))
}

fn field_value(value: &str, directive: &str) -> Result<FieldValue, String> {
    parse_field_template(value)
        .map(FieldValue::new)
        .map_err(|why| format!("{directive}: the value {value:?} {why}"))
}

/// `more_set_headers [-s statuses] [-t types] 'Name: value'…`
fn more_set_headers(args: &[String], ops: &mut HeaderOps) -> Result<(), String> {
    let (when, fields) = filter_options(args, "more_set_headers")?;
    if fields.is_empty() {
        return Err("more_set_headers: no field given".to_string());
    }
    for f in fields {
        let (name, value) = match f.split_once(':') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (f.trim(), ""),
        };
        let name = field_name(name, "more_set_headers")?;
        let value = field_value(value, "more_set_headers")?;
        let when = when.clone();
        ops.response.push(ResponseOp::Set { name, value, when });
    }
    Ok(())
}

/// `more_clear_headers [-s statuses] [-t types] 'Name'…` (a trailing `*` for a prefix).
fn more_clear_headers(args: &[String], ops: &mut HeaderOps) -> Result<(), String> {
    let (when, names) = filter_options(args, "more_clear_headers")?;
    if names.is_empty() {
        return Err("more_clear_headers: no field given".to_string());
    }
    for n in names {
        let n = n.trim();
        let base = n.strip_suffix('*').unwrap_or(n);
        if !base.is_empty() {
            field_name(base, "more_clear_headers")?;
        }
        let pattern = n.to_ascii_lowercase().into_boxed_str();
        let when = when.clone();
        ops.response.push(ResponseOp::Clear { pattern, when });
    }
    Ok(())
}

/// The `-s` and `-t` options of the headers-more directives, and the rest of the arguments.
fn filter_options<'a>(
    args: &'a [String],
    directive: &str,
) -> Result<(ResponseFilter, Vec<&'a str>), String> {
    let mut when = ResponseFilter::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-s" => {
                let list = it
                    .next()
                    .ok_or_else(|| format!("{directive}: -s without statuses"))?;
                for s in list.split_whitespace() {
                    let code = s
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| format!("{directive}: {s:?} is not a status"))?;
                    when.statuses.push(code);
                }
            }
            "-t" => {
                let list = it
                    .next()
                    .ok_or_else(|| format!("{directive}: -t without types"))?;
                for t in list.split_whitespace() {
                    when.types.push(t.to_ascii_lowercase().into_boxed_str());
                }
            }
            other if other.starts_with('-') => {
                return Err(format!(
                    "{directive}: the option {other:?} is not supported"
                ));
            }
            other => rest.push(other),
        }
    }
    Ok((when, rest))
}

/// `add_header Name value [always]`
fn add_header(args: &[String], ops: &mut HeaderOps) -> Result<(), String> {
    let (name, value, always) = match args {
        [n, v] => (n, v, false),
        [n, v, a] if a == "always" => (n, v, true),
        _ => return Err("add_header: takes a name, a value and optionally always".to_string()),
    };
    let name = field_name(name, "add_header")?;
    let value = field_value(value, "add_header")?;
    ops.response.push(ResponseOp::Add {
        name,
        value,
        always,
    });
    Ok(())
}

/// `proxy_set_header Name value`
fn proxy_set_header(args: &[String], ops: &mut HeaderOps) -> Result<(), String> {
    let [name, value] = args else {
        return Err("proxy_set_header: takes a name and a value".to_string());
    };
    // The usual `proxy_set_header Host $host;`: Portico sends the client's Host already.
    if name.eq_ignore_ascii_case("host")
        && ["$host", "$http_host", "$best_http_host"].contains(&value.as_str())
    {
        return Ok(());
    }
    let name = field_name(name, "proxy_set_header")?;
    let value = field_value(value, "proxy_set_header")?;
    ops.request.push((name, value));
    Ok(())
}

#[cfg(test)]
mod tests;
