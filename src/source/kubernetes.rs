//! The Kubernetes source (`portico` without `--manifests`): kube-rs watchers on the API server,
//! turned into the same [`Event`]s as the manifests source; and, towards the cluster, the
//! status of our Ingresses and Events about the bad ones.
//!
//! - **Watches** ([`watch`]): IngressClass (cluster-scoped), Ingress, Service, EndpointSlice and
//!   Secrets (by field selector, not Helm's release records nor service-account tokens: TLS
//!   certificates and the Opaque Secrets of basic authentication); Endpoints only with
//!   `--watch-endpoints` (every Service's endpoints are mirrored into EndpointSlices by the
//!   control plane, and the Endpoints API is deprecated). Namespaces are not watched. A kind
//!   that is not watched is reported synced at once. `--watch-namespace` narrows every
//!   namespaced watch (one watcher per namespace and kind). Each watcher retries errors at most
//!   a few seconds apart ([`retry`]), so while the API server is unreachable nothing changes
//!   and the last snapshot keeps serving, and once it is back changes are seen within seconds;
//!   after a relist (410 Gone, at once, or a reconnect that needs one) objects that vanished
//!   meanwhile are deleted. Endpoints forbidden by RBAC are reported once and count as synced.
//! - **Leader election** ([`leader`]) on a coordination.k8s.io/v1 Lease
//!   (`--election-id`, in the pod's namespace): only the leader writes status and Events.
//! - **Status** ([`status`]): `status.loadBalancer.ingress` of our Ingresses, from
//!   `--publish-status-address` or the addresses of the nodes running Portico ([`addresses`]).
//! - **Events** ([`events`]): a diagnostic about an Ingress becomes a Warning Event on it.

mod addresses;
mod events;
mod leader;
mod retry;
mod status;
mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{mpsc, watch as channel};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::controller::BuildStatus;
use crate::source::{Event, Object};

/// The field manager of every write Portico makes (status, Events, the Lease).
pub(super) const FIELD_MANAGER: &str = "portico";

/// Create/replace parameters with Portico's field manager.
pub(super) fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..kube::api::PostParams::default()
    }
}

/// Patch parameters with Portico's field manager.
pub(super) fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..kube::api::PatchParams::default()
    }
}

/// Flags of the Kubernetes source (used when `--manifests` is not given).
#[derive(Clone, Debug, Args)]
pub struct KubeArgs {
    /// A kubeconfig file (default: in-cluster configuration, else `KUBECONFIG` or
    /// `~/.kube/config`).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub kube_context: Option<String>,
    /// Watch only this namespace (repeatable, or a comma list); default: every namespace.
    #[arg(long = "watch-namespace", value_name = "NS", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Also watch v1 Endpoints, for clusters that do not mirror them into EndpointSlices.
    #[arg(long)]
    pub watch_endpoints: bool,
    /// Publish `status.loadBalancer` of our Ingresses and Events about them (the leader does);
    /// `--update-status false` turns both off.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status: bool,
    /// The addresses (IPs or hostnames) published in Ingress status (repeatable, or a comma
    /// list); default: the addresses of the nodes running Portico.
    #[arg(
        long = "publish-status-address",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub publish_status_addresses: Vec<String>,
    /// Publish the nodes' ExternalIP rather than their InternalIP.
    #[arg(long)]
    pub status_external_ip: bool,
    /// The label selector of Portico's pods, whose nodes' addresses are published.
    #[arg(
        long,
        value_name = "SELECTOR",
        default_value = "app.kubernetes.io/name=portico"
    )]
    pub status_pod_selector: String,
    /// The name of the Lease used for leader election.
    #[arg(long, value_name = "NAME", default_value = "portico-leader")]
    pub election_id: String,
    /// How long a leader's Lease lasts without renewal (renewed every 2/15 of it).
    #[arg(long, value_name = "DURATION", default_value = "15s",
          value_parser = crate::config::parse_duration)]
    pub leader_lease_duration: Duration,
    /// This pod's name: the leader election identity (default: the hostname and process id).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// This pod's namespace: where the Lease and Portico's pods are (default: the
    /// client's namespace).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The node this pod runs on (its addresses are published when pods cannot be listed).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No configuration was found (neither in-cluster nor a kubeconfig).
    #[error("no Kubernetes configuration (pass --manifests DIR to run without a cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The kubeconfig could not be read or used.
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// The client could not be made.
    #[error("cannot make a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// A `--publish-status-address` is empty.
    #[error("--publish-status-address: {0:?} is not an IP address or a host name")]
    StatusAddress(String),
}

/// Every object a build reads, listed once from the API server (read-only: `portico check
/// --kubeconfig`): IngressClasses, Ingresses, Services, EndpointSlices, TLS Secrets, and the
/// ConfigMaps of the controller ConfigMap's namespace when one is named.
pub async fn list_once(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
    configmap: Option<&(String, String)>,
) -> Result<Vec<Object>, KubeError> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use kube::api::ListParams;
    let client = client_of(kubeconfig, context).await?;
    let all = ListParams::default();
    let tls = ListParams::default().fields(watch::SECRETS);
    let mut objects = Vec::new();
    let c = || client.clone();
    list(
        Api::<IngressClass>::all(c()),
        &all,
        Object::IngressClass,
        &mut objects,
    )
    .await?;
    list(
        Api::<Ingress>::all(c()),
        &all,
        Object::Ingress,
        &mut objects,
    )
    .await?;
    list(
        Api::<Service>::all(c()),
        &all,
        Object::Service,
        &mut objects,
    )
    .await?;
    list(
        Api::<EndpointSlice>::all(c()),
        &all,
        Object::EndpointSlice,
        &mut objects,
    )
    .await?;
    list(Api::<Secret>::all(c()), &tls, Object::Secret, &mut objects).await?;
    // The controller ConfigMap's namespace: it, and those its add-headers and
    // proxy-set-headers name.
    if let Some((ns, _)) = configmap {
        let api = Api::<ConfigMap>::namespaced(client, ns);
        list(api, &all, Object::ConfigMap, &mut objects).await?;
    }
    Ok(objects)
}

/// One list of a kind, into `out`.
async fn list<K>(
    api: Api<K>,
    params: &kube::api::ListParams,
    wrap: fn(Arc<K>) -> Object,
    out: &mut Vec<Object>,
) -> Result<(), KubeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let listed = api.list(params).await?;
    out.extend(listed.items.into_iter().map(|o| wrap(Arc::new(o))));
    Ok(())
}

/// How long shutdown waits for the leader to release its Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// The started source: run it to drive the watchers (and status, events, election).
pub struct KubeSource {
    /// One task per watched kind.
    watchers: JoinSet<()>,
    /// Status and Events.
    status: JoinSet<()>,
    /// Leader election (ends on stop, after releasing the Lease).
    leader: Option<tokio::task::JoinHandle<()>>,
    /// Set on shutdown.
    stop: channel::Receiver<bool>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("watchers", &self.watchers.len())
            .field("status", &self.status.len())
            .finish()
    }
}

/// Connects (no request is made yet) and starts every task: the watchers send to `events`;
/// status and Events follow the controller's `builds`; `stop` turns true on shutdown.
pub async fn start(
    args: &KubeArgs,
    configmap: Option<(String, String)>,
    events: mpsc::Sender<Event>,
    builds: channel::Receiver<BuildStatus>,
    stop: channel::Receiver<bool>,
) -> Result<KubeSource, KubeError> {
    let client = client(args).await?;
    let addresses = addresses::AddressSource::from_args(args, &client)?;
    let namespaces = watch::scopes(&args.watch_namespaces);
    info!(
        namespaces = ?args.watch_namespaces,
        default_namespace = client.default_namespace(),
        "watching the Kubernetes API"
    );
    let (ingresses, ingresses_rx) = channel::channel(watch::IngressMap::new());
    let (mut watchers, mut tasks) = (JoinSet::new(), JoinSet::new());
    watch::spawn_all(
        &mut watchers,
        watch::Watches {
            client: client.clone(),
            namespaces,
            endpoints: args.watch_endpoints,
            configmap,
            events,
            ingresses,
        },
    );
    let mut leader = None;
    if args.update_status {
        let election = leader::LeaseConfig::from_args(args, &client);
        let (leader_tx, leading) = channel::channel(false);
        let identity = election.identity.clone();
        let run = leader::run(client.clone(), election, leader_tx, stop.clone());
        leader = Some(tokio::spawn(run));
        let inputs = status::Inputs {
            ingresses: ingresses_rx,
            builds,
            leader: leading,
        };
        tasks.spawn(status::run(client.clone(), inputs.clone(), addresses));
        tasks.spawn(events::run(client.clone(), inputs, identity));
    } else {
        info!("not publishing Ingress status or Events (--update-status false)");
    }
    Ok(KubeSource {
        watchers,
        status: tasks,
        leader,
        stop,
    })
}

// === impl KubeSource ===

impl Drop for KubeSource {
    fn drop(&mut self) {
        if let Some(leader) = &self.leader {
            leader.abort();
        }
    }
}

impl KubeSource {
    /// Runs until the controller stops listening (every watcher ends then) or until stop;
    /// then lets the leader release its Lease (for up to [`RELEASE_TIMEOUT`]) and stops every
    /// task. Dropping it (or aborting the task running it) stops every task at once.
    pub async fn run(mut self) -> Result<(), KubeError> {
        let watchers = async {
            while let Some(joined) = self.watchers.join_next().await {
                if let Err(error) = joined {
                    warn!(%error, "a Kubernetes watcher failed");
                }
            }
        };
        tokio::select! {
            () = watchers => {}
            _ = self.stop.wait_for(|s| *s) => {}
        }
        self.status.shutdown().await;
        if let Some(leader) = self.leader.take() {
            let abort = leader.abort_handle();
            if tokio::time::timeout(RELEASE_TIMEOUT, leader).await.is_err() {
                abort.abort();
                warn!("the Lease was not released in time; it expires by itself");
            }
        }
        Ok(())
    }
}

/// The client: `--kubeconfig`/`--kube-context` when given, else in-cluster configuration,
/// else `KUBECONFIG` or `~/.kube/config`.
async fn client(args: &KubeArgs) -> Result<kube::Client, KubeError> {
    client_of(args.kubeconfig.as_deref(), args.kube_context.as_deref()).await
}

/// A client from a kubeconfig file and context (`None`: in-cluster, else the default
/// kubeconfig).
async fn client_of(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<kube::Client, KubeError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
        (None, None) => kube::Config::infer().await?,
    };
    info!(server = %config.cluster_url, "Kubernetes API server");
    Ok(kube::Client::try_from(config)?)
}
