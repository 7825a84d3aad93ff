//! Sticky picks over real snapshots: a cookie keeps its endpoint, balanced sessions spread,
//! persistent ones survive a scale-up, failures move a session only when asked, and the
//! cookie is written as ingress-nginx writes it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::*;
use crate::snapshot::certs::TlsCert;
use crate::snapshot::routes::{PortRef, Upstream};
use crate::snapshot::{BuildConfig, Snapshot, build_after};
use crate::source::Object;
use crate::store::ObjectStore;

/// A snapshot with Service `s` on endpoints 10.0.0.1..=n:80.
fn snapshot(n: u8) -> Snapshot {
    snapshot_with(n, json!({}))
}

fn snapshot_with(n: u8, annotations: Value) -> Snapshot {
    let endpoints: Vec<Value> = (1..=n)
        .map(|i| json!({"addresses": [format!("10.0.0.{i}")]}))
        .collect();
    let objects = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": annotations}, "spec": {"ports": [{"port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
               "addressType": "IPv4", "ports": [{"port": 80}], "endpoints": endpoints}),
    ];
    let store = ObjectStore::from_objects(objects.map(|o| Object::from_value(o).unwrap()));
    let config = BuildConfig::new(TlsCert::self_signed(&["t"]).unwrap().key);
    build_after(&store, &config, None).snapshot
}

fn port(s: &Snapshot) -> &ServicePort {
    s.services.iter().next().unwrap().1
}

fn affinity(mode: AffinityMode) -> Affinity {
    Affinity {
        mode,
        name: "INGRESSCOOKIE".into(),
        path: None,
        domain: None,
        max_age: None,
        expires: None,
        samesite: None,
        secure: false,
        change_on_failure: false,
    }
}

fn backend(service: &str) -> Backend {
    Backend {
        service: service.into(),
        port: PortRef::Number(80),
        upstream: Upstream::Unavailable,
        tls: None,
        balance: None,
        http2: false,
    }
}

const SALT: [u8; 16] = *b"0123456789abcdef";

#[test]
fn a_new_session_gets_a_key_and_the_key_keeps_its_endpoint() {
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let s = snapshot(5);
        let a = affinity(mode);
        for _ in 0..50 {
            let (first, key) = pick(&a, &SALT, port(&s), None, None).unwrap();
            let key = key.expect("a new session gets a key");
            let addr = first.endpoint.addr;
            for _ in 0..5 {
                let (again, new) = pick(&a, &SALT, port(&s), Some(&key), None).unwrap();
                assert_eq!(again.endpoint.addr, addr, "{mode:?}");
                assert_eq!(new, None, "{mode:?}: a honoured cookie is not set again");
            }
        }
    }
}

#[test]
fn new_sessions_spread_over_the_endpoints() {
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let s = snapshot(4);
        let a = affinity(mode);
        let mut tally: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        for _ in 0..4000 {
            let (p, _) = pick(&a, &SALT, port(&s), None, None).unwrap();
            *tally.entry(p.endpoint.addr).or_default() += 1;
        }
        assert_eq!(tally.len(), 4, "{mode:?}: {tally:?}");
        assert!(tally.values().all(|&n| n > 700), "{mode:?}: {tally:?}");
    }
}

#[test]
fn a_persistent_session_survives_a_scale_up_and_a_balanced_one_mostly_does() {
    let small = snapshot(4);
    let big = snapshot(8);
    for (mode, least) in [
        (AffinityMode::Persistent, 1000),
        (AffinityMode::Balanced, 350),
    ] {
        let a = affinity(mode);
        let mut kept = 0;
        for _ in 0..1000 {
            let (p, key) = pick(&a, &SALT, port(&small), None, None).unwrap();
            let key = key.unwrap();
            let (q, _) = pick(&a, &SALT, port(&big), Some(&key), None).unwrap();
            kept += u32::from(p.endpoint.addr == q.endpoint.addr);
        }
        // Balanced: about half stay (4 of 8 endpoints are the old ones).
        assert!(kept >= least, "{mode:?}: {kept} of 1000 kept");
    }
}

#[test]
fn a_persistent_session_whose_endpoint_is_gone_gets_a_new_one_and_a_new_cookie() {
    let big = snapshot(8);
    let a = affinity(AffinityMode::Persistent);
    // A key of an endpoint the smaller snapshot lacks.
    let key = loop {
        let (p, key) = pick(&a, &SALT, port(&big), None, None).unwrap();
        if p.endpoint.addr.ip().to_string() == "10.0.0.8" {
            break key.unwrap();
        }
    };
    let small = snapshot(4);
    let (p, new) = pick(&a, &SALT, port(&small), Some(&key), None).unwrap();
    assert_ne!(p.endpoint.addr.ip().to_string(), "10.0.0.8");
    assert!(new.is_some());
    // A forged or foreign key is the same: a new session.
    let (_, new) = pick(&a, &SALT, port(&small), Some(b"garbage"), None).unwrap();
    assert!(new.is_some());
    // Another backend's salt never finds this backend's endpoints.
    let other = *b"fedcba9876543210";
    let (_, new) = pick(&a, &other, port(&big), Some(&key), None).unwrap();
    assert!(new.is_some());
}

#[test]
fn a_failure_moves_the_session_only_with_change_on_failure() {
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let s = snapshot(3);
        let mut a = affinity(mode);
        let (p, key) = pick(&a, &SALT, port(&s), None, None).unwrap();
        let (key, failed) = (key.unwrap(), p.endpoint.addr);
        assert!(!may_retry(&a, Some(&key)));
        assert!(may_retry(&a, None), "without a cookie nginx picks anew");
        a.change_on_failure = true;
        assert!(may_retry(&a, Some(&key)));
        for _ in 0..50 {
            let (q, new) = pick(&a, &SALT, port(&s), Some(&key), Some(failed)).unwrap();
            assert_ne!(q.endpoint.addr, failed, "{mode:?}");
            assert!(
                new.is_some(),
                "{mode:?}: the moved session gets a new cookie"
            );
        }
    }
}

#[test]
fn no_ready_endpoint_is_no_pick() {
    let s = snapshot(0);
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let a = affinity(mode);
        assert!(pick(&a, &SALT, port(&s), None, None).is_none());
        assert!(pick(&a, &SALT, port(&s), Some(b"k"), None).is_none());
    }
}

#[test]
fn the_cookie_names_its_backend_and_pins_only_there() {
    let a = affinity(AffinityMode::Balanced);
    let primary = backend_key("ns", &backend("web"));
    let canary = backend_key("ns", &backend("web-canary"));
    assert_ne!(primary, canary);
    assert_eq!(primary, backend_key("ns", &backend("web")), "stable");
    assert_ne!(primary, backend_key("other", &backend("web")));
    let mut headers = http::HeaderMap::new();
    let value = format!(
        "a=1; INGRESSCOOKIE=abc|{}",
        std::str::from_utf8(&canary).unwrap()
    );
    headers.insert(http::header::COOKIE, value.parse().unwrap());
    assert!(pinned(&a, "ns", &backend("web-canary"), &headers));
    assert!(!pinned(&a, "ns", &backend("web"), &headers));
    assert_eq!(cookie(&a, &headers), Some((&b"abc"[..], Some(&canary[..]))));
    // A cookie without a backend key, or an empty one, pins nothing.
    for raw in [
        "INGRESSCOOKIE=abc",
        "INGRESSCOOKIE=",
        "INGRESSCOOKIE=|",
        "other=x",
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, raw.parse().unwrap());
        assert!(!pinned(&a, "ns", &backend("web-canary"), &headers), "{raw}");
    }
}

#[test]
fn set_cookie_is_written_as_ingress_nginx_writes_it() {
    let mut a = affinity(AffinityMode::Balanced);
    let key = *b"00112233aabbccdd";
    let v = set_cookie(&a, &key, &SALT, Some("/app"), false).unwrap();
    assert_eq!(
        v.to_str().unwrap(),
        "INGRESSCOOKIE=00112233aabbccdd|0123456789abcdef; Path=/app; HttpOnly"
    );
    let v = set_cookie(&a, &key, &SALT, None, true).unwrap();
    assert!(v.to_str().unwrap().ends_with("; Path=/; Secure; HttpOnly"));
    a.name = "SERVERID".into();
    a.path = Some("/foo/bar".into());
    a.domain = Some(".example.com".into());
    a.max_age = Some(259200);
    a.expires = Some(172800);
    a.samesite = Some("None");
    a.secure = true;
    let v = set_cookie(&a, &key, &SALT, Some("/foo/.*"), false).unwrap();
    let text = v.to_str().unwrap();
    let expected_day = crate::snapshot::certs::expiry::cookie_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 172800,
    );
    assert!(
        text.starts_with("SERVERID=00112233aabbccdd|0123456789abcdef; Expires="),
        "{text}"
    );
    assert!(
        text.contains(&expected_day[..16]),
        "{text} vs {expected_day}"
    );
    assert!(
        text.ends_with(
            " GMT; Max-Age=259200; Domain=.example.com; Path=/foo/bar; Secure; HttpOnly; SameSite=None"
        ),
        "{text}"
    );
    // A route path that cannot be an attribute falls back to '/'.
    a.path = None;
    let v = set_cookie(&a, &key, &SALT, Some("/a b;c"), false).unwrap();
    assert!(v.to_str().unwrap().contains("; Path=/;"));
}

#[test]
fn cookie_time_is_nginxs() {
    use crate::snapshot::certs::expiry::cookie_time;
    assert_eq!(cookie_time(0), "Thu, 01-Jan-70 00:00:00 GMT");
    assert_eq!(cookie_time(1_796_292_433), "Thu, 03-Dec-26 10:07:13 GMT");
    assert_eq!(cookie_time(951_782_400), "Tue, 29-Feb-00 00:00:00 GMT");
}

#[test]
fn keys_are_hex_and_distinct() {
    let keys: BTreeSet<[u8; 16]> = (0..1000).map(|_| random_key()).collect();
    assert_eq!(keys.len(), 1000);
    assert!(keys.iter().all(|k| {
        k.iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }));
}

#[test]
fn a_session_moves_off_an_endpoint_failing_its_health_checks() {
    let s = snapshot_with(3, json!({"portico.dev/health-check-path": "/healthz"}));
    let p = port(&s);
    for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
        let a = affinity(mode);
        let (first, key) = pick(&a, &SALT, p, None, None).unwrap();
        let (addr, key) = (first.endpoint.addr, key.unwrap());
        drop(first);
        let failing = p.endpoints.iter().find(|e| e.addr == addr).unwrap();
        failing.load.set_healthy(false);
        for _ in 0..20 {
            let (again, _) = pick(&a, &SALT, p, Some(&key), None).unwrap();
            assert_ne!(again.endpoint.addr, addr, "{mode:?}");
        }
        // Passing again: the session is back where it was.
        failing.load.set_healthy(true);
        let (back, new) = pick(&a, &SALT, p, Some(&key), None).unwrap();
        assert_eq!(back.endpoint.addr, addr, "{mode:?}");
        assert!(new.is_none(), "{mode:?}");
    }
}
