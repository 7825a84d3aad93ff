//! ingress-nginx's canary Ingresses over real sockets, with the rules of its docs and e2e
//! tests (test/e2e/annotations/canary.go): the canary joins the primary rule of the same host
//! and path; header (`always`, `never`, an exact value, a pattern), then cookie, then weight;
//! `never` stops at once; a canary alone is a 404. And `upstream-hash-by`.

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use support::client::{Reply, get, h1};
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);
const N: &str = "nginx.ingress.kubernetes.io";

fn pair(host: &str, canary_annotations: &str) -> Vec<String> {
    let primary = ingress_full(
        "shop",
        &format!("{}-primary", host.split('.').next().unwrap()),
        &[(host, vec![prefix("/", "web", 80)])],
        &[],
        "",
        None,
    );
    vec![primary, canary(host, canary_annotations)]
}

fn canary(host: &str, annotations: &str) -> String {
    ingress_full(
        "shop",
        &format!("{}-canary", host.split('.').next().unwrap()),
        &[(host, vec![prefix("/", "canary", 80)])],
        &[],
        &format!("{N}/canary: \"true\", {annotations}"),
        None,
    )
}

async fn send(env: &Env, host: &str, fields: &[(&str, &str)]) -> Reply {
    let mut req = Request::get("/").header("host", host);
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    h1(env.http(), req.body(Default::default()).unwrap()).await
}

async fn served(env: &Env, host: &str, fields: &[(&str, &str)]) -> String {
    let reply = send(env, host, fields).await;
    assert_eq!(reply.status, StatusCode::OK, "{host} {fields:?}");
    reply.served_by()
}

#[tokio::test]
async fn canary_rules_follow_ingress_nginx() {
    timeout(LIMIT, rules()).await.expect("bounded");
}

async fn rules() {
    let primary = Backend::start("primary").await;
    let canary_backend = Backend::start("canary").await;
    let mut ingresses = Vec::new();
    ingresses.extend(pair(
        "h.example",
        &format!("{N}/canary-by-header: X-Canary, {N}/canary-by-cookie: canary_cookie"),
    ));
    ingresses.extend(pair(
        "v.example",
        &format!("{N}/canary-by-header: x_version, {N}/canary-by-header-value: v2, {N}/canary-by-cookie: c"),
    ));
    ingresses.extend(pair(
        "p.example",
        &format!("{N}/canary-by-header: X-Version, {N}/canary-by-header-pattern: \"^v[3-9]$\""),
    ));
    ingresses.extend(pair("all.example", &format!("{N}/canary-weight: \"100\"")));
    ingresses.extend(pair(
        "total.example",
        &format!("{N}/canary-weight: \"1000\", {N}/canary-weight-total: \"1000\""),
    ));
    ingresses.extend(pair("half.example", &format!("{N}/canary-weight: \"50\"")));
    ingresses.push(canary(
        "alone.example",
        &format!("{N}/canary-weight: \"100\""),
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

    // Header: always, never, anything else falls through (weight 0: the primary).
    assert_eq!(served(&env, "h.example", &[]).await, "primary");
    assert_eq!(
        served(&env, "h.example", &[("x-canary", "always")]).await,
        "canary"
    );
    assert_eq!(
        served(&env, "h.example", &[("x-canary", "yes")]).await,
        "primary"
    );
    // Cookie, after the header: always / never.
    let cookie = ("cookie", "a=b; canary_cookie=always");
    assert_eq!(served(&env, "h.example", &[cookie]).await, "canary");
    assert_eq!(
        served(&env, "h.example", &[("x-canary", "never"), cookie]).await,
        "primary",
        "never stops at once"
    );
    assert_eq!(
        served(&env, "h.example", &[("x-canary", "other"), cookie]).await,
        "canary",
        "a header that decides nothing falls through to the cookie"
    );
    assert_eq!(
        served(&env, "h.example", &[("cookie", "canary_cookie=never")]).await,
        "primary"
    );
    // An exact value ('_' in the name is '-', as nginx's $http_x_version).
    assert_eq!(
        served(&env, "v.example", &[("x-version", "v2")]).await,
        "canary"
    );
    assert_eq!(
        served(&env, "v.example", &[("x-version", "V2")]).await,
        "primary"
    );
    assert_eq!(
        served(
            &env,
            "v.example",
            &[("x-version", "v1"), ("cookie", "c=always")]
        )
        .await,
        "canary",
        "a value mismatch falls through"
    );
    assert_eq!(
        served(&env, "v.example", &[("x-version", "always")]).await,
        "primary"
    );
    // A pattern.
    assert_eq!(
        served(&env, "p.example", &[("x-version", "v4")]).await,
        "canary"
    );
    assert_eq!(
        served(&env, "p.example", &[("x-version", "v2")]).await,
        "primary"
    );
    // Weight: all of it, with a total above 100, half of it.
    for _ in 0..20 {
        assert_eq!(served(&env, "all.example", &[]).await, "canary");
        assert_eq!(served(&env, "total.example", &[]).await, "canary");
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(served(&env, "half.example", &[]).await);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "weight 50 sends to both: {seen:?}");
    // A canary alone is a 404, with a warning.
    let reply = send(&env, "alone.example", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let warned = dump["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["object"]["name"] == "alone-canary"
            && d["reason"].as_str().unwrap().contains("no primary")
    });
    assert!(warned, "{:#}", dump["diagnostics"]);
    env.shutdown().await;
}

/// `upstream-hash-by`: requests with the same key go to the same endpoint; different keys
/// spread over the endpoints.
#[tokio::test]
async fn upstream_hash_by_keeps_a_key_on_one_endpoint() {
    timeout(LIMIT, hash_by()).await.expect("bounded");
}

async fn hash_by() {
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    let ing = ingress_full(
        "shop",
        "hashed",
        &[("hash.example", vec![prefix("/", "web", 80)])],
        &[],
        &format!("{N}/upstream-hash-by: $arg_user"),
        None,
    );
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[one.addr, two.addr], &[]),
        ),
        ("ing.yaml", ing),
    ];
    let env = Env::start(&files).await;
    let by_user = hashed_by_user(&env, "hash.example").await;
    let endpoints: std::collections::BTreeSet<_> = by_user.values().collect();
    assert_eq!(endpoints.len(), 2, "20 keys over 2 endpoints: {by_user:?}");
    env.shutdown().await;
}

/// Which backend served each of 20 users (`?user=N`), over three rounds: asserts that a user
/// never moves.
async fn hashed_by_user(env: &Env, host: &str) -> std::collections::BTreeMap<u32, String> {
    let mut by_user = std::collections::BTreeMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let reply = h1(env.http(), get(host, &format!("/?user={user}&r={round}"))).await;
            assert_eq!(reply.status, StatusCode::OK);
            let now = reply.served_by();
            if let Some(was) = by_user.insert(user, now.clone()) {
                assert_eq!(was, now, "user {user} moved");
            }
        }
    }
    by_user
}

/// `service-upstream`: one endpoint per request, no other tried after a failed connect (as
/// nginx's single ClusterIP upstream); without it a dead endpoint is passed over.
#[tokio::test]
async fn service_upstream_tries_one_endpoint() {
    timeout(LIMIT, service_upstream()).await.expect("bounded");
}

async fn service_upstream() {
    let alive = Backend::start("alive").await;
    // A port nothing listens on any more: connecting is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ing = |name: &str, host: &str, annotations: &str| {
        ingress_full(
            "shop",
            name,
            &[(host, vec![prefix("/", "web", 80)])],
            &[],
            annotations,
            None,
        )
    };
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[alive.addr, dead], &[]),
        ),
        (
            "ing.yaml",
            [
                ing("plain", "plain.example", ""),
                ing(
                    "svc",
                    "svc.example",
                    &format!("{N}/service-upstream: \"true\""),
                ),
            ]
            .join("---\n"),
        ),
    ];
    let env = Env::start(&files).await;
    for _ in 0..6 {
        let reply = h1(env.http(), get("plain.example", "/")).await;
        assert_eq!(
            reply.served_by(),
            "alive",
            "the dead endpoint is passed over"
        );
    }
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..6 {
        statuses.insert(h1(env.http(), get("svc.example", "/")).await.status);
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    env.shutdown().await;
}

/// `default-backend`: a Service of the namespace serves when the route's has no ready
/// endpoint.
#[tokio::test]
async fn default_backend_serves_when_no_endpoint_is_ready() {
    timeout(LIMIT, default_backend()).await.expect("bounded");
}

async fn default_backend() {
    let fallback = Backend::start("fallback").await;
    let web = Backend::start("web").await;
    let ing = ingress_full(
        "shop",
        "with-fallback",
        &[("f.example", vec![prefix("/", "web", 80)])],
        &[],
        &format!("{N}/default-backend: errors"),
        None,
    );
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", service("shop", "web", 80)),
        (
            "errors.yaml",
            service("shop", "errors", 8080) + &endpoints("shop", "errors", &[fallback.addr], &[]),
        ),
        ("ing.yaml", ing),
    ];
    let env = Env::start(&files).await;
    let reply = h1(env.http(), get("f.example", "/x?q=1")).await;
    assert_eq!(
        reply.served_by(),
        "fallback",
        "no endpoint: the default backend"
    );
    // With the fields of ingress-nginx's `custom-default-backend-` location (X-Code 503), the
    // route's path kept (test/e2e/annotations/default_backend.go).
    let seen = reply.json();
    assert_eq!(seen["path"], "/x?q=1", "{seen:#}");
    let h = &seen["headers"];
    assert_eq!(h["x-code"], "503", "{seen:#}");
    assert_eq!(h["x-namespace"], "shop");
    assert_eq!(h["x-ingress-name"], "with-fallback");
    assert_eq!(h["x-service-name"], "web");
    assert_eq!(h["x-service-port"], "80");
    assert_eq!(h["x-original-uri"], "/x?q=1");
    assert!(h["x-request-id"].as_str().is_some_and(|id| !id.is_empty()));
    let reply = h1(env.http(), get("f.example", "/x")).await;
    assert_eq!(reply.served_by(), "fallback");
    env.apply("eps.yaml", &endpoints("shop", "web", &[web.addr], &[]))
        .await;
    let reply = h1(env.http(), get("f.example", "/x")).await;
    assert_eq!(reply.served_by(), "web");
    env.shutdown().await;
}

/// A backend without a ready endpoint has no balancer in ingress-nginx (balancer.lua
/// `sync_backend`, `route_to_alternative_balancer`): a canary that has none takes none of the
/// requests its rules select, and a primary that has none answers 503 whatever the canary
/// rules say (its balancer is looked up first).
#[tokio::test]
async fn a_canary_or_primary_without_endpoints() {
    timeout(LIMIT, without_endpoints()).await.expect("bounded");
}

async fn without_endpoints() {
    let primary = Backend::start("primary").await;
    let canary_backend = Backend::start("canary").await;
    let one = |name: &str, host: &str, service: &str, annotations: &str| {
        ingress_full(
            "shop",
            name,
            &[(host, vec![prefix("/", service, 80)])],
            &[],
            annotations,
            None,
        )
    };
    let weight = format!("{N}/canary: \"true\", {N}/canary-weight: \"100\"");
    let ingresses = [
        one("dark-primary", "dark.example", "web", ""),
        one("dark-canary", "dark.example", "dark", &weight),
        one("empty-primary", "empty.example", "empty", ""),
        one("empty-canary", "empty.example", "canary", &weight),
    ];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80)
                + &endpoints("shop", "web", &[primary.addr], &[])
                + "---\n"
                + &service("shop", "canary", 80)
                + &endpoints("shop", "canary", &[canary_backend.addr], &[])
                + "---\n"
                + &service("shop", "dark", 80)
                + "---\n"
                + &service("shop", "empty", 80),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    for _ in 0..10 {
        assert_eq!(served(&env, "dark.example", &[]).await, "primary");
        let reply = send(&env, "empty.example", &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    }
    // Once the canary has an endpoint, its weight takes the requests.
    let ready = endpoints("shop", "dark", &[canary_backend.addr], &[]);
    env.apply("dark-eps.yaml", &ready).await;
    assert_eq!(served(&env, "dark.example", &[]).await, "canary");
    env.shutdown().await;
}

/// ingress-nginx honours `upstream-hash-by` on a canary Ingress (its own balancer): requests
/// the canary takes are hashed by the canary's key over the canary's endpoints.
#[tokio::test]
async fn a_canary_hashes_by_its_own_key() {
    timeout(LIMIT, canary_hash()).await.expect("bounded");
}

async fn canary_hash() {
    let primary = Backend::start("primary").await;
    let (one, two) = (Backend::start("c-one").await, Backend::start("c-two").await);
    let ingresses = [
        ingress_full(
            "shop",
            "ch-primary",
            &[("ch.example", vec![prefix("/", "web", 80)])],
            &[],
            "",
            None,
        ),
        ingress_full(
            "shop",
            "ch-canary",
            &[("ch.example", vec![prefix("/", "canary", 80)])],
            &[],
            &format!(
                "{N}/canary: \"true\", {N}/canary-weight: \"100\", {N}/upstream-hash-by: $arg_user"
            ),
            None,
        ),
    ];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80)
                + &endpoints("shop", "web", &[primary.addr], &[])
                + "---\n"
                + &service("shop", "canary", 80)
                + &endpoints("shop", "canary", &[one.addr, two.addr], &[]),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    let by_user = hashed_by_user(&env, "ch.example").await;
    for (user, by) in &by_user {
        assert!(by.starts_with("c-"), "the canary serves user {user}: {by}");
    }
    let endpoints: std::collections::BTreeSet<_> = by_user.values().collect();
    assert_eq!(endpoints.len(), 2, "20 keys over 2 endpoints: {by_user:?}");
    env.shutdown().await;
}
