//! Table tests of the annotation parsers: good values, bad values, defaults.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::snapshot::build::globals::Globals;
use crate::snapshot::diagnostics::Severity;
use crate::snapshot::routes::{RequestVars, UrlVar};
use crate::source::Kind;

fn key() -> ObjectKey {
    ObjectKey::new(Kind::Ingress, "shop", "web")
}

fn parse_map(pairs: &[(&str, &str)]) -> (Parsed, Vec<Diagnostic>) {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| {
            let k = if k.contains('/') {
                k.to_string()
            } else {
                format!("{NGINX}{k}")
            };
            (k, v.to_string())
        })
        .collect();
    let mut diagnostics = Vec::new();
    let parsed = parse(&key(), Some(&map), &bare(), &mut diagnostics);
    (parsed, diagnostics)
}

/// Global settings that add nothing (no body limit), so that a policy is only what the
/// annotations ask.
fn bare() -> Globals {
    Globals {
        body_limit: None,
        ..Globals::default()
    }
}

fn policy(pairs: &[(&str, &str)]) -> Policy {
    let (parsed, _) = parse_map(pairs);
    parsed.policy.map(|p| (*p).clone()).unwrap_or_default()
}

#[test]
fn the_table_is_sorted_and_has_no_duplicates() {
    assert!(ANNOTATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(support("satisfy"), Some(Support::Unsupported));
    assert_eq!(support("ssl-redirect-code"), None);
    assert!(support("use-regex").is_some());
    assert_eq!(support("no-such-thing"), None);
}

#[test]
fn an_ingress_without_annotations_has_no_policy() {
    let (parsed, d) = parse_map(&[]);
    assert!(parsed.policy.is_none() && parsed.ssl_redirect && !parsed.force_ssl_redirect);
    assert!(d.is_empty());
    // Honoured annotations at their defaults make no policy either.
    let (parsed, d) = parse_map(&[
        ("ssl-redirect", "true"),
        ("enable-access-log", "true"),
        ("proxy-body-size", "0"),
    ]);
    assert!(parsed.policy.is_none(), "{:?}", parsed.policy);
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn booleans_are_read_as_go_reads_them() {
    for (value, want) in [
        ("true", Some(true)),
        ("True", Some(true)),
        ("TRUE", Some(true)),
        ("1", Some(true)),
        ("t", Some(true)),
        ("false", Some(false)),
        ("0", Some(false)),
        ("F", Some(false)),
        ("yes", None),
        ("on", None),
        ("", None),
        (" true", None),
    ] {
        assert_eq!(values::parse_bool(value), want, "{value:?}");
    }
    // A bad boolean is a warning naming the annotation and the value; the default holds.
    let (parsed, d) = parse_map(&[("ssl-redirect", "yes")]);
    assert!(parsed.ssl_redirect);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Severity::Warning);
    assert!(
        d[0].field
            .contains("nginx.ingress.kubernetes.io/ssl-redirect")
    );
    assert!(d[0].reason.contains("\"yes\""), "{}", d[0].reason);
}

#[test]
fn ssl_redirect_and_force_ssl_redirect() {
    assert!(!parse_map(&[("ssl-redirect", "false")]).0.ssl_redirect);
    assert!(
        !parse_map(&[("portico.dev/ssl-redirect", "false")])
            .0
            .ssl_redirect
    );
    // ingress-nginx's wins over Portico's own when both are there.
    let (p, _) = parse_map(&[
        ("portico.dev/ssl-redirect", "false"),
        ("ssl-redirect", "true"),
    ]);
    assert!(p.ssl_redirect);
    assert!(
        parse_map(&[("force-ssl-redirect", "true")])
            .0
            .force_ssl_redirect
    );
    assert!(
        !parse_map(&[("force-ssl-redirect", "nope")])
            .0
            .force_ssl_redirect
    );
    assert!(policy(&[("preserve-trailing-slash", "true")]).preserve_trailing_slash);
}

#[test]
fn sizes_follow_nginx() {
    for (value, want) in [
        ("0", Ok(0)),
        ("1", Ok(1)),
        ("8k", Ok(8 << 10)),
        ("8K", Ok(8 << 10)),
        ("1m", Ok(1 << 20)),
        ("100M", Ok(100 << 20)),
        ("2g", Ok(2u64 << 30)),
        ("", Err(())),
        ("m", Err(())),
        ("1.5m", Err(())),
        ("10mb", Err(())),
        ("-1", Err(())),
        ("1 m", Err(())),
        ("99999999999999999999", Err(())),
        ("99999999999999999g", Err(())),
    ] {
        assert_eq!(parse_size(value).map_err(|_| ()), want, "{value:?}");
    }
    assert_eq!(
        policy(&[("proxy-body-size", "8m")]).body_limit,
        Some(8 << 20)
    );
    assert_eq!(policy(&[("proxy-body-size", "0")]).body_limit, None);
    let (parsed, d) = parse_map(&[("proxy-body-size", "lots")]);
    assert!(parsed.policy.is_none());
    assert!(d[0].reason.contains("\"lots\"") && d[0].reason.contains("using the default"));
}

#[test]
fn redirects_take_their_codes_and_temporal_wins() {
    let p = policy(&[("permanent-redirect", "https://new.example/")]);
    let r = p.redirect.unwrap();
    assert_eq!(r.code, 301);
    let p = policy(&[
        ("permanent-redirect", "https://a.example"),
        ("permanent-redirect-code", "308"),
    ]);
    assert_eq!(p.redirect.unwrap().code, 308);
    for bad in ["309", "200", "abc", "-1", "3000"] {
        let (parsed, d) = parse_map(&[
            ("permanent-redirect", "https://a.example"),
            ("permanent-redirect-code", bad),
        ]);
        assert_eq!(parsed.policy.unwrap().redirect.as_ref().unwrap().code, 301);
        assert!(d.iter().any(|d| d.reason.contains("using 301")), "{d:?}");
    }
    let p = policy(&[
        ("temporal-redirect", "https://t.example"),
        ("temporal-redirect-code", "307"),
    ]);
    assert_eq!(p.redirect.unwrap().code, 307);
    // 308 is not a temporal code: back to 302.
    let p = policy(&[
        ("temporal-redirect", "https://t.example"),
        ("temporal-redirect-code", "308"),
    ]);
    assert_eq!(p.redirect.unwrap().code, 302);
    let (parsed, d) = parse_map(&[
        ("permanent-redirect", "https://p.example"),
        ("temporal-redirect", "https://t.example"),
    ]);
    let r = parsed.policy.unwrap().redirect.clone().unwrap();
    assert_eq!(r.code, 302);
    assert_eq!(r.url.expand(&vars()), "https://t.example");
    assert!(d.iter().any(|d| d.reason.contains("wins")));
}

fn vars() -> RequestVars<'static> {
    RequestVars {
        scheme: "http",
        pass_scheme: "http",
        http_host: "Shop.Example:8080",
        path: "/a/b",
        raw_path: "/a/%62",
        query: Some("x=1"),
        captures: None,
        client: None,
        headers: None,
    }
}

#[test]
fn redirect_urls_expand_nginx_variables() {
    for (template, want) in [
        (
            "https://n.example$request_uri",
            "https://n.example/a/%62?x=1",
        ),
        (
            "https://n.example$uri$is_args$args",
            "https://n.example/a/b?x=1",
        ),
        ("$scheme://$host/x", "http://shop.example/x"),
        ("$scheme://$http_host/x", "http://Shop.Example:8080/x"),
        ("https://n.example${uri}/", "https://n.example/a/b/"),
        ("https://n.example/$1", "https://n.example/"),
        ("https://n.example/$12x", "https://n.example/2x"),
        ("/relative", "/relative"),
    ] {
        let t = parse_template(template).unwrap();
        assert_eq!(t.expand(&vars()), want, "{template}");
    }
    let mut no_query = vars();
    no_query.query = None;
    let t = parse_template("https://n.example$uri$is_args$args").unwrap();
    assert_eq!(t.expand(&no_query), "https://n.example/a/b");
    // Captures come from the path regex, one digit each, as nginx's script compiler reads them.
    let t = parse_template("https://n.example/$2/$1$13").unwrap();
    let re = regex::Regex::new("^/(a)/(b)").unwrap();
    let captures = re.captures("/a/b").unwrap();
    let with = RequestVars {
        captures: Some(&captures),
        ..vars()
    };
    assert_eq!(t.expand(&with), "https://n.example/b/aa3");
    for bad in [
        "https://x$unknown_var",
        "https://x/$",
        "https://x/${uri",
        "https://x/${}",
        "https://x/$0",
        "https://x/${1}",
        "https://x/\r\nSet-Cookie: a=b",
        "https://x/ y",
    ] {
        assert!(parse_template(bad).is_err(), "{bad:?}");
    }
    assert!(parse_template(&"a".repeat(5000)).is_err());
    assert_eq!(UrlVar::named("best_http_host"), Some(UrlVar::HttpHost));
    // An error makes the annotation an error diagnostic, and no redirect.
    let (parsed, d) = parse_map(&[("permanent-redirect", "https://x$nope")]);
    assert!(parsed.policy.is_none());
    assert_eq!(d[0].severity, Severity::Error);
    assert!(d[0].reason.contains("$nope"));
}

#[test]
fn app_root_and_upstream_vhost() {
    assert_eq!(
        policy(&[("app-root", "/app1")]).app_root.as_deref(),
        Some("/app1")
    );
    for bad in ["app1", "/a b", "/a#b", "http://x/"] {
        let (parsed, d) = parse_map(&[("app-root", bad)]);
        assert!(parsed.policy.is_none(), "{bad:?}");
        assert_eq!(d.len(), 1, "{bad:?}");
    }
    let p = policy(&[("upstream-vhost", "Internal.Example:8080")]);
    assert_eq!(p.upstream_host.as_deref(), Some("internal.example:8080"));
    for bad in ["a b", "x\r\ny", "$host", "user@host", "a/b", ""] {
        let (parsed, _) = parse_map(&[("upstream-vhost", bad)]);
        assert!(parsed.policy.is_none(), "{bad:?}");
    }
}

#[test]
fn access_log_off() {
    assert!(!policy(&[("enable-access-log", "false")]).access_log);
    assert!(policy(&[("enable-access-log", "true")]).access_log);
}

#[test]
fn access_guards_fail_closed_with_an_error() {
    let url = ("auth-url", "http://auth.example/");
    for (guard, value) in [
        ("auth-url", "x"),
        ("auth-method", "BREW"),
        ("auth-response-headers", "Host"),
    ] {
        let (parsed, d) = parse_map(&[url, (guard, value)]);
        assert_eq!(parsed.policy.unwrap().deny, Some(503), "{guard}");
        let errors: Vec<_> = d.iter().filter(|d| d.severity == Severity::Error).collect();
        assert_eq!(errors.len(), 1, "{guard}: {d:?}");
        assert!(errors[0].reason.contains(guard), "{}", errors[0].reason);
        assert!(errors[0].reason.contains("503"));
    }
}

#[test]
fn source_ranges_follow_ingress_nginx() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let p = policy(&[("whitelist-source-range", "10.0.0.0/8, 192.0.2.1")]);
    let a = p.access.expect("access rules");
    assert!(a.admits(ip("10.1.2.3")) && a.admits(ip("192.0.2.1")));
    assert!(!a.admits(ip("192.0.2.2")));
    assert_eq!(p.deny, None);
    // The newer name wins over the older one.
    let a = policy(&[
        ("allowlist-source-range", "192.0.2.1"),
        ("whitelist-source-range", "10.0.0.0/8"),
    ])
    .access
    .unwrap();
    assert!(a.admits(ip("192.0.2.1")) && !a.admits(ip("10.1.2.3")));
    // Deny before allow.
    let a = policy(&[
        ("whitelist-source-range", "10.0.0.0/8"),
        ("denylist-source-range", "10.0.0.7"),
    ])
    .access
    .unwrap();
    assert!(a.admits(ip("10.0.0.6")) && !a.admits(ip("10.0.0.7")));
    // An entry that is not an address or a range, or an empty value: the location is
    // denied (503), with an error naming the annotation and the entry.
    for (name, value) in [
        ("whitelist-source-range", "10.0.0.0/8, nope"),
        ("allowlist-source-range", ""),
        ("denylist-source-range", "10.0.0.0/40"),
    ] {
        let (parsed, d) = parse_map(&[(name, value)]);
        let p = parsed.policy.expect("a policy");
        assert_eq!(p.deny, Some(503), "{name}: {value:?}");
        let errors: Vec<_> = d.iter().filter(|d| d.severity == Severity::Error).collect();
        assert_eq!(errors.len(), 1, "{d:?}");
        assert!(errors[0].field.contains(name), "{:?}", errors[0]);
        assert!(errors[0].reason.contains("503"), "{}", errors[0].reason);
    }
}

#[test]
fn source_range_annotations_replace_the_configmap_lists_of_their_kind() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let set = |s: &str| crate::snapshot::access::parse_ranges(s).unwrap();
    let globals = Globals {
        allow: Some(Ok(set("10.0.0.0/8"))),
        deny: Some(Ok(set("10.0.0.9"))),
        block: set("10.0.0.66"),
        ..bare()
    };
    let parse_with = |pairs: &[(&str, &str)]| {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let mut d = Vec::new();
        let parsed = parse(&key(), Some(&map), &globals, &mut d);
        parsed.policy.unwrap().access.clone().unwrap()
    };
    // No annotation: the ConfigMap's lists and block-cidrs.
    let a = parse_with(&[]);
    assert!(a.admits(ip("10.0.0.1")));
    assert!(!a.admits(ip("10.0.0.9")) && !a.admits(ip("10.0.0.66")));
    assert!(!a.admits(ip("192.0.2.1")));
    // An allowlist replaces the ConfigMap's allowlist, not its denylist.
    let a = parse_with(&[("whitelist-source-range", "192.0.2.0/24, 10.0.0.9")]);
    assert!(a.admits(ip("192.0.2.1")) && !a.admits(ip("10.0.0.1")));
    assert!(!a.admits(ip("10.0.0.9")));
    // A denylist replaces the ConfigMap's denylist; block-cidrs stays.
    let a = parse_with(&[("denylist-source-range", "10.0.0.1")]);
    assert!(a.admits(ip("10.0.0.9")) && !a.admits(ip("10.0.0.1")));
    assert!(!a.admits(ip("10.0.0.66")));
    // An invalid ConfigMap list: the routes that use it are denied; those with their own
    // list are not.
    let globals = Globals {
        allow: Some(Err(())),
        ..bare()
    };
    let mut d = Vec::new();
    let parsed = parse(&key(), None, &globals, &mut d);
    assert_eq!(parsed.policy.unwrap().deny, Some(503));
    let map: BTreeMap<String, String> =
        [(format!("{NGINX}whitelist-source-range"), "10.0.0.1".into())].into();
    let parsed = parse(&key(), Some(&map), &globals, &mut d);
    assert_eq!(parsed.policy.unwrap().deny, None);
}

#[test]
fn rewrite_target_use_regex_and_x_forwarded_prefix() {
    let p = policy(&[("rewrite-target", "/$2"), ("x-forwarded-prefix", "/app")]);
    let rw = p.rewrite.unwrap();
    assert!(!rw.redirect && rw.target.has_captures());
    assert_eq!(rw.prefix.as_deref(), Some("/app"));
    for url in ["https://x.example/$1", "http://x/", "$scheme://x/"] {
        assert!(
            policy(&[("rewrite-target", url)]).rewrite.unwrap().redirect,
            "{url}"
        );
    }
    assert!(policy(&[("use-regex", "true")]).use_regex);
    assert!(!policy(&[("use-regex", "false")]).use_regex);
    // x-forwarded-prefix alone: a warning, nothing to do (nginx sends it only with a rewrite).
    let (parsed, d) = parse_map(&[("x-forwarded-prefix", "/app")]);
    assert!(parsed.policy.is_none());
    assert!(
        d[0].reason.contains("only together with rewrite-target"),
        "{d:?}"
    );
    // A value that is not a literal header value, or a target nginx would not load.
    let (parsed, d) = parse_map(&[("rewrite-target", "/$2"), ("x-forwarded-prefix", "$host")]);
    assert!(
        parsed
            .policy
            .unwrap()
            .rewrite
            .as_ref()
            .unwrap()
            .prefix
            .is_none()
    );
    assert_eq!(d.len(), 1, "{d:?}");
    for bad in ["/$unknown", "/a b", "/$", "/x\r\ny"] {
        let (parsed, d) = parse_map(&[("rewrite-target", bad)]);
        assert!(parsed.policy.is_none(), "{bad:?}");
        assert_eq!(d[0].severity, Severity::Error, "{bad:?}");
    }
}

#[test]
fn the_configmap_is_the_starting_point_and_annotations_override_it() {
    use std::time::Duration;
    let mut d = Vec::new();
    // ingress-nginx's defaults: a 1m body limit on every route.
    let parsed = parse(&key(), None, &Globals::default(), &mut d);
    assert_eq!(parsed.policy.unwrap().body_limit, Some(1 << 20));
    let globals = Globals {
        body_limit: Some(8 << 20),
        ssl_redirect: false,
        force_ssl_redirect: true,
        http_redirect_code: 301,
        timeouts: RouteTimeouts {
            read: Some(Duration::from_secs(120)),
            ..RouteTimeouts::default()
        },
        ..Globals::default()
    };
    let parsed = parse(&key(), None, &globals, &mut d);
    assert!(!parsed.ssl_redirect && parsed.force_ssl_redirect);
    let p = parsed.policy.unwrap();
    assert_eq!((p.body_limit, p.https_redirect_code), (Some(8 << 20), 301));
    assert_eq!(p.timeouts.unwrap().read, Some(Duration::from_secs(120)));
    let map: BTreeMap<String, String> = [
        ("proxy-body-size", "0"),
        ("force-ssl-redirect", "false"),
        ("proxy-connect-timeout", "3"),
        ("proxy-read-timeout", "bad"),
    ]
    .iter()
    .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
    .collect();
    let parsed = parse(&key(), Some(&map), &globals, &mut d);
    assert!(!parsed.force_ssl_redirect);
    let p = parsed.policy.unwrap();
    assert_eq!(p.body_limit, None, "0 lifts the ConfigMap's limit");
    let t = p.timeouts.unwrap();
    assert_eq!(t.connect, Some(Duration::from_secs(3)));
    assert_eq!(
        t.read,
        Some(Duration::from_secs(120)),
        "an invalid value keeps the ConfigMap's"
    );
    assert!(d.iter().any(|d| d.reason.contains("\"bad\"")), "{d:?}");
}

#[test]
fn upstream_hash_by_keys() {
    use crate::snapshot::routes::HashPart;
    let key = parse_hash_key("$request_uri").unwrap();
    assert!(matches!(&key.0[..], [HashPart::Var(UrlVar::RequestUri)]));
    let key = parse_hash_key("user-$http_x_user_id|$cookie_sid|$arg_id|${remote_addr}").unwrap();
    assert_eq!(key.0.len(), 8, "{key:?}");
    assert!(matches!(&key.0[1], HashPart::Header(h) if h.0.as_str() == "x-user-id"));
    assert!(matches!(&key.0[3], HashPart::Cookie(c) if &**c == "sid"));
    assert!(matches!(&key.0[5], HashPart::Arg(a) if &**a == "id"));
    assert!(matches!(&key.0[7], HashPart::RemoteAddr));
    for bad in [
        "$upstream_addr",
        "${uri",
        "$http_",
        "a\nb",
        &"x".repeat(300),
    ] {
        assert!(parse_hash_key(bad).is_err(), "{bad:?}");
    }
    let (parsed, d) = parse_map(&[("upstream-hash-by", "$nonsense")]);
    assert!(parsed.policy.is_none());
    assert!(d[0].reason.contains("$nonsense"), "{d:?}");
    // The same request hashes the same; another argument, differently.
    let key = parse_hash_key("$arg_user").unwrap();
    let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let headers = http::HeaderMap::new();
    let with = |q: &'static str| RequestVars {
        query: Some(q),
        ..vars()
    };
    assert_eq!(
        key.hash(&with("user=a&x=1"), ip, &headers),
        key.hash(&with("x=2&user=a"), ip, &headers)
    );
    assert_ne!(
        key.hash(&with("user=a"), ip, &headers),
        key.hash(&with("user=b"), ip, &headers)
    );
}

#[test]
fn service_upstream_turns_off_hashing() {
    assert!(policy(&[("service-upstream", "true")]).service_upstream);
    let (parsed, d) = parse_map(&[("service-upstream", "true"), ("upstream-hash-by", "$uri")]);
    let p = parsed.policy.unwrap();
    assert!(p.service_upstream && p.hash_by.is_none());
    assert!(d[0].reason.contains("service-upstream"), "{d:?}");
}

#[test]
fn body_buffer_and_load_balance() {
    assert_eq!(
        policy(&[("client-body-buffer-size", "16k")]).body_buffer,
        Some(16 << 10)
    );
    assert_eq!(
        policy(&[("client-body-buffer-size", "1g")]).body_buffer,
        Some(1 << 20),
        "capped"
    );
    use crate::snapshot::services::Scheduler;
    let (parsed, d) = parse_map(&[("load-balance", "round_robin")]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(parsed.balance, Some(Scheduler::RoundRobin));
    let (parsed, d) = parse_map(&[("load-balance", "ewma")]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(parsed.balance, Some(Scheduler::Ewma));
    let (parsed, d) = parse_map(&[("load-balance", "least_conn")]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(parsed.balance, None);
    let (_, d) = parse_map(&[("proxy-request-buffering", "off")]);
    assert!(d.is_empty(), "accepted: {d:?}");
}

#[test]
fn proxy_timeouts_are_whole_seconds() {
    use std::time::Duration;
    for (value, want) in [
        ("60", Some(60)),
        ("+5", Some(5)),
        ("3600", Some(3600)),
        ("0", None),
        ("-1", None),
        ("60s", None),
        ("1.5", None),
        ("", None),
        ("99999999999999999999", None),
    ] {
        assert_eq!(values::parse_seconds(value), want, "{value:?}");
    }
    let p = policy(&[
        ("proxy-connect-timeout", "2"),
        ("proxy-send-timeout", "30"),
        ("proxy-read-timeout", "3600"),
    ]);
    let t = p.timeouts.unwrap();
    assert_eq!(t.connect, Some(Duration::from_secs(2)));
    assert_eq!(t.send, Some(Duration::from_secs(30)));
    assert_eq!(t.read, Some(Duration::from_secs(3600)));
    let (parsed, d) = parse_map(&[("proxy-read-timeout", "60s")]);
    assert!(parsed.policy.is_none());
    assert!(
        d[0].reason.contains("\"60s\"") && d[0].reason.contains("default"),
        "{d:?}"
    );
}

#[test]
fn unsupported_obsolete_and_unknown_annotations_are_warnings() {
    let (parsed, d) = parse_map(&[
        ("satisfy", "any"),
        ("session-cookie-hash", "sha1"),
        ("no-such-annotation", "1"),
        ("proxy-buffering", "on"),
        ("other.example/foo", "bar"),
    ]);
    assert!(parsed.policy.is_none());
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.iter().all(|d| d.severity == Severity::Warning));
    let about = |name: &str| d.iter().find(|d| d.field.contains(name)).unwrap();
    assert!(about("satisfy").reason.contains("not supported"));
    assert!(about("session-cookie-hash").reason.contains("0.24"));
    assert!(
        about("no-such-annotation")
            .reason
            .contains("not an ingress-nginx annotation")
    );
}

#[test]
fn canary_annotations_follow_ingress_nginx() {
    let spec = |pairs: &[(&str, &str)]| {
        let mut all = vec![("canary", "true")];
        all.extend_from_slice(pairs);
        let (parsed, d) = parse_map(&all);
        assert!(!parsed.left_out && parsed.policy.is_none());
        ((*parsed.canary.unwrap()).clone(), d)
    };
    let (c, d) = spec(&[("canary-weight", "50")]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!((c.weight, c.total), (50, 100));
    // A total of 100 or less counts as 100; above, as given; the weight is capped by it.
    assert_eq!(
        spec(&[("canary-weight", "30"), ("canary-weight-total", "60")])
            .0
            .total,
        100
    );
    let (c, _) = spec(&[("canary-weight", "5000"), ("canary-weight-total", "1000")]);
    assert_eq!((c.weight, c.total), (1000, 1000));
    // '_' in the header name reads as '-' (nginx's $http_ variables).
    let (c, _) = spec(&[("canary-by-header", "X_Canary")]);
    assert_eq!(c.header.unwrap().0.as_str(), "x-canary");
    // A value overrides a pattern; a pattern Portico cannot run never matches, with a warning.
    let (c, _) = spec(&[
        ("canary-by-header", "x"),
        ("canary-by-header-value", "v2"),
        ("canary-by-header-pattern", "v.*"),
    ]);
    assert!(c.header_pattern.is_none() && c.header_value.is_some());
    let (c, d) = spec(&[
        ("canary-by-header", "x"),
        ("canary-by-header-pattern", "(?=v)"),
    ]);
    assert!(c.header_pattern.is_none());
    assert!(d[0].reason.contains("never matches"), "{d:?}");
    let (_, d) = spec(&[("canary-weight", "half")]);
    assert!(d[0].reason.contains("\"half\""), "{d:?}");
    // Other annotations on a canary Ingress count for nothing.
    let (parsed, _) = parse_map(&[("canary", "true"), ("proxy-body-size", "8m")]);
    assert!(parsed.policy.is_none());
    assert!(parse_map(&[("canary", "false")]).0.canary.is_none());
}

#[test]
fn affinity_annotations_follow_ingress_nginx() {
    use crate::snapshot::routes::AffinityMode;
    let affinity = |pairs: &[(&str, &str)]| {
        let (parsed, d) = parse_map(pairs);
        let a = parsed.policy.and_then(|p| p.affinity.clone());
        (a, d)
    };
    // Defaults.
    let (a, d) = affinity(&[("affinity", "cookie")]);
    let a = a.unwrap();
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(a.mode, AffinityMode::Balanced);
    assert_eq!(&*a.name, "INGRESSCOOKIE");
    assert_eq!((a.path.as_deref(), a.domain.as_deref()), (None, None));
    assert_eq!((a.max_age, a.expires, a.samesite), (None, None, None));
    assert!(!a.secure && !a.change_on_failure);
    // Every setting.
    let (a, d) = affinity(&[
        ("affinity", "cookie"),
        ("affinity-mode", "persistent"),
        ("session-cookie-name", "SERVERID"),
        ("session-cookie-path", "/foo/bar"),
        ("session-cookie-domain", ".example.com"),
        ("session-cookie-max-age", "259200"),
        ("session-cookie-expires", "172800"),
        ("session-cookie-samesite", "strict"),
        ("session-cookie-secure", "true"),
        ("session-cookie-change-on-failure", "true"),
        ("session-cookie-conditional-samesite-none", "true"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    let a = a.unwrap();
    assert_eq!(a.mode, AffinityMode::Persistent);
    assert_eq!(&*a.name, "SERVERID");
    assert_eq!(a.path.as_deref(), Some("/foo/bar"));
    assert_eq!(a.domain.as_deref(), Some(".example.com"));
    assert_eq!((a.max_age, a.expires), (Some(259200), Some(172800)));
    assert_eq!(a.samesite, Some("Strict"));
    assert!(a.secure && a.change_on_failure);
    // No affinity: absent, empty or another type (a warning).
    assert!(affinity(&[]).0.is_none());
    assert!(affinity(&[("session-cookie-name", "X")]).0.is_none());
    let (a, d) = affinity(&[("affinity", "ip")]);
    assert!(a.is_none());
    assert!(d[0].reason.contains("\"ip\""), "{d:?}");
    // Bad values: a warning naming the value, and the default.
    for (name, value) in [
        ("affinity-mode", "sticky"),
        ("session-cookie-name", "bad name"),
        ("session-cookie-name", "a;b=c"),
        ("session-cookie-path", "no-slash"),
        ("session-cookie-path", "/a;Domain=evil"),
        ("session-cookie-path", "/a\u{7f}"),
        ("session-cookie-domain", "evil.com; Secure"),
        ("session-cookie-domain", "ex ample.com"),
        ("session-cookie-max-age", "-1"),
        ("session-cookie-max-age", "1h"),
        ("session-cookie-expires", "soon"),
        ("session-cookie-samesite", "Sometimes"),
        ("session-cookie-secure", "yes"),
    ] {
        let (a, d) = affinity(&[("affinity", "cookie"), (name, value)]);
        let a = a.unwrap();
        assert_eq!(d.len(), 1, "{name}={value}: {d:?}");
        assert!(d[0].field.contains(name), "{d:?}");
        assert!(d[0].reason.contains(&format!("{value:?}")), "{d:?}");
        assert_eq!(a.mode, AffinityMode::Balanced);
        assert_eq!(&*a.name, "INGRESSCOOKIE");
        assert!(a.path.is_none() && a.domain.is_none() && a.max_age.is_none());
        assert!(a.expires.is_none() && a.samesite.is_none() && !a.secure);
    }
    // persistent-drainable is persistent, with a warning.
    let (a, d) = affinity(&[
        ("affinity", "cookie"),
        ("affinity-mode", "persistent-drainable"),
    ]);
    assert_eq!(a.unwrap().mode, AffinityMode::Persistent);
    assert_eq!(d.len(), 1, "{d:?}");
    // use-regex without session-cookie-path: ingress-nginx's warning.
    let (_, d) = affinity(&[("affinity", "cookie"), ("use-regex", "true")]);
    assert!(
        d[0].reason.contains("session-cookie-path should be set"),
        "{d:?}"
    );
    // Affinity wins over upstream-hash-by; service-upstream turns it off.
    let (parsed, d) = parse_map(&[("affinity", "cookie"), ("upstream-hash-by", "$request_uri")]);
    let p = parsed.policy.unwrap();
    assert!(p.affinity.is_some() && p.hash_by.is_none());
    assert!(d[0].field.contains("upstream-hash-by"), "{d:?}");
    let (parsed, d) = parse_map(&[("affinity", "cookie"), ("service-upstream", "true")]);
    assert!(parsed.policy.unwrap().affinity.is_none());
    assert!(d[0].field.contains("affinity"), "{d:?}");
    // On a canary Ingress the affinity is the canary's own.
    let (parsed, _) = parse_map(&[("canary", "true"), ("affinity", "cookie")]);
    assert!(parsed.policy.is_none());
    assert!(parsed.canary.unwrap().affinity.is_some());
}

#[test]
fn custom_http_errors_follow_ingress_nginx() {
    use super::values::parse_codes;
    assert_eq!(parse_codes("404").unwrap()[..], [404]);
    assert_eq!(parse_codes(" 503, 404 ,404,").unwrap()[..], [404, 503]);
    assert_eq!(parse_codes("300,599").unwrap()[..], [300, 599]);
    for bad in [
        "",
        ",",
        "abc",
        "404,x",
        "299",
        "600",
        "+404",
        "4 04",
        "-1",
        "99999999999",
    ] {
        assert!(parse_codes(bad).is_err(), "{bad:?}");
    }
    let p = policy(&[("custom-http-errors", "404,500")]);
    assert_eq!(p.custom_errors.as_deref(), Some(&[404, 500][..]));
    // The ConfigMap's list is every route's; the annotation replaces it, or turns it off.
    let globals = Globals {
        custom_http_errors: Some(Box::from([404u16])),
        ..bare()
    };
    let with = |pairs: &[(&str, &str)]| {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let mut d = Vec::new();
        let parsed = parse(&key(), Some(&map), &globals, &mut d);
        parsed.policy.and_then(|p| p.custom_errors.clone())
    };
    assert_eq!(with(&[]).as_deref(), Some(&[404][..]));
    assert_eq!(
        with(&[("custom-http-errors", "503")]).as_deref(),
        Some(&[503][..])
    );
    assert_eq!(with(&[("disable-proxy-intercept-errors", "true")]), None);
    assert_eq!(
        with(&[("disable-proxy-intercept-errors", "false")]).as_deref(),
        Some(&[404][..])
    );
    // A bad list: a warning naming the value, and the ConfigMap's applies.
    let (parsed, d) = parse_map(&[("custom-http-errors", "404,abc")]);
    assert!(parsed.policy.is_none());
    assert!(d[0].reason.contains("\"abc\""), "{d:?}");
}

#[test]
fn proxy_next_upstream_follows_nginx() {
    use crate::snapshot::routes::NextUpstream;
    use std::time::Duration;
    // Without annotations: the default, no policy field.
    assert_eq!(policy(&[]).next_upstream, None);
    let d = NextUpstream::DEFAULT;
    assert!(d.error && d.timeout && !d.invalid_header && !d.non_idempotent);
    assert_eq!((d.tries, d.within, d.statuses), (3, None, 0));
    let n = policy(&[
        (
            "proxy-next-upstream",
            "error invalid_header http_503 http_404 non_idempotent",
        ),
        ("proxy-next-upstream-tries", "5"),
        ("proxy-next-upstream-timeout", "7"),
    ])
    .next_upstream
    .unwrap();
    assert!(n.error && !n.timeout && n.invalid_header && n.non_idempotent);
    assert!(n.on_status(503) && n.on_status(404) && !n.on_status(500) && !n.on_status(200));
    assert_eq!((n.tries, n.within), (5, Some(Duration::from_secs(7))));
    let off = policy(&[("proxy-next-upstream", "off")])
        .next_upstream
        .unwrap();
    assert!(!off.error && !off.timeout && off.statuses == 0);
    let unlimited = policy(&[
        ("proxy-next-upstream-tries", "0"),
        ("proxy-next-upstream-timeout", "0"),
    ]);
    assert_eq!(unlimited.next_upstream.unwrap().tries, 0);
    // Bad values: a warning naming the value; the default stays.
    for (name, value) in [
        ("proxy-next-upstream", "error http_418"),
        ("proxy-next-upstream", "sometimes"),
        ("proxy-next-upstream", ""),
        ("proxy-next-upstream-tries", "-1"),
        ("proxy-next-upstream-tries", "three"),
        ("proxy-next-upstream-timeout", "5s"),
    ] {
        let (parsed, d) = parse_map(&[(name, value)]);
        assert!(parsed.policy.is_none(), "{name}={value}");
        assert_eq!(d.len(), 1, "{name}={value}: {d:?}");
        assert!(d[0].reason.contains(&format!("{value:?}")), "{d:?}");
    }
    // `off` among other conditions wins, as in nginx.
    let (parsed, d) = parse_map(&[("proxy-next-upstream", "error off timeout")]);
    assert!(d.is_empty(), "{d:?}");
    let off = parsed.policy.unwrap().next_upstream.unwrap();
    assert!(!off.error && !off.timeout && off.statuses == 0);
    // The ConfigMap's settings are the start.
    let globals = Globals {
        next_upstream: NextUpstream {
            tries: 9,
            ..NextUpstream::DEFAULT
        },
        ..bare()
    };
    let map: BTreeMap<String, String> = [(
        format!("{NGINX}proxy-next-upstream"),
        "http_502".to_string(),
    )]
    .into();
    let mut d = Vec::new();
    let parsed = parse(&key(), Some(&map), &globals, &mut d);
    let n = parsed.policy.unwrap().next_upstream.unwrap();
    assert_eq!(n.tries, 9);
    assert!(n.on_status(502) && !n.error);
}

#[test]
fn canary_selection_order() {
    use crate::snapshot::routes::{CanarySpec, FieldName};
    let spec = CanarySpec {
        header: Some(FieldName(http::HeaderName::from_static("x-canary"))),
        header_value: None,
        header_pattern: None,
        cookie: Some("c".into()),
        weight: 30,
        total: 100,
        affinity: None,
        legacy: false,
        hash_by: None,
    };
    let headers = |pairs: &[(&str, &str)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    let never_rolled = |_| panic!("the weight was consulted");
    assert!(spec.selects(&headers(&[("x-canary", "always")]), never_rolled));
    assert!(!spec.selects(
        &headers(&[("x-canary", "never"), ("cookie", "c=always")]),
        never_rolled
    ));
    assert!(spec.selects(
        &headers(&[("x-canary", "maybe"), ("cookie", "c=always")]),
        never_rolled
    ));
    assert!(!spec.selects(&headers(&[("cookie", "x=1; c=never")]), never_rolled));
    // The weight: a roll of 1..=30 of 100 takes the canary.
    assert!(spec.selects(&headers(&[]), |total| {
        assert_eq!(total, 100);
        30
    }));
    assert!(!spec.selects(&headers(&[]), |_| 31));
}

proptest! {
    /// Arbitrary annotation values never panic, and every diagnostic names its annotation.
    #[test]
    fn arbitrary_values_never_panic(
        name in prop::sample::select(ANNOTATIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
        value in ".{0,64}",
    ) {
        let (parsed, d) = parse_map(&[(name, &value)]);
        for d in &d {
            prop_assert!(d.field.starts_with("metadata.annotations"));
        }
        if let Some(p) = parsed.policy
            && let Some(r) = &p.redirect
        {
            let url = r.url.expand(&vars());
            prop_assert!(!url.contains(['\r', '\n']));
        }
    }

    /// Whatever the session-cookie annotations say, the sticky cookie stays one well-formed
    /// Set-Cookie field: no value smuggles in an attribute or a second cookie.
    #[test]
    fn affinity_values_never_break_the_cookie(
        name in prop::sample::select(vec![
            "session-cookie-name", "session-cookie-path", "session-cookie-domain",
            "session-cookie-max-age", "session-cookie-expires", "session-cookie-samesite",
        ]),
        value in ".{0,64}",
    ) {
        let (parsed, _) = parse_map(&[("affinity", "cookie"), (name, &value)]);
        let a = parsed.policy.and_then(|p| p.affinity.clone()).unwrap();
        let key = *b"0123456789abcdef";
        let v = crate::proxy::sticky::set_cookie(&a, &key, &key, Some("/"), false).unwrap();
        let text = v.to_str().unwrap();
        let attributes: Vec<&str> = text.split("; ").skip(1).collect();
        prop_assert!(attributes.len() <= 6, "{text}");
        for attr in attributes {
            let known = ["Expires=", "Max-Age=", "Domain=", "Path=", "HttpOnly", "SameSite="];
            prop_assert!(known.iter().any(|k| attr.starts_with(k)), "{text}");
        }
        let name = text.split('=').next().unwrap();
        prop_assert!(super::values::cookie_name(name), "{text}");
    }

    /// Templates: parsing never panics, and what parses expands to a header-safe value.
    #[test]
    fn templates_never_panic(text in "[ -~]{0,80}") {
        if let Ok(t) = parse_template(&text) {
            let url = t.expand(&vars());
            prop_assert!(http::HeaderValue::from_str(&url).is_ok(), "{url:?}");
        }
    }
}

/// The README's migration table names every annotation with its status.
#[test]
fn the_readme_lists_every_annotation() {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme.find("## Migrating from ingress-nginx").unwrap()..];
    for (name, support) in ANNOTATIONS {
        let row = format!("| `{name}` | ");
        let status = match support {
            Support::Honoured => "honoured |",
            Support::Differs(_) => "honoured, differs |",
            Support::Accepted(_) => "accepted, no effect |",
            Support::FailsClosed => "**fails closed** |",
            Support::Obsolete(_) => "obsolete |",
            Support::Unsupported => {
                assert!(section.contains(&format!("`{name}`")), "{name}");
                continue;
            }
        };
        assert!(
            section.contains(&format!("{row}{status}")),
            "{name}: {status}"
        );
    }
}

#[test]
fn nginx_times_are_read_as_ngx_parse_time() {
    use std::time::Duration;
    let s = Duration::from_secs;
    for (value, want) in [
        ("1h", Some(s(3600))),
        ("90", Some(s(90))),
        ("90s", Some(s(90))),
        ("500ms", Some(Duration::from_millis(500))),
        ("1h30m", Some(s(5400))),
        ("1h 30m", Some(s(5400))),
        ("1d", Some(s(86_400))),
        ("2w", Some(s(14 * 86_400))),
        ("1M", Some(s(30 * 86_400))),
        ("1y", Some(s(365 * 86_400))),
        ("1m 1s 5ms", Some(Duration::from_millis(61_005))),
        ("0", Some(Duration::ZERO)),
        ("", None),
        ("h", None),
        ("1x", None),
        ("30m 1h", None),
        ("1h 1h", None),
        ("1s 500", None),
        ("-1s", None),
        ("1 h", None),
        ("2y", None),
        ("99999999999999999999s", None),
    ] {
        assert_eq!(values::parse_time(value), want, "{value:?}");
    }
}

proptest! {
    /// Any text: no panic, and what parses is at most a year.
    #[test]
    fn nginx_times_never_panic(value in "[0-9a-zA-Z ]{0,24}") {
        if let Some(d) = values::parse_time(&value) {
            prop_assert!(d <= std::time::Duration::from_secs(365 * 86_400));
        }
    }
}

#[test]
fn backend_protocols_are_read_case_insensitively() {
    use super::BackendProtocol as P;
    for (value, denied, protocol) in [
        ("HTTP", false, P::Http),
        ("http", false, P::Http),
        ("HTTPS", false, P::Https),
        ("https", false, P::Https),
        ("GRPC", false, P::Grpc),
        ("grpcs", false, P::Grpcs),
        ("AUTO_HTTP", false, P::AutoHttp),
        ("auto_http", false, P::AutoHttp),
        ("FCGI", true, P::Unset),
        ("AJP", false, P::Http),
    ] {
        let (parsed, d) = parse_map(&[("backend-protocol", value)]);
        let deny = parsed.policy.as_ref().and_then(|p| p.deny);
        assert_eq!(deny.is_some(), denied, "{value}: {d:?}");
        assert_eq!(parsed.protocol, protocol, "{value}");
        let errors = d.iter().filter(|d| d.severity == Severity::Error).count();
        assert_eq!(errors, usize::from(denied), "{value}: {d:?}");
        if value == "AJP" {
            assert_eq!(d.len(), 1, "a warning for an unknown value: {d:?}");
        }
    }
    let (parsed, d) = parse_map(&[("secure-backends", "true")]);
    assert_eq!(parsed.protocol, P::Https, "{d:?}");
    assert!(d.is_empty(), "{d:?}");
    let (parsed, _) = parse_map(&[("secure-backends", "false")]);
    assert_eq!(parsed.protocol, P::Unset);
    // An explicit backend-protocol wins over the legacy name.
    let (parsed, _) = parse_map(&[("secure-backends", "true"), ("backend-protocol", "HTTP")]);
    assert_eq!(parsed.protocol, P::Http);
}

/// `affinity-canary-behavior` is read on the canary Ingress: `sticky` (the default) or
/// `legacy`; anything else is a warning and `sticky`.
#[test]
fn canary_affinity_behaviour() {
    let legacy = |pairs: &[(&str, &str)]| {
        let (parsed, d) = parse_map(pairs);
        (parsed.canary.expect("a canary").legacy, d)
    };
    let canary = ("canary", "true");
    assert!(!legacy(&[canary]).0);
    let (l, d) = legacy(&[canary, ("affinity-canary-behavior", "sticky")]);
    assert!(!l && d.is_empty(), "{d:?}");
    let (l, d) = legacy(&[canary, ("affinity-canary-behavior", "legacy")]);
    assert!(l && d.is_empty(), "{d:?}");
    let (l, d) = legacy(&[canary, ("affinity-canary-behavior", "Legacy")]);
    assert!(!l, "case matters, as in ingress-nginx");
    assert!(d[0].reason.contains("not sticky or legacy"), "{d:?}");
    // Its own affinity is kept (the primary's replaces it when it joins, unless legacy).
    let (parsed, _) = parse_map(&[canary, ("affinity", "cookie")]);
    assert!(parsed.canary.unwrap().affinity.is_some());
}

/// The limit annotations as ingress-nginx reads them: whole numbers (anything else fails
/// closed), negative = none, a multiplier below 1 fails closed, `limit-allowlist` before its
/// older name.
#[test]
fn limit_annotations_follow_ingress_nginx() {
    let limits = |pairs: &[(&str, &str)]| {
        let (parsed, d) = parse_map(pairs);
        let policy = parsed.policy.expect("a policy");
        (policy.limits.clone(), policy.deny, d)
    };
    // Defaults: a burst of 5 times the rate.
    let (l, deny, d) = limits(&[("limit-rps", "10")]);
    let l = l.unwrap();
    assert_eq!(
        (l.spec.rps, l.spec.rpm, l.spec.burst_multiplier),
        (10, 0, 5)
    );
    assert_eq!(deny, None);
    assert!(d.is_empty(), "{d:?}");
    let (l, _, d) = limits(&[
        ("limit-rpm", "30"),
        ("limit-connections", "2"),
        ("limit-burst-multiplier", "3"),
        ("limit-allowlist", "10.0.0.0/8"),
        ("limit-whitelist", "192.0.2.1"),
    ]);
    let l = l.unwrap();
    assert_eq!(
        (l.spec.rpm, l.spec.connections, l.spec.burst_multiplier),
        (30, 2, 3)
    );
    assert!(l.exempt.contains("10.1.2.3".parse().unwrap()));
    assert!(
        !l.exempt.contains("192.0.2.1".parse().unwrap()),
        "allowlist wins"
    );
    assert!(d.is_empty(), "{d:?}");
    let (l, _, _) = limits(&[("limit-rps", "1"), ("limit-whitelist", "192.0.2.1")]);
    assert!(l.unwrap().exempt.contains("192.0.2.1".parse().unwrap()));
    // Not whole numbers: 503 and an error naming the annotation and the value.
    for (name, value) in [
        ("limit-rps", "abc"),
        ("limit-rps", "1.5"),
        ("limit-rpm", "99999999999999999999"),
        ("limit-connections", "1k"),
    ] {
        let (l, deny, d) = limits(&[(name, value)]);
        assert!(l.is_none(), "{name}={value}");
        assert_eq!(deny, Some(503), "{name}={value}");
        assert_eq!(d[0].severity, Severity::Error, "{d:?}");
        assert!(
            d[0].field.contains(name) && d[0].reason.contains(value),
            "{d:?}"
        );
    }
    // Negative: no limit, a warning.
    let (l, deny, d) = limits(&[("limit-rps", "-1"), ("enable-cors", "true")]);
    assert!(l.is_none() && deny.is_none());
    assert_eq!(d[0].severity, Severity::Warning, "{d:?}");
    // A multiplier below 1, or not a number: 503.
    for m in ["0", "-2", "x"] {
        let (_, deny, d) = limits(&[("limit-rps", "1"), ("limit-burst-multiplier", m)]);
        assert_eq!(deny, Some(503), "{m}");
        assert_eq!(d[0].severity, Severity::Error, "{d:?}");
    }
}

/// The www redirect's own variables: the request URI without its last '/', the scheme a
/// trusted peer says the client used.
#[test]
fn the_www_redirect_variables() {
    let push = |var: UrlVar, vars: &RequestVars<'_>| {
        let mut out = String::new();
        var.push(vars, &mut out);
        out
    };
    let base = vars();
    assert_eq!(push(UrlVar::RequestUriTrimmed, &base), "/a/%62?x=1");
    let slash = RequestVars {
        raw_path: "/docs/",
        query: None,
        ..vars()
    };
    assert_eq!(push(UrlVar::RequestUriTrimmed, &slash), "/docs");
    let root = RequestVars {
        raw_path: "/",
        query: None,
        ..vars()
    };
    assert_eq!(push(UrlVar::RequestUriTrimmed, &root), "");
    let forwarded = RequestVars {
        pass_scheme: "https",
        ..vars()
    };
    assert_eq!(push(UrlVar::PassScheme, &forwarded), "https");
    assert_eq!(push(UrlVar::Scheme, &forwarded), "http");
}

/// `$remote_addr` and `$http_NAME` in templates: the client address, and the request's
/// fields of that name (`_` as `-`, any case, several joined with `, `); an invalid field
/// name is an error; `$http_host` stays the Host variable.
#[test]
fn templates_read_the_client_address_and_request_fields() {
    let mut headers = http::HeaderMap::new();
    headers.append("x-team", "blue".parse().unwrap());
    headers.append("x-team", "green".parse().unwrap());
    let vars = RequestVars {
        client: Some("::ffff:192.0.2.7".parse().unwrap()),
        headers: Some(&headers),
        ..vars()
    };
    let t = parse_template("$remote_addr|$http_X_Team|$http_missing|$http_host").unwrap();
    assert_eq!(t.expand(&vars), "192.0.2.7|blue, green||Shop.Example:8080");
    assert!(parse_template("$http_bad(name)").is_ok(), "ends at '('");
    assert!(parse_template("${http_}").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A rewrite's replacement: every `%` a request field brings into the path is written
    /// `%25` (a byte of the path, as nginx escapes the rewritten URI), the template's own
    /// text and the arguments part stay as they are, and the split lands on the template's
    /// own `?`; redirect URLs (`expand`) are not touched.
    #[test]
    fn a_rewrite_escapes_the_percent_signs_request_fields_bring(value in "[ -~]{0,24}") {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-v", http::HeaderValue::from_str(&value).unwrap());
        let vars = RequestVars { headers: Some(&headers), ..vars() };
        let t = parse_template("/p%41$http_x_v?a=$http_x_v").unwrap();
        let (out, split) = t.expand_rewrite(&vars);
        let path = format!("/p%41{}", value.replace('%', "%25"));
        prop_assert_eq!(split, Some(path.len()));
        prop_assert_eq!(out, format!("{path}?a={value}"));
        prop_assert_eq!(t.expand(&vars), format!("/p%41{value}?a={value}"));
    }
}

/// The ConfigMap's `retry-non-idempotent` adds non_idempotent to every route's conditions,
/// whatever its own proxy-next-upstream says (ingress-nginx's buildNextUpstream).
#[test]
fn retry_non_idempotent_applies_to_every_route() {
    let globals = Globals {
        retry_non_idempotent: true,
        ..bare()
    };
    for pairs in [vec![], vec![("proxy-next-upstream", "error http_502")]] {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let mut d = Vec::new();
        let key = key();
        let parsed = parse(&key, Some(&map), &globals, &mut d);
        let next = parsed.policy.unwrap().next_upstream.unwrap();
        assert!(next.non_idempotent, "{pairs:?}");
    }
}

/// `annotations-risk-level` as ingress-nginx 1.12+ applies it: an annotation rated strictly
/// above the level is an error, and Portico fails closed where ingress-nginx rejects the
/// Ingress (its paths answer 503; a canary takes nothing). At the default (High), only the
/// Critical ones are refused.
#[test]
fn annotations_above_the_risk_level_fail_closed() {
    assert!(RISKS.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    for (name, _) in RISKS {
        assert!(support(name).is_some(), "{name} is in the annotation table");
    }
    assert_eq!(risk("auth-url"), RiskLevel::High);
    assert_eq!(risk("whitelist-source-range"), RiskLevel::Medium);
    assert_eq!(risk("use-regex"), RiskLevel::Low);
    assert_eq!(risk("no-such-thing"), RiskLevel::Low);
    let parse_at = |level: RiskLevel, pairs: &[(&str, &str)]| {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let globals = Globals {
            annotations_risk_level: level,
            ..bare()
        };
        let mut d = Vec::new();
        let parsed = parse(&key(), Some(&map), &globals, &mut d);
        (parsed, d)
    };
    let risky_errors = |d: &[Diagnostic]| {
        d.iter()
            .filter(|d| {
                d.severity == Severity::Error && d.reason.contains("annotations-risk-level")
            })
            .map(|d| d.field.clone())
            .collect::<Vec<_>>()
    };
    let auth = [
        ("auth-url", "http://auth.example/check"),
        ("rewrite-target", "/"),
        ("use-regex", "true"),
    ];
    // High allows High.
    let (parsed, d) = parse_at(RiskLevel::High, &auth);
    assert!(risky_errors(&d).is_empty(), "{d:?}");
    assert_eq!(parsed.policy.unwrap().deny, None);
    // Medium refuses auth-url (High) only; Low refuses rewrite-target (Medium) too.
    let (parsed, d) = parse_at(RiskLevel::Medium, &auth);
    assert_eq!(
        risky_errors(&d),
        [format!("metadata.annotations[{NGINX}auth-url]")]
    );
    assert_eq!(parsed.policy.unwrap().deny, Some(503));
    let (_, d) = parse_at(RiskLevel::Low, &auth);
    assert_eq!(risky_errors(&d).len(), 2, "{d:?}");
    // The default refuses the Critical ones: here a stream-snippet.
    let (parsed, d) = parse_at(RiskLevel::High, &[("stream-snippet", "x")]);
    assert_eq!(risky_errors(&d).len(), 1, "{d:?}");
    assert_eq!(parsed.policy.unwrap().deny, Some(503));
    // A canary that ingress-nginx would reject takes nothing.
    let canary = [("canary", "true"), ("canary-by-header", "x")];
    let (parsed, _) = parse_at(RiskLevel::Medium, &canary);
    assert!(!parsed.left_out && parsed.canary.is_some());
    let (parsed, d) = parse_at(RiskLevel::Low, &canary);
    assert!(parsed.left_out, "{d:?}");
}

/// The ConfigMap's `limit-rate` / `limit-rate-after` apply where the Ingress says nothing,
/// each on its own; the annotation wins, and `limit-rate: "0"` turns the throttle off.
#[test]
fn the_configmap_s_bandwidth_is_the_default() {
    let globals = Globals {
        limit_rate: (4096, 1024),
        ..bare()
    };
    let parse_with = |pairs: &[(&str, &str)]| {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let mut d = Vec::new();
        let parsed = parse(&key(), Some(&map), &globals, &mut d);
        parsed.policy.and_then(|p| p.bandwidth)
    };
    assert_eq!(parse_with(&[]), Some((4096, 1024)));
    assert_eq!(
        parse_with(&[("limit-rate-after", "10")]),
        Some((4096, 10240))
    );
    assert_eq!(parse_with(&[("limit-rate", "1")]), Some((1024, 1024)));
    assert_eq!(parse_with(&[("limit-rate", "0")]), None);
}
