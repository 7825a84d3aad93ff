//! The snippet parser: what it understands, what it refuses, hostile input.

use proptest::prelude::*;

use super::*;

fn ops(text: &str) -> Result<HeaderOps, String> {
    let mut ops = HeaderOps::default();
    parse(text, &mut ops).map(|()| ops)
}

#[test]
fn the_four_header_directives() {
    let o = ops(r#"
        # security headers
        more_set_headers "X-Frame-Options: DENY" 'X-Content-Type-Options: nosniff';
        more_set_headers -s '404 500' -t 'text/html' "X-Error: yes";
        more_clear_headers Server 'X-Powered-*';
        add_header Cache-Control "max-age=60, public" always;
        add_header X-Host $host;
        proxy_set_header X-Forwarded-Proto https;
        proxy_set_header X-Original-Uri $request_uri;
        proxy_set_header Host $host;
    "#)
    .unwrap();
    assert_eq!(
        o.request.len(),
        2,
        "the Host line is the no-op it is in Portico"
    );
    assert_eq!(o.request[0].0.0.as_str(), "x-forwarded-proto");
    assert_eq!(o.response.len(), 7);
    match &o.response[2] {
        ResponseOp::Set { name, when, .. } => {
            assert_eq!(name.0.as_str(), "x-error");
            assert_eq!(when.statuses, [404, 500]);
            assert_eq!(&*when.types[0], "text/html");
            assert!(when.matches(404, Some(b"text/html; charset=utf-8")));
            assert!(!when.matches(200, Some(b"text/html")));
            assert!(!when.matches(404, Some(b"application/json")));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&o.response[4], ResponseOp::Clear { pattern, .. } if &**pattern == "x-powered-*")
    );
    assert!(matches!(
        &o.response[5],
        ResponseOp::Add { always: true, .. }
    ));
    assert!(matches!(
        &o.response[6],
        ResponseOp::Add { always: false, .. }
    ));
}

#[test]
fn anything_else_is_refused_naming_it() {
    for (text, needle) in [
        ("rewrite ^/a /b break;", "\"rewrite\""),
        ("return 200 'hi';", "\"return\""),
        ("if ($http_x = 1) { return 403; }", "\"if\""),
        ("location /x { }", "\"location\""),
        ("lua_need_request_body on;", "lua_need_request_body"),
        ("proxy_pass http://evil;", "proxy_pass"),
        ("more_set_headers 'X: a'", "without ';'"),
        ("more_set_headers 'X: a;", "unterminated"),
        (
            "more_set_headers 'Content-Length: 5';",
            "framing or hop-by-hop",
        ),
        (
            "more_set_headers 'Transfer-Encoding: chunked';",
            "framing or hop-by-hop",
        ),
        (
            "proxy_set_header Connection close;",
            "framing or hop-by-hop",
        ),
        ("proxy_set_header Host evil.example;", "upstream-vhost"),
        ("add_header 'Bad Name' x;", "not a header field name"),
        ("add_header X-A \"a\\nb\";", "line break"),
        ("add_header X-A $secret_var;", "$secret_var"),
        ("add_header X-A;", "takes a name"),
        ("more_set_headers -x 'X: a';", "option"),
        ("more_set_headers -s abc 'X: a';", "not a status"),
        ("more_clear_headers;", "no field"),
    ] {
        let err = ops(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
    assert!(
        ops(&"add_header X y;".repeat(2000))
            .unwrap_err()
            .contains("longer")
    );
}

#[test]
fn values_keep_spaces_and_refuse_control_characters() {
    let o =
        ops("more_set_headers 'Strict-Transport-Security: max-age=31536000; includeSubDomains';")
            .unwrap();
    let ResponseOp::Set { value, .. } = &o.response[0] else {
        panic!()
    };
    assert!(
        value
            .template
            .is_literal("max-age=31536000; includeSubDomains")
    );
    assert!(ops("add_header X \"a\u{1}b\";").is_err());
    assert!(ops("add_header X \"a\rb\";").is_err());
}

proptest! {
    /// Whatever the text, parsing ends with operations or an error, never a panic, and
    /// every operation names a field a snippet may touch.
    #[test]
    fn arbitrary_snippets_never_panic(text in "[ -~\\n\\t]{0,200}") {
        if let Ok(o) = ops(&text) {
            for (name, _) in &o.request {
                prop_assert!(!FORBIDDEN.contains(&name.0.as_str()));
            }
        }
    }

    #[test]
    fn directive_shaped_snippets_never_panic(
        d in prop::sample::select(vec!["more_set_headers", "more_clear_headers", "add_header", "proxy_set_header", "set"]),
        args in proptest::collection::vec("[ -~]{0,12}", 0..4),
    ) {
        let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        let _ = ops(&format!("{d} {};", quoted.join(" ")));
    }
}

/// A location's operations under its server's: the http level's first, then the server's
/// more_set_headers/more_clear_headers, then the location's own; the server's add_header only
/// when the location has none (nginx inherits add_header only into a level that sets none).
#[test]
fn a_servers_operations_go_between_the_http_levels_and_the_locations() {
    let names = |o: &HeaderOps| -> Vec<String> {
        o.response
            .iter()
            .map(|op| match op {
                ResponseOp::Set { name, .. } => format!("set {}", name.0),
                ResponseOp::Add { name, .. } => format!("add {}", name.0),
                ResponseOp::Clear { pattern, .. } => format!("clear {pattern}"),
            })
            .collect()
    };
    let server =
        ops("more_set_headers 'X-S: 1'; add_header X-Sa 1; more_clear_headers X-C;").unwrap();
    let mut http = ops("more_set_headers 'X-Http: 1';").unwrap();
    http.inherited = http.response.len();
    let mut location = http.clone();
    parse("more_set_headers 'X-L: 1';", &mut location).unwrap();
    assert_eq!(
        names(&location.under_server(&server)),
        ["set x-http", "set x-s", "add x-sa", "clear x-c", "set x-l"]
    );
    let mut with_add = http.clone();
    parse("add_header X-La 1;", &mut with_add).unwrap();
    assert_eq!(
        names(&with_add.under_server(&server)),
        ["set x-http", "set x-s", "clear x-c", "add x-la"]
    );
    // No http level, no location: the server's alone.
    assert_eq!(
        names(&HeaderOps::default().under_server(&server)),
        ["set x-s", "add x-sa", "clear x-c"]
    );
    // Computed once again: literal values, no per-request expansion.
    assert!(!location.under_server(&server).response_vars);
}
