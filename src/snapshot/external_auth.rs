//! External authentication: ingress-nginx's `auth-url` family (and the ConfigMap's
//! `global-auth-*`), read once when the snapshot is built. Before a request is forwarded the
//! proxy asks the auth service (a request with the client's fields and no body); 2xx lets the
//! request through, 401 and 403 reach the client (401 becomes a 302 to `auth-signin` when
//! set), anything else is a 500 (ARCHITECTURE.md, "External authentication").
//!
//! Where the auth request goes, in this order: a host naming a cluster Service
//! (`name.namespace.svc[.cluster.local]`) goes to that Service's endpoints, resolved as an
//! Ingress backend is; a host Portico serves itself (oauth2-proxy's `https://$host/oauth2/auth`)
//! goes to the backend of the route that host and path select, without a network hop and
//! without that route's own policies; any other host is resolved by DNS and connected as an
//! ExternalName is, never to the node itself (see [`crate::egress`]).

use std::time::Duration;

use http::{HeaderName, Method};
use serde::Serialize;

use super::build::annotations::values;
use super::routes::{Backend, FieldName, HashKey, UrlTemplate};

/// The longest `auth-url` accepted (bytes).
const MAX_URL: usize = 2048;

/// At most this many `auth-response-headers`.
const MAX_RESPONSE_HEADERS: usize = 64;

/// Fields an auth response may not set on the upstream request: those no snippet may set
/// either (an auth service setting Content-Length on the forwarded request would
/// desynchronise the upstream connection).
pub use super::build::annotations::snippets::FORBIDDEN as FORBIDDEN_COPIES;

/// A route's external authentication, resolved: the parsed configuration, and what the
/// Ingress (or the ConfigMap) it belongs to adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalAuth {
    /// The configuration as parsed (shared by every Ingress when it is the global one).
    #[serde(flatten)]
    pub spec: std::sync::Arc<AuthSpec>,
    /// The cluster Service the host names, resolved as an Ingress backend.
    pub service: Option<Backend>,
    /// Connecting to the auth service must finish within this (the ConfigMap's
    /// proxy-connect-timeout, 5 s by default).
    #[serde(skip)]
    pub connect_timeout: Duration,
    /// Its answer must come within this (the ConfigMap's proxy-read-timeout, 60 s).
    #[serde(skip)]
    pub read_timeout: Duration,
    /// The namespace of the Ingress whose annotation this is (`None`: the ConfigMap's global
    /// auth, the operator's). A host Portico serves is asked through its route only when the
    /// route is of this namespace or guards nothing (another tenant's guarded backend is never
    /// reached around its guard).
    #[serde(skip)]
    pub namespace: Option<std::sync::Arc<str>>,
    /// Where the configuration came from (the Ingress, or the ConfigMap's global auth) and
    /// its URL: what scopes the cache, so two routes never share an entry.
    #[serde(skip)]
    pub scope: Box<str>,
}

/// The TLS an `https://` auth URL to `host` is spoken with: ingress-nginx's auth location's
/// (`proxy_ssl_server_name on`, so the host goes as SNI; nginx's defaults otherwise: the
/// certificate is not verified, TLS 1.2 and 1.3).
pub fn auth_tls(host: &str) -> crate::snapshot::upstream_tls::UpstreamTls {
    use crate::snapshot::upstream_tls::{UpstreamTls, Versions};
    UpstreamTls::new(None, None, host, true, Versions::BOTH)
        .expect("settings without a Secret are always valid")
}

fn method_name<S: serde::Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(m.as_str()),
        None => s.serialize_none(),
    }
}

/// The auth URL's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AuthHost {
    /// A name or IP literal, lower-case (an IPv6 literal without brackets).
    Literal(Box<str>),
    /// nginx variables (`$host`…), expanded per request and checked to be a host name.
    Template(UrlTemplate),
}

/// `auth-cache-key` and `auth-cache-duration`: answers of the auth service kept per key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthCache {
    /// The key's variables (`$http_authorization`, `$cookie_NAME`, `$remote_addr`…).
    pub key: HashKey,
    /// How long an answer of each status is kept (nginx's `proxy_cache_valid`).
    pub valid: Box<[(Codes, Duration)]>,
}

/// The statuses of one `auth-cache-duration` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Codes {
    /// These statuses.
    List(Box<[u16]>),
    /// Every status (`any`).
    Any,
}

impl AuthCache {
    /// How long an answer with this status is kept, if at all.
    pub fn validity(&self, status: u16) -> Option<Duration> {
        self.valid.iter().find_map(|(codes, d)| match codes {
            Codes::Any => Some(*d),
            Codes::List(list) => list.contains(&status).then_some(*d),
        })
    }
}

/// The raw values of one external-auth configuration: the `auth-*` annotations, or the
/// ConfigMap's `global-auth-*` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthValues {
    /// `auth-url`.
    pub url: String,
    /// `auth-method`.
    pub method: Option<String>,
    /// `auth-signin`.
    pub signin: Option<String>,
    /// `auth-signin-redirect-param`.
    pub signin_param: Option<String>,
    /// `auth-response-headers`.
    pub response_headers: Option<String>,
    /// `auth-request-redirect`.
    pub request_redirect: Option<String>,
    /// `auth-always-set-cookie`.
    pub always_set_cookie: bool,
    /// `auth-cache-key`.
    pub cache_key: Option<String>,
    /// `auth-cache-duration`.
    pub cache_duration: Option<String>,
}

/// The parts of an auth URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParsedUrl {
    /// `https`.
    pub tls: bool,
    /// The host.
    pub host: AuthHost,
    /// The port.
    pub port: u16,
    /// The path and query.
    pub path: UrlTemplate,
}

/// An external-auth configuration parsed, its destination not resolved yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthSpec {
    /// The URL as written.
    pub url: Box<str>,
    /// Its parts.
    #[serde(flatten)]
    pub parsed: ParsedUrl,
    /// `auth-method`: the auth request's method (GET otherwise) and X-Original-URI/X-Scheme.
    #[serde(serialize_with = "method_name")]
    pub method: Option<Method>,
    /// The sign-in redirect, parameter appended.
    pub signin: Option<UrlTemplate>,
    /// `auth-response-headers`.
    pub response_headers: Box<[FieldName]>,
    /// `auth-request-redirect`.
    pub request_redirect: Option<UrlTemplate>,
    /// `auth-always-set-cookie`.
    pub always_set_cookie: bool,
    /// The cache.
    pub cache: Option<AuthCache>,
}

/// Why a configuration was not taken: a reason and the key (without prefix) at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `url`, `method`, `signin`… (the annotation's name after `auth-`).
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        key,
        reason: reason.into(),
    }
}

/// Parses one configuration. Every error denies the location (ingress-nginx answers 503 for
/// an invalid `auth-url` and its companions); `warnings` get what is only left out (an
/// `auth-cache-key` Portico cannot expand: answers are not cached).
pub fn parse(
    values: &AuthValues,
    parse_key: impl Fn(&str) -> Result<HashKey, String>,
    warnings: &mut Vec<(&'static str, String)>,
) -> Result<AuthSpec, Invalid> {
    let url = values.url.trim();
    let parsed = parse_url(url).map_err(|why| invalid("url", format!("{url:?} {why}")))?;
    let method = match values.method.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(m) => Some(parse_method(m).ok_or_else(|| {
            invalid(
                "method",
                format!(
                    "{m:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE"
                ),
            )
        })?),
    };
    let param = match values.signin_param.as_deref().map(str::trim) {
        None | Some("") => "rd",
        Some(p)
            if p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            p
        }
        Some(p) => {
            return Err(invalid(
                "signin-redirect-param",
                format!("{p:?} is not a query parameter name (letters, digits, '-', '_', '.')"),
            ));
        }
    };
    let signin = match values.signin.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => {
            Some(signin_url(s, param).map_err(|why| invalid("signin", format!("{s:?} {why}")))?)
        }
    };
    let response_headers = match values.response_headers.as_deref() {
        None => Box::default(),
        Some(list) => response_headers(list).map_err(|why| invalid("response-headers", why))?,
    };
    let request_redirect = match values.request_redirect.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) => Some(
            values::parse_field_template(r)
                .map_err(|why| invalid("request-redirect", format!("{r:?} {why}")))?,
        ),
    };
    let cache = match values.cache_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(key) => {
            let durations = values
                .cache_duration
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .unwrap_or("200 202 401 5m");
            let valid = cache_durations(durations)
                .map_err(|why| invalid("cache-duration", format!("{durations:?} {why}")))?;
            match parse_key(key) {
                Ok(key) => Some(AuthCache { key, valid }),
                Err(why) => {
                    warnings.push((
                        "cache-key",
                        format!("{key:?} {why}; the auth service is asked on every request"),
                    ));
                    None
                }
            }
        }
    };
    Ok(AuthSpec {
        url: url.into(),
        parsed,
        method,
        signin,
        response_headers,
        request_redirect,
        always_set_cookie: values.always_set_cookie,
        cache,
    })
}

fn parse_method(m: &str) -> Option<Method> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    METHODS
        .contains(&m)
        .then(|| Method::from_bytes(m.as_bytes()).ok())
        .flatten()
}

/// Splits `scheme://authority/path?query` as ingress-nginx's check does (a scheme and a host
/// are required, `..` in the host is refused) and as nginx's `proxy_pass` can use it (http or
/// https, no user information, no fragment).
pub fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    if url.len() > MAX_URL {
        return Err(format!("is longer than {MAX_URL} bytes"));
    }
    if url
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == 0x7f)
    {
        return Err("holds spaces or control characters".to_string());
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err("is not an http:// or https:// URL".to_string());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.contains('#') {
        return Err("has a fragment ('#')".to_string());
    }
    if authority.contains('@') {
        return Err("has user information ('@'), which nginx's proxy_pass does not take".into());
    }
    let (host, port) = split_authority(authority)?;
    let default_port = if tls { 443 } else { 80 };
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("has the port {p:?}, not a number from 1 to 65535"))?,
    };
    if host.is_empty() {
        return Err("has no host".to_string());
    }
    if host.contains("..") {
        return Err("has an invalid host (\"..\")".to_string());
    }
    let host = if host.contains('$') {
        let template = values::parse_template(host)?;
        if template.has_captures() {
            return Err("uses a regex capture in its host".to_string());
        }
        AuthHost::Template(template)
    } else {
        let lower = host.to_ascii_lowercase();
        if !valid_host(&lower) {
            return Err(format!(
                "has the host {host:?}, not a host name or IP address"
            ));
        }
        AuthHost::Literal(lower.into())
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let path = values::parse_template(&path)?;
    Ok(ParsedUrl {
        tls,
        host,
        port,
        path,
    })
}

/// `host[:port]`, `[v6][:port]`: the host (brackets removed) and the port text.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(v6) = authority.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| "has an unclosed '[' in its host".to_string())?;
        let host = &v6[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("has {host:?} in brackets, not an IPv6 address"));
        }
        return match &v6[close + 1..] {
            "" => Ok((host, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| "has text after its IPv6 address".to_string()),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// A DNS name (letters, digits, '-', '_', dots; labels of 1–63, at most 253 in all) or an
/// IP address.
pub fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The Service a host names: `name.namespace.svc` or `name.namespace.svc.cluster.local`
/// (case and one trailing dot ignored).
pub fn cluster_service(host: &str) -> Option<(&str, &str)> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let rest = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (name, ns) = rest.split_once('.')?;
    (!name.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((name, ns))
}

/// ingress-nginx's `buildAuthSignURL`: the redirect parameter (`rd` unless
/// `auth-signin-redirect-param`) is appended with `$pass_access_scheme://$http_host
/// $escaped_request_uri`, after `?` or `&`, unless the URL already has it.
fn signin_url(signin: &str, param: &str) -> Result<UrlTemplate, String> {
    parse_url(signin)?;
    let query = signin.split_once('?').map(|(_, q)| q);
    let has_param = query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            k == param && !v.is_empty()
        })
    });
    let full = if has_param {
        signin.to_string()
    } else {
        let sep = if query.is_some_and(|q| !q.is_empty()) {
            '&'
        } else if query.is_some() {
            // `…?`: an empty query, as Go's url.Query() sees it.
            return values::parse_template(&format!(
                "{signin}{param}=$scheme://$http_host$escaped_request_uri"
            ));
        } else {
            '?'
        };
        format!("{signin}{sep}{param}=$scheme://$http_host$escaped_request_uri")
    };
    values::parse_template(&full)
}

/// `auth-response-headers`: field names separated by commas (spaces around them ignored).
fn response_headers(list: &str) -> Result<Box<[FieldName]>, String> {
    let mut out: Vec<FieldName> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header field name"))?;
        if FORBIDDEN_COPIES.contains(&parsed.as_str()) {
            return Err(format!(
                "{name:?} is a field Portico writes itself (framing, hop-by-hop or Host): an auth service may not set it"
            ));
        }
        if !out.iter().any(|f| f.0 == parsed) {
            out.push(FieldName(parsed));
        }
        if out.len() > MAX_RESPONSE_HEADERS {
            return Err(format!("names more than {MAX_RESPONSE_HEADERS} fields"));
        }
    }
    Ok(out.into())
}

/// `auth-cache-duration`: entries separated by commas, each nginx's `proxy_cache_valid`
/// arguments: optional statuses (or `any`) and a time (`5m`, `1h`, `30s`, `2d`).
pub fn cache_durations(value: &str) -> Result<Box<[(Codes, Duration)]>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let words: Vec<&str> = entry.split_ascii_whitespace().collect();
        let Some((time, codes)) = words.split_last() else {
            continue;
        };
        let duration = values::parse_time(time)
            .ok_or_else(|| format!("has {time:?}, not a time such as 5m"))?;
        let codes = if codes.is_empty() {
            // nginx: a time alone caches 200, 301 and 302.
            Codes::List(Box::new([200, 301, 302]))
        } else if codes == ["any"] {
            Codes::Any
        } else {
            let mut list = Vec::new();
            for c in codes {
                let code = c
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("has {c:?}, not a status from 100 to 599"))?;
                list.push(code);
            }
            Codes::List(list.into())
        };
        out.push((codes, duration));
    }
    if out.is_empty() {
        return Err("has no entry".to_string());
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests;
