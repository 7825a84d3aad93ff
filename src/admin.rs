//! The admin listener (`--admin-addr`, default 127.0.0.1:10254): liveness, readiness,
//! Prometheus metrics and a JSON dump of the current snapshot.
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 `ok` while the process serves |
//! | `/readyz` | 200 `ready` once the first snapshot is published (when the proxy listeners start accepting), else 503 |
//! | `/metrics` | OpenMetrics text ([`Metrics::encode`]) |
//! | `/debug/snapshot` | `{"generation", "routes", "diagnostics"}` |
//! | `/debug/explain?url=…` | how a URL is served, as text |
//!
//! The probes and `/metrics` answer everyone (kubelet probes from the node's address,
//! Prometheus from anywhere). `/debug/*` shows the whole configuration, so it answers only a
//! loopback peer or a client presenting the `--admin-token-file` token, and only with a Host
//! that is `localhost` or an IP literal (DNS rebinding); others get a bare 403 ([`access`]).

mod access;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::controller::BuildStatus;
use crate::metrics::{ListenerKind, Metrics};
use crate::snapshot::SnapshotHandle;
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::table::{RouteRow, route_rows};

pub use access::{AdminToken, TokenError};

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin listener reports on.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The published snapshot (readiness, `/debug/snapshot`).
    pub snapshot: SnapshotHandle,
    /// The controller's latest build (snapshot metrics, diagnostics).
    pub status: watch::Receiver<BuildStatus>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The node's addresses (for `/debug/explain` of NodePort URLs).
    pub node_addresses: Vec<std::net::IpAddr>,
    /// `--admin-token-file`: lets clients other than loopback read `/debug/*`.
    pub token: Option<Arc<AdminToken>>,
}

/// Serves the admin endpoints on `listener` (HTTP/1.1 and h2c) until `shutdown` resolves,
/// then lets open connections finish (for a few seconds).
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    crate::serve::accept_loop(listener, "admin", shutdown, |stream, peer| {
        let guard = state.metrics.connection_opened(ListenerKind::Admin);
        let state = state.clone();
        let service = service_fn(move |req| {
            let response = respond(&state, peer, &req);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        (conn, guard)
    })
    .await;
    Ok(())
}

/// Routes one request from `peer`. The handlers only read memory, so they run inline.
fn respond<B>(state: &AdminState, peer: SocketAddr, req: &Request<B>) -> Response<Full<Bytes>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = req.uri().path();
    if path.starts_with("/debug") && !access::debug_allowed(peer, req, state.token.as_deref()) {
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => readyz(state),
        "/metrics" => {
            let status = state.status.borrow().clone();
            body(StatusCode::OK, OPENMETRICS, state.metrics.encode(&status))
        }
        "/debug/snapshot" => debug_snapshot(state),
        "/debug/explain" => debug_explain(state, req.uri().query().unwrap_or("")),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/debug/explain?url=…`: how a URL would be served, as text.
fn debug_explain(state: &AdminState, query: &str) -> Response<Full<Bytes>> {
    let url = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("url="))
        .map(percent_decode);
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "usage: /debug/explain?url=https://host/path\n",
        );
    };
    let snapshot = state.snapshot.load();
    match crate::l4::explain::explain(&snapshot, &url, &state.node_addresses) {
        Ok(explained) => body(StatusCode::OK, "text/plain; charset=utf-8", explained),
        Err(e) => body(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

/// Decodes `%XX` escapes and `+` (a query value).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    if state.snapshot.generation() >= 1 {
        text(StatusCode::OK, "ready")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot published yet",
        )
    }
}

/// The body of `/debug/snapshot`.
#[derive(Debug, Serialize)]
struct DebugSnapshot<'a> {
    generation: u64,
    routes: Vec<RouteRow>,
    diagnostics: &'a [Diagnostic],
}

fn debug_snapshot(state: &AdminState) -> Response<Full<Bytes>> {
    let snapshot = state.snapshot.load();
    let diagnostics = state.status.borrow().diagnostics.clone();
    let dump = DebugSnapshot {
        generation: snapshot.generation,
        routes: route_rows(&snapshot),
        diagnostics: &diagnostics,
    };
    match serde_json::to_vec_pretty(&dump) {
        Ok(mut json) => {
            json.push(b'\n');
            body(StatusCode::OK, "application/json", json)
        }
        Err(error) => {
            warn!(%error, "encoding the snapshot failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the snapshot\n",
            )
        }
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", message)
}

fn body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests;
