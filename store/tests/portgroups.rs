//! Port groups on a real SQLite file: members of one node only, refusals
//! that change nothing, what deleting a group or a node does, and a store
//! of schema version 3 (before port groups) upgraded in place.

use std::path::{Path, PathBuf};

mod support;
use support::Place;

use chrono::{SecondsFormat, TimeZone, Utc};
use kiln_store::sqlite::{MIGRATIONS, SCHEMA_VERSION, SqliteBackend};
use kiln_store::*;

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteBackend {
    SqliteBackend::open(path).unwrap()
}

fn commit_one(store: &mut dyn Backend, batch: Batch) -> Result<(), StoreError> {
    let mut results = store.commit(&[batch]).unwrap();
    results.pop().unwrap()
}

fn node(name: &str) -> NodeRecord {
    NodeRecord::enroll(name.into(), DriverKind::Fake, Utc::now())
}

fn port(node: NodeId, address: &str) -> PortRecord {
    PortRecord { uuid: PortId::new(), address: address.into(), node, portgroup: None, created_at: Utc::now() }
}

fn group(node: NodeId, name: &str) -> PortGroupRecord {
    PortGroupRecord {
        uuid: PortGroupId::new(),
        name: name.into(),
        node,
        address: None,
        mode: BondMode::DEFAULT,
        created_at: Utc::now(),
    }
}

fn join(address: &str, group: &PortGroupRecord) -> Write {
    Write::SetPortGroup { address: address.into(), group: Some(group.uuid) }
}

/// Every port's (address, group), by address.
fn membership(store: &mut dyn Backend) -> Vec<(String, Option<PortGroupId>)> {
    store.load_ports(None).unwrap().into_iter().map(|p| (p.address, p.portgroup)).collect()
}

/// Two nodes with two ports each; `bond0` on n1 holding both its ports.
fn site(store: &mut dyn Backend) -> (NodeRecord, NodeRecord, PortGroupRecord) {
    let (n1, n2) = (node("n1"), node("n2"));
    let mut bond = group(n1.uuid, "bond0");
    bond.address = Some("52:54:00:00:01:01".into());
    bond.mode = BondMode::Ieee8023ad;
    commit_one(
        store,
        vec![
            Write::InsertNode(n1.clone().into()),
            Write::InsertNode(n2.clone().into()),
            Write::InsertPort(port(n1.uuid, "52:54:00:00:01:01")),
            Write::InsertPort(port(n1.uuid, "52:54:00:00:01:02")),
            Write::InsertPort(port(n2.uuid, "52:54:00:00:02:01")),
            Write::InsertPort(port(n2.uuid, "52:54:00:00:02:02")),
            Write::InsertPortGroup(bond.clone()),
            join("52:54:00:00:01:01", &bond),
            join("52:54:00:00:01:02", &bond),
        ],
    )
    .unwrap();
    (n1, n2, bond)
}

fn a_group_round_trips_with_its_members(place: &Place) {
    let mut store = place.open();
    let (n1, n2, bond) = site(&mut store);
    assert_eq!(store.load_port_groups(None).unwrap(), vec![bond.clone()]);
    assert_eq!(store.load_port_groups(Some(n1.uuid)).unwrap(), vec![bond.clone()]);
    assert!(store.load_port_groups(Some(n2.uuid)).unwrap().is_empty());
    assert_eq!(store.load_port_group("bond0").unwrap(), Some(bond.clone()));
    assert_eq!(store.load_port_group(&bond.uuid.to_string()).unwrap(), Some(bond.clone()));
    assert_eq!(store.load_port_group("bond1").unwrap(), None);
    let members: Vec<_> = store.load_ports(Some(n1.uuid)).unwrap().into_iter().map(|p| p.portgroup).collect();
    assert_eq!(members, vec![Some(bond.uuid), Some(bond.uuid)]);
    // Every mode is stored as its name and read back.
    for (i, mode) in BondMode::ALL.iter().enumerate() {
        let g = PortGroupRecord { mode: *mode, ..group(n2.uuid, &format!("g{i}")) };
        commit_one(&mut store, vec![Write::InsertPortGroup(g.clone())]).unwrap();
        assert_eq!(store.load_port_group(&g.name).unwrap(), Some(g));
    }
}

fn refused_group_writes_change_nothing(place: &Place) {
    let mut store = place.open();
    let (n1, n2, bond) = site(&mut store);
    let groups = store.load_port_groups(None).unwrap();
    let ports = membership(&mut store);

    // Another node's port, even alongside a valid write in the batch.
    let other = group(n2.uuid, "bond-n2");
    let err = commit_one(
        &mut store,
        vec![
            Write::InsertPortGroup(other.clone()),
            join("52:54:00:00:02:01", &other),
            join("52:54:00:00:01:01", &other),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("52:54:00:00:01:01") && m.contains("another node")),
        "{err}"
    );
    // A port inserted straight into another node's group.
    let stray = PortRecord { portgroup: Some(bond.uuid), ..port(n2.uuid, "52:54:00:00:02:09") };
    let err = commit_one(&mut store, vec![Write::InsertPort(stray)]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("another node")), "{err}");
    // A taken name, a taken address.
    let err = commit_one(&mut store, vec![Write::InsertPortGroup(group(n2.uuid, "bond0"))]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("name 'bond0'")), "{err}");
    let same_mac = PortGroupRecord { address: bond.address.clone(), ..group(n2.uuid, "bond9") };
    let err = commit_one(&mut store, vec![Write::InsertPortGroup(same_mac)]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("address '52:54:00:00:01:01'")), "{err}");
    // Unknown ports, groups, nodes.
    let err = commit_one(&mut store, vec![join("52:54:00:00:09:09", &bond)]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m.contains("52:54:00:00:09:09")), "{err}");
    let ghost = group(n1.uuid, "ghost");
    let err = commit_one(&mut store, vec![join("52:54:00:00:01:01", &ghost)]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m.contains(&ghost.uuid.to_string())), "{err}");
    let err = commit_one(&mut store, vec![Write::DeletePortGroup(ghost.uuid)]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = commit_one(&mut store, vec![Write::InsertPortGroup(group(NodeId::new(), "orphan"))]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    assert_eq!(store.load_port_groups(None).unwrap(), groups);
    assert_eq!(membership(&mut store), ports);
    let _ = n1;
}

fn deleting_a_group_ungroups_its_ports_and_deleting_a_node_takes_its_groups(place: &Place) {
    let mut store = place.open();
    let (n1, n2, bond) = site(&mut store);
    // A port leaves its group, and joins it again.
    commit_one(&mut store, vec![Write::SetPortGroup { address: "52:54:00:00:01:02".into(), group: None }]).unwrap();
    assert_eq!(store.load_ports(Some(n1.uuid)).unwrap()[1].portgroup, None);
    commit_one(&mut store, vec![join("52:54:00:00:01:02", &bond)]).unwrap();

    commit_one(&mut store, vec![Write::DeletePortGroup(bond.uuid)]).unwrap();
    assert!(store.load_port_groups(None).unwrap().is_empty());
    assert_eq!(store.load_ports(Some(n1.uuid)).unwrap().len(), 2, "the members stay");
    assert!(membership(&mut store).iter().all(|(_, g)| g.is_none()));

    let bond2 = group(n2.uuid, "bond2");
    commit_one(&mut store, vec![Write::InsertPortGroup(bond2.clone()), join("52:54:00:00:02:01", &bond2)]).unwrap();
    commit_one(&mut store, vec![Write::DeleteNode(n2.uuid)]).unwrap();
    assert!(store.load_port_groups(None).unwrap().is_empty());
    assert!(store.load_ports(Some(n2.uuid)).unwrap().is_empty());
    assert_eq!(store.load_ports(None).unwrap().len(), 2);
}

#[test]
fn a_version_3_store_is_upgraded_in_place_with_its_ports() {
    let (_dir, path) = db();
    let created = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
    let n = NodeRecord::enroll("old-node".into(), DriverKind::Fake, created);
    let old_port = PortRecord {
        uuid: PortId::new(),
        address: "52:54:00:aa:bb:01".into(),
        node: n.uuid,
        portgroup: None,
        created_at: created,
    };
    {
        // What a kiln of schema version 3 wrote.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        let at = created.to_rfc3339_opts(SecondsFormat::Nanos, true);
        tx.execute(
            "INSERT INTO nodes (uuid, name, driver, driver_info, properties, provision_state, maintenance,
                                created_at, updated_at)
             VALUES (?1, 'old-node', 'fake', '{}', '{}', 'enroll', 0, ?2, ?2)",
            rusqlite::params![n.uuid.to_string(), at],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO ports (uuid, address, node, created_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![old_port.uuid.to_string(), old_port.address, n.uuid.to_string(), at],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let version = |path: &Path| -> i64 {
        rusqlite::Connection::open(path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
    };
    assert_eq!(version(&path), 3);

    let mut store = open(&path);
    assert_eq!(version(&path), SCHEMA_VERSION);
    assert_eq!(store.load_nodes().unwrap(), vec![n.clone()]);
    assert_eq!(store.load_ports(None).unwrap(), vec![old_port.clone()]);
    // The old port can join a new group, and a port of another node cannot.
    let bond = group(n.uuid, "bond0");
    commit_one(&mut store, vec![Write::InsertPortGroup(bond.clone()), join(&old_port.address, &bond)]).unwrap();
    let other = node("other");
    let err = commit_one(
        &mut store,
        vec![
            Write::InsertNode(other.clone().into()),
            Write::InsertPort(port(other.uuid, "52:54:00:aa:bb:02")),
            join("52:54:00:aa:bb:02", &bond),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    drop(store);
    // Opened again: nothing runs twice, everything is there.
    let mut store = open(&path);
    assert_eq!(version(&path), SCHEMA_VERSION);
    assert_eq!(store.load_ports(None).unwrap()[0].portgroup, Some(bond.uuid));
    assert_eq!(store.load_port_groups(None).unwrap(), vec![bond]);
}

on_both!(
    a_group_round_trips_with_its_members,
    refused_group_writes_change_nothing,
    deleting_a_group_ungroups_its_ports_and_deleting_a_node_takes_its_groups,
);
