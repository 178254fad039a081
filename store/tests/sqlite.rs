//! The SQLite backend on real files: round trips, typed errors, per-batch
//! atomicity, cascades, durability across reopen, migrations, and damaged
//! data read back as errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod support;
use support::Place;

use chrono::{Duration, TimeZone, Utc};
use kiln_store::sqlite::{SCHEMA_VERSION, SqliteBackend};
use kiln_store::*;

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: open must create it.
    let path = dir.path().join("site").join("kiln.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteBackend {
    SqliteBackend::open(path).unwrap()
}

/// Makes a store file written by hand private, as an operator must (with
/// `chmod 600`) before kiln opens a store that others can read.
fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A node with every optional field set and a name that is not ASCII.
fn full_node() -> NodeRecord {
    let created = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap() + Duration::nanoseconds(123_456_789);
    NodeRecord {
        uuid: NodeId::new(),
        name: "nœud-été-節点-🔥".into(),
        driver: DriverKind::Redfish,
        driver_info: BTreeMap::from([
            ("address".into(), "https://10.0.0.1".into()),
            ("username".into(), "root".into()),
            ("password".into(), "p\"a'ss\\wörd".into()),
        ]),
        properties: BTreeMap::from([("cpus".into(), "64".into()), ("memory_mb".into(), "262144".into())]),
        provision_state: ProvisionState::WaitCallBack,
        target_provision_state: Some(ProvisionState::Active),
        power_state: Some(PowerState::On),
        target_power_state: Some(PowerState::Off),
        boot_device: Some(BootDevice::Pxe),
        maintenance: true,
        maintenance_reason: Some("fan ✗".into()),
        fault: Some("power failure".into()),
        last_error: Some("BMC said: 500 'Internal'".into()),
        reservation: Some(Reservation { purpose: "deploy".into(), since: created + Duration::microseconds(7) }),
        created_at: created,
        updated_at: Utc::now(),
        bmc_last_contact: Some(created + Duration::seconds(3)),
        bmc_unreachable_since: Some(created + Duration::seconds(4)),
        power_verified_at: Some(created + Duration::nanoseconds(1)),
        bmc_profile: Some(BmcProfile {
            redfish_auth: Some(BmcAuth::Basic),
            redfish_sessions: Some(false),
            ipmi_cipher_suite: Some(3),
            learned_at: created + Duration::seconds(5),
        }),
        extra: serde_json::json!({"rack": "r1", "slot": 4, "tags": ["a", "b"], "owner": {"team": "été"}})
            .as_object()
            .unwrap()
            .clone(),
        instance_info: serde_json::json!({"image_url": "http://10.0.0.2/img.iso", "root_gb": 10.5, "x": null})
            .as_object()
            .unwrap()
            .clone(),
        callback: Some(Box::new(CallbackWait { token: "0a1b".repeat(16), since: created + Duration::seconds(6) })),
    }
}

fn node(name: &str) -> NodeRecord {
    NodeRecord::enroll(name.into(), DriverKind::Fake, Utc::now())
}

fn port(node: NodeId, address: &str) -> PortRecord {
    PortRecord { uuid: PortId::new(), address: address.into(), node, portgroup: None, created_at: Utc::now() }
}

fn history(node: NodeId, event: &str) -> HistoryEntry {
    HistoryEntry {
        node,
        at: Utc::now(),
        event: event.into(),
        from_state: ProvisionState::Enroll,
        to_state: ProvisionState::Verifying,
        error: None,
    }
}

/// Commits one batch and returns its own result.
fn commit_one(store: &mut dyn Backend, batch: Batch) -> Result<(), StoreError> {
    let mut results = store.commit(&[batch]).unwrap();
    assert_eq!(results.len(), 1);
    results.pop().unwrap()
}

/// An integer pragma of the file at `path`, read on a connection of its own.
fn pragma(path: &Path, name: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
}

fn user_version(path: &Path) -> i64 {
    pragma(path, "user_version")
}

fn a_fully_populated_node_round_trips_exactly(place: &Place) {
    let mut store = place.open();
    let n = full_node();
    commit_one(&mut store, vec![Write::InsertNode(n.clone().into())]).unwrap();

    assert_eq!(store.load_node(n.uuid).unwrap(), Some(n.clone()));
    assert_eq!(store.load_nodes().unwrap(), vec![n.clone()]);
    assert_eq!(store.load_node(NodeId::new()).unwrap(), None);

    // And the minimal one: every optional field None.
    let bare = node("bare");
    commit_one(&mut store, vec![Write::InsertNode(bare.clone().into())]).unwrap();
    assert_eq!(store.load_node(bare.uuid).unwrap(), Some(bare));
}

fn update_replaces_every_field_and_missing_nodes_are_not_found(place: &Place) {
    let mut store = place.open();
    let n = node("n1");
    commit_one(&mut store, vec![Write::InsertNode(n.clone().into())]).unwrap();

    let mut changed = full_node();
    changed.uuid = n.uuid;
    commit_one(&mut store, vec![Write::UpdateNode(changed.clone().into())]).unwrap();
    assert_eq!(store.load_node(n.uuid).unwrap(), Some(changed.clone()));

    // And back to all-None: nothing of the old values lingers.
    commit_one(&mut store, vec![Write::UpdateNode(n.clone().into())]).unwrap();
    assert_eq!(store.load_node(n.uuid).unwrap(), Some(n.clone()));

    // The update that keeps the name (the store's cheaper statement)
    // replaces every other field just the same, and the rename above
    // left the first name free.
    let mut same_name = full_node();
    same_name.uuid = n.uuid;
    same_name.name = n.name.clone();
    commit_one(&mut store, vec![Write::UpdateNode(same_name.clone().into())]).unwrap();
    assert_eq!(store.load_node(n.uuid).unwrap(), Some(same_name));
    let mut taker = full_node();
    taker.name = changed.name.clone();
    commit_one(&mut store, vec![Write::InsertNode(taker.into())]).unwrap();

    let ghost = node("ghost");
    let err = commit_one(&mut store, vec![Write::UpdateNode(ghost.clone().into())]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m == &format!("node {} does not exist", ghost.uuid)), "{err:?}");
    let err = commit_one(&mut store, vec![Write::DeleteNode(ghost.uuid)]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

fn a_duplicate_name_fails_its_batch_alone(place: &Place) {
    let mut store = place.open();
    let first = node("dup");
    commit_one(&mut store, vec![Write::InsertNode(first.clone().into())]).unwrap();

    // Batch 0 would insert a fine node, then a clashing one: all or nothing.
    let innocent = node("innocent");
    let clash = node("dup");
    let other = node("other");
    let results = store
        .commit(&[
            vec![
                Write::InsertNode(innocent.clone().into()),
                Write::AppendHistory(history(first.uuid, "manage")),
                Write::InsertNode(clash.into()),
            ],
            vec![Write::InsertNode(other.clone().into())],
        ])
        .unwrap();
    assert_eq!(results.len(), 2);
    match &results[0] {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "node name 'dup' is already in use"),
        r => panic!("expected a conflict, got {r:?}"),
    }
    assert!(results[1].is_ok());

    let names: Vec<String> = store.load_nodes().unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, vec!["dup", "other"]);
    assert_eq!(store.load_node(innocent.uuid).unwrap(), None);
    assert!(store.load_history(first.uuid, 10).unwrap().is_empty());

    // A rename onto a taken name is a conflict too, and changes nothing.
    let mut renamed = other.clone();
    renamed.name = "dup".into();
    let err = commit_one(&mut store, vec![Write::UpdateNode(renamed.into())]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("'dup'")), "{err:?}");
    assert_eq!(store.load_node(other.uuid).unwrap(), Some(other));
}

fn a_duplicate_uuid_is_a_conflict(place: &Place) {
    let mut store = place.open();
    let n = node("a");
    commit_one(&mut store, vec![Write::InsertNode(n.clone().into())]).unwrap();
    let mut again = node("b");
    again.uuid = n.uuid;
    let err = commit_one(&mut store, vec![Write::InsertNode(again.into())]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == &format!("node uuid {} already exists", n.uuid)), "{err:?}");
}

fn ports_conflict_on_mac_and_need_their_node(place: &Place) {
    let mut store = place.open();
    let a = node("a");
    let b = node("b");
    commit_one(&mut store, vec![Write::InsertNode(a.clone().into()), Write::InsertNode(b.clone().into())]).unwrap();
    let pa = port(a.uuid, "52:54:00:00:00:02");
    let pb = port(b.uuid, "52:54:00:00:00:01");
    commit_one(&mut store, vec![Write::InsertPort(pa.clone()), Write::InsertPort(pb.clone())]).unwrap();

    let err = commit_one(&mut store, vec![Write::InsertPort(port(b.uuid, &pa.address))]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m == "port address '52:54:00:00:00:02' is already in use"),
        "{err:?}"
    );

    let ghost = NodeId::new();
    let err = commit_one(&mut store, vec![Write::InsertPort(port(ghost, "52:54:00:00:00:03"))]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m == &format!("node {ghost} does not exist")), "{err:?}");
    let err = commit_one(&mut store, vec![Write::AppendHistory(history(ghost, "manage"))]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    // Ordered by address, filtered by node.
    assert_eq!(store.load_ports(None).unwrap(), vec![pb.clone(), pa.clone()]);
    assert_eq!(store.load_ports(Some(a.uuid)).unwrap(), vec![pa.clone()]);

    commit_one(&mut store, vec![Write::DeletePort(pa.address.clone())]).unwrap();
    assert_eq!(store.load_ports(None).unwrap(), vec![pb]);
    let err = commit_one(&mut store, vec![Write::DeletePort(pa.address.clone())]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m.contains("52:54:00:00:00:02")), "{err:?}");
}

/// What inspection writes for each NIC: the port once, and then nothing,
/// whoever has the MAC; only a missing node is refused.
fn a_port_if_free_is_inserted_once_and_a_taken_mac_is_kept(place: &Place) {
    let mut store = place.open();
    let a = node("a");
    let b = node("b");
    commit_one(&mut store, vec![Write::InsertNode(a.clone().into()), Write::InsertNode(b.clone().into())]).unwrap();
    let first = port(a.uuid, "52:54:00:00:00:01");
    commit_one(&mut store, vec![Write::InsertPortIfFree(first.clone())]).unwrap();
    assert_eq!(store.load_ports(None).unwrap(), vec![first.clone()]);

    // The same MAC again, for the same node or another: no error, no change.
    commit_one(&mut store, vec![Write::InsertPortIfFree(port(a.uuid, &first.address))]).unwrap();
    let second = port(b.uuid, "52:54:00:00:00:02");
    commit_one(
        &mut store,
        vec![Write::InsertPortIfFree(port(b.uuid, &first.address)), Write::InsertPortIfFree(second.clone())],
    )
    .unwrap();
    assert_eq!(store.load_ports(None).unwrap(), vec![first.clone(), second.clone()]);

    // A plain insert of a taken MAC is still refused.
    let err = commit_one(&mut store, vec![Write::InsertPort(port(b.uuid, &first.address))]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let ghost = NodeId::new();
    let err = commit_one(&mut store, vec![Write::InsertPortIfFree(port(ghost, "52:54:00:00:00:03"))]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m == &format!("node {ghost} does not exist")), "{err:?}");
    drop(store);
    assert_eq!(place.open().load_ports(None).unwrap(), vec![first, second]);
}

fn deleting_a_node_takes_its_ports_and_history(place: &Place) {
    let mut store = place.open();
    let gone = node("gone");
    let kept = node("kept");
    commit_one(
        &mut store,
        vec![
            Write::InsertNode(gone.clone().into()),
            Write::InsertNode(kept.clone().into()),
            Write::InsertPort(port(gone.uuid, "52:54:00:00:00:01")),
            Write::InsertPort(port(kept.uuid, "52:54:00:00:00:02")),
            Write::AppendHistory(history(gone.uuid, "manage")),
            Write::AppendHistory(history(kept.uuid, "manage")),
        ],
    )
    .unwrap();
    commit_one(&mut store, vec![Write::DeleteNode(gone.uuid)]).unwrap();

    assert_eq!(store.load_node(gone.uuid).unwrap(), None);
    assert!(store.load_ports(Some(gone.uuid)).unwrap().is_empty());
    assert!(store.load_history(gone.uuid, 10).unwrap().is_empty());
    assert_eq!(store.load_ports(None).unwrap().len(), 1);
    assert_eq!(store.load_history(kept.uuid, 10).unwrap().len(), 1);

    // The MAC is free again.
    let gone_again = node("gone");
    commit_one(
        &mut store,
        vec![
            Write::InsertNode(gone_again.clone().into()),
            Write::InsertPort(port(gone_again.uuid, "52:54:00:00:00:01")),
        ],
    )
    .unwrap();
}

fn history_is_the_last_entries_oldest_first(place: &Place) {
    let mut store = place.open();
    let a = node("a");
    let b = node("b");
    commit_one(&mut store, vec![Write::InsertNode(a.clone().into()), Write::InsertNode(b.clone().into())]).unwrap();
    let mut expected = Vec::new();
    for i in 0..10 {
        let mut entry = history(a.uuid, &format!("event-{i}"));
        if i == 3 {
            entry.error = Some("BMC timed out".into());
            entry.to_state = ProvisionState::DeployFailed;
        }
        expected.push(entry.clone());
        // Interleave another node's entries: they must not show up.
        commit_one(&mut store, vec![Write::AppendHistory(entry), Write::AppendHistory(history(b.uuid, "other"))])
            .unwrap();
    }
    assert_eq!(store.load_history(a.uuid, 100).unwrap(), expected);
    assert_eq!(store.load_history(a.uuid, 4).unwrap(), expected[6..].to_vec());
    assert!(store.load_history(a.uuid, 0).unwrap().is_empty());
    assert_eq!(store.load_history(a.uuid, usize::MAX).unwrap().len(), 10);
}

fn everything_committed_is_there_after_reopening(place: &Place) {
    let n = full_node();
    let p = port(n.uuid, "52:54:00:ab:cd:ef");
    let h = history(n.uuid, "manage");
    {
        let mut store = place.open();
        commit_one(
            &mut store,
            vec![Write::InsertNode(n.clone().into()), Write::InsertPort(p.clone()), Write::AppendHistory(h.clone())],
        )
        .unwrap();
        store.checkpoint().unwrap();
        let mut later = n.clone();
        later.provision_state = ProvisionState::Active;
        later.reservation = None;
        // This one stays in the WAL only: reopening must replay it.
        commit_one(&mut store, vec![Write::UpdateNode(later.into())]).unwrap();
    }
    let mut store = place.open();
    let mut expected = n.clone();
    expected.provision_state = ProvisionState::Active;
    expected.reservation = None;
    assert_eq!(store.load_nodes().unwrap(), vec![expected]);
    assert_eq!(store.load_ports(None).unwrap(), vec![p]);
    assert_eq!(store.load_history(n.uuid, 10).unwrap(), vec![h]);
}

#[test]
fn migrations_bring_a_new_file_to_the_latest_version_once() {
    let (_dir, path) = db();
    let n = node("n");
    {
        let mut store = open(&path);
        commit_one(&mut store, vec![Write::InsertNode(n.clone().into())]).unwrap();
    }
    assert_eq!(SCHEMA_VERSION, kiln_store::sqlite::MIGRATIONS.len() as i64);
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    // Reopening runs nothing again (a CREATE TABLE would fail) and keeps data.
    let mut store = open(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(store.load_nodes().unwrap(), vec![n]);
}

#[test]
fn a_new_store_has_large_pages_and_an_old_one_keeps_its_own() {
    let (_dir, path) = db();
    drop(open(&path));
    assert_eq!(pragma(&path, "page_size"), kiln_store::sqlite::PAGE_SIZE);

    // A store made by a kiln that used SQLite's default page size.
    let old = path.with_file_name("old.db");
    {
        let conn = rusqlite::Connection::open(&old).unwrap();
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE before_kiln (x INTEGER)").unwrap();
    }
    make_private(&old);
    let n = node("n");
    {
        let mut store = open(&old);
        commit_one(&mut store, vec![Write::InsertNode(n.clone().into())]).unwrap();
    }
    assert_eq!(pragma(&old, "page_size"), 4096, "opening must not rewrite an existing file");
    assert_eq!(open(&old).load_nodes().unwrap(), vec![n]);
}

#[test]
fn a_file_from_a_newer_kiln_is_refused() {
    let (_dir, path) = db();
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    }
    match SqliteBackend::open(&path) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        Err(e) => panic!("expected TooNew, got {e:?}"),
        Ok(_) => panic!("expected TooNew, got a store"),
    }
    // Refusing did not touch the version.
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
}

#[test]
fn damaged_values_are_corrupt_errors_not_panics() {
    let (_dir, path) = db();
    let n = node("n");
    {
        let mut store = open(&path);
        commit_one(
            &mut store,
            vec![Write::InsertNode(n.clone().into()), Write::AppendHistory(history(n.uuid, "manage"))],
        )
        .unwrap();
    }
    let damage = |sql: &str| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(sql, []).unwrap();
    };
    let expect_corrupt = |what: &[&str]| {
        let mut store = open(&path);
        let errors = [store.load_nodes().map(|_| ()), store.load_node(n.uuid).map(|_| ())];
        for result in errors {
            match result {
                Err(StoreError::Corrupt(m)) => {
                    for w in what {
                        assert!(m.contains(w), "{m:?} does not name {w:?}");
                    }
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    };

    damage("UPDATE nodes SET provision_state = 'deployed-ish'");
    expect_corrupt(&["nodes.provision_state", "'deployed-ish'"]);

    damage("UPDATE nodes SET provision_state = 'enroll', power_state = 'sort of on'");
    expect_corrupt(&["nodes.power_state", "'sort of on'"]);

    damage("UPDATE nodes SET power_state = NULL, driver_info = '{not json'");
    expect_corrupt(&["nodes.driver_info", "{not json"]);

    damage("UPDATE nodes SET driver_info = '{}', updated_at = 'yesterday'");
    expect_corrupt(&["nodes.updated_at", "'yesterday'"]);

    damage(&format!(
        "UPDATE nodes SET updated_at = created_at, reservation_purpose = 'deploy' WHERE uuid = '{}'",
        n.uuid
    ));
    expect_corrupt(&["reservation"]);

    damage("UPDATE nodes SET reservation_purpose = NULL");
    let mut store = open(&path);
    assert_eq!(store.load_node(n.uuid).unwrap(), Some(n.clone()));

    damage("UPDATE node_history SET to_state = 'limbo'");
    match store.load_history(n.uuid, 10) {
        Err(StoreError::Corrupt(m)) => {
            assert!(m.contains("node_history.to_state") && m.contains("'limbo'"), "{m}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn events_are_kept_in_serial_order_across_a_reopen_and_forgotten_from_the_oldest(place: &Place) {
    let event = |serial: u64| EventRecord { serial, body: format!("event {serial}").into_bytes() };
    {
        let mut store = place.open();
        assert_eq!(store.event_span().unwrap(), (0, 0));
        let batch = (1..=5).map(|s| Write::AppendEvent(event(s))).collect();
        commit_one(&mut store, batch).unwrap();
        // A serial is never written twice; the refused batch changes
        // nothing. (A shared store gives serials itself: `postgres.rs`.)
        if !store.assigns_event_serials() {
            let again = commit_one(&mut store, vec![Write::AppendEvent(event(6)), Write::AppendEvent(event(3))]);
            assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        }
    }
    let mut store = place.open();
    assert_eq!(store.event_span().unwrap(), (5, 5));
    assert_eq!(store.load_events(0, 2).unwrap(), vec![event(1), event(2)]);
    assert_eq!(store.load_events(3, 100).unwrap(), vec![event(4), event(5)]);
    commit_one(&mut store, vec![Write::ForgetEventsThrough(3)]).unwrap();
    assert_eq!(store.event_span().unwrap(), (5, 2));
    assert_eq!(store.load_events(0, 100).unwrap(), vec![event(4), event(5)]);
}

on_both!(
    a_fully_populated_node_round_trips_exactly,
    update_replaces_every_field_and_missing_nodes_are_not_found,
    a_duplicate_name_fails_its_batch_alone,
    a_duplicate_uuid_is_a_conflict,
    ports_conflict_on_mac_and_need_their_node,
    a_port_if_free_is_inserted_once_and_a_taken_mac_is_kept,
    deleting_a_node_takes_its_ports_and_history,
    history_is_the_last_entries_oldest_first,
    everything_committed_is_there_after_reopening,
    events_are_kept_in_serial_order_across_a_reopen_and_forgotten_from_the_oldest,
);

/// The workspace builds SQLite without `SQLITE_ENABLE_MEMORY_MANAGEMENT`
/// (`.cargo/config.toml`): with it, every connection in the process shares
/// one page cache, and one store's pages push out another's.
#[test]
fn each_connection_keeps_a_page_cache_of_its_own() {
    assert!(
        kiln_store::sqlite::page_cache_per_connection(),
        "SQLite was built with SQLITE_ENABLE_MEMORY_MANAGEMENT: is LIBSQLITE3_FLAGS in .cargo/config.toml lost?"
    );
}
