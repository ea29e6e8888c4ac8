//! The queue: every statement that writes `deliveries`, and only here. A delivery is enqueued (`enqueue`: fan-out,
//! replays, test and operational events), claimed (`claim`), deferred by its webhook's rate limit (`defer`),
//! released or its lease expired (`lease`), finished with its attempts recorded (`finish`), cancelled with its
//! webhook (`cancel`), promoted when the delivery before it in its call ends (`ordering`), ended at the retention
//! cap or erased (`erase`), and stored by day (`history`).
//!
//! Every transition is one fenced statement (on the status it expects, and a claim's attempt number) that returns
//! the rows it moved; its side effects (operational events, hourly counts, the next delivery of a call,
//! auto-disable) are computed from those rows only, so a row another path moved first is never announced twice.
//! The rest of the crate decides what to enqueue or end (which webhooks match, which deliveries a replay picks,
//! which tenant is erased) and calls in here to write it. Checked by
//! `tests/architecture/main.rs::every_table_is_written_only_by_its_owner` (the `deliveries` row of `OWNERS`).

pub mod cancel;
pub mod claim;
pub mod defer;
pub mod enqueue;
pub mod erase;
pub mod finish;
pub mod history;
pub mod lease;
pub mod ordering;
