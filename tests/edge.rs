//! The edge's guarantees, tried as an attacker would over real sockets: requests cannot be
//! smuggled through `Connection`, a request has one Host and is routed and forwarded by it,
//! the path routed by is the path forwarded, header names with `_` stay behind, and hostile
//! upstream heads are refused. Each upstream here records the exact bytes it received.

mod support;

use std::time::Duration;

use support::Env;
use support::manifests::{class, endpoints, ingress, prefix, service};
use support::raw::*;
use tokio::time::sleep;

/// An upstream that answers every request with its own request line as the body; `/slow`
/// after 150 ms (so that a smuggled request's answer is still on its way when the next
/// request takes the connection).
async fn echo_lines() -> Upstream {
    Upstream::start(|mut conn| async move {
        for _ in 0..100 {
            let Some(req) = conn.request().await else {
                return;
            };
            if req.path() == "/slow" {
                sleep(Duration::from_millis(150)).await;
            }
            if !conn.send(&ok(req.head.start.as_bytes())).await {
                return;
            }
        }
    })
    .await
}

/// Sends raw bytes on a new client connection and reads one response.
async fn raw_exchange(env: &Env, bytes: &[u8]) -> RawResponse {
    let mut client = Wire::connect(env.http()).await;
    assert!(client.send(bytes).await);
    client.response(false).await.unwrap()
}

/// Every request line the upstream has seen so far (waits briefly for stragglers).
async fn seen_lines(upstream: &mut Upstream) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(Some(seen)) =
        tokio::time::timeout(Duration::from_millis(300), upstream.seen.recv()).await
    {
        lines.push(seen.head.start.clone());
    }
    lines
}

// ---------------------------------------------------------------------------------------
// 1. Request smuggling through Connection.
// ---------------------------------------------------------------------------------------

/// An attacker names Content-Length in Connection, with a body that is a second request. A
/// victim on another client connection then takes the same pooled upstream connection. Each
/// must get its own response, and the smuggled request must never reach the upstream.
#[tokio::test]
async fn content_length_named_in_connection_cannot_smuggle_a_request() {
    for round in 0..5 {
        let mut upstream = echo_lines().await;
        let env = proxy_to(&upstream).await;
        let smuggled =
            format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
        let attack = format!(
            "POST /attacker HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, Content-Length\r\n\
             Content-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let got = raw_exchange(&env, attack.as_bytes()).await;
        assert_eq!(
            got.body, b"POST /attacker HTTP/1.1",
            "round {round}: {got:?}"
        );
        let victim = format!("GET /victim HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let got = raw_exchange(&env, victim.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            "GET /victim HTTP/1.1",
            "round {round}: the victim got another request's response"
        );
        let lines = seen_lines(&mut upstream).await;
        assert_eq!(
            lines,
            ["POST /attacker HTTP/1.1", "GET /victim HTTP/1.1"],
            "round {round}: what reached the upstream"
        );
    }
}

/// Naming framing fields, Host or the fields Portico writes in Connection removes none of
/// them: the upstream gets one Host, the body with its length, and Portico's own fields.
#[tokio::test]
async fn connection_cannot_remove_framing_host_or_forwarding_fields() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"fine"))).await;
    let env = proxy_to(&upstream).await;
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: {HOST}\r\nConnection: host, content-length, transfer-encoding, \
         x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-forwarded-port, x-real-ip, \
         x-request-id\r\nX-Request-ID: client-id\r\nContent-Length: 5\r\n\r\nhello"
    );
    let got = raw_exchange(&env, req.as_bytes()).await;
    assert_eq!(got.head.status(), 200, "{got:?}");
    let seen = upstream.next_seen().await;
    let head = &seen.head;
    assert_eq!(head.get("host"), Some(HOST), "{head:?}");
    assert_eq!(seen.framing, Framing::Length(5), "{head:?}");
    assert_eq!(seen.body, b"hello");
    assert_eq!(head.get("x-forwarded-for"), Some("127.0.0.1"), "{head:?}");
    assert_eq!(head.get("x-real-ip"), Some("127.0.0.1"), "{head:?}");
    assert_eq!(head.get("x-forwarded-proto"), Some("http"), "{head:?}");
    assert_eq!(head.get("x-forwarded-host"), Some(HOST), "{head:?}");
    assert!(head.get("x-forwarded-port").is_some(), "{head:?}");
    assert_eq!(head.get("x-request-id"), Some("client-id"), "{head:?}");
}

/// The classic desync requests (Content-Length with Transfer-Encoding, obfuscated codings,
/// two lengths) never make the upstream read a second request: each is refused, or goes as
/// one request with a body framed by Portico.
#[tokio::test]
async fn conflicting_request_framing_never_reaches_the_upstream_as_two_requests() {
    let mut upstream = echo_lines().await;
    let env = proxy_to(&upstream).await;
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let chunked_then_request = format!("0\r\n\r\n{smuggled}");
    for framing in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            chunked_then_request.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            chunked_then_request.len()
        ),
        format!(
            "Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n",
            chunked_then_request.len()
        ),
        format!(
            "Transfer-Encoding: chunked, identity\r\nContent-Length: {}\r\n",
            chunked_then_request.len()
        ),
        format!(
            "Content-Length: {}\r\nContent-Length: 5\r\n",
            chunked_then_request.len()
        ),
        format!(
            "Transfer-Encoding : chunked\r\nContent-Length: {}\r\n",
            chunked_then_request.len()
        ),
    ] {
        let req =
            format!("POST /first HTTP/1.1\r\nHost: {HOST}\r\n{framing}\r\n{chunked_then_request}");
        let mut client = Wire::connect(env.http()).await;
        assert!(client.send(req.as_bytes()).await);
        // Whatever the answer, and whatever the client connection does next.
        let _ = client.response(false).await;
        drop(client);
        let victim = format!("GET /victim HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let got = raw_exchange(&env, victim.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            "GET /victim HTTP/1.1",
            "{framing:?}"
        );
    }
    let lines = seen_lines(&mut upstream).await;
    assert!(
        lines.iter().all(|l| !l.contains("smuggled")),
        "a smuggled request reached the upstream: {lines:?}"
    );
}

/// An upstream that sends more than its framing said (in a later write) loses that
/// connection: the next request gets its own response, on a new connection.
#[tokio::test]
async fn bytes_an_upstream_sent_past_its_framing_are_never_read_as_a_response() {
    let mut upstream = Upstream::start(|mut conn| async move {
        for _ in 0..10 {
            let Some(req) = conn.request().await else {
                return;
            };
            if !conn.send(&ok(req.head.start.as_bytes())).await {
                return;
            }
            if req.path() == "/extra" {
                sleep(Duration::from_millis(30)).await;
                let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned";
                if !conn.send(extra).await {
                    return;
                }
            }
        }
    })
    .await;
    let env = proxy_to(&upstream).await;
    assert_eq!(get(&env, "/extra").await.ok_body(), "GET /extra HTTP/1.1");
    sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        assert_eq!(
            get(&env, "/next").await.ok_body(),
            "GET /next HTTP/1.1",
            "request {i}"
        );
    }
    let lines = seen_lines(&mut upstream).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        upstream.accepted(),
        2,
        "the poisoned connection was not reused"
    );
}

// ---------------------------------------------------------------------------------------
// 2. One Host.
// ---------------------------------------------------------------------------------------

/// Two Hosts, a Host that is not `host[:port]`, and an HTTP/1.1 request without Host are
/// 400, and nothing reaches the upstream, even where a host-less rule would match.
#[tokio::test]
async fn requests_without_exactly_one_valid_host_are_400() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"reached"))).await;
    let rules = [("", vec![prefix("/", "raw", 80)])];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", service("h1", "raw", 80)),
        ("eps.yaml", endpoints("h1", "raw", &[upstream.addr], &[])),
        ("ing.yaml", ingress("h1", "raw", &rules)),
    ];
    let env = Env::start_with(&files, &[]).await;
    let ok_req = "GET / HTTP/1.1\r\nHost: fine.test\r\n\r\n";
    assert_eq!(
        raw_exchange(&env, ok_req.as_bytes()).await.head.status(),
        200
    );
    assert!(upstream.next_seen().await.path() == "/");
    for host_lines in [
        "Host: a.test\r\nHost: b.test\r\n",
        "Host: a.test\r\nhost: a.test\r\n",
        "",
        "Host: \r\n",
        "Host: user@a.test\r\n",
        "Host: a.test/x\r\n",
        "Host: a.test,b.test\r\n",
        "Host: a test\r\n",
        "Host: a.test:80:80\r\n",
        "Host: a.test:port\r\n",
        "Host: [::1\r\n",
    ] {
        let req = format!("GET /x HTTP/1.1\r\n{host_lines}\r\n");
        let got = raw_exchange(&env, req.as_bytes()).await;
        assert_eq!(got.head.status(), 400, "{host_lines:?}: {got:?}");
    }
    let lines = seen_lines(&mut upstream).await;
    assert!(lines.is_empty(), "reached the upstream: {lines:?}");
}

/// An absolute-form target is routed by its authority, and the Host sent upstream is that
/// authority, whatever the Host field said.
#[tokio::test]
async fn absolute_form_targets_route_and_forward_by_their_authority() {
    let mut a = Upstream::start(|conn| conn.serve(|_| ok(b"a"))).await;
    let mut b = Upstream::start(|conn| conn.serve(|_| ok(b"b"))).await;
    let files = [
        ("class.yaml", class()),
        ("svc-a.yaml", service("h1", "a", 80)),
        ("eps-a.yaml", endpoints("h1", "a", &[a.addr], &[])),
        ("svc-b.yaml", service("h1", "b", 80)),
        ("eps-b.yaml", endpoints("h1", "b", &[b.addr], &[])),
        (
            "ing-a.yaml",
            ingress("h1", "a", &[("a.test", vec![prefix("/", "a", 80)])]),
        ),
        (
            "ing-b.yaml",
            ingress("h1", "b", &[("b.test", vec![prefix("/", "b", 80)])]),
        ),
    ];
    let env = Env::start_with(&files, &[]).await;
    let req = "GET http://a.test/x?q=1 HTTP/1.1\r\nHost: b.test\r\n\r\n";
    let got = raw_exchange(&env, req.as_bytes()).await;
    assert_eq!((got.head.status(), &got.body[..]), (200, &b"a"[..]));
    let seen = a.next_seen().await;
    assert_eq!(seen.head.start, "GET /x?q=1 HTTP/1.1");
    assert_eq!(seen.head.get("host"), Some("a.test"), "{:?}", seen.head);
    assert_eq!(seen.head.get("x-forwarded-host"), Some("a.test"));
    let req = "GET http://user@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n";
    assert_eq!(raw_exchange(&env, req.as_bytes()).await.head.status(), 400);
    assert!(seen_lines(&mut b).await.is_empty());
}

/// HTTP/2: `:authority` and a `host` field that disagree are refused; when they agree, the
/// request is routed and forwarded with that one host.
#[tokio::test]
async fn h2_authority_and_host_must_agree() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"h2"))).await;
    let env = proxy_to(&upstream).await;
    let req = |host: &str| {
        http::Request::builder()
            .uri(format!("http://{HOST}/h2"))
            .header("host", host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let got = send_h2(env.http(), req("other.test")).await;
    assert_eq!(got.status, 400, "{got:?}");
    let got = send_h2(env.http(), req(&HOST.to_uppercase())).await;
    assert_eq!(got.status, 200, "{got:?}");
    let seen = upstream.next_seen().await;
    assert_eq!(seen.head.get("host"), Some(HOST), "{:?}", seen.head);
}

// ---------------------------------------------------------------------------------------
// 3. One path.
// ---------------------------------------------------------------------------------------

/// An Ingress that exposes only `/public` of a Service whose `/internal` must stay private:
/// dot segments, in any encoding, cannot climb out of `/public`. The upstream receives the
/// path Portico routed by; the query string goes as it came.
#[tokio::test]
async fn dot_segments_cannot_climb_out_of_an_exposed_prefix() {
    let mut upstream = Upstream::start(|conn| conn.serve(|s| ok(s.path().as_bytes()))).await;
    let rules = [(HOST, vec![prefix("/public", "raw", 80)])];
    let files = [
        ("class.yaml", class()),
        ("svc.yaml", service("h1", "raw", 80)),
        ("eps.yaml", endpoints("h1", "raw", &[upstream.addr], &[])),
        ("ing.yaml", ingress("h1", "raw", &rules)),
    ];
    let env = Env::start_with(&files, &[]).await;
    for (path, status, forwarded) in [
        ("/public/a", 200, Some("/public/a")),
        ("/public/../internal", 404, None),
        ("/public/%2e%2e/internal", 404, None),
        ("/public/%2E%2e/internal", 404, None),
        ("/public/.%2e/internal", 404, None),
        ("/public/..%2finternal", 400, None),
        ("/public/..%5Cinternal", 400, None),
        ("/public//../internal", 404, None),
        (
            "/public/./a/../b?x=/../y&z=%2e%2e",
            200,
            Some("/public/b?x=/../y&z=%2e%2e"),
        ),
        ("/public/a/%2e", 200, Some("/public/a/")),
        ("/%70ublic/a", 200, Some("/public/a")),
        ("/public/a%2Fb", 200, Some("/public/a%2Fb")),
        ("/public/x/../../..", 400, None),
        ("/..", 400, None),
        ("/public/%zz", 400, None),
        ("/public/%00", 400, None),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let got = raw_exchange(&env, req.as_bytes()).await;
        assert_eq!(got.head.status(), status, "{path}: {got:?}");
        if let Some(forwarded) = forwarded {
            assert_eq!(String::from_utf8_lossy(&got.body), forwarded, "{path}");
        }
    }
    let lines = seen_lines(&mut upstream).await;
    assert!(
        lines.iter().all(|l| !l.contains("internal")),
        "reached the upstream: {lines:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Header hygiene.
// ---------------------------------------------------------------------------------------

/// Request header names with `_` stay behind (nginx's `underscores_in_headers off`), unless
/// the flag keeps them.
#[tokio::test]
async fn header_names_with_underscores_are_dropped_unless_enabled() {
    for (flags, kept) in [
        (&[][..], false),
        (&["--enable-underscores-in-headers"][..], true),
    ] {
        let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"fine"))).await;
        let env = proxy_to_with(&upstream, flags).await;
        let req = format!(
            "GET /u HTTP/1.1\r\nHost: {HOST}\r\nX_Forwarded_For: 6.6.6.6\r\nX_User: admin\r\n\
             X-Kept: yes\r\n\r\n"
        );
        assert_eq!(raw_exchange(&env, req.as_bytes()).await.head.status(), 200);
        let seen = upstream.next_seen().await;
        assert_eq!(seen.head.get("x-kept"), Some("yes"));
        assert_eq!(
            seen.head.get("x_user").is_some(),
            kept,
            "{flags:?}: {:?}",
            seen.head
        );
        assert_eq!(
            seen.head.get("x_forwarded_for").is_some(),
            kept,
            "{flags:?}"
        );
    }
}

/// `--max-headers` applies to HTTP/2 requests too.
#[tokio::test]
async fn h2_requests_with_too_many_fields_are_refused() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"fine"))).await;
    let env = proxy_to_with(&upstream, &["--max-headers", "50"]).await;
    let mut req = http::Request::builder().uri(format!("http://{HOST}/many"));
    for i in 0..1000 {
        req = req.header(format!("x-f{i}"), "1");
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = send_h2(env.http(), req).await;
    assert_eq!(got.status, 431, "{got:?}");
    assert!(seen_lines(&mut upstream).await.is_empty());
}

/// A bare LF inside an upstream's header value, and a transfer coding other than a final
/// `chunked`, are 502: nothing is split into a new field or decoded some other way.
#[tokio::test]
async fn hostile_upstream_heads_are_502() {
    let upstream = Upstream::start(|conn| {
        conn.serve(|seen| match seen.path() {
            "/lf" => b"HTTP/1.1 200 OK\r\nX-A: one\nSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            "/lf-status" => b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/gzip-chunked" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                    .to_vec()
            }
            "/two-te" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                    .to_vec()
            }
            "/identity" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok".to_vec(),
            _ => ok(b"fine"),
        })
    })
    .await;
    let env = proxy_to(&upstream).await;
    for path in ["/lf", "/lf-status", "/gzip-chunked", "/two-te", "/identity"] {
        let got = get(&env, path).await;
        assert_eq!(got.status, 502, "{path}: {got:?}");
        assert!(got.headers.get("set-cookie").is_none(), "{path}");
        assert_eq!(get(&env, "/ok").await.ok_body(), "fine", "after {path}");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Timeouts with nginx's meaning.
// ---------------------------------------------------------------------------------------

/// The read timeout is the longest wait between two reads: a response body that stalls for
/// longer is cut (the client sees the truncation: the connection closes before the body's
/// length), while one that keeps coming, slowly, arrives whole.
#[tokio::test]
async fn a_stalled_response_body_is_cut_after_the_read_timeout() {
    let upstream = Upstream::start(|mut conn| async move {
        let Some(req) = conn.request().await else {
            return;
        };
        let stall = req.path() == "/stall";
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nfirst")
            .await;
        if stall {
            // Nothing more, for longer than the client waits.
            sleep(LIMIT).await;
            return;
        }
        for b in b"second" {
            sleep(Duration::from_millis(100)).await;
            conn.send(&[*b]).await;
        }
    })
    .await;
    let env = proxy_to_with(&upstream, &["--proxy-read-timeout", "300ms"]).await;
    let started = tokio::time::Instant::now();
    let mut client = Wire::connect(env.http()).await;
    let req = format!("GET /stall HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert!(client.send(req.as_bytes()).await);
    let head = client.head().await.expect("the head came");
    assert_eq!(head.status(), 200);
    let rest = client.read_to_close().await;
    assert_eq!(rest, b"first", "cut after what came");
    assert!(started.elapsed() < LIMIT, "closed by the read timeout");
    // 600 ms in all, but never 300 ms without a byte.
    let got = get(&env, "/slow").await;
    assert_eq!(got.ok_body(), "firstsecond");
}

/// The send timeout is the longest wait between two writes to the upstream: an upload that
/// takes far longer than the read timeout, but keeps moving, is not cut (it was a 504).
#[tokio::test]
async fn a_slow_but_progressing_upload_is_never_cut() {
    let mut upstream =
        Upstream::start(|conn| conn.serve(|s| ok(s.body.len().to_string().as_bytes()))).await;
    let env = proxy_to_with(
        &upstream,
        &[
            "--proxy-read-timeout",
            "300ms",
            "--proxy-send-timeout",
            "300ms",
            "--client-body-buffer-size",
            "1k",
        ],
    )
    .await;
    for size in [500usize, 40_000] {
        let mut client = Wire::connect(env.http()).await;
        let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n");
        assert!(client.send(head.as_bytes()).await);
        let body = pattern(size);
        // Ten pieces, 100 ms apart: a second in all.
        for piece in body.chunks(size.div_ceil(10)) {
            sleep(Duration::from_millis(100)).await;
            assert!(client.send(piece).await);
        }
        let got = client.response(false).await.unwrap();
        assert_eq!(got.head.status(), 200, "{size} bytes: {got:?}");
        assert_eq!(got.body, size.to_string().as_bytes());
        assert_eq!(upstream.next_seen().await.body, body);
    }
}

/// The client body timeout is the longest wait between two reads of the request body: a
/// client that stops sending gets 408, and the upstream never sees the request.
#[tokio::test]
async fn a_stalled_request_body_is_408() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"fine"))).await;
    let env = proxy_to_with(&upstream, &["--client-body-timeout", "300ms"]).await;
    let mut client = Wire::connect(env.http()).await;
    let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\nonly this");
    assert!(client.send(head.as_bytes()).await);
    let got = client.response(false).await.unwrap();
    assert_eq!(got.head.status(), 408, "{got:?}");
    assert!(seen_lines(&mut upstream).await.is_empty());
}

/// An upstream that streams a large body to a client that reads nothing: after the send
/// timeout the client connection is closed, and with it the upstream connection (it was held
/// for as long as the client wanted).
async fn stalled_client_releases_upstream(h2: bool) {
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let upstream = Upstream::start(move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            if conn.request().await.is_none() {
                return;
            }
            let size = 64 * MIB;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            conn.send(head.as_bytes()).await;
            let piece = vec![b'x'; 64 * 1024];
            for _ in 0..size / piece.len() {
                if !conn.send(&piece).await {
                    let _ = closed_tx.send(());
                    return;
                }
            }
        }
    })
    .await;
    let env = proxy_to_with(&upstream, &["--send-timeout", "300ms"]).await;
    let client = tokio::net::TcpStream::connect(env.http()).await.unwrap();
    let mut wire = Wire::new(client);
    if h2 {
        // h2c with an initial stream window of 0: the response can never be sent.
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(0)
                .handshake(hyper_util::rt::TokioIo::new(wire.stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{HOST}/big"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let _response = tokio::spawn(async move { sender.send_request(req).await });
        tokio::time::timeout(LIMIT, closed.recv())
            .await
            .expect("the upstream connection was released")
            .unwrap();
    } else {
        let req = format!("GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert!(wire.send(req.as_bytes()).await);
        tokio::time::timeout(LIMIT, closed.recv())
            .await
            .expect("the upstream connection was released")
            .unwrap();
    }
}

#[tokio::test]
async fn a_client_that_reads_nothing_releases_its_upstream_connection() {
    stalled_client_releases_upstream(false).await;
}

#[tokio::test]
async fn an_h2_stream_without_window_releases_its_upstream_connection() {
    stalled_client_releases_upstream(true).await;
}

// ---------------------------------------------------------------------------------------
// 6. Request bodies do not pin backends.
// ---------------------------------------------------------------------------------------

/// Two POSTs trickling their bodies at a few bytes a second take no upstream connection
/// until their bodies are in: a single-worker backend stays free for everyone else.
#[tokio::test]
async fn slow_request_bodies_take_no_upstream_connection_until_read() {
    let mut upstream = Upstream::start(|conn| conn.serve(|s| ok(&s.body))).await;
    let env = proxy_to(&upstream).await;
    let mut slow = Vec::new();
    for i in 0..2 {
        let mut client = Wire::connect(env.http()).await;
        let head = format!("POST /slow{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\n");
        assert!(client.send(head.as_bytes()).await);
        slow.push(client);
    }
    for b in b"abcd" {
        for client in &mut slow {
            assert!(client.send(&[*b]).await);
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        upstream.accepted(),
        0,
        "a slow body took an upstream connection"
    );
    assert_eq!(get(&env, "/other").await.ok_body(), "");
    for client in &mut slow {
        assert!(client.send(b"e").await);
        let got = client.response(false).await.unwrap();
        assert_eq!((got.head.status(), &got.body[..]), (200, &b"abcde"[..]));
    }
    let mut paths: Vec<String> = Vec::new();
    for _ in 0..3 {
        paths.push(upstream.next_seen().await.path().to_string());
    }
    assert_eq!(paths, ["/other", "/slow0", "/slow1"]);
}
