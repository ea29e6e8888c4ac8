//! The delivery loop: claim due deliveries, build each filtered envelope, sign it, POST it through an SSRF-guarded
//! client, classify the outcome, and record attempts in batches.
//!
//! A worker holds nothing the database does not: killing it mid-flight loses no delivery, because an unrecorded
//! attempt's lease runs out and any worker claims it again.

mod attempt;
pub mod brokers;
pub mod client;
mod config;
mod holdings;
mod metrics;
mod pacing;
mod recorder;
mod runner;
pub mod ssrf;
pub mod stages;

pub use config::{AutoDisable, WorkerConfig};
pub use runner::Worker;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Scheduler(#[from] courier_scheduler::Error),
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
