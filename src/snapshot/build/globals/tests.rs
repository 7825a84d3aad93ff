//! The ConfigMap's keys: good values, bad values, defaults.

use super::*;
use crate::snapshot::diagnostics::Severity;

fn key() -> ObjectKey {
    ObjectKey::new(Kind::ConfigMap, "ingress", "portico")
}

fn parse_pairs(pairs: &[(&str, &str)]) -> (Globals, Vec<Diagnostic>) {
    let data = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut d = Vec::new();
    let g = parse(&key(), &data, &|_, _| None, &mut d);
    (g, d)
}

/// A ConfigMap to refer to: namespace, name, fields.
type Other<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Parses with the ConfigMaps of `others` to refer to.
fn parse_with(pairs: &[(&str, &str)], others: &[Other<'_>]) -> (Globals, Vec<Diagnostic>) {
    let data = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |ns: &str, name: &str| {
        let (_, _, fields) = others.iter().find(|(n, m, _)| *n == ns && *m == name)?;
        Some(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let mut d = Vec::new();
    let g = parse(&key(), &data, &lookup, &mut d);
    (g, d)
}

#[test]
fn the_keys_are_sorted() {
    assert!(KEYS.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn defaults_are_ingress_nginx_s() {
    let (g, d) = parse_pairs(&[]);
    assert!(d.is_empty());
    assert_eq!(g, Globals::default());
    assert_eq!(g.body_limit, Some(1 << 20), "proxy-body-size 1m");
    assert!(g.ssl_redirect && !g.force_ssl_redirect && !g.preserve_trailing_slash);
    assert_eq!(g.http_redirect_code, 308);
    assert_eq!(g.timeouts, RouteTimeouts::default());
    assert!(!g.allow_snippet_annotations);
    assert_eq!(g.annotations_risk_level, RiskLevel::High);
}

#[test]
fn good_values() {
    let (g, d) = parse_pairs(&[
        ("proxy-body-size", "8m"),
        ("ssl-redirect", "false"),
        ("force-ssl-redirect", "true"),
        ("http-redirect-code", "301"),
        ("preserve-trailing-slash", "true"),
        ("proxy-connect-timeout", "2"),
        ("proxy-send-timeout", "30"),
        ("proxy-read-timeout", "3600"),
        ("allow-snippet-annotations", "true"),
        ("annotations-risk-level", "Critical"),
        ("custom-http-errors", "503, 404,404"),
        ("proxy-next-upstream", "error timeout http_502"),
        ("proxy-next-upstream-tries", "4"),
        ("proxy-next-upstream-timeout", "10"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    assert!(g.next_upstream.on_status(502) && g.next_upstream.error);
    assert_eq!(g.next_upstream.tries, 4);
    assert_eq!(g.next_upstream.within, Some(Duration::from_secs(10)));
    assert_eq!(g.custom_http_errors.as_deref(), Some(&[404, 503][..]));
    assert_eq!(g.body_limit, Some(8 << 20));
    assert!(!g.ssl_redirect && g.force_ssl_redirect && g.preserve_trailing_slash);
    assert_eq!(g.http_redirect_code, 301);
    assert_eq!(g.timeouts.connect, Some(Duration::from_secs(2)));
    assert_eq!(g.timeouts.send, Some(Duration::from_secs(30)));
    assert_eq!(g.timeouts.read, Some(Duration::from_secs(3600)));
    assert!(g.allow_snippet_annotations);
    assert_eq!(g.annotations_risk_level, RiskLevel::Critical);
    assert_eq!(parse_pairs(&[("proxy-body-size", "0")]).0.body_limit, None);
}

#[test]
fn bad_values_keep_the_default_with_a_warning_naming_key_and_value() {
    for (k, v) in [
        ("proxy-body-size", "10mb"),
        ("ssl-redirect", "yes"),
        ("http-redirect-code", "303"),
        ("proxy-read-timeout", "60s"),
        ("custom-http-errors", "200"),
        ("custom-http-errors", ","),
        ("proxy-next-upstream", "error bogus"),
        ("proxy-next-upstream-tries", "x"),
        ("proxy-next-upstream-timeout", "1m"),
    ] {
        let (g, d) = parse_pairs(&[(k, v)]);
        assert_eq!(g, Globals::default(), "{k}");
        assert_eq!(d.len(), 1, "{k}");
        assert_eq!(d[0].severity, Severity::Warning);
        assert_eq!(d[0].field, format!("data.{k}"));
        assert!(d[0].reason.contains(&format!("{v:?}")), "{}", d[0].reason);
    }
}

#[test]
fn unknown_and_unsupported_keys_are_warnings() {
    let (g, d) = parse_pairs(&[("use-gzip", "true"), ("no-such-key", "1")]);
    assert_eq!(g, Globals::default());
    assert_eq!(d.len(), 2);
    let about = |k: &str| d.iter().find(|d| d.field.ends_with(k)).unwrap();
    assert!(
        about("use-gzip")
            .reason
            .contains("not supported by Portico yet")
    );
    assert!(about("no-such-key").reason.contains("not a ConfigMap key"));
}

#[test]
fn connection_keys_good_values() {
    let (g, d) = parse_pairs(&[
        ("client-header-timeout", "10"),
        ("client-body-timeout", "20"),
        ("keep-alive", "0"),
        ("keep-alive-requests", "5"),
        ("upstream-keepalive-connections", "0"),
        ("upstream-keepalive-requests", "+7"),
        ("upstream-keepalive-time", "1h 30m"),
        ("upstream-keepalive-timeout", "5"),
        ("server-tokens", "true"),
        ("load-balance", "round_robin"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    let s = g.server;
    assert_eq!(s.client_header_timeout, Some(Duration::from_secs(10)));
    assert_eq!(s.client_body_timeout, Some(Duration::from_secs(20)));
    assert_eq!(s.keep_alive, Duration::ZERO);
    assert_eq!(s.requests_per_connection(), 1, "keep-alive 0: one request");
    assert_eq!(s.keep_alive_requests, 5);
    assert_eq!(s.upstream.connections, 0);
    assert_eq!(s.upstream.requests, 7);
    assert_eq!(s.upstream.time, Duration::from_secs(5400));
    assert_eq!(s.upstream.timeout, Some(Duration::from_secs(5)));
    assert!(s.server_tokens);
    let defaults = parse_pairs(&[]).0.server;
    assert_eq!(defaults.keep_alive, Duration::from_secs(75));
    assert_eq!(defaults.requests_per_connection(), 1000);
    assert_eq!(defaults.upstream.connections, 320);
    assert_eq!(defaults.upstream.requests, 10_000);
    assert_eq!(defaults.upstream.time, Duration::from_secs(3600));
    assert!(!defaults.server_tokens);
    assert_eq!(defaults.client_header_timeout, None, "the flag's");
}

#[test]
fn connection_keys_bad_values_keep_the_default() {
    for (k, v) in [
        ("client-header-timeout", "60s"),
        ("client-header-timeout", "0"),
        ("client-body-timeout", "-1"),
        ("keep-alive", "75s"),
        ("keep-alive", "99999999999"),
        ("keep-alive-requests", "1e3"),
        ("upstream-keepalive-connections", "-1"),
        ("upstream-keepalive-requests", ""),
        ("upstream-keepalive-time", "1x"),
        ("upstream-keepalive-time", "30m 1h"),
        ("upstream-keepalive-time", "0"),
        ("upstream-keepalive-timeout", "1m"),
        ("server-tokens", "on"),
        ("load-balance", "least_conn"),
    ] {
        let (g, d) = parse_pairs(&[(k, v)]);
        assert_eq!(g, Globals::default(), "{k}: {v}");
        assert_eq!(d.len(), 1, "{k}: {v}");
        assert_eq!(d[0].severity, Severity::Warning);
        assert_eq!(d[0].field, format!("data.{k}"));
        assert!(d[0].reason.contains(&format!("{v:?}")), "{}", d[0].reason);
    }
    // ewma: every route's scheduler unless its Ingress says otherwise.
    let (g, d) = parse_pairs(&[("load-balance", "ewma")]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(g.balance, Some(crate::snapshot::services::Scheduler::Ewma));
}

#[test]
fn global_auth_is_read_and_an_invalid_one_fails_closed() {
    let (g, d) = parse_pairs(&[
        (
            "global-auth-url",
            "http://auth.auth.svc.cluster.local/check",
        ),
        ("global-auth-method", "POST"),
        ("global-auth-signin", "https://login.example.com/start"),
        ("global-auth-response-headers", "X-User"),
        ("global-auth-always-set-cookie", "true"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    assert!(g.guards.is_empty());
    let spec = g.global_auth.as_deref().expect("global auth");
    assert_eq!(spec.method, Some(http::Method::POST));
    assert!(spec.always_set_cookie);
    assert!(spec.signin.is_some());
    for (k, v) in [
        ("global-auth-url", "auth.example/no-scheme"),
        ("global-auth-method", "BREW"),
        ("global-auth-response-headers", "Transfer-Encoding"),
    ] {
        let mut pairs = vec![(k, v)];
        if k != "global-auth-url" {
            pairs.push(("global-auth-url", "http://auth.example/"));
        }
        let (g, d) = parse_pairs(&pairs);
        assert!(g.global_auth.is_none(), "{k}");
        assert_eq!(g.guards, vec![Box::<str>::from("global-auth-url")], "{k}");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, Severity::Error);
        assert!(
            d[0].field.contains(k) && d[0].reason.contains("503"),
            "{d:?}"
        );
    }
}

#[test]
fn access_lists_are_read_and_invalid_ones_fail_closed() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let (g, d) = parse_pairs(&[
        ("whitelist-source-range", "10.0.0.0/8"),
        ("denylist-source-range", "10.0.0.1, 2001:db8::/32"),
        ("block-cidrs", "192.0.2.0/24"),
        ("block-user-agents", "~*bot, Evil"),
        ("block-referers", "~spam"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    assert!(g.guards.is_empty());
    assert!(g.allow.unwrap().unwrap().contains(ip("10.9.9.9")));
    assert!(g.deny.unwrap().unwrap().contains(ip("2001:db8::5")));
    assert!(g.block.contains(ip("192.0.2.200")));
    let fields: Vec<&str> = g.fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["referer", "user-agent"]);
    // Empty values: no list.
    let (g, d) = parse_pairs(&[
        ("whitelist-source-range", ""),
        ("block-cidrs", ""),
        ("block-user-agents", " , "),
    ]);
    assert!(d.is_empty() && g.allow.is_none() && g.block.is_empty() && g.fields.is_empty());
    // An invalid allowlist or denylist: the routes that use it answer 503 (an error).
    for k in ["whitelist-source-range", "denylist-source-range"] {
        let (g, d) = parse_pairs(&[(k, "10.0.0.0/8, nope")]);
        assert!(g.guards.is_empty());
        let list = if k.starts_with('w') { g.allow } else { g.deny };
        assert_eq!(list, Some(Err(())));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Error);
        assert!(
            d[0].field.contains(k) && d[0].reason.contains("\"nope\""),
            "{d:?}"
        );
        assert!(d[0].reason.contains("503"), "{d:?}");
    }
    // Invalid block lists: every route answers 503 (an error naming the entry).
    for (k, v) in [
        ("block-cidrs", "10.0.0.0/8, 300.0.0.1"),
        ("block-user-agents", "~(?=lookahead)"),
        ("block-referers", "~("),
    ] {
        let (g, d) = parse_pairs(&[(k, v)]);
        assert_eq!(g.guards, vec![Box::<str>::from(k)]);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, Severity::Error);
        assert!(
            d[0].field.contains(k) && d[0].reason.contains("503"),
            "{d:?}"
        );
    }
}

#[test]
fn header_configmaps_become_header_operations() {
    let (g, d) = parse_with(
        &[
            ("add-headers", "ingress/resp"),
            ("proxy-set-headers", "ingress/req"),
        ],
        &[
            (
                "ingress",
                "resp",
                &[("X-Frame-Options", "DENY"), ("X-Uri", "$request_uri")],
            ),
            ("ingress", "req", &[("X-Team", " blue "), ("X-Empty", "")]),
        ],
    );
    assert!(d.is_empty(), "{d:?}");
    let ops = g.headers.expect("header operations");
    assert_eq!(ops.response.len(), 2);
    assert!(ops.response_vars, "$request_uri expands per request");
    let names: Vec<&str> = ops.request.iter().map(|(n, _)| n.0.as_str()).collect();
    assert_eq!(names, ["x-empty", "x-team"]);
    let fixed = ops.request_fixed.as_ref().expect("literal values");
    assert_eq!(fixed[1].1.as_ref().unwrap(), "blue");
    assert_eq!(fixed[0].1, None, "an empty value removes the field");
}

#[test]
fn header_configmaps_hostile_or_missing_are_warnings_and_set_nothing_bad() {
    let (g, d) = parse_with(
        &[
            ("add-headers", "ingress/resp"),
            ("proxy-set-headers", "other/req"),
        ],
        &[(
            "ingress",
            "resp",
            &[
                ("Content-Length", "0"),
                ("Transfer-Encoding", "chunked"),
                ("X-Split", "a\r\nInjected: 1"),
                ("X-Var", "$no_such_variable"),
                ("Bad Name", "x"),
                ("X-Good", "yes"),
            ],
        )],
    );
    let ops = g.headers.expect("the good field is set");
    assert_eq!(ops.response.len(), 1, "{ops:?}");
    assert!(ops.request.is_empty());
    assert_eq!(d.len(), 6, "{d:?}");
    assert!(d.iter().all(|d| d.severity == Severity::Warning));
    assert!(
        d.iter().any(|d| d.field == "data.proxy-set-headers"
            && d.reason.contains("namespace of the controller ConfigMap")),
        "{d:?}"
    );
    for (refs, why) in [
        ("nameonly", "not namespace/name"),
        ("ingress/absent", "does not exist"),
    ] {
        let (g, d) = parse_with(&[("add-headers", refs)], &[]);
        assert!(g.headers.is_none());
        assert!(d[0].reason.contains(why), "{d:?}");
    }
}

#[test]
fn client_address_keys() {
    let (g, d) = parse_pairs(&[
        ("use-forwarded-headers", "true"),
        ("forwarded-for-header", "X-Client-For"),
        ("compute-full-forwarded-for", "true"),
        (
            "proxy-real-ip-cidr",
            "10.0.0.0/8, 192.0.2.7, 2001:db8::/32, 172.16.0.1/12",
        ),
    ]);
    assert!(d.is_empty(), "{d:?}");
    let c = &g.client;
    assert!(c.real_ip && c.forwarded_headers && c.full_forwarded_for);
    assert_eq!(&*c.header, "x-client-for");
    let nets: Vec<String> = c.trusted.cidrs().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.0.2.7/32",
            "2001:db8::/32"
        ]
    );
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(c.trusts(ip("10.9.9.9")) && c.trusts(ip("::ffff:10.1.1.1")));
    assert!(!c.trusts(ip("192.0.2.8")) && !c.trusts(ip("127.0.0.1")));
    // Defaults: nobody trusted, the realip walk off.
    let d = ClientAddress::default();
    assert!(!d.real_ip && !d.forwarded_headers && d.trusted.is_empty());
    assert_eq!(&*d.header, "x-forwarded-for");
    // Forwarded headers without a trusted range: a warning (it trusts nobody).
    let (g, d) = parse_pairs(&[("use-forwarded-headers", "true")]);
    assert!(g.client.real_ip);
    assert_eq!(d.len(), 1);
    assert!(d[0].reason.contains("trusts no peer"), "{d:?}");
    // Bad entries are left out with a warning each; good ones stay.
    let (g, d) = parse_pairs(&[("proxy-real-ip-cidr", "10.0.0.0/33, nope, 10.1.0.0/16")]);
    assert_eq!(g.client.trusted.cidrs().count(), 1);
    assert_eq!(d.len(), 2, "{d:?}");
    let (g, d) = parse_pairs(&[("forwarded-for-header", "bad header")]);
    assert_eq!(&*g.client.header, "x-forwarded-for");
    assert_eq!(d.len(), 1);
}

#[test]
fn a_trusted_range_of_100000_entries_is_read_and_bounded() {
    let list: Vec<String> = (0..100_000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256 % 256, i % 256))
        .collect();
    let (g, d) = parse_pairs(&[("proxy-real-ip-cidr", &list.join(","))]);
    assert!(d.is_empty());
    // 100,000 adjacent /24s: one range, 10.0.0.0/8 less what the list leaves out.
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(g.client.trusts(ip("10.134.159.1")) && !g.client.trusts(ip("11.0.0.1")));
    assert!(g.client.trusted.cidrs().count() < 10);
}

/// nginx's recursive realip walk.
#[test]
fn the_realip_walk_is_nginx_s() {
    let (g, _) = parse_pairs(&[
        ("enable-real-ip", "true"),
        ("proxy-real-ip-cidr", "127.0.0.1, 10.0.0.0/8"),
    ]);
    let c = &g.client;
    let peer: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let walk = |values: &[&str]| {
        c.walk(peer, values.iter().map(|v| v.as_bytes()))
            .to_string()
    };
    assert_eq!(walk(&[]), "127.0.0.1", "no field: the peer");
    assert_eq!(walk(&["1.1.1.1, 10.0.0.1"]), "1.1.1.1");
    assert_eq!(walk(&["1.1.1.1", "2.2.2.2"]), "2.2.2.2", "fields in order");
    assert_eq!(
        walk(&["10.0.0.2, 10.0.0.1"]),
        "10.0.0.2",
        "all trusted: the leftmost"
    );
    assert_eq!(
        walk(&["1.1.1.1, junk, 10.0.0.1"]),
        "10.0.0.1",
        "junk stops the walk"
    );
    assert_eq!(
        walk(&["1.1.1.1,,  , 10.0.0.1"]),
        "1.1.1.1",
        "empty entries skipped"
    );
    assert_eq!(walk(&["::ffff:1.2.3.4"]), "1.2.3.4");
    // With a port, as load balancers (Azure Application Gateway) write them.
    assert_eq!(walk(&["1.1.1.1:5555, 10.0.0.1:443"]), "1.1.1.1");
    assert_eq!(walk(&["[2001:db8::1]:443"]), "2001:db8::1");
    assert_eq!(
        walk(&["1.1.1.1:notaport"]),
        "127.0.0.1",
        "not an address: stops"
    );
}

proptest::proptest! {
    /// Any field values: no panic, and the client is the peer or an address of the list.
    #[test]
    fn the_realip_walk_never_panics(values in proptest::collection::vec("[0-9a-f:., ]{0,40}", 0..4)) {
        let (g, _) = parse_pairs(&[("enable-real-ip", "true"), ("proxy-real-ip-cidr", "0.0.0.0/0, ::/0")]);
        let peer: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let client = g.client.walk(peer, values.iter().map(|v| v.as_bytes()));
        let listed = values.iter().flat_map(|v| v.split(','))
            .filter_map(|e| e.trim().parse::<std::net::IpAddr>().ok())
            .any(|ip| ip.to_canonical() == client);
        proptest::prop_assert!(client == peer || listed);
    }
}

#[test]
fn hsts_keys_make_ingress_nginx_s_field() {
    let value = |pairs: &[(&str, &str)]| {
        let (g, d) = parse_pairs(pairs);
        (g.hsts.map(|v| v.to_str().unwrap().to_string()), d.len())
    };
    let default = Some("max-age=31536000; includeSubDomains".to_string());
    assert_eq!(
        Globals::default().hsts.unwrap(),
        default.as_deref().unwrap()
    );
    assert_eq!(value(&[]), (default.clone(), 0));
    assert_eq!(value(&[("hsts", "false")]), (None, 0));
    assert_eq!(
        value(&[
            ("hsts-max-age", "86400"),
            ("hsts-include-subdomains", "false")
        ]),
        (Some("max-age=86400".into()), 0)
    );
    assert_eq!(
        value(&[("hsts-preload", "true")]),
        (
            Some("max-age=31536000; includeSubDomains; preload".into()),
            0
        )
    );
    // Invalid values keep the default, with a warning each.
    for (k, v) in [
        ("hsts-max-age", "-1"),
        ("hsts-max-age", "1y"),
        ("hsts-max-age", "+5"),
        ("hsts", "yes please"),
    ] {
        assert_eq!(value(&[(k, v)]), (default.clone(), 1), "{k}: {v}");
    }
}

/// `annotations-risk-level` in any case (ingress-nginx lower-cases it); anything else is Low,
/// with a warning.
#[test]
fn the_risk_level_is_read_as_ingress_nginx_reads_it() {
    for (v, want) in [
        ("critical", RiskLevel::Critical),
        ("CRITICAL", RiskLevel::Critical),
        ("Medium", RiskLevel::Medium),
        ("high", RiskLevel::High),
    ] {
        let (g, d) = parse_pairs(&[("annotations-risk-level", v)]);
        assert_eq!(g.annotations_risk_level, want, "{v}");
        assert!(d.is_empty(), "{d:?}");
    }
    let (g, d) = parse_pairs(&[("annotations-risk-level", "bogus")]);
    assert_eq!(g.annotations_risk_level, RiskLevel::Low);
    assert_eq!(d.len(), 1);
    assert!(d[0].reason.contains("\"bogus\""), "{d:?}");
}

/// A `global-auth-snippet` with `global-auth-url`: every route fails closed, with an error;
/// without it, a warning.
#[test]
fn a_global_auth_snippet_fails_closed() {
    let (g, d) = parse_pairs(&[
        ("global-auth-url", "http://auth.example/check"),
        ("global-auth-snippet", "proxy_set_header X-A b;"),
    ]);
    assert_eq!(g.guards, vec![Box::<str>::from("global-auth-snippet")]);
    assert!(
        d.iter()
            .any(|d| d.severity == Severity::Error && d.field == "data.global-auth-snippet"),
        "{d:?}"
    );
    let (g, d) = parse_pairs(&[("global-auth-snippet", "proxy_set_header X-A b;")]);
    assert!(g.guards.is_empty());
    assert_eq!(d[0].severity, Severity::Warning, "{d:?}");
}

/// The ConfigMap's `custom-http-errors` leaves out an entry that is not a code (a warning) and
/// keeps the others, as ingress-nginx's reader.
#[test]
fn a_bad_custom_http_errors_entry_is_left_out() {
    let (g, d) = parse_pairs(&[("custom-http-errors", "404,abc,503")]);
    assert_eq!(g.custom_http_errors.as_deref(), Some(&[404u16, 503][..]));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].reason.contains("abc"), "{d:?}");
}

/// `limit-rate` and `limit-rate-after` in KiB, as the annotations; garbage is a warning.
#[test]
fn the_response_bandwidth_keys_are_kib() {
    let (g, d) = parse_pairs(&[("limit-rate", "100"), ("limit-rate-after", "8")]);
    assert_eq!(g.limit_rate, (100 * 1024, 8 * 1024));
    assert!(d.is_empty(), "{d:?}");
    let (g, d) = parse_pairs(&[("limit-rate", "fast"), ("limit-rate-after", "-1")]);
    assert_eq!(g.limit_rate, (0, 0));
    assert_eq!(d.len(), 2, "{d:?}");
}
