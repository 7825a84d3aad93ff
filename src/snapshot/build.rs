//! `build()`: the objects of the store → one [`Snapshot`] plus diagnostics. Pure and
//! deterministic: no I/O, no clock, and the same objects in any order give an equal snapshot.

mod class;
mod ingress;
mod tls;

use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::Snapshot;
use super::diagnostics::Diagnostic;
use super::routes::RouteTableBuilder;
use super::services::{ServiceOptions, ServiceTable};
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
        }
    }
}

/// The result of one build.
#[derive(Clone, Debug)]
pub struct Built {
    /// The snapshot (generation 0: the publisher numbers it).
    pub snapshot: Snapshot,
    /// Everything left out or suspicious, sorted and without duplicates.
    pub diagnostics: Vec<Diagnostic>,
    /// The Ingresses that are ours (by class), sorted by key: whose status Portico publishes.
    pub ingresses: Vec<ObjectKey>,
}

/// Builds a snapshot from the objects. Never fails as a whole: what cannot be used is left
/// out with a diagnostic naming the object, the field and the reason.
pub fn build(store: &ObjectStore, config: &BuildConfig) -> Built {
    build_after(store, config, None)
}

/// Builds the snapshot that replaces `previous`: ClusterIP/NodePort allocations and the
/// schedulers' runtime state carry over from it. Still a function of its inputs alone.
pub fn build_after(
    store: &ObjectStore,
    config: &BuildConfig,
    previous: Option<&Snapshot>,
) -> Built {
    let mut diagnostics = Vec::new();
    let previous_services = previous.map(|p| &p.services);
    let services =
        ServiceTable::build(store, &config.services, previous_services, &mut diagnostics);
    let ours = class::our_ingresses(store, config, &mut diagnostics);
    let certs = tls::cert_table(store, config, &ours, &mut diagnostics);
    let tls_hosts = tls::tls_hosts(&ours);
    let mut routes = RouteTableBuilder::default();
    let mut default_backend = None;
    for (age, ingress) in ours.iter().enumerate() {
        let context = ingress::Context {
            store,
            services: &services,
            tls_hosts: &tls_hosts,
            age,
        };
        ingress::add_ingress(
            &context,
            ingress,
            &mut routes,
            &mut default_backend,
            &mut diagnostics,
        );
    }
    if let Some(route) = default_backend {
        routes.default_backend(route);
    }
    let routes = routes.finish(&mut diagnostics);
    let mut ingresses: Vec<ObjectKey> = ours.into_iter().map(|o| o.key).collect();
    ingresses.sort();
    diagnostics.sort();
    diagnostics.dedup();
    let snapshot = Snapshot {
        generation: 0,
        routes,
        services,
        certs,
    };
    Built {
        snapshot,
        diagnostics,
        ingresses,
    }
}

#[cfg(test)]
mod tests;
