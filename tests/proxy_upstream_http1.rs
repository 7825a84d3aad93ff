//! How the proxy speaks HTTP/1.1 to upstreams, pinned down against hand-written upstreams on
//! raw TCP: response framing (chunked in awkward pieces, close-delimited, HEAD, 204 and 304,
//! informational responses), framing errors, when upstream connections are reused and when
//! they must not be, request bodies and hop-by-hop headers, early responses, and upgrades.
//!
//! Each upstream runs a script per accepted connection over a plain `TcpStream`, so what the
//! proxy writes and how it reads are checked on the wire, whatever HTTP client the proxy uses.
//! Every read and write is bounded by [`LIMIT`]; nothing asserts on timing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use support::Env;
use support::raw::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

// ---------------------------------------------------------------------------------------
// Response framing.
// ---------------------------------------------------------------------------------------

/// A chunked response written in awkward pieces, and the body it carries. With `trailer`,
/// the last chunk is followed by a trailer field (announced in a `Trailer` header).
fn awkward_chunked(trailer: bool) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut expected = Vec::new();
    let mut piece = |bytes: &[u8]| pieces.push(bytes.to_vec());
    // The head itself in two writes.
    piece(b"HTTP/1.1 200 OK\r\nTransfer-Enc");
    if trailer {
        piece(b"oding: chunked\r\nTrailer: X-Checksum\r\n\r\n");
    } else {
        piece(b"oding: chunked\r\n\r\n");
    }
    // A chunk whose size line, data and CRLF are split across writes.
    piece(b"5");
    piece(b"\r\nhel");
    piece(b"lo\r");
    piece(b"\n");
    expected.extend_from_slice(b"hello");
    // Chunk extensions, a plain one and a quoted one.
    piece(b"6;foo=bar\r\n world\r\n");
    expected.extend_from_slice(b" world");
    piece(b"a;name=\"quoted; value\"\r\n0123456789\r\n");
    expected.extend_from_slice(b"0123456789");
    // A two-digit size split between its digits; uppercase hex; leading zeros.
    piece(b"1");
    piece(b"0\r\nsixteen bytes..\n\r\n");
    expected.extend_from_slice(b"sixteen bytes..\n");
    piece(b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0003\r\nabc\r\n");
    expected.extend_from_slice(b"abcdefghijklmnopqrstuvwxyzabc");
    // Many one-byte chunks in one write, then twenty more in separate writes.
    let mut many = Vec::new();
    for i in 0..200u8 {
        let b = b'A' + i % 26;
        many.extend_from_slice(&[b'1', b'\r', b'\n', b, b'\r', b'\n']);
        expected.push(b);
    }
    piece(&many);
    for i in 0..20u8 {
        let b = b'a' + i;
        piece(&[b'1', b'\r', b'\n', b, b'\r', b'\n']);
        expected.push(b);
    }
    // A slow trickle: one chunk, a byte per write.
    for b in b"7\r\ntrickle\r\n" {
        piece(&[*b]);
    }
    expected.extend_from_slice(b"trickle");
    // The last chunk (and the trailer), split too.
    piece(b"0\r\n");
    if trailer {
        piece(b"X-Checksum: abc123\r");
        piece(b"\n\r\n");
    } else {
        piece(b"\r");
        piece(b"\n");
    }
    (pieces, expected)
}

/// An upstream answering `/awkward` with [`awkward_chunked`] (no trailer), `/trailers`
/// with the same and a trailer, anything else with a short `plain` body; keep-alive.
async fn awkward_upstream() -> Upstream {
    let plain = Arc::new(awkward_chunked(false).0);
    let trailers = Arc::new(awkward_chunked(true).0);
    Upstream::start(move |mut conn| {
        let (plain, trailers) = (plain.clone(), trailers.clone());
        async move {
            for _ in 0..10 {
                let Some(req) = conn.request().await else {
                    return;
                };
                let pieces = match req.path() {
                    "/awkward" => &plain,
                    "/trailers" => &trailers,
                    _ => {
                        conn.send(&ok(b"plain")).await;
                        continue;
                    }
                };
                for piece in pieces.iter() {
                    if !conn.send(piece).await {
                        return;
                    }
                    sleep(Duration::from_millis(1)).await;
                }
            }
        }
    })
    .await
}

/// GET `path` on a raw client connection, then `/plain` on the same one: both responses
/// are read with strict framing. Returns the first.
async fn raw_get_then_plain(env: &Env, path: &str, extra: &str) -> RawResponse {
    let mut client = Wire::connect(env.http()).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n");
    assert!(client.send(req.as_bytes()).await);
    let got = client.response(false).await.unwrap();
    assert!(
        matches!(got.framing, Framing::Chunked | Framing::Length(_)),
        "{got:?}"
    );
    let req = format!("GET /plain HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert!(client.send(req.as_bytes()).await);
    let next = client.response(false).await.unwrap();
    assert_eq!((next.head.status(), &next.body[..]), (200, &b"plain"[..]));
    got
}

/// Chunked bodies arrive byte-exact however the upstream splits its writes (size lines,
/// data and CRLFs cut across writes, extensions, many tiny chunks, a byte-by-byte
/// trickle), and the upstream connection carries the next request.
#[tokio::test]
async fn chunked_responses_in_awkward_pieces_arrive_byte_exact() {
    let (_, expected) = awkward_chunked(false);
    let upstream = awkward_upstream().await;
    let env = proxy_to(&upstream).await;
    // A raw client reads the chunked framing towards it strictly.
    let got = raw_get_then_plain(&env, "/awkward", "").await;
    assert_eq!(got.head.status(), 200, "{got:?}");
    assert!(got.body == expected, "the body differs: {got:?}");
    settle().await;
    // A hyper client reads the same body.
    assert_eq!(get(&env, "/awkward").await.ok_body()[..], expected[..]);
    settle().await;
    assert_eq!(get(&env, "/plain").await.ok_body(), "plain");
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

/// Trailers after the last chunk break nothing: the body arrives byte-exact and the
/// response to the client is well framed. The client (even one sending `TE: trailers`)
/// gets no trailer fields today; should it get some, they must be the upstream's.
#[tokio::test]
async fn chunked_responses_with_trailers_arrive_byte_exact() {
    let (_, expected) = awkward_chunked(true);
    let upstream = awkward_upstream().await;
    let env = proxy_to(&upstream).await;
    for extra in ["TE: trailers\r\n", ""] {
        let got = raw_get_then_plain(&env, "/trailers", extra).await;
        assert_eq!(got.head.status(), 200, "{got:?}");
        assert!(got.body == expected, "the body differs: {got:?}");
        for (name, value) in &got.trailers {
            assert_eq!(
                (name.as_str(), value.as_str()),
                ("x-checksum", "abc123"),
                "only the upstream's trailer, unchanged"
            );
        }
    }
    let got = get(&env, "/trailers").await;
    assert_eq!(got.ok_body()[..], expected[..]);
}

/// A chunked response with trailers is read to its very end, so its upstream connection
/// goes back to the pool like any other.
///
/// Fails today: hyper's server stops polling a response body once it yields trailers (they
/// are the last frame), and `UpstreamBody` only gives the connection back when polled to
/// the end (`None`) or when `is_end_stream()` is true after a frame, which it never is for
/// a chunked body. The body is dropped, and the connection with it: every response with
/// trailers costs the upstream a new connection (here 3 connections instead of 1).
#[tokio::test]
async fn connections_are_reused_after_chunked_responses_with_trailers() {
    let upstream = awkward_upstream().await;
    let env = proxy_to(&upstream).await;
    for path in ["/trailers", "/plain", "/trailers", "/plain"] {
        assert_eq!(get(&env, path).await.status, StatusCode::OK, "{path}");
        settle().await;
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

/// A body delimited by the upstream closing arrives whole, and a connection that ended
/// that way is never used again: each request has a connection of its own.
#[tokio::test]
async fn close_delimited_responses_arrive_whole_and_their_connection_is_not_reused() {
    let body: Vec<u8> = pattern(100_000);
    let sent = body.clone();
    let mut upstream = Upstream::start(move |mut conn| {
        let body = sent.clone();
        async move {
            if conn.request().await.is_none() {
                return;
            }
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
                .await;
            for part in body.chunks(7_000) {
                conn.send(part).await;
                sleep(Duration::from_millis(1)).await;
            }
            // The end of the body: FIN. Reading stays open to catch a reuse.
            conn.shutdown_write().await;
            conn.finish().await;
        }
    })
    .await;
    let env = proxy_to(&upstream).await;
    for i in 1..=3 {
        let got = get(&env, &format!("/close-delimited/{i}")).await;
        assert_eq!(got.ok_body()[..], body[..], "request {i}");
        settle().await;
    }
    assert_eq!(
        upstream.accepted(),
        3,
        "a new upstream connection each time"
    );
    for _ in 0..3 {
        let (conn, outcome) = upstream.next_end().await;
        assert_eq!(outcome, Ok(()), "connection {conn}");
    }
}

/// A response to HEAD has no body whatever its Content-Length says; the client gets
/// the header and no body, and the upstream connection carries the next request.
#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let upstream = Upstream::start(|conn| {
        conn.serve(|req| match req.method() {
            "HEAD" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n"
                    .to_vec()
            }
            _ => ok(b"after"),
        })
    })
    .await;
    let env = proxy_to(&upstream).await;
    let mut client = Wire::connect(env.http()).await;
    for i in 0..3 {
        let req = format!("HEAD /h/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert!(client.send(req.as_bytes()).await);
        let head = client.response(true).await.unwrap();
        assert_eq!(head.head.status(), 200, "{head:?}");
        assert_eq!(head.head.get("content-length"), Some("1234"), "{head:?}");
        // The next response on the same client connection starts right after the head:
        // no body bytes came in between.
        let req = format!("GET /after/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert!(client.send(req.as_bytes()).await);
        let after = client.response(false).await.unwrap();
        assert_eq!((after.head.status(), &after.body[..]), (200, &b"after"[..]));
        // A body of known length goes with its Content-Length (hyper writes it from the
        // body's size), not chunked.
        assert_eq!(after.head.get("content-length"), Some("5"), "{after:?}");
        assert_eq!(after.head.get("transfer-encoding"), None);
        settle().await;
    }
    let reply = send(env.http(), request("HEAD", "/h", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-length"], "1234");
    assert_eq!(reply.body.unwrap().len(), 0);
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

/// 204 and 304 have no body (even a 304 with the Content-Length of the representation)
/// and keep the connection.
#[tokio::test]
async fn no_content_and_not_modified_have_no_body_and_keep_the_connection() {
    let upstream = Upstream::start(|conn| {
        conn.serve(|req| match req.path() {
            "/204" => b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec(),
            "/304-length" => {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v2\"\r\nContent-Length: 1234\r\n\r\n"
                    .to_vec()
            }
            _ => ok(b"after"),
        })
    })
    .await;
    let env = proxy_to(&upstream).await;
    let mut client = Wire::connect(env.http()).await;
    for (path, status, header, value) in [
        ("/204", 204, "x-kind", "none"),
        ("/304", 304, "etag", "\"v1\""),
        ("/304-length", 304, "etag", "\"v2\""),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert!(client.send(req.as_bytes()).await);
        let got = client.response(false).await.unwrap();
        assert_eq!(got.head.status(), status, "{got:?}");
        assert_eq!(got.head.get(header), Some(value), "{got:?}");
        // Nothing between this head and the next response.
        let req = format!("GET /after HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert!(client.send(req.as_bytes()).await);
        let after = client.response(false).await.unwrap();
        assert_eq!(
            (after.head.status(), &after.body[..]),
            (200, &b"after"[..]),
            "{path}"
        );
        settle().await;
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

/// Informational responses (100 Continue, 103 Early Hints) before the final one: the
/// client gets the final response and its body, and the connection stays usable.
#[tokio::test]
async fn informational_responses_before_the_final_one_are_passed_over() {
    let upstream = Upstream::start(|mut conn| async move {
        for _ in 0..20 {
            let Some(req) = conn.request().await else {
                return;
            };
            let early: &[&[u8]] = match req.path() {
                "/100" => &[b"HTTP/1.1 100 Continue\r\n\r\n"],
                "/103" => &[b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"],
                "/both" => &[
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n",
                    b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n",
                ],
                _ => &[],
            };
            for response in early {
                conn.send(response).await;
                sleep(Duration::from_millis(2)).await;
            }
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal")
                .await;
        }
    })
    .await;
    let env = proxy_to(&upstream).await;
    for path in ["/100", "/103", "/both", "/plain"] {
        let got = get(&env, path).await;
        assert_eq!(got.ok_body(), "final", "{path}");
        assert_eq!(got.headers["x-final"], "yes", "{path}");
        settle().await;
    }
    // The same through a raw client: the final response is well framed.
    let mut client = Wire::connect(env.http()).await;
    let req = format!("GET /both HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    assert!(client.send(req.as_bytes()).await);
    let mut got = client.response(false).await.unwrap();
    for _ in 0..5 {
        if got.head.status() >= 200 {
            break;
        }
        got = client.response(false).await.unwrap();
    }
    assert_eq!((got.head.status(), &got.body[..]), (200, &b"final"[..]));
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

// ---------------------------------------------------------------------------------------
// Broken upstreams.
// ---------------------------------------------------------------------------------------

/// Responses whose head cannot be trusted become 502, promptly; the broken connection is
/// closed and not reused; the proxy keeps serving.
#[tokio::test]
async fn framing_errors_in_response_heads_are_502() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..17 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "f".repeat(64 * 1024)).as_bytes());
    }
    huge.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    assert!(huge.len() > MIB);
    let bad: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "/length-abc",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello".to_vec(),
        ),
        (
            "/two-lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        ),
        ("/garbage", b"garbage, not HTTP at all\r\n\r\n".to_vec()),
        (
            "/bad-status",
            b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("/huge-head", huge),
    ];
    let scripts = Arc::new(bad.clone());
    let mut upstream = Upstream::start(move |mut conn| {
        let scripts = scripts.clone();
        async move {
            for _ in 0..20 {
                let Some(req) = conn.request().await else {
                    return;
                };
                match scripts.iter().find(|(p, _)| *p == req.path()) {
                    Some((_, bytes)) => {
                        conn.send(bytes).await;
                        conn.finish().await;
                        return;
                    }
                    None => {
                        conn.send(&ok(b"fine")).await;
                    }
                }
            }
        }
    })
    .await;
    let env = proxy_to(&upstream).await;
    for (path, _) in &bad {
        let got = get(&env, path).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{path}: {got:?}");
        let (conn, outcome) = upstream.next_end().await;
        // (A reset counts as closed: the huge head may still be being written.)
        assert_eq!(outcome, Ok(()), "{path}: connection {conn}");
        assert_eq!(get(&env, "/ok").await.ok_body(), "fine", "after {path}");
        settle().await;
    }
}

/// An upstream that closes a new connection without answering: 502, not a hang, and
/// not an endless retry.
#[tokio::test]
async fn an_upstream_closing_a_new_connection_without_a_byte_is_502() {
    let upstream = Upstream::start(|mut conn| async move {
        for _ in 0..20 {
            let Some(req) = conn.request().await else {
                return;
            };
            if req.path() == "/silent" {
                return; // dropped: closed without a byte
            }
            conn.send(&ok(b"fine")).await;
        }
    })
    .await;
    let env = proxy_to(&upstream).await;
    let got = get(&env, "/silent").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{got:?}");
    let tries = upstream.accepted();
    assert!(
        (1..=2).contains(&tries),
        "{tries} connections for one request"
    );
    assert_eq!(get(&env, "/ok").await.ok_body(), "fine");
}

/// A body cut short by the upstream (closing mid Content-Length body, mid chunked body,
/// or a broken chunk) never reaches the client as a complete-looking response.
#[tokio::test]
async fn bodies_cut_short_by_the_upstream_stay_cut_short() {
    let upstream = Upstream::start(|mut conn| async move {
        for _ in 0..20 {
            let Some(req) = conn.request().await else {
                return;
            };
            let cut: &[u8] = match req.path() {
                "/cut-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly forty bytes of the hundred promised.",
                "/cut-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nsixteen bytes..\n\r\n10\r\nfive.",
                "/cut-after-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                "/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
                _ => {
                    conn.send(&ok(b"fine")).await;
                    continue;
                }
            };
            conn.send(cut).await;
            sleep(Duration::from_millis(20)).await;
            return; // closed
        }
    })
    .await;
    let env = proxy_to(&upstream).await;
    for path in [
        "/cut-length",
        "/cut-chunked",
        "/cut-after-chunk",
        "/bad-chunk",
    ] {
        match send(env.http(), request("GET", path, Bytes::new())).await {
            Ok(got) if got.status == StatusCode::BAD_GATEWAY => {}
            Ok(got) => {
                assert_eq!(got.status, StatusCode::OK, "{path}: {got:?}");
                assert!(
                    got.body.is_err(),
                    "{path}: a complete-looking response: {got:?}"
                );
            }
            Err(e) => panic!("{path}: no response head at all: {e}"),
        }
        // The raw view: the connection ends without the body's end.
        let mut client = Wire::connect(env.http()).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        assert!(client.send(req.as_bytes()).await);
        match client.response(false).await {
            Ok(got) => assert_eq!(got.head.status(), 502, "{path}: complete: {got:?}"),
            Err(why) => eprintln!("{path}: the raw client saw the body cut: {why}"),
        }
        assert_eq!(get(&env, "/ok").await.ok_body(), "fine", "after {path}");
    }
}

// ---------------------------------------------------------------------------------------
// Connection reuse.
// ---------------------------------------------------------------------------------------

/// `Connection: close` from the upstream, or an HTTP/1.0 response without keep-alive:
/// the proxy closes that connection and sends the next request on a new one.
#[tokio::test]
async fn connections_the_upstream_will_close_are_not_reused() {
    let mut upstream = Upstream::start(|mut conn| async move {
        let Some(req) = conn.request().await else {
            return;
        };
        let response: &[u8] = match req.path() {
            "/close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone",
            _ => b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\ndone",
        };
        conn.send(response).await;
        // Open both ways: it is up to the proxy to close it and not to send more.
        conn.finish().await;
    })
    .await;
    let env = proxy_to(&upstream).await;
    for (i, path) in ["/close", "/close", "/http10", "/http10", "/close"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(get(&env, path).await.ok_body(), "done", "{path}");
        let (conn, outcome) = upstream.next_end().await;
        assert_eq!(outcome, Ok(()), "{path}: connection {conn}");
        assert_eq!(upstream.accepted(), i + 1, "{path}: a new connection");
    }
}

/// An upstream that closes idle connections right after each response (without
/// `Connection: close`), with requests that have bodies: none fails, and the bodies
/// arrive whole. (The same with GETs is `upstreams_closing_idle_connections_cost_no_request`
/// in tests/proxy.rs.)
#[tokio::test]
async fn bodies_sent_after_the_upstream_closed_the_idle_connection_arrive() {
    let mut upstream = Upstream::start(|mut conn| async move {
        let Some(req) = conn.request().await else {
            return;
        };
        conn.send(&ok(format!("{}", req.body.len()).as_bytes()))
            .await;
        // Closed at once, keep-alive style: the connection is idle in the proxy's pool.
    })
    .await;
    let env = proxy_to(&upstream).await;
    for i in 0..5 {
        let body = pattern(10_000 + i);
        let got = send(env.http(), request("POST", "/p", body.clone()))
            .await
            .unwrap();
        assert_eq!(got.ok_body(), &format!("{}", body.len()), "request {i}");
        let seen = upstream.next_seen().await;
        assert_eq!(seen.body, body, "request {i}");
        assert_eq!(seen.conn, i + 1, "request {i}: on a connection of its own");
        settle().await;
    }
    assert_eq!(upstream.accepted(), 5);
}

// ---------------------------------------------------------------------------------------
// Request bodies and headers.
// ---------------------------------------------------------------------------------------

/// Asserts that a request reached the upstream with sound framing and this body.
fn assert_body(seen: &Seen, body: &[u8]) {
    match seen.framing {
        Framing::Length(n) => assert_eq!(n, body.len(), "{:?}", seen.head),
        Framing::Chunked => assert_eq!(seen.head.get("transfer-encoding"), Some("chunked")),
        ref other => panic!("framing {other:?}: {:?}", seen.head),
    }
    assert!(
        seen.body == body,
        "the body differs ({} bytes, {} sent)",
        seen.body.len(),
        body.len()
    );
}

/// A Content-Length request body goes upstream with the same Content-Length and bytes.
#[tokio::test]
async fn content_length_request_bodies_arrive_with_their_length() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"got it"))).await;
    let env = proxy_to(&upstream).await;
    for size in [1, 300_000] {
        let body = pattern(size);
        let got = send(env.http(), request("PUT", "/cl", body.clone()))
            .await
            .unwrap();
        assert_eq!(got.ok_body(), "got it");
        let seen = upstream.next_seen().await;
        assert_eq!(seen.framing, Framing::Length(size), "{:?}", seen.head);
        assert_eq!(seen.head.get("transfer-encoding"), None);
        assert_body(&seen, &body);
    }
}

/// A chunked request body (awkward pieces, extensions, a trailer) arrives complete and
/// soundly framed, chunked or with a length.
#[tokio::test]
async fn chunked_request_bodies_arrive_complete() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"got it"))).await;
    let env = proxy_to(&upstream).await;
    let mut client = Wire::connect(env.http()).await;
    let head =
        format!("POST /chunked HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let pieces: [&[u8]; 9] = [
        head.as_bytes(),
        b"5\r\nhel",
        b"lo\r\n",
        b"6;ext=1\r\n world\r",
        b"\n1",
        b"0\r\nsixteen bytes..\n\r\n",
        b"1\r\n!\r\n",
        b"0\r\nX-Trailer: t\r\n",
        b"\r\n",
    ];
    for piece in pieces {
        assert!(client.send(piece).await);
        sleep(Duration::from_millis(2)).await;
    }
    let got = client.response(false).await.unwrap();
    assert_eq!((got.head.status(), &got.body[..]), (200, &b"got it"[..]));
    assert_body(
        &upstream.next_seen().await,
        b"hello worldsixteen bytes..\n!",
    );

    // A streamed body from a hyper client, 1 MiB in uneven frames.
    let body = pattern(MIB);
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
        .chunks(77_777)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let req = Request::post("/streamed")
        .header("host", HOST)
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let got = send(env.http(), req).await.unwrap();
    assert_eq!(got.ok_body(), "got it");
    assert_body(&upstream.next_seen().await, &body);
    settle().await;
    assert_eq!(get(&env, "/after").await.ok_body(), "got it");
    assert_eq!(
        upstream.accepted(),
        1,
        "the connection is reused after chunked bodies"
    );
}

/// HTTP/2 request bodies (with and without a content-length) arrive complete upstream.
#[tokio::test]
async fn h2_request_bodies_arrive_complete() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"got it"))).await;
    let env = proxy_to(&upstream).await;
    let body = pattern(200_000);
    let req = Request::post(format!("http://{HOST}/h2-full"))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let got = send_h2(env.http(), req).await;
    assert_eq!(got.ok_body(), "got it");
    let seen = upstream.next_seen().await;
    assert_eq!(seen.path(), "/h2-full");
    assert_body(&seen, &body);

    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
        .chunks(33_333)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let req = Request::post(format!("http://{HOST}/h2-streamed"))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let got = send_h2(env.http(), req).await;
    assert_eq!(got.ok_body(), "got it");
    let seen = upstream.next_seen().await;
    assert_eq!(seen.path(), "/h2-streamed");
    assert_body(&seen, &body);
}

/// Hop-by-hop request headers stay on the client's hop: Connection and what it names,
/// Keep-Alive, TE, Trailer, Proxy-Connection, and the client's Transfer-Encoding (the
/// upstream may get the proxy's own `chunked`, nothing else). The raw head is checked.
#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"got it"))).await;
    let env = proxy_to(&upstream).await;
    let mut client = Wire::connect(env.http()).await;
    let req = format!(
        "POST /hop HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, X-Hop, x-other\r\n\
         X-Hop: secret\r\nX-Other: secret too\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Trailer: X-T\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    );
    assert!(client.send(req.as_bytes()).await);
    let got = client.response(false).await.unwrap();
    assert_eq!(got.head.status(), 200);
    let seen = upstream.next_seen().await;
    let head = &seen.head;
    for name in [
        "x-hop",
        "x-other",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            head.all(name).is_empty(),
            "{name} reached the upstream: {head:?}"
        );
    }
    for value in head.all("connection") {
        for token in value.split(',') {
            let token = token.trim().to_ascii_lowercase();
            assert!(
                token == "keep-alive" || token == "close",
                "Connection: {value} reached the upstream"
            );
        }
    }
    assert_eq!(head.get("x-kept"), Some("yes"));
    assert_eq!(head.get("host"), Some(HOST), "exactly one Host");
    assert_body(&seen, b"hello");
}

/// An upstream that answers 413 after the request head, while the client is still
/// sending a large body: the client gets the 413 (or at worst a clean connection error,
/// never another status or a hang), and the proxy serves the next request.
#[tokio::test]
async fn an_early_response_while_the_body_is_still_coming_reaches_the_client() {
    let upstream = Upstream::start(|mut conn| async move {
        let Some(req) = conn.head_only().await else {
            return;
        };
        if req.path() == "/upload" {
            conn.send(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large")
                .await;
            conn.linger().await;
            return;
        }
        // Anything else is a bodiless GET.
        conn.send(&ok(b"fine")).await;
        conn.serve(|_| ok(b"fine")).await;
    })
    .await;
    let env = proxy_to(&upstream).await;
    let total = 64 * 64 * 1024;
    let stream = TcpStream::connect(env.http()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {total}\r\n\r\n");
    let writer = tokio::spawn(async move {
        if !matches!(
            timeout(LIMIT, wr.write_all(head.as_bytes())).await,
            Ok(Ok(()))
        ) {
            return 0;
        }
        let chunk = vec![b'u'; 64 * 1024];
        let mut sent = 0;
        for _ in 0..64 {
            match timeout(LIMIT, wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
            sleep(Duration::from_millis(2)).await;
        }
        sent
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let outcome = loop {
        match timeout(LIMIT, rd.read(&mut buf)).await {
            Err(_) => panic!("no response within {LIMIT:?}: the proxy hung"),
            Ok(Ok(0)) => break "closed",
            Ok(Err(_)) => break "reset",
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"too large") || got.len() > 64 * 1024 {
                    break "answered";
                }
            }
        }
    };
    let sent = timeout(LIMIT * 2, writer).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&got);
    eprintln!("the client saw: {outcome} after sending {sent} of {total} bytes: {text:?}");
    assert!(
        text.starts_with("HTTP/1.1 413") || got.is_empty(),
        "the client got something else than the 413: {text:?}"
    );
    assert_eq!(get(&env, "/ok").await.ok_body(), "fine");
}

/// Large response bodies, with a length and chunked, arrive byte-exact, and the
/// connection carries the next request after each.
#[tokio::test]
async fn one_mib_response_bodies_arrive_byte_exact_and_keep_the_connection() {
    let body = pattern(MIB);
    let sent = Arc::new(body.clone());
    let upstream = Upstream::start(move |conn| {
        let body = sent.clone();
        conn.serve(move |req| match req.path() {
            "/cl" => ok(&body),
            _ => {
                let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                out.extend_from_slice(&chunked(&body, &[1, 7, 4096, 65_536, 100_003, 3]));
                out
            }
        })
    })
    .await;
    let env = proxy_to(&upstream).await;
    for path in ["/cl", "/chunked", "/cl", "/chunked"] {
        let got = get(&env, path).await;
        assert!(got.ok_body()[..] == body[..], "{path}: the body differs");
        settle().await;
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

/// Large request bodies, with a length and chunked, arrive byte-exact, and the
/// connection carries the next request after each.
#[tokio::test]
async fn one_mib_request_bodies_arrive_byte_exact_and_keep_the_connection() {
    let mut upstream = Upstream::start(|conn| conn.serve(|_| ok(b"got it"))).await;
    let env = proxy_to(&upstream).await;
    let body = pattern(MIB);
    for round in 0..2 {
        let got = send(env.http(), request("POST", "/cl", body.clone()))
            .await
            .unwrap();
        assert_eq!(got.ok_body(), "got it", "round {round}");
        let seen = upstream.next_seen().await;
        assert_eq!(seen.framing, Framing::Length(MIB));
        assert_body(&seen, &body);
        settle().await;
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
            .chunks(50_000)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let req = Request::post("/chunked")
            .header("host", HOST)
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap();
        assert_eq!(send(env.http(), req).await.unwrap().ok_body(), "got it");
        assert_body(&upstream.next_seen().await, &body);
        settle().await;
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for everything"
    );
}

// ---------------------------------------------------------------------------------------
// Upgrades.
// ---------------------------------------------------------------------------------------

/// `101 Switching Protocols` with the new protocol's first bytes in the same write as
/// the head: the client gets those bytes through the tunnel, then bytes flow both ways
/// until each side closes.
#[tokio::test]
async fn upgrades_pass_bytes_sent_with_the_101_and_then_both_ways() {
    let mut upstream = Upstream::start(|mut conn| async move {
        if conn.head_only().await.is_none() {
            return;
        }
        let greeting = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\nhello from upstream\n";
        if !conn.send(greeting).await {
            return;
        }
        // Echo until the client's FIN, then say bye and close.
        let mut wire = conn.wire;
        let mut echoed = 0;
        while echoed < 64 * MIB {
            if wire.buf.is_empty() && !wire.fill().await {
                break;
            }
            let bytes = std::mem::take(&mut wire.buf);
            echoed += bytes.len();
            if !wire.send(&bytes).await {
                return;
            }
        }
        wire.send(b"bye\n").await;
        let _ = wire.stream.shutdown().await;
    })
    .await;
    let env = proxy_to(&upstream).await;
    let mut client = Wire::connect(env.http()).await;
    let req =
        format!("GET /up HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n");
    assert!(client.send(req.as_bytes()).await);
    let head = client.head().await.expect("a response head");
    assert_eq!(head.status(), 101, "{head:?}");
    let seen = upstream.next_seen().await;
    assert_eq!(seen.head.get("upgrade"), Some("foo"), "{:?}", seen.head);
    let connection = seen
        .head
        .get("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(connection.contains("upgrade"), "{:?}", seen.head);

    let greeting = client
        .exactly(20)
        .await
        .expect("the bytes sent with the 101");
    assert_eq!(greeting, b"hello from upstream\n");

    assert!(client.send(b"ping").await);
    assert_eq!(client.exactly(4).await.as_deref(), Some(&b"ping"[..]));

    // 256 KiB each way at once.
    let blob = pattern(256 * 1024);
    let Wire { stream, buf } = client;
    assert!(buf.is_empty());
    let (mut rd, mut wr) = stream.into_split();
    let outgoing = blob.clone();
    let writer = tokio::spawn(async move {
        timeout(LIMIT, wr.write_all(&outgoing))
            .await
            .unwrap()
            .unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    timeout(LIMIT, rd.read_to_end(&mut back))
        .await
        .expect("the tunnel stalled")
        .unwrap();
    timeout(LIMIT, writer).await.unwrap().unwrap();
    assert_eq!(back.len(), blob.len() + 4);
    assert!(back[..blob.len()] == blob[..], "the echoed bytes differ");
    assert_eq!(&back[blob.len()..], b"bye\n");
}
