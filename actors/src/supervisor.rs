//! The supervisor: the registry of node actors, the router of every node
//! message, and the restarter of node actors that died.
//!
//! The registry ([`registry`]) holds every node, its actor or its record
//! at rest, and routes every node message. actix does not restart an actor whose handler panicked (its mailbox just
//! closes), so every forwarded message that finds a closed mailbox makes the
//! supervisor re-create that node's actor from the store, applying the
//! restart rule to the task that was in flight, and try once more.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use actix::prelude::*;
use futures::stream::{self, StreamExt};
use kiln_store::{NodeId, NodeRecord, PortRecord, ProvisionState, Write, normalize_mac};

mod listing;
mod ports;
mod registry;
pub use listing::Listing;
pub use ports::{
    CreatePort, CreatePortGroup, DeletePort, DeletePortGroup, GetPortGroup, ListPortGroups, ListPorts, NewPortGroup,
    SetPortGroup,
};
pub(crate) use registry::put_to_rest;
pub use registry::{Asked, NodeEntry, NodeMap, Registry};
use serde::{Deserialize, Serialize};

use crate::KilnError;
use crate::node::rest::Routed;
use crate::node::{NodeActor, NodeEnv, NodeValidation, Op, ReadPower, RunOp, RunOpIn, ShowNode, ValidateNode, plan};
use crate::nodeset::NodeSet;
use crate::view::{NodeDetail, NodeResult, NodeView, PortGroupView, PortView, SiteStatus};

/// The built-in node group of the nodes this process runs (`@local`): on a
/// store shared by several members, this member's share; otherwise every
/// node. A configured group may not take the name.
pub const LOCAL_GROUP: &str = "local";

/// A node to create (`node create`, one element of `node import`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub driver_info: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default, with = "kiln_store::json_in_binary")]
    pub extra: kiln_store::JsonObject,
    #[serde(default, with = "kiln_store::json_in_binary")]
    pub instance_info: kiln_store::JsonObject,
    /// MAC addresses of the node's ports.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// Checks a node name: non-empty, at most 255 characters of letters, digits,
/// `.`, `_`, `-`, and not a uuid (a uuid always means a node's identity).
pub fn validate_name(name: &str) -> Result<(), KilnError> {
    check_name("node", name)
}

/// The rule of [`validate_name`], for the names of `what` (nodes, port
/// groups): both are looked up by name or uuid.
fn check_name(what: &str, name: &str) -> Result<(), KilnError> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 255 || !ok_chars {
        return Err(KilnError::InvalidInput(format!(
            "{what} name '{name}' is not valid: use 1-255 letters, digits, '.', '_' or '-'"
        )));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(KilnError::InvalidInput(format!("{what} name '{name}' is a uuid; pick a name")));
    }
    Ok(())
}

/// The supervisor actor.
pub struct Supervisor {
    registry: Registry,
    /// Shared by every node actor: one pointer per node, not a copy of
    /// each handle (a million nodes live in one process).
    env: Arc<NodeEnv>,
    facts: SiteFacts,
}

impl Supervisor {
    /// Node actors start on the current thread's arbiter.
    pub fn new(registry: Registry, env: NodeEnv, facts: SiteFacts) -> Self {
        let env = Arc::new(env);
        registry.serve(env.clone());
        Supervisor { registry, env, facts }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// Adds records already in the store (at start-up, or taken over), their
/// nodes at rest.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptRecords(pub Vec<NodeRecord>);

impl Handler<AdoptRecords> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: AdoptRecords, _: &mut Context<Self>) {
        for r in msg.0 {
            self.registry.add(r);
        }
    }
}

/// Creates nodes, all or none.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<NodeView>, KilnError>")]
pub struct CreateNodes(pub Vec<NewNode>);

impl Handler<CreateNodes> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Vec<NodeView>, KilnError>>;

    fn handle(&mut self, CreateNodes(nodes): CreateNodes, _: &mut Context<Self>) -> Self::Result {
        let prepared = prepare_nodes(&self.registry, nodes, self.env.clock.now());
        let store = self.env.store.clone();
        Box::pin(
            async move {
                let (records, batch) = prepared?;
                store.commit(batch).await?;
                Ok(records)
            }
            .into_actor(self)
            .map(|res: Result<Vec<Arc<NodeRecord>>, KilnError>, act, _| {
                let records = res?;
                Ok(records
                    .into_iter()
                    .map(|r| {
                        // The store has let go of its share: no copy.
                        let r = Arc::unwrap_or_clone(r);
                        let view = NodeView::of(&r, None);
                        act.registry.add(r);
                        view
                    })
                    .collect())
            }),
        )
    }
}

/// Validates new nodes against each other and the registry and builds the
/// records and the one batch that stores them (sharing the records),
/// stamped `now` (the site clock's reading). Public so that the fuzz
/// target for import files (fuzz/) runs the daemon's own checks.
pub fn prepare_nodes(
    registry: &Registry,
    nodes: Vec<NewNode>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Vec<Arc<NodeRecord>>, Vec<Write>), KilnError> {
    if nodes.is_empty() {
        return Err(KilnError::InvalidInput("no nodes given".into()));
    }
    let mut names = BTreeSet::new();
    let mut macs = BTreeSet::new();
    let mut records = Vec::with_capacity(nodes.len());
    let mut batch = Vec::with_capacity(nodes.len());
    let mut ports = Vec::new();
    for n in nodes {
        validate_name(&n.name)?;
        if !names.insert(n.name.clone()) {
            return Err(KilnError::Conflict(format!("node name '{}' appears twice", n.name)));
        }
        if registry.by_name.contains_key(&n.name) {
            return Err(KilnError::Conflict(format!("node name '{}' is already in use", n.name)));
        }
        let driver = n.driver.parse().map_err(|e| KilnError::InvalidInput(format!("node {}: {e}", n.name)))?;
        kiln_drivers::validate(&n.driver, &n.driver_info)
            .map_err(|e| KilnError::InvalidInput(format!("node {}: {e}", n.name)))?;
        let mut record = NodeRecord::enroll(n.name.clone(), driver, now);
        record.driver_info = n.driver_info;
        record.properties = n.properties;
        record.extra = n.extra;
        record.instance_info = n.instance_info;
        for mac in &n.ports {
            let address = normalize_mac(mac).map_err(|e| KilnError::InvalidInput(format!("node {}: {e}", n.name)))?;
            if !macs.insert(address.clone()) {
                return Err(KilnError::Conflict(format!("port address '{address}' appears twice")));
            }
            ports.push(PortRecord {
                uuid: kiln_store::PortId::new(),
                address,
                node: record.uuid,
                portgroup: None,
                created_at: now,
            });
        }
        let record = Arc::new(record);
        batch.push(Write::InsertNode(record.clone()));
        records.push(record);
    }
    batch.extend(ports.into_iter().map(Write::InsertPort));
    Ok((records, batch))
}

/// Runs an exclusive operation on one node (a name or a uuid).
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeView, KilnError>")]
pub struct NodeAction {
    pub node: String,
    pub op: Op,
    pub wait: bool,
}

/// Runs an exclusive operation on every node of a node set, at most
/// `fanout` at once; one outcome per node, in name order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<NodeResult>, KilnError>")]
pub struct BulkAction {
    pub nodes: String,
    pub op: Op,
    pub wait: bool,
    pub fanout: usize,
}

/// Shows one node.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeView, KilnError>")]
pub struct GetNode(pub String);

/// Shows one node with its ports and port groups (`kiln node show`).
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeDetail, KilnError>")]
pub struct GetNodeDetail(pub String);

/// Validates the driver interfaces of every node of a set, at most `fanout`
/// at once; one result per node, in node-set order. Shared: it answers
/// while exclusive tasks hold the nodes and takes no reservation.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<NodeValidation>, KilnError>")]
pub struct ValidateNodes {
    pub nodes: String,
    pub fanout: usize,
}

/// Lists nodes: all, or a node set; optionally only one state or only
/// nodes in maintenance. Either way in node-set order (`demo2` before
/// `demo10`).
#[derive(Debug, Default, Message)]
#[rtype(result = "Result<Vec<NodeView>, KilnError>")]
pub struct ListNodes {
    pub nodes: Option<String>,
    pub state: Option<ProvisionState>,
    pub maintenance: Option<bool>,
    /// Only nodes whose BMC is (not) marked unreachable.
    pub bmc: Option<BmcReach>,
    /// Only nodes whose power state no BMC has confirmed for longer than
    /// this (or ever), by the site clock.
    pub stale: Option<std::time::Duration>,
}

impl ListNodes {
    /// Whether `v` passes the list's filters (`now`: the site clock's time).
    fn lists(&self, v: &NodeView, now: kiln_store::Timestamp) -> bool {
        self.state.is_none_or(|s| v.provision_state == s)
            && self.maintenance.is_none_or(|m| v.maintenance == m)
            && self.bmc.is_none_or(|b| b.of(v))
            && self.stale.is_none_or(|age| power_stale(v, age, now))
    }
}

/// Whether a node's BMC answers, as `node list --bmc` filters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BmcReach {
    Reachable,
    Unreachable,
}

impl BmcReach {
    /// Whether `node` is so.
    pub fn of(self, node: &NodeRecord) -> bool {
        node.bmc_unreachable_since.is_some() == (self == BmcReach::Unreachable)
    }
}

/// Whether no BMC has confirmed `node`'s power state for longer than
/// `age` at `now` (never confirmed counts as stale).
pub fn power_stale(node: &NodeRecord, age: std::time::Duration, now: kiln_store::Timestamp) -> bool {
    node.power_verified_at.is_none_or(|at| (now - at).to_std().unwrap_or_default() > age)
}

/// Reads the power state of every node of a set from its BMC.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<NodeResult>, KilnError>")]
pub struct PowerStatus {
    pub nodes: String,
    pub fanout: usize,
}

/// Deletes every node of a set (each refused unless its state allows it).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<NodeResult>, KilnError>")]
pub struct DeleteNodes(pub String);

/// The site at a glance.
#[derive(Debug, Message)]
#[rtype(result = "SiteStatus")]
pub struct GetStatus;

/// Re-creates the actor of a node whose mailbox closed (it panicked).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KilnError>")]
pub struct RestartNode {
    pub node: NodeId,
    /// The address found dead: if the registry already holds another, the
    /// node was restarted meanwhile and nothing is done.
    pub dead: Addr<NodeActor>,
}

impl Handler<RestartNode> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), KilnError>>;

    fn handle(&mut self, msg: RestartNode, _: &mut Context<Self>) -> Self::Result {
        let already = !self.registry.still_dead(msg.node, &msg.dead);
        let store = self.env.store.clone();
        let clock = self.env.clock.clone();
        let id = msg.node;
        Box::pin(
            async move {
                if already {
                    return Ok(None);
                }
                let Some(record) = store.read(move |b| b.load_node(id)).await? else {
                    return Ok(None);
                };
                let why = crate::panics::take_last()
                    .map(|m| format!("the node's worker crashed ({m})"))
                    .unwrap_or_else(|| "the node's worker stopped unexpectedly".into());
                let record = match plan::recover(&record, &why, clock.now()) {
                    Some((fixed, entry)) => {
                        store
                            .commit(vec![Write::UpdateNode(fixed.clone().into()), Write::AppendHistory(entry)])
                            .await?;
                        fixed
                    }
                    None => record,
                };
                tracing::warn!(node = %id, name = %record.name, reason = %why, "restarting node actor");
                Ok(Some(record))
            }
            .into_actor(self)
            .map(|res: Result<Option<NodeRecord>, KilnError>, act, _| {
                if let Some(record) = res? {
                    act.registry.add_live(record);
                }
                Ok(())
            }),
        )
    }
}

/// Sends a message to a node actor, restarting it once if its mailbox was
/// found closed.
pub async fn send_to_node<M>(
    supervisor: &Addr<Supervisor>,
    registry: &Registry,
    id: NodeId,
    make: impl Fn() -> M,
) -> Result<M::Result, KilnError>
where
    M: Message + Send + 'static,
    M::Result: Send,
    NodeActor: Handler<Routed<M>>,
{
    send_to_node_or(supervisor, registry, id, make, |_| None).await
}

/// [`send_to_node`], answered by `at_rest` from the record of a node at
/// rest when it gives an answer (the node's actor is not started for it).
pub async fn send_to_node_or<M>(
    supervisor: &Addr<Supervisor>,
    registry: &Registry,
    id: NodeId,
    make: impl Fn() -> M,
    at_rest: impl Fn(&NodeRecord) -> Option<M::Result>,
) -> Result<M::Result, KilnError>
where
    M: Message + Send + 'static,
    M::Result: Send,
    NodeActor: Handler<Routed<M>>,
{
    let missing = || KilnError::NotFound(format!("node {id} does not exist"));
    for _ in 0..2 {
        let asked = match registry.send(id, make(), &at_rest).ok_or_else(missing)? {
            Asked::Answered(answer) => return Ok(answer),
            Asked::Sent(request) => request,
        };
        match asked.await {
            Ok(r) => return Ok(r),
            Err(_) => {
                // Another caller's restart already put a live actor there.
                let Some(dead) = registry.dead(id) else {
                    if registry.by_id.contains_key(&id) {
                        continue;
                    }
                    return Err(missing());
                };
                supervisor
                    .send(RestartNode { node: id, dead })
                    .await
                    .map_err(|_| KilnError::Unavailable("the supervisor is not running".into()))??;
            }
        }
    }
    Err(KilnError::Unavailable(format!("node {id}'s worker keeps failing; see the daemon's log")))
}

/// The one routing path of node work: route, restart, fan out. The CLI's
/// dispatch and the job queue's opcodes call its functions directly (from
/// [`crate::Site::router`]); the supervisor's messages, the embedding API,
/// are answered by the same functions. Only what adds nodes to the
/// registry (creating nodes, restarting a crashed actor) goes through the
/// supervisor's mailbox; a node at rest gets its actor from the registry
/// ([`Registry::send`]).
#[derive(Clone)]
pub struct Router {
    pub supervisor: Addr<Supervisor>,
    pub registry: Registry,
    pub store: kiln_store::StoreHandle,
    /// The site clock: what new rows are stamped with.
    pub clock: crate::clock::SharedClock,
}

/// Lets the caller of a fan-out stop it from starting more nodes and see how
/// many have finished. Clones share one [`FanOutState`] (one allocation:
/// every job has a control, and most short jobs never use it).
#[derive(Clone, Default)]
pub struct FanOutControl(Arc<FanOutState>);

/// What the clones of a [`FanOutControl`] share.
#[derive(Default)]
pub struct FanOutState {
    pub cancel: AtomicBool,
    /// Woken when `cancel` is set, for work that waits (a sleep opcode).
    pub canceled: tokio::sync::Notify,
    pub done: AtomicU64,
}

impl std::ops::Deref for FanOutControl {
    type Target = FanOutState;
    fn deref(&self) -> &FanOutState {
        &self.0
    }
}

impl FanOutControl {
    /// Asks the work to stop starting anything new.
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.canceled.notify_waiters();
    }

    /// Waits `d` on `clock`, or less if canceled meanwhile; true when
    /// canceled.
    pub async fn sleep_unless_canceled(&self, d: std::time::Duration, clock: &crate::clock::SharedClock) -> bool {
        let woken = self.canceled.notified();
        if self.cancel.load(Ordering::Relaxed) {
            return true;
        }
        if d.is_zero() {
            // A timer would fire at the timer wheel's next tick, up to a
            // millisecond on, and arming it wakes the runtime's driver
            // through its eventfd: a `sleep 0` job paid both.
            return false;
        }
        tokio::select! {
            _ = clock.sleep(d) => self.cancel.load(Ordering::Relaxed),
            _ = woken => true,
        }
    }
}

impl Router {
    pub async fn run(&self, id: NodeId, op: Op, wait: bool) -> Result<NodeView, KilnError> {
        self.run_for(id, op, wait, None).await
    }

    /// [`Router::run`] for `holder`: it may run on a node `holder` holds.
    /// A node another member runs is asked of its owner.
    pub async fn run_for(&self, id: NodeId, op: Op, wait: bool, holder: Option<&str>) -> Result<NodeView, KilnError> {
        match &self.registry.shared {
            Some(shared) if !self.registry.by_id.contains_key(&id) => {
                crate::remote::run(self, shared, id, op, wait, holder).await
            }
            _ => self.run_local(id, op, wait, holder).await,
        }
    }

    /// [`Router::run_for`] on this process's own node actor only.
    pub async fn run_local(&self, id: NodeId, op: Op, wait: bool, holder: Option<&str>) -> Result<NodeView, KilnError> {
        let parent = tracing::Span::current();
        let renames = matches!(&op, Op::Update(u) if u.name.is_some());
        let deletes = matches!(&op, Op::Delete);
        let view = send_to_node(&self.supervisor, &self.registry, id, || RunOpIn {
            run: RunOp { op: op.clone(), wait },
            parent: parent.clone(),
            holder: holder.map(str::to_string),
        })
        .await??;
        if renames {
            self.registry.rename(id, &view.name);
        }
        if deletes {
            // Here, not in the caller: a delete another member asked for
            // runs here too.
            self.registry.remove(id);
        }
        Ok(view)
    }

    /// The node another member runs, if `id` is one: its owner is asked.
    fn elsewhere(&self, id: NodeId) -> Option<&crate::remote::Shared> {
        self.registry.shared.as_ref().filter(|_| !self.registry.by_id.contains_key(&id))
    }

    /// Holds a node for `holder` ([`crate::node::HoldNode`]), whichever
    /// member runs it.
    pub async fn hold(&self, id: NodeId, holder: &str) -> Result<NodeView, KilnError> {
        if let Some(shared) = self.elsewhere(id) {
            let request = crate::remote::Request::Hold { holder: holder.to_string() };
            return crate::remote::ask(self, shared, id, request).await;
        }
        self.hold_local(id, holder).await
    }

    /// [`Router::hold`] on this process's own node actor only.
    pub(crate) async fn hold_local(&self, id: NodeId, holder: &str) -> Result<NodeView, KilnError> {
        send_to_node(&self.supervisor, &self.registry, id, || crate::node::HoldNode { holder: holder.to_string() })
            .await?
    }

    /// Ends `holder`'s hold of a node, whichever member runs it; false when
    /// it held none.
    pub async fn release(&self, id: NodeId, holder: &str) -> bool {
        if let Some(shared) = self.elsewhere(id) {
            let request = crate::remote::Request::Release { holder: holder.to_string() };
            return crate::remote::ask(self, shared, id, request).await.is_ok();
        }
        self.release_local(id, holder).await
    }

    /// [`Router::release`] on this process's own node actor only.
    pub(crate) async fn release_local(&self, id: NodeId, holder: &str) -> bool {
        send_to_node(&self.supervisor, &self.registry, id, || crate::node::ReleaseNode { holder: holder.to_string() })
            .await
            .unwrap_or(false)
    }

    /// A live read of a node's power state, whichever member runs it: the
    /// node with the state read (the record keeps what was last committed).
    pub async fn read_power(&self, id: NodeId) -> Result<NodeView, KilnError> {
        match self.elsewhere(id) {
            Some(shared) => crate::remote::ask(self, shared, id, crate::remote::Request::ReadPower).await,
            None => self.read_power_local(id).await,
        }
    }

    /// [`Router::read_power`] on this process's own node actor.
    pub(crate) async fn read_power_local(&self, id: NodeId) -> Result<NodeView, KilnError> {
        let power = send_to_node(&self.supervisor, &self.registry, id, || ReadPower).await??;
        let view = self.show(id).await?;
        Ok(NodeView::of(&NodeRecord { power_state: power, ..(*view).clone() }, view.reservation.as_ref()))
    }

    /// A node as its actor holds it; one another member runs, as stored.
    pub async fn show(&self, id: NodeId) -> Result<NodeView, KilnError> {
        if self.registry.shared.is_some() && !self.registry.by_id.contains_key(&id) {
            let record = self.store.read(move |b| b.load_node(id)).await?;
            let record = record.ok_or_else(|| KilnError::NotFound(format!("node {id} does not exist")))?;
            return Ok(NodeView::of(&record, record.reservation.as_ref()));
        }
        // A node at rest is shown from its record: its actor would show the
        // same, and a list of a million nodes starts none.
        send_to_node_or(&self.supervisor, &self.registry, id, || ShowNode, |r| Some(NodeView::of(r, None))).await
    }

    /// Every node named by a uuid, a name or a node set
    /// ([`Registry::resolve`]); on a shared store, also the ones other
    /// members run.
    pub async fn resolve(&self, expr: &str) -> Result<Vec<(NodeId, String)>, KilnError> {
        let local = self.registry.resolve(expr);
        let Some(shared) = &self.registry.shared else { return local };
        if !matches!(local, Err(KilnError::NotFound(_))) {
            return local;
        }
        let names: Vec<String> = match self.registry.find(expr.trim()) {
            Some(found) => return Ok(vec![found]),
            None if expr.trim().parse::<NodeId>().is_ok() => vec![expr.trim().to_string()],
            None => self.registry.parse(expr)?.iter().collect(),
        };
        // This member's nodes, then the site's directory; the store for
        // names neither knows (a node created elsewhere a moment ago).
        let mut found: Vec<Option<(NodeId, String)>> = names
            .iter()
            .map(|name| {
                self.registry.find(name).or_else(|| {
                    let known = shared.directory.find(name);
                    shared.directory.count(known.is_some());
                    known
                })
            })
            .collect();
        let asked: Vec<String> =
            names.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| n.clone()).collect();
        if !asked.is_empty() {
            let stored = self.store.read(move |b| match b.shared() {
                Some(shared) => shared.find_nodes(&asked),
                None => Ok(Vec::new()),
            });
            let stored = stored.await?;
            let known: std::collections::HashMap<String, (NodeId, String)> = stored
                .into_iter()
                .flat_map(|(id, name)| [(name.clone(), (id, name.clone())), (id.to_string(), (id, name))])
                .collect();
            for (name, slot) in names.iter().zip(found.iter_mut()) {
                if slot.is_none() {
                    *slot = known.get(name).cloned();
                }
            }
        }
        let missing: Vec<&str> =
            names.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| n.as_str()).collect();
        if !missing.is_empty() {
            let folded = NodeSet::from_names(missing.iter().copied()).fold();
            return Err(KilnError::NotFound(format!(
                "no such node{}: {folded}",
                if missing.len() > 1 { "s" } else { "" }
            )));
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// One node by name or uuid, whichever member runs it.
    pub async fn find(&self, node: &str) -> Result<NodeId, KilnError> {
        Ok(self.find_named(node).await?.0)
    }

    /// [`Router::find`], with the node's name.
    pub async fn find_named(&self, node: &str) -> Result<(NodeId, String), KilnError> {
        if let Some(found) = self.registry.find(node) {
            return Ok(found);
        }
        let no_node = || KilnError::NotFound(format!("no such node: {node}"));
        if self.registry.shared.is_none() {
            return Err(no_node());
        }
        match self.resolve(node).await?.as_slice() {
            [(id, name)] => Ok((*id, name.clone())),
            _ => Err(no_node()),
        }
    }

    /// Runs `f` over `nodes` with at most `fanout` in flight; one result
    /// per node, in the nodes' order. Each node's work borrows this router
    /// rather than a clone of it: a clone is an actor address (two
    /// allocations) and a handful of shared counters, per node.
    pub async fn fan_out<'r, F, Fut>(&'r self, nodes: Vec<(NodeId, String)>, fanout: usize, f: F) -> Vec<NodeResult>
    where
        F: Fn(&'r Router, NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<NodeView, KilnError>>,
    {
        self.fan_out_with(nodes, fanout, &FanOutControl::default(), f).await
    }

    /// [`Router::fan_out`], counting finished nodes in `control.done` and
    /// starting no new node once `control.cancel` is set (those not started
    /// get a `canceled` error). Each node's answer becomes its
    /// [`NodeResult`], the shape every caller passes on, as soon as it
    /// comes: the node's whole view is let go at once rather than kept
    /// until the last node answers (at 100,000 nodes, 37 MB of views, and
    /// the copies of the list as it grew).
    pub async fn fan_out_with<'r, F, Fut>(
        &'r self,
        nodes: Vec<(NodeId, String)>,
        fanout: usize,
        control: &FanOutControl,
        f: F,
    ) -> Vec<NodeResult>
    where
        F: Fn(&'r Router, NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<NodeView, KilnError>>,
    {
        let f = &f;
        let mut results = Vec::with_capacity(nodes.len());
        let mut answers = stream::iter(nodes.into_iter().map(|(id, name)| async move {
            let result = if control.cancel.load(Ordering::Relaxed) {
                Err(KilnError::Canceled("not started: the job was canceled".into()))
            } else {
                f(self, id).await
            };
            control.done.fetch_add(1, Ordering::Relaxed);
            NodeResult::of(name, &result)
        }))
        .buffered(fanout.max(1));
        while let Some(result) = answers.next().await {
            results.push(result);
        }
        results
    }
}

impl Supervisor {
    pub fn router(&self, ctx: &Context<Self>) -> Router {
        Router {
            supervisor: ctx.address(),
            registry: self.registry.clone(),
            store: self.env.store.clone(),
            clock: self.env.clock.clone(),
        }
    }
}

/// The functions behind the node messages ([`NodeAction`], [`BulkAction`],
/// [`GetNode`], [`GetNodeDetail`], [`ValidateNodes`], [`ListNodes`],
/// [`PowerStatus`], [`DeleteNodes`]).
impl Router {
    pub async fn node_action(&self, msg: NodeAction) -> Result<NodeView, KilnError> {
        let id = self.find(&msg.node).await?;
        self.run(id, msg.op, msg.wait).await
    }

    pub async fn bulk_action(&self, msg: BulkAction) -> Result<Vec<NodeResult>, KilnError> {
        let nodes = self.resolve(&msg.nodes).await?;
        let (op, wait) = (msg.op, msg.wait);
        Ok(self
            .fan_out(nodes, msg.fanout, |r, id| {
                let op = op.clone();
                async move { r.run(id, op, wait).await }
            })
            .await)
    }

    pub async fn get_node(&self, GetNode(node): GetNode) -> Result<NodeView, KilnError> {
        let id = self.find(&node).await?;
        self.show(id).await
    }

    pub async fn node_detail(&self, GetNodeDetail(node): GetNodeDetail) -> Result<NodeDetail, KilnError> {
        let id = self.find(&node).await?;
        // The node from its actor, the rows from the store, at once.
        let rows = self.store.read(move |b| Ok((b.load_ports(Some(id))?, b.load_port_groups(Some(id))?)));
        let (view, rows) = futures::join!(self.show(id), rows);
        let (ports, groups) = rows?;
        let view = view?;
        let name = view.name.clone();
        Ok(NodeDetail {
            ports: PortView::all(&ports, &groups, |_| name.clone()),
            portgroups: groups.iter().map(|g| PortGroupView::of(g, &name, &ports)).collect(),
            node: view,
        })
    }

    pub async fn validate_nodes(&self, msg: ValidateNodes) -> Result<Vec<NodeValidation>, KilnError> {
        let nodes = self.resolve(&msg.nodes).await?;
        // One read for the whole set: one node's ports, or every port.
        let one = (nodes.len() == 1).then(|| nodes[0].0);
        let mut by_node: std::collections::HashMap<NodeId, Vec<PortRecord>> = Default::default();
        for port in self.store.read(move |b| b.load_ports(one)).await? {
            by_node.entry(port.node).or_default().push(port);
        }
        // And one for the records of the nodes other members run.
        let elsewhere: Vec<NodeId> =
            nodes.iter().map(|(id, _)| *id).filter(|id| self.elsewhere(*id).is_some()).collect();
        let mut stored: std::collections::HashMap<NodeId, NodeRecord> = Default::default();
        if !elsewhere.is_empty() {
            let records = self.store.read(move |b| match b.shared() {
                Some(shared) => shared.load_nodes_by_id(&elsewhere),
                None => Ok(Vec::new()),
            });
            stored = records.await?.into_iter().map(|r| (r.uuid, r)).collect();
        }
        let checks = nodes.into_iter().map(|(id, name)| {
            let ports = by_node.remove(&id).unwrap_or_default();
            let record = stored.remove(&id);
            async move {
                let asked = if self.elsewhere(id).is_some() {
                    validate_stored(id, record, ports).await
                } else {
                    send_to_node(&self.supervisor, &self.registry, id, || ValidateNode { ports: ports.clone() })
                        .await
                        .and_then(|r| r)
                };
                match asked {
                    Ok(interfaces) => NodeValidation { node: name, interfaces, error: None },
                    Err(e) => NodeValidation { node: name, interfaces: Default::default(), error: Some(e) },
                }
            }
        });
        Ok(stream::iter(checks).buffered(msg.fanout.max(1)).collect().await)
    }

    /// The whole list in one answer; [`Listing`] gives it page by page.
    pub async fn list_nodes(&self, msg: ListNodes) -> Result<Vec<NodeView>, KilnError> {
        Listing::start(self.clone(), msg).await?.all().await
    }

    pub async fn power_status(&self, msg: PowerStatus) -> Result<Vec<NodeResult>, KilnError> {
        let nodes = self.resolve(&msg.nodes).await?;
        Ok(self.fan_out(nodes, msg.fanout, |r, id| async move { r.read_power(id).await }).await)
    }

    pub async fn delete_nodes(&self, DeleteNodes(expr): DeleteNodes) -> Result<Vec<NodeResult>, KilnError> {
        let nodes = self.resolve(&expr).await?;
        Ok(self.fan_out(nodes, 64, |r, id| async move { r.run(id, Op::Delete, true).await }).await)
    }
}

/// Validates a node another member runs from its stored record (`None`:
/// gone), the record its owner committed, which is what its actor
/// validates.
async fn validate_stored(
    id: NodeId,
    record: Option<NodeRecord>,
    ports: Vec<PortRecord>,
) -> Result<crate::node::InterfaceChecks, KilnError> {
    let record = record.ok_or_else(|| KilnError::NotFound(format!("node {id} does not exist")))?;
    tokio::task::spawn_blocking(move || crate::node::validate::check(&record, &ports))
        .await
        .map_err(|e| KilnError::Unavailable(format!("node {id}: the validation stopped: {e}")))
}

/// The node messages' handlers: each is its [`Router`] function.
macro_rules! routed {
    ($($msg:ty => $f:ident -> $ok:ty),* $(,)?) => {$(
        impl Handler<$msg> for Supervisor {
            type Result = ResponseFuture<Result<$ok, KilnError>>;
            fn handle(&mut self, msg: $msg, ctx: &mut Context<Self>) -> Self::Result {
                let router = self.router(ctx);
                Box::pin(async move { router.$f(msg).await })
            }
        }
    )*};
}
pub(crate) use routed;

routed!(
    NodeAction => node_action -> NodeView,
    BulkAction => bulk_action -> Vec<NodeResult>,
    GetNode => get_node -> NodeView,
    GetNodeDetail => node_detail -> NodeDetail,
    ValidateNodes => validate_nodes -> Vec<NodeValidation>,
    ListNodes => list_nodes -> Vec<NodeView>,
    PowerStatus => power_status -> Vec<NodeResult>,
    DeleteNodes => delete_nodes -> Vec<NodeResult>,
);

/// Facts the status report needs that the supervisor does not keep.
#[derive(Clone)]
pub struct SiteFacts {
    pub started_at: String,
    pub data_dir: String,
}

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;
    /// Read from the node gauges every node actor keeps up to date, not by
    /// asking 100,000 actors: `kiln status` and the shutdown's wait for
    /// reserved nodes cost the same at any site size.
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let m = &self.env.metrics;
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        let by_provision_state: BTreeMap<String, usize> = ProvisionState::ALL
            .iter()
            .map(|s| (s.to_string(), count(m.nodes_in(*s))))
            .filter(|(_, n)| *n > 0)
            .collect();
        MessageResult(SiteStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.facts.started_at.clone(),
            nodes: by_provision_state.values().sum(),
            by_provision_state,
            maintenance: count(m.nodes_in_maintenance()),
            reserved: count(m.nodes_reserved()),
            data_dir: self.facts.data_dir.clone(),
            config: BTreeMap::new(),
            config_changed: Vec::new(),
            members: Vec::new(),
        })
    }
}
