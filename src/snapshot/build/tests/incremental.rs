//! Incremental builds: `build_after(store, config, previous)` equals `build(store, config)`
//! after any sequence of changes, whatever earlier snapshot it is given.

use proptest::prelude::*;

use super::*;
use crate::source::Event;

/// A certificate for `h.com` and `*.h.com`, made once.
fn h_com_cert() -> &'static (String, String) {
    static CERT: OnceLock<(String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let names = vec!["h.com".to_string(), "*.h.com".to_string()];
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    })
}

fn secret(name: &str, crt: &str, key: &str) -> Object {
    obj(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"tls.crt": crt, "tls.key": key}
    }))
}

fn ca_secret(name: &str, crt: &str) -> Object {
    obj(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"ca.crt": crt}
    }))
}

fn at(o: Object, t: &str) -> Object {
    with_meta(o, json!({"creationTimestamp": t}))
}

/// The versions each slot can take; a change puts a slot in one version, or deletes it.
fn slots() -> Vec<Vec<Object>> {
    let (crt, key) = h_com_cert();
    vec![
        vec![our_class(), class("portico", CONTROLLER_NAME, true)],
        vec![
            class("nginx", "k8s.io/ingress-nginx", false),
            class("nginx", CONTROLLER_NAME, false),
        ],
        vec![
            svc("a"),
            svc_with("a", json!({"ports": [{"port": 81, "targetPort": 8080}]})),
            // appProtocol chooses TLS to the endpoints of routes that say nothing.
            svc_with(
                "a",
                json!({"ports": [{"port": 80, "targetPort": 8080, "appProtocol": "https"}]}),
            ),
        ],
        vec![svc("b")],
        vec![svc_with(
            "named",
            json!({"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
        )],
        vec![
            svc_with(
                "ext",
                json!({"type": "ExternalName", "externalName": "ext.example.com"}),
            ),
            svc_with("ext", json!({"type": "ExternalName"})),
        ],
        vec![
            slice("a-1", "a", &[("10.0.0.1", true)], json!([{"port": 8080}])),
            slice("a-1", "a", &[("10.0.0.2", false)], json!([{"port": 8080}])),
        ],
        vec![secret("s1", crt, key), secret("s1", "garbage", "garbage")],
        // proxy-ssl-secret of Ingress "five": a CA, garbage.
        vec![ca_secret("ca", crt), ca_secret("ca", "garbage")],
        vec![
            with_meta(
                ing(
                    "five",
                    json!({"rules": [rule("h.com", &[("/tls", "Prefix", "a", 80)])]}),
                ),
                json!({"annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                                       "nginx.ingress.kubernetes.io/proxy-ssl-secret": "ca",
                                       "nginx.ingress.kubernetes.io/proxy-ssl-verify": "on"}}),
            ),
            ing(
                "five",
                json!({"rules": [rule("h.com", &[("/tls", "Prefix", "a", 80)])]}),
            ),
        ],
        vec![
            ing(
                "one",
                json!({"rules": [rule("h.com", &[("/", "Prefix", "a", 80)]),
                                 rule("*.h.com", &[("/", "Prefix", "named", 80)])]}),
            ),
            ing(
                "one",
                json!({"rules": [rule("h.com", &[("/x", "Exact", "b", 80)])],
                       "tls": [{"hosts": ["h.com"], "secretName": "s1"}]}),
            ),
            at(
                ing(
                    "one",
                    json!({"rules": [rule("h.com", &[("/", "Prefix", "b", 80)])],
                           "defaultBackend": {"service": {"name": "a", "port": {"number": 80}}}}),
                ),
                "2024-01-01T00:00:00Z",
            ),
            ing(
                "one",
                json!({"ingressClassName": "nginx",
                       "rules": [rule("g.com", &[("/", "Prefix", "a", 80)])]}),
            ),
        ],
        vec![
            ing(
                "two",
                json!({"rules": [rule("h.com", &[("/", "Prefix", "b", 80), ("/{y}", "Prefix", "a", 80)]),
                                 rule("", &[("/", "Prefix", "a", 80)])]}),
            ),
            with_meta(
                ing(
                    "two",
                    json!({"rules": [rule("a.h.com", &[("/", "Prefix", "b", 80)]), rule("g.com", &[("/g", "Prefix", "b", 80)])],
                           "tls": [{"secretName": "s1"}],
                           "defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}}),
                ),
                json!({"annotations": {"portico.dev/ssl-redirect": "false"},
                       "creationTimestamp": "2023-06-01T00:00:00Z"}),
            ),
            ing(
                "two",
                json!({"rules": [rule("g.com", &[("/", "Prefix", "missing", 80), ("/n", "Exact", "named", 80)])]}),
            ),
            obj(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "two", "namespace": "default"},
                "spec": {"rules": [{"host": "h.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "a", "port": {"number": 80}}}}]}}]}
            })),
        ],
        vec![
            ing(
                "three",
                json!({"rules": [rule("h.com", &[("/x/", "Prefix", "a", 80), ("/x", "Exact", "missing", 80)])]}),
            ),
            ing(
                "three",
                json!({"rules": [rule("k.com", &[("/", "Prefix", "ext", 80)]),
                                 rule("*.h.com", &[("/", "Prefix", "ext", 443)])],
                       "tls": [{"hosts": ["*.h.com"], "secretName": "s1"}]}),
            ),
            at(
                ing(
                    "three",
                    json!({"rules": [rule("h.com", &[("//x", "Prefix", "a", 80), ("/", "Prefix", "a", 80)]),
                                     rule("1.2.3.4", &[("/", "Prefix", "a", 80)])],
                           "defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}}),
                ),
                "2023-01-01T00:00:00Z",
            ),
        ],
        vec![
            ing(
                "four",
                json!({"rules": [rule("g.com", &[("/", "Prefix", "a", 80)]),
                                 rule("", &[("/", "Prefix", "b", 80)])]}),
            ),
            ing(
                "four",
                json!({"rules": [rule("h.com", &[("/", "ImplementationSpecific", "a", 80)])]}),
            ),
            // Regex mode for h.com: every Ingress's paths of the host change meaning.
            with_meta(
                ing(
                    "four",
                    json!({"rules": [rule("h.com", &[("/x(/|$)(.*)", "ImplementationSpecific", "b", 80)])]}),
                ),
                json!({"annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}}),
            ),
            // A canary for h.com's rule, or for one no primary has.
            with_meta(
                ing(
                    "four",
                    json!({"rules": [rule("h.com", &[("/", "Prefix", "b", 80), ("/nowhere", "Exact", "b", 80)])]}),
                ),
                json!({"annotations": {"nginx.ingress.kubernetes.io/canary": "true",
                                       "nginx.ingress.kubernetes.io/canary-weight": "50"}}),
            ),
        ],
        // server-alias: another name for the whole server of h.com (or g.com), whichever
        // Ingress adds paths to it; k.com is a host of "three"'s rules in one version.
        vec![
            with_meta(
                ing(
                    "six",
                    json!({"rules": [rule("h.com", &[("/six", "Prefix", "a", 80)])]}),
                ),
                json!({"annotations": {"nginx.ingress.kubernetes.io/server-alias": "al.com, k.com"}}),
            ),
            with_meta(
                ing(
                    "six",
                    json!({"rules": [rule("g.com", &[("/six", "Prefix", "b", 80)])]}),
                ),
                json!({"annotations": {"nginx.ingress.kubernetes.io/server-alias": "al.com"}}),
            ),
            ing(
                "six",
                json!({"rules": [rule("h.com", &[("/six", "Prefix", "a", 80)])]}),
            ),
        ],
    ]
}

fn probes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("h.com", "/"),
        ("h.com", "/x"),
        ("h.com", "/x/y"),
        ("h.com", "/X/y"),
        ("h.com", "/xyz"),
        ("h.com", "/tls"),
        ("h.com", "/{y}/z"),
        ("a.h.com", "/"),
        ("g.com", "/g"),
        ("g.com", "/n"),
        ("k.com", "/"),
        ("al.com", "/"),
        ("al.com", "/six"),
        ("al.com", "/g"),
        ("zzz", "/"),
    ]
}

/// Asserts that two builds are the same: snapshot value, diagnostics, Ingresses, lookups.
fn assert_same(incremental: &Built, full: &Built) -> Result<(), TestCaseError> {
    prop_assert!(
        incremental.snapshot == full.snapshot,
        "snapshots differ:\n{:#?}\n{:#?}",
        incremental.snapshot.routes,
        full.snapshot.routes
    );
    prop_assert_eq!(&incremental.diagnostics, &full.diagnostics);
    prop_assert_eq!(&incremental.ingresses, &full.ingresses);
    for (h, p) in probes() {
        prop_assert_eq!(served(incremental, h, p), served(full, h, p));
    }
    for sni in ["h.com", "a.h.com", "g.com", "al.com"] {
        let der = |b: &Built| b.snapshot.certs.resolve(Some(sni)).cert.clone();
        prop_assert_eq!(der(incremental), der(full));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Each step changes one slot (a version, or deleted), then builds incrementally from a
    /// recent snapshot (usually the latest, sometimes an older one, as when the controller
    /// did not publish) and from scratch.
    #[test]
    fn incremental_build_equals_full_build(
        steps in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u8..4), 1..40),
    ) {
        let slots = slots();
        let config = config();
        let mut store = ObjectStore::new();
        let mut history: Vec<Built> = vec![build(&store, &config)];
        for (slot, version, back) in steps {
            apply_step(&mut store, &slots, slot, version);
            // What the store keeps as events come (slices grouped by Service) is what it
            // would hold filled at once.
            prop_assert_eq!(&store, &ObjectStore::from_objects(store.objects()));
            let back = (back as usize).min(history.len() - 1);
            let previous = &history[history.len() - 1 - back].snapshot;
            let incremental = build_after(&store, &config, Some(previous));
            let full = build(&store, &config);
            assert_same(&incremental, &full)?;
            history.push(incremental);
        }
    }
}

/// Reuse is real: an Ingress that did not change keeps its host's router (the same
/// allocation), and a new Ingress adds its host without rebuilding the others.
#[test]
fn unchanged_hosts_are_shared_with_the_previous_snapshot() {
    let config = config();
    let mut store = ObjectStore::from_objects(vec![
        our_class(),
        svc("a"),
        ing(
            "one",
            json!({"rules": [rule("one.com", &[("/", "Prefix", "a", 80)])]}),
        ),
    ]);
    let first = build(&store, &config);
    store.apply(Event::Applied(ing(
        "two",
        json!({"rules": [rule("two.com", &[("/", "Prefix", "a", 80)])]}),
    )));
    let second = build_after(&store, &config, Some(&first.snapshot));
    let host = |b: &Built, h: &str| {
        let hosts = b.snapshot.routes.hosts();
        let (_, routes) = hosts
            .into_iter()
            .find(|(p, _)| *p == crate::snapshot::routes::HostPattern::Exact(h.into()))
            .expect("host");
        std::ptr::from_ref(routes)
    };
    assert_eq!(host(&first, "one.com"), host(&second, "one.com"));
    assert_eq!(served(&second, "two.com", "/"), "a:80");
    assert!(second.snapshot == build(&store, &config).snapshot);
}
