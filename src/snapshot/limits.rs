//! Request and connection limits per client address (ingress-nginx's `limit-rps`,
//! `limit-rpm`, `limit-burst-multiplier`, `limit-connections`, `limit-whitelist`): nginx's
//! `limit_req` leaky bucket with `nodelay` bursts and its `limit_conn` count, one zone per
//! Ingress keyed by the client address, as ingress-nginx configures them. The zone is state
//! that outlives a snapshot: [`Zone::for_ingress`] hands the next build the zone an Ingress
//! already has while its limits stay the same. Limits are per Portico instance, as nginx's
//! are per controller replica.
//!
//! Memory is bounded: a zone holds at most [`SHARDS`] × [`PER_SHARD`] addresses. A full
//! shard drops the address seen least recently that has no request in flight, as nginx drops
//! its least recently used states; the shard keeps its addresses in use order
//! ([`LruTable`]), so making room costs the same with any number of addresses (a client
//! sending from many addresses, as IPv6 makes cheap, does not make each request scan the
//! shard).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use serde::Serialize;

use super::access::IpSet;
use crate::lru::LruTable;

/// Shards of a zone (one lock each).
pub const SHARDS: usize = 16;
/// Addresses per shard: 16 × 8192 = 131,072 per zone, about 6 MiB at most.
pub const PER_SHARD: usize = 8192;

/// One Ingress's limits, as its annotations and the ConfigMap set them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct LimitSpec {
    /// `limit-rps`: requests per second (0: none).
    pub rps: u32,
    /// `limit-rpm`: requests per minute (0: none).
    pub rpm: u32,
    /// `limit-burst-multiplier` (default 5): the burst is the rate times this.
    pub burst_multiplier: u32,
    /// `limit-connections`: requests in flight at once (0: none).
    pub connections: u32,
    /// `limit-req-status-code` (the ConfigMap's; default 503).
    pub req_status: u16,
    /// `limit-conn-status-code` (the ConfigMap's; default 503).
    pub conn_status: u16,
}

/// A route's limits: what, whom they spare, and the zone that counts.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// The limits.
    pub spec: LimitSpec,
    /// `limit-whitelist`: addresses never limited.
    pub exempt: IpSet,
    /// The Ingress's zone.
    #[serde(skip)]
    pub zone: Arc<Zone>,
}

impl PartialEq for Limits {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
            && self.exempt == other.exempt
            && Arc::ptr_eq(&self.zone, &other.zone)
    }
}

impl Eq for Limits {}

/// One address's state in a zone.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Excess of the per-second bucket, in thousandths of a request.
    rps_excess: u64,
    /// Excess of the per-minute bucket, in thousandths of a request.
    rpm_excess: u64,
    /// When the buckets were last updated (ms since the zone's epoch).
    last: u64,
    /// Requests in flight.
    conns: u32,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over `limit-connections`.
    Connections,
    /// Over the request rate and its burst.
    Rate,
}

/// The counters of one Ingress, keyed by client address.
pub struct Zone {
    shards: Box<[Mutex<LruTable<IpAddr, Entry>>]>,
    per_shard: usize,
    epoch: Instant,
    spec: LimitSpec,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("addresses", &self.len())
            .finish()
    }
}

type Registry = Mutex<HashMap<(String, String, LimitSpec), Weak<Zone>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Zone {
    /// The zone of an Ingress with these limits: the one it has while they stay the same
    /// (so a new snapshot does not forget who sent what), a new one otherwise.
    pub fn for_ingress(namespace: &str, name: &str, spec: &LimitSpec) -> Arc<Zone> {
        let key = (namespace.to_string(), name.to_string(), spec.clone());
        let Ok(mut map) = registry().lock() else {
            return Arc::new(Zone::new(spec.clone(), PER_SHARD));
        };
        if let Some(zone) = map.get(&key).and_then(Weak::upgrade) {
            return zone;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let zone = Arc::new(Zone::new(spec.clone(), PER_SHARD));
        map.insert(key, Arc::downgrade(&zone));
        zone
    }

    /// An empty zone holding at most `per_shard` addresses per shard.
    pub fn new(spec: LimitSpec, per_shard: usize) -> Zone {
        Zone {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruTable::default()))
                .collect(),
            per_shard: per_shard.max(1),
            epoch: Instant::now(),
            spec,
        }
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<LruTable<IpAddr, Entry>> {
        &self.shards[shard_index(ip)]
    }

    /// Counts a request from `ip` now: `Ok` with a guard to hold while the request is in
    /// flight (with `limit-connections`), or the refusal. Checks in ingress-nginx's order:
    /// connections, then the per-minute bucket, then the per-second one; a refused request
    /// changes no bucket.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<ConnGuard>, Refusal> {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.admit_at(ip, now)
    }

    /// [`Zone::admit`] at a given time (ms since the zone's epoch).
    pub fn admit_at(self: &Arc<Self>, ip: IpAddr, now: u64) -> Result<Option<ConnGuard>, Refusal> {
        let ip = ip.to_canonical();
        let spec = &self.spec;
        let Ok(mut shard) = self.shard(ip).lock() else {
            return Ok(None);
        };
        let shard = &mut *shard;
        let (entry, new) = match shard.touch(&ip) {
            Some(entry) => (entry, false),
            None => {
                if shard.len() >= self.per_shard {
                    // The least recently seen address without a request in flight.
                    shard.pop_oldest_where(|e| e.conns == 0);
                }
                let entry = Entry {
                    last: now,
                    ..Entry::default()
                };
                (shard.insert(ip, entry), true)
            }
        };
        // nginx runs `limit_req` before `limit_conn` (both in the preaccess phase): the rates
        // first, and a request the connection count then refuses has been counted in them.
        // A new address's first request passes with an empty bucket.
        if !new {
            let elapsed = now.saturating_sub(entry.last);
            let mult = u64::from(spec.burst_multiplier);
            let next = |excess: u64, per_thousand_ms: u64, limit: u32| -> Option<u64> {
                if limit == 0 {
                    return Some(0);
                }
                // nginx: excess - rate * ms / 1000 + 1000, at least 0; over the burst: refused.
                let drained = per_thousand_ms.saturating_mul(elapsed) / 1000;
                let e = excess.saturating_add(1000).saturating_sub(drained);
                let burst = u64::from(limit).saturating_mul(mult).saturating_mul(1000);
                (e <= burst).then_some(e)
            };
            // Rates in thousandths of a request per second.
            let rpm = next(entry.rpm_excess, u64::from(spec.rpm) * 1000 / 60, spec.rpm);
            let rps = next(entry.rps_excess, u64::from(spec.rps) * 1000, spec.rps);
            let (Some(rpm), Some(rps)) = (rpm, rps) else {
                return Err(Refusal::Rate);
            };
            entry.rpm_excess = rpm;
            entry.rps_excess = rps;
            entry.last = now;
        }
        if spec.connections == 0 {
            return Ok(None);
        }
        if entry.conns >= spec.connections {
            return Err(Refusal::Connections);
        }
        entry.conns += 1;
        Ok(Some(ConnGuard {
            zone: Arc::clone(self),
            ip,
        }))
    }
}

/// The shard of an address: a multiplicative mix of its bits.
fn shard_index(ip: IpAddr) -> usize {
    let h = match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    let mixed = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    mixed as usize % SHARDS
}

/// A request in flight under `limit-connections`: released when dropped (when the response
/// has been sent, or the request abandoned).
pub struct ConnGuard {
    zone: Arc<Zone>,
    ip: IpAddr,
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGuard").field("ip", &self.ip).finish()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Ok(mut shard) = self.zone.shard(self.ip).lock()
            && let Some(e) = shard.get_mut(&self.ip)
        {
            e.conns = e.conns.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests;
