//! The controller loop: events → store → debounced `build()` → publish. It owns the only
//! [`SnapshotPublisher`], so it is the only writer of the snapshot slot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::snapshot::certs::expiry::{self, Served};
use crate::snapshot::{BuildConfig, Diagnostic, Severity, SnapshotPublisher, build_after};
use crate::source::{Event, Kind, ObjectKey};
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

/// How often the served certificates' validity is judged again when nothing was built.
const EXPIRY_CHECK: Duration = Duration::from_secs(3600);

/// The diagnostics of the latest build.
pub type Diagnostics = Arc<Vec<Diagnostic>>;

/// The wall clock, as Unix seconds: certificates' validity is judged by it
/// ([`expiry::unix_now`] unless a test sets another).
pub type Clock = fn() -> i64;

/// What the latest build produced, for the admin listener and metrics.
#[derive(Clone, Debug, Default)]
pub struct BuildStatus {
    /// The generation currently published (0 before the first).
    pub generation: u64,
    /// Number of builds run (published or not).
    pub builds: u64,
    /// How long the latest build took.
    pub build_duration: Duration,
    /// The latest build's diagnostics, with the warnings about certificates out of (or near
    /// the end of) their validity period, judged at the build and every hour since.
    pub diagnostics: Diagnostics,
    /// The certificates the published snapshot serves from Secrets, with their validity
    /// periods (`portico_certificate_expiry_timestamp_seconds`).
    pub certificates: Arc<Vec<Served>>,
    /// The Ingresses that are ours in the latest build, sorted by key
    /// ([`crate::snapshot::Built::ingresses`]).
    pub ingresses: Arc<Vec<ObjectKey>>,
}

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
    status: watch::Sender<BuildStatus>,
    clock: Clock,
    /// The latest build's own diagnostics, and the expiry warnings in the status now.
    built: Diagnostics,
    expiry: Vec<Diagnostic>,
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
        let (status, _) = watch::channel(BuildStatus::default());
        Controller {
            store: ObjectStore::new(),
            config,
            publisher,
            debounce,
            synced: BTreeSet::new(),
            reported: BTreeSet::new(),
            status,
            clock: expiry::unix_now,
            built: Diagnostics::default(),
            expiry: Vec::new(),
        }
    }

    /// Judges certificates' validity by `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Follows the result of each build.
    pub fn status(&self) -> watch::Receiver<BuildStatus> {
        self.status.subscribe()
    }

    /// Runs until every event sender is gone. Nothing is published before every kind has
    /// synced. After that, a change that comes after a quiet period is built at once (leading
    /// edge); changes that follow within the quiet period are collected and built together
    /// (trailing edge, at most `max` after the first). A rebuild whose snapshot equals the
    /// current one is not published.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut pending: Option<Pending> = None;
        let mut last_build: Option<Instant> = None;
        let mut expiry_check =
            tokio::time::interval_at(Instant::now() + EXPIRY_CHECK, EXPIRY_CHECK);
        expiry_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let deadline = pending
                .filter(|_| self.all_synced())
                .map(|p| self.deadline(p, last_build));
            let event = tokio::select! {
                event = events.recv() => event,
                () = until(deadline) => {
                    self.rebuild();
                    (pending, last_build) = (None, Some(Instant::now()));
                    continue;
                }
                _ = expiry_check.tick() => {
                    self.check_expiry();
                    continue;
                }
            };
            let Some(event) = event else {
                if pending.is_some() && self.all_synced() {
                    self.rebuild();
                }
                return;
            };
            if !self.apply(event) {
                continue;
            }
            let now = Instant::now();
            let idle = last_build.is_none_or(|t| now.duration_since(t) >= self.debounce.quiet);
            if pending.is_none() && idle && self.all_synced() {
                // Leading edge: an isolated change is built at once. What the source already
                // queued (the rest of a file, say) goes into the same build.
                while let Ok(event) = events.try_recv() {
                    self.apply(event);
                }
                self.rebuild();
                last_build = Some(Instant::now());
                continue;
            }
            let first = pending.map_or(now, |p| p.first);
            pending = Some(Pending { first, last: now });
        }
    }

    /// When pending changes are built: once they have been quiet for `quiet`, at the latest
    /// `max` after the first, and never sooner than `quiet` after the previous build.
    fn deadline(&self, p: Pending, last_build: Option<Instant>) -> Instant {
        let due = (p.last + self.debounce.quiet).min(p.first + self.debounce.max);
        last_build.map_or(due, |t| due.max(t + self.debounce.quiet))
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
        let current = self.publisher.handle().load_full();
        let previous = (current.generation > 0).then_some(&*current);
        let started = std::time::Instant::now();
        let built = build_after(&self.store, &self.config, previous);
        let elapsed = started.elapsed();
        let served = Arc::new(expiry::served(&built.snapshot.certs));
        self.expiry = expiry::diagnostics(&served, (self.clock)());
        self.built = Arc::new(built.diagnostics);
        let diagnostics = self.with_expiry();
        self.report(&diagnostics);
        let routes = built.snapshot.routes.len();
        let services = built.snapshot.services.len();
        let generation = if current.generation > 0 && *current == built.snapshot {
            debug!(?elapsed, "rebuilt an unchanged snapshot; not published");
            current.generation
        } else {
            let generation = self.publisher.publish(built.snapshot);
            let build_ms = elapsed.as_secs_f64() * 1e3;
            let objects = self.store.len();
            info!(
                generation,
                routes, services, objects, build_ms, "snapshot published"
            );
            generation
        };
        self.status.send_modify(|status| {
            status.generation = generation;
            status.builds += 1;
            status.build_duration = elapsed;
            status.diagnostics = diagnostics;
            status.certificates = served;
            status.ingresses = built.ingresses;
        });
    }

    /// Judges the served certificates' validity again (no build): reports and publishes the
    /// warnings when they changed.
    fn check_expiry(&mut self) {
        let served = self.status.borrow().certificates.clone();
        if self.status.borrow().generation == 0 {
            return;
        }
        let now = expiry::diagnostics(&served, (self.clock)());
        if now == self.expiry {
            return;
        }
        self.expiry = now;
        let diagnostics = self.with_expiry();
        self.report(&diagnostics);
        self.status
            .send_modify(|status| status.diagnostics = diagnostics);
    }

    /// The latest build's diagnostics and the expiry warnings, sorted.
    fn with_expiry(&self) -> Diagnostics {
        if self.expiry.is_empty() {
            return self.built.clone();
        }
        let mut all: Vec<Diagnostic> = self.built.iter().chain(&self.expiry).cloned().collect();
        all.sort();
        all.dedup();
        Arc::new(all)
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

/// Sleeps until the deadline; never resolves without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
