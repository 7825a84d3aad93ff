use proptest::prelude::*;

use super::*;

fn conn() -> ConnHeaders {
    ConnHeaders::new(
        "[::ffff:10.1.2.3]:5555".parse().unwrap(),
        "127.0.0.1:8443".parse().unwrap(),
        true,
        false,
    )
}

fn parts(method: &str, uri: &str, fields: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in fields {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn encode(parts: &Parts, framing: RequestFraming, fwd: &Forwarding<'_>) -> String {
    let mut out = Vec::new();
    let target = Target::Addr("10.0.0.9:8080".parse().unwrap());
    encode_head(&mut out, parts, framing, fwd, &target);
    String::from_utf8(out).unwrap()
}

fn plain(conn: &ConnHeaders) -> Forwarding<'_> {
    Forwarding {
        conn,
        host: None,
        upstream_host: None,
        path: None,
        rewritten: None,
        set: &[],
        request_id: None,
        upgrade: false,
        client: None,
        full_forwarded_for: false,
        original_from: None,
    }
}

#[test]
fn request_heads_carry_the_forwarding_fields() {
    let conn = conn();
    let host = HeaderValue::from_static("a.com");
    let id = b"id-1";
    let p = parts(
        "GET",
        "/p?q=1",
        &[
            ("host", "a.com"),
            ("x-forwarded-for", "1.1.1.1"),
            ("accept", "*/*"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "http"),
            ("x-real-ip", "6.6.6.6"),
            ("x-scheme", "ftp"),
            ("proxy", "http://attacker:3128"),
            ("x-original-forwarded-host", "forged"),
        ],
    );
    let fwd = Forwarding {
        host: Some(&host),
        request_id: Some(id),
        ..plain(&conn)
    };
    assert_eq!(
        encode(&p, RequestFraming::Empty, &fwd),
        "GET /p?q=1 HTTP/1.1\r\n\
         host: a.com\r\n\
         accept: */*\r\n\
         x-original-forwarded-for: 1.1.1.1, 2.2.2.2\r\n\
         x-forwarded-for: 10.1.2.3\r\n\
         x-forwarded-proto: https\r\n\
         x-forwarded-port: 8443\r\n\
         x-real-ip: 10.1.2.3\r\n\
         x-scheme: https\r\n\
         x-forwarded-host: a.com\r\n\
         x-request-id: id-1\r\n\
         \r\n"
    );
}

#[test]
fn hop_by_hop_fields_stay_behind() {
    let conn = conn();
    let p = parts(
        "POST",
        "/",
        &[
            ("host", "a.com"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ],
    );
    let head = encode(&p, RequestFraming::Length(3), &plain(&conn));
    let names: Vec<&str> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "host",
            "x-kept",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-real-ip",
            "x-scheme",
            "content-length"
        ]
    );
}

#[test]
fn upgrades_keep_upgrade_and_say_connection_upgrade() {
    let conn = conn();
    let p = parts(
        "GET",
        "/ws",
        &[
            ("host", "a.com"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ],
    );
    let fwd = Forwarding {
        upgrade: true,
        ..plain(&conn)
    };
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("sec-websocket-key: k\r\n"), "{head}");
    assert_eq!(head.matches("connection:").count(), 1, "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
}

#[test]
fn host_is_added_when_missing() {
    let conn = conn();
    let authority = HeaderValue::from_static("h2.example:8443");
    let p = parts("GET", "https://h2.example:8443/x", &[]);
    let fwd = Forwarding {
        host: Some(&authority),
        ..plain(&conn)
    };
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(
        head.starts_with("GET /x HTTP/1.1\r\n"),
        "origin-form: {head}"
    );
    assert!(head.contains("host: h2.example:8443\r\n"), "{head}");
    // No host at all (HTTP/1.0 without Host): the target's address.
    let head = encode(
        &parts("GET", "/", &[]),
        RequestFraming::Empty,
        &plain(&conn),
    );
    assert!(head.contains("host: 10.0.0.9:8080\r\n"), "{head}");
}

#[test]
fn bodies_are_framed() {
    let conn = conn();
    let p = parts("POST", "/", &[("host", "a"), ("content-length", "5")]);
    let chunked = encode(&p, RequestFraming::Chunked, &plain(&conn));
    assert!(!chunked.contains("content-length"), "{chunked}");
    assert!(
        chunked.ends_with("transfer-encoding: chunked\r\n\r\n"),
        "{chunked}"
    );
    let kept = encode(&p, RequestFraming::Length(5), &plain(&conn));
    assert_eq!(kept.matches("content-length: 5\r\n").count(), 1, "{kept}");
    let p = parts("POST", "/", &[("host", "a")]);
    let added = encode(&p, RequestFraming::Length(7), &plain(&conn));
    assert!(added.ends_with("content-length: 7\r\n\r\n"), "{added}");
    assert_eq!(&last_chunk(None)[..], b"0\r\n\r\n");
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("9"));
    assert_eq!(&last_chunk(Some(&trailers))[..], b"0\r\nx-sum: 9\r\n\r\n");
    assert_eq!(ChunkLine::new(255).as_bytes(), b"ff\r\n");
    assert_eq!(ChunkLine::new(1).as_bytes(), b"1\r\n");
    assert_eq!(ChunkLine::new(0x1000).as_bytes(), b"1000\r\n");
    assert_eq!(
        ChunkLine::new(usize::MAX).as_bytes(),
        b"ffffffffffffffff\r\n"
    );
}

fn head_of(text: &str, head_request: bool) -> io::Result<Option<Head>> {
    parse_head(
        &mut BytesMut::from(text.as_bytes()),
        Reading {
            head_request,
            hide_server: false,
        },
    )
}

fn framing(text: &str) -> (ResponseFraming, bool) {
    let head = head_of(text, false).unwrap().unwrap();
    (head.framing, head.keep_alive)
}

#[test]
fn response_heads_are_parsed_whole_or_not_at_all() {
    let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nokNEXT";
    for cut in 0..text.len() {
        let mut buf = BytesMut::from(&text.as_bytes()[..cut]);
        let parsed = parse_head(&mut buf, Reading::default()).unwrap();
        let complete = cut >= text.find("ok").unwrap();
        assert_eq!(parsed.is_some(), complete, "cut at {cut}");
        if !complete {
            assert_eq!(buf.len(), cut, "nothing consumed before the head is whole");
        }
    }
    let mut buf = BytesMut::from(text.as_bytes());
    let head = parse_head(&mut buf, Reading::default()).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
    assert_eq!(
        (head.framing, head.keep_alive),
        (ResponseFraming::Length(2), true)
    );
    assert_eq!(&buf[..], b"okNEXT", "the body stays in the buffer");
}

#[test]
fn hop_by_hop_response_fields_stay_behind() {
    let head = head_of(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: x-t\r\n\
         Upgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    let mut names: Vec<&str> = head.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    // Content-Length of a body of known length is written by hyper, from the body's size.
    assert_eq!(names, ["x-kept"]);
    assert_eq!(head.framing, ResponseFraming::Length(0));
    let head = head_of(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: a\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.headers["upgrade"], "websocket");
    assert_eq!(head.headers["connection"], "upgrade");
    assert_eq!(head.headers["sec-websocket-accept"], "a");
}

/// Content-Length stays in the map only where there is no body to take it from: the
/// answers to HEAD, 204 and 304 carry the upstream's as it is.
#[test]
fn content_length_goes_on_as_it_is_only_without_a_body() {
    let text = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    let get = head_of(text, false).unwrap().unwrap();
    assert_eq!(get.framing, ResponseFraming::Length(1234));
    assert!(get.headers.get("content-length").is_none());
    let head = head_of(text, true).unwrap().unwrap();
    assert_eq!(head.framing, ResponseFraming::Empty);
    assert_eq!(head.headers["content-length"], "1234");
    let not_modified = "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
    let head = head_of(not_modified, false).unwrap().unwrap();
    assert_eq!(head.headers["content-length"], "99");
    let conflicting = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert!(head_of(conflicting, false).is_err());
    assert!(head_of(conflicting, true).is_err(), "invalid for HEAD too");
}

#[test]
fn informational_responses_are_skipped() {
    let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    let head = head_of(text, false).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    assert!(head.headers.get("link").is_none());
    // A 100 alone is consumed; the final head is still to come.
    let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
    assert!(parse_head(&mut buf, Reading::default()).unwrap().is_none());
    assert_eq!(&buf[..], b"HTTP/1.1 2");
}

#[test]
fn response_framing_follows_rfc_9112() {
    use ResponseFraming::*;
    assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n"), (Empty, true));
    assert_eq!(
        framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        (Empty, true)
    );
    let head = head_of("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(head.framing, Empty, "a HEAD response has no body");
    assert_eq!(head.headers["content-length"], "9", "and keeps its length");
    // Only `chunked` alone frames a body; any other coding is a 502 (see
    // malformed_response_heads_are_errors).
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n"),
        (Chunked, true)
    );
    let head = head_of(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!((head.framing, head.keep_alive), (Chunked, false));
    assert!(head.headers.get("content-length").is_none());
    assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Close, false));
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
        (Length(5), true)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"),
        (Length(0), false)
    );
    assert_eq!(
        framing("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
        (Length(0), false)
    );
    assert_eq!(
        framing("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
        (Length(0), true)
    );
    assert_eq!(
        framing("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
        (Upgrade, false)
    );
}

#[test]
fn malformed_response_heads_are_errors() {
    for (text, says) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "conflicting",
        ),
        ("HTTP/1.1 2x0 OK\r\n\r\n", "invalid response head"),
        (
            "HTTP/1.1 200 OK\r\nX-A: 1\nSet-Cookie: x=1\r\nContent-Length: 0\r\n\r\n",
            "bare LF",
        ),
        ("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", "bare LF"),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "transfer coding",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "transfer coding",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "transfer coding",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "transfer coding",
        ),
        ("SSH-2.0-OpenSSH\r\n\r\n", "invalid response head"),
    ] {
        let e = head_of(text, false).unwrap_err();
        assert!(e.to_string().contains(says), "{text:?}: {e}");
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let e = head_of(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).unwrap_err();
    assert!(e.to_string().contains("header fields"), "{e}");
    let big = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD));
    let e = head_of(&big, false).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
}

/// Everything `decoder` makes of `wire` when the bytes arrive in pieces cut at `cuts`; the
/// data joined, then the trailers, then whether it ended.
fn decode_in_pieces(
    mut decoder: Decoder,
    wire: &[u8],
    cuts: &[usize],
) -> io::Result<(Vec<u8>, Option<HeaderMap>, bool, BytesMut)> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let (mut buf, mut data, mut trailers, mut fed) = (BytesMut::new(), Vec::new(), None, 0);
    for point in points {
        buf.extend_from_slice(&wire[fed..point.max(fed)]);
        fed = point.max(fed);
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::NeedMore => break,
                Decoded::End => {
                    buf.extend_from_slice(&wire[fed..]);
                    return Ok((data, trailers, true, buf));
                }
            }
        }
    }
    Ok((data, trailers, decoder.is_done(), buf))
}

const CHUNKED: &[u8] =
    b"5;ext=\"a b\"\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Sum: 42\r\n\r\nNEXT";

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let decoder = Decoder::new(ResponseFraming::Chunked);
    let (data, trailers, ended, rest) = decode_in_pieces(decoder, CHUNKED, &[]).unwrap();
    assert_eq!(data, b"hello 0123456789");
    assert_eq!(trailers.unwrap()["x-sum"], "42");
    assert!(ended);
    assert_eq!(&rest[..], b"NEXT", "bytes after the body are left alone");
    let plain = b"3\r\nabc\r\n0\r\n\r\n";
    let (data, trailers, ended, _) = decode_in_pieces(decoder, plain, &[]).unwrap();
    assert_eq!(
        (data, trailers.is_none(), ended),
        (b"abc".to_vec(), true, true)
    );
}

proptest! {
    #[test]
    fn chunked_bodies_decode_however_they_are_cut(cuts in proptest::collection::vec(0usize..200, 0..12)) {
        let decoder = Decoder::new(ResponseFraming::Chunked);
        let (data, trailers, ended, rest) = decode_in_pieces(decoder, CHUNKED, &cuts).unwrap();
        prop_assert_eq!(data, b"hello 0123456789".to_vec());
        prop_assert_eq!(&trailers.unwrap()["x-sum"], "42");
        prop_assert!(ended);
        prop_assert_eq!(&rest[..], b"NEXT");
    }

    #[test]
    fn length_bodies_take_exactly_their_length(cuts in proptest::collection::vec(0usize..40, 0..6)) {
        let decoder = Decoder::new(ResponseFraming::Length(10));
        let (data, _, ended, rest) =
            decode_in_pieces(decoder, b"0123456789HTTP/1.1", &cuts).unwrap();
        prop_assert_eq!(data, b"0123456789".to_vec());
        prop_assert!(ended);
        prop_assert_eq!(&rest[..], b"HTTP/1.1");
    }
}

#[test]
fn broken_chunked_bodies_are_errors() {
    for wire in [
        &b"zz\r\nabc\r\n"[..],
        b"3\r\nabcX\r\n",
        b"fffffffffffffffff\r\n",
        b"0\r\nX-A: 1\nX-Injected: 2\r\n\r\n",
        b"0\r\nX-A: 1\r\n\n",
        b"0\r\nX-A: \x01\r\n\r\n",
    ] {
        let decoder = Decoder::new(ResponseFraming::Chunked);
        assert!(decode_in_pieces(decoder, wire, &[]).is_err(), "{wire:?}");
    }
    let mut decoder = Decoder::new(ResponseFraming::Chunked);
    let mut long = BytesMut::from(&b"5;"[..]);
    long.extend_from_slice(&[b'a'; MAX_CHUNK_LINE]);
    assert!(
        decoder.decode(&mut long).is_err(),
        "endless chunk-size line"
    );
}

#[test]
fn eof_ends_only_close_delimited_bodies() {
    let mut close = Decoder::new(ResponseFraming::Close);
    let mut buf = BytesMut::from(&b"all of it"[..]);
    assert_eq!(
        close.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"all of it"))
    );
    assert_eq!(close.decode(&mut buf).unwrap(), Decoded::NeedMore);
    close.eof().unwrap();
    assert_eq!(close.decode(&mut buf).unwrap(), Decoded::End);
    let mut length = Decoder::new(ResponseFraming::Length(5));
    assert_eq!(length.remaining(), Some(5));
    assert_eq!(
        length.eof().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    assert!(Decoder::new(ResponseFraming::Chunked).eof().is_err());
    assert!(Decoder::new(ResponseFraming::Length(0)).is_done());
    assert!(Decoder::new(ResponseFraming::Empty).is_done());
}

#[test]
fn response_field_names_match_from_bytes_in_any_case() {
    let mut names: Vec<String> = (0..32)
        .flat_map(common_response_fields)
        .map(|(raw, name)| {
            assert_eq!(*raw, name.as_str().as_bytes());
            name.as_str().to_owned()
        })
        .collect();
    assert_eq!(names.len(), 14);
    names.extend(
        [
            "x-custom",
            "content-language",
            "dates",
            "dat",
            "x-date",
            "Server2",
        ]
        .map(String::from),
    );
    for name in names {
        for raw in [name.clone(), name.to_ascii_uppercase(), title_case(&name)] {
            assert_eq!(
                response_field_name(raw.as_bytes()),
                HeaderName::from_bytes(raw.as_bytes()).ok(),
                "{raw}"
            );
        }
    }
    assert_eq!(response_field_name(b"bad name"), None);
    assert_eq!(response_field_name(b""), None);
}

fn title_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[test]
fn compute_full_forwarded_for_keeps_the_client_list_before_the_peer() {
    let conn = conn();
    let p = parts(
        "GET",
        "/",
        &[
            ("host", "a.com"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-original-forwarded-for", "forged"),
        ],
    );
    // Only when a trusted peer named the client: a client's own list is never kept.
    let untrusted = Forwarding {
        full_forwarded_for: true,
        ..plain(&conn)
    };
    let head = encode(&p, RequestFraming::Empty, &untrusted);
    assert!(head.contains("x-forwarded-for: 10.1.2.3\r\n"), "{head}");
    let named = ClientForwarding {
        tail: conn.forwarded_tail.to_vec(),
        host: None,
    };
    let fwd = Forwarding {
        full_forwarded_for: true,
        client: Some(&named),
        ..plain(&conn)
    };
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(
        head.contains("x-original-forwarded-for: 1.1.1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("x-forwarded-for: 1.1.1.1, 10.1.2.3\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("forged"),
        "the client's own X-Original-Forwarded-For: {head}"
    );
    // Without a client list, X-Original-Forwarded-For is not sent at all.
    let p = parts("GET", "/", &[("host", "a.com")]);
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(!head.contains("x-original-forwarded-for"), "{head}");
    assert!(head.contains("x-forwarded-for: 10.1.2.3\r\n"), "{head}");
}

/// With `forwarded-for-header: CF-Connecting-IP`, X-Original-Forwarded-For carries the
/// client's field of that name (ingress-nginx's `$http_cf_connecting_ip`), every value, and
/// never the client's own X-Original-Forwarded-For.
#[test]
fn the_original_forwarded_for_comes_from_the_forwarded_for_header() {
    let conn = conn();
    let p = parts(
        "GET",
        "/",
        &[
            ("host", "a.com"),
            ("x-forwarded-for", "1.1.1.1"),
            ("cf-connecting-ip", "2.2.2.2"),
            ("cf-connecting-ip", "3.3.3.3"),
            ("x-original-forwarded-for", "forged"),
        ],
    );
    let fwd = Forwarding {
        original_from: Some("cf-connecting-ip"),
        ..plain(&conn)
    };
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(
        head.contains("x-original-forwarded-for: 2.2.2.2, 3.3.3.3\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("forged") && !head.contains("1.1.1.1"),
        "{head}"
    );
    assert!(head.contains("x-forwarded-for: 10.1.2.3\r\n"), "{head}");
    let p = parts(
        "GET",
        "/",
        &[("host", "a.com"), ("x-forwarded-for", "1.1.1.1")],
    );
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(!head.contains("x-original-forwarded-for"), "{head}");
}

#[test]
fn a_trusted_client_s_values_replace_the_connection_s() {
    let conn = conn();
    let p = parts(
        "GET",
        "/",
        &[("host", "a.com"), ("x-forwarded-host", "evil")],
    );
    let client = ClientForwarding {
        tail: crate::proxy::headers::forwarding_tail(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            false,
            8080,
        ),
        host: Some(HeaderValue::from_static("lb.example")),
    };
    let fwd = Forwarding {
        client: Some(&client),
        ..plain(&conn)
    };
    let head = encode(&p, RequestFraming::Empty, &fwd);
    assert!(
        head.contains(
            "x-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: http\r\nx-forwarded-port: 8080\r\nx-real-ip: 192.0.2.1\r\nx-scheme: http\r\nx-forwarded-host: lb.example\r\n"
        ),
        "{head}"
    );
    // The client's own field goes aside, as ingress-nginx's X-Original-Forwarded-Host.
    assert!(
        head.contains("x-original-forwarded-host: evil\r\n"),
        "{head}"
    );
    assert_eq!(head.matches("evil").count(), 1, "{head}");
}

#[test]
fn the_endpoints_server_field_is_hidden_from_proxied_responses_only() {
    let text =
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nX-Kept: yes\r\nContent-Length: 0\r\n\r\n";
    let proxied = parse_head(
        &mut BytesMut::from(text.as_bytes()),
        Reading::proxied(false),
    )
    .unwrap()
    .unwrap();
    assert!(proxied.headers.get(header::SERVER).is_none());
    assert_eq!(proxied.headers["x-kept"], "yes");
    let kept = parse_head(&mut BytesMut::from(text.as_bytes()), Reading::default())
        .unwrap()
        .unwrap();
    assert_eq!(kept.headers[header::SERVER], "nginx/1.22.1");
}
