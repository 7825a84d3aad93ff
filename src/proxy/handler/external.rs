//! External authentication at request time (`auth-url`, `global-auth-url`): the auth request
//! nginx's `auth_request` sends, its answer turned into a verdict, and a small bounded cache
//! of answers for `auth-cache-key`.
//!
//! The auth request is a GET (or `auth-method`) for the auth URL's path, with the client's
//! fields but no body, `Host` of the auth URL, and the fields ingress-nginx's auth location
//! sets: X-Original-URL, X-Original-Method, X-Sent-From, X-Real-IP, X-Forwarded-For,
//! X-Request-ID, X-Auth-Request-Redirect (and with `auth-method`, X-Original-URI and
//! X-Scheme); X-Forwarded-Proto is removed. It is asked before any rewrite: the auth service
//! sees the path the client asked for. It goes over the upstream pool's keep-alive
//! connections, within the auth's own connect and read timeouts.
//!
//! The answer: 2xx allows (the `auth-response-headers` are copied onto the request forwarded,
//! replacing the client's, and removed when the answer lacks them); 401 reaches the client
//! with the answer's WWW-Authenticate, or becomes a 302 to `auth-signin`; 403 reaches the
//! client; anything else, and an auth service that cannot be reached or answers late, is a
//! 500. The answer's Set-Cookie fields go on the client's response when it is a success or
//! redirect (nginx's `add_header`), or always with `auth-always-set-cookie`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, SET_COOKIE, TRANSFER_ENCODING, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::{debug, warn};

use super::super::Proxy;
use super::super::body::ProxyBody;
use super::super::errors::ProxyError;
use super::super::headers::ConnHeaders;
use super::super::upstream::{ClientForwarding, Forwarding, Key, RequestBody, SendError, Target};
use super::Outcome;
use crate::snapshot::Snapshot;
use crate::snapshot::external_auth::{AuthHost, ExternalAuth, valid_host};
use crate::snapshot::routes::RequestVars;

/// Slots of the answers cache (`auth-cache-key`).
pub const SLOTS: usize = 4096;

/// The most of an auth answer's body read (and thrown away) to keep its connection; a longer
/// body closes the connection instead.
const MAX_DISCARD: usize = 64 * 1024;

/// What the auth service said, as far as the request needs it.
#[derive(Clone, Debug)]
pub struct Answer {
    status: u16,
    /// `auth-response-headers`, for the upstream request (`None`: removed).
    copies: Vec<(HeaderName, Option<HeaderValue>)>,
    /// The answer's Set-Cookie fields.
    cookies: Vec<HeaderValue>,
    /// The answer's WWW-Authenticate fields (for a 401).
    challenges: Vec<HeaderValue>,
    /// Whether nginx's proxy cache would keep it (`None`: never; `Some(Some(d))`: for the
    /// lifetime its own fields give; `Some(None)`: for `auth-cache-duration`'s).
    cacheable: Option<Option<Duration>>,
}

/// The verdict on one request.
pub enum Verdict {
    /// Forward it, with these fields set on it and these cookies for its response.
    Allowed {
        /// Fields replacing the client's on the request forwarded.
        copies: Vec<(HeaderName, Option<HeaderValue>)>,
        /// Set-Cookie fields for the response, and whether on every status.
        cookies: Option<(Vec<HeaderValue>, bool)>,
        /// The request id made for a request without one (the endpoint gets it too).
        generated: Option<super::super::headers::RequestId>,
    },
    /// Answer the client with this.
    Answered(Response<ProxyBody>),
}

/// One cache slot: the tag of a key, when it expires, the answer.
type Slot = Option<([u8; 16], Instant, Arc<Answer>)>;

/// The answers cache every connection shares.
pub struct Answers {
    key: ring::hmac::Key,
    slots: Box<[Mutex<Slot>]>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").finish_non_exhaustive()
    }
}

impl Default for Answers {
    fn default() -> Self {
        Answers::new()
    }
}

impl Answers {
    /// An empty cache with a fresh key.
    pub fn new() -> Answers {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &t.to_le_bytes())
        });
        Answers {
            key,
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, tag: &[u8; 16]) -> &Mutex<Slot> {
        &self.slots[usize::from(u16::from_le_bytes([tag[0], tag[1]])) % SLOTS]
    }

    fn get(&self, tag: &[u8; 16]) -> Option<Arc<Answer>> {
        let slot = self.slot(tag).lock().ok()?;
        match &*slot {
            Some((t, expires, answer)) if t == tag && *expires > Instant::now() => {
                Some(Arc::clone(answer))
            }
            _ => None,
        }
    }

    fn put(&self, tag: [u8; 16], valid: Duration, answer: Arc<Answer>) {
        if let Ok(mut slot) = self.slot(&tag).lock() {
            *slot = Some((tag, Instant::now() + valid, answer));
        }
    }
}

/// A `std::hash::Hasher` over an HMAC: the cache key's parts fed as `Hash` writes them
/// (lengths and separators included, so two keys cannot run together).
struct Tagger(ring::hmac::Context);

impl std::hash::Hasher for Tagger {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// What the auth request is made from.
pub struct Ask<'a> {
    /// The route's configuration.
    pub auth: &'a ExternalAuth,
    /// The client's request.
    pub parts: &'a http::request::Parts,
    /// Its connection.
    pub conn: &'a ConnHeaders,
    /// The forwarding values a trusted peer named.
    pub client_fwd: Option<&'a ClientForwarding>,
    /// The client's address.
    pub client: IpAddr,
    /// `$pass_access_scheme`: https when the client came over TLS (or a trusted peer says so).
    pub https: bool,
    /// The request's variables (`$scheme` is the connection's).
    pub vars: RequestVars<'a>,
    /// The request's X-Request-ID (`None`: one is made, and given back in the verdict).
    pub request_id: Option<HeaderValue>,
    /// The client certificate's `ssl-client-*` fields (ingress-nginx sends them to the auth
    /// service too).
    pub cert_fields: Vec<(HeaderName, Option<HeaderValue>)>,
    /// The Host of the request (X-Forwarded-Host of the auth request).
    pub host: Option<&'a HeaderValue>,
    /// Whether the client wants JSON errors.
    pub json: bool,
}

impl Proxy {
    /// Asks the route's auth service about a request (or takes its cached answer).
    pub(super) async fn authenticate(&self, snapshot: &Snapshot, mut a: Ask<'_>) -> Verdict {
        let auth = a.auth;
        let mut generated = None;
        if a.request_id.is_none() {
            let id = super::super::headers::RequestId::generate();
            a.request_id = Some(id.to_value());
            generated = Some(id);
        }
        let tag = auth.spec.cache.as_ref().map(|cache| {
            let mut tagger = Tagger(ring::hmac::Context::with_key(&self.external.key));
            std::hash::Hash::hash(&*auth.scope, &mut tagger);
            std::hash::Hash::hash(a.vars.http_host, &mut tagger);
            cache
                .key
                .feed(&a.vars, a.client, &a.parts.headers, &mut tagger);
            let mut tag = [0u8; 16];
            tag.copy_from_slice(&tagger.0.sign().as_ref()[..16]);
            tag
        });
        let cached = tag.as_ref().and_then(|t| self.external.get(t));
        let answer = match cached {
            Some(answer) => answer,
            None => match self.ask(snapshot, &a).await {
                Ok(answer) => {
                    let answer = Arc::new(answer);
                    if let (Some(tag), Some(cache)) = (tag, auth.spec.cache.as_ref())
                        && let Some(valid) = answer.cacheable.and_then(|own| match own {
                            // The answer's own lifetime wins over auth-cache-duration.
                            Some(own) => Some(own),
                            None => cache.validity(answer.status),
                        })
                        && !valid.is_zero()
                    {
                        self.external.put(tag, valid, Arc::clone(&answer));
                    }
                    answer
                }
                Err(why) => {
                    warn!(auth_url = %auth.spec.url, %why, "external authentication failed; 500");
                    return Verdict::Answered(ProxyError::AuthError.response(a.json));
                }
            },
        };
        let mut verdict = verdict(&a, &answer);
        if let Verdict::Allowed { generated: g, .. } = &mut verdict {
            *g = generated;
        }
        verdict
    }

    /// Sends the auth request and reads its answer.
    async fn ask(&self, snapshot: &Snapshot, a: &Ask<'_>) -> Result<Answer, String> {
        let auth = a.auth;
        let host: String = match &auth.spec.parsed.host {
            AuthHost::Literal(h) => h.to_string(),
            AuthHost::Template(t) => {
                let h = t.expand(&a.vars).to_ascii_lowercase();
                if !valid_host(&h) {
                    return Err(format!("the host {h:?} is not a host name"));
                }
                h
            }
        };
        let path = auth.spec.parsed.path.expand(&a.vars);
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("the path {path:?} is not a request target"));
        }
        let host_field = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let host_value = HeaderValue::from_str(&host_field).map_err(|e| e.to_string())?;
        // Where it goes: a cluster Service, a host Portico serves, or the host by DNS.
        let connect_timeout = Some(auth.connect_timeout);
        let mut outcome = Outcome::default();
        let choice = (a.client, connect_timeout, None);
        let served = || {
            let only_path = path.split('?').next().unwrap_or("/");
            snapshot
                .routes
                .route(&host, only_path)
                .filter(|r| r.host.is_some())
        };
        let (pooled, _pick) = if let Some(backend) = &auth.service {
            let to = (backend, auth.spec.parsed.tls);
            self.connect_to_backend(snapshot, to, choice, None, &mut outcome)
                .await
                .map_err(|e| format!("the auth Service {}: {e}", backend.service))?
        } else if let Some(route) = served() {
            // Another tenant's route is asked only when it guards nothing (what anyone on the
            // internet may ask it); never around its access lists, auth or limits.
            let ours = auth
                .namespace
                .as_deref()
                .is_none_or(|ns| *route.ingress.namespace == *ns);
            let open = !route.policy.as_deref().is_some_and(|p| p.guards_access())
                && snapshot.client_auth.get(&host).is_none();
            if !ours && !open {
                return Err(format!(
                    "{host}{path} is served by {}/{}, another namespace's guarded route: not asked around its guard",
                    route.ingress.namespace, route.ingress.name
                ));
            }
            let backend = (&route.backend, auth.spec.parsed.tls);
            self.connect_to_backend(snapshot, backend, choice, None, &mut outcome)
                .await
                .map_err(|e| format!("the backend of {host}: {e}"))?
        } else {
            let tls = auth.spec.parsed.tls;
            let key = Key {
                target: Target::Name(host.as_str().into(), auth.spec.parsed.port),
                tls: tls.then(|| Arc::new(crate::snapshot::external_auth::auth_tls(&host))),
                http2: false,
            };
            let pooled = self.checkout(key.clone(), connect_timeout).await;
            (pooled.map_err(|e| format!("{key}: {e}"))?, None)
        };
        // The auth request's head: the client's fields, no body.
        let mut request = Request::new(());
        *request.method_mut() = auth.spec.method.clone().unwrap_or(Method::GET);
        // The client's version: an HTTP/2 request's Cookie fields are joined as upstream.
        *request.version_mut() = a.parts.version;
        *request.headers_mut() = a.parts.headers.clone();
        request.headers_mut().remove(CONTENT_LENGTH);
        request.headers_mut().remove(TRANSFER_ENCODING);
        let (sub, ()) = request.into_parts();
        let set = auth_fields(a);
        let fwd = Forwarding {
            conn: a.conn,
            host: a.host,
            upstream_host: Some(&host_value),
            path: None,
            rewritten: Some(&path),
            set: &set,
            request_id: None,
            upgrade: false,
            client: a.client_fwd,
            full_forwarded_for: snapshot.client.full_forwarded_for,
            original_from: snapshot.client.original_from(),
        };
        let exchange = pooled
            .prepare(&sub, RequestBody::Empty, &fwd)
            .keeping_server();
        let read = auth.read_timeout;
        let sent = match tokio::time::timeout(read, exchange.send()).await {
            Err(_) => return Err(format!("no answer within {read:?}")),
            Ok(Ok(response)) => response,
            Ok(Err(SendError::NotSent(resend, _))) => self
                .resend(resend)
                .await
                .map_err(|e| format!("sending again: {e}"))?,
            Ok(Err(e)) => return Err(format!("{e:?}")),
        };
        let (head, mut body) = sent.into_parts();
        let status = head.status.as_u16();
        debug!(auth_url = %auth.spec.url, status, "auth answer");
        // The body is read and dropped (bounded), so the connection goes back to the pool.
        let discard = async {
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > MAX_DISCARD {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(read, discard).await;
        let headers = &head.headers;
        let copies = if (200..300).contains(&status) {
            auth.spec
                .response_headers
                .iter()
                .map(|name| (name.0.clone(), joined(headers, &name.0)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Answer {
            cacheable: cacheable(headers),
            status,
            copies,
            cookies: headers.get_all(SET_COOKIE).iter().cloned().collect(),
            challenges: headers.get_all(WWW_AUTHENTICATE).iter().cloned().collect(),
        })
    }
}

/// Whether nginx's `proxy_cache` keeps an answer, and for how long by its own fields: never
/// one with Set-Cookie, `Vary: *`, or `Cache-Control` private, no-cache or no-store;
/// `X-Accel-Expires`, then `Cache-Control: max-age` (or `s-maxage`), give its lifetime over
/// `proxy_cache_valid`'s (`auth-cache-duration`); 0 is not kept.
fn cacheable(headers: &HeaderMap) -> Option<Option<Duration>> {
    if headers.contains_key(SET_COOKIE) {
        return None;
    }
    let text = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
            .to_ascii_lowercase()
    };
    if text("vary").split(',').any(|v| v.trim() == "*") {
        return None;
    }
    if let Some(accel) = headers.get("x-accel-expires").and_then(|v| v.to_str().ok()) {
        if let Ok(seconds) = accel.trim().parse::<u64>() {
            return Some(Some(Duration::from_secs(seconds)));
        }
        if accel.trim().starts_with('@') {
            // An absolute time: not worth a clock here; not kept.
            return None;
        }
    }
    let control = text("cache-control");
    let mut max_age = None;
    for directive in control.split(',').map(str::trim) {
        match directive {
            "private" | "no-cache" | "no-store" => return None,
            _ => {
                let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
                if matches!(name.trim(), "max-age" | "s-maxage") {
                    match value.trim().trim_matches('"').parse::<u64>() {
                        Ok(seconds) => max_age = Some(Duration::from_secs(seconds)),
                        Err(_) => return None,
                    }
                }
            }
        }
    }
    Some(max_age)
}

/// A field's values joined with ", " (nginx's `$upstream_http_` of a repeated field).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for v in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&out).ok()
}

/// The fields ingress-nginx's auth location sets on the auth request.
fn auth_fields(a: &Ask<'_>) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let text = |s: &str| HeaderValue::from_str(s).ok();
    let mut request_uri = String::new();
    crate::snapshot::routes::UrlVar::RequestUri.push(&a.vars, &mut request_uri);
    let original_url = format!("{}://{}{}", a.vars.scheme, a.vars.http_host, request_uri);
    let redirect = match &a.auth.spec.request_redirect {
        Some(t) => t.expand(&a.vars),
        None => request_uri.clone(),
    };
    let mut set = vec![
        (
            HeaderName::from_static("x-original-url"),
            text(&original_url),
        ),
        (
            HeaderName::from_static("x-original-method"),
            text(a.parts.method.as_str()),
        ),
        (
            HeaderName::from_static("x-sent-from"),
            Some(HeaderValue::from_static("nginx-ingress-controller")),
        ),
        (
            HeaderName::from_static("x-request-id"),
            a.request_id.clone(),
        ),
        (
            HeaderName::from_static("x-auth-request-redirect"),
            text(&redirect),
        ),
        (HeaderName::from_static("x-forwarded-proto"), None),
    ];
    set.extend(a.cert_fields.iter().cloned());
    if a.auth.spec.method.is_some() {
        set.push((
            HeaderName::from_static("x-original-uri"),
            text(&request_uri),
        ));
        let scheme = if a.https { "https" } else { "http" };
        set.push((
            HeaderName::from_static("x-scheme"),
            Some(HeaderValue::from_static(scheme)),
        ));
    }
    set
}

/// The statuses nginx's `add_header` (without `always`) adds to.
const ADD_HEADER_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Whether `add_header` would add a field to a response of this status.
pub fn adds_to(status: StatusCode, always: bool) -> bool {
    always || ADD_HEADER_STATUSES.contains(&status.as_u16())
}

/// What an answer means for the request.
fn verdict(a: &Ask<'_>, answer: &Answer) -> Verdict {
    let auth = a.auth;
    let cookies = |response: &mut Response<ProxyBody>| {
        if adds_to(response.status(), auth.spec.always_set_cookie) {
            for c in &answer.cookies {
                response.headers_mut().append(SET_COOKIE, c.clone());
            }
        }
    };
    match answer.status {
        200..=299 => Verdict::Allowed {
            copies: answer.copies.clone(),
            cookies: (!answer.cookies.is_empty())
                .then(|| (answer.cookies.clone(), auth.spec.always_set_cookie)),
            generated: None,
        },
        401 => {
            let mut response = match &auth.spec.signin {
                Some(signin) => {
                    // `$pass_access_scheme`: the scheme the client used, as a trusted peer
                    // tells it.
                    let vars = RequestVars {
                        scheme: if a.https { "https" } else { "http" },
                        ..a.vars
                    };
                    let location = signin.expand(&vars);
                    match HeaderValue::from_str(&location) {
                        Ok(location) => {
                            let mut r = Response::new(ProxyBody::empty());
                            *r.status_mut() = StatusCode::FOUND;
                            r.headers_mut().insert(http::header::LOCATION, location);
                            r
                        }
                        Err(_) => ProxyError::AuthError.response(a.json),
                    }
                }
                None => {
                    let mut r = ProxyError::AuthDenied(StatusCode::UNAUTHORIZED).response(a.json);
                    for c in &answer.challenges {
                        r.headers_mut().append(WWW_AUTHENTICATE, c.clone());
                    }
                    r
                }
            };
            cookies(&mut response);
            Verdict::Answered(response)
        }
        403 => {
            let mut response = ProxyError::AuthDenied(StatusCode::FORBIDDEN).response(a.json);
            cookies(&mut response);
            Verdict::Answered(response)
        }
        other => {
            warn!(auth_url = %auth.spec.url, status = other, "the auth service answered neither 2xx, 401 nor 403; 500");
            let mut response = ProxyError::AuthError.response(a.json);
            cookies(&mut response);
            Verdict::Answered(response)
        }
    }
}

#[cfg(test)]
mod tests;
