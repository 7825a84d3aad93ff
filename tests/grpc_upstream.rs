//! HTTP/2 to endpoints (issue: backends, §3, first part) over real sockets:
//! `backend-protocol: GRPC` (h2c prior knowledge) and `GRPCS` (TLS, ALPN h2) to an endpoint
//! that speaks gRPC's framing over hyper's HTTP/2 server: unary and server-streaming calls with
//! their trailers (`grpc-status`, custom and `-bin` metadata) unchanged, `te: trailers` kept,
//! errors as gRPC clients expect them (HTTP 200, trailers-only, `grpc-status: 14`), every
//! request multiplexed on one upstream connection, and an HTTP/1.1 client served by an HTTP/2
//! endpoint.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::Env;
use support::manifests::{class, endpoints, nginx_ingress, service};
use support::pki::{ca, cert};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One gRPC message (uncompressed): its 5-byte prefix and bytes.
fn message(bytes: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

/// The gRPC-speaking endpoint: `/echo.Echo/Unary` answers the request's messages, with what
/// it saw of the request in its headers and trailers `grpc-status: 0`, `x-trace`,
/// `x-blob-bin`; `/echo.Echo/Stream` streams three messages then the trailers;
/// `/echo.Echo/Missing` is a trailers-only NOT_FOUND.
async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let seen = [
        ("x-seen-version", format!("{:?}", req.version())),
        (
            "x-seen-te",
            req.headers()
                .get("te")
                .map_or("none".into(), |v| v.to_str().unwrap().to_string()),
        ),
        (
            "x-seen-authority",
            req.uri()
                .authority()
                .map_or("none".into(), |a| a.to_string()),
        ),
        (
            "x-seen-forwarded-for",
            req.headers()
                .get("x-forwarded-for")
                .map_or("none".into(), |v| v.to_str().unwrap().to_string()),
        ),
        // Hidden by Portico, as nginx hides an endpoint's Server (server-tokens false).
        ("server", "grpc-endpoint/1.0".to_string()),
    ];
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if path == "/echo.Echo/Slow" {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("x-trace", "abc".parse().unwrap());
    trailers.insert("x-blob-bin", "AAEC".parse().unwrap());
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = match path.as_str() {
        "/echo.Echo/Unary" | "/echo.Echo/Slow" => {
            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))]
        }
        "/echo.Echo/Stream" => {
            let mut frames: Vec<_> = ["one", "two", "three"]
                .iter()
                .map(|m| Ok(Frame::data(message(m.as_bytes()))))
                .collect();
            frames.push(Ok(Frame::trailers(trailers)));
            frames
        }
        "/plain" => vec![Ok(Frame::data(Bytes::from_static(b"plain over h2")))],
        "/huge-head" => {
            // A response head far past what Portico takes from an endpoint (64 KiB).
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            let big = "x".repeat(8 * 1024);
            for i in 0..20 {
                response.headers_mut().insert(
                    format!("x-big-{i}").parse::<http::HeaderName>().unwrap(),
                    big.parse().unwrap(),
                );
            }
            return Ok(response);
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            let h = response.headers_mut();
            h.insert("content-type", "application/grpc".parse().unwrap());
            h.insert("grpc-status", "5".parse().unwrap());
            h.insert("grpc-message", "no%20such%20method".parse().unwrap());
            return Ok(response);
        }
    };
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
    response
        .headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    for (name, value) in seen {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    Ok(response)
}

/// The endpoint on 127.0.0.1: HTTP/2 prior knowledge, or TLS with ALPN h2 when `tls` is
/// given (certificate and key PEM); counts the connections it accepted.
async fn endpoint(tls: Option<(String, String)>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let acceptor = tls.map(|(cert, key)| {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let service = service_fn(handle);
                match acceptor {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// What a gRPC client got: status, headers, body, trailers.
struct Call {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// A new h2c (prior knowledge) connection to Portico's HTTP listener.
async fn h2c(portico: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(portico).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A gRPC call over a new h2c connection to Portico's HTTP listener.
async fn call(portico: SocketAddr, path: &str, payload: &[u8]) -> Call {
    let mut sender = h2c(portico).await;
    let request = Request::post(format!("http://g.example{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message(payload)))
        .unwrap();
    let response = timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = response.into_parts();
    let collected = timeout(LIMIT, body.collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned();
    Call {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

fn files(services: String, annotations: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    vec![
        ("class.yaml", class()),
        ("svc.yaml", services),
        (
            "ing.yaml",
            nginx_ingress("grpc", "g.example", "/", "grpc", annotations),
        ),
    ]
}

#[tokio::test]
async fn grpc_goes_over_http2_to_the_endpoint() {
    timeout(LIMIT, grpc_h2c()).await.expect("bounded");
}

async fn grpc_h2c() {
    let (upstream, accepted) = endpoint(None).await;
    let services = service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[upstream], &[]);
    let env = Env::start(&files(services, &[("backend-protocol", "GRPC")])).await;
    // Unary: the message back, the trailers unchanged, te: trailers and the forwarding fields
    // on the request.
    let unary = call(env.http(), "/echo.Echo/Unary", b"hello").await;
    assert_eq!(unary.status, StatusCode::OK);
    assert_eq!(unary.body, message(b"hello"));
    let trailers = unary.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trace"], "abc");
    assert_eq!(trailers["x-blob-bin"], "AAEC");
    assert_eq!(unary.headers["x-seen-version"], "HTTP/2.0");
    assert_eq!(unary.headers["x-seen-te"], "trailers");
    assert_eq!(unary.headers["x-seen-authority"], "g.example");
    assert_eq!(unary.headers["x-seen-forwarded-for"], "127.0.0.1");
    assert!(unary.headers.get("server").is_none(), "{:?}", unary.headers);
    // Server streaming: every message, then the trailers.
    let streamed = call(env.http(), "/echo.Echo/Stream", b"").await;
    let mut want = Vec::new();
    for m in ["one", "two", "three"] {
        want.extend_from_slice(&message(m.as_bytes()));
    }
    assert_eq!(streamed.body, Bytes::from(want));
    assert_eq!(streamed.trailers.expect("trailers")["grpc-status"], "0");
    // A trailers-only error of the endpoint passes as it is.
    let missing = call(env.http(), "/echo.Echo/Missing", b"").await;
    assert_eq!(missing.status, StatusCode::OK);
    assert_eq!(missing.headers["grpc-status"], "5");
    assert_eq!(missing.headers["grpc-message"], "no%20such%20method");
    // Concurrent calls share one upstream connection (HTTP/2 multiplexing).
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let portico = env.http();
            tokio::spawn(async move {
                let payload = format!("call {i}");
                let got = call(portico, "/echo.Echo/Unary", payload.as_bytes()).await;
                assert_eq!(got.body, message(payload.as_bytes()));
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "one multiplexed connection"
    );
    // A response head past 64 KiB is refused (502), and the connection serves on.
    let reply =
        support::client::h1(env.http(), support::client::get("g.example", "/huge-head")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{:?}", reply.status);
    // An HTTP/1.1 client is served by the HTTP/2 endpoint too.
    let reply = support::client::h1(env.http(), support::client::get("g.example", "/plain")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"plain over h2");
    env.shutdown().await;
}

#[tokio::test]
async fn grpcs_goes_over_tls_with_alpn_h2() {
    timeout(LIMIT, grpcs()).await.expect("bounded");
}

async fn grpcs() {
    let authority = ca("grpc CA");
    let pair = cert(&authority, "grpc", &["grpc.shop.svc"]);
    let (upstream, _) = endpoint(Some(pair)).await;
    let services = service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[upstream], &[]);
    let env = Env::start(&files(services, &[("backend-protocol", "grpcs")])).await;
    let unary = call(env.http(), "/echo.Echo/Unary", b"secure").await;
    assert_eq!(unary.status, StatusCode::OK);
    assert_eq!(unary.body, message(b"secure"));
    assert_eq!(unary.trailers.expect("trailers")["grpc-status"], "0");
    env.shutdown().await;
}

#[tokio::test]
async fn grpc_clients_get_grpc_errors() {
    timeout(LIMIT, grpc_errors()).await.expect("bounded");
}

async fn grpc_errors() {
    // No ready endpoint, and an endpoint that refuses connections: HTTP 200, trailers-only,
    // grpc-status 14 (UNAVAILABLE).
    let refused = support::dead_addr();
    for (name, services) in [
        (
            "no endpoint",
            service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[], &[refused]),
        ),
        (
            "refused",
            service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[refused], &[]),
        ),
    ] {
        let env = Env::start(&files(services, &[("backend-protocol", "GRPC")])).await;
        let got = call(env.http(), "/echo.Echo/Unary", b"x").await;
        assert_eq!(got.status, StatusCode::OK, "{name}");
        assert_eq!(got.headers["grpc-status"], "14", "{name}");
        assert_eq!(got.headers["content-type"], "application/grpc", "{name}");
        assert!(got.body.is_empty(), "{name}");
        env.shutdown().await;
    }
}

/// A listener that reads whatever comes and answers `answer` once (then closes), or never
/// answers when `answer` is empty.
async fn misbehaving(answer: &'static [u8]) -> SocketAddr {
    misbehaving_then(answer, false).await
}

/// As `misbehaving`; with `stay`, the connection stays open after the answer, reading and never
/// writing again (until the peer goes).
async fn misbehaving_then(answer: &'static [u8], stay: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if !answer.is_empty() {
                    let _ = stream.write_all(answer).await;
                }
                if answer.is_empty() || stay {
                    // Never a byte (more) back, until the peer goes.
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    addr
}

/// An empty SETTINGS frame (a server's preface).
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A server preface, then a DATA frame header announcing 1 MiB on stream 1 (past the 16 KiB
/// frame size Portico allows).
const OVERSIZED: &[u8] = &[
    0, 0, 0, 4, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
];

/// A unary call (message "x") to `host` on an open h2c connection to Portico.
async fn unary_on(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    host: &str,
) -> Response<Incoming> {
    let request = Request::post(format!("http://{host}/echo.Echo/Unary"))
        .header("content-type", "application/grpc")
        .body(Full::new(message(b"x")))
        .unwrap();
    timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn endpoints_that_do_not_speak_http2_get_clear_statuses() {
    timeout(LIMIT, wrong_protocol()).await.expect("bounded");
}

async fn wrong_protocol() {
    let http1 =
        misbehaving(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    let silent = misbehaving(b"").await;
    // Sends its SETTINGS, never acknowledges Portico's and never answers.
    let unacked = misbehaving_then(SETTINGS, true).await;
    let oversized = misbehaving_then(OVERSIZED, true).await;
    // Plain HTTP/1.1 where TLS is expected (GRPCS): the handshake reads garbage.
    let not_tls = misbehaving_then(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        true,
    )
    .await;
    let services = service("shop", "grpc", 80)
        + &endpoints("shop", "grpc", &[http1], &[])
        + "---\n"
        + &service("shop", "silent", 80)
        + &endpoints("shop", "silent", &[silent], &[])
        + "---\n"
        + &service("shop", "unacked", 80)
        + &endpoints("shop", "unacked", &[unacked], &[])
        + "---\n"
        + &service("shop", "oversized", 80)
        + &endpoints("shop", "oversized", &[oversized], &[])
        + "---\n"
        + &service("shop", "nottls", 80)
        + &endpoints("shop", "nottls", &[not_tls], &[]);
    let ingresses = nginx_ingress(
        "grpc",
        "g.example",
        "/",
        "grpc",
        &[("backend-protocol", "GRPC")],
    ) + "---\n"
        + &nginx_ingress(
            "silent",
            "s.example",
            "/",
            "silent",
            &[("backend-protocol", "GRPC"), ("proxy-read-timeout", "1")],
        )
        + "---\n"
        + &nginx_ingress(
            "deadline",
            "d.example",
            "/",
            "silent",
            &[("backend-protocol", "GRPC")],
        )
        + "---\n"
        + &nginx_ingress(
            "unacked",
            "u.example",
            "/",
            "unacked",
            &[("backend-protocol", "GRPC"), ("proxy-read-timeout", "1")],
        )
        + "---\n"
        + &nginx_ingress(
            "oversized",
            "o.example",
            "/",
            "oversized",
            &[("backend-protocol", "GRPC")],
        )
        + "---\n"
        + &nginx_ingress(
            "nottls",
            "t.example",
            "/",
            "nottls",
            &[("backend-protocol", "GRPCS")],
        );
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services),
        ("ing.yaml", ingresses),
    ];
    let env = Env::start(&files).await;
    // An HTTP/1.1 endpoint on an h2c route: 502 every time, none hangs (a broken connection
    // is not kept for the next request).
    for _ in 0..3 {
        let reply = support::client::h1(env.http(), support::client::get("g.example", "/x")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        let got = call(env.http(), "/echo.Echo/Unary", b"x").await;
        assert_eq!(got.headers["grpc-status"], "14");
    }
    // An endpoint that never answers (not even its SETTINGS): the route's read timeout, 504,
    // and DEADLINE_EXCEEDED for a gRPC client.
    let started = std::time::Instant::now();
    let reply = support::client::h1(env.http(), support::client::get("s.example", "/x")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut sender = h2c(env.http()).await;
    let response = unary_on(&mut sender, "s.example").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "4");
    // The call's own deadline (grpc-timeout), shorter than the route's read timeout (60 s
    // here): DEADLINE_EXCEEDED when it passes.
    let started = std::time::Instant::now();
    let request = Request::post("http://d.example/echo.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "300m")
        .body(Full::new(message(b"x")))
        .unwrap();
    let response = timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "4");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // SETTINGS never acknowledged and no answer: the read timeout (504), each time (the
    // connection is not kept as if it worked).
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let reply = support::client::h1(env.http(), support::client::get("u.example", "/x")).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    // An oversized frame: a connection error, 502 and UNAVAILABLE, every time.
    for _ in 0..2 {
        let reply = support::client::h1(env.http(), support::client::get("o.example", "/x")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        let response = unary_on(&mut sender, "o.example").await;
        assert_eq!(response.headers()["grpc-status"], "14");
    }
    // Not TLS on a GRPCS route: 502, every time.
    for _ in 0..2 {
        let reply = support::client::h1(env.http(), support::client::get("t.example", "/x")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_busy_connection_gets_a_sibling() {
    timeout(LIMIT, busy()).await.expect("bounded");
}

/// 150 calls in flight at once: past 100 streams on one upstream connection, Portico opens a
/// second rather than queue them all on the first.
async fn busy() {
    let (upstream, accepted) = endpoint(None).await;
    let services = service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[upstream], &[]);
    let env = Env::start(&files(services, &[("backend-protocol", "GRPC")])).await;
    let calls: Vec<_> = (0..150)
        .map(|i| {
            let portico = env.http();
            tokio::spawn(async move {
                let payload = format!("slow {i}");
                let got = call(portico, "/echo.Echo/Slow", payload.as_bytes()).await;
                assert_eq!(got.body, message(payload.as_bytes()));
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        2,
        "100 streams, then a second connection"
    );
    // Once they ended, one connection carries the next calls again.
    for i in 0..5 {
        let got = call(env.http(), "/echo.Echo/Unary", format!("{i}").as_bytes()).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
    env.shutdown().await;
}

#[tokio::test]
async fn health_checks_speak_http2_to_h2c_ports() {
    timeout(LIMIT, h2c_health()).await.expect("bounded");
}

/// A Service port with `appProtocol: kubernetes.io/h2c` and health checks: the checks speak
/// HTTP/2 (the gRPC endpoint passes them), and an endpoint that speaks only HTTP/1.1 fails
/// them and stops getting calls.
async fn h2c_health() {
    let (good, _) = endpoint(None).await;
    let bad =
        misbehaving(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    let services = "apiVersion: v1\nkind: Service\nmetadata:\n  name: grpc\n  namespace: shop\n  annotations:\n    portico.dev/health-check-path: /grpc.health.v1.Health/Check\n    portico.dev/health-check-interval: 100ms\n    portico.dev/health-check-unhealthy-threshold: \"1\"\nspec:\n  ports: [{port: 80, appProtocol: kubernetes.io/h2c}]\n---\n".to_string()
        + &endpoints("shop", "grpc", &[good, bad], &[]);
    let env = Env::start(&files(services, &[])).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the HTTP/1.1-only endpoint still gets calls"
        );
        let got = call(env.http(), "/echo.Echo/Unary", b"x").await;
        let ok = got
            .trailers
            .as_ref()
            .is_some_and(|t| t["grpc-status"] == "0");
        in_a_row = if ok { in_a_row + 1 } else { 0 };
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_stream_reset_mid_body_reaches_the_client_and_spares_the_connection() {
    timeout(LIMIT, reset_mid_stream()).await.expect("bounded");
}

/// An endpoint whose `/reset` response sends one message and then resets the stream
/// (RST_STREAM: hyper resets a stream whose body fails); `/ok` answers normally.
async fn resetting_endpoint() -> (SocketAddr, Arc<AtomicUsize>) {
    type Failing = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
    async fn handle(req: Request<Incoming>) -> Result<Response<Failing>, Infallible> {
        let reset = req.uri().path() == "/reset";
        let _ = req.into_body().collect().await;
        // The first message, then (a moment later, so that it has gone out) the reset or
        // the trailers.
        let frames = futures_util::stream::unfold(0u8, move |step| async move {
            let frame = match step {
                0 => Ok(Frame::data(message(b"first"))),
                1 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if reset {
                        Err(std::io::Error::other("the endpoint gives up"))
                    } else {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        Ok(Frame::trailers(trailers))
                    }
                }
                _ => return None,
            };
            Some((frame, step + 1))
        });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        Ok(response)
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
    (addr, accepted)
}

async fn reset_mid_stream() {
    let (upstream, accepted) = resetting_endpoint().await;
    let services = service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[upstream], &[]);
    let env = Env::start(&files(services, &[("backend-protocol", "GRPC")])).await;
    for _ in 0..3 {
        // The reset reaches the client as a failed body (never a clean end without
        // grpc-status).
        let mut sender = h2c(env.http()).await;
        let request = Request::post("http://g.example/reset")
            .header("content-type", "application/grpc")
            .body(Full::new(message(b"x")))
            .unwrap();
        let response = timeout(LIMIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = timeout(LIMIT, response.into_body().collect())
            .await
            .unwrap();
        assert!(body.is_err(), "the client saw a clean end: {body:?}");
        // The next call on the same upstream connection is served.
        let ok = call(env.http(), "/ok", b"y").await;
        assert_eq!(ok.trailers.expect("trailers")["grpc-status"], "0");
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "a reset stream spares its connection"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_that_closes_after_each_call_loses_none() {
    timeout(LIMIT, goaway()).await.expect("bounded");
}

/// An endpoint that ends every connection gracefully (GOAWAY) after its first call, as one
/// being restarted or rotating connections does: every call through Portico is served.
async fn goaway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let (done, mut served) = tokio::sync::mpsc::channel::<()>(1);
                let service = service_fn(move |req| {
                    let done = done.clone();
                    async move {
                        let response = handle(req).await;
                        let _ = done.try_send(());
                        response
                    }
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = served.recv() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    let services = service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[upstream], &[]);
    let env = Env::start(&files(services, &[("backend-protocol", "GRPC")])).await;
    for i in 0..20 {
        let payload = format!("call {i}");
        let got = call(env.http(), "/echo.Echo/Unary", payload.as_bytes()).await;
        assert_eq!(
            got.body,
            message(payload.as_bytes()),
            "call {i}: {:?}",
            got.headers
        );
    }
    assert!(
        accepted.load(Ordering::Relaxed) >= 10,
        "the endpoint closed its connections"
    );
    env.shutdown().await;
}

/// An h2c endpoint (h2's own server) that refuses its first `refuse` streams with
/// RST_STREAM(REFUSED_STREAM) and answers the others 200 "served"; it counts the streams.
async fn refusing(refuse: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let Ok(mut body) = respond.send_response(Response::new(()), false) else {
                        continue;
                    };
                    let _ = body.send_data(Bytes::from_static(b"served"), true);
                }
            });
        }
    });
    (addr, streams)
}

/// An endpoint's REFUSED_STREAM (RFC 9113 §8.7: the request was not processed) sends a request
/// whose body is all in hand once more, instead of a 502; a second refusal is the 502.
#[tokio::test]
async fn a_refused_stream_goes_once_more() {
    timeout(LIMIT, refused_stream()).await.expect("bounded");
}

async fn refused_stream() {
    let (once, once_streams) = refusing(1).await;
    let (always, _) = refusing(usize::MAX).await;
    let services = service("shop", "once", 80)
        + &endpoints("shop", "once", &[once], &[])
        + "---\n"
        + &service("shop", "always", 80)
        + &endpoints("shop", "always", &[always], &[]);
    let ingresses = nginx_ingress(
        "once",
        "once.example",
        "/",
        "once",
        &[("backend-protocol", "GRPC")],
    ) + "---\n"
        + &nginx_ingress(
            "always",
            "always.example",
            "/",
            "always",
            &[("backend-protocol", "GRPC")],
        );
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services),
        ("ing.yaml", ingresses),
    ];
    let env = Env::start(&files).await;
    // A POST with its body: refused once, sent again, served.
    let post = Request::post("/x")
        .header("host", "once.example")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let reply = support::client::h1(env.http(), post).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "served");
    assert_eq!(once_streams.load(Ordering::SeqCst), 2);
    // Refused every time: one more try, then 502 (and UNAVAILABLE for a gRPC client).
    let reply = support::client::h1(env.http(), support::client::get("always.example", "/x")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    let mut sender = h2c(env.http()).await;
    let response = unary_on(&mut sender, "always.example").await;
    assert_eq!(response.headers()["grpc-status"], "14");
    env.shutdown().await;
}

/// An h2c endpoint (h2's own server) that opens no flow-control window (SETTINGS
/// INITIAL_WINDOW_SIZE 0): it accepts every stream and never reads it nor answers.
async fn taking_nothing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                builder.initial_window_size(0);
                let Ok(mut conn) = builder.handshake::<_, Bytes>(socket).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(stream)) = conn.accept().await {
                    held.push(stream);
                }
            });
        }
    });
    addr
}

/// nginx's `proxy_send_timeout` bounds the wait between two writes of the request: an HTTP/2
/// endpoint that takes none of a streamed body (no flow-control window) is a 504 after the
/// route's send timeout, not a request held until the client gives up.
#[tokio::test]
async fn an_endpoint_that_takes_no_body_is_a_504_after_the_send_timeout() {
    timeout(LIMIT, no_window()).await.expect("bounded");
}

async fn no_window() {
    let stingy = taking_nothing().await;
    let services = service("shop", "stingy", 80) + &endpoints("shop", "stingy", &[stingy], &[]);
    let annotations = [("backend-protocol", "GRPC"), ("proxy-send-timeout", "1")];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", services),
        (
            "ing.yaml",
            nginx_ingress("stingy", "stingy.example", "/", "stingy", &annotations),
        ),
    ];
    let env = Env::start(&files).await;
    let tcp = TcpStream::connect(env.http()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (pieces, stream) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        stream,
        |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) },
    )));
    let request = Request::post("http://stingy.example/upload")
        .body(body)
        .unwrap();
    pieces
        .send(Ok(Frame::data(Bytes::from(vec![b'x'; 1024]))))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // The client keeps its stream open (`pieces` lives): only the send timeout can end it.
    let response = timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("answered before the client gives up")
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    drop(pieces);
    env.shutdown().await;
}
