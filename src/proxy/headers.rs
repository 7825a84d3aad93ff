//! Header rewriting: hop-by-hop removal, X-Forwarded-*, X-Real-IP, X-Request-ID, Server.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Keep-Alive` (not in `http::header`).
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (not in `http::header`).
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The value of the `Server` header added to responses that lack one.
pub static SERVER: HeaderValue = HeaderValue::from_static("portico");

/// Per-connection header values, computed once when the connection is accepted.
#[derive(Debug)]
pub struct ConnHeaders {
    /// The client's address.
    pub peer: SocketAddr,
    /// `X-Real-IP` and the `X-Forwarded-For` element: the client IP.
    pub client_ip: HeaderValue,
    /// `X-Forwarded-Proto`: http or https.
    pub proto: HeaderValue,
    /// `X-Forwarded-Port`: the port the client connected to.
    pub port: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
}

// === impl ConnHeaders ===

impl ConnHeaders {
    /// The values for a connection from `peer` to `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        let ip = peer.ip().to_canonical();
        ConnHeaders {
            peer,
            client_ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            port: HeaderValue::from(local.port()),
            tls,
        }
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The hop-by-hop headers, always removed (Connection and Upgrade kept for an upgrade).
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &header::UPGRADE,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers: those `Connection` names, then Connection, Keep-Alive,
/// Proxy-Connection, TE, Trailer, Transfer-Encoding and Upgrade. When `upgrade` is true,
/// `Upgrade` and `Connection: upgrade` are kept so that the upgrade can pass.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names finds which are present: a removal is a hash lookup, and most
    // messages carry none of them or only `Connection: keep-alive`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 && !upgrade {
        return;
    }
    if present & 1 != 0 {
        // Other headers named in Connection (its options close, keep-alive and upgrade are
        // handled here already). Rare: the vector only allocates when there are some.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !["close", "keep-alive", "upgrade"]
                    .iter()
                    .any(|o| t.eq_ignore_ascii_case(o))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        let kept = upgrade && i < 2;
        if present & (1 << i) != 0 && !kept {
            headers.remove(*name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets the forwarding headers on a request going upstream.
pub fn set_forwarded(headers: &mut HeaderMap, conn: &ConnHeaders, host: Option<&HeaderValue>) {
    headers.reserve(6);
    append_forwarded_for(headers, &conn.client_ip);
    headers.insert(X_FORWARDED_PROTO.clone(), conn.proto.clone());
    headers.insert(X_FORWARDED_PORT.clone(), conn.port.clone());
    headers.insert(X_REAL_IP.clone(), conn.client_ip.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    let mut entry = match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(v) => {
            v.insert(client.clone());
            return;
        }
        header::Entry::Occupied(o) => o,
    };
    let mut joined = Vec::new();
    for v in entry.iter() {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        entry.insert(v);
    }
}

/// The request's `X-Request-ID`, generated (32 hex digits) when absent.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(id) => id.get().clone(),
        header::Entry::Vacant(slot) => slot.insert(generate_request_id()).clone(),
    }
}

/// A unique id: a counter mixed with per-process random keys (splitmix64, a bijection, so
/// ids never repeat within a process), as 32 hex digits. Not a secret, just unique.
fn generate_request_id() -> HeaderValue {
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in words.iter().flat_map(|w| w.to_be_bytes()).enumerate() {
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 15)];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

/// The splitmix64 finalizer: a bijection on u64 that spreads every input bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrades_keep_upgrade_and_connection() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn forwarded_headers() {
        let conn = ConnHeaders::new(
            "[::ffff:10.1.2.3]:5555".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            true,
        );
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "http"),
        ]);
        set_forwarded(&mut h, &conn, Some(&HeaderValue::from_static("a.com")));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        assert_eq!(h["x-forwarded-host"], "a.com");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &conn, None);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn request_ids_are_kept_or_generated_unique() {
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&mut h), "abc");
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        let (ia, ib) = (request_id(&mut a), request_id(&mut b));
        assert_ne!(ia, ib);
        assert_eq!(ia.len(), 32);
        assert_eq!(a["x-request-id"], ia);
    }
}
