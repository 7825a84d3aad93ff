//! ClusterIP and NodePort allocation for the embedded mode, where no API server allocates.
//!
//! Requested values are honoured (out of range or taken by an older Service: a diagnostic).
//! Ports without a value keep what the previous snapshot gave them, so allocations are stable
//! while the Service exists; new ones start at a hash of the Service's name and probe upward.
//! Everything is a function of the objects and the previous table: `build()` stays pure.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;

use super::{ClusterIp, Protocol, ServicePort, ServiceTable, ServiceType};
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::ObjectKey;

/// Where the embedded mode allocates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocConfig {
    /// `--service-cidr` (default 10.96.0.0/12).
    pub service_cidr: IpNet,
    /// `--service-node-port-range` (default 30000-32767).
    pub node_ports: RangeInclusive<u16>,
}

impl Default for AllocConfig {
    fn default() -> Self {
        AllocConfig {
            service_cidr: "10.96.0.0/12"
                .parse()
                .unwrap_or(IpNet::V4(Default::default())),
            node_ports: 30000..=32767,
        }
    }
}

/// The ports of one Service, with what the Service requested.
pub(super) struct ServiceEntry {
    pub key: ObjectKey,
    /// Position in allocation precedence (older first).
    pub age: usize,
    pub ports: Vec<ServicePort>,
    /// A requested clusterIP was refused: the API server would have rejected the object, so
    /// nothing else is allocated in its place.
    pub refused_ip: bool,
    /// Indexes of ports whose requested nodePort was refused.
    pub refused_node_ports: Vec<usize>,
}

/// Allocates in three passes: requested values, previous allocations, new ones.
pub(super) fn allocate(
    config: &AllocConfig,
    entries: &mut [ServiceEntry],
    previous: Option<&ServiceTable>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].age);
    let mut used = Used::default();
    for &i in &order {
        requested(config, &mut entries[i], &mut used, diagnostics);
    }
    for &i in &order {
        keep_previous(config, &mut entries[i], previous, &mut used);
    }
    for &i in &order {
        allocate_new(config, &mut entries[i], &mut used, diagnostics);
    }
}

#[derive(Default)]
struct Used {
    ips: HashSet<IpAddr>,
    node_ports: HashSet<(u16, Protocol)>,
}

fn wants_ip(port: &ServicePort) -> bool {
    port.service_type != ServiceType::ExternalName && port.cluster_ip != ClusterIp::Headless
}

fn wants_node_port(port: &ServicePort) -> bool {
    matches!(
        port.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    )
}

fn requested(
    config: &AllocConfig,
    entry: &mut ServiceEntry,
    used: &mut Used,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(ClusterIp::Ips(ips)) = entry.ports.first().map(|p| p.cluster_ip.clone()) {
        let problem = ips.iter().find_map(|ip| {
            if !config.service_cidr.contains(ip) {
                Some(format!(
                    "clusterIP {ip} is outside --service-cidr {}",
                    config.service_cidr
                ))
            } else if used.ips.contains(ip) {
                Some(format!(
                    "clusterIP {ip} is already taken by another Service"
                ))
            } else {
                None
            }
        });
        match problem {
            Some(reason) => {
                diagnostics.push(Diagnostic::error(
                    &entry.key,
                    "spec.clusterIP",
                    format!("{reason}; not allocated"),
                ));
                set_ip(entry, ClusterIp::Unallocated);
                entry.refused_ip = true;
            }
            None => used.ips.extend(ips),
        }
    }
    for (i, port) in entry.ports.iter_mut().enumerate() {
        let Some(n) = port.node_port else { continue };
        let wanted = wants_node_port(port);
        let field = format!("spec.ports[{i}].nodePort");
        let reason = if !wants_node_port(port) {
            Some(format!(
                "nodePort {n} on a Service of type {:?}; ignored",
                port.service_type
            ))
        } else if !config.node_ports.contains(&n) {
            Some(format!(
                "nodePort {n} is outside --service-node-port-range {}-{}; not allocated",
                config.node_ports.start(),
                config.node_ports.end()
            ))
        } else if !used.node_ports.insert((n, port.protocol)) {
            Some(format!(
                "nodePort {n} is already taken by another Service; not allocated"
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            diagnostics.push(Diagnostic::error(&entry.key, field, reason));
            port.node_port = None;
            if wanted {
                entry.refused_node_ports.push(i);
            }
        }
    }
}

fn keep_previous(
    config: &AllocConfig,
    entry: &mut ServiceEntry,
    previous: Option<&ServiceTable>,
    used: &mut Used,
) {
    let Some(old_ports) = previous.and_then(|t| t.ports_of(&entry.key.namespace, &entry.key.name))
    else {
        return;
    };
    let wants = !entry.refused_ip
        && entry
            .ports
            .first()
            .is_some_and(|p| wants_ip(p) && p.cluster_ip == ClusterIp::Unallocated);
    let old_ip = old_ports.iter().find_map(|p| match &p.cluster_ip {
        ClusterIp::Ips(ips) => ips.first().copied(),
        _ => None,
    });
    if let Some(ip) =
        old_ip.filter(|ip| wants && config.service_cidr.contains(ip) && used.ips.insert(*ip))
    {
        set_ip(entry, ClusterIp::Ips(vec![ip]));
    }
    for i in open_node_ports(entry) {
        let port = &mut entry.ports[i];
        let old = old_ports
            .iter()
            .find(|o| o.port == port.port && o.protocol == port.protocol)
            .and_then(|o| o.node_port);
        if let Some(n) = old.filter(|n| {
            config.node_ports.contains(n) && used.node_ports.insert((*n, port.protocol))
        }) {
            port.node_port = Some(n);
        }
    }
}

fn allocate_new(
    config: &AllocConfig,
    entry: &mut ServiceEntry,
    used: &mut Used,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let seed = name_hash(&entry.key);
    let wants = !entry.refused_ip
        && entry
            .ports
            .first()
            .is_some_and(|p| wants_ip(p) && p.cluster_ip == ClusterIp::Unallocated);
    if wants {
        match free_ip(&config.service_cidr, seed, &used.ips) {
            Some(ip) => {
                used.ips.insert(ip);
                set_ip(entry, ClusterIp::Ips(vec![ip]));
            }
            None => diagnostics.push(Diagnostic::error(
                &entry.key,
                "spec.clusterIP",
                format!("--service-cidr {} is full", config.service_cidr),
            )),
        }
    }
    for i in open_node_ports(entry) {
        let port = &mut entry.ports[i];
        match free_port(
            &config.node_ports,
            seed.wrapping_add(i as u64),
            port.protocol,
            &used.node_ports,
        ) {
            Some(n) => {
                used.node_ports.insert((n, port.protocol));
                port.node_port = Some(n);
            }
            None => diagnostics.push(Diagnostic::error(
                &entry.key,
                format!("spec.ports[{i}].nodePort"),
                "--service-node-port-range is full",
            )),
        }
    }
}

/// Ports that want a NodePort, have none, and did not have a request refused.
fn open_node_ports(entry: &ServiceEntry) -> Vec<usize> {
    let refused = &entry.refused_node_ports;
    (0..entry.ports.len())
        .filter(|i| {
            wants_node_port(&entry.ports[*i])
                && entry.ports[*i].node_port.is_none()
                && !refused.contains(i)
        })
        .collect()
}

fn set_ip(entry: &mut ServiceEntry, ip: ClusterIp) {
    for port in &mut entry.ports {
        port.cluster_ip = ip.clone();
    }
}

/// FNV-1a of `namespace/name`: a stable starting point for probing (not `DefaultHasher`, whose
/// algorithm may change between Rust releases).
fn name_hash(key: &ObjectKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.namespace.bytes().chain(*b"/").chain(key.name.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The first free address at or after the hash's offset, skipping the network address (and,
/// for IPv4, the broadcast address).
fn free_ip(cidr: &IpNet, seed: u64, used: &HashSet<IpAddr>) -> Option<IpAddr> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len()).min(64);
    let size: u64 = if host_bits >= 64 {
        u64::MAX
    } else {
        1u64 << host_bits
    };
    let usable = match cidr {
        IpNet::V4(_) => size.saturating_sub(2),
        IpNet::V6(_) => size.saturating_sub(1),
    };
    let limit = usable.min(1 << 20);
    (0..limit)
        .map(|i| 1 + (seed.wrapping_add(i) % usable.max(1)))
        .map(|offset| nth(cidr, offset))
        .find(|ip| !used.contains(ip))
}

fn nth(cidr: &IpNet, offset: u64) -> IpAddr {
    match cidr {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()).wrapping_add(offset as u32)).into()),
        IpNet::V6(n) => {
            IpAddr::V6((u128::from(n.network()).wrapping_add(u128::from(offset))).into())
        }
    }
}

fn free_port(
    range: &RangeInclusive<u16>,
    seed: u64,
    protocol: Protocol,
    used: &HashSet<(u16, Protocol)>,
) -> Option<u16> {
    let (start, len) = (
        u64::from(*range.start()),
        u64::from(*range.end()) - u64::from(*range.start()) + 1,
    );
    (0..len)
        .map(|i| (start + (seed.wrapping_add(i) % len)) as u16)
        .find(|n| !used.contains(&(*n, protocol)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_stays_in_range_and_skips_used() {
        let cidr: IpNet = "10.0.0.0/30".parse().unwrap();
        let mut used = HashSet::new();
        let a = free_ip(&cidr, 7, &used).unwrap();
        used.insert(a);
        let b = free_ip(&cidr, 7, &used).unwrap();
        assert_ne!(a, b);
        used.insert(b);
        for ip in [a, b] {
            assert!(
                ip == "10.0.0.1".parse::<IpAddr>().unwrap()
                    || ip == "10.0.0.2".parse::<IpAddr>().unwrap(),
                "{ip}"
            );
        }
        assert_eq!(
            free_ip(&cidr, 7, &used),
            None,
            "a /30 has two usable addresses"
        );
        let mut ports = HashSet::new();
        for _ in 0..3 {
            let n = free_port(&(30000..=30002), 99, Protocol::Tcp, &ports).unwrap();
            assert!((30000..=30002).contains(&n));
            assert!(ports.insert((n, Protocol::Tcp)));
        }
        assert_eq!(free_port(&(30000..=30002), 99, Protocol::Tcp, &ports), None);
        assert!(
            free_port(&(30000..=30002), 99, Protocol::Udp, &ports).is_some(),
            "ports are per protocol"
        );
    }
}
