//! `affinity: cookie`: ingress-nginx's sticky sessions. A request's sticky cookie
//! (`<endpoint key>|<backend key>`) keeps it on one endpoint of the route's backend:
//! - `balanced`: the endpoint key is random, consistently hashed over the ready endpoints
//!   (a scale-up moves a share of the sessions, as nginx's chash does);
//! - `persistent`: the endpoint key names the endpoint (a keyed digest of its address), and the
//!   session stays there until that endpoint is no longer ready.
//!
//! A request without a usable cookie gets an endpoint and a new cookie. The backend key tells a
//! primary's cookie from its canary's: a cookie that pins the request to one of them outranks
//! the canary rules. Keys are digests of names and addresses, the same on every Portico
//! instance, so a session keeps its endpoint whichever node the client reaches.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use http::HeaderValue;

use crate::l4::Pick;
use crate::snapshot::routes::{Affinity, AffinityMode, Backend};
use crate::snapshot::services::ServicePort;

/// How many random keys a balanced session tries to avoid a failed endpoint (nginx's count).
const BALANCED_TRIES: usize = 20;

/// The request's sticky cookie under `affinity`: its endpoint key and its backend key.
pub fn cookie<'h>(
    affinity: &Affinity,
    headers: &'h http::HeaderMap,
) -> Option<(&'h [u8], Option<&'h [u8]>)> {
    let value = crate::snapshot::routes::cookie(headers, &affinity.name)?;
    let mut parts = value.splitn(2, |&b| b == b'|');
    let key = parts.next().filter(|k| !k.is_empty())?;
    Some((key, parts.next()))
}

/// The key that tells one backend's sticky cookies from another's: a digest of the Service's
/// namespace, name and port.
pub fn backend_key(namespace: &str, backend: &Backend) -> [u8; 16] {
    use crate::snapshot::routes::PortRef;
    // Tagged: a port number's two bytes never stand for a port name.
    let number;
    let (tag, port): (&[u8], &[u8]) = match &backend.port {
        PortRef::Number(n) => {
            number = n.to_be_bytes();
            (b"number", &number)
        }
        PortRef::Name(name) => (b"name", name.as_bytes()),
    };
    digest(&[namespace.as_bytes(), backend.service.as_bytes(), tag, port])
}

/// Whether the request's sticky cookie pins it to `backend` (whatever the canary behaviour:
/// ingress-nginx's `is_affinitized` asks it of the primary, then of the canary).
pub fn pinned(
    affinity: &Affinity,
    namespace: &str,
    backend: &Backend,
    headers: &http::HeaderMap,
) -> bool {
    match cookie(affinity, headers) {
        Some((_, Some(key))) => key == backend_key(namespace, backend),
        _ => false,
    }
}

/// The endpoint for a sticky request, and the endpoint key of a new cookie when the request's
/// cannot be honoured (none, its endpoint is gone, or `failed` is its endpoint and
/// `change_on_failure` is on). `failed`: the endpoint a first attempt could not connect to.
pub fn pick<'a>(
    affinity: &Affinity,
    salt: &[u8; 16],
    port: &'a ServicePort,
    request_key: Option<&[u8]>,
    failed: Option<SocketAddr>,
) -> Option<(Pick<'a>, Option<[u8; 16]>)> {
    let honour = request_key.filter(|_| failed.is_none() || !affinity.change_on_failure);
    // An endpoint failing its Service's health checks is not stuck to while another passes
    // (balanced mode gets this from the hashed pick).
    let ready = port.ready_endpoints();
    let checked = port.judged() && ready.iter().any(|e| e.load.healthy());
    let usable = |e: &&crate::snapshot::services::Endpoint| !checked || e.load.healthy();
    if let Some(key) = honour {
        let found = match affinity.mode {
            AffinityMode::Balanced => crate::l4::scheduler::pick_hashed(port, stable(key), None),
            AffinityMode::Persistent => ready
                .iter()
                .filter(usable)
                .find(|e| endpoint_key(salt, e.addr) == key)
                .map(Pick::new),
        };
        if let Some(found) = found {
            return Some((found, None));
        }
    }
    match affinity.mode {
        AffinityMode::Balanced => {
            let mut last = None;
            for _ in 0..BALANCED_TRIES {
                let key = random_key();
                let pick = crate::l4::scheduler::pick_hashed(port, stable(&key), None)?;
                if Some(pick.endpoint.addr) != failed {
                    return Some((pick, Some(key)));
                }
                last = Some((pick, Some(key)));
            }
            last
        }
        AffinityMode::Persistent => {
            let candidate =
                |e: &&crate::snapshot::services::Endpoint| Some(e.addr) != failed && usable(e);
            let others = ready.iter().filter(candidate).count();
            let endpoint = if others == 0 {
                ready.first()?
            } else {
                let n = crate::l4::scheduler::random_below(others);
                ready.iter().filter(candidate).nth(n)?
            };
            let key = endpoint_key(salt, endpoint.addr);
            Some((Pick::new(endpoint), Some(key)))
        }
    }
}

/// Whether a request whose first endpoint failed may try another: always without a cookie to
/// honour (nginx's balancer picks anew), else only with `change_on_failure` (nginx would try
/// the cookie's endpoint again).
pub fn may_retry(affinity: &Affinity, request_key: Option<&[u8]>) -> bool {
    request_key.is_none() || affinity.change_on_failure
}

/// The Set-Cookie field of a new sticky cookie, as ingress-nginx writes it: `Path` is
/// `session-cookie-path` or the route's path, `Secure` when asked or over HTTPS, always
/// `HttpOnly`.
pub fn set_cookie(
    affinity: &Affinity,
    endpoint_key: &[u8; 16],
    backend_key: &[u8; 16],
    route_path: Option<&str>,
    tls: bool,
) -> Option<HeaderValue> {
    use std::fmt::Write;
    let mut out = String::with_capacity(128);
    out.push_str(&affinity.name);
    out.push('=');
    out.push_str(std::str::from_utf8(endpoint_key).ok()?);
    out.push('|');
    out.push_str(std::str::from_utf8(backend_key).ok()?);
    if let Some(secs) = affinity.expires {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let at = now.saturating_add(secs).min(i64::MAX as u64) as i64;
        let _ = write!(
            out,
            "; Expires={}",
            crate::snapshot::certs::expiry::cookie_time(at)
        );
    }
    if let Some(secs) = affinity.max_age {
        let _ = write!(out, "; Max-Age={secs}");
    }
    if let Some(domain) = &affinity.domain {
        let _ = write!(out, "; Domain={domain}");
    }
    // The route's path as written, when it can be a cookie attribute (a regex path with ';' or
    // spaces cannot).
    let path = affinity.path.as_deref().or(route_path).unwrap_or("/");
    let path = if path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';') {
        path
    } else {
        "/"
    };
    let _ = write!(out, "; Path={path}");
    if affinity.secure || tls {
        out.push_str("; Secure");
    }
    out.push_str("; HttpOnly");
    if let Some(samesite) = affinity.samesite {
        let _ = write!(out, "; SameSite={samesite}");
    }
    HeaderValue::from_str(&out).ok()
}

/// A persistent session's key for an endpoint of a backend.
fn endpoint_key(salt: &[u8; 16], addr: SocketAddr) -> [u8; 16] {
    let ip: &[u8] = match addr.ip() {
        std::net::IpAddr::V4(v4) => &v4.octets(),
        std::net::IpAddr::V6(v6) => &v6.octets(),
    };
    digest(&[salt, ip, &addr.port().to_be_bytes()])
}

/// The first 8 bytes of the SHA-256 of the parts (each length-prefixed), in lower-case hex.
fn digest(parts: &[&[u8]]) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    hex(&ctx.finish().as_ref()[..8])
}

/// A new balanced session's key: 64 random bits in hex.
fn random_key() -> [u8; 16] {
    let n = crate::l4::scheduler::random_u64();
    hex(&n.to_be_bytes())
}

fn hex(bytes: &[u8]) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in bytes.iter().take(8).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out
}

/// A cookie key's hash for the consistent choice (the same in every process of one build).
fn stable(key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
