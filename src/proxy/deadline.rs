//! The upstream response timeout, without a timer per request.
//!
//! A tokio `timeout` per request reads the clock, registers an entry in the timer wheel,
//! checks the task budget at every poll and removes the entry when the response comes: about
//! 1,200 instructions per proxied request (callgrind), for a timeout that almost never fires.
//! Here one task per proxy advances a tick counter every quarter of the timeout and wakes the
//! requests that are past their tick. A request takes a slot in a shared table (its due tick
//! and its task's waker) the first time it has to wait, and gives it back when it ends; a
//! poll reads one atomic counter. A request times out between 1 and 1.25 timeouts after it
//! started waiting, as nginx's timers are not exact either.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

/// Ticks per timeout: a deadline passes between 4 and 5 ticks after it was set.
const TICKS_PER_TIMEOUT: u64 = 4;

/// Response deadlines of one proxy.
#[derive(Debug)]
pub struct Deadlines {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Advanced by the ticking task.
    tick: AtomicU64,
    /// Requests waiting: their due tick and waker.
    waiting: Mutex<Slab<Waiting>>,
}

#[derive(Debug)]
struct Waiting {
    due: u64,
    waker: Waker,
    /// Woken at its due tick already (it is woken once).
    woken: bool,
}

/// The timeout passed before the response head came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

// === impl Deadlines ===

impl Deadlines {
    /// Deadlines `timeout` after a request starts waiting. The ticking task runs on the
    /// current tokio runtime while the returned value lives (outside a runtime, nothing
    /// times out: nothing could run there anyway).
    pub fn new(timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            tick: AtomicU64::new(0),
            waiting: Mutex::new(Slab::new()),
        });
        let period = (timeout / TICKS_PER_TIMEOUT as u32).max(Duration::from_millis(1));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(tick(Arc::downgrade(&shared), period));
        }
        Deadlines { shared }
    }

    /// Runs `work` until it completes or the deadline passes. `work` is pinned by the caller
    /// (`pin!`): its output is not moved through another future on its way out.
    pub fn run<F: Future + Unpin>(&self, work: F) -> Timed<'_, F> {
        Timed {
            work,
            slot: Slot {
                shared: &self.shared,
                key: None,
                due: 0,
                waker: (0, 0),
            },
        }
    }

    /// Requests waiting now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.shared.lock().len()
    }
}

/// Advances the tick every `period` and wakes the requests that are due, until the
/// deadlines are dropped.
async fn tick(shared: Weak<Shared>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.tick.fetch_add(1, Ordering::AcqRel) + 1;
        for (_, waiting) in shared.lock().iter_mut() {
            if !waiting.woken && waiting.due <= now {
                waiting.woken = true;
                waiting.waker.wake_by_ref();
            }
        }
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slab<Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `work` within the deadline: see [`Deadlines::run`].
pub struct Timed<'a, F> {
    work: F,
    slot: Slot<'a>,
}

impl<F: Future + Unpin> Future for Timed<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Timed { work, slot } = &mut *self;
        if let Poll::Ready(output) = Pin::new(work).poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match slot.key {
            None => slot.wait(cx.waker()),
            Some(key) => {
                if slot.shared.tick.load(Ordering::Acquire) >= slot.due {
                    return Poll::Ready(Err(Elapsed));
                }
                slot.update_waker(key, cx.waker());
            }
        }
        Poll::Pending
    }
}

/// A request's place in the table, given back when the request ends.
struct Slot<'a> {
    shared: &'a Shared,
    key: Option<usize>,
    due: u64,
    /// Which waker is in the table (what `Waker::will_wake` compares), to notice a change
    /// without taking the lock.
    waker: (usize, usize),
}

/// What tells wakers apart: their data and vtable pointers.
fn waker_id(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
}

impl Slot<'_> {
    /// Starts the clock: due `TICKS_PER_TIMEOUT` whole ticks from now.
    fn wait(&mut self, waker: &Waker) {
        self.due = self.shared.tick.load(Ordering::Acquire) + TICKS_PER_TIMEOUT + 1;
        self.waker = waker_id(waker);
        let waiting = Waiting {
            due: self.due,
            waker: waker.clone(),
            woken: false,
        };
        self.key = Some(self.shared.lock().insert(waiting));
    }

    /// Keeps the waker current if the request moved to another task (rare).
    fn update_waker(&mut self, key: usize, waker: &Waker) {
        if waker_id(waker) == self.waker {
            return;
        }
        self.waker = waker_id(waker);
        if let Some(entry) = self.shared.lock().get_mut(key) {
            entry.waker = waker.clone();
            entry.woken = false;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.shared.lock().try_remove(key);
        }
    }
}

#[cfg(test)]
mod tests;
