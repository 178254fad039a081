//! What the site shows of its objects: nodes with secrets masked, ports and
//! port groups with their node's name, a node with its ports
//! ([`NodeDetail`]), the site's status.
//!
//! A [`NodeView`] can only be built through [`NodeView::of`], which masks the
//! password, so no output path can forget to.

use std::collections::BTreeMap;
use std::ops::Deref;

use kiln_store::{BondMode, NodeRecord, PortGroupId, PortGroupRecord, PortRecord, Reservation, masked_driver_info};
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

/// A port as shown: the record, its node's name and its group's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub uuid: String,
    pub address: String,
    pub node: String,
    pub node_uuid: String,
    /// The port group (bond) it is a member of, by name; `None` for none.
    pub portgroup: Option<String>,
    pub portgroup_uuid: Option<String>,
    pub created_at: String,
}

impl PortView {
    /// The view of a port; `group` is the name of its port group, when it
    /// is in one.
    pub fn of(port: &PortRecord, node_name: &str, group: Option<&str>) -> Self {
        PortView {
            uuid: port.uuid.to_string(),
            address: port.address.clone(),
            node: node_name.to_string(),
            node_uuid: port.node.to_string(),
            portgroup: port.portgroup.and(group.map(str::to_string)),
            portgroup_uuid: port.portgroup.map(|g| g.to_string()),
            created_at: port.created_at.to_rfc3339(),
        }
    }

    /// The views of `ports`, each with its node's name (from `node_name`)
    /// and its group's name (from `groups`, which holds every group they
    /// are members of).
    pub fn all(
        ports: &[PortRecord],
        groups: &[PortGroupRecord],
        node_name: impl Fn(&PortRecord) -> String,
    ) -> Vec<PortView> {
        let group_name = |id: PortGroupId| groups.iter().find(|g| g.uuid == id).map(|g| g.name.as_str());
        ports.iter().map(|p| PortView::of(p, &node_name(p), p.portgroup.and_then(group_name))).collect()
    }
}

/// A port group (bond) as shown: the record, its node's name, and its
/// member ports' MAC addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortGroupView {
    pub uuid: String,
    pub name: String,
    pub node: String,
    pub node_uuid: String,
    pub address: Option<String>,
    pub mode: BondMode,
    /// The members' MAC addresses, in address order.
    pub ports: Vec<String>,
    pub created_at: String,
}

impl PortGroupView {
    /// The view of a group; its members are found among `ports` (which
    /// may hold other ports too).
    pub fn of(group: &PortGroupRecord, node_name: &str, ports: &[PortRecord]) -> Self {
        let mut members: Vec<String> =
            ports.iter().filter(|p| p.portgroup == Some(group.uuid)).map(|p| p.address.clone()).collect();
        members.sort();
        PortGroupView {
            uuid: group.uuid.to_string(),
            name: group.name.clone(),
            node: node_name.to_string(),
            node_uuid: group.node.to_string(),
            address: group.address.clone(),
            mode: group.mode,
            ports: members,
            created_at: group.created_at.to_rfc3339(),
        }
    }
}

/// A node with its ports and port groups, as `kiln node show` gives it
/// (Ironic's task loads a node's ports with the node). A struct of three
/// rather than the node's fields flattened beside two more: the admin
/// protocol is bincode, which serde's `flatten` does not work with; the
/// CLI's JSON is the node object with `ports` and `portgroups` keys added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeDetail {
    pub node: NodeView,
    pub ports: Vec<PortView>,
    pub portgroups: Vec<PortGroupView>,
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
