//! ingress-nginx's `custom-http-errors` over real sockets (its docs and
//! test/e2e/annotations/customhttperrors.go, the template's `@custom_…` locations): a listed
//! status, from the endpoint or Portico's own, is answered by the `default-backend`
//! annotation's Service, else the Ingress default backend, asked for `/` with X-Code,
//! X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port and
//! X-Request-ID; the ConfigMap's list applies to every Ingress, an annotation replaces it, and
//! `disable-proxy-intercept-errors` turns it off.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::client::{Reply, h1};
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);
const N: &str = "nginx.ingress.kubernetes.io";

fn ing(name: &str, host: &str, svc: &str, annotations: &str) -> String {
    ingress_full(
        "shop",
        name,
        &[(host, vec![prefix("/", svc, 80)])],
        &[],
        annotations,
        None,
    )
}

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

async fn send(env: &Env, method: &str, host: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let body = if method == "POST" {
        Bytes::from_static(b"payload")
    } else {
        Bytes::new()
    };
    h1(env.http(), req.body(Full::new(body)).unwrap()).await
}

#[tokio::test]
async fn listed_errors_are_answered_by_the_default_backend() {
    timeout(LIMIT, custom_errors()).await.expect("bounded");
}

async fn custom_errors() {
    let web = Backend::start("web").await;
    let errors = Backend::start("errors").await;
    let catchall = Backend::start("catchall").await;
    let gone = support::dead_addr();
    let ingresses = [
        ing(
            "annotated",
            "e.example",
            "web",
            &format!("{N}/custom-http-errors: \"404, 503,500\", {N}/default-backend: errors"),
        ),
        // No endpoint: Portico's own 503 is intercepted too; no default-backend annotation,
        // so the Ingress default backend answers.
        ing(
            "empty",
            "empty.example",
            "nothing",
            &format!("{N}/custom-http-errors: \"503\""),
        ),
        // The ConfigMap's list (404), replaced by the annotation's (500 only), or turned off.
        ing("global", "g.example", "web", ""),
        ing(
            "own",
            "own.example",
            "web",
            &format!("{N}/custom-http-errors: \"500\""),
        ),
        ing(
            "nointercept",
            "off.example",
            "web",
            &format!("{N}/disable-proxy-intercept-errors: \"true\""),
        ),
        // The error backend cannot be reached: its own error (502), as nginx's error location.
        ing(
            "broken",
            "broken.example",
            "web",
            &format!("{N}/custom-http-errors: \"404\", {N}/default-backend: down"),
        ),
        ingress_full("shop", "catchall", &[], &[], "", Some(("catchall", 80))),
    ];
    let services = [
        service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        service("shop", "errors", 80) + &endpoints("shop", "errors", &[errors.addr], &[]),
        service("shop", "catchall", 80) + &endpoints("shop", "catchall", &[catchall.addr], &[]),
        service("shop", "nothing", 80),
        service("shop", "down", 80) + &endpoints("shop", "down", &[gone], &[]),
    ];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services.join("---\n")),
        ("ing.yaml", ingresses.join("---\n")),
        ("configmap.yaml", configmap("custom-http-errors: \"404\"")),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;

    // A listed status from the endpoint: the default-backend annotation's Service answers,
    // asked for / with the fields ingress-nginx sends; its status is the response's.
    let reply = send(
        &env,
        "GET",
        "e.example",
        "/shop/item?status=404&x=1",
        &[("accept", "application/json"), ("x-request-id", "req-1")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.served_by(), "errors");
    let v = reply.json();
    assert_eq!(v["path"], "/");
    assert_eq!(v["method"], "GET");
    let h = &v["headers"];
    assert_eq!(h["x-code"], "404");
    assert_eq!(h["x-format"], "application/json");
    assert_eq!(h["x-original-uri"], "/shop/item?status=404&x=1");
    assert_eq!(h["x-namespace"], "shop");
    assert_eq!(h["x-ingress-name"], "annotated");
    assert_eq!(h["x-service-name"], "web");
    assert_eq!(h["x-service-port"], "80");
    assert_eq!(h["x-request-id"], "req-1");
    assert_eq!(h["host"], "e.example");
    // The method is kept (a named location), the body is not sent again.
    let reply = send(&env, "POST", "e.example", "/?status=500", &[]).await;
    assert_eq!(reply.served_by(), "errors");
    let v = reply.json();
    assert_eq!(
        (v["method"].as_str(), v["headers"]["x-code"].as_str()),
        (Some("POST"), Some("500"))
    );
    assert_eq!(v["body_length"], 0, "{v}");
    // Without an Accept, no X-Format; a generated request id is the one the endpoint saw.
    let reply = send(&env, "GET", "e.example", "/?status=503", &[]).await;
    let v = reply.json();
    assert!(v["headers"].get("x-format").is_none(), "{v}");
    assert!(!v["headers"]["x-request-id"].as_str().unwrap().is_empty());
    // An unlisted status passes.
    let reply = send(&env, "GET", "e.example", "/?status=502", &[]).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::BAD_GATEWAY, "web")
    );
    let reply = send(&env, "GET", "e.example", "/fine", &[]).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::OK, "web")
    );

    // Portico's own 503 (no endpoint), answered by the Ingress default backend.
    let reply = send(&env, "GET", "empty.example", "/a", &[]).await;
    assert_eq!(reply.served_by(), "catchall");
    let v = reply.json();
    assert_eq!(v["headers"]["x-code"], "503");
    assert_eq!(v["headers"]["x-service-name"], "nothing");

    // The ConfigMap's list; the annotation replaces it; disable-proxy-intercept-errors.
    let reply = send(&env, "GET", "g.example", "/?status=404", &[]).await;
    assert_eq!(reply.served_by(), "catchall");
    assert_eq!(reply.json()["headers"]["x-code"], "404");
    let reply = send(&env, "GET", "own.example", "/?status=404", &[]).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::NOT_FOUND, "web")
    );
    let reply = send(&env, "GET", "own.example", "/?status=500", &[]).await;
    assert_eq!(reply.served_by(), "catchall");
    let reply = send(&env, "GET", "off.example", "/?status=404", &[]).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::NOT_FOUND, "web")
    );

    // The error backend down: 502.
    let reply = send(&env, "GET", "broken.example", "/?status=404", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    env.shutdown().await;
}

/// Without any default backend the response stands (and a bad list is a warning).
#[tokio::test]
async fn without_a_default_backend_the_error_stands() {
    timeout(LIMIT, no_default()).await.expect("bounded");
}

async fn no_default() {
    let web = Backend::start("web").await;
    let ingresses = [
        ing(
            "plain",
            "p.example",
            "web",
            &format!("{N}/custom-http-errors: \"404\""),
        ),
        ing(
            "bad",
            "b.example",
            "web",
            &format!("{N}/custom-http-errors: \"404,abc\""),
        ),
    ];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    let env = Env::start(&files).await;
    let reply = send(&env, "GET", "p.example", "/?status=404", &[]).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::NOT_FOUND, "web")
    );
    let reply = send(&env, "GET", "b.example", "/?status=404", &[]).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::NOT_FOUND, "web")
    );
    let dump = h1(
        env.admin(),
        support::client::get("localhost", "/debug/snapshot"),
    )
    .await
    .json();
    let warned =
        dump["diagnostics"].as_array().unwrap().iter().any(|d| {
            d["object"]["name"] == "bad" && d["reason"].as_str().unwrap().contains("\"abc\"")
        });
    assert!(warned, "{:#}", dump["diagnostics"]);
    env.shutdown().await;
}
