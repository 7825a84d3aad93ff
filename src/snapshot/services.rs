//! The service table: every Service port with its ClusterIP, NodePort, target port and
//! endpoints (ready ones first), looked up by (namespace, name, port) in O(1).

mod endpoints;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::diagnostics::Diagnostic;
use super::routes::PortRef;
use crate::source::{Kind, ObjectKey};
use crate::store::ObjectStore;

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

/// One endpoint of a Service port, with the target port resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Address and resolved target port.
    pub addr: SocketAddr,
    /// Ready and not terminating: may receive new traffic.
    pub ready: bool,
    /// The node it runs on, when known.
    pub node_name: Option<Box<str>>,
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
    /// Endpoints: the ready ones first, each group sorted by address.
    pub endpoints: Vec<Endpoint>,
    ready: usize,
    /// Round-robin position of this port in this snapshot.
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

/// Every Service port of a snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceTable {
    ports: Vec<ServicePort>,
    /// namespace → name → the Service's ports in `ports`.
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, Range<u32>>>,
}

// === impl ServiceTable ===

impl ServiceTable {
    /// The port with this id.
    pub fn get(&self, id: ServicePortId) -> Option<&ServicePort> {
        self.ports.get(id.0 as usize)
    }

    /// Every port, grouped by Service (sorted by namespace/name).
    pub fn iter(&self) -> impl Iterator<Item = (ServicePortId, &ServicePort)> {
        (0u32..)
            .zip(&self.ports)
            .map(|(i, p)| (ServicePortId(i), p))
    }

    /// Number of Service ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// True when there are no Service ports.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Whether the Service exists (even with no ports).
    pub fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.by_name
            .get(namespace)
            .is_some_and(|m| m.contains_key(name))
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

    /// Builds the table from every Service in the store.
    pub fn build(store: &ObjectStore, diagnostics: &mut Vec<Diagnostic>) -> ServiceTable {
        let endpoints = endpoints::EndpointIndex::new(store, diagnostics);
        let mut table = ServiceTable::default();
        for ((ns, name), svc) in &store.services {
            let key = ObjectKey::new(Kind::Service, ns, name);
            let (ns, name): (Arc<str>, Arc<str>) = (ns.as_str().into(), name.as_str().into());
            let start = table.ports.len() as u32;
            for port in service_ports(&key, &ns, &name, svc, diagnostics) {
                let resolved = endpoints.resolve(&key, &port, diagnostics);
                table.ports.push(with_endpoints(port, resolved));
            }
            let end = table.ports.len() as u32;
            table
                .by_name
                .entry(ns)
                .or_default()
                .insert(name, start..end);
        }
        table
    }
}

fn with_endpoints(mut port: ServicePort, mut endpoints: Vec<Endpoint>) -> ServicePort {
    endpoints.sort_by_key(|e| (!e.ready, e.addr));
    endpoints.dedup_by(|b, a| a.addr == b.addr); // the ready copy comes first and stays
    port.ready = endpoints.iter().filter(|e| e.ready).count();
    port.endpoints = endpoints;
    port
}

/// The ports of a Service, without endpoints; invalid ports are diagnostics.
fn service_ports(
    key: &ObjectKey,
    ns: &Arc<str>,
    name: &Arc<str>,
    svc: &Service,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<ServicePort> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        "ExternalName" => ServiceType::ExternalName,
        "ClusterIP" => ServiceType::ClusterIP,
        other => {
            diagnostics.push(Diagnostic::error(
                key,
                "spec.type",
                format!("unknown type {other:?}"),
            ));
            return Vec::new();
        }
    };
    let external_name = spec.external_name.as_deref().map(Box::from);
    if service_type == ServiceType::ExternalName && external_name.is_none() {
        diagnostics.push(Diagnostic::error(
            key,
            "spec.externalName",
            "ExternalName Service without externalName",
        ));
    }
    let cluster_ip = cluster_ip(key, svc, diagnostics);
    let session_affinity = session_affinity(svc);
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let Some((port, protocol, target_port)) = port_numbers(key, &field, p, diagnostics) else {
            continue;
        };
        out.push(ServicePort {
            namespace: ns.clone(),
            service: name.clone(),
            name: p.name.as_deref().filter(|n| !n.is_empty()).map(Box::from),
            port,
            protocol,
            target_port,
            service_type,
            cluster_ip: cluster_ip.clone(),
            node_port: p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0),
            external_name: external_name.clone(),
            session_affinity,
            endpoints: Vec::new(),
            ready: 0,
            cursor: Cursor::default(),
        });
    }
    out
}

fn port_numbers(
    key: &ObjectKey,
    field: &str,
    p: &K8sServicePort,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(u16, Protocol, TargetPort)> {
    let Some(port) = u16::try_from(p.port).ok().filter(|n| *n > 0) else {
        diagnostics.push(Diagnostic::error(
            key,
            format!("{field}.port"),
            format!("port {} is out of range", p.port),
        ));
        return None;
    };
    let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        other => {
            diagnostics.push(Diagnostic::error(
                key,
                format!("{field}.protocol"),
                format!("unknown protocol {other:?}"),
            ));
            return None;
        }
    };
    let target = match &p.target_port {
        None => Some(TargetPort::Number(port)),
        Some(IntOrString::Int(n)) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .map(TargetPort::Number),
        Some(IntOrString::String(s)) if s.is_empty() => Some(TargetPort::Number(port)),
        Some(IntOrString::String(s)) => match s.parse::<u16>() {
            Ok(n) if n > 0 => Some(TargetPort::Number(n)),
            _ => Some(TargetPort::Name(s.as_str().into())),
        },
    };
    let Some(target) = target else {
        diagnostics.push(Diagnostic::error(
            key,
            format!("{field}.targetPort"),
            "targetPort is out of range",
        ));
        return None;
    };
    Some((port, protocol, target))
}

fn cluster_ip(key: &ObjectKey, svc: &Service, diagnostics: &mut Vec<Diagnostic>) -> ClusterIp {
    let spec = svc.spec.as_ref();
    let ips: Vec<&str> = match spec.and_then(|s| s.cluster_ips.as_deref()) {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec
            .and_then(|s| s.cluster_ip.as_deref())
            .into_iter()
            .collect(),
    };
    match ips.as_slice() {
        [] | [""] => ClusterIp::Unallocated,
        ["None", ..] => ClusterIp::Headless,
        ips => {
            let parsed: Vec<IpAddr> = ips.iter().filter_map(|s| s.parse().ok()).collect();
            if parsed.len() != ips.len() {
                diagnostics.push(Diagnostic::error(
                    key,
                    "spec.clusterIP",
                    format!("invalid address in {ips:?}"),
                ));
            }
            if parsed.is_empty() {
                ClusterIp::Unallocated
            } else {
                ClusterIp::Ips(parsed)
            }
        }
    }
}

fn session_affinity(svc: &Service) -> SessionAffinity {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.session_affinity.as_deref()) != Some("ClientIP") {
        return SessionAffinity::None;
    }
    let timeout = spec
        .and_then(|s| s.session_affinity_config.as_ref())
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(10800);
    SessionAffinity::ClientIp {
        timeout_seconds: timeout,
    }
}
