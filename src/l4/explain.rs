//! Explains how a request or connection would be served: Ingress rule → Service port →
//! ClusterIP:port → scheduler → each endpoint with its readiness. Read-only: it never moves a
//! scheduler's cursor.

use std::fmt::Write;
use std::net::IpAddr;

use http::Uri;

use super::render;
use crate::snapshot::Snapshot;
use crate::snapshot::routes::{Route, Upstream};
use crate::snapshot::services::{
    ClusterIp, Protocol, ServicePort, ServiceType, SessionAffinity, TargetPort,
};

/// Why a URL could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Not a URL.
    #[error("{0:?} is not a URL like https://host/path or tcp://10.96.0.10:80")]
    BadUrl(String),
}

/// Explains a URL: `http(s)://host[:port]/path?query` (L7 through the Ingress rules) or an
/// address of a Service (`tcp://` / `udp://` / `http://` + ClusterIP:port or NodePort).
pub fn explain(
    snapshot: &Snapshot,
    url: &str,
    node_addresses: &[IpAddr],
) -> Result<String, ExplainError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ExplainError::BadUrl(url.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| ExplainError::BadUrl(url.to_string()))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let protocol = if scheme == "udp" {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let mut out = String::new();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    if let Some(ip) = ip {
        if let Some(id) = snapshot.services.by_cluster_ip(ip, port, protocol) {
            let _ = writeln!(out, "{url}\n  {ip}:{port}/{protocol} is a ClusterIP of:");
            describe_port(&mut out, snapshot.services.get(id), "  ");
            return Ok(out);
        }
        let local = ip.is_loopback()
            || node_addresses
                .iter()
                .any(|a| *a == ip || a.is_unspecified());
        if let Some(id) = snapshot
            .services
            .by_node_port(port, protocol)
            .filter(|_| local)
        {
            let _ = writeln!(out, "{url}\n  {ip}:{port}/{protocol} is a NodePort of:");
            describe_port(&mut out, snapshot.services.get(id), "  ");
            return Ok(out);
        }
    }
    if matches!(scheme, "tcp" | "udp") {
        let _ = writeln!(
            out,
            "{url}\n  no ClusterIP or NodePort serves {host}:{port}/{protocol}"
        );
        return Ok(out);
    }
    explain_l7(&mut out, snapshot, &uri, scheme, host, port);
    Ok(out)
}

fn explain_l7(
    out: &mut String,
    snapshot: &Snapshot,
    uri: &Uri,
    scheme: &str,
    host: &str,
    port: u16,
) {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let _ = writeln!(out, "GET {scheme}://{host}:{port}{path}");
    let Some(route) = snapshot.routes.route(host, uri.path()) else {
        let _ = writeln!(
            out,
            "  1. route: no rule and no default backend matches: 404 (built-in)"
        );
        return;
    };
    let _ = writeln!(out, "  1. route: {}", describe_route(route));
    if scheme == "https" {
        let cert = snapshot.certs.resolve(Some(host));
        let entry = snapshot
            .certs
            .entries()
            .find(|(_, e)| std::sync::Arc::ptr_eq(&e.cert.key, cert));
        let from = entry.map_or_else(
            || "the default certificate".to_string(),
            |(h, e)| {
                format!(
                    "the certificate of Secret {}/{} (for {h})",
                    e.secret.namespace, e.secret.name
                )
            },
        );
        let _ = writeln!(out, "  2. TLS: SNI {host} gets {from}");
    } else if route.ssl_redirect {
        let _ = writeln!(
            out,
            "  2. plain HTTP: 308 redirect to https://{host}{path} (the host is listed under spec.tls)"
        );
        return;
    } else {
        let _ = writeln!(out, "  2. plain HTTP, no redirect");
    }
    match &route.backend.upstream {
        Upstream::Service(id) => {
            let _ = writeln!(
                out,
                "  3. backend: Service {}/{} port {}",
                route.ingress.namespace,
                route.backend.service,
                route.labels.service.rsplit(':').next().unwrap_or("")
            );
            describe_port(out, snapshot.services.get(*id), "     ");
        }
        Upstream::External { host, port } => {
            let _ = writeln!(
                out,
                "  3. backend: ExternalName {host}:{port}, resolved by DNS per connection"
            );
        }
        Upstream::Unavailable => {
            let _ = writeln!(
                out,
                "  3. backend: Service {}/{} does not resolve (missing Service or port): 503",
                route.ingress.namespace, route.backend.service
            );
        }
    }
}

fn describe_route(route: &Route) -> String {
    let ingress = format!("Ingress {}/{}", route.ingress.namespace, route.ingress.name);
    match (&route.host, &route.path, route.path_type) {
        (_, None, _) => format!("default backend of {ingress}"),
        (host, Some(path), t) => {
            let host = host
                .as_deref()
                .map_or("any host (rule without host)".to_string(), |h| {
                    format!("host {h}")
                });
            format!(
                "{ingress}, {host}, path {path} ({})",
                t.map_or("Prefix", |t| t.as_str())
            )
        }
    }
}

fn describe_port(out: &mut String, port: Option<&ServicePort>, indent: &str) {
    let Some(p) = port else {
        let _ = writeln!(out, "{indent}(the Service port is gone)");
        return;
    };
    let target = match &p.target_port {
        TargetPort::Number(n) => n.to_string(),
        TargetPort::Name(n) => format!("{n} (named; resolved per endpoint)"),
    };
    let _ = writeln!(
        out,
        "{indent}Service {}/{} port {}/{} → targetPort {target}, type {:?}",
        p.namespace, p.service, p.port, p.protocol, p.service_type
    );
    match (&p.cluster_ip, p.service_type) {
        (_, ServiceType::ExternalName) => {
            let _ = writeln!(
                out,
                "{indent}ExternalName {} (DNS; no endpoints)",
                p.external_name.as_deref().unwrap_or("?")
            );
            return;
        }
        (ClusterIp::Ips(ips), _) => {
            let ips: Vec<String> = ips.iter().map(|ip| format!("{ip}:{}", p.port)).collect();
            let _ = writeln!(
                out,
                "{indent}ClusterIP {} (iptables chain {})",
                ips.join(", "),
                render::svc_chain(p)
            );
        }
        (ClusterIp::Headless, _) => drop(writeln!(
            out,
            "{indent}headless (clusterIP: None): clients reach endpoints directly"
        )),
        (ClusterIp::Unallocated, _) => drop(writeln!(out, "{indent}no ClusterIP allocated")),
    }
    if let Some(n) = p.node_port {
        let _ = writeln!(
            out,
            "{indent}NodePort {n} (iptables chain {})",
            render::ext_chain(p)
        );
    }
    let affinity = match p.session_affinity {
        SessionAffinity::None => "none".to_string(),
        SessionAffinity::ClientIp { timeout_seconds } => format!(
            "ClientIP for {timeout_seconds}s ({} clients pinned)",
            p.affinity.len()
        ),
    };
    let _ = writeln!(
        out,
        "{indent}scheduler {}, session affinity {affinity}",
        p.scheduler.as_str()
    );
    let ready = p.ready_endpoints().len();
    let _ = writeln!(
        out,
        "{indent}endpoints: {ready} ready, {} not ready",
        p.endpoints.len() - ready
    );
    if let Some(check) = &p.health {
        let _ = writeln!(
            out,
            "{indent}health checks: GET {} every {:?} (timeout {:?}; unhealthy after {}, healthy after {})",
            check.path,
            check.interval,
            check.timeout,
            check.unhealthy_threshold,
            check.healthy_threshold
        );
    }
    if let Some(passive) = &p.passive {
        let _ = writeln!(
            out,
            "{indent}passive health: out for {:?} after {} failed attempt(s) within it",
            passive.fail_timeout, passive.max_fails
        );
    }
    for e in &p.endpoints {
        let state = match (e.ready, !e.load.passes_checks(), e.load.passively_out()) {
            (true, false, false) => "ready",
            (true, true, _) => {
                "ready, failing its health checks (no new traffic while another passes)"
            }
            (true, false, true) => {
                "ready, out for its fail-timeout after max-fails failures (no new traffic while another is up)"
            }
            (false, _, _) => "not ready (gets no new connections)",
        };
        let node = e
            .node_name
            .as_deref()
            .map_or(String::new(), |n| format!(", node {n}"));
        let _ = writeln!(
            out,
            "{indent}  -> {:<22} {state}, weight {}, active {}{node}",
            e.addr.to_string(),
            e.weight,
            e.load.active()
        );
    }
    if ready == 0 {
        let _ = writeln!(
            out,
            "{indent}no ready endpoint: HTTP requests get 503, L4 connections are closed"
        );
    }
}
