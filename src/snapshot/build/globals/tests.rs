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
    let g = parse(&key(), &data, &mut d);
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
        ("annotations-risk-level", "critical"),
        ("custom-http-errors", "404,abc"),
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
    let (g, d) = parse_pairs(&[("keep-alive", "75"), ("no-such-key", "1")]);
    assert_eq!(g, Globals::default());
    assert_eq!(d.len(), 2);
    assert!(
        d[0].reason.contains("not supported by Portico yet"),
        "{d:?}"
    );
    assert!(d[1].reason.contains("not a ConfigMap key"), "{d:?}");
}
