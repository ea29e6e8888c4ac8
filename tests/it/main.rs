//! All of the `courier` package's integration tests, in one binary so they link once.

mod cli;
mod pipeline;
mod receiver;
mod support;
