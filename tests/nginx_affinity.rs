//! ingress-nginx's sticky sessions (`affinity: cookie`) over real sockets, with the
//! expectations of its docs and e2e tests (test/e2e/annotations/affinity.go, affinitymode.go,
//! canary.go): the cookie's name, Path, Expires/Max-Age, Secure and SameSite; a session stays on
//! its endpoint; only the annotated Ingress's paths set the cookie; a failed endpoint moves a
//! session only with `session-cookie-change-on-failure`; a sticky cookie outranks the canary
//! rules.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::{Request, StatusCode};
use support::client::{self, Reply, h1};
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);
const N: &str = "nginx.ingress.kubernetes.io";

fn ing(name: &str, host: &str, path: &str, svc: &str, annotations: &str) -> String {
    ingress_full(
        "shop",
        name,
        &[(host, vec![prefix(path, svc, 80)])],
        &[],
        annotations,
        None,
    )
}

async fn send(env: &Env, host: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path).header("host", host);
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    h1(env.http(), req.body(Default::default()).unwrap()).await
}

/// The `name=value` of a reply's Set-Cookie (empty when none).
fn cookie_pair(reply: &Reply) -> String {
    let set = reply.header("set-cookie");
    set.split(';').next().unwrap_or("").to_string()
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_session_on_its_endpoint() {
    timeout(LIMIT, sticky()).await.expect("bounded");
}

async fn sticky() {
    let backends = [
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let ingresses = [
        ing(
            "balanced",
            "b.example",
            "/app",
            "web",
            &format!("{N}/affinity: cookie, {N}/session-cookie-name: SERVERID"),
        ),
        ing(
            "persistent",
            "p.example",
            "/",
            "web",
            &format!(
                "{N}/affinity: cookie, {N}/affinity-mode: persistent, {N}/session-cookie-expires: \"172800\", {N}/session-cookie-max-age: \"259200\", {N}/session-cookie-samesite: Lax, {N}/session-cookie-domain: p.example"
            ),
        ),
        ing(
            "regex",
            "r.example",
            "/foo/.*",
            "web",
            &format!(
                "{N}/affinity: cookie, {N}/use-regex: \"true\", {N}/session-cookie-path: /foo/bar"
            ),
        ),
        // Two Ingresses on one host: only the annotated one's paths are sticky.
        ing(
            "ingress1",
            "separate.example",
            "/foo/bar",
            "web",
            &format!("{N}/affinity: cookie"),
        ),
        ing("ingress2", "separate.example", "/foo", "web", ""),
    ];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &addrs, &[]),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;

    // The cookie, as ingress-nginx writes it: named, Path the location's, HttpOnly, no Secure
    // over plain HTTP.
    let first = send(&env, "b.example", "/app/x", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let set = first.header("set-cookie").to_string();
    assert!(set.starts_with("SERVERID="), "{set}");
    assert!(set.ends_with("; Path=/app; HttpOnly"), "{set}");
    // With it, every request goes where the first went, and the cookie is not set again.
    let pair = cookie_pair(&first);
    for _ in 0..20 {
        let reply = send(&env, "b.example", "/app/y", &[("cookie", &pair)]).await;
        assert_eq!(reply.served_by(), first.served_by());
        assert_eq!(
            reply.header("set-cookie"),
            "",
            "a honoured cookie is not set again"
        );
    }
    // New sessions spread over the endpoints.
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.insert(send(&env, "b.example", "/app", &[]).await.served_by());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Persistent, with Expires (nginx's cookie_time) and Max-Age, SameSite and Domain.
    let first = send(&env, "p.example", "/", &[]).await;
    let set = first.header("set-cookie").to_string();
    assert!(set.starts_with("INGRESSCOOKIE="), "{set}");
    assert!(set.contains("; Expires="), "{set}");
    assert!(
        set.contains(" GMT; Max-Age=259200; Domain=p.example; Path=/; HttpOnly; SameSite=Lax"),
        "{set}"
    );
    let pair = cookie_pair(&first);
    for _ in 0..10 {
        let reply = send(
            &env,
            "p.example",
            "/z",
            &[("cookie", &format!("x=1; {pair}"))],
        )
        .await;
        assert_eq!(reply.served_by(), first.served_by());
    }

    // use-regex with session-cookie-path.
    let reply = send(&env, "r.example", "/foo/bar", &[]).await;
    assert!(
        reply.header("set-cookie").contains("; Path=/foo/bar;"),
        "{:?}",
        reply.headers
    );

    // Separate Ingresses: /foo sets nothing, /foo/bar does.
    let reply = send(&env, "separate.example", "/foo", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("set-cookie"), "");
    let reply = send(&env, "separate.example", "/foo/bar", &[]).await;
    assert!(
        reply.header("set-cookie").contains("Path=/foo/bar"),
        "{:?}",
        reply.headers
    );

    // Over HTTPS the cookie is Secure.
    let (reply, _) = client::https(
        env.https(),
        Some("b.example"),
        &["http/1.1"],
        "b.example",
        "/app",
    )
    .await;
    assert!(
        reply
            .header("set-cookie")
            .ends_with("; Path=/app; Secure; HttpOnly"),
        "{:?}",
        reply.headers
    );
    env.shutdown().await;
}

/// A session whose endpoint fails: a 502 (nginx tries the cookie's endpoint again), unless
/// `session-cookie-change-on-failure`, which gives it another endpoint and a new cookie.
#[tokio::test]
async fn change_on_failure_moves_a_session_off_a_failed_endpoint() {
    timeout(LIMIT, change_on_failure()).await.expect("bounded");
}

async fn change_on_failure() {
    let alive = Backend::start("alive").await;
    let gone = support::dead_addr();
    let ingresses = [
        ing(
            "stay",
            "stay.example",
            "/",
            "web",
            &format!("{N}/affinity: cookie"),
        ),
        ing(
            "move",
            "move.example",
            "/",
            "web",
            &format!("{N}/affinity: cookie, {N}/session-cookie-change-on-failure: \"true\""),
        ),
    ];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[alive.addr, gone], &[]),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    // Balanced keys chosen by the client hash to one endpoint or the other, consistently.
    let mut statuses: BTreeMap<String, StatusCode> = BTreeMap::new();
    for k in 0..40 {
        let key = format!("INGRESSCOOKIE=k{k}|x");
        let a = send(&env, "stay.example", "/", &[("cookie", &key)]).await;
        let b = send(&env, "stay.example", "/", &[("cookie", &key)]).await;
        assert_eq!(a.status, b.status, "key k{k} is consistent");
        statuses.insert(key, a.status);
    }
    let failing: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| **s == StatusCode::BAD_GATEWAY)
        .map(|(k, _)| k)
        .collect();
    assert!(
        !failing.is_empty(),
        "some keys hash to the dead endpoint: {statuses:?}"
    );
    assert!(
        statuses.values().any(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // change-on-failure: those sessions move to the live endpoint and get a new cookie.
    for key in failing {
        let reply = send(&env, "move.example", "/", &[("cookie", key)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}");
        assert_eq!(reply.served_by(), "alive");
        let new = cookie_pair(&reply);
        assert!(new.starts_with("INGRESSCOOKIE=") && new != *key, "{new}");
        let again = send(&env, "move.example", "/", &[("cookie", &new)]).await;
        assert_eq!(again.served_by(), "alive");
        assert_eq!(again.header("set-cookie"), "");
    }
    // A new session never lands on the dead endpoint: without a cookie nginx picks anew.
    for _ in 0..20 {
        let reply = send(&env, "stay.example", "/", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("set-cookie").starts_with("INGRESSCOOKIE="));
    }
    env.shutdown().await;
}

/// A request pinned by the primary's sticky cookie stays on the primary whatever the canary
/// rules say; one pinned to the canary goes to the canary. With
/// `affinity-canary-behavior: sticky` (the default, on the canary Ingress) the canary takes
/// its primary's session affinity even with none of its own, so a session sent to it stays
/// (ingress-nginx's `mergeAlternativeBackend`, kubernetes/ingress-nginx#3717); `legacy` keeps
/// the canary's own (here none: no cookie from the canary), and the primary's cookie still
/// holds (`is_affinitized` of the primary is asked first either way).
#[tokio::test]
async fn a_sticky_cookie_outranks_the_canary_rules() {
    timeout(LIMIT, canary()).await.expect("bounded");
}

async fn canary() {
    let primary = Backend::start("primary").await;
    let canary_backend = Backend::start("canary").await;
    let pair = |host: &str, canary_extra: &str| {
        [
            ing(
                &format!("{}-primary", &host[..1]),
                host,
                "/",
                "web",
                &format!("{N}/affinity: cookie"),
            ),
            ing(
                &format!("{}-canary", &host[..1]),
                host,
                "/",
                "canary",
                &format!("{N}/canary: \"true\", {N}/canary-by-header: X-Canary{canary_extra}"),
            ),
        ]
    };
    let mut ingresses = Vec::new();
    ingresses.extend(pair("sticky.example", ""));
    ingresses.extend(pair(
        "legacy.example",
        &format!(", {N}/affinity-canary-behavior: legacy"),
    ));
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80)
                + &endpoints("shop", "web", &[primary.addr], &[])
                + "---\n"
                + &service("shop", "canary", 80)
                + &endpoints("shop", "canary", &[canary_backend.addr], &[]),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    // A session begun on the primary.
    let first = send(&env, "sticky.example", "/", &[]).await;
    assert_eq!(first.served_by(), "primary");
    let to_primary = cookie_pair(&first);
    assert!(!to_primary.is_empty());
    // A session begun on the canary (by the header): the primary's cookie, naming the canary.
    let first = send(&env, "sticky.example", "/", &[("x-canary", "always")]).await;
    assert_eq!(first.served_by(), "canary");
    let to_canary = cookie_pair(&first);
    assert!(to_canary.starts_with("INGRESSCOOKIE="), "{to_canary:?}");
    assert_ne!(to_canary, to_primary);
    for _ in 0..5 {
        let r = send(
            &env,
            "sticky.example",
            "/",
            &[("x-canary", "always"), ("cookie", &to_primary)],
        )
        .await;
        assert_eq!(r.served_by(), "primary", "pinned to the primary");
        let r = send(&env, "sticky.example", "/", &[("cookie", &to_canary)]).await;
        assert_eq!(r.served_by(), "canary", "pinned to the canary");
        assert_eq!(r.header("set-cookie"), "");
        let r = send(
            &env,
            "sticky.example",
            "/",
            &[("x-canary", "never"), ("cookie", &to_canary)],
        )
        .await;
        assert_eq!(r.served_by(), "canary", "the pin outranks the header");
    }
    // legacy: the canary keeps its own (no) affinity: no cookie from it…
    let first = send(&env, "legacy.example", "/", &[("x-canary", "always")]).await;
    assert_eq!(first.served_by(), "canary");
    assert_eq!(first.header("set-cookie"), "");
    // …and the primary's cookie still holds against the header.
    let first = send(&env, "legacy.example", "/", &[]).await;
    let cookie = cookie_pair(&first);
    assert!(!cookie.is_empty());
    let r = send(
        &env,
        "legacy.example",
        "/",
        &[("x-canary", "always"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.served_by(), "primary");
    env.shutdown().await;
}
