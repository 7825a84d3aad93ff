//! Spares kept per thread between bursts (pipes, copy buffers): an idle connection holds none,
//! and a busy one takes one for a burst without making it anew.

use std::cell::RefCell;

/// At most `N` spare `T`s, for a `thread_local!`.
pub struct Kept<T, const N: usize>(RefCell<Vec<T>>);

impl<T, const N: usize> Kept<T, N> {
    /// None kept yet.
    pub const fn new() -> Self {
        Kept(RefCell::new(Vec::new()))
    }

    /// A kept one, if any.
    pub fn take(&self) -> Option<T> {
        self.0.borrow_mut().pop()
    }

    /// Keeps `spare`, unless `N` are kept already: then it is dropped.
    pub fn give(&self, spare: T) {
        let mut kept = self.0.borrow_mut();
        if kept.len() < N {
            kept.push(spare);
        }
    }
}
