//! HTTP/1.1 to upstreams, the byte-level half: the request head written straight from the
//! prepared request, the response head parsed by httparse into a header map that shares the
//! read buffer, and response bodies framed by RFC 9112 §6.3. No I/O here: the connection
//! (`super`) reads and writes, this module only turns bytes into messages and back.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    self, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::Target;
use crate::proxy::headers::{self, ConnHeaders};

/// A response head (status line and fields) larger than this is refused: 502, like a
/// proxy buffer that an upstream's headers overflow.
pub const MAX_HEAD: usize = 64 * 1024;

/// More header fields than this in one response head are refused.
pub const MAX_HEADERS: usize = 100;

/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How the request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body (and no body framing header added).
    Empty,
    /// Exactly this many bytes, announced by Content-Length.
    Length(u64),
    /// Chunked transfer coding, for bodies of unknown length.
    Chunked,
}

/// What a request head gets on its way upstream besides its own end-to-end fields.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The client connection's values (X-Forwarded-For/-Proto/-Port, X-Real-IP).
    pub conn: &'a ConnHeaders,
    /// The request's one host (the target's authority, else the Host field): the Host sent
    /// upstream, and X-Forwarded-Host. `None` (HTTP/1.0 without Host): the endpoint.
    pub host: Option<&'a HeaderValue>,
    /// The Host sent upstream instead of `host` (`upstream-vhost`); X-Forwarded-Host stays
    /// the client's.
    pub upstream_host: Option<&'a HeaderValue>,
    /// The normalised path, when it differs from the request's (see `proxy::path`).
    pub path: Option<&'a str>,
    /// The path and query a rewrite made (`rewrite-target`), sent instead of both.
    pub rewritten: Option<&'a str>,
    /// Fields set by the route (`proxy_set_header`): each replaces the client's and Portico's
    /// own field of that name; `None` removes it. Never framing or hop-by-hop fields (refused
    /// when the snippet is read).
    pub set: &'a [(HeaderName, Option<HeaderValue>)],
    /// A request id to add; `None` when the request carries its own X-Request-ID.
    pub request_id: Option<&'a [u8]>,
    /// Whether the request asks to switch protocols: Upgrade is kept and Connection says
    /// `upgrade`.
    pub upgrade: bool,
    /// The forwarding values of a request whose client is not the peer (a trusted peer's
    /// forwarded fields, the ConfigMap's `use-forwarded-headers`); `None`: the connection's.
    pub client: Option<&'a ClientForwarding>,
    /// `compute-full-forwarded-for`: X-Forwarded-For is the client's list, then the address
    /// that ends it; otherwise that address alone (the client's list goes as
    /// X-Original-Forwarded-For either way).
    pub full_forwarded_for: bool,
    /// The ConfigMap's `forwarded-for-header` when it is not X-Forwarded-For: the client's
    /// field of that name goes as X-Original-Forwarded-For (ingress-nginx's
    /// `proxy_set_header X-Original-Forwarded-For $http_<that header>`).
    pub original_from: Option<&'a str>,
}

/// The forwarding values of one request whose client a trusted peer named.
#[derive(Debug)]
pub struct ClientForwarding {
    /// As `ConnHeaders::forwarded_tail`: what ends X-Forwarded-For, CRLF, then
    /// X-Forwarded-Proto, X-Forwarded-Port and X-Real-IP.
    pub tail: Vec<u8>,
    /// X-Forwarded-Host, when the peer sent one.
    pub host: Option<HeaderValue>,
}

/// What happens to a request field on its way upstream.
enum Field {
    /// Written as it is, unless Connection names it or its name has `_` (and those are not
    /// kept).
    Pass,
    /// Content-Length: never written as it came; Portico writes the framing of the body it
    /// sends.
    Length,
    /// Upgrade: written only for an upgrade.
    Upgrade,
    /// X-Forwarded-For: the values are joined, with the client's address added, at the end.
    ForwardedFor,
    /// X-Forwarded-Host: replaced by Portico's; the client's goes as
    /// X-Original-Forwarded-Host.
    ForwardedHost,
    /// X-Request-ID: written as it is; naming it in Connection does not remove it.
    RequestId,
    /// Connection: hop-by-hop, and it may name other fields that are.
    Connection,
    /// Cookie: an HTTP/2 request's fields are joined into one (RFC 9113 §8.2.3).
    Cookie,
    /// Hop-by-hop, framing (Transfer-Encoding), replaced by Portico's own value (Host,
    /// X-Forwarded-Proto/-Port, X-Real-IP, X-Scheme, X-Original-Forwarded-For/-Host), or
    /// `Proxy`, which ingress-nginx clears (httpoxy: CGI-style applications read it as their
    /// HTTP_PROXY).
    Dropped,
}

fn classify(name: &HeaderName) -> Field {
    if name == HOST {
        Field::Dropped
    } else if name == CONTENT_LENGTH {
        Field::Length
    } else if name == UPGRADE {
        Field::Upgrade
    } else if name == CONNECTION {
        Field::Connection
    } else if name == COOKIE {
        Field::Cookie
    } else if name == TE || name == TRAILER || name == TRANSFER_ENCODING {
        Field::Dropped
    } else if name.as_str().starts_with("x-") {
        if name == headers::X_FORWARDED_FOR {
            Field::ForwardedFor
        } else if name == headers::X_REQUEST_ID {
            Field::RequestId
        } else if name == headers::X_FORWARDED_HOST {
            Field::ForwardedHost
        } else if name == headers::X_FORWARDED_PROTO
            || name == headers::X_FORWARDED_PORT
            || name == headers::X_REAL_IP
            || name == headers::X_SCHEME
            || name == headers::X_ORIGINAL_FORWARDED_FOR
            || name == headers::X_ORIGINAL_FORWARDED_HOST
        {
            Field::Dropped
        } else {
            Field::Pass
        }
    } else if name == headers::KEEP_ALIVE
        || name == headers::PROXY_CONNECTION
        || name == headers::PROXY
    {
        Field::Dropped
    } else {
        Field::Pass
    }
}

/// What `write_fields` saw.
struct Written {
    /// The joined Cookie field of an HTTP/2 request is written.
    cookie: bool,
    has_length: bool,
    forwarded_for: bool,
    /// The client sent X-Forwarded-Host.
    forwarded_host: bool,
    /// Connection lists options other than close, keep-alive and upgrade: field names.
    connection_options: bool,
}

/// Writes the request's own fields that go upstream, leaving out those named in `listed`.
/// Only end-to-end fields can be named away: framing, Host and Portico's own fields are
/// decided here whatever Connection says (naming Content-Length there once made the body
/// go without framing: a second request smuggled inside it).
fn write_fields(
    out: &mut Vec<u8>,
    parts: &Parts,
    fwd: &Forwarding<'_>,
    listed: &[HeaderName],
) -> Written {
    let mut seen = Written {
        cookie: false,
        has_length: false,
        forwarded_for: false,
        forwarded_host: false,
        connection_options: false,
    };
    for (name, value) in &parts.headers {
        let write = match classify(name) {
            Field::Pass => {
                (listed.is_empty() || !listed.contains(name))
                    && (fwd.conn.underscores || !name.as_str().as_bytes().contains(&b'_'))
            }
            Field::RequestId => true,
            Field::Length => {
                seen.has_length = true;
                false
            }
            Field::Upgrade => fwd.upgrade,
            Field::ForwardedFor => {
                seen.forwarded_for = true;
                false
            }
            Field::ForwardedHost => {
                seen.forwarded_host = true;
                false
            }
            Field::Connection => {
                seen.connection_options |= value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .any(|t| !t.is_empty() && !headers::is_connection_option(t));
                false
            }
            Field::Dropped => false,
            // HTTP/2 clients send one field per cookie; an HTTP/1.1 endpoint gets one field,
            // the values joined with "; ", where the first of them was.
            Field::Cookie if parts.version == Version::HTTP_2 => {
                if !seen.cookie && (listed.is_empty() || !listed.contains(name)) {
                    seen.cookie = true;
                    out.extend_from_slice(b"cookie: ");
                    for (i, v) in parts.headers.get_all(COOKIE).iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b"; ");
                        }
                        out.extend_from_slice(v.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                }
                false
            }
            Field::Cookie => listed.is_empty() || !listed.contains(name),
        };
        if write {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    seen
}

/// The values of the request's X-Forwarded-For fields, joined with ", ".
fn write_forwarded_for(out: &mut Vec<u8>, parts: &Parts) {
    for (i, value) in parts
        .headers
        .get_all(&headers::X_FORWARDED_FOR)
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes());
    }
}

/// `name: ` every value of the client's field `from`, joined by ", " (nothing when absent).
fn write_joined(out: &mut Vec<u8>, name: &[u8], parts: &Parts, from: &str) {
    let mut values = parts.headers.get_all(from).iter();
    let Some(first) = values.next() else {
        return;
    };
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(first.as_bytes());
    for value in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the request line and header fields of `parts`, origin-form, into `out`, the way
/// they go upstream: the one Host first (`fwd.host`, else `target`), the path normalised,
/// hop-by-hop fields (and end-to-end ones named in Connection) left out, the forwarding
/// fields and a request id added, and the body framed as `framing` by Portico alone
/// (Content-Length or chunked; the client's own framing fields never go through).
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &Parts,
    framing: RequestFraming,
    fwd: &Forwarding<'_>,
    target: &Target,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match (fwd.rewritten, fwd.path, parts.uri.path_and_query()) {
        (Some(target), _, _) => out.extend_from_slice(target.as_bytes()),
        (None, Some(path), p) => {
            out.extend_from_slice(path.as_bytes());
            if let Some(query) = p.and_then(|p| p.query()) {
                out.push(b'?');
                out.extend_from_slice(query.as_bytes());
            }
        }
        (None, None, Some(p)) if !p.as_str().is_empty() => {
            out.extend_from_slice(p.as_str().as_bytes())
        }
        _ if parts.method == Method::OPTIONS => out.push(b'*'),
        _ => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    match fwd.upstream_host.or(fwd.host) {
        Some(host) => out.extend_from_slice(host.as_bytes()),
        None => out.extend_from_slice(target.to_string().as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let start = out.len();
    let mut fields = write_fields(out, parts, fwd, &[]);
    if fields.connection_options {
        // Rare: Connection names other fields, which stay behind too. Written again
        // without them.
        out.truncate(start);
        let listed = headers::connection_listed(&parts.headers);
        fields = write_fields(out, parts, fwd, &listed);
    }
    // The client's X-Forwarded-For is kept as X-Original-Forwarded-For (ingress-nginx's);
    // X-Forwarded-For is the client address (or, with compute-full-forwarded-for, the
    // client's list and then the peer), never a list a client made up alone.
    match fwd.original_from {
        None if fields.forwarded_for => {
            out.extend_from_slice(b"x-original-forwarded-for: ");
            write_forwarded_for(out, parts);
            out.extend_from_slice(b"\r\n");
        }
        None => {}
        Some(name) => write_joined(out, b"x-original-forwarded-for", parts, name),
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    // The client's list only from a trusted peer that named the client (ingress-nginx's
    // `$full_x_forwarded_for` needs use-forwarded-headers too); otherwise the address alone.
    if fields.forwarded_for && fwd.full_forwarded_for && fwd.client.is_some() {
        write_forwarded_for(out, parts);
        out.extend_from_slice(b", ");
    }
    // The client IP, X-Forwarded-Proto, X-Forwarded-Port and X-Real-IP: the same for every
    // request of the connection, written once (unless a trusted peer named the client).
    match fwd.client {
        None => out.extend_from_slice(&fwd.conn.forwarded_tail),
        Some(client) => out.extend_from_slice(&client.tail),
    }
    if let Some(host) = fwd.client.and_then(|c| c.host.as_ref()).or(fwd.host) {
        write_field(out, b"x-forwarded-host", host.as_bytes());
    }
    // The client's X-Forwarded-Host, as ingress-nginx's `X-Original-Forwarded-Host
    // $http_x_forwarded_host` (no field when the client sent none).
    if fields.forwarded_host {
        write_joined(
            out,
            b"x-original-forwarded-host",
            parts,
            headers::X_FORWARDED_HOST.as_str(),
        );
    }
    if let Some(id) = fwd.request_id {
        write_field(out, b"x-request-id", id);
    }
    if !fwd.set.is_empty() {
        override_fields(out, start, fwd.set);
    }
    if fwd.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    match framing {
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Length(n) => {
            let digits = itoa_buf(n);
            write_field(out, b"content-length", digits.as_bytes());
        }
        // An empty body the client framed (a POST with Content-Length: 0) keeps saying so.
        RequestFraming::Empty if fields.has_length => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        RequestFraming::Empty => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Drops the fields of `out[start..]` (whole `name: value\r\n` lines, names lower-case)
/// that `set` names, then writes `set`'s values. Only for routes with `proxy_set_header`.
fn override_fields(out: &mut Vec<u8>, start: usize, set: &[(HeaderName, Option<HeaderValue>)]) {
    let written = out.split_off(start);
    for line in written.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !set.iter().any(|(n, _)| n.as_str().as_bytes() == name) {
            out.extend_from_slice(line);
        }
    }
    for (name, value) in set {
        if let Some(value) = value {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// The decimal digits of `n`, on the stack.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start }
}

/// The line that starts a chunk of `len` bytes, formatted on the stack.
pub struct ChunkLine {
    buf: [u8; 18],
    len: usize,
}

impl ChunkLine {
    /// The chunk-size line for `len` bytes: hex digits and CRLF.
    pub fn new(len: usize) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 18];
        let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, slot) in buf[..digits].iter_mut().enumerate() {
            *slot = HEX[(len >> (4 * (digits - 1 - i))) & 15];
        }
        buf[digits..digits + 2].copy_from_slice(b"\r\n");
        ChunkLine {
            buf,
            len: digits + 2,
        }
    }

    /// The line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The last chunk and, when there are any, trailer fields.
pub fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: HEAD, 204, 304.
    Empty,
    /// Content-Length.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    Close,
    /// 101: the connection is handed to the switched protocol.
    Upgrade,
}

/// A parsed final response head.
#[derive(Debug)]
pub struct Head {
    /// The status (never 1xx other than 101: informational responses are skipped).
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, values sharing the read buffer.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
}

/// A malformed response (the message says what was wrong).
fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Parses the final response head at the start of `buf`, consuming it (and any informational
/// 1xx responses before it). `None`: more bytes are needed. `reading` says whether the request
/// was HEAD (the response has no body whatever its fields say) and whether the endpoint's
/// Server field is left out.
pub fn parse_head(buf: &mut BytesMut, reading: Reading) -> io::Result<Option<Head>> {
    loop {
        let Some(head) = parse_one(buf, reading)? else {
            return Ok(None);
        };
        // 100 Continue, 102, 103 Early Hints: the final response follows on the same
        // connection.
        if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        return Ok(Some(head));
    }
}

/// How a response head is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The request was HEAD: no body, whatever the fields say.
    pub head_request: bool,
    /// The endpoint's Server field never enters the map. A proxied response never carries it
    /// (nginx hides it: `proxy_hide_header`'s default, then `server-tokens` decides), and
    /// leaving it out here costs less than removing it from the map afterwards (about 250
    /// instructions a request, callgrind). An authentication subrequest keeps it
    /// (`auth-response-headers` may name it).
    pub hide_server: bool,
}

impl Reading {
    /// The response to a request of this method, as the proxy reads it.
    pub fn proxied(head_request: bool) -> Reading {
        Reading {
            head_request,
            hide_server: true,
        }
    }
}

/// The response fields most servers send, by the length of their name.
fn common_response_fields(len: usize) -> &'static [(&'static [u8], HeaderName)] {
    use header::*;
    static FOUR: [(&[u8], HeaderName); 3] = [(b"date", DATE), (b"etag", ETAG), (b"vary", VARY)];
    static SIX: [(&[u8], HeaderName); 1] = [(b"server", SERVER)];
    static SEVEN: [(&[u8], HeaderName); 1] = [(b"expires", EXPIRES)];
    static TEN: [(&[u8], HeaderName); 2] =
        [(b"connection", CONNECTION), (b"set-cookie", SET_COOKIE)];
    static TWELVE: [(&[u8], HeaderName); 1] = [(b"content-type", CONTENT_TYPE)];
    static THIRTEEN: [(&[u8], HeaderName); 3] = [
        (b"cache-control", CACHE_CONTROL),
        (b"last-modified", LAST_MODIFIED),
        (b"accept-ranges", ACCEPT_RANGES),
    ];
    static FOURTEEN: [(&[u8], HeaderName); 1] = [(b"content-length", CONTENT_LENGTH)];
    static SIXTEEN: [(&[u8], HeaderName); 1] = [(b"content-encoding", CONTENT_ENCODING)];
    static SEVENTEEN: [(&[u8], HeaderName); 1] = [(b"transfer-encoding", TRANSFER_ENCODING)];
    match len {
        4 => &FOUR,
        6 => &SIX,
        7 => &SEVEN,
        10 => &TEN,
        12 => &TWELVE,
        13 => &THIRTEEN,
        14 => &FOURTEEN,
        16 => &SIXTEEN,
        17 => &SEVENTEEN,
        _ => &[],
    }
}

/// The name of a response field (bytes httparse accepted as a token). The common ones are
/// matched directly: `HeaderName::from_bytes` lowercases every name into a buffer and then
/// searches all the standard names (about 120 instructions a name, callgrind); others still
/// go through it. Setting bit 0x20 lowercases a letter and leaves '-' as it is; the only other
/// byte it turns into a letter or '-' is CR, which is no token byte.
fn response_field_name(raw: &[u8]) -> Option<HeaderName> {
    let common = common_response_fields(raw.len()).iter().find(|(known, _)| {
        let diff = raw
            .iter()
            .zip(*known)
            .fold(0, |d, (r, k)| d | ((r | 0x20) ^ k));
        diff == 0
    });
    match common {
        Some((_, name)) => Some(name.clone()),
        None => HeaderName::from_bytes(raw).ok(),
    }
}

fn parse_one(buf: &mut BytesMut, reading: Reading) -> io::Result<Option<Head>> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Offsets of names and values in `buf` (a head is at most 64 KiB: u16 suffices): the head
    // is split off and frozen once parsed, so that the values can share it instead of being
    // copied.
    let mut fields = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let (len, code, minor, count) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(invalid(format!(
                    "response head larger than {} KiB",
                    MAX_HEAD / 1024
                )));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(invalid(format!(
                    "more than {MAX_HEADERS} header fields in the response"
                )));
            }
            Err(e) => return Err(invalid(format!("invalid response head: {e}"))),
        };
        if len > MAX_HEAD {
            return Err(invalid(format!(
                "response head larger than {} KiB",
                MAX_HEAD / 1024
            )));
        }

        let start = buf.as_ptr() as usize;
        let count = response.headers.len();
        // httparse takes a bare LF for the end of a line: a value holding one would become
        // a field of its own here, and something else in another parser. Every line ends
        // where the next field's name starts, and the head with an empty line: checking the
        // two bytes before each name and the last four costs a few instructions per field (a
        // memchr pass over the head cost some 350).
        let crlf_before = |at: usize| at >= 2 && buf[at - 2..at] == *b"\r\n";
        let lines_end_in_crlf = response
            .headers
            .iter()
            .all(|h| crlf_before(h.name.as_ptr() as usize - start))
            && len >= 4
            && buf[len - 4..len] == *b"\r\n\r\n";
        if !lines_end_in_crlf {
            return Err(invalid("bare LF in the response head"));
        }
        let offset = |p: *const u8| (p as usize - start) as u16;
        for (slot, h) in fields.iter_mut().zip(response.headers.iter()) {
            let name = offset(h.name.as_ptr());
            let value = offset(h.value.as_ptr());
            *slot = (
                name,
                name + h.name.len() as u16,
                value,
                value + h.value.len() as u16,
            );
        }
        // httparse fills both on a complete parse.
        (
            len,
            response.code.unwrap_or(0),
            response.version.unwrap_or(1),
            count,
        )
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| invalid(format!("invalid status code {code}")))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    // One pass builds the end-to-end fields and reads the framing ones. Hop-by-hop fields
    // never enter the map (Upgrade does, for a 101), nor do those Connection names.
    let mut headers = HeaderMap::with_capacity(count);
    let (mut close, mut keep_alive_token) = (false, false);
    let mut listed: Vec<HeaderName> = Vec::new();
    // Transfer-Encoding fields, and whether the one there is exactly `chunked`.
    let (mut codings, mut chunked) = (0u32, false);
    let mut length: Option<io::Result<u64>> = None;
    let mut length_field = None;
    for &(ns, ne, vs, ve) in &fields[..count] {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let name = response_field_name(&head[ns..ne])
            .ok_or_else(|| invalid("invalid header name in the response"))?;
        let raw = &head[vs..ve];
        if name == CONNECTION {
            for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if !headers::is_connection_option(token)
                    && let Ok(other) = HeaderName::from_bytes(token)
                {
                    listed.push(other);
                }
            }
            continue;
        } else if name == TRANSFER_ENCODING {
            // Only `chunked` alone is accepted: with another coding (`gzip, chunked`) the
            // body is not ours to decode, and a client or cache could frame it otherwise.
            codings += 1;
            chunked = raw.trim_ascii().eq_ignore_ascii_case(b"chunked");
            continue;
        } else if name == CONTENT_LENGTH {
            length = Some(match length {
                Some(Err(e)) => Err(e),
                earlier => content_length(raw, earlier.and_then(Result::ok)),
            });
            // Into the map below only where hyper would not write it from the body's
            // exact length (it then also skips parsing it back).
            length_field.get_or_insert((vs, ve));
            continue;
        } else if name == TE
            || (name == header::SERVER && reading.hide_server)
            || name == TRAILER
            || (name == UPGRADE && !upgrade)
            || name == headers::KEEP_ALIVE
            || name == headers::PROXY_CONNECTION
        {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| invalid(format!("invalid value of response header {name}")))?;
        headers.append(name, value);
    }
    for name in listed {
        headers.remove(name);
    }
    let mut keep_alive = match version {
        Version::HTTP_10 => keep_alive_token,
        _ => !close,
    };
    let framing = if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        keep_alive = false;
        ResponseFraming::Upgrade
    } else if status.is_informational()
        || reading.head_request
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        ResponseFraming::Empty
    } else if codings > 0 {
        if codings > 1 || !chunked {
            return Err(invalid(
                "a transfer coding other than chunked in the response",
            ));
        }
        // Transfer-Encoding overrides Content-Length, which then must not go on (the body
        // is re-framed for the client), and such a connection is not trusted again.
        if length.take().is_some() {
            keep_alive = false;
        }
        ResponseFraming::Chunked
    } else if let Some(length) = length.take() {
        ResponseFraming::Length(length?)
    } else {
        keep_alive = false;
        ResponseFraming::Close
    };
    // A body of known length: hyper writes Content-Length from the body's exact size (the
    // same number). Without a body (HEAD, 204, 304, 1xx), the upstream's goes on as it is.
    if let (Some(length), Some((vs, ve))) = (length, length_field) {
        length?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| invalid("invalid value of response header content-length"))?;
        headers.insert(CONTENT_LENGTH, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Whether a line of `head` ends in LF alone.
/// memchr: a head has a few LFs, found a vector at a time (a byte loop over a 200-byte head
/// cost some 600 instructions per response).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// The length a Content-Length field says, which must agree with `earlier` fields (and a
/// list in one field with itself).
fn content_length(raw: &[u8], earlier: Option<u64>) -> io::Result<u64> {
    let mut length = earlier;
    for part in raw.split(|&b| b == b',') {
        let part = part.trim_ascii();
        let n = std::str::from_utf8(part)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| invalid("invalid Content-Length in the response"))?;
        if length.is_some_and(|l| l != n) {
            return Err(invalid("conflicting Content-Length values in the response"));
        }
        length = Some(n);
    }
    length.ok_or_else(|| invalid("empty Content-Length in the response"))
}

/// What the body decoder found in the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// Trailer fields after the last chunk.
    Trailers(HeaderMap),
    /// The buffer holds no complete piece: read more.
    NeedMore,
    /// The body ended.
    End,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// Takes a response body out of the bytes read from the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes to go.
    Length(u64),
    /// Chunked.
    Chunked(Chunk),
    /// Until EOF.
    Close,
    /// Ended.
    Done,
}

// === impl Decoder ===

impl Decoder {
    /// The decoder for a body framed as `framing`.
    pub fn new(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Upgrade | ResponseFraming::Length(0) => {
                Decoder::Done
            }
            ResponseFraming::Length(n) => Decoder::Length(n),
            ResponseFraming::Chunked => Decoder::Chunked(Chunk::Size),
            ResponseFraming::Close => Decoder::Close,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Bytes still expected, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(rest) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (*rest).min(buf.len() as u64);
                    *rest -= n;
                    if *rest == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                }
                Decoder::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Decoder::Chunked(chunk) => match *chunk {
                    Chunk::Size => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            *chunk = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                            return Err(invalid("chunk-size line too long"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(_) => return Err(invalid("invalid chunk size")),
                    },
                    Chunk::Data(rest) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let n = rest.min(buf.len() as u64);
                        *chunk = if n == rest {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(rest - n)
                        };
                        return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(invalid("chunk data not followed by CRLF"));
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        match httparse::parse_headers(buf, &mut fields) {
                            Ok(httparse::Status::Complete((used, fields))) => {
                                if has_bare_lf(&buf[..used]) {
                                    return Err(invalid("bare LF in the trailer section"));
                                }
                                let mut trailers = HeaderMap::new();
                                for f in fields {
                                    let name = HeaderName::from_bytes(f.name.as_bytes());
                                    let value = HeaderValue::from_bytes(f.value);
                                    let (Ok(name), Ok(value)) = (name, value) else {
                                        return Err(invalid("invalid trailer field"));
                                    };
                                    trailers.append(name, value);
                                }
                                buf.advance(used);
                                *self = Decoder::Done;
                                if !trailers.is_empty() {
                                    return Ok(Decoded::Trailers(trailers));
                                }
                            }
                            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                                return Err(invalid("trailer section too large"));
                            }
                            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                            Err(e) => return Err(invalid(format!("invalid trailer: {e}"))),
                        }
                    }
                },
            }
        }
    }

    /// The connection reached EOF: the end of a close-delimited body, an error for others.
    pub fn eof(&mut self) -> io::Result<()> {
        match self {
            Decoder::Close | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed the connection before the end of the body",
            )),
        }
    }
}

#[cfg(test)]
mod tests;
