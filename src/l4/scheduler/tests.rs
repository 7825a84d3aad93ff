//! Each scheduler over many picks, and session affinity with its expiry.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::snapshot::certs::TlsCert;
use crate::snapshot::{BuildConfig, Snapshot, build_after};
use crate::source::Object;
use crate::store::ObjectStore;

/// A snapshot with Service `s` (annotations, spec extras) on endpoints 10.0.0.1..=n:80.
fn snapshot(n: u8, annotations: Value, extra_spec: Value, previous: Option<&Snapshot>) -> Snapshot {
    let mut spec = json!({"ports": [{"port": 80}]});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let endpoints: Vec<Value> = (1..=n)
        .map(|i| json!({"addresses": [format!("10.0.0.{i}")]}))
        .collect();
    let objects = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": annotations}, "spec": spec}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
               "addressType": "IPv4", "ports": [{"port": 80}], "endpoints": endpoints}),
    ];
    let store = ObjectStore::from_objects(objects.map(|o| Object::from_value(o).unwrap()));
    let config = BuildConfig::new(TlsCert::self_signed(&["t"]).unwrap().key);
    build_after(&store, &config, previous).snapshot
}

fn port(s: &Snapshot) -> &ServicePort {
    s.services.iter().next().unwrap().1
}

fn client(i: u32) -> IpAddr {
    IpAddr::from([192, 168, (i >> 8) as u8, i as u8])
}

/// Picks `count` times (keeping each pick open when `hold`), counting per endpoint host byte.
fn tally(p: &ServicePort, count: u32, hold: bool) -> BTreeMap<u8, u32> {
    let mut held = Vec::new();
    let mut out = BTreeMap::new();
    for i in 0..count {
        let pick = pick(p, client(i), None, Instant::now()).unwrap();
        let IpAddr::V4(ip) = pick.endpoint.addr.ip() else {
            unreachable!()
        };
        *out.entry(ip.octets()[3]).or_default() += 1;
        if hold {
            held.push(pick);
        }
    }
    out
}

#[test]
fn rr_is_exact() {
    let s = snapshot(3, json!({}), json!({}), None);
    assert_eq!(
        tally(port(&s), 300, false),
        BTreeMap::from([(1, 100), (2, 100), (3, 100)])
    );
    let order: Vec<SocketAddr> = (0..6)
        .map(|_| {
            pick(port(&s), client(0), None, Instant::now())
                .unwrap()
                .endpoint
                .addr
        })
        .collect();
    assert_eq!(order[..3], order[3..], "a fixed rotation");
}

#[test]
fn wrr_follows_weights_smoothly() {
    let weights = json!({"portico.dev/load-balancer": "wrr", "portico.dev/weights": "10.0.0.1=5, 10.0.0.2:80=3, 10.0.0.3=0"});
    let s = snapshot(3, weights, json!({}), None);
    let counts = tally(port(&s), 8000, false);
    assert_eq!(counts.get(&1), Some(&5000));
    assert_eq!(counts.get(&2), Some(&3000));
    assert_eq!(counts.get(&3), None, "weight 0 gets nothing");
    // Smooth: no endpoint gets more than two in a row with 5:3.
    let seq: Vec<u8> = port(&s).wrr.iter().map(|&i| i as u8).collect();
    assert_eq!(seq.len(), 8);
    assert!(
        seq.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
        "{seq:?}"
    );
}

#[test]
fn lc_prefers_the_idle_endpoint() {
    let s = snapshot(
        3,
        json!({"portico.dev/load-balancer": "lc"}),
        json!({}),
        None,
    );
    let p = port(&s);
    let busy: Vec<_> = (0..5).map(|_| p.endpoints[0].load.0.start()).collect();
    let busy2: Vec<_> = (0..2).map(|_| p.endpoints[1].load.0.start()).collect();
    for _ in 0..10 {
        assert_eq!(
            pick(p, client(1), None, Instant::now())
                .unwrap()
                .endpoint
                .addr,
            p.endpoints[2].addr
        );
    }
    // Held picks spread evenly.
    drop((busy, busy2));
    let counts = tally(p, 300, true);
    assert_eq!(counts, BTreeMap::from([(1, 100), (2, 100), (3, 100)]));
}

#[test]
fn wlc_follows_ipvs_weighted_least_connection() {
    let weights = json!({"portico.dev/load-balancer": "wlc", "portico.dev/weights": "10.0.0.1=3, 10.0.0.2=1, 10.0.0.3=0"});
    let s = snapshot(3, weights, json!({}), None);
    let p = port(&s);
    // Held picks: open connections settle at the weights' ratio; weight 0 gets none.
    let counts = tally(p, 400, true);
    assert_eq!(counts, BTreeMap::from([(1, 300), (2, 100)]));
    // Idle endpoints: equal ratios rotate among the weighted ones (the weight-0 one's turn
    // falls to the next).
    let counts = tally(p, 99, false);
    assert_eq!(counts, BTreeMap::from([(1, 66), (2, 33)]));
    // A busy heavy endpoint loses to a light idle one: 3 open at weight 3 (256) vs 0 at 1.
    let busy: Vec<_> = (0..3).map(|_| p.endpoints[0].load.0.start()).collect();
    let picked = pick(p, client(1), None, Instant::now()).unwrap();
    assert_eq!(picked.endpoint.addr, p.endpoints[1].addr);
    // One open at weight 1 (256 per weight) against four at weight 3 (341): the light one
    // again.
    let _fourth = p.endpoints[0].load.0.start();
    for _ in 0..5 {
        let next = pick(p, client(1), None, Instant::now()).unwrap();
        assert_eq!(next.endpoint.addr, p.endpoints[1].addr);
    }
    drop((busy, picked));
    // A failed endpoint's retry never lands on a weight-0 one.
    for i in 0..20 {
        let failed = p.endpoints[1].addr;
        let next = pick(p, client(i), Some(failed), Instant::now()).unwrap();
        assert_eq!(next.endpoint.addr, p.endpoints[0].addr);
    }
    // Every weight 0: the port is quiesced, as in IPVS.
    let zero = json!({"portico.dev/load-balancer": "wlc", "portico.dev/weights": "10.0.0.1=0, 10.0.0.2=0"});
    let s = snapshot(2, zero, json!({}), None);
    assert!(pick(port(&s), client(0), None, Instant::now()).is_none());
}

#[test]
fn ewma_prefers_the_faster_endpoint_and_learns() {
    use crate::snapshot::services::state::now_micros;
    let s = snapshot(
        2,
        json!({"portico.dev/load-balancer": "ewma"}),
        json!({}),
        None,
    );
    let p = port(&s);
    let now = now_micros();
    p.endpoints[0].load.set_ewma(100_000.0, now);
    p.endpoints[1].load.set_ewma(1_000.0, now);
    // Two endpoints: both are the two candidates; the lower EWMA always wins.
    let counts = tally(p, 50, false);
    assert_eq!(counts, BTreeMap::from([(2, 50)]));
    // A score decays toward 0 with the time since its last sample (10 s: × 1/e).
    let later = p.endpoints[0].load.ewma_score(now + 10_000_000);
    assert!(
        (later - 100_000.0 / std::f64::consts::E).abs() < 1.0,
        "{later}"
    );
    // A pick's time until it is dropped is a sample: a slow pick raises the EWMA.
    let before = p.endpoints[1].load.ewma().0;
    let pick = pick(p, client(1), None, Instant::now()).unwrap();
    assert_eq!(pick.endpoint.addr, p.endpoints[1].addr);
    std::thread::sleep(Duration::from_millis(30));
    drop(pick);
    let (after, touched) = p.endpoints[1].load.ewma();
    assert!(after > before, "{before} → {after}");
    assert!(touched >= now);
    // A new endpoint starts at the average of the port's others.
    let grown = snapshot(
        3,
        json!({"portico.dev/load-balancer": "ewma"}),
        json!({}),
        Some(&s),
    );
    let third = &port(&grown).endpoints[2];
    let average = (p.endpoints[0].load.ewma().0 + p.endpoints[1].load.ewma().0) / 2.0;
    assert!((third.load.ewma().0 - average).abs() < 1e-6);
    // Other schedulers take no samples.
    let rr = snapshot(1, json!({}), json!({}), None);
    drop(pick_fn(port(&rr)));
    assert_eq!(port(&rr).endpoints[0].load.ewma(), (0.0, 0));
}

fn pick_fn(p: &ServicePort) -> Pick<'_> {
    pick(p, client(0), None, Instant::now()).unwrap()
}

#[test]
fn sh_is_stable_per_client_and_moves_few_clients() {
    let s = snapshot(
        4,
        json!({"portico.dev/load-balancer": "sh"}),
        json!({}),
        None,
    );
    let p = port(&s);
    let first: Vec<SocketAddr> = (0..500)
        .map(|i| {
            pick(p, client(i), None, Instant::now())
                .unwrap()
                .endpoint
                .addr
        })
        .collect();
    let again: Vec<SocketAddr> = (0..500)
        .map(|i| {
            pick(p, client(i), None, Instant::now())
                .unwrap()
                .endpoint
                .addr
        })
        .collect();
    assert_eq!(first, again, "the same client, the same endpoint");
    let counts = tally(p, 4000, false);
    assert!(
        counts.values().all(|&c| (700..1300).contains(&c)),
        "spread: {counts:?}"
    );
    // A fifth endpoint takes about a fifth of the clients; the others stay where they were.
    let bigger = snapshot(
        5,
        json!({"portico.dev/load-balancer": "sh"}),
        json!({}),
        None,
    );
    let moved = (0..500)
        .filter(|&i| {
            pick(port(&bigger), client(i), None, Instant::now())
                .unwrap()
                .endpoint
                .addr
                != first[i as usize]
        })
        .count();
    assert!(moved < 170, "{moved} of 500 clients moved");
}

#[test]
fn random_and_p2c_spread() {
    for scheduler in ["random", "p2c"] {
        let s = snapshot(
            4,
            json!({"portico.dev/load-balancer": scheduler}),
            json!({}),
            None,
        );
        let counts = tally(port(&s), 4000, scheduler == "p2c");
        assert_eq!(counts.len(), 4, "{scheduler}: {counts:?}");
        let (lo, hi) = if scheduler == "p2c" {
            (900, 1100)
        } else {
            (800, 1200)
        };
        assert!(
            counts.values().all(|&c| (lo..hi).contains(&c)),
            "{scheduler}: {counts:?}"
        );
    }
}

#[test]
fn exclude_avoids_the_failed_endpoint() {
    for scheduler in ["rr", "wrr", "lc", "wlc", "sh", "random", "p2c"] {
        let s = snapshot(
            2,
            json!({"portico.dev/load-balancer": scheduler}),
            json!({}),
            None,
        );
        let p = port(&s);
        for i in 0..50 {
            let failed = p.endpoints[(i % 2) as usize].addr;
            assert_ne!(
                pick(p, client(i), Some(failed), Instant::now())
                    .unwrap()
                    .endpoint
                    .addr,
                failed,
                "{scheduler}"
            );
        }
        let one = snapshot(
            1,
            json!({"portico.dev/load-balancer": scheduler}),
            json!({}),
            None,
        );
        let only = port(&one).endpoints[0].addr;
        assert_eq!(
            pick(port(&one), client(0), Some(only), Instant::now())
                .unwrap()
                .endpoint
                .addr,
            only,
            "nothing else is ready"
        );
    }
}

#[test]
fn client_ip_affinity_sticks_across_swaps_and_expires() {
    let affinity = json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}});
    let s1 = snapshot(3, json!({}), affinity.clone(), None);
    let t0 = Instant::now();
    let first = pick(port(&s1), client(7), None, t0).unwrap().endpoint.addr;
    for k in 0..20 {
        let t = t0 + Duration::from_secs(k);
        assert_eq!(
            pick(port(&s1), client(7), None, t).unwrap().endpoint.addr,
            first,
            "round robin is overridden"
        );
    }
    // A new snapshot (same port, endpoint still ready) keeps the pin.
    let s2 = snapshot(3, json!({}), affinity.clone(), Some(&s1));
    assert_eq!(
        pick(port(&s2), client(7), None, t0 + Duration::from_secs(30))
            .unwrap()
            .endpoint
            .addr,
        first
    );
    // Idle past the timeout: the pin is gone, and round robin decides again.
    let late = t0 + Duration::from_secs(30 + 61);
    let picks: Vec<SocketAddr> = (0..3)
        .map(|_| {
            pick(port(&s2), client(7), None, late)
                .unwrap()
                .endpoint
                .addr
        })
        .collect();
    assert_eq!(
        picks.iter().filter(|a| **a == picks[0]).count(),
        3,
        "re-pinned to one endpoint"
    );
    port(&s2)
        .affinity
        .expire(late + Duration::from_secs(61), Duration::from_secs(60));
    assert!(port(&s2).affinity.is_empty());
    // A client pinned to an endpoint that goes away is moved, in the next snapshot.
    let third = IpAddr::from([10, 0, 0, 3]);
    let c = (100..110)
        .map(client)
        .find(|c| pick(port(&s2), *c, None, late).unwrap().endpoint.addr.ip() == third)
        .unwrap();
    let fewer = snapshot(2, json!({}), affinity, Some(&s2));
    for k in 0..5 {
        let now = pick(port(&fewer), c, None, late + Duration::from_secs(k))
            .unwrap()
            .endpoint
            .addr;
        assert_ne!(now.ip(), third);
    }
}

#[test]
fn endpoints_failing_health_checks_get_nothing_while_another_passes() {
    for scheduler in ["rr", "wrr", "lc", "wlc", "sh", "random", "p2c", "ewma"] {
        let annotations = json!({"portico.dev/load-balancer": scheduler, "portico.dev/health-check-path": "/healthz"});
        let s = snapshot(3, annotations, json!({}), None);
        let p = port(&s);
        p.endpoints[1].load.set_healthy(false);
        let counts = tally(p, 300, false);
        assert_eq!(counts.get(&2), None, "{scheduler}: {counts:?}");
        for key in 0..50u64 {
            let hashed = pick_hashed(p, key, None).unwrap();
            assert_ne!(hashed.endpoint.addr, p.endpoints[1].addr, "{scheduler}");
        }
        // Every endpoint failing: they all take traffic (panic mode).
        for e in &p.endpoints {
            e.load.set_healthy(false);
        }
        assert!(
            pick(p, client(7), None, Instant::now()).is_some(),
            "{scheduler}"
        );
        assert!(pick_hashed(p, 7, None).is_some(), "{scheduler}");
    }
    // Without health checks the verdict is not read.
    let s = snapshot(2, json!({}), json!({}), None);
    let p = port(&s);
    p.endpoints[0].load.set_healthy(false);
    assert_eq!(tally(p, 100, false).get(&1), Some(&50));
}
