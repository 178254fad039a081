//! Membership on a real PostgreSQL: members join and heartbeat, the
//! janitor declares a silent one dead, its nodes are claimed by the ring's
//! choice among the living, its writes are fenced, and a member that
//! stops renewing fences itself first.

use std::time::Duration;

use chrono::Utc;
use kiln_store::postgres::PgBackend;
use kiln_store::postgres::members::{Identity, MemberSettings, MemberState, Membership};
use kiln_store::*;

mod support;
use support::members::{FAST, commit_one, join, open, options, until};
use support::{Kind, Place};

fn seed(place: &Place, n: usize) -> Vec<NodeRecord> {
    let mut seeder = open(place, "seeder");
    let nodes: Vec<NodeRecord> =
        (0..n).map(|i| NodeRecord::enroll(format!("n{i:03}"), DriverKind::Fake, Utc::now())).collect();
    commit_one(&mut seeder, nodes.iter().cloned().map(|n| Write::InsertNode(n.into())).collect()).unwrap();
    nodes
}

#[test]
fn a_silent_member_is_declared_dead_and_its_nodes_go_to_the_living_by_the_ring() {
    let place = Place::new(Kind::Postgres);
    let nodes = seed(&place, 60);

    let mut a = join(&place, "member-a", "a");
    let mut store_a = open(&place, "member-a");
    assert_eq!(store_a.load_owned_nodes().unwrap().len(), 60, "the only live member takes every orphan");
    let _b = join(&place, "member-b", "b");
    let mut store_b = open(&place, "member-b");
    assert!(store_b.load_owned_nodes().unwrap().is_empty(), "nothing is taken from a live member");
    assert!(store_b.claim_orphans().unwrap().is_empty());

    let members = store_b.members().unwrap();
    let names: Vec<(&str, MemberState, u64)> = members.iter().map(|m| (m.id.as_str(), m.state, m.nodes)).collect();
    assert!(names.contains(&("member-a", MemberState::Alive, 60)), "{names:?}");
    assert!(names.contains(&("member-b", MemberState::Alive, 0)), "{names:?}");

    // a stops renewing, as a killed process would: it fences itself first,
    // then the site declares it dead.
    a.halt();
    assert!(until(Duration::from_secs(5), || a.fenced().is_some()), "a did not fence itself");
    let dead = until(Duration::from_secs(15), || {
        store_b.members().unwrap().iter().any(|m| m.id == "member-a" && m.state == MemberState::Dead)
    });
    assert!(dead, "the janitor did not declare a dead: {:?}", store_b.members().unwrap());

    // b, the only live member, claims all of them; a's writes are refused.
    let taken = store_b.claim_orphans().unwrap();
    assert_eq!(taken.len(), 60);
    let mut stale = nodes[0].clone();
    stale.provision_state = ProvisionState::Active;
    // Its session was ended by the janitor: the first try finds it gone
    // (nothing written), the next reconnects and is fenced by the rows.
    // Whether the client reads the server's notice ("terminating
    // connection") before the socket's end is a race, so either wording is
    // a lost session.
    let err = commit_one(&mut store_a, vec![Write::UpdateNode(stale.clone().into())]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Connect(m) if m.contains("ended the session") || m.contains("connection closed")),
        "{err:?}"
    );
    let err = commit_one(&mut store_a, vec![Write::UpdateNode(stale.into())]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    let mut moved = nodes[0].clone();
    moved.provision_state = ProvisionState::Manageable;
    commit_one(&mut store_b, vec![Write::UpdateNode(moved.clone().into())]).unwrap();
    assert_eq!(store_b.load_node(moved.uuid).unwrap(), Some(moved));
}

#[test]
fn orphans_are_shared_among_the_living_members_by_the_ring() {
    let place = Place::new(Kind::Postgres);
    seed(&place, 300);
    let _a = join(&place, "ring-a", "a");
    let _b = join(&place, "ring-b", "b");
    let _c = join(&place, "ring-c", "c");
    let mut stores: Vec<PgBackend> = ["ring-a", "ring-b", "ring-c"].iter().map(|id| open(&place, id)).collect();
    let owned: Vec<usize> = stores.iter_mut().map(|s| s.load_owned_nodes().unwrap().len()).collect();
    assert_eq!(owned.iter().sum::<usize>(), 300, "{owned:?}");
    for n in &owned {
        assert!((50..=160).contains(n), "an uneven share: {owned:?}");
    }
}

#[test]
fn a_restarted_member_replaces_its_earlier_incarnation_at_once() {
    let place = Place::new(Kind::Postgres);
    seed(&place, 10);
    let mut first = join(&place, "first-run", "site-host:/var/lib/kiln");
    assert_eq!(open(&place, "first-run").load_owned_nodes().unwrap().len(), 10);
    first.halt();
    // The same name and host joins again: no waiting out the timeout.
    let _second = join(&place, "second-run", "site-host:/var/lib/kiln");
    let mut store = open(&place, "second-run");
    assert_eq!(store.load_owned_nodes().unwrap().len(), 10);
    let rows = store.members().unwrap();
    let first_row = rows.iter().find(|m| m.id == "first-run").unwrap();
    assert_eq!(first_row.state, MemberState::Dead);
    assert_eq!(first_row.nodes, 0);
}

#[test]
fn a_member_that_leaves_is_marked_left_and_its_nodes_are_orphans() {
    let place = Place::new(Kind::Postgres);
    seed(&place, 5);
    let a = join(&place, "leaver", "a");
    open(&place, "leaver");
    let _b = join(&place, "stayer", "b");
    a.leave();
    let mut store = open(&place, "stayer");
    assert_eq!(store.load_owned_nodes().unwrap().len(), 5);
    let rows = store.members().unwrap();
    assert_eq!(rows.iter().find(|m| m.id == "leaver").map(|m| m.state), Some(MemberState::Left));
}

#[test]
fn answers_whose_caller_is_gone_are_removed_and_a_live_caller_s_are_kept() {
    let place = Place::new(Kind::Postgres);
    let nodes = seed(&place, 1);
    let _a = join(&place, "alive-caller", "a");
    let node = nodes[0].uuid;
    place.sql(&format!(
        "INSERT INTO node_requests (node, caller, body, state, answer) VALUES \
           ('{node}', 'gone-caller', '{{}}', 'answered', 'x'), \
           ('{node}', 'alive-caller', '{{}}', 'answered', 'y'), \
           ('{node}', 'gone-caller', '{{}}', 'queued', NULL)"
    ));
    // The janitor runs with every heartbeat of the one member.
    let cleaned = until(Duration::from_secs(10), || {
        place.sql("SELECT count(*) FROM node_requests WHERE caller = 'gone-caller' AND state = 'answered'") == ["0"]
    });
    assert!(cleaned, "{:?}", place.sql("SELECT caller || ' ' || state FROM node_requests"));
    let left = place.sql("SELECT caller || ' ' || state FROM node_requests ORDER BY id");
    assert_eq!(
        left,
        ["alive-caller answered", "gone-caller queued"],
        "a live caller's answer and a queued request stay"
    );
}

#[test]
fn a_member_with_other_ring_settings_is_refused() {
    let place = Place::new(Kind::Postgres);
    let mut store = open(&place, "x");
    commit_one(&mut store, vec![Write::SetMeta { key: "ring.points_per_member".into(), value: "7".into() }]).unwrap();
    let identity = Identity { name: "y".into(), host: "h".into(), pid: 1 };
    let err = Membership::join(options(&place, "y"), identity, FAST).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("ring points"), "{err}");
    assert!(store.members().unwrap().is_empty(), "a refused member leaves no row");
}

#[test]
fn a_timeout_too_short_for_three_heartbeats_is_refused() {
    let place = Place::new(Kind::Postgres);
    let identity = Identity { name: "y".into(), host: "h".into(), pid: 1 };
    let settings = MemberSettings { heartbeat: Duration::from_secs(2), timeout: Duration::from_secs(5) };
    let err = Membership::join(options(&place, "y"), identity, settings).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("member_timeout"), "{err}");
}

#[test]
fn a_name_a_live_member_on_another_host_has_is_refused() {
    let place = Place::new(Kind::Postgres);
    let _first = join(&place, "first", "kiln-a");
    let identity = Identity { name: "kiln-a".into(), host: "other-host".into(), pid: 1 };
    let err = Membership::join(options(&place, "second"), identity, FAST).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("already has the name 'kiln-a'"), "{err}");
}

#[test]
fn a_member_told_that_a_commit_was_lost_fences_itself_saying_why() {
    let place = Place::new(Kind::Postgres);
    let m = join(&place, "lost-commit", "a");
    assert_eq!(m.fenced(), None);
    let expel = m.expeller();
    expel("the outcome of a commit is unknown");
    assert_eq!(m.fenced().as_deref(), Some("the outcome of a commit is unknown"));
    assert_eq!((m.fence())().as_deref(), Some("the outcome of a commit is unknown"), "the BMC-call check agrees");
}

#[test]
fn every_live_member_of_a_site_uses_one_member_timeout() {
    let place = Place::new(Kind::Postgres);
    let first = join(&place, "t1", "a");
    let slower = MemberSettings { heartbeat: Duration::from_millis(500), timeout: Duration::from_secs(8) };
    let identity = Identity { name: "b".into(), host: "h".into(), pid: 1 };
    let err = Membership::join(options(&place, "t2"), identity.clone(), slower).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("member_timeout = 4 s and this one 8 s"), "{err}");
    // Once every member has stopped, a new value may be set.
    first.leave();
    Membership::join(options(&place, "t3"), identity, slower).unwrap().leave();
}
