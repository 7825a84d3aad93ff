//! The L4 TCP data path (splice on Linux) through a NodePort: large payloads both ways byte for
//! byte, half-close in each direction, a backend that resets, and the endpoint load counters
//! (`lc`) following connections as they open and close.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portico::snapshot::Snapshot;
use support::Env;
use support::l4::{free_node, service_with, slices};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// Portico with one TCP NodePort Service (`lc` scheduler) over `backends`; the NodePort.
async fn start(backends: &[SocketAddr]) -> (Env, SocketAddr) {
    let node = free_node();
    let range = format!("{0}-{0}", node.port());
    let node_address = node.ip().to_string();
    let ready: Vec<_> = backends.iter().map(|b| (*b, true)).collect();
    let files = [
        ("class.yaml", support::manifests::class()),
        (
            "svc.yaml",
            service_with("app", "TCP", "{portico.dev/load-balancer: lc}"),
        ),
        ("slices.yaml", slices("app", "TCP", &ready)),
    ];
    let flags = [
        "--proxy-nodeports",
        "--node-address",
        &node_address,
        "--service-node-port-range",
        &range,
    ];
    let env = Env::start_with(&files, &flags).await;
    env.wait_for("the endpoints", |s| active(s).is_some()).await;
    (env, node)
}

/// Open connections counted on the Service's endpoints.
fn active(s: &Snapshot) -> Option<usize> {
    let (_, port) = s.services.iter().find(|(_, p)| &*p.service == "app")?;
    (!port.endpoints.is_empty()).then(|| port.endpoints.iter().map(|e| e.load.active()).sum())
}

async fn wait_active(env: &Env, want: usize) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let now = active(&env.portico().snapshot.load_full());
        if now == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "active connections: {now:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connects, retrying while the listener comes up.
async fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

/// Pseudo-random bytes (xorshift), different per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A backend that serves one connection at a time with `serve`.
async fn backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_both_ways_arrive_byte_exact_across_a_half_close() {
    const DOWN: usize = 6 << 20;
    const UP: usize = 7 << 20;
    // Sends its own payload while reading the client's until EOF, then sends back what it
    // read: the echo can only come through after the client's half-close was passed on.
    let addr = backend(|stream| async move {
        let (mut read, mut write) = stream.into_split();
        let sender = tokio::spawn(async move {
            write.write_all(&noise(DOWN, 7)).await.unwrap();
            write
        });
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        let mut write = sender.await.unwrap();
        write.write_all(&got).await.unwrap();
        write.shutdown().await.unwrap();
    })
    .await;
    let (env, node) = start(&[addr]).await;
    let upload = noise(UP, 11);
    let (mut read, mut write) = connect(node).await.into_split();
    let sent = upload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
        write
    });
    let mut got = Vec::new();
    timeout(LIMIT, read.read_to_end(&mut got))
        .await
        .expect("the transfer finishes")
        .unwrap();
    let _write = writer.await.unwrap();
    assert_eq!(got.len(), DOWN + UP);
    assert!(got[..DOWN] == noise(DOWN, 7)[..], "the backend's payload");
    assert!(got[DOWN..] == upload[..], "the client's payload, echoed");
    drop((read, _write));
    wait_active(&env, 0).await;
}

#[tokio::test]
async fn the_client_half_closes_and_still_gets_the_answer() {
    // Reads the request to EOF, says so, and answers when told to.
    let (eof_tx, mut eof_rx) = mpsc::unbounded_channel();
    let answer_now = Arc::new(Notify::new());
    let go = answer_now.clone();
    let addr = backend(move |mut stream| {
        let (eof_tx, go) = (eof_tx.clone(), go.clone());
        async move {
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            let _ = eof_tx.send(());
            go.notified().await;
            let answer = format!("got {} bytes", request.len());
            stream.write_all(answer.as_bytes()).await.unwrap();
        }
    })
    .await;
    let (env, node) = start(&[addr]).await;
    let mut conn = connect(node).await;
    conn.write_all(b"the whole request").await.unwrap();
    conn.shutdown().await.unwrap();
    timeout(LIMIT, eof_rx.recv())
        .await
        .expect("the backend sees the client's EOF")
        .unwrap();
    // Half-closed is still open: the endpoint's load counts it.
    assert_eq!(active(&env.portico().snapshot.load_full()), Some(1));
    answer_now.notify_one();
    let mut answer = String::new();
    timeout(LIMIT, conn.read_to_string(&mut answer))
        .await
        .expect("an answer after the half-close")
        .unwrap();
    assert_eq!(answer, "got 17 bytes");
    drop(conn);
    wait_active(&env, 0).await;
}

#[tokio::test]
async fn the_server_closes_first() {
    // Closes at once: the client reads the greeting, then EOF.
    let closing = backend(|mut stream| async move {
        stream.write_all(b"bye").await.unwrap();
    })
    .await;
    // Half-closes after its greeting, then still reads what the client sends.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listening = backend(move |mut stream| {
        let tx = tx.clone();
        async move {
            stream.write_all(b"over to you").await.unwrap();
            stream.shutdown().await.unwrap();
            let mut got = String::new();
            stream.read_to_string(&mut got).await.unwrap();
            let _ = tx.send(got);
        }
    })
    .await;
    let (env, node) = start(&[closing, listening]).await;
    for _ in 0..2 {
        let mut conn = connect(node).await;
        let mut greeting = String::new();
        timeout(LIMIT, conn.read_to_string(&mut greeting))
            .await
            .expect("EOF after the greeting")
            .unwrap();
        match greeting.as_str() {
            "bye" => {}
            "over to you" => {
                conn.write_all(b"after your EOF").await.unwrap();
                conn.shutdown().await.unwrap();
                let got = timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
                assert_eq!(got, "after your EOF");
            }
            other => panic!("unexpected greeting {other:?}"),
        }
    }
    wait_active(&env, 0).await;
}

#[tokio::test]
async fn a_backend_reset_ends_the_client_connection() {
    // Sends 1 MiB, then resets (SO_LINGER 0) without reading the request.
    let addr = backend(|stream| async move {
        let mut stream = stream;
        let _ = stream.write_all(&noise(1 << 20, 3)).await;
        let std = stream.into_std().unwrap();
        socket2::SockRef::from(&std)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(std);
    })
    .await;
    let (env, node) = start(&[addr]).await;
    let mut conn = connect(node).await;
    conn.write_all(b"hello").await.unwrap();
    let mut sink = Vec::new();
    let ended = timeout(LIMIT, conn.read_to_end(&mut sink))
        .await
        .expect("the connection ends, by EOF or reset");
    assert!(
        sink.len() <= 1 << 20 && sink[..] == noise(1 << 20, 3)[..sink.len()],
        "what arrived before the reset is intact ({} bytes, {ended:?})",
        sink.len()
    );
    drop(conn);
    wait_active(&env, 0).await;
}

#[tokio::test]
async fn least_connection_counts_follow_open_connections() {
    let hold = |mut stream: TcpStream| async move {
        let mut buf = [0u8; 64];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let (a, b) = (backend(hold).await, backend(hold).await);
    let (env, node) = start(&[a, b]).await;
    let mut open = Vec::new();
    for i in 0..4 {
        let mut conn = connect(node).await;
        conn.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        timeout(LIMIT, conn.read_exact(&mut one))
            .await
            .unwrap()
            .unwrap();
        open.push(conn);
        wait_active(&env, i + 1).await;
    }
    let s = env.portico().snapshot.load_full();
    let (_, port) = s
        .services
        .iter()
        .find(|(_, p)| &*p.service == "app")
        .unwrap();
    let loads: Vec<_> = port.endpoints.iter().map(|e| e.load.active()).collect();
    assert_eq!(loads, [2, 2], "lc spreads the connections");
    drop(open);
    wait_active(&env, 0).await;
}
