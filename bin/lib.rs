//! The `kiln` binary's library: the daemon (`kiln serve`), the admin socket
//! server that wires requests to the site's actors, and the CLI client.
//!
//! Thin by design: all behaviour lives in `kiln-actors`; this crate parses
//! arguments and config, opens the socket, and prints. `anyhow` is used only
//! here, at the binary's edge.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod dispatch;
pub mod fuzzing;
pub mod import;
pub mod jobfile;
pub mod output;
pub mod serve;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes the CLI uses, for scripts.
pub mod exit {
    /// Something asked for failed (an operation, a node, a request).
    pub const FAILED: u8 = 1;
    /// The command line or an input file is wrong.
    pub const USAGE: u8 = 2;
    /// The daemon could not be reached.
    pub const UNAVAILABLE: u8 = 3;
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let args = cli::Cli::parse();
    commands::run(args)
}
