//! The L4 service dataplane: what kube-proxy does, in user space. Service ports (ClusterIP,
//! NodePort) → ready endpoints through a scheduler with session affinity; TCP and UDP listeners
//! that follow the snapshot; and renderings that explain the table the way `ipvsadm -Ln` and
//! `iptables-save -t nat` show kube-proxy's.

pub mod explain;
mod forward;
pub mod listener;
pub mod render;
pub mod scheduler;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::proxy::balance::EndpointPicker;
use crate::snapshot::services::ServicePort;

pub use listener::{L4Config, run};
pub use scheduler::{Pick, pick};
pub use udp::UdpFlows;

/// The L7 proxy's endpoint picker: the Service port's own scheduler and affinity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Schedulers;

/// The time a pick of `port` is made at: only ClientIP affinity reads it, so every other port
/// skips the clock read.
fn clock(port: &ServicePort) -> Instant {
    static UNUSED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    match port.session_affinity {
        crate::snapshot::services::SessionAffinity::None => *UNUSED.get_or_init(Instant::now),
        _ => Instant::now(),
    }
}

impl EndpointPicker for Schedulers {
    fn pick<'a>(
        &self,
        port: &'a ServicePort,
        client: IpAddr,
        exclude: Option<SocketAddr>,
    ) -> Option<Pick<'a>> {
        scheduler::pick(port, client, exclude, clock(port))
    }

    fn pick_by<'a>(
        &self,
        port: &'a ServicePort,
        by: crate::snapshot::services::Scheduler,
        client: IpAddr,
        exclude: Option<SocketAddr>,
    ) -> Option<Pick<'a>> {
        scheduler::pick_with(port, by, client, exclude, clock(port))
    }
}

/// How often idle affinity entries and UDP flows are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
