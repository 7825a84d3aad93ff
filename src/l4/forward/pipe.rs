//! Pipes for splice(2), kept per thread once empty: an idle connection holds none, and a busy
//! one takes a pipe for a burst without a pipe2/fcntl/close round per connection.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};

use super::kept::Kept;

/// What one splice can carry. Each pipe slot holds one page fragment of a socket buffer, so
/// the default 16 slots (64 KiB) often carry less than 64 KiB; 256 KiB (64 slots) moves a
/// 64 KiB burst in one call with room to spare. A pipe beyond the user's pipe-memory soft
/// limit cannot be grown and keeps its default size, which is slower but correct.
pub const SIZE: usize = 256 * 1024;

/// Empty pipes kept per thread; a pipe is two file descriptors and, for a process without
/// CAP_SYS_RESOURCE, 64 pages of the user's pipe-memory allowance (`fs.pipe-user-pages-soft`,
/// 16384 pages by default): 16 kept pipes are a sixteenth of it per thread.
const KEPT: usize = 16;

/// A non-blocking pipe.
#[derive(Debug)]
pub struct Pipe {
    /// The end splice reads from.
    pub read: OwnedFd,
    /// The end splice writes to.
    pub write: OwnedFd,
}

thread_local! {
    static POOL: Kept<Pipe, KEPT> = const { Kept::new() };
}

/// An empty pipe: a kept one, else a new one.
pub fn take() -> io::Result<Pipe> {
    if let Some(pipe) = POOL.with(Kept::take) {
        return Ok(pipe);
    }
    let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
    // Best effort: see `SIZE`.
    let _ = fcntl_setpipe_size(&write, SIZE);
    Ok(Pipe { read, write })
}

/// Keeps `pipe` for another burst. It must be empty: a pipe still holding bytes is dropped
/// (closed) instead, never given back.
pub fn give(pipe: Pipe) {
    POOL.with(|p| p.give(pipe));
}
