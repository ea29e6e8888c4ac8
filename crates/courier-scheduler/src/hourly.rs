//! Finished deliveries per webhook and hour (`delivery_hourly`), counted in the transaction that finishes them,
//! so the portal's overview reads a few dozen rows per webhook instead of a day of deliveries.

use sqlx::{PgConnection, PgPool};

use crate::{DeliveryStatus, Result};

/// How long the counts are kept: the overview shows 24 hours.
const KEPT: &str = "2 days";

/// The statement that adds finished deliveries to the current hour, for `concat!`: `$from` names a relation of
/// `(webhook_id, status)` rows, spelled as SQL; `$succeeded` and `$failed` the parameters that bind those two
/// statuses. Other statuses are not counted. Rows are locked in webhook order, so concurrent recorders cannot
/// deadlock on them. [`add`] runs it; the record statement (`queue::record`) embeds it as a CTE.
macro_rules! count_finished {
    ($from:literal, $succeeded:literal, $failed:literal) => {
        concat!(
            "INSERT INTO delivery_hourly AS h (webhook_id, hour, succeeded, failed)
             SELECT f.webhook_id, date_trunc('hour', now()),
                    count(*) FILTER (WHERE f.status = ",
            $succeeded,
            "), count(*) FILTER (WHERE f.status = ",
            $failed,
            ")
               FROM (SELECT * FROM ",
            $from,
            ") AS f
              WHERE f.status IN (",
            $succeeded,
            ", ",
            $failed,
            ")
              GROUP BY f.webhook_id ORDER BY f.webhook_id
             ON CONFLICT (webhook_id, hour) DO UPDATE
                SET succeeded = h.succeeded + EXCLUDED.succeeded, failed = h.failed + EXCLUDED.failed"
        )
    };
}
pub(crate) use count_finished;

/// Adds deliveries that just finished (each webhook and its new status, as the finishing statement returned them)
/// to the current hour ([`count_finished`]).
pub async fn add(conn: &mut PgConnection, finished: &[(String, DeliveryStatus)]) -> Result<()> {
    let (webhooks, statuses): (Vec<&str>, Vec<DeliveryStatus>) =
        finished.iter().map(|(w, s)| (w.as_str(), *s)).filter(|(_, s)| is_counted(*s)).unzip();
    if webhooks.is_empty() {
        return Ok(());
    }
    sqlx::query(count_finished!("unnest($1::text[], $2::text[]) AS u(webhook_id, status)", "$3", "$4"))
        .bind(&webhooks)
        .bind(&statuses)
        .bind(DeliveryStatus::Succeeded)
        .bind(DeliveryStatus::Failed)
        .execute(conn)
        .await?;
    Ok(())
}

fn is_counted(status: DeliveryStatus) -> bool {
    matches!(status, DeliveryStatus::Succeeded | DeliveryStatus::Failed)
}

/// Forgets hours older than the overview can show; the retention loop calls it.
pub async fn prune(pool: &PgPool) -> Result<u64> {
    let done =
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM delivery_hourly WHERE hour < now() - interval '{KEPT}'")))
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}
