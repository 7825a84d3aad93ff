//! The PROXY protocol (HAProxy's, v1 and v2) on the HTTP and HTTPS listeners, for a load
//! balancer in front of hostNetwork nodes (ingress-nginx's `use-proxy-protocol`): each
//! connection starts with a header naming the client, read here before TLS or HTTP, and not
//! one byte past it. The `proxy-header` crate parses; this module only frames what to read.
//! A connection whose header is missing, malformed or late is closed.

use std::net::SocketAddr;

use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (the specification's 107 bytes).
const V1_MAX: usize = 107;

/// The longest v2 header accepted: the fixed 16 bytes and addresses, with room for TLVs
/// (AWS and GCP send a few); anything longer is refused rather than buffered.
const V2_MAX: usize = 16 + 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The connection does not start with a PROXY signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// The header is malformed (the parser's reason) or too long.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The connection failed or closed before the header ended.
    #[error("connection ended inside the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header at the start of `stream`: the client's address and the address it
/// connected to (`None` for a LOCAL or UNKNOWN header: the peer is the client), and nothing
/// after the header consumed.
pub async fn read_header(
    stream: &mut TcpStream,
) -> Result<Option<(SocketAddr, SocketAddr)>, Refused> {
    let mut head = [0u8; 16];
    // Every header is at least 15 bytes ("PROXY UNKNOWN\r\n"): the first 8 tell v1 from v2.
    stream.read_exact(&mut head[..8]).await?;
    let bytes = if head[..8] == V2_SIGNATURE[..8] {
        stream.read_exact(&mut head[8..]).await?;
        if head[..12] != V2_SIGNATURE {
            return Err(Refused::Missing);
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if 16 + len > V2_MAX {
            return Err(Refused::Malformed(format!(
                "{len} bytes of addresses and TLVs"
            )));
        }
        let mut all = vec![0u8; 16 + len];
        all[..16].copy_from_slice(&head);
        stream.read_exact(&mut all[16..]).await?;
        all
    } else if head[..6] == *b"PROXY " {
        read_v1(stream, &head[..8]).await?
    } else {
        return Err(Refused::Missing);
    };
    let config = ParseConfig {
        include_tlvs: false,
        ..ParseConfig::default()
    };
    match ProxyHeader::parse(&bytes, config) {
        Ok((header, used)) if used == bytes.len() => {
            Ok(header.proxied_address().map(|a| (a.source, a.destination)))
        }
        Ok(_) => Err(Refused::Malformed("trailing bytes".into())),
        Err(e) => Err(Refused::Malformed(format!("{e:?}"))),
    }
}

/// The rest of a v1 header after its first bytes: up to CRLF, never past it. The kernel's
/// buffer is peeked first (the whole line is there in the common case: one read); otherwise
/// one byte at a time, at most [`V1_MAX`] in all.
async fn read_v1(stream: &mut TcpStream, start: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut line = start.to_vec();
    let mut peeked = [0u8; V1_MAX];
    let room = V1_MAX - line.len();
    let n = stream.peek(&mut peeked[..room]).await?;
    if let Some(end) = peeked[..n].windows(2).position(|w| w == b"\r\n") {
        let mut rest = vec![0u8; end + 2];
        stream.read_exact(&mut rest).await?;
        line.extend_from_slice(&rest);
        return Ok(line);
    }
    while line.len() < V1_MAX {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        line.push(byte[0]);
        if line.ends_with(b"\r\n") {
            return Ok(line);
        }
    }
    Err(Refused::Malformed("a v1 line longer than 107 bytes".into()))
}

#[cfg(test)]
mod tests;
