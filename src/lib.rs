//! Portico: a Kubernetes ingress controller.
//!
//! Sources ([`source`]) turn a cluster or a directory of manifests into events; the
//! [`controller`] applies them to the [`store`], rebuilds a [`snapshot::Snapshot`] with the pure
//! [`snapshot::build`] and publishes it atomically. Data planes read the snapshot and never
//! import a source. See ARCHITECTURE.md.

pub mod admin;
pub mod check;
pub mod config;
pub mod controller;
pub mod echo;
pub mod metrics;
pub mod snapshot;
pub mod source;
pub mod store;

use tokio::sync::mpsc;
use tracing::info;

use crate::config::RunArgs;
use crate::controller::{Controller, Debounce};
use crate::snapshot::Snapshot;
use crate::snapshot::certs::{CertError, TlsCert};
use crate::source::manifests::{self, ManifestsError};

/// The name in the self-signed certificate served when no other applies.
pub const DEFAULT_CERT_NAME: &str = "portico.invalid";

/// Events a source may queue ahead of the controller.
const EVENT_QUEUE: usize = 4096;

/// Why Portico stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No source was configured.
    #[error("no source of objects: pass --manifests DIR")]
    NoSource,
    /// The manifests source failed.
    #[error(transparent)]
    Manifests(#[from] ManifestsError),
    /// The fallback certificate could not be made.
    #[error("cannot generate the default certificate: {0}")]
    Cert(#[from] CertError),
    /// A task of Portico's died.
    #[error("the {0} task failed: {1}")]
    Task(&'static str, String),
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let dir = args.source.manifests.clone().ok_or(RunError::NoSource)?;
    let fallback = TlsCert::self_signed(&[DEFAULT_CERT_NAME])?.key;
    let config = args.build.build_config(fallback.clone());
    let (publisher, handle) = snapshot::channel(Snapshot::empty(fallback));
    let controller = Controller::new(config, publisher, Debounce::default());
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    info!(dir = %dir.display(), "reading manifests");
    let mut source = tokio::spawn(manifests::run(dir, tx));
    tokio::spawn(controller.run(rx));
    tokio::spawn(async move {
        if handle.wait_for(1).await {
            info!("first snapshot published: ready");
        }
    });
    tokio::select! {
        result = &mut source => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(RunError::Task("manifests source", e.to_string())),
        },
        () = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
