//! `lodestone`: a trackerless BitTorrent client.
//!
//! This crate only wires the library crates to a command line: argument
//! parsing, logging, progress output and exit codes. Protocol code lives in
//! the libraries.

mod args;
mod failure;
mod inspect;
mod logging;
mod output;
mod units;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
