//! Build time and memory at scale: 1k and 10k Ingresses, 10k Services with 100k endpoints.
//! Prints one line per case: objects, build time (median of 5), and the process RSS growth;
//! then, on top of each, the incremental rebuild after one change (`build_after`).

use std::time::{Duration, Instant};

use portico::snapshot::certs::TlsCert;
use portico::snapshot::{BuildConfig, Snapshot, build, build_after};
use portico::source::{Event, Object};
use portico::store::ObjectStore;
use serde_json::json;

#[path = "lookup.rs"]
#[allow(dead_code)]
mod lookup;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let config = BuildConfig::new(TlsCert::self_signed(&["bench"]).unwrap().key);
    println!(
        "{:<44} {:>10} {:>14} {:>16}",
        "case", "objects", "build (ms)", "RSS growth (MiB)"
    );
    for (label, ingresses, endpoints) in [
        ("1k Ingresses, 1k Services, 2 endpoints each", 1_000, 2),
        ("10k Ingresses, 10k Services, 10 endpoints each", 10_000, 10),
    ] {
        let before = rss_kib();
        let store = ObjectStore::from_objects(lookup::objects(ingresses, endpoints));
        let mut times: Vec<Duration> = Vec::new();
        let mut kept = None;
        for _ in 0..5 {
            let start = Instant::now();
            let built = build(&store, &config);
            times.push(start.elapsed());
            kept = Some(built);
        }
        times.sort();
        let grown = rss_kib().saturating_sub(before) as f64 / 1024.0;
        println!(
            "{label:<44} {:>10} {:>14.1} {:>16.1}",
            store.len(),
            times[2].as_secs_f64() * 1e3,
            grown
        );
        let Some(built) = kept else { continue };
        for (change, event) in one_change() {
            let mut changed = store.clone();
            changed.apply(event);
            let ms = median_ms(|| build_after(&changed, &config, Some(&built.snapshot)));
            println!(
                "{:<44} {:>10} {ms:>14.2}",
                format!("  then {change}"),
                changed.len()
            );
        }
        drop((built, store));
    }
}

/// One change of each common sort, on top of the objects of `lookup::objects`.
fn one_change() -> Vec<(&'static str, Event)> {
    let object = |v| Event::Applied(Object::from_value(v).unwrap());
    let backend = json!({"service": {"name": "app0", "port": {"number": 80}}});
    let ingress = object(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "added", "namespace": "bench"},
        "spec": {"ingressClassName": "portico", "rules": [{"host": "added.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]}}),
    );
    let slice = object(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "app1", "namespace": "bench", "labels": {"kubernetes.io/service-name": "app1"}},
        "addressType": "IPv4", "ports": [{"port": 8080}],
        "endpoints": [{"addresses": ["10.0.1.1"]}, {"addresses": ["10.0.1.99"]}]}),
    );
    vec![
        ("+1 Ingress (incremental)", ingress),
        ("1 EndpointSlice changed (incremental)", slice),
    ]
}

/// The median of 5 runs of `f`, in milliseconds; what `f` returns is dropped untimed.
fn median_ms(mut f: impl FnMut() -> portico::snapshot::Built) -> f64 {
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let built = f();
        times.push(start.elapsed());
        drop::<Snapshot>(built.snapshot);
    }
    times.sort();
    times[2].as_secs_f64() * 1e3
}
