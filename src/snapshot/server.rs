//! The settings of the controller ConfigMap that belong to connections rather than to routes:
//! client keep-alive and header/body timeouts, upstream keep-alive, and the `Server` field.
//! They travel in the snapshot, so a ConfigMap change reaches new connections (and, for the
//! upstream pool and the response fields, every request) without a restart.

use std::time::Duration;

use serde::Serialize;

/// ingress-nginx's default `keep-alive`: 75 s.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(75);

/// Connection-level settings of the controller ConfigMap, with ingress-nginx's defaults.
/// `None` in a timeout: the command line's flag applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ServerSettings {
    /// `client-header-timeout`: a connection's first request head must be complete within
    /// this (the flag `--client-header-timeout` when unset).
    pub client_header_timeout: Option<Duration>,
    /// `client-body-timeout`: the longest wait between two reads of a request body (the flag
    /// `--client-body-timeout` when unset); past it, 408.
    pub client_body_timeout: Option<Duration>,
    /// `keep-alive` (default 75 s): a connection with no request for this long after its last
    /// one is closed; zero turns keep-alive off (one request per connection).
    pub keep_alive: Duration,
    /// `keep-alive-requests` (default 1000): requests served on one client connection, then
    /// HTTP/1.1 answers with `Connection: close` and HTTP/2 sends GOAWAY.
    pub keep_alive_requests: u32,
    /// `upstream-keepalive-*`: idle upstream connections kept for reuse.
    pub upstream: UpstreamKeepalive,
    /// `server-tokens` (default false): false sends no `Server` field at all (the endpoint's is
    /// removed too, as nginx's `more_clear_headers Server`); true sends `portico/<version>`
    /// in place of the endpoint's (nginx hides the upstream's and sends its own).
    pub server_tokens: bool,
}

impl ServerSettings {
    /// Requests one client connection serves before it closes (1 with keep-alive off).
    pub fn requests_per_connection(&self) -> u32 {
        if self.keep_alive.is_zero() {
            1
        } else {
            self.keep_alive_requests.max(1)
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            client_header_timeout: None,
            client_body_timeout: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            keep_alive_requests: 1000,
            upstream: UpstreamKeepalive::default(),
            server_tokens: false,
        }
    }
}

/// `upstream-keepalive-connections`, `-requests`, `-time`, `-timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamKeepalive {
    /// Idle connections kept per endpoint (default 320; 0: none, every request opens a new
    /// connection). nginx counts them per worker process, all endpoints together.
    pub connections: u32,
    /// Requests one upstream connection serves before it is closed (default 10000).
    pub requests: u32,
    /// An upstream connection older than this is closed once its response is in (default 1 h).
    pub time: Duration,
    /// An idle upstream connection is closed after this (the flag `--upstream-idle-timeout`
    /// when unset; ingress-nginx's default is 60 s).
    pub timeout: Option<Duration>,
}

impl Default for UpstreamKeepalive {
    fn default() -> Self {
        UpstreamKeepalive {
            connections: 320,
            requests: 10_000,
            time: Duration::from_secs(3600),
            timeout: None,
        }
    }
}
