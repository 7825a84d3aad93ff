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

#[cfg(target_os = "linux")]
#[tokio::test]
async fn without_a_pipe_a_burst_is_copied() {
    let ((mut client, a), (b, mut server)) = (pair().await, pair().await);
    let no_pipe = || Err(std::io::Error::other("no pipe"));
    let proxy = tokio::spawn(async move { splice::one_way(&a, &b, no_pipe).await });
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
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn bursts_through_pooled_pipes_arrive_in_order() {
    let ((mut client, a), (b, mut server)) = (pair().await, pair().await);
    let proxy = tokio::spawn(async move { splice::one_way(&a, &b, pipe::take).await });
    for round in 0..3u32 {
        let chunk = noise(100_000, round + 10);
        client.write_all(&chunk).await.unwrap();
        let mut got = vec![0; chunk.len()];
        server.read_exact(&mut got).await.unwrap();
        assert!(got == chunk, "round {round}");
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(proxy.await.unwrap().unwrap(), 300_000);
}
