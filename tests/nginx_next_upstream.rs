//! `proxy-next-upstream`, `-tries` and `-timeout` over real sockets, with nginx's semantics
//! (ngx_http_proxy_module's `proxy_next_upstream`, ingress-nginx's defaults `error timeout`
//! and 3 tries): a failed connect, an endpoint that closes without answering, one that
//! answers nothing in time, or a listed status sends the request on to an endpoint not tried
//! yet; POST goes on once sent only with `non_idempotent`; `off` stops it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::client::{Reply, h1};
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);
const N: &str = "nginx.ingress.kubernetes.io";

/// How a misbehaving endpoint treats each request.
#[derive(Clone, Copy)]
enum Bad {
    /// Answers 503.
    Status503,
    /// Reads the request and closes without answering.
    Close,
    /// Reads the request and answers nothing (for 10 s).
    Hang,
}

/// A misbehaving endpoint on loopback, and how many requests it has seen.
async fn bad(kind: Bad) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    // Heads only (bodies here are small and come in the same read).
                    if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    buf.clear();
                    count.fetch_add(1, Ordering::SeqCst);
                    match kind {
                        Bad::Status503 => {
                            let answer =
                                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nbad";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        Bad::Close => return,
                        Bad::Hang => {
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn ing(name: &str, svc: &str, annotations: &str) -> String {
    let host = format!("{name}.example");
    ingress_full(
        "shop",
        name,
        &[(&host, vec![prefix("/", svc, 80)])],
        &[],
        annotations,
        None,
    )
}

async fn send(env: &Env, method: &str, name: &str) -> Reply {
    let body = if method == "POST" {
        Bytes::from_static(b"payload")
    } else {
        Bytes::new()
    };
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header("host", format!("{name}.example"))
        .body(Full::new(body))
        .unwrap();
    h1(env.http(), req).await
}

/// Statuses of `count` requests.
async fn statuses(env: &Env, method: &str, name: &str, count: usize) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(send(env, method, name).await.status);
    }
    out
}

#[tokio::test]
async fn failed_attempts_go_on_to_another_endpoint() {
    timeout(LIMIT, next_upstream()).await.expect("bounded");
}

async fn next_upstream() {
    let good = Backend::start("good").await;
    let (status503, seen503) = bad(Bad::Status503).await;
    let (closing, seen_closing) = bad(Bad::Close).await;
    let services = [
        // Two refusing endpoints and a good one.
        service("shop", "refusing", 80)
            + &endpoints(
                "shop",
                "refusing",
                &[support::dead_addr(), support::dead_addr(), good.addr],
                &[],
            ),
        service("shop", "answers503", 80)
            + &endpoints("shop", "answers503", &[status503, good.addr], &[]),
        service("shop", "closing", 80) + &endpoints("shop", "closing", &[closing, good.addr], &[]),
    ];
    let ingresses = [
        ing("default", "refusing", ""),
        ing(
            "twotries",
            "refusing",
            &format!("{N}/proxy-next-upstream-tries: \"2\""),
        ),
        ing(
            "stopped",
            "refusing",
            &format!("{N}/proxy-next-upstream: \"off\""),
        ),
        ing("nostatus", "answers503", ""),
        ing(
            "status",
            "answers503",
            &format!("{N}/proxy-next-upstream: \"error timeout http_503\""),
        ),
        ing(
            "anymethod",
            "answers503",
            &format!("{N}/proxy-next-upstream: \"error http_503 non_idempotent\""),
        ),
        ing("closing", "closing", ""),
        ing(
            "noerror",
            "closing",
            &format!("{N}/proxy-next-upstream: \"timeout\""),
        ),
    ];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services.join("---\n")),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    let ok = |s: &[StatusCode]| s.iter().filter(|s| **s == StatusCode::OK).count();

    // Failed connects: ingress-nginx's default (error timeout, 3 tries) passes both dead
    // endpoints; 2 tries sometimes meet both dead ones; off never goes on.
    let s = statuses(&env, "GET", "default", 30).await;
    assert_eq!(ok(&s), 30, "{s:?}");
    let s = statuses(&env, "POST", "default", 12).await;
    assert_eq!(
        ok(&s),
        12,
        "a connect failure sends nothing: POST goes on too: {s:?}"
    );
    let s = statuses(&env, "GET", "twotries", 30).await;
    assert!(ok(&s) > 0 && ok(&s) < 30, "{s:?}");
    assert!(
        s.iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_GATEWAY)
    );
    let s = statuses(&env, "GET", "stopped", 30).await;
    assert!(ok(&s) > 0 && ok(&s) < 30, "{s:?}");

    // A 503 from the endpoint: passed through by default; with http_503 a GET goes on, a
    // POST only with non_idempotent.
    let s = statuses(&env, "GET", "nostatus", 20).await;
    assert!(s.contains(&StatusCode::SERVICE_UNAVAILABLE), "{s:?}");
    let before = seen503.load(Ordering::SeqCst);
    let s = statuses(&env, "GET", "status", 20).await;
    assert_eq!(ok(&s), 20, "{s:?}");
    assert!(
        seen503.load(Ordering::SeqCst) > before,
        "the 503 endpoint was tried"
    );
    let s = statuses(&env, "POST", "status", 20).await;
    assert!(s.contains(&StatusCode::SERVICE_UNAVAILABLE), "{s:?}");
    let s = statuses(&env, "POST", "anymethod", 20).await;
    assert_eq!(ok(&s), 20, "{s:?}");

    // An endpoint that closes without answering: `error` sends a GET on, never a POST.
    let before = seen_closing.load(Ordering::SeqCst);
    let s = statuses(&env, "GET", "closing", 20).await;
    assert_eq!(ok(&s), 20, "{s:?}");
    assert!(seen_closing.load(Ordering::SeqCst) > before);
    let s = statuses(&env, "POST", "closing", 20).await;
    assert!(s.contains(&StatusCode::BAD_GATEWAY), "{s:?}");
    let s = statuses(&env, "GET", "noerror", 20).await;
    assert!(s.contains(&StatusCode::BAD_GATEWAY), "{s:?}");

    // Every extra try is counted.
    let metrics = h1(env.admin(), support::client::get("localhost", "/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("upstream_retries") && !l.starts_with("#") && !l.ends_with(" 0")),
        "{text}"
    );
    env.shutdown().await;
}

/// `timeout`: an endpoint that sends no response head within the read timeout; the request
/// goes on (a GET), within `proxy-next-upstream-timeout`.
#[tokio::test]
async fn a_timed_out_attempt_goes_on_within_the_time_limit() {
    timeout(LIMIT, timed_out()).await.expect("bounded");
}

async fn timed_out() {
    let good = Backend::start("good").await;
    let (hanging, seen) = bad(Bad::Hang).await;
    let (hanging2, _) = bad(Bad::Hang).await;
    let services = [
        service("shop", "hanging", 80) + &endpoints("shop", "hanging", &[hanging, good.addr], &[]),
        service("shop", "allhang", 80)
            + &endpoints("shop", "allhang", &[hanging, hanging2, good.addr], &[]),
    ];
    let ingresses = [
        ing("slow", "hanging", &format!("{N}/proxy-read-timeout: \"1\"")),
        ing(
            "limited",
            "allhang",
            &format!("{N}/proxy-read-timeout: \"1\", {N}/proxy-next-upstream-timeout: \"1\""),
        ),
    ];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services.join("---\n")),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    // Until the hanging endpoint has been met once, then a few more.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(&env, "GET", "slow").await.status);
    }
    assert!(seen.load(Ordering::SeqCst) > 0);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // With a 1 s limit on going on, a request that met a hanging endpoint first (1 s) is not
    // sent to a second one: some 504s.
    let mut limited = Vec::new();
    for _ in 0..6 {
        limited.push(send(&env, "GET", "limited").await.status);
    }
    assert!(
        limited.contains(&StatusCode::GATEWAY_TIMEOUT),
        "{limited:?}"
    );
    env.shutdown().await;
}
