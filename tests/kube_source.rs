//! The Kubernetes source against a fake API server on loopback (real wire format, real kube-rs
//! client): the snapshot follows every change; a 410 mid-stream and a reconnect after an
//! outage relist and delete what vanished; a dropped connection resumes the watch; the last
//! snapshot stays while the API server is down; `--watch-namespace` narrows every watch.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use portico::snapshot::Snapshot;
use portico::snapshot::routes::Upstream;
use portico::snapshot::services::ClusterIp;
use serde_json::json;
use support::client::{get, h1};
use support::fake_api::FakeApi;
use support::kube::{KubeEnv, eventually, ingress};
use support::manifests;
use tokio::time::{sleep, timeout};

/// Every test is bounded.
const LIMIT: Duration = Duration::from_secs(60);

fn routes(s: &Snapshot, host: &str) -> bool {
    s.routes.route(host, "/").is_some()
}

/// The ready endpoints of the Service behind `host`/, as strings.
fn endpoints(s: &Snapshot, host: &str) -> Vec<String> {
    let Some(route) = s.routes.route(host, "/") else {
        return vec![];
    };
    let Upstream::Service(id) = route.backend.upstream else {
        return vec![];
    };
    let port = s.services.get(id).unwrap();
    port.ready_endpoints()
        .iter()
        .map(|e| e.addr.to_string())
        .collect()
}

fn unavailable(s: &Snapshot, host: &str) -> bool {
    s.routes
        .route(host, "/")
        .is_some_and(|r| matches!(r.backend.upstream, Upstream::Unavailable))
}

/// The class, Service `web` in `shop` with one slice to `backend`, and Ingress `a` for a.example.
fn base(api: &FakeApi, backend: SocketAddr) {
    api.apply_yaml(&manifests::class());
    api.apply_yaml(&manifests::service("shop", "web", 80));
    api.apply_yaml(&manifests::endpoints("shop", "web", &[backend], &[]));
    api.apply(ingress("shop", "a", "portico", "a.example", "web"));
}

#[tokio::test]
async fn the_snapshot_follows_every_change() {
    timeout(LIMIT, follows_every_change()).await.unwrap();
}

async fn follows_every_change() {
    let api = FakeApi::start().await;
    let backend = support::Backend::start("web-1").await;
    base(&api, backend.addr);
    let env = KubeEnv::start(&api, &[]).await;
    let first = env.wait_for("a.example", |s| routes(s, "a.example")).await;
    assert_eq!(endpoints(&first, "a.example"), [backend.addr.to_string()]);
    let web = &first.services.ports_of("shop", "web").unwrap()[0];
    let unallocated = matches!(web.cluster_ip, ClusterIp::Unallocated);
    assert!(
        unallocated,
        "in a cluster the API server allocates ClusterIPs"
    );
    let reply = h1(env.http(), get("a.example", "/hello")).await;
    assert_eq!(reply.served_by(), "web-1", "the proxy serves it");
    ingress_changes(&api, &env).await;
    endpoint_slice_changes(&api, &env, backend.addr).await;
    secret_changes(&api, &env).await;
    // Service: deleted, then created again.
    api.delete("Service", "shop", "web");
    env.wait_for("no Service", |s| unavailable(s, "a.example"))
        .await;
    api.apply_yaml(&manifests::service("shop", "web", 80));
    let back = |s: &Snapshot| endpoints(s, "a.example").len() == 1;
    env.wait_for("the Service is back", back).await;
    env.shutdown().await;
}

/// Ingress: created, modified, deleted (a bookmark on the way changes nothing).
async fn ingress_changes(api: &FakeApi, env: &KubeEnv) {
    api.apply(ingress("shop", "b", "portico", "b.example", "web"));
    env.wait_for("b is created", |s| routes(s, "b.example"))
        .await;
    api.apply(ingress("shop", "b", "portico", "c.example", "web"));
    let moved = |s: &Snapshot| routes(s, "c.example") && !routes(s, "b.example");
    env.wait_for("b is modified", moved).await;
    api.bookmark();
    api.delete("Ingress", "shop", "b");
    env.wait_for("b is deleted", |s| !routes(s, "c.example"))
        .await;
}

/// EndpointSlice: modified (a second endpoint), then deleted.
async fn endpoint_slice_changes(api: &FakeApi, env: &KubeEnv, backend: SocketAddr) {
    let other: SocketAddr = "127.0.0.2:9000".parse().unwrap();
    api.apply_yaml(&manifests::endpoints("shop", "web", &[backend, other], &[]));
    let two = |s: &Snapshot| endpoints(s, "a.example").len() == 2;
    env.wait_for("a second endpoint", two).await;
    api.delete("EndpointSlice", "shop", "web-1");
    let one = |s: &Snapshot| endpoints(s, "a.example").len() == 1;
    env.wait_for("one endpoint again", one).await;
}

/// The DER of the leaf served for `host`, if any.
fn served_cert(s: &Snapshot, host: &str) -> Option<Vec<u8>> {
    let entry = s.certs.entry(host)?;
    Some(entry.cert.key.cert[0].as_ref().to_vec())
}

/// Secret: created, modified (a new certificate), deleted; Helm's release records are never
/// requested (field selector), Opaque ones are (basic authentication's).
async fn secret_changes(api: &FakeApi, env: &KubeEnv) {
    let (secret, first) = manifests::tls_secret("shop", "a-tls", &["a.example"]);
    api.apply_yaml(&secret);
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": "a-tls-opaque", "namespace": "shop"}}),
    );
    let mut tls = ingress("shop", "a", "portico", "a.example", "web");
    tls["spec"]["tls"] = json!([{"hosts": ["a.example"], "secretName": "a-tls"}]);
    api.apply(tls);
    let is = |der: Vec<u8>| move |s: &Snapshot| served_cert(s, "a.example") == Some(der.clone());
    env.wait_for("the certificate", is(first)).await;
    let (secret, second) = manifests::tls_secret("shop", "a-tls", &["a.example"]);
    api.apply_yaml(&secret);
    env.wait_for("the new certificate", is(second)).await;
    api.delete("Secret", "shop", "a-tls");
    let gone = |s: &Snapshot| served_cert(s, "a.example").is_none();
    env.wait_for("the certificate is gone", gone).await;
    let secrets = api.requests_to("GET", "/api/v1/secrets");
    let selected = |r: &support::fake_api::Logged| {
        r.query
            .contains("fieldSelector=type%21%3Dhelm.sh%2Frelease.v1")
    };
    assert!(
        !secrets.is_empty() && secrets.iter().all(selected),
        "{secrets:?}"
    );
}

#[tokio::test]
async fn a_410_mid_stream_relists_and_deletes_what_vanished() {
    timeout(LIMIT, relist_after_410()).await.unwrap();
}

async fn relist_after_410() {
    let api = FakeApi::start().await;
    base(&api, "127.0.0.1:9000".parse().unwrap());
    api.apply(ingress("shop", "b", "portico", "b.example", "web"));
    let env = KubeEnv::start(&api, &[]).await;
    env.wait_for("a and b", |s| {
        routes(s, "a.example") && routes(s, "b.example")
    })
    .await;
    let lists = api.requests_to("GET", "/ingresses").len();
    api.delete_quietly("Ingress", "shop", "b");
    api.apply(ingress("shop", "c", "portico", "c.example", "web"));
    api.expire_watches();
    let after = env
        .wait_for("b gone and c there", |s| {
            !routes(s, "b.example") && routes(s, "c.example")
        })
        .await;
    assert!(routes(&after, "a.example"), "objects still listed stay");
    assert!(api.requests_to("GET", "/ingresses").len() > lists);
    env.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_the_watch() {
    timeout(LIMIT, dropped_connection()).await.unwrap();
}

async fn dropped_connection() {
    let api = FakeApi::start().await;
    base(&api, "127.0.0.1:9000".parse().unwrap());
    let env = KubeEnv::start(&api, &[]).await;
    env.wait_for("a", |s| routes(s, "a.example")).await;
    let ingress_lists = || {
        api.requests_to("GET", "/apis/networking.k8s.io/v1/ingresses")
            .iter()
            .filter(|r| !r.query.contains("watch=true"))
            .count()
    };
    let lists = ingress_lists();
    api.drop_watches();
    api.apply(ingress("shop", "b", "portico", "b.example", "web"));
    env.wait_for("b after the reconnect", |s| routes(s, "b.example"))
        .await;
    assert_eq!(
        ingress_lists(),
        lists,
        "resumed from its resourceVersion, no relist"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn the_last_snapshot_stays_while_the_api_server_is_down() {
    timeout(LIMIT, outage()).await.unwrap();
}

async fn outage() {
    let api = FakeApi::start().await;
    base(&api, "127.0.0.1:9000".parse().unwrap());
    api.apply(ingress("shop", "b", "portico", "b.example", "web"));
    let env = KubeEnv::start(&api, &[]).await;
    env.wait_for("a and b", |s| {
        routes(s, "a.example") && routes(s, "b.example")
    })
    .await;
    let generation = env.snapshot().generation();
    api.set_down(true);
    api.delete_quietly("Ingress", "shop", "b");
    api.expire_watches();
    sleep(Duration::from_secs(2)).await;
    assert_eq!(env.snapshot().generation(), generation, "nothing changes");
    assert!(routes(&env.snapshot().load(), "b.example"));
    let ready = h1(env.admin(), get("localhost", "/readyz")).await;
    assert_eq!(ready.status, 200, "still ready on the last snapshot");
    api.set_down(false);
    env.wait_for("b deleted by the relist", |s| !routes(s, "b.example"))
        .await;
    env.shutdown().await;
}

#[tokio::test]
async fn readyz_waits_for_the_first_full_sync() {
    timeout(LIMIT, readiness()).await.unwrap();
}

async fn readiness() {
    let api = FakeApi::start().await;
    base(&api, "127.0.0.1:9000".parse().unwrap());
    api.set_down(true);
    let env = KubeEnv::start(&api, &[]).await;
    sleep(Duration::from_millis(500)).await;
    let reply = h1(env.admin(), get("localhost", "/readyz")).await;
    assert_eq!(reply.status, 503, "not ready before a sync");
    api.set_down(false);
    env.wait_for("a", |s| routes(s, "a.example")).await;
    let reply = h1(env.admin(), get("localhost", "/readyz")).await;
    assert_eq!(reply.status, 200);
    env.shutdown().await;
}

#[tokio::test]
async fn watch_namespace_narrows_every_watch() {
    timeout(LIMIT, narrowed()).await.unwrap();
}

async fn narrowed() {
    let api = FakeApi::start().await;
    base(&api, "127.0.0.1:9000".parse().unwrap());
    api.apply_yaml(&manifests::service("other", "web", 80));
    api.apply(ingress("other", "x", "portico", "x.example", "web"));
    let env = KubeEnv::start(&api, &["--watch-namespace", "shop,demo"]).await;
    let s = env.wait_for("a", |s| routes(s, "a.example")).await;
    assert!(!routes(&s, "x.example"), "namespace other is not watched");
    let paths: Vec<String> = eventually("every watch started", || {
        let paths: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
        let ns = |p: &&String| p.contains("/namespaces/demo/");
        (paths.iter().filter(ns).count() >= 4).then_some(paths)
    })
    .await;
    for resource in ["ingresses", "services", "endpointslices", "secrets"] {
        for ns in ["shop", "demo"] {
            let path = format!("/namespaces/{ns}/{resource}");
            assert!(
                paths.iter().any(|p| p.ends_with(&path)),
                "{path} in {paths:?}"
            );
        }
        let everywhere = format!("/{resource}");
        assert!(
            !paths
                .iter()
                .any(|p| p.ends_with(&everywhere) && !p.contains("/namespaces/")),
            "no cluster-wide watch of {resource}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p == "/apis/networking.k8s.io/v1/ingressclasses")
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("/endpoints") && !p.contains("endpointslices"))
    );
    env.shutdown().await;
}
