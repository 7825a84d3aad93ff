//! The controller ConfigMap's connection-level keys, over real sockets: `keep-alive`,
//! `keep-alive-requests`, `client-header-timeout`, `client-body-timeout`,
//! `upstream-keepalive-*`, `server-tokens`, `add-headers` / `proxy-set-headers`, and the keys
//! that guard access (they fail closed). Each change applies without restart.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::client::{get, h1};
use support::manifests::{class, endpoints, ingress, prefix, service};
use support::{Backend, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};

const LIMIT: Duration = Duration::from_secs(60);

fn configmap(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: ingress\ndata: {{{data}}}\n"
    )
}

fn files(backend: SocketAddr, data: &str) -> Vec<(&'static str, String)> {
    vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend], &[]),
        ),
        (
            "ing.yaml",
            ingress(
                "shop",
                "web",
                &[("a.example", vec![prefix("/", "web", 80)])],
            ),
        ),
        ("configmap.yaml", configmap("portico", data)),
    ]
}

async fn start(backend: SocketAddr, data: &str) -> Env {
    Env::start_with(&files(backend, data), &["--configmap", "ingress/portico"]).await
}

/// An upstream that sends its own `Server` field and answers with the request's `x-team`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let team = req
                    .headers()
                    .get("x-team")
                    .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
                let response = Response::builder()
                    .header("server", "upstream/1.0")
                    .body(Full::new(Bytes::from(team)))
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn server_tokens_and_the_header_configmaps() {
    timeout(LIMIT, server_tokens_and_headers())
        .await
        .expect("bounded");
}

async fn server_tokens_and_headers() {
    let up = upstream().await;
    let mut all = files(
        up,
        "add-headers: ingress/resp, proxy-set-headers: ingress/req",
    );
    all.push((
        "resp.yaml",
        configmap("resp", "X-Frame-Options: DENY, X-Uri: $request_uri"),
    ));
    all.push(("req.yaml", configmap("req", "X-Team: blue")));
    let env = Env::start_with(&all, &["--configmap", "ingress/portico"]).await;
    // The client's X-Team is replaced; the endpoint's Server is gone (server-tokens false).
    let req = Request::get("/a?b=1")
        .header("host", "a.example")
        .header("x-team", "red")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = h1(env.http(), req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "blue");
    assert_eq!(reply.header("x-frame-options"), "DENY");
    assert_eq!(reply.header("x-uri"), "/a?b=1");
    assert!(reply.headers.get("server").is_none(), "{:?}", reply.headers);
    // The referenced ConfigMap changes: applied without restart.
    env.apply(
        "resp.yaml",
        &configmap("resp", "X-Frame-Options: SAMEORIGIN"),
    )
    .await;
    let reply = h1(env.http(), get("a.example", "/")).await;
    assert_eq!(reply.header("x-frame-options"), "SAMEORIGIN");
    assert!(reply.headers.get("x-uri").is_none());
    // server-tokens: Portico's name and version in place of the endpoint's.
    env.apply(
        "configmap.yaml",
        &configmap("portico", "server-tokens: \"true\""),
    )
    .await;
    let reply = h1(env.http(), get("a.example", "/")).await;
    let want = format!("portico/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(reply.header("server"), want);
    assert_eq!(reply.body, "none", "no proxy-set-headers any more");
    assert!(reply.headers.get("x-frame-options").is_none());
    env.shutdown().await;
}

/// Reads from `stream` until the peer closes it (or `within` passes: `None`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.ok().map(|()| out)
}

#[tokio::test]
async fn keep_alive_requests_closes_http1_and_http2_connections() {
    timeout(LIMIT, keep_alive_requests())
        .await
        .expect("bounded");
}

async fn keep_alive_requests() {
    let backend = Backend::start("web").await;
    let env = start(backend.addr, "keep-alive-requests: \"3\"").await;
    // HTTP/1.1: the third response says `Connection: close`, and the connection ends.
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for n in 1..=3 {
        sender.ready().await.unwrap();
        let response = sender.send_request(get("a.example", "/")).await.unwrap();
        let close = response.headers().get("connection").cloned();
        let _ = response.into_body().collect().await.unwrap();
        if n < 3 {
            assert_eq!(close, None, "request {n}");
        } else {
            assert_eq!(close.unwrap(), "close", "request {n}");
        }
    }
    timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection closed after its third request")
        .unwrap()
        .unwrap();
    // HTTP/2 (prior knowledge): GOAWAY after the third stream; the connection ends.
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    for _ in 1..=3 {
        sender.ready().await.unwrap();
        let req = support::client::get_h2("a.example", "/");
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await.unwrap();
    }
    timeout(Duration::from_secs(5), conn)
        .await
        .expect("GOAWAY after the third stream")
        .unwrap()
        .unwrap();
    // keep-alive 0: every response closes its connection.
    env.apply("configmap.yaml", &configmap("portico", "keep-alive: \"0\""))
        .await;
    let mut stream = TcpStream::connect(env.http()).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let out = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed after one response");
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    env.shutdown().await;
}

#[tokio::test]
async fn keep_alive_and_client_header_timeout_are_separate() {
    timeout(LIMIT, keep_alive_timeouts())
        .await
        .expect("bounded");
}

async fn keep_alive_timeouts() {
    let backend = Backend::start("web").await;
    // A short keep-alive, a long header timeout.
    let env = start(
        backend.addr,
        "keep-alive: \"1\", client-header-timeout: \"30\"",
    )
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let mut idle = TcpStream::connect(env.http()).await.unwrap();
    let mut fresh = TcpStream::connect(env.http()).await.unwrap();
    fresh.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    idle.write_all(request).await.unwrap();
    let out = closed_within(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection is closed after keep-alive");
    let waited = started.elapsed();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // The connection still reading its first head has the header timeout's 30 s.
    assert!(
        closed_within(&mut fresh, Duration::from_millis(200))
            .await
            .is_none(),
        "a first request head has client-header-timeout, not keep-alive"
    );
    // And the other way round.
    env.apply(
        "configmap.yaml",
        &configmap(
            "portico",
            "keep-alive: \"30\", client-header-timeout: \"1\"",
        ),
    )
    .await;
    let mut slow = TcpStream::connect(env.http()).await.unwrap();
    let mut kept = TcpStream::connect(env.http()).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a.").await.unwrap();
    kept.write_all(request).await.unwrap();
    closed_within(&mut slow, Duration::from_secs(10))
        .await
        .expect("a slow request head is closed after client-header-timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    sleep(Duration::from_millis(500)).await;
    kept.write_all(request).await.unwrap();
    let n = timeout(Duration::from_secs(5), kept.read(&mut buf))
        .await
        .expect("the kept connection answers")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "a keep-alive connection outlives client-header-timeout"
    );
    drop(fresh);
    env.shutdown().await;
}

#[tokio::test]
async fn client_body_timeout_is_a_408() {
    timeout(LIMIT, client_body_timeout())
        .await
        .expect("bounded");
}

async fn client_body_timeout() {
    let backend = Backend::start("web").await;
    let env = start(backend.addr, "client-body-timeout: \"1\"").await;
    let mut stream = TcpStream::connect(env.http()).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let out = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    let waited = started.elapsed();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "after {waited:?}"
    );
    env.shutdown().await;
}

/// The upstream connection (the echo's view of its peer) of one request.
async fn upstream_port(env: &Env) -> String {
    let reply = h1(env.http(), get("a.example", "/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["remote"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn upstream_keepalive_limits_follow_the_configmap() {
    timeout(LIMIT, upstream_keepalive()).await.expect("bounded");
}

async fn upstream_keepalive() {
    let backend = Backend::start("web").await;
    let env = start(backend.addr, "upstream-keepalive-requests: \"2\"").await;
    let ports = [
        upstream_port(&env).await,
        upstream_port(&env).await,
        upstream_port(&env).await,
        upstream_port(&env).await,
    ];
    assert_eq!(ports[0], ports[1], "two requests on one connection");
    assert_ne!(ports[1], ports[2], "then a new connection");
    assert_eq!(ports[2], ports[3]);
    // No idle connection kept: each request on a new one.
    env.apply(
        "configmap.yaml",
        &configmap("portico", "upstream-keepalive-connections: \"0\""),
    )
    .await;
    let a = upstream_port(&env).await;
    let b = upstream_port(&env).await;
    let c = upstream_port(&env).await;
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    // The default (320 kept, 10000 requests): reused.
    env.apply("configmap.yaml", &configmap("portico", "")).await;
    let a = upstream_port(&env).await;
    let b = upstream_port(&env).await;
    assert_eq!(a, b);
    // upstream-keepalive-timeout: an idle connection is closed after it.
    env.apply(
        "configmap.yaml",
        &configmap("portico", "upstream-keepalive-timeout: \"1\""),
    )
    .await;
    let a = upstream_port(&env).await;
    sleep(Duration::from_millis(2600)).await;
    let b = upstream_port(&env).await;
    assert_ne!(a, b, "the idle connection expired");
    env.shutdown().await;
}

#[tokio::test]
async fn configmap_keys_that_guard_access_fail_closed() {
    timeout(LIMIT, guards()).await.expect("bounded");
}

async fn guards() {
    let backend = Backend::start("web").await;
    // An invalid global-auth-url (no scheme) guards every route: 503, never served.
    let env = start(backend.addr, "global-auth-url: \"auth.example/check\"").await;
    let reply = h1(env.http(), get("a.example", "/")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.served_by(), "", "never forwarded");
    env.apply("configmap.yaml", &configmap("portico", "")).await;
    let reply = h1(env.http(), get("a.example", "/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    env.shutdown().await;
}
