//! Runs a parsed command line: `serve` starts the daemon, `nodeset` works
//! locally, everything else is one or more requests over the admin socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_actors::exec::{ExecOutcome, RunOptions};
use kiln_actors::node::parse_power_action;
use kiln_actors::nodeset::NodeSet;
use kiln_actors::protocol::{Live, Request, Response};
use std::io::IsTerminal;

use kiln_actors::jobs::{JobView, NodeResult};
use kiln_actors::{KilnError, NewNode, NewPortGroup, NodeUpdate, Op, Verb};
use kiln_store::{BootDevice, JobId, JobStatus, ProvisionState};

use crate::cli::*;
use crate::connection::{Connection, ConnectionError, socket_path};
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

/// Runs the command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    // Errors of a fanout printing JSON lines are a JSON line too.
    let json_lines = fanout_args(&cli.command).is_some_and(|f| f.json_lines);
    let result = match cli.command {
        Command::Serve(args) => {
            let args = ServeArgs { socket: cli.socket, ..args };
            if args.check_config {
                return crate::config::check(&args, json);
            }
            return crate::serve::run(args);
        }
        Command::Store(StoreCommand::Backup { dest, config, data_dir }) => {
            backup(ServeArgs { config, data_dir, ..Default::default() }, &dest, json)
        }
        Command::Completions { shell } => return crate::completions::completions(shell),
        Command::Manpage { out_dir } => return crate::completions::manpage(out_dir.as_deref()),
        Command::Bench(args) => return crate::bench::run(args, json),
        Command::Nodeset(args) => nodeset(args, json),
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

fn nodeset(args: NodesetArgs, json: bool) -> Result<(), Failure> {
    let groups = match &args.config {
        Some(path) => crate::config::groups_of(path).map_err(Failure::Usage)?,
        None => Default::default(),
    };
    let parse = |expr: &str| {
        NodeSet::parse_with(expr, &|g| groups.get(g).cloned())
            .map_err(|e| Failure::Usage(anyhow::anyhow!("node set '{expr}': {e}")))
    };
    let mut set = NodeSet::new();
    for expr in &args.sets {
        set = set.union(&parse(expr)?);
    }
    for expr in &args.intersection {
        set = set.intersection(&parse(expr)?);
    }
    for expr in &args.exclude {
        set = set.difference(&parse(expr)?);
    }
    // Every group as a node set, for -l and -r.
    let named = || -> Result<Vec<(String, NodeSet)>, Failure> {
        groups.keys().map(|name| Ok((name.clone(), parse(&format!("@{name}"))?))).collect()
    };
    if args.list > 0 {
        let filtered = !args.sets.is_empty() || !args.intersection.is_empty() || !args.exclude.is_empty();
        let rows: Vec<(String, NodeSet)> = named()?
            .into_iter()
            .map(|(name, nodes)| if filtered { (name, nodes.intersection(&set)) } else { (name, nodes) })
            .filter(|(_, nodes)| !filtered || !nodes.is_empty())
            .collect();
        if json {
            let doc: Vec<serde_json::Value> = rows
                .iter()
                .map(|(name, nodes)| serde_json::json!({ "group": name, "nodes": nodes.fold(), "count": nodes.len() }))
                .collect();
            output::json(&doc);
        }
        for (name, nodes) in rows.iter().filter(|_| !json) {
            match args.list {
                1 => println!("@{name}"),
                2 => println!("@{name} {}", nodes.fold()),
                _ => println!("@{name} {} {}", nodes.fold(), nodes.len()),
            }
        }
    } else if args.regroup {
        let text = set.regroup(&named()?);
        if json { output::json(&text) } else { println!("{text}") }
    } else if args.expand {
        let names: Vec<String> = set.iter().collect();
        let separator = args.separator.as_deref().map(unescape).unwrap_or_else(|| " ".into());
        if json { output::json(&names) } else { println!("{}", names.join(&separator)) }
    } else if args.fold {
        if json { output::json(&set.fold()) } else { println!("{}", set.fold()) }
    } else if json {
        output::json(&set.len())
    } else {
        println!("{}", set.len())
    }
    Ok(())
}

/// `\n`, `\t` and `\\` in a separator, as ClusterShell's `nodeset -S` reads them.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            other => {
                out.push('\\');
                out.extend(other);
            }
        }
    }
    out
}

/// `kiln store backup`: the data dir resolved as the daemon resolves it.
fn backup(args: ServeArgs, dest: &Path, json: bool) -> Result<(), Failure> {
    let cfg = crate::config::load(&args).map_err(Failure::Usage)?;
    let src = cfg.site.database_path();
    let info = kiln_store::backup_sqlite(&src, dest).map_err(|e| Failure::Other(anyhow::Error::new(e)))?;
    if json {
        output::json(&serde_json::json!({
            "source": src.display().to_string(),
            "backup": dest.display().to_string(),
            "schema_version": info.schema_version,
            "nodes": info.nodes,
            "jobs": info.jobs,
            "bytes": info.bytes,
        }));
    } else {
        println!(
            "backed up {} to {}: {} nodes, {} jobs, schema version {}, {} bytes, integrity ok",
            src.display(),
            dest.display(),
            info.nodes,
            info.jobs,
            info.schema_version,
            info.bytes
        );
    }
    Ok(())
}

/// Parses `K=V` arguments.
fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>, Failure> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::Usage(anyhow::anyhow!("{what} '{item}' is not K=V"))),
        })
        .collect()
}

fn read_password(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))
        .map_err(Failure::Usage)?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a node import file: a JSON or YAML list of nodes.
fn read_import(path: &Path) -> anyhow::Result<Vec<NewNode>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::import::parse_node_list(&text).with_context(|| format!("{} is not a valid import file", path.display()))
}

/// Sends one request and returns the answer, turning an error answer into a
/// failure.
async fn call(client: &mut Connection, req: Request) -> Result<Response, Failure> {
    match client.call(&req).await? {
        Response::Error(e) => Err(Failure::Refused(e)),
        other => Ok(other),
    }
}

fn unexpected(r: Response) -> Failure {
    Failure::Other(anyhow::anyhow!("unexpected answer from the daemon: {r:?}"))
}

/// What a remote command does with the daemon.
enum Remote {
    /// One request, one printed answer.
    Once(Request),
    /// Submit a job; with `wait`, follow it to its end and print it
    /// (per-node results for a bulk verb).
    Job {
        request: Request,
        wait: bool,
        bulk: bool,
    },
    /// Submit several jobs at once; with `wait`, follow each to its end.
    Jobs {
        request: Request,
        wait: bool,
    },
    /// Follow an existing job's log.
    Watch(JobId),
    /// Archive a job and say so.
    Archive(JobId),
    /// Change a job's priority and say so.
    Priority(JobId, i32),
    /// List jobs; with a `limit`, ask for one more to tell whether there
    /// are more, and say so. With `ids`, those jobs.
    JobList {
        status: Option<JobStatus>,
        limit: Option<u32>,
        ids: Vec<JobId>,
        fields: Option<Vec<output::JobField>>,
    },
    Events {
        follow: bool,
        nodes: Option<String>,
        kinds: Vec<kiln_actors::EventKind>,
        since: Option<u64>,
    },
    /// A fanout command: print as `print` says, exit with the largest code.
    Fanout {
        request: Request,
        print: Print,
    },
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

/// The fanout options of a fanout command.
fn fanout_args(command: &Command) -> Option<&FanoutArgs> {
    match command {
        Command::Exec(e) => Some(&e.fanout),
        Command::Copy(c) => Some(&c.fanout),
        Command::Rcopy(c) => Some(&c.fanout),
        _ => None,
    }
}

async fn remote(command: Command, socket: &Path, json: bool) -> Result<(), Failure> {
    // Everything that can be refused locally is checked before connecting.
    let plan = match command {
        Command::Job(j) => job_plan(j)?,
        Command::Queue(QueueCommand::Drain { state }) => Remote::Once(Request::QueueDrain { on: state == "on" }),
        Command::Queue(QueueCommand::Status) => Remote::Once(Request::QueueStatus),
        Command::Events { follow, nodes, kinds, since } => Remote::Events { follow, nodes, kinds, since },
        Command::Exec(e) => {
            let print = Print::of(&e.fanout, json, e.gather)?;
            let spec = exec_spec(&e.fanout, e.command.join(" "))?;
            let options = RunOptions { stdin: read_stdin(e.no_stdin)?, total_timeout: total_timeout(&e.fanout)? };
            let request = Request::Exec { nodes: e.fanout.nodes.clone(), spec, options, live: print.live() };
            Remote::Fanout { request, print }
        }
        Command::Copy(c) => {
            let print = Print::of(&c.fanout, json, true)?;
            let source = std::fs::canonicalize(&c.source)
                .with_context(|| format!("cannot read {}", c.source.display()))
                .map_err(Failure::Usage)?;
            if source.is_dir() && !c.recursive {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "{} is a directory; add -r to copy it with what it holds",
                    c.source.display()
                )));
            }
            let source = utf8(&source)?;
            let spec = copy_spec(&c.fanout, source, c.dest.clone(), c.recursive, false)?;
            let options = RunOptions { stdin: None, total_timeout: total_timeout(&c.fanout)? };
            let request = Request::Copy { nodes: c.fanout.nodes.clone(), spec, options, live: print.live() };
            Remote::Fanout { request, print }
        }
        Command::Rcopy(c) => {
            let print = Print::of(&c.fanout, json, true)?;
            let dest = std::fs::canonicalize(&c.dest).ok().filter(|d| d.is_dir()).ok_or_else(|| {
                Failure::Usage(anyhow::anyhow!(
                    "{} is not a local directory; kiln rcopy puts each node's copy in one, as NAME.node",
                    c.dest.display()
                ))
            })?;
            let dest = utf8(&dest)?;
            let spec = copy_spec(&c.fanout, c.source.clone(), dest, c.recursive, true)?;
            spec.validate().map_err(|e| Failure::Usage(e.into()))?;
            let options = RunOptions { stdin: None, total_timeout: total_timeout(&c.fanout)? };
            let request = Request::Copy { nodes: c.fanout.nodes.clone(), spec, options, live: print.live() };
            Remote::Fanout { request, print }
        }
        Command::Periodic(PeriodicCommand::List) => Remote::Once(Request::PeriodicList),
        Command::Periodic(PeriodicCommand::Run { name }) => Remote::Once(Request::PeriodicRun { name }),
        other => match build_request(other)? {
            r @ Request::NodeOp { wait, .. } => Remote::Job { request: r, wait, bulk: true },
            r => Remote::Once(r),
        },
    };
    let mut client = Connection::connect(socket).await?;
    match plan {
        Remote::Once(request) => {
            let response = call(&mut client, request).await?;
            print_response(response, json)
        }
        Remote::JobList { status, limit, ids, fields } => {
            let by_id = !ids.is_empty();
            let request = Request::JobList { status, limit: limit.map(|n| n.saturating_add(1)), ids };
            let mut jobs = match call(&mut client, request).await? {
                Response::Jobs(jobs) => jobs,
                other => return Err(unexpected(other)),
            };
            if let Some(limit) = limit.filter(|l| !by_id && jobs.len() > *l as usize) {
                // Oldest first: the one past the limit is the first.
                jobs.drain(..jobs.len() - limit as usize);
                eprintln!(
                    "kiln: the newest {limit} live jobs are listed, and there are more \
                     (--limit N lists more, --limit 0 every one)"
                );
            }
            if json {
                output::json(&output::jobs_value(&jobs, fields.as_deref()));
            } else {
                output::jobs(&jobs, fields.as_deref().unwrap_or(output::DEFAULT_JOB_FIELDS));
            }
            Ok(())
        }
        Remote::Archive(id) => match call(&mut client, Request::JobArchive { id }).await? {
            Response::Done if !json => {
                println!("job {id} archived");
                Ok(())
            }
            response => print_response(response, json),
        },
        Remote::Priority(id, priority) => match call(&mut client, Request::JobPriority { id, priority }).await? {
            Response::Job(job) if !json => {
                println!("job {id} {}: priority {}", job.status, job.priority);
                Ok(())
            }
            response => print_response(response, json),
        },
        Remote::Events { follow, nodes, kinds, since } => {
            events(&mut client, Request::Events { follow, nodes, kinds, since }, json).await
        }
        Remote::Fanout { request, print } => fanout(&mut client, request, print).await,
        Remote::Watch(id) => {
            let log = if json { LogOut::JsonLines } else { LogOut::Text };
            let job = follow_job(&mut client, id, log, false).await?;
            if json {
                // The last line of the stream: the job as it ended.
                output::json_line(&output::job_value(&job));
            }
            job_exit(&job)
        }
        Remote::Jobs { request, wait } => {
            let ids = match call(&mut client, request).await? {
                Response::JobsSubmitted(ids) => ids,
                other => return Err(unexpected(other)),
            };
            if !wait {
                if json {
                    output::json(&serde_json::json!({ "jobs": ids }));
                } else {
                    let list: Vec<String> = ids.iter().map(JobId::to_string).collect();
                    println!("jobs {} submitted; follow one with `kiln job watch ID`", list.join(", "));
                }
                return Ok(());
            }
            let mut ended = Vec::with_capacity(ids.len());
            for id in ids {
                ended.push(follow_job(&mut client, id, LogOut::None, false).await?);
            }
            if json {
                output::json(&ended.iter().map(output::job_value).collect::<Vec<_>>());
            } else {
                for (i, job) in ended.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    output::job(job);
                }
            }
            match ended.iter().all(|j| j.status == JobStatus::Success) {
                true => Ok(()),
                false => Err(Failure::Partial),
            }
        }
        Remote::Job { request, wait, bulk } => {
            let id = match call(&mut client, request).await? {
                Response::JobSubmitted(id) => id,
                other => return Err(unexpected(other)),
            };
            if !wait {
                if json {
                    output::json(&serde_json::json!({ "job": id }));
                } else {
                    println!("job {id} submitted; follow it with `kiln job watch {id}`");
                }
                return Ok(());
            }
            let job = follow_job(&mut client, id, LogOut::None, !json).await?;
            if bulk {
                let results: Vec<NodeResult> = job.ops.iter().flat_map(|o| o.results.clone()).collect();
                print_results(&results, json);
                if let (Some(e), true) = (&job.error, results.is_empty()) {
                    return Err(Failure::Refused(KilnError::InvalidInput(format!("job {id}: {e}"))));
                }
            } else if json {
                output::json(&output::job_value(&job));
            } else {
                output::job(&job);
            }
            job_exit(&job)
        }
    }
}

fn job_plan(j: JobCommand) -> Result<Remote, Failure> {
    Ok(match j {
        JobCommand::List { ids, output, status, limit } => {
            if !ids.is_empty() && status.is_some() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "give job ids or --status, not both (ids list those jobs whatever their status)"
                )));
            }
            Remote::JobList {
                status: status.map(|s| s.parse::<JobStatus>()).transpose().map_err(|e| Failure::Usage(e.into()))?,
                limit: (limit > 0).then_some(limit),
                ids: ids.into_iter().map(JobId).collect(),
                fields: output.as_deref().map(output::job_fields).transpose().map_err(Failure::Usage)?,
            }
        }
        JobCommand::Show { id } => Remote::Once(Request::JobShow { id: JobId(id) }),
        JobCommand::Watch { id } => Remote::Watch(JobId(id)),
        JobCommand::Cancel { id } => Remote::Once(Request::JobCancel { id: JobId(id) }),
        JobCommand::Priority { id, priority } => {
            if !(-20..=19).contains(&priority) {
                return Err(Failure::Usage(anyhow::anyhow!("priority {priority} is out of range -20..19")));
            }
            Remote::Priority(JobId(id), priority)
        }
        JobCommand::Archive { id } => Remote::Archive(JobId(id)),
        JobCommand::Autoarchive { age } => {
            let older_than = match age.trim() {
                "all" => std::time::Duration::ZERO,
                text => {
                    crate::layered::Seconds::parse(text)
                        .map_err(|e| Failure::Usage(anyhow::anyhow!("{e}; or `all` for every ended job")))?
                        .0
                }
            };
            Remote::Once(Request::JobAutoArchive { older_than })
        }
        JobCommand::Submit { file, wait } => match crate::jobfile::read(&file).map_err(Failure::Usage)? {
            crate::jobfile::Submission::One { ops, priority, depends } => {
                Remote::Job { request: Request::JobSubmit { ops, priority, depends }, wait, bulk: false }
            }
            crate::jobfile::Submission::Many(jobs) => Remote::Jobs { request: Request::JobSubmitMany { jobs }, wait },
        },
    })
}

/// Where [`follow_job`] prints the job's log lines as they come.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogOut {
    None,
    /// `TIME [LEVEL: ]MESSAGE`, for people.
    Text,
    /// One JSON object per line, for scripts.
    JsonLines,
}

/// Runs a fanout command and prints it as `print` says; its exit code is
/// the largest of the nodes' (clush -S).
async fn fanout(client: &mut Connection, request: Request, print: Print) -> Result<(), Failure> {
    let outcomes = match print {
        Print::Gathered | Print::Json => match call(client, request).await? {
            Response::Exec(o) => o,
            other => return Err(unexpected(other)),
        },
        Print::Lines | Print::JsonLines => {
            client.send_request(&request).await?;
            let mut ended: Vec<(usize, ExecOutcome)> = Vec::new();
            loop {
                match client.next_response().await? {
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

/// The exit status of a followed job: success only when the job succeeded.
fn job_exit(job: &JobView) -> Result<(), Failure> {
    if job.status == JobStatus::Success { Ok(()) } else { Err(Failure::Partial) }
}

/// Follows a job with the long poll until it ends; prints its log lines
/// (`log`) or a progress bar on a terminal (`progress`). Returns the job as
/// it ended.
async fn follow_job(client: &mut Connection, id: JobId, log: LogOut, progress: bool) -> Result<JobView, Failure> {
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("job {msg} [{bar:40}] {pos}/{len} nodes ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(id.to_string());
        bar
    });
    let mut after = 0;
    loop {
        let change = match call(client, Request::JobWait { id, after_serial: after, timeout_ms: 1000 }).await? {
            Response::JobChange(c) => c,
            other => return Err(unexpected(other)),
        };
        for entry in &change.log {
            after = after.max(entry.serial);
            match log {
                LogOut::None => {}
                LogOut::Text => println!("{}", output::log_line(entry)),
                LogOut::JsonLines => output::json_line(entry),
            }
        }
        if let (Some(bar), Some((done, total))) = (&bar, change.progress) {
            bar.set_length(total);
            bar.set_position(done);
        }
        if change.status.is_finished() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return match call(client, Request::JobShow { id }).await? {
                Response::Job(job) => Ok(job),
                other => Err(unexpected(other)),
            };
        }
    }
}

fn build_request(command: Command) -> Result<Request, Failure> {
    let verb = |v: Verb, a: VerbArgs| Request::NodeOp {
        nodes: a.nodes,
        op: Op::Verb(v),
        wait: a.wait,
        fanout: a.fanout,
        priority: a.priority,
    };
    let power = |action: &str, a: VerbArgs| -> Result<Request, Failure> {
        Ok(Request::NodeOp {
            nodes: a.nodes,
            op: Op::Power(parse_power_action(action).map_err(|e| Failure::Usage(anyhow::anyhow!(e)))?),
            wait: a.wait,
            fanout: a.fanout,
            priority: a.priority,
        })
    };
    Ok(match command {
        Command::Serve(_)
        | Command::Bench(_)
        | Command::Nodeset(_)
        | Command::Store(_)
        | Command::Completions { .. }
        | Command::Manpage { .. }
        | Command::Job(_)
        | Command::Queue(_)
        | Command::Periodic(_)
        | Command::Exec(_)
        | Command::Copy(_)
        | Command::Rcopy(_)
        | Command::Events { .. } => {
            unreachable!("handled before")
        }
        Command::Status => Request::Status,
        Command::Node(n) => match n {
            NodeCommand::Create(c) => {
                let mut driver_info = pairs(&c.driver_info, "--driver-info")?;
                if let Some(a) = c.address {
                    driver_info.insert("address".into(), a);
                }
                if let Some(u) = c.username {
                    driver_info.insert("username".into(), u);
                }
                if let Some(p) = &c.password_file {
                    driver_info.insert("password".into(), read_password(p)?);
                }
                Request::NodeCreate(NewNode {
                    name: c.name,
                    driver: c.driver,
                    driver_info,
                    properties: pairs(&c.properties, "--property")?,
                    ports: c.macs,
                })
            }
            NodeCommand::Import { file } => Request::NodeImport(read_import(&file).map_err(Failure::Usage)?),
            NodeCommand::List { nodes, state, maintenance } => Request::NodeList {
                nodes,
                state: state.map(|s| s.parse::<ProvisionState>()).transpose().map_err(|e| Failure::Usage(e.into()))?,
                maintenance: maintenance.then_some(true),
            },
            NodeCommand::Show { node } => Request::NodeShow { node },
            NodeCommand::Validate { nodes } => Request::NodeValidate { nodes },
            NodeCommand::History { node, limit } => Request::NodeHistory { node, limit },
            NodeCommand::Set(s) => {
                let mut update = NodeUpdate::default();
                for (k, v) in pairs(&s.driver_info, "--driver-info")? {
                    update.driver_info.insert(k, Some(v));
                }
                if let Some(p) = &s.password_file {
                    update.driver_info.insert("password".into(), Some(read_password(p)?));
                }
                for k in s.unset_driver_info {
                    update.driver_info.insert(k, None);
                }
                for (k, v) in pairs(&s.properties, "--property")? {
                    update.properties.insert(k, Some(v));
                }
                for k in s.unset_properties {
                    update.properties.insert(k, None);
                }
                if update.driver_info.is_empty() && update.properties.is_empty() {
                    return Err(Failure::Usage(anyhow::anyhow!(
                        "nothing to change: give --driver-info, --property, --unset-driver-info or --unset-property"
                    )));
                }
                Request::NodeSet { node: s.node, update }
            }
            NodeCommand::Delete { nodes } => Request::NodeDelete { nodes },
            NodeCommand::Manage(a) => verb(Verb::Manage, a),
            NodeCommand::Provide(a) => verb(Verb::Provide, a),
            NodeCommand::Inspect(a) => verb(Verb::Inspect, a),
            NodeCommand::Clean(a) => verb(Verb::Clean, a),
            NodeCommand::Deploy(a) => verb(Verb::Deploy, a),
            NodeCommand::Undeploy(a) => verb(Verb::Undeploy, a),
            NodeCommand::Rebuild(a) => verb(Verb::Rebuild, a),
            NodeCommand::Abort(a) => verb(Verb::Abort, a),
            NodeCommand::Rescue(a) => verb(Verb::Rescue, a),
            NodeCommand::Unrescue(a) => verb(Verb::Unrescue, a),
            NodeCommand::Adopt(a) => verb(Verb::Adopt, a),
            NodeCommand::Unhold(a) => verb(Verb::Unhold, a),
            NodeCommand::Service(a) => verb(Verb::Service, a),
            NodeCommand::Power(p) => match p {
                PowerCommand::On(a) => power("on", a)?,
                PowerCommand::Off(a) => power("off", a)?,
                PowerCommand::Reboot(a) => power("reboot", a)?,
                PowerCommand::SoftOff(a) => power("soft-off", a)?,
                PowerCommand::Status { nodes } => Request::PowerStatus { nodes },
            },
            NodeCommand::BootDevice(BootDeviceCommand::Set { nodes, device, persistent, fanout, priority }) => {
                Request::NodeOp {
                    nodes,
                    op: Op::BootDevice {
                        device: device.parse::<BootDevice>().map_err(|e| Failure::Usage(e.into()))?,
                        persistent,
                    },
                    wait: true,
                    fanout,
                    priority,
                }
            }
            NodeCommand::Maintenance(m) => {
                let (nodes, on, reason, priority) = match m {
                    MaintenanceCommand::On { nodes, reason, priority } => (nodes, true, reason, priority),
                    MaintenanceCommand::Off { nodes, priority } => (nodes, false, None, priority),
                };
                Request::NodeOp { nodes, op: Op::Maintenance { on, reason }, wait: true, fanout: None, priority }
            }
        },
        Command::Port(p) => match p {
            PortCommand::Create { mac, node } => Request::PortCreate { address: mac, node },
            PortCommand::List { node } => Request::PortList { node },
            PortCommand::Delete { mac } => Request::PortDelete { address: mac },
            PortCommand::Set { mac, group, no_group: _ } => Request::PortSet { address: mac, group },
            PortCommand::Group(g) => match g {
                PortGroupCommand::Create { name, node, mode, address, ports } => {
                    Request::PortGroupCreate(NewPortGroup { name, node, mode: Some(mode), address, ports })
                }
                PortGroupCommand::List { node } => Request::PortGroupList { node },
                PortGroupCommand::Show { name } => Request::PortGroupShow { group: name },
                PortGroupCommand::Delete { name } => Request::PortGroupDelete { group: name },
            },
        },
    })
}

fn print_response(response: Response, json: bool) -> Result<(), Failure> {
    match response {
        Response::Status(s) => {
            if json {
                output::json(&s)
            } else {
                output::status(&s)
            }
        }
        Response::Node(v) => {
            if json {
                output::json(&v)
            } else {
                output::node(&v)
            }
        }
        Response::NodeDetail(d) => {
            if json {
                output::json(&output::NodeDetailJson::of(&d))
            } else {
                output::node_detail(&d)
            }
        }
        Response::Validation(list) => {
            if json {
                output::json(&output::validation_json(&list))
            } else {
                output::validation(&list)
            }
            if !list.iter().all(|v| v.passed()) {
                return Err(Failure::Partial);
            }
        }
        Response::PortGroup(g) => {
            if json {
                output::json(&g)
            } else {
                output::port_groups(&[g])
            }
        }
        Response::PortGroups(gs) => {
            if json {
                output::json(&gs)
            } else {
                output::port_groups(&gs)
            }
        }
        Response::Nodes(vs) => {
            if json {
                output::json(&vs)
            } else {
                output::nodes(&vs)
            }
        }
        Response::Outcomes(list) => {
            let results: Vec<NodeResult> = list.iter().map(|o| NodeResult::of(o.node.clone(), &o.result)).collect();
            print_results(&results, json);
            if results.iter().any(|r| !r.ok) {
                return Err(Failure::Partial);
            }
        }
        Response::Jobs(jobs) => {
            if json {
                output::json(&output::jobs_value(&jobs, None))
            } else {
                output::jobs(&jobs, output::DEFAULT_JOB_FIELDS)
            }
        }
        Response::Job(job) => {
            if json {
                output::json(&output::job_value(&job))
            } else {
                output::job(&job)
            }
        }
        Response::JobsArchived(n) => {
            if json {
                output::json(&serde_json::json!({ "archived": n }))
            } else {
                println!("{n} job{} archived", if n == 1 { "" } else { "s" })
            }
        }
        Response::JobCanceled(status) => {
            if json {
                output::json(&serde_json::json!({ "status": status }))
            } else {
                println!("{status}")
            }
        }
        Response::Queue(q) => {
            if json {
                output::json(&q)
            } else {
                output::queue(&q)
            }
        }
        Response::Periodic(tasks) => {
            if json {
                output::json(&tasks)
            } else {
                output::periodic(&tasks)
            }
            if tasks.len() == 1 && tasks[0].last_error.is_some() {
                return Err(Failure::Partial);
            }
        }
        Response::Done => {
            if json {
                output::json(&serde_json::json!({ "ok": true }))
            }
        }
        Response::Port(p) => {
            if json {
                output::json(&p)
            } else {
                output::ports(&[p])
            }
        }
        Response::Ports(ps) => {
            if json {
                output::json(&ps)
            } else {
                output::ports(&ps)
            }
        }
        Response::History(h) => {
            if json {
                output::json(&h)
            } else {
                output::history(&h)
            }
        }
        other => return Err(unexpected(other)),
    }
    Ok(())
}

/// Per-node results: one JSON object per node, or a table.
fn print_results(results: &[NodeResult], json: bool) {
    if json {
        let doc: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let error = match (&r.error_kind, &r.error) {
                    (Some(kind), Some(message)) => serde_json::json!({ "kind": kind, "message": message }),
                    _ => serde_json::Value::Null,
                };
                serde_json::json!({
                    "node": r.node, "ok": r.ok, "provision_state": r.provision_state,
                    "power_state": r.power_state, "error": error,
                })
            })
            .collect();
        output::json(&doc);
    } else {
        output::results(results);
    }
}

async fn events(client: &mut Connection, request: Request, json: bool) -> Result<(), Failure> {
    let follow = matches!(request, Request::Events { follow: true, .. });
    client.send_request(&request).await?;
    loop {
        match client.next_response().await? {
            Response::Event(e) => {
                if json {
                    match serde_json::to_string(&e) {
                        Ok(line) => println!("{line}"),
                        Err(err) => return Err(Failure::Other(err.into())),
                    }
                } else {
                    println!("{}", output::event_line(&e));
                }
            }
            Response::EventsCaughtUp => {
                if !follow {
                    return Ok(());
                }
                if json {
                    // Tells scripts that everything after is live.
                    println!("{}", serde_json::json!({ "caught_up": true }));
                } else {
                    eprintln!("following events (Ctrl-C to stop)");
                }
            }
            Response::Error(e) => return Err(Failure::Refused(e)),
            other => return Err(unexpected(other)),
        }
    }
}
