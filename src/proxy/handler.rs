//! One request: route it by the snapshot, redirect to HTTPS, pick an endpoint, forward, and
//! turn failures into responses in one place.

use std::net::SocketAddr;
use std::time::Instant;

use http::header::{HOST, LOCATION, SERVER};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tracing::debug;

use super::Proxy;
use super::access::{AccessRecord, LoggedBody};
use super::body::{ProxyBody, UpstreamBody};
use super::errors::{ProxyError, wants_json};
use super::headers::{self, ConnHeaders};
use crate::snapshot::Snapshot;
use crate::snapshot::routes::{Route, RouteLabels, Upstream};

/// What is learned about a request on its way, for the access log and metrics.
#[derive(Debug, Default)]
struct Outcome {
    labels: Option<RouteLabels>,
    upstream: Option<SocketAddr>,
    upstream_status: Option<u16>,
    request_id: Option<HeaderValue>,
}

/// The head of a request, kept to send it again after a connect failure.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

// === impl Proxy ===

impl Proxy {
    /// Handles one request from a client connection.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnHeaders) -> Response<ProxyBody> {
        let start = Instant::now();
        let json = wants_json(req.headers());
        let logged = self
            .config
            .access_log
            .then(|| (req.method().clone(), req.uri().clone(), host_value(&req)));
        let method = crate::metrics::MethodClass::of(req.method());
        let snapshot = self.snapshot.load_full();
        let mut outcome = Outcome::default();
        let mut response = match self.forward(&snapshot, req, conn, &mut outcome).await {
            Ok(response) => response,
            Err(e) => {
                debug!(error = %e, "request failed");
                e.response(json)
            }
        };
        response
            .headers_mut()
            .entry(SERVER)
            .or_insert_with(|| headers::SERVER.clone());
        let labels = outcome.labels.take();
        self.metrics.request(
            crate::metrics::RequestLabels {
                ingress: labels
                    .as_ref()
                    .map_or_else(|| "".into(), |l| l.ingress.clone()),
                service: labels
                    .as_ref()
                    .map_or_else(|| "".into(), |l| l.service.clone()),
                method,
                status: crate::metrics::StatusClass::of(response.status()),
            },
            start.elapsed(),
        );
        match logged {
            Some((method, uri, host)) => {
                let record = AccessRecord {
                    start,
                    client: conn.peer,
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

    async fn forward(
        &self,
        snapshot: &Snapshot,
        mut req: Request<Incoming>,
        conn: &ConnHeaders,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let host = host_value(&req);
        let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let route = snapshot
            .routes
            .route(host_str, req.uri().path())
            .ok_or(ProxyError::NoRoute)?;
        outcome.labels = Some(route.labels.clone());
        if !conn.tls && route.ssl_redirect {
            return Ok(redirect(host_str, req.uri(), self.config.https_port));
        }
        let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
        prepare_request(&mut req, conn, host.as_ref(), upgrade);
        outcome.request_id = req.headers().get(&headers::X_REQUEST_ID).cloned();
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut response = self
            .send_to_backend(snapshot, route, req, conn, outcome)
            .await?;
        outcome.upstream_status = Some(response.status().as_u16());
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match client_upgrade {
            Some(client) if switching => {
                super::listener::tunnel(client, hyper::upgrade::on(&mut response))
            }
            _ if switching => {
                return Err(ProxyError::Upstream(
                    "101 without an upgrade request".into(),
                ));
            }
            _ => {}
        }
        headers::remove_hop_by_hop(response.headers_mut(), switching);
        Ok(response.map(ProxyBody::Upstream))
    }

    /// Sends to the route's backend: a Service endpoint (retried once on another ready
    /// endpoint when connecting fails) or an ExternalName.
    async fn send_to_backend(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        req: Request<Incoming>,
        conn: &ConnHeaders,
        outcome: &mut Outcome,
    ) -> Result<Response<Incoming>, ProxyError> {
        let port = match &route.backend.upstream {
            Upstream::Service(id) => snapshot
                .services
                .get(*id)
                .ok_or(ProxyError::BackendUnavailable)?,
            Upstream::External { host, port } => {
                let authority = Authority::try_from(format!("{host}:{port}"))
                    .map_err(|_| ProxyError::BackendUnavailable)?;
                return self.send(req, authority, None).await.map_err(|(e, _)| e);
            }
            Upstream::Unavailable => return Err(ProxyError::BackendUnavailable),
        };
        let client = conn.peer.ip();
        // Each pick counts as open load on its endpoint (for lc and p2c) until the response
        // headers are in.
        let first = self
            .picker
            .pick(port, client, None)
            .ok_or(ProxyError::NoEndpoints)?;
        let first_addr = first.endpoint.addr;
        outcome.upstream = Some(first_addr);
        let retry = port.ready_endpoints().len() > 1;
        let head = retry.then(|| Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        });
        let (error, body) = match self
            .send(req, authority_of(first_addr), head.as_ref())
            .await
        {
            Ok(response) => return Ok(response),
            Err(failed) => failed,
        };
        drop(first);
        let (Some(head), Some(body), ProxyError::Connect(_)) = (head, body, &error) else {
            return Err(error);
        };
        let second = self.picker.pick(port, client, Some(first_addr));
        let Some(second) = second.filter(|p| p.endpoint.addr != first_addr) else {
            return Err(error);
        };
        self.metrics.upstream_retry();
        let next = second.endpoint.addr;
        debug!(failed = %first_addr, %next, "connect failed; retrying on another endpoint");
        outcome.upstream = Some(next);
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.headers_mut() = head.headers;
        self.send(req, authority_of(next), None)
            .await
            .map_err(|(e, _)| e)
    }

    /// Sends a request to one upstream. On a connect failure the body comes back (when
    /// `replay` is set and nothing was read from it), so the request can go elsewhere.
    async fn send(
        &self,
        req: Request<Incoming>,
        authority: Authority,
        replay: Option<&Head>,
    ) -> Result<Response<Incoming>, (ProxyError, Option<Incoming>)> {
        let (mut parts, body) = req.into_parts();
        parts.uri = upstream_uri(authority, parts.uri.path_and_query());
        parts.version = Version::HTTP_11;
        let (body, give_back) = match replay {
            Some(_) => {
                let (body, rx) = UpstreamBody::returnable(body);
                (body, Some(rx))
            }
            None => (UpstreamBody::new(body), None),
        };
        let sent = tokio::time::timeout(
            self.config.response_timeout,
            self.client.request(Request::from_parts(parts, body)),
        );
        match sent.await {
            Ok(Ok(response)) => Ok(response),
            Err(_) => Err((ProxyError::Timeout, None)),
            Ok(Err(e)) if e.is_connect() => {
                self.metrics.upstream_connect_error();
                let body = give_back.and_then(|mut rx| rx.try_recv().ok());
                Err((connect_error(&e), body))
            }
            Ok(Err(e)) => Err((ProxyError::Upstream(e.to_string()), None)),
        }
    }
}

/// A connect failure: 504 when it timed out, 502 otherwise.
fn connect_error(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ProxyError::Timeout;
        }
        source = s.source();
    }
    ProxyError::Connect(format!("{e:?}"))
}

/// The Host of a request: the URI's authority (HTTP/2, absolute-form) or the Host header.
fn host_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(HOST).cloned(),
    }
}

/// Rewrites the request head for the upstream: hop-by-hop headers out, Host kept (or set
/// from `:authority`), forwarding headers and a request id in.
fn prepare_request(
    req: &mut Request<Incoming>,
    conn: &ConnHeaders,
    host: Option<&HeaderValue>,
    upgrade: bool,
) {
    let headers = req.headers_mut();
    headers::remove_hop_by_hop(headers, upgrade);
    if let Some(host) = host
        && !headers.contains_key(HOST)
    {
        headers.insert(HOST, host.clone());
    }
    headers::set_forwarded(headers, conn, host);
    headers::request_id(headers);
}

fn authority_of(addr: SocketAddr) -> Authority {
    // `ip:port` and `[v6]:port` are always valid authorities.
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("invalid"))
}

fn upstream_uri(authority: Authority, path: Option<&PathAndQuery>) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        path.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_default()
}

/// 308 to the same host and path over HTTPS.
fn redirect(host: &str, uri: &Uri, https_port: u16) -> Response<ProxyBody> {
    let name = match host.rsplit_once(':') {
        Some((h, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{name}{path}"),
        port => format!("https://{name}:{port}{path}"),
    };
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
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
