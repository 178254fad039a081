//! Port groups (bonds): their table, and the writes that put ports in them.
//!
//! A group's members are not a list in its row but the ports that name it
//! (`ports.portgroup`), so a port is in at most one group by construction,
//! and the schema keeps the rest: deleting a group leaves its ports in
//! none (`ON DELETE SET NULL`), deleting a node takes its groups, and a
//! trigger refuses a port in another node's group, whatever writes it.
//! What this file adds is saying so in the operator's terms: which name,
//! MAC or group was the trouble, never SQLite's wording.

use rusqlite::{Connection, Row, ffi, params};

use super::held::Held;
use super::{Fields, is_foreign_key_violation, node_missing, unique_violation};
use crate::timestamp::timestamp_text;
use crate::{NodeId, PortGroupId, PortGroupRecord, StoreError};

/// The message of the triggers of migration 4.
const OTHER_NODES_GROUP: &str = "port group of another node";

/// The port group columns in the order [`group_from_row`] reads them.
macro_rules! group_select {
    () => {
        "SELECT uuid, name, node, address, mode, created_at FROM portgroups"
    };
}

pub(super) fn insert_port_group(held: &mut Held<'_>, group: &PortGroupRecord) -> Result<(), StoreError> {
    held.get("INSERT INTO portgroups (uuid, name, node, address, mode, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![
            group.uuid.to_string(),
            group.name,
            group.node.to_string(),
            group.address,
            group.mode.as_str(),
            timestamp_text(group.created_at),
        ])
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                return node_missing(group.node);
            }
            match unique_violation(&e) {
                Some("portgroups.name") => {
                    StoreError::Conflict(format!("port group name '{}' is already in use", group.name))
                }
                Some("portgroups.address") => StoreError::Conflict(format!(
                    "port group address '{}' is already in use",
                    group.address.as_deref().unwrap_or_default()
                )),
                Some("portgroups.uuid") => {
                    StoreError::Conflict(format!("port group uuid {} already exists", group.uuid))
                }
                _ => StoreError::from(e),
            }
        })?;
    Ok(())
}

pub(super) fn delete_port_group(held: &mut Held<'_>, id: PortGroupId) -> Result<(), StoreError> {
    // Its members stay, in no group (ON DELETE SET NULL).
    let changed = held.get("DELETE FROM portgroups WHERE uuid = ?1")?.execute([id.to_string()])?;
    if changed == 0 {
        return Err(group_missing(id));
    }
    Ok(())
}

pub(super) fn set_port_group(held: &mut Held<'_>, address: &str, group: Option<PortGroupId>) -> Result<(), StoreError> {
    let changed = held
        .get("UPDATE ports SET portgroup = ?2 WHERE address = ?1")?
        .execute(params![address, group.map(|g| g.to_string())])
        .map_err(|e| {
            if is_other_nodes_group(&e) {
                return other_nodes_group(address);
            }
            match group {
                Some(group) if is_foreign_key_violation(&e) => group_missing(group),
                _ => StoreError::from(e),
            }
        })?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("no port has address '{address}'")));
    }
    Ok(())
}

/// Whether a write failed because it put a port in another node's group.
pub(super) fn is_other_nodes_group(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(err, Some(message))
            if err.extended_code == ffi::SQLITE_CONSTRAINT_TRIGGER && message == OTHER_NODES_GROUP
    )
}

pub(super) fn other_nodes_group(address: &str) -> StoreError {
    StoreError::Conflict(format!("port '{address}' cannot join a port group of another node"))
}

fn group_missing(id: PortGroupId) -> StoreError {
    StoreError::NotFound(format!("port group {id} does not exist"))
}

pub(super) fn load_port_groups(conn: &Connection, node: Option<NodeId>) -> Result<Vec<PortGroupRecord>, StoreError> {
    // Two statements, as for ports, so that the node's index serves one.
    let mut stmt;
    let mut rows = match node {
        Some(node) => {
            stmt = conn.prepare_cached(concat!(group_select!(), " WHERE node = ?1 ORDER BY name"))?;
            stmt.query([node.to_string()])?
        }
        None => {
            stmt = conn.prepare_cached(concat!(group_select!(), " ORDER BY name"))?;
            stmt.query([])?
        }
    };
    let mut groups = Vec::new();
    while let Some(row) = rows.next()? {
        groups.push(group_from_row(row)?);
    }
    Ok(groups)
}

pub(super) fn load_port_group(conn: &Connection, name_or_uuid: &str) -> Result<Option<PortGroupRecord>, StoreError> {
    // A group's name is never a uuid (the actors refuse one), so the two
    // cannot both match different rows; both columns are indexed.
    let mut stmt = conn.prepare_cached(concat!(group_select!(), " WHERE uuid = ?1 OR name = ?1"))?;
    let mut rows = stmt.query([name_or_uuid])?;
    match rows.next()? {
        Some(row) => Ok(Some(group_from_row(row)?)),
        None => Ok(None),
    }
}

fn group_from_row(row: &Row<'_>) -> Result<PortGroupRecord, StoreError> {
    let mut f = Fields { row, table: "portgroups", key: String::new() };
    let uuid: PortGroupId = f.parsed(0, "uuid")?;
    f.key = format!(" of port group {uuid}");
    Ok(PortGroupRecord {
        uuid,
        name: f.raw(1, "name")?,
        node: f.parsed(2, "node")?,
        address: f.raw(3, "address")?,
        mode: f.parsed(4, "mode")?,
        created_at: f.timestamp(5, "created_at")?,
    })
}
