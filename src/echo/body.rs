//! The echo backend's response bodies: a buffer sent at once, or N filler bytes streamed in
//! 64 KiB chunks that are never allocated.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};

/// The size of a filler chunk: big enough for few frames, small enough to stream.
const CHUNK: usize = 64 * 1024;

/// The filler bytes, sliced into every chunk without copying.
static FILL: [u8; CHUNK] = [b'.'; CHUNK];

/// A response body of the echo backend.
#[derive(Debug)]
pub(crate) enum Payload {
    /// One buffer, sent as one frame (taken once sent).
    Full(Option<Bytes>),
    /// `remaining` filler bytes; `sized` gives an exact size hint, so the length is announced
    /// (HTTP/1.1 `content-length`) instead of chunked.
    Filler {
        /// Bytes still to send.
        remaining: u64,
        /// Announce the length.
        sized: bool,
    },
}

// === impl Payload ===

impl Payload {
    /// A body of these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Payload::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        Payload::Full(None)
    }

    /// `len` filler bytes, with a known length or chunked.
    pub(crate) fn filler(len: u64, sized: bool) -> Self {
        Payload::Filler {
            remaining: len,
            sized,
        }
    }
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            Payload::Full(bytes) => bytes.take().map(Frame::data),
            Payload::Filler { remaining, .. } => {
                let n = usize::try_from(*remaining).map_or(CHUNK, |r| r.min(CHUNK));
                // n <= CHUNK, so it fits in u64 and never exceeds `remaining`.
                *remaining -= n as u64;
                (n > 0).then(|| Frame::data(Bytes::from_static(&FILL[..n])))
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Payload::Full(bytes) => bytes.is_none(),
            Payload::Filler { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Payload::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Payload::Filler {
                remaining,
                sized: true,
            } => SizeHint::with_exact(*remaining),
            Payload::Filler { sized: false, .. } => SizeHint::default(),
        }
    }
}
