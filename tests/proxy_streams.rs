//! Streaming, upgrades, configuration swaps under load, and graceful shutdown.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use support::client::{self, get};
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1024 * 1024;

/// One Service `app` on these backends, routed from app.com.
fn app_files(backends: &[&Backend], paths: &[&str]) -> Vec<(&'static str, String)> {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let rules = [(
        "app.com",
        paths.iter().map(|p| prefix(p, "app", 80)).collect(),
    )];
    vec![
        ("class.yaml", class()),
        ("svc.yaml", service("web", "app", 80)),
        ("eps.yaml", endpoints("web", "app", &addrs, &[])),
        // No body limit: these tests stream large uploads.
        (
            "ing.yaml",
            ingress_full(
                "web",
                "app",
                &rules,
                &[],
                "nginx.ingress.kubernetes.io/proxy-body-size: \"0\"",
                None,
            ),
        ),
    ]
}

/// Peak resident memory of this process (each nextest test runs in its own process).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn sixty_four_mib_each_way_without_buffering() {
    let backend = Backend::start("big").await;
    let env = Env::start(&app_files(&[&backend], &["/"])).await;
    let before = peak_rss();
    // Upload: 64 MiB in 1 MiB chunks, generated as they are sent.
    let chunks = futures_util::stream::iter(
        (0..64)
            .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; MIB])))),
    );
    let req = Request::post("/upload")
        .header("host", "app.com")
        .body(StreamBody::new(chunks))
        .unwrap();
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let reply = sender.send_request(req).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let body = reply.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_length"], 64 * MIB);
    // Download: count the bytes as they stream, never holding them.
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("/download?bytes={}", 64 * MIB))
        .header("host", "app.com")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, 64 * MIB);
    let growth = peak_rss().saturating_sub(before);
    assert!(
        growth < 40 * MIB,
        "peak RSS grew by {} MiB: something buffered a whole body",
        growth / MIB
    );
}

async fn websocket(env: &Env, host: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{host}/ws"),
    )
    .unwrap();
    let (ws, response) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

async fn echo_round_trip<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::text(text));
}

#[tokio::test]
async fn websockets_are_proxied_both_ways() {
    let backend = Backend::start("ws").await;
    let env = Env::start(&app_files(&[&backend], &["/"])).await;
    let mut ws = websocket(&env, "app.com").await;
    for i in 0..10 {
        echo_round_trip(&mut ws, &format!("message {i}")).await;
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn swaps_under_load_drop_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let env = Env::start(&app_files(&[&a], &["/"])).await;
    let mut ws = websocket(&env, "app.com").await;
    let addr = env.http();
    let load = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<Bytes>>();
        let (mut ok, mut failed, mut seen) = (0, 0, std::collections::BTreeSet::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for i in 0..20_000 {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            let path = if i % 2 == 0 { "/" } else { "/v2/x" };
            let req = Request::get(format!("http://{addr}{path}"))
                .header("host", "app.com")
                .body(Default::default())
                .unwrap();
            match client.request(req).await {
                Ok(r) if r.status() == StatusCode::OK => {
                    seen.insert(r.headers()["x-echo-service"].to_str().unwrap().to_string());
                    r.into_body().collect().await.unwrap();
                    ok += 1;
                }
                Ok(r) => panic!("request {i} got {}", r.status()),
                Err(e) => {
                    failed += 1;
                    eprintln!("request {i} failed: {e:?}");
                }
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        (ok, failed, seen)
    });
    // Twenty swaps: endpoints move between backends, paths come and go.
    for i in 0..20 {
        let (backends, paths): (Vec<&Backend>, Vec<&str>) = match i % 4 {
            0 => (vec![&b], vec!["/", "/v2"]),
            1 => (vec![&a, &b], vec!["/", "/v2"]),
            2 => (vec![&a], vec!["/", "/v2", "/v3"]),
            _ => (vec![&b, &a], vec!["/", "/v2"]),
        };
        let files = app_files(&backends, &paths);
        support::write_atomically(&env.dir.path().join("eps.yaml"), &files[2].1);
        support::write_atomically(&env.dir.path().join("ing.yaml"), &files[3].1);
        let want: std::collections::BTreeSet<_> = backends.iter().map(|b| b.addr).collect();
        env.wait_for(&format!("swap {i}"), |s| {
            let route = s.routes.route("app.com", "/v3");
            let has_v3 = route.is_some_and(|r| r.path.as_deref() == Some("/v3"));
            let ready: std::collections::BTreeSet<_> = s
                .services
                .iter()
                .flat_map(|(_, p)| p.ready_endpoints().iter().map(|e| e.addr))
                .collect();
            has_v3 == paths.contains(&"/v3") && ready == want
        })
        .await;
        echo_round_trip(&mut ws, &format!("after swap {i}")).await;
    }
    let (ok, failed, seen) = load.await.unwrap();
    assert_eq!(failed, 0, "failed requests under swaps");
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(seen.len(), 2, "both backends served: {seen:?}");
    echo_round_trip(&mut ws, "still open").await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let backend = Backend::start("slow").await;
    let env = Env::start(&app_files(&[&backend], &["/"])).await;
    let addr = env.http();
    let in_flight =
        tokio::spawn(async move { client::h1(addr, get("app.com", "/?delay_ms=700")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = tokio::time::Instant::now();
    env.shutdown().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request finished"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "shutdown waited for it"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}

/// RFC 8441: a WebSocket over HTTP/2 (extended CONNECT, `:protocol websocket`) reaches an
/// HTTP/1.1 WebSocket endpoint as an upgrade and is answered 200, then carries messages both
/// ways.
#[tokio::test]
async fn websockets_over_http2_extended_connect() {
    use http_body_util::Empty;
    use hyper_util::rt::TokioExecutor;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let backend = Backend::start("ws").await;
    let env = Env::start(&app_files(&[&backend], &["/"])).await;
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // A first request, so that Portico's SETTINGS (ENABLE_CONNECT_PROTOCOL) are in.
    let first = Request::get("http://app.com/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(first).await.unwrap();
    let mut connect = Request::connect("http://app.com/ws")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(connect))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert!(response.headers().get("upgrade").is_none());
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    for i in 0..5 {
        echo_round_trip(&mut ws, &format!("over h2 {i}")).await;
    }
    ws.close(None).await.unwrap();
    drop(ws);
    // Another :protocol is not one Portico carries: 501 (RFC 8441 §4).
    let mut other = Request::connect("http://app.com/ws")
        .body(Empty::<Bytes>::new())
        .unwrap();
    other
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("connect-udp"));
    let response = sender.send_request(other).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    drop(sender);
    env.shutdown().await;
}
