//! What the queue looks like right now, for `/metrics` and operators.

use sqlx::PgExecutor;

use crate::Result;

/// The queue as operators watch it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Deliveries that may be claimed now (pending and due, or leased and expired).
    pub due: i64,
    /// Deliveries waiting for a later attempt or held by a live lease.
    pub scheduled: i64,
    /// How long the oldest due delivery has waited, in seconds.
    pub lag_seconds: f64,
}

/// Reads [`QueueStats`] through the claim's partial index and the handover's journal, so it costs nothing in
/// finished rows.
pub async fn queue_stats(db: impl PgExecutor<'_>) -> Result<QueueStats> {
    let (due, scheduled, lag): (i64, i64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE due_at <= now()),
                count(*) FILTER (WHERE due_at > now()),
                COALESCE(extract(epoch FROM now() - min(due_at) FILTER (WHERE due_at <= now()))::float8, 0)
         FROM (SELECT due_at FROM deliveries_live WHERE due_at IS NOT NULL
               UNION ALL
               -- Handed over in memory and not written yet: held by the handover's lease (`queue::journal`).
               SELECT h.lease_expires_at FROM delivery_handovers h, unnest(h.delivery_ids) AS x(id)
                WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)) q",
    )
    .fetch_one(db)
    .await?;
    Ok(QueueStats { due, scheduled, lag_seconds: lag })
}
