//! Where Portico serves: the addresses written into `status.loadBalancer.ingress`.
//!
//! `--publish-status-address` gives them (IPs or host names). Otherwise Portico runs as a
//! hostNetwork DaemonSet, so it serves on the nodes that run it: the leader lists its own
//! pods (`--status-pod-selector` in the pod's namespace), keeps the Running ones, and
//! publishes each one's node InternalIPs (ExternalIPs with `--status-external-ip`; the other
//! kind when a node has none of the preferred one). When pods cannot be listed it falls back
//! to the node it runs on (`NODE_NAME` from the downward API).

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;
use kube::api::ListParams;
use kube::{Api, Client};
use tracing::{debug, warn};

use super::{KubeArgs, KubeError};

/// One published address.
pub(super) type Address = IngressLoadBalancerIngress;

/// Where the published addresses come from.
#[derive(Clone)]
pub(super) enum AddressSource {
    /// `--publish-status-address`.
    Fixed(Vec<Address>),
    /// The nodes running Portico.
    Nodes(NodeAddresses),
}

/// Finds the nodes running Portico and their addresses.
#[derive(Clone)]
pub(super) struct NodeAddresses {
    client: Client,
    namespace: String,
    selector: String,
    own_node: Option<String>,
    external: bool,
    /// Whether the latest attempt to list pods failed (logged once per failure streak).
    failing: bool,
}

// === impl AddressSource ===

impl AddressSource {
    /// The source the flags describe; an invalid `--publish-status-address` is an error.
    pub(super) fn from_args(args: &KubeArgs, client: &Client) -> Result<Self, KubeError> {
        if !args.publish_status_addresses.is_empty() {
            let addresses = args
                .publish_status_addresses
                .iter()
                .map(|a| parse_status_address(a).ok_or_else(|| KubeError::StatusAddress(a.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(AddressSource::Fixed(normalize(addresses)));
        }
        Ok(AddressSource::Nodes(NodeAddresses {
            client: client.clone(),
            namespace: args
                .pod_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            selector: args.status_pod_selector.clone(),
            own_node: args.node_name.clone().filter(|n| !n.is_empty()),
            external: args.status_external_ip,
            failing: false,
        }))
    }

    /// The addresses to publish now, sorted; empty when none could be found.
    pub(super) async fn current(&mut self) -> Vec<Address> {
        match self {
            AddressSource::Fixed(addresses) => addresses.clone(),
            AddressSource::Nodes(nodes) => nodes.current().await,
        }
    }
}

/// An IP address, or a DNS name (lower-cased), as a status entry.
pub(super) fn parse_status_address(s: &str) -> Option<Address> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(Address {
            ip: Some(ip.to_string()),
            ..Address::default()
        });
    }
    let name = s.to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (name.len() <= 253 && name.split('.').all(label_ok)).then(|| Address {
        hostname: Some(name),
        ..Address::default()
    })
}

/// Sorted (IPs before host names) and without duplicates.
pub(super) fn normalize(mut addresses: Vec<Address>) -> Vec<Address> {
    addresses.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    addresses.dedup_by(|a, b| sort_key(a) == sort_key(b));
    addresses
}

fn sort_key(a: &Address) -> (Option<&str>, Option<&str>) {
    (a.hostname.as_deref(), a.ip.as_deref())
}

// === impl NodeAddresses ===

impl NodeAddresses {
    async fn current(&mut self) -> Vec<Address> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut addresses = Vec::new();
        for name in self.nodes().await {
            match api.get(&name).await {
                Ok(node) => addresses.extend(node_ips(&node, self.external)),
                Err(error) => warn!(node = %name, %error, "cannot read node addresses"),
            }
        }
        normalize(addresses)
    }

    /// The nodes of Portico's Running pods, and our own node.
    async fn nodes(&mut self) -> BTreeSet<String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(&self.selector);
        let mut nodes: BTreeSet<String> = self.own_node.iter().cloned().collect();
        match api.list(&params).await {
            Ok(pods) => {
                self.failing = false;
                nodes.extend(pods.items.iter().filter_map(running_node));
            }
            Err(error) if !std::mem::replace(&mut self.failing, true) => {
                warn!(namespace = %self.namespace, selector = %self.selector, %error,
                      "cannot list Portico's pods; publishing this node's address only");
            }
            Err(error) => debug!(%error, "cannot list Portico's pods"),
        }
        nodes
    }
}

/// The node of a Running pod that is not being deleted.
fn running_node(pod: &Pod) -> Option<String> {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    node.filter(|n| running && !deleting && !n.is_empty())
}

/// A node's InternalIPs (or ExternalIPs when `external`); the other kind when it has none.
pub(super) fn node_ips(node: &Node, external: bool) -> Vec<Address> {
    let all = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let (preferred, other) = if external {
        ("ExternalIP", "InternalIP")
    } else {
        ("InternalIP", "ExternalIP")
    };
    let of = |kind: &str| -> Vec<Address> {
        all.iter()
            .filter(|a| a.type_ == kind)
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .map(|ip| Address {
                ip: Some(ip.to_string()),
                ..Address::default()
            })
            .collect()
    };
    let found = of(preferred);
    if found.is_empty() { of(other) } else { found }
}
