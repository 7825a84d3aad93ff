//! Access lists (issue: ingress-nginx compatibility II, access lists), over real sockets with
//! clients bound to distinct loopback addresses: `whitelist-source-range` /
//! `allowlist-source-range` and `denylist-source-range` (deny before allow, 403; a list with
//! an entry that is not an address or a range denies the location with 503; the annotation
//! replaces the ConfigMap's list of the same kind), the ConfigMap's `whitelist-source-range`,
//! `denylist-source-range`, `block-cidrs`, `block-user-agents` and `block-referers`, all
//! judged on the client address (a forged X-Forwarded-For from an untrusted peer changes
//! nothing). A refused request never reaches the upstream.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use support::Env;
use support::client::Reply;
use support::manifests::{class, endpoints, service};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

/// One Ingress on a.example with one path and these annotations (short names).
fn ing(name: &str, path: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    support::manifests::nginx_ingress(name, "a.example", path, svc, annotations)
}

/// The Ingresses of these tests: `/` has no annotation; the others each guard one path.
fn files(web: SocketAddr, guarded: SocketAddr, data: &str) -> Vec<(&'static str, String)> {
    vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80)
                + &endpoints("shop", "web", &[web], &[])
                + "---\n"
                + &service("shop", "guarded", 80)
                + &endpoints("shop", "guarded", &[guarded], &[]),
        ),
        ("open.yaml", ing("open", "/", "web", &[])),
        (
            "allow.yaml",
            ing(
                "allow",
                "/allow",
                "web",
                &[("allowlist-source-range", "127.0.0.2/32")],
            ),
        ),
        (
            "both.yaml",
            ing(
                "both",
                "/both",
                "web",
                &[
                    ("whitelist-source-range", "127.0.0.0/8"),
                    ("denylist-source-range", "127.0.0.2"),
                ],
            ),
        ),
        (
            "broken.yaml",
            ing(
                "broken",
                "/broken",
                "web",
                &[("whitelist-source-range", "127.0.0.1, not-a-range")],
            ),
        ),
        (
            "names.yaml",
            ing(
                "names",
                "/names",
                "web",
                &[
                    ("allowlist-source-range", "127.0.0.3"),
                    ("whitelist-source-range", "127.0.0.2"),
                ],
            ),
        ),
        (
            "guarded.yaml",
            ing(
                "guarded",
                "/guarded",
                "guarded",
                &[("whitelist-source-range", "127.0.0.2")],
            ),
        ),
        ("configmap.yaml", configmap(data)),
    ]
}

/// A plain-HTTP GET of `path` on a.example from the loopback address `from`.
async fn get_from(env: &Env, from: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    support::client::get_from(env.http(), from, "a.example", path, fields).await
}

async fn status(env: &Env, from: &str, path: &str) -> StatusCode {
    get_from(env, from, path, &[]).await.status
}

/// Asserts the status of `path` from each address.
async fn expect(env: &Env, path: &str, want: &[(&str, StatusCode)]) {
    for (from, code) in want {
        assert_eq!(status(env, from, path).await, *code, "{path} from {from}");
    }
}

const OK: StatusCode = StatusCode::OK;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

#[tokio::test]
async fn source_ranges_admit_and_refuse_by_the_client_address() {
    timeout(LIMIT, source_ranges()).await.expect("bounded");
}

async fn source_ranges() {
    let web = support::Backend::start("web").await;
    let guarded = support::raw::Upstream::start(|_conn| async {}).await;
    let env = Env::start_with(
        &files(web.addr, guarded.addr, "ssl-redirect: \"false\""),
        &["--configmap", "ingress/portico"],
    )
    .await;
    expect(&env, "/", &[("127.0.0.1", OK), ("127.0.0.2", OK)]).await;
    // An allowlist: only its addresses, 403 for the others.
    expect(
        &env,
        "/allow",
        &[("127.0.0.2", OK), ("127.0.0.1", FORBIDDEN)],
    )
    .await;
    expect(&env, "/allow/deeper", &[("127.0.0.3", FORBIDDEN)]).await;
    // Deny before allow.
    let both = [
        ("127.0.0.1", OK),
        ("127.0.0.2", FORBIDDEN),
        ("127.0.0.3", OK),
    ];
    expect(&env, "/both", &both).await;
    // An entry that is not an address or a range: the location is denied, for everyone.
    let broken = [("127.0.0.1", UNAVAILABLE), ("127.0.0.2", UNAVAILABLE)];
    expect(&env, "/broken", &broken).await;
    // allowlist-source-range wins over its older name.
    expect(
        &env,
        "/names",
        &[("127.0.0.3", OK), ("127.0.0.2", FORBIDDEN)],
    )
    .await;
    // A refused request never reaches the upstream.
    for _ in 0..3 {
        assert_eq!(status(&env, "127.0.0.1", "/guarded").await, FORBIDDEN);
    }
    assert_eq!(guarded.accepted.load(Ordering::SeqCst), 0);
    // A forged X-Forwarded-For from an untrusted peer is not the client address.
    let forged = [("x-forwarded-for", "127.0.0.2")];
    let reply = get_from(&env, "127.0.0.1", "/allow", &forged).await;
    assert_eq!(reply.status, FORBIDDEN);
    // Even with forwarded headers on, until proxy-real-ip-cidr trusts the peer.
    env.apply(
        "configmap.yaml",
        &configmap("use-forwarded-headers: \"true\", ssl-redirect: \"false\""),
    )
    .await;
    let reply = get_from(&env, "127.0.0.1", "/allow", &forged).await;
    assert_eq!(reply.status, FORBIDDEN);
    // A trusted peer names the client.
    env.apply(
        "configmap.yaml",
        &configmap(
            "use-forwarded-headers: \"true\", proxy-real-ip-cidr: \"127.0.0.1\", ssl-redirect: \"false\"",
        ),
    )
    .await;
    let reply = get_from(&env, "127.0.0.1", "/allow", &forged).await;
    assert_eq!(reply.status, OK);
    let other = [("x-forwarded-for", "198.51.100.7")];
    let reply = get_from(&env, "127.0.0.2", "/allow", &other).await;
    assert_eq!(
        reply.status, OK,
        "127.0.0.2 is not trusted: its own address"
    );
    let reply = get_from(&env, "127.0.0.1", "/allow", &other).await;
    assert_eq!(reply.status, FORBIDDEN);
    env.shutdown().await;
}

#[tokio::test]
async fn the_configmap_lists_apply_where_no_annotation_replaces_them() {
    timeout(LIMIT, global_lists()).await.expect("bounded");
}

async fn global_lists() {
    let web = support::Backend::start("web").await;
    let guarded = support::Backend::start("guarded").await;
    let env = Env::start_with(
        &files(
            web.addr,
            guarded.addr,
            "whitelist-source-range: \"127.0.0.2, 127.0.0.4/32\", ssl-redirect: \"false\"",
        ),
        &["--configmap", "ingress/portico"],
    )
    .await;
    // The global allowlist guards the path without annotations.
    let open = [
        ("127.0.0.1", FORBIDDEN),
        ("127.0.0.2", OK),
        ("127.0.0.4", OK),
    ];
    expect(&env, "/", &open).await;
    // The annotation replaces it.
    let both = [
        ("127.0.0.1", OK),
        ("127.0.0.2", FORBIDDEN),
        ("127.0.0.4", OK),
    ];
    expect(&env, "/both", &both).await;
    // The global denylist: the allowlist annotation does not replace it.
    env.apply(
        "configmap.yaml",
        &configmap("denylist-source-range: \"127.0.0.2\", ssl-redirect: \"false\""),
    )
    .await;
    expect(&env, "/", &[("127.0.0.1", OK), ("127.0.0.2", FORBIDDEN)]).await;
    expect(&env, "/allow", &[("127.0.0.2", FORBIDDEN)]).await;
    expect(&env, "/names", &[("127.0.0.3", OK)]).await;
    // A denylist annotation replaces the global one.
    expect(
        &env,
        "/both",
        &[("127.0.0.2", FORBIDDEN), ("127.0.0.3", OK)],
    )
    .await;
    // block-cidrs: refused everywhere, an allowlisted path included.
    env.apply(
        "configmap.yaml",
        &configmap("block-cidrs: \"127.0.0.3/32, 10.0.0.0/8\", ssl-redirect: \"false\""),
    )
    .await;
    expect(&env, "/", &[("127.0.0.1", OK), ("127.0.0.3", FORBIDDEN)]).await;
    expect(&env, "/names", &[("127.0.0.3", FORBIDDEN)]).await;
    // An invalid global list fails closed: every path without its own list answers 503.
    env.apply(
        "configmap.yaml",
        &configmap("whitelist-source-range: \"127.0.0.1, bogus\", ssl-redirect: \"false\""),
    )
    .await;
    expect(&env, "/", &[("127.0.0.1", UNAVAILABLE)]).await;
    expect(&env, "/allow", &[("127.0.0.2", OK)]).await;
    env.shutdown().await;
}

#[tokio::test]
async fn blocked_user_agents_and_referers_get_403() {
    timeout(LIMIT, blocked_fields()).await.expect("bounded");
}

async fn blocked_fields() {
    let web = support::Backend::start("web").await;
    let guarded = support::Backend::start("guarded").await;
    let data = r#"block-user-agents: "~*bot, Evil/1.0, ~^Mozilla/4\\.0\\ \\(", block-referers: "~*\\.spam\\.example, http://bad.example/", ssl-redirect: "false""#;
    let env = Env::start_with(
        &files(web.addr, guarded.addr, data),
        &["--configmap", "ingress/portico"],
    )
    .await;
    let cases: &[(&str, &str, StatusCode)] = &[
        ("user-agent", "curl/8.0", OK),
        ("user-agent", "GoogleBOT/2.1", FORBIDDEN),
        // A string is the whole field, in any case.
        ("user-agent", "evil/1.0", FORBIDDEN),
        ("user-agent", "Evil/1.01", OK),
        // `~` is case-sensitive.
        ("user-agent", "Mozilla/4.0 (compatible)", FORBIDDEN),
        ("user-agent", "mozilla/4.0 (compatible)", OK),
        ("referer", "https://www.SPAM.example/x", FORBIDDEN),
        ("referer", "http://bad.example/", FORBIDDEN),
        ("referer", "http://bad.example/page", OK),
    ];
    for (field, value, want) in cases {
        let reply = get_from(&env, "127.0.0.1", "/", &[(field, value)]).await;
        assert_eq!(reply.status, *want, "{field}: {value}");
    }
    // Every path, one with an allowlist included.
    let reply = get_from(&env, "127.0.0.2", "/allow", &[("user-agent", "a bot")]).await;
    assert_eq!(reply.status, FORBIDDEN);
    // No User-Agent at all is not blocked by these.
    assert_eq!(status(&env, "127.0.0.1", "/").await, OK);
    env.shutdown().await;
}

/// nginx matches locations on the decoded path, where an encoded slash (`%2F`) separates
/// segments: `/allow%2Fsecret` is under `location /allow`, as `/%2fallow` is `/allow`. Portico
/// routed them by the encoded form to the open `/` route, and a backend that decodes `%2F`
/// (WSGI's PATH_INFO, many static servers) served the guarded path unguarded. The path goes
/// upstream as it came (nginx's `proxy_pass` without a URI sends the request's).
#[tokio::test]
async fn an_encoded_slash_does_not_get_around_a_guarded_path() {
    timeout(LIMIT, encoded_slash()).await.expect("bounded");
}

async fn encoded_slash() {
    let web = support::Backend::start("web").await;
    let guarded = support::raw::Upstream::start(|_conn| async {}).await;
    let env = Env::start_with(
        &files(web.addr, guarded.addr, "ssl-redirect: \"false\""),
        &["--configmap", "ingress/portico"],
    )
    .await;
    for path in [
        "/allow%2Fsecret",
        "/allow%2fsecret/x",
        "/%2fallow",
        "/%2Fallow/x",
        "/allow%2F",
        "/x/..%2F",
    ] {
        let want = if path == "/x/..%2F" {
            StatusCode::BAD_REQUEST
        } else {
            FORBIDDEN
        };
        assert_eq!(status(&env, "127.0.0.1", path).await, want, "{path}");
    }
    // Allowed, it reaches the endpoint with the encoding kept.
    let reply = get_from(&env, "127.0.0.2", "/allow%2Fsecret", &[]).await;
    assert_eq!(reply.status, OK);
    assert_eq!(reply.json()["path"], "/allow%2Fsecret");
    // A path that only looks like one: still the open route.
    assert_eq!(status(&env, "127.0.0.1", "/allowance%2Fx").await, OK);
    env.shutdown().await;
}
