//! CORS (ingress-nginx's `enable-cors` and the `cors-*` annotations), read once when the
//! snapshot is built: which Origins a route answers, and the fields it answers them with.
//! The proxy echoes an allowed Origin (or sends `*`), adds the fields to every response of
//! the route, and answers a preflight (`OPTIONS` from an allowed Origin) itself with 204, as
//! ingress-nginx's template does.

use http::HeaderValue;
use serde::Serialize;

/// ingress-nginx's default `cors-allow-methods`.
pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// ingress-nginx's default `cors-allow-headers`.
pub const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
/// ingress-nginx's default `cors-max-age` (20 days).
pub const DEFAULT_MAX_AGE: u64 = 1_728_000;

/// Which Origins get CORS fields.
#[derive(Clone, Debug)]
pub enum Origins {
    /// `*`: every request, answered `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (`scheme://host[:port]`, `*.` one label), case-insensitive, the whole
    /// Origin field; an allowed Origin is echoed.
    List(regex::bytes::Regex),
    /// None (every listed origin was invalid): no CORS field, preflights go upstream.
    None,
}

/// A route's CORS answer.
#[derive(Clone, Debug)]
pub struct Cors {
    /// Who gets the fields.
    pub origins: Origins,
    /// `Access-Control-Allow-Methods`.
    pub methods: HeaderValue,
    /// `Access-Control-Allow-Headers`.
    pub headers: HeaderValue,
    /// `Access-Control-Expose-Headers` (none by default).
    pub expose: Option<HeaderValue>,
    /// `cors-allow-credentials` (default true): `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// `Access-Control-Max-Age`.
    pub max_age: HeaderValue,
}

impl PartialEq for Cors {
    fn eq(&self, other: &Self) -> bool {
        let origins = match (&self.origins, &other.origins) {
            (Origins::Any, Origins::Any) | (Origins::None, Origins::None) => true,
            (Origins::List(a), Origins::List(b)) => a.as_str() == b.as_str(),
            _ => false,
        };
        origins
            && self.methods == other.methods
            && self.headers == other.headers
            && self.expose == other.expose
            && self.credentials == other.credentials
            && self.max_age == other.max_age
    }
}

impl Eq for Cors {}

impl Serialize for Cors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let text = |v: &HeaderValue| v.to_str().unwrap_or("").to_string();
        let mut st = s.serialize_struct("Cors", 6)?;
        let origins = match &self.origins {
            Origins::Any => "*".to_string(),
            Origins::List(re) => re.as_str().to_string(),
            Origins::None => String::new(),
        };
        st.serialize_field("origins", &origins)?;
        st.serialize_field("methods", &text(&self.methods))?;
        st.serialize_field("headers", &text(&self.headers))?;
        st.serialize_field("expose", &self.expose.as_ref().map(text))?;
        st.serialize_field("credentials", &self.credentials)?;
        st.serialize_field("max_age", &text(&self.max_age))?;
        st.end()
    }
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request with this Origin field, if the
    /// route answers it.
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(re) => origin.filter(|o| re.is_match(o.as_bytes())).cloned(),
            Origins::None => None,
        }
    }

    /// Sets the CORS fields on a response (replacing any the endpoint sent, as
    /// `more_set_headers` does).
    pub fn apply(&self, origin: HeaderValue, headers: &mut http::HeaderMap) {
        use http::header;
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            let yes = HeaderValue::from_static("true");
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, yes);
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
    }
}

/// Whether one `cors-allow-origin` entry is valid, as ingress-nginx's check reads it: a
/// lower-case scheme, `://`, an optional `*.`, letters, digits, '-' and '.', an optional
/// port; or `null`.
fn valid_origin(entry: &str) -> bool {
    if entry == "null" {
        return true;
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return false;
    };
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_lowercase()) {
        return false;
    }
    let rest = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads `cors-allow-origin`: `*`, or a comma-separated list of origins. Entries that are
/// not origins are left out, each with a warning (ingress-nginx logs and skips them).
pub fn parse_origins(value: &str, warnings: &mut Vec<String>) -> Origins {
    let mut alternatives = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            return Origins::Any;
        }
        if !valid_origin(entry) {
            let shown = crate::redact::short_value(entry);
            warnings.push(format!(
                "{shown} is not an origin (scheme://host[:port]); left out"
            ));
            continue;
        }
        let quoted = regex::escape(entry);
        // `*.` stands for one label, as ingress-nginx's `[A-Za-z0-9\-]+`.
        alternatives.push(quoted.replacen(r"\*", "[A-Za-z0-9-]+", 1));
    }
    if alternatives.is_empty() {
        return Origins::None;
    }
    let pattern = format!("^(?:{})$", alternatives.join("|"));
    match regex::bytes::RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(super::routes::REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(re) => Origins::List(re),
        Err(_) => {
            warnings.push("the origins together are too large a pattern; none is allowed".into());
            Origins::None
        }
    }
}

/// What a comma-separated list may hold, as ingress-nginx checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// `cors-allow-methods`: letters.
    Methods,
    /// `cors-allow-headers`: letters, digits, '-', '_'.
    Headers,
    /// `cors-expose-headers`: those, or `*`.
    Expose,
}

/// Reads a list of tokens; `None` when it does not pass ingress-nginx's check (the default
/// applies). The checks are ingress-nginx's regexes, as written (cors/main.go): methods
/// `^([A-Za-z]+,?\s?)+$`, headers `^[A-Za-z0-9\-\_, ]*$`, exposed headers
/// `^(([A-Za-z0-9\-\_]+|\*),?\s?)+$`; the value is sent as written.
pub fn token_list(value: &str, kind: Tokens) -> Option<HeaderValue> {
    use std::sync::LazyLock;
    static METHODS: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^([A-Za-z]+,?\s?)+$").expect("a valid regex"));
    static HEADERS: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^[A-Za-z0-9\-_, ]*$").expect("a valid regex"));
    static EXPOSE: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"^(([A-Za-z0-9\-_]+|\*),?\s?)+$").expect("a valid regex")
    });
    let value = value.trim();
    let check = match kind {
        Tokens::Methods => &METHODS,
        Tokens::Headers => &HEADERS,
        Tokens::Expose => &EXPOSE,
    };
    if value.is_empty() || value.len() > 4096 || !check.is_match(value) {
        return None;
    }
    HeaderValue::from_str(value).ok()
}

#[cfg(test)]
mod tests;
