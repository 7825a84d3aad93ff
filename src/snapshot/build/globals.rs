//! ingress-nginx's controller ConfigMap (`--configmap NAMESPACE/NAME`): the global settings
//! every route starts from, with ingress-nginx's keys and defaults; an Ingress's annotations
//! override them. Read in the build like any other object, so a change to the ConfigMap is a
//! new snapshot (no restart). Without `--configmap`, or while the ConfigMap does not exist,
//! ingress-nginx's defaults apply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::annotations::snippets;
use super::annotations::values;
use crate::snapshot::access::{FieldBlock, IpSet, parse_net, parse_ranges};
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::external_auth::{self, AuthSpec, AuthValues};
use crate::snapshot::routes::{HeaderOps, NextUpstream, RouteTimeouts};
use crate::snapshot::server::{ClientAddress, ServerSettings};
use crate::source::{Kind, ObjectKey};
use crate::store::ObjectStore;

/// ingress-nginx's default `proxy-body-size`: 1 MiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 20;

/// ingress-nginx's default `no-tls-redirect-locations` and `no-auth-locations`: where ACME
/// HTTP-01 solvers answer.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge";

/// The global settings of a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Globals {
    /// `proxy-body-size` (default `1m`; `0`: no limit).
    pub body_limit: Option<u64>,
    /// `load-balance: ewma`: every route's scheduler unless its Ingress says otherwise
    /// (`None`: round_robin, the default, leaves each Service's own).
    pub balance: Option<crate::snapshot::services::Scheduler>,
    /// `ssl-redirect` (default true): hosts with TLS redirect plain HTTP.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect` (default false): every host redirects plain HTTP.
    pub force_ssl_redirect: bool,
    /// `http-redirect-code` (default 308; 301, 302, 307 or 308): the HTTPS redirect's status.
    pub http_redirect_code: u16,
    /// `preserve-trailing-slash` (default false).
    pub preserve_trailing_slash: bool,
    /// `retry-non-idempotent` (default false): every route's next-upstream conditions take
    /// `non_idempotent`.
    pub retry_non_idempotent: bool,
    /// `no-tls-redirect-locations` (default `/.well-known/acme-challenge`): a route whose
    /// path starts with one of them is never redirected to HTTPS (ACME HTTP-01 solvers).
    pub no_tls_redirect_locations: Vec<Box<str>>,
    /// `no-auth-locations` (default `/.well-known/acme-challenge`): a route whose path starts
    /// with one of them asks no basic or external authentication.
    pub no_auth_locations: Vec<Box<str>>,
    /// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout` (default: the
    /// command line's).
    pub timeouts: RouteTimeouts,
    /// `allow-snippet-annotations` (default false).
    pub allow_snippet_annotations: bool,
    /// `annotations-risk-level` (default `High`).
    pub annotations_risk_level: RiskLevel,
    /// `custom-http-errors`: responses with these statuses come from the default backend.
    pub custom_http_errors: Option<Box<[u16]>>,
    /// `proxy-next-upstream`, `-tries`, `-timeout` (default `error timeout`, 3, 0).
    pub next_upstream: NextUpstream,
    /// Connection-level keys (keep-alive, client timeouts, upstream keep-alive,
    /// server-tokens): they go into the snapshot as they are.
    pub server: ServerSettings,
    /// `add-headers` and `proxy-set-headers`: the fields of the ConfigMaps they name, set on
    /// every response and every upstream request (before a route's own snippets).
    pub headers: Option<Arc<HeaderOps>>,
    /// Keys that guard access and that Portico does not implement yet (`global-auth-url`…),
    /// or whose value is invalid (`block-cidrs`…): while any is set, every route answers 503
    /// rather than serve unguarded.
    pub guards: Vec<Box<str>>,
    /// `whitelist-source-range`: the addresses a route without its own allowlist admits
    /// (`Err`: the list is invalid; such routes answer 503, as ingress-nginx denies them).
    pub allow: Option<Result<IpSet, ()>>,
    /// `denylist-source-range`: the addresses a route without its own denylist refuses.
    pub deny: Option<Result<IpSet, ()>>,
    /// `block-cidrs`: addresses every route refuses.
    pub block: IpSet,
    /// `block-user-agents`, `block-referers`: request fields every route refuses.
    pub fields: Vec<Arc<FieldBlock>>,
    /// Whose address a request comes from (`use-forwarded-headers`, `proxy-real-ip-cidr`…).
    pub client: ClientAddress,
    /// `limit-req-status-code` (default 503): the status of a request over its rate.
    pub limit_req_status: u16,
    /// `limit-conn-status-code` (default 503): the status of a request over
    /// `limit-connections`.
    pub limit_conn_status: u16,
    /// `limit-rate` and `limit-rate-after` (KiB, as the annotations; default 0: none), in
    /// bytes: the response bandwidth of every route whose Ingress does not set its own.
    pub limit_rate: (u64, u64),
    /// `hsts`, `hsts-max-age`, `hsts-include-subdomains`, `hsts-preload`: the
    /// Strict-Transport-Security value of HTTPS responses for hosts with a certificate
    /// (default `max-age=31536000; includeSubDomains`; `None` with `hsts: "false"`).
    pub hsts: Option<http::HeaderValue>,
    /// `global-auth-url` and the other `global-auth-*` keys: the external authentication of
    /// every route without an `auth-url` of its own, unless its Ingress says
    /// `enable-global-auth: "false"`. (An invalid one is a guard: every route answers 503.)
    pub global_auth: Option<Arc<AuthSpec>>,
}

/// ingress-nginx's HSTS settings, before they become one field value.
struct Hsts {
    on: bool,
    max_age: u64,
    include_subdomains: bool,
    preload: bool,
}

impl Hsts {
    const DEFAULT: Hsts = Hsts {
        on: true,
        max_age: 31_536_000,
        include_subdomains: true,
        preload: false,
    };

    /// The field value, as ingress-nginx writes it.
    fn value(&self) -> Option<http::HeaderValue> {
        if !self.on {
            return None;
        }
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        http::HeaderValue::from_str(&v).ok()
    }
}

/// ingress-nginx's annotation risk levels, lowest first: annotations riskier than the
/// configured level are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskLevel {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High (the default).
    High,
    /// Critical (snippets need it).
    Critical,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            body_limit: Some(DEFAULT_BODY_LIMIT),
            balance: None,
            ssl_redirect: true,
            force_ssl_redirect: false,
            http_redirect_code: 308,
            preserve_trailing_slash: false,
            retry_non_idempotent: false,
            no_tls_redirect_locations: vec![ACME_CHALLENGE.into()],
            no_auth_locations: vec![ACME_CHALLENGE.into()],
            timeouts: RouteTimeouts::default(),
            allow_snippet_annotations: false,
            annotations_risk_level: RiskLevel::High,
            custom_http_errors: None,
            next_upstream: NextUpstream::DEFAULT,
            server: ServerSettings::default(),
            headers: None,
            guards: Vec::new(),
            allow: None,
            deny: None,
            block: IpSet::default(),
            fields: Vec::new(),
            client: ClientAddress::default(),
            hsts: Hsts::DEFAULT.value(),
            limit_req_status: 503,
            limit_conn_status: 503,
            limit_rate: (0, 0),
            global_auth: None,
        }
    }
}

/// How Portico treats a ConfigMap key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySupport {
    /// Read, with ingress-nginx's semantics.
    Honoured,
    /// Known from ingress-nginx and not supported yet: a warning.
    NotYet,
}

/// The ConfigMap keys Portico reads, sorted.
pub const KEYS: &[(&str, KeySupport)] = &[
    ("add-headers", KeySupport::Honoured),
    ("allow-snippet-annotations", KeySupport::Honoured),
    ("annotations-risk-level", KeySupport::Honoured),
    ("block-cidrs", KeySupport::Honoured),
    ("block-referers", KeySupport::Honoured),
    ("block-user-agents", KeySupport::Honoured),
    ("client-body-buffer-size", KeySupport::NotYet),
    ("client-body-timeout", KeySupport::Honoured),
    ("client-header-buffer-size", KeySupport::NotYet),
    ("client-header-timeout", KeySupport::Honoured),
    ("compute-full-forwarded-for", KeySupport::Honoured),
    ("custom-http-errors", KeySupport::Honoured),
    ("denylist-source-range", KeySupport::Honoured),
    ("enable-access-log-for-default-backend", KeySupport::NotYet),
    ("enable-brotli", KeySupport::NotYet),
    ("enable-modsecurity", KeySupport::NotYet),
    ("enable-ocsp", KeySupport::NotYet),
    ("enable-opentelemetry", KeySupport::NotYet),
    ("enable-real-ip", KeySupport::Honoured),
    ("force-ssl-redirect", KeySupport::Honoured),
    ("forwarded-for-header", KeySupport::Honoured),
    ("global-auth-always-set-cookie", KeySupport::Honoured),
    ("global-auth-cache-duration", KeySupport::Honoured),
    ("global-auth-cache-key", KeySupport::Honoured),
    ("global-auth-method", KeySupport::Honoured),
    ("global-auth-request-redirect", KeySupport::Honoured),
    ("global-auth-response-headers", KeySupport::Honoured),
    ("global-auth-signin", KeySupport::Honoured),
    ("global-auth-signin-redirect-param", KeySupport::Honoured),
    ("global-auth-snippet", KeySupport::Honoured),
    ("global-auth-url", KeySupport::Honoured),
    ("hide-headers", KeySupport::NotYet),
    ("hsts", KeySupport::Honoured),
    ("hsts-include-subdomains", KeySupport::Honoured),
    ("hsts-max-age", KeySupport::Honoured),
    ("hsts-preload", KeySupport::Honoured),
    ("http-redirect-code", KeySupport::Honoured),
    ("http2-max-field-size", KeySupport::NotYet),
    ("keep-alive", KeySupport::Honoured),
    ("keep-alive-requests", KeySupport::Honoured),
    ("large-client-header-buffers", KeySupport::NotYet),
    ("limit-conn-status-code", KeySupport::Honoured),
    ("limit-rate", KeySupport::Honoured),
    ("limit-rate-after", KeySupport::Honoured),
    ("limit-req-status-code", KeySupport::Honoured),
    ("load-balance", KeySupport::Honoured),
    ("log-format-upstream", KeySupport::NotYet),
    ("max-worker-connections", KeySupport::NotYet),
    ("no-auth-locations", KeySupport::Honoured),
    ("no-tls-redirect-locations", KeySupport::Honoured),
    ("preserve-trailing-slash", KeySupport::Honoured),
    ("proxy-body-size", KeySupport::Honoured),
    ("proxy-buffer-size", KeySupport::NotYet),
    ("proxy-buffering", KeySupport::NotYet),
    ("proxy-connect-timeout", KeySupport::Honoured),
    ("proxy-next-upstream", KeySupport::Honoured),
    ("proxy-next-upstream-timeout", KeySupport::Honoured),
    ("proxy-next-upstream-tries", KeySupport::Honoured),
    ("proxy-protocol-header-timeout", KeySupport::Honoured),
    ("proxy-read-timeout", KeySupport::Honoured),
    ("proxy-real-ip-cidr", KeySupport::Honoured),
    ("proxy-request-buffering", KeySupport::NotYet),
    ("proxy-send-timeout", KeySupport::Honoured),
    ("proxy-set-headers", KeySupport::Honoured),
    ("retry-non-idempotent", KeySupport::Honoured),
    ("server-tokens", KeySupport::Honoured),
    ("ssl-ciphers", KeySupport::NotYet),
    ("ssl-protocols", KeySupport::NotYet),
    ("ssl-redirect", KeySupport::Honoured),
    ("ssl-session-tickets", KeySupport::NotYet),
    ("upstream-keepalive-connections", KeySupport::Honoured),
    ("upstream-keepalive-requests", KeySupport::Honoured),
    ("upstream-keepalive-time", KeySupport::Honoured),
    ("upstream-keepalive-timeout", KeySupport::Honoured),
    ("use-forwarded-headers", KeySupport::Honoured),
    ("use-gzip", KeySupport::NotYet),
    ("use-proxy-protocol", KeySupport::Honoured),
    ("whitelist-source-range", KeySupport::Honoured),
    ("worker-processes", KeySupport::NotYet),
    ("worker-shutdown-timeout", KeySupport::NotYet),
];

/// The global settings: from the ConfigMap `config.configmap` names when there is one,
/// ingress-nginx's defaults otherwise. A key with an invalid value keeps its default, with a
/// warning naming the key, the value and the reason (ingress-nginx logs and does the same).
pub fn read(
    store: &ObjectStore,
    configmap: Option<&(String, String)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Globals {
    let Some((ns, name)) = configmap else {
        return Globals::default();
    };
    let key = ObjectKey::new(Kind::ConfigMap, ns.as_str(), name.as_str());
    let Some(map) = store.config_maps.get(&(ns.clone(), name.clone())) else {
        let reason = "the ConfigMap named by --configmap does not exist; ingress-nginx's defaults apply (proxy-body-size 1m among them)";
        diagnostics.push(Diagnostic::warning(&key, "metadata.name", reason));
        return Globals::default();
    };
    let empty = BTreeMap::new();
    let lookup = |ns: &str, name: &str| {
        let map = store.config_maps.get(&(ns.to_string(), name.to_string()))?;
        Some(map.data.clone().unwrap_or_default())
    };
    parse(
        &key,
        map.data.as_ref().unwrap_or(&empty),
        &lookup,
        diagnostics,
    )
}

/// Finds the `data` of a ConfigMap by namespace and name.
pub type Lookup<'a> = dyn Fn(&str, &str) -> Option<BTreeMap<String, String>> + 'a;

/// Reads the keys of a ConfigMap's `data`; `lookup` finds the ConfigMaps that `add-headers`
/// and `proxy-set-headers` name.
pub fn parse(
    key: &ObjectKey,
    data: &BTreeMap<String, String>,
    lookup: &Lookup<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Globals {
    let mut g = Globals::default();
    let mut hsts = Hsts::DEFAULT;
    let mut header_refs: [Option<&str>; 2] = [None, None];
    // Errors (invalid access lists and other guards).
    let mut errors: Vec<(&str, String)> = Vec::new();
    let mut auth = AuthValues::default();
    let mut auth_snippet = false;
    let mut warn = |name: &str, reason: String| {
        diagnostics.push(Diagnostic::warning(key, format!("data.{name}"), reason));
    };
    for (name, raw) in data {
        let value = raw.trim();
        let support = KEYS
            .binary_search_by(|(k, _)| (*k).cmp(name.as_str()))
            .ok()
            .map(|i| KEYS[i].1);
        match support {
            None => {
                let reason = "not a ConfigMap key Portico reads; ignored".to_string();
                warn(name, reason);
                continue;
            }
            Some(KeySupport::NotYet) => {
                warn(name, "not supported by Portico yet; ignored".to_string());
                continue;
            }
            Some(KeySupport::Honoured) => {}
        }
        let bad = |why: &str| format!("{value:?} {why}; using the default");
        match name.as_str() {
            "proxy-body-size" => match values::parse_size(value) {
                Ok(0) => g.body_limit = None,
                Ok(n) => g.body_limit = Some(n),
                Err(why) => warn(name, bad(why)),
            },
            // As ingress-nginx's `buildNextUpstream`: non_idempotent on every location,
            // whatever its own proxy-next-upstream says.
            "retry-non-idempotent" => match values::parse_bool(value) {
                Some(b) => g.retry_non_idempotent = b,
                None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
            },
            "ssl-redirect"
            | "force-ssl-redirect"
            | "preserve-trailing-slash"
            | "allow-snippet-annotations" => match values::parse_bool(value) {
                Some(b) => match name.as_str() {
                    "ssl-redirect" => g.ssl_redirect = b,
                    "force-ssl-redirect" => g.force_ssl_redirect = b,
                    "preserve-trailing-slash" => g.preserve_trailing_slash = b,
                    _ => g.allow_snippet_annotations = b,
                },
                None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
            },
            "http-redirect-code" => match value.parse::<u16>() {
                Ok(code @ (301 | 302 | 307 | 308)) => g.http_redirect_code = code,
                _ => warn(name, bad("is not 301, 302, 307 or 308")),
            },
            "proxy-connect-timeout" | "proxy-send-timeout" | "proxy-read-timeout" => {
                match values::parse_seconds(value) {
                    Some(s) => {
                        let d = Some(Duration::from_secs(s));
                        match name.as_str() {
                            "proxy-connect-timeout" => g.timeouts.connect = d,
                            "proxy-send-timeout" => g.timeouts.send = d,
                            _ => g.timeouts.read = d,
                        }
                    }
                    None => warn(
                        name,
                        bad("is not a timeout in whole seconds (as \"60\", no unit)"),
                    ),
                }
            }
            // As ingress-nginx's ConfigMap reader: an entry that is not a code is left out
            // (a warning), the others stand.
            "custom-http-errors" => {
                let mut codes: Vec<u16> = Vec::new();
                let mut bad_entry = false;
                for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    match values::parse_codes(item) {
                        Ok(one) => codes.extend_from_slice(&one),
                        Err(why) => {
                            bad_entry = true;
                            warn(name, format!("{value:?} {why}; that entry is left out"));
                        }
                    }
                }
                codes.sort_unstable();
                codes.dedup();
                if !codes.is_empty() {
                    g.custom_http_errors = Some(codes.into());
                } else if !bad_entry {
                    warn(name, format!("{value:?} lists no status code; ignored"));
                }
            }
            "proxy-next-upstream" | "proxy-next-upstream-tries" | "proxy-next-upstream-timeout" => {
                let next = &mut g.next_upstream;
                let read = match name.as_str() {
                    "proxy-next-upstream" => next.set_conditions(value),
                    "proxy-next-upstream-tries" => next.set_tries(value),
                    _ => next.set_within(value),
                };
                if let Err(why) = read {
                    warn(name, bad(&why));
                }
            }
            "client-header-timeout" | "client-body-timeout" | "upstream-keepalive-timeout" => {
                match values::parse_seconds(value) {
                    Some(n) => {
                        let d = Some(Duration::from_secs(n));
                        match name.as_str() {
                            "client-header-timeout" => g.server.client_header_timeout = d,
                            "client-body-timeout" => g.server.client_body_timeout = d,
                            _ => g.server.upstream.timeout = d,
                        }
                    }
                    None => warn(
                        name,
                        bad("is not a timeout in whole seconds (as \"60\", no unit)"),
                    ),
                }
            }
            "keep-alive" => match count(value) {
                Some(n) if n <= 365 * 24 * 3600 => {
                    g.server.keep_alive = Duration::from_secs(u64::from(n));
                }
                _ => warn(
                    name,
                    bad("is not whole seconds (as \"75\"; 0 turns keep-alive off)"),
                ),
            },
            "keep-alive-requests"
            | "upstream-keepalive-connections"
            | "upstream-keepalive-requests" => match count(value) {
                Some(n) => match name.as_str() {
                    "keep-alive-requests" => g.server.keep_alive_requests = n,
                    "upstream-keepalive-connections" => g.server.upstream.connections = n,
                    _ => g.server.upstream.requests = n,
                },
                None => warn(name, bad("is not a whole number")),
            },
            "upstream-keepalive-time" => match values::parse_time(value) {
                Some(d) if !d.is_zero() => g.server.upstream.time = d,
                _ => warn(
                    name,
                    bad("is not a time in nginx's syntax (as \"1h\", \"30m\", \"90s\")"),
                ),
            },
            "hsts" | "hsts-include-subdomains" | "hsts-preload" => {
                match values::parse_bool(value) {
                    Some(b) => match name.as_str() {
                        "hsts" => hsts.on = b,
                        "hsts-include-subdomains" => hsts.include_subdomains = b,
                        _ => hsts.preload = b,
                    },
                    None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
                }
            }
            "hsts-max-age" => match value.parse::<u64>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => hsts.max_age = n,
                _ => warn(name, bad("is not whole seconds (as \"31536000\")")),
            },
            // As ingress-nginx, the same unit as the annotations: KiB per second, KiB.
            "limit-rate" | "limit-rate-after" => match value.parse::<u64>() {
                Ok(n) if n <= u64::MAX / 1024 => {
                    if name == "limit-rate" {
                        g.limit_rate.0 = n * 1024;
                    } else {
                        g.limit_rate.1 = n * 1024;
                    }
                }
                _ => warn(name, bad("is not a whole number of KiB; none")),
            },
            "limit-req-status-code" | "limit-conn-status-code" => match value.parse::<u16>() {
                Ok(code @ 400..=599) => {
                    if name == "limit-req-status-code" {
                        g.limit_req_status = code;
                    } else {
                        g.limit_conn_status = code;
                    }
                }
                _ => warn(name, bad("is not a status from 400 to 599")),
            },
            "use-proxy-protocol" => match values::parse_bool(value) {
                Some(b) => g.server.proxy_protocol = b,
                None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
            },
            "proxy-protocol-header-timeout" => match values::parse_time(value) {
                Some(d) if !d.is_zero() => g.server.proxy_protocol_timeout = d,
                _ => warn(name, bad("is not a time in nginx's syntax (as \"5s\")")),
            },
            "server-tokens" => match values::parse_bool(value) {
                Some(b) => g.server.server_tokens = b,
                None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
            },
            "load-balance" => match value {
                // The Services' own schedulers (round robin unless they say otherwise).
                "round_robin" => g.balance = None,
                "ewma" => g.balance = Some(crate::snapshot::services::Scheduler::Ewma),
                _ => warn(name, bad("is not round_robin or ewma")),
            },
            "use-forwarded-headers" | "enable-real-ip" | "compute-full-forwarded-for" => {
                match values::parse_bool(value) {
                    Some(b) => match name.as_str() {
                        "use-forwarded-headers" => g.client.forwarded_headers = b,
                        "enable-real-ip" => g.client.real_ip = b,
                        _ => g.client.full_forwarded_for = b,
                    },
                    None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
                }
            }
            "forwarded-for-header" => match http::HeaderName::from_bytes(value.as_bytes()) {
                Ok(field) => g.client.header = field.as_str().into(),
                Err(_) => warn(name, bad("is not a header field name")),
            },
            "proxy-real-ip-cidr" => {
                let mut nets = Vec::new();
                for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    match parse_net(entry) {
                        Some(net) => nets.push(net),
                        None => warn(
                            name,
                            format!("{entry:?} is not an address or a CIDR range; left out"),
                        ),
                    }
                }
                g.client.trusted = IpSet::new(nets);
            }
            "whitelist-source-range" | "denylist-source-range" if !value.is_empty() => {
                let list = match parse_ranges(value) {
                    Ok(set) => Ok(set),
                    Err(why) => {
                        let which = &name[..name.len() - "-source-range".len()];
                        errors.push((name, format!(
                            "{why}: every path without its own {which}-source-range annotation answers 503 (ingress-nginx denies a location whose list is invalid)"
                        )));
                        Err(())
                    }
                };
                if name == "whitelist-source-range" {
                    g.allow = Some(list);
                } else {
                    g.deny = Some(list);
                }
            }
            "block-cidrs" if !value.is_empty() => match parse_ranges(value) {
                Ok(set) => g.block = set,
                Err(why) => {
                    g.guards.push(name.as_str().into());
                    errors.push((
                        name,
                        format!("{why}: every route answers 503 rather than serve unguarded"),
                    ));
                }
            },
            "block-user-agents" | "block-referers" => {
                let field = if name == "block-referers" {
                    http::header::REFERER
                } else {
                    http::header::USER_AGENT
                };
                match FieldBlock::parse(field, value) {
                    Ok(block) if block.is_empty() => {}
                    Ok(block) => g.fields.push(Arc::new(block)),
                    Err(why) => {
                        g.guards.push(name.as_str().into());
                        errors.push((
                            name,
                            format!("{why}: every route answers 503 rather than serve unguarded"),
                        ));
                    }
                }
            }
            "no-tls-redirect-locations" | "no-auth-locations" => {
                let list = value
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(Box::from)
                    .collect();
                if name == "no-auth-locations" {
                    g.no_auth_locations = list;
                } else {
                    g.no_tls_redirect_locations = list;
                }
            }
            "global-auth-url" => auth.url = value.to_string(),
            // Lines pasted into the global auth location: Portico cannot honour them, and the
            // global auth they change guards every route (below).
            "global-auth-snippet" => auth_snippet = !value.is_empty(),
            "global-auth-method" => auth.method = Some(value.to_string()),
            "global-auth-signin" => auth.signin = Some(value.to_string()),
            "global-auth-signin-redirect-param" => auth.signin_param = Some(value.to_string()),
            "global-auth-response-headers" => auth.response_headers = Some(value.to_string()),
            "global-auth-request-redirect" => auth.request_redirect = Some(value.to_string()),
            "global-auth-cache-key" => auth.cache_key = Some(value.to_string()),
            "global-auth-cache-duration" => auth.cache_duration = Some(value.to_string()),
            "global-auth-always-set-cookie" => match values::parse_bool(value) {
                Some(b) => auth.always_set_cookie = b,
                None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
            },
            "add-headers" => header_refs[0] = Some(value),
            "proxy-set-headers" => header_refs[1] = Some(value),
            // As ingress-nginx's `StringRiskToRisk`: any case; anything else is Low.
            "annotations-risk-level" => match value.to_ascii_lowercase().as_str() {
                "low" => g.annotations_risk_level = RiskLevel::Low,
                "medium" => g.annotations_risk_level = RiskLevel::Medium,
                "high" => g.annotations_risk_level = RiskLevel::High,
                "critical" => g.annotations_risk_level = RiskLevel::Critical,
                _ => {
                    g.annotations_risk_level = RiskLevel::Low;
                    let reason = format!(
                        "{value:?} is not Low, Medium, High or Critical; Low, as ingress-nginx reads it"
                    );
                    warn(name, reason);
                }
            },
            _ => {}
        }
    }
    g.hsts = hsts.value();
    if auth_snippet && !auth.url.is_empty() {
        g.guards.push("global-auth-snippet".into());
        let reason = "configuration lines for the global authentication's request, which Portico cannot honour: every route that global authentication guards answers 503 rather than be asked differently".to_string();
        diagnostics.push(Diagnostic::error(key, "data.global-auth-snippet", reason));
    } else if auth_snippet {
        let reason = "without global-auth-url it changes nothing; ignored";
        diagnostics.push(Diagnostic::warning(key, "data.global-auth-snippet", reason));
    }
    if !auth.url.is_empty() {
        let mut warnings = Vec::new();
        let parse_key = crate::snapshot::build::annotations::parse_hash_key;
        match external_auth::parse(&auth, parse_key, &mut warnings) {
            Ok(spec) => g.global_auth = Some(Arc::new(spec)),
            Err(e) => {
                g.guards.push("global-auth-url".into());
                let reason = format!(
                    "{}: every route answers 503 rather than serve unguarded",
                    e.reason
                );
                diagnostics.push(Diagnostic::error(
                    key,
                    format!("data.global-auth-{}", e.key),
                    reason,
                ));
            }
        }
        for (k, reason) in warnings {
            diagnostics.push(Diagnostic::warning(
                key,
                format!("data.global-auth-{k}"),
                reason,
            ));
        }
    }
    // use-forwarded-headers turns the realip module on, as ingress-nginx's template does;
    // compute-full-forwarded-for counts only with it (`if and UseForwardedHeaders
    // ComputeFullForwardedFor`).
    g.client.real_ip |= g.client.forwarded_headers;
    g.client.full_forwarded_for &= g.client.forwarded_headers;
    if g.client.real_ip && g.client.trusted.is_empty() {
        let reason = "use-forwarded-headers or enable-real-ip without proxy-real-ip-cidr trusts no peer: the client address stays the peer's (ingress-nginx's default 0.0.0.0/0 would trust every peer; name the load balancers' addresses)";
        diagnostics.push(Diagnostic::warning(key, "data.proxy-real-ip-cidr", reason));
    }
    for (name, reason) in errors {
        diagnostics.push(Diagnostic::error(key, format!("data.{name}"), reason));
    }
    let mut ops = HeaderOps::default();
    for (i, reference) in header_refs.into_iter().enumerate() {
        let Some(reference) = reference else { continue };
        let name = ["add-headers", "proxy-set-headers"][i];
        let response = i == 0;
        let mut warn = |reason: String| {
            diagnostics.push(Diagnostic::warning(key, format!("data.{name}"), reason));
        };
        let Some((ns, cm)) = reference.split_once('/') else {
            warn(format!(
                "{reference:?} is not namespace/name of a ConfigMap; no field is set"
            ));
            continue;
        };
        if ns != key.namespace {
            warn(format!(
                "{reference:?} is not in the namespace of the controller ConfigMap ({}), the only one Portico reads ConfigMaps from; no field is set",
                key.namespace
            ));
            continue;
        }
        let Some(fields) = lookup(ns, cm) else {
            warn(format!(
                "the ConfigMap {reference:?} does not exist; no field is set until it does"
            ));
            continue;
        };
        for (field, value) in &fields {
            let set = if response {
                snippets::global_response_field(field, value.trim(), &mut ops)
            } else {
                snippets::global_request_field(field, value.trim(), &mut ops)
            };
            if let Err(why) = set {
                warn(format!(
                    "in the ConfigMap {reference:?}, {field:?}: {why}; that field is not set"
                ));
            }
        }
    }
    if ops != HeaderOps::default() {
        // The http level's: a server's and a location's operations come after these.
        ops.inherited = ops.response.len();
        ops.finish();
        g.headers = Some(Arc::new(ops));
    }
    g
}

/// A whole number as Go's `strconv.Atoi` reads ingress-nginx's integer keys (digits, an
/// optional `+`), no larger than `u32`.
fn count(value: &str) -> Option<u32> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
