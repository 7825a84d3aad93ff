//! Draining client connections on shutdown: each connection is told once to finish what it
//! has in flight and close (HTTP/1: after the current response; HTTP/2: GOAWAY), and the
//! shutdown waits until every one has ended.
//!
//! hyper-util's `GracefulShutdown` does the same with a watch channel whose `changed()`
//! future is polled at every poll of every connection: about 450 instructions per proxied
//! HTTP/1.1 request (callgrind). Here a connection leaves its task's waker in a shared table
//! once, and reads one atomic flag per poll.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

/// A connection that can be told to finish what it has in flight and close.
pub trait Graceful: Future {
    /// Starts the graceful close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<C: GracefulConnection> Graceful for C {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        GracefulConnection::graceful_shutdown(self);
    }
}

/// Connections watched for a graceful shutdown; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Set once, when the shutdown starts.
    draining: AtomicBool,
    table: Mutex<Table>,
    /// Told when the last connection ends while draining.
    drained: Notify,
}

/// The connections being served, by id, with the waker of each one's task once it has run.
#[derive(Debug, Default)]
struct Table {
    next: u64,
    wakers: HashMap<u64, Option<Waker>>,
}

/// One watched connection's place in the table; removed when the connection ends.
struct Entry {
    shared: Arc<Shared>,
    id: u64,
    /// The waker last left in the table.
    waker: Option<Waker>,
}

// === impl Drain ===

impl Drain {
    /// No connections yet, not draining.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `conn` until it ends; once the shutdown starts, it is told to finish gracefully.
    /// The connection counts from this call on (not only once it first runs), so a shutdown
    /// waits for connections accepted but not yet started.
    pub fn watch<C>(&self, conn: C) -> impl Future<Output = C::Output> + Send + use<C>
    where
        C: Graceful + Send,
    {
        self.watch_or(conn, || false)
    }

    /// [`watch`](Self::watch), and the connection is also told to finish gracefully once
    /// `closing` turns true (looked at each time the connection is polled).
    pub fn watch_or<C, F>(
        &self,
        conn: C,
        closing: F,
    ) -> impl Future<Output = C::Output> + Send + use<C, F>
    where
        C: Graceful + Send,
        F: Fn() -> bool + Send + Sync,
    {
        let mut entry = Entry::new(self.shared.clone());
        async move {
            let mut conn = pin!(conn);
            let mut told = false;
            poll_fn(|cx| {
                if !told {
                    entry.set_waker(cx.waker());
                    if closing() || entry.shared.draining.load(Ordering::SeqCst) {
                        conn.as_mut().graceful_shutdown();
                        told = true;
                    }
                }
                conn.as_mut().poll(cx)
            })
            .await
        }
    }

    /// How many connections are being served.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.shared.lock().wakers.len()
    }

    /// Tells every connection to finish gracefully, and waits until all have ended.
    pub async fn shutdown(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self
            .shared
            .lock()
            .wakers
            .values()
            .flatten()
            .cloned()
            .collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            let mut drained = pin!(self.shared.drained.notified());
            drained.as_mut().enable();
            if self.shared.lock().wakers.is_empty() {
                return;
            }
            drained.await;
        }
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Entry ===

impl Entry {
    fn new(shared: Arc<Shared>) -> Self {
        let id = {
            let mut table = shared.lock();
            let id = table.next;
            table.next += 1;
            table.wakers.insert(id, None);
            id
        };
        Entry {
            shared,
            id,
            waker: None,
        }
    }

    /// Leaves `waker` in the table unless it is the one already there (a task's waker
    /// rarely changes: one lock per connection).
    fn set_waker(&mut self, waker: &Waker) {
        if self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return;
        }
        self.waker = Some(waker.clone());
        if let Some(slot) = self.shared.lock().wakers.get_mut(&self.id) {
            *slot = Some(waker.clone());
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let empty = {
            let mut table = self.shared.lock();
            table.wakers.remove(&self.id);
            table.wakers.is_empty()
        };
        if empty && self.shared.draining.load(Ordering::SeqCst) {
            self.shared.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
