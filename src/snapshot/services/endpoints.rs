//! Endpoints of a Service port from EndpointSlices (or, for Services without any slice, from
//! the Endpoints object), with the target port resolved per endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::reuse::Source;
use super::{Endpoint, Protocol, ServicePort, ServiceType, TargetPort};
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::{Kind, ObjectKey};
use crate::store::{ObjectStore, SERVICE_NAME_LABEL};

/// A port as an EndpointSlice or Endpoints subset lists it: (name, number, protocol).
type ListedPort<'a> = (Option<&'a str>, Option<i32>, Option<&'a str>);

/// A Service's endpoint objects, looked up in the store (which keeps EndpointSlices grouped
/// by Service).
pub(super) struct EndpointIndex<'a> {
    store: &'a ObjectStore,
}

// === impl EndpointIndex ===

impl<'a> EndpointIndex<'a> {
    /// The index over `store`; the EndpointSlices without a Service label are reported.
    pub(super) fn new(store: &'a ObjectStore, diagnostics: &mut Vec<Diagnostic>) -> Self {
        for (ns, name) in store.unlabelled_slices() {
            diagnostics.push(Diagnostic::warning(
                &ObjectKey::new(Kind::EndpointSlice, ns, name),
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "no Service label; ignored",
            ));
        }
        EndpointIndex { store }
    }

    /// The Service's Endpoints object (used when it has no slices).
    fn endpoints(&self, ns: &str, name: &str) -> Option<&'a Arc<Endpoints>> {
        self.store
            .endpoints
            .get(&(ns.to_string(), name.to_string()))
    }

    /// The objects a Service's endpoints come from: its slices, else its Endpoints.
    pub(super) fn sources(&self, service: &ObjectKey) -> Vec<Source> {
        let (ns, name) = (service.namespace.as_str(), service.name.as_str());
        match self.store.slices_of(ns, name) {
            Some(slices) => slices
                .values()
                .map(|s| Source::Slice(Arc::clone(s)))
                .collect(),
            None => self
                .endpoints(ns, name)
                .map(|e| Source::Endpoints(Arc::clone(e)))
                .into_iter()
                .collect(),
        }
    }

    /// Whether [`EndpointIndex::sources`] would be these very objects.
    pub(super) fn same_sources(&self, service: &ObjectKey, sources: &[Source]) -> bool {
        let (ns, name) = (service.namespace.as_str(), service.name.as_str());
        match self.store.slices_of(ns, name) {
            Some(slices) => {
                slices.len() == sources.len()
                    && slices.values().zip(sources).all(
                        |(s, source)| matches!(source, Source::Slice(old) if Arc::ptr_eq(old, s)),
                    )
            }
            None => {
                let now = self.endpoints(ns, name);
                match (now, sources) {
                    (None, []) => true,
                    (Some(e), [Source::Endpoints(old)]) => Arc::ptr_eq(e, old),
                    _ => false,
                }
            }
        }
    }

    /// The endpoints of one Service port (not yet sorted or de-duplicated).
    pub(super) fn resolve(
        &self,
        service: &ObjectKey,
        port: &ServicePort,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Vec<Endpoint> {
        if port.service_type == ServiceType::ExternalName {
            return Vec::new();
        }
        let (ns, name) = (service.namespace.as_str(), service.name.as_str());
        if let Some(slices) = self.store.slices_of(ns, name) {
            let mut out = Vec::new();
            for (slice_name, slice) in slices {
                let key = ObjectKey::new(Kind::EndpointSlice, ns, slice_name);
                from_slice(&key, slice, port, &mut out, diagnostics);
            }
            return out;
        }
        match self.endpoints(ns, name) {
            Some(eps) => from_endpoints(
                &ObjectKey::new(Kind::Endpoints, ns, name),
                eps,
                port,
                diagnostics,
            ),
            None => Vec::new(),
        }
    }
}

fn from_slice(
    key: &ObjectKey,
    slice: &EndpointSlice,
    port: &ServicePort,
    out: &mut Vec<Endpoint>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        let reason = format!(
            "addressType {:?} is not supported; ignored",
            slice.address_type
        );
        diagnostics.push(Diagnostic::warning(key, "addressType", reason));
        return;
    }
    let listed = slice.ports.as_deref().map(|ports| {
        ports
            .iter()
            .map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref()))
            .collect::<Vec<_>>()
    });
    let Some(target) = target_port(port, listed.as_deref()) else {
        diagnostics.push(no_port(key, "ports", port));
        return;
    };
    for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
        // Consumers use the first address only; the EndpointSlice controller writes exactly one.
        let Some(ip) = ep.addresses.first().and_then(|a| parse_ip(a)) else {
            let reason = format!("invalid address {:?}; ignored", ep.addresses.first());
            diagnostics.push(Diagnostic::error(
                key,
                format!("endpoints[{i}].addresses[0]"),
                reason,
            ));
            continue;
        };
        let conditions = ep.conditions.as_ref();
        // A nil `ready` means ready; terminating endpoints get no new traffic.
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
            && !conditions.and_then(|c| c.terminating).unwrap_or(false);
        out.push(Endpoint {
            addr: SocketAddr::new(ip, target),
            ready,
            node_name: ep.node_name.as_deref().map(Box::from),
            weight: 1,
            load: Default::default(),
        });
    }
}

fn from_endpoints(
    key: &ObjectKey,
    eps: &Endpoints,
    port: &ServicePort,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (i, subset) in eps.subsets.iter().flatten().enumerate() {
        let listed = subset.ports.as_deref().map(|ports| {
            ports
                .iter()
                .map(|p| (p.name.as_deref(), Some(p.port), p.protocol.as_deref()))
                .collect::<Vec<_>>()
        });
        let Some(target) = target_port(port, listed.as_deref()) else {
            diagnostics.push(no_port(key, &format!("subsets[{i}].ports"), port));
            continue;
        };
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (address, ready) in ready.chain(not_ready) {
            let Some(ip) = parse_ip(&address.ip) else {
                let reason = format!("invalid address {:?}; ignored", address.ip);
                diagnostics.push(Diagnostic::error(
                    key,
                    format!("subsets[{i}].addresses"),
                    reason,
                ));
                continue;
            };
            out.push(Endpoint {
                addr: SocketAddr::new(ip, target),
                ready,
                node_name: address.node_name.as_deref().map(Box::from),
                weight: 1,
                load: Default::default(),
            });
        }
    }
    out
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn no_port(key: &ObjectKey, field: &str, port: &ServicePort) -> Diagnostic {
    let name = port
        .name
        .as_deref()
        .map_or(String::new(), |n| format!(" ({n})"));
    let reason = format!(
        "lists no port for Service port {}{name}; its endpoints are ignored for it",
        port.port
    );
    Diagnostic::warning(key, field, reason)
}

/// The target port on the endpoints of one slice or subset, from the ports it lists.
///
/// The EndpointSlice controller names each listed port after the Service port and gives the
/// resolved container port, so the Service port's name decides. Hand-written objects may name
/// the container port instead (`targetPort: web`) or list only the number: both are accepted.
/// An object that lists no ports at all uses a numeric targetPort as it is.
fn target_port(port: &ServicePort, listed: Option<&[ListedPort<'_>]>) -> Option<u16> {
    let number = |p: &ListedPort<'_>| p.1.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
    let Some(listed) = listed.filter(|l| !l.is_empty()) else {
        return match port.target_port {
            TargetPort::Number(n) => Some(n),
            TargetPort::Name(_) => None,
        };
    };
    let protocol = |p: &&ListedPort<'_>| protocol_of(p.2) == Some(port.protocol);
    let by_service_name = listed
        .iter()
        .filter(protocol)
        .find(|p| p.0.filter(|n| !n.is_empty()) == port.name.as_deref());
    let fallback = || match &port.target_port {
        TargetPort::Name(name) => listed
            .iter()
            .filter(protocol)
            .find(|p| p.0 == Some(&**name)),
        TargetPort::Number(n) => listed
            .iter()
            .filter(protocol)
            .find(|p| number(p) == Some(*n)),
    };
    by_service_name.or_else(fallback).and_then(number)
}

fn protocol_of(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}
