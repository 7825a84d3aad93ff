//! Watching the manifests directory and turning its changes into [`Event`]s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::dir::SETTLE;
use super::{ManifestDir, ManifestOptions, ManifestsError, Rescan};
use crate::source::{Event, Kind};

/// The coalescing period. A change that is complete when its event arrives (a file renamed
/// into place, closed after writing, removed) is rescanned at once if no rescan ran in the
/// last `COALESCE`, else `COALESCE` after the previous one: so an isolated change costs no
/// wait, and a burst (an editor's write-and-rename, a ConfigMap update) costs two rescans at
/// most per period. A write still in progress (created, data written, not yet closed) waits
/// `COALESCE` for its close, so that a half-written file is not read. Beyond that, a file
/// changed in place must have settled (see [`ManifestDir::settling`]); the rescan that finds
/// it unsettled says when to look again.
const COALESCE: Duration = Duration::from_millis(20);

/// The interval of the polling watcher used when the native one is unavailable.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often to retry while the directory cannot be watched (e.g. it was removed).
const RETRY: Duration = Duration::from_secs(1);

/// Which file watcher [`run_with`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchBackend {
    /// The platform's native watcher (inotify, FSEvents...), polling if that fails.
    #[default]
    Native,
    /// Polling every 500 ms: for file systems whose changes the native watcher does not see
    /// (NFS and other network file systems changed from another machine).
    Poll,
}

/// Reads `dir`, sends an [`Event::Applied`] for every object and then [`Event::Synced`] for
/// every kind, and from then on sends the changes, a fraction of a second after the files
/// change. Returns `Ok(())` once the receiver is dropped; fails at start when `dir` cannot be
/// read. Problems in the files are logged once and never stop the source.
pub async fn run(
    dir: PathBuf,
    options: ManifestOptions,
    tx: mpsc::Sender<Event>,
) -> Result<(), ManifestsError> {
    run_with(dir, options, tx, WatchBackend::Native).await
}

/// [`run`] with a chosen file watcher.
pub async fn run_with(
    dir: PathBuf,
    options: ManifestOptions,
    tx: mpsc::Sender<Event>,
    backend: WatchBackend,
) -> Result<(), ManifestsError> {
    let mut state = ManifestDir::with_options(dir.clone(), options)?.settling(SETTLE);
    let wake = Arc::new(Wake::default());
    // Watch before the first scan, so that no change slips in between.
    let mut watch = Watch::start(&dir, backend, &wake)?;
    let rescan;
    (state, rescan) = rescan_off_runtime(state).await?;
    info!(dir = %dir.display(), objects = state.objects().count(), "manifests loaded");
    let mut due = rescan_after(&rescan);
    if !publish(&tx, rescan).await {
        return Ok(());
    }
    for kind in Kind::ALL {
        if tx.send(Event::Synced(kind)).await.is_err() {
            return Ok(());
        }
    }
    let mut last_scan = Instant::now();
    loop {
        let deadline = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tx.closed() => return Ok(()),
            () = wake.notify.notified() => {
                let now = Instant::now();
                let at = next_due(due, wake.take_settled(), now, last_scan);
                due = Some(at);
                if at > now {
                    continue;
                }
            }
            () = deadline => {}
            () = tokio::time::sleep(RETRY), if !watch.armed => {}
        }
        // The coming rescan covers what arrived until now.
        wake.take_settled();
        wake.drain().await;
        if wake.rewatch.swap(false, Ordering::Relaxed) || !watch.armed {
            watch.arm(&dir);
        }
        let rescan;
        (state, rescan) = rescan_off_runtime(state).await?;
        last_scan = Instant::now();
        watch.armed &= state.is_readable();
        due = rescan_after(&rescan);
        if !publish(&tx, rescan).await {
            return Ok(());
        }
    }
}

/// When to rescan again after `rescan` without a wake-up: when a file not yet settled may be.
fn rescan_after(rescan: &Rescan) -> Option<Instant> {
    rescan.wait.map(|wait| Instant::now() + wait)
}

/// When to rescan after a wake-up, given the rescan already `due` (if any) and when the last
/// one ended: see [`COALESCE`].
fn next_due(due: Option<Instant>, settled: bool, now: Instant, last_scan: Instant) -> Instant {
    let wanted = if settled {
        now.max(last_scan + COALESCE)
    } else {
        now + COALESCE
    };
    due.map_or(wanted, |d| d.min(wanted))
}

/// Rescans on the blocking pool: reading files must not stall the runtime.
async fn rescan_off_runtime(
    mut state: ManifestDir,
) -> Result<(ManifestDir, Rescan), ManifestsError> {
    let rescan = tokio::task::spawn_blocking(move || {
        let rescan = state.rescan();
        (state, rescan)
    });
    Ok(rescan.await?)
}

/// Logs the new problems and sends the events; false once the receiver is gone.
async fn publish(tx: &mpsc::Sender<Event>, rescan: Rescan) -> bool {
    for problem in &rescan.new_problems {
        warn!(file = %problem.file.display(), error = problem.error, %problem, "manifest problem");
    }
    if !rescan.events.is_empty() {
        debug!(events = rescan.events.len(), "manifests changed");
    }
    for event in rescan.events {
        if tx.send(event).await.is_err() {
            return false;
        }
    }
    true
}

/// What the watcher's thread tells the source task.
#[derive(Debug, Default)]
struct Wake {
    /// Something changed; holds at most one permit, which coalesces bursts.
    notify: Notify,
    /// Some change since the last wake-up was complete when reported (see [`settles`]).
    settled: AtomicBool,
    /// The directory itself was removed, moved or replaced: watch it again.
    rewatch: AtomicBool,
}

// === impl Wake ===

impl Wake {
    /// Whether a complete change was reported since the last call.
    fn take_settled(&self) -> bool {
        self.settled.swap(false, Ordering::Acquire)
    }

    /// Consumes a wake-up that arrived while waiting, as the coming rescan covers it.
    async fn drain(&self) {
        tokio::select! {
            biased;
            () = self.notify.notified() => {}
            () = std::future::ready(()) => {}
        }
    }
}

/// The file watcher and whether it currently watches the directory.
struct Watch {
    watcher: Box<dyn Watcher + Send>,
    armed: bool,
}

// === impl Watch ===

impl Watch {
    /// The native watcher if it can watch `dir`, the polling one otherwise.
    fn start(dir: &Path, backend: WatchBackend, wake: &Arc<Wake>) -> Result<Watch, ManifestsError> {
        if backend == WatchBackend::Native {
            let native = RecommendedWatcher::new(handler(dir, wake), notify::Config::default());
            match native.map(|w| Watch::new(Box::new(w), dir)) {
                Ok(watch) if watch.armed => {
                    info!(dir = %dir.display(), watcher = ?RecommendedWatcher::kind(), "watching manifests");
                    return Ok(watch);
                }
                Ok(_) => warn!(dir = %dir.display(), "native file watcher cannot watch; polling"),
                Err(error) => warn!(%error, "native file watcher unavailable; polling"),
            }
        }
        let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
        let poll = PollWatcher::new(handler(dir, wake), config).map_err(|source| {
            ManifestsError::Watch {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        info!(dir = %dir.display(), watcher = ?PollWatcher::kind(), "watching manifests");
        Ok(Watch::new(Box::new(poll), dir))
    }

    fn new(watcher: Box<dyn Watcher + Send>, dir: &Path) -> Watch {
        let mut watch = Watch {
            watcher,
            armed: false,
        };
        watch.arm(dir);
        watch
    }

    /// (Re)starts watching `dir`; on failure, the source retries every [`RETRY`].
    fn arm(&mut self, dir: &Path) {
        // Forget a watch on a directory that was removed or replaced (errors if none).
        let _ = self.watcher.unwatch(dir);
        let armed = self.watcher.watch(dir, RecursiveMode::Recursive);
        if let Err(error) = &armed
            && self.armed
        {
            warn!(dir = %dir.display(), %error, "cannot watch manifests directory; retrying");
        }
        self.armed = armed.is_ok();
    }
}

/// The watcher callback (run on the watcher's thread): wake the source task, never block.
fn handler(
    dir: &Path,
    wake: &Arc<Wake>,
) -> impl FnMut(notify::Result<notify::Event>) + Send + use<> {
    let (root, wake) = (dir.to_path_buf(), Arc::clone(wake));
    move |event| {
        let settled = match event {
            // Opening and closing files (our own reads, too) changes nothing; closing a file
            // written to completes a write.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) && !settles(&event.kind) => {
                return;
            }
            Ok(event) if event.paths.contains(&root) => {
                wake.rewatch.store(true, Ordering::Relaxed);
                true
            }
            Ok(event) => settles(&event.kind),
            Err(error) => {
                debug!(%error, "file watcher error");
                true
            }
        };
        if settled {
            wake.settled.store(true, Ordering::Release);
        }
        wake.notify.notify_one();
    }
}

/// Whether an event reports a change that is complete: a rename (how editors, kubelet and
/// `kubectl cp`-style tools put a file in place atomically), a removal, or a file closed after
/// writing. Creating a file and writing to it are not: more writes may follow.
fn settles(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

#[cfg(test)]
mod tests;
