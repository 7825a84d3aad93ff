//! TLS to endpoints (issue: backends, §1–2) over real sockets: `backend-protocol: HTTPS`
//! (`secure-backends`, `AUTO_HTTP`, a Service port's `appProtocol`) and the `proxy-ssl-*`
//! annotations, against the echo backend speaking TLS (it reports the SNI, ALPN, version,
//! resumption and client certificate it saw). A connection made under one route's TLS
//! settings never carries another route's request: not an unverified one for a route that
//! verifies, not one showing a client certificate for a route that has none.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::Env;
use support::client::{self, Reply, get};
use support::manifests::{
    class, controller_configmap, endpoints, nginx_ingress, opaque_secret, service,
};
use support::pki::{ca, cert};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);

/// The echo backend speaking TLS with this certificate, until dropped.
struct TlsBackend {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn tls_backend(name: &str, cert_pem: &str, key_pem: &str) -> TlsBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = portico::echo::tls_config(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(portico::echo::serve_tls(
        listener,
        Arc::from(name),
        config,
        async move {
            let _ = rx.await;
        },
    ));
    TlsBackend { addr, _stop: tx }
}

async fn fetch(env: &Env, path: &str) -> Reply {
    client::h1(env.http(), get("a.example", path)).await
}

fn ingress(name: &str, path: &str, annotations: &[(&str, &str)]) -> String {
    nginx_ingress(name, "a.example", path, "web", annotations) + "---\n"
}

#[tokio::test]
async fn https_backends_are_spoken_to_over_tls() {
    timeout(LIMIT, spoken_over_tls()).await.expect("bounded");
}

async fn spoken_over_tls() {
    let backend_ca = ca("backend CA");
    let stranger = ca("stranger CA");
    let client_ca = ca("client CA");
    let (server_pem, server_key) = cert(&backend_ca, "web", &["web.shop.svc", "web.internal"]);
    let (client_pem, client_key) = cert(&client_ca, "portico-client", &["portico-client"]);
    let web = tls_backend("web-tls", &server_pem, &server_key).await;
    let secrets = [
        opaque_secret("shop", "backend-ca", &[("ca.crt", &backend_ca.pem)]),
        opaque_secret("shop", "stranger-ca", &[("ca.crt", &stranger.pem)]),
        opaque_secret(
            "shop",
            "client",
            &[
                ("ca.crt", &backend_ca.pem),
                ("tls.crt", &client_pem),
                ("tls.key", &client_key),
            ],
        ),
        opaque_secret("other", "backend-ca", &[("ca.crt", &backend_ca.pem)]),
    ]
    .join("---\n");
    let ingresses = [
        ingress("plain", "/plain", &[("backend-protocol", "https")]),
        ingress("legacy", "/legacy", &[("secure-backends", "true")]),
        ingress("clear", "/clear", &[("backend-protocol", "HTTP")]),
        ingress(
            "verified",
            "/verified",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/backend-ca"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-server-name", "on"),
            ],
        ),
        ingress(
            "named",
            "/named",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "backend-ca"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "web.internal"),
                ("proxy-ssl-server-name", "on"),
                ("proxy-ssl-protocols", "TLSv1.2 TLSv1.3"),
            ],
        ),
        ingress(
            "wrong-name",
            "/wrong-name",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/backend-ca"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "api.shop.svc"),
            ],
        ),
        ingress(
            "wrong-ca",
            "/wrong-ca",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/stranger-ca"),
                ("proxy-ssl-verify", "on"),
            ],
        ),
        ingress(
            "identity",
            "/identity",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/client"),
            ],
        ),
        ingress(
            "no-secret",
            "/no-secret",
            &[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "on")],
        ),
        ingress(
            "missing",
            "/missing",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/nothing"),
            ],
        ),
        ingress(
            "foreign",
            "/foreign",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "other/backend-ca"),
            ],
        ),
    ]
    .concat();
    let files = [
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("secrets.yaml", secrets),
        ("ing.yaml", ingresses),
    ];
    let env = Env::start(&files).await;

    // HTTPS without a Secret: TLS, nothing verified, no SNI (nginx's proxy_ssl_server_name
    // off), ALPN http/1.1, TLS 1.3, no client certificate.
    for path in ["/plain", "/legacy"] {
        let reply = fetch(&env, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.served_by(), "web-tls");
        assert_eq!(reply.header("x-echo-tls-sni"), "none", "{path}");
        assert_eq!(reply.header("x-echo-tls-alpn"), "http/1.1", "{path}");
        assert_eq!(reply.header("x-echo-tls-version"), "TLSv1_3", "{path}");
        assert_eq!(reply.header("x-echo-tls-client"), "none", "{path}");
    }
    // Clear text to a TLS endpoint: a bad gateway, not a hang.
    let reply = fetch(&env, "/clear").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");

    // Verified against ca.crt for <service>.<namespace>.svc, sent as SNI; the default
    // protocols with a CA are ingress-nginx's (TLSv1 TLSv1.1 TLSv1.2: TLS 1.2 here).
    let reply = fetch(&env, "/verified").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("x-echo-tls-sni"), "web.shop.svc");
    assert_eq!(reply.header("x-echo-tls-version"), "TLSv1_2");
    // proxy-ssl-name: verified and sent as SNI; protocols as asked.
    let reply = fetch(&env, "/named").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("x-echo-tls-sni"), "web.internal");
    assert_eq!(reply.header("x-echo-tls-version"), "TLSv1_3");

    // A certificate for another name, or from another CA: 502, never forwarded, even right
    // after unverified routes left connections to the same endpoint in the pool.
    for _ in 0..3 {
        assert_eq!(fetch(&env, "/plain").await.status, StatusCode::OK);
    }
    for path in ["/wrong-name", "/wrong-ca"] {
        let reply = fetch(&env, path).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}: {reply:?}");
        assert_eq!(reply.served_by(), "", "{path}");
    }

    // tls.crt/tls.key: shown to the endpoint; and a connection that showed it never carries
    // a request of a route without it.
    let reply = fetch(&env, "/identity").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("x-echo-tls-client"), "CN=portico-client");
    for _ in 0..3 {
        let reply = fetch(&env, "/plain").await;
        assert_eq!(reply.header("x-echo-tls-client"), "none", "{reply:?}");
        let reply = fetch(&env, "/identity").await;
        assert_eq!(reply.header("x-echo-tls-client"), "CN=portico-client");
    }

    // Fail closed: verification without a CA, a missing Secret, another namespace's Secret.
    for path in ["/no-secret", "/missing", "/foreign"] {
        let reply = fetch(&env, path).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {reply:?}"
        );
        assert_eq!(reply.served_by(), "", "{path}");
    }
    let errors = errors(&env).await;
    for (name, word) in [
        ("no-secret", "proxy-ssl-verify"),
        ("missing", "does not exist"),
        ("foreign", "another namespace"),
    ] {
        assert!(
            errors.iter().any(|e| e.contains(name) && e.contains(word)),
            "{name}: {errors:?}"
        );
    }
    env.shutdown().await;
}

/// The error diagnostics of the snapshot, as "name field reason".
async fn errors(env: &Env) -> Vec<String> {
    let debug = client::h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    debug["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| format!("{} {} {}", d["object"]["name"], d["field"], d["reason"]))
        .collect()
}

#[tokio::test]
async fn the_scheme_follows_the_client_or_the_service_port() {
    timeout(LIMIT, scheme_follows()).await.expect("bounded");
}

async fn scheme_follows() {
    let backend_ca = ca("backend CA");
    let (server_pem, server_key) = cert(&backend_ca, "web", &["web.shop.svc"]);
    let web = tls_backend("web-tls", &server_pem, &server_key).await;
    let canary = tls_backend("canary-tls", &server_pem, &server_key).await;
    let clear = support::Backend::start("h2c").await;
    let app_protocol = |name: &str, app: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{port: 80, appProtocol: {app:?}}}]\n---\n"
        ) + &endpoints("shop", name, &[web.addr], &[])
            + "---\n"
    };
    let services = service("shop", "web", 80)
        + &endpoints("shop", "web", &[web.addr], &[])
        + "---\n"
        + &app_protocol("tls-port", "https")
        + &app_protocol("wss-port", "kubernetes.io/wss")
        + &service("shop", "canary", 80)
        + &endpoints("shop", "canary", &[canary.addr], &[])
        + "---\n"
        + "apiVersion: v1\nkind: Service\nmetadata: {name: h2c-port, namespace: shop}\nspec:\n  ports: [{port: 80, appProtocol: kubernetes.io/h2c}]\n---\n"
        + &endpoints("shop", "h2c-port", &[clear.addr], &[]);
    let mut ingresses = ingress("auto", "/auto", &[("backend-protocol", "AUTO_HTTP")]);
    // A canary is spoken to as its primary: TLS, though it says nothing of the protocol.
    ingresses.push_str(&ingress(
        "primary",
        "/primary",
        &[("backend-protocol", "HTTPS")],
    ));
    ingresses.push_str(&nginx_ingress(
        "primary-canary",
        "a.example",
        "/primary",
        "canary",
        &[("canary", "true"), ("canary-weight", "100")],
    ));
    ingresses.push_str("---\n");
    for (name, service, annotations) in [
        ("by-port", "tls-port", &[][..]),
        ("by-wss", "wss-port", &[][..]),
        ("explicit", "tls-port", &[("backend-protocol", "HTTP")][..]),
        ("by-h2c", "h2c-port", &[][..]),
    ] {
        ingresses.push_str(&nginx_ingress(
            name,
            "a.example",
            &format!("/{name}"),
            service,
            annotations,
        ));
        ingresses.push_str("---\n");
    }
    let files = [
        ("class.yaml", class()),
        ("web.yaml", services),
        ("ing.yaml", ingresses),
    ];
    let env = Env::start(&files).await;
    // AUTO_HTTP: clear text for a plain-HTTP client (a TLS endpoint refuses it), TLS for an
    // HTTPS client.
    assert_eq!(fetch(&env, "/auto").await.status, StatusCode::BAD_GATEWAY);
    let (reply, _) = client::https(
        env.https(),
        Some("a.example"),
        &["http/1.1"],
        "a.example",
        "/auto",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("x-echo-tls-version"), "TLSv1_3");
    let (reply, _) = client::https(
        env.https(),
        Some("a.example"),
        &["h2"],
        "a.example",
        "/auto",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.header("x-echo-tls-alpn"),
        "http/1.1",
        "HTTP/1.1 to the endpoint"
    );
    // appProtocol https and kubernetes.io/wss choose TLS; an explicit backend-protocol wins.
    for path in ["/by-port", "/by-wss"] {
        let reply = fetch(&env, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.served_by(), "web-tls");
    }
    assert_eq!(
        fetch(&env, "/explicit").await.status,
        StatusCode::BAD_GATEWAY
    );
    // appProtocol kubernetes.io/h2c: HTTP/2 in clear text to the endpoint.
    let reply = fetch(&env, "/by-h2c").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["protocol"], "HTTP/2", "{reply:?}");
    let reply = fetch(&env, "/primary").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.served_by(), "canary-tls");
    env.shutdown().await;
}

#[tokio::test]
async fn sessions_are_resumed_on_new_connections() {
    timeout(LIMIT, resumed()).await.expect("bounded");
}

async fn resumed() {
    let backend_ca = ca("backend CA");
    let (server_pem, server_key) = cert(&backend_ca, "web", &["web.shop.svc"]);
    let web = tls_backend("web-tls", &server_pem, &server_key).await;
    let files = [
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        // One request per connection: each request makes a new connection.
        (
            "config.yaml",
            controller_configmap("upstream-keepalive-requests: \"1\""),
        ),
        (
            "ing.yaml",
            ingress("plain", "/plain", &[("backend-protocol", "HTTPS")]),
        ),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    let first = fetch(&env, "/plain").await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.header("x-echo-tls-resumed"), "false");
    let mut resumed = 0;
    for _ in 0..3 {
        let reply = fetch(&env, "/plain").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        if reply.header("x-echo-tls-resumed") == "true" {
            resumed += 1;
        }
    }
    assert_eq!(resumed, 3, "every new connection resumes the session");
    env.shutdown().await;
}

#[tokio::test]
async fn websockets_and_auth_go_over_tls_too() {
    timeout(LIMIT, websockets_and_auth())
        .await
        .expect("bounded");
}

async fn websockets_and_auth() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let backend_ca = ca("backend CA");
    let (server_pem, server_key) = cert(
        &backend_ca,
        "web",
        &["web.shop.svc", "auth.auth.svc.cluster.local"],
    );
    let web = tls_backend("web-tls", &server_pem, &server_key).await;
    let auth = tls_backend("auth-tls", &server_pem, &server_key).await;
    let files = [
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80)
                + &endpoints("shop", "web", &[web.addr], &[])
                + "---\n"
                + &service("auth", "auth", 443)
                + &endpoints("auth", "auth", &[auth.addr], &[]),
        ),
        (
            "ing.yaml",
            ingress("ws", "/ws", &[("backend-protocol", "HTTPS")])
                + &ingress(
                    "guarded",
                    "/guarded",
                    &[
                        ("backend-protocol", "HTTPS"),
                        ("auth-url", "https://auth.auth.svc.cluster.local/check"),
                        ("auth-response-headers", "X-Echo-Tls-Sni"),
                    ],
                ),
        ),
    ];
    let env = Env::start(&files).await;
    // A WebSocket through a TLS upstream connection.
    let stream = tokio::net::TcpStream::connect(env.http()).await.unwrap();
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        "ws://a.example/ws",
    )
    .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    drop(ws);
    // An https:// auth-url to a Service: TLS with the URL's host as SNI, as ingress-nginx's
    // auth location (proxy_ssl_server_name on). The echo auth service answers 200, saying
    // the SNI it saw, which auth-response-headers carries to the endpoint.
    let reply = fetch(&env, "/guarded").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.served_by(), "web-tls");
    assert_eq!(
        reply.json()["headers"]["x-echo-tls-sni"],
        "auth.auth.svc.cluster.local"
    );
    env.shutdown().await;
}
