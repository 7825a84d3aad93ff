//! Keep-alive HTTP/1.1 connections to upstreams: a pool of idle connections per endpoint,
//! connecting when none is idle, and giving a connection back once its response has been
//! read to the end.
//!
//! The client is Portico's own, over httparse (`codec`), and runs in the request's task: the
//! request head is written from the prepared request in one write, the response head is
//! parsed into a header map that shares the read buffer, and the response body is read from
//! the socket by the body itself, as the client side pulls it. There is no connection task,
//! no channel between the request and its connection, and a connection goes back to the pool
//! as soon as its response ends. Portico already knows the endpoint's address (no URI to
//! parse, no resolver), connects before it touches the request body (so a connect failure can
//! always be retried on another endpoint), and retries a request that a reused connection
//! turns out to be closed for, when nothing of its body had been read.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

pub use self::codec::{ClientForwarding, Forwarding};
use self::codec::{Decoded, Decoder, RequestFraming, ResponseFraming};
pub use self::stream::Io;
use crate::snapshot::upstream_tls::UpstreamTls;

mod codec;
mod h2;
mod stream;

/// Where a connection goes: a Service endpoint, or an ExternalName's DNS name and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// An endpoint address.
    Addr(SocketAddr),
    /// A DNS name (resolved at each connect) and a port.
    Name(Arc<str>, u16),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => addr.fmt(f),
            Target::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// What a pooled connection is for: its target, and the TLS settings it was made under
/// (`None`: clear text). A connection serves only requests of the same key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Where it goes.
    pub target: Target,
    /// How it speaks TLS.
    pub tls: Option<Arc<UpstreamTls>>,
    /// HTTP/2 (one multiplexed connection) rather than HTTP/1.1.
    pub http2: bool,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tls, self.http2) {
            (None, false) => self.target.fmt(f),
            (Some(_), false) => write!(f, "https://{}", self.target),
            (None, true) => write!(f, "h2c://{}", self.target),
            (Some(_), true) => write!(f, "h2://{}", self.target),
        }
    }
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// Connecting took longer than the connect timeout.
    Timeout,
    /// The connection was refused, reset, or the name did not resolve.
    Io(io::Error),
    /// An ExternalName resolved only to addresses of the node itself (see [`crate::egress`]).
    Refused(crate::egress::Refused),
    /// The TLS handshake failed (the endpoint's certificate did not verify, it does not
    /// speak TLS…).
    Tls(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Refused(r) => write!(f, "not connected: {r}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// How the pool connects and how long it keeps idle connections.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Connecting must finish within this.
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// At most this many idle connections are kept per target.
    pub max_idle_per_target: usize,
    /// The longest wait between two reads of a response body (nginx `proxy_read_timeout`);
    /// also the wait for the head of a request whose body was streamed.
    pub read_timeout: Duration,
    /// The longest wait between two writes of a streamed request body (nginx
    /// `proxy_send_timeout`).
    pub send_timeout: Duration,
    /// The longest wait between two reads of a streamed request body from the client (nginx
    /// `client_body_timeout`).
    pub client_body_timeout: Duration,
}

/// Bytes asked of the socket per read, at least.
const READ_SIZE: usize = 8 * 1024;

/// Bytes asked of the socket per read, at most (a large body is read in pieces this big).
const MAX_READ_SIZE: usize = 64 * 1024;

/// One connection to an upstream with its buffers.
struct Conn {
    io: Io,
    /// What it was made for (kept here, in the box: every request's future moves a
    /// `Pooled`).
    key: Key,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The request head being written (kept for its capacity).
    write: Vec<u8>,
    /// The pool's timeouts (a body reads them without reaching the pool).
    timeouts: Timeouts,
    /// Requests this connection has carried (`upstream-keepalive-requests`).
    served: u32,
    /// The pool's tick when it was opened (`upstream-keepalive-time`).
    born: u64,
    /// The request being sent asked for trailers (`te: trailers`, gRPC's): kept for an
    /// HTTP/2 endpoint.
    te_trailers: bool,
    /// On an HTTP/2 connection: this request, counted in flight on it.
    in_flight: Option<InFlight>,
}

/// The timeouts a connection applies itself (the response head's is `proxy::deadline`).
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    read: Duration,
    send: Duration,
    client_body: Duration,
}

// === impl Conn ===

impl Conn {
    /// A handle on an HTTP/2 connection, for one request (its buffers stay small: only the
    /// request head is written into them).
    fn new_h2(io: Io, key: Key, timeouts: Timeouts) -> Self {
        Conn {
            io,
            key,
            read: BytesMut::new(),
            write: Vec::with_capacity(512),
            timeouts,
            served: 0,
            born: 0,
            te_trailers: false,
            in_flight: None,
        }
    }

    fn new(io: Io, key: Key, timeouts: Timeouts, born: u64) -> Self {
        Conn {
            io,
            key,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::with_capacity(1024),
            timeouts,
            served: 0,
            born,
            te_trailers: false,
            in_flight: None,
        }
    }

    /// Whether an idle connection has been closed by the upstream, or has sent something
    /// unasked (see [`Io::is_stale`]).
    fn is_stale(&mut self) -> bool {
        self.io.is_stale()
    }
}

struct Idle {
    conn: Box<Conn>,
    /// The pool's tick when the connection went idle.
    since: u64,
}

/// Ticks of the idle clock per idle timeout, at least: an idle connection expires between 1
/// and 1.25 idle timeouts after it went idle, without reading the clock per request.
const TICKS_PER_TIMEOUT: u64 = 4;

/// The idle clock ticks at least this often, so that an idle timeout or a connection age set
/// later (the ConfigMap's `upstream-keepalive-*`) is kept to within a second.
const MAX_TICK: Duration = Duration::from_secs(1);

/// Hashes pool keys: endpoint addresses and names from the cluster's own objects, not from
/// clients, so a fast multiply-rotate hash does (SipHash's flood resistance is not needed,
/// and it cost two SipHash rounds per request).
#[derive(Clone, Copy, Default)]
struct TargetHasher(u64);

impl std::hash::Hasher for TargetHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n.into());
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Targets<V> = HashMap<Key, V, std::hash::BuildHasherDefault<TargetHasher>>;

/// Idle keep-alive connections by target; shared by every connection of the proxy.
pub struct UpstreamPool {
    idle: Mutex<Targets<Vec<Idle>>>,
    /// The idle clock: advanced by the sweeping task every `period`.
    tick: AtomicU64,
    /// The idle clock's period.
    period: Duration,
    config: PoolConfig,
    /// What the ConfigMap may change while the pool lives.
    limits: Limits,
    /// The TLS client configurations in use.
    tls: stream::ClientConfigs,
    /// HTTP/2 connections by key: multiplexed connections, each with its requests in flight
    /// and the idle clock's tick when it was last used.
    h2: Mutex<Targets<Vec<H2Conn>>>,
    /// Per key, held while a new HTTP/2 connection is made: requests that find no room wait
    /// for it rather than each opening one.
    h2_connecting: Mutex<Targets<Arc<tokio::sync::Mutex<()>>>>,
}

/// One multiplexed HTTP/2 connection of the pool.
struct H2Conn {
    sender: hyper::client::conn::http2::SendRequest<h2::RequestBody>,
    /// Requests in flight on it (checked out, until their response body ends).
    in_flight: Arc<AtomicU32>,
    /// The idle clock's tick when it was last used.
    used: u64,
}

/// Requests in flight on one HTTP/2 connection before another is opened: the RFC 9113
/// recommended minimum for SETTINGS_MAX_CONCURRENT_STREAMS, which servers advertise or exceed
/// (a peer that allows fewer gets the rest queued by hyper until a stream frees).
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// HTTP/2 connections kept per key, at most (past them, requests share the least busy).
const MAX_H2_CONNECTIONS: usize = 16;

/// One request in flight on an HTTP/2 connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicU32>);

impl InFlight {
    fn new(count: &Arc<AtomicU32>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pool's limits that follow the snapshot (`upstream-keepalive-*`, `client-body-timeout`),
/// as atomics: read per request without a lock.
#[derive(Debug)]
struct Limits {
    /// Idle connections kept per target (0: none).
    max_idle: AtomicU32,
    /// Requests one connection carries before it is closed.
    max_requests: AtomicU32,
    /// Ticks a connection may live before it is closed instead of kept.
    max_age: AtomicU64,
    /// Ticks a connection may stay idle.
    idle: AtomicU64,
    /// The client body timeout of streamed bodies, in milliseconds.
    client_body_ms: AtomicU64,
}

/// What [`UpstreamPool::configure`] sets.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Idle connections kept per target (0: none).
    pub max_idle_per_target: u32,
    /// Requests one connection carries before it is closed.
    pub max_requests: u32,
    /// A connection older than this is closed once its response is in.
    pub max_age: Duration,
    /// Idle connections older than this are closed (`None`: the pool's configuration).
    pub idle_timeout: Option<Duration>,
    /// The longest wait between two reads of a streamed request body (`None`: the pool's
    /// configuration).
    pub client_body_timeout: Option<Duration>,
}

impl fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("idle", &self.idle_count())
            .field("config", &self.config)
            .finish()
    }
}

/// A connection checked out of the pool (or new), for one request.
pub struct Pooled {
    /// Boxed: a pooled connection moves with its request through several futures.
    conn: Box<Conn>,
    /// Whether the connection was idle in the pool (it may have been closed by the upstream
    /// meanwhile: a request that finds it closed before any response is sent again on a new
    /// one).
    reused: bool,
    pool: Weak<UpstreamPool>,
}

impl fmt::Debug for Pooled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("target", &self.conn.key)
            .field("reused", &self.reused)
            .finish()
    }
}

// === impl UpstreamPool ===

impl UpstreamPool {
    /// An empty pool; a task closes expired idle connections while the pool lives.
    pub fn new(config: PoolConfig) -> Arc<Self> {
        let period = (config.idle_timeout / TICKS_PER_TIMEOUT as u32)
            .clamp(Duration::from_millis(1), MAX_TICK);
        let pool = Arc::new(UpstreamPool {
            idle: Mutex::new(Targets::default()),
            tick: AtomicU64::new(0),
            period,
            config,
            limits: Limits {
                max_idle: AtomicU32::new(
                    u32::try_from(config.max_idle_per_target).unwrap_or(u32::MAX),
                ),
                max_requests: AtomicU32::new(u32::MAX),
                max_age: AtomicU64::new(u64::MAX),
                idle: AtomicU64::new(ticks(config.idle_timeout, period)),
                client_body_ms: AtomicU64::new(millis(config.client_body_timeout)),
            },
            tls: stream::ClientConfigs::default(),
            h2: Mutex::new(Targets::default()),
            h2_connecting: Mutex::new(Targets::default()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.tick.fetch_add(1, Ordering::Relaxed);
                    pool.sweep();
                }
            });
        }
        pool
    }

    /// Sets the limits that follow the snapshot; idle connections over them go at the next
    /// sweep or checkout.
    pub fn configure(&self, limits: PoolLimits) {
        let l = &self.limits;
        let idle = limits.idle_timeout.unwrap_or(self.config.idle_timeout);
        let body = limits
            .client_body_timeout
            .unwrap_or(self.config.client_body_timeout);
        l.max_idle
            .store(limits.max_idle_per_target, Ordering::Relaxed);
        l.max_requests
            .store(limits.max_requests.max(1), Ordering::Relaxed);
        l.max_age
            .store(ticks(limits.max_age, self.period), Ordering::Relaxed);
        l.idle.store(ticks(idle, self.period), Ordering::Relaxed);
        l.client_body_ms.store(millis(body), Ordering::Relaxed);
    }

    /// Idle connections kept, all targets together.
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Targets<Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle connections that expired or that the upstream closed.
    fn sweep(&self) {
        let now = self.tick.load(Ordering::Relaxed);
        let limit = self.limits.idle.load(Ordering::Relaxed);
        self.lock().retain(|_, list| {
            list.retain_mut(|i| !expired(i, now, limit) && !i.conn.is_stale());
            !list.is_empty()
        });
        // An HTTP/2 connection with no stream and unused for the idle timeout is let go, as
        // is one that closed.
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|_, list| {
            list.retain(|c| {
                let busy = c.in_flight.load(Ordering::Relaxed) > 0;
                !c.sender.is_closed() && (busy || now.saturating_sub(c.used) <= limit)
            });
            !list.is_empty()
        });
        drop(h2);
        let mut gates = self.h2_connecting.lock().unwrap_or_else(|p| p.into_inner());
        gates.retain(|_, gate| Arc::strong_count(gate) > 1);
    }

    /// A clear-text connection to `target`: the most recently used idle one that is still
    /// open, or a new one.
    pub async fn checkout(self: &Arc<Self>, target: &Target) -> Result<Pooled, ConnectError> {
        let key = Key {
            target: target.clone(),
            tls: None,
            http2: false,
        };
        self.checkout_within(&key, None).await
    }

    /// A connection for `key` (TLS when its settings say so), connecting within
    /// `connect_timeout` (a route's own) rather than the pool's when it is given; the TLS
    /// handshake is part of connecting, as nginx bounds it by `proxy_connect_timeout`.
    pub async fn checkout_within(
        self: &Arc<Self>,
        key: &Key,
        connect_timeout: Option<Duration>,
    ) -> Result<Pooled, ConnectError> {
        if key.http2 {
            // Boxed: HTTP/2 requests are the rarer kind, and their wait for a connection being
            // made would weigh on every request's future.
            return Box::pin(self.checkout_h2(key, connect_timeout)).await;
        }
        if let Some(conn) = self.take_idle(key) {
            return Ok(self.pooled(conn, true));
        }
        // Boxed: connecting (a resolver, a connect timer, a handshake) would make every
        // request's future larger, and a new connection costs far more than the allocation.
        Box::pin(self.connect_within(key.clone(), connect_timeout)).await
    }

    /// A request's handle on an HTTP/2 connection for `key`: one with room, else a new one,
    /// made by one request while the others that find no room wait for it.
    async fn checkout_h2(
        self: &Arc<Self>,
        key: &Key,
        connect_timeout: Option<Duration>,
    ) -> Result<Pooled, ConnectError> {
        if let Some(pooled) = self.h2_room(key) {
            return Ok(pooled);
        }
        let gate = {
            let mut gates = self.h2_connecting.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(gates.entry(key.clone()).or_default())
        };
        let _making = gate.lock().await;
        if let Some(pooled) = self.h2_room(key) {
            return Ok(pooled);
        }
        self.connect_within(key.clone(), connect_timeout).await
    }

    /// A handle on a pooled HTTP/2 connection for `key` with room for another stream: the
    /// first with room; with every one full, `None` (make another) unless there are enough,
    /// then the least busy.
    fn h2_room(self: &Arc<Self>, key: &Key) -> Option<Pooled> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let list = h2.get_mut(key)?;
        list.retain(|c| !c.sender.is_closed());
        let load = |c: &H2Conn| c.in_flight.load(Ordering::Relaxed);
        let room = list
            .iter()
            .position(|c| load(c) < MAX_STREAMS_PER_CONNECTION);
        let i = match room {
            Some(i) => i,
            None if list.len() >= MAX_H2_CONNECTIONS => {
                (0..list.len()).min_by_key(|&i| load(&list[i]))?
            }
            None => return None,
        };
        let c = &mut list[i];
        c.used = self.tick.load(Ordering::Relaxed);
        let io = Io::H2(Box::new(c.sender.clone()));
        let mut conn = Conn::new_h2(io, key.clone(), self.timeouts());
        conn.in_flight = Some(InFlight::new(&c.in_flight));
        Some(self.pooled(Box::new(conn), true))
    }

    /// A new connection for `key`, bypassing the idle ones.
    pub async fn connect(self: &Arc<Self>, key: Key) -> Result<Pooled, ConnectError> {
        self.connect_within(key, None).await
    }

    /// [`connect`](Self::connect) within `connect_timeout` when it is given.
    async fn connect_within(
        self: &Arc<Self>,
        key: Key,
        connect_timeout: Option<Duration>,
    ) -> Result<Pooled, ConnectError> {
        let connecting = async {
            let stream = match &key.target {
                Target::Addr(addr) => TcpStream::connect(addr).await.map_err(ConnectError::Io)?,
                // Only to addresses that are not the node itself.
                Target::Name(host, port) => match crate::egress::connect(host, *port).await {
                    Ok(stream) => stream,
                    Err(crate::egress::EgressError::Refused(r)) => {
                        return Err(ConnectError::Refused(r));
                    }
                    Err(crate::egress::EgressError::Io(e)) => return Err(ConnectError::Io(e)),
                },
            };
            let _ = stream.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let io = match &key.tls {
                None => Io::Plain(stream),
                Some(tls) => {
                    let config = self
                        .tls
                        .get(tls, key.http2)
                        .map_err(|e| ConnectError::Tls(io::Error::other(e)))?;
                    let peer = stream.peer_addr().map_err(ConnectError::Io)?;
                    let name = tls.server_name(peer.ip());
                    let connector = tokio_rustls::TlsConnector::from(config);
                    match connector.connect(name, stream).await {
                        Ok(stream) => Io::Tls(Box::new(stream)),
                        Err(e) => return Err(ConnectError::Tls(e)),
                    }
                }
            };
            if !key.http2 {
                return Ok(io);
            }
            // The HTTP/2 preface and settings, within the connect timeout too.
            let sender = h2::handshake(io).await.map_err(ConnectError::Io)?;
            Ok(Io::H2(Box::new(sender)))
        };
        let limit = connect_timeout.unwrap_or(self.config.connect_timeout);
        let io = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let born = self.tick.load(Ordering::Relaxed);
        if let Io::H2(sender) = &io {
            let in_flight = Arc::new(AtomicU32::new(0));
            let guard = InFlight::new(&in_flight);
            let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
            let list = h2.entry(key.clone()).or_default();
            if list.len() < MAX_H2_CONNECTIONS {
                list.push(H2Conn {
                    sender: (**sender).clone(),
                    in_flight,
                    used: born,
                });
            }
            drop(h2);
            let mut conn = Conn::new_h2(io, key, self.timeouts());
            conn.in_flight = Some(guard);
            return Ok(self.pooled(Box::new(conn), false));
        }
        let conn = Conn::new(io, key, self.timeouts(), born);
        Ok(self.pooled(Box::new(conn), false))
    }

    /// The timeouts a connection applies unless a route sets its own.
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            read: self.config.read_timeout,
            send: self.config.send_timeout,
            client_body: Duration::from_millis(self.limits.client_body_ms.load(Ordering::Relaxed)),
        }
    }

    fn take_idle(&self, key: &Key) -> Option<Box<Conn>> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        let now = self.tick.load(Ordering::Relaxed);
        let limit = self.limits.idle.load(Ordering::Relaxed);
        while let Some(mut i) = list.pop() {
            if !expired(&i, now, limit) && !i.conn.is_stale() {
                return Some(i.conn);
            }
        }
        None
    }

    fn pooled(self: &Arc<Self>, conn: Box<Conn>, reused: bool) -> Pooled {
        Pooled {
            conn,
            reused,
            pool: Arc::downgrade(self),
        }
    }

    fn give_back(&self, mut conn: Box<Conn>) {
        let l = &self.limits;
        let now = self.tick.load(Ordering::Relaxed);
        // `upstream-keepalive-requests` and `-time`: closed rather than kept.
        conn.served = conn.served.saturating_add(1);
        if conn.served >= l.max_requests.load(Ordering::Relaxed)
            || now.saturating_sub(conn.born) >= l.max_age.load(Ordering::Relaxed)
        {
            return;
        }
        let max_idle = l.max_idle.load(Ordering::Relaxed) as usize;
        if max_idle == 0 {
            return;
        }
        // A route's own timeouts end with its exchange.
        conn.timeouts = self.timeouts();
        let mut idle = self.lock();
        // The key is cloned only for a target's first idle list (not once a request).
        match idle.get_mut(&conn.key) {
            Some(list) if list.len() < max_idle => list.push(Idle { conn, since: now }),
            Some(_) => {}
            None => {
                let key = conn.key.clone();
                idle.insert(key, vec![Idle { conn, since: now }]);
            }
        }
    }
}

/// Whether an idle connection has been idle for more than `limit` ticks (at tick `now`).
fn expired(idle: &Idle, now: u64, limit: u64) -> bool {
    now.saturating_sub(idle.since) > limit
}

/// Ticks of `period` in `d`, rounded up (at least one).
fn ticks(d: Duration, period: Duration) -> u64 {
    let n = d.as_nanos().div_ceil(period.as_nanos().max(1));
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

/// `d` in whole milliseconds (at least one).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// How a request sent on a pooled connection failed.
#[derive(Debug)]
pub enum SendError {
    /// A reused connection turned out to be closed before any of the response came, and the
    /// request had no body: its head can go again, on a new connection to the same target.
    NotSent(Resend, io::Error),
    /// The request (or some of its body) is gone, or the response was invalid.
    Failed(io::Error),
    /// The upstream took a streamed body's bytes or sent its response head too slowly (the
    /// send or read timeout): 504.
    TimedOut(&'static str),
    /// The client sent nothing of its streamed body for the client body timeout: 408.
    ClientTimedOut,
    /// The client's streamed body failed (it went away, or broke its framing).
    Client(String),
    /// The client's body grew past the route's `proxy-body-size`: 413.
    TooLarge,
}

/// A request written for a target (its head, and its body when that was buffered), to be
/// sent again on another connection to it.
#[derive(Debug)]
pub struct Resend {
    key: Key,
    head: Vec<u8>,
    head_request: codec::Reading,
}

// === impl Resend ===

impl Resend {
    /// Where the request was going, and how.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The same request, ready to go on `pooled` (a connection to the same target).
    pub fn on(mut self, mut pooled: Pooled) -> Exchange {
        std::mem::swap(&mut pooled.conn.write, &mut self.head);
        Exchange {
            pooled,
            body: None,
            head_request: self.head_request,
            resendable: true,
        }
    }
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// The whole body, read before connecting (at most `--client-body-buffer-size`): it
    /// goes with its Content-Length in the same write as the head, and can be sent again.
    Buffered(Bytes),
    /// A body larger than the buffer: what was read of it, then the rest as it comes.
    Streaming(Box<Streaming>),
}

/// A body that outgrew the buffer.
#[derive(Debug)]
pub struct Streaming {
    /// What was read before connecting.
    pub read: Vec<Bytes>,
    /// The rest, from the client.
    pub rest: Incoming,
    /// Its whole length, when the client announced it.
    pub length: Option<u64>,
    /// The most it may hold (`proxy-body-size`); past it the upload is cut and the client
    /// gets 413.
    pub max: Option<u64>,
}

// === impl RequestBody ===

impl RequestBody {
    /// The same body once more, for another endpoint (`proxy-next-upstream`): `None` for one
    /// that streams from the client (it can go only once).
    pub fn again(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Buffered(data) => Some(RequestBody::Buffered(data.clone())),
            RequestBody::Streaming(_) => None,
        }
    }

    /// Reads `body` until it ends or holds more than `limit` bytes, each read within
    /// `timeout` (nginx's `client_body_timeout`): a slow client costs this buffer, not an
    /// upstream connection. Trailers of a body that fits are dropped (it goes with a
    /// Content-Length, as nginx sends a buffered body). A body announced or grown larger
    /// than `max` is refused (413).
    ///
    /// `at_once` (an HTTP/2 endpoint: gRPC): only what the client has already sent is taken,
    /// never waited for, and the rest streams as it comes, as nginx's `grpc_pass` never
    /// buffers. A bidirectional call whose client waits for an answer before sending more
    /// would otherwise wait for ever (until the client body timeout); a unary call's message,
    /// which comes with its head, is still all in hand (and can go again).
    pub async fn read(
        mut body: Incoming,
        limit: usize,
        timeout: Duration,
        max: Option<u64>,
        at_once: bool,
    ) -> Result<RequestBody, SendError> {
        if body.is_end_stream() {
            return Ok(RequestBody::Empty);
        }
        let length = body.size_hint().exact();
        let over = |n: u64| max.is_some_and(|m| n > m);
        if length.is_some_and(over) {
            return Err(SendError::TooLarge);
        }
        // What was read goes first, the rest as the client sends it.
        let streaming = |read, rest| {
            let body = Streaming {
                read,
                rest,
                length,
                max,
            };
            Ok(RequestBody::Streaming(Box::new(body)))
        };
        let mut read: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        loop {
            if over(total as u64) {
                return Err(SendError::TooLarge);
            }
            if total > limit {
                return streaming(read, body);
            }
            let next = if at_once {
                match futures_util::FutureExt::now_or_never(body.frame()) {
                    Some(next) => Ok(next),
                    // Nothing more yet: the rest streams.
                    None => return streaming(read, body),
                }
            } else {
                tokio::time::timeout(timeout, body.frame()).await
            };
            let frame = match next {
                Err(_) => return Err(SendError::ClientTimedOut),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(SendError::Client(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                total += data.len();
                read.push(data);
            }
        }
        Ok(RequestBody::Buffered(match read.len() {
            0 => Bytes::new(),
            1 => read.pop().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(total);
                for piece in &read {
                    joined.extend_from_slice(piece);
                }
                joined.freeze()
            }
        }))
    }

    fn framing(&self) -> RequestFraming {
        match self {
            RequestBody::Empty => RequestFraming::Empty,
            RequestBody::Buffered(data) => RequestFraming::Length(data.len() as u64),
            RequestBody::Streaming(s) => s
                .length
                .map_or(RequestFraming::Chunked, RequestFraming::Length),
        }
    }
}

/// A request whose head is written into its connection's buffer, ready to be sent.
#[derive(Debug)]
pub struct Exchange {
    pooled: Pooled,
    /// A body too large to buffer, and how it goes; `None` for a request without a body or
    /// with a buffered one (written with the head).
    body: Option<(Box<Streaming>, RequestFraming)>,
    /// How the response head is read (the request was HEAD; the Server field hidden).
    head_request: codec::Reading,
    /// The request has no body: on a reused connection that turns out closed before any
    /// response byte, it can go again.
    resendable: bool,
}

/// Bytes that an upstream sent after a 101 response head, and its connection: the switched
/// protocol's.
#[derive(Debug)]
pub struct Upgraded {
    /// The connection.
    pub io: Io,
    /// What the upstream sent after the 101 head, before the tunnel started.
    pub read: Bytes,
}

// === impl Pooled ===

impl Pooled {
    /// Writes the head of a request, rewritten by `fwd` (see `codec::encode_head`), into this
    /// connection's buffer, with its body when that was buffered: from there it is sent in one
    /// write, and sent again if need be (see [`Resend`]).
    pub fn prepare(
        mut self,
        parts: &http::request::Parts,
        body: RequestBody,
        fwd: &Forwarding<'_>,
    ) -> Exchange {
        let framing = body.framing();
        let resendable = matches!(body, RequestBody::Empty);
        self.conn.write.clear();
        codec::encode_head(
            &mut self.conn.write,
            parts,
            framing,
            fwd,
            &self.conn.key.target,
        );
        let body = match body {
            RequestBody::Empty => None,
            RequestBody::Buffered(data) => {
                self.conn.write.extend_from_slice(&data);
                None
            }
            RequestBody::Streaming(streaming) => Some((streaming, framing)),
        };
        self.conn.te_trailers = matches!(self.conn.io, Io::H2(_))
            && parts
                .headers
                .get_all(http::header::TE)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        Exchange {
            pooled: self,
            body,
            head_request: codec::Reading::proxied(parts.method == Method::HEAD),
            resendable,
        }
    }

    fn response(mut self, head: codec::Head) -> io::Result<Response<UpstreamBody>> {
        let mut response = Response::new(UpstreamBody::empty());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        let body = if head.framing == ResponseFraming::Upgrade {
            UpstreamBody {
                upgraded: Some(Box::new(Upgraded {
                    read: self.conn.read.split().freeze(),
                    io: self.conn.io,
                })),
                ..UpstreamBody::empty()
            }
        } else {
            let mut decoder = Decoder::new(head.framing);
            // What came with the head is decoded now, all of it: a body that came whole
            // (small responses) gives its connection back at once and lets the client side
            // write head and body together, and a body broken within what came is a 502
            // rather than a head the client would never see (hyper drops an unflushed head
            // when the body fails).
            let (mut ready, mut trailers) = (None, None);
            let mut joined: Option<BytesMut> = None;
            while !self.conn.read.is_empty() {
                match decoder.decode(&mut self.conn.read)? {
                    Decoded::Data(data) => match (&mut joined, ready.take()) {
                        (Some(joined), _) => joined.extend_from_slice(&data),
                        (None, None) => ready = Some(data),
                        (None, Some(first)) => {
                            let mut both = BytesMut::from(first);
                            both.extend_from_slice(&data);
                            joined = Some(both);
                        }
                    },
                    Decoded::Trailers(fields) => trailers = Some(Box::new(fields)),
                    Decoded::NeedMore | Decoded::End => break,
                }
            }
            if let Some(joined) = joined {
                ready = Some(joined.freeze());
            }
            let mut body = UpstreamBody {
                decoder,
                ready,
                trailers,
                conn: Some(Returning {
                    pooled: self,
                    keep_alive: head.keep_alive,
                }),
                upgraded: None,
                stall: Stall::default(),
                h2: None,
            };
            if body.decoder.is_done() {
                body.release();
            }
            body
        };
        *response.body_mut() = body;
        Ok(response)
    }
}

// === impl Exchange ===

impl Exchange {
    /// The endpoint's Server field is kept in the response head (an authentication
    /// subrequest's, which `auth-response-headers` may copy).
    pub fn keeping_server(mut self) -> Exchange {
        self.head_request.hide_server = false;
        self
    }

    /// Whether the request streams a body too large to buffer: its send applies the send,
    /// client body and read timeouts itself, and must not run under the response deadline
    /// (a slow but progressing upload is never cut).
    pub fn streams_body(&self) -> bool {
        self.body.is_some()
    }

    /// A route's own read and send timeouts for this exchange (its response body included).
    pub fn set_timeouts(&mut self, read: Option<Duration>, send: Option<Duration>) {
        let timeouts = &mut self.pooled.conn.timeouts;
        if let Some(read) = read {
            timeouts.read = read;
        }
        if let Some(send) = send {
            timeouts.send = send;
        }
    }

    /// Sends the request and reads the response head; the response body reads the rest,
    /// and gives the connection back to the pool when it ends.
    pub async fn send(self) -> Result<Response<UpstreamBody>, SendError> {
        let Exchange {
            mut pooled,
            body,
            head_request,
            resendable,
        } = self;
        if matches!(pooled.conn.io, Io::H2(_)) {
            // Boxed: rare, and its future would weigh on every request's.
            return Box::pin(send_h2(pooled, body.map(|(b, _)| b), head_request)).await;
        }
        let head = match body {
            None => {
                let conn = &mut *pooled.conn;
                let mut written = conn.io.write_all(&conn.write).await;
                if written.is_ok() && conn.io.buffers_writes() {
                    written = conn.io.flush().await;
                }
                let sent = match written {
                    Ok(()) => read_head(&mut conn.io, &mut conn.read, head_request).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(head) => head,
                    // Nothing came back on a connection that sat idle: the upstream closed
                    // it as the request went out. The request has no body, so it can go
                    // again.
                    Err(e)
                        if resendable && pooled.reused && conn.read.is_empty() && is_closed(&e) =>
                    {
                        let head = std::mem::take(&mut conn.write);
                        let key = conn.key.clone();
                        let resend = Resend {
                            key,
                            head,
                            head_request,
                        };
                        return Err(SendError::NotSent(resend, e));
                    }
                    Err(e) => return Err(SendError::Failed(e)),
                }
            }
            // Boxed: the body-carrying path's future is large, and a bodiless request
            // should not carry its size.
            Some((body, framing)) => {
                let sending = send_with_body(&mut pooled.conn, body, framing, head_request);
                let (head, body_sent) = Box::pin(sending).await?;
                let mut head = head.map_err(SendError::Failed)?;
                // An early answer (413, 401…) before the whole body went: the upstream
                // stopped reading, and the connection cannot be trusted again.
                if !body_sent {
                    head.keep_alive = false;
                }
                head
            }
        };
        pooled.response(head).map_err(SendError::Failed)
    }
}

/// Sends a request on an HTTP/2 connection and reads its response head; the body streams from
/// the connection's task.
async fn send_h2(
    pooled: Pooled,
    body: Option<Box<Streaming>>,
    reading: codec::Reading,
) -> Result<Response<UpstreamBody>, SendError> {
    let Conn {
        io,
        key,
        write,
        timeouts,
        te_trailers,
        in_flight,
        ..
    } = *pooled.conn;
    let Io::H2(sender) = io else {
        return Err(SendError::Failed(io::Error::other(
            "not an HTTP/2 connection",
        )));
    };
    let tls = key.tls.is_some();
    // A request whose head and body are all in `write` can go again.
    let again = body.is_none();
    let request = h2::request(&write, body, tls, te_trailers, timeouts.client_body)
        .map_err(SendError::Failed)?;
    // A body that streams: the send timeout while it goes; the head timeout (the read
    // timeout, or the call's shorter deadline) starts once it is all sent.
    let stream_timeouts = (!again).then(|| {
        let read = Some(timeouts.read);
        let head = super::headers::grpc_deadline(request.headers(), read).unwrap_or(timeouts.read);
        (timeouts.send, head)
    });
    let (response, in_flight) = match h2::send(*sender, request, stream_timeouts).await {
        Ok(response) => (response, in_flight),
        // The connection went away (GOAWAY) before the request went out, or the endpoint
        // refused the stream unprocessed (REFUSED_STREAM): once more, on a connection that is
        // still open (or a new one).
        Err(e) if again && h2::not_sent(&e) => {
            drop(in_flight);
            let Some(pool) = pooled.pool.upgrade() else {
                return Err(e);
            };
            debug!(upstream = %key, error = ?e, "HTTP/2 request not processed; sending it once more");
            let fresh = pool
                .checkout_h2(&key, None)
                .await
                .map_err(|c| SendError::Failed(io::Error::other(c.to_string())))?;
            let Conn { io, in_flight, .. } = *fresh.conn;
            let Io::H2(sender) = io else {
                return Err(e);
            };
            let request = h2::request(&write, None, tls, te_trailers, timeouts.client_body)
                .map_err(SendError::Failed)?;
            (h2::send(*sender, request, None).await?, in_flight)
        }
        Err(e) => return Err(e),
    };
    let (mut parts, incoming) = response.into_parts();
    // As `codec::Reading::hide_server` for HTTP/1.1.
    if reading.hide_server {
        parts.headers.remove(http::header::SERVER);
    }
    let body = UpstreamBody {
        h2: Some(Box::new((incoming, timeouts.read, in_flight))),
        ..UpstreamBody::empty()
    };
    Ok(Response::from_parts(parts, body))
}

/// Whether a failure means the upstream closed (or reset) the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads from `io` into `read` until a final response head is in, informational ones skipped.
async fn read_head(
    io: &mut (impl AsyncRead + Unpin),
    read: &mut BytesMut,
    head_request: codec::Reading,
) -> io::Result<codec::Head> {
    loop {
        if let Some(head) = codec::parse_head(read, head_request)? {
            return Ok(head);
        }
        read.reserve(READ_SIZE);
        if io.read_buf(read).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if read.is_empty() {
                    "upstream closed the connection without responding"
                } else {
                    "upstream closed the connection in the middle of the response head"
                },
            ));
        }
    }
}

/// Writes the request head and body while watching for the response head: an upstream may
/// answer before it has read the whole body. Returns the head (or why none came) and whether
/// the whole body was sent. Each write of the body must finish within the send timeout, each
/// read of the client's body within the client body timeout, and once the body is sent the
/// head must come within the read timeout.
async fn send_with_body(
    conn: &mut Conn,
    body: Box<Streaming>,
    framing: RequestFraming,
    head_request: codec::Reading,
) -> Result<(io::Result<codec::Head>, bool), SendError> {
    let Conn {
        io,
        read,
        write,
        timeouts,
        ..
    } = conn;
    let timeouts = *timeouts;
    let exchange = Halves {
        write,
        read,
        body,
        framing,
        head_request,
        timeouts,
    };
    match io {
        Io::Plain(tcp) => {
            let (reader, writer) = tcp.split();
            exchange.run(reader, writer).await
        }
        Io::Tls(tls) => {
            let (reader, writer) = tokio::io::split(&mut **tls);
            exchange.run(reader, writer).await
        }
        Io::H2(_) => Err(SendError::Failed(io::Error::other(
            "an HTTP/2 connection carries requests, not bytes",
        ))),
    }
}

/// A request with a streamed body, to be written on a connection's write half while its
/// read half watches for the response head.
struct Halves<'c> {
    write: &'c [u8],
    read: &'c mut BytesMut,
    body: Box<Streaming>,
    framing: RequestFraming,
    head_request: codec::Reading,
    timeouts: Timeouts,
}

impl Halves<'_> {
    async fn run(
        self,
        mut reader: impl AsyncRead + Unpin,
        mut writer: impl AsyncWrite + Unpin,
    ) -> Result<(io::Result<codec::Head>, bool), SendError> {
        let Halves {
            write,
            read,
            body,
            framing,
            head_request,
            timeouts,
        } = self;
        let sending = async {
            within(timeouts.send, writer.write_all(write)).await?;
            write_body(&mut writer, *body, framing, timeouts).await?;
            within(timeouts.send, writer.flush()).await
        };
        let receiving = read_head(&mut reader, read, head_request);
        tokio::pin!(sending, receiving);
        const NO_HEAD: &str = "no response head within the read timeout";
        tokio::select! {
            biased;
            done = &mut sending => match done {
                Ok(()) => match tokio::time::timeout(timeouts.read, &mut receiving).await {
                    Ok(head) => Ok((head, true)),
                    Err(_) => Err(SendError::TimedOut(NO_HEAD)),
                },
                Err(BodyWriteError::Client(e)) => Err(SendError::Client(e.to_string())),
                Err(BodyWriteError::ClientTimedOut) => Err(SendError::ClientTimedOut),
                Err(BodyWriteError::TooLarge) => Err(SendError::TooLarge),
                Err(BodyWriteError::SendTimedOut) => Err(SendError::TimedOut(
                    "the upstream took no body bytes within the send timeout",
                )),
                // The upstream stopped reading; it may still have answered (a 413 before
                // closing), so the head is awaited all the same.
                Err(BodyWriteError::Upstream(error)) => {
                    debug!(%error, "upstream stopped reading the request body");
                    match tokio::time::timeout(timeouts.read, &mut receiving).await {
                        Ok(head) => Ok((head, false)),
                        Err(_) => Err(SendError::TimedOut(NO_HEAD)),
                    }
                }
            },
            head = &mut receiving => Ok((head, false)),
        }
    }
}

/// Why a request body could not be written.
enum BodyWriteError {
    /// Reading the client's body failed (the client went away, or broke its framing).
    Client(hyper::Error),
    /// The client sent nothing for the client body timeout.
    ClientTimedOut,
    /// The client's body grew past its limit.
    TooLarge,
    /// The upstream took nothing for the send timeout.
    SendTimedOut,
    /// Writing to the upstream failed.
    Upstream(io::Error),
}

impl From<io::Error> for BodyWriteError {
    fn from(e: io::Error) -> Self {
        BodyWriteError::Upstream(e)
    }
}

/// A write to the upstream within the send timeout.
async fn within(
    limit: Duration,
    write: impl Future<Output = io::Result<()>>,
) -> Result<(), BodyWriteError> {
    match tokio::time::timeout(limit, write).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(BodyWriteError::SendTimedOut),
    }
}

/// Copies the client's body (what was read before connecting, then the rest as it comes)
/// to the upstream, framed as `framing`.
async fn write_body(
    writer: &mut (impl AsyncWrite + Unpin),
    body: Streaming,
    framing: RequestFraming,
    timeouts: Timeouts,
) -> Result<(), BodyWriteError> {
    let Streaming {
        read,
        mut rest,
        max,
        ..
    } = body;
    let mut written = 0u64;
    let over = |n: u64| max.is_some_and(|m| n > m);
    let chunked = framing == RequestFraming::Chunked;
    for mut data in read {
        written += data.len() as u64;
        write_data(writer, &mut data, chunked, timeouts.send).await?;
    }
    loop {
        let frame = match tokio::time::timeout(timeouts.client_body, rest.frame()).await {
            Err(_) => return Err(BodyWriteError::ClientTimedOut),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(BodyWriteError::Client)?,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(mut data) => {
                written += data.len() as u64;
                if over(written) {
                    return Err(BodyWriteError::TooLarge);
                }
                write_data(writer, &mut data, chunked, timeouts.send).await?;
            }
            Err(frame) => {
                // Trailers: kept with a chunked body, which can carry them.
                if chunked && let Ok(trailers) = frame.into_trailers() {
                    let last = codec::last_chunk(Some(&trailers));
                    within(timeouts.send, writer.write_all(&last)).await?;
                    return Ok(());
                }
            }
        }
    }
    match framing {
        RequestFraming::Chunked => {
            within(timeouts.send, writer.write_all(&codec::last_chunk(None))).await?;
        }
        RequestFraming::Length(n) if written != n => {
            return Err(BodyWriteError::Upstream(io::Error::other(format!(
                "request body was {written} bytes, announced {n}"
            ))));
        }
        _ => {}
    }
    Ok(())
}

/// Writes one piece of body, as a chunk when `chunked`.
async fn write_data(
    writer: &mut (impl AsyncWrite + Unpin),
    data: &mut Bytes,
    chunked: bool,
    limit: Duration,
) -> Result<(), BodyWriteError> {
    if chunked {
        let line = codec::ChunkLine::new(data.len());
        let mut chunk = Buf::chain(line.as_bytes(), data).chain(&b"\r\n"[..]);
        within(limit, writer.write_all_buf(&mut chunk)).await
    } else {
        within(limit, writer.write_all_buf(data)).await
    }
}

/// The wait between two frames of a streamed body: a timer set the first time the stream
/// waits and moved on at each frame; past its limit the stream has stalled.
#[derive(Default)]
struct Stall(Option<Pin<Box<tokio::time::Sleep>>>);

impl Stall {
    /// Whether the stream, which has nothing now, has waited `limit` (the timer wakes `cx`).
    fn expired(&mut self, limit: Duration, cx: &mut Context<'_>) -> bool {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// A frame came: the next wait is counted from now.
    fn progressed(&mut self, limit: Duration) {
        if let Some(sleep) = &mut self.0 {
            sleep.as_mut().reset(tokio::time::Instant::now() + limit);
        }
    }
}

/// The connection a body gives back when it ends.
struct Returning {
    pooled: Pooled,
    keep_alive: bool,
}

/// A response body from an upstream, read from its connection as it is polled. When it has
/// been read to the end, the connection goes back to the pool; dropped before that, the
/// connection is closed with it.
pub struct UpstreamBody {
    decoder: Decoder,
    /// Body bytes already decoded, to go out first.
    ready: Option<Bytes>,
    /// Trailers already decoded, to go out after `ready`.
    trailers: Option<Box<HeaderMap>>,
    conn: Option<Returning>,
    upgraded: Option<Box<Upgraded>>,
    /// Set the first time the body waits for the upstream, and reset at each read: past it
    /// (the read timeout) the body fails and the client connection is closed.
    stall: Stall,
    /// An HTTP/2 endpoint's body, and the read timeout between two of its frames.
    h2: Option<Box<(Incoming, Duration, Option<InFlight>)>>,
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("decoder", &self.decoder)
            .field("connection", &self.conn.as_ref().map(|c| &c.pooled))
            .finish()
    }
}

// === impl UpstreamBody ===

impl UpstreamBody {
    fn empty() -> Self {
        UpstreamBody {
            decoder: Decoder::Done,
            ready: None,
            trailers: None,
            conn: None,
            upgraded: None,
            stall: Stall::default(),
            h2: None,
        }
    }

    /// The connection of a 101 response, for the switched protocol; `None` for any other.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        self.upgraded.take().map(|u| *u)
    }

    /// The body ended: the connection goes back to the pool if it can carry another request
    /// (kept alive, and nothing unasked in its buffer).
    fn release(&mut self) {
        if let Some(Returning { pooled, keep_alive }) = self.conn.take()
            && keep_alive
            && pooled.conn.read.is_empty()
            && let Some(pool) = pooled.pool.upgrade()
        {
            pool.give_back(pooled.conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        if let Some(h2) = this.h2.as_mut() {
            let (incoming, limit, _) = &mut **h2;
            let limit = *limit;
            return match Pin::new(incoming).poll_frame(cx) {
                Poll::Pending => {
                    if this.stall.expired(limit, cx) {
                        this.h2 = None;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the upstream sent nothing of the body within the read timeout",
                        ))));
                    }
                    Poll::Pending
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.stall.progressed(limit);
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.h2 = None;
                    Poll::Ready(Some(Err(io::Error::other(e))))
                }
                Poll::Ready(None) => {
                    this.h2 = None;
                    Poll::Ready(None)
                }
            };
        }
        loop {
            let Some(returning) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let conn = &mut returning.pooled.conn;
            let decoded = match this.decoder.decode(&mut conn.read) {
                Ok(decoded) => decoded,
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            match decoded {
                Decoded::Data(data) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    this.release();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::End => {
                    this.release();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {
                    let want = this
                        .decoder
                        .remaining()
                        .map_or(MAX_READ_SIZE, |n| n.min(MAX_READ_SIZE as u64) as usize);
                    conn.read.reserve(want.max(READ_SIZE));
                    let read =
                        tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.read);
                    let limit = conn.timeouts.read;
                    match read {
                        Poll::Pending => {
                            if this.stall.expired(limit, cx) {
                                this.conn = None;
                                return Poll::Ready(Some(Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "the upstream sent nothing of the body within the read timeout",
                                ))));
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(0)) => {
                            if let Err(e) = this.decoder.eof() {
                                this.conn = None;
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        Poll::Ready(Ok(_)) => {
                            this.stall.progressed(limit);
                        }
                        Poll::Ready(Err(e)) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(h2) = &self.h2 {
            // A stream that ended with its headers (gRPC's trailers-only answers) must end
            // with them towards the client too: the status is in those headers.
            return h2.0.is_end_stream();
        }
        self.ready.is_none() && self.trailers.is_none() && self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(h2) = &self.h2 {
            return h2.0.size_hint();
        }
        let ready = self.ready.as_ref().map_or(0, |d| d.len() as u64);
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n + ready),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready);
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests;
