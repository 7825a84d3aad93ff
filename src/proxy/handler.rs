//! One request: route it by the snapshot, redirect to HTTPS, pick an endpoint, forward, and
//! turn failures into responses in one place.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HOST, LOCATION, SERVER};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::{debug, warn};

use super::Proxy;
use super::access::{AccessRecord, LoggedBody};
use super::body::ProxyBody;
use super::deadline::Elapsed;
use super::errors::ProxyError;
use super::headers::{self, ConnHeaders};
use super::sticky;
use super::upstream::{
    ClientForwarding, ConnectError, Forwarding, Key, Pooled, RequestBody, Resend, SendError,
    Target, UpstreamBody,
};
use crate::l4::Pick;
use crate::snapshot::Snapshot;
use crate::snapshot::host::without_port;
use crate::snapshot::routes::{
    Affinity, Backend, FieldValue, NextUpstream, Policy, PortRef, RequestVars, ResponseOp, Rewrite,
    Route, RouteLabels, RouteTimeouts, Upstream,
};
use crate::snapshot::services::ServicePort;

/// What is learned about a request on its way, for the access log and metrics.
#[derive(Debug, Default)]
struct Outcome<'s> {
    labels: Option<&'s RouteLabels>,
    upstream: Option<SocketAddr>,
    upstream_status: Option<u16>,
    request_id: Option<HeaderValue>,
    /// Error bodies in JSON (the request's Accept asks for it).
    json: bool,
    /// The route's response header operations (snippets), and their values expanded for
    /// this request when some use variables (boxed: rare).
    response_ops: Option<(&'s [ResponseOp], Option<Expanded>)>,
    /// The endpoint key of a new sticky session (`affinity: cookie`).
    sticky_key: Option<[u8; 16]>,
    /// Its Set-Cookie field, added to the response.
    set_cookie: Option<HeaderValue>,
    /// The route, when its policy has `custom-http-errors`.
    intercept: Option<&'s Route>,
    /// The client address, when a trusted peer named it (the access log's).
    client: Option<IpAddr>,
    /// The snapshot's Strict-Transport-Security goes on the response (HTTPS, a host with a
    /// certificate).
    hsts: bool,
    /// What some policies add to the response (boxed: rare, and kept out of a plain
    /// request's future).
    extras: Option<Box<Extras<'s>>>,
}

/// What a route's policy adds to its response.
#[derive(Debug, Default)]
struct Extras<'s> {
    /// The route's CORS fields and the Access-Control-Allow-Origin of this request.
    cors: Option<(&'s crate::snapshot::cors::Cors, HeaderValue)>,
    /// The request's place under `limit-connections`, held until its response ends.
    limit: Option<crate::snapshot::limits::ConnGuard>,
    /// `limit-rate`, `limit-rate-after`: the response's bytes per second, after so many.
    bandwidth: Option<(u64, u64)>,
    /// The auth answer's Set-Cookie fields, and whether they go on every status.
    auth_cookies: Option<(Vec<HeaderValue>, bool)>,
    /// `ssl-client-verify` and the other fields of the client's certificate, for upstream.
    cert_fields: SetFields,
}

/// What another try of a request needs (`proxy-next-upstream`).
struct Retry<'a, 's> {
    snapshot: &'s Snapshot,
    backend: &'a Backend,
    /// The client's address, the connect timeout, the request's hash.
    choice: (IpAddr, Option<Duration>, Option<u64>),
    sticky: Option<&'a Sticky<'a>>,
    next: &'a NextUpstream,
    /// The method may go again once sent (idempotent, or `non_idempotent`).
    resendable: bool,
    parts: &'a http::request::Parts,
    fwd: &'a Forwarding<'a>,
    body: RequestBody,
    timeouts: Option<&'a RouteTimeouts>,
    /// The endpoints tried, in order.
    tried: Vec<SocketAddr>,
    started: Instant,
}

/// Whether a method may be sent again once sent: not POST, LOCK or PATCH (nginx's
/// non-idempotent methods) unless `non_idempotent` says so.
fn resendable(method: &http::Method, next: &NextUpstream) -> bool {
    next.non_idempotent
        || !(method == http::Method::POST || method == http::Method::PATCH || method == "LOCK")
}

/// Whether an attempt's result goes on to another endpoint under `next`: a failed connect by
/// `error` or `timeout`; a sent request (`resendable`) by `error` or `invalid_header` (the
/// endpoint failed or answered no valid head), `timeout` (no head in time) or its status.
fn goes_on(
    next: &NextUpstream,
    connecting: bool,
    resendable: bool,
    result: &Result<&Response<UpstreamBody>, &ProxyError>,
) -> bool {
    match result {
        Err(ProxyError::Connect(_)) if connecting => next.error,
        Err(ProxyError::Timeout) if connecting => next.timeout,
        _ if connecting => false,
        Ok(response) => resendable && next.on_status(response.status().as_u16()),
        Err(ProxyError::Upstream(_)) => resendable && (next.error || next.invalid_header),
        Err(ProxyError::Timeout) => resendable && next.timeout,
        Err(_) => false,
    }
}

/// Passive health (`portico.dev/max-fails`): an attempt's result counts for its endpoint as
/// nginx's `max_fails` counts it: a refused, reset or timed-out attempt or an invalid answer
/// is a failure; any response (5xx included) a success.
#[inline]
fn passive(pick: Option<&Pick<'_>>, result: &Result<&Response<UpstreamBody>, &ProxyError>) {
    let Some(pick) = pick else { return };
    let load = pick.guard.load();
    match result {
        Ok(_) => load.succeeded(),
        Err(ProxyError::Connect(_) | ProxyError::Timeout | ProxyError::Upstream(_)) => {
            if load.failed() {
                warn!(endpoint = %pick.endpoint.addr, "endpoint out for its fail-timeout: portico.dev/max-fails failed attempts");
            }
        }
        Err(_) => {}
    }
}

/// A response the default backend is asked to replace (`custom-http-errors`).
struct ErrorPage<'a> {
    route: &'a Route,
    status: u16,
    request_id: Option<&'a HeaderValue>,
    json: bool,
}

/// The fields ingress-nginx's custom error locations send to the default backend.
static X_CODE: HeaderName = HeaderName::from_static("x-code");
static X_FORMAT: HeaderName = HeaderName::from_static("x-format");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
static X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
static X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
static X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");

/// A sticky route's request: the affinity, its backend's key, and the request's cookie key.
struct Sticky<'a> {
    affinity: &'a Affinity,
    salt: [u8; 16],
    request_key: Option<&'a [u8]>,
}

/// Response field values expanded for one request, by operation.
type Expanded = Box<[Option<HeaderValue>]>;

/// `?` inside the labeled block `$label`: the error ends the block.
macro_rules! or_break {
    ($label:lifetime, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => break $label Err(e),
        }
    };
}

// === impl Proxy ===

impl Proxy {
    /// Handles one request from a client connection.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnHeaders) -> Response<ProxyBody> {
        let start = Instant::now();
        // Boxed: only with the access log on, and kept small in every request's future.
        let mut logged = self.config.access_log.then(|| {
            let host = host_value(req.uri(), req.headers().get(HOST));
            Box::new((req.method().clone(), req.uri().clone(), host))
        });
        let method = crate::metrics::MethodClass::of(req.method());
        let snapshot = self.snapshot.load_full();
        self.configure_pool(&snapshot);
        let mut outcome = Outcome::default();
        // Forwarding, written out here rather than in an `async fn` of its own: each level of
        // nested future copies the request in and the response out.
        let (mut parts, body) = req.into_parts();
        let forwarded: Result<Response<ProxyBody>, ProxyError> = 'forward: {
            let fields = headers::RequestFields::of(&parts.headers);
            outcome.json = fields.wants_json;
            // hyper refuses HTTP/1 heads over the limit itself; HTTP/2 ones are counted here.
            if parts.headers.len() > self.config.max_headers {
                break 'forward Err(ProxyError::TooManyFields);
            }
            let host = or_break!('forward, request_host(&parts, &fields));
            // The client address: the peer's, unless the ConfigMap trusts the peer to name it
            // (ARCHITECTURE.md, "Client address"). Boxed: rare.
            let client_fwd = client_forwarding(&snapshot, conn, &parts.headers);
            let client = client_fwd.as_ref().map_or(conn.peer.ip(), |c| c.0);
            let https = client_fwd.as_ref().map_or(conn.https, |c| c.1);
            if client_fwd.is_some() {
                outcome.client = Some(client);
            }
            let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
            // HSTS on HTTPS for hosts with a certificate in ingress-nginx's sense: their own,
            // or named by a TLS section of their namespace (`CertTable::configured`).
            if conn.tls && snapshot.hsts.is_some() && snapshot.certs.configured(host_str) {
                outcome.hsts = true;
            }
            // Client certificates (`auth-tls-*`): judged per host as soon as the request head
            // is read, before any location, as nginx does (plain HTTP after its redirect).
            // A host whose `auth-tls-*` could not be honoured is refused first, over plain
            // HTTP too (ingress-nginx's server-level `return 403`).
            if !snapshot.client_auth.is_empty()
                && (conn.tls || host_denied(&snapshot, host_str))
                && let Some(refused) = client_certificate(&snapshot, conn, host_str, &mut outcome)
            {
                break 'forward refused;
            }
            // The path as it goes upstream (normal, encoded slashes kept), and the one routes
            // and policies see (nginx's `$uri`: an encoded slash is a separator there, so
            // `/admin%2Fx` is under `/admin`).
            let forward_path = or_break!('forward, normalized_path(&parts.uri));
            let path = super::path::routing(&forward_path);
            let route = snapshot.routes.route(host_str, &path);
            let route = or_break!('forward, route.ok_or(ProxyError::NoRoute));
            outcome.labels = Some(&route.labels);
            // The route's policy, in nginx's phase order (ARCHITECTURE.md, "One request, one
            // order"). A plain route has none and skips all of it.
            let policy = route.policy.as_deref();
            // `rewrite-target`: the path and query sent upstream instead of the request's.
            let mut rewritten: Option<String> = None;
            let mut prefix: Option<HeaderValue> = None;
            // `proxy_set_header` of the route's snippets: built once when literal, else
            // expanded into `set_owned`.
            let mut set_owned: Vec<(HeaderName, Option<HeaderValue>)> = Vec::new();
            let mut set: &[(HeaderName, Option<HeaderValue>)] = &[];
            // `upstream-hash-by`: the request's key, hashed.
            let mut hash: Option<u64> = None;
            if let Some(policy) = policy {
                if !policy.access_log {
                    logged = None;
                }
                if policy.custom_errors.is_some() {
                    outcome.intercept = Some(route);
                }
                // `block-user-agents`, `block-referers`: the server's `if`, before anything.
                if let Some(access) = policy.access.as_deref()
                    && access.refuses_fields(&parts.headers)
                {
                    break 'forward Err(ProxyError::Denied("a blocked request field"));
                }
                // The path regex's captures, for the templates that use them (regex mode).
                let captures = route
                    .regex
                    .as_ref()
                    .filter(|_| policy.uses_captures())
                    .and_then(|re| re.0.captures(&path));
                let vars = RequestVars {
                    captures: captures.as_ref(),
                    ..request_vars(conn, https, host_str, &path, &parts, client)
                };
                if policy.bandwidth.is_some() {
                    outcome.extras.get_or_insert_default().bandwidth = policy.bandwidth;
                }
                // CORS: the fields go on every answer of the route to an allowed Origin (a
                // denied route's `return 503` has none: nginx renders nothing else there).
                if let Some(cors) = policy.cors.as_deref().filter(|_| policy.deny.is_none())
                    && let Some(origin) = cors.allow_origin(parts.headers.get(http::header::ORIGIN))
                {
                    outcome.extras.get_or_insert_default().cors = Some((cors, origin));
                }
                // A preflight (OPTIONS from an allowed Origin) is answered 204 in there, as
                // ingress-nginx's `return 204` (before the HTTPS redirect and any access check).
                let preflight = outcome.extras.as_ref().is_some_and(|e| e.cors.is_some())
                    && parts.method == http::Method::OPTIONS;
                let early = policy_before_redirects(policy, &body, &vars, preflight);
                if let Some(response) = or_break!('forward, early) {
                    break 'forward Ok(response);
                }
                if let Some(rw) = &policy.rewrite {
                    rewritten = Some(or_break!('forward, rewrite_uri(rw, &vars)));
                    prefix = rw
                        .prefix
                        .as_deref()
                        .and_then(|p| HeaderValue::from_str(p).ok());
                }
                if let Some(key) = &policy.hash_by {
                    hash = Some(key.hash(&vars, client, &parts.headers));
                }
                if let Some(ops) = policy.headers.as_deref() {
                    match &ops.request_fixed {
                        Some(fixed) => set = fixed,
                        None => {
                            set_owned = ops
                                .request
                                .iter()
                                .map(|(name, value)| (name.0.clone(), value.value(&vars)))
                                .collect();
                        }
                    }
                    if !ops.response.is_empty() {
                        let expanded = ops.response_vars.then(|| expand(&ops.response, &vars));
                        outcome.response_ops = Some((&ops.response, expanded));
                    }
                }
            }
            if !https && route.ssl_redirect {
                let keep_slash = policy.is_some_and(|p| p.preserve_trailing_slash);
                let code = policy.map_or(308, |p| p.https_redirect_code);
                // ingress-nginx redirects to `$best_http_host`: a trusted peer's
                // X-Forwarded-Host (with use-forwarded-headers), its port dropped.
                let name = client_fwd
                    .as_ref()
                    .and_then(|c| c.2.host.as_ref())
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(host_str);
                let location = (name, &*forward_path, parts.uri.query());
                let how = (self.config.https_port, keep_slash, code);
                break 'forward Ok(redirect(location, how));
            }
            // Plain HTTP to a host that asks for client certificates has none: a required
            // one is a 400 (nginx would serve it unverified).
            if !conn.tls
                && !snapshot.client_auth.is_empty()
                && let Some(refused) = client_certificate(&snapshot, conn, host_str, &mut outcome)
            {
                break 'forward refused;
            }
            if let Some(status) = policy.and_then(|p| p.deny) {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                break 'forward Err(ProxyError::Refused(status));
            }
            // Limits: nginx's preaccess phase (connections, then the request rates).
            if let Some(limits) = policy.and_then(|p| p.limits.as_deref())
                && !limits.exempt.contains(client)
            {
                use crate::snapshot::limits::Refusal;
                let status = match limits.zone.admit(client) {
                    Ok(guard) => {
                        if let Some(guard) = guard {
                            outcome.extras.get_or_insert_default().limit = Some(guard);
                        }
                        None
                    }
                    Err(Refusal::Connections) => Some(limits.spec.conn_status),
                    Err(Refusal::Rate) => Some(limits.spec.req_status),
                };
                if let Some(status) = status {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    break 'forward Err(ProxyError::Limited(status));
                }
            }
            // Source ranges: nginx's access phase (deny, then allow, then `deny all`).
            if let Some(access) = policy.and_then(|p| p.access.as_deref())
                && !access.admits(client)
            {
                break 'forward Err(ProxyError::Denied("the client address"));
            }
            // Basic authentication (nginx's access phase, after the addresses). Boxed: the
            // check's state stays out of a plain request's future.
            let mut strip_authorization = false;
            if let Some(auth) = policy.and_then(|p| p.basic_auth.as_ref()) {
                use super::basic::Outcome as Auth;
                match Box::pin(self.basic.check(auth, &parts.headers)).await {
                    // nginx's `proxy_set_header Authorization ""`: the endpoint never sees it
                    // (removed once the request's fields are read).
                    Auth::Allowed => strip_authorization = true,
                    Auth::Unauthorized => {
                        break 'forward Err(ProxyError::Unauthorized(auth.challenge.clone()));
                    }
                    Auth::Duplicate => {
                        let why = "client sent duplicate Authorization fields";
                        break 'forward Err(ProxyError::BadRequest(why));
                    }
                    Auth::Error => break 'forward Err(ProxyError::AuthError),
                }
            }
            // External authentication (nginx's `auth_request`, after basic auth), asked with
            // the request as the client sent it, before any rewrite. Boxed: rare.
            // The id it makes for a request without one goes to the endpoint too.
            let auth_id = if let Some(auth) = policy.and_then(|p| p.external_auth.as_deref()) {
                let ask = external::Ask {
                    auth,
                    parts: &parts,
                    conn,
                    client_fwd: client_fwd.as_deref().map(|c| &c.2),
                    client,
                    https,
                    vars: request_vars(conn, https, host_str, &path, &parts, client),
                    request_id: fields.request_id.cloned(),
                    cert_fields: outcome
                        .extras
                        .as_ref()
                        .map(|e| e.cert_fields.clone())
                        .unwrap_or_default(),
                    host: host.as_ref(),
                    json: outcome.json,
                };
                match Box::pin(self.authenticate(&snapshot, ask)).await {
                    external::Verdict::Allowed {
                        mut copies,
                        cookies,
                        generated,
                    } => {
                        // `auth-response-headers`: the answer's fields replace the client's
                        // and the route's own.
                        if !copies.is_empty() {
                            if set_owned.is_empty() {
                                set_owned = set.to_vec();
                            }
                            set_owned.retain(|(name, _)| !copies.iter().any(|(n, _)| n == name));
                            set_owned.append(&mut copies);
                        }
                        if cookies.is_some() {
                            outcome.extras.get_or_insert_default().auth_cookies = cookies;
                        }
                        generated
                    }
                    external::Verdict::Answered(response) => break 'forward Ok(response),
                }
            } else {
                None
            };
            let generated = match auth_id {
                Some(id) => Some(id),
                None => fields
                    .request_id
                    .is_none()
                    .then(headers::RequestId::generate),
            };
            let vhost = policy
                .and_then(|p| p.upstream_host.as_deref())
                .and_then(|h| HeaderValue::from_str(h).ok());
            // RFC 8441: a WebSocket over HTTP/2 (extended CONNECT, `:protocol websocket`)
            // goes to the endpoint as an HTTP/1.1 upgrade, and its 101 is the client's 200.
            let h2_websocket = parts.version == Version::HTTP_2
                && parts.method == http::Method::CONNECT
                && parts
                    .extensions
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
            // Another `:protocol` (RFC 8441 §4): not one Portico carries, 501.
            if !h2_websocket
                && parts.method == http::Method::CONNECT
                && parts.extensions.get::<hyper::ext::Protocol>().is_some()
            {
                break 'forward Ok(not_implemented());
            }
            let upgrade = (parts.version == Version::HTTP_11 && fields.upgrade) || h2_websocket;
            if self.config.access_log || outcome.intercept.is_some() {
                outcome.request_id = match &generated {
                    Some(id) => Some(id.to_value()),
                    None => fields.request_id.cloned(),
                };
            }
            if strip_authorization {
                parts.headers.remove(http::header::AUTHORIZATION);
            }
            if h2_websocket {
                websocket_over_h2(&mut parts.method, &mut parts.headers, &mut parts.extensions);
            }
            // What `hyper::upgrade::on` takes from a request, taken from its parts.
            let client_upgrade = upgrade
                .then(|| parts.extensions.remove::<OnUpgrade>())
                .flatten();
            // The body is read (up to the buffer size) before an upstream connection is
            // taken: a slow client costs a buffer, not a backend connection. To an HTTP/2
            // endpoint (gRPC) only what has come is taken, and the rest streams. Boxed: rare.
            let body = if http_body::Body::is_end_stream(&body) {
                RequestBody::Empty
            } else {
                let at_once =
                    route.backend.http2 || route.canary.as_deref().is_some_and(|c| c.backend.http2);
                let reading = RequestBody::read(
                    body,
                    policy
                        .and_then(|p| p.body_buffer)
                        .map_or(self.config.client_body_buffer_size, |n| n as usize),
                    snapshot
                        .server
                        .client_body_timeout
                        .unwrap_or(self.config.client_body_timeout),
                    policy.and_then(|p| p.body_limit),
                    at_once,
                );
                or_break!('forward, Box::pin(reading).await.map_err(upstream_error))
            };
            let timeouts = policy.and_then(|p| p.timeouts.as_ref());
            let connect_timeout = timeouts.and_then(|t| t.connect);
            // `service-upstream`: one try, as nginx's single ClusterIP upstream.
            let retry = !policy.is_some_and(|p| p.service_upstream);
            // The backend: a canary attached to the rule may take the request (header, then
            // cookie, then weight).
            // A sticky cookie that pins the request to the primary or to the canary outranks
            // the canary rules (ingress-nginx's `affinity-canary-behavior: sticky`).
            let affinity = policy.and_then(|p| p.affinity.as_deref());
            let (backend, affinity, namespace) = match route.canary.as_deref() {
                None => (&route.backend, affinity, &route.ingress.namespace),
                Some(c) => {
                    let primary = (&route.backend, affinity, &route.ingress.namespace);
                    let canary = (&c.backend, c.spec.affinity.as_deref(), &c.ingress.namespace);
                    let pinned =
                        |(backend, affinity, ns): (&Backend, Option<&Affinity>, &Arc<str>)| {
                            affinity.is_some_and(|a| sticky::pinned(a, ns, backend, &parts.headers))
                        };
                    // A backend without a ready endpoint has no balancer in ingress-nginx:
                    // a canary that has none takes nothing, and a primary that has none
                    // never hands its requests to the canary (its 503, or its
                    // default-backend, stands).
                    let to_canary = !pinned(primary)
                        && (pinned(canary) || c.spec.selects(&parts.headers, roll))
                        && has_ready(&snapshot, &c.backend)
                        && has_ready(&snapshot, &route.backend);
                    if to_canary {
                        outcome.labels = Some(&c.labels);
                        // The canary's own balancer: its upstream-hash-by, not the primary's.
                        hash = c.spec.hash_by.as_ref().map(|key| {
                            let vars = request_vars(conn, https, host_str, &path, &parts, client);
                            key.hash(&vars, client, &parts.headers)
                        });
                        canary
                    } else {
                        primary
                    }
                }
            };
            // The client's X-Forwarded-Prefix decided nothing above (nginx's `$http_` values
            // are the client's); the rewrite's replaces it upstream.
            if let Some(prefix) = prefix {
                parts.headers.insert(X_FORWARDED_PREFIX.clone(), prefix);
            }
            let sticky = affinity.map(|affinity| Sticky {
                affinity,
                salt: sticky::backend_key(namespace, backend),
                request_key: sticky::cookie(affinity, &parts.headers).map(|(key, _)| key),
            });
            let connected = self
                .connect_to_backend(
                    &snapshot,
                    (backend, conn.tls),
                    (client, connect_timeout, hash),
                    sticky.as_ref(),
                    &mut outcome,
                )
                .await;
            // `default-backend`: when the Service has no ready endpoint.
            let (connected, backend, fell_back) =
                match (connected, policy.and_then(|p| p.fallback.as_ref())) {
                    (
                        Err(ProxyError::NoEndpoints | ProxyError::BackendUnavailable),
                        Some(fallback),
                    ) => {
                        let choice = (client, connect_timeout, None);
                        let connecting = self.connect_to_backend(
                            &snapshot,
                            (fallback, conn.tls),
                            choice,
                            None,
                            &mut outcome,
                        );
                        (Box::pin(connecting).await, fallback, true)
                    }
                    (connected, _) => (connected, backend, false),
                };
            // As ingress-nginx's `custom-default-backend-` location: the fields of an error
            // page, with X-Code 503 (the route's path is kept).
            if fell_back {
                let fields = default_backend_fields(route, &parts);
                if set_owned.is_empty() {
                    set_owned = set.to_vec();
                }
                set_owned.retain(|(name, _)| !fields.iter().any(|(n, _)| n == name));
                set_owned.extend(fields);
            }
            // The client certificate's fields replace any the client sent.
            if let Some(mut fields) = outcome
                .extras
                .as_mut()
                .map(|e| std::mem::take(&mut e.cert_fields))
                .filter(|f| !f.is_empty())
            {
                if set_owned.is_empty() {
                    set_owned = set.to_vec();
                }
                set_owned.retain(|(name, _)| !fields.iter().any(|(n, _)| n == name));
                set_owned.append(&mut fields);
            }
            let fwd = Forwarding {
                conn,
                host: host.as_ref(),
                upstream_host: vhost.as_ref(),
                path: match &forward_path {
                    Cow::Owned(normal) => Some(normal),
                    Cow::Borrowed(_) => None,
                },
                rewritten: rewritten.as_deref(),
                set: if set_owned.is_empty() {
                    set
                } else {
                    &set_owned
                },
                request_id: generated.as_ref().map(headers::RequestId::as_bytes),
                upgrade,
                client: client_fwd.as_deref().map(|c| &c.2),
                full_forwarded_for: snapshot.client.full_forwarded_for,
                original_from: snapshot.client.original_from(),
            };
            // `proxy-next-upstream`: what a failed attempt may go on to another endpoint
            // with (boxed: rare; the first attempt is here).
            let next = policy
                .and_then(|p| p.next_upstream.as_ref())
                .unwrap_or(&NextUpstream::DEFAULT);
            // What another try needs (a macro: a closure holding these would weigh on every
            // request's future).
            macro_rules! retry_with {
                ($body:expr, $first:expr) => {
                    Retry {
                        snapshot: &snapshot,
                        backend,
                        choice: (client, connect_timeout, hash),
                        sticky: sticky.as_ref(),
                        next,
                        resendable: resendable(&parts.method, next),
                        parts: &parts,
                        fwd: &fwd,
                        body: $body,
                        timeouts,
                        tried: vec![$first],
                        started: start,
                    }
                };
            }
            let mut response = 'sent: {
                let (pooled, _pick) = match connected {
                    Ok(connected) => connected,
                    Err(e) if retry && goes_on(next, true, false, &Err(&e)) => {
                        let Some(first) = outcome.upstream else {
                            break 'forward Err(e);
                        };
                        let again = retry_with!(body, first);
                        let sent = self.next_upstream(again, Err(e), &mut outcome);
                        break 'sent or_break!('forward, Box::pin(sent).await);
                    }
                    Err(e) => break 'forward Err(e),
                };
                // The body again, for another endpoint: only when it may go again.
                let again = if retry && !upgrade && resendable(&parts.method, next) {
                    body.again()
                } else {
                    None
                };
                let mut exchange = pooled.prepare(&parts, body, &fwd);
                let mut read_timeout = timeouts.and_then(|t| t.read);
                if backend.http2 {
                    read_timeout = headers::grpc_deadline(&parts.headers, read_timeout);
                }
                if let Some(t) = timeouts {
                    exchange.set_timeouts(t.read, t.send);
                }
                // Sent, and its response head read, within the read timeout (504 past it). A
                // request that a reused connection could not take (the upstream had closed
                // it) goes once more on a new connection to the same target. A streamed body
                // applies the send, client body and read timeouts itself (a slow but
                // progressing upload is never cut). `_pick` counts as open load on its
                // endpoint (for lc and p2c) until the response head is in.
                let sent = if exchange.streams_body() {
                    Ok(Box::pin(exchange.send()).await)
                } else if let Some(read) = read_timeout {
                    // A route's own read timeout: a timer of its own (boxed: rare).
                    let sending = tokio::time::timeout(read, exchange.send());
                    Box::pin(sending).await.map_err(|_| Elapsed)
                } else {
                    self.deadlines.run(pin!(exchange.send())).await
                };
                let sent = match sent {
                    Ok(Ok(response)) => Ok(response),
                    // Boxed: rare, and its future would otherwise weigh on every request's.
                    Ok(Err(SendError::NotSent(resend, _))) => Box::pin(self.resend(resend)).await,
                    Ok(Err(e)) => Err(upstream_error(e)),
                    Err(Elapsed) => Err(ProxyError::Timeout),
                };
                passive(_pick.as_ref(), &sent.as_ref());
                drop(_pick);
                match (again, outcome.upstream) {
                    (Some(body), Some(first)) if goes_on(next, false, true, &sent.as_ref()) => {
                        let again = retry_with!(body, first);
                        let sent = self.next_upstream(again, sent, &mut outcome);
                        or_break!('forward, Box::pin(sent).await)
                    }
                    _ => or_break!('forward, sent),
                }
            };
            if let (Some(key), Some(s)) = (outcome.sticky_key.take(), &sticky) {
                let path = route.path.as_deref();
                outcome.set_cookie = sticky::set_cookie(s.affinity, &key, &s.salt, path, conn.tls);
            }
            outcome.upstream_status = Some(response.status().as_u16());
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            match client_upgrade {
                Some(client) if switching => match response.body_mut().take_upgraded() {
                    Some(upstream) => {
                        super::listener::tunnel(client, upstream, self.hold_connection());
                        // Only an extended CONNECT upgrades over HTTP/2.
                        if parts.version == Version::HTTP_2 {
                            websocket_accepted_over_h2(&mut response);
                        }
                    }
                    None => {
                        let e = ProxyError::Upstream("101 without a connection".into());
                        break 'forward Err(e);
                    }
                },
                _ if switching => {
                    break 'forward Err(ProxyError::Upstream(
                        "101 without an upgrade request".into(),
                    ));
                }
                _ => {}
            }
            Ok(response.map(ProxyBody::Upstream))
        };
        // `custom-http-errors`: a listed status is answered by the default backend (boxed:
        // rare). The response is never borrowed in this scope before it moves into the boxed
        // future: a borrowed local would keep its room in every request's future.
        let (response, intercepted) = {
            let response = match forwarded {
                Ok(response) => response,
                Err(e) => {
                    // The endpoint's failures (refused or reset connections, broken or
                    // wrong-protocol answers, timeouts) name the endpoint and the reason, as
                    // nginx's error log does; the client's own are for debugging.
                    match &e {
                        ProxyError::Connect(_) | ProxyError::Upstream(_) | ProxyError::Timeout => {
                            let upstream = outcome.upstream.map(|a| a.to_string());
                            warn!(upstream = upstream.as_deref().unwrap_or("-"), path = %parts.uri.path(), error = %e, "request to the endpoint failed");
                        }
                        _ => debug!(error = %e, "request failed"),
                    }
                    if ProxyError::is_grpc(&parts.headers) {
                        e.grpc_response()
                    } else {
                        e.response(outcome.json)
                    }
                }
            };
            let status = response.status().as_u16();
            let intercepted = outcome.intercept.take().filter(|route| {
                let codes = route
                    .policy
                    .as_ref()
                    .and_then(|p| p.custom_errors.as_deref());
                codes.is_some_and(|c| c.contains(&status))
            });
            (response, intercepted.map(|route| (route, status)))
        };
        let mut response = match intercepted {
            Some((route, status)) => {
                let asked = ErrorPage {
                    route,
                    status,
                    request_id: outcome.request_id.as_ref(),
                    json: outcome.json,
                };
                Box::pin(self.error_page(&snapshot, asked, &parts, conn, response)).await
            }
            None => response,
        };
        if let Some(cookie) = outcome.set_cookie.take() {
            response
                .headers_mut()
                .append(http::header::SET_COOKIE, cookie);
        }
        // `server-tokens`: nginx hides the endpoint's Server and sends its own, or none (the
        // default; `more_clear_headers Server` at the http level, before a route's snippets).
        // The endpoint's never got this far: reading its response left it out
        // (`codec::Reading::hide_server`), and Portico's own answers carry none.
        if snapshot.server.server_tokens {
            let server = headers::SERVER.clone();
            response.headers_mut().insert(SERVER, server);
        }
        let extras = outcome.extras.take().map(|e| *e).unwrap_or_default();
        if let Some((cookies, always)) = extras.auth_cookies
            && external::adds_to(response.status(), always)
        {
            for cookie in cookies {
                response
                    .headers_mut()
                    .append(http::header::SET_COOKIE, cookie);
            }
        }
        if let Some((cors, origin)) = extras.cors {
            cors.apply(origin, response.headers_mut());
        }
        // Replaces the endpoint's, as ingress-nginx's header filter does.
        if let Some(hsts) = snapshot.hsts.as_ref().filter(|_| outcome.hsts) {
            let field = http::header::STRICT_TRANSPORT_SECURITY;
            response.headers_mut().insert(field, hsts.clone());
        }
        if let Some((ops, expanded)) = outcome.response_ops.take() {
            apply_response_ops(ops, expanded.as_deref(), &mut response);
        }
        if let Some((rate, after)) = extras.bandwidth {
            let (parts, body) = response.into_parts();
            let body =
                ProxyBody::Throttled(Box::new(super::body::Throttled::new(body, rate, after)));
            response = Response::from_parts(parts, body);
        }
        if let Some(guard) = extras.limit {
            let (parts, body) = response.into_parts();
            let body = ProxyBody::Guarded(Box::new((body, guard)));
            response = Response::from_parts(parts, body);
        }
        let status = crate::metrics::StatusClass::of(response.status());
        match outcome.labels.take() {
            Some(labels) => self.metrics.route_request(
                &labels.counters,
                method,
                status,
                || crate::metrics::RequestLabels {
                    ingress: labels.ingress.clone(),
                    service: labels.service.clone(),
                    method,
                    status,
                },
                start.elapsed(),
            ),
            None => self.metrics.request(
                crate::metrics::RequestLabels {
                    ingress: "".into(),
                    service: "".into(),
                    method,
                    status,
                },
                start.elapsed(),
            ),
        }
        match logged.map(|b| *b) {
            Some((method, uri, host)) => {
                let record = AccessRecord {
                    start,
                    client: match outcome.client {
                        Some(ip) => SocketAddr::new(ip, conn.peer.port()),
                        None => conn.peer,
                    },
                    method,
                    host,
                    uri,
                    status: response.status().as_u16(),
                    upstream: outcome.upstream,
                    upstream_status: outcome.upstream_status,
                    request_id: outcome.request_id,
                };
                log_at_end(response, record)
            }
            None => response,
        }
    }

    /// A connection to the route's backend: a Service endpoint (by the sticky cookie, the
    /// request's hash, or the Service's scheduler), or an ExternalName; over TLS when the
    /// backend asks for it (`client_tls`: the request came over TLS, for `AUTO_HTTP`). The
    /// pick, if any, counts as open load on its endpoint until dropped; `outcome.upstream` is
    /// the endpoint tried, for another try (`next_upstream`) when this one fails.
    async fn connect_to_backend<'s>(
        &self,
        snapshot: &'s Snapshot,
        (backend, client_tls): (&Backend, bool),
        (client, connect_timeout, hash): (IpAddr, Option<Duration>, Option<u64>),
        sticky: Option<&Sticky<'_>>,
        outcome: &mut Outcome<'_>,
    ) -> Result<(Pooled, Option<Pick<'s>>), ProxyError> {
        let port = match &backend.upstream {
            Upstream::Service(id) => snapshot
                .services
                .get(*id)
                .ok_or(ProxyError::BackendUnavailable)?,
            Upstream::External { host, port } => {
                let key = Key {
                    target: Target::Name(host.clone(), *port),
                    tls: backend_tls(backend, client_tls),
                    http2: backend.http2,
                };
                return Ok((self.checkout(key, connect_timeout).await?, None));
            }
            Upstream::Unavailable => return Err(ProxyError::BackendUnavailable),
        };
        let (pick, key) = match (sticky, hash) {
            (Some(s), _) => sticky::pick(s.affinity, &s.salt, port, s.request_key, None),
            (None, Some(key)) => {
                crate::l4::scheduler::pick_hashed(port, key, None).map(|p| (p, None))
            }
            (None, None) => {
                let by = backend.balance.unwrap_or(port.scheduler);
                self.picker
                    .pick_by(port, by, client, None)
                    .map(|p| (p, None))
            }
        }
        .ok_or(ProxyError::NoEndpoints)?;
        outcome.sticky_key = key;
        let addr = pick.endpoint.addr;
        outcome.upstream = Some(addr);
        let key = Key {
            target: Target::Addr(addr),
            tls: backend_tls(backend, client_tls),
            http2: backend.http2,
        };
        match self.checkout(key, connect_timeout).await {
            Ok(pooled) => Ok((pooled, Some(pick))),
            Err(e) => {
                passive(Some(&pick), &Err(&e));
                Err(e)
            }
        }
    }

    /// `proxy-next-upstream`: a request whose attempt failed (`last`) goes on to endpoints not
    /// tried yet, while the route's conditions hold, within its tries and time; the last
    /// result stands when there is no other endpoint. A body that streams from the client
    /// goes once (after a failed connect it has not gone yet).
    async fn next_upstream(
        &self,
        mut r: Retry<'_, '_>,
        mut last: Result<Response<UpstreamBody>, ProxyError>,
        outcome: &mut Outcome<'_>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let Upstream::Service(id) = &r.backend.upstream else {
            return last;
        };
        let Some(port) = r.snapshot.services.get(*id) else {
            return last;
        };
        loop {
            let tries_left = r.next.tries == 0 || (r.tried.len() as u32) < r.next.tries;
            let in_time = r.next.within.is_none_or(|w| r.started.elapsed() < w);
            if !tries_left || !in_time {
                return last;
            }
            let Some((pick, key)) = self.next_pick(port, &r) else {
                return last;
            };
            drop(last);
            self.metrics.upstream_retry();
            let addr = pick.endpoint.addr;
            debug!(failed = ?r.tried.last(), next = %addr, "trying another endpoint");
            r.tried.push(addr);
            outcome.upstream = Some(addr);
            if key.is_some() {
                outcome.sticky_key = key;
            }
            let (_, connect_timeout, _) = r.choice;
            let key = Key {
                target: Target::Addr(addr),
                tls: backend_tls(r.backend, r.fwd.conn.tls),
                http2: r.backend.http2,
            };
            let pooled = match self.checkout(key, connect_timeout).await {
                Ok(pooled) => pooled,
                Err(e) => {
                    passive(Some(&pick), &Err(&e));
                    let goes = goes_on(r.next, true, false, &Err(&e));
                    last = Err(e);
                    if goes {
                        continue;
                    }
                    return last;
                }
            };
            // A copy of the body when it can go again; else the body itself, this once.
            let (body, more) = match r.body.again() {
                Some(copy) => (copy, true),
                None => (std::mem::replace(&mut r.body, RequestBody::Empty), false),
            };
            let mut exchange = pooled.prepare(r.parts, body, r.fwd);
            let mut read_timeout = r.timeouts.and_then(|t| t.read);
            if r.backend.http2 {
                read_timeout = headers::grpc_deadline(&r.parts.headers, read_timeout);
            }
            if let Some(t) = r.timeouts {
                exchange.set_timeouts(t.read, t.send);
            }
            let sent = if exchange.streams_body() {
                Ok(exchange.send().await)
            } else if let Some(read) = read_timeout {
                tokio::time::timeout(read, exchange.send())
                    .await
                    .map_err(|_| Elapsed)
            } else {
                self.deadlines.run(pin!(exchange.send())).await
            };
            last = match sent {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(SendError::NotSent(resend, _))) => self.resend(resend).await,
                Ok(Err(e)) => Err(upstream_error(e)),
                Err(Elapsed) => Err(ProxyError::Timeout),
            };
            passive(Some(&pick), &last.as_ref());
            drop(pick);
            if !(more && r.resendable && goes_on(r.next, false, true, &last.as_ref())) {
                return last;
            }
        }
    }

    /// The next endpoint for another try: one not tried yet, by the sticky session (with
    /// `session-cookie-change-on-failure`, or when the request brought no cookie), the
    /// request's hash, or the Service's scheduler, else any ready one left.
    fn next_pick<'p>(
        &self,
        port: &'p ServicePort,
        r: &Retry<'_, '_>,
    ) -> Option<(Pick<'p>, Option<[u8; 16]>)> {
        let last = r.tried.last().copied();
        if let Some(s) = r.sticky {
            if !sticky::may_retry(s.affinity, s.request_key) {
                return None;
            }
            let (pick, key) = sticky::pick(s.affinity, &s.salt, port, s.request_key, last)?;
            return (!r.tried.contains(&pick.endpoint.addr)).then_some((pick, key));
        }
        let (client, _, hash) = r.choice;
        let pick = match hash {
            Some(key) => crate::l4::scheduler::pick_hashed_except(port, key, &r.tried),
            None => {
                let by = r.backend.balance.unwrap_or(port.scheduler);
                self.picker
                    .pick_by(port, by, client, last)
                    .filter(|p| !r.tried.contains(&p.endpoint.addr))
            }
        };
        if let Some(pick) = pick {
            return Some((pick, None));
        }
        let left: Vec<_> = port
            .ready_endpoints()
            .iter()
            .filter(|e| !r.tried.contains(&e.addr))
            .collect();
        let endpoint = left.get(crate::l4::scheduler::random_below(left.len()))?;
        Some((Pick::new(endpoint), None))
    }

    /// The default backend's answer for a response whose status the route's
    /// `custom-http-errors` lists, asked as ingress-nginx asks it (its `@custom_…_<code>`
    /// location): `/` with the request's method and fields, no body, and X-Code, X-Format,
    /// X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port and
    /// X-Request-ID. Without a default backend `original` stands; a default backend that fails
    /// gives its own error (502, 504), as nginx's error location would.
    async fn error_page(
        &self,
        snapshot: &Snapshot,
        asked: ErrorPage<'_>,
        parts: &http::request::Parts,
        conn: &ConnHeaders,
        original: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let route = asked.route;
        let fallback = route.policy.as_deref().and_then(|p| p.fallback.as_ref());
        // The catch-all default backend stands in for ingress-nginx's own default backend,
        // for routes of its namespace only: another namespace's Service never gets this
        // request's fields.
        let catch_all = snapshot
            .routes
            .default_backend()
            .filter(|d| d.ingress.namespace == route.ingress.namespace)
            .map(|r| &r.backend);
        let backend = match fallback.or(catch_all) {
            Some(backend) => backend,
            None => return original,
        };
        drop(original);
        let mut outcome = Outcome::default();
        let choice = (conn.peer.ip(), None, None);
        let connected = self
            .connect_to_backend(snapshot, (backend, conn.tls), choice, None, &mut outcome)
            .await;
        let (pooled, _pick) = match connected {
            Ok(connected) => connected,
            Err(e) => return e.response(asked.json),
        };
        let set = error_page_fields(route, parts, asked.status, asked.request_id.cloned());
        let host = host_value(&parts.uri, parts.headers.get(HOST));
        let fwd = Forwarding {
            conn,
            host: host.as_ref(),
            upstream_host: None,
            path: None,
            rewritten: Some("/"),
            set: &set,
            request_id: None,
            upgrade: false,
            client: None,
            full_forwarded_for: snapshot.client.full_forwarded_for,
            original_from: snapshot.client.original_from(),
        };
        let exchange = pooled.prepare(parts, RequestBody::Empty, &fwd);
        let sent = match self.deadlines.run(pin!(exchange.send())).await {
            Ok(sent) => sent.map_err(upstream_error),
            Err(Elapsed) => Err(ProxyError::Timeout),
        };
        match sent {
            Ok(response) => response.map(ProxyBody::Upstream),
            Err(e) => e.response(asked.json),
        }
    }

    /// A connection for `key`; a failure is counted and mapped to 502 or 504.
    async fn checkout(
        &self,
        key: Key,
        connect_timeout: Option<Duration>,
    ) -> Result<Pooled, ProxyError> {
        let checked_out = self.upstreams.checkout_within(&key, connect_timeout).await;
        checked_out.map_err(|e| self.connect_failed(&key, e))
    }

    fn connect_failed(&self, target: &Key, e: ConnectError) -> ProxyError {
        if let ConnectError::Refused(_) = e {
            self.metrics.external_name_refused();
            return ProxyError::ExternalNameRefused;
        }
        self.metrics.upstream_connect_error();
        if let ConnectError::Tls(error) = &e {
            // nginx logs a failed upstream handshake at error level: the operator must learn
            // why the route answers 502 (a certificate that does not verify, an endpoint that
            // does not speak TLS).
            warn!(upstream = %target, %error, "TLS to the endpoint failed; the request gets 502");
        }
        match e {
            ConnectError::Timeout => ProxyError::Timeout,
            e => ProxyError::Connect(format!("{target}: {e}")),
        }
    }

    /// Sends a request again, on a new connection to the same target, within the response
    /// timeout (504 past it).
    async fn resend(&self, resend: Resend) -> Result<Response<UpstreamBody>, ProxyError> {
        let target = resend.key().clone();
        debug!(upstream = %target, "idle connection was closed; sending on a new one");
        let connected = self.upstreams.connect(target.clone()).await;
        let fresh = connected.map_err(|e| self.connect_failed(&target, e))?;
        match self.deadlines.run(pin!(resend.on(fresh).send())).await {
            Ok(sent) => sent.map_err(upstream_error),
            Err(Elapsed) => Err(ProxyError::Timeout),
        }
    }
}

/// An HTTP/2 extended CONNECT for a WebSocket (RFC 8441) made the HTTP/1.1 upgrade request
/// an endpoint expects (RFC 6455): GET, `Upgrade: websocket`, and a fresh `Sec-WebSocket-Key`
/// (HTTP/2 clients send none); `Sec-WebSocket-Version`, `-Protocol` and `-Extensions` pass.
#[cold]
fn websocket_over_h2(
    method: &mut http::Method,
    fields: &mut http::HeaderMap,
    extensions: &mut http::Extensions,
) {
    use base64::Engine;
    *method = http::Method::GET;
    extensions.remove::<hyper::ext::Protocol>();
    fields.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut nonce = [0u8; 16];
    let random = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&random, &mut nonce).is_err() {
        nonce = headers::RequestId::generate().as_bytes()[..16]
            .try_into()
            .unwrap_or_default();
    }
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    if let Ok(key) = HeaderValue::from_str(&key) {
        fields.insert(http::header::SEC_WEBSOCKET_KEY, key);
    }
}

/// The endpoint's 101 for a WebSocket over HTTP/2: a 200 for the client (RFC 8441 §5), without
/// the HTTP/1.1 handshake's fields.
#[cold]
fn websocket_accepted_over_h2(response: &mut Response<UpstreamBody>) {
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for name in [
        http::header::CONNECTION,
        http::header::UPGRADE,
        http::header::SEC_WEBSOCKET_ACCEPT,
    ] {
        headers.remove(name);
    }
}

/// The TLS settings a request to `backend` connects with (`client_tls`: it came over TLS).
fn backend_tls(
    backend: &Backend,
    client_tls: bool,
) -> Option<Arc<crate::snapshot::upstream_tls::UpstreamTls>> {
    let tls = backend.tls.as_ref()?;
    tls.for_client(client_tls).cloned()
}

/// Fields set on the request sent upstream (`None`: removed).
type SetFields = Vec<(HeaderName, Option<HeaderValue>)>;

/// Judges the client certificate of a request to a host with `auth-tls-secret` (none for
/// other hosts): `None` lets it go on, with the certificate's fields kept in `outcome` for
/// the request sent upstream; otherwise the answer it gets.
fn client_certificate<'s>(
    snapshot: &'s Snapshot,
    conn: &ConnHeaders,
    host: &str,
    outcome: &mut Outcome<'s>,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    let host = without_port(host);
    let ca = snapshot.client_auth.get(host)?;
    match certificate_fields(ca, conn, host) {
        Ok(fields) => {
            outcome.extras.get_or_insert_default().cert_fields = fields;
            None
        }
        Err(CertRefusal::Error(e)) => Some(Err(e)),
        Err(CertRefusal::Page(page)) => Some(Ok(redirect_to(StatusCode::FOUND, page))),
    }
}

/// Whether the host's `auth-tls-*` could not be honoured (every request refused).
fn host_denied(snapshot: &Snapshot, host: &str) -> bool {
    snapshot
        .client_auth
        .get(without_port(host))
        .is_some_and(|ca| ca.denied)
}

/// Why a request's client certificate does not do.
enum CertRefusal<'c> {
    /// This error (400, 403).
    Error(ProxyError),
    /// A 302 to `auth-tls-error-page`.
    Page(&'c str),
}

/// The client certificate of a request to a host with `auth-tls-secret`: the fields the
/// endpoint gets (`ssl-client-verify`, `-subject-dn`, `-issuer-dn`, and `ssl-client-cert`
/// when asked), or nginx's answer: 400 for a required certificate missing or one that fails
/// (a 302 to `auth-tls-error-page` when set), 403 when `auth-tls-match-cn` does not match. A
/// plain-HTTP request has no certificate.
fn certificate_fields<'c>(
    ca: &'c crate::snapshot::client_auth::ClientAuth,
    conn: &ConnHeaders,
    host: &str,
) -> Result<SetFields, CertRefusal<'c>> {
    use crate::snapshot::client_auth::{CertNames, Verification, Verify, escaped_pem};
    if ca.denied {
        return Err(CertRefusal::Error(ProxyError::Refused(
            StatusCode::FORBIDDEN,
        )));
    }
    // nginx: a host that verifies clients, asked on a connection negotiated for another
    // server name, is a 421 (a browser coalescing connections opens a new one).
    if let Some(sni) = conn.sni.as_deref().filter(|_| conn.tls)
        && ca.verify != Verify::Off
        && !sni.eq_ignore_ascii_case(host.strip_suffix('.').unwrap_or(host))
    {
        return Err(CertRefusal::Error(ProxyError::Misdirected));
    }
    let chain = conn.client_cert.as_deref().filter(|_| conn.tls);
    let verification = match ca.verify {
        Verify::Off => Verification::None,
        _ => ca.check(chain),
    };
    let refused = match (ca.verify, &verification) {
        (Verify::On, Verification::None) => Some("No required SSL certificate was sent"),
        (Verify::On | Verify::Optional, Verification::Failed(_)) => {
            Some("The SSL certificate error")
        }
        _ => None,
    };
    if let Some(why) = refused {
        debug!(peer = %conn.peer, ca = %ca.source, verify = %verification.value(), "client certificate refused");
        return Err(match &ca.error_page {
            Some(page) => CertRefusal::Page(page),
            None => CertRefusal::Error(ProxyError::BadRequest(why)),
        });
    }
    let leaf = match (&verification, chain.and_then(|c| c.first())) {
        (Verification::None, _) | (_, None) => None,
        (_, Some(leaf)) => Some(leaf),
    };
    let names = leaf.and_then(|l| CertNames::of(l));
    if let Some(re) = &ca.match_cn
        && !re.is_match(names.as_ref().map_or("", |n| n.subject.as_str()))
    {
        return Err(CertRefusal::Error(ProxyError::CertUnauthorized));
    }
    let text = |s: &str| HeaderValue::from_str(s).ok().filter(|_| !s.is_empty());
    let mut fields = vec![
        (
            HeaderName::from_static("ssl-client-verify"),
            text(&verification.value()),
        ),
        (
            HeaderName::from_static("ssl-client-subject-dn"),
            names.as_ref().and_then(|n| text(&n.subject)),
        ),
        (
            HeaderName::from_static("ssl-client-issuer-dn"),
            names.as_ref().and_then(|n| text(&n.issuer)),
        ),
    ];
    // nginx passes the certificate as it is, verified or not.
    let cert = HeaderName::from_static("ssl-client-cert");
    if ca.pass_certificate {
        fields.push((cert, leaf.and_then(|l| text(&escaped_pem(l)))));
    } else {
        fields.push((cert, None));
    }
    Ok(fields)
}

/// A request that failed on its connection: 502; timeouts 504 (upstream) or 408 (client).
fn upstream_error(e: SendError) -> ProxyError {
    match e {
        SendError::NotSent(_, e) | SendError::Failed(e) => ProxyError::Upstream(e.to_string()),
        SendError::TimedOut(why) => {
            debug!(why, "upstream timed out");
            ProxyError::Timeout
        }
        SendError::ClientTimedOut => ProxyError::ClientTimeout,
        SendError::Client(e) => ProxyError::ClientBody(e),
        SendError::TooLarge => ProxyError::PayloadTooLarge,
    }
}

/// The one host of a request: the target's authority (HTTP/2 `:authority`, or an
/// absolute-form target, whose authority replaces any Host field: RFC 9112 §3.2.2), else its
/// only Host field. 400 for two Host fields, a host that is not `host[:port]` (userinfo
/// included), an HTTP/2 `host` that disagrees with `:authority` (RFC 9113 §8.3.1), or an
/// HTTP/1.1 request without Host (RFC 9112 §3.2). `None`: HTTP/1.0 or HTTP/2 without a host.
fn request_host(
    req: &http::request::Parts,
    fields: &headers::RequestFields<'_>,
) -> Result<Option<HeaderValue>, ProxyError> {
    if fields.hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host"));
    }
    let version = req.version;
    if version == Version::HTTP_11 && fields.host.is_none() {
        return Err(ProxyError::BadRequest("no Host"));
    }
    let host = match req.uri.authority() {
        Some(authority) => {
            let authority = authority.as_str().as_bytes();
            let differs = fields
                .host
                .is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(authority));
            if version == Version::HTTP_2 && differs {
                return Err(ProxyError::BadRequest(":authority and Host differ"));
            }
            HeaderValue::from_bytes(authority).ok()
        }
        None => fields.host.cloned(),
    };
    match host {
        Some(h) if !headers::valid_host(h.as_bytes()) => {
            Err(ProxyError::BadRequest("invalid Host"))
        }
        host => Ok(host),
    }
}

/// The path routed by and forwarded (see `proxy::path`); 400 when it cannot be normalised.
/// `OPTIONS *` and authority-form targets have no path to normalise.
fn normalized_path(uri: &Uri) -> Result<Cow<'_, str>, ProxyError> {
    let path = uri.path();
    if path == "*" || path.is_empty() {
        return Ok(Cow::Borrowed(path));
    }
    super::path::normalize(path).map_err(|e| {
        debug!(error = %e, path, "path refused");
        ProxyError::BadRequest("invalid path")
    })
}

/// The Host of a request for the access log: the URI's authority or its Host field.
fn host_value(uri: &Uri, host_field: Option<&HeaderValue>) -> Option<HeaderValue> {
    match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => host_field.cloned(),
    }
}

/// A redirect (308 unless http-redirect-code) to the same host, path and query over HTTPS, with the HTTPS listener's port unless it
/// is 443. As ingress-nginx, a trailing '/' of the request URI is dropped (`/docs/` → `/docs`,
/// `/` → no path) unless `keep_slash` (`preserve-trailing-slash`).
fn redirect(
    (host, path, query): (&str, &str, Option<&str>),
    (https_port, keep_slash, code): (u16, bool, u16),
) -> Response<ProxyBody> {
    let name = crate::snapshot::host::without_port(host);
    let path = match (keep_slash, query) {
        (false, None) => path.strip_suffix('/').unwrap_or(path),
        _ => path,
    };
    let query = query.map_or(String::new(), |q| format!("?{q}"));
    let location = match https_port {
        443 => format!("https://{name}{path}{query}"),
        port => format!("https://{name}:{port}{path}{query}"),
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    redirect_to(status, &location)
}

/// A redirect with an empty body.
fn redirect_to(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

/// ingress-nginx's answer to a CORS preflight (the CORS fields are added with the route's).
/// The answer to an extended CONNECT for a protocol other than WebSocket.
#[cold]
fn not_implemented() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::NOT_IMPLEMENTED;
    response
}

fn preflight() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let plain = HeaderValue::from_static("text/plain charset=UTF-8");
    response.headers_mut().insert(CONTENT_TYPE, plain);
    response
}

/// The steps of a route's policy that come before the HTTPS redirect, in nginx's order: a
/// Content-Length over `proxy-body-size` (413, judged when the location is found), `app-root`
/// (302 for `/`, the server's rewrite phase), then the location's rewrite phase in template
/// order: a denied location's `return 503` (nothing else is rendered there), a CORS
/// `preflight`'s `return 204`, `permanent-redirect`/`temporal-redirect`'s `return`, a
/// rewrite to another URL. `Ok(None)`: go on.
fn policy_before_redirects(
    policy: &Policy,
    body: &Incoming,
    vars: &RequestVars<'_>,
    preflight: bool,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    if let Some(max) = policy.body_limit
        && http_body::Body::size_hint(body)
            .exact()
            .is_some_and(|n| n > max)
    {
        return Err(ProxyError::PayloadTooLarge);
    }
    if let Some(root) = &policy.app_root
        && vars.path == "/"
    {
        let location = format!("{}://{}{root}", vars.scheme, vars.http_host);
        return Ok(Some(redirect_to(StatusCode::FOUND, &location)));
    }
    if let Some(status) = policy.deny {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(ProxyError::Refused(status));
    }
    if preflight {
        return Ok(Some(self::preflight()));
    }
    if let Some(r) = &policy.redirect {
        let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        return Ok(Some(redirect_to(status, &r.url.expand(vars))));
    }
    if let Some(rw) = policy.rewrite.as_ref().filter(|rw| rw.redirect) {
        let location = rewrite_location(rw, vars);
        return Ok(Some(redirect_to(StatusCode::FOUND, &location)));
    }
    Ok(None)
}

/// The values of a route's response operations for one request (only when some use
/// variables).
fn expand(ops: &[ResponseOp], vars: &RequestVars<'_>) -> Expanded {
    ops.iter()
        .map(|op| match op {
            ResponseOp::Set { value, .. } | ResponseOp::Add { value, .. } => value.value(vars),
            ResponseOp::Clear { .. } => None,
        })
        .collect()
}

/// A number in `1..=total` for a canary's weight (ingress-nginx's `math.random(total)`).
fn roll(total: u32) -> u32 {
    crate::l4::scheduler::random_below(total as usize) as u32 + 1
}

/// The statuses nginx's `add_header` (without `always`) adds to.
const ADD_HEADER_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Applies a route's response operations, in order, to the response it gets (Portico's own
/// answers included, as nginx's header directives apply to its error pages).
fn apply_response_ops(
    ops: &[ResponseOp],
    expanded: Option<&[Option<HeaderValue>]>,
    response: &mut Response<ProxyBody>,
) {
    let status = response.status().as_u16();
    for (i, op) in ops.iter().enumerate() {
        let value = |v: &FieldValue| match expanded {
            Some(e) => e.get(i).cloned().flatten(),
            None => v.fixed.clone().flatten(),
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(HeaderValue::as_bytes);
        match op {
            ResponseOp::Set {
                name,
                value: v,
                when,
            } if when.matches(status, content_type) => match value(v) {
                Some(v) => drop(response.headers_mut().insert(&name.0, v)),
                None => drop(response.headers_mut().remove(&name.0)),
            },
            ResponseOp::Clear { pattern, when } if when.matches(status, content_type) => {
                match pattern.strip_suffix('*') {
                    Some(prefix) => {
                        let doomed: Vec<HeaderName> = response
                            .headers()
                            .keys()
                            .filter(|k| k.as_str().starts_with(prefix))
                            .cloned()
                            .collect();
                        for k in doomed {
                            response.headers_mut().remove(k);
                        }
                    }
                    None => drop(response.headers_mut().remove(&**pattern)),
                }
            }
            ResponseOp::Add {
                name,
                value: v,
                always,
            } if *always || ADD_HEADER_STATUSES.contains(&status) => {
                if let Some(v) = value(v) {
                    response.headers_mut().append(&name.0, v);
                }
            }
            _ => {}
        }
    }
}

/// The X-Forwarded-Prefix field (`x-forwarded-prefix`, sent with a rewrite).
static X_FORWARDED_PREFIX: http::HeaderName = http::HeaderName::from_static("x-forwarded-prefix");

/// nginx's `rewrite` of the whole URI, split at the first `?` of the target's own text: the
/// path, its own arguments, and the request's arguments that follow them (`&`-joined),
/// unless the target's text ends with `?`, which drops them. A `?` a variable or capture
/// produced stays in the path (escaped there, as nginx sends it).
fn split_target<'a>(
    rw: &Rewrite,
    (expanded, split): (&'a str, Option<usize>),
    vars: &RequestVars<'a>,
) -> (&'a str, Option<&'a str>, Option<&'a str>) {
    let keep = !rw.target.ends_with_question_mark();
    let (target, args) = match split {
        Some(at) => {
            let args = &expanded[at + 1..];
            let args = if keep {
                args
            } else {
                args.strip_suffix('?').unwrap_or(args)
            };
            (&expanded[..at], Some(args).filter(|a| !a.is_empty()))
        }
        None => (expanded, None),
    };
    let original = vars.query.filter(|q| keep && !q.is_empty());
    (target, args, original)
}

/// Appends `?args&original` (what is there of it), escaped.
fn push_query(out: &mut String, args: Option<&str>, original: Option<&str>) {
    let mut sep = '?';
    for part in [args, original].into_iter().flatten() {
        out.push(sep);
        escape_into(out, part, b"");
        sep = '&';
    }
}

/// A `rewrite-target` that is a URL: the Location of its 302.
fn rewrite_location(rw: &Rewrite, vars: &RequestVars<'_>) -> String {
    let (expanded, split) = rw.target.expand_split(vars);
    let (target, args, original) = split_target(rw, (&expanded, split), vars);
    let mut out = String::with_capacity(expanded.len() + original.map_or(0, str::len) + 2);
    escape_into(&mut out, target, b"?");
    push_query(&mut out, args, original);
    out
}

/// The path and query sent upstream for a rewrite: the target made absolute, escaped where
/// a request target may not hold a byte, and normalised again (dot segments, as every
/// forwarded path): 400 when it cannot be. One buffer, as a rewrite is on the request path.
fn rewrite_uri(rw: &Rewrite, vars: &RequestVars<'_>) -> Result<String, ProxyError> {
    let (expanded, split) = rw.target.expand_rewrite(vars);
    let (target, args, original) = split_target(rw, (&expanded, split), vars);
    let mut out = String::with_capacity(expanded.len() + original.map_or(0, str::len) + 3);
    if !target.starts_with('/') {
        out.push('/');
    }
    escape_into(&mut out, target, b"?#");
    match super::path::normalize(&out) {
        Ok(Cow::Borrowed(_)) => {}
        Ok(Cow::Owned(normal)) => out = normal,
        Err(_) => return Err(ProxyError::BadRequest("invalid rewritten path")),
    }
    push_query(&mut out, args, original);
    Ok(out)
}

/// Appends `s` to `out`, percent-encoding the bytes a request target or Location may not
/// carry as they are (controls, space, non-ASCII, and `"<>\\^`{|}`), and `also` (a path's
/// `?` and `#`), as nginx escapes a rewritten URI.
fn escape_into(out: &mut String, s: &str, also: &[u8]) {
    let unsafe_byte =
        |b: u8| !b.is_ascii_graphic() || b"\"<>\\^`{|}".contains(&b) || also.contains(&b);
    if !s.bytes().any(unsafe_byte) {
        out.push_str(s);
        return;
    }
    for &b in s.as_bytes() {
        if unsafe_byte(b) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            out.push(char::from(b));
        }
    }
}

/// Writes the access line when the response body ends (at once for local bodies).
fn log_at_end(response: Response<ProxyBody>, record: AccessRecord) -> Response<ProxyBody> {
    let (parts, body) = response.into_parts();
    let body = match body {
        ProxyBody::Upstream(inner) => ProxyBody::Logged(LoggedBody::new(inner, record)),
        other => {
            let bytes = http_body::Body::size_hint(&other).exact().unwrap_or(0);
            record.emit(bytes);
            other
        }
    };
    Response::from_parts(parts, body)
}

/// The client address, whether the request came over HTTPS, and the forwarding values of a
/// request whose peer the ConfigMap trusts to name them (`use-forwarded-headers` or
/// `enable-real-ip` with `proxy-real-ip-cidr`); `None` for every other request (the
/// connection's values stand).
#[inline]
fn client_forwarding(
    snapshot: &Snapshot,
    conn: &ConnHeaders,
    fields: &http::HeaderMap,
) -> Option<Box<(IpAddr, bool, ClientForwarding)>> {
    // Inlined up to here: without trusted peers (the default) a request pays one test. A
    // PROXY source is final: the fields the client wrote never name it.
    if !snapshot.client.real_ip || conn.proxied {
        return None;
    }
    trusted_forwarding(snapshot, conn, fields)
}

/// [`client_forwarding`] once the ConfigMap trusts some peers.
fn trusted_forwarding(
    snapshot: &Snapshot,
    conn: &ConnHeaders,
    fields: &http::HeaderMap,
) -> Option<Box<(IpAddr, bool, ClientForwarding)>> {
    let who = &*snapshot.client;
    let peer = conn.peer.ip();
    if !who.trusts(peer) {
        return None;
    }
    let listed = fields
        .get_all(&*who.header)
        .iter()
        .map(HeaderValue::as_bytes);
    let client = who.walk(peer, listed);
    let (mut https, mut port, mut host) = (conn.https, conn.port, None);
    if who.forwarded_headers {
        match fields
            .get(&headers::X_FORWARDED_PROTO)
            .map(HeaderValue::as_bytes)
        {
            Some(p) if p.eq_ignore_ascii_case(b"https") => https = true,
            Some(p) if p.eq_ignore_ascii_case(b"http") => https = false,
            _ => {}
        }
        if let Some(p) = fields
            .get(&headers::X_FORWARDED_PORT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u16>().ok())
        {
            port = p;
        }
        host = fields
            .get(&headers::X_FORWARDED_HOST)
            .filter(|v| headers::valid_host(v.as_bytes()))
            .cloned();
    }
    let last = if who.full_forwarded_for { peer } else { client };
    let tail = headers::forwarding_tail(last.to_canonical(), client, https, port);
    Some(Box::new((client, https, ClientForwarding { tail, host })))
}

pub(super) mod external;

/// What a request offers nginx-variable templates (no regex captures: the caller adds them
/// in regex mode). `https`: the scheme the client used as a trusted peer tells it.
fn request_vars<'a>(
    conn: &ConnHeaders,
    https: bool,
    host: &'a str,
    path: &'a str,
    parts: &'a http::request::Parts,
    client: IpAddr,
) -> RequestVars<'a> {
    RequestVars {
        scheme: if conn.tls { "https" } else { "http" },
        pass_scheme: if https { "https" } else { "http" },
        http_host: host,
        path,
        raw_path: parts.uri.path(),
        query: parts.uri.query(),
        captures: None,
        client: Some(client),
        headers: Some(&parts.headers),
    }
}

/// Whether `backend` has an endpoint to go to (an ExternalName always may).
fn has_ready(snapshot: &Snapshot, backend: &Backend) -> bool {
    match &backend.upstream {
        Upstream::Service(id) => snapshot
            .services
            .get(*id)
            .is_some_and(|port| !port.ready_endpoints().is_empty()),
        Upstream::External { .. } => true,
        Upstream::Unavailable => false,
    }
}

/// The fields an error page is asked with (ingress-nginx's `@custom_…_<code>` location):
/// X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name,
/// X-Service-Port and X-Request-ID (the request's, else a new one).
fn error_page_fields(
    route: &Route,
    parts: &http::request::Parts,
    status: u16,
    request_id: Option<HeaderValue>,
) -> [(HeaderName, Option<HeaderValue>); 8] {
    let text = |s: &str| HeaderValue::from_str(s).ok();
    let port = match &route.backend.port {
        PortRef::Number(n) => n.to_string(),
        PortRef::Name(name) => name.to_string(),
    };
    let request_id = request_id
        .or_else(|| parts.headers.get(&headers::X_REQUEST_ID).cloned())
        .unwrap_or_else(|| headers::RequestId::generate().to_value());
    [
        (X_CODE.clone(), Some(HeaderValue::from(status))),
        (
            X_FORMAT.clone(),
            parts.headers.get(http::header::ACCEPT).cloned(),
        ),
        (X_ORIGINAL_URI.clone(), text(&parts.uri.to_string())),
        (X_NAMESPACE.clone(), text(&route.ingress.namespace)),
        (X_INGRESS_NAME.clone(), text(&route.ingress.name)),
        (X_SERVICE_NAME.clone(), text(&route.backend.service)),
        (X_SERVICE_PORT.clone(), text(&port)),
        (headers::X_REQUEST_ID.clone(), Some(request_id)),
    ]
}

/// The fields ingress-nginx sets when `default-backend` serves a route whose Service has no
/// ready endpoint: an error page's, with X-Code 503 (X-Request-ID goes with every request).
fn default_backend_fields(
    route: &Route,
    parts: &http::request::Parts,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let mut fields = error_page_fields(route, parts, 503, None).to_vec();
    fields.retain(|(name, _)| name != headers::X_REQUEST_ID);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `handle` returns, without calling it.
    fn handle_future_size<'a, F: Future>(
        _: impl FnOnce(&'a Proxy, Request<Incoming>, &'a ConnHeaders) -> F,
    ) -> usize {
        size_of::<F>()
    }

    /// hyper moves each request's future into place, and every nested `async fn` is copied
    /// into its caller's: rare paths (connecting, sending again, request bodies, the access
    /// log) are boxed so that what every request carries stays small. It was 5.3 KiB; 2.5 KiB
    /// before `proxy-next-upstream`, whose other tries need the request's pieces (the
    /// forwarding fields, the body) kept across the first send (+330 bytes); external
    /// authentication's suspension point added 16; a pooled connection's key moved into its
    /// box with TLS to endpoints took 160 off (2800); a pick's load guard carries the start
    /// of an `ewma` sample (+16 per pick held: 2848); an upstream body's HTTP/2 stream (one
    /// boxed pointer per response held: 2888); the routing path beside the forwarded one
    /// (`%2F` decoded for routing: +24, 2912); the field X-Original-Forwarded-For comes from
    /// (`forwarded-for-header`: +16, 2928).
    #[test]
    fn a_request_future_stays_small() {
        let size = handle_future_size(Proxy::handle);
        assert!(size <= 2928, "Proxy::handle's future is {size} bytes");
    }
}
