//! The PROXY protocol (issue: ingress-nginx compatibility II, client address), over real
//! sockets: with `use-proxy-protocol`, the HTTP and HTTPS listeners read a v1 or v2 header
//! first and its source is the client address (X-Forwarded-For, X-Real-IP, access lists); a
//! connection without a valid header, or too slow to send it, is closed; a PROXY header from
//! a peer outside `proxy-real-ip-cidr` (when set) does not name the client.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::Env;
use support::client::{Reply, get, h1_over, tls_config};
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

/// Connects to `addr`, writes `header`, then one GET over HTTP/1.1 (TLS when `tls`).
async fn through(addr: SocketAddr, header: &[u8], tls: bool, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(header).await.unwrap();
    let req = get("a.example", path);
    if tls {
        let name = rustls_pki_types::ServerName::try_from("a.example").unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls_config(&["http/1.1"]));
        let stream = connector.connect(name, stream).await.unwrap();
        timeout(Duration::from_secs(10), h1_over(stream, req))
            .await
            .unwrap()
    } else {
        timeout(Duration::from_secs(10), h1_over(stream, req))
            .await
            .unwrap()
    }
}

/// Whether Portico closes a connection that sent `bytes` (reads to the end, bounded).
async fn closed_after(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    timeout(Duration::from_secs(15), stream.read_to_end(&mut out))
        .await
        .expect("closed by Portico")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn proxy_protocol_names_the_client_and_refuses_connections_without_it() {
    timeout(LIMIT, proxy_protocol()).await.expect("bounded");
}

async fn proxy_protocol() {
    let web = support::Backend::start("web").await;
    let (secret, _) = tls_secret("shop", "cert", &["a.example"]);
    let allow = ingress_full(
        "shop",
        "allow",
        &[("a.example", vec![prefix("/allow", "web", 80)])],
        &[],
        "nginx.ingress.kubernetes.io/whitelist-source-range: 203.0.113.0/24",
        None,
    );
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("secret.yaml", secret),
        (
            "ing.yaml",
            ingress_full(
                "shop",
                "web",
                &[("a.example", vec![prefix("/", "web", 80)])],
                &[(&["a.example"], "cert")],
                "",
                None,
            ),
        ),
        ("allow.yaml", allow),
        (
            "configmap.yaml",
            configmap(
                "use-proxy-protocol: \"true\", proxy-protocol-header-timeout: \"1s\", ssl-redirect: \"false\"",
            ),
        ),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    let seen = |r: &Reply| {
        assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);
        let h = &r.json()["headers"];
        (
            h["x-forwarded-for"].as_str().unwrap_or("").to_string(),
            h["x-real-ip"].as_str().unwrap_or("").to_string(),
        )
    };
    // v1 on the HTTP listener, v2 on the HTTPS one (before TLS).
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n";
    let reply = through(env.http(), v1, false, "/").await;
    assert_eq!(seen(&reply), ("203.0.113.7".into(), "203.0.113.7".into()));
    let reply = through(env.https(), &v2_tcp4([203, 0, 113, 9], 40000), true, "/").await;
    assert_eq!(seen(&reply), ("203.0.113.9".into(), "203.0.113.9".into()));
    // The allowlist judges the PROXY source.
    let reply = through(env.http(), v1, false, "/allow").await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let other = b"PROXY TCP4 198.51.100.1 127.0.0.1 51234 80\r\n";
    let reply = through(env.http(), other, false, "/allow").await;
    assert_eq!(reply.status, http::StatusCode::FORBIDDEN);
    // LOCAL / UNKNOWN: the peer is the client.
    let reply = through(env.http(), b"PROXY UNKNOWN\r\n", false, "/").await;
    assert_eq!(seen(&reply).0, "127.0.0.1");
    // No header, garbage, a header too slow: closed, nothing served.
    let plain = b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_eq!(closed_after(env.http(), plain).await, "");
    assert_eq!(
        closed_after(env.http(), b"PROXY TCP4 nonsense\r\n\r\n").await,
        ""
    );
    assert_eq!(
        closed_after(env.https(), &[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]).await,
        ""
    );
    let started = std::time::Instant::now();
    assert_eq!(closed_after(env.http(), b"PROXY TCP4 203.").await, "");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the 1 s timeout"
    );
    // A PROXY header from a peer outside proxy-real-ip-cidr does not name the client.
    env.apply(
        "configmap.yaml",
        &configmap(
            "use-proxy-protocol: \"true\", proxy-real-ip-cidr: \"10.0.0.0/8\", ssl-redirect: \"false\"",
        ),
    )
    .await;
    let reply = through(env.http(), v1, false, "/").await;
    assert_eq!(seen(&reply).0, "127.0.0.1");
    // Off again: a header is not expected (and would be a bad request).
    env.apply("configmap.yaml", &configmap("ssl-redirect: \"false\""))
        .await;
    let reply = timeout(
        Duration::from_secs(10),
        h1_over(
            TcpStream::connect(env.http()).await.unwrap(),
            get("a.example", "/"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(seen(&reply).0, "127.0.0.1");
    env.shutdown().await;
}

/// Connects to `addr`, writes `header`, then one GET over plain HTTP/1.1 with `fields`.
async fn through_with(
    addr: SocketAddr,
    header: &[u8],
    path: &str,
    fields: &[(&str, &str)],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(header).await.unwrap();
    let mut req = get("a.example", path);
    for (k, v) in fields {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    timeout(Duration::from_secs(10), h1_over(stream, req))
        .await
        .unwrap()
}

/// With `use-proxy-protocol` the PROXY source is the client, final: ingress-nginx renders
/// `real_ip_header proxy_protocol`, so an X-Forwarded-For the client writes never names it,
/// even with `use-forwarded-headers` and nginx's `proxy-real-ip-cidr: 0.0.0.0/0` (an
/// allowlist bypass before). A PROXY destination port 443 (a balancer that terminated TLS)
/// makes the request HTTPS, as ingress-nginx's `pass_access_scheme`: no HTTPS redirect loop,
/// X-Forwarded-Proto https.
#[tokio::test]
async fn a_proxy_source_is_final_and_port_443_means_https() {
    timeout(LIMIT, proxy_final()).await.expect("bounded");
}

async fn proxy_final() {
    let web = support::Backend::start("web").await;
    let (secret, _) = tls_secret("shop", "cert", &["a.example"]);
    let ing = |name: &str, path: &str, annotations: &str| {
        ingress_full(
            "shop",
            name,
            &[("a.example", vec![prefix(path, "web", 80)])],
            &[(&["a.example"], "cert")],
            annotations,
            None,
        )
    };
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("secret.yaml", secret),
        ("ing.yaml", ing("web", "/", "")),
        (
            "allow.yaml",
            ing(
                "allow",
                "/allow",
                "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8",
            ),
        ),
        (
            "configmap.yaml",
            configmap(
                "use-proxy-protocol: \"true\", use-forwarded-headers: \"true\", proxy-real-ip-cidr: \"0.0.0.0/0\", compute-full-forwarded-for: \"true\"",
            ),
        ),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    let to_443 = b"PROXY TCP4 8.8.8.8 127.0.0.1 51234 443\r\n";
    let to_80 = b"PROXY TCP4 8.8.8.8 127.0.0.1 51234 80\r\n";
    let forged = [
        ("x-forwarded-for", "10.1.1.1"),
        ("x-real-ip", "10.1.1.1"),
        ("x-forwarded-proto", "https"),
    ];
    // The allowlist judges the PROXY source, whatever X-Forwarded-For says.
    let reply = through_with(env.http(), to_443, "/allow", &forged).await;
    assert_eq!(reply.status, http::StatusCode::FORBIDDEN, "{reply:?}");
    // The endpoint learns the PROXY source; the scheme is HTTPS (port 443): no redirect.
    let reply = through_with(env.http(), to_443, "/", &forged).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
    let h = &reply.json()["headers"];
    assert_eq!(h["x-real-ip"], "8.8.8.8", "{h:#}");
    assert_eq!(h["x-forwarded-proto"], "https", "{h:#}");
    assert_eq!(h["x-forwarded-for"], "8.8.8.8", "{h:#}");
    assert_eq!(h["x-original-forwarded-for"], "10.1.1.1", "{h:#}");
    // To port 80, the host's certificate means the HTTPS redirect (the client's
    // X-Forwarded-Proto counts for nothing).
    let reply = through_with(env.http(), to_80, "/", &forged).await;
    assert_eq!(
        reply.status,
        http::StatusCode::PERMANENT_REDIRECT,
        "{reply:?}"
    );
    env.shutdown().await;
}
