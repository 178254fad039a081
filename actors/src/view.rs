//! What the site shows of its objects: nodes with secrets masked, ports and
//! port groups with their node's name, a node with its ports
//! ([`NodeDetail`]), the site's status, and one node's result in an
//! operation over several ([`NodeResult`]).
//!
//! A [`NodeView`] can only be built through [`NodeView::of`], which masks the
//! password, so no output path can forget to.

use std::collections::BTreeMap;
use std::ops::Deref;

use kiln_store::{BondMode, NodeRecord, PortGroupId, PortGroupRecord, PortRecord, Reservation, mask_driver_info};
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
        mask_driver_info(&mut shown.driver_info);
        shown.reservation = reservation.cloned();
        NodeView(shown)
    }

    /// The view with the BMC contact times `stamp` writes (the node core
    /// keeps them between commits); nothing else of the record changes.
    pub(crate) fn with_contact(mut self, stamp: impl FnOnce(&mut NodeRecord)) -> Self {
        let driver_info = std::mem::take(&mut self.0.driver_info);
        stamp(&mut self.0);
        self.0.driver_info = driver_info;
        self
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
    /// On a store shared by several members: every member the site
    /// remembers (empty for a site on its own store).
    pub members: Vec<MemberView>,
}

/// One member of a site whose store is shared (`kiln member list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// New at every start of the process.
    pub id: String,
    /// Stable across restarts: one per host and data dir.
    pub name: String,
    pub host: String,
    pub pid: u32,
    /// alive, dead or left.
    pub state: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: u64,
    /// Nodes it owns.
    pub nodes: u64,
    /// True for the member that answered.
    pub this: bool,
}

impl MemberView {
    /// The store's row, seen from member `me`.
    pub fn of(row: &kiln_store::postgres::members::MemberRow, me: Option<&str>) -> Self {
        MemberView {
            id: row.id.clone(),
            name: row.name.clone(),
            host: row.host.clone(),
            pid: row.pid,
            state: row.state.as_str().to_string(),
            heartbeat_age_ms: (row.heartbeat_age_s.max(0.0) * 1000.0) as u64,
            nodes: row.nodes,
            this: me == Some(row.id.as_str()),
        }
    }
}

/// An error as shown beside a node: its kind (`KilnError::kind`, or an exec
/// opcode's `exec`/`timeout`) for scripts, its message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub kind: String,
    pub message: String,
}

impl ErrorView {
    pub fn of(e: &crate::KilnError) -> Self {
        ErrorView { kind: e.kind().to_string(), message: e.to_string() }
    }
}

/// One node's result in an operation over several nodes: the one shape it
/// has from the fan-out that ends ([`crate::supervisor::Router::fan_out`])
/// to the CLI, through the admin protocol (`Response::Outcomes`) and the
/// job bodies the store keeps. A node verb's `--json` and `kiln job show
/// --json` print it as it serialises:
/// `{"node", "ok", "provision_state", "power_state", "error": {"kind",
/// "message"} | null}`, plus `exit_code` and `output` for an exec opcode.
///
/// Two encodings, as the serialiser asks: JSON (human-readable) skips the
/// absent exec fields and reads the bodies earlier versions stored (a flat
/// `error_kind` beside an `error` string); bincode, which writes no field
/// names and cannot skip one, writes every field in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct NodeResult {
    pub node: String,
    pub ok: bool,
    pub provision_state: Option<String>,
    pub power_state: Option<String>,
    pub error: Option<ErrorView>,
    /// An exec opcode's exit code and output (stdout, then stderr; at most
    /// 4 KiB kept in the job).
    pub exit_code: Option<i32>,
    pub output: Option<String>,
}

impl NodeResult {
    /// A node's result of a node operation: its state when it succeeded,
    /// the error (and, when refused, the state it was refused in) when not.
    pub fn of(node: String, result: &Result<NodeView, crate::KilnError>) -> Self {
        match result {
            Ok(v) => NodeResult {
                node,
                ok: true,
                provision_state: Some(v.provision_state.to_string()),
                power_state: v.power_state.map(|p| p.to_string()),
                error: None,
                exit_code: None,
                output: None,
            },
            Err(e) => NodeResult {
                node,
                ok: false,
                provision_state: match e {
                    crate::KilnError::InvalidState { state, .. } => Some(state.clone()),
                    _ => None,
                },
                power_state: None,
                error: Some(ErrorView::of(e)),
                exit_code: None,
                output: None,
            },
        }
    }

    /// The kind of its error, if it failed.
    pub fn error_kind(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.kind.as_str())
    }
}

/// [`NodeResult`] as JSON shows it.
#[derive(Serialize)]
struct ShownResult<'a> {
    node: &'a str,
    ok: bool,
    provision_state: &'a Option<String>,
    power_state: &'a Option<String>,
    error: &'a Option<ErrorView>,
    #[serde(skip_serializing_if = "absent")]
    exit_code: &'a Option<i32>,
    #[serde(skip_serializing_if = "absent")]
    output: &'a Option<String>,
}

fn absent<T>(v: &&Option<T>) -> bool {
    v.is_none()
}

/// [`NodeResult`] as JSON holds it: today's shape, or a job body stored by
/// an earlier version, whose `error` was the message and `error_kind` its
/// kind.
#[derive(Deserialize)]
struct StoredResult {
    node: String,
    ok: bool,
    provision_state: Option<String>,
    power_state: Option<String>,
    #[serde(default)]
    error: Option<StoredError>,
    #[serde(default)]
    error_kind: Option<String>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    output: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoredError {
    Shown(ErrorView),
    Message(String),
}

impl From<StoredResult> for NodeResult {
    fn from(r: StoredResult) -> Self {
        let error = r.error.map(|e| match e {
            StoredError::Shown(e) => e,
            StoredError::Message(message) => {
                ErrorView { kind: r.error_kind.unwrap_or_else(|| "error".into()), message }
            }
        });
        NodeResult {
            node: r.node,
            ok: r.ok,
            provision_state: r.provision_state,
            power_state: r.power_state,
            error,
            exit_code: r.exit_code,
            output: r.output,
        }
    }
}

impl Serialize for NodeResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return NodeResult::serialize(self, s);
        }
        ShownResult {
            node: &self.node,
            ok: self.ok,
            provision_state: &self.provision_state,
            power_state: &self.power_state,
            error: &self.error,
            exit_code: &self.exit_code,
            output: &self.output,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for NodeResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() { StoredResult::deserialize(d).map(Into::into) } else { NodeResult::deserialize(d) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KilnError;

    fn refused() -> NodeResult {
        NodeResult::of("n1".into(), &Err(KilnError::NotFound("no such node: n1".into())))
    }

    fn exec_result() -> NodeResult {
        NodeResult { exit_code: Some(3), output: Some("out\n".into()), ..refused() }
    }

    #[test]
    fn json_shows_the_error_as_kind_and_message_and_skips_absent_exec_fields() {
        let shown = serde_json::to_value(refused()).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({
                "node": "n1", "ok": false, "provision_state": null, "power_state": null,
                "error": {"kind": "not_found", "message": "no such node: n1"},
            })
        );
        let exec = serde_json::to_value(exec_result()).unwrap();
        assert_eq!((&exec["exit_code"], &exec["output"]), (&serde_json::json!(3), &serde_json::json!("out\n")));
    }

    #[test]
    fn json_reads_back_what_it_writes() {
        for r in [refused(), exec_result(), NodeResult { ok: true, error: None, ..exec_result() }] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<NodeResult>(&text).unwrap(), r, "{text}");
        }
    }

    #[test]
    fn a_result_stored_by_an_earlier_version_still_loads() {
        let old = r#"{"node":"n1","ok":false,"provision_state":"enroll","power_state":null,
            "error_kind":"node_locked","error":"node n1 is busy","exit_code":null,"output":null}"#;
        let r: NodeResult = serde_json::from_str(old).unwrap();
        assert_eq!(r.error, Some(ErrorView { kind: "node_locked".into(), message: "node n1 is busy".into() }));
        assert_eq!((r.node.as_str(), r.ok, r.provision_state.as_deref()), ("n1", false, Some("enroll")));
        let old_ok = r#"{"node":"n2","ok":true,"provision_state":"available","power_state":"power on",
            "error_kind":null,"error":null}"#;
        let r: NodeResult = serde_json::from_str(old_ok).unwrap();
        assert_eq!((r.ok, r.error, r.exit_code), (true, None, None));
    }

    #[test]
    fn the_admin_protocol_carries_every_field() {
        for r in [refused(), exec_result()] {
            let body = crate::codec::encode_body(&r).unwrap();
            assert_eq!(crate::codec::decode::<NodeResult>(&body).unwrap(), r);
        }
    }
}
