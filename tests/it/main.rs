//! All of the `courier` package's integration tests, in one binary so they link once.

mod abuse;
pub(crate) mod api;
mod app;
mod cli;
mod e2e;
mod expiry;
mod fairness;
pub(crate) mod fixture;
mod handover;
mod headers;
pub(crate) mod history;
pub(crate) mod hostile;
pub(crate) mod hostile_receiver;
pub(crate) mod lifecycle;
mod neighbours;
mod operational;
mod ordering;
pub(crate) mod pipeline;
mod rate_limit;
mod receiver;
mod recorder;
mod replays;
mod retention;
mod support;
mod wake;
mod worker_loop;
