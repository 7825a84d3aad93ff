//! The manifests directory through the controller: files written, changed, broken, fixed and
//! removed become the expected snapshots; a broken file leaves its last good objects in place.

use std::path::Path;
use std::time::Duration;

mod support;

use portico::controller::{Controller, Debounce};
use portico::snapshot::certs::TlsCert;
use portico::snapshot::routes::Upstream;
use portico::snapshot::{BuildConfig, Snapshot, SnapshotHandle, channel};
use portico::source::manifests;
use support::wait_for_snapshot;
use tokio::sync::mpsc;
use tokio::time::sleep;

const BASE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {ready: true}
"#;

fn ingress(name: &str, host: &str, path: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: shop}}
spec:
  ingressClassName: portico
  rules:
    - host: {host}
      http:
        paths:
          - path: {path}
            pathType: Prefix
            backend: {{service: {{name: web, port: {{number: 80}}}}}}
"#
    )
}

fn start(dir: &Path) -> SnapshotHandle {
    let cert = TlsCert::self_signed(&["test"]).unwrap().key;
    let (publisher, handle) = channel(Snapshot::empty(cert.clone()));
    let controller = Controller::new(BuildConfig::new(cert), publisher, Debounce::default());
    let (tx, rx) = mpsc::channel(256);
    let options = manifests::ManifestOptions::default();
    tokio::spawn(manifests::run(dir.to_path_buf(), options, tx));
    tokio::spawn(controller.run(rx));
    handle
}

fn routes(s: &Snapshot, host: &str, path: &str) -> bool {
    s.routes.route(host, path).is_some()
}

#[tokio::test]
async fn files_become_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), BASE).unwrap();
    std::fs::write(dir.path().join("a.yaml"), ingress("a", "a.com", "/")).unwrap();
    let handle = start(dir.path());

    let first = wait_for_snapshot(&handle, "a.com routes", |s| routes(s, "a.com", "/x")).await;
    let route = first.routes.route("a.com", "/").unwrap();
    let Upstream::Service(id) = route.backend.upstream else {
        panic!("{route:?}")
    };
    let ready: Vec<String> = first
        .services
        .get(id)
        .unwrap()
        .ready_endpoints()
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(ready, ["127.0.0.1:8080"]);

    let b = dir.path().join("nested/b.yaml");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::write(&b, ingress("b", "b.com", "/v1")).unwrap();
    wait_for_snapshot(&handle, "b.com/v1 is added", |s| {
        routes(s, "b.com", "/v1/x")
    })
    .await;

    std::fs::write(&b, ingress("b", "b.com", "/v2")).unwrap();
    wait_for_snapshot(&handle, "b.com moves to /v2", |s| {
        routes(s, "b.com", "/v2") && !routes(s, "b.com", "/v1")
    })
    .await;

    // Broken: nothing changes, and the last good objects stay.
    let before = handle.generation();
    std::fs::write(
        &b,
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: b\n",
    )
    .unwrap();
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        handle.generation(),
        before,
        "a broken file publishes nothing"
    );
    assert!(
        routes(&handle.load(), "b.com", "/v2"),
        "the last good objects stay"
    );

    std::fs::write(&b, ingress("b", "b.com", "/v3")).unwrap();
    wait_for_snapshot(&handle, "the fixed file is used", |s| {
        routes(s, "b.com", "/v3") && !routes(s, "b.com", "/v2")
    })
    .await;

    std::fs::remove_file(&b).unwrap();
    wait_for_snapshot(&handle, "b.com is gone", |s| {
        !routes(s, "b.com", "/v3") && routes(s, "a.com", "/")
    })
    .await;

    // Endpoints follow too: the only endpoint turns not ready.
    std::fs::write(
        dir.path().join("base.yaml"),
        BASE.replace("ready: true", "ready: false"),
    )
    .unwrap();
    let s = wait_for_snapshot(&handle, "the endpoint is not ready", |s| {
        s.services
            .iter()
            .all(|(_, p)| p.ready_endpoints().is_empty())
    })
    .await;
    assert!(
        routes(&s, "a.com", "/"),
        "the route stays; requests will get 503"
    );
}

#[tokio::test]
async fn the_example_manifests_build_cleanly() {
    let (objects, problems) = manifests::load_dir(Path::new("examples/myblog")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let cert = TlsCert::self_signed(&["test"]).unwrap().key;
    let store = portico::store::ObjectStore::from_objects(objects);
    let built = portico::snapshot::build(&store, &BuildConfig::new(cert));
    assert!(built.diagnostics.is_empty(), "{:?}", built.diagnostics);
    let route = built
        .snapshot
        .routes
        .route("myblog.devops.cn", "/blog/index/")
        .unwrap();
    assert!(route.ssl_redirect);
    let Upstream::Service(id) = route.backend.upstream else {
        panic!("{route:?}")
    };
    let port = built.snapshot.services.get(id).unwrap();
    let ready: Vec<String> = port
        .ready_endpoints()
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(ready, ["127.0.0.1:8002", "127.0.0.2:8002"]);
    let entry = built.snapshot.certs.entries().next().unwrap();
    assert_eq!(entry.0, "myblog.devops.cn");
    assert_eq!(entry.1.cert.names, ["*.devops.cn"]);
}
