//! Copy buffers, kept per thread once a burst is through: an idle connection holds none, and
//! a connection per request allocates none.

use std::cell::RefCell;

/// Bytes one copy moves per read: tokio's default (8 KiB) costs four times the syscalls on
/// bulk transfers.
pub const SIZE: usize = 64 * 1024;

/// Buffers kept per thread: 1 MiB.
const KEPT: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `SIZE` bytes: a kept one, else a new one.
pub fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; SIZE].into_boxed_slice())
}

/// Keeps `buffer` for another burst.
pub fn give(buffer: Box<[u8]>) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < KEPT {
            pool.push(buffer);
        }
    });
}
