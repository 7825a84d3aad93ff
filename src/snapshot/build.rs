//! `build()`: the objects of the store → one [`Snapshot`] plus diagnostics. Pure and
//! deterministic: no I/O, no clock, and the same objects in any order give an equal snapshot.
//!
//! Incremental: [`build_after`] reuses from the snapshot it replaces whatever the change did
//! not touch (see [`cache`]), and gives exactly what [`build`] gives from scratch.

pub mod annotations;
mod cache;
mod class;
pub mod globals;
mod ingress;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

pub use cache::BuildCache;

use super::Snapshot;
use super::diagnostics::Diagnostic;
use super::services::{ServiceOptions, ServiceTable};
use crate::snapshot::routes::{HostPattern, HostRoutes};
use crate::source::ObjectKey;
use crate::store::ObjectStore;

/// The `spec.controller` of the IngressClasses Portico serves.
pub const CONTROLLER_NAME: &str = "portico.dev/ingress-controller";

/// What `build()` needs besides the objects.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The class name taken from the deprecated `kubernetes.io/ingress.class` annotation
    /// (`--ingress-class`, default `portico`).
    pub ingress_class: String,
    /// Also serve Ingresses that name no class (`--watch-ingress-without-class`).
    pub watch_ingress_without_class: bool,
    /// A `kubernetes.io/tls` Secret (namespace, name) to serve to clients whose SNI matches no
    /// certificate (`--default-ssl-certificate`).
    pub default_certificate: Option<(String, String)>,
    /// The certificate served when no other applies (self-signed, generated at start).
    pub fallback_certificate: Arc<CertifiedKey>,
    /// Schedulers and allocation of the service table.
    pub services: ServiceOptions,
    /// Route to ExternalName Services (`--allow-external-name-services`, default true); when
    /// false their routes answer 503 with an error diagnostic.
    pub allow_external_names: bool,
    /// Whether a host's paths may come from several namespaces (`--host-ownership`).
    pub host_ownership: HostOwnership,
    /// The controller's ConfigMap (namespace, name) with ingress-nginx's global settings
    /// (`--configmap`); `None`: ingress-nginx's defaults.
    pub configmap: Option<(String, String)>,
    /// The `spec.controller` values of the IngressClasses Portico serves
    /// (`--controller-class`, default `portico.dev/ingress-controller`).
    pub controller_classes: Vec<String>,
}

/// Who may add paths to a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HostOwnership {
    /// Any namespace (the Ingress API's and ingress-nginx's behaviour).
    #[default]
    Shared,
    /// Only the namespace of the host's oldest Ingress (for multi-tenant clusters): the
    /// others' rules for it are refused with an error.
    Namespace,
}

// === impl BuildConfig ===

impl BuildConfig {
    /// The defaults, with this fallback certificate.
    pub fn new(fallback_certificate: Arc<CertifiedKey>) -> Self {
        BuildConfig {
            ingress_class: "portico".to_string(),
            watch_ingress_without_class: false,
            default_certificate: None,
            fallback_certificate,
            services: ServiceOptions::default(),
            host_ownership: HostOwnership::default(),
            allow_external_names: true,
            configmap: None,
            controller_classes: vec![CONTROLLER_NAME.to_string()],
        }
    }
}

/// The hosts of a build, by pattern.
type Hosts = HashMap<HostPattern, Arc<cache::HostEntry>>;

/// Whether an Ingress's host-wide setting counts for `host`: always, unless hosts belong to
/// namespaces (`--host-ownership=namespace`, `exclusive`), where only the owner's does (the
/// others' rules for the host are refused, and their host-wide settings with them).
fn admitted(hosts: &Hosts, exclusive: bool, host: &HostPattern, c: &ingress::Compiled) -> bool {
    !exclusive || hosts.get(host).and_then(|e| e.owner()) == Some(c.key.namespace.as_str())
}

/// The hosts whose Ingresses set `auth-tls-secret`: nginx's `ssl_verify_client` is a server
/// setting, so it applies to every path of the host, whichever Ingress set it; when two
/// Ingresses of a host set it, the oldest wins and the other gets a warning.
///
/// With `--host-ownership=namespace` only an Ingress of the namespace that owns a host counts
/// for it: another namespace's rules for the host are refused, and so is this host-wide
/// setting (it would make the owner's site ask every client for a certificate).
fn client_auth_table(
    compiled: &[Arc<ingress::Compiled>],
    hosts: &Hosts,
    exclusive: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> crate::snapshot::client_auth::ClientAuthTable {
    let mut with: Vec<&ingress::Compiled> = compiled
        .iter()
        .filter(|c| c.client_auth.is_some())
        .map(|c| &**c)
        .collect();
    if with.is_empty() {
        return Default::default();
    }
    with.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let mut table: HashMap<Box<str>, (Arc<crate::snapshot::client_auth::ClientAuth>, String)> =
        HashMap::new();
    for c in with {
        let Some(auth) = &c.client_auth else { continue };
        let (ns, name) = c.name();
        for host in &c.hosts {
            if !admitted(hosts, exclusive, host, c) {
                continue;
            }
            let key: Box<str> = match host {
                HostPattern::Any => continue,
                other => other.to_string().into(),
            };
            match table.get(&key) {
                Some((kept, by)) if **kept != **auth => {
                    let reason = format!(
                        "the host {key} already takes client certificates as {by} says (the older Ingress wins: nginx sets them per host)"
                    );
                    let field = format!(
                        "metadata.annotations[{}auth-tls-secret]",
                        annotations::NGINX
                    );
                    diagnostics.push(Diagnostic::warning(&c.key, field, reason));
                }
                Some(_) => {}
                None => {
                    table.insert(key, (Arc::clone(auth), format!("{ns}/{name}")));
                }
            }
        }
    }
    crate::snapshot::client_auth::ClientAuthTable(
        table.into_iter().map(|(k, (a, _))| (k, a)).collect(),
    )
}

/// `server-alias`: alias → the host pattern whose whole server it names too. As ingress-nginx
/// (`createServers`): per host, the aliases of its oldest non-canary Ingress that has some
/// (the others get a warning); an alias that a rule names as its host is dropped (a
/// warning), and so is an alias two hosts claim, past the first (nginx would serve the first
/// `server_name`). With `exclusive` (`--host-ownership=namespace`) only an Ingress of the
/// namespace that owns a host names it (another namespace's would make the owner's site answer
/// under a name of its choosing).
fn alias_table(
    compiled: &[Arc<ingress::Compiled>],
    hosts: &Hosts,
    exclusive: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<Arc<str>, HostPattern> {
    let mut with: Vec<&ingress::Compiled> = compiled
        .iter()
        .filter(|c| !c.aliases.is_empty())
        .map(|c| &**c)
        .collect();
    if with.is_empty() {
        return BTreeMap::new();
    }
    with.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let field = format!("metadata.annotations[{}server-alias]", annotations::NGINX);
    let mut set_by: HashMap<&HostPattern, &ObjectKey> = HashMap::new();
    let mut table: BTreeMap<Arc<str>, HostPattern> = BTreeMap::new();
    for c in with {
        let mut warned_hosts = Vec::new();
        for (host, alias) in &c.aliases {
            if !admitted(hosts, exclusive, host, c) {
                continue;
            }
            match set_by.get(host) {
                Some(by) if **by != c.key => {
                    if !warned_hosts.contains(&host) {
                        warned_hosts.push(host);
                        let reason = format!(
                            "the host {host} already has the aliases of {}/{} (the older Ingress wins: nginx keeps one server-alias per host); ignored",
                            by.namespace, by.name
                        );
                        diagnostics.push(Diagnostic::warning(&c.key, field.clone(), reason));
                    }
                    continue;
                }
                _ => drop(set_by.insert(host, &c.key)),
            }
            let own = HostPattern::Exact(Arc::from(&**alias));
            if hosts.contains_key(&own) {
                let reason = format!(
                    "{alias} is the host of a rule already; the alias is ignored (as ingress-nginx removes an alias that names a server)"
                );
                diagnostics.push(Diagnostic::warning(&c.key, field.clone(), reason));
                continue;
            }
            if !hosts.contains_key(host) {
                // The host has no route of its own (its paths were all refused): nothing to name.
                continue;
            }
            match table.get(&**alias) {
                Some(other) if other != host => {
                    let reason =
                        format!("{alias} is already an alias of {other}; ignored for {host}");
                    diagnostics.push(Diagnostic::warning(&c.key, field.clone(), reason));
                }
                Some(_) => {}
                None => drop(table.insert(Arc::from(&**alias), host.clone())),
            }
        }
    }
    table
}

/// The result of one build.
#[derive(Clone, Debug)]
pub struct Built {
    /// The snapshot (generation 0: the publisher numbers it).
    pub snapshot: Snapshot,
    /// Everything left out or suspicious, sorted and without duplicates.
    pub diagnostics: Vec<Diagnostic>,
    /// The Ingresses that are ours (by class), sorted by key: whose status Portico publishes.
    /// Shared with the previous build when the set did not change.
    pub ingresses: Arc<Vec<ObjectKey>>,
}

/// Builds a snapshot from the objects. Never fails as a whole: what cannot be used is left
/// out with a diagnostic naming the object, the field and the reason.
pub fn build(store: &ObjectStore, config: &BuildConfig) -> Built {
    build_after(store, config, None)
}

/// Builds the snapshot that replaces `previous`: ClusterIP/NodePort allocations and the
/// schedulers' runtime state carry over from it, and the parts of it that the change did not
/// touch are reused. Still a function of its inputs alone: the result equals `build(store,
/// config)` (apart from the carried allocations and runtime state).
pub fn build_after(
    store: &ObjectStore,
    config: &BuildConfig,
    previous: Option<&Snapshot>,
) -> Built {
    let empty = BuildCache::default();
    let cache = previous.map_or(&empty, |p| &*p.cache);
    let mut diagnostics = Vec::new();
    let previous_services = previous.map(|p| &p.services);
    let services =
        ServiceTable::build(store, &config.services, previous_services, &mut diagnostics);
    let ours = class::our_ingresses(store, config, &mut diagnostics);
    let mut with_tls: Vec<&class::OurIngress<'_>> =
        ours.iter().filter(|o| tls::has_tls_entries(o)).collect();
    with_tls.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let tls_hosts = tls::tls_hosts(&with_tls);
    let globals = globals::read(store, config.configmap.as_ref(), &mut diagnostics);
    let context = ingress::Context {
        store,
        services: &services,
        tls_hosts: &tls_hosts,
        allow_external_names: config.allow_external_names,
        globals: &globals,
    };
    let tls_changed = tls_hosts != cache.tls_hosts;
    let (compiled, changes) = cache::compile_all(&context, &ours, &cache.ingresses, tls_changed);
    let exclusive = config.host_ownership == HostOwnership::Namespace;
    let (hosts, rebuilt) = cache::update_hosts(&cache.hosts, &changes, exclusive);
    // A host's certificate comes from the namespace that owns it (that of its oldest rule).
    let owners: HashMap<String, &str> = hosts
        .iter()
        .filter(|(h, _)| **h != HostPattern::Any)
        .filter_map(|(h, e)| Some((h.to_string(), e.owner()?)))
        .collect();
    let (mut certs, secrets) = tls::cert_table(
        store,
        config,
        (&with_tls, &owners),
        &cache.secrets,
        &mut diagnostics,
    );
    let mut defaults: Vec<&ingress::Compiled> = compiled
        .iter()
        .filter(|c| c.default_backend.is_some() && c.no_rules)
        .map(|c| &**c)
        .collect();
    defaults.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let default_backend = ingress::default_backend(defaults, &mut diagnostics);
    let aliases = alias_table(&compiled, &hosts, exclusive, &mut diagnostics);
    // An alias's SNI gets its host's certificate when it covers the alias (ingress-nginx
    // checks the same before serving it under the alias).
    for (alias, host) in &aliases {
        let entry = certs.entry(&host.to_string()).cloned();
        if let Some(entry) = entry.filter(|e| e.cert.covers(alias)) {
            certs.insert(alias, entry);
        }
    }
    let mut client_auth = client_auth_table(&compiled, &hosts, exclusive, &mut diagnostics);
    client_auth.alias(&aliases);
    let changed_routes = rebuilt
        .iter()
        .map(|(h, e)| (h, e.as_ref().map(|e| &e.routes)));
    let routes = cache.routes.updated(changed_routes, default_backend);
    // An alias shares its host's router (the very same one): a lookup under either name
    // finds the same routes. Only the aliases whose router changed are written.
    let alias_changes: Vec<(HostPattern, Option<&Arc<HostRoutes>>)> = cache
        .aliases
        .keys()
        .chain(aliases.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|a| HostPattern::Exact(Arc::clone(a)))
        .filter(|a| !hosts.contains_key(a))
        .filter_map(|a| {
            let HostPattern::Exact(name) = &a else {
                return None;
            };
            let wanted = aliases
                .get(name)
                .and_then(|h| hosts.get(h))
                .map(|e| &e.routes);
            let now = routes.exact_routes(name);
            let same = match (wanted, now) {
                (Some(w), Some(n)) => Arc::ptr_eq(w, n),
                (None, None) => true,
                _ => false,
            };
            (!same).then_some((a, wanted))
        })
        .collect();
    let routes = if alias_changes.is_empty() {
        routes
    } else {
        let default_backend = routes.default_backend().cloned();
        routes.updated(alias_changes.iter().map(|(a, r)| (a, *r)), default_backend)
    };
    diagnostics.extend(compiled.iter().flat_map(|c| c.diagnostics.iter().cloned()));
    diagnostics.extend(hosts.values().flat_map(|e| e.diagnostics.iter().cloned()));
    diagnostics.sort();
    diagnostics.dedup();
    let same_set = compiled.len() == cache.ingresses.len()
        && compiled
            .iter()
            .zip(&cache.ingresses)
            .all(|(c, p)| Arc::ptr_eq(c, p) || c.key == p.key);
    let ingresses = if same_set {
        Arc::clone(&cache.ours)
    } else {
        Arc::new(compiled.iter().map(|c| c.key.clone()).collect())
    };
    let snapshot = Snapshot {
        generation: 0,
        routes: routes.clone(),
        services,
        certs,
        server: globals.server,
        client: Arc::new(globals.client.clone()),
        hsts: globals.hsts.clone(),
        client_auth: Arc::new(client_auth),
        cache: Arc::new(BuildCache {
            aliases,
            ingresses: compiled,
            hosts,
            routes,
            tls_hosts,
            secrets,
            ours: Arc::clone(&ingresses),
        }),
    };
    Built {
        snapshot,
        diagnostics,
        ingresses,
    }
}

#[cfg(test)]
mod tests;
