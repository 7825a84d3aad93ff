//! An upstream connection's byte stream: TCP, or TLS over TCP (`backend-protocol: HTTPS`),
//! and the rustls client configurations the pool connects with, one per TLS settings (each
//! with its own session cache, so that a session resumed never skips the verification its
//! settings ask for).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::snapshot::upstream_tls::UpstreamTls;

/// A connection to an endpoint.
#[derive(Debug)]
pub enum Io {
    /// Clear text.
    Plain(TcpStream),
    /// TLS (boxed: the session state is large, and rarer).
    Tls(Box<TlsStream<TcpStream>>),
    /// A handle on a multiplexed HTTP/2 connection (its stream is driven by a task of its
    /// own): no bytes are read or written through it here.
    H2(Box<hyper::client::conn::http2::SendRequest<super::h2::RequestBody>>),
}

impl Io {
    /// Whether an idle connection has been closed by the upstream, or has sent something
    /// unasked (either way it cannot carry a request). Costs no system call unless the
    /// socket was reported readable since its last read. For TLS, records that are not data
    /// (session tickets, a key update) are taken in stride.
    pub fn is_stale(&mut self) -> bool {
        match self {
            Io::Plain(tcp) => {
                let mut probe = [0u8; 1];
                !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Io::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                !Pin::new(&mut **tls)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            }
            Io::H2(sender) => sender.is_closed(),
        }
    }

    /// Whether writes are buffered (TLS records) and need a flush to go out.
    pub fn buffers_writes(&self) -> bool {
        matches!(self, Io::Tls(_))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
            Io::H2(_) => Poll::Ready(Err(not_a_stream())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
            Io::H2(_) => Poll::Ready(Err(not_a_stream())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
            Io::H2(_) => Poll::Ready(Err(not_a_stream())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
            Io::H2(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
            Io::H2(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
            Io::H2(_) => Poll::Ready(Ok(())),
        }
    }
}

/// What reading or writing an HTTP/2 handle as a byte stream is.
fn not_a_stream() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "an HTTP/2 connection carries requests, not bytes",
    )
}

/// The ALPN protocols offered to HTTPS endpoints.
const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// The ALPN protocols offered to GRPCS endpoints (gRPC servers drop TLS connections that do
/// not negotiate h2).
const ALPN_H2: &[&[u8]] = &[b"h2"];

/// Client configurations kept past a snapshot swap, by settings: at most this many (all are
/// dropped when more are asked for, and made again as connections need them).
const MAX_CONFIGS: usize = 1024;

/// The rustls client configuration of each TLS settings in use.
#[derive(Default)]
pub struct ClientConfigs {
    made: Mutex<HashMap<ConfigKey, Arc<rustls::ClientConfig>>>,
}

/// The settings, and whether h2 is offered (ALPN).
type ConfigKey = (Arc<UpstreamTls>, bool);

impl ClientConfigs {
    /// The configuration for `tls` (made on first use, then kept with its session cache),
    /// offering h2 (`http2`) or http/1.1.
    pub fn get(
        &self,
        tls: &Arc<UpstreamTls>,
        http2: bool,
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let key = (Arc::clone(tls), http2);
        if let Some(config) = made.get(&key) {
            return Ok(Arc::clone(config));
        }
        if made.len() >= MAX_CONFIGS {
            made.clear();
        }
        let alpn = if http2 { ALPN_H2 } else { ALPN_HTTP1 };
        let config = Arc::new(tls.client_config(alpn)?);
        made.insert(key, Arc::clone(&config));
        Ok(config)
    }
}
