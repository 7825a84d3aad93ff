//! ingress-nginx's `nginx.ingress.kubernetes.io/*` annotations, read on the Ingresses Portico
//! serves: each one either honoured with ingress-nginx's semantics (into the route's
//! [`Policy`]), accepted with a documented difference, refused in a way that fails closed (an
//! annotation that guards access and that Portico does not implement yet: the Ingress's routes
//! answer 503), or reported as unsupported (a warning naming it). [`ANNOTATIONS`] is the one
//! table of them all: the parser, `portico check` and the README's migration table follow it.

use std::sync::Arc;

use super::globals::{Globals, RiskLevel};
use crate::snapshot::access::{Access, IpSet, parse_ranges};
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::external_auth::{self, AuthSpec, AuthValues};
use crate::snapshot::routes::{
    Affinity, AffinityMode, CanarySpec, FieldName, HashKey, HashPart, HeaderOps, NextUpstream,
    PathRegex, Policy, Redirect, Rewrite, RouteTimeouts, UrlTemplate,
};
use crate::source::ObjectKey;

pub mod snippets;
pub mod values;

#[cfg(test)]
mod tests;

pub use values::{parse_size, parse_template};

/// The prefix of ingress-nginx's annotations.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// How Portico treats one ingress-nginx annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Honoured with ingress-nginx's semantics, defaults and status codes.
    Honoured,
    /// Honoured, with the difference described.
    Differs(&'static str),
    /// Accepted without effect, for the reason given (what Portico does instead).
    Accepted(&'static str),
    /// Guards access and is not implemented yet: every route of the Ingress answers 503
    /// (never served unguarded), with an error.
    FailsClosed,
    /// Not supported yet: ignored, with a warning.
    Unsupported,
    /// Removed from ingress-nginx, or replaced: a warning saying by what.
    Obsolete(&'static str),
}

/// Every ingress-nginx annotation Portico knows, by name (without the prefix), sorted.
pub const ANNOTATIONS: &[(&str, Support)] = &[
    ("affinity", Support::Honoured),
    ("affinity-canary-behavior", Support::Honoured),
    (
        "affinity-mode",
        Support::Differs(
            "balanced and persistent; persistent-drainable is persistent (a terminating endpoint gets no request)",
        ),
    ),
    ("allowlist-source-range", Support::Honoured),
    ("app-root", Support::Honoured),
    ("auth-always-set-cookie", Support::Honoured),
    ("auth-cache-duration", Support::Honoured),
    (
        "auth-cache-key",
        Support::Differs(
            "$remote_addr, $http_NAME, $cookie_NAME, $arg_NAME and the URL variables ($remote_user and others are a warning, and answers are not cached); cached answers are kept in memory per Portico instance, at most 4096",
        ),
    ),
    (
        "auth-keepalive",
        Support::Accepted("connections to the auth service are always kept alive and pooled"),
    ),
    (
        "auth-keepalive-requests",
        Support::Accepted("the ConfigMap's upstream-keepalive-requests applies"),
    ),
    (
        "auth-keepalive-share-vars",
        Support::Accepted(
            "nothing of the auth request is shared with the request forwarded but the auth-response-headers",
        ),
    ),
    (
        "auth-keepalive-timeout",
        Support::Accepted("the ConfigMap's upstream-keepalive-timeout applies"),
    ),
    ("auth-method", Support::Honoured),
    ("auth-proxy-set-headers", Support::FailsClosed),
    ("auth-realm", Support::Honoured),
    ("auth-request-redirect", Support::Honoured),
    (
        "auth-response-headers",
        Support::Differs(
            "as ingress-nginx, except that framing, hop-by-hop fields and Host cannot be named (an error: the Ingress's paths answer 503)",
        ),
    ),
    ("auth-secret", Support::Honoured),
    ("auth-secret-type", Support::Honoured),
    ("auth-signin", Support::Honoured),
    ("auth-signin-redirect-param", Support::Honoured),
    ("auth-snippet", Support::FailsClosed),
    ("auth-tls-error-page", Support::Honoured),
    ("auth-tls-match-cn", Support::Honoured),
    ("auth-tls-pass-certificate-to-upstream", Support::Honoured),
    (
        "auth-tls-secret",
        Support::Differs(
            "the Ingress's own namespace only; a ca.crl is not read yet (a warning); the host's handshake asks for a certificate and a missing or failed one is a 400 as nginx's, and over plain HTTP a route that requires one answers 400 (nginx serves it unverified)",
        ),
    ),
    ("auth-tls-verify-client", Support::Honoured),
    ("auth-tls-verify-depth", Support::Honoured),
    (
        "auth-type",
        Support::Differs(
            "basic, with the hash schemes nginx accepts (traditional DES crypt aside); digest fails closed (503 and an error)",
        ),
    ),
    (
        "auth-url",
        Support::Differs(
            "http:// to a cluster Service (name.namespace.svc), to a host Portico serves (its route's backend, without that route's policies) or to any other host (never the node itself: loopback, link-local and the node's addresses are refused, as for ExternalName Services); https:// over TLS with the URL's host as SNI, unverified, as ingress-nginx's auth location. Set-Cookie fields of the auth response are all passed on",
        ),
    ),
    (
        "backend-protocol",
        Support::Differs(
            "HTTP, HTTPS and AUTO_HTTP (HTTP/1.1 over TLS to the endpoint, in the client's scheme for AUTO_HTTP), GRPC (HTTP/2 in clear text) and GRPCS (HTTP/2 over TLS, ALPN h2), case-insensitive; FCGI is refused for good (503 and an error); any other value is a warning and HTTP, as ingress-nginx. Without it, a Service port's appProtocol https or kubernetes.io/wss means HTTPS and kubernetes.io/h2c HTTP/2 in clear text (Portico's addition); a canary is spoken to as its primary",
        ),
    ),
    (
        "canary",
        Support::Differs(
            "as ingress-nginx: a canary Ingress's rule joins the primary's (same host, path and type), one canary per rule, a canary alone is a 404, only the canary annotations count on it; header (value, pattern, always/never), then cookie, then weight. The pattern is a linear-time regex: PCRE-only features are a warning and never match",
        ),
    ),
    ("canary-by-cookie", Support::Honoured),
    ("canary-by-header", Support::Honoured),
    ("canary-by-header-pattern", Support::Honoured),
    ("canary-by-header-value", Support::Honoured),
    ("canary-weight", Support::Honoured),
    ("canary-weight-total", Support::Honoured),
    (
        "client-body-buffer-size",
        Support::Differs(
            "how much of a body is read in memory before the upstream is connected, at most 1m; the rest is streamed, never written to disk",
        ),
    ),
    (
        "configuration-snippet",
        Support::Differs(
            "only more_set_headers, more_clear_headers, add_header and proxy_set_header (typed, values checked, a documented list of nginx variables); any other directive leaves the Ingress out with an error; needs allow-snippet-annotations and annotations-risk-level Critical in the ConfigMap, as ingress-nginx 1.12+",
        ),
    ),
    ("connection-proxy-header", Support::Unsupported),
    ("cors-allow-credentials", Support::Honoured),
    ("cors-allow-headers", Support::Honoured),
    ("cors-allow-methods", Support::Honoured),
    (
        "cors-allow-origin",
        Support::Differs(
            "the whole Origin must match (nginx anchors only its end), and an empty entry allows nothing (in nginx it allowed every Origin)",
        ),
    ),
    ("cors-expose-headers", Support::Honoured),
    ("cors-max-age", Support::Honoured),
    ("custom-headers", Support::Unsupported),
    (
        "custom-http-errors",
        Support::Differs(
            "the listed statuses (300–599), from the endpoint or Portico's own, are answered by the default-backend annotation's Service, else the Ingress default backend (spec.defaultBackend), asked for / (the request's method and fields, no body) with X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port and X-Request-ID; its status is the answer's. Without either, the response passes unchanged (ingress-nginx's built-in backend would answer 404)",
        ),
    ),
    (
        "default-backend",
        Support::Differs(
            "a Service of the Ingress's namespace (its first port) that serves when the route's Service has no ready endpoint, and answers the custom-http-errors",
        ),
    ),
    ("denylist-source-range", Support::Honoured),
    ("disable-proxy-intercept-errors", Support::Honoured),
    ("enable-access-log", Support::Honoured),
    ("enable-cors", Support::Honoured),
    ("enable-global-auth", Support::Honoured),
    ("enable-modsecurity", Support::Unsupported),
    ("enable-opentelemetry", Support::Unsupported),
    ("enable-opentracing", Support::Unsupported),
    ("enable-owasp-core-rules", Support::Unsupported),
    ("enable-rewrite-log", Support::Unsupported),
    ("fastcgi-index", Support::Unsupported),
    ("fastcgi-params-configmap", Support::Unsupported),
    (
        "force-ssl-redirect",
        Support::Differs(
            "the Location carries the HTTPS listener's port when it is not 443 (ingress-nginx names a port only with use-port-in-redirects)",
        ),
    ),
    (
        "from-to-www-redirect",
        Support::Differs(
            "the www twin of each exact host redirects to it with http-redirect-code (308), keeping the Host's port, unless a rule names the twin; the twin gets the default certificate unless one covers it",
        ),
    ),
    (
        "global-rate-limit",
        Support::Obsolete("removed in ingress-nginx 1.5"),
    ),
    (
        "http2-push-preload",
        Support::Obsolete("removed in ingress-nginx 1.9"),
    ),
    ("limit-allowlist", Support::Honoured),
    ("limit-burst-multiplier", Support::Honoured),
    ("limit-connections", Support::Honoured),
    ("limit-rate", Support::Honoured),
    ("limit-rate-after", Support::Honoured),
    ("limit-rpm", Support::Honoured),
    ("limit-rps", Support::Honoured),
    ("limit-whitelist", Support::Honoured),
    (
        "load-balance",
        Support::Differs(
            "round_robin and ewma (peak-EWMA of the time to the response head, the better of two random endpoints, as ingress-nginx's ewma.lua; nginx counts until the last byte) for the Ingress's routes, over the Service's portico.dev/load-balancer; honoured on a canary Ingress too (its own balancer), as ingress-nginx",
        ),
    ),
    ("mirror-host", Support::Unsupported),
    ("mirror-request-body", Support::Unsupported),
    ("mirror-target", Support::Unsupported),
    ("modsecurity-snippet", Support::Unsupported),
    ("modsecurity-transaction-id", Support::Unsupported),
    ("opentelemetry-operation-name", Support::Unsupported),
    ("opentelemetry-trust-incoming-span", Support::Unsupported),
    ("opentracing-trust-incoming-span", Support::Unsupported),
    (
        "permanent-redirect",
        Support::Differs(
            "301 to the URL with nginx variables and captures expanded; ingress-nginx >= 1.12 validates the URL (no $, an http(s) scheme) and refuses or ignores what Portico accepts",
        ),
    ),
    ("permanent-redirect-code", Support::Honoured),
    ("preserve-trailing-slash", Support::Honoured),
    (
        "proxy-body-size",
        Support::Differs(
            "413 past the limit (the ConfigMap's proxy-body-size, default 1m, as ingress-nginx; 0: none); a chunked body over the limit that already streams to the upstream is cut there (nginx buffers it first)",
        ),
    ),
    (
        "proxy-buffer-size",
        Support::Accepted(
            "Portico reads an upstream response head of up to 64 KiB whatever this says, and streams the body",
        ),
    ),
    (
        "proxy-buffering",
        Support::Accepted(
            "Portico streams responses as they come (nginx's default, off, behaves alike)",
        ),
    ),
    (
        "proxy-buffers-number",
        Support::Accepted("Portico streams responses; there are no response buffers to count"),
    ),
    ("proxy-busy-buffers-size", Support::Unsupported),
    ("proxy-connect-timeout", Support::Honoured),
    ("proxy-cookie-domain", Support::Unsupported),
    ("proxy-cookie-path", Support::Unsupported),
    ("proxy-http-version", Support::Unsupported),
    (
        "proxy-max-temp-file-size",
        Support::Accepted("Portico never writes bodies to disk"),
    ),
    (
        "proxy-next-upstream",
        Support::Differs(
            "error, timeout, invalid_header, http_403/404/429/500/502/503/504 and non_idempotent as nginx (default error timeout): a failed connect always goes on, a sent POST/PATCH/LOCK only with non_idempotent; each try on an endpoint not tried yet (nginx's balancer may pick the same one again); a body larger than client-body-buffer-size that has begun to stream is not sent again",
        ),
    ),
    ("proxy-next-upstream-timeout", Support::Honoured),
    ("proxy-next-upstream-tries", Support::Honoured),
    ("proxy-read-timeout", Support::Honoured),
    ("proxy-redirect-from", Support::Unsupported),
    ("proxy-redirect-to", Support::Unsupported),
    (
        "proxy-request-buffering",
        Support::Accepted(
            "Portico reads a body up to client-body-buffer-size before connecting and streams the rest; nothing goes to disk, so on and off behave alike. To gRPC/HTTP/2 endpoints a body is never waited for (as grpc_pass): what has come goes, the rest streams",
        ),
    ),
    ("proxy-send-timeout", Support::Honoured),
    (
        "proxy-ssl-ciphers",
        Support::Accepted(
            "rustls offers its own cipher suites (modern AEAD suites only) whatever this says; a value other than DEFAULT is a warning",
        ),
    ),
    (
        "proxy-ssl-name",
        Support::Differs(
            "the name verified and sent as SNI; without it Portico verifies <service>.<namespace>.svc (ingress-nginx's default is nginx's upstream name, upstream_balancer, which no certificate carries)",
        ),
    ),
    (
        "proxy-ssl-protocols",
        Support::Differs(
            "TLSv1.2 and TLSv1.3 only (rustls): SSLv2, SSLv3, TLSv1 and TLSv1.1 are left out with a warning, TLS 1.2 when nothing is left; the default with a ca.crt is ingress-nginx's (TLSv1 TLSv1.1 TLSv1.2, so TLS 1.2), without one nginx's (TLS 1.2 and 1.3)",
        ),
    ),
    ("proxy-ssl-secret", Support::Honoured),
    ("proxy-ssl-server-name", Support::Honoured),
    (
        "proxy-ssl-verify",
        Support::Differs(
            "\"on\" without a proxy-ssl-secret holding a ca.crt fails closed (503 and an error) where ingress-nginx silently does not verify; a certificate that does not verify is a 502 with a log line saying why",
        ),
    ),
    ("proxy-ssl-verify-depth", Support::Honoured),
    ("relative-redirects", Support::Unsupported),
    (
        "rewrite-target",
        Support::Differs(
            "as use-regex; the whole URI is replaced, captures $1–$9 and the query kept as nginx does, and the rewritten path is normalised again (a 400 if it climbs above /). Differences: a target equal to its path changes nothing (nginx splits /foo into /foo/ and an Exact /foo, and rewrites /foo/bar to /foo); a target ingress-nginx >= 1.12 refuses (outside [-._~a-zA-Z0-9/:$], e.g. ? or %) is honoured",
        ),
    ),
    ("satisfy", Support::Unsupported),
    (
        "secure-backends",
        Support::Differs(
            "\"true\" means backend-protocol: HTTPS (ingress-nginx's legacy name, removed there long ago; still honoured)",
        ),
    ),
    (
        "server-alias",
        Support::Differs(
            "another name of the host's whole server, as nginx's server_name (every Ingress's paths, client certificates, the certificate when it covers the alias); exact names only (a wildcard alias is a warning)",
        ),
    ),
    (
        "server-snippet",
        Support::Differs(
            "the same directives as configuration-snippet, at server level as nginx: the host's oldest Ingress with one sets it (the others' are ignored, a warning) for every path of the host, from every Ingress; its more_set_headers and more_clear_headers run before a location's own, its add_header only on a path whose configuration-snippet has none, its proxy_set_header never (every ingress-nginx location sets proxy_set_header; a warning). Differs: only an Ingress of the namespace that owns the host (that of its oldest rule) sets it, another namespace's is ignored (a warning); on the host's default backend too, not on Portico's own 404 for a path no rule takes",
        ),
    ),
    (
        "service-upstream",
        Support::Differs(
            "each request goes to one endpoint chosen by the Service's own scheduler and sessionAffinity (what Portico's L4 table does for its ClusterIP), with no other endpoint tried after a failed connect and no upstream-hash-by, as with nginx's single ClusterIP upstream",
        ),
    ),
    ("session-cookie-change-on-failure", Support::Honoured),
    (
        "session-cookie-conditional-samesite-none",
        Support::Differs(
            "SameSite=None is sent to every browser: the browsers that mishandled it (Chrome 51–66, Safari on iOS 12 and macOS 10.14) are long gone",
        ),
    ),
    ("session-cookie-domain", Support::Honoured),
    ("session-cookie-expires", Support::Honoured),
    (
        "session-cookie-hash",
        Support::Obsolete("removed in ingress-nginx 0.24"),
    ),
    ("session-cookie-max-age", Support::Honoured),
    ("session-cookie-name", Support::Honoured),
    ("session-cookie-partitioned", Support::Unsupported),
    ("session-cookie-path", Support::Honoured),
    ("session-cookie-samesite", Support::Honoured),
    ("session-cookie-secure", Support::Honoured),
    ("ssl-ciphers", Support::Unsupported),
    ("ssl-passthrough", Support::Unsupported),
    ("ssl-prefer-server-ciphers", Support::Unsupported),
    (
        "ssl-redirect",
        Support::Differs(
            "308 to HTTPS for hosts in a spec.tls of an Ingress of the same namespace (a tenant's TLS entry never changes another namespace's site; ingress-nginx redirects any host with a certificate, whichever namespace set it), the Location without a trailing / (unless preserve-trailing-slash) and with the HTTPS listener's port when it is not 443; \"false\" turns it off",
        ),
    ),
    ("stream-snippet", Support::Unsupported),
    (
        "temporal-redirect",
        Support::Differs(
            "302; wins over permanent-redirect; variables as permanent-redirect (ingress-nginx >= 1.12 validates the URL)",
        ),
    ),
    ("temporal-redirect-code", Support::Honoured),
    (
        "upstream-hash-by",
        Support::Differs(
            "rendezvous hashing rather than ketama: a key keeps its endpoint and a change of endpoints moves only the keys it must, but which endpoint a key gets differs from nginx's; subsets are not supported; on a canary Ingress it hashes the requests the canary takes over the canary's endpoints, as ingress-nginx",
        ),
    ),
    ("upstream-hash-by-subset", Support::Unsupported),
    ("upstream-hash-by-subset-size", Support::Unsupported),
    (
        "upstream-vhost",
        Support::Differs("a literal host[:port]; nginx variables in it are refused"),
    ),
    (
        "use-port-in-redirects",
        Support::Accepted(
            "the HTTPS redirect names the HTTPS listener's port whenever it is not 443, as with use-port-in-redirects: \"true\"; Portico makes no other redirect that nginx's port_in_redirect touches",
        ),
    ),
    (
        "use-regex",
        Support::Differs(
            "regexes run on the linear-time regex crate: look-around and back-references leave the path out (an error); they match the normalised path, where percent-encodings other than of unreserved characters stay encoded",
        ),
    ),
    ("whitelist-source-range", Support::Honoured),
    ("x-forwarded-prefix", Support::Honoured),
];

/// How one annotation is supported (`None`: not an annotation ingress-nginx has).
pub fn support(name: &str) -> Option<Support> {
    ANNOTATIONS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| ANNOTATIONS[i].1)
}

/// ingress-nginx's risk rating of every annotation rated above Low, sorted: its
/// `annotations-risk.md`, generated from the parsers' `Risk` fields since 1.12. The older
/// names `whitelist-source-range` and `limit-whitelist` take their successors' rating, as
/// ingress-nginx checks them since 1.15. Anything else is Low.
const RISKS: &[(&str, RiskLevel)] = &[
    ("affinity-mode", RiskLevel::Medium),
    ("allowlist-source-range", RiskLevel::Medium),
    ("app-root", RiskLevel::Medium),
    ("auth-cache-duration", RiskLevel::Medium),
    ("auth-cache-key", RiskLevel::Medium),
    ("auth-proxy-set-headers", RiskLevel::Medium),
    ("auth-realm", RiskLevel::Medium),
    ("auth-request-redirect", RiskLevel::Medium),
    ("auth-response-headers", RiskLevel::Medium),
    ("auth-secret", RiskLevel::Medium),
    ("auth-signin", RiskLevel::High),
    ("auth-signin-redirect-param", RiskLevel::Medium),
    ("auth-snippet", RiskLevel::Critical),
    ("auth-tls-error-page", RiskLevel::High),
    ("auth-tls-match-cn", RiskLevel::High),
    ("auth-tls-secret", RiskLevel::Medium),
    ("auth-tls-verify-client", RiskLevel::Medium),
    ("auth-url", RiskLevel::High),
    ("canary-by-cookie", RiskLevel::Medium),
    ("canary-by-header", RiskLevel::Medium),
    ("canary-by-header-pattern", RiskLevel::Medium),
    ("canary-by-header-value", RiskLevel::Medium),
    ("configuration-snippet", RiskLevel::Critical),
    ("cors-allow-headers", RiskLevel::Medium),
    ("cors-allow-methods", RiskLevel::Medium),
    ("cors-allow-origin", RiskLevel::Medium),
    ("cors-expose-headers", RiskLevel::Medium),
    ("custom-headers", RiskLevel::Medium),
    ("denylist-source-range", RiskLevel::Medium),
    ("fastcgi-index", RiskLevel::Medium),
    ("fastcgi-params-configmap", RiskLevel::Medium),
    ("force-ssl-redirect", RiskLevel::Medium),
    ("mirror-host", RiskLevel::High),
    ("mirror-target", RiskLevel::High),
    ("modsecurity-snippet", RiskLevel::Critical),
    ("modsecurity-transaction-id", RiskLevel::High),
    ("opentelemetry-operation-name", RiskLevel::Medium),
    ("permanent-redirect", RiskLevel::Medium),
    ("preserve-trailing-slash", RiskLevel::Medium),
    ("proxy-body-size", RiskLevel::Medium),
    ("proxy-cookie-domain", RiskLevel::Medium),
    ("proxy-cookie-path", RiskLevel::Medium),
    ("proxy-next-upstream", RiskLevel::Medium),
    ("proxy-redirect-from", RiskLevel::Medium),
    ("proxy-redirect-to", RiskLevel::Medium),
    ("proxy-ssl-ciphers", RiskLevel::Medium),
    ("proxy-ssl-name", RiskLevel::High),
    ("proxy-ssl-secret", RiskLevel::Medium),
    ("rewrite-target", RiskLevel::Medium),
    ("server-alias", RiskLevel::High),
    ("server-snippet", RiskLevel::Critical),
    ("session-cookie-domain", RiskLevel::Medium),
    ("session-cookie-expires", RiskLevel::Medium),
    ("session-cookie-max-age", RiskLevel::Medium),
    ("session-cookie-name", RiskLevel::Medium),
    ("session-cookie-path", RiskLevel::Medium),
    ("stream-snippet", RiskLevel::Critical),
    ("temporal-redirect", RiskLevel::Medium),
    ("upstream-hash-by", RiskLevel::High),
    ("whitelist-source-range", RiskLevel::Medium),
    ("x-forwarded-prefix", RiskLevel::Medium),
];

/// ingress-nginx's risk rating of an annotation (its name without the prefix).
pub fn risk(name: &str) -> RiskLevel {
    RISKS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .map_or(RiskLevel::Low, |i| RISKS[i].1)
}

/// What an Ingress's annotations ask of its routes.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    /// The policy shared by every route of the Ingress (`None`: nothing to apply).
    pub policy: Option<Arc<Policy>>,
    /// `ssl-redirect` (`portico.dev/ssl-redirect` or ingress-nginx's); default true.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: redirect plain HTTP even without a TLS entry for the host.
    pub force_ssl_redirect: bool,
    /// The Ingress is left out (a snippet refused).
    pub left_out: bool,
    /// A canary Ingress (`canary: "true"`): its rules attach to the primary's as an
    /// alternative backend, taken by these rules.
    pub canary: Option<Arc<CanarySpec>>,
    /// `server-alias`: more names for the Ingress's hosts (lower-case, validated).
    pub aliases: Vec<Box<str>>,
    /// `server-snippet`'s response operations: the server's, for every route of the host
    /// when this is its oldest Ingress with one.
    pub server_snippet: Option<Arc<HeaderOps>>,
    /// `from-to-www-redirect`: the www twin of each host redirects to it.
    pub from_to_www: bool,
    /// `auth-url` and its companions, parsed (`Err`: invalid, the Ingress's routes answer
    /// 503; the destination is resolved by the Ingress's compilation).
    pub external_auth: Option<Result<Arc<AuthSpec>, ()>>,
    /// `enable-global-auth` (default true): the ConfigMap's `global-auth-url` applies to
    /// routes without an `auth-url` of their own.
    pub global_auth: bool,
    /// `backend-protocol` (or `secure-backends`), when it names one Portico speaks.
    pub protocol: BackendProtocol,
    /// `load-balance` (or the ConfigMap's): the scheduler of the Ingress's routes.
    pub balance: Option<crate::snapshot::services::Scheduler>,
}

/// What `backend-protocol` asks of the connections to the endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    /// Not set: a Service port's `appProtocol` may choose.
    #[default]
    Unset,
    /// HTTP/1.1 in clear text (explicit: wins over `appProtocol`).
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// The client's scheme: TLS for requests that came over TLS.
    AutoHttp,
    /// HTTP/2 in clear text (h2c prior knowledge): gRPC.
    Grpc,
    /// HTTP/2 over TLS (ALPN h2): gRPC.
    Grpcs,
}

/// Portico's own annotation for the HTTPS redirect (kept; ingress-nginx's wins when both).
const PORTICO_SSL_REDIRECT: &str = "portico.dev/ssl-redirect";

/// Reads every annotation of an Ingress; problems go to `diagnostics`.
pub(super) fn parse(
    key: &ObjectKey,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    globals: &Globals,
    diagnostics: &mut Vec<Diagnostic>,
) -> Parsed {
    let mut parsed = Parsed {
        global_auth: true,
        ssl_redirect: globals.ssl_redirect,
        force_ssl_redirect: globals.force_ssl_redirect,
        ..Parsed::default()
    };
    // What the ConfigMap sets for every route; the annotations override it.
    let mut policy = Policy {
        body_limit: globals.body_limit,
        custom_errors: globals.custom_http_errors.clone(),
        preserve_trailing_slash: globals.preserve_trailing_slash,
        https_redirect_code: globals.http_redirect_code,
        timeouts: (globals.timeouts != RouteTimeouts::default()).then_some(globals.timeouts),
        headers: globals.headers.clone(),
        // A ConfigMap key that guards access and that Portico does not implement (the
        // ConfigMap has the error).
        deny: (!globals.guards.is_empty()).then_some(503),
        ..Policy::default()
    };
    let empty = std::collections::BTreeMap::new();
    let mut r = Reader {
        key,
        annotations: annotations.unwrap_or(&empty),
        diagnostics,
    };
    if let Some(v) = r.boolean_raw(PORTICO_SSL_REDIRECT) {
        parsed.ssl_redirect = v;
    }
    if let Some(v) = r.boolean("ssl-redirect") {
        parsed.ssl_redirect = v;
    }
    if let Some(v) = r.boolean("force-ssl-redirect") {
        parsed.force_ssl_redirect = v;
    }
    if let Some(v) = r.boolean("preserve-trailing-slash") {
        policy.preserve_trailing_slash = v;
    }
    policy.redirect = redirect(&mut r);
    policy.app_root = r.app_root();
    if let Some(limit) = r.size("proxy-body-size") {
        policy.body_limit = limit;
    }
    policy.upstream_host = r.upstream_host();
    policy.use_regex = r.boolean("use-regex").unwrap_or(false);
    // Capped: a tenant's annotation cannot make Portico hold a huge body in memory.
    policy.body_buffer = r
        .size("client-body-buffer-size")
        .flatten()
        .map(|n| n.min(MAX_BODY_BUFFER));
    parsed.balance = load_balance(&mut r).or(globals.balance);
    match backend_protocol(&mut r) {
        Ok(protocol) => parsed.protocol = protocol,
        Err(()) => policy.deny = Some(503),
    }
    policy.hash_by = hash_by(&mut r);
    policy.service_upstream = r.boolean("service-upstream").unwrap_or(false);
    policy.affinity = affinity(&mut r, policy.use_regex).map(Arc::new);
    if policy.affinity.is_some() && policy.hash_by.is_some() {
        let reason = "has no effect with affinity: cookie, which wins as in ingress-nginx";
        r.warn("upstream-hash-by", reason.to_string());
        policy.hash_by = None;
    }
    if policy.service_upstream && policy.affinity.is_some() {
        let reason = "has no effect with service-upstream (one upstream, the Service: no endpoint to stick to); no cookie is set";
        r.warn("affinity", reason.to_string());
        policy.affinity = None;
    }
    if policy.service_upstream && policy.hash_by.is_some() {
        let reason =
            "has no effect with service-upstream (one upstream, the Service), as in ingress-nginx";
        r.warn("upstream-hash-by", reason.to_string());
        policy.hash_by = None;
    }
    if let Some(value) = r.get("custom-http-errors").filter(|v| !v.is_empty()) {
        let value = value.to_string();
        match values::parse_codes(&value) {
            Ok(codes) => policy.custom_errors = Some(codes),
            Err(why) => r.warn("custom-http-errors", format!("{value:?} {why}; ignored")),
        }
    }
    policy.next_upstream = next_upstream(&mut r, globals);
    if r.boolean("disable-proxy-intercept-errors") == Some(true) {
        policy.custom_errors = None;
    }
    parsed.aliases = aliases(&mut r);
    parsed.from_to_www = r.boolean("from-to-www-redirect").unwrap_or(false);
    policy.rewrite = rewrite(&mut r);
    let global = globals.timeouts;
    let timeouts = RouteTimeouts {
        connect: r.seconds("proxy-connect-timeout").or(global.connect),
        send: r.seconds("proxy-send-timeout").or(global.send),
        read: r.seconds("proxy-read-timeout").or(global.read),
    };
    policy.timeouts = (timeouts != RouteTimeouts::default()).then_some(timeouts);
    if r.boolean("enable-access-log") == Some(false) {
        policy.access_log = false;
    }
    policy.cors = cors(&mut r);
    match limits(&mut r, globals) {
        Ok(limits) => policy.limits = limits,
        Err(()) => policy.deny = Some(503),
    }
    match bandwidth(&mut r, globals) {
        Ok(b) => policy.bandwidth = b,
        Err(()) => policy.deny = Some(503),
    }
    match access(&mut r, globals) {
        Ok(access) => policy.access = access,
        // ingress-nginx denies the location whose list is invalid.
        Err(()) => policy.deny = Some(503),
    }
    match snippet_headers(&mut r, globals, &mut policy) {
        Ok(server) => parsed.server_snippet = server,
        Err(()) => parsed.left_out = true,
    }
    parsed.external_auth = external_auth(&mut r);
    if let Some(Err(())) = parsed.external_auth {
        policy.deny = Some(503);
    }
    if r.boolean("enable-global-auth") == Some(false) {
        parsed.global_auth = false;
    }
    let too_risky = r.too_risky(globals.annotations_risk_level);
    if too_risky {
        policy.deny = Some(503);
    }
    let guards = r.unsupported_and_guards();
    if !guards.is_empty() {
        policy.deny = Some(503);
        let reason = format!(
            "{} guard access, and Portico does not implement them yet: every path of this Ingress answers 503 rather than serve unguarded",
            guards.join(", ")
        );
        r.diagnostics
            .push(Diagnostic::error(key, "metadata.annotations", reason));
    }
    if r.boolean("canary") == Some(true) {
        // A canary ingress-nginx would reject takes nothing.
        parsed.left_out |= too_risky;
        // Only the canary annotations count on a canary Ingress (ingress-nginx ignores the
        // others there): the primary's policy applies to the rule.
        let mut spec = canary(&mut r);
        spec.affinity = policy.affinity.take();
        spec.hash_by = policy.hash_by.take();
        parsed.canary = Some(Arc::new(spec));
        parsed.policy = None;
        return parsed;
    }
    if policy != Policy::default() {
        parsed.policy = Some(Arc::new(policy));
    }
    parsed
}

/// `backend-protocol` (and the legacy `secure-backends: "true"`, HTTPS), case-insensitive:
/// HTTP, HTTPS and AUTO_HTTP (HTTP/1.1), GRPC and GRPCS (HTTP/2) are spoken. FCGI is refused
/// for good (`Err`: the Ingress's paths answer 503, with an error); any other value is a
/// warning and HTTP (ingress-nginx's fallback).
fn backend_protocol(r: &mut Reader<'_>) -> Result<BackendProtocol, ()> {
    let legacy = r.boolean("secure-backends") == Some(true);
    let value = match r.get("backend-protocol").filter(|v| !v.is_empty()) {
        Some(v) => v.to_ascii_uppercase(),
        None if legacy => "HTTPS".to_string(),
        None => return Ok(BackendProtocol::Unset),
    };
    let name = if r.get("backend-protocol").is_some() {
        "backend-protocol"
    } else {
        "secure-backends"
    };
    match value.as_str() {
        "HTTP" => Ok(BackendProtocol::Http),
        "HTTPS" => Ok(BackendProtocol::Https),
        "AUTO_HTTP" => Ok(BackendProtocol::AutoHttp),
        "GRPC" => Ok(BackendProtocol::Grpc),
        "GRPCS" => Ok(BackendProtocol::Grpcs),
        "FCGI" => {
            let reason = "FCGI is not supported by Portico (a deliberate difference from ingress-nginx): every path of this Ingress answers 503".to_string();
            r.error(name, reason);
            Err(())
        }
        _ => {
            let shown = crate::redact::short_value(&value);
            let reason = format!(
                "{shown} is not HTTP, HTTPS, GRPC, GRPCS, AUTO_HTTP or FCGI; HTTP is used, as ingress-nginx does"
            );
            r.warn(name, reason);
            Ok(BackendProtocol::Http)
        }
    }
}

/// `auth-url` with `auth-method`, `auth-signin`, `auth-signin-redirect-param`,
/// `auth-response-headers`, `auth-request-redirect`, `auth-always-set-cookie`,
/// `auth-cache-key` and `auth-cache-duration`. Anything invalid is an error and denies the
/// Ingress's routes (503), as ingress-nginx denies the location.
fn external_auth(r: &mut Reader<'_>) -> Option<Result<Arc<AuthSpec>, ()>> {
    let url = r.get("auth-url").filter(|u| !u.is_empty())?.to_string();
    let text = |r: &Reader<'_>, name: &str| r.get(name).map(str::to_string);
    let values = AuthValues {
        url,
        method: text(r, "auth-method"),
        signin: text(r, "auth-signin"),
        signin_param: text(r, "auth-signin-redirect-param"),
        response_headers: text(r, "auth-response-headers"),
        request_redirect: text(r, "auth-request-redirect"),
        always_set_cookie: r.boolean("auth-always-set-cookie").unwrap_or(false),
        cache_key: text(r, "auth-cache-key"),
        cache_duration: text(r, "auth-cache-duration"),
    };
    let mut warnings = Vec::new();
    let parsed = external_auth::parse(&values, parse_hash_key, &mut warnings);
    for (key, reason) in warnings {
        r.warn(&format!("auth-{key}"), reason);
    }
    Some(match parsed {
        Ok(spec) => Ok(Arc::new(spec)),
        Err(e) => {
            let reason = format!(
                "auth-{} {}: every path of this Ingress answers 503 rather than serve unguarded",
                e.key, e.reason
            );
            r.error(&format!("auth-{}", e.key), reason);
            Err(())
        }
    })
}

/// `limit-rate` (KiB per second; 0: none) and `limit-rate-after` (KiB sent before it
/// applies), as ingress-nginx renders `limit_rate Nk` / `limit_rate_after Nk`. An invalid
/// value fails closed: the Ingress asked for a throttle Portico cannot read.
fn bandwidth(r: &mut Reader<'_>, globals: &Globals) -> Result<Option<(u64, u64)>, ()> {
    let kib = |r: &mut Reader<'_>, name: &str, global: u64| -> Result<u64, ()> {
        let Some(v) = r.get(name).map(str::to_string) else {
            return Ok(global);
        };
        match v.parse::<u64>() {
            Ok(n) if n <= u64::MAX / 1024 => Ok(n * 1024),
            _ => {
                let shown = crate::redact::short_value(&v);
                r.error(name, format!("{shown} is not a whole number of KiB; every path of this Ingress answers 503"));
                Err(())
            }
        }
    };
    // Each falls back to the ConfigMap's on its own, as ingress-nginx's parser.
    let rate = kib(r, "limit-rate", globals.limit_rate.0);
    let after = kib(r, "limit-rate-after", globals.limit_rate.1);
    match (rate?, after?) {
        (0, _) => Ok(None),
        (rate, after) => Ok(Some((rate, after))),
    }
}

/// `limit-rps`, `limit-rpm`, `limit-burst-multiplier` (default 5), `limit-connections` and
/// `limit-allowlist` (or its older name `limit-whitelist`): one zone for the Ingress, keyed by
/// client address. A value that is not a whole number fails closed (`Err`: ingress-nginx's
/// validation refuses the Ingress); a negative limit is none (nginx renders no limit for it);
/// a multiplier below 1 fails closed (nginx refuses `burst=0`).
fn limits(
    r: &mut Reader<'_>,
    globals: &Globals,
) -> Result<Option<Arc<crate::snapshot::limits::Limits>>, ()> {
    use crate::snapshot::limits::{LimitSpec, Limits, Zone};
    let mut failed = false;
    let mut count = |r: &mut Reader<'_>, name: &str| -> Option<i64> {
        let v = r.get(name).map(str::to_string)?;
        match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let shown = crate::redact::short_value(&v);
                r.error(
                    name,
                    format!("{shown} is not a whole number; every path of this Ingress answers 503 (ingress-nginx refuses the Ingress)"),
                );
                failed = true;
                None
            }
        }
    };
    let mut limit = |r: &mut Reader<'_>, name: &str| -> u32 {
        match count(r, name) {
            Some(n) if n < 0 => {
                r.warn(
                    name,
                    format!("{n} is negative: no such limit, as nginx renders none"),
                );
                0
            }
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => 0,
        }
    };
    let rps = limit(r, "limit-rps");
    let rpm = limit(r, "limit-rpm");
    let connections = limit(r, "limit-connections");
    let multiplier = count(r, "limit-burst-multiplier");
    if failed {
        return Err(());
    }
    if rps == 0 && rpm == 0 && connections == 0 {
        return Ok(None);
    }
    let burst_multiplier = match multiplier {
        None => 5,
        Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
        Some(n) if rps > 0 || rpm > 0 => {
            r.error(
                "limit-burst-multiplier",
                format!("{n} makes a burst of {n} times the rate, which nginx refuses; every path of this Ingress answers 503"),
            );
            return Err(());
        }
        Some(_) => 5,
    };
    let exempt = match r
        .get("limit-allowlist")
        .map(|v| ("limit-allowlist", v.to_string()))
        .or_else(|| {
            r.get("limit-whitelist")
                .map(|v| ("limit-whitelist", v.to_string()))
        }) {
        None => crate::snapshot::access::IpSet::default(),
        Some((name, v)) => match parse_ranges(&v) {
            Ok(set) => set,
            Err(why) => {
                r.warn(name, format!("{why}; nobody is exempt"));
                crate::snapshot::access::IpSet::default()
            }
        },
    };
    let spec = LimitSpec {
        rps,
        rpm,
        burst_multiplier,
        connections,
        req_status: globals.limit_req_status,
        conn_status: globals.limit_conn_status,
    };
    let zone = Zone::for_ingress(&r.key.namespace, &r.key.name, &spec);
    Ok(Some(Arc::new(Limits { spec, exempt, zone })))
}

/// `enable-cors` and the `cors-*` annotations, with ingress-nginx's defaults; an invalid
/// value is a warning and the default (as ingress-nginx).
fn cors(r: &mut Reader<'_>) -> Option<Arc<crate::snapshot::cors::Cors>> {
    use crate::snapshot::cors::{self, Cors, Origins, Tokens};
    if r.boolean("enable-cors") != Some(true) {
        return None;
    }
    let origins = match r.get("cors-allow-origin").filter(|v| !v.is_empty()) {
        None => Origins::Any,
        Some(v) => {
            let v = v.to_string();
            let mut warnings = Vec::new();
            let origins = cors::parse_origins(&v, &mut warnings);
            for w in warnings {
                r.warn("cors-allow-origin", w);
            }
            origins
        }
    };
    let mut list = |name: &str, kind: Tokens, default: Option<&'static str>| {
        let fallback = default.map(http::HeaderValue::from_static);
        let Some(value) = r.get(name).map(str::to_string) else {
            return fallback;
        };
        match cors::token_list(&value, kind) {
            Some(v) => Some(v),
            None => {
                let shown = crate::redact::short_value(&value);
                r.warn(
                    name,
                    format!("{shown} is not a comma-separated list of names; the default applies"),
                );
                fallback
            }
        }
    };
    let methods = list(
        "cors-allow-methods",
        Tokens::Methods,
        Some(cors::DEFAULT_METHODS),
    );
    let headers = list(
        "cors-allow-headers",
        Tokens::Headers,
        Some(cors::DEFAULT_HEADERS),
    );
    let expose = list("cors-expose-headers", Tokens::Expose, None);
    let credentials = r.boolean("cors-allow-credentials").unwrap_or(true);
    let max_age = match r.get("cors-max-age").map(str::to_string) {
        None => cors::DEFAULT_MAX_AGE.to_string(),
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n.to_string(),
            Err(_) => {
                let shown = crate::redact::short_value(&v);
                r.warn(
                    "cors-max-age",
                    format!("{shown} is not a whole number of seconds; the default applies"),
                );
                cors::DEFAULT_MAX_AGE.to_string()
            }
        },
    };
    Some(Arc::new(Cors {
        origins,
        methods: methods.unwrap_or(http::HeaderValue::from_static(cors::DEFAULT_METHODS)),
        headers: headers.unwrap_or(http::HeaderValue::from_static(cors::DEFAULT_HEADERS)),
        expose,
        credentials,
        max_age: http::HeaderValue::from_str(&max_age)
            .unwrap_or(http::HeaderValue::from_static("1728000")),
    }))
}

/// The route's access rules: `allowlist-source-range` (or its older name
/// `whitelist-source-range`) and `denylist-source-range`, each replacing the ConfigMap's list
/// of its kind, then the ConfigMap's `block-cidrs` and `block-user-agents`/`block-referers`
/// on top. `Err`: a list in force is invalid (the error is reported; the route answers 503,
/// as ingress-nginx denies the location).
fn access(r: &mut Reader<'_>, globals: &Globals) -> Result<Option<Arc<Access>>, ()> {
    let mut list = |names: &[&str], global: &Option<Result<IpSet, ()>>| {
        let Some(name) = names.iter().copied().find(|n| r.get(n).is_some()) else {
            return global.clone().transpose();
        };
        let value = r.get(name).unwrap_or_default().to_string();
        match parse_ranges(&value) {
            Ok(set) => Ok(Some(set)),
            Err(why) => {
                let reason = format!(
                    "{why}: every path of this Ingress answers 503 (ingress-nginx denies a location whose list is invalid)"
                );
                r.error(name, reason);
                Err(())
            }
        }
    };
    let allow = list(
        &["allowlist-source-range", "whitelist-source-range"],
        &globals.allow,
    );
    let deny = list(&["denylist-source-range"], &globals.deny);
    let (allow, deny) = (allow?, deny?);
    let deny = match deny {
        Some(d) if !globals.block.is_empty() => d.union(&globals.block),
        Some(d) => d,
        None => globals.block.clone(),
    };
    let access = Access {
        fields: globals.fields.clone(),
        deny,
        allow,
    };
    Ok((access != Access::default()).then(|| Arc::new(access)))
}

/// A canary Ingress's rules (ingress-nginx: header, then cookie, then weight).
fn canary(r: &mut Reader<'_>) -> CanarySpec {
    let header = r
        .get("canary-by-header")
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let header = header.and_then(|h| {
        // nginx reads it as `$http_<name>`: '_' and '-' are the same there.
        match http::HeaderName::from_bytes(h.replace('_', "-").as_bytes()) {
            Ok(name) => Some(FieldName(name)),
            Err(_) => {
                r.warn(
                    "canary-by-header",
                    format!("{h:?} is not a header field name; ignored"),
                );
                None
            }
        }
    });
    let header_value = r
        .get("canary-by-header-value")
        .filter(|v| !v.is_empty())
        .map(Box::from);
    let pattern = r
        .get("canary-by-header-pattern")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let header_pattern = match pattern {
        Some(_) if header_value.is_some() => None,
        Some(p) => match PathRegex::build(&p, false) {
            Ok(re) => Some(re),
            Err(why) => {
                let reason = format!(
                    "{p:?} {why}; it never matches (ingress-nginx sends such requests to the primary)"
                );
                r.warn("canary-by-header-pattern", reason);
                None
            }
        },
        None => None,
    };
    let cookie = r
        .get("canary-by-cookie")
        .filter(|c| !c.is_empty())
        .map(Box::from);
    let total = r
        .whole("canary-weight-total")
        .filter(|t| *t > 100)
        .unwrap_or(100);
    let weight = r.whole("canary-weight").unwrap_or(0).min(total);
    // Read on the canary Ingress (ingress-nginx's `mergeAlternativeBackend`): `sticky` gives
    // the canary its primary's session affinity, `legacy` keeps its own.
    let legacy = match r.get("affinity-canary-behavior") {
        None | Some("" | "sticky") => false,
        Some("legacy") => true,
        Some(other) => {
            let reason = format!("{other:?} is not sticky or legacy; using sticky");
            r.warn("affinity-canary-behavior", reason);
            false
        }
    };
    CanarySpec {
        header,
        header_value,
        header_pattern,
        cookie,
        weight,
        total,
        affinity: None,
        legacy,
        hash_by: None,
    }
}

/// `proxy-next-upstream`, `-tries` and `-timeout` over the ConfigMap's (`None`: ingress-nginx's
/// defaults, unchanged).
fn next_upstream(r: &mut Reader<'_>, globals: &Globals) -> Option<NextUpstream> {
    type Read = fn(&mut NextUpstream, &str) -> Result<(), String>;
    let mut next = globals.next_upstream;
    let readers: [(&str, Read); 3] = [
        ("proxy-next-upstream", NextUpstream::set_conditions),
        ("proxy-next-upstream-tries", NextUpstream::set_tries),
        ("proxy-next-upstream-timeout", NextUpstream::set_within),
    ];
    for (name, read) in readers {
        if let Some(value) = r.get(name).map(str::to_string)
            && let Err(why) = read(&mut next, &value)
        {
            r.warn(name, format!("{value:?} {why}; using the default"));
        }
    }
    next.non_idempotent |= globals.retry_non_idempotent;
    (next != NextUpstream::DEFAULT).then_some(next)
}

/// The default sticky cookie name (ingress-nginx's).
pub const DEFAULT_AFFINITY_COOKIE: &str = "INGRESSCOOKIE";

/// `affinity: cookie` with `affinity-mode` and the
/// `session-cookie-*` annotations (ingress-nginx's defaults; an invalid value is a warning and
/// the default).
fn affinity(r: &mut Reader<'_>, use_regex: bool) -> Option<Affinity> {
    match r.get("affinity")? {
        "cookie" => {}
        "" => return None,
        other => {
            let reason =
                format!("{other:?} is not an affinity type (only \"cookie\"); no affinity");
            r.warn("affinity", reason);
            return None;
        }
    }
    let mode = match r.get("affinity-mode") {
        None | Some("" | "balanced") => AffinityMode::Balanced,
        Some("persistent") => AffinityMode::Persistent,
        Some("persistent-drainable") => {
            let reason =
                "is persistent in Portico: a terminating endpoint gets no request, sticky or not";
            r.warn("affinity-mode", reason.to_string());
            AffinityMode::Persistent
        }
        Some(other) => {
            let reason = format!("{other:?} is not balanced or persistent; using balanced");
            r.warn("affinity-mode", reason);
            AffinityMode::Balanced
        }
    };
    let name = match r.get("session-cookie-name").filter(|n| !n.is_empty()) {
        None => DEFAULT_AFFINITY_COOKIE.into(),
        Some(n) if values::cookie_name(n) => n.into(),
        Some(n) => {
            let reason = format!(
                "{n:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~); using {DEFAULT_AFFINITY_COOKIE}"
            );
            r.warn("session-cookie-name", reason);
            DEFAULT_AFFINITY_COOKIE.into()
        }
    };
    let path = r.cookie_attribute("session-cookie-path", |p| p.starts_with('/'));
    if use_regex && path.is_none() {
        let reason = "session-cookie-path should be set when use-regex is true (the cookie's Path is the path regex as written, as in ingress-nginx)";
        r.warn("affinity", reason.to_string());
    }
    let domain = r.cookie_attribute("session-cookie-domain", |d| {
        crate::proxy::headers::valid_host(d.trim_start_matches('.').as_bytes()) && !d.contains(':')
    });
    let max_age = r.cookie_seconds("session-cookie-max-age");
    let expires = r.cookie_seconds("session-cookie-expires");
    let samesite = match r.get("session-cookie-samesite").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("none") => Some("None"),
        Some(v) if v.eq_ignore_ascii_case("lax") => Some("Lax"),
        Some(v) if v.eq_ignore_ascii_case("strict") => Some("Strict"),
        Some(v) => {
            let reason = format!("{v:?} is not None, Lax or Strict; no SameSite attribute");
            r.warn("session-cookie-samesite", reason);
            None
        }
    };
    Some(Affinity {
        mode,
        name,
        path,
        domain,
        max_age,
        expires,
        samesite,
        secure: r.boolean("session-cookie-secure").unwrap_or(false),
        change_on_failure: r
            .boolean("session-cookie-change-on-failure")
            .unwrap_or(false),
    })
}

/// `upstream-hash-by`: nginx variables (`$request_uri`, `$remote_addr`, `$http_NAME`,
/// `$cookie_NAME`, `$arg_NAME`, and the URL variables) and literal text.
fn hash_by(r: &mut Reader<'_>) -> Option<HashKey> {
    let value = r
        .get("upstream-hash-by")
        .filter(|v| !v.is_empty())?
        .to_string();
    match parse_hash_key(&value) {
        Ok(key) => Some(key),
        Err(why) => {
            let reason = format!("{value:?} {why}; the Service's scheduler applies");
            r.warn("upstream-hash-by", reason);
            None
        }
    }
}

/// Parses an `upstream-hash-by` value.
pub fn parse_hash_key(value: &str) -> Result<HashKey, String> {
    if value.len() > 256 || value.bytes().any(|b| b.is_ascii_control()) {
        return Err("is longer than 256 bytes or holds control characters".to_string());
    }
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            parts.push(HashPart::Literal(rest[..at].into()));
        }
        let after = &rest[at + 1..];
        let (name, consumed) = values::variable(after)?;
        let part = if name == "remote_addr" {
            HashPart::RemoteAddr
        } else if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
            let field = http::HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                .map_err(|_| format!("uses ${name}, not a header field"))?;
            HashPart::Header(FieldName(field))
        } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
            HashPart::Cookie(c.into())
        } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
            HashPart::Arg(a.into())
        } else if let Some(var) = crate::snapshot::routes::UrlVar::named(name) {
            HashPart::Var(var)
        } else {
            return Err(format!(
                "uses ${name}, which Portico does not hash on (known: $remote_addr, $http_NAME, $cookie_NAME, $arg_NAME, $request_uri, $uri, $args, $host, $http_host, $scheme)"
            ));
        };
        parts.push(part);
        rest = &after[consumed..];
    }
    if !rest.is_empty() {
        parts.push(HashPart::Literal(rest.into()));
    }
    Ok(HashKey(parts.into()))
}

/// `server-alias`: a comma (or space) list of host names.
fn aliases(r: &mut Reader<'_>) -> Vec<Box<str>> {
    let Some(value) = r.get("server-alias").map(str::to_string) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in value.split([',', ' ']).filter(|n| !n.is_empty()) {
        let name = name.to_ascii_lowercase();
        match crate::snapshot::host::validate_rule_host(&name) {
            Ok(()) if !name.starts_with("*.") => out.push(name.into_boxed_str()),
            Ok(()) => r.warn(
                "server-alias",
                format!("{name:?}: wildcard aliases are not supported; ignored"),
            ),
            Err(why) => r.warn("server-alias", format!("{name:?} {why}; ignored")),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The most `client-body-buffer-size` may ask to hold in memory per request.
const MAX_BODY_BUFFER: u64 = 1 << 20;

/// `load-balance`: `round_robin` or `ewma` for the Ingress's routes, over the Service's
/// `portico.dev/load-balancer`; anything else is a warning and changes nothing.
fn load_balance(r: &mut Reader<'_>) -> Option<crate::snapshot::services::Scheduler> {
    use crate::snapshot::services::Scheduler;
    match r.get("load-balance")? {
        "round_robin" => Some(Scheduler::RoundRobin),
        "ewma" => Some(Scheduler::Ewma),
        other => {
            let shown = crate::redact::short_value(other);
            let reason = format!("{shown} is not round_robin or ewma; ignored");
            r.warn("load-balance", reason);
            None
        }
    }
}

/// `permanent-redirect` / `temporal-redirect` with their codes; temporal wins (as in
/// ingress-nginx, whose template checks it first).
fn redirect(r: &mut Reader<'_>) -> Option<Redirect> {
    let temporal = r.template("temporal-redirect");
    let permanent = r.template("permanent-redirect");
    if let Some(url) = temporal {
        let code = r.code("temporal-redirect-code", 302, 300..=307);
        if permanent.is_some() {
            let reason = "temporal-redirect is set too and wins, as in ingress-nginx";
            r.warn("permanent-redirect", reason.to_string());
        }
        return Some(Redirect { code, url });
    }
    let url = permanent?;
    let code = r.code("permanent-redirect-code", 301, 300..=308);
    Some(Redirect { code, url })
}

/// `rewrite-target` (and `x-forwarded-prefix`, which ingress-nginx sends only with a rewrite).
/// A target starting with `http://`, `https://` or `$scheme` is a redirect (nginx's `rewrite`
/// returns 302 for those).
fn rewrite(r: &mut Reader<'_>) -> Option<Rewrite> {
    let target = r.template("rewrite-target");
    let prefix = r.forwarded_prefix();
    let Some(target) = target else {
        if prefix.is_some() {
            let reason =
                "has effect only together with rewrite-target (as in ingress-nginx); ignored";
            r.warn("x-forwarded-prefix", reason.to_string());
        }
        return None;
    };
    let text = r.get("rewrite-target").unwrap_or("");
    let redirect = ["http://", "https://", "$scheme"]
        .iter()
        .any(|s| text.starts_with(s));
    Some(Rewrite {
        target,
        redirect,
        prefix,
    })
}

/// `configuration-snippet` into the policy's header operations (after the ConfigMap's, as
/// nginx runs the http level's directives before a location's), and `server-snippet` into
/// the server's, which the host's build puts under every route of the host when this is the
/// host's oldest Ingress with one (`routes::build_host`). `Err` when the Ingress must be left
/// out (a snippet refused by the ConfigMap's settings, or one Portico cannot run), with an
/// error.
fn snippet_headers(
    r: &mut Reader<'_>,
    globals: &Globals,
    policy: &mut Policy,
) -> Result<Option<Arc<HeaderOps>>, ()> {
    let names = ["server-snippet", "configuration-snippet"];
    let present: Vec<&str> = names.into_iter().filter(|n| r.get(n).is_some()).collect();
    if present.is_empty() {
        return Ok(None);
    }
    if !globals.allow_snippet_annotations || globals.annotations_risk_level != RiskLevel::Critical {
        for name in present {
            let reason = "snippets are refused: the controller ConfigMap must set allow-snippet-annotations: \"true\" and annotations-risk-level: Critical (as in ingress-nginx 1.12 and later); the Ingress is left out, as ingress-nginx's admission webhook would reject it";
            r.error(name, reason.to_string());
        }
        return Err(());
    }
    let mut server = HeaderOps::default();
    let mut location = policy.headers.as_deref().cloned().unwrap_or_default();
    let mut ok = true;
    for name in present {
        let text = r.get(name).unwrap_or_default().to_string();
        let ops = if name == "server-snippet" {
            &mut server
        } else {
            &mut location
        };
        if let Err(why) = snippets::parse(&text, ops) {
            let reason = format!(
                "{why}; the Ingress is left out, as ingress-nginx's admission webhook would reject it"
            );
            r.error(name, reason);
            ok = false;
        }
    }
    if !ok {
        return Err(());
    }
    if !server.request.is_empty() {
        let reason = "its proxy_set_header never reaches the endpoint: every ingress-nginx location sets proxy_set_header, and nginx then takes none of the server's; ignored, as there".to_string();
        r.warn("server-snippet", reason);
        server.request.clear();
    }
    if location != HeaderOps::default() {
        location.finish();
        policy.headers = Some(Arc::new(location));
    }
    if server.response.is_empty() {
        return Ok(None);
    }
    server.finish();
    Ok(Some(Arc::new(server)))
}

/// Reads annotations by name, with diagnostics naming the annotation and the value.
struct Reader<'a> {
    key: &'a ObjectKey,
    annotations: &'a std::collections::BTreeMap<String, String>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

// === impl Reader ===

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.annotations
            .get(&format!("{NGINX}{name}"))
            .map(|v| v.trim())
    }

    fn field(name: &str) -> String {
        format!("metadata.annotations[{NGINX}{name}]")
    }

    fn warn(&mut self, name: &str, reason: String) {
        let d = Diagnostic::warning(self.key, Self::field(name), reason);
        self.diagnostics.push(d);
    }

    fn error(&mut self, name: &str, reason: String) {
        let d = Diagnostic::error(self.key, Self::field(name), reason);
        self.diagnostics.push(d);
    }

    /// A boolean the way ingress-nginx reads it (Go's `strconv.ParseBool`); anything else is
    /// a warning and the default.
    fn boolean(&mut self, name: &str) -> Option<bool> {
        let value = self.get(name)?;
        match values::parse_bool(value) {
            Some(b) => Some(b),
            None => {
                let reason = format!("{value:?} is not a boolean (\"true\" or \"false\"); ignored");
                self.warn(name, reason);
                None
            }
        }
    }

    /// A boolean under a full annotation name.
    fn boolean_raw(&mut self, full: &str) -> Option<bool> {
        let value = self.annotations.get(full)?.trim();
        match values::parse_bool(value) {
            Some(b) => Some(b),
            None => {
                let reason =
                    format!("{value:?} is not a boolean (\"true\" or \"false\"); using true");
                let field = format!("metadata.annotations[{full}]");
                self.diagnostics
                    .push(Diagnostic::warning(self.key, field, reason));
                None
            }
        }
    }

    /// A size in nginx's syntax (`Some(None)`: `0`, no limit); invalid: a warning, and the
    /// ConfigMap's (or the default) applies.
    fn size(&mut self, name: &str) -> Option<Option<u64>> {
        let value = self.get(name)?;
        match parse_size(value) {
            Ok(0) => Some(None),
            Ok(n) => Some(Some(n)),
            Err(reason) => {
                let reason = format!("{value:?} {reason}; using the default");
                self.warn(name, reason);
                None
            }
        }
    }

    /// A timeout in whole seconds, as ingress-nginx reads it (`"60"`; Go's `Atoi`, so no
    /// unit); anything else, or zero, is a warning and the proxy's timeout.
    fn seconds(&mut self, name: &str) -> Option<std::time::Duration> {
        let value = self.get(name)?;
        match values::parse_seconds(value) {
            Some(s) => Some(std::time::Duration::from_secs(s)),
            None => {
                let reason = format!(
                    "{value:?} is not a timeout in whole seconds (as \"60\", no unit, more than 0); using the default"
                );
                self.warn(name, reason);
                None
            }
        }
    }

    /// A whole number (a warning and `None` for anything else).
    fn whole(&mut self, name: &str) -> Option<u32> {
        let value = self.get(name)?;
        match value.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.warn(name, format!("{value:?} is not a whole number; ignored"));
                None
            }
        }
    }

    /// A cookie attribute value: printable, no `;`, and `valid` (else a warning, and none).
    fn cookie_attribute(&mut self, name: &str, valid: impl Fn(&str) -> bool) -> Option<Box<str>> {
        let value = self.get(name).filter(|v| !v.is_empty())?;
        let printable = value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b';');
        if printable && value.len() <= 1024 && valid(value) {
            return Some(value.into());
        }
        let reason = format!("{value:?} is not a valid cookie attribute value here; ignored");
        self.warn(name, reason);
        None
    }

    /// A number of seconds for a cookie (`0` included); anything else is a warning and none.
    fn cookie_seconds(&mut self, name: &str) -> Option<u64> {
        let value = self.get(name).filter(|v| !v.is_empty())?;
        match value.parse::<u64>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) && n <= 1 << 40 => Some(n),
            _ => {
                let reason = format!("{value:?} is not a number of seconds; ignored");
                self.warn(name, reason);
                None
            }
        }
    }

    /// A redirect status code in `range`, else `default` (ingress-nginx's fallback).
    fn code(&mut self, name: &str, default: u16, range: std::ops::RangeInclusive<u16>) -> u16 {
        let Some(value) = self.get(name) else {
            return default;
        };
        match value.parse::<u16>() {
            Ok(code) if range.contains(&code) => code,
            _ => {
                let reason = format!(
                    "{value:?} is not a redirect code in {}–{}; using {default}",
                    range.start(),
                    range.end()
                );
                self.warn(name, reason);
                default
            }
        }
    }

    /// A redirect URL (nginx variables expanded per request).
    fn template(&mut self, name: &str) -> Option<UrlTemplate> {
        let value = self.get(name)?;
        if value.is_empty() {
            return None;
        }
        match parse_template(value) {
            Ok(template) => Some(template),
            Err(reason) => {
                self.error(name, format!("{value:?} {reason}; ignored"));
                None
            }
        }
    }

    /// `x-forwarded-prefix`: a literal header value.
    fn forwarded_prefix(&mut self) -> Option<Box<str>> {
        let value = self.get("x-forwarded-prefix")?;
        if value.is_empty() {
            return None;
        }
        if value.contains('$') || http::HeaderValue::from_str(value).is_err() {
            let reason = format!(
                "{value:?} is not a literal header value (nginx variables are not expanded here); ignored"
            );
            self.warn("x-forwarded-prefix", reason);
            return None;
        }
        Some(value.into())
    }

    /// `app-root`: an absolute path (ingress-nginx refuses anything else).
    fn app_root(&mut self) -> Option<Box<str>> {
        let value = self.get("app-root")?;
        if value.is_empty() {
            return None;
        }
        if values::valid_app_root(value) {
            Some(value.into())
        } else {
            let reason = format!(
                "{value:?} is not an absolute path (it must start with '/' and hold no spaces, control characters or '#'); ignored"
            );
            self.warn("app-root", reason);
            None
        }
    }

    /// `upstream-vhost`: the Host sent upstream, a literal `host[:port]`.
    fn upstream_host(&mut self) -> Option<Box<str>> {
        let value = self.get("upstream-vhost")?;
        if value.is_empty() {
            return None;
        }
        if value.contains('$') {
            let reason = format!(
                "{value:?} uses nginx variables, which Portico does not expand here; ignored (the client's Host is sent)"
            );
            self.warn("upstream-vhost", reason);
            return None;
        }
        if !crate::proxy::headers::valid_host(value.as_bytes()) {
            let reason = format!("{value:?} is not a host[:port]; ignored");
            self.warn("upstream-vhost", reason);
            return None;
        }
        Some(value.to_ascii_lowercase().into())
    }

    /// `annotations-risk-level`: an error for each annotation ingress-nginx rates above the
    /// ConfigMap's level (its `CheckAnnotationRisk`: strictly above). ingress-nginx rejects
    /// such an Ingress; Portico fails closed instead (true: its routes answer 503), so a
    /// guarded path never falls to another Ingress's route. `server-snippet` and
    /// `configuration-snippet` are judged by the snippet reader (they need Critical).
    fn too_risky(&mut self, level: RiskLevel) -> bool {
        let risky: Vec<(String, RiskLevel)> = self
            .annotations
            .keys()
            .filter_map(|k| k.strip_prefix(NGINX))
            .filter(|n| !matches!(*n, "server-snippet" | "configuration-snippet"))
            .map(|n| (n.to_string(), risk(n)))
            .filter(|(_, r)| *r > level)
            .collect();
        for (name, rated) in &risky {
            let reason = format!(
                "rated {rated:?} by ingress-nginx, above the ConfigMap's annotations-risk-level ({level:?}): ingress-nginx 1.12 and later rejects this Ingress; its paths answer 503 until the level allows it or the annotation goes"
            );
            self.error(name, reason);
        }
        !risky.is_empty()
    }

    /// Warnings for unsupported and obsolete annotations (and unknown ones under the prefix);
    /// returns the access-guarding annotations that must fail closed.
    fn unsupported_and_guards(&mut self) -> Vec<String> {
        let mut guards = Vec::new();
        let names: Vec<String> = self
            .annotations
            .keys()
            .filter_map(|k| k.strip_prefix(NGINX))
            .map(str::to_string)
            .collect();
        for name in names {
            match support(&name) {
                Some(Support::Honoured | Support::Differs(_) | Support::Accepted(_)) => {}
                Some(Support::FailsClosed) => guards.push(format!("{NGINX}{name}")),
                Some(Support::Unsupported) => {
                    let reason = "not supported by Portico yet; ignored".to_string();
                    self.warn(&name, reason);
                }
                Some(Support::Obsolete(why)) => {
                    let reason = format!("obsolete ({why}); ignored");
                    self.warn(&name, reason);
                }
                None => {
                    let reason = "not an ingress-nginx annotation Portico knows; ignored";
                    self.warn(&name, reason.to_string());
                }
            }
        }
        guards
    }
}
