//! The rule of `/debug/*`, with fabricated peers (a test can only connect from loopback).

use std::net::SocketAddr;

use http::Request;

use super::*;

fn peer(s: &str) -> SocketAddr {
    s.parse().expect("peer address")
}

fn request(host: Option<&str>, authorization: Option<&str>) -> Request<()> {
    let mut req = Request::get("/debug/snapshot");
    if let Some(host) = host {
        req = req.header("host", host);
    }
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.body(()).expect("request")
}

const LOOPBACK: &str = "127.0.0.1:40000";
const LOOPBACK_V6: &str = "[::1]:40000";
const MAPPED_LOOPBACK: &str = "[::ffff:127.0.0.1]:40000";
const REMOTE: &str = "10.1.2.3:40000";

/// (peer, Host, Authorization, token configured, allowed)
type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool, bool);

#[test]
fn the_rule() {
    let token = AdminToken::new(b"s3cret-token").expect("token");
    let good = Some("Bearer s3cret-token");
    let cases: &[Case<'_>] = &[
        (LOOPBACK, Some("localhost:10254"), None, false, true),
        (LOOPBACK, Some("127.0.0.1:10254"), None, false, true),
        (LOOPBACK, Some("[::1]:10254"), None, false, true),
        (LOOPBACK, Some("LocalHost"), None, false, true),
        (LOOPBACK_V6, Some("localhost:10254"), None, false, true),
        (MAPPED_LOOPBACK, Some("localhost"), None, false, true),
        (LOOPBACK, Some("localhost:10254"), None, true, true),
        // DNS rebinding: a foreign Host is refused even from loopback, even with the token.
        (LOOPBACK, Some("evil.example"), None, false, false),
        (LOOPBACK, Some("evil.example:10254"), None, false, false),
        (LOOPBACK, Some("evil.example"), good, true, false),
        (LOOPBACK, Some("localhost.evil.example"), None, false, false),
        (LOOPBACK, None, None, false, false),
        // Not loopback: only with the token.
        (REMOTE, Some("10.0.0.5:10254"), None, false, false),
        (REMOTE, Some("10.0.0.5:10254"), None, true, false),
        (REMOTE, Some("10.0.0.5:10254"), good, true, true),
        (
            REMOTE,
            Some("10.0.0.5:10254"),
            Some("bearer s3cret-token"),
            true,
            true,
        ),
        (REMOTE, Some("10.0.0.5:10254"), good, false, false),
        (
            REMOTE,
            Some("10.0.0.5:10254"),
            Some("Bearer wrong"),
            true,
            false,
        ),
        (
            REMOTE,
            Some("10.0.0.5:10254"),
            Some("Bearer s3cret-toke"),
            true,
            false,
        ),
        (
            REMOTE,
            Some("10.0.0.5:10254"),
            Some("Bearer s3cret-token2"),
            true,
            false,
        ),
        (REMOTE, Some("10.0.0.5:10254"), Some("Bearer "), true, false),
        (
            REMOTE,
            Some("10.0.0.5:10254"),
            Some("Basic czNjcmV0LXRva2Vu"),
            true,
            false,
        ),
        (
            REMOTE,
            Some("10.0.0.5:10254"),
            Some("s3cret-token"),
            true,
            false,
        ),
        (REMOTE, Some("portico.example:10254"), good, true, false),
    ];
    for &(from, host, authorization, with_token, allowed) in cases {
        let req = request(host, authorization);
        let token = with_token.then_some(&token);
        assert_eq!(
            debug_allowed(peer(from), &req, token),
            allowed,
            "{from} Host {host:?} Authorization {authorization:?} token {with_token}"
        );
    }
}

#[test]
fn hosts() {
    for host in [
        "localhost",
        "localhost:10254",
        "LOCALHOST:1",
        "127.0.0.1",
        "10.0.0.5:80",
        "[::1]",
        "[::1]:10254",
        "[fd00::5]:10254",
    ] {
        assert!(is_local_host(host), "{host}");
    }
    for host in [
        "",
        "evil.example",
        "localhost.",
        "localhost:",
        "localhost:+80",
        "localhost:99999",
        "localhost:10254:1",
        "::1",
        "[::1",
        "127.1",
        "127.0.0.1.evil.example",
        "[evil.example]",
    ] {
        assert!(!is_local_host(host), "{host}");
    }
}

#[test]
fn token_file_is_trimmed_and_must_not_be_empty() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("token");
    std::fs::write(&path, "  s3cret\n").expect("write");
    let token = AdminToken::read(&path).expect("token");
    assert!(token.verify(b"s3cret"));
    assert!(!token.verify(b"  s3cret\n"));
    assert!(!format!("{token:?}").contains("s3cret"));
    std::fs::write(&path, " \n\t").expect("write");
    assert!(matches!(AdminToken::read(&path), Err(TokenError::Empty(_))));
    let missing = dir.path().join("missing");
    assert!(matches!(
        AdminToken::read(&missing),
        Err(TokenError::Read { .. })
    ));
}
