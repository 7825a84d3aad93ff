//! One Ingress → route candidates (rules and paths) and its default backend.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressBackend;

use super::class::OurIngress;
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::host;
use crate::snapshot::routes::{
    Backend, Candidate, HostPattern, IngressRef, PathType, PortRef, Route, RouteLabels,
    RouteTableBuilder, Upstream,
};
use crate::snapshot::services::{FindError, ServiceTable, ServiceType};
use crate::source::ObjectKey;
use crate::store::ObjectStore;

/// Turns off the plain-HTTP → HTTPS redirect of an Ingress's TLS hosts.
const SSL_REDIRECT_ANNOTATION: &str = "portico.dev/ssl-redirect";

/// What every Ingress of a build shares.
pub(super) struct Context<'a> {
    pub store: &'a ObjectStore,
    pub services: &'a ServiceTable,
    pub tls_hosts: &'a HashSet<String>,
    /// Position of this Ingress, oldest first.
    pub age: usize,
}

/// Offers every path of the Ingress to the route builder, and its default backend unless an
/// older Ingress set one.
pub(super) fn add_ingress(
    cx: &Context<'_>,
    our: &OurIngress<'_>,
    routes: &mut RouteTableBuilder,
    default_backend: &mut Option<Route>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let key = &our.key;
    let ingress = IngressRef {
        namespace: key.namespace.as_str().into(),
        name: key.name.as_str().into(),
    };
    let Some(spec) = our.ingress.spec.as_ref() else {
        return;
    };
    if let Some(b) = &spec.default_backend {
        let backend = resolve_backend(cx, key, b, "spec.defaultBackend", diagnostics);
        set_default_backend(key, &ingress, backend, default_backend, diagnostics);
    }
    let redirect = ssl_redirect_enabled(our, diagnostics);
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        let Some(pattern) = host_pattern(key, ri, rule.host.as_deref(), diagnostics) else {
            continue;
        };
        let host: Option<Box<str>> = match &pattern {
            HostPattern::Any => None,
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::Wildcard(s) => Some(format!("*.{s}").into()),
        };
        let ssl_redirect = redirect && host.as_deref().is_some_and(|h| has_tls(cx.tls_hosts, h));
        for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = format!("spec.rules[{ri}].http.paths[{pi}]");
            let Some((path, path_type)) =
                path_of(key, &field, p.path.as_deref(), &p.path_type, diagnostics)
            else {
                continue;
            };
            let backend = resolve_backend(
                cx,
                key,
                &p.backend,
                &format!("{field}.backend"),
                diagnostics,
            );
            let route = Route {
                host: host.clone(),
                path: Some(path),
                path_type: Some(path_type),
                ingress: ingress.clone(),
                labels: RouteLabels::new(&ingress, &backend),
                backend,
                ssl_redirect,
            };
            let candidate = Candidate {
                route,
                age: (cx.age, ri, pi),
                object: key.clone(),
                field,
            };
            routes.add(pattern.clone(), candidate);
        }
    }
}

/// Sets the default backend unless an Ingress that takes precedence already did.
fn set_default_backend(
    key: &ObjectKey,
    ingress: &IngressRef,
    backend: Backend,
    default_backend: &mut Option<Route>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match default_backend {
        None => {
            *default_backend = Some(Route {
                host: None,
                path: None,
                path_type: None,
                ingress: ingress.clone(),
                labels: RouteLabels::new(ingress, &backend),
                backend,
                ssl_redirect: false,
            });
        }
        Some(older) => {
            let reason = format!(
                "a default backend is already set by Ingress {}/{}, which takes precedence (older, or first by namespace/name); ignored",
                older.ingress.namespace, older.ingress.name
            );
            diagnostics.push(Diagnostic::warning(key, "spec.defaultBackend", reason));
        }
    }
}

fn has_tls(tls_hosts: &HashSet<String>, host: &str) -> bool {
    tls_hosts.contains(host)
        || host::wildcard_suffix(host)
            .is_some_and(|s| !host.starts_with("*.") && tls_hosts.contains(&format!("*.{s}")))
}

fn ssl_redirect_enabled(our: &OurIngress<'_>, diagnostics: &mut Vec<Diagnostic>) -> bool {
    let annotations = our.ingress.metadata.annotations.as_ref();
    match annotations
        .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
        .map(String::as_str)
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            let field = format!("metadata.annotations[{SSL_REDIRECT_ANNOTATION}]");
            diagnostics.push(Diagnostic::warning(
                &our.key,
                field,
                format!("{other:?} is not \"true\" or \"false\"; using true"),
            ));
            true
        }
    }
}

fn host_pattern(
    key: &ObjectKey,
    ri: usize,
    host: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<HostPattern> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Some(HostPattern::Any);
    };
    let host = host.to_ascii_lowercase();
    if let Err(reason) = host::validate_rule_host(&host) {
        diagnostics.push(Diagnostic::error(
            key,
            format!("spec.rules[{ri}].host"),
            format!("host {host:?} {reason}; rule ignored"),
        ));
        return None;
    }
    Some(match host.strip_prefix("*.") {
        Some(suffix) => HostPattern::Wildcard(suffix.into()),
        None => HostPattern::Exact(host.into()),
    })
}

/// Sequences the Kubernetes API rejects in Exact and Prefix paths (and that would make
/// element-wise matching ambiguous); Portico applies them to every path type.
const INVALID_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const INVALID_SUFFIXES: [&str; 2] = ["/..", "/."];

fn path_of(
    key: &ObjectKey,
    field: &str,
    path: Option<&str>,
    path_type: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Box<str>, PathType)> {
    let path_type = match path_type {
        "Exact" => PathType::Exact,
        "Prefix" => PathType::Prefix,
        "ImplementationSpecific" => PathType::ImplementationSpecific,
        other => {
            let reason = format!(
                "unknown pathType {other:?} (Exact, Prefix or ImplementationSpecific); path ignored"
            );
            diagnostics.push(Diagnostic::error(key, format!("{field}.pathType"), reason));
            return None;
        }
    };
    let path = match path.filter(|p| !p.is_empty()) {
        Some(p) => p,
        None if path_type == PathType::ImplementationSpecific => "/",
        None => {
            diagnostics.push(Diagnostic::error(
                key,
                format!("{field}.path"),
                "path is required; path ignored",
            ));
            return None;
        }
    };
    if let Err(reason) = validate_path(path) {
        diagnostics.push(Diagnostic::error(
            key,
            format!("{field}.path"),
            format!("{path:?} {reason}; path ignored"),
        ));
        return None;
    }
    if path_type == PathType::ImplementationSpecific
        && path.contains(['(', ')', '[', ']', '$', '^', '*', '|', '+'])
    {
        let reason = format!(
            "{path:?} looks like a regular expression; ImplementationSpecific paths are matched as Prefix"
        );
        diagnostics.push(Diagnostic::warning(key, format!("{field}.path"), reason));
    }
    Some((path.into(), path_type))
}

fn validate_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path (start with '/')");
    }
    if INVALID_SEQUENCES.iter().any(|s| path.contains(s))
        || INVALID_SUFFIXES.iter().any(|s| path.ends_with(s))
    {
        return Err("must not contain '//', '/./', '/../' or '%2F', nor end in '/.' or '/..'");
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain '?', '#', spaces or control characters");
    }
    Ok(())
}

/// Resolves a backend to an upstream; what cannot be resolved is a diagnostic and a 503.
fn resolve_backend(
    cx: &Context<'_>,
    key: &ObjectKey,
    backend: &IngressBackend,
    field: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Backend {
    let unavailable = |service: &str, port| Backend {
        service: Arc::from(service),
        port,
        upstream: Upstream::Unavailable,
    };
    let Some(svc) = &backend.service else {
        let reason = "resource backends are not supported; requests get 503";
        diagnostics.push(Diagnostic::error(key, format!("{field}.resource"), reason));
        return unavailable("", PortRef::Number(0));
    };
    let port = match svc.port.as_ref() {
        Some(p) if p.number.is_some() => match p
            .number
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        {
            Some(n) => PortRef::Number(n),
            None => {
                diagnostics.push(Diagnostic::error(
                    key,
                    format!("{field}.service.port.number"),
                    "port number out of range; requests get 503",
                ));
                return unavailable(&svc.name, PortRef::Number(0));
            }
        },
        Some(p) if p.name.as_deref().is_some_and(|n| !n.is_empty()) => {
            PortRef::Name(p.name.as_deref().unwrap_or_default().into())
        }
        _ => {
            diagnostics.push(Diagnostic::error(
                key,
                format!("{field}.service.port"),
                "needs a port number or name; requests get 503",
            ));
            return unavailable(&svc.name, PortRef::Number(0));
        }
    };
    let ns = key.namespace.as_str();
    let upstream = match cx.services.find(ns, &svc.name, &port) {
        Ok(id) => match cx.services.get(id) {
            Some(sp) if sp.service_type == ServiceType::ExternalName => {
                external(sp.external_name.as_deref(), sp.port)
            }
            _ => Upstream::Service(id),
        },
        Err(FindError::NoPort(..)) if is_external_name(cx.store, ns, &svc.name) => match &port {
            // An ExternalName Service needs no ports: connect to the number the Ingress names.
            PortRef::Number(n) => external(external_name(cx.store, ns, &svc.name), *n),
            PortRef::Name(_) => Upstream::Unavailable,
        },
        Err(_) => Upstream::Unavailable,
    };
    if upstream == Upstream::Unavailable {
        let reason = match cx.services.find(ns, &svc.name, &port) {
            Err(e) => format!("{e}; requests get 503"),
            Ok(_) => "ExternalName Service without externalName; requests get 503".to_string(),
        };
        diagnostics.push(Diagnostic::error(key, format!("{field}.service"), reason));
    }
    Backend {
        service: Arc::from(svc.name.as_str()),
        port,
        upstream,
    }
}

fn external(host: Option<&str>, port: u16) -> Upstream {
    match host {
        Some(h) if !h.is_empty() => Upstream::External {
            host: h.into(),
            port,
        },
        _ => Upstream::Unavailable,
    }
}

fn external_name<'a>(store: &'a ObjectStore, ns: &str, name: &str) -> Option<&'a str> {
    let svc = store.services.get(&(ns.to_string(), name.to_string()))?;
    svc.spec.as_ref()?.external_name.as_deref()
}

fn is_external_name(store: &ObjectStore, ns: &str, name: &str) -> bool {
    let svc = store.services.get(&(ns.to_string(), name.to_string()));
    svc.and_then(|s| s.spec.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("ExternalName")
}
