//! What only the PostgreSQL backend has: fencing in the node rows, the
//! schema version table, the group commit through the store thread,
//! connection failures that name their cause without the password, and
//! one event stream for every member, numbered in commit order. The
//! tests both backends share are in `sqlite.rs`, `jobs.rs` and
//! `portgroups.rs` (`on_both!`).

use chrono::Utc;
use kiln_store::postgres::{PgOptions, PgTarget, SCHEMA_VERSION};
use kiln_store::*;

mod support;
use support::{Kind, PASSWORD, Place, server};

fn node(name: &str) -> NodeRecord {
    NodeRecord::enroll(name.into(), DriverKind::Fake, Utc::now())
}

fn history(node: NodeId) -> HistoryEntry {
    HistoryEntry {
        node,
        at: Utc::now(),
        event: "manage".into(),
        from_state: ProvisionState::Enroll,
        to_state: ProvisionState::Verifying,
        error: None,
    }
}

fn commit_one(store: &mut dyn Backend, batch: Batch) -> Result<(), StoreError> {
    store.commit(&[batch]).unwrap().pop().unwrap()
}

#[test]
fn a_member_whose_nodes_were_claimed_is_fenced_and_writes_nothing() {
    let place = Place::new(Kind::Postgres);
    let mut old = place.open_as("old");
    let n = node("n1");
    commit_one(&mut *old, vec![Write::InsertNode(n.clone().into()), Write::AppendHistory(history(n.uuid))]).unwrap();

    // A new member opens the same database: it claims every node.
    let mut new = place.open_as("new");
    let mut stale = n.clone();
    stale.provision_state = ProvisionState::Active;
    for batch in [
        vec![Write::UpdateNode(stale.clone().into())],
        vec![Write::AppendHistory(history(n.uuid))],
        vec![Write::DeleteNode(n.uuid)],
    ] {
        let err = commit_one(&mut *old, batch).unwrap_err();
        assert!(matches!(&err, StoreError::Fenced(m) if m.contains(&n.uuid.to_string())), "{err:?}");
    }
    // A fenced write fails its batch alone, in a group with others.
    let other = node("other");
    let results = old
        .commit(&[vec![Write::UpdateNode(stale.into())], vec![Write::SetMeta { key: "k".into(), value: "v".into() }]])
        .unwrap();
    assert!(matches!(results[0], Err(StoreError::Fenced(_))), "{results:?}");
    assert!(results[1].is_ok());
    commit_one(&mut *old, vec![Write::InsertNode(other.clone().into())]).unwrap();

    assert_eq!(new.load_node(n.uuid).unwrap(), Some(n.clone()));
    assert_eq!(new.load_history(n.uuid, 10).unwrap().len(), 1);
    let mut moved = n.clone();
    moved.provision_state = ProvisionState::Manageable;
    commit_one(&mut *new, vec![Write::UpdateNode(moved.clone().into()), Write::AppendHistory(history(n.uuid))])
        .unwrap();
    assert_eq!(new.load_node(n.uuid).unwrap(), Some(moved));
    // The new member may not write the node the old one inserted after it
    // claimed (it never claimed it): fenced too, never silent.
    let err = commit_one(&mut *new, vec![Write::UpdateNode(other.clone().into())]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
}

#[test]
fn a_node_list_reads_every_member_s_names_then_records_by_uuid() {
    let place = Place::new(Kind::Postgres);
    let mut a = place.open_as("a");
    let (a1, a2) = (node("a1"), node("a2"));
    commit_one(&mut *a, vec![Write::InsertNode(a1.clone().into()), Write::InsertNode(a2.clone().into())]).unwrap();
    let mut b = place.open_as("b");
    let b1 = node("b1");
    commit_one(&mut *b, vec![Write::InsertNode(b1.clone().into())]).unwrap();

    let shared = a.shared().expect("a shared store");
    let mut names = shared.node_names().unwrap();
    names.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(names, [(a1.uuid, "a1".to_string()), (a2.uuid, "a2".into()), (b1.uuid, "b1".into())]);
    // Whichever member runs the node; a uuid no node has is left out.
    let mut records = shared.load_nodes_by_id(&[b1.uuid, NodeId::new(), a2.uuid]).unwrap();
    records.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a2", "b1"]);
    assert_eq!(records[1].uuid, b1.uuid);
    assert!(shared.load_nodes_by_id(&[]).unwrap().is_empty());
}

#[test]
fn unique_and_foreign_key_errors_carry_their_kind_on_both_backends() {
    for kind in [Kind::Sqlite, Kind::Postgres] {
        let place = Place::new(kind);
        let mut store = place.open();
        let n = node("a");
        commit_one(&mut *store, vec![Write::InsertNode(n.clone().into())]).unwrap();
        let mut same = node("b");
        same.uuid = n.uuid;
        let err = commit_one(&mut *store, vec![Write::InsertNode(same.into())]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m == &format!("node uuid {} already exists", n.uuid)),
            "{kind:?} {err:?}"
        );
        let err = commit_one(&mut *store, vec![Write::InsertNode(node("a").into())]).unwrap_err();
        assert_eq!(err.to_string(), "node name 'a' is already in use", "{kind:?}");
    }
}

#[test]
fn the_schema_is_versioned_and_a_newer_one_is_refused() {
    let place = Place::new(Kind::Postgres);
    drop(place.open());
    drop(place.open());
    let url = place.target();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let version: i64 = runtime.block_on(async {
        let raw = server().url(url.masked().rsplit('/').next().unwrap().split('?').next().unwrap());
        let (client, connection) = tokio_postgres::connect(&raw, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let version = client.query_one("SELECT version FROM kiln_schema", &[]).await.unwrap().get(0);
        client.execute("UPDATE kiln_schema SET version = version + 1", &[]).await.unwrap();
        version
    });
    assert_eq!(version, SCHEMA_VERSION);
    match place.open_pg("m") {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committers_share_pipelined_groups_on_the_store_thread() {
    let backend = tokio::task::spawn_blocking(|| {
        let place = Place::new(Kind::Postgres);
        (place.open_pg("m").unwrap(), place)
    })
    .await
    .unwrap();
    let store = StoreHandle::start(Box::new(backend.0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let n = node(&format!("n{i}"));
            store
                .commit(vec![Write::InsertNode(n.clone().into()), Write::AppendHistory(history(n.uuid))])
                .await
                .unwrap();
            let mut later = n.clone();
            later.provision_state = ProvisionState::Manageable;
            store.commit(vec![Write::UpdateNode(later.into())]).await.unwrap();
            // A duplicate fails alone.
            store.commit(vec![Write::InsertNode(node(&format!("n{i}")).into())]).await.unwrap_err();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let nodes = store.read(|b| b.load_nodes()).await.unwrap();
    assert_eq!(nodes.len(), 64);
    assert!(nodes.iter().all(|n| n.provision_state == ProvisionState::Manageable));
    drop(backend.1);
}

#[test]
fn a_wrong_password_is_refused_at_once_and_never_shown() {
    let bad = format!("postgres://kiln:not-{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable", server().port());
    let target = PgTarget::parse(&bad).unwrap();
    let started = std::time::Instant::now();
    let err = kiln_store::postgres::PgBackend::open(PgOptions {
        target,
        member: "m".into(),
        connect_for: std::time::Duration::from_secs(30),
        ring_key: None,
        name: None,
    })
    .map(|_| ())
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect(_)), "{err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(PASSWORD) && !format!("{err:?}").contains(PASSWORD), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_server_that_is_down_is_retried_for_a_bounded_time_then_named() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://kiln:s3cret@127.0.0.1:{port}/kiln?sslmode=disable");
    let started = std::time::Instant::now();
    let err = kiln_store::postgres::PgBackend::open(PgOptions {
        target: PgTarget::parse(&url).unwrap(),
        member: "m".into(),
        connect_for: std::time::Duration::from_secs(2),
        ring_key: None,
        name: None,
    })
    .map(|_| ())
    .unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(2) && waited < std::time::Duration::from_secs(10), "{waited:?}");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect(_)), "{err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")) && !text.contains("s3cret"), "{text}");
}

/// A server of its own, serving TLS (`KILN_PG_TLS=1`): its port and the
/// CA that signed its certificate.
fn tls_server(dir: &std::path::Path) -> (u16, std::path::PathBuf) {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh"))
        .args(["start", dir.to_str().unwrap(), "0"])
        .env("KILN_PG_TLS", "1")
        .env("KILN_PG_FAST", "1")
        .env("KILN_PG_PASSWORD", PASSWORD)
        .env("KILN_PG_WATCH", std::process::id().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let port = stdout.lines().find_map(|l| l.strip_prefix("port=")).unwrap().parse().unwrap();
    let ca = stdout.lines().find_map(|l| l.strip_prefix("ca=")).unwrap().into();
    (port, ca)
}

fn open_url(url: &str) -> Result<kiln_store::postgres::PgBackend, StoreError> {
    kiln_store::postgres::PgBackend::open(PgOptions {
        target: PgTarget::parse(url).unwrap(),
        member: "tls".into(),
        connect_for: std::time::Duration::from_secs(5),
        ring_key: None,
        name: None,
    })
}

#[test]
fn verify_full_checks_the_server_certificate_against_sslrootcert() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ca) = tls_server(&dir.path().join("pg"));
    for host in ["127.0.0.1", "localhost"] {
        let url = format!(
            "postgres://kiln:{PASSWORD}@{host}:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let mut store = open_url(&url).unwrap_or_else(|e| panic!("{host}: {e}"));
        commit_one(&mut store, vec![Write::InsertNode(node(&format!("tls-{host}")).into())]).unwrap();
    }
    // A CA that did not sign the server's certificate: refused, and said so.
    let other = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=another CA"])
        .arg("-keyout")
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
    let url = format!(
        "postgres://kiln:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        other.display()
    );
    let err = open_url(&url).map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Connect(_)), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    // require still encrypts without checking.
    let url = format!("postgres://kiln:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=require");
    open_url(&url).unwrap();
}

/// Runs `sql` (several statements) on the place's database, as the tests'
/// superuser.
fn execute(place: &Place, sql: &str) {
    place.sql(sql);
}

/// An event whose body names it; the serial a shared store is given is
/// not the one it keeps.
fn event(body: &str) -> Write {
    Write::AppendEvent(EventRecord { serial: 1, body: body.as_bytes().to_vec() })
}

fn bodies(store: &mut dyn Backend, after: u64) -> Vec<(u64, String)> {
    let events = store.load_events(after, 1000).unwrap();
    events.into_iter().map(|e| (e.serial, String::from_utf8(e.body).unwrap())).collect()
}

#[test]
fn every_member_s_events_share_one_serial_space_in_commit_order() {
    let place = Place::new(Kind::Postgres);
    let mut a = place.open_as("a");
    let mut b = place.open_as("b");
    assert!(a.assigns_event_serials());
    commit_one(&mut *a, vec![event("a1"), event("a2")]).unwrap();
    commit_one(&mut *b, vec![event("b1")]).unwrap();
    // Two events in one group of several batches keep their order.
    let results = a.commit(&[vec![event("a3")], vec![event("a4")]]).unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let want: Vec<(u64, String)> =
        ["a1", "a2", "b1", "a3", "a4"].iter().enumerate().map(|(i, s)| (i as u64 + 1, s.to_string())).collect();
    assert_eq!(bodies(&mut *a, 0), want);
    assert_eq!(bodies(&mut *b, 0), want, "every member reads the one stream");
    assert_eq!(bodies(&mut *b, 3), want[3..]);
    assert_eq!(b.event_span().unwrap(), (5, 5));
    // Forgetting is site-wide too.
    commit_one(&mut *b, vec![Write::ForgetEventsThrough(2)]).unwrap();
    assert_eq!(bodies(&mut *a, 0), want[2..]);
    assert_eq!(a.event_span().unwrap(), (5, 3));
    // The writer is still named.
    execute(
        &place,
        "DO $$ BEGIN IF (SELECT source FROM events WHERE serial = 3) <> 'b' THEN RAISE 'source'; END IF; END $$",
    );
}

#[test]
fn members_committing_events_at_once_get_serials_in_commit_order_without_a_hole() {
    let place = Place::new(Kind::Postgres);
    const COMMITS: usize = 40;
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let mut store = place.open_as(name);
            std::thread::spawn(move || {
                for i in 0..COMMITS {
                    // Each commit's events, and each member's commits, in order.
                    let batch = (0..3).map(|j| event(&format!("{name} {i:03} {j}"))).collect();
                    commit_one(&mut *store, batch).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut reader = place.open_as("reader");
    let all = bodies(&mut *reader, 0);
    let serials: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(serials, (1..=(3 * 3 * COMMITS) as u64).collect::<Vec<_>>(), "one serial each, no hole");
    for name in ["a", "b", "c"] {
        let mine: Vec<&str> = all.iter().filter(|e| e.1.starts_with(name)).map(|e| e.1.as_str()).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "{name}'s events in the order it committed them");
    }
    // A commit's events are consecutive: the lock is held to the commit.
    for chunk in all.chunks(3) {
        let commit = |e: &(u64, String)| e.1[..e.1.len() - 2].to_string();
        assert!(chunk.iter().all(|e| commit(e) == commit(&chunk[0])), "{chunk:?}");
    }
}

#[test]
fn the_upgrade_to_one_stream_renumbers_each_member_s_events_in_order_and_never_lower() {
    let place = Place::new(Kind::Postgres);
    drop(place.open());
    // Back to version 9: one stream per member.
    execute(
        &place,
        "DROP TRIGGER nodes_directory_added_or_gone ON nodes;
         DROP TRIGGER nodes_directory_renamed ON nodes;
         DROP FUNCTION kiln_directory_notify;
         DROP FUNCTION kiln_append_event;
         DROP FUNCTION kiln_append_events;
         ALTER TABLE events DROP CONSTRAINT events_pkey;
         ALTER TABLE events ADD PRIMARY KEY (source, serial);
         INSERT INTO events (serial, body, source) VALUES
             (1, 'a1', 'a'), (2, 'a2', 'a'), (3, 'a3', 'a'), (1, 'b1', 'b'), (2, 'b2', 'b');
         UPDATE kiln_schema SET version = 9;",
    );
    let mut store = place.open();
    let want = [(1, "a1"), (2, "b1"), (3, "a2"), (4, "b2"), (5, "a3")];
    assert_eq!(bodies(&mut *store, 0), want.map(|(s, b)| (s, b.to_string())));
    commit_one(&mut *store, vec![event("next")]).unwrap();
    assert_eq!(bodies(&mut *store, 5), [(6, "next".to_string())]);
}

#[test]
fn a_group_of_transitions_goes_as_runs_and_a_fenced_one_fails_alone() {
    let place = Place::new(Kind::Postgres);
    let mut old = place.open_as("old");
    // Another member, which inserts (and so owns) r5.
    let mut new = place.open_as("new");
    let nodes: Vec<NodeRecord> = (0..6).map(|i| node(&format!("r{i}"))).collect();
    let inserts: Vec<Batch> = nodes[..5].iter().map(|n| vec![Write::InsertNode(n.clone().into())]).collect();
    assert!(old.commit(&inserts).unwrap().iter().all(Result::is_ok));
    commit_one(&mut *new, vec![Write::InsertNode(nodes[5].clone().into())]).unwrap();
    drop(new);

    let step = |n: &NodeRecord, state: ProvisionState| {
        let mut next = n.clone();
        next.provision_state = state;
        vec![Write::UpdateNode(next.into()), Write::AppendHistory(history(n.uuid))]
    };
    let group = vec![
        step(&nodes[0], ProvisionState::Verifying),
        step(&nodes[1], ProvisionState::Verifying),
        // Another write in the middle ends a run.
        vec![Write::SetMeta { key: "k".into(), value: "v".into() }],
        step(&nodes[5], ProvisionState::Verifying),
        step(&nodes[0], ProvisionState::Manageable),
        step(&nodes[2], ProvisionState::Verifying),
    ];
    let results = old.commit(&group).unwrap();
    assert!(matches!(&results[3], Err(StoreError::Fenced(m)) if m.contains(&nodes[5].uuid.to_string())), "{results:?}");
    for (i, r) in results.iter().enumerate() {
        assert!(i == 3 || r.is_ok(), "batch {i}: {r:?}");
    }
    let state = |b: &mut dyn Backend, n: &NodeRecord| b.load_node(n.uuid).unwrap().unwrap().provision_state;
    assert_eq!(state(&mut *old, &nodes[0]), ProvisionState::Manageable);
    assert_eq!(state(&mut *old, &nodes[1]), ProvisionState::Verifying);
    assert_eq!(state(&mut *old, &nodes[2]), ProvisionState::Verifying);
    assert_eq!(state(&mut *old, &nodes[5]), ProvisionState::Enroll);
    assert_eq!(old.load_history(nodes[0].uuid, 10).unwrap().len(), 2);
    assert_eq!(old.load_history(nodes[5].uuid, 10).unwrap().len(), 0);
    assert_eq!(old.load_meta("k").unwrap().as_deref(), Some("v"));

    // Without a fenced batch, the whole group is one pipeline of runs.
    let group: Vec<Batch> = nodes[..5].iter().map(|n| step(n, ProvisionState::Available)).collect();
    assert!(old.commit(&group).unwrap().iter().all(Result::is_ok));
    for n in &nodes[..5] {
        assert_eq!(state(&mut *old, n), ProvisionState::Available);
    }
    assert_eq!(old.load_history(nodes[0].uuid, 10).unwrap().len(), 3);
}

#[test]
fn node_requests_are_written_answered_and_collected_in_batches() {
    let place = Place::new(Kind::Postgres);
    let mut owner = place.open_as("owner");
    let mut caller = place.open_as("caller");
    let nodes: Vec<NodeRecord> = (0..3).map(|i| node(&format!("q{i}"))).collect();
    let inserts: Vec<Batch> = nodes.iter().map(|n| vec![Write::InsertNode(n.clone().into())]).collect();
    assert!(owner.commit(&inserts).unwrap().iter().all(Result::is_ok));
    let missing = NodeId::new();
    let mut asked: Vec<(NodeId, String)> = nodes.iter().map(|n| (n.uuid, format!("do {}", n.name))).collect();
    asked.insert(1, (missing, "nothing".into()));
    let written = caller.shared().unwrap().submit_node_requests(&asked).unwrap();
    let want: Vec<NodeId> = nodes.iter().map(|n| n.uuid).collect();
    assert_eq!(written.iter().map(|(n, _)| *n).collect::<Vec<_>>(), want, "in the order asked, none for {missing}");

    let taken = owner.shared().unwrap().take_node_requests(256).unwrap();
    assert_eq!(taken.len(), 3);
    let answers: Vec<(i64, String)> = taken.iter().take(2).map(|r| (r.id, format!("done: {}", r.body))).collect();
    owner.shared().unwrap().answer_node_requests(&answers).unwrap();

    let ids: Vec<i64> = written.iter().map(|(_, id)| *id).collect();
    let mut got = caller.shared().unwrap().collect_node_answers(&ids).unwrap();
    got.sort();
    let mut expected = answers.clone();
    expected.sort();
    assert_eq!(got, expected);
    // Collected rows are gone; the unanswered one is still there.
    assert!(caller.shared().unwrap().collect_node_answers(&ids).unwrap().is_empty());
    owner.shared().unwrap().answer_node_requests(&[(taken[2].id, "late".into())]).unwrap();
    assert_eq!(caller.shared().unwrap().collect_node_answers(&ids).unwrap(), vec![(taken[2].id, "late".into())]);
}
