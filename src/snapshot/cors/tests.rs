use http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn origins(value: &str) -> (Origins, Vec<String>) {
    let mut w = Vec::new();
    (parse_origins(value, &mut w), w)
}

fn cors(value: &str) -> Cors {
    Cors {
        origins: origins(value).0,
        methods: HeaderValue::from_static(DEFAULT_METHODS),
        headers: HeaderValue::from_static(DEFAULT_HEADERS),
        expose: None,
        credentials: true,
        max_age: HeaderValue::from_static("1728000"),
    }
}

fn allowed(c: &Cors, origin: &str) -> Option<String> {
    let v = HeaderValue::from_str(origin).unwrap();
    c.allow_origin(Some(&v))
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn origins_match_as_ingress_nginx_lists_them() {
    let c = cors("https://a.example, http://b.example:8080, https://*.c.example, null");
    for (origin, ok) in [
        ("https://a.example", true),
        ("HTTPS://A.EXAMPLE", true),
        ("http://a.example", false),
        ("https://a.example:443", false),
        ("https://a.example.evil", false),
        ("https://evil-https://a.example", false),
        ("http://b.example:8080", true),
        ("http://b.example", false),
        ("https://x.c.example", true),
        ("https://x-y.c.example", true),
        ("https://c.example", false),
        ("https://x.y.c.example", false),
        ("null", true),
    ] {
        let want = ok.then(|| origin.to_string());
        assert_eq!(allowed(&c, origin), want, "{origin}");
    }
    assert!(cors("https://a.example").allow_origin(None).is_none());
    // `*` anywhere in the list: every request, answered `*`.
    let any = cors("https://a.example, *");
    assert_eq!(allowed(&any, "https://z.example").as_deref(), Some("*"));
    assert_eq!(any.allow_origin(None).unwrap(), "*");
}

#[test]
fn invalid_origins_are_left_out_with_a_warning() {
    let (o, w) = origins("https://a.example/path, ftp//x, https://ok.example, HTTPS://up.example");
    assert_eq!(w.len(), 3, "{w:?}");
    let Origins::List(re) = o else {
        panic!("a list")
    };
    assert!(re.is_match(b"https://ok.example"));
    // Nothing valid: no origin at all (ingress-nginx renders no CORS block then).
    let (o, w) = origins("nope, also nope");
    assert!(matches!(o, Origins::None) && w.len() == 2);
    // Empty entries are skipped (in ingress-nginx a trailing comma made an empty alternative
    // that matched every Origin).
    let c = cors("https://a.example,");
    assert_eq!(allowed(&c, "https://evil.example"), None);
}

#[test]
fn token_lists_follow_ingress_nginx_s_checks() {
    assert_eq!(
        token_list("GET, POST", Tokens::Methods).unwrap(),
        "GET, POST"
    );
    assert!(token_list("GET, P0ST", Tokens::Methods).is_none());
    assert!(token_list("X-Custom_1, Content-Type", Tokens::Headers).is_some());
    assert!(token_list("*", Tokens::Headers).is_none());
    assert!(token_list("*, X-A", Tokens::Expose).is_some());
    for bad in ["", "a;b", "a\r\nb", "$pid", "*"] {
        assert!(token_list(bad, Tokens::Headers).is_none(), "{bad:?}");
    }
    // ingress-nginx's regexes as written: what they let through is sent verbatim.
    for good in ["GET POST", "GET, POST,", "get"] {
        assert_eq!(token_list(good, Tokens::Methods).unwrap(), good, "{good:?}");
    }
    for bad in ["GET,  POST", ",GET", "GET,,POST", "GET;POST"] {
        assert!(token_list(bad, Tokens::Methods).is_none(), "{bad:?}");
    }
    for good in ["X-A X-B", "X-A,,X-B", "X-A, X_B"] {
        assert!(token_list(good, Tokens::Headers).is_some(), "{good:?}");
    }
    assert!(token_list("X-A, *", Tokens::Expose).is_some());
    assert!(token_list("X-A;", Tokens::Expose).is_none());
}

#[test]
fn the_fields_replace_the_endpoint_s() {
    let c = cors("*");
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("https://x"),
    );
    c.apply(HeaderValue::from_static("*"), &mut h);
    assert_eq!(
        h.get_all(http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .iter()
            .count(),
        1
    );
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "1728000");
    assert!(h.get("access-control-expose-headers").is_none());
}

proptest! {
    /// Any list: origins or a warning, never a panic; an allowed Origin is one of the list's.
    #[test]
    fn any_origin_list_is_handled(value in "[a-z:/.*,A-Z0-9 -]{0,80}", origin in "[a-z:/.A-Z0-9-]{0,40}") {
        let mut w = Vec::new();
        let o = parse_origins(&value, &mut w);
        let c = Cors { origins: o, ..cors("*") };
        if let Ok(v) = HeaderValue::from_str(&origin) {
            let _ = c.allow_origin(Some(&v));
        }
    }
}
