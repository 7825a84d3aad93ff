//! Build time and memory at scale: 1k and 10k Ingresses, 10k Services with 100k endpoints.
//! Prints one line per case: objects, build time (median of 5), and the process RSS growth.

use std::time::{Duration, Instant};

use portico::snapshot::certs::TlsCert;
use portico::snapshot::{BuildConfig, build};
use portico::store::ObjectStore;

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
        drop((kept, store));
    }
}
