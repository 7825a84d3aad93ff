//! `configuration-snippet` and `server-snippet` over real sockets: honoured only when the
//! ConfigMap allows snippets (`allow-snippet-annotations` and `annotations-risk-level:
//! Critical`, as ingress-nginx 1.12+), as typed header operations; any other directive leaves
//! the Ingress out with an error while the rest of the host keeps serving.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::client::{get, h1};
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);
const N: &str = "nginx.ingress.kubernetes.io";

fn allowing(allowed: bool) -> String {
    let data = if allowed {
        "allow-snippet-annotations: \"true\", annotations-risk-level: Critical"
    } else {
        "allow-snippet-annotations: \"true\""
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\n  namespace: ingress\ndata: {{{data}}}\n"
    )
}

fn snippet_ingress(name: &str, path: &str, snippet: &str) -> String {
    ingress_full(
        "shop",
        name,
        &[("s.example", vec![prefix(path, "web", 80)])],
        &[],
        &format!("{N}/configuration-snippet: {snippet:?}"),
        None,
    )
}

async fn env(allowed: bool, ingresses: &[String], backend: &Backend) -> Env {
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("cm.yaml", allowing(allowed)),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    Env::start_with(&files, &["--configmap", "ingress/portico"]).await
}

fn plain() -> String {
    ingress_full(
        "shop",
        "plain",
        &[("s.example", vec![prefix("/plain", "web", 80)])],
        &[],
        "",
        None,
    )
}

#[tokio::test]
async fn header_snippets_become_typed_operations() {
    timeout(LIMIT, honoured()).await.expect("bounded");
}

async fn honoured() {
    let backend = Backend::start("web").await;
    let snippet = "more_set_headers 'X-Frame-Options: DENY';\n\
                   more_clear_headers 'X-Echo-*';\n\
                   add_header X-Seen-Host $host;\n\
                   add_header X-On-Errors yes always;\n\
                   proxy_set_header X-Forwarded-Proto https;\n\
                   proxy_set_header X-Strip '';\n\
                   proxy_set_header X-Uri $request_uri;\n\
                   proxy_set_header X-Real-IP $remote_addr;\n\
                   proxy_set_header X-Team $http_x_team;\n\
                   add_header X-Echoed-Agent $http_user_agent;";
    let env = env(
        true,
        &[snippet_ingress("snip", "/", snippet), plain()],
        &backend,
    )
    .await;
    let mut req = get("s.example:8080", "/a?b=1");
    req.headers_mut()
        .insert("x-strip", "client".parse().unwrap());
    req.headers_mut()
        .insert("x-forwarded-proto", "forged".parse().unwrap());
    req.headers_mut().insert("x-team", "blue".parse().unwrap());
    req.headers_mut()
        .insert("user-agent", "probe/1".parse().unwrap());
    req.headers_mut()
        .insert("x-real-ip", "6.6.6.6".parse().unwrap());
    let reply = h1(env.http(), req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-frame-options"), "DENY");
    assert_eq!(reply.header("x-echo-service"), "", "cleared by prefix");
    assert_eq!(reply.header("x-seen-host"), "s.example");
    assert_eq!(reply.header("x-on-errors"), "yes");
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-forwarded-proto"], "https", "replaces Portico's own");
    assert!(
        seen.get("x-strip").is_none(),
        "an empty value removes it: {seen}"
    );
    assert_eq!(seen["x-uri"], "/a?b=1");
    // `$remote_addr` is the client address (not the client's X-Real-IP), `$http_NAME` the
    // request's field of that name.
    assert_eq!(seen["x-real-ip"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-team"], "blue");
    assert_eq!(reply.header("x-echoed-agent"), "probe/1");
    // The other Ingress of the host has none of it.
    let reply = h1(env.http(), get("s.example", "/plain")).await;
    assert_eq!(reply.header("x-frame-options"), "");
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "http");
    env.shutdown().await;
}

#[tokio::test]
async fn snippets_are_refused_unless_the_configmap_allows_critical_annotations() {
    timeout(LIMIT, refused()).await.expect("bounded");
}

async fn refused() {
    let backend = Backend::start("web").await;
    let ingresses = [
        snippet_ingress("snip", "/", "more_set_headers 'X-A: b';"),
        plain(),
    ];
    let env = env(false, &ingresses, &backend).await;
    let reply = h1(env.http(), get("s.example", "/a")).await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "the Ingress is left out"
    );
    let reply = h1(env.http(), get("s.example", "/plain")).await;
    assert_eq!(reply.served_by(), "web", "the rest of the host serves");
    let errors = errors_of(&env, "snip").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("annotations-risk-level"), "{errors:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_directive_portico_does_not_run_leaves_the_ingress_out() {
    timeout(LIMIT, other_directive()).await.expect("bounded");
}

async fn other_directive() {
    let backend = Backend::start("web").await;
    let ingresses = [
        snippet_ingress(
            "snip",
            "/",
            "more_set_headers 'X-A: b';\nrewrite ^/(.*) /x/$1 break;",
        ),
        plain(),
    ];
    let env = env(true, &ingresses, &backend).await;
    let reply = h1(env.http(), get("s.example", "/a")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = h1(env.http(), get("s.example", "/plain")).await;
    assert_eq!(reply.served_by(), "web");
    let errors = errors_of(&env, "snip").await;
    assert!(
        errors.iter().any(|e| e.contains("\\\"rewrite\\\"")),
        "{errors:?}"
    );
    env.shutdown().await;
}

/// `server-snippet` is the server's, as in ingress-nginx: the host's oldest Ingress with one
/// sets it for every path of the host, from every Ingress (a newer Ingress's is ignored with a
/// warning); its more_set_headers run on every path, its add_header only where the path's own
/// configuration-snippet has none, and its proxy_set_header never (every ingress-nginx
/// location sets proxy_set_header, so nginx takes none of the server's).
#[tokio::test]
async fn a_server_snippet_is_the_whole_hosts() {
    timeout(LIMIT, server_level()).await.expect("bounded");
}

async fn server_level() {
    let backend = Backend::start("web").await;
    let older = ingress_full(
        "shop",
        "a-older",
        &[("s.example", vec![prefix("/a", "web", 80)])],
        &[],
        &format!(
            "{N}/server-snippet: {:?}",
            "more_set_headers 'X-Server: a';\nadd_header X-Server-Added yes;\nproxy_set_header X-From-Server a;"
        ),
        Some(("web", 80)),
    );
    let newer = ingress_full(
        "shop",
        "b-newer",
        &[("s.example", vec![prefix("/b", "web", 80)])],
        &[],
        &format!(
            "{N}/server-snippet: {:?}, {N}/configuration-snippet: {:?}",
            "more_set_headers 'X-Server: b';", "add_header X-Own b;"
        ),
        None,
    );
    // t.example belongs to shop (its oldest rule); another namespace's server-snippet for it
    // would change shop's paths: ignored, with a warning.
    let owned = ingress_full(
        "shop",
        "t-owned",
        &[("t.example", vec![prefix("/", "web", 80)])],
        &[],
        "",
        None,
    );
    let foreign = ingress_full(
        "zzz",
        "foreign",
        &[("t.example", vec![prefix("/z", "web", 80)])],
        &[],
        &format!(
            "{N}/server-snippet: {:?}",
            "more_set_headers 'X-Foreign: yes';"
        ),
        None,
    );
    let env = env(true, &[older, newer, plain(), owned, foreign], &backend).await;
    let reply = h1(env.http(), get("t.example", "/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("x-foreign"),
        "",
        "another namespace's server-snippet"
    );
    // "/elsewhere" is no rule's: the host's default backend (its oldest Ingress's) answers it,
    // in the server, so the server's snippet reaches it too.
    for path in ["/a", "/plain", "/elsewhere"] {
        let reply = h1(env.http(), get("s.example", path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.header("x-server"), "a", "{path}");
        assert_eq!(reply.header("x-server-added"), "yes", "{path}");
        let seen = &reply.json()["headers"];
        assert!(seen.get("x-from-server").is_none(), "{path}: {seen}");
    }
    let reply = h1(env.http(), get("s.example", "/b")).await;
    assert_eq!(
        reply.header("x-server"),
        "a",
        "the older Ingress's server-snippet"
    );
    assert_eq!(reply.header("x-own"), "b");
    assert_eq!(
        reply.header("x-server-added"),
        "",
        "a location with an add_header of its own inherits none"
    );
    let warnings = warnings_of(&env).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("shop/b-newer") && w.contains("server-snippet of shop/a-older")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("shop/a-older") && w.contains("proxy_set_header never")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("zzz/foreign") && w.contains("belongs to the namespace shop")),
        "{warnings:?}"
    );
    env.shutdown().await;
}

/// The snapshot's diagnostics of this severity.
async fn diagnostics(env: &Env, severity: &str) -> Vec<serde_json::Value> {
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let all = dump["diagnostics"].as_array().unwrap().iter();
    all.filter(|d| d["severity"] == severity).cloned().collect()
}

/// Every warning, as `namespace/name: field: reason`.
async fn warnings_of(env: &Env) -> Vec<String> {
    let warnings = diagnostics(env, "warning").await;
    let line = |d: &serde_json::Value| {
        let (o, text) = (&d["object"], |v: &serde_json::Value| {
            v.as_str().unwrap_or("").to_string()
        });
        format!(
            "{}/{}: {}: {}",
            text(&o["namespace"]),
            text(&o["name"]),
            d["field"],
            d["reason"]
        )
    };
    warnings.iter().map(line).collect()
}

async fn errors_of(env: &Env, ingress: &str) -> Vec<String> {
    let errors = diagnostics(env, "error").await;
    let ours = errors.iter().filter(|d| d["object"]["name"] == ingress);
    ours.map(|d| format!("{}: {}", d["field"], d["reason"]))
        .collect()
}
