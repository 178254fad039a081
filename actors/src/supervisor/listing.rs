//! A node list produced page by page ([`Listing`]), so that `kiln node
//! list` over a million nodes starts printing at once and never holds the
//! whole answer in memory, nor the thread the node actors share.
//!
//! Why pages: the one-answer list asked every node actor for its view,
//! gathered a million views, then encoded them as one answer of about
//! 110 MB (sent in parts); the first row reached the screen only once the
//! last node had answered and the whole answer had been encoded, sent and
//! decoded. A [`Listing`] takes a snapshot of the node names in node-set
//! order first (on a blocking thread: sorting a million names is a few
//! hundred milliseconds the actors' thread must not spend), then reads one
//! page at a time, as the caller asks for pages: a node at rest from its
//! record in the registry, a node with an actor from the actor. A
//! caller that stops asking (the client went away) costs nothing more.
//!
//! The order is the node-set order of the snapshot (`demo2` before
//! `demo10`), as the one-answer list has it; a node deleted meanwhile is
//! left out, one created meanwhile is not listed. On a shared store (several
//! members) the snapshot is every node's uuid and name, and each page's
//! records are read from the store by uuid: no read holds the store
//! thread for the whole list.

use std::collections::{HashMap, VecDeque};

use futures::stream::{self, StreamExt};
use kiln_store::{NodeId, NodeRecord};

use super::{ListNodes, Router};
use crate::KilnError;
use crate::nodeset::NodeSet;
use crate::view::NodeView;

/// How many node actors a page asks at once (and how many nodes at rest it
/// reads before it lets other work run).
const ASKED_AT_ONCE: usize = 256;

/// Where the rows come from.
enum Source {
    /// This process's node actors, asked for their views.
    Actors,
    /// A store shared by several members: the records, read a page at a
    /// time.
    Stored,
}

/// A node list being produced, page by page.
pub struct Listing {
    router: Router,
    filter: ListNodes,
    now: kiln_store::Timestamp,
    source: Source,
    /// The nodes still to look at, in order.
    ids: VecDeque<NodeId>,
    name_width: usize,
}

impl Listing {
    /// Takes the snapshot of the nodes to list (a node set that names a
    /// node that does not exist is refused here, before any page).
    pub async fn start(router: Router, filter: ListNodes) -> Result<Listing, KilnError> {
        let now = router.clock.now();
        let (source, (ids, name_width)) = match (&router.registry.shared, &filter.nodes) {
            // Resolved against the store too, in node-set order.
            (Some(_), Some(expr)) => (Source::Stored, ids_of(router.resolve(expr).await?)),
            (Some(_), None) => (Source::Stored, stored_names(&router).await?),
            (None, expr) => {
                let registry = router.registry.clone();
                let expr = expr.clone();
                let nodes = tokio::task::spawn_blocking(move || match expr {
                    Some(expr) => registry.resolve(&expr).map(ids_of),
                    None => Ok(ids_of(registry.all())),
                });
                (Source::Actors, nodes.await.map_err(snapshot_failed)??)
            }
        };
        Ok(Listing { router, filter, now, source, ids, name_width })
    }

    /// The longest name among the nodes the list may still hold: a table
    /// can be laid out with it before the rows come.
    pub fn name_width(&self) -> usize {
        self.name_width
    }

    /// Whether every node has been looked at.
    pub fn is_done(&self) -> bool {
        self.ids.is_empty()
    }

    /// The next page: the nodes among the next `max` that pass the
    /// filters (possibly none); empty once [`Listing::is_done`]. A node
    /// deleted since the snapshot is left out. Only a shared store's read
    /// can fail.
    pub async fn next_page(&mut self, max: usize) -> Result<Vec<NodeView>, KilnError> {
        let take = max.max(1).min(self.ids.len());
        let page: Vec<NodeId> = self.ids.drain(..take).collect();
        let views: Vec<NodeView> = match self.source {
            Source::Actors => {
                // A node at rest is read from its record here, ASKED_AT_ONCE
                // at a time with the thread's other work (another client's
                // `node show`) in between; only nodes with an actor are asked.
                let router = &self.router;
                let mut views: Vec<Option<NodeView>> = Vec::with_capacity(page.len());
                let mut asked = Vec::new();
                for part in page.chunks(ASKED_AT_ONCE) {
                    for &id in part {
                        let view = router.registry.at_rest(id, |r| NodeView::of(r, None));
                        if view.is_none() {
                            asked.push((views.len(), id));
                        }
                        views.push(view);
                    }
                    tokio::task::yield_now().await;
                }
                let answers: Vec<(usize, Result<NodeView, KilnError>)> = stream::iter(asked)
                    .map(|(i, id)| async move { (i, router.show(id).await) })
                    .buffer_unordered(ASKED_AT_ONCE)
                    .collect()
                    .await;
                for (i, answer) in answers {
                    views[i] = answer.ok();
                }
                views.into_iter().flatten().collect()
            }
            Source::Stored => {
                let asked = page.clone();
                let records = self.router.store.read(move |b| match b.shared() {
                    Some(shared) => shared.load_nodes_by_id(&asked),
                    None => Ok(Vec::new()),
                });
                let mut by_id: HashMap<NodeId, NodeRecord> = records.await?.into_iter().map(|r| (r.uuid, r)).collect();
                page.iter()
                    .filter_map(|id| by_id.remove(id))
                    .map(|r| NodeView::of(&r, r.reservation.as_ref()))
                    .collect()
            }
        };
        Ok(views.into_iter().filter(|v| self.filter.lists(v, self.now)).collect())
    }

    /// Every page at once: the one-answer list.
    pub async fn all(mut self) -> Result<Vec<NodeView>, KilnError> {
        let mut all = Vec::new();
        while !self.is_done() {
            all.extend(self.next_page(4096).await?);
        }
        Ok(all)
    }
}

/// The uuids of `nodes` in their order, and the longest of their names.
fn ids_of(nodes: Vec<(NodeId, String)>) -> (VecDeque<NodeId>, usize) {
    let width = nodes.iter().map(|(_, name)| name.chars().count()).max().unwrap_or(0);
    (nodes.into_iter().map(|(id, _)| id).collect(), width)
}

fn snapshot_failed(e: tokio::task::JoinError) -> KilnError {
    KilnError::Unavailable(format!("the node list could not be taken: {e}"))
}

/// On a shared store: every member's nodes, by uuid and name, in node-set
/// order (sorted on a blocking thread).
async fn stored_names(router: &Router) -> Result<(VecDeque<NodeId>, usize), KilnError> {
    let names = router.store.read(|b| match b.shared() {
        Some(shared) => shared.node_names(),
        None => Ok(Vec::new()),
    });
    let names = names.await?;
    let sorted = tokio::task::spawn_blocking(move || {
        let set = NodeSet::from_names(names.iter().map(|(_, name)| name.as_str()));
        let mut ids: HashMap<String, NodeId> = names.into_iter().map(|(id, name)| (name, id)).collect();
        ids_of(set.iter().filter_map(|name| Some((ids.remove(&name)?, name))).collect())
    });
    sorted.await.map_err(snapshot_failed)
}
