//! Incremental service tables: with allocation on, `build_after(store, config, previous)`
//! equals a build that reuses nothing from `previous` but its allocations and runtime state,
//! and carries exactly the same runtime state (the same shared objects).

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::snapshot::services::{AllocConfig, ServiceTable};
use crate::source::Event;

fn endpoints(name: &str, addresses: &[&str]) -> Object {
    let addresses: Vec<Value> = addresses.iter().map(|a| json!({"ip": a})).collect();
    obj(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": addresses, "ports": [{"port": 8080}]}]
    }))
}

/// The versions each slot can take; a change puts a slot in one version, or deletes it.
fn slots() -> Vec<Vec<Object>> {
    let ports = || json!([{"port": 8080}]);
    vec![
        vec![our_class()],
        vec![
            svc("a"),
            obj(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "a", "namespace": "default",
                             "annotations": {"portico.dev/load-balancer": "wrr",
                                             "portico.dev/weights": "10.0.0.1=3,bad"}},
                "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
            })),
        ],
        vec![
            svc_with(
                "np",
                json!({"type": "NodePort", "ports": [
                    {"name": "tcp", "port": 53, "targetPort": 8080},
                    {"name": "udp", "port": 53, "protocol": "UDP", "targetPort": 8080}]}),
            ),
            svc_with(
                "np",
                json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
                    {"port": 80, "nodePort": 30080, "targetPort": 8080}]}),
            ),
        ],
        vec![svc_with(
            "taken",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
                {"port": 80, "nodePort": 30080, "targetPort": 8080}]}),
        )],
        vec![
            svc("b"),
            svc_with("b", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        ],
        vec![
            slice(
                "a-1",
                "a",
                &[("10.0.0.1", true), ("10.0.0.2", true)],
                ports(),
            ),
            slice("a-1", "a", &[("10.0.0.2", false)], ports()),
        ],
        vec![slice("a-2", "a", &[("10.0.0.3", true)], ports())],
        vec![slice("np-1", "np", &[("10.0.1.1", true)], ports())],
        vec![
            endpoints("b", &["10.0.2.1", "10.0.2.2"]),
            endpoints("b", &["10.0.2.2", "nonsense"]),
        ],
        vec![slice("b-1", "b", &[("10.0.2.9", true)], ports())],
        vec![ing(
            "one",
            json!({"rules": [rule("h.com", &[("/", "Prefix", "a", 80), ("/b", "Prefix", "b", 80)]),
                             rule("n.com", &[("/", "Prefix", "np", 53)])]}),
        )],
    ]
}

/// The previous snapshot as a build that reuses nothing would see it: allocations and
/// runtime state only.
fn forgetful(previous: &Snapshot) -> Snapshot {
    let mut s = previous.clone();
    s.cache = Arc::default();
    s.services.forget_reuse();
    s
}

/// Asserts the same table, and the same runtime state: the very same objects where the
/// rebuild carried them from `previous`, new ones where it made new ones.
fn assert_same_services(
    a: &ServiceTable,
    b: &ServiceTable,
    previous: &ServiceTable,
) -> Result<(), TestCaseError> {
    prop_assert!(a == b, "tables differ:\n{a:#?}\n{b:#?}");
    let old_affinity: HashSet<*const _> = previous
        .iter()
        .map(|(_, p)| Arc::as_ptr(&p.affinity.0))
        .collect();
    let old_load: HashSet<*const _> = previous
        .iter()
        .flat_map(|(_, p)| p.endpoints.iter().map(|e| Arc::as_ptr(&e.load.0)))
        .collect();
    for ((_, p), (_, q)) in a.iter().zip(b.iter()) {
        let (x, y) = (Arc::as_ptr(&p.affinity.0), Arc::as_ptr(&q.affinity.0));
        let same = if old_affinity.contains(&y) {
            x == y
        } else {
            !old_affinity.contains(&x)
        };
        prop_assert!(same, "affinity of {p:?}");
        for (e, f) in p.endpoints.iter().zip(&q.endpoints) {
            let (x, y) = (Arc::as_ptr(&e.load.0), Arc::as_ptr(&f.load.0));
            let same = if old_load.contains(&y) {
                x == y
            } else {
                !old_load.contains(&x)
            };
            prop_assert!(same, "load of {e:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn incremental_service_table_equals_a_rebuild(
        steps in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u8..3), 1..40),
    ) {
        let slots = slots();
        let mut config = config();
        config.services.allocation = Some(AllocConfig::default());
        let mut store = ObjectStore::new();
        let mut history: Vec<Built> = vec![build(&store, &config)];
        for (slot, version, back) in steps {
            apply_step(&mut store, &slots, slot, version);
            let back = (back as usize).min(history.len() - 1);
            let previous = &history[history.len() - 1 - back].snapshot;
            let incremental = build_after(&store, &config, Some(previous));
            let rebuilt = build_after(&store, &config, Some(&forgetful(previous)));
            assert_same_services(
                &incremental.snapshot.services,
                &rebuilt.snapshot.services,
                &previous.services,
            )?;
            prop_assert!(incremental.snapshot == rebuilt.snapshot);
            prop_assert_eq!(&incremental.diagnostics, &rebuilt.diagnostics);
            history.push(incremental);
        }
    }
}

/// Reuse is real: a change to one Service leaves the other Services' ports shared.
#[test]
fn unchanged_services_are_shared_with_the_previous_table() {
    let config = config();
    let mut store = ObjectStore::from_objects(vec![
        svc("a"),
        svc("b"),
        slice("a-1", "a", &[("10.0.0.1", true)], json!([{"port": 8080}])),
    ]);
    let first = build(&store, &config);
    store.apply(Event::Applied(slice(
        "b-1",
        "b",
        &[("10.0.0.2", true)],
        json!([{"port": 8080}]),
    )));
    let second = build_after(&store, &config, Some(&first.snapshot));
    let port = |b: &Built, name: &str| {
        let ports = b.snapshot.services.ports_of("default", name).unwrap();
        Arc::clone(&ports[0])
    };
    assert!(Arc::ptr_eq(&port(&first, "a"), &port(&second, "a")));
    assert!(!Arc::ptr_eq(&port(&first, "b"), &port(&second, "b")));
    assert_eq!(port(&second, "b").endpoints.len(), 1);
    assert!(second.snapshot == build(&store, &config).snapshot);
}
