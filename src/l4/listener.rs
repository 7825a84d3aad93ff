//! NodePort and ClusterIP listeners that follow the snapshot: on each generation the wanted
//! set of (address, protocol) is reconciled with the running one. Each accepted connection (or
//! UDP flow) looks its Service port up in the snapshot of that moment, so a swap re-points a
//! listener without restarting it, and established connections are never cut.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::scheduler;
use crate::snapshot::services::{ClusterIp, Protocol, ServicePortId};
use crate::snapshot::{Snapshot, SnapshotHandle};

/// What the L4 listeners serve.
#[derive(Clone, Debug)]
pub struct L4Config {
    /// Bind each NodePort (`--proxy-nodeports`).
    pub node_ports: bool,
    /// Bind each ClusterIP:port that is local (`--proxy-cluster-ips`).
    pub cluster_ips: bool,
    /// The node's addresses NodePorts are bound on (`--node-address`, default 0.0.0.0).
    pub node_addresses: Vec<IpAddr>,
    /// Connecting to an endpoint.
    pub connect_timeout: Duration,
    /// A UDP flow without traffic for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// The budget of UDP flows every UDP listener shares (`--udp-max-flows`).
    pub udp_flows: super::UdpFlows,
    /// The client connection limit (`--max-connections`) the L7 listeners count against: a
    /// TCP NodePort or ClusterIP connection counts too, so the L4 plane cannot take the file
    /// descriptors the proxy keeps for its clients. `None`: no limit.
    pub connections: Option<Arc<crate::resources::ConnectionLimit>>,
}

impl Default for L4Config {
    fn default() -> Self {
        L4Config {
            node_ports: false,
            cluster_ips: false,
            node_addresses: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            connect_timeout: Duration::from_secs(5),
            udp_idle_timeout: Duration::from_secs(30),
            udp_flows: super::UdpFlows::default(),
            connections: None,
        }
    }
}

/// What a listener serves: the port is found again in each new snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A NodePort.
    NodePort(u16),
    /// A ClusterIP and port.
    ClusterIp(IpAddr, u16),
}

// === impl Target ===

impl Target {
    /// The Service port this target serves in a snapshot.
    pub fn resolve(self, snapshot: &Snapshot, protocol: Protocol) -> Option<ServicePortId> {
        match self {
            Target::NodePort(n) => snapshot.services.by_node_port(n, protocol),
            Target::ClusterIp(ip, port) => snapshot.services.by_cluster_ip(ip, port, protocol),
        }
    }
}

/// The listeners a snapshot asks for.
pub fn wanted(snapshot: &Snapshot, config: &L4Config) -> BTreeMap<(SocketAddr, Protocol), Target> {
    let mut out = BTreeMap::new();
    for (_, port) in snapshot
        .services
        .iter()
        .filter(|(_, p)| matches!(p.protocol, Protocol::Tcp | Protocol::Udp))
    {
        if let (true, Some(n)) = (config.node_ports, port.node_port) {
            for addr in &config.node_addresses {
                out.insert(
                    (SocketAddr::new(*addr, n), port.protocol),
                    Target::NodePort(n),
                );
            }
        }
        if let (true, ClusterIp::Ips(ips)) = (config.cluster_ips, &port.cluster_ip) {
            for ip in ips {
                out.insert(
                    (SocketAddr::new(*ip, port.port), port.protocol),
                    Target::ClusterIp(*ip, port.port),
                );
            }
        }
    }
    out
}

/// Runs the listeners until `stop` turns true, reconciling on every new snapshot. Nothing is
/// bound before the first snapshot is published (generation 0 is the empty one): until then
/// a NodePort refuses connections rather than forwarding by a table that is not there yet.
pub async fn run(snapshot: SnapshotHandle, config: L4Config, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<(SocketAddr, Protocol), AbortHandle> = HashMap::new();
    let mut generation = 0;
    let mut sweep = tokio::time::interval(super::SWEEP_INTERVAL * 10);
    loop {
        let current = snapshot.load_full();
        if current.generation != generation {
            generation = current.generation;
            reconcile(&snapshot, &current, &config, &mut running);
        }
        tokio::select! {
            _ = snapshot.wait_for(generation + 1) => {}
            _ = sweep.tick() => expire_affinity(&current),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, task) in running {
        task.abort();
    }
}

/// Forgets ClientIP affinity entries idle past their Service's timeout.
pub fn expire_affinity(snapshot: &Snapshot) {
    let now = Instant::now();
    for (_, port) in snapshot.services.iter() {
        if let crate::snapshot::services::SessionAffinity::ClientIp { timeout_seconds } =
            port.session_affinity
        {
            port.affinity
                .expire(now, Duration::from_secs(u64::from(timeout_seconds)));
        }
    }
}

fn reconcile(
    handle: &SnapshotHandle,
    snapshot: &Snapshot,
    config: &L4Config,
    running: &mut HashMap<(SocketAddr, Protocol), AbortHandle>,
) {
    let wanted = wanted(snapshot, config);
    running.retain(|key, task| {
        let keep = wanted.contains_key(key);
        if !keep {
            // Only the accept loop stops: established connections run in tasks of their own.
            task.abort();
            info!(addr = %key.0, protocol = ?key.1, "L4 listener removed");
        }
        keep
    });
    for (&(addr, protocol), &target) in &wanted {
        if running.contains_key(&(addr, protocol)) {
            continue;
        }
        match start(handle.clone(), addr, protocol, target, config.clone()) {
            Ok(task) => {
                info!(%addr, ?protocol, ?target, "L4 listener added");
                running.insert((addr, protocol), task);
            }
            // A ClusterIP that is not an address of this node is not ours to serve.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                debug!(%addr, "not a local address")
            }
            Err(error) => warn!(%addr, ?protocol, %error, "cannot bind L4 listener"),
        }
    }
}

fn start(
    handle: SnapshotHandle,
    addr: SocketAddr,
    protocol: Protocol,
    target: Target,
    config: L4Config,
) -> std::io::Result<AbortHandle> {
    match protocol {
        Protocol::Tcp => {
            let listener = bind_tcp(addr)?;
            Ok(tokio::spawn(accept_tcp(listener, handle, target, config)).abort_handle())
        }
        _ => {
            let socket = super::udp::bind(addr)?;
            Ok(tokio::spawn(super::udp::serve(socket, handle, target, config)).abort_handle())
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = crate::proxy::listener::bind(addr, "L4").map_err(|e| e.source)?;
    // Linux copies TCP_NODELAY to accepted sockets: one setsockopt per listener instead of
    // one per connection.
    #[cfg(target_os = "linux")]
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

async fn accept_tcp(
    listener: TcpListener,
    handle: SnapshotHandle,
    target: Target,
    config: L4Config,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Over the connection limit: closed at once (the proxy counts it refused).
                let permit = match &config.connections {
                    None => None,
                    Some(limit) => match limit.try_acquire() {
                        Some(permit) => Some(permit),
                        None => {
                            debug!(%peer, ?target, "over the connection limit; closed");
                            continue;
                        }
                    },
                };
                let forwarding = connect_and_forward(
                    stream,
                    peer,
                    handle.load_full(),
                    target,
                    config.connect_timeout,
                );
                drop(tokio::spawn(async move {
                    forwarding.await;
                    drop(permit);
                }));
            }
            Err(error) => {
                warn!(%error, "L4 accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects the client to an endpoint (one retry on another ready endpoint) and copies both
/// ways. The snapshot is released once the endpoint is chosen; the endpoint's load stays
/// counted (for `lc` and `p2c`) until both directions have ended.
async fn connect_and_forward(
    mut client: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    target: Target,
    timeout: Duration,
) {
    let Some(port) = target
        .resolve(&snapshot, Protocol::Tcp)
        .and_then(|id| snapshot.services.get(id))
    else {
        return debug!(%peer, ?target, "no Service port; closing");
    };
    let mut exclude = None;
    for _ in 0..2 {
        let Some(chosen) = scheduler::pick(port, peer.ip(), exclude, Instant::now()) else {
            return debug!(%peer, ?target, "no ready endpoint; closing");
        };
        let (addr, guard) = (chosen.endpoint.addr, chosen.guard);
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(mut upstream)) => {
                guard.load().succeeded();
                drop(snapshot);
                let _ = upstream.set_nodelay(true);
                #[cfg(not(target_os = "linux"))]
                let _ = client.set_nodelay(true);
                let copied = super::forward::forward(&mut client, &mut upstream).await;
                drop(guard);
                return debug!(%peer, %addr, ?copied, "L4 connection closed");
            }
            Ok(Err(error)) => debug!(%peer, %addr, %error, "L4 connect failed"),
            Err(_) => debug!(%peer, %addr, "L4 connect timed out"),
        }
        if guard.load().failed() {
            warn!(%peer, %addr, "endpoint out for its fail-timeout (portico.dev/max-fails reached)");
        }
        exclude = Some(addr);
    }
}
