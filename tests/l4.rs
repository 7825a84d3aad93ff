//! The L4 listeners end to end on loopback: TCP and UDP through NodePorts and ClusterIPs to
//! echo servers, and an endpoint turning not ready while a connection to it stays open.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use portico::snapshot::Snapshot;
use portico::snapshot::services::ClusterIp;
use support::Env;
use support::l4::{free_node, service, slices};
use support::manifests::class;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

/// A TCP server that greets with its name and then echoes lines.
async fn tcp_echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.split();
                let _ = write.write_all(format!("{name}\n").as_bytes()).await;
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = write.write_all(format!("{line}\n").as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// A UDP server that answers `name:payload`.
async fn udp_echo(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    });
    addr
}

fn cluster_ip(s: &Snapshot, name: &str) -> IpAddr {
    let port = s
        .services
        .iter()
        .map(|(_, p)| p)
        .find(|p| &*p.service == name)
        .unwrap();
    match &port.cluster_ip {
        ClusterIp::Ips(ips) => ips[0],
        other => panic!("{other:?}"),
    }
}

/// Connects (retrying while the listener comes up) and reads the greeting.
async fn tcp_connect(addr: SocketAddr) -> (String, BufReader<TcpStream>) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    timeout(LIMIT, reader.read_line(&mut greeting))
        .await
        .expect("greeting")
        .unwrap();
    (greeting.trim().to_string(), reader)
}

async fn echo_line(conn: &mut BufReader<TcpStream>, text: &str) -> String {
    conn.get_mut()
        .write_all(format!("{text}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    timeout(LIMIT, conn.read_line(&mut line))
        .await
        .expect("echo")
        .unwrap();
    line.trim().to_string()
}

async fn udp_round_trip(to: SocketAddr, payload: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..50 {
        socket.send_to(payload.as_bytes(), to).await.unwrap();
        if let Ok(Ok((n, _))) =
            timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
        {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    panic!("no UDP answer from {to}");
}

async fn start(node: SocketAddr, tcp: &[(SocketAddr, bool)], udp: &[(SocketAddr, bool)]) -> Env {
    let node_port = node.port();
    let node_address = node.ip().to_string();
    let cidr = format!(
        "127.{}.{}.0/24",
        100 + std::process::id() % 100,
        node_port % 250
    );
    let range = format!("{node_port}-{node_port}");
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            format!(
                "{}---\n{}",
                service("tcp-app", "TCP"),
                service("udp-app", "UDP")
            ),
        ),
        ("tcp.yaml", slices("tcp-app", "TCP", tcp)),
        ("udp.yaml", slices("udp-app", "UDP", udp)),
    ];
    let flags = [
        "--proxy-nodeports",
        "--node-address",
        &node_address,
        "--proxy-cluster-ips",
        "--service-cidr",
        &cidr,
        "--service-node-port-range",
        &range,
    ];
    Env::start_with(&files, &flags).await
}

#[tokio::test]
async fn tcp_and_udp_through_node_ports_and_cluster_ips() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let (ua, ub) = (udp_echo("ua").await, udp_echo("ub").await);
    let node = free_node();
    let env = start(node, &[(a, true), (b, true)], &[(ua, true), (ub, true)]).await;
    let s = env.wait_for("allocations", |_| true).await;
    let vip = SocketAddr::new(cluster_ip(&s, "tcp-app"), 7000);
    let udp_vip = SocketAddr::new(cluster_ip(&s, "udp-app"), 7000);
    for target in [node, vip] {
        let mut names = Vec::new();
        for i in 0..4 {
            let (name, mut conn) = tcp_connect(target).await;
            assert_eq!(
                echo_line(&mut conn, &format!("ping {i}")).await,
                format!("ping {i}")
            );
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["a", "a", "b", "b"], "round robin through {target}");
    }
    for target in [node, udp_vip] {
        let mut answers = std::collections::BTreeSet::new();
        for i in 0..4 {
            let answer = udp_round_trip(target, &format!("hello {i}")).await;
            assert!(answer.ends_with(&format!(":hello {i}")), "{answer}");
            answers.insert(answer.split(':').next().unwrap().to_string());
        }
        assert_eq!(
            answers.len(),
            2,
            "new UDP clients are spread: {answers:?} via {target}"
        );
    }
    // One client, one flow: the same endpoint answers every datagram.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut first = None;
    for i in 0..5 {
        socket
            .send_to(format!("again {i}").as_bytes(), node)
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = timeout(LIMIT, socket.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let who = String::from_utf8_lossy(&buf[..n])
            .split(':')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(first.get_or_insert(who.clone()), &who);
    }
}

#[tokio::test]
async fn an_endpoint_turning_not_ready_gets_no_new_connections() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let ua = udp_echo("ua").await;
    let node = free_node();
    let env = start(node, &[(a, true), (b, true)], &[(ua, true)]).await;
    let (first, mut established) = tcp_connect(node).await;
    let (gone, stays) = if first == "a" { (a, b) } else { (b, a) };
    let other = if first == "a" { "b" } else { "a" };
    support::write_atomically(
        &env.dir.path().join("tcp.yaml"),
        &slices("tcp-app", "TCP", &[(gone, false), (stays, true)]),
    );
    env.wait_for("the endpoint to turn not ready", |s| {
        s.services
            .iter()
            .any(|(_, p)| &*p.service == "tcp-app" && p.ready_endpoints().len() == 1)
    })
    .await;
    for i in 0..6 {
        let (name, mut conn) = tcp_connect(node).await;
        assert_eq!(name, other, "new connection {i}");
        assert_eq!(echo_line(&mut conn, "x").await, "x");
    }
    for i in 0..3 {
        assert_eq!(
            echo_line(&mut established, &format!("still {i}")).await,
            format!("still {i}"),
            "the established connection finishes its work"
        );
    }
}

/// `wlc` through a NodePort: held connections settle at the weights' ratio (IPVS's weighted
/// least-connection), an endpoint of weight 0 takes none, and `ipvsadm` rendering names it.
#[tokio::test]
async fn wlc_spreads_open_connections_by_weight() {
    let (a, b, c) = (
        tcp_echo("a").await,
        tcp_echo("b").await,
        tcp_echo("c").await,
    );
    let node = free_node();
    let node_port = node.port();
    let weights = format!("{a}=2, {b}=1, {c}=0");
    let annotations =
        format!("{{portico.dev/load-balancer: wlc, portico.dev/weights: {weights:?}}}");
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            support::l4::service_with("tcp-app", "TCP", &annotations),
        ),
        (
            "tcp.yaml",
            slices("tcp-app", "TCP", &[(a, true), (b, true), (c, true)]),
        ),
    ];
    let node_address = node.ip().to_string();
    let range = format!("{node_port}-{node_port}");
    let flags = [
        "--proxy-nodeports",
        "--node-address",
        &node_address,
        "--service-node-port-range",
        &range,
    ];
    let env = Env::start_with(&files, &flags).await;
    let mut held = Vec::new();
    let mut names = Vec::new();
    for i in 0..6 {
        let (name, mut conn) = tcp_connect(node).await;
        assert_eq!(
            echo_line(&mut conn, &format!("hi {i}")).await,
            format!("hi {i}")
        );
        names.push(name);
        held.push(conn);
    }
    names.sort();
    assert_eq!(
        names,
        ["a", "a", "a", "a", "b", "b"],
        "2:1, nothing to weight 0"
    );
    // ipvsadm shows the scheduler, the weights and the open connections.
    let snapshot = env.wait_for("the Service", |_| true).await;
    let table = portico::l4::render::ipvsadm(&snapshot, &[node.ip()]);
    let line = format!("TCP  {node} wlc");
    assert!(table.contains(&line), "{table}");
    let row = |addr: SocketAddr, weight: u32, active: u32| {
        format!(
            "  -> {:<29}{:<8}{:<7}{:<11}0",
            addr.to_string(),
            "Masq",
            weight,
            active
        )
    };
    for (addr, weight, active) in [(a, 2, 4), (b, 1, 2), (c, 0, 0)] {
        assert!(table.contains(&row(addr, weight, active)), "{table}");
    }
    drop(held);
    env.shutdown().await;
}
