//! The service table: every Service port with its ClusterIP, NodePort, target port and
//! endpoints (ready ones first), looked up by (namespace, name, port) in O(1).

mod alloc;
mod build;
mod endpoints;
pub mod health;
mod reuse;
pub mod state;

pub use alloc::AllocConfig;
use state::{Affinity, EndpointLoad, Shared};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

use super::routes::PortRef;

/// Index of a Service port in its snapshot's [`ServiceTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServicePortId(pub u32);

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    /// TCP (the default).
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP (listed, not proxied).
    #[serde(rename = "SCTP")]
    Sctp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A Service port's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name, resolved per endpoint.
    Name(Box<str>),
}

/// The `spec.type` of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ServiceType {
    /// ClusterIP (the default).
    ClusterIP,
    /// NodePort.
    NodePort,
    /// LoadBalancer.
    LoadBalancer,
    /// ExternalName: a DNS name, no endpoints.
    ExternalName,
}

/// The virtual IP of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterIp {
    /// Allocated addresses (`clusterIPs`, or `clusterIP`).
    Ips(Vec<IpAddr>),
    /// `clusterIP: None`.
    Headless,
    /// None set (the embedded mode allocates later).
    Unallocated,
}

/// `spec.sessionAffinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionAffinity {
    /// No affinity.
    None,
    /// Keep a client IP on one endpoint for this long.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800).
        timeout_seconds: u32,
    },
}

/// How a Service port picks among its ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Scheduler {
    /// `rr`: round robin.
    #[default]
    #[serde(rename = "rr")]
    RoundRobin,
    /// `wrr`: weighted round robin (weights from `portico.dev/weights`).
    #[serde(rename = "wrr")]
    WeightedRoundRobin,
    /// `lc`: least outstanding connections or requests.
    #[serde(rename = "lc")]
    LeastConnections,
    /// `sh`: source hashing (rendezvous hashing of the client IP).
    #[serde(rename = "sh")]
    SourceHash,
    /// `random`.
    #[serde(rename = "random")]
    Random,
    /// `p2c`: the less loaded of two random endpoints.
    #[serde(rename = "p2c")]
    PowerOfTwo,
    /// `wlc`: weighted least connection, IPVS's formula: the least (active × 256 + inactive)
    /// / weight; weight 0 takes nothing new.
    #[serde(rename = "wlc")]
    WeightedLeastConnection,
    /// `ewma`: ingress-nginx's peak-EWMA of response times, the better of two random endpoints.
    #[serde(rename = "ewma")]
    Ewma,
}

// === impl Scheduler ===

impl Scheduler {
    /// Every scheduler.
    pub const ALL: [Scheduler; 8] = [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnections,
        Scheduler::WeightedLeastConnection,
        Scheduler::SourceHash,
        Scheduler::Random,
        Scheduler::PowerOfTwo,
        Scheduler::Ewma,
    ];

    /// The short name (as `ipvsadm` prints it, where it has one).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnections => "lc",
            Scheduler::SourceHash => "sh",
            Scheduler::Random => "random",
            Scheduler::PowerOfTwo => "p2c",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::Ewma => "ewma",
        }
    }
}

impl std::str::FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scheduler::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown scheduler {s:?} (rr, wrr, lc, wlc, sh, random, p2c or ewma)")
            })
    }
}

/// One endpoint of a Service port, with the target port resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Address and resolved target port.
    pub addr: SocketAddr,
    /// Ready and not terminating: may receive new traffic.
    pub ready: bool,
    /// The node it runs on, when known.
    pub node_name: Option<Box<str>>,
    /// Weight for `wrr` and `wlc` (default 1; 0 takes no new connections).
    pub weight: u32,
    /// Open connections or requests, and health (runtime state, carried across snapshots).
    #[serde(rename = "healthy", serialize_with = "healthy")]
    pub load: Shared<EndpointLoad>,
}

fn healthy<S: serde::Serializer>(load: &Shared<EndpointLoad>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(load.healthy())
}

/// One port of one Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// Namespace of the Service.
    pub namespace: Arc<str>,
    /// Name of the Service.
    pub service: Arc<str>,
    /// The port's name (required when a Service has several ports).
    pub name: Option<Box<str>>,
    /// The Service port number.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// `appProtocol` (`https`, `kubernetes.io/h2c`…), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<Box<str>>,
    /// Active health checks of its endpoints (`portico.dev/health-check-*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Arc<health::HealthCheck>>,
    /// Passive health of its endpoints (`portico.dev/max-fails`, `portico.dev/fail-timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<health::Passive>,
    /// Where it forwards on each endpoint.
    pub target_port: TargetPort,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// The virtual IP(s).
    pub cluster_ip: ClusterIp,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// For ExternalName Services, the DNS name.
    pub external_name: Option<Box<str>>,
    /// Session affinity.
    pub session_affinity: SessionAffinity,
    /// How endpoints are picked.
    pub scheduler: Scheduler,
    /// Endpoints: the ready ones first, each group sorted by address.
    pub endpoints: Vec<Endpoint>,
    ready: usize,
    /// For `wrr`: a smooth weighted sequence of indexes into the ready endpoints.
    #[serde(skip)]
    pub wrr: Box<[u32]>,
    /// ClientIP affinity entries (runtime state, carried across snapshots).
    #[serde(skip)]
    pub affinity: Shared<Affinity>,
    /// Round-robin position of this port. A port built again starts at 0; a port whose
    /// Service did not change is the same shared port in the next snapshot, position and all.
    #[serde(skip)]
    pub cursor: Cursor,
}

/// A lock-free counter carried by each Service port for round robin. It is not part of the
/// port's value: clones start again at 0 and comparisons ignore it.
#[derive(Debug, Default)]
pub struct Cursor(std::sync::atomic::AtomicUsize);

impl Cursor {
    /// The next position.
    pub fn next(&self) -> usize {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for Cursor {
    fn clone(&self) -> Self {
        Cursor::default()
    }
}

impl PartialEq for Cursor {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cursor {}

// === impl ServicePort ===

impl ServicePort {
    /// The endpoints that may receive new traffic.
    pub fn ready_endpoints(&self) -> &[Endpoint] {
        &self.endpoints[..self.ready]
    }

    /// Whether its endpoints' health is judged (active or passive checks): the schedulers
    /// then prefer healthy ones.
    pub fn judged(&self) -> bool {
        self.health.is_some() || self.passive.is_some()
    }

    /// Whether this port is the one an Ingress backend names.
    pub fn matches(&self, port: &PortRef) -> bool {
        match port {
            PortRef::Number(n) => self.port == *n,
            PortRef::Name(n) => self.name.as_deref() == Some(&**n),
        }
    }
}

/// Why [`ServiceTable::find`] found nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    /// No such Service.
    #[error("Service {0}/{1} not found")]
    NoService(String, String),
    /// The Service has no such port.
    #[error("Service {0}/{1} has no port {2}")]
    NoPort(String, String, String),
}

/// Every Service port of a snapshot. Ports are shared (`Arc`) with the previous table when
/// their Service did not change (see `reuse`); equality of shared ports is a pointer check.
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    ports: Vec<Arc<ServicePort>>,
    /// namespace → name → the Service's ports in `ports`.
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, Range<u32>>>,
    /// (ClusterIP, port, protocol) → port.
    by_cluster_ip: HashMap<(IpAddr, u16, Protocol), ServicePortId>,
    /// (NodePort, protocol) → port.
    by_node_port: HashMap<(u16, Protocol), ServicePortId>,
    /// What the next build may reuse (not part of the value).
    reuse: reuse::Reuse,
}

impl PartialEq for ServiceTable {
    fn eq(&self, other: &Self) -> bool {
        // The indexes are derived from the ports.
        self.ports == other.ports
    }
}

/// What shapes the service table besides the objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// The scheduler of Services without a `portico.dev/load-balancer` annotation.
    pub default_scheduler: Scheduler,
    /// Allocate missing ClusterIPs and NodePorts (the embedded mode); None: use the objects'
    /// values as they are (a cluster's API server allocated them).
    pub allocation: Option<AllocConfig>,
}

// === impl ServiceTable ===

impl ServiceTable {
    /// The port with this id.
    pub fn get(&self, id: ServicePortId) -> Option<&ServicePort> {
        self.ports.get(id.0 as usize).map(|p| &**p)
    }

    /// Every port, grouped by Service (sorted by namespace/name).
    pub fn iter(&self) -> impl Iterator<Item = (ServicePortId, &ServicePort)> {
        (0u32..)
            .zip(&self.ports)
            .map(|(i, p)| (ServicePortId(i), &**p))
    }

    /// Number of Service ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// True when there are no Service ports.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The ports of a Service, if it exists.
    pub fn ports_of(&self, namespace: &str, name: &str) -> Option<&[Arc<ServicePort>]> {
        let range = self.by_name.get(namespace)?.get(name)?;
        self.ports.get(range.start as usize..range.end as usize)
    }

    /// The port a ClusterIP:port serves.
    pub fn by_cluster_ip(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
    ) -> Option<ServicePortId> {
        self.by_cluster_ip
            .get(&(ip.to_canonical(), port, protocol))
            .copied()
    }

    /// The port a NodePort serves.
    pub fn by_node_port(&self, port: u16, protocol: Protocol) -> Option<ServicePortId> {
        self.by_node_port.get(&(port, protocol)).copied()
    }

    /// Whether the Service exists (even with no ports).
    pub fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.by_name
            .get(namespace)
            .is_some_and(|m| m.contains_key(name))
    }

    /// Whether this table was built on the previous one without any change: the same ports in
    /// the same places (so every lookup gives what it gave before), from the same Services.
    pub(crate) fn unchanged(&self) -> bool {
        self.reuse.unchanged
    }

    /// Drops what the next build could reuse (tests compare with a build that reuses nothing).
    #[cfg(test)]
    pub(crate) fn forget_reuse(&mut self) {
        self.reuse = reuse::Reuse::default();
    }

    /// The port of a Service, by number or name.
    pub fn find(
        &self,
        namespace: &str,
        name: &str,
        port: &PortRef,
    ) -> Result<ServicePortId, FindError> {
        let range = self
            .by_name
            .get(namespace)
            .and_then(|m| m.get(name))
            .ok_or_else(|| FindError::NoService(namespace.into(), name.into()))?;
        range
            .clone()
            .find(|&i| self.ports[i as usize].matches(port))
            .map(ServicePortId)
            .ok_or_else(|| {
                let p = match port {
                    PortRef::Number(n) => n.to_string(),
                    PortRef::Name(n) => format!("{n:?}"),
                };
                FindError::NoPort(namespace.into(), name.into(), p)
            })
    }
}

#[cfg(test)]
mod tests;
