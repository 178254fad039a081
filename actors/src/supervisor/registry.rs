//! The registry: every node this process runs, by uuid and by name, and the
//! one way messages reach them.
//!
//! It is a pair of `DashMap`s shared with the [`crate::Site`] handle so that
//! lookups never queue behind other work. A node's entry holds either its
//! actor or, while the node is at rest ([`crate::node::rest`]), its record
//! and gauges, boxed: about 0.4 KB where an actor costs 1.5 KB. A message
//! for a node at rest starts its actor first ([`Registry::send`]); the
//! messages that only read what the record says are answered from it
//! without one (`at_rest` of [`Registry::send`]).

use std::sync::{Arc, OnceLock};

use actix::dev::Request;
use actix::prelude::*;
use dashmap::DashMap;
use kiln_store::{NodeId, NodeRecord};

use super::LOCAL_GROUP;
use crate::KilnError;
use crate::node::gauged::Gauged;
use crate::node::rest::Routed;
use crate::node::{NodeActor, NodeEnv};
use crate::nodeset::NodeSet;

/// One entry of the registry.
pub struct NodeEntry {
    pub name: String,
    slot: Slot,
}

/// Where a node is.
enum Slot {
    /// At rest: no actor, the node as it left its last one (or as stored).
    Resting(Box<Gauged>),
    /// Its actor, and how many messages the registry has routed to it.
    /// `pinned`: someone holds its address ([`Registry::addr`]); it never
    /// goes to rest.
    Live { addr: Addr<NodeActor>, sent: u64, pinned: bool },
    /// Between the two, only ever under the entry's guard.
    Waking,
}

/// The registry's maps: hashed with foldhash, not SipHash. Keys are uuids
/// and names of the site's own nodes, not chosen by an attacker per lookup,
/// and SipHash showed in the profile of a million-node restart.
pub type NodeMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// What starts a node's actor: the environment every node shares, and the
/// arbiter node actors run on. A message may be routed from any thread or
/// task (the admin socket's arbiter, a periodic task spawned outside the
/// arbiter's local set), so the actor is always built on the arbiter; its
/// address exists at once and messages wait in its mailbox meanwhile.
struct Starter {
    env: Arc<NodeEnv>,
    arbiter: ArbiterHandle,
}

impl Starter {
    fn start(&self, node: Gauged) -> Addr<NodeActor> {
        let env = self.env.clone();
        NodeActor::start_in_arbiter(&self.arbiter, move |_| NodeActor::woken(node, env))
    }
}

/// The registry of the nodes this process runs.
#[derive(Clone, Default)]
pub struct Registry {
    pub by_id: Arc<NodeMap<NodeId, NodeEntry>>,
    pub by_name: Arc<NodeMap<String, NodeId>>,
    /// The live settings; node groups (`@name` in node sets) come from them.
    pub live: Arc<crate::LiveSettings>,
    /// On a store shared by several members: this member, and the way to
    /// nodes the others run ([`crate::remote`]). `None`: every node of the
    /// site is in the maps above.
    pub shared: Option<crate::remote::Shared>,
    /// Set once the supervisor starts ([`Registry::serve`]).
    starter: Arc<OnceLock<Starter>>,
    /// How many nodes [`Registry::add`] has added (created here, or
    /// adopted): a member's rebalancing looks again when it grows.
    added: Arc<std::sync::atomic::AtomicU64>,
}

/// What a routed message came to.
pub enum Asked<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
    NodeActor: Handler<Routed<M>>,
{
    /// Sent to the node's actor.
    Sent(Request<NodeActor, Routed<M>>),
    /// Answered from the record of a node at rest.
    Answered(M::Result),
}

impl Registry {
    /// An empty registry with room for `nodes` (a restart knows how many it
    /// adopts: no rehash of a growing map on the way).
    pub fn with_capacity(nodes: usize) -> Registry {
        Registry {
            by_id: Arc::new(NodeMap::with_capacity_and_hasher(nodes, Default::default())),
            by_name: Arc::new(NodeMap::with_capacity_and_hasher(nodes, Default::default())),
            ..Default::default()
        }
    }

    /// The registry of a site with these settings and membership.
    pub fn with_settings(self, live: Arc<crate::LiveSettings>, shared: Option<crate::remote::Shared>) -> Registry {
        Registry { live, shared, ..self }
    }

    /// Starts node actors in `env`, on the current thread's arbiter, from
    /// now on. Called once, by the supervisor.
    pub(crate) fn serve(&self, env: Arc<NodeEnv>) {
        let starter = Starter { env, arbiter: Arbiter::current() };
        if self.starter.set(starter).is_err() {
            tracing::warn!("the registry was served twice; the first environment stays");
        }
    }

    /// The site is shutting down (`why`): a node started from now on is
    /// closed to new work from the start.
    pub(crate) fn close(&self, why: &str) {
        if let Some(starter) = self.starter.get() {
            let _ = starter.env.closing.set(why.to_string());
        }
    }

    fn starter(&self) -> &Starter {
        self.starter.get().expect("the supervisor serves the registry before any node is added")
    }

    /// Adds a node at rest (a created node, one adopted from the store).
    pub(crate) fn add(&self, record: NodeRecord) {
        let id = record.uuid;
        let name = record.name.clone();
        let node = Gauged::new(record, self.starter().env.metrics.clone());
        self.by_name.insert(name.clone(), id);
        self.by_id.insert(id, NodeEntry { name, slot: Slot::Resting(Box::new(node)) });
        self.added.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many nodes were added since the registry was made: a node
    /// created on this member, or adopted by it, since a reading is one
    /// the ring may place on another member.
    pub fn added(&self) -> u64 {
        self.added.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds a node with its actor started now (a node restarted after its
    /// actor died, with a message about to be sent again).
    pub(crate) fn add_live(&self, record: NodeRecord) -> Addr<NodeActor> {
        let id = record.uuid;
        let name = record.name.clone();
        let starter = self.starter();
        let addr = starter.start(Gauged::new(record, starter.env.metrics.clone()));
        self.by_name.insert(name.clone(), id);
        self.by_id.insert(id, NodeEntry { name, slot: Slot::Live { addr: addr.clone(), sent: 0, pinned: false } });
        addr
    }

    /// Routes `msg` to node `id`'s actor, starting it if the node is at
    /// rest, unless `at_rest` answers for a node at rest from its record.
    /// `None`: no such node here.
    pub fn send<M>(
        &self,
        id: NodeId,
        msg: M,
        at_rest: impl FnOnce(&NodeRecord) -> Option<M::Result>,
    ) -> Option<Asked<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        NodeActor: Handler<Routed<M>>,
    {
        // Sent under the entry's write guard, which ends before the caller
        // awaits: the count and the send are one step for a node going to
        // rest (module docs).
        let mut entry = self.by_id.get_mut(&id)?;
        if let Slot::Resting(node) = &entry.slot
            && let Some(answer) = at_rest(node.record())
        {
            return Some(Asked::Answered(answer));
        }
        let (addr, sent, _) = entry.slot.live(self.starter());
        *sent += 1;
        Some(Asked::Sent(addr.send(Routed(msg))))
    }

    /// `read` of node `id`'s record if the node is at rest (`None`: it has
    /// an actor, which holds the node as it is now, or no such node).
    pub fn at_rest<T>(&self, id: NodeId, read: impl FnOnce(&NodeRecord) -> T) -> Option<T> {
        match &self.by_id.get(&id)?.slot {
            Slot::Resting(node) => Some(read(node.record())),
            _ => None,
        }
    }

    /// The address of node `id`'s actor (started if the node was at rest),
    /// for a caller that sends to it directly, a test or a bench. The node
    /// then keeps its actor for good.
    pub fn addr(&self, id: NodeId) -> Option<Addr<NodeActor>> {
        let mut entry = self.by_id.get_mut(&id)?;
        let (addr, _, pinned) = entry.slot.live(self.starter());
        *pinned = true;
        Some(addr.clone())
    }

    /// The address of node `id`'s actor if it has one that stopped (its
    /// handler panicked): the one to restart.
    pub(crate) fn dead(&self, id: NodeId) -> Option<Addr<NodeActor>> {
        match &self.by_id.get(&id)?.slot {
            Slot::Live { addr, .. } if !addr.connected() => Some(addr.clone()),
            _ => None,
        }
    }

    /// Whether node `id`'s actor is still `dead` (nobody restarted it yet).
    pub(crate) fn still_dead(&self, id: NodeId, dead: &Addr<NodeActor>) -> bool {
        self.by_id.get(&id).is_some_and(|e| matches!(&e.slot, Slot::Live { addr, .. } if addr == dead))
    }

    /// Whether node `id` has an actor now (not at rest).
    pub fn is_live(&self, id: NodeId) -> bool {
        self.by_id.get(&id).is_some_and(|e| matches!(e.slot, Slot::Live { .. }))
    }

    /// Removes node `id` if it is at rest (nothing can run on it meanwhile:
    /// starting its actor takes the same guard). Whether it was.
    pub(crate) fn remove_resting(&self, id: NodeId) -> bool {
        let removed = self.by_id.remove_if(&id, |_, e| matches!(e.slot, Slot::Resting(_)));
        if let Some((_, entry)) = &removed {
            self.by_name.remove_if(&entry.name, |_, owner| *owner == id);
        }
        removed.is_some()
    }

    /// Follows a node's rename (committed by its actor): the new name finds
    /// it, the old one no longer does.
    pub(crate) fn rename(&self, id: NodeId, name: &str) {
        let Some(mut entry) = self.by_id.get_mut(&id) else { return };
        if entry.name == name {
            return;
        }
        self.by_name.insert(name.to_string(), id);
        self.by_name.remove_if(&entry.name, |_, owner| *owner == id);
        entry.name = name.to_string();
    }

    pub(crate) fn remove(&self, id: NodeId) {
        if let Some((_, entry)) = self.by_id.remove(&id) {
            self.by_name.remove(&entry.name);
        }
    }

    /// Finds one node by uuid or name: its uuid and name.
    pub fn find(&self, node: &str) -> Option<(NodeId, String)> {
        let id = match node.parse::<NodeId>() {
            Ok(id) => id,
            Err(_) => *self.by_name.get(node)?,
        };
        self.by_id.get(&id).map(|e| (id, e.name.clone()))
    }

    /// Every node named by a uuid, a name or a node set, sorted by name;
    /// an error names the nodes that do not exist, and a set that names
    /// no node at all (`demo1&demo2`) is bad input, not an empty success.
    pub fn resolve(&self, expr: &str) -> Result<Vec<(NodeId, String)>, KilnError> {
        if let Some(found) = self.find(expr.trim()) {
            return Ok(vec![found]);
        }
        let set = self.parse(expr)?;
        if set.is_empty() {
            return Err(KilnError::InvalidInput(format!("node set '{expr}' matches no node")));
        }
        let mut found = Vec::with_capacity(set.len());
        let mut missing = Vec::new();
        for name in set.iter() {
            match self.by_name.get(name.as_str()) {
                Some(id) => found.push((*id, name.clone())),
                None => missing.push(name),
            }
        }
        if !missing.is_empty() {
            let folded = NodeSet::from_names(missing.iter().map(String::as_str)).fold();
            return Err(KilnError::NotFound(format!(
                "no such node{}: {folded}",
                if missing.len() > 1 { "s" } else { "" }
            )));
        }
        Ok(found)
    }

    /// Parses a node set, with the site's groups.
    pub fn parse(&self, expr: &str) -> Result<NodeSet, KilnError> {
        let groups = self.live.groups();
        let local = |g: &str| {
            (g == LOCAL_GROUP).then(|| NodeSet::from_names(self.by_name.iter().map(|e| e.key().clone())).fold())
        };
        NodeSet::parse_with(expr, &|g| groups.get(g).cloned().or_else(|| local(g)))
            .map_err(|e| KilnError::InvalidInput(format!("node set '{expr}': {e}")))
    }

    /// Every node, in the order a node set lists its names (`demo2` before
    /// `demo10`), so that `kiln node list` and `kiln node list 'demo[1-64]'`
    /// agree.
    pub fn all(&self) -> Vec<(NodeId, String)> {
        let set = NodeSet::from_names(self.by_name.iter().map(|e| e.key().clone()));
        set.iter().filter_map(|name| Some((*self.by_name.get(&name)?, name))).collect()
    }
}

impl Slot {
    /// The node's actor, started now if the node was at rest; with the
    /// count of messages routed to it and whether it is pinned.
    fn live(&mut self, starter: &Starter) -> (&Addr<NodeActor>, &mut u64, &mut bool) {
        if let Slot::Resting(_) = self {
            let Slot::Resting(node) = std::mem::replace(self, Slot::Waking) else { unreachable!("matched above") };
            *self = Slot::Live { addr: starter.start(*node), sent: 0, pinned: false };
        }
        match self {
            Slot::Live { addr, sent, pinned } => (addr, sent, pinned),
            _ => unreachable!("a slot being woken is seen only under its guard"),
        }
    }
}

/// Puts node `id` to rest in `nodes` if its actor `own` has handled every
/// message the registry routed to it (`routed`): `rest` gives what the
/// entry keeps. Whether it did (the actor then stops).
pub(crate) fn put_to_rest(
    nodes: &NodeMap<NodeId, NodeEntry>,
    id: NodeId,
    own: &Addr<NodeActor>,
    routed: u64,
    rest: impl FnOnce() -> Gauged,
) -> bool {
    let Some(mut entry) = nodes.get_mut(&id) else { return false };
    match &entry.slot {
        Slot::Live { addr, sent, pinned: false } if addr == own && *sent == routed => {}
        _ => return false,
    }
    entry.slot = Slot::Resting(Box::new(rest()));
    true
}
