//! `kiln exec`, `kiln copy` and `kiln rcopy`: commands and copies fanned
//! out over a node set (clush's model), printed as the nodes print or
//! gathered at the end; the exit code is the largest of the nodes'.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use kiln_actors::exec::{ExecOutcome, RunOptions};
use kiln_actors::protocol::{Live, Request, Response};

use super::{Failure, call, connect, unexpected, usage};
use crate::cli::{Command, CopyArgs, ExecArgs, FanoutArgs, RcopyArgs, WorkerKind};
use crate::connection::Connection;
use crate::output;

/// Whether the command prints JSON lines (and so its errors as one).
pub(super) fn json_lines(command: &Command) -> bool {
    let fanout = match command {
        Command::Exec(e) => &e.fanout,
        Command::Copy(c) => &c.fanout,
        Command::Rcopy(c) => &c.fanout,
        _ => return false,
    };
    fanout.json_lines
}

/// `kiln exec`: one command on every node.
pub(super) async fn exec(e: ExecArgs, socket: &Path, json: bool) -> Result<(), Failure> {
    let print = Print::of(&e.fanout, json, e.gather)?;
    let spec = exec_spec(&e.fanout, e.command.join(" "))?;
    let options = RunOptions { stdin: read_stdin(e.no_stdin)?, total_timeout: total_timeout(&e.fanout)? };
    let request = Request::Exec { nodes: e.fanout.nodes.clone(), spec, options, live: print.live() };
    fanout(&mut connect(socket).await?, request, print).await
}

/// `kiln copy`: a local file or tree copied to every node.
pub(super) async fn copy(c: CopyArgs, socket: &Path, json: bool) -> Result<(), Failure> {
    let print = Print::of(&c.fanout, json, true)?;
    let source = std::fs::canonicalize(&c.source)
        .with_context(|| format!("cannot read {}", c.source.display()))
        .map_err(Failure::Usage)?;
    if source.is_dir() && !c.recursive {
        return Err(usage(format_args!("{} is a directory; add -r to copy it with what it holds", c.source.display())));
    }
    let source = utf8(&source)?;
    let spec = copy_spec(&c.fanout, source, c.dest.clone(), c.recursive, false)?;
    let options = RunOptions { stdin: None, total_timeout: total_timeout(&c.fanout)? };
    let request = Request::Copy { nodes: c.fanout.nodes.clone(), spec, options, live: print.live() };
    fanout(&mut connect(socket).await?, request, print).await
}

/// `kiln rcopy`: a file or tree gathered from every node into a local
/// directory, as `NAME.node`.
pub(super) async fn rcopy(c: RcopyArgs, socket: &Path, json: bool) -> Result<(), Failure> {
    let print = Print::of(&c.fanout, json, true)?;
    let dest = std::fs::canonicalize(&c.dest).ok().filter(|d| d.is_dir()).ok_or_else(|| {
        usage(format_args!(
            "{} is not a local directory; kiln rcopy puts each node's copy in one, as NAME.node",
            c.dest.display()
        ))
    })?;
    let dest = utf8(&dest)?;
    let spec = copy_spec(&c.fanout, c.source.clone(), dest, c.recursive, true)?;
    spec.validate().map_err(|e| Failure::Usage(e.into()))?;
    let options = RunOptions { stdin: None, total_timeout: total_timeout(&c.fanout)? };
    let request = Request::Copy { nodes: c.fanout.nodes.clone(), spec, options, live: print.live() };
    fanout(&mut connect(socket).await?, request, print).await
}

/// How a fanout command prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Print {
    /// `node: line` as the lines come (clush's default).
    Lines,
    /// Identical outputs gathered at the end (`-b`, dshbak -c).
    Gathered,
    /// One JSON document at the end (`--json`).
    Json,
    /// A JSON object per node as it ends (`--json-lines`).
    JsonLines,
}

impl Print {
    fn of(f: &FanoutArgs, json: bool, gather: bool) -> Result<Print, Failure> {
        Ok(match (json, f.json_lines) {
            (true, true) => {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--json and --json-lines are two output formats; pick one"
                )));
            }
            (true, false) => Print::Json,
            (false, true) => Print::JsonLines,
            (false, false) if gather => Print::Gathered,
            (false, false) => Print::Lines,
        })
    }

    /// What the daemon is asked to stream for it.
    fn live(self) -> Live {
        match self {
            Print::Lines => Live::Lines,
            Print::JsonLines => Live::Outcomes,
            Print::Gathered | Print::Json => Live::AtEnd,
        }
    }
}

/// Runs a fanout command and prints it as `print` says; its exit code is
/// the largest of the nodes' (clush -S).
async fn fanout(conn: &mut Connection, request: Request, print: Print) -> Result<(), Failure> {
    let outcomes = match print {
        Print::Gathered | Print::Json => match call(conn, request).await? {
            Response::Exec(o) => o,
            other => return Err(unexpected(other)),
        },
        Print::Lines | Print::JsonLines => {
            conn.send_request(&request).await?;
            let mut ended: Vec<(usize, ExecOutcome)> = Vec::new();
            loop {
                match conn.next_response().await? {
                    Response::ExecLines(lines) => output::live_lines(&lines),
                    Response::ExecNode { index, outcome } => {
                        if print == Print::JsonLines {
                            let line = serde_json::to_string(&outcome).map_err(|e| Failure::Other(e.into()))?;
                            println!("{line}");
                        } else {
                            output::node_end(&outcome);
                        }
                        ended.push((index, outcome));
                    }
                    Response::Done => break,
                    Response::Error(e) => return Err(Failure::Refused(e)),
                    other => return Err(unexpected(other)),
                }
            }
            ended.sort_by_key(|(index, _)| *index);
            ended.into_iter().map(|(_, o)| o).collect()
        }
    };
    match print {
        Print::Json => output::json(&outcomes),
        Print::Gathered => output::gathered(&outcomes),
        Print::Lines | Print::JsonLines => {}
    }
    match kiln_actors::exec::overall_exit(&outcomes) {
        0 => Ok(()),
        code => Err(Failure::Exit(code.clamp(1, 255) as u8)),
    }
}

/// The standard input for every node: read whole, unless `--no-stdin` or
/// it is a terminal; refused above [`kiln_actors::exec::MAX_STDIN`].
fn read_stdin(no_stdin: bool) -> Result<Option<Vec<u8>>, Failure> {
    use std::io::Read;
    let stdin = std::io::stdin();
    if no_stdin || stdin.is_terminal() {
        return Ok(None);
    }
    let max = kiln_actors::exec::MAX_STDIN;
    let mut data = Vec::new();
    stdin
        .lock()
        .take(max as u64 + 1)
        .read_to_end(&mut data)
        .context("cannot read standard input")
        .map_err(Failure::Usage)?;
    if data.len() > max {
        return Err(Failure::Usage(anyhow::anyhow!(
            "standard input is larger than {} MiB, the most kiln exec sends to every node; \
             copy large data with kiln copy, or pass --no-stdin",
            max >> 20
        )));
    }
    Ok((!data.is_empty()).then_some(data))
}

fn total_timeout(f: &FanoutArgs) -> Result<Option<std::time::Duration>, Failure> {
    f.timeout_total.map(|t| seconds("total timeout", t)).transpose()
}

/// A path as the daemon gets it: UTF-8.
fn utf8(path: &Path) -> Result<String, Failure> {
    path.to_str()
        .map(String::from)
        .ok_or_else(|| Failure::Usage(anyhow::anyhow!("{} is not a UTF-8 path", path.display())))
}

/// The settings of `kiln copy` / `kiln rcopy`.
fn copy_spec(
    f: &FanoutArgs,
    source: String,
    dest: String,
    recursive: bool,
    pull: bool,
) -> Result<kiln_actors::exec::CopySpec, Failure> {
    let base = exec_spec(f, String::new())?;
    Ok(kiln_actors::exec::CopySpec {
        worker: base.worker,
        source,
        dest,
        recursive,
        pull,
        fanout: base.fanout,
        connect_timeout: base.connect_timeout,
        command_timeout: base.command_timeout,
    })
}

/// Seconds given on the command line, as a duration.
fn seconds(what: &str, v: f64) -> Result<std::time::Duration, Failure> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(std::time::Duration::from_secs_f64(v))
    } else {
        Err(Failure::Usage(anyhow::anyhow!("{what} {v}: expected seconds between 0 and 86400")))
    }
}

/// The fanout settings of `kiln exec` / `kiln copy`.
fn exec_spec(f: &FanoutArgs, command: String) -> Result<kiln_actors::exec::ExecSpec, Failure> {
    let secs = seconds;
    if f.fanout == 0 {
        return Err(Failure::Usage(anyhow::anyhow!("fanout must be at least 1")));
    }
    let worker = match f.worker {
        WorkerKind::Exec => kiln_actors::exec::Worker::Exec,
        WorkerKind::Ssh => kiln_actors::exec::Worker::Ssh {
            options: f.options.as_deref().unwrap_or("").split_whitespace().map(String::from).collect(),
        },
    };
    Ok(kiln_actors::exec::ExecSpec {
        worker,
        command,
        fanout: f.fanout,
        connect_timeout: secs("connect timeout", f.connect_timeout)?,
        command_timeout: f.command_timeout.map(|t| secs("command timeout", t)).transpose()?,
    })
}
