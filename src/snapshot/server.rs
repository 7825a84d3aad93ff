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
    /// `use-proxy-protocol` (default false): every connection to the HTTP and HTTPS listeners
    /// starts with a PROXY protocol header (v1 or v2), whose source is the client address.
    pub proxy_protocol: bool,
    /// `proxy-protocol-header-timeout` (default 5 s): how long the header may take.
    pub proxy_protocol_timeout: Duration,
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
            proxy_protocol: false,
            proxy_protocol_timeout: Duration::from_secs(5),
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

/// Whose address a request comes from, and which forwarded fields are believed: the
/// ConfigMap's `use-forwarded-headers`, `enable-real-ip`, `forwarded-for-header`,
/// `compute-full-forwarded-for` and `proxy-real-ip-cidr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientAddress {
    /// `use-forwarded-headers` or `enable-real-ip`: a trusted peer's forwarded-for field
    /// names the client (nginx's realip module, recursive).
    pub real_ip: bool,
    /// `use-forwarded-headers`: a trusted peer's X-Forwarded-Proto, -Host and -Port are
    /// believed too (the HTTPS redirect and the fields sent upstream follow them).
    pub forwarded_headers: bool,
    /// `forwarded-for-header` (default `X-Forwarded-For`), lower-case.
    pub header: Box<str>,
    /// `compute-full-forwarded-for`: X-Forwarded-For upstream is the client's list and then
    /// the peer, rather than the client address alone.
    pub full_forwarded_for: bool,
    /// `proxy-real-ip-cidr`: the peers trusted. Empty by default: unlike ingress-nginx (whose
    /// default `0.0.0.0/0` trusts everyone), nobody is trusted until it is set.
    pub trusted: super::access::IpSet,
}

impl ClientAddress {
    /// `forwarded-for-header` when it is not X-Forwarded-For: the field sent upstream as
    /// X-Original-Forwarded-For.
    pub fn original_from(&self) -> Option<&str> {
        (&*self.header != "x-forwarded-for").then_some(&*self.header)
    }
}

impl Default for ClientAddress {
    fn default() -> Self {
        ClientAddress {
            real_ip: false,
            forwarded_headers: false,
            header: "x-forwarded-for".into(),
            full_forwarded_for: false,
            trusted: super::access::IpSet::default(),
        }
    }
}

impl ClientAddress {
    /// Whether `peer` is trusted to name the client.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted.contains(peer)
    }

    /// The client address of a request from `peer` (a trusted one) with `values` of the
    /// forwarded-for field, as nginx's realip module with `real_ip_recursive on` finds it:
    /// right to left, the first address that is not trusted; all trusted, the leftmost; an
    /// entry may carry a port (`192.0.2.1:5555`, `[2001:db8::1]:443`, as nginx's
    /// `ngx_parse_addr_port` reads it); one that is not an address ends the walk with what
    /// was found so far.
    pub fn walk<'v>(
        &self,
        peer: std::net::IpAddr,
        values: impl DoubleEndedIterator<Item = &'v [u8]>,
    ) -> std::net::IpAddr {
        let mut client = peer;
        for value in values.rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = std::str::from_utf8(entry).ok().and_then(|e| {
                    e.parse::<std::net::IpAddr>()
                        .ok()
                        .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
                }) else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }
}
