//! Runs a parsed command line: `serve` starts the daemon, `nodeset` and
//! `store backup` work locally, everything else talks to the daemon over a
//! [`Connection`].
//!
//! One module per command family, as mini-redis has one file per command:
//! each takes its family's parsed arguments, checks what can be checked
//! locally before connecting, sends its requests and prints the answers
//! (tables for people, `--json` for scripts). Adding a verb touches its
//! family's module and the protocol, not a shared `match` over every
//! command. What all families share is here: [`Failure`] and its exit
//! codes, and [`call`].

mod events;
mod exec;
mod job;
mod member;
mod node;
mod nodeset;
mod periodic;
mod port;
mod queue;
mod status;
mod store;
mod wait;

use std::path::Path;
use std::process::ExitCode;

use kiln_actors::KilnError;
use kiln_actors::protocol::{Request, Response};

use crate::cli::{Cli, Command, ServeArgs, StoreCommand};
use crate::config::socket_path;
use crate::connection::{Connection, ConnectionError};
use crate::{exit, output};

/// Why a command did not succeed, and with which exit code.
#[derive(Debug)]
enum Failure {
    /// Bad arguments or input file: nothing was sent.
    Usage(anyhow::Error),
    /// The daemon could not be reached.
    Unavailable(ConnectionError),
    /// The daemon answered with an error.
    Refused(KilnError),
    /// Some of the nodes failed (already printed).
    Partial,
    /// A fanout command's largest exit code (already printed).
    Exit(u8),
    Other(anyhow::Error),
}

impl From<ConnectionError> for Failure {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::Connect { .. } => Failure::Unavailable(e),
            other => Failure::Other(other.into()),
        }
    }
}

/// A usage failure with this message.
fn usage(message: impl std::fmt::Display) -> Failure {
    Failure::Usage(anyhow::anyhow!("{message}"))
}

/// Runs the command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    // Errors of a fanout printing JSON lines are a JSON line too.
    let json_lines = exec::json_lines(&cli.command);
    let result = match cli.command {
        Command::Serve(args) => {
            let args = ServeArgs { socket: cli.socket, ..args };
            if args.check_config {
                return crate::config::check(&args, json);
            }
            return crate::serve::run(args);
        }
        Command::Store(StoreCommand::Backup { dest, config, data_dir }) => {
            store::backup(ServeArgs { config, data_dir, ..Default::default() }, &dest, json)
        }
        Command::Completions { shell } => return crate::completions::completions(shell),
        Command::Manpage { out_dir } => return crate::completions::manpage(out_dir.as_deref()),
        Command::Bench(args) => return crate::bench::run(args, json),
        Command::Nodeset(args) => nodeset::run(args, json),
        command => {
            let socket = socket_path(cli.socket.as_deref());
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(remote(command, &socket, json)),
                Err(e) => Err(Failure::Other(e.into())),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f, json, json_lines),
    }
}

/// A command the daemon answers, handed to its family.
async fn remote(command: Command, socket: &Path, json: bool) -> Result<(), Failure> {
    match command {
        Command::Status => status::run(socket, json).await,
        Command::Node(n) => node::run(n, socket, json).await,
        Command::Port(p) => port::run(p, socket, json).await,
        Command::Job(j) => job::run(j, socket, json).await,
        Command::Queue(q) => queue::run(q, socket, json).await,
        Command::Member(m) => member::run(m, socket, json).await,
        Command::Periodic(p) => periodic::run(p, socket, json).await,
        Command::Events { follow, nodes, kinds, since } => {
            events::run(Request::Events { follow, nodes, kinds, since }, socket, json).await
        }
        Command::Exec(e) => exec::exec(e, socket, json).await,
        Command::Copy(c) => exec::copy(c, socket, json).await,
        Command::Rcopy(c) => exec::rcopy(c, socket, json).await,
        Command::Serve(_)
        | Command::Bench(_)
        | Command::Nodeset(_)
        | Command::Store(_)
        | Command::Completions { .. }
        | Command::Manpage { .. } => unreachable!("run answers the local commands"),
    }
}

fn report(f: Failure, json: bool, json_lines: bool) -> ExitCode {
    let (code, kind, message) = match &f {
        Failure::Usage(e) => (exit::USAGE, "usage", format!("{e:#}")),
        Failure::Unavailable(e) => (exit::UNAVAILABLE, "unavailable", e.to_string()),
        // An unknown node, job or key and a request the daemon found
        // malformed are bad input, as a bad command line is: nothing was done.
        Failure::Refused(e @ (KilnError::NotFound(_) | KilnError::InvalidInput(_))) => {
            (exit::USAGE, e.kind(), e.to_string())
        }
        Failure::Refused(e) => (exit::FAILED, e.kind(), e.to_string()),
        Failure::Partial => return ExitCode::from(exit::FAILED),
        Failure::Exit(code) => return ExitCode::from(*code),
        Failure::Other(e) => (exit::FAILED, "error", format!("{e:#}")),
    };
    let doc = serde_json::json!({ "error": { "kind": kind, "message": message } });
    if json_lines {
        println!("{doc}");
    } else if json {
        output::json(&doc);
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}

/// Connects to the daemon and says hello.
async fn connect(socket: &Path) -> Result<Connection, Failure> {
    Ok(Connection::connect(socket).await?)
}

/// Sends one request and returns the answer, turning an error answer into a
/// failure.
async fn call(conn: &mut Connection, req: Request) -> Result<Response, Failure> {
    match conn.call(&req).await? {
        Response::Error(e) => Err(Failure::Refused(e)),
        other => Ok(other),
    }
}

/// Connects, sends one request and returns its answer.
async fn call_once(socket: &Path, req: Request) -> Result<Response, Failure> {
    call(&mut connect(socket).await?, req).await
}

fn unexpected(r: Response) -> Failure {
    Failure::Other(anyhow::anyhow!("unexpected answer from the daemon: {r:?}"))
}

/// Prints `value` as JSON for scripts, or as `text` prints it for people.
fn print<T: serde::Serialize + ?Sized>(json: bool, value: &T, text: impl FnOnce(&T)) {
    if json { output::json(value) } else { text(value) }
}
