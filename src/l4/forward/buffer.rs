//! Copy buffers, kept per thread once a burst is through: an idle connection holds none, and
//! a connection per request allocates none.

use super::kept::Kept;

/// Buffers kept per thread: 1 MiB.
const KEPT: usize = 16;

thread_local! {
    static POOL: Kept<Box<[u8]>, KEPT> = const { Kept::new() };
}

/// A buffer of `BUFFER` bytes: a kept one, else a new one.
pub fn take() -> Box<[u8]> {
    POOL.with(Kept::take)
        .unwrap_or_else(|| vec![0; super::BUFFER].into_boxed_slice())
}

/// Keeps `buffer` for another burst.
pub fn give(buffer: Box<[u8]>) {
    POOL.with(|p| p.give(buffer));
}
