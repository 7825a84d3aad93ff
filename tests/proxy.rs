//! The proxy end to end: routing over HTTP/1.1, h2c and HTTP/2 over TLS into echo backends;
//! transparency; redirects; errors.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::client::{self, get, get_h2};
use support::manifests::{
    class, endpoints, exact, ingress, ingress_full, prefix, service, tls_secret,
};
use support::{Backend, Env};

/// Services `a` and `b` in `shop`, each on its own echo backend, and an Ingress with exact,
/// wildcard and host-less rules.
async fn shop(default_backend: bool) -> (Env, Backend, Backend) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let rules = [
        ("a.com", vec![prefix("/", "a", 80)]),
        (
            "*.b.com",
            vec![prefix("/api", "b", 80), exact("/x", "a", 80)],
        ),
        ("", vec![prefix("/fallback", "b", 80)]),
    ];
    let ing = ingress_full(
        "shop",
        "web",
        &rules,
        &[],
        "",
        default_backend.then_some(("a", 80)),
    );
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            format!(
                "{}---\n{}",
                service("shop", "a", 80),
                service("shop", "b", 80)
            ),
        ),
        (
            "eps.yaml",
            endpoints("shop", "a", &[a.addr], &[]) + &endpoints("shop", "b", &[b.addr], &[]),
        ),
        ("ing.yaml", ing),
    ];
    (Env::start(&files).await, a, b)
}

/// (host, path, backend name or "" for a status-only expectation, status)
const CASES: &[(&str, &str, &str, u16)] = &[
    ("a.com", "/", "a", 200),
    ("A.COM:1234", "/any/thing?q=1", "a", 200),
    ("x.b.com", "/api", "b", 200),
    ("x.b.com", "/api/v1/items", "b", 200),
    ("x.b.com", "/apix", "", 404),
    ("x.b.com", "/x", "a", 200),
    ("x.b.com", "/x/", "", 404),
    ("y.x.b.com", "/api", "", 404),
    ("other.org", "/fallback/z", "b", 200),
    ("other.org", "/", "", 404),
    ("x.b.com", "/fallback", "", 404),
];

#[tokio::test]
async fn routing_over_every_protocol() {
    let (env, _a, _b) = shop(false).await;
    for &(host, path, backend, status) in CASES {
        let plain = client::h1(env.http(), get(host, path)).await;
        let h2c = client::h2c(env.http(), get_h2(host, path)).await;
        let (h2, tls) = client::https(env.https(), None, &["h2"], host, path).await;
        let (h1s, tls1) = client::https(env.https(), None, &["http/1.1"], host, path).await;
        assert_eq!(tls.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(tls1.alpn.as_deref(), Some(&b"http/1.1"[..]));
        for (proto, reply) in [
            ("HTTP/1.1", &plain),
            ("h2c", &h2c),
            ("h2", &h2),
            ("HTTP/1.1+TLS", &h1s),
        ] {
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{proto} {host}{path}: {reply:?}"
            );
            assert_eq!(reply.served_by(), backend, "{proto} {host}{path}");
            if status == 200 {
                let echo = reply.json();
                assert_eq!(
                    echo["protocol"], "HTTP/1.1",
                    "upstreams are spoken to in HTTP/1.1"
                );
                assert_eq!(echo["path"], path, "{proto}");
            }
        }
        assert_eq!(h2c.version, http::Version::HTTP_2);
    }
}

/// As ingress-nginx's `createServers`: an Ingress with rules gives its `spec.defaultBackend` to
/// the paths no rule of its hosts takes ("Using its backend as default upstream for all its
/// rules"), not to hosts no rule names; an Ingress with no rules is the catch-all.
#[tokio::test]
async fn default_backend_takes_unmatched_paths_of_matched_hosts() {
    let (env, _a, b) = shop(true).await;
    let reply = client::h1(env.http(), get("x.b.com", "/nothing")).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::OK, "a")
    );
    let reply = client::h1(env.http(), get("nobody.org", "/")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // An Ingress with a default backend and no rules serves the hosts no rule names.
    let catch_all = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: all, namespace: shop}\n\
        spec: {ingressClassName: portico, defaultBackend: {service: {name: b, port: {number: 80}}}}\n";
    env.apply("all.yaml", catch_all).await;
    let reply = client::h1(env.http(), get("nobody.org", "/")).await;
    assert_eq!(
        (reply.status, reply.served_by().as_str()),
        (StatusCode::OK, "b")
    );
    // The hosts of the Ingress with rules keep their own.
    let reply = client::h1(env.http(), get("x.b.com", "/nothing")).await;
    assert_eq!(reply.served_by(), "a");
    drop(b);
}

#[tokio::test]
async fn requests_reach_the_backend_byte_for_byte() {
    let (env, _a, _b) = shop(false).await;
    let request = "GET /a%2Fb/%7Ec/./x?x=1&y=%20&z&&=%zz HTTP/1.1\r\nHost: a.com\r\nUser-Agent: weird agent/1.0 (x)\r\n\
        X-Forwarded-For: 203.0.113.9\r\nConnection: close, x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Custom: kept\r\n\r\n";
    let raw = client::raw(env.http(), request.as_bytes()).await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // No Server field: ingress-nginx's default (`server-tokens: "false"`).
    assert!(!head.to_ascii_lowercase().contains("\r\nserver:"), "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["method"], "GET");
    // The path as routed: dot segments resolved and unreserved escapes decoded (`%7E` is
    // `~`), an encoded slash kept; the query exactly as it came.
    assert_eq!(echo["path"], "/a%2Fb/~c/x?x=1&y=%20&z&&=%zz");
    assert_eq!(echo["host"], "a.com");
    let h = &echo["headers"];
    assert_eq!(h["user-agent"], "weird agent/1.0 (x)");
    assert_eq!(h["host"], "a.com");
    assert_eq!(h["x-custom"], "kept");
    // The client's list is kept aside; X-Forwarded-For is the peer (ingress-nginx's default).
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-original-forwarded-for"], "203.0.113.9");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "a.com");
    assert_eq!(h["x-forwarded-port"], env.http().port().to_string());
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 32);
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "connection",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(h.get(hop).is_none(), "{hop} must not be forwarded: {h}");
    }
}

/// What every location of ingress-nginx sets replaces what a client sends: `Proxy` is
/// cleared (httpoxy: a CGI-style application would take it for its HTTP_PROXY), X-Scheme is
/// the scheme Portico saw (an application trusting it would believe a plain request came
/// over HTTPS), and the client's X-Forwarded-Host goes as X-Original-Forwarded-Host.
#[tokio::test]
async fn the_fields_ingress_nginx_sets_replace_the_clients() {
    let (env, _a, _b) = shop(false).await;
    let request = "GET /a HTTP/1.1\r\nHost: a.com\r\nProxy: http://attacker.example:3128\r\n\
        X-Scheme: https\r\nX-Forwarded-Host: evil.example\r\nX-Original-Forwarded-Host: forged\r\n\
        Connection: close\r\n\r\n";
    let raw = client::raw(env.http(), request.as_bytes()).await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &echo["headers"];
    assert!(h.get("proxy").is_none(), "Proxy must not be forwarded: {h}");
    assert_eq!(h["x-scheme"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], "a.com", "{h}");
    assert_eq!(h["x-original-forwarded-host"], "evil.example", "{h}");
    // Without a client X-Forwarded-Host there is no X-Original-Forwarded-Host (nginx sends
    // no field whose value is empty).
    let request = "GET /a HTTP/1.1\r\nHost: a.com\r\nX-Original-Forwarded-Host: forged\r\nConnection: close\r\n\r\n";
    let raw = client::raw(env.http(), request.as_bytes()).await;
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &echo["headers"];
    assert!(h.get("x-original-forwarded-host").is_none(), "{h}");
    assert_eq!(h["x-scheme"], "http", "{h}");
}

#[tokio::test]
async fn request_ids_are_kept_and_methods_and_bodies_pass() {
    let (env, _a, _b) = shop(false).await;
    let req = Request::post("/submit?x=1")
        .header("host", "a.com")
        .header("x-request-id", "my-id-1")
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();
    let reply = client::h1(env.http(), req).await;
    let echo = reply.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_length"], 11);
    assert_eq!(echo["headers"]["x-request-id"], "my-id-1");
    let reply = client::h2c(env.http(), get_h2("a.com", "/h2")).await;
    assert_eq!(
        reply.json()["headers"]["host"],
        "a.com",
        "HTTP/2 :authority becomes Host upstream"
    );
}

/// HTTP/2 clients split Cookie into one field per cookie (browsers do, for HPACK); an
/// HTTP/1.1 endpoint must get them as one field joined with "; " (RFC 9113 §8.2.3), or it
/// may read only the first.
#[tokio::test]
async fn http2_cookie_fields_reach_http1_endpoints_as_one() {
    let (env, _a, _b) = shop(false).await;
    let mut req = get_h2("a.com", "/cookies");
    for c in ["session=abc", "theme=dark", "lang=en"] {
        req.headers_mut()
            .append(http::header::COOKIE, c.parse().unwrap());
    }
    let reply = client::h2c(env.http(), req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["headers"]["cookie"],
        "session=abc; theme=dark; lang=en"
    );
    // An HTTP/1.1 request's fields go as they came.
    let req = Request::get("/cookies")
        .header("host", "a.com")
        .header("cookie", "a=1; b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = client::h1(env.http(), req).await;
    assert_eq!(reply.json()["headers"]["cookie"], "a=1; b=2");
}

#[tokio::test]
async fn tls_hosts_redirect_plain_http_unless_annotated() {
    let backend = Backend::start("r").await;
    let (secret, _) = tls_secret("shop", "r-cert", &["r.com", "s.com"]);
    let redirecting = ingress_full(
        "shop",
        "r",
        &[("r.com", vec![prefix("/", "r", 80)])],
        &[(&["r.com"], "r-cert")],
        "",
        None,
    );
    let exempt = ingress_full(
        "shop",
        "s",
        &[("s.com", vec![prefix("/", "r", 80)])],
        &[(&["s.com"], "r-cert")],
        "portico.dev/ssl-redirect: \"false\"",
        None,
    );
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "r", 80) + &endpoints("shop", "r", &[backend.addr], &[]),
        ),
        ("secret.yaml", secret),
        ("ing.yaml", format!("{redirecting}---\n{exempt}")),
    ];
    let env = Env::start(&files).await;
    let reply = client::h1(env.http(), get("r.com:80", "/p/q?x=1&y")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        format!("https://r.com:{}/p/q?x=1&y", env.https().port())
    );
    let (over_tls, _) =
        client::https(env.https(), Some("r.com"), &["http/1.1"], "r.com", "/p").await;
    assert_eq!(over_tls.status, StatusCode::OK, "HTTPS is served");
    assert_eq!(over_tls.json()["headers"]["x-forwarded-proto"], "https");
    let reply = client::h1(env.http(), get("s.com", "/p")).await;
    assert_eq!(reply.status, StatusCode::OK, "ssl-redirect: false");
}

#[tokio::test]
async fn errors_map_to_statuses() {
    let live = Backend::start("live").await;
    let mut dead = Backend::start("dead").await;
    dead.stop();
    // A port nothing listens on: bind, note it, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let services = ["none", "down", "half", "slow", "ghostless"]
        .map(|s| service("e", s, 80))
        .join("---\n");
    let eps = endpoints("e", "none", &[], &[live.addr])
        + &endpoints("e", "down", &[closed], &[])
        + &endpoints("e", "half", &[closed, live.addr], &[])
        + &endpoints("e", "slow", &[live.addr], &[]);
    let rules = [(
        "e.com",
        vec![
            prefix("/none", "none", 80),
            prefix("/down", "down", 80),
            prefix("/half", "half", 80),
            prefix("/slow", "slow", 80),
            prefix("/missing", "missing", 80),
        ],
    )];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services),
        ("eps.yaml", eps),
        ("ing.yaml", ingress("e", "errors", &rules)),
    ];
    let env = Env::start_with(&files, &["--upstream-response-timeout", "300ms"]).await;
    let status = |path: &'static str| {
        let addr = env.http();
        async move { client::h1(addr, get("e.com", path)).await }
    };
    assert_eq!(status("/nowhere").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        status("/none").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no ready endpoint"
    );
    assert_eq!(
        status("/missing").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "missing Service"
    );
    assert_eq!(
        status("/down").await.status,
        StatusCode::BAD_GATEWAY,
        "connection refused"
    );
    assert_eq!(
        status("/slow?delay_ms=3000").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    for _ in 0..6 {
        let reply = status("/half").await;
        assert_eq!(
            (reply.status, reply.served_by().as_str()),
            (StatusCode::OK, "live"),
            "retried on the other endpoint"
        );
    }
    let json = client::h1(
        env.http(),
        Request::get("/nowhere")
            .header("host", "e.com")
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(json.header("content-type"), "application/json");
    assert_eq!(json.json()["status"], 404);
    let text = status("/nowhere").await;
    assert!(text.header("content-type").starts_with("text/plain"));
    assert!(text.body.len() < 100, "short bodies");
}

#[tokio::test]
async fn admin_endpoints() {
    let (env, _a, _b) = shop(false).await;
    client::h1(env.http(), get("a.com", "/")).await;
    let admin = env.admin();
    assert_eq!(
        client::h1(admin, get("localhost", "/healthz")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client::h1(admin, get("localhost", "/readyz")).await.status,
        StatusCode::OK
    );
    let metrics = client::h1(admin, get("localhost", "/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("portico_requests_total{"), "{text}");
    assert!(text.contains("ingress=\"shop/web\""), "{text}");
    assert!(text.contains("portico_snapshot_generation"), "{text}");
    let debug = client::h1(admin, get("localhost", "/debug/snapshot"))
        .await
        .json();
    assert!(
        debug["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["host"] == "a.com"),
        "{debug}"
    );
    let explained = client::h1(
        admin,
        get(
            "localhost",
            "/debug/explain?url=http%3A%2F%2Fx.b.com%2Fapi%2Fv1",
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&explained.body);
    assert!(
        text.contains("route: Ingress shop/web, host *.b.com, path /api (Prefix)"),
        "{text}"
    );
    assert!(text.contains("Service shop/b port 80/TCP"), "{text}");
    assert!(text.contains("1 ready, 0 not ready"), "{text}");
    let usage = client::h1(admin, get("localhost", "/debug/explain")).await;
    assert_eq!(usage.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    use clap::Parser;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cli = portico::config::Cli::try_parse_from([
        "portico",
        "--manifests",
        dir.path().to_str().unwrap(),
        "--http-addr",
        &addr,
        "--https-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    let err = portico::run::start(&cli.run).await.unwrap_err().to_string();
    assert!(err.contains(&addr) && err.contains("HTTP"), "{err}");
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let (env, _a, _b) = shop(false).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.com\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "x".repeat(100 * 1024)
    );
    let reply = client::raw(env.http(), big.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = client::raw(
        env.http(),
        format!("GET / HTTP/1.1\r\nHost: a.com\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let ok = client::raw(
        env.http(),
        b"GET / HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

/// An upstream on loopback that runs `serve` on each connection it accepts, with the
/// connection's number (from 0); returns its address and the count of connections accepted.
async fn scripted_upstream<F, Fut>(
    serve: F,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
)
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(stream, n));
        }
    });
    (addr, accepted)
}

/// Reads one request head from `stream`; false if it closed first.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let (mut head, mut buf) = (Vec::new(), [0u8; 4096]);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Files routing c.com to a Service `name` whose one endpoint is `addr`.
fn one_endpoint(name: &str, addr: std::net::SocketAddr) -> [(&'static str, String); 4] {
    [
        ("class.yaml", class()),
        ("svc.yaml", service("c", name, 80)),
        ("eps.yaml", endpoints("c", name, &[addr], &[])),
        (
            "ing.yaml",
            ingress("c", name, &[("c.com", vec![prefix("/", name, 80)])]),
        ),
    ]
}

/// An upstream that answers each connection's first request keep-alive style (no
/// `Connection: close`) and then closes the connection, as servers with short idle timeouts
/// do. Portico must notice and not send the next request into a closed connection.
#[tokio::test]
async fn upstreams_closing_idle_connections_cost_no_request() {
    use tokio::io::AsyncWriteExt;
    let (addr, accepted) = scripted_upstream(|mut stream, _| async move {
        if read_request_head(&mut stream).await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nonce\r\n")
                .await;
        }
        // Closing at once: the connection is idle in Portico's pool by now.
    })
    .await;
    let env = Env::start(&one_endpoint("closer", addr)).await;
    for i in 0..10 {
        let reply = client::h1(env.http(), get("c.com", "/")).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(reply.body, Bytes::from_static(b"once\r\n"));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        10,
        "a connection each"
    );
}

/// An upstream that keeps a connection open after its first response but closes it when the
/// next request arrives, unanswered (an idle timeout racing the request). The request had no
/// body, so Portico sends it once more on a new connection and the client sees nothing of it.
#[tokio::test]
async fn a_request_a_reused_connection_drops_unanswered_goes_again_on_a_new_one() {
    use tokio::io::AsyncWriteExt;
    let (addr, accepted) = scripted_upstream(|mut stream, n| async move {
        if !read_request_head(&mut stream).await {
            return;
        }
        let body = format!("conn{n}");
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        // The next request is read and left unanswered: the connection closes.
        read_request_head(&mut stream).await;
    })
    .await;
    let env = Env::start(&one_endpoint("dropper", addr)).await;
    let first = client::h1(env.http(), get("c.com", "/")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, Bytes::from_static(b"conn0"));
    // Pooled and reused: the upstream reads this one and closes; it goes again on conn1.
    let second = client::h1(env.http(), get("c.com", "/")).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    assert_eq!(second.body, Bytes::from_static(b"conn1"));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The client header timeout: a stalled request head is closed once it passes; an idle
/// keep-alive connection has the keep-alive timeout instead (75 s by default, as nginx's
/// `keepalive_timeout` in ingress-nginx); a request whose response takes longer is not cut.
#[tokio::test]
async fn the_client_header_timeout_closes_stalled_heads_not_kept_alive_connections() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let slow = Backend::start("slow").await;
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", service("t", "slow", 80)),
        ("eps.yaml", endpoints("t", "slow", &[slow.addr], &[])),
        (
            "ing.yaml",
            ingress("t", "slow", &[("t.com", vec![prefix("/", "slow", 80)])]),
        ),
    ];
    let env = Env::start_with(&files, &["--client-header-timeout", "400ms"]).await;
    // Reads until the peer closes; returns what came and when the close was seen.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, Instant) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return (got, Instant::now()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("still open after 5 s: {}", String::from_utf8_lossy(&got)),
            }
        }
    }

    // A head that never ends.
    let mut stalled = tokio::net::TcpStream::connect(env.http()).await.unwrap();
    let opened = Instant::now();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: t.com\r\n")
        .await
        .unwrap();
    let (got, closed) = until_closed(&mut stalled).await;
    let after = closed - opened;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        after >= Duration::from_millis(350),
        "closed after {after:?}: too early"
    );

    // An idle keep-alive connection, after one response: still open past the header timeout.
    let mut idle = tokio::net::TcpStream::connect(env.http()).await.unwrap();
    idle.write_all(b"GET /one HTTP/1.1\r\nHost: t.com\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    idle.write_all(b"GET /two HTTP/1.1\r\nHost: t.com\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "kept alive past the header timeout"
    );

    // A response slower than the timeout is not cut.
    let reply = client::h1(env.http(), get("t.com", "/slow?delay_ms=900")).await;
    assert_eq!(reply.status, StatusCode::OK);
}
