//! The controller under a paused clock: sync gating, debouncing, generations.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::sleep;

use super::*;
use crate::snapshot::certs::TlsCert;
use crate::snapshot::{Snapshot, SnapshotHandle, channel};
use crate::source::{Object, ObjectKey};

fn service(name: &str, port: i32) -> Event {
    let o = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                   "spec": {"ports": [{"port": port}]}});
    Event::Applied(Object::from_value(o).unwrap())
}

fn start() -> (
    mpsc::Sender<Event>,
    SnapshotHandle,
    watch::Receiver<BuildStatus>,
) {
    let cert = TlsCert::self_signed(&["test"]).unwrap().key;
    let (publisher, handle) = channel(Snapshot::empty(cert.clone()));
    let controller = Controller::new(BuildConfig::new(cert), publisher, Debounce::default());
    let diagnostics = controller.status();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(controller.run(rx));
    (tx, handle, diagnostics)
}

async fn sync_all(tx: &mpsc::Sender<Event>) {
    for kind in Kind::ALL {
        tx.send(Event::Synced(kind)).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_published_before_every_kind_synced() {
    let (tx, handle, _) = start();
    tx.send(service("a", 80)).await.unwrap();
    let (last, rest) = Kind::ALL.split_last().unwrap();
    for kind in rest {
        tx.send(Event::Synced(*kind)).await.unwrap();
    }
    sleep(Duration::from_secs(5)).await;
    assert_eq!(handle.generation(), 0);
    tx.send(Event::Synced(*last)).await.unwrap();
    sleep(Duration::from_millis(101)).await;
    assert_eq!(handle.generation(), 1);
    assert_eq!(handle.load().services.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_store_still_gets_a_first_snapshot() {
    let (tx, handle, _) = start();
    sync_all(&tx).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), handle.wait_for(1))
            .await
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn an_isolated_change_is_published_at_once_and_a_follow_up_after_the_quiet_period() {
    let (tx, handle, _) = start();
    sync_all(&tx).await;
    sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.generation(), 1);
    tx.send(service("a", 80)).await.unwrap();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(handle.generation(), 2, "leading edge: no waiting");
    sleep(Duration::from_millis(10)).await;
    tx.send(service("a", 81)).await.unwrap();
    sleep(Duration::from_millis(60)).await;
    assert_eq!(handle.generation(), 2, "within the quiet period: collected");
    sleep(Duration::from_millis(60)).await;
    assert_eq!(handle.generation(), 3, "then built, one generation more");
    assert_eq!(handle.load().services.iter().next().unwrap().1.port, 81);
}

#[tokio::test(start_paused = true)]
async fn queued_events_of_one_change_make_one_build() {
    let (tx, handle, _) = start();
    sync_all(&tx).await;
    sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        tx.send(service(&format!("s{i}"), 80)).await.unwrap();
    }
    sleep(Duration::from_millis(300)).await;
    assert_eq!(handle.load().services.len(), 20);
    assert!(
        handle.generation() <= 3,
        "{} builds for one batch",
        handle.generation() - 1
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_changes_is_rebuilt_at_most_every_500ms() {
    let (tx, handle, _) = start();
    sync_all(&tx).await;
    sleep(Duration::from_millis(200)).await;
    // A change every 50 ms for 1 s: the first is built at once, the rest wait for the 500 ms
    // cap (the quiet period never comes while they flow).
    let mut seen = Vec::new();
    for i in 0..20 {
        tx.send(service("a", 1000 + i)).await.unwrap();
        sleep(Duration::from_millis(50)).await;
        seen.push(handle.generation());
    }
    assert_eq!(seen[0], 2, "leading edge");
    let during = seen.last().unwrap() - 1;
    assert!(
        (2..=4).contains(&during),
        "{during} builds during 1 s of changes: {seen:?}"
    );
    sleep(Duration::from_millis(600)).await;
    assert_eq!(
        handle.load().services.iter().next().unwrap().1.port,
        1019,
        "the last change is in"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_store_does_not_swap() {
    let (tx, handle, _) = start();
    tx.send(service("a", 80)).await.unwrap();
    sync_all(&tx).await;
    sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.generation(), 1);
    tx.send(service("a", 80)).await.unwrap();
    tx.send(Event::Deleted(ObjectKey::new(
        Kind::Service,
        "default",
        "missing",
    )))
    .await
    .unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.generation(), 1);
    // A change and its undo within one debounce window leave the snapshot as it was.
    tx.send(service("a", 81)).await.unwrap();
    tx.send(service("a", 80)).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn diagnostics_follow_each_build() {
    let (tx, handle, mut diagnostics) = start();
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "bad"},
        "spec": {"ingressClassName": "portico", "rules": [{"host": "h.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "ghost", "port": {"number": 80}}}}]}}]}});
    let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress-controller"}});
    tx.send(Event::Applied(Object::from_value(class).unwrap()))
        .await
        .unwrap();
    tx.send(Event::Applied(Object::from_value(bad).unwrap()))
        .await
        .unwrap();
    sync_all(&tx).await;
    sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.generation(), 1);
    let current = diagnostics.borrow_and_update().diagnostics.clone();
    assert_eq!(current.len(), 1);
    assert!(
        current[0]
            .reason
            .contains("Service default/ghost not found")
    );
    tx.send(service("ghost", 80)).await.unwrap();
    sleep(Duration::from_millis(200)).await;
    assert!(diagnostics.borrow_and_update().diagnostics.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_loop_ends_when_the_sources_are_gone() {
    let cert = TlsCert::self_signed(&["test"]).unwrap().key;
    let (publisher, handle) = channel(Snapshot::empty(cert.clone()));
    let controller = Controller::new(BuildConfig::new(cert), publisher, Debounce::default());
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(controller.run(rx));
    sync_all(&tx).await;
    tx.send(service("a", 80)).await.unwrap();
    drop(tx);
    task.await.unwrap();
    assert_eq!(handle.generation(), 1, "pending changes are flushed");
    assert_eq!(handle.load().services.len(), 1);
}

/// The wall clock of `certificates_are_judged_again_every_hour`.
static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn test_clock() -> i64 {
    CLOCK.load(std::sync::atomic::Ordering::Relaxed)
}

/// A kubernetes.io/tls Secret `tls` for `h.com`, valid from `not_before` to `not_after`.
fn tls_secret(not_before: i64, not_after: i64) -> Event {
    use x509_parser::time::ASN1Time;
    let mut params = rcgen::CertificateParams::new(vec!["h.com".to_string()]).unwrap();
    params.not_before = ASN1Time::from_timestamp(not_before).unwrap().to_datetime();
    params.not_after = ASN1Time::from_timestamp(not_after).unwrap().to_datetime();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "tls"},
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()}});
    Event::Applied(Object::from_value(secret).unwrap())
}

/// A certificate that comes within 14 days of its end is reported without a build: the
/// controller judges validity again every hour, by the wall clock.
#[tokio::test(start_paused = true)]
async fn certificates_are_judged_again_every_hour() {
    const DAY: i64 = 86_400;
    let now = 1_767_225_600; // 2026-01-01T00:00:00Z
    CLOCK.store(now, std::sync::atomic::Ordering::Relaxed);
    let cert = TlsCert::self_signed(&["test"]).unwrap().key;
    let (publisher, handle) = channel(Snapshot::empty(cert.clone()));
    let controller = Controller::new(BuildConfig::new(cert), publisher, Debounce::default())
        .with_clock(test_clock);
    let mut status = controller.status();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(controller.run(rx));
    let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress-controller"}});
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "site"},
        "spec": {"ingressClassName": "portico", "tls": [{"hosts": ["h.com"], "secretName": "tls"}],
                 "rules": [{"host": "h.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
    for object in [class, ingress] {
        let event = Event::Applied(Object::from_value(object).unwrap());
        tx.send(event).await.unwrap();
    }
    tx.send(service("web", 80)).await.unwrap();
    tx.send(tls_secret(now - 100 * DAY, now + 20 * DAY))
        .await
        .unwrap();
    sync_all(&tx).await;
    sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.generation(), 1);
    {
        let current = status.borrow_and_update();
        let served: Vec<(&str, i64)> = current
            .certificates
            .iter()
            .map(|s| (s.host.as_str(), s.not_after))
            .collect();
        assert_eq!(served, [("h.com", now + 20 * DAY)]);
        assert!(current.diagnostics.is_empty(), "{:?}", current.diagnostics);
    }
    // A week later, within the hour: the warning, and no build.
    CLOCK.store(now + 7 * DAY, std::sync::atomic::Ordering::Relaxed);
    sleep(Duration::from_secs(3601)).await;
    let current = status.borrow_and_update().clone();
    assert_eq!(current.builds, 1, "judged again without a build");
    assert_eq!(current.diagnostics.len(), 1, "{:?}", current.diagnostics);
    let warning = &current.diagnostics[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(
        warning.object,
        ObjectKey::new(Kind::Secret, "default", "tls")
    );
    assert_eq!(
        warning.reason,
        "the certificate expires at 2026-01-21T00:00:00Z (notAfter), in 13 days; still served for h.com"
    );
    // A renewed certificate: the warning goes with the build.
    tx.send(tls_secret(now, now + 90 * DAY)).await.unwrap();
    sleep(Duration::from_millis(200)).await;
    assert!(status.borrow_and_update().diagnostics.is_empty());
}
