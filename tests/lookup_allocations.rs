//! Route and certificate lookups allocate nothing (the request path's contract), counted with
//! an instrumented global allocator.

use std::alloc::System;

use portico::snapshot::certs::TlsCert;
use portico::snapshot::{BuildConfig, build};
use portico::source::Object;
use portico::store::ObjectStore;
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations made while `f` runs: the fewest over five runs. The counter is the whole
/// process's, and on a loaded machine the test harness's own thread has been seen to allocate
/// during a run (CI counted 5 for the one-allocation calibration); code that allocates does
/// so on every run, so the minimum still catches it.
fn allocations_in(mut f: impl FnMut()) -> usize {
    (0..5)
        .map(|_| {
            let region = Region::new(GLOBAL);
            f();
            region.change().allocations
        })
        .min()
        .unwrap_or(0)
}

#[test]
fn lookups_do_not_allocate() {
    let counted = allocations_in(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(counted, 1, "the counter sees allocations");
    let path = |p: &str, t: &str| json!({"path": p, "pathType": t, "backend": {"service": {"name": "s", "port": {"number": 80}}}});
    let objects = [
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "portico"},
               "spec": {"controller": "portico.dev/ingress-controller"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
               "spec": {"ingressClassName": "portico", "rules": [
                   {"host": "a.example.com", "http": {"paths": [path("/", "Prefix"), path("/api", "Prefix"), path("/login", "Exact")]}},
                   {"host": "*.example.org", "http": {"paths": [path("/", "Prefix")]}},
                   {"host": "nested.example.com", "http": {"paths": [
                       path("/a", "Prefix"), path("/a/b", "Prefix"), path("/a/b/c", "Exact"),
                       path("/a/bc", "Exact"), path("/app/", "Prefix"), path("/{x}", "Prefix")]}},
                   {"http": {"paths": [path("/static", "Prefix")]}}]}}),
    ];
    let store = ObjectStore::from_objects(objects.map(|o| Object::from_value(o).unwrap()));
    let built = build(
        &store,
        &BuildConfig::new(TlsCert::self_signed(&["t"]).unwrap().key),
    );
    let routes = &built.snapshot.routes;
    for (host, p, found) in [
        ("a.example.com", "/", true),
        ("a.example.com", "/anything/else", true),
        ("a.example.com", "/api/v1/users?id=1", true),
        ("A.Example.COM:8443", "/login", true),
        ("x.example.org", "/deep/path", true),
        ("other.net", "/static/app.js", true),
        ("other.net", "/nothing", false),
        // Nested prefixes beside static siblings: matchit would backtrack (and allocate) here.
        ("nested.example.com", "/a/b/c/d", true),
        ("nested.example.com", "/a/bx/y", true),
        ("nested.example.com", "/a/b/c", true),
        ("nested.example.com", "/app/x/y/z", true),
        ("nested.example.com", "/{x}/y", true),
        ("nested.example.com", "/ab", false),
    ] {
        let mut result = None;
        let n = allocations_in(|| result = Some(routes.route(host, p).is_some()));
        assert_eq!(result, Some(found), "{host}{p}");
        assert_eq!(n, 0, "route({host}, {p}) allocated {n} times");
    }
    let certs = &built.snapshot.certs;
    assert_eq!(
        allocations_in(|| {
            std::hint::black_box(certs.resolve(Some("A.example.com")));
        }),
        0
    );
}
