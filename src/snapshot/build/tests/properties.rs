//! Properties: order-insensitive builds; lookups that never panic.

use proptest::prelude::*;

use super::*;

/// A varied set of objects: overlapping hosts and paths, conflicts, TLS, endpoints.
fn objects() -> Vec<Object> {
    let ts = |o: Object, t: &str| with_meta(o, json!({"creationTimestamp": t}));
    vec![
        our_class(),
        class("nginx", "k8s.io/ingress-nginx", true),
        svc("a"),
        svc("b"),
        svc_with(
            "named",
            json!({"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
        ),
        slice(
            "a-1",
            "a",
            &[("10.0.0.1", true), ("10.0.0.2", false)],
            json!([{"port": 8080}]),
        ),
        slice(
            "a-2",
            "a",
            &[("10.0.0.3", true), ("10.0.0.1", true)],
            json!([{"port": 8080}]),
        ),
        slice(
            "n-1",
            "named",
            &[("10.0.1.1", true)],
            json!([{"name": "http", "port": 9000}]),
        ),
        ts(
            ing(
                "one",
                json!({"rules": [rule("h.com", &[("/", "Prefix", "a", 80), ("/x", "Exact", "b", 80)]),
                                       rule("*.h.com", &[("/", "Prefix", "named", 80)])]}),
            ),
            "2024-01-01T00:00:00Z",
        ),
        ts(
            ing(
                "two",
                json!({"rules": [rule("h.com", &[("/", "Prefix", "b", 80), ("/{y}", "Prefix", "a", 80)]),
                                       rule("", &[("/", "Prefix", "a", 80)])],
                             "defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}}),
            ),
            "2024-01-01T00:00:00Z",
        ),
        ing(
            "three",
            json!({"rules": [rule("h.com", &[("/x", "Exact", "a", 80), ("/x/", "Prefix", "missing", 80)])],
                            "tls": [{"hosts": ["h.com"], "secretName": "none"}]}),
        ),
    ]
}

fn probes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("h.com", "/"),
        ("h.com", "/x"),
        ("h.com", "/x/"),
        ("h.com", "/{y}/z"),
        ("a.h.com", "/q"),
        ("zzz", "/"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_order_gives_an_equal_snapshot(seed in any::<u64>()) {
        let reference = build_of(objects());
        let mut shuffled = objects();
        // A Fisher-Yates shuffle driven by the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let built = build_of(shuffled);
        prop_assert!(built.snapshot == reference.snapshot);
        prop_assert_eq!(&built.diagnostics, &reference.diagnostics);
        for (h, p) in probes() {
            prop_assert_eq!(served(&built, h, p), served(&reference, h, p));
        }
    }

    #[test]
    fn lookups_never_panic(host in any::<String>(), path in any::<String>(), sni in any::<String>()) {
        let built = build_of(objects());
        let _ = built.snapshot.routes.route(&host, &path);
        let _ = built.snapshot.certs.resolve(Some(&sni));
    }

    #[test]
    fn lookups_of_path_like_bytes_never_panic(path in "(/[a-z{}*:%?.]{0,4}){0,6}", host in "[a-zA-Z.:*\\[\\]0-9]{0,20}") {
        let built = build_of(objects());
        let _ = built.snapshot.routes.route(&host, &path);
    }

    #[test]
    fn arbitrary_ingress_paths_never_panic_the_build(paths in proptest::collection::vec("[ -~]{0,12}", 1..6)) {
        let entries: Vec<(&str, &str, &str, u16)> = paths.iter().map(|p| (p.as_str(), "Prefix", "a", 80)).collect();
        let built = build_of(vec![our_class(), svc("a"), ing("p", json!({"rules": [rule("h.com", &entries)]}))]);
        for p in &paths {
            let _ = built.snapshot.routes.route("h.com", p);
        }
    }
}
