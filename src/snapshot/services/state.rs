//! Runtime state that rides along the immutable service table: per-endpoint load and
//! per-port session affinity. It is carried from one snapshot to the next by `build()` (same
//! Service port, same endpoint address), so schedulers keep their memory across swaps; it is
//! not part of the table's value (comparisons ignore it).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared runtime state inside a snapshot value: equal to any other, hashed as nothing.
#[derive(Debug, Default)]
pub struct Shared<T>(pub Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> PartialEq for Shared<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Shared<T> {}

impl<T> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Connections or requests currently open to one endpoint (for `lc` and `p2c`).
#[derive(Debug, Default)]
pub struct EndpointLoad {
    active: AtomicUsize,
    total: AtomicUsize,
}

// === impl EndpointLoad ===

impl EndpointLoad {
    /// Open ones now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// All ever started.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts one more until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> LoadGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        LoadGuard(self.clone())
    }
}

/// An open connection or request to an endpoint; closes it on drop.
#[derive(Debug)]
pub struct LoadGuard(Arc<EndpointLoad>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shards of the affinity table: lookups of different clients rarely share a lock.
const SHARDS: usize = 16;

/// ClientIP session affinity of one Service port: client → (endpoint, last use).
#[derive(Debug)]
pub struct Affinity {
    shards: [Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>; SHARDS],
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

// === impl Affinity ===

impl Affinity {
    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, (SocketAddr, Instant)>> {
        let mut h = std::hash::DefaultHasher::new();
        client.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The endpoint this client is pinned to, if it used it within `timeout` and `usable`
    /// still accepts it; refreshes the entry.
    pub fn lookup(
        &self,
        client: IpAddr,
        now: Instant,
        timeout: Duration,
        usable: impl Fn(SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let mut shard = self.shard(client).lock().unwrap_or_else(|p| p.into_inner());
        match shard.get_mut(&client) {
            Some((addr, last)) if now.duration_since(*last) <= timeout && usable(*addr) => {
                *last = now;
                Some(*addr)
            }
            Some(_) => {
                shard.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Pins the client to an endpoint.
    pub fn remember(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        let mut shard = self.shard(client).lock().unwrap_or_else(|p| p.into_inner());
        shard.insert(client, (endpoint, now));
    }

    /// Drops entries idle for longer than `timeout`.
    pub fn expire(&self, now: Instant, timeout: Duration) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, (_, last)| now.duration_since(*last) <= timeout);
        }
    }

    /// Number of pinned clients.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// True when no client is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
