//! The `courier` binary's library: configuration, telemetry, the embedded development database, the CLI.
//! Integration tests in `tests/` and benchmarks in `benches/` use it to start Courier in-process.

pub mod app;
pub mod cli;
pub mod commands;
pub mod embedded_db;
pub mod kafka_ingest;
pub mod metrics;
pub mod private_file;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
