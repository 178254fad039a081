//! Turns each admin request into the site's typed messages and the answer
//! into a response. The same messages are what an embedding application
//! sends; this file only translates.

use std::time::Duration;

use kiln_actors::codec;
use kiln_actors::events::{EventFilter, EventKind, RecentEvents, SubscribeChannel};
use kiln_actors::jobs::*;
use kiln_actors::protocol::{Request, Response};
use kiln_actors::supervisor::GetStatus;
use kiln_actors::*;
use kiln_store::JobId;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

fn gone() -> KilnError {
    KilnError::Unavailable("the site is shutting down".into())
}

/// Sends a message to the supervisor and flattens the two error layers.
async fn ask<M>(site: &Site, msg: M) -> Result<<M as HasResult>::Ok, KilnError>
where
    M: actix::Message<Result = Result<<M as HasResult>::Ok, KilnError>> + HasResult + Send + 'static,
    Supervisor: actix::Handler<M>,
    <M as HasResult>::Ok: Send,
{
    site.supervisor.send(msg).await.map_err(|_| gone())?
}

/// The success type of a supervisor message.
pub trait HasResult {
    type Ok;
}

macro_rules! has_result {
    ($($m:ty => $ok:ty),* $(,)?) => { $(impl HasResult for $m { type Ok = $ok; })* };
}

has_result!(
    CreateNodes => Vec<NodeView>,
    NodeAction => NodeView,
    GetNode => NodeView,
    ListNodes => Vec<NodeView>,
    PowerStatus => Vec<NodeOutcome>,
    DeleteNodes => Vec<NodeOutcome>,
    CreatePort => PortView,
    ListPorts => Vec<PortView>,
    DeletePort => PortView,
    GetNodeDetail => NodeDetail,
    ValidateNodes => Vec<NodeValidation>,
    SetPortGroup => PortView,
    CreatePortGroup => PortGroupView,
    ListPortGroups => Vec<PortGroupView>,
    GetPortGroup => PortGroupView,
    DeletePortGroup => PortGroupView,
);

async fn submit(site: &Site, job: SubmitJob) -> Result<JobId, KilnError> {
    site.jobs.send(job).await.map_err(|_| gone())?
}

/// Answers one request.
pub async fn handle(site: &Site, request: Request) -> Response {
    match answer(site, request).await {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    }
}

async fn answer(site: &Site, request: Request) -> Result<Response, KilnError> {
    let fanout = |f: Option<u32>| f.map(|f| f as usize).unwrap_or(site.live.default_fanout()).max(1);
    Ok(match request {
        Request::Hello { .. } => return Err(KilnError::Protocol("hello was already exchanged".into())),
        Request::Events { .. } => return Err(KilnError::Protocol("events are streamed, not answered".into())),
        Request::Status => Response::Status(site.supervisor.send(GetStatus).await.map_err(|_| gone())?),
        Request::NodeCreate(n) => Response::Nodes(ask(site, CreateNodes(vec![n])).await?),
        Request::NodeImport(ns) => Response::Nodes(ask(site, CreateNodes(ns)).await?),
        Request::NodeList { nodes, state, maintenance } => {
            Response::Nodes(ask(site, ListNodes { nodes, state, maintenance }).await?)
        }
        Request::NodeShow { node } => Response::NodeDetail(ask(site, GetNodeDetail(node)).await?),
        Request::NodeValidate { nodes } => {
            Response::Validation(ask(site, ValidateNodes { nodes, fanout: fanout(None) }).await?)
        }
        Request::NodeHistory { node, limit } => {
            let (id, _) =
                site.registry.find(&node).ok_or_else(|| KilnError::NotFound(format!("no such node: {node}")))?;
            let limit = limit.clamp(1, 10_000) as usize;
            Response::History(site.store.read(move |b| b.load_history(id, limit)).await?)
        }
        Request::NodeSet { node, update } => {
            Response::Node(ask(site, NodeAction { node, op: Op::Update(update), wait: true }).await?)
        }
        Request::NodeDelete { nodes } => Response::Outcomes(ask(site, DeleteNodes(nodes)).await?),
        Request::NodeOp { nodes, op, wait: _, fanout: f } => {
            let ops = vec![Opcode::Node { nodes, op, fanout: Some(fanout(f) as u32) }];
            Response::JobSubmitted(submit(site, SubmitJob { ops, priority: 0, depends: Vec::new() }).await?)
        }
        Request::JobSubmit { ops, priority, depends } => {
            Response::JobSubmitted(submit(site, SubmitJob { ops, priority, depends }).await?)
        }
        Request::JobList { status, limit } => {
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
        Request::QueueDrain { on } => {
            site.jobs.send(SetDrain(on)).await.map_err(|_| gone())??;
            Response::Queue(site.jobs.send(GetQueueInfo).await.map_err(|_| gone())?)
        }
        Request::Exec { nodes, spec } => {
            let router = site.router();
            let targets = kiln_actors::exec::targets(&router, &nodes).await?;
            Response::Exec(kiln_actors::exec::run(&spec, targets).await)
        }
        Request::Copy { nodes, spec } => {
            let router = site.router();
            let targets = kiln_actors::exec::targets(&router, &nodes).await?;
            Response::Exec(kiln_actors::exec::copy(&spec, targets).await)
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
            Response::Outcomes(ask(site, PowerStatus { nodes, fanout: fanout(None) }).await?)
        }
        Request::PortCreate { address, node } => Response::Port(ask(site, CreatePort { address, node }).await?),
        Request::PortList { node } => Response::Ports(ask(site, ListPorts { node }).await?),
        Request::PortDelete { address } => Response::Port(ask(site, DeletePort(address)).await?),
        Request::PortSet { address, group } => Response::Port(ask(site, SetPortGroup { address, group }).await?),
        Request::PortGroupCreate(group) => Response::PortGroup(ask(site, CreatePortGroup(group)).await?),
        Request::PortGroupList { node } => Response::PortGroups(ask(site, ListPortGroups { node }).await?),
        Request::PortGroupShow { group } => Response::PortGroup(ask(site, GetPortGroup(group)).await?),
        Request::PortGroupDelete { group } => Response::PortGroup(ask(site, DeletePortGroup(group)).await?),
    })
}

/// The filter of an events request: `nodes` is a node set (groups allowed)
/// or one node's uuid; nodes not enrolled yet may be named, so a follower
/// can watch a node from its creation on.
pub fn event_filter(site: &Site, nodes: Option<&str>, kinds: Vec<EventKind>) -> Result<EventFilter, KilnError> {
    let nodes = match nodes {
        None => None,
        Some(expr) if expr.trim().is_empty() => {
            return Err(KilnError::InvalidInput("the node set to follow is empty; omit -w for every node".into()));
        }
        Some(expr) => Some(match site.registry.find(expr.trim()) {
            Some((_, entry)) => kiln_actors::nodeset::NodeSet::from_names([entry.name]),
            None => site.registry.parse(expr)?,
        }),
    };
    Ok(EventFilter { nodes, kinds })
}

/// Streams events to a client. Without `follow`: the recent ones, then a
/// marker. With `follow`: the marker as soon as the subscription is in place
/// (everything after it is live), then every new event until the client goes
/// away, or leaves an event unread for `write_timeout`. Only the events
/// `filter` lets through are sent.
pub async fn stream_events(
    stream: &mut UnixStream,
    site: &Site,
    follow: bool,
    filter: EventFilter,
    write_timeout: Duration,
) {
    async fn write(stream: &mut UnixStream, r: Response, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, codec::write_message(stream, &r)).await, Ok(Ok(())))
    }
    if !follow {
        let recent = site.events.send(RecentEvents(filter)).await.unwrap_or_default();
        for e in recent {
            if !write(stream, Response::Event(e), write_timeout).await {
                return;
            }
        }
        let _ = write(stream, Response::EventsCaughtUp, write_timeout).await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(events::RECENT + 4096);
    if site.events.send(SubscribeChannel { tx, backlog: false, filter }).await.is_err() {
        return;
    }
    if !write(stream, Response::EventsCaughtUp, write_timeout).await {
        return;
    }
    while let Some(e) = rx.recv().await {
        if !write(stream, Response::Event(e), write_timeout).await {
            return;
        }
    }
}
