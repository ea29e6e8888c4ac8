//! Wake-ups: a worker woken directly by ingest in its own process skips the `NOTIFY` that follows, while every
//! other notification still wakes it.

use std::time::{Duration, Instant};

use courier_scheduler::wake::{self, LocalWake, Notifier, Wakeup};
use sqlx::PgPool;

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_worker_skips_the_notify_its_own_process_sent(pool: PgPool) {
    let local = LocalWake::default();
    let mut wakeup = Wakeup::connect(&pool).await.expect("listen");
    let notifier = Notifier::spawn_with(pool.clone(), Some(local.clone()));
    notifier.wake();
    // The direct wake-up is there at once.
    tokio::time::timeout(Duration::from_millis(100), local.woken()).await.expect("woken directly");
    // Its NOTIFY arrives too, and is skipped: the wait runs to its timeout.
    let begun = Instant::now();
    wakeup.wait(Duration::from_millis(700), Some(&local)).await;
    assert!(begun.elapsed() >= Duration::from_millis(650), "woke after {:?}", begun.elapsed());

    // Anyone else's notification (a replay, another process) wakes it at once.
    wake::notify(&pool).await.expect("notify");
    let begun = Instant::now();
    wakeup.wait(Duration::from_secs(5), Some(&local)).await;
    assert!(begun.elapsed() < Duration::from_secs(2), "took {:?}", begun.elapsed());

    // And a worker without a local wake-up takes this process's NOTIFY like any other.
    notifier.wake();
    let begun = Instant::now();
    wakeup.wait(Duration::from_secs(5), None).await;
    assert!(begun.elapsed() < Duration::from_secs(2), "took {:?}", begun.elapsed());
}
