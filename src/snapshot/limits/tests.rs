use std::net::IpAddr;
use std::sync::Arc;

use super::*;

fn spec(rps: u32, rpm: u32, connections: u32) -> LimitSpec {
    LimitSpec {
        rps,
        rpm,
        burst_multiplier: 5,
        connections,
        req_status: 503,
        conn_status: 503,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// How many of `n` requests at time `at` pass.
fn passing(zone: &Arc<Zone>, addr: IpAddr, n: usize, at: u64) -> usize {
    (0..n).filter(|_| zone.admit_at(addr, at).is_ok()).count()
}

#[test]
fn the_bucket_is_nginx_s_leaky_bucket_with_a_nodelay_burst() {
    // limit-rps 2: burst 10 (× 5); the first request and then 10 more pass at once.
    let zone = Arc::new(Zone::new(spec(2, 0, 0), PER_SHARD));
    let a = ip("192.0.2.1");
    assert_eq!(passing(&zone, a, 20, 0), 11);
    // 500 ms drain one request at 2 r/s.
    assert_eq!(passing(&zone, a, 5, 500), 1);
    assert_eq!(passing(&zone, a, 5, 999), 0);
    assert_eq!(passing(&zone, a, 5, 1000), 1);
    // Drained after (10 × 500 ms): the whole burst again.
    assert_eq!(passing(&zone, a, 20, 7000), 11);
    // Another address has its own bucket.
    assert_eq!(passing(&zone, ip("192.0.2.2"), 20, 7000), 11);
    // An IPv4-mapped IPv6 client is the IPv4 one.
    assert_eq!(passing(&zone, ip("::ffff:192.0.2.2"), 1, 7000), 0);
}

#[test]
fn per_minute_and_per_second_limits_both_hold() {
    // limit-rpm 6 (burst 30) with limit-rps 100: the minute's bucket refuses first.
    let zone = Arc::new(Zone::new(spec(100, 6, 0), PER_SHARD));
    let a = ip("192.0.2.1");
    assert_eq!(passing(&zone, a, 40, 0), 31);
    // 10 s drain one request at 6 r/m.
    assert_eq!(passing(&zone, a, 3, 10_000), 1);
}

#[test]
fn connections_count_requests_in_flight() {
    let zone = Arc::new(Zone::new(spec(0, 0, 2), PER_SHARD));
    let a = ip("192.0.2.1");
    let g1 = zone.admit_at(a, 0).unwrap();
    let g2 = zone.admit_at(a, 0).unwrap();
    assert_eq!(zone.admit_at(a, 0).unwrap_err(), Refusal::Connections);
    drop(g1);
    let g3 = zone.admit_at(a, 0).unwrap();
    assert!(zone.admit_at(ip("192.0.2.9"), 0).is_ok());
    drop((g2, g3));
    assert!(zone.admit_at(a, 0).is_ok());
}

#[test]
fn a_hundred_thousand_addresses_stay_bounded() {
    // A small zone (16 × 64), 100,000 distinct addresses, one request each, 1 ms apart:
    // the zone never holds more than it may; the least recently seen make room.
    let per_shard = 64;
    let zone = Arc::new(Zone::new(spec(10, 0, 0), per_shard));
    for i in 0..100_000u32 {
        let addr = IpAddr::V4((0x0a00_0000 + i).into());
        assert!(zone.admit_at(addr, u64::from(i)).is_ok(), "{addr}");
    }
    assert!(zone.len() <= SHARDS * per_shard, "{}", zone.len());
    // Busy addresses (their buckets not drained) are evicted least recently seen first: a new
    // address is still admitted.
    let zone = Arc::new(Zone::new(spec(1, 0, 0), 1));
    for i in 0..1000u32 {
        let addr = IpAddr::V4((0x0b00_0000 + i).into());
        for _ in 0..3 {
            let _ = zone.admit_at(addr, 0);
        }
    }
    assert!(zone.len() <= SHARDS);
}

/// An address with a request in flight keeps its count however many addresses come after it
/// (its entry is never the one dropped), and the least recently seen idle one goes first.
#[test]
fn eviction_spares_requests_in_flight_and_takes_the_least_recently_seen() {
    let zone = Arc::new(Zone::new(spec(0, 0, 1), 1));
    let busy = ip("192.0.2.1");
    let guard = zone.admit_at(busy, 0).unwrap();
    for i in 0..1000u32 {
        let addr = IpAddr::V4((0x0c00_0000 + i).into());
        drop(zone.admit_at(addr, 0).unwrap());
    }
    assert_eq!(
        zone.admit_at(busy, 0).unwrap_err(),
        Refusal::Connections,
        "still counted"
    );
    drop(guard);
    assert!(zone.len() <= SHARDS + 1, "{}", zone.len());
    // Least recently seen first: with room for two per shard, an address seen again stays
    // while an older one of its shard goes.
    let zone = Arc::new(Zone::new(spec(1, 0, 0), 2));
    let same: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::V4((0x0d00_0000 + i).into()))
        .filter(|a| super::shard_index(*a) == super::shard_index(busy))
        .take(3)
        .collect();
    let (a, b, c) = (same[0], same[1], same[2]);
    zone.admit_at(a, 0).unwrap();
    zone.admit_at(b, 0).unwrap();
    // a again, over its rate (1 per second, burst 5 would pass: use up the burst).
    for _ in 0..5 {
        let _ = zone.admit_at(a, 0);
    }
    assert_eq!(zone.admit_at(a, 0).unwrap_err(), Refusal::Rate);
    zone.admit_at(c, 0).unwrap(); // b goes, not a
    assert_eq!(zone.admit_at(a, 0).unwrap_err(), Refusal::Rate, "a kept");
}

#[test]
fn the_zone_of_an_ingress_outlives_a_snapshot_while_its_limits_stay() {
    let s = spec(5, 0, 0);
    let a = Zone::for_ingress("shop", "limits-test", &s);
    let b = Zone::for_ingress("shop", "limits-test", &s);
    assert!(Arc::ptr_eq(&a, &b));
    let c = Zone::for_ingress("shop", "limits-test", &spec(6, 0, 0));
    assert!(!Arc::ptr_eq(&a, &c));
    drop((a, b));
    let d = Zone::for_ingress("shop", "limits-test", &s);
    assert!(d.is_empty(), "a zone nobody held is gone");
}

/// nginx runs `limit_req` before `limit_conn`: a request refused for its connections has been
/// counted in the rate already, and one over both limits gets the rate's refusal.
#[test]
fn the_rate_is_judged_before_the_connections() {
    let mut both = spec(0, 1, 1);
    both.burst_multiplier = 1;
    let zone = Arc::new(Zone::new(both, PER_SHARD));
    let a = ip("192.0.2.9");
    let first = zone.admit_at(a, 0).expect("the first passes");
    assert!(first.is_some(), "counted as a connection");
    // In flight: refused by the connection count, but counted in the rate (burst 1).
    assert!(matches!(zone.admit_at(a, 0), Err(Refusal::Connections)));
    drop(first);
    // The rate's bucket is full: the rate refuses it, though no connection is left.
    assert!(matches!(zone.admit_at(a, 0), Err(Refusal::Rate)));
}

/// Huge annotation values saturate instead of overflowing (a panic in debug builds).
#[test]
fn huge_limits_do_not_overflow() {
    let mut huge = spec(u32::MAX, u32::MAX, 0);
    huge.burst_multiplier = u32::MAX;
    let zone = Arc::new(Zone::new(huge, PER_SHARD));
    let a = ip("192.0.2.10");
    assert_eq!(passing(&zone, a, 50, 0), 50);
    assert_eq!(passing(&zone, a, 50, u64::MAX / 2), 50);
}
