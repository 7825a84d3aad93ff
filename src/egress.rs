//! Where an ExternalName Service may send Portico: anywhere but the node itself.
//!
//! A Service `{type: ExternalName, externalName: localhost}` behind an Ingress would otherwise
//! publish Portico's own admin listener and, with `hostNetwork`, every port of the node
//! (kubelet, node exporters, the cloud's metadata service through the link-local address).
//! So the name is resolved here, each address is checked ([`check`]), and only the addresses
//! allowed are connected to, in the resolver's order, the very addresses checked (no second
//! resolution between check and connect).
//!
//! Refused ([`Refusal`]): loopback (127.0.0.0/8, `::1`), unspecified (0.0.0.0/8, `::`; Linux
//! connects 0.0.0.0 to the host itself), link-local (169.254.0.0/16, `fe80::/10`), the cloud
//! metadata addresses outside those ranges, the IPv4-mapped (`::ffff:a.b.c.d`) and
//! IPv4-compatible (`::a.b.c.d`) forms of the IPv4 ones, and any address of this host.
//!
//! *An address of this host* is found without listing interfaces: a UDP socket connected to
//! the address (which sends nothing) gets the kernel's preferred source address for it, and for
//! an address of this host that is the address itself, since the route to it is a `local`
//! route whose source is the address. Binding to the address (it succeeds only for a local
//! one) would also tell, except where `net.ipv4.ip_nonlocal_bind` is set (keepalived and other
//! VIP setups set it), where it succeeds for every address and would refuse every ExternalName.
//! Not caught: a `local` route over a whole prefix whose preferred source is another address
//! (as `127.0.0.0/8` is; loopback is refused by range), such as AnyIP routes; and in kube-proxy's
//! IPVS mode ClusterIPs are addresses of the node (`kube-ipvs0`), so an ExternalName that names
//! a Service's cluster DNS name is refused there: point the Ingress at the Service itself.
//!
//! Build time ([`literal_refusal`]) only sees the name: an IP literal in a refused range, or
//! `localhost` and `*.localhost`, gets a warning diagnostic. What a name resolves to is known
//! only at connect time.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

use tokio::net::TcpStream;
use tracing::debug;

/// Why an address is not connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 127.0.0.0/8 or `::1`.
    Loopback,
    /// 0.0.0.0/8 or `::`.
    Unspecified,
    /// 169.254.0.0/16 or `fe80::/10` (the cloud metadata service is 169.254.169.254).
    LinkLocal,
    /// A cloud metadata address outside the link-local ranges.
    Metadata,
    /// An address of this host.
    Local,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Loopback => "a loopback address",
            Refusal::Unspecified => "an unspecified address (the host itself)",
            Refusal::LinkLocal => "a link-local address (cloud metadata lives there)",
            Refusal::Metadata => "a cloud metadata address",
            Refusal::Local => "an address of this node",
        })
    }
}

/// Cloud metadata services on addresses outside the link-local ranges: AWS's IPv6 endpoint,
/// Google Cloud's IPv6 endpoint and Alibaba Cloud's (in the shared address space 100.64/10).
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),
];
const METADATA_V4: [Ipv4Addr; 1] = [Ipv4Addr::new(100, 100, 100, 200)];

/// The refused ranges an address falls in, if any (pure: not whether it is this host's).
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if ip.octets()[0] == 0 {
        Some(Refusal::Unspecified)
    } else if ip.is_link_local() {
        Some(Refusal::LinkLocal)
    } else if METADATA_V4.contains(&ip) {
        Some(Refusal::Metadata)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    // `::ffff:a.b.c.d` reaches a.b.c.d through a dual-stack socket; `::a.b.c.d` (deprecated)
    // is judged the same way. `::` and `::1` are of this form too, and come out as 0.0.0.0
    // (unspecified) and 0.0.0.1 (in 0.0.0.0/8).
    if let Some(v4) = ip.to_ipv4() {
        return match ip {
            Ipv6Addr::LOCALHOST => Some(Refusal::Loopback),
            _ => classify_v4(v4),
        };
    }
    if ip.segments()[0] & 0xffc0 == 0xfe80 {
        Some(Refusal::LinkLocal)
    } else if METADATA_V6.contains(&ip) {
        Some(Refusal::Metadata)
    } else {
        None
    }
}

/// Whether `ip` is an address of this host: the kernel's preferred source address for it
/// is itself (see the module's documentation). Sends nothing.
pub fn is_local_address(ip: IpAddr) -> io::Result<bool> {
    let ip = ip.to_canonical();
    let any: IpAddr = match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0))?;
    // Any port: a UDP connect only chooses the route and the source address.
    match socket.connect((ip, 9)) {
        Ok(()) => Ok(socket.local_addr()?.ip() == ip),
        // No route to it: not ours (and not reachable either).
        Err(e) if matches!(e.raw_os_error(), Some(code) if is_unreachable(code)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// ENETUNREACH and EHOSTUNREACH (Linux numbers; elsewhere the error is passed on).
fn is_unreachable(code: i32) -> bool {
    cfg!(target_os = "linux") && (code == 101 || code == 113)
}

/// Whether an ExternalName Service may be connected at `ip`: not in a refused range, and
/// not an address of this host.
pub fn check(ip: IpAddr) -> Result<(), CheckError> {
    if let Some(refusal) = classify(ip) {
        return Err(CheckError::Refused(refusal));
    }
    match is_local_address(ip) {
        Ok(true) => Err(CheckError::Refused(Refusal::Local)),
        Ok(false) => Ok(()),
        Err(e) => Err(CheckError::Io(e)),
    }
}

/// Why [`check`] did not allow an address.
#[derive(Debug)]
pub enum CheckError {
    /// The address is refused.
    Refused(Refusal),
    /// Whether it is this host's could not be told (out of file descriptors, say): not
    /// connected either.
    Io(io::Error),
}

/// A name whose every address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} resolves only to refused addresses ({address} is {reason})")]
pub struct Refused {
    /// The ExternalName.
    pub name: Box<str>,
    /// The first address refused.
    pub address: IpAddr,
    /// Why.
    pub reason: Refusal,
}

/// Why [`connect`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Every address the name resolved to is refused.
    #[error(transparent)]
    Refused(Refused),
    /// The name did not resolve, or connecting to each allowed address failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Resolves `name` and connects to the first allowed address that accepts, trying them in
/// the resolver's order. Refused addresses are logged (debug) and skipped.
pub async fn connect(name: &str, port: u16) -> Result<TcpStream, EgressError> {
    let mut refused = None;
    let mut failed = None;
    for addr in tokio::net::lookup_host((name, port)).await? {
        match check(addr.ip()) {
            Ok(()) => match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => failed = Some(e),
            },
            Err(CheckError::Refused(reason)) => {
                debug!(name, address = %addr.ip(), %reason, "ExternalName address refused");
                refused.get_or_insert((addr.ip(), reason));
            }
            Err(CheckError::Io(e)) => failed = Some(e),
        }
    }
    match (failed, refused) {
        (Some(e), _) => Err(EgressError::Io(e)),
        (None, Some((address, reason))) => Err(EgressError::Refused(Refused {
            name: name.into(),
            address,
            reason,
        })),
        (None, None) => Err(EgressError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} resolved to no address"),
        ))),
    }
}

/// What the build can tell from the name alone: `localhost`, `*.localhost` (RFC 6761: always
/// loopback) and IP literals in a refused range. Case and one trailing dot are ignored.
pub fn literal_refusal(name: &str) -> Option<Refusal> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let lower = name.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Some(Refusal::Loopback);
    }
    let literal = lower
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(&lower);
    literal.parse::<IpAddr>().ok().and_then(classify)
}

#[cfg(test)]
mod tests;
