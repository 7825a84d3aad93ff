//! HTTP/2 to endpoints (`backend-protocol: GRPC`/`GRPCS`, `appProtocol: kubernetes.io/h2c`):
//! hyper's HTTP/2 client over the pool's stream (clear text, or TLS with ALPN h2). One
//! multiplexed connection per pool key carries every request to that endpoint under those
//! settings; hyper respects the peer's MAX_CONCURRENT_STREAMS (a request waits for a stream)
//! and PINGs an idle connection so a dead peer is seen.
//!
//! The request sent is the one the HTTP/1.1 path would send, field for field: its head is
//! encoded by `codec::encode_head` (Host, forwarding fields, rewrites, a route's header
//! operations), then read back into an HTTP/2 request, hop-by-hop fields left out (`te:
//! trailers` kept for gRPC). Bodies stream both ways, trailers included.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::stream::Io;
use super::{SendError, Stall, Streaming};

/// An idle HTTP/2 connection is PINGed this often…
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and closed when the PONG does not come within this.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The most an HTTP/2 endpoint's header list may hold (SETTINGS_MAX_HEADER_LIST_SIZE).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// Header fields read back from an encoded head, at most.
const MAX_FIELDS: usize = 256;

/// A new HTTP/2 connection over `io`; its driver runs in a task of its own until the
/// connection ends.
pub async fn handshake(io: Io) -> io::Result<SendRequest<RequestBody>> {
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // An endpoint's response head is held to what the HTTP/1.1 path allows (64 KiB),
        // not hyper's 16 MiB default.
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "HTTP/2 upstream connection ended");
        }
    });
    Ok(sender)
}

/// The request whose HTTP/1.1 head (and buffered body) `encoded` holds, as an HTTP/2 request
/// with `body` streaming after the buffered part. `tls`: the endpoint is spoken to over TLS
/// (the `:scheme`); `te_trailers`: the client asked for trailers (gRPC's `te: trailers`).
pub fn request(
    encoded: &[u8],
    body: Option<Box<Streaming>>,
    tls: bool,
    te_trailers: bool,
    client_body_timeout: Duration,
) -> io::Result<Request<RequestBody>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut head = httparse::Request::new(&mut fields);
    let length = match head.parse(encoded) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(invalid("the request head cannot go over HTTP/2")),
    };
    let method = http::Method::from_bytes(head.method.unwrap_or("GET").as_bytes())
        .map_err(|_| invalid("method"))?;
    let path = head.path.unwrap_or("/");
    let mut authority = None;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.version_mut() = Version::HTTP_2;
    for field in head.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| invalid("field"))?;
        if name == http::header::HOST {
            authority = Some(field.value);
            continue;
        }
        if is_connection_specific(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(field.value).map_err(|_| invalid("field value"))?;
        request.headers_mut().append(name, value);
    }
    if te_trailers {
        let trailers = HeaderValue::from_static("trailers");
        request.headers_mut().insert(http::header::TE, trailers);
    }
    let authority =
        std::str::from_utf8(authority.unwrap_or(b"localhost")).map_err(|_| invalid("host"))?;
    *request.uri_mut() = Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(authority)
        .path_and_query(if path == "*" { "/" } else { path })
        .build()
        .map_err(|_| invalid("the request target or Host cannot go over HTTP/2"))?;
    let mut ready = VecDeque::new();
    if encoded.len() > length {
        ready.push_back(Bytes::copy_from_slice(&encoded[length..]));
    }
    let (rest, max, mut length) = match body {
        Some(streaming) => {
            let Streaming {
                read,
                rest,
                length,
                max,
            } = *streaming;
            ready.extend(read);
            (Some(rest), max, length)
        }
        None => (None, None, None),
    };
    if rest.is_none() {
        length = Some(ready.iter().map(|b| b.len() as u64).sum());
    }
    let body = RequestBody {
        ready,
        rest,
        sent: 0,
        max,
        length,
        timeout: client_body_timeout,
        stall: Stall::default(),
        fault: Arc::default(),
        all_sent: Arc::default(),
        taken: Arc::new(Taken::new()),
    };
    let (parts, ()) = request.into_parts();
    Ok(Request::from_parts(parts, body))
}

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2): the connection's own.
fn is_connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}

/// Sends `request` on `sender` (waiting for a stream when the connection is at its peer's
/// MAX_CONCURRENT_STREAMS). `timeouts` (a body that streams: the route's send timeout, and
/// its read timeout or the call's deadline): while the body streams, the endpoint must take
/// each piece of it within the send timeout, as nginx's `proxy_send_timeout` bounds the wait
/// between two writes (an endpoint that grants no flow-control window is a 504, not a
/// request held until the client gives up); once the body is all sent, the response head
/// must come within the read timeout, as nginx arms its read timer when the request is sent
/// (a call whose client streams for long is not cut; an endpoint that never answers is a
/// 504, or DEADLINE_EXCEEDED).
pub async fn send(
    sender: SendRequest<RequestBody>,
    request: Request<RequestBody>,
    timeouts: Option<(Duration, Duration)>,
) -> Result<Response<Incoming>, SendError> {
    let Some((send_limit, head_limit)) = timeouts else {
        return send_now(sender, request).await;
    };
    let all_sent = Arc::clone(&request.body().all_sent);
    let taken = Arc::clone(&request.body().taken);
    let late = async {
        all_sent.notified().await;
        tokio::time::sleep(head_limit).await;
    };
    tokio::select! {
        answered = send_now(sender, request) => answered,
        () = late => Err(SendError::TimedOut("no response head within the read timeout after the request body")),
        () = taken.stalled(send_limit) => Err(SendError::TimedOut("the endpoint took none of the request body within the send timeout")),
    }
}

async fn send_now(
    mut sender: SendRequest<RequestBody>,
    request: Request<RequestBody>,
) -> Result<Response<Incoming>, SendError> {
    let failed = |e: hyper::Error| {
        // Never sent: the connection closed (an endpoint's GOAWAY, say) while the request
        // waited for it. It may go again on another connection.
        if e.is_canceled() {
            let kind = io::ErrorKind::ConnectionAborted;
            return SendError::Failed(io::Error::new(kind, NotSent::Closed));
        }
        // Never processed: the endpoint refused the stream (REFUSED_STREAM, RFC 9113 §8.7:
        // "the request has not been processed"), so it may go again too.
        if refused(&e) {
            let kind = io::ErrorKind::ConnectionRefused;
            return SendError::Failed(io::Error::new(kind, NotSent::Refused));
        }
        SendError::Failed(io::Error::other(e))
    };
    sender.ready().await.map_err(failed)?;
    // The client's body may break the route's limit or its timeout while it streams: the
    // client's fault, as on the HTTP/1.1 path (413, 408), not the endpoint's. hyper reports
    // only the stream's reset, so the body says why in a cell of its own.
    let fault = Arc::clone(&request.body().fault);
    sender
        .send_request(request)
        .await
        .map_err(|e| match fault.load(Ordering::Relaxed) {
            TOO_LARGE => SendError::TooLarge,
            TIMED_OUT => SendError::ClientTimedOut,
            _ => failed(e),
        })
}

/// Whether hyper's error is the endpoint's RST_STREAM with REFUSED_STREAM.
fn refused(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<::h2::Error>())
        .and_then(::h2::Error::reason)
        == Some(::h2::Reason::REFUSED_STREAM)
}

/// The error of a request that no endpoint processed.
#[derive(Debug)]
pub enum NotSent {
    /// The HTTP/2 connection closed before it went out.
    Closed,
    /// The endpoint refused its stream before processing it (REFUSED_STREAM).
    Refused,
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotSent::Closed => "the HTTP/2 connection closed before the request went out",
            NotSent::Refused => {
                "the endpoint refused the stream before processing it (REFUSED_STREAM)"
            }
        })
    }
}

impl std::error::Error for NotSent {}

/// Whether a failed send never left Portico ([`NotSent`]).
pub fn not_sent(e: &SendError) -> bool {
    matches!(e, SendError::Failed(io) if io.get_ref().is_some_and(|r| r.is::<NotSent>()))
}

/// [`RequestBody::fault`]: the body broke the route's `proxy-body-size`…
const TOO_LARGE: u8 = 1;
/// …or the client body timeout.
const TIMED_OUT: u8 = 2;

/// How a client's streamed body failed (the body's error).
#[derive(Debug)]
enum ClientFault {
    TooLarge,
    TimedOut,
}

impl std::fmt::Display for ClientFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientFault::TooLarge => "the request body is larger than the route's proxy-body-size",
            ClientFault::TimedOut => {
                "the client sent nothing of its body within the client body timeout"
            }
        })
    }
}

impl std::error::Error for ClientFault {}

/// A request body going to an HTTP/2 endpoint: what was read before connecting, then the rest
/// as the client sends it (trailers included), within the body limit and the client body
/// timeout between two frames.
pub struct RequestBody {
    ready: VecDeque<Bytes>,
    rest: Option<Incoming>,
    sent: u64,
    max: Option<u64>,
    length: Option<u64>,
    timeout: Duration,
    stall: Stall,
    /// Why the body failed, when the client is to blame (read by [`send`]).
    fault: Arc<AtomicU8>,
    /// Told when the body has all gone (read by [`send`] for its head timeout): when hyper
    /// drops it, having sent its end (it does not poll past a body that says it ended).
    all_sent: Arc<tokio::sync::Notify>,
    /// Whether the endpoint keeps taking the body (read by [`send`] for its send timeout).
    taken: Arc<Taken>,
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.taken.since.store(Taken::DONE, Ordering::Relaxed);
        self.all_sent.notify_one();
    }
}

/// When hyper last asked a streamed body for more while the body had more to give: hyper asks
/// only when the endpoint's flow-control window has room, so a body it has not asked for
/// since (the body not waiting on the client) is a body the endpoint does not take.
struct Taken {
    start: tokio::time::Instant,
    /// Milliseconds after `start` since which hyper has not asked; [`Taken::CLIENT`] while the
    /// body waits on the client (its own timeout applies), [`Taken::DONE`] once it has gone.
    since: AtomicU64,
}

impl Taken {
    const CLIENT: u64 = u64::MAX;
    const DONE: u64 = u64::MAX - 1;

    fn new() -> Taken {
        Taken {
            start: tokio::time::Instant::now(),
            since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Resolves when hyper has not asked for the body for `limit` (never once it has gone).
    async fn stalled(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let wait = match self.since.load(Ordering::Relaxed) {
                Taken::DONE => std::future::pending().await,
                Taken::CLIENT => limit_ms,
                since => {
                    let waited = self.now().saturating_sub(since);
                    if waited >= limit_ms {
                        return;
                    }
                    limit_ms - waited
                }
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = this.poll_inner(cx);
        let since = match &polled {
            Poll::Pending => Taken::CLIENT,
            Poll::Ready(Some(Ok(_))) => this.taken.now(),
            Poll::Ready(_) => Taken::DONE,
        };
        this.taken.since.store(since, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.sent)),
            None => SizeHint::default(),
        }
    }
}

impl RequestBody {
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self;
        if let Some(data) = this.ready.pop_front() {
            this.sent += data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => {
                if this.stall.expired(this.timeout, cx) {
                    this.rest = None;
                    this.fault.store(TIMED_OUT, Ordering::Relaxed);
                    let e = ClientFault::TimedOut;
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, e))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.rest = None;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.stall.progressed(this.timeout);
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    if this.max.is_some_and(|m| this.sent > m) {
                        this.rest = None;
                        this.fault.store(TOO_LARGE, Ordering::Relaxed);
                        let e = ClientFault::TooLarge;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e,
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}
