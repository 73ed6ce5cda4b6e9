//! `engram`: the daemon and its command-line interface.

mod bench;
mod bench_experience;
mod bench_mcp;
mod bench_memory;
mod bench_plugins;
mod bench_search;
mod cli;
mod connect;
mod doctor;
mod generate;
mod insights;
mod logging;
mod mcp_stdio;
mod memory;
mod plot;
mod plugins;
mod rag;
mod serve;
mod tenant;

use engram_services::models;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
