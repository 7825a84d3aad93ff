//! The default connection limit, the counter, and raising the descriptor limit (only ever
//! raised: the tests of a binary share the process).

use super::*;

#[test]
fn default_max_connections_by_soft_limit() {
    let cases = [
        (Some(1), 1),
        (Some(4), 1),
        (Some(64), 16),
        (Some(256), 64),
        (Some(1024), 448),
        (Some(65_536), 32_704),
        (Some(1_048_576), 524_224),
        (None, usize::MAX),
    ];
    for (soft, want) in cases {
        assert_eq!(max_connections_for(Limit(soft)), want, "{soft:?}");
    }
}

#[test]
fn permits_count_and_release() {
    let limit = ConnectionLimit::new(2);
    let a = limit.try_acquire().expect("first");
    let b = limit.try_acquire().expect("second");
    assert!(limit.try_acquire().is_none(), "third over the limit");
    assert_eq!(limit.open(), 2, "a refusal leaves the count as it was");
    drop(a);
    let c = limit.try_acquire().expect("a place came free");
    // An upgraded connection keeps counting, even past the limit.
    let held = limit.hold();
    assert_eq!(limit.open(), 3);
    drop((b, c, held));
    assert_eq!(limit.open(), 0);
}

#[test]
fn racing_acquirers_never_exceed_the_limit() {
    let limit = ConnectionLimit::new(3);
    let held = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (limit, held) = (Arc::clone(&limit), Arc::clone(&held));
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if let Some(permit) = limit.try_acquire() {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= 3, "{now} permits held at once");
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(limit.open(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn the_soft_limit_is_raised_to_the_hard_one() {
    let (before, after) = raise_fd_limit().expect("setrlimit").expect("linux");
    assert_eq!(after.hard, before.hard, "the hard limit is left alone");
    match before.hard {
        Limit(Some(hard)) => assert_eq!(after.soft, Limit(Some(hard))),
        Limit(None) => assert!(after.soft.0 >= before.soft.0),
    }
    assert_eq!(fd_limits(), Some(after));
    assert_eq!(Limit(None).to_string(), "unlimited");
}
