//! Header names and values the proxy adds or reads: X-Forwarded-*, X-Real-IP, X-Request-ID,
//! Server, Connection options. Requests and responses are rewritten (hop-by-hop fields out,
//! forwarding fields in) as they are written and parsed, in `upstream::codec`.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// gRPC's `grpc-timeout` (gRPC over HTTP/2, "Timeout"): at most 8 ASCII digits and a unit,
/// `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds;
/// anything else is `None` (no deadline, as a gRPC server reads it).
pub fn grpc_timeout(value: &[u8]) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Original-Forwarded-For`.
pub static X_ORIGINAL_FORWARDED_FOR: HeaderName =
    HeaderName::from_static("x-original-forwarded-for");
/// `X-Original-Forwarded-Host`.
pub static X_ORIGINAL_FORWARDED_HOST: HeaderName =
    HeaderName::from_static("x-original-forwarded-host");
/// `X-Scheme`.
pub static X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
/// `Proxy`: no standard field; ingress-nginx clears it (httpoxy).
pub static PROXY: HeaderName = HeaderName::from_static("proxy");
/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Keep-Alive` (not in `http::header`).
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (not in `http::header`).
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The `Server` field with `server-tokens: "true"`.
pub static SERVER: HeaderValue =
    HeaderValue::from_static(concat!("portico/", env!("CARGO_PKG_VERSION")));

/// Per-connection header values, computed once when the connection is accepted.
#[derive(Debug)]
pub struct ConnHeaders {
    /// The client's address.
    pub peer: SocketAddr,
    /// What ends `X-Forwarded-For` and follows it in every request head of this connection,
    /// written once here ([`forwarding_tail`]): the client IP, CRLF, then `X-Forwarded-Proto`
    /// (http or https), `X-Forwarded-Port` (the port the client connected to), `X-Real-IP`
    /// and `X-Scheme` fields.
    pub forwarded_tail: Box<[u8]>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Whether the request counts as HTTPS (nginx's `$pass_access_scheme` before forwarded
    /// fields): the connection is TLS, or its PROXY header says the client connected to port
    /// 443 (a balancer that terminated TLS).
    pub https: bool,
    /// The client address came from a PROXY header: final, never replaced by forwarded
    /// fields (ingress-nginx's `real_ip_header proxy_protocol`).
    pub proxied: bool,
    /// The port the client connected to.
    pub port: u16,
    /// Request header names with `_` are forwarded (`--enable-underscores-in-headers`).
    pub underscores: bool,
    /// The certificate chain the client sent in the TLS handshake (leaf first), when its
    /// host asked for one (`auth-tls-secret`).
    pub client_cert: Option<Arc<[rustls_pki_types::CertificateDer<'static>]>>,
    /// The server name the TLS handshake was for (SNI), when a host of the listener asks
    /// for client certificates.
    pub sni: Option<Box<str>>,
}

// === impl ConnHeaders ===

impl ConnHeaders {
    /// The values for a connection from `peer` to `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool, underscores: bool) -> Self {
        let ip = peer.ip().to_canonical();
        let port = local.port();
        ConnHeaders {
            peer,
            forwarded_tail: forwarding_tail(ip, ip, tls, port).into_boxed_slice(),
            tls,
            https: tls,
            proxied: false,
            port,
            underscores,
            client_cert: None,
            sni: None,
        }
    }
}

impl ConnHeaders {
    /// The client address came from a PROXY header whose client connected to `port`: 443
    /// makes the requests HTTPS (ingress-nginx's `proxy_protocol_server_port == "443"`).
    pub fn proxied(&mut self, port: u16) {
        self.proxied = true;
        if port == 443 && !self.https {
            self.https = true;
            let ip = self.peer.ip().to_canonical();
            self.forwarded_tail = forwarding_tail(ip, ip, true, self.port).into_boxed_slice();
        }
    }
}

/// What the proxy reads from a request's header fields, found in one pass over them: a hashed
/// lookup per field cost about 100 instructions each, and most requests carry few fields.
#[derive(Debug, Default)]
pub struct RequestFields<'a> {
    /// The first Host field.
    pub host: Option<&'a HeaderValue>,
    /// How many Host fields there are (saturating): more than one is a 400.
    pub hosts: u8,
    /// The first X-Request-ID field.
    pub request_id: Option<&'a HeaderValue>,
    /// Accept asks for JSON (`application/json` or a `+json` type): error bodies are then
    /// JSON.
    pub wants_json: bool,
    /// The request asks to switch protocols: Connection lists `upgrade` and Upgrade is there.
    pub upgrade: bool,
}

impl<'a> RequestFields<'a> {
    /// Reads `headers`.
    pub fn of(headers: &'a HeaderMap) -> Self {
        let mut fields = RequestFields::default();
        let (mut connection_upgrade, mut has_upgrade) = (false, false);
        for (name, value) in headers {
            if name == header::HOST {
                fields.host.get_or_insert(value);
                fields.hosts = fields.hosts.saturating_add(1);
            } else if name == header::ACCEPT {
                fields.wants_json |= accepts_json(value);
            } else if name == header::CONNECTION {
                connection_upgrade |= value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
            } else if name == header::UPGRADE {
                has_upgrade = true;
            } else if name == X_REQUEST_ID {
                fields.request_id.get_or_insert(value);
            }
        }
        fields.upgrade = connection_upgrade && has_upgrade;
        fields
    }
}

/// Whether an Accept value names a JSON type.
fn accepts_json(value: &HeaderValue) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.contains("application/json") || v.contains("+json"))
}

/// Whether `host` is a valid `host[:port]` (RFC 9110 §7.2; RFC 3986 §3.2.2): a name or IPv4
/// address of letters, digits, '-', '.', '_' and '~', or an IPv6 literal in brackets, then an
/// optional port of at most five digits. No userinfo ('@'), path, whitespace, comma or other
/// delimiter: such a Host could be read one way for routing and another by the backend.
pub fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.first() {
        Some(b'[') => match host.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &host[1..end];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !ok {
                    return false;
                }
                match &host[end + 1..] {
                    [] => return true,
                    [b':', port @ ..] => (&[][..], port),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match host.iter().position(|&b| b == b':') {
            Some(at) => (&host[..at], &host[at + 1..]),
            None => (host, &[][..]),
        },
    };
    // One table load per byte, or-ed together: no branch per byte.
    let name_ok = name
        .iter()
        .fold(true, |ok, &b| ok & HOST_BYTE[usize::from(b)]);
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    name_ok && port_ok && (host.first() == Some(&b'[') || !name.is_empty())
}

/// The bytes of a host name or IPv4 address: letters, digits, '-', '.', '_' and '~'.
static HOST_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

/// Whether a Connection token is one of its options (close, keep-alive, upgrade) rather than
/// the name of another hop-by-hop field.
pub fn is_connection_option(token: &[u8]) -> bool {
    [&b"close"[..], b"keep-alive", b"upgrade"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// Other fields named in Connection (its options close, keep-alive and upgrade aside), to be
/// removed with it. Rare: the vector only allocates when there are some.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut listed = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
        {
            if !is_connection_option(token)
                && let Ok(name) = HeaderName::from_bytes(token)
            {
                listed.push(name);
            }
        }
    }
    listed
}

/// A generated request id: 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId([u8; 32]);

// === impl RequestId ===

impl RequestId {
    /// A unique id: a counter mixed with per-process random keys (splitmix64, a bijection,
    /// so ids never repeat within a process). Not a secret, just unique.
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static KEYS: std::sync::OnceLock<[u64; 2]> = std::sync::OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            let random = RandomState::new();
            [1u64, 2].map(|i| {
                let mut h = random.build_hasher();
                h.write_u64(i);
                h.finish()
            })
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let words = [splitmix64(n ^ keys[0]), splitmix64(n.wrapping_add(keys[1]))];
        let mut buf = [0u8; 32];
        // Fixed bounds and indices: the loops unroll into 16 table loads and stores.
        for (i, word) in words.iter().enumerate() {
            for (j, byte) in word.to_be_bytes().into_iter().enumerate() {
                let at = 16 * i + 2 * j;
                buf[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
            }
        }
        RequestId(buf)
    }

    /// The id's text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id as a header value (for the access log).
    pub fn to_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).unwrap_or(HeaderValue::from_static("0"))
    }
}

/// The two hex digits of every byte value: one lookup per byte instead of two.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    pairs
};

/// The splitmix64 finalizer: a bijection on u64 that spreads every input bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The forwarding values that end a request head, after `x-forwarded-for: `: `last` (what
/// ends X-Forwarded-For: the client, or the peer with compute-full-forwarded-for), then
/// X-Forwarded-Proto, X-Forwarded-Port, X-Real-IP (`client`) and X-Scheme, as every location
/// of ingress-nginx sets them (`$pass_access_scheme` for both schemes, `$pass_port`). For a
/// connection's own client, or for one a trusted peer named with its forwarded scheme and port.
pub fn forwarding_tail(
    last: std::net::IpAddr,
    client: std::net::IpAddr,
    https: bool,
    port: u16,
) -> Vec<u8> {
    let proto = if https { "https" } else { "http" };
    format!(
        "{last}\r\nx-forwarded-proto: {proto}\r\nx-forwarded-port: {port}\r\nx-real-ip: {client}\r\nx-scheme: {proto}\r\n"
    )
    .into_bytes()
}

/// The wait for an HTTP/2 endpoint's response head: a gRPC call's own deadline
/// (`grpc-timeout`) when it is shorter than the route's read timeout, so that Portico answers
/// DEADLINE_EXCEEDED when the client's deadline passes, as the endpoint would.
pub fn grpc_deadline(
    headers: &http::HeaderMap,
    read: Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    let Some(deadline) = headers
        .get("grpc-timeout")
        .and_then(|v| grpc_timeout(v.as_bytes()))
    else {
        return read;
    };
    Some(read.map_or(deadline, |r| r.min(deadline)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_grpc_writes_them() {
        use std::time::Duration;
        for (value, want) in [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789S", None),
            ("S", None),
            ("1s", None),
            ("-1S", None),
            ("1 S", None),
            ("", None),
            ("+5m", None),
        ] {
            assert_eq!(grpc_timeout(value.as_bytes()), want, "{value:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn hostile_grpc_timeouts_never_panic(value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let _ = grpc_timeout(&value);
        }
    }

    #[test]
    fn request_fields_are_read_in_one_pass() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("a.com"));
        h.append(header::HOST, HeaderValue::from_static("b.com"));
        h.append(header::ACCEPT, HeaderValue::from_static("text/html"));
        let fields = RequestFields::of(&h);
        assert_eq!(fields.host.unwrap(), "a.com", "the first Host");
        assert!(!fields.wants_json && !fields.upgrade && fields.request_id.is_none());
        h.append(
            header::ACCEPT,
            HeaderValue::from_static("application/problem+json"),
        );
        h.append(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        let fields = RequestFields::of(&h);
        assert!(fields.wants_json, "a second Accept field counts too");
        assert_eq!(fields.request_id.unwrap(), "abc");
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(RequestFields::of(&h).wants_json);
        assert!(RequestFields::of(&HeaderMap::new()).host.is_none());
    }

    #[test]
    fn upgrades_and_connection_options_are_read() {
        let is_upgrade = |h: &HeaderMap| RequestFields::of(h).upgrade;
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(!is_upgrade(&h), "no Upgrade field");
        h.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-secret ,close"),
        );
        assert_eq!(connection_listed(&h), ["x-secret"]);
    }

    #[test]
    fn hosts_are_host_and_optional_port() {
        for good in [
            "a.test",
            "A.Test:8080",
            "a.test:",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[::ffff:1.2.3.4]:1",
            "under_score.test",
            "x",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "user@a.test",
            "a.test/x",
            "a.test,b.test",
            "a test",
            "a.test ",
            "\ta.test",
            "a.test:80:80",
            "a.test:port",
            "a.test:123456",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:80:80",
            "[a.test]",
            "a.test?x",
            "a.test#x",
            "a%2e.test",
            "ä.test",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn request_ids_are_unique() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(a.to_value().as_bytes(), a.as_bytes());
    }

    #[test]
    fn hex_pairs_are_each_byte_in_lowercase_hex() {
        for (i, pair) in HEX_PAIRS.iter().enumerate() {
            assert_eq!(pair, format!("{i:02x}").as_bytes());
        }
    }
}
