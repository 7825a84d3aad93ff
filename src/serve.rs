//! The accept loop shared by the small listeners (admin, echo): accept, back off on accept
//! errors, serve each connection in a task of its own, and on shutdown stop accepting and let
//! open connections finish for a grace period.

use std::fmt::Display;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

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
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(listener = what, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
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
