//! The `kiln` binary's library: the daemon (`kiln serve`), the admin socket
//! server that wires requests to the site's actors, and the CLI client.
//!
//! Thin by design: all behaviour lives in `kiln-actors`; this crate parses
//! arguments and config, opens the socket, and prints. `anyhow` is used only
//! here, at the binary's edge.

pub mod admin;
pub mod api;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod completions;
pub mod config;
pub mod connection;
pub mod datadir_lock;
pub mod dispatch;
pub mod fuzzing;
pub mod groups;
pub mod import;
pub mod jobfile;
pub mod layered;
pub mod limits;
pub mod logging;
pub mod member;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod reload;
pub mod serve;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes the CLI uses, for scripts.
pub mod exit {
    /// Something asked for failed (an operation, a node, a request).
    pub const FAILED: u8 = 1;
    /// The command line, an input file or a request is wrong: an unknown
    /// node, job or key, a node set that matches no node. Nothing was done.
    pub const USAGE: u8 = 2;
    /// The daemon could not be reached.
    pub const UNAVAILABLE: u8 = 3;
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let args = cli::Cli::parse();
    let daemon = match &args.command {
        cli::Command::Serve(a) => !a.check_config,
        cli::Command::Bench(_) => true,
        _ => false,
    };
    if !daemon {
        // A client that prints is killed quietly by a closed pipe
        // (`kiln node list | head`), as other Unix tools; the daemon keeps
        // Rust's default (ignored) so a vanished client never kills it.
        // SAFETY: resetting a signal's disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    commands::run(args)
}
