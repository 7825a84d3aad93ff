//! The immutable routing snapshot, and the atomic slot it is published through.
//!
//! Routes, services and certificates live in one [`Snapshot`] behind one `ArcSwap`, so no
//! request ever sees routes of one generation and endpoints of another. The controller owns
//! the only [`SnapshotPublisher`]; data planes hold [`SnapshotHandle`]s.

pub mod access;
pub mod basic_auth;
mod build;
pub mod certs;
pub mod client_auth;
pub mod cors;
pub mod diagnostics;
pub mod external_auth;
pub mod host;
pub mod limits;
pub mod routes;
pub mod server;
pub mod services;
pub mod table;
pub mod upstream_tls;

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

pub use build::{
    BuildCache, BuildConfig, Built, CONTROLLER_NAME, HostOwnership, annotations, build, build_after,
};
pub use certs::CertTable;
pub use diagnostics::{Diagnostic, Severity};
pub use routes::RouteTable;
pub use services::ServiceTable;

/// Everything the data planes need, for one generation of configuration.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Rises by one per publication; 0 for the empty snapshot served before the first build.
    pub generation: u64,
    /// Host and path routing.
    pub routes: RouteTable,
    /// Service ports and their endpoints.
    pub services: ServiceTable,
    /// Certificates by SNI.
    pub certs: CertTable,
    /// The ConfigMap's connection-level settings.
    pub server: server::ServerSettings,
    /// Whose address a request comes from (the ConfigMap's trust settings).
    pub client: Arc<server::ClientAddress>,
    /// The Strict-Transport-Security value of HTTPS responses for hosts with a certificate
    /// (the ConfigMap's `hsts*` keys; on by default, as in ingress-nginx).
    pub hsts: Option<http::HeaderValue>,
    /// The hosts that ask for client certificates (`auth-tls-secret`).
    pub client_auth: Arc<client_auth::ClientAuthTable>,
    /// What the next build may reuse (not part of the value).
    cache: Arc<BuildCache>,
}

impl PartialEq for Snapshot {
    /// Equal content; the generation and the build cache are not compared.
    fn eq(&self, other: &Self) -> bool {
        self.routes == other.routes
            && self.services == other.services
            && self.certs == other.certs
            && self.server == other.server
            && self.client == other.client
            && self.hsts == other.hsts
            && self.client_auth == other.client_auth
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// A snapshot with no routes (every request gets the built-in 404).
    pub fn empty(default_cert: Arc<CertifiedKey>) -> Self {
        Snapshot {
            generation: 0,
            routes: RouteTable::default(),
            services: ServiceTable::default(),
            certs: CertTable::new(default_cert),
            server: server::ServerSettings::default(),
            client: Arc::default(),
            hsts: None,
            client_auth: Arc::default(),
            cache: Arc::default(),
        }
    }
}

/// Creates the slot: the one publisher (for the controller) and a handle for readers.
pub fn channel(initial: Snapshot) -> (SnapshotPublisher, SnapshotHandle) {
    let (tx, rx) = watch::channel(initial.generation);
    let swap = Arc::new(ArcSwap::from_pointee(initial));
    let handle = SnapshotHandle {
        swap: swap.clone(),
        generation: rx,
    };
    (SnapshotPublisher { swap, tx }, handle)
}

/// Read access to the current snapshot: lock-free, one `load` per request.
#[derive(Clone, Debug)]
pub struct SnapshotHandle {
    swap: Arc<ArcSwap<Snapshot>>,
    generation: watch::Receiver<u64>,
}

// === impl SnapshotHandle ===

impl SnapshotHandle {
    /// The current snapshot, cheaply (for the duration of one request).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.swap.load()
    }

    /// The current snapshot as an owned `Arc` (for long-lived holders).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.swap.load_full()
    }

    /// The generation of the latest published snapshot.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Waits until a snapshot of at least `generation` is published; false if the publisher
    /// is gone first.
    pub async fn wait_for(&self, generation: u64) -> bool {
        let mut rx = self.generation.clone();
        rx.wait_for(|g| *g >= generation).await.is_ok()
    }
}

/// The single writer of the snapshot slot.
#[derive(Debug)]
pub struct SnapshotPublisher {
    swap: Arc<ArcSwap<Snapshot>>,
    tx: watch::Sender<u64>,
}

// === impl SnapshotPublisher ===

impl SnapshotPublisher {
    /// Publishes a snapshot as the next generation; returns that generation.
    pub fn publish(&self, mut snapshot: Snapshot) -> u64 {
        let generation = *self.tx.borrow() + 1;
        snapshot.generation = generation;
        self.swap.store(Arc::new(snapshot));
        self.tx.send_replace(generation);
        generation
    }

    /// A read handle on the same slot.
    pub fn handle(&self) -> SnapshotHandle {
        SnapshotHandle {
            swap: self.swap.clone(),
            generation: self.tx.subscribe(),
        }
    }
}
