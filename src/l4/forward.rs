//! Copying both ways between a client and an endpoint connection until both directions have
//! ended. On Linux a direction is copied through a pooled buffer until it turns out to be a
//! stream, then its bytes move socket → pipe → socket with splice(2) and never enter user
//! space (see `splice`); elsewhere, and for a burst that cannot get a pipe (fd or pipe-memory
//! limits), they are copied through a buffer.
//!
//! Each direction ends at EOF, which is passed on as `shutdown(Write)` on the other socket while
//! the other direction keeps flowing (half-close); an error in either direction ends both.

use std::io;
#[cfg(target_os = "linux")]
use std::sync::atomic::AtomicU64;

use tokio::net::TcpStream;

#[cfg(target_os = "linux")]
mod buffer;
#[cfg(target_os = "linux")]
mod kept;
#[cfg(target_os = "linux")]
mod pipe;
#[cfg(target_os = "linux")]
mod splice;

/// Bytes a buffered copy moves per read: tokio's default (8 KiB) costs four times the
/// syscalls on bulk transfers.
const BUFFER: usize = 64 * 1024;

/// Forwards until both directions reached EOF, or either failed. Returns the bytes sent
/// (client → upstream, upstream → client).
pub async fn forward(client: &mut TcpStream, upstream: &mut TcpStream) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        let (client, upstream) = (&*client, &*upstream);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        tokio::try_join!(
            splice::one_way(client, upstream, pipe::take, &up, &down),
            splice::one_way(upstream, client, pipe::take, &down, &up)
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        tokio::io::copy_bidirectional_with_sizes(client, upstream, BUFFER, BUFFER).await
    }
}

#[cfg(test)]
mod tests;
