//! The access log: one line per request through tracing (target `portico::access`), written
//! when the response body ends, so it carries the bytes sent. Nothing is done when it is off.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};

use super::upstream::UpstreamBody;

/// What is known of a request when its response starts.
#[derive(Debug)]
pub struct AccessRecord {
    /// When the request arrived.
    pub start: Instant,
    /// The client.
    pub client: SocketAddr,
    /// Method.
    pub method: Method,
    /// Host (or :authority) as sent.
    pub host: Option<HeaderValue>,
    /// The request target.
    pub uri: Uri,
    /// Status sent to the client.
    pub status: u16,
    /// The endpoint that answered, if any.
    pub upstream: Option<SocketAddr>,
    /// The status the endpoint answered with.
    pub upstream_status: Option<u16>,
    /// X-Request-ID.
    pub request_id: Option<HeaderValue>,
}

// === impl AccessRecord ===

impl AccessRecord {
    /// Writes the line.
    pub fn emit(&self, bytes: u64) {
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        let path = self.uri.path_and_query().map_or("-", |p| p.as_str());
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        let duration_ms = self.start.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            target: "portico::access",
            client = %self.client.ip(),
            method = %self.method,
            host,
            path,
            status = self.status,
            bytes,
            duration_ms,
            upstream = self.upstream.map(tracing::field::display),
            upstream_status = self.upstream_status,
            request_id,
            "request"
        );
    }
}

/// An upstream body that counts the bytes sent and writes the access line when it ends (or is
/// dropped: the client went away).
#[derive(Debug)]
pub struct LoggedBody {
    inner: UpstreamBody,
    bytes: u64,
    record: Option<Box<AccessRecord>>,
}

// === impl LoggedBody ===

impl LoggedBody {
    /// Wraps an upstream body.
    pub fn new(inner: UpstreamBody, record: AccessRecord) -> Self {
        LoggedBody {
            inner,
            bytes: 0,
            record: Some(Box::new(record)),
        }
    }

    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            record.emit(self.bytes);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
