//! Several `kiln serve` on one PostgreSQL: members join and list each
//! other, a joining member is handed its share, any member answers for
//! any node, a member killed outright has its nodes taken over by the living
//! (and their work kept), a member paused past its timeout fences
//! itself when it wakes, writing nothing, and every member shows every
//! member's events, in one order with one serial space.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Daemon, Events};
use crate::postgres::database;
use crate::relay::Relay;

/// Fast membership for tests: dead after 3 s of silence.
const FAST: [&str; 4] = ["--set", "member_heartbeat=500ms", "--set", "member_timeout=3s"];

pub(crate) fn member(demo: usize, url: &str, name: &str) -> Daemon {
    member_with(demo, url, name, &[])
}

/// [`member`] with more arguments for `kiln serve`.
pub(crate) fn member_with(demo: usize, url: &str, name: &str, more: &[&str]) -> Daemon {
    let name = format!("member_name={name}");
    let mut args = vec!["--store", url, "--set", &name];
    args.extend(FAST);
    args.extend(more);
    Daemon::start(demo, &args)
}

/// `kiln member list` as (name, state, nodes), by name.
fn members(d: &Daemon) -> Vec<(String, String, u64)> {
    let list = d.json(&["member", "list"]);
    let mut rows: Vec<(String, String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["name"].as_str().unwrap().into(), m["state"].as_str().unwrap().into(), m["nodes"].as_u64().unwrap())
        })
        .collect();
    rows.sort();
    rows
}

/// Waits (at most `limit`) until `kiln member list` on `d` satisfies `done`.
fn wait_members(d: &Daemon, limit: Duration, done: impl Fn(&[(String, String, u64)]) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let rows = members(d);
        if done(&rows) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "members never got there within {limit:?}: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn row(name: &str, state: &str, nodes: u64) -> (String, String, u64) {
    (name.into(), state.into(), nodes)
}

#[test]
fn a_killed_member_s_nodes_are_taken_over_with_their_work_kept() {
    let url = database();
    let mut a = member(20, &url, "a");
    let b = member(0, &url, "b");
    // a gives b its share as the ring places it, node by node.
    let spread = wait_members(&b, Duration::from_secs(15), |rows| {
        rows.len() == 2 && rows.iter().all(|r| r.1 == "alive" && r.2 > 0) && rows.iter().map(|r| r.2).sum::<u64>() == 20
    });
    eprintln!("handover to a joining member: {:.1} s", spread.as_secs_f64());
    let status = b.json(&["status"]);
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status}");
    assert!(status["members"].as_array().unwrap().iter().any(|m| m["name"] == "b" && m["this"] == true));

    a.json(&["node", "manage", "demo[1-10]", "--wait"]);
    a.json(&["node", "provide", "demo[1-5]", "--wait"]);
    // A job running on a when it dies (its node's BMC is slow), and one
    // waiting for it to fail.
    a.json(&["node", "set", "demo2", "--driver-info", "latency_ms=60000"]);
    let running = submit(&a, "ops: [{op: deploy, nodes: demo2}]");
    let waiting =
        submit(&a, &format!("depends: [{{job: {running}, statuses: [error]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    // Stored as running (b reads it from the store) before a dies.
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.json(&["job", "show", &running.to_string()])["status"] != "running" {
        assert!(Instant::now() < deadline, "job {running} was never stored as running");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill9();

    let took = wait_members(&b, Duration::from_secs(15), |rows| rows == [row("a", "dead", 0), row("b", "alive", 20)]);
    eprintln!("takeover after SIGKILL: {:.1} s", took.as_secs_f64());
    // Every acknowledged transition is kept, and the nodes answer on b.
    let list = b.json(&["node", "list"]);
    let state = |name: &str| -> String {
        list.as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()["provision_state"].as_str().unwrap().into()
    };
    assert_eq!(list.as_array().unwrap().len(), 20);
    assert_eq!(state("demo1"), "available");
    assert_eq!(state("demo6"), "manageable");
    assert_eq!(state("demo11"), "enroll");
    b.json(&["node", "provide", "demo[6-10]", "--wait"]);
    b.json(&["node", "deploy", "demo1", "--wait"]);
    assert_eq!(b.state("demo1"), "active");
    let history = b.json(&["node", "history", "demo6"]);
    let events: Vec<&str> = history.as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "manage").count(), 1, "{events:?}");
    // a's jobs are b's now: the running one ended error, the waiting one ran.
    let ended = b.json(&["job", "show", &running.to_string()]);
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(ended.to_string().contains("died"), "{ended}");
    let out = b.cli(&["--json", "job", "watch", &waiting.to_string()]);
    let last = String::from_utf8_lossy(&out.stdout).lines().last().map(str::to_string).unwrap_or_default();
    assert!(last.contains("\"success\""), "{last}");
    // And ids go on without a clash on b.
    let next = submit(&b, "ops: [{op: sleep, seconds: 0}]");
    assert!(next != running && next != waiting);
}

/// Submits a job file; returns its id.
pub(crate) fn submit(d: &Daemon, yaml: &str) -> u64 {
    let path = d.dir.path().join(format!("job-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    d.json(&["job", "submit", path.to_str().unwrap()])["job"].as_u64().expect("a job id")
}

#[test]
fn a_paused_member_is_fenced_when_it_wakes_and_writes_nothing() {
    let url = database();
    let mut a = member(6, &url, "a");
    let b = member(0, &url, "b");
    a.json(&["node", "manage", "demo[1-6]", "--wait"]);
    let before: Value = b.json(&["member", "list"]);
    assert_eq!(before.as_array().unwrap().len(), 2);

    a.signal(libc::SIGSTOP);
    wait_members(&b, Duration::from_secs(15), |rows| rows == [row("a", "dead", 0), row("b", "alive", 6)]);
    b.json(&["node", "provide", "demo1", "--wait"]);
    let history_before = b.json(&["node", "history", "demo1"]);
    let nodes_before = b.json(&["node", "list"]);
    a.signal(libc::SIGCONT);
    let status = a.wait_for_exit(Duration::from_secs(10)).expect("a woke up and went on running");
    assert_eq!(status.code(), Some(75), "a fenced member exits 75");
    let said = a.log_lines().join("\n");
    assert!(said.contains("fenced"), "{said}");
    // b's view is what b wrote: a added nothing after it was taken over.
    assert_eq!(b.json(&["node", "history", "demo1"]), history_before);
    assert_eq!(b.json(&["node", "list"]), nodes_before);
    assert_eq!(b.state("demo1"), "available");
}

#[test]
fn a_restarted_member_takes_its_nodes_back_at_once_and_member_list_says_so() {
    let url = database();
    let mut a = member(5, &url, "a");
    a.restart();
    let rows = members(&a);
    assert_eq!(rows.iter().filter(|r| r.1 == "alive").collect::<Vec<_>>(), vec![&row("a", "alive", 5)], "{rows:?}");
    assert!(rows.contains(&row("a", "dead", 0)), "the earlier incarnation is dead: {rows:?}");
    a.json(&["node", "manage", "demo1", "--wait"]);
}

#[test]
fn demo_nodes_are_for_an_empty_site_not_an_empty_member() {
    let url = database();
    let _a = member(4, &url, "a");
    let b = member(4, &url, "b");
    wait_members(&b, Duration::from_secs(15), |rows| rows.iter().map(|r| r.2).sum::<u64>() == 4 && rows.len() == 2);
    assert_eq!(b.json(&["node", "list"]).as_array().unwrap().len(), 4);
}

#[test]
fn member_settings_that_cannot_work_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--set", "member_heartbeat=2s", "--set", "member_timeout=5s", "--check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("member_timeout"), "{stderr}");
}

#[test]
fn any_member_answers_for_any_node_and_its_owner_acts() {
    let url = database();
    let a = member(8, &url, "a");
    let b = member(0, &url, "b");
    // b runs none of them, and sees and drives all of them.
    assert_eq!(b.json(&["node", "list"]).as_array().unwrap().len(), 8);
    assert_eq!(b.state("demo3"), "enroll");
    b.json(&["node", "manage", "demo[1-4]", "--wait"]);
    assert_eq!(a.state("demo1"), "manageable", "the owner's own actor did it");
    assert_eq!(b.state("demo4"), "manageable");
    let history = b.json(&["node", "history", "demo2"]);
    assert!(history.as_array().unwrap().iter().any(|h| h["event"] == "manage"), "{history}");
    // Refusals come back as the owner gave them.
    let refused = b.json_code(&["node", "deploy", "demo5", "--wait"], 1);
    assert!(refused.to_string().contains("cannot deploy"), "{refused}");
    let missing = b.json_code(&["node", "show", "nosuch"], 2);
    assert!(missing.to_string().contains("no such node"), "{missing}");
    // The members' events share one stream: no commit of one is refused
    // for a serial the other took.
    for d in [&a, &b] {
        let lines = d.log_lines();
        assert!(!lines.iter().any(|l| l.contains("could not be stored")), "{}", lines.join("\n"));
    }
}

/// The nodes a member runs, as one folded node set.
fn local(d: &Daemon) -> Vec<String> {
    let list = d.json(&["node", "list", "@local"]);
    list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_member_cut_off_from_postgres_stops_itself_and_its_nodes_go_on_elsewhere() {
    let url = database();
    let port: u16 = url.split(':').nth(3).and_then(|p| p.split('/').next()).unwrap().parse().unwrap();
    let relay = Relay::start(([127, 0, 0, 1], port).into());
    let cut_url = url.replace(&format!(":{port}/"), &format!(":{}/", relay.addr.port()));
    // The ring places nodes by their random uuids, between members of
    // random ids: with 24 nodes one member gets none about once in a
    // million runs (with 10, about once in 370 did).
    let a = member(24, &url, "a");
    let mut b = member(0, &cut_url, "b");
    wait_members(&a, Duration::from_secs(15), |rows| rows.iter().all(|r| r.1 == "alive" && r.2 > 0) && rows.len() == 2);
    a.json(&["node", "manage", "demo[1-24]", "--wait"]);
    let theirs = local(&b);
    assert!(!theirs.is_empty());

    relay.cut(true);
    // b cannot renew its row: it stops itself, writing nothing more.
    let status = b.wait_for_exit(Duration::from_secs(20)).expect("b went on running while cut off");
    assert_eq!(status.code(), Some(75));
    wait_members(&a, Duration::from_secs(20), |rows| rows == [row("a", "alive", 24), row("b", "dead", 0)]);
    // Healed: whatever b left in the link arrives late, and changes nothing.
    relay.cut(false);
    a.json(&["node", "provide", "demo[1-24]", "--wait"]);
    for name in &theirs {
        let history = a.json(&["node", "history", name]);
        let events: Vec<&str> = history.as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["manage", "done", "provide", "done"], "{name}");
        assert_eq!(a.state(name), "available");
    }
}

#[test]
fn three_members_lose_nothing_when_one_is_killed_under_load() {
    let url = database();
    let a = member(1000, &url, "a");
    let b = member(0, &url, "b");
    let mut c = member(0, &url, "c");
    wait_members(&a, Duration::from_secs(30), |rows| {
        rows.len() == 3
            && rows.iter().all(|r| r.1 == "alive" && r.2 > 0)
            && rows.iter().map(|r| r.2).sum::<u64>() == 1000
    });
    a.json(&["node", "manage", "demo[1-1000]", "--wait"]);
    // Acknowledged work on c: a job running (its node's BMC is slow), and
    // one waiting for it to fail.
    c.json(&["node", "set", "demo1000", "--driver-info", "latency_ms=60000"]);
    let long = submit(&c, "ops: [{op: provide, nodes: demo1000}]");
    let queued =
        submit(&c, &format!("depends: [{{job: {long}, statuses: [error]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.json(&["job", "show", &long.to_string()])["status"] != "running" {
        assert!(Instant::now() < deadline, "job {long} was never stored as running");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A bulk verb through a, over every member's nodes, while c dies.
    let bulk = crate::harness::spawn_at(
        &a.socket,
        &["--json", "node", "provide", "demo[1-999]", "--wait"],
        std::process::Stdio::null(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.json(&["node", "list", "--state", "available"]).as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the bulk verb never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill9();
    let killed = Instant::now();
    wait_members(&a, Duration::from_secs(15), |rows| {
        rows.iter().any(|r| r.0 == "c" && r.1 == "dead")
            && rows.iter().filter(|r| r.1 == "alive").map(|r| r.2).sum::<u64>() == 1000
    });
    eprintln!(
        "3 members, 1000 nodes: c's nodes owned by the living {:.1} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    // The bulk verb ends, with a result for every node.
    let out = bulk.wait_with_output().unwrap();
    assert!(out.status.code().is_some(), "the bulk verb was killed");
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let results = results.as_array().or_else(|| results["results"].as_array()).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(results.len(), 999, "a result for every node");
    // Every node is in a state its history explains, and nothing is busy.
    let list = a.json(&["node", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1000);
    for n in list.as_array().unwrap() {
        let state = n["provision_state"].as_str().unwrap();
        assert!(["available", "manageable", "cleaning", "clean failed"].contains(&state), "{n}");
    }
    for name in ["demo1", "demo500", "demo1000"] {
        let history = a.json(&["node", "history", name]);
        let last = history.as_array().unwrap().last().unwrap()["to_state"].as_str().unwrap().to_string();
        assert_eq!(last, a.state(name), "{name}: {history}");
    }
    // c's jobs are the living's: the long one ended error, the queued one ran.
    assert_eq!(a.json(&["job", "show", &long.to_string()])["status"], "error");
    let out = a.cli(&["--json", "job", "watch", &queued.to_string()]);
    let last = String::from_utf8_lossy(&out.stdout).lines().last().map(str::to_string).unwrap_or_default();
    assert!(last.contains("\"success\""), "{last}");
}

/// `kiln --json events ARGS` on `d`: the events printed.
fn events(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json", "events"];
    all.extend_from_slice(args);
    let out = d.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// [`events`] once `done` holds for what it prints, at most 10 s later: a
/// command answers once its node's change is committed, and its events
/// are committed just after, then read by the other members.
fn events_once(d: &Daemon, args: &[&str], done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = events(d, args);
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "kiln events {args:?} never got there: {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `events` holds the end of each of `nodes`.
fn ends_of(events: &[Value], nodes: &[&str]) -> bool {
    nodes.iter().all(|n| events.iter().any(|e| ended(e, n)))
}

fn serials(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["serial"].as_u64().unwrap()).collect()
}

/// Whether `e` is `node`'s `end`.
fn ended(e: &Value, node: &str) -> bool {
    e["node_name"] == node && e["kind"] == "end"
}

#[test]
fn every_member_shows_every_member_s_events_and_since_resumes_on_any_member() {
    let url = database();
    // Each member needs two nodes of its own. The ring places nodes by
    // their random uuids, between members of random ids: with 32 nodes one
    // member gets fewer about once in four million runs (with 12, about
    // once in 110 did).
    let a = member(32, &url, "a");
    let b = member(0, &url, "b");
    wait_members(&a, Duration::from_secs(15), |rows| {
        rows.len() == 2
            && rows.iter().all(|r| r.1 == "alive" && r.2 >= 2)
            && rows.iter().map(|r| r.2).sum::<u64>() == 32
    });
    let (on_a, on_b) = (local(&a), local(&b));
    let (x, y) = (on_b[0].as_str(), on_a[0].as_str());

    // Followed on a: a transition b's own actor makes shows there.
    let mut follower = Events::follow(&a);
    b.json(&["node", "manage", x, "--wait"]);
    let seen = follower.wait_for(&format!("{x}'s end, made by b, on a"), |e| ended(e, x));
    a.json(&["node", "manage", y, "--wait"]);
    let last = follower.wait_for(&format!("{y}'s end on a"), |e| ended(e, y));
    assert!(last["serial"].as_u64() > seen["serial"].as_u64(), "{seen} then {last}");
    drop(follower);

    // The one stream, read on either member: the same events, serials
    // 1, 2, ... in order, each member's nodes among them.
    let all = events_once(&b, &["--since", "0"], |l| ends_of(l, &[x, y]));
    assert_eq!(serials(&all), (1..=all.len() as u64).collect::<Vec<_>>(), "{all:?}");
    assert_eq!(events_once(&a, &["--since", "0"], |l| l.len() >= all.len())[..all.len()], all);
    // The recent events of a member are every member's too.
    assert_eq!(events_once(&a, &[], |l| l.len() >= all.len())[..all.len()], all);

    // A consumer that saw up to `last` on a reconnects to b after events
    // on both: exactly what came after, in order, none twice.
    let upto = last["serial"].as_u64().unwrap();
    a.json(&["node", "manage", &on_b[1], "--wait"]);
    b.json(&["node", "manage", &on_a[1], "--wait"]);
    b.json(&["node", "provide", x, "--wait"]);
    let since = upto.to_string();
    let rest = events_once(&b, &["--since", &since], |l| ends_of(l, &[&on_b[1], &on_a[1], x]) && l.len() >= 6);
    let want: Vec<u64> = (upto + 1..=upto + rest.len() as u64).collect();
    assert_eq!(serials(&rest), want, "{rest:?}");
    let same = events_once(&a, &["--since", &since], |l| l.len() >= rest.len());
    assert_eq!(same[..rest.len()], rest, "the same on every member");

    // Filters apply to the one stream on any member.
    let x_ends = events(&a, &["--since", "0", "-w", x, "--kind", "end"]);
    assert_eq!(x_ends.len(), 2, "{x_ends:?}");
    assert!(x_ends.iter().all(|e| ended(e, x)), "{x_ends:?}");
    // A node's uuid names it, whichever member runs it.
    let uuid = a.node(x)["uuid"].as_str().unwrap().to_string();
    assert_eq!(events(&a, &["--since", "0", "-w", &uuid, "--kind", "end"]), x_ends);

    // Followed on b from the last serial seen while both members' nodes
    // change at once: every event, in serial order, none missing and none
    // twice, as any member's store replays them.
    let from = serials(&rest).last().copied().unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let mut follower = Events::follow_with(&b, &["--since", &from.to_string()]);
    let powered = [x, y, on_b[1].as_str(), on_a[1].as_str()].join(",");
    let power = crate::harness::spawn_at(
        &a.socket,
        &["--json", "node", "power", "on", &powered, "--wait"],
        std::process::Stdio::null(),
    );
    let rest_of: Vec<&str> = on_a[2..].iter().chain(&on_b[2..]).map(String::as_str).collect();
    b.json(&["node", "manage", &rest_of.join(","), "--wait"]);
    assert!(power.wait_with_output().unwrap().status.success());
    let count = 2 * (4 + rest_of.len());
    let stored = events_once(&a, &["--since", &from.to_string()], |l| l.len() >= count);
    let end = *serials(&stored).last().unwrap();
    follower.wait_for("the last stored event", |e| {
        seen.borrow_mut().push(e["serial"].as_u64().unwrap());
        e["serial"].as_u64() == Some(end)
    });
    assert_eq!(*seen.borrow(), serials(&stored));
    assert_eq!(serials(&stored), (from + 1..=end).collect::<Vec<_>>());
    assert_eq!(stored.len(), count, "a start and an end for each: {stored:?}");
}
