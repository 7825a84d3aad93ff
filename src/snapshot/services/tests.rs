//! The service table: allocation, indexes, and what carries over between snapshots.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::*;
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::Object;
use crate::store::ObjectStore;

fn svc(name: &str, spec: Value) -> Object {
    Object::from_value(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

fn options(cidr: &str, ports: (u16, u16)) -> ServiceOptions {
    ServiceOptions {
        default_scheduler: Scheduler::RoundRobin,
        allocation: Some(AllocConfig {
            service_cidr: cidr.parse().unwrap(),
            node_ports: ports.0..=ports.1,
        }),
    }
}

fn table(
    objects: Vec<Object>,
    options: &ServiceOptions,
    previous: Option<&ServiceTable>,
) -> (ServiceTable, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let t = ServiceTable::build(
        &ObjectStore::from_objects(objects),
        options,
        previous,
        &mut diagnostics,
    );
    (t, diagnostics)
}

fn ip_of(t: &ServiceTable, name: &str) -> Option<IpAddr> {
    match &t.ports_of("default", name)?.first()?.cluster_ip {
        ClusterIp::Ips(ips) => ips.first().copied(),
        _ => None,
    }
}

fn node_port_of(t: &ServiceTable, name: &str) -> Option<u16> {
    t.ports_of("default", name)?.first()?.node_port
}

fn cluster(n: usize) -> Vec<Object> {
    (0..n)
        .map(|i| {
            svc(
                &format!("s{i}"),
                json!({"ports": [{"port": 80}], "type": "NodePort"}),
            )
        })
        .collect()
}

#[test]
fn allocation_is_in_range_unique_and_indexed() {
    let opts = options("10.96.0.0/24", (30000, 30099));
    let (t, diags) = table(cluster(50), &opts, None);
    assert!(diags.is_empty(), "{diags:?}");
    let cidr: ipnet::IpNet = "10.96.0.0/24".parse().unwrap();
    let mut ips = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..50 {
        let (ip, np) = (
            ip_of(&t, &format!("s{i}")).unwrap(),
            node_port_of(&t, &format!("s{i}")).unwrap(),
        );
        assert!(
            cidr.contains(&ip) && ip != cidr.network() && ip != cidr.broadcast(),
            "{ip}"
        );
        assert!((30000..=30099).contains(&np));
        assert!(ips.insert(ip) && ports.insert(np), "unique");
        let id = t.by_cluster_ip(ip, 80, Protocol::Tcp).unwrap();
        assert_eq!(&*t.get(id).unwrap().service, format!("s{i}"));
        assert_eq!(t.by_node_port(np, Protocol::Tcp), Some(id));
        assert_eq!(t.by_node_port(np, Protocol::Udp), None, "per protocol");
    }
}

#[test]
fn allocation_is_stable_across_rebuilds_and_arrivals() {
    let opts = options("10.96.0.0/28", (30000, 30015));
    let (first, _) = table(cluster(5), &opts, None);
    // New Services arrive (they would collide with the old ones' hash slots in a /28) and an
    // old one leaves: every remaining Service keeps what it had.
    let mut objects = cluster(10);
    objects.remove(2);
    let (second, diags) = table(objects, &opts, Some(&first));
    assert!(diags.is_empty(), "{diags:?}");
    for i in [0, 1, 3, 4] {
        let name = format!("s{i}");
        assert_eq!(ip_of(&second, &name), ip_of(&first, &name), "{name}");
        assert_eq!(
            node_port_of(&second, &name),
            node_port_of(&first, &name),
            "{name}"
        );
    }
    // Without history, allocation does not depend on the order objects arrived in.
    let mut reversed = cluster(10);
    reversed.reverse();
    assert!(table(cluster(10), &opts, None).0 == table(reversed, &opts, None).0);
}

#[test]
fn requested_values_are_honoured_and_checked() {
    let opts = options("10.96.0.0/24", (30000, 30099));
    let old = |name: &str, spec: Value| {
        Object::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": spec}))
        .unwrap()
    };
    let objects = vec![
        old(
            "first",
            json!({"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30010}]}),
        ),
        svc(
            "again",
            json!({"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30010}]}),
        ),
        svc(
            "outside",
            json!({"clusterIP": "192.168.1.1", "type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}),
        ),
        svc(
            "headless",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        ),
        svc(
            "external",
            json!({"type": "ExternalName", "externalName": "example.org"}),
        ),
        svc(
            "wrong-type",
            json!({"ports": [{"port": 80, "nodePort": 30011}]}),
        ),
    ];
    let (t, diags) = table(objects, &opts, None);
    assert_eq!(ip_of(&t, "first"), Some("10.96.0.10".parse().unwrap()));
    assert_eq!(node_port_of(&t, "first"), Some(30010));
    let problems: Vec<(String, String, String)> = diags
        .iter()
        .map(|d| (d.object.name.clone(), d.field.clone(), d.reason.clone()))
        .collect();
    let has = |name: &str, field: &str, needle: &str| {
        problems
            .iter()
            .any(|(n, f, r)| n == name && f == field && r.contains(needle))
    };
    assert!(
        has("again", "spec.clusterIP", "already taken"),
        "{problems:?}"
    );
    assert!(
        has("again", "spec.ports[0].nodePort", "already taken"),
        "{problems:?}"
    );
    assert!(
        has("outside", "spec.clusterIP", "outside --service-cidr"),
        "{problems:?}"
    );
    assert!(
        has(
            "outside",
            "spec.ports[0].nodePort",
            "outside --service-node-port-range"
        ),
        "{problems:?}"
    );
    assert!(
        has("wrong-type", "spec.ports[0].nodePort", "ignored"),
        "{problems:?}"
    );
    assert_eq!(
        ip_of(&t, "again"),
        None,
        "a conflicting request gets nothing"
    );
    assert_eq!(
        t.ports_of("default", "headless").unwrap()[0].cluster_ip,
        ClusterIp::Headless
    );
    assert!(
        t.ports_of("default", "external").unwrap().is_empty(),
        "ExternalName without ports"
    );
    assert_eq!(node_port_of(&t, "wrong-type"), None);
}

#[test]
fn the_kubernetes_mode_uses_objects_as_they_are() {
    let opts = ServiceOptions {
        default_scheduler: Scheduler::LeastConnections,
        allocation: None,
    };
    let objects = vec![
        svc(
            "given",
            json!({"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5", "fd00::5"], "type": "NodePort", "ports": [{"port": 53, "protocol": "UDP", "nodePort": 31053}]}),
        ),
        svc("none", json!({"ports": [{"port": 80}]})),
    ];
    let (t, diags) = table(objects, &opts, None);
    assert!(diags.is_empty());
    let id = t
        .by_cluster_ip("fd00::5".parse().unwrap(), 53, Protocol::Udp)
        .unwrap();
    assert_eq!(
        t.by_cluster_ip("10.0.0.5".parse().unwrap(), 53, Protocol::Udp),
        Some(id),
        "dual stack"
    );
    assert_eq!(t.by_node_port(31053, Protocol::Udp), Some(id));
    assert_eq!(
        t.get(id).unwrap().scheduler,
        Scheduler::LeastConnections,
        "the default scheduler"
    );
    assert_eq!(
        t.ports_of("default", "none").unwrap()[0].cluster_ip,
        ClusterIp::Unallocated
    );
}

#[test]
fn scheduler_annotations() {
    let opts = options("10.96.0.0/24", (30000, 30099));
    let objects = vec![
        Object::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "annotations": {"portico.dev/load-balancer": "sh"}}, "spec": {"ports": [{"port": 80}]}})).unwrap(),
        Object::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "b", "annotations": {"portico.dev/load-balancer": "fastest", "portico.dev/weights": "nonsense"}},
            "spec": {"ports": [{"port": 80}]}})).unwrap(),
    ];
    let (t, diags) = table(objects, &opts, None);
    assert_eq!(
        t.ports_of("default", "a").unwrap()[0].scheduler,
        Scheduler::SourceHash
    );
    assert_eq!(
        t.ports_of("default", "b").unwrap()[0].scheduler,
        Scheduler::RoundRobin
    );
    assert!(
        diags
            .iter()
            .any(|d| d.reason.contains("unknown scheduler \"fastest\"")),
        "{diags:?}"
    );
    assert!(
        diags
            .iter()
            .any(|d| d.reason.contains("is not ADDRESS=WEIGHT")),
        "{diags:?}"
    );
}
