//! The client header and keep-alive timeouts, kept per connection: a connection that has not
//! completed its first request head within the header timeout (`client-header-timeout`), or
//! that has had no request in flight for the keep-alive timeout (`keep-alive`) after one, is
//! closed. That covers a slow or stalled request head (slowloris) and idle keep-alive
//! connections, as hyper's `header_read_timeout` does, but with one timer per connection instead of a timer
//! set and cancelled for every request (about 1.7k instructions per request, measured with
//! callgrind). A request costs two atomic counts and no clock read: the watchdog looks every
//! quarter of the timeout and closes the connection after four quiet looks in a row, so an
//! idle connection closes between 1 and 1.25 timeouts after its last request ended.
//!
//! The same watchdog keeps the client send timeout (nginx `send_timeout`): a response body
//! that handed a piece to the client side and has not been asked for the next one is waiting
//! on the client (hyper asks for more only once it has written what it had, or the HTTP/2
//! stream has window). When bodies are waiting and none of them moves for the send timeout,
//! the connection is closed, which drops its response bodies and so their upstream
//! connections. It is kept per connection: on HTTP/2, one stream that moves keeps the others
//! too (each stream's upstream connection then stays, bounded by the stream limit).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

    /// A request starts; returns how many have started on the connection, this one included
    /// (those in flight and those ended; exact up to `u32::MAX` requests).
    pub fn start(&self) -> u64 {
        let before = self.0.fetch_add(IN_FLIGHT, Ordering::AcqRel);
        (before >> 32) + u64::from(before as u32) + 1
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

/// What the watchdog of one connection looks at for the send timeout: response bodies
/// waiting on the client (the high 32 bits) and pieces the client side took (the low 32 bits,
/// wrapping).
#[derive(Debug, Default)]
pub struct Sending(AtomicU64);

/// One body waiting on the client, in a `Sending` word.
const WAITING: u64 = 1 << 32;

// === impl Sending ===

impl Sending {
    /// A body handed a piece to the client side and waits to be asked for the next.
    fn wait(&self) {
        self.0.fetch_add(WAITING, Ordering::AcqRel);
    }

    /// A waiting body was asked for more (or dropped): one fewer waiting, one more taken.
    fn resume(&self) {
        self.0
            .fetch_add(1u64.wrapping_sub(WAITING), Ordering::AcqRel);
    }

    /// Bodies waiting, and pieces taken (wrapping).
    fn read(&self) -> (u64, u32) {
        let word = self.0.load(Ordering::Acquire);
        (word >> 32, word as u32)
    }
}

impl AsRef<Sending> for Sending {
    fn as_ref(&self) -> &Sending {
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
    /// Requests the connection serves before it closes (`keep-alive-requests`, as the
    /// snapshot had it when the connection was accepted).
    pub max_requests: u64,
    /// Set once the connection has taken its last request: it closes gracefully (HTTP/2:
    /// GOAWAY) once that is answered.
    closing: AtomicBool,
    activity: Activity,
    sending: Sending,
}

impl ConnState {
    /// A connection's state, idle.
    pub fn new(proxy: Arc<Proxy>, headers: ConnHeaders, max_requests: u32) -> Arc<Self> {
        Arc::new(ConnState {
            proxy,
            headers,
            max_requests: u64::from(max_requests.max(1)),
            closing: AtomicBool::new(false),
            activity: Activity::new(),
            sending: Sending::default(),
        })
    }

    /// Whether the connection is to close once what it has in flight is answered.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Marks the connection closing (HTTP/2 connections that took their last request).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

impl AsRef<Sending> for ConnState {
    fn as_ref(&self) -> &Sending {
        &self.sending
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
    /// Counts a request of `conn` in flight, and whether it is the connection's last
    /// (`keep-alive-requests`).
    pub fn start(conn: Arc<ConnState>) -> (Self, bool) {
        let last = conn.activity.start() >= conn.max_requests;
        (InFlight(conn), last)
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

/// The watchdog's timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// No request yet for this long: closed (nginx `client_header_timeout`).
    pub header: Duration,
    /// No request in flight and none ended for this long after a request: closed (nginx
    /// `keepalive_timeout`).
    pub idle: Duration,
    /// Bodies waiting on the client and none moved for this long: closed (send timeout).
    pub send: Duration,
}

/// Closes the connection (through `abort`) once it has been idle for the header timeout
/// before its first request, or for the idle timeout after one (no request in flight and
/// none ended at any look for that long), or once response bodies have waited on the client
/// for the send timeout without any of them moving. It looks every quarter of the shortest
/// timeout, so each closes between 1 and 1.25 of its timeout.
pub async fn watchdog<C>(conn: Arc<C>, timeouts: Timeouts, abort: AbortHandle)
where
    C: AsRef<Activity> + AsRef<Sending>,
{
    let shortest = timeouts.header.min(timeouts.idle).min(timeouts.send);
    let period = (shortest / LOOKS_PER_TIMEOUT).max(Duration::from_millis(1));
    let looks_for = |timeout: Duration| {
        let looks = timeout.as_nanos().div_ceil(period.as_nanos());
        u32::try_from(looks).unwrap_or(u32::MAX).max(1)
    };
    let header_looks = looks_for(timeouts.header);
    let (idle_looks, send_looks) = (looks_for(timeouts.idle), looks_for(timeouts.send));
    // Whether a request has started on the connection (the keep-alive timeout applies then).
    let mut served = false;
    let mut looks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut quiet, mut ended) = (0, 0);
    let (mut stalled, mut taken) = (0, 0);
    loop {
        looks.tick().await;
        let activity: &Activity = (*conn).as_ref();
        let (in_flight, now_ended) = activity.read();
        if in_flight > 0 || now_ended != ended {
            (quiet, ended) = (0, now_ended);
            served = true;
        } else {
            quiet += 1;
        }
        let sending: &Sending = (*conn).as_ref();
        let (waiting, now_taken) = sending.read();
        if waiting > 0 && now_taken == taken {
            stalled += 1;
        } else {
            (stalled, taken) = (0, now_taken);
        }
        let quiet_looks = if served { idle_looks } else { header_looks };
        if quiet >= quiet_looks || stalled >= send_looks {
            break;
        }
    }
    abort.abort();
}

/// A response body on its way to the client, keeping its request counted in flight until it
/// has been sent (or dropped), and counted as waiting on the client between handing a piece
/// to the client side and being asked for the next (the send timeout).
#[derive(Debug)]
pub struct ClientBody {
    inner: ProxyBody,
    in_flight: InFlight,
    /// Counted in the connection's `Sending` as waiting on the client.
    waiting: bool,
}

// === impl ClientBody ===

impl ClientBody {
    /// `inner`, counted by `in_flight`.
    pub fn new(inner: ProxyBody, in_flight: InFlight) -> Self {
        ClientBody {
            inner,
            in_flight,
            waiting: false,
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
        let this = self.get_mut();
        if this.waiting {
            this.waiting = false;
            this.in_flight.0.sending.resume();
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // A piece handed over with more to come: waiting on the client until asked again. The
        // last piece is not counted (the body is dropped once it is written).
        if let Poll::Ready(Some(Ok(_))) = &polled
            && !this.inner.is_end_stream()
        {
            this.waiting = true;
            this.in_flight.0.sending.wait();
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

impl Drop for ClientBody {
    fn drop(&mut self) {
        if self.waiting {
            self.in_flight.0.sending.resume();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::{AbortHandle, Abortable};
    use tokio::time::Instant;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(400);

    /// A connection's counters, without a proxy.
    #[derive(Debug, Default)]
    struct Counters {
        activity: Activity,
        sending: Sending,
    }

    impl Counters {
        fn start(&self) {
            self.activity.start();
        }

        fn end(&self) {
            self.activity.end();
        }
    }

    impl AsRef<Activity> for Counters {
        fn as_ref(&self) -> &Activity {
            &self.activity
        }
    }

    impl AsRef<Sending> for Counters {
        fn as_ref(&self) -> &Sending {
            &self.sending
        }
    }

    /// Runs the watchdog of `activity` until it closes the connection (checked); returns when.
    async fn closed_at(activity: &Arc<Counters>) -> Instant {
        closed_with(activity, TIMEOUT, TIMEOUT).await
    }

    async fn closed_with(activity: &Arc<Counters>, idle: Duration, send: Duration) -> Instant {
        let (abort, registration) = AbortHandle::new_pair();
        let connection = Abortable::new(std::future::pending::<()>(), registration);
        let header = idle;
        watchdog(activity.clone(), Timeouts { header, idle, send }, abort).await;
        assert!(connection.is_aborted());
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_closes_after_the_timeout() {
        let start = Instant::now();
        let closed = closed_at(&Arc::new(Counters::default())).await;
        assert_eq!(closed - start, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection_open() {
        let activity = Arc::new(Counters::default());
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
            let activity = Arc::new(Counters::default());
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

    /// Before its first request a connection has the header timeout; after one, the idle
    /// (keep-alive) timeout, longer or shorter.
    #[tokio::test(start_paused = true)]
    async fn the_first_request_has_the_header_timeout_the_next_the_keep_alive_timeout() {
        for (header, idle) in [(TIMEOUT, TIMEOUT * 4), (TIMEOUT * 4, TIMEOUT)] {
            let run = |conn: Arc<Counters>| async move {
                let (abort, registration) = AbortHandle::new_pair();
                let connection = Abortable::new(std::future::pending::<()>(), registration);
                let send = TIMEOUT * 100;
                watchdog(conn, Timeouts { header, idle, send }, abort).await;
                assert!(connection.is_aborted());
                Instant::now()
            };
            let start = Instant::now();
            let closed = run(Arc::new(Counters::default())).await - start;
            assert!(
                closed >= header && closed <= header * 5 / 4,
                "no request: closed after {closed:?}, header timeout {header:?}"
            );
            let conn = Arc::new(Counters::default());
            let watching = tokio::spawn(run(conn.clone()));
            tokio::time::sleep(TIMEOUT / 8).await;
            conn.start();
            conn.end();
            let ended = Instant::now();
            let closed = watching.await.unwrap() - ended;
            assert!(
                closed >= idle && closed <= idle * 5 / 4 + TIMEOUT / 4,
                "after a request: closed after {closed:?}, keep-alive {idle:?}"
            );
        }
    }

    /// A response waiting on a client that takes nothing closes the connection after the send
    /// timeout, though a request is in flight; one whose client keeps taking pieces does not.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_closed_after_the_send_timeout() {
        let send = Duration::from_millis(100);
        let conn = Arc::new(Counters::default());
        conn.start();
        conn.sending.wait();
        let start = Instant::now();
        let closed = closed_with(&conn, TIMEOUT * 10, send).await - start;
        assert!(
            closed >= send && closed <= send * 5 / 4,
            "closed after {closed:?}"
        );

        let conn = Arc::new(Counters::default());
        conn.start();
        let watching = tokio::spawn({
            let conn = conn.clone();
            async move { closed_with(&conn, TIMEOUT * 10, send).await }
        });
        for _ in 0..50 {
            conn.sending.wait();
            tokio::time::sleep(send / 2).await;
            conn.sending.resume();
        }
        assert!(
            !watching.is_finished(),
            "closed while the client took its response"
        );
        watching.abort();
    }
}
