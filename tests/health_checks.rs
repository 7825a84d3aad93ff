//! Active health checks (issue: backends, §4) over real sockets: `portico.dev/health-check-*`
//! on a Service; an endpoint failing its checks gets no requests while another passes, comes
//! back after its healthy threshold, and when every endpoint fails they all take traffic
//! (panic mode), which the metrics and `explain` say.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::client::{self, get};
use support::manifests::{class, endpoints, nginx_ingress};
use support::{Env, raw};
use tokio::time::{Instant, timeout};

const LIMIT: Duration = Duration::from_secs(60);

/// An endpoint answering every request (checks included) 200, or 503 while `sick`, as
/// `x-echo-service: <name>`.
async fn endpoint(name: &'static str, sick: Arc<AtomicBool>) -> raw::Upstream {
    raw::Upstream::start(move |conn| {
        let sick = sick.clone();
        conn.serve(move |_| {
            let status = if sick.load(Ordering::Relaxed) {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            format!("HTTP/1.1 {status}\r\nx-echo-service: {name}\r\ncontent-length: 0\r\n\r\n")
                .into_bytes()
        })
    })
    .await
}

/// Who served 12 requests, sorted and deduplicated.
async fn served(env: &Env) -> Vec<String> {
    let mut who = Vec::new();
    for _ in 0..12 {
        let reply = client::h1(env.http(), get("a.example", "/")).await;
        who.push(reply.served_by());
    }
    who.sort();
    who.dedup();
    who
}

/// Waits (bounded) until the endpoints serving requests are `want`.
async fn until_served_by(env: &Env, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = served(env).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "served by {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(env: &Env) -> String {
    let reply = client::h1(env.admin(), get("localhost", "/metrics")).await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
async fn failing_endpoints_get_no_traffic_until_all_fail() {
    timeout(LIMIT, checks()).await.expect("bounded");
}

async fn checks() {
    let (a_sick, b_sick) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(true)),
    );
    let a_up = endpoint("a", a_sick.clone()).await;
    let b_up = endpoint("b", b_sick.clone()).await;
    let (a, b) = (a_up.addr, b_up.addr);
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    portico.dev/health-check-path: /healthz\n    portico.dev/health-check-interval: 100ms\n    portico.dev/health-check-timeout: 500ms\n    portico.dev/health-check-unhealthy-threshold: \"2\"\n    portico.dev/health-check-healthy-threshold: \"2\"\nspec:\n  ports: [{port: 80}]\n---\n".to_string();
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service + &endpoints("shop", "web", &[a, b], &[]),
        ),
        (
            "ing.yaml",
            nginx_ingress("web", "a.example", "/", "web", &[]),
        ),
    ];
    let env = Env::start(&files).await;
    // b fails its checks: only a serves.
    until_served_by(&env, &["a"]).await;
    let text = metrics(&env).await;
    let b_gauge = format!("portico_endpoint_healthy{{service=\"shop/web:80\",endpoint=\"{b}\"}} 0");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = text;
    while !text.contains(&b_gauge) {
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = metrics(&env).await;
    }
    assert!(
        text.contains("portico_health_checks_total{result=\"failed\"}"),
        "{text}"
    );
    let explain = client::h1(
        env.admin(),
        get("localhost", "/debug/explain?url=http://a.example/"),
    )
    .await;
    let explained = String::from_utf8_lossy(&explain.body).into_owned();
    assert!(
        explained.contains("health checks: GET /healthz"),
        "{explained}"
    );
    let b_line = explained
        .lines()
        .find(|l| l.contains(&b.to_string()))
        .unwrap_or_default();
    assert!(b_line.contains("failing its health checks"), "{explained}");
    // Both fail: both take traffic (panic mode), and the metric says so.
    a_sick.store(true, Ordering::Relaxed);
    until_served_by(&env, &["a", "b"]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(&env).await;
        if text.contains("portico_health_panic{service=\"shop/web:80\",endpoint=\"\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // b passes again (its healthy threshold): only b serves.
    b_sick.store(false, Ordering::Relaxed);
    until_served_by(&env, &["b"]).await;
    env.shutdown().await;
}

/// `portico.dev/max-fails` and `portico.dev/fail-timeout`, as nginx's upstream `max_fails` and
/// `fail_timeout`: an endpoint whose connections fail is skipped for fail-timeout after
/// max-fails failures, then gets one try; an endpoint answering 5xx is not failing.
#[tokio::test]
async fn passive_health_skips_failing_endpoints_for_fail_timeout() {
    timeout(LIMIT, passive()).await.expect("bounded");
}

async fn passive() {
    let a_up = endpoint("a", Arc::new(AtomicBool::new(false))).await;
    // b accepts connections and closes them without an answer.
    let b_up = raw::Upstream::start(|conn| async move { drop(conn) }).await;
    // c answers 503 to everything.
    let c_up = endpoint("c", Arc::new(AtomicBool::new(true))).await;
    let service = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations:\n    portico.dev/max-fails: \"2\"\n    portico.dev/fail-timeout: 2s\nspec:\n  ports: [{{port: 80}}]\n---\n"
        )
    };
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("web")
                + &endpoints("shop", "web", &[a_up.addr, b_up.addr], &[])
                + "---\n"
                + &service("errs")
                + &endpoints("shop", "errs", &[a_up.addr, c_up.addr], &[]),
        ),
        (
            "ing.yaml",
            nginx_ingress("web", "a.example", "/", "web", &[])
                + "---\n"
                + &nginx_ingress("errs", "e.example", "/", "errs", &[]),
        ),
    ];
    let env = Env::start(&files).await;
    for _ in 0..20 {
        let reply = client::h1(env.http(), get("a.example", "/")).await;
        assert_eq!(reply.served_by(), "a", "b's failures go on to a");
    }
    assert_eq!(
        b_up.accepted(),
        2,
        "b is skipped after max-fails (2) failed attempts"
    );
    let explain = client::h1(
        env.admin(),
        get("localhost", "/debug/explain?url=http://a.example/"),
    )
    .await;
    let explained = String::from_utf8_lossy(&explain.body).into_owned();
    let b_line = explained
        .lines()
        .find(|l| l.contains(&b_up.addr.to_string()))
        .unwrap_or_default();
    assert!(b_line.contains("max-fails"), "{explained}");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for _ in 0..10 {
        let reply = client::h1(env.http(), get("a.example", "/")).await;
        assert_eq!(reply.served_by(), "a");
    }
    assert_eq!(
        b_up.accepted(),
        3,
        "after fail-timeout b gets one try, fails it and is out again"
    );
    // 5xx answers are answers: c keeps its share.
    let mut from_c = 0;
    for _ in 0..12 {
        let reply = client::h1(env.http(), get("e.example", "/")).await;
        if reply.served_by() == "c" {
            assert_eq!(reply.status, 503);
            from_c += 1;
        }
    }
    assert!(from_c >= 5, "c served {from_c} of 12");
    env.shutdown().await;
}

/// `portico.dev/health-check-port` naming one of the Service's ports: each endpoint is checked
/// on its own port of that name (its pod's admin port), not on the port it serves on.
#[tokio::test]
async fn health_check_port_by_name() {
    timeout(LIMIT, by_name()).await.expect("bounded");
}

async fn by_name() {
    let b_sick = Arc::new(AtomicBool::new(true));
    // The served ports never fail; the admin ports decide.
    let a_http = endpoint("a", Arc::new(AtomicBool::new(false))).await;
    let b_http = raw::Upstream::start_on("127.0.0.2", |conn| {
        conn.serve(|_| {
            b"HTTP/1.1 200 OK\r\nx-echo-service: b\r\ncontent-length: 0\r\n\r\n".to_vec()
        })
    })
    .await;
    let a_admin = endpoint("a-admin", Arc::new(AtomicBool::new(false))).await;
    let sick = b_sick.clone();
    let b_admin = raw::Upstream::start_on("127.0.0.2", move |conn| {
        let sick = sick.clone();
        conn.serve(move |_| {
            if sick.load(Ordering::Relaxed) {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
            }
        })
    })
    .await;
    let slice = |i: usize, http: std::net::SocketAddr, admin: std::net::SocketAddr| {
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-{i}\n  namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {}}}, {{name: admin, port: {}}}]\nendpoints:\n  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n",
            http.port(),
            admin.port(),
            http.ip()
        )
    };
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    portico.dev/health-check-path: /ready\n    portico.dev/health-check-port: admin\n    portico.dev/health-check-interval: 100ms\n    portico.dev/health-check-unhealthy-threshold: \"1\"\n    portico.dev/health-check-healthy-threshold: \"1\"\nspec:\n  ports: [{name: http, port: 80}, {name: admin, port: 81}]\n".to_string();
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service + &slice(0, a_http.addr, a_admin.addr) + &slice(1, b_http.addr, b_admin.addr),
        ),
        (
            "ing.yaml",
            nginx_ingress("web", "a.example", "/", "web", &[]),
        ),
    ];
    let env = Env::start(&files).await;
    until_served_by(&env, &["a"]).await;
    b_sick.store(false, Ordering::Relaxed);
    until_served_by(&env, &["a", "b"]).await;
    env.shutdown().await;
}
