//! Active health checks of a Service's endpoints, as the Service's own annotations ask
//! (`portico.dev/health-check-*`): health belongs to the backend, not to the routes that use
//! it. Off unless `portico.dev/health-check-path` is set (ingress-nginx has none). Passive
//! checks (`portico.dev/max-fails`, `portico.dev/fail-timeout`) are read here too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::snapshot::diagnostics::Diagnostic;
use crate::source::ObjectKey;

/// The annotations' prefix.
const PREFIX: &str = "portico.dev/health-check-";

/// How one Service port's endpoints are checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HealthCheck {
    /// The path of the GET (with its query, if any).
    pub path: Box<str>,
    /// Between two checks of one endpoint (default 5 s; jittered ±10 %).
    #[serde(serialize_with = "millis")]
    pub interval: Duration,
    /// A check that takes longer fails (default 1 s).
    #[serde(serialize_with = "millis")]
    pub timeout: Duration,
    /// Consecutive failures that make a healthy endpoint unhealthy (default 3).
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make an unhealthy endpoint healthy (default 2).
    pub healthy_threshold: u32,
    /// The port checked (default: the endpoint's own): a number, or the name of one of the
    /// Service's ports (the endpoint's port of that name).
    pub port: Option<CheckPort>,
    /// The gRPC health protocol (`grpc.health.v1.Health/Check`) rather than a GET, with this
    /// service name (`portico.dev/health-check-grpc: "true"`; the name from
    /// `portico.dev/health-check-grpc-service`, default empty: the whole server).
    pub grpc: Option<Box<str>>,
    /// Over TLS (the Service port's `appProtocol: https`), the certificate not verified.
    pub tls: bool,
    /// Over HTTP/2 in clear text (the Service port's `appProtocol: kubernetes.io/h2c`: gRPC
    /// servers refuse HTTP/1.1).
    pub http2: bool,
}

/// `portico.dev/health-check-port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum CheckPort {
    /// A port number.
    Number(u16),
    /// The name of a Service port.
    Name(Box<str>),
}

/// Passive health (`portico.dev/max-fails`, `portico.dev/fail-timeout`), nginx's upstream
/// `max_fails`/`fail_timeout`: `max_fails` failed attempts (refused or reset connections,
/// timeouts, invalid answers; not 5xx answers) within `fail_timeout` of one another keep the
/// endpoint out for `fail_timeout`, then one request tries it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Passive {
    /// Failures that take the endpoint out (1 to 100).
    pub max_fails: u32,
    /// The window failures count in, and how long the endpoint stays out (default 10 s).
    #[serde(serialize_with = "millis")]
    pub fail_timeout: Duration,
}

/// The passive annotations.
const MAX_FAILS: &str = "portico.dev/max-fails";
const FAIL_TIMEOUT: &str = "portico.dev/fail-timeout";

/// Reads a Service's passive health annotations: `None` unless `max-fails` (`0` turns it off)
/// or `fail-timeout` is set; `fail-timeout` alone means nginx's `max_fails` default, 1.
pub fn parse_passive(
    key: &ObjectKey,
    annotations: Option<&BTreeMap<String, String>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Passive> {
    let annotations = annotations?;
    let max_fails = annotations.get(MAX_FAILS).map(|v| v.trim());
    let fail_timeout = annotations.get(FAIL_TIMEOUT).map(|v| v.trim());
    if max_fails.is_none() && fail_timeout.is_none() {
        return None;
    }
    let mut warn = |name: &str, value: &str, why: &str| {
        let shown = crate::redact::short_value(value);
        let field = format!("metadata.annotations[{name}]");
        let reason = format!("{shown} {why}");
        diagnostics.push(Diagnostic::warning(key, field, reason));
    };
    let max_fails = match max_fails {
        None => 1,
        Some(v) => match v.parse::<u32>() {
            Ok(0) => return None,
            Ok(n) if n <= 100 => n,
            _ => {
                warn(
                    MAX_FAILS,
                    v,
                    "is not a count from 0 to 100; no passive health checks",
                );
                return None;
            }
        },
    };
    let default = Duration::from_secs(10);
    let fail_timeout = match fail_timeout {
        None => default,
        Some(v) => match parse_duration(v) {
            Some(d) if d >= Duration::from_secs(1) => d.min(MAX_DURATION),
            _ => {
                warn(
                    FAIL_TIMEOUT,
                    v,
                    "is not a duration of 1s or more, such as 10s or 1m; using 10s",
                );
                default
            }
        },
    };
    Some(Passive {
        max_fails,
        fail_timeout,
    })
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shortest interval and timeout taken (a check every millisecond would be a load test).
const MIN_DURATION: Duration = Duration::from_millis(50);
/// The longest.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Reads the health-check annotations of a Service whose ports are named `port_names`. `None`
/// without `health-check-path`; a bad value is a warning and its default.
pub fn parse(
    key: &ObjectKey,
    annotations: Option<&BTreeMap<String, String>>,
    port_names: &[&str],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<HealthCheck> {
    let annotations = annotations?;
    let get = |name: &str| {
        annotations
            .get(&format!("{PREFIX}{name}"))
            .map(|v| v.trim())
    };
    let field = |name: &str| format!("metadata.annotations[{PREFIX}{name}]");
    let path = get("path")?;
    if !path.starts_with('/') || path.len() > 1024 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        let shown = crate::redact::short_value(path);
        let reason = format!(
            "{shown} is not a request path (it starts with /, no spaces or control characters); no health checks"
        );
        diagnostics.push(Diagnostic::warning(key, field("path"), reason));
        return None;
    }
    let mut warn = |name: &str, value: &str, why: &str| {
        let shown = crate::redact::short_value(value);
        let reason = format!("{shown} {why}; using the default");
        diagnostics.push(Diagnostic::warning(key, field(name), reason));
    };
    let mut duration = |name: &str, default: Duration| match get(name) {
        None => default,
        Some(v) => match parse_duration(v) {
            Some(d) => d.clamp(MIN_DURATION, MAX_DURATION),
            None => {
                warn(name, v, "is not a duration such as 200ms, 5s or 1m");
                default
            }
        },
    };
    let interval = duration("interval", Duration::from_secs(5));
    let timeout = duration("timeout", Duration::from_secs(1));
    let mut count = |name: &str, default: u32| match get(name) {
        None => default,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                warn(name, v, "is not a count from 1 to 100");
                default
            }
        },
    };
    let unhealthy_threshold = count("unhealthy-threshold", 3);
    let healthy_threshold = count("healthy-threshold", 2);
    let port = match get("port") {
        None => None,
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => match v.parse::<u16>() {
            Ok(n) if n > 0 => Some(CheckPort::Number(n)),
            _ => {
                warn("port", v, "is not a port number from 1 to 65535");
                None
            }
        },
        Some(v) if port_names.contains(&v) => Some(CheckPort::Name(v.into())),
        Some(v) => {
            warn(
                "port",
                v,
                "is neither a port number nor the name of one of the Service's ports",
            );
            None
        }
    };
    let grpc = match get("grpc") {
        None | Some("false") => None,
        Some("true") => Some(get("grpc-service").unwrap_or("")),
        Some(v) => {
            warn("grpc", v, "is not \"true\" or \"false\"");
            None
        }
    };
    let grpc = match grpc {
        Some(name) if name.len() > 256 || name.bytes().any(|b| b < b' ' || b == 0x7f) => {
            let shown = crate::redact::short_value(name);
            let reason = format!(
                "{shown} is not a gRPC service name (at most 256 characters, no control characters); checking the whole server"
            );
            diagnostics.push(Diagnostic::warning(key, field("grpc-service"), reason));
            Some(Box::from(""))
        }
        other => other.map(Box::from),
    };
    Some(HealthCheck {
        path: path.into(),
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        port,
        grpc,
        tls: false,
        http2: false,
    })
}

/// `200ms`, `5s`, `1m`, `1h`, or a bare number of seconds.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let n: u64 = value[..digits].parse().ok()?;
    Some(match &value[digits..] {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ObjectKey {
        ObjectKey::new(crate::source::Kind::Service, "shop", "web")
    }

    fn read(pairs: &[(&str, &str)]) -> (Option<HealthCheck>, Vec<Diagnostic>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        let mut d = Vec::new();
        (parse(&key(), Some(&map), &["http", "admin"], &mut d), d)
    }

    #[test]
    fn defaults_and_values() {
        assert!(read(&[]).0.is_none(), "off without a path");
        let (check, d) = read(&[("path", "/healthz")]);
        let check = check.unwrap();
        assert!(d.is_empty());
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!(check.timeout, Duration::from_secs(1));
        assert_eq!((check.unhealthy_threshold, check.healthy_threshold), (3, 2));
        assert_eq!(check.port, None);
        let (check, d) = read(&[
            ("path", "/ready?deep=1"),
            ("interval", "200ms"),
            ("timeout", "1m"),
            ("unhealthy-threshold", "1"),
            ("healthy-threshold", "5"),
            ("port", "9090"),
        ]);
        let check = check.unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(check.interval, Duration::from_millis(200));
        assert_eq!(check.timeout, Duration::from_secs(60));
        assert_eq!((check.unhealthy_threshold, check.healthy_threshold), (1, 5));
        assert_eq!(check.port, Some(CheckPort::Number(9090)));
        assert_eq!(check.grpc, None);
        let (check, d) = read(&[
            ("path", "/"),
            ("port", "admin"),
            ("grpc", "true"),
            ("grpc-service", "shop.Cart"),
        ]);
        let check = check.unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(check.port, Some(CheckPort::Name("admin".into())));
        assert_eq!(check.grpc.as_deref(), Some("shop.Cart"));
        let (check, _) = read(&[("path", "/"), ("grpc", "true")]);
        assert_eq!(check.unwrap().grpc.as_deref(), Some(""));
    }

    fn passive(pairs: &[(&str, &str)]) -> (Option<Passive>, Vec<Diagnostic>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("portico.dev/{k}"), v.to_string()))
            .collect();
        let mut d = Vec::new();
        (parse_passive(&key(), Some(&map), &mut d), d)
    }

    #[test]
    fn passive_health_as_nginx_max_fails() {
        assert_eq!(passive(&[]).0, None, "off unless asked");
        let p = passive(&[("max-fails", "3")]).0.unwrap();
        assert_eq!((p.max_fails, p.fail_timeout), (3, Duration::from_secs(10)));
        let p = passive(&[("fail-timeout", "30s")]).0.unwrap();
        assert_eq!((p.max_fails, p.fail_timeout), (1, Duration::from_secs(30)));
        assert_eq!(
            passive(&[("max-fails", "0"), ("fail-timeout", "5s")]).0,
            None
        );
        let (p, d) = passive(&[("max-fails", "many")]);
        assert_eq!((p, d.len()), (None, 1));
        let (p, d) = passive(&[("max-fails", "2"), ("fail-timeout", "10ms")]);
        assert_eq!(p.unwrap().fail_timeout, Duration::from_secs(10));
        assert!(d[0].field.contains("portico.dev/fail-timeout"), "{d:?}");
    }

    #[test]
    fn bad_values_are_warnings_and_defaults() {
        let (check, d) = read(&[
            ("path", "/h"),
            ("interval", "5 s"),
            ("timeout", "-1s"),
            ("unhealthy-threshold", "0"),
            ("healthy-threshold", "x"),
            ("port", "metrics"),
        ]);
        let check = check.unwrap();
        assert_eq!(d.len(), 5, "{d:?}");
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!(check.port, None);
        // Too often is held to the minimum.
        let (check, _) = read(&[("path", "/h"), ("interval", "1ms")]);
        assert_eq!(check.unwrap().interval, MIN_DURATION);
        for path in ["healthz", "/a b", "/a\r\nx: y", ""] {
            let (check, d) = read(&[("path", path)]);
            assert!(check.is_none(), "{path:?}");
            assert_eq!(d.len(), 1, "{path:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn hostile_values_never_panic(value in "\\PC{0,30}", name in proptest::sample::select(vec!["path", "interval", "timeout", "unhealthy-threshold", "healthy-threshold", "port", "grpc", "grpc-service"])) {
            let _ = read(&[("path", "/h"), ("grpc", "true"), (name, &value)]);
            let _ = passive(&[("max-fails", &value), ("fail-timeout", &value)]);
            let _ = parse_duration(&value);
        }
    }
}
