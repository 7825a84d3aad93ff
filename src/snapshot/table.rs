//! The route table of a snapshot as rows: what `portico check` prints and what the admin
//! listener's `/debug/snapshot` serves.

use serde::Serialize;

use super::Snapshot;
use super::host;
use super::routes::{HostPattern, PortRef, Route, Upstream};

/// The most endpoints listed per row; the rest are counted.
const MAX_LISTED: usize = 8;

/// One route, resolved down to its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRow {
    /// `foo.com`, `*.foo.com`, or `*` for host-less rules and the default backend.
    pub host: String,
    /// The path as written; `*` for the default backend.
    pub path: String,
    /// Exact, Prefix, ImplementationSpecific, or `default` for the default backend.
    pub path_type: String,
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// `namespace/service:port` as the Ingress names it.
    pub backend: String,
    /// Ready endpoints (`ip:port`), or the ExternalName target.
    pub endpoints: Vec<String>,
    /// Endpoints listed but not ready.
    pub not_ready: usize,
    /// Why nothing can serve this route, if so (requests get 503).
    pub unavailable: Option<String>,
    /// The Secret whose certificate serves this host (`namespace/name`), or `default`; `-` for
    /// host-less rules.
    pub tls: String,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub ssl_redirect: bool,
}

/// Every route of the snapshot: exact hosts, wildcards, host-less rules, default backend.
pub fn route_rows(snapshot: &Snapshot) -> Vec<RouteRow> {
    let mut rows = Vec::new();
    for (pattern, routes) in snapshot.routes.hosts() {
        let host = match &pattern {
            HostPattern::Exact(h) => h.to_string(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
            HostPattern::Any => "*".to_string(),
        };
        let tls = tls_of(snapshot, &pattern);
        for route in routes.routes() {
            rows.push(row(snapshot, &host, route, &tls));
        }
    }
    if let Some(route) = snapshot.routes.default_backend() {
        rows.push(row(snapshot, "*", route, "-"));
    }
    rows
}

fn tls_of(snapshot: &Snapshot, pattern: &HostPattern) -> String {
    let entry = match pattern {
        HostPattern::Any => return "-".to_string(),
        HostPattern::Exact(h) => snapshot.certs.entry(h).or_else(|| {
            let suffix = host::wildcard_suffix(h)?;
            snapshot.certs.entry(&format!("*.{suffix}"))
        }),
        HostPattern::Wildcard(s) => snapshot.certs.entry(&format!("*.{s}")),
    };
    entry.map_or_else(
        || "default".to_string(),
        |e| format!("{}/{}", e.secret.namespace, e.secret.name),
    )
}

fn row(snapshot: &Snapshot, host: &str, route: &Route, tls: &str) -> RouteRow {
    let port = match &route.backend.port {
        PortRef::Number(n) => n.to_string(),
        PortRef::Name(n) => n.to_string(),
    };
    let ns = &route.ingress.namespace;
    let backend = if route.backend.service.is_empty() {
        "(resource)".to_string()
    } else {
        format!("{ns}/{}:{port}", route.backend.service)
    };
    let (endpoints, not_ready, unavailable) = match &route.backend.upstream {
        Upstream::Service(id) => match snapshot.services.get(*id) {
            Some(p) => {
                let ready = p.ready_endpoints();
                let mut listed: Vec<String> = ready
                    .iter()
                    .take(MAX_LISTED)
                    .map(|e| e.addr.to_string())
                    .collect();
                if ready.len() > MAX_LISTED {
                    listed.push(format!("(+{} more)", ready.len() - MAX_LISTED));
                }
                let why = ready.is_empty().then(|| "no ready endpoints".to_string());
                (listed, p.endpoints.len() - ready.len(), why)
            }
            None => (Vec::new(), 0, Some("unknown Service port".to_string())),
        },
        Upstream::External { host, port } => {
            (vec![format!("{host}:{port} (ExternalName)")], 0, None)
        }
        Upstream::Unavailable => (Vec::new(), 0, Some("backend not resolved".to_string())),
    };
    RouteRow {
        host: host.to_string(),
        path: route.path.as_deref().unwrap_or("*").to_string(),
        path_type: route
            .path_type
            .map_or("default", |t| t.as_str())
            .to_string(),
        ingress: format!("{ns}/{}", route.ingress.name),
        backend,
        endpoints,
        not_ready,
        unavailable,
        tls: tls.to_string(),
        ssl_redirect: route.ssl_redirect,
    }
}
