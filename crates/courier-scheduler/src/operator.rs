//! The operator's view of the queue, across tenants, for the CLI: the delivery log of every tenant (or one), and
//! bulk replay over it. Tenants reach the same reads only through the `Owner`-scoped functions (`logs::page`,
//! `logs::list`, `logs::get`, `replay::count_bulk`); the API crate may not name this module
//! (`tests/architecture/main.rs::the_api_reaches_no_operator_or_system_only_functions`).

use courier_core::{DeliveryId, TenantId, TraceParent};
use sqlx::{PgExecutor, PgPool};

use crate::Result;
use crate::logs::{self, Attempt, Delivery, DeliveryFilter, Visibility};
use crate::replay;

/// Newest first, of `tenant` or of every tenant.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    tenant: Option<TenantId>,
    filter: &DeliveryFilter,
    limit: u32,
) -> Result<Vec<Delivery>> {
    logs::list_visible(db, Visibility::Operator { tenant }, filter, None, limit).await
}

/// One delivery of any tenant, with every attempt.
pub async fn delivery(db: &PgPool, id: &DeliveryId) -> Result<Option<(Delivery, Vec<Attempt>)>> {
    logs::get_visible(db, Visibility::Operator { tenant: None }, id).await
}

/// Replays every candidate of `tenant` (or every tenant) matching `filter`, in the caller's time; see
/// [`replay::replay_bulk`].
pub async fn replay_bulk(
    pool: &PgPool,
    tenant: Option<TenantId>,
    filter: &DeliveryFilter,
    dry_run: bool,
    trace: Option<TraceParent>,
    progress: impl FnMut(u64),
) -> Result<u64> {
    replay::replay_bulk(pool, Visibility::Operator { tenant }, filter, dry_run, trace, progress).await
}
