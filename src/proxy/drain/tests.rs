use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use super::*;

/// A connection with one request in flight: told to close, it ends once the request is done
/// (`done` fires), as hyper's connections do.
struct Fake {
    told: Arc<AtomicUsize>,
    closing: bool,
    done: oneshot::Receiver<()>,
}

impl Future for Fake {
    type Output = Result<(), ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.done).poll(cx) {
            Poll::Ready(_) if self.closing => Poll::Ready(Ok(())),
            // The request is done but the connection stays open for more until told.
            Poll::Ready(_) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Graceful for Fake {
    fn graceful_shutdown(mut self: Pin<&mut Self>) {
        self.told.fetch_add(1, Ordering::SeqCst);
        self.closing = true;
    }
}

fn fake(told: &Arc<AtomicUsize>) -> (Fake, oneshot::Sender<()>) {
    let (tx, done) = oneshot::channel();
    let conn = Fake {
        told: told.clone(),
        closing: false,
        done,
    };
    (conn, tx)
}

#[tokio::test]
async fn shutdown_tells_every_connection_once_and_waits_for_the_last() {
    let drain = Drain::new();
    let told = Arc::new(AtomicUsize::new(0));
    let (a, finish_a) = fake(&told);
    let (b, finish_b) = fake(&told);
    let a = tokio::spawn(drain.watch(a));
    let b = tokio::spawn(drain.watch(b));
    tokio::task::yield_now().await;
    assert_eq!(drain.connections(), 2);
    let shutdown = tokio::spawn({
        let drain = drain.clone();
        async move { drain.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(told.load(Ordering::SeqCst), 2, "both told");
    assert!(!shutdown.is_finished(), "requests still in flight");
    finish_a.send(()).unwrap();
    a.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!shutdown.is_finished(), "one connection still open");
    finish_b.send(()).unwrap();
    b.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("drained once the last connection ended")
        .unwrap();
    assert_eq!(told.load(Ordering::SeqCst), 2, "told once each");
    assert_eq!(drain.connections(), 0);
}

/// A connection accepted before the shutdown but not yet run counts, and is told as soon as
/// it runs.
#[tokio::test]
async fn a_connection_not_yet_started_is_waited_for_and_told() {
    let drain = Drain::new();
    let told = Arc::new(AtomicUsize::new(0));
    let (conn, finish) = fake(&told);
    let watched = drain.watch(conn);
    let shutdown = tokio::spawn({
        let drain = drain.clone();
        async move { drain.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !shutdown.is_finished(),
        "waits for the connection not yet run"
    );
    finish.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watched)
        .await
        .expect("told at its first poll, it ends")
        .unwrap();
    assert_eq!(told.load(Ordering::SeqCst), 1);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("drained")
        .unwrap();
}

#[tokio::test]
async fn shutdown_with_no_connections_returns_at_once() {
    tokio::time::timeout(Duration::from_secs(5), Drain::new().shutdown())
        .await
        .expect("nothing to wait for");
}
