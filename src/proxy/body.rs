//! The body of every response the proxy sends to clients.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::upstream::UpstreamBody;

/// A response body: streamed from the upstream, or a short local one.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream as it arrives.
    Upstream(UpstreamBody),
    /// Made by the proxy (errors, redirects).
    Local(Full<Bytes>),
    /// Streamed from the upstream, counting bytes for the access log.
    Logged(super::access::LoggedBody),
    /// Another body, holding a request's place under `limit-connections` until it ends.
    Guarded(Box<(ProxyBody, crate::snapshot::limits::ConnGuard)>),
}

// === impl ProxyBody ===

impl ProxyBody {
    /// A local body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(bytes.into()))
    }

    /// An empty local body.
    pub fn empty() -> Self {
        ProxyBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Logged(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Guarded(b) => Pin::new(&mut b.0).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
            ProxyBody::Logged(b) => b.is_end_stream(),
            ProxyBody::Guarded(b) => b.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
            ProxyBody::Logged(b) => b.size_hint(),
            ProxyBody::Guarded(b) => b.0.size_hint(),
        }
    }
}
