//! One kube-rs watcher per watched kind and namespace, turned into [`Event`]s.
//!
//! Every watcher is `watcher(api, config)` with Portico's retry rule ([`super::retry`]: a few
//! seconds at most, reset by any event, a relist at once after 410) and managedFields stripped.
//! A watcher lists, then watches from the list's resourceVersion; after a 410 Gone (or a
//! reconnect whose resourceVersion is too old) it lists again. [`Relist`] turns that into
//! events: objects are applied as they are listed, and when a list completes, the objects
//! known before but absent from it are deleted. Nothing is deleted on an error, so while the
//! API server is unreachable the store (and the snapshot) stay as they were.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{BoxStream, select_all};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::retry::{Failure, with_retry};
use crate::source::{Event, Kind, Object, ObjectKey};
use crate::store::NsName;

/// The field selector of the Secrets Portico reads: TLS certificates, and the Opaque Secrets
/// that `auth-secret` and the like name; never Helm's release records or service-account
/// tokens (the bulk of a cluster's Secrets, and nothing an Ingress can use).
pub(super) const SECRETS: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Every Ingress watched, with its status: what the status writer and the Events publisher
/// read (the controller's store is its own).
pub(super) type IngressMap = BTreeMap<NsName, Arc<Ingress>>;

/// What the watchers need.
pub(super) struct Watches {
    /// The API client.
    pub client: Client,
    /// The namespaces watched (`None`: all of them).
    pub namespaces: Vec<Option<String>>,
    /// Whether v1 Endpoints are watched.
    pub endpoints: bool,
    /// The controller's ConfigMap (namespace, name) (`--configmap`): the ConfigMaps of its
    /// namespace are watched.
    pub configmap: Option<(String, String)>,
    /// Where events go (the controller).
    pub events: mpsc::Sender<Event>,
    /// Every Ingress, kept up to date for the status writer.
    pub ingresses: watch::Sender<IngressMap>,
}

/// `--watch-namespace` values as watch scopes: each namespace once, or all namespaces.
pub(super) fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let set: BTreeSet<&String> = namespaces.iter().filter(|n| !n.is_empty()).collect();
    if set.is_empty() {
        vec![None]
    } else {
        set.into_iter().map(|n| Some(n.clone())).collect()
    }
}

/// Spawns one task per watched kind; kinds that are not watched are reported synced at once.
pub(super) fn spawn_all(tasks: &mut JoinSet<()>, w: Watches) {
    let sink = Sink {
        events: w.events,
        ingresses: Arc::new(w.ingresses),
    };
    let all = watcher::Config::default();
    let (client, scopes) = (&w.client, w.namespaces);
    spawn_kind::<IngressClass>(tasks, client, vec![None], all.clone(), &sink);
    spawn_kind::<Ingress>(tasks, client, scopes.clone(), all.clone(), &sink);
    spawn_kind::<Service>(tasks, client, scopes.clone(), all.clone(), &sink);
    spawn_kind::<EndpointSlice>(tasks, client, scopes.clone(), all.clone(), &sink);
    let secrets = all.clone().fields(SECRETS);
    spawn_kind::<Secret>(tasks, client, scopes.clone(), secrets, &sink);
    let mut unwatched = vec![Kind::Namespace];
    match &w.configmap {
        // Its namespace only (the controller's: RBAC grants ConfigMaps there and nowhere
        // else), where the ConfigMaps that `add-headers` and `proxy-set-headers` name live.
        Some((ns, _)) => {
            spawn_kind::<ConfigMap>(tasks, client, vec![Some(ns.clone())], all.clone(), &sink);
        }
        None => unwatched.push(Kind::ConfigMap),
    }
    if w.endpoints {
        spawn_kind::<Endpoints>(tasks, client, scopes, all, &sink);
    } else {
        unwatched.push(Kind::Endpoints);
    }
    tasks.spawn(async move {
        for kind in unwatched {
            debug!(%kind, "not watched; synced");
            if !sink.send(Event::Synced(kind)).await {
                return;
            }
        }
    });
}

fn spawn_kind<K: Watched>(
    tasks: &mut JoinSet<()>,
    client: &Client,
    scopes: Vec<Option<String>>,
    config: watcher::Config,
    sink: &Sink,
) {
    tasks.spawn(run_kind::<K>(client.clone(), scopes, config, sink.clone()));
}

/// A kind Portico watches.
pub(super) trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The kind.
    const KIND: Kind;
    /// The API for one namespace (`None`: all).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The object model's view of it.
    fn into_object(self) -> Object;
}

macro_rules! watched {
    ($kind:ident, namespaced) => {
        impl Watched for $kind {
            const KIND: Kind = Kind::$kind;
            fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
                match namespace {
                    Some(ns) => Api::namespaced(client, ns),
                    None => Api::all(client),
                }
            }
            fn into_object(self) -> Object {
                Object::$kind(Arc::new(self))
            }
        }
    };
    ($kind:ident, cluster) => {
        impl Watched for $kind {
            const KIND: Kind = Kind::$kind;
            fn api(client: Client, _: Option<&str>) -> Api<Self> {
                Api::all(client)
            }
            fn into_object(self) -> Object {
                Object::$kind(Arc::new(self))
            }
        }
    };
}

watched!(IngressClass, cluster);
watched!(Ingress, namespaced);
watched!(Service, namespaced);
watched!(EndpointSlice, namespaced);
watched!(Endpoints, namespaced);
watched!(Secret, namespaced);
watched!(ConfigMap, namespaced);

/// Where a watcher's events go: the controller, and the Ingress map.
#[derive(Clone)]
struct Sink {
    events: mpsc::Sender<Event>,
    ingresses: Arc<watch::Sender<IngressMap>>,
}

// === impl Sink ===

impl Sink {
    /// Sends one event; false when the controller is gone.
    async fn send(&self, event: Event) -> bool {
        match &event {
            Event::Applied(Object::Ingress(ingress)) => {
                let key = (
                    ingress.metadata.namespace.clone().unwrap_or_default(),
                    ingress.metadata.name.clone().unwrap_or_default(),
                );
                let ingress = ingress.clone();
                self.ingresses.send_modify(|map| {
                    map.insert(key, ingress);
                });
            }
            Event::Deleted(key) if key.kind == Kind::Ingress => {
                let key = (key.namespace.clone(), key.name.clone());
                self.ingresses
                    .send_if_modified(|map| map.remove(&key).is_some());
            }
            _ => {}
        }
        self.events.send(event).await.is_ok()
    }
}

/// Watches one kind in every scope; sends `Synced` once every scope has listed once.
///
/// Endpoints are optional (`--watch-endpoints`): when RBAC forbids them, the scope counts as
/// synced (empty), so Portico serves from EndpointSlices instead of never becoming ready; the
/// watcher keeps trying, and picks them up once the permission is granted.
async fn run_kind<K: Watched>(
    client: Client,
    scopes: Vec<Option<String>>,
    config: watcher::Config,
    sink: Sink,
) {
    let mut merged = select_all(streams::<K>(&client, &scopes, &config));
    let mut lists: Vec<Relist> = scopes.iter().map(|_| Relist::default()).collect();
    let mut health: Vec<Health> = scopes.iter().map(|_| Health::default()).collect();
    let mut unsynced = scopes.len();
    let mut out = Vec::new();
    while let Some((i, event)) = merged.next().await {
        let namespace = scopes[i].as_deref().unwrap_or("");
        let first = match event {
            Ok(event) => {
                health[i].recovered::<K>(namespace);
                lists[i].step(event_of(event), &mut out)
            }
            Err(error) => {
                let failure = Failure::of(&error);
                health[i].failed::<K>(namespace, failure, &error);
                failure == Failure::Forbidden && K::KIND == Kind::Endpoints && lists[i].give_up()
            }
        };
        if first {
            unsynced -= 1;
            if unsynced == 0 {
                info!(kind = %K::KIND, "synced");
                out.push(Event::Synced(K::KIND));
            }
        }
        for event in out.drain(..) {
            if !sink.send(event).await {
                return;
            }
        }
    }
}

/// One watcher per scope, each event tagged with its scope's index.
fn streams<K: Watched>(
    client: &Client,
    scopes: &[Option<String>],
    config: &watcher::Config,
) -> Vec<BoxStream<'static, (usize, watcher::Result<watcher::Event<K>>)>> {
    let stream = |(i, namespace): (usize, &Option<String>)| {
        let api = K::api(client.clone(), namespace.as_deref());
        let stream = watcher(api, config.clone()).modify(|o: &mut K| {
            o.meta_mut().managed_fields = None;
        });
        with_retry(stream).map(move |event| (i, event)).boxed()
    };
    scopes.iter().enumerate().map(stream).collect()
}

/// Whether one watcher is failing: the first error of an outage is a warning (a missing
/// permission an error naming it and the fix), the rest are debug lines until it recovers.
#[derive(Debug, Default)]
struct Health {
    failing: Option<Failure>,
}

// === impl Health ===

impl Health {
    fn recovered<K: Watched>(&mut self, namespace: &str) {
        if self.failing.take().is_some() {
            info!(kind = %K::KIND, namespace, "watch recovered");
        }
    }

    fn failed<K: Watched>(&mut self, namespace: &str, failure: Failure, error: &watcher::Error) {
        let kind = K::KIND;
        // A Secret that does not decode makes the decoder quote its data.
        let error = crate::redact::scrub(&error.to_string()).into_owned();
        if failure == Failure::Expired {
            debug!(%kind, namespace, "watch expired (410 Gone); listing again");
            return;
        }
        if self.failing.replace(failure) == Some(failure) {
            debug!(%kind, namespace, %error, "watch still failing");
            return;
        }
        if failure == Failure::Forbidden {
            let (group, resource) = (K::group(&()), K::plural(&()));
            let group = if group.is_empty() {
                "\"\" (core)"
            } else {
                &group
            };
            let scope = if namespace.is_empty() {
                "cluster-wide"
            } else {
                namespace
            };
            let fix = if kind == Kind::Endpoints {
                "; serving from EndpointSlices meanwhile (grant it, or drop --watch-endpoints)"
            } else {
                "; nothing of this kind is seen until it is granted"
            };
            error!(
                %kind, namespace, %error,
                "permission denied: Portico's ServiceAccount may not list/watch {resource} \
                 ({scope}); grant verbs get, list, watch on resource {resource:?} of API group \
                 {group} in Portico's ClusterRole (deploy/rbac.yaml){fix}"
            );
        } else {
            warn!(%kind, namespace, %error, "watch failed; retrying (at most {:?} apart)", super::retry::CAP);
        }
    }
}

fn event_of<K: Watched>(event: watcher::Event<K>) -> watcher::Event<Object> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.into_object()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.into_object()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.into_object()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// One watcher's view of what it delivered: which keys exist, and during a (re)list which
/// keys the list has shown so far.
#[derive(Debug, Default)]
pub(super) struct Relist {
    known: BTreeSet<ObjectKey>,
    listing: Option<BTreeSet<ObjectKey>>,
    synced: bool,
}

// === impl Relist ===

impl Relist {
    /// Counts the scope as synced without a list (a forbidden optional kind); true if it was
    /// not synced before.
    pub(super) fn give_up(&mut self) -> bool {
        !std::mem::replace(&mut self.synced, true)
    }

    /// Turns one watcher event into source events (appended to `out`); true on the first
    /// completed list.
    pub(super) fn step(&mut self, event: watcher::Event<Object>, out: &mut Vec<Event>) -> bool {
        match event {
            watcher::Event::Init => self.listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(object) => {
                let key = object.key();
                self.listing.get_or_insert_default().insert(key.clone());
                self.known.insert(key);
                out.push(Event::Applied(object));
            }
            watcher::Event::InitDone => {
                let first = !std::mem::replace(&mut self.synced, true);
                // Without an Init there was no complete list: nothing can be known vanished.
                let Some(listed) = self.listing.take() else {
                    return first;
                };
                let vanished = std::mem::replace(&mut self.known, listed);
                out.extend(
                    vanished
                        .into_iter()
                        .filter(|k| !self.known.contains(k))
                        .map(Event::Deleted),
                );
                return first;
            }
            watcher::Event::Apply(object) => {
                self.known.insert(object.key());
                out.push(Event::Applied(object));
            }
            watcher::Event::Delete(object) => {
                let key = object.key();
                self.known.remove(&key);
                out.push(Event::Deleted(key));
            }
        }
        false
    }
}
