//! Choosing the endpoint of a Service port for a request: the proxy asks through this
//! interface, and the L4 service dataplane ([`crate::l4::Schedulers`]) answers with the port's
//! scheduler (rr, wrr, lc, wlc, sh, random, p2c) and session affinity.

use std::net::{IpAddr, SocketAddr};

use crate::l4::Pick;
use crate::snapshot::services::{Scheduler, ServicePort};

/// Picks one ready endpoint of a Service port.
pub trait EndpointPicker: Send + Sync + std::fmt::Debug + 'static {
    /// A ready endpoint for this client, other than `exclude` when another one is ready; None
    /// when no endpoint is ready. The pick counts as open load until dropped.
    fn pick<'a>(
        &self,
        port: &'a ServicePort,
        client: IpAddr,
        exclude: Option<SocketAddr>,
    ) -> Option<Pick<'a>>;

    /// [`pick`](Self::pick) by `scheduler` rather than the port's own (a route's
    /// `load-balance`).
    fn pick_by<'a>(
        &self,
        port: &'a ServicePort,
        scheduler: Scheduler,
        client: IpAddr,
        exclude: Option<SocketAddr>,
    ) -> Option<Pick<'a>>;
}
