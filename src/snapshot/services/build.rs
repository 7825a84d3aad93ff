//! Building the service table from the store: Service ports, endpoints, schedulers, weights,
//! allocation, and the runtime state carried over from the previous table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::alloc::{self, ServiceEntry};
use super::endpoints::EndpointIndex;
use super::reuse::{BuiltService, Reuse, Source};
use super::state::Shared;
use super::{
    ClusterIp, Endpoint, Protocol, Scheduler, ServiceOptions, ServicePort, ServicePortId,
    ServiceTable, ServiceType, SessionAffinity, TargetPort,
};
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::{Kind, ObjectKey};
use crate::store::ObjectStore;

/// Picks the scheduler of a Service.
const SCHEDULER_ANNOTATION: &str = "portico.dev/load-balancer";
/// Endpoint weights for `wrr`: `10.0.0.1=3,10.0.0.2:8080=1` (by IP, or IP:port).
const WEIGHTS_ANNOTATION: &str = "portico.dev/weights";
/// The longest smooth weighted sequence kept per port.
const MAX_WRR_SEQUENCE: u64 = 4096;

// === impl ServiceTable ===

impl ServiceTable {
    /// Builds the table from every Service in the store. `previous` is the table being
    /// replaced: allocations and runtime state (endpoint load, affinity) carry over from it,
    /// and the Services whose inputs did not change keep its ports (see `reuse`).
    pub fn build(
        store: &ObjectStore,
        options: &ServiceOptions,
        previous: Option<&ServiceTable>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> ServiceTable {
        let index = EndpointIndex::new(store, diagnostics);
        let mut entries = service_entries(store, options, diagnostics);
        if let Some(config) = &options.allocation {
            alloc::allocate(config, &mut entries, previous, diagnostics);
        }
        let mut table = ServiceTable::default();
        let mut services = Vec::with_capacity(entries.len());
        let empty = Vec::new();
        let before_all = previous.map_or(&empty, |t| &*t.reuse.services);
        let mut old = before_all.iter().peekable();
        let mut reused = 0;
        // `service_entries` gives one entry per Service, in the store's (key) order.
        for (entry, service) in entries.into_iter().zip(store.services.values()) {
            while old.next_if(|b| b.key < entry.key).is_some() {}
            let before = old.next_if(|b| b.key == entry.key);
            let same_sources = |s: &[Source]| index.same_sources(&entry.key, s);
            let built = match before {
                Some(b) if b.still_valid(&entry, service, same_sources, previous) => {
                    reused += 1;
                    Arc::clone(b)
                }
                _ => Arc::new(build_service(store, &index, entry, service, previous)),
            };
            diagnostics.extend(built.diagnostics.iter().cloned());
            let start = table.ports.len() as u32;
            for port in &built.ports {
                table.push(Arc::clone(port));
            }
            let end = table.ports.len() as u32;
            let (ns, name) = &built.names;
            table
                .by_name
                .entry(Arc::clone(ns))
                .or_default()
                .insert(Arc::clone(name), start..end);
            services.push(built);
        }
        table.reuse = Reuse {
            unchanged: previous.is_some() && reused == before_all.len() && reused == services.len(),
            services: Arc::new(services),
        };
        table
    }

    fn push(&mut self, port: Arc<ServicePort>) {
        let id = ServicePortId(self.ports.len() as u32);
        if let ClusterIp::Ips(ips) = &port.cluster_ip {
            for ip in ips {
                self.by_cluster_ip
                    .entry((ip.to_canonical(), port.port, port.protocol))
                    .or_insert(id);
            }
        }
        if let Some(n) = port.node_port {
            self.by_node_port.entry((n, port.protocol)).or_insert(id);
        }
        self.ports.push(port);
    }
}

/// Finishes the ports of one Service: endpoints, weights, runtime state.
fn build_service(
    store: &ObjectStore,
    index: &EndpointIndex<'_>,
    entry: ServiceEntry,
    service: &Arc<Service>,
    previous: Option<&ServiceTable>,
) -> BuiltService {
    let mut diagnostics = Vec::new();
    let weights = weights(store, &entry.key, &mut diagnostics);
    let mut ports = Vec::with_capacity(entry.ports.len());
    for port in entry.ports {
        let endpoints = index.resolve(&entry.key, &port, &mut diagnostics);
        let old = previous.and_then(|t| {
            t.find(
                &port.namespace,
                &port.service,
                &super::PortRef::Number(port.port),
            )
            .ok()
            .and_then(|id| t.get(id))
        });
        ports.push(Arc::new(finish(port, endpoints, &weights, old)));
    }
    let names = (
        entry.key.namespace.as_str().into(),
        entry.key.name.as_str().into(),
    );
    BuiltService {
        sources: index.sources(&entry.key),
        key: entry.key,
        names,
        service: Arc::clone(service),
        ports,
        diagnostics,
    }
}

/// Every Service with its ports (no endpoints yet), in key order, with its allocation age.
fn service_entries(
    store: &ObjectStore,
    options: &ServiceOptions,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<ServiceEntry> {
    let placeholder = Shared::default();
    let mut created = Vec::with_capacity(store.services.len());
    let mut entries: Vec<ServiceEntry> = store
        .services
        .iter()
        .map(|((ns, name), svc)| {
            let key = ObjectKey::new(Kind::Service, ns, name);
            let scheduler = scheduler(&key, svc, options.default_scheduler, diagnostics);
            let ports = service_ports(&key, svc, scheduler, &placeholder, diagnostics);
            created.push(svc.metadata.creation_timestamp.as_ref().map(|t| t.0));
            ServiceEntry {
                key,
                age: 0,
                ports,
                refused_ip: false,
                refused_node_ports: Vec::new(),
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (created[i].is_none(), created[i], i));
    for (age, i) in order.into_iter().enumerate() {
        entries[i].age = age;
    }
    entries
}

/// Endpoints sorted (ready first), de-duplicated, weighted, with runtime state carried over.
fn finish(
    mut port: ServicePort,
    mut endpoints: Vec<Endpoint>,
    weights: &HashMap<String, u32>,
    old: Option<&ServicePort>,
) -> ServicePort {
    endpoints.sort_by_key(|e| (!e.ready, e.addr));
    endpoints.dedup_by(|b, a| a.addr == b.addr); // the ready copy comes first and stays
    // `ewma`: a new endpoint starts at the average of the port's others (ingress-nginx's
    // sync), so it is neither flooded nor starved.
    let average = old.filter(|o| !o.endpoints.is_empty()).map(|o| {
        let (sum, touched) = o.endpoints.iter().fold((0.0, 0), |(sum, touched), e| {
            let (ewma, at) = e.load.ewma();
            (sum + ewma, touched.max(at))
        });
        (sum / o.endpoints.len() as f64, touched)
    });
    for e in &mut endpoints {
        let weight = (!weights.is_empty())
            .then(|| {
                weights
                    .get(&e.addr.to_string())
                    .or_else(|| weights.get(&e.addr.ip().to_string()))
            })
            .flatten();
        e.weight = weight.copied().unwrap_or(1);
        if let Some(prev) = old.and_then(|o| o.endpoints.iter().find(|p| p.addr == e.addr)) {
            e.load = prev.load.clone();
        } else if let Some((ewma, touched)) = average {
            e.load.set_ewma(ewma, touched);
        }
        e.load.set_passive(port.passive);
    }
    port.ready = endpoints.iter().filter(|e| e.ready).count();
    port.wrr = smooth_wrr(&endpoints[..port.ready]);
    port.affinity = old.map_or_else(Shared::default, |old| old.affinity.clone());
    port.endpoints = endpoints;
    port
}

/// The smooth weighted round-robin order (as nginx's): each step adds every weight to its
/// endpoint's credit and takes the endpoint with the most credit, minus the total.
fn smooth_wrr(ready: &[Endpoint]) -> Box<[u32]> {
    let gcd = ready
        .iter()
        .map(|e| u64::from(e.weight))
        .filter(|w| *w > 0)
        .fold(0, gcd);
    if gcd == 0 {
        return Box::new([]);
    }
    let weights: Vec<i64> = ready
        .iter()
        .map(|e| (u64::from(e.weight) / gcd) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let steps = (total as u64).min(MAX_WRR_SEQUENCE);
    let mut credit = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(steps as usize);
    for _ in 0..steps {
        for (c, w) in credit.iter_mut().zip(&weights) {
            *c += w;
        }
        let best = (0..credit.len())
            .max_by_key(|&i| (credit[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        credit[best] -= total;
        sequence.push(best as u32);
    }
    sequence.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn scheduler(
    key: &ObjectKey,
    svc: &Service,
    default: Scheduler,
    diagnostics: &mut Vec<Diagnostic>,
) -> Scheduler {
    let annotation = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULER_ANNOTATION));
    match annotation.map(|v| v.parse::<Scheduler>()) {
        None => default,
        Some(Ok(s)) => s,
        Some(Err(reason)) => {
            let field = format!("metadata.annotations[{SCHEDULER_ANNOTATION}]");
            diagnostics.push(Diagnostic::warning(
                key,
                field,
                format!("{reason}; using {}", default.as_str()),
            ));
            default
        }
    }
}

/// `portico.dev/weights` as address → weight.
fn weights(
    store: &ObjectStore,
    key: &ObjectKey,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<String, u32> {
    let svc = store
        .services
        .get(&(key.namespace.clone(), key.name.clone()));
    let Some(value) = svc
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(WEIGHTS_ANNOTATION))
    else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item.rsplit_once('=').and_then(|(addr, w)| {
            let valid =
                addr.parse::<IpAddr>().is_ok() || addr.parse::<std::net::SocketAddr>().is_ok();
            valid.then_some(())?;
            Some((addr.to_string(), w.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((addr, w)) => drop(out.insert(addr, w)),
            None => {
                let field = format!("metadata.annotations[{WEIGHTS_ANNOTATION}]");
                diagnostics.push(Diagnostic::warning(
                    key,
                    field,
                    format!("{item:?} is not ADDRESS=WEIGHT; ignored"),
                ));
            }
        }
    }
    out
}

/// The ports of a Service, without endpoints; invalid ports are diagnostics.
/// `affinity` is a placeholder: [`finish`] gives each port its own.
fn service_ports(
    key: &ObjectKey,
    svc: &Service,
    scheduler: Scheduler,
    affinity: &Shared<super::state::Affinity>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<ServicePort> {
    let (ns, name): (Arc<str>, Arc<str>) =
        (key.namespace.as_str().into(), key.name.as_str().into());
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
    let names: Vec<&str> = ports.iter().filter_map(|p| p.name.as_deref()).collect();
    let annotations = svc.metadata.annotations.as_ref();
    let health = super::health::parse(key, annotations, &names, diagnostics);
    let passive = super::health::parse_passive(key, annotations, diagnostics);
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
            app_protocol: p
                .app_protocol
                .as_deref()
                .filter(|a| !a.is_empty())
                .map(Box::from),
            health: health.as_ref().map(|h| {
                let app = p.app_protocol.as_deref();
                Arc::new(super::health::HealthCheck {
                    tls: app == Some("https"),
                    // gRPC's health protocol is HTTP/2 whatever the port says.
                    http2: app == Some("kubernetes.io/h2c") || h.grpc.is_some(),
                    ..h.clone()
                })
            }),
            passive,
            target_port,
            service_type,
            cluster_ip: cluster_ip.clone(),
            node_port: p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0),
            external_name: external_name.clone(),
            session_affinity,
            scheduler,
            endpoints: Vec::new(),
            ready: 0,
            wrr: Box::new([]),
            affinity: affinity.clone(),
            cursor: super::Cursor::default(),
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
