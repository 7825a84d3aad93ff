//! Portico in Kubernetes mode against the fake API server, and objects as JSON values.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use portico::run::Portico;
use portico::snapshot::{Snapshot, SnapshotHandle};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use super::fake_api::FakeApi;

/// Portico started on a kubeconfig that points at a fake API server.
pub struct KubeEnv {
    pub dir: TempDir,
    pub portico: Option<Portico>,
}

impl KubeEnv {
    /// Starts Portico (pod namespace `portico`, loopback ephemeral ports, extra `flags`); does
    /// not wait for the first snapshot.
    pub async fn start(api: &FakeApi, flags: &[&str]) -> KubeEnv {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let mut argv = vec!["portico", "--kubeconfig", kubeconfig.to_str().unwrap()];
        argv.extend(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"]);
        argv.extend(["--admin-addr", "127.0.0.1:0", "--access-log", "false"]);
        argv.extend(["--drain-timeout", "5s", "--pod-namespace", "portico"]);
        argv.extend(flags);
        let cli = portico::config::Cli::try_parse_from(argv).unwrap();
        let portico = portico::run::start(&cli.run).await.unwrap();
        KubeEnv {
            dir,
            portico: Some(portico),
        }
    }

    pub fn portico(&self) -> &Portico {
        self.portico.as_ref().unwrap()
    }

    pub fn snapshot(&self) -> &SnapshotHandle {
        &self.portico().snapshot
    }

    pub fn http(&self) -> SocketAddr {
        self.portico().http[0]
    }

    pub fn admin(&self) -> SocketAddr {
        self.portico().admin
    }

    /// Waits (at most 10 s) for a published snapshot that satisfies `want`.
    pub async fn wait_for(&self, what: &str, want: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        super::wait_for_snapshot(self.snapshot(), what, want).await
    }

    pub async fn shutdown(mut self) {
        if let Some(p) = self.portico.take() {
            p.shutdown().await;
        }
    }
}

/// Polls `check` every 20 ms until it gives a value (at most 10 s).
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// `status.loadBalancer.ingress` of an object, `[]` when unset.
pub fn lb_status(object: &Value) -> Value {
    match &object["status"]["loadBalancer"]["ingress"] {
        Value::Null => json!([]),
        list => list.clone(),
    }
}

/// A Pod of Portico's DaemonSet on `node`.
pub fn portico_pod(name: &str, node: &str, phase: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "portico",
                        "labels": {"app.kubernetes.io/name": "portico"}},
           "spec": {"nodeName": node, "containers": [{"name": "portico", "image": "portico"}]},
           "status": {"phase": phase}})
}

/// A Node with an InternalIP and, when given, an ExternalIP.
pub fn node(name: &str, internal: &str, external: Option<&str>) -> Value {
    let mut addresses = vec![
        json!({"type": "Hostname", "address": name}),
        json!({"type": "InternalIP", "address": internal}),
    ];
    if let Some(external) = external {
        addresses.push(json!({"type": "ExternalIP", "address": external}));
    }
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": addresses}})
}

/// An Ingress of class `class` for `host` → `service`:80.
pub fn ingress(ns: &str, name: &str, class: &str, host: &str, service: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}
