//! Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does
//! it: whoever holds an unexpired Lease is the leader and renews it every retry period; the
//! others take it over once it has not changed for its `leaseDurationSeconds`.
//!
//! Expiry is judged by when this process *observed* the Lease change (a monotonic clock), never
//! by comparing the Lease's timestamps with the local wall clock, so clock skew between nodes
//! does not matter. Every write carries the resourceVersion read, so two candidates cannot both
//! win: the loser gets 409 Conflict. A leader that cannot renew for the renew deadline (2/3 of
//! the lease duration) steps down before anyone else may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::KubeArgs;

/// Where and as whom to run for leader.
#[derive(Clone, Debug)]
pub(super) struct LeaseConfig {
    /// The Lease's name (`--election-id`).
    pub name: String,
    /// The Lease's namespace (the pod's).
    pub namespace: String,
    /// Who we are: the pod name, else hostname-pid.
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or checked.
    pub retry_period: Duration,
}

// === impl LeaseConfig ===

impl LeaseConfig {
    /// The election described by the flags (client-go's proportions: 15 s, 10 s, 2 s).
    pub(super) fn from_args(args: &KubeArgs, client: &Client) -> Self {
        let lease_duration = args.leader_lease_duration.max(Duration::from_secs(1));
        LeaseConfig {
            name: args.election_id.clone(),
            namespace: args
                .pod_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity: identity(args.pod_name.as_deref()),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }
}

/// The pod name; outside a pod, the hostname and process id (two processes on one host must
/// not share an identity, or both would think they hold the Lease).
fn identity(pod_name: Option<&str>) -> String {
    if let Some(name) = pod_name.filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let host = hostname::get().ok().and_then(|h| h.into_string().ok());
    format!(
        "{}-{}",
        host.as_deref().unwrap_or("portico"),
        std::process::id()
    )
}

/// Runs for leader until `stop`; `leader` says whether we are it. On stop, a leader says so
/// and releases the Lease (holder cleared), so another replica takes over at its next retry
/// instead of waiting out the lease duration (what a rolling update needs).
pub(super) async fn run(
    client: Client,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity,
          "running for leader");
    let mut elector = Elector {
        config,
        observed: None,
        renewed: None,
        failing: false,
    };
    loop {
        let attempt = Instant::now();
        match elector.try_acquire_or_renew(&api).await {
            Ok(true) => elector.renewed = Some(attempt),
            Ok(false) => elector.renewed = None,
            Err(error) => elector.failed(&error),
        }
        if elector.failing && elector.renewed == Some(attempt) {
            elector.failing = false;
            info!("lease requests succeed again");
        }
        let is_leader = elector
            .renewed
            .is_some_and(|t| t.elapsed() < elector.config.renew_deadline);
        if leader.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader) {
            let identity = &elector.config.identity;
            if is_leader {
                info!(%identity, "became the leader");
            } else {
                info!(%identity, "not the leader any more");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(elector.config.retry_period) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let was_leader = leader.send_replace(false);
    if was_leader || elector.renewed.is_some() {
        match elector.release(&api).await {
            Ok(true) => info!(identity = %elector.config.identity, "lease released"),
            Ok(false) => {}
            Err(error) => warn!(%error, "cannot release the lease; it expires by itself"),
        }
    }
}

/// The state of one candidate.
struct Elector {
    config: LeaseConfig,
    /// The holder and renew time last seen, and when they were first seen.
    observed: Option<(String, Option<MicroTime>, Instant)>,
    /// When we last acquired or renewed the Lease.
    renewed: Option<Instant>,
    /// Whether the latest request failed (logged once per outage).
    failing: bool,
}

// === impl Elector ===

impl Elector {
    /// One round: create, renew or take over the Lease. True when we hold it now.
    async fn try_acquire_or_renew(&mut self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let Some(mut lease) = api.get_opt(&self.config.name).await? else {
            return self.create(api).await;
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let observed_at = self.observe(&holder, &spec.renew_time);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let ours = holder == self.config.identity;
        if !ours && !holder.is_empty() && observed_at.elapsed() < duration {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        if !ours {
            debug!(previous = %holder, "taking over the lease");
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.duration_seconds());
        match api
            .replace(&self.config.name, &super::post_params(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Creates the Lease, held by us; false when someone else created it first.
    async fn create(&mut self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(self.duration_seconds()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match api.create(&super::post_params(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up if we hold it (holder cleared, duration 1 s, as client-go's
    /// `ReleaseOnCancel`); true when released.
    async fn release(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let Some(mut lease) = api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        api.replace(&self.config.name, &super::post_params(), &lease)
            .await?;
        Ok(true)
    }

    /// Records the holder and renew time read; returns when they were first seen as such.
    fn observe(&mut self, holder: &str, renew_time: &Option<MicroTime>) -> Instant {
        match &self.observed {
            Some((h, r, at)) if h == holder && r == renew_time => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((holder.to_string(), renew_time.clone(), now));
                now
            }
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn failed(&mut self, error: &kube::Error) {
        if std::mem::replace(&mut self.failing, true) {
            debug!(%error, "lease request failed");
        } else {
            warn!(%error, "lease request failed; retrying");
        }
    }
}
