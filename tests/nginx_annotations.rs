//! ingress-nginx annotations over real sockets, with ingress-nginx's status codes: HTTPS
//! redirects (ssl-redirect, force-ssl-redirect, preserve-trailing-slash), permanent and
//! temporal redirects, app-root, proxy-body-size, upstream-vhost; annotations that guard access
//! and are not implemented fail closed (503); per-route timeouts; --controller-class.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::client::{self, get, h1};
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret};
use support::raw;
use support::{Backend, Env};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// Portico with the Service `web` (one echo backend) and these Ingresses (with a certificate
/// `cert` for tls.example and force.example).
async fn env_with(ingresses: &[String], backend: &Backend) -> Env {
    let (secret, _) = tls_secret("shop", "cert", &["tls.example", "keep.example"]);
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("secret.yaml", secret),
        ("ing.yaml", ingresses.join("---\n")),
    ];
    Env::start(&files).await
}

fn ing(name: &str, host: &str, tls: bool, annotations: &str) -> String {
    let hosts = [host];
    let tls_entry = [(&hosts[..], "cert")];
    let tls: &[(&[&str], &str)] = if tls { &tls_entry } else { &[] };
    ingress_full(
        "shop",
        name,
        &[(host, vec![prefix("/", "web", 80)])],
        tls,
        annotations,
        None,
    )
}

const N: &str = "nginx.ingress.kubernetes.io";

#[tokio::test]
async fn https_redirects_follow_ingress_nginx() {
    timeout(LIMIT, https_redirects()).await.expect("bounded");
}

async fn https_redirects() {
    let backend = Backend::start("web").await;
    let ingresses = [
        ing("tls", "tls.example", true, ""),
        ing(
            "exempt",
            "off.example",
            true,
            &format!("{N}/ssl-redirect: \"false\""),
        ),
        ing(
            "force",
            "force.example",
            false,
            &format!("{N}/force-ssl-redirect: \"true\""),
        ),
        ing(
            "keep",
            "keep.example",
            true,
            &format!("{N}/preserve-trailing-slash: \"true\""),
        ),
        ing("plain", "plain.example", false, ""),
    ];
    let env = env_with(&ingresses, &backend).await;
    let port = env.https().port();
    let location = |reply: &client::Reply| reply.header("location").to_string();
    // A TLS host: 308, the HTTPS port (not 443 here), the trailing '/' dropped.
    for (path, want) in [
        ("/docs/", "/docs"),
        ("/", ""),
        ("/a/b?x=1", "/a/b?x=1"),
        ("/a/?x=1", "/a/?x=1"),
    ] {
        let reply = h1(env.http(), get("tls.example", path)).await;
        assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT, "{path}");
        assert_eq!(
            location(&reply),
            format!("https://tls.example:{port}{want}")
        );
    }
    // ssl-redirect "false": served over plain HTTP.
    let reply = h1(env.http(), get("off.example", "/docs/")).await;
    assert_eq!(reply.served_by(), "web");
    // force-ssl-redirect: redirects without any TLS entry.
    let reply = h1(env.http(), get("force.example:80", "/x/")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location(&reply), format!("https://force.example:{port}/x"));
    // preserve-trailing-slash keeps it.
    let reply = h1(env.http(), get("keep.example", "/docs/")).await;
    assert_eq!(
        location(&reply),
        format!("https://keep.example:{port}/docs/")
    );
    // No TLS and no annotation: served.
    let reply = h1(env.http(), get("plain.example", "/docs/")).await;
    assert_eq!(reply.served_by(), "web");
    // Over HTTPS nothing redirects.
    let (reply, _) = client::https(
        env.https(),
        Some("tls.example"),
        &["http/1.1"],
        "tls.example",
        "/docs/",
    )
    .await;
    assert_eq!(reply.served_by(), "web");
    env.shutdown().await;
}

#[tokio::test]
async fn permanent_and_temporal_redirects_and_app_root() {
    timeout(LIMIT, redirects()).await.expect("bounded");
}

async fn redirects() {
    let backend = Backend::start("web").await;
    let ingresses = [
        ing(
            "moved",
            "moved.example",
            false,
            &format!("{N}/permanent-redirect: \"https://new.example$request_uri\""),
        ),
        ing(
            "moved308",
            "moved308.example",
            false,
            &format!(
                "{N}/permanent-redirect: \"https://new.example/\", {N}/permanent-redirect-code: \"308\""
            ),
        ),
        ing(
            "both",
            "both.example",
            false,
            &format!(
                "{N}/permanent-redirect: \"https://p.example\", {N}/temporal-redirect: \"https://t.example$uri\""
            ),
        ),
        ing(
            "badcode",
            "badcode.example",
            false,
            &format!(
                "{N}/temporal-redirect: \"https://t.example\", {N}/temporal-redirect-code: \"308\""
            ),
        ),
        ing(
            "root",
            "root.example",
            false,
            &format!("{N}/app-root: /app1"),
        ),
        // app-root is a host setting: a `/` served by another Ingress of the host redirects.
        ingress_full(
            "shop",
            "hostroot-app",
            &[("hostroot.example", vec![prefix("/app", "web", 80)])],
            &[],
            &format!("{N}/app-root: /app"),
            None,
        ),
        ing("hostroot-site", "hostroot.example", false, ""),
        // A host where no route takes `/`: nginx redirects before looking for a location.
        ingress_full(
            "shop",
            "onlyapp",
            &[("onlyapp.example", vec![prefix("/app", "web", 80)])],
            &[],
            &format!("{N}/app-root: /app"),
            None,
        ),
        // A redirect comes before the HTTPS redirect, as nginx's `return` runs first.
        ing(
            "tlsmoved",
            "tls.example",
            true,
            &format!("{N}/permanent-redirect: \"https://elsewhere.example\""),
        ),
    ];
    let env = env_with(&ingresses, &backend).await;
    let reply = h1(env.http(), get("moved.example", "/a/%62?x=1")).await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.header("location"), "https://new.example/a/%62?x=1");
    let reply = h1(env.http(), get("moved308.example", "/a")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.header("location"), "https://new.example/");
    let reply = h1(env.http(), get("both.example", "/a/b?q")).await;
    assert_eq!(reply.status, StatusCode::FOUND, "temporal wins");
    assert_eq!(reply.header("location"), "https://t.example/a/b");
    let reply = h1(env.http(), get("badcode.example", "/")).await;
    assert_eq!(reply.status, StatusCode::FOUND, "308 is no temporal code");
    let reply = h1(env.http(), get("root.example", "/")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), "http://root.example/app1");
    let reply = h1(env.http(), get("root.example", "/app1/page")).await;
    assert_eq!(reply.served_by(), "web", "only / is redirected");
    let reply = h1(env.http(), get("root.example", "/?a=b")).await;
    assert_eq!(reply.header("location"), "http://root.example/app1");
    let reply = h1(env.http(), get("tls.example", "/x")).await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.header("location"), "https://elsewhere.example");
    let reply = h1(env.http(), get("hostroot.example", "/")).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert_eq!(reply.header("location"), "http://hostroot.example/app");
    let reply = h1(env.http(), get("hostroot.example", "/other")).await;
    assert_eq!(reply.served_by(), "web");
    let reply = h1(env.http(), get("onlyapp.example", "/")).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert_eq!(reply.header("location"), "http://onlyapp.example/app");
    let reply = h1(env.http(), get("onlyapp.example", "/other")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "nothing else is added");
    env.shutdown().await;
}

fn post(host: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("/upload")
        .header("host", host)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn proxy_body_size_answers_413() {
    timeout(LIMIT, body_size()).await.expect("bounded");
}

async fn body_size() {
    let backend = Backend::start("web").await;
    let ingresses = [
        ing(
            "small",
            "small.example",
            false,
            &format!("{N}/proxy-body-size: 1k"),
        ),
        // Larger than the body buffer (64 KiB): a chunked body past it streams, and is cut.
        ing(
            "big",
            "big.example",
            false,
            &format!("{N}/proxy-body-size: 100k"),
        ),
        ing(
            "unlimited",
            "free.example",
            false,
            &format!("{N}/proxy-body-size: \"0\""),
        ),
    ];
    let env = env_with(&ingresses, &backend).await;
    let reply = h1(env.http(), post("small.example", vec![b'a'; 1024])).await;
    assert_eq!(reply.status, StatusCode::OK, "exactly the limit passes");
    let reply = h1(env.http(), post("small.example", vec![b'a'; 1025])).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let reply = h1(env.http(), post("free.example", vec![b'a'; 300_000])).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Chunked bodies: counted as they come.
    for (host, size, want) in [
        ("small.example", 1000, 200),
        ("small.example", 2000, 413),
        ("big.example", 90_000, 200),
        ("big.example", 200_000, 413),
    ] {
        let mut request = format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for piece in vec![b'b'; size].chunks(8192) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let mut wire = raw::Wire::connect(env.http()).await;
        wire.send(&request).await;
        let head = wire.head().await.expect("a response head");
        assert_eq!(head.status(), want, "{host} chunked {size}: {head:?}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn upstream_vhost_sets_the_host_sent_upstream() {
    timeout(LIMIT, vhost()).await.expect("bounded");
}

async fn vhost() {
    let backend = Backend::start("web").await;
    let ingresses = [ing(
        "v",
        "v.example",
        false,
        &format!("{N}/upstream-vhost: internal.svc:8080"),
    )];
    let env = env_with(&ingresses, &backend).await;
    let reply = h1(env.http(), get("v.example", "/")).await;
    assert_eq!(reply.json()["headers"]["host"], "internal.svc:8080");
    assert_eq!(
        reply.json()["headers"]["x-forwarded-host"],
        "v.example",
        "the client's host stays in X-Forwarded-Host"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn access_guards_portico_cannot_honour_fail_closed() {
    timeout(LIMIT, fail_closed()).await.expect("bounded");
}

async fn fail_closed() {
    let backend = Backend::start("web").await;
    let guarded = ingress_full(
        "shop",
        "admin",
        &[("app.example", vec![prefix("/admin", "web", 80)])],
        &[],
        &format!("{N}/auth-tls-secret: shop/ca"),
        None,
    );
    let auth = ing(
        "auth",
        "auth.example",
        false,
        &format!("{N}/auth-type: basic"),
    );
    let open = ing("open", "app.example", false, "");
    // External auth whose request Portico cannot make as ingress-nginx would (the fields of a
    // ConfigMap, nginx lines): never served without it.
    let set_headers = ing(
        "set-headers",
        "sh.example",
        false,
        &format!(
            "{N}/auth-url: http://auth.example/check, {N}/auth-proxy-set-headers: shop/auth-headers"
        ),
    );
    let snippet = ing(
        "auth-snippet",
        "as.example",
        false,
        &format!(
            "{N}/auth-url: http://auth.example/check, {N}/auth-snippet: \"proxy_set_header X-A b;\""
        ),
    );
    let env = env_with(&[guarded, auth, open, set_headers, snippet], &backend).await;
    for host in ["sh.example", "as.example"] {
        let reply = h1(env.http(), get(host, "/")).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{host}");
        assert_eq!(reply.served_by(), "", "{host}");
    }
    // Client certificates are a server setting: a CA Secret that is missing denies the whole
    // host (403, ingress-nginx's `return 403`), the other Ingress's paths included.
    for path in ["/admin/users", "/public"] {
        let reply = h1(env.http(), get("app.example", path)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "never unguarded: {path}"
        );
        assert_eq!(reply.served_by(), "", "the backend never saw it");
    }
    let reply = h1(env.http(), get("auth.example", "/")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    env.shutdown().await;
}

/// `proxy-read-timeout` (whole seconds, as ingress-nginx reads it) is the route's own: a
/// response head slower than it is a 504 on that route, while another route of the same
/// Service, through the same pooled connections, keeps the proxy's timeout (8 s here), and
/// a stalled response body is cut after it too.
#[tokio::test]
async fn proxy_read_timeout_is_per_route() {
    timeout(LIMIT, read_timeout()).await.expect("bounded");
}

async fn read_timeout() {
    use support::raw::{Upstream, ok};
    let upstream = Upstream::start(|mut conn| async move {
        for _ in 0..20 {
            let Some(req) = conn.request().await else {
                return;
            };
            if req.path().ends_with("/stall-body") {
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
                    .await;
                tokio::time::sleep(LIMIT).await;
                return;
            }
            // Every other answer takes 1.5 s.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if !conn.send(&ok(req.path().as_bytes())).await {
                return;
            }
        }
    })
    .await;
    let short = ingress_full(
        "shop",
        "short",
        &[("t.example", vec![prefix("/short", "raw", 80)])],
        &[],
        &format!("{N}/proxy-read-timeout: \"1\""),
        None,
    );
    let long = ingress_full(
        "shop",
        "long",
        &[("t.example", vec![prefix("/long", "raw", 80)])],
        &[],
        "",
        None,
    );
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "raw", 80) + &endpoints("shop", "raw", &[upstream.addr], &[]),
        ),
        ("ing.yaml", [short, long].join("---\n")),
    ];
    let env = Env::start_with(&files, &["--proxy-read-timeout", "8s"]).await;
    let started = tokio::time::Instant::now();
    let reply = h1(env.http(), get("t.example", "/short/x")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1450),
        "{took:?}"
    );
    // The other route (and any connection the short one used) keeps the proxy's 8 s.
    for _ in 0..2 {
        let reply = h1(env.http(), get("t.example", "/long/y")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], b"/long/y");
    }
    // A response body that stalls is cut after the route's timeout, not the proxy's.
    let mut client = raw::Wire::connect(env.http()).await;
    let started = tokio::time::Instant::now();
    let req = b"GET /short/stall-body HTTP/1.1\r\nHost: t.example\r\n\r\n";
    assert!(client.send(req).await);
    let head = client.head().await.expect("a head");
    assert_eq!(head.status(), 200);
    assert_eq!(client.read_to_close().await, b"first");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    env.shutdown().await;
}

/// `--controller-class k8s.io/ingress-nginx`: Portico serves ingress-nginx's IngressClass
/// (to run beside it before switching); without it, that class is not Portico's.
#[tokio::test]
async fn controller_class_serves_ingress_nginx_s_class() {
    timeout(LIMIT, controller_class()).await.expect("bounded");
}

async fn controller_class() {
    let backend = Backend::start("web").await;
    let nginx_class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n".to_string();
    let ing = ingress_full(
        "shop",
        "legacy",
        &[("legacy.example", vec![prefix("/", "web", 80)])],
        &[],
        "",
        None,
    )
    .replace("ingressClassName: portico", "ingressClassName: nginx");
    let files = [
        ("class.yaml", nginx_class),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("ing.yaml", ing),
    ];
    let env = Env::start(&files).await;
    let reply = h1(env.http(), get("legacy.example", "/")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "not Portico's class");
    env.shutdown().await;
    let flags = [
        "--controller-class",
        "portico.dev/ingress-controller,k8s.io/ingress-nginx",
    ];
    let env = Env::start_with(&files, &flags).await;
    let reply = h1(env.http(), get("legacy.example", "/")).await;
    assert_eq!(reply.served_by(), "web");
    env.shutdown().await;
}

/// `server-alias` serves the host's whole server under more names (every Ingress's paths
/// for the host, as nginx's `server_name`) unless a rule names the alias;
/// `from-to-www-redirect` sends the www twin (or the apex) to the rule's host with
/// http-redirect-code (308), the path, query and the Host's port kept.
#[tokio::test]
async fn server_alias_and_from_to_www_redirect() {
    timeout(LIMIT, aliases()).await.expect("bounded");
}

async fn aliases() {
    let backend = Backend::start("web").await;
    let aliased = ingress_full(
        "shop",
        "aliased",
        &[("a.example", vec![prefix("/app", "web", 80)])],
        &[],
        &format!("{N}/server-alias: \"b.example, c.example\""),
        None,
    );
    // Another Ingress's paths for a.example are the alias's too.
    let more = ingress_full(
        "shop",
        "more",
        &[("a.example", vec![prefix("/more", "web", 80)])],
        &[],
        "",
        None,
    );
    let own = ingress_full(
        "shop",
        "own",
        &[("c.example", vec![prefix("/own", "web", 80)])],
        &[],
        "",
        None,
    );
    let www = ingress_full(
        "shop",
        "www",
        &[("www.w.example", vec![prefix("/", "web", 80)])],
        &[],
        &format!("{N}/from-to-www-redirect: \"true\""),
        None,
    );
    let apex = ingress_full(
        "shop",
        "apex",
        &[("apex.example", vec![prefix("/", "web", 80)])],
        &[],
        &format!("{N}/from-to-www-redirect: \"true\""),
        None,
    );
    let env = env_with(&[aliased, more, own, www, apex], &backend).await;
    let reply = h1(env.http(), get("b.example", "/app/x")).await;
    assert_eq!(reply.served_by(), "web", "the alias serves the rule");
    let reply = h1(env.http(), get("b.example", "/more")).await;
    assert_eq!(
        reply.served_by(),
        "web",
        "and the other Ingress's paths of the host"
    );
    let reply = h1(env.http(), get("b.example", "/nothing")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = h1(env.http(), get("c.example", "/app/x")).await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "c.example has its own rule"
    );
    let reply = h1(env.http(), get("c.example", "/own")).await;
    assert_eq!(reply.served_by(), "web");
    let reply = h1(env.http(), get("w.example:8080", "/x?y=1")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.header("location"), "http://www.w.example:8080/x?y=1");
    // ingress-nginx's redirect server strips the request URI's last '/' (`/` gives none).
    let reply = h1(env.http(), get("www.apex.example", "/")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.header("location"), "http://apex.example");
    let reply = h1(env.http(), get("www.apex.example", "/docs/")).await;
    assert_eq!(reply.header("location"), "http://apex.example/docs");
    let reply = h1(env.http(), get("www.w.example", "/x")).await;
    assert_eq!(reply.served_by(), "web");
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let warned = dump["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["object"]["name"] == "aliased" && d["reason"].as_str().unwrap().contains("c.example")
    });
    assert!(warned, "{:#}", dump["diagnostics"]);
    env.shutdown().await;
}

/// An HTTP/1.1 endpoint that answers every request 150 ms late, as `x-echo-service: slow`.
async fn slow_endpoint() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let reply =
                        b"HTTP/1.1 200 OK\r\nx-echo-service: slow\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `load-balance: ewma` (ingress-nginx's peak-EWMA, the better of two random endpoints):
/// once the slow endpoint has answered once, the fast one takes the requests; without it, the
/// Service's round robin shares them.
#[tokio::test]
async fn ewma_sends_to_the_faster_endpoint() {
    timeout(LIMIT, async {
        let fast = Backend::start("fast").await;
        let slow = slow_endpoint().await;
        let ingresses = [
            support::manifests::nginx_ingress(
                "ewma",
                "a.example",
                "/ewma",
                "web",
                &[("load-balance", "ewma")],
            ),
            support::manifests::nginx_ingress("rr", "a.example", "/rr", "web", &[]),
        ]
        .join("---\n");
        let files = [
            ("class.yaml", class()),
            (
                "svc.yaml",
                service("shop", "web", 80) + &endpoints("shop", "web", &[fast.addr, slow], &[]),
            ),
            ("ing.yaml", ingresses),
        ];
        let env = Env::start(&files).await;
        let mut served = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..20 {
            let reply = h1(env.http(), get("a.example", "/ewma")).await;
            assert_eq!(reply.status, StatusCode::OK);
            *served.entry(reply.served_by()).or_default() += 1;
        }
        // Before the first sample both score 0; after it the slow one scores ~150 ms.
        assert!(served.get("slow").copied().unwrap_or(0) <= 1, "{served:?}");
        let mut rr = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..4 {
            let reply = h1(env.http(), get("a.example", "/rr")).await;
            *rr.entry(reply.served_by()).or_default() += 1;
        }
        assert_eq!(rr.get("slow"), Some(&2), "round robin elsewhere: {rr:?}");
        env.shutdown().await;
    })
    .await
    .expect("bounded");
}
