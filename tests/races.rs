//! Races on the same rows: claims against cancel, finish and the lease sweep, round after round, several connections
//! of a real PostgreSQL. No error surfaces from a row another transaction moved or locked, and every delivery ends
//! exactly once.
//!
//! A test binary of its own, so it never runs beside the timing-sensitive integration tests (cargo runs test
//! binaries one after another): it keeps every connection busy. `make test` runs 300 rounds; `make chaos` runs
//! 3,000 (`COURIER_RACE_ROUNDS`).

use std::time::Duration;

use courier_core::{AttemptResult, Next};
use courier_scheduler::wake::Notifier;
use courier_scheduler::{AttemptRecord, ClaimedDelivery, Skip, claim, disabling, ingest, lease, record};
use sqlx::PgPool;

// The integration tests' fixture, shared by path: this binary uses a part of it.
#[allow(dead_code)]
#[path = "it/fixture.rs"]
mod fixture;

use fixture::Fixture;

/// Each round queues [`PER_ROUND`] deliveries and lets four parties at them at once.
const PER_ROUND: usize = 4;

/// Rounds of the race: `COURIER_RACE_ROUNDS`, 300 by default.
fn rounds() -> usize {
    std::env::var("COURIER_RACE_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(300)
}

fn succeeded(claimed: &ClaimedDelivery) -> AttemptRecord {
    AttemptRecord {
        delivery_id: claimed.id.clone(),
        webhook_id: claimed.webhook.id.clone(),
        attempt: claimed.attempt,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(1),
        result: AttemptResult::Response { status: 200, retry_after: None },
        error_message: None,
        response_body: None,
        signature_timestamp: 0,
        next: Next::Succeeded,
        ordered: claimed.ordered,
        handover: claimed.handover.clone(),
    }
}

/// Claims, then records a success for every other delivery it got (the rest are left to their leases).
async fn claim_and_finish(pool: &PgPool, f: &Fixture) -> Result<u64, String> {
    // A lease of nothing: what is claimed is expired at once, so the sweep races the finish for it.
    let claimed = claim(pool, &f.clock, PER_ROUND as u32, Duration::ZERO, Skip::default())
        .await
        .map_err(|e| format!("claim: {e:?}"))?;
    let records: Vec<AttemptRecord> = claimed.iter().step_by(2).map(succeeded).collect();
    let recorded = record(pool, &f.clock, &records).await.map_err(|e| format!("record: {e:?}"))?;
    Ok(recorded.updated)
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn claims_race_cancel_finish_and_the_lease_sweep_without_an_error_and_each_delivery_ends_once(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    // One attempt each: a lease that runs out is failed by the sweep, never claimed again.
    let (webhook, _) = f.webhook("http://127.0.0.1:9/hook", 1).await;
    let notifier = Notifier::spawn(pool.clone());
    let (mut finished, mut cancelled, mut failed) = (0u64, 0u64, 0u64);
    let rounds = rounds();
    for round in 0..rounds {
        let events = Fixture::call_events(&format!("r{round}x"), PER_ROUND);
        ingest::accept(&pool, &notifier, f.owner, events, None).await.expect("ingest");
        let cancel = async {
            let mut conn = pool.acquire().await.map_err(|e| format!("acquire: {e}"))?;
            // Every third round cancels the webhook's queue in the middle of it all.
            if round % 3 != 0 {
                return Ok(0);
            }
            disabling::cancel_queue(&mut conn, std::slice::from_ref(&webhook.id))
                .await
                .map_err(|e| format!("cancel: {e:?}"))
        };
        let sweep = async { lease::fail_exhausted_leases(&pool, &f.clock).await.map_err(|e| format!("sweep: {e:?}")) };
        let (a, b, c, s) = tokio::join!(claim_and_finish(&pool, &f), claim_and_finish(&pool, &f), cancel, sweep);
        for (party, result) in [("claim a", &a), ("claim b", &b), ("cancel", &c), ("sweep", &s)] {
            assert!(result.is_ok(), "round {round}, {party}: {result:?}");
        }
        finished += a.unwrap_or(0) + b.unwrap_or(0);
        cancelled += c.unwrap_or(0);
        failed += s.unwrap_or(0);
    }
    // What is left: pending rows no claim reached (claim them and finish nothing, so the sweep ends them) and leases
    // the sweep has not seen yet.
    loop {
        claim_and_finish(&pool, &f).await.expect("claim");
        failed += lease::fail_exhausted_leases(&pool, &f.clock).await.expect("sweep");
        let mut conn = pool.acquire().await.expect("conn");
        cancelled += disabling::cancel_queue(&mut conn, std::slice::from_ref(&webhook.id)).await.expect("cancel");
        if f.live_deliveries().await == 0 {
            break;
        }
    }
    let total = (rounds * PER_ROUND) as u64;
    let ended: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM deliveries GROUP BY status ORDER BY status")
            .fetch_all(&pool)
            .await
            .expect("statuses");
    // Each delivery ended once: the transitions the parties reported add up to the deliveries, and so do the rows.
    assert_eq!(finished + cancelled + failed, total, "finished {finished}, cancelled {cancelled}, failed {failed}");
    assert_eq!(ended.iter().map(|(_, n)| *n as u64).sum::<u64>(), total, "{ended:?}");
    assert!(finished > 0 && cancelled > 0 && failed > 0, "every party won some: {finished}/{cancelled}/{failed}");
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts").fetch_one(&pool).await.expect("attempts");
    assert!(attempts as u64 >= finished, "an attempt recorded for every finish");
}

/// Handed-over deliveries (written once, by their first attempt, `courier_scheduler::queue::journal`) raced by their
/// own records, a release, the journal's sweep and the lease sweep, on a lease that has run out at once: no error,
/// and every delivery is written exactly once, whoever writes it.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn handed_over_deliveries_are_written_exactly_once_whoever_races_for_them(pool: PgPool) {
    use courier_scheduler::handover::Handover;
    use courier_scheduler::queue::journal;

    let f = Fixture::new(pool.clone()).await;
    f.webhook("http://127.0.0.1:9/hook", 1).await;
    let (handover, mut handed) = Handover::new(PER_ROUND, Duration::ZERO, f.clock.clone());
    let workers = ingest::Workers { notifier: Notifier::spawn(pool.clone()), handover: Some(handover) };
    let (ingest, dispatcher) = ingest::Ingest::new(pool.clone(), workers);
    tokio::spawn(async move { dispatcher.run().await });
    let rounds = rounds() / 3;
    for round in 0..rounds {
        let events = Fixture::call_events(&format!("h{round}x"), PER_ROUND);
        ingest.submit(f.owner, events, None).await.expect("ingest");
        let mut mine = Vec::new();
        while let Ok(h) = handed.try_recv() {
            mine.push(h.delivery);
        }
        assert_eq!(mine.len(), PER_ROUND, "round {round}: every delivery handed over");
        let records: Vec<AttemptRecord> = mine.iter().step_by(2).map(succeeded).collect();
        let released: Vec<lease::Leased> = mine.iter().skip(1).step_by(2).map(ClaimedDelivery::leased).collect();
        let finish = async { record(&pool, &f.clock, &records).await.map_err(|e| format!("record: {e:?}")) };
        let release = async {
            lease::release(&pool, &f.clock, &released, Duration::ZERO).await.map_err(|e| format!("release: {e:?}"))
        };
        let recover = async { journal::recover(&pool, &f.clock).await.map_err(|e| format!("recover: {e:?}")) };
        let sweep = async { lease::fail_exhausted_leases(&pool, &f.clock).await.map_err(|e| format!("sweep: {e:?}")) };
        let (a, b, c, d) = tokio::join!(finish, release, recover, sweep);
        assert!(a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok(), "round {round}: {a:?} {b:?} {c:?} {d:?}");
    }
    // What is left: released rows (claim them and finish nothing, so the sweep ends them) and journal rows.
    loop {
        journal::recover(&pool, &f.clock).await.expect("recover");
        claim_and_finish(&pool, &f).await.expect("claim");
        lease::fail_exhausted_leases(&pool, &f.clock).await.expect("sweep");
        let journal: i64 =
            sqlx::query_scalar("SELECT count(*) FROM delivery_handovers").fetch_one(&pool).await.expect("journal");
        if f.live_deliveries().await == 0 && journal == 0 {
            break;
        }
    }
    let total = (rounds * PER_ROUND) as i64;
    let (rows, ids, ended): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE status IN ('succeeded', 'failed'))
           FROM deliveries",
    )
    .fetch_one(&pool)
    .await
    .expect("deliveries");
    assert_eq!((rows, ids, ended), (total, total, total), "each delivery written once, and ended");
}
