//! When a watcher tries again after an error.
//!
//! kube-runtime's `default_backoff` grows to 30 s and only resets after 120 s without an error,
//! so after an API-server outage a watcher could sleep half a minute past the server's return,
//! and a `410 Gone` waited out the same backoff before relisting. Portico's rule:
//!
//! - the delay after an error doubles from [`BASE`] up to [`CAP`] (a few seconds), with jitter
//!   (each delay is drawn from its upper half), so a DaemonSet's replicas do not all come back
//!   in the same instant;
//! - any successful list item or watch event resets it;
//! - `410 Gone` (the watch's resourceVersion is too old) relists at once, unless the previous
//!   immediate relist was less than [`RELIST_SPACING`] ago (then it backs off like any error);
//! - `403 Forbidden` (RBAC) waits [`FORBIDDEN`]: it does not heal by itself, and is reported once.
//!
//! So a change made after the API server returns is seen at most [`CAP`] later, plus one list.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::time::Instant;

/// The first delay after an error.
pub(super) const BASE: Duration = Duration::from_millis(250);
/// The longest delay after errors (other than 403).
pub(super) const CAP: Duration = Duration::from_secs(3);
/// Two immediate relists after 410 are at least this far apart.
pub(super) const RELIST_SPACING: Duration = Duration::from_secs(1);
/// The delay after 403 Forbidden.
pub(super) const FORBIDDEN: Duration = Duration::from_secs(30);

/// What went wrong, as far as the delay is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// 410 Gone: relist.
    Expired,
    /// 403 Forbidden: RBAC does not allow it.
    Forbidden,
    /// Anything else (the API server unreachable, 5xx, a broken stream).
    Other,
}

// === impl Failure ===

impl Failure {
    /// Classifies a watcher error.
    pub(super) fn of(error: &watcher::Error) -> Failure {
        let status = match error {
            watcher::Error::WatchError(status) => Some(status.code),
            watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        };
        match status {
            Some(410) => Failure::Expired,
            Some(403) => Failure::Forbidden,
            _ => Failure::Other,
        }
    }
}

/// The backoff state of one watcher.
#[derive(Debug, Default)]
pub(super) struct Retry {
    /// Errors since the last success.
    attempts: u32,
    /// When a 410 last relisted at once.
    immediate: Option<Instant>,
}

// === impl Retry ===

impl Retry {
    /// A list item or watch event arrived.
    pub(super) fn succeeded(&mut self) {
        self.attempts = 0;
    }

    /// How long to wait after this failure; `jitter` in [0, 1) picks within the upper half.
    pub(super) fn failed(&mut self, failure: Failure, now: Instant, jitter: f64) -> Duration {
        match failure {
            Failure::Expired
                if self
                    .immediate
                    .is_none_or(|t| now.saturating_duration_since(t) >= RELIST_SPACING) =>
            {
                self.immediate = Some(now);
                return Duration::ZERO;
            }
            Failure::Forbidden => return FORBIDDEN.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0),
            _ => {}
        }
        let doubled = BASE.saturating_mul(1u32 << self.attempts.min(16));
        self.attempts = self.attempts.saturating_add(1);
        doubled.min(CAP).mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// A number in [0, 1) from the system's random source (0.5 if it fails).
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// `watcher` with Portico's retry rule: after an error item, the next poll waits.
pub(super) fn with_retry<S, T>(stream: S) -> impl Stream<Item = watcher::Result<T>> + Send
where
    S: Stream<Item = watcher::Result<T>> + Send + 'static,
    T: Send,
{
    futures_util::stream::unfold(
        (Box::pin(stream), Retry::default(), Duration::ZERO),
        |(mut stream, mut retry, wait)| async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let item = stream.next().await?;
            let wait = match &item {
                Ok(_) => {
                    retry.succeeded();
                    Duration::ZERO
                }
                Err(error) => retry.failed(Failure::of(error), Instant::now(), jitter()),
            };
            Some((item, (stream, retry, wait)))
        },
    )
}
