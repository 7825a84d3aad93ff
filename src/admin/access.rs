//! Who may read `/debug/*`: a loopback peer, or a client presenting the admin token
//! (`--admin-token-file`), and in both cases with a Host that names no domain.
//!
//! The Host check is DNS-rebinding protection: a web page of `evil.example` whose name is
//! then made to resolve to 127.0.0.1 gets the victim's browser to send requests here from
//! loopback, but with `Host: evil.example`. A Host that is `localhost` or an IP literal
//! (with or without a port) cannot come from such a page.
//!
//! The token is compared through HMAC-SHA256 under a key drawn at start ([`ring::hmac::verify`]
//! compares in constant time): neither the token nor its length shows in the timing.
//! `ring::constant_time::verify_slices_are_equal` is deprecated in ring 0.17 with no promise
//! about side channels, and returns early on a length difference.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use http::Request;
use http::header::{AUTHORIZATION, HOST};
use ring::hmac;
use ring::rand::SystemRandom;

/// The admin token, kept only as a keyed digest.
pub struct AdminToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It could not be read.
    #[error("cannot read the admin token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// It holds nothing but white space (an empty token would let anyone in).
    #[error("the admin token file {0} is empty")]
    Empty(PathBuf),
    /// No random key could be drawn.
    #[error("cannot draw a random key for the admin token")]
    Random,
}

// === impl AdminToken ===

impl AdminToken {
    /// Reads the token from `path`, white space around it trimmed.
    pub fn read(path: &Path) -> Result<AdminToken, TokenError> {
        let content = std::fs::read(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AdminToken::new(content.trim_ascii()).ok_or_else(|| TokenError::Empty(path.to_path_buf()))
    }

    /// A token; `None` when it is empty (or no random key could be drawn, which ring only
    /// reports when the system's random source fails).
    pub fn new(token: &[u8]) -> Option<AdminToken> {
        if token.is_empty() {
            return None;
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).ok()?;
        let tag = hmac::sign(&key, token);
        Some(AdminToken { key, tag })
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn verify(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

/// Whether `req`, from `peer`, may read a debug endpoint.
pub fn debug_allowed<B>(peer: SocketAddr, req: &Request<B>, token: Option<&AdminToken>) -> bool {
    let host = match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(HOST).and_then(|h| h.to_str().ok()),
    };
    if !host.is_some_and(is_local_host) {
        return false;
    }
    if peer.ip().to_canonical().is_loopback() {
        return true;
    }
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()));
    matches!((token, bearer), (Some(token), Some(bearer)) if token.verify(bearer))
}

/// The credentials of `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// `localhost`, an IPv4 literal or a bracketed IPv6 literal, each with an optional port.
pub fn is_local_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        // A colon inside brackets belongs to an IPv6 literal without a port.
        Some((name, port)) if !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    let name_ok = name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok());
    port_ok && name_ok
}

#[cfg(test)]
mod tests;
