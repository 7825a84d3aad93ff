//! The L7 proxy: HTTP and HTTPS listeners that route each request by the current snapshot
//! and forward it to a ready endpoint over pooled keep-alive HTTP/1.1 connections.

pub mod access;
pub mod balance;
pub mod basic;
pub mod body;
pub mod deadline;
pub mod drain;
pub mod errors;
mod handler;
pub mod headers;
mod idle;
pub mod listener;
mod path;
pub mod proxy_protocol;
pub mod sticky;
pub mod tls;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use self::balance::EndpointPicker;
use self::deadline::Deadlines;
use self::upstream::{PoolConfig, UpstreamPool};
use crate::metrics::Metrics;
use crate::resources::{ConnectionLimit, ConnectionPermit};
use crate::snapshot::SnapshotHandle;

/// Timeouts, limits and behaviour of the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Connecting to an endpoint (default 5 s); a timeout answers 504.
    pub connect_timeout: Duration,
    /// The longest wait between two reads from the upstream (nginx `proxy_read_timeout`,
    /// default 60 s): for the response head, counted from when the request (or its buffered
    /// body) is written, between 1 and 1.25 times this (see `deadline`); for the body, between
    /// two reads.
    pub read_timeout: Duration,
    /// The longest wait between two writes of a streamed request body to the upstream (nginx
    /// `proxy_send_timeout`, default 60 s).
    pub send_timeout: Duration,
    /// The longest wait between two reads of a request body from the client (nginx
    /// `client_body_timeout`, default 60 s): 408.
    pub client_body_timeout: Duration,
    /// A client that takes nothing of its response for this long is closed (nginx
    /// `send_timeout`, default 60 s).
    pub client_send_timeout: Duration,
    /// Request bodies up to this size are read whole before connecting (default 64 KiB).
    pub client_body_buffer_size: usize,
    /// Request header names with `_` are forwarded (default: dropped).
    pub underscores_in_headers: bool,
    /// A connection's first request head must be complete within this (default 60 s; the
    /// snapshot's `client-header-timeout` overrides it).
    pub client_header_timeout: Duration,
    /// Idle pooled upstream connections are closed after this long (default 90 s).
    pub upstream_idle_timeout: Duration,
    /// The TLS handshake must finish within this (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Largest request head (request line and headers) accepted (default 64 KiB).
    pub max_header_bytes: usize,
    /// Most request headers accepted (default 100).
    pub max_headers: usize,
    /// The HTTPS port named in redirects (default 443: not written).
    pub https_port: u16,
    /// Write one access-log line per request.
    pub access_log: bool,
    /// Client connections open at once, all proxy listeners together (default: no limit;
    /// `--max-connections` derives one from the file descriptor limit). Past it a new
    /// connection is accepted and closed at once.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            client_send_timeout: Duration::from_secs(60),
            client_body_buffer_size: 64 * 1024,
            underscores_in_headers: false,
            client_header_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            https_port: 443,
            access_log: true,
            max_connections: usize::MAX,
        }
    }
}

/// What every connection of the proxy shares.
#[derive(Debug)]
pub struct Proxy {
    snapshot: SnapshotHandle,
    upstreams: Arc<UpstreamPool>,
    /// The response timeout of each request.
    deadlines: Deadlines,
    picker: Arc<dyn EndpointPicker>,
    metrics: Arc<Metrics>,
    /// Open client connections against `config.max_connections`.
    connections: Arc<ConnectionLimit>,
    /// The snapshot generation whose connection settings the pool has (`u64::MAX`: none).
    configured: std::sync::atomic::AtomicU64,
    /// Basic authentication's verified-credentials cache and slow-check bound.
    basic: basic::Checker,
    /// External authentication's answers cache.
    external: handler::external::Answers,
    config: ProxyConfig,
}

// === impl Proxy ===

impl Proxy {
    /// A proxy reading `snapshot` and picking endpoints with `picker`.
    pub fn new(
        snapshot: SnapshotHandle,
        picker: Arc<dyn EndpointPicker>,
        metrics: Arc<Metrics>,
        config: ProxyConfig,
    ) -> Arc<Self> {
        let upstreams = UpstreamPool::new(PoolConfig {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
            max_idle_per_target: 1024,
            read_timeout: config.read_timeout,
            send_timeout: config.send_timeout,
            client_body_timeout: config.client_body_timeout,
        });
        Arc::new(Proxy {
            snapshot,
            upstreams,
            deadlines: Deadlines::new(config.read_timeout),
            picker,
            metrics,
            connections: ConnectionLimit::new(config.max_connections),
            configured: std::sync::atomic::AtomicU64::new(u64::MAX),
            basic: basic::Checker::new(),
            external: handler::external::Answers::new(),
            config,
        })
    }

    /// Gives the upstream pool the ConfigMap's settings of `snapshot` unless it has them
    /// already (one atomic read per request; the work once per generation).
    fn configure_pool(&self, snapshot: &crate::snapshot::Snapshot) {
        use std::sync::atomic::Ordering;
        if self.configured.load(Ordering::Relaxed) == snapshot.generation {
            return;
        }
        self.configured
            .store(snapshot.generation, Ordering::Relaxed);
        let s = &snapshot.server;
        self.upstreams.configure(upstream::PoolLimits {
            max_idle_per_target: s.upstream.connections,
            max_requests: s.upstream.requests,
            max_age: s.upstream.time,
            idle_timeout: s.upstream.timeout,
            client_body_timeout: s.client_body_timeout,
        });
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A permit for one more client connection, or `None` (counted as refused) when
    /// `max_connections` are open.
    pub fn admit(&self) -> Option<ConnectionPermit> {
        let permit = self.connections.try_acquire();
        if permit.is_none() {
            self.metrics.connection_refused();
        }
        permit
    }

    /// The client connection limit, to share with the L4 listeners.
    pub fn connection_limit(&self) -> Arc<ConnectionLimit> {
        Arc::clone(&self.connections)
    }

    /// Keeps an upgraded connection counted once its HTTP connection has ended.
    fn hold_connection(&self) -> ConnectionPermit {
        self.connections.hold()
    }
}
