//! ingress-nginx's regex paths and rewrites over real sockets (`use-regex`, `rewrite-target`,
//! `x-forwarded-prefix`, captures in redirects), with the expectations of ingress-nginx's
//! documentation and e2e tests (docs/examples/rewrite, test/e2e/annotations/rewrite.go):
//! regex mode is per host and covers every Ingress of the host, paths are case-insensitive
//! and anchored only at the start, the longest path is tried first, the whole URI is
//! replaced and the query kept.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::client::{get, get_h2, h1, h2c};
use support::manifests::{class, endpoints, exact, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);
const N: &str = "nginx.ingress.kubernetes.io";

/// Portico with the Services `a` and `b` (one echo backend each) and these Ingresses.
async fn env_with(ingresses: &[String], a: &Backend, b: &Backend) -> Env {
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "a", 80)
                + &endpoints("shop", "a", &[a.addr], &[])
                + "---\n"
                + &service("shop", "b", 80)
                + &endpoints("shop", "b", &[b.addr], &[]),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    Env::start(&files).await
}

fn regex_path<'a>(path: &'a str, service: &'a str) -> support::manifests::Path<'a> {
    support::manifests::Path {
        path,
        path_type: "ImplementationSpecific",
        service,
        port: 80,
    }
}

/// The path and query the backend saw, and which backend it was.
async fn seen(env: &Env, host: &str, path: &str) -> (String, String) {
    let reply = h1(env.http(), get(host, path)).await;
    assert_eq!(reply.status, StatusCode::OK, "{host}{path}");
    let json = reply.json();
    (
        reply.served_by(),
        json["path"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn rewrite_target_replaces_the_whole_uri_with_captures() {
    timeout(LIMIT, rewrite_target()).await.expect("bounded");
}

async fn rewrite_target() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    // ingress-nginx's documented example (docs/examples/rewrite).
    let rewrite = ingress_full(
        "shop",
        "rewrite",
        &[("rw.example", vec![regex_path("/something(/|$)(.*)", "a")])],
        &[],
        &format!(
            "{N}/use-regex: \"true\", {N}/rewrite-target: /$2, {N}/x-forwarded-prefix: /something"
        ),
        None,
    );
    let env = env_with(&[rewrite], &a, &b).await;
    for (path, want) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new", "/new"),
        ("/something/new/deeper", "/new/deeper"),
        // Case-insensitive; the query is kept.
        ("/SomeThing/new?x=1&y=2", "/new?x=1&y=2"),
    ] {
        assert_eq!(
            seen(&env, "rw.example", path).await,
            ("a".to_string(), want.to_string()),
            "{path}"
        );
    }
    // X-Forwarded-Prefix goes with the rewrite, replacing the client's.
    let mut req = get("rw.example", "/something/x");
    req.headers_mut()
        .insert("x-forwarded-prefix", "/forged".parse().unwrap());
    let reply = h1(env.http(), req).await;
    assert_eq!(reply.json()["headers"]["x-forwarded-prefix"], "/something");
    // HTTP/2 clients get the same rewrite.
    let reply = h2c(env.http(), get_h2("rw.example", "/something/h2?q=1")).await;
    assert_eq!(reply.json()["path"], "/h2?q=1");
    // Anchored at the start: no route for a path that only contains it.
    let reply = h1(env.http(), get("rw.example", "/x/something/new")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    env.shutdown().await;
}

#[tokio::test]
async fn regex_mode_covers_every_ingress_of_the_host() {
    timeout(LIMIT, host_wide()).await.expect("bounded");
}

async fn host_wide() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let regex = ingress_full(
        "shop",
        "regex",
        &[("wide.example", vec![regex_path("/api/v[0-9]+/", "a")])],
        &[],
        &format!("{N}/use-regex: \"true\""),
        None,
    );
    // Another Ingress of the same host, no annotation: its paths become regexes too.
    let plain = ingress_full(
        "shop",
        "plain",
        &[(
            "wide.example",
            vec![prefix("/foo", "b", 80), exact("/exact", "b", 80)],
        )],
        &[],
        "",
        None,
    );
    // A host of its own keeps the Ingress spec's semantics.
    let elsewhere = ingress_full(
        "shop",
        "elsewhere",
        &[("spec.example", vec![prefix("/foo", "b", 80)])],
        &[],
        "",
        None,
    );
    let env = env_with(&[regex, plain, elsewhere], &a, &b).await;
    let b_at = |p: &str| ("b".to_string(), p.to_string());
    assert_eq!(
        seen(&env, "wide.example", "/api/v12/users").await,
        ("a".to_string(), "/api/v12/users".to_string())
    );
    // `Prefix /foo` is `~* ^/foo`: /foobar and /FOO match; Exact loses its '='.
    assert_eq!(seen(&env, "wide.example", "/foobar").await, b_at("/foobar"));
    assert_eq!(seen(&env, "wide.example", "/FOO/x").await, b_at("/FOO/x"));
    assert_eq!(
        seen(&env, "wide.example", "/exact/more").await,
        b_at("/exact/more")
    );
    for (host, path) in [("spec.example", "/foobar"), ("spec.example", "/FOO")] {
        let reply = h1(env.http(), get(host, path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{host}{path}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn the_longest_regex_is_tried_first() {
    timeout(LIMIT, longest_first()).await.expect("bounded");
}

/// rewrite.go, "should fail to use longest match for documented warning": `/foo/bar/[a-z]{3}`
/// (17 characters) is tried before `/foo/bar/bar` (12) and wins for `/foo/bar/bar`.
async fn longest_first() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let first = ingress_full(
        "shop",
        "first",
        &[("long.example", vec![regex_path("/foo/bar/bar", "a")])],
        &[],
        &format!("{N}/use-regex: \"true\""),
        None,
    );
    let second = ingress_full(
        "shop",
        "second",
        &[("long.example", vec![regex_path("/foo/bar/[a-z]{3}", "b")])],
        &[],
        &format!("{N}/use-regex: \"true\""),
        None,
    );
    let env = env_with(&[first, second], &a, &b).await;
    let (by, _) = seen(&env, "long.example", "/foo/bar/bar").await;
    assert_eq!(by, "b");
    env.shutdown().await;
}

#[tokio::test]
async fn rewrites_keep_or_drop_the_query_and_redirect_to_urls() {
    timeout(LIMIT, queries_and_redirects())
        .await
        .expect("bounded");
}

async fn queries_and_redirects() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let rule = |name: &str, host: &str, path: &str, ann: String| {
        ingress_full(
            "shop",
            name,
            &[(host, vec![regex_path(path, "a")])],
            &[],
            &ann,
            None,
        )
    };
    let ingresses = [
        rule(
            "args",
            "args.example",
            "/a/(.*)",
            format!("{N}/rewrite-target: \"/new/$1?from=rewrite\""),
        ),
        rule(
            "dropargs",
            "drop.example",
            "/a/(.*)",
            format!("{N}/rewrite-target: \"/new/$1?\""),
        ),
        rule(
            "to-url",
            "url.example",
            "/old/(.*)",
            format!("{N}/rewrite-target: https://new.example/$1"),
        ),
        // traefik#12982: nginx replaces the whole URI, so the rest of the path is gone.
        ingress_full(
            "shop",
            "whole",
            &[("whole.example", vec![prefix("/original", "a", 80)])],
            &[],
            &format!("{N}/rewrite-target: https://bar.example.org/"),
            None,
        ),
        rule(
            "captured",
            "blog.example",
            "/blog/(.*)",
            format!("{N}/use-regex: \"true\", {N}/permanent-redirect: https://blog.example/$1"),
        ),
        rule(
            "dots",
            "dots.example",
            "/r/(.*)",
            format!("{N}/rewrite-target: /x/$1/../y"),
        ),
        // A '?' a variable produces is no argument separator: nginx splits at its text's.
        rule(
            "varq",
            "varq.example",
            "/v/(.*)",
            format!("{N}/rewrite-target: \"/new$http_x_sub?t=1\""),
        ),
    ];
    let env = env_with(&ingresses, &a, &b).await;
    // The target's own arguments first, then the request's.
    let (_, path) = seen(&env, "args.example", "/a/b?x=1").await;
    assert_eq!(path, "/new/b?from=rewrite&x=1");
    let (_, path) = seen(&env, "args.example", "/a/b").await;
    assert_eq!(path, "/new/b?from=rewrite");
    // A target ending in '?' drops them.
    let (_, path) = seen(&env, "drop.example", "/a/b?x=1").await;
    assert_eq!(path, "/new/b");
    // A target that is a URL is a 302, the query appended.
    let reply = h1(env.http(), get("url.example", "/old/x/y?q=1")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), "https://new.example/x/y?q=1");
    assert_eq!(reply.served_by(), "");
    let reply = h1(env.http(), get("whole.example", "/original/other")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), "https://bar.example.org/");
    // Captures of the path regex expand in a permanent redirect (traefik#13474).
    let reply = h1(env.http(), get("blog.example", "/blog/2026/post")).await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.header("location"), "https://blog.example/2026/post");
    // The rewritten path is normalised like every forwarded path.
    let (_, path) = seen(&env, "dots.example", "/r/a").await;
    assert_eq!(path, "/x/y");
    let reply = h1(env.http(), get("dots.example", "/r/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut req = get("varq.example", "/v/z?x=1");
    req.headers_mut()
        .insert("x-sub", http::HeaderValue::from_static("/p?q=1#f"));
    let reply = h1(env.http(), req).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["path"], "/new/p%3Fq=1%23f?t=1&x=1");
    // A '%' a client's field brings is a byte of the path, escaped as nginx escapes the
    // rewritten URI it proxies: an encoded slash in a header never becomes a separator the
    // endpoint decodes.
    let mut req = get("varq.example", "/v/z?x=1");
    req.headers_mut().insert(
        "x-sub",
        http::HeaderValue::from_static("/..%2F..%2Fadmin%zz"),
    );
    let reply = h1(env.http(), req).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.json()["path"],
        "/new/..%252F..%252Fadmin%25zz?t=1&x=1"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_regex_the_engine_cannot_run_answers_503_with_an_error() {
    timeout(LIMIT, unsupported_regex()).await.expect("bounded");
}

async fn unsupported_regex() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let bad = ingress_full(
        "shop",
        "lookahead",
        &[(
            "re.example",
            vec![
                regex_path("/(?!admin)(.*)", "a"),
                regex_path("/ok/(.*)", "b"),
            ],
        )],
        &[],
        &format!("{N}/use-regex: \"true\""),
        None,
    );
    let env = env_with(&[bad], &a, &b).await;
    // Its literal prefix is `/`, tried before the shorter `/ok/(.*)` (as nginx tries the
    // longer regex first, which would have taken `/ok/x` too): everything answers 503.
    for path in ["/ok/x", "/public"] {
        let reply = h1(env.http(), get("re.example", path)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let errors: Vec<String> = dump["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error" && d["object"]["name"] == "lookahead")
        .map(|d| format!("{}: {}", d["field"], d["reason"]))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("spec.rules[0].http.paths[0]"),
        "{errors:?}"
    );
    assert!(errors[0].contains("look-around"), "{errors:?}");
    env.shutdown().await;
}

/// A regex path the linear-time engine cannot run (PCRE's look-around, say) is not dropped
/// so that its requests fall to another route of the host, unguarded: its place in the
/// host's order answers 503 on the pattern's literal prefix (an error says why), so an
/// allowlist or auth on it is never bypassed.
#[tokio::test]
async fn a_regex_portico_cannot_run_fails_closed() {
    timeout(LIMIT, unrunnable()).await.expect("bounded");
}

async fn unrunnable() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let guarded = ingress_full(
        "shop",
        "guarded",
        &[("pcre.example", vec![regex_path("/admin(?!/public)", "a")])],
        &[],
        &format!("{N}/use-regex: \"true\", {N}/whitelist-source-range: 10.0.0.0/8"),
        None,
    );
    let site = ingress_full(
        "shop",
        "site",
        &[("pcre.example", vec![prefix("/", "b", 80)])],
        &[],
        "",
        None,
    );
    let env = env_with(&[guarded, site], &a, &b).await;
    for path in ["/admin/secret", "/ADMIN", "/admin"] {
        let reply = h1(env.http(), get("pcre.example", path)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.served_by(), "", "{path}");
    }
    assert_eq!(seen(&env, "pcre.example", "/other").await.0, "b");
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let said = dump["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["severity"] == "error"
            && d["reason"].as_str().unwrap().contains("/admin(?!/public)")
            && d["reason"].as_str().unwrap().contains("503")
    });
    assert!(said, "{:#}", dump["diagnostics"]);
    env.shutdown().await;
}
