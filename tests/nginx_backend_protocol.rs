//! `backend-protocol` (issue: backends, §1): HTTP is served; HTTPS is spoken over TLS (a
//! clear-text endpoint is a 502, never a request in clear text; `nginx_backend_tls` has the
//! rest); GRPC is HTTP/2 in clear text (the echo backend speaks h2c too; `grpc_upstream` has
//! the rest), GRPCS HTTP/2 over TLS; FCGI is refused for good; an unknown value is HTTP with a
//! warning, as ingress-nginx.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::Env;
use support::client::{self, get};
use support::manifests::{class, endpoints, nginx_ingress, service};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn protocols_portico_cannot_speak_fail_closed() {
    timeout(LIMIT, protocols()).await.expect("bounded");
}

async fn protocols() {
    let web = support::Backend::start("web").await;
    let cases = [
        ("plain", "/plain", Some("http"), StatusCode::OK),
        ("unknown", "/unknown", Some("AJP"), StatusCode::OK),
        ("tls", "/tls", Some("HTTPS"), StatusCode::BAD_GATEWAY),
        ("grpc", "/grpc", Some("grpc"), StatusCode::OK),
        (
            "fcgi",
            "/fcgi",
            Some("FCGI"),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        ("grpcs", "/grpcs", Some("GRPCS"), StatusCode::BAD_GATEWAY),
        ("legacy", "/legacy", None, StatusCode::BAD_GATEWAY),
    ];
    let mut ingresses = String::new();
    for (name, path, value, _) in cases {
        let annotations: Vec<(&str, &str)> = match value {
            Some(v) => vec![("backend-protocol", v)],
            None => vec![("secure-backends", "true")],
        };
        ingresses.push_str(&nginx_ingress(name, "a.example", path, "web", &annotations));
        ingresses.push_str("---\n");
    }
    let files = [
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("ing.yaml", ingresses),
    ];
    let env = Env::start(&files).await;
    for (name, path, _, want) in cases {
        let reply = client::h1(env.http(), get("a.example", path)).await;
        assert_eq!(reply.status, want, "{name}: {reply:?}");
        if want != StatusCode::OK {
            assert_eq!(reply.served_by(), "", "{name}: forwarded");
        }
    }
    env.shutdown().await;
}
