//! ingress-nginx's controller ConfigMap (`--configmap`): global settings with ingress-nginx's
//! defaults (proxy-body-size 1m without any ConfigMap), annotations overriding them, and a
//! change applied without restart, from a manifests directory and from the API server.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::client::{get, h1};
use support::fake_api::FakeApi;
use support::kube::{KubeEnv, ingress as kube_ingress};
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret};
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);
const N: &str = "nginx.ingress.kubernetes.io";

fn post(host: &str, size: usize) -> Request<Full<Bytes>> {
    Request::post("/upload")
        .header("host", host)
        .body(Full::new(Bytes::from(vec![b'x'; size])))
        .unwrap()
}

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

fn files(backend: &Backend) -> Vec<(&'static str, String)> {
    let (secret, _) = tls_secret("shop", "cert", &["tls.example"]);
    let plain = ingress_full(
        "shop",
        "plain",
        &[("plain.example", vec![prefix("/", "web", 80)])],
        &[],
        "",
        None,
    );
    let own = ingress_full(
        "shop",
        "own",
        &[("own.example", vec![prefix("/", "web", 80)])],
        &[],
        &format!("{N}/proxy-body-size: 8k"),
        None,
    );
    let tls = ingress_full(
        "shop",
        "tls",
        &[("tls.example", vec![prefix("/", "web", 80)])],
        &[(&["tls.example"], "cert")],
        "",
        None,
    );
    vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("secret.yaml", secret),
        ("ing.yaml", [plain, own, tls].join("---\n")),
    ]
}

#[tokio::test]
async fn without_a_configmap_the_body_limit_is_ingress_nginx_s_1m() {
    timeout(LIMIT, default_limit()).await.expect("bounded");
}

async fn default_limit() {
    let backend = Backend::start("web").await;
    let env = Env::start(&files(&backend)).await;
    let reply = h1(env.http(), post("plain.example", 1 << 20)).await;
    assert_eq!(reply.status, StatusCode::OK, "exactly 1m passes");
    let reply = h1(env.http(), post("plain.example", (1 << 20) + 1)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.served_by(), "");
    let reply = h1(env.http(), get("tls.example", "/a")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    env.shutdown().await;
}

#[tokio::test]
async fn the_configmap_sets_the_defaults_and_a_change_applies_without_restart() {
    timeout(LIMIT, from_manifests()).await.expect("bounded");
}

async fn from_manifests() {
    let backend = Backend::start("web").await;
    let mut all = files(&backend);
    all.push((
        "configmap.yaml",
        configmap("proxy-body-size: 2k, http-redirect-code: \"301\", no-such-key: x"),
    ));
    let env = Env::start_with(&all, &["--configmap", "ingress/portico"]).await;
    let reply = h1(env.http(), post("plain.example", 3000)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "the ConfigMap's 2k"
    );
    let reply = h1(env.http(), post("own.example", 3000)).await;
    assert_eq!(reply.status, StatusCode::OK, "the annotation's 8k wins");
    let reply = h1(env.http(), get("tls.example", "/a")).await;
    assert_eq!(
        reply.status,
        StatusCode::MOVED_PERMANENTLY,
        "http-redirect-code"
    );
    // The unknown key is a warning on the ConfigMap.
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let warned = dump["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["object"]["kind"] == "ConfigMap" && d["field"] == "data.no-such-key");
    assert!(warned, "{:#}", dump["diagnostics"]);
    // A change applies at once.
    env.apply("configmap.yaml", &configmap("proxy-body-size: \"0\""))
        .await;
    let reply = h1(env.http(), post("plain.example", 3 << 20)).await;
    assert_eq!(reply.status, StatusCode::OK, "no limit");
    let reply = h1(env.http(), get("tls.example", "/a")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT, "308 again");
    // Gone: ingress-nginx's defaults, with a warning.
    env.remove("configmap.yaml").await;
    let reply = h1(env.http(), post("plain.example", (1 << 20) + 1)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    env.shutdown().await;
}

#[tokio::test]
async fn the_configmap_is_watched_in_its_namespace_in_the_cluster() {
    timeout(LIMIT, from_the_api()).await.expect("bounded");
}

fn body_limit(s: &portico::snapshot::Snapshot) -> Option<Option<u64>> {
    let route = s.routes.route("a.example", "/")?;
    Some(route.policy.as_ref()?.body_limit)
}

async fn from_the_api() {
    let api = FakeApi::start().await;
    let backend = Backend::start("web").await;
    api.apply_yaml(&class());
    api.apply_yaml(&service("shop", "web", 80));
    api.apply_yaml(&endpoints("shop", "web", &[backend.addr], &[]));
    api.apply(kube_ingress("shop", "a", "portico", "a.example", "web"));
    let cm = |name: &str, size: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "ingress"},
               "data": {"proxy-body-size": size}})
    };
    api.apply(cm("portico", "2k"));
    api.apply(cm("other", "5k"));
    let env = KubeEnv::start(&api, &["--configmap", "ingress/portico"]).await;
    env.wait_for("the ConfigMap's limit", |s| {
        body_limit(s) == Some(Some(2048))
    })
    .await;
    let reply = h1(env.http(), post("a.example", 3000)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Another ConfigMap changes nothing; ours applies without restart.
    api.apply(cm("other", "0"));
    api.apply(cm("portico", "16k"));
    env.wait_for("the new limit", |s| body_limit(s) == Some(Some(16 << 10)))
        .await;
    let reply = h1(env.http(), post("a.example", 3000)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Watched in its namespace only (what the Role allows), never cluster-wide.
    let watches = api.requests_to("GET", "/namespaces/ingress/configmaps");
    assert!(!watches.is_empty());
    let everywhere = api.requests_to("GET", "/api/v1/configmaps");
    assert!(everywhere.is_empty(), "{everywhere:?}");
    env.shutdown().await;
}

/// `no-tls-redirect-locations` and `no-auth-locations` (both `/.well-known/acme-challenge` by
/// default, as ingress-nginx): an ACME HTTP-01 solver's path is never redirected to HTTPS
/// and asks no authentication (here the global one, whose service is unreachable: asked, it
/// would answer 500), so certificate issuance works; set empty, they apply again.
#[tokio::test]
async fn acme_challenges_are_not_redirected_or_authenticated() {
    timeout(LIMIT, acme()).await.expect("bounded");
}

async fn acme() {
    let backend = Backend::start("web").await;
    let (secret, _) = tls_secret("shop", "cert", &["s.example"]);
    let solver_path = "/.well-known/acme-challenge/TOKEN123";
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("secret.yaml", secret),
        (
            "site.yaml",
            ingress_full(
                "shop",
                "site",
                &[("s.example", vec![prefix("/", "web", 80)])],
                &[(&["s.example"], "cert")],
                "",
                None,
            ),
        ),
        (
            "solver.yaml",
            ingress_full(
                "shop",
                "solver",
                &[("s.example", vec![prefix(solver_path, "web", 80)])],
                &[],
                "",
                None,
            ),
        ),
        (
            "configmap.yaml",
            configmap("global-auth-url: \"http://127.0.0.1:1/check\""),
        ),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    let reply = h1(env.http(), get("s.example", solver_path)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.served_by(), "web");
    let reply = h1(env.http(), get("s.example", "/")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    env.apply(
        "configmap.yaml",
        &configmap(
            "global-auth-url: \"http://127.0.0.1:1/check\", no-tls-redirect-locations: \"\", no-auth-locations: \"\"",
        ),
    )
    .await;
    let reply = h1(env.http(), get("s.example", solver_path)).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT, "{reply:?}");
    env.apply(
        "configmap.yaml",
        &configmap(
            "global-auth-url: \"http://127.0.0.1:1/check\", no-auth-locations: \"\", ssl-redirect: \"false\"",
        ),
    )
    .await;
    let reply = h1(env.http(), get("s.example", solver_path)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    env.shutdown().await;
}

/// `annotations-risk-level`: an annotation ingress-nginx rates above the level (here
/// `whitelist-source-range`, Medium, under `Low`) fails closed: its Ingress's paths answer
/// 503 with an error, rather than vanish and let `/admin` fall to the open Ingress's `/`.
/// Raised to the level, the annotation applies (403 for a client outside the list).
#[tokio::test]
async fn annotations_above_the_risk_level_fail_closed() {
    timeout(LIMIT, risk_level()).await.expect("bounded");
}

async fn risk_level() {
    let backend = Backend::start("web").await;
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        (
            "open.yaml",
            ingress_full(
                "shop",
                "open",
                &[("r.example", vec![prefix("/", "web", 80)])],
                &[],
                "",
                None,
            ),
        ),
        (
            "guarded.yaml",
            ingress_full(
                "shop",
                "guarded",
                &[("r.example", vec![prefix("/admin", "web", 80)])],
                &[],
                &format!("{N}/whitelist-source-range: \"10.0.0.0/8\""),
                None,
            ),
        ),
        ("configmap.yaml", configmap("annotations-risk-level: low")),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    let reply = h1(env.http(), get("r.example", "/admin")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.served_by(), "");
    let reply = h1(env.http(), get("r.example", "/")).await;
    assert_eq!(reply.served_by(), "web", "the other Ingress keeps serving");
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let said = dump["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["object"]["name"] == "guarded"
            && d["severity"] == "error"
            && d["field"] == format!("metadata.annotations[{N}/whitelist-source-range]")
    });
    assert!(said, "{:#}", dump["diagnostics"]);
    env.apply(
        "configmap.yaml",
        &configmap("annotations-risk-level: Medium"),
    )
    .await;
    let reply = h1(env.http(), get("r.example", "/admin")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    env.shutdown().await;
}
