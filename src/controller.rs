//! The controller loop: events → store → debounced `build()` → publish. It owns the only
//! [`SnapshotPublisher`], so it is the only writer of the snapshot slot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::snapshot::{BuildConfig, Diagnostic, Severity, SnapshotPublisher, build};
use crate::source::{Event, Kind};
use crate::store::ObjectStore;

/// How long changes are collected before a rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debounce {
    /// Rebuild once no change arrived for this long (100 ms).
    pub quiet: Duration,
    /// Rebuild at the latest this long after the first pending change (500 ms).
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_millis(500),
        }
    }
}

/// The diagnostics of the latest build.
pub type Diagnostics = Arc<Vec<Diagnostic>>;

/// Applies events to the store and publishes snapshots.
#[derive(Debug)]
pub struct Controller {
    store: ObjectStore,
    config: BuildConfig,
    publisher: SnapshotPublisher,
    debounce: Debounce,
    synced: BTreeSet<Kind>,
    /// Diagnostics already logged: each is logged once when it appears.
    reported: BTreeSet<Diagnostic>,
    diagnostics: watch::Sender<Diagnostics>,
}

/// Changes waiting for a rebuild: when the first and the latest arrived.
#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Instant,
    last: Instant,
}

// === impl Controller ===

impl Controller {
    /// A controller that publishes through `publisher`.
    pub fn new(config: BuildConfig, publisher: SnapshotPublisher, debounce: Debounce) -> Self {
        let (diagnostics, _) = watch::channel(Arc::new(Vec::new()));
        Controller {
            store: ObjectStore::new(),
            config,
            publisher,
            debounce,
            synced: BTreeSet::new(),
            reported: BTreeSet::new(),
            diagnostics,
        }
    }

    /// Follows the diagnostics of each build.
    pub fn diagnostics(&self) -> watch::Receiver<Diagnostics> {
        self.diagnostics.subscribe()
    }

    /// Runs until every event sender is gone. Nothing is published before every kind has
    /// synced; after that, each burst of changes gives one rebuild, and a rebuild whose
    /// snapshot equals the current one is not published.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut pending: Option<Pending> = None;
        loop {
            let deadline = pending
                .filter(|_| self.all_synced())
                .map(|p| (p.last + self.debounce.quiet).min(p.first + self.debounce.max));
            let event = match deadline {
                None => events.recv().await,
                Some(deadline) => tokio::select! {
                    event = events.recv() => event,
                    () = tokio::time::sleep_until(deadline) => {
                        self.rebuild();
                        pending = None;
                        continue;
                    }
                },
            };
            let Some(event) = event else {
                if pending.is_some() && self.all_synced() {
                    self.rebuild();
                }
                return;
            };
            if self.apply(event) {
                let now = Instant::now();
                pending = Some(Pending {
                    first: pending.map_or(now, |p| p.first),
                    last: now,
                });
            }
        }
    }

    /// Applies one event; true when a rebuild is due (objects changed, or the last kind synced).
    fn apply(&mut self, event: Event) -> bool {
        match event {
            Event::Synced(kind) => {
                let newly = self.synced.insert(kind);
                debug!(?kind, "synced");
                newly && self.all_synced()
            }
            event => self.store.apply(event),
        }
    }

    fn all_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    fn rebuild(&mut self) {
        let started = std::time::Instant::now();
        let built = build(&self.store, &self.config);
        let elapsed = started.elapsed();
        self.report(&built.diagnostics);
        let current = self.publisher.handle().load_full();
        let routes = built.snapshot.routes.len();
        let services = built.snapshot.services.len();
        if current.generation > 0 && *current == built.snapshot {
            debug!(?elapsed, "rebuilt an unchanged snapshot; not published");
        } else {
            let generation = self.publisher.publish(built.snapshot);
            info!(
                generation,
                routes,
                services,
                objects = self.store.len(),
                build_ms = elapsed.as_secs_f64() * 1e3,
                "snapshot published"
            );
        }
        self.diagnostics.send_replace(Arc::new(built.diagnostics));
    }

    /// Logs the diagnostics that were not there in the previous build.
    fn report(&mut self, diagnostics: &[Diagnostic]) {
        let current: BTreeSet<Diagnostic> = diagnostics.iter().cloned().collect();
        for d in current.difference(&self.reported) {
            let object = d.object.to_string();
            match d.severity {
                Severity::Error => {
                    warn!(%object, field = %d.field, reason = %d.reason, "configuration error")
                }
                Severity::Warning => {
                    warn!(%object, field = %d.field, reason = %d.reason, "configuration warning")
                }
            }
        }
        self.reported = current;
    }
}

#[cfg(test)]
mod tests;
