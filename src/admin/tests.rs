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
            token: None,
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
    call_host(sender, method, path, "localhost:10254").await
}

/// Like [`call`], with this Host.
async fn call_host(
    sender: &mut SendRequest<Empty<Bytes>>,
    method: Method,
    path: &str,
    host: &str,
) -> (StatusCode, String, String) {
    sender.ready().await.expect("connection ready");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
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

/// DNS rebinding: a page of `evil.example` whose name now resolves to 127.0.0.1 makes the
/// victim's browser send its requests here with `Host: evil.example`. The debug endpoints
/// refuse them even from loopback; probes and metrics stay open.
#[tokio::test]
async fn debug_endpoints_refuse_foreign_hosts_over_a_real_socket() {
    bounded(async {
        let admin = Admin::start().await;
        admin.publish(objects());
        let mut conn = admin.connect().await;
        for path in [
            "/debug/snapshot",
            "/debug/explain?url=http://myblog.test/blog",
        ] {
            let (status, _, body) = call_host(&mut conn, Method::GET, path, "evil.example").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert!(!body.contains("myblog"), "{path} leaked: {body}");
            let (status, _, _) =
                call_host(&mut conn, Method::GET, path, "evil.example:10254").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
        for host in [
            "localhost:10254",
            "127.0.0.1:10254",
            "[::1]:10254",
            "localhost",
        ] {
            let (status, _, body) =
                call_host(&mut conn, Method::GET, "/debug/snapshot", host).await;
            assert_eq!(status, StatusCode::OK, "{host}: {body}");
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            let (status, _, _) = call_host(&mut conn, Method::GET, path, "evil.example").await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        drop(conn);
        admin.stop().await;
    })
    .await;
}

/// The rule through `respond`, from a fabricated peer that is not loopback (a pod, the node,
/// another node): `/debug/*` wants the token, the probes and metrics do not.
#[test]
fn debug_endpoints_want_loopback_or_the_token() {
    let cert = TlsCert::self_signed(&["x"]).expect("certificate").key;
    let (_publisher, snapshot) = channel(Snapshot::empty(cert));
    let (_status, status) = watch::channel(BuildStatus::default());
    let mut state = AdminState {
        snapshot,
        status,
        metrics: Arc::new(Metrics::new()),
        node_addresses: Vec::new(),
        token: None,
    };
    let remote: std::net::SocketAddr = "10.1.2.3:40000".parse().expect("addr");
    let loopback: std::net::SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let get = |path: &str, authorization: Option<&str>| {
        let mut req = Request::get(path).header("host", "10.0.0.5:10254");
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        req.body(()).expect("request")
    };
    let status = |state: &AdminState, peer, req: &Request<()>| respond(state, peer, req).status();
    let forbidden = respond(&state, remote, &get("/debug/snapshot", None));
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let body = http_body_util::BodyExt::collect(forbidden.into_body());
    let body = futures_util::FutureExt::now_or_never(body)
        .expect("a full body")
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"forbidden\n", "no detail");
    assert_eq!(
        status(&state, loopback, &get("/debug/snapshot", None)),
        StatusCode::OK
    );
    for path in ["/healthz", "/metrics"] {
        assert_eq!(
            status(&state, remote, &get(path, None)),
            StatusCode::OK,
            "{path}"
        );
    }
    let readyz = status(&state, remote, &get("/readyz", None));
    assert_eq!(
        readyz,
        StatusCode::SERVICE_UNAVAILABLE,
        "open, not ready yet"
    );
    state.token = AdminToken::new(b"s3cret").map(Arc::new);
    let cases = [
        (None, StatusCode::FORBIDDEN),
        (Some("Bearer s3cret"), StatusCode::OK),
        (Some("Bearer wrong"), StatusCode::FORBIDDEN),
        (Some("Bearer s3cre"), StatusCode::FORBIDDEN),
    ];
    for (authorization, want) in cases {
        let req = get("/debug/explain?url=http://x/", authorization);
        let got = status(&state, remote, &req);
        // With the token the request reaches the handler (400 or 200 from explain).
        let got = if got == StatusCode::BAD_REQUEST {
            StatusCode::OK
        } else {
            got
        };
        assert_eq!(got, want, "{authorization:?}");
        assert_eq!(
            status(&state, remote, &get("/debug/snapshot", authorization)),
            want
        );
    }
}
