//! The value syntaxes of ingress-nginx annotations: booleans as Go reads them, nginx sizes,
//! and URLs with nginx variables.

use crate::snapshot::routes::{UrlPart, UrlTemplate, UrlVar};

/// A boolean as Go's `strconv.ParseBool` reads it (what ingress-nginx uses).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether `name` is a cookie name (an RFC 6265 token, at most 256 bytes).
pub fn cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A size in nginx's syntax (`ngx_parse_size`): digits with an optional `k`/`K` (KiB), `m`/`M`
/// (MiB) or `g`/`G` (GiB) suffix. `0` is 0 (no limit, for `proxy-body-size`).
pub fn parse_size(value: &str) -> Result<u64, &'static str> {
    let (digits, unit) = match value.as_bytes().last() {
        Some(b'k' | b'K') => (&value[..value.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&value[..value.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a size (digits with an optional k, m or g suffix, as nginx reads it)");
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or("is too large")
}

/// Seconds as Go's `strconv.Atoi` reads them (an optional sign, digits), more than zero and
/// at most a year (nginx refuses larger timers).
pub fn parse_seconds(value: &str) -> Option<u64> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (1..=365 * 24 * 3600).contains(&n).then_some(n)
}

/// A time in nginx's syntax (`ngx_parse_time`): one or more numbers with a unit, `ms`, `s`, `m`,
/// `h`, `d`, `w`, `M` (30 days) or `y` (365 days), largest first, spaces allowed between them
/// (`"1h30m"`, `"1h 30m"`);
/// a number without a unit is seconds (as `"1h"`, `"1h 30m"`, `"90"`). At most a year.
pub fn parse_time(value: &str) -> Option<std::time::Duration> {
    const UNITS: [(&str, u64); 8] = [
        ("ms", 1),
        ("y", 365 * 86_400_000),
        ("M", 30 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    let mut rest = value.trim_start();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    // Each unit's rank: nginx wants them largest first, each once.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, rank) = if rest.is_empty() || rest.starts_with(' ') {
            (1000, 7)
        } else {
            let i = UNITS.iter().position(|(u, _)| rest.starts_with(u))?;
            rest = &rest[UNITS[i].0.len()..];
            // ms ranks below s.
            let rank = if i == 0 { 8 } else { i };
            (UNITS[i].1, rank)
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return None;
        }
        last_rank = rank;
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = rest.trim_start();
    }
    (total <= 365 * 86_400_000).then(|| std::time::Duration::from_millis(total))
}

/// A `custom-http-errors` list: status codes (300–599) separated by commas, spaces allowed;
/// sorted, without duplicates.
pub fn parse_codes(value: &str) -> Result<Box<[u16]>, String> {
    let mut codes = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        match item.parse::<u16>() {
            Ok(code) if item.bytes().all(|b| b.is_ascii_digit()) && (300..=599).contains(&code) => {
                codes.push(code)
            }
            _ => return Err(format!("holds {item:?}, not a status code from 300 to 599")),
        }
        if codes.len() > 300 {
            return Err("lists more codes than there are".to_string());
        }
    }
    if codes.is_empty() {
        return Err("lists no status code".to_string());
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes.into())
}

/// An `app-root`: an absolute path of visible characters, without a fragment.
pub fn valid_app_root(value: &str) -> bool {
    value.starts_with('/') && value.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// The variable name after a `$` (`name` or `{name}`, nginx's syntax), and how many bytes
/// of `after` it takes.
pub fn variable(after: &str) -> Result<(&str, usize), String> {
    if let Some(braced) = after.strip_prefix('{') {
        let end = braced
            .find('}')
            .ok_or_else(|| "has an unterminated ${…}".to_string())?;
        return Ok((&braced[..end], end + 2));
    }
    let end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    Ok((&after[..end], end))
}

/// The longest template accepted (bytes).
const MAX_TEMPLATE: usize = 2048;

/// A URL with nginx variables (`$name` or `${name}`), parsed once: the variables of
/// [`UrlVar`] and the path regex's captures `$1`…`$9` expand per request (a capture is empty
/// outside regex mode, as in nginx). Anything else nginx would not load (an unknown variable,
/// a bare `$`, a control character) is an error.
pub fn parse_template(value: &str) -> Result<UrlTemplate, String> {
    if value.bytes().any(|b| b == b' ') {
        return Err("holds spaces or control characters".to_string());
    }
    parse_field_template(value)
}

/// A header field value with nginx variables: as [`parse_template`], spaces and tabs allowed
/// (no other control character: CR and LF could split the field).
pub fn parse_field_template(value: &str) -> Result<UrlTemplate, String> {
    if value.len() > MAX_TEMPLATE {
        return Err(format!("is longer than {MAX_TEMPLATE} bytes"));
    }
    if value
        .bytes()
        .any(|b| (b.is_ascii_control() && b != b'\t') || b == 0x7f)
    {
        return Err("holds spaces or control characters".to_string());
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // nginx's script compiler: `$` and one digit 1–9 is a capture (`$12` is capture 1
        // then "2"); then `${name}`; then a name of letters, digits and '_'.
        if let Some(d) = after.bytes().next().filter(|b| (b'1'..=b'9').contains(b)) {
            if !literal.is_empty() {
                parts.push(UrlPart::Literal(std::mem::take(&mut literal).into()));
            }
            parts.push(UrlPart::Capture(d - b'0'));
            rest = &after[1..];
            continue;
        }
        let (name, consumed) = variable(after)?;
        if name.is_empty() {
            return Err("has a '$' that starts no variable".to_string());
        }
        if let Some(field) = name
            .strip_prefix("http_")
            .filter(|f| !f.is_empty() && UrlVar::named(name).is_none())
        {
            let field = field.to_ascii_lowercase().replace('_', "-");
            if http::HeaderName::from_bytes(field.as_bytes()).is_err() {
                return Err(format!("uses ${name}, whose field name is not valid"));
            }
            if !literal.is_empty() {
                parts.push(UrlPart::Literal(std::mem::take(&mut literal).into()));
            }
            parts.push(UrlPart::Header(field.into()));
            rest = &after[consumed..];
            continue;
        }
        let var = UrlVar::named(name).ok_or_else(|| {
            format!(
                "uses ${name}, which Portico does not expand (known: {}, and the captures $1 to $9)",
                UrlVar::NAMES.join(", ")
            )
        })?;
        if !literal.is_empty() {
            parts.push(UrlPart::Literal(std::mem::take(&mut literal).into()));
        }
        parts.push(UrlPart::Var(var));
        rest = &after[consumed..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(UrlPart::Literal(literal.into()));
    }
    Ok(UrlTemplate(parts.into()))
}
