//! The queue: every statement that writes `deliveries`, and only here. A delivery is enqueued (`enqueue`: fan-out,
//! replays, test and operational events), claimed (`claim`), deferred by its webhook's rate limit (`defer`),
//! released or its lease expired (`lease`), finished with its attempts recorded (`finish`), cancelled with its
//! webhook (`cancel`), promoted when the delivery before it in its call ends (`ordering`), ended at the retention
//! cap or erased (`erase`), and stored by day (`history`).
//!
//! Every transition is fenced on the status it expects (and a claim's attempt number). Those with side effects (the
//! claim, record, the lease sweep, the lifetime cap) return the rows they moved, and the side effects (operational
//! events, hourly counts, the next delivery of a call, auto-disable) are computed from those rows only, so a row
//! another path moved first is never announced twice; the others (cancel, release, promote, erase) have none and
//! return counts. The rest of the crate decides what to enqueue or end (which webhooks match, which tenant is
//! erased) and calls in here to write it; a replay is the one write assembled in two places
//! ([`enqueue::push_replays`] writes what a replay is, `crate::replay` appends which rows and runs it). Checked by
//! `tests/architecture/main.rs::every_table_is_written_only_by_its_owner` (the `deliveries` row of `OWNERS`).

pub mod cancel;
pub mod claim;
pub mod defer;
pub mod enqueue;
pub mod erase;
pub mod finish;
pub mod history;
pub mod journal;
pub mod lease;
pub mod ordering;
pub mod record;
