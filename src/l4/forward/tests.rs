#[cfg(target_os = "linux")]
use std::sync::Arc;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Two ends of a loopback TCP connection.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// client ⇄ (proxy side a, proxy side b) ⇄ server, with `forward` between a and b.
#[tokio::test]
async fn forwards_both_ways_and_passes_each_eof_on() {
    let ((mut client, mut a), (mut b, mut server)) = (pair().await, pair().await);
    let proxy = tokio::spawn(async move { forward(&mut a, &mut b).await });
    let (up, down) = (noise(3 << 20, 1), noise(2 << 20, 2));
    let (c, s) = tokio::join!(
        async {
            client.write_all(&up).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        },
        async {
            server.write_all(&down).await.unwrap();
            server.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    assert!(c == down && s == up);
    let counts = proxy.await.unwrap().unwrap();
    assert_eq!(counts, (up.len() as u64, down.len() as u64));
}

/// `pipes`, counting how many pipes were asked for.
#[cfg(target_os = "linux")]
fn counted(
    pipes: impl Fn() -> std::io::Result<pipe::Pipe> + Send + Sync + 'static,
) -> (
    impl Fn() -> std::io::Result<pipe::Pipe> + Send + Sync + 'static,
    Arc<AtomicUsize>,
) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let counting = move || {
        counter.fetch_add(1, Ordering::Relaxed);
        pipes()
    };
    (counting, asked)
}

/// One direction, `a` → `b`, with `pipes` counted: how many pipes it asked for.
#[cfg(target_os = "linux")]
fn one_way_counted(
    a: TcpStream,
    b: TcpStream,
    pipes: impl Fn() -> std::io::Result<pipe::Pipe> + Send + Sync + 'static,
) -> (
    tokio::task::JoinHandle<std::io::Result<u64>>,
    Arc<AtomicUsize>,
) {
    let (pipes, asked) = counted(pipes);
    let proxy = tokio::spawn(async move {
        let (moved, other) = (AtomicU64::new(0), AtomicU64::new(0));
        splice::one_way(&a, &b, pipes, &moved, &other).await
    });
    (proxy, asked)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_stream_without_a_pipe_is_copied() {
    let ((mut client, a), (b, mut server)) = (pair().await, pair().await);
    let no_pipe = || Err(std::io::Error::other("no pipe"));
    let (proxy, asked) = one_way_counted(a, b, no_pipe);
    let up = noise(3 << 20, 3);
    let (_, got) = tokio::join!(
        async {
            client.write_all(&up).await.unwrap();
            client.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    assert!(got == up, "{} bytes of {}", got.len(), up.len());
    assert_eq!(proxy.await.unwrap().unwrap(), up.len() as u64);
    assert!(asked.load(Ordering::Relaxed) > 0, "turned to splicing");
}

/// 1.8 MB one way: copied up to `STREAMING`, spliced after, in order across the switch.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_stream_turns_to_splicing_and_stays_in_order() {
    let ((mut client, a), (b, mut server)) = (pair().await, pair().await);
    let (proxy, asked) = one_way_counted(a, b, pipe::take);
    for round in 0..3u32 {
        let chunk = noise(600_000, round + 10);
        client.write_all(&chunk).await.unwrap();
        let mut got = vec![0; chunk.len()];
        server.read_exact(&mut got).await.unwrap();
        assert!(got == chunk, "round {round}");
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(proxy.await.unwrap().unwrap(), 1_800_000);
    assert!(asked.load(Ordering::Relaxed) > 0, "never spliced");
}

/// Requests and 256 KiB responses in turn, 4 MiB each way in all: copied throughout, as the
/// turns keep either direction from running `STREAMING` bytes alone.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn request_response_traffic_is_copied_not_spliced() {
    let ((mut client, a), (b, mut server)) = (pair().await, pair().await);
    let (pipes, asked) = counted(pipe::take);
    let proxy = tokio::spawn(async move {
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        tokio::try_join!(
            splice::one_way(&a, &b, &pipes, &up, &down),
            splice::one_way(&b, &a, &pipes, &down, &up)
        )
    });
    let message = noise(256 << 10, 7);
    for round in 0..16 {
        client.write_all(&message).await.unwrap();
        let mut got = vec![0; message.len()];
        server.read_exact(&mut got).await.unwrap();
        assert!(got == message, "request {round}");
        server.write_all(&message).await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert!(got == message, "response {round}");
    }
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    let moved = proxy.await.unwrap().unwrap();
    assert_eq!(moved, (4 << 20, 4 << 20));
    assert_eq!(asked.load(Ordering::Relaxed), 0, "spliced");
}
