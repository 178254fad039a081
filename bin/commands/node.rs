//! `kiln node`: enroll, list, show, change and delete nodes, and the verbs
//! that act on them. A verb (manage, deploy, power on, ...) is a job of one
//! opcode: submitted, then followed with `--wait` ([`super::job::submitted`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use kiln_actors::node::parse_power_action;
use kiln_actors::protocol::{Request, Response};
use kiln_actors::{NewNode, NodeUpdate, Op, Verb};
use kiln_store::{BootDevice, ProvisionState};

use super::job::{print_results, submitted};
use super::{Failure, call, connect, print, unexpected, usage};
use crate::cli::{
    BootDeviceCommand, CreateArgs, DeployArgs, MaintenanceCommand, NodeCommand, PowerCommand, SetArgs, VerbArgs,
};
use crate::connection::Connection;
use crate::output;

pub(super) async fn run(command: NodeCommand, socket: &Path, json: bool) -> Result<(), Failure> {
    // Everything that can be refused locally is checked before connecting.
    let image = match &command {
        NodeCommand::Deploy(DeployArgs { verb, image: Some(url) }) => Some(image_set(&verb.nodes, url)?),
        _ => None,
    };
    let request = request(command)?;
    let mut conn = connect(socket).await?;
    if let Some(set) = image {
        // The image first: a deploy that starts has it.
        match call(&mut conn, set).await? {
            Response::Node(_) => {}
            other => return Err(unexpected(other)),
        }
    }
    match request {
        r @ Request::NodeOp { wait, .. } => submitted(&mut conn, socket, r, wait, true, json).await,
        r @ Request::NodeListPages { .. } => list(&mut conn, r, json).await,
        r => print_answer(call(&mut conn, r).await?, json),
    }
}

/// The request a node command sends.
fn request(command: NodeCommand) -> Result<Request, Failure> {
    Ok(match command {
        NodeCommand::Create(c) => create(c)?,
        NodeCommand::Import { file } => Request::NodeImport(read_import(&file).map_err(Failure::Usage)?),
        NodeCommand::List { nodes, state, maintenance, bmc, stale } => Request::NodeListPages {
            nodes,
            state: state.map(|s| s.parse::<ProvisionState>()).transpose().map_err(|e| Failure::Usage(e.into()))?,
            maintenance: maintenance.then_some(true),
            bmc: bmc.map(|b| match b.as_str() {
                "unreachable" => kiln_actors::supervisor::BmcReach::Unreachable,
                _ => kiln_actors::supervisor::BmcReach::Reachable,
            }),
            stale,
        },
        NodeCommand::Show { node } => Request::NodeShow { node },
        NodeCommand::Validate { nodes } => Request::NodeValidate { nodes },
        NodeCommand::History { node, limit } => Request::NodeHistory { node, limit },
        NodeCommand::Callback { node, token, fail } => {
            Request::NodeCallback { node, token: kiln_actors::CallbackToken(token), failure: fail }
        }
        NodeCommand::Set(s) => set(s)?,
        NodeCommand::Delete { nodes } => Request::NodeDelete { nodes },
        NodeCommand::Manage(a) => verb(Verb::Manage, a),
        NodeCommand::Provide(a) => verb(Verb::Provide, a),
        NodeCommand::Inspect(a) => verb(Verb::Inspect, a),
        NodeCommand::Clean(a) => verb(Verb::Clean, a),
        NodeCommand::Deploy(a) => verb(Verb::Deploy, a.verb),
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
    })
}

/// `deploy --image URL`: the `node set` of `instance_info.image_url` sent
/// before the deploy; one node (a name or uuid), an http(s) URL.
fn image_set(node: &str, url: &str) -> Result<Request, Failure> {
    let one = !node.is_empty() && node.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !one {
        return Err(usage(format_args!("--image sets one node's image: name one node, not '{node}'")));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(usage(format_args!("--image '{url}' is not an http:// or https:// URL the BMC can fetch")));
    }
    let mut update = NodeUpdate::default();
    update.instance_info.insert("image_url".into(), Some(serde_json::Value::String(url.to_string())));
    Ok(Request::NodeSet { node: node.to_string(), update })
}

fn verb(v: Verb, a: VerbArgs) -> Request {
    Request::NodeOp { nodes: a.nodes, op: Op::Verb(v), wait: a.wait, fanout: a.fanout, priority: a.priority }
}

fn power(action: &str, a: VerbArgs) -> Result<Request, Failure> {
    Ok(Request::NodeOp {
        nodes: a.nodes,
        op: Op::Power(parse_power_action(action).map_err(usage)?),
        wait: a.wait,
        fanout: a.fanout,
        priority: a.priority,
    })
}

/// `kiln node create`: the BMC's address, user and password join the
/// other `--driver-info`.
fn create(c: CreateArgs) -> Result<Request, Failure> {
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
    Ok(Request::NodeCreate(NewNode {
        name: c.name,
        driver: c.driver,
        driver_info,
        properties: pairs(&c.properties, "--property")?,
        ports: c.macs,
        ..NewNode::default()
    }))
}

/// `kiln node set`: keys set and unset; at least one.
fn set(s: SetArgs) -> Result<Request, Failure> {
    let mut update = NodeUpdate { name: s.name, ..NodeUpdate::default() };
    if let Some(d) = &s.driver {
        update.driver = Some(d.parse().map_err(|e| usage(format_args!("--driver: {e}")))?);
    }
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
    for (k, v) in pairs(&s.extra, "--extra")? {
        update.extra.insert(k, Some(json_or_string(v)));
    }
    for k in s.unset_extra {
        update.extra.insert(k, None);
    }
    for (k, v) in pairs(&s.instance_info, "--instance-info")? {
        update.instance_info.insert(k, Some(json_or_string(v)));
    }
    for k in s.unset_instance_info {
        update.instance_info.insert(k, None);
    }
    update.reset_bmc_profile = s.reset_bmc_profile;
    if update.is_empty() {
        return Err(usage(
            "nothing to change: give --name, --driver, --driver-info, --property, --extra, --instance-info (or one \
             of their --unset-) or --reset-bmc-profile",
        ));
    }
    Ok(Request::NodeSet { node: s.node, update })
}

/// `kiln node list`: asks for the list in pages and prints each page as it
/// comes. A list that is one page is printed as a whole (its table's
/// columns as wide as its rows); a longer one as it streams in, laid out
/// from the first page and what the daemon says of the rest
/// ([`output::NodeRows`]). `--json` prints the same JSON array either way.
///
/// The pages are read as fast as the daemon sends them and printed on a
/// thread of their own: an output that does not keep up (a pager waiting
/// for a key) holds the printing, never the connection, which the daemon
/// would close once a page stayed unread for its frame timeout. The pages
/// not printed yet wait in memory then, as the whole list did before it
/// came in pages.
async fn list(conn: &mut Connection, request: Request, json: bool) -> Result<(), Failure> {
    conn.send_request(&request).await?;
    let (pages, printed) = std::sync::mpsc::channel();
    let printer = std::thread::spawn(move || print_pages(&printed, json));
    let read = read_pages(conn, &pages).await;
    drop(pages);
    let _ = printer.join();
    read
}

/// One page of a node list: its rows, the longest name of the list, and
/// whether it is the last.
type Page = (Vec<kiln_actors::NodeView>, usize, bool);

/// Reads the pages of a node list and hands them to the printer, until the
/// last one, an error, or a printer that stopped (nobody reads its output).
async fn read_pages(conn: &mut Connection, pages: &std::sync::mpsc::Sender<Page>) -> Result<(), Failure> {
    // Every page but the last holds a row: at most a page a node, and a
    // billion nodes is past any site.
    for _ in 0..1_000_000_000u64 {
        match conn.next_response().await? {
            Response::NodePage { nodes, name_width, last } => {
                if pages.send((nodes, name_width as usize, last)).is_err() || last {
                    return Ok(());
                }
            }
            // What was printed stays; a JSON array is left open, so that a
            // script cannot take a list cut short for the whole list.
            Response::Error(e) => return Err(Failure::Refused(e)),
            other => return Err(unexpected(other)),
        }
    }
    Err(Failure::Other(anyhow::anyhow!("the daemon's node list did not end")))
}

/// Prints the pages of a node list as they come, until the last one or
/// until no more come (the reading failed).
fn print_pages(pages: &std::sync::mpsc::Receiver<Page>, json: bool) {
    let mut rows: Option<output::NodeRows<std::io::BufWriter<std::io::Stdout>>> = None;
    while let Ok((nodes, name_width, last)) = pages.recv() {
        let printing = match rows.as_mut() {
            Some(rows) => rows,
            None if last => return print(json, &nodes, |vs| output::nodes(vs)),
            None => {
                let out = std::io::BufWriter::new(std::io::stdout());
                rows.insert(output::NodeRows::new(out, json, &nodes, name_width))
            }
        };
        // An error writing: nobody reads the output any more (`| head`).
        if printing.page(&nodes).is_err() {
            return;
        }
        if last {
            if let Some(rows) = rows.take() {
                let _ = rows.end();
            }
            return;
        }
    }
}

/// Prints the answer to a node command that is not a job.
fn print_answer(response: Response, json: bool) -> Result<(), Failure> {
    match response {
        Response::Node(v) => print(json, &v, output::node),
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
        Response::Nodes(vs) => print(json, &vs, |vs| output::nodes(vs)),
        Response::Outcomes(results) => {
            print_results(&results, json);
            if results.iter().any(|r| !r.ok) {
                return Err(Failure::Partial);
            }
        }
        Response::History(h) => print(json, &h, |h| output::history(h)),
        other => return Err(unexpected(other)),
    }
    Ok(())
}

/// Parses `K=V` arguments.
fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>, Failure> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(usage(format_args!("{what} '{item}' is not K=V"))),
        })
        .collect()
}

/// A value of `--extra` or `--instance-info`: JSON if it parses (`4`,
/// `true`, `{"a": 1}`), else the text as a string (`http://host/a.iso`), as
/// the `baremetal` CLI reads them.
fn json_or_string(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
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
