//! CORS (issue: ingress-nginx compatibility II, browsers) over real sockets, as
//! ingress-nginx's template answers: `enable-cors` alone sends `Access-Control-Allow-Origin:
//! *` with credentials `true` and the default methods, headers and max age on every answer;
//! with `cors-allow-origin` an allowed Origin is echoed and another gets no CORS field; a
//! preflight (OPTIONS from an allowed Origin) is answered 204 by Portico, before basic auth;
//! the fields are on Portico's own answers of the route too (a 401).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::Env;
use support::client::{Reply, h1};
use support::manifests::{class, endpoints, service};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn ing(name: &str, path: &str, annotations: &[(&str, &str)]) -> String {
    support::manifests::nginx_ingress(name, "a.example", path, "web", annotations)
}

async fn send(env: &Env, method: Method, path: &str, fields: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "a.example");
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    h1(env.http(), req.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn cors_answers_as_ingress_nginx() {
    timeout(LIMIT, cors()).await.expect("bounded");
}

async fn cors() {
    let web = support::Backend::start("web").await;
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("open.yaml", ing("open", "/", &[])),
        ("any.yaml", ing("any", "/any", &[("enable-cors", "true")])),
        (
            "list.yaml",
            ing(
                "list",
                "/list",
                &[
                    ("enable-cors", "true"),
                    ("cors-allow-origin", "https://app.example, https://*.tools.example"),
                    ("cors-allow-methods", "GET, POST"),
                    ("cors-allow-headers", "X-Team, Content-Type"),
                    ("cors-expose-headers", "X-Total"),
                    ("cors-allow-credentials", "false"),
                    ("cors-max-age", "600"),
                ],
            ),
        ),
        (
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: shop}\ntype: Opaque\nstringData: {auth: \"u:{PLAIN}p\"}\n".to_string(),
        ),
        (
            "auth.yaml",
            ing(
                "auth",
                "/auth",
                &[
                    ("enable-cors", "true"),
                    ("auth-type", "basic"),
                    ("auth-secret", "users"),
                ],
            ),
        ),
    ];
    let env = Env::start(&files).await;
    // enable-cors alone: `*` on every answer, with ingress-nginx's defaults.
    let reply = send(
        &env,
        Method::GET,
        "/any",
        &[("origin", "https://x.example")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.served_by(), "web");
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    assert_eq!(reply.header("access-control-allow-credentials"), "true");
    assert_eq!(
        reply.header("access-control-allow-methods"),
        "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
    );
    assert_eq!(reply.header("access-control-max-age"), "1728000");
    assert_eq!(reply.header("access-control-expose-headers"), "");
    // A preflight: 204 from Portico, the endpoint never asked.
    let preflight = [
        ("origin", "https://x.example"),
        ("access-control-request-method", "PUT"),
    ];
    let reply = send(&env, Method::OPTIONS, "/any", &preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.served_by(), "");
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    assert_eq!(reply.header("content-type"), "text/plain charset=UTF-8");
    // A list: an allowed Origin echoed, with the route's values.
    for origin in ["https://app.example", "https://ci.tools.example"] {
        let reply = send(&env, Method::GET, "/list", &[("origin", origin)]).await;
        assert_eq!(reply.header("access-control-allow-origin"), origin);
        assert_eq!(reply.header("access-control-allow-methods"), "GET, POST");
        assert_eq!(
            reply.header("access-control-allow-headers"),
            "X-Team, Content-Type"
        );
        assert_eq!(reply.header("access-control-expose-headers"), "X-Total");
        assert_eq!(reply.header("access-control-max-age"), "600");
        assert_eq!(reply.header("access-control-allow-credentials"), "");
    }
    // Another Origin, or none: no CORS field, and OPTIONS goes to the endpoint.
    for fields in [vec![("origin", "https://evil.example")], vec![]] {
        let reply = send(&env, Method::GET, "/list", &fields).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            "",
            "{fields:?}"
        );
        let reply = send(&env, Method::OPTIONS, "/list", &fields).await;
        assert_eq!(reply.served_by(), "web", "{fields:?}");
    }
    // Without enable-cors: nothing.
    let reply = send(&env, Method::GET, "/", &[("origin", "https://x.example")]).await;
    assert_eq!(reply.header("access-control-allow-origin"), "");
    // Basic auth: the preflight (which carries no credentials) is answered before it, and a
    // 401 carries the CORS fields too.
    let reply = send(&env, Method::OPTIONS, "/auth", &preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = send(
        &env,
        Method::GET,
        "/auth",
        &[("origin", "https://x.example")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    env.shutdown().await;
}

/// Within a location, nginx runs its rewrite-phase directives in template order: a denied
/// location renders only `return 503` (no preflight, no CORS fields), and a preflight's
/// `return 204` comes before `permanent-redirect`'s `return 301`.
#[tokio::test]
async fn a_preflight_is_answered_where_nginx_answers_it() {
    timeout(LIMIT, preflight_order()).await.expect("bounded");
}

async fn preflight_order() {
    let web = support::Backend::start("web").await;
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        (
            "moved.yaml",
            ing(
                "moved",
                "/moved",
                &[
                    ("enable-cors", "true"),
                    ("permanent-redirect", "https://elsewhere.example/"),
                ],
            ),
        ),
        (
            "denied.yaml",
            ing(
                "denied",
                "/denied",
                &[
                    ("enable-cors", "true"),
                    ("whitelist-source-range", "10.0.0.1, not-a-range"),
                ],
            ),
        ),
    ];
    let env = Env::start(&files).await;
    let origin = [("origin", "https://app.example")];
    let reply = send(&env, Method::OPTIONS, "/moved", &origin).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = send(&env, Method::GET, "/moved", &origin).await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{reply:?}");
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    for method in [Method::OPTIONS, Method::GET] {
        let reply = send(&env, method.clone(), "/denied", &origin).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {reply:?}"
        );
        assert_eq!(reply.header("access-control-allow-origin"), "", "{method}");
    }
    env.shutdown().await;
}
