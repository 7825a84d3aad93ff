//! Process resources: the file descriptor limit, raised at start, and the limit on client
//! connections derived from it, so that a flood of clients is refused before the process runs
//! out of descriptors (when accept fails with EMFILE, every listener, the admin's included,
//! stops taking connections and they queue in the kernel's backlog).
//!
//! `--max-connections` defaults to `(soft − reserve) / 2` with `reserve = min(128, soft / 2)`:
//! the reserve is for the listeners, admin connections, the manifests watcher or the API
//! server's connections, DNS and logging, and of the rest one half goes to client connections
//! and the other half to their upstream connections (one per request in flight, plus idle
//! pooled ones). 64 descriptors give 16 client connections, 1,024 give 448, 1,048,576 give
//! 524,224. An unlimited soft limit, or a system where it cannot be read, means no limit.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Descriptors kept back from client connections at most (see the module's documentation).
const RESERVE: u64 = 128;

/// A resource limit: a number, or unlimited (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => n.fmt(f),
            None => f.write_str("unlimited"),
        }
    }
}

/// The soft and hard RLIMIT_NOFILE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimits {
    /// The soft limit: what the process may open.
    pub soft: Limit,
    /// The hard limit: what the soft limit may be raised to.
    pub hard: Limit,
}

/// The file descriptor limits now; `None` where they are not read (not Linux).
pub fn fd_limits() -> Option<FdLimits> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit};
        let limit = getrlimit(Resource::Nofile);
        Some(FdLimits {
            soft: Limit(limit.current),
            hard: Limit(limit.maximum),
        })
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Raises the soft file descriptor limit to the hard one (to the kernel's `nr_open` when the
/// hard limit is unlimited, since the soft one cannot be). Returns the limits before and
/// after; `Ok(None)` where nothing is done (not Linux).
pub fn raise_fd_limit() -> io::Result<Option<(FdLimits, FdLimits)>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let target = before.maximum.or_else(nr_open);
        if let (Some(current), Some(target)) = (before.current, target)
            && current < target
        {
            let raised = Rlimit {
                current: Some(target),
                maximum: before.maximum,
            };
            setrlimit(Resource::Nofile, raised)?;
        }
        let limits = |l: Rlimit| FdLimits {
            soft: Limit(l.current),
            hard: Limit(l.maximum),
        };
        Ok(Some((limits(before), limits(getrlimit(Resource::Nofile)))))
    }
    #[cfg(not(target_os = "linux"))]
    Ok(None)
}

/// The most descriptors a process may have (`/proc/sys/fs/nr_open`).
#[cfg(target_os = "linux")]
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The default of `--max-connections` for a soft descriptor limit (see the module's
/// documentation); at least 1.
pub fn max_connections_for(soft: Limit) -> usize {
    let Limit(Some(soft)) = soft else {
        return usize::MAX;
    };
    let reserve = RESERVE.min(soft / 2);
    let clients = ((soft - reserve) / 2).max(1);
    usize::try_from(clients).unwrap_or(usize::MAX)
}

/// The default of `--max-connections` for the limits of this process now.
pub fn default_max_connections() -> usize {
    fd_limits().map_or(usize::MAX, |l| max_connections_for(l.soft))
}

/// Open client connections, counted against a maximum; shared by every proxy listener.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
#[must_use = "the connection is uncounted when the permit is dropped"]
pub struct ConnectionPermit(Arc<ConnectionLimit>);

// === impl ConnectionLimit ===

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A permit for one more connection, or `None` when `max` are open. One atomic add (and,
    /// past the limit, a subtraction): two racing for the last place may both lose it for a
    /// moment, never both win it.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionPermit(Arc::clone(self)))
    }

    /// A permit whatever the count: for a connection that is already open and changes hands
    /// (an upgraded connection outlives the HTTP connection that held its permit).
    pub fn hold(self: &Arc<Self>) -> ConnectionPermit {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnectionPermit(Arc::clone(self))
    }

    /// Connections counted now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The maximum.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
