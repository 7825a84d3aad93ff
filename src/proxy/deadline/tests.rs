use std::pin::pin;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

const TIMEOUT: Duration = Duration::from_millis(400);

#[tokio::test(start_paused = true)]
async fn work_done_in_time_is_returned_and_gives_its_slot_back() {
    let deadlines = Deadlines::new(TIMEOUT);
    let quick = pin!(tokio::time::sleep(Duration::from_millis(100)));
    assert_eq!(deadlines.run(quick).await, Ok(()));
    assert_eq!(deadlines.waiting(), 0);
    // Ready at once: no slot taken at all.
    assert_eq!(deadlines.run(pin!(async { 7 })).await, Ok(7));
    assert_eq!(deadlines.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn work_that_never_ends_times_out_between_one_and_one_and_a_quarter_timeouts() {
    let deadlines = Deadlines::new(TIMEOUT);
    // Start at different points within a tick.
    for offset in [0, 30, 99, 100, 250] {
        tokio::time::sleep(Duration::from_millis(offset)).await;
        let start = Instant::now();
        let result = deadlines.run(std::future::pending::<()>()).await;
        let waited = start.elapsed();
        assert_eq!(result, Err(Elapsed));
        assert!(
            waited >= TIMEOUT && waited <= TIMEOUT * 5 / 4,
            "timed out after {waited:?}"
        );
        assert_eq!(deadlines.waiting(), 0, "slot given back");
    }
}

#[tokio::test(start_paused = true)]
async fn work_that_ends_just_before_the_deadline_is_not_cut() {
    let deadlines = Deadlines::new(TIMEOUT);
    let almost = pin!(tokio::time::sleep(TIMEOUT - Duration::from_millis(1)));
    assert_eq!(deadlines.run(almost).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn many_requests_each_get_their_own_deadline() {
    let deadlines = Arc::new(Deadlines::new(TIMEOUT));
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let deadlines = deadlines.clone();
        // Every other request answers in time; the rest never do.
        tasks.push(tokio::spawn(async move {
            let work = async move {
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(i)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            deadlines.run(pin!(work)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(deadlines.waiting() > 100, "{} waiting", deadlines.waiting());
    for (i, task) in tasks.into_iter().enumerate() {
        let expected = if i % 2 == 0 { Ok(()) } else { Err(Elapsed) };
        assert_eq!(task.await.unwrap(), expected, "request {i}");
    }
    assert_eq!(deadlines.waiting(), 0);
}

/// Dropped while waiting (the client went away): the slot goes with it.
#[tokio::test(start_paused = true)]
async fn a_request_dropped_while_waiting_gives_its_slot_back() {
    let deadlines = Deadlines::new(TIMEOUT);
    let waiting = tokio::time::timeout(
        Duration::from_millis(50),
        deadlines.run(std::future::pending::<()>()),
    );
    assert!(waiting.await.is_err());
    assert_eq!(deadlines.waiting(), 0);
}
