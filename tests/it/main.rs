//! All of the `courier` package's integration tests, in one binary so they link once.

mod api;
mod app;
mod cli;
mod e2e;
mod fairness;
pub(crate) mod hostile;
pub(crate) mod hostile_receiver;
mod lifecycle;
pub(crate) mod pipeline;
mod receiver;
mod recorder;
mod retention;
mod support;
