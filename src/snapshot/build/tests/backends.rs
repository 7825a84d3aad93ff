//! Backends: Service ports, named ports, endpoints and their readiness.

use std::net::SocketAddr;

use super::*;
use crate::snapshot::services::{ClusterIp, ServicePort};

fn ing_to(service: &str, port: Value) -> Object {
    ing(
        "i",
        json!({"rules": [{"host": "h.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": port}}}
        ]}}]}),
    )
}

/// The Service port the route of h.com/ resolves to.
fn port_of(built: &Built) -> &ServicePort {
    let route = built.snapshot.routes.route("h.com", "/").expect("a route");
    match route.backend.upstream {
        Upstream::Service(id) => built.snapshot.services.get(id).unwrap(),
        ref other => panic!("not a Service port: {other:?}"),
    }
}

fn ready(port: &ServicePort) -> Vec<String> {
    port.ready_endpoints()
        .iter()
        .map(|e| e.addr.to_string())
        .collect()
}

#[test]
fn named_service_port_and_named_target_port() {
    let service = svc_with(
        "web",
        json!({"ports": [
            {"name": "metrics", "port": 9090, "targetPort": 9090},
            {"name": "http", "port": 80, "targetPort": "web"},
        ]}),
    );
    // Pods may expose the named container port on different numbers: resolved per slice.
    let s1 = slice(
        "web-1",
        "web",
        &[("10.0.0.1", true)],
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]),
    );
    let s2 = slice(
        "web-2",
        "web",
        &[("10.0.0.2", true)],
        json!([{"name": "http", "port": 8081}, {"name": "metrics", "port": 9090}]),
    );
    let built = build_of(vec![
        our_class(),
        service,
        s1,
        s2,
        ing_to("web", json!({"name": "http"})),
    ]);
    let port = port_of(&built);
    assert_eq!(port.port, 80);
    assert_eq!(ready(port), ["10.0.0.1:8080", "10.0.0.2:8081"]);
    assert_eq!(errors(&built), 0);
    let by_number = build_of(vec![
        our_class(),
        svc_with(
            "web",
            json!({"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
        ),
        slice(
            "hand",
            "web",
            &[("10.0.0.3", true)],
            json!([{"name": "web", "port": 7000}]),
        ),
        ing_to("web", json!({"number": 80})),
    ]);
    assert_eq!(
        ready(port_of(&by_number)),
        ["10.0.0.3:7000"],
        "hand-written slice naming the container port"
    );
}

#[test]
fn only_ready_endpoints_receive_traffic() {
    let s = obj(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "s"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}},
            {"addresses": ["10.0.0.4"]},
            {"addresses": ["not-an-ip"]},
        ]
    }));
    let built = build_of(vec![
        our_class(),
        svc("s"),
        s,
        ing_to("s", json!({"number": 80})),
    ]);
    let port = port_of(&built);
    assert_eq!(ready(port), ["10.0.0.1:8080", "10.0.0.4:8080"]);
    assert_eq!(
        port.endpoints.len(),
        4,
        "not-ready endpoints are listed, not picked"
    );
    assert_eq!(diags(&built, "invalid address").len(), 1);
}

#[test]
fn endpoints_only_for_services_without_slices() {
    let eps = |name: &str| {
        obj(json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "notReadyAddresses": [{"ip": "10.1.0.2"}],
                         "ports": [{"port": 8080}]}]
        }))
    };
    let built = build_of(vec![
        our_class(),
        svc("s"),
        eps("s"),
        ing_to("s", json!({"number": 80})),
    ]);
    assert_eq!(ready(port_of(&built)), ["10.1.0.1:8080"]);
    assert_eq!(port_of(&built).endpoints.len(), 2);
    let with_slice = slice("s-1", "s", &[("10.2.0.1", true)], json!([{"port": 8080}]));
    let built = build_of(vec![
        our_class(),
        svc("s"),
        eps("s"),
        with_slice,
        ing_to("s", json!({"number": 80})),
    ]);
    assert_eq!(
        ready(port_of(&built)),
        ["10.2.0.1:8080"],
        "the slice wins over Endpoints"
    );
}

#[test]
fn selector_less_and_headless_services() {
    // A selector-less Service with a hand-written slice that lists no ports: targetPort applies.
    let manual = svc_with(
        "manual",
        json!({"ports": [{"port": 80, "targetPort": 9000}]}),
    );
    let s = slice("manual-1", "manual", &[("127.0.0.1", true)], Value::Null);
    let built = build_of(vec![
        our_class(),
        manual,
        s,
        ing_to("manual", json!({"number": 80})),
    ]);
    assert_eq!(ready(port_of(&built)), ["127.0.0.1:9000"]);

    let headless = svc_with(
        "hl",
        json!({"clusterIP": "None", "ports": [{"port": 80, "targetPort": 8080}]}),
    );
    let s = slice("hl-1", "hl", &[("10.3.0.1", true)], json!([{"port": 8080}]));
    let built = build_of(vec![
        our_class(),
        headless,
        s,
        ing_to("hl", json!({"number": 80})),
    ]);
    assert_eq!(port_of(&built).cluster_ip, ClusterIp::Headless);
    assert_eq!(ready(port_of(&built)), ["10.3.0.1:8080"]);
}

#[test]
fn external_name_services() {
    let with_port = svc_with(
        "ext",
        json!({"type": "ExternalName", "externalName": "api.example.org", "ports": [{"port": 443}]}),
    );
    let built = build_of(vec![
        our_class(),
        with_port,
        ing_to("ext", json!({"number": 443})),
    ]);
    let route = built.snapshot.routes.route("h.com", "/").unwrap();
    assert_eq!(
        route.backend.upstream,
        Upstream::External {
            host: "api.example.org".into(),
            port: 443
        }
    );
    let no_ports = svc_with(
        "ext",
        json!({"type": "ExternalName", "externalName": "api.example.org"}),
    );
    let built = build_of(vec![
        our_class(),
        no_ports,
        ing_to("ext", json!({"number": 8443})),
    ]);
    let route = built.snapshot.routes.route("h.com", "/").unwrap();
    assert_eq!(
        route.backend.upstream,
        Upstream::External {
            host: "api.example.org".into(),
            port: 8443
        }
    );
    assert_eq!(errors(&built), 0);
}

/// An ExternalName naming the node itself (a loopback literal, `localhost`) is still routed
/// (the proxy refuses it at connect time: 502), with a warning naming the Service; one that
/// only DNS can judge gets none.
#[test]
fn external_names_of_the_node_are_warned_about() {
    for (name, warned) in [
        ("localhost", true),
        ("Admin.LOCALHOST.", true),
        ("127.0.0.1", true),
        ("::1", true),
        ("169.254.169.254", true),
        ("0.0.0.0", true),
        ("api.example.org", false),
        ("10.0.0.1", false),
    ] {
        let ext = svc_with("ext", json!({"type": "ExternalName", "externalName": name}));
        let built = build_of(vec![our_class(), ext, ing_to("ext", json!({"number": 80}))]);
        let route = built.snapshot.routes.route("h.com", "/").unwrap();
        assert!(
            matches!(route.backend.upstream, Upstream::External { .. }),
            "{name}"
        );
        assert_eq!(errors(&built), 0, "{name}");
        let found = diags(&built, "ExternalName Service default/ext names");
        assert_eq!(found.len(), usize::from(warned), "{name}: {found:?}");
        if let Some(d) = found.first() {
            assert_eq!(d.severity, Severity::Warning);
            assert_eq!(d.object.name, "i");
            assert_eq!(d.field, "spec.rules[0].http.paths[0].backend.service");
            assert!(d.reason.contains("requests get 502"), "{d}");
        }
    }
}

/// `--allow-external-name-services=false`: 503 and an error on the Ingress, for Services with
/// and without ports and for default backends; the incremental build follows the option.
#[test]
fn external_names_can_be_disabled() {
    let objects = || {
        vec![
            our_class(),
            svc_with(
                "ext",
                json!({"type": "ExternalName", "externalName": "api.example.org"}),
            ),
            svc_with(
                "ext-ports",
                json!({"type": "ExternalName", "externalName": "api.example.org", "ports": [{"port": 443}]}),
            ),
            ing(
                "i",
                json!({"defaultBackend": {"service": {"name": "ext", "port": {"number": 80}}},
                       "rules": [rule("h.com", &[("/a", "Prefix", "ext", 80), ("/b", "Prefix", "ext-ports", 443)])]}),
            ),
        ]
    };
    let mut off = config();
    off.allow_external_names = false;
    let store = ObjectStore::from_objects(objects());
    let disabled = build(&store, &off);
    for path in ["/a", "/b", "/c"] {
        let route = disabled.snapshot.routes.route("h.com", path).unwrap();
        assert_eq!(route.backend.upstream, Upstream::Unavailable, "{path}");
    }
    let found = diags(&disabled, "ExternalName Services are disabled");
    assert_eq!(found.len(), 3, "{:?}", disabled.diagnostics);
    assert!(found.iter().all(|d| d.severity == Severity::Error));
    assert!(found[0].reason.contains("default/ext"), "{}", found[0]);
    // Built after a build with the other setting, the result is that of a build from
    // scratch: the compiled Ingress is not reused across the option.
    let enabled = build(&store, &config());
    let after = build_after(&store, &off, Some(&enabled.snapshot));
    assert_eq!(after.snapshot, disabled.snapshot);
    assert_eq!(after.diagnostics, disabled.diagnostics);
    let back = build_after(&store, &config(), Some(&after.snapshot));
    assert_eq!(back.snapshot, enabled.snapshot);
    assert_eq!(back.diagnostics, enabled.diagnostics);
}

#[test]
fn missing_service_or_port_is_a_diagnostic_and_a_503_route() {
    let built = build_of(vec![our_class(), ing_to("ghost", json!({"number": 80}))]);
    let route = built.snapshot.routes.route("h.com", "/").unwrap();
    assert_eq!(route.backend.upstream, Upstream::Unavailable);
    let d = diags(&built, "Service default/ghost not found");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].field, "spec.rules[0].http.paths[0].backend.service");
    assert_eq!(d[0].severity, Severity::Error);

    let built = build_of(vec![
        our_class(),
        svc("s"),
        ing_to("s", json!({"name": "nope"})),
    ]);
    assert_eq!(
        built
            .snapshot
            .routes
            .route("h.com", "/")
            .unwrap()
            .backend
            .upstream,
        Upstream::Unavailable
    );
    assert_eq!(
        diags(&built, "Service default/s has no port \"nope\"").len(),
        1
    );
}

#[test]
fn ipv6_endpoints_and_session_affinity() {
    let service = svc_with(
        "v6",
        json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": 8080}]}),
    );
    let mut s = slice("v6-1", "v6", &[("fd00::1", true)], json!([{"port": 8080}]));
    if let Object::EndpointSlice(e) = &mut s {
        Arc::make_mut(e).address_type = "IPv6".into();
    }
    let built = build_of(vec![
        our_class(),
        service,
        s,
        ing_to("v6", json!({"number": 80})),
    ]);
    let port = port_of(&built);
    let want: SocketAddr = "[fd00::1]:8080".parse().unwrap();
    assert_eq!(port.ready_endpoints()[0].addr, want);
    assert_eq!(
        port.session_affinity,
        crate::snapshot::services::SessionAffinity::ClientIp {
            timeout_seconds: 10800
        }
    );
}
