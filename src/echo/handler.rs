//! One request to the echo backend: WebSocket upgrade, the blog index page, or the JSON echo
//! with its test knobs (`status`, `delay_ms`, `bytes`, `chunked`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use tracing::debug;

use super::body::Payload;
use super::websocket;

/// The longest `delay_ms` honoured.
const MAX_DELAY_MS: u64 = 60_000;

/// The path of the demo page.
const BLOG_INDEX: &str = "/blog/index/";

/// What every request of one echo server shares.
#[derive(Debug)]
pub(crate) struct Backend {
    /// The name reported in every answer.
    pub(crate) name: Arc<str>,
    /// `x-echo-service`, or `None` when the name cannot be a header value.
    pub(crate) header: Option<HeaderValue>,
}

/// The response header naming the backend.
static X_ECHO_SERVICE: HeaderName = HeaderName::from_static("x-echo-service");

/// Answers one request.
pub(crate) async fn handle(
    backend: Arc<Backend>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Payload>, Infallible> {
    let mut response = if req.version() <= Version::HTTP_11 && websocket::is_upgrade(req.headers())
    {
        upgrade(&mut req, peer)
    } else if req.uri().path() == BLOG_INDEX && matches!(*req.method(), Method::GET | Method::HEAD)
    {
        blog_index(&backend.name)
    } else {
        echo(&backend, peer, req).await
    };
    if let Some(value) = &backend.header {
        response
            .headers_mut()
            .insert(X_ECHO_SERVICE.clone(), value.clone());
    }
    Ok(response)
}

/// Switches to WebSocket and echoes messages on a task of their own.
fn upgrade(req: &mut Request<Incoming>, peer: SocketAddr) -> Response<Payload> {
    let headers = match websocket::accept_headers(req.headers()) {
        Ok(headers) => headers,
        Err(status) => return text(status, "not a valid websocket upgrade\n"),
    };
    tokio::spawn(websocket::echo(hyper::upgrade::on(req), peer));
    let mut response = Response::new(Payload::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().extend(headers);
    response
}

/// The JSON echo, after reading the whole request body (counted, not kept).
async fn echo(backend: &Backend, peer: SocketAddr, req: Request<Incoming>) -> Response<Payload> {
    let (parts, body) = req.into_parts();
    let knobs = match Knobs::parse(parts.uri.query()) {
        Ok(knobs) => knobs,
        Err(param) => return text(StatusCode::BAD_REQUEST, invalid_knob(param)),
    };
    let body_length = match count(body).await {
        Ok(n) => n,
        Err(error) => {
            debug!(%peer, %error, "reading the request body failed");
            return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
        }
    };
    if let Some(delay) = knobs.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = match knobs.bytes {
        Some(n) => filler(n, knobs.chunked),
        None => json(&Echo::new(&backend.name, &parts, body_length, peer)),
    };
    if let Some(status) = knobs.status {
        *response.status_mut() = status;
    }
    response
}

/// Reads a body to its end, counting the data bytes.
async fn count(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// The test knobs of the query string; other parameters are only echoed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Knobs {
    pub(crate) status: Option<StatusCode>,
    pub(crate) delay: Option<Duration>,
    pub(crate) bytes: Option<u64>,
    pub(crate) chunked: bool,
}

// === impl Knobs ===

impl Knobs {
    /// Parses the knobs; `Err` names the parameter with an invalid value.
    pub(crate) fn parse(query: Option<&str>) -> Result<Knobs, &'static str> {
        let mut knobs = Knobs::default();
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "status" => {
                    let status = value
                        .parse()
                        .ok()
                        .and_then(|n| StatusCode::from_u16(n).ok());
                    // 1xx cannot be a final response.
                    let status = status.filter(|s| (200..600).contains(&s.as_u16()));
                    knobs.status = Some(status.ok_or("status")?);
                }
                "delay_ms" => {
                    let ms: u64 = value.parse().map_err(|_| "delay_ms")?;
                    knobs.delay = Some(Duration::from_millis(ms.min(MAX_DELAY_MS)));
                }
                "bytes" => knobs.bytes = Some(value.parse().map_err(|_| "bytes")?),
                "chunked" => knobs.chunked = matches!(value, "1" | "true" | ""),
                _ => {}
            }
        }
        Ok(knobs)
    }
}

fn invalid_knob(param: &'static str) -> &'static str {
    match param {
        "status" => "invalid status: expected a number from 200 to 599\n",
        "delay_ms" => "invalid delay_ms: expected a number of milliseconds\n",
        _ => "invalid bytes: expected a number of bytes\n",
    }
}

/// What the echo answers, serialized in this field order.
#[derive(Debug, Serialize)]
struct Echo<'a> {
    service: &'a str,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    headers: Headers<'a>,
    protocol: &'static str,
    body_length: u64,
    remote: SocketAddr,
}

// === impl Echo ===

impl<'a> Echo<'a> {
    fn new(name: &'a str, parts: &'a Parts, body_length: u64, remote: SocketAddr) -> Self {
        let uri = &parts.uri;
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok());
        Echo {
            service: name,
            method: parts.method.as_str(),
            path: uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
            host: host.or(uri.authority().map(|a| a.as_str())).unwrap_or(""),
            headers: Headers(&parts.headers),
            protocol: protocol(parts.version),
            body_length,
            remote,
        }
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// Header name → value, or → list of values when repeated, in the order received (a JSON
/// object built through `serde_json::Map` would be sorted).
#[derive(Debug)]
struct Headers<'a>(&'a HeaderMap);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let values = self.0.get_all(name);
            if values.iter().nth(1).is_some() {
                map.serialize_entry(name.as_str(), &Values(values))?;
            } else if let Some(value) = values.iter().next() {
                map.serialize_entry(name.as_str(), &String::from_utf8_lossy(value.as_bytes()))?;
            }
        }
        map.end()
    }
}

/// The values of a repeated header.
struct Values<'a>(http::header::GetAll<'a, HeaderValue>);

impl Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for value in self.0.iter() {
            seq.serialize_element(&String::from_utf8_lossy(value.as_bytes()))?;
        }
        seq.end()
    }
}

fn json(echo: &Echo<'_>) -> Response<Payload> {
    match serde_json::to_vec_pretty(echo) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(StatusCode::OK, "application/json", Payload::full(body))
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the echo\n",
        ),
    }
}

fn filler(len: u64, chunked: bool) -> Response<Payload> {
    let mut response = with_type(
        StatusCode::OK,
        "application/octet-stream",
        Payload::filler(len, !chunked),
    );
    if !chunked {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    response
}

/// The demo page: a small blog index naming the backend that served it.
fn blog_index(name: &str) -> Response<Payload> {
    let name = escape_html(name);
    let page = format!(
        r#"<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>myblog</title></head>
<body>
<h1>myblog</h1>
<ul>
<li><a href="/blog/posts/hello-portico/">Hello, Portico</a></li>
<li><a href="/blog/posts/ingress-paths/">Exact and Prefix paths, explained</a></li>
<li><a href="/blog/posts/tls-everywhere/">TLS everywhere</a></li>
</ul>
<p>Served by backend <strong>{name}</strong>.</p>
</body>
</html>
"#
    );
    with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Payload::full(page),
    )
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(status: StatusCode, body: &'static str) -> Response<Payload> {
    with_type(status, "text/plain; charset=utf-8", Payload::full(body))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Payload) -> Response<Payload> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
