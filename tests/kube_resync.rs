//! After an API-server outage, Portico catches up within seconds (the issue measured 6–64 s):
//! the watchers retry at most a few seconds apart, and the 410 of a resumed watch relists at
//! once; and `--watch-endpoints`
//! without the RBAC for Endpoints still serves (from EndpointSlices) with one clear error.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use portico::snapshot::Snapshot;
use portico::snapshot::routes::Upstream;
use serde_json::json;
use support::child::Child;
use support::client::{get, h1};
use support::fake_api::FakeApi;
use support::kube::{KubeEnv, ingress};
use support::manifests;
use tokio::time::{Instant, sleep, timeout};

const LIMIT: Duration = Duration::from_secs(90);
/// The target: a change made after the API server returns is routed within this.
const CATCH_UP: Duration = Duration::from_secs(5);

fn routes(s: &Snapshot, host: &str) -> bool {
    s.routes.route(host, "/").is_some()
}

fn endpoint_count(s: &Snapshot, host: &str) -> usize {
    let Some(route) = s.routes.route(host, "/") else {
        return 0;
    };
    let Upstream::Service(id) = route.backend.upstream else {
        return 0;
    };
    s.services.get(id).unwrap().ready_endpoints().len()
}

fn served_cert(s: &Snapshot, host: &str) -> Option<Vec<u8>> {
    let entry = s.certs.entry(host)?;
    Some(entry.cert.key.cert[0].as_ref().to_vec())
}

/// Down long enough that kube-rs's default backoff (800 ms doubling to 30 s, reset only after
/// 120 s of health) has grown past 6 s; the history is compacted meanwhile, so every resumed
/// watch gets 410 Gone. Then an Ingress, an EndpointSlice and a Secret change as soon as the
/// API server is back: each is routed within 5 s.
#[tokio::test]
async fn changes_after_an_outage_are_routed_within_five_seconds() {
    timeout(LIMIT, after_outage()).await.expect("bounded");
}

async fn after_outage() {
    let api = FakeApi::start().await;
    let backend = support::Backend::start("web-1").await;
    api.apply_yaml(&manifests::class());
    api.apply_yaml(&manifests::service("shop", "web", 80));
    api.apply_yaml(&manifests::endpoints("shop", "web", &[backend.addr], &[]));
    let (secret, first_cert) = manifests::tls_secret("shop", "a-tls", &["a.example"]);
    api.apply_yaml(&secret);
    let mut a = ingress("shop", "a", "portico", "a.example", "web");
    a["spec"]["tls"] = json!([{"hosts": ["a.example"], "secretName": "a-tls"}]);
    api.apply(a);
    let env = KubeEnv::start(&api, &[]).await;
    env.wait_for("a with its certificate", |s| {
        routes(s, "a.example") && served_cert(s, "a.example") == Some(first_cert.clone())
    })
    .await;

    api.set_down(true);
    sleep(Duration::from_secs(12)).await;
    api.expire_watches();
    api.set_down(false);
    let back = Instant::now();
    api.apply(ingress("shop", "b", "portico", "b.example", "web"));
    let other: SocketAddr = "127.0.0.2:9000".parse().unwrap();
    api.apply_yaml(&manifests::endpoints(
        "shop",
        "web",
        &[backend.addr, other],
        &[],
    ));
    let (secret, rotated) = manifests::tls_secret("shop", "a-tls", &["a.example"]);
    api.apply_yaml(&secret);

    env.wait_for("the new Ingress", |s| routes(s, "b.example"))
        .await;
    let ingress_after = back.elapsed();
    env.wait_for("the second endpoint", |s| {
        endpoint_count(s, "a.example") == 2
    })
    .await;
    let slice_after = back.elapsed();
    env.wait_for("the rotated certificate", |s| {
        served_cert(s, "a.example") == Some(rotated.clone())
    })
    .await;
    let secret_after = back.elapsed();
    for (what, took) in [
        ("Ingress", ingress_after),
        ("EndpointSlice", slice_after),
        ("Secret", secret_after),
    ] {
        eprintln!("{what} change routed {took:?} after the API server returned");
        assert!(
            took < CATCH_UP,
            "{what} change routed {took:?} after the API server returned"
        );
    }
    let reply = h1(env.http(), get("b.example", "/")).await;
    assert_eq!(reply.served_by(), "web-1", "and the proxy serves it");
    env.shutdown().await;
}

/// `--watch-endpoints` with RBAC that forbids Endpoints: Portico becomes ready and serves from
/// EndpointSlices, and says once, as an error, which permission is missing and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_forbidden_by_rbac_serve_from_endpoint_slices() {
    timeout(LIMIT, forbidden()).await.expect("bounded");
}

async fn forbidden() {
    let api = FakeApi::start().await;
    let backend = support::Backend::start("web-1").await;
    api.apply_yaml(&manifests::class());
    api.apply_yaml(&manifests::service("shop", "web", 80));
    api.apply_yaml(&manifests::endpoints("shop", "web", &[backend.addr], &[]));
    api.apply(ingress("shop", "a", "portico", "a.example", "web"));
    api.forbid("Endpoints");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).to_str().unwrap().to_string();
    let (http, output) = tokio::task::spawn_blocking(move || {
        let source = [
            "--kubeconfig",
            &kubeconfig,
            "--pod-namespace",
            "portico",
            "--watch-endpoints",
            "--update-status",
            "false",
        ];
        let args = [&source[..], &support::LOOPBACK_LISTENERS].concat();
        let mut child = Child::spawn(&args, "info");
        let (http, _, _) = child.listening(Duration::from_secs(10));
        child.wait_for("the first snapshot", Duration::from_secs(10), |v| {
            v["message"] == "snapshot published"
        });
        (http, child)
    })
    .await
    .unwrap();
    let reply = h1(http, get("a.example", "/")).await;
    assert_eq!(reply.served_by(), "web-1", "served from the EndpointSlice");
    let lines = tokio::task::spawn_blocking(move || output.stop(Duration::from_secs(5)))
        .await
        .unwrap();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert_eq!(errors.len(), 1, "one error:\n{}", lines.join("\n"));
    for needed in [
        "endpoints",
        "list/watch",
        "ClusterRole",
        "--watch-endpoints",
    ] {
        assert!(errors[0].contains(needed), "{needed:?} in {}", errors[0]);
    }
}
