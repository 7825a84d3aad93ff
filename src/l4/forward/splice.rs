//! One direction of a forwarded connection on Linux: splice(2) from the source socket into a
//! pipe, then from the pipe into the destination socket, driven by tokio's readiness.

use std::io::{self, ErrorKind};
use std::net::Shutdown;

use rustix::pipe::{SpliceFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::pipe::{self, Pipe};

/// How a burst (everything readable at once) ended.
enum Burst {
    /// `from` has nothing more to read for now; the bytes moved.
    Drained(u64),
    /// `from` reached EOF; the bytes moved before it.
    Eof(u64),
}

/// Copies `from` → `to` until EOF on `from`, then shuts `to` for writing (the other direction
/// carries on). Returns the bytes moved. `pipes` gives an empty pipe per burst (`pipe::take`);
/// a burst it has none for is copied through a buffer.
pub async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipes: impl Fn() -> io::Result<Pipe>,
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        from.readable().await?;
        // The pipe is held only while bytes are in flight: idle connections hold none.
        let burst = match pipes() {
            Ok(pipe) => burst(from, to, pipe).await?,
            Err(_) => copy_burst(from, to).await?,
        };
        match burst {
            Burst::Drained(n) => total += n,
            Burst::Eof(n) => {
                shutdown_write(to)?;
                return Ok(total + n);
            }
        }
    }
}

/// Moves what `from` has through `pipe` into `to`; the pipe goes back to the pool once empty.
/// On an error the pipe, which may still hold bytes, is closed.
async fn burst(from: &TcpStream, to: &TcpStream, pipe: Pipe) -> io::Result<Burst> {
    let mut moved = 0;
    loop {
        let filled = from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, &pipe.write, None, pipe::SIZE, flags())?)
        });
        let n = match filled {
            Ok(0) => {
                pipe::give(pipe);
                return Ok(Burst::Eof(moved));
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pipe::give(pipe);
                return Ok(Burst::Drained(moved));
            }
            Err(e) => return Err(e),
        };
        drain(&pipe, to, n).await?;
        moved += n as u64;
    }
}

/// Splices the `pending` bytes in `pipe` into `to`.
async fn drain(pipe: &Pipe, to: &TcpStream, mut pending: usize) -> io::Result<()> {
    while pending > 0 {
        to.writable().await?;
        let sent = to.try_io(Interest::WRITABLE, || {
            Ok(splice(&pipe.read, None, to, None, pending, flags())?)
        });
        match sent {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => pending -= n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The fallback when no pipe can be had (file descriptor or pipe-memory limits): what `from`
/// has, copied through a buffer.
async fn copy_burst(from: &TcpStream, to: &TcpStream) -> io::Result<Burst> {
    let mut buf = vec![0; super::BUFFER];
    let mut moved = 0;
    loop {
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(Burst::Eof(moved)),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Burst::Drained(moved)),
            Err(e) => return Err(e),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            to.writable().await?;
            match to.try_write(rest) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(k) => rest = &rest[k..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        moved += n as u64;
    }
}

/// Passes EOF on. A peer that is already gone shows up as an error in the other direction.
fn shutdown_write(to: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() != ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// Both sockets and the pipe are non-blocking; MOVE is a hint to move pages, not copy them.
fn flags() -> SpliceFlags {
    SpliceFlags::NONBLOCK | SpliceFlags::MOVE
}
