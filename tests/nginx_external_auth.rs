//! External authentication (issue: ingress-nginx compatibility II, `auth-url`) over real
//! sockets, with ingress-nginx's behaviour (its template's auth location and e2e
//! `test/e2e/annotations/auth.go`): the auth request carries the client's fields and no body,
//! X-Original-URL/-Method, X-Sent-From, X-Auth-Request-Redirect and the request id; 2xx lets
//! the request through with `auth-response-headers` copied over the client's; 401 and 403
//! reach the client (401 as a 302 to `auth-signin`); anything else is 500; an invalid
//! `auth-url` is 503; the auth service sees the path the client asked for, not a rewritten
//! one; a request refused by an earlier phase never reaches the auth service.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::Env;
use support::client::Reply;
use support::manifests::{class, endpoints, service};
use tokio::net::TcpListener;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);

/// What the auth service saw of one auth request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: HeaderMap,
    body: usize,
}

/// A test auth service. By the request's Authorization: `Bearer ok` → 200 with X-User,
/// two X-Group fields and a Set-Cookie; `Bearer forbid` → 403; `Bearer teapot` → 418;
/// `Bearer slow` → 200 after 3 s; `Bearer big` → 200 with a 1 MiB body; anything else → 401
/// with WWW-Authenticate and a Set-Cookie.
struct AuthService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl AuthService {
    async fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(answer(req, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AuthService { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn answer(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    });
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let builder = Response::builder();
    match token {
        "Bearer ok" => builder
            .status(200)
            .header("x-user", "alice")
            .header("x-group", "admins")
            .header("x-group", "ops")
            .header("set-cookie", "session=granted; Path=/")
            .body(Full::new(Bytes::from_static(b"ok"))),
        "Bearer quiet" | "Bearer other" => builder
            .status(200)
            .header(
                "x-user",
                if token == "Bearer quiet" {
                    "carol"
                } else {
                    "bob"
                },
            )
            .body(Full::new(Bytes::from_static(b"ok"))),
        "Bearer private" => builder
            .status(200)
            .header("x-user", "dave")
            .header("cache-control", "private")
            .body(Full::new(Bytes::new())),
        "Bearer forbid" => builder.status(403).body(Full::new(Bytes::new())),
        "Bearer teapot" => builder.status(418).body(Full::new(Bytes::new())),
        "Bearer slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            builder.status(200).body(Full::new(Bytes::new()))
        }
        "Bearer big" => builder
            .status(200)
            .header("x-user", "big")
            .body(Full::new(Bytes::from(vec![b'x'; 1 << 20]))),
        _ => builder
            .status(401)
            .header("www-authenticate", "Bearer realm=\"test\"")
            .header("set-cookie", "csrf=token; Path=/")
            .body(Full::new(Bytes::from_static(b"who are you"))),
    }
    .unwrap()
}

/// The auth service as the Service `auth/authsvc` (port 80), the app as `shop/web`.
fn files(auth: SocketAddr, web: SocketAddr, ingresses: &[(&str, String)]) -> Vec<(String, String)> {
    let mut out = vec![
        ("class.yaml".to_string(), class()),
        (
            "auth.yaml".to_string(),
            service("auth", "authsvc", 80) + &endpoints("auth", "authsvc", &[auth], &[]),
        ),
        (
            "web.yaml".to_string(),
            service("shop", "web", 80) + &endpoints("shop", "web", &[web], &[]),
        ),
    ];
    for (name, y) in ingresses {
        out.push((format!("{name}.yaml"), y.clone()));
    }
    out
}

fn ing(name: &str, path: &str, annotations: &[(&str, &str)]) -> (&'static str, String) {
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    (
        leaked,
        support::manifests::nginx_ingress(name, "a.example", path, "web", annotations),
    )
}

async fn start(files: Vec<(String, String)>, configmap: Option<&str>) -> Env {
    let mut files: Vec<(&str, String)> =
        files.iter().map(|(n, y)| (n.as_str(), y.clone())).collect();
    let data = configmap.map(|d| format!("ssl-redirect: \"false\", {d}"));
    let data = data.unwrap_or_else(|| "ssl-redirect: \"false\"".to_string());
    files.push((
        "configmap.yaml",
        support::manifests::controller_configmap(&data),
    ));
    Env::start_with(&files, &["--configmap", "ingress/portico"]).await
}

async fn get(env: &Env, path: &str, fields: &[(&str, &str)]) -> Reply {
    support::client::get_from(env.http(), "127.0.0.1", "a.example", path, fields).await
}

const AUTH_URL: &str = "http://authsvc.auth.svc.cluster.local/check?from=portico";

#[tokio::test]
async fn the_auth_request_and_its_answers_are_ingress_nginx_s() {
    timeout(LIMIT, answers()).await.expect("bounded");
}

async fn answers() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let annotations = [
        ("auth-url", AUTH_URL),
        ("auth-response-headers", "X-User, X-Group, X-Email"),
    ];
    let env = start(
        files(auth.addr, web.addr, &[ing("app", "/", &annotations)]),
        None,
    )
    .await;

    // No credentials: the auth service's 401 and its challenge; the app never sees it; the
    // auth answer's cookie is not added to a 401 (nginx's add_header without `always`).
    let reply = get(&env, "/app/x?y=1", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), "Bearer realm=\"test\"");
    assert!(reply.headers.get("set-cookie").is_none(), "{reply:?}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("who are you"));
    assert_eq!(auth.count(), 1);

    // What the auth request carried.
    let fields = [
        ("authorization", "Bearer ok"),
        ("x-user", "mallory"),
        ("x-email", "forged@example.com"),
        ("cookie", "a=b"),
        ("x-request-id", "req-1234"),
        ("x-forwarded-proto", "gopher"),
    ];
    let reply = get(&env, "/app/x?y=1", &fields).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let seen = auth.seen().pop().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/check?from=portico");
    assert_eq!(seen.body, 0);
    let h = |name: &str| {
        seen.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(h("host").as_deref(), Some("authsvc.auth.svc.cluster.local"));
    assert_eq!(
        h("x-original-url").as_deref(),
        Some("http://a.example/app/x?y=1")
    );
    assert_eq!(h("x-original-method").as_deref(), Some("GET"));
    assert_eq!(
        h("x-sent-from").as_deref(),
        Some("nginx-ingress-controller")
    );
    assert_eq!(h("x-auth-request-redirect").as_deref(), Some("/app/x?y=1"));
    assert_eq!(h("x-request-id").as_deref(), Some("req-1234"));
    assert_eq!(h("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto"), None, "blanked, as ingress-nginx");
    assert_eq!(h("authorization").as_deref(), Some("Bearer ok"));
    assert_eq!(h("cookie").as_deref(), Some("a=b"));
    assert_eq!(h("x-original-uri"), None, "only with auth-method");
    // The app: the auth answer's fields replace the client's, and one the answer lacks is
    // removed; the Authorization goes on (only basic auth strips it); the auth cookie is
    // added to the response.
    let app = reply.json();
    let ah = &app["headers"];
    assert_eq!(app["service"], "web");
    assert_eq!(ah["x-user"], "alice");
    assert_eq!(ah["x-group"], "admins, ops");
    assert!(ah.get("x-email").is_none(), "{ah}");
    assert_eq!(ah["authorization"], "Bearer ok");
    assert_eq!(ah["x-request-id"], "req-1234");
    assert_eq!(reply.header("set-cookie"), "session=granted; Path=/");

    // A POST: the auth request is still a GET without a body, X-Original-Method says POST.
    let before = auth.count();
    let post = Request::post("/submit")
        .header("host", "a.example")
        .header("authorization", "Bearer ok")
        .body(Full::new(Bytes::from_static(b"form=data")))
        .unwrap();
    let reply = support::client::h1(env.http(), post).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_length"], 9, "the app gets the body");
    let seen = auth.seen().pop().unwrap();
    assert_eq!(auth.count(), before + 1);
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.body, 0);
    assert!(seen.headers.get("content-length").is_none_or(|v| v == "0"));
    assert_eq!(seen.headers["x-original-method"], "POST");

    // Over HTTP/2 (h2c): the same auth request, Host from :authority, the cookies of split
    // Cookie fields all carried.
    let before = auth.count();
    let h2 = Request::get("http://a.example/h2?x=1")
        .header("authorization", "Bearer ok")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = support::client::h2c(env.http(), h2).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["headers"]["x-user"], "alice");
    assert_eq!(auth.count(), before + 1);
    let seen = auth.seen().pop().unwrap();
    assert_eq!(seen.headers["host"], "authsvc.auth.svc.cluster.local");
    assert_eq!(seen.headers["x-original-url"], "http://a.example/h2?x=1");
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"], "one Cookie field, as RFC 9113 asks");

    // 403 reaches the client; any other status is a 500; neither reaches the app.
    let reply = get(&env, "/", &[("authorization", "Bearer forbid")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = get(&env, "/", &[("authorization", "Bearer teapot")]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.served_by(), "");
    // A 1 MiB answer body is read past or dropped, never passed on.
    let reply = get(&env, "/", &[("authorization", "Bearer big")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["headers"]["x-user"], "big");
    let reply = get(&env, "/", &[("authorization", "Bearer ok")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    env.shutdown().await;
}

#[tokio::test]
async fn signin_method_and_redirect_as_ingress_nginx() {
    timeout(LIMIT, signin()).await.expect("bounded");
}

async fn signin() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let annotations = [
        ("auth-url", AUTH_URL),
        ("auth-signin", "http://$host/auth/start"),
        ("auth-method", "POST"),
        ("auth-request-redirect", "https://$host/landing"),
    ];
    let env = start(
        files(auth.addr, web.addr, &[ing("app", "/", &annotations)]),
        None,
    )
    .await;
    // ingress-nginx's e2e: `Location: http://<host>/auth/start?rd=http://<host>%2F%3Fa%3Db%26c%3Dd`.
    let reply = get(&env, "/?a=b&c=d", &[]).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert_eq!(
        reply.header("location"),
        "http://a.example/auth/start?rd=http://a.example%2F%3Fa%3Db%26c%3Dd"
    );
    // The redirect carries the auth answer's cookie (the sign-in location's add_header).
    assert_eq!(reply.header("set-cookie"), "csrf=token; Path=/");
    let seen = auth.seen().pop().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["x-original-uri"], "/?a=b&c=d");
    assert_eq!(seen.headers["x-scheme"], "http");
    assert_eq!(
        seen.headers["x-auth-request-redirect"],
        "https://a.example/landing"
    );
    // Only 401 redirects: 403 stays 403.
    let reply = get(&env, "/", &[("authorization", "Bearer forbid")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    env.shutdown().await;
}

#[tokio::test]
async fn the_auth_service_sees_the_path_asked_not_the_rewritten_one() {
    timeout(LIMIT, rewritten()).await.expect("bounded");
}

async fn rewritten() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let annotations = [
        ("auth-url", AUTH_URL),
        ("use-regex", "true"),
        ("rewrite-target", "/inner/$1"),
    ];
    let app =
        support::manifests::nginx_ingress("app", "a.example", "/outer/(.*)", "web", &annotations);
    let env = start(files(auth.addr, web.addr, &[("app", app)]), None).await;
    let reply = get(&env, "/outer/page?q=1", &[("authorization", "Bearer ok")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["path"], "/inner/page?q=1");
    let seen = auth.seen().pop().unwrap();
    assert_eq!(
        seen.headers["x-original-url"],
        "http://a.example/outer/page?q=1"
    );
    assert_eq!(seen.headers["x-auth-request-redirect"], "/outer/page?q=1");
    env.shutdown().await;
}

#[tokio::test]
async fn failures_fail_closed() {
    timeout(LIMIT, failures()).await.expect("bounded");
}

async fn failures() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    // A Service whose endpoint refuses connections.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    // A listener on the node's loopback that must never be asked.
    let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_url = format!(
        "http://127.0.0.1:{}/check",
        node.local_addr().unwrap().port()
    );
    let ingresses = [
        (
            "down",
            support::manifests::nginx_ingress(
                "down",
                "a.example",
                "/down",
                "web",
                &[("auth-url", "http://gone.auth.svc/check")],
            ),
        ),
        (
            "invalid",
            support::manifests::nginx_ingress(
                "invalid",
                "a.example",
                "/invalid",
                "web",
                &[("auth-url", "auth.example/no-scheme")],
            ),
        ),
        (
            "node",
            support::manifests::nginx_ingress(
                "node",
                "a.example",
                "/node",
                "web",
                &[("auth-url", node_url.as_str())],
            ),
        ),
        (
            "tls",
            support::manifests::nginx_ingress(
                "tls",
                "a.example",
                "/tls",
                "web",
                &[("auth-url", "https://authsvc.auth.svc/check")],
            ),
        ),
        (
            "slow",
            support::manifests::nginx_ingress(
                "slow",
                "a.example",
                "/slow",
                "web",
                &[("auth-url", AUTH_URL)],
            ),
        ),
    ];
    let mut all = files(auth.addr, web.addr, &ingresses);
    all.push((
        "gone.yaml".to_string(),
        service("auth", "gone", 80) + &endpoints("auth", "gone", &[closed_addr], &[]),
    ));
    let env = start(all, Some("proxy-read-timeout: \"1\"")).await;
    let ok = [("authorization", "Bearer ok")];
    // Unreachable: 500.
    let reply = get(&env, "/down", &ok).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    // Invalid auth-url: 503, never forwarded, and an error naming the annotation.
    let reply = get(&env, "/invalid", &ok).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.served_by(), "");
    // The node itself: 500, and not even a connection.
    let reply = get(&env, "/node", &ok).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    let accepted = timeout(Duration::from_millis(200), node.accept()).await;
    assert!(accepted.is_err(), "the node's listener was connected to");
    // https:// to a Service that speaks clear text: the handshake fails, 500.
    let reply = get(&env, "/tls", &ok).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert_eq!(reply.served_by(), "");
    // Later than the read timeout (the ConfigMap's proxy-read-timeout, 1 s): 500.
    let started = std::time::Instant::now();
    let reply = get(&env, "/slow", &[("authorization", "Bearer slow")]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    let debug = support::client::h1(
        env.admin(),
        support::client::get("localhost", "/debug/snapshot"),
    )
    .await
    .json();
    let errors: Vec<String> = debug["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| format!("{} {} {}", d["object"]["name"], d["field"], d["reason"]))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("invalid") && e.contains("auth-url") && e.contains("503")),
        "{errors:?}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_host_portico_serves_is_asked_through_its_route() {
    timeout(LIMIT, hairpin()).await.expect("bounded");
}

async fn hairpin() {
    // oauth2-proxy's documented form: the auth URL is on the app's own host, served by another
    // Ingress's path; Portico asks that path's backend directly (its address is the node's,
    // where a DNS lookup would be refused).
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let app = support::manifests::nginx_ingress(
        "app",
        "a.example",
        "/",
        "web",
        &[
            ("auth-url", "https://$host/oauth2/auth"),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
        ],
    );
    let proxy = support::manifests::ingress(
        "auth",
        "oauth2",
        &[(
            "a.example",
            vec![support::manifests::prefix("/oauth2", "authsvc", 80)],
        )],
    );
    let env = start(
        files(auth.addr, web.addr, &[("app", app), ("oauth2", proxy)]),
        None,
    )
    .await;
    let reply = get(&env, "/page", &[("authorization", "Bearer ok")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["service"], "web");
    let seen = auth.seen().pop().unwrap();
    assert_eq!(seen.target, "/oauth2/auth");
    assert_eq!(seen.headers["host"], "a.example");
    let reply = get(&env, "/page?x=1", &[]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.header("location"),
        "https://a.example/oauth2/start?rd=%2Fpage%3Fx%3D1"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn answers_are_cached_by_auth_cache_key() {
    timeout(LIMIT, cached()).await.expect("bounded");
}

async fn cached() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let annotations = [
        ("auth-url", AUTH_URL),
        ("auth-cache-key", "$http_authorization"),
        ("auth-cache-duration", "200 1m"),
        ("auth-response-headers", "X-User"),
    ];
    let env = start(
        files(auth.addr, web.addr, &[ing("app", "/", &annotations)]),
        None,
    )
    .await;
    for _ in 0..3 {
        let reply = get(&env, "/", &[("authorization", "Bearer quiet")]).await;
        assert_eq!(reply.json()["headers"]["x-user"], "carol");
    }
    assert_eq!(auth.count(), 1, "asked once, then from the cache");
    // Another key is asked, and gets its own answer.
    let reply = get(&env, "/", &[("authorization", "Bearer other")]).await;
    assert_eq!(reply.json()["headers"]["x-user"], "bob");
    assert_eq!(auth.count(), 2);
    // As nginx's proxy cache: an answer that sets a cookie, or says Cache-Control: private,
    // is never kept (a session cookie is never replayed from the cache).
    for token in ["Bearer ok", "Bearer ok", "Bearer private", "Bearer private"] {
        let reply = get(&env, "/", &[("authorization", token)]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(auth.count(), 6);
    // 401 is not in the durations: asked every time.
    for _ in 0..2 {
        let reply = get(&env, "/", &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(auth.count(), 8);
    // A second Authorization field makes another key: the cached answer is not reused, the
    // auth service is asked (it sees both fields).
    let reply = get(
        &env,
        "/",
        &[
            ("authorization", "Bearer quiet"),
            ("authorization", "Bearer forbid"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(auth.count(), 9, "answered from another key's cache entry");
    env.shutdown().await;
}

#[tokio::test]
async fn global_auth_applies_unless_an_ingress_opts_out() {
    timeout(LIMIT, global()).await.expect("bounded");
}

async fn global() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let ingresses = [
        ing("guarded", "/guarded", &[]),
        ing("open", "/open", &[("enable-global-auth", "false")]),
        ing(
            "own",
            "/own",
            &[("auth-url", "http://authsvc.auth.svc/own")],
        ),
    ];
    let data = format!("global-auth-url: {AUTH_URL:?}, global-auth-response-headers: X-User");
    let env = start(files(auth.addr, web.addr, &ingresses), Some(&data)).await;
    let reply = get(&env, "/guarded", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get(&env, "/guarded", &[("authorization", "Bearer ok")]).await;
    assert_eq!(reply.json()["headers"]["x-user"], "alice");
    let before = auth.count();
    let reply = get(&env, "/open", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        auth.count(),
        before,
        "enable-global-auth: false asks nobody"
    );
    // An Ingress's own auth-url replaces the global one.
    let reply = get(&env, "/own", &[("authorization", "Bearer ok")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(auth.seen().pop().unwrap().target, "/own");
    env.shutdown().await;
}

#[tokio::test]
async fn refused_requests_never_reach_the_auth_service() {
    timeout(LIMIT, order()).await.expect("bounded");
}

async fn order() {
    let auth = AuthService::start().await;
    let web = support::Backend::start("web").await;
    let ingresses = [
        ing(
            "allow",
            "/allow",
            &[
                ("auth-url", AUTH_URL),
                ("allowlist-source-range", "127.0.0.2"),
            ],
        ),
        ing(
            "limited",
            "/limited",
            &[
                ("auth-url", AUTH_URL),
                ("limit-rpm", "1"),
                ("limit-burst-multiplier", "1"),
            ],
        ),
        ing(
            "basic",
            "/basic",
            &[
                ("auth-url", AUTH_URL),
                ("auth-type", "basic"),
                ("auth-secret", "users"),
            ],
        ),
    ];
    let mut all = files(auth.addr, web.addr, &ingresses);
    all.push((
        "users.yaml".to_string(),
        support::manifests::opaque_secret("shop", "users", &[("auth", "foo:{PLAIN}bar")]),
    ));
    let env = start(all, None).await;
    let reply = get(&env, "/allow", &[("authorization", "Bearer ok")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(auth.count(), 0, "a denied address asked the auth service");
    let from2 = support::client::get_from(
        env.http(),
        "127.0.0.2",
        "a.example",
        "/allow",
        &[("authorization", "Bearer ok")],
    )
    .await;
    assert_eq!(from2.status, StatusCode::OK);
    assert_eq!(auth.count(), 1);
    // limit-rpm 1 with a burst of 1: two requests pass, the third is refused before auth.
    for _ in 0..2 {
        let reply = get(&env, "/limited", &[("authorization", "Bearer ok")]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let third = get(&env, "/limited", &[("authorization", "Bearer ok")]).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(auth.count(), 3, "a limited request asked the auth service");
    // Basic auth first: wrong credentials never reach the auth service.
    let reply = get(&env, "/basic", &[("authorization", "Basic Zm9vOndyb25n")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(auth.count(), 3);
    env.shutdown().await;
}

#[tokio::test]
async fn another_namespaces_guarded_route_is_not_an_auth_service() {
    timeout(LIMIT, cross_namespace()).await.expect("bounded");
}

/// A tenant's `auth-url` naming a host that another namespace's Ingress serves behind basic
/// auth must not reach that backend around its guard (and leak its fields through
/// `auth-response-headers`): the served-host shortcut is for routes of the auth's own
/// namespace, or ones that guard nothing.
async fn cross_namespace() {
    let web = support::Backend::start("web").await;
    let secret = support::Backend::start("b-secret").await;
    let open = support::Backend::start("b-open").await;
    let auth = AuthService::start().await;
    let a = support::manifests::nginx_ingress(
        "a",
        "a.example",
        "/",
        "web",
        &[
            ("auth-url", "http://b.example/admin"),
            ("auth-response-headers", "X-Echo-Service"),
        ],
    );
    let a_open = support::manifests::nginx_ingress(
        "a-open",
        "a.example",
        "/open",
        "web",
        &[
            ("auth-url", "http://b.example/public"),
            ("auth-response-headers", "X-Echo-Service"),
        ],
    );
    let guarded = support::manifests::ingress_full(
        "tenant-b",
        "b",
        &[(
            "b.example",
            vec![support::manifests::prefix("/admin", "secret", 80)],
        )],
        &[],
        "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users",
        None,
    );
    let public = support::manifests::ingress(
        "tenant-b",
        "b-public",
        &[(
            "b.example",
            vec![support::manifests::prefix("/public", "open", 80)],
        )],
    );
    let mut all = files(auth.addr, web.addr, &[("a", a), ("a-open", a_open)]);
    all.push(("b.yaml".to_string(), guarded));
    all.push(("b-public.yaml".to_string(), public));
    all.push((
        "b-svc.yaml".to_string(),
        service("tenant-b", "secret", 80)
            + &endpoints("tenant-b", "secret", &[secret.addr], &[])
            + "---\n"
            + &service("tenant-b", "open", 80)
            + &endpoints("tenant-b", "open", &[open.addr], &[]),
    ));
    all.push((
        "users.yaml".to_string(),
        support::manifests::opaque_secret("tenant-b", "users", &[("auth", "u:{PLAIN}p")]),
    ));
    let env = start(all, None).await;
    // The guarded route of another namespace: never asked, 500.
    let reply = get(&env, "/", &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("b-secret"),
        "{reply:?}"
    );
    // A route of another namespace that guards nothing is what anyone may ask: allowed.
    let reply = get(&env, "/open", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["headers"]["x-echo-service"], "b-open");
    env.shutdown().await;
}
