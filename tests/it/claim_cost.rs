//! A claim reads about what it returns, even when the queue's statistics are out of date: the case that made claims
//! of 40–110 ms in the batch benchmark (a burst into a queue analyzed while it was empty).

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::fixture::Fixture;

/// Rows the queue's table handed to scans so far (sequential, index and bitmap), as the statistics see them after
/// this connection's own counts are flushed.
async fn rows_read(pool: &PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(pool).await.expect("flush");
    sqlx::query_scalar(
        "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables
          WHERE relname = 'deliveries_live'",
    )
    .fetch_one(pool)
    .await
    .expect("statistics")
}

/// A queue whose statistics say one row (analyzed then, autovacuum off) and that holds 20,001 due rows of one
/// tenant; and a pool of one connection, so the statements' counts are that connection's and flushed by it.
async fn stale_queue(f: &Fixture) -> PgPool {
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    f.ingest().await;
    for sql in [
        "ALTER TABLE deliveries_live SET (autovacuum_enabled = false)",
        "ANALYZE deliveries_live",
        // Copies of the one delivery with new ids (`due_at` is generated, so the columns are named).
        "DO $$ DECLARE cols text; BEGIN
           SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) INTO cols
             FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'deliveries_live' AND is_generated = 'NEVER'
              AND column_name <> 'id';
           EXECUTE format('INSERT INTO deliveries_live (id, %s) SELECT courier_id(''dlv_''), %s
                             FROM deliveries_live, generate_series(1, 20000)', cols, cols);
         END $$",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&f.pool).await.expect(sql);
    }
    PgPoolOptions::new().max_connections(1).connect_with((*f.pool.connect_options()).clone()).await.expect("pool")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_claim_on_stale_statistics_reads_about_what_it_returns(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let one = stale_queue(&f).await;
    let before = rows_read(&one).await;
    let claimed = courier_scheduler::claim(&one, &f.clock, 8, std::time::Duration::from_secs(30), Default::default())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 8);
    let read = rows_read(&one).await - before;
    // The oldest due rows, the tenant's head, the locked candidates and the updated rows: tens, where a bitmap scan
    // of the tenant's rows or a sequential scan of the queue reads all 20,001.
    assert!(read < 1000, "the claim read {read} rows of the queue for 8");
}

/// The record's fenced update finds its rows by key, on the generic plan a small batch keeps for its connection's
/// life even when that plan was made while the queue was small.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_record_on_a_plan_made_for_a_small_queue_reads_about_what_it_moves(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    for _ in 0..4 {
        f.ingest().await;
    }
    let one =
        PgPoolOptions::new().max_connections(1).connect_with((*f.pool.connect_options()).clone()).await.expect("pool");
    let claimed = courier_scheduler::claim(&one, &f.clock, 4, std::time::Duration::from_secs(30), Default::default())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    let ok = courier_core::AttemptResult::Response { status: 200, retry_after: None };
    let records: Vec<_> =
        claimed.iter().map(|d| crate::recorder::attempt_of(d, ok, courier_core::Next::Succeeded)).collect();
    // The first record makes the connection's plan while the queue holds a few rows.
    assert_eq!(courier_scheduler::record(&one, &f.clock, &records[..2]).await.expect("record").updated, 2);
    // Then the queue grows to 20,000 rows.
    let cols = "tenant_id, environment, event_id, webhook_id, event_type, call_id, max_attempts, event_received_at";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deliveries_live (id, status, next_attempt_at, {cols})
         SELECT courier_id('dlv_'), 'pending', now(), {cols}
           FROM (SELECT * FROM deliveries_live LIMIT 1) d, generate_series(1, 20000)"
    )))
    .execute(&f.pool)
    .await
    .expect("grow the queue");
    let before = rows_read(&one).await;
    assert_eq!(courier_scheduler::record(&one, &f.clock, &records[2..]).await.expect("record").updated, 2);
    let read = rows_read(&one).await - before;
    assert!(read < 1000, "the record read {read} rows of the queue for 2");
}
