//! What one build leaves to the next: compiled Ingresses, per-host routers and parsed Secrets.
//!
//! Nothing is reused on trust. A compiled Ingress is reused only when compiling it again would
//! give the same thing ([`Compiled::still_valid`]); a host's router only when its claimants are
//! the very same compiled Ingresses as before (so the same candidates, in the same order); a
//! parsed Secret only when the Secret is equal. Everything else is built as `build()` builds it
//! from scratch, which is this same code with an empty cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::class::OurIngress;
use super::ingress::{Compiled, Context};
use super::tls::ParsedSecrets;
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::routes::{HostPattern, HostRoutes, RouteTable, build_host};
use crate::source::ObjectKey;

/// The parts of a build the next build may reuse. Carried by the snapshot, not part of its
/// value (snapshot equality ignores it).
#[derive(Default)]
pub struct BuildCache {
    /// Our Ingresses, compiled, in key order.
    pub(super) ingresses: Vec<Arc<Compiled>>,
    /// Every host pattern with a route: its claimants, router and diagnostics.
    pub(super) hosts: HashMap<HostPattern, Arc<HostEntry>>,
    /// The route table of exactly these hosts (its maps shared with the snapshot's), which
    /// the next build patches.
    pub(super) routes: RouteTable,
    /// The TLS host patterns (by namespace) the compiled Ingresses' redirect flags were
    /// computed against.
    pub(super) tls_hosts: super::tls::TlsHosts,
    /// The Secrets parsed for certificates.
    pub(super) secrets: ParsedSecrets,
    /// `server-alias`: alias → its host, as written into `routes`.
    pub(super) aliases: BTreeMap<Arc<str>, HostPattern>,
    /// The keys of `ingresses` ([`super::Built::ingresses`]).
    pub(super) ours: Arc<Vec<ObjectKey>>,
}

impl fmt::Debug for BuildCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildCache")
            .field("ingresses", &self.ingresses.len())
            .field("hosts", &self.hosts.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// One host pattern: the Ingresses that have paths on it and what they built.
#[derive(Debug)]
pub(super) struct HostEntry {
    /// In precedence order (oldest first).
    claimants: Vec<Arc<Compiled>>,
    /// The router.
    pub routes: Arc<HostRoutes>,
    /// Conflicts and shadowed paths on this host.
    pub diagnostics: Vec<Diagnostic>,
}

// === impl HostEntry ===

impl HostEntry {
    /// The namespace that owns the host: that of its oldest claimant.
    pub fn owner(&self) -> Option<&str> {
        self.claimants.first().map(|c| c.key.namespace.as_str())
    }

    /// Builds the host's router from its claimants (in precedence order). With `exclusive`
    /// (`--host-ownership=namespace`), only the owner's namespace (that of the oldest
    /// claimant) may add paths; the others' rules for the host are refused.
    fn new(host: &HostPattern, claimants: Vec<Arc<Compiled>>, exclusive: bool) -> HostEntry {
        let mut diagnostics = Vec::new();
        let owner = claimants.first().map(|c| c.key.namespace.clone());
        let admitted = |c: &Compiled| !exclusive || Some(&c.key.namespace) == owner.as_ref();
        for refused in claimants.iter().filter(|c| !admitted(c)) {
            let field = refused
                .paths
                .iter()
                .find(|(h, _)| h == host)
                .map_or("spec.rules", |(_, c)| c.field.as_str());
            let reason = format!(
                "host {host} belongs to namespace {} (--host-ownership=namespace): this Ingress's paths for it are refused",
                owner.as_deref().unwrap_or_default()
            );
            diagnostics.push(Diagnostic::error(&refused.key, field, reason));
        }
        let candidates = claimants
            .iter()
            .filter(|c| admitted(c))
            .enumerate()
            .flat_map(|(age, c)| {
                c.paths
                    .iter()
                    .filter(|(h, _)| h == host)
                    .map(move |(_, c)| {
                        let mut c = c.clone();
                        c.age.0 = age;
                        c
                    })
            })
            .collect();
        let routes = Arc::new(build_host(candidates, owner.as_deref(), &mut diagnostics));
        HostEntry {
            claimants,
            routes,
            diagnostics,
        }
    }
}

/// Compiled Ingresses that differ from the previous build: the versions gone (replaced or
/// removed) and the versions new (added or replaced).
#[derive(Default)]
pub(super) struct Changes<'p> {
    gone: Vec<&'p Arc<Compiled>>,
    new: Vec<Arc<Compiled>>,
}

/// Compiles our Ingresses (in key order), reusing those of `previous` (in key order) that
/// are still valid. Returns them in key order, with what changed.
pub(super) fn compile_all<'p>(
    cx: &Context<'_>,
    ours: &[OurIngress<'_>],
    previous: &'p [Arc<Compiled>],
    tls_changed: bool,
) -> (Vec<Arc<Compiled>>, Changes<'p>) {
    let mut compiled = Vec::with_capacity(ours.len());
    let mut changes = Changes::default();
    let mut old = previous.iter().peekable();
    for our in ours {
        let at = (our.namespace, our.name);
        while let Some(gone) = old.next_if(|c| c.name() < at) {
            changes.gone.push(gone);
        }
        let before = old.next_if(|c| c.name() == at);
        match before {
            Some(c) if c.still_valid(cx, our.ingress, tls_changed) => {
                compiled.push(Arc::clone(c));
            }
            _ => {
                let c = Arc::new(Compiled::new(cx, our.key(), our.ingress));
                changes.gone.extend(before);
                changes.new.push(Arc::clone(&c));
                compiled.push(c);
            }
        }
    }
    changes.gone.extend(old);
    (compiled, changes)
}

/// A host built again (`Some`) or gone (`None`).
pub(super) type HostChange = (HostPattern, Option<Arc<HostEntry>>);

/// The hosts after `changes`: those no changed Ingress touches are kept as they were; the
/// others are built again from their current claimants (or dropped when none is left).
/// Returns every host, and those that changed.
pub(super) fn update_hosts(
    previous: &HashMap<HostPattern, Arc<HostEntry>>,
    changes: &Changes<'_>,
    exclusive: bool,
) -> (HashMap<HostPattern, Arc<HostEntry>>, Vec<HostChange>) {
    let changed: HashSet<&ObjectKey> = changes
        .gone
        .iter()
        .map(|c| &c.key)
        .chain(changes.new.iter().map(|c| &c.key))
        .collect();
    let mut added: BTreeMap<&HostPattern, Vec<&Arc<Compiled>>> = BTreeMap::new();
    for c in &changes.new {
        for h in &c.hosts {
            added.entry(h).or_default().push(c);
        }
    }
    let dirty: BTreeSet<&HostPattern> = changes
        .gone
        .iter()
        .flat_map(|c| &c.hosts)
        .chain(added.keys().copied())
        .collect();
    let mut hosts = previous.clone();
    let mut rebuilt = Vec::with_capacity(dirty.len());
    for host in dirty {
        let kept = previous.get(host).into_iter().flat_map(|e| {
            e.claimants
                .iter()
                .filter(|c| !changed.contains(&c.key))
                .cloned()
        });
        let new = added.get(host).into_iter().flatten().map(|c| Arc::clone(c));
        let mut claimants: Vec<Arc<Compiled>> = kept.chain(new).collect();
        if claimants.is_empty() {
            hosts.remove(host);
            rebuilt.push((host.clone(), None));
            continue;
        }
        claimants.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        let entry = Arc::new(HostEntry::new(host, claimants, exclusive));
        hosts.insert(host.clone(), Arc::clone(&entry));
        rebuilt.push((host.clone(), Some(entry)));
    }
    (hosts, rebuilt)
}
