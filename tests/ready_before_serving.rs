//! The proxy listeners are bound at start (a taken port fails at once) but answer nothing
//! before the first snapshot is published: a request sent the moment the port takes
//! connections waits in the backlog and is routed, never answered 404 by the empty
//! snapshot, never reset.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::Backend;
use support::child::Child;
use support::client::get;
use support::manifests::{class, endpoints, ingress, prefix, service};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// Every test is bounded.
const LIMIT: Duration = Duration::from_secs(120);

/// How long one request may wait (the first waits for the first build).
const PATIENCE: Duration = Duration::from_secs(30);

/// Ingresses besides the one under test, so that the first build takes a while.
const FILLER: usize = 2_000;

/// The class, the Service `app` → `backend`, `app.test` → app, and [`FILLER`] more Ingresses.
fn manifests(backend: SocketAddr) -> Vec<(String, String)> {
    let mut filler = String::new();
    for i in 0..FILLER {
        let host = format!("h{i}.test");
        let name = format!("filler-{i}");
        filler.push_str("---\n");
        filler.push_str(&ingress(
            "shop",
            &name,
            &[(&host, vec![prefix("/", "app", 80)])],
        ));
    }
    vec![
        ("class.yaml".into(), class()),
        ("svc.yaml".into(), service("shop", "app", 80)),
        ("eps.yaml".into(), endpoints("shop", "app", &[backend], &[])),
        (
            "app.yaml".into(),
            ingress("shop", "app", &[("app.test", vec![prefix("/", "app", 80)])]),
        ),
        ("filler.yaml".into(), filler),
    ]
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// GET app.test/ over `stream`: the status, or what went wrong.
async fn request(stream: TcpStream) -> Result<StatusCode, String> {
    let exchange = async {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let response = sender
            .send_request(get("app.test", "/"))
            .await
            .map_err(|e| format!("request: {e}"))?;
        Ok(response.status())
    };
    timeout(PATIENCE, exchange)
        .await
        .map_err(|_| "no response".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_at_start_wait_for_the_first_snapshot() {
    timeout(LIMIT, at_start()).await.expect("bounded");
}

async fn at_start() {
    let backend = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in manifests(backend.addr) {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http_addr = addr.to_string();
    let mut child = Child::spawn(
        &[
            "--manifests",
            dir.path().to_str().unwrap(),
            "--http-addr",
            &http_addr,
            "--https-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--access-log",
            "false",
        ],
        "info",
    );
    // The first connection the port takes, as early as it takes one.
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "the port never took a connection"
        );
        sleep(Duration::from_millis(1)).await;
    };
    let started = Instant::now();
    // That one, and more right behind it, each on a new connection, concurrently.
    let mut requests = vec![tokio::spawn(request(first))];
    for _ in 0..20 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        requests.push(tokio::spawn(request(stream)));
        sleep(Duration::from_millis(2)).await;
    }
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    let waited = started.elapsed();
    let ok = statuses.iter().all(|s| *s == Ok(StatusCode::OK));
    assert!(
        ok,
        "every request sent at start is routed; got {statuses:?} (the first waited {waited:?})"
    );
    // And readiness agrees: the snapshot is published.
    let (_, _, admin) = child.listening(PATIENCE);
    let ready = support::client::h1(admin, get("localhost", "/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    drop(child.stop(Duration::from_secs(10)));
}
