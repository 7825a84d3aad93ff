//! WebSocket for the echo backend: the upgrade response, and a connection that echoes every
//! text and binary message.
//!
//! tungstenite's protocol state machine ([`WebSocketContext`]) is driven sans-IO: bytes read
//! from the socket are fed to it through an in-memory buffer and what it writes is flushed to
//! the socket. This needs no `futures` `Stream`/`Sink` traits (the crate does not depend on
//! `futures-util`, which `tokio_tungstenite::WebSocketStream` would need).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

/// Bytes read from the socket at a time.
const READ_BUF: usize = 16 * 1024;

/// True when the request asks to upgrade to WebSocket.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// The headers of the `101 Switching Protocols` answer, or the status to refuse with.
pub(crate) fn accept_headers(
    request: &HeaderMap,
) -> Result<[(http::HeaderName, HeaderValue); 3], StatusCode> {
    let key = request
        .get(SEC_WEBSOCKET_KEY)
        .ok_or(StatusCode::BAD_REQUEST)?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok([
        (UPGRADE, HeaderValue::from_static("websocket")),
        (CONNECTION, HeaderValue::from_static("upgrade")),
        (SEC_WEBSOCKET_ACCEPT, accept),
    ])
}

/// Waits for the upgrade to complete, then echoes messages until the peer closes.
pub(crate) async fn echo(upgrade: OnUpgrade, peer: SocketAddr) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            debug!(%peer, %error, "websocket upgrade failed");
            return;
        }
    };
    let mut ws = WsConn::new(TokioIo::new(upgraded), Role::Server);
    match ws.echo_all().await {
        Ok(()) => debug!(%peer, "websocket closed"),
        Err(error) => debug!(%peer, %error, "websocket failed"),
    }
}

/// A WebSocket over an async byte stream, driven through in-memory buffers.
#[derive(Debug)]
pub(crate) struct WsConn<S> {
    io: S,
    ctx: WebSocketContext,
    buffers: Buffers,
    read_buf: Box<[u8]>,
}

// === impl WsConn ===

impl<S: AsyncRead + AsyncWrite + Unpin> WsConn<S> {
    /// A WebSocket over `io`, whose handshake is done, playing `role`.
    pub(crate) fn new(io: S, role: Role) -> Self {
        WsConn {
            io,
            ctx: WebSocketContext::new(role, None),
            buffers: Buffers::default(),
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
        }
    }

    /// The next message (pings are answered and closes acknowledged by tungstenite); `None`
    /// once the connection is closed.
    pub(crate) async fn recv(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            match self.ctx.read(&mut self.buffers) {
                Ok(message) => {
                    self.write_out().await?;
                    return Ok(Some(message));
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_out().await?;
                    self.fill().await?;
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.write_out().await?;
                    let _ = self.io.shutdown().await;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one message (a `Close` starts the closing handshake).
    pub(crate) async fn send(&mut self, message: Message) -> Result<(), WsError> {
        self.ctx.write(&mut self.buffers, message)?;
        self.ctx.flush(&mut self.buffers)?;
        self.write_out().await
    }

    /// Sends every text and binary message back, until the connection is closed.
    async fn echo_all(&mut self) -> Result<(), WsError> {
        while let Some(message) = self.recv().await? {
            if message.is_text() || message.is_binary() {
                self.send(message).await?;
            }
        }
        Ok(())
    }

    /// Writes what tungstenite produced to the socket.
    async fn write_out(&mut self) -> Result<(), WsError> {
        if !self.buffers.outgoing.is_empty() {
            self.io.write_all(&self.buffers.outgoing).await?;
            self.io.flush().await?;
            self.buffers.outgoing.clear();
        }
        Ok(())
    }

    /// Reads more bytes from the socket for tungstenite (or notes the end of the stream).
    async fn fill(&mut self) -> Result<(), WsError> {
        let n = self.io.read(&mut self.read_buf).await?;
        if n == 0 {
            self.buffers.eof = true;
        } else {
            self.buffers.incoming.extend(&self.read_buf[..n]);
        }
        Ok(())
    }
}

/// The in-memory stream tungstenite reads from and writes to: reading with nothing buffered
/// would block (or, after the socket's end, reads 0); writing always succeeds.
#[derive(Debug, Default)]
struct Buffers {
    incoming: VecDeque<u8>,
    outgoing: Vec<u8>,
    eof: bool,
}

impl Read for Buffers {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() && !self.eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.incoming.read(buf)
    }
}

impl Write for Buffers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
