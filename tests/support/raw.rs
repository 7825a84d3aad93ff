//! Raw HTTP/1.1 on TCP for tests that check bytes on the wire: a buffered reader with the
//! framing both ends need ([`Wire`]), and a scripted upstream ([`Upstream`]) that runs a
//! script per accepted connection and reports every request exactly as it arrived.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::Env;
use super::manifests::{class, endpoints, ingress, prefix, service};

/// The bound on any single wait: a read, a write, a request.
pub const LIMIT: Duration = Duration::from_secs(10);
/// A mebibyte.
pub const MIB: usize = 1024 * 1024;
/// The host every test routes to its upstream.
pub const HOST: &str = "up.com";

// ---------------------------------------------------------------------------------------
// Wire: buffered bytes off a TCP stream, with the HTTP/1.1 framing both ends need.
// ---------------------------------------------------------------------------------------

/// A message head: start line and header fields (names lowercased), as received.
#[derive(Clone, Debug)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(text: &str) -> Head {
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.trim().to_ascii_lowercase(), v.trim().to_string()),
                None => (l.to_ascii_lowercase(), String::new()),
            })
            .collect();
        Head { start, headers }
    }

    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name` (panics when it occurs more than once).
    pub fn get(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} occurs {} times: {self:?}",
            all.len()
        );
        all.first().copied()
    }

    /// The status of a response head.
    pub fn status(&self) -> u16 {
        let code = self.start.split(' ').nth(1).unwrap_or_default();
        code.parse()
            .unwrap_or_else(|_| panic!("not a status line: {:?}", self.start))
    }

    /// How the message body is delimited, from Content-Length and Transfer-Encoding.
    pub fn framing(&self) -> Framing {
        let te = self.all("transfer-encoding");
        let cl = self.all("content-length");
        match (te.as_slice(), cl.as_slice()) {
            ([], []) => Framing::None,
            ([], [n]) => n.parse().map_or_else(
                |_| Framing::Invalid(format!("content-length {n:?}")),
                Framing::Length,
            ),
            ([t], []) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::Invalid(format!("transfer-encoding {te:?}, content-length {cl:?}")),
        }
    }
}

/// How a message body is delimited.
#[derive(Clone, Debug, PartialEq)]
pub enum Framing {
    /// No length and not chunked: no body (requests) or read until close (responses).
    None,
    Length(usize),
    Chunked,
    /// Both, several, or unparsable.
    Invalid(String),
}

/// A response as a raw client read it.
#[derive(Debug)]
pub struct RawResponse {
    pub head: Head,
    pub framing: Framing,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> Wire {
        Wire::new(TcpStream::connect(addr).await.unwrap())
    }

    /// Reads more bytes; false on end of stream, error, or [`LIMIT`] without a byte.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match timeout(LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        matches!(
            timeout(LIMIT, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Takes bytes up to `delimiter` (dropping it), reading at most `max` bytes ahead.
    pub async fn until(&mut self, delimiter: &[u8], max: usize) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.buf, delimiter) {
                let taken = self.buf.drain(..at + delimiter.len()).take(at).collect();
                return Some(taken);
            }
            if self.buf.len() > max || !self.fill().await {
                return None;
            }
        }
    }

    pub async fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Everything until the peer closes (at most 64 MiB).
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.buf.len() < 64 * MIB && self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// One message head (up to 2 MiB); None if the stream ended or broke first.
    pub async fn head(&mut self) -> Option<Head> {
        let bytes = self.until(b"\r\n\r\n", 2 * MIB).await?;
        Some(Head::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// A chunked body, strictly: hex size, optional extensions, CRLF after each chunk's
    /// data, trailer fields up to a blank line. Returns the data and the trailers.
    pub async fn chunked(&mut self) -> Result<(Vec<u8>, Vec<(String, String)>), String> {
        let mut body = Vec::new();
        for _ in 0..1_000_000 {
            let line = self
                .until(b"\r\n", 4096)
                .await
                .ok_or("no chunk size line")?;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                let mut trailers = Vec::new();
                for _ in 0..100 {
                    let line = self
                        .until(b"\r\n", 64 * 1024)
                        .await
                        .ok_or("cut in trailers")?;
                    if line.is_empty() {
                        return Ok((body, trailers));
                    }
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let (n, v) = line
                        .split_once(':')
                        .ok_or(format!("bad trailer {line:?}"))?;
                    trailers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                return Err("too many trailers".into());
            }
            let data = self.exactly(size).await.ok_or("cut in chunk data")?;
            body.extend_from_slice(&data);
            if self.exactly(2).await.as_deref() != Some(b"\r\n") {
                return Err(format!("no CRLF after a chunk of {size}"));
            }
        }
        Err("too many chunks".into())
    }

    /// One response. `bodiless` for a response to HEAD.
    pub async fn response(&mut self, bodiless: bool) -> Result<RawResponse, String> {
        let head = self.head().await.ok_or("no response head")?;
        let status = head.status();
        let framing = head.framing();
        let no_body = bodiless || status < 200 || status == 204 || status == 304;
        let (body, trailers) = match &framing {
            _ if no_body => (Vec::new(), Vec::new()),
            Framing::Length(n) => (
                self.exactly(*n)
                    .await
                    .ok_or("body shorter than its length")?,
                Vec::new(),
            ),
            Framing::Chunked => self.chunked().await?,
            Framing::None => (self.read_to_close().await, Vec::new()),
            Framing::Invalid(why) => return Err(why.clone()),
        };
        Ok(RawResponse {
            head,
            framing,
            body,
            trailers,
        })
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The scripted upstream.
// ---------------------------------------------------------------------------------------

/// A request as the upstream read it off the wire, body decoded.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection it came on (1 for the first).
    pub conn: usize,
    pub head: Head,
    pub framing: Framing,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn method(&self) -> &str {
        self.head.start.split(' ').next().unwrap_or_default()
    }

    pub fn path(&self) -> &str {
        self.head.start.split(' ').nth(1).unwrap_or_default()
    }
}

/// One accepted upstream connection, handed to the test's script.
pub struct Conn {
    pub wire: Wire,
    pub index: usize,
    pub seen: mpsc::UnboundedSender<Seen>,
    pub ends: mpsc::UnboundedSender<(usize, Result<(), String>)>,
}

impl Conn {
    /// Reads one request head (its body is left unread) and reports it.
    pub async fn head_only(&mut self) -> Option<Seen> {
        let head = self.wire.head().await?;
        let seen = Seen {
            conn: self.index,
            framing: head.framing(),
            head,
            body: Vec::new(),
        };
        let _ = self.seen.send(seen.clone());
        Some(seen)
    }

    /// Reads one whole request, its body decoded by its framing, and reports it. None when
    /// the connection ended first, or the framing was broken (reported as `Invalid`).
    pub async fn request(&mut self) -> Option<Seen> {
        let head = self.wire.head().await?;
        let mut seen = Seen {
            conn: self.index,
            framing: head.framing(),
            head,
            body: Vec::new(),
        };
        let body = match &seen.framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => self.wire.exactly(*n).await.ok_or("cut".to_string()),
            Framing::Chunked => self.wire.chunked().await.map(|(body, _)| body),
            Framing::Invalid(why) => Err(why.clone()),
        };
        let ok = body.is_ok();
        match body {
            Ok(body) => seen.body = body,
            Err(why) => seen.framing = Framing::Invalid(format!("request body: {why}")),
        }
        let _ = self.seen.send(seen.clone());
        ok.then_some(seen)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.wire.send(bytes).await
    }

    /// Answers requests until the connection ends (at most 100): `answer` gives each
    /// one's response bytes.
    pub async fn serve(mut self, answer: impl Fn(&Seen) -> Vec<u8>) {
        for _ in 0..100 {
            let Some(req) = self.request().await else {
                return;
            };
            if !self.send(&answer(&req)).await {
                return;
            }
        }
    }

    /// After a response the proxy must not send anything more on: waits for the proxy to
    /// close the connection, and reports Err if it sent bytes first or kept it open.
    pub async fn finish(mut self) {
        let mut byte = [0u8; 1];
        let outcome = match timeout(LIMIT, self.wire.stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => Ok(()),
            Ok(Ok(_)) => Err("the proxy sent more on a connection it had to close".into()),
            Err(_) => Err(format!("the proxy kept the connection open for {LIMIT:?}")),
        };
        let _ = self.ends.send((self.index, outcome));
    }

    /// Ends our side of the connection (FIN), keeping the read side open.
    pub async fn shutdown_write(&mut self) {
        let _ = self.wire.stream.shutdown().await;
    }

    /// A lingering close: FIN, then read and discard until the proxy closes too (or
    /// [`LIMIT`]), so the peer never gets a reset for unread data.
    pub async fn linger(mut self) {
        self.shutdown_write().await;
        for _ in 0..100_000 {
            if !self.wire.fill().await {
                return;
            }
            self.wire.buf.clear();
        }
    }
}

/// An upstream on 127.0.0.1 and an ephemeral port, running `script` on each connection.
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub ends: mpsc::UnboundedReceiver<(usize, Result<(), String>)>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(script: F) -> Upstream
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Upstream::start_on("127.0.0.1", script).await
    }

    /// As `start`, listening on another loopback address (such as 127.0.0.2).
    pub async fn start_on<F, Fut>(ip: &str, script: F) -> Upstream
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (ends_tx, ends) = mpsc::unbounded_channel();
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            for _ in 0..1000 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let index = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(script(Conn {
                    wire: Wire::new(stream),
                    index,
                    seen: seen_tx.clone(),
                    ends: ends_tx.clone(),
                }));
            }
        });
        Upstream {
            addr,
            accepted,
            seen,
            ends,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next request the upstream read.
    pub async fn next_seen(&mut self) -> Seen {
        timeout(LIMIT, self.seen.recv())
            .await
            .expect("no request reached the upstream")
            .unwrap()
    }

    /// The outcome of the next connection that ran [`Conn::finish`].
    pub async fn next_end(&mut self) -> (usize, Result<(), String>) {
        timeout(LIMIT, self.ends.recv())
            .await
            .expect("no upstream connection finished")
            .unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Portico routing `up.com` to this upstream. A response timeout below the client's
/// [`LIMIT`] turns a proxy stuck on a response into a 504 the assertions can name.
pub async fn proxy_to(upstream: &Upstream) -> Env {
    proxy_to_with(upstream, &[]).await
}

/// [`proxy_to`] with more flags.
pub async fn proxy_to_with(upstream: &Upstream, flags: &[&str]) -> Env {
    let rules = [(HOST, vec![prefix("/", "raw", 80)])];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", service("h1", "raw", 80)),
        ("eps.yaml", endpoints("h1", "raw", &[upstream.addr], &[])),
        ("ing.yaml", ingress("h1", "raw", &rules)),
    ];
    let mut all = flags.to_vec();
    if !flags.contains(&"--proxy-read-timeout") {
        all.extend(["--proxy-read-timeout", "8s"]);
    }
    Env::start_with(&files, &all).await
}

/// A 200 with a Content-Length body.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// `body` chunked, with chunk sizes taken from `sizes` in turn.
pub fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// `n` bytes that do not repeat with any short period.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i % 253) as u8)
        .collect()
}

/// Lets the proxy put a finished upstream connection back in its pool before the next
/// request (the client may see a response end a moment before that). Nothing is timed.
pub async fn settle() {
    sleep(Duration::from_millis(20)).await;
}

// ---------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------

/// What a hyper client got: the head, and the body or why reading it failed.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Got {
    /// The body of a complete 200.
    pub fn ok_body(&self) -> &Bytes {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        self.body.as_ref().expect("a complete body")
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request over a new HTTP/1.1 connection; Err when no response head came.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Result<Got, String>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    timeout(LIMIT, async move {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(collect(response).await)
    })
    .await
    .expect("the client timed out: the proxy hung")
}

/// One request over a new h2c (prior knowledge) connection.
pub async fn send_h2<B>(addr: SocketAddr, req: Request<B>) -> Got
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    timeout(LIMIT, async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        collect(sender.send_request(req).await.unwrap()).await
    })
    .await
    .expect("the h2c client timed out: the proxy hung")
}

pub async fn collect(response: http::Response<hyper::body::Incoming>) -> Got {
    let (parts, body) = response.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("{e:?}")),
    }
}

/// A request to `up.com` with this body.
pub fn request(method: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .body(Full::new(body.into()))
        .unwrap()
}

pub async fn get(env: &Env, path: &str) -> Got {
    send(env.http(), request("GET", path, Bytes::new()))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}
