//! The UDP flow table is bounded (`--udp-max-flows`): over real sockets on loopback, 50 client
//! sockets through a NodePort limited to 8 flows. Before the bound each source address cost an
//! upstream socket for the idle timeout (3,000 sources, 3,000 sockets: with a 2,048 file limit
//! the process's HTTP listeners stopped accepting).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::Env;
use support::client::{self, get};
use support::l4::{free_node, service, slices};
use support::manifests::class;
use tokio::net::UdpSocket;
use tokio::time::timeout;

const MAX_FLOWS: usize = 8;
const CLIENTS: usize = 50;

/// A UDP backend that answers each datagram with the port it came from: the upstream socket
/// of the datagram's flow.
async fn udp_backend() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket
                .send_to(from.port().to_string().as_bytes(), from)
                .await;
        }
    });
    addr
}

/// Sends from `socket` until an answer comes (bounded): the upstream port of its flow.
async fn ask(socket: &UdpSocket, to: SocketAddr) -> u16 {
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        socket.send_to(b"hi", to).await.unwrap();
        if let Ok(Ok((n, _))) =
            timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
        {
            return String::from_utf8_lossy(&buf[..n]).parse().unwrap();
        }
    }
    panic!("no UDP answer from {to}");
}

/// A sample of the metrics exposition.
async fn metric(env: &Env, name: &str) -> f64 {
    let reply = client::h1(env.admin(), get("localhost", "/metrics")).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let line = text.lines().find(|l| l.split(' ').next() == Some(name));
    let line = line.unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Sockets this process has open (Portico runs in it).
fn open_sockets() -> usize {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap();
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// 50 sources through a NodePort limited to 8 flows: never more than 8 flows (the gauge, and
/// the sockets the process holds), each new source beyond 8 evicts the least recently used
/// flow (42 evictions counted), and the 8 most recent flows keep working on their own
/// upstream sockets.
#[tokio::test]
async fn udp_flows_are_bounded_and_the_oldest_idle_is_evicted() {
    let backend = udp_backend().await;
    let node = free_node();
    let (node_address, port) = (node.ip().to_string(), node.port());
    let range = format!("{port}-{port}");
    let max = MAX_FLOWS.to_string();
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", service("udp-app", "UDP")),
        ("udp.yaml", slices("udp-app", "UDP", &[(backend, true)])),
    ];
    let flags = [
        "--proxy-nodeports",
        "--node-address",
        &node_address,
        "--service-node-port-range",
        &range,
        "--udp-max-flows",
        &max,
    ];
    let env = Env::start_with(&files, &flags).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let before = open_sockets();
    let mut upstream_of: HashMap<usize, u16> = HashMap::new();
    for (i, socket) in clients.iter().enumerate() {
        upstream_of.insert(i, ask(socket, node).await);
        let flows = metric(&env, "portico_udp_flows").await;
        assert!(
            flows <= MAX_FLOWS as f64,
            "{flows} flows after {} clients",
            i + 1
        );
    }
    // The fewest over a moment: a connection of the last scrape may still be closing.
    let mut grown = usize::MAX;
    for _ in 0..10 {
        grown = grown.min(open_sockets().saturating_sub(before));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        grown <= MAX_FLOWS + 2,
        "{grown} sockets more for {CLIENTS} sources"
    );
    let evicted = metric(&env, "portico_udp_flows_evicted_total").await;
    assert_eq!(evicted, (CLIENTS - MAX_FLOWS) as f64);
    for i in CLIENTS - MAX_FLOWS..CLIENTS {
        let again = ask(&clients[i], node).await;
        assert_eq!(again, upstream_of[&i], "client {i} keeps its flow");
    }
    assert_eq!(
        metric(&env, "portico_udp_flows_evicted_total").await,
        evicted
    );
}
