//! `kiln events` filters (`-w NODESET`, `--kind`), applied by the daemon, and
//! the CLI's answer when no daemon listens.

use std::collections::BTreeSet;

use crate::harness::{Daemon, Events, cli_at};

#[test]
fn follow_sends_only_the_nodes_and_kinds_asked_for() {
    let d = Daemon::start(5, &["--no-periodic"]);
    let mut follower = Events::follow_with(&d, &["-w", "demo[1-2]", "--kind", "end"]);
    // Other nodes change first: an unfiltered stream would show them before
    // any event of demo1 or demo2 (one bus, one order).
    d.json(&["node", "power", "on", "demo[3-5]", "--wait"]);
    d.json(&["node", "power", "on", "demo[1-2]", "--wait"]);

    let mut ended = BTreeSet::new();
    while ended.len() < 2 {
        let e = follower.wait_for("an event", |_| true);
        let name = e["node_name"].as_str().unwrap().to_string();
        assert!(name == "demo1" || name == "demo2", "an event of {name} got through: {e}");
        assert_eq!(e["kind"], "end", "{e}");
        ended.insert(name);
    }
}

#[test]
fn recent_events_are_filtered_too() {
    let d = Daemon::start(4, &["--no-periodic"]);
    d.json(&["node", "power", "on", "demo[1-4]", "--wait"]);
    let out = d.cli(&["--json", "events", "-w", "demo[2,4]", "--kind", "start,end"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: BTreeSet<(String, String)> = events
        .iter()
        .map(|e| (e["node_name"].as_str().unwrap().to_string(), e["kind"].as_str().unwrap().to_string()))
        .collect();
    let want: BTreeSet<(String, String)> =
        ["demo2", "demo4"].iter().flat_map(|n| ["start", "end"].map(|k| (n.to_string(), k.to_string()))).collect();
    assert_eq!(seen, want);

    // A node's uuid names that node.
    let uuid = d.node("demo3")["uuid"].as_str().unwrap().to_string();
    let out = d.cli(&["--json", "events", "-w", &uuid, "--kind", "end"]);
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["node_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["demo3"]);
}

#[test]
fn a_bad_node_set_or_kind_is_a_clear_error() {
    let d = Daemon::start(1, &["--no-periodic"]);
    let err = d.json_code(&["events", "--follow", "-w", "demo[1-"], 2);
    assert_eq!(err["error"]["kind"], "invalid_input", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("node set 'demo[1-'"), "{err}");

    let out = d.cli(&["events", "--kind", "start,finish"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown event kind 'finish'") && stderr.contains("start, end, error"), "{stderr}");

    // The connection that was refused did not hurt the daemon.
    assert_eq!(d.state("demo1"), "enroll");
}

#[test]
fn no_daemon_exits_3_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kiln.sock");
    let out = cli_at(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert!(stderr.contains("is `kiln serve` running?") && stderr.contains("--socket"), "{stderr}");

    let out = cli_at(&socket, &["--json", "node", "list"]);
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error document");
    assert_eq!(doc["error"]["kind"], "unavailable");
}

/// The events `kiln --json events ARGS` prints.
fn listed(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--json", "events"];
    all.extend_from_slice(args);
    let out = d.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn serials(events: &[serde_json::Value]) -> Vec<u64> {
    events.iter().map(|e| e["serial"].as_u64().unwrap()).collect()
}

#[test]
fn serials_survive_a_restart_and_since_replays_what_a_consumer_missed() {
    let mut d = Daemon::start(3, &["--no-periodic"]);
    d.json(&["node", "power", "on", "demo[1-3]", "--wait"]);
    let before = listed(&d, &[]);
    let first = serials(&before);
    assert_eq!(first, (1..=6).collect::<Vec<u64>>(), "a start and an end per node");
    // A consumer saw up to serial 2, then lost its connection; the daemon
    // is killed meanwhile and comes back.
    d.kill9();
    d.restart();
    assert!(listed(&d, &[]).is_empty(), "the in-memory recent events start empty");
    let replayed = listed(&d, &["--since", "2"]);
    assert_eq!(replayed, before[2..], "the stored events after serial 2, as they were");

    // New events go on from the last stored serial, never reusing one.
    d.json(&["node", "power", "off", "demo1", "--wait"]);
    let now = serials(&listed(&d, &[]));
    assert_eq!(now, [7, 8]);
    assert_eq!(serials(&listed(&d, &["--since", "5"])), [6, 7, 8]);
    // Filters apply to a replay too; a serial past the end replays nothing.
    let ends = listed(&d, &["--since", "0", "-w", "demo1", "--kind", "end"]);
    let demo1_end = before.iter().find(|e| e["node_name"] == "demo1" && e["kind"] == "end").unwrap();
    assert_eq!(serials(&ends), [demo1_end["serial"].as_u64().unwrap(), 8]);
    assert!(listed(&d, &["--since", "999"]).is_empty());

    // Following from a serial: the stored ones, the marker, then live.
    let mut follower = Events::follow_with(&d, &["--since", "6"]);
    d.json(&["node", "power", "on", "demo1", "--wait"]);
    let got: Vec<u64> = (0..2)
        .map(|_| follower.wait_for("a live event", |e| e["serial"].as_u64().is_some_and(|s| s > 8)))
        .map(|e| e["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [9, 10]);
}
