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
    for kind in &Kind::ALL[..6] {
        tx.send(Event::Synced(*kind)).await.unwrap();
    }
    sleep(Duration::from_secs(5)).await;
    assert_eq!(handle.generation(), 0);
    tx.send(Event::Synced(Kind::ALL[6])).await.unwrap();
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
