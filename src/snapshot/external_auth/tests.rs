use proptest::prelude::*;

use super::*;
use crate::snapshot::build::annotations::parse_hash_key;
use crate::snapshot::routes::RequestVars;

fn values(url: &str) -> AuthValues {
    AuthValues {
        url: url.to_string(),
        ..AuthValues::default()
    }
}

fn spec(v: &AuthValues) -> Result<AuthSpec, Invalid> {
    parse(v, parse_hash_key, &mut Vec::new())
}

fn vars<'a>(host: &'a str, path: &'a str, query: Option<&'a str>) -> RequestVars<'a> {
    RequestVars {
        scheme: "http",
        pass_scheme: "http",
        http_host: host,
        path,
        raw_path: path,
        query,
        captures: None,
        client: None,
        headers: None,
    }
}

#[test]
fn urls_split_as_nginx_proxy_pass_takes_them() {
    let u = parse_url("http://auth.example.com/check?x=1").unwrap();
    assert!(!u.tls);
    assert_eq!(u.host, AuthHost::Literal("auth.example.com".into()));
    assert_eq!(u.port, 80);
    assert!(u.path.is_literal("/check?x=1"));
    let u = parse_url("HTTPS://Auth.Example.COM:8443").unwrap();
    assert!(u.tls);
    assert_eq!(u.port, 8443);
    assert_eq!(u.host, AuthHost::Literal("auth.example.com".into()));
    assert!(u.path.is_literal("/"));
    let u = parse_url("http://[::1]:9000/a").unwrap();
    assert_eq!(u.host, AuthHost::Literal("::1".into()));
    assert_eq!(u.port, 9000);
    let u = parse_url("https://$host/oauth2/auth").unwrap();
    assert!(matches!(u.host, AuthHost::Template(_)));
    assert_eq!(u.port, 443);
}

#[test]
fn invalid_urls_are_refused_with_a_reason() {
    for bad in [
        "",
        "auth.example.com/check",
        "ftp://auth.example.com/",
        "http:///check",
        "http://user:pw@auth.example.com/",
        "http://auth..example.com/",
        "http://auth.example.com:0/",
        "http://auth.example.com:99999/",
        "http://auth.example.com:x/",
        "http://auth example.com/",
        "http://auth.example.com/a b",
        "http://auth.example.com/\r\nX-Evil: 1",
        "http://auth.example.com/#frag",
        "http://[not-v6]/",
        "http://[::1/",
        "http://$unknown_variable/",
        "http://$1.example.com/",
        "http://ex/ample.com$bogus/",
        "http://exa%mple.com/",
    ] {
        assert!(parse_url(bad).is_err(), "{bad:?} was taken");
    }
    let long = format!("http://a.example.com/{}", "x".repeat(MAX_URL));
    assert!(parse_url(&long).is_err());
}

#[test]
fn cluster_service_names_are_recognised() {
    assert_eq!(cluster_service("oauth2.auth.svc"), Some(("oauth2", "auth")));
    assert_eq!(
        cluster_service("oauth2.auth.svc.cluster.local."),
        Some(("oauth2", "auth"))
    );
    assert_eq!(cluster_service("oauth2.svc"), None);
    assert_eq!(cluster_service("a.b.c.svc"), None);
    assert_eq!(cluster_service("auth.example.com"), None);
    assert_eq!(cluster_service(".auth.svc"), None);
}

#[test]
fn signin_gets_the_redirect_parameter_as_ingress_nginx_builds_it() {
    let expand = |signin: &str, param: Option<&str>| {
        let v = AuthValues {
            signin: Some(signin.to_string()),
            signin_param: param.map(str::to_string),
            ..values("http://a.example.com/")
        };
        let s = spec(&v).unwrap();
        s.signin
            .unwrap()
            .expand(&vars("app.test", "/", Some("a=b&c=d")))
    };
    // ingress-nginx's e2e: `http://<host>/auth/start?rd=http://<host>%2F%3Fa%3Db%26c%3Dd`.
    assert_eq!(
        expand("http://app.test/auth/start", None),
        "http://app.test/auth/start?rd=http://app.test%2F%3Fa%3Db%26c%3Dd"
    );
    assert_eq!(
        expand("http://app.test/start?x=1", Some("return_to")),
        "http://app.test/start?x=1&return_to=http://app.test%2F%3Fa%3Db%26c%3Dd"
    );
    // Already there: as written (oauth2-proxy's documented form).
    assert_eq!(
        expand("https://$host/oauth2/start?rd=$escaped_request_uri", None),
        "https://app.test/oauth2/start?rd=%2F%3Fa%3Db%26c%3Dd"
    );
}

#[test]
fn companions_that_are_invalid_deny() {
    let with = |f: &dyn Fn(&mut AuthValues)| {
        let mut v = values("http://a.example.com/");
        f(&mut v);
        spec(&v)
    };
    assert_eq!(
        with(&|v| v.method = Some("BREW".into())).unwrap_err().key,
        "method"
    );
    assert_eq!(
        with(&|v| v.method = Some("get".into())).unwrap_err().key,
        "method"
    );
    assert_eq!(
        with(&|v| v.response_headers = Some("X-User, Content-Length".into()))
            .unwrap_err()
            .key,
        "response-headers"
    );
    assert_eq!(
        with(&|v| v.response_headers = Some("X User".into()))
            .unwrap_err()
            .key,
        "response-headers"
    );
    for framing in FORBIDDEN_COPIES {
        let r = with(&|v| v.response_headers = Some(framing.to_uppercase()));
        assert!(r.is_err(), "{framing} was taken");
    }
    assert_eq!(
        with(&|v| v.signin = Some("not a url".into()))
            .unwrap_err()
            .key,
        "signin"
    );
    assert_eq!(
        with(&|v| v.signin_param = Some("r&d".into()))
            .unwrap_err()
            .key,
        "signin-redirect-param"
    );
    assert_eq!(
        with(&|v| {
            v.cache_key = Some("$http_authorization".into());
            v.cache_duration = Some("200 forever".into());
        })
        .unwrap_err()
        .key,
        "cache-duration"
    );
    let ok = with(&|v| {
        v.method = Some("POST".into());
        v.response_headers = Some(" X-User ,X-Email,, x-user".into());
    })
    .unwrap();
    assert_eq!(ok.method, Some(Method::POST));
    let names: Vec<_> = ok.response_headers.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["x-user", "x-email"]);
}

#[test]
fn cache_durations_read_as_proxy_cache_valid() {
    let d = cache_durations("200 202 401 5m").unwrap();
    let cache = AuthCache {
        key: parse_hash_key("$remote_addr").unwrap(),
        valid: d,
    };
    assert_eq!(cache.validity(200), Some(Duration::from_secs(300)));
    assert_eq!(cache.validity(401), Some(Duration::from_secs(300)));
    assert_eq!(cache.validity(403), None);
    let d = cache_durations("200 10m, 401 30s").unwrap();
    let cache = AuthCache { valid: d, ..cache };
    assert_eq!(cache.validity(200), Some(Duration::from_secs(600)));
    assert_eq!(cache.validity(401), Some(Duration::from_secs(30)));
    let d = cache_durations("1m").unwrap();
    let cache = AuthCache { valid: d, ..cache };
    assert_eq!(cache.validity(302), Some(Duration::from_secs(60)));
    assert_eq!(cache.validity(202), None);
    let d = cache_durations("any 1s").unwrap();
    let cache = AuthCache { valid: d, ..cache };
    assert_eq!(cache.validity(500), Some(Duration::from_secs(1)));
    assert!(cache_durations("").is_err());
    // A number alone is a time in seconds, as nginx reads it.
    let d = cache_durations("200").unwrap();
    assert_eq!(d[0].1, Duration::from_secs(200));
    assert!(cache_durations("200 abc").is_err());
    assert!(cache_durations("700 5m").is_err());
}

#[test]
fn an_unknown_cache_key_variable_turns_the_cache_off_with_a_warning() {
    let v = AuthValues {
        cache_key: Some("$remote_user$http_authorization".into()),
        ..values("http://a.example.com/")
    };
    let mut warnings = Vec::new();
    let s = parse(&v, parse_hash_key, &mut warnings).unwrap();
    assert!(s.cache.is_none());
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].0, "cache-key");
}

proptest! {
    /// Whatever a tenant writes, parsing answers (no panic), and what it takes is a URL
    /// nginx could proxy to: a host of name characters, a path starting with '/', no
    /// control characters anywhere.
    #[test]
    fn any_auth_url_parses_or_is_refused(url in "\\PC{0,80}", prefix in prop::sample::select(vec!["http://", "https://", "", "HTTP://"])) {
        let url = format!("{prefix}{url}");
        if let Ok(u) = parse_url(&url) {
            if let AuthHost::Literal(h) = &u.host {
                prop_assert!(valid_host(h), "{h:?}");
            }
            let path = u.path.expand(&vars("h.test", "/", None));
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.bytes().any(|b| b.is_ascii_control()));
        }
    }

    #[test]
    fn any_companion_value_parses_or_is_refused(
        method in "\\PC{0,12}",
        signin in "\\PC{0,40}",
        headers in "\\PC{0,40}",
        duration in "\\PC{0,20}",
    ) {
        let v = AuthValues {
            method: Some(method),
            signin: Some(format!("http://{signin}")),
            response_headers: Some(headers),
            cache_key: Some("$remote_addr".into()),
            cache_duration: Some(duration),
            ..values("http://a.example.com/")
        };
        let _ = spec(&v);
    }
}
