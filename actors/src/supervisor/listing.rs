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
//! hundred milliseconds the actors' thread must not spend), then asks the
//! node actors for one page at a time, as the caller asks for pages. A
//! caller that stops asking (the client went away) costs nothing more.
//!
//! The order is the node-set order of the snapshot (`demo2` before
//! `demo10`), as the one-answer list has it; a node deleted meanwhile is
//! left out, one created meanwhile is not listed. On a shared store (several
//! members) the records are read from the store, once, at the start.

use std::collections::VecDeque;

use futures::stream::{self, StreamExt};
use kiln_store::{NodeId, NodeRecord};

use super::{ListNodes, Router};
use crate::KilnError;
use crate::nodeset::NodeSet;
use crate::view::NodeView;

/// How many node actors a page asks at once.
const ASKED_AT_ONCE: usize = 256;

/// Where the rows come from.
enum Source {
    /// This process's node actors, asked for their views in this order.
    Actors(VecDeque<NodeId>),
    /// The records a shared store returned, in node-set order.
    Stored(VecDeque<NodeRecord>),
}

/// A node list being produced, page by page.
pub struct Listing {
    router: Router,
    filter: ListNodes,
    now: kiln_store::Timestamp,
    source: Source,
    name_width: usize,
}

impl Listing {
    /// Takes the snapshot of the nodes to list (a node set that names a
    /// node that does not exist is refused here, before any page).
    pub async fn start(router: Router, filter: ListNodes) -> Result<Listing, KilnError> {
        let now = router.clock.now();
        let (source, name_width) = if router.registry.shared.is_some() {
            stored(&router, &filter).await?
        } else {
            let registry = router.registry.clone();
            let expr = filter.nodes.clone();
            let nodes = tokio::task::spawn_blocking(move || match expr {
                Some(expr) => registry.resolve(&expr),
                None => Ok(registry.all()),
            })
            .await
            .map_err(|e| KilnError::Unavailable(format!("the node list could not be taken: {e}")))??;
            let width = nodes.iter().map(|(_, name)| name.chars().count()).max().unwrap_or(0);
            (Source::Actors(nodes.into_iter().map(|(id, _)| id).collect()), width)
        };
        Ok(Listing { router, filter, now, source, name_width })
    }

    /// The longest name among the nodes the list may still hold: a table
    /// can be laid out with it before the rows come.
    pub fn name_width(&self) -> usize {
        self.name_width
    }

    /// Whether every node has been looked at.
    pub fn is_done(&self) -> bool {
        match &self.source {
            Source::Actors(ids) => ids.is_empty(),
            Source::Stored(records) => records.is_empty(),
        }
    }

    /// The next page: the nodes among the next `max` that pass the
    /// filters (possibly none); empty once [`Listing::is_done`].
    pub async fn next_page(&mut self, max: usize) -> Vec<NodeView> {
        let max = max.max(1);
        let (filter, now) = (&self.filter, self.now);
        match &mut self.source {
            Source::Actors(ids) => {
                let take = max.min(ids.len());
                let router = &self.router;
                let asked = ids.drain(..take).map(|id| async move { router.show(id).await });
                let views: Vec<Result<NodeView, KilnError>> =
                    stream::iter(asked).buffered(ASKED_AT_ONCE).collect().await;
                // A node deleted since the snapshot is left out.
                views.into_iter().filter_map(Result::ok).filter(|v| filter.lists(v, now)).collect()
            }
            Source::Stored(records) => {
                let take = max.min(records.len());
                records
                    .drain(..take)
                    .map(|r| NodeView::of(&r, r.reservation.as_ref()))
                    .filter(|v| filter.lists(v, now))
                    .collect()
            }
        }
    }

    /// Every page at once: the one-answer list.
    pub async fn all(mut self) -> Vec<NodeView> {
        let mut all = Vec::new();
        while !self.is_done() {
            all.extend(self.next_page(4096).await);
        }
        all
    }
}

/// On a shared store: every member's nodes, as stored, in node-set order.
async fn stored(router: &Router, filter: &ListNodes) -> Result<(Source, usize), KilnError> {
    let wanted: Option<std::collections::HashSet<NodeId>> = match &filter.nodes {
        Some(expr) => Some(router.resolve(expr).await?.into_iter().map(|(id, _)| id).collect()),
        None => None,
    };
    let records = router.store.read(|b| b.load_nodes()).await?;
    let sorted = tokio::task::spawn_blocking(move || {
        let set = NodeSet::from_names(records.iter().map(|r| r.name.clone()));
        let mut by_name: std::collections::HashMap<String, NodeRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        set.iter()
            .filter_map(|name| by_name.remove(&name))
            .filter(|r| wanted.as_ref().is_none_or(|w| w.contains(&r.uuid)))
            .collect::<VecDeque<_>>()
    })
    .await
    .map_err(|e| KilnError::Unavailable(format!("the node list could not be taken: {e}")))?;
    let width = sorted.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    Ok((Source::Stored(sorted), width))
}
