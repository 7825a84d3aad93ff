//! Runtime state that rides along the immutable service table: per-endpoint load and
//! per-port session affinity. It is carried from one snapshot to the next by `build()` (same
//! Service port, same endpoint address), so schedulers keep their memory across swaps; it is
//! not part of the table's value (comparisons ignore it).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
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

/// Connections or requests currently open to one endpoint (for `lc`, `wlc` and `p2c`), and
/// its response time's peak-EWMA (for `ewma`).
#[derive(Debug, Default)]
pub struct EndpointLoad {
    active: AtomicUsize,
    total: AtomicUsize,
    /// The EWMA of response times, in microseconds (`f64` bits).
    ewma: AtomicU64,
    /// When it was last updated, in microseconds since [`epoch`].
    touched: AtomicU64,
    /// Failed its Service's active health checks (endpoints start healthy).
    unhealthy: std::sync::atomic::AtomicBool,
    /// Passive health (nginx's `max_fails`, 0: off), set by each snapshot build.
    max_fails: AtomicU32,
    /// nginx's `fail_timeout`, in microseconds.
    fail_timeout: AtomicU64,
    /// Failed attempts counted (nginx's `peer->fails`).
    fails: AtomicU32,
    /// When the last attempt failed (nginx's `peer->accessed`), in microseconds since [`epoch`].
    failed_at: AtomicU64,
    /// When the failure window last started (nginx's `peer->checked`).
    checked: AtomicU64,
}

/// ingress-nginx's `DECAY_TIME`: an EWMA sample's weight halves every 10 s × ln 2.
const DECAY_MICROS: f64 = 10_000_000.0;

/// The process's clock origin for EWMA timestamps.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_micros() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// ingress-nginx's `decay_ewma`: the old value decays toward `sample` with the time since it
/// was touched.
fn decay(ewma: f64, touched: u64, sample: f64, now: u64) -> f64 {
    let elapsed = now.saturating_sub(touched) as f64;
    let weight = (-elapsed / DECAY_MICROS).exp();
    ewma * weight + sample * (1.0 - weight)
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

    /// Whether it may take new traffic as far as health goes: it passes its active checks (if
    /// any) and is not out for its passive ones (if any).
    pub fn healthy(&self) -> bool {
        if self.unhealthy.load(Ordering::Relaxed) {
            return false;
        }
        let max_fails = self.max_fails.load(Ordering::Relaxed);
        max_fails == 0 || !self.out_at(max_fails, now_micros())
    }

    /// Whether its active health checks (if any) pass.
    pub fn passes_checks(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Out for its passive checks at `now`: `max_fails` failures counted, the last within
    /// `fail_timeout` (nginx's `ngx_http_upstream_get_peer`).
    fn out_at(&self, max_fails: u32, now: u64) -> bool {
        self.fails.load(Ordering::Relaxed) >= max_fails
            && now.saturating_sub(self.checked.load(Ordering::Relaxed))
                <= self.fail_timeout.load(Ordering::Relaxed)
    }

    /// Whether it is out for its passive checks now.
    pub fn passively_out(&self) -> bool {
        let max_fails = self.max_fails.load(Ordering::Relaxed);
        max_fails > 0 && self.out_at(max_fails, now_micros())
    }

    /// Sets (or with `None` turns off) passive health, as its Service asks.
    pub fn set_passive(&self, passive: Option<super::health::Passive>) {
        let (max_fails, timeout) =
            passive.map_or((0, Duration::ZERO), |p| (p.max_fails, p.fail_timeout));
        let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        self.fail_timeout.store(micros, Ordering::Relaxed);
        self.max_fails.store(max_fails, Ordering::Relaxed);
        if max_fails == 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
    }

    /// A failed attempt (refused, reset, timed out, no valid answer), counted when passive
    /// health is on; true when the endpoint is out now (it reached `max_fails`, or failed its
    /// one try after being out).
    pub fn failed(&self) -> bool {
        let max_fails = self.max_fails.load(Ordering::Relaxed);
        if max_fails == 0 {
            return false;
        }
        let now = now_micros();
        let fails = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        self.failed_at.store(now, Ordering::Relaxed);
        self.checked.store(now, Ordering::Relaxed);
        fails >= max_fails
    }

    /// A successful attempt: the failures are forgotten when none happened since the window
    /// last started (nginx's `accessed < checked`).
    #[inline]
    pub fn succeeded(&self) {
        if self.max_fails.load(Ordering::Relaxed) == 0 || self.fails.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.failed_at.load(Ordering::Relaxed) < self.checked.load(Ordering::Relaxed) {
            self.fails.store(0, Ordering::Relaxed);
        }
    }

    /// A pick with passive health on: past `fail_timeout` since the window started, a new one
    /// starts now (an endpoint that was out gets this one try).
    fn picked(&self) {
        let timeout = self.fail_timeout.load(Ordering::Relaxed);
        let now = now_micros();
        if now.saturating_sub(self.checked.load(Ordering::Relaxed)) > timeout {
            self.checked.store(now, Ordering::Relaxed);
        }
    }

    /// Sets the health checks' verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.unhealthy.store(!healthy, Ordering::Relaxed);
    }

    /// Counts one more until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> LoadGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        if self.max_fails.load(Ordering::Relaxed) > 0 {
            self.picked();
        }
        LoadGuard(self.clone(), None)
    }

    /// As [`start`](Self::start), and the time until the guard is dropped is a response-time
    /// sample for `ewma`.
    pub fn start_timed(self: &Arc<Self>) -> LoadGuard {
        let mut guard = self.start();
        guard.1 = Some(now_micros());
        guard
    }

    /// The `ewma` score at `now` (lower is better): the EWMA decayed toward 0 with the time
    /// since its last sample, as ingress-nginx scores a peer.
    pub fn ewma_score(&self, now: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        decay(ewma, self.touched.load(Ordering::Relaxed), 0.0, now)
    }

    /// The EWMA in microseconds, and when it was last updated.
    pub fn ewma(&self) -> (f64, u64) {
        (
            f64::from_bits(self.ewma.load(Ordering::Relaxed)),
            self.touched.load(Ordering::Relaxed),
        )
    }

    /// Sets the EWMA (a new endpoint starts at its port's average, as in ingress-nginx).
    pub fn set_ewma(&self, ewma: f64, touched: u64) {
        self.ewma.store(ewma.to_bits(), Ordering::Relaxed);
        self.touched.store(touched, Ordering::Relaxed);
    }

    /// Takes a response-time sample (microseconds) at `now`. Concurrent samples may lose one
    /// another's update, as ingress-nginx's per-worker tables do: it is an estimate.
    pub fn observe(&self, sample: f64, now: u64) {
        let (ewma, touched) = self.ewma();
        self.set_ewma(decay(ewma, touched, sample, now), now);
    }
}

/// An open connection or request to an endpoint; closes it on drop (and, when timed, takes
/// the time it was open as a response-time sample).
#[derive(Debug)]
pub struct LoadGuard(Arc<EndpointLoad>, Option<u64>);

impl LoadGuard {
    /// The endpoint's runtime state.
    pub fn load(&self) -> &EndpointLoad {
        &self.0
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(started) = self.1 {
            let now = now_micros();
            self.0.observe(now.saturating_sub(started) as f64, now);
        }
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
