//! Rate and connection limits (issue: ingress-nginx compatibility II, limits) over real
//! sockets: `limit-rpm`/`limit-rps` with nginx's nodelay burst (`limit-burst-multiplier`,
//! default 5), one zone per Ingress keyed by client address (clients bound to distinct
//! loopback addresses), `limit-whitelist`, `limit-connections`, and the ConfigMap's
//! `limit-req-status-code`/`limit-conn-status-code` (default 503). A limited request reaches
//! neither the endpoint nor basic authentication.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::Env;
use support::client::{Reply, h1_over};
use support::manifests::{class, endpoints, service};
use tokio::net::TcpSocket;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);

fn ing(name: &str, path: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    support::manifests::nginx_ingress(name, "a.example", path, svc, annotations)
}

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

async fn get(env: &Env, from: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    support::client::get_from(env.http(), from, "a.example", path, fields).await
}

/// The statuses of `n` requests in a row.
async fn statuses(env: &Env, from: &str, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(env, from, path, &[]).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn limits_answer_as_ingress_nginx() {
    timeout(LIMIT, limits()).await.expect("bounded");
}

async fn limits() {
    let web = support::Backend::start("web").await;
    // An endpoint that answers after 1 s, counting connections.
    let slow = support::raw::Upstream::start(|mut conn| async move {
        for _ in 0..100 {
            if conn.request().await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
            if !conn.send(&support::raw::ok(b"slow")).await {
                return;
            }
        }
    })
    .await;
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80)
                + &endpoints("shop", "web", &[web.addr], &[])
                + "---\n"
                + &service("shop", "slow", 80)
                + &endpoints("shop", "slow", &[slow.addr], &[]),
        ),
        // 1 per minute: nothing drains during the test, so the counts are exact.
        (
            "rate.yaml",
            ing(
                "rate",
                "/rate",
                "web",
                &[("limit-rpm", "1"), ("limit-whitelist", "127.0.0.3/32")],
            ),
        ),
        (
            "burst.yaml",
            ing(
                "burst",
                "/burst",
                "web",
                &[("limit-rpm", "1"), ("limit-burst-multiplier", "2")],
            ),
        ),
        (
            "conn.yaml",
            ing("conn", "/conn", "slow", &[("limit-connections", "1")]),
        ),
        (
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: shop}\ntype: Opaque\nstringData: {auth: \"u:{PLAIN}p\"}\n".to_string(),
        ),
        (
            "auth.yaml",
            ing(
                "auth",
                "/auth",
                "web",
                &[
                    ("limit-rpm", "1"),
                    ("limit-burst-multiplier", "1"),
                    ("auth-type", "basic"),
                    ("auth-secret", "users"),
                ],
            ),
        ),
        ("configmap.yaml", configmap("ssl-redirect: \"false\"")),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    // The first request and a burst of 5 (1 × 5) pass at once, then 503.
    let want = [200, 200, 200, 200, 200, 200, 503, 503];
    assert_eq!(statuses(&env, "127.0.0.1", "/rate", 8).await, want);
    // Per client address; the whitelisted one is never limited.
    assert_eq!(statuses(&env, "127.0.0.2", "/rate", 7).await[6], 503);
    assert!(
        statuses(&env, "127.0.0.3", "/rate", 10)
            .await
            .iter()
            .all(|&s| s == 200)
    );
    // limit-burst-multiplier 2: 1 + 2.
    assert_eq!(
        statuses(&env, "127.0.0.1", "/burst", 4).await,
        [200, 200, 200, 503]
    );
    // A limited request never reaches basic authentication (503, not 401).
    assert_eq!(get(&env, "127.0.0.1", "/auth", &[]).await.status, 401);
    assert_eq!(get(&env, "127.0.0.1", "/auth", &[]).await.status, 401);
    assert_eq!(get(&env, "127.0.0.1", "/auth", &[]).await.status, 503);
    // The ConfigMap's status for limited requests.
    env.apply(
        "configmap.yaml",
        &configmap("ssl-redirect: \"false\", limit-req-status-code: \"429\", limit-conn-status-code: \"429\""),
    )
    .await;
    assert_eq!(
        get(&env, "127.0.0.4", "/burst", &[]).await.status,
        StatusCode::OK
    );
    let codes = statuses(&env, "127.0.0.4", "/burst", 3).await;
    assert_eq!(codes, [200, 200, 429]);
    // limit-connections 1: a second request while the first is in flight is refused; once
    // the first has been answered, the next passes.
    let first = {
        let env_http = env.http();
        tokio::spawn(async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
            let stream = socket.connect(env_http).await.unwrap();
            let req = Request::get("/conn")
                .header("host", "a.example")
                .body(Full::new(Bytes::new()))
                .unwrap();
            h1_over(stream, req).await
        })
    };
    // Until the slow endpoint has the first request.
    for _ in 0..100 {
        if slow.accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(&env, "127.0.0.5", "/conn", &[]).await.status.as_u16(),
        429
    );
    assert_eq!(
        get(&env, "127.0.0.6", "/conn", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        get(&env, "127.0.0.5", "/conn", &[]).await.status,
        StatusCode::OK
    );
    env.shutdown().await;
}

#[tokio::test]
async fn limit_rate_throttles_responses_after_limit_rate_after() {
    timeout(LIMIT, bandwidth()).await.expect("bounded");
}

async fn bandwidth() {
    // 300 KiB per response.
    let body = vec![b'x'; 300 * 1024];
    let big = support::raw::Upstream::start(move |conn| {
        let body = body.clone();
        conn.serve(move |_| support::raw::ok(&body))
    })
    .await;
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "big", 80) + &endpoints("shop", "big", &[big.addr], &[]),
        ),
        (
            "slow.yaml",
            ing("slow", "/slow", "big", &[("limit-rate", "100")]),
        ),
        (
            "after.yaml",
            ing(
                "after",
                "/after",
                "big",
                &[("limit-rate", "100"), ("limit-rate-after", "300")],
            ),
        ),
        (
            "bad.yaml",
            ing("bad", "/bad", "big", &[("limit-rate", "fast")]),
        ),
        ("configmap.yaml", configmap("ssl-redirect: \"false\"")),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    // 100 KiB/s: the first second's 100 KiB at once, the other 200 KiB over two seconds.
    let started = std::time::Instant::now();
    let reply = get(&env, "127.0.0.1", "/slow", &[]).await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 300 * 1024, "the whole body");
    assert!(took >= Duration::from_millis(1900), "throttled: {took:?}");
    // Within limit-rate-after: not throttled (the whole body, no lower bound asserted).
    let reply = get(&env, "127.0.0.1", "/after", &[]).await;
    assert_eq!(reply.body.len(), 300 * 1024);
    // An invalid rate fails closed.
    assert_eq!(get(&env, "127.0.0.1", "/bad", &[]).await.status, 503);
    env.shutdown().await;
}
