//! The accept loop shared by the small listeners (admin, echo): accept, back off on accept
//! errors, serve each connection in a task of its own, and on shutdown stop accepting and let
//! open connections finish for a grace period. [`AcceptErrors`] keeps the log of a failing
//! accept loop (this one's and the proxy's) to one line per [`SUMMARY_INTERVAL`].

use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// How long open connections get to finish after shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts until `shutdown` resolves. `connection` turns each accepted stream into a hyper
/// connection, plus a value kept alive until that connection ends (a metrics guard, say).
pub async fn accept_loop<C, G>(
    listener: TcpListener,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    mut connection: impl FnMut(TcpStream, SocketAddr) -> (C, G),
) where
    C: GracefulConnection + Send + 'static,
    C::Error: Display,
    G: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut errors = AcceptErrors::new(what);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    errors.failed(&error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        errors.accepted();
        let (conn, keep) = connection(stream, peer);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(listener = what, %peer, %error, "connection failed");
            }
            drop(keep);
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!(
            listener = what,
            "connections still open after the grace period"
        );
    }
}

/// A failing accept loop logs at most one warning per this.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The log of a failing accept loop (out of file descriptors: EMFILE, ENFILE; or out of
/// memory): the first failure is a warning at once, the ones after it are counted and summed
/// up in one warning per [`SUMMARY_INTERVAL`], and the first success after failures says how
/// many there were. An accept loop backs off after each failure, so without this it would log
/// 10 to 20 lines a second for as long as the shortage lasts.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    /// When the last warning was written; `None` while accepting works.
    logged: Option<Instant>,
    /// Failures since the last warning.
    unlogged: u64,
    /// Failures since accepting last worked.
    total: u64,
}

/// What one failure makes [`AcceptErrors`] write.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// The first failure.
    First,
    /// A summary: failures since the last warning.
    Summary(u64),
    /// Nothing (counted).
    Quiet,
}

// === impl AcceptErrors ===

impl AcceptErrors {
    /// The log of the accept loop of `listener`.
    pub fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            logged: None,
            unlogged: 0,
            total: 0,
        }
    }

    /// A failed accept.
    pub fn failed(&mut self, error: &io::Error) {
        let listener = self.listener;
        match self.record(Instant::now()) {
            Report::First => warn!(listener, %error, "accept failed; backing off"),
            Report::Summary(failures) => {
                warn!(listener, %error, failures, "accept still failing");
            }
            Report::Quiet => {}
        }
    }

    /// A successful accept: one branch unless failures came before it.
    pub fn accepted(&mut self) {
        if self.logged.is_some() {
            let failures = self.total;
            info!(listener = self.listener, failures, "accepting again");
            *self = AcceptErrors::new(self.listener);
        }
    }

    fn record(&mut self, now: Instant) -> Report {
        self.total += 1;
        match self.logged {
            None => {
                self.logged = Some(now);
                Report::First
            }
            Some(at) if now.duration_since(at) >= SUMMARY_INTERVAL => {
                self.logged = Some(now);
                Report::Summary(std::mem::take(&mut self.unlogged) + 1)
            }
            Some(_) => {
                self.unlogged += 1;
                Report::Quiet
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_summed_up() {
        let mut errors = AcceptErrors::new("test");
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(errors.record(at(0)), Report::First);
        // Backing off 50 ms at a time: quiet for the rest of the interval.
        for ms in (50..10_000).step_by(50) {
            assert_eq!(errors.record(at(ms)), Report::Quiet, "{ms}");
        }
        assert_eq!(errors.record(at(10_000)), Report::Summary(200));
        assert_eq!(errors.record(at(10_050)), Report::Quiet);
        assert_eq!(errors.record(at(20_000)), Report::Summary(2));
        assert_eq!(errors.total, 203);
        errors.accepted();
        assert_eq!(errors.record(at(20_050)), Report::First, "a new shortage");
    }
}
