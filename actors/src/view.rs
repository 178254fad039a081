//! What the site shows of its objects: nodes with secrets masked, ports with
//! their node's name, the site's status.
//!
//! A [`NodeView`] can only be built through [`NodeView::of`], which masks the
//! password, so no output path can forget to.

use std::collections::BTreeMap;
use std::ops::Deref;

use kiln_store::{NodeRecord, PortRecord, Reservation, masked_driver_info};
use serde::{Deserialize, Serialize};

/// A node as shown to people, scripts and embedding applications: the
/// record's fields under the names docs/state-machine.md lists, `driver_info` masked, and the live
/// reservation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeView(NodeRecord);

impl NodeView {
    /// The view of a record, with `reservation` as the node actor holds it now.
    pub fn of(record: &NodeRecord, reservation: Option<&Reservation>) -> Self {
        let mut shown = record.clone();
        shown.driver_info = masked_driver_info(&record.driver_info);
        shown.reservation = reservation.cloned();
        NodeView(shown)
    }
}

impl Deref for NodeView {
    type Target = NodeRecord;
    fn deref(&self) -> &NodeRecord {
        &self.0
    }
}

/// A port as shown: the record and its node's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub uuid: String,
    pub address: String,
    pub node: String,
    pub node_uuid: String,
    pub created_at: String,
}

impl PortView {
    pub fn of(port: &PortRecord, node_name: &str) -> Self {
        PortView {
            uuid: port.uuid.to_string(),
            address: port.address.clone(),
            node: node_name.to_string(),
            node_uuid: port.node.to_string(),
            created_at: port.created_at.to_rfc3339(),
        }
    }
}

/// The site at a glance (`kiln status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    pub version: String,
    pub started_at: String,
    pub nodes: usize,
    pub by_provision_state: BTreeMap<String, usize>,
    pub maintenance: usize,
    pub reserved: usize,
    pub data_dir: String,
    /// Every configuration key's value in force, as text (`lock_wait`:
    /// `3s`), SIGHUP reloads included. The daemon fills it in; a site an
    /// application embeds leaves it empty.
    pub config: BTreeMap<String, String>,
    /// The keys of `config` whose value is not the default.
    pub config_changed: Vec<String>,
}

/// One node's outcome in an operation over several nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeOutcome {
    pub node: String,
    pub result: Result<NodeView, crate::KilnError>,
}
