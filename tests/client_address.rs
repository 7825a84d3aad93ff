//! The client address (issue: ingress-nginx compatibility II, client address): the peer's,
//! unless the ConfigMap trusts the peer (`proxy-real-ip-cidr`) and asks for forwarded headers
//! (`use-forwarded-headers`, `enable-real-ip`); then nginx's realip walk over
//! X-Forwarded-For. A forged X-Forwarded-For from an untrusted peer never becomes the client
//! address, and never reaches the upstream as X-Forwarded-For (it goes as
//! X-Original-Forwarded-For, as ingress-nginx sends it).

mod support;

use std::time::Duration;

use http::StatusCode;
use support::Env;
use support::client::Reply;
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

async fn start(backend: &support::Backend, data: &str) -> Env {
    let (secret, _) = tls_secret("shop", "cert", &["a.example"]);
    let ing = ingress_full(
        "shop",
        "web",
        &[("a.example", vec![prefix("/", "web", 80)])],
        &[(&["a.example"], "cert")],
        "",
        None,
    );
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("secret.yaml", secret),
        ("ing.yaml", ing),
        ("configmap.yaml", configmap(data)),
    ];
    Env::start_with(&files, &["--configmap", "ingress/portico"]).await
}

/// A plain-HTTP GET from the loopback address `from`, with extra fields.
async fn get_from(env: &Env, from: &str, fields: &[(&str, &str)]) -> Reply {
    support::client::get_from(env.http(), from, "a.example", "/", fields).await
}

/// What the upstream saw: X-Forwarded-For, X-Real-IP, X-Original-Forwarded-For,
/// X-Forwarded-Proto.
fn seen(reply: &Reply) -> [String; 4] {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let h = &reply.json()["headers"];
    let get = |name: &str| h[name].as_str().unwrap_or("").to_string();
    [
        get("x-forwarded-for"),
        get("x-real-ip"),
        get("x-original-forwarded-for"),
        get("x-forwarded-proto"),
    ]
}

/// The attack: a client forges X-Forwarded-For to pass as another address. By default
/// (nobody trusted) the upstream gets the peer as X-Forwarded-For and X-Real-IP; the forged
/// list only as X-Original-Forwarded-For.
#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_is_not_the_client() {
    timeout(LIMIT, forged()).await.expect("bounded");
}

async fn forged() {
    let backend = support::Backend::start("web").await;
    let env = start(&backend, "ssl-redirect: \"false\"").await;
    let forged = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2"),
    ];
    let [xff, real, original, proto] = seen(&get_from(&env, "127.0.0.1", &forged).await);
    assert_eq!(
        xff, "127.0.0.1",
        "the forged list is not passed on as the client's"
    );
    assert_eq!(real, "127.0.0.1");
    assert_eq!(original, "10.0.0.1, 10.0.0.2");
    assert_eq!(proto, "http");
    // Even with use-forwarded-headers, until proxy-real-ip-cidr names the peer (unlike
    // ingress-nginx, whose default 0.0.0.0/0 trusts everyone).
    env.apply(
        "configmap.yaml",
        &configmap("use-forwarded-headers: \"true\", ssl-redirect: \"false\""),
    )
    .await;
    let fields = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
    ];
    let [xff, real, _, proto] = seen(&get_from(&env, "127.0.0.1", &fields).await);
    assert_eq!((xff.as_str(), real.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(proto, "http");
    env.shutdown().await;
}

#[tokio::test]
async fn a_trusted_peer_s_forwarded_fields_are_believed() {
    timeout(LIMIT, trusted()).await.expect("bounded");
}

async fn trusted() {
    let backend = support::Backend::start("web").await;
    let env = start(
        &backend,
        "use-forwarded-headers: \"true\", proxy-real-ip-cidr: \"127.0.0.2/32\", ssl-redirect: \"false\"",
    )
    .await;
    let fields = [
        ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ];
    // From the trusted 127.0.0.2: the rightmost untrusted address is the client.
    let [xff, real, original, proto] = seen(&get_from(&env, "127.0.0.2", &fields).await);
    assert_eq!(xff, "203.0.113.7");
    assert_eq!(real, "203.0.113.7");
    assert_eq!(original, "198.51.100.1, 203.0.113.7");
    assert_eq!(proto, "https");
    // From 127.0.0.1 (not trusted): the peer, and its own scheme.
    let [xff, real, _, proto] = seen(&get_from(&env, "127.0.0.1", &fields).await);
    assert_eq!((xff.as_str(), real.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(proto, "http");
    // Recursive: trusted addresses in the list are skipped, right to left.
    env.apply(
        "configmap.yaml",
        &configmap(
            "use-forwarded-headers: \"true\", proxy-real-ip-cidr: \"127.0.0.2/32, 203.0.113.0/24\"",
        ),
    )
    .await;
    let [xff, real, _, _] = seen(&get_from(&env, "127.0.0.2", &fields).await);
    assert_eq!(
        (xff.as_str(), real.as_str()),
        ("198.51.100.1", "198.51.100.1")
    );
    // An entry that is not an address stops the walk at what was found so far.
    let garbage = [
        ("x-forwarded-for", "198.51.100.1, not-an-ip, 203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ];
    let [_, real, _, _] = seen(&get_from(&env, "127.0.0.2", &garbage).await);
    assert_eq!(real, "203.0.113.7");
    // A huge list: a clear answer, no crash.
    let long: String = (0..4000)
        .map(|i| format!("10.{}.{}.1", i / 250, i % 250))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = [
        ("x-forwarded-for", long.as_str()),
        ("x-forwarded-proto", "https"),
    ];
    let [_, real, _, _] = seen(&get_from(&env, "127.0.0.2", &fields).await);
    assert_eq!(real, "10.15.249.1");
    // HTTPS redirect: a trusted peer's X-Forwarded-Proto: https is not redirected (the load
    // balancer terminated TLS); an untrusted one's is.
    let https = [("x-forwarded-proto", "https")];
    let reply = get_from(&env, "127.0.0.2", &https).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = get_from(&env, "127.0.0.1", &https).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    // The redirect goes to a trusted peer's X-Forwarded-Host, its port dropped (ingress-nginx's
    // e2e "should not use ports or X-Forwarded-Host during the HTTP to HTTPS redirection");
    // an untrusted peer's is ignored.
    let forwarded = [("x-forwarded-host", "example.com:80")];
    let reply = get_from(&env, "127.0.0.2", &forwarded).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    // (The HTTPS listener's port is in the Location: this one is not 443.)
    let port = env.https().port();
    assert_eq!(
        reply.header("location"),
        format!("https://example.com:{port}")
    );
    let reply = get_from(&env, "127.0.0.1", &forwarded).await;
    assert_eq!(
        reply.header("location"),
        format!("https://a.example:{port}")
    );
    // compute-full-forwarded-for alone does nothing (ingress-nginx needs use-forwarded-headers
    // too): a client's forged list never reaches the endpoint.
    env.apply(
        "configmap.yaml",
        &configmap("compute-full-forwarded-for: \"true\", ssl-redirect: \"false\""),
    )
    .await;
    let fields = [("x-forwarded-for", "10.0.0.1")];
    let [xff, real, original, _] = seen(&get_from(&env, "127.0.0.1", &fields).await);
    assert_eq!((xff.as_str(), real.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(original, "10.0.0.1");
    // With it, from a trusted peer: the list, then the peer; from another peer: the peer.
    env.apply(
        "configmap.yaml",
        &configmap(
            "compute-full-forwarded-for: \"true\", use-forwarded-headers: \"true\", proxy-real-ip-cidr: \"127.0.0.2/32\", ssl-redirect: \"false\"",
        ),
    )
    .await;
    let [xff, real, _, _] = seen(&get_from(&env, "127.0.0.2", &fields).await);
    assert_eq!(
        (xff.as_str(), real.as_str()),
        ("10.0.0.1, 127.0.0.2", "10.0.0.1")
    );
    let [xff, real, _, _] = seen(&get_from(&env, "127.0.0.1", &fields).await);
    assert_eq!((xff.as_str(), real.as_str()), ("127.0.0.1", "127.0.0.1"));
    // forwarded-for-header names the field a trusted peer's client address comes in; the
    // client's field of that name goes as X-Original-Forwarded-For (ingress-nginx's
    // `$http_<forwarded-for-header>`).
    env.apply(
        "configmap.yaml",
        &configmap(
            "use-forwarded-headers: \"true\", forwarded-for-header: CF-Connecting-IP, proxy-real-ip-cidr: \"127.0.0.2/32\", ssl-redirect: \"false\"",
        ),
    )
    .await;
    let fields = [
        ("cf-connecting-ip", "198.51.100.9"),
        ("x-forwarded-for", "10.0.0.1"),
    ];
    let [xff, real, original, _] = seen(&get_from(&env, "127.0.0.2", &fields).await);
    assert_eq!(
        (xff.as_str(), real.as_str()),
        ("198.51.100.9", "198.51.100.9")
    );
    assert_eq!(original, "198.51.100.9");
    env.shutdown().await;
}
