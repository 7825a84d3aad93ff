//! Tests of the watching source against real directories.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::*;
use crate::source::ObjectKey;
use crate::source::manifests::tests::{ingress, service, svc_key, write};

/// Every wait is bounded, so a broken watcher fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

type Source = (
    JoinHandle<Result<(), ManifestsError>>,
    mpsc::Receiver<Event>,
);

fn start(dir: &Path, backend: WatchBackend) -> Source {
    let (tx, rx) = mpsc::channel(16);
    let options = ManifestOptions::default();
    (
        tokio::spawn(run_with(dir.to_path_buf(), options, tx, backend)),
        rx,
    )
}

async fn next(rx: &mut mpsc::Receiver<Event>) -> Event {
    match timeout(WAIT, rx.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the source stopped"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Receives the initial events up to the last `Synced`.
async fn initial(rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    let mut events = Vec::new();
    while events.last() != Kind::ALL.last().map(|k| Event::Synced(*k)).as_ref() {
        events.push(next(rx).await);
    }
    events
}

fn applied_key(event: &Event) -> Option<ObjectKey> {
    match event {
        Event::Applied(object) => Some(object.key()),
        _ => None,
    }
}

fn service_port(event: &Event) -> Option<i32> {
    match event {
        Event::Applied(crate::source::Object::Service(s)) => {
            Some(s.spec.as_ref()?.ports.as_ref()?.first()?.port)
        }
        _ => None,
    }
}

/// Replaces a file at once (a hidden temporary renamed over it), as editors and kubelet do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_file_name(".replace.tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Asserts that nothing is sent for a while.
async fn quiet(rx: &mut mpsc::Receiver<Event>) {
    if let Ok(event) = timeout(Duration::from_millis(400), rx.recv()).await {
        panic!("unexpected {event:?}");
    }
}

#[tokio::test]
async fn initial_objects_then_synced_for_every_kind() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("s.yaml"), &service("a", 80));
    write(&tmp.path().join("sub/i.yaml"), &ingress("i", "i.example"));
    let (_task, mut rx) = start(tmp.path(), WatchBackend::Native);
    let events = initial(&mut rx).await;
    let keys: Vec<_> = events.iter().filter_map(applied_key).collect();
    assert_eq!(
        keys,
        vec![ObjectKey::new(Kind::Ingress, "web", "i"), svc_key("a")]
    );
    let synced: Vec<_> = events[2..].to_vec();
    assert_eq!(synced, Kind::ALL.map(Event::Synced).to_vec());
}

#[tokio::test]
async fn changes_become_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (_task, mut rx) = start(tmp.path(), WatchBackend::Native);
    assert_eq!(
        initial(&mut rx).await.len(),
        Kind::ALL.len(),
        "empty directory"
    );
    let path = tmp.path().join("s.yaml");

    let written = Instant::now();
    write(&path, &service("a", 80));
    assert_eq!(applied_key(&next(&mut rx).await), Some(svc_key("a")));
    assert!(
        written.elapsed() < Duration::from_secs(1),
        "{:?}",
        written.elapsed()
    );

    replace(&path, &service("a", 81));
    assert_eq!(service_port(&next(&mut rx).await), Some(81));

    replace(&path, &format!("{}---\nkind: [", service("a", 82)));
    quiet(&mut rx).await;
    replace(&path, &service("a", 83));
    assert_eq!(service_port(&next(&mut rx).await), Some(83), "fixed");

    write(&tmp.path().join(".hidden.yaml"), &service("hidden", 80));
    write(
        &tmp.path().join("sub/deeper/i.yaml"),
        &ingress("i", "i.example"),
    );
    let key = ObjectKey::new(Kind::Ingress, "web", "i");
    assert_eq!(
        applied_key(&next(&mut rx).await),
        Some(key),
        "nested, hidden ignored"
    );

    fs::remove_file(&path).unwrap();
    assert_eq!(next(&mut rx).await, Event::Deleted(svc_key("a")));
    quiet(&mut rx).await;
}

#[tokio::test]
async fn polling_sees_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_task, mut rx) = start(tmp.path(), WatchBackend::Poll);
    initial(&mut rx).await;
    write(&tmp.path().join("s.yaml"), &service("a", 80));
    assert_eq!(applied_key(&next(&mut rx).await), Some(svc_key("a")));
}

#[tokio::test]
async fn a_removed_directory_keeps_objects_and_is_watched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    write(&dir.join("s.yaml"), &service("a", 80));
    let (task, mut rx) = start(&dir, WatchBackend::Native);
    initial(&mut rx).await;
    fs::remove_dir_all(&dir).unwrap();
    quiet(&mut rx).await;
    assert!(!task.is_finished());
    write(&dir.join("s.yaml"), &service("a", 81));
    assert_eq!(service_port(&next(&mut rx).await), Some(81));
    replace(&dir.join("s.yaml"), &service("a", 82));
    assert_eq!(
        service_port(&next(&mut rx).await),
        Some(82),
        "watched again"
    );
}

#[tokio::test]
async fn stops_when_the_receiver_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (task, mut rx) = start(tmp.path(), WatchBackend::Native);
    initial(&mut rx).await;
    drop(rx);
    let result = timeout(WAIT, task).await.expect("stops").expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let (task, _rx) = start(&missing, WatchBackend::Native);
    let result = timeout(WAIT, task)
        .await
        .expect("returns")
        .expect("no panic");
    let e = result.unwrap_err();
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
}

#[tokio::test]
async fn the_watcher_callback_ignores_access_and_flags_the_root() {
    use notify::event::{AccessKind, CreateKind, RemoveKind};
    let root = Path::new("/manifests");
    let wake = Arc::new(Wake::default());
    let mut callback = handler(root, &wake);
    let woken = || timeout(Duration::from_millis(50), wake.notify.notified());

    callback(Ok(
        notify::Event::new(EventKind::Access(AccessKind::Any)).add_path(root.join("a.yaml"))
    ));
    assert!(
        woken().await.is_err(),
        "our own reads must not trigger rescans"
    );

    callback(Ok(
        notify::Event::new(EventKind::Create(CreateKind::File)).add_path(root.join("a.yaml"))
    ));
    callback(Ok(
        notify::Event::new(EventKind::Create(CreateKind::File)).add_path(root.join("b.yaml"))
    ));
    assert!(woken().await.is_ok());
    assert!(woken().await.is_err(), "a burst wakes once");
    assert!(!wake.rewatch.load(Ordering::Relaxed));

    callback(Ok(notify::Event::new(EventKind::Remove(
        RemoveKind::Folder,
    ))
    .add_path(root.into())));
    assert!(woken().await.is_ok());
    assert!(
        wake.rewatch.load(Ordering::Relaxed),
        "the directory itself: watch again"
    );

    callback(Err(notify::Error::generic("queue overflow")));
    assert!(woken().await.is_ok(), "an error may hide changes: rescan");
}

#[tokio::test]
async fn complete_changes_are_flagged_as_settled() {
    use notify::event::{AccessMode, CreateKind, DataChange, ModifyKind, RenameMode};
    let root = Path::new("/manifests");
    let wake = Arc::new(Wake::default());
    let mut callback = handler(root, &wake);
    let mut send = |kind| callback(Ok(notify::Event::new(kind).add_path(root.join("a.yaml"))));

    send(EventKind::Create(CreateKind::File));
    send(EventKind::Modify(ModifyKind::Data(DataChange::Content)));
    assert!(!wake.take_settled(), "a write in progress");
    send(EventKind::Access(AccessKind::Close(AccessMode::Write)));
    assert!(wake.take_settled(), "closed after writing");
    assert!(!wake.take_settled(), "taken");
    send(EventKind::Access(AccessKind::Close(AccessMode::Read)));
    assert!(!wake.take_settled(), "our own reads");
    send(EventKind::Modify(ModifyKind::Name(RenameMode::To)));
    assert!(wake.take_settled(), "renamed into place");
    send(EventKind::Remove(notify::event::RemoveKind::File));
    assert!(wake.take_settled(), "removed");
}

/// The timing rule, on a paused clock: a complete change after a quiet period is rescanned at
/// once; one right after a rescan waits for the end of the coalescing period; a write in
/// progress waits for the period, unless a complete change comes first.
#[test]
fn rescans_are_due_at_once_after_a_quiet_period() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let long_ago = t0 - ms(1000);
    assert_eq!(
        next_due(None, true, t0, long_ago),
        t0,
        "isolated rename: at once"
    );
    assert_eq!(
        next_due(None, false, t0, long_ago),
        t0 + COALESCE,
        "write in progress"
    );
    assert_eq!(
        next_due(Some(t0 + COALESCE), true, t0 + ms(5), long_ago),
        t0 + ms(5),
        "closed: no need to wait any longer"
    );
    let just = t0 - ms(5);
    assert_eq!(
        next_due(None, true, t0, just),
        just + COALESCE,
        "a burst right after a rescan is coalesced"
    );
    assert_eq!(
        next_due(Some(t0 + ms(1)), false, t0, long_ago),
        t0 + ms(1),
        "a later event never postpones a due rescan"
    );
}
