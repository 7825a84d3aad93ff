//! Running Portico: bind every listener, start the source, the controller, the proxy and the
//! admin listener; stop accepting and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::{DemoArgs, RunArgs};
use crate::controller::{BuildStatus, Controller, Debounce};
use crate::metrics::Metrics;
use crate::proxy::drain::Drain;
use crate::proxy::listener::{self, BindError};
use crate::proxy::{Proxy, tls};
use crate::snapshot::certs::{CertError, TlsCert};
use crate::snapshot::{BuildConfig, Snapshot, SnapshotHandle};
use crate::source::Event;
use crate::source::kubernetes::{self, KubeError};
use crate::source::manifests::{self, ManifestsError};

/// The name in the self-signed certificate served when no other applies.
pub const DEFAULT_CERT_NAME: &str = "portico.invalid";

/// Events a source may queue ahead of the controller.
const EVENT_QUEUE: usize = 4096;

/// Why Portico could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The manifests source failed.
    #[error(transparent)]
    Manifests(#[from] ManifestsError),
    /// The Kubernetes source could not start.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The fallback certificate could not be made.
    #[error("cannot generate the default certificate")]
    Cert(#[from] CertError),
    /// The TLS configuration could not be made.
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    /// The admin token file cannot be used.
    #[error(transparent)]
    AdminToken(#[from] admin::TokenError),
    /// An I/O error of a listener.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How long shutdown waits for the source to stop (it bounds its own wait below this).
const SOURCE_STOP: Duration = Duration::from_secs(5);

/// A running Portico.
#[derive(Debug)]
pub struct Portico {
    /// The bound HTTP listeners.
    pub http: Vec<SocketAddr>,
    /// The bound HTTPS listeners.
    pub https: Vec<SocketAddr>,
    /// The bound admin listener.
    pub admin: SocketAddr,
    /// The published snapshots.
    pub snapshot: SnapshotHandle,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
    drain: Drain,
    source: tokio::task::JoinHandle<Result<(), RunError>>,
    drain_timeout: Duration,
}

/// Binds every listener (all or nothing), then starts serving.
pub async fn start(args: &RunArgs) -> Result<Portico, RunError> {
    let p = &args.proxy;
    for deprecated in p.deprecations() {
        warn!("{deprecated}");
    }
    let token = match &p.admin_token_file {
        Some(path) => Some(Arc::new(admin::AdminToken::read(path)?)),
        None => None,
    };
    let http = bind_all(&p.http_addrs, "HTTP")?;
    let https = bind_all(&p.https_addrs, "HTTPS")?;
    let admin = listener::bind(p.admin_addr, "admin")?;
    let fallback = TlsCert::self_signed(&[DEFAULT_CERT_NAME])?.key;
    let (publisher, snapshot) = crate::snapshot::channel(Snapshot::empty(fallback.clone()));
    let embedded = args.source.manifests.is_some();
    let controller = Controller::new(build_config(args, fallback), publisher, Debounce::default());
    let status = controller.status();
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (stop, stopped) = watch::channel(false);
    let source = start_source(args, tx, status.clone(), stopped.clone()).await?;
    tokio::spawn(controller.run(rx));
    let metrics = Arc::new(Metrics::new());
    let mut portico = Portico {
        http: local_addrs(&http)?,
        https: local_addrs(&https)?,
        admin: admin.local_addr()?,
        snapshot: snapshot.clone(),
        stop,
        listeners: JoinSet::new(),
        drain: Drain::new(),
        source,
        drain_timeout: p.drain_timeout,
    };
    let proxy = proxy(args, &portico, metrics.clone());
    let max_connections = proxy.config().max_connections;
    let connection_limit = proxy.connection_limit();
    portico.serve_proxy(http, https, proxy, &stopped)?;
    // The L4 task also sweeps idle ClientIP affinity entries, which the L7 proxy uses too.
    let mut l4 = args
        .l4
        .config(embedded, p.connect_timeout(), metrics.udp_flows());
    l4.connections = Some(connection_limit);
    tokio::spawn(crate::l4::run(snapshot.clone(), l4, stopped.clone()));
    tokio::spawn(crate::health::run(
        snapshot.clone(),
        metrics.clone(),
        stopped.clone(),
    ));
    let node_addresses = args.l4.node_addresses.clone();
    let state = AdminState {
        snapshot,
        status,
        metrics,
        node_addresses,
        token,
    };
    let mut admin_stop = stopped;
    tokio::spawn(admin::serve(admin, state, async move {
        let _ = admin_stop.wait_for(|s| *s).await;
    }));
    let max_connections = (max_connections != usize::MAX).then_some(max_connections);
    info!(
        http = ?portico.http,
        https = ?portico.https,
        admin = %portico.admin,
        max_connections,
        "listening"
    );
    Ok(portico)
}

/// The proxy, its endpoints picked by the L4 schedulers.
fn proxy(args: &RunArgs, portico: &Portico, metrics: Arc<Metrics>) -> Arc<Proxy> {
    let mut config = args.proxy.proxy_config();
    // Redirects name the port actually bound (it differs from the flag with port 0).
    if let Some(bound) = portico.https.first() {
        config.https_port = bound.port();
    }
    Proxy::new(
        portico.snapshot.clone(),
        Arc::new(crate::l4::Schedulers),
        metrics,
        config,
    )
}

/// The manifests directory is the embedded mode; with a cluster, the API server allocates
/// ClusterIPs and NodePorts (and kube-proxy serves them).
fn build_config(args: &RunArgs, fallback: Arc<CertifiedKey>) -> BuildConfig {
    let mut config = args.build.build_config(fallback);
    config.services = args.build.services.options(args.source.manifests.is_some());
    config
}

/// Starts the source: `--manifests DIR`, else the Kubernetes API.
/// Both end on `stop` (the Kubernetes source after releasing its Lease).
async fn start_source(
    args: &RunArgs,
    tx: mpsc::Sender<Event>,
    builds: watch::Receiver<BuildStatus>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<(), RunError>>, RunError> {
    if let Some(dir) = args.source.manifests.clone() {
        info!(dir = %dir.display(), "reading manifests");
        let options = args.source.manifest_options();
        return Ok(tokio::spawn(async move {
            tokio::select! {
                result = manifests::run(dir, options, tx) => Ok(result?),
                _ = stop.wait_for(|s| *s) => Ok(()),
            }
        }));
    }
    let foreign = args
        .build
        .controller_classes
        .iter()
        .any(|c| c != crate::snapshot::CONTROLLER_NAME);
    if foreign && args.source.kube.update_status {
        warn!(
            controllers = ?args.build.controller_classes,
            "serving another controller's IngressClasses with --update-status on: if that controller still runs, both write the Ingresses' status; pass --update-status=false until it is gone"
        );
    }
    let configmap = args.build.configmap.clone();
    let source = kubernetes::start(&args.source.kube, configmap, tx, builds, stop).await?;
    Ok(tokio::spawn(async move { Ok(source.run().await?) }))
}

fn bind_all(addrs: &[SocketAddr], what: &'static str) -> Result<Vec<TcpListener>, BindError> {
    addrs.iter().map(|a| listener::bind(*a, what)).collect()
}

fn local_addrs(listeners: &[TcpListener]) -> std::io::Result<Vec<SocketAddr>> {
    listeners.iter().map(TcpListener::local_addr).collect()
}

// === impl Portico ===

impl Portico {
    fn serve_proxy(
        &mut self,
        http: Vec<TcpListener>,
        https: Vec<TcpListener>,
        proxy: Arc<Proxy>,
        stopped: &watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let acceptor = TlsAcceptor::from(tls::server_config(self.snapshot.clone())?);
        let tls = std::iter::repeat_n(None, http.len())
            .chain(std::iter::repeat_n(Some(acceptor), https.len()));
        for (l, tls) in http.into_iter().chain(https).zip(tls) {
            let task = listener::serve(l, proxy.clone(), tls, self.drain.clone(), stopped.clone());
            self.listeners.spawn(task);
        }
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM (or until the source fails), then drains.
    pub async fn run_until_signal(mut self, mut signals: ShutdownSignals) -> Result<(), RunError> {
        let result = tokio::select! {
            joined = &mut self.source => match joined {
                Ok(result) => result,
                Err(e) => Err(RunError::Io(std::io::Error::other(e))),
            },
            () = signals.recv() => Ok(()),
        };
        self.shutdown().await;
        result
    }

    /// Stops accepting, lets in-flight requests finish for up to the drain timeout.
    pub async fn shutdown(mut self) {
        info!(drain_timeout = ?self.drain_timeout, "shutting down: no new connections, draining");
        self.stop.send_replace(true);
        while self.listeners.join_next().await.is_some() {}
        // The source ends on stop (a Kubernetes leader first releases its Lease, bounded).
        // (A finished handle is not polled again: its output may have been taken.)
        if !self.source.is_finished()
            && tokio::time::timeout(SOURCE_STOP, &mut self.source)
                .await
                .is_err()
        {
            self.source.abort();
        }
        match tokio::time::timeout(self.drain_timeout, self.drain.shutdown()).await {
            Ok(()) => info!("drained"),
            Err(_) => warn!("drain timeout: closing the remaining connections"),
        }
    }
}

/// Runs Portico until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    // Caught from here on: a signal that arrives while starting (after the first snapshot is
    // published, say) drains like any other instead of killing the process.
    let signals = ShutdownSignals::install();
    raise_fd_limit();
    start(&args).await?.run_until_signal(signals).await
}

/// Raises the soft file descriptor limit to the hard one, before anything derives a limit
/// from it (`--max-connections`), and logs both.
fn raise_fd_limit() {
    match crate::resources::raise_fd_limit() {
        Ok(Some((before, after))) => info!(
            soft = %after.soft,
            hard = %after.hard,
            soft_before = %before.soft,
            "file descriptor limit"
        ),
        Ok(None) => {}
        Err(error) => match crate::resources::fd_limits() {
            Some(now) => {
                warn!(%error, soft = %now.soft, hard = %now.hard, "cannot raise the file descriptor limit")
            }
            None => warn!(%error, "cannot raise the file descriptor limit"),
        },
    }
}

/// The myblog demo: echo backends on the endpoints of the manifests, and Portico.
pub async fn demo(args: DemoArgs, mut run_args: RunArgs) -> Result<(), RunError> {
    for (i, addr) in args.backends.iter().enumerate() {
        let listener = listener::bind(*addr, "echo backend")?;
        let name: Arc<str> = format!("myblog-{}", i + 1).into();
        info!(%addr, %name, "echo backend");
        tokio::spawn(crate::echo::serve(listener, name, std::future::pending()));
    }
    run_args.source.manifests = Some(args.manifests);
    run_args.proxy.http_addrs = vec![args.http_addr];
    run_args.proxy.https_addrs = vec![args.https_addr];
    run_args.proxy.admin_addr = args.admin_addr;
    run_args.build.services.service_cidr = args.demo_service_cidr;
    run_args.l4.proxy_nodeports = Some(true);
    run_args.l4.proxy_cluster_ips = Some(true);
    run_args.l4.node_addresses = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    run(run_args).await
}

/// SIGINT and SIGTERM, caught from the moment this is made.
#[derive(Debug)]
pub struct ShutdownSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Starts catching both signals (one that cannot be caught keeps its default action).
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => drop(signal.recv().await),
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(self.term.as_mut()) => {}
            () = next(self.int.as_mut()) => {}
        }
    }
}
