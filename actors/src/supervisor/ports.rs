//! The supervisor's messages for ports and port groups (bonds), and the
//! [`Router`] functions that answer them (and the CLI's dispatch).
//!
//! Ports and port groups are rows of the store beside a node, not fields of
//! its record, so the router writes them itself, as the supervisor writes a
//! new node: the node actor stays the only writer of the node's record (it
//! writes ports too, but only those an inspection found, each only if its
//! MAC is free: `Write::InsertPortIfFree`, see `node/core/ops.rs`). Every
//! rule the store keeps too (a MAC or a group name taken, a port in another
//! node's group) is checked here first, to refuse it in the operator's
//! words, by names rather than uuids; a request that races another is
//! still refused by the store, and nothing is written either way. A group
//! and its members are one batch: all of it is stored or none.

use actix::prelude::*;
use kiln_store::{BondMode, NodeId, PortGroupRecord, PortRecord, Write, normalize_mac};
use serde::{Deserialize, Serialize};

use super::{Registry, Router, Supervisor, check_name, routed};
use crate::KilnError;
use crate::view::{PortGroupView, PortView};

/// Creates a port.
#[derive(Debug, Message)]
#[rtype(result = "Result<PortView, KilnError>")]
pub struct CreatePort {
    pub address: String,
    pub node: String,
}

/// Lists ports, optionally one node's.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PortView>, KilnError>")]
pub struct ListPorts {
    pub node: Option<String>,
}

/// Deletes a port by MAC address.
#[derive(Debug, Message)]
#[rtype(result = "Result<PortView, KilnError>")]
pub struct DeletePort(pub String);

/// Puts a port (by MAC address) in a port group (by name or uuid), moving
/// it from the one it was in, or in none.
#[derive(Debug, Message)]
#[rtype(result = "Result<PortView, KilnError>")]
pub struct SetPortGroup {
    pub address: String,
    pub group: Option<String>,
}

/// A port group to create (`kiln port group create`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPortGroup {
    pub name: String,
    /// The node (name or uuid) whose ports it bonds.
    pub node: String,
    /// A Linux bonding mode name; `None`: `active-backup`.
    pub mode: Option<String>,
    /// The bond's own MAC address, if it has a fixed one.
    pub address: Option<String>,
    /// Its members: MAC addresses of the node's ports, in no group yet.
    pub ports: Vec<String>,
}

/// Creates a port group with its members, all or nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<PortGroupView, KilnError>")]
pub struct CreatePortGroup(pub NewPortGroup);

/// Lists port groups, optionally one node's, by name.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PortGroupView>, KilnError>")]
pub struct ListPortGroups {
    pub node: Option<String>,
}

/// Shows one port group (by name or uuid).
#[derive(Debug, Message)]
#[rtype(result = "Result<PortGroupView, KilnError>")]
pub struct GetPortGroup(pub String);

/// Deletes a port group (by name or uuid); its ports stay, in no group.
/// Answers with the group as it was.
#[derive(Debug, Message)]
#[rtype(result = "Result<PortGroupView, KilnError>")]
pub struct DeletePortGroup(pub String);

fn mac(text: &str) -> Result<String, KilnError> {
    normalize_mac(text).map_err(|e| KilnError::InvalidInput(e.to_string()))
}

fn no_port(address: &str) -> KilnError {
    KilnError::NotFound(format!("no port with address {address}"))
}

fn no_group(group: &str) -> KilnError {
    KilnError::NotFound(format!("no such port group: {group}"))
}

/// The name of a node of the site: this member's, or on a shared store one
/// the directory knows (empty for one deleted meanwhile).
fn node_name(registry: &Registry, id: NodeId) -> String {
    registry
        .by_id
        .get(&id)
        .map(|e| e.name.clone())
        .or_else(|| registry.shared.as_ref()?.directory.name_of(id))
        .unwrap_or_default()
}

/// The refusal of a port and a group of different nodes.
fn other_node(address: &str, port_node: &str, group: &str, group_node: &str) -> KilnError {
    KilnError::InvalidInput(format!(
        "port {address} is node {port_node}'s and port group {group} is node {group_node}'s: \
         a port group bonds ports of one node"
    ))
}

/// The functions behind the port messages.
impl Router {
    pub async fn create_port(&self, msg: CreatePort) -> Result<PortView, KilnError> {
        let now = self.clock.now();
        let address = mac(&msg.address)?;
        let (id, name) = self.find_named(&msg.node).await?;
        let port = PortRecord { uuid: kiln_store::PortId::new(), address, node: id, portgroup: None, created_at: now };
        self.store.commit(vec![Write::InsertPort(port.clone())]).await?;
        Ok(PortView::of(&port, &name, None))
    }

    pub async fn list_ports(&self, msg: ListPorts) -> Result<Vec<PortView>, KilnError> {
        let node = match &msg.node {
            Some(n) => Some(self.find(n).await?),
            None => None,
        };
        let (ports, groups) = self.store.read(move |b| Ok((b.load_ports(node)?, b.load_port_groups(node)?))).await?;
        Ok(PortView::all(&ports, &groups, |p| node_name(&self.registry, p.node)))
    }

    pub async fn delete_port(&self, DeletePort(address): DeletePort) -> Result<PortView, KilnError> {
        let address = mac(&address)?;
        let (port, group) = find_port(&self.store, address.clone()).await?;
        let port = port.ok_or_else(|| no_port(&address))?;
        self.store.commit(vec![Write::DeletePort(address)]).await?;
        Ok(PortView::of(&port, &node_name(&self.registry, port.node), group.as_ref().map(|g| g.name.as_str())))
    }

    pub async fn set_port_group(&self, msg: SetPortGroup) -> Result<PortView, KilnError> {
        let address = mac(&msg.address)?;
        let (port, _) = find_port(&self.store, address.clone()).await?;
        let port = port.ok_or_else(|| no_port(&address))?;
        let group = match &msg.group {
            Some(key) => {
                let key = key.clone();
                let group = self.store.read(move |b| b.load_port_group(&key)).await?;
                Some(group.ok_or_else(|| no_group(msg.group.as_deref().unwrap_or_default()))?)
            }
            None => None,
        };
        if let Some(g) = &group
            && g.node != port.node
        {
            let (port_node, group_node) = (node_name(&self.registry, port.node), node_name(&self.registry, g.node));
            return Err(other_node(&address, &port_node, &g.name, &group_node));
        }
        let id = group.as_ref().map(|g| g.uuid);
        self.store.commit(vec![Write::SetPortGroup { address, group: id }]).await?;
        let port = PortRecord { portgroup: id, ..port };
        Ok(PortView::of(&port, &node_name(&self.registry, port.node), group.as_ref().map(|g| g.name.as_str())))
    }

    pub async fn create_port_group(&self, CreatePortGroup(new): CreatePortGroup) -> Result<PortGroupView, KilnError> {
        let now = self.clock.now();
        check_name("port group", &new.name)?;
        let mode = match &new.mode {
            Some(m) => m.parse::<BondMode>().map_err(|e| KilnError::InvalidInput(e.to_string()))?,
            None => BondMode::DEFAULT,
        };
        let address = new.address.as_deref().map(mac).transpose()?;
        let mut members: Vec<String> = Vec::with_capacity(new.ports.len());
        for text in &new.ports {
            let m = mac(text)?;
            if members.contains(&m) {
                return Err(KilnError::InvalidInput(format!("port {m} is named twice")));
            }
            members.push(m);
        }
        let (id, group_node) = self.find_named(&new.node).await?;
        let name = new.name.clone();
        let (taken, ports, groups) = self
            .store
            .read(move |b| Ok((b.load_port_group(&name)?, b.load_ports(Some(id))?, b.load_port_groups(Some(id))?)))
            .await?;
        if taken.is_some() {
            return Err(KilnError::Conflict(format!("port group name '{}' is already in use", new.name)));
        }
        for m in &members {
            match ports.iter().find(|p| &p.address == m) {
                Some(PortRecord { portgroup: Some(g), .. }) => {
                    let group = groups.iter().find(|x| x.uuid == *g).map_or_else(|| g.to_string(), |x| x.name.clone());
                    return Err(KilnError::Conflict(format!(
                        "port {m} is already in port group {group}; `kiln port set {m} --no-group` frees it"
                    )));
                }
                Some(_) => {}
                None => {
                    let (other, _) = find_port(&self.store, m.clone()).await?;
                    return Err(match other {
                        Some(p) => other_node(m, &node_name(&self.registry, p.node), &new.name, &group_node),
                        None => no_port(m),
                    });
                }
            }
        }
        let group = PortGroupRecord {
            uuid: kiln_store::PortGroupId::new(),
            name: new.name,
            node: id,
            address,
            mode,
            created_at: now,
        };
        let mut batch = vec![Write::InsertPortGroup(group.clone())];
        batch.extend(members.iter().map(|m| Write::SetPortGroup { address: m.clone(), group: Some(group.uuid) }));
        self.store.commit(batch).await?;
        let joined: Vec<PortRecord> = ports
            .into_iter()
            .map(|p| if members.contains(&p.address) { PortRecord { portgroup: Some(group.uuid), ..p } } else { p })
            .collect();
        Ok(PortGroupView::of(&group, &group_node, &joined))
    }

    pub async fn list_port_groups(&self, msg: ListPortGroups) -> Result<Vec<PortGroupView>, KilnError> {
        let node = match &msg.node {
            Some(n) => Some(self.find(n).await?),
            None => None,
        };
        let (groups, ports) = self.store.read(move |b| Ok((b.load_port_groups(node)?, b.load_ports(node)?))).await?;
        Ok(groups.iter().map(|g| PortGroupView::of(g, &node_name(&self.registry, g.node), &ports)).collect())
    }

    pub async fn get_port_group(&self, GetPortGroup(key): GetPortGroup) -> Result<PortGroupView, KilnError> {
        let (group, ports) = find_group(&self.store, &key).await?;
        Ok(PortGroupView::of(&group, &node_name(&self.registry, group.node), &ports))
    }

    pub async fn delete_port_group(&self, DeletePortGroup(key): DeletePortGroup) -> Result<PortGroupView, KilnError> {
        let (group, ports) = find_group(&self.store, &key).await?;
        self.store.commit(vec![Write::DeletePortGroup(group.uuid)]).await?;
        Ok(PortGroupView::of(&group, &node_name(&self.registry, group.node), &ports))
    }
}

routed!(
    CreatePort => create_port -> PortView,
    ListPorts => list_ports -> Vec<PortView>,
    DeletePort => delete_port -> PortView,
    SetPortGroup => set_port_group -> PortView,
    CreatePortGroup => create_port_group -> PortGroupView,
    ListPortGroups => list_port_groups -> Vec<PortGroupView>,
    GetPortGroup => get_port_group -> PortGroupView,
    DeletePortGroup => delete_port_group -> PortGroupView,
);

/// The port with this MAC address, and the group it is in.
async fn find_port(
    store: &kiln_store::StoreHandle,
    address: String,
) -> Result<(Option<PortRecord>, Option<PortGroupRecord>), KilnError> {
    Ok(store
        .read(move |b| {
            let port = b.load_ports(None)?.into_iter().find(|p| p.address == address);
            let group = match port.as_ref().and_then(|p| p.portgroup) {
                Some(id) => b.load_port_group(&id.to_string())?,
                None => None,
            };
            Ok((port, group))
        })
        .await?)
}

/// A group (by name or uuid) with its node's ports.
async fn find_group(
    store: &kiln_store::StoreHandle,
    key: &str,
) -> Result<(PortGroupRecord, Vec<PortRecord>), KilnError> {
    let owned = key.to_string();
    let found = store
        .read(move |b| match b.load_port_group(&owned)? {
            Some(g) => Ok(Some((b.load_ports(Some(g.node))?, g))),
            None => Ok(None),
        })
        .await?;
    let (ports, group) = found.ok_or_else(|| no_group(key))?;
    Ok((group, ports))
}
