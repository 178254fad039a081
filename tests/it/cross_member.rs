//! Work that spans members of one PostgreSQL site: `kiln exec` on one
//! member reaches nodes another member runs at their stored address, and a
//! job on one member waits for a job another member runs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Daemon, poll};
use crate::members::{member_with, submit};
use crate::metrics::{at, get, metrics_addr, parse};
use crate::peers;
use crate::postgres::database;

/// A member that none of these tests expects to die: a member timeout of
/// 10 s, so a loaded machine that delays a heartbeat by a few seconds does
/// not fence it (the tests of takeover use 3 s).
fn steady(url: &str, name: &str, more: &[&str]) -> Daemon {
    let mut args = vec!["--set", "member_timeout=10s"];
    args.extend(more);
    member_with(0, url, name, &args)
}

/// Waits (at most 30 s) until two members are alive and each runs the
/// nodes the ring over them places on it (a fake node's ring key is its
/// uuid); returns each node's name with the name of the member running it.
fn settled(d: &Daemon) -> Vec<(String, String)> {
    let nodes: Vec<(String, String)> = d
        .json(&["node", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().into(), n["uuid"].as_str().unwrap().into()))
        .collect();
    let started = Instant::now();
    loop {
        let list = d.json(&["member", "list"]);
        let alive: Vec<&Value> = list.as_array().unwrap().iter().filter(|m| m["state"] == "alive").collect();
        let ids = alive.iter().map(|m| m["id"].as_str().unwrap().to_string());
        let ring = kiln_store::ring::Ring::new(ids, kiln_store::ring::POINTS_PER_MEMBER);
        let placed = |id: &str| nodes.iter().filter(|(_, u)| ring.owner(u) == Some(id)).count() as u64;
        if alive.len() == 2 && alive.iter().all(|m| m["nodes"].as_u64() == Some(placed(m["id"].as_str().unwrap()))) {
            let name_of =
                |id: &str| alive.iter().find(|m| m["id"] == id).map(|m| m["name"].as_str().unwrap().to_string());
            return nodes.iter().map(|(n, u)| (n.clone(), ring.owner(u).and_then(name_of).unwrap())).collect();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never settled: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`settled`], once the ring places at least one node on `member` (more
/// nodes are created on `d` until it does: each has even odds).
fn settled_with_one_on(d: &Daemon, member: &str) -> Vec<(String, String)> {
    let mut placed = settled(d);
    for i in 0..20 {
        if placed.iter().any(|(_, m)| m == member) {
            break;
        }
        d.json(&["node", "create", &format!("more{i}"), "--driver", "fake"]);
        placed = settled(d);
    }
    placed
}

#[test]
fn exec_on_any_member_reaches_every_node_at_its_stored_address() {
    let sshd = peers::sshd();
    let url = database();
    let a = steady(&url, "a", &[]);
    let addresses = [("s1", "127.0.0.2"), ("s2", "127.0.0.3"), ("s3", "127.0.0.4"), ("s4", "127.0.0.5")];
    for (name, addr) in addresses {
        a.json(&["node", "create", name, "--driver", "fake", "--property", &format!("address={addr}")]);
    }
    let b = steady(&url, "b", &[]);
    // Each node is run by one member and stays there, so between the two
    // runs below every node is reached once from the member that does not
    // run it.
    assert_eq!(settled(&a).len(), 4);
    let opts = sshd.ssh_options();
    for d in [&a, &b] {
        let out = d.cli(&["--json", "exec", "-w", "s[1-4]", "-o", &opts, "--", "echo $SSH_CONNECTION | cut -d' ' -f3"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {out:?}"));
        assert!(out.status.success(), "{v}");
        for (name, addr) in addresses {
            let row = v.as_array().unwrap().iter().find(|r| r["node"] == name).unwrap_or_else(|| panic!("{v}"));
            assert_eq!(row["stdout"], format!("{addr}\n"), "{name} from {}: {v}", d.dir.path().display());
        }
    }
}

/// `kiln job show` on `d` until `done` holds of the job (at most 30 s).
fn job_until(d: &Daemon, id: u64, done: impl Fn(&Value) -> bool) -> Value {
    poll(&format!("job {id}"), Duration::from_secs(30), Duration::from_millis(50), || {
        let job = d.json(&["job", "show", &id.to_string()]);
        if done(&job) { Ok(job) } else { Err(job) }
    })
}

#[test]
fn a_job_waits_for_a_job_another_member_runs() {
    let url = database();
    let a = steady(&url, "a", &[]);
    let b = steady(&url, "b", &[]);
    // A job on a that runs until the test lets it end (bounded: 30 s).
    let gate = a.dir.path().join("gate");
    let blocked = submit(
        &a,
        &format!(
            "ops: [{{op: exec, nodes: h1, worker: exec, command: 'for i in $(seq 600); do [ -f {} ] && exit 0; sleep 0.05; done; exit 1'}}]",
            gate.display()
        ),
    );
    job_until(&a, blocked, |j| j["status"] == "running");
    // On b, one job waits for its success and one for its failure.
    let after_success =
        submit(&b, &format!("depends: [{{job: {blocked}, statuses: [success]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    let after_error =
        submit(&b, &format!("depends: [{{job: {blocked}, statuses: [error]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    for id in [after_success, after_error] {
        assert_eq!(b.json(&["job", "show", &id.to_string()])["status"], "waiting");
    }
    std::fs::write(&gate, "").unwrap();
    let ended = job_until(&a, blocked, |j| j["status"] == "success");
    let ok = job_until(&b, after_success, |j| j["status"] == "success");
    assert!(
        ok["started_at"].as_str() >= ended["ended_at"].as_str(),
        "started before its dependency ended: {ok} {ended}"
    );
    let failed = job_until(&b, after_error, |j| j["status"] == "error");
    assert!(failed.to_string().contains("cannot be met"), "{failed}");
    // A dependency on a job no member has is still refused.
    let path = b.dir.path().join("nosuch.yaml");
    std::fs::write(&path, "depends: [{job: 999999999}]\nops: [{op: sleep, seconds: 0}]").unwrap();
    let refused = b.json_code(&["job", "submit", path.to_str().unwrap()], 2);
    assert!(refused.to_string().contains("no such job"), "{refused}");
}

/// Polls `kiln node show NAME` on `d` (at most 10 s) until it exits `code`.
fn show_until(d: &Daemon, name: &str, code: i32) -> Value {
    poll(&format!("node show {name} exiting {code}"), Duration::from_secs(10), Duration::from_millis(20), || {
        let out = d.cli(&["--json", "node", "show", name]);
        if out.status.code() == Some(code) {
            Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
        } else {
            Err(out)
        }
    })
}

#[test]
fn every_member_follows_the_nodes_created_renamed_and_deleted_on_another() {
    let url = database();
    let a = steady(&url, "a", &[]);
    let mut b = steady(&url, "b", &["--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&mut b);
    let metric = |name: &str| at(&parse(&get(&metrics, "/metrics").2), name);
    let lookups = |from: &str| metric(&format!("kiln_directory_lookups_total{{from=\"{from}\"}}"));
    // Created on a: b finds it by name and by uuid.
    let created = a.json(&["node", "create", "fresh1", "--driver", "fake"]);
    let uuid = created[0]["uuid"].as_str().unwrap().to_string();
    assert_eq!(show_until(&b, "fresh1", 0)["uuid"], uuid.as_str());
    assert_eq!(show_until(&b, &uuid, 0)["name"], "fresh1");
    // Renamed through b: both members find the new name, neither the old.
    b.json(&["node", "set", "fresh1", "--name", "renamed1"]);
    for d in [&a, &b] {
        assert_eq!(show_until(d, "renamed1", 0)["uuid"], uuid.as_str());
        show_until(d, "fresh1", 2);
    }
    // The old name is free again, for another node.
    let other = a.json(&["node", "create", "fresh1", "--driver", "fake"]);
    assert_ne!(other[0]["uuid"], uuid.as_str());
    assert_eq!(show_until(&b, "fresh1", 0)["uuid"], other[0]["uuid"]);
    // Once the nodes are shared out, b resolves the names of a's nodes
    // from its directory, without asking the store.
    let placed = settled_with_one_on(&a, "a");
    let on_a: Vec<&str> = placed.iter().filter(|(_, m)| m == "a").map(|(n, _)| n.as_str()).collect();
    assert!(!on_a.is_empty(), "{placed:?}");
    // (Once b has heard of every node: the announcement of the last one
    // created may still be on its way.)
    let started = Instant::now();
    while metric("kiln_directory_nodes") != placed.len() as f64 {
        assert!(started.elapsed() < Duration::from_secs(10), "b's directory never held all {} nodes", placed.len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = (lookups("directory"), lookups("store"));
    for name in &on_a {
        assert_eq!(b.json(&["node", "show", name])["name"], *name);
    }
    assert_eq!(lookups("directory"), before.0 + on_a.len() as f64, "{placed:?}");
    assert_eq!(lookups("store"), before.1, "{placed:?}");
    // Ports of a node a runs are created and listed through b, with its name.
    let name = on_a[0];
    let port = b.json(&["port", "create", "52:54:00:aa:00:01", "--node", name]);
    assert_eq!(port["node"], name, "{port}");
    let listed = b.json(&["port", "list", "--node", name]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let all = b.json(&["port", "list"]);
    assert_eq!(all[0]["node"], name, "{all}");
    // And b validates it from its stored record: with a port, network boot
    // can work.
    let checked = b.json(&["node", "validate", name]);
    assert_eq!(checked[0]["node"], name, "{checked}");
    assert_eq!(checked[0]["interfaces"]["boot"]["result"], true, "{checked}");
    assert_eq!(checked[0]["interfaces"]["power"]["result"], true, "{checked}");
    // Deleted on a: gone on b.
    a.json(&["node", "delete", "renamed1"]);
    show_until(&b, "renamed1", 2);
    show_until(&b, &uuid, 2);
}

#[test]
fn a_node_created_on_one_member_goes_to_the_member_the_ring_places_it_on() {
    let url = database();
    let a = steady(&url, "a", &[]);
    let b = steady(&url, "b", &[]);
    settled(&a);
    let members = a.json(&["member", "list"]);
    let id_of = |name: &str| {
        members.as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["id"].as_str().unwrap().to_string()
    };
    let ring = kiln_store::ring::Ring::new([id_of("a"), id_of("b")], kiln_store::ring::POINTS_PER_MEMBER);
    // Created on a, one at a time, each settled before the next, until the
    // ring has placed two on b (even odds each). Once the first is on b, a
    // has handed nodes over with both members alive; the second is then
    // created when nobody joins or leaves any more, and must go over too.
    let b_id = id_of("b");
    let mut on_b = Vec::new();
    for i in 0..40 {
        let created = a.json(&["node", "create", &format!("c{i}"), "--driver", "fake"]);
        if ring.owner(created[0]["uuid"].as_str().unwrap()) == Some(b_id.as_str()) {
            on_b.push(created[0]["name"].as_str().unwrap().to_string());
        }
        let placed = settled(&a);
        for name in &on_b {
            assert!(placed.contains(&(name.clone(), "b".to_string())), "{name} not on b: {placed:?}");
        }
        if on_b.len() == 2 {
            break;
        }
    }
    assert_eq!(on_b.len(), 2, "40 nodes and not two of them placed on b");
    assert_eq!(b.json(&["node", "show", &on_b[1]])["name"], on_b[1].as_str());
}

#[test]
fn a_job_holds_a_node_another_member_runs_and_power_status_reads_it_there() {
    let url = database();
    let a = steady(&url, "a", &[]);
    for i in 1..=4 {
        a.json(&["node", "create", &format!("h{i}"), "--driver", "fake"]);
    }
    let b = steady(&url, "b", &[]);
    let placed = settled_with_one_on(&a, "a");
    let name = placed.iter().find(|(_, m)| m == "a").map(|(n, _)| n.clone()).expect("a node on a");
    // b reads the power state live through a.
    a.json(&["node", "power", "on", &name, "--wait"]);
    let power = b.json(&["node", "power", "status", &name]);
    assert_eq!(power[0]["ok"], true, "{power}");
    assert_eq!(power[0]["power_state"], "power on", "{power}");
    // A job on b holds a's node between its opcodes.
    let id = submit(
        &b,
        &format!(
            "ops:\n  - {{op: hold, nodes: {name}}}\n  - {{op: manage, nodes: {name}}}\n  - {{op: sleep, seconds: 600}}\n"
        ),
    );
    let held = format!("held by job {id}");
    let started = Instant::now();
    loop {
        let n = a.json(&["node", "show", &name]);
        if n["provision_state"] == "manageable" && n["reservation"]["purpose"] == held.as_str() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{name} never managed and held: {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The owner refuses others meanwhile.
    let refused = a.json_code(&["node", "power", "on", &name, "--wait"], 1);
    assert_eq!(refused[0]["error"]["kind"], "node_locked", "{refused}");
    // The job's end lets it go, on the member that runs it.
    b.json(&["job", "cancel", &id.to_string()]);
    let started = Instant::now();
    while !a.json(&["node", "show", &name])["reservation"].is_null() {
        assert!(started.elapsed() < Duration::from_secs(30), "{name} was never released");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.json(&["node", "power", "off", &name, "--wait"]);
}
