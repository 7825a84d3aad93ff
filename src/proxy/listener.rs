//! Listeners: bind, accept, TLS handshakes, and one hyper connection per client (HTTP/1.1 and
//! HTTP/2 on both plain and TLS listeners), drained gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{AbortHandle, Abortable, Aborted};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::drain::Drain;
use super::headers::ConnHeaders;
use super::idle::{self, ClientBody, ConnState, InFlight};
use super::{Proxy, ProxyConfig};
use crate::metrics::ListenerKind;
use crate::snapshot::SnapshotHandle;

/// `Connection: close`.
static CLOSE: http::HeaderValue = http::HeaderValue::from_static("close");

/// Pending connections the kernel may queue per listener.
const BACKLOG: i32 = 4096;

/// A listener that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what})")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Which listener.
    pub what: &'static str,
    /// The reason (for example, address already in use).
    pub source: std::io::Error,
}

/// Binds a TCP listener. IPv6 addresses are bound v6-only, so `0.0.0.0:80` and `[::]:80`
/// can both be listened on.
pub fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    let open = || -> std::io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        TcpListener::from_std(socket.into())
    };
    open().map_err(|source| BindError { addr, what, source })
}

/// The number of request headers hyper accepts when no limit is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The hyper connection builder for client connections, with the proxy's limits.
pub fn connection_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // No timer: the header timeout is kept per connection (`idle`), not per request.
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes.max(8192));
    // hyper parses up to 100 headers in a stack array; naming any limit, even 100, makes it
    // allocate and fill a vector for every request head instead.
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        // RFC 8441: WebSockets over HTTP/2 (extended CONNECT).
        .enable_connect_protocol();
    builder
}

/// Accepts connections until `shutdown` turns true; each is served until it ends or `drain`
/// closes it gracefully. The caller keeps a clone of `drain` and, once every listener has
/// returned, calls `shutdown()` on it.
///
/// Nothing is accepted before the proxy's first snapshot is published: the listener is bound
/// (so a taken port fails at start), and connections that come before wait in the kernel's
/// backlog ([`BACKLOG`]) to be routed by that snapshot, instead of being answered 404 by the
/// empty one.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    drain: Drain,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    if !first_snapshot(&proxy.snapshot, &mut shutdown).await {
        return debug!(?local, "listener closed before the first snapshot");
    }
    debug!(?local, "accepting");
    let builder = connection_builder(proxy.config());
    let mut errors = crate::serve::AcceptErrors::new("proxy");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    errors.failed(&error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        errors.accepted();
        // Over --max-connections: closed at once, so the backlog does not fill either.
        let Some(permit) = proxy.admit() else {
            drop(stream);
            continue;
        };
        let local = stream.local_addr().ok().or(local).unwrap_or(peer);
        let conn = Connection {
            proxy: proxy.clone(),
            builder: builder.clone(),
            drain: drain.clone(),
            peer,
            local,
            proxied: None,
            _permit: permit,
        };
        match &tls {
            None => drop(tokio::spawn(conn.serve_plain(stream))),
            Some(acceptor) => drop(tokio::spawn(conn.serve_tls(stream, acceptor.clone()))),
        }
    }
    debug!(?local, "listener closed");
}

/// Resolves once the flag turns true (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// Waits for the first published snapshot: true once there is one, false when `shutdown`
/// comes first (or the publisher is gone without publishing).
pub async fn first_snapshot(
    snapshot: &SnapshotHandle,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        biased;
        () = stopped(shutdown) => false,
        published = snapshot.wait_for(1) => published,
    }
}

/// One accepted client connection.
struct Connection {
    proxy: Arc<Proxy>,
    builder: auto::Builder<TokioExecutor>,
    drain: Drain,
    peer: SocketAddr,
    local: SocketAddr,
    /// The port the client connected to, by its PROXY header (which named `peer`).
    proxied: Option<u16>,
    /// Counts the connection against `--max-connections` until it ends.
    _permit: crate::resources::ConnectionPermit,
}

impl Connection {
    fn underscores(&self) -> bool {
        self.proxy.config().underscores_in_headers
    }

    /// With `use-proxy-protocol`, reads the connection's PROXY header first, and takes its
    /// source as the client address (from any peer when `proxy-real-ip-cidr` is unset, as
    /// the header is then required of every connection; else only from a trusted peer, the
    /// others staying themselves). False: the connection is closed.
    async fn proxy_protocol(&mut self, stream: &mut TcpStream) -> bool {
        let snapshot = self.proxy.snapshot.load_full();
        let settings = snapshot.server;
        if !settings.proxy_protocol {
            return true;
        }
        let read = super::proxy_protocol::read_header(stream);
        match tokio::time::timeout(settings.proxy_protocol_timeout, read).await {
            Ok(Ok(Some((source, destination)))) => {
                let trusted = &snapshot.client.trusted;
                if trusted.is_empty() || trusted.contains(self.peer.ip()) {
                    self.peer = source;
                    self.proxied = Some(destination.port());
                } else {
                    debug!(peer = %self.peer, %source, "PROXY header from a peer outside proxy-real-ip-cidr: the peer is the client");
                }
                true
            }
            Ok(Ok(None)) => true,
            Ok(Err(error)) => {
                debug!(peer = %self.peer, %error, "closed");
                false
            }
            Err(_) => {
                debug!(peer = %self.peer, "no PROXY protocol header within its timeout; closed");
                false
            }
        }
    }

    async fn serve_plain(mut self, mut stream: TcpStream) {
        if !self.proxy_protocol(&mut stream).await {
            return;
        }
        let _ = stream.set_nodelay(true);
        let _open = self.proxy.metrics().connection_opened(ListenerKind::Http);
        let mut headers = ConnHeaders::new(self.peer, self.local, false, self.underscores());
        if let Some(port) = self.proxied {
            headers.proxied(port);
        }
        // HTTP/1.1, or HTTP/2 with prior knowledge (h2c): the builder tells them apart.
        let builder = self.builder.clone();
        self.serve(builder, stream, headers, Inline).await;
    }

    async fn serve_tls(mut self, mut stream: TcpStream, acceptor: TlsAcceptor) {
        if !self.proxy_protocol(&mut stream).await {
            return;
        }
        let _ = stream.set_nodelay(true);
        let _open = self.proxy.metrics().connection_opened(ListenerKind::Https);
        let snapshot = self.proxy.snapshot.load_full();
        let within = self.proxy.config().tls_handshake_timeout;
        let handshake = if snapshot.client_auth.is_empty() {
            drop(snapshot);
            tokio::time::timeout(within, acceptor.accept(stream)).await
        } else {
            // Some hosts ask for client certificates: the configuration is chosen by the
            // ClientHello's server name. Boxed: rare.
            let handle = self.proxy.snapshot.clone();
            let choosing = choose_config(stream, acceptor, snapshot, handle);
            tokio::time::timeout(within, Box::pin(choosing)).await
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return debug!(peer = %self.peer, %error, "TLS handshake failed"),
            Err(_) => return debug!(peer = %self.peer, "TLS handshake timed out"),
        };
        let mut headers = ConnHeaders::new(self.peer, self.local, true, self.underscores());
        if let Some(port) = self.proxied {
            headers.proxied(port);
        }
        if !self.proxy.snapshot.load().client_auth.is_empty() {
            headers.sni = stream.get_ref().1.server_name().map(Box::from);
        }
        if let Some(chain) = stream.get_ref().1.peer_certificates() {
            let chain: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
            headers.client_cert = Some(chain.into());
        }
        // ALPN has chosen the protocol: no sniffing of the first bytes.
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let builder = self.builder.clone();
        if h2 {
            self.serve(builder.http2_only(), stream, headers, Boxed)
                .await;
        } else {
            self.serve(builder.http1_only(), stream, headers, Inline)
                .await;
        }
    }

    async fn serve<I, W>(
        self,
        builder: auto::Builder<TokioExecutor>,
        io: I,
        headers: ConnHeaders,
        wrap: W,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        W: WrapRequest,
    {
        // The ConfigMap's connection settings as they are now: a change reaches connections
        // accepted after it.
        let settings = self.proxy.snapshot.load().server;
        let config = self.proxy.config();
        let header = settings
            .client_header_timeout
            .unwrap_or(config.client_header_timeout);
        let timeouts = idle::Timeouts {
            header,
            // Keep-alive off: the connection closes after its one response anyway.
            idle: if settings.keep_alive.is_zero() {
                header
            } else {
                settings.keep_alive
            },
            send: config.client_send_timeout,
        };
        let state = ConnState::new(self.proxy, headers, settings.requests_per_connection());
        let shared = state.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (in_flight, last) = InFlight::start(shared.clone());
            // HTTP/1: the last request's response says `Connection: close` (and hyper closes
            // after it); HTTP/2: the connection is marked closing, and sends GOAWAY.
            let close = last && req.version() < http::Version::HTTP_2;
            if last && !close {
                in_flight.conn().close();
            }
            wrap.wrap(async move {
                let conn = in_flight.conn();
                let mut response = conn.proxy.handle(req, &conn.headers).await;
                if close && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, CLOSE.clone());
                }
                Ok::<_, Infallible>(response.map(|body| ClientBody::new(body, in_flight)))
            })
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let (abort, registration) = AbortHandle::new_pair();
        let state_closing = state.clone();
        let watchdog = tokio::spawn(idle::watchdog(state, timeouts, abort));
        let closing = move || state_closing.closing();
        match Abortable::new(self.drain.watch_or(connection, closing), registration).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => debug!(peer = %self.peer, %error, "connection ended with an error"),
            Err(Aborted) => {
                debug!(peer = %self.peer, "no request within the client header timeout; closed");
            }
        }
        watchdog.abort();
    }
}

/// How a request's future is handed to hyper.
trait WrapRequest: Copy + Send + Sync + 'static {
    type Future<F: Future<Output = Served> + Send + 'static>: Future<Output = Served>
        + Send
        + 'static;
    fn wrap<F: Future<Output = Served> + Send + 'static>(self, future: F) -> Self::Future<F>;
}

/// What the service answers.
type Served = Result<http::Response<ClientBody>, Infallible>;

/// As is: HTTP/1 keeps the future in place in its dispatcher.
#[derive(Clone, Copy)]
struct Inline;

impl WrapRequest for Inline {
    type Future<F: Future<Output = Served> + Send + 'static> = F;
    fn wrap<F: Future<Output = Served> + Send + 'static>(self, future: F) -> F {
        future
    }
}

/// Boxed: HTTP/2 moves each stream's future into a task of its own, several KiB copied a few
/// times per request unless it is a pointer (about 4k instructions per request, callgrind).
#[derive(Clone, Copy)]
struct Boxed;

impl WrapRequest for Boxed {
    type Future<F: Future<Output = Served> + Send + 'static> = Pin<Box<F>>;
    fn wrap<F: Future<Output = Served> + Send + 'static>(self, future: F) -> Pin<Box<F>> {
        Box::pin(future)
    }
}

/// Joins an upgraded client connection to an upstream connection that switched protocols
/// (WebSocket and other `Upgrade` protocols) and copies both ways until either side closes.
/// What the upstream sent right after its 101 head goes to the client first.
/// `permit` keeps the tunnel counted against `--max-connections`.
pub(super) fn tunnel(
    client: OnUpgrade,
    upstream: super::upstream::Upgraded,
    permit: crate::resources::ConnectionPermit,
) {
    tokio::spawn(async move {
        let _permit = permit;
        let client = match client.await {
            Ok(client) => client,
            Err(error) => return debug!(%error, "upgrade failed"),
        };
        let mut client = TokioIo::new(client);
        let mut upstream_io = upstream.io;
        if !upstream.read.is_empty()
            && let Err(error) = client.write_all(&upstream.read).await
        {
            return debug!(%error, "upgraded connection failed");
        }
        match tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream_io,
            64 * 1024,
            64 * 1024,
        )
        .await
        {
            Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
            Err(error) => debug!(%error, "upgraded connection failed"),
        }
    });
}

/// The TLS handshake of a listener where some hosts ask for client certificates: the host's
/// configuration (requesting a certificate, naming its CA) when the ClientHello names such a
/// host, the listener's otherwise.
async fn choose_config(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    snapshot: Arc<crate::snapshot::Snapshot>,
    handle: crate::snapshot::SnapshotHandle,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    use crate::snapshot::client_auth::Verify;
    let lazy = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = lazy.await?;
    let auth = start
        .client_hello()
        .server_name()
        .and_then(|name| snapshot.client_auth.get(name))
        .filter(|auth| auth.verify != Verify::Off);
    let config = match auth {
        Some(auth) => {
            let made = auth.tls.get_or_init(|| {
                super::tls::client_auth_config(handle, auth)
                    .unwrap_or_else(|_| acceptor.config().clone())
            });
            Arc::clone(made)
        }
        None => acceptor.config().clone(),
    };
    start.into_stream(config).await
}
