//! Every failure of the proxy, and the one place that turns it into an HTTP response.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No rule and no default backend matched.
    #[error("no route")]
    NoRoute,
    /// The route's backend did not resolve (missing Service or port).
    #[error("backend unavailable")]
    BackendUnavailable,
    /// The Service has no ready endpoint.
    #[error("no ready endpoints")]
    NoEndpoints,
    /// Connecting to the upstream failed (after the retry, when there was one).
    #[error("upstream connect failed: {0}")]
    Connect(String),
    /// An ExternalName resolved only to addresses Portico does not connect to (the node
    /// itself: loopback, link-local, its own addresses). Not retried.
    #[error("ExternalName refused")]
    ExternalNameRefused,
    /// The upstream did not answer in time (connect or response headers).
    #[error("upstream timed out")]
    Timeout,
    /// The upstream broke the exchange after it started.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The request cannot be forwarded as it is.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// More header fields than `--max-headers` (HTTP/2; hyper refuses HTTP/1 heads itself).
    #[error("too many header fields")]
    TooManyFields,
    /// The client sent nothing of its request body for the client body timeout.
    #[error("client body timed out")]
    ClientTimeout,
    /// The client's request body failed (the client went away or broke its framing).
    #[error("client request body failed: {0}")]
    ClientBody(String),
    /// The request body is larger than the route's `proxy-body-size`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The route's configuration refuses every request (an access-guarding annotation
    /// Portico does not implement: it fails closed).
    #[error("refused by the route's configuration")]
    Refused(StatusCode),
    /// The route's access rules refuse the request (403): the client address, or a
    /// request field; the text says which, for the log (the client reads "forbidden").
    #[error("access denied: {0}")]
    Denied(&'static str),
    /// Basic authentication asks for credentials (401), with this challenge.
    #[error("authorization required")]
    Unauthorized(HeaderValue),
    /// Over the route's `limit-rps`/`-rpm` or `limit-connections` (503 unless the ConfigMap
    /// says otherwise).
    #[error("over the route's limits")]
    Limited(StatusCode),
    /// The stored password of the user cannot be checked (500, as nginx); or the external
    /// auth service failed (unreachable, late, or neither 2xx, 401 nor 403).
    #[error("authentication failed")]
    AuthError,
    /// The request names a host that asks for client certificates, other than the one its
    /// TLS handshake named (421, as nginx: the client should connect again).
    #[error("misdirected request")]
    Misdirected,
    /// The external auth service refused the request: its 401 or 403 goes to the client.
    #[error("refused by the auth service")]
    AuthDenied(StatusCode),
    /// The client certificate's subject does not match `auth-tls-match-cn` (403 "client
    /// certificate unauthorized", nginx's text).
    #[error("client certificate unauthorized")]
    CertUnauthorized,
}

// === impl ProxyError ===

impl ProxyError {
    /// The status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BackendUnavailable | ProxyError::NoEndpoints => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect(_) | ProxyError::Upstream(_) | ProxyError::ExternalNameRefused => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::TooManyFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Refused(status) => *status,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::AuthError => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::AuthDenied(status) => *status,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::CertUnauthorized => StatusCode::FORBIDDEN,
            ProxyError::Limited(status) => *status,
        }
    }

    /// The answer a gRPC client expects (its request's content-type is `application/grpc…`):
    /// HTTP 200, trailers-only (the status in the only HEADERS frame), `grpc-status` mapped
    /// from the HTTP status as gRPC's "HTTP to gRPC status code mapping" (502, 503, 504 and
    /// 429 are UNAVAILABLE, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED,
    /// 400 INTERNAL), except a timeout, which is DEADLINE_EXCEEDED.
    pub fn grpc_response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let code: u16 = match (self, status.as_u16()) {
            (ProxyError::Timeout, _) => 4,
            (_, 400) => 13,
            (_, 401) => 16,
            (_, 403) => 7,
            (_, 404) => 12,
            (_, 413) => 8,
            (_, 429 | 502 | 503 | 504) => 14,
            _ => 2,
        };
        let message = match self {
            ProxyError::Connect(_) | ProxyError::Upstream(_) => "upstream error",
            ProxyError::BadRequest(r) => r,
            other => static_reason(other),
        };
        let mut response = Response::new(ProxyBody::full(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(code));
        // grpc-message is percent-encoded; these texts are plain ASCII without '%'.
        if let Ok(text) = HeaderValue::from_str(&message.replace(' ', "%20")) {
            headers.insert("grpc-message", text);
        }
        response
    }

    /// Whether a request is gRPC's (its answers are [`grpc_response`](Self::grpc_response)).
    pub fn is_grpc(headers: &http::HeaderMap) -> bool {
        headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    }

    /// A short response: JSON when the client accepts JSON, plain text otherwise.
    pub fn response(&self, wants_json: bool) -> Response<ProxyBody> {
        let status = self.status();
        let reason = match self {
            ProxyError::Connect(_) | ProxyError::Upstream(_) => "upstream error",
            ProxyError::BadRequest(r) => r,
            other => static_reason(other),
        };
        let (body, content_type) = if wants_json {
            let body = serde_json::json!({"status": status.as_u16(), "error": reason}).to_string();
            (Bytes::from(body), "application/json")
        } else {
            let text = format!(
                "{} {}: {reason}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            (Bytes::from(text), "text/plain; charset=utf-8")
        };
        let mut response = Response::new(ProxyBody::full(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let ProxyError::Unauthorized(challenge) = self {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
        }
        response
    }
}

fn static_reason(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::NoRoute => "no route",
        ProxyError::BackendUnavailable => "backend unavailable",
        ProxyError::NoEndpoints => "no ready endpoints",
        ProxyError::Timeout => "upstream timed out",
        ProxyError::TooManyFields => "too many header fields",
        ProxyError::ClientTimeout => "request body timed out",
        ProxyError::ClientBody(_) => "request body failed",
        ProxyError::PayloadTooLarge => "request body too large",
        ProxyError::Refused(_) => "refused by the route's configuration",
        ProxyError::Denied(_) => "forbidden",
        ProxyError::Unauthorized(_) => "authorization required",
        ProxyError::AuthError => "internal server error",
        ProxyError::AuthDenied(s) if *s == StatusCode::FORBIDDEN => "forbidden",
        ProxyError::AuthDenied(_) => "authorization required",
        ProxyError::Misdirected => "misdirected request",
        ProxyError::CertUnauthorized => "client certificate unauthorized",
        ProxyError::Limited(_) => "too many requests",
        ProxyError::ExternalNameRefused => {
            "ExternalName refused: it resolves to a loopback, link-local or node address"
        }
        _ => "error",
    }
}
