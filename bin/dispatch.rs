//! Turns each admin request into a call on the site and the answer into a
//! response. Node and port requests call the site's [`Router`] directly,
//! the functions that also answer the supervisor's messages an embedding
//! application sends, so a request takes no extra mailbox hop; creating
//! nodes goes to the supervisor, which spawns their actors. This file only
//! translates, and applies the drain rule (`Request::drain_refuses`) to the
//! requests that are not jobs: the job queue refuses jobs itself, and here
//! the rest of what drain stops is refused before it reaches the router.

use std::time::Duration;

use kiln_actors::events::{EventFilter, EventKind, RecentEvents, SubscribeChannel};
use kiln_actors::jobs::*;
use kiln_actors::protocol::{Request, Response};
use kiln_actors::supervisor::GetStatus;
use kiln_actors::*;
use kiln_store::JobId;
use tokio::sync::mpsc;

use crate::connection::Connection;

fn gone() -> KilnError {
    KilnError::Unavailable("the site is shutting down".into())
}

/// Creates nodes: the one node request that needs the supervisor's
/// mailbox (it spawns their actors); the rest go through the router.
async fn create(site: &Site, nodes: Vec<NewNode>) -> Result<Vec<NodeView>, KilnError> {
    site.supervisor.send(CreateNodes(nodes)).await.map_err(|_| gone())?
}

async fn submit(site: &Site, job: SubmitJob) -> Result<JobId, KilnError> {
    nodes_exist(site, &job.ops).await?;
    site.jobs.send(job).await.map_err(|_| gone())?
}

/// On a shared store the queue's own admission cannot see the nodes other
/// members run: a node set that names a node no member has is refused
/// here, from the store, so that nothing is stored for it (as on a site of
/// one).
async fn nodes_exist(site: &Site, ops: &[Opcode]) -> Result<(), KilnError> {
    if site.registry.shared.is_none() {
        return Ok(());
    }
    let router = site.router();
    for op in ops {
        if let Opcode::Node { nodes, .. } | Opcode::Hold { nodes } = op {
            router.resolve(nodes).await?;
        }
    }
    Ok(())
}

/// Answers one request.
pub async fn handle(site: &Site, request: Request) -> Response {
    match answer(site, request).await {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    }
}

/// The members of the site as its store remembers them (none on a store of
/// its own), read from the database on whichever member is asked.
async fn members(site: &Site) -> Result<Vec<MemberView>, KilnError> {
    let me = site.config.shared.as_ref().map(|s| s.member.clone());
    let rows = site.store.read(|b| b.members()).await?;
    Ok(rows.iter().map(|row| MemberView::of(row, me.as_deref())).collect())
}

/// The most jobs one `kiln job list ID...` may name.
const MAX_LISTED_IDS: usize = 10_000;

async fn answer(site: &Site, request: Request) -> Result<Response, KilnError> {
    let fanout = |f: Option<u32>| f.map(|f| f as usize).unwrap_or(site.live.default_fanout()).max(1);
    // Jobs are refused by the queue itself, atomically with their admission.
    let queued = matches!(request, Request::NodeOp { .. } | Request::JobSubmit { .. } | Request::JobSubmitMany { .. });
    if request.drain_refuses() && !queued {
        site.jobs.send(CheckNotDrained).await.map_err(|_| gone())??;
    }
    let router = site.router();
    Ok(match request {
        Request::Hello { .. } => return Err(KilnError::Protocol("hello was already exchanged".into())),
        Request::Events { .. } => return Err(KilnError::Protocol("events are streamed, not answered".into())),
        Request::NodeListPages { .. } => {
            return Err(KilnError::Protocol("a node list in pages is streamed, not answered".into()));
        }
        Request::Status => {
            let mut status = site.supervisor.send(GetStatus).await.map_err(|_| gone())?;
            status.members = members(site).await?;
            Response::Status(status)
        }
        Request::MemberList => Response::Members(members(site).await?),
        Request::NodeCreate(n) => Response::Nodes(create(site, vec![n]).await?),
        Request::NodeImport(ns) => Response::Nodes(create(site, ns).await?),
        Request::NodeList { nodes, state, maintenance, bmc, stale } => {
            Response::Nodes(router.list_nodes(ListNodes { nodes, state, maintenance, bmc, stale }).await?)
        }
        Request::NodeShow { node } => Response::NodeDetail(router.node_detail(GetNodeDetail(node)).await?),
        Request::NodeValidate { nodes } => {
            Response::Validation(router.validate_nodes(ValidateNodes { nodes, fanout: fanout(None) }).await?)
        }
        Request::NodeHistory { node, limit } => {
            let id = router.find(&node).await?;
            let limit = limit.clamp(1, 10_000) as usize;
            Response::History(site.store.read(move |b| b.load_history(id, limit)).await?)
        }
        Request::NodeSet { node, update } => {
            Response::Node(router.node_action(NodeAction { node, op: Op::Update(update), wait: true }).await?)
        }
        Request::NodeDelete { nodes } => Response::Outcomes(router.delete_nodes(DeleteNodes(nodes)).await?),
        Request::NodeCallback { node, token, failure } => Response::Node(
            router.node_action(NodeAction { node, op: Op::Callback { token, failure }, wait: true }).await?,
        ),
        Request::NodeOp { nodes, op, wait, fanout: f, priority } => {
            // Without `-f`, the opcode takes `default_fanout` when it starts,
            // as an opcode of a job file does.
            let ops = vec![Opcode::Node { nodes, op, fanout: f, wait }];
            Response::JobSubmitted(submit(site, SubmitJob { ops, priority, depends: Vec::new() }).await?)
        }
        Request::JobSubmit { ops, priority, depends } => {
            Response::JobSubmitted(submit(site, SubmitJob { ops, priority, depends }).await?)
        }
        Request::JobSubmitMany { jobs } => {
            for job in &jobs {
                nodes_exist(site, &job.ops).await?;
            }
            Response::JobsSubmitted(site.jobs.send(SubmitJobs(jobs)).await.map_err(|_| gone())??)
        }
        Request::JobList { ids, .. } if !ids.is_empty() => Response::Jobs(jobs_by_id(site, ids).await?),
        Request::JobList { status, limit, ids: _ } => {
            let list = ListJobs { status, limit: limit.map(|n| n as usize) };
            Response::Jobs(site.jobs.send(list).await.map_err(|_| gone())??)
        }
        Request::JobShow { id } => Response::Job(site.jobs.send(GetJob(id)).await.map_err(|_| gone())??),
        Request::JobWait { id, after_serial, timeout_ms } => {
            let wait = WaitJobChange { job: id, after_serial, timeout: Duration::from_millis(timeout_ms.min(600_000)) };
            Response::JobChange(site.jobs.send(wait).await.map_err(|_| gone())??)
        }
        Request::JobCancel { id } => Response::JobCanceled(site.jobs.send(CancelJob(id)).await.map_err(|_| gone())??),
        Request::JobArchive { id } => {
            site.jobs.send(ArchiveJob(id)).await.map_err(|_| gone())??;
            Response::Done
        }
        Request::JobAutoArchive { older_than } => {
            let archived = site.jobs.send(ArchiveOld { age: older_than }).await.map_err(|_| gone())??;
            Response::JobsArchived(archived as u64)
        }
        Request::JobPriority { id, priority } => {
            Response::Job(site.jobs.send(SetJobPriority { job: id, priority }).await.map_err(|_| gone())??)
        }
        Request::QueueDrain { on } => {
            site.jobs.send(SetDrain(on)).await.map_err(|_| gone())??;
            Response::Queue(site.jobs.send(GetQueueInfo).await.map_err(|_| gone())?)
        }
        request @ (Request::Exec { .. } | Request::Copy { .. }) => {
            Response::Exec(fanout_run(site, request, None).await?)
        }
        Request::PeriodicList => {
            Response::Periodic(site.scheduler.send(kiln_actors::scheduler::ListPeriodic).await.map_err(|_| gone())?)
        }
        Request::PeriodicRun { name } => {
            let run = kiln_actors::scheduler::RunPeriodic(name);
            Response::Periodic(vec![site.scheduler.send(run).await.map_err(|_| gone())??])
        }
        Request::QueueStatus => Response::Queue(site.jobs.send(GetQueueInfo).await.map_err(|_| gone())?),
        Request::PowerStatus { nodes } => {
            Response::Outcomes(router.power_status(PowerStatus { nodes, fanout: fanout(None) }).await?)
        }
        Request::PortCreate { address, node } => {
            Response::Port(router.create_port(CreatePort { address, node }).await?)
        }
        Request::PortList { node } => Response::Ports(router.list_ports(ListPorts { node }).await?),
        Request::PortDelete { address } => Response::Port(router.delete_port(DeletePort(address)).await?),
        Request::PortSet { address, group } => {
            Response::Port(router.set_port_group(SetPortGroup { address, group }).await?)
        }
        Request::PortGroupCreate(group) => Response::PortGroup(router.create_port_group(CreatePortGroup(group)).await?),
        Request::PortGroupList { node } => {
            Response::PortGroups(router.list_port_groups(ListPortGroups { node }).await?)
        }
        Request::PortGroupShow { group } => Response::PortGroup(router.get_port_group(GetPortGroup(group)).await?),
        Request::PortGroupDelete { group } => {
            Response::PortGroup(router.delete_port_group(DeletePortGroup(group)).await?)
        }
    })
}

/// The jobs of `kiln job list ID...`, live or archived, in the order
/// named; every id that names no job is reported at once.
async fn jobs_by_id(site: &Site, ids: Vec<JobId>) -> Result<Vec<JobView>, KilnError> {
    if ids.len() > MAX_LISTED_IDS {
        return Err(KilnError::InvalidInput(format!("{} job ids: at most {MAX_LISTED_IDS} at once", ids.len())));
    }
    let mut jobs = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match site.jobs.send(GetJob(id)).await.map_err(|_| gone())? {
            // Lists carry no logs (`kiln job show` has them).
            Ok(job) => jobs.push(JobView { log: None, ..job }),
            Err(KilnError::NotFound(_)) => missing.push(id.to_string()),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(KilnError::NotFound(format!("no such job{s}: {}", missing.join(", "))));
    }
    Ok(jobs)
}

/// Runs a fanout request (exec or copy), reporting its progress to `sink`
/// when given; its nodes' outcomes in node-set order. Bad input is refused
/// before anything runs.
pub async fn fanout_run(
    site: &Site,
    request: Request,
    sink: Option<&kiln_actors::exec::Sink>,
) -> Result<Vec<kiln_actors::exec::ExecOutcome>, KilnError> {
    use kiln_actors::exec;
    match request {
        Request::Exec { nodes, spec, options, .. } => {
            options.validate()?;
            let targets = exec::targets(&site.router(), &nodes).await?;
            Ok(exec::run_with(&spec, targets, &options, sink).await)
        }
        Request::Copy { nodes, spec, options, .. } => {
            spec.validate()?;
            options.validate()?;
            let targets = exec::targets(&site.router(), &nodes).await?;
            Ok(exec::copy_with(&spec, targets, &options, sink).await)
        }
        other => Err(KilnError::Protocol(format!("{} is not a fanout request", other.kind()))),
    }
}

/// The filter of an events request: `nodes` is a node set (groups allowed)
/// or one node's uuid (on a shared store, of a node any member runs);
/// nodes not enrolled yet may be named, so a follower can watch a node
/// from its creation on.
pub async fn event_filter(site: &Site, nodes: Option<&str>, kinds: Vec<EventKind>) -> Result<EventFilter, KilnError> {
    let nodes = match nodes {
        None => None,
        Some(expr) if expr.trim().is_empty() => {
            return Err(KilnError::InvalidInput("the node set to follow is empty; omit -w for every node".into()));
        }
        Some(expr) => Some(match site.registry.find(expr.trim()) {
            Some((_, name)) => kiln_actors::nodeset::NodeSet::from_names([name]),
            None => match expr.trim().parse::<kiln_store::NodeId>() {
                Ok(_) if site.registry.shared.is_some() => match site.router().resolve(expr).await {
                    Ok(found) => kiln_actors::nodeset::NodeSet::from_names(found.iter().map(|(_, n)| n.as_str())),
                    Err(_) => site.registry.parse(expr)?,
                },
                _ => site.registry.parse(expr)?,
            },
        }),
    };
    Ok(EventFilter { nodes, kinds })
}

/// Streams events to a client. Without `follow`: the recent ones, then a
/// marker. With `follow`: the marker as soon as the subscription is in place
/// (everything after it is live), then every new event until the client goes
/// away, or leaves an event unread for the frame timeout. With `since`, the
/// stored events after that serial come first, where the recent ones would.
/// Only the events `filter` lets through are sent.
pub async fn stream_events(conn: &mut Connection, site: &Site, follow: bool, since: Option<u64>, filter: EventFilter) {
    async fn write(conn: &mut Connection, r: Response) -> bool {
        conn.send(r).await.is_ok()
    }
    if let Some(after) = since {
        // Subscribed first: the bus answers the last serial it delivered,
        // which is stored; the replay goes up to it and the channel holds
        // everything after it, so nothing falls in between.
        let (tx, mut rx) = mpsc::channel(events::RECENT + 4096);
        let subscribe = SubscribeChannel { tx, backlog: false, filter: filter.clone() };
        let Ok(upto) = site.events.send(subscribe).await else { return };
        let mut cursor = after;
        while cursor < upto {
            let page = match site.store.read(move |b| b.load_events(cursor, 1000)).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = write(conn, Response::Error(e.into())).await;
                    return;
                }
            };
            let Some(last) = page.last().map(|r| r.serial) else { break };
            cursor = last;
            let decoded = tokio::task::spawn_blocking(move || {
                page.iter().filter(|r| r.serial <= upto).filter_map(events::event_of).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for e in decoded.into_iter().filter(|e| filter.matches(e)) {
                if !write(conn, Response::Event(e)).await {
                    return;
                }
            }
        }
        if !write(conn, Response::EventsCaughtUp).await || !follow {
            return;
        }
        while let Some(e) = rx.recv().await {
            if !write(conn, Response::Event(e)).await {
                return;
            }
        }
        return;
    }
    if !follow {
        let recent = site.events.send(RecentEvents(filter)).await.unwrap_or_default();
        for e in recent {
            if !write(conn, Response::Event(e)).await {
                return;
            }
        }
        let _ = write(conn, Response::EventsCaughtUp).await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(events::RECENT + 4096);
    if site.events.send(SubscribeChannel { tx, backlog: false, filter }).await.is_err() {
        return;
    }
    if !write(conn, Response::EventsCaughtUp).await {
        return;
    }
    while let Some(e) = rx.recv().await {
        if !write(conn, Response::Event(e)).await {
            return;
        }
    }
}
