//! The admin endpoints over real sockets on 127.0.0.1, port 0, with a hand-built snapshot.

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::snapshot::certs::TlsCert;
use crate::snapshot::{BuildConfig, Built, Snapshot, SnapshotPublisher, build, channel};
use crate::source::Object;
use crate::store::ObjectStore;

/// Every test finishes within this.
const LIMIT: Duration = Duration::from_secs(30);

/// A running admin listener, with the writers of what it reports on.
struct Admin {
    addr: std::net::SocketAddr,
    publisher: SnapshotPublisher,
    status: watch::Sender<BuildStatus>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Admin {
    async fn start() -> Admin {
        let cert = TlsCert::self_signed(&["x"]).expect("certificate").key;
        let (publisher, snapshot) = channel(Snapshot::empty(cert));
        let (status, status_rx) = watch::channel(BuildStatus::default());
        let state = AdminState {
            snapshot,
            status: status_rx,
            metrics: Arc::new(Metrics::new()),
            node_addresses: Vec::new(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, state, shutdown));
        Admin {
            addr,
            publisher,
            status,
            stop,
            task,
        }
    }

    /// Publishes what the controller would after building these objects.
    fn publish(&self, objects: Vec<Object>) {
        let config = BuildConfig::new(TlsCert::self_signed(&["x"]).expect("cert").key);
        let Built {
            snapshot,
            diagnostics,
            ..
        } = build(&ObjectStore::from_objects(objects), &config);
        let generation = self.publisher.publish(snapshot);
        self.status.send_modify(|s| {
            s.generation = generation;
            s.builds += 1;
            s.build_duration = Duration::from_millis(3);
            s.diagnostics = Arc::new(diagnostics);
        });
    }

    async fn connect(&self) -> SendRequest<Empty<Bytes>> {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("serve");
    }
}

/// Sends `method path` on a kept-alive connection; returns the status, content type and body.
async fn call(
    sender: &mut SendRequest<Empty<Bytes>>,
    method: Method,
    path: &str,
) -> (StatusCode, String, String) {
    sender.ready().await.expect("connection ready");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin.test")
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8(bytes.to_vec()).expect("utf-8");
    (status, content_type, body)
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (StatusCode, String) {
    let (status, _, body) = call(sender, Method::GET, path).await;
    (status, body)
}

fn obj(v: Value) -> Object {
    Object::from_value(v).expect("test object")
}

/// The class, a Service with one endpoint, an Ingress routing `myblog.test/blog` to it, and
/// an Ingress naming a missing Service (one error diagnostic).
fn objects() -> Vec<Object> {
    let ingress = |name: &str, service: &str, host: &str| {
        obj(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ingressClassName": "portico", "rules": [{"host": host, "http": {"paths": [
                {"path": "/blog", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}
            ]}}]}
        }))
    };
    vec![
        obj(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "portico"},
            "spec": {"controller": "portico.dev/ingress-controller"}
        })),
        obj(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "myblog", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
        })),
        obj(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "myblog-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "myblog"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080}]
        })),
        ingress("myblog", "myblog", "myblog.test"),
        ingress("broken", "missing", "broken.test"),
    ]
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn readyz_flips_when_a_snapshot_is_published() {
    bounded(async {
        let admin = Admin::start().await;
        let mut conn = admin.connect().await;
        let (status, body) = get(&mut conn, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: no snapshot published yet");
        assert_eq!(
            get(&mut conn, "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        admin.publish(objects());
        assert_eq!(
            get(&mut conn, "/readyz").await,
            (StatusCode::OK, "ready".into())
        );
        drop(conn);
        admin.stop().await;
    })
    .await;
}

#[tokio::test]
async fn debug_snapshot_lists_routes_and_diagnostics() {
    bounded(async {
        let admin = Admin::start().await;
        admin.publish(objects());
        let mut conn = admin.connect().await;
        let (status, content_type, body) = call(&mut conn, Method::GET, "/debug/snapshot").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["generation"], 1);
        let routes = v["routes"].as_array().expect("routes");
        let blog = routes
            .iter()
            .find(|r| r["host"] == "myblog.test")
            .unwrap_or_else(|| panic!("no myblog route in {body}"));
        assert_eq!(blog["path"], "/blog");
        assert_eq!(blog["ingress"], "default/myblog");
        assert_eq!(blog["backend"], "default/myblog:80");
        assert_eq!(blog["endpoints"], json!(["10.0.0.7:8080"]));
        let diagnostics = v["diagnostics"].as_array().expect("diagnostics");
        assert!(
            diagnostics.iter().any(|d| d["severity"] == "error"),
            "{body}"
        );
        drop(conn);
        admin.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_exposition() {
    bounded(async {
        let admin = Admin::start().await;
        admin.publish(objects());
        let mut conn = admin.connect().await;
        let (status, content_type, body) = call(&mut conn, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, OPENMETRICS);
        assert!(body.contains("\nportico_snapshot_generation 1\n"), "{body}");
        assert!(
            body.contains("\nportico_snapshot_builds_total 1\n"),
            "{body}"
        );
        let errors = "\nportico_config_diagnostics{severity=\"error\"} 1\n";
        assert!(body.contains(errors), "{body}");
        // The scrape's own connection is open.
        let open = "\nportico_open_connections{listener=\"admin\"} 1\n";
        assert!(body.contains(open), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        drop(conn);
        admin.stop().await;
    })
    .await;
}

#[tokio::test]
async fn other_paths_and_methods() {
    bounded(async {
        let admin = Admin::start().await;
        let mut conn = admin.connect().await;
        assert_eq!(get(&mut conn, "/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&mut conn, "/healthz/").await.0, StatusCode::NOT_FOUND);
        let (status, _, _) = call(&mut conn, Method::POST, "/healthz").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _, body) = call(&mut conn, Method::HEAD, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
        drop(conn);
        admin.stop().await;
    })
    .await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    bounded(async {
        let admin = Admin::start().await;
        let stream = TcpStream::connect(admin.addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get("http://admin.test/healthz")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        drop(sender);
        admin.stop().await;
    })
    .await;
}
