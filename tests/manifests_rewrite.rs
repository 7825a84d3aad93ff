//! A manifest rewritten in place (truncated, then written: what `echo > file`, many editors and
//! configuration tools do) never makes its routes vanish, over real sockets: while the Ingress's
//! file is rewritten every 10 ms for 10 s, a client sends requests to its host without pause
//! and every one is answered by the backend (before, 12-17 % got 404: a rescan read the file
//! while it was empty). Then a last, different version written the same way is served within
//! a few seconds: a file that keeps changing is only held back, not ignored.
//!
//! Bounded: the writer stops after 10 s, the client after the writer (at most 100,000
//! requests, each under the client's own timeout), the final wait after 5 s.

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::client::{self, get};
use support::manifests::{class, endpoints, ingress, prefix, service};
use support::{Backend, Env};

const REWRITE_EVERY: Duration = Duration::from_millis(10);
const REWRITING: Duration = Duration::from_secs(10);
const MAX_REQUESTS: usize = 100_000;

/// Truncates the file and writes `text` into it: the same inode, empty for a moment.
fn rewrite_in_place(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_never_loses_its_routes() {
    let backend = Backend::start("shop").await;
    let routes = |path: &str| {
        ingress(
            "shop",
            "web",
            &[("shop.test", vec![prefix(path, "web", 80)])],
        )
    };
    let files = [
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[backend.addr], &[]),
        ),
        ("ingress.yaml", routes("/")),
    ];
    let env = Env::start(&files).await;
    let path = env.dir.path().join("ingress.yaml");
    env.wait_for("the route", |s| s.routes.route("shop.test", "/").is_some())
        .await;

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, done, text) = (path.clone(), done.clone(), routes("/"));
        std::thread::spawn(move || {
            let (start, mut rewrites) = (Instant::now(), 0u32);
            while start.elapsed() < REWRITING {
                rewrite_in_place(&path, &text);
                rewrites += 1;
                std::thread::sleep(REWRITE_EVERY);
            }
            done.store(true, Ordering::Release);
            rewrites
        })
    };
    let (mut requests, mut failed) = (0usize, Vec::new());
    while !done.load(Ordering::Acquire) && requests < MAX_REQUESTS {
        let reply = client::h1(env.http(), get("shop.test", "/a")).await;
        requests += 1;
        if reply.status != StatusCode::OK || reply.served_by() != "shop" {
            failed.push(reply.status);
        }
    }
    let rewrites = writer.join().unwrap();
    assert!(rewrites >= 100, "only {rewrites} rewrites");
    assert!(requests >= 100, "only {requests} requests");
    assert!(
        failed.is_empty(),
        "{} of {requests} requests failed while the file was rewritten {rewrites} times: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    rewrite_in_place(&path, &routes("/v2"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = client::h1(env.http(), get("shop.test", "/a")).await;
        if reply.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "the last version was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
