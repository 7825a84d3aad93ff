//! Picking an endpoint of a Service port: rr, wrr, lc, wlc, sh, random, p2c, ewma, with
//! ClientIP session affinity. No global lock: cursors and load counters are atomics, affinity tables are sharded.

use std::cell::Cell;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::snapshot::services::state::LoadGuard;
use crate::snapshot::services::{Endpoint, Scheduler, ServicePort, SessionAffinity};

/// A chosen endpoint, counted as open (for `lc` and `p2c`) until the pick is dropped.
#[derive(Debug)]
pub struct Pick<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Keeps the endpoint's load counted.
    pub guard: LoadGuard,
}

impl<'a> Pick<'a> {
    /// `endpoint`, counted as open from now on.
    pub fn new(endpoint: &'a Endpoint) -> Pick<'a> {
        Pick {
            endpoint,
            guard: endpoint.load.0.start(),
        }
    }
}

/// Picks a ready endpoint of `port` for `client`, avoiding `exclude` when another is ready
/// (a retry after a failed connect). None when no endpoint is ready.
pub fn pick(
    port: &ServicePort,
    client: IpAddr,
    exclude: Option<SocketAddr>,
    now: Instant,
) -> Option<Pick<'_>> {
    pick_with(port, port.scheduler, client, exclude, now)
}

/// [`pick`] by `scheduler` rather than the port's own (an Ingress's `load-balance`).
pub fn pick_with(
    port: &ServicePort,
    scheduler: Scheduler,
    client: IpAddr,
    exclude: Option<SocketAddr>,
    now: Instant,
) -> Option<Pick<'_>> {
    let ready = port.ready_endpoints();
    if ready.is_empty() {
        return None;
    }
    let affinity = match port.session_affinity {
        SessionAffinity::ClientIp { timeout_seconds } => {
            Some(Duration::from_secs(u64::from(timeout_seconds)))
        }
        SessionAffinity::None => None,
    };
    let checked = port.judged();
    if let Some(timeout) = affinity {
        let usable = |a: SocketAddr| {
            Some(a) != exclude
                && ready
                    .iter()
                    .any(|e| e.addr == a && (!checked || e.load.healthy()))
        };
        let pinned = port.affinity.lookup(client, now, timeout, usable);
        if let Some(e) = pinned.and_then(|a| ready.iter().find(|e| e.addr == a)) {
            return Some(Pick {
                endpoint: e,
                guard: e.load.0.start(),
            });
        }
    }
    let mut i = choose(port, scheduler, ready, client)?;
    let unhealthy = |j: usize| checked && !ready[j].load.healthy();
    if Some(ready[i].addr) == exclude || unhealthy(i) {
        // The next endpoint that may take new connections (weighted schedulers never send
        // to weight 0; health checks' failures take none while a healthy one is left), if
        // any. With every endpoint failing its checks, they all take traffic (fail open,
        // Envoy's panic mode).
        let weighted = matches!(
            scheduler,
            Scheduler::WeightedRoundRobin | Scheduler::WeightedLeastConnection
        );
        let n = ready.len();
        let fits = |j: usize, healthy_only: bool| {
            Some(ready[j].addr) != exclude
                && (!weighted || ready[j].weight > 0)
                && (!healthy_only || !unhealthy(j))
        };
        let next =
            |healthy_only: bool| (0..n).map(|k| (i + k) % n).find(|&j| fits(j, healthy_only));
        if let Some(j) = next(true).or_else(|| next(false)) {
            i = j;
        }
    }
    let endpoint = &ready[i];
    if affinity.is_some() {
        port.affinity.remember(client, endpoint.addr, now);
    }
    // `ewma` learns from the time each pick stays open (the response head for the proxy).
    let guard = if scheduler == Scheduler::Ewma {
        endpoint.load.0.start_timed()
    } else {
        endpoint.load.0.start()
    };
    Some(Pick { endpoint, guard })
}

/// Picks the ready endpoint of `port` that a request key hashes to (`upstream-hash-by`:
/// rendezvous hashing, so adding or removing an endpoint moves only the keys that had, or
/// get, that endpoint), avoiding `exclude` when another is ready.
pub fn pick_hashed(port: &ServicePort, key: u64, exclude: Option<SocketAddr>) -> Option<Pick<'_>> {
    let ready = port.ready_endpoints();
    match exclude {
        Some(addr) if ready.len() > 1 => pick_hashed_except(port, key, &[addr]),
        _ => pick_hashed_except(port, key, &[]),
    }
}

/// The ready endpoint with the highest rendezvous score for `key` among those not in
/// `except` (another try of a hashed request: the next endpoint on its own order).
pub fn pick_hashed_except<'p>(
    port: &'p ServicePort,
    key: u64,
    except: &[SocketAddr],
) -> Option<Pick<'p>> {
    let score = |e: &Endpoint| {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        e.addr.hash(&mut h);
        h.finish()
    };
    let candidates = || {
        port.ready_endpoints()
            .iter()
            .filter(|e| !except.contains(&e.addr))
    };
    // Endpoints failing their health checks only when no other is left (panic mode).
    let endpoint = candidates()
        .filter(|e| !port.judged() || e.load.healthy())
        .max_by_key(|e| score(e))
        .or_else(|| candidates().max_by_key(|e| score(e)))?;
    Some(Pick::new(endpoint))
}

/// The index of the scheduler's choice among the ready endpoints.
fn choose(
    port: &ServicePort,
    scheduler: Scheduler,
    ready: &[Endpoint],
    client: IpAddr,
) -> Option<usize> {
    let n = ready.len();
    match scheduler {
        Scheduler::RoundRobin => Some(port.cursor.next() % n),
        Scheduler::WeightedRoundRobin => {
            // Weight 0 everywhere quiesces the port, as in IPVS.
            let sequence = &port.wrr;
            (!sequence.is_empty()).then(|| sequence[port.cursor.next() % sequence.len()] as usize)
        }
        Scheduler::LeastConnections => {
            // Equal loads rotate, starting where round robin would.
            let start = port.cursor.next();
            (0..n)
                .map(|k| (start + k) % n)
                .min_by_key(|&i| ready[i].load.active())
        }
        Scheduler::WeightedLeastConnection => {
            let start = port.cursor.next();
            least_weighted(ready, start)
        }
        Scheduler::SourceHash => (0..n).max_by_key(|&i| rendezvous(client, ready[i].addr)),
        Scheduler::Random => Some(random_below(n)),
        Scheduler::Ewma => {
            // ingress-nginx's ewma.lua: two distinct random peers, the lower decayed EWMA.
            if n == 1 {
                return Some(0);
            }
            let a = random_below(n);
            let b = (a + 1 + random_below(n - 1)) % n;
            let now = crate::snapshot::services::state::now_micros();
            let score = |i: usize| ready[i].load.ewma_score(now);
            Some(if score(b) < score(a) { b } else { a })
        }
        Scheduler::PowerOfTwo => {
            let a = random_below(n);
            let b = (a + 1 + random_below(n.saturating_sub(1).max(1))) % n;
            Some(if ready[b].load.active() < ready[a].load.active() {
                b
            } else {
                a
            })
        }
    }
}

/// `wlc`, IPVS's weighted least-connection: the endpoint with the least overhead per weight,
/// overhead = active × 256 + inactive (`ip_vs_dest_conn_overhead`). Portico keeps no
/// connection after it closes (no TIME_WAIT entries as the kernel's table has), so inactive
/// is 0 and the overhead is the open connections (L4) or requests (L7). Weight 0 takes
/// nothing new; all 0 quiesces the port (`None`). Equal ratios rotate from `start`, as `lc`
/// (IPVS takes the first in its list).
fn least_weighted(ready: &[Endpoint], start: usize) -> Option<usize> {
    let n = ready.len();
    let mut best: Option<(usize, u128, u128)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let weight = u128::from(ready[i].weight);
        if weight == 0 {
            continue;
        }
        let overhead = (ready[i].load.active() as u128) << 8;
        // overhead / weight < best overhead / best weight, without division.
        match best {
            Some((_, o, w)) if overhead * w >= o * weight => {}
            _ => best = Some((i, overhead, weight)),
        }
    }
    best.map(|(i, _, _)| i)
}

/// Rendezvous (highest random weight) hashing: each client prefers the endpoint with the
/// highest hash of (client, endpoint), so adding or removing an endpoint moves only the
/// clients that had (or get) that endpoint.
fn rendezvous(client: IpAddr, endpoint: SocketAddr) -> u64 {
    // Fixed keys: the same client maps to the same endpoint in every process.
    let mut h = std::hash::DefaultHasher::new();
    client.hash(&mut h);
    endpoint.hash(&mut h);
    h.finish()
}

/// A uniform-enough number in `0..n` from a per-thread xorshift generator.
pub(crate) fn random_below(n: usize) -> usize {
    (random_u64() % n.max(1) as u64) as usize
}

/// 64 pseudo-random bits (xorshift, seeded per thread from the process's random state).
pub(crate) fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests;
