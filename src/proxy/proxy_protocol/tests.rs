use std::net::SocketAddr;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Sends `bytes` then "rest" on a loopback connection; what `read_header` gave, and what was
/// left to read after it.
async fn exchange(bytes: Vec<u8>) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // In pieces, as a slow balancer might send it.
        for chunk in bytes.chunks(5) {
            s.write_all(chunk).await.unwrap();
            s.flush().await.unwrap();
        }
        s.write_all(b"rest").await.unwrap();
        s.shutdown().await.unwrap();
        s
    });
    let (mut server, _) = listener.accept().await.unwrap();
    let got = read_header(&mut server)
        .await
        .map(|a| a.map(|(source, _)| source))
        .map_err(|e| e.to_string());
    let mut after = Vec::new();
    let _ = server.read_to_end(&mut after).await;
    drop(client.await);
    (got, after)
}

fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    h.extend_from_slice(addresses);
    h
}

#[tokio::test]
async fn v1_and_v2_headers_name_the_client_and_nothing_more_is_read() {
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(),
            Some("203.0.113.7:51234"),
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 80\r\n".to_vec(),
            Some("[2001:db8::7]:51234"),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), None),
        (
            v2(
                1,
                0x11,
                &[203, 0, 113, 9, 10, 0, 0, 1, 0xC8, 0x01, 0x01, 0xBB],
            ),
            Some("203.0.113.9:51201"),
        ),
        // LOCAL (a health check of the balancer itself): the peer is the client.
        (v2(0, 0x00, &[]), None),
    ];
    for (header, want) in cases {
        let (got, after) = exchange(header.clone()).await;
        let want = want.map(|w| w.parse::<SocketAddr>().unwrap());
        assert_eq!(got, Ok(want), "{:?}", String::from_utf8_lossy(&header));
        assert_eq!(after, b"rest", "only the header was consumed");
    }
}

#[tokio::test]
async fn garbage_is_refused() {
    let long = format!("PROXY TCP4 {} 1 2\r\n", "1".repeat(200)).into_bytes();
    for header in [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n".to_vec(),
        b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n".to_vec(),
        long,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        // A v2 header announcing 65535 bytes.
        v2(1, 0x11, &[])
            .into_iter()
            .take(14)
            .chain([0xff, 0xff])
            .collect(),
        // Short: the connection ends inside the header.
        b"PROXY TCP4 1.2".to_vec(),
    ] {
        let (got, _) = exchange(header.clone()).await;
        assert!(
            got.is_err(),
            "{:?} gave {got:?}",
            String::from_utf8_lossy(&header)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Any bytes: an address, none, or a refusal; never a panic.
    #[test]
    fn any_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..200), v1 in any::<bool>()) {
        let mut input = if v1 { b"PROXY ".to_vec() } else { V2_SIGNATURE.to_vec() };
        input.extend_from_slice(&bytes);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = rt.block_on(exchange(input));
    }
}
