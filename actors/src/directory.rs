//! The site's directory on a store shared by several members: every node's
//! name and uuid, whichever member runs it.
//!
//! Why it exists: a member resolves a name it does not run (`kiln node
//! manage rack2-n07` on any member) before it asks the owner through the
//! database. Asking the database for the name each time cost a round trip
//! per request; the directory answers from memory. It is kept current by
//! the database itself: a trigger announces each node's creation, rename
//! and deletion on a channel every member listens to, in commit order
//! ([`kiln_store::postgres::listener::DIRECTORY`]), and a member reloads the
//! whole directory whenever it may have missed an announcement (its
//! listening session was opened again, or it fell behind).
//!
//! It holds names only, not owners: the owner of a node is whoever claims
//! its request row ([`crate::remote`]), so a directory can never send work
//! to the wrong member. A name the directory does not have is looked up in
//! the store, so a node created a moment ago elsewhere is found at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln_store::postgres::listener::Wake;
use kiln_store::{NodeId, StoreHandle};
use tokio::sync::broadcast;

use crate::supervisor::NodeMap;

/// Every node of the site, by name and by uuid.
#[derive(Default)]
pub struct Directory {
    by_name: NodeMap<String, NodeId>,
    by_id: NodeMap<NodeId, String>,
    /// Loaded from the store at least once: until then every lookup misses.
    loaded: AtomicBool,
    /// Names of other members' nodes it answered (`kiln_directory_lookups_total`).
    answered: AtomicU64,
    /// Names it did not know, looked up in the store.
    missed: AtomicU64,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("nodes", &self.by_id.len()).field("loaded", &self.loaded()).finish()
    }
}

impl Directory {
    fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The node a name or a uuid names, if the directory knows it.
    pub fn find(&self, name: &str) -> Option<(NodeId, String)> {
        if !self.loaded() {
            return None;
        }
        match name.parse::<NodeId>() {
            Ok(id) => self.by_id.get(&id).map(|n| (id, n.clone())),
            Err(_) => self.by_name.get(name).map(|id| (*id, name.to_string())),
        }
    }

    /// The name of a node, if the directory knows it.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        if !self.loaded() {
            return None;
        }
        self.by_id.get(&id).map(|n| n.clone())
    }

    /// Counts a lookup the directory answered (`true`) or left to the store.
    pub fn count(&self, answered: bool) {
        let counter = if answered { &self.answered } else { &self.missed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Its lines of the Prometheus text: how many nodes it holds, and where
    /// names of other members' nodes were resolved.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let help = "Nodes of the site in this member's directory.";
        crate::metrics::header(&mut o, "kiln_directory_nodes", "gauge", help);
        let _ = writeln!(o, "kiln_directory_nodes {}", self.by_id.len());
        let help = "Names of nodes other members run, by where they were resolved.";
        crate::metrics::header(&mut o, "kiln_directory_lookups_total", "counter", help);
        for (from, counter) in [("directory", &self.answered), ("store", &self.missed)] {
            let _ = writeln!(o, "kiln_directory_lookups_total{{from=\"{from}\"}} {}", counter.load(Ordering::Relaxed));
        }
        o
    }

    /// A node was created or renamed.
    pub fn set(&self, id: NodeId, name: String) {
        if let Some(old) = self.by_id.insert(id, name.clone())
            && old != name
        {
            self.by_name.remove_if(&old, |_, owner| *owner == id);
        }
        self.by_name.insert(name, id);
    }

    /// A node was deleted.
    pub fn remove(&self, id: NodeId) {
        if let Some((_, name)) = self.by_id.remove(&id) {
            self.by_name.remove_if(&name, |_, owner| *owner == id);
        }
    }

    /// Everything, from the store.
    fn replace_all(&self, nodes: Vec<(NodeId, String)>) {
        self.by_name.clear();
        self.by_id.clear();
        for (id, name) in nodes {
            self.set(id, name);
        }
        self.loaded.store(true, Ordering::Release);
    }

    /// Applies one announcement; false when it was not about the directory.
    fn apply(&self, wake: &Wake) -> bool {
        let Wake::Directory { node, name } = wake else { return false };
        let Ok(id) = node.parse::<NodeId>() else {
            tracing::warn!(node = %node, "an announcement names no node uuid; ignored");
            return true;
        };
        match name {
            Some(name) => self.set(id, name.clone()),
            None => self.remove(id),
        }
        true
    }
}

/// Keeps `directory` current for as long as the listener runs: loads it,
/// applies every announcement, and loads it again after a gap.
pub async fn keep(store: StoreHandle, directory: Arc<Directory>, wakes: broadcast::Sender<Wake>) {
    // Subscribed before the load: an announcement committed while the load
    // runs is applied after it, and the last one of each node wins.
    let mut heard = wakes.subscribe();
    let mut stale = true;
    loop {
        if stale {
            match store.read(|b| b.shared().map_or_else(|| Ok(Vec::new()), |s| s.node_names())).await {
                Ok(nodes) => {
                    directory.replace_all(nodes);
                    stale = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the site's directory; names are looked up in the store")
                }
            }
        }
        let wake = if stale {
            // Try the load again soon; announcements meanwhile are covered by it.
            match tokio::time::timeout(crate::remote::SWEEP, heard.recv()).await {
                Ok(wake) => wake,
                Err(_) => continue,
            }
        } else {
            heard.recv().await
        };
        match wake {
            Ok(Wake::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => stale = true,
            Ok(wake) => {
                directory.apply(&wake);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(nodes: &[(NodeId, &str)]) -> Directory {
        let d = Directory::default();
        d.replace_all(nodes.iter().map(|(id, n)| (*id, n.to_string())).collect());
        d
    }

    #[test]
    fn nothing_is_found_before_the_first_load() {
        let d = Directory::default();
        let id = NodeId::new();
        d.set(id, "n1".into());
        assert_eq!(d.find("n1"), None);
        d.replace_all(vec![(id, "n1".into())]);
        assert_eq!(d.find("n1"), Some((id, "n1".into())));
        assert_eq!(d.find(&id.to_string()), Some((id, "n1".into())));
    }

    #[test]
    fn a_rename_moves_the_name_and_a_deletion_forgets_the_node() {
        let (a, b) = (NodeId::new(), NodeId::new());
        let d = loaded(&[(a, "n1"), (b, "n2")]);
        assert!(d.apply(&Wake::Directory { node: a.to_string(), name: Some("n9".into()) }));
        assert_eq!(d.find("n1"), None);
        assert_eq!(d.find("n9"), Some((a, "n9".into())));
        assert!(d.apply(&Wake::Directory { node: b.to_string(), name: None }));
        assert_eq!(d.find("n2"), None);
        assert_eq!(d.find(&b.to_string()), None);
        // A name freed by a rename and taken by another node stays the
        // other node's when the first is renamed again.
        d.set(b, "n1".into());
        d.set(a, "n10".into());
        assert_eq!(d.find("n1"), Some((b, "n1".into())));
        assert_eq!(d.find("n9"), None);
    }

    #[test]
    fn other_wake_ups_and_bad_uuids_change_nothing() {
        let a = NodeId::new();
        let d = loaded(&[(a, "n1")]);
        assert!(!d.apply(&Wake::Resync));
        assert!(d.apply(&Wake::Directory { node: "not-a-uuid".into(), name: None }));
        assert_eq!(d.find("n1"), Some((a, "n1".into())));
    }
}
