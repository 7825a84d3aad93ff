//! Body types of the proxy: what goes to upstreams and what goes back to clients.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::oneshot;

/// A response body: streamed from the upstream, or a short local one.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream as it arrives.
    Upstream(Incoming),
    /// Made by the proxy (errors, redirects).
    Local(Full<Bytes>),
    /// Streamed from the upstream, counting bytes for the access log.
    Logged(super::access::LoggedBody),
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Logged(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
            ProxyBody::Logged(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
            ProxyBody::Logged(b) => b.size_hint(),
        }
    }
}

/// A request body on its way upstream. If the client drops it before reading any of it (a
/// connect failure: nothing was sent), it goes back through `give_back` so the request can be
/// retried on another endpoint.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<Incoming>,
    give_back: Option<oneshot::Sender<Incoming>>,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// A body that is never given back.
    pub fn new(body: Incoming) -> Self {
        UpstreamBody {
            inner: Some(body),
            give_back: None,
        }
    }

    /// A body that comes back through the receiver if it is dropped unread.
    pub fn returnable(body: Incoming) -> (Self, oneshot::Receiver<Incoming>) {
        let (tx, rx) = oneshot::channel();
        (
            UpstreamBody {
                inner: Some(body),
                give_back: Some(tx),
            },
            rx,
        )
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // Once read from, the body can no longer be replayed.
        this.give_back = None;
        match this.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let (Some(tx), Some(body)) = (self.give_back.take(), self.inner.take()) {
            let _ = tx.send(body);
        }
    }
}
