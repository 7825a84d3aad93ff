//! Choosing the endpoint of a Service port for a request. The L4 service dataplane supplies
//! the real schedulers behind this interface; until then, round robin over ready endpoints.

use std::net::{IpAddr, SocketAddr};

use crate::snapshot::services::{Endpoint, ServicePort};

/// Picks one ready endpoint of a Service port.
pub trait EndpointPicker: Send + Sync + std::fmt::Debug + 'static {
    /// A ready endpoint for this client, other than `exclude` when another one is ready; None
    /// when no endpoint is ready.
    fn pick<'a>(
        &self,
        port: &'a ServicePort,
        client: IpAddr,
        exclude: Option<SocketAddr>,
    ) -> Option<&'a Endpoint>;
}

/// Round robin over the ready endpoints, with a lock-free cursor per Service port.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

impl EndpointPicker for RoundRobin {
    fn pick<'a>(
        &self,
        port: &'a ServicePort,
        _client: IpAddr,
        exclude: Option<SocketAddr>,
    ) -> Option<&'a Endpoint> {
        let ready = port.ready_endpoints();
        if ready.is_empty() {
            return None;
        }
        let start = port.cursor.next() % ready.len();
        let candidates = ready[start..].iter().chain(&ready[..start]);
        let mut first = None;
        for e in candidates {
            if Some(e.addr) != exclude {
                return Some(e);
            }
            first.get_or_insert(e);
        }
        first
    }
}
