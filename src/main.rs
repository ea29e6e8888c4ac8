use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = courier::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("courier: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(courier::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole cause chain: operators read this in a terminal or a job log.
            eprintln!("courier: {err:#}");
            ExitCode::FAILURE
        }
    }
}
