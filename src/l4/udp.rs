//! UDP through a Service: a per-client flow table (owned by the listener's task, no lock), one
//! connected upstream socket per flow, replies sent back from the Service address; flows idle
//! for longer than the timeout, or whose endpoint is no longer ready, are forgotten.
//!
//! Flows are bounded: every UDP listener of the process draws from one budget
//! (`--udp-max-flows`, at most half the process's open-file limit), since each flow holds a
//! socket and a process out of descriptors stops accepting HTTP connections too. A new client
//! when the budget is spent takes the place of its listener's least recently used flow
//! (`portico_udp_flows_evicted_total`); a listener without flows of its own drops the datagram
//! (`portico_udp_flows_refused_total`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::listener::{L4Config, Target};
use super::scheduler;
use crate::lru::LruTable;
use crate::metrics::UdpFlowMetrics;
use crate::snapshot::SnapshotHandle;
use crate::snapshot::services::Protocol;
use crate::snapshot::services::state::LoadGuard;

/// A listener's flows by client.
type FlowTable<V> = LruTable<SocketAddr, V>;

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

/// The budget of UDP flows shared by every UDP listener of the process, and its metrics.
/// Clones share one budget.
#[derive(Clone, Debug)]
pub struct UdpFlows {
    budget: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    max: usize,
    open: AtomicUsize,
    metrics: UdpFlowMetrics,
}

/// One flow's share of the budget, given back when dropped.
#[derive(Debug)]
struct Permit {
    budget: Arc<Budget>,
}

// === impl UdpFlows ===

impl UdpFlows {
    /// The default of `--udp-max-flows`: room for a busy DNS or game Service, and under the
    /// open-file limits where Portico usually runs (halved below smaller ones).
    pub const DEFAULT_MAX: usize = 4096;

    /// A budget of `max` flows (at least one), capped to half the process's open-file limit so
    /// that UDP clients can never take the descriptors the other listeners need.
    pub fn new(max: usize, metrics: UdpFlowMetrics) -> Self {
        let mut max = max.max(1);
        if let Some(limit) = open_files_limit()
            && max > limit / 2
        {
            warn!(
                udp_max_flows = max,
                open_files_limit = limit,
                "--udp-max-flows lowered to half the open-file limit"
            );
            max = (limit / 2).max(1);
        }
        let budget = Budget {
            max,
            open: AtomicUsize::new(0),
            metrics,
        };
        UdpFlows {
            budget: Arc::new(budget),
        }
    }

    /// The most flows open at once.
    pub fn max(&self) -> usize {
        self.budget.max
    }

    /// A share of the budget, if any is left.
    fn try_open(&self) -> Option<Permit> {
        let budget = &self.budget;
        let taken = budget
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < budget.max).then_some(open + 1)
            });
        taken.ok()?;
        budget.metrics.open.inc();
        Some(Permit {
            budget: Arc::clone(budget),
        })
    }
}

impl Default for UdpFlows {
    fn default() -> Self {
        UdpFlows::new(Self::DEFAULT_MAX, UdpFlowMetrics::default())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.open.fetch_sub(1, Ordering::AcqRel);
        self.budget.metrics.open.dec();
    }
}

/// The soft limit on open files (Linux: from /proc/self/limits), when there is one.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files            1024                 524288               files"
    line.split_whitespace().nth(3)?.parse().ok()
}

struct Flow {
    upstream: Arc<UdpSocket>,
    endpoint: SocketAddr,
    last: Instant,
    replies: JoinHandle<()>,
    _load: LoadGuard,
    /// Taken over by the flow that evicts this one.
    permit: Option<Permit>,
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
    let mut flows: FlowTable<Flow> = FlowTable::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(super::SWEEP_INTERVAL);
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, client)) = received else { continue };
                let flow = match flows.touch(&client) {
                    Some(flow) => flow,
                    None => {
                        let opened = open_flow(&socket, &handle, target, client, &config.udp_flows, &mut flows);
                        match opened.await {
                            Some(flow) => flows.insert(client, flow),
                            None => continue,
                        }
                    }
                };
                flow.last = Instant::now();
                let _ = flow.upstream.send(&buf[..n]).await;
            }
            _ = sweep.tick() => sweep_flows(&mut flows, &handle, target, &config),
        }
    }
}

/// A flow for a new client: an endpoint picked, a share of the budget (the least recently
/// used flow of this listener evicted when none is left), a socket connected to it.
async fn open_flow(
    socket: &Arc<UdpSocket>,
    handle: &SnapshotHandle,
    target: Target,
    client: SocketAddr,
    budget: &UdpFlows,
    flows: &mut FlowTable<Flow>,
) -> Option<Flow> {
    let snapshot = handle.load_full();
    let port = target
        .resolve(&snapshot, Protocol::Udp)
        .and_then(|id| snapshot.services.get(id))?;
    let chosen = scheduler::pick(port, client.ip(), None, Instant::now())?;
    let endpoint = chosen.endpoint.addr;
    let permit = match budget.try_open() {
        Some(permit) => permit,
        None => {
            let metrics = &budget.budget.metrics;
            let Some((evicted, mut flow)) = flows.pop_oldest() else {
                metrics.refused.inc();
                debug!(%client, "UDP flow refused: --udp-max-flows reached");
                return None;
            };
            metrics.evicted.inc();
            debug!(%client, %evicted, "UDP flow evicted for a new one");
            flow.permit.take()?
        }
    };
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
        permit: Some(permit),
    })
}

async fn relay_replies(upstream: Arc<UdpSocket>, socket: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok(n) = upstream.recv(&mut buf).await {
        let _ = socket.send_to(&buf[..n], client).await;
    }
}

fn sweep_flows(
    flows: &mut FlowTable<Flow>,
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
