//! Host and path routing: exact hosts, `*.wildcard` hosts and a host-less catch-all, each with
//! a matchit router over Ingress paths; plus the default backend.
//!
//! Path semantics follow the Kubernetes Ingress path-matching table. They are carried by a small
//! encoding into keys (see [`keys_for`]) and resolved at build time: static keys go into a
//! matchit router, `Prefix` catch-alls into a map probed at the request path's '/' boundaries,
//! so a lookup is one host probe, one matchit walk and a few prefix probes, with no allocation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::metrics::RouteCounters;

use super::diagnostics::Diagnostic;
use super::host::{self, MAX_HOST};
use super::services::ServicePortId;
use crate::source::ObjectKey;

/// An Ingress path type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PathType {
    /// Byte-exact, case-sensitive match of the whole path.
    Exact,
    /// Element-by-element prefix match on '/'.
    Prefix,
    /// Portico treats ImplementationSpecific exactly as Prefix.
    ImplementationSpecific,
}

// === impl PathType ===

impl PathType {
    /// The type used for matching (ImplementationSpecific behaves as Prefix).
    pub fn effective(self) -> PathType {
        match self {
            PathType::ImplementationSpecific => PathType::Prefix,
            t => t,
        }
    }

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

/// The Ingress a route came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct IngressRef {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

/// A Service port as an Ingress backend names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    /// `port.number`.
    Number(u16),
    /// `port.name`.
    Name(Box<str>),
}

/// Where requests for a route go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Upstream {
    /// A Service port of the snapshot's service table: pick one of its ready endpoints.
    Service(ServicePortId),
    /// An ExternalName Service: connect to this DNS name and port.
    External {
        /// The DNS name.
        host: std::sync::Arc<str>,
        /// The port.
        port: u16,
    },
    /// The backend could not be resolved (missing Service or port, unsupported resource): 503.
    Unavailable,
}

/// The backend of a route: the Service the Ingress names, and what it resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// Service name (in the Ingress's namespace); empty for a resource backend.
    pub service: Arc<str>,
    /// The Service port named.
    pub port: PortRef,
    /// What it resolved to.
    pub upstream: Upstream,
    /// TLS to its endpoints (`backend-protocol: HTTPS`, `AUTO_HTTP`, `appProtocol: https`);
    /// `None`: clear text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::upstream_tls::BackendTls>,
    /// The scheduler the route's `load-balance` chose over the Service's (`None`: the
    /// Service's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<super::services::Scheduler>,
    /// HTTP/2 to the endpoints (`GRPC`, `GRPCS`, `appProtocol: kubernetes.io/h2c`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
}

/// One routing decision: what a request that matched gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The rule's host pattern; None for host-less rules and the default backend.
    pub host: Option<Box<str>>,
    /// The path as written; None for the default backend.
    pub path: Option<Box<str>>,
    /// The path type as written; None for the default backend.
    pub path_type: Option<PathType>,
    /// The Ingress that declared it.
    pub ingress: IngressRef,
    /// Where requests go.
    pub backend: Backend,
    /// Plain-HTTP requests get a 308 to HTTPS (the host is in a `spec.tls` of the route's
    /// namespace, or `force-ssl-redirect`).
    pub ssl_redirect: bool,
    /// What the route's annotations ask beyond forwarding (`None` for a plain route: it costs
    /// nothing per request). Shared by every route of one Ingress.
    pub policy: Option<Arc<Policy>>,
    /// The path as a regex, when its host is in regex mode (`use-regex` or `rewrite-target` on
    /// any Ingress of the host): set when the host is built.
    pub regex: Option<PathRegex>,
    /// The canary Ingress attached to this rule (same host, path and type), and when it takes
    /// a request: set when the host is built.
    pub canary: Option<Arc<Canary>>,
    /// Labels for metrics and logs, formatted once at build time.
    pub labels: RouteLabels,
}

/// What a route asks beyond "forward to the backend", compiled from annotations, applied by
/// the proxy in one order, nginx's phases (ARCHITECTURE.md, "Route policies"): the access
/// log switch, a declared body over the limit, redirects (app root, permanent/temporal, then
/// HTTPS), deny, then the upstream Host and the streamed body limit while forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Answer this status and forward nothing (an access-guarding annotation Portico does not
    /// implement: fail closed).
    pub deny: Option<u16>,
    /// Access rules: refused request fields, denied and allowed client addresses (403).
    pub access: Option<Arc<super::access::Access>>,
    /// `auth-type: basic`: the users a request must be one of (401 otherwise).
    pub basic_auth: Option<Arc<super::basic_auth::BasicAuth>>,
    /// `auth-url` (or the ConfigMap's `global-auth-url`): the auth service asked first.
    pub external_auth: Option<Arc<super::external_auth::ExternalAuth>>,
    /// `enable-cors` and the `cors-*` annotations.
    pub cors: Option<Arc<super::cors::Cors>>,
    /// `limit-rps`, `limit-rpm`, `limit-connections` (and their burst and exemptions).
    pub limits: Option<Arc<super::limits::Limits>>,
    /// `limit-rate` and `limit-rate-after`: response bytes per second, after so many bytes.
    pub bandwidth: Option<(u64, u64)>,
    /// `app-root`: a request for `/` gets a 302 to this path.
    pub app_root: Option<Box<str>>,
    /// `permanent-redirect` / `temporal-redirect`: every request gets this redirect.
    pub redirect: Option<Redirect>,
    /// `preserve-trailing-slash`: the HTTPS redirect keeps a trailing '/'.
    pub preserve_trailing_slash: bool,
    /// The HTTPS redirect's status (`http-redirect-code` of the ConfigMap, default 308).
    pub https_redirect_code: u16,
    /// `proxy-body-size`: a larger request body gets 413 (`None`: no limit).
    pub body_limit: Option<u64>,
    /// `upstream-vhost`: the Host sent upstream.
    pub upstream_host: Option<Box<str>>,
    /// `enable-access-log`: false leaves the route's requests out of the access log.
    pub access_log: bool,
    /// `use-regex`: the paths of the route's host are regexes.
    pub use_regex: bool,
    /// `rewrite-target` (with `x-forwarded-prefix`): the URI sent upstream.
    pub rewrite: Option<Rewrite>,
    /// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout`: the route's own
    /// (`None`: the proxy's).
    pub timeouts: Option<RouteTimeouts>,
    /// Header operations of `configuration-snippet` / `server-snippet`.
    pub headers: Option<Arc<HeaderOps>>,
    /// `client-body-buffer-size`: how much of a request body is read before the upstream
    /// is connected (the proxy's `--client-body-buffer-size` otherwise).
    pub body_buffer: Option<u64>,
    /// `upstream-hash-by`: the endpoint is chosen by hashing this key of the request.
    pub hash_by: Option<HashKey>,
    /// `service-upstream`: one endpoint per request by the Service's own scheduler (what its
    /// ClusterIP does), no other endpoint tried after a failed connect, no request hashing.
    pub service_upstream: bool,
    /// `default-backend`: the Service (its first port) that serves when the route's has no
    /// ready endpoint.
    pub fallback: Option<Backend>,
    /// `affinity: cookie`: sticky sessions by a cookie (wins over `upstream-hash-by`).
    pub affinity: Option<Arc<Affinity>>,
    /// `custom-http-errors` (the annotation, else the ConfigMap's): a response with one of
    /// these statuses is replaced by the default backend's answer (`fallback`, else the
    /// Ingress default backend), asked with X-Code and the other fields ingress-nginx sends.
    pub custom_errors: Option<Box<[u16]>>,
    /// `proxy-next-upstream`, `-tries`, `-timeout` (the annotation's, else the ConfigMap's;
    /// `None`: ingress-nginx's default, [`NextUpstream::DEFAULT`]).
    pub next_upstream: Option<NextUpstream>,
}

/// When a request goes on to another endpoint (nginx's `proxy_next_upstream`): after which
/// failures, how many tries in all, within how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NextUpstream {
    /// `error`: connecting, sending the request or reading the response head failed.
    pub error: bool,
    /// `timeout`: connecting or waiting for the response head timed out.
    pub timeout: bool,
    /// `invalid_header`: the endpoint sent an empty or invalid response head.
    pub invalid_header: bool,
    /// `http_403`, `http_404`, `http_429`, `http_500`, `http_502`, `http_503`, `http_504`: one
    /// bit each, in that order.
    pub statuses: u8,
    /// `non_idempotent`: POST, LOCK and PATCH go on too once sent.
    pub non_idempotent: bool,
    /// `proxy-next-upstream-tries`: attempts in all, the first included (0: no limit but the
    /// endpoints).
    pub tries: u32,
    /// `proxy-next-upstream-timeout`: no further attempt once this much time has passed since
    /// the first (`None`: no limit).
    pub within: Option<std::time::Duration>,
}

impl NextUpstream {
    /// ingress-nginx's default: `error timeout`, 3 tries, no time limit.
    pub const DEFAULT: NextUpstream = NextUpstream {
        error: true,
        timeout: true,
        invalid_header: false,
        statuses: 0,
        non_idempotent: false,
        tries: 3,
        within: None,
    };

    /// The statuses `http_<code>` may name, in bit order.
    pub const STATUSES: [u16; 7] = [403, 404, 429, 500, 502, 503, 504];

    /// Whether a response with this status goes on to another endpoint.
    pub fn on_status(&self, status: u16) -> bool {
        self.statuses != 0
            && Self::STATUSES
                .iter()
                .position(|&s| s == status)
                .is_some_and(|i| self.statuses & (1 << i) != 0)
    }

    /// Reads `proxy-next-upstream-tries`: a whole number (0: no limit).
    pub fn set_tries(&mut self, value: &str) -> Result<(), String> {
        match value.parse::<u32>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => {
                self.tries = n;
                Ok(())
            }
            _ => Err("is not a whole number (0: no limit)".to_string()),
        }
    }

    /// Reads `proxy-next-upstream-timeout`: whole seconds (0: no limit).
    pub fn set_within(&mut self, value: &str) -> Result<(), String> {
        if value == "0" {
            self.within = None;
            return Ok(());
        }
        let seconds = crate::snapshot::build::annotations::values::parse_seconds(value)
            .ok_or("is not whole seconds (0: no limit)")?;
        self.within = Some(std::time::Duration::from_secs(seconds));
        Ok(())
    }

    /// Reads nginx's `proxy_next_upstream` list (`off` alone turns every condition off).
    pub fn set_conditions(&mut self, value: &str) -> Result<(), String> {
        let mut next = NextUpstream {
            error: false,
            timeout: false,
            invalid_header: false,
            statuses: 0,
            non_idempotent: false,
            ..*self
        };
        let words: Vec<&str> = value.split_ascii_whitespace().collect();
        if words.is_empty() {
            return Err("names no condition".to_string());
        }
        // nginx: `off` among other conditions wins (NGX_HTTP_UPSTREAM_FT_OFF).
        if words.contains(&"off") {
            *self = next;
            return Ok(());
        }
        for word in &words {
            match *word {
                "error" => next.error = true,
                "timeout" => next.timeout = true,
                "invalid_header" => next.invalid_header = true,
                "non_idempotent" => next.non_idempotent = true,
                other => {
                    let code = other
                        .strip_prefix("http_")
                        .and_then(|c| c.parse::<u16>().ok());
                    match code.and_then(|c| Self::STATUSES.iter().position(|&s| s == c)) {
                        Some(i) => next.statuses |= 1 << i,
                        None => {
                            return Err(format!(
                                "has {other:?}, not one of error, timeout, invalid_header, http_403, http_404, http_429, http_500, http_502, http_503, http_504, non_idempotent, off"
                            ));
                        }
                    }
                }
            }
        }
        *self = next;
        Ok(())
    }
}

/// `affinity: cookie` and the `session-cookie-*` annotations: ingress-nginx's sticky
/// sessions. The cookie's value is `<endpoint key>|<backend key>`; the backend key tells a
/// primary's sticky cookie from its canary's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Affinity {
    /// `affinity-mode`.
    pub mode: AffinityMode,
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub name: Box<str>,
    /// `session-cookie-path` (default: the route's path as written).
    pub path: Option<Box<str>>,
    /// `session-cookie-domain`.
    pub domain: Option<Box<str>>,
    /// `session-cookie-max-age`, in seconds.
    pub max_age: Option<u64>,
    /// `session-cookie-expires`, in seconds from the response.
    pub expires: Option<u64>,
    /// `session-cookie-samesite`: `None`, `Lax` or `Strict`.
    pub samesite: Option<&'static str>,
    /// `session-cookie-secure: "true"` (otherwise Secure only over HTTPS).
    pub secure: bool,
    /// `session-cookie-change-on-failure`: a failed endpoint gives the session another one.
    pub change_on_failure: bool,
}

/// How a sticky session keeps its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityMode {
    /// A random key, consistently hashed over the ready endpoints: a scale-up moves some
    /// sessions (ingress-nginx's default).
    Balanced,
    /// The key names the endpoint: the session stays until that endpoint is gone.
    Persistent,
}

/// A request key for consistent hashing (`upstream-hash-by`), in nginx's variable syntax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HashKey(pub Box<[HashPart]>);

/// A piece of a [`HashKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum HashPart {
    /// Text as written.
    Literal(Box<str>),
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// A variable of the URL templates (`$request_uri`, `$uri`, `$args`, `$host`…).
    Var(UrlVar),
    /// `$http_NAME`: a request field.
    Header(FieldName),
    /// `$cookie_NAME`: a cookie.
    Cookie(Box<str>),
    /// `$arg_NAME`: a query argument.
    Arg(Box<str>),
}

impl HashKey {
    /// The key's hash for one request.
    pub fn hash(
        &self,
        vars: &RequestVars<'_>,
        client: std::net::IpAddr,
        headers: &http::HeaderMap,
    ) -> u64 {
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        self.feed(vars, client, headers, &mut h);
        h.finish()
    }

    /// Feeds the key's values for one request to `h`, each as `Hash` writes it (length or
    /// terminator included, so that two values cannot run together).
    pub fn feed<H: std::hash::Hasher>(
        &self,
        vars: &RequestVars<'_>,
        client: std::net::IpAddr,
        headers: &http::HeaderMap,
        h: &mut H,
    ) {
        use std::hash::Hash;
        // One buffer for the variables' values.
        let mut buf = String::new();
        for part in &*self.0 {
            match part {
                HashPart::Literal(text) => text.hash(h),
                HashPart::RemoteAddr => client.hash(h),
                HashPart::Var(var) => {
                    buf.clear();
                    var.push(vars, &mut buf);
                    buf.hash(h);
                }
                HashPart::Header(name) => {
                    // Every field of the name, so a second one cannot go unseen.
                    for v in headers.get_all(&name.0) {
                        Some(v.as_bytes()).hash(h);
                    }
                    None::<&[u8]>.hash(h);
                }
                HashPart::Cookie(name) => cookie(headers, name).hash(h),
                HashPart::Arg(name) => {
                    let value = vars.query.and_then(|q| {
                        q.split('&').find_map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (k == &**name).then_some(v)
                        })
                    });
                    value.hash(h);
                }
            }
        }
    }
}

/// The value of the cookie `name` in a request's Cookie fields.
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|&b| b == b'=')?;
            (pair[..at].trim_ascii() == name.as_bytes()).then(|| pair[at + 1..].trim_ascii())
        })
}

/// Header operations compiled from nginx snippets: fields set on the request sent upstream,
/// and changes to the response, in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOps {
    /// `proxy_set_header`: each replaces the client's field of that name (and Portico's own
    /// forwarding field); an empty value removes it.
    pub request: Vec<(FieldName, FieldValue)>,
    /// `more_set_headers`, `more_clear_headers`, `add_header`.
    pub response: Vec<ResponseOp>,
    /// `request` built once when every value is a literal (the usual case): what goes
    /// upstream without a per-request allocation.
    #[serde(skip)]
    pub request_fixed: Option<Vec<(http::HeaderName, Option<http::HeaderValue>)>>,
    /// Whether a response value uses variables (then they are expanded per request).
    pub response_vars: bool,
    /// How many of `response`, at the front, are the http level's (the ConfigMap's
    /// `add-headers`): a server's operations go after them, before the location's.
    #[serde(skip)]
    pub inherited: usize,
}

impl HeaderOps {
    /// A location's operations (these) under its server's (`server-snippet`), in nginx's
    /// order: the http level's, then the server's `more_set_headers`/`more_clear_headers`
    /// (headers-more merges a level's commands after its parent's), then the location's. The
    /// server's `add_header` only when the location has none of its own: nginx inherits
    /// `add_header` only into a level that sets none. The server's request fields never
    /// come (dropped when read: every ingress-nginx location sets `proxy_set_header`).
    pub fn under_server(&self, server: &HeaderOps) -> HeaderOps {
        let (http, location) = self
            .response
            .split_at(self.inherited.min(self.response.len()));
        let own_add = location
            .iter()
            .any(|op| matches!(op, ResponseOp::Add { .. }));
        let mut response = http.to_vec();
        response.extend(
            server
                .response
                .iter()
                .filter(|op| !(own_add && matches!(op, ResponseOp::Add { .. })))
                .cloned(),
        );
        response.extend_from_slice(location);
        let mut ops = HeaderOps {
            request: self.request.clone(),
            response,
            inherited: self.inherited,
            ..HeaderOps::default()
        };
        ops.finish();
        ops
    }

    /// Fills in what is computed once: the literal request fields, and whether the response
    /// operations need the request's variables.
    pub fn finish(&mut self) {
        self.request_fixed = self
            .request
            .iter()
            .map(|(n, v)| Some((n.0.clone(), v.fixed.clone()?)))
            .collect();
        self.response_vars = self.response.iter().any(|op| match op {
            ResponseOp::Set { value, .. } | ResponseOp::Add { value, .. } => value.fixed.is_none(),
            ResponseOp::Clear { .. } => false,
        });
    }
}

/// A header field value of a snippet: its template, and the value itself when the template
/// is a literal (built once; `Some(None)`: empty, the field is removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue {
    /// The value with nginx variables.
    pub template: UrlTemplate,
    /// The value when it has no variables.
    pub fixed: Option<Option<http::HeaderValue>>,
}

impl FieldValue {
    /// A value from its template.
    pub fn new(template: UrlTemplate) -> FieldValue {
        let fixed = match &*template.0 {
            [] => Some(None),
            [UrlPart::Literal(text)] => http::HeaderValue::from_bytes(text.as_bytes())
                .ok()
                .map(Some),
            _ => None,
        };
        FieldValue { template, fixed }
    }

    /// The value for one request: `None` when it is empty (the field is removed, as nginx
    /// does with an empty `proxy_set_header`) or holds bytes a field cannot.
    pub fn value(&self, vars: &RequestVars<'_>) -> Option<http::HeaderValue> {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let text = self.template.expand(vars);
        if text.is_empty() {
            return None;
        }
        http::HeaderValue::from_bytes(text.as_bytes()).ok()
    }
}

impl Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.template.serialize(s)
    }
}

/// A header field name, validated at build time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldName(pub http::HeaderName);

impl Serialize for FieldName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// One change to a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ResponseOp {
    /// `more_set_headers`: replaces the field (an empty value removes it), when the filter
    /// matches.
    Set {
        /// The field.
        name: FieldName,
        /// Its value.
        value: FieldValue,
        /// When it applies.
        when: ResponseFilter,
    },
    /// `more_clear_headers`: removes the fields (a trailing `*` matches a prefix).
    Clear {
        /// The field name, lower-case, or a prefix ending in `*`.
        pattern: Box<str>,
        /// When it applies.
        when: ResponseFilter,
    },
    /// `add_header`: adds a field (to 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308
    /// responses, or to every response with `always`).
    Add {
        /// The field.
        name: FieldName,
        /// Its value.
        value: FieldValue,
        /// `always`.
        always: bool,
    },
}

/// `more_set_headers`' `-s` (statuses) and `-t` (content types) options: empty means any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResponseFilter {
    /// The statuses it applies to.
    pub statuses: Vec<u16>,
    /// The content types (without parameters, lower-case) it applies to.
    pub types: Vec<Box<str>>,
}

impl ResponseFilter {
    /// Whether a response of this status and content type is concerned.
    pub fn matches(&self, status: u16, content_type: Option<&[u8]>) -> bool {
        let status_ok = self.statuses.is_empty() || self.statuses.contains(&status);
        let type_ok = self.types.is_empty()
            || content_type.is_some_and(|t| {
                let t = t
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                self.types
                    .iter()
                    .any(|want| want.as_bytes().eq_ignore_ascii_case(t))
            });
        status_ok && type_ok
    }
}

/// A route's upstream timeouts, each `None` where the proxy's applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteTimeouts {
    /// Connecting to an endpoint (504 past it).
    pub connect: Option<std::time::Duration>,
    /// Between two writes of a streamed request body.
    pub send: Option<std::time::Duration>,
    /// For the response head, and between two reads of the response body.
    pub read: Option<std::time::Duration>,
}

/// A canary Ingress's alternative backend for a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Canary {
    /// When a request goes to it.
    pub spec: Arc<CanarySpec>,
    /// The canary Ingress.
    pub ingress: IngressRef,
    /// Its backend.
    pub backend: Backend,
    /// Its labels for metrics and logs.
    pub labels: RouteLabels,
}

/// ingress-nginx's canary rules, tried in order: header, cookie, weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CanarySpec {
    /// `canary-by-header`.
    pub header: Option<FieldName>,
    /// `canary-by-header-value`: the exact value that selects the canary.
    pub header_value: Option<Box<str>>,
    /// `canary-by-header-pattern` (when no value is given).
    pub header_pattern: Option<PathRegex>,
    /// `canary-by-cookie`.
    pub cookie: Option<Box<str>>,
    /// `canary-weight`.
    pub weight: u32,
    /// `canary-weight-total` when above 100, else 100.
    pub total: u32,
    /// The canary's session affinity (its sticky cookie takes a request to it): its
    /// primary's, or with `legacy` the canary Ingress's own.
    pub affinity: Option<Arc<Affinity>>,
    /// `affinity-canary-behavior: legacy` on the canary Ingress.
    pub legacy: bool,
    /// The canary Ingress's own `upstream-hash-by` (ingress-nginx honours it on a canary,
    /// as `load-balance` and the affinity annotations).
    pub hash_by: Option<HashKey>,
}

/// What a canary rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryChoice {
    /// The canary.
    Canary,
    /// The primary, at once (`never`).
    Primary,
    /// Nothing decided: the next rule.
    Undecided,
}

impl CanarySpec {
    /// Whether a request with these fields goes to the canary; `roll(total)` draws a number
    /// in `1..=total` for the weight.
    pub fn selects(&self, headers: &http::HeaderMap, roll: impl FnOnce(u32) -> u32) -> bool {
        match self.by_header(headers) {
            CanaryChoice::Canary => return true,
            CanaryChoice::Primary => return false,
            CanaryChoice::Undecided => {}
        }
        match self.by_cookie(headers) {
            CanaryChoice::Canary => return true,
            CanaryChoice::Primary => return false,
            CanaryChoice::Undecided => {}
        }
        match self.weight {
            0 => false,
            w if w >= self.total => true,
            w => roll(self.total) <= w,
        }
    }

    fn by_header(&self, headers: &http::HeaderMap) -> CanaryChoice {
        let Some(value) = self.header.as_ref().and_then(|h| headers.get(&h.0)) else {
            return CanaryChoice::Undecided;
        };
        let value = value.as_bytes();
        if let Some(want) = &self.header_value {
            if value == want.as_bytes() {
                return CanaryChoice::Canary;
            }
            return CanaryChoice::Undecided;
        }
        if let Some(re) = &self.header_pattern {
            let text = std::str::from_utf8(value).unwrap_or_default();
            if re.0.is_match(text) {
                return CanaryChoice::Canary;
            }
            return CanaryChoice::Undecided;
        }
        match value {
            b"always" => CanaryChoice::Canary,
            b"never" => CanaryChoice::Primary,
            _ => CanaryChoice::Undecided,
        }
    }

    fn by_cookie(&self, headers: &http::HeaderMap) -> CanaryChoice {
        let Some(name) = &self.cookie else {
            return CanaryChoice::Undecided;
        };
        match cookie(headers, name) {
            Some(b"always") => CanaryChoice::Canary,
            Some(b"never") => CanaryChoice::Primary,
            _ => CanaryChoice::Undecided,
        }
    }
}

/// `rewrite-target`: the whole URI is replaced (nginx's `rewrite <path> <target> break`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The new URI, with the path regex's captures and nginx variables.
    pub target: UrlTemplate,
    /// The target starts with `http://` or `https://`: a 302 to it instead.
    pub redirect: bool,
    /// `x-forwarded-prefix`: sent as X-Forwarded-Prefix with the rewritten request.
    pub prefix: Option<Box<str>>,
}

/// A path as nginx's `location ~* "^<path>"`: case-insensitive, anchored at the start only.
#[derive(Clone, Debug)]
pub struct PathRegex(pub regex::Regex);

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for PathRegex {}

impl Serialize for PathRegex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// The most memory one path's compiled regex may take (the `regex` crate's size limit): a
/// tenant's pattern cannot make Portico build a huge automaton.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl PathRegex {
    /// Compiles an Ingress path the way ingress-nginx renders it in regex mode.
    pub fn compile(path: &str) -> Result<PathRegex, String> {
        PathRegex::build(&format!("^{path}"), true)
    }

    /// A tenant's pattern, size-limited; the error says why in a diagnostic's words.
    pub fn build(pattern: &str, case_insensitive: bool) -> Result<PathRegex, String> {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(PathRegex)
            .map_err(|e| match e {
                regex::Error::Syntax(text) => {
                    let last = text.lines().rev().find(|l| !l.trim().is_empty());
                    let why = last.unwrap_or("").trim().trim_start_matches("error: ");
                    let pcre = if why.contains("look-around") || why.contains("backreferences") {
                        ": PCRE has it, the linear-time regex engine Portico uses does not"
                    } else {
                        ""
                    };
                    format!("is not a regex Portico can run ({why}{pcre})")
                }
                regex::Error::CompiledTooBig(n) => {
                    format!("compiles to more than {n} bytes")
                }
                e => e.to_string(),
            })
    }
}

impl Policy {
    /// Whether the policy guards who may reach the route: a deny, access lists, basic or
    /// external authentication, or limits.
    pub fn guards_access(&self) -> bool {
        self.deny.is_some()
            || self.access.is_some()
            || self.basic_auth.is_some()
            || self.external_auth.is_some()
            || self.limits.is_some()
    }

    /// Whether a template of the policy uses the path regex's captures.
    pub fn uses_captures(&self) -> bool {
        self.rewrite
            .as_ref()
            .is_some_and(|r| r.target.has_captures())
            || self.redirect.as_ref().is_some_and(|r| r.url.has_captures())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deny: None,
            access: None,
            basic_auth: None,
            external_auth: None,
            cors: None,
            limits: None,
            bandwidth: None,
            app_root: None,
            redirect: None,
            preserve_trailing_slash: false,
            https_redirect_code: 308,
            body_limit: None,
            upstream_host: None,
            access_log: true,
            use_regex: false,
            rewrite: None,
            timeouts: None,
            headers: None,
            body_buffer: None,
            hash_by: None,
            service_upstream: false,
            fallback: None,
            affinity: None,
            custom_errors: None,
            next_upstream: None,
        }
    }
}

/// A redirect every request of a route gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The status (301 and 302 by default).
    pub code: u16,
    /// The Location, with nginx variables.
    pub url: UrlTemplate,
}

/// A URL with nginx variables, expanded per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UrlTemplate(pub Box<[UrlPart]>);

/// A piece of a [`UrlTemplate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum UrlPart {
    /// Text as written.
    Literal(Box<str>),
    /// A variable.
    Var(UrlVar),
    /// `$1`…`$9`: a capture of the path regex (empty when there is none).
    Capture(u8),
    /// `$http_NAME`: the request's fields of that name (lower-case, `_` as `-`), joined with
    /// `, ` as nginx ≥ 1.23 joins them; empty when there is none.
    Header(Box<str>),
}

/// The nginx variables a redirect URL may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UrlVar {
    /// `$request_uri`: the path and query as the client sent them.
    RequestUri,
    /// `$escaped_request_uri` (ingress-nginx's): `$request_uri` with every byte but letters,
    /// digits and `-._~` percent-encoded.
    EscapedRequestUri,
    /// `$uri`: the path (normalised).
    Uri,
    /// `$args`, `$query_string`: the query, without '?'.
    Args,
    /// `$is_args`: '?' when there is a query.
    IsArgs,
    /// `$host`: the host name, lower-case, without the port.
    Host,
    /// `$http_host`, `$best_http_host`: the Host as sent.
    HttpHost,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `:port` of the Host when it names one, else nothing (not a name a template may use:
    /// the www redirect keeps the client's port with it).
    HostPort,
    /// `$request_uri` without its last `/` (not a name a template may use: ingress-nginx's
    /// www redirect strips it).
    RequestUriTrimmed,
    /// `$pass_access_scheme` (not a name a template may use: the www redirect's scheme).
    PassScheme,
    /// `$remote_addr`: the client address (a trusted peer's word for it, as nginx's realip).
    RemoteAddr,
}

/// What a request offers a [`UrlTemplate`].
#[derive(Clone, Copy, Debug)]
pub struct RequestVars<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The scheme the client used as a trusted peer tells it (ingress-nginx's
    /// `$pass_access_scheme`): `scheme` unless a trusted peer's X-Forwarded-Proto says else.
    pub pass_scheme: &'a str,
    /// The Host as sent (`host[:port]`).
    pub http_host: &'a str,
    /// The path (normalised).
    pub path: &'a str,
    /// The path as the client sent it.
    pub raw_path: &'a str,
    /// The query, without '?'.
    pub query: Option<&'a str>,
    /// The path regex's captures, in regex mode.
    pub captures: Option<&'a regex::Captures<'a>>,
    /// The client address (`$remote_addr`).
    pub client: Option<std::net::IpAddr>,
    /// The request's fields (`$http_NAME`).
    pub headers: Option<&'a http::HeaderMap>,
}

// === impl UrlVar ===

impl UrlVar {
    /// The names a template may use.
    pub const NAMES: [&'static str; 12] = [
        "request_uri",
        "escaped_request_uri",
        "uri",
        "args",
        "query_string",
        "is_args",
        "host",
        "http_host",
        "best_http_host",
        "scheme",
        "remote_addr",
        "http_NAME",
    ];

    /// Appends the variable's value for one request to `out`.
    pub fn push(self, vars: &RequestVars<'_>, out: &mut String) {
        match self {
            UrlVar::RequestUri => {
                out.push_str(vars.raw_path);
                if let Some(q) = vars.query {
                    out.push('?');
                    out.push_str(q);
                }
            }
            UrlVar::EscapedRequestUri => {
                escape_component(vars.raw_path, out);
                if let Some(q) = vars.query {
                    out.push_str("%3F");
                    escape_component(q, out);
                }
            }
            UrlVar::Uri => out.push_str(vars.path),
            UrlVar::Args => out.push_str(vars.query.unwrap_or("")),
            UrlVar::IsArgs => {
                if vars.query.is_some_and(|q| !q.is_empty()) {
                    out.push('?');
                }
            }
            UrlVar::Host => {
                let name = super::host::without_port(vars.http_host);
                out.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            }
            UrlVar::HttpHost => out.push_str(vars.http_host),
            UrlVar::Scheme => out.push_str(vars.scheme),
            UrlVar::HostPort => {
                let name = super::host::without_port(vars.http_host);
                out.push_str(&vars.http_host[name.len()..]);
            }
            UrlVar::RequestUriTrimmed => {
                let start = out.len();
                UrlVar::RequestUri.push(vars, out);
                if out.len() > start && out.ends_with('/') {
                    out.pop();
                }
            }
            UrlVar::PassScheme => out.push_str(vars.pass_scheme),
            UrlVar::RemoteAddr => {
                if let Some(ip) = vars.client {
                    use std::fmt::Write;
                    let _ = write!(out, "{}", ip.to_canonical());
                }
            }
        }
    }

    /// The variable of a name.
    pub fn named(name: &str) -> Option<UrlVar> {
        Some(match name {
            "request_uri" => UrlVar::RequestUri,
            "escaped_request_uri" => UrlVar::EscapedRequestUri,
            "uri" | "document_uri" => UrlVar::Uri,
            "args" | "query_string" => UrlVar::Args,
            "is_args" => UrlVar::IsArgs,
            "host" => UrlVar::Host,
            "http_host" | "best_http_host" => UrlVar::HttpHost,
            "scheme" => UrlVar::Scheme,
            "remote_addr" => UrlVar::RemoteAddr,
            _ => return None,
        })
    }
}

/// Appends `text` with every byte but letters, digits and `-._~` percent-encoded (nginx's
/// `set_escape_uri`, a URI component).
pub fn escape_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

// === impl UrlTemplate ===

impl UrlTemplate {
    /// Whether the template is this text and nothing else.
    pub fn is_literal(&self, text: &str) -> bool {
        match &*self.0 {
            [UrlPart::Literal(t)] => **t == *text,
            _ => false,
        }
    }

    /// Whether it uses a regex capture.
    pub fn has_captures(&self) -> bool {
        self.0.iter().any(|p| matches!(p, UrlPart::Capture(_)))
    }

    /// The URL for one request.
    pub fn expand(&self, vars: &RequestVars<'_>) -> String {
        self.expand_split(vars).0
    }

    /// Whether the template's own text ends with `?` (nginx's rewrite then drops the
    /// request's arguments).
    pub fn ends_with_question_mark(&self) -> bool {
        matches!(self.0.last(), Some(UrlPart::Literal(t)) if t.ends_with('?'))
    }

    /// The URL for one request, and where the first `?` of the template's own text landed in
    /// it: nginx splits a rewrite's replacement into path and arguments at a `?` written in
    /// it, never at one a variable or capture produced.
    pub fn expand_split(&self, vars: &RequestVars<'_>) -> (String, Option<usize>) {
        self.expand_parts(vars, false)
    }

    /// [`Self::expand_split`] for a rewrite's replacement: a `%` that a field of the request
    /// brings into the path (`$http_NAME`, `$request_uri`, `$args`…) is a byte of the path,
    /// written `%25`, as nginx escapes the rewritten URI it proxies (its captures and `$uri`
    /// come decoded and go back escaped; Portico's are still escaped, and stay as they are).
    /// A `%2F` a client sends in a header never becomes a separator the endpoint decodes.
    pub fn expand_rewrite(&self, vars: &RequestVars<'_>) -> (String, Option<usize>) {
        self.expand_parts(vars, true)
    }

    fn expand_parts(&self, vars: &RequestVars<'_>, raw_percent: bool) -> (String, Option<usize>) {
        let mut out = String::new();
        let mut split = None;
        for part in &*self.0 {
            let start = out.len();
            let raw = match part {
                UrlPart::Literal(text) => {
                    if split.is_none() {
                        split = text.find('?').map(|i| out.len() + i);
                    }
                    out.push_str(text);
                    false
                }
                UrlPart::Capture(n) => {
                    let group = vars.captures.and_then(|c| c.get(usize::from(*n)));
                    out.push_str(group.map_or("", |m| m.as_str()));
                    false
                }
                UrlPart::Var(var) => {
                    var.push(vars, &mut out);
                    matches!(
                        var,
                        UrlVar::RequestUri
                            | UrlVar::EscapedRequestUri
                            | UrlVar::Args
                            | UrlVar::RequestUriTrimmed
                    )
                }
                UrlPart::Header(name) => {
                    if let Some(headers) = vars.headers {
                        let mut first = true;
                        for v in headers.get_all(&**name) {
                            if !first {
                                out.push_str(", ");
                            }
                            first = false;
                            out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        }
                    }
                    true
                }
            };
            if raw_percent && raw && split.is_none() && out[start..].contains('%') {
                let value = out.split_off(start);
                out.push_str(&value.replace('%', "%25"));
            }
        }
        (out, split)
    }
}

/// A route's names as metrics label values: `namespace/ingress` and `namespace/service:port`,
/// and its request counters once used.
#[derive(Clone, Debug, Serialize)]
pub struct RouteLabels {
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<str>,
    /// `namespace/service:port` of the backend.
    pub service: Arc<str>,
    /// The route's request counters (a cache: not part of the route's identity).
    #[serde(skip)]
    pub counters: Arc<RouteCounters>,
}

impl PartialEq for RouteLabels {
    fn eq(&self, other: &Self) -> bool {
        self.ingress == other.ingress && self.service == other.service
    }
}

impl Eq for RouteLabels {}

// === impl RouteLabels ===

impl RouteLabels {
    /// The labels of a backend declared by an Ingress.
    pub fn new(ingress: &IngressRef, backend: &Backend) -> Self {
        let port = match &backend.port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(n) => n.to_string(),
        };
        RouteLabels {
            ingress: format!("{}/{}", ingress.namespace, ingress.name).into(),
            service: format!("{}/{}:{port}", ingress.namespace, backend.service).into(),
            counters: Arc::default(),
        }
    }
}

/// A host pattern of an Ingress rule. The names are shared (`Arc`): every build copies the
/// patterns of all hosts into the route table, and a copy must not allocate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `foo.com` (lower-case).
    Exact(Arc<str>),
    /// `*.foo.com`, stored as the suffix `foo.com` (lower-case).
    Wildcard(Arc<str>),
    /// No host: every host that matched no other rule.
    Any,
}

impl std::fmt::Display for HostPattern {
    /// As written in a rule: `foo.com`, `*.foo.com`, or `*` for no host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// Maps looked up per request. Their keys come from the cluster's Ingresses, not from
/// clients (a client only chooses what is looked up, which cannot make the table's chains
/// longer), so foldhash does instead of SipHash: about 150 instructions less per request.
type Fast<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The routes of one host pattern: a matchit router over the static path keys, and the
/// `Prefix` catch-alls by their prefix.
#[derive(Clone, Debug)]
pub struct HostRoutes {
    /// Static keys only: matchit allocates a backtracking stack when a lookup passes a node
    /// with both static and wildcard children, so the catch-alls are kept apart.
    router: matchit::Router<usize>,
    /// `t` of each catch-all key `t/{*rest}` (unescaped) → route.
    prefixes: Fast<Box<str>, usize>,
    /// The distinct lengths of `prefixes`' keys, longest first: the only '/' positions of a
    /// request path worth probing.
    prefix_lengths: Vec<usize>,
    /// Routes in use: the fallback first (if any), then in the order their keys sort.
    routes: Vec<Route>,
    /// (matchit key, index into `routes`), sorted: the data the router was built from.
    slots: Vec<(String, usize)>,
    /// `Prefix /`, the route of every path no key matches. Kept out of the router: a
    /// catch-all at the root beside static keys makes matchit allocate a backtracking stack on
    /// every lookup.
    fallback: Option<usize>,
    /// Regex mode (ingress-nginx's `enforceRegexModifier`): the router is empty and `routes`
    /// are tried in order, each by its [`Route::regex`], the first match wins.
    regex: bool,
    /// The route of the paths no rule of the host takes: the `spec.defaultBackend` of the
    /// host's oldest Ingress, as ingress-nginx's server root location (`createServers`: the
    /// Ingress that creates a server gives its default backend to it). `None`: 404.
    default_route: Option<Box<Route>>,
}

impl PartialEq for HostRoutes {
    fn eq(&self, other: &Self) -> bool {
        // The router is derived from `slots`.
        self.routes == other.routes
            && self.slots == other.slots
            && self.fallback == other.fallback
            && self.regex == other.regex
            && self.default_route == other.default_route
    }
}

impl Eq for HostRoutes {}

// === impl HostRoutes ===

impl HostRoutes {
    /// The route for this path (already cut at '?'), if any of this host's paths match.
    ///
    /// A static key equal to the path wins; then the longest `Prefix` whose `t/` starts the
    /// path with something after it (what matchit's backtracking over `t/{*rest}` keys gave);
    /// then `Prefix /`.
    pub fn lookup(&self, path: &str) -> Option<&Route> {
        if let Ok(matched) = self.router.at(path) {
            return self.routes.get(*matched.value);
        }
        if self.regex {
            return self.routes.iter().find(|r| {
                let re = r.regex.as_ref();
                re.is_some_and(|re| re.0.is_match(path))
            });
        }
        if !path.starts_with('/') {
            return None;
        }
        let bytes = path.as_bytes();
        for &len in &self.prefix_lengths {
            // `t`, then '/', then a non-empty rest. '/' is ASCII: `len` is a char boundary.
            if len + 1 < bytes.len()
                && bytes[len] == b'/'
                && let Some(&i) = self.prefixes.get(&path[..len])
            {
                return self.routes.get(i);
            }
        }
        self.fallback.and_then(|i| self.routes.get(i))
    }

    /// Whether the host is in regex mode (its routes are tried in order).
    pub fn regex_mode(&self) -> bool {
        self.regex
    }

    /// The routes, sorted by path and type (in regex mode: in the order they are tried).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The whole routing table of a snapshot. Each host's routes are shared: a build that did not
/// touch a host reuses them from the previous snapshot (and equality is then a pointer check).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    exact: Arc<Fast<Arc<str>, Arc<HostRoutes>>>,
    wildcard: Arc<Fast<Arc<str>, Arc<HostRoutes>>>,
    catch_all: Option<Arc<HostRoutes>>,
    default_backend: Option<Route>,
}

// === impl RouteTable ===

impl RouteTable {
    /// A table of these hosts' routes and this default backend.
    pub fn from_hosts<'a>(
        hosts: impl IntoIterator<Item = (&'a HostPattern, &'a Arc<HostRoutes>)>,
        default_backend: Option<Route>,
    ) -> RouteTable {
        let changes = hosts.into_iter().map(|(h, r)| (h, Some(r)));
        RouteTable::default().updated(changes, default_backend)
    }

    /// This table with some hosts replaced (`Some`) or removed (`None`), and this default
    /// backend. The other hosts are shared with this table: the cost is a copy of the host
    /// maps that change (reference counts) plus the changes.
    pub fn updated<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a HostPattern, Option<&'a Arc<HostRoutes>>)>,
        default_backend: Option<Route>,
    ) -> RouteTable {
        let mut table = RouteTable {
            exact: Arc::clone(&self.exact),
            wildcard: Arc::clone(&self.wildcard),
            catch_all: self.catch_all.clone(),
            default_backend,
        };
        for (host, routes) in changes {
            let (map, name) = match host {
                HostPattern::Exact(h) => (&mut table.exact, h),
                HostPattern::Wildcard(h) => (&mut table.wildcard, h),
                HostPattern::Any => {
                    table.catch_all = routes.cloned();
                    continue;
                }
            };
            // Copies the map on its first change only.
            let map = Arc::make_mut(map);
            match routes {
                Some(routes) => drop(map.insert(Arc::clone(name), Arc::clone(routes))),
                None => drop(map.remove(&**name)),
            }
        }
        table
    }

    /// The route for a request's Host (or `:authority`) and path; None means the built-in 404.
    ///
    /// Exact host, then `*.` wildcard (one label), then host-less rules. A host that matched
    /// but whose paths did not goes to its own default route (the `spec.defaultBackend` of its
    /// oldest Ingress), never to other rules nor to another Ingress's default backend; a host
    /// no rule names goes to the host-less rules, then to the catch-all default backend.
    pub fn route(&self, host: &str, path: &str) -> Option<&Route> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let mut buf = [0u8; MAX_HOST];
        let rules = host::normalize(host, &mut buf).and_then(|h| self.host_rules(h));
        match rules {
            Some(rules) => rules.lookup(path).or(rules.default_route.as_deref()),
            None => self
                .catch_all
                .as_ref()
                .and_then(|c| c.lookup(path))
                .or(self.default_backend.as_ref()),
        }
    }

    /// The router installed under an exact host name (a rule's host or an alias).
    pub fn exact_routes(&self, host: &str) -> Option<&Arc<HostRoutes>> {
        self.exact.get(host)
    }

    fn host_rules(&self, host: &str) -> Option<&HostRoutes> {
        if let Some(rules) = self.exact.get(host) {
            return Some(rules);
        }
        // `*.foo.com` matches exactly one more label: strip the first label and look up the rest.
        self.wildcard
            .get(host::wildcard_suffix(host)?)
            .map(|r| &**r)
    }

    /// The catch-all default backend: that of our oldest Ingress with a `spec.defaultBackend`
    /// and no rules (ingress-nginx's catch-all server), if any.
    pub fn default_backend(&self) -> Option<&Route> {
        self.default_backend.as_ref()
    }

    /// Every host pattern with its routes: exact hosts, then wildcards, then host-less rules,
    /// each sorted by name.
    pub fn hosts(&self) -> Vec<(HostPattern, &HostRoutes)> {
        let mut exact: Vec<_> = self.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        let mut wildcard: Vec<_> = self.wildcard.iter().collect();
        wildcard.sort_by(|a, b| a.0.cmp(b.0));
        let exact = exact
            .into_iter()
            .map(|(h, r)| (HostPattern::Exact(h.clone()), &**r));
        let wildcard = wildcard
            .into_iter()
            .map(|(h, r)| (HostPattern::Wildcard(h.clone()), &**r));
        let any = self.catch_all.iter().map(|r| (HostPattern::Any, &**r));
        exact.chain(wildcard).chain(any).collect()
    }

    /// Number of routes over all hosts (the default backend not counted).
    pub fn len(&self) -> usize {
        self.exact.values().map(|r| r.routes.len()).sum::<usize>()
            + self
                .wildcard
                .values()
                .map(|r| r.routes.len())
                .sum::<usize>()
            + self.catch_all.as_ref().map_or(0, |r| r.routes.len())
    }

    /// True when there is no route at all (and no default backend).
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.default_backend.is_none()
    }
}

/// A route offered by one Ingress path, before precedence is applied.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The route it would install.
    pub route: Route,
    /// From a canary Ingress: it joins the primary rule of the same path and type instead.
    pub canary: Option<Arc<CanarySpec>>,
    /// From `from-to-www-redirect`: used only when no rule names the host.
    pub secondary: bool,
    /// The Ingress's `server-snippet` operations (the host's oldest Ingress with one sets
    /// them for every route of the host).
    pub server_snippet: Option<Arc<HeaderOps>>,
    /// The Ingress's `spec.defaultBackend`: the host's oldest Ingress gives it to the paths
    /// no rule of the host takes.
    pub default_backend: Option<Arc<Route>>,
    /// Precedence among equal claims: lower is older (creationTimestamp, namespace/name,
    /// then position in the Ingress).
    pub age: (usize, usize, usize),
    /// The Ingress, for diagnostics.
    pub object: ObjectKey,
    /// The field path of the path entry, for diagnostics.
    pub field: String,
}

impl Candidate {
    fn path(&self) -> &str {
        self.route.path.as_deref().unwrap_or("/")
    }

    fn path_type(&self) -> PathType {
        self.route.path_type.unwrap_or(PathType::Prefix).effective()
    }
}

/// Builds one host's router: equal claims go to the oldest Ingress (a diagnostic for the
/// others unless they name the same backend), then every matchit key
/// goes to the longest declared path, Exact before Prefix on equal length. Only the order of
/// the candidates' ages matters, not their values.
///
/// `owner` is the namespace that owns the host (that of its oldest claimant,
/// `HostEntry::owner`): only its `server-snippet` counts.
pub fn build_host(
    candidates: Vec<Candidate>,
    owner: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HostRoutes {
    let primaries = || candidates.iter().filter(|c| c.canary.is_none());
    // The host's oldest (non-canary) Ingress gives the paths no rule takes its default
    // backend, as the Ingress that creates an ingress-nginx server gives it its root location;
    // never another Ingress's (another namespace's backend would get this host's requests).
    // (A from-to-www twin's redirect is not a rule of the host: it names no default.)
    let default_route = primaries()
        .filter(|c| !c.secondary)
        .min_by_key(|c| c.age)
        .and_then(|c| c.default_backend.as_deref().cloned());
    let server = host_server_snippet(primaries(), owner, diagnostics);
    let mut routes = host_routes(candidates, server.as_deref(), diagnostics);
    // The server's snippet reaches its root location too.
    routes.default_route = default_route.map(|mut route| {
        if let Some(server) = &server {
            under_server(&mut route, server);
        }
        Box::new(route)
    });
    routes
}

/// A route's header operations under its server's (`server-snippet`).
fn under_server(route: &mut Route, server: &HeaderOps) {
    let mut policy = route.policy.as_deref().cloned().unwrap_or_default();
    policy.headers = Some(Arc::new(match policy.headers.as_deref() {
        Some(own) => own.under_server(server),
        None => HeaderOps::default().under_server(server),
    }));
    route.policy = Some(Arc::new(policy));
}

fn host_routes(
    candidates: Vec<Candidate>,
    server: Option<&HeaderOps>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HostRoutes {
    let (canaries, mut candidates): (Vec<Candidate>, Vec<Candidate>) =
        candidates.into_iter().partition(|c| c.canary.is_some());
    // An alias (or www twin) gives way to any rule that names the host, as in ingress-nginx.
    if candidates.iter().any(|c| !c.secondary) {
        let mut warned = std::collections::BTreeSet::new();
        candidates.retain(|c| {
            if c.secondary && warned.insert((c.object.clone(), c.field.clone())) {
                let host = c.route.host.as_deref().unwrap_or("*");
                let reason = format!(
                    "{host} is the host of a rule already; from-to-www-redirect's redirect from it is ignored"
                );
                diagnostics.push(Diagnostic::warning(&c.object, c.field.clone(), reason));
            }
            !c.secondary
        });
    }
    candidates
        .sort_by(|a, b| (a.path(), a.path_type(), a.age).cmp(&(b.path(), b.path_type(), b.age)));
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len());
    for c in candidates {
        match kept.last() {
            Some(w) if w.path() == c.path() && w.path_type() == c.path_type() => {
                // Claims that agree on the backend and the policy lose nothing; otherwise the
                // loser's are not applied (its guards above all: ingress-nginx's admission
                // webhook refuses such an Ingress), an error says so.
                if w.route.backend != c.route.backend || w.route.policy != c.route.policy {
                    diagnostics.push(conflict(&c, w));
                }
            }
            _ => kept.push(c),
        }
    }
    attach_canaries(&mut kept, canaries, diagnostics);
    if let Some(server) = server {
        for c in kept.iter_mut() {
            under_server(&mut c.route, server);
        }
    }
    let Some(root) = host_app_root(&mut kept) else {
        return route_host(kept, diagnostics);
    };
    // nginx redirects `/` before it looks for a location: when no route of the host takes `/`,
    // an Exact `/` route that only redirects does.
    let twin = kept.iter().find(|c| {
        c.route
            .policy
            .as_deref()
            .is_some_and(|p| p.app_root.is_some())
    });
    // In regex mode every path is a regex anchored at the start: `/$` takes `/` alone.
    let regex = regex_mode(&kept);
    let redirect = twin.map(|c| {
        let mut c = c.clone();
        c.route.path = Some(if regex { "/$" } else { "/" }.into());
        c.route.path_type = Some(if regex {
            PathType::ImplementationSpecific
        } else {
            PathType::Exact
        });
        c.route.canary = None;
        c.route.policy = Some(Arc::new(Policy {
            app_root: Some(root),
            ..Policy::default()
        }));
        c
    });
    let mut scratch = Vec::new();
    let built = route_host(kept.clone(), &mut scratch);
    match redirect {
        Some(redirect) if built.lookup("/").is_none() => {
            kept.push(redirect);
            route_host(kept, diagnostics)
        }
        _ => {
            diagnostics.extend(scratch);
            built
        }
    }
}

/// Whether a host is in regex mode: one of its routes asks for `use-regex` or a rewrite.
fn regex_mode(kept: &[Candidate]) -> bool {
    kept.iter().any(|c| {
        let policy = c.route.policy.as_deref();
        policy.is_some_and(|p| p.use_regex || p.rewrite.is_some())
    })
}

/// The router of a host's kept candidates (precedence applied, canaries attached).
fn route_host(kept: Vec<Candidate>, diagnostics: &mut Vec<Diagnostic>) -> HostRoutes {
    if regex_mode(&kept) {
        return regex_host(kept, diagnostics);
    }
    let mut slots: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in kept.iter().enumerate() {
        for key in keys_for(c.path(), c.path_type()) {
            let slot = slots.entry(key).or_insert(i);
            if rank(c) > rank(&kept[*slot]) {
                *slot = i;
            }
        }
    }
    let root = kept
        .iter()
        .position(|c| c.path_type() == PathType::Prefix && c.path() == "/");
    finish_host(kept, slots, root, diagnostics)
}

/// `app-root` is a host setting in ingress-nginx (a server-level `if ($uri = /)` before the
/// locations, the first of the location order winning): every route of the host takes the
/// app-root of its longest path that has one, so a `/` served by another Ingress of the host
/// is redirected too.
fn host_app_root(kept: &mut [Candidate]) -> Option<Box<str>> {
    let app_root = |c: &Candidate| c.route.policy.as_deref().and_then(|p| p.app_root.clone());
    let root = kept
        .iter()
        .filter(|c| app_root(c).is_some())
        .max_by(|a, b| a.path().len().cmp(&b.path().len()).then(b.age.cmp(&a.age)))
        .and_then(app_root)?;
    for c in kept.iter_mut() {
        if app_root(c).as_deref() != Some(&*root) {
            let mut policy = c.route.policy.as_deref().cloned().unwrap_or_default();
            policy.app_root = Some(root.clone());
            c.route.policy = Some(Arc::new(policy));
        }
    }
    Some(root)
}

/// `server-snippet` is a server's: as ingress-nginx (`createServers`), the host's oldest
/// non-canary Ingress with one sets it for the whole host; the others' are ignored, with a
/// warning each. Only an Ingress of the namespace that owns the host (that of its oldest
/// claim) may set it: a tenant's snippet never changes another namespace's paths (ingress-nginx
/// would apply it to the whole host).
fn host_server_snippet<'a>(
    candidates: impl Iterator<Item = &'a Candidate>,
    owner: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Arc<HeaderOps>> {
    let field = "metadata.annotations[nginx.ingress.kubernetes.io/server-snippet]";
    let with: Vec<&Candidate> = candidates.filter(|c| c.server_snippet.is_some()).collect();
    let chosen = with
        .iter()
        .filter(|c| Some(c.object.namespace.as_str()) == owner)
        .min_by_key(|c| c.age);
    let mut warned = std::collections::BTreeSet::new();
    for c in &with {
        if chosen.is_some_and(|k| k.object == c.object) || !warned.insert(&c.object) {
            continue;
        }
        let host = c.route.host.as_deref().unwrap_or("*");
        let reason = match chosen {
            Some(k) if Some(c.object.namespace.as_str()) == owner => format!(
                "the host {host} already has the server-snippet of {}/{} (the older Ingress wins: nginx keeps one per server); ignored",
                k.object.namespace, k.object.name
            ),
            _ => format!(
                "the host {host} belongs to the namespace {} (that of its oldest rule): a server-snippet from another namespace would change its paths, and is ignored (ingress-nginx would apply it to the whole host)",
                owner.unwrap_or("?")
            ),
        };
        diagnostics.push(Diagnostic::warning(&c.object, field.to_string(), reason));
    }
    chosen.and_then(|c| c.server_snippet.clone())
}

/// Canary Ingresses join the primary rule of the same path and (effective) type, the oldest
/// canary first; one per rule, as in ingress-nginx; the canary's endpoints are spoken to as
/// the primary's (`backend-protocol` and `proxy-ssl-*` are the primary's). A canary without a primary serves
/// nothing (a warning): its requests get what the host's other rules give, or 404.
fn attach_canaries(
    kept: &mut [Candidate],
    mut canaries: Vec<Candidate>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    canaries.sort_by_key(|c| c.age);
    for c in canaries {
        let Some(spec) = c.canary.clone() else {
            continue;
        };
        let host = c.route.host.as_deref().unwrap_or("*");
        let primary = kept
            .iter_mut()
            .find(|k| k.path() == c.path() && k.path_type() == c.path_type());
        let reason = match primary {
            Some(p) if p.route.canary.is_none() => {
                // The primary's protocol and TLS settings: in ingress-nginx the canary is
                // another upstream of the primary's location, which sets them.
                let mut backend = c.route.backend.clone();
                backend.tls = p.route.backend.tls.clone();
                backend.http2 = p.route.backend.http2;
                // `affinity-canary-behavior: sticky` (the default): the canary takes its
                // primary's session affinity, whatever its own (ingress-nginx copies the
                // primary's settings over the canary's), so a session sent to the canary stays.
                let spec = if spec.legacy {
                    spec
                } else {
                    let primary = p.route.policy.as_ref().and_then(|p| p.affinity.clone());
                    Arc::new(CanarySpec {
                        affinity: primary,
                        ..(*spec).clone()
                    })
                };
                p.route.canary = Some(Arc::new(Canary {
                    spec,
                    ingress: c.route.ingress.clone(),
                    backend,
                    labels: c.route.labels.clone(),
                }));
                continue;
            }
            Some(p) => format!(
                "host {host} path {} has a canary already (Ingress {}/{}); one canary per rule, as in ingress-nginx: ignored",
                c.path(),
                p.route
                    .canary
                    .as_ref()
                    .map_or("", |k| &*k.ingress.namespace),
                p.route.canary.as_ref().map_or("", |k| &*k.ingress.name),
            ),
            None => format!(
                "canary for host {host} path {} ({}), which no primary Ingress serves: ignored (a canary alone is a 404, as in ingress-nginx)",
                c.path(),
                c.path_type().as_str(),
            ),
        };
        diagnostics.push(Diagnostic::warning(&c.object, c.field.clone(), reason));
    }
}

/// A host in regex mode, as ingress-nginx renders it: every path of the host, from every
/// Ingress, becomes `location ~* "^<path>"` (case-insensitive, anchored at the start only, so
/// Exact and Prefix alike match any continuation), tried longest path first (equal lengths in
/// reverse byte order, Exact before Prefix), the first match winning. A path the `regex` crate
/// cannot compile is left out with an error.
fn regex_host(kept: Vec<Candidate>, diagnostics: &mut Vec<Diagnostic>) -> HostRoutes {
    let mut order: Vec<&Candidate> = kept.iter().collect();
    order.sort_by(|a, b| {
        let by_length = b.path().len().cmp(&a.path().len());
        by_length
            .then_with(|| b.path().cmp(a.path()))
            .then_with(|| rank(b).cmp(&rank(a)))
    });
    let mut routes: Vec<Route> = Vec::with_capacity(order.len());
    for c in order {
        if routes
            .last()
            .is_some_and(|r| r.path.as_deref() == Some(c.path()))
        {
            let reason = format!(
                "path {} is shadowed: its host is in regex mode (use-regex or rewrite-target), where {} of the same path is tried first",
                c.path(),
                routes
                    .last()
                    .and_then(|r| r.path_type)
                    .map_or("Exact", PathType::as_str),
            );
            diagnostics.push(Diagnostic::warning(&c.object, c.field.clone(), reason));
            continue;
        }
        match PathRegex::compile(c.path()) {
            Ok(re) => {
                let mut route = c.route.clone();
                route.regex = Some(re);
                routes.push(route);
            }
            Err(why) => {
                // Never dropped (its requests would fall to another route of the host,
                // around its guards): its literal prefix, in its place, answers 503.
                let literal = literal_prefix(c.path());
                diagnostics.push(Diagnostic::error(
                    &c.object,
                    c.field.clone(),
                    format!(
                        "path {:?} {why}; requests under its literal prefix {literal:?} answer 503 rather than reach another route (its host is in regex mode: use-regex or rewrite-target on an Ingress of the host)",
                        c.path()
                    ),
                ));
                if let Ok(re) = PathRegex::compile(&regex::escape(literal)) {
                    let mut route = c.route.clone();
                    route.regex = Some(re);
                    let mut policy = route.policy.as_deref().cloned().unwrap_or_default();
                    policy.deny = Some(503);
                    route.policy = Some(Arc::new(policy));
                    routes.push(route);
                }
            }
        }
    }
    HostRoutes {
        router: matchit::Router::new(),
        prefixes: Fast::default(),
        prefix_lengths: Vec::new(),
        routes,
        slots: Vec::new(),
        fallback: None,
        regex: true,
        default_route: None,
    }
}

/// The start of a regex path before its first metacharacter: what every match begins with.
pub(crate) fn literal_prefix(path: &str) -> &str {
    let end = path
        .find(|c: char| "\\.+*?()|[]{}^$".contains(c))
        .unwrap_or(path.len());
    &path[..end]
}

/// Precedence inside one matchit key: the longest declared path, then Exact over Prefix.
fn rank(c: &Candidate) -> (usize, bool) {
    (c.path().len(), c.path_type() == PathType::Exact)
}

fn conflict(loser: &Candidate, winner: &Candidate) -> Diagnostic {
    let host = loser.route.host.as_deref().unwrap_or("*");
    let guards = |c: &Candidate| c.route.policy.as_deref().is_some_and(Policy::guards_access);
    let unguarded = if guards(loser) && !guards(winner) {
        ": its access guards (allowlist, auth, limits) do NOT apply, the path is served without them"
    } else {
        ""
    };
    Diagnostic::error(
        &loser.object,
        loser.field.clone(),
        format!(
            "host {host} path {} ({}) is already claimed by Ingress {}/{}, which takes precedence (older, or first by namespace/name); ignored{unguarded}",
            loser.path(),
            loser.path_type().as_str(),
            winner.route.ingress.namespace,
            winner.route.ingress.name,
        ),
    )
}

/// Inserts the winning keys into a router; routes that win no key are reported as shadowed.
fn finish_host(
    kept: Vec<Candidate>,
    slots: BTreeMap<String, usize>,
    root: Option<usize>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HostRoutes {
    let mut index = vec![None; kept.len()];
    let mut routes = Vec::new();
    if let Some(r) = root {
        routes.push(kept[r].route.clone());
        index[r] = Some(0);
    }
    let mut router = matchit::Router::new();
    let (mut prefixes, mut prefix_lengths) = (Fast::default(), Vec::new());
    let mut table = Vec::with_capacity(slots.len());
    for (key, winner) in slots {
        let idx = *index[winner].get_or_insert_with(|| {
            routes.push(kept[winner].route.clone());
            routes.len() - 1
        });
        let inserted = match key.strip_suffix(CATCH_ALL) {
            Some(t) => {
                let t = t.replace("{{", "{").replace("}}", "}");
                prefix_lengths.push(t.len());
                prefixes.insert(t.into_boxed_str(), idx);
                Ok(())
            }
            None => router.insert(key.clone(), idx),
        };
        match inserted {
            Ok(()) => table.push((key, idx)),
            Err(e) => diagnostics.push(Diagnostic::error(
                &kept[winner].object,
                kept[winner].field.clone(),
                format!("path cannot be routed ({e}); ignored"),
            )),
        }
    }
    for (c, i) in kept.iter().zip(&index) {
        if i.is_none() {
            diagnostics.push(Diagnostic::warning(
                &c.object,
                c.field.clone(),
                format!(
                    "path {} is shadowed by a longer path on the same host",
                    c.path()
                ),
            ));
        }
    }
    prefix_lengths.sort_unstable_by(|a, b| b.cmp(a));
    prefix_lengths.dedup();
    HostRoutes {
        router,
        prefixes,
        prefix_lengths,
        fallback: root.and_then(|r| index[r]),
        routes,
        slots: table,
        regex: false,
        default_route: None,
    }
}

/// The suffix that makes a key a `Prefix` catch-all.
const CATCH_ALL: &str = "/{*rest}";

/// The keys that carry a path's semantics.
///
/// Exact `p` is the key `p`. Prefix `p` (trailing '/' trimmed to `t`) is `t`, `t/` and
/// `t/{*rest}`: the catch-all never matches an empty rest, so `/aaa/bbb` covers `/aaa/bbb`,
/// `/aaa/bbb/` and `/aaa/bbb/...` but not `/aaa/bbbxyz`. Static keys are matched whole first,
/// then the longest catch-all, which gives "longest matching prefix wins". (The keys are in
/// matchit's syntax, braces escaped, though only static ones go into a matchit router.)
/// `Prefix /` is only the key `/`: the rest of it is the host's fallback (see [`HostRoutes`]).
pub fn keys_for(path: &str, path_type: PathType) -> Vec<String> {
    let escaped = path.replace('{', "{{").replace('}', "}}");
    match path_type.effective() {
        PathType::Exact => vec![escaped],
        _ => {
            let t = escaped.strip_suffix('/').unwrap_or(&escaped);
            if t.is_empty() {
                vec!["/".to_string()]
            } else {
                vec![t.to_string(), format!("{t}/"), format!("{t}/{{*rest}}")]
            }
        }
    }
}
