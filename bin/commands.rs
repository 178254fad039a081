//! Runs a parsed command line: `serve` starts the daemon, `nodeset` works
//! locally, everything else is one or more requests over the admin socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_actors::node::parse_power_action;
use kiln_actors::nodeset::NodeSet;
use kiln_actors::protocol::{Request, Response};
use std::io::IsTerminal;

use kiln_actors::jobs::{JobView, NodeResult};
use kiln_actors::{KilnError, NewNode, NewPortGroup, NodeUpdate, Op, Verb};
use kiln_store::{BootDevice, JobId, JobStatus, ProvisionState};

use crate::cli::*;
use crate::client::{Client, ClientError, socket_path};
use crate::{exit, output};

/// Why a command did not succeed, and with which exit code.
#[derive(Debug)]
enum Failure {
    /// Bad arguments or input file: nothing was sent.
    Usage(anyhow::Error),
    /// The daemon could not be reached.
    Unavailable(ClientError),
    /// The daemon answered with an error.
    Refused(KilnError),
    /// Some of the nodes failed (already printed).
    Partial,
    /// A fanout command's largest exit code (already printed).
    Exit(u8),
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect { .. } => Failure::Unavailable(e),
            other => Failure::Other(other.into()),
        }
    }
}

/// Runs the command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
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
        Err(f) => report(f, json),
    }
}

fn report(f: Failure, json: bool) -> ExitCode {
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
    if json {
        output::json(&serde_json::json!({ "error": { "kind": kind, "message": message } }));
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
    let mut set = NodeSet::new();
    for expr in &args.sets {
        let one = NodeSet::parse_with(expr, &|g| groups.get(g).cloned())
            .map_err(|e| Failure::Usage(anyhow::anyhow!("node set '{expr}': {e}")))?;
        set = set.union(&one);
    }
    if args.expand {
        let names: Vec<String> = set.iter().collect();
        if json { output::json(&names) } else { println!("{}", names.join(" ")) }
    } else if args.fold {
        if json { output::json(&set.fold()) } else { println!("{}", set.fold()) }
    } else if json {
        output::json(&set.len())
    } else {
        println!("{}", set.len())
    }
    Ok(())
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
async fn call(client: &mut Client, req: Request) -> Result<Response, Failure> {
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
    /// Follow an existing job's log.
    Watch(JobId),
    /// Archive a job and say so.
    Archive(JobId),
    /// List jobs; with a `limit`, ask for one more to tell whether there
    /// are more, and say so.
    JobList {
        status: Option<JobStatus>,
        limit: Option<u32>,
    },
    Events {
        follow: bool,
        nodes: Option<String>,
        kinds: Vec<kiln_actors::EventKind>,
    },
    /// A fanout command: print per node (or gathered), exit with the largest code.
    Exec {
        request: Request,
        gather: bool,
    },
}

async fn remote(command: Command, socket: &Path, json: bool) -> Result<(), Failure> {
    // Everything that can be refused locally is checked before connecting.
    let plan = match command {
        Command::Job(j) => job_plan(j)?,
        Command::Queue(QueueCommand::Drain { state }) => Remote::Once(Request::QueueDrain { on: state == "on" }),
        Command::Queue(QueueCommand::Status) => Remote::Once(Request::QueueStatus),
        Command::Events { follow, nodes, kinds } => Remote::Events { follow, nodes, kinds },
        Command::Exec(e) => {
            let spec = exec_spec(&e.fanout, e.command.join(" "))?;
            Remote::Exec { request: Request::Exec { nodes: e.fanout.nodes.clone(), spec }, gather: e.gather }
        }
        Command::Copy(c) => {
            let source = std::fs::canonicalize(&c.source)
                .with_context(|| format!("cannot read {}", c.source.display()))
                .map_err(Failure::Usage)?;
            let base = exec_spec(&c.fanout, String::new())?;
            let spec = kiln_actors::exec::CopySpec {
                worker: base.worker,
                source,
                dest: c.dest.clone(),
                fanout: base.fanout,
                connect_timeout: base.connect_timeout,
                command_timeout: base.command_timeout,
            };
            Remote::Exec { request: Request::Copy { nodes: c.fanout.nodes.clone(), spec }, gather: true }
        }
        Command::Periodic(PeriodicCommand::List) => Remote::Once(Request::PeriodicList),
        Command::Periodic(PeriodicCommand::Run { name }) => Remote::Once(Request::PeriodicRun { name }),
        other => match build_request(other)? {
            r @ Request::NodeOp { wait, .. } => Remote::Job { request: r, wait, bulk: true },
            r => Remote::Once(r),
        },
    };
    let mut client = Client::connect(socket).await?;
    match plan {
        Remote::Once(request) => {
            let response = call(&mut client, request).await?;
            print_response(response, json)
        }
        Remote::JobList { status, limit } => {
            let request = Request::JobList { status, limit: limit.map(|n| n.saturating_add(1)) };
            match (call(&mut client, request).await?, limit) {
                (Response::Jobs(mut jobs), Some(limit)) if jobs.len() > limit as usize => {
                    // Oldest first: the one past the limit is the first.
                    jobs.drain(..jobs.len() - limit as usize);
                    eprintln!(
                        "kiln: the newest {limit} live jobs are listed, and there are more \
                         (--limit N lists more, --limit 0 every one)"
                    );
                    print_response(Response::Jobs(jobs), json)
                }
                (response, _) => print_response(response, json),
            }
        }
        Remote::Archive(id) => match call(&mut client, Request::JobArchive { id }).await? {
            Response::Done if !json => {
                println!("job {id} archived");
                Ok(())
            }
            response => print_response(response, json),
        },
        Remote::Events { follow, nodes, kinds } => {
            events(&mut client, Request::Events { follow, nodes, kinds }, json).await
        }
        Remote::Exec { request, gather } => {
            let outcomes = match call(&mut client, request).await? {
                Response::Exec(o) => o,
                other => return Err(unexpected(other)),
            };
            if json {
                output::json(&outcomes);
            } else if gather {
                output::gathered(&outcomes);
            } else {
                output::per_node(&outcomes);
            }
            match kiln_actors::exec::overall_exit(&outcomes) {
                0 => Ok(()),
                code => Err(Failure::Exit(code.clamp(1, 255) as u8)),
            }
        }
        Remote::Watch(id) => {
            let job = follow_job(&mut client, id, !json, false).await?;
            if json {
                output::json(&job);
            }
            job_exit(&job)
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
            let job = follow_job(&mut client, id, false, !json).await?;
            if bulk {
                let results: Vec<NodeResult> = job.ops.iter().flat_map(|o| o.results.clone()).collect();
                print_results(&results, json);
                if let (Some(e), true) = (&job.error, results.is_empty()) {
                    return Err(Failure::Refused(KilnError::InvalidInput(format!("job {id}: {e}"))));
                }
            } else if json {
                output::json(&job);
            } else {
                output::job(&job);
            }
            job_exit(&job)
        }
    }
}

fn job_plan(j: JobCommand) -> Result<Remote, Failure> {
    Ok(match j {
        JobCommand::List { status, limit } => Remote::JobList {
            status: status.map(|s| s.parse::<JobStatus>()).transpose().map_err(|e| Failure::Usage(e.into()))?,
            limit: (limit > 0).then_some(limit),
        },
        JobCommand::Show { id } => Remote::Once(Request::JobShow { id: JobId(id) }),
        JobCommand::Watch { id } => Remote::Watch(JobId(id)),
        JobCommand::Cancel { id } => Remote::Once(Request::JobCancel { id: JobId(id) }),
        JobCommand::Archive { id } => Remote::Archive(JobId(id)),
        JobCommand::Submit { file, wait } => {
            let (ops, priority, depends) = crate::jobfile::read(&file).map_err(Failure::Usage)?;
            Remote::Job { request: Request::JobSubmit { ops, priority, depends }, wait, bulk: false }
        }
    })
}

/// The fanout settings of `kiln exec` / `kiln copy`.
fn exec_spec(f: &FanoutArgs, command: String) -> Result<kiln_actors::exec::ExecSpec, Failure> {
    let secs = |what: &str, v: f64| -> Result<std::time::Duration, Failure> {
        if v.is_finite() && v > 0.0 && v <= 86_400.0 {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(Failure::Usage(anyhow::anyhow!("{what} {v}: expected seconds between 0 and 86400")))
        }
    };
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
/// (`print_log`) or a progress bar on a terminal (`progress`). Returns the
/// job as it ended.
async fn follow_job(client: &mut Client, id: JobId, print_log: bool, progress: bool) -> Result<JobView, Failure> {
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
            if print_log {
                println!("{} {}", output::when(&entry.at), entry.message);
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
    let verb =
        |v: Verb, a: VerbArgs| Request::NodeOp { nodes: a.nodes, op: Op::Verb(v), wait: a.wait, fanout: a.fanout };
    let power = |action: &str, a: VerbArgs| -> Result<Request, Failure> {
        Ok(Request::NodeOp {
            nodes: a.nodes,
            op: Op::Power(parse_power_action(action).map_err(|e| Failure::Usage(anyhow::anyhow!(e)))?),
            wait: a.wait,
            fanout: a.fanout,
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
            NodeCommand::BootDevice(BootDeviceCommand::Set { nodes, device, persistent, fanout }) => Request::NodeOp {
                nodes,
                op: Op::BootDevice {
                    device: device.parse::<BootDevice>().map_err(|e| Failure::Usage(e.into()))?,
                    persistent,
                },
                wait: true,
                fanout,
            },
            NodeCommand::Maintenance(m) => {
                let (nodes, on, reason) = match m {
                    MaintenanceCommand::On { nodes, reason } => (nodes, true, reason),
                    MaintenanceCommand::Off { nodes } => (nodes, false, None),
                };
                Request::NodeOp { nodes, op: Op::Maintenance { on, reason }, wait: true, fanout: None }
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
                output::json(&jobs)
            } else {
                output::jobs(&jobs)
            }
        }
        Response::Job(job) => {
            if json {
                output::json(&job)
            } else {
                output::job(&job)
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

async fn events(client: &mut Client, request: Request, json: bool) -> Result<(), Failure> {
    let follow = matches!(request, Request::Events { follow: true, .. });
    client.send(&request).await?;
    loop {
        match client.next().await? {
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
