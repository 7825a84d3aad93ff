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
    /// Another body, sent no faster than `limit-rate` after `limit-rate-after` bytes.
    Throttled(Box<Throttled>),
}

/// nginx's `limit_rate` / `limit_rate_after` on a response: by `elapsed` seconds since the
/// response began, at most `after + rate × (elapsed + 1)` bytes have been sent (nginx's
/// write filter, with time continuous rather than in whole seconds). A frame that would
/// pass the allowance waits until it does not.
#[derive(Debug)]
pub struct Throttled {
    inner: ProxyBody,
    /// Bytes per second.
    rate: u64,
    /// Bytes sent before the rate applies.
    after: u64,
    sent: u64,
    start: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pending: Option<Frame<Bytes>>,
}

impl Throttled {
    /// `inner`, throttled to `rate` bytes per second after `after` bytes.
    pub fn new(inner: ProxyBody, rate: u64, after: u64) -> Self {
        Throttled {
            inner,
            rate: rate.max(1),
            after,
            sent: 0,
            start: tokio::time::Instant::now(),
            sleep: None,
            pending: None,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        if let Some(frame) = self.pending.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        self.sent += len;
        let over = self.sent.saturating_sub(self.after);
        if over == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        // Allowed once elapsed + 1 >= over / rate.
        let wait =
            std::time::Duration::from_secs_f64((over as f64 / self.rate as f64 - 1.0).max(0.0));
        let at = self.start + wait;
        if at <= tokio::time::Instant::now() {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.pending = Some(frame);
        let mut sleep = Box::pin(tokio::time::sleep_until(at));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(self.pending.take().map(Ok));
        }
        self.sleep = Some(sleep);
        Poll::Pending
    }
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
            ProxyBody::Throttled(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
            ProxyBody::Logged(b) => b.is_end_stream(),
            ProxyBody::Guarded(b) => b.0.is_end_stream(),
            ProxyBody::Throttled(b) => b.pending.is_none() && b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
            ProxyBody::Logged(b) => b.size_hint(),
            ProxyBody::Guarded(b) => b.0.size_hint(),
            ProxyBody::Throttled(b) => match &b.pending {
                None => b.inner.size_hint(),
                Some(_) => SizeHint::default(),
            },
        }
    }
}
