//! The encoded exposition after some recordings.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use super::*;
use crate::snapshot::Diagnostic;
use crate::source::{Kind, ObjectKey};

fn labels(method: &Method, status: StatusCode) -> RequestLabels {
    RequestLabels {
        ingress: Arc::from("default/myblog"),
        service: Arc::from("default/myblog:80"),
        method: MethodClass::of(method),
        status: StatusClass::of(status),
    }
}

fn status() -> BuildStatus {
    let key = ObjectKey::new(Kind::Ingress, "default", "broken");
    BuildStatus {
        generation: 7,
        builds: 9,
        build_duration: Duration::from_millis(250),
        diagnostics: Arc::new(vec![
            Diagnostic::error(&key, "spec.rules[0]", "bad"),
            Diagnostic::error(&key, "spec.rules[1]", "bad"),
            Diagnostic::warning(&key, "spec.tls[0]", "odd"),
        ]),
        ..BuildStatus::default()
    }
}

/// The line of `text` that starts with `prefix` (a sample name with its labels).
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[test]
fn classes() {
    assert_eq!(MethodClass::of(&Method::GET).as_str(), "GET");
    assert_eq!(MethodClass::of(&Method::PATCH).as_str(), "PATCH");
    let purge = Method::from_bytes(b"PURGE").expect("method");
    assert_eq!(MethodClass::of(&purge).as_str(), "OTHER");
    assert_eq!(StatusClass::of(StatusCode::CONTINUE).as_str(), "1xx");
    assert_eq!(StatusClass::of(StatusCode::NO_CONTENT).as_str(), "2xx");
    assert_eq!(StatusClass::of(StatusCode::FOUND).as_str(), "3xx");
    assert_eq!(StatusClass::of(StatusCode::NOT_FOUND).as_str(), "4xx");
    assert_eq!(StatusClass::of(StatusCode::GATEWAY_TIMEOUT).as_str(), "5xx");
}

#[test]
fn requests_and_durations() {
    let metrics = Metrics::new();
    for _ in 0..3 {
        metrics.request(
            labels(&Method::GET, StatusCode::OK),
            Duration::from_millis(2),
        );
    }
    metrics.request(
        labels(&Method::POST, StatusCode::BAD_GATEWAY),
        Duration::from_secs(40),
    );
    let none = RequestLabels {
        ingress: Arc::from(""),
        service: Arc::from(""),
        method: MethodClass::Get,
        status: StatusClass::ClientError,
    };
    metrics.request(none, Duration::from_micros(100));
    let text = metrics.encode(&BuildStatus::default());
    let get = r#"portico_requests_total{ingress="default/myblog",service="default/myblog:80",method="GET",status="2xx"}"#;
    assert!(line(&text, get).ends_with(" 3"), "{text}");
    let post = r#"portico_requests_total{ingress="default/myblog",service="default/myblog:80",method="POST",status="5xx"}"#;
    assert!(line(&text, post).ends_with(" 1"), "{text}");
    let none = r#"portico_requests_total{ingress="",service="",method="GET",status="4xx"}"#;
    assert!(line(&text, none).ends_with(" 1"), "{text}");
    assert!(text.contains("# TYPE portico_request_duration_seconds histogram"));
    assert!(line(&text, "portico_request_duration_seconds_count").ends_with(" 5"));
    let fast = r#"portico_request_duration_seconds_bucket{le="0.0025"}"#;
    assert!(line(&text, fast).ends_with(" 4"), "{text}");
    let slow = r#"portico_request_duration_seconds_bucket{le="30.0"}"#;
    assert!(line(&text, slow).ends_with(" 4"), "{text}");
    let all = r#"portico_request_duration_seconds_bucket{le="+Inf"}"#;
    assert!(line(&text, all).ends_with(" 5"), "{text}");
}

#[test]
fn upstream_counters() {
    let metrics = Metrics::new();
    metrics.upstream_connect_error();
    metrics.upstream_connect_error();
    metrics.upstream_retry();
    let text = metrics.encode(&BuildStatus::default());
    assert_eq!(
        line(&text, "portico_upstream_connect_errors_total"),
        "portico_upstream_connect_errors_total 2"
    );
    assert_eq!(
        line(&text, "portico_upstream_retries_total"),
        "portico_upstream_retries_total 1"
    );
}

#[test]
fn connection_guard_decrements() {
    let metrics = Metrics::new();
    let a = metrics.connection_opened(ListenerKind::Http);
    let b = metrics.connection_opened(ListenerKind::Http);
    let c = metrics.connection_opened(ListenerKind::Admin);
    let text = metrics.encode(&BuildStatus::default());
    assert_eq!(
        line(&text, r#"portico_open_connections{listener="http"}"#),
        r#"portico_open_connections{listener="http"} 2"#
    );
    assert_eq!(
        line(&text, r#"portico_open_connections{listener="https"}"#),
        r#"portico_open_connections{listener="https"} 0"#
    );
    assert_eq!(
        line(&text, r#"portico_open_connections{listener="admin"}"#),
        r#"portico_open_connections{listener="admin"} 1"#
    );
    drop(a);
    drop(c);
    let text = metrics.encode(&BuildStatus::default());
    assert_eq!(
        line(&text, r#"portico_open_connections{listener="http"}"#),
        r#"portico_open_connections{listener="http"} 1"#
    );
    assert_eq!(
        line(&text, r#"portico_open_connections{listener="admin"}"#),
        r#"portico_open_connections{listener="admin"} 0"#
    );
    drop(b);
}

#[test]
fn snapshot_metrics_from_status() {
    let metrics = Metrics::new();
    let text = metrics.encode(&status());
    assert_eq!(
        line(&text, "portico_snapshot_generation"),
        "portico_snapshot_generation 7"
    );
    assert_eq!(
        line(&text, "portico_snapshot_builds_total"),
        "portico_snapshot_builds_total 9"
    );
    assert_eq!(
        line(&text, "portico_snapshot_build_duration_seconds "),
        "portico_snapshot_build_duration_seconds 0.25"
    );
    assert_eq!(
        line(&text, r#"portico_config_diagnostics{severity="error"}"#),
        r#"portico_config_diagnostics{severity="error"} 2"#
    );
    assert_eq!(
        line(&text, r#"portico_config_diagnostics{severity="warning"}"#),
        r#"portico_config_diagnostics{severity="warning"} 1"#
    );
}

#[test]
fn exposition_ends_with_eof_once() {
    let text = Metrics::new().encode(&status());
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
}

#[test]
fn shareable() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Metrics>();
    is_send_sync::<ConnectionGuard>();
}

#[test]
fn route_counters_are_cached_per_metrics_instance() {
    let (a, b) = (Metrics::new(), Metrics::new());
    let cache = RouteCounters::default();
    let mut made = 0;
    for (metrics, method, status) in [
        (&a, &Method::GET, StatusCode::OK),
        (&a, &Method::GET, StatusCode::OK),
        (&a, &Method::POST, StatusCode::BAD_GATEWAY),
        // Another instance does not count into a's counters.
        (&b, &Method::GET, StatusCode::OK),
    ] {
        metrics.route_request(
            &cache,
            MethodClass::of(method),
            StatusClass::of(status),
            || {
                made += 1;
                labels(method, status)
            },
            Duration::from_millis(1),
        );
    }
    assert_eq!(
        made, 3,
        "labels made once per cached counter, and for b's lookup"
    );
    let get = r#"portico_requests_total{ingress="default/myblog",service="default/myblog:80",method="GET",status="2xx"}"#;
    let post = r#"portico_requests_total{ingress="default/myblog",service="default/myblog:80",method="POST",status="5xx"}"#;
    let text = a.encode(&BuildStatus::default());
    assert!(line(&text, get).ends_with(" 2"), "{text}");
    assert!(line(&text, post).ends_with(" 1"), "{text}");
    let text = b.encode(&BuildStatus::default());
    assert!(line(&text, get).ends_with(" 1"), "{text}");
    assert!(line(&text, "portico_request_duration_seconds_count").ends_with(" 1"));
}
