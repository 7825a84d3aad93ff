//! The pure parts of the Kubernetes source: relists, watch scopes, addresses, the status plan,
//! Event text and rate limiting. The wire side is tested against a fake API server in
//! `tests/kube_*.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::watcher::Event as W;
use serde_json::json;
use tokio::time::Instant;

use super::addresses::{Address, node_ips, normalize, parse_status_address};
use super::events::{Bucket, describe};
use super::status::{Memory, plan};
use super::watch::{IngressMap, Relist, scopes};
use crate::snapshot::Diagnostic;
use crate::source::{Event, Kind, Object, ObjectKey};

fn service(name: &str) -> Object {
    let o = json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": "ns"}});
    Object::from_value(o).unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Service, "ns", name)
}

fn step(relist: &mut Relist, event: W<Object>) -> (Vec<Event>, bool) {
    let mut out = Vec::new();
    let first = relist.step(event, &mut out);
    (out, first)
}

#[test]
fn a_relist_deletes_what_it_no_longer_lists() {
    let mut r = Relist::default();
    assert_eq!(step(&mut r, W::Init), (vec![], false));
    let (out, _) = step(&mut r, W::InitApply(service("a")));
    assert_eq!(out, [Event::Applied(service("a"))]);
    step(&mut r, W::InitApply(service("b")));
    assert_eq!(step(&mut r, W::InitDone), (vec![], true), "first sync");
    step(&mut r, W::Apply(service("c")));
    let (out, _) = step(&mut r, W::Delete(service("a")));
    assert_eq!(out, [Event::Deleted(key("a"))]);

    // A relist that shows only c: b vanished meanwhile.
    step(&mut r, W::Init);
    step(&mut r, W::InitApply(service("c")));
    assert_eq!(
        step(&mut r, W::InitDone),
        (vec![Event::Deleted(key("b"))], false),
        "not a first sync any more"
    );
}

#[test]
fn an_interrupted_relist_deletes_nothing() {
    let mut r = Relist::default();
    for e in [W::Init, W::InitApply(service("a")), W::InitDone] {
        step(&mut r, e);
    }
    // A list that fails half-way starts over with Init; only a complete one counts.
    step(&mut r, W::Init);
    step(&mut r, W::Init);
    step(&mut r, W::InitApply(service("a")));
    assert_eq!(step(&mut r, W::InitDone).0, vec![]);
    // An InitDone without an Init (not something kube-rs sends) deletes nothing either.
    assert_eq!(step(&mut r, W::InitDone).0, vec![]);
    // An empty list deletes everything.
    step(&mut r, W::Init);
    assert_eq!(step(&mut r, W::InitDone).0, vec![Event::Deleted(key("a"))]);
}

#[test]
fn watch_scopes() {
    assert_eq!(scopes(&[]), vec![None]);
    let given = ["b", "a", "b", ""].map(String::from);
    assert_eq!(scopes(&given), vec![Some("a".into()), Some("b".into())]);
}

fn ip(s: &str) -> Address {
    Address {
        ip: Some(s.into()),
        ..Address::default()
    }
}

fn hostname(s: &str) -> Address {
    Address {
        hostname: Some(s.into()),
        ..Address::default()
    }
}

#[test]
fn status_addresses_parse() {
    assert_eq!(parse_status_address(" 192.0.2.1 "), Some(ip("192.0.2.1")));
    assert_eq!(parse_status_address("2001:db8::1"), Some(ip("2001:db8::1")));
    assert_eq!(
        parse_status_address("LB.Example.com"),
        Some(hostname("lb.example.com"))
    );
    for bad in ["", "a..b", "-a.com", "a b", "x/y", &"a".repeat(64)] {
        assert_eq!(parse_status_address(bad), None, "{bad:?}");
    }
    let sorted = normalize(vec![
        hostname("b"),
        ip("10.0.0.2"),
        ip("10.0.0.1"),
        hostname("b"),
    ]);
    assert_eq!(sorted, [ip("10.0.0.1"), ip("10.0.0.2"), hostname("b")]);
}

#[test]
fn node_addresses_prefer_the_asked_kind() {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {
        "addresses": [{"type": "Hostname", "address": "n"},
                      {"type": "InternalIP", "address": "10.0.0.1"},
                      {"type": "InternalIP", "address": "fd00::1"},
                      {"type": "ExternalIP", "address": "203.0.113.1"}]}}))
    .unwrap();
    assert_eq!(node_ips(&node, false), [ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(node_ips(&node, true), [ip("203.0.113.1")]);
    let internal_only: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}))
    .unwrap();
    assert_eq!(node_ips(&internal_only, true), [ip("10.0.0.1")], "fallback");
    assert_eq!(node_ips(&Node::default(), false), []);
}

fn ingress(name: &str, status: &[&str]) -> ((String, String), Arc<Ingress>) {
    let list: Vec<_> = status.iter().map(|s| json!({"ip": s})).collect();
    let ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"},
        "status": {"loadBalancer": {"ingress": list}}}))
    .unwrap();
    (("ns".into(), name.into()), Arc::new(ingress))
}

#[test]
fn the_status_plan() {
    let ingresses: IngressMap = [
        ingress("ours-new", &[]),
        ingress("ours-done", &["10.0.0.1"]),
        ingress("ours-old", &["10.0.0.9"]),
        ingress("was-ours", &["10.0.0.1"]),
        ingress("written", &["10.0.0.5"]),
        ingress("foreign", &["198.51.100.1"]),
        ingress("in-flight", &[]),
        ingress("cleared-before", &["10.0.0.1"]),
    ]
    .into_iter()
    .collect();
    let ours: Vec<ObjectKey> = ["ours-new", "ours-done", "ours-old", "in-flight"]
        .map(|n| ObjectKey::new(Kind::Ingress, "ns", n))
        .into();
    let memory = Memory {
        written: BTreeSet::from([("ns".to_string(), "written".to_string())]),
        cleared: BTreeSet::from([("ns".to_string(), "cleared-before".to_string())]),
        in_flight: BTreeMap::from([(("ns".into(), "in-flight".into()), "7".to_string())]),
    };
    let addresses = [ip("10.0.0.1")];
    let writes = plan(&ingresses, &ours, &addresses, &memory);
    let got: Vec<(&str, Vec<Address>)> = writes
        .iter()
        .map(|w| {
            (
                w.ingress.metadata.name.as_deref().unwrap(),
                w.addresses.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ours-new", vec![ip("10.0.0.1")]),
            ("ours-old", vec![ip("10.0.0.1")]),
            ("was-ours", vec![]),
            ("written", vec![]),
        ]
    );
}

#[test]
fn event_text() {
    let key = ObjectKey::new(Kind::Ingress, "ns", "i");
    let d = Diagnostic::error(&key, "spec.rules[0]", "bad host");
    assert_eq!(
        describe(&d),
        ("ConfigurationError", "spec.rules[0]: bad host".into())
    );
    let d = Diagnostic::warning(&key, "", "é".repeat(600));
    let (reason, note) = describe(&d);
    assert_eq!(reason, "ConfigurationWarning");
    assert!(
        note.len() <= 1024 && note.ends_with("..."),
        "{}",
        note.len()
    );
}

#[test]
fn events_are_rate_limited() {
    let start = Instant::now();
    let mut bucket = Bucket::new(start);
    let burst = (0..100).take_while(|_| bucket.take(start)).count();
    assert_eq!(burst, 25);
    assert!(!bucket.take(start + Duration::from_millis(500)));
    assert!(bucket.take(start + Duration::from_millis(1600)));
    assert!(!bucket.take(start + Duration::from_millis(1700)));
}

#[test]
fn flags_parse() {
    use clap::Parser;
    let argv = [
        "portico",
        "--kubeconfig",
        "/k",
        "--watch-namespace",
        "a,b",
        "--watch-namespace",
        "c",
        "--publish-status-address",
        "192.0.2.1,lb.example.com",
        "--status-external-ip",
        "--update-status",
        "false",
        "--leader-lease-duration",
        "3s",
        "--pod-name",
        "p",
    ];
    let cli = crate::config::Cli::try_parse_from(argv).unwrap();
    let k = cli.run.source.kube;
    assert_eq!(k.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
    assert_eq!(k.watch_namespaces, ["a", "b", "c"]);
    assert_eq!(k.publish_status_addresses, ["192.0.2.1", "lb.example.com"]);
    assert!(k.status_external_ip && !k.update_status && !k.watch_endpoints);
    assert_eq!(k.leader_lease_duration, Duration::from_secs(3));
    assert_eq!(k.pod_name.as_deref(), Some("p"));
    assert_eq!(k.election_id, "portico-leader");
    assert_eq!(k.status_pod_selector, "app.kubernetes.io/name=portico");
}

fn kube_args(flags: &[&str]) -> super::KubeArgs {
    use clap::Parser;
    let argv = std::iter::once("portico").chain(flags.iter().copied());
    crate::config::Cli::try_parse_from(argv)
        .unwrap()
        .run
        .source
        .kube
}

#[tokio::test]
async fn a_missing_kubeconfig_is_a_clear_error() {
    let args = kube_args(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    let error = super::client(&args).await.err().unwrap();
    assert!(matches!(error, super::KubeError::Kubeconfig(_)), "{error}");
}

#[tokio::test]
async fn a_bad_status_address_is_a_start_error() {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let args = kube_args(&["--publish-status-address", "192.0.2.1,not a name"]);
    let error = super::addresses::AddressSource::from_args(&args, &client)
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "--publish-status-address: \"not a name\" is not an IP address or a host name"
    );
}

mod retry {
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::source::kubernetes::retry::{BASE, CAP, FORBIDDEN, Failure, RELIST_SPACING, Retry};

    #[test]
    fn errors_back_off_to_a_cap_of_a_few_seconds() {
        let (mut r, now) = (Retry::default(), Instant::now());
        let delays: Vec<Duration> = (0..12)
            .map(|_| r.failed(Failure::Other, now, 0.999_999))
            .collect();
        assert!(delays[0] <= BASE && delays[0] >= BASE / 2, "{delays:?}");
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= CAP), "{delays:?}");
        assert!(CAP <= Duration::from_secs(4));
        assert!(
            delays[11] >= CAP.mul_f64(0.99),
            "reaches the cap: {delays:?}"
        );
        // Jitter stays in the upper half.
        let mut r = Retry::default();
        for _ in 0..8 {
            r.failed(Failure::Other, now, 0.5);
        }
        let low = r.failed(Failure::Other, now, 0.0);
        assert_eq!(low, CAP / 2);
    }

    #[test]
    fn a_success_resets_the_backoff() {
        let (mut r, now) = (Retry::default(), Instant::now());
        for _ in 0..10 {
            r.failed(Failure::Other, now, 0.999);
        }
        r.succeeded();
        assert!(r.failed(Failure::Other, now, 0.999) <= BASE);
    }

    #[test]
    fn gone_relists_at_once_but_not_in_a_loop() {
        let (mut r, now) = (Retry::default(), Instant::now());
        for _ in 0..5 {
            r.failed(Failure::Other, now, 0.999);
        }
        assert_eq!(r.failed(Failure::Expired, now, 0.999), Duration::ZERO);
        let again = r.failed(Failure::Expired, now + Duration::from_millis(10), 0.999);
        assert!(again > Duration::ZERO, "a second 410 right away backs off");
        let later = now + RELIST_SPACING + Duration::from_millis(20);
        assert_eq!(r.failed(Failure::Expired, later, 0.999), Duration::ZERO);
    }

    #[test]
    fn forbidden_waits_long() {
        let mut r = Retry::default();
        let d = r.failed(Failure::Forbidden, Instant::now(), 0.0);
        assert_eq!(d, FORBIDDEN / 2);
    }

    #[test]
    fn failures_are_classified_by_status_code() {
        use kube::runtime::watcher::Error;
        let status = |code: u16| {
            let mut s = kube::core::Status::failure("x", "y");
            s.code = code;
            Box::new(s)
        };
        assert_eq!(
            Failure::of(&Error::WatchError(status(410))),
            Failure::Expired
        );
        let forbidden = Error::InitialListFailed(kube::Error::Api(status(403)));
        assert_eq!(Failure::of(&forbidden), Failure::Forbidden);
        let server = Error::InitialListFailed(kube::Error::Api(status(500)));
        assert_eq!(Failure::of(&server), Failure::Other);
        assert_eq!(Failure::of(&Error::NoResourceVersion), Failure::Other);
    }
}
