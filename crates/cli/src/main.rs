//! `lodestone`: a BitTorrent client that needs no tracker.
//!
//! This crate only wires the library crates to a command line: argument
//! parsing, logging, progress output and exit codes. Protocol code lives in
//! the libraries.

mod args;
mod bootstrap;
mod dht_cmd;
mod download_cmd;
mod failure;
mod inspect;
mod logging;
mod metadata_cmd;
mod node_cmd;
mod output;
mod progress_view;
mod rate;
mod selection;
mod shown;
mod state_dir;
mod status;
mod stop_signal;
mod target;
mod torrent_view;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let result = match cli.command {
        Command::Inspect(args) => runtime().and_then(|rt| rt.block_on(inspect::run(&args))),
        Command::Download(args) => runtime().and_then(|rt| rt.block_on(download_cmd::run(args))),
        Command::Metadata(args) => runtime().and_then(|rt| rt.block_on(metadata_cmd::run(args))),
        Command::Dht(command) => runtime().and_then(|rt| rt.block_on(dht_cmd::run(command))),
        Command::Node(args) => runtime().and_then(|rt| rt.block_on(node_cmd::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// The async runtime for commands that do network IO.
fn runtime() -> Result<tokio::runtime::Runtime, failure::Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            failure::Failure::Failed(
                anyhow::Error::new(e).context("cannot start the async runtime"),
            )
        })
}
