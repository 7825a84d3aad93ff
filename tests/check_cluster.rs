//! `portico check --kubeconfig`: the same report from a live cluster, read-only.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::fake_api::FakeApi;
use support::kube::ingress;
use support::manifests;
use tokio::time::timeout;

#[tokio::test]
async fn check_reads_a_cluster_without_writing_to_it() {
    timeout(Duration::from_secs(60), from_cluster())
        .await
        .expect("bounded");
}

async fn from_cluster() {
    let api = FakeApi::start().await;
    api.apply_yaml(&manifests::class());
    api.apply_yaml(&manifests::service("shop", "web", 80));
    let mut ing = ingress("shop", "web", "portico", "a.example", "web");
    ing["metadata"]["annotations"] = json!({
        "nginx.ingress.kubernetes.io/rewrite-target": "/",
        "nginx.ingress.kubernetes.io/affinity": "cookie",
    });
    api.apply(ing);
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "portico", "namespace": "ingress"},
                     "data": {"proxy-body-size": "8m", "no-such-key": "1"}}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_portico"))
            .args([
                "check",
                "--format",
                "json",
                "--configmap",
                "ingress/portico",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .output()
            .expect("run portico")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["routes"][0]["host"], "a.example");
    assert_eq!(v["migration"][0]["ingress"], "shop/web");
    let diagnostics = v["diagnostics"].to_string();
    assert!(
        diagnostics.contains("data.no-such-key"),
        "the ConfigMap was read: {diagnostics}"
    );
    let requests = api.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "read-only: {:?}",
        requests
            .iter()
            .filter(|r| r.method != "GET")
            .collect::<Vec<_>>()
    );
}
