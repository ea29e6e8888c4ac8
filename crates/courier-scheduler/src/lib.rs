//! Courier's durable delivery queue on PostgreSQL.
//!
//! A delivery moves `pending` → `delivering` → `succeeded` | `failed` | `cancelled` (an ordered one may start
//! `waiting` for its call's earlier delivery), and a `delivering` row whose
//! lease ran out is `pending` again in all but name: the generated `due_at` column says when any row may next be
//! claimed, and the claim reads only that column through a partial index that holds live work alone.
//! Transactions here are short and never span an HTTP call: claim, commit, deliver outside, record in a batch.

pub mod activity;
pub mod clock;
pub mod disabling;
pub mod fanout;
pub mod handover;
pub mod hourly;
pub mod ingest;
pub mod logs;
mod operational;
pub mod operator;
pub mod queue;
pub mod rate;
pub mod relay;
pub mod replay;
pub mod retention;
pub mod stats;
pub mod supervise;
pub mod test_event;
pub mod wake;
pub mod webhook_changes;

use std::fmt;
use std::str::FromStr;

pub use clock::Clock;
// The queue's transitions by the names the rest of Courier has always used for them.
pub use queue::claim::{ClaimedDelivery, Skip, claim};
pub use queue::finish::{AttemptRecord, Recorded, record};
pub use queue::lease::release;
pub use queue::{claim, finish, history, lease, ordering};

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for an earlier delivery of the same call to the same webhook to end (per-call ordering).
    Waiting,
    Pending,
    Delivering,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Waiting,
        DeliveryStatus::Pending,
        DeliveryStatus::Delivering,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Waiting => "waiting",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Bound and read as PostgreSQL `text`, the column's type: SQL binds a status and reads one back as this enum,
// never as a string (`tests/architecture/main.rs::statuses_are_bound_never_written`).
impl sqlx::Type<sqlx::Postgres> for DeliveryStatus {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::postgres::PgHasArrayType for DeliveryStatus {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for DeliveryStatus {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for DeliveryStatus {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        DeliveryStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] courier_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs `statement` again (five runs at most) when PostgreSQL refused it because a row it meant to lock or update
/// was moved to another partition by a transaction that committed meanwhile (SQLSTATE 40001, "tuple to be locked was
/// already moved to another partition due to concurrent update"): a delivery that finishes or is cancelled leaves
/// `deliveries_live` for its day of the log, and then it is no longer anyone else's to take. The next run does not
/// see it. Only for statements that are whole transactions, or run under a savepoint of their own.
pub(crate) async fn retry_moved<T, F, Fut>(mut statement: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut runs = 0;
    loop {
        runs += 1;
        match statement().await {
            Err(err) if runs < 5 && moved_meanwhile(&err) => continue,
            other => return other,
        }
    }
}

fn moved_meanwhile(err: &Error) -> bool {
    match err {
        Error::Database(err) | Error::Store(courier_store::Error::Database(err)) => row_moved(err),
        Error::Store(_) => false,
    }
}

/// SQLSTATE 40001 (see [`retry_moved`]), or 40P01: two statements over the same live rows (a queue cancelled while a
/// claim or the sweep runs) locked them in opposite orders, and PostgreSQL rolled this one back to break the cycle.
pub(crate) fn row_moved(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// For `map_err`: a stored value that does not parse (see [`courier_store::Error::corrupt`]).
pub(crate) fn corrupt<E: Into<courier_store::BoxError>>(
    row: impl fmt::Display,
    column: &'static str,
) -> impl FnOnce(E) -> Error {
    let corrupt = courier_store::Error::corrupt(row, column);
    move |source| Error::Store(corrupt(source))
}
