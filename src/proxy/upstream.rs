//! Keep-alive HTTP/1.1 connections to upstreams: a pool of idle connections per endpoint,
//! connecting when none is idle, and giving a connection back once its response has been
//! read to the end.
//!
//! Built on `hyper::client::conn::http1` rather than hyper-util's generic client: Portico
//! already knows the endpoint's address (no URI to parse, no resolver, no pool key made of
//! scheme and authority strings), connects before it hands over the request body (so a
//! connect failure can always be retried on another endpoint), and returns a connection to
//! the pool from the response body itself when it ends, without a task per request.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

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

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// Connecting took longer than the connect timeout.
    Timeout,
    /// The connection was refused, reset, or the name did not resolve.
    Io(std::io::Error),
    /// The HTTP/1.1 handshake failed.
    Handshake(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "connection setup failed: {e}"),
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
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

/// Idle keep-alive connections by target; shared by every connection of the proxy.
pub struct UpstreamPool {
    idle: Mutex<HashMap<Target, Vec<Idle>>>,
    config: PoolConfig,
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
    sender: SendRequest<Incoming>,
    target: Target,
    /// Whether the connection was idle in the pool (it may have been closed by the upstream
    /// meanwhile: a request that fails on it before being written is retried on a new one).
    reused: bool,
    pool: Weak<UpstreamPool>,
}

impl fmt::Debug for Pooled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("target", &self.target)
            .field("reused", &self.reused)
            .finish()
    }
}

// === impl UpstreamPool ===

impl UpstreamPool {
    /// An empty pool; a task closes expired idle connections while the pool lives.
    pub fn new(config: PoolConfig) -> Arc<Self> {
        let pool = Arc::new(UpstreamPool {
            idle: Mutex::new(HashMap::new()),
            config,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            let period = (config.idle_timeout / 2).max(Duration::from_secs(1));
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.sweep(Instant::now());
                }
            });
        }
        pool
    }

    /// Idle connections kept, all targets together.
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Target, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle connections that expired or that the upstream closed.
    fn sweep(&self, now: Instant) {
        let timeout = self.config.idle_timeout;
        self.lock().retain(|_, list| {
            list.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < timeout);
            !list.is_empty()
        });
    }

    /// A connection to `target`: the most recently used idle one that is still open, or a
    /// new one.
    pub async fn checkout(self: &Arc<Self>, target: &Target) -> Result<Pooled, ConnectError> {
        while let Some(mut sender) = self.take_idle(target) {
            if sender.is_ready() {
                return Ok(self.pooled(sender, target.clone(), true));
            }
            // A connection goes back to the pool when its response body ended; hyper marks it
            // ready a moment later. `ready` fails if the upstream closed it meanwhile; one that
            // stays unready (it should not) is dropped rather than waited on.
            let ready = tokio::time::timeout(self.config.connect_timeout, sender.ready());
            if let Ok(Ok(())) = ready.await {
                return Ok(self.pooled(sender, target.clone(), true));
            }
        }
        self.connect(target).await
    }

    /// A new connection to `target`, bypassing the idle ones.
    pub async fn connect(self: &Arc<Self>, target: &Target) -> Result<Pooled, ConnectError> {
        let connecting = async {
            match target {
                Target::Addr(addr) => TcpStream::connect(addr).await,
                Target::Name(host, port) => TcpStream::connect((&**host, *port)).await,
            }
        };
        let stream = tokio::time::timeout(self.config.connect_timeout, connecting)
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (sender, connection) = http1::Builder::new()
            .handshake::<_, Incoming>(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        let peer = target.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(upstream = %peer, %error, "upstream connection ended");
            }
        });
        Ok(self.pooled(sender, target.clone(), false))
    }

    fn take_idle(&self, target: &Target) -> Option<SendRequest<Incoming>> {
        let mut idle = self.lock();
        let list = idle.get_mut(target)?;
        let now = Instant::now();
        while let Some(i) = list.pop() {
            if !i.sender.is_closed() && now.duration_since(i.since) < self.config.idle_timeout {
                return Some(i.sender);
            }
        }
        None
    }

    fn pooled(
        self: &Arc<Self>,
        sender: SendRequest<Incoming>,
        target: Target,
        reused: bool,
    ) -> Pooled {
        Pooled {
            sender,
            target,
            reused,
            pool: Arc::downgrade(self),
        }
    }

    fn give_back(&self, sender: SendRequest<Incoming>, target: Target) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(target).or_default();
        if list.len() < self.config.max_idle_per_target {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// How a request sent on a pooled connection failed.
#[derive(Debug)]
pub enum SendError {
    /// The connection failed before the request was written: it comes back, to be sent on
    /// another connection.
    NotSent(Box<Request<Incoming>>, hyper::Error),
    /// The request was (at least partly) written, or the response could not be read.
    Failed(hyper::Error),
}

// === impl Pooled ===

impl Pooled {
    /// Where this connection goes.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether this connection was idle in the pool before this request.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends `req` (origin-form URI, Host set); on success the response body gives the
    /// connection back to the pool when it ends.
    pub async fn send(
        mut self,
        req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match self.sender.try_send_request(req).await {
            Ok(response) => {
                // A switched protocol owns the connection from now on: never pooled.
                let give_back =
                    (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then_some(self);
                Ok(response.map(|body| UpstreamBody::new(body, give_back)))
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Err(SendError::NotSent(Box::new(req), e.into_error())),
                None => Err(SendError::Failed(e.into_error())),
            },
        }
    }
}

/// A response body from an upstream. When it has been read to the end, its connection goes
/// back to the pool; dropped before that, the connection is closed with it.
pub struct UpstreamBody {
    inner: Incoming,
    connection: Option<Pooled>,
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("connection", &self.connection)
            .finish()
    }
}

// === impl UpstreamBody ===

impl UpstreamBody {
    fn new(inner: Incoming, connection: Option<Pooled>) -> Self {
        let mut body = UpstreamBody { inner, connection };
        // Responses without a body (204, 304, HEAD, Content-Length: 0) end at once.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(pooled) = self.connection.take()
            && let Some(pool) = pooled.pool.upgrade()
        {
            pool.give_back(pooled.sender, pooled.target);
        }
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.connection = None,
            _ => {}
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

#[cfg(test)]
mod tests;
