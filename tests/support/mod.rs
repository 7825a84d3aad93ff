//! A small test language for end-to-end tests: echo backends and an in-process Portico on
//! ephemeral loopback ports, manifests written as YAML, and clients for HTTP/1.1, h2c and TLS.
#![allow(dead_code)] // each test binary uses a different part

pub mod child;
pub mod client;
pub mod fake_api;
pub mod kube;
pub mod l4;
pub mod manifests;
pub mod pki;
pub mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use portico::run::Portico;
use portico::snapshot::{Snapshot, SnapshotHandle};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

/// Flags that put every listener of a Portico under test on 127.0.0.1 and an ephemeral port.
pub const LOOPBACK_LISTENERS: [&str; 6] = [
    "--http-addr",
    "127.0.0.1:0",
    "--https-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
];

/// An echo backend on 127.0.0.1 and an ephemeral port.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(portico::echo::serve(
            listener,
            Arc::from(name),
            async move {
                let _ = rx.await;
            },
        ));
        Backend {
            addr,
            name: name.to_string(),
            stop: Some(tx),
        }
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Portico on a temporary manifests directory, listening on 127.0.0.1 ephemeral ports.
pub struct Env {
    pub dir: TempDir,
    pub portico: Option<Portico>,
}

impl Env {
    /// Writes the files and starts Portico; returns once the first snapshot is published.
    pub async fn start(files: &[(&str, String)]) -> Env {
        Env::start_with(files, &[]).await
    }

    pub async fn start_with(files: &[(&str, String)], flags: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let mut argv = vec!["portico", "--manifests", dir.path().to_str().unwrap()];
        argv.extend(LOOPBACK_LISTENERS);
        argv.extend(["--access-log", "false", "--drain-timeout", "5s"]);
        argv.extend(flags);
        let cli = portico::config::Cli::try_parse_from(argv).unwrap();
        let portico = portico::run::start(&cli.run).await.unwrap();
        let env = Env {
            dir,
            portico: Some(portico),
        };
        env.wait_for("the first snapshot", |_| true).await;
        env
    }

    pub fn portico(&self) -> &Portico {
        self.portico.as_ref().unwrap()
    }

    pub fn http(&self) -> SocketAddr {
        self.portico().http[0]
    }

    pub fn https(&self) -> SocketAddr {
        self.portico().https[0]
    }

    pub fn admin(&self) -> SocketAddr {
        self.portico().admin
    }

    pub fn generation(&self) -> u64 {
        self.portico().snapshot.generation()
    }

    /// Writes (or replaces) a manifest file and waits for the next snapshot.
    pub async fn apply(&self, name: &str, content: &str) {
        let before = self.generation();
        write_atomically(&self.dir.path().join(name), content);
        self.wait_for(&format!("{name} to be applied"), |s| s.generation > before)
            .await;
    }

    /// Removes a manifest file and waits for the next snapshot.
    pub async fn remove(&self, name: &str) {
        let before = self.generation();
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
        self.wait_for(&format!("{name} to be removed"), |s| s.generation > before)
            .await;
    }

    /// Waits (at most 10 s) for a published snapshot that satisfies `want`.
    pub async fn wait_for(&self, what: &str, want: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        wait_for_snapshot(&self.portico().snapshot, what, want).await
    }

    pub async fn shutdown(mut self) {
        if let Some(p) = self.portico.take() {
            p.shutdown().await;
        }
    }
}

/// Waits (at most 10 s) for a published snapshot that satisfies `want`.
pub async fn wait_for_snapshot(
    handle: &SnapshotHandle,
    what: &str,
    want: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = handle.load_full();
        if snapshot.generation > 0 && want(&snapshot) {
            return snapshot;
        }
        let next = handle.wait_for(snapshot.generation + 1);
        if timeout(deadline.saturating_duration_since(Instant::now()), next)
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}");
        }
    }
}

/// Writes through a temporary file and a rename, so the watcher never sees half a file.
/// An address nothing listens on: bound on loopback, then closed (connecting is refused).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
