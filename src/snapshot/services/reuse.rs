//! What one service table leaves to the next: each Service's finished ports with the inputs
//! they were made from, so that a Service none of whose inputs changed is not built again.
//!
//! A Service's ports are a function of the Service object, its allocated ClusterIP and
//! NodePorts, its EndpointSlices (or Endpoints), and the runtime state carried from the ports
//! of the previous table. They are reused only when all of these are the same: the same
//! objects (`Arc`s), equal allocations, and a previous table in which each port would carry
//! over its state from itself.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::alloc::ServiceEntry;
use super::{ServicePort, ServiceTable};
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::ObjectKey;

/// Every Service of a table, in key order (not part of the table's value).
#[derive(Clone, Default)]
pub(super) struct Reuse {
    pub services: Arc<Vec<Arc<BuiltService>>>,
    /// Every Service was reused, and none added or removed: the table has the same ports, in
    /// the same places, as the previous one, and the store the same Services.
    pub unchanged: bool,
}

impl fmt::Debug for Reuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} services", self.services.len())
    }
}

/// Where a Service's endpoints came from.
pub(super) enum Source {
    /// One of its EndpointSlices (in name order).
    Slice(Arc<EndpointSlice>),
    /// Its Endpoints object (only used when it has no slice).
    Endpoints(Arc<Endpoints>),
}

/// One Service as built: its ports, finished, and what they were made from.
pub(super) struct BuiltService {
    pub key: ObjectKey,
    /// Namespace and name, as the table's index keys.
    pub names: (Arc<str>, Arc<str>),
    pub service: Arc<Service>,
    pub sources: Vec<Source>,
    pub ports: Vec<Arc<ServicePort>>,
    /// What finishing the ports reported (weights, endpoints).
    pub diagnostics: Vec<Diagnostic>,
}

// === impl BuiltService ===

impl BuiltService {
    /// Whether building this Service again would give these very ports.
    pub fn still_valid(
        &self,
        entry: &ServiceEntry,
        service: &Arc<Service>,
        same_sources: impl FnOnce(&[Source]) -> bool,
        previous: Option<&ServiceTable>,
    ) -> bool {
        Arc::ptr_eq(&self.service, service)
            && self.ports.len() == entry.ports.len()
            && self
                .ports
                .iter()
                .zip(&entry.ports)
                .all(|(built, new)| same_shape(built, new))
            && same_sources(&self.sources)
            && previous.is_some()
            && carry_from_themselves(&self.ports)
    }
}

/// Equal in everything but the endpoints and runtime state.
fn same_shape(a: &ServicePort, b: &ServicePort) -> bool {
    a.namespace == b.namespace
        && a.service == b.service
        && a.name == b.name
        && a.port == b.port
        && a.protocol == b.protocol
        && a.app_protocol == b.app_protocol
        && a.health == b.health
        && a.passive == b.passive
        && a.target_port == b.target_port
        && a.service_type == b.service_type
        && a.cluster_ip == b.cluster_ip
        && a.node_port == b.node_port
        && a.external_name == b.external_name
        && a.session_affinity == b.session_affinity
        && a.scheduler == b.scheduler
}

/// Whether ports built again against the table these came from would each carry its runtime
/// state from itself. `build::finish` carries from the port found by Service and number,
/// which is the first of the Service's ports with that number: itself, unless an earlier
/// port has the same number (TCP and UDP 53, say).
fn carry_from_themselves(ports: &[Arc<ServicePort>]) -> bool {
    ports
        .iter()
        .enumerate()
        .all(|(i, p)| ports[..i].iter().all(|q| q.port != p.port))
}
