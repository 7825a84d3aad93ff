//! Regex mode (ingress-nginx's `use-regex` and `rewrite-target`): per host, over every
//! Ingress of the host, case-insensitive, anchored at the start only, longest path first.

use proptest::prelude::*;

use super::*;

fn annotated(name: &str, spec: Value, annotations: Value) -> Object {
    with_meta(ing(name, spec), json!({ "annotations": annotations }))
}

const USE_REGEX: &str = "nginx.ingress.kubernetes.io/use-regex";
const REWRITE: &str = "nginx.ingress.kubernetes.io/rewrite-target";

#[test]
fn regex_mode_is_per_host_and_covers_every_ingress() {
    let built = build_of(vec![
        our_class(),
        svc("a"),
        svc("b"),
        annotated(
            "regex",
            json!({"rules": [rule("h.com", &[("/api/v[0-9]+", "ImplementationSpecific", "a", 80)])]}),
            json!({ USE_REGEX: "true" }),
        ),
        ing(
            "plain",
            json!({"rules": [rule("h.com", &[("/foo", "Prefix", "b", 80), ("/exact", "Exact", "b", 80)]),
                             rule("other.com", &[("/foo", "Prefix", "b", 80)])]}),
        ),
    ]);
    assert_eq!(errors(&built), 0);
    for (path, want) in [
        ("/api/v2/x", "a:80"),
        ("/API/V2", "a:80"),
        ("/api/vx", "404"),
        ("/foobar", "b:80"),
        ("/FOO", "b:80"),
        ("/exact/more", "b:80"),
        ("/x/foo", "404"),
    ] {
        assert_eq!(served(&built, "h.com", path), want, "h.com{path}");
    }
    // Another host keeps the Ingress spec's semantics.
    assert_eq!(served(&built, "other.com", "/foobar"), "404");
    assert_eq!(served(&built, "other.com", "/foo/x"), "b:80");
    let hosts = built.snapshot.routes.hosts();
    let h = hosts
        .iter()
        .find(|(p, _)| p.to_string() == "h.com")
        .unwrap();
    assert!(h.1.regex_mode());
    let order: Vec<_> =
        h.1.routes()
            .iter()
            .map(|r| r.path.as_deref().unwrap())
            .collect();
    assert_eq!(order, ["/api/v[0-9]+", "/exact", "/foo"]);
}

#[test]
fn a_rewrite_target_puts_the_host_in_regex_mode_unless_it_is_the_path() {
    let host = |target: &str| {
        build_of(vec![
            our_class(),
            svc("a"),
            annotated(
                "rw",
                json!({"rules": [rule("h.com", &[("/same", "Prefix", "a", 80)])]}),
                json!({ REWRITE: target }),
            ),
        ])
    };
    // A target equal to the path adds no rewrite (ingress-nginx's template): spec semantics.
    let built = host("/same");
    assert_eq!(served(&built, "h.com", "/samex"), "404");
    let route = built.snapshot.routes.route("h.com", "/same").unwrap();
    assert!(route.policy.as_ref().unwrap().rewrite.is_none() && route.regex.is_none());
    let built = host("/other");
    assert_eq!(served(&built, "h.com", "/samex"), "a:80");
    let route = built.snapshot.routes.route("h.com", "/same").unwrap();
    assert!(route.policy.as_ref().unwrap().rewrite.is_some());
}

#[test]
fn ties_and_duplicates_follow_ingress_nginx_order() {
    let built = build_of(vec![
        our_class(),
        svc("a"),
        svc("b"),
        annotated(
            "first",
            json!({"rules": [rule("h.com", &[("/foo/bar/bar", "ImplementationSpecific", "a", 80),
                                              ("/abc", "Exact", "a", 80),
                                              ("/abc", "Prefix", "b", 80)])]}),
            json!({ USE_REGEX: "true" }),
        ),
        annotated(
            "second",
            json!({"rules": [rule("h.com", &[("/foo/bar/[a-z]{3}", "ImplementationSpecific", "b", 80)])]}),
            json!({ USE_REGEX: "true" }),
        ),
    ]);
    // The longer pattern string is tried first, whatever it matches (rewrite.go).
    assert_eq!(served(&built, "h.com", "/foo/bar/bar"), "b:80");
    // The same path twice: Exact is tried first, the Prefix one is shadowed (a warning).
    assert_eq!(served(&built, "h.com", "/abcdef"), "a:80");
    assert_eq!(diags(&built, "shadowed").len(), 1);
}

#[test]
fn patterns_the_engine_cannot_run_are_errors_and_the_rest_serves() {
    let built = build_of(vec![
        our_class(),
        svc("a"),
        annotated(
            "r",
            json!({"rules": [rule("h.com", &[("/(?!admin)", "ImplementationSpecific", "a", 80),
                                              ("/(a)\\1", "ImplementationSpecific", "a", 80),
                                              ("/(unclosed", "ImplementationSpecific", "a", 80),
                                              ("/x{1000}{1000}", "ImplementationSpecific", "a", 80),
                                              ("/ok", "ImplementationSpecific", "a", 80)])]}),
            json!({ USE_REGEX: "true" }),
        ),
    ]);
    assert_eq!(errors(&built), 4, "{:#?}", built.diagnostics);
    assert_eq!(diags(&built, "look-around").len(), 1);
    assert_eq!(diags(&built, "backreferences").len(), 1);
    assert_eq!(diags(&built, "PCRE has it").len(), 2);
    assert_eq!(diags(&built, "unclosed group").len(), 1);
    assert_eq!(diags(&built, "compiles to more than").len(), 1);
    // Each failed pattern's literal prefix answers 503 in its place (`/` and `/x`, both
    // longer patterns than `/ok`): never a route around it.
    for path in ["/ok/x", "/admin", "/x1"] {
        let route = built.snapshot.routes.route("h.com", path).expect(path);
        assert_eq!(
            route.policy.as_ref().and_then(|p| p.deny),
            Some(503),
            "{path}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any printable path under regex mode: the build never panics, a path that compiles is
    /// routed by its regex (what it matches is what `regex` says), the rest are errors.
    #[test]
    fn arbitrary_regex_paths_never_panic(paths in proptest::collection::vec("/[ -~]{0,12}", 1..5), probe in "/[ -~]{0,16}") {
        let entries: Vec<(&str, &str, &str, u16)> = paths.iter().map(|p| (p.as_str(), "ImplementationSpecific", "a", 80)).collect();
        let built = build_of(vec![our_class(), svc("a"),
            annotated("p", json!({"rules": [rule("h.com", &entries)]}), json!({ USE_REGEX: "true" }))]);
        let found = built.snapshot.routes.route("h.com", &probe);
        let probe = probe.split('?').next().unwrap_or_default();
        use crate::snapshot::routes::{PathRegex, literal_prefix};
        let any_matches = paths.iter().any(|p| {
            let re = PathRegex::compile(p)
                .or_else(|_| PathRegex::compile(&::regex::escape(literal_prefix(p))));
            re.is_ok_and(|re| re.0.is_match(probe))
                && !p.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        prop_assert_eq!(found.is_some(), any_matches, "{:?} {:?}", paths, probe);
    }
}

/// `app-root` on a host where no route takes `/`: an added route takes `/` alone (and
/// redirects), in regex mode as in prefix mode; every other path is as before.
#[test]
fn app_root_takes_the_root_when_no_route_does() {
    for regex in [false, true] {
        let mut annotations = json!({ "nginx.ingress.kubernetes.io/app-root": "/app" });
        if regex {
            annotations[USE_REGEX] = json!("true");
        }
        let built = build_of(vec![
            our_class(),
            svc("a"),
            annotated(
                "root",
                json!({"rules": [rule("h.com", &[("/app", "Prefix", "a", 80)])]}),
                annotations,
            ),
        ]);
        assert_eq!(errors(&built), 0, "{:?}", built.diagnostics);
        let root = built
            .snapshot
            .routes
            .route("h.com", "/")
            .expect("a route for /");
        let policy = root.policy.as_deref().unwrap();
        assert_eq!(policy.app_root.as_deref(), Some("/app"), "regex {regex}");
        assert_eq!(served(&built, "h.com", "/other"), "404", "regex {regex}");
        assert_eq!(served(&built, "h.com", "/app/x"), "a:80", "regex {regex}");
    }
}
