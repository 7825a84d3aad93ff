//! Table-driven tests of `build()`, with tiny constructors for the objects.

mod backends;
mod certs;
mod classes;
mod incremental;
mod incremental_services;
mod properties;
mod regex;
mod routing;

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use super::*;
use crate::snapshot::certs::TlsCert;
use crate::snapshot::diagnostics::Severity;
use crate::snapshot::routes::{Route, Upstream};
use crate::source::Object;

fn obj(v: Value) -> Object {
    Object::from_value(v).expect("test object")
}

/// Our IngressClass `portico`.
fn our_class() -> Object {
    class("portico", CONTROLLER_NAME, false)
}

fn class(name: &str, controller: &str, default: bool) -> Object {
    let annotations = if default {
        json!({"ingressclass.kubernetes.io/is-default-class": "true"})
    } else {
        json!({})
    };
    obj(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"controller": controller}
    }))
}

/// An Ingress of class `portico` in namespace `default` with this spec.
fn ing(name: &str, spec: Value) -> Object {
    let mut spec = spec;
    if spec.get("ingressClassName").is_none() {
        spec["ingressClassName"] = json!("portico");
    }
    obj(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec
    }))
}

/// Sets metadata fields (`creationTimestamp`, `annotations`, `namespace`) on an Ingress.
fn with_meta(o: Object, meta: Value) -> Object {
    let Object::Ingress(i) = o else {
        panic!("not an Ingress")
    };
    let mut v = serde_json::to_value(&*i).unwrap();
    v["apiVersion"] = json!("networking.k8s.io/v1");
    v["kind"] = json!("Ingress");
    for (k, val) in meta.as_object().unwrap() {
        v["metadata"][k] = val.clone();
    }
    obj(v)
}

/// A rule: host ("" for none) and paths of (path, type, service, port).
fn rule(host: &str, paths: &[(&str, &str, &str, u16)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(p, t, s, port)| {
            json!({"path": p, "pathType": t,
                   "backend": {"service": {"name": s, "port": {"number": port}}}})
        })
        .collect();
    let mut r = json!({"http": {"paths": paths}});
    if !host.is_empty() {
        r["host"] = json!(host);
    }
    r
}

/// A Service in `default` with one unnamed port 80 → 8080.
fn svc(name: &str) -> Object {
    svc_with(name, json!({"ports": [{"port": 80, "targetPort": 8080}]}))
}

fn svc_with(name: &str, spec: Value) -> Object {
    obj(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec
    }))
}

/// An EndpointSlice of Service `service` with (address, ready) endpoints and these ports.
fn slice(name: &str, service: &str, endpoints: &[(&str, bool)], ports: Value) -> Object {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready}}))
        .collect();
    obj(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports
    }))
}

fn fallback() -> Arc<rustls::sign::CertifiedKey> {
    static CERT: OnceLock<Arc<rustls::sign::CertifiedKey>> = OnceLock::new();
    CERT.get_or_init(|| TlsCert::self_signed(&["fallback.test"]).unwrap().key)
        .clone()
}

fn config() -> BuildConfig {
    BuildConfig::new(fallback())
}

fn build_with(config: &BuildConfig, objects: Vec<Object>) -> Built {
    let built = build(&ObjectStore::from_objects(objects), config);
    for d in &built.diagnostics {
        eprintln!("{d}");
    }
    built
}

fn build_of(objects: Vec<Object>) -> Built {
    build_with(&config(), objects)
}

/// What a request gets, as "service:port", "default:service" or "404".
fn served(built: &Built, host: &str, path: &str) -> String {
    match built.snapshot.routes.route(host, path) {
        None => "404".to_string(),
        Some(r) => describe(r),
    }
}

fn describe(r: &Route) -> String {
    let port = match &r.backend.port {
        crate::snapshot::routes::PortRef::Number(n) => n.to_string(),
        crate::snapshot::routes::PortRef::Name(n) => n.to_string(),
    };
    let prefix = if r.path.is_none() { "default:" } else { "" };
    format!("{prefix}{}:{port}", r.backend.service)
}

/// The diagnostics whose text contains `needle`.
fn diags<'a>(built: &'a Built, needle: &str) -> Vec<&'a Diagnostic> {
    built
        .diagnostics
        .iter()
        .filter(|d| d.to_string().contains(needle))
        .collect()
}

fn errors(built: &Built) -> usize {
    built
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count()
}

#[test]
fn empty_store_builds_an_empty_snapshot() {
    let built = build_of(vec![]);
    assert!(built.snapshot.routes.is_empty());
    assert!(built.diagnostics.is_empty());
    assert_eq!(served(&built, "any", "/"), "404");
}

#[test]
fn upstream_is_the_service_port() {
    let built = build_of(vec![
        our_class(),
        svc("s"),
        ing(
            "i",
            json!({"rules": [rule("a.com", &[("/", "Prefix", "s", 80)])]}),
        ),
    ]);
    let route = built.snapshot.routes.route("a.com", "/").unwrap();
    let Upstream::Service(id) = route.backend.upstream else {
        panic!("{route:?}")
    };
    let port = built.snapshot.services.get(id).unwrap();
    assert_eq!((&*port.service, port.port), ("s", 80));
    assert_eq!(errors(&built), 0);
}

/// One step of the incremental-build properties: the object of slot `slot` (modulo the slots)
/// applied in one of its versions, or deleted (one choice past the last version).
fn apply_step(store: &mut ObjectStore, slots: &[Vec<Object>], slot: u8, version: u8) {
    let versions = &slots[usize::from(slot) % slots.len()];
    let event = match versions.get(usize::from(version) % (versions.len() + 1)) {
        Some(o) => crate::source::Event::Applied(o.clone()),
        None => crate::source::Event::Deleted(versions[0].key()),
    };
    store.apply(event);
}
