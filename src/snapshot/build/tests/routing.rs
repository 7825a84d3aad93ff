//! Hosts, paths and precedence.

use super::*;

/// Builds one Ingress for host `h.com` with these (path, type) entries, backend `p{i}`.
fn with_paths(paths: &[(&str, &str)]) -> Built {
    let entries: Vec<(&str, &str, String, u16)> = paths
        .iter()
        .enumerate()
        .map(|(i, (p, t))| (*p, *t, format!("p{i}"), 80))
        .collect();
    let entries: Vec<(&str, &str, &str, u16)> = entries
        .iter()
        .map(|(p, t, s, n)| (*p, *t, s.as_str(), *n))
        .collect();
    let mut objects = vec![
        our_class(),
        ing("i", json!({"rules": [rule("h.com", &entries)]})),
    ];
    objects.extend((0..paths.len()).map(|i| svc(&format!("p{i}"))));
    build_of(objects)
}

/// Every row of the path-matching table of the Kubernetes Ingress documentation.
#[test]
fn kubernetes_path_matching_table() {
    let p = |i: usize| format!("p{i}:80");
    let no = "404".to_string();
    type Row<'a> = (&'a [(&'a str, &'a str)], &'a str, String);
    let rows: &[Row<'_>] = &[
        (&[("/", "Prefix")], "/", p(0)),
        (&[("/", "Prefix")], "/anything/at/all", p(0)),
        (&[("/foo", "Exact")], "/foo", p(0)),
        (&[("/foo", "Exact")], "/bar", no.clone()),
        (&[("/foo", "Exact")], "/foo/", no.clone()),
        (&[("/foo/", "Exact")], "/foo", no.clone()),
        (&[("/foo", "Prefix")], "/foo", p(0)),
        (&[("/foo", "Prefix")], "/foo/", p(0)),
        (&[("/foo/", "Prefix")], "/foo", p(0)),
        (&[("/foo/", "Prefix")], "/foo/", p(0)),
        (&[("/aaa/bb", "Prefix")], "/aaa/bbb", no.clone()),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbb", p(0)),
        (&[("/aaa/bbb/", "Prefix")], "/aaa/bbb", p(0)),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbb/", p(0)),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbb/ccc", p(0)),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbbxyz", no.clone()),
        (&[("/", "Prefix"), ("/aaa", "Prefix")], "/aaa/ccc", p(1)),
        (
            &[("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")],
            "/aaa/bbb",
            p(2),
        ),
        (
            &[("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")],
            "/ccc",
            p(0),
        ),
        (&[("/aaa", "Prefix")], "/ccc", no.clone()),
        (&[("/foo", "Prefix"), ("/foo", "Exact")], "/foo", p(1)),
        // Beyond the table: the other orders and neighbours of the mixed row.
        (&[("/foo", "Exact"), ("/foo", "Prefix")], "/foo", p(0)),
        (&[("/foo", "Exact"), ("/foo", "Prefix")], "/foo/bar", p(1)),
        (&[("/foo", "Prefix"), ("/foo/", "Prefix")], "/foo", p(1)),
        (&[("/foo/", "Prefix"), ("/foo", "Prefix")], "/foo/x", p(0)),
        (
            &[("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")],
            "/aaa/bbbxyz",
            p(0),
        ),
        (&[("/foo", "ImplementationSpecific")], "/foo/bar", p(0)),
        (&[("/Foo", "Exact")], "/foo", no.clone()),
        (&[("/a b", "Exact")], "/a b", no.clone()), // invalid path: left out
        (&[("/%41", "Exact")], "/%41", p(0)),
        (&[("/%41", "Exact")], "/A", no.clone()),
        (&[("/{x}", "Prefix")], "/{x}/y", p(0)),
        (&[("/{x}", "Prefix")], "/abc", no.clone()),
        (&[("/a:b/*c", "Exact")], "/a:b/*c", p(0)),
    ];
    for (paths, request, want) in rows {
        let built = with_paths(paths);
        assert_eq!(
            &served(&built, "h.com", request),
            want,
            "paths {paths:?} request {request}"
        );
        let with_query = format!("{request}?x=/aaa&y");
        assert_eq!(
            &served(&built, "h.com", &with_query),
            want,
            "paths {paths:?} request {with_query}"
        );
    }
}

#[test]
fn hostname_wildcards_match_one_label() {
    // The hostname-wildcard example of the Kubernetes documentation.
    let built = build_of(vec![
        our_class(),
        svc("service1"),
        svc("service2"),
        ing(
            "wild",
            json!({"rules": [
                rule("foo.bar.com", &[("/bar", "Prefix", "service1", 80)]),
                rule("*.foo.com", &[("/foo", "Prefix", "service2", 80)]),
            ]}),
        ),
    ]);
    assert_eq!(served(&built, "foo.bar.com", "/bar"), "service1:80");
    assert_eq!(served(&built, "bar.foo.com", "/foo"), "service2:80");
    assert_eq!(served(&built, "baz.bar.foo.com", "/foo"), "404");
    assert_eq!(served(&built, "foo.com", "/foo"), "404");
    assert_eq!(served(&built, ".foo.com", "/foo"), "404");
}

#[test]
fn hosts_are_case_insensitive_and_ports_ignored() {
    let built = build_of(vec![
        our_class(),
        svc("s"),
        ing(
            "i",
            json!({"rules": [rule("Foo.Bar.com", &[("/", "Prefix", "s", 80)])]}),
        ),
    ]);
    for host in [
        "foo.bar.com",
        "FOO.BAR.COM",
        "foo.bar.com:8080",
        "foo.bar.com.",
        "Foo.Bar.Com:443",
    ] {
        assert_eq!(served(&built, host, "/x"), "s:80", "{host}");
    }
    assert_eq!(served(&built, "foo.bar.co", "/x"), "404");
}

#[test]
fn name_based_virtual_hosting_with_a_catch_all() {
    let built = build_of(vec![
        our_class(),
        svc("s1"),
        svc("s2"),
        svc("s3"),
        svc("dflt"),
        ing(
            "vhosts",
            json!({
            "defaultBackend": {"service": {"name": "dflt", "port": {"number": 80}}},
            "rules": [
                rule("foo.bar.com", &[("/", "Prefix", "s1", 80)]),
                rule("bar.foo.com", &[("/only", "Exact", "s2", 80)]),
                rule("", &[("/", "Prefix", "s3", 80)]),
            ]}),
        ),
    ]);
    assert_eq!(served(&built, "foo.bar.com", "/a"), "s1:80");
    assert_eq!(served(&built, "bar.foo.com", "/only"), "s2:80");
    // Matched host, unmatched path: the default backend, never the catch-all.
    assert_eq!(served(&built, "bar.foo.com", "/other"), "default:dflt:80");
    assert_eq!(served(&built, "other.com", "/a"), "s3:80");
    assert_eq!(served(&built, "", "/a"), "s3:80");
    assert_eq!(served(&built, "10.0.0.1:80", "/a"), "s3:80");
}

#[test]
fn exact_host_beats_wildcard() {
    let built = build_of(vec![
        our_class(),
        svc("exact"),
        svc("wild"),
        ing(
            "i",
            json!({"rules": [
                rule("*.foo.com", &[("/", "Prefix", "wild", 80)]),
                rule("a.foo.com", &[("/x", "Exact", "exact", 80)]),
            ]}),
        ),
    ]);
    assert_eq!(served(&built, "a.foo.com", "/x"), "exact:80");
    assert_eq!(served(&built, "b.foo.com", "/x"), "wild:80");
    // a.foo.com matched its own rule: no fall-through to the wildcard.
    assert_eq!(served(&built, "a.foo.com", "/y"), "404");
}

#[test]
fn oldest_ingress_wins_conflicts() {
    let older = with_meta(
        ing(
            "zzz",
            json!({"rules": [rule("h.com", &[("/", "Prefix", "old", 80)])]}),
        ),
        json!({"creationTimestamp": "2024-01-01T00:00:00Z"}),
    );
    let newer = with_meta(
        ing(
            "aaa",
            json!({"rules": [rule("h.com", &[("/", "Prefix", "new", 80), ("/new", "Prefix", "new", 80)]), ]}),
        ),
        json!({"creationTimestamp": "2025-01-01T00:00:00Z"}),
    );
    let built = build_of(vec![our_class(), svc("old"), svc("new"), older, newer]);
    assert_eq!(served(&built, "h.com", "/x"), "old:80");
    assert_eq!(
        served(&built, "h.com", "/new/x"),
        "new:80",
        "non-conflicting paths still merge"
    );
    let conflict = diags(&built, "already claimed by Ingress default/zzz");
    assert_eq!(conflict.len(), 1, "{:?}", built.diagnostics);
    assert_eq!(conflict[0].object.name, "aaa");
    assert_eq!(conflict[0].field, "spec.rules[0].http.paths[0]");

    // Without timestamps, namespace/name decides.
    let a = ing(
        "a",
        json!({"rules": [rule("h.com", &[("/", "Prefix", "old", 80)])]}),
    );
    let b = ing(
        "b",
        json!({"rules": [rule("h.com", &[("/", "ImplementationSpecific", "new", 80)])]}),
    );
    let built = build_of(vec![our_class(), svc("old"), svc("new"), b, a]);
    assert_eq!(served(&built, "h.com", "/"), "old:80");
    assert_eq!(
        diags(&built, "already claimed by Ingress default/a").len(),
        1
    );
}

#[test]
fn equal_claims_with_the_same_backend_are_not_conflicts() {
    // The myblog tutorial: `myblog` and `myblog-tls` route the same host and path to one Service.
    let plain = ing(
        "myblog",
        json!({"rules": [rule("h.com", &[("/", "Prefix", "s", 80)])]}),
    );
    let tls = ing(
        "myblog-tls",
        json!({"rules": [rule("h.com", &[("/", "Prefix", "s", 80)])],
                                        "tls": [{"hosts": ["h.com"], "secretName": "missing"}]}),
    );
    let built = build_of(vec![our_class(), svc("s"), plain, tls]);
    assert!(
        diags(&built, "already claimed").is_empty(),
        "{:?}",
        built.diagnostics
    );
    assert_eq!(served(&built, "h.com", "/"), "s:80");
    assert!(
        built
            .snapshot
            .routes
            .route("h.com", "/")
            .unwrap()
            .ssl_redirect
    );
}

#[test]
fn default_backend_oldest_wins_else_404() {
    let d = |name: &str, svc_name: &str, ts: &str| {
        with_meta(
            ing(
                name,
                json!({"defaultBackend": {"service": {"name": svc_name, "port": {"number": 80}}}}),
            ),
            json!({"creationTimestamp": ts}),
        )
    };
    let built = build_of(vec![
        our_class(),
        svc("one"),
        svc("two"),
        d("b", "one", "2020-01-01T00:00:00Z"),
        d("a", "two", "2021-01-01T00:00:00Z"),
    ]);
    assert_eq!(served(&built, "whatever", "/"), "default:one:80");
    assert_eq!(
        diags(
            &built,
            "default backend is already set by Ingress default/b"
        )
        .len(),
        1
    );
    let built = build_of(vec![
        our_class(),
        svc("one"),
        ing(
            "x",
            json!({"rules": [rule("h.com", &[("/a", "Exact", "one", 80)])]}),
        ),
    ]);
    assert_eq!(served(&built, "h.com", "/b"), "404");
}

#[test]
fn invalid_paths_and_hosts_are_diagnostics() {
    let built = build_of(vec![
        our_class(),
        svc("s"),
        ing(
            "bad",
            json!({"rules": [
                rule("h.com", &[("relative", "Prefix", "s", 80), ("/a//b", "Exact", "s", 80), ("/ok", "Weird", "s", 80), ("/fine", "Exact", "s", 80)]),
                rule("Bad_Host.com", &[("/", "Prefix", "s", 80)]),
                rule("10.1.2.3", &[("/", "Prefix", "s", 80)]),
            ]}),
        ),
    ]);
    assert_eq!(
        served(&built, "h.com", "/fine"),
        "s:80",
        "the rest keeps serving"
    );
    for (field, needle) in [
        ("spec.rules[0].http.paths[0].path", "absolute path"),
        ("spec.rules[0].http.paths[1].path", "must not contain '//'"),
        ("spec.rules[0].http.paths[2].pathType", "unknown pathType"),
        ("spec.rules[1].host", "lower-case DNS name"),
        ("spec.rules[2].host", "not an IP address"),
    ] {
        let found = built
            .diagnostics
            .iter()
            .any(|d| d.field == field && d.reason.contains(needle) && d.object.name == "bad");
        assert!(found, "{field}: {needle} in {:?}", built.diagnostics);
    }
}

#[test]
fn regex_like_implementation_specific_paths_warn() {
    let built = with_paths(&[("/api(/|$)(.*)", "ImplementationSpecific")]);
    assert_eq!(diags(&built, "looks like a regular expression").len(), 1);
    assert_eq!(served(&built, "h.com", "/api(/|$)(.*)/x"), "p0:80");
}

#[test]
fn tls_hosts_redirect_unless_annotated() {
    let tls = |name: &str, host: &str, annotations: Value| {
        with_meta(
            ing(
                name,
                json!({"tls": [{"hosts": [host], "secretName": "missing"}],
                             "rules": [rule(host, &[("/", "Prefix", "s", 80)])]}),
            ),
            json!({"annotations": annotations}),
        )
    };
    let built = build_of(vec![
        our_class(),
        svc("s"),
        tls("a", "a.com", json!({})),
        tls("b", "b.com", json!({"portico.dev/ssl-redirect": "false"})),
        ing(
            "c",
            json!({"rules": [rule("c.com", &[("/", "Prefix", "s", 80)])]}),
        ),
    ]);
    let redirect = |h: &str| built.snapshot.routes.route(h, "/").unwrap().ssl_redirect;
    assert!(redirect("a.com"));
    assert!(!redirect("b.com"));
    assert!(!redirect("c.com"));
}

/// The Ingress path rules written out plainly: every path that matches, the longest declared
/// path winning, Exact before Prefix on equal length.
fn reference_route(paths: &[(String, &str)], request: &str) -> String {
    let matches = |p: &str, t: &str| match t {
        "Exact" => request == p,
        _ => {
            let t = p.strip_suffix('/').unwrap_or(p);
            t.is_empty() || request == t || request.starts_with(&format!("{t}/"))
        }
    };
    paths
        .iter()
        .enumerate()
        .filter(|(_, (p, t))| matches(p, t))
        .max_by_key(|(i, (p, t))| (p.len(), *t == "Exact", std::cmp::Reverse(*i)))
        .map_or_else(|| "404".to_string(), |(i, _)| format!("p{i}:80"))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Random overlapping paths (nested prefixes, static siblings, trailing slashes) route
    /// like the plain reference.
    #[test]
    fn lookups_follow_the_path_rules(
        declared in proptest::collection::btree_set((r"(/(a|b|ab|\{x\})){0,3}/?", proptest::bool::ANY), 1..7),
        requests in proptest::collection::vec(r"(/(a|b|ab|abc|\{x\})){0,4}/?", 1..12),
    ) {
        let paths: Vec<(String, &str)> = declared
            .into_iter()
            .map(|(p, exact)| (if p.is_empty() { "/".to_string() } else { p }, if exact { "Exact" } else { "Prefix" }))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let refs: Vec<(&str, &str)> = paths.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        let built = with_paths(&refs);
        for request in requests {
            let request = if request.is_empty() { "/".to_string() } else { request };
            proptest::prop_assert_eq!(
                served(&built, "h.com", &request),
                reference_route(&paths, &request),
                "paths {:?} request {}", paths, request
            );
        }
    }
}

/// A claim that loses to an equal one with the same backend but another policy is an error:
/// its annotations are not applied, and when they guard access the error says the path is
/// served without them (ingress-nginx's admission webhook refuses such an Ingress).
#[test]
fn a_losing_claim_with_guards_is_an_error() {
    let open = ing(
        "a-open",
        json!({"rules": [rule("h.com", &[("/admin", "Prefix", "s", 80)])]}),
    );
    let guarded = with_meta(
        ing(
            "b-guarded",
            json!({"rules": [rule("h.com", &[("/admin", "Prefix", "s", 80)])]}),
        ),
        json!({"annotations": {"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"}}),
    );
    let built = build_of(vec![our_class(), svc("s"), open, guarded]);
    let found = diags(&built, "do NOT apply");
    assert_eq!(found.len(), 1, "{:?}", built.diagnostics);
    assert!(
        built
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.reason.contains("already claimed")),
        "{:?}",
        built.diagnostics
    );
}

/// `auth-secret` without `auth-type` asks nothing (as ingress-nginx), and says so.
#[test]
fn an_auth_secret_without_auth_type_is_a_warning() {
    let ingress = with_meta(
        ing(
            "web",
            json!({"rules": [rule("h.com", &[("/", "Prefix", "s", 80)])]}),
        ),
        json!({"annotations": {"nginx.ingress.kubernetes.io/auth-secret": "users"}}),
    );
    let built = build_of(vec![our_class(), svc("s"), ingress]);
    let found = diags(&built, "without auth-type");
    assert_eq!(found.len(), 1, "{:?}", built.diagnostics);
    assert_eq!(found[0].severity, Severity::Warning);
}

/// `spec.defaultBackend` as ingress-nginx's `createServers`: the paths no rule of a host takes
/// get the default backend of the host's oldest Ingress (not a newer one's, not a www twin's
/// redirect, never another host's); an Ingress with rules is no catch-all; hosts no rule names
/// get the default backend of an Ingress without rules.
#[test]
fn default_backends_belong_to_their_hosts_oldest_ingress() {
    let meta = |name: &str, spec: Value, more: Value| with_meta(ing(name, spec), more);
    let built = build_of(vec![
        our_class(),
        svc("a"),
        svc("b"),
        svc("all"),
        meta(
            "old",
            json!({"rules": [rule("w.com", &[("/x", "Prefix", "a", 80)])]}),
            json!({"creationTimestamp": "2020-01-01T00:00:00Z",
                   "annotations": {"nginx.ingress.kubernetes.io/from-to-www-redirect": "true"}}),
        ),
        meta(
            "newer",
            json!({"defaultBackend": {"service": {"name": "b", "port": {"number": 80}}},
                   "rules": [rule("www.w.com", &[("/y", "Prefix", "b", 80)]),
                             rule("w.com", &[("/z", "Prefix", "b", 80)])]}),
            json!({"creationTimestamp": "2021-01-01T00:00:00Z"}),
        ),
    ]);
    // www.w.com names a rule of `newer` (the twin's redirect gives way): newer's default.
    assert_eq!(served(&built, "www.w.com", "/other"), "default:b:80");
    // w.com's oldest Ingress has none: 404, never the newer one's.
    assert_eq!(served(&built, "w.com", "/other"), "404");
    // An Ingress with rules is no catch-all.
    assert_eq!(served(&built, "unknown.com", "/"), "404");
    let mut objects = vec![
        our_class(),
        svc("a"),
        svc("all"),
        ing(
            "site",
            json!({"rules": [rule("s.com", &[("/x", "Prefix", "a", 80)])]}),
        ),
    ];
    objects.push(ing(
        "catch",
        json!({"defaultBackend": {"service": {"name": "all", "port": {"number": 80}}}}),
    ));
    let built = build_of(objects);
    assert_eq!(served(&built, "unknown.com", "/"), "default:all:80");
    // A host with rules keeps its 404 for what they do not take.
    assert_eq!(served(&built, "s.com", "/other"), "404");
}
