//! Prometheus metrics: request counts and latencies, upstream failures, open connections, UDP
//! flows, the controller's build status and the served certificates' expiry, served by the
//! admin listener as OpenMetrics text.
//!
//! Recording is cheap: a routed request counts through counters cached with its route
//! (`RouteCounters`), without hashing; other requests look theirs up in the counter family
//! (a read lock and a hash of the labels, a write lock only for a new label set).

mod labels;

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

pub use labels::EndpointLabels;
use labels::{CertLabels, CheckLabels, ListenerLabels, SeverityLabels};
pub use labels::{ListenerKind, MethodClass, RequestLabels, StatusClass};

use crate::controller::BuildStatus;
use crate::snapshot::Severity;

/// Every metric name starts with this.
const PREFIX: &str = "portico";

/// Upper bounds of the request duration buckets, in seconds: 0.5 ms (a local upstream) to
/// 30 s (a slow upload or a long poll); slower requests land in `+Inf`.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// Status classes (`StatusClass`, 1xx to 5xx).
const STATUS_CLASSES: usize = 5;

/// Method classes (`MethodClass`) times status classes: the request counters one route can
/// have.
const ROUTE_COUNTERS: usize = 10 * STATUS_CLASSES;

/// One route's request counters, looked up in the family once per method and status class and
/// kept with the route, so that counting a request hashes nothing. They belong to the first
/// `Metrics` that fills them (a process has one; tests may have several); any other looks its
/// counters up in its own family.
#[derive(Debug, Default)]
pub struct RouteCounters {
    owner: OnceLock<u64>,
    slots: OnceLock<Box<[OnceLock<Counter>]>>,
}

/// The metrics of one Portico process: create once, share as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    /// Tells this instance's cached counters from another's (`RouteCounters`).
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    connect_errors: Counter,
    retries: Counter,
    external_name_refused: Counter,
    connections_refused: Counter,
    /// One gauge per [`ListenerKind`], in [`ListenerKind::ALL`] order, so opening a connection
    /// needs no family lookup.
    open: [Gauge; 3],
    udp: UdpFlowMetrics,
    /// Health checks passed and failed.
    checks: [Counter; 2],
    /// 1 per endpoint passing its checks, 0 failing (checked endpoints only).
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    /// 1 per Service port whose every endpoint fails its checks (all take traffic).
    health_panic: Family<EndpointLabels, Gauge>,
}

/// The UDP flow table's metrics, shared with every UDP listener (counters are cheap clones of
/// one atomic). `Default` is a set registered nowhere, for tests.
#[derive(Clone, Debug, Default)]
pub struct UdpFlowMetrics {
    /// `portico_udp_flows`: flows open, every UDP listener together.
    pub open: Gauge,
    /// `portico_udp_flows_evicted_total`: flows closed to make room for a new client's
    /// (`--udp-max-flows` reached).
    pub evicted: Counter,
    /// `portico_udp_flows_refused_total`: new clients' datagrams dropped because the limit was
    /// reached and their listener had no flow of its own to evict.
    pub refused: Counter,
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests served", requests.clone());
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a request to the end of its response",
            Unit::Seconds,
            duration.clone(),
        );
        let connect_errors = Counter::default();
        registry.register(
            "upstream_connect_errors",
            "Failed connection attempts to upstream endpoints",
            connect_errors.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "upstream_retries",
            "Requests retried on another upstream endpoint",
            retries.clone(),
        );
        let external_name_refused = Counter::default();
        registry.register(
            "external_name_refused",
            "Connections to ExternalName Services not made: every address the name resolved to was loopback, unspecified, link-local or the node's own",
            external_name_refused.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed at once because --max-connections were open",
            connections_refused.clone(),
        );
        let open_family = Family::<ListenerLabels, Gauge>::default();
        let open = ListenerKind::ALL.map(|listener| {
            open_family
                .get_or_create(&ListenerLabels { listener })
                .clone()
        });
        registry.register("open_connections", "Open client connections", open_family);
        let udp = UdpFlowMetrics::default();
        registry.register("udp_flows", "UDP flows open", udp.open.clone());
        registry.register(
            "udp_flows_evicted",
            "UDP flows closed to make room for a new one (--udp-max-flows reached)",
            udp.evicted.clone(),
        );
        registry.register(
            "udp_flows_refused",
            "New UDP flows refused: the limit was reached and their listener had no flow to evict",
            udp.refused.clone(),
        );
        let checks_family = Family::<CheckLabels, Counter>::default();
        let checks = ["passed", "failed"]
            .map(|result| checks_family.get_or_create(&CheckLabels { result }).clone());
        registry.register(
            "health_checks",
            "Active health checks of endpoints, by result",
            checks_family,
        );
        let endpoint_healthy = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_healthy",
            "1 for an endpoint passing its Service's health checks, 0 for one failing them",
            endpoint_healthy.clone(),
        );
        let health_panic = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "health_panic",
            "1 for a Service port whose every endpoint fails its health checks: all of them take traffic (fail open)",
            health_panic.clone(),
        );
        static IDS: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            duration,
            connect_errors,
            retries,
            external_name_refused,
            connections_refused,
            open,
            udp,
            checks,
            endpoint_healthy,
            health_panic,
        }
    }

    /// Records one health check.
    pub fn health_check(&self, passed: bool) {
        self.checks[usize::from(!passed)].inc();
    }

    /// Sets an endpoint's health (`None`: no longer checked, its series removed).
    pub fn endpoint_health(&self, labels: &EndpointLabels, healthy: Option<bool>) {
        match healthy {
            Some(h) => drop(
                self.endpoint_healthy
                    .get_or_create(labels)
                    .set(i64::from(h)),
            ),
            None => drop(self.endpoint_healthy.remove(labels)),
        }
    }

    /// Sets whether a Service port is in panic mode (`None`: no longer checked).
    pub fn health_panic(&self, labels: &EndpointLabels, panic: Option<bool>) {
        match panic {
            Some(p) => drop(self.health_panic.get_or_create(labels).set(i64::from(p))),
            None => drop(self.health_panic.remove(labels)),
        }
    }

    /// The UDP flow metrics, for the L4 listeners.
    pub fn udp_flows(&self) -> UdpFlowMetrics {
        self.udp.clone()
    }

    /// Records one finished request.
    pub fn request(&self, labels: RequestLabels, duration: Duration) {
        self.requests.get_or_create(&labels).inc();
        self.duration.observe(duration.as_secs_f64());
    }

    /// Records one finished request of a route, counted through the route's `cache`;
    /// `labels` makes the label set the first time a counter is looked up.
    pub fn route_request(
        &self,
        cache: &RouteCounters,
        method: MethodClass,
        status: StatusClass,
        labels: impl FnOnce() -> RequestLabels,
        duration: Duration,
    ) {
        if *cache.owner.get_or_init(|| self.id) == self.id {
            let slots = cache
                .slots
                .get_or_init(|| (0..ROUTE_COUNTERS).map(|_| OnceLock::new()).collect());
            let slot = &slots[method as usize * STATUS_CLASSES + status as usize];
            slot.get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc();
        } else {
            self.requests.get_or_create(&labels()).inc();
        }
        self.duration.observe(duration.as_secs_f64());
    }

    /// Records a failed connection attempt to an upstream endpoint.
    pub fn upstream_connect_error(&self) {
        self.connect_errors.inc();
    }

    /// Records a request retried on another upstream endpoint.
    pub fn upstream_retry(&self) {
        self.retries.inc();
    }

    /// Records a connection to an ExternalName Service refused (see [`crate::egress`]).
    pub fn external_name_refused(&self) {
        self.external_name_refused.inc();
    }

    /// Records a client connection closed at once over the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a connection open on `listener` until the returned guard is dropped.
    pub fn connection_opened(&self, listener: ListenerKind) -> ConnectionGuard {
        let gauge = self.open[listener.index()].clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// The OpenMetrics text exposition of every metric, with the snapshot metrics taken from
    /// `status`; ends with `# EOF`.
    pub fn encode(&self, status: &BuildStatus) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(error) = self.try_encode(status, &mut out) {
            // Writing to a String cannot fail; a metric that cannot encode its value can.
            warn!(%error, "encoding metrics failed");
        }
        out
    }

    fn try_encode(&self, status: &BuildStatus, out: &mut String) -> fmt::Result {
        text::encode_registry(out, &self.registry)?;
        text::encode_registry(out, &snapshot_registry(status))?;
        text::encode_eof(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The snapshot metrics, made afresh from `status` at each scrape: no state to keep in sync.
fn snapshot_registry(status: &BuildStatus) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register(
        "snapshot_generation",
        "Generation of the published snapshot (0 before the first)",
        ConstGauge::new(status.generation),
    );
    registry.register_with_unit(
        "snapshot_build_duration",
        "How long the latest snapshot build took",
        Unit::Seconds,
        ConstGauge::new(status.build_duration.as_secs_f64()),
    );
    registry.register(
        "snapshot_builds",
        "Snapshot builds run, published or not",
        ConstCounter::new(status.builds),
    );
    let diagnostics = Family::<SeverityLabels, Gauge>::default();
    for (severity, label) in [(Severity::Error, "error"), (Severity::Warning, "warning")] {
        let count = status
            .diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count();
        let gauge = diagnostics.get_or_create(&SeverityLabels { severity: label });
        gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "config_diagnostics",
        "Diagnostics of the latest snapshot build, by severity",
        diagnostics,
    );
    // One series per served certificate: a certificate that is no longer served (its Ingress
    // or Secret removed) has none, since the family is made afresh from the status.
    let expiry = Family::<CertLabels, Gauge>::default();
    for served in status.certificates.iter() {
        let labels = CertLabels {
            secret_namespace: served.secret.namespace.clone(),
            secret_name: served.secret.name.clone(),
            host: served.host.clone(),
        };
        expiry.get_or_create(&labels).set(served.not_after);
    }
    registry.register_with_unit(
        "certificate_expiry_timestamp",
        "notAfter of each certificate served from a Secret, as Unix time, by Secret and host (host \"*\": the default certificate)",
        Unit::Seconds,
        expiry,
    );
    registry
}

/// Keeps a connection counted in `portico_open_connections`; dropping it uncounts it.
#[derive(Debug)]
#[must_use = "the connection is uncounted when the guard is dropped"]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests;
