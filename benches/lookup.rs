//! Route and service lookups on a snapshot of 10,000 Ingresses: nanoseconds and allocations
//! per lookup (divan's allocation profiler counts every allocation).

use std::net::IpAddr;

use divan::{AllocProfiler, Bencher, black_box};
use portico::snapshot::certs::TlsCert;
use portico::snapshot::routes::PortRef;
use portico::snapshot::services::{Protocol, ServiceOptions};
use portico::snapshot::{BuildConfig, Snapshot, build};
use portico::source::Object;
use portico::store::ObjectStore;
use serde_json::json;

/// Counts allocations over the binary's allocator (see `src/main.rs`), so these figures, and
/// the build times and RSS of `scale.rs` (which includes this file), are the binary's.
#[global_allocator]
static ALLOC: AllocProfiler<mimalloc::MiMalloc> = AllocProfiler::new(mimalloc::MiMalloc);

fn main() {
    divan::main();
}

/// `n` Ingresses (hosts h{i}.example.com, a few paths each), Services and endpoints.
pub fn objects(n: usize, endpoints_per_service: usize) -> Vec<Object> {
    let mut out = vec![
        Object::from_value(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress-controller"}}),
        )
        .unwrap(),
    ];
    for i in 0..n {
        let name = format!("app{i}");
        out.push(Object::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "bench"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).unwrap());
        let eps: Vec<_> = (0..endpoints_per_service)
            .map(|e| json!({"addresses": [format!("10.{}.{}.{}", (i >> 8) & 255, i & 255, e + 1)]}))
            .collect();
        out.push(Object::from_value(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": eps})).unwrap());
        let path = |p: &str, t: &str| json!({"path": p, "pathType": t, "backend": {"service": {"name": name, "port": {"number": 80}}}});
        out.push(Object::from_value(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"ingressClassName": "portico", "rules": [{"host": format!("h{i}.example.com"), "http": {"paths": [
                path("/", "Prefix"), path("/api", "Prefix"), path("/api/v1", "Prefix"), path("/static", "Prefix"),
                path("/login", "Exact")]}}]}})).unwrap());
    }
    out
}

/// A snapshot of `n` Ingresses with `endpoints` endpoints per Service.
pub fn snapshot(n: usize, endpoints: usize) -> Snapshot {
    let cert = TlsCert::self_signed(&["bench"]).unwrap().key;
    let mut config = BuildConfig::new(cert);
    config.services = ServiceOptions::default();
    build(&ObjectStore::from_objects(objects(n, endpoints)), &config).snapshot
}

#[divan::bench]
fn route_exact_host_prefix(bencher: Bencher) {
    let s = snapshot(10_000, 2);
    bencher.bench(|| {
        black_box(s.routes.route(
            black_box("h4242.example.com"),
            black_box("/api/v1/users/42"),
        ))
        .is_some()
    });
}

/// `/api/v2/...` passes `/api/v1`'s branch and falls back to `/api` (a nested prefix).
#[divan::bench]
fn route_nested_prefix_fallback(bencher: Bencher) {
    let s = snapshot(10_000, 2);
    bencher.bench(|| {
        black_box(s.routes.route(
            black_box("h4242.example.com"),
            black_box("/api/v2/users/42"),
        ))
        .is_some()
    });
}

#[divan::bench]
fn route_mixed_case_host_with_port(bencher: Bencher) {
    let s = snapshot(10_000, 2);
    bencher.bench(|| {
        black_box(
            s.routes
                .route(black_box("H4242.Example.COM:443"), black_box("/login")),
        )
        .is_some()
    });
}

#[divan::bench]
fn route_miss(bencher: Bencher) {
    let s = snapshot(10_000, 2);
    bencher.bench(|| {
        black_box(
            s.routes
                .route(black_box("nobody.example.org"), black_box("/")),
        )
        .is_none()
    });
}

#[divan::bench]
fn service_by_name(bencher: Bencher) {
    let s = snapshot(10_000, 2);
    bencher.bench(|| {
        black_box(s.services.find(
            black_box("bench"),
            black_box("app4242"),
            &PortRef::Number(80),
        ))
        .is_ok()
    });
}

#[divan::bench]
fn service_by_cluster_ip_miss(bencher: Bencher) {
    let s = snapshot(10_000, 2);
    let ip: IpAddr = "10.96.0.1".parse().unwrap();
    bencher
        .bench(|| black_box(s.services.by_cluster_ip(black_box(ip), 80, Protocol::Tcp)).is_none());
}

#[divan::bench]
fn certificate_for_sni(bencher: Bencher) {
    let s = snapshot(1_000, 1);
    bencher.bench(|| {
        black_box(s.certs.resolve(black_box(Some("h42.example.com"))))
            .cert
            .len()
    });
}

#[divan::bench]
fn pick_endpoint_rr(bencher: Bencher) {
    let s = snapshot(1_000, 4);
    let id = s
        .services
        .find("bench", "app42", &PortRef::Number(80))
        .unwrap();
    let port = s.services.get(id).unwrap();
    let client: IpAddr = "192.0.2.1".parse().unwrap();
    bencher.bench(|| {
        black_box(portico::l4::pick(
            port,
            client,
            None,
            std::time::Instant::now(),
        ))
        .is_some()
    });
}
