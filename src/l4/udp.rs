//! UDP through a Service: a per-client flow table (owned by the listener's task, no lock), one
//! connected upstream socket per flow, replies sent back from the Service address; flows idle
//! for longer than the timeout, or whose endpoint is no longer ready, are forgotten.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::debug;

use super::listener::{L4Config, Target};
use super::scheduler;
use crate::snapshot::SnapshotHandle;
use crate::snapshot::services::Protocol;
use crate::snapshot::services::state::LoadGuard;

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// Binds the Service-side socket.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

struct Flow {
    upstream: Arc<UdpSocket>,
    endpoint: SocketAddr,
    last: Instant,
    replies: JoinHandle<()>,
    _load: LoadGuard,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Relays datagrams until the task is aborted.
pub(super) async fn serve(
    socket: UdpSocket,
    handle: SnapshotHandle,
    target: Target,
    config: L4Config,
) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(super::SWEEP_INTERVAL);
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, client)) = received else { continue };
                let flow = match flows.entry(client) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => match open_flow(&socket, &handle, target, client).await {
                        Some(flow) => e.insert(flow),
                        None => continue,
                    },
                };
                flow.last = Instant::now();
                let _ = flow.upstream.send(&buf[..n]).await;
            }
            _ = sweep.tick() => sweep_flows(&mut flows, &handle, target, &config),
        }
    }
}

async fn open_flow(
    socket: &Arc<UdpSocket>,
    handle: &SnapshotHandle,
    target: Target,
    client: SocketAddr,
) -> Option<Flow> {
    let snapshot = handle.load_full();
    let port = target
        .resolve(&snapshot, Protocol::Udp)
        .and_then(|id| snapshot.services.get(id))?;
    let chosen = scheduler::pick(port, client.ip(), None, Instant::now())?;
    let endpoint = chosen.endpoint.addr;
    let local: SocketAddr = if endpoint.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let upstream = UdpSocket::bind(local).await.ok()?;
    upstream.connect(endpoint).await.ok()?;
    let upstream = Arc::new(upstream);
    let replies = tokio::spawn(relay_replies(upstream.clone(), socket.clone(), client));
    debug!(%client, %endpoint, "UDP flow opened");
    Some(Flow {
        upstream,
        endpoint,
        last: Instant::now(),
        replies,
        _load: chosen.guard,
    })
}

async fn relay_replies(upstream: Arc<UdpSocket>, socket: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok(n) = upstream.recv(&mut buf).await {
        let _ = socket.send_to(&buf[..n], client).await;
    }
}

fn sweep_flows(
    flows: &mut HashMap<SocketAddr, Flow>,
    handle: &SnapshotHandle,
    target: Target,
    config: &L4Config,
) {
    let snapshot = handle.load();
    let port = target
        .resolve(&snapshot, Protocol::Udp)
        .and_then(|id| snapshot.services.get(id));
    let now = Instant::now();
    flows.retain(|client, flow| {
        let ready =
            port.is_some_and(|p| p.ready_endpoints().iter().any(|e| e.addr == flow.endpoint));
        let keep = ready && now.duration_since(flow.last) < config.udp_idle_timeout;
        if !keep {
            debug!(%client, endpoint = %flow.endpoint, ready, "UDP flow closed");
        }
        keep
    });
}
