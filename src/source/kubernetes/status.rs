//! The status writer: while we are the leader, `status.loadBalancer.ingress` of each of our
//! Ingresses is the published addresses, and that of an Ingress that stopped being ours is
//! cleared.
//!
//! "Ours" is what the latest build says ([`BuildStatus::ingresses`]), so the class rules live
//! in one place. Nothing is written before the first build (it would clear everything), nor
//! while no address is known. An Ingress stopped being ours when this process wrote its status,
//! or when its status is exactly our addresses (so a new leader cleans up after the previous
//! one); the status of other controllers' Ingresses is never touched. A write is a PUT on the
//! status subresource carrying the resourceVersion read (RBAC: `update` on `ingresses/status`);
//! a 409 Conflict just waits for the watch to deliver the newer object. Each write is made only
//! when the status differs, and everything is checked again every 30 s (node addresses too).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerStatus, IngressStatus};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use super::addresses::{Address, AddressSource, normalize};
use super::watch::IngressMap;
use crate::controller::BuildStatus;
use crate::source::ObjectKey;
use crate::store::NsName;

/// How often addresses are looked up again and every status checked.
const RESYNC: Duration = Duration::from_secs(30);

/// What the status writer and the Events publisher follow.
#[derive(Clone, Debug)]
pub(super) struct Inputs {
    /// Every watched Ingress.
    pub ingresses: watch::Receiver<IngressMap>,
    /// The controller's latest build.
    pub builds: watch::Receiver<BuildStatus>,
    /// Whether we are the leader.
    pub leader: watch::Receiver<bool>,
}

// === impl Inputs ===

impl Inputs {
    /// Waits until we lead and the first build is done; false when the inputs are gone.
    pub(super) async fn ready(&mut self) -> bool {
        self.leader.wait_for(|l| *l).await.is_ok()
            && self.builds.wait_for(|b| b.generation > 0).await.is_ok()
    }

    /// Whether we still lead.
    pub(super) fn leading(&self) -> bool {
        *self.leader.borrow()
    }
}

/// One status write: the Ingress as read, and the addresses it should have.
#[derive(Debug, PartialEq)]
pub(super) struct Write {
    /// The Ingress as last read (its resourceVersion guards the write).
    pub ingress: Arc<Ingress>,
    /// The addresses it should have (empty: cleared).
    pub addresses: Vec<Address>,
}

/// What this process remembers about its own writes.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Ingresses whose status this process set (cleared again when they stop being ours).
    pub written: BTreeSet<NsName>,
    /// Ingresses this process cleared because they held our addresses but are not ours: never
    /// cleared that way again, so that a controller publishing the same addresses for its own
    /// Ingress does not get into a write fight with us.
    pub cleared: BTreeSet<NsName>,
    /// Ingresses written, by the resourceVersion the write was based on: skipped until the
    /// watch delivers a newer version, so one change is not written twice.
    pub in_flight: BTreeMap<NsName, String>,
}

// === impl Memory ===

impl Memory {
    /// Forgets deleted Ingresses, and writes the watch has caught up with.
    fn prune(&mut self, ingresses: &IngressMap) {
        self.written.retain(|k| ingresses.contains_key(k));
        self.cleared.retain(|k| ingresses.contains_key(k));
        self.in_flight.retain(|k, rv| {
            ingresses
                .get(k)
                .and_then(|i| i.metadata.resource_version.as_ref())
                == Some(rv)
        });
    }

    /// Records a successful write based on resourceVersion `rv`.
    fn record(&mut self, key: NsName, rv: String, addresses: &[Address]) {
        self.in_flight.insert(key.clone(), rv);
        if addresses.is_empty() {
            self.written.remove(&key);
            self.cleared.insert(key);
        } else {
            self.cleared.remove(&key);
            self.written.insert(key);
        }
    }
}

/// Writes status while we lead.
struct Writer {
    client: Client,
    memory: Memory,
}

/// Runs forever: waits to lead, then keeps statuses right until leadership is lost.
pub(super) async fn run(client: Client, mut inputs: Inputs, mut source: AddressSource) {
    let mut writer = Writer {
        client,
        memory: Memory::default(),
    };
    while inputs.ready().await {
        let mut addresses = lookup(&mut source, None).await;
        let mut resync = Instant::now() + RESYNC;
        while inputs.leading() {
            writer.sync(&inputs, &addresses).await;
            tokio::select! {
                changed = inputs.builds.changed() => if changed.is_err() { return },
                changed = inputs.ingresses.changed() => if changed.is_err() { return },
                changed = inputs.leader.changed() => if changed.is_err() { return },
                () = sleep_until(resync) => {
                    addresses = lookup(&mut source, Some(&addresses)).await;
                    resync = Instant::now() + RESYNC;
                }
            }
        }
        writer.memory.in_flight.clear();
    }
}

/// The current addresses; logs when they change (`previous` is `None` on the first lookup).
async fn lookup(source: &mut AddressSource, previous: Option<&[Address]>) -> Vec<Address> {
    let addresses = source.current().await;
    if previous == Some(&addresses[..]) {
        return addresses;
    }
    if addresses.is_empty() {
        warn!(
            "no address to publish in Ingress status: pass --publish-status-address, \
             or set NODE_NAME (the DaemonSet does)"
        );
    } else {
        info!(?addresses, "publishing Ingress status");
    }
    addresses
}

// === impl Writer ===

impl Writer {
    async fn sync(&mut self, inputs: &Inputs, addresses: &[Address]) {
        if addresses.is_empty() {
            return;
        }
        let writes = {
            let ingresses = inputs.ingresses.borrow();
            self.memory.prune(&ingresses);
            let ours = inputs.builds.borrow().ingresses.clone();
            plan(&ingresses, &ours, addresses, &self.memory)
        };
        for write in writes {
            self.write(write).await;
        }
    }

    async fn write(&mut self, write: Write) {
        let meta = &write.ingress.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let mut ingress = Ingress::clone(&write.ingress);
        ingress.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: (!write.addresses.is_empty()).then(|| write.addresses.clone()),
            }),
        });
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &namespace);
        let key = (namespace, name);
        match api
            .replace_status(&key.1, &super::post_params(), &ingress)
            .await
        {
            Ok(_) => {
                let ingress = format!("{}/{}", key.0, key.1);
                info!(%ingress, addresses = ?write.addresses, "Ingress status updated");
                let rv = meta.resource_version.clone().unwrap_or_default();
                self.memory.record(key, rv, &write.addresses);
            }
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => {
                debug!(namespace = %key.0, name = %key.1, reason = %status.reason,
                       "Ingress changed meanwhile; status written on the next version");
            }
            Err(error) => {
                warn!(namespace = %key.0, name = %key.1, %error, "cannot update Ingress status")
            }
        }
    }
}

/// The status writes due: each of our Ingresses gets `addresses`; one that is not ours gets
/// its status cleared when we wrote it, or when it holds exactly our addresses and we did not
/// clear it before. Ingresses whose status already is right, or whose write is in flight, are
/// left out.
pub(super) fn plan(
    ingresses: &IngressMap,
    ours: &[ObjectKey],
    addresses: &[Address],
    memory: &Memory,
) -> Vec<Write> {
    let ours: BTreeSet<(&str, &str)> = ours
        .iter()
        .map(|k| (k.namespace.as_str(), k.name.as_str()))
        .collect();
    let mut writes = Vec::new();
    for (key, ingress) in ingresses {
        if memory.in_flight.contains_key(key) {
            continue;
        }
        let current = current_addresses(ingress);
        let desired = if ours.contains(&(key.0.as_str(), key.1.as_str())) {
            addresses.to_vec()
        } else if memory.written.contains(key)
            || (!memory.cleared.contains(key) && !current.is_empty() && current == addresses)
        {
            Vec::new()
        } else {
            continue;
        };
        if desired != current {
            writes.push(Write {
                ingress: ingress.clone(),
                addresses: desired,
            });
        }
    }
    writes
}

/// The Ingress's published addresses, sorted as ours are.
fn current_addresses(ingress: &Ingress) -> Vec<Address> {
    let list = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    normalize(list)
}
