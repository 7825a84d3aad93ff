//! Client connections past `--max-connections` (HTTP and HTTPS together) are closed at once,
//! while open ones, the admin listener and the upstream side keep working; and a Portico
//! with few file descriptors refuses the excess instead of hanging every listener.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use support::child::Child;
use support::client::{self, get};
use support::manifests::{class, endpoints, ingress, prefix, service};
use support::{Backend, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// A closed connection shows within this.
const PROMPTLY: Duration = Duration::from_secs(2);

/// Every wait for a condition gives up after this.
const PATIENCE: Duration = Duration::from_secs(10);

fn manifests(backend: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("class.yaml", class()),
        ("svc.yaml", service("web", "app", 80)),
        ("eps.yaml", endpoints("web", "app", &[backend], &[])),
        (
            "ing.yaml",
            ingress("web", "app", &[("app.test", vec![prefix("/", "app", 80)])]),
        ),
    ]
}

/// A client connection that sent half a request head and waits.
async fn idle_client(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    stream
}

/// Whether the server closes `stream` (EOF or reset) within [`PROMPTLY`]; sends a request
/// first when asked.
async fn closed_promptly(mut stream: TcpStream, request: bool) -> bool {
    if request {
        // The write may already fail: the server closed first.
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
    }
    let mut buf = [0u8; 256];
    match timeout(PROMPTLY, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// GET app.test/ on a new connection: the status, or `None` when the connection was closed
/// (or nothing came within [`PROMPTLY`]).
async fn try_get(addr: SocketAddr) -> Option<StatusCode> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let exchange = async {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let response = sender.send_request(get("app.test", "/")).await.ok()?;
        Some(response.status())
    };
    timeout(PROMPTLY, exchange).await.ok().flatten()
}

/// The value of the metric line starting with `prefix` in the admin's exposition.
async fn metric(admin: SocketAddr, prefix: &str) -> Option<u64> {
    let reply = client::h1(admin, get("localhost", "/metrics")).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// Polls `check` every 20 ms until it holds, for at most [`PATIENCE`].
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let backend = Backend::start("app").await;
    let env = Env::start_with(&manifests(backend.addr), &["--max-connections", "4"]).await;
    let admin = env.admin();
    // Two idle on HTTP, two on HTTPS (no handshake yet): one shared count.
    let mut idle = vec![idle_client(env.http()).await, idle_client(env.http()).await];
    idle.push(TcpStream::connect(env.https()).await.unwrap());
    idle.push(TcpStream::connect(env.https()).await.unwrap());
    let open = |kind: &'static str| async move {
        let prefix = format!("portico_open_connections{{listener=\"{kind}\"}}");
        metric(admin, &prefix).await
    };
    eventually("four open client connections", || async {
        open("http").await == Some(2) && open("https").await == Some(2)
    })
    .await;
    let refused = TcpStream::connect(env.http()).await.unwrap();
    assert!(closed_promptly(refused, true).await, "a fifth HTTP client");
    let refused = TcpStream::connect(env.https()).await.unwrap();
    assert!(
        closed_promptly(refused, false).await,
        "a fifth client on HTTPS"
    );
    assert_eq!(
        metric(admin, "portico_connections_refused_total").await,
        Some(2)
    );
    // The admin listener does not count.
    let health = client::h1(admin, get("localhost", "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    // One idle client leaves: a new client gets in and is served.
    drop(idle.remove(0));
    eventually("a served request after one client left", || async {
        try_get(env.http()).await == Some(StatusCode::OK)
    })
    .await;
    drop(idle);
    env.shutdown().await;
}

/// A WebSocket outlives the HTTP connection it was upgraded from, and keeps counting.
#[tokio::test]
async fn an_upgraded_connection_keeps_counting() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let backend = Backend::start("app").await;
    let env = Env::start_with(&manifests(backend.addr), &["--max-connections", "1"]).await;
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://app.test/ws", stream)
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let echoed = timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hello"));
    // The HTTP connection has handed its socket over to the tunnel by now.
    let refused = TcpStream::connect(env.http()).await.unwrap();
    assert!(
        closed_promptly(refused, true).await,
        "the tunnel holds the place"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    eventually("a served request once the tunnel closed", || async {
        try_get(env.http()).await == Some(StatusCode::OK)
    })
    .await;
    env.shutdown().await;
}

/// What the child logged that the test needs: the limits and the bound addresses.
#[derive(Default, Debug)]
struct Logged {
    fd_limit: Option<serde_json::Value>,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    max_connections: Option<u64>,
}

/// Starts the built binary with `ulimit -n 64` (soft and hard), and reads its JSON log
/// until it listens.
fn start_with_64_fds(dir: &std::path::Path) -> (Child, Logged) {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_portico"))
        .args(["--manifests", dir.to_str().unwrap()])
        .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0", "--access-log", "false"])
        .args(["--threads", "2"])
        .env("RUST_LOG", "info");
    let mut child = Child::spawn_command(command);
    let limit = child.wait_for("the file descriptor limit", PATIENCE, |v| {
        v["message"] == "file descriptor limit"
    });
    let listening = child.wait_for("the 'listening' line", PATIENCE, |v| {
        v["message"] == "listening"
    });
    let http = listening["http"].as_str().unwrap_or("");
    let logged = Logged {
        fd_limit: Some(limit),
        http: http.trim_matches(|c| c == '[' || c == ']').parse().ok(),
        admin: listening["admin"].as_str().and_then(|a| a.parse().ok()),
        max_connections: listening["max_connections"].as_u64(),
    };
    (child, logged)
}

/// With 64 file descriptors and 100 idle clients, Portico does not run out: the excess is
/// closed at once, the admin listener answers, and once the idle clients leave, requests are
/// served. Without a limit, accept fails with EMFILE at about 50 connections; from then on
/// every listener, the admin's included, leaves new connections in the kernel's backlog.
#[tokio::test]
async fn few_file_descriptors_refuse_the_excess_instead_of_hanging() {
    timeout(Duration::from_secs(60), async {
        let backend = Backend::start("app").await;
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in manifests(backend.addr) {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let (_child, logged) = start_with_64_fds(dir.path());
        let (http, admin) = (logged.http.unwrap(), logged.admin.unwrap());
        // (64 − min(128, 32)) / 2
        assert_eq!(logged.max_connections, Some(16), "{logged:?}");
        eventually("readiness", || async {
            client::h1(admin, get("localhost", "/readyz")).await.status == StatusCode::OK
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(idle_client(http).await);
        }
        // The admin listener still has descriptors to accept with.
        let health = timeout(PROMPTLY, async {
            let stream = TcpStream::connect(admin).await.unwrap();
            client::h1_over(stream, get("localhost", "/healthz")).await
        })
        .await
        .expect("the admin listener answers");
        assert_eq!(health.status, StatusCode::OK);
        // The excess was closed, promptly, not left hanging.
        let mut closed = 0;
        for stream in idle.drain(50..) {
            closed += usize::from(closed_promptly(stream, false).await);
        }
        assert_eq!(closed, 50, "the last 50 of 100 idle clients were closed");
        let another = TcpStream::connect(http).await.unwrap();
        assert!(closed_promptly(another, true).await, "a new client");
        idle.clear();
        eventually("a served request once the idle clients left", || async {
            try_get(http).await == Some(StatusCode::OK)
        })
        .await;
        let limit = logged.fd_limit.expect("the limits are logged");
        assert_eq!(limit["soft"], "64", "{limit}");
        assert_eq!(limit["hard"], "64", "{limit}");
    })
    .await
    .expect("bounded");
}

/// TCP NodePort connections count against the same limit: with two idle HTTP clients under
/// `--max-connections 3`, one NodePort connection is forwarded and the next is closed at once;
/// and once the NodePort connection ends, HTTP serves again.
#[tokio::test]
async fn node_port_connections_count_against_the_limit() {
    use support::l4::{free_node, service as l4_service, slices};
    let backend = Backend::start("app").await;
    let node = free_node();
    let range = format!("{}-{}", node.port(), node.port());
    let node_address = node.ip().to_string();
    let mut files = manifests(backend.addr);
    files.push(("np.yaml", l4_service("np", "TCP")));
    files.push(("np-eps.yaml", slices("np", "TCP", &[(backend.addr, true)])));
    let flags = [
        "--max-connections",
        "3",
        "--proxy-nodeports",
        "--node-address",
        &node_address,
        "--service-node-port-range",
        &range,
    ];
    let env = Env::start_with(&files, &flags).await;
    let _idle = [idle_client(env.http()).await, idle_client(env.http()).await];
    // The third place: a NodePort connection, which carries a request to the echo backend.
    let deadline = Instant::now() + PATIENCE;
    let mut forwarded = loop {
        if let Ok(mut stream) = TcpStream::connect(node).await {
            let _ = stream
                .write_all(b"GET /np HTTP/1.1\r\nHost: app.test\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            if let Ok(Ok(n)) = timeout(PROMPTLY, stream.read(&mut buf)).await
                && n > 0
            {
                break stream;
            }
        }
        assert!(Instant::now() < deadline, "the NodePort never forwarded");
        sleep(Duration::from_millis(50)).await;
    };
    let over = TcpStream::connect(node).await.unwrap();
    assert!(
        closed_promptly(over, true).await,
        "a 4th connection (NodePort) was kept"
    );
    let over = TcpStream::connect(env.http()).await.unwrap();
    assert!(
        closed_promptly(over, true).await,
        "a 4th connection (HTTP) was kept"
    );
    forwarded.shutdown().await.unwrap();
    drop(forwarded);
    let deadline = Instant::now() + PATIENCE;
    while try_get(env.http()).await != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "HTTP never served again");
        sleep(Duration::from_millis(50)).await;
    }
}
