//! One request: route it by the snapshot, redirect to HTTPS, pick an endpoint, forward, and
//! turn failures into responses in one place.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::Instant;

use http::header::{HOST, LOCATION, SERVER};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tracing::debug;

use super::Proxy;
use super::access::{AccessRecord, LoggedBody};
use super::body::ProxyBody;
use super::deadline::Elapsed;
use super::errors::ProxyError;
use super::headers::{self, ConnHeaders};
use super::upstream::{ConnectError, Forwarding, Pooled, Resend, SendError, Target, UpstreamBody};
use crate::l4::Pick;
use crate::snapshot::Snapshot;
use crate::snapshot::routes::{Route, RouteLabels, Upstream};

/// What is learned about a request on its way, for the access log and metrics.
#[derive(Debug, Default)]
struct Outcome<'s> {
    labels: Option<&'s RouteLabels>,
    upstream: Option<SocketAddr>,
    upstream_status: Option<u16>,
    request_id: Option<HeaderValue>,
    /// Error bodies in JSON (the request's Accept asks for it).
    json: bool,
}

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
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnHeaders,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        // Boxed: only with the access log on, and kept small in every request's future.
        let logged = self.config.access_log.then(|| {
            let host = host_value(req.uri(), req.headers().get(HOST));
            Box::new((req.method().clone(), req.uri().clone(), host))
        });
        let method = crate::metrics::MethodClass::of(req.method());
        let snapshot = self.snapshot.load_full();
        let mut outcome = Outcome::default();
        // Forwarding, written out here rather than in an `async fn` of its own: each level of
        // nested future copies the request in and the response out.
        let forwarded: Result<Response<ProxyBody>, ProxyError> = 'forward: {
            let fields = headers::RequestFields::of(req.headers());
            outcome.json = fields.wants_json;
            let host = host_value(req.uri(), fields.host);
            let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
            let route = snapshot.routes.route(host_str, req.uri().path());
            let route = or_break!('forward, route.ok_or(ProxyError::NoRoute));
            outcome.labels = Some(&route.labels);
            if !conn.tls && route.ssl_redirect {
                break 'forward Ok(redirect(host_str, req.uri(), self.config.https_port));
            }
            let upgrade = req.version() == Version::HTTP_11 && fields.upgrade;
            let generated = fields
                .request_id
                .is_none()
                .then(headers::RequestId::generate);
            if self.config.access_log {
                outcome.request_id = match &generated {
                    Some(id) => Some(id.to_value()),
                    None => fields.request_id.cloned(),
                };
            }
            let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
            let connected = self
                .connect_to_backend(&snapshot, route, conn.peer.ip(), &mut outcome)
                .await;
            let (pooled, _pick) = or_break!('forward, connected);
            let fwd = Forwarding {
                conn,
                host: host.as_ref(),
                request_id: generated.as_ref().map(headers::RequestId::as_bytes),
                upgrade,
            };
            let exchange = pooled.prepare(req, &fwd);
            // Sent, and its response head read, within the response timeout (504 past it). A
            // request that a reused connection could not take (the upstream had closed it) goes
            // once more on a new connection to the same target. `_pick` counts as open load on
            // its endpoint (for lc and p2c) until the response head is in.
            let mut response = match self.deadlines.run(pin!(exchange.send())).await {
                Ok(Ok(response)) => response,
                // Boxed: rare, and its future would otherwise weigh on every request's.
                Ok(Err(SendError::NotSent(resend, _))) => {
                    or_break!('forward, Box::pin(self.resend(resend)).await)
                }
                Ok(Err(e)) => break 'forward Err(upstream_error(e)),
                Err(Elapsed) => break 'forward Err(ProxyError::Timeout),
            };
            drop(_pick);
            outcome.upstream_status = Some(response.status().as_u16());
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            match client_upgrade {
                Some(client) if switching => match response.body_mut().take_upgraded() {
                    Some(upstream) => {
                        super::listener::tunnel(client, upstream, self.hold_connection());
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
        let mut response = match forwarded {
            Ok(response) => response,
            Err(e) => {
                debug!(error = %e, "request failed");
                e.response(outcome.json)
            }
        };
        response
            .headers_mut()
            .entry(SERVER)
            .or_insert_with(|| headers::SERVER.clone());
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

    /// A connection to the route's backend: a Service endpoint (another ready endpoint is
    /// tried when connecting fails) or an ExternalName. The pick, if any, counts as open load
    /// on its endpoint until dropped.
    async fn connect_to_backend<'s>(
        &self,
        snapshot: &'s Snapshot,
        route: &Route,
        client: IpAddr,
        outcome: &mut Outcome<'_>,
    ) -> Result<(Pooled, Option<Pick<'s>>), ProxyError> {
        let port = match &route.backend.upstream {
            Upstream::Service(id) => snapshot
                .services
                .get(*id)
                .ok_or(ProxyError::BackendUnavailable)?,
            Upstream::External { host, port } => {
                let target = Target::Name(host.clone(), *port);
                return Ok((self.checkout(&target).await?, None));
            }
            Upstream::Unavailable => return Err(ProxyError::BackendUnavailable),
        };
        let first = self
            .picker
            .pick(port, client, None)
            .ok_or(ProxyError::NoEndpoints)?;
        let first_addr = first.endpoint.addr;
        outcome.upstream = Some(first_addr);
        match self.checkout(&Target::Addr(first_addr)).await {
            Ok(pooled) => Ok((pooled, Some(first))),
            Err(error) => {
                drop(first);
                let second = self.picker.pick(port, client, Some(first_addr));
                let Some(second) = second.filter(|p| p.endpoint.addr != first_addr) else {
                    return Err(error);
                };
                self.metrics.upstream_retry();
                let next = second.endpoint.addr;
                debug!(failed = %first_addr, %next, "connect failed; trying another endpoint");
                outcome.upstream = Some(next);
                Ok((self.checkout(&Target::Addr(next)).await?, Some(second)))
            }
        }
    }

    /// A connection to `target`; a failure is counted and mapped to 502 or 504.
    async fn checkout(&self, target: &Target) -> Result<Pooled, ProxyError> {
        let checked_out = self.upstreams.checkout(target).await;
        checked_out.map_err(|e| self.connect_failed(target, e))
    }

    fn connect_failed(&self, target: &Target, e: ConnectError) -> ProxyError {
        if let ConnectError::Refused(_) = e {
            self.metrics.external_name_refused();
            return ProxyError::ExternalNameRefused;
        }
        self.metrics.upstream_connect_error();
        match e {
            ConnectError::Timeout => ProxyError::Timeout,
            e => ProxyError::Connect(format!("{target}: {e}")),
        }
    }

    /// Sends a request again, on a new connection to the same target, within the response
    /// timeout (504 past it).
    async fn resend(&self, resend: Resend) -> Result<Response<UpstreamBody>, ProxyError> {
        let target = resend.target().clone();
        debug!(upstream = %target, "idle connection was closed; sending on a new one");
        let connected = self.upstreams.connect(&target).await;
        let fresh = connected.map_err(|e| self.connect_failed(&target, e))?;
        match self.deadlines.run(pin!(resend.on(fresh).send())).await {
            Ok(sent) => sent.map_err(upstream_error),
            Err(Elapsed) => Err(ProxyError::Timeout),
        }
    }
}

/// A request that failed on its connection: 502.
fn upstream_error(e: SendError) -> ProxyError {
    match e {
        SendError::NotSent(_, e) | SendError::Failed(e) => ProxyError::Upstream(e.to_string()),
    }
}

/// The Host of a request: the URI's authority (HTTP/2, absolute-form) or its Host field.
fn host_value(uri: &Uri, host_field: Option<&HeaderValue>) -> Option<HeaderValue> {
    match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => host_field.cloned(),
    }
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
    /// log) are boxed so that what every request carries stays small. It was 5.3 KiB.
    #[test]
    fn a_request_future_stays_small() {
        let size = handle_future_size(Proxy::handle);
        assert!(size <= 2560, "Proxy::handle's future is {size} bytes");
    }
}
