//! The client header timeout, kept per connection: a connection that has no request in
//! flight and has not completed a request head for `--client-header-timeout` is closed. That
//! covers a slow or stalled request head (slowloris) and idle keep-alive connections, as
//! hyper's `header_read_timeout` does, but with one timer per connection instead of a timer
//! set and cancelled for every request (about 1.7k instructions per request, measured with
//! callgrind). A request costs two atomic counts and no clock read: the watchdog looks every
//! quarter of the timeout and closes the connection after four quiet looks in a row, so an
//! idle connection closes between 1 and 1.25 timeouts after its last request ended.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::AbortHandle;
use http_body::{Body, Frame, SizeHint};

use super::Proxy;
use super::body::ProxyBody;
use super::headers::ConnHeaders;

/// Looks per timeout: quiet for this many looks in a row, a connection is closed.
const LOOKS_PER_TIMEOUT: u32 = 4;

/// What the watchdog of one connection looks at: requests in flight (the high 32 bits) and
/// requests ended (the low 32 bits, wrapping), in one word so that a request starts and ends
/// with one atomic operation each.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

/// One request in flight, in an `Activity` word.
const IN_FLIGHT: u64 = 1 << 32;

// === impl Activity ===

impl Activity {
    /// A connection that starts idle now.
    pub fn new() -> Self {
        Self::default()
    }

    /// A request starts.
    pub fn start(&self) {
        self.0.fetch_add(IN_FLIGHT, Ordering::AcqRel);
    }

    /// A request ended: one fewer in flight, one more ended, in one step (the watchdog never
    /// sees nothing in flight and nothing new).
    pub fn end(&self) {
        self.0
            .fetch_add(1u64.wrapping_sub(IN_FLIGHT), Ordering::AcqRel);
    }

    /// Requests in flight, and requests ended (wrapping).
    fn read(&self) -> (u64, u32) {
        let word = self.0.load(Ordering::Acquire);
        (word >> 32, word as u32)
    }
}

impl AsRef<Activity> for Activity {
    fn as_ref(&self) -> &Activity {
        self
    }
}

/// What a client connection's requests share: the proxy, the connection's forwarding values
/// and its activity. A request takes one `Arc` of it, which its response body keeps.
#[derive(Debug)]
pub struct ConnState {
    /// The proxy.
    pub proxy: Arc<Proxy>,
    /// The connection's forwarding values.
    pub headers: ConnHeaders,
    activity: Activity,
}

impl ConnState {
    /// A connection's state, idle.
    pub fn new(proxy: Arc<Proxy>, headers: ConnHeaders) -> Arc<Self> {
        Arc::new(ConnState {
            proxy,
            headers,
            activity: Activity::new(),
        })
    }
}

impl AsRef<Activity> for ConnState {
    fn as_ref(&self) -> &Activity {
        &self.activity
    }
}

/// A request in flight on its connection, counted from `InFlight::start` until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// Counts a request of `conn` in flight.
    pub fn start(conn: Arc<ConnState>) -> Self {
        conn.activity.start();
        InFlight(conn)
    }

    /// The connection.
    pub fn conn(&self) -> &ConnState {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.end();
    }
}

/// Closes the connection (through `abort`) once it has been idle for `timeout`: no request
/// in flight and none ended at any of `LOOKS_PER_TIMEOUT` looks in a row, a quarter of the
/// timeout apart.
pub async fn watchdog<C: AsRef<Activity>>(conn: Arc<C>, timeout: Duration, abort: AbortHandle) {
    let period = (timeout / LOOKS_PER_TIMEOUT).max(Duration::from_millis(1));
    let mut looks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut quiet, mut ended) = (0, 0);
    while quiet < LOOKS_PER_TIMEOUT {
        looks.tick().await;
        let (in_flight, now_ended) = (*conn).as_ref().read();
        if in_flight > 0 || now_ended != ended {
            (quiet, ended) = (0, now_ended);
        } else {
            quiet += 1;
        }
    }
    abort.abort();
}

/// A response body on its way to the client, keeping its request counted in flight until it
/// has been sent (or dropped).
#[derive(Debug)]
pub struct ClientBody {
    inner: ProxyBody,
    _in_flight: InFlight,
}

// === impl ClientBody ===

impl ClientBody {
    /// `inner`, counted by `in_flight`.
    pub fn new(inner: ProxyBody, in_flight: InFlight) -> Self {
        ClientBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::{AbortHandle, Abortable};
    use tokio::time::Instant;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(400);

    /// Runs the watchdog of `activity` until it closes the connection (checked); returns when.
    async fn closed_at(activity: &Arc<Activity>) -> Instant {
        let (abort, registration) = AbortHandle::new_pair();
        let connection = Abortable::new(std::future::pending::<()>(), registration);
        watchdog(activity.clone(), TIMEOUT, abort).await;
        assert!(connection.is_aborted());
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_closes_after_the_timeout() {
        let start = Instant::now();
        let closed = closed_at(&Arc::new(Activity::new())).await;
        assert_eq!(closed - start, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection_open() {
        let activity = Arc::new(Activity::new());
        activity.start();
        let watching = tokio::spawn({
            let activity = activity.clone();
            async move { closed_at(&activity).await }
        });
        tokio::time::sleep(TIMEOUT * 10).await;
        assert!(!watching.is_finished(), "closed with a request in flight");
        let ended = Instant::now();
        activity.end();
        let idle = watching.await.unwrap() - ended;
        assert!(
            idle >= TIMEOUT && idle <= TIMEOUT * 5 / 4,
            "closed {idle:?} after"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_between_one_and_one_and_a_quarter_timeouts_after_its_last_request()
     {
        for offset in [0, 10, 99, 100, 150, 399] {
            let activity = Arc::new(Activity::new());
            let watching = tokio::spawn({
                let activity = activity.clone();
                async move { closed_at(&activity).await }
            });
            // Requests now and then, never idle for a timeout.
            for _ in 0..5 {
                tokio::time::sleep(TIMEOUT / 2).await;
                activity.start();
                activity.end();
            }
            tokio::time::sleep(Duration::from_millis(offset)).await;
            activity.start();
            activity.end();
            let ended = Instant::now();
            let idle = watching.await.unwrap() - ended;
            assert!(
                idle >= TIMEOUT && idle <= TIMEOUT * 5 / 4,
                "offset {offset} ms: closed {idle:?} after the last request"
            );
        }
    }
}
