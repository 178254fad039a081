//! Runs a parsed command line: `serve` starts the daemon, `nodeset` works
//! locally, everything else is one or more requests over the admin socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use kiln_actors::node::parse_power_action;
use kiln_actors::nodeset::NodeSet;
use kiln_actors::protocol::{Request, Response};
use kiln_actors::{KilnError, NewNode, NodeOutcome, NodeUpdate, Op, Verb};
use kiln_store::{BootDevice, ProvisionState};

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
        Command::Serve(args) => return crate::serve::run(args),
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
        Failure::Refused(e) => (exit::FAILED, e.kind(), e.to_string()),
        Failure::Partial => return ExitCode::from(exit::FAILED),
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
    let expr = args.expand.as_deref().or(args.fold.as_deref()).or(args.count.as_deref()).unwrap_or_default();
    let set = NodeSet::parse(expr).map_err(|e| Failure::Usage(anyhow::anyhow!("node set '{expr}': {e}")))?;
    if args.expand.is_some() {
        let names: Vec<String> = set.iter().collect();
        if json { output::json(&names) } else { println!("{}", names.join(" ")) }
    } else if args.fold.is_some() {
        if json { output::json(&set.fold()) } else { println!("{}", set.fold()) }
    } else if json {
        output::json(&set.len())
    } else {
        println!("{}", set.len())
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
    let json_like = text.trim_start().starts_with('[') || text.trim_start().starts_with('{');
    let nodes: Vec<NewNode> = if json_like {
        serde_json::from_str(&text).with_context(|| format!("{} is not a JSON list of nodes", path.display()))?
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("{} is not a YAML list of nodes", path.display()))?
    };
    if nodes.is_empty() {
        bail!("{} lists no nodes", path.display());
    }
    Ok(nodes)
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

async fn remote(command: Command, socket: &Path, json: bool) -> Result<(), Failure> {
    // Everything that can be refused locally is checked before connecting.
    let request = build_request(command)?;
    let mut client = Client::connect(socket).await?;
    if let Request::Events { follow } = request {
        return events(&mut client, follow, json).await;
    }
    let response = call(&mut client, request).await?;
    print_response(response, json)
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
        Command::Serve(_) | Command::Nodeset(_) => unreachable!("handled locally"),
        Command::Status => Request::Status,
        Command::Events { follow } => Request::Events { follow },
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
        Response::Nodes(vs) => {
            if json {
                output::json(&vs)
            } else {
                output::nodes(&vs)
            }
        }
        Response::Outcomes(list) => {
            print_outcomes(&list, json);
            if list.iter().any(|o| o.result.is_err()) {
                return Err(Failure::Partial);
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

/// Bulk outcomes: JSON keeps each node's view or error; the table shows one
/// line per node.
fn print_outcomes(list: &[NodeOutcome], json: bool) {
    if json {
        let doc: Vec<serde_json::Value> = list
            .iter()
            .map(|o| match &o.result {
                Ok(v) => serde_json::json!({ "node": o.node, "ok": true, "result": v }),
                Err(e) => serde_json::json!({
                    "node": o.node, "ok": false, "error": { "kind": e.kind(), "message": e.to_string() }
                }),
            })
            .collect();
        output::json(&doc);
    } else {
        output::outcomes(list);
    }
}

async fn events(client: &mut Client, follow: bool, json: bool) -> Result<(), Failure> {
    client.send(&Request::Events { follow }).await?;
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
